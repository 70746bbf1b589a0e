#!/bin/sh
# compare-events.sh - what the event plane costs a notification: ROUNDS
# alternating rounds of bench/notif-lat (8 B WRITE + notification, and the
# target's answer) with the event plane off, and on with every received
# notification published to a nats-server started here; medians of the
# rounds' medians and their ratio (docs/performance.md, "Event plane").
#
# usage: bench/compare-events.sh [BUILD_DIR] [ROUNDS] [BACKEND]
#        (default: build 7 tcp).  Needs nats-server (Debian's).
set -eu

build=${1:-build}
rounds=${2:-7}
backend=${3:-tcp}
cd "$build"
plugin=${backend%%:*}
export XFER_PLUGIN_PATH="${XFER_PLUGIN_PATH:-$PWD/plugins/$plugin}"
server=${NATS_SERVER:-nats-server}
command -v "$server" >/dev/null 2>&1 || {
    echo "compare-events: no $server (apt-get install nats-server)" >&2
    exit 1
}
out=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill $pid 2>/dev/null; rm -rf "$out"' EXIT
port=$((20000 + $$ % 20000))
"$server" -a 127.0.0.1 -p "$port" -js -sd "$out/js" -l "$out/nats.log" &
pid=$!
sleep 1

# One run; prints its median in us.
nl() {
    ./bench/notif-lat -n "${ITERS:-5000}" -b "$backend" "$@" >"$out/nl" 2>&1 || {
        cat "$out/nl" >&2
        exit 1
    }
    awk '/^median_us/ { print $2 }' "$out/nl"
}

median() {
    sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2];
                   else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

: >"$out/on"
: >"$out/off"
echo "round plane median_us"
i=1
while [ "$i" -le "$rounds" ]; do
    if [ $((i % 2)) -eq 1 ]; then order="off on"; else order="on off"; fi
    for m in $order; do
        if [ "$m" = on ]; then
            r=$(nl --nats "nats://127.0.0.1:$port")
        else
            r=$(nl)
        fi
        echo "$i $m $r"
        echo "$r" >>"$out/$m"
    done
    i=$((i + 1))
done
on=$(median <"$out/on")
off=$(median <"$out/off")
echo "# medians of $rounds rounds, backend $backend: off $off us, on $on us," \
    "ratio $(echo "$on $off" | awk '{ printf "%.3f", $1 / $2 }')"
