"""_agent.py - the agent (xfer_agent_t) and what it owns: backends,
registrations, peers' metadata, transfers and notifications.

Every call into libxfer releases the GIL (cffi does so for each call),
so a wait, a fetch or a slow registration never holds other Python
threads.  Objects the agent owns refer to it; closing the agent (or
leaving its with block) frees them all, after which they raise
ValueError when used.
"""
import asyncio
import collections
import json
import select
import sys
import threading
import time
import weakref
from collections import namedtuple

from ._errors import check, error, BusyError, NotSupportedError
from ._mem import DList, Region, access_bits, access_name
from ._native import ffi, lib
from ._transfer import Transfer, PrepList, _notif_arg

Notif = namedtuple("Notif", "sender msg")
Notif.__doc__ = """A notification: sender, the name the sending agent
bound when it connected (str); msg, its bytes."""

_OPS = {"READ": lib.XFER_OP_READ, "WRITE": lib.XFER_OP_WRITE,
        lib.XFER_OP_READ: lib.XFER_OP_READ,
        lib.XFER_OP_WRITE: lib.XFER_OP_WRITE}
_OP_NAMES = {lib.XFER_OP_READ: "READ", lib.XFER_OP_WRITE: "WRITE"}

# A thread waiting for notifications looks this often (ms) whether
# another thread closed the agent.
_CLOSE_CHECK_MS = 200

_MD_WHAT = {"all": lib.XFER_MD_ALL, "conn": lib.XFER_MD_CONN,
            "mem": lib.XFER_MD_MEM}


def _b(s, what="a name"):
    """str -> bytes for C (UTF-8; surrogate escapes give back the bytes a
    name read from C had)."""
    if isinstance(s, bytes):
        return s
    if not isinstance(s, str):
        raise TypeError("%s must be str, not %s" % (what, type(s).__name__))
    b = s.encode("utf-8", "surrogateescape")
    if b"\0" in b:
        raise ValueError("%s must not contain NUL" % what)
    return b


def _s(cstr):
    return ffi.string(cstr).decode("utf-8", "surrogateescape")


def _ms(seconds, what="timeout"):
    """Seconds (float) -> whole milliseconds for C, at least 1 for any
    positive time (0 keeps its own meaning in the C API)."""
    if seconds is None:
        return 0
    if seconds < 0:
        raise ValueError("%s must not be negative" % what)
    ms = int(seconds * 1000 + 0.999)
    if ms > 0xFFFFFFFF:
        raise ValueError("%s is too long (at most %d s)"
                         % (what, 0xFFFFFFFF // 1000))
    return ms


def _op(op):
    try:
        return _OPS[op.upper() if isinstance(op, str) else op]
    except (KeyError, AttributeError):
        raise ValueError("op must be 'READ' or 'WRITE', not %r"
                         % (op,)) from None


@ffi.def_extern()
def _xfer_py_notif(arg, sender, msg, length):
    out = ffi.from_handle(arg)
    out.append(Notif(_s(sender),
                     bytes(ffi.buffer(msg, length)) if length else b""))


class Registration:
    """Memory registered with the agent (xfer_mem_t).  The agent keeps
    it, and the objects it describes, alive until deregister() (or the
    end of a with block, or the agent's close), whether or not the
    caller keeps this object."""

    __slots__ = ("_mem", "_agent", "_dlist", "obj", "access", "__weakref__")

    def __init__(self, agent, mem, dlist, obj, access):
        self._mem = mem
        self._agent = agent
        self._dlist = dlist
        self.obj = obj
        self.access = access

    @property
    def regions(self):
        """[(addr, length), ...] of the registered pieces."""
        d = self._dlist
        if d is None:
            return []
        return [(int(d.descs[i].addr), int(d.descs[i].len))
                for i in range(d.count)]

    @property
    def registered(self):
        return self._mem is not None

    def deregister(self):
        """Deregister (raises BusyError while a transfer or prepared list
        still uses it).  Peers' operations on it are refused from the
        moment this returns.  Safe to call twice."""
        self._agent._deregister(self)

    def _kill(self):
        self._mem = None
        self._dlist = None
        self.obj = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._mem is not None:
            self.deregister()

    def __repr__(self):
        if self._mem is None:
            return "<xfer.Registration (deregistered)>"
        return "<xfer.Registration %d region(s), %d bytes, access %r>" % (
            len(self.regions), sum(n for _, n in self.regions), self.access)


class SharedBuffer:
    """Memory from Agent.alloc(): shareable with same-host peers (the uds
    backend then copies with no system call).  Register it, or describe
    it in a transfer, as it is; its .buffer has the buffer protocol
    (numpy.frombuffer(buf.buffer, dtype) views it; from Python 3.12 on
    the object itself has it too).  Freed by free(), or with its agent:
    views of it must not be used after that."""

    __slots__ = ("_ptr", "_agent", "_buf", "size", "__weakref__")

    def __init__(self, agent, ptr, size):
        self._ptr = ptr
        self._agent = agent
        self.size = size
        self._buf = ffi.buffer(ptr, size)

    def __buffer__(self, flags):  # Python 3.12+
        return memoryview(self._c_buf())

    def _c_buf(self):
        if self._buf is None:
            raise ValueError("this buffer was freed")
        return self._buf

    @property
    def buffer(self):
        """A writable cffi buffer over the memory (buffer protocol)."""
        return self._c_buf()

    def __len__(self):
        return self.size

    def free(self):
        """Free it (deregister it first).  BusyError while something
        still holds its buffer (a NumPy view, a memoryview, a transfer's
        descriptors): freeing under them would leave them pointing at
        unmapped memory.  Safe to call twice."""
        self._agent._free_alloc(self)

    def _kill(self):
        self._ptr = None
        self._buf = None


class Agent:
    """An xfer agent: a name, its backends, its registered memory, the
    peers it loaded, its transfers and notifications.

    Agent(name, backends=["tcp"], progress_thread=True, listen=None,
          etcd=None, nats=None, auth_key_file=None, telemetry=True,
          **options)

    backends: backend specs in order of preference, each a string
        ("uds", "tcp:nodelay=1") or (plugin, {param: value}).
    progress_thread: a thread drives transfers; without one, call
        progress() (or wait on a transfer, which drives it).
    listen: "host:port" of the side-channel listener peers fetch
        metadata from (port 0: any); True for "127.0.0.1:0".
    etcd / nats: where to publish and find metadata
        ("http://h:p[,...]" / "nats://h:p[,...]").
    options: any other field of the C xfer_agent_opts_t by its name
        (docs/api.md), e.g. notif_queue_count=1024, nats_prefix="x".
    """

    def __init__(self, name, backends=("tcp",), progress_thread=True,
                 listen=None, etcd=None, nats=None, auth_key_file=None,
                 telemetry=True, **options):
        self._agent = None
        self._lock = threading.RLock()
        self._children = weakref.WeakSet()
        self._regs = {}
        self._allocs = {}
        self._orphans = []
        self._backends = {}
        self._keep = []
        # Threads inside Transfer.wait(), which close() lets out before
        # it frees what they wait on.
        self._waiting = 0
        self._idle = threading.Condition(self._lock)
        # Notifications taken from the library, not yet handed out.
        self._pending = collections.deque()
        self._nlock = threading.Lock()
        opts = ffi.new("xfer_agent_opts_t *")
        lib.xfer_agent_opts_init(opts)
        if listen is True:
            listen = "127.0.0.1:0"
        given = dict(name=name, progress_thread=int(bool(progress_thread)),
                     listen_addr=listen, etcd_endpoints=etcd, nats_url=nats,
                     auth_key_file=auth_key_file,
                     telemetry=int(bool(telemetry)))
        given.update(options)
        fields = dict(ffi.typeof("xfer_agent_opts_t").fields)
        for key, value in given.items():
            f = fields.get(key)
            if f is None or key == "size":
                raise TypeError("Agent() has no option %r (the fields of "
                                "xfer_agent_opts_t are: %s)" % (
                                    key, ", ".join(k for k in fields
                                                   if k != "size")))
            if value is None:
                continue
            if f.type.kind == "pointer":
                c = ffi.new("char[]", _b(value, key))
                self._keep.append(c)
                setattr(opts, key, c)
            else:
                if isinstance(value, bool):
                    value = int(value)
                if not isinstance(value, int):
                    raise TypeError("option %s must be an int, not %s"
                                    % (key, type(value).__name__))
                try:
                    setattr(opts, key, value)
                except OverflowError:
                    raise ValueError("option %s=%d is out of range"
                                     % (key, value)) from None
        self._progress_thread = bool(progress_thread)
        out = ffi.new("xfer_agent_t **")
        check(lib.xfer_agent_create(opts, out))
        self._agent = out[0]
        self.name = _s(lib.xfer_agent_name(self._agent))
        try:
            if isinstance(backends, str) or (
                    isinstance(backends, tuple) and len(backends) == 2
                    and isinstance(backends[1], dict)):
                backends = [backends]
            for spec in backends:
                self.add_backend(spec)
        except BaseException:
            self.close()
            raise

    # ---- life ---------------------------------------------------------

    def _c(self):
        a = self._agent
        if a is None:
            raise ValueError("this agent was closed")
        return a

    def close(self):
        """Destroy the agent: stop its progress thread, fail and free
        its transfers, deregister its memory, unload its backends.  Every
        object it owns becomes unusable.  Safe to call twice."""
        with self._lock:
            a = self._agent
            if a is None:
                return
            self._agent = None
            # A wait is inside the library for one slice at most: the
            # request must not be freed under it.
            while self._waiting:
                self._idle.wait()
            # What the objects kept alive (registered buffers, the
            # descriptor lists of transfers, orphans) stays alive until
            # the library has stopped: its progress thread may still
            # receive a peer's WRITE into registered memory until
            # xfer_agent_destroy stops it.
            held = [obj._kill() for obj in list(self._children)]
            regs = list(self._regs.values())
            allocs = list(self._allocs.values())
            held.append(self._orphans)
            self._regs = {}
            self._allocs = {}
            self._orphans = []
            self._children = weakref.WeakSet()
        try:
            lib.xfer_agent_destroy(a)
        finally:
            for reg in regs:
                reg._kill()
            for buf in allocs:
                buf._kill()
            del held

    def _wait_begin(self, x):
        # Called by a thread about to wait in the library on transfer x:
        # neither close() nor x.release() frees the request under it.
        with self._lock:
            self._c()
            x._c()
            self._waiting += 1
            x._waiting += 1

    def _wait_end(self, x):
        with self._lock:
            x._waiting -= 1
            self._waiting -= 1
            if not self._waiting:
                self._idle.notify_all()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def _forget(self, obj):
        with self._lock:
            self._children.discard(obj)

    def _adopt(self, obj):
        with self._lock:
            self._children.add(obj)
        return obj

    def _orphan(self, req, keep):
        # A transfer dropped while on the wire: the request stays until
        # it can be released, and with it what it keeps alive.
        with self._lock:
            self._orphans.append((req, keep))

    def _reap(self):
        if not self._orphans:
            return
        with self._lock:
            left = []
            for req, keep in self._orphans:
                if lib.xfer_req_release(req) == lib.XFER_ERR_BUSY:
                    left.append((req, keep))
            self._orphans = left

    @property
    def epoch(self):
        """Larger for an agent created later under the same name."""
        return int(lib.xfer_agent_epoch(self._c()))

    def __repr__(self):
        return "<xfer.Agent %r%s>" % (self.name,
                                      "" if self._agent else " (closed)")

    # ---- backends -----------------------------------------------------

    def add_backend(self, spec):
        """Add a backend: a spec string "name[:key=value,...]" or
        (plugin, {param: value}).  Returns its name."""
        out = ffi.new("xfer_backend_t **")
        if isinstance(spec, tuple) and len(spec) == 2:
            plugin, params = spec
            text = json.dumps(params if params is not None else {})
            check(lib.xfer_backend_add_json(self._c(),
                                            _b(plugin, "a plugin name"),
                                            text.encode(), out))
        else:
            check(lib.xfer_backend_add(self._c(), _b(spec, "a backend spec"),
                                       out))
        name = _s(lib.xfer_backend_name(out[0]))
        self._backends[name] = out[0]
        return name

    @property
    def backends(self):
        """Names of the agent's backends, in order of preference."""
        return list(self._backends)

    def _backend(self, name):
        if name is None:
            return ffi.NULL
        self._c()
        be = self._backends.get(name)
        if be is None:
            raise ValueError("this agent has no backend %r (it has: %s)"
                             % (name, ", ".join(self._backends) or "none"))
        return be

    def backend_state(self, name):
        """What the backend says it does now (one sentence)."""
        buf = ffi.new("char[]", lib.XFER_STATE_MAX)
        check(lib.xfer_backend_state(self._backend(name), buf,
                                     lib.XFER_STATE_MAX))
        return _s(buf)

    # ---- memory -------------------------------------------------------

    def register(self, obj, access="rw", publish=True, backend=None):
        """Register memory: one object (the buffer protocol, a tensor,
        (obj, offset, length), (addr, length)) or a list of them, each a
        region.  access: what peers may do ("r", "w", "rw"); publish:
        served to peers that fetch this agent's metadata.  Returns a
        Registration; the agent keeps obj alive until it is
        deregistered."""
        bits = access_bits(access)
        dl = DList(obj, writable=bool(bits & lib.XFER_ACCESS_WRITE))
        opts = ffi.new("xfer_mem_opts_t *")
        lib.xfer_mem_opts_init(opts)
        opts.access = bits
        opts.publish = 1 if publish else 0
        opts.backend = self._backend(backend)
        out = ffi.new("xfer_mem_t **")
        check(lib.xfer_mem_register(self._c(), dl.c, opts, out))
        reg = Registration(self, out[0], dl, obj, access)
        with self._lock:
            self._regs[id(reg)] = reg
        return reg

    def _deregister(self, reg):
        with self._lock:
            if reg._mem is None:
                return
            self._reap()
            check(lib.xfer_mem_deregister(self._c(), reg._mem))
            self._regs.pop(id(reg), None)
            reg._kill()

    def deregister(self, reg):
        """Deregister a Registration (as reg.deregister())."""
        self._deregister(reg)

    @property
    def registrations(self):
        """The live registrations."""
        with self._lock:
            return list(self._regs.values())

    def alloc(self, size, huge=False):
        """size bytes (rounded up to a page) of zeroed memory that
        same-host backends share with peers: a SharedBuffer."""
        if size <= 0:
            raise ValueError("size must be positive")
        out = ffi.new("void **")
        check(lib.xfer_mem_alloc(self._c(), size,
                                 lib.XFER_ALLOC_HUGE if huge else 0, out))
        buf = SharedBuffer(self, out[0], size)
        with self._lock:
            self._allocs[id(buf)] = buf
        return buf

    def _free_alloc(self, buf):
        with self._lock:
            if buf._ptr is None:
                return
            # Our slot and getrefcount's argument: anything more is a view.
            others = sys.getrefcount(buf._buf) - 2
            if others > 0:
                raise BusyError(lib.XFER_ERR_BUSY, "%d other reference(s) "
                                "to this buffer are alive (a NumPy view, "
                                "a memoryview, a transfer): drop them "
                                "before free()" % others)
            check(lib.xfer_mem_free(self._c(), buf._ptr))
            self._allocs.pop(id(buf), None)
            buf._kill()

    # ---- metadata -----------------------------------------------------

    def metadata(self, what="all", regs=None):
        """This agent's metadata blob (bytes) for a peer's
        load_metadata(): "all", "conn" (connection info) or "mem"
        (registrations); regs: only these Registrations."""
        try:
            bits = _MD_WHAT[what]
        except KeyError:
            raise ValueError("what must be 'all', 'conn' or 'mem', not %r"
                             % (what,)) from None
        mems = ffi.NULL
        n = 0
        if regs:
            if any(r._mem is None for r in regs):
                raise ValueError("a registration given was deregistered")
            mems = ffi.new("xfer_mem_t *[]", [r._mem for r in regs])
            n = len(regs)
        blob = ffi.new("char **")
        length = ffi.new("size_t *")
        check(lib.xfer_md_get(self._c(), bits, mems, n, blob, length))
        try:
            return bytes(ffi.buffer(blob[0], length[0]))
        finally:
            lib.xfer_free(blob[0])

    def load_metadata(self, blob):
        """Load a peer's metadata; returns the peer's name."""
        cd = ffi.from_buffer(blob)
        name = ffi.new("char[]", lib.XFER_NAME_MAX + 1)
        check(lib.xfer_md_load(self._c(), cd, len(cd), name,
                               lib.XFER_NAME_MAX + 1))
        return _s(name)

    def fetch(self, name=None, addr=None, timeout=5.0, via=None):
        """Fetch a peer's metadata and load it; returns its name.
        addr "host:port": from the agent listening there (name, if
        given, must be the one there).  Otherwise by name, from etcd or
        NATS (via "etcd" or "nats"; by default whichever the agent has,
        etcd first), waiting up to timeout seconds for it to appear."""
        ms = _ms(timeout)
        if addr is not None or via == "listener":
            if addr is None:
                raise ValueError("a fetch from a listener needs addr")
            out = ffi.new("char[]", lib.XFER_NAME_MAX + 1)
            check(lib.xfer_md_fetch(self._c(), _b(addr, "addr"),
                                    _b(name) if name is not None
                                    else ffi.NULL,
                                    ms, out, lib.XFER_NAME_MAX + 1))
            return _s(out)
        if name is None:
            raise ValueError("fetch needs a name (from etcd or NATS) or "
                             "an addr (from a listener)")
        if via is None:
            st = lib.xfer_md_fetch_etcd(self._c(), _b(name), ms)
            if st == lib.XFER_ERR_NOT_SUPPORTED:
                st = lib.xfer_md_fetch_nats(self._c(), _b(name), ms)
                if st == lib.XFER_ERR_NOT_SUPPORTED:
                    raise NotSupportedError(
                        st, "fetching %r by name needs etcd or NATS; this "
                        "agent has neither (give addr to fetch from a "
                        "listener)" % name)
        elif via == "etcd":
            st = lib.xfer_md_fetch_etcd(self._c(), _b(name), ms)
        elif via == "nats":
            st = lib.xfer_md_fetch_nats(self._c(), _b(name), ms)
        else:
            raise ValueError("via must be 'listener', 'etcd' or 'nats', "
                             "not %r" % (via,))
        check(st)
        return name

    def send_metadata(self, addr, what="all", timeout=5.0):
        """Send this agent's metadata to the listener at addr
        ("host:port"), which loads it."""
        try:
            bits = _MD_WHAT[what]
        except KeyError:
            raise ValueError("what must be 'all', 'conn' or 'mem', not %r"
                             % (what,)) from None
        check(lib.xfer_md_send(self._c(), _b(addr, "addr"), bits,
                               _ms(timeout)))

    @property
    def listen_addr(self):
        """"host:port" of the agent's listener, or None without one."""
        buf = ffi.new("char[]", 128)
        st = lib.xfer_agent_listen_addr(self._c(), buf, 128)
        if st == lib.XFER_ERR_NOT_FOUND:
            return None
        check(st)
        return _s(buf)

    def invalidate(self, name):
        """Forget a peer: disconnect, fail its transfers."""
        check(lib.xfer_md_invalidate(self._c(), _b(name)))

    def is_loaded(self, name):
        """True when a peer of that name is loaded and connectable."""
        st = lib.xfer_md_check(self._c(), _b(name))
        if st in (lib.XFER_OK,):
            return True
        if st in (lib.XFER_ERR_NOT_FOUND, lib.XFER_ERR_REMOTE_DISCONNECT):
            return False
        raise error(st)

    def connect(self, name, timeout=5.0):
        """Connect to a loaded peer now rather than at the first post."""
        check(lib.xfer_md_connect(self._c(), _b(name), _ms(timeout)))

    def remote_regions(self, name):
        """The regions a loaded peer registered, in address order: a list
        of Region(addr, len, type, dev, access); region[a:b] describes
        bytes a..b of one."""
        count = ffi.new("size_t *")
        check(lib.xfer_md_regions(self._c(), _b(name), ffi.NULL, 0, count))
        while True:
            n = count[0]
            arr = ffi.new("xfer_region_info_t[]", max(n, 1))
            check(lib.xfer_md_regions(self._c(), _b(name), arr, n, count))
            if count[0] <= n:
                break
        return [Region(int(r.addr), int(r.len), int(r.type), int(r.dev),
                       access_name(r.access)) for r in arr[0:count[0]]]

    # ---- transfers ----------------------------------------------------

    def _req_opts(self, notif, backend, timeout, keep):
        if notif is None and backend is None and timeout is None:
            return ffi.NULL
        opts = ffi.new("xfer_req_opts_t *")
        lib.xfer_req_opts_init(opts)
        opts.backend = self._backend(backend)
        if notif is not None:
            ptr, n, k = _notif_arg(notif)
            opts.notif = ptr
            opts.notif_len = n
            keep.append(k)
        opts.timeout_ms = _ms(timeout)
        return opts

    def transfer(self, op, local, remote, remote_agent, notif=None,
                 backend=None, timeout=None):
        """Make a READ or WRITE (not posted yet: call post()).  local:
        this agent's registered memory; remote: the peer's (Regions,
        (Region, offset, length), or (addr, length)); as one object or
        lists of equal lengths pairwise.  notif: the default notification
        of every post; timeout: seconds a post may take before it fails
        with TimeoutError (None: the backend's own bound)."""
        opc = _op(op)
        self._reap()
        ldl = DList(local, writable=(opc == lib.XFER_OP_READ))
        rdl = DList(remote)
        keep = [ldl, rdl]
        opts = self._req_opts(notif, backend, timeout, keep)
        out = ffi.new("xfer_req_t **")
        check(lib.xfer_req_create(self._c(), opc, ldl.c, rdl.c,
                                  _b(remote_agent, "remote_agent"), opts,
                                  out))
        return self._adopt(Transfer(self, out[0], keep, _OP_NAMES[opc],
                                    remote_agent, sum(ldl.lengths)))

    def prep(self, items, remote_agent=None):
        """Validate a descriptor list once: local memory (remote_agent
        None) or a loaded peer's.  Returns a PrepList for
        transfer_prepped()."""
        dl = DList(items)
        out = ffi.new("xfer_prep_t **")
        check(lib.xfer_prep_create(self._c(), dl.c,
                                   _b(remote_agent, "remote_agent")
                                   if remote_agent is not None else ffi.NULL,
                                   out))
        return self._adopt(PrepList(self, out[0], dl, remote_agent))

    def transfer_prepped(self, op, local, lidx, remote, ridx, notif=None,
                         backend=None, timeout=None):
        """Make a transfer from prepared lists: local entry lidx[i] to or
        from remote entry ridx[i] (NIXL's make_prepped_xfer)."""
        opc = _op(op)
        if not isinstance(local, PrepList) or not isinstance(remote,
                                                             PrepList):
            raise TypeError("local and remote must be PrepLists (from "
                            "Agent.prep)")
        lidx = [int(i) for i in lidx]
        ridx = [int(i) for i in ridx]
        if any(i < 0 for i in lidx) or any(i < 0 for i in ridx):
            raise ValueError("prepared-list indices must not be negative")
        if len(lidx) != len(ridx):
            raise ValueError("lidx has %d entries and ridx %d: they pair up"
                             % (len(lidx), len(ridx)))
        self._reap()
        li = ffi.new("size_t[]", lidx or [0])
        ri = ffi.new("size_t[]", ridx or [0])
        keep = [local, remote, li, ri]
        opts = self._req_opts(notif, backend, timeout, keep)
        out = ffi.new("xfer_req_t **")
        check(lib.xfer_req_create_prepped(self._c(), opc, local._c(), li,
                                          remote._c(), ri, len(lidx), opts,
                                          out))
        nbytes = sum(local.lengths[i] for i in lidx)
        return self._adopt(Transfer(self, out[0], keep, _OP_NAMES[opc],
                                    remote.remote_agent, nbytes))

    # ---- notifications ------------------------------------------------

    def send_notif(self, remote_agent, msg, backend=None):
        """Send a notification alone (behind the data of every transfer
        posted before it on the same backend)."""
        ptr, n, _keep = _notif_arg(msg)
        if ptr == lib.xfer_notif_none:
            raise TypeError("send_notif needs a message")
        opts = ffi.NULL
        if backend is not None:
            opts = ffi.new("xfer_notif_opts_t *")
            lib.xfer_notif_opts_init(opts)
            opts.backend = self._backend(backend)
        check(lib.xfer_notif_send(self._c(), _b(remote_agent, "remote_agent"),
                                  ptr, n, opts))

    def _fill(self):
        """Move what the library queued into self._pending, in order:
        the iterators hand notifications out one at a time from there,
        so one left when a consumer stops early is not lost."""
        with self._nlock:
            out = []
            h = ffi.new_handle(out)
            check(lib.xfer_notif_drain(self._c(), lib._xfer_py_notif, h,
                                       ffi.NULL))
            self._pending.extend(out)

    def _take_one(self):
        """The oldest notification not handed out yet, taking what the
        library queued when none is left over; None when there is none."""
        if not self._pending:
            self._fill()
        try:
            return self._pending.popleft()
        except IndexError:
            return None

    def drain(self):
        """Every notification queued now (also those an iterator had
        taken from the library and not handed out), oldest first:
        [Notif]."""
        self._fill()
        with self._nlock:
            out = list(self._pending)
            self._pending.clear()
        return out

    def get_new_notifs(self):
        """NIXL's shape: {sender: [msg, ...]} of every notification
        queued now, each sender's in order."""
        got = {}
        for n in self.drain():
            got.setdefault(n.sender, []).append(n.msg)
        return got

    def notif_fd(self):
        """A file descriptor readable while notifications are queued
        (for select, poll, asyncio).  Without a progress thread,
        notifications arrive only through progress()."""
        fd = ffi.new("int *")
        check(lib.xfer_notif_fd(self._c(), fd))
        return fd[0]

    def event_fd(self):
        """A file descriptor readable when progress() has work to do."""
        fd = ffi.new("int *")
        check(lib.xfer_agent_event_fd(self._c(), fd))
        return fd[0]

    def progress(self):
        """Drive every backend once without blocking (needed without a
        progress thread)."""
        check(lib.xfer_progress(self._c()))

    def notifs(self, timeout=None):
        """Iterate over notifications as they come: Notif(sender, msg).
        Stops once timeout seconds pass with none (None: never)."""
        if timeout is not None and timeout < 0:
            raise ValueError("timeout must not be negative")
        nfd = self.notif_fd()
        efd = None if self._progress_thread else self.event_fd()
        poller = select.poll()
        poller.register(nfd, select.POLLIN)
        if efd is not None:
            poller.register(efd, select.POLLIN)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            n = self._take_one()
            if n is not None:
                # One at a time: what a consumer that stops after this
                # one does not take stays queued for the next call.
                yield n
                # The timeout counts from the last notification.
                if timeout is not None:
                    deadline = time.monotonic() + timeout
                continue
            while True:
                ms = _CLOSE_CHECK_MS
                if deadline is not None:
                    left = max(deadline - time.monotonic(), 0)
                    ms = min(ms, int(left * 1000 + 0.999))
                ready = poller.poll(ms)
                # Closed by another thread: ValueError, not a poll for
                # ever on a descriptor that no longer exists.
                self._c()
                if efd is not None:
                    self.progress()
                if ready:
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    return

    async def notifications(self):
        """async for n in agent.notifications(): each Notif as it comes,
        waiting in the event loop on the notification descriptor."""
        loop = asyncio.get_running_loop()
        nfd = self.notif_fd()
        efd = None if self._progress_thread else self.event_fd()
        while True:
            n = self._take_one()
            if n is not None:
                yield n
                continue
            fut = loop.create_future()

            def ready(f=fut):
                if not f.done():
                    f.set_result(None)
            loop.add_reader(nfd, ready)
            if efd is not None:
                loop.add_reader(efd, ready)
            # Also look now and then: an agent closed meanwhile makes
            # drain() raise ValueError rather than this wait last for
            # ever (its descriptors are gone with it).
            timer = loop.call_later(_CLOSE_CHECK_MS / 1000, ready)
            try:
                await fut
            finally:
                timer.cancel()
                loop.remove_reader(nfd)
                if efd is not None:
                    loop.remove_reader(efd)
            if efd is not None:
                self.progress()

    # ---- telemetry ----------------------------------------------------

    def stats(self, backend=None, remote_agent=None):
        """The agent's counters (docs/api.md, "Telemetry") as a dict:
        all backends or one, all peers or one; arrays (errors by -status,
        lat_us buckets) as lists."""
        s = ffi.new("xfer_stats_t *")
        check(lib.xfer_stats_get(self._c(),
                                 _b(backend) if backend else ffi.NULL,
                                 _b(remote_agent) if remote_agent
                                 else ffi.NULL,
                                 s, ffi.sizeof("xfer_stats_t")))
        raw = ffi.cast("uint64_t *", s)
        n = ffi.new("size_t *")
        fields = lib.xfer_stats_fields(n)
        out = {}
        for i in range(n[0]):
            f = fields[i]
            at = f.offset // 8
            vals = [int(raw[at + k]) for k in range(f.count)]
            out[_s(f.name)] = vals if f.count > 1 else vals[0]
        return out

    def stats_json(self):
        """Every counter as the library's JSON document, parsed."""
        out = ffi.new("char **")
        check(lib.xfer_stats_json(self._c(), out))
        try:
            return json.loads(ffi.string(out[0]).decode("utf-8",
                                                          "replace"))
        finally:
            lib.xfer_free(out[0])


def version():
    """The version of the libxfer actually loaded ("0.1.0")."""
    return _s(lib.xfer_version())


def plugins():
    """Every plugin on the search path (XFER_PLUGIN_PATH, then the
    install directory), loaded or not: a list of dicts."""
    infos = ffi.new("xfer_plugin_info_t **")
    count = ffi.new("size_t *")
    check(lib.xfer_plugin_list(infos, count))
    out = []
    try:
        for i in range(count[0]):
            p = infos[0][i]

            def s(c):
                return _s(c) if c != ffi.NULL else None
            out.append({
                "name": s(p.name), "path": s(p.path),
                "version": s(p.version),
                "abi": (p.abi_major, p.abi_minor), "caps": p.caps,
                "mem_types": p.mem_types, "error": s(p.error),
                "state": s(p.state),
                "params": [{"name": s(q.name), "type": s(q.type),
                            "default": s(q.defval), "doc": s(q.doc)}
                           for q in p.params[0:p.nparams]],
            })
    finally:
        lib.xfer_plugin_list_free(infos[0], count[0])
    return out
