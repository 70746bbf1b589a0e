#!/bin/sh
# test-python.sh - the Python package's suite (python/tests, pytest) as
# one test of make check: the package is built by pip, without build
# isolation or a package index, in a venv that sees the system's
# python3-cffi, python3-numpy and python3-pytest, against the libxfer that
# make check installed into python-stage (python/Makefile.inc), the way a
# user builds it against an installed libxfer.  pytest's count is printed
# in CUnit's summary form, and each skipped test as "SKIP: reason", so
# .ci/summarize counts them like every other test.
set -u
: "${abs_top_builddir:?run through make check}" "${abs_top_srcdir:?}"
py=${PYTHON3:-/usr/bin/python3}
b=$abs_top_builddir

# Under ASan or TSan the library needs its runtime loaded first, which an
# uninstrumented interpreter does not do: the plain run covers it.
if [ -n "${ASAN_OPTIONS:-}${TSAN_OPTIONS:-}" ]; then
    echo "SKIP: the Python suite runs in the plain build (a sanitized libxfer needs its runtime preloaded into python)"
    exit 77
fi

stage=$b/python-stage
pc=$(find "$stage" -name xfer.pc -path '*/pkgconfig/*' 2>/dev/null | head -n 1)
if [ -z "$pc" ]; then
    echo "FAIL: no staged install in $stage (make check builds it first: python/Makefile.inc)"
    exit 1
fi
libdir=$(dirname "$(dirname "$pc")")
plugins=$libdir/xfer

venv=$b/python-venv
if [ ! -x "$venv/bin/python" ]; then
    "$py" -m venv --system-site-packages "$venv" || {
        echo "FAIL: $py -m venv failed (Debian: python3-venv)"
        exit 1
    }
fi
# pip builds in the source directory it is given: a copy in the build
# tree, so the source tree stays clean (and may be read-only).
rm -rf "$b/python-src"
cp -R "$abs_top_srcdir/python" "$b/python-src" && chmod -R u+w "$b/python-src"
rm -rf "$b/python-src/build" "$b/python-src"/*.egg-info
echo "== pip install --no-build-isolation --no-index ./python (PKG_CONFIG_PATH=$(dirname "$pc"), sysroot $stage)"
PKG_CONFIG_PATH=$(dirname "$pc") PKG_CONFIG_SYSROOT_DIR=$stage \
    "$venv/bin/python" -m pip install --no-build-isolation --no-index \
    --no-deps --force-reinstall --disable-pip-version-check -q \
    "$b/python-src" || {
    echo "FAIL: pip install of the package failed"
    exit 1
}

out=$b/tests/python/pytest.out
mkdir -p "$(dirname "$out")"
# The installed plugins, from the staged install: what the package finds
# is what a user's installed xfer holds.
cd "$b/tests/python" || exit 1
# No __pycache__ in the source tree (pytest would write its rewritten
# test modules there).
PYTHONDONTWRITEBYTECODE=1 XFER_PLUGIN_PATH=$plugins \
    "$venv/bin/python" -m pytest -p no:cacheprovider -rs -v \
    "$abs_top_srcdir/python/tests" >"$out" 2>&1
rc=$?
cat "$out"

# The count, in the form .ci/summarize reads.
last=$(tail -n 1 "$out")
count() { echo "$last" | grep -oE "[0-9]+ $1" | grep -oE '^[0-9]+' || echo 0; }
p=$(count passed) f=$(count failed) e=$(count error) s=$(count skipped)
f=$((f + e))
t=$((p + f + s))
sed -n 's/^SKIPPED \[[0-9]*\] /SKIP: /p' "$out"
printf '               tests %6d %6d %6d %6d %8d\n' "$t" "$((p + f))" "$p" "$f" "$s"
[ "$rc" -eq 5 ] && echo "FAIL: pytest collected no tests"
exit "$rc"
