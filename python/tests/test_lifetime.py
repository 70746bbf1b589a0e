"""Reference counting and lifetime: registering holds a reference to the
memory exactly as long as it is registered (10,000 cycles leave no
trace), registered memory stays alive with no other reference to it,
and transfers, prepared lists and agents dropped without release or
close free what they held."""
import gc
import os
import signal
import sys
import time
import tracemalloc
import weakref

import numpy as np

import xfer
from peer import pattern

CYCLES = 10000


def _rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_register_deregister_cycles(names):
    """10,000 register/deregister cycles (both ways of deregistering):
    the buffer's reference count is back where it started, Python's heap
    and the process's RSS are flat (generous margins: this is about a
    leak per cycle, which would show as 10,000 of something), and the
    agent holds no registration."""
    buf = np.zeros(4096, np.uint8)
    with xfer.Agent(names("a"), backends=["tcp"]) as a:
        def cycles(n):
            for i in range(n):
                if i % 2:
                    with a.register(buf):
                        pass
                else:
                    a.register(buf).deregister()
        cycles(200)                 # warm up caches and free lists
        gc.collect()
        refs = sys.getrefcount(buf)
        rss = _rss()
        tracemalloc.start()
        try:
            before = tracemalloc.take_snapshot()
            cycles(CYCLES)
            gc.collect()
            after = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
        grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
        rss_grown = _rss() - rss
        print("after %d cycles: Python heap %+d bytes, RSS %+d KiB"
              % (CYCLES, grown, rss_grown // 1024))
        assert sys.getrefcount(buf) == refs
        assert a.registrations == []
        # 10,000 leaked objects of even 32 bytes would be 320 KB; a
        # registration kept whole costs about 1.2 KB (11 MiB of RSS for
        # 10,000 measured here), so a leak of a fifth of one shows.
        assert grown < 64 * 1024, "Python heap grew %d bytes" % grown
        assert rss_grown < 2 << 20, "RSS grew %d KiB" % (rss_grown // 1024)
    assert sys.getrefcount(buf) == refs


def test_registered_temporary_kept_alive(names, spawn_peer, backend, seed):
    """An array registered with no other reference to it (nor to its
    Registration) lives while registered: a peer process WRITEs into it
    after gc.collect(), and reg.obj holds the bytes.  Deregistered, it
    is freed."""
    n = 100000
    with xfer.Agent(names("a"), backends=[backend]) as a:
        arr = np.zeros(n, np.uint8)
        gone = weakref.ref(arr)
        addr = arr.ctypes.data
        a.register(arr)
        del arr
        gc.collect()
        assert gone() is not None, "registered memory was collected"
        (reg,) = a.registrations
        assert reg.regions == [(addr, n)]

        peer = spawn_peer([backend])
        assert peer.load(a.metadata()) == a.name
        src = peer.reg(n, seed=seed)
        out = peer.call("write", to=a.name, id=src["id"], off=0, len=n,
                        raddr=addr)
        assert out["ok"]
        assert reg.obj is gone()
        assert np.array_equal(reg.obj, pattern(seed, n)), "seed %d" % seed

        reg.deregister()
        del reg
        gc.collect()
        assert gone() is None, "deregistered memory is still referenced"


def test_dropped_transfers_and_prep_lists(names):
    """Transfers (never posted, and posted and done) and prepared lists
    dropped without release() are freed: afterwards the memory they used
    deregisters without BusyError, and none of them is still alive."""
    with xfer.Agent(names("a"), backends=["tcp"]) as a, \
            xfer.Agent(names("b"), backends=["tcp"]) as b:
        b.register(np.zeros(4096, np.uint8))
        a.load_metadata(b.metadata())
        (region,) = a.remote_regions(b.name)
        mem = np.zeros(4096, np.uint8)
        reg = a.register(mem)
        refs = []
        for i in range(2000):
            x = a.transfer("WRITE", (mem, 0, 64), region[0:64], b.name)
            if i % 100 == 0:
                x.post()
                assert x.wait(30)
            refs.append(weakref.ref(x))
        for i in range(500):
            refs.append(weakref.ref(a.prep([(mem, 0, 64)])))
        del x
        gc.collect()
        assert [r for r in refs if r() is not None] == []
        reg.deregister()
        assert a.registrations == []
        assert a.stats()["in_flight"] == 0


def test_dropped_agent(names):
    """An agent dropped without close() is collected and closes itself,
    giving back the memory it kept registered."""
    buf = np.zeros(4096, np.uint8)
    refs = sys.getrefcount(buf)
    a = xfer.Agent(names("a"), backends=["tcp"])
    a.register(buf)
    a.prep([buf])
    assert sys.getrefcount(buf) > refs
    gone = weakref.ref(a)
    del a
    gc.collect()
    assert gone() is None
    assert sys.getrefcount(buf) == refs


def test_shared_buffer_cycles(names):
    """alloc, register, deregister, free: 1,000 times, RSS flat."""
    with xfer.Agent(names("a"), backends=["uds"]) as a:
        def cycles(n):
            for _ in range(n):
                buf = a.alloc(1 << 16)
                with a.register(buf):
                    pass
                buf.free()
        cycles(50)
        rss = _rss()
        cycles(1000)
        grown = _rss() - rss
        print("RSS %+d KiB after 1,000 alloc/free cycles" % (grown // 1024))
        assert grown < 8 << 20
        assert a.registrations == []


def test_transfer_dropped_in_flight(names, spawn_peer, region_at, raises):
    """A transfer dropped while its post is on the wire (the peer is
    stopped) cannot be freed yet: the agent keeps it, and the memory it
    uses stays registered (BusyError) until it ends; after SIGCONT it is
    released and the memory deregisters."""
    n = 1 << 20
    peer = spawn_peer(["tcp"])
    buf = peer.reg(n)
    with xfer.Agent(names("a"), backends=["tcp"]) as a:
        a.load_metadata(peer.metadata())
        a.connect(peer.name, timeout=30)
        region = region_at(a, peer.name, buf["addr"])
        reg = a.register(np.zeros(n, np.uint8))
        peer.stop()
        x = a.transfer("WRITE", reg.obj, region, peer.name)
        x.post()
        gone = weakref.ref(x)
        del x
        gc.collect()
        assert gone() is None
        with raises(xfer.BusyError, "XFER_ERR_BUSY", "still used by 1"):
            reg.deregister()
        peer.signal(signal.SIGCONT)
        deadline = time.monotonic() + 30
        while True:
            try:
                reg.deregister()
                break
            except xfer.BusyError:
                assert time.monotonic() < deadline, \
                    "the dropped transfer was never released"
                time.sleep(0.05)
        assert a.registrations == []
