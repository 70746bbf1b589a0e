#!/bin/sh
# test-bench-etcd.sh - two xfer-bench processes started apart meet through a
# test etcd on loopback (--etcd, --group, --ranks 2): both exit 0, and exactly
# one of them, the initiator, prints the table with every block size.
set -u

top=${abs_top_builddir:-$(pwd)}
bench=$top/tools/xfer-bench
srcdir=${abs_top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}
: "${XFER_PLUGIN_PATH:=$top/plugins/tcp}"
export XFER_PLUGIN_PATH
if [ ! -x "$bench" ]; then echo "SKIP: $bench is not built"; exit 77; fi
if [ ! -f "$top/plugins/tcp/xfer_tcp.la" ]; then
    echo "SKIP: the tcp plugin is not built"; exit 77
fi
. "$srcdir/tests/common/etcd.sh"
xt_etcd_need

dir=$(mktemp -d "${TMPDIR:-/tmp}/xfer-bench-etcd.XXXXXX") || exit 99
p1= p2=
cleanup() {
    for p in $p1 $p2; do
        kill "$p" 2>/dev/null; wait "$p" 2>/dev/null
    done
    xt_etcd_stop
    rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

fail() {
    echo "FAIL: $*"
    for f in "$dir"/*.out "$dir"/etcd.log; do echo "--- $f"; cat "$f"; done
    exit 1
}

xt_etcd_start "$dir" || fail "etcd did not start"
url=$etcd_url

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
