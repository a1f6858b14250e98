# SPDX-License-Identifier: MIT
"""examples/python/request_timing.py runs with its defaults and with every start method."""
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(REPO, "examples", "python", "request_timing.py")


@pytest.mark.parametrize("args", [[], ["-n", "60", "--start-method", "spawn"],
                                  ["-n", "60", "--start-method", "forkserver"]])
def test_request_timing_example(tmp_path, args):
    r = subprocess.run([sys.executable, EXAMPLE] + args, cwd=str(tmp_path), capture_output=True, text=True,
                       timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    n = 60 if args else 200
    assert re.search(r"^cost: count %d, p50 [0-9.]+ s, p95 [0-9.]+ s$" % n, r.stdout, re.M), r.stdout
    lines = (tmp_path / "request.log").read_text().splitlines()
    assert len(lines) == n
    assert sorted(ln.split()[4] for ln in lines) == sorted("data%d" % i for i in range(1, n + 1))
    assert not os.path.exists(tmp_path / ".request.log.forklog")  # every worker closed: the segment is gone


def test_request_timing_example_one_request_and_bad_counts(tmp_path):
    r = subprocess.run([sys.executable, EXAMPLE, "-n", "1", "-w", "1"], cwd=str(tmp_path), capture_output=True,
                       text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"^cost: count 1, p50 [0-9.]+ s, p95 [0-9.]+ s$", r.stdout, re.M), r.stdout
    for bad in (["-n", "0"], ["-w", "0"]):
        r = subprocess.run([sys.executable, EXAMPLE] + bad, cwd=str(tmp_path), capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 2 and "must be at least 1" in r.stderr, (bad, r.stdout + r.stderr)


def test_request_timing_example_two_runs_on_one_log(tmp_path):
    # Two runs at once on one log (what forklog is for): each counts its own records, and the log holds both runs.
    runs = [subprocess.Popen([sys.executable, EXAMPLE, "-n", "400"], cwd=str(tmp_path), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    for p in runs:
        out = p.communicate(timeout=180)[0]
        assert p.returncode == 0, out
        assert re.search(r"^cost: count 400, p50 [0-9.]+ s, p95 [0-9.]+ s$", out, re.M), out
    lines = (tmp_path / "request.log").read_text().splitlines()
    assert sorted(ln.split()[4] for ln in lines) == sorted(["data%d" % i for i in range(1, 401)] * 2)
