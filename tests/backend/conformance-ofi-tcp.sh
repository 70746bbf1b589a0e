#!/bin/sh
# conformance-ofi-tcp.sh - the backend conformance suite over ofi with
# libfabric's tcp;ofi_rxm provider on the loopback domain (under
# ${XT_WRAP}: valgrind, for make check-valgrind).
exec ${XT_WRAP:-} "${abs_top_builddir:-.}/tests/backend/test-conformance" "ofi:provider=tcp;ofi_rxm,domain=lo" "$@"
