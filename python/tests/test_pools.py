# SPDX-License-Identifier: MIT
"""4 workers x 5,000 records (up to 64 KiB) through logging and forklog.Handler, for every start method, with
multiprocessing.Pool and concurrent.futures.ProcessPoolExecutor: every record whole, every sequence complete."""
import concurrent.futures
import logging
import multiprocessing as mp
import os

import pytest

import forklog
import _workers as w

WORKERS = 4
PER_TASK = 5000


def _read(path):
    with open(path, "rb") as f:
        return f.read()


@pytest.fixture
def logger():
    lg = logging.getLogger(w.LOGGER)
    yield lg
    for h in list(lg.handlers):
        lg.removeHandler(h)
        h.close()


def _check(path):
    pids, _ = w.check_records([_read(path)], WORKERS, PER_TASK)
    # the segment file beside the log is gone once every process closed or exited
    assert not os.path.exists(os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".forklog"))
    return pids


def test_pool_fork_handler_created_in_the_parent(tmp_path, logger):
    path = str(tmp_path / "app.log")
    w.attach(forklog.Handler(path))  # before the Pool: inherited by every worker
    with mp.get_context("fork").Pool(WORKERS) as pool:
        pids = pool.map(w.log_task, [(t, PER_TASK) for t in range(WORKERS)], chunksize=1)
    logger.handlers[0].close()
    assert len(set(pids)) >= 2
    _check(path)


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_pool_handler_opened_in_each_worker_initializer(tmp_path, method):
    path = str(tmp_path / "app.log")
    ctx = mp.get_context(method)
    with ctx.Pool(WORKERS, initializer=w.init_handler, initargs=(path, {})) as pool:
        pool.map(w.log_task, [(t, PER_TASK) for t in range(WORKERS)], chunksize=1)
        pool.close()
        pool.join()  # workers exit normally: logging.shutdown() closes their handlers
    _check(path)


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_process_pool_executor_with_a_pickled_handler(tmp_path, method):
    path = str(tmp_path / "app.log")
    handler = forklog.Handler(path, buffered=True)  # sent to each worker: it opens the same path there
    ex = concurrent.futures.ProcessPoolExecutor(WORKERS, mp_context=mp.get_context(method),
                                                initializer=w.init_with, initargs=(handler,))
    with ex:
        list(ex.map(w.log_task, [(t, PER_TASK) for t in range(WORKERS)]))
    handler.close()
    _check(path)


def test_pool_fork_with_an_inherited_log(tmp_path):
    path = str(tmp_path / "app.log")
    log = forklog.Log(path)
    with mp.get_context("fork").Pool(WORKERS, initializer=w.init_log, initargs=(log,)) as pool:
        pool.map(w.write_task, [(t, PER_TASK) for t in range(WORKERS)], chunksize=1)
    log.close()
    _check(path)
