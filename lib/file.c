/*
 * The file behind the handle: each process's own descriptor, file generations (rotation and reopen), and
 * size-based rotation. Every function here runs with the lock held.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void fl__new_generation(struct fl__seg *s)
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
    FL__CRASH(OWN_FD_OPENED);
    int old = log->fd;
    log->fd = fd;
    close(old);
}

/* Makes this process's descriptor refer to the file of the current generation, reopening path by name when a
 * rotation or forklog_reopen() happened since this process last wrote. Lock held. */
int fl__sync_file(forklog *log)
{
    struct fl__seg *s = log->seg;
    if (log->proc && !log->proc->own_fd)
        fl__own_fd(log);
    unsigned req = atomic_load_explicit(&s->reopen_req, memory_order_acquire);
    if (req != s->reopen_seen) {
        s->reopen_seen = req;
        fl__new_generation(s);
        FL__CRASH(REOPEN_SEEN);
    }
    if (log->gen == s->gen && s->file_known)
        return 0;
    if (log->gen != s->gen) {
        int fd = open(log->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, (mode_t)log->mode);
        if (fd < 0)
            return -errno;
        FL__CRASH(REOPEN_OPENED);
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
        atomic_store_explicit(&s->regular, S_ISREG(st.st_mode) ? 1u : 0u, memory_order_relaxed);
        s->file_known = 1;
        FL__CRASH(FILE_KNOWN);
    }
    return 0;
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
    FL__CRASH(ROTATE_BEGIN);
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
        if (rc == 0)
            FL__CRASH(ROTATE_RENAMED);
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
    FL__CRASH(ROTATE_CREATED);
    int old = log->fd;
    log->fd = fd;
    fl__new_generation(s);
    log->gen = s->gen;
    close(old);
    s->state = FL__IDLE;
    int rc = fl__sync_file(log);
    FL__CRASH(ROTATE_DONE);
    return rc;
}

int fl__maybe_rotate(forklog *log, size_t len)
{
    struct fl__seg *s = log->seg;
    if (!log->rotate_bytes || s->size == 0 || s->size + len <= log->rotate_bytes)
        return 0;
    return fl__rotate(log);
}

