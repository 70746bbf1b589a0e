#!/bin/sh
# conformance-ofi-tcp.sh - the backend conformance suite over ofi with
# libfabric's tcp;ofi_rxm provider on the loopback domain (under
# ${XT_WRAP}: valgrind, for make check-valgrind).
# Under ASan, allocations are traced through libfabric's own frames (it
# keeps no frame pointers), so that tests/lsan.supp's fi_cq_read entry
# can see where the provider's leak comes from; ignored otherwise.
ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}fast_unwind_on_malloc=0"
export ASAN_OPTIONS
exec ${XT_WRAP:-} "${abs_top_builddir:-.}/tests/backend/test-conformance" "ofi:provider=tcp;ofi_rxm,domain=lo" "$@"
