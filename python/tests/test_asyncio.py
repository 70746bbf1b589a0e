"""asyncio: `await transfer` and `async for n in agent.notifications()`
in one event loop, with a peer process on the other side; an agent
without a progress thread driven by the same helpers and by progress().
Every wait is under asyncio.wait_for, so a bug fails instead of
hanging."""
import asyncio
import base64
import select
import time

import numpy as np
import pytest

import xfer
from peer import pattern, first_mismatch

LIMIT_S = 30


async def _take(agent, n):
    got = []
    async for note in agent.notifications():
        got.append(note)
        if len(got) == n:
            break
    return got


def test_await_and_async_for(agent, spawn_peer, backend, seed, region_at):
    """One loop: WRITEs awaited one after another while the same loop
    takes the peer's notifications as they come."""
    n, count = 1 << 18, 8
    peer = spawn_peer([backend])
    buf = peer.reg(n * count)
    assert agent.load_metadata(peer.metadata()) == peer.name
    assert peer.load(agent.metadata()) == agent.name
    region = region_at(agent, peer.name, buf["addr"])
    src = np.zeros(n * count, np.uint8)
    agent.register(src)
    msgs = [b"async %d" % i for i in range(count)]

    async def writes():
        for k in range(count):
            src[k * n:(k + 1) * n] = pattern(seed + k, n)
            with agent.transfer("WRITE", (src, k * n, n),
                                region[k * n:(k + 1) * n], peer.name) as x:
                x.post()
                assert await x is True
                assert x.status() == xfer.DONE
        return count

    async def main():
        # The peer sends while the loop runs: its answer is read after.
        peer.send("send_notif", to=agent.name,
                  msgs=[base64.b64encode(m).decode() for m in msgs])
        return await asyncio.wait_for(
            asyncio.gather(writes(), _take(agent, count)), LIMIT_S)

    done, got = asyncio.run(main())
    peer.recv()
    assert done == count
    assert got == [xfer.Notif(peer.name, m) for m in msgs]
    for k in range(count):
        r = peer.check(buf["id"], seed + k, k * n, n)
        assert r["ok"], "block %d: byte %d differs (seed %d)" % (
            k, r["first_bad"], seed)


def test_await_failure_raises(agent, spawn_peer, backend, region_at):
    """`await transfer` raises what the transfer ended with."""
    peer = spawn_peer([backend])
    buf = peer.reg(4096)
    agent.load_metadata(peer.metadata())
    region = region_at(agent, peer.name, buf["addr"])
    mem = np.zeros(4096, np.uint8)
    agent.register(mem)
    peer.kill()

    async def main():
        with agent.transfer("WRITE", mem, region, peer.name) as x:
            x.post()
            await asyncio.wait_for(x, LIMIT_S)

    with pytest.raises(xfer.RemoteDisconnectError) as e:
        asyncio.run(main())
    assert e.value.status == -6 and peer.name in str(e.value)


def test_no_progress_thread_notifications(names, spawn_peer, backend, seed):
    """A target with progress_thread=False: notifications() watches its
    event descriptor and drives progress, so a peer's notified WRITEs
    land and are seen, data first."""
    n, count = 65536, 4
    with xfer.Agent(names("np"), backends=[backend],
                    progress_thread=False) as a:
        dst = np.zeros(n * count, np.uint8)
        a.register(dst)
        peer = spawn_peer([backend])
        assert peer.load(a.metadata()) == a.name
        srcs = [peer.reg(n, seed=seed + k) for k in range(count)]

        async def main():
            got = []
            for k in range(count):
                # Sent, not awaited: the WRITE needs this agent's
                # progress, which only the loop below gives.
                peer.send("write", to=a.name, id=srcs[k]["id"], off=0,
                          len=n, raddr=dst.ctypes.data + k * n,
                          notif=base64.b64encode(b"%d" % k).decode())
                (note,) = await asyncio.wait_for(_take(a, 1), LIMIT_S)
                # The data is there when its notification is seen.
                bad = first_mismatch(dst[k * n:(k + 1) * n],
                                     pattern(seed + k, n))
                assert bad < 0, "WRITE %d: byte %d (seed %d)" % (k, bad,
                                                                seed)
                got.append(note)
            return got

        got = asyncio.run(main())
        assert got == [xfer.Notif(peer.name, b"%d" % k)
                       for k in range(count)]
        for _ in range(count):
            assert peer.recv()["ok"]


def test_no_progress_thread_initiator(names, spawn_peer, backend, seed,
                                      region_at):
    """An initiator with progress_thread=False: `await transfer` polls
    status(), which drives progress; notifications sent to it arrive
    through progress() and the event descriptor."""
    n = 1 << 20
    with xfer.Agent(names("np"), backends=[backend],
                    progress_thread=False) as a:
        peer = spawn_peer([backend])
        buf = peer.reg(n, seed=seed)
        assert a.load_metadata(peer.metadata()) == peer.name
        assert peer.load(a.metadata()) == a.name
        region = region_at(a, peer.name, buf["addr"])
        dst = np.zeros(n, np.uint8)
        a.register(dst)

        async def main():
            with a.transfer("READ", dst, region, peer.name) as x:
                x.post()
                await asyncio.wait_for(x, LIMIT_S)
        asyncio.run(main())
        bad = first_mismatch(dst, pattern(seed, n))
        assert bad < 0, "byte %d differs (seed %d)" % (bad, seed)

        # The plain loop: select on the event descriptor, progress().
        peer.send("send_notif", to=a.name,
                  msgs=[base64.b64encode(b"manual").decode()])
        efd = a.event_fd()
        got = []
        deadline = time.monotonic() + LIMIT_S
        while not got and time.monotonic() < deadline:
            select.select([efd], [], [], 0.5)
            a.progress()
            got = a.drain()
        peer.recv()
        assert got == [xfer.Notif(peer.name, b"manual")]
