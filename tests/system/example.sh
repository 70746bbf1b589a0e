#!/bin/sh
# example.sh - runs the examples/ target and initiator pair over tcp and
# checks that the message went there and back (the copyable example must work).
set -u

top=${abs_top_builddir:-$(pwd)}
target=$top/examples/xfer-example-target
initiator=$top/examples/xfer-example-initiator
# make check normally sets the plugin path; running by hand needs it too.
: "${XFER_PLUGIN_PATH:=$top/plugins/tcp}"
export XFER_PLUGIN_PATH

dir=$(mktemp -d "${TMPDIR:-/tmp}/xfer-example.XXXXXX") || exit 99
# ${XT_WRAP} runs each program under valgrind for make check-valgrind.
tpid=
cleanup() {
    if [ -n "$tpid" ]; then
        kill "$tpid" 2>/dev/null; wait "$tpid" 2>/dev/null
    fi
    rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

${XT_WRAP:-} "$target" "$dir/md" >"$dir/target.out" 2>&1 &
tpid=$!

if ! ${XT_WRAP:-} "$initiator" "$dir/md" >"$dir/initiator.out" 2>&1; then
    echo "FAIL: initiator failed"; cat "$dir/initiator.out" "$dir/target.out"
    exit 1
fi
wait "$tpid"; trc=$?; tpid=
cat "$dir/initiator.out" "$dir/target.out"
if [ "$trc" -ne 0 ]; then
    echo "FAIL: target exited with status $trc"; exit 1
fi
grep -q 'read back "hello from the initiator": OK' "$dir/initiator.out" || {
    echo "FAIL: initiator did not read the message back"; exit 1; }
grep -q 'buffer holds "hello from the initiator"' "$dir/target.out" || {
    echo "FAIL: target buffer does not hold the message"; exit 1; }
grep -q 'notification "written" from initiator' "$dir/target.out" || {
    echo "FAIL: target missed the WRITE notification"; exit 1; }
echo "PASS: example pair"
