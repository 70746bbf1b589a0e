#!/bin/sh
# conformance-uds-cma.sh - the backend conformance suite over uds with
# mode=cma: reposts move data only by process_vm_readv/writev
# (under ${XT_WRAP}: valgrind, for make check-valgrind).
exec ${XT_WRAP:-} "${abs_top_builddir:-.}/tests/backend/test-conformance" "uds:mode=cma" "$@"
