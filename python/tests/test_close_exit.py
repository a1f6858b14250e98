# SPDX-License-Identifier: MIT
"""Closing a log from a signal handler in the middle of a call, the order of things at interpreter exit, and the
levels of a Handler's log."""
import logging
import os
import re
import subprocess
import sys
import textwrap

import pytest

import forklog

TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z [A-Z]+ pid=\d+ .*$")


def _run(code, *args, timeout=60):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)] + [str(a) for a in args],
                          capture_output=True, text=True, timeout=timeout)


# ---- close() from a signal handler while the same thread is inside a call ------------------------------------------
# A SIGALRM fires every 0.5 ms during a burst of records; its handler closes the log the first time it finds this
# thread inside a call (the C call returned, the call not yet finished): what a SIGTERM handler that calls
# logging.shutdown() does. The program must finish, and every record up to the close must be whole.
SIGCLOSE = """
    import logging, signal, sys, threading, time, forklog
    path, how, threads = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
    if how == "log":
        log = forklog.Log(path)
        closer, emit, calls = log.close, lambda n: log.info("record %d" % n), log._calls
    else:
        h = forklog.Handler(path)
        lg = logging.getLogger("x")
        lg.addHandler(h)
        lg.setLevel(logging.INFO)
        lg.propagate = False
        log = h.log
        closer = logging.shutdown if how == "shutdown" else h.close
        emit, calls = lambda n: lg.info("record %d", n), log._calls
    logging.raiseExceptions = False
    me = threading.get_ident()
    hit = []

    def on_alarm(*a):
        # Inside a call: this thread's entry is among the calls in flight (alone, without the other thread).
        if (me in calls) if threads else calls:
            signal.setitimer(signal.ITIMER_REAL, 0)
            hit.append(1)
            closer()

    other = {"n": 0}

    def other_thread():  # another thread logs meanwhile: the deferred close must wait for its calls too
        while True:
            try:
                log.info("other %d" % other["n"])
            except ValueError:
                return
            other["n"] += 1

    signal.signal(signal.SIGALRM, on_alarm)
    t = threading.Thread(target=other_thread)
    if threads:
        t.start()
    signal.setitimer(signal.ITIMER_REAL, 0.0005, 0.0005)
    n, t0 = 0, time.monotonic()
    while not log.closed and time.monotonic() - t0 < 20:
        try:
            emit(n)
        except ValueError:
            break
        n += 1
    signal.setitimer(signal.ITIMER_REAL, 0)
    if threads:
        t.join()
    print(len(hit), log.closed, n, other["n"])
"""


@pytest.mark.parametrize("threads", [0, 1])
@pytest.mark.parametrize("how", ["handler", "shutdown", "log"])
def test_close_from_a_signal_handler_inside_a_call(tmp_path, how, threads):
    path = tmp_path / "a.log"
    r = _run(SIGCLOSE, path, how, threads, timeout=30)
    assert r.returncode == 0, r.stderr
    hit, closed, n, other = r.stdout.split()
    assert hit == "1" and closed == "True", r.stdout
    text = path.read_text()
    assert text.endswith("\n")
    lines = text.splitlines()
    for line in lines:
        assert TEXT_LINE.match(line), line
    mine = [line for line in lines if " record " in line]
    assert len(mine) == int(n) > 0
    assert [int(line.rsplit(" ", 1)[1]) for line in mine] == list(range(len(mine)))
    assert len(lines) - len(mine) == int(other)


# An exception raised by a signal handler (KeyboardInterrupt, or a handler's own) can end a call at any
# instruction: the call must never leave its entry behind, or a later close() would wait for it for ever.
INTERRUPTS = """
    import logging, signal, sys, time, forklog
    path, how = sys.argv[1], sys.argv[2]
    h = forklog.Handler(path)
    lg = logging.getLogger("x")
    lg.addHandler(h)
    lg.setLevel(logging.INFO)
    lg.propagate = False
    log = h.log if how == "handler" else forklog.Log(path)

    class Stop(BaseException):
        pass

    # The handler raises only while armed, and disarms itself: only the calls inside the try below are ended by
    # it, never the test's own loop.
    armed = False

    def on_alarm(*a):
        global armed
        if armed:
            armed = False
            raise Stop()

    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, 0.0003, 0.0003)
    n, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < 0.5:
        try:
            armed = True
            while True:
                if how == "handler":
                    lg.info("r")
                elif how == "write":
                    log.write("r")
                else:
                    log.info("r")
        except Stop:
            n += 1
    armed = False
    signal.setitimer(signal.ITIMER_REAL, 0)
    left = len(log._calls)
    log.close()
    print(n, left)
"""


@pytest.mark.parametrize("how", ["handler", "log", "write"])
def test_a_call_ended_by_a_signal_handlers_exception_leaves_no_entry(tmp_path, how):
    r = _run(INTERRUPTS, tmp_path / "a.log", how, timeout=30)
    assert r.returncode == 0, r.stderr
    n, left = r.stdout.split()
    assert int(n) > 10 and left == "0", r.stdout


# ---- interpreter exit -----------------------------------------------------------------------------------------------
# An exit callback registered before forklog was imported (a library's own, that logs "shutting down") runs after
# the callbacks registered later, forklog's among them: its record must still reach the log, and the log must still
# be closed in the end (the last user of a log removes its segment file .NAME.forklog).
AT_EXIT = """
    import atexit, logging, sys
    path, how, buffered = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
    if how == "handler":
        atexit.register(lambda: logging.getLogger("app").warning("shutting down"))
    else:
        atexit.register(lambda: log.warn("shutting down"))
    import forklog
    if how == "handler":
        logging.getLogger().addHandler(forklog.Handler(path, buffered=buffered))
        logging.getLogger("app").warning("running")
    else:
        log = forklog.Log(path, buffered=buffered)
        log.warn("running")
"""


@pytest.mark.parametrize("buffered", [0, 1])
@pytest.mark.parametrize("how", ["handler", "log"])
def test_a_record_written_by_an_earlier_exit_callback_is_kept(tmp_path, how, buffered):
    path = tmp_path / "a.log"
    r = _run(AT_EXIT, path, how, buffered)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    lines = path.read_text().splitlines()
    assert [line.split(" ", 3)[3] for line in lines] == ["running", "shutting down"], lines
    assert sorted(os.listdir(tmp_path)) == ["a.log"]


# An exit callback registered before logging was imported runs after logging.shutdown(), which has closed every
# Handler by then: its record must still reach the log (logging.FileHandler reopens its file for it), through a
# handle of the log opened for that record alone, and the log's segment file must still be gone in the end.
AT_EXIT_BEFORE_LOGGING = """
    import atexit, sys
    path, buffered = sys.argv[1], sys.argv[2] == "1"
    atexit.register(lambda: sys.modules["logging"].getLogger("app").warning("shutting down"))
    import logging, forklog
    logging.getLogger().addHandler(forklog.Handler(path, buffered=buffered))
    logging.getLogger("app").warning("running")
"""


@pytest.mark.parametrize("buffered", [0, 1])
def test_a_record_written_by_an_exit_callback_after_logging_shutdown_is_kept(tmp_path, buffered):
    path = tmp_path / "a.log"
    r = _run(AT_EXIT_BEFORE_LOGGING, path, buffered)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    lines = path.read_text().splitlines()
    assert [line.split(" ", 3)[3] for line in lines] == ["running", "shutting down"], lines
    assert sorted(os.listdir(tmp_path)) == ["a.log"]


# The same on stdout, a pipe, with a child forked after the handler was made still writing to it: the handler of a
# descriptor has a lock that only the processes forked after its open share, so a handle opened anew for the late
# records would have a lock of its own, and their records of 70 to 135 KiB would be cut into the child's in the pipe.
AT_EXIT_ON_A_PIPE = """
    import atexit, os, sys
    K = 40

    def rec(w, i):
        n = 70000 + (w * 7919 + i * 104729) % 65536
        return "%d %d %s" % (w, i, "abcdefghijklmnopqrstuvwxyz"[(w + i) % 26] * n)

    def late():  # registered before logging: runs after logging.shutdown() closed the handler
        os.write(go_w, b"g")
        for i in range(K):
            sys.modules["logging"].getLogger("app").warning(rec(0, i))

    atexit.register(late)
    import logging, forklog
    logging.getLogger().addHandler(forklog.Handler(sys.stdout.fileno(), raw=True, max_record=1 << 20))
    go_r, go_w = os.pipe()
    if os.fork() == 0:
        os.read(go_r, 1)
        for i in range(K):
            logging.getLogger("app").warning(rec(1, i))
        os._exit(0)
"""


@pytest.mark.skipif(not forklog._native.HAVE_OPEN_FD, reason="the library has no forklog_open_fd()")
def test_records_of_exit_callbacks_after_logging_shutdown_on_a_pipe_stay_whole_beside_a_forked_child(tmp_path):
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(AT_EXIT_ON_A_PIPE)], capture_output=True, timeout=60)
    assert r.returncode == 0 and r.stderr == b"", r.stderr
    lines = r.stdout.split(b"\n")
    assert lines[-1] == b""
    nxt = [0, 0]
    for line in lines[:-1]:
        w, i, body = line.split(b" ", 2)
        w, i = int(w), int(i)
        n = 70000 + (w * 7919 + i * 104729) % 65536
        whole = body == bytes([97 + (w + i) % 26]) * n  # not in the assert: pytest prints both
        assert whole, "a record is not whole: %.60s" % line
        assert i == nxt[w]
        nxt[w] += 1
    assert nxt == [40, 40]


# ---- a Handler's level is the handler's only ----------------------------------------------------------------------
@pytest.mark.parametrize("level", [logging.WARNING, "warn", forklog.ERROR])
def test_a_handlers_level_can_be_lowered_later(tmp_path, level):
    path = tmp_path / "a.log"
    h = forklog.Handler(str(path), level=level)
    lg = logging.getLogger("forklog-setlevel-%s" % level)
    lg.addHandler(h)
    lg.setLevel(logging.DEBUG)
    lg.propagate = False
    try:
        lg.info("dropped by the handler's level")
        h.setLevel(logging.DEBUG)
        lg.debug("debug after setLevel(DEBUG)")
        lg.info("info after setLevel(DEBUG)")
    finally:
        lg.removeHandler(h)
        h.close()
    lines = path.read_text().splitlines()
    assert [line.split(" ", 3)[1:] for line in lines] == [
        ["DEBUG", "pid=%d" % os.getpid(), "debug after setLevel(DEBUG)"],
        ["INFO", "pid=%d" % os.getpid(), "info after setLevel(DEBUG)"],
    ], lines


# ---- records without fields go through a fixed-argument C function ------------------------------------------------
# forklog_log() is variadic, which ctypes cannot declare: the per-record path calls forklog_log_fields() with no
# fields instead (with a library that has it), and the message is written as is, never read as a format.
def test_records_without_fields_use_the_fixed_argument_function(tmp_path):
    from forklog import _native
    from forklog.handler import Handler

    if not _native.HAVE_FIELDS:
        pytest.skip("a library without forklog_log_fields()")
    assert _native.log_msg.__name__ == "forklog_log_fields"
    for code in (forklog.Log._log.__code__, Handler.emit.__code__):
        assert "_log_msg" in code.co_names and "_log_s" not in code.co_names
    path = tmp_path / "a.log"
    msg = "100% %s %n %d \u20ac \\ end"
    h = Handler(str(path))
    lg = logging.getLogger("forklog-fixed-args")
    lg.addHandler(h)
    lg.propagate = False
    try:
        with forklog.Log(str(path)) as log:
            assert log.info(msg) == 0
            lg.warning(msg)
    finally:
        lg.removeHandler(h)
        h.close()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [line.split(" ", 3)[1::2] for line in lines] == [["INFO", msg], ["WARN", msg]], lines


# ---- closing from two places at once ------------------------------------------------------------------------------
# Another thread closes the Handler while this one is inside emit() (held there by a FIFO its reader drains late);
# a SIGTERM handler of this thread then calls logging.shutdown(), which closes the Handler too. Neither may wait for
# the other: the program ends, and the record is whole in the FIFO.
TWO_CLOSERS = """
    import logging, os, signal, sys, threading, time, forklog
    fifo = sys.argv[1]
    os.mkfifo(fifo)
    rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    h = forklog.Handler(fifo)
    lg = logging.getLogger("app")
    lg.addHandler(h)
    lg.setLevel(logging.INFO)
    signal.signal(signal.SIGTERM, lambda *a: logging.shutdown())
    got = []

    def closer():
        time.sleep(0.3)
        h.close()  # waits for the main thread's call

    def killer():
        time.sleep(0.6)
        os.kill(os.getpid(), signal.SIGTERM)  # runs once the main thread's C call returns
        time.sleep(0.3)
        os.set_blocking(rfd, True)
        while True:
            b = os.read(rfd, 1 << 16)
            if not b:
                break
            got.append(b)

    def watchdog():
        time.sleep(10)
        print("deadlock", flush=True)
        os._exit(1)

    threads = [threading.Thread(target=f, daemon=True) for f in (closer, killer, watchdog)]
    for t in threads:
        t.start()
    lg.info("x" * 300000)  # more than the pipe holds: the call waits in write(2)
    threads[0].join(10)
    threads[1].join(10)
    data = b"".join(got)
    print("ok" if data.endswith(b"x" * 300000 + b"\\n") and data.count(b"\\n") == 1 else "bad %d" % len(data))
"""


def test_a_signal_handlers_shutdown_while_another_thread_closes_does_not_deadlock(tmp_path):
    r = _run(TWO_CLOSERS, tmp_path / "app.fifo", timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr


# ---- the end of a multiprocessing worker ----------------------------------------------------------------------------
# A worker closes its logs when it ends normally, before it joins its other threads and before multiprocessing logs
# its own last words: a record written after that close still reaches the log, through a handle opened for it, and
# nothing is reported on stderr.
WORKER_END = """
    import logging, multiprocessing as mp, sys, threading, time, forklog
    path, method = sys.argv[1], sys.argv[2]

    def late(lg):
        time.sleep(0.3)  # the worker's exit has closed its logs by now
        for i in range(50):
            lg.info("late %d", i)

    def target(path):
        h = forklog.Handler(path)
        lg = logging.getLogger("w")
        lg.addHandler(h)
        lg.setLevel(logging.INFO)
        mlg = mp.get_logger()  # multiprocessing's own records, its "process exiting" among them
        mlg.addHandler(h)
        mlg.setLevel(logging.INFO)
        threading.Thread(target=late, args=(lg,)).start()  # not a daemon: the worker waits for it

    if __name__ == "__main__":
        p = mp.get_context(method).Process(target=target, args=(path,))
        p.start()
        p.join()
        print(p.exitcode)
"""


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_records_after_a_workers_exit_close_reach_the_log(tmp_path, method):
    path = tmp_path / "a.log"
    script = tmp_path / "worker_end.py"
    script.write_text(textwrap.dedent(WORKER_END))
    r = subprocess.run([sys.executable, str(script), str(path), method], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "0", r.stdout + r.stderr
    assert r.stderr == "", r.stderr
    lines = path.read_text().splitlines()
    assert [ln.split(" ", 3)[3] for ln in lines if " late " in ln] == ["late %d" % i for i in range(50)], lines
    assert any(ln.endswith("process exiting with exitcode 0") for ln in lines), lines
    assert all(TEXT_LINE.match(ln) for ln in lines), lines
    assert sorted(os.listdir(tmp_path)) == ["a.log", "worker_end.py"]  # the segment file is gone


def test_a_log_closed_by_the_program_still_refuses_calls(tmp_path):
    log = forklog.Log(str(tmp_path / "a.log"))
    log.close()
    for call in (lambda: log.info("x"), lambda: log.write("x"), log.flush, lambda: log.level):
        with pytest.raises(ValueError):
            call()


# ---- threads that keep logging while the log is closed at an exit ---------------------------------------------------
# At interpreter exit (logging.shutdown()) and at a worker's end, the log is closed while threads the program did not
# join (daemon threads) may keep logging; their records then go through a handle opened for each. The close waits for
# the calls that use the handle it closes, not for these: two threads that log without a pause must not hold the
# close (and with it the exit of the process) for ever.
BUSY_THREADS_AT_EXIT = """
    import logging, multiprocessing as mp, sys, threading, time, forklog
    path, how, buffered = sys.argv[1], sys.argv[2], sys.argv[3] == "1"

    def spin(lg, k):
        n = 0
        while True:
            lg.info("bg%d %d", k, n)
            n += 1

    def start(path):
        lg = logging.getLogger("app")
        lg.addHandler(forklog.Handler(path, buffered=buffered))
        lg.setLevel(logging.INFO)
        for k in range(2):
            threading.Thread(target=spin, args=(lg, k), daemon=True).start()
        time.sleep(0.2)

    if __name__ == "__main__":
        if how == "exit":
            start(path)  # then the interpreter exits: logging.shutdown() closes the handler
        else:
            p = mp.get_context(how).Process(target=start, args=(path,))
            p.start()
            p.join(20)
            print(p.exitcode)
            if p.exitcode is None:
                p.kill()
"""


@pytest.mark.parametrize("buffered", [0, 1])
@pytest.mark.parametrize("how", ["exit", "fork", "spawn"])
def test_threads_that_keep_logging_do_not_hold_the_close_at_exit(tmp_path, how, buffered):
    path = tmp_path / "a.log"
    script = tmp_path / "busy.py"
    script.write_text(textwrap.dedent(BUSY_THREADS_AT_EXIT))
    try:
        r = subprocess.run([sys.executable, str(script), str(path), how, str(buffered)], capture_output=True,
                           text=True, timeout=40)
    except subprocess.TimeoutExpired:
        pytest.fail("the process did not exit within 40 s: its close waits for the threads that keep logging")
    assert r.returncode == 0 and r.stdout.strip() == ("" if how == "exit" else "0"), r.stdout + r.stderr
    data = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("a.log"))
    assert data.endswith(b"\n") and data.count(b"\n") > 10
    assert all(TEXT_LINE.match(ln) for ln in data.decode().splitlines())
