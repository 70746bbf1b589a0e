#!/bin/sh
# test-netns.sh - xfer-bench across two network namespaces joined by a veth
# pair (198.18.0.1 and .2: no loopback shortcut), over ucx's tcp transport
# and over tcp, WRITE and READ with every byte checked; then the target is
# SIGKILLed mid-run and the initiator must end with an error, not hang.
# Needs root and `ip netns`; SKIP (77) otherwise.
bench="${abs_top_builddir:-.}/tools/xfer-bench"
skip() { echo "SKIP: $*"; exit 77; }

[ "$(id -u)" = 0 ] || skip "needs root to create network namespaces"
command -v ip >/dev/null 2>&1 || skip "no ip command (iproute2)"
[ -x "$bench" ] || skip "no $bench"

tag=xn$$
nsa=$tag-a nsb=$tag-b
work=$(mktemp -d "${TMPDIR:-/tmp}/xfer-netns.XXXXXX") || exit 99
cleanup() {
    [ -n "${tpid:-}" ] && kill -9 "$tpid" 2>/dev/null
    [ -n "${ipid:-}" ] && kill -9 "$ipid" 2>/dev/null
    ip netns del "$nsa" 2>/dev/null
    ip netns del "$nsb" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 99' INT TERM

ip netns add "$nsa" 2>"$work/err" ||
    skip "ip netns add failed: $(cat "$work/err")"
ip netns add "$nsb" || exit 99
ip link add "$tag-va" type veth peer name "$tag-vb" 2>"$work/err" ||
    skip "no veth pair: $(cat "$work/err")"
ip link set "$tag-va" netns "$nsa" && ip link set "$tag-vb" netns "$nsb" &&
ip -n "$nsa" addr add 198.18.0.1/24 dev "$tag-va" &&
ip -n "$nsb" addr add 198.18.0.2/24 dev "$tag-vb" &&
ip -n "$nsa" link set "$tag-va" up && ip -n "$nsb" link set "$tag-vb" up &&
ip -n "$nsa" link set lo up && ip -n "$nsb" link set lo up || exit 99
if command -v ping >/dev/null 2>&1; then
    ip netns exec "$nsb" ping -c 1 -W 5 198.18.0.1 >/dev/null 2>&1 ||
        skip "the veth pair does not pass packets"
fi

fail=0
port=7411
# A silent peer fails a rank after this long (docs/xfer-bench.md).
XB_TIMEOUT_MS=15000
export XB_TIMEOUT_MS

# run NAME TARGET-SPEC INITIATOR-SPEC OP [extra options]
run() {
    name=$1 tspec=$2 ispec=$3 op=$4
    shift 4
    port=$((port + 1))
    timeout 120 ip netns exec "$nsa" ${XT_WRAP:-} "$bench" --role target \
        --peer "198.18.0.1:$port" --backend "$tspec" --op "$op" \
        --check-consistency "$@" >"$work/$name.t" 2>&1 &
    tpid=$!
    timeout 120 ip netns exec "$nsb" ${XT_WRAP:-} "$bench" --role initiator \
        --peer "198.18.0.1:$port" --backend "$ispec" --op "$op" \
        --check-consistency "$@" >"$work/$name.i" 2>&1
    ist=$?
    wait "$tpid"
    tst=$?
    tpid=
    if [ "$ist" != 0 ] || [ "$tst" != 0 ]; then
        echo "FAIL: $name: initiator $ist, target $tst"
        sed 's/^/  initiator: /' "$work/$name.i"
        sed 's/^/  target: /' "$work/$name.t"
        fail=1
    else
        echo "PASS: $name"
    fi
}

sizes="--start-block-size 4K --max-block-size 4M --num-iter 16"
for op in WRITE READ; do
    # Under --enable-sanitizers, LeakSanitizer's check at exit crashed in
    # its own tracer thread ("Tracer caught signal 11", at the same
    # offset in both processes, intermittently) in xfer-bench over UCX
    # inside a network namespace, never over tcp: no leak check for
    # these two runs (ASan's other checks stay on; the ucx plugin's
    # leaks are checked by its conformance runs).
    LSAN_OPTIONS="${LSAN_OPTIONS:+$LSAN_OPTIONS:}detect_leaks=0" \
    run "ucx-$op" "ucx:tls=tcp,devices=$tag-va,addr=198.18.0.1" \
        "ucx:tls=tcp,devices=$tag-vb,addr=198.18.0.2" "$op" $sizes
    run "tcp-$op" "tcp:addr=198.18.0.1" "tcp:addr=198.18.0.2" "$op" $sizes
done

# The target killed mid-run: the initiator ends with a sentence within
# XB_TIMEOUT_MS and the backend's own bounds, never hangs.
# What the target's end of the link has received, in bytes.
rx_bytes() {
    ip netns exec "$nsa" cat "/sys/class/net/$tag-va/statistics/rx_bytes"
}
killed() {
    name=$1 tspec=$2 ispec=$3
    port=$((port + 1))
    base=$(rx_bytes)
    ip netns exec "$nsa" "$bench" --role target --peer "198.18.0.1:$port" \
        --backend "$tspec" --start-block-size 1M --max-block-size 1M \
        --num-iter 1000000 >"$work/$name.t" 2>&1 &
    tpid=$!
    ip netns exec "$nsb" "$bench" --role initiator \
        --peer "198.18.0.1:$port" --backend "$ispec" --start-block-size 1M \
        --max-block-size 1M --num-iter 1000000 >"$work/$name.i" 2>&1 &
    ipid=$!
    # Mid-run: WRITEs have brought 16 MiB to the target's end of the
    # link.  Waited for by bytes, not by time: a sanitized build on a
    # loaded machine takes seconds just to start.
    start=$(date +%s)
    while [ $(( $(rx_bytes) - base )) -lt 16777216 ]; do
        if ! kill -0 "$ipid" 2>/dev/null; then
            echo "FAIL: $name: the initiator ended before the kill"
            sed 's/^/  initiator: /' "$work/$name.i"
            fail=1
            return
        fi
        if [ $(( $(date +%s) - start )) -gt 120 ]; then
            echo "FAIL: $name: 16 MiB did not cross the link in 120 s"
            sed 's/^/  initiator: /' "$work/$name.i"
            pkill -9 -P "$tpid" 2>/dev/null
            kill -9 "$tpid" "$ipid" 2>/dev/null
            fail=1
            return
        fi
        sleep 0.2
    done
    # The target's processes (ip netns exec execs it: tpid is the bench).
    pkill -9 -P "$tpid" 2>/dev/null
    kill -9 "$tpid" 2>/dev/null
    start=$(date +%s)
    while kill -0 "$ipid" 2>/dev/null; do
        if [ $(( $(date +%s) - start )) -gt 60 ]; then
            echo "FAIL: $name: the initiator still runs 60 s after the kill"
            fail=1
            return
        fi
        sleep 0.2
    done
    wait "$ipid"
    ist=$?
    ipid= tpid=
    if [ "$ist" = 0 ]; then
        echo "FAIL: $name: the initiator exited 0 after its target died"
        fail=1
    elif ! grep -q -i -E "gone|disconnect|closed|silent|died|lost" \
            "$work/$name.i"; then
        echo "FAIL: $name: the initiator's error says nothing of the peer:"
        sed 's/^/  initiator: /' "$work/$name.i"
        fail=1
    else
        echo "PASS: $name (exit $ist after $(( $(date +%s) - start )) s:" \
            "$(grep -i -E "gone|disconnect|closed|silent|died|lost" \
                "$work/$name.i" | head -1))"
    fi
}

killed ucx-killed "ucx:tls=tcp,devices=$tag-va,addr=198.18.0.1" \
    "ucx:tls=tcp,devices=$tag-vb,addr=198.18.0.2"
killed tcp-killed "tcp:addr=198.18.0.1" "tcp:addr=198.18.0.2"
exit $fail
