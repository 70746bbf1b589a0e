"""Notifications between two processes: with a WRITE (the data is there
when the notification is seen), alone, many in order exactly once, the
three ways to take them (get_new_notifs, the notifs iterator, the file
descriptor with select), and their size limits."""
import base64
import json
import select
import time

import numpy as np
import pytest

import xfer
from peer import pattern


def _b64(b):
    return base64.b64encode(b).decode()


def _msgs(answer):
    return [(s, base64.b64decode(m)) for s, m in answer["notifs"]]


def test_with_write_data_visible(agent, spawn_peer, backend, seed,
                                 region_at):
    """Each WRITE carries a notification naming its bytes; the peer
    checks them the moment it sees the notification, before taking the
    next one.  All are posted before any is waited for."""
    slot, count = 8192, 24
    peer = spawn_peer([backend])
    buf = peer.reg(slot * count)
    assert agent.load_metadata(peer.metadata()) == peer.name
    region = region_at(agent, peer.name, buf["addr"])
    src = np.zeros(slot * count, np.uint8)
    agent.register(src)
    peer.send("expect", count=count, timeout=30, verify=True)
    xs, sent = [], []
    for k in range(count):
        src[k * slot:(k + 1) * slot] = pattern(seed + k, slot)
        note = json.dumps({"id": buf["id"], "seed": seed + k,
                           "off": k * slot, "len": slot}).encode()
        x = agent.transfer("WRITE", (src, k * slot, slot),
                           region[k * slot:(k + 1) * slot], peer.name,
                           notif=note)
        x.post()
        xs.append(x)
        sent.append((agent.name, note))
    for x in xs:
        assert x.wait(30)
        x.release()
    got = peer.recv()
    assert got["bad"] == [], "data not there when notified (seed %d): %r" \
        % (seed, got["bad"])
    assert _msgs(got) == sent, "lost, repeated or reordered (seed %d)" % seed


def test_alone_in_order_exactly_once(agent, spawn_peer, backend):
    """send_notif: 300 messages arrive in order, each once, under this
    agent's name, and nothing after them."""
    count = 300
    peer = spawn_peer([backend])
    agent.load_metadata(peer.metadata())
    msgs = [b"n%05d" % i + b"." * (i % 50) for i in range(count)]
    peer.send("expect", count=count, timeout=30)
    for m in msgs:
        agent.send_notif(peer.name, m)
    got = _msgs(peer.recv())
    assert [s for s, _ in got] == [agent.name] * count
    assert [m for _, m in got] == msgs
    extra = peer.call("expect", count=1, timeout=0.5)
    assert extra["notifs"] == [], "a notification arrived twice"


@pytest.fixture
def sender(agent, spawn_peer, backend):
    """A peer that has this agent's metadata, to send it notifications."""
    peer = spawn_peer([backend])
    assert peer.load(agent.metadata()) == agent.name

    def send(*msgs):
        peer.call("send_notif", to=agent.name, msgs=[_b64(m) for m in msgs])
    send.name = peer.name
    return send


def _collect(agent, n, timeout=30):
    """Exactly n notifications, through the iterator (fails on fewer)."""
    got = []
    for note in agent.notifs(timeout=timeout):
        got.append(note)
        if len(got) == n:
            break
    assert len(got) == n, "only %d of %d notifications" % (len(got), n)
    return got


def test_get_new_notifs_shape(agent, sender):
    """NIXL's shape: {sender: [msg, ...]}, in order; then empty."""
    sender(b"a", b"", b"c")
    got = {}
    fd = agent.notif_fd()
    while sum(len(v) for v in got.values()) < 3:
        ready, _, _ = select.select([fd], [], [], 30)
        assert ready, "no notification within 30 s; have %r" % got
        for k, v in agent.get_new_notifs().items():
            got.setdefault(k, []).extend(v)
    assert got == {sender.name: [b"a", b"", b"c"]}
    assert agent.get_new_notifs() == {}


def test_notifs_iterator(agent, sender):
    sender(b"one", b"two")
    got = _collect(agent, 2)
    assert got == [xfer.Notif(sender.name, b"one"),
                   xfer.Notif(sender.name, b"two")]
    assert got[0].sender == sender.name and got[0].msg == b"one"
    # With none queued the iterator ends once the timeout passed.
    assert list(agent.notifs(timeout=0.2)) == []


def test_notif_fd_select(agent, sender):
    """The descriptor is readable exactly while notifications are
    queued."""
    fd = agent.notif_fd()
    assert isinstance(fd, int) and fd >= 0
    assert select.select([fd], [], [], 0)[0] == []
    sender(b"ping")
    ready, _, _ = select.select([fd], [], [], 30)
    assert ready == [fd], "not readable within 30 s of a notification"
    assert agent.drain() == [xfer.Notif(sender.name, b"ping")]
    assert select.select([fd], [], [], 0)[0] == [], \
        "still readable with nothing queued"


def test_empty_and_max_size(agent, spawn_peer, backend, seed):
    """An empty message and one of NOTIF_MAX bytes arrive whole, alone
    and attached to a WRITE."""
    peer = spawn_peer([backend])
    buf = peer.reg(64)
    agent.load_metadata(peer.metadata())
    big = pattern(seed, xfer.NOTIF_MAX).tobytes()
    assert xfer.NOTIF_MAX == 64 * 1024
    src = np.ones(64, np.uint8)
    agent.register(src)
    peer.send("expect", count=4, timeout=30)
    agent.send_notif(peer.name, b"")
    agent.send_notif(peer.name, big)
    with agent.transfer("WRITE", src, (buf["addr"], 64), peer.name,
                        notif=big) as x:
        x.post()
        assert x.wait(30)
        x.post(notif=b"")
        assert x.wait(30)
    got = [m for _, m in _msgs(peer.recv())]
    assert [len(m) for m in got] == [0, xfer.NOTIF_MAX, xfer.NOTIF_MAX, 0]
    assert got[1] == big and got[2] == big, "seed %d" % seed


def test_too_big(agent, spawn_peer, backend, raises):
    """One byte over NOTIF_MAX: InvalidError (XFER_ERR_INVALID) with the
    library's sentence, wherever the message is given; nothing is sent,
    and the agent goes on working."""
    peer = spawn_peer([backend])
    buf = peer.reg(64)
    agent.load_metadata(peer.metadata())
    src = np.ones(64, np.uint8)
    agent.register(src)
    big = b"x" * (xfer.NOTIF_MAX + 1)
    sentence = "notification of %d bytes exceeds %d" % (xfer.NOTIF_MAX + 1,
                                                        xfer.NOTIF_MAX)

    def refused(call):
        with raises(xfer.InvalidError, "XFER_ERR_INVALID", sentence) as e:
            call()
        assert isinstance(e.value, ValueError)

    refused(lambda: agent.send_notif(peer.name, big))
    refused(lambda: agent.transfer("WRITE", src, (buf["addr"], 64),
                                   peer.name, notif=big))
    with agent.transfer("WRITE", src, (buf["addr"], 64), peer.name) as x:
        refused(lambda: x.post(notif=big))
        x.post(notif=b"after")
        assert x.wait(30)
    got = peer.call("expect", count=2, timeout=1)
    assert _msgs(got) == [(agent.name, b"after")]


def test_early_stop_keeps_the_rest(agent, sender):
    """A loop that stops after the one it wanted (next(), break) leaves
    the notifications it did not take queued: drain() has them, in
    order (before, the iterator took all queued at once and lost the
    rest with the generator)."""
    sender(b"req-41", b"req-42", b"req-43", b"req-44")
    want = xfer.Notif(sender.name, b"req-42")
    got = next((n for n in agent.notifs(timeout=30) if n == want), None)
    assert got == want
    rest = []
    deadline = time.monotonic() + 30
    while len(rest) < 2 and time.monotonic() < deadline:
        rest += agent.drain()
        time.sleep(0.01)
    assert rest == [xfer.Notif(sender.name, b"req-43"),
                    xfer.Notif(sender.name, b"req-44")]
    sender(b"a", b"b")
    for n in agent.notifs(timeout=30):
        assert n.msg == b"a"
        break
    assert _collect(agent, 1) == [xfer.Notif(sender.name, b"b")]
