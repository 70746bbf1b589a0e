"""post_overhead.py - what Python adds to a post of a prepared request.

The same agents, prepared 8 B WRITE and loops as bench/py-post-c.c, timed
the same way (one clock reading before and after each batch, so no clock
call is billed to a post), printed in the same form:
bench/compare-python.sh runs the two in turns and subtracts.

    post_wait_ns   x.post(); x.wait()            per iteration
    post_ns        if not x.post(): x.wait()     per iteration (with
                   memory from Agent.alloc over uds, every post completes
                   inside the call: this is the post alone)
"""
import argparse
import platform
import statistics
import sys
import time

import xfer

PATTERN = b"8 bytes!"


def post_wait(x, n):
    t0 = time.perf_counter_ns()
    for _ in range(n):
        x.post()
        x.wait()
    return (time.perf_counter_ns() - t0) / n


def post_alone(x, n):
    """ns per post, and how many posts did not complete in the call."""
    late = 0
    t0 = time.perf_counter_ns()
    for _ in range(n):
        if not x.post():
            late += 1
            x.wait()
    return (time.perf_counter_ns() - t0) / n, late


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", "--posts", type=int, default=100000,
                    help="posts per batch (default 100000)")
    ap.add_argument("-r", "--batches", type=int, default=5,
                    help="batches of each loop (default 5)")
    ap.add_argument("-w", "--warmup", type=int, default=1000,
                    help="posts before timing (default 1000)")
    ap.add_argument("-b", "--backend", default="uds",
                    help="backend spec (default uds)")
    ap.add_argument("-p", "--progress-thread", type=int, choices=(0, 1),
                    default=1, help="the initiator's (default 1)")
    o = ap.parse_args()
    if o.posts < 1 or o.batches < 1 or o.warmup < 0:
        ap.error("posts and batches must be at least 1, warmup at least 0")

    # As bench/inproc.c: the target always has a progress thread; both
    # sides register 8 B (a page) from alloc; one prepared entry each.
    with xfer.Agent("py-post-initiator", backends=[o.backend],
                    progress_thread=bool(o.progress_thread)) as ini, \
            xfer.Agent("py-post-target", backends=[o.backend]) as tgt:
        lbuf = ini.alloc(8)
        rbuf = tgt.alloc(8)
        ini.register(lbuf)
        tgt.register(rbuf)
        ini.load_metadata(tgt.metadata())
        lprep = ini.prep(lbuf)
        rprep = ini.prep(ini.remote_regions("py-post-target")[0],
                         "py-post-target")
        x = ini.transfer_prepped("WRITE", lprep, [0], rprep, [0])
        memoryview(lbuf.buffer)[:8] = PATTERN

        post_wait(x, max(o.warmup, 1))
        pw, pa, late = [], [], 0
        for _ in range(o.batches):
            pw.append(post_wait(x, o.posts))
            ns, n = post_alone(x, o.posts)
            pa.append(ns)
            late += n
        total = o.batches * o.posts
        print("# post_overhead.py, xfer %s (libxfer %s), Python %s: backend "
              "%s, prepared WRITE of 1 x 8 B (Agent.alloc), initiator "
              "progress thread %s, %d batches of %d posts"
              % (xfer.__version__, xfer.version(),
                 platform.python_version(), o.backend,
                 "on" if o.progress_thread else "off", o.batches, o.posts))
        print("post_wait_ns %.1f" % statistics.median(pw))
        print("post_ns %.1f" % statistics.median(pa))
        print("completed_in_call %d/%d" % (total - late, total))
        ok = bytes(memoryview(rbuf.buffer)[:8]) == PATTERN
        print("bytes %s" % ("ok" if ok else "WRONG"))
        x.release()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
