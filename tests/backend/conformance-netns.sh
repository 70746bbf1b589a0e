#!/bin/sh
# conformance-netns.sh - the conformance suite's two-process tests across a
# real link: the test runs in one network namespace, each target process
# it forks moves into another (XT_CHILD_NETNS), joined by a veth pair
# (198.18.0.1 and 198.18.0.2/24, both named xt0 so one spec fits both
# sides).  Over tcp, over ucx with UCX's tcp transport on xt0 alone
# (loopback would look reachable to UCX from both namespaces and lead it to
# the wrong process), and over ofi with libfabric's tcp;ofi_rxm on the
# domain xt0 (the tcp provider's domain is the interface).  Each control
# channel listens on 0.0.0.0 and advertises the namespace's address.
# Needs root and iproute2; says SKIP otherwise.  The
# namespaces and links are deleted on every exit.
#
# Then the link suite (tests/backend/conf-link.c), once per way of cutting
# the link (XT_LINK_MODES, default "blackhole down"): the program gets
# XT_LINK_CUT and XT_LINK_RESTORE, shell commands it runs mid-transfer,
# and keeps one target in its own namespace (the peer the cut must not
# touch).  Both cut on b's side, so that to the initiator in a the link
# goes silent (no RST, no ICMP: its packets vanish and TCP retransmits):
#   blackhole  a route in b drops everything b sends to 198.18.0.1; a's
#              packets still reach b, nothing comes back;
#   down       b's end of the veth goes down: a's end loses its carrier
#              and the veth drops whatever a sends.  Restoring it also
#              flushes a's neighbour entry for b, which ARP marked failed
#              during the cut (the first connect after would otherwise
#              answer EHOSTUNREACH: the kernel's, not the backend's).
# The link suite runs on tcp (both modes).  The rest is known to fail,
# so it runs only with XT_LINK_ALL=1 and says SKIP:
#   ucx   after the timeout force-closed the endpoint and the link
#         returned, UCX 1.13 may crash in its tcp progress (a freed
#         endpoint's handler) when the peer closes its connections: seen
#         with both cuts (blackhole more often), every check before it
#         passing;
#   ofi   tcp;ofi_rxm may deliver nothing for seconds after the reload
#         (it reuses its stalled connection to the same address, whose
#         TCP backoff decides); with the initiator at timeout_ms=1000 a
#         notification sent after recovery was once never delivered, and
#         destroying the agent while rxm still held the cut peer's
#         operations crashed libfabric once (at 2000, six runs passed).
set -u

top=${abs_top_builddir:-$(pwd)}
prog=$top/tests/backend/test-conformance
[ -x "$prog" ] || { echo "SKIP: $prog is not built"; exit 77; }
[ "$(id -u)" -eq 0 ] || { echo "SKIP: network namespaces need root"; exit 77; }
command -v ip >/dev/null 2>&1 || { echo "SKIP: no ip (iproute2)"; exit 77; }

a=xta$$ b=xtb$$
cleanup() {
    ip netns del "$a" 2>/dev/null
    ip netns del "$b" 2>/dev/null
    ip link del "${a}v" 2>/dev/null
}
trap cleanup EXIT
trap 'exit 1' INT TERM

if ! ip netns add "$a" 2>/dev/null || ! ip netns add "$b" 2>/dev/null ||
    ! ip link add "${a}v" type veth peer name "${b}v" 2>/dev/null; then
    echo "SKIP: cannot create network namespaces or a veth pair here"
    exit 77
fi
set -e
ip link set "${a}v" netns "$a"
ip link set "${b}v" netns "$b"
ip -n "$a" link set "${a}v" name xt0
ip -n "$b" link set "${b}v" name xt0
ip -n "$a" addr add 198.18.0.1/24 dev xt0
ip -n "$b" addr add 198.18.0.2/24 dev xt0
for n in "$a" "$b"; do
    ip -n "$n" link set lo up
    ip -n "$n" link set xt0 up
done
set +e

specs=${XT_NETNS_SPECS:-}
if [ -z "$specs" ]; then
    [ -f "$top/plugins/tcp/xfer_tcp.la" ] && specs="tcp:addr=0.0.0.0"
    [ -f "$top/plugins/ucx/xfer_ucx.la" ] &&
        specs="$specs ucx:tls=tcp,devices=xt0,addr=0.0.0.0"
    [ -f "$top/plugins/ofi/xfer_ofi.la" ] &&
        specs="$specs ofi:provider=tcp;ofi_rxm,domain=xt0,addr=0.0.0.0"
fi
[ -n "$specs" ] || { echo "SKIP: none of tcp, ucx, ofi is built"; exit 77; }

# Bytes through namespace b's end of the link: proof the tests crossed it.
link_bytes() {
    # %.0f: past 2^31 awk's print writes 2.18924e+09, which $(( )) refuses
    # (and dash then ends the script, its status 0: a silent PASS).
    ip -n "$b" -s link show xt0 | awk '/RX:/{getline; r=$1} /TX:/{getline; t=$1} END{printf "%.0f\n", r + t}'
}

rc=0
for spec in $specs; do
    before=$(link_bytes)
    echo "=== $spec across namespaces $a (198.18.0.1) and $b (198.18.0.2)"
    # The process and stall suites: the tests with a target in another
    # process, which here is another namespace.
    XT_ONLY=test_proc XT_CHILD_NETNS=/run/netns/$b \
        ip netns exec "$a" ${XT_WRAP:-} "$prog" "$spec"
    r=$?
    moved=$(( $(link_bytes) - before ))
    echo "=== $spec: exit $r, $moved bytes crossed the link"
    if [ "$r" -eq 0 ] && [ "$moved" -lt 1048576 ]; then
        echo "FAIL: $spec: under 1 MiB crossed the link: the targets did not run in $b"
        r=1
    fi
    [ "$r" -eq 0 ] || rc=1
    modes=${XT_LINK_MODES-blackhole down}
    case $spec:${XT_LINK_ALL:-0} in
    tcp*|*:1) ;;
    ucx*)
        echo "SKIP: link suite on $spec: UCX 1.13 may crash (a freed endpoint in its tcp progress) once the peer behind the cut closes, after either cut (see this script's header); XT_LINK_ALL=1 runs it"
        continue ;;
    *)
        echo "SKIP: link suite on $spec: tcp;ofi_rxm's recovery after a cut is not reliable (see this script's header); XT_LINK_ALL=1 runs it"
        continue ;;
    esac
    for mode in $modes; do
        case $mode in
        blackhole)
            cut="ip -n $b route add blackhole 198.18.0.1/32"
            restore="ip -n $b route del blackhole 198.18.0.1/32" ;;
        down)
            cut="ip -n $b link set xt0 down"
            restore="ip -n $b link set xt0 up && ip -n $a neigh flush dev xt0" ;;
        *)
            echo "FAIL: XT_LINK_MODES: unknown mode $mode (blackhole, down)"
            rc=1; continue ;;
        esac
        echo "=== $spec: link cut by $mode ($cut)"
        XT_ONLY=test_link XT_CHILD_NETNS=/run/netns/$b XT_LINK_CUT=$cut \
            XT_LINK_RESTORE=$restore \
            ip netns exec "$a" ${XT_WRAP:-} "$prog" "$spec"
        r=$?
        # A test that failed with the link cut must not leave it so.
        sh -c "$restore" 2>/dev/null
        echo "=== $spec, link cut by $mode: exit $r"
        [ "$r" -eq 0 ] || rc=1
    done
done
exit $rc
