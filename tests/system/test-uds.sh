#!/bin/sh
# test-uds.sh - the uds-only checks: peers on another host refused, a dead
# target reported as a disconnect, the EPERM fallback (under ${XT_WRAP}).
exec ${XT_WRAP:-} "${abs_top_builddir:-.}/tests/system/test-uds" "$@"
