"""Tensors without torch: an object with data_ptr(), element_size(),
nelement(), is_contiguous() and device is memory xfer can register and
move, and the package never imports torch to find out.  A real CPU
tensor is tried when torch happens to be installed."""
import sys
import types

import numpy as np
import pytest

import xfer
from peer import pattern, first_mismatch


class FakeTensor:
    """The part of torch.Tensor xfer reads, over a NumPy array."""

    def __init__(self, arr, device="cpu", index=None):
        self.arr = arr
        self.device = types.SimpleNamespace(type=device, index=index)

    def data_ptr(self):
        return self.arr.ctypes.data

    def element_size(self):
        return self.arr.itemsize

    def nelement(self):
        return self.arr.size

    def is_contiguous(self):
        return self.arr.flags.c_contiguous


def test_fake_tensor_two_processes(agent, spawn_peer, backend, seed,
                                   region_at):
    """WRITE from a float32 'tensor' and READ into another, with a peer
    process; a tensor registered with no other reference stays alive."""
    count = 50000                   # float32: 200,000 bytes
    nbytes = count * 4
    peer = spawn_peer([backend])
    buf = peer.reg(nbytes)
    assert agent.load_metadata(peer.metadata()) == peer.name
    region = region_at(agent, peer.name, buf["addr"])

    src = FakeTensor(pattern(seed, nbytes).view(np.float32))
    reg = agent.register(src)
    assert reg.obj is src
    assert reg.regions == [(src.data_ptr(), nbytes)]
    with agent.transfer("WRITE", src, region, peer.name) as x:
        assert x.nbytes == nbytes
        x.post()
        assert x.wait(30)
    r = peer.check(buf["id"], seed, 0, nbytes)
    assert r["ok"], "byte %d differs (seed %d)" % (r["first_bad"], seed)

    agent.register(FakeTensor(np.zeros(count, np.float32)))
    dst = agent.registrations[-1].obj
    with agent.transfer("READ", dst, region, peer.name) as x:
        x.post()
        assert x.wait(30)
    bad = first_mismatch(dst.arr.view(np.uint8), pattern(seed, nbytes))
    assert bad < 0, "byte %d differs (seed %d)" % (bad, seed)
    # Pieces of a tensor, as (tensor, byte offset, length).
    with agent.transfer("WRITE", [(src, 0, 8), (src, 400, 4)],
                        [region[100:108], region[0:4]], peer.name) as x:
        x.post()
        assert x.wait(30)


def test_fake_tensor_refusals(names, raises):
    with xfer.Agent(names("a"), backends=["tcp"]) as a:
        strided = FakeTensor(np.zeros((4, 4), np.float32)[:, 1])
        with raises(ValueError, None, "must be contiguous",
                    ".contiguous()"):
            a.register(strided)
        with raises(ValueError, None, "device type 'mps'",
                    "cpu and cuda"):
            a.register(FakeTensor(np.zeros(4, np.float32), device="mps"))
        # A CUDA tensor is VRAM, which tcp does not carry: the library
        # refuses it, naming the type.
        with raises(xfer.NotSupportedError, "XFER_ERR_NOT_SUPPORTED",
                    "VRAM"):
            a.register(FakeTensor(np.zeros(4, np.float32), device="cuda",
                                  index=0))
        assert a.registrations == []


def test_torch_not_imported():
    """Describing tensors never imports torch (it may take seconds and
    gigabytes): after every test above, it is not loaded unless the test
    below, or the user, imported it."""
    if "torch" in sys.modules:
        pytest.skip("torch was imported by something else in this run")
    assert "torch" not in sys.modules


def test_real_cpu_tensor(names, spawn_peer, seed, region_at, raises):
    """A real torch CPU tensor, where torch is installed (Debian's
    python3-torch is not among the suite's dependencies)."""
    torch = pytest.importorskip(
        "torch", reason="torch is not installed here (python3-torch is "
        "not a dependency of this suite); the FakeTensor tests cover the "
        "same calls")
    n = 4096
    peer = spawn_peer(["tcp"])
    buf = peer.reg(n)
    with xfer.Agent(names("a"), backends=["tcp"]) as a:
        a.load_metadata(peer.metadata())
        region = region_at(a, peer.name, buf["addr"])
        t = torch.from_numpy(pattern(seed, n).copy())
        a.register(t)
        with a.transfer("WRITE", t, region, peer.name) as x:
            x.post()
            assert x.wait(30)
        r = peer.check(buf["id"], seed, 0, n)
        assert r["ok"], "byte %d differs (seed %d)" % (r["first_bad"], seed)
        back = torch.zeros(n // 4, dtype=torch.float32)
        a.register(back)
        with a.transfer("READ", back, region, peer.name) as x:
            x.post()
            assert x.wait(30)
        bad = first_mismatch(back.numpy().view(np.uint8), pattern(seed, n))
        assert bad < 0, "byte %d differs (seed %d)" % (bad, seed)
        with raises(ValueError, None, "must be contiguous"):
            a.register(torch.zeros(8, 8).t())
