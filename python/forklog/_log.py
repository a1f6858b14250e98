# SPDX-License-Identifier: MIT
"""forklog.Log: one handle of a forklog log, shared by every process that opens the same file."""
import atexit
import ctypes
import errno as _errno
import os
import threading
import time
import weakref
from multiprocessing import util as mp_util

from . import _native

_lib = _native.lib
_log_msg, _SIZE0, _LOG_MSG_NAME = _native.log_msg, _native.SIZE0, _native.LOG_MSG_NAME

DEBUG, INFO, WARN, ERROR = 1, 2, 3, 4
_LEVEL_NAMES = {"debug": DEBUG, "info": INFO, "warn": WARN, "warning": WARN, "error": ERROR}
_FLAG_SYNC, _FLAG_BUFFERED, _FLAG_PRIVATE, _FLAG_TID = 1, 2, 4, 8
_KEYS = {"short": 0, "ecs": 1}
_FORMAT_TEXT, _FORMAT_JSON = 0, 1

_UINT_MAX = 2**32 - 1
_INT_MAX = 2**31 - 1
_SIZE_MAX = 2 ** (8 * ctypes.sizeof(ctypes.c_size_t)) - 1
_ERRBUF = 512


class OptionError(ValueError, TypeError):
    """A bad argument or option: raised before anything is opened or written. A ValueError (and, for an
    argument of the wrong type, also a TypeError, so either `except` catches it)."""


def _level(value, what="level"):
    if isinstance(value, str):
        try:
            return _LEVEL_NAMES[value.lower()]
        except KeyError:
            pass
    elif isinstance(value, int) and not isinstance(value, bool) and DEBUG <= value <= ERROR:
        return value
    raise OptionError(
        "forklog: %s must be 'debug', 'info', 'warn' or 'error' (or forklog.DEBUG .. forklog.ERROR), not %r"
        % (what, value)
    )


def _int_opt(name, value, lo, hi, zero_ok=True):
    if not isinstance(value, int) or isinstance(value, bool):
        raise OptionError("forklog: %s must be an int, not %s" % (name, type(value).__name__))
    if value == 0 and zero_ok:
        return 0
    if not lo <= value <= hi:
        raise OptionError(
            "forklog: %s must be %s%d .. %d, not %d" % (name, "0 (the default) or " if zero_ok else "", lo, hi, value)
        )
    return value


def _bool_opt(name, value):
    if not isinstance(value, bool):
        raise OptionError("forklog: %s must be True or False, not %r" % (name, value))
    return value


def _id_opt(name, value):
    if value is None:
        return 0
    return _int_opt(name, value, 1, _UINT_MAX - 1)


def _name_opt(name):
    # Strict UTF-8: the C library takes only valid UTF-8 for a name, so a str with a lone surrogate (an
    # os.fsdecode()d argv[0] of non-UTF-8 bytes) is refused here, as a bad option, rather than by forklog_open()
    # as an OSError that no `except ValueError` catches.
    try:
        b = name.encode("utf-8") if isinstance(name, str) else None
    except UnicodeEncodeError:
        b = None
    if b is None or not 1 <= len(b) <= 64 or any(c < 0x20 or c == 0x7F for c in b):
        raise OptionError("forklog: name must be a str of 1 to 64 bytes of UTF-8 without control characters, "
                          "not %r" % (name,))
    return b


def _is_fd(path):
    # A descriptor, as open() takes one: an int, but not a bool.
    return isinstance(path, int) and not isinstance(path, bool)


def _path_bytes(path):
    try:
        p = os.fsencode(path)
    except TypeError:
        raise OptionError("forklog: path must be str, bytes or os.PathLike, not %s" % type(path).__name__) from None
    if not p:
        raise OptionError("forklog: path is empty")
    if b"\0" in p:
        raise OptionError("forklog: path contains a NUL byte")
    return p


# What an errno means here, when the C library gave no explanation of its own.
_OPEN_HINTS = {
    _errno.ENOENT: "the log's directory does not exist",
    _errno.ENOTDIR: "a component of the path is not a directory",
    _errno.EACCES: "no permission to open the log for appending, or to create its segment file .NAME.forklog "
                   "beside it (private=True needs no file beside the log)",
    _errno.EISDIR: "the path is a directory",
    _errno.ENXIO: "a FIFO with no reader, or a unix socket",
    _errno.EPERM: "the log's segment file .NAME.forklog is not trusted (another owner, wider permissions, a link)",
    _errno.EPROTO: "another forklog version or C library uses this log",
    _errno.EINVAL: "a setting that conflicts with the log's other users",
}
_WRITE_HINTS = {
    _errno.ENOSPC: "the disk is full; nothing of the record is in the file",
    _errno.EFBIG: "the file size limit (RLIMIT_FSIZE) was reached; nothing of the record is in the file",
    _errno.EDQUOT: "disk quota exceeded; nothing of the record is in the file",
    _errno.EIO: "I/O error; nothing of the record is in the file",
    _errno.EPIPE: "the reader of the FIFO or pipe has gone",
}


def _oserror(rc, what, path=None, explanation=""):
    err = -rc
    if not explanation:
        explanation = (_OPEN_HINTS if what == "forklog_open" else _WRITE_HINTS).get(err, "")
    text = "%s (%s)" % (os.strerror(err), what)
    if explanation:
        text += ": " + explanation
    if path is not None:
        return OSError(err, text, os.fsdecode(path))
    return OSError(err, text)


def _utf8(s):
    try:
        return s.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: the bytes os.fsdecode() kept, or else visible escapes
        try:
            return s.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            return s.encode("utf-8", "backslashreplace")


def _encode(msg):
    if isinstance(msg, str):
        b = _utf8(msg)
    elif isinstance(msg, (bytes, bytearray, memoryview)):
        b = bytes(msg)
    else:
        raise OptionError("forklog: a message must be str or bytes, not %s" % type(msg).__name__)
    if b.find(b"\0") >= 0:  # the C call takes a NUL-terminated string: keep the rest of the message, escaped
        b = b.replace(b"\0", b"\\x00")
    return b


_KEY_OK = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.@-")
_I64 = 2**63


def _key_bytes(key, strict):
    """A field key as the C library accepts it: 1 to 64 bytes of [A-Za-z0-9_.@-]. strict: OptionError for
    anything else; else the key is mended (each other character, or byte of a bytes key, becomes '_'; cut to 64),
    or None when empty."""
    k = _utf8(key) if isinstance(key, str) else key if isinstance(key, bytes) else None
    if k is not None and 0 < len(k) <= _native.MAX_KEY and all(c in _KEY_OK for c in k):
        return k
    if strict:
        raise OptionError("forklog: a field key must be 1 to %d characters of A-Z a-z 0-9 _ . @ -, not %r"
                          % (_native.MAX_KEY, key))
    if k is None:  # logging's extra= takes any hashable key (1, a tuple): its str(), mended as any str key is
        key = _str_of(key)
    if isinstance(key, str):  # each character that is not a key character becomes one '_'
        k = "".join(c if c.isascii() and ord(c) in _KEY_OK else "_" for c in key[: _native.MAX_KEY]).encode()
    else:
        k = bytes(c if c in _KEY_OK else 95 for c in k[: _native.MAX_KEY])
    return k or None


# Keys already checked -> the bytes the C library gets: records repeat their keys, and checking one costs
# ~0.4 us. Only str keys valid as given are kept (a key that is mended or refused is checked every time), and
# at most _KEY_CACHE_MAX of them.
_key_cache = {}
_KEY_CACHE_MAX = 1024


def _fields_array(fields, strict):
    """A ctypes array of struct forklog_field from a dict, and the objects it points into (kept alive by the
    caller for the call). Python types map onto the C types: bool, int (signed, unsigned past 2**63 - 1), float,
    str, bytes, None (JSON null), datetime.datetime (a time), datetime.timedelta (a duration); anything else is
    written as str(value)."""
    items = fields.items()
    if len(items) > _native.MAX_FIELDS:
        if strict:
            raise OptionError("forklog: at most %d fields in one record" % _native.MAX_FIELDS)
        items = list(items)[: _native.MAX_FIELDS]
    arr = (_native.Field * len(items))()
    keep = []
    n = 0
    for key, value in items:
        k = _key_cache.get(key)
        if k is None:
            k = _key_bytes(key, strict)
            if k is None:
                continue
            if type(key) is str and len(_key_cache) < _KEY_CACHE_MAX and k.decode("latin-1") == key:
                _key_cache[key] = k
        f = arr[n]
        f.key = k
        keep.append(k)
        t = type(value)  # the common exact types first; the rest, subclasses included, in _field_value()
        if t is str:
            if "\0" in value:
                value = value.replace("\0", "\\x00")
            try:
                b = value.encode("utf-8")
            except UnicodeEncodeError:
                b = _encode(value)
            keep.append(b)
            f.type = _native.FIELD_STR
            f.v.s = b
        elif t is float:
            f.type = _native.FIELD_DBL
            f.v.d = value
        elif t is int and -_I64 <= value < _I64:
            f.type = _native.FIELD_INT
            f.v.i = value
        elif strict:
            _field_value(f, value, keep)
        else:
            try:
                _field_value(f, value, keep)
            except Exception:
                # A value the binding cannot convert (a naive datetime that timestamp() refuses, an object whose
                # __str__ raises) is written as text rather than losing the whole record: logging's own
                # handlers write a record whatever its extra= attributes hold.
                b = _encode(_str_of(value))
                keep.append(b)
                f.type, f.v.s = _native.FIELD_STR, b
        n += 1
    return arr, n, keep


def _str_of(value):
    """str(value), or object.__repr__(value) when str() fails: a text that is never an exception."""
    try:
        s = str(value)
        if type(s) is str:
            return s
    except Exception:
        pass
    return object.__repr__(value)


def _field_value(f, value, keep):
    import datetime

    if isinstance(value, bool):
        f.type, f.v.b = _native.FIELD_BOOL, int(value)
    elif isinstance(value, int) and -_I64 <= value < _I64:
        f.type, f.v.i = _native.FIELD_INT, value
    elif isinstance(value, int) and 0 <= value < 2 * _I64:
        f.type, f.v.u = _native.FIELD_UINT, value
    elif isinstance(value, float):
        f.type, f.v.d = _native.FIELD_DBL, value
    elif value is None:
        f.type, f.v.s = _native.FIELD_STR, None
    elif isinstance(value, datetime.datetime):
        f.type = _native.FIELD_TIME  # naive datetimes are local time, as datetime.timestamp() takes them
        f.v.t.sec = int(value.replace(microsecond=0).timestamp())
        f.v.t.nsec = value.microsecond * 1000
    elif isinstance(value, datetime.timedelta):
        f.type = _native.FIELD_DUR
        f.v.ns = max(-_I64 + 1, min(_I64 - 1, (value // datetime.timedelta(microseconds=1)) * 1000))
    else:
        b = _encode(value if isinstance(value, (str, bytes, bytearray, memoryview)) else str(value))
        keep.append(b)
        f.type, f.v.s = _native.FIELD_STR, b


# Every open Log of this process, so that each process closes its logs when it exits.
_open_logs = weakref.WeakSet()
# Every Log of this process, open or not, so that a forked child resets their lists of calls and closes in flight
# (see _after_fork_in_child). A log leaves _open_logs as its C close begins, while the thread making that close is
# still in its self._holding: a child forked then must reset that log too, or its close() waits for that thread of
# the parent for ever.
_all_logs = weakref.WeakSet()


_get_ident = threading.get_ident


def _after_fork_in_child():
    for log in list(_all_logs):
        log._reinit_after_fork()


def _close_all():
    """Closes every log still open in this process: buffered records are written, and the last user of a log
    removes its segment file. Run at the normal end of a multiprocessing worker (which ends with os._exit() under
    fork and forkserver, skipping atexit). Code of the worker's may still log after it: its other threads (the
    worker joins them only later) and multiprocessing's own last words ("process exiting with exitcode 0"); a
    log closed here takes such a record through a handle opened for that record alone (Log._once). At interpreter
    exit _flush_all() runs instead.

    A log of a descriptor, or a private one, has a lock that only the processes forked after its open share (this
    worker's parent and siblings, for a log inherited from the parent): a handle opened anew would have a lock of its
    own, and its records could interleave with theirs (in a pipe, past PIPE_BUF). Such a log's handle is written out
    here and kept, not freed, and the late records go through it (see _once)."""
    for log in list(_open_logs):
        try:
            log._close_at_exit()
        except Exception:
            pass


_finalizer_pid = None


def _close_at_worker_exit(*_):
    # multiprocessing runs its finalizers when a worker process ends normally (Pool.close() + join(), the end
    # of an executor, Process.run() returning); a forked worker clears the parent's list first, so each
    # process registers its own.
    global _finalizer_pid
    if _finalizer_pid == os.getpid():
        return
    _finalizer_pid = os.getpid()
    mp_util.Finalize(None, _close_all, exitpriority=-100)


def _in_worker():
    import multiprocessing

    return multiprocessing.parent_process() is not None


class _Anchor:
    pass


def _flush_all():
    """At interpreter exit: writes out the buffered records of every log still open, and closes none.

    atexit runs its callbacks in the reverse order of registration, so this one runs before those registered
    before forklog was imported, and before logging.shutdown() when logging was imported first: a record that
    one of them writes must still find its log open. logging.shutdown() closes every Handler (and with it its
    log); a Log still open is closed when the interpreter frees it (Log.__del__), and a buffered record written
    after this flush stays in the log's shared segment until then, or until the log's next user writes it."""
    for log in list(_open_logs):
        try:
            if log._hbox:
                log.flush()
        except Exception:
            pass


_anchor = _Anchor()
atexit.register(_flush_all)
mp_util.register_after_fork(_anchor, _close_at_worker_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Log:
    """One handle of the log at `path` (created if missing), through forklog_open().

    Every process that opens the same file through forklog (this class, the C library, the `forklog` command)
    shares one lock, one file size, one rotation and one buffer with the others, through the segment file
    `.NAME.forklog` beside the log. A process forked after the open (a multiprocessing worker with the "fork"
    start method, os.fork()) may use the inherited object as is: the C handle is fork-safe.

    `path` may also be a file descriptor (an int, as open() takes one) that the program already has: stdout or
    stderr (a pipe, a terminal, a unix socket such as the journal's), a pipe, a socket or a file, through
    forklog_open_fd(). The log then has a lock of its own, shared with the processes forked after the open only;
    the caller keeps the descriptor (the log writes through a duplicate). Such a log has no path (`path` is
    None), cannot rotate (rotate_bytes, rotate_keep) and cannot be sent to another process.

    Options (keyword only; 0 means the C library's default, or, for the settings the log's users share, whatever
    the log's current users have):
      level        minimum level written: 'debug', 'info' (default), 'warn', 'error' or forklog.DEBUG .. ERROR
      json         True: JSON Lines records ({"ts":..,"level":..,"pid":..,"msg":..}); False: text lines
      buffered     True: records are batched in the shared buffer (shared setting)
      sync         True: fdatasync after every record (or flush)
      private      True: a segment of this handle's own, shared only with processes forked after the open
      rotate_bytes rotate before a record would take the file past this many bytes (shared setting)
      rotate_keep  rotated files kept, 1 .. 1000 (shared setting; 0: 5)
      flush_ms     buffered: the longest a record waits in the buffer (shared setting; 0: 100)
      buffer_size  buffered: the shared buffer's size, 4 KiB .. 1 GiB (shared setting; 0: 256 KiB)
      max_record   largest record in bytes, 256 .. 1 GiB (0: 1 MiB); longer records are cut with a marker
      mode         permission bits of files the log creates, before the umask (0: 0o644, and for a
                   rotation's new file the bits of the file it follows)
      owner, group uid and gid given to files the log creates (None or 0: the creator's, and for a rotation's
                   new file those of the file it follows, where the process may give them)
      name         the program's name, in every record: `app=NAME` in text, "app" in JSON (1 to 64 bytes)
      tid          True: every record also carries the calling thread's kernel thread id
      keys         JSON key names: 'short' (default: ts, level, pid, msg, ...) or 'ecs' (@timestamp,
                   log.level, process.pid, message, ...: Elastic Common Schema and OpenTelemetry)
      context      a dict of fields every record of this handle carries (see log())
    name, tid, keys and context need a library with typed fields (forklog.have_fields()).

    Errors: OptionError (a ValueError) for a bad argument, before anything is created; OSError with the errno and
    the library's explanation when the open or a write fails; ValueError for any use after close().
    """

    def __init__(self, path, *, level="info", json=False, buffered=False, sync=False, private=False,
                 rotate_bytes=0, rotate_keep=0, flush_ms=0, buffer_size=0, max_record=0, mode=0,
                 owner=None, group=None, name=None, tid=False, keys="short", context=None, **unknown):
        self._h = None
        self._hv = None  # the handle as a ctypes.c_void_p, for the calls made without argtypes
        self._calls = []  # the thread ident of each call in flight (see _call)
        self._hbox = []  # the open handle, until close() takes it (list.pop() is atomic: one close() gets it)
        self._pending = []  # the handle whose C close is left to the end of a call in progress (see _call)
        self._exit_closed = False  # closed by the worker's exit, not by the program (see _close_all, _once)
        self._close_done = False  # the C close has returned, whichever thread made it (see close)
        self._close_rc = 0  # and what it returned
        self._handle = None  # the handle, until the C close is made (see close)
        self._late = None  # the handle that the exit close keeps for late records, unfreed (see _close_at_exit)
        # The thread ident of each close() in progress (see close), and of each thread that may hold the handle taken
        # from self._hbox or self._pending: a close() that finds the handle in neither waits while one does.
        self._closing = []
        self._holding = []
        if unknown:
            raise OptionError("forklog: no option named %s" % ", ".join(sorted(unknown)))
        fd = path if _is_fd(path) else None
        if fd is not None:
            if fd < 0 or fd > _INT_MAX:
                raise OptionError("forklog: a descriptor must be from 0 to %d, not %d" % (_INT_MAX, fd))
            if not _native.HAVE_OPEN_FD:
                raise OptionError("forklog: a log of a descriptor needs a newer libforklog than %s"
                                  % _native.library_path)
            bpath = None
        else:
            bpath = _path_bytes(path)
        self._settings = dict(level=level, json=json, buffered=buffered, sync=sync, private=private,
                              rotate_bytes=rotate_bytes, rotate_keep=rotate_keep, flush_ms=flush_ms,
                              buffer_size=buffer_size, max_record=max_record, mode=mode, owner=owner,
                              group=group, name=name, tid=tid, keys=keys, context=context)
        po = _native.PaddedOptions()
        o = po.opts
        o.level = _level(level)
        o.format = _FORMAT_JSON if _bool_opt("json", json) else _FORMAT_TEXT
        o.flags = ((_FLAG_BUFFERED if _bool_opt("buffered", buffered) else 0)
                   | (_FLAG_SYNC if _bool_opt("sync", sync) else 0)
                   | (_FLAG_PRIVATE if _bool_opt("private", private) else 0))
        o.rotate_bytes = _int_opt("rotate_bytes", rotate_bytes, 1, 2**64 - 1)
        o.rotate_keep = _int_opt("rotate_keep", rotate_keep, 1, 1000)
        o.flush_ms = _int_opt("flush_ms", flush_ms, 1, _UINT_MAX)
        o.buffer_size = _int_opt("buffer_size", buffer_size, 4096, min(2**30, _SIZE_MAX))
        o.max_record = _int_opt("max_record", max_record, 256, min(2**30, _SIZE_MAX))
        o.mode = _int_opt("mode", mode, 1, 0o7777)
        o.owner = _id_opt("owner", owner)
        o.group = _id_opt("group", group)
        newer = []
        if _bool_opt("tid", tid):
            o.flags |= _FLAG_TID
            newer.append("tid")
        if not isinstance(keys, str) or keys not in _KEYS:
            raise OptionError("forklog: keys must be 'short' or 'ecs', not %r" % (keys,))
        o.keys = _KEYS[keys]
        if keys != "short":
            newer.append("keys")
        if name is not None:
            o.name = _name_opt(name)
            newer.append("name")
        keep = None
        if context is not None:
            if not isinstance(context, dict):
                raise OptionError("forklog: context must be a dict of fields, not %s" % type(context).__name__)
            if context:
                arr, n, keep = _fields_array(context, True)
                o.context, o.ncontext = ctypes.cast(arr, ctypes.c_void_p), n
                keep.append(arr)
                newer.append("context")
        if newer and not _native.HAVE_FIELDS:
            raise OptionError("forklog: %s need a libforklog with typed fields; the one loaded (%s) has none"
                              % (", ".join(newer), _native.library_path))
        errbuf = ctypes.create_string_buffer(_ERRBUF)
        o.error = ctypes.cast(errbuf, ctypes.c_void_p)
        o.error_size = _ERRBUF
        h = ctypes.c_void_p()
        if fd is None:
            rc = _native.lib.forklog_open(ctypes.byref(h), bpath, ctypes.byref(po))
        else:
            rc = _native.lib.forklog_open_fd(ctypes.byref(h), fd, ctypes.byref(po))
        if rc < 0:
            why = errbuf.value.decode("utf-8", "replace")
            if rc == -_errno.EINVAL and " conflicts with " not in why:
                # The C library's EINVAL is a bad option, unless a shared setting conflicts with the log's users
                # (an OSError, as any state of the log found at open). Options valid one by one may still be bad
                # together, which only the C library checks: a max_record too small for the prefix that the name,
                # the key set and tid make.
                raise OptionError("forklog: %s" % (why or "an option the C library refused"))
            raise _oserror(rc, "forklog_open" if fd is None else "forklog_open_fd", bpath, why)
        self._h = h.value
        self._hv = h
        self._handle = h.value
        self._hbox.append(h.value)
        # The absolute path, so that a pickled Log reopens the same file wherever it is unpickled.
        self._path = os.path.abspath(os.fsdecode(path)) if fd is None else None
        self._fd = fd
        self._level = o.level
        self._pid = os.getpid()
        _all_logs.add(self)
        _open_logs.add(self)
        if _in_worker():
            _close_at_worker_exit()

    # ---- calls in flight: close() waits for the calls of other threads -----------------------------------
    # ctypes releases the GIL during a call, so another thread may call close() meanwhile, and the C handle must
    # not be freed under a call in progress. A call appends its thread's ident to self._calls, then reads the
    # handle; close() clears the handle, then waits until no other thread has a call in self._calls. list.append()
    # and list.remove() are atomic (under the GIL, and under the list's own lock in free-threaded builds), so
    # either close() sees the call and waits for it, or the call sees the handle cleared and raises.
    #
    # close() may also run in the very thread that is inside a call: a signal handler (a SIGTERM handler that
    # calls logging.shutdown()) runs between two bytecodes of the interrupted thread, right after its C call
    # returned and before the call has removed its entry. Waiting there would wait for ever, so close() leaves
    # the C close pending (self._pending) and the call's own end does it. The append is the first statement inside
    # the try, and the remove the first of the finally: Python runs signal handlers (whose exception may end the
    # call early) only after an instruction such as a call, so an entry is always removed once it is added. (Python
    # 3.9 and older check for signals before almost any instruction: there an exception raised by a signal
    # handler can still end a call between the two, and a later close() then waits for ever.)
    #
    # A call that finds the handle cleared leaves self._calls before it goes on (to _once, or to its ValueError): it
    # does not use the handle, and a close() must not wait for it. Threads that keep logging after an exit's close
    # (daemon threads, a worker's threads not yet joined) would otherwise keep an entry there most of the time, each
    # record through a handle opened for it alone, and hold that close, and with it the process's exit, for ever.
    def _call(self, fn, *args):
        calls = self._calls
        me = _get_ident()
        try:
            calls.append(me)
            h = self._h
            if h is not None:
                return fn(h, *args)
        finally:
            calls.remove(me)
            if self._pending:
                self._close_pending()
        return self._once("_call", fn, *args)

    def _close_pending(self):
        """Does the C close that close() left pending, unless this thread is still inside a call of this log (its
        end comes back here) or another thread has taken it. Waits for the calls of other threads. Returns the
        C close's result, or 0."""
        calls = self._calls
        me = _get_ident()
        if me in calls:
            return 0
        holding = self._holding
        try:
            # The appends are the first statements inside the try and the removes the first of the finally (see
            # _call): an exception of a signal handler never leaves this thread in self._holding.
            holding.append(me)
            try:
                h = self._pending.pop()
            except IndexError:
                return 0  # another thread closes it
            try:
                while calls:  # only other threads' calls: this thread has none
                    time.sleep(0.0005)
            except BaseException:
                self._pending.append(h)  # interrupted (KeyboardInterrupt): the next close() or call's end goes on
                raise
            _open_logs.discard(self)
            # No instruction between these two runs a signal handler, so once self._handle is cleared the C close
            # is made: a close() that finds the handle lost and self._handle set may close it itself (see close).
            self._handle = None
            rc = (_native.lib.forklog_flush if h == self._late else _native.lib.forklog_close)(h)
            self._close_rc = rc
            self._close_done = True
            return rc
        finally:
            holding.remove(me)

    def _once(self, method, *args):
        """A call on a closed log: ValueError, unless the log was closed by this worker process's end (see
        _close_all) and not by the program; then the call is made through a handle of the same log, opened with
        the same options for this call alone, or, for a log of a descriptor or a private one, through the handle that
        close kept, written out at once."""
        if not self._exit_closed:
            raise ValueError("forklog: I/O operation on a closed log")
        late = self._late
        if late is not None:
            # A log whose lock no new handle can join: the call goes through the handle the exit close kept, under
            # the lock the processes forked from its opener share, and is written out at once (see _close_at_exit).
            # That handle is never freed, so no call here needs to be waited for.
            once = Log.__new__(Log)
            once.__dict__.update(self.__dict__, _h=late, _hv=ctypes.c_void_p(late), _calls=[], _pending=[],
                                 _hbox=[], _handle=None, _late=None, _exit_closed=False)
            rc = getattr(once, method)(*args)
            frc = _native.lib.forklog_flush(late)
            if frc < 0:
                raise _oserror(frc, "forklog_flush", self._path)
            return rc
        with Log(self._path if self._fd is None else self._fd, **self._settings) as once:
            return getattr(once, method)(*args)

    def _close_at_exit(self):
        """close() at a process's exit (see _close_all, Handler.close): later calls go through _once, and the handle of
        a log of a descriptor or a private one is kept for them."""
        self._exit_closed = True
        if self._fd is not None or self._settings["private"]:
            self._late = self._handle
        self.close()

    def _reinit_after_fork(self):
        # A child has exactly one thread: no call of another thread is in flight here, and a lock that another
        # thread of the parent held at the fork would never be released. The C handle itself needs nothing.
        self._calls = []
        self._closing = []  # a close() of another thread of the parent goes on there, not here
        self._holding = []
        self._pid = os.getpid()

    # ---- the public API --------------------------------------------------------------------------------------
    @property
    def path(self):
        """The log's absolute path; None for a log of a descriptor."""
        return self._path

    @property
    def fd(self):
        """The descriptor the log was opened on (the caller's, not the log's duplicate); None for a log of a
        path."""
        return self._fd

    @property
    def closed(self):
        """True once close() was called in this process."""
        return self._h is None

    def log(self, level, msg, /, **fields):
        """Appends one record of `level` whose message is `msg` (str or bytes, used as is: never as a format).
        Keyword arguments are typed fields written after the message (` key=value` in text, `"key":value` in
        JSON), with a library that has forklog_log_fields() (see have_fields()). Returns 0, or the number of
        message bytes cut to fit max_record."""
        return self._log(_level(level), msg, fields)

    def _log(self, lv, msg, fields=None, strict=True):
        # The per-record path of Log.info() and of Handler.emit(): lv is a level number (a Python int).
        if type(msg) is str:
            # On the str: `b"\0" in bytes` first tries the operand as an int, and raising and clearing that
            # TypeError cost more than the rest of this function.
            if "\0" in msg:
                msg = msg.replace("\0", "\\x00")
            try:
                b = msg.encode("utf-8")
            except UnicodeEncodeError:
                b = _encode(msg)
        else:
            b = _encode(msg)
        if fields:
            return self._log_fields(lv, b, fields, strict)
        calls = self._calls  # _call(), inline
        me = _get_ident()
        try:
            calls.append(me)
            hv = self._hv
            if hv is not None:
                rc = _log_msg(hv, lv, b, None, _SIZE0)
        finally:
            calls.remove(me)
            if self._pending:
                self._close_pending()
        if hv is None:  # closed: outside self._calls (see _call)
            return self._once("_log", lv, b)
        if rc < 0:
            raise _oserror(rc, _LOG_MSG_NAME, self._path)
        return rc

    def _log_fields(self, lv, b, fields, strict):
        if not _native.HAVE_FIELDS:
            raise OptionError("forklog: fields need a libforklog with forklog_log_fields(); the one loaded "
                              "(%s, %s) has none" % (_native.library_path, _lib.forklog_version_string().decode()))
        arr, n, keep = _fields_array(fields, strict)
        rc = self._call(_lib.forklog_log_fields, lv, b, arr, n)
        del keep
        if rc < 0:
            raise _oserror(rc, "forklog_log_fields", self._path)
        return rc

    def debug(self, msg, /, **fields):
        return self._log(DEBUG, msg, fields)

    def info(self, msg, /, **fields):
        return self._log(INFO, msg, fields)

    def warn(self, msg, /, **fields):
        return self._log(WARN, msg, fields)

    warning = warn

    def error(self, msg, /, **fields):
        return self._log(ERROR, msg, fields)

    @property
    def level(self):
        """The minimum level written now: the log's shared level when set_level() set one, else this handle's."""
        if not _native.HAVE_LEVEL:
            return self._level
        return self._call(_lib.forklog_get_level)

    def set_level(self, level):
        """Changes the minimum level for every process that uses the log, from its next record ('debug' ..
        'error'); None goes back to each handle's own level. Needs a library with typed fields."""
        lv = 0 if level is None else _level(level)
        if not _native.HAVE_LEVEL:
            raise OptionError("forklog: set_level() needs a newer libforklog than %s" % _native.library_path)
        rc = self._call(_lib.forklog_set_level, lv)
        if rc < 0:
            raise _oserror(rc, "forklog_set_level", self._path)

    def context_add(self, **fields):
        """Adds fields that every later record of this process carries (processes forked later inherit them;
        the others are not touched). A key already in the context takes the new value. OptionError for a bad key,
        more than 64 fields, or a context that would then hold more than 64 distinct keys; nothing is added."""
        if not _native.HAVE_CONTEXT:
            raise OptionError("forklog: context_add() needs a newer libforklog than %s" % _native.library_path)
        arr, n, keep = _fields_array(fields, True)
        rc = self._call(_lib.forklog_context_add, arr, n)
        del keep
        if rc == -_errno.EINVAL:
            # The keys and the count were checked above: what is left is the one limit only the C library can
            # count, the context's distinct keys, which a forked child's own additions share.
            raise OptionError("forklog: the context would hold more than %d distinct keys" % _native.MAX_FIELDS)
        if rc < 0:
            raise _oserror(rc, "forklog_context_add", self._path)

    def write(self, data):
        """Appends `data` (bytes, or str as UTF-8) as one record, exactly as given, plus a newline when it does
        not end with one. Returns 0, or the number of bytes cut to fit max_record."""
        if type(data) is str:
            try:
                b = data.encode("utf-8")
            except UnicodeEncodeError:
                b = _utf8(data)
        elif isinstance(data, (str, bytes, bytearray, memoryview)):
            b = _utf8(data) if isinstance(data, str) else bytes(data)
        else:
            raise OptionError("forklog: write() takes str or bytes, not %s" % type(data).__name__)
        calls = self._calls  # _call(), inline
        me = _get_ident()
        try:
            calls.append(me)
            h = self._h
            if h is not None:
                rc = _lib.forklog_write(h, b, len(b))
        finally:
            calls.remove(me)
            if self._pending:
                self._close_pending()
        if h is None:  # closed: outside self._calls (see _call)
            return self._once("write", b)
        if rc < 0:
            raise _oserror(rc, "forklog_write", self._path)
        return rc

    def flush(self):
        """Writes out the log's buffered records (buffered=True); otherwise does nothing."""
        rc = self._call(_native.lib.forklog_flush)
        if rc < 0:
            raise _oserror(rc, "forklog_flush", self._path)

    def reopen(self):
        """Makes every process that uses the log reopen the path by name before its next record (after an
        external rotation, e.g. logrotate's `create` mode)."""
        rc = self._call(_native.lib.forklog_reopen)
        if rc < 0:
            raise _oserror(rc, "forklog_reopen", self._path)

    def close(self):
        """Ends this process's use of the log (flushing buffered records). Waits for calls of other threads
        that are in progress. Called while this very thread is inside a call of the log (from a signal handler),
        it refuses new calls at once and leaves the rest to the end of that call. A close() while another thread
        closes waits for that close to end; closing again later does nothing.
        Other processes that hold the log are not affected."""
        me = _get_ident()
        closing = self._closing
        holding = self._holding
        if me in closing or me in holding:
            return  # a signal handler's close inside this thread's own close: that close goes on once it returns
        took = False
        try:
            # The appends are the first statements inside the try and the removes the first of the finally (see
            # _call): an exception of a signal handler never leaves this thread in self._closing, whose close()
            # would then return at once for ever, nor in self._holding, for which the others would wait for ever.
            closing.append(me)
            holding.append(me)
            try:
                h = self._hbox.pop()
            except IndexError:  # closed already, or being closed by another thread
                pass
            else:
                took = True
                self._h = self._hv = None  # new calls are refused from here on; wait for those in progress
                self._pending.append(h)
            holding.remove(me)
            if self._pending:
                self._close_pending()
            if me in self._calls:
                return  # a signal handler's close inside a call of this thread: that call's end closes (see _call)
            # Another thread may be closing: the close() that took the handle, or the end of a call that took the
            # pending close (see _call), which waits for the calls still in flight, then closes. Wait for it, so
            # that this close() returns only once the log is closed, its buffered records written, as it promises,
            # whichever close() took the handle. Should that thread give the close back (interrupted while it
            # waits), this one takes it. A handle that no thread holds, that is not pending and not closed was lost
            # by a thread that an exception of a signal handler ended while it held it in a local variable (or by
            # a thread of the parent, in a forked child): this close() makes its C close.
            while not self._close_done:
                if self._pending:
                    self._close_pending()
                elif holding:
                    time.sleep(0.0005)
                elif self._handle is not None and not self._hbox:
                    took = True
                    self._h = self._hv = None
                    self._pending.append(self._handle)
                else:
                    break
        finally:
            try:
                closing.remove(me)
            finally:
                if me in holding:
                    holding.remove(me)
        if took and self._close_done and self._close_rc < 0:
            raise _oserror(self._close_rc, "forklog_close", self._path)

    def __enter__(self):
        if self._h is None:
            raise ValueError("forklog: I/O operation on a closed log")
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            if self._handle is not None:
                self.close()
        except Exception:
            pass

    def __reduce__(self):
        # Sent to another process (a spawn or forkserver worker, through initargs or a task): it opens the same
        # path there with the same options, and so joins the same shared segment.
        if self._h is None:
            raise ValueError("forklog: cannot send a closed log to another process")
        if self._fd is not None:
            raise ValueError("forklog: cannot send a log of a descriptor to another process (its lock is shared "
                             "with forked processes only): open it there, on the descriptor that process has")
        return (_reopen_log, (self._path, self._settings))

    def __repr__(self):
        what = repr(self._path) if self._fd is None else "fd %d" % self._fd
        return "<forklog.Log %s%s>" % (what, " closed" if self._h is None else "")


def _reopen_log(path, settings):
    return Log(path, **settings)
