/* SPDX-License-Identifier: MIT */
/*
 * forklog internals shared by the files of lib/. Not installed.
 *
 * Every name here starts with fl__. The build compiles each source of lib/ on its own with hidden visibility for
 * FL__INTERNAL; the single-header generator (cmake/amalgamate.cmake) concatenates this file and the sources in a
 * fixed order and defines FL__INTERNAL as `static`, so no internal name ever leaves the user's object file.
 */
#ifndef FL__INTERNAL_H
#define FL__INTERNAL_H

/* Large files where off_t would otherwise have 32 bits (glibc on 32-bit systems): without it, a log of 2 GiB or
 * more cannot be opened (fstat() fails with EOVERFLOW) and a record cannot take the file past 2 GiB (EFBIG).
 * Every source of lib/ includes this file before any other header, so it holds for each of them; the public
 * functions take no off_t, so programs built either way call the library alike. */
#ifndef _FILE_OFFSET_BITS
#define _FILE_OFFSET_BITS 64
#endif
/* And a 64-bit time_t where it would otherwise have 32 bits (glibc 2.34 and later on 32-bit systems; glibc asks for
 * large files with it): without it, clock_gettime(CLOCK_REALTIME) fails with EOVERFLOW from January 2038 on, and
 * every record's timestamp (and a pool record's `start`) was whatever the stack held. The public functions take no
 * time_t either. */
#if !defined(_TIME_BITS) && _FILE_OFFSET_BITS == 64
#define _TIME_BITS 64
#endif

#include "forklog.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#ifndef FL__INTERNAL
#define FL__INTERNAL __attribute__((visibility("hidden")))
#endif
/* The declaration of an internal variable that one source file defines (the single header makes it static). */
#ifndef FL__INTERNAL_VAR
#define FL__INTERNAL_VAR extern __attribute__((visibility("hidden")))
#endif

/* What the lock holder is doing, so that the next holder can finish or undo it if the holder dies. */
enum fl__state {
    FL__IDLE = 0,
    FL__WRITING = 1,  /* a record is being written: the file should end at `target` */
    FL__FLUSHING = 2, /* the buffer is being written: the file should end at `target` */
    FL__ROTATING = 3  /* files are being renamed */
};

/* Combining (direct mode): a writer that finds the lock taken posts its record in a slot; the next lock holder
 * writes every posted record together with its own in one writev(2) and marks them done. A slot's word holds its
 * state in the low bits, its poster's pid above them (a Linux pid is below 2^22), and above those the number of
 * times the slot was claimed, so that one compare-and-swap both changes the state and proves whose slot it is: a
 * slot that changed hands since it was read fails it, even when its new poster was given the pid of the old one.
 * A slot goes FREE -> FILLING -> POSTED (poster, lock-free), POSTED -> TAKEN -> DONE (lock holder), DONE -> FREE
 * (poster); a claim (FREE, or a dead poster's slot, -> FILLING) counts one more. */
#define FL__SLOTS       32
#define FL__SLOT_CAP    1024
#define FL__SLOT_BITS   3u
#define FL__SLOT_STATE  ((1ull << FL__SLOT_BITS) - 1)
#define FL__SLOT_PID(w) ((int)((w) >> FL__SLOT_BITS & ((1u << 22) - 1)))
#define FL__SLOT_CLAIM  (1ull << (FL__SLOT_BITS + 22)) /* one claim in the count */
#define FL__SLOT_OWNER  (FL__SLOT_CLAIM - 1)           /* the state and pid bits */
enum fl__slot_state { FL__SLOT_FREE, FL__SLOT_FILLING, FL__SLOT_POSTED, FL__SLOT_TAKEN, FL__SLOT_DONE };
struct fl__slot {
    atomic_ullong word; /* claims << 25 | poster's pid << FL__SLOT_BITS | enum fl__slot_state */
    uint32_t len;       /* bytes in data */
    int32_t rc;         /* DONE: the result of the write that carried it */
    char data[FL__SLOT_CAP];
};

/* Where a combining holder is in its batch, so that the repair after its death knows what became of the slots
 * it had TAKEN: none of them written (GATHER), written if the file reached batch_target (WRITE), or written with
 * the result batch_rc (FINISH). */
enum fl__batch_phase { FL__BATCH_NONE = 0, FL__BATCH_GATHER = 1, FL__BATCH_WRITE = 2, FL__BATCH_FINISH = 3 };

/* The head of a segment: who may read it, and the settings its users share. Written by the process that builds
 * the segment, `ready` last; read by every opener (with pread(2)) before it maps the rest. */
#define FL__MAGIC  "forklog"
#define FL__READY  0x52454459u /* "REDY" */
#define FL__LAYOUT 9u          /* bumped whenever struct fl__seg changes meaning */
struct fl__seg_head {
    char magic[8];         /* FL__MAGIC */
    uint32_t layout;       /* FL__LAYOUT << 20 | sizeof(struct fl__seg) */
    uint32_t abi;          /* pointer size, mutex size and C library: processes that could not share the mutex */
    uint64_t seg_len;      /* bytes of the segment (its file may be longer, never shorter) */
    uint32_t ready;        /* FL__READY once built */
    uint32_t flags;        /* FORKLOG_BUFFERED or 0 */
    uint64_t rotate_bytes; /* the settings every process shares */
    uint32_t rotate_keep;
    uint32_t flush_ms;
    uint64_t builds;      /* times this segment was built, for the tests */
    uint64_t buffer_size; /* FORKLOG_BUFFERED: the buffer_size setting */
    uint64_t pidns;       /* the builder's PID and time namespaces (inode numbers, 0: unknown): a process of */
    uint64_t timens;      /* others is a guest (FL__GUEST) */
    char boot[36];        /* the machine's boot id when it was built (all 0: unknown) */
};

/* The lock-free buffer (FORKLOG_BUFFERED without rotation): each writer thread appends to a ring of its own, a
 * single-producer ring whose consumer is whoever holds the lock and flushes. head and tail count bytes ever
 * published and ever written; the owner writes data only in [head, tail + cap) and publishes with a release store
 * of head, so a writer killed in the middle of a copy publishes nothing of its record.
 * The owner word: tag << 44 | pid << 22 | tid (a Linux pid or tid is below 2^22). A thread that finds a ring
 * bearing its pid and tid (its own, or a gone thread's whose pid and tid came back) takes it by moving the tag
 * with a compare-and-swap, and a ring is freed (0) only by a compare-and-swap of the word its freer found gone:
 * of the two, the second fails. */
#define FL__RINGS         64 /* a ring per writer thread: beyond 64 live threads, a thread writes under the lock */
#define FL__REST_DROPPING 0x80000000u        /* in flush_rest: see there */
#define FL__REST_LINE_END 0x40000000u        /* in flush_rest: see there */
#define FL__OWNER_ID      ((1ull << 44) - 1) /* the pid and tid bits of an owner word */
#define FL__OWNER_TAG     (1ull << 44)       /* one step of its tag */
#define FL__OWNER_PID(w)  ((long)((w) >> 22 & ((1u << 22) - 1)))
#define FL__OWNER_TID(w)  ((long)((w) & ((1u << 22) - 1)))
struct fl__ring {
    _Alignas(64) atomic_ullong owner; /* tag << 44 | pid << 22 | tid of the writer thread; 0: free */
    atomic_ullong head;               /* bytes published by the owner */
    atomic_ullong tail;               /* bytes written to the file */
    uint64_t planned;                 /* the head a flush takes (ring_phase PLANNED) */
};
enum fl__ring_phase { FL__RINGS_IDLE = 0, FL__RINGS_PLANNED = 1 };

/* The shared segment: a MAP_SHARED mapping of the log's segment file (or, FORKLOG_PRIVATE, anonymous memory),
 * mapped by every process that opens the log and inherited by fork(). Every field but the head and the atomics is
 * read and written only with `mu` held. */
struct fl__seg {
    struct fl__seg_head head;
    pthread_mutex_t mu;    /* process-shared, robust */
    uint64_t size;         /* the file ends here after the last whole record */
    uint64_t target;       /* FL__WRITING / FL__FLUSHING: where the file ends once the write completes */
    uint64_t ino, dev;     /* identity of the current file, for repair */
    uint32_t gen;          /* file generation: bumped by every rotation and reopen */
    uint32_t file_known;   /* size/ino/dev describe generation gen (2: and its last line is unfinished, on a regular
                            * file or on a stream that a failed record left in the middle of one) */
    uint32_t state;        /* enum fl__state; not IDLE on a consistent lock: a repair is still to be made */
    uint32_t reopen_seen;  /* reopen_req value already turned into a generation */
    atomic_uint held;      /* a hint for spinning waiters: the lock is taken */
    atomic_uint spinners;  /* waiters spinning now; at most max_spinners spin, the rest sleep at once */
    uint64_t repairs;      /* times a holder found the previous one dead (EOWNERDEAD) */
    uint64_t batch_target; /* FL__BATCH_WRITE: the batch is in the file once size reaches this */
    uint32_t batch_phase;  /* enum fl__batch_phase */
    int32_t batch_rc;      /* FL__BATCH_FINISH: the result of the batch's write */
    uint64_t combined;     /* records written by a lock holder on their poster's behalf */
    atomic_uint posted;    /* bit k: slot k was posted and not yet taken (so a holder never scans all slots) */
    /* Read by every record and written seldom: a cache line of their own, apart from the lock's and the posters'
     * lines, which other CPUs write all the time. */
    _Alignas(64) atomic_uint level; /* forklog_set_level(): the log's minimum level; 0: each handle's own (lock-free) */
    atomic_uint regular;            /* the current file is a regular file: repair and rotation apply to it */
    atomic_uint reopen_req;         /* bumped by forklog_reopen(), lock-free (async-signal-safe) */
    _Alignas(64) struct fl__slot slots[FL__SLOTS];
    struct fl__ring rings[FL__RINGS];
    atomic_llong due_ns;  /* rings: the first append after it writes every ring (monotonic clock: fl__due_clock); set
                             flush_ns after its plan by every flush of all rings; 0 before the first record */
    uint32_t ring_phase;  /* enum fl__ring_phase */
    uint32_t flush_rest;  /* on a stream: what holds the rest of a record that a failed flush sent in part, written
                             first by the next flush (fl__drop_sent): 1 + its ring, or FL__RINGS + 1 for the shared
                             buffer's front; 0: none. With FL__REST_DROPPING: the log moved to another file, and the
                             ring's rest, which ends where its `planned` says, is being dropped (fl__drop_rest). With
                             FL__REST_LINE_END: what went out of that ring (or the shared buffer) ended a line, and
                             what follows in it is whole lines, written first only to keep a record of several lines
                             together on the same stream; another file takes them as they are, nothing dropped */
    uint64_t ring_target; /* FL__RINGS_PLANNED: the rings' data is in the file once size reaches this */
    size_t ring_cap;      /* bytes of each ring; 0 unless the rings are used */
    int64_t buf_first_ns; /* CLOCK_MONOTONIC time of the oldest buffered record */
    size_t buf_used;      /* bytes in buf */
    size_t buf_cap;       /* size of buf (FORKLOG_BUFFERED with rotation); 0 otherwise */
    unsigned char buf[];  /* buf_cap bytes of FORKLOG_BUFFERED records, whole, in lock order; then the rings' data */
};

/* Per-process state that fork() must not copy: it lives in a private page marked MADV_WIPEONFORK, which a child
 * sees zero-filled, so a zero field means "not yet done in this process". */
#define FL__PRE_CACHE 96 /* bytes of a cached prefix tail (format.c), a multiple of 16 */
struct fl__proc {
    atomic_int pid; /* getpid() of this process, 0 until first asked */
    int own_fd;     /* log->fd is this process's own open file description (lock held to read or write) */
    /* ring.c: what a thread's ring cache is keyed by, set at this process's first use of the rings: no key this
     * handle had in any other process, or another handle in this one (so a thread's cache, which a forked child
     * inherits, is never trusted in another process, even one that got the same pid). */
    atomic_ullong ring_key;
    int64_t guest_due_ns; /* a guest: when it next writes the rings (its own clock; lock held to read or write) */
    /* format.c: per level, what follows the timestamp in this process's records (` INFO pid=N app=X `), built
     * once per process; pre_state 0: not yet, 1: a thread is building it, 2: ready (release-stored). */
    atomic_uchar pre_state[5];
    unsigned char pre_len[5];
    _Alignas(16) char pre[5][FL__PRE_CACHE];
};
_Static_assert(sizeof(struct fl__proc) <= 4096, "struct fl__proc fits the smallest page");

/* The handle. fork() copies it: fd and gen are per process, changed only with the lock held. */
/* A handle flag of the library's own, beside the FORKLOG_ ones: the process is in another PID or time namespace than
 * the segment's builder. Thread ids and CLOCK_MONOTONIC mean something else there, so a guest takes no ring and no
 * combining slot (both are told apart by pid and tid, and their holders checked with kill) and never moves the
 * rings' due time: its records are written at once, under the lock. */
#define FL__GUEST (1u << 31)

struct forklog {
    struct fl__seg *seg;
    size_t seg_len;
    size_t buf_cap, ring_cap; /* the segment's sizes (its buf_cap and ring_cap), checked against its head at open and
                                 kept here, where no other process can change them */
    int seg_fd;         /* the segment file, open with a shared flock(2) while the handle lives; -1: private segment */
    size_t buffer_size; /* FORKLOG_BUFFERED: the buffer_size this handle builds a segment with (a joined one has its
                           own) */
    int fd;
    unsigned ring_first; /* lock held: the ring that the flush of the rings in progress writes first (fl__ring_at) */
    uint32_t gen;
    enum forklog_level level;
    enum forklog_format format;
    unsigned mode;  /* opts->mode; 0: not given (0644, or for the new file of a rotation or a reopen the bits of the
                       file it follows) */
    unsigned flags; /* the FORKLOG_ flags in force, and FL__GUEST */
    size_t max_record;
    unsigned long long rotate_bytes;
    unsigned rotate_keep;
    /* A rotation this process could not make (it may not rename in the directory, path.1 is not a regular file,
     * ...): not tried again before rotate_wait_ns (fl__mono_ns) while the generation stays rotate_wait_gen. Lock
     * held. */
    int64_t rotate_wait_ns;
    uint32_t rotate_wait_gen;
    int64_t flush_ns;
    unsigned max_spinners;  /* online CPUs - 1: more spinners than that would only delay the holder */
    struct fl__proc *proc;  /* in a private MADV_WIPEONFORK page, zero in a fresh child; NULL if unsupported */
    uid_t owner;            /* files the log creates are given to owner and group (fchown), */
    gid_t group;            /* (uid_t)-1 and (gid_t)-1: left as created */
    enum forklog_keys keys; /* JSON key names */
    char *app_tok;          /* ` app=NAME` (text) or `,"app":"NAME"` (JSON, the key set's name); NULL: none */
    size_t app_len;
    size_t prefix_max;             /* most bytes fl__prefix writes for this handle */
    _Atomic(struct fl__ctx *) ctx; /* this process's context fields; NULL: none (see forklog_context_add) */
    atomic_ullong rings_backed;    /* bit k: ring k's blocks were reserved through this handle (ring.c) */
    /* "" for forklog_open_fd(): no name, so no reopen and no rotation; the descriptor is the log. */
    char path[]; /* absolute, so that a child that chdir()s reopens the same file */
};

/* A handle's context: immutable once published in log->ctx; a forklog_context_add() publishes a new one (compare
 * and swap) that points to the one it replaced, and forklog_close() frees the chain, so a record being built with
 * an older one never sees it freed. fork() copies the chain with the heap: each process has its own. */
struct fl__ctx {
    struct fl__ctx *prev;
    size_t n;
    struct forklog_field f[]; /* keys and strings point into this allocation, after f[n] */
};

/* The caller's location of a record (forklog_*_at). */
struct fl__loc {
    const char *file, *func;
    int line;
};

/* format.c */

/* Most bytes fl__prefix writes, but the app token: `{"@timestamp":"<27>","log.level":"error","process.pid":<20>,
 * "process.thread.id":<20>,` ... `"message":"`. A handle's own bound is log->prefix_max. */
#define FL__PREFIX_MAX 192

/* Reads the coarse clock's step for the age bound of the rings (ring.c). Called by the opens, before any record. */
FL__INTERNAL void fl__ring_clock_init(void);

/* Sets up what keys the per-thread caches of format.c by process (a fork-wiped page, once per program). Called by
 * the opens, before any record. */
FL__INTERNAL void fl__proc_key_init(void);

/* The pid of the calling process, from the handle's fork-wiped cache. */
FL__INTERNAL long fl__pid(const forklog *log);

/* fl__pid(), inline for the record path. */
static inline long fl__pid_inline(const forklog *log)
{
    /* The cache lives in a MADV_WIPEONFORK page: a forked child reads 0 and asks the kernel once. getpid() is a
     * real system call since glibc 2.25, ~140 ns here: too much to pay on every record. */
    if (!log->proc)
        return (long)getpid();
    int pid = atomic_load_explicit(&log->proc->pid, memory_order_relaxed);
    if (!pid) {
        pid = (int)getpid();
        atomic_store_explicit(&log->proc->pid, pid, memory_order_relaxed);
    }
    return pid;
}

/* Writes the record prefix (text: `TS LEVEL pid=N[ tid=T][ app=NAME] `; JSON: up to the opening quote of the
 * message) into out, which has room for log->prefix_max + 16 bytes (the bytes past the prefix may be written
 * too). Returns its length. */
FL__INTERNAL size_t fl__prefix(const forklog *log, enum forklog_level level, const struct timespec *now, char *out);

/* The most bytes fl__prefix can write for this handle (its format, key set, FORKLOG_TID, app token). */
FL__INTERNAL size_t fl__prefix_bound(const forklog *log);

/* Renders the app token of the handle's format for `name` into out[0..cap): ` app=NAME` (text) or `,"KEY":"NAME"`.
 * Returns its length, 0 if it does not fit. */
FL__INTERNAL size_t fl__app_token(const forklog *log, const char *name, char *out, size_t cap);

/* Whether s[0..len) holds a byte that the format escapes (text: control bytes; JSON: also '"', '\\' and every
 * non-ASCII byte, which the slow path validates as UTF-8). */
FL__INTERNAL int fl__needs_escape(int json, const char *s, size_t len);

/* Copies src[0..len) to dst and says what it holds: bit 0, a byte that fl__needs_escape reports; bit 1 (text
 * only), an '='. */
FL__INTERNAL unsigned fl__copy_scan(char *dst, const char *src, size_t len, int json);

/* Copies src[0..len) to dst; returns whether it holds a byte that fl__needs_escape reports (fl__copy_scan's bit 0,
 * without the look for '='). */
FL__INTERNAL int fl__copy_esc(char *dst, const char *src, size_t len, int json);

/* Writes `YYYY-MM-DDTHH:MM:SS.uuuuuuZ` (27 bytes, no NUL) for a CLOCK_REALTIME time. */
FL__INTERNAL void fl__rfc3339(char out[27], const struct timespec *ts);

/* Builds one whole record (prefix, escaped message, location, context ctx (the handle's, loaded once by the
 * caller: another thread may replace it meanwhile), fields, cut marker, newline) into out[0..cap), cap being at
 * least log->prefix_max + 64 and at most max_record. msg[0..msglen) is the (possibly already shortened) message;
 * msg_total is its full length, so that bytes beyond msglen count as cut. The fields have been checked
 * (fl__check_fields). Returns the record length; *cut receives the message bytes cut, and *whole (when not NULL)
 * whether the record is complete: nothing cut, no field left out. */
FL__INTERNAL size_t fl__build(const forklog *log, enum forklog_level level, const struct timespec *now,
                              const struct fl__loc *loc, const struct fl__ctx *ctx, const char *msg, size_t msglen,
                              size_t msg_total, const struct forklog_field *fields, size_t nfields, char *out,
                              size_t cap, size_t *cut, int *whole);

/* Upper bound of fl__build's output for a message of msglen bytes, this location, context and these fields,
 * before max_record. */
FL__INTERNAL size_t fl__build_bound(const forklog *log, size_t msglen, const struct fl__loc *loc,
                                    const struct fl__ctx *ctx, const struct forklog_field *fields, size_t nfields);

/* Appends to out[0..o) (the prefix and a message that needed no escaping or quoting, JSON: with its closing quote)
 * what follows the message, the same bytes as fl__build: the location, the context and the fields, and the end of
 * the record, without leaving anything out. Returns the record's length; 0 when it leaves the record to fl__build
 * (a value to escape, a record that comes near cap); -EINVAL for an invalid key or type in fields[0..n). */
FL__INTERNAL long fl__tail_fast(const forklog *log, const struct fl__loc *loc, const struct fl__ctx *ctx,
                                const struct forklog_field *f, size_t n, char *out, size_t o, size_t cap);

/* 0 if fields[0..n) are valid (keys, types), else -EINVAL. */
FL__INTERNAL int fl__check_fields(const struct forklog_field *fields, size_t n);

/* The key set of records in `format` with `keys` (1: JSON with the ECS keys; 0: any other, text always using the
 * short names), as fl__same_key and the record builder take it. */
static inline int fl__keyset_of(enum forklog_format format, enum forklog_keys keys)
{
    return format == FORKLOG_FORMAT_JSON && keys == FORKLOG_KEYS_ECS;
}

/* Whether the valid keys a and b are written as one name in records of the key set ks (1: JSON with the ECS keys,
 * 0: any other): a key that is one of the record's own is written `fields.KEY`, so "ts" and "fields.ts" are one. */
FL__INTERNAL int fl__same_key(int ks, const char *a, const char *b);

/* Formats fmt into out[0..cap) without vsnprintf for the conversions it knows (%d %i %u %x %X %c %s %f %F %%, with
 * flags - + space 0, a width, a precision and the length modifiers hh h l ll j z t), byte for byte as vsnprintf
 * would. Returns the length (no NUL is written), or -1 when it does not take the format (another conversion, a
 * NULL string, a double it cannot do exactly, a locale whose radix is not '.') or the output does not fit: the
 * caller then uses vsnprintf. ap is consumed. */
FL__INTERNAL int fl__vformat(char *out, size_t cap, const char *fmt, va_list ap);

/* Escapes src[0..len) into dst[0..cap) for a text message (mode 0), a JSON string body (1) or a quoted text value
 * (2: also `\"` and `\\`). Stops before an escape that
 * does not fit. Returns the bytes written; *used receives the source bytes consumed. */
FL__INTERNAL size_t fl__escape(int json, char *dst, size_t cap, const char *src, size_t len, size_t *used);
/* Whether s[0..len) is valid UTF-8 (RFC 3629: no overlong forms, no surrogates, nothing past U+10FFFF). */
FL__INTERNAL int fl__utf8_valid(const char *s, size_t len);

/* ---- crash points ---------------------------------------------------------------------------------------------
 * Every step of the lock, repair, combining, write, flush, rotation and reopen protocols has a name. A test build
 * (FL__CRASH_POINTS defined: the forklog_crashpoints library of tests/) lets a test make a process die (or stop)
 * at the n-th time it passes one of them, in the real code at the real instruction; every other build compiles
 * them to nothing. A protocol step without a point here is a step no test can stop at: add one, and a row to the
 * crash point table of docs/design.md. */
#define FL__CRASH_POINT_LIST(X)                                                                                        \
    X(LOCK_ACQUIRED, "the mutex was acquired (0 or EOWNERDEAD), before any repair")                                    \
    X(LOCK_SLEEP_TIMEOUT, "a sleeper's bounded wait ran out, before it looks at the lock again")                       \
    X(REPAIR_FILE, "EOWNERDEAD (or a repair left undone): the file was repaired, before the batch repair")             \
    X(REPAIR_BATCH, "the batch was repaired, before pthread_mutex_consistent() (after EOWNERDEAD)")                    \
    X(REPAIR_DEFERRED, "a repairer that cannot open path left state as it was, before pthread_mutex_consistent()")     \
    X(LOCK_HELD, "the lock is held and consistent, before the held hint is set")                                       \
    X(UNLOCK, "the held hint was cleared, before pthread_mutex_unlock()")                                              \
    X(OWN_FD_OPENED, "a forked process opened its own description of the file, before the swap")                       \
    X(REOPEN_TAKEN, "a reopen request started a new generation, before the request is marked seen")                    \
    X(REOPEN_SEEN, "a reopen request became a new generation, before anybody reopened")                                \
    X(REOPEN_OPENED, "path was reopened by name, before the new descriptor replaced the old")                          \
    X(FILE_NEWLINE, "a newline ended the unfinished last line of a new generation's file, before its size is read")    \
    X(REST_MARKED, "the log moved off a stream that holds a record's first part: where its rest ends is marked")       \
    X(REST_DROPPED, "the rest of a record cut short in a stream the log moved off was dropped from its ring")          \
    X(FILE_KNOWN, "the size and identity of a new generation's file were read, before the write")                      \
    X(ROTATE_BEGIN, "state ROTATING, before the first rename")                                                         \
    X(ROTATE_RENAMED, "one rename of the rotation was done (one hit per rename)")                                      \
    X(FILE_CREATED, "path was created (open, rotation, reopen), before fchown() gives it to owner and group")          \
    X(ROTATE_CREATED, "the new file was created, before the generation moved to it")                                   \
    X(ROTATE_DONE, "the rotation is complete, state IDLE, before the record is written")                               \
    X(WRITE_TARGET, "target set, before state WRITING or FLUSHING")                                                    \
    X(WRITE_BEGIN, "state WRITING or FLUSHING and target set, before write(2)")                                        \
    X(WRITE_TORN, "part of the record or buffer is in the file (a test build writes half, then dies)")                 \
    X(WRITE_FAILED, "a write failed; a stream's sent bytes dropped from the buffer, the stream marked mid-line")       \
    X(WRITE_DONE, "every byte is in the file, before size = target")                                                   \
    X(WRITE_SIZED, "size = target, before a flush of the shared buffer empties it")                                    \
    X(WRITE_COMMITTED, "size = target (the shared buffer emptied by its flush), before state IDLE")                    \
    X(BUF_COPIED, "the record is copied into the shared buffer, before buf_used publishes it")                         \
    X(BUF_PUBLISHED, "buf_used includes the record, before an age or fill flush")                                      \
    X(RING_CLAIMED, "a writer thread claimed a ring, before its first record")                                         \
    X(RING_ADOPTED, "a thread took the ring bearing its pid and tid (tag moved), before its first record there")       \
    X(RING_OWNER_GONE, "lock held: a ring's owner is gone and the ring empty and unchanged, before it is freed")       \
    X(RING_COPIED, "a record is copied into the writer's ring, before head publishes it")                              \
    X(RING_PUBLISHED, "head includes the record, before the age check")                                                \
    X(RING_TARGET, "a flush took every ring's head and set ring_target, before phase PLANNED")                         \
    X(RING_PLANNED, "a flush took every ring's head and set ring_target, before the write")                            \
    X(RING_RELEASED, "the rings' tails were moved past the written data, before phase IDLE")                           \
    X(POST_RECLAIM, "a waiter found every slot used and one's poster gone, before it takes that slot")                 \
    X(POST_CLAIMED, "a waiter claimed a slot (FILLING), before copying its record")                                    \
    X(POST_POSTED, "the slot is POSTED, before its bit in `posted` is set")                                            \
    X(POST_FLAGGED, "the slot is POSTED and flagged, before the waiter waits")                                         \
    X(POST_DONE_SEEN, "the waiter saw its slot DONE, before freeing the slot")                                         \
    X(BATCH_GATHER, "batch phase GATHER, before the posted bits are swapped out")                                      \
    X(BATCH_SWAPPED, "the posted bits were swapped to 0, before any slot is TAKEN")                                    \
    X(BATCH_TAKEN, "one slot was TAKEN (one hit per slot)")                                                            \
    X(BATCH_TARGET, "the batch's batch_target was set, before phase WRITE")                                            \
    X(BATCH_WRITTEN, "the batch's write returned, before its result is stored")                                        \
    X(BATCH_RESULT, "the batch's result is in batch_rc, before phase FINISH")                                          \
    X(BATCH_MARKED, "one TAKEN slot was marked DONE (one hit per slot)")                                               \
    X(SEG_CREATED, "the segment file was created (empty), before its flock")                                           \
    X(SEG_ALONE, "the opener holds the segment file's exclusive flock, before recovering or building")                 \
    X(SEG_RECOVERED, "what the last users left was written, before the segment is built anew")                         \
    X(SEG_SIZED, "the segment file was emptied and sized, before the segment is built")                                \
    X(SEG_BUILT, "the segment is built (ready), before the opener moves to the shared flock")                          \
    X(SEG_JOIN_LOCKED, "a joiner holds the segment file's shared flock, before it reads the head")                     \
    X(SEG_JOINED, "a joiner mapped a built segment and took its settings, before the open returns")                    \
    X(SEG_CLOSE_ALONE, "the last user holds the exclusive flock at close, before the file is removed")

enum fl__crash_point {
#define FL__CP_ENUM(name, what) FL__CP_##name,
    FL__CRASH_POINT_LIST(FL__CP_ENUM)
#undef FL__CP_ENUM
        FL__CP_COUNT
};

#ifdef FL__CRASH_POINTS
/* What an armed crash point does when reached. FL__CRASH_EXIT ends the calling thread alone (pthread_exit), as a
 * cancellation acted upon there would: a thread that ends holding the lock while its process lives on.
 * FL__CRASH_CANCEL asks for the calling thread's cancellation there (pthread_cancel), as another thread may at any
 * moment; it is acted upon at the next cancellation point the thread reaches with cancellation enabled. */
enum fl__crash_action { FL__CRASH_KILL = 1, FL__CRASH_STOP = 2, FL__CRASH_EXIT = 3, FL__CRASH_CANCEL = 4 };
/* Arms point `cp` in this process: at its `hit`-th passage (1 = the next one) the process raises SIGKILL, or
 * SIGSTOP (and goes on when continued), or the passing thread ends or is asked to. hit 0 disarms it. A forked child
 * inherits the arming and the counts, so a test arms in the child that is to die. */
FL__INTERNAL void fl__crash_arm(enum fl__crash_point cp, unsigned hit, enum fl__crash_action action);
/* How many times this process passed point cp. */
FL__INTERNAL unsigned long fl__crash_hits(enum fl__crash_point cp);
/* The name of a point ("LOCK_ACQUIRED"), or NULL past the last one. */
FL__INTERNAL const char *fl__crash_name(enum fl__crash_point cp);
/* The point itself: counts the passage, fires when armed for it. */
FL__INTERNAL void fl__crash_at(enum fl__crash_point cp);
/* Whether point cp is armed to fire at its next passage (WRITE_TORN writes half before it fires). */
FL__INTERNAL int fl__crash_next(enum fl__crash_point cp);
#define FL__CRASH(name) fl__crash_at(FL__CP_##name)
#else
/* No code, but the order of the steps: the compiler may not move a protocol's stores (plain fields read back by
 * the next holder after a death) across a named step, as it may not across the call of the test build. */
#define FL__CRASH(name) atomic_signal_fence(memory_order_seq_cst)
#endif

/* One step of a protocol: stores `value` in a state or phase word of the segment (state, batch_phase, ring_phase)
 * that the next lock holder reads after a death, and keeps the compiler from moving any other store across it.
 * The stores a step publishes (target, batch_target, batch_rc, ring_target, ...) must be made before it, and a
 * plain store may otherwise be moved: GCC 12 at -O2 stored `state` before `target`, and a holder killed between
 * the two left a stale target that made the repair keep a write never made. The order the compiler emits is the
 * order a death leaves: a killed thread's stores are all visible before the kernel gives its robust lock to the
 * next holder. */
#define FL__STEP(word, value)                                                                                          \
    do {                                                                                                               \
        atomic_signal_fence(memory_order_seq_cst);                                                                     \
        (word) = (value);                                                                                              \
        atomic_signal_fence(memory_order_seq_cst);                                                                     \
    } while (0)

/* ---- the lock (lock.c) --------------------------------------------------------------------------------------- */

/* How long a waiter spins before it sleeps: several writes of a small record (~1 us each here). Sleeping costs two
 * system calls and two context switches per hand-off; spinning while the holders ahead write avoids them. 0.5, 2,
 * 10 and 30 us were tried (docs/performance.md). The clock is read every 16 pauses, and by a poster at every
 * pause while the lock is free (FL__LEAVE_NS). */
#define FL__SPIN_NS 10000

/* How long a waiter that may not spin (as many spin as there are other CPUs) yields its CPU between looks at the
 * lock (and, for a poster, at its slot) before it sleeps in the futex. A sleeper is woken only when the lock comes
 * to it: with more writers than CPUs, the waiters queue in the futex and each hand-off waits for a wake-up and a
 * CPU, several milliseconds behind a preempted holder. A waiter that yields is still runnable and sees its record
 * written, or the lock free, when it next runs. At P=8 on 2 CPUs it made the calls over 1 ms 10x rarer, for a p99
 * of 50-80 us instead of 5-8 us (docs/performance.md). */
#define FL__YIELD_NS 50000

/* How long a spinning poster leaves a lock it sees free before it takes it: about what a writer that logs back to
 * back needs to come back with its next record (a formatted record's ~0.1-0.5 us and a call). That writer then
 * writes the posted record with its own, in one write(2); a poster that took the lock at once would usually write
 * only its own record, and two writers would take turns a record each. 0.5, 1 and 2 us were tried, and leaving
 * it only once per record (docs/performance.md). */
#define FL__LEAVE_NS 1000

static inline void fl__cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#else
    atomic_signal_fence(memory_order_seq_cst);
#endif
}

/* Takes the lock: spins a little, then sleeps in bounded waits. Returns 0 (held, the state repaired if the last
 * holder died) or a negative errno. */
FL__INTERNAL int fl__lock(forklog *log);
/* For a waiter that may not spin: yields the CPU, looking at the lock (and at the slot `mine`, when not NULL) each
 * time it runs again, for up to FL__YIELD_NS. Returns 0 or a negative errno once the lock is taken, else EBUSY
 * (the slot is DONE, or the time is up). */
FL__INTERNAL int fl__lock_yield(forklog *log, struct fl__slot *mine);

/* Tries the lock once: 0 (held, repaired), EBUSY, or a negative errno. */
FL__INTERNAL int fl__trylock(forklog *log);

/* Sleeps until the lock is free and takes it, never waiting on a free lock for long (see lock.c). */
FL__INTERNAL int fl__lock_sleep(forklog *log);

/* One bounded sleep on the lock (FL__SLEEP_NS at most): 0 (held, repaired), ETIMEDOUT, or a negative errno. */
FL__INTERNAL int fl__lock_sleep_once(forklog *log);

FL__INTERNAL void fl__unlock(forklog *log);

/* ---- the file: per-process descriptor, generations, reopen, rotation (file.c) --------------------------------- */

/* Records a new generation of the file: every process reopens path before its next record. Lock held. */
FL__INTERNAL void fl__new_generation(struct fl__seg *s);
/* Whether the regular file of fd, size bytes long, does not end in a newline (0 when that cannot be read). */
FL__INTERNAL int fl__ends_mid_line(int fd, uint64_t size);

/* Opens path for appending (O_WRONLY | O_APPEND | O_CLOEXEC | O_NOCTTY and `flags`), never blocking on a FIFO
 * with no reader; with O_CREAT in `flags`, creates it with the handle's mode when missing and then gives it to
 * the handle's owner and group; what the handle leaves unset, a file that follows another one (`like`, the fstat
 * of the file it follows; NULL for forklog_open()) takes from that file. Returns the descriptor, in blocking mode,
 * or a negative errno. */
FL__INTERNAL int fl__open_log_file(const forklog *log, int flags, const struct stat *like);

/* Moves a descriptor that a handle keeps for its whole life to a number above 2 (close-on-exec), closing the old
 * number: a process started with 0, 1 or 2 closed gets them back from open(), and its own printf() or a library's
 * message to stderr would then go into the log or the segment file. Returns the descriptor, or a negative errno
 * (fd closed). */
FL__INTERNAL int fl__fd_above_stdio(int fd);

/* Whether the file of *st is the one the segment's generation describes (file_known): its inode and device, and, for
 * a regular file, at least the size the log knows it to have. A shorter file is another one that was given the same
 * inode number once the generation's file was removed (ext4 gives a freed number to the next file it creates), or
 * the file cut short behind the log's back: written with that size, a cut after a failed write or a dead writer would
 * go back to a size the file no longer has, and leave the fragment. A FIFO or a device is the same by its identity
 * alone (its size is always 0), and only when the generation knew a stream: a regular file is never the same as one. */
FL__INTERNAL int fl__same_file(const struct fl__seg *s, const struct stat *st);

/* One operation on a handle's names (an open, a reopen, a rotation, the segment file's follow and removal) resolves
 * the directory that path names once, and reaches the log file, its segment file and its rotated names relative to
 * that one descriptor (openat, fstatat, renameat, linkat, unlinkat): a symlinked directory flipped, or a directory
 * renamed, in the middle of the operation cannot make it take one directory's file and the other's lock. Calls made
 * within an operation of the same handle on the same thread (the recovery of an open, the reopen of a rotation) reuse
 * its directory. Where the directory cannot be opened with O_PATH, fd is AT_FDCWD and every name is looked up whole,
 * as a path, each time. */
struct fl__dir {
    int fd;     /* the directory, or AT_FDCWD, when the operation began (see fl__dir_now) */
    int nested; /* part of an operation of the same handle already in progress, which ends it */
    const forklog *prev_log;
    int prev_fd, prev_own;
};
/* Begins an operation on log's names: d->fd is the directory of log->path. Returns 0, or the negative errno of the
 * directory's lookup (-ENOENT: no directory at its name), which an open of path would have failed with. */
FL__INTERNAL int fl__dir_enter(const forklog *log, struct fl__dir *d);
/* Ends it; the thread's outer operation, if any, is current again. */
FL__INTERNAL void fl__dir_leave(struct fl__dir *d);
/* The directory of the operation in progress on this thread. */
FL__INTERNAL int fl__dir_now(void);
/* For a process with no descriptor to spare (EMFILE, ENFILE), which could open the log file and its segment file but
 * not the directory besides: closes the operation's directory, whose names are looked up whole from here on, as
 * without O_PATH. Returns 1 if there was one to close, 0 otherwise. */
FL__INTERNAL int fl__dir_spare(void);
/* open(2), and once more if it fails for want of a descriptor (EMFILE, ENFILE) and the operation in progress gives its
 * directory's back (fl__dir_spare): an open made within an operation (the boot id, a /proc read) needs no more
 * descriptors than it did without one. */
FL__INTERNAL int fl__open_spare(const char *path, int flags);
/* The name to give the *at() calls with dir for `name`, a path in the directory of the handle's path: its last
 * component, or the whole path when dir is AT_FDCWD. */
FL__INTERNAL const char *fl__dir_name(int dir, const char *name);

/* Makes this process's descriptor refer to the file of the current generation. Lock held. */
FL__INTERNAL int fl__sync_file(forklog *log);

/* Rotates first when `len` more bytes would take the file past rotate_bytes. Lock held, file synced. */
FL__INTERNAL int fl__maybe_rotate(forklog *log, size_t len);

/* The repair after a holder died mid-rotation: removes the name path.1 when it is a second name of the file at path,
 * which a put-back killed between its link(2) and its unlink(2) leaves. Lock held. */
FL__INTERNAL void fl__rotate_repair(forklog *log);

/* ---- writing with the lock held (write.c) --------------------------------------------------------------------- */

/* The most pieces one write takes: a record of up to 4 and every posted one (combining), or two per ring (a flush
 * of the rings, each of which may wrap). */
/* The i-th ring that a flush of the rings writes: ring `first` (the one that a failed flush to a stream left with the
 * rest of a record, see fl__flush_some), then the others in their order. */
static inline unsigned fl__ring_at(unsigned first, unsigned i)
{
    return i == 0 ? first : i <= first ? i - 1 : i;
}

#define FL__IOV_MAX (FL__SLOTS + 4 > 2 * FL__RINGS ? FL__SLOTS + 4 : 2 * FL__RINGS)

/* Writes len bytes that end whole records and commits them, or cuts the file back and fails. */
FL__INTERNAL int fl__write_commit(forklog *log, const struct iovec *iov, int iovcnt, size_t len, enum fl__state state);

/* A flush of the rings to a stream failed after `sent` bytes went out, in the order of the plan from ring `first`
 * (fl__ring_at): cuts each ring's plan down to what is to count as written should its flusher die, what went out
 * and the rest of the record it cut short; a ring nothing of went out is planned at its tail. Moves no tail, and
 * done again to the same tails and sent it changes nothing. Returns what flush_rest is to say: 1 + the ring that
 * holds the rest of that record (with FL__REST_LINE_END when what went out ended a line), or 0. Lock held. */
FL__INTERNAL unsigned fl__plan_sent(forklog *log, unsigned first, size_t sent);

/* In ring_target, of a log with the shared buffer, state FLUSHING: a drop of the buffer's front is under way
 * (fl__drop_sent): ring_target says how many bytes went out, with this bit when the last of them ended a line, and
 * batch_target how many of the bytes after them are at the front already. 0: no drop under way. */
#define FL__BUF_DROP_LINE_END (1ull << 63)

/* Moves the last used - sent bytes of the shared buffer to its front, from where batch_target says the move got,
 * then cuts buf_used to them: done again after a death, it ends at the same place. Lock held. */
FL__INTERNAL void fl__buf_drop_move(struct fl__seg *s, size_t sent, size_t used);

/* Writes out the shared buffer. Lock held, file synced. */
FL__INTERNAL int fl__flush_locked(forklog *log);

/* fl__append's plain path: under the lock, with rotation, reopen, the shared buffer and repair. */
FL__INTERNAL int fl__append_plain(forklog *log, const struct iovec *iov, int iovcnt, size_t len);

/* ---- the lock-free buffer (ring.c) ---------------------------------------------------------------------------- */

/* Per thread (write.c defines it, thread-local; the record path reaches it once per call and hands it down):
 * whether the thread is inside a record call or a flush, and its ring.
 * busy: the pid of the process in which the thread is inside one, else 0. A signal handler that interrupts such a
 * call and makes another on the same thread is refused with -EDEADLK: the interrupted call may hold the lock, which
 * is not recursive (the handler would wait for ever), or be copying its record into the thread's ring (the two
 * records would overwrite each other). A pid, not a flag: a child forked by such a handler may make calls of its own
 * while in the handler (it must end there, docs/api.md: returning, it would go on with its parent's call).
 * The ring: remembered for the last handle the thread wrote through, and the one before it (so that a thread that
 * writes two logs in turn finds both rings at once). Keyed by the handle's ring key in this process (struct
 * fl__proc's ring_key): a segment mapped again, or another log's, may come back at the same address, and a forked
 * child inherits this memory of its parent's thread, perhaps with a pid that its parent's parent had; a key is never
 * the same twice along a line of forks. head and off: where this thread's last record ended (off = head % ring_cap),
 * so that an append needs no division. */
struct fl__mine {
    volatile long busy;
    uint64_t key;     /* UINT64_MAX: none (no ring_key is ever that, and 0 is an unset one) */
    unsigned ring;    /* FL__RINGS: none was free at the last look */
    int64_t retry_at; /* ring == FL__RINGS: when to look again (the coarse clock) */
    uint64_t head;
    size_t off;
    int alone; /* its last look past half its ring found every other ring empty: no early flush until it is full */
    uint64_t other_key; /* the ring of the handle before (never FL__RINGS) */
    unsigned other_ring;
};
FL__INTERNAL_VAR _Thread_local struct fl__mine fl__my;

/* Hides where p came from, so that the compiler keeps the value instead of computing it again (in a shared library
 * the address of a thread-local variable is a call to __tls_get_addr, which a compiler would rather make again
 * after each call than keep). */
#if defined(__GNUC__)
#define fl__opaque(p) __asm__("" : "+r"(p))
#else
#define fl__opaque(p) ((void)0)
#endif

/* FORKLOG_BUFFERED with rings: appends the record to the calling thread's ring, with no lock; flushes when the
 * ring is full or the oldest record is due. Returns 0 or a negative errno (nothing of the record written then). */
FL__INTERNAL int fl__ring_append(forklog *log, struct fl__mine *my, const struct iovec *iov, int iovcnt, size_t len);

/* Writes what every ring holds, in one writev(2). Lock held, file synced. Returns 0 or a negative errno (the
 * records stay in the rings). */
FL__INTERNAL int fl__flush_rings(forklog *log);

/* After a holder died in a rings flush (ring_phase PLANNED): the tails move past the data if it reached the file.
 * Lock held, after the file repair. */
FL__INTERNAL void fl__repair_rings(struct fl__seg *s);

/* Ring k's bytes. The sizes are the handle's copies, checked against the segment's head at open: a segment that
 * another process damages later cannot move them. */
static inline unsigned char *fl__ring_data(const forklog *log, unsigned k)
{
    return log->seg->buf + log->buf_cap + (size_t)k * log->ring_cap;
}

/* The log's file is no longer the stream that a failed flush sent the first part of a record to (flush_rest): the
 * rest of that record is dropped from its ring, and no longer written first. Lock held, from fl__sync_file. */
FL__INTERNAL void fl__drop_rest(forklog *log);

/* Lock held, before a record that is written at once (a guest's, or one that takes no ring): whether what the log
 * buffers (every ring; for a guest, the shared buffer too) is to be written first, for the age bound. A native
 * compares the due time with its clock (with no due time set yet: whether a ring holds a record); a guest, whose
 * clock is not the natives', says yes at its first record and then once flush_ms has passed on its own clock since
 * its last yes (it never moves the due time). */
FL__INTERNAL int fl__rings_due(forklog *log);

/* Whether a ring holds records not yet written. */
FL__INTERNAL int fl__rings_pending(const struct fl__seg *s);

/* ---- combining (combine.c) ------------------------------------------------------------------------------------ */

/* Direct mode, records up to FL__SLOT_CAP: take the lock and write this record with every posted one, or post it
 * and wait until a holder wrote it. Same returns as fl__append. */
FL__INTERNAL int fl__append_combining(forklog *log, const struct iovec *iov, int iovcnt, size_t len);

/* After a holder died: what became of the slots its batch had TAKEN, per the batch phase; every POSTED slot is
 * flagged in `posted` again. Lock held, after the file repair. */
FL__INTERNAL void fl__repair_batch(struct fl__seg *s);

/* ---- the record path's entry ---------------------------------------------------------------------------------- */

/* Marks the calling thread inside a call of this process; NULL if it is already (a signal handler that interrupted
 * one: the caller returns -EDEADLK). The fences keep the compiler from moving the mark across the call's work. */
static inline struct fl__mine *fl__enter(const forklog *log)
{
    struct fl__mine *my = &fl__my;
    fl__opaque(my);
    const long pid = fl__pid_inline(log);
    if (my->busy == pid)
        return NULL;
    my->busy = pid;
    atomic_signal_fence(memory_order_seq_cst);
    return my;
}

static inline void fl__leave(struct fl__mine *my)
{
    atomic_signal_fence(memory_order_seq_cst);
    my->busy = 0;
}

/* Thread cancellation put off, around a step that reaches a cancellation point (open, read, write, close) while it
 * holds what only its own process could give back: a descriptor between its open() and its close(), or a
 * combining slot of its own. A thread cancelled elsewhere in a call leaves what a killed one leaves, which the
 * next lock holder repairs. The request is acted upon at the thread's next cancellation point. The steps are the
 * rare ones (a reopen, a rotation, a repair, a /proc read, a poster that writes its own slot): the record path
 * itself pays nothing. */
static inline int fl__nocancel(void)
{
    int old;
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
    return old;
}

static inline void fl__cancel_back(int old)
{
    pthread_setcancelstate(old, &old);
}

/* Appends the bytes of iov[0..iovcnt) (len in all) as one record or a run of whole records, with rotation, reopen,
 * buffering and repair. Returns 0 or a negative errno (-EDEADLK: see struct fl__mine); on failure nothing of it is
 * in the file. Inline: the choice of path costs no call of its own.
 * Combining keeps every promise of the plain path; rotation and the shared buffer keep the plain path, and so does
 * a target that is not a regular file, where a dead holder's batch could not be told written or not. So does
 * FORKLOG_SYNC: a posted record is written by whichever process holds the lock, which syncs only if its own handle
 * asks for it; a SYNC record is written, and synced, by its own caller. Buffered without rotation: the lock-free
 * rings, but not for a guest (see FL__GUEST). */
static inline int fl__append(forklog *log, const struct iovec *iov, int iovcnt, size_t len)
{
    struct fl__mine *my = fl__enter(log);
    if (!my)
        return -EDEADLK;
    int rc;
    if (!(log->flags & (FORKLOG_BUFFERED | FORKLOG_SYNC | FL__GUEST)) && !log->rotate_bytes && len <= FL__SLOT_CAP &&
        iovcnt <= 4 && atomic_load_explicit(&log->seg->regular, memory_order_relaxed))
        rc = fl__append_combining(log, iov, iovcnt, len);
    else if (log->ring_cap && !(log->flags & FL__GUEST))
        rc = fl__ring_append(log, my, iov, iovcnt, len);
    else
        rc = fl__append_plain(log, iov, iovcnt, len);
    fl__leave(my);
    return rc;
}

/* forklog_flush() of a buffered log: writes out the rings and the shared buffer; refused as fl__append is. */
FL__INTERNAL int fl__flush(forklog *log);

/* ---- the segment (segment.c) ---------------------------------------------------------------------------------- */

/* Maps the segment of a freshly opened log (log->fd, whose fstat is *st, and the handle's options already set):
 * the log's shared segment file, joined or built, or a private one. Sets log->seg, seg_len, seg_fd, gen, and the
 * shared settings (flags, rotate_bytes, rotate_keep, flush_ns) from the segment. Returns 0 or a negative errno,
 * with a one-line explanation in err[0..errlen) when err is not NULL. */
FL__INTERNAL int fl__seg_open(forklog *log, const struct forklog_options *o, const struct stat *st, char *err,
                              size_t errlen);

/* Whether the segment file that every opener of log->path finds now, in the directory path names, is this handle's:
 * 0 when it is (or the segment is private), after moving this segment there when that directory has none (it was
 * moved away and a new one made at its name, or a symlink to it was pointed elsewhere); -ESTALE when another
 * segment serves it, or this one cannot be moved there. A handle must not reopen path, nor rename it, otherwise:
 * the file there is another lock's, whose users' records a cut of ours would take. Lock held. */
FL__INTERNAL int fl__seg_follow(const forklog *log);

/* Unmaps the segment and, when this was its last user and it holds nothing, removes its file. */
FL__INTERNAL void fl__seg_close(forklog *log);

/* Every previous user of the segment is gone (the caller alone holds its file): finish or undo what the last lock
 * holder left, as a holder after EOWNERDEAD does, and write out the records left in the buffer. Returns 0 or the
 * negative errno of the write (the records then stay in the buffer). */
FL__INTERNAL int fl__recover(forklog *log);

/* ---- the public calls (api.c) --------------------------------------------------------------------------------- */

/* CLOCK_MONOTONIC in nanoseconds. */
FL__INTERNAL int64_t fl__mono_ns(void);

#endif /* FL__INTERNAL_H */
