#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Time HTTP requests from a pool of worker processes and log each cost to one file, then summarise the log.

The classic version of this job passes a multiprocessing.Lock to every worker and opens the log file around
each record; a worker killed while it holds that lock stops every other worker forever, and a worker killed in
the middle of a write leaves half a line. Here each worker logs through forklog.Handler: records are whole,
nobody waits on a dead worker, and it works with every start method.

A local HTTP server (127.0.0.1, a free port, in a thread) serves /data1 .. /dataN with a small delay; a Pool of
workers fetches each item, times it, and logs `request dataK cost SECONDS`; the summary (count, p50, p95) is
read back from the log: this run's records only, those its workers wrote past the log's size at the start, so that
the log may hold older records and be written by other processes at the same time (a second run given the same
--log). Offline and bounded (every request has a timeout).

Run: PYTHONPATH=python FORKLOG_LIBRARY=build/libforklog.so python3 examples/python/request_timing.py
     [-n 200] [-w 4] [--start-method fork|spawn|forkserver] [--log request.log]
"""
import argparse
import http.server
import logging
import multiprocessing as mp
import os
import re
import statistics
import sys
import threading
import time
import urllib.request

import forklog

LOGGER = "request_timing"
LINE_RE = re.compile(r"\S+ INFO pid=(\d+) request (data\d+) cost ([0-9.]+)")


class Server(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        m = re.fullmatch(r"/data(\d+)", self.path)
        if not m:
            self.send_error(404)
            return
        time.sleep((int(m.group(1)) * 7 % 10) / 1000.0)  # 0 .. 9 ms: something to measure
        body = ("payload of %s\n" % self.path[1:]).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # quiet
        pass


_base_url = None


def init_worker(log_path, base_url):
    """Pool initializer: each worker opens the log by its path (any start method) and joins its other users."""
    global _base_url
    _base_url = base_url
    lg = logging.getLogger(LOGGER)
    lg.setLevel(logging.INFO)
    lg.propagate = False
    lg.addHandler(forklog.Handler(log_path))


def send_request(item):
    start = time.perf_counter()
    with urllib.request.urlopen("%s/%s" % (_base_url, item), timeout=10) as r:
        r.read()
    cost = time.perf_counter() - start
    logging.getLogger(LOGGER).info("request %s cost %.6f", item, cost)
    return item, os.getpid()


def summarise(log_path, start, pids, items):
    """This run's records: those from offset `start` written by one of the workers' `pids`."""
    costs, seen = [], []
    with open(log_path, "rb") as f:
        f.seek(start)
        for raw in f:
            line = raw.decode("utf-8", "replace")
            m = LINE_RE.fullmatch(line.rstrip("\n"))
            pid = re.search(r" pid=(\d+) ", line)
            if not pid or int(pid.group(1)) not in pids:
                continue  # another process's record
            if not m or not line.endswith("\n"):
                raise SystemExit("request_timing: unexpected line in %s: %r" % (log_path, line[:120]))
            seen.append(m.group(2))
            costs.append(float(m.group(3)))
    if sorted(seen) != sorted(items):
        raise SystemExit("request_timing: %d records for %d requests" % (len(seen), len(items)))
    if len(costs) < 2:  # quantiles() wants two points (before Python 3.13)
        return len(costs), costs[0], costs[0]
    q = statistics.quantiles(costs, n=100, method="inclusive")
    return len(costs), q[49], q[94]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=200, help="requests: data1 .. dataN (default 200)")
    ap.add_argument("-w", "--workers", type=int, default=4, help="worker processes (default 4)")
    ap.add_argument("--start-method", default=None, choices=mp.get_all_start_methods(),
                    help="multiprocessing start method (default: the platform's)")
    ap.add_argument("--log", default="request.log", help="the log file, appended to (request.log)")
    a = ap.parse_args()
    if a.n < 1 or a.workers < 1:
        ap.error("-n and --workers must be at least 1")

    # The server's socket is bound first (the workers need its port), but its thread starts only once the Pool
    # has forked its workers: a process that forks while another of its threads runs may leave a lock held in
    # the child.
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Server)
    base_url = "http://127.0.0.1:%d" % server.server_address[1]
    # The log is appended to, never replaced: another run may be writing it. This run's records start at its size.
    start = os.path.getsize(a.log) if os.path.exists(a.log) else 0
    items = ["data%d" % i for i in range(1, a.n + 1)]
    ctx = mp.get_context(a.start_method)
    t0 = time.perf_counter()
    with ctx.Pool(a.workers, initializer=init_worker, initargs=(a.log, base_url)) as pool:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        result = pool.map_async(send_request, items, chunksize=1)
        done = result.get(timeout=120)  # bounded, whatever happens
        pool.close()
        pool.join()  # workers end normally: each closes its handle
    wall = time.perf_counter() - t0
    server.shutdown()
    server.server_close()
    count, p50, p95 = summarise(a.log, start, {pid for _, pid in done}, items)
    print("request_timing: %d requests by %d %s workers in %.2f s; logged %d records to %s"
          % (len(done), a.workers, ctx.get_start_method(), wall, count, a.log))
    print("cost: count %d, p50 %.4f s, p95 %.4f s" % (count, p50, p95))


if __name__ == "__main__":
    sys.exit(main())
