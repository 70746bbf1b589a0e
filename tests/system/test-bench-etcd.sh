#!/bin/sh
# test-bench-etcd.sh - two xfer-bench processes started apart meet through a
# test etcd on loopback (--etcd, --group, --ranks 2): both exit 0, and exactly
# one of them, the initiator, prints the table with every block size.
set -u

top=${abs_top_builddir:-$(pwd)}
bench=$top/tools/xfer-bench
etcd=${XT_ETCD:-/usr/bin/etcd}
: "${XFER_PLUGIN_PATH:=$top/plugins/tcp}"
export XFER_PLUGIN_PATH
if [ ! -x "$bench" ]; then echo "SKIP: $bench is not built"; exit 77; fi
if [ ! -f "$top/plugins/tcp/xfer_tcp.la" ]; then
    echo "SKIP: the tcp plugin is not built"; exit 77
fi
if [ ! -x "$etcd" ]; then
    echo "SKIP: no etcd at $etcd (apt-get install etcd-server)"; exit 77
fi
if ! command -v curl >/dev/null 2>&1; then
    echo "SKIP: curl is needed to see etcd become healthy"; exit 77
fi

dir=$(mktemp -d "${TMPDIR:-/tmp}/xfer-bench-etcd.XXXXXX") || exit 99
epid= p1= p2=
cleanup() {
    for p in $p1 $p2 $epid; do
        kill "$p" 2>/dev/null; wait "$p" 2>/dev/null
    done
    rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

fail() {
    echo "FAIL: $*"
    for f in "$dir"/*.out "$dir"/etcd.log; do echo "--- $f"; cat "$f"; done
    exit 1
}

# Ports from this shell's pid, tried until etcd comes up on a free pair.
for try in 1 2 3 4 5; do
    cport=$((20000 + ($$ * 11 + try * 137) % 20000))
    pport=$((cport + 1))
    url=http://127.0.0.1:$cport
    "$etcd" --name xt --data-dir "$dir/data$try" \
        --listen-client-urls "$url" --advertise-client-urls "$url" \
        --listen-peer-urls "http://127.0.0.1:$pport" \
        --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
        --initial-cluster "xt=http://127.0.0.1:$pport" >"$dir/etcd.log" 2>&1 &
    epid=$!
    for i in $(seq 1 100); do
        if curl -s --noproxy '*' -m 1 "$url/health" | grep -q '"health":"true"'; then
            break 2
        fi
        kill -0 "$epid" 2>/dev/null || break
        sleep 0.1
    done
    kill "$epid" 2>/dev/null; wait "$epid" 2>/dev/null; epid=
done
[ -n "$epid" ] || fail "etcd did not start"

# Both at once, as two hosts would start them; neither knows its rank.
run() {
    ${XT_WRAP:-} "$bench" --etcd "$url" --group "g$$" --ranks 2 \
        --backend tcp --check-consistency --start-block-size 4K \
        --max-block-size 64K --num-iter 20 --no-progress \
        >"$dir/$1.out" 2>&1
}
run a & p1=$!
run b & p2=$!
wait "$p1"; rc1=$?; p1=
wait "$p2"; rc2=$?; p2=
[ "$rc1" -eq 0 ] || fail "the first xfer-bench exited with status $rc1"
[ "$rc2" -eq 0 ] || fail "the second xfer-bench exited with status $rc2"

# A table row starts with the block size; the header row does not.
rows() { awk '$1 ~ /^[0-9]+$/ { print $1 }' "$dir/$1.out" | tr '\n' ' '; }
ra=$(rows a) rb=$(rows b)
want="4096 8192 16384 32768 65536 "
if [ "$ra" = "$want" ] && [ -z "$rb" ]; then
    :
elif [ "$rb" = "$want" ] && [ -z "$ra" ]; then
    :
else
    fail "expected one table of rows '$want' and one without," \
        "got '$ra' and '$rb'"
fi

# Leaving revoked every lease: nothing of the group is left in etcd.
key=$(printf '/xfer-bench/g%s/' "$$" | base64 | tr -d '\n')
end=$(printf '/xfer-bench/g%s0' "$$" | base64 | tr -d '\n')
left=$(curl -s --noproxy '*' -m 2 -X POST "$url/v3/kv/range" \
    -d "{\"key\":\"$key\",\"range_end\":\"$end\",\"count_only\":true}")
case $left in
*'"count"'*) fail "the group's keys are still in etcd: $left" ;;
*'"header"'*) ;;
*) fail "etcd did not answer a range: $left" ;;
esac
echo "PASS: two xfer-bench processes met through etcd"
