# SPDX-License-Identifier: MIT
"""Typed fields (forklog_log_fields()): Log.info(msg, key=value) and the Handler's `extra=` attributes."""
import datetime
import json
import logging

import pytest

import forklog

pytestmark = pytest.mark.skipif(not forklog.have_fields(), reason="the library has no forklog_log_fields()")


def test_log_fields_keep_their_json_types(tmp_path):
    path = tmp_path / "a.jsonl"
    when = datetime.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=datetime.timezone.utc)
    with forklog.Log(str(path), json=True) as log:
        log.info("request", item="data3", cost=0.0123, n=-5, big=2**63 + 1, ok=True, none=None, when=when,
                 took=datetime.timedelta(milliseconds=12.5), other=[1, 2], msg="not the message")
        log.log("warn", "no fields")
    a, b = [json.loads(line) for line in path.read_text().splitlines()]
    assert a["msg"] == "request" and a["level"] == "info"
    assert (a["item"], a["cost"], a["n"], a["big"], a["ok"], a["none"]) == ("data3", 0.0123, -5, 2**63 + 1, True,
                                                                              None)
    assert a["when"] == "2026-01-02T03:04:05.678901Z" and a["took"] == 0.0125 and a["other"] == "[1, 2]"
    assert a["fields.msg"] == "not the message"  # a record's own key is renamed, never overwritten
    assert b["msg"] == "no fields" and "item" not in b


def test_field_values_of_subclasses_and_odd_strings_keep_their_rendering(tmp_path):
    import enum

    class Name(str):
        pass

    class Code(enum.IntEnum):
        OK = 200

    path = tmp_path / "a.jsonl"
    with forklog.Log(str(path), json=True) as log:
        for _ in range(2):  # the second time with the keys already checked
            log.info("r", nul="a\0b", surrogate="x\udcffy", name=Name("ann"), code=Code.OK, flt=1.5,
                     neg=-2**63, top=2**64 - 1, over=2**64, b=b"raw\0")
    for line in path.read_text(encoding="utf-8", errors="surrogateescape").splitlines():
        a = json.loads(line)
        assert (a["nul"], a["name"], a["code"], a["flt"]) == ("a\\x00b", "ann", 200, 1.5)
        assert (a["neg"], a["top"], a["over"], a["b"]) == (-2**63, 2**64 - 1, str(2**64), "raw\\x00")
        assert a["surrogate"].startswith("x") and a["surrogate"].endswith("y")


def test_a_bad_key_is_refused_or_mended_every_time(tmp_path):
    path = tmp_path / "a.jsonl"
    h = forklog.Handler(str(path), json=True)
    lg = logging.getLogger("forklog-bad-keys")
    lg.propagate = False
    lg.setLevel(logging.INFO)
    lg.handlers[:] = [h]
    with forklog.Log(str(tmp_path / "b.log")) as log:
        for _ in range(3):
            lg.info("m", extra={"bad key": 1, "good": 2})
            with pytest.raises(ValueError):
                log.info("x", **{"bad key": 1})
    lg.info("m", extra={"caf\u00e9": 1, "\u20ac": 2, "user id": 3})  # each character mended is one '_'
    h.close()
    lines = path.read_text().splitlines()
    for line in lines[:3]:
        a = json.loads(line)
        assert a["bad_key"] == 1 and a["good"] == 2
    a = json.loads(lines[3])
    assert (a["caf_"], a["_"], a["user_id"]) == (1, 2, 3), a


def test_text_fields_follow_the_message(tmp_path):
    path = tmp_path / "a.log"
    with forklog.Log(str(path)) as log:
        log.info("request", item="data 3", cost=0.5)
    assert path.read_text().rstrip("\n").endswith(' INFO pid=%d request item="data 3" cost=0.5' % __import__("os").getpid())


@pytest.mark.parametrize("fields", [{"bad key": 1}, {"": 1}, {"k" * 65: 1}, {"k%d" % i: i for i in range(65)}])
def test_bad_fields_are_a_value_error(tmp_path, fields):
    with forklog.Log(str(tmp_path / "a.log")) as log:
        with pytest.raises(ValueError):
            log.info("x", **fields)
    assert (tmp_path / "a.log").read_text() == ""


def test_handler_extras_become_fields_and_never_raise(tmp_path):
    path = tmp_path / "a.jsonl"
    h = forklog.Handler(str(path), json=True)
    lg = logging.getLogger("forklog-extras")
    lg.propagate = False
    lg.setLevel(logging.INFO)
    lg.handlers[:] = [h]
    lg.info("request %s", "data3", extra={"item": "data3", "cost": 0.25, "bad key": 1,
                                           "k" * 80: 2, "obj": object.__new__(object)})
    lg.info("plain")
    h.close()
    a, b = [json.loads(line) for line in path.read_text().splitlines()]
    assert a["msg"] == "request data3" and a["item"] == "data3" and a["cost"] == 0.25
    assert a["bad_key"] == 1 and a["k" * 64] == 2 and a["obj"].startswith("<object object")
    assert set(b) == {"ts", "level", "pid", "msg"}


def test_handler_extras_off_and_raw_write_the_message_only(tmp_path):
    path = tmp_path / "a.log"
    lg = logging.getLogger("forklog-noextras")
    lg.propagate = False
    lg.setLevel(logging.INFO)
    for h in (forklog.Handler(str(path), extras=False), forklog.Handler(str(path), raw=True)):
        lg.handlers[:] = [h]
        lg.info("m", extra={"item": "data3"})
        h.close()
    lines = path.read_text().splitlines()
    assert lines[0].endswith(" m") and lines[1] == "m"


def test_name_tid_keys_and_context_options(tmp_path):
    path = tmp_path / "a.jsonl"
    with forklog.Log(str(path), json=True, name="billing", tid=True, keys="ecs",
                     context={"region": "eu", "shard": 3}) as log:
        log.context_add(worker=1)
        log.info("started", item="data3")
    (r,) = [json.loads(line) for line in path.read_text().splitlines()]
    assert r["message"] == "started" and r["log.level"] == "info" and r["service.name"] == "billing"
    assert r["process.thread.id"] > 0
    assert (r["region"], r["shard"], r["worker"], r["item"]) == ("eu", 3, 1, "data3")


@pytest.mark.parametrize("options", [dict(name=""), dict(name="a\nb"), dict(name="x" * 65), dict(name=5),
                                     dict(keys="long"), dict(tid=1), dict(context=[1]),
                                     dict(context={"bad key": 1}), dict(name="app\udcff"), dict(name="app\ud800")])
def test_bad_new_options_are_value_errors(tmp_path, options):
    with pytest.raises(ValueError):
        forklog.Log(str(tmp_path / "a.log"), **options)
    assert not (tmp_path / "a.log").exists()


def test_context_add_refused_is_an_option_error_and_changes_nothing(tmp_path):
    path = tmp_path / "a.log"
    with forklog.Log(str(path), context={"region": "eu"}) as log:
        for bad in ({"bad key": 1}, {"k%d" % i: i for i in range(65)}):
            with pytest.raises(forklog.OptionError):
                log.context_add(**bad)
        log.context_add(**{"k%d" % i: i for i in range(63)})
        # A 65th distinct key: only the C library counts them (the context is the process's, not the Log's).
        with pytest.raises(forklog.OptionError, match="64"):
            log.context_add(k0=100, extra=1)
        log.info("m")
    line = path.read_text()
    assert line.endswith(" m region=eu " + " ".join("k%d=%d" % (i, i) for i in range(63)) + "\n"), line


def test_set_level_reaches_every_user_of_the_log(tmp_path):
    path = tmp_path / "a.log"
    with forklog.Log(str(path)) as a, forklog.Log(str(path)) as b:
        assert a.level == forklog.INFO
        b.set_level("error")
        assert a.level == forklog.ERROR
        a.warn("dropped")
        a.error("kept")
        b.set_level(None)
        a.info("kept too")
    assert [ln.split(None, 3)[3] for ln in path.read_text().splitlines()] == ["kept", "kept too"]


def test_handler_extras_of_any_key_or_value_never_lose_the_record(tmp_path):
    # logging takes any hashable key in extra= (it stores the key in the record's __dict__), and a formatter
    # never looks at an attribute it does not name: logging's own handlers write such a record. A key that is not
    # a str, or a value whose conversion fails, must not turn the whole record into a handleError().
    class BadStr:
        def __str__(self):
            raise RuntimeError("no str")

    errors = []

    class Recording(forklog.Handler):
        def handleError(self, record):
            errors.append(record)

    path = tmp_path / "a.jsonl"
    h = Recording(str(path), json=True)
    lg = logging.getLogger("forklog-odd-extras")
    lg.propagate = False
    lg.setLevel(logging.INFO)
    lg.handlers[:] = [h]
    lg.info("int key", extra={1: "one", "good": 2})
    lg.info("tuple key", extra={(2, 3): "t"})
    lg.info("naive min", extra={"when": datetime.datetime.min})  # timestamp() refuses it in most time zones
    lg.info("bad str", extra={"obj": BadStr()})
    h.close()
    assert errors == []
    a, b, c, d = [json.loads(line) for line in path.read_text().splitlines()]
    assert (a["msg"], a["1"], a["good"]) == ("int key", "one", 2)
    assert (b["msg"], b["_2__3_"]) == ("tuple key", "t")
    assert c["msg"] == "naive min" and c["when"] in ("0001-01-01 00:00:00", "0001-01-01T00:00:00.000000Z")
    assert d["msg"] == "bad str" and d["obj"].startswith("<") and "BadStr object" in d["obj"]
