#!/bin/sh
# test-soak.sh - bench/soak in its quick form, so that the soak program
# cannot rot: 16 initiators, 2000 transfers, a kill and restart midway,
# over tcp, uds and ucx where built.  `make soak` is the long run.
set -u

top=${abs_top_builddir:-$(pwd)}
soak=$top/bench/soak
: "${XFER_PLUGIN_PATH:=$top/plugins/tcp:$top/plugins/uds:$top/plugins/ucx}"
export XFER_PLUGIN_PATH
n=${SOAK_INITIATORS:-16}
transfers=${SOAK_TRANSFERS:-2000}
stall=120
# Under valgrind (make check-valgrind) every process runs 20 to 50 times
# slower: fewer of them, and more time before a stall is declared.
if [ -n "${XT_WRAP:-}" ]; then
    n=4; transfers=200; stall=600
fi

# ucx over shared memory with the kill; ucx over tcp without it: UCX
# 1.13 emulates RMA over tcp with active messages, and a target that
# answers a PUT or GET from an initiator killed meanwhile aborts inside
# UCX (ucp_request_try_send: "unexpected error: Endpoint timeout").
specs="tcp uds"
if [ -e "$top/plugins/ucx/xfer_ucx.la" ]; then
    specs="$specs ucx:tls=posix\\,sysv\\,cma\\,self,error_mode=none"
    specs="$specs ucx:tls=tcp\\,self,devices=lo|--no-restart"
fi

dir=$(mktemp -d "${TMPDIR:-/tmp}/xfer-soak.XXXXXX") || exit 99
trap 'rm -rf "$dir"' EXIT
trap 'exit 1' INT TERM

ran=0 failed=0 skipped=
for item in $specs; do
    spec=${item%%|*} extra=
    [ "$spec" != "$item" ] && extra=${item#*|}
    # The seed is printed by the program: a failure can be run again.
    ${XT_WRAP:-} "$soak" --backend "$spec" --initiators "$n" \
        --transfers "$transfers" --stall-s "$stall" $extra >"$dir/out" 2>&1
    rc=$?
    case $rc in
    0)  ran=$((ran + 1))
        grep "^soak: .*: PASS " "$dir/out" ;;
    77) skipped="$skipped $spec"
        grep '^SKIP' "$dir/out" ;;
    *)  failed=$((failed + 1))
        cat "$dir/out"
        echo "FAIL: soak over $spec (exit status $rc)" ;;
    esac
done
[ "$failed" -gt 0 ] && exit 1
if [ "$ran" -eq 0 ]; then
    echo "SKIP: no backend could run:$skipped"
    exit 77
fi
[ -n "$skipped" ] && echo "skipped:$skipped"
echo "PASS: soak, $ran backends, $transfers transfers each"
exit 0
