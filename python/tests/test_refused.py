"""The target refuses what it does not allow, and keeps serving: a WRITE
or READ into memory it deregistered after the initiator loaded its
metadata ends in AccessError naming the target (docs/api.md, Promise
4), and its other memory goes on working."""
import numpy as np

import xfer
from peer import pattern


def test_deregistered_memory(agent, spawn_peer, backend, seed, region_at,
                             raises):
    n = 8192
    peer = spawn_peer([backend])
    gone = peer.reg(n)
    kept = peer.reg(n)
    agent.load_metadata(peer.metadata())
    r_gone = region_at(agent, peer.name, gone["addr"])
    r_kept = region_at(agent, peer.name, kept["addr"])
    src = pattern(seed, n)
    agent.register(src)
    dst = np.zeros(n, np.uint8)
    agent.register(dst)
    with agent.transfer("WRITE", src, r_gone, peer.name) as x:
        x.post()
        assert x.wait(30)               # registered: it lands
    peer.call("dereg", id=gone["id"])
    for op, mem in (("WRITE", src), ("READ", dst)):
        # The initiator's copy of the metadata still lists the region:
        # the request is made, and the target refuses it.
        with agent.transfer(op, mem, r_gone, peer.name) as x:
            with raises(xfer.AccessError, "XFER_ERR_ACCESS", peer.name):
                x.post()
                x.wait(30)
    assert not dst.any(), "a refused READ wrote into local memory"
    with agent.transfer("WRITE", src, r_kept, peer.name) as x:
        x.post()
        assert x.wait(30)
    r = peer.check(kept["id"], seed, 0, n)
    assert r["ok"], "byte %d differs (seed %d)" % (r["first_bad"], seed)
