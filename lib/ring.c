/* SPDX-License-Identifier: MIT */
/*
 * The lock-free buffer: FORKLOG_BUFFERED appends that take no lock.
 *
 * Each writer thread owns a ring in the shared segment (claimed once, with a compare-and-swap of its owner word).
 * An append copies the record at the ring's head and publishes it with one release store of head: no lock, no
 * read-modify-write, no system call. Whoever flushes holds the lock, takes the heads of the rings it writes (the
 * plan), writes all the data between their tails and the planned heads in one writev(2) under the usual
 * state/target repair, and then moves the tails: space for the owners again. An owner writes its own ring when it
 * holds more than half of it and nobody holds the lock (the other half takes records meanwhile, so writers keep
 * appending beside a flush), and when the ring has no room for a record (waiting for the lock). Every ring is
 * written when the oldest unwritten record is older than flush_ms (every append compares the clock with one
 * shared due time), on forklog_flush() and on forklog_close().
 *
 * What a death leaves: a writer killed while copying never published its record (head did not move), so nothing
 * of it is ever written; its published records stay in its ring and are written by the next flush; its ring is
 * taken back when a writer finds none free. A flusher killed after planning leaves ring_phase PLANNED and
 * ring_target, and the next lock holder moves the tails if the file repair kept the write (fl__repair_rings), so
 * no record is written twice or lost. If every process dies, the rings stay in the segment file and the next
 * forklog_open() writes them (fl__recover).
 *
 * Order: the records of one thread are written in the order of its calls; records of different threads are
 * written ring by ring within a flush, not in the order of their calls.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifdef CLOCK_MONOTONIC_COARSE
#define FL__COARSE_CLOCK CLOCK_MONOTONIC_COARSE /* a few ns through the vDSO; its step: see fl__due_clock */
#else
#define FL__COARSE_CLOCK CLOCK_MONOTONIC
#endif

static int64_t fl__coarse_ns(void)
{
    struct timespec ts;
    clock_gettime(FL__COARSE_CLOCK, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The coarse clock's step (a tick of the kernel: 1 to 10 ms), read by every open before its first record (0 before
 * any: the coarse clock alone, as if it had no step). */
static atomic_llong fl__coarse_step;

void fl__ring_clock_init(void)
{
    struct timespec r;
    long long ns = clock_getres(FL__COARSE_CLOCK, &r) == 0 ? (long long)r.tv_sec * 1000000000 + r.tv_nsec : 10000000;
    atomic_store_explicit(&fl__coarse_step, ns > 0 ? ns : 1, memory_order_relaxed);
}

/* The clock of the age bound: a time no later than now, and in *late how much later now may be. The coarse clock
 * lags the real time by up to a step, so a due time compared with it alone would be passed a step late: with
 * flush_ms 1 and a 4 ms tick, records waited 4 ms. A due time is therefore set from the time returned and compared
 * with that time plus *late, which flushes up to a step early, never late. Where flush_ms is within a few steps,
 * that would flush at almost every call: the exact clock is read instead (*late 0). */
#ifdef __GNUC__
__attribute__((always_inline))
#endif
static inline int64_t
fl__due_clock(const forklog *log, int64_t *late)
{
    const int64_t step = atomic_load_explicit(&fl__coarse_step, memory_order_relaxed);
    if (log->flush_ns < 8 * step) {
        *late = 0;
        return fl__mono_ns();
    }
    *late = step;
    return fl__coarse_ns();
}

/* Linux's fallocate(2) (glibc and musl), declared only under _GNU_SOURCE. With a 64-bit off_t on a 32-bit glibc
 * (_FILE_OFFSET_BITS=64), the function that takes one is fallocate64. */
#if defined(__GLIBC__) && defined(__USE_FILE_OFFSET64)
int fallocate64(int fd, int mode, off_t offset, off_t len);
#define fl__fallocate fallocate64
#else
int fallocate(int fd, int mode, off_t offset, off_t len);
#define fl__fallocate fallocate
#endif

/* Whether ring k may be written: its bytes have blocks in the segment file. The rings are sparse (64 of them, most
 * never used), and a store into a page of a MAP_SHARED mapping that has no block must allocate one: on a full file
 * system the kernel answers with SIGBUS, which would kill the writer where its call must fail with -ENOSPC. So a
 * thread that takes a ring reserves the ring's blocks first, once per ring and handle: blocks, once had, stay while
 * the segment file is mapped (nothing shortens it or punches holes in it then), so a ring taken again, by the next
 * thread of a program that starts one per request, costs nothing more. fallocate(2) itself, not posix_fallocate():
 * where the file system cannot reserve blocks (ext2 and ext3 files, ramfs, most FUSE file systems), glibc's
 * posix_fallocate() writes a byte into every block instead, which takes milliseconds per ring of a few MiB, fills the
 * disk with rings (up to 64 x buffer_size, which may be larger than the disk) that a sparse ring would never use,
 * and, on a full ext file system, still leaves a store into the ring to SIGBUS. Such a file system is used as
 * before: the ring stays sparse. A private segment is anonymous memory: nothing to reserve. */
static int fl__ring_backed(forklog *log, unsigned k)
{
    if (log->seg_fd < 0 || (atomic_load_explicit(&log->rings_backed, memory_order_relaxed) >> k & 1))
        return 1;
    off_t off = (off_t)(fl__ring_data(log, k) - (const unsigned char *)log->seg);
    int rc;
    while ((rc = fl__fallocate(log->seg_fd, 0, off, (off_t)log->ring_cap)) < 0 && errno == EINTR)
        ;
    if (rc == 0)
        atomic_fetch_or_explicit(&log->rings_backed, 1ull << k, memory_order_relaxed);
    return rc == 0 || errno == EOPNOTSUPP || errno == EINVAL || errno == ENOSYS;
}

/* The start of a small file (of /proc), at most cap - 1 bytes, NUL-terminated in buf. 0 if it cannot be read. */
static int fl__read_head(const char *path, char *buf, size_t cap)
{
    const int cancel = fl__nocancel(); /* between the open() and the close() */
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd < 0 ? -1 : read(fd, buf, cap - 1);
    if (fd >= 0)
        close(fd);
    fl__cancel_back(cancel);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    return 1;
}

/* fl__proc_line, with thread cancellation put off between its open() and its close() (fl__nocancel). */
static int fl__proc_line_now(const char *path, const char *key, char *line, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    char buf[4096];
    const size_t klen = strlen(key);
    size_t have = 0;
    int found = 0;
    for (;;) {
        ssize_t n = read(fd, buf + have, sizeof buf - 1 - have);
        if (n <= 0)
            break;
        have += (size_t)n;
        buf[have] = '\0';
        char *at = strstr(buf, key);
        if (at) {
            const char *end = strchr(at + klen, '\n');
            if (end) {
                size_t len = (size_t)(end + 1 - (at + klen));
                if (len < cap) {
                    memcpy(line, at + klen, len);
                    line[len] = '\0';
                    found = 1;
                }
                break;
            }
            /* The line goes on in the next piece: keep it from its start. */
            have -= (size_t)(at - buf);
            memmove(buf, at, have);
            if (have == sizeof buf - 1)
                break; /* a line longer than the buffer */
            continue;
        }
        /* The key may begin at the end of this piece and end in the next one. */
        size_t keep = have < klen - 1 ? have : klen - 1;
        memmove(buf, buf + have - keep, keep);
        have = keep;
    }
    close(fd);
    return found;
}

/* The line of a /proc file that begins with `key` (which starts with '\n'), from the end of the key to its newline
 * included, NUL-terminated in line (cap bytes). 0 if the file has none, cannot be read, or the line does not fit.
 * The file is read in pieces of a page: a line may come after many kilobytes (in /proc/PID/status, the Groups line
 * of a process in a few hundred groups pushes NSpid past the first 4 KiB). */
static int fl__proc_line(const char *path, const char *key, char *line, size_t cap)
{
    const int cancel = fl__nocancel();
    int found = fl__proc_line_now(path, key, line, cap);
    fl__cancel_back(cancel);
    return found;
}

/* Whether /proc numbers processes as this process's PID namespace does: a /proc mounted for another namespace (an
 * ancestor's: `unshare --pid --fork` without --mount-proc) shows, under a number, another process. Then the NSpid
 * line of this process's own status holds its pid in each namespace from that one down: more than one number, or
 * another number than getpid(). */
static int fl__proc_is_ours(void)
{
    char line[256];
    if (!fl__proc_line("/proc/self/status", "\nNSpid:", line, sizeof line))
        return 0;
    char *end;
    long first = strtol(line, &end, 10);
    while (*end == ' ' || *end == '\t')
        end++;
    return first == (long)getpid() && *end == '\n';
}

/* Whether the thread that owns a ring is gone (its process, or just the thread). A process's main thread that
 * ended with pthread_exit() stays a zombie, which tgkill() still finds, until the whole process ends: it is gone
 * when /proc says its state is Z, read only where /proc shows this process's PID namespace. */
static int fl__owner_gone(uint64_t owner)
{
    const long pid = FL__OWNER_PID(owner), tid = FL__OWNER_TID(owner);
    if (syscall(SYS_tgkill, pid, tid, 0) < 0)
        return errno == ESRCH;
    if (pid != tid || !fl__proc_is_ours())
        return 0;
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%ld/task/%ld/stat", pid, tid);
    if (!fl__read_head(path, buf, sizeof buf))
        return 0;
    const char *end = strrchr(buf, ')'); /* "pid (comm) S ...": comm may hold any byte but the last ')' */
    return end && end[1] == ' ' && end[2] == 'Z';
}

int fl__rings_pending(const struct fl__seg *s)
{
    for (unsigned k = 0; k < FL__RINGS; k++)
        if (atomic_load_explicit(&s->rings[k].head, memory_order_acquire) !=
            atomic_load_explicit(&s->rings[k].tail, memory_order_acquire))
            return 1;
    return 0;
}

/* Writes what ring `only` holds, or every ring (only < 0), in one writev(2). Lock held, file synced. */
static int fl__flush_some(forklog *log, int only)
{
    struct fl__seg *s = log->seg;
    const size_t cap = log->ring_cap;
    if (!cap)
        return 0;
    struct iovec iov[2 * FL__RINGS];
    int n = 0;
    size_t total = 0;
    int64_t late;
    int64_t planned_at = only < 0 ? fl__due_clock(log, &late) : 0;
plan:
    n = 0;
    total = 0;
    /* A flush to a stream that failed after part of it went out left the rest of a record at the tail of one ring,
     * which flush_rest names (fl__drop_sent). That rest must follow its first part in the stream before anything else,
     * or a record of another ring (or one written at once after this flush) would cut it in two, glued to its first
     * part: that ring is written first, whichever ring this flush is for. A regular file keeps no such rest (a failed
     * write is cut back), and its rings are written in their order. */
    const uint32_t rest_at =
        atomic_load_explicit(&s->regular, memory_order_relaxed) ? 0 : s->flush_rest & ~FL__REST_LINE_END;
    const int rest = rest_at >= 1 && rest_at <= FL__RINGS; /* more only in a damaged segment: no rest */
    const unsigned cut = rest ? rest_at - 1 : FL__RINGS;
    log->ring_first = rest ? cut : 0;
    for (unsigned i = 0; i < FL__RINGS; i++) {
        const unsigned k = fl__ring_at(log->ring_first, i);
        struct fl__ring *r = &s->rings[k];
        uint64_t t = atomic_load_explicit(&r->tail, memory_order_relaxed);
        uint64_t h = only < 0 || (unsigned)only == k || (rest && k == cut)
                         ? atomic_load_explicit(&r->head, memory_order_acquire)
                         : t;
        if (h - t > cap) {
            /* Only a damaged segment holds more than a ring (or a tail past the head): what it says is not
             * written, and the ring starts again empty. */
            atomic_store_explicit(&r->tail, h, memory_order_release);
            t = h;
        }
        r->planned = h;
        if (h == t)
            continue;
        /* The data between tail and head, in one or two pieces (the ring wraps). */
        unsigned char *d = fl__ring_data(log, k);
        size_t off = (size_t)(t % cap), len = (size_t)(h - t);
        size_t first = len < cap - off ? len : cap - off;
        iov[n].iov_base = d + off;
        iov[n++].iov_len = first;
        if (first < len) {
            iov[n].iov_base = d;
            iov[n++].iov_len = len - first;
        }
        total += len;
    }
    /* Every record appended before planned_at is written once this returns 0: the next look is due flush_ns
     * after it. One ring alone leaves the due time as it is: the other rings' records still need it; so does a
     * guest's flush, whose clock is not the owners'. */
    const int due_moves = only < 0 && !(log->flags & FL__GUEST);
    if (total == 0) {
        if (due_moves)
            atomic_store_explicit(&s->due_ns, planned_at + log->flush_ns, memory_order_relaxed);
        return 0;
    }
    /* The file was synced when the lock was taken, and a record planned above may have been appended after a
     * forklog_reopen() that returned since (the flusher's sync came first): that record must go to the file at path,
     * never to the one renamed away. The reopen was counted before the record was published, so the acquire of its
     * head above makes it visible here (as the slot's acquire does for combining). Before ring_target, which counts
     * from the new file's size. A failed sync writes nothing: the records stay in their rings. */
    if (log->path[0] && atomic_load_explicit(&s->reopen_req, memory_order_acquire) != s->reopen_seen) {
        int rc = fl__sync_file(log);
        if (rc < 0)
            return rc;
        /* The move may have dropped the rest of a record from a ring (fl__drop_rest), or ended what the rest was
         * written first for: planned again, on the new file. */
        goto plan;
    }
    s->ring_target = s->size + total;
    FL__CRASH(RING_TARGET);
    FL__STEP(s->ring_phase, FL__RINGS_PLANNED);
    FL__CRASH(RING_PLANNED);
    int rc = fl__write_commit(log, iov, n, total, FL__FLUSHING);
    if (rc == 0) {
        fl__repair_rings(s); /* the same step as after a death: the tails move to the plan, phase IDLE */
        if (due_moves)
            atomic_store_explicit(&s->due_ns, planned_at + log->flush_ns, memory_order_relaxed);
    } else {
        FL__STEP(s->ring_phase, FL__RINGS_IDLE); /* nothing written: the tails stay */
    }
    return rc;
}

void fl__drop_rest(forklog *log)
{
    struct fl__seg *s = log->seg;
    const uint32_t fr = s->flush_rest;
    const size_t cap = log->ring_cap;
    if (!(fr & FL__REST_DROPPING)) {
        /* The rest is the ring's bytes from its tail to the first newline. The shared buffer's (FL__RINGS + 1)
         * stays: its front cannot be taken off in a step that a death leaves either done or undone. A ring whose
         * part that went out ended a line (FL__REST_LINE_END) holds no rest: its records stay, whole. */
        if (fr >= 1 && fr <= FL__RINGS && cap) {
            struct fl__ring *r = &s->rings[fr - 1];
            const uint64_t t = atomic_load_explicit(&r->tail, memory_order_relaxed);
            const uint64_t h = atomic_load_explicit(&r->head, memory_order_acquire);
            const unsigned char *d = fl__ring_data(log, fr - 1);
            uint64_t e = t;
            while (e != h && e - t < cap && d[e % cap] != '\n')
                e++;
            /* Where the rest ends is kept where no step before the next flush's plan looks (the ring's plan was
             * given up when that flush failed), then the mark: a holder killed from here on leaves the drop for the
             * next one to finish, to the same place, however often it is done again. */
            r->planned = e != h && e - t < cap ? e + 1 : t;
            FL__STEP(s->flush_rest, fr | FL__REST_DROPPING);
            FL__CRASH(REST_MARKED);
        }
    }
    const uint32_t k = (s->flush_rest & ~FL__REST_DROPPING) - 1;
    if ((s->flush_rest & FL__REST_DROPPING) && k < FL__RINGS) {
        struct fl__ring *r = &s->rings[k];
        atomic_store_explicit(&r->tail, r->planned, memory_order_release);
        FL__CRASH(REST_DROPPED);
    }
    FL__STEP(s->flush_rest, 0);
}

int fl__flush_rings(forklog *log)
{
    return fl__flush_some(log, -1);
}

void fl__repair_rings(struct fl__seg *s)
{
    if (s->ring_phase != FL__RINGS_PLANNED)
        return;
    /* The due time stays: it covers every record not written yet (see fl__ring_append). A ring that was not in
     * the plan was planned at its tail, so its tail stays too. */
    if (s->size == s->ring_target) {
        for (unsigned k = 0; k < FL__RINGS; k++)
            atomic_store_explicit(&s->rings[k].tail, s->rings[k].planned, memory_order_release);
        s->flush_rest = 0; /* the rest of a record cut short was in the plan (fl__flush_some), and counts as written */
        FL__CRASH(RING_RELEASED);
    }
    FL__STEP(s->ring_phase, FL__RINGS_IDLE);
}

/* Lock held: writes out ring `only` or every ring (only < 0), then, after an append that could not use a ring,
 * the record; unlocks. */
static int fl__rings_out(forklog *log, int only, const struct iovec *iov, int iovcnt, size_t len)
{
    int rc = fl__sync_file(log);
    if (rc == 0)
        rc = fl__flush_some(log, only);
    if (rc == 0 && iov)
        rc = fl__write_commit(log, iov, iovcnt, len, FL__WRITING);
    fl__unlock(log);
    return rc;
}

int fl__rings_due(forklog *log)
{
    int64_t late, now = fl__due_clock(log, &late);
    if (!(log->flags & FL__GUEST)) {
        /* 0: no ring append has set it yet, or the one that would have died after publishing its record. */
        long long due = atomic_load_explicit(&log->seg->due_ns, memory_order_relaxed);
        return due ? now + late >= due : fl__rings_pending(log->seg);
    }
    /* A guest's clock is not the due time's: it writes the rings at its first record and then once flush_ms has
     * passed on its own clock since it last did (monotonic clocks of any namespace run at the same rate). */
    struct fl__proc *p = log->proc;
    if (p && now + late < p->guest_due_ns)
        return 0;
    if (p)
        p->guest_due_ns = now + log->flush_ns;
    return 1;
}

/* Takes the lock, waiting for it, writes out ring `only` (none: FL__RINGS), or every ring when they are due (the
 * age bound holds on this path too), and then the record. */
static int fl__write_now(forklog *log, int only, const struct iovec *iov, int iovcnt, size_t len)
{
    int rc = fl__lock(log);
    if (rc < 0)
        return rc;
    return fl__rings_out(log, fl__rings_due(log) ? -1 : only, iov, iovcnt, len);
}

/* The due time `due` has passed (0: none was set, and another ring holds a record): writes out every ring, unless
 * another writer did since (it moved the due time). */
static void fl__flush_due(forklog *log, int64_t due)
{
    if (fl__lock(log) < 0)
        return;
    if (atomic_load_explicit(&log->seg->due_ns, memory_order_relaxed) == due)
        (void)fl__rings_out(log, -1, NULL, 0, 0); /* the records are safe in their rings: a failure is retried */
    else
        fl__unlock(log);
}

/* Past half a ring: writes it out if nobody holds the lock. Out of line: the append's own path stays small. */
__attribute__((noinline)) static void fl__flush_early(forklog *log, unsigned k, struct fl__mine *my)
{
    struct fl__seg *s = log->seg;
    /* With every other ring empty no writer appends beside this one: flushing early would only make the writes
     * smaller (measured: 7% fewer records/s for a lone writer). Look again once the ring is full. */
    unsigned j = 0;
    while (j < FL__RINGS && (j == k || atomic_load_explicit(&s->rings[j].head, memory_order_relaxed) ==
                                           atomic_load_explicit(&s->rings[j].tail, memory_order_relaxed)))
        j++;
    if (j == FL__RINGS)
        my->alone = 1;
    else if (!atomic_load_explicit(&s->held, memory_order_relaxed) && fl__trylock(log) == 0)
        (void)fl__rings_out(log, (int)k, NULL, 0, 0);
}

/* Frees the rings of threads that are gone, after writing what they hold (nothing is written when every owner
 * lives). A ring is freed only as it was first seen, empty, and with its owner still gone when the lock is held:
 * meanwhile its pid and tid may have come back (a pid reused) to a thread that took the ring (its tag moved, so
 * the compare-and-swap below fails) or claimed it fresh after another freer (alive, so not gone). */
static void fl__reclaim_rings(forklog *log)
{
    struct fl__seg *s = log->seg;
    unsigned long long gone[FL__RINGS];
    int any = 0;
    for (unsigned k = 0; k < FL__RINGS; k++) {
        gone[k] = atomic_load_explicit(&s->rings[k].owner, memory_order_acquire);
        if (gone[k] && !fl__owner_gone(gone[k]))
            gone[k] = 0;
        any |= gone[k] != 0;
    }
    if (!any || fl__lock(log) < 0)
        return;
    if (fl__sync_file(log) == 0 && fl__flush_rings(log) == 0) {
        for (unsigned k = 0; k < FL__RINGS; k++) {
            struct fl__ring *r = &s->rings[k];
            unsigned long long owner = gone[k];
            if (owner && atomic_load_explicit(&r->owner, memory_order_acquire) == owner &&
                atomic_load_explicit(&r->head, memory_order_acquire) ==
                    atomic_load_explicit(&r->tail, memory_order_acquire) &&
                fl__owner_gone(owner)) {
                FL__CRASH(RING_OWNER_GONE);
                atomic_compare_exchange_strong(&r->owner, &owner, 0);
            }
        }
    }
    fl__unlock(log);
}

/* The handle's ring key in this process, chosen at its first use here: a number this process never gave before,
 * and higher than any its forked ancestors gave before they forked (the counter is copied by fork()). */
static uint64_t fl__ring_key(struct fl__proc *p)
{
    static atomic_ullong keys;
    unsigned long long key = atomic_load_explicit(&p->ring_key, memory_order_relaxed);
    if (!key) {
        unsigned long long mine = atomic_fetch_add_explicit(&keys, 1, memory_order_relaxed) + 1;
        key = atomic_compare_exchange_strong(&p->ring_key, &key, mine) ? mine : key;
    }
    return key;
}

/* The calling thread's pid and tid as an owner word's (tag 0); 0 if they do not fit, and then it takes no ring. */
static uint64_t fl__me(forklog *log)
{
    unsigned long pid = (unsigned long)fl__pid_inline(log), tid = (unsigned long)syscall(SYS_gettid);
    return pid >> 22 || tid >> 22 ? 0 : (uint64_t)pid << 22 | tid;
}

/* Makes ring k (FL__RINGS: none) the calling thread's ring of the handle whose key is `key`. A ring of another
 * handle that it had is remembered: it stays this thread's as long as the thread lives. */
static struct fl__ring *fl__ring_mine(forklog *log, struct fl__mine *my, uint64_t key, unsigned k)
{
    if (my->key != key && my->ring < FL__RINGS) {
        my->other_key = my->key;
        my->other_ring = my->ring;
    }
    my->key = key;
    my->ring = k;
    my->head = UINT64_MAX;
    return k < FL__RINGS ? &log->seg->rings[k] : NULL;
}

/* The ring this thread owns in this segment (records of its own may wait there), found without claiming one;
 * FL__RINGS if none. A ring found by its pid and tid alone may be a gone namesake's: it is only written. */
static unsigned fl__owned_ring(forklog *log, struct fl__mine *my)
{
    struct fl__proc *p = log->proc;
    uint64_t key = p ? atomic_load_explicit(&p->ring_key, memory_order_relaxed) : 0;
    /* A cached "none" is not an answer: the thread may own a ring all the same (one it took back by its pid and tid
     * but could not back, see fl__find_ring), in which its records wait. */
    if (key == my->key && my->ring < FL__RINGS)
        return my->ring;
    if (key == my->other_key)
        return my->other_ring;
    uint64_t me = fl__me(log); /* a handle without the page too: another handle of the thread may have a ring */
    for (unsigned k = 0; me && k < FL__RINGS; k++)
        if ((atomic_load_explicit(&log->seg->rings[k].owner, memory_order_acquire) & FL__OWNER_ID) == me)
            return k;
    return FL__RINGS;
}

/* The calling thread's ring when its cache has none for this handle and process: the ring it had before (the
 * handle before), a ring bearing its pid and tid, a free one, or one taken back from a gone thread. NULL when
 * every ring is in use (looked for again after flush_ms, not at every append: a look that finds none asks after
 * every owner and may take the lock), and in a process without a per-process page, which could not tell its
 * cache from an ancestor's. */
__attribute__((noinline)) static struct fl__ring *fl__find_ring(forklog *log, struct fl__mine *my)
{
    struct fl__seg *s = log->seg;
    if (!log->proc)
        return NULL;
    uint64_t key = fl__ring_key(log->proc);
    if (my->other_key == key) {
        unsigned k = my->other_ring;
        my->other_key = UINT64_MAX;
        return fl__ring_mine(log, my, key, k);
    }
    uint64_t me = fl__me(log);
    /* A ring bearing this thread's pid and tid (records of its own may wait there: another ring would let later
     * ones overtake them), before any free one. The tag moves, so that a freer who found its owner gone before
     * this thread was born cannot free it now. */
    for (unsigned k = 0; me && k < FL__RINGS; k++) {
        unsigned long long w = atomic_load_explicit(&s->rings[k].owner, memory_order_acquire);
        if ((w & FL__OWNER_ID) == me && atomic_compare_exchange_strong(&s->rings[k].owner, &w, w + FL__OWNER_TAG)) {
            FL__CRASH(RING_ADOPTED);
            if (fl__ring_backed(log, k))
                return fl__ring_mine(log, my, key, k);
            /* No blocks for it (a full disk): it stays this thread's, and its records go out before the next
             * one of the thread, which is written at once (fl__owned_ring finds the ring by pid and tid). */
            goto none;
        }
    }
    for (int pass = 0; me && pass < 2; pass++) {
        for (unsigned k = 0; k < FL__RINGS; k++) {
            unsigned long long w = atomic_load_explicit(&s->rings[k].owner, memory_order_relaxed);
            if (w == 0 && atomic_compare_exchange_strong(&s->rings[k].owner, &w, me)) {
                FL__CRASH(RING_CLAIMED);
                if (fl__ring_backed(log, k))
                    return fl__ring_mine(log, my, key, k);
                /* No blocks for it (a full disk): given back, empty; the thread writes at once meanwhile. */
                atomic_store_explicit(&s->rings[k].owner, 0, memory_order_release);
                goto none;
            }
        }
        if (pass == 0)
            fl__reclaim_rings(log);
    }
none:
    fl__ring_mine(log, my, key, FL__RINGS);
    my->retry_at = fl__coarse_ns() + log->flush_ns;
    return NULL;
}

/* The calling thread's ring in this segment, claimed if it has none; NULL when it has none (see fl__find_ring). */
static inline struct fl__ring *fl__my_ring(forklog *log, struct fl__mine *my)
{
    const struct fl__proc *p = log->proc;
    uint64_t key = p ? atomic_load_explicit(&p->ring_key, memory_order_relaxed) : 0;
    if (key == my->key) {
        if (my->ring < FL__RINGS)
            return &log->seg->rings[my->ring];
        if (fl__coarse_ns() < my->retry_at)
            return NULL;
    }
    return fl__find_ring(log, my);
}

int fl__ring_append(forklog *log, struct fl__mine *my, const struct iovec *iov, int iovcnt, size_t len)
{
    struct fl__seg *s = log->seg;
    if (len > log->ring_cap / 2) {
        /* A record of more than half a ring: written at once, after what this thread's ring holds (its order). */
        return fl__write_now(log, (int)fl__owned_ring(log, my), iov, iovcnt, len);
    }
    struct fl__ring *r = fl__my_ring(log, my);
    if (!r) {
        /* No ring for this handle (none free, or no per-process page): written at once, after what a ring of this
         * thread holds (one that another handle of the same log gave it). */
        return fl__write_now(log, (int)fl__owned_ring(log, my), iov, iovcnt, len);
    }
    unsigned k = (unsigned)(r - s->rings);
    uint64_t h = atomic_load_explicit(&r->head, memory_order_relaxed);
    if (h + len - atomic_load_explicit(&r->tail, memory_order_acquire) > log->ring_cap) {
        my->alone = 0;
        int rc = fl__lock(log);
        if (rc < 0 || (rc = fl__rings_out(log, (int)k, NULL, 0, 0)) < 0)
            return rc;
    }
    unsigned char *d = fl__ring_data(log, k);
    size_t cap = log->ring_cap, off = my->head == h ? my->off : (size_t)(h % cap);
    if (iovcnt == 1 && len < cap - off) {
        /* The usual record: one piece, short of the ring's end. */
        memcpy(d + off, iov->iov_base, len);
        off += len;
    } else {
        for (int i = 0; i < iovcnt; i++) {
            const unsigned char *src = iov[i].iov_base;
            size_t left = iov[i].iov_len;
            while (left > 0) {
                size_t n = left < cap - off ? left : cap - off;
                memcpy(d + off, src, n);
                src += n;
                left -= n;
                off += n;
                if (off == cap)
                    off = 0;
            }
        }
    }
    FL__CRASH(RING_COPIED);
    my->head = h + len;
    my->off = off;
    atomic_store_explicit(&r->head, h + len, memory_order_release);
    FL__CRASH(RING_PUBLISHED);
    /* The age bound. Every flush of all rings sets the due time to flush_ns after its plan, so it is never later
     * than flush_ns after any record still in a ring; the first append past it writes every ring. Only a flush of
     * every ring moves it later (0 until the log's first record), so an append needs no fence to tell the
     * flushers about its record. */
    int64_t late, now = fl__due_clock(log, &late);
    long long due = atomic_load_explicit(&s->due_ns, memory_order_relaxed);
    if (!due) {
        /* The log's first records: the earliest sets it (a lower due time is always safe). A record already in
         * another ring may be older than flush_ms: its writer published it and died (or was stopped) before it
         * set the due time, and a due time flush_ms after this record would let it wait longer. So may a record
         * before this one in this ring: the ring of such a writer, taken by its pid and tid by a thread that got
         * them back (fl__find_ring). Then every ring is written now, which sets the due time (unless another
         * writer set it meanwhile: it saw no such record before its own, so its due time covers them). `before`:
         * this ring's bytes before this record (more than a ring when a flush took this record too: none). */
        const uint64_t before = h - atomic_load_explicit(&r->tail, memory_order_relaxed);
        const int older_here = before != 0 && before <= log->ring_cap;
        unsigned j = 0;
        while (j < FL__RINGS && (j == k ? !older_here
                                        : atomic_load_explicit(&s->rings[j].head, memory_order_relaxed) ==
                                              atomic_load_explicit(&s->rings[j].tail, memory_order_relaxed)))
            j++;
        if (j < FL__RINGS) {
            fl__flush_due(log, 0);
        } else {
            long long mine = now + log->flush_ns;
            while ((due == 0 || mine < due) &&
                   !atomic_compare_exchange_weak_explicit(&s->due_ns, &due, mine, memory_order_relaxed,
                                                          memory_order_relaxed)) {
            }
        }
    } else if (now + late >= due)
        fl__flush_due(log, due);
    else if (!my->alone && h + len - atomic_load_explicit(&r->tail, memory_order_relaxed) > log->ring_cap / 2)
        fl__flush_early(log, k, my);
    return 0;
}
