# SPDX-License-Identifier: MIT
"""ctypes binding of libforklog: finding the library, the options struct, the function signatures.

Nothing here is public API; forklog.Log and forklog.Handler are built on it.
"""
import ctypes
import ctypes.util
import os

__all__ = ["lib", "Options", "library_path"]

_HINT = (
    "install the forklog C library (cmake --build BUILD && cmake --install BUILD, then ldconfig), or point "
    "FORKLOG_LIBRARY at it: FORKLOG_LIBRARY=/path/to/libforklog.so.0"
)


# The entry points every libforklog has had: a library that loads without them is not libforklog.
_REQUIRED = ("forklog_version", "forklog_version_string", "forklog_open", "forklog_log", "forklog_write",
             "forklog_flush", "forklog_reopen", "forklog_close")


def _open(name):
    """ctypes.CDLL(name), or OSError when it cannot be loaded or is not libforklog (a symbol missing: without this
    check the first use below would raise AttributeError, which `except ImportError` does not catch)."""
    lib = ctypes.CDLL(name)
    missing = [sym for sym in _REQUIRED if not hasattr(lib, sym)]
    if missing:
        raise OSError("%s is not libforklog: it has no %s" % (name, ", ".join(missing)))
    return lib


def _load():
    env = os.environ.get("FORKLOG_LIBRARY")
    if env:
        try:
            return _open(env), env
        except OSError as e:
            raise ImportError(
                "forklog: cannot load the C library named by FORKLOG_LIBRARY=%s (%s); set "
                "FORKLOG_LIBRARY=/path/to/libforklog.so.0, or unset it and install the library" % (env, e)
            ) from None
    tried = []
    for name in (ctypes.util.find_library("forklog"), "libforklog.so.0"):
        if not name or name in tried:
            continue
        tried.append(name)
        try:
            return _open(name), name
        except OSError:
            pass
    raise ImportError(
        "forklog: the C library libforklog.so was not found by the system loader (tried %s); %s"
        % (", ".join(tried) or "nothing", _HINT)
    )


lib, library_path = _load()

# uid_t and gid_t are 32-bit unsigned on Linux (glibc and musl, every architecture).
_uid_t = ctypes.c_uint32
_gid_t = ctypes.c_uint32


class Options(ctypes.Structure):
    """Mirror of struct forklog_options (include/forklog.h), field by field and type by type.

    C enums with these small values are `int` on every Linux ABI; `unsigned` is c_uint.
    """

    _fields_ = [
        ("level", ctypes.c_int),  # enum forklog_level
        ("format", ctypes.c_int),  # enum forklog_format
        ("mode", ctypes.c_uint),
        ("flags", ctypes.c_uint),
        ("max_record", ctypes.c_size_t),
        ("rotate_bytes", ctypes.c_ulonglong),
        ("rotate_keep", ctypes.c_uint),
        ("flush_ms", ctypes.c_uint),
        ("buffer_size", ctypes.c_size_t),
        ("owner", _uid_t),
        ("group", _gid_t),
        ("error", ctypes.c_void_p),  # char *: a buffer of ours, so a plain pointer
        ("error_size", ctypes.c_size_t),
        ("keys", ctypes.c_int),  # enum forklog_keys
        ("name", ctypes.c_char_p),
        ("context", ctypes.c_void_p),  # const struct forklog_field *: an array of ours
        ("ncontext", ctypes.c_size_t),
    ]


class PaddedOptions(ctypes.Structure):
    """Options followed by zeroed bytes. The C struct only ever grows at its end, and a zero field means the
    default: a newer library that reads fields this binding does not know finds zeros, never foreign memory."""

    _fields_ = [("opts", Options), ("_spare", ctypes.c_char * 256)]


_handle_p = ctypes.c_void_p

lib.forklog_version.argtypes = []
lib.forklog_version.restype = ctypes.c_uint
lib.forklog_version_string.argtypes = []
lib.forklog_version_string.restype = ctypes.c_char_p
lib.forklog_open.argtypes = [ctypes.POINTER(_handle_p), ctypes.c_char_p, ctypes.POINTER(PaddedOptions)]
lib.forklog_open.restype = ctypes.c_int
# forklog_log() is variadic, and ctypes cannot declare a variadic function: calling one as if its arguments were
# fixed works only where the calling convention passes both alike (x86_64 and aarch64 Linux, not every ABI).
# Records without fields therefore go through forklog_log_fields(log, level, msg, NULL, 0), which takes the
# message as is; forklog_log(log, level, "%s", msg) is left only for libraries older than forklog_log_fields().
lib.forklog_log.argtypes = [_handle_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p]
lib.forklog_log.restype = ctypes.c_int
lib.forklog_write.argtypes = [_handle_p, ctypes.c_char_p, ctypes.c_size_t]
lib.forklog_write.restype = ctypes.c_int
lib.forklog_flush.argtypes = [_handle_p]
lib.forklog_flush.restype = ctypes.c_int
lib.forklog_reopen.argtypes = [_handle_p]
lib.forklog_reopen.restype = ctypes.c_int
lib.forklog_close.argtypes = [_handle_p]
lib.forklog_close.restype = ctypes.c_int
# forklog_open_fd() came after the first libraries: a Log of a descriptor needs it (HAVE_OPEN_FD).
HAVE_OPEN_FD = hasattr(lib, "forklog_open_fd")
if HAVE_OPEN_FD:
    lib.forklog_open_fd.argtypes = [ctypes.POINTER(_handle_p), ctypes.c_int, ctypes.POINTER(PaddedOptions)]
    lib.forklog_open_fd.restype = ctypes.c_int

# Entry points that libraries before typed fields do not have are looked up by name below, so that this
# binding keeps working with them.


class _FieldTime(ctypes.Structure):
    _fields_ = [("sec", ctypes.c_longlong), ("nsec", ctypes.c_long)]


class _FieldValue(ctypes.Union):
    _fields_ = [("s", ctypes.c_char_p), ("i", ctypes.c_longlong), ("u", ctypes.c_ulonglong),
                ("d", ctypes.c_double), ("b", ctypes.c_int), ("ns", ctypes.c_longlong), ("t", _FieldTime)]


class Field(ctypes.Structure):
    """Mirror of struct forklog_field: a typed key/value of a record (forklog_log_fields())."""

    _fields_ = [("key", ctypes.c_char_p), ("type", ctypes.c_int), ("v", _FieldValue)]


FIELD_STR, FIELD_INT, FIELD_UINT, FIELD_DBL, FIELD_BOOL, FIELD_DUR, FIELD_TIME = 1, 2, 3, 4, 5, 6, 7
MAX_FIELDS = 64
MAX_KEY = 64

# forklog_log_fields(): typed fields after the message (libraries that have it; older ones do not).
HAVE_FIELDS = hasattr(lib, "forklog_log_fields")
if HAVE_FIELDS:
    lib.forklog_log_fields.argtypes = [_handle_p, ctypes.c_int, ctypes.c_char_p, ctypes.POINTER(Field),
                                       ctypes.c_size_t]
    lib.forklog_log_fields.restype = ctypes.c_int

# log_msg(handle, level, msg, None, SIZE0): one record without fields, for the per-record path (Log.info(),
# Handler.emit()). It is called without argtypes, with the handle as a ctypes.c_void_p, the level as a Python int
# (a C int), the message as bytes (char *), None (a NULL pointer) and the count as a ctypes.c_size_t made once:
# ctypes then converts each argument in C instead of calling each type's from_param(), about 0.2 us less per call.
# (lib["name"] gives a function object of its own; lib.name is the one with argtypes above.)
SIZE0 = ctypes.c_size_t(0)
if HAVE_FIELDS:
    log_msg = lib["forklog_log_fields"]
    log_msg.restype = ctypes.c_int
    LOG_MSG_NAME = "forklog_log_fields"
else:
    def log_msg(h, level, msg, _fields, _n):
        return lib.forklog_log(h, level, b"%s", msg)

    LOG_MSG_NAME = "forklog_log"

HAVE_LEVEL = hasattr(lib, "forklog_set_level")
if HAVE_LEVEL:
    lib.forklog_set_level.argtypes = [_handle_p, ctypes.c_int]
    lib.forklog_set_level.restype = ctypes.c_int
    lib.forklog_get_level.argtypes = [_handle_p]
    lib.forklog_get_level.restype = ctypes.c_int
HAVE_CONTEXT = hasattr(lib, "forklog_context_add")
if HAVE_CONTEXT:
    lib.forklog_context_add.argtypes = [_handle_p, ctypes.POINTER(Field), ctypes.c_size_t]
    lib.forklog_context_add.restype = ctypes.c_int
