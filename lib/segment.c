/* SPDX-License-Identifier: MIT */
/*
 * The shared segment: where the lock, the file's state and the buffer live, and how every process that opens the
 * same log finds the same one.
 *
 * A log that is a regular file has a segment file beside it, `.NAME.forklog` in the log's directory (SQLite keeps
 * its WAL index beside the database the same way), which every process that opens the log maps MAP_SHARED,
 * forked or not. A process keeps that file open, with a shared flock(2), for as long as it holds the handle; a
 * forked child shares the open file description, and with it the lock. So an opener that gets the exclusive lock
 * knows that nobody uses the segment: every previous user closed it or died, or the machine rebooted (flock locks
 * survive neither). That opener, alone, finishes what the last users left (fl__recover: a torn record is cut,
 * buffered records are written) and builds the segment anew, mutex included: a lock word left by a dead process
 * or a previous boot is never waited on. Everybody else takes the shared lock and joins what is there. The last
 * user to close removes the file, so nothing accumulates; a file left by processes that all died stays, holding
 * their buffered records, until the next open of the log.
 *
 * Trust: the segment file is created with the read and write bits of whoever may write the log, and the log's owner
 * and group, before it is linked at its name (fl__seg_create). An existing one is used only if it is a regular file
 * with one link, owned by the log's owner, root or the caller (or by the log's group when the log is group-writable; or
 * by anybody when everybody may write the log), and grants no access that the log's write bits do not: a user who
 * cannot write the log cannot take its lock or read its buffer, and a file another user planted is refused (-EPERM)
 * rather than trusted. A file of a trusted owner that grants more than the log does now (its mode or group changed
 * since) is given the log's owner, group and bits by an opener that may (fl__seg_narrow), and used.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#define FL__DEFAULT_BUFFER ((size_t)256 << 10)
#ifdef MAP_NORESERVE
#define FL__NORESERVE MAP_NORESERVE
#else
#define FL__NORESERVE 0
#endif
/* Opens retried when the segment file is removed or rebuilt under the opener's feet. */
#define FL__JOIN_TRIES 32
/* statfs(2)'s f_type of /proc. */
#define FL__PROC_MAGIC 0x9fa0
/* Symbolic links followed, at most, to tell whether a path leads through /proc (the kernel's own limit). */
#define FL__MAX_LINKS 40

/* What must be equal for two processes to share a segment: pointer size, mutex size and the C library (glibc and
 * musl lay out pthread_mutex_t differently). */
#ifdef __GLIBC__
#define FL__LIBC 1u
#else
#define FL__LIBC 2u
#endif
#define FL__ABI         ((uint32_t)sizeof(void *) << 24 | (uint32_t)sizeof(pthread_mutex_t) << 8 | FL__LIBC)
#define FL__LAYOUT_WORD (FL__LAYOUT << 20 | (uint32_t)sizeof(struct fl__seg))

static void fl__explain(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fl__explain(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static size_t fl__page(void)
{
    long page = sysconf(_SC_PAGESIZE);
    return page > 0 ? (size_t)page : 4096;
}

/* The shape of a segment for these settings. Where its buffered records go: with rotation, one buffer of buf_cap
 * bytes under the lock (a rotation must know the size of what it writes); without, a lock-free ring of ring_cap
 * bytes per writer thread (ring.c). *len receives the segment's bytes, whole pages. Returns 0, or -EINVAL when
 * they do not fit a size_t (FL__RINGS rings of a large buffer on a 32-bit machine). */
static int fl__shape(int buffered, uint64_t buffer_size, uint64_t rotate_bytes, size_t *buf_cap, size_t *ring_cap,
                     size_t *len)
{
    *buf_cap = *ring_cap = *len = 0;
    if (buffered && buffer_size > SIZE_MAX)
        return -EINVAL;
    if (buffered && rotate_bytes)
        *buf_cap = (size_t)buffer_size;
    else if (buffered)
        *ring_cap = (size_t)buffer_size;
    size_t pg = fl__page(), n;
    if (__builtin_mul_overflow(*ring_cap, (size_t)FL__RINGS, &n) || __builtin_add_overflow(n, *buf_cap, &n) ||
        __builtin_add_overflow(n, sizeof(struct fl__seg) + pg - 1, &n))
        return -EINVAL;
    *len = n / pg * pg;
    return 0;
}

/* The shape of a segment built for this handle's settings; explains a size that does not fit. */
static int fl__seg_bytes(const forklog *log, size_t *buf_cap, size_t *ring_cap, size_t *len, char *err, size_t errlen)
{
    if (fl__shape((log->flags & FORKLOG_BUFFERED) != 0, log->buffer_size, log->rotate_bytes, buf_cap, ring_cap, len) <
        0) {
        fl__explain(err, errlen, "buffer_size %zu is too large for this machine: %d buffers of it do not fit in memory",
                    log->buffer_size, FL__RINGS);
        return -EINVAL;
    }
    return 0;
}

/* Gives the first `core` bytes of the freshly sized segment file (everything but the rings' data) blocks of their
 * own. A sized file is sparse, and a store into a page of a MAP_SHARED mapping that has no block yet must allocate
 * one: on a full file system the kernel answers with SIGBUS, which would kill the opener during the build, or a
 * writer at its first post into a slot page nobody had touched, where a full disk must be -ENOSPC. The blocks are
 * reserved with posix_fallocate() (no data written: the rotating buffer may be up to 1 GiB); where the file system
 * cannot, zeros are written, which the fresh file holds anyway. The rings stay sparse (they may be larger than the
 * disk); each is paged in only once written. Returns 0 or -errno. */
static int fl__seg_fill(int fd, size_t core)
{
    int e;
    while ((e = posix_fallocate(fd, 0, (off_t)core)) == EINTR)
        ;
    if (e != EOPNOTSUPP && e != EINVAL && e != ENOSYS)
        return -e;
    static const char zeros[4096];
    for (size_t off = 0; off < core;) {
        size_t n = core - off < sizeof zeros ? core - off : sizeof zeros;
        ssize_t w = pwrite(fd, zeros, n, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -errno;
        if (w == 0)
            return -ENOSPC;
        off += (size_t)w;
    }
    return 0;
}

/* `dir/.NAME.forklog` for the absolute path `dir/NAME`, into out when it fits in cap bytes (its NUL included).
 * Returns the bytes it takes. */
static size_t fl__seg_name(char *out, size_t cap, const char *path)
{
    const char *base = strrchr(path, '/') + 1;
    const size_t dlen = (size_t)(base - path), need = dlen + strlen(base) + 10;
    if (need <= cap)
        snprintf(out, cap, "%.*s.%s.forklog", (int)dlen, path, base);
    return need;
}

/* The same, malloc'd. */
static char *fl__seg_path(const char *path)
{
    const size_t need = fl__seg_name(NULL, 0, path);
    char *p = malloc(need);
    if (p)
        fl__seg_name(p, need, path);
    return p;
}

/* The segment file's bits: read and write for each class that may write the log; 0600 if none may. */
static mode_t fl__seg_mode(mode_t log_mode)
{
    mode_t m = 0;
    if (log_mode & S_IWUSR)
        m |= S_IRUSR | S_IWUSR;
    if (log_mode & S_IWGRP)
        m |= S_IRGRP | S_IWGRP;
    if (log_mode & S_IWOTH)
        m |= S_IROTH | S_IWOTH;
    return m ? m : S_IRUSR | S_IWUSR;
}

/* Whether an existing segment file is a regular file of one name whose owner may serve the log whose fstat is *lst
 * (see the top of this file), whatever its bits. When everybody may write the log, its owner does not matter: any
 * user could create it (a creator that may not give it to the log's owner or group keeps it), and its owner can do
 * nothing to the log that every other user cannot (write and read the segment, take its flock, write the log); its
 * sizes are checked before they are used. */
static int fl__seg_owner_trusted(const struct stat *seg, const struct stat *lst)
{
    if (!S_ISREG(seg->st_mode) || seg->st_nlink != 1)
        return 0;
    return seg->st_uid == lst->st_uid || seg->st_uid == 0 || seg->st_uid == geteuid() ||
           (seg->st_gid == lst->st_gid && (lst->st_mode & S_IWGRP)) || (lst->st_mode & S_IWOTH);
}

/* The same, and its bits grant nothing that the log's write bits do not. */
static int fl__seg_trusted(const struct stat *seg, const struct stat *lst)
{
    if (!fl__seg_owner_trusted(seg, lst))
        return 0;
    if ((seg->st_mode & 07777) & ~fl__seg_mode(lst->st_mode))
        return 0;
    if ((seg->st_mode & S_IRWXG) && seg->st_gid != lst->st_gid && !(lst->st_mode & S_IWOTH))
        return 0; /* the group's bits for another group than the log's: they grant what the log does not */
    return 1;
}

/* Whether `path` still names the file whose fstat is *st (an opener may hold a file that was removed since); path
 * is looked up in dir (fl__dir_name), or whole with AT_FDCWD. */
static int fl__still_there(int dir, const char *path, const struct stat *st)
{
    struct stat now;
    return fstatat(dir, fl__dir_name(dir, path), &now, 0) == 0 && now.st_ino == st->st_ino && now.st_dev == st->st_dev;
}

/* Removes the segment file that the caller holds alone (exclusive flock) and that holds nothing, if `path` still
 * names it (fstat *st) in the directory of the open in progress. An opener that waits for the lock on it then finds
 * it gone and starts again. */
static void fl__seg_drop(const forklog *log, const char *path, const struct stat *st)
{
    struct fl__dir d;
    if (fl__dir_enter(log, &d) < 0)
        return;
    if (fl__still_there(d.fd, path, st))
        unlinkat(d.fd, fl__dir_name(d.fd, path), 0);
    fl__dir_leave(&d);
}

static int fl__mutex_init(pthread_mutex_t *mu)
{
    pthread_mutexattr_t attr;
    int rc = pthread_mutexattr_init(&attr);
    if (rc != 0)
        return -rc;
    rc = pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    if (rc == 0)
        rc = pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    if (rc == 0)
        rc = pthread_mutex_init(mu, &attr);
    pthread_mutexattr_destroy(&attr);
    return -rc;
}

/* The machine's boot id (/proc/sys/kernel/random/boot_id, 36 characters), all 0 where it cannot be read. */
static void fl__boot_id(char boot[36])
{
    memset(boot, 0, 36);
    int fd = fl__open_spare("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    if (read(fd, boot, 36) != 36)
        memset(boot, 0, 36);
    close(fd);
}

/* The inode numbers of this process's PID and time namespaces, 0 where /proc does not say. */
static void fl__namespaces(uint64_t *pidns, uint64_t *timens)
{
    struct stat st;
    *pidns = stat("/proc/self/ns/pid", &st) == 0 ? (uint64_t)st.st_ino : 0;
    *timens = stat("/proc/self/ns/time", &st) == 0 ? (uint64_t)st.st_ino : 0;
}

/* Whether a process of these namespaces is a guest of the segment whose head is *h. A PID namespace that either
 * side could not read (0) may be another one: guest. A time namespace that neither side has (a kernel before 5.6)
 * is the same one. */
static int fl__guest(uint64_t pidns, uint64_t timens, const struct fl__seg_head *h)
{
    return pidns == 0 || h->pidns == 0 || pidns != h->pidns || timens != h->timens;
}

/* Builds a zeroed segment of seg_len bytes for the handle's settings and the file log->fd (fstat *st). The head's
 * `ready` is stored last. */
static int fl__seg_build(forklog *log, struct fl__seg *s, size_t seg_len, uint64_t builds, const struct stat *st)
{
    size_t buf_cap, ring_cap, len;
    int rc = fl__seg_bytes(log, &buf_cap, &ring_cap, &len, NULL, 0);
    if (rc < 0)
        return rc;
    if ((rc = fl__mutex_init(&s->mu)) < 0)
        return rc;
    s->size = (uint64_t)st->st_size;
    s->ino = (uint64_t)st->st_ino;
    s->dev = (uint64_t)st->st_dev;
    s->gen = 1;
    /* A file that ends in the middle of a line is known (its identity is checked as any file's) but not final
     * (2): the first record's holder ends that line with a newline, under the lock (fl__sync_file), and reads the
     * file again. Opening the log writes nothing. */
    s->file_known = S_ISREG(st->st_mode) && fl__ends_mid_line(log->fd, (uint64_t)st->st_size) ? 2 : 1;
    atomic_init(&s->regular, S_ISREG(st->st_mode) ? 1u : 0u);
    s->buf_cap = buf_cap;
    s->ring_cap = ring_cap;
    log->buf_cap = buf_cap;
    log->ring_cap = ring_cap;
    log->gen = 1;
    memcpy(s->head.magic, FL__MAGIC, sizeof FL__MAGIC);
    s->head.layout = FL__LAYOUT_WORD;
    s->head.abi = FL__ABI;
    s->head.seg_len = seg_len;
    s->head.flags = log->flags & FORKLOG_BUFFERED;
    s->head.rotate_bytes = log->rotate_bytes;
    s->head.rotate_keep = log->rotate_keep;
    s->head.flush_ms = (uint32_t)(log->flush_ns / 1000000);
    s->head.builds = builds;
    s->head.buffer_size = log->flags & FORKLOG_BUFFERED ? log->buffer_size : 0;
    fl__namespaces(&s->head.pidns, &s->head.timens);
    fl__boot_id(s->head.boot);
    atomic_thread_fence(memory_order_release);
    s->head.ready = FL__READY;
    return 0;
}

/* The handle's copies of the settings the segment's users share. */
static void fl__adopt_settings(forklog *log, const struct fl__seg_head *h)
{
    log->flags = (log->flags & ~(unsigned)FORKLOG_BUFFERED) | (h->flags & FORKLOG_BUFFERED);
    log->rotate_bytes = h->rotate_bytes;
    log->rotate_keep = h->rotate_keep;
    log->flush_ns = (int64_t)h->flush_ms * 1000000;
}

/* Whether a built segment's head can be read by this library; explains why not. */
static int fl__head_ok(const struct fl__seg_head *h, const char *segpath, char *err, size_t errlen)
{
    if (memcmp(h->magic, FL__MAGIC, sizeof FL__MAGIC) != 0) {
        fl__explain(err, errlen, "%s is not a forklog segment file", segpath);
        return 0;
    }
    if (h->layout != FL__LAYOUT_WORD || h->abi != FL__ABI) {
        fl__explain(err, errlen,
                    "%s has layout %#x for ABI %#x, this library reads layout %#x for ABI %#x: the log is in use by "
                    "another forklog version or C library",
                    segpath, h->layout, h->abi, FL__LAYOUT_WORD, FL__ABI);
        return 0;
    }
    return 1;
}

/* Whether the sizes of a segment whose head is *h are the ones its settings give: the length of the segment, and
 * (once it is mapped at s) the sizes of its buffer and rings, which every append relies on. Anybody who may write
 * the log may write its segment file, so a length or a size that lies is refused before it is used. Sets the
 * handle's copies of the sizes; explains a lie. */
static int fl__sizes_ok(forklog *log, const struct fl__seg_head *h, const struct fl__seg *s, const char *segpath,
                        char *err, size_t errlen)
{
    size_t buf_cap = 0, ring_cap = 0, len = 0;
    int buffered = (h->flags & FORKLOG_BUFFERED) != 0;
    if ((h->flags & ~(uint32_t)FORKLOG_BUFFERED) || buffered != (h->buffer_size != 0) ||
        fl__shape(buffered, h->buffer_size, h->rotate_bytes, &buf_cap, &ring_cap, &len) < 0 || h->seg_len != len) {
        fl__explain(err, errlen,
                    "%s is damaged: it says it is %llu bytes long, where its settings (flags %#x, buffer_size %llu, "
                    "rotate_bytes %llu) make a segment of %zu (remove it once no process uses the log, or open with "
                    "FORKLOG_PRIVATE)",
                    segpath, (unsigned long long)h->seg_len, (unsigned)h->flags, (unsigned long long)h->buffer_size,
                    (unsigned long long)h->rotate_bytes, len);
        return 0;
    }
    if (s && (s->buf_cap != buf_cap || s->ring_cap != ring_cap)) {
        fl__explain(err, errlen,
                    "%s is damaged: its buffer is %zu bytes and its rings %zu, where its settings make %zu and %zu "
                    "(remove it once no process uses the log, or open with FORKLOG_PRIVATE)",
                    segpath, s->buf_cap, s->ring_cap, buf_cap, ring_cap);
        return 0;
    }
    log->buf_cap = buf_cap;
    log->ring_cap = ring_cap;
    return 1;
}

/* A zero option joins the segment's value; another one must be equal. buffer_size counts only with
 * FORKLOG_BUFFERED: without it, a builder ignores it (the segment it builds has no buffer), so a joiner must too,
 * or the very options that built a log would be refused by it. */
static int fl__settings_agree(const forklog *log, const struct forklog_options *o, const struct fl__seg_head *h,
                              char *err, size_t errlen)
{
    const char *what = NULL;
    unsigned long long mine = 0, theirs = 0;
    if ((o->flags & FORKLOG_BUFFERED) && !(h->flags & FORKLOG_BUFFERED))
        what = "FORKLOG_BUFFERED", mine = 1, theirs = 0;
    else if ((o->flags & FORKLOG_BUFFERED) && o->buffer_size && o->buffer_size != h->buffer_size)
        what = "buffer_size", mine = o->buffer_size, theirs = h->buffer_size;
    else if (o->flush_ms && o->flush_ms != h->flush_ms)
        what = "flush_ms", mine = o->flush_ms, theirs = h->flush_ms;
    else if (o->rotate_bytes && o->rotate_bytes != h->rotate_bytes)
        what = "rotate_bytes", mine = o->rotate_bytes, theirs = h->rotate_bytes;
    else if (o->rotate_keep && o->rotate_keep != h->rotate_keep)
        what = "rotate_keep", mine = o->rotate_keep, theirs = h->rotate_keep;
    if (!what)
        return 1;
    fl__explain(err, errlen, "%s %llu conflicts with %llu, which the other users of %s have (0 joins theirs)", what,
                mine, theirs, log->path);
    return 0;
}

/* Maps len bytes of the segment file. */
static struct fl__seg *fl__seg_map(int fd, size_t len, int *rc)
{
    void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    *rc = m == MAP_FAILED ? -errno : 0;
    return m == MAP_FAILED ? NULL : m;
}

/* The same, and its undoing, for a file this call may hold alone (see fl__alone_map). */
static struct fl__seg *fl__alone_map(int fd, size_t len, int slot, int *rc);
static void fl__alone_unmap(void *m, size_t len, int slot);

/* Alone with the segment file (exclusive flock): recover what its last users left, then build it anew with this
 * handle's settings. slot: the descriptor's (fl__alone_hold), which its mappings share. */
static int fl__seg_rebuild(forklog *log, int fd, int slot, const struct stat *sst, const char *segpath, char *err,
                           size_t errlen)
{
    struct fl__seg_head h;
    uint64_t builds = 0;
    int rc;
    int built =
        sst->st_size >= (off_t)sizeof h && pread(fd, &h, sizeof h, 0) == (ssize_t)sizeof h && h.ready == FL__READY;
    char boot[36], none[36] = {0};
    fl__boot_id(boot);
    if (built && fl__head_ok(&h, segpath, NULL, 0) && memcmp(h.boot, boot, sizeof boot) != 0 &&
        memcmp(h.boot, none, sizeof none) != 0 && memcmp(boot, none, sizeof none) != 0) {
        /* Built before the machine last started: its pages reached the disk at different times, if at all, so
         * its counts and its records need not agree. Nothing of it is trusted: it is built anew (the records
         * that were in its buffers are gone, as the page cache's are). */
        builds = h.builds;
        built = 0;
    }
    if (!built && sst->st_size > 0) {
        /* Not built: a builder died before it was done, and left the file empty, zeros, or a head with our magic
         * and no ready word. Anything else is another program's file at our name, never truncated or used. */
        unsigned char b[sizeof h];
        ssize_t n = pread(fd, b, sizeof b, 0);
        if (n < 0)
            return -errno;
        int zeros = 1;
        for (ssize_t i = 0; i < n && zeros; i++)
            zeros = b[i] == 0;
        if (!zeros && (n < (ssize_t)sizeof FL__MAGIC || memcmp(b, FL__MAGIC, sizeof FL__MAGIC) != 0)) {
            fl__explain(err, errlen, "%s is not a forklog segment file (remove it, or open with FORKLOG_PRIVATE)",
                        segpath);
            return -EPROTO;
        }
    }
    if (built) {
        /* Built and used before: its head must be ours to read the rest. */
        if (!fl__head_ok(&h, segpath, err, errlen) || !fl__sizes_ok(log, &h, NULL, segpath, err, errlen))
            return -EPROTO;
        if ((uint64_t)sst->st_size < h.seg_len) {
            fl__explain(err, errlen, "%s is shorter than its head says", segpath);
            return -EPROTO;
        }
        builds = h.builds;
        struct fl__seg *old = fl__alone_map(fd, (size_t)h.seg_len, slot, &rc);
        if (!old) {
            fl__explain(err, errlen, "cannot map %s: %s", segpath, strerror(-rc));
            return rc;
        }
        if (!fl__sizes_ok(log, &h, old, segpath, err, errlen)) {
            fl__alone_unmap(old, (size_t)h.seg_len, slot);
            return -EPROTO;
        }
        /* The handle works on the old segment for a moment, with its settings and a generation that is never
         * current (so the repair and the flush go to path by name). */
        unsigned flags = log->flags;
        unsigned long long rotate_bytes = log->rotate_bytes;
        unsigned rotate_keep = log->rotate_keep;
        int64_t flush_ns = log->flush_ns;
        log->seg = old;
        log->seg_len = (size_t)h.seg_len;
        fl__adopt_settings(log, &h);
        log->gen = 0;
        rc = fl__recover(log);
        fl__alone_unmap(old, (size_t)h.seg_len, slot);
        log->seg = NULL;
        log->flags = flags;
        log->rotate_bytes = rotate_bytes;
        log->rotate_keep = rotate_keep;
        log->flush_ns = flush_ns;
        if (rc < 0) {
            fl__explain(err, errlen, "cannot write the records that the log's last users left in %s: %s", segpath,
                        strerror(-rc));
            return rc;
        }
        FL__CRASH(SEG_RECOVERED);
    }
    struct stat now;
    if (fstat(log->fd, &now) < 0)
        return -errno;
    size_t buf_cap, ring_cap, len;
    if ((rc = fl__seg_bytes(log, &buf_cap, &ring_cap, &len, err, errlen)) < 0)
        return rc;
    /* Truncating to 0 first zero-fills every byte: the segment is built from nothing. From here on the file holds
     * nothing to keep, and an open that fails removes it (it would otherwise stay, empty, beside the log). A size
     * past RLIMIT_FSIZE is refused here, before ftruncate(): the kernel would fail it with EFBIG but also raise
     * SIGXFSZ, whose default action kills a caller that never writes near its limit and was promised -EFBIG. */
    struct rlimit fsize;
    if (getrlimit(RLIMIT_FSIZE, &fsize) == 0 && fsize.rlim_cur != RLIM_INFINITY && (rlim_t)len > fsize.rlim_cur)
        rc = -EFBIG;
    else if (ftruncate(fd, 0) < 0 || ftruncate(fd, (off_t)len) < 0)
        rc = -errno;
    if (rc < 0) {
        fl__explain(err, errlen, "cannot size %s: %s", segpath, strerror(-rc));
        fl__seg_drop(log, segpath, sst);
        return rc;
    }
    size_t core = sizeof(struct fl__seg) + buf_cap;
    if ((rc = fl__seg_fill(fd, core < len ? core : len)) < 0) {
        fl__explain(err, errlen, "cannot fill %s: %s", segpath, strerror(-rc));
        fl__seg_drop(log, segpath, sst);
        return rc;
    }
    FL__CRASH(SEG_SIZED);
    struct fl__seg *s = fl__alone_map(fd, len, slot, &rc);
    if (!s) {
        fl__explain(err, errlen, "cannot map %s: %s", segpath, strerror(-rc));
        fl__seg_drop(log, segpath, sst);
        return rc;
    }
    if ((rc = fl__seg_build(log, s, len, builds + 1, &now)) < 0) {
        fl__alone_unmap(s, len, slot);
        fl__seg_drop(log, segpath, sst);
        return rc;
    }
    /* The log's file was opened before the segment file was locked, and the log's last users may have moved it
     * since (a rotation, or a rename by logrotate and a forklog_reopen(), then their last close removed the segment
     * that held the request): path then names another file, or none. This handle's records go where a joiner's
     * would, to path: the generation is one this handle is not on, and its first record reopens path by name. (After
     * a recovery, whose sync reopened path, the descriptor is path's file, unless it moved again since.) */
    if (!fl__still_there(fl__dir_now(), log->path, &now))
        fl__new_generation(s);
    log->seg = s;
    log->seg_len = len;
    return 0;
}

/* Joins a built segment (shared flock held; slot: the descriptor's, which its mapping shares until the open succeeds:
 * refused, the opener may yet lock the file alone to remove it). Returns 0, a negative errno, or 1 when it is not
 * built (its builder died): the caller tries again. */
static int fl__seg_join(forklog *log, const struct forklog_options *o, int fd, int slot, const struct stat *sst,
                        const char *segpath, char *err, size_t errlen)
{
    struct fl__seg_head h;
    if (sst->st_size < (off_t)sizeof h || pread(fd, &h, sizeof h, 0) != (ssize_t)sizeof h || h.ready != FL__READY)
        return 1;
    if (!fl__head_ok(&h, segpath, err, errlen) || !fl__sizes_ok(log, &h, NULL, segpath, err, errlen))
        return -EPROTO;
    if ((uint64_t)sst->st_size < h.seg_len) {
        fl__explain(err, errlen, "%s is shorter than its head says", segpath);
        return -EPROTO;
    }
    int rc;
    struct fl__seg *s = fl__alone_map(fd, (size_t)h.seg_len, slot, &rc);
    if (!s) {
        fl__explain(err, errlen, "cannot map %s: %s", segpath, strerror(-rc));
        return rc;
    }
    /* The sizes in the segment itself: read once here, from the mapping, and kept in the handle. */
    if (!fl__sizes_ok(log, &h, s, segpath, err, errlen)) {
        fl__alone_unmap(s, (size_t)h.seg_len, slot);
        return -EPROTO;
    }
    if (!fl__settings_agree(log, o, &h, err, errlen)) {
        fl__alone_unmap(s, (size_t)h.seg_len, slot);
        return -EINVAL;
    }
    uint64_t pidns, timens;
    fl__namespaces(&pidns, &timens);
    if (pidns && h.pidns && pidns != h.pidns) {
        /* The robust mutex names its holder by thread id as the holder's PID namespace numbers it, and the kernel
         * that cleans up after a thread killed while it takes the mutex compares that id with the dying thread's own,
         * as the dying thread's namespace numbers it: a thread of another namespace with the holder's number (pid 2
         * of two containers) frees the lock under its live holder, and the next writer repairs and writes beside
         * it. No process of another PID namespace takes this lock. */
        fl__alone_unmap(s, (size_t)h.seg_len, slot);
        fl__explain(err, errlen,
                    "%s is used by processes of another PID namespace, and the log's lock cannot be shared across PID "
                    "namespaces (share the PID namespace, or open with FORKLOG_PRIVATE)",
                    log->path);
        return -EXDEV;
    }
    fl__adopt_settings(log, &h);
    if (fl__guest(pidns, timens, &h))
        log->flags |= FL__GUEST;
    log->seg = s;
    log->seg_len = (size_t)h.seg_len;
    /* A generation that is never current: the first record, lock held, takes the descriptor as it is when it is the
     * generation's file, and reopens path by name otherwise (fl__sync_file). */
    log->gen = 0;
    FL__CRASH(SEG_JOINED);
    return 0;
}

/* The shared flock, waited for as long as the process holding the exclusive one builds or removes the segment: a
 * signal caught meanwhile (a handler without SA_RESTART) does not end the wait. */
static int fl__flock_sh(int fd)
{
    int rc;
    while ((rc = flock(fd, LOCK_SH)) < 0 && errno == EINTR)
        ;
    return rc;
}

/* Gives a new segment file the log's owner and group (failing without CAP_CHOWN: the creator's, with the log's
 * group when the creator is a member of it) and exactly the bits `want`, whatever the umask. The group's bits only
 * when the file has the log's group, or everybody may write the log: kept by a creator outside that group, they
 * would grant the creator's own group, whose members may not write the log, its lock and its buffer. */
static void fl__seg_give(int fd, const struct stat *lst, mode_t want)
{
    if (fchown(fd, lst->st_uid, lst->st_gid) < 0 && fchown(fd, (uid_t)-1, lst->st_gid) < 0) {
        /* Neither was allowed: the file keeps the creator's owner and group. The second result is tested only
         * because glibc's _FORTIFY_SOURCE marks fchown() warn_unused_result, which a (void) cast does not silence
         * in gcc. */
    }
    struct stat st;
    if (!(lst->st_mode & S_IWOTH) && (fstat(fd, &st) < 0 || st.st_gid != lst->st_gid))
        want &= (mode_t)~S_IRWXG;
    (void)fchmod(fd, want);
}

/* A segment file of a trusted owner whose bits grant more than the log's write bits do now: the log's mode or group
 * changed since the file was made (a chmod that took a write bit away, logrotate's `create 0640 app adm` for a log
 * that was 0660 app:app), while the log was in use or after its users died. Refused, it kept every later opener
 * out, the log's owner and root included, for as long as the log was in use (for ever, for a file the dead left),
 * and removing it by hand while the log was in use gave the log two locks. An opener that may (the file's owner, or
 * root) gives it the log's owner, group and bits, as a new one gets them, and uses it. A descriptor opened under the
 * old bits stays open: one of a user the log no longer grants, as that user's descriptor of the log stays; or, had a
 * user of the log (the only owner trusted here) made the file wide on purpose, one that user could as well have
 * handed over through a process of its own. Anybody else changes nothing and is refused. Returns 1 when the file is
 * trusted now (*sst read again). */
static int fl__seg_narrow(int fd, struct stat *sst, const struct stat *lst)
{
    if (!fl__seg_owner_trusted(sst, lst))
        return 0;
    fl__seg_give(fd, lst, fl__seg_mode(lst->st_mode));
    return fstat(fd, sst) == 0 && fl__seg_trusted(sst, lst);
}

#if !defined(O_TMPFILE) && defined(__O_TMPFILE)
#define O_TMPFILE __O_TMPFILE /* glibc names it only under _GNU_SOURCE */
#endif

/* Creates the segment file at segpath, given to the log's owner and group with the bits `want` before it has its
 * name: an unnamed file (O_TMPFILE) linked at segpath once it is complete. Created in place and given away after,
 * an opener killed in between (SIGKILL, the OOM killer) would leave at segpath a file of the wrong owner or mode,
 * which the log's other users could never open (-EACCES) nor trust (-EPERM) until somebody removed it by hand.
 * Where the file system or the kernel has no O_TMPFILE, or /proc is missing, the file is created in place. Returns
 * the descriptor, or -1 with errno set (EEXIST: somebody else's is there). */
static int fl__seg_create(int dir, const char *segpath, const struct stat *lst, mode_t want)
{
#ifdef O_TMPFILE
    size_t dlen = (size_t)(strrchr(segpath, '/') + 1 - segpath);
    char *dirpath = dir == AT_FDCWD ? malloc(dlen + 1) : NULL;
    int fd = -1;
    if (dirpath) {
        memcpy(dirpath, segpath, dlen);
        dirpath[dlen] = '\0';
        fd = open(dirpath, O_RDWR | O_TMPFILE | O_CLOEXEC, want);
        free(dirpath);
    } else if (dir != AT_FDCWD) {
        fd = openat(dir, ".", O_RDWR | O_TMPFILE | O_CLOEXEC, want);
    }
    if (fd >= 0) {
        fl__seg_give(fd, lst, want);
        char link[32];
        snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
        if (linkat(AT_FDCWD, link, dir, fl__dir_name(dir, segpath), AT_SYMLINK_FOLLOW) == 0)
            return fd;
        int e = errno;
        close(fd);
        if (e == EEXIST) {
            errno = EEXIST;
            return -1;
        }
    }
#endif
    int fd2 =
        openat(dir, fl__dir_name(dir, segpath), O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY, want);
    if (fd2 >= 0)
        fl__seg_give(fd2, lst, want);
    return fd2;
}

/* The descriptors of a segment file that a call of this process opened for itself and may lock alone (to build the
 * segment, or to remove its file as the last user), each as fd + 1 in a slot (0: free). A child that another
 * thread forks meanwhile gets a copy of each, which shares its open file description and so its flock: were this
 * process killed before it unlocks, the child would hold the exclusive lock for as long as it lives, and every
 * later opener of the log would wait for it. The child closes its copies at once, in fork()'s handler: it cannot
 * use them (the call that opened them goes on in the parent only), and its close drops no lock of the parent's.
 * A fork between the open and the slot's filling is seen by fork()'s count (the prepare handler runs before the
 * child's memory is copied): the caller closes that descriptor, unlocked, and opens another. A slot is emptied
 * after the descriptor is unlocked (or left with the shared lock a handle keeps) and before it is closed, so that a
 * child never closes a number that is something else by then. The same holds for a mapping of the file made while
 * the slot is held (fl__alone_map), which holds the description as a copy of the descriptor does: the child unmaps
 * it. More calls at once than slots go untracked. */
#define FL__ALONE_SLOTS 16
static atomic_int fl__alone_fds[FL__ALONE_SLOTS];
/* The mapping of the segment file that the call of each slot has made with its descriptor (fl__alone_map), its
 * address (0: none) and length: a child's copy of it would hold the file's open description, and so the exclusive
 * flock, as a copy of the descriptor would. */
static _Atomic(uintptr_t) fl__alone_maps[FL__ALONE_SLOTS];
static atomic_size_t fl__alone_map_lens[FL__ALONE_SLOTS];
static atomic_uint fl__alone_forks;
static pthread_once_t fl__alone_once = PTHREAD_ONCE_INIT;

static void fl__alone_atfork_prepare(void)
{
    atomic_fetch_add(&fl__alone_forks, 1);
}

static void fl__alone_atfork_child(void)
{
    for (unsigned k = 0; k < FL__ALONE_SLOTS; k++) {
        int v = atomic_exchange(&fl__alone_fds[k], 0);
        if (v > 0)
            close(v - 1);
        uintptr_t at = atomic_exchange(&fl__alone_maps[k], 0);
        if (at)
            munmap((void *)at, atomic_load(&fl__alone_map_lens[k]));
    }
}

static void fl__alone_register(void)
{
    (void)pthread_atfork(fl__alone_atfork_prepare, NULL, fl__alone_atfork_child);
}

/* fork()'s count, read before a descriptor is opened, for fl__alone_hold(). */
static unsigned fl__alone_begin(void)
{
    pthread_once(&fl__alone_once, fl__alone_register);
    return atomic_load(&fl__alone_forks);
}

/* Tracks fd, opened after fl__alone_begin() returned forks. Returns its slot for fl__alone_drop(), -1 when none was
 * free, or -2 when a fork came in between: the child may hold an untracked copy, so fd must be closed unlocked. */
static int fl__alone_hold(int fd, unsigned forks)
{
    int slot = -1;
    for (int k = 0; k < FL__ALONE_SLOTS && slot < 0; k++) {
        int free_slot = 0;
        if (atomic_compare_exchange_strong(&fl__alone_fds[k], &free_slot, fd + 1))
            slot = k;
    }
    if (atomic_load(&fl__alone_forks) != forks) {
        if (slot >= 0)
            atomic_store(&fl__alone_fds[slot], 0);
        return -2;
    }
    return slot;
}

static void fl__alone_drop(int slot)
{
    if (slot >= 0) {
        atomic_store(&fl__alone_maps[slot], 0);
        atomic_store(&fl__alone_fds[slot], 0);
    }
}

/* Maps len bytes of the segment file whose descriptor the call of `slot` tracks, tracked in that slot as the
 * descriptor is, until the open succeeds. A child forked meanwhile gets a copy of every mapping, and a mapping holds
 * the file's open description, and with it the flock: had the process been killed while it held the file alone (as
 * it writes what the last users left, once it has built the segment, or as a refused joiner that removes the file
 * the last user could not), the child kept the exclusive flock for as long as it lived, and every later opener of
 * the log waited for it. So the range is first a reservation of anonymous memory, recorded in the slot, over which
 * the file is then mapped: a child forked at any moment unmaps whatever is there (fl__alone_atfork_child). Untracked
 * with no slot (-1). */
static struct fl__seg *fl__alone_map(int fd, size_t len, int slot, int *rc)
{
    if (slot < 0)
        return fl__seg_map(fd, len, rc);
    void *r = mmap(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | FL__NORESERVE, -1, 0);
    if (r == MAP_FAILED) {
        *rc = -errno;
        return NULL;
    }
    atomic_store(&fl__alone_map_lens[slot], len);
    atomic_store(&fl__alone_maps[slot], (uintptr_t)r);
    void *m = mmap(r, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0);
    if (m == MAP_FAILED) {
        *rc = -errno;
        atomic_store(&fl__alone_maps[slot], 0);
        munmap(r, len);
        return NULL;
    }
    *rc = 0;
    return m;
}

/* Unmaps what fl__alone_map mapped: the file's pages are first replaced by anonymous memory (a child forked from
 * then on gets no copy of the file's mapping), the slot is emptied, and the range unmapped last (a child forked after
 * that unmaps nothing that another thread has mapped at the same address since). */
static void fl__alone_unmap(void *m, size_t len, int slot)
{
    if (slot >= 0) {
        (void)mmap(m, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | FL__NORESERVE, -1, 0);
        atomic_store(&fl__alone_maps[slot], 0);
    }
    munmap(m, len);
}

/* The log's shared segment file: opened (or created), checked, then built alone or joined. */
static void fl__seg_remove_unused(int fd, int dir, const char *segpath);

/* Every name here is looked up in the directory that the open resolved for the log file (fl__dir_enter): the segment
 * file found is the one beside the file the open holds, whatever happens meanwhile to the names that lead there. */
static int fl__seg_named(forklog *log, const struct forklog_options *o, const struct stat *lst, char *err,
                         size_t errlen)
{
    char *segpath = fl__seg_path(log->path);
    if (!segpath)
        return -ENOMEM;
    if (strlen(segpath) >= PATH_MAX) {
        /* Looked up in its directory, the name would do; but the close and a reopen build it whole (fl__seg_close,
         * fl__seg_follow), and without O_PATH it is looked up whole: a path the system does not take. */
        fl__explain(err, errlen, "cannot open the log's segment file %s: %s", segpath, strerror(ENAMETOOLONG));
        free(segpath);
        return -ENAMETOOLONG;
    }
    struct fl__dir d;
    int rc = fl__dir_enter(log, &d);
    if (rc < 0) {
        free(segpath);
        return rc;
    }
    int dir = d.fd;
    mode_t want = fl__seg_mode(lst->st_mode);
    rc = -EAGAIN;
    for (int tries = 0; tries < FL__JOIN_TRIES; tries++) {
        const unsigned forks = fl__alone_begin();
        int fd = fl__seg_create(dir, segpath, lst, want), existing = 0;
        if (fd >= 0) {
            FL__CRASH(SEG_CREATED);
        } else if (errno == EEXIST) {
            existing = 1;
            fd = openat(dir, fl__dir_name(dir, segpath), O_RDWR | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
            if (fd < 0 && errno == ENOENT)
                continue; /* removed by its last user in between */
        }
        if (fd < 0 && (errno == EMFILE || errno == ENFILE) && fl__dir_spare()) {
            /* The log file took the last descriptor but the directory's, which this open gives back: it goes on by
             * the segment file's whole name, as a process with no descriptor to spare always did. */
            dir = fl__dir_now();
            continue;
        }
        if (fd >= 0 && (fd = fl__fd_above_stdio(fd)) < 0) {
            rc = fd;
            fl__explain(err, errlen, "cannot open the log's segment file %s: %s", segpath, strerror(-rc));
            break;
        }
        if (fd < 0) {
            rc = -errno;
            if (rc == -ELOOP || rc == -ENXIO || rc == -EISDIR) {
                rc = -EPERM;
                fl__explain(err, errlen, "%s is not the log's segment file (a link, a directory or a special file)",
                            segpath);
            } else if (!existing) {
                /* Nobody's file is there, and this process could not make one (a directory it may not write). */
                fl__explain(err, errlen, "cannot create the log's segment file %s: %s%s", segpath, strerror(-rc),
                            rc == -EACCES || rc == -EPERM || rc == -EROFS
                                ? " (the log's first user makes it in the log's directory; FORKLOG_PRIVATE needs no "
                                  "file there)"
                                : "");
            } else {
                /* Another user's file, whose bits let this process in through no class (a log whose mode or group
                 * changed since, a log owner outside the log's group): its owner and bits say which. */
                struct stat sst;
                if (fstatat(dir, fl__dir_name(dir, segpath), &sst, AT_SYMLINK_NOFOLLOW) == 0)
                    fl__explain(
                        err, errlen,
                        "cannot open the log's segment file %s: %s (owner %u, group %u, mode %04o, where the log "
                        "is owner %u, group %u, mode %04o)",
                        segpath, strerror(-rc), (unsigned)sst.st_uid, (unsigned)sst.st_gid,
                        (unsigned)(sst.st_mode & 07777), (unsigned)lst->st_uid, (unsigned)lst->st_gid,
                        (unsigned)(lst->st_mode & 07777));
                else
                    fl__explain(err, errlen, "cannot open the log's segment file %s: %s", segpath, strerror(-rc));
            }
            break;
        }
        struct stat sst;
        if (fstat(fd, &sst) < 0) {
            rc = -errno;
            close(fd);
            break;
        }
        if (sst.st_nlink == 0) {
            close(fd); /* removed by its last user since we opened it: a new one is due */
            continue;
        }
        if (!fl__seg_trusted(&sst, lst) && !fl__seg_narrow(fd, &sst, lst)) {
            fl__explain(err, errlen,
                        "%s is not the log's segment file: owner %u, group %u, mode %04o, %u link(s), where the log "
                        "is owner %u, group %u, mode %04o (remove it once no process uses the log, or open with "
                        "FORKLOG_PRIVATE)",
                        segpath, (unsigned)sst.st_uid, (unsigned)sst.st_gid, (unsigned)(sst.st_mode & 07777),
                        (unsigned)sst.st_nlink, (unsigned)lst->st_uid, (unsigned)lst->st_gid,
                        (unsigned)(lst->st_mode & 07777));
            close(fd);
            rc = -EPERM;
            break;
        }
        const int slot = fl__alone_hold(fd, forks);
        if (slot == -2) {
            /* Forked meanwhile: the child may keep a copy, so this description is never to be locked in. */
            close(fd);
            continue;
        }
        if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
            FL__CRASH(SEG_ALONE);
            /* Read the file again now that nobody else may change it: between the fstat above and the lock, another
             * process may have built the segment, buffered records in it and died, and the rebuild decides from
             * the size whether there is anything to recover. */
            if (fstat(fd, &sst) < 0)
                rc = -errno;
            else
                rc = fl__still_there(dir, segpath, &sst) ? fl__seg_rebuild(log, fd, slot, &sst, segpath, err, errlen)
                                                         : 1;
            dir = fl__dir_now(); /* the recovery's reopen may have given the directory back (fl__dir_spare) */
            /* Not atomic (the exclusive lock is dropped first): a process that gets the exclusive lock in between
             * finds a built segment that nobody has used yet and builds it again, with its own settings, and may
             * even write, close as its last user and remove the file, all before this opener has the shared lock.
             * So the opener looks again once it has it: the file still at segpath, as long as it was built, and
             * its head still the one this opener built (every build counts itself in `builds`). Otherwise the segment
             * it mapped is not the log's (another lock, sizes and settings it did not choose, or a removed file
             * nobody else finds: its cut after a failed write took records the log's users wrote since), and it
             * starts again. */
            if (rc == 0) {
                FL__CRASH(SEG_BUILT);
                uint64_t builds = log->seg->head.builds;
                struct fl__seg_head now;
                if (fl__flock_sh(fd) < 0)
                    rc = -errno;
                else if (fstat(fd, &sst) < 0)
                    rc = -errno;
                else if (!fl__still_there(dir, segpath, &sst) || (uint64_t)sst.st_size < log->seg_len ||
                         pread(fd, &now, sizeof now, 0) != (ssize_t)sizeof now || now.ready != FL__READY ||
                         now.builds != builds)
                    rc = 1;
            }
        } else if (errno == EWOULDBLOCK) {
            if (fl__flock_sh(fd) < 0) {
                rc = -errno;
            } else {
                FL__CRASH(SEG_JOIN_LOCKED);
                if (fstat(fd, &sst) < 0)
                    rc = -errno;
                else
                    rc = fl__still_there(dir, segpath, &sst)
                             ? fl__seg_join(log, o, fd, slot, &sst, segpath, err, errlen)
                             : 1;
                /* Refused (settings that conflict with the segment's, another PID namespace, a segment it cannot
                 * map): this opener was never a user. A last user that closed meanwhile could not remove the file
                 * (this shared lock stood in its way): do it for it. Not a file of another layout or a damaged one
                 * (-EPROTO), which is never read past its head, nor changed. */
                if (rc < 0 && rc != -EPROTO)
                    fl__seg_remove_unused(fd, dir, segpath);
            }
        } else {
            rc = -errno;
        }
        if (rc == 0) {
            log->seg_fd = fd; /* shared by the children forked from now on, as the handle is */
            fl__alone_drop(slot);
            break;
        }
        if (log->seg) {
            fl__alone_unmap(log->seg, log->seg_len, slot); /* built here: a joiner's is never kept on failure */
            log->seg = NULL;
        }
        /* Unlocked before it is closed: a child that another thread forked meanwhile shares this description, and
         * would otherwise keep its flock (an exclusive one: every later opener waits for ever) while it lives. */
        flock(fd, LOCK_UN);
        fl__alone_drop(slot);
        close(fd);
        if (rc < 0)
            break;
        /* Removed or not yet built: a moment for its builder or remover, then again. */
        usleep(1000u * (unsigned)(tries + 1));
        rc = -EAGAIN;
    }
    if (rc == -EAGAIN)
        fl__explain(err, errlen, "%s kept changing: gave up after %d tries", segpath, FL__JOIN_TRIES);
    fl__dir_leave(&d);
    free(segpath);
    return rc;
}

/* Whether the absolute `path` reaches its file through /proc: /proc/self/fd/N, /dev/fd/N, /dev/stdout, a path under
 * /proc/self/cwd or /proc/self/root, or a symlink to one of them. Such a name is each process's own (descriptor,
 * working directory, root), so one path names another file in every process: a segment file beside it would be
 * shared by processes that write different files (a record combined by one of them would go into its file, not its
 * writer's), and in /proc it cannot even be created. A path whose text begins with /proc/ is one; otherwise its
 * directory is looked at with statfs(2), which follows links (and so does not see /proc/self/cwd: it reports the
 * directory cwd leads to); a symlink at the last name is followed, up to FL__MAX_LINKS. */
static int fl__name_per_process(const char *path)
{
    char *p = strdup(path);
    int per = 0;
    for (int links = 0; p && links <= FL__MAX_LINKS; links++) {
        if (strncmp(p, "/proc/", 6) == 0) {
            per = 1;
            break;
        }
        size_t dlen = (size_t)(strrchr(p, '/') + 1 - p);
        char *d = malloc(dlen + 1), target[4096];
        if (!d)
            break;
        memcpy(d, p, dlen);
        d[dlen] = '\0';
        struct statfs fs;
        per = statfs(d, &fs) == 0 && fs.f_type == FL__PROC_MAGIC;
        free(d);
        struct stat st;
        ssize_t n;
        if (per || lstat(p, &st) < 0 || !S_ISLNK(st.st_mode) || (n = readlink(p, target, sizeof target - 1)) <= 0 ||
            n == (ssize_t)sizeof target - 1)
            break;
        target[n] = '\0';
        /* The link's target: absolute, or relative to the link's directory. */
        size_t keep = target[0] == '/' ? 0 : dlen;
        char *next = malloc(keep + (size_t)n + 1);
        if (next) {
            memcpy(next, p, keep);
            memcpy(next + keep, target, (size_t)n + 1);
        }
        free(p);
        p = next;
    }
    free(p);
    return per;
}

int fl__seg_open(forklog *log, const struct forklog_options *o, const struct stat *st, char *err, size_t errlen)
{
    log->seg = NULL;
    log->seg_fd = -1;
    log->buffer_size = o->flags & FORKLOG_BUFFERED ? (o->buffer_size ? o->buffer_size : FL__DEFAULT_BUFFER) : 0;
    log->buf_cap = log->ring_cap = 0;
    size_t buf_cap, ring_cap, len;
    int rc = fl__seg_bytes(log, &buf_cap, &ring_cap, &len, err, errlen);
    if (rc < 0)
        return rc;
    if (!(o->flags & FORKLOG_PRIVATE) && S_ISREG(st->st_mode) && !fl__name_per_process(log->path))
        return fl__seg_named(log, o, st, err, errlen);
    /* Private: anonymous shared memory, zero-filled, seen by this process and its children only. Without swap
     * space reserved: the rings are FL__RINGS times buffer_size, of which a log uses what its writer threads fill,
     * and reserving it all could refuse a large buffer_size on a machine with memory to spare. */
    void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | FL__NORESERVE, -1, 0);
    if (m == MAP_FAILED)
        return -errno;
    rc = fl__seg_build(log, m, len, 1, st);
    if (rc < 0) {
        munmap(m, len);
        return rc;
    }
    log->seg = m;
    log->seg_len = len;
    return 0;
}

/* Whether a segment file that nobody else holds is empty: no unfinished write, no record in the buffer or a ring.
 * Read with pread(2), field by field: this process has unmapped it already, and the last close of a process out of
 * memory (RLIMIT_AS, an exhausted heap) must still tell, or it would leave the file beside the log. */
#define FL__SEG_PREAD(fd, field, into)                                                                                 \
    (pread((fd), &(into), sizeof(into), (off_t)offsetof(struct fl__seg, field)) == (ssize_t)sizeof(into))
static int fl__seg_file_idle(int fd)
{
    uint32_t state, batch_phase, ring_phase;
    size_t buf_used;
    _Static_assert(sizeof state == sizeof(((struct fl__seg *)0)->state) &&
                       sizeof batch_phase == sizeof(((struct fl__seg *)0)->batch_phase) &&
                       sizeof ring_phase == sizeof(((struct fl__seg *)0)->ring_phase),
                   "the fields read back are 32 bits wide");
    if (!FL__SEG_PREAD(fd, state, state) || !FL__SEG_PREAD(fd, batch_phase, batch_phase) ||
        !FL__SEG_PREAD(fd, ring_phase, ring_phase) || !FL__SEG_PREAD(fd, buf_used, buf_used))
        return 0;
    if (state != FL__IDLE || batch_phase != FL__BATCH_NONE || ring_phase != FL__RINGS_IDLE || buf_used != 0)
        return 0;
    /* The rings: what fl__rings_pending() reads, head against tail of each (an atomic 64-bit word is stored as a
     * plain one). */
    for (unsigned k = 0; k < FL__RINGS; k++) {
        uint64_t ht[2];
        _Static_assert(offsetof(struct fl__ring, tail) == offsetof(struct fl__ring, head) + sizeof(uint64_t) &&
                           sizeof(atomic_ullong) == sizeof(uint64_t),
                       "a ring's head and tail are two adjacent 64-bit words");
        if (!FL__SEG_PREAD(fd, rings[k].head, ht) || ht[0] != ht[1])
            return 0;
    }
    return 1;
}

/* Removes the segment file at segpath, open as fd (a description of this process's own, which no mapping of ours
 * holds), when nobody else holds it and it holds nothing to write. Leaves fd unlocked, for the caller to close: a
 * child that another thread of the process forks meanwhile shares the description, and would otherwise keep its
 * exclusive flock, left on a file that still holds records (a flush that failed), for as long as it lives: every
 * later opener of the log would wait for ever. */
static void fl__seg_remove_unused(int fd, int dir, const char *segpath)
{
    struct stat st;
    if (flock(fd, LOCK_EX | LOCK_NB) == 0 && fstat(fd, &st) == 0 && fl__still_there(dir, segpath, &st) &&
        fl__seg_file_idle(fd)) {
        FL__CRASH(SEG_CLOSE_ALONE);
        unlinkat(dir, fl__dir_name(dir, segpath), 0);
    }
    flock(fd, LOCK_UN);
}

/* The renameat2(2) flag that keeps a name already taken: declared only under _GNU_SOURCE, and musl has no wrapper
 * before 1.2.5, so the system call is made directly. */
#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif

/* Where the segment file of this handle is now, into buf (cap bytes): the name /proc gives its descriptor, or, for a
 * file that was created unnamed (O_TMPFILE: /proc names it `DIR/#INODE (deleted)` for good), `.NAME.forklog` in
 * that directory, where the file was linked and which carries the unnamed entry with it when it moves; or, for such a
 * file that an earlier move took out of that directory, `.NAME.forklog` beside the log file the handle writes, which
 * a rotation or a reopen keeps in the segment's directory. The log file alone is not enough: it may have left the
 * moved directory (an archiving job that takes it elsewhere, a log name that is a symlink to another directory's
 * file), and the handle that built the segment then failed every reopen with -ESTALE although nobody served the new
 * directory. 1 when that name is the file *mine, 0 otherwise. */
static int fl__seg_now_at(const forklog *log, const struct stat *mine, char *buf, size_t cap)
{
    const char *base = strrchr(log->path, '/') + 1;
    const int fds[2] = {log->seg_fd, log->fd};
    for (int k = 0; k < 2; k++) {
        char link[32];
        snprintf(link, sizeof link, "/proc/self/fd/%d", fds[k]);
        ssize_t n = readlink(link, buf, cap - 1);
        if (n <= 0 || n >= (ssize_t)cap - 1)
            continue;
        buf[n] = '\0';
        char *slash = strrchr(buf, '/');
        if (buf[0] != '/' || !slash)
            continue;
        if (k == 0 && fl__still_there(AT_FDCWD, buf, mine))
            return 1;
        if ((size_t)(slash + 1 - buf) + strlen(base) + 10 > cap)
            continue;
        snprintf(slash + 1, cap - (size_t)(slash + 1 - buf), ".%s.forklog", base);
        if (fl__still_there(AT_FDCWD, buf, mine))
            return 1;
    }
    return 0;
}

int fl__seg_follow(const forklog *log)
{
    if (log->seg_fd < 0 || !log->path[0])
        return 0; /* a private segment is nobody else's: nothing beside the log to agree with */
    struct stat mine, there;
    if (fstat(log->seg_fd, &mine) < 0)
        return -errno;
    char segpath[PATH_MAX]; /* as long as the open of the same name allowed (see fl__seg_close) */
    if (fl__seg_name(segpath, sizeof segpath, log->path) > sizeof segpath)
        return -ENAMETOOLONG;
    /* Looked up in the directory of the operation in progress (a reopen, a rotation), where it opens or renames the
     * log's files: the segment found is the one beside them. */
    struct fl__dir d;
    int rc = fl__dir_enter(log, &d);
    if (rc < 0)
        return rc; /* the directory path names cannot be reached, as the open of path could not (-ENOENT: gone) */
    const char *segname = fl__dir_name(d.fd, segpath);
    rc = -ESTALE;
    if (fstatat(d.fd, segname, &there, 0) == 0) {
        if (there.st_ino == mine.st_ino && there.st_dev == mine.st_dev)
            rc = 0;
    } else if (errno != ENOENT) {
        /* The directory path names cannot be reached (ENOTDIR, EACCES, ELOOP): the open of path would fail the
         * same way, and that is the error docs/api.md gives for a reopen; -ESTALE says the handle is lost for good. */
        rc = -errno;
    } else if (mine.st_nlink == 1) {
        /* Nobody serves the log's directory now: it is new (the old one was moved away and a new one made at its
         * name, or a symlink to it points elsewhere). Our segment moves there, under the name every later opener
         * of path looks for, so that they join this lock rather than build another one over the same file;
         * RENAME_NOREPLACE, so that a segment another opener has just built there is never replaced. */
        char from[PATH_MAX];
        if (fl__seg_now_at(log, &mine, from, sizeof from)) {
            if (syscall(SYS_renameat2, AT_FDCWD, from, d.fd, segname, RENAME_NOREPLACE) == 0)
                rc = 0;
            else if (errno == ENOENT || errno == ENOTDIR)
                rc = -errno; /* no directory at path's name yet (moved away, none made since): not lost, -ENOENT */
        }
    }
    fl__dir_leave(&d);
    return rc;
}

void fl__seg_close(forklog *log)
{
    /* The mapping holds the segment file's open description, and so its shared flock, until it is unmapped. */
    munmap(log->seg, log->seg_len);
    if (log->seg_fd < 0)
        return;
    /* The last user removes the file: nobody else holds it (an exclusive lock on a description of our own; a forked
     * child's or a mapping shares the one just closed and would keep it), and it holds nothing to write. Its name is
     * built on the stack, not the heap, so that a process out of memory still removes it: shorter than PATH_MAX, as
     * the open of the same name was. It is looked for beside the log's name; when the file is no longer there (the
     * log's directory was moved away, or a symlink to it pointed elsewhere, and no reopen took the file along:
     * fl__seg_follow), where it is now, as /proc names it while its descriptor is still open: left there, it would
     * stay beside a log nobody uses. */
    char segpath[PATH_MAX], at[PATH_MAX];
    struct stat mine;
    if (fl__seg_name(segpath, sizeof segpath, log->path) > sizeof segpath) {
        close(log->seg_fd);
        return;
    }
    const int moved = fstat(log->seg_fd, &mine) == 0 && !fl__still_there(AT_FDCWD, segpath, &mine) &&
                      fl__seg_now_at(log, &mine, at, sizeof at);
    close(log->seg_fd);
    struct fl__dir d;
    int dir = AT_FDCWD, own = -1;
    const char *name = segpath;
    if (moved) {
        name = at;
#ifdef O_PATH
        char *slash = strrchr(at, '/');
        *slash = '\0';
        own = open(slash == at ? "/" : at, O_PATH | O_DIRECTORY | O_CLOEXEC);
        *slash = '/';
        dir = own >= 0 ? own : AT_FDCWD; /* none to spare: the name is looked up whole */
#endif
    } else if (fl__dir_enter(log, &d) < 0) {
        return;
    } else {
        dir = d.fd;
    }
    /* A fork by another thread between the open and its tracking (fl__alone_hold): that description is closed
     * unlocked and another opened; after three, the file is left for the next opener, as a dead user's is. */
    for (int tries = 0; tries < 3; tries++) {
        const unsigned forks = fl__alone_begin();
        int fd = openat(dir, fl__dir_name(dir, name), O_RDWR | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (fd < 0 && (errno == EMFILE || errno == ENFILE) && (moved ? own >= 0 : fl__dir_spare())) {
            /* The directory took the number the segment's descriptor freed: given back, the name is looked up
             * whole, as a last user with no descriptor to spare always did. */
            if (moved) {
                close(own);
                own = -1;
            }
            dir = moved ? AT_FDCWD : fl__dir_now();
            fd = openat(dir, fl__dir_name(dir, name), O_RDWR | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        }
        if (fd < 0)
            break;
        struct stat st;
        const int slot = fl__alone_hold(fd, forks);
        /* Found by where its file was a moment ago: only that file. */
        if (slot != -2 && (!moved || (fstat(fd, &st) == 0 && st.st_ino == mine.st_ino && st.st_dev == mine.st_dev)))
            fl__seg_remove_unused(fd, dir, name);
        fl__alone_drop(slot);
        close(fd);
        if (slot != -2)
            break;
    }
    if (own >= 0)
        close(own);
    if (!moved)
        fl__dir_leave(&d);
}
