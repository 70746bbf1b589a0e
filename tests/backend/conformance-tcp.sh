#!/bin/sh
# conformance-tcp.sh - the backend conformance suite over tcp
# (under ${XT_WRAP}: valgrind, for make check-valgrind).
exec ${XT_WRAP:-} "${abs_top_builddir:-.}/tests/backend/test-conformance" "tcp" "$@"
