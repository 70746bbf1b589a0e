#!/bin/sh
# conformance-uds-shm.sh - the backend conformance suite over uds with
# mode=shm and every buffer from xfer_mem_alloc (XT_ALLOC=xfer): reposts
# move data only through mapped memfds (anything else would fail).
# (under ${XT_WRAP}: valgrind, for make check-valgrind).
XT_ALLOC=xfer; export XT_ALLOC
exec ${XT_WRAP:-} "${abs_top_builddir:-.}/tests/backend/test-conformance" "uds:mode=shm" "$@"
