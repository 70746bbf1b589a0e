"""peer.py - the other process of the two-process tests: an xfer agent
driven by JSON lines on stdin, answering one JSON line per command on
stdout.

The tests run it with subprocess (sys.executable peer.py), never by
fork, so the two agents share nothing but the wire.  pattern() is here
because both processes must derive the same bytes from a seed: the side
that did not write the data checks it against the seed it was told.

Commands (each a JSON object with "cmd"; the answer has "error" and
"msg" when the command raised):
  init      name, backends, listen, progress_thread -> name, pid,
            listen_addr
  reg       size, alloc (memory from Agent.alloc), access, seed (fill
            with pattern(seed), else zeros) -> id, addr, len
  dereg     id: deregister that buffer (it stays allocated)
  md        -> md (base64 of metadata())
  load      md -> name;  fetch  addr -> name
  fill      id, seed, off, len: pattern(seed, len) at off
  check     id, seed, off, len -> ok, first_bad
  expect    count, timeout, verify: take count notifications as they
            come; with verify, each whose message is a JSON
            {"id", "seed", "off", "len"} has its bytes checked the
            moment it is seen -> notifs [[sender, base64]], bad [...]
  send_notif to, msgs (base64 list): sent alone, in order
  write     to, id, off, len, raddr (a remote address), notif:
            WRITE and wait -> ok, or error
  quit
"""
import base64
import json
import os
import sys

import numpy as np


def pattern(seed, n):
    """n pseudo-random bytes derived from seed, the same in every
    process (NumPy's PCG64 is specified bit for bit)."""
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8)


def first_mismatch(got, want):
    """Index of the first differing byte, or -1."""
    bad = np.flatnonzero(got != want)
    return int(bad[0]) if bad.size else -1


class Peer:
    """The program's state: one agent and the buffers it registered."""

    def __init__(self):
        self.agent = None
        self.bufs = {}
        self.regs = {}

    def init(self, name, backends, listen=None, progress_thread=True):
        import xfer
        self.agent = xfer.Agent(name, backends=backends, listen=listen,
                                progress_thread=progress_thread)
        return {"name": self.agent.name, "pid": os.getpid(),
                "listen_addr": self.agent.listen_addr}

    def reg(self, size, alloc=False, access="rw", seed=None):
        if alloc:
            mem = self.agent.alloc(size)
            arr = np.frombuffer(mem.buffer, np.uint8)[:size]
            reg = self.agent.register(mem, access=access)
        else:
            arr = np.zeros(size, np.uint8)
            reg = self.agent.register(arr, access=access)
        if seed is not None:
            arr[:] = pattern(seed, size)
        i = len(self.bufs)
        self.bufs[i] = arr
        self.regs[i] = reg
        return {"id": i, "addr": arr.ctypes.data, "len": size}

    def dereg(self, id):
        self.regs.pop(id).deregister()
        return {}

    def md(self):
        return {"md": base64.b64encode(self.agent.metadata()).decode()}

    def load(self, md):
        return {"name": self.agent.load_metadata(base64.b64decode(md))}

    def fetch(self, addr):
        return {"name": self.agent.fetch(addr=addr)}

    def fill(self, id, seed, off, len):
        self.bufs[id][off:off + len] = pattern(seed, len)
        return {}

    def check(self, id, seed, off, len):
        bad = first_mismatch(self.bufs[id][off:off + len], pattern(seed, len))
        return {"ok": bad < 0, "first_bad": bad}

    def expect(self, count, timeout, verify=False):
        got, bad = [], []
        for n in self.agent.notifs(timeout=timeout):
            if verify:
                # Checked now, before the next notification is taken:
                # the data must be there when its notification is seen.
                d = json.loads(n.msg)
                r = self.check(d["id"], d["seed"], d["off"], d["len"])
                if not r["ok"]:
                    bad.append({"notif": d, "first_bad": r["first_bad"]})
            got.append([n.sender, base64.b64encode(n.msg).decode()])
            if len(got) == count:
                break
        return {"notifs": got, "bad": bad}

    def send_notif(self, to, msgs):
        for m in msgs:
            self.agent.send_notif(to, base64.b64decode(m))
        return {}

    def write(self, to, id, off, len, raddr, notif=None):
        arr = self.bufs[id]
        note = base64.b64decode(notif) if notif is not None else None
        with self.agent.transfer("WRITE", (arr, off, len), (raddr, len),
                                 to, notif=note) as x:
            x.post()
            return {"ok": x.wait(30)}


def main():
    peer = Peer()
    for line in sys.stdin:
        req = json.loads(line)
        cmd = req.pop("cmd")
        if cmd == "quit":
            if peer.agent is not None:
                peer.agent.close()
            print(json.dumps({}), flush=True)
            return
        try:
            out = getattr(peer, cmd)(**req)
        except Exception as e:
            out = {"error": type(e).__name__, "msg": str(e),
                   "status": getattr(e, "status", None)}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
