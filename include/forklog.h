/* SPDX-License-Identifier: MIT */
/*
 * forklog: one log file, many processes, whole records.
 *
 * forklog_open() opens the file with O_APPEND and maps the log's shared segment, which holds the append lock (a
 * process-shared, robust pthread mutex): a small file beside the log, `.NAME.forklog`, that every process opening
 * the same log maps, whatever its ancestry (forked, exec'd, started by cron or a shell, another program). A forked
 * child, pool worker or thread uses the inherited handle as is. Each call appends one whole record with one
 * write(2) while it holds the lock (with FORKLOG_BUFFERED, the record waits in shared memory, surviving its
 * writer, until a flush: see FORKLOG_BUFFERED). No server process, no daemon, no set-up in the child.
 *
 * This header is the reference. Conventions that hold for every function below:
 *   - Success is 0 (or a documented non-negative value); failure is a negative errno value, and strerror(-rc)
 *     explains it. The global errno is not used to report results.
 *   - The library never aborts, exits, prints, or installs signal handlers.
 *   - A record that fails leaves nothing of itself in the file.
 *   - "fork-safe" means: a child forked at any moment (even while another thread of the parent is in the middle
 *     of a record) may use the inherited handle at once.
 *   - A record call (forklog_log(), forklog_log_fields(), forklog_write() and their variants) or forklog_flush()
 *     made by a signal handler that interrupted a record call, a flush or a forklog_pool_map() of the same thread,
 *     through any handle, fails with -EDEADLK and writes nothing when the interrupted call was past building its
 *     record (appending it, flushing, or looking at the lock): it may hold the lock, which is not recursive, or be
 *     copying its record into the thread's buffer. Interrupted while it still built its record, the handler's
 *     call is written as any other. A child that such a handler forks may make calls of its own, but must end in
 *     the handler (_exit() or exec): returning from it, the child would go on with its parent's interrupted call
 *     and could write the parent's records twice or overwrite one. These calls are not async-signal-safe
 *     all the same (they format with vsnprintf, may allocate); forklog_reopen(), forklog_set_level() and
 *     forklog_get_level() are, and so are forklog_version() and forklog_version_string().
 *
 * Single-header use: in exactly one .c file of the program, `#define FORKLOG_IMPLEMENTATION` before
 * `#include "forklog.h"` (the generated single-file forklog.h), then `cc prog.c -pthread`. Compile that file in
 * the default gnu mode, or define _DEFAULT_SOURCE (or _GNU_SOURCE) before any #include. On a 32-bit system, also
 * define _FILE_OFFSET_BITS=64 and _TIME_BITS=64 for that file (the library's own build does), or its log cannot grow
 * past 2 GiB, and its records' timestamps are wrong from January 2038 on.
 */
#ifndef FORKLOG_H
#define FORKLOG_H

#include <stdarg.h>
#include <stddef.h>
#include <sys/types.h>
#include <time.h>

#ifdef __cplusplus
extern "C" {
#endif

/* FORKLOG_API marks the exported functions. Override it (e.g. to `static`) before including this header.
 * FORKLOG_STATIC (single header): the functions are static to the file that defines FORKLOG_IMPLEMENTATION, which
 * uses only some of them; `unused` keeps the others from failing a -Wall -Werror build. */
#ifndef FORKLOG_API
#if defined(FORKLOG_STATIC) && defined(__GNUC__)
#define FORKLOG_API static __attribute__((unused))
#elif defined(FORKLOG_STATIC)
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
    /* fdatasync(2) after every record written to a regular file, before the call returns (with FORKLOG_BUFFERED:
     * after every flush); nothing is synced on a FIFO, pipe, socket or device. */
    FORKLOG_SYNC = 1u << 0,
    /* Records are copied into the shared segment and written in large write(2) calls: when a buffer fills, on the
     * first record call of any process using the log once the oldest record is older than flush_ms (no timer
     * writes them between calls, and a call the level filters out does not look), on forklog_flush() and on
     * forklog_close(). Without rotation, each writer thread appends to a buffer of its own (up to 64 per log,
     * buffer_size bytes each) with no lock at all; a thread beyond the 64th, and a process of another time namespace
     * than the log's other users, writes each record at once under the lock (a process of another PID namespace is
     * refused by forklog_open() with -EXDEV: the lock cannot be shared across PID namespaces); a flush writes them all,
     * so the records of one thread keep their order but those of different threads are not written in the order of
     * their calls. With rotation, one buffer is filled under the lock, in the order of the calls. Because the buffers
     * are shared, a record whose call returned survives the death of its writer: any other process's next call past
     * flush_ms, flush or close writes it. If every process using the log dies before a flush (SIGKILL, or _exit()
     * without forklog_close()), the records stay in the segment file and the next forklog_open() of the log writes them
     * out, whole and once, before anything else. They are lost only with a FORKLOG_PRIVATE segment, or in a machine
     * crash (the segment file is then rebuilt). */
    FORKLOG_BUFFERED = 1u << 1,
    /* A segment of this handle's own, in anonymous shared memory, instead of the log's shared segment file: only
     * this process and the processes forked from it (after this call) share the lock, and no file is created
     * beside the log. Another process that opens the same log is then NOT serialised with them. */
    FORKLOG_PRIVATE = 1u << 2,
    /* Every forklog_log() and forklog_log_fields() record also carries the calling thread's kernel thread id
     * (gettid(2)): `tid=N` in text, "tid" (or "process.thread.id", see enum forklog_keys) in JSON. It is read
     * once per thread and process (a cache refreshed in a forked child), so it costs nothing per record. */
    FORKLOG_TID = 1u << 3
};

/* Key names of the JSON format (forklog_options.keys). Text records always use the short names. */
enum forklog_keys {
    /* `{"ts":..,"level":..,"pid":..,"tid":..,"app":..,"msg":..,"file":..,"line":..,"func":..,...,"cut":..}` */
    FORKLOG_KEYS_SHORT = 0,
    /* For Elastic Common Schema and OpenTelemetry log consumers: `@timestamp`, `log.level`, `process.pid`,
     * `process.thread.id`, `service.name`, `message`, `log.origin.file.name`, `log.origin.file.line`,
     * `log.origin.function`, and `forklog.cut`. */
    FORKLOG_KEYS_ECS = 1
};

/* A typed key/value field of a record (forklog_log_fields(), forklog_context_add(), forklog_options.context).
 * Build one with the FORKLOG_STR(), FORKLOG_INT(), ... macros below rather than by hand. The key must be 1 to
 * FORKLOG_MAX_KEY bytes of [A-Za-z0-9_.@-]; anything else makes the call fail with -EINVAL. */
enum forklog_field_type {
    FORKLOG_FIELD_STR = 1,  /* v.s: a NUL-terminated string; NULL renders as JSON null, text `key=` */
    FORKLOG_FIELD_INT = 2,  /* v.i: a signed integer */
    FORKLOG_FIELD_UINT = 3, /* v.u: an unsigned integer */
    FORKLOG_FIELD_DBL = 4,  /* v.d: a double, shortest form that reads back exactly; NaN and infinities as "NaN",
                             * "+Inf", "-Inf" (strings in JSON) */
    FORKLOG_FIELD_BOOL = 5, /* v.b: 0 is false, anything else true */
    FORKLOG_FIELD_DUR = 6,  /* v.ns: a duration in nanoseconds, rendered as seconds: `0.0052`, `-1.5`, `3` */
    FORKLOG_FIELD_TIME = 7  /* v.t: a CLOCK_REALTIME time, rendered like the record's timestamp (RFC 3339, UTC,
                             * microseconds; years clamped to 0000..9999: an earlier time is written
                             * 0000-01-01T00:00:00.000000Z, a later one 9999-12-31T23:59:59.999999Z) */
};
struct forklog_field {
    const char *key;
    enum forklog_field_type type;
    union {
        const char *s;
        long long i;
        unsigned long long u;
        double d;
        int b;
        long long ns;
        struct {
            long long sec; /* seconds since the Unix epoch */
            long nsec;     /* 0 .. 999999999; anything else is normalised */
        } t;
    } v;
};
/* Most fields in one call (and most distinct keys in a handle's context). */
#define FORKLOG_MAX_FIELDS 64
/* Longest key, in bytes. */
#define FORKLOG_MAX_KEY 64

/* Options of forklog_open(). A zeroed struct (or a NULL pointer) means every default. Fields are only ever
 * added at the end. */
struct forklog_options {
    /* Minimum level written; lower records cost no formatting, no lock and no syscall. 0: the environment
     * variable FORKLOG_LEVEL (`debug`, `info`, `warn` or `warning`, `error`, any case, or 1..4) when it holds one
     * of those, else FORKLOG_INFO. forklog_set_level() changes it at run time for every process of the log. */
    enum forklog_level level;
    /* Format of forklog_log() records. 0: FORKLOG_FORMAT_TEXT. */
    enum forklog_format format;
    /* Permission bits used when the file (or a rotated file) is created, before the umask. 0: 0644 for the file
     * forklog_open() creates; the new file of a rotation, or of a reopen that finds path missing, then gets the
     * bits of the file it follows, whatever the umask (as logrotate's `create` does), so that every user who could
     * write the log still can. Valid: 0 .. 07777. */
    unsigned mode;
    /* Bitwise OR of enum forklog_flag values; any other bit is -EINVAL. */
    unsigned flags;
    /* Largest record in bytes as it lands in the file, newline included. A longer record is cut to this size: its
     * message is cut, with a marker that says how many of its bytes were cut, and the call then returns that
     * count; a location or field that does not fit is left out whole, and when the message fits whole the record
     * then has no marker and the call returns 0. 0: 1 MiB.
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
     * not a regular file (see rotate_keep). A process whose rotation could not be made tries again after a
     * second, or at its next record once another process rotated or reopened the log. */
    unsigned long long rotate_bytes;
    /* Rotated files kept: path.1 (newest) .. path.N. 0: 5. Valid: 1 .. 1000.
     * Rotation only ever moves or replaces regular files: a name path.K that holds anything else (a directory,
     * a symlink, a FIFO, ...) is left alone and ends the chain, so path.(K-1) is then the oldest file kept and
     * the one replaced (K = 1: no rotation happens at all, see rotate_bytes). */
    unsigned rotate_keep;
    /* FORKLOG_BUFFERED: the longest a record may wait in the buffer, in milliseconds, checked on every call that
     * writes a record (a call the level filters out checks nothing, so that it stays one comparison). 0: 100. */
    unsigned flush_ms;
    /* FORKLOG_BUFFERED: the size of each writer thread's buffer (without rotation; a record over half of it is
     * written at once) or of the log's one buffer (with rotation), in bytes. 0: 256 KiB. Valid: 4 KiB .. 1 GiB.
     * Without FORKLOG_BUFFERED it is checked but not used: such an opener builds no buffer and joins any. */
    size_t buffer_size;
    /* Owner and group given, with fchown(2), to every file the log creates: path when forklog_open() creates
     * it, the new path of a rotation, and path when a reopen finds it missing and creates it (logrotate's
     * `create MODE OWNER GROUP`, for a privileged process whose forked workers drop their privileges and must
     * still open and write the files). Files that already exist are never changed. 0, each field on its own:
     * the creator's for the file forklog_open() creates, and for the new file of a rotation or a reopen the owner
     * (group) of the file it follows, as logrotate's `create` makes it (a root cron job's record that rotates a
     * service's log leaves the new file the service's); (uid_t)-1 and (gid_t)-1 mean the same. Root (0) can
     * therefore not be asked for, which is never needed: a file root creates is root's already, and a process
     * without CAP_CHOWN cannot give a file away. Giving a file away needs CAP_CHOWN (for the group: being a member of
     * it is enough). A failed fchown() is ignored, and the record is written anyway: the file keeps the
     * creator's owner and group. If the process dies between creating a file and fchown(), the file keeps
     * them too. */
    uid_t owner;
    gid_t group;
    /* Where forklog_open() explains a failure in one line, NUL-terminated and cut to error_size bytes: which
     * option is not valid, which setting conflicts with the log's other users, why its segment file is not
     * trusted, that the path is a FIFO with no reader, ... Empty when the error code says it all (the log file's
     * own open(2) failing with ENOENT or EACCES, for example). NULL: nowhere. */
    char *error;
    size_t error_size;
    /* JSON key names (enum forklog_keys). 0: FORKLOG_KEYS_SHORT. */
    enum forklog_keys keys;
    /* The program's name, carried by every record of the handle: `app=NAME` in text, "app" (or "service.name")
     * in JSON. Copied at open. 1 to 64 bytes of valid UTF-8 without control bytes, else -EINVAL. NULL: none. */
    const char *name;
    /* Fields that every record of the handle carries, after the message (and location) and before the call's
     * own fields: see forklog_context_add(). Copied at open (strings included); the same rules as
     * forklog_log_fields()'s fields, else -EINVAL. */
    const struct forklog_field *context;
    size_t ncontext;
};

/*
 * Opens (creating it with opts->mode, and opts->owner and opts->group, if missing) the file at `path` for
 * appending, O_APPEND | O_CLOEXEC, and joins the log's shared segment, which holds the append lock, the file's
 * state, rotation and the buffer. Every process that opens the same regular file through forklog_open() shares
 * that one segment, whatever its ancestry; children forked after the call use the inherited handle as is.
 * Returns 0 and stores the handle in *out.
 *
 * The segment is the file `.NAME.forklog` in the log's directory (NAME being the log's file name), created with
 * the read and write bits of whoever may write the log (a 0644 log gets a 0600 segment; a class that may write but
 * not read the log, 0622, may read the records that pass through the segment) and given the log's owner and group.
 * The first opener builds it; the others join it. An opener that finds nobody using it (every
 * previous user is gone: closed, died, or the machine rebooted) first finishes what the last users left (a torn
 * record is cut, records left in the buffer are written) and then builds it anew with its own settings. The last
 * user to close removes the file. Settings that every process must share come from the segment: a zero
 * rotate_bytes, rotate_keep, flush_ms or buffer_size, and a FORKLOG_BUFFERED bit left clear, join what the log's
 * users have; an explicit value that differs is -EINVAL (opts->error names it). FORKLOG_PRIVATE keeps a segment
 * of the handle's own instead (see enum forklog_flag); a target that is not a regular file always gets one, and
 * so does a path through /proc (/proc/self/fd/N, /dev/fd/N, /dev/stdout, /proc/self/cwd/...), which names each
 * process's own file.
 *
 * A regular file that ends in the middle of a line (a line another program left unfinished, a record cut off by a
 * machine crash) gets a newline before the first record, so that every record starts a line of its own; the open
 * itself writes nothing. So does the file that a reopen or a rotation moves the log to. The last byte is read
 * through /proc/self/fd: without /proc, or without read permission on the file, nothing is added.
 *
 * `path` may also name a FIFO, a character device or a pipe (/proc/self/fd/N): records are written whole as
 * long as each write is, but such a target is never rotated and a dead writer's fragment is never cut. No open,
 * here or in a later reopen, ever blocks: a FIFO with no reader fails with -ENXIO at once; once open, writes
 * block as usual, and a write to a FIFO or pipe whose reader has gone fails with -EPIPE (with SIGPIPE ignored;
 * otherwise the signal ends the writer, as with any write).
 * Errors: -EINVAL (NULL out or path, empty path, bad option, a setting that conflicts with the log's other users),
 * -ENOENT (missing parent directory), -ENOTDIR, -EACCES (the log, the directory for its segment file, or a segment file
 * another user created while the caller is not in the log's group), -EISDIR, -EROFS, -ENXIO (a FIFO with no reader, a
 * unix socket), -EPERM (a segment file that is not the log's: another owner, a link, a directory; or wider permissions
 * than the log's write bits give, which the file's owner or root narrows instead, when its owner is trusted),
 * -EXDEV (the log is in use by processes of another PID namespace: its lock cannot be shared across them),
 * -EPROTO (a segment of another layout: another library version or another C library; or a damaged one, whose sizes do
 * not match its settings), -ENOSPC (the log's file system is full: the segment file cannot be given its blocks),
 * -ENAMETOOLONG (the path, or the segment file's name: `.NAME.forklog` is 9 bytes longer than the log's own, so a log
 * file name of more than NAME_MAX - 9 bytes, 246 on most file systems, is refused although the file system takes it;
 * likewise a path, made absolute, of more than PATH_MAX - 10 bytes, 4086), -EFBIG (RLIMIT_FSIZE below the segment's
 * size), -EAGAIN (the segment file was removed or rebuilt under the opener 32 times in a row: try again), -ENOMEM,
 * and the other errors of open(2), fstat(2), flock(2), ftruncate(2) and mmap(2). opts->error, when set,
 * receives a one-line explanation where the error code alone does not say what is wrong. On failure *out is set to NULL
 * (when out is not NULL) and nothing is created but the file itself. Thread-safe; not async-signal-safe.
 */
FORKLOG_API int forklog_open(forklog **out, const char *path, const struct forklog_options *opts);

/*
 * Makes a log of a descriptor the program already has: standard output or error, a pipe, a connected stream or
 * datagram socket, a terminal, /dev/null, or a regular file. forklog duplicates fd (F_DUPFD_CLOEXEC, a number
 * above 2) and writes through its copy; the caller keeps fd and may close it at any time. The handle's segment is
 * its own (as FORKLOG_PRIVATE): this process and the children it forks after the call share the lock, and each
 * record goes out whole with respect to them. Returns 0 and stores the handle in *out.
 *
 * The handle has no path, so what needs one does not apply: rotate_bytes and rotate_keep must be 0 (-EINVAL
 * otherwise), forklog_reopen() does nothing and returns 0, and mode, owner and group are ignored (nothing is
 * created). FORKLOG_SYNC applies to a regular file only and is ignored elsewhere.
 *   - A regular file: records are appended at its end. A descriptor without O_APPEND (the shell's `>`) gets it,
 *     with F_SETFL, on the open file description it shares with fd, so the caller's own writes through fd go to
 *     the end too. A dead writer's fragment is cut back as with forklog_open(), between the processes of the
 *     handle; writers outside it (the caller writing through fd, another program) are not serialised with them.
 *     A file that ends in the middle of a line gets a newline before the first record, as with forklog_open().
 *   - A pipe, a FIFO, a stream socket, a terminal or another device: each record is one write(2) (looped on a
 *     short write) under the lock, so records of any size up to max_record are never interleaved among the
 *     processes of the handle. A writer killed in the middle of a record leaves its first part in the stream:
 *     nothing can be taken back from a pipe or a socket. So does a record that fails after part of it went out
 *     (its reader went away in the middle of it; a FIFO keeps that part for its next reader), and the next record
 *     then begins with a newline, so that it starts a line of its own. When the reader has gone, a write fails
 *     with -EPIPE once SIGPIPE is ignored (otherwise the signal ends the writer, as with any write). Made non-blocking
 *     after the open (through fd, or by any process sharing its open file description), or given a send
 *     timeout (SO_SNDTIMEO): a record that finds no room at all fails with -EAGAIN and nothing of it is sent;
 *     one that went out in part is finished, the call waiting for room as a blocking write would.
 *   - A connected datagram socket (SOCK_DGRAM, SOCK_SEQPACKET): one record per datagram. A record larger than
 *     the socket takes fails with -EMSGSIZE and nothing of it is sent. FORKLOG_BUFFERED is -EINVAL there.
 * Errors: -EINVAL (NULL out, bad option, rotation asked for, a descriptor other than a regular file in
 * non-blocking mode, a descriptor that is no file, pipe, socket or device such as an eventfd or a timerfd,
 * FORKLOG_BUFFERED on a datagram socket), -EBADF (fd < 0, not open, or not open for
 * writing: O_RDONLY or O_PATH), -EISDIR (a directory), -ENOTCONN (a socket that is not connected), -EMFILE,
 * -ENOMEM, and the errors of fcntl(2), fstat(2) and mmap(2); opts->error, when set, receives a one-line
 * explanation. Nothing is written on failure, *out is set to NULL, and fd's file status flags are as they were
 * (O_APPEND is taken back). Thread-safe; not async-signal-safe.
 */
FORKLOG_API int forklog_open_fd(forklog **out, int fd, const struct forklog_options *opts);

/*
 * Formats one record (see enum forklog_format) and appends it whole. A record below the handle's level returns 0 at
 * once. Returns 0, or a positive count of message bytes that were cut to fit max_record (the record then carries a
 * marker: ` [forklog: N bytes cut]` right after the message in text, `"cut":N` as its last member in JSON); the
 * count is capped at INT_MAX. Errors: -EINVAL (NULL log or fmt, level out of range, an encoding error in
 * vsnprintf), -ENOMEM, the errors of write(2) (-ENOSPC, -EFBIG, -EIO, ...), and of open(2) when this process cannot
 * open path (-EMFILE, -ENFILE, -EACCES, ...: to follow forklog_reopen() or a rotation, or to repair what a writer
 * killed mid-write left, which is then left to the next lock holder), -ESTALE (after a reopen or a rotation: the log's
 * directory was moved away and another segment serves the one now at its name, or the handle's segment file was
 * removed; close the handle and open the log again: docs/api.md), after which nothing of the record is in the file.
 * Thread-safe and fork-safe; not async-signal-safe (it formats with vsnprintf).
 */
FORKLOG_API int forklog_log(forklog *log, enum forklog_level level, const char *fmt, ...) FORKLOG_PRINTF(3, 4);

/* forklog_log() with a va_list. */
FORKLOG_API int forklog_vlog(forklog *log, enum forklog_level level, const char *fmt, va_list ap) FORKLOG_PRINTF(3, 0);

/*
 * forklog_log() with the caller's location: `file`, `line` and `func` (NULL: none) are written after the message,
 * as `file=F line=N func=NAME` in text and "file", "line", "func" (or "log.origin.file.name",
 * "log.origin.file.line", "log.origin.function") in JSON. A NULL file leaves out the whole location. Same returns
 * and safety as forklog_log(). The forklog_*_at() macros below pass __FILE__, __LINE__ and __func__.
 */
FORKLOG_API int forklog_log_at(forklog *log, enum forklog_level level, const char *file, int line, const char *func,
                               const char *fmt, ...) FORKLOG_PRINTF(6, 7);

/* forklog_log_at() with a va_list. */
FORKLOG_API int forklog_vlog_at(forklog *log, enum forklog_level level, const char *file, int line, const char *func,
                                const char *fmt, va_list ap) FORKLOG_PRINTF(6, 0);

/*
 * Appends one record made of `msg` (as is, not a format) and nfields typed fields, rendered after the message:
 * ` key=value` in text (a value is quoted, with `\"`, `\\`, `\n`, `\r`, `\t` and `\xHH` escapes, when it is empty
 * or holds a space, a quote, '=', a backslash or a control byte), `,"key":value` in JSON with the value's JSON
 * type. No allocation when the record fits 4 KiB. docs/design.md ("Records") gives the exact grammar.
 *   - A key that is one of the record's own keys (those of the key set: ts, level, pid, tid, app, msg, file,
 *     line, func, cut; or the ECS names) is written as `fields.KEY`; so, with the ECS names, whose consumers read
 *     a dotted key as a path of objects, is a key on the path of one or below it ("log", "process", "service",
 *     "message.x": its type would clash with the record's own; "process.name" is written as given). A key with
 *     an empty step in its path ("a..b", ".a", "a.") and two keys of which one is the other's path ("a" and
 *     "a.b") are written as given: Elasticsearch refuses such a record. Keys are compared as written: "ts" and
 *     "fields.ts" are one key.
 *   - A key given twice (in the fields, in the handle's context, or in both) appears once: the last value given
 *     wins (the call's fields come after the context), at the place of that last one.
 *   - Fields (and the location) that do not fit max_record are left out whole (the message is cut first, as far
 *     as its marker allows; a message of at most 48 bytes once escaped is never cut); the record always stays one
 *     valid line. The cut marker and the return value count message bytes only: a record whose message fits whole
 *     but whose field does not is written without that field, without a marker, and the call returns 0.
 *   - In text, a message followed by anything (the location, context fields or the call's fields) is quoted, as
 *     a value is, when it holds '=' or starts with a quote; a message alone is written bare.
 * Returns 0 or a positive count of message bytes cut, as forklog_log(). Errors: -EINVAL (NULL log or msg, level
 * out of range, NULL fields with nfields > 0, nfields > FORKLOG_MAX_FIELDS, a NULL or invalid key, an unknown
 * type), -ENOMEM, and the errors of write(2); nothing of the record is in the file after an error. A record below
 * the level returns 0 at once, before its fields are checked (only a NULL msg, a NULL list and the count are).
 * Thread-safe and fork-safe; not async-signal-safe.
 */
FORKLOG_API int forklog_log_fields(forklog *log, enum forklog_level level, const char *msg,
                                   const struct forklog_field *fields, size_t nfields);

/* forklog_log_fields() with the caller's location, as forklog_log_at(). */
FORKLOG_API int forklog_log_fields_at(forklog *log, enum forklog_level level, const char *file, int line,
                                      const char *func, const char *msg, const struct forklog_field *fields,
                                      size_t nfields);

/*
 * Adds fields to the handle's context in the calling process only: every later record of this process (all its
 * threads) carries them, after those given at open (forklog_options.context); a key already in the context takes
 * the new value. The parent's records, and those of processes forked earlier, are not touched; processes forked
 * later inherit the context. Strings are copied. Returns 0. Errors: -EINVAL (NULL log, NULL fields with n > 0,
 * n > FORKLOG_MAX_FIELDS, an invalid key or type, or more than FORKLOG_MAX_FIELDS distinct keys in all),
 * -ENOMEM. Thread-safe (records being written meanwhile carry either the old or the new context, whole) and
 * fork-safe; not async-signal-safe. The context it replaces is freed at once when the process has one thread
 * (/proc/self/task tells), else kept until forklog_close() (another thread may be reading it).
 */
FORKLOG_API int forklog_context_add(forklog *log, const struct forklog_field *fields, size_t n);

/*
 * Changes the minimum level of the log at run time, for every process that holds it (forked or joined through
 * forklog_open()), from its next record: the level is one atomic word in the log's shared segment, read with a
 * relaxed load per record. 0 goes back to each handle's own level (forklog_options.level or FORKLOG_LEVEL). The
 * setting lasts while the log has users (its segment lives). Returns 0. Errors: -EINVAL (NULL log, level not 0 or
 * FORKLOG_DEBUG .. FORKLOG_ERROR). Async-signal-safe (a SIGUSR1 handler may call it), thread-safe, fork-safe.
 */
FORKLOG_API int forklog_set_level(forklog *log, enum forklog_level level);

/* The minimum level records of this handle must have now (the shared level if set, else the handle's own), or
 * -EINVAL for a NULL log. Async-signal-safe. */
FORKLOG_API int forklog_get_level(forklog *log);

/* The level macros. With FORKLOG_LOCATION defined before this header is included they pass the call site (as
 * the _at forms do); otherwise they cost exactly a forklog_log() call. */
#define forklog_debug_at(log, ...) forklog_log_at((log), FORKLOG_DEBUG, __FILE__, __LINE__, __func__, __VA_ARGS__)
#define forklog_info_at(log, ...)  forklog_log_at((log), FORKLOG_INFO, __FILE__, __LINE__, __func__, __VA_ARGS__)
#define forklog_warn_at(log, ...)  forklog_log_at((log), FORKLOG_WARN, __FILE__, __LINE__, __func__, __VA_ARGS__)
#define forklog_error_at(log, ...) forklog_log_at((log), FORKLOG_ERROR, __FILE__, __LINE__, __func__, __VA_ARGS__)
#ifdef FORKLOG_LOCATION
#define forklog_debug(log, ...) forklog_debug_at(log, __VA_ARGS__)
#define forklog_info(log, ...)  forklog_info_at(log, __VA_ARGS__)
#define forklog_warn(log, ...)  forklog_warn_at(log, __VA_ARGS__)
#define forklog_error(log, ...) forklog_error_at(log, __VA_ARGS__)
#define FORKLOG__FIELDS(log, level, msg, f, n)                                                                         \
    forklog_log_fields_at((log), (level), __FILE__, __LINE__, __func__, (msg), (f), (n))
#else
#define forklog_debug(log, ...)                forklog_log((log), FORKLOG_DEBUG, __VA_ARGS__)
#define forklog_info(log, ...)                 forklog_log((log), FORKLOG_INFO, __VA_ARGS__)
#define forklog_warn(log, ...)                 forklog_log((log), FORKLOG_WARN, __VA_ARGS__)
#define forklog_error(log, ...)                forklog_log((log), FORKLOG_ERROR, __VA_ARGS__)
#define FORKLOG__FIELDS(log, level, msg, f, n) forklog_log_fields((log), (level), (msg), (f), (n))
#endif

/* ---- building fields ------------------------------------------------------------------------------------------
 * Constructors, usable in C and C++: FORKLOG_STR(key, const char *), FORKLOG_INT(key, long long),
 * FORKLOG_UINT(key, unsigned long long), FORKLOG_DBL(key, double), FORKLOG_BOOL(key, int),
 * FORKLOG_DUR(key, double seconds), FORKLOG_DUR_NS(key, long long ns), FORKLOG_TIMESPEC(key, struct timespec),
 * FORKLOG_TIME(key, double seconds since the epoch; in C11 also a struct timespec). FORKLOG_DUR and FORKLOG_TIME of a
 * NaN give 0; a duration past +-292 years clamps there, and a time is written clamped to the years 0000 .. 9999.
 * In C11, FORKLOG_F(key, value) picks the type from the value's: strings (char arrays too), signed and unsigned
 * integers (char is signed), float and double, _Bool (note that C's `true` before C23 is an int), struct timespec (a
 * time); a value of any other type (long double, void * and so a bare NULL, unsigned char *) does not compile.
 * Durations always need FORKLOG_DUR. */
static inline struct forklog_field forklog_field_str(const char *key, const char *s)
{
    struct forklog_field f;
    f.key = key, f.type = FORKLOG_FIELD_STR, f.v.t.sec = 0, f.v.t.nsec = 0, f.v.s = s;
    return f;
}
static inline struct forklog_field forklog_field_int(const char *key, long long i)
{
    struct forklog_field f;
    f.key = key, f.type = FORKLOG_FIELD_INT, f.v.t.nsec = 0, f.v.i = i;
    return f;
}
static inline struct forklog_field forklog_field_uint(const char *key, unsigned long long u)
{
    struct forklog_field f;
    f.key = key, f.type = FORKLOG_FIELD_UINT, f.v.t.nsec = 0, f.v.u = u;
    return f;
}
static inline struct forklog_field forklog_field_dbl(const char *key, double d)
{
    struct forklog_field f;
    f.key = key, f.type = FORKLOG_FIELD_DBL, f.v.t.nsec = 0, f.v.d = d;
    return f;
}
static inline struct forklog_field forklog_field_bool(const char *key, int b)
{
    struct forklog_field f;
    f.key = key, f.type = FORKLOG_FIELD_BOOL, f.v.t.sec = 0, f.v.t.nsec = 0, f.v.b = b != 0;
    return f;
}
static inline struct forklog_field forklog_field_dur_ns(const char *key, long long ns)
{
    struct forklog_field f;
    f.key = key, f.type = FORKLOG_FIELD_DUR, f.v.t.nsec = 0, f.v.ns = ns;
    return f;
}
static inline struct forklog_field forklog_field_dur(const char *key, double seconds)
{
    /* No == on a double (NaN is the value that is neither below, above nor between: 0), so that a program built
     * with -Wfloat-equal -Werror can include this header. */
    double ns = seconds * 1e9;
    long long v = ns >= 9.2e18           ? 9223372036854775807LL
                  : ns <= -9.2e18        ? -9223372036854775807LL
                  : ns < 0.0 || ns > 0.0 ? (long long)(ns + (ns < 0 ? -0.5 : 0.5))
                                         : 0;
    return forklog_field_dur_ns(key, v);
}
static inline struct forklog_field forklog_field_timespec(const char *key, struct timespec ts)
{
    struct forklog_field f;
    f.key = key, f.type = FORKLOG_FIELD_TIME, f.v.t.sec = (long long)ts.tv_sec, f.v.t.nsec = ts.tv_nsec;
    return f;
}
/* The field is built without a struct timespec: where time_t has 32 bits (a 32-bit glibc program built without
 * _TIME_BITS=64), a time_t cannot hold a time after January 2038 nor the clamped +-9.2e18, and the time was written
 * as another one (2100-01-01 as 1963-11-25, 1e18 as 1922-11-22 instead of 9999-12-31). */
static inline struct forklog_field forklog_field_time(const char *key, double seconds)
{
    struct forklog_field f;
    if (!(seconds >= -9.2e18 && seconds <= 9.2e18)) /* out of range, or NaN (then 0) */
        seconds = seconds > 0 ? 9.2e18 : seconds < 0 ? -9.2e18 : 0;
    long long s = (long long)seconds;
    if ((double)s > seconds)
        s--; /* floor */
    long ns = (long)((seconds - (double)s) * 1e9);
    f.key = key, f.type = FORKLOG_FIELD_TIME, f.v.t.sec = s;
    f.v.t.nsec = ns < 0 ? 0 : ns > 999999999 ? 999999999 : ns;
    return f;
}

#define FORKLOG_STR(k, v)      forklog_field_str((k), (v))
#define FORKLOG_INT(k, v)      forklog_field_int((k), (v))
#define FORKLOG_UINT(k, v)     forklog_field_uint((k), (v))
#define FORKLOG_DBL(k, v)      forklog_field_dbl((k), (v))
#define FORKLOG_BOOL(k, v)     forklog_field_bool((k), (v))
#define FORKLOG_DUR(k, v)      forklog_field_dur((k), (v))
#define FORKLOG_DUR_NS(k, v)   forklog_field_dur_ns((k), (v))
#define FORKLOG_TIMESPEC(k, v) forklog_field_timespec((k), (v))

#if !defined(__cplusplus) && defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
#define FORKLOG_TIME(k, v)                                                                                             \
    _Generic((v), struct timespec : forklog_field_timespec, default : forklog_field_time)((k), (v))
#define FORKLOG_F(k, v)                                                                                                \
    _Generic((v),                                                                                                      \
        char *: forklog_field_str, const char *: forklog_field_str,                                                    \
        char: forklog_field_int, signed char: forklog_field_int, short: forklog_field_int, int: forklog_field_int,     \
        long: forklog_field_int, long long: forklog_field_int,                                                         \
        unsigned char: forklog_field_uint, unsigned short: forklog_field_uint, unsigned: forklog_field_uint,           \
        unsigned long: forklog_field_uint, unsigned long long: forklog_field_uint,                                     \
        float: forklog_field_dbl, double: forklog_field_dbl,                                                           \
        _Bool: forklog_field_bool,                                                                                     \
        struct timespec: forklog_field_timespec)((k), (v))
#else
#define FORKLOG_TIME(k, v) forklog_field_time((k), (v))
#endif
#if !defined(__cplusplus)
/* forklog_info_kv(log, "msg", FORKLOG_F("k", v), ...): a record with one or more fields, without an array of
 * one's own. Each macro is one forklog_log_fields() call (with the location under FORKLOG_LOCATION). */
#define FORKLOG__KV(log, level, msg, ...)                                                                              \
    FORKLOG__FIELDS(log, level, msg, ((const struct forklog_field[]){__VA_ARGS__}),                                    \
                    sizeof((const struct forklog_field[]){__VA_ARGS__}) / sizeof(struct forklog_field))
#define forklog_log_kv(log, level, msg, ...) FORKLOG__KV(log, level, msg, __VA_ARGS__)
#define forklog_debug_kv(log, msg, ...)      FORKLOG__KV(log, FORKLOG_DEBUG, msg, __VA_ARGS__)
#define forklog_info_kv(log, msg, ...)       FORKLOG__KV(log, FORKLOG_INFO, msg, __VA_ARGS__)
#define forklog_warn_kv(log, msg, ...)       FORKLOG__KV(log, FORKLOG_WARN, msg, __VA_ARGS__)
#define forklog_error_kv(log, msg, ...)      FORKLOG__KV(log, FORKLOG_ERROR, msg, __VA_ARGS__)
#endif

/*
 * Appends `len` bytes as one record, exactly as given, adding a '\n' only when they do not end with one. No
 * prefix, no escaping, no level. len 0 writes an empty line. Returns 0, or a positive count of bytes cut to fit
 * max_record (the record then ends with ` [forklog: N bytes cut]\n`), capped at INT_MAX. Errors: -EINVAL (NULL
 * log, or NULL record with len > 0), -EDEADLK (called by a signal handler that interrupted a forklog call of the
 * same thread: see the conventions above), the errors of write(2), and those of open(2) and -ESTALE as forklog_log(),
 * after which nothing of the record is in the file. Thread-safe and fork-safe; not async-signal-safe (the lock is a
 * pthread mutex and is not recursive).
 */
FORKLOG_API int forklog_write(forklog *log, const void *record, size_t len);

/*
 * Writes out every buffered record (FORKLOG_BUFFERED); without that flag it only returns 0. Returns 0 or the negative
 * errno of write(2), or of open(2) when the log must be reopened first (after forklog_reopen() or a rotation) or a
 * writer killed mid-write left a repair this process cannot make (see forklog_log()), or -ESTALE (see forklog_log();
 * the records stay in the handle's segment file, and go into the log of the directory it is in when a process next
 * opens that), or -EINVAL (NULL log), or -EDEADLK (see the conventions above); buffered records stay buffered on
 * failure, but on a FIFO, a pipe, a socket or a device the bytes that went out before the write failed (its reader
 * went away in the middle of it) count as written, and the next flush begins with the rest of the record that went
 * out in part: nothing can be taken back from a stream, and a FIFO keeps them for its next reader. Thread-safe
 * and fork-safe.
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
 * process to close a log removes its segment file (when it holds no record and no unfinished write, and, in a sticky
 * directory such as /tmp or after the process dropped its privileges, when that process may remove it: see
 * docs/design.md). No other thread of
 * the process may use the handle during or after the call, and no signal handler either: a handler that calls
 * forklog_reopen() or forklog_set_level() (SIGHUP, SIGUSR1) must be blocked or reset before the handle is closed,
 * or a signal arriving during or after the call uses a freed handle (and an unmapped segment: SIGSEGV). Returns 0,
 * or the first error met (-EIO from close, a flush error); the handle is freed in every case. forklog_close(NULL)
 * returns 0.
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
    FORKLOG_TASK_CRASHED = 3, /* its worker died: signal, or exit code in code when it exited (126: the task
                               * unwound out of it, by pthread_exit() or a C++ exception) */
    FORKLOG_TASK_TIMEOUT = 4  /* ran past timeout_s: the worker was killed */
};

/* The outcome of one task, filled in forklog_pool_options.results when that pointer is set. */
struct forklog_task_result {
    enum forklog_task_status status;
    int code;          /* FAILED: the task's return value; CRASHED by exit: the exit status (-1: unknown); else 0 */
    int signal;        /* CRASHED or TIMEOUT: the signal that ended the worker; else 0 (also a TIMEOUT whose
                        * worker exited on its own as the parent was killing it) */
    pid_t worker;      /* pid of the worker that ran it; 0 if never run */
    double start;      /* wall-clock start, seconds since the Unix epoch (CLOCK_REALTIME) */
    double duration_s; /* CLOCK_MONOTONIC duration; for CRASHED/TIMEOUT, until the parent saw it end */
};

struct forklog_pool_options {
    unsigned workers;       /* 0: number of online CPUs; fewer run when fork() fails or descriptors run short */
    int (*init)(void *arg); /* run once in every worker after fork, like Pool(initializer=...); 0 = ok. The place
                               to change the worker's user (setuid()): on Linux a worker dies with a killed
                               caller (PR_SET_PDEATHSIG), which the worker sets again after a user change here */
    void *init_arg;
    unsigned max_tasks_per_worker; /* 0: unlimited; a worker that reached it is replaced */
    double timeout_s;              /* per task, per worker initializer (with none, per worker start: a worker
                                      not ready that long after its fork counts as a failed initializer), and
                                      per idle worker (one that finishes no task that long: stopped or stuck
                                      outside a task); 0: none */
    forklog *log;                  /* where timing records go; NULL: none */
    /* Label of task `index` for its record (say, the name of the data item the task works on), called in the
     * parent only; cut to 128 bytes (at a UTF-8 boundary) in the record. NULL, or a NULL return: no label. */
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
 * has ended when it returns. It reaps only its own workers (through a process descriptor of each, or by pid on a
 * kernel without them; never the tasks' children) and
 * leaves the caller's signal dispositions, mask and other children as they were; a caller that ignores SIGCHLD,
 * or reaps in its handler, only loses the exit status of crashed workers (code -1). A task that calls exit() ends
 * its worker without running the caller's atexit handlers or flushing its stdio buffers; with glibc it first runs
 * the destructors of the calling thread's C++ thread_local objects (the copies of the caller's thread's included),
 * then the exit handlers registered after the call began (by the task, or by another thread before that worker's
 * fork). quick_exit() runs every at_quick_exit handler, the caller's included. A task or initializer that unwinds
 * out of its worker (pthread_exit(), or a C++ exception caught only by the caller) ends it with _exit(126): the
 * task is recorded CRASHED with code 126 (an initializer counts as failed), and neither the caller's code nor the
 * pool's own cleanup runs in the worker; this needs the library compiled with -fexceptions, as its build does where
 * the compiler can link it (for the single header: the file that defines FORKLOG_IMPLEMENTATION), except for a
 * pthread_exit() with musl, whose pthread_exit() runs cleanup handlers instead of unwinding. A label callback
 * that throws ends the call as a cancelled one (below), then the exception goes on. The pool's descriptors
 * never take the numbers 0, 1 or 2, and while a worker runs, another is forked only if at least 16 descriptors
 * stay free below RLIMIT_NOFILE; a limit lowered during the call below the descriptors it polls only delays its
 * seeing a worker end (100 ms at most). Callable from a thread, and from a worker of another pool (with glibc, if
 * that pool's caller has had other threads, an inner task's exit() also runs the exit handlers that the outer task
 * registered before the call); not async-signal-safe. A cancelled call (pthread_cancel()) kills and waits for its
 * workers and frees what it holds before the thread ends. docs/pool.md lists every failure mode and what it produces.
 */
FORKLOG_API int forklog_pool_map(const struct forklog_pool_options *opts, size_t ntasks, forklog_task_fn task,
                                 void *ctx, struct forklog_pool_report *report);

#ifdef __cplusplus
}

/* C++: forklog_info_kv(log, "msg", FORKLOG_STR("k", v), ...) through a variadic template. A template must have C++
 * linkage, and C++ programs often include a C header inside `extern "C" { }`: the template says its own. */
extern "C++" {
template <typename... F>
static inline int forklog__log_kv(forklog *log, enum forklog_level level, const char *file, int line, const char *func,
                                  const char *msg, const F &...f)
{
    const struct forklog_field a[] = {f...};
    return file ? forklog_log_fields_at(log, level, file, line, func, msg, a, sizeof...(f))
                : forklog_log_fields(log, level, msg, a, sizeof...(f));
}
}
#ifdef FORKLOG_LOCATION
#define FORKLOG__KVPP(log, level, msg, ...)                                                                            \
    forklog__log_kv((log), (level), __FILE__, __LINE__, __func__, (msg), __VA_ARGS__)
#else
#define FORKLOG__KVPP(log, level, msg, ...) forklog__log_kv((log), (level), nullptr, 0, nullptr, (msg), __VA_ARGS__)
#endif
#define forklog_log_kv(log, level, msg, ...) FORKLOG__KVPP(log, level, msg, __VA_ARGS__)
#define forklog_debug_kv(log, msg, ...)      FORKLOG__KVPP(log, FORKLOG_DEBUG, msg, __VA_ARGS__)
#define forklog_info_kv(log, msg, ...)       FORKLOG__KVPP(log, FORKLOG_INFO, msg, __VA_ARGS__)
#define forklog_warn_kv(log, msg, ...)       FORKLOG__KVPP(log, FORKLOG_WARN, msg, __VA_ARGS__)
#define forklog_error_kv(log, msg, ...)      FORKLOG__KVPP(log, FORKLOG_ERROR, msg, __VA_ARGS__)
#endif

#endif /* FORKLOG_H */
