"""Two processes moving NumPy arrays byte for byte, over tcp and uds:
WRITE and READ of several sizes, lists of descriptors, prepared lists
reposted with fresh data, and metadata exchanged as a blob or through
the listener.  The peer checks what landed on its side against the seed;
this process checks its own side."""
import numpy as np

import xfer
from peer import pattern, first_mismatch

# 1 byte, an odd size across pages, and several MiB.
SIZES = [1, 4096 + 3, (3 << 20) + 5]


def _load_blob(agent, peer):
    assert agent.load_metadata(peer.metadata()) == peer.name
    assert agent.is_loaded(peer.name)


def test_write_sizes(agent, spawn_peer, backend, seed, region_at):
    peer = spawn_peer([backend])
    bufs = [peer.reg(n) for n in SIZES]
    _load_blob(agent, peer)
    for i, n in enumerate(SIZES):
        src = pattern(seed + i, n)
        agent.register(src)
        region = region_at(agent, peer.name, bufs[i]["addr"])
        assert region.len == n and region.access == "rw"
        with agent.transfer("WRITE", src, region, peer.name) as x:
            x.post()
            assert x.wait(30), "WRITE of %d bytes still going" % n
            assert x.status() == xfer.DONE
        r = peer.check(bufs[i]["id"], seed + i, 0, n)
        assert r["ok"], "%d bytes: peer's byte %d differs (seed %d)" % (
            n, r["first_bad"], seed)
        assert first_mismatch(src, pattern(seed + i, n)) < 0, \
            "WRITE changed its source (seed %d)" % seed


def test_read_sizes(agent, spawn_peer, backend, seed, region_at):
    peer = spawn_peer([backend])
    bufs = [peer.reg(n, seed=seed + i) for i, n in enumerate(SIZES)]
    _load_blob(agent, peer)
    for i, n in enumerate(SIZES):
        dst = np.zeros(n, np.uint8)
        agent.register(dst)
        region = region_at(agent, peer.name, bufs[i]["addr"])
        with agent.transfer("READ", dst, region, peer.name) as x:
            assert x.op == "READ" and x.nbytes == n
            x.post()
            assert x.wait(30), "READ of %d bytes still going" % n
        bad = first_mismatch(dst, pattern(seed + i, n))
        assert bad < 0, "%d bytes: byte %d differs (seed %d)" % (n, bad, seed)
        r = peer.check(bufs[i]["id"], seed + i, 0, n)
        assert r["ok"], "READ changed the peer's memory (seed %d)" % seed


def test_descriptor_lists(agent, spawn_peer, backend, seed, region_at):
    """(array, offset, length) tuples against Region slices: a scatter
    WRITE to other offsets, out of order, then a gather READ back."""
    n = 1 << 16
    peer = spawn_peer([backend])
    buf = peer.reg(n)
    _load_blob(agent, peer)
    region = region_at(agent, peer.name, buf["addr"])
    # (local offset, remote offset, length): piece k holds
    # pattern(seed + k), which the peer checks where it landed.
    pieces = [(0, 50000, 1), (1, 0, 7000), (7001, 9000, 4096),
              (11097, 20000, 30000)]
    src = np.zeros(n, np.uint8)
    for k, (s, _, ln) in enumerate(pieces):
        src[s:s + ln] = pattern(seed + k, ln)
    agent.register(src)
    local = [(src, s, ln) for s, _, ln in pieces]
    remote = [region[d:d + ln] for _, d, ln in pieces]
    with agent.transfer("WRITE", local, remote, peer.name) as x:
        assert x.nbytes == sum(ln for _, _, ln in pieces)
        x.post()
        assert x.wait(30)
    for k, (s, d, ln) in enumerate(pieces):
        r = peer.check(buf["id"], seed + k, d, ln)
        assert r["ok"], "piece %d at %d (+%d): byte %d differs (seed %d)" % (
            k, d, ln, r["first_bad"], seed)

    back = np.zeros(n, np.uint8)
    agent.register(back)
    gather = [(back, s, ln) for s, _, ln in pieces]
    with agent.transfer("READ", gather, remote, peer.name) as x:
        x.post()
        assert x.wait(30)
    bad = first_mismatch(back, src)
    assert bad < 0, "gathered byte %d differs (seed %d)" % (bad, seed)


def test_prepped_reposted(agent, spawn_peer, backend, seed, region_at):
    """Prepared lists (NIXL's prep_xfer_dlist / make_prepped_xfer): one
    request made from index pairs, reposted with fresh data each time,
    and each time every block checked on the peer."""
    block, nblocks, rounds = 4096, 8, 12
    peer = spawn_peer([backend])
    buf = peer.reg(block * nblocks)
    _load_blob(agent, peer)
    region = region_at(agent, peer.name, buf["addr"])
    src = np.zeros(block * nblocks, np.uint8)
    agent.register(src)
    lprep = agent.prep([(src, i * block, block) for i in range(nblocks)])
    rprep = agent.prep([region[i * block:(i + 1) * block]
                        for i in range(nblocks)], peer.name)
    assert len(lprep) == len(rprep) == nblocks
    # Local block i goes to remote block perm[i].
    perm = [int(i) for i in np.random.default_rng(seed).permutation(nblocks)]
    x = agent.transfer_prepped("WRITE", lprep, range(nblocks), rprep, perm)
    assert x.nbytes == block * nblocks
    for r in range(rounds):
        for i in range(nblocks):
            src[i * block:(i + 1) * block] = pattern(seed + r * 100 + i,
                                                     block)
        x.post()
        assert x.wait(30), "round %d still going" % r
        for i in range(nblocks):
            res = peer.check(buf["id"], seed + r * 100 + i, perm[i] * block,
                             block)
            assert res["ok"], ("round %d, block %d -> %d: byte %d differs "
                               "(seed %d)" % (r, i, perm[i],
                                              res["first_bad"], seed))
    # A READ from the same lists into zeros: local block i from remote
    # block perm[i], which holds the last round's block i.
    src[:] = 0
    y = agent.transfer_prepped("READ", lprep, range(nblocks), rprep, perm)
    y.post()
    assert y.wait(30)
    r = rounds - 1
    for i in range(nblocks):
        bad = first_mismatch(src[i * block:(i + 1) * block],
                             pattern(seed + r * 100 + i, block))
        assert bad < 0, "READ block %d: byte %d differs (seed %d)" % (
            i, bad, seed)
    y.release()
    x.release()
    lprep.release()
    rprep.release()


def test_listener_fetch(names, spawn_peer, backend, seed, region_at):
    """Metadata through the peer's listener (listen=True, fetch(addr=)):
    then a WRITE and a READ, both ways of metadata in one run."""
    n = 100000
    peer = spawn_peer([backend], listen=True)
    host, port = peer.listen_addr.rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) > 0
    buf = peer.reg(n)
    with xfer.Agent(names("local"), backends=[backend], listen=True) as a:
        assert a.fetch(addr=peer.listen_addr) == peer.name
        # The name, when given, must be the one there.
        assert a.fetch(peer.name, addr=peer.listen_addr) == peer.name
        region = region_at(a, peer.name, buf["addr"])
        src = pattern(seed, n)
        a.register(src)
        with a.transfer("WRITE", src, region, peer.name) as x:
            x.post()
            assert x.wait(30)
        r = peer.check(buf["id"], seed, 0, n)
        assert r["ok"], "byte %d differs (seed %d)" % (r["first_bad"], seed)
        # And the other way: the peer fetches ours from our listener and
        # writes into our memory.
        dst = np.zeros(n, np.uint8)
        a.register(dst)
        assert peer.call("fetch", addr=a.listen_addr)["name"] == a.name
        mine = peer.reg(n, seed=seed + 1)
        out = peer.call("write", to=a.name, id=mine["id"], off=0, len=n,
                        raddr=dst.ctypes.data)
        assert out["ok"]
        bad = first_mismatch(dst, pattern(seed + 1, n))
        assert bad < 0, "byte %d differs (seed %d)" % (bad, seed)


def test_uds_shared_memory(names, spawn_peer, seed, region_at):
    """uds with memory from Agent.alloc on both sides: after the first
    posts (through the socket) the data moves through the mapped memfd;
    every post's bytes are checked, and the backend says it used shm."""
    n = (1 << 20) + 12345
    peer = spawn_peer(["uds"])
    buf = peer.reg(n, alloc=True)
    with xfer.Agent(names("local"), backends=["uds"]) as a:
        mem = a.alloc(n)
        assert len(mem) == n
        src = np.frombuffer(mem.buffer, np.uint8)[:n]
        a.register(mem)
        assert a.load_metadata(peer.metadata()) == peer.name
        region = region_at(a, peer.name, buf["addr"])
        with a.transfer("WRITE", mem, region, peer.name) as x:
            for k in range(4):
                src[:] = pattern(seed + k, n)
                x.post()
                assert x.wait(30)
                r = peer.check(buf["id"], seed + k, 0, n)
                assert r["ok"], "post %d: byte %d differs (seed %d)" % (
                    k, r["first_bad"], seed)
        assert "1 via shm" in a.backend_state("uds"), a.backend_state("uds")
        src[:] = 0
        with a.transfer("READ", mem, region, peer.name) as x:
            for k in range(3):
                x.post()
                assert x.wait(30)
        bad = first_mismatch(src, pattern(seed + 3, n))
        assert bad < 0, "READ byte %d differs (seed %d)" % (bad, seed)
