# SPDX-License-Identifier: MIT
"""forklog.Handler's per-record path: a record without a formatter is written as logging's default formatter
makes it, filters behave as in logging.Handler, extras are found whatever other handlers did to the record, and
threads write whole records without the handler's lock."""
import io
import json
import logging
import sys
import threading

import pytest

import forklog


def _logger(name, *handlers):
    lg = logging.getLogger(name)
    lg.propagate = False
    lg.setLevel(logging.DEBUG)
    lg.handlers[:] = list(handlers)
    return lg


class _Obj:
    def __str__(self):
        return "an object"


def test_without_a_formatter_the_message_is_what_the_default_formatter_makes(tmp_path):
    path = tmp_path / "a.log"
    h = forklog.Handler(str(path), raw=True)  # raw: the formatted message exactly, so it can be compared
    ref = io.StringIO()
    lg = _logger("forklog-default-format", logging.StreamHandler(ref), h)
    lg.info("plain")
    lg.info("args %s %d", "a", 7)
    lg.info("mapping %(k)s", {"k": "v"})
    lg.info(_Obj())
    lg.info(12)
    lg.info("stack", stack_info=True)
    try:
        raise KeyError("boom")
    except KeyError:
        lg.exception("failed %s", "x")
    h.close()
    assert path.read_text() == ref.getvalue()
    assert "plain\nargs a 7\nmapping v\nan object\n12\nstack\nStack (most recent call last):" in ref.getvalue()
    assert "KeyError: 'boom'" in ref.getvalue()


def test_the_record_gets_its_message_as_with_the_default_formatter(tmp_path):
    seen = []

    class After(logging.Handler):
        def emit(self, record):
            seen.append(record.message)

    h = forklog.Handler(str(tmp_path / "a.log"))
    lg = _logger("forklog-message-attr", h, After())
    lg.info("n=%d", 3)
    h.close()
    assert seen == ["n=3"]


def test_a_formatter_and_a_subclass_format_are_used(tmp_path):
    path = tmp_path / "a.log"

    class Upper(forklog.Handler):
        def format(self, record):
            return record.getMessage().upper()

    h1 = Upper(str(path), raw=True)
    lg = _logger("forklog-subclass-format", h1)
    lg.info("shout %s", "this")
    h1.close()
    h2 = forklog.Handler(str(path), raw=True)
    h2.setFormatter(logging.Formatter("%(levelname)s|%(message)s"))
    lg.handlers[:] = [h2]
    lg.warning("w")
    h2.setFormatter(None)
    lg.warning("default again")
    h2.close()
    assert path.read_text() == "SHOUT THIS\nWARNING|w\ndefault again\n"


def test_filters_drop_records_and_may_add_fields(tmp_path):
    path = tmp_path / "a.jsonl"
    h = forklog.Handler(str(path), json=True)

    def no_secrets(record):
        return "secret" not in record.getMessage()

    class AddUser(logging.Filter):
        def filter(self, record):
            record.user = "ann"
            return True

    h.addFilter(no_secrets)
    h.addFilter(AddUser())
    lg = _logger("forklog-filters", h)
    lg.info("a secret")
    lg.info("public")
    assert h.handle(logging.LogRecord("x", logging.INFO, "", 0, "secret", None, None)) is False
    h.close()
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["msg"], r.get("user")) for r in recs] == [("public", "ann")]


@pytest.mark.skipif(sys.version_info < (3, 12), reason="a filter returns a record from Python 3.12 on")
def test_a_filter_may_return_a_new_record(tmp_path):
    path = tmp_path / "a.log"
    h = forklog.Handler(str(path), raw=True)

    def redact(record):
        return logging.makeLogRecord(dict(record.__dict__, msg="[redacted]", args=None))

    h.addFilter(redact)
    lg = _logger("forklog-filter-record", h)
    lg.info("card %s", "1234")
    h.close()
    assert path.read_text() == "[redacted]\n"


class _Discard(logging.Handler):
    def emit(self, record):
        pass


def test_what_handle_returns_is_what_logging_handler_returns(tmp_path):
    h = forklog.Handler(str(tmp_path / "a.log"))
    ref = _Discard()
    rec = logging.LogRecord("x", logging.INFO, "", 0, "m", None, None)
    assert h.handle(rec) == ref.handle(rec)
    h.addFilter(lambda r: False)
    ref.addFilter(lambda r: False)
    assert h.handle(rec) == ref.handle(rec)
    h.close()


def test_extras_are_found_after_other_handlers_formatted_the_record(tmp_path):
    path = tmp_path / "a.jsonl"
    other = logging.StreamHandler(io.StringIO())
    other.setFormatter(logging.Formatter("%(asctime)s %(message)s"))  # sets record.asctime and record.message
    h = forklog.Handler(str(path), json=True)
    lg = _logger("forklog-extras-after", other, h)
    lg.info("one", extra={"item": "data3"})
    lg.info("none")
    lg.error("failed", exc_info=(ValueError, ValueError("v"), None), extra={"code": 7})
    h.close()
    a, b, c = [json.loads(line) for line in path.read_text().splitlines()]
    if forklog.have_fields():
        assert a["item"] == "data3" and c["code"] == 7
    assert set(b) == {"ts", "level", "pid", "msg"}
    assert c["msg"].startswith("failed\n") and "ValueError: v" in c["msg"]


def test_threads_write_whole_records_through_one_handler(tmp_path):
    path = tmp_path / "a.log"
    h = forklog.Handler(str(path))
    lg = _logger("forklog-threads", h)
    n, per = 8, 2000

    def worker(t):
        for i in range(per):
            lg.info("t%d r%05d %s", t, i, "x" * (50 + 97 * t))

    ts = [threading.Thread(target=worker, args=(t,)) for t in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    h.close()
    lines = path.read_text().splitlines()
    assert len(lines) == n * per
    seen = {}
    for ln in lines:
        t, r, pad = ln.split(" ", 3)[3].split(" ")
        t = int(t[1:])
        assert pad == "x" * (50 + 97 * t)
        assert int(r[1:]) == seen.get(t, -1) + 1  # each thread's records in the order of its calls
        seen[t] = int(r[1:])
    assert all(seen[t] == per - 1 for t in range(n))


def test_closing_while_threads_log_never_raises_into_them(tmp_path):
    errors = []

    class Counting(forklog.Handler):
        def handleError(self, record):
            errors.append(sys.exc_info()[1])

    h = Counting(str(tmp_path / "a.log"))
    lg = _logger("forklog-close-threads", h)
    stop = threading.Event()

    def worker():
        while not stop.is_set():
            lg.info("r")

    ts = [threading.Thread(target=worker) for _ in range(4)]
    for t in ts:
        t.start()
    h.close()
    stop.set()
    for t in ts:
        t.join()
    assert h.closed
    assert all(isinstance(e, ValueError) for e in errors)
