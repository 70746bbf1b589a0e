"""Closing an agent while another thread waits on it: the waiting
thread gets ValueError ("this agent was closed") within a short bound,
instead of using the freed agent or waiting for ever.  A service shuts
down this way: a worker blocked in wait() or in a notification loop,
and the main thread closing the agent."""
import asyncio
import signal
import threading
import time

import numpy as np

import xfer

# How long a waiter may take to notice: the package waits in slices of
# 200 ms, so this is generous.
NOTICE_S = 5


def _in_thread(fn):
    """Run fn in a thread; returns (thread, box) where box gets
    ("ok", value) or ("raised", exception)."""
    box = []

    def run():
        try:
            box.append(("ok", fn()))
        except BaseException as e:     # noqa: B902 - reported to the test
            box.append(("raised", e))
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, box


def _closed_while(agent, fn):
    t, box = _in_thread(fn)
    time.sleep(0.3)                 # let it block
    assert t.is_alive() and not box, "it did not wait: %r" % box
    t0 = time.monotonic()
    agent.close()
    t.join(NOTICE_S)
    took = time.monotonic() - t0
    assert not t.is_alive(), "still blocked %d s after close()" % NOTICE_S
    print("the waiter returned %.3f s after close(): %r" % (took, box))
    return box[0]


def test_close_while_waiting(names, spawn_peer, region_at):
    """Transfer.wait() on a stopped peer, the agent closed meanwhile.
    Before the fix the waiter went on using the freed request (its error
    named the peer with bytes of freed memory)."""
    peer = spawn_peer(["tcp"])
    buf = peer.reg(4096)
    a = xfer.Agent(names("a"), backends=["tcp"])
    a.load_metadata(peer.metadata())
    region = region_at(a, peer.name, buf["addr"])
    mem = np.zeros(4096, np.uint8)
    a.register(mem)
    x = a.transfer("WRITE", mem, region, peer.name)
    x.post()
    assert x.wait(30)
    peer.stop()
    x.post()
    kind, val = _closed_while(a, lambda: x.wait())
    assert kind == "raised" and type(val) is ValueError, val
    assert "this agent was closed" in str(val)


def test_close_while_iterating(names):
    """for n in agent.notifs(): with no timeout, the agent closed."""
    a = xfer.Agent(names("a"), backends=["tcp"])
    kind, val = _closed_while(a, lambda: list(a.notifs()))
    assert kind == "raised" and type(val) is ValueError, val
    assert "this agent was closed" in str(val)


def test_close_while_async_iterating(names):
    """async for n in agent.notifications(), the agent closed by another
    task of the loop."""
    a = xfer.Agent(names("a"), backends=["tcp"])

    async def consume():
        async for _ in a.notifications():
            pass

    async def main():
        task = asyncio.ensure_future(consume())
        await asyncio.sleep(0.3)
        assert not task.done()
        a.close()
        return await asyncio.wait_for(task, NOTICE_S)

    try:
        asyncio.run(main())
    except ValueError as e:
        assert "this agent was closed" in str(e)
    except asyncio.TimeoutError:
        raise AssertionError("async for still waiting %d s after close()"
                             % NOTICE_S) from None
    else:
        raise AssertionError("async for ended without an error")


def test_release_while_waiting(names, spawn_peer, region_at, raises):
    """Transfer.release() from one thread while another waits on the
    same transfer is BusyError (before, it freed the request under the
    waiter, which then reported DONE for a READ never answered); after
    the wait returns, release works."""
    peer = spawn_peer(["tcp"])
    buf = peer.reg(4096)
    with xfer.Agent(names("a"), backends=["tcp"]) as a:
        a.load_metadata(peer.metadata())
        region = region_at(a, peer.name, buf["addr"])
        mem = np.zeros(4096, np.uint8)
        a.register(mem)
        x = a.transfer("READ", mem, region, peer.name)
        x.post()
        assert x.wait(30)
        peer.stop()
        x.post()
        t, box = _in_thread(lambda: x.wait(1.5))
        time.sleep(0.3)
        assert t.is_alive()
        with raises(xfer.BusyError, "XFER_ERR_BUSY",
                    "another thread is waiting on this transfer"):
            x.release()
        t.join(30)
        assert box == [("ok", False)], box   # still under way, not DONE
        x.cancel()
        peer.signal(signal.SIGCONT)
        deadline = time.monotonic() + 30
        while True:
            try:
                x.release()
                break
            except xfer.BusyError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
