#!/bin/sh
# conformance-ptest.sh - the backend conformance suite over the in-process
# test backend: checks the core's request, metadata and notification paths
# without sockets (tests needing two processes are not registered).
# ${XT_WRAP} runs it under valgrind for make check-valgrind.
exec ${XT_WRAP:-} "${abs_top_builddir:-.}/tests/backend/test-conformance" "ptest" "$@"
