#!/bin/sh
# conformance-ptest-inline.sh - the backend conformance suite over the
# in-process test backend with inline=1: reposts run the target's checks,
# copy and notification in the posting thread and complete at once, while
# first posts still wait for the target (as uds's shared-memory path).
# ${XT_WRAP} runs it under valgrind for make check-valgrind.
exec ${XT_WRAP:-} "${abs_top_builddir:-.}/tests/backend/test-conformance" "ptest:inline=1" "$@"
