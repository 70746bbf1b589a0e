"""conftest.py - fixtures of the Python suite: unique agent names, a
printed random seed, and peers in separate processes (peer.py).

A peer is a child started with subprocess from sys.executable, never a
fork of the test process (which holds agents and their threads).  It
inherits XFER_PLUGIN_PATH, so it loads the same plugins.  Each test's
peers are killed at its end, whatever happened.
"""
import base64
import contextlib
import itertools
import json
import os
import random
import select
import signal
import subprocess
import sys
import time

import pytest

import xfer

HERE = os.path.dirname(os.path.abspath(__file__))
PEER = os.path.join(HERE, "peer.py")

# A command to a peer that takes longer than this is a hang, not a slow
# machine (the longest wait a command makes itself is 30 s).
PEER_REPLY_S = 60

_names = itertools.count()


def unique_name(role):
    """An agent name no other test, run or process uses at once."""
    return "pt%d-%d-%s" % (os.getpid(), next(_names), role)


class PeerError(Exception):
    """A command the peer ran raised: cls, msg and status are what it
    raised (class name, sentence, status code or None)."""

    def __init__(self, cls, msg, status):
        super().__init__("%s: %s" % (cls, msg))
        self.cls = cls
        self.msg = msg
        self.status = status


class PeerProcess:
    """The test's side of a peer: send commands, read answers."""

    def __init__(self, name, backends, listen=None, progress_thread=True):
        self.proc = subprocess.Popen(
            [sys.executable, PEER], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, bufsize=0)
        self._buf = b""
        info = self.call("init", name=name, backends=backends,
                         listen=listen, progress_thread=progress_thread)
        self.name = info["name"]
        self.pid = info["pid"]
        self.listen_addr = info["listen_addr"]

    def send(self, cmd, **kw):
        """Send a command without waiting for its answer (see recv)."""
        kw["cmd"] = cmd
        self.proc.stdin.write(json.dumps(kw).encode() + b"\n")

    def recv(self, timeout=PEER_REPLY_S):
        """The answer to the oldest command sent; raises PeerError when
        it failed there, and fails the test when none comes in time."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail("peer %s did not answer within %d s"
                            % (self.name, timeout))
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    pytest.fail("peer %s exited (rc %s) without answering"
                                % (self.name, self.proc.poll()))
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        out = json.loads(line)
        if "error" in out:
            raise PeerError(out["error"], out["msg"], out["status"])
        return out

    def call(self, cmd, **kw):
        self.send(cmd, **kw)
        return self.recv()

    # Conveniences for what every test does.

    def reg(self, size, **kw):
        return self.call("reg", size=size, **kw)

    def metadata(self):
        return base64.b64decode(self.call("md")["md"])

    def load(self, blob):
        return self.call("load", md=base64.b64encode(blob).decode())["name"]

    def check(self, buf_id, seed, off, length):
        return self.call("check", id=buf_id, seed=seed, off=off, len=length)

    def signal(self, sig):
        os.kill(self.pid, sig)

    def stop(self):
        """SIGSTOP, and wait until the kernel shows it stopped (a signal
        is delivered asynchronously)."""
        os.kill(self.pid, signal.SIGSTOP)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with open("/proc/%d/stat" % self.pid) as f:
                # The state follows the command name in parentheses.
                if f.read().rsplit(")", 1)[1].split()[0] == "T":
                    return
            time.sleep(0.001)
        pytest.fail("peer %s did not stop within 10 s" % self.name)

    def kill(self):
        """SIGKILL and reap (idempotent)."""
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGCONT)
                self.proc.kill()
            except ProcessLookupError:
                pass
        self.proc.wait(10)

    def close(self):
        """Ask it to close its agent and exit (woken first, if a test
        stopped it); kill it if it has not within 10 s."""
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGCONT)
                self.send("quit")
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self.kill()


@pytest.fixture
def spawn_peer():
    """spawn_peer(backends, listen=None, progress_thread=True): a peer
    process with an agent of a unique name; killed at the test's end."""
    peers = []

    def spawn(backends, **kw):
        p = PeerProcess(unique_name("peer"), backends, **kw)
        peers.append(p)
        return p

    yield spawn
    for p in peers:
        p.close()


@pytest.fixture
def names():
    """names(role): a unique agent name."""
    return unique_name


@pytest.fixture
def seed():
    """A random seed, printed (pytest shows it on failure): set
    XFER_TEST_SEED to replay a run."""
    s = int(os.environ.get("XFER_TEST_SEED") or random.randrange(1 << 32))
    print("seed %d (XFER_TEST_SEED=%d replays it)" % (s, s))
    return s


@pytest.fixture(params=["tcp", "uds"])
def backend(request):
    """Each two-process test runs over tcp and over uds."""
    return request.param


def _region_at(agent, peer_name, addr):
    for r in agent.remote_regions(peer_name):
        if r.addr == addr:
            return r
    raise AssertionError("peer %s has no region at 0x%x" % (peer_name, addr))


@pytest.fixture
def region_at():
    """region_at(agent, peer_name, addr): the Region of a loaded peer
    that starts at addr (a peer's reg() answers its buffer's addr)."""
    return _region_at


@pytest.fixture
def agent(names, backend):
    """A local agent (the initiator) on the test's backend."""
    with xfer.Agent(names("local"), backends=[backend]) as a:
        yield a


# The status codes of include/xfer/xfer.h: the ABI, so written out here
# rather than read back from the package under test.
STATUS = {
    "XFER_ERR_INVALID": -1, "XFER_ERR_NOT_FOUND": -2, "XFER_ERR_NOMEM": -3,
    "XFER_ERR_NOT_SUPPORTED": -4, "XFER_ERR_BACKEND": -5,
    "XFER_ERR_REMOTE_DISCONNECT": -6, "XFER_ERR_TIMEOUT": -7,
    "XFER_ERR_CANCELED": -8, "XFER_ERR_ACCESS": -9, "XFER_ERR_BUSY": -10,
    "XFER_ERR_EXISTS": -11, "XFER_ERR_LOAD": -12, "XFER_ERR_CONFIG": -13,
    "XFER_ERR_AUTH": -14,
}


@contextlib.contextmanager
def _raises(cls, name=None, *sentences):
    with pytest.raises(cls) as e:
        yield e
    err = e.value
    if name is not None:
        assert isinstance(err, xfer.XferError), repr(err)
        assert err.name == name, "%s is %s, not %s" % (err, err.name, name)
        assert err.status == STATUS[name], err.status
        assert err.message == str(err)
    for s in sentences:
        assert s in str(err), "%r is not in the sentence %r" % (s, str(err))


@pytest.fixture
def raises():
    """with raises(cls, "XFER_ERR_X", "part of the sentence", ...):
    pytest.raises, plus the status code and name of an XferError (name
    None for a plain Python exception) and each substring."""
    return _raises
