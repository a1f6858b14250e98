/*
 * forklog: one log file, many processes, whole records.
 *
 * forklog_open() opens the file with O_APPEND and maps the log's shared segment, which holds the append lock (a
 * process-shared, robust pthread mutex): a small file beside the log, `.NAME.forklog`, that every process opening
 * the same log maps, whatever its ancestry (forked, exec'd, started by cron or a shell, another program). A forked
 * child, pool worker or thread uses the inherited handle as is. Each call appends one whole record with one
 * write(2) while it holds the lock. No server process, no daemon, no set-up in the child.
 *
 * This header is the reference. Conventions that hold for every function below:
 *   - Success is 0 (or a documented non-negative value); failure is a negative errno value, and strerror(-rc)
 *     explains it. The global errno is not used to report results.
 *   - The library never aborts, exits, prints, or installs signal handlers.
 *   - A record that fails leaves nothing of itself in the file.
 *   - "fork-safe" means: a child forked at any moment (even while another thread of the parent is in the middle
 *     of a record) may use the inherited handle at once.
 *
 * Single-header use: in exactly one .c file of the program, `#define FORKLOG_IMPLEMENTATION` before
 * `#include "forklog.h"` (the generated single-file forklog.h), then `cc prog.c -pthread`. Compile that file in
 * the default gnu mode, or define _DEFAULT_SOURCE (or _GNU_SOURCE) before any #include.
 */
#ifndef FORKLOG_H
#define FORKLOG_H

#include <stdarg.h>
#include <stddef.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* FORKLOG_API marks the exported functions. Override it (e.g. to `static`) before including this header. */
#ifndef FORKLOG_API
#if defined(FORKLOG_STATIC)
#define FORKLOG_API static
#elif defined(__GNUC__)
#define FORKLOG_API __attribute__((visibility("default")))
#else
#define FORKLOG_API
#endif
#endif

#if defined(__GNUC__)
#define FORKLOG_PRINTF(fmt_index, first_arg) __attribute__((format(printf, fmt_index, first_arg)))
#else
#define FORKLOG_PRINTF(fmt_index, first_arg)
#endif

#define FORKLOG_VERSION_MAJOR 0
#define FORKLOG_VERSION_MINOR 1
#define FORKLOG_VERSION_PATCH 0
/* Numeric form: major * 10000 + minor * 100 + patch. */
#define FORKLOG_VERSION_NUMBER (FORKLOG_VERSION_MAJOR * 10000 + FORKLOG_VERSION_MINOR * 100 + FORKLOG_VERSION_PATCH)
#define FORKLOG_VERSION_STRING "0.1.0"

/* The version of the library actually linked, as FORKLOG_VERSION_NUMBER. Safe anywhere. */
FORKLOG_API unsigned forklog_version(void);
/* The same as a string, e.g. "0.1.0". Safe anywhere. */
FORKLOG_API const char *forklog_version_string(void);

/* The opaque handle. One forklog_open() creates it; fork() copies it into every child. */
typedef struct forklog forklog;

/* Record levels, lowest first. 0 is not a level: in forklog_options it means "the default". */
enum forklog_level { FORKLOG_DEBUG = 1, FORKLOG_INFO = 2, FORKLOG_WARN = 3, FORKLOG_ERROR = 4 };

/* Record formats of forklog_log(). forklog_write() ignores the format: it writes bytes as given. */
enum forklog_format {
    /* `2026-11-28T16:05:13.123456Z INFO pid=4242 message`: RFC 3339 UTC time with microseconds, level, pid,
     * message. Control bytes of the message (0x00-0x1f, 0x7f) are escaped as \n, \r, \t or \xHH, so one record is
     * always one line; other bytes, backslashes included, are kept as they are. */
    FORKLOG_FORMAT_TEXT = 0,
    /* JSON Lines: `{"ts":"...","level":"info","pid":4242,"msg":"..."}`, escaped per RFC 8259. Invalid UTF-8 in the
     * message becomes U+FFFD, so every record is valid UTF-8 and valid JSON. */
    FORKLOG_FORMAT_JSON = 1
};

/* Bits of forklog_options.flags. */
enum forklog_flag {
    /* fdatasync(2) after every record, before the call returns (with FORKLOG_BUFFERED: after every flush). */
    FORKLOG_SYNC = 1u << 0,
    /* Records are copied, under the lock, into a buffer in the shared segment and written in large write(2)
     * calls: when the buffer fills, when its oldest record is older than flush_ms, on forklog_flush() and on
     * forklog_close(). Because the buffer is shared, a record whose call returned survives the death of its
     * writer: any other process's next call past flush_ms, flush or close writes it. If every process using the
     * log dies before a flush (SIGKILL, or _exit() without forklog_close()), the records stay in the segment file
     * and the next forklog_open() of the log writes them out, whole and once, before anything else. They are lost
     * only with a FORKLOG_PRIVATE segment, or in a machine crash (the segment file is then rebuilt). */
    FORKLOG_BUFFERED = 1u << 1,
    /* A segment of this handle's own, in anonymous shared memory, instead of the log's shared segment file: only
     * this process and the processes forked from it (after this call) share the lock, and no file is created
     * beside the log. Another process that opens the same log is then NOT serialised with them. */
    FORKLOG_PRIVATE = 1u << 2
};

/* Options of forklog_open(). A zeroed struct (or a NULL pointer) means every default. Fields are only ever
 * added at the end. */
struct forklog_options {
    /* Minimum level written; lower records cost no formatting, no lock and no syscall. 0: FORKLOG_INFO. */
    enum forklog_level level;
    /* Format of forklog_log() records. 0: FORKLOG_FORMAT_TEXT. */
    enum forklog_format format;
    /* Permission bits used when the file (or a rotated file) is created, before the umask. 0: 0644. */
    unsigned mode;
    /* Bitwise OR of enum forklog_flag values; any other bit is -EINVAL. */
    unsigned flags;
    /* Largest record in bytes as it lands in the file, newline included. A longer record is cut to this size and
     * ends with a marker that says how many bytes were cut; the call then returns that count. 0: 1 MiB.
     * Valid: 256 .. 1 GiB. */
    size_t max_record;
    /* Size-based rotation: before a record would take the file past this many bytes, exactly one process
     * renames path to path.1 (path.1 to path.2, ...) and every process moves to the new file before its next
     * record. A record is never split between files. 0: never rotate.
     * Only the regular file the log is writing is ever renamed: when path is not a regular file (a FIFO, a
     * device, a symlink), or not the file the log writes, nothing is renamed. A rotation that cannot happen
     * never fails or loses a record: the record goes into the current file, which may then grow past
     * rotate_bytes until a process that can rotate writes. That is the case for a process that may not rename
     * in the directory (EACCES, EPERM, EROFS: say, a worker that dropped its privileges), and when path.1 is
     * not a regular file (see rotate_keep). */
    unsigned long long rotate_bytes;
    /* Rotated files kept: path.1 (newest) .. path.N. 0: 5. Valid: 1 .. 1000.
     * Rotation only ever moves or replaces regular files: a name path.K that holds anything else (a directory,
     * a symlink, a FIFO, ...) is left alone and ends the chain, so path.(K-1) is then the oldest file kept and
     * the one replaced (K = 1: no rotation happens at all, see rotate_bytes). */
    unsigned rotate_keep;
    /* FORKLOG_BUFFERED: the longest a record may wait in the buffer, in milliseconds, checked on every call.
     * 0: 100. */
    unsigned flush_ms;
    /* FORKLOG_BUFFERED: buffer size in bytes. 0: 256 KiB. Valid: 4 KiB .. 1 GiB. */
    size_t buffer_size;
    /* Owner and group given, with fchown(2), to every file the log creates: path when forklog_open() creates
     * it, the new path of a rotation, and path when a reopen finds it missing and creates it (logrotate's
     * `create MODE OWNER GROUP`, for a privileged process whose forked workers drop their privileges and must
     * still open and write the files). Files that already exist are never changed. 0: left as created (the
     * creator's), each field on its own; (uid_t)-1 and (gid_t)-1 mean the same. Root (0) can therefore not be
     * asked for, which is never needed: a file root creates is root's already, and a process without
     * CAP_CHOWN cannot give a file away. Giving a file away needs CAP_CHOWN (for the group: being a member of
     * it is enough). A failed fchown() is ignored, and the record is written anyway: the file keeps the
     * creator's owner and group. If the process dies between creating a file and fchown(), the file keeps
     * them too. */
    uid_t owner;
    gid_t group;
    /* Where forklog_open() explains a failure in one line, NUL-terminated and cut to error_size bytes: which
     * setting conflicts with the log's other users, why its segment file is not trusted, ... NULL: nowhere. */
    char *error;
    size_t error_size;
};

/*
 * Opens (creating it with opts->mode, and opts->owner and opts->group, if missing) the file at `path` for
 * appending, O_APPEND | O_CLOEXEC, and joins the log's shared segment, which holds the append lock, the file's
 * state, rotation and the buffer. Every process that opens the same regular file through forklog_open() shares
 * that one segment, whatever its ancestry; children forked after the call use the inherited handle as is.
 * Returns 0 and stores the handle in *out.
 *
 * The segment is the file `.NAME.forklog` in the log's directory (NAME being the log's file name), created with
 * the read and write bits of whoever may write the log (a 0644 log gets a 0600 segment) and given the log's
 * owner and group. The first opener builds it; the others join it. An opener that finds nobody using it (every
 * previous user is gone: closed, died, or the machine rebooted) first finishes what the last users left (a torn
 * record is cut, records left in the buffer are written) and then builds it anew with its own settings. The last
 * user to close removes the file. Settings that every process must share come from the segment: a zero
 * rotate_bytes, rotate_keep, flush_ms or buffer_size, and a FORKLOG_BUFFERED bit left clear, join what the log's
 * users have; an explicit value that differs is -EINVAL (opts->error names it). FORKLOG_PRIVATE keeps a segment
 * of the handle's own instead (see enum forklog_flag); a target that is not a regular file always gets one.
 *
 * `path` may also name a FIFO, a character device or a pipe (/proc/self/fd/N): records are written whole as
 * long as each write is, but such a target is never rotated and a dead writer's fragment is never cut. No open,
 * here or in a later reopen, ever blocks: a FIFO with no reader fails with -ENXIO at once; once open, writes
 * block as usual, and a write to a FIFO or pipe whose reader has gone fails with -EPIPE (with SIGPIPE ignored;
 * otherwise the signal ends the writer, as with any write).
 * Errors: -EINVAL (NULL out or path, empty path, bad option, a setting that conflicts with the log's other
 * users), -ENOENT (missing parent directory), -EACCES (the log, or the directory for its segment file),
 * -EISDIR, -EROFS, -ENXIO (a FIFO with no reader, a unix socket), -EPERM (a segment file that is not the log's:
 * another owner, wider permissions, a link), -EPROTO (a segment of another layout: another library version or
 * another C library), -ENAMETOOLONG, -ENOMEM, and the other errors of open(2), fstat(2), flock(2), ftruncate(2)
 * and mmap(2). opts->error, when set, receives a one-line explanation. On failure *out is set to NULL (when out
 * is not NULL) and nothing is created but the file itself. Thread-safe; not async-signal-safe.
 */
FORKLOG_API int forklog_open(forklog **out, const char *path, const struct forklog_options *opts);

/*
 * Formats one record (see enum forklog_format) and appends it whole. A record below the handle's level returns
 * 0 at once. Returns 0, or a positive count of message bytes that were cut to fit max_record (the record then
 * ends with a marker: ` [forklog: N bytes cut]` in text, `"cut":N` in JSON); the count is capped at INT_MAX.
 * Errors: -EINVAL (NULL log or fmt, level out of range), -ENOMEM, and the errors of write(2) (-ENOSPC, -EFBIG,
 * -EIO, ...), after which nothing of the record is in the file. Thread-safe and fork-safe; not
 * async-signal-safe (it formats with vsnprintf).
 */
FORKLOG_API int forklog_log(forklog *log, enum forklog_level level, const char *fmt, ...) FORKLOG_PRINTF(3, 4);

/* forklog_log() with a va_list. */
FORKLOG_API int forklog_vlog(forklog *log, enum forklog_level level, const char *fmt, va_list ap) FORKLOG_PRINTF(3, 0);

#define forklog_debug(log, ...) forklog_log((log), FORKLOG_DEBUG, __VA_ARGS__)
#define forklog_info(log, ...)  forklog_log((log), FORKLOG_INFO, __VA_ARGS__)
#define forklog_warn(log, ...)  forklog_log((log), FORKLOG_WARN, __VA_ARGS__)
#define forklog_error(log, ...) forklog_log((log), FORKLOG_ERROR, __VA_ARGS__)

/*
 * Appends `len` bytes as one record, exactly as given, adding a '\n' only when they do not end with one. No
 * prefix, no escaping, no level. len 0 writes an empty line. Returns 0, or a positive count of bytes cut to fit
 * max_record (the record then ends with ` [forklog: N bytes cut]\n`), capped at INT_MAX. Errors: -EINVAL (NULL
 * log, or NULL record with len > 0), and the errors of write(2), after which nothing of the record is in the
 * file. Thread-safe and fork-safe; not async-signal-safe (the lock is a pthread mutex and is not recursive).
 */
FORKLOG_API int forklog_write(forklog *log, const void *record, size_t len);

/*
 * Writes out every buffered record (FORKLOG_BUFFERED); without that flag it only returns 0. Returns 0 or the
 * negative errno of write(2); buffered records stay buffered on failure. Thread-safe and fork-safe.
 */
FORKLOG_API int forklog_flush(forklog *log);

/*
 * Asks every process that holds the handle to reopen `path` (by name) before its next record, for external
 * rotation (logrotate's `create` mode, or a move by hand). It only increments a counter in the shared segment:
 * it is async-signal-safe, so a SIGHUP handler may call it. Returns 0, or -EINVAL for a NULL log.
 */
FORKLOG_API int forklog_reopen(forklog *log);

/*
 * Releases this process's use of the handle: flushes buffered records, closes the descriptor, unmaps the
 * segment and frees the handle. Call it in each process that holds the handle and no longer needs it. The last
 * process to close a log removes its segment file (when it holds no record and no unfinished write). No other thread of
 * the process may use the handle during or after the call. Returns 0, or the first error met (-EIO from close, a flush
 * error); the handle is freed in every case. forklog_close(NULL) returns 0.
 */
FORKLOG_API int forklog_close(forklog *log);

/* ---------------------------------------------------------------------------------------------------------------
 * Pool helper: run tasks over forked workers, time each, log one record per task, never hang.
 */

/* A task: run in a worker process. 0 = ok; any other value = failed with that code. */
typedef int (*forklog_task_fn)(size_t index, void *ctx);

/* What became of one task. */
enum forklog_task_status {
    FORKLOG_TASK_NOT_RUN = 0, /* never started (the pool gave up: see forklog_pool_map's errors) */
    FORKLOG_TASK_OK = 1,      /* returned 0 */
    FORKLOG_TASK_FAILED = 2,  /* returned non-zero: code holds the value */
    FORKLOG_TASK_CRASHED = 3, /* its worker died: signal, or exit code in code when it exited */
    FORKLOG_TASK_TIMEOUT = 4  /* ran past timeout_s: the worker was killed */
};

/* The outcome of one task, filled in forklog_pool_options.results when that pointer is set. */
struct forklog_task_result {
    enum forklog_task_status status;
    int code;          /* FAILED: the task's return value; CRASHED by exit: the exit status (-1: unknown); else 0 */
    int signal;        /* CRASHED or TIMEOUT: the signal that ended the worker; else 0 */
    pid_t worker;      /* pid of the worker that ran it; 0 if never run */
    double start;      /* wall-clock start, seconds since the Unix epoch (CLOCK_REALTIME) */
    double duration_s; /* CLOCK_MONOTONIC duration; for CRASHED/TIMEOUT, until the parent saw it end */
};

struct forklog_pool_options {
    unsigned workers;       /* 0: number of online CPUs; fewer run when fork() fails or descriptors run short */
    int (*init)(void *arg); /* run once in every worker after fork, like Pool(initializer=...); 0 = ok */
    void *init_arg;
    unsigned max_tasks_per_worker; /* 0: unlimited; a worker that reached it is replaced */
    double timeout_s;              /* per task, and per worker initializer; 0: none */
    forklog *log;                  /* where timing records go; NULL: none */
    /* Label of task `index` for its record (the seed logs the data item), called in the parent only; cut to
     * 128 bytes (at a UTF-8 boundary) in the record. NULL, or a NULL return: no label. */
    const char *(*label)(size_t index, void *ctx);
    /* NULL, or an array of ntasks entries that receives each task's outcome (zeroed first). */
    struct forklog_task_result *results;
    /* How many workers may fail their initializer, in all, before the pool gives up. 0: workers * 2 + 2. */
    unsigned max_init_failures;
    /* Level of the per-task records; 0: FORKLOG_INFO (failed, crashed and timed-out tasks use FORKLOG_WARN
     * or above whatever this says). */
    enum forklog_level level;
};

struct forklog_pool_report {
    size_t ok, failed, crashed, timed_out;
    double wall_s, min_s, p50_s, p95_s, p99_s, max_s; /* task durations, seconds */
    size_t not_run;                                   /* tasks that never started */
    size_t workers_started;                           /* worker processes forked, replacements included */
    double mean_s;                                    /* mean task duration */
    double tasks_per_s;                               /* ntasks / wall_s */
};

/*
 * Runs task(i, ctx) for i in [0, ntasks) over forked workers, dynamically (a free worker takes the next task),
 * writes one timing record per task to opts->log, and one summary record at the end. Returns the number of tasks
 * that did not end ok (0 when all did), or a negative errno when the pool itself could not run: -EINVAL (NULL
 * opts or task, bad option), -EAGAIN or -ENOMEM (fork failed with no worker alive; while some live, the pool
 * goes on with fewer), -EMFILE or -ENFILE (no descriptor for its pipes with no worker alive; likewise), -ECHILD
 * (more than max_init_failures initializers failed and tasks were left). Tasks that never ran are
 * FORKLOG_TASK_NOT_RUN and still get a record (status=not_run): only -EINVAL, and -ENOMEM for the pool's own
 * memory, are returned before any record. `report` may be NULL. A record is written by the parent for every task,
 * whatever became of its worker; with FORKLOG_BUFFERED the log is flushed before the call returns. Every worker
 * has ended when it returns. It reaps only its own workers (waitpid on their pids, never the tasks' children) and
 * leaves the caller's signal dispositions, mask and other children as they were; a caller that ignores SIGCHLD,
 * or reaps in its handler, only loses the exit status of crashed workers (code -1). A task that calls exit() ends
 * its worker without running the caller's atexit handlers or flushing its stdio buffers. The pool's descriptors
 * never take the numbers 0, 1 or 2, and while a worker runs, another is forked only if at least 16 descriptors
 * stay free below RLIMIT_NOFILE. Callable from a thread, and from a worker of another pool; not
 * async-signal-safe. docs/pool.md lists every failure mode and what it produces.
 */
FORKLOG_API int forklog_pool_map(const struct forklog_pool_options *opts, size_t ntasks, forklog_task_fn task,
                                 void *ctx, struct forklog_pool_report *report);

#ifdef __cplusplus
}
#endif

#endif /* FORKLOG_H */
