"""_errors.py - every libxfer status as a Python exception.

A failed call raises the class of its status, carrying the status code,
its name and the library's specific sentence (xfer_last_error(): which
key, which descriptor, which peer).  Each class also derives from the
built-in exception a Python programmer would catch for it
(RemoteDisconnectError is a ConnectionError, TimeoutError a TimeoutError,
InvalidError a ValueError), so generic handlers work too.
"""
import builtins

from ._native import ffi, lib


class XferError(Exception):
    """A libxfer call failed.  status: the code (negative int); name:
    "XFER_ERR_..."; message: the library's sentence for this failure."""

    status = None
    name = None

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.name = _NAMES.get(status, "XFER_ERR_%d" % -status)
        self.message = message

    def __reduce__(self):
        return (type(self), (self.status, self.message))


class InvalidError(XferError, ValueError):
    """XFER_ERR_INVALID: bad argument, spec or metadata."""


class NotFoundError(XferError, LookupError):
    """XFER_ERR_NOT_FOUND: no such plugin, agent or region."""


class NoMemoryError(XferError, MemoryError):
    """XFER_ERR_NOMEM: out of memory."""


class NotSupportedError(XferError, NotImplementedError):
    """XFER_ERR_NOT_SUPPORTED: the backend cannot do this."""


class BackendError(XferError):
    """XFER_ERR_BACKEND: the transport failed locally."""


class RemoteDisconnectError(XferError, ConnectionError):
    """XFER_ERR_REMOTE_DISCONNECT: the peer is gone, the link cut, or
    the peer replaced by a newer epoch."""


class TimeoutError(XferError, builtins.TimeoutError):
    """XFER_ERR_TIMEOUT: no progress within the bound."""


class CanceledError(XferError):
    """XFER_ERR_CANCELED: cancelled by the caller."""


class AccessError(XferError, PermissionError):
    """XFER_ERR_ACCESS: refused by the target (key, bounds, rights, or
    the memory was deregistered)."""


class BusyError(XferError):
    """XFER_ERR_BUSY: the object is still in use (try again later)."""


class ExistsError(XferError):
    """XFER_ERR_EXISTS: already there."""


class LoadError(XferError, ImportError):
    """XFER_ERR_LOAD: a plugin could not be loaded."""


class ConfigError(XferError, ValueError):
    """XFER_ERR_CONFIG: unknown key, bad type or value out of range (the
    sentence names the key and the plugin)."""


class AuthError(XferError, PermissionError):
    """XFER_ERR_AUTH: a peer failed authentication."""


_CLASSES = {
    lib.XFER_ERR_INVALID: InvalidError,
    lib.XFER_ERR_NOT_FOUND: NotFoundError,
    lib.XFER_ERR_NOMEM: NoMemoryError,
    lib.XFER_ERR_NOT_SUPPORTED: NotSupportedError,
    lib.XFER_ERR_BACKEND: BackendError,
    lib.XFER_ERR_REMOTE_DISCONNECT: RemoteDisconnectError,
    lib.XFER_ERR_TIMEOUT: TimeoutError,
    lib.XFER_ERR_CANCELED: CanceledError,
    lib.XFER_ERR_ACCESS: AccessError,
    lib.XFER_ERR_BUSY: BusyError,
    lib.XFER_ERR_EXISTS: ExistsError,
    lib.XFER_ERR_LOAD: LoadError,
    lib.XFER_ERR_CONFIG: ConfigError,
    lib.XFER_ERR_AUTH: AuthError,
}

_NAMES = {
    lib.XFER_ERR_INVALID: "XFER_ERR_INVALID",
    lib.XFER_ERR_NOT_FOUND: "XFER_ERR_NOT_FOUND",
    lib.XFER_ERR_NOMEM: "XFER_ERR_NOMEM",
    lib.XFER_ERR_NOT_SUPPORTED: "XFER_ERR_NOT_SUPPORTED",
    lib.XFER_ERR_BACKEND: "XFER_ERR_BACKEND",
    lib.XFER_ERR_REMOTE_DISCONNECT: "XFER_ERR_REMOTE_DISCONNECT",
    lib.XFER_ERR_TIMEOUT: "XFER_ERR_TIMEOUT",
    lib.XFER_ERR_CANCELED: "XFER_ERR_CANCELED",
    lib.XFER_ERR_ACCESS: "XFER_ERR_ACCESS",
    lib.XFER_ERR_BUSY: "XFER_ERR_BUSY",
    lib.XFER_ERR_EXISTS: "XFER_ERR_EXISTS",
    lib.XFER_ERR_LOAD: "XFER_ERR_LOAD",
    lib.XFER_ERR_CONFIG: "XFER_ERR_CONFIG",
    lib.XFER_ERR_AUTH: "XFER_ERR_AUTH",
}


def strerror(status):
    """The library's generic sentence for a status code."""
    return ffi.string(lib.xfer_strerror(status)).decode("utf-8", "replace")


def error(status):
    """The exception for a status just returned to this thread: the
    library's specific sentence, or the generic one when it has none.
    Call it before any other xfer call on the thread."""
    msg = ffi.string(lib.xfer_last_error()).decode("utf-8", "replace")
    if not msg:
        msg = strerror(status)
    return _CLASSES.get(status, XferError)(status, msg)


def check(status):
    """status when it is not an error; raises the error otherwise."""
    if status < 0:
        raise error(status)
    return status
