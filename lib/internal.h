/*
 * forklog internals shared by the files of lib/. Not installed.
 *
 * Every name here starts with fl__. The build compiles each source of lib/ on its own with hidden visibility for
 * FL__INTERNAL; the single-header generator (cmake/amalgamate.cmake) concatenates this file and the sources in a
 * fixed order and defines FL__INTERNAL as `static`, so no internal name ever leaves the user's object file.
 */
#ifndef FL__INTERNAL_H
#define FL__INTERNAL_H

#include "forklog.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/uio.h>
#include <time.h>

#ifndef FL__INTERNAL
#define FL__INTERNAL __attribute__((visibility("hidden")))
#endif

/* What the lock holder is doing, so that the next holder can finish or undo it if the holder dies. */
enum fl__state {
    FL__IDLE = 0,
    FL__WRITING = 1,  /* a record is being written: the file should end at `target` */
    FL__FLUSHING = 2, /* the buffer is being written: the file should end at `target` */
    FL__ROTATING = 3  /* files are being renamed */
};

/* Combining (direct mode): a writer that finds the lock taken posts its record in a slot; the next lock holder
 * writes every posted record together with its own in one writev(2) and marks them done. A slot goes
 * FREE -> FILLING -> POSTED (poster, lock-free), POSTED -> TAKEN -> DONE (lock holder), DONE -> FREE (poster). */
#define FL__SLOTS    32
#define FL__SLOT_CAP 1024
enum fl__slot_state { FL__SLOT_FREE, FL__SLOT_FILLING, FL__SLOT_POSTED, FL__SLOT_TAKEN, FL__SLOT_DONE };
struct fl__slot {
    atomic_uint state; /* enum fl__slot_state */
    uint32_t len;      /* bytes in data */
    int32_t rc;        /* DONE: the result of the write that carried it */
    int32_t owner;     /* pid of the poster, to reclaim the slots of dead processes */
    char data[FL__SLOT_CAP];
};

/* The shared segment: one anonymous MAP_SHARED mapping created by forklog_open(), inherited by fork(). Every
 * field but reopen_req is read and written only with `mu` held. */
struct fl__seg {
    pthread_mutex_t mu;     /* process-shared, robust */
    uint64_t size;          /* the file ends here after the last whole record */
    uint64_t target;        /* FL__WRITING / FL__FLUSHING: where the file ends once the write completes */
    uint64_t ino, dev;      /* identity of the current file, for repair */
    uint32_t gen;           /* file generation: bumped by every rotation and reopen */
    uint32_t file_known;    /* size/ino/dev describe generation gen */
    uint32_t state;         /* enum fl__state */
    uint32_t reopen_seen;   /* reopen_req value already turned into a generation */
    atomic_uint reopen_req; /* bumped by forklog_reopen(), lock-free (async-signal-safe) */
    atomic_uint held;       /* a hint for spinning waiters: the lock is taken */
    atomic_uint spinners;   /* waiters spinning now; at most max_spinners spin, the rest sleep at once */
    uint64_t repairs;       /* times a holder found the previous one dead (EOWNERDEAD) */
    uint64_t batch_target;  /* a combined batch is committed once size reaches this */
    uint32_t batch_open;    /* slots are TAKEN by the holder's batch (repair: done or posted again) */
    uint32_t spare;
    uint64_t combined;  /* records written by a lock holder on their poster's behalf */
    atomic_uint posted; /* bit k: slot k was posted and not yet taken (so a holder never scans all slots) */
    struct fl__slot slots[FL__SLOTS];
    int64_t buf_first_ns; /* CLOCK_MONOTONIC time of the oldest buffered record */
    size_t buf_used;      /* bytes in buf */
    size_t buf_cap;       /* size of buf; 0 unless FORKLOG_BUFFERED */
    unsigned char buf[];  /* FORKLOG_BUFFERED records, whole, in lock order */
};

/* Per-process state that fork() must not copy: it lives in a private page marked MADV_WIPEONFORK, which a child
 * sees zero-filled, so a zero field means "not yet done in this process". */
struct fl__proc {
    atomic_int pid; /* getpid() of this process, 0 until first asked */
    int own_fd;     /* log->fd is this process's own open file description (lock held to read or write) */
};

/* The handle. fork() copies it: fd and gen are per process, changed only with the lock held. */
struct forklog {
    struct fl__seg *seg;
    size_t seg_len;
    int fd;
    uint32_t gen;
    enum forklog_level level;
    enum forklog_format format;
    unsigned mode;
    unsigned flags;
    size_t max_record;
    unsigned long long rotate_bytes;
    unsigned rotate_keep;
    int64_t flush_ns;
    unsigned max_spinners; /* online CPUs - 1: more spinners than that would only delay the holder */
    struct fl__proc *proc; /* in a private MADV_WIPEONFORK page, zero in a fresh child; NULL if unsupported */
    char path[];           /* absolute, so that a child that chdir()s reopens the same file */
};

/* A key/value field of a structured record (pool timing records). */
enum fl__ftype { FL__F_STR, FL__F_INT, FL__F_UINT, FL__F_DBL, FL__F_TIME };
struct fl__field {
    const char *key; /* [a-z_]+ */
    enum fl__ftype type;
    const char *s;        /* FL__F_STR; NULL fields are skipped */
    long long i;          /* FL__F_INT */
    unsigned long long u; /* FL__F_UINT */
    double d;             /* FL__F_DBL (printed %.6f); FL__F_TIME: seconds since the epoch, printed RFC 3339 */
};

/* format.c */

/* Most bytes fl__prefix writes: `{"ts":"<27>","level":"error","pid":<20>,"msg":"`. */
#define FL__PREFIX_MAX 96

/* The pid of the calling process, from the handle's fork-wiped cache. */
FL__INTERNAL long fl__pid(const forklog *log);

/* Writes the record prefix (text: `TS LEVEL pid=N `; JSON: up to the opening quote of "msg") into out, which has
 * room for FL__PREFIX_MAX bytes. Returns its length. */
FL__INTERNAL size_t fl__prefix(const forklog *log, enum forklog_level level, const struct timespec *now, char *out);

/* Whether s[0..len) holds a byte that the format escapes (text: control bytes; JSON: also '"', '\\' and every
 * non-ASCII byte, which the slow path validates as UTF-8). */
FL__INTERNAL int fl__needs_escape(int json, const char *s, size_t len);

/* Writes `YYYY-MM-DDTHH:MM:SS.uuuuuuZ` (27 bytes, no NUL) for a CLOCK_REALTIME time. */
FL__INTERNAL void fl__rfc3339(char out[27], const struct timespec *ts);

/* Builds one whole record (prefix, escaped message, fields, cut marker, newline) into out[0..cap), cap being
 * at least 256 and at most max_record. msg[0..msglen) is the (possibly already shortened) message; msg_total is its
 * full length, so that bytes beyond msglen count as cut. Returns the record length; *cut receives the message bytes
 * cut. */
FL__INTERNAL size_t fl__build(const forklog *log, enum forklog_level level, const struct timespec *now, const char *msg,
                              size_t msglen, size_t msg_total, const struct fl__field *fields, size_t nfields,
                              char *out, size_t cap, size_t *cut);

/* Upper bound of fl__build's output for a message of msglen bytes and these fields, before max_record. */
FL__INTERNAL size_t fl__build_bound(size_t msglen, const struct fl__field *fields, size_t nfields);

/* Escapes src[0..len) into dst[0..cap) for a text (json = 0) or JSON string body. Stops before an escape that
 * does not fit. Returns the bytes written; *used receives the source bytes consumed. */
FL__INTERNAL size_t fl__escape(int json, char *dst, size_t cap, const char *src, size_t len, size_t *used);

/* sink.c */

/* Appends the bytes of iov[0..iovcnt) (len in all) as one record or a run of whole records, under the lock,
 * with rotation, reopen, buffering and repair. Returns 0 or a negative errno; on failure nothing of it is in
 * the file. */
FL__INTERNAL int fl__append(forklog *log, const struct iovec *iov, int iovcnt, size_t len);

/* Formats and appends one record with fields (pool records). Same returns as forklog_log(). */
FL__INTERNAL int fl__log_fields(forklog *log, enum forklog_level level, const char *msg, const struct fl__field *fields,
                                size_t nfields);

/* CLOCK_MONOTONIC in nanoseconds. */
FL__INTERNAL int64_t fl__mono_ns(void);

#endif /* FL__INTERNAL_H */
