# SPDX-License-Identifier: MIT
"""A worker SIGKILLed while it writes large records blocks nobody and leaves no fragment."""
import multiprocessing as mp
import os
import random
import time

import forklog
import _workers as w

STEADY = 2
PER_TASK = 1500
VICTIM_RECORD = 2 << 20  # bytes: most of a victim's time is in write(2) or waiting for the lock
KILLS = 4


def _kill_victims(ctx, log, path, n, first_task, rng, fragments):
    for k in range(n):
        ready = ctx.Event()
        v = ctx.Process(target=w.victim, args=(log, first_task + k, VICTIM_RECORD, ready))
        v.start()
        assert ready.wait(10)
        time.sleep(rng.uniform(0.01, 0.04))
        w.kill(v.pid)  # wherever it is: in write(2) of a 2 MiB record, holding the lock, or waiting for it
        v.join(10)
        assert v.exitcode == -9
        if fragments is not None:
            with open(path, "rb") as f:
                f.seek(0, os.SEEK_END)
                if f.tell():
                    f.seek(-1, os.SEEK_END)
                    fragments.append(f.read(1) != b"\n")


def test_a_worker_killed_mid_record_blocks_nobody_and_leaves_no_fragment(tmp_path):
    path = str(tmp_path / "app.log")
    ctx = mp.get_context("fork")
    log = forklog.Log(path, max_record=8 << 20)  # inherited by every process below
    rng = random.Random(1)
    # Victims alone first: the file is seen to end in a fragment after a kill (the kill landed mid-record). A kill
    # lands in write(2) of a 2 MiB record once in 1 to 22 tries here (the rest of a record's time is spent building
    # it); 60 tries make a miss of every one a chance below one in a million.
    fragments = []
    while not any(fragments) and len(fragments) < 60:
        _kill_victims(ctx, log, path, 1, 100 + len(fragments), rng, fragments)
    assert any(fragments), "no kill landed in the middle of a record (%d tries)" % len(fragments)
    # Then while steady writers write: each must finish, whatever the victims held when they died.
    steady = [ctx.Process(target=w.steady, args=(log, t, PER_TASK, 0.002)) for t in range(STEADY)]
    for p in steady:
        p.start()
    _kill_victims(ctx, log, path, KILLS, 200, rng, None)
    deadline = time.monotonic() + 30
    for p in steady:
        p.join(max(0.1, deadline - time.monotonic()))
        assert p.exitcode == 0, "a steady writer did not finish within 30 s after the kills (blocked?)"
    log.info("task=%d seq=0 len=0  end" % STEADY)  # takes the lock after the last kill: cuts any fragment
    log.close()
    with open(path, "rb") as f:
        blob = f.read()
    pids, extra = w.check_records([blob], STEADY, PER_TASK)  # the parent's record counts as an extra one
    assert extra >= 1
    assert os.getpid() in pids
