"""The example examples/python/numpy_pair.py runs as a user runs it: its
own two processes move a NumPy array, and it says the bytes arrived."""
import os
import re
import subprocess
import sys

import pytest

EXAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                       os.pardir, os.pardir, "examples", "python",
                       "numpy_pair.py")


def test_numpy_pair_example():
    if not os.path.isfile(EXAMPLE):
        pytest.skip("examples/python/numpy_pair.py is not in this tree")
    # Generous bound: the example takes about a second on a quiet
    # machine; the bound is there so a hang fails instead of blocking.
    done = subprocess.run([sys.executable, EXAMPLE], capture_output=True,
                          text=True, timeout=120)
    out = done.stdout
    assert done.returncode == 0, "exit %d\nstdout:\n%s\nstderr:\n%s" % (
        done.returncode, out, done.stderr)
    # Both processes report: the initiator's post completed, and the
    # target got the notification and found every byte.
    assert re.search(r"^initiator: done over (uds|tcp): True$", out, re.M), out
    assert ("target: b'array sent' from initiator, 4194304 bytes intact\n"
            in out), out
