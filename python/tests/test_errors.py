"""Bad arguments: each mistake a user can make raises a clear error, the
exception class a Python programmer would catch, and for a libxfer error
its status code, name and the library's sentence naming what was wrong.
Everything here is refused before any data moves, so two agents of this
process are enough (the two-process suites check the wire)."""
import numpy as np
import pytest

import xfer


@pytest.fixture
def pair(names):
    """(initiator, target, the target's one 100-byte region, local
    registered memory of 100 bytes): tcp agents of this process."""
    with xfer.Agent(names("init"), backends=["tcp"]) as a, \
            xfer.Agent(names("target"), backends=["tcp"]) as b:
        b.register(np.zeros(100, np.uint8))
        a.load_metadata(b.metadata())
        (region,) = a.remote_regions(b.name)
        mem = np.zeros(100, np.uint8)
        a.register(mem)
        yield a, b, region, mem


# ---- agents and backends ---------------------------------------------

def test_unknown_agent_option(names, raises):
    with raises(TypeError, None, "no option 'bogus'", "notif_queue_count"):
        xfer.Agent(names("a"), bogus=1)


def test_agent_option_types(names, raises):
    with raises(TypeError, None, "notif_queue_count must be an int",
                "not str"):
        xfer.Agent(names("a"), notif_queue_count="many")
    with raises(ValueError, None, "notif_queue_count=-1 is out of range"):
        xfer.Agent(names("a"), notif_queue_count=-1)


def test_agent_names(raises):
    with raises(TypeError, None, "name must be str, not int"):
        xfer.Agent(123)
    with raises(xfer.InvalidError, "XFER_ERR_INVALID",
                "agent name must be 1 to 255 printable bytes"):
        xfer.Agent("")
    with raises(xfer.InvalidError, "XFER_ERR_INVALID", "1 to 255"):
        xfer.Agent("n" * 256)
    with raises(ValueError, None, "must not contain NUL"):
        xfer.Agent("a\0b")


@pytest.mark.parametrize("spec", ["tcp:bogus=1", ("tcp", {"bogus": 1})],
                         ids=["spec", "json"])
def test_unknown_config_key(names, raises, spec):
    """The sentence names the key and the plugin (docs/api.md)."""
    with raises(xfer.ConfigError, "XFER_ERR_CONFIG",
                "plugin 'tcp' has no parameter 'bogus'") as e:
        xfer.Agent(names("a"), backends=[spec])
    assert isinstance(e.value, ValueError)


def test_bad_config_value(names, raises):
    with raises(xfer.ConfigError, "XFER_ERR_CONFIG", "plugin 'tcp'",
                "key 'nodelay'", "'maybe'", "expected a bool"):
        xfer.Agent(names("a"), backends=["tcp:nodelay=maybe"])
    with raises(xfer.ConfigError, "XFER_ERR_CONFIG", "uds", "mode 'bogus'"):
        xfer.Agent(names("a"), backends=["uds:mode=bogus"])


def test_misspelt_environment_variable(names, raises, monkeypatch):
    monkeypatch.setenv("XFER_TCP_NODELEY", "1")
    with raises(xfer.ConfigError, "XFER_ERR_CONFIG", "plugin 'tcp'",
                "XFER_TCP_NODELEY"):
        xfer.Agent(names("a"), backends=["tcp"])


def test_bad_spec(names, raises):
    with raises(xfer.InvalidError, "XFER_ERR_INVALID", "spec 'tcp:,'",
                "empty key at offset 4"):
        xfer.Agent(names("a"), backends=["tcp:,"])
    with raises(xfer.InvalidError, "XFER_ERR_INVALID",
                "'TCP' is not a valid plugin name"):
        xfer.Agent(names("a"), backends=["TCP"])
    with raises(TypeError, None, "backend spec must be str, not int"):
        xfer.Agent(names("a"), backends=[5])


def test_missing_plugin(names, raises):
    with raises(xfer.NotFoundError, "XFER_ERR_NOT_FOUND",
                "no plugin 'nosuch'", "xfer_nosuch") as e:
        xfer.Agent(names("a"), backends=["nosuch"])
    assert isinstance(e.value, LookupError)


def test_backend_twice_and_agent_still_usable(names, raises):
    """A refused backend leaves the agent as it was (docs/api.md)."""
    with xfer.Agent(names("a"), backends=["tcp"]) as a:
        with raises(xfer.ExistsError, "XFER_ERR_EXISTS",
                    "already has a 'tcp' backend"):
            a.add_backend("tcp")
        with raises(xfer.ConfigError, "XFER_ERR_CONFIG", "'bogus'"):
            a.add_backend("uds:bogus=1")
        assert a.backends == ["tcp"]
        assert a.add_backend("uds") == "uds"
        assert a.backends == ["tcp", "uds"]
        with raises(ValueError, None, "no backend 'nosuch'", "tcp, uds"):
            a.backend_state("nosuch")


# ---- memory ----------------------------------------------------------

def test_register_non_memory(pair, raises):
    a = pair[0]
    for obj in (5, "text", None, object()):
        with raises(TypeError, None, "does not describe memory"):
            a.register(obj)


def test_register_non_contiguous(pair, raises):
    a = pair[0]
    with raises(ValueError, None, "not C-contiguous",
                "only C-contiguous buffers"):
        a.register(np.zeros((8, 8), np.uint8)[:, 1])
    with raises(ValueError, None, "not C-contiguous"):
        a.register(memoryview(bytearray(16))[::2])
    assert a.registrations[1:] == [], "a refused registration was kept"


@pytest.mark.parametrize("make", [
    lambda: b"read-only bytes",
    lambda: memoryview(b"read-only"),
    lambda: np.frombuffer(b"\0" * 16, np.uint8),
], ids=["bytes", "memoryview", "numpy"])
def test_read_only_registered_writable(pair, raises, make):
    """Peers may write registered memory by default: a read-only buffer
    is refused with the way out, and accepted with access='r'."""
    a = pair[0]
    obj = make()
    with raises(ValueError, None, "is read-only", "access='r'"):
        a.register(obj)
    reg = a.register(obj, access="r")
    assert reg.access == "r" and reg.obj is obj
    reg.deregister()


def test_bad_access(pair, raises):
    with raises(ValueError, None, "access must be 'r', 'w' or 'rw'", "'x'"):
        pair[0].register(np.zeros(4, np.uint8), access="x")


def test_remote_access_rights(names, raises):
    """A WRITE into a region the peer registered read-only is refused
    at creation, naming the peer and the rights."""
    with xfer.Agent(names("a"), backends=["tcp"]) as a, \
            xfer.Agent(names("b"), backends=["tcp"]) as b:
        b.register(np.zeros(64, np.uint8), access="r")
        a.load_metadata(b.metadata())
        (region,) = a.remote_regions(b.name)
        assert region.access == "r"
        mem = np.zeros(64, np.uint8)
        a.register(mem)
        with raises(xfer.AccessError, "XFER_ERR_ACCESS",
                    "agent '%s' allows peers READ, not WRITE" % b.name):
            a.transfer("WRITE", mem, region, b.name)


def test_deregister_in_use(pair, raises):
    a, _, region, mem = pair
    (reg,) = a.registrations
    x = a.transfer("READ", mem, region, pair[1].name)
    with raises(xfer.BusyError, "XFER_ERR_BUSY", "is still used by 1"):
        reg.deregister()
    x.release()
    reg.deregister()
    assert not reg.registered and a.registrations == []


# ---- transfers -------------------------------------------------------

def test_length_mismatch(pair, raises):
    a, b, region, mem = pair
    with raises(xfer.InvalidError, "XFER_ERR_INVALID",
                "descriptor 0: local length 100 differs from remote "
                "length 50"):
        a.transfer("WRITE", mem, region[0:50], b.name)
    with raises(xfer.InvalidError, "XFER_ERR_INVALID",
                "same, non-zero, number of descriptors (1 vs 2)"):
        a.transfer("WRITE", [mem], [region, region], b.name)


def test_outside_registered_memory(pair, raises):
    a, b, region, mem = pair
    other = np.zeros(100, np.uint8)
    with raises(xfer.InvalidError, "XFER_ERR_INVALID",
                "local descriptor 0", "is not inside a registered DRAM "
                "region of agent '%s'" % a.name):
        a.transfer("WRITE", other, region, b.name)
    with raises(xfer.InvalidError, "XFER_ERR_INVALID",
                "remote descriptor 1", "is not inside any DRAM region of "
                "agent '%s'" % b.name):
        a.transfer("WRITE", [(mem, 0, 10), (mem, 10, 10)],
                   [region[0:10], (region.addr + 95, 10)], b.name)
    with raises(ValueError, None, "bytes 50..150 are outside the 100 "
                "bytes of ndarray"):
        a.transfer("WRITE", (mem, 50, 100), region, b.name)
    with raises(ValueError, None, "bytes 50..150 are outside the 100 "
                "bytes of Region"):
        a.transfer("WRITE", mem, (region, 50, 100), b.name)
    with raises(ValueError, None, "must not be negative"):
        a.transfer("WRITE", mem, (region.addr, -1), b.name)
    with raises(ValueError, None, "a region slice must be contiguous"):
        region[0:100:2]


def test_non_contiguous_in_transfer(pair, raises):
    a, b, region, _ = pair
    with raises(ValueError, None, "not C-contiguous"):
        a.transfer("WRITE", np.zeros(200, np.uint8)[::2], region, b.name)


def test_read_into_read_only(pair, raises):
    a, b, region, _ = pair
    ro = np.zeros(100, np.uint8)
    a.register(ro, access="r")
    ro.flags.writeable = False
    with raises(ValueError, None, "is read-only"):
        a.transfer("READ", ro, region, b.name)


@pytest.mark.parametrize("op", ["COPY", "", 7, None])
def test_bad_op(pair, raises, op):
    a, b, region, mem = pair
    with raises(ValueError, None, "op must be 'READ' or 'WRITE'", repr(op)):
        a.transfer(op, mem, region, b.name)


def test_unknown_peer(pair, raises):
    a, _, region, mem = pair
    with raises(xfer.NotFoundError, "XFER_ERR_NOT_FOUND",
                "no remote agent 'nobody' is loaded"):
        a.transfer("WRITE", mem, region, "nobody")
    with raises(xfer.NotFoundError, "XFER_ERR_NOT_FOUND", "'nobody'"):
        a.send_notif("nobody", b"hi")
    with raises(TypeError, None, "remote_agent must be str, not int"):
        a.transfer("WRITE", mem, region, 5)


def test_status_before_post(pair, raises):
    a, b, region, mem = pair
    with a.transfer("WRITE", mem, region, b.name) as x:
        with raises(xfer.InvalidError, "XFER_ERR_INVALID",
                    "the request was never posted"):
            x.status()


def test_negative_timeouts(pair, raises):
    a, b, region, mem = pair
    with raises(ValueError, None, "timeout must not be negative"):
        a.transfer("WRITE", mem, region, b.name, timeout=-1)
    with a.transfer("WRITE", mem, region, b.name) as x:
        x.post()
        with raises(ValueError, None, "timeout must not be negative"):
            x.wait(-0.5)
        assert x.wait(30)
    with raises(ValueError, None, "timeout must not be negative"):
        a.fetch(addr="127.0.0.1:1", timeout=-1)
    with raises(ValueError, None, "timeout must not be negative"):
        a.connect(b.name, timeout=-1)
    with raises(ValueError, None, "timeout must not be negative"):
        next(a.notifs(timeout=-1))


def test_prepped_arguments(pair, raises):
    a, b, region, mem = pair
    with raises(TypeError, None, "must be PrepLists"):
        a.transfer_prepped("WRITE", [mem], [0], [region], [0])
    lp = a.prep([(mem, 0, 50), (mem, 50, 50)])
    rp = a.prep([region[0:50], region[50:100]], b.name)
    with raises(ValueError, None, "lidx has 1 entries and ridx 2"):
        a.transfer_prepped("WRITE", lp, [0], rp, [0, 1])
    with raises(xfer.NotFoundError, "XFER_ERR_NOT_FOUND", "'nobody'"):
        a.prep([region[0:10]], "nobody")
    with raises(xfer.InvalidError, "XFER_ERR_INVALID"):
        a.prep([np.zeros(8, np.uint8)])


def test_bad_notifications(pair, raises):
    a, b, region, mem = pair
    with raises(TypeError, None, "a notification is bytes", "not int"):
        a.send_notif(b.name, 5)
    with raises(TypeError, None, "send_notif needs a message"):
        a.send_notif(b.name, xfer.NO_NOTIF)


def test_bad_metadata(pair, raises):
    a = pair[0]
    with raises(xfer.InvalidError, "XFER_ERR_INVALID", "malformed metadata",
                "not JSON"):
        a.load_metadata(b"garbage")
    with raises(xfer.InvalidError, "XFER_ERR_INVALID", "malformed metadata",
                "no agent name"):
        a.load_metadata(b'{"format": "xfer-md", "version": 1}')
    with raises(TypeError):
        a.load_metadata(5)
    with raises(ValueError, None, "what must be 'all', 'conn' or 'mem'"):
        a.metadata(what="everything")


def test_fetch_nowhere(pair, raises):
    a = pair[0]
    with raises(xfer.RemoteDisconnectError, "XFER_ERR_REMOTE_DISCONNECT",
                "cannot connect to the listener at 127.0.0.1:1"):
        a.fetch(addr="127.0.0.1:1", timeout=5)
    with raises(xfer.InvalidError, "XFER_ERR_INVALID",
                "address 'nowhere' is not \"host:port\""):
        a.fetch(addr="nowhere", timeout=5)
    with raises(xfer.NotSupportedError, "XFER_ERR_NOT_SUPPORTED",
                "needs etcd or NATS"):
        a.fetch("someone")


# ---- use after release or close --------------------------------------

def test_use_after_release(pair, raises):
    a, b, region, mem = pair
    x = a.transfer("WRITE", mem, region, b.name)
    x.release()
    x.release()                     # safe twice
    for call in (x.post, x.status, x.wait, x.cancel):
        with raises(ValueError, None, "this transfer was released"):
            call()
    p = a.prep([mem])
    p.release()
    with raises(ValueError, None, "this prepared list was released"):
        a.transfer_prepped("WRITE", p, [0], p, [0])
    buf = a.alloc(4096)
    buf.free()
    with raises(ValueError, None, "this buffer was freed"):
        a.register(buf)
    with raises(ValueError, None, "this buffer was freed"):
        buf.buffer
    (reg,) = a.registrations
    reg.deregister()
    reg.deregister()                # safe twice
    with raises(ValueError, None, "was deregistered"):
        a.metadata(regs=[reg])


def test_use_after_close(names, raises):
    """Closing the agent with live objects: each of them, and the agent,
    raise ValueError from then on; nothing crashes."""
    a = xfer.Agent(names("a"), backends=["tcp"])
    b = xfer.Agent(names("b"), backends=["tcp"])
    mem = np.zeros(64, np.uint8)
    reg = a.register(mem)
    b.register(np.zeros(64, np.uint8))
    a.load_metadata(b.metadata())
    (region,) = a.remote_regions(b.name)
    x = a.transfer("WRITE", mem, region, b.name)
    x.post()
    p = a.prep([mem])
    buf = a.alloc(4096)
    a.close()
    a.close()                       # safe twice
    b.close()
    assert "closed" in repr(a)
    for call in (lambda: a.register(mem), a.metadata, a.notif_fd, a.drain,
                 lambda: a.transfer("WRITE", mem, region, b.name),
                 lambda: a.send_notif(b.name, b"x"), lambda: a.alloc(64),
                 a.progress):
        with raises(ValueError, None, "this agent was closed"):
            call()
    with raises(ValueError, None, "this transfer was released"):
        x.post()
    with raises(ValueError, None, "this agent was closed"):
        a.transfer_prepped("WRITE", p, [0], p, [0])
    with raises(ValueError, None, "this buffer was freed"):
        buf.buffer
    assert not reg.registered and reg.obj is None
    reg.deregister()                # already done by close: a no-op


def test_errors_cross_processes(names):
    """An error raised by the library pickles with its class, code and
    sentence (multiprocessing sends exceptions back that way), and is
    caught by the built-in class too."""
    import pickle
    with xfer.Agent(names("a"), backends=[]) as a:
        try:
            a.add_backend("tcp:bogus=1")
        except xfer.ConfigError as e:
            err = e
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is xfer.ConfigError
    assert (back.status, back.name, back.message, str(back)) == \
        (err.status, err.name, err.message, str(err))
    for cls, builtin in ((xfer.RemoteDisconnectError, ConnectionError),
                         (xfer.TimeoutError, TimeoutError),
                         (xfer.InvalidError, ValueError),
                         (xfer.NotFoundError, LookupError),
                         (xfer.AccessError, PermissionError)):
        assert issubclass(cls, builtin) and issubclass(cls, xfer.XferError)
    assert xfer.strerror(-7) and xfer.strerror(-7) != xfer.strerror(-6)
