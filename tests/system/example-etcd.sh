#!/bin/sh
# example-etcd.sh - runs the examples/ etcd pair against a test etcd on
# loopback and checks that they found each other and the greeting arrived.
set -u

top=${abs_top_builddir:-$(pwd)}
target=$top/examples/xfer-example-etcd-target
initiator=$top/examples/xfer-example-etcd-initiator
srcdir=${abs_top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}
: "${XFER_PLUGIN_PATH:=$top/plugins/tcp}"
export XFER_PLUGIN_PATH
. "$srcdir/tests/common/etcd.sh"
xt_etcd_need

dir=$(mktemp -d "${TMPDIR:-/tmp}/xfer-example-etcd.XXXXXX") || exit 99
tpid=
cleanup() {
    [ -n "$tpid" ] && { kill "$tpid" 2>/dev/null; wait "$tpid" 2>/dev/null; }
    xt_etcd_stop
    rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

xt_etcd_start "$dir" || {
    echo "FAIL: etcd did not start"; cat "$dir/etcd.log"; exit 1; }
url=$etcd_url

${XT_WRAP:-} "$target" "$url" >"$dir/target.out" 2>&1 &
tpid=$!
if ! XFER_ETCD_ENDPOINTS=$url ${XT_WRAP:-} "$initiator" >"$dir/initiator.out" 2>&1; then
    echo "FAIL: initiator failed"; cat "$dir/initiator.out" "$dir/target.out"
    exit 1
fi
wait "$tpid"; trc=$?; tpid=
cat "$dir/initiator.out" "$dir/target.out"
[ "$trc" -eq 0 ] || { echo "FAIL: target exited with status $trc"; exit 1; }
grep -q 'found etcd-target through etcd' "$dir/initiator.out" || {
    echo "FAIL: initiator did not find the target"; exit 1; }
grep -q 'buffer holds "hello from the etcd target"' "$dir/initiator.out" || {
    echo "FAIL: the greeting did not arrive"; exit 1; }
grep -q 'etcd-initiator asked for a greeting' "$dir/target.out" || {
    echo "FAIL: target did not see the request"; exit 1; }
echo "PASS: etcd example pair"
