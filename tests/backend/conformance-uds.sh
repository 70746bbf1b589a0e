#!/bin/sh
# conformance-uds.sh - the backend conformance suite over uds, mode=auto:
# mapped memfds where the target allocated its memory, else CMA
# (under ${XT_WRAP}: valgrind, for make check-valgrind).
exec ${XT_WRAP:-} "${abs_top_builddir:-.}/tests/backend/test-conformance" "uds" "$@"
