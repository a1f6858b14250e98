#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Records through Python's logging from a Pool of worker processes into one file: forklog.Handler against the
usual ways. 100 B records; records/s and ratios at P = 1 and P = 4.

Every method is a logging.Handler on the same logger and formatter path, so only the sink differs:
  forklog        forklog.Handler (text records: forklog's own time, level and pid prefix + the message)
  forklog-raw    forklog.Handler(raw=True) with the formatter the Python methods use (same bytes as FileHandler)
  forklog-buffered  forklog.Handler(buffered=True): records batched in the log's shared buffer (an option of
                 the sink, shown beside the headline; the records are in the file after flush_ms or at close)
  forklog-log    forklog.Log.info() called directly, without logging: what the binding costs alone (not a
                 logging handler; its ratios compare a different amount of Python work)
  logging-null   a handler whose emit() does nothing: what logging itself costs per record (Logger.info, the
                 LogRecord, the handler call), the most any handler can reach; it writes no file
  least-call     the least any handler over the library does per record: record.getMessage(), the encoding, and
                 one ctypes call of the record path (forklog_log_fields()) that returns at once, the log's level
                 being above the record's; it writes nothing: the most a writing handler of this package can reach
  lock-open      (a) a multiprocessing.Lock passed through Pool(initializer=...); each record opens the file
                 ('a+'), writes, closes it, under the lock, as the widespread recipe does
  manager-lock   (b) the same with a Manager().Lock() (a round trip to the manager process per acquire/release)
  filehandler    (c) logging.FileHandler opened in the parent and inherited by the forked workers, no lock:
                 unsafe (nothing stops a torn record when a writer is killed or a write is short), counted here

The Pool ("fork") and every handler are set up and warmed before the clock; the clock runs around pool.map()
of P tasks, each writing n/P records in a loop through logger.info(). Fixed records per cell (default 100,000;
20,000 for manager-lock). Each file is checked afterwards: record count, every line whole, every record once;
for filehandler the torn or missing records are counted and reported instead of failing. Median of R runs.
"CPU us": the CPU time per record of every process of the method during pool.map() (the workers, the Manager's
server, the parent's Pool threads): what a record costs whatever the other processes of the machine take.
--lean: logging.logThreads, logging.logMultiprocessing = False and logging._srcfile = None (no thread, process
name or caller in the LogRecord), for every method of the run: a configuration a program may choose, shown as a
run of its own.
Needs the forklog package (PYTHONPATH=python) and the library (FORKLOG_LIBRARY=build/libforklog.so).
Run: python3 bench/python_handler.py [-P 1,4] [-n 100000] [-r 3] [-d /var/tmp] [-m METHODS] [--quick] [--lean]
"""
import argparse
import logging
import multiprocessing as mp
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import forklog
from forklog._native import SIZE0 as _SIZE0
from forklog._native import log_msg as _log_msg

RECORD = 100  # bytes in the file, newline included (forklog text and the Python methods' format alike)
FMT = "%(asctime)s %(levelname)s pid=%(process)d %(message)s"
LOGGER = "bench"
ctx = mp.get_context("fork")
METHODS = ["forklog", "forklog-raw", "forklog-buffered", "forklog-log", "logging-null", "least-call", "lock-open",
           "manager-lock", "filehandler"]

# the records' message: "request dNNNNNNNNN cost 0.000012 xxxx", padded so that each line is RECORD bytes. A line
# is whole only if all of it matches, from its prefix (forklog's, or the Python methods' FMT) to the last byte of
# the padding: a search for the message alone would take a line made of a torn record's first bytes and another
# whole record for a whole record, and a record cut in its padding for a whole one.
FORKLOG_PREFIX = rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z INFO pid=\d+ "
FMT_PREFIX = rb"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO pid=\d+ "


def line_re(method, pad):
    """The whole line of a record of this method, its id as group 1."""
    prefix = FORKLOG_PREFIX if method in ("forklog", "forklog-buffered", "forklog-log") else FMT_PREFIX
    return re.compile(prefix + rb"request (d\d{9}) cost 0\.000012 " + b"x" * pad)


class LockOpenHandler(logging.Handler):
    """(a) and (b): open, write, close per record under a process-shared lock."""

    def __init__(self, path, lock):
        logging.Handler.__init__(self)
        self.path = path
        self.plock = lock

    def emit(self, record):
        try:
            msg = self.format(record) + "\n"
            self.plock.acquire()  # the recipe's lines, with the record logging formatted
            with open(self.path, "a+") as logs:
                logs.write(msg)
            self.plock.release()
        except Exception:
            self.handleError(record)


class NullHandler(logging.Handler):
    """logging-null: logging's own cost per record; nothing is formatted or written."""

    def emit(self, record):
        pass


class LeastCallHandler(logging.Handler):
    """least-call: the steps no handler over the library can skip, and nothing else: the message, its encoding
    and one call of the record path through ctypes, as forklog.Handler makes it (the package's per-record
    function, forklog_log_fields() without fields). The log's level is ERROR, so the library returns at its first
    check and writes nothing."""

    def __init__(self, path):
        logging.Handler.__init__(self)
        self.log = forklog.Log(path, level="error")

    def emit(self, record):
        _log_msg(self.log._hv, forklog.INFO, record.getMessage().encode("utf-8"), None, _SIZE0)


def pad_for(method):
    """Message padding so that a record is RECORD bytes in the file with this method's prefix."""
    if method in ("forklog", "forklog-buffered", "forklog-log"):
        prefix = len("2026-11-28T16:05:13.123456Z INFO pid=%d " % os.getpid())
    else:
        prefix = len(logging.Formatter(FMT).format(logging.LogRecord("b", 20, "", 0, "", None, None))) - 0
    return max(RECORD - 1 - prefix - len("request d000000000 cost 0.000012 "), 0)


_direct = None


def init(handler_factory):
    global _direct
    if handler_factory.method == "forklog-log":
        _direct = forklog.Log(handler_factory.path)
        return
    lg = logging.getLogger(LOGGER)
    lg.handlers[:] = []
    lg.propagate = False
    lg.setLevel(logging.INFO)
    h = handler_factory()
    if not isinstance(h, forklog.Handler) or h._raw:
        h.setFormatter(logging.Formatter(FMT))
    lg.addHandler(h)


class Factory:
    """Builds the handler in each worker (picklable for the initializer)."""

    def __init__(self, method, path, lock=None, inherited=None):
        self.method, self.path, self.lock, self.inherited = method, path, lock, inherited

    def __call__(self):
        if self.method == "forklog":
            return forklog.Handler(self.path)
        if self.method == "forklog-raw":
            return forklog.Handler(self.path, raw=True)
        if self.method == "forklog-buffered":
            return forklog.Handler(self.path, buffered=True)
        if self.method == "logging-null":
            return NullHandler()
        if self.method == "least-call":
            return LeastCallHandler(self.path)
        if self.method in ("lock-open", "manager-lock"):
            return LockOpenHandler(self.path, self.lock)
        return self.inherited  # filehandler: the parent's, inherited through fork


def task(args):
    first, count, pad = args
    lg = logging.getLogger(LOGGER)
    tail = "x" * pad
    if _direct is not None:
        for i in range(first, first + count):
            _direct.info("request d%09d cost 0.000012 %s" % (i, tail))
        return
    for i in range(first, first + count):
        lg.info("request d%09d cost 0.000012 %s", i, tail)
    for h in lg.handlers:
        h.flush()


def check(path, n, method, pad):
    """(whole records, torn, foreign or repeated lines, records missing): every id 0..n-1 is expected once, each
    line exactly as the method writes it with this padding."""
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    # The bytes after the last newline, if any, are a torn record even when they match (only its newline lost).
    last = lines.pop()
    whole = line_re(method, pad)
    seen, torn = set(), 1 if last else 0
    for ln in lines:
        m = whole.fullmatch(ln)
        if not m or m.group(1) in seen:
            torn += 1
            continue
        seen.add(m.group(1))
    return len(seen), torn, n - len(seen)


def run(method, procs, n, workdir):
    path = os.path.join(workdir, "%s-P%d.log" % (method, procs))
    for p in (path, os.path.join(workdir, "." + os.path.basename(path) + ".forklog")):
        if os.path.exists(p):
            os.unlink(p)
    mgr, inherited = None, None
    if method == "lock-open":
        fac = Factory(method, path, lock=ctx.Lock())
    elif method == "manager-lock":
        mgr = ctx.Manager()
        fac = Factory(method, path, lock=mgr.Lock())
    elif method == "filehandler":
        inherited = logging.FileHandler(path)  # opened in the parent, shared by the forked workers
        fac = Factory(method, path, inherited=inherited)
    else:
        fac = Factory(method, path)
    pad = pad_for(method)
    pool = ctx.Pool(procs, initializer=init, initargs=(fac,))
    pool.map(abs, range(procs * 4), chunksize=1)  # workers up, initializers done
    per = n // procs
    tasks = [(k * per, per if k < procs - 1 else n - k * per, pad) for k in range(procs)]
    pids = [w.pid for w in pool._pool] + ([mgr._process.pid] if mgr is not None else [])
    c0 = cpu_seconds(pids)
    t0 = time.perf_counter()
    pool.map(task, tasks, chunksize=1)
    t1 = time.perf_counter()
    cpu = (cpu_seconds(pids) - c0) / n * 1e6  # us per record, every process of the method
    pool.close()
    pool.join()  # workers end normally: forklog handles are closed
    if mgr is not None:
        mgr.shutdown()
    if inherited is not None:
        inherited.close()
    if method in ("logging-null", "least-call"):  # nothing written
        if method == "least-call":
            if os.path.getsize(path):
                sys.exit("python_handler: CHECK FAILED: least-call wrote records")
            os.unlink(path)
        return n / (t1 - t0), cpu, 0, 0, 0.0
    whole, torn, missing = check(path, n, method, pad)
    size = os.path.getsize(path) / max(whole + torn, 1)
    if method != "filehandler" and (torn or missing):
        sys.exit("python_handler: CHECK FAILED: %s P=%d: %d torn, %d missing" % (method, procs, torn, missing))
    os.unlink(path)
    return n / (t1 - t0), cpu, torn, missing, size


def cpu_seconds(pids):
    """CPU time (user + system) used so far by this process (the Pool's threads) and by the processes pids."""
    t = os.times()
    total = t.user + t.system
    for pid in pids:
        with open("/proc/%d/stat" % pid) as f:
            v = f.read().rsplit(")", 1)[1].split()
        total += (int(v[11]) + int(v[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    return total


def busy_cpu_seconds():
    """CPU time spent by the whole machine (every CPU, every process) since boot, in seconds, and the time a
    hypervisor gave the machine's virtual CPUs to others (steal time)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    steal = v[7] / hz if len(v) > 7 else 0.0
    return (sum(v[0:3]) + sum(v[5:7])) / hz, steal  # user nice system irq softirq


def own_cpu_seconds():
    """CPU time of this process and of its reaped children (the Pool workers, the Manager)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-P", default="1,4", help="pool sizes (default 1,4)")
    ap.add_argument("-n", type=int, default=100000, help="records per cell (default 100000)")
    ap.add_argument("--n-manager", type=int, default=20000, help="records per cell for manager-lock (20000)")
    ap.add_argument("-r", type=int, default=3, help="runs per cell; the median is reported (default 3)")
    ap.add_argument("-d", default="/var/tmp", help="directory (a fresh subdirectory is made there)")
    ap.add_argument("-m", default=",".join(METHODS), help="methods (default: all)")
    ap.add_argument("--quick", action="store_true", help="a tenth of the records, 1 run")
    ap.add_argument("--lean", action="store_true",
                    help="logThreads, logMultiprocessing off and _srcfile None, for every method")
    a = ap.parse_args()
    if a.lean:  # set in the parent before the Pool: the forked workers inherit it
        logging.logThreads = False
        logging.logMultiprocessing = False
        logging._srcfile = None
    procs_list = [int(x) for x in a.P.split(",")]
    methods = a.m.split(",")
    n_def, n_mgr, runs = a.n, a.n_manager, a.r
    if a.quick:
        n_def, n_mgr, runs = max(n_def // 10, 100), max(n_mgr // 10, 100), 1
    workdir = tempfile.mkdtemp(prefix="forklog-pyh.", dir=a.d)
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=here).stdout.strip() or "?"
        if subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "lib", "include", "python"],
                          capture_output=True, text=True, cwd=os.path.dirname(here)).stdout.strip():
            commit += " + uncommitted changes in lib/, include/ or python/"
    except OSError:
        commit = "?"
    with open("/proc/loadavg") as f:
        load0 = f.read().strip()
    (busy0, steal0), ours0 = busy_cpu_seconds(), own_cpu_seconds()
    print("python_handler: %s, Python %s, forklog %s (%s), commit %s, %d CPUs, dir %s, load at start: %s" % (
        time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), sys.version.split()[0], forklog.library_version(),
        forklog.library_path, commit, os.cpu_count(), workdir, load0))
    print("%d records per cell (manager-lock %d), %d runs, median; clock around pool.map() only; logging: %s" % (
        n_def, n_mgr, runs, "lean (logThreads, logMultiprocessing False, _srcfile None)" if a.lean else "defaults"))
    sys.stdout.flush()
    for m in methods:  # warm-up: imports, first Pool, page cache
        run(m, 2, 200, workdir)
    res = {}
    for procs in procs_list:
        rates = {m: [] for m in methods}
        cpus = {m: [] for m in methods}
        extra = {}
        for r in range(runs):
            for k in range(len(methods)):
                m = methods[(k + r) % len(methods)]
                rate, cpu, torn, missing, size = run(m, procs, n_mgr if m == "manager-lock" else n_def, workdir)
                rates[m].append(rate)
                cpus[m].append(cpu)
                t0, m0, _ = extra.get(m, (0, 0, 0))
                extra[m] = (t0 + torn, m0 + missing, size)
        for m in methods:
            res[(m, procs)] = (statistics.median(rates[m]), min(rates[m]), max(rates[m]),
                               statistics.median(cpus[m])) + extra[m]
    shutil.rmtree(workdir, ignore_errors=True)
    with open("/proc/loadavg") as f:
        load1 = f.read().strip()
    print("%-16s %3s %10s %19s %9s %9s %9s %8s %6s %s" % ("method", "P", "rec/s", "min-max", "vs (a)", "vs (b)",
                                                         "vs (c)", "CPU us", "B/rec", "torn/missing (all runs)"))
    for procs in procs_list:
        for m in methods:
            med, lo, hi, cpu, torn, missing, size = res[(m, procs)]
            ratio = lambda ref: ("%.2fx" % (med / res[(ref, procs)][0])) if (ref, procs) in res else "-"
            print("%-16s %3d %10.0f %19s %9s %9s %9s %8.2f %6.1f %d/%d" % (
                m, procs, med, "%.0f-%.0f" % (lo, hi), ratio("lock-open"), ratio("manager-lock"),
                ratio("filehandler"), cpu, size, torn, missing))
    (busy, steal), ours = busy_cpu_seconds(), own_cpu_seconds() - ours0
    busy, steal = busy - busy0, steal - steal0
    print("load at end: %s; the CPUs were busy %.1f s, %.1f s of it this benchmark's, %.1f s other processes'; "
          "the hypervisor gave %.1f s of them to others (steal time)" % (load1, busy, ours, max(busy - ours, 0.0), steal))


if __name__ == "__main__":
    main()
