"""_build.py - builds xfer._native, libxfer's API for Python, with cffi.

Nothing here copies the C header.  pkg-config names the installed xfer.h
and libxfer; the declarations cffi needs are derived from that header at
build time (comments, preprocessor lines and C++ guards removed; every
integer #define becomes "#define NAME ..." and every array length it
gives "[...]", whose values the C compiler fills in).  cffi's API mode
then compiles a module against the same header: a declaration that does
not match the real one fails the build (with the errors turned on
below), and every struct's size and field offsets are checked when the
module is imported.

Environment: PKG_CONFIG_PATH / PKG_CONFIG_SYSROOT_DIR as for any
pkg-config user; XFER_PY_RPATH=0 to leave libxfer's directory out of the
module's run-time search path (then ld.so.conf or LD_LIBRARY_PATH must
find it).
"""
import os
import re
import shlex
import subprocess
import sys

from cffi import FFI

PC = "xfer"


def _pkgconfig(flag):
    try:
        out = subprocess.run(["pkg-config", flag, PC], check=True,
                             capture_output=True, text=True).stdout
    except FileNotFoundError:
        sys.exit("xfer: pkg-config is not installed; it finds libxfer "
                 "(Debian: apt install pkg-config)")
    except subprocess.CalledProcessError as e:
        sys.exit("xfer: pkg-config cannot find libxfer (%s); install it "
                 "first (make install), or point PKG_CONFIG_PATH at the "
                 "directory holding xfer.pc" % e.stderr.strip())
    return shlex.split(out)


def _header(include_dirs):
    """The xfer.h the compiler will see: the first one on the include
    path pkg-config gave, then the system's directories."""
    extra = [d for d in os.environ.get("CPATH", "").split(":") if d]
    for d in include_dirs + extra + ["/usr/local/include", "/usr/include"]:
        path = os.path.join(d, "xfer", "xfer.h")
        if os.path.isfile(path):
            return path
    sys.exit("xfer: xfer/xfer.h is not in %s" %
             ", ".join(include_dirs + ["/usr/local/include", "/usr/include"]))


# An integer constant: digits, suffixes, shifts, bit operators and other
# XFER_ constants.  Anything else (a cast, a string) is left out.
_INT_DEFINE = re.compile(r"#\s*define\s+(XFER_[A-Z0-9_]+)\s+([^\s].*)$")
_INT_VALUE = re.compile(r"^[\s()0-9a-fA-FxXuUlL<>|&~+\-A-Z_]+$")


def cdef_from_header(text):
    """The header's declarations as cffi's cdef wants them."""
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    text = text.replace("\\\n", " ")
    out, skip = [], 0
    for line in text.split("\n"):
        s = line.strip()
        if not s.startswith("#"):
            if not skip:
                out.append(line)
            continue
        if skip:
            if re.match(r"#\s*(if|ifdef|ifndef)\b", s):
                skip += 1
            elif re.match(r"#\s*endif\b", s):
                skip -= 1
            continue
        if re.match(r"#\s*ifdef\s+__cplusplus\b", s):
            skip = 1
            continue
        m = _INT_DEFINE.match(s)
        if m and _INT_VALUE.match(m.group(2)):
            out.append("#define %s ..." % m.group(1))
    # An array sized by a constant (uint64_t errors[XFER_STATS_CODES]):
    # its length, too, comes from the compiler.
    return re.sub(r"\[\s*XFER_[A-Z0-9_]+\s*\]", "[...]", "\n".join(out))


# Our own, not the header's: the callback xfer_notif_drain calls, which
# reacquires the GIL and hands each notification to Python.
CALLBACKS = """
extern "Python" void _xfer_py_notif(void *arg, const char *from,
                                    const void *msg, size_t len);
"""


def _builder():
    cflags = _pkgconfig("--cflags")
    libs = _pkgconfig("--libs")
    include_dirs = [f[2:] for f in cflags if f.startswith("-I")]
    library_dirs = [f[2:] for f in libs if f.startswith("-L")]
    libraries = [f[2:] for f in libs if f.startswith("-l")]
    header = _header(include_dirs)
    with open(header, encoding="utf-8") as f:
        cdef = cdef_from_header(f.read())
    rpath = [] if os.environ.get("XFER_PY_RPATH") == "0" else library_dirs
    ffi = FFI()
    ffi.cdef(cdef + CALLBACKS)
    ffi.set_source(
        "xfer._native",
        "#include <xfer/xfer.h>\n",
        include_dirs=include_dirs,
        library_dirs=library_dirs,
        libraries=libraries or ["xfer"],
        runtime_library_dirs=rpath,
        # A derived declaration that disagrees with the header is an
        # error, not a warning.
        extra_compile_args=["-Werror=incompatible-pointer-types",
                            "-Werror=int-conversion",
                            "-Werror=implicit-function-declaration"],
    )
    return ffi


ffibuilder = _builder()

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
