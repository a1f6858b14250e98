/* SPDX-License-Identifier: MIT */
/*
 * The append lock: a process-shared, robust pthread mutex in the shared segment, how a writer waits for it, and
 * the repair a new holder makes when the previous one died holding it.
 *
 * Invariant, with the lock held and state FL__IDLE: the file of generation seg->gen ends at seg->size, right after
 * the last whole record, and seg->buf holds whole records not yet written. A lock holder that dies leaves
 * seg->state (and seg->batch_phase, seg->ring_phase) saying what it was doing; the next holder gets EOWNERDEAD and
 * restores the invariant before it calls pthread_mutex_consistent(). A holder that cannot look at the dead holder's
 * file (it cannot open path: its descriptor limit, its credentials) changes nothing, makes the mutex consistent,
 * unlocks and fails its call; every later holder finds state not IDLE, which no live holder leaves, and repairs.
 *
 * No waiter ever sleeps on a free lock for long. The kernel wakes one sleeper per unlock (and one when a holder
 * dies); if that sleeper dies before it takes the lock, its wake-up is gone. The kernel makes up for it only when
 * the lock word is 0 at that moment, and a writer that took the lock meanwhile with pthread_mutex_trylock() (which
 * never sets the waiters bit) unlocks without waking anybody. So every sleep is bounded (FL__SLEEP_NS) and
 * followed by another look at the lock.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

/* The longest one sleep in the futex lasts before the sleeper looks at the lock again: the bound on how long a
 * lost wake-up (above) can keep a writer waiting on a free lock. A sleeper woken normally never waits for it;
 * a lock held longer (a slow disk, a stopped holder) costs one futex call per sleeper per period. */
#define FL__SLEEP_NS 10000000

/* ThreadSanitizer up to LLVM 14 does not intercept pthread_mutex_clocklock(): a lock taken by a sleeper was then
 * invisible to it, so every access that holder made under the lock was reported as a race with the previous
 * holder's, and its unlock as the unlock of an unlocked mutex. A build for it sleeps with pthread_mutex_timedlock(),
 * which every version intercepts (on CLOCK_REALTIME: a wall clock set back during a sleep stretches that sleep by
 * as much, in that build and with musl, below). */
#if defined(__SANITIZE_THREAD__)
#define FL__TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define FL__TSAN 1
#endif
#endif

#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 30)) && !defined(FL__TSAN)
/* glibc declares it only under _GNU_SOURCE. CLOCK_MONOTONIC: a change of the wall clock must not stretch a
 * sleep. musl has only pthread_mutex_timedlock(), on CLOCK_REALTIME. Where time_t is 64 bits on a 32-bit system
 * (_TIME_BITS=64, glibc 2.34 and later), the function that takes that struct timespec is
 * __pthread_mutex_clocklock64, as glibc's own declaration says: under the plain name, the 32-bit one read the
 * 64-bit seconds' high half as the nanoseconds, so that every wait ended at once and a waiter spun on a held lock
 * instead of sleeping. */
#ifdef __USE_TIME_BITS64
extern int pthread_mutex_clocklock(pthread_mutex_t *mutex, clockid_t clockid,
                                   const struct timespec *abstime) __asm__("__pthread_mutex_clocklock64");
#else
extern int pthread_mutex_clocklock(pthread_mutex_t *mutex, clockid_t clockid, const struct timespec *abstime);
#endif
#define FL__SLEEP_CLOCK            CLOCK_MONOTONIC
#define fl__mutex_sleep(mu, until) pthread_mutex_clocklock((mu), CLOCK_MONOTONIC, (until))
#else
#define FL__SLEEP_CLOCK            CLOCK_REALTIME
#define fl__mutex_sleep(mu, until) pthread_mutex_timedlock((mu), (until))
#endif

/* The previous holder died with the lock (EOWNERDEAD), or died and left a repair nobody could make yet (state not
 * IDLE on a lock taken normally). Finish or undo the write that seg->state says it was doing, so that the file again
 * ends after a whole record. Returns 0, or the errno of an open(2) of path that failed for a reason of this process's
 * own (EMFILE, ENFILE, EACCES, ENOMEM, ...): it cannot tell where the dead holder's file ends, and nothing is changed.
 * Lock held. */
static int fl__repair_file_now(forklog *log)
{
    struct fl__seg *s = log->seg;
    if (s->state == FL__ROTATING) {
        /* Some renames may be done, some not; nothing was written. Everyone reopens path (creating it). A put-back
         * may have been cut between its link and its unlink: path.1 then goes, if it is path's file again. */
        fl__rotate_repair(log);
        fl__new_generation(s);
        FL__STEP(s->state, FL__IDLE);
        return 0;
    }
    if (s->state != FL__WRITING && s->state != FL__FLUSHING)
        return 0;
    if (!s->regular) {
        if (s->state == FL__FLUSHING && s->ring_phase == FL__RINGS_PLANNED && s->target != s->ring_target &&
            log->ring_cap) {
            /* Killed in its drop of what a failed flush sent, before every ring's plan was cut down (fl__drop_sent):
             * target says where the stream stopped, and no tail has moved. The plans are cut down again, to the same
             * place, in the order of that flush, which flush_rest still tells; a ring nothing of went out is not
             * counted as written. */
            const uint32_t at = s->flush_rest & ~FL__REST_LINE_END;
            (void)fl__plan_sent(log, at >= 1 && at <= FL__RINGS ? at - 1 : 0, (size_t)(s->target - s->size));
            s->target = s->ring_target;
        }
        if (s->state == FL__FLUSHING && !log->ring_cap && log->buf_cap && s->ring_target) {
            /* Killed in its drop of what a failed flush of the shared buffer sent (fl__drop_sent): the records after
             * the one it cut short never went out. The drop is finished, to the same place, and the next flush begins
             * with the rest of that record, as after a flusher that lives on. */
            const size_t sent = (size_t)(s->ring_target & ~FL__BUF_DROP_LINE_END);
            const size_t used = (size_t)(s->target - s->size);
            if (sent < used && used <= log->buf_cap && s->buf_used == used)
                fl__buf_drop_move(s, sent, used);
            s->flush_rest = (FL__RINGS + 1) | (s->ring_target & FL__BUF_DROP_LINE_END ? FL__REST_LINE_END : 0);
            if (s->buf_used == 0 || s->buf_used > log->buf_cap) {
                s->buf_used = 0;
                s->flush_rest = 0;
            }
            s->file_known = 0;
            FL__STEP(s->state, FL__IDLE);
            return 0;
        }
        /* A FIFO, a device, a socket: no size to compare, nothing to cut. What the dead holder wrote stays, and
         * counts as written: the buffer and the rings it was writing are not written again (at most once). A write
         * may have been cut short by the death (a writer blocked on a full pipe, killed with part of its record in
         * it) unless it was seen to end (size moved to target, WRITE_SIZED): the stream may then end in the middle
         * of a record, and the next record begins with a newline (fl__sync_file), or it would be glued to the
         * fragment; an empty line at worst, for a write that ended just before the death. Up to PIPE_BUF bytes, a
         * pipe or a FIFO takes a write whole or not at all; a socket, a terminal or a device may take part of a
         * write of any length (a stream socket takes it in pieces of its send buffer). A datagram socket
         * (forklog_open_fd) sends a record whole or not at all, at any length: no fragment, and a newline would go
         * out as a datagram of its own, an empty message. The repairer's descriptor tells which, when it is the
         * stream the log knows; otherwise the stream is taken for one that may. */
        struct stat pst;
        int type = 0;
        socklen_t tlen = sizeof type;
        const int known = fstat(log->fd, &pst) == 0 && (uint64_t)pst.st_ino == s->ino && (uint64_t)pst.st_dev == s->dev;
        const int whole =
            known && ((S_ISFIFO(pst.st_mode) && s->target - s->size <= PIPE_BUF) ||
                      (S_ISSOCK(pst.st_mode) && getsockopt(log->fd, SOL_SOCKET, SO_TYPE, &type, &tlen) == 0 &&
                       (type == SOCK_DGRAM || type == SOCK_SEQPACKET)));
        if (s->size != s->target && !whole)
            s->file_known = 2;
        s->size = s->target;
        if (s->state == FL__FLUSHING)
            s->buf_used = 0;
        /* A flush that began with the rest of a record a failed flush cut short (flush_rest, fl__drop_sent) counts
         * it as written too, though the dead flusher may have sent nothing of it: the stream may end in the middle of
         * that record, and the next record begins with a newline (fl__sync_file), an empty line at worst. A rest
         * marked FL__REST_LINE_END is whole records: nothing was cut short, and the mark is not made. */
        if (s->state == FL__FLUSHING && s->flush_rest >= 1 && s->flush_rest <= FL__RINGS + 1)
            s->file_known = 2;
        if (s->state == FL__FLUSHING)
            s->flush_rest = 0;
        FL__STEP(s->state, FL__IDLE);
        return 0;
    }
    /* Repair the file the dead holder wrote, that of generation s->gen, before a pending forklog_reopen() is
     * turned into a new generation: fl__sync_file would first re-read size from the torn file and keep the
     * fragment. The file is this process's descriptor's when that is the same file (its inode and device),
     * whatever generation this process is on: a process that opened the log by name and has not written yet
     * holds it, and may be the only one that still reaches it once the file is renamed away. Otherwise path is
     * opened by name, and the identity check skips a file that is no longer the dead holder's: a process on an
     * older generation, or a child forked while another thread of its parent completed a reopen (it holds the new
     * generation with the old file's descriptor until its fl__sync_file, which comes after this repair). A file
     * the generation does not know (file_known 0) has nothing to compare with, and is not looked for. */
    struct stat st;
    int fd = log->fd, reached = 0;
    if (s->file_known && (fstat(fd, &st) != 0 || !fl__same_file(s, &st))) {
        fd = fl__open_spare(log->path, O_WRONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        /* Not opened for a reason of this process's own (its descriptor limit, its credentials, its memory): the
         * file at path may well be the dead holder's, this process cannot tell. Deciding it out of reach would
         * leave a fragment uncut, and count a completed batch as not written and post its records again (written
         * twice). The repair is left to the next holder, everything as it is; only ENOENT says for sure that no
         * file is there. Anything else at path (a FIFO with no reader, a directory) is also left: a process that
         * cannot open path could not reopen it after a new generation either. */
        if (fd < 0 && errno != ENOENT)
            return errno;
        if (fd >= 0 && fstat(fd, &st) != 0) {
            int err = errno;
            close(fd);
            return err;
        }
    }
    if (fd >= 0 && s->file_known && S_ISREG(st.st_mode) && fl__same_file(s, &st)) {
        reached = 1;
        if ((uint64_t)st.st_size == s->target) {
            /* The write completed: the record (or buffer) is whole in the file; keep it. */
            s->size = s->target;
            if (s->state == FL__FLUSHING)
                s->buf_used = 0;
        } else if ((uint64_t)st.st_size > s->size) {
            /* A torn record: cut the file back to the end of the last whole one. */
            if (ftruncate(fd, (off_t)s->size) < 0)
                s->file_known = 0;
        }
    }
    if (fd >= 0 && fd != log->fd)
        close(fd);
    /* The dead holder's file is out of this process's reach (renamed away, and path names another file or none):
     * its fragment stays, and size no longer says where it ends. Nobody may append there again with that size,
     * which a later cut would go back to, taking the records written since: every process reopens path by name
     * before its next record, as after a forklog_reopen(). */
    if (!reached && s->file_known)
        fl__new_generation(s);
    FL__STEP(s->state, FL__IDLE);
    return 0;
}

/* fl__repair_file_now, not cancellable between its open() and its close() (fl__nocancel). */
static int fl__repair_file(forklog *log)
{
    const int cancel = fl__nocancel();
    int rc = fl__repair_file_now(log);
    fl__cancel_back(cancel);
    return rc;
}

/* The lock was taken with EOWNERDEAD (rc), or normally (rc 0) with a repair still to make: repairs the file, then the
 * batch and the rings, which read what the file repair decided. Returns 0 with the lock held (made consistent), or
 * an errno with the lock released. A repair this process cannot make (fl__repair_file_now) changes nothing: the
 * mutex is made consistent all the same (no later locker may get ENOTRECOVERABLE for it) and released, and the call
 * fails with the error; the next holder finds state not IDLE and makes the repair. Out of line: the record path only
 * tests for it. */
__attribute__((noinline)) static int fl__repair(forklog *log, int rc)
{
    struct fl__seg *s = log->seg;
    if (rc == EOWNERDEAD)
        s->repairs++;
    int err = fl__repair_file(log);
    if (err == 0) {
        FL__CRASH(REPAIR_FILE);
        fl__repair_batch(s);
        fl__repair_rings(s);
        FL__CRASH(REPAIR_BATCH);
    } else {
        FL__CRASH(REPAIR_DEFERRED);
    }
    if (rc == EOWNERDEAD && (rc = pthread_mutex_consistent(&s->mu)) != 0) {
        /* It cannot fail on the robust mutex that returned EOWNERDEAD; if it ever does, the caller gets the error
         * and must not keep the lock, or every other writer would wait for as long as this process lives.
         * Unlocked without being made consistent, the mutex cannot be recovered: every later lock fails with
         * ENOTRECOVERABLE, until the next opener that finds itself alone builds a new one. */
        pthread_mutex_unlock(&s->mu);
        return rc;
    }
    if (err != 0)
        pthread_mutex_unlock(&s->mu);
    return err;
}

/* After pthread_mutex_(try|clock)lock: repairs what a dead holder left, marks the lock held. Returns 0 (held),
 * EBUSY, ETIMEDOUT, or a negative errno. Every live holder leaves state IDLE when it unlocks; a lock taken with
 * state not IDLE was left by a repairer that could not make the repair (fl__repair), and its repair is made now:
 * one load of a word in the line that `held` is stored to below. */
static int fl__locked(forklog *log, int rc)
{
    struct fl__seg *s = log->seg;
    if (rc == 0 || rc == EOWNERDEAD) {
        FL__CRASH(LOCK_ACQUIRED);
        if (rc == EOWNERDEAD || s->state != FL__IDLE) {
            /* A repair that failed released the lock: its errno, whatever it is (an open(2) of path may fail with
             * EBUSY or ETIMEDOUT too), is a failure of this call, never the EBUSY or ETIMEDOUT of a lock that
             * another process holds, which the callers would wait on or take for a lock of their own. */
            int err = fl__repair(log, rc);
            if (err != 0)
                return -err;
            rc = 0;
        }
    }
    if (rc == 0) {
        FL__CRASH(LOCK_HELD);
        atomic_store_explicit(&s->held, 1, memory_order_relaxed);
    }
    return rc == EBUSY || rc == ETIMEDOUT ? rc : -rc;
}

int fl__trylock(forklog *log)
{
    return fl__locked(log, pthread_mutex_trylock(&log->seg->mu));
}

int fl__lock_sleep_once(forklog *log)
{
    struct timespec until;
    clock_gettime(FL__SLEEP_CLOCK, &until);
    until.tv_nsec += FL__SLEEP_NS;
    if (until.tv_nsec >= 1000000000) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000;
    }
    int rc = fl__locked(log, fl__mutex_sleep(&log->seg->mu, &until));
    if (rc == ETIMEDOUT)
        FL__CRASH(LOCK_SLEEP_TIMEOUT);
    return rc;
}

int fl__lock_sleep(forklog *log)
{
    int rc;
    while ((rc = fl__lock_sleep_once(log)) == ETIMEDOUT)
        ;
    return rc;
}

int fl__lock_yield(forklog *log, struct fl__slot *mine)
{
    /* Buffered records hold the lock ~0.1 us: yielding instead of a futex sleep and wake per record took them from
     * 5.5x to 8-10x the floor at P=2..8 here. Direct records wait less behind a preempted holder
     * (docs/performance.md). */
    struct fl__seg *s = log->seg;
    int64_t until = fl__mono_ns() + FL__YIELD_NS;
    int rc = EBUSY;
    while (!mine || (atomic_load_explicit(&mine->word, memory_order_acquire) & FL__SLOT_STATE) != FL__SLOT_DONE) {
        sched_yield();
        if (!atomic_load_explicit(&s->held, memory_order_relaxed))
            rc = fl__trylock(log);
        if (rc != EBUSY || fl__mono_ns() > until)
            break;
    }
    return rc;
}

int fl__lock(forklog *log)
{
    struct fl__seg *s = log->seg;
    int rc = fl__trylock(log);
    /* Spin only while fewer waiters spin than there are other CPUs: a spinner beyond that only takes a CPU from
     * the holder. The counter is a hint; a process killed while spinning leaves it high, which only means less
     * spinning. */
    if (rc == EBUSY) {
        if (atomic_fetch_add_explicit(&s->spinners, 1, memory_order_relaxed) < log->max_spinners) {
            int64_t until = fl__mono_ns() + FL__SPIN_NS;
            for (unsigned i = 1; rc == EBUSY; i++) {
                fl__cpu_relax();
                if (!atomic_load_explicit(&s->held, memory_order_relaxed))
                    rc = fl__trylock(log);
                if (rc == EBUSY && i % 16 == 0 && fl__mono_ns() > until)
                    break;
            }
        } else {
            rc = fl__lock_yield(log, NULL);
        }
        atomic_fetch_sub_explicit(&s->spinners, 1, memory_order_relaxed);
    }
    return rc == EBUSY ? fl__lock_sleep(log) : rc;
}

void fl__unlock(forklog *log)
{
    atomic_store_explicit(&log->seg->held, 0, memory_order_relaxed);
    FL__CRASH(UNLOCK);
    pthread_mutex_unlock(&log->seg->mu);
}

int fl__recover(forklog *log)
{
    struct fl__seg *s = log->seg;
    /* A repair this process cannot make (it cannot open path) fails the open and leaves the segment file as it is,
     * for the next opener to repair: the segment is built anew after this, and a repair left undone would be lost. */
    int rc = s->state != FL__IDLE ? fl__repair_file(log) : 0;
    if (rc != 0)
        return -rc;
    fl__repair_batch(s);
    fl__repair_rings(s);
    /* The file may have changed while nobody used the log (moved, truncated, removed): read its size afresh. */
    fl__new_generation(s);
    rc = fl__sync_file(log);
    if (rc == 0)
        rc = fl__flush_locked(log);
    return rc;
}

#ifdef FL__CRASH_POINTS
/* ---- crash points (test builds only) ---------------------------------------------------------------------------- */

static struct {
    atomic_ulong hits;
    atomic_ulong fire_at; /* 0: disarmed */
    atomic_int action;
} fl__cp[FL__CP_COUNT];

static const char *const fl__cp_names[] = {
#define FL__CP_NAME(name, what) #name,
    FL__CRASH_POINT_LIST(FL__CP_NAME)
#undef FL__CP_NAME
};

void fl__crash_arm(enum fl__crash_point cp, unsigned hit, enum fl__crash_action action)
{
    atomic_store(&fl__cp[cp].action, (int)action);
    atomic_store(&fl__cp[cp].fire_at, hit ? atomic_load(&fl__cp[cp].hits) + hit : 0);
}

unsigned long fl__crash_hits(enum fl__crash_point cp)
{
    return atomic_load(&fl__cp[cp].hits);
}

const char *fl__crash_name(enum fl__crash_point cp)
{
    return (unsigned)cp < FL__CP_COUNT ? fl__cp_names[cp] : NULL;
}

int fl__crash_next(enum fl__crash_point cp)
{
    unsigned long at = atomic_load(&fl__cp[cp].fire_at);
    return at && atomic_load(&fl__cp[cp].hits) + 1 == at;
}

void fl__crash_at(enum fl__crash_point cp)
{
    unsigned long hit = atomic_fetch_add(&fl__cp[cp].hits, 1) + 1;
    if (hit != atomic_load(&fl__cp[cp].fire_at))
        return;
    const int action = atomic_load(&fl__cp[cp].action);
    if (action == FL__CRASH_EXIT)
        pthread_exit(NULL);
    if (action == FL__CRASH_CANCEL)
        pthread_cancel(pthread_self());
    else
        raise(action == FL__CRASH_STOP ? SIGSTOP : SIGKILL);
}
#endif
