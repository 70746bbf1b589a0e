#!/bin/sh
# compare-uds.sh - the uds figures of docs/performance.md in one run: xfer-bench
# WRITE/READ against ucx_perftest ucp_put_bw/ucp_get (UCX_TLS=cma,posix,self).
#
# usage: bench/compare-uds.sh [BUILD_DIR]     (default: ./build)
# Needs ucx_perftest (Debian/Ubuntu: ucx-utils).  Prints a table of GB/s
# (10^9 B/s) per block size and the ratios (each the median of five rounds
# in which the tools take turns), every sample, then the batch and latency
# checks.
set -eu

. "$(cd "$(dirname "$0")" && pwd)/compare-lib.sh"
build=${1:-build}
cd "$build"
export XFER_PLUGIN_PATH="$PWD/plugins/uds"
command -v ucx_perftest >/dev/null || { echo "ucx_perftest not found (install ucx-utils)" >&2; exit 1; }
port=$((20000 + $$ % 20000))
out=$(mktemp -d)
srv=
trap 'rm -rf "$out"; [ -n "$srv" ] && kill $srv 2>/dev/null || true' EXIT

sizes="65536 262144 1048576 4194304 16777216 67108864"

# Iterations at size $1, the same for both tools (and 20 warmup each).
iters() {
    if [ "$1" -ge 4194304 ]; then echo 200; else echo 2000; fi
}

# ucx_perftest TEST SIZE: overall bandwidth in GB/s (its MB/s is 2^20 B/s).
ucx() {
    n=$(iters "$2")
    UCX_TLS=cma,posix,self ucx_perftest -p "$port" >/dev/null 2>&1 &
    srv=$!
    sleep 0.5
    UCX_TLS=cma,posix,self ucx_perftest 127.0.0.1 -p "$port" -t "$1" -s "$2" \
        -n "$n" -w 20 -f > "$out/ucx" 2>&1 || true
    kill $srv 2>/dev/null || true
    wait $srv 2>/dev/null || true
    srv=
    ucx_gbps "$out/ucx"
}

# Each size is measured in several rounds, the three tools taking turns
# (xfer shm, xfer cma, ucx), and each tool's median is kept: on a shared
# machine a burst of noise then hits one sample of every tool alike
# instead of all the samples of one.
rounds=5
echo "== ratios (medians of $rounds rounds; xfer GB/s / ucx_perftest GB/s; shm: --alloc xfer, cma: --alloc malloc)"
printf "%-6s %-6s %10s %10s %10s %8s %8s\n" op block ucx xfer_shm xfer_cma shm/ucx cma/ucx
for op in WRITE READ; do
    t=ucp_put_bw
    [ $op = READ ] && t=ucp_get
    for s in $sizes; do
        h=$(human "$s")
        us= xs= cs=
        r=0
        while [ $r -lt $rounds ]; do
            for alloc in xfer malloc; do
                ./tools/xfer-bench --backend uds --op $op --start-block-size "$s" \
                    --max-block-size "$s" --num-iter "$(iters "$s")" \
                    --large-block-iter-factor 1 --warmup-iter 20 \
                    --alloc $alloc --no-progress > "$out/$op-$alloc-$s-$r"
            done
            xs="$xs $(field "$s" "$out/$op-xfer-$s-$r" gbps)"
            cs="$cs $(field "$s" "$out/$op-malloc-$s-$r" gbps)"
            us="$us $(ucx $t "$s")"
            r=$((r + 1))
        done
        # shellcheck disable=SC2086
        u=$(median $us) x=$(median $xs) c=$(median $cs)
        awk -v op=$op -v h=$h -v u="$u" -v x="$x" -v c="$c" 'BEGIN {
            printf "%-6s %-6s %10.3f %10.3f %10.3f %8.2f %8.2f\n", op, h, u, x, c,
                   (u > 0 ? x / u : 0), (u > 0 ? c / u : 0) }'
        echo "   samples: ucx$us | shm$xs | cma$cs" >> "$out/samples"
    done
done
echo
echo "== every sample (GB/s), in the order of the table"
cat "$out/samples"

echo
echo "== 4 KiB x 256 descriptors against 1 MiB x 1 (same run)"
for alloc in xfer malloc; do
    ./tools/xfer-bench --backend uds --op WRITE --start-block-size 4K \
        --max-block-size 4K --start-batch-size 256 --max-batch-size 256 \
        --num-iter 2000 --alloc $alloc > "$out/b-$alloc"
    ./tools/xfer-bench --backend uds --op WRITE --start-block-size 1M \
        --max-block-size 1M --num-iter 2000 --large-block-iter-factor 1 \
        --alloc $alloc > "$out/m-$alloc"
    awk -v a=$alloc -v b="$(field 4096 "$out/b-$alloc" gbps)" \
        -v m="$(field 1048576 "$out/m-$alloc" gbps)" 'BEGIN {
        printf "%-6s 4Kx256 %.3f GB/s, 1M %.3f GB/s, ratio %.2f\n", a, b, m, b / m }'
done

echo
echo "== 8-byte WRITE to completion (median and average, us)"
for alloc in malloc xfer; do
    ./tools/xfer-bench --backend uds --op WRITE --start-block-size 8 \
        --max-block-size 8 --num-iter 100000 --alloc $alloc > "$out/l-$alloc"
    printf "%-6s median %s avg %s\n" "$([ $alloc = xfer ] && echo shm || echo cma)" \
        "$(field 8 "$out/l-$alloc" med_xfer_us)" "$(field 8 "$out/l-$alloc" avg_xfer_us)"
done
