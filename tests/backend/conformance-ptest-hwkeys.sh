#!/bin/sh
# conformance-ptest-hwkeys.sh - the backend conformance suite over the
# in-process test backend playing a hardware transport: XFER_PTEST_HWKEYS
# makes ptest declare XFER_CAP_HW_KEYS when it is loaded and sets its
# hwkeys parameter, so the target checks packed keys and access rights
# itself, as a NIC does, and the hardware-key refusal tests run.
# ${XT_WRAP} runs it under valgrind for make check-valgrind.
XFER_PTEST_HWKEYS=1; export XFER_PTEST_HWKEYS
exec ${XT_WRAP:-} "${abs_top_builddir:-.}/tests/backend/test-conformance" "ptest" "$@"
