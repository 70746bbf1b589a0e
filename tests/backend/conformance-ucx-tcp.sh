#!/bin/sh
# conformance-ucx-tcp.sh - the backend conformance suite over ucx with
# UCX's tcp transport (and self for an agent talking to itself), on
# loopback only (under ${XT_WRAP}: valgrind, for make check-valgrind).
exec ${XT_WRAP:-} "${abs_top_builddir:-.}/tests/backend/test-conformance" "ucx:tls=tcp\,self,devices=lo" "$@"
