#!/bin/sh
# example-etcd.sh - runs the examples/ etcd pair against a test etcd on
# loopback and checks that they found each other and the greeting arrived.
set -u

top=${abs_top_builddir:-$(pwd)}
target=$top/examples/xfer-example-etcd-target
initiator=$top/examples/xfer-example-etcd-initiator
etcd=${XT_ETCD:-/usr/bin/etcd}
: "${XFER_PLUGIN_PATH:=$top/plugins/tcp}"
export XFER_PLUGIN_PATH
if [ ! -x "$etcd" ]; then
    echo "SKIP: no etcd at $etcd (apt-get install etcd-server)"; exit 77
fi
if ! command -v curl >/dev/null 2>&1; then
    echo "SKIP: curl is needed to see etcd become healthy"; exit 77
fi

dir=$(mktemp -d "${TMPDIR:-/tmp}/xfer-example-etcd.XXXXXX") || exit 99
epid= tpid=
cleanup() {
    [ -n "$tpid" ] && { kill "$tpid" 2>/dev/null; wait "$tpid" 2>/dev/null; }
    [ -n "$epid" ] && { kill "$epid" 2>/dev/null; wait "$epid" 2>/dev/null; }
    rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# Ports from this shell's pid, tried until etcd comes up on a free pair.
for try in 1 2 3 4 5; do
    cport=$((20000 + ($$ * 7 + try * 131) % 20000))
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
[ -n "$epid" ] || { echo "FAIL: etcd did not start"; cat "$dir/etcd.log"; exit 1; }

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
