/*
 * The sink: the shared segment, the robust append lock, and every path that puts bytes into the file.
 *
 * Invariant, with the lock held and state FL__IDLE: the file of generation seg->gen ends at seg->size, right
 * after the last whole record, and seg->buf holds whole records not yet written. A lock holder that dies leaves
 * seg->state saying what it was doing; the next holder gets EOWNERDEAD and restores the invariant (fl__repair).
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef MAP_ANONYMOUS
#error "forklog needs MAP_ANONYMOUS: compile in the default gnu mode, or define _DEFAULT_SOURCE before any #include"
#endif

#define FL__DEFAULT_MAX_RECORD ((size_t)1 << 20)
#define FL__MIN_MAX_RECORD     ((size_t)256)
#define FL__MAX_MAX_RECORD     ((size_t)1 << 30)
#define FL__DEFAULT_KEEP       5u
#define FL__MAX_KEEP           1000u
#define FL__DEFAULT_FLUSH_MS   100u
#define FL__DEFAULT_BUFFER     ((size_t)256 << 10)
#define FL__MIN_BUFFER         ((size_t)4 << 10)
#define FL__MAX_BUFFER         ((size_t)1 << 30)
#define FL__STACK_RECORD       4096

unsigned forklog_version(void)
{
    return FORKLOG_VERSION_NUMBER;
}

const char *forklog_version_string(void)
{
    return FORKLOG_VERSION_STRING;
}

int64_t fl__mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- the lock and its repair ----------------------------------------------------------------------------- */

/* Records a new generation of the file and adopts it in this process: every other process reopens before its
 * next record. Lock held. */
static void fl__new_generation(struct fl__seg *s)
{
    s->gen++;
    s->file_known = 0;
}

/* A forked process writes through its own open file description of the same inode, reopened through
 * /proc/self/fd (never by path): processes that share one description contend in the kernel for its position
 * lock (f_pos_lock) on every write(2). Once per process, lock held; if it cannot, it keeps the inherited one. */
static void fl__own_fd(forklog *log)
{
    log->proc->own_fd = 1;
    char link[32];
    snprintf(link, sizeof link, "/proc/self/fd/%d", log->fd);
    int fd = open(link, O_WRONLY | O_APPEND | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return;
    struct stat a, b;
    if (fstat(fd, &a) < 0 || fstat(log->fd, &b) < 0 || a.st_ino != b.st_ino || a.st_dev != b.st_dev) {
        close(fd);
        return;
    }
    int old = log->fd;
    log->fd = fd;
    close(old);
}

/* Makes this process's descriptor refer to the file of the current generation, reopening path by name when a
 * rotation or forklog_reopen() happened since this process last wrote. Lock held. */
static int fl__sync_file(forklog *log)
{
    struct fl__seg *s = log->seg;
    if (log->proc && !log->proc->own_fd)
        fl__own_fd(log);
    unsigned req = atomic_load_explicit(&s->reopen_req, memory_order_acquire);
    if (req != s->reopen_seen) {
        s->reopen_seen = req;
        fl__new_generation(s);
    }
    if (log->gen == s->gen && s->file_known)
        return 0;
    if (log->gen != s->gen) {
        int fd = open(log->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, (mode_t)log->mode);
        if (fd < 0)
            return -errno;
        /* Swap rather than dup2(): the new number keeps O_CLOEXEC with no window. Threads of this process
         * read log->fd only with the lock held. */
        int old = log->fd;
        log->fd = fd;
        log->gen = s->gen;
        close(old);
    }
    if (!s->file_known) {
        struct stat st;
        if (fstat(log->fd, &st) < 0)
            return -errno;
        s->size = (uint64_t)st.st_size;
        s->ino = (uint64_t)st.st_ino;
        s->dev = (uint64_t)st.st_dev;
        s->file_known = 1;
    }
    return 0;
}

/* The previous holder died with the lock (EOWNERDEAD). Finish or undo what seg->state says it was doing, so
 * that the file again ends after a whole record. Lock held. */
static void fl__repair(forklog *log)
{
    struct fl__seg *s = log->seg;
    s->repairs++;
    if (s->state == FL__ROTATING) {
        /* Some renames may be done, some not; nothing was written. Everyone reopens path (creating it). */
        fl__new_generation(s);
        s->state = FL__IDLE;
        return;
    }
    if (s->state != FL__WRITING && s->state != FL__FLUSHING)
        return;
    /* Repair the file the dead holder wrote, that of generation s->gen, before a pending forklog_reopen() is
     * turned into a new generation: fl__sync_file would first re-read size from the torn file and keep the
     * fragment. A process still on an older generation opens path by name; the identity check skips a file
     * that is no longer the dead holder's (renamed away since: its fragment stays, see docs/design.md). */
    int fd = log->gen == s->gen ? log->fd : open(log->path, O_WRONLY | O_CLOEXEC | O_NOCTTY);
    struct stat st;
    if (fd >= 0 && s->file_known && fstat(fd, &st) == 0 && (uint64_t)st.st_ino == s->ino &&
        (uint64_t)st.st_dev == s->dev) {
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
    s->state = FL__IDLE;
}

/* A holder died with a combined batch open: its slots were written (the file reached batch_target) or not, in
 * which case they are posted again for the next batch. Lock held, after the file repair. */
static void fl__repair_batch(struct fl__seg *s)
{
    if (!s->batch_open)
        return;
    int committed = s->size == s->batch_target;
    for (unsigned k = 0; k < FL__SLOTS; k++) {
        struct fl__slot *sl = &s->slots[k];
        if (atomic_load_explicit(&sl->state, memory_order_relaxed) != FL__SLOT_TAKEN)
            continue;
        sl->rc = 0;
        atomic_store_explicit(&sl->state, committed ? FL__SLOT_DONE : FL__SLOT_POSTED, memory_order_release);
        if (!committed)
            atomic_fetch_or_explicit(&s->posted, 1u << k, memory_order_release);
    }
    s->batch_open = 0;
}

/* How long a waiter spins before it sleeps in the futex: several writes of a small record (~1 us each here).
 * Sleeping costs two system calls and two context switches per hand-off; spinning while the holders ahead write
 * avoids them. 0.5, 2, 10 and 30 us were tried (docs/performance.md). The clock is read every 16 pauses. */
#define FL__SPIN_NS 10000
/* How long a buffered-mode waiter beyond the spinners yields before it sleeps in the futex. */
#define FL__YIELD_NS 50000

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

/* After pthread_mutex_(try)lock: repairs what a dead holder left, marks the lock held. Returns 0 (held), EBUSY,
 * or a negative errno. */
static int fl__locked(forklog *log, int rc)
{
    struct fl__seg *s = log->seg;
    if (rc == EOWNERDEAD) {
        fl__repair(log);
        fl__repair_batch(s);
        rc = pthread_mutex_consistent(&s->mu);
    }
    if (rc == 0)
        atomic_store_explicit(&s->held, 1, memory_order_relaxed);
    return rc == EBUSY ? EBUSY : -rc;
}

static int fl__lock(forklog *log)
{
    struct fl__seg *s = log->seg;
    int rc = pthread_mutex_trylock(&s->mu);
    /* Spin only while fewer waiters spin than there are other CPUs: a spinner beyond that only takes a CPU from
     * the holder. The counter is a hint; a process killed while spinning leaves it high, which only means less
     * spinning. */
    if (rc == EBUSY) {
        if (atomic_fetch_add_explicit(&s->spinners, 1, memory_order_relaxed) < log->max_spinners) {
            int64_t until = fl__mono_ns() + FL__SPIN_NS;
            for (unsigned i = 1; rc == EBUSY; i++) {
                fl__cpu_relax();
                if (!atomic_load_explicit(&s->held, memory_order_relaxed))
                    rc = pthread_mutex_trylock(&s->mu);
                if (rc == EBUSY && i % 16 == 0 && fl__mono_ns() > until)
                    break;
            }
        } else if (log->flags & FORKLOG_BUFFERED) {
            /* Buffered records hold the lock for ~0.1 us: a waiter that may not spin yields its CPU and tries
             * again, instead of a futex sleep and wake per record (5.5x -> 8-10x the floor at P=2..8 here). */
            int64_t until = fl__mono_ns() + FL__YIELD_NS;
            while (rc == EBUSY) {
                sched_yield();
                if (!atomic_load_explicit(&s->held, memory_order_relaxed))
                    rc = pthread_mutex_trylock(&s->mu);
                if (rc == EBUSY && fl__mono_ns() > until)
                    break;
            }
        }
        atomic_fetch_sub_explicit(&s->spinners, 1, memory_order_relaxed);
    }
    if (rc == EBUSY)
        rc = pthread_mutex_lock(&log->seg->mu);
    return fl__locked(log, rc);
}

static void fl__unlock(forklog *log)
{
    atomic_store_explicit(&log->seg->held, 0, memory_order_relaxed);
    pthread_mutex_unlock(&log->seg->mu);
}

/* ---- writing, with the lock held --------------------------------------------------------------------------- */

/* Writes all of iov to fd, looping on short writes and EINTR. Returns 0 or -errno. */
#define FL__IOV_MAX (FL__SLOTS + 4)

static int fl__write_all(int fd, const struct iovec *iov_in, int iovcnt)
{
    if (iovcnt == 1) {
        /* The usual case, one buffer: no iovec copy. */
        const char *p = iov_in->iov_base;
        size_t left = iov_in->iov_len;
        while (left > 0) {
            ssize_t n = write(fd, p, left);
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                return -errno;
            }
            if (n == 0)
                return -EIO;
            p += n;
            left -= (size_t)n;
        }
        return 0;
    }
    struct iovec iov[FL__IOV_MAX];
    if (iovcnt > FL__IOV_MAX)
        return -EINVAL;
    memcpy(iov, iov_in, sizeof iov[0] * (size_t)iovcnt);
    struct iovec *v = iov;
    while (iovcnt > 0) {
        ssize_t n = writev(fd, v, iovcnt);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            return -EIO; /* no progress with bytes left: never loop forever */
        size_t left = (size_t)n;
        while (iovcnt > 0 && left >= v->iov_len) {
            left -= v->iov_len;
            v++;
            iovcnt--;
        }
        if (iovcnt > 0) {
            v->iov_base = (char *)v->iov_base + left;
            v->iov_len -= left;
        }
    }
    return 0;
}

/* Writes len bytes that end whole records and commits them, or cuts the file back and fails. */
static int fl__write_commit(forklog *log, const struct iovec *iov, int iovcnt, size_t len, enum fl__state state)
{
    struct fl__seg *s = log->seg;
    s->target = s->size + len;
    s->state = state;
    int rc = fl__write_all(log->fd, iov, iovcnt);
    if (rc == 0 && (log->flags & FORKLOG_SYNC) && fdatasync(log->fd) < 0)
        rc = -errno;
    if (rc < 0) {
        /* Nothing of a failed record stays: cut back to the last whole record. */
        if (ftruncate(log->fd, (off_t)s->size) < 0)
            s->file_known = 0;
    } else {
        s->size = s->target;
        if (state == FL__FLUSHING)
            s->buf_used = 0;
    }
    s->state = FL__IDLE;
    return rc;
}

static int fl__flush_locked(forklog *log)
{
    struct fl__seg *s = log->seg;
    if (s->buf_used == 0)
        return 0;
    struct iovec iov = {s->buf, s->buf_used};
    return fl__write_commit(log, &iov, 1, s->buf_used, FL__FLUSHING);
}

/* Renames path to path.1 (path.1 to path.2, ...; path.keep is replaced) and starts a new file, which every
 * other process adopts before its next record. Lock held, buffer empty. */
static int fl__rotate(forklog *log)
{
    struct fl__seg *s = log->seg;
    size_t plen = strlen(log->path);
    char *from = malloc(2 * (plen + 16));
    if (!from)
        return -ENOMEM;
    char *to = from + plen + 16;
    s->state = FL__ROTATING;
    int moved = 0; /* path was renamed to path.1 (`to` after the loop) */
    for (unsigned i = log->rotate_keep; i >= 1; i--) {
        if (i > 1)
            snprintf(from, plen + 16, "%s.%u", log->path, i - 1);
        else
            memcpy(from, log->path, plen + 1);
        snprintf(to, plen + 16, "%s.%u", log->path, i);
        /* rename() replaces a symlink at `to` rather than following it. */
        int rc = rename(from, to);
        if (rc < 0 && errno != ENOENT && i == 1) {
            int err = -errno;
            s->state = FL__IDLE;
            free(from);
            return err;
        }
        moved = i == 1 && rc == 0;
    }
    /* O_EXCL | O_NOFOLLOW: the new file is ours, never a symlink planted at path. */
    int fd =
        open(log->path, O_WRONLY | O_APPEND | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY, (mode_t)log->mode);
    if (fd < 0 && errno == EEXIST) /* somebody created path since the rename: append to it, still no symlink */
        fd = open(log->path, O_WRONLY | O_APPEND | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
    if (fd < 0 && moved) {
        /* No new file (a symlink was planted at path after the rename, say). A new generation would make every
         * process reopen path by name, through that symlink. Put the old file back at path instead (rename()
         * replaces what is there, never follows it) and stay on it: nobody reopens. If even that fails, the
         * old file keeps the name path.1 until a later rotation succeeds. */
        int err = -errno;
        (void)rename(to, log->path);
        s->state = FL__IDLE;
        free(from);
        return err;
    }
    free(from);
    if (fd < 0) {
        int err = -errno;
        fl__new_generation(s);
        s->state = FL__IDLE;
        return err;
    }
    int old = log->fd;
    log->fd = fd;
    fl__new_generation(s);
    log->gen = s->gen;
    close(old);
    s->state = FL__IDLE;
    return fl__sync_file(log);
}

/* Rotates first when `len` more bytes would take the file past rotate_bytes. */
static int fl__maybe_rotate(forklog *log, size_t len)
{
    struct fl__seg *s = log->seg;
    if (!log->rotate_bytes || s->size == 0 || s->size + len <= log->rotate_bytes)
        return 0;
    return fl__rotate(log);
}

static int fl__append_buffered(forklog *log, const struct iovec *iov, int iovcnt, size_t len)
{
    struct fl__seg *s = log->seg;
    int64_t now = fl__mono_ns();
    int rc;
    /* Make room first; a buffer that is merely old is written below, together with this record. */
    int full = s->buf_used + len > s->buf_cap;
    int rotate = log->rotate_bytes && s->size + s->buf_used > 0 && s->size + s->buf_used + len > log->rotate_bytes;
    if ((full || rotate) && (rc = fl__flush_locked(log)) < 0)
        return rc;
    if ((rc = fl__maybe_rotate(log, len)) < 0)
        return rc;
    if (len > s->buf_cap)
        return fl__write_commit(log, iov, iovcnt, len, FL__WRITING);
    size_t o = s->buf_used;
    for (int i = 0; i < iovcnt; i++) {
        memcpy(s->buf + o, iov[i].iov_base, iov[i].iov_len);
        o += iov[i].iov_len;
    }
    if (s->buf_used == 0)
        s->buf_first_ns = now;
    /* One store publishes the record: a holder killed during the copy leaves buf_used as it was. */
    s->buf_used = o;
    if (now - s->buf_first_ns >= log->flush_ns || s->buf_used == s->buf_cap)
        (void)fl__flush_locked(log); /* the record is safe in the buffer; a failed flush is retried later */
    return 0;
}

/* Writes own[0..owncnt) (ownlen bytes) and every posted record in one writev(2), then marks those done with the
 * result. Lock held, file synced. */
static int fl__write_batch(forklog *log, const struct iovec *own, int owncnt, size_t ownlen)
{
    struct fl__seg *s = log->seg;
    struct iovec iov[FL__IOV_MAX];
    unsigned taken[FL__SLOTS];
    int n = 0, nt = 0;
    for (; n < owncnt; n++)
        iov[n] = own[n];
    size_t total = ownlen;
    s->batch_target = s->size; /* not reached until the write below commits */
    s->batch_open = 1;
    unsigned posted = atomic_load_explicit(&s->posted, memory_order_relaxed)
                          ? atomic_exchange_explicit(&s->posted, 0, memory_order_acquire)
                          : 0;
    for (unsigned k = 0; posted; k++, posted >>= 1) {
        struct fl__slot *sl = &s->slots[k];
        if (!(posted & 1) || atomic_load_explicit(&sl->state, memory_order_acquire) != FL__SLOT_POSTED)
            continue;
        atomic_store_explicit(&sl->state, FL__SLOT_TAKEN, memory_order_relaxed);
        iov[n].iov_base = sl->data;
        iov[n++].iov_len = sl->len;
        total += sl->len;
        taken[nt++] = k;
    }
    s->batch_target = s->size + total;
    int rc = fl__write_commit(log, iov, n, total, FL__WRITING);
    for (int i = 0; i < nt; i++) {
        struct fl__slot *sl = &s->slots[taken[i]];
        sl->rc = rc;
        atomic_store_explicit(&sl->state, FL__SLOT_DONE, memory_order_release);
    }
    s->combined += (uint64_t)nt;
    s->batch_open = 0;
    return rc;
}

/* Claims a free slot for this process; NULL when all are in use. Slots left by dead processes are taken back
 * here, when none is free (a poster killed at the wrong moment cannot free its own). */
static struct fl__slot *fl__slot_claim(forklog *log, int pid)
{
    struct fl__seg *s = log->seg;
    for (int pass = 0; pass < 2; pass++) {
        for (unsigned i = 0; i < FL__SLOTS; i++) {
            struct fl__slot *sl = &s->slots[((unsigned)pid + i) % FL__SLOTS];
            unsigned expect = FL__SLOT_FREE;
            if (atomic_compare_exchange_strong_explicit(&sl->state, &expect, FL__SLOT_FILLING, memory_order_acquire,
                                                        memory_order_relaxed)) {
                sl->owner = pid;
                return sl;
            }
            if (pass == 1 && (expect == FL__SLOT_DONE || expect == FL__SLOT_FILLING) && sl->owner > 0 &&
                kill(sl->owner, 0) < 0 && errno == ESRCH &&
                atomic_compare_exchange_strong(&sl->state, &expect, FL__SLOT_FILLING)) {
                sl->owner = pid;
                return sl;
            }
        }
    }
    return NULL;
}

/* Lock held: writes this record, with whatever is posted (uncontended, the usual case, nothing is: no batch to
 * gather), and unlocks. */
static int fl__write_own(forklog *log, const struct iovec *iov, int iovcnt, size_t len)
{
    int rc = fl__sync_file(log);
    if (rc == 0)
        rc = atomic_load_explicit(&log->seg->posted, memory_order_relaxed)
                 ? fl__write_batch(log, iov, iovcnt, len)
                 : fl__write_commit(log, iov, iovcnt, len, FL__WRITING);
    fl__unlock(log);
    return rc;
}

/* Direct mode with combining: take the lock and write this record with every posted one; or, if the lock is
 * taken, post the record and wait until a holder has written it, taking the lock itself when it frees. */
static int fl__append_combining(forklog *log, const struct iovec *iov, int iovcnt, size_t len)
{
    struct fl__seg *s = log->seg;
    int rc = fl__locked(log, pthread_mutex_trylock(&s->mu));
    if (rc < 0)
        return rc;
    if (rc == 0)
        return fl__write_own(log, iov, iovcnt, len);
    int pid = (int)fl__pid(log);
    struct fl__slot *mine = fl__slot_claim(log, pid);
    if (!mine) {
        /* Every slot in use: wait for the lock like the plain path. */
        if ((rc = fl__lock(log)) < 0)
            return rc;
        return fl__write_own(log, iov, iovcnt, len);
    }
    size_t o = 0;
    for (int i = 0; i < iovcnt; i++) {
        memcpy(mine->data + o, iov[i].iov_base, iov[i].iov_len);
        o += iov[i].iov_len;
    }
    mine->len = (uint32_t)len;
    atomic_store_explicit(&mine->state, FL__SLOT_POSTED, memory_order_release);
    atomic_fetch_or_explicit(&s->posted, 1u << (unsigned)(mine - s->slots), memory_order_release);

    /* Wait: spin (if a CPU is free for it) until the record is done or the lock frees, then sleep on the lock. */
    rc = EBUSY;
    if (atomic_fetch_add_explicit(&s->spinners, 1, memory_order_relaxed) < log->max_spinners) {
        int64_t until = fl__mono_ns() + FL__SPIN_NS;
        for (unsigned i = 1; rc == EBUSY; i++) {
            if (atomic_load_explicit(&mine->state, memory_order_acquire) == FL__SLOT_DONE)
                break;
            fl__cpu_relax();
            if (!atomic_load_explicit(&s->held, memory_order_relaxed))
                rc = fl__locked(log, pthread_mutex_trylock(&s->mu));
            if (rc == EBUSY && i % 16 == 0 && fl__mono_ns() > until)
                break;
        }
    }
    atomic_fetch_sub_explicit(&s->spinners, 1, memory_order_relaxed);
    if (rc == EBUSY && atomic_load_explicit(&mine->state, memory_order_acquire) != FL__SLOT_DONE)
        rc = fl__locked(log, pthread_mutex_lock(&s->mu));
    if (rc == 0) {
        /* With the lock held the slot is POSTED (nobody wrote it yet: write it now) or DONE. */
        if (atomic_load_explicit(&mine->state, memory_order_acquire) == FL__SLOT_POSTED) {
            int err = fl__sync_file(log);
            if (err == 0)
                fl__write_batch(log, NULL, 0, 0);
            else {
                mine->rc = err;
                atomic_store_explicit(&mine->state, FL__SLOT_DONE, memory_order_release);
            }
        }
        fl__unlock(log);
    } else if (rc < 0) {
        /* No lock: take the record back unless a holder has it already; then its result is the answer. */
        unsigned expect = FL__SLOT_POSTED;
        if (atomic_compare_exchange_strong(&mine->state, &expect, FL__SLOT_FREE))
            return rc;
        while (atomic_load_explicit(&mine->state, memory_order_acquire) != FL__SLOT_DONE)
            sched_yield();
    }
    rc = mine->rc;
    atomic_store_explicit(&mine->state, FL__SLOT_FREE, memory_order_release);
    return rc;
}

int fl__append(forklog *log, const struct iovec *iov, int iovcnt, size_t len)
{
    /* Combining keeps every promise of the plain path; rotation and the shared buffer keep the plain path. */
    if (!(log->flags & FORKLOG_BUFFERED) && !log->rotate_bytes && len <= FL__SLOT_CAP && iovcnt <= 4)
        return fl__append_combining(log, iov, iovcnt, len);
    int rc = fl__lock(log);
    if (rc < 0)
        return rc;
    rc = fl__sync_file(log);
    if (rc == 0) {
        if (log->flags & FORKLOG_BUFFERED)
            rc = fl__append_buffered(log, iov, iovcnt, len);
        else if ((rc = fl__maybe_rotate(log, len)) == 0)
            rc = fl__write_commit(log, iov, iovcnt, len, FL__WRITING);
    }
    fl__unlock(log);
    return rc;
}

/* ---- the public calls -------------------------------------------------------------------------------------- */

static int fl__check_options(const struct forklog_options *o)
{
    if (o->level != 0 && (o->level < FORKLOG_DEBUG || o->level > FORKLOG_ERROR))
        return -EINVAL;
    if (o->format != FORKLOG_FORMAT_TEXT && o->format != FORKLOG_FORMAT_JSON)
        return -EINVAL;
    if (o->mode > 07777)
        return -EINVAL;
    if (o->flags & ~(unsigned)(FORKLOG_SYNC | FORKLOG_BUFFERED))
        return -EINVAL;
    if (o->max_record != 0 && (o->max_record < FL__MIN_MAX_RECORD || o->max_record > FL__MAX_MAX_RECORD))
        return -EINVAL;
    if (o->rotate_keep > FL__MAX_KEEP)
        return -EINVAL;
    if (o->buffer_size != 0 && (o->buffer_size < FL__MIN_BUFFER || o->buffer_size > FL__MAX_BUFFER))
        return -EINVAL;
    return 0;
}

/* path made absolute against the current directory, so that a reopen after chdir() finds the same file. */
static char *fl__absolute(const char *path, int *err)
{
    size_t plen = strlen(path);
    if (path[0] == '/') {
        char *p = malloc(plen + 1);
        if (!p)
            *err = -ENOMEM;
        else
            memcpy(p, path, plen + 1);
        return p;
    }
    char *cwd = getcwd(NULL, 0);
    if (!cwd) {
        *err = -errno;
        return NULL;
    }
    size_t clen = strlen(cwd);
    char *p = malloc(clen + 1 + plen + 1);
    if (!p)
        *err = -ENOMEM;
    else {
        memcpy(p, cwd, clen);
        p[clen] = '/';
        memcpy(p + clen + 1, path, plen + 1);
    }
    free(cwd);
    return p;
}

/* The per-process page (struct fl__proc): private, and handed to a forked child zero-filled (MADV_WIPEONFORK,
 * Linux 4.14), so that nothing cached there is ever a parent's. NULL where the kernel or libc lacks it: the pid is
 * then asked for every record, and every process keeps the inherited descriptor. */
static struct fl__proc *fl__proc_new(size_t page)
{
#ifdef MADV_WIPEONFORK
    void *m = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return NULL;
    if (madvise(m, page, MADV_WIPEONFORK) < 0) {
        munmap(m, page);
        return NULL;
    }
    struct fl__proc *proc = m;
    atomic_init(&proc->pid, 0);
    proc->own_fd = 1; /* the opener's descriptor is its own until it forks */
    return proc;
#else
    (void)page;
    return NULL;
#endif
}

int forklog_open(forklog **out, const char *path, const struct forklog_options *opts)
{
    static const struct forklog_options defaults;
    if (out)
        *out = NULL;
    if (!out || !path || !path[0])
        return -EINVAL;
    if (!opts)
        opts = &defaults;
    int rc = fl__check_options(opts);
    if (rc < 0)
        return rc;

    char *abs = fl__absolute(path, &rc);
    if (!abs)
        return rc;
    size_t alen = strlen(abs);
    forklog *log = malloc(sizeof *log + alen + 1);
    if (!log) {
        free(abs);
        return -ENOMEM;
    }
    memcpy(log->path, abs, alen + 1);
    free(abs);
    log->level = opts->level ? opts->level : FORKLOG_INFO;
    log->format = opts->format;
    log->mode = opts->mode ? opts->mode : 0644;
    log->flags = opts->flags;
    log->max_record = opts->max_record ? opts->max_record : FL__DEFAULT_MAX_RECORD;
    log->rotate_bytes = opts->rotate_bytes;
    log->rotate_keep = opts->rotate_keep ? opts->rotate_keep : FL__DEFAULT_KEEP;
    log->flush_ns = (int64_t)(opts->flush_ms ? opts->flush_ms : FL__DEFAULT_FLUSH_MS) * 1000000;
    size_t buf_cap = 0;
    if (opts->flags & FORKLOG_BUFFERED)
        buf_cap = opts->buffer_size ? opts->buffer_size : FL__DEFAULT_BUFFER;

    log->fd = open(log->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, (mode_t)log->mode);
    if (log->fd < 0) {
        rc = -errno;
        free(log);
        return rc;
    }
    struct stat st;
    if (fstat(log->fd, &st) < 0) {
        rc = -errno;
        goto fail_fd;
    }

    long page = sysconf(_SC_PAGESIZE);
    size_t pg = page > 0 ? (size_t)page : 4096;
    log->seg_len = (sizeof(struct fl__seg) + buf_cap + pg - 1) / pg * pg;
    void *m = mmap(NULL, log->seg_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
        rc = -errno;
        goto fail_fd;
    }
    struct fl__seg *s = m; /* mmap zero-fills */
    pthread_mutexattr_t attr;
    if ((rc = pthread_mutexattr_init(&attr)) != 0) {
        rc = -rc;
        goto fail_map;
    }
    rc = pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    if (rc == 0)
        rc = pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    if (rc == 0)
        rc = pthread_mutex_init(&s->mu, &attr);
    pthread_mutexattr_destroy(&attr);
    if (rc != 0) {
        rc = -rc;
        goto fail_map;
    }
    s->size = (uint64_t)st.st_size;
    s->ino = (uint64_t)st.st_ino;
    s->dev = (uint64_t)st.st_dev;
    s->gen = 1;
    s->file_known = 1;
    s->buf_cap = buf_cap;
    atomic_init(&s->reopen_req, 0);
    log->gen = 1;
    log->seg = s;
    log->proc = fl__proc_new(pg);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    log->max_spinners = cpus > 1 ? (unsigned)cpus - 1 : 0;
    *out = log;
    return 0;

fail_map:
    munmap(m, log->seg_len);
fail_fd:
    close(log->fd);
    free(log);
    return rc;
}

static int fl__cut_result(size_t cut)
{
    return cut > (size_t)INT_MAX ? INT_MAX : (int)cut;
}

int forklog_write(forklog *log, const void *record, size_t len)
{
    if (!log || (!record && len))
        return -EINVAL;
    const char *rec = record;
    int need_nl = len == 0 || rec[len - 1] != '\n';
    struct iovec iov[3];
    iov[0].iov_base = (void *)(uintptr_t)rec;
    iov[0].iov_len = len;
    iov[1].iov_base = (void *)(uintptr_t) "\n";
    iov[1].iov_len = 1;
    if (len <= log->max_record - (size_t)need_nl) {
        /* A small record that needs its newline is copied: one write(2) is ~150 ns cheaper than writev(2). */
        char small[512];
        if (need_nl && len < sizeof small) {
            if (len)
                memcpy(small, rec, len); /* rec may be NULL when len is 0 */
            small[len] = '\n';
            iov[0].iov_base = small;
            iov[0].iov_len = len + 1;
            return fl__append(log, iov, 1, len + 1);
        }
        return fl__append(log, iov, 1 + need_nl, len + (size_t)need_nl);
    }

    /* Too long: keep what fits before the marker, whose width depends on the count it reports. */
    char marker[64];
    size_t keep = log->max_record, cut = 0;
    int mlen = 0;
    for (int pass = 0; pass < 3; pass++) {
        cut = len - keep;
        mlen = snprintf(marker, sizeof marker, " [forklog: %zu bytes cut]\n", cut);
        keep = log->max_record - (size_t)mlen;
    }
    cut = len - keep;
    mlen = snprintf(marker, sizeof marker, " [forklog: %zu bytes cut]\n", cut);
    iov[0].iov_len = keep;
    iov[1].iov_base = marker;
    iov[1].iov_len = (size_t)mlen;
    int rc = fl__append(log, iov, 2, keep + (size_t)mlen);
    return rc < 0 ? rc : fl__cut_result(cut);
}

/* Builds the record into a stack buffer when it fits, else the heap, and appends it. */
static int fl__emit(forklog *log, enum forklog_level level, const struct timespec *now, const char *msg, size_t msglen,
                    size_t msg_total, const struct fl__field *fields, size_t nfields)
{
    char stack[FL__STACK_RECORD];
    size_t cap = fl__build_bound(msglen, fields, nfields);
    if (cap > log->max_record)
        cap = log->max_record;
    char *out = stack;
    if (cap > sizeof stack && !(out = malloc(cap)))
        return -ENOMEM;
    size_t cut;
    size_t len = fl__build(log, level, now, msg, msglen, msg_total, fields, nfields, out, cap, &cut);
    struct iovec iov = {out, len};
    int rc = fl__append(log, &iov, 1, len);
    if (out != stack)
        free(out);
    return rc < 0 ? rc : fl__cut_result(cut);
}

static int fl__level_ok(const forklog *log, enum forklog_level level, int *rc)
{
    if (!log || level < FORKLOG_DEBUG || level > FORKLOG_ERROR) {
        *rc = -EINVAL;
        return 0;
    }
    *rc = 0;
    return level >= log->level;
}

int forklog_vlog(forklog *log, enum forklog_level level, const char *fmt, va_list ap)
{
    int rc;
    if (!fmt)
        return -EINVAL;
    if (!fl__level_ok(log, level, &rc))
        return rc;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    const int json = log->format == FORKLOG_FORMAT_JSON;

    /* Fast path: format the message straight after the prefix; if it fits and needs no escaping, that buffer
     * is the record. One pass, no copy. */
    char out[FL__STACK_RECORD];
    size_t cap = log->max_record < sizeof out ? log->max_record : sizeof out;
    size_t p = fl__prefix(log, level, &now, out);
    size_t close = json ? 3 : 1; /* `"}\n` or `\n` */
    size_t room = cap - p - close;
    va_list again;
    va_copy(again, ap);
    int n = -1;
    const char *str_arg = NULL;
    if (fmt[0] == '%' && fmt[1] == 's' && fmt[2] == '\0') {
        /* The commonest format of all, "%s": a copy, without the printf machinery (~60 ns per record). */
        va_list peek;
        va_copy(peek, ap);
        const char *str = va_arg(peek, const char *);
        va_end(peek);
        if (str) {
            size_t sl = strnlen(str, room + 1);
            if (sl <= room)
                memcpy(out + p, str, sl);
            else if ((sl = strlen(str)) > INT_MAX)
                sl = INT_MAX;
            n = (int)sl;
            str_arg = sl <= room ? NULL : str;
        }
    }
    if (n < 0)
        n = vsnprintf(out + p, room + 1, fmt, ap);
    if (n < 0) {
        va_end(again);
        return -EINVAL;
    }
    if ((size_t)n <= room && !fl__needs_escape(json, out + p, (size_t)n)) {
        va_end(again);
        size_t len = p + (size_t)n;
        if (json) {
            out[len++] = '"';
            out[len++] = '}';
        }
        out[len++] = '\n';
        struct iovec iov = {out, len};
        return fl__append(log, &iov, 1, len);
    }

    /* Slow path: the whole message (up to max_record bytes of it), then escaping and cutting. */
    const char *msg = out + p;
    size_t total = (size_t)n, msglen = total;
    char *heap = NULL;
    if (total > room && str_arg) {
        /* "%s" with a long string: the string is the message; nothing to format or copy. */
        msg = str_arg;
        msglen = total < log->max_record ? total : log->max_record;
    } else if (total > room) {
        size_t want = total < log->max_record ? total : log->max_record;
        if (!(heap = malloc(want + 1))) {
            va_end(again);
            return -ENOMEM;
        }
        vsnprintf(heap, want + 1, fmt, again);
        msg = heap;
        msglen = want;
    } else {
        /* The message sits where the record will be built: move it aside first. */
        if (!(heap = malloc(total + 1))) {
            va_end(again);
            return -ENOMEM;
        }
        memcpy(heap, out + p, total);
        msg = heap;
    }
    va_end(again);
    if (msglen == total && p + total + close <= log->max_record && !fl__needs_escape(json, msg, total)) {
        /* A long message with nothing to escape: prefix, message and suffix go out as they are, in one
         * writev(2), with no copy of the message. */
        struct iovec iov[3] = {
            {out, p}, {(void *)(uintptr_t)msg, total}, {(void *)(uintptr_t)(json ? "\"}\n" : "\n"), close}};
        rc = fl__append(log, iov, 3, p + total + close);
    } else {
        rc = fl__emit(log, level, &now, msg, msglen, total, NULL, 0);
    }
    free(heap);
    return rc;
}

int forklog_log(forklog *log, enum forklog_level level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = forklog_vlog(log, level, fmt, ap);
    va_end(ap);
    return rc;
}

int fl__log_fields(forklog *log, enum forklog_level level, const char *msg, const struct fl__field *fields,
                   size_t nfields)
{
    int rc;
    if (!msg)
        return -EINVAL;
    if (!fl__level_ok(log, level, &rc))
        return rc;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    size_t len = strlen(msg);
    return fl__emit(log, level, &now, msg, len, len, fields, nfields);
}

int forklog_flush(forklog *log)
{
    if (!log)
        return -EINVAL;
    if (!(log->flags & FORKLOG_BUFFERED))
        return 0;
    int rc = fl__lock(log);
    if (rc < 0)
        return rc;
    rc = fl__sync_file(log);
    if (rc == 0)
        rc = fl__flush_locked(log);
    fl__unlock(log);
    return rc;
}

int forklog_reopen(forklog *log)
{
    if (!log)
        return -EINVAL;
    atomic_fetch_add_explicit(&log->seg->reopen_req, 1, memory_order_release);
    return 0;
}

int forklog_close(forklog *log)
{
    if (!log)
        return 0;
    int rc = forklog_flush(log);
    munmap(log->seg, log->seg_len);
    if (log->proc) {
        long page = sysconf(_SC_PAGESIZE);
        munmap(log->proc, page > 0 ? (size_t)page : 4096);
    }
    if (close(log->fd) < 0 && rc == 0)
        rc = -errno;
    free(log);
    return rc;
}
