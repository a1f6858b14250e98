# SPDX-License-Identifier: MIT
"""Finds the C library and the package for every test, and for the processes the tests start.

FORKLOG_LIBRARY, when set, names the library (tests/run points it at its build). Otherwise the first of
build/libforklog.so and build-py/libforklog.so in the repository is used. The package is imported from python/
(PYTHONPATH is set too, so that spawned interpreters and subprocesses find it).
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
PKG = os.path.dirname(HERE)
REPO = os.path.dirname(PKG)

if not os.environ.get("FORKLOG_LIBRARY"):
    for d in ("build", "build-py"):
        cand = os.path.join(REPO, d, "libforklog.so")
        if os.path.exists(cand):
            os.environ["FORKLOG_LIBRARY"] = cand
            break

for p in (HERE, PKG):
    if p not in sys.path:
        sys.path.insert(0, p)
os.environ["PYTHONPATH"] = os.pathsep.join([PKG, HERE] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
