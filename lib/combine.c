/* SPDX-License-Identifier: MIT */
/*
 * Combining, in direct mode: a writer that finds the lock taken posts its record (up to FL__SLOT_CAP bytes) in a
 * slot of the shared segment and waits; the next lock holder writes its own record and every posted one in one
 * writev(2), a run of whole records covered by the same state/target repair as a single record, and marks them
 * done with the write's result.
 *
 * What a holder's death leaves is read from seg->batch_phase (fl__repair_batch): in GATHER nothing of the batch
 * was written, so every slot it had TAKEN is posted again (and every POSTED slot flagged again, since the holder
 * may have swapped the `posted` bits out already); in WRITE the batch is in the file exactly when the file repair
 * kept the write (size reached batch_target), else it is posted again; in FINISH the write's result is batch_rc.
 * A repairer that cannot make the file repair (it cannot open path: lib/lock.c) makes no batch repair either: the
 * slots stay TAKEN, and the next holder repairs both.
 * So a record is written once, and a call returns 0 only when its record is in the file.
 */
#include "internal.h"

#include <errno.h>
#include <signal.h>
#include <string.h>

/* How long a poster whose record a dead holder took, and which cannot make the repair itself, waits before it looks
 * at its slot and tries the lock again: the period of a sleep on the lock (FL__SLEEP_NS, lib/lock.c). */
#define FL__REPAIR_WAIT_NS 10000000

static unsigned long long fl__slot_load(struct fl__slot *sl)
{
    return atomic_load_explicit(&sl->word, memory_order_acquire);
}

/* Moves a slot to `state`, keeping its poster and claim count. Only the lock holder moves a TAKEN slot, so a store is
 * enough. */
static void fl__slot_set(struct fl__slot *sl, unsigned state)
{
    unsigned long long w = atomic_load_explicit(&sl->word, memory_order_relaxed);
    atomic_store_explicit(&sl->word, (w & ~FL__SLOT_STATE) | state, memory_order_release);
}

void fl__repair_batch(struct fl__seg *s)
{
    unsigned phase = s->batch_phase;
    int written = phase == FL__BATCH_WRITE && s->size == s->batch_target;
    for (unsigned k = 0; k < FL__SLOTS; k++) {
        struct fl__slot *sl = &s->slots[k];
        unsigned st = fl__slot_load(sl) & FL__SLOT_STATE;
        if (st == FL__SLOT_TAKEN) {
            if (phase == FL__BATCH_FINISH || written) {
                sl->rc = phase == FL__BATCH_FINISH ? s->batch_rc : 0;
                fl__slot_set(sl, FL__SLOT_DONE);
            } else {
                fl__slot_set(sl, FL__SLOT_POSTED);
                st = FL__SLOT_POSTED;
            }
        }
        if (st == FL__SLOT_POSTED)
            atomic_fetch_or_explicit(&s->posted, 1u << k, memory_order_release);
    }
    FL__STEP(s->batch_phase, FL__BATCH_NONE);
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
    FL__STEP(s->batch_phase, FL__BATCH_GATHER);
    FL__CRASH(BATCH_GATHER);
    unsigned posted = atomic_exchange_explicit(&s->posted, 0, memory_order_acquire);
    FL__CRASH(BATCH_SWAPPED);
    for (unsigned k = 0; posted; k++, posted >>= 1) {
        struct fl__slot *sl = &s->slots[k];
        unsigned long long w = fl__slot_load(sl);
        /* A compare-and-swap: a poster that could not get the lock may be taking its record back. */
        if (!(posted & 1) || (w & FL__SLOT_STATE) != FL__SLOT_POSTED ||
            !atomic_compare_exchange_strong_explicit(&sl->word, &w, (w & ~FL__SLOT_STATE) | FL__SLOT_TAKEN,
                                                     memory_order_acquire, memory_order_relaxed))
            continue;
        iov[n].iov_base = sl->data;
        iov[n++].iov_len = sl->len;
        total += sl->len;
        taken[nt++] = k;
        FL__CRASH(BATCH_TAKEN);
    }
    /* The file was synced before the gathering began, and a posted record's call may have begun after a
     * forklog_reopen() that returned since: that record must go to the file at path, never to the one renamed away.
     * The reopen was counted before the record was posted, so the slot's acquire above makes it visible here. */
    int rc = 0, synced = 1;
    if (nt && log->path[0] && atomic_load_explicit(&s->reopen_req, memory_order_acquire) != s->reopen_seen) {
        /* Not cancellable (fl__nocancel): state is IDLE here, and the slots this holder took are its own to give
         * back. Cancelled at a cancellation point of the move (the read of the new file's last byte, the newline
         * that ends its line), a thread whose cleanup closes its handle releases the lock as a live holder does, not
         * as a dead one: nobody repairs a lock taken normally with state IDLE, and each poster took its slot's old
         * result for its record's. Put off, the cancellation is acted upon at the batch's write, state WRITING,
         * which the next holder repairs. */
        const int cancel = fl__nocancel();
        synced = (rc = fl__sync_file(log)) == 0;
        fl__cancel_back(cancel);
    }
    /* Posters look at `regular` before they take the lock, and a reopen may since have moved the log to a FIFO, a
     * pipe or a device: what a holder killed in the middle of a write put there cannot be told apart from a
     * whole write, and counts as written (fl__repair_file), so the taken records would be acknowledged unwritten.
     * They go back to their slots instead, and this holder writes its own record alone. */
    const int alone = synced && nt && !atomic_load_explicit(&s->regular, memory_order_relaxed);
    if (synced && !alone) {
        s->batch_target = s->size + total;
        FL__CRASH(BATCH_TARGET);
        FL__STEP(s->batch_phase, FL__BATCH_WRITE);
        rc = fl__write_commit(log, iov, n, total, FL__WRITING);
        FL__CRASH(BATCH_WRITTEN);
    }
    if (nt && (!synced || alone || (rc == -EFBIG && s->file_known))) {
        /* This process could not move to the new file (its descriptor limit, its credentials), or its
         * RLIMIT_FSIZE failed the write: either is this process's failure, not the posters'. Their records go back
         * to their slots (nothing of the batch is in the file: never written, or the failed write was cut; a death
         * from here on reposts every slot still TAKEN), for their posters or another holder to write, as a failed
         * sync before the gathering would have left them. With EFBIG, or a file that is not regular, this
         * process's own record is written alone, which its limit may let through; a failed sync fails it. Each
         * poster then writes its own record when it gets the lock. */
        FL__STEP(s->batch_phase, FL__BATCH_GATHER);
        for (int i = 0; i < nt; i++) {
            fl__slot_set(&s->slots[taken[i]], FL__SLOT_POSTED);
            atomic_fetch_or_explicit(&s->posted, 1u << taken[i], memory_order_release);
        }
        FL__STEP(s->batch_phase, FL__BATCH_NONE);
        return synced && owncnt ? fl__write_commit(log, own, owncnt, ownlen, FL__WRITING) : rc;
    }
    s->batch_rc = rc;
    FL__CRASH(BATCH_RESULT);
    FL__STEP(s->batch_phase, FL__BATCH_FINISH);
    for (int i = 0; i < nt; i++) {
        struct fl__slot *sl = &s->slots[taken[i]];
        sl->rc = rc;
        fl__slot_set(sl, FL__SLOT_DONE);
        FL__CRASH(BATCH_MARKED);
    }
    s->combined += (uint64_t)nt;
    FL__STEP(s->batch_phase, FL__BATCH_NONE);
    return rc;
}

/* Claims a free slot for this process; NULL when all are in use. Slots left by dead processes (FILLING, POSTED or
 * DONE) are taken back here when none is free: a poster killed at the wrong moment cannot free its own, and the
 * record of a dead poster was never acknowledged. The owner and the claim count are part of the word, so the
 * compare-and-swap fails if the slot changed hands since it was read, even to a process born since then with the
 * dead poster's pid. *claimed receives the word the slot now holds. */
static struct fl__slot *fl__slot_claim(forklog *log, int pid, unsigned long long *claimed)
{
    struct fl__seg *s = log->seg;
    const unsigned long long me = (unsigned long long)pid << FL__SLOT_BITS | FL__SLOT_FILLING;
    for (int pass = 0; pass < 2; pass++) {
        for (unsigned i = 0; i < FL__SLOTS; i++) {
            struct fl__slot *sl = &s->slots[((unsigned)pid + i) % FL__SLOTS];
            unsigned long long w = fl__slot_load(sl);
            if ((w & FL__SLOT_STATE) != FL__SLOT_FREE) {
                if (pass == 0 || (w & FL__SLOT_STATE) == FL__SLOT_TAKEN || FL__SLOT_PID(w) <= 0 ||
                    kill(FL__SLOT_PID(w), 0) == 0 || errno != ESRCH)
                    continue;
                FL__CRASH(POST_RECLAIM);
            }
            const unsigned long long mine = ((w & ~FL__SLOT_OWNER) + FL__SLOT_CLAIM) | me;
            if (atomic_compare_exchange_strong_explicit(&sl->word, &w, mine, memory_order_acquire,
                                                        memory_order_relaxed)) {
                *claimed = mine;
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

int fl__append_combining(forklog *log, const struct iovec *iov, int iovcnt, size_t len)
{
    struct fl__seg *s = log->seg;
    int rc = fl__trylock(log);
    if (rc < 0)
        return rc;
    if (rc == 0)
        return fl__write_own(log, iov, iovcnt, len);
    unsigned long long claimed;
    struct fl__slot *mine = fl__slot_claim(log, (int)fl__pid(log), &claimed);
    if (!mine) {
        /* Every slot in use: wait for the lock like the plain path. */
        if ((rc = fl__lock(log)) < 0)
            return rc;
        return fl__write_own(log, iov, iovcnt, len);
    }
    FL__CRASH(POST_CLAIMED);
    size_t o = 0;
    for (int i = 0; i < iovcnt; i++) {
        memcpy(mine->data + o, iov[i].iov_base, iov[i].iov_len);
        o += iov[i].iov_len;
    }
    mine->len = (uint32_t)len;
    fl__slot_set(mine, FL__SLOT_POSTED);
    FL__CRASH(POST_POSTED);
    atomic_fetch_or_explicit(&s->posted, 1u << (unsigned)(mine - s->slots), memory_order_release);
    FL__CRASH(POST_FLAGGED);

    /* Wait: spin (if a CPU is free for it; else yield the CPU, FL__YIELD_NS) until the record is done or the lock
     * is ours, then sleep on the lock. Each time a spinner sees the lock free, it leaves it for FL__LEAVE_NS to the
     * writer that freed it, who writes this record with its next. */
    rc = EBUSY;
    if (atomic_fetch_add_explicit(&s->spinners, 1, memory_order_relaxed) < log->max_spinners) {
        int64_t until = fl__mono_ns() + FL__SPIN_NS, freed = 0, t = 0;
        for (unsigned i = 1; rc == EBUSY; i++) {
            if ((fl__slot_load(mine) & FL__SLOT_STATE) == FL__SLOT_DONE)
                break;
            fl__cpu_relax();
            if (atomic_load_explicit(&s->held, memory_order_relaxed)) {
                freed = 0;
            } else {
                t = fl__mono_ns();
                if (!freed)
                    freed = t;
                if (t - freed >= FL__LEAVE_NS)
                    rc = fl__trylock(log);
            }
            if (rc == EBUSY && i % 16 == 0 && (freed ? t : fl__mono_ns()) > until)
                break;
        }
    } else {
        rc = fl__lock_yield(log, mine); /* no CPU to spin on */
    }
    atomic_fetch_sub_explicit(&s->spinners, 1, memory_order_relaxed);
    /* Then sleep on the lock, one bounded period at a time, looking at the slot before each: a holder that wrote
     * the record may keep the lock for long (a slow disk, a stopped process), and the call is done once the slot
     * is DONE. */
    while (rc == EBUSY && (fl__slot_load(mine) & FL__SLOT_STATE) != FL__SLOT_DONE)
        if ((rc = fl__lock_sleep_once(log)) == ETIMEDOUT)
            rc = EBUSY;
    if (rc < 0) {
        /* No lock: take the record back unless a holder has it already; then its result is the answer. */
        unsigned long long w = claimed - FL__SLOT_FILLING + FL__SLOT_POSTED;
        if (atomic_compare_exchange_strong(&mine->word, &w, claimed & ~FL__SLOT_OWNER))
            return rc;
        /* Still TAKEN once this process held the lock and failed: the holder that took it died, and this process
         * could not make the repair (fl__locked: it cannot open path), which alone tells whether the record is in
         * the file. It waits for the next holder's repair, as for any holder, and tries the lock again each period,
         * making the repair itself once it can: then the slot is DONE, or POSTED again for it to write. Not
         * cancellable in the pause: the slot is its own. */
        while ((fl__slot_load(mine) & FL__SLOT_STATE) != FL__SLOT_DONE) {
            const int cancel = fl__nocancel();
            nanosleep(&(struct timespec){0, FL__REPAIR_WAIT_NS}, NULL);
            fl__cancel_back(cancel);
            if ((fl__slot_load(mine) & FL__SLOT_STATE) != FL__SLOT_DONE && (rc = fl__trylock(log)) == 0)
                break;
        }
    }
    if (rc == 0) {
        /* With the lock held the slot is POSTED and flagged (nobody wrote it yet: write it now) or DONE. Not
         * cancellable meanwhile: cancelled in its write, the slot would be written by the repairer and then stay
         * DONE with no poster to free it, for every process of the log (fl__nocancel). */
        const int cancel = fl__nocancel();
        if ((fl__slot_load(mine) & FL__SLOT_STATE) == FL__SLOT_POSTED) {
            int err = fl__sync_file(log);
            if (err == 0)
                err = fl__write_batch(log, NULL, 0, 0);
            else {
                mine->rc = err;
                fl__slot_set(mine, FL__SLOT_DONE);
            }
            /* Still POSTED: this process's failure gave the records back (fl__write_batch). Under its file size
             * limit this one is written alone from its slot, which is FILLING meanwhile, so that no holder writes it
             * again should this process die; when it could not move to the new file, that failure is its answer. */
            unsigned long long w = claimed - FL__SLOT_FILLING + FL__SLOT_POSTED;
            if (atomic_compare_exchange_strong(&mine->word, &w, claimed)) {
                struct iovec v = {mine->data, mine->len};
                mine->rc = err < 0 && err != -EFBIG ? err : fl__write_commit(log, &v, 1, mine->len, FL__WRITING);
                fl__slot_set(mine, FL__SLOT_DONE);
            }
        }
        fl__unlock(log);
        fl__cancel_back(cancel);
    }
    FL__CRASH(POST_DONE_SEEN);
    rc = mine->rc;
    atomic_store_explicit(&mine->word, claimed & ~FL__SLOT_OWNER, memory_order_release); /* FREE, the count kept */
    return rc;
}
