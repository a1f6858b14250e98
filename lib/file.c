/* SPDX-License-Identifier: MIT */
/*
 * The file behind the handle: each process's own descriptor, file generations (rotation and reopen), and
 * size-based rotation. Every function here runs with the lock held, but fl__open_log_file, which forklog_open()
 * also uses.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Linux's (glibc and musl), declared only under _GNU_SOURCE. */
int dup3(int oldfd, int newfd, int flags);
#if !defined(O_PATH) && defined(__O_PATH)
#define O_PATH __O_PATH /* glibc names it only under _GNU_SOURCE */
#endif

/* The operation in progress on this thread's names (fl__dir_enter): its handle, its directory, and whether that is a
 * descriptor of the operation's own (closed when it ends, or when fl__dir_spare gives it back). */
static _Thread_local const forklog *fl__dir_log;
static _Thread_local int fl__dir_fd;
static _Thread_local int fl__dir_own;

int fl__dir_enter(const forklog *log, struct fl__dir *d)
{
    d->nested = fl__dir_log == log;
    if (d->nested) {
        d->fd = fl__dir_fd;
        return 0;
    }
    d->fd = AT_FDCWD;
#ifdef O_PATH
    /* The directory's name, on the stack (a close out of memory still needs it): a path too long for PATH_MAX is
     * looked up whole, and fails as it always did. */
    const char *slash = strrchr(log->path, '/');
    char dirpath[PATH_MAX];
    size_t dlen = slash ? (size_t)(slash + 1 - log->path) : 0;
    if (slash && slash[1] && dlen < sizeof dirpath) {
        memcpy(dirpath, log->path, dlen);
        dirpath[dlen] = '\0';
        int fd = open(dirpath, O_PATH | O_DIRECTORY | O_CLOEXEC);
        /* EINVAL: a kernel without O_PATH. EMFILE, ENFILE: no descriptor to spare: the names are then looked up
         * whole, as they are without O_PATH. */
        if (fd < 0 && errno != EINVAL && errno != EMFILE && errno != ENFILE)
            return -errno;
        if (fd >= 0)
            d->fd = fd;
    }
#endif
    d->prev_log = fl__dir_log;
    d->prev_fd = fl__dir_fd;
    d->prev_own = fl__dir_own;
    fl__dir_log = log;
    fl__dir_fd = d->fd;
    fl__dir_own = d->fd != AT_FDCWD;
    return 0;
}

void fl__dir_leave(struct fl__dir *d)
{
    if (d->nested)
        return; /* part of the operation that entered first, which ends it */
    if (fl__dir_own)
        close(fl__dir_fd);
    fl__dir_log = d->prev_log;
    fl__dir_fd = d->prev_fd;
    fl__dir_own = d->prev_own;
}

int fl__dir_now(void)
{
    return fl__dir_fd;
}

int fl__dir_spare(void)
{
    if (!fl__dir_own)
        return 0;
    close(fl__dir_fd);
    fl__dir_fd = AT_FDCWD;
    fl__dir_own = 0;
    return 1;
}

int fl__open_spare(const char *path, int flags)
{
    int fd = open(path, flags);
    if (fd < 0 && (errno == EMFILE || errno == ENFILE) && fl__dir_spare())
        fd = open(path, flags);
    return fd;
}

const char *fl__dir_name(int dir, const char *name)
{
    return dir == AT_FDCWD ? name : strrchr(name, '/') + 1;
}

/* Puts the file of fd under log->fd's number (close-on-exec, as every descriptor of the library) and closes fd.
 * The number stays the same: fork() in another thread of this process copies the descriptor table and the
 * handle's memory at different moments, and in the child log->fd must be an open descriptor of the log whichever
 * file it names, never a number that another open may take. */
static int fl__fd_take(forklog *log, int fd)
{
    int rc;
    while ((rc = dup3(fd, log->fd, O_CLOEXEC)) < 0 && errno == EINTR) {
    }
    rc = rc < 0 ? -errno : 0;
    close(fd);
    return rc;
}

void fl__new_generation(struct fl__seg *s)
{
    s->gen++;
    s->file_known = 0;
}

/* Makes a descriptor opened with O_NONBLOCK block again: the opens never wait (a FIFO with no reader fails with
 * ENXIO instead), but the writes must, as on any descriptor the caller would open. Returns 0 or -errno. */
static int fl__blocking(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || (fl & O_NONBLOCK && fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0))
        return -errno;
    return 0;
}

/* Gives a file the log has just created to the configured owner and group; for a file that follows another one
 * (`like`: a rotation's, a reopen's), an owner or group not configured is that file's, and without a configured
 * mode it gets that file's permission bits, whatever the umask, as logrotate's `create` makes the new file. The
 * log's users are whoever may write the file it follows: a new file of the rotating process's own, 0644 under its
 * umask, failed every other user's next record with -EACCES (a root cron job's record that rotated a service's log
 * locked the service out). A failure (a process without CAP_CHOWN, say) is ignored: the file keeps the creator's
 * owner and group, and the record that needed the file is written all the same. fchown() fails as a whole when the
 * owner may not be changed, so the group, which its members may set without privilege, is then tried alone. */
static void fl__give_away(const forklog *log, int fd, const struct stat *like)
{
    uid_t owner = log->owner != (uid_t)-1 || !like ? log->owner : like->st_uid;
    gid_t group = log->group != (gid_t)-1 || !like ? log->group : like->st_gid;
    if (owner != (uid_t)-1 || group != (gid_t)-1) {
        /* Its result is tested only because glibc's _FORTIFY_SOURCE marks fchown() warn_unused_result, which a
         * (void) cast does not silence in gcc: a failure of the second is ignored as the first one is. */
        if (fchown(fd, owner, group) < 0 && owner != (uid_t)-1 && group != (gid_t)-1 &&
            fchown(fd, (uid_t)-1, group) < 0) {
        }
    }
    if (like && !log->mode)
        (void)fchmod(fd, like->st_mode & 0777);
}

int fl__open_log_file(const forklog *log, int flags, const struct stat *like)
{
    const mode_t mode = log->mode ? (mode_t)log->mode : like ? like->st_mode & 0777 : 0644;
    const int base = O_WRONLY | O_APPEND | O_CLOEXEC | O_NOCTTY | O_NONBLOCK | (flags & ~(O_CREAT | O_EXCL));
    int fd, created = 0;
    struct fl__dir d;
    if ((fd = fl__dir_enter(log, &d)) < 0)
        return fd;
again:;
    const int dir = fl__dir_now();
    const char *name = fl__dir_name(dir, log->path);
    if (!(flags & O_CREAT)) {
        fd = openat(dir, name, base);
    } else if (flags & O_EXCL) {
        fd = openat(dir, name, base | O_CREAT | O_EXCL, mode);
        created = fd >= 0;
    } else {
        /* Only a file this call creates is given away, and plain O_CREAT does not say whether it did: open an
         * existing file first, and create a missing one with O_EXCL, which fails if somebody else created it in
         * between (then it is opened as it is). */
        for (int tries = 0;; tries++) {
            fd = openat(dir, name, base);
            if (fd >= 0 || errno != ENOENT)
                break;
            fd = openat(dir, name, base | O_CREAT | O_EXCL, mode);
            if (fd >= 0 || errno != EEXIST) {
                created = fd >= 0;
                break;
            }
            if (tries == 1) {
                /* Twice missing, twice there: path is a dangling symlink, which O_EXCL never follows. Create its
                 * target, as open(2) does; it keeps the creator's owner. */
                fd = openat(dir, name, base | O_CREAT, mode);
                break;
            }
        }
    }
    /* No descriptor left for the file but the directory's: the operation gives that back and looks path up whole
     * (fl__dir_spare), as a process with no descriptor to spare always did. */
    if (fd < 0 && (errno == EMFILE || errno == ENFILE) && fl__dir_spare())
        goto again;
    int err = errno;
    fl__dir_leave(&d);
    if (fd < 0)
        return -err;
    if (created) {
        FL__CRASH(FILE_CREATED);
        fl__give_away(log, fd, like);
    }
    int rc = fl__blocking(fd);
    if (rc < 0) {
        close(fd);
        return rc;
    }
    return fd;
}

/* The file the log writes now (this process's descriptor's), whose owner, group and bits a file that follows it
 * takes where the handle sets none (fl__give_away); NULL when it is no regular file. */
static const struct stat *fl__like(const forklog *log, struct stat *st)
{
    return fstat(log->fd, st) == 0 && S_ISREG(st->st_mode) ? st : NULL;
}

int fl__fd_above_stdio(int fd)
{
    if (fd < 0 || fd > 2)
        return fd;
    int high = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    /* EINVAL means an RLIMIT_NOFILE of 3 or less: no number above 2 exists, so no descriptor is left. */
    int err = high < 0 ? (errno == EINVAL ? -EMFILE : -errno) : 0;
    close(fd);
    return high < 0 ? err : high;
}

/* A forked process writes through its own open file description of the same inode, reopened through
 * /proc/self/fd (never by path): processes that share one description contend in the kernel for its position
 * lock (f_pos_lock) on every write(2). Once per process, lock held; if it cannot, it keeps the inherited one.
 * Only a regular file has that lock. Anything else keeps the inherited description: a second open of a FIFO or
 * pipe whose reader has gone would wait for a reader for ever (or fail), where a write on the inherited
 * description fails with EPIPE, as the caller expects of a pipe; a device need not allow a second open; and a
 * socket (forklog_open_fd) cannot be opened at all. */
static void fl__own_fd(forklog *log)
{
    const struct fl__seg *s = log->seg;
    log->proc->own_fd = 1;
    struct stat a, b;
    if (fstat(log->fd, &b) < 0 || !S_ISREG(b.st_mode))
        return;
    /* fork() copies the descriptor table before the memory. A child forked while another thread of its parent
     * moved the handle to a new generation (the new descriptor, then gen: fl__sync_file, fl__rotate) can get the
     * new gen with the old file, and would write into the renamed file after the reopen or rotation returned,
     * counting its record in a size that file does not have. The generation's file is known: a descriptor that is
     * not that file is reopened by name, as for any older generation. */
    if (log->path[0] && log->gen == s->gen && s->file_known &&
        ((uint64_t)b.st_ino != s->ino || (uint64_t)b.st_dev != s->dev)) {
        log->gen = s->gen - 1;
        return;
    }
    char link[32];
    snprintf(link, sizeof link, "/proc/self/fd/%d", log->fd);
    int fd = open(link, O_WRONLY | O_APPEND | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0)
        return;
    if (fstat(fd, &a) < 0 || a.st_ino != b.st_ino || a.st_dev != b.st_dev || fl__blocking(fd) < 0) {
        close(fd);
        return;
    }
    FL__CRASH(OWN_FD_OPENED);
    (void)fl__fd_take(log, fd); /* on failure the inherited description stays */
}

int fl__same_file(const struct fl__seg *s, const struct stat *st)
{
    if ((uint64_t)st->st_ino != s->ino || (uint64_t)st->st_dev != s->dev)
        return 0;
    /* A FIFO or a device has no size: its st_size stays 0, while size counts the bytes that went out to it. */
    const unsigned regular = atomic_load_explicit(&s->regular, memory_order_relaxed);
    return S_ISREG(st->st_mode) ? regular && (uint64_t)st->st_size >= s->size : !regular;
}

/* fl__sync_file, for a handle on an older generation: opens path and puts it under log->fd's number. Returns 0 or
 * a negative errno. */
static int fl__take_path_in(forklog *log)
{
    struct fl__seg *s = log->seg;
    /* path is opened again by name, and the directory it names may no longer be the one this segment was found in
     * (moved away, and a new one made at its name). The file there then belongs to the segment there, and writing
     * it under this lock would let two locks order one file: a cut of ours after a failed write or a dead writer
     * would take the records that the other lock's users wrote since. The segment file is checked, and the file
     * opened, in the one directory the caller resolved (fl__take_path). */
    int rc = fl__seg_follow(log);
    if (rc < 0)
        return rc;
    struct stat like;
    int fd = fl__open_log_file(log, O_CREAT, fl__like(log, &like));
    if (fd < 0)
        return fd;
    FL__CRASH(REOPEN_OPENED);
    /* When size, ino and dev are known, they describe the file this generation began with; path may name
     * another file by now (the log's file was moved away and a new one created, without forklog_reopen():
     * logrotate's `create`, a move by hand). Writing there with the old file's size would leave a torn
     * record of ours uncut and make a cut after a failed write count our bytes. Start a new generation on
     * the file at path instead, as a reopen would: every process moves to it before its next record. Any
     * repair of the old file was done when the lock was taken, before this. */
    if (s->file_known) {
        struct stat st;
        if (fstat(fd, &st) < 0) {
            int err = -errno;
            close(fd);
            return err;
        }
        if (!fl__same_file(s, &st))
            fl__new_generation(s);
    }
    return fl__fd_take(log, fd);
}

static int fl__take_path(forklog *log)
{
    struct fl__dir d;
    int rc = fl__dir_enter(log, &d);
    if (rc < 0)
        return rc;
    rc = fl__take_path_in(log);
    fl__dir_leave(&d);
    return rc;
}

/* Whether log->fd is the file of the segment's current generation (known: s->file_known). */
static int fl__is_gen_file(const forklog *log)
{
    struct stat st;
    return fstat(log->fd, &st) == 0 && fl__same_file(log->seg, &st);
}

/* Whether the regular file of fd, size bytes long, ends in the middle of a line: its last byte is not a newline
 * (a line that another program left unfinished, a record torn by a machine crash, a fragment a failed cut left).
 * The log's descriptors are write-only: the byte is read through a read-only description of the same file, opened
 * through /proc/self/fd. 0 when it cannot be read (no /proc, no read permission). */
int fl__ends_mid_line(int fd, uint64_t size)
{
    if (size == 0)
        return 0;
    char c = '\n';
    ssize_t n = pread(fd, &c, 1, (off_t)(size - 1));
    if (n < 0 && errno == EBADF) {
        char link[32];
        snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
        const int cancel = fl__nocancel();
        int rfd = fl__open_spare(link, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (rfd >= 0) {
            n = pread(rfd, &c, 1, (off_t)(size - 1));
            close(rfd);
        }
        fl__cancel_back(cancel);
    }
    return n == 1 && c != '\n';
}

/* fl__sync_file past its usual case. */
static int fl__sync_file_slow(forklog *log)
{
    struct fl__seg *s = log->seg;
    if (log->proc && !log->proc->own_fd) {
        const int cancel = fl__nocancel();
        fl__own_fd(log);
        fl__cancel_back(cancel);
    }
    unsigned req = atomic_load_explicit(&s->reopen_req, memory_order_acquire);
    if (req != s->reopen_seen && log->path[0]) { /* forklog_open_fd(): no name, nothing to reopen */
        /* The new generation first, the request marked seen last: a holder killed in between leaves the request
         * pending, and the next holder starts one more generation (one more reopen by name, harmless). In the
         * other order it left the request seen and no new generation, and every process went on writing to the
         * renamed file after forklog_reopen() had returned. A stream that a failed record left in the middle of a
         * line (file_known 2) still ends there when path names it again (a reopen of the same FIFO: the pipe keeps
         * the fragment for its next reader), and the next record must still begin with a newline: the mark is kept,
         * with the identity that says which stream it is. A reopen that finds another file at path starts one more
         * generation, which knows nothing (fl__take_path_in). */
        const uint32_t mid_line =
            s->file_known == 2 && !atomic_load_explicit(&s->regular, memory_order_relaxed) ? 2 : 0;
        fl__new_generation(s);
        s->file_known = mid_line;
        FL__CRASH(REOPEN_TAKEN);
        FL__STEP(s->reopen_seen, req);
        FL__CRASH(REOPEN_SEEN);
    }
    /* forklog_open_fd() of a regular file: the caller (or anybody else) may append through a descriptor of its
     * own between records; read where the file ends before every write, so that a cut after a failed write or
     * a dead writer goes back to the end of the last whole record, not into one written since. The same holds
     * for a private segment (FORKLOG_PRIVATE, a path through /proc) of a named file: the log's other users, whose
     * lock it does not share, append to the file between its records, and a cut to where it last wrote would
     * take theirs. One lseek() tells where the file ends, at about half the cost of an fstat(), and it also puts
     * the description's position there: a description of forklog_open_fd() is the caller's too, and any of the
     * caller's descriptors may clear the O_APPEND that the open set (fcntl F_SETFL); the write then goes to that
     * position, which the appends of the handle's forked processes (descriptions of their own) do not move, and
     * would land on their records. It is read once the descriptor is the generation's file: a process that
     * moves to a generation another process of the tree started (a reopen, a rotation) keeps the size that process
     * saw, which the others' records have passed since. */
    if (log->gen != s->gen && !log->path[0]) {
        log->gen = s->gen; /* no name to open again: the descriptor stays the log */
    } else if (log->gen == 0 && s->file_known && fl__is_gen_file(log)) {
        /* A joiner's first record, its descriptor (opened by name at open) already the generation's file: taken as
         * it is, with no second open, which a process at its descriptor limit could not make. */
        log->gen = s->gen;
    } else if (log->gen != s->gen) {
        /* Not cancellable between the open() and the close() of fl__fd_take (fl__nocancel). */
        const int cancel = fl__nocancel();
        int rc = fl__take_path(log);
        fl__cancel_back(cancel);
        if (rc < 0)
            return rc; /* still on the older generation: the next call tries again */
        log->gen = s->gen;
    }
    if (s->file_known != 1) {
        struct stat st;
        if (fstat(log->fd, &st) < 0)
            return -errno;
        const int reg = S_ISREG(st.st_mode);
        /* A failed flush to a stream left the rest of a record it sent in part, for the next flush to begin with
         * (fl__drop_sent); in another file, a regular one or another stream, that rest would begin it with a
         * fragment. Its first part went to the stream the log knew last (ino and dev, overwritten below). */
        if (s->flush_rest && ((s->flush_rest & FL__REST_DROPPING) || reg || (uint64_t)st.st_ino != s->ino ||
                              (uint64_t)st.st_dev != s->dev))
            fl__drop_rest(log);
        if (reg ? fl__ends_mid_line(log->fd, (uint64_t)st.st_size) : s->file_known == 2) {
            /* The file ends in the middle of a line (a stream: a record failed after part of it went out, see
             * fl__write_commit): a newline ends it first, or the first record would be glued onto it and no reader
             * could tell where that record begins. A holder killed after the newline leaves a file that ends in
             * one, and the next holder adds none (a stream, which cannot be read back, then gets an empty line). A
             * newline that cannot be written fails the record. */
            ssize_t n;
            if (reg && lseek(log->fd, 0, SEEK_END) < 0)
                return -errno;
            while ((n = write(log->fd, "\n", 1)) < 0 && errno == EINTR) {
            }
            if (n != 1)
                return n < 0 ? -errno : -EIO;
            FL__CRASH(FILE_NEWLINE);
            if (fstat(log->fd, &st) < 0)
                return -errno;
        }
        s->size = (uint64_t)st.st_size;
        s->ino = (uint64_t)st.st_ino;
        s->dev = (uint64_t)st.st_dev;
        atomic_store_explicit(&s->regular, S_ISREG(st.st_mode) ? 1u : 0u, memory_order_relaxed);
        FL__STEP(s->file_known, 1);
        FL__CRASH(FILE_KNOWN);
    }
    if (log->seg_fd < 0 && atomic_load_explicit(&s->regular, memory_order_relaxed)) {
        off_t end = lseek(log->fd, 0, SEEK_END);
        if (end < 0)
            return -errno;
        s->size = (uint64_t)end;
    }
    return 0;
}

/* Makes this process's descriptor refer to the file of the current generation, reopening path by name when a
 * rotation or forklog_reopen() happened since this process last wrote. Lock held. */
int fl__sync_file(forklog *log)
{
    /* The usual record: this process's own descriptor, no reopen asked, a shared segment of a named file, the
     * generation's file known; nothing to do. */
    struct fl__seg *s = log->seg;
    if ((!log->proc || log->proc->own_fd) && log->seg_fd >= 0 && log->gen == s->gen && s->file_known == 1 &&
        atomic_load_explicit(&s->reopen_req, memory_order_acquire) == s->reopen_seen)
        return 0;
    return fl__sync_file_slow(log);
}

/* path (k = 0) or path.k, into buf of cap bytes (strlen(path) + 16 is enough). */
static void fl__rotated_name(char *buf, size_t cap, const char *path, unsigned k)
{
    if (k == 0)
        snprintf(buf, cap, "%s", path);
    else
        snprintf(buf, cap, "%s.%u", path, k);
}

/* What lstat() finds at a name (in dir): a regular file (1), nothing (0), or anything else (-1): a directory, a
 * symlink (wherever it points), a FIFO, a device, a socket, or a name that cannot be looked at. */
static int fl__name_kind(int dir, const char *name, struct stat *st)
{
    if (fstatat(dir, fl__dir_name(dir, name), st, AT_SYMLINK_NOFOLLOW) < 0)
        return errno == ENOENT ? 0 : -1;
    return S_ISREG(st->st_mode) ? 1 : -1;
}

/* Renames `from` back to `to` (path), but never over another file: only over a symlink, which is replaced rather
 * than followed. Where RENAME_NOREPLACE is missing (a kernel before 3.15, a file system without it), link() and
 * unlink() do the same, never replacing either. Anything else at `to` (a file another program created there, a
 * FIFO) stays, and `from` keeps its name. */
static void fl__put_back(int dir, const char *from, const char *to)
{
    int rc = -1;
    from = fl__dir_name(dir, from);
    to = fl__dir_name(dir, to);
#if defined(__linux__) && defined(SYS_renameat2)
    rc = (int)syscall(SYS_renameat2, dir, from, dir, to, 1u /* RENAME_NOREPLACE */);
#else
    errno = ENOSYS;
#endif
    if (rc < 0 && (errno == ENOSYS || errno == EINVAL) && (rc = linkat(dir, from, dir, to, 0)) == 0)
        (void)unlinkat(dir, from, 0);
    struct stat st;
    if (rc < 0 && errno == EEXIST && fstatat(dir, to, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode))
        (void)renameat(dir, from, dir, to);
}

/* Removes the name `one` (path.1, looked at as *at_one) when it is a second name of the file at path (*at_path): what
 * fl__put_back without renameat2 leaves when its process dies between the link(2) and the unlink(2). Every record
 * in that file would be in two files, and with rotate_keep 1 every later rotation would rename path onto path.1, its
 * own other name, which rename(2) does nothing for, and the file would grow past rotate_bytes for ever. The file
 * stays at path, where the put-back was taking it. Returns 1 when the name went. */
static int fl__drop_second_name(int dir, const char *one, const struct stat *at_path, const struct stat *at_one)
{
    if (at_path->st_ino != at_one->st_ino || at_path->st_dev != at_one->st_dev)
        return 0;
    return unlinkat(dir, fl__dir_name(dir, one), 0) == 0;
}

void fl__rotate_repair(forklog *log)
{
    struct fl__dir d;
    if (!log->path[0] || fl__dir_enter(log, &d) < 0)
        return;
    size_t cap = strlen(log->path) + 16;
    char *one = malloc(cap);
    if (one) {
        fl__rotated_name(one, cap, log->path, 1);
        struct stat a, b;
        if (fl__name_kind(d.fd, log->path, &a) == 1 && fl__name_kind(d.fd, one, &b) == 1)
            (void)fl__drop_second_name(d.fd, one, &a, &b);
        free(one);
    }
    fl__dir_leave(&d);
}

/* Results of fl__rotate besides a negative errno. */
enum { FL__ROTATE_DONE = 0, FL__ROTATE_ADOPTED = 1, FL__ROTATE_REFUSED = 2 };

/* How long a process whose rotation could not be made writes on into the current file before it tries again,
 * unless another process rotates or reopens first: each try costs it a look at every name of the chain and a
 * refused rename (or two renames, when the new file cannot be created), ~8 system calls on every record. */
#define FL__ROTATE_RETRY_NS 1000000000LL

/*
 * Renames path to path.1 (path.1 to path.2, ...) and starts a new file, which every other process adopts before
 * its next record. Lock held, buffer empty.
 *
 * Only regular files are ever moved or replaced, and at path only the very file the log writes (its inode and
 * device), so that a FIFO, a device or a symlink the user put at a name is never moved away or deleted. The chain
 * path.1, path.2, ... is shifted up to its first free name; a name that holds something other than a regular file
 * ends it, and the regular file just below is then the oldest kept and the one replaced, as path.keep is when
 * every name up to it holds one. When nothing may be renamed (a process without write permission on the
 * directory, path.1 that is not a regular file, path that is not the log's regular file), the rotation does not
 * happen and is not an error: the record goes into the current file, and the next record of a process that can
 * rotate does. Returns FL__ROTATE_DONE (rotated, or the record stays in the current file for a passing reason),
 * FL__ROTATE_REFUSED (the rotation cannot be made as things are: the record stays in the current file),
 * FL__ROTATE_ADOPTED (path held another regular file, which the log now writes: its size is to be checked again),
 * or a negative errno when the log's file is gone from path and no new one could be created. Every name is looked up in
 * the one directory dir (fl__dir_enter): the segment's check, the names' look and the renames agree on where they are.
 */
static int fl__rotate_in(forklog *log, int dir)
{
    struct fl__seg *s = log->seg;
    struct stat st;
    /* A directory at path's name that another segment serves (see fl__take_path): its files are not this lock's to
     * rename, and the record goes into the current file, as when a rotation cannot happen. */
    if (fl__seg_follow(log) < 0)
        return FL__ROTATE_REFUSED;
    int at_path = fl__name_kind(dir, log->path, &st);
    if (at_path < 0)
        return FL__ROTATE_REFUSED; /* not a regular file: never renamed; the record stays where the log writes */
    if (at_path == 1 && ((uint64_t)st.st_ino != s->ino || (uint64_t)st.st_dev != s->dev)) {
        /* Another regular file is at path: the log's file was moved away, and perhaps a new one created, without
         * a forklog_reopen(). Renaming that file is not the log's business; writing to it is, as a reopen would. */
        fl__new_generation(s);
        int rc = fl__sync_file(log);
        return rc < 0 ? rc : FL__ROTATE_ADOPTED;
    }
    size_t cap = strlen(log->path) + 16;
    char *from = malloc(2 * cap);
    if (!from)
        return FL__ROTATE_DONE; /* no rotation this time; the record is written all the same */
    char *to = from + cap;

    /* The names to shift: path.1 .. path.last. When path is already gone (moved or removed behind forklog's
     * back), the rotation has in effect happened: only the new file is missing, and nothing is shifted. */
    unsigned last = 0;
    int replaces = 0; /* the first rename replaces path.last, the oldest kept file */
    if (at_path == 1) {
        for (unsigned k = 1; k <= log->rotate_keep; k++) {
            fl__rotated_name(to, cap, log->path, k);
            struct stat kst;
            int kind = fl__name_kind(dir, to, &kst);
            if (kind == 1 && k == 1 && fl__drop_second_name(dir, to, &st, &kst))
                kind = 0; /* path.1 was the log's file under a second name: free now */
            if (kind < 0)
                break; /* left alone: path.(k-1) is the oldest kept, and replaced */
            last = k;
            replaces = kind == 1;
            if (kind == 0)
                break; /* a free name: the shift ends here, nothing is replaced */
        }
        if (last == 0) {
            free(from);
            return FL__ROTATE_REFUSED; /* path.1 is not a regular file: no rotation can happen */
        }
    }
    /* A process at its descriptor limit (EMFILE) finds that it cannot open the new file only after the renames, and
     * puts the log's file back at path: the oldest kept file, which the first rename replaced, was then deleted for
     * a rotation that was not made (with rotate_keep 1, path.1 and every record in it). So a descriptor number is
     * held from before the first rename until the open; the directory's own, which the open gives back when it
     * needs one (fl__dir_spare), serves as well. Without either, the rotation does not happen. */
    int spare = -1;
    if (replaces && dir == AT_FDCWD && (spare = fcntl(log->fd, F_DUPFD_CLOEXEC, 0)) < 0) {
        free(from);
        return FL__ROTATE_REFUSED;
    }

    FL__STEP(s->state, FL__ROTATING);
    FL__CRASH(ROTATE_BEGIN);
    int moved = 0; /* path was renamed to path.1 (`to` after the loop) */
    for (unsigned k = last; k >= 1; k--) {
        fl__rotated_name(from, cap, log->path, k - 1);
        fl__rotated_name(to, cap, log->path, k);
        if (renameat(dir, fl__dir_name(dir, from), dir, fl__dir_name(dir, to)) == 0) {
            struct stat mst;
            if (fl__name_kind(dir, to, &mst) != 1) {
                /* Something other than a regular file was put at `from` after the chain was looked at (a
                 * directory, a symlink): rename() moves whatever is at a name. Put it back and stop, as if it had
                 * been there at the look: moved up, it would end the chain one name higher, and every later
                 * rotation would replace the files below it though rotate_keep allows more. What moved up
                 * already only left a gap; path is still the log's file, and the record goes into it. */
                (void)renameat(dir, fl__dir_name(dir, to), dir, fl__dir_name(dir, from));
                FL__STEP(s->state, FL__IDLE);
                free(from);
                if (spare >= 0)
                    close(spare);
                return FL__ROTATE_DONE;
            }
            moved = k == 1;
            FL__CRASH(ROTATE_RENAMED);
            continue;
        }
        if (errno == ENOENT)
            continue; /* gone since it was looked at: its name is free for the next one down */
        /* Renaming is not permitted here (EACCES, EPERM, EROFS: a process that may not write the directory), or
         * failed otherwise. path.(k-1) still holds its file, so nothing below may move into it: stop. What moved
         * up already only left a gap; path is still the log's file, and the record goes into it. */
        FL__STEP(s->state, FL__IDLE);
        free(from);
        if (spare >= 0)
            close(spare);
        return FL__ROTATE_REFUSED;
    }
    if (spare >= 0)
        close(spare);
    /* O_EXCL | O_NOFOLLOW: the new file is ours, never a symlink planted at path; if somebody created path since
     * the rename, append to it, still never through a symlink. */
    struct stat like;
    int fd = fl__open_log_file(log, O_CREAT | O_EXCL | O_NOFOLLOW, fl__like(log, &like));
    if (fd == -EEXIST)
        fd = fl__open_log_file(log, O_NOFOLLOW, NULL);
    dir = fl__dir_now(); /* the open may have given the directory's descriptor back (fl__dir_spare) */
    if (fd < 0 && moved) {
        /* No new file (a symlink was planted at path after the rename, say, or a FIFO, or a file this process may
         * not open). A new generation would make every process reopen path by name, through that symlink. Put the
         * old file back at path instead, over a symlink but over nothing else (fl__put_back), and stay on it:
         * nobody reopens, and the record goes into it. If it cannot go back, it keeps the name path.1 until a later
         * rotation, which finds what is at path. */
        fl__put_back(dir, to, log->path);
        FL__STEP(s->state, FL__IDLE);
        free(from);
        return FL__ROTATE_REFUSED;
    }
    free(from);
    if (fd < 0) {
        /* The log's file is no longer at path and none could be created: every process will try to reopen path
         * by name, and this record fails rather than go into a file that may have no name left. */
        fl__new_generation(s);
        FL__STEP(s->state, FL__IDLE);
        return fd;
    }
    FL__CRASH(ROTATE_CREATED);
    int taken = fl__fd_take(log, fd);
    fl__new_generation(s);
    FL__STEP(s->state, FL__IDLE);
    if (taken < 0)
        return taken; /* the new file is at path: this process, like every other, reopens it by name next time */
    log->gen = s->gen;
    int rc = fl__sync_file(log);
    FL__CRASH(ROTATE_DONE);
    return rc;
}

static int fl__rotate(forklog *log)
{
    struct fl__dir d;
    if (fl__dir_enter(log, &d) < 0)
        return FL__ROTATE_REFUSED; /* path's directory cannot be reached: nothing can be renamed there */
    int rc = fl__rotate_in(log, d.fd);
    fl__dir_leave(&d);
    return rc;
}

int fl__maybe_rotate(forklog *log, size_t len)
{
    struct fl__seg *s = log->seg;
    /* A FIFO, a device or a pipe has no size to bound and nothing to rename. At most two passes: one more when
     * the rotation found another regular file at path and moved to it. */
    for (int pass = 0; pass < 2; pass++) {
        if (!log->rotate_bytes || !log->path[0] || !atomic_load_explicit(&s->regular, memory_order_relaxed) ||
            s->size == 0 || s->size + len <= log->rotate_bytes)
            return 0;
        if (log->rotate_wait_ns && log->rotate_wait_gen == s->gen && fl__mono_ns() < log->rotate_wait_ns)
            return 0;                      /* refused a moment ago, and nobody rotated or reopened since */
        const int cancel = fl__nocancel(); /* its renames, its open() and its close() */
        int rc = fl__rotate(log);
        fl__cancel_back(cancel);
        log->rotate_wait_ns = 0;
        if (rc == FL__ROTATE_REFUSED) {
            log->rotate_wait_gen = s->gen;
            log->rotate_wait_ns = fl__mono_ns() + FL__ROTATE_RETRY_NS;
            return 0;
        }
        if (rc != FL__ROTATE_ADOPTED)
            return rc;
    }
    return 0;
}
