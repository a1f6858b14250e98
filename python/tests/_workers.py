# SPDX-License-Identifier: MIT
"""Worker functions and the record checker of the tests (a module of its own so that spawn and forkserver
workers can import them)."""
import logging
import os
import random
import re
import signal
import time

import forklog

LOGGER = "forklog-test"
RECORD_MAX = 64 * 1024  # bytes of a whole text record, newline included
_PREFIX = len("2026-11-28T16:05:13.123456Z INFO pid=4194304 ")
LINE_RE = re.compile(rb"\S+ (DEBUG|INFO|WARN|ERROR) pid=(\d+) task=(\d+) seq=(\d+) len=(\d+) ([a-z]*) end")


def payload_len(task, seq, rng):
    if seq == 0:  # one record of exactly 64 KiB per task (for pids of up to 7 digits)
        return RECORD_MAX - _PREFIX - len("task=%d seq=%d len=%d  end\n" % (task, seq, 99999))
    if rng.random() < 0.02:
        return rng.randrange(1024, RECORD_MAX - 200)
    return rng.randrange(0, 300)


def payload(task, seq, n):
    return chr(97 + (task * 7 + seq) % 26) * n


def message(task, seq, rng):
    n = payload_len(task, seq, rng)
    return "task=%d seq=%d len=%d %s end" % (task, seq, n, payload(task, seq, n))


def check_records(blobs, tasks, per_task):
    """Every line of every blob (oldest first) a whole record; tasks 0..tasks-1 each wrote seq 0..per_task-1
    once, in order; any other task number is a victim's, whose records need only be whole.
    Returns (pids seen, number of victim records)."""
    seqs = {t: [] for t in range(tasks)}
    pids = set()
    victims = 0
    for blob in blobs:
        assert blob.endswith(b"\n") or blob == b"", "a file does not end with a whole record"
        for line in blob.split(b"\n")[:-1]:
            m = LINE_RE.fullmatch(line)
            assert m, "torn or interleaved record: %r" % line[:200]
            task, seq, n, body = int(m.group(3)), int(m.group(4)), int(m.group(5)), m.group(6)
            assert len(body) == n and body == payload(task, seq, n).encode(), "record body damaged: %r" % line[:200]
            if task in seqs:
                seqs[task].append(seq)
            else:
                victims += 1
            pids.add(int(m.group(2)))
    for t in range(tasks):
        assert seqs[t] == list(range(per_task)), "task %d: %d records, first gap near %s" % (
            t, len(seqs[t]), next((i for i, s in enumerate(seqs[t]) if s != i), None))
    return pids, victims


# ---- tasks through logging --------------------------------------------------------------------------------------
def init_handler(path, options):
    """Pool initializer for spawn and forkserver: each worker opens the same path."""
    attach(forklog.Handler(path, **options))


def init_with(handler):
    """Initializer that receives a Handler pickled by the parent: it opens the same path here."""
    attach(handler)


def attach(handler):
    lg = logging.getLogger(LOGGER)
    lg.setLevel(logging.DEBUG)
    lg.propagate = False
    lg.addHandler(handler)


def log_task(args):
    task, per_task = args
    lg = logging.getLogger(LOGGER)
    rng = random.Random(task)
    for seq in range(per_task):
        lg.info("%s", message(task, seq, rng))
    for h in lg.handlers:
        h.flush()
    return os.getpid()


# ---- tasks through forklog.Log (a Log inherited by fork) ---------------------------------------------------------
_log = None


def init_log(log):
    global _log
    _log = log


def write_task(args):
    task, per_task = args
    rng = random.Random(task)
    for seq in range(per_task):
        _log.info(message(task, seq, rng))
    return os.getpid()


def victim(log, task, size, ready):
    """Writes records of `size` bytes until killed."""
    msg = "task=%d seq=%d len=%d %s end" % (task, 0, size, payload(task, 0, size))  # built once: the time goes
    ready.set()                                                                      # to writing it
    while True:
        log.info(msg)


def steady(log, task, per_task, pause):
    rng = random.Random(task)
    for seq in range(per_task):
        log.info(message(task, seq, rng))
        if pause and seq % 50 == 0:
            time.sleep(pause)
    log.close()


def kill(pid):
    os.kill(pid, signal.SIGKILL)
