# SPDX-License-Identifier: MIT
"""A log of a descriptor the program already has (forklog.Log(fd), forklog.Handler(fd)): a pipe read by another
thread with records far above PIPE_BUF from forked writers, a stream socket, and every bad descriptor."""
import logging
import os
import pickle
import re
import socket
import threading

import pytest

import forklog
from forklog import _native

pytestmark = pytest.mark.skipif(not _native.HAVE_OPEN_FD, reason="the library has no forklog_open_fd()")

WRITERS = 4
PER_WRITER = 200


def _drain(fd, into):
    while True:
        b = os.read(fd, 1 << 16)
        if not b:
            return
        into.append(b)


def _record(w, i):
    # 1 byte to 64 KiB of one letter, after "w i n ": long records leave the pipe in many pieces.
    n = 1 + (w * 7919 + i * 104729) % 65536
    return "%d %d %d %s" % (w, i, n, "abcdefghijklmnopqrstuvwxyz"[(w + i) % 26] * n)


def _read_while(fd, body):
    got = []
    t = threading.Thread(target=_drain, args=(fd, got))
    t.start()
    try:
        body()
    finally:
        t.join(60)
    assert not t.is_alive()
    return b"".join(got)


def test_forked_writers_on_a_pipe_write_whole_records_far_above_pipe_buf():
    r, wfd = os.pipe()
    log = forklog.Log(wfd, max_record=1 << 20)
    assert log.path is None and log.fd == wfd and repr(log) == "<forklog.Log fd %d>" % wfd

    def body():
        pids = []
        for w in range(WRITERS):
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    for i in range(PER_WRITER):
                        log.write(_record(w, i))
                    log.close()
                except BaseException:
                    code = 1
                os._exit(code)
            pids.append(pid)
        for pid in pids:
            assert os.waitpid(pid, 0)[1] == 0
        log.close()
        os.close(wfd)  # the caller's descriptor: the log wrote through a duplicate of its own

    data = _read_while(r, body)
    os.close(r)
    lines = data.split(b"\n")
    assert lines[-1] == b""
    nxt = [0] * WRITERS
    for line in lines[:-1]:
        w, i, n, body_ = line.decode().split(" ", 3)
        w, i, n = int(w), int(i), int(n)
        assert line.decode() == _record(w, i), "a record is not whole: %.60s" % line
        assert i == nxt[w], "writer %d: record %d where %d was due" % (w, i, nxt[w])
        nxt[w] += 1
    assert nxt == [PER_WRITER] * WRITERS


def test_a_handler_of_a_stream_socket_writes_whole_lines_from_forked_processes():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    h = forklog.Handler(a.fileno(), json=True)
    assert repr(h) == "<forklog.Handler fd %d (NOTSET)>" % a.fileno()
    lg = logging.getLogger("forklog.test.descriptors")
    lg.handlers[:] = [h]
    lg.propagate = False
    lg.setLevel(logging.INFO)

    def body():
        pids = []
        for w in range(3):
            pid = os.fork()
            if pid == 0:
                for i in range(300):
                    lg.info("worker %d record %d %s", w, i, "x" * (i * 37 % 9000))
                h.close()
                os._exit(0)
            pids.append(pid)
        for pid in pids:
            assert os.waitpid(pid, 0)[1] == 0
        h.close()
        a.close()

    got = []
    t = threading.Thread(target=lambda: got.append(b.makefile("rb").read()))
    t.start()
    body()
    t.join(60)
    b.close()
    import json
    seen = {}
    for line in got[0].splitlines():
        rec = json.loads(line)
        m = re.fullmatch(r"worker (\d) record (\d+) x*", rec["msg"])
        assert m, rec["msg"][:60]
        w, i = int(m.group(1)), int(m.group(2))
        assert i == seen.get(w, 0)
        seen[w] = i + 1
    assert seen == {0: 300, 1: 300, 2: 300}


@pytest.mark.parametrize("fd", [-1, 2**31, 2**40])
def test_a_descriptor_out_of_range_is_an_option_error(fd):
    with pytest.raises(forklog.OptionError):
        forklog.Log(fd)


def test_bad_descriptors_are_oserrors_and_write_nothing(tmp_path):
    r, wfd = os.pipe()
    os.close(wfd)
    with pytest.raises(OSError) as e:
        forklog.Log(wfd)  # closed
    assert e.value.errno == 9  # EBADF
    d = os.open(str(tmp_path), os.O_RDONLY)
    with pytest.raises(OSError) as e:
        forklog.Log(d)  # a directory
    assert e.value.errno in (21, 22)  # EISDIR, EINVAL
    os.close(d)
    p = tmp_path / "ro.log"
    p.write_text("kept\n")
    ro = os.open(str(p), os.O_RDONLY)
    with pytest.raises(OSError) as e:
        forklog.Log(ro)  # not open for writing
    assert e.value.errno in (9, 22)
    os.close(ro)
    assert p.read_text() == "kept\n"
    os.close(r)


def test_rotation_needs_a_path(tmp_path):
    fd = os.open(str(tmp_path / "a.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    for opt in (dict(rotate_bytes=4096), dict(rotate_keep=3)):
        with pytest.raises(forklog.OptionError):
            forklog.Log(fd, **opt)
    with forklog.Log(fd) as log:
        log.write("one")
    os.close(fd)
    assert (tmp_path / "a.log").read_text() == "one\n"


def test_a_log_or_handler_of_a_descriptor_cannot_be_sent_to_another_process():
    r, wfd = os.pipe()
    log = forklog.Log(wfd)
    with pytest.raises(ValueError, match="descriptor"):
        pickle.dumps(log)
    h = forklog.Handler(wfd)
    with pytest.raises(ValueError, match="descriptor"):
        pickle.dumps(h)
    h.close()
    log.close()
    os.close(wfd)
    os.close(r)


# ---- records after a fork worker's exit close ----------------------------------------------------------------------
# A fork worker closes its logs as it ends, and the records its threads still write after that (threads it has not
# joined yet) go through another handle. A log of a descriptor, or a private one, has a lock that only the processes
# forked after its open share: a handle opened anew for those records would have a lock of its own, and their records
# would interleave in the pipe with those its siblings write meanwhile.
LATE = 40


def _late_writer(log, go):
    def late():
        go.wait()
        for i in range(LATE):
            log.write(_record(0, i) + "x" * 70000)

    threading.Thread(target=late).start()  # not a daemon: the worker waits for it after its exit close


def _busy_writer(log, go):
    go.wait()
    for i in range(LATE):
        log.write(_record(1, i) + "x" * 70000)


@pytest.mark.parametrize("how", ["fd", "private_fifo"])
def test_records_after_a_fork_workers_exit_close_stay_whole_beside_its_siblings(tmp_path, how):
    import multiprocessing as mp

    if how == "fd":
        r, wfd = os.pipe()
        log = forklog.Log(wfd, max_record=1 << 20)
    else:
        fifo = tmp_path / "a.fifo"
        os.mkfifo(str(fifo))
        r = os.open(str(fifo), os.O_RDONLY | os.O_NONBLOCK)
        os.set_blocking(r, True)
        log = forklog.Log(str(fifo), private=True, max_record=1 << 20)
    ctx = mp.get_context("fork")
    go = ctx.Event()

    def body():
        procs = [ctx.Process(target=f, args=(log, go)) for f in (_late_writer, _busy_writer)]
        for p in procs:
            p.start()
        go.set()
        for p in procs:
            p.join(60)
        assert [p.exitcode for p in procs] == [0, 0]
        log.close()
        if how == "fd":
            os.close(wfd)

    data = _read_while(r, body)
    os.close(r)
    lines = data.split(b"\n")
    assert lines[-1] == b""
    nxt = [0, 0]
    for line in lines[:-1]:
        w, i, _ = line.split(b" ", 2)
        w, i = int(w), int(i)
        whole = line.decode() == _record(w, i) + "x" * 70000  # not in the assert: pytest would print both
        assert whole, "a record is not whole: %.60s" % line
        assert i == nxt[w]
        nxt[w] += 1
    assert nxt == [LATE, LATE]
