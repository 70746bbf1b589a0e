#!/bin/sh
# example-nats.sh - runs the examples/ NATS pair against a test nats-server on
# loopback and checks that they found each other and the greeting arrived.
set -u

top=${abs_top_builddir:-$(pwd)}
target=$top/examples/xfer-example-nats-target
initiator=$top/examples/xfer-example-nats-initiator
srcdir=${abs_top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}
: "${XFER_PLUGIN_PATH:=$top/plugins/tcp}"
export XFER_PLUGIN_PATH
. "$srcdir/tests/common/nats.sh"
xt_nats_need

dir=$(mktemp -d "${TMPDIR:-/tmp}/xfer-example-nats.XXXXXX") || exit 99
tpid=
cleanup() {
    [ -n "$tpid" ] && { kill "$tpid" 2>/dev/null; wait "$tpid" 2>/dev/null; }
    xt_nats_stop
    rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

xt_nats_start "$dir" || {
    echo "FAIL: nats-server did not start"; cat "$dir/nats.log"; exit 1; }
url=$nats_url

${XT_WRAP:-} "$target" "$url" >"$dir/target.out" 2>&1 &
tpid=$!
if ! XFER_NATS_URL=$url ${XT_WRAP:-} "$initiator" >"$dir/initiator.out" 2>&1; then
    echo "FAIL: initiator failed"; cat "$dir/initiator.out" "$dir/target.out"
    exit 1
fi
wait "$tpid"; trc=$?; tpid=
cat "$dir/initiator.out" "$dir/target.out"
[ "$trc" -eq 0 ] || { echo "FAIL: target exited with status $trc"; exit 1; }
grep -q 'found nats-target through NATS' "$dir/initiator.out" || {
    echo "FAIL: initiator did not find the target"; exit 1; }
grep -q 'buffer holds "hello from the NATS target"' "$dir/initiator.out" || {
    echo "FAIL: the greeting did not arrive"; exit 1; }
grep -q 'nats-initiator asked for a greeting' "$dir/target.out" || {
    echo "FAIL: target did not see the request"; exit 1; }
echo "PASS: NATS example pair"
