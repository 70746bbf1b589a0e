#!/bin/sh
# compare.sh - the tcp figures of docs/performance.md in one run: xfer-bench
# against iperf3 and the raw ping-pong baseline, plus the post overhead.
#
# usage: bench/compare.sh [BUILD_DIR]     (default: ./build)
# Prints each tool's own output, then a summary with the ratios.
set -eu

build=${1:-build}
cd "$build"
export XFER_PLUGIN_PATH="$PWD/plugins/tcp"
port=$((20000 + $$ % 20000))
out=$(mktemp -d)
trap 'rm -rf "$out"; kill $srv 2>/dev/null || true' EXIT
srv=

# The value in column $2 of the first data row after the header line
# that starts with $1 ($3: file): the raw tools' tables.
col() {
    awk -v h="$1" -v c="$2" 'f && NF { print $c; exit } index($0, h) == 1 { f = 1 }' "$3"
}

# The column named $2 of xfer-bench's first row in file $1.
bench_field() {
    awk -v n="$2" '$1 == "block_size" { for (i = 1; i <= NF; i++) if ($i == n) c = i; next }
        c && $1 ~ /^[0-9]+$/ { print $c; exit }' "$1"
}

echo "== iperf3, single stream, 1 MiB writes, 5 s"
iperf3 -s -1 -p "$port" >/dev/null 2>&1 &
srv=$!
sleep 0.5
iperf3 -c 127.0.0.1 -p "$port" -t 5 -l 1M -f g | tee "$out/iperf"
wait $srv 2>/dev/null || true
srv=
iperf_gbits=$(awk '/receiver/ { print $7; exit }' "$out/iperf")

echo "== raw TCP stream, 1 MiB writes, receiver blocking, then busy-polling"
./bench/tcp-pingpong --stream -t 3 | tee "$out/rawb"
./bench/tcp-pingpong --stream -t 3 --poll | tee "$out/rawp"

echo "== xfer-bench tcp WRITE 1 MiB"
./tools/xfer-bench --backend tcp --op WRITE --start-block-size 1M \
    --max-block-size 1M --num-iter 64000 | tee "$out/w1m"
echo "== xfer-bench tcp READ 1 MiB"
./tools/xfer-bench --backend tcp --op READ --start-block-size 1M \
    --max-block-size 1M --num-iter 64000 | tee "$out/r1m"

echo "== tcp-pingpong 8 B, blocking, then client busy-polling"
./bench/tcp-pingpong -n 50000 -s 8 | tee "$out/ppb"
./bench/tcp-pingpong -n 50000 -s 8 --poll | tee "$out/pp"
./bench/tcp-pingpong -n 50000 -s 8 --poll --poll-server | tee "$out/pps"
echo "== xfer-bench tcp WRITE 8 B to completion"
./tools/xfer-bench --backend tcp --op WRITE --start-block-size 8 \
    --max-block-size 8 --num-iter 50000 | tee "$out/w8"

echo "== post-overhead, prepared WRITE of 1024 descriptors"
./bench/post-overhead | tee "$out/post"

w1m=$(bench_field "$out/w1m" gbps)
r1m=$(bench_field "$out/r1m" gbps)
pp_avg=$(col size 3 "$out/pp")
pp_med=$(col size 2 "$out/pp")
ppb_avg=$(col size 3 "$out/ppb")
pps_avg=$(col size 3 "$out/pps")
rawb=$(col bytes 2 "$out/rawb")
rawp=$(col bytes 2 "$out/rawp")
w8=$(bench_field "$out/w8" avg_lat_us)
post=$(awk '/^xfer_req_post, all descriptors/ { print $4; exit }' "$out/post")

echo
echo "== summary ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores)"
awk -v ig="$iperf_gbits" -v w="$w1m" -v r="$r1m" -v pa="$pp_avg" \
    -v pm="$pp_med" -v l="$w8" -v p="$post" -v pb="$ppb_avg" \
    -v rb="$rawb" -v rp="$rawp" -v ps="$pps_avg" 'BEGIN {
    ib = ig / 8
    printf "| figure | xfer | baseline | ratio | goal |\n"
    printf "| --- | --- | --- | --- | --- |\n"
    printf "| WRITE 1 MiB, GB/s | %.3f | iperf3 %.3f | %.2fx | >= 0.9x |\n", w, ib, w / ib
    printf "| READ 1 MiB, GB/s | %.3f | iperf3 %.3f | %.2fx | >= 0.9x |\n", r, ib, r / ib
    printf "| WRITE 1 MiB, GB/s | %.3f | raw stream, blocking %.3f | %.2fx | - |\n", w, rb, w / rb
    printf "| WRITE 1 MiB, GB/s | %.3f | raw stream, polling %.3f | %.2fx | - |\n", w, rp, w / rp
    printf "| WRITE 8 B to completion, avg us | %.2f | ping-pong, client polling, avg %.2f (median %.2f) | %.2fx | <= 1.3x |\n", l, pa, pm, l / pa
    printf "| WRITE 8 B to completion, avg us | %.2f | ping-pong, blocking, avg %.2f | %.2fx | <= 1.3x |\n", l, pb, l / pb
    printf "| WRITE 8 B to completion, avg us | %.2f | ping-pong, both polling, avg %.2f | %.2fx | - |\n", l, ps, l / ps
    printf "| prepared post, 1024 descriptors, ns/desc | %.1f | - | - | < 100 |\n", p
}'
