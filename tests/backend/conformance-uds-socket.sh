#!/bin/sh
# conformance-uds-socket.sh - the backend conformance suite over uds with
# mode=socket: bytes through the socket, the path of the EPERM fallback
# (under ${XT_WRAP}: valgrind, for make check-valgrind).
exec ${XT_WRAP:-} "${abs_top_builddir:-.}/tests/backend/test-conformance" "uds:mode=socket" "$@"
