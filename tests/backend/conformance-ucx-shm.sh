#!/bin/sh
# conformance-ucx-shm.sh - the backend conformance suite over ucx with the
# shared-memory transports that work on this machine: posix and sysv for
# memory UCX maps, cma for the user's own memory, self within a process;
# error_mode=none, because UCX 1.13 leaves every shared-memory transport
# out of endpoints that ask for peer error handling.
exec ${XT_WRAP:-} "${abs_top_builddir:-.}/tests/backend/test-conformance" "ucx:tls=posix\,sysv\,cma\,self,error_mode=none" "$@"
