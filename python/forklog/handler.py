# SPDX-License-Identifier: MIT
"""forklog.Handler: a logging.Handler that appends every LogRecord as one whole record through forklog."""
import logging
import sys
import threading
from threading import get_ident as _get_ident

from . import _native
from ._log import DEBUG, ERROR, INFO, WARN, Log, OptionError, _level, _oserror

_log_msg, _SIZE0, _LOG_MSG_NAME = _native.log_msg, _native.SIZE0, _native.LOG_MSG_NAME

_TO_LOGGING = {DEBUG: logging.DEBUG, INFO: logging.INFO, WARN: logging.WARNING, ERROR: logging.ERROR}


# The attributes every LogRecord has; any other one came from `extra=` (or a filter) and is a field.
_BASE_ATTRS = logging.LogRecord("", 0, "", 0, "", (), None).__dict__
_RECORD_ATTRS = frozenset(_BASE_ATTRS) | {"message", "asctime", "taskName"}
# A record has these _NBASE attributes from LogRecord.__init__, plus "message" and "asctime" once a formatter has
# set them: a record with no more than that has no field, and emit() skips looking for them.
_NBASE = len(_BASE_ATTRS)
# What Handler.handle() returns for a record that passed: True, or (Python 3.12 and later) the record.
_PASSED_IS_RECORD = logging.Filterer().filter(logging.LogRecord("", 0, "", 0, "", (), None)) is not True


def forklog_level(levelno):
    """The forklog level of a logging level: DEBUG (and below) -> debug, INFO -> info, WARNING -> warn,
    ERROR and CRITICAL (and above) -> error; levels in between go to the one below them."""
    if levelno >= logging.ERROR:
        return ERROR
    if levelno >= logging.WARNING:
        return WARN
    if levelno >= logging.INFO:
        return INFO
    return DEBUG


_LEVELS = {lv: forklog_level(lv) for lv in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR,
                                            logging.CRITICAL)}


def _split_level(level):
    """(logging level of the handler, forklog level of the log) from a forklog level name or number, or from a
    logging level number (0, or 5 and above: logging.DEBUG, logging.INFO, ...)."""
    if isinstance(level, int) and not isinstance(level, bool) and (level == 0 or level >= 5):
        return level, forklog_level(level)
    if isinstance(level, str) and level.lower() in ("critical", "fatal"):  # logging's names above forklog's
        return logging.CRITICAL, ERROR
    fl = _level(level)
    return _TO_LOGGING[fl], fl


class _NoLock:
    """The lock of a Handler: none. forklog serializes records itself, between threads as between processes, and
    Log.flush() and Log.close() are safe from any thread, so the handler's lock guards nothing. A real one would
    deadlock: logging.shutdown() holds a handler's lock while it closes it, and close() waits for the calls in
    flight; if a signal handler of a thread inside a call then calls logging.shutdown() (or close()) itself, it
    would wait for that lock while the closer waits for its call."""

    def acquire(self, blocking=True, timeout=-1):
        return True

    def release(self):
        pass

    __enter__ = acquire

    def __exit__(self, *exc):
        return False

    def _at_fork_reinit(self):
        pass


class Handler(logging.Handler):
    """Writes each LogRecord as one whole record to the forklog log at `path`.

    Text mode (default): `<time> <LEVEL> pid=<pid> <self.format(record)>`, one line per record (newlines of
    the message, a traceback's included, are escaped as \\n). json=True: one JSON line per record,
    {"ts":..,"level":..,"pid":..,"msg":<self.format(record)>}. raw=True: self.format(record) and a newline,
    as FileHandler writes it (a multi-line message then spans several lines, still in one piece).

    extras=True (default), with a library that has typed fields (forklog.have_fields()): the attributes a
    record got through `extra=` are written as typed fields after the message (` key=value` in text,
    "key":value in JSON; bool, int, float, str, None, datetime and timedelta keep their type, anything else is
    written as str(value); a key with other characters than A-Z a-z 0-9 _ . @ - has them replaced by '_').
    Otherwise extras appear only where the formatter puts them.

    level: the handler's level: a logging level such as logging.INFO (default logging.NOTSET: the loggers decide,
    as with logging's own handlers), or 'debug', 'info', 'warn' ('warning'), 'error', 'critical' ('fatal'), in any
    case, or forklog.DEBUG .. forklog.ERROR. The log
    itself writes every level, so setLevel() may lower the handler's later. Every other keyword is an option of
    forklog.Log (buffered, rotate_bytes, rotate_keep, ...).

    `path` may be a file descriptor (an int): forklog.Handler(sys.stdout.fileno()) writes whole records to stdout,
    whatever it is (a pipe, a terminal, the journal's socket), serialised with the processes forked afterwards (see
    forklog.Log).

    Created in the parent before a "fork" Pool, the handler (and the logging set-up that holds it) is inherited
    by the workers, which use it as is. With "spawn" or "forkserver", create it in each worker's initializer:
    each opens the same path and joins the log's shared segment. A Handler sent to another process (pickled, e.g.
    in initargs) opens the same path there.

    emit() never raises into the application: a failed record goes to handleError(), as with logging's own
    handlers (by default a traceback on stderr while logging.raiseExceptions is true). close() closes the log.
    """

    def __init__(self, path, *, level=logging.NOTSET, json=False, raw=False, extras=True, **options):
        if not isinstance(raw, bool):
            raise OptionError("forklog: raw must be True or False, not %r" % (raw,))
        if not isinstance(extras, bool):
            raise OptionError("forklog: extras must be True or False, not %r" % (extras,))
        if raw and json is True:
            raise OptionError("forklog: raw=True writes the formatted record as is; it cannot be JSON too")
        hlevel, _ = _split_level(level)
        # The log itself writes every level: logging has already filtered by the handler's level, which
        # setLevel() may lower later; a log level set from it would then drop those records silently.
        log = Log(path, level=DEBUG, json=json, **options)  # validates every option before logging.Handler
        logging.Handler.__init__(self, hlevel)
        self._log = log
        self._raw = raw
        self._extras = extras and not raw and _native.HAVE_FIELDS
        self._options = dict(options, json=json, extras=extras)
        # emit() formats a record itself when there is no formatter, unless a subclass formats its own way.
        self._default_format = type(self).format is logging.Handler.format

    @property
    def log(self):
        """The forklog.Log this handler writes to."""
        return self._log

    @property
    def closed(self):
        return self._log.closed

    def createLock(self):
        self.lock = _NoLock()

    def handle(self, record):
        """Filters the record and emits it, as logging.Handler.handle() does, but without taking the handler's
        lock: forklog serializes the records itself, between threads as between processes, so emit() may run
        in several threads at once. The formatter may then be called by several threads at once, as it is
        whenever it is shared by several handlers (logging's own formatters are safe for that)."""
        if self.filters:
            rv = self.filter(record)
            if not rv:
                return rv
            if isinstance(rv, logging.LogRecord):  # Python 3.12 and later: a filter may return a new record
                record = rv
        else:
            rv = record if _PASSED_IS_RECORD else True
        self.emit(record)
        return rv

    def emit(self, record):
        try:
            if (self.formatter is None and self._default_format
                    and not (record.exc_info or record.exc_text or record.stack_info)):
                # What logging's default Formatter("%(message)s") makes of a record without a traceback or a
                # stack, without its five calls
                msg = record.message = record.getMessage()
            else:
                msg = self.format(record)
            if self._raw:
                self._log.write(msg + "\n")  # FileHandler's terminator, after whatever the message ends with
                return
            lv = _LEVELS.get(record.levelno) or forklog_level(record.levelno)
            if self._extras:
                d = record.__dict__
                if len(d) > _NBASE + ("message" in d) + ("asctime" in d):
                    fields = {k: d[k] for k in d if k not in _RECORD_ATTRS}
                    if fields:
                        self._log._log(lv, msg, fields, False)
                        return
            log = self._log
            if type(msg) is not str or "\0" in msg:
                log._log(lv, msg)
                return
            try:
                b = msg.encode("utf-8")
            except UnicodeEncodeError:
                log._log(lv, msg)
                return
            calls = log._calls  # the rest of Log._log(lv, msg), inline: one Python call less per record
            me = _get_ident()
            try:
                calls.append(me)  # first in the try, and removed first in the finally: see Log._call
                hv = log._hv
                if hv is not None:
                    rc = _log_msg(hv, lv, b, None, _SIZE0)
            finally:
                calls.remove(me)
                if log._pending:
                    log._close_pending()
            if hv is None:  # closed: outside the calls in flight (see Log._call)
                rc = log._once("_log", lv, b)
            if rc < 0:
                raise _oserror(rc, _LOG_MSG_NAME, log._path)
        except RecursionError:  # as logging's handlers do
            raise
        except Exception:
            self.handleError(record)

    def flush(self):
        try:
            self._log.flush()
        except ValueError:
            pass  # closed (maybe by another thread meanwhile): nothing left to flush
        except Exception as e:
            _report("flush", e)

    def close(self):
        # At interpreter exit (the main thread has stopped: logging.shutdown(), an exit callback), exit callbacks that
        # run later may still log: one registered before logging was imported runs after logging.shutdown(). Their
        # records go through a handle of the log opened for each alone (Log._once), as after a worker's exit close,
        # and as logging.FileHandler reopens its file for them; those of a log of a descriptor or a private one, whose
        # lock no new handle shares with the processes forked after its open, through its own handle, kept for them
        # (Log._close_at_exit). A Handler the program closed earlier still refuses.
        at_exit = not self._log.closed and not threading.main_thread().is_alive()
        try:
            if at_exit:
                self._log._close_at_exit()
            else:
                self._log.close()
        except Exception as e:
            _report("close", e)
        finally:
            logging.Handler.close(self)

    def __reduce__(self):
        # Sent to another process (a spawn or forkserver worker, through initargs): the same class (a subclass's
        # __init__ must take Handler's arguments, or define a __reduce__ of its own), path, options, level,
        # formatter, filters and name there, opening the same log.
        if self._log.closed:
            raise ValueError("forklog: cannot send a closed handler to another process")
        if self._log.fd is not None:
            raise ValueError("forklog: cannot send a handler of a descriptor to another process (its lock is shared "
                             "with forked processes only): create it there, on the descriptor that process has")
        return (_reopen_handler, (type(self), self._log.path, self.level, self._raw, self._options, self.formatter,
                                  list(self.filters), self.get_name()))

    def __repr__(self):
        what = self._log.path if self._log.fd is None else "fd %d" % self._log.fd
        return "<forklog.Handler %s (%s)>" % (what, logging.getLevelName(self.level))


def _reopen_handler(cls, path, level, raw, options, formatter, filters=(), name=None):
    h = cls(path, raw=raw, **options)
    h.setLevel(level)  # the handler's logging level as it was (1 .. 4 too, which the constructor reads as forklog's)
    h.setFormatter(formatter)
    for f in filters:
        h.addFilter(f)
    h.set_name(name)
    return h


def _report(what, e):
    # logging's handlers report their own failures on stderr while logging.raiseExceptions is true, and never
    # raise them.
    if logging.raiseExceptions and sys.stderr:
        try:
            sys.stderr.write("--- forklog.Handler: %s failed: %s\n" % (what, e))
        except Exception:
            pass
