# SPDX-License-Identifier: MIT
"""Rotation across processes (every record once, across the files) and JSON lines."""
import glob
import json
import logging
import multiprocessing as mp
import os

import pytest

import forklog
import _workers as w

ROTATE = 32 * 1024


def test_rotation_keeps_every_record_once_across_the_files(tmp_path):
    path = str(tmp_path / "app.log")
    tasks, per_task = 4, 1500
    log = forklog.Log(path, rotate_bytes=ROTATE, rotate_keep=1000)
    with mp.get_context("fork").Pool(tasks, initializer=w.init_log, initargs=(log,)) as pool:
        pool.map(w.write_task, [(t, per_task) for t in range(tasks)], chunksize=1)
    log.close()
    rotated = sorted(glob.glob(path + ".*"), key=lambda p: -int(p.rsplit(".", 1)[1]))  # oldest first
    assert len(rotated) >= 10
    blobs = []
    for p in rotated + [path]:
        with open(p, "rb") as f:
            blobs.append(f.read())
    for b in blobs:  # a file passes rotate_bytes only when it holds one record larger than that
        assert len(b) <= ROTATE or b.count(b"\n") == 1, "a file of %d bytes, %d records" % (len(b), b.count(b"\n"))
    w.check_records(blobs, tasks, per_task)


def test_a_second_open_with_another_rotate_bytes_is_refused_with_the_reason(tmp_path):
    path = str(tmp_path / "app.log")
    with forklog.Log(path, rotate_bytes=4096):
        with pytest.raises(OSError) as e:
            forklog.Log(path, rotate_bytes=8192)
        assert e.value.errno == 22
        assert "rotate_bytes" in str(e.value)  # the C library's explanation is in the message
        with forklog.Log(path) as joined:  # 0 joins what the log's users have
            joined.info("joined")


TRICKY = ["plain", 'quote " backslash \\ slash /', "new\nline\ttab\r", "\x00nul", "\x01\x1f\x7f",
          "unicode é ✓ 𝄞", "lone surrogate \udcff", "%s %d %n {}", ""]


def test_json_lines_parse_and_keep_the_message(tmp_path):
    path = str(tmp_path / "app.jsonl")
    with forklog.Log(path, json=True, level="debug") as log:
        for i, m in enumerate(TRICKY):
            log.log(["debug", "info", "warn", "error"][i % 4], m)
    with open(path, encoding="utf-8") as f:
        recs = [json.loads(line) for line in f]
    assert [r["level"] for r in recs] == [["debug", "info", "warn", "error"][i % 4] for i in range(len(TRICKY))]
    assert all(r["pid"] == os.getpid() for r in recs)
    for r, m in zip(recs, TRICKY):
        if m == "\x00nul":
            assert r["msg"] == "\\x00nul"  # a NUL cannot cross the C call: it is written as \x00
        elif m == "lone surrogate \udcff":
            assert r["msg"] == "lone surrogate \ufffd"  # the invalid byte 0xff became U+FFFD
        else:
            assert r["msg"] == m


def test_json_handler_many_processes(tmp_path):
    path = str(tmp_path / "app.jsonl")
    h = forklog.Handler(path, json=True)
    h.setFormatter(logging.Formatter("%(name)s %(message)s"))
    w.attach(h)
    try:
        with mp.get_context("fork").Pool(4) as pool:
            pool.map(w.log_task, [(t, 500) for t in range(4)], chunksize=1)
    finally:
        lg = logging.getLogger(w.LOGGER)
        lg.removeHandler(h)
        h.close()
    seqs = {t: [] for t in range(4)}
    with open(path, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            assert r["level"] == "info"
            name, rest = r["msg"].split(" ", 1)
            assert name == w.LOGGER
            task, seq = (int(x.split("=")[1]) for x in rest.split(" ")[:2])
            seqs[task].append(seq)
    assert all(seqs[t] == list(range(500)) for t in range(4))


def test_text_records_escape_newlines_and_never_use_the_message_as_a_format(tmp_path):
    path = str(tmp_path / "app.log")
    with forklog.Log(path) as log:
        log.warn("%s %n %d\nsecond line")
        log.write(b"raw %n bytes")
        log.write("raw text\n")
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    assert lines[0].endswith(b" WARN pid=%d %%s %%n %%d\\nsecond line" % os.getpid())
    assert lines[1:] == [b"raw %n bytes", b"raw text", b""]
