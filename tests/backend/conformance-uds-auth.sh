#!/bin/sh
# conformance-uds-auth.sh - the backend conformance suite over uds, every
# agent holding one shared secret (auth_key_file through XFER_AUTH_KEY_FILE)
# (under ${XT_WRAP}: valgrind, for make check-valgrind).
key=$(mktemp "${TMPDIR:-/tmp}/xfer-conformance-key.XXXXXX") || exit 99
trap 'rm -f "$key"' EXIT
head -c 32 /dev/urandom > "$key" && chmod 600 "$key" || exit 99
XFER_AUTH_KEY_FILE=$key
export XFER_AUTH_KEY_FILE
${XT_WRAP:-} "${abs_top_builddir:-.}/tests/backend/test-conformance" "uds" "$@"
