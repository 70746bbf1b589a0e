"""Smoke: the module imports the libxfer it was built against, and one
agent pair in this process moves bytes."""
import numpy as np

import xfer


def test_version_matches_build():
    assert xfer.version().split(".")[:2] == ["0", "1"]


def test_write_in_process():
    rng = np.random.default_rng(7)
    with xfer.Agent("pt-t", backends=["tcp"]) as t, \
            xfer.Agent("pt-i", backends=["tcp"]) as i:
        dst = np.zeros(1 << 16, np.uint8)
        src = rng.integers(0, 256, 1 << 16, dtype=np.uint8)
        t.register(dst)
        i.register(src)
        assert i.load_metadata(t.metadata()) == "pt-t"
        (region,) = i.remote_regions("pt-t")
        with i.transfer("WRITE", src, region, "pt-t", notif=b"n") as x:
            x.post()
            assert x.wait(10)
        assert np.array_equal(src, dst)
        assert next(t.notifs(timeout=5)) == xfer.Notif("pt-i", b"n")
