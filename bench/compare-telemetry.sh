#!/bin/sh
# compare-telemetry.sh - what telemetry costs on the data path: ROUNDS
# alternating rounds of bench/post-overhead with the agents' counters on
# and off (prepared WRITE of 1024 x 8 B, then of 1 descriptor), medians
# of the rounds and the difference per descriptor.
#
# usage: bench/compare-telemetry.sh [BUILD_DIR] [ROUNDS] [BACKEND]
#        (default: build 9 tcp).  Prints every sample, then a summary.
set -eu

build=${1:-build}
rounds=${2:-9}
backend=${3:-tcp}
cd "$build"
plugin=${backend%%:*}
export XFER_PLUGIN_PATH="${XFER_PLUGIN_PATH:-$PWD/plugins/$plugin}"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# One post-overhead run; prints "all_ns_per_desc one_desc_ns_per_post".
po() {
    ./bench/post-overhead -n 5000 -b "$backend" -t "$1" >"$out/po" 2>&1 || {
        cat "$out/po" >&2
        exit 1
    }
    awk '/^xfer_req_post, all descriptors/ { a = $(NF - 2) }
         /^xfer_req_post, 1 descriptor/ { o = $NF }
         END { print a, o }' "$out/po"
}

median() {
    sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2];
                   else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

: >"$out/on"
: >"$out/off"
echo "round telemetry ns/desc(1024) ns/post(1)"
i=1
while [ "$i" -le "$rounds" ]; do
    # Take turns, and change who goes first, so drift hits both alike.
    if [ $((i % 2)) -eq 1 ]; then order="1 0"; else order="0 1"; fi
    for t in $order; do
        r=$(po "$t")
        echo "$i $t $r"
        if [ "$t" = 1 ]; then echo "$r" >>"$out/on"; else echo "$r" >>"$out/off"; fi
    done
    i=$((i + 1))
done
on_d=$(cut -d' ' -f1 "$out/on" | median)
off_d=$(cut -d' ' -f1 "$out/off" | median)
on_1=$(cut -d' ' -f2 "$out/on" | median)
off_1=$(cut -d' ' -f2 "$out/off" | median)
echo "# medians of $rounds rounds, backend $backend"
echo "# 1024 descriptors: on $on_d ns/desc, off $off_d ns/desc," \
    "difference $(echo "$on_d $off_d" | awk '{ printf "%.2f", $1 - $2 }') ns/desc"
echo "# 1 descriptor: on $on_1 ns/post, off $off_1 ns/post," \
    "difference $(echo "$on_1 $off_1" | awk '{ printf "%.0f", $1 - $2 }') ns/post"
