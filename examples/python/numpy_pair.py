"""numpy_pair.py - two processes move a NumPy array with a notification.

`python3 numpy_pair.py` is the target: it registers an empty array and
starts this script again as the initiator, given the target's listener
address.  The initiator WRITEs its array there with a notification, which
arrives after the data: the target checks the bytes when it comes.
"""
import subprocess
import sys

import numpy as np
import xfer

N = 1 << 20
if len(sys.argv) == 1:  # the target
    with xfer.Agent("target", backends=["uds", "tcp"], listen=True) as a:
        dst = np.zeros(N, np.uint32)
        a.register(dst)
        peer = subprocess.Popen([sys.executable, __file__, a.listen_addr])
        n = next(a.notifs(timeout=30), None)
        ok = n is not None and np.array_equal(dst, np.arange(N, dtype=np.uint32))
        print("target: %r from %s, %d bytes %s" % (
            n.msg, n.sender, dst.nbytes, "intact" if ok else "WRONG"))
        sys.exit(0 if ok and peer.wait() == 0 else 1)
with xfer.Agent("initiator", backends=["uds", "tcp"]) as a:  # the initiator
    src = np.arange(N, dtype=np.uint32)
    a.register(src)
    target = a.fetch(addr=sys.argv[1])
    (region,) = a.remote_regions(target)
    with a.transfer("WRITE", src, region, target, notif=b"array sent") as x:
        x.post()
        print("initiator: done over %s: %s" % (x.backend, x.wait(10)))
