"""A peer SIGKILLed during a stream of WRITEs: what was in flight ends
well or with RemoteDisconnectError naming the peer, later posts fail the
same way at once, nothing hangs, and another peer of the same agent
keeps working.

docs/reliability.md ("The bounds"): on tcp and uds a killed peer is
noticed "at once" (its socket closes; uds also reads the peer's liveness
word) and answers XFER_ERR_REMOTE_DISCONNECT, not TIMEOUT; its tests
allow 3 s for "at once".  Here the bound is five times that, and each
time is printed."""
import json
import threading
import time

import numpy as np

import xfer
from peer import pattern

# docs/reliability.md's "at once" (3 s), times five for a loaded machine.
AT_ONCE_S = 15


def test_kill_mid_stream(agent, spawn_peer, backend, seed, region_at):
    n = 8 << 20         # large enough to be on the wire at the kill, often
    dying = spawn_peer([backend])
    live = spawn_peer([backend])
    bufs = {p.name: p.reg(n) for p in (dying, live)}
    for p in (dying, live):
        assert agent.load_metadata(p.metadata()) == p.name
    src = pattern(seed, n)
    agent.register(src)

    results = []        # (start, end, None or the exception) per post

    def stream():
        region = region_at(agent, dying.name, bufs[dying.name]["addr"])
        with agent.transfer("WRITE", src, region, dying.name) as x:
            failures = 0
            while failures < 3:
                t0 = time.monotonic()
                try:
                    x.post()
                    finished = x.wait(60)
                    results.append((t0, time.monotonic(),
                                    None if finished else "still going"))
                    if not finished:
                        return
                except xfer.XferError as e:
                    results.append((t0, time.monotonic(), e))
                    failures += 1

    t = threading.Thread(target=stream)
    t.start()
    deadline = time.monotonic() + 60
    while len(results) < 5 and time.monotonic() < deadline and t.is_alive():
        time.sleep(0.01)
    assert len(results) >= 5 and all(r[2] is None for r in results), results
    t_kill = time.monotonic()
    dying.kill()
    t.join(2 * 60)
    assert not t.is_alive(), "the stream to the killed peer hangs"

    after = [r for r in results if r[1] > t_kill]
    assert not [r for r in results if r[2] == "still going"], \
        "a WRITE was still going after 60 s"
    errors = [r for r in after if r[2] is not None]
    assert len(errors) == 3
    first = errors[0]
    print("%s: first error %.3f s after the kill (%d posts ended well "
          "after it); later posts failed in %s s" % (
              backend, first[1] - t_kill, len(after) - len(errors),
              ", ".join("%.3f" % (e - s) for s, e, _ in errors[1:])))
    for s, e, err in errors:
        assert isinstance(err, xfer.RemoteDisconnectError), repr(err)
        assert isinstance(err, ConnectionError)
        assert err.status == -6 and err.name == "XFER_ERR_REMOTE_DISCONNECT"
        assert dying.name in str(err), "the sentence names no peer: %s" % err
    assert first[1] - t_kill < AT_ONCE_S, \
        "the death was noticed only after %.1f s" % (first[1] - t_kill)
    for s, e, _ in errors[1:]:
        assert e - s < AT_ONCE_S, "a later post took %.1f s to fail" % (e - s)
    # Once failed, never OK again: the first error is followed by errors.
    assert after[after.index(first):] == errors

    # The other peer of the same agent: notified WRITEs, each checked by
    # it the moment its notification arrives.
    region = region_at(agent, live.name, bufs[live.name]["addr"])
    count = 16
    live.send("expect", count=count, timeout=30, verify=True)
    blk = n // count
    t0 = time.monotonic()
    for k in range(count):
        note = json.dumps({"id": bufs[live.name]["id"], "seed": seed,
                           "off": 0, "len": blk * (k + 1)}).encode()
        # Each WRITE sends a longer prefix of src, which is pattern(seed).
        with agent.transfer("WRITE", (src, 0, blk * (k + 1)),
                            region[0:blk * (k + 1)], live.name,
                            notif=note) as x:
            x.post()
            assert x.wait(30), "a WRITE to the live peer is still going"
    got = live.recv()
    print("%s: the live peer took %d WRITEs in %.3f s" % (
        backend, count, time.monotonic() - t0))
    assert got["bad"] == [], "seed %d: %r" % (seed, got["bad"])
    assert len(got["notifs"]) == count


def test_post_after_death(agent, spawn_peer, backend, seed, region_at):
    """A peer killed and reaped while idle: a new transfer to it fails
    at once, a READ as a WRITE, with nothing posted before."""
    n = 4096
    peer = spawn_peer([backend])
    buf = peer.reg(n)
    agent.load_metadata(peer.metadata())
    region = region_at(agent, peer.name, buf["addr"])
    mem = np.zeros(n, np.uint8)
    agent.register(mem)
    with agent.transfer("WRITE", mem, region, peer.name) as x:
        x.post()
        assert x.wait(30)
    peer.kill()
    for op in ("WRITE", "READ"):
        t0 = time.monotonic()
        try:
            with agent.transfer(op, mem, region, peer.name) as x:
                x.post()
                x.wait(AT_ONCE_S * 2)
        except xfer.RemoteDisconnectError as e:
            took = time.monotonic() - t0
            print("%s %s to a dead peer failed in %.3f s: %s"
                  % (backend, op, took, e))
            assert e.status == -6 and peer.name in str(e)
            assert took < AT_ONCE_S
        else:
            raise AssertionError("%s to a dead peer succeeded" % op)
