"""Finalization order and closing under traffic: what a garbage
collector or a closing agent may free, and when.  Each scenario runs in
its own interpreter (a crash there is a failed test here, not a dead
test run).  Found by review: the collector ran an agent's finalizer
before its transfer's, which then released a request the agent had
freed (a crash at exit); close() dropped registered buffers before the
library stopped receiving a peer's WRITEs into them (heap corruption)."""
import os
import subprocess
import sys
import textwrap

import numpy as np

import xfer

HERE = os.path.dirname(os.path.abspath(__file__))


def _run(code, timeout=120):
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                       capture_output=True, text=True, timeout=timeout,
                       cwd=HERE)
    print(r.stdout, r.stderr)
    assert r.returncode == 0, "exited %d: %s" % (r.returncode,
                                                 r.stderr[-2000:])
    return r.stdout


def test_agent_and_transfer_collected_together():
    """A connector object in a reference cycle holding its agent and a
    transfer, collected by gc.collect(); then the same at interpreter
    exit with a module-level function (which keeps module globals in a
    cycle until the final collection)."""
    out = _run('''
        import gc, os, numpy as np, xfer
        tag = str(os.getpid())
        b = xfer.Agent("b" + tag, backends=["tcp"])
        b.register(np.zeros(4096, np.uint8))
        class Connector:
            def __init__(self):
                self.agent = xfer.Agent("a" + tag, backends=["tcp"])
                self.agent.load_metadata(b.metadata())
                self.mem = np.ones(4096, np.uint8)
                self.agent.register(self.mem)
                (r,) = self.agent.remote_regions(b.name)
                self.x = self.agent.transfer("WRITE", self.mem, r, b.name)
                self.p = self.agent.prep([self.mem])
                self.on_done = self.done      # self -> self
            def done(self):
                pass
        for _ in range(5):
            c = Connector()
            c.x.post()
            assert c.x.wait(30)
            del c
            gc.collect()
        print("collected")
        # And at exit, nothing closed by hand.
        a = xfer.Agent("e" + tag, backends=["tcp"])
        a.load_metadata(b.metadata())
        m = np.ones(4096, np.uint8)
        a.register(m)
        x = a.transfer("WRITE", m, a.remote_regions(b.name)[0], b.name)
        x.post()
        x.wait(30)
        def main():
            pass
        print("exiting")
    ''')
    assert "collected" in out and "exiting" in out


def test_close_while_peer_writes():
    """A peer keeps WRITing into memory the closing agent registered
    from a temporary (kept alive only by the agent): close() must keep
    it until the library stopped, or the WRITEs land in freed heap."""
    out = _run('''
        import os, threading, time, numpy as np, xfer
        tag = str(os.getpid())
        N = 48 << 10
        for it in range(15):
            rx = xfer.Agent("rx%s-%d" % (tag, it), backends=["tcp"])
            rx.register(np.zeros(N, np.uint8))
            tx = xfer.Agent("tx%s-%d" % (tag, it), backends=["tcp"])
            tx.load_metadata(rx.metadata())
            (region,) = tx.remote_regions(rx.name)
            src = np.full(N, 0xAB, np.uint8)
            tx.register(src)
            stop = []
            def writer():
                x = tx.transfer("WRITE", src, region, rx.name)
                while not stop:
                    try:
                        x.post()
                        x.wait(5)
                    except xfer.XferError:
                        return
            t = threading.Thread(target=writer)
            t.start()
            time.sleep(0.03)
            rx.close()
            # Fresh allocations where the freed array was must stay zero.
            for _ in range(50):
                assert not any(np.zeros(N, np.uint8).any() for _ in range(8))
            stop.append(1)
            t.join()
            tx.close()
        print("ok")
    ''')
    assert "ok" in out


def test_shared_buffer_free_with_a_view(names, raises):
    """free() while a NumPy view of the buffer lives is BusyError (a view
    used after free() would touch unmapped memory); once the view is
    gone it frees."""
    with xfer.Agent(names("a"), backends=["uds"]) as a:
        buf = a.alloc(1 << 16)
        view = np.frombuffer(buf.buffer, np.uint8)
        view[:4] = 7
        with raises(xfer.BusyError, "XFER_ERR_BUSY", "1 other reference",
                    "drop them before free()"):
            buf.free()
        assert view[:4].tolist() == [7, 7, 7, 7]
        del view
        buf.free()
        with np.testing.assert_raises(ValueError):
            buf.buffer
