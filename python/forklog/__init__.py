# SPDX-License-Identifier: MIT
"""forklog for Python: many processes append whole records to one log file.

A ctypes binding of the forklog C library (libforklog.so): every process that opens the same log through
forklog (any multiprocessing start method, any program) shares one lock, one file size, one rotation and one
buffer, through the segment file `.NAME.forklog` beside the log. Standard library only.

    import forklog, logging
    logging.getLogger().addHandler(forklog.Handler("app.log"))

    with forklog.Log("app.log", json=True) as log:
        log.info("started")

The library is found through FORKLOG_LIBRARY (a path), else the system loader (libforklog.so.0).
"""
from ._log import DEBUG, ERROR, INFO, WARN, Log, OptionError
from . import _native
from ._native import lib as _lib
from ._native import library_path
from .handler import Handler, forklog_level

__all__ = ["Log", "Handler", "OptionError", "DEBUG", "INFO", "WARN", "ERROR", "forklog_level",
           "library_version", "library_path", "have_fields", "__version__"]
__version__ = "0.1.0"


def have_fields():
    """True when the loaded library has typed fields (forklog_log_fields()): Log.info(msg, key=value, ...) and
    the Handler's extras as fields need it."""
    return _native.HAVE_FIELDS


def library_version():
    """The loaded C library's version string, e.g. "0.1.0"."""
    return _lib.forklog_version_string().decode()
