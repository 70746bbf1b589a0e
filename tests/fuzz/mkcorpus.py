#!/usr/bin/env python3
# mkcorpus.py - writes the seed corpora of the fuzz harnesses (corpus/<target>/)
# from the wire formats of docs/; run it after a format changes, commit the files.
import base64
import json
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---- metadata (core/metadata.c) -------------------------------------------

def tcp_info(port=4791, addr=(127, 0, 0, 1)):
    """docs/wire-tcp.md, tcp connection info: 24 bytes."""
    return (struct.pack("<I", 0x50435458) + bytes([1, 4]) +
            struct.pack(">H", port) + bytes(addr) + bytes(12))


def b64(b):
    return base64.b64encode(b).decode()


def region(addr, length, key, access="rw", typ="DRAM", pub=None):
    r = {"addr": "0x%x" % addr, "len": length, "type": typ, "dev": 0,
         "key": "0x%016x" % key, "pub": {"tcp": ""} if pub is None else pub}
    if access is not None:
        r["access"] = access
    return r


def md(name="peer", epoch=0x17d2a3b4c5d6e7f8, backends=None, regions=None):
    m = {"format": "xfer-md", "version": 1, "agent": name,
         "epoch": "0x%x" % epoch}
    if backends is not None:
        m["backends"] = backends
    if regions is not None:
        m["regions"] = regions
    return json.dumps(m, separators=(",", ":"))


TCP = [{"plugin": "tcp", "conn": b64(tcp_info())}]
SEP = "\n#\n"

write("metadata", "full", md(backends=TCP, regions=[
    region(0x7f0000001000, 4096, 0x1234567890abcdef),
    region(0x7f0000100000, 1 << 20, 0x0fedcba987654321, "r")]))
write("metadata", "conn-only", md(backends=TCP))
# "@UDS_CONN@": the harness's own uds connection info (this host's).
UDS_PUB = b64(struct.pack("<IBBHQQ", 0x4d445558, 1, 1, 0, 7, 64))
write("metadata", "two-backends", md(backends=TCP + [
    {"plugin": "uds", "conn": "@UDS_CONN@"}], regions=[
    region(0x1000, 64, 0x42, "w", pub={"tcp": "", "uds": UDS_PUB})]))
write("metadata", "uds-other-host", md(backends=[
    {"plugin": "uds", "conn": b64(bytes(224))}], regions=[
    region(0x1000, 64, 0x42, pub={"uds": b64(bytes(24))})]))
write("metadata", "old-no-access", md(backends=TCP, regions=[
    region(0x2000, 128, 0x43, access=None)]))
write("metadata", "vram", md(backends=TCP, regions=[
    region(0x3000, 256, 0x44, typ="VRAM")]))
write("metadata", "trailing-nul", md(backends=TCP) + "\0")
# Loaded in order: a full blob, a partial one of the same epoch that
# merges, a newer epoch that replaces, an older one that is refused.
write("metadata", "merge-replace", SEP.join([
    md(backends=TCP, regions=[region(0x1000, 64, 0x51)]),
    md(regions=[region(0x2000, 64, 0x52)]),
    md(epoch=0x17d2a3b4c5d6e7f9, backends=TCP),
    md(epoch=0x17d2a3b4c5d6e7f0, backends=TCP)]))
write("metadata", "redefine-key", SEP.join([
    md(backends=TCP, regions=[region(0x1000, 64, 0x51)]),
    md(regions=[region(0x1000, 65, 0x51)])]))
write("metadata", "two-agents", SEP.join([
    md(name="a", backends=TCP), md(name="b", backends=TCP,
                                   regions=[region(0x1000, 8, 9)])]))

# ---- config (core/config.c) --------------------------------------------------
# Byte 0: 0 spec string, 1 JSON object, 2 one value for every type.

for name, text in [
        ("spec-plain", "\0tcp"),
        ("spec-params", "\0fz:ur=8080,b=1"),
        ("spec-escape", "\0fz:str=posix\\,cma"),
        ("spec-quoted", '\0fz:str="tcp;ofi_rxm",path="a\\"b"'),
        ("spec-every-type", '\0fz:b=yes,i=-0x10,ir=3,u=18446744073709551615,'
                            'ur=65535,s=16M,sr=4096,str="a,b\\"c",path=/x'),
        ("json-object", '\1{"ur": 0, "b": true}'),
        ("json-every-type", '\1{"b": true, "i": -5, "ir": 5, "u": 7, '
                            '"ur": "0x50", "s": "64K", "sr": 1048576, '
                            '"str": "x", "path": ""}'),
        ("value-size", "\2" "64K"),
        ("value-hex", "\2" "0x10"),
        ("value-bool", "\2" "off"),
        ("value-negative", "\2" "-9223372036854775808")]:
    write("config", name, text)

# ---- listener (core/listener.c, docs/wire-listener.md) ------------------------

def ls_frame(typ, payload=b"", magic=0x58464d44, version=1, length=None):
    if isinstance(payload, str):
        payload = payload.encode()
    n = len(payload) if length is None else length
    return struct.pack(">IHHI", magic, version, typ, n) + payload


blob = md(name="lpeer", backends=TCP, regions=[region(0x1000, 64, 0x61)])
write("listener", "send", ls_frame(1, blob))
write("listener", "fetch-any", ls_frame(2))
write("listener", "fetch-self", ls_frame(2, "fz-listener"))
write("listener", "fetch-other", ls_frame(2, "someone"))
write("listener", "invalidate", ls_frame(3, "lpeer"))
write("listener", "send-fetch-invalidate",
      ls_frame(1, blob) + ls_frame(2) + ls_frame(3, "lpeer"))
write("listener", "send-bad-blob", ls_frame(1, '{"format":"xfer-md"}') +
      ls_frame(2))
write("listener", "truncated", ls_frame(1, blob)[:40])
write("listener", "bad-magic", ls_frame(2, magic=0x58464d45))
write("listener", "too-long", ls_frame(2, length=4096))

# listener-auth: byte 0 bit 0, the harness authenticates first (as
# "fz-client"); without it, what a client without the secret sends.
write("listener-auth", "fetch", b"\1" + ls_frame(2))
write("listener-auth", "invalidate-self", b"\1" + ls_frame(3, "fz-client"))
write("listener-auth", "invalidate-other", b"\1" + ls_frame(3, "lpeer"))
write("listener-auth", "send-unsigned", b"\1" + ls_frame(1, blob))
write("listener-auth", "no-auth-fetch", b"\0" + ls_frame(2))
write("listener-auth", "no-auth-hello", b"\0" + ls_frame(
    4, b"\x4c" * 32 + struct.pack(">Q", 9) + b"stranger"))
write("listener-auth", "auth-without-hello", b"\0" + ls_frame(5, bytes(32)))
write("listener-auth", "second-hello", b"\1" + ls_frame(
    4, b"\x4c" * 32 + struct.pack(">Q", 7) + b"fz-client"))

# ---- stream target (plugins/common, docs/wire-tcp.md) ----------------------------
# Byte 0: flags (1: the harness sends a HELLO first; 2: deregister region
# DR at the end; 4: the harness reads slowly).  Tokens: 7 characters and a byte k (fuzz-stream-target.c).
HELLO, HELLO_ACK, WRITE, ACK, READ_REQ, READ_RESP, NOTIF = 1, 2, 3, 4, 5, 6, 7
WRITEV = 10
MAGIC = 0x4d52545352454658
LAST = 1


def tok(name, k=0):
    return name.encode() + bytes([k])


def u64(v):
    return v if isinstance(v, bytes) else struct.pack("<Q", v)


def hdr(typ, flags=0, seg=0, tag=0, arg0=0, arg1=0, length=0):
    return (struct.pack("<BBHI", typ, flags, 0, seg) + u64(tag) + u64(arg0) +
            u64(arg1) + u64(length))


VERSION = 3


def hello(name=b"peer", epoch=tok("@EPOCH@")):
    return hdr(HELLO, seg=VERSION, tag=MAGIC, arg0=1, arg1=epoch,
               length=len(name)) + name


def write_frame(tag, key, addr, data, seg=0, flags=LAST):
    return hdr(WRITE, flags, seg, tag, key, addr, len(data)) + data


def writev(tag, entries, seg=0, flags=LAST):
    table = b"".join(u64(k) + u64(a) + u64(len(d)) for k, a, d in entries)
    data = b"".join(d for _, _, d in entries)
    return (hdr(WRITEV, flags, seg, tag, len(entries), len(data),
                len(table) + len(data)) + table + data)


def read_req(tag, key, addr, n, seg=0, flags=LAST):
    return hdr(READ_REQ, flags, seg, tag, key, addr, n)


def notif(msg):
    return hdr(NOTIF, length=len(msg)) + msg


K, A, E = "@KEY_", "@ADR_", "@END_"
write("stream-target", "hello-only", b"\1")
write("stream-target", "hello-notif", b"\0" + hello() + notif(b"hi there"))
write("stream-target", "stale-epoch", b"\0" + hello(epoch=5) + notif(b"x"))
write("stream-target", "write-one", b"\1" + write_frame(
    7, tok(K + "RW"), tok(A + "RW", 2), b"0123456789abcdef"))
write("stream-target", "write-two-frames", b"\1" + write_frame(
    8, tok(K + "RW"), tok(A + "RW"), b"a" * 32, 0, 0) + write_frame(
    8, tok(K + "RW"), tok(A + "RW", 4), b"b" * 32, 1, LAST))
write("stream-target", "writev", b"\1" + writev(9, [
    (tok(K + "RW"), tok(A + "RW"), b"x" * 16),
    (tok(K + "RW"), tok(A + "RW", 1), b"y" * 16),
    (tok(K + "WO"), tok(A + "WO", 8), b"z" * 40)]) + notif(b"after"))
write("stream-target", "writev-refused", b"\1" + writev(10, [
    (tok(K + "RO"), tok(A + "RO"), b"x" * 8),
    (tok(K + "RW"), tok(E + "RW", 0), b"y" * 8)]))
write("stream-target", "write-out-of-bounds", b"\1" + write_frame(
    11, tok(K + "RW"), tok(E + "RW", 1), b"q" * 24))
write("stream-target", "reads", b"\1" + read_req(
    12, tok(K + "RW"), tok(A + "RW"), 64, 0, 0) + read_req(
    12, tok(K + "RO"), tok(A + "RO", 3), 16, 1, LAST) + notif(b"read done"))
write("stream-target", "read-refused", b"\1" + read_req(
    13, tok(K + "WO"), tok(A + "WO"), 8) + read_req(
    14, tok(K + "RW"), tok(E + "RW", 0), 1) + read_req(
    15, 0x1234, tok(A + "RW"), 8))
write("stream-target", "read-out-of-bounds", b"\1" + read_req(
    20, tok(K + "RW"), tok(E + "RW", 1), 64))
write("stream-target", "dereg-queued-reads", b"\7" + b"".join(read_req(
    16, tok(K + "DR"), tok(A + "DR"), 4096, i, LAST if i == 19 else 0)
    for i in range(20)))
write("stream-target", "dereg-during-write", b"\3" + hdr(
    WRITE, LAST, 0, 17, tok(K + "DR"), tok(A + "DR"), 1024) + b"w" * 100)
write("stream-target", "slow-reader", b"\5" + b"".join(read_req(
    19, tok(K + "RW"), tok(A + "RW"), 4096, i, LAST if i == 39 else 0)
    for i in range(40)) + notif(b"behind the reads"))
write("stream-target", "truncated-body", b"\1" + hdr(
    WRITE, LAST, 0, 18, tok(K + "RW"), tok(A + "RW"), 200) + b"t" * 50)

# ---- stream initiator --------------------------------------------------------------
# Byte 0: op (0 WRITE, 1 READ, 2 notification, 3 WRITE + notification) |
# 4 (the harness answers HELLO_ACK first) | 8 (a second request behind the
# first; "@TAG@@@" + k is the first's id + k); byte 1: descriptors - 1;
# one length byte each (c & 0x3f) * 16 + 1 bytes; then the answers.
TAG = tok("@TAG@@@")


def status(st):
    return struct.pack("<q", st)


def hello_ack(st=0, epoch=tok("@EPOCH@")):
    return hdr(HELLO_ACK, seg=VERSION, tag=MAGIC, arg0=epoch,
               arg1=status(st))


def ack(st=0, seg=0, frames=1):
    return hdr(ACK, 0, seg, TAG, status(st), frames)


def read_resp(seg, n, st=0):
    data = (bytes(range(256)) * (n // 256 + 1))[:n] if st == 0 else b""
    return hdr(READ_RESP, 0, seg, TAG, status(st), 0, len(data)) + data


write("stream-initiator", "write-ack", b"\4\0\0" + ack())
write("stream-initiator", "write3-ack", b"\4\2\0\1\x42" + ack(frames=3))
write("stream-initiator", "write-refused", b"\4\2\0\1\2" +
      ack(-9, seg=1, frames=3))
write("stream-initiator", "write-notif", b"\7\0\3" + ack())
write("stream-initiator", "explicit-hello-ack", b"\0\0\0" + hello_ack() +
      ack())
write("stream-initiator", "hello-refused", b"\0\0\0" + hello_ack(-6))
write("stream-initiator", "read", b"\5\0\1" + read_resp(0, 17))
write("stream-initiator", "read2-refused", b"\5\1\1\0" + read_resp(0, 17) +
      read_resp(1, 1, -9))
write("stream-initiator", "read-large", b"\5\0\x80" + read_resp(0, 16385))
write("stream-initiator", "read-overlong-answer", b"\5\0\1" + hdr(
    READ_RESP, 0, 0, TAG, status(0), 0, 40) + b"Z" * 40)
write("stream-initiator", "notif-alone", b"\6\0\0")
write("stream-initiator", "wrong-tag", b"\4\0\0" +
      hdr(ACK, 0, 0, 12345, status(0), 1))
write("stream-initiator", "two-writes", b"\x0c\0\0" + ack() +
      hdr(ACK, 0, 0, tok("@TAG@@@", 1), status(0), 1))
write("stream-initiator", "two-reads-out-of-order", b"\x0d\0\0" + hdr(
    READ_RESP, 0, 0, tok("@TAG@@@", 1), status(0), 0, 1) + b"z" +
    read_resp(0, 1))
write("stream-initiator", "read-short", b"\5\0\1" + read_resp(0, 17)[:50])

if __name__ == "__main__" and len(sys.argv) > 1:
    print("usage: %s (writes corpus/ next to itself)" % sys.argv[0])
