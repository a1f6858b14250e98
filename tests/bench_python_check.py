#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""bench/python_handler.py's check of an output file: a whole file passes, and a record lost, repeated, cut, or torn
by another record written into it (also inside its prefix) is counted, for forklog's text records and for the
FileHandler's. Needs the forklog package (PYTHONPATH) and the library (FORKLOG_LIBRARY): python_handler imports it.
Exit 77 (skipped) when it cannot be imported."""
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
try:
    import python_handler as ph
except ImportError as e:
    print("bench_python_check: skipped: %s" % e)
    sys.exit(77)

PREFIX = {"forklog": "2026-12-06T21:26:32.658851Z INFO pid=%d ", "filehandler": "2026-12-06 21:26:32,658 INFO pid=%d "}


def rec(method, i, pad, pid=12345):
    return (PREFIX[method] % pid + "request d%09d cost 0.000012 " % i + "x" * pad + "\n").encode()


def main():
    failures = 0
    d = tempfile.mkdtemp(prefix="bench-python-check.")
    for method in ("forklog", "filehandler"):
        pad = ph.pad_for(method)
        r = [rec(method, i, pad) for i in range(4)]
        cases = {
            "whole": (b"".join(r), True),
            "lost": (r[0] + r[1] + r[3], False),
            "repeated": (r[0] + r[1] + r[1] + r[2] + r[3], False),
            "cut in its padding": (r[0] + r[1][:-6] + b"\n" + r[2] + r[3], False),
            "torn in its prefix": (r[0] + r[1][:10] + r[2] + r[1][10:] + r[3], False),
            "torn in its message": (r[0] + r[1][:60] + r[2] + r[1][60:] + r[3], False),
            "prefix replaced": (r[0] + b"GARBAGE" + r[1][r[1].index(b" INFO"):] + r[2] + r[3], False),
            "last newline lost": (b"".join(r)[:-1], False),
        }
        for name, (data, ok) in cases.items():
            path = os.path.join(d, "f.log")
            with open(path, "wb") as f:
                f.write(data)
            whole, torn, missing = ph.check(path, 4, method, pad)
            passed = torn == 0 and missing == 0
            if passed != ok:
                print("FAIL: %s, %s: check gave %d whole, %d torn, %d missing" % (method, name, whole, torn, missing))
                failures += 1
            os.unlink(path)
    os.rmdir(d)
    if failures:
        sys.exit(1)
    print("bench_python_check: every broken file was caught")


if __name__ == "__main__":
    main()
