#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Python's Pool.map(chunksize=1) on 100,000 empty tasks at P=2: tasks/s, the number forklog_bench_pool is
compared with (docs/performance.md).

The clock runs around pool.map() alone; the Pool is created and warmed up before it (forklog_bench_pool's clock
also includes forking its workers, which favours Python here). Median of R runs. Standard library only.
Run: python3 bench/pool_python.py [-n 100000] [-P 2] [-r 5]
"""
import argparse
import multiprocessing as mp
import statistics
import sys
import time


def empty(i):
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=100000, help="tasks (default 100000)")
    ap.add_argument("-P", type=int, default=2, help="workers (default 2)")
    ap.add_argument("-r", type=int, default=5, help="runs; the median is reported (default 5)")
    a = ap.parse_args()
    ctx = mp.get_context("fork")
    with open("/proc/loadavg") as f:
        load0 = f.read().strip()
    rates = []
    for _ in range(a.r):
        with ctx.Pool(a.P) as pool:
            pool.map(empty, range(a.P * 4), chunksize=1)  # workers up
            t0 = time.perf_counter()
            pool.map(empty, range(a.n), chunksize=1)
            t1 = time.perf_counter()
        rates.append(a.n / (t1 - t0))
    with open("/proc/loadavg") as f:
        load1 = f.read().strip()
    med = statistics.median(rates)
    print("pool_python: Python %s, Pool(%d).map(empty, range(%d), chunksize=1), %d runs; load at start: %s"
          % (sys.version.split()[0], a.P, a.n, a.r, load0))
    print("tasks/s median %.0f, min-max %.0f-%.0f, %.2f us per task" % (med, min(rates), max(rates), 1e6 / med))
    print("load at end: %s" % load1)


if __name__ == "__main__":
    main()
