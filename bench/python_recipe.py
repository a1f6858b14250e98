#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""A common Python recipe's two approaches on the forklog_bench workload: 100 B records appended to one file.

The recipe (a 2016 blog post on logging from multiprocessing.Pool workers, Python 2) runs
Pool(8).map(send_request, data_list); each task times its request with time.clock() and appends 'request %s cost: %s\\n' to request.log under a lock, opening the file
per record:

    lock.acquire()
    with open('request.log', 'a+') as logs:
        logs.write('request %s cost: %s\\n' % (data, end_time - start_time))
    lock.release()

(a) "initializer": a multiprocessing.Lock passed through Pool(initializer=init, initargs=(lock,)), stored in a
    global by init(); the recipe's second, recommended approach.
(b) "manager": a Manager().Lock() passed to the task with functools.partial; the recipe's first approach.

Python 3 translation: time.clock() (CPU time on Unix, removed in 3.8) becomes time.process_time(); the HTTP request
is dropped (empty task), everything else is the recipe's code. `data` is padded so that every record is 100 bytes.

Beside the recipe's two, the same pool also runs:
  floor:        os.write() on an O_APPEND descriptor opened before the Pool, no lock: Python's floor.
  init-keepopen: (a) with the file opened once per worker (in the initializer) instead of once per record,
                to show what the per-record open() costs.

Timing: the Pool is created (workers forked) before the clock starts; the clock runs around pool.map() alone,
with the recipe's default chunksize. Fixed total records per cell (default 100000; 20000 for the manager). Every
output file is checked: exact count, every record whole, every task's record present exactly once. Standard
library only. Run: python3 bench/python_recipe.py [-P 1,2,4,8] [-n 100000] [-r 3] [-d /var/tmp] [--csv]
"""
import argparse
import functools
import multiprocessing as mp
import os
import re
import shutil
import statistics
import sys
import tempfile
import time

RECORD = 100  # bytes, newline included
LINE_RE = re.compile(rb"request (d\d{9}x*) cost: ([0-9.e-]+)\n")

ctx = mp.get_context("fork")

# Globals of the workers, as in the recipe.
lock = None
path = None
logs_keep = None
floor_fd = None


def data_item(i, cost_len):
    """The data item of task i, padded so that the record 'request %s cost: %s\\n' is RECORD bytes long."""
    d = "d%09d" % i
    pad = RECORD - len("request  cost: \n") - len(d) - cost_len
    return d + "x" * max(pad, 0)


# str() of a process_time() difference is mostly 0.0 or e.g. 1.9999999999881224e-06: lines vary by a few bytes.
COST_LEN = 21


# ---- (a) the recipe's second approach: Lock through the Pool initializer ----------------------------------------
def init(l, p):
    global lock, path
    lock = l
    path = p


def send_request(data):
    start_time = time.process_time()
    end_time = time.process_time()
    lock.acquire()
    with open(path, "a+") as logs:
        logs.write("request %s cost: %s\n" % (data, end_time - start_time))
    lock.release()


# ---- (b) the recipe's first approach: Manager().Lock() through functools.partial -------------------------------
def send_request_mgr(data, lock, path):
    start_time = time.process_time()
    end_time = time.process_time()
    lock.acquire()
    with open(path, "a+") as logs:
        logs.write("request %s cost: %s\n" % (data, end_time - start_time))
    lock.release()


# ---- Python floor: inherited O_APPEND descriptor, one os.write per record, no lock --------------------------
def init_floor(fd):
    global floor_fd
    floor_fd = fd


def send_request_floor(data):
    start_time = time.process_time()
    end_time = time.process_time()
    os.write(floor_fd, ("request %s cost: %s\n" % (data, end_time - start_time)).encode())


# ---- (a) with the file kept open per worker --------------------------------------------------------------------
def init_keep(l, p):
    global lock, logs_keep
    lock = l
    logs_keep = open(p, "a", buffering=1)  # line-buffered: one write(2) per record


def send_request_keep(data):
    start_time = time.process_time()
    end_time = time.process_time()
    lock.acquire()
    logs_keep.write("request %s cost: %s\n" % (data, end_time - start_time))
    lock.release()


def check(fname, n, data_list):
    with open(fname, "rb") as f:
        blob = f.read()
    lines = blob.split(b"\n")
    if lines[-1] != b"":
        sys.exit("python_recipe: CHECK FAILED: %s does not end with a newline" % fname)
    lines = lines[:-1]
    if len(lines) != n:
        sys.exit("python_recipe: CHECK FAILED: %s has %d records, expected %d" % (fname, len(lines), n))
    seen = set()
    for ln in lines:
        m = LINE_RE.fullmatch(ln + b"\n")
        if not m:
            sys.exit("python_recipe: CHECK FAILED: torn record in %s: %r" % (fname, ln[:120]))
        seen.add(m.group(1))
    if len(seen) != n:
        sys.exit("python_recipe: CHECK FAILED: %s: %d distinct tasks, expected %d" % (fname, len(seen), n))
    return len(blob) / n


def run(method, procs, n, workdir):
    fname = os.path.join(workdir, "%s-P%d.log" % (method, procs))
    if os.path.exists(fname):
        os.unlink(fname)
    data_list = [data_item(i, COST_LEN) for i in range(n)]
    fd = None
    mgr = None
    if method == "initializer":
        pool = ctx.Pool(procs, initializer=init, initargs=(ctx.Lock(), fname))
        fn = send_request
    elif method == "manager":
        mgr = ctx.Manager()
        pool = ctx.Pool(procs)
        fn = functools.partial(send_request_mgr, lock=mgr.Lock(), path=fname)
    elif method == "floor":
        fd = os.open(fname, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        pool = ctx.Pool(procs, initializer=init_floor, initargs=(fd,))
        fn = send_request_floor
    elif method == "init-keepopen":
        pool = ctx.Pool(procs, initializer=init_keep, initargs=(ctx.Lock(), fname))
        fn = send_request_keep
    else:
        raise ValueError(method)
    # Let every worker start (and run its initializer) before the clock starts.
    pool.map(abs, range(procs * 4), chunksize=1)
    t0 = time.perf_counter()
    pool.map(fn, data_list)  # the recipe's call: default chunksize
    t1 = time.perf_counter()
    pool.close()
    pool.join()
    if mgr is not None:
        mgr.shutdown()
    if fd is not None:
        os.close(fd)
    avg = check(fname, n, data_list)
    os.unlink(fname)
    return n / (t1 - t0), avg


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-P", default="1,2,4,8", help="pool sizes (default 1,2,4,8)")
    ap.add_argument("-n", type=int, default=100000, help="records per cell (default 100000)")
    ap.add_argument("--n-manager", type=int, default=20000, help="records per cell for the manager (20000)")
    ap.add_argument("-r", type=int, default=3, help="runs per cell; the median is reported (default 3)")
    ap.add_argument("-d", default="/var/tmp", help="directory (a fresh subdirectory is made there)")
    ap.add_argument("-m", default="floor,initializer,manager,init-keepopen", help="methods")
    ap.add_argument("--csv", action="store_true")
    ap.add_argument("--quick", action="store_true", help="a tenth of the records, 1 run")
    a = ap.parse_args()
    procs_list = [int(x) for x in a.P.split(",")]
    methods = a.m.split(",")
    n_default, n_mgr, runs = a.n, a.n_manager, a.r
    if a.quick:
        n_default, n_mgr, runs = max(n_default // 10, 1), max(n_mgr // 10, 1), 1
    workdir = tempfile.mkdtemp(prefix="forklog-recipe.", dir=a.d)
    st = os.statvfs(workdir)
    with open("/proc/loadavg") as f:
        load0 = f.read().strip()
    cm = "# " if a.csv else ""
    print("%spython_recipe: Python %s, %d CPUs, dir %s, load at start: %s" %
          (cm, sys.version.split()[0], os.cpu_count(), workdir, load0))
    print("%sfixed records per cell (%d; manager %d), %d runs per cell, methods rotated per round, "
          "clock around pool.map() only" % (cm, n_default, n_mgr, runs))
    sys.stdout.flush()
    results = {}
    for m in methods:  # warm-up, not timed: imports, first Pool, page cache
        run(m, 2, 200, workdir)
    for procs in procs_list:
        print("python_recipe: P=%d ..." % procs, file=sys.stderr)
        rates = {m: [] for m in methods}
        sizes = {}
        for r in range(runs):
            for k in range(len(methods)):
                m = methods[(k + r) % len(methods)]
                n = n_mgr if m == "manager" else n_default
                rate, avg = run(m, procs, n, workdir)
                rates[m].append(rate)
                sizes[m] = avg
        for m in methods:
            results[(m, procs)] = (statistics.median(rates[m]), min(rates[m]), max(rates[m]), sizes[m])
    shutil.rmtree(workdir, ignore_errors=True)
    with open("/proc/loadavg") as f:
        load1 = f.read().strip()
    if a.csv:
        print("method,procs,median_rec_s,min_rec_s,max_rec_s,ratio_to_python_floor,avg_record_bytes")
        for m in methods:
            for p in procs_list:
                med, lo, hi, avg = results[(m, p)]
                fl = results.get(("floor", p))
                print("%s,%d,%.0f,%.0f,%.0f,%s,%.1f" % (m, p, med, lo, hi,
                                                        "%.4f" % (med / fl[0]) if fl else "", avg))
    else:
        print("%-15s %3s %12s %21s %14s %8s" % ("method", "P", "rec/s", "min-max rec/s", "vs py floor", "B/rec"))
        for p in procs_list:
            for m in methods:
                med, lo, hi, avg = results[(m, p)]
                fl = results.get(("floor", p))
                print("%-15s %3d %12.0f %21s %14s %8.1f" % (m, p, med, "%.0f-%.0f" % (lo, hi),
                                                            "%.3fx" % (med / fl[0]) if fl else "-", avg))
    print("%sload at end: %s" % (cm, load1))


if __name__ == "__main__":
    main()
