"""Threads: several Python threads posting their own transfers on one
agent at once, to one peer process, each checking every round's bytes;
and notifications from two peer processes, each sender's in order."""
import base64
import threading

import numpy as np

from peer import pattern, first_mismatch


def test_threads_posting_at_once(agent, spawn_peer, backend, seed,
                                 region_at):
    """4 threads, each with its own slice, WRITE then READ back 25
    rounds of fresh bytes; nothing mixes up."""
    threads, rounds, slot = 4, 25, 1 << 16
    peer = spawn_peer([backend])
    buf = peer.reg(slot * threads)
    agent.load_metadata(peer.metadata())
    region = region_at(agent, peer.name, buf["addr"])
    errors = []

    def work(t):
        try:
            src = np.zeros(slot, np.uint8)
            back = np.zeros(slot, np.uint8)
            agent.register([src, back])
            remote = region[t * slot:(t + 1) * slot]
            with agent.transfer("WRITE", src, remote, peer.name) as w, \
                    agent.transfer("READ", back, remote, peer.name) as r:
                for k in range(rounds):
                    src[:] = pattern(seed + t * 1000 + k, slot)
                    w.post()
                    assert w.wait(30), "thread %d round %d: WRITE" % (t, k)
                    r.post()
                    assert r.wait(30), "thread %d round %d: READ" % (t, k)
                    bad = first_mismatch(back, src)
                    assert bad < 0, "thread %d round %d: byte %d (seed %d)" \
                        % (t, k, bad, seed)
        except BaseException as e:      # noqa: B902 - reported below
            errors.append(e)

    ts = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    assert not any(t.is_alive() for t in ts), "a thread hangs"
    assert errors == []
    for t in range(threads):
        r = peer.check(buf["id"], seed + t * 1000 + rounds - 1, t * slot,
                       slot)
        assert r["ok"], "slot %d: byte %d (seed %d)" % (t, r["first_bad"],
                                                       seed)


def test_two_senders(agent, spawn_peer, backend):
    """get_new_notifs() keys each sender by the name its connection
    bound; each sender's messages keep their order."""
    peers = [spawn_peer([backend]) for _ in range(2)]
    sent = {}
    for i, p in enumerate(peers):
        assert p.load(agent.metadata()) == agent.name
        sent[p.name] = [b"%d-%03d" % (i, k) for k in range(50)]
        p.send("send_notif", to=agent.name,
               msgs=[base64.b64encode(m).decode() for m in sent[p.name]])
    for p in peers:
        p.recv()
    got = {}
    for note in agent.notifs(timeout=30):
        got.setdefault(note.sender, []).append(note.msg)
        if sum(map(len, got.values())) == 100:
            break
    assert got == sent
    assert agent.get_new_notifs() == {}
