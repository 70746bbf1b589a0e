#!/bin/sh
# conformance-tcp.sh - the backend conformance suite over tcp.
exec "${abs_top_builddir:-.}/tests/backend/test-conformance" "tcp" "$@"
