#!/bin/sh
# test-xfer-info.sh - xfer-info lists the tcp plugin with its parameters,
# shows what plugins say about this host (uds: whether the kernel allows
# cross-process copies; ucx and ofi: the library's version and what it
# finds), why each broken test plugin failed to load, and
# exits as its --help says.
set -u

top=${abs_top_builddir:-$(pwd)}
info=$top/tools/xfer-info
if [ ! -x "$info" ]; then echo "SKIP: $info is not built"; exit 77; fi
if [ -z "${XFER_PLUGIN_PATH:-}" ]; then
    echo "SKIP: XFER_PLUGIN_PATH is not set (run through make check)"; exit 77
fi
if [ ! -f "$top/plugins/tcp/xfer_tcp.la" ]; then
    echo "SKIP: the tcp plugin is not built"; exit 77
fi

dir=$(mktemp -d "${TMPDIR:-/tmp}/xfer-info.XXXXXX") || exit 99
trap 'rm -rf "$dir"' EXIT
trap 'exit 1' INT TERM

# ${XT_WRAP} runs each program under valgrind for make check-valgrind.
fail() {
    echo "FAIL: $*"
    for f in "$dir"/*; do echo "--- $f"; cat "$f"; done
    exit 1
}

${XT_WRAP:-} "$info" >"$dir/all" 2>"$dir/all.err"
rc=$?
[ "$rc" -eq 0 ] || fail "xfer-info exited with $rc"

# tcp is listed as loaded, with its port parameter: a uint in [0, 65535].
grep -Eq '^tcp [^ ]+ \(ABI 1\.[0-9]+\)$' "$dir/all" ||
    fail "tcp is not listed as a loaded plugin"
awk '/^tcp /{f=1} f && /^$/{exit} f' "$dir/all" >"$dir/tcp-block"
grep -Eq '^ +port +uint +0 +\[0, 65535\] ' "$dir/tcp-block" ||
    fail "tcp's port parameter (uint, default 0, [0, 65535]) is not listed"
grep -Eq 'capabilities:.*' "$dir/tcp-block" || fail "tcp shows no capabilities"
grep -Eq '^ptest [^ ]+ \(ABI 1\.[0-9]+\)$' "$dir/all" ||
    fail "the ptest test plugin is not listed as loaded"

# State lines (backend ABI minor 2): a plugin with a probe has one, one
# built for an older minor loads without it.
awk '/^ptest /{f=1} f && /^$/{exit} f' "$dir/all" >"$dir/ptest-block"
grep -q '^  state: in-process loopback: always available$' \
    "$dir/ptest-block" || fail "ptest shows no state line"
grep -Eq '^oldminor [^ ]+ \(ABI 1\.1\)$' "$dir/all" ||
    fail "oldminor (ABI minor 1) is not listed as loaded"
awk '/^oldminor /{f=1} f && /^$/{exit} f' "$dir/all" >"$dir/old-block"
if grep -q 'state:' "$dir/old-block"; then
    fail "oldminor shows a state it cannot have"
fi
if grep -q 'state:' "$dir/tcp-block"; then fail "tcp shows a state"; fi

# uds: the verdict on cross-process copies (CMA) must be what the kernel
# does here.  Yama's ptrace_scope and our CAP_SYS_PTRACE decide it where
# no seccomp filter may refuse process_vm_readv on its own; with one, the
# line must still give a verdict.  (tests/system/test-uds checks the
# verdict against a real process_vm_readv.)
if [ -f "$top/plugins/uds/xfer_uds.la" ]; then
    awk '/^uds /{f=1} f && /^$/{exit} f' "$dir/all" >"$dir/uds-block"
    grep '^  state: ' "$dir/uds-block" >"$dir/uds-state" ||
        fail "uds shows no state line"
    scope_file=/proc/sys/kernel/yama/ptrace_scope
    if [ -r "$scope_file" ]; then
        scope=$(cat "$scope_file")
        yama="yama ptrace_scope=$scope"
    else
        scope=0
        yama="no yama"
    fi
    capeff=$(awk '/^CapEff:/{print $2}' /proc/self/status)
    seccomp=$(awk '/^Seccomp:/{print $2}' /proc/self/status)
    ptracecap=$(( (0x${capeff:-0} >> 19) & 1 ))
    if [ "$scope" -ge 3 ] || { [ "$scope" -ge 1 ] && [ "$ptracecap" -eq 0 ]; }
    then
        want='refused \(EPERM; '"$yama"'\): transfers to peers fall back to the socket'
    elif [ "${seccomp:-0}" = 0 ]; then
        want='available \('"$yama"'\)$'
    else
        want='(available|refused \([A-Z]+; '"$yama"'\))'
    fi
    grep -Eq "^  state: cross-process copy \(CMA\): $want" "$dir/uds-state" ||
        fail "uds state is not the verdict this host gives (want /$want/)"
fi

# Every broken plugin: under "failed to load", with its file and reason,
# and never among the loaded ones.
sed -n '/^failed to load:$/,$p' "$dir/all" >"$dir/failed"
[ -s "$dir/failed" ] || fail "no 'failed to load' section"
while read -r name why; do
    grep -q "^  $name (.*/tests/plugins/xfer_$name\.la): .*$why" \
        "$dir/failed" || fail "$name: no load error saying '$why'"
    if grep -q "^$name " "$dir/all"; then fail "$name is listed as loaded"; fi
done <<'EOF_BROKEN'
badmajor built for backend ABI 2
short ends before mandatory op 'peer_add'
nosym does not export xfer_backend_nosym_v1
misname names itself 'other', expected 'misname'
noop lacks mandatory op 'progress'
EOF_BROKEN

# One plugin by name.
${XT_WRAP:-} "$info" tcp >"$dir/one" 2>&1 || fail "xfer-info tcp failed"
grep -Eq '^ +port +uint ' "$dir/one" || fail "xfer-info tcp shows no port"
if grep -q '^ptest ' "$dir/one"; then fail "xfer-info tcp shows ptest"; fi
${XT_WRAP:-} "$info" noop >"$dir/noop" 2>&1
rc=$?
[ "$rc" -eq 1 ] || fail "xfer-info noop (fails to load) exited with $rc, want 1"
grep -q "lacks mandatory op 'progress'" "$dir/noop" ||
    fail "xfer-info noop does not say why"
${XT_WRAP:-} "$info" nosuchplugin >"$dir/nosuch" 2>&1
rc=$?
[ "$rc" -eq 1 ] || fail "xfer-info nosuchplugin exited with $rc, want 1"
grep -q "nosuchplugin" "$dir/nosuch" || fail "unknown plugin not named"
${XT_WRAP:-} "$info" --bogus-option >"$dir/usage" 2>&1
rc=$?
[ "$rc" -eq 2 ] || fail "bad usage exited with $rc, want 2"

# The JSON form carries the same facts.
${XT_WRAP:-} "$info" --json >"$dir/json" 2>&1 || fail "xfer-info --json failed"
grep -q '"tcp"' "$dir/json" || fail "--json does not list tcp"
grep -q '"port"' "$dir/json" || fail "--json does not list tcp's port"
grep -q "lacks mandatory op 'progress'" "$dir/json" ||
    fail "--json does not carry load errors"
grep -q '"state": "in-process loopback: always available"' "$dir/json" ||
    fail "--json does not carry ptest's state"
grep -q '"name": "oldminor".*"state": null' "$dir/json" ||
    fail "--json gives oldminor a state"

# ucx, where built: its parameters and a probe naming the UCX version and
# the transports UCX finds here (self is always among them).
if [ -f "$top/plugins/ucx/xfer_ucx.la" ]; then
    awk '/^ucx /{f=1} f && /^$/{exit} f' "$dir/all" >"$dir/ucx-block"
    [ -s "$dir/ucx-block" ] || fail "ucx is built but not listed"
    for p in tls devices workers error_mode timeout_ms notif_window addr; do
        grep -Eq "^ +$p " "$dir/ucx-block" ||
            fail "ucx's parameter $p is not listed"
    done
    grep -Eq '^ +workers +uint +1 +\[1, 16\] ' "$dir/ucx-block" ||
        fail "ucx's workers (uint, default 1, [1, 16]) is not listed"
    grep -Eq '^  state: UCX [0-9]+\.[0-9]+\.[0-9]+ .*transports/devices found: .*self/' \
        "$dir/ucx-block" || fail "ucx's state line names no UCX version or transports"
    grep -q 'capabilities:.*HW_KEYS' "$dir/ucx-block" ||
        fail "ucx does not declare HW_KEYS"
else
    echo "note: ucx is not built; its listing not checked"
fi

# ofi, where built: its parameters, and a probe naming libfabric's version
# and the providers fi_getinfo found with RDM endpoints and RMA; where
# fi_info is installed, the same version and each of tcp;ofi_rxm and shm
# listed exactly when fi_info finds it.
if [ -f "$top/plugins/ofi/xfer_ofi.la" ]; then
    awk '/^ofi /{f=1} f && /^$/{exit} f' "$dir/all" >"$dir/ofi-block"
    [ -s "$dir/ofi-block" ] || fail "ofi is built but not listed"
    for p in provider domain fabric node timeout_ms notif_window notif_queue \
        notif_rx more cq_batch addr port advertise; do
        grep -Eq "^ +$p " "$dir/ofi-block" ||
            fail "ofi's parameter $p is not listed"
    done
    grep -Eq '^ +notif_window +uint +64 +\[2, 4096\] ' "$dir/ofi-block" ||
        fail "ofi's notif_window (uint, default 64, [2, 4096]) is not listed"
    grep -Eq '^ +timeout_ms +uint +10000 +\[1, 3600000\] ' "$dir/ofi-block" ||
        fail "ofi's timeout_ms (uint, default 10000, [1, 3600000]) is not listed"
    grep '^  state: ' "$dir/ofi-block" >"$dir/ofi-state" ||
        fail "ofi shows no state line"
    grep -Eq '^  state: libfabric [0-9]+\.[0-9]+; RDM providers with RMA: ' \
        "$dir/ofi-state" ||
        fail "ofi's state line names no libfabric version or providers"
    grep -q 'capabilities:.*HW_KEYS' "$dir/ofi-block" ||
        fail "ofi does not declare HW_KEYS"
    if command -v fi_info >/dev/null 2>&1; then
        v=$(fi_info --version 2>/dev/null |
            sed -n 's/^libfabric: \([0-9]*\.[0-9]*\).*/\1/p')
        [ -z "$v" ] || grep -q "^  state: libfabric $v; " "$dir/ofi-state" ||
            fail "ofi's state does not name libfabric $v (fi_info --version)"
        for prov in 'tcp;ofi_rxm' shm; do
            if fi_info -p "$prov" -t FI_EP_RDM -c FI_RMA >/dev/null 2>&1; then
                grep -q "RDM providers with RMA:.* $prov\( \|\$\)" \
                    "$dir/ofi-state" ||
                    fail "fi_info finds $prov, ofi's state does not list it"
            elif grep -q "RDM providers with RMA:.* $prov\( \|\$\)" \
                "$dir/ofi-state"; then
                fail "ofi's state lists $prov, which fi_info does not find"
            fi
        done
    else
        grep -q 'RDM providers with RMA:.* tcp;ofi_rxm' "$dir/ofi-state" ||
            fail "ofi's state does not list tcp;ofi_rxm"
        echo "note: no fi_info; the ofi probe checked against tcp;ofi_rxm only"
    fi
else
    echo "note: ofi is not built; its listing not checked"
fi

# verbs, where built: its parameters, and a probe that agrees with
# ibv_devices: "no RDMA device" exactly when it lists none, else each
# device it lists.
if [ -f "$top/plugins/verbs/xfer_verbs.la" ]; then
    awk '/^verbs /{f=1} f && /^$/{exit} f' "$dir/all" >"$dir/verbs-block"
    [ -s "$dir/verbs-block" ] || fail "verbs is built but not listed"
    for p in device devices port gid_index timeout_ms sq_depth chain_max \
        max_qps stripe_min notif_tx notif_window notif_queue addr ctl_port \
        advertise; do
        grep -Eq "^ +$p " "$dir/verbs-block" ||
            fail "verbs's parameter $p is not listed"
    done
    grep -Eq '^ +gid_index +int +-1 +\[-1, 255\] ' "$dir/verbs-block" ||
        fail "verbs's gid_index (int, default -1, [-1, 255]) is not listed"
    grep -q 'capabilities:.*HW_KEYS' "$dir/verbs-block" ||
        fail "verbs does not declare HW_KEYS"
    grep '^  state: ' "$dir/verbs-block" >"$dir/verbs-state" ||
        fail "verbs shows no state line"
    devs=
    if command -v ibv_devices >/dev/null 2>&1; then
        devs=$(ibv_devices 2>/dev/null | awk 'NR > 2 && NF >= 1 {print $1}')
    fi
    if [ -z "$devs" ]; then
        grep -q '^  state: no RDMA device (libibverbs' "$dir/verbs-state" ||
            fail "no RDMA device here, but verbs's state says: $(cat "$dir/verbs-state")"
    else
        for d in $devs; do
            grep -q " $d " "$dir/verbs-state" ||
                fail "ibv_devices lists $d, verbs's state does not"
        done
    fi
else
    echo "note: verbs is not built; its listing not checked"
fi

# --counters: the telemetry table, as text and as JSON, one entry per
# counter the library keeps (xfer_stats_fields).
${XT_WRAP:-} "$info" --counters >"$dir/counters" 2>&1 ||
    fail "--counters exited non-zero"
for c in read_ops write_bytes descs done failed 'errors\[16\]' notif_recv \
    in_flight lat_sum_us 'lat_us\[25\]'; do
    grep -Eq "^  $c " "$dir/counters" || fail "--counters does not list $c"
done
${XT_WRAP:-} "$info" --counters --json >"$dir/counters.json" 2>&1 ||
    fail "--counters --json exited non-zero"
n=$(grep -o '"name": ' "$dir/counters.json" | wc -l)
[ "$n" -eq 16 ] || fail "--counters --json lists $n counters, not 16"

echo "PASS: xfer-info"
