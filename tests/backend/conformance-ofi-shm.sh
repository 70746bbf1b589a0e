#!/bin/sh
# conformance-ofi-shm.sh - the backend conformance suite over ofi with
# libfabric's shm provider (processes of this host; large writes and
# reads copied by the initiator itself over CMA, so a killed or stopped
# target holds nothing up).  libfabric 1.17's shm checks no remote key,
# so the refusal suites skip themselves (the backend state says so).
exec ${XT_WRAP:-} "${abs_top_builddir:-.}/tests/backend/test-conformance" "ofi:provider=shm" "$@"
