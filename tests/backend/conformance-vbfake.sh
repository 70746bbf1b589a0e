#!/bin/sh
# conformance-vbfake.sh - the backend conformance suite over the verbs
# plugin's own sources built against an emulated RDMA device
# (tests/plugins/fakeverbs.c), one rail.  The emulation lives in one
# process, so the suites that fork a peer are left out (and said so).
XT_SAME_PROCESS="the emulated device of vbfake lives in one process" \
exec ${XT_WRAP:-} "${abs_top_builddir:-.}/tests/backend/test-conformance" "vbfake:device=fake0" "$@"
