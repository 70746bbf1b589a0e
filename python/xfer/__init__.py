"""xfer: one-sided data transfer between processes (libxfer) for Python.

    import numpy as np, xfer

    with xfer.Agent("target", backends=["uds", "tcp"], listen=True) as a:
        buf = np.zeros(1 << 20, np.uint8)
        a.register(buf)
        ...

docs/python.md has the whole API, side by side with NIXL's.
"""
from ._native import lib as _lib
from ._errors import (XferError, InvalidError, NotFoundError,
                      NoMemoryError, NotSupportedError, BackendError,
                      RemoteDisconnectError, TimeoutError, CanceledError,
                      AccessError, BusyError, ExistsError, LoadError,
                      ConfigError, AuthError, strerror)
from ._mem import Region, DRAM, VRAM
from ._transfer import Transfer, PrepList, NO_NOTIF, DONE, PROC
from ._agent import (Agent, Registration, SharedBuffer, Notif, version,
                     plugins)

__version__ = "0.1.0"

# The library this module was built against must be the one loaded: the
# same major version (the ABI), checked once at import.
_built = "%d.%d" % (_lib.XFER_VERSION_MAJOR, _lib.XFER_VERSION_MINOR)
_loaded = version()
if _loaded.split(".")[0] != str(_lib.XFER_VERSION_MAJOR) or (
        _lib.XFER_VERSION_MAJOR == 0 and
        _loaded.split(".")[:2] != _built.split(".")):
    raise ImportError("xfer was built against libxfer %s but %s is loaded; "
                      "rebuild the package (pip install ./python)"
                      % (_built, _loaded))

NOTIF_MAX = _lib.XFER_NOTIF_MAX
NAME_MAX = _lib.XFER_NAME_MAX

__all__ = [
    "Agent", "Registration", "SharedBuffer", "Transfer", "PrepList",
    "Region", "Notif", "NO_NOTIF", "DONE", "PROC", "DRAM", "VRAM",
    "NOTIF_MAX", "NAME_MAX", "version", "plugins", "strerror",
    "XferError", "InvalidError", "NotFoundError", "NoMemoryError",
    "NotSupportedError", "BackendError", "RemoteDisconnectError",
    "TimeoutError", "CanceledError", "AccessError", "BusyError",
    "ExistsError", "LoadError", "ConfigError", "AuthError",
]
