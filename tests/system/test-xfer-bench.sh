#!/bin/sh
# test-xfer-bench.sh - xfer-bench as people run it.  The driver itself
# runs bare: it starts every xfer-bench under ${XT_WRAP}, and valgrind
# cannot run inside valgrind (a traced child exec'ing it fails to load).
exec "${abs_top_builddir:-.}/tests/system/test-xfer-bench" "$@"
