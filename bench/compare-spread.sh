#!/bin/sh
# compare-spread.sh - tcp's spread: ROUNDS alternating rounds of iperf3 and
# xfer-bench (1 MiB WRITE; 4 KiB x 1024 WRITE), medians, extremes, ratios.
#
# usage: bench/compare-spread.sh [BUILD_DIR] [ROUNDS]   (default: build 10)
# Environment: XB_EXTRA (more xfer-bench options, e.g. --progress-thread),
# XFER_TCP_* (backend parameters).  Prints every sample, then a summary.
# Each xfer-bench round also records its context switches and CPU
# migrations (perf stat software events, if perf works), so that a slow
# round can be told apart: see docs/performance.md, "tcp's spread".
set -eu

build=${1:-build}
rounds=${2:-10}
cd "$build"
export XFER_PLUGIN_PATH="${XFER_PLUGIN_PATH:-$PWD/plugins/tcp}"
port=$((20000 + $$ % 20000))
out=$(mktemp -d)
srv=
trap 'rm -rf "$out"; [ -n "$srv" ] && kill $srv 2>/dev/null || true' EXIT
perf_ok=0
perf stat -e context-switches true >/dev/null 2>&1 && perf_ok=1

# The column named $2 of xfer-bench's first data row in file $1.
bench_field() {
    awk -v n="$2" '$1 == "block_size" { for (i = 1; i <= NF; i++) if ($i == n) c = i; next }
        c && $1 ~ /^[0-9]+$/ { print $c; exit }' "$1"
}

# xfer-bench with perf's software counters around it when possible;
# prints "gbps ctxsw migrations cpu_pct".
xb() {
    if [ $perf_ok = 1 ]; then
        perf stat -x, -e context-switches,cpu-migrations -o "$out/perf" \
            ./tools/xfer-bench --backend tcp --op WRITE ${XB_EXTRA:-} "$@" \
            >"$out/xb" 2>&1
        cs=$(awk -F, '$3 == "context-switches" { print $1 }' "$out/perf")
        mig=$(awk -F, '$3 == "cpu-migrations" { print $1 }' "$out/perf")
    else
        ./tools/xfer-bench --backend tcp --op WRITE ${XB_EXTRA:-} "$@" \
            >"$out/xb" 2>&1
        cs=- mig=-
    fi
    echo "$(bench_field "$out/xb" gbps) $cs $mig $(bench_field "$out/xb" cpu_pct)"
}

echo "round iperf3_GBps xfer_1M_GBps ctxsw migr cpu_pct xfer_4Kx1024_GBps ctxsw migr cpu_pct"
i=1
while [ $i -le "$rounds" ]; do
    # Alternate which tool goes first, so drift in the machine's load
    # does not favour one side.
    if [ $((i % 2)) = 1 ]; then
        a=$(xb --start-block-size 1M --max-block-size 1M --num-iter 32000)
    fi
    iperf3 -s -1 -p "$port" >/dev/null 2>&1 &
    srv=$!
    sleep 0.3
    ig=$(iperf3 -c 127.0.0.1 -p "$port" -t 2 -l 1M -f g 2>/dev/null |
        awk '/receiver/ { print $7 / 8; exit }')
    wait $srv 2>/dev/null || true
    srv=
    if [ $((i % 2)) = 0 ]; then
        a=$(xb --start-block-size 1M --max-block-size 1M --num-iter 32000)
    fi
    b=$(xb --start-block-size 4K --max-block-size 4K --start-batch-size 1024 \
        --max-batch-size 1024 --num-iter 500)
    echo "$i ${ig:-0} $a $b" | tee -a "$out/rounds"
    i=$((i + 1))
done

echo
echo "== summary ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $rounds rounds)"
for col in 2 3 7; do
    awk -v c=$col '{ print $c }' "$out/rounds" | sort -g >"$out/c$col"
done
OUT="$out" awk '
function med(f,   a, k, v) { k = 0; while ((getline v < f) > 0) a[++k] = v; close(f)
    return k % 2 ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2 }
function lo(f,   v) { getline v < f; close(f); return v }
function hi(f,   v, l) { while ((getline v < f) > 0) l = v; close(f); return l }
BEGIN {
    d = ENVIRON["OUT"]
    i2 = med(d "/c2"); x3 = med(d "/c3"); x7 = med(d "/c7")
    printf "| figure | median GB/s | min | max | ratio of medians |\n"
    printf "| --- | --- | --- | --- | --- |\n"
    printf "| iperf3, 1 MiB writes | %.3f | %.3f | %.3f | - |\n", i2, lo(d "/c2"), hi(d "/c2")
    printf "| xfer WRITE 1 MiB | %.3f | %.3f | %.3f | %.2fx iperf3 |\n", x3, lo(d "/c3"), hi(d "/c3"), x3 / i2
    printf "| xfer WRITE 4 KiB x 1024 | %.3f | %.3f | %.3f | %.2fx xfer 1 MiB |\n", x7, lo(d "/c7"), hi(d "/c7"), x7 / x3
}' </dev/null
