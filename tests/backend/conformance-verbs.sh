#!/bin/sh
# conformance-verbs.sh - the backend conformance suite over the verbs
# plugin on a real RDMA device (XFER_TEST_VERBS names it, e.g.
# "device=mlx5_0" or "devices=mlx5_0\,mlx5_1"; empty: the first active
# port).  On a host without one it reports SKIP with the plugin's own
# reason (its probe sentence, as xfer-info shows it).
b="${abs_top_builddir:-.}"
probe=$("$b/tools/xfer-info" verbs 2>&1 | sed -n 's/^ *state: *//p' | head -n 1)
case "$probe" in
"" | *"no RDMA device"*)
    echo "SKIP: no RDMA device on this host (verbs probe: ${probe:-none})"
    exit 77 ;;
esac
spec="verbs"
[ -n "${XFER_TEST_VERBS:-}" ] && spec="verbs:${XFER_TEST_VERBS}"
exec ${XT_WRAP:-} "$b/tests/backend/test-conformance" "$spec" "$@"
