# SPDX-License-Identifier: MIT
"""The API's contract: bad input, closed logs, errors with errno and explanation, the library not found, the
Handler that never raises, fork, pickling, and the options struct matching the C header."""
import errno
import fcntl
import logging
import os
import pickle
import shutil
import struct
import subprocess
import sys
import termios
import threading
import time

import pytest

import forklog
from forklog import _native

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# ---- bad input: ValueError before anything is opened ---------------------------------------------------------------
@pytest.mark.parametrize("level", ["loud", "", 0, 5, -1, True, 2.0, None, logging.INFO])
def test_bad_level_is_a_value_error(tmp_path, level):
    with pytest.raises(ValueError):
        forklog.Log(str(tmp_path / "a.log"), level=level)
    assert not os.path.exists(tmp_path / "a.log")


@pytest.mark.parametrize("options", [
    dict(json=1), dict(buffered="yes"), dict(sync=None), dict(private=0),
    dict(rotate_bytes="1"), dict(rotate_bytes=-1), dict(rotate_bytes=1.5), dict(rotate_bytes=2**64),
    dict(rotate_keep=1001), dict(rotate_keep=-1), dict(max_record=10), dict(max_record=2**31),
    dict(buffer_size=100), dict(flush_ms=-5), dict(flush_ms=2**32), dict(mode=0o10000), dict(mode="644"),
    dict(owner=-1), dict(group="staff"), dict(owner=2**32 - 1),
])
def test_bad_option_is_a_value_error_and_creates_nothing(tmp_path, options):
    with pytest.raises(ValueError) as e:
        forklog.Log(str(tmp_path / "a.log"), **options)
    assert isinstance(e.value, forklog.OptionError)
    assert not os.listdir(tmp_path)


def test_options_bad_together_are_an_option_error_and_create_nothing(tmp_path):
    # Each valid alone; together, the prefix of every record (a 64-byte name, JSON with the ECS keys: 233 bytes)
    # leaves no room in max_record for a message. The C library refuses them with EINVAL: a bad option.
    with pytest.raises(forklog.OptionError, match="max_record 256 is too small"):
        forklog.Log(str(tmp_path / "a.log"), max_record=256, name="n" * 64, json=True, keys="ecs")
    with pytest.raises(forklog.OptionError):
        forklog.Handler(str(tmp_path / "a.log"), max_record=256, name="n" * 64, json=True, keys="ecs", tid=True)
    assert not os.listdir(tmp_path)


def test_a_setting_that_conflicts_with_the_logs_users_is_an_oserror(tmp_path):
    # Not a bad option: the same value is fine for a log nobody uses. OSError (EINVAL) naming the conflict.
    path = str(tmp_path / "a.log")
    with forklog.Log(path, rotate_bytes=1 << 20) as log:
        with pytest.raises(OSError) as e:
            forklog.Log(path, rotate_bytes=1 << 21)
        assert not isinstance(e.value, ValueError)
        assert e.value.errno == errno.EINVAL and "rotate_bytes 2097152 conflicts with 1048576" in str(e.value)
        log.write("kept")
    assert (tmp_path / "a.log").read_text() == "kept\n"


@pytest.mark.parametrize("path", ["", 1.5, None, "a\0b", b"", True])
def test_bad_path_is_a_value_error(path):
    with pytest.raises(ValueError):
        forklog.Log(path)


def test_unknown_keyword_is_an_option_error(tmp_path):
    # A misspelt option is a bad option like any other: OptionError, which is a ValueError and a TypeError.
    for make in (lambda: forklog.Log(str(tmp_path / "a.log"), rotate=5),
                 lambda: forklog.Handler(str(tmp_path / "a.log"), rotate_byte=10**6),
                 lambda: forklog.Handler(str(tmp_path / "a.log"), levle="warn")):
        with pytest.raises(forklog.OptionError, match="no option named"):
            make()
    assert not os.path.exists(tmp_path / "a.log")
    for keys in (["ecs"], {}, None):  # a value of the wrong type, hashable or not
        with pytest.raises(forklog.OptionError):
            forklog.Log(str(tmp_path / "a.log"), keys=keys)


def test_bad_level_or_message_on_an_open_log(tmp_path):
    with forklog.Log(str(tmp_path / "a.log")) as log:
        with pytest.raises(ValueError):
            log.log("loud", "x")
        with pytest.raises(ValueError):
            log.log(9, "x")
        with pytest.raises(ValueError):
            log.info(123)
        with pytest.raises(ValueError):
            log.write(None)
    assert os.path.getsize(tmp_path / "a.log") == 0


def test_closed_log_is_a_value_error_everywhere(tmp_path):
    log = forklog.Log(str(tmp_path / "a.log"))
    assert not log.closed
    log.close()
    assert log.closed
    for call in (lambda: log.info("x"), lambda: log.log("error", "x"), lambda: log.write(b"x"), log.flush,
                 log.reopen, lambda: log.__enter__(), lambda: pickle.dumps(log)):
        with pytest.raises(ValueError):
            call()
    log.close()  # twice: nothing


def test_levels_below_the_minimum_are_not_written(tmp_path):
    path = tmp_path / "a.log"
    with forklog.Log(str(path), level="warn") as log:
        assert log.debug("no") == 0 and log.info("no") == 0
        log.warn("yes")
        log.error("yes")
    assert [ln.split()[1] for ln in path.read_text().splitlines()] == ["WARN", "ERROR"]


def test_a_long_record_is_cut_and_the_count_returned(tmp_path):
    with forklog.Log(str(tmp_path / "a.log"), max_record=256) as log:
        assert log.write(b"x" * 1000) > 0
        assert log.info("y" * 1000) > 0
    for line in (tmp_path / "a.log").read_bytes().split(b"\n")[:-1]:
        assert len(line) < 256 and b"bytes cut]" in line


# ---- errors with errno and explanation -------------------------------------------------------------------------
def test_write_error_is_an_oserror_with_errno():
    with forklog.Log("/dev/full") as log:
        with pytest.raises(OSError) as e:
            log.info("x")
        assert e.value.errno == errno.ENOSPC
        assert os.strerror(errno.ENOSPC) in str(e.value) and "nothing of the record" in str(e.value)
        with pytest.raises(OSError) as e:
            log.write(b"x" * 10000)
        assert e.value.errno == errno.ENOSPC


def _fifo_reader(path):
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    os.set_blocking(fd, True)
    return fd


def test_a_fifo_whose_reader_goes_away_is_a_broken_pipe_error_and_the_next_reader_gets_whole_lines(tmp_path):
    # A log shipper that restarts: the reader of the FIFO goes away in the middle of a record larger than the pipe,
    # then comes back. Log raises BrokenPipeError; the Handler hands it to handleError() and never raises; the next
    # reader gets what went out of the cut record on a line of its own, then every later record whole.
    path = str(tmp_path / "fifo")
    os.mkfifo(path)
    rfd = _fifo_reader(path)
    log = forklog.Log(path)
    h = _Recording(path)
    lg = _logger("forklog-fifo", h)
    t = threading.Thread(target=lambda: (os.read(rfd, 1000), time.sleep(0.2), os.close(rfd)))
    t.start()
    with pytest.raises(BrokenPipeError) as e:
        log.write(b"A" * 200000)  # more than the pipe holds: the reader leaves while it is written
    t.join()
    assert e.value.errno == errno.EPIPE and "reader" in str(e.value)
    with pytest.raises(BrokenPipeError):
        log.info("no reader")
    lg.info("no reader either")  # no exception here
    assert len(h.errors) == 1 and h.errors[0][1].errno == errno.EPIPE
    rfd = _fifo_reader(path)
    chunks = []

    def drain():  # the fragment fills the pipe: the next records go in only as it is read
        while True:
            b = os.read(rfd, 65536)
            if not b:
                break
            chunks.append(b)

    t = threading.Thread(target=drain)
    t.start()
    log.info("next record")
    lg.info("handler record")
    log.close()
    h.close()
    t.join(60)
    os.close(rfd)
    got = b"".join(chunks)
    lines = got.split(b"\n")
    assert lines[-1] == b"" and len(lines) == 4, lines[:-1]
    assert lines[0] and set(lines[0]) == {ord("A")} and len(lines[0]) < 200000 - 1000
    assert lines[1].endswith(b" INFO pid=%d next record" % os.getpid()), lines[1]
    assert lines[2].endswith(b" INFO pid=%d handler record" % os.getpid()), lines[2]


def test_open_error_is_an_oserror_with_errno_and_path(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        forklog.Log(str(tmp_path / "missing" / "a.log"))
    assert e.value.errno == errno.ENOENT and e.value.filename.endswith("a.log")
    with pytest.raises(IsADirectoryError):
        forklog.Log(str(tmp_path))


def _run(code, env_update, unset=()):
    env = dict(os.environ)
    env.update(env_update)
    for k in unset:
        env.pop(k, None)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)


def test_missing_library_is_an_import_error_with_the_hint():
    r = _run("import forklog", {"FORKLOG_LIBRARY": "/nonexistent/libforklog.so.0"})
    assert r.returncode != 0
    assert "ImportError" in r.stderr
    assert "FORKLOG_LIBRARY=/path/to/libforklog.so.0" in r.stderr


def test_a_library_that_is_not_libforklog_is_an_import_error_with_the_hint():
    # A library that loads but is not libforklog (a wrong path in FORKLOG_LIBRARY): ImportError, as README.md
    # promises for a library that cannot be loaded, so that `except ImportError` still catches it.
    import ctypes.util

    other = ctypes.util.find_library("m") or "libm.so.6"
    r = _run("import forklog", {"FORKLOG_LIBRARY": other})
    assert r.returncode != 0
    assert "ImportError" in r.stderr and "AttributeError" not in r.stderr, r.stderr
    assert "forklog_open" in r.stderr and "FORKLOG_LIBRARY=/path/to/libforklog.so.0" in r.stderr


def test_library_not_on_the_loader_path_is_an_import_error_with_the_hint():
    import ctypes.util

    if ctypes.util.find_library("forklog"):
        pytest.skip("libforklog is installed system-wide here")
    r = _run("import forklog", {"LD_LIBRARY_PATH": ""}, unset=["FORKLOG_LIBRARY"])
    assert r.returncode != 0 and "ImportError" in r.stderr
    assert "FORKLOG_LIBRARY=/path/to/libforklog.so.0" in r.stderr and "install" in r.stderr


def test_library_found_through_the_loader_path():
    lib_dir = os.path.dirname(os.path.realpath(os.environ["FORKLOG_LIBRARY"]))
    r = _run("import forklog; print(forklog.library_version())", {"LD_LIBRARY_PATH": lib_dir},
             unset=["FORKLOG_LIBRARY"])
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == forklog.library_version()


# ---- the Handler never raises -------------------------------------------------------------------------------------
class _Recording(forklog.Handler):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.errors = []

    def handleError(self, record):
        self.errors.append((record, sys.exc_info()[1]))


def _logger(name, handler):
    lg = logging.getLogger(name)
    lg.propagate = False
    lg.setLevel(logging.DEBUG)
    lg.handlers[:] = [handler]
    return lg


def test_handler_on_a_closed_log_calls_handle_error(tmp_path):
    h = _Recording(str(tmp_path / "a.log"))
    lg = _logger("forklog-closed", h)
    h.log.close()
    lg.info("lost")  # no exception here
    assert len(h.errors) == 1 and isinstance(h.errors[0][1], ValueError)
    h.close()
    h.close()


def test_handler_write_error_calls_handle_error():
    h = _Recording("/dev/full")
    lg = _logger("forklog-full", h)
    lg.error("lost")
    assert len(h.errors) == 1 and h.errors[0][1].errno == errno.ENOSPC
    h.close()


def test_handler_with_logging_own_handle_error_prints_and_goes_on(tmp_path, capsys):
    h = forklog.Handler(str(tmp_path / "a.log"))
    lg = _logger("forklog-default", h)
    h.log.close()
    lg.warning("lost %d", 1)
    assert "Logging error" in capsys.readouterr().err
    h.close()


def test_handler_bad_format_arguments_call_handle_error(tmp_path):
    h = _Recording(str(tmp_path / "a.log"))
    lg = _logger("forklog-format", h)
    lg.info("%d", "not a number")
    assert len(h.errors) == 1
    h.close()


def test_handler_levels_map_onto_forklog(tmp_path):
    path = tmp_path / "a.log"
    h = forklog.Handler(str(path))
    lg = _logger("forklog-levels", h)
    lg.setLevel(1)
    for lv in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL, 25, 5):
        lg.log(lv, "m")
    h.close()
    assert [ln.split()[1] for ln in path.read_text().splitlines()] == \
        ["DEBUG", "INFO", "WARN", "ERROR", "ERROR", "INFO", "DEBUG"]


def test_handler_level_and_raw_mode(tmp_path):
    path = tmp_path / "a.log"
    h = forklog.Handler(str(path), level=logging.WARNING, raw=True)
    h.setFormatter(logging.Formatter("%(levelname)s:%(name)s:%(message)s"))
    lg = _logger("forklog-raw", h)
    lg.info("dropped")
    lg.warning("kept\nsecond line")
    h.close()
    assert path.read_text() == "WARNING:forklog-raw:kept\nsecond line\n"
    with pytest.raises(ValueError):
        forklog.Handler(str(path), raw=True, json=True)
    with pytest.raises(ValueError):
        forklog.Handler(str(path), level="loud")
    for name in ("CRITICAL", "critical", "fatal"):  # logging's names above forklog's
        h = forklog.Handler(str(path), level=name)
        assert h.level == logging.CRITICAL
        h.close()


def test_handler_raw_mode_writes_what_filehandler_writes(tmp_path):
    fmt = logging.Formatter("%(levelname)s:%(message)s")
    msgs = ["plain", "ends with a newline\n", "two\n\n", ""]
    for cls, name in ((logging.FileHandler, "file.log"), (forklog.Handler, "forklog.log")):
        h = cls(str(tmp_path / name)) if cls is logging.FileHandler else cls(str(tmp_path / name), raw=True)
        h.setFormatter(fmt)
        lg = _logger("forklog-raw-" + name, h)
        for m in msgs:
            lg.warning(m)
        h.close()
    assert (tmp_path / "forklog.log").read_bytes() == (tmp_path / "file.log").read_bytes()


class _TaggedHandler(forklog.Handler):
    def format(self, record):
        return "[svc] " + super().format(record)


class _NoSecrets(logging.Filter):
    def filter(self, record):
        return "password" not in record.getMessage()


def _wait_child(pid, hung, timeout=10):
    """The wait status of the child pid; the test fails with the message `hung` (the child killed) past timeout s."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail(hung)
        time.sleep(0.001)


# ---- fork and pickling ---------------------------------------------------------------------------------------------
def test_a_forked_child_uses_the_inherited_log_and_its_close_leaves_the_parents(tmp_path):
    path = tmp_path / "a.log"
    log = forklog.Log(str(path))
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            log.info("child")
            log.close()
            code = 0 if log.closed else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    log.info("parent")
    log.close()
    assert [ln.split(None, 3)[3] for ln in path.read_text().splitlines()] == ["child", "parent"]


def test_fork_while_another_thread_logs_never_deadlocks_the_child(tmp_path):
    path = tmp_path / "a.log"
    log = forklog.Log(str(path))
    stop = threading.Event()

    def hammer():
        while not stop.is_set():
            log.info("thread")

    t = threading.Thread(target=hammer)
    t.start()
    try:
        for _ in range(30):
            pid = os.fork()
            if pid == 0:
                try:
                    log.info("child")
                    log.close()
                finally:
                    os._exit(0)
            _wait_child(pid, "a child forked while a thread was logging hung")
    finally:
        stop.set()
        t.join()
    log.close()
    assert path.read_text().count(" child\n") == 30


@pytest.mark.parametrize("how", ["log", "handler"])
def test_fork_while_another_thread_is_inside_the_c_close_never_deadlocks_the_child(tmp_path, monkeypatch, how):
    # A thread of the parent closes the log (a Handler's close(), logging.shutdown()) and is inside the C close when
    # another thread forks. The child has none of the parent's threads: its close() (or a worker's close at its end,
    # or logging.shutdown() at its exit) must not wait for the parent's closing thread. forklog_close is held until
    # the fork is done, so that the fork lands there every time.
    path = tmp_path / "a.log"
    if how == "log":
        log = forklog.Log(str(path))
        close = log.close
    else:
        h = forklog.Handler(str(path))
        log, close = h.log, h.close
    real_close = _native.lib.forklog_close
    inside, go = threading.Event(), threading.Event()

    def held_close(handle):
        inside.set()
        go.wait(10)
        return real_close(handle)

    monkeypatch.setattr(_native.lib, "forklog_close", held_close)
    t = threading.Thread(target=close)
    t.start()
    try:
        assert inside.wait(10)
        pid = os.fork()
        if pid == 0:
            try:
                close()
                os._exit(0 if log.closed else 1)
            finally:
                os._exit(2)
        status = _wait_child(pid, "a child forked while another thread was inside the C close hung in close()")
    finally:
        go.set()
        t.join()
    assert os.waitstatus_to_exitcode(status) == 0
    assert log.closed


def test_close_waits_for_other_threads_calls(tmp_path):
    log = forklog.Log(str(tmp_path / "a.log"))
    errors = []

    def writer():
        try:
            while True:
                log.write(b"x" * 100000)
        except ValueError:
            pass  # closed: the expected end
        except Exception as e:  # pragma: no cover
            errors.append(e)

    ts = [threading.Thread(target=writer) for _ in range(3)]
    for t in ts:
        t.start()
    time.sleep(0.05)
    log.close()
    for t in ts:
        t.join()
    assert not errors


def _wait_until_the_pipe_holds_bytes(rfd, what):
    """Waits (at most 10 s) until the pipe read through rfd holds a byte: the writer of a record larger than the pipe
    is then inside its C call, where it stays until the test reads."""
    deadline = time.monotonic() + 10
    while struct.unpack("i", fcntl.ioctl(rfd, termios.FIONREAD, b"\0\0\0\0"))[0] == 0:
        assert time.monotonic() < deadline, what
        time.sleep(0.001)


def test_a_second_close_from_another_thread_waits_for_the_first(tmp_path):
    # Two threads close one log (logging.shutdown() at exit while another thread closes the handler) while a third
    # is inside a call. The close() that takes the handle waits for that call; the other must not return before the
    # log is closed either. The log is a FIFO, so that the test decides when the write may end.
    path = str(tmp_path / "fifo")
    os.mkfifo(path)
    rfd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    os.set_blocking(rfd, True)
    log = forklog.Log(path)
    size = 200000  # more than a pipe holds: the write blocks until the test reads
    state = {}

    def writer():
        log.write(b"w" * size)
        state["written"] = True

    def closer(name):
        log.close()
        state[name] = state.get("written", False)  # was the writer's call over when close() returned?

    w = threading.Thread(target=writer)
    w.start()
    _wait_until_the_pipe_holds_bytes(rfd, "the writer's call wrote nothing")  # the writer is inside its call
    a = threading.Thread(target=closer, args=("a",))
    a.start()
    time.sleep(0.1)  # a has taken the handle and waits for the writer's call
    b = threading.Thread(target=closer, args=("b",))
    b.start()
    b.join(0.3)
    b_returned_early = not b.is_alive()
    n = size + 1  # the record and its newline
    while n > 0:
        n -= len(os.read(rfd, min(n, 65536)))
    for t in (w, a, b):
        t.join(10)
    os.close(rfd)
    assert not b_returned_early, "the second close() returned while the log was still open"
    assert state == {"written": True, "a": True, "b": True}
    assert log.closed


def test_a_close_interrupted_by_a_signal_handlers_close_goes_on(tmp_path):
    # A signal handler that closes the log again while this thread's own close() waits for another thread's call
    # returns at once (waiting there would wait for itself); the interrupted close() then goes on and closes.
    import signal

    path = str(tmp_path / "fifo")
    os.mkfifo(path)
    rfd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    os.set_blocking(rfd, True)
    log = forklog.Log(path)
    size = 200000
    w = threading.Thread(target=log.write, args=(b"w" * size,))
    w.start()
    _wait_until_the_pipe_holds_bytes(rfd, "the writer's call wrote nothing")  # the writer is inside its call
    seen = []

    def on_alarm(signo, frame):
        log.close()
        seen.append(log.closed)
        n = size + 1
        while n > 0:
            n -= len(os.read(rfd, min(n, 65536)))

    old = signal.signal(signal.SIGALRM, on_alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        log.close()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    w.join(10)
    os.close(rfd)
    assert seen == [True] and log.closed and not w.is_alive()


def test_close_waits_even_when_a_finishing_call_takes_the_close_over(tmp_path):
    # close() hands the C close to whoever finishes last; a call of thread A that ends between close() leaving
    # the close pending and taking it back takes it over, and then waits for the calls still in flight (thread
    # C's) itself. close() must still return only once those calls are over and the log is closed. The log is a
    # FIFO, so that the test decides when each write may end; close() is held at the hand-over (a trace function,
    # as a crash point would) until A has taken the close.
    path = str(tmp_path / "fifo")
    os.mkfifo(path)
    rfd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    os.set_blocking(rfd, True)
    log = forklog.Log(path)
    size = 200000  # more than a pipe holds: a write blocks until the test reads
    done = {}

    def writer(name):
        log.write(name.encode() * size)
        done[name] = True

    def drain(n):
        while n > 0:
            n -= len(os.read(rfd, min(n, 65536)))

    a = threading.Thread(target=writer, args=("a",))
    a.start()
    while len(log._calls) < 1:
        time.sleep(0.001)
    c = threading.Thread(target=writer, args=("c",))
    c.start()
    while len(log._calls) < 2:
        time.sleep(0.001)
    time.sleep(0.05)  # A is blocked in write(2), C on the log's lock behind it
    late = threading.Timer(0.2, drain, (size + 1,))  # C's record, read while close() is (to be) waiting

    def hold_the_hand_over(frame, event, arg):
        if event == "call" and frame.f_code.co_name == "_close_pending":
            sys.settrace(None)
            drain(size + 1)  # A's record: A's call ends and finds the close pending, while C's call goes on
            deadline = time.monotonic() + 10
            while log._pending and time.monotonic() < deadline:
                time.sleep(0.001)
            late.start()
        return None

    sys.settrace(hold_the_hand_over)
    try:
        log.close()
        c_was_done = done.get("c", False)
        c_in_flight = len(log._calls)
    finally:
        sys.settrace(None)
        if late.ident is not None:
            late.join()
        a.join()
        c.join()
        os.close(rfd)
    assert c_was_done and c_in_flight == 0, "close() returned while another thread's call was in progress"


def test_a_pickled_log_opens_the_same_path(tmp_path):
    path = tmp_path / "a.log"
    with forklog.Log(str(path), json=True) as log:
        with pickle.loads(pickle.dumps(log)) as copy:
            assert copy.path == log.path and copy is not log
            copy.info("from the copy")
    assert '"msg":"from the copy"' in path.read_text()


# ---- the ctypes mirror of struct forklog_options -------------------------------------------------------------------
def _c_layout(tmp_path, struct, fields, guard=None):
    """{field: (offset, size)} and "size": (sizeof, alignof) of `struct` as the C compiler lays it out with the
    repository's header; None when `guard` (a macro) is not defined there."""
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        pytest.skip("no C compiler")
    src = tmp_path / "layout.c"
    body = "".join('    printf("%s %%zu %%zu\\n", offsetof(struct %s, %s), sizeof(((struct %s *)0)->%s));\n'
                   % (f, struct, f, struct, f) for f in fields)
    src.write_text(
        "#include <stddef.h>\n#include <stdio.h>\n#include <forklog.h>\nint main(void) {\n"
        + ("#ifndef %s\n    return 3;\n#else\n" % guard if guard else "")
        + '    printf("size %%zu %%zu\\n", sizeof(struct %s), _Alignof(struct %s));\n' % (struct, struct)
        + body + ("#endif\n" if guard else "") + "    return 0;\n}\n")
    exe = tmp_path / "layout"
    subprocess.run([cc, "-std=c11", "-I", os.path.join(REPO, "include"), str(src), "-o", str(exe)], check=True)
    r = subprocess.run([str(exe)], capture_output=True, text=True)
    if r.returncode == 3:
        return None
    assert r.returncode == 0
    return dict((ln.split()[0], tuple(map(int, ln.split()[1:]))) for ln in r.stdout.splitlines())


def _check_layout(out, cstruct):
    import ctypes

    assert out.pop("size") == (ctypes.sizeof(cstruct), ctypes.alignment(cstruct)), \
        "the size of %s changed: update forklog/_native.py" % cstruct.__name__
    for f, ctype in cstruct._fields_:
        assert out[f] == (getattr(cstruct, f).offset, ctypes.sizeof(ctype)), f


def test_options_struct_matches_the_c_header(tmp_path):
    out = _c_layout(tmp_path, "forklog_options", [f[0] for f in _native.Options._fields_])
    _check_layout(out, _native.Options)


def test_field_struct_matches_the_c_header(tmp_path):
    out = _c_layout(tmp_path, "forklog_field", [f[0] for f in _native.Field._fields_], guard="FORKLOG_MAX_FIELDS")
    if out is None:
        pytest.skip("this header has no struct forklog_field")
    _check_layout(out, _native.Field)
    assert _native.MAX_FIELDS == 64 and _native.MAX_KEY == 64


def test_a_pickled_handler_keeps_its_class_filters_and_name(tmp_path):
    h = _TaggedHandler(str(tmp_path / "a.log"), level=logging.INFO)
    h.addFilter(_NoSecrets())
    h.set_name("audit")
    h.setFormatter(logging.Formatter("%(message)s"))
    h3 = _TaggedHandler(str(tmp_path / "b.log"))
    h3.setLevel(3)  # a logging level below DEBUG, which the constructor would read as a forklog level
    h4 = pickle.loads(pickle.dumps(h3))
    assert h4.level == 3
    h3.close()
    h4.close()
    h2 = pickle.loads(pickle.dumps(h))
    try:
        assert type(h2) is _TaggedHandler and h2.get_name() == "audit" and h2.level == logging.INFO
        assert [type(f) for f in h2.filters] == [_NoSecrets]
        lg = _logger("forklog-pickled", h2)
        lg.info("password=hunter2")
        lg.info("item 1")
    finally:
        h2.close()
        h.close()
    assert [ln.split(" ", 3)[3] for ln in (tmp_path / "a.log").read_text().splitlines()] == ["[svc] item 1"]


def test_an_exception_of_a_signal_handler_anywhere_in_close_leaves_a_log_that_close_closes(tmp_path):
    # Python runs a signal handler (and raises its exception, KeyboardInterrupt or any other) right after a call
    # instruction returns. Wherever that lands in close() (right after the handle was taken from its list, before
    # it is given back, after the C close returned...), a later close() must close the log, exactly once: the
    # segment file is gone and the log's records are in the file.
    import dis
    import sys

    class Interrupt(BaseException):
        pass

    codes = {forklog.Log.close.__code__, forklog.Log._close_pending.__code__}
    after_call = set()  # (code, offset) of each instruction that follows a call
    for code in codes:
        prev = None
        for ins in dis.get_instructions(code):
            if prev is not None and prev.opname.startswith("CALL"):
                after_call.add((code, ins.offset))
            prev = ins
    path = tmp_path / "a.log"
    k = 0
    while True:
        log = forklog.Log(str(path), buffered=True)
        log.info("r%d" % k)
        seen = [0]

        def trace(frame, event, arg):
            if frame.f_code not in codes:
                return None
            frame.f_trace_opcodes = True
            if event == "opcode" and (frame.f_code, frame.f_lasti) in after_call:
                seen[0] += 1
                if seen[0] == k + 1:
                    raise Interrupt()
            return trace

        sys.settrace(trace)
        try:
            log.close()
            interrupted = False
        except Interrupt:
            interrupted = True
        finally:
            sys.settrace(None)
        log.close()
        assert log.closed, "point %d: a second close() left the log open" % k
        assert not os.path.exists(tmp_path / ".a.log.forklog"), "point %d: the log was not closed" % k
        assert path.read_text().count("r%d" % k) == 1
        if not interrupted:
            break
        k += 1
    assert k > 3
