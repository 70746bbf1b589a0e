"""_mem.py - Python objects as descriptor lists: buffers, tensors, raw
addresses and remote regions, and the registrations that keep them.

What can describe memory:
  * any object with the buffer protocol (bytearray, memoryview, NumPy
    arrays, mmap, the buffers of Agent.alloc), C-contiguous: the whole
    of it;
  * an object with data_ptr(), element_size() and nelement() (a torch
    tensor; torch itself is never imported): the whole of it, DRAM for a
    CPU tensor, VRAM on its device index for a CUDA one;
  * (obj, offset, length): length bytes of obj from byte offset;
  * (addr, length) or (addr, length, dev) of ints: raw memory;
  * a Region of a remote agent (Agent.remote_regions), or (Region,
    offset, length): remote memory.
"""
from collections import namedtuple

from ._native import ffi, lib

DRAM = lib.XFER_MEM_DRAM
VRAM = lib.XFER_MEM_VRAM

ACCESS = {"r": lib.XFER_ACCESS_READ, "w": lib.XFER_ACCESS_WRITE,
          "rw": lib.XFER_ACCESS_RW}


class Region(namedtuple("Region", "addr len type dev access")):
    """One registered region of a remote agent, from its metadata.
    access: "r", "w" or "rw", what the peer lets us do there."""

    __slots__ = ()

    def __getitem__(self, key):
        # Region[a:b] is the bytes a..b of the region, as a descriptor.
        if isinstance(key, slice):
            start, stop, step = key.indices(self.len)
            if step != 1:
                raise ValueError("a region slice must be contiguous")
            return (self, start, max(stop - start, 0))
        return super().__getitem__(key)


def _torch_like(obj):
    return (hasattr(obj, "data_ptr") and hasattr(obj, "element_size")
            and hasattr(obj, "nelement"))


def span(obj, writable):
    """(addr, length, type, dev, keepalive) of the whole of obj: the
    memory it exposes, and what must stay alive while it is used."""
    if isinstance(obj, Region):
        return obj.addr, obj.len, obj.type, obj.dev, None
    if _torch_like(obj) and not isinstance(obj, memoryview):
        if hasattr(obj, "is_contiguous") and not obj.is_contiguous():
            raise ValueError("a tensor must be contiguous to be described "
                             "as one piece of memory (call .contiguous())")
        dev = getattr(obj, "device", None)
        kind = getattr(dev, "type", "cpu")
        if kind == "cpu":
            mtype, devno = DRAM, 0
        elif kind == "cuda":
            mtype, devno = VRAM, dev.index or 0
        else:
            raise ValueError("tensors on device type %r are not supported "
                             "(cpu and cuda are)" % kind)
        return (int(obj.data_ptr()), int(obj.element_size() * obj.nelement()),
                mtype, devno, obj)
    if hasattr(obj, "_c_buf"):
        # Agent.alloc's SharedBuffer: Python gives a class of ours the
        # buffer protocol (__buffer__) only from 3.12 on, so it is
        # described by the cffi buffer it holds (ValueError once freed).
        obj = obj._c_buf()
    try:
        cd = ffi.from_buffer(obj, require_writable=writable)
    except (TypeError, BufferError, ValueError) as e:
        # A writable view refused: bytes and memoryview say BufferError,
        # NumPy ValueError ("buffer source array is read-only"), so ask
        # again for a read-only one to tell read-only from the rest.
        if writable and _readable(obj):
            raise ValueError("%s is read-only, and this memory may be "
                             "written (register it with access='r', "
                             "or pass a writable buffer)"
                             % type(obj).__name__) from None
        if isinstance(e, TypeError):
            raise TypeError("%s does not describe memory: give an object "
                            "with the buffer protocol, a tensor, (obj, "
                            "offset, length) or (addr, length[, dev])"
                            % type(obj).__name__) from None
        raise ValueError("%s: %s (only C-contiguous buffers can be "
                         "described)" % (type(obj).__name__, e)) from None
    return int(ffi.cast("uintptr_t", cd)), len(cd), DRAM, 0, cd


def _readable(obj):
    try:
        ffi.from_buffer(obj)
    except (TypeError, BufferError, ValueError):
        return False
    return True


def piece(item, writable):
    """(addr, length, type, dev, keepalive) of one descriptor."""
    if isinstance(item, tuple) and not isinstance(item, Region):
        if len(item) in (2, 3) and all(isinstance(x, int) for x in item):
            addr, length = item[0], item[1]
            dev = item[2] if len(item) == 3 else 0
            if addr < 0 or length < 0 or dev < 0:
                raise ValueError("(addr, length, dev) must not be negative: "
                                 "%r" % (item,))
            return addr, length, DRAM, dev, None
        if len(item) == 3 and isinstance(item[1], int) and \
                isinstance(item[2], int):
            addr, total, mtype, dev, keep = span(item[0], writable)
            off, length = item[1], item[2]
            if off < 0 or length < 0 or off + length > total:
                raise ValueError("bytes %d..%d are outside the %d bytes of "
                                 "%s" % (off, off + length, total,
                                         type(item[0]).__name__))
            return addr + off, length, mtype, dev, keep
        raise TypeError("a descriptor tuple is (obj, offset, length) or "
                        "(addr, length[, dev]), not %r" % (item,))
    return span(item, writable)


class DList:
    """A descriptor list in C memory (xfer_dlist_t) and what it keeps
    alive.  items: one object, or a list or tuple of descriptors."""

    __slots__ = ("c", "descs", "count", "keep", "lengths", "type")

    def __init__(self, items, writable=False, mem_type=None):
        if isinstance(items, list):
            seq = items
        else:
            seq = [items]
        n = len(seq)
        self.descs = ffi.new("xfer_desc_t[]", max(n, 1))
        self.keep = []
        self.lengths = []
        mtype = mem_type
        for i, item in enumerate(seq):
            addr, length, t, dev, keep = piece(item, writable)
            if mtype is None:
                mtype = t
            elif t != mtype and mem_type is None:
                raise ValueError("descriptor %d is %s memory and descriptor "
                                 "0 is %s: one list holds one memory type"
                                 % (i, _tname(t), _tname(mtype)))
            d = self.descs[i]
            d.addr = addr
            d.len = length
            d.dev = dev
            self.lengths.append(length)
            if keep is not None:
                self.keep.append(keep)
        self.type = DRAM if mtype is None else mtype
        self.count = n
        self.c = ffi.new("xfer_dlist_t *")
        self.c.type = self.type
        self.c.count = n
        self.c.descs = self.descs


def _tname(t):
    return "VRAM" if t == VRAM else "DRAM"


def access_bits(access):
    try:
        return ACCESS[access]
    except KeyError:
        raise ValueError("access must be 'r', 'w' or 'rw', not %r"
                         % (access,)) from None


def access_name(bits):
    return {lib.XFER_ACCESS_READ: "r", lib.XFER_ACCESS_WRITE: "w"}.get(
        bits, "rw" if bits == lib.XFER_ACCESS_RW else "")
