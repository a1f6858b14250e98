/* SPDX-License-Identifier: MIT */
/*
 * Writing with the lock held: one record, a run of whole records, or the shared buffer, committed to the segment's
 * idea of the file only once every byte is in it. fl__append (internal.h) is the record path's entry; its plain
 * path is here: the lock, the file of the current generation, rotation, then the buffer or the file. So is the
 * calling thread's state that the record path hands down (struct fl__mine), and the flush of forklog_flush().
 */
#include "internal.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* After a write(2) failed with errno: whether to write again. EINTR, and EAGAIN once some bytes went out (`sent`):
 * a descriptor made non-blocking after the open (by the caller, or by any process sharing its open file
 * description) or given a send timeout (SO_SNDTIMEO) stops with EAGAIN when the pipe or socket is full, and the part
 * of the records already in it cannot be taken back; returned, it stayed there with the lock released, and the next
 * record was glued to it. So the rest goes out as a blocking write would send it, once there is room. With nothing
 * sent, EAGAIN is the call's error: nothing of the records is in the stream. */
static int fl__write_again(int fd, int err, int sent)
{
    if (err == EINTR)
        return 1;
    if ((err != EAGAIN && err != EWOULDBLOCK) || !sent)
        return 0;
    struct pollfd pfd = {fd, POLLOUT, 0};
    (void)poll(&pfd, 1, -1); /* EINTR, or an error the next write reports */
    return 1;
}

/* Writes all of iov to fd, looping on short writes, EINTR and EAGAIN in the middle (fl__write_again). Returns 0 or
 * -errno; *done receives the bytes that went in either way. */
static int fl__write_all(int fd, const struct iovec *iov_in, int iovcnt, size_t *done)
{
    *done = 0;
    if (iovcnt == 1) {
        /* The usual case, one buffer: no iovec copy. */
        const char *p = iov_in->iov_base;
        size_t left = iov_in->iov_len;
        while (left > 0) {
            ssize_t n = write(fd, p, left);
            if (n < 0) {
                if (fl__write_again(fd, errno, p != iov_in->iov_base))
                    continue;
                return -errno;
            }
            if (n == 0)
                return -EIO;
            p += n;
            left -= (size_t)n;
            *done += (size_t)n;
        }
        return 0;
    }
    struct iovec iov[FL__IOV_MAX];
    if (iovcnt > FL__IOV_MAX)
        return -EINVAL;
    memcpy(iov, iov_in, sizeof iov[0] * (size_t)iovcnt);
    struct iovec *v = iov;
    int sent = 0;
    while (iovcnt > 0) {
        ssize_t n = writev(fd, v, iovcnt);
        if (n < 0) {
            if (fl__write_again(fd, errno, sent))
                continue;
            return -errno;
        }
        sent = 1;
        if (n == 0)
            return -EIO; /* no progress with bytes left: never loop forever */
        *done += (size_t)n;
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

#ifdef FL__CRASH_POINTS
/* A torn write, for the WRITE_TORN crash point: the first half of the bytes (at least one), as a write that a
 * fatal signal stopped between pages leaves them. */
static void fl__write_half(int fd, const struct iovec *iov, int iovcnt, size_t len)
{
    size_t left = len > 1 ? len / 2 : len;
    for (int i = 0; i < iovcnt && left > 0; i++) {
        size_t n = iov[i].iov_len < left ? iov[i].iov_len : left;
        if (write(fd, iov[i].iov_base, n) != (ssize_t)n)
            return;
        left -= n;
    }
}
#endif

unsigned fl__plan_sent(forklog *log, unsigned first, size_t sent)
{
    struct fl__seg *s = log->seg;
    unsigned rest = 0;
    for (unsigned i = 0; i < FL__RINGS; i++) {
        const unsigned k = fl__ring_at(first, i);
        struct fl__ring *r = &s->rings[k];
        const uint64_t t = atomic_load_explicit(&r->tail, memory_order_relaxed);
        const uint64_t n = r->planned - t < sent ? r->planned - t : sent;
        if (n && t + n != r->planned) {
            /* Whether the last byte that went out ended a line, read before the tail moves past it (its owner may
             * then write there): a flush that stopped at the end of a record cut nothing short, and the record after
             * it must not be dropped for a rest when the log moves to another file. */
            const size_t cap = log->ring_cap;
            const unsigned char *d = fl__ring_data(log, k);
            const int line_end = d[(t + n - 1) % cap] == '\n';
            rest = (k + 1) | (line_end ? FL__REST_LINE_END : 0);
            /* Of this ring, what counts as written after a death is what went out and the rest of the record it cut
             * short, up to that record's newline; the whole records after it stay, for the next flush. */
            uint64_t end = t + n;
            if (!line_end) {
                while (end < r->planned && d[end % cap] != '\n')
                    end++;
                if (end < r->planned)
                    end++; /* the newline that ends the record cut short */
            }
            r->planned = end;
        } else if (!n) {
            r->planned = t; /* nothing of it went out: out of the plan, as a ring the flush was not for */
        }
        sent -= (size_t)n;
    }
    return rest;
}

/* A flush to a FIFO, a pipe, a socket or a device failed after `sent` bytes went out (the reader went away in the
 * middle of it): those bytes are in the stream, and nothing takes them back. A FIFO keeps what its reader left in the
 * pipe for its next reader, which got them a second time when the next flush wrote the whole buffer again, the
 * record that went out in part cut short and glued to the first one sent again. They count as written, as a dead
 * flusher's do on such a target (fl__repair_file_now): dropped from the front of the shared buffer, or of the rings
 * in the order of the plan, so that the next flush begins with the rest of the record that went out in part. Made
 * while the state is still FLUSHING: a holder killed here is repaired as one killed in its write (everything
 * still in the plan counts as written, at most once), the rings' plans first cut down to what went out. */
static void fl__drop_sent(forklog *log, size_t sent)
{
    struct fl__seg *s = log->seg;
    if (s->ring_phase == FL__RINGS_PLANNED) {
        /* The rings in the order they were written. Those that nothing of went out are taken out of the plan (planned
         * at their tail, as a ring the flush was not for). The one ring that went out in part, its tail short of its
         * plan, holds the rest of a record that went out in part, which the next flush writes first: flush_rest says
         * which, since its plan alone does not (the next plan, which a failed write that sends nothing or a death
         * before the write leaves behind, is short of every ring's tail that holds a record).
         *
         * The plans are cut down one ring after another, and a flusher killed before the last one counted every
         * ring the drop had not reached as written, records that never went out. So where the stream stopped is
         * kept first, in target (which said the whole plan): until target says the whole plan again, the repair
         * cuts the plans down itself, to the same place (fl__plan_sent changes nothing it already did), and no tail
         * moves before that. */
        FL__STEP(s->target, s->size + sent);
        const unsigned rest = fl__plan_sent(log, log->ring_first, sent);
        /* Every plan cut down: a flusher killed from here on is repaired as one killed in its write. Before
         * flush_rest changes: until then the repair finds where the plan began from it (fl__repair_file_now). */
        FL__STEP(s->target, s->ring_target);
        s->flush_rest = rest;
        for (unsigned i = 0; i < FL__RINGS; i++) {
            struct fl__ring *r = &s->rings[fl__ring_at(log->ring_first, i)];
            const uint64_t t = atomic_load_explicit(&r->tail, memory_order_relaxed);
            const uint64_t n = r->planned - t < sent ? r->planned - t : sent;
            if (n)
                atomic_store_explicit(&r->tail, t + n, memory_order_release);
            sent -= (size_t)n;
        }
    } else {
        /* The shared buffer goes on from its front, where the rest is; a flusher killed in its next write needs to
         * know that the stream ends in the middle of a line (fl__repair_file_now). What went out may end at a newline
         * inside a record of several lines: its later lines are then at the front, and are named all the same (as
         * FL__REST_LINE_END, no newline due), so that a guest's record written at once goes after them, not between
         * the lines of that record (fl__append_plain). */
        if (sent >= s->buf_used) {
            s->flush_rest = 0;
            s->buf_used = 0; /* all of it went out: a death from here on counts it as written, rightly */
            return;
        }
        /* The front cannot be taken off in one step, and a flusher killed in the middle of it was repaired as one
         * killed in its write: the whole buffer counted as written, the records after the one cut short too, which
         * never went out. So the drop is marked first (ring_target, unused by a log with the shared buffer: how much
         * went out, and whether it ended a line), and the rest is moved to the front in pieces no longer than what
         * went out, each copied from bytes that no earlier piece overwrote, with how far the move got after each
         * (batch_target, unused too: no log with the shared buffer combines). The repair finishes the move from
         * there (fl__repair_buf_drop), to the same place; buf_used is cut last. */
        const size_t used = s->buf_used;
        const int line_end = s->buf[sent - 1] == '\n';
        s->batch_target = 0;
        FL__STEP(s->ring_target, (uint64_t)sent | (line_end ? FL__BUF_DROP_LINE_END : 0));
        s->flush_rest = (FL__RINGS + 1) | (line_end ? FL__REST_LINE_END : 0);
        fl__buf_drop_move(s, sent, used);
    }
}

void fl__buf_drop_move(struct fl__seg *s, size_t sent, size_t used)
{
    const size_t left = used - sent;
    size_t at = s->batch_target < left ? (size_t)s->batch_target : left;
    while (at < left) {
        const size_t n = left - at < sent ? left - at : sent;
        memcpy(s->buf + at, s->buf + at + sent, n);
        at += n;
        FL__STEP(s->batch_target, at);
    }
    s->buf_used = left;
}

int fl__write_commit(forklog *log, const struct iovec *iov, int iovcnt, size_t len, enum fl__state state)
{
    struct fl__seg *s = log->seg;
    s->target = s->size + len;
    FL__CRASH(WRITE_TARGET);
    FL__STEP(s->state, state);
    FL__CRASH(WRITE_BEGIN);
#ifdef FL__CRASH_POINTS
    if (fl__crash_next(FL__CP_WRITE_TORN))
        fl__write_half(log->fd, iov, iovcnt, len);
    FL__CRASH(WRITE_TORN);
#endif
    size_t done;
    int rc = fl__write_all(log->fd, iov, iovcnt, &done);
    if (rc == 0)
        FL__CRASH(WRITE_DONE);
    /* Only a regular file is synced: on a FIFO, a pipe or a character device fdatasync() fails with EINVAL after
     * the record went out, and it cannot be taken back, so that failure would make a caller write it again. */
    if (rc == 0 && (log->flags & FORKLOG_SYNC) && atomic_load_explicit(&s->regular, memory_order_relaxed) &&
        fdatasync(log->fd) < 0)
        rc = -errno;
    if (rc < 0) {
        /* Nothing of a failed record stays: cut back to the last whole record, where size says it ends. A regular
         * file of another length than that plus what went in of the record was changed behind the log's back since.
         * Shorter, it was cut short (`: > app.log` to free a disk, logrotate's copytruncate): size lies past its
         * end, and a cut there would extend the file with zeros and keep the fragment (or, past RLIMIT_FSIZE, fail
         * and keep it). Longer, another writer appended to it since the last record (a program writing without
         * forklog, a FORKLOG_PRIVATE handle): a cut to size would take as many bytes of the records before, whose
         * calls returned, and the next record would be glued to what is left of them. Either way the fragment is
         * the last `done` bytes, and where it begins is where the log ends from now on. size is stored before the
         * cut, so that a holder killed in between leaves a fragment that the repair cuts back to it. */
        const int stream = !atomic_load_explicit(&s->regular, memory_order_relaxed);
        if (stream && done) {
            /* What went out stays in the stream, and ends in the middle of a line. A holder killed from here on is
             * repaired as one killed in its write, and everything it was writing counts as written, the rest of
             * the record that went out in part too: the next record is to begin a line of its own (fl__sync_file).
             * Marked before the drop, so that no death leaves the fragment without the mark; a flusher clears it
             * once the drop is done, and its next flush goes on where this one stopped. */
            s->file_known = 2;
            if (state == FL__FLUSHING) {
                fl__drop_sent(log, done);
                /* The drop is done: the tails and the shared buffer's front are where the stream stopped, and
                 * flush_rest names the rest, which the next flush begins with. A holder killed from here on leaves
                 * them so, as a flusher that lives on does: repaired as one killed in its write, it would count the
                 * rest as written, never sent, and put a newline before what follows (the lines of a record of
                 * several lines after another record). The mark goes first: a death in between is one in the drop,
                 * whose repair marks the stream again where it ends in the middle of a line. */
                s->file_known = 0;
                FL__STEP(s->state, FL__IDLE);
            }
        } else if (stream) {
            /* Nothing went out, and the stream is as it was: a holder killed from here on is not repaired as one
             * killed in its write, which would count all it was writing as written, the buffer and the rings' records
             * that never went out. size stays short of ring_target: the rings' tails stay, and so do the shared
             * buffer and the rest of a record that an earlier flush cut short (flush_rest), written first next time. */
            FL__STEP(s->state, FL__IDLE);
        }
        FL__CRASH(WRITE_FAILED);
        struct stat st;
        if (atomic_load_explicit(&s->regular, memory_order_relaxed) && fstat(log->fd, &st) == 0 &&
            S_ISREG(st.st_mode) && (uint64_t)st.st_size != s->size + done)
            s->size = (uint64_t)st.st_size > done ? (uint64_t)st.st_size - done : 0;
        if (ftruncate(log->fd, (off_t)s->size) < 0)
            s->file_known = 0;
        /* A record that went out in part to a FIFO, a pipe, a socket or a device (the reader went away in the middle
         * of it) left its first part in the stream, where a FIFO keeps it for its next reader: that stream now ends
         * in the middle of a line, and the next record is to begin a line of its own (fl__sync_file), as on a regular
         * file that ends so. A flush that went out in part goes on where it stopped instead (fl__drop_sent): no
         * newline may come in the middle of the record it cut. */
        if (stream && done)
            s->file_known = state == FL__WRITING ? 2 : 0;
    } else {
        s->size = s->target;
        FL__CRASH(WRITE_SIZED);
        if (state == FL__FLUSHING) {
            s->buf_used = 0;
            s->flush_rest = 0; /* the rest went out first */
        }
        FL__CRASH(WRITE_COMMITTED);
    }
    FL__STEP(s->state, FL__IDLE);
    return rc;
}

int fl__flush_locked(forklog *log)
{
    struct fl__seg *s = log->seg;
    int rc = fl__flush_rings(log);
    if (s->buf_used > log->buf_cap)
        s->buf_used = 0; /* only a damaged segment says so: nothing of it is written */
    if (rc < 0 || s->buf_used == 0)
        return rc;
    s->ring_target = 0; /* no drop of the buffer's front under way (fl__drop_sent) */
    /* The buffer goes to the file as its records would have: a file that it would take past rotate_bytes is rotated
     * first. Each record was buffered with room for it under the bound, so only a file that grew since without the
     * buffer's knowledge needs it: the log reopened onto a larger file, or a file found at path and adopted. */
    if ((rc = fl__maybe_rotate(log, s->buf_used)) < 0)
        return rc;
    struct iovec iov = {s->buf, s->buf_used};
    return fl__write_commit(log, &iov, 1, s->buf_used, FL__FLUSHING);
}

static int fl__append_buffered(forklog *log, const struct iovec *iov, int iovcnt, size_t len)
{
    struct fl__seg *s = log->seg;
    int64_t now = fl__mono_ns();
    int rc;
    /* Make room first; a buffer that is merely old is written below, together with this record. */
    int full = s->buf_used + len > log->buf_cap;
    int rotate = log->rotate_bytes && atomic_load_explicit(&s->regular, memory_order_relaxed) &&
                 s->size + s->buf_used > 0 && s->size + s->buf_used + len > log->rotate_bytes;
    if ((full || rotate) && (rc = fl__flush_locked(log)) < 0)
        return rc;
    if ((rc = fl__maybe_rotate(log, len)) < 0)
        return rc;
    if (len > log->buf_cap)
        return fl__write_commit(log, iov, iovcnt, len, FL__WRITING);
    size_t o = s->buf_used;
    for (int i = 0; i < iovcnt; i++) {
        memcpy(s->buf + o, iov[i].iov_base, iov[i].iov_len);
        o += iov[i].iov_len;
    }
    if (s->buf_used == 0)
        s->buf_first_ns = now;
    FL__CRASH(BUF_COPIED);
    /* One store publishes the record: a holder killed during the copy leaves buf_used as it was. */
    s->buf_used = o;
    FL__CRASH(BUF_PUBLISHED);
    if (now - s->buf_first_ns >= log->flush_ns || s->buf_used == log->buf_cap)
        (void)fl__flush_locked(log); /* the record is safe in the buffer; a failed flush is retried later */
    return 0;
}

int fl__append_plain(forklog *log, const struct iovec *iov, int iovcnt, size_t len)
{
    int rc = fl__lock(log);
    if (rc < 0)
        return rc;
    rc = fl__sync_file(log);
    if (rc == 0) {
        /* A guest's record is written at once: the shared buffer's age is told by a clock it does not share. */
        if ((log->flags & (FORKLOG_BUFFERED | FL__GUEST)) == FORKLOG_BUFFERED)
            rc = fl__append_buffered(log, iov, iovcnt, len);
        else {
            /* A guest of a buffered log buffers nothing itself, but keeps the age bound of what the others
             * buffered, in rings or in the shared buffer (safe there: a failed write of it is retried later). A
             * stream that holds the first part of a record a failed flush cut short (flush_rest) takes the rest of
             * it before anything else (fl__flush_some), due or not, or this record would be glued to that part;
             * when it cannot, the record fails, as a native's written at once does (fl__rings_out). */
            struct fl__seg *s = log->seg;
            if (((log->ring_cap || s->buf_used) && fl__rings_due(log)) || s->flush_rest) {
                int flushed = fl__flush_locked(log);
                if (flushed < 0 && s->flush_rest)
                    rc = flushed;
            }
            /* What the shared buffer holds goes to the file before a record that, with it, would pass rotate_bytes,
             * as a native's record sends it (fl__append_buffered): the rotation below counts the file alone, and
             * the buffer written after this record would push the file past the bound. */
            if (log->rotate_bytes && s->buf_used && atomic_load_explicit(&s->regular, memory_order_relaxed) &&
                s->size + s->buf_used + len > log->rotate_bytes)
                rc = fl__flush_locked(log);
            if (rc == 0 && (rc = fl__maybe_rotate(log, len)) == 0)
                rc = fl__write_commit(log, iov, iovcnt, len, FL__WRITING);
        }
    }
    fl__unlock(log);
    return rc;
}

FL__INTERNAL _Thread_local struct fl__mine fl__my = {.key = UINT64_MAX, .other_key = UINT64_MAX};

int fl__flush(forklog *log)
{
    struct fl__mine *my = fl__enter(log);
    if (!my)
        return -EDEADLK;
    int rc = fl__lock(log);
    if (rc == 0) {
        rc = fl__sync_file(log);
        if (rc == 0)
            rc = fl__flush_locked(log);
        fl__unlock(log);
    }
    fl__leave(my);
    return rc;
}
