"""The GIL is released around calls that wait: while one thread waits
in the library on a peer that cannot answer (SIGSTOPped), another
Python thread keeps running.

How it is judged without depending on the machine's speed: a thread
counts as fast as it can, first while the main thread sleeps in
time.sleep (which releases the GIL: the counter's own pace on this
machine now), then while the main thread waits in xfer.  Holding the
GIL through a wait would leave the counter only the moments between
the library's 200 ms wait slices (Python's 5 ms switch interval each):
a few percent of its pace.  Released, it keeps about all of it; the
test asks for a quarter."""
import signal
import threading
import time

import numpy as np

import xfer

MIN_SHARE = 0.25


class Counter:
    """A thread counting as fast as it can; measure() its rate."""

    def __init__(self):
        self.n = 0
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop:
            self.n += 1

    def measure(self, call):
        """(counts a second, seconds) while call() runs."""
        n0, t0 = self.n, time.monotonic()
        call()
        dt = time.monotonic() - t0
        return (self.n - n0) / dt, dt

    def stop(self):
        self._stop = True
        self._t.join()


def _pace(what, waiting_call, tries=3):
    """(share of its own pace the counter kept during waiting_call, how
    long the call took).  A machine busy with something else during one
    try can lower the share; it is measured again, up to tries times: a
    held GIL keeps it low every time."""
    for _ in range(tries):
        c = Counter()
        try:
            before, _ = c.measure(lambda: time.sleep(0.5))
            during, took = c.measure(waiting_call)
            after, _ = c.measure(lambda: time.sleep(0.5))
        finally:
            c.stop()
        pace = (before + after) / 2
        print("%s: counter at %.0f/s while sleeping, %.0f/s during %.3f s "
              "in xfer (%.0f%%)" % (what, pace, during, took,
                                    100 * during / pace))
        if during / pace > MIN_SHARE:
            break
    return during / pace, took


def _assert_released(what, share):
    assert share > MIN_SHARE, (
        "%s held the GIL: the other thread ran at %.0f%% of its pace"
        % (what, 100 * share))


def test_wait_releases_gil(names, spawn_peer, region_at):
    peer = spawn_peer(["tcp"])
    buf = peer.reg(4096)
    with xfer.Agent(names("a"), backends=["tcp"]) as a:
        a.load_metadata(peer.metadata())
        region = region_at(a, peer.name, buf["addr"])
        mem = np.ones(4096, np.uint8)
        a.register(mem)
        with a.transfer("WRITE", mem, region, peer.name) as x:
            x.post()
            assert x.wait(30)           # connected; now it cannot answer
            peer.stop()
            try:
                x.post()
                result = []
                share, took = _pace("Transfer.wait",
                                    lambda: result.append(x.wait(1.5)))
                assert set(result) == {False}, "a WRITE to a stopped peer ended"
                assert took >= 1.4
                _assert_released("Transfer.wait", share)
            finally:
                peer.signal(signal.SIGCONT)
            assert x.wait(30), "the WRITE did not finish after SIGCONT"


def test_fetch_releases_gil(names, spawn_peer, raises):
    """One call that waits in C without slices: fetch from the listener
    of a stopped peer, which ends in TimeoutError at its timeout."""
    peer = spawn_peer(["tcp"], listen=True)
    with xfer.Agent(names("a"), backends=["tcp"]) as a:
        peer.stop()
        try:
            def fetch():
                with raises(xfer.TimeoutError, "XFER_ERR_TIMEOUT"):
                    a.fetch(addr=peer.listen_addr, timeout=1.5)
            share, took = _pace("Agent.fetch", fetch)
            assert took >= 1.4
            _assert_released("Agent.fetch", share)
        finally:
            peer.signal(signal.SIGCONT)
        assert a.fetch(addr=peer.listen_addr) == peer.name
