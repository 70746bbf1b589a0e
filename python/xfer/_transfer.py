"""_transfer.py - a transfer request (xfer_req_t) and a prepared list
(xfer_prep_t) as Python objects.

A Transfer is made once and posted as often as wanted: post() starts it
(with this post's notification, or the default one), status() and
wait() say how it ended, cancel() stops it, release() frees it (also on
leaving a with block, and when it is collected).  `await transfer`
waits for it in asyncio.
"""
import asyncio
import time

from ._errors import check, error, BusyError
from ._native import ffi, lib

DONE = "DONE"
PROC = "PROC"

# A sentinel for post(notif=NO_NOTIF): no notification on this post, even
# when the transfer has a default one.
NO_NOTIF = object()

# asyncio polls a transfer's status: the first checks come quickly, then
# the pause doubles up to this cap (seconds), so a long transfer costs a
# status call a millisecond and a short one is seen within microseconds.
ASYNC_POLL_MAX = 0.001

# A wait with no timeout sleeps in the library in pieces this long (ms),
# so that Ctrl-C (a signal Python handles between calls) interrupts it.
_WAIT_SLICE_MS = 200


def _notif_arg(notif):
    """(pointer, length, keepalive) for xfer_req_post's notification."""
    if notif is None:
        return ffi.NULL, 0, None
    if notif is NO_NOTIF:
        return lib.xfer_notif_none, 0, None
    if isinstance(notif, str):
        notif = notif.encode("utf-8")
    try:
        cd = ffi.from_buffer(notif)
    except TypeError:
        raise TypeError("a notification is bytes (or str, sent as UTF-8), "
                        "not %s" % type(notif).__name__) from None
    return cd, len(cd), cd


class Transfer:
    """A READ or WRITE between local and remote memory: made by
    Agent.transfer() or Agent.transfer_prepped(), posted by post()."""

    __slots__ = ("_req", "_agent", "_keep", "_waiting", "op", "remote_agent",
                 "nbytes", "__weakref__")

    def __init__(self, agent, req, keep, op, remote_agent, nbytes):
        self._req = req
        self._waiting = 0   # threads inside wait() now (the agent's lock)
        self._agent = agent
        self._keep = keep
        self.op = op
        self.remote_agent = remote_agent
        self.nbytes = nbytes

    def _c(self):
        req = self._req
        if req is None:
            raise ValueError("this transfer was released")
        if self._agent._agent is None:
            # Closed, also by the garbage collector, which may run the
            # agent's finalizer before this object's: the library
            # freed the request with the agent.
            raise ValueError("this transfer's agent was closed")
        return req

    def post(self, notif=None):
        """Start the transfer (again).  notif: bytes for this post only,
        None for the transfer's default notification, NO_NOTIF for none.
        True when it completed at once, False while it goes on; raises
        the error it failed with (BusyError while the previous post is
        still going)."""
        req = self._req
        if req is None:
            raise ValueError("this transfer was released")
        if notif is None:
            st = lib.xfer_req_post(req, ffi.NULL, 0)
        else:
            ptr, n, _keep = _notif_arg(notif)
            st = lib.xfer_req_post(req, ptr, n)
        if st < 0:
            raise error(st)
        return st == 0

    def status(self):
        """"DONE" when the data is where it was sent, "PROC" while it
        moves; raises the error the last post ended with."""
        st = lib.xfer_req_status(self._c())
        if st < 0:
            raise error(st)
        return DONE if st == 0 else PROC

    @property
    def done(self):
        """True once the last post ended well (raises if it failed)."""
        return self.status() == DONE

    def wait(self, timeout=None):
        """Wait for the last post to end: True when it completed, False
        when timeout (seconds; None: for ever) ran out first; raises the
        error it failed with.  The GIL is released while it waits."""
        self._c()
        if timeout is not None and timeout < 0:
            raise ValueError("timeout must not be negative")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if deadline is None:
                ms = _WAIT_SLICE_MS
            else:
                left = deadline - time.monotonic()
                ms = min(_WAIT_SLICE_MS, max(int(left * 1000 + 0.999), 0))
            # Another thread may close the agent meanwhile: each slice
            # starts only while it is open (ValueError otherwise), and
            # close() waits for the slice to end before freeing the
            # request.
            self._agent._wait_begin(self)
            try:
                st = lib.xfer_req_wait(self._req, ms)
            finally:
                self._agent._wait_end(self)
            if st < 0:
                raise error(st)
            if st == 0:
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False

    def cancel(self):
        """Stop the last post: True when it stopped (its status is then
        CanceledError) or had already ended; False when the transport
        must finish what is on the wire first (wait, then look).  After
        a post ended by the transfer's own timeout, False also while the
        backend still holds the request: post again once it says True."""
        return check(lib.xfer_req_cancel(self._c())) == 0

    def release(self):
        """Free the request (an in-flight post is cancelled first; raises
        BusyError, and stays valid, when that cannot finish at once).
        Safe to call twice."""
        agent = self._agent
        with agent._lock:
            req = self._req
            if req is None:
                return
            if agent._agent is None:
                # The agent was closed and freed the request.
                self._kill()
                return
            if self._waiting:
                raise BusyError(lib.XFER_ERR_BUSY, "another thread is "
                                "waiting on this transfer; release it "
                                "once that wait returns")
            st = lib.xfer_req_release(req)
            if st < 0:
                raise error(st)
            self._req = None
            self._keep = None
        agent._forget(self)

    def _kill(self):
        # The agent is being destroyed, and frees the request itself;
        # what the request used is handed back, to be dropped once the
        # library has stopped.
        keep, self._keep = self._keep, None
        self._req = None
        return keep

    @property
    def backend(self):
        """The name of the backend the transfer is bound to."""
        be = lib.xfer_req_backend(self._c())
        return ffi.string(lib.xfer_backend_name(be)).decode()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._release_quietly()

    def _release_quietly(self):
        if self._waiting:
            # A thread still waits on it: that thread's reference keeps
            # it, and its end (or the agent's) releases it.
            return
        try:
            self.release()
        except BusyError:
            # Still on the wire: the agent keeps the request, and what it
            # holds alive, and releases it later (or when destroyed).
            self._agent._orphan(self._req, self._keep)
            self._req = None
            self._keep = None
            self._agent._forget(self)

    def __del__(self):
        if self._req is not None:
            try:
                self._release_quietly()
            except Exception:
                pass

    def __await__(self):
        return self._await().__await__()

    async def _await(self):
        pause = 0.0
        while self.status() != DONE:
            await asyncio.sleep(pause)
            pause = min(max(pause * 2, 0.00002), ASYNC_POLL_MAX)
        return True

    def __repr__(self):
        state = "released" if self._req is None else "live"
        return "<xfer.Transfer %s %d bytes with %r, %s>" % (
            self.op, self.nbytes, self.remote_agent, state)


class PrepList:
    """A validated descriptor list (xfer_prep_t): local memory, or a
    remote agent's.  Transfers are made from indices into it with
    Agent.transfer_prepped() with no lookups."""

    __slots__ = ("_prep", "_agent", "_dlist", "remote_agent", "lengths",
                 "__weakref__")

    def __init__(self, agent, prep, dlist, remote_agent):
        self._prep = prep
        self._agent = agent
        self._dlist = dlist
        self.remote_agent = remote_agent
        self.lengths = dlist.lengths

    def __len__(self):
        return len(self.lengths)

    def _c(self):
        if self._prep is None:
            raise ValueError("this prepared list was released")
        if self._agent._agent is None:
            raise ValueError("this prepared list's agent was closed")
        return self._prep

    def release(self):
        """Free the list (raises BusyError while transfers use it)."""
        prep = self._prep
        if prep is None:
            return
        if self._agent._agent is None:
            # Freed with the agent (closed, or collected first).
            self._kill()
            return
        check(lib.xfer_prep_release(prep))
        self._prep = None
        self._dlist = None
        self._agent._forget(self)

    def _kill(self):
        dlist, self._dlist = self._dlist, None
        self._prep = None
        return dlist

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        try:
            self.release()
        except BusyError:
            pass

    def __del__(self):
        if self._prep is not None:
            try:
                self.release()
            except Exception:
                pass

    def __repr__(self):
        return "<xfer.PrepList %d entries of %s>" % (
            len(self.lengths), self.remote_agent or "local memory")
