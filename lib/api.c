/* SPDX-License-Identifier: MIT */
/*
 * The public calls: options, forklog_open() (the file and the shared segment), the record formatters' entry
 * points, flush, reopen and close. The record path goes on in write.c (fl__append).
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
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

/* ---- the public calls -------------------------------------------------------------------------------------- */

/* The first option that is not valid, in words for opts->error; NULL when every one is. */
static const char *fl__bad_option(const struct forklog_options *o)
{
    if (o->level != 0 && (o->level < FORKLOG_DEBUG || o->level > FORKLOG_ERROR))
        return "level is none of FORKLOG_DEBUG .. FORKLOG_ERROR (0: the default)";
    if (o->format != FORKLOG_FORMAT_TEXT && o->format != FORKLOG_FORMAT_JSON)
        return "format is neither FORKLOG_FORMAT_TEXT nor FORKLOG_FORMAT_JSON";
    if (o->mode > 07777)
        return "mode has bits past 07777";
    if (o->flags & ~(unsigned)(FORKLOG_SYNC | FORKLOG_BUFFERED | FORKLOG_PRIVATE | FORKLOG_TID))
        return "flags has a bit that is none of FORKLOG_SYNC, FORKLOG_BUFFERED, FORKLOG_PRIVATE, FORKLOG_TID";
    if (o->keys != FORKLOG_KEYS_SHORT && o->keys != FORKLOG_KEYS_ECS)
        return "keys is neither FORKLOG_KEYS_SHORT nor FORKLOG_KEYS_ECS";
    if (o->name) {
        size_t n = strnlen(o->name, 65);
        if (n == 0 || n > 64)
            return "name is empty or longer than 64 bytes";
        for (size_t i = 0; i < n; i++)
            if ((unsigned char)o->name[i] < 0x20 || o->name[i] == 0x7f)
                return "name holds a control byte";
        if (!fl__utf8_valid(o->name, n))
            return "name is not UTF-8";
    }
    if (fl__check_fields(o->context, o->ncontext) < 0)
        return "context: a NULL list with a count, more than FORKLOG_MAX_FIELDS fields, a key that is not valid or a "
               "type that is none";
    if (o->max_record != 0 && (o->max_record < FL__MIN_MAX_RECORD || o->max_record > FL__MAX_MAX_RECORD))
        return "max_record is outside 256 bytes .. 1 GiB (0: the default)";
    if (o->rotate_keep > FL__MAX_KEEP)
        return "rotate_keep is above 1000";
    if (o->buffer_size != 0 && (o->buffer_size < FL__MIN_BUFFER || o->buffer_size > FL__MAX_BUFFER))
        return "buffer_size is outside 4 KiB .. 1 GiB (0: the default)";
    return NULL;
}

/* Why an open refuses its arguments, in opts->error. Returns rc. */
static int fl__refuse(const struct forklog_options *o, int rc, const char *why)
{
    if (o->error && o->error_size)
        snprintf(o->error, o->error_size, "%s", why);
    return rc;
}

/* 0 if every option is valid; else -EINVAL, with the first that is not named in opts->error. */
static int fl__check_options(const struct forklog_options *o)
{
    const char *why = fl__bad_option(o);
    return why ? fl__refuse(o, -EINVAL, why) : 0;
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

/* A new context: the entries of `old` whose keys `fields` do not give again, then fields[0..n) but those given
 * again later in it, keys and strings copied. Keys are compared as the records of key set ks write them (see
 * fl__same_key), as the records compare them, so that "ts" and "fields.ts" count as one of the FORKLOG_MAX_FIELDS
 * distinct keys. *out is NULL when that leaves nothing. Returns 0, -EINVAL or -ENOMEM. */
static int fl__ctx_merge(int ks, const struct fl__ctx *old, const struct forklog_field *fields, size_t n,
                         struct fl__ctx **out)
{
    *out = NULL;
    int rc = fl__check_fields(fields, n);
    if (rc < 0)
        return rc;
    const struct forklog_field *keep[2 * FORKLOG_MAX_FIELDS];
    size_t cnt = 0, bytes = 0, nold = old ? old->n : 0;
    for (size_t i = 0; i < nold + n; i++) {
        const struct forklog_field *f = i < nold ? &old->f[i] : &fields[i - nold];
        int again = 0;
        for (size_t j = i < nold ? 0 : i - nold + 1; j < n && !again; j++)
            again = fl__same_key(ks, fields[j].key, f->key);
        if (again)
            continue;
        if (cnt == FORKLOG_MAX_FIELDS)
            return -EINVAL;
        keep[cnt++] = f;
        bytes += strlen(f->key) + 1 + (f->type == FORKLOG_FIELD_STR && f->v.s ? strlen(f->v.s) + 1 : 0);
    }
    if (!cnt)
        return 0;
    struct fl__ctx *c = malloc(sizeof *c + cnt * sizeof c->f[0] + bytes);
    if (!c)
        return -ENOMEM;
    char *str = (char *)(c->f + cnt);
    for (size_t i = 0; i < cnt; i++) {
        c->f[i] = *keep[i];
        size_t kl = strlen(keep[i]->key) + 1;
        memcpy(str, keep[i]->key, kl);
        c->f[i].key = str;
        str += kl;
        if (keep[i]->type == FORKLOG_FIELD_STR && keep[i]->v.s) {
            size_t sl = strlen(keep[i]->v.s) + 1;
            memcpy(str, keep[i]->v.s, sl);
            c->f[i].v.s = str;
            str += sl;
        }
    }
    c->n = cnt;
    c->prev = NULL;
    *out = c;
    return 0;
}

static void fl__ctx_free(struct fl__ctx *c)
{
    while (c) {
        struct fl__ctx *prev = c->prev;
        free(c);
        c = prev;
    }
}

/* Whether s is the lower-case ASCII word `lower` in any case. Not strcasecmp(), which folds case by the program's
 * locale: in a Turkish one the lower case of 'I' is not 'i', and FORKLOG_LEVEL=WARNING was not recognised. */
static int fl__ascii_word(const char *s, const char *lower)
{
    for (;; s++, lower++) {
        unsigned char c = (unsigned char)*s;
        if (c >= 'A' && c <= 'Z')
            c = (unsigned char)(c - 'A' + 'a');
        if (c != (unsigned char)*lower)
            return 0;
        if (!c)
            return 1;
    }
}

/* FORKLOG_LEVEL: debug, info, warn (warning), error in any case, or 1..4; anything else: 0 (not set). */
static enum forklog_level fl__env_level(void)
{
    const char *e = getenv("FORKLOG_LEVEL");
    static const char *const names[] = {"debug", "info", "warn", "error"};
    if (!e)
        return (enum forklog_level)0;
    for (int i = 0; i < 4; i++)
        if (fl__ascii_word(e, names[i]))
            return (enum forklog_level)(i + 1);
    if (fl__ascii_word(e, "warning"))
        return FORKLOG_WARN;
    if (e[0] >= '1' && e[0] <= '4' && e[1] == '\0')
        return (enum forklog_level)(e[0] - '0');
    return (enum forklog_level)0;
}

static void fl__handle_free(forklog *log)
{
    fl__ctx_free(atomic_load_explicit(&log->ctx, memory_order_relaxed));
    free(log->app_tok);
    free(log);
}

/* A new handle for `path` (absolute, or "" for a handle that has no name: forklog_open_fd) with the options
 * (already checked by fl__check_options) set, but no file and no segment yet. Returns 0 or a negative errno. */
static int fl__handle_new(forklog **out, const char *path, const struct forklog_options *opts)
{
    int rc;
    struct fl__ctx *ctx;
    if ((rc = fl__ctx_merge(fl__keyset_of(opts->format, opts->keys), NULL, opts->context, opts->ncontext, &ctx)) < 0)
        return rc;
    size_t plen = strlen(path);
    forklog *log = malloc(sizeof *log + plen + 1);
    if (!log) {
        fl__ctx_free(ctx);
        return -ENOMEM;
    }
    memcpy(log->path, path, plen + 1);
    atomic_init(&log->ctx, ctx);
    atomic_init(&log->rings_backed, 0);
    log->keys = opts->keys;
    log->app_tok = NULL;
    log->app_len = 0;
    log->level = opts->level ? opts->level : fl__env_level();
    if (!log->level)
        log->level = FORKLOG_INFO;
    log->format = opts->format;
    log->mode = opts->mode;
    log->flags = opts->flags;
    log->max_record = opts->max_record ? opts->max_record : FL__DEFAULT_MAX_RECORD;
    log->rotate_bytes = opts->rotate_bytes;
    log->rotate_keep = opts->rotate_keep ? opts->rotate_keep : FL__DEFAULT_KEEP;
    log->rotate_wait_ns = 0;
    log->rotate_wait_gen = 0;
    log->flush_ns = (int64_t)(opts->flush_ms ? opts->flush_ms : FL__DEFAULT_FLUSH_MS) * 1000000;
    log->owner = opts->owner ? opts->owner : (uid_t)-1;
    log->group = opts->group ? opts->group : (gid_t)-1;
    log->fd = -1;
    if (opts->name) {
        size_t nl = strlen(opts->name), cap = 8 * nl + 40;
        if (!(log->app_tok = malloc(cap))) {
            fl__handle_free(log);
            return -ENOMEM;
        }
        log->app_len = fl__app_token(log, opts->name, log->app_tok, cap);
    }
    log->prefix_max = fl__prefix_bound(log);
    if (log->max_record < log->prefix_max + 64) {
        /* The record's own prefix must leave room for a message and a cut marker. */
        if (opts->error && opts->error_size)
            snprintf(opts->error, opts->error_size, "max_record %zu is too small for this prefix (%zu bytes)",
                     log->max_record, log->prefix_max);
        fl__handle_free(log);
        return -EINVAL;
    }
    *out = log;
    return 0;
}

/* The rest of an open, once log->fd is the handle's descriptor: the segment, the per-process page. On failure
 * the descriptor is closed and the handle freed. */
static int fl__handle_start(forklog *log, const struct forklog_options *opts)
{
    int rc;
    struct stat st;
    if (fstat(log->fd, &st) < 0) {
        rc = -errno;
        goto fail;
    }
    log->proc = NULL; /* until the segment is open: a recovery there writes through this very descriptor */
    if ((rc = fl__seg_open(log, opts, &st, opts->error, opts->error_size)) < 0)
        goto fail;
    long page = sysconf(_SC_PAGESIZE);
    size_t pg = page > 0 ? (size_t)page : 4096;
    log->proc = fl__proc_new(pg);
    fl__proc_key_init();
    fl__ring_clock_init();
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    log->max_spinners = cpus > 1 ? (unsigned)cpus - 1 : 0;
    return 0;

fail:
    close(log->fd);
    fl__handle_free(log);
    return rc;
}

/* What both opens do first: *out cleared, the defaults for a NULL opts, the explanation emptied, the options
 * checked. Returns 0 or -EINVAL. */
static int fl__open_begin(forklog **out, const struct forklog_options **opts)
{
    static const struct forklog_options defaults;
    if (out)
        *out = NULL;
    if (!*opts)
        *opts = &defaults;
    if ((*opts)->error && (*opts)->error_size)
        (*opts)->error[0] = '\0';
    return out ? fl__check_options(*opts) : fl__refuse(*opts, -EINVAL, "out is NULL");
}

/* Why the log file could not be opened, in opts->error, where strerror(ENXIO) ("No such device or address") says
 * nothing useful; for the other errors it says enough. */
static void fl__open_refuse(const struct forklog_options *o, int rc, const char *path)
{
    struct stat st;
    if (!o->error || !o->error_size || rc != -ENXIO || stat(path, &st) < 0)
        return;
    if (S_ISFIFO(st.st_mode))
        snprintf(o->error, o->error_size,
                 "%s is a FIFO that no process has open for reading; forklog does not wait for a reader", path);
    else if (S_ISSOCK(st.st_mode))
        snprintf(o->error, o->error_size, "%s is a unix socket: connect a socket to it and use forklog_open_fd()",
                 path);
}

static int fl__open_path(forklog **out, const char *path, const struct forklog_options *opts)
{
    int rc = fl__open_begin(out, &opts);
    if (rc < 0)
        return rc;
    if (!path || !path[0])
        return fl__refuse(opts, -EINVAL, path ? "the path is empty" : "the path is NULL");
    char *abs = fl__absolute(path, &rc);
    if (!abs)
        return rc;
    forklog *log;
    rc = fl__handle_new(&log, abs, opts);
    free(abs);
    if (rc < 0)
        return rc;

    /* The log file and its segment file are found in one directory, resolved once for the whole open (a symlinked
     * directory flipped meanwhile, or a directory renamed, cannot give the file of one and the lock of another). */
    struct fl__dir d;
    if ((rc = fl__dir_enter(log, &d)) < 0) {
        fl__handle_free(log);
        return rc;
    }
    /* Never blocks: a FIFO with no reader is -ENXIO, not a hang. */
    log->fd = fl__fd_above_stdio(fl__open_log_file(log, O_CREAT, NULL));
    if (log->fd < 0) {
        fl__dir_leave(&d);
        rc = log->fd;
        fl__open_refuse(opts, rc, log->path);
        fl__handle_free(log);
        return rc;
    }
    rc = fl__handle_start(log, opts);
    fl__dir_leave(&d);
    if (rc < 0)
        return rc;
    *out = log;
    return 0;
}

/* The opens and the close are not cancellation points of their own: they reach open(), close(), pread(), write()
 * and usleep() with descriptors of the moment open, the segment file's exclusive flock held, or a handle half made
 * or half freed. A pthread_cancel() acted upon there left the descriptor, and with it the exclusive flock, for as
 * long as the process lived: every later forklog_open() of the log, in any process, waited for ever. So
 * cancellation is put off until the call has returned. */
int forklog_open(forklog **out, const char *path, const struct forklog_options *opts)
{
    int old;
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
    int rc = fl__open_path(out, path, opts);
    pthread_setcancelstate(old, &old);
    return rc;
}

static int fl__open_desc(forklog **out, int fd, const struct forklog_options *opts)
{
    int rc = fl__open_begin(out, &opts);
    if (rc < 0)
        return rc;
    if (opts->rotate_bytes || opts->rotate_keep)
        return fl__refuse(opts, -EINVAL, "rotation needs a path: rotate_bytes and rotate_keep must be 0");
    if (fd < 0)
        return -EBADF;

    /* What the descriptor is, and whether records can go through it whole. */
    int fl = fcntl(fd, F_GETFL);
    struct stat st;
    if (fl < 0 || fstat(fd, &st) < 0)
        return -errno;
    if (S_ISDIR(st.st_mode))
        return -EISDIR;
    if ((fl & O_ACCMODE) != O_WRONLY && (fl & O_ACCMODE) != O_RDWR)
        return fl__refuse(opts, -EBADF, "the descriptor is not open for writing");
    /* An inode with no file type (an eventfd, a timerfd, an epoll instance) takes no record: each write of one
     * fails with EINVAL, which would read as a bad argument of the record call. */
    if (!(st.st_mode & S_IFMT))
        return fl__refuse(opts, -EINVAL,
                          "the descriptor is not a file, a pipe, a socket or a device (an eventfd, a timerfd, ...)");
    if (!S_ISREG(st.st_mode) && (fl & O_NONBLOCK))
        return fl__refuse(opts, -EINVAL,
                          "the descriptor is in non-blocking mode: a record could be cut short by EAGAIN");
    struct forklog_options o = *opts;
    o.flags |= FORKLOG_PRIVATE; /* no name, so no segment file: the segment is this handle's own */
    if (!S_ISREG(st.st_mode))
        o.flags &= ~(unsigned)FORKLOG_SYNC; /* nothing to sync on a pipe, a socket or a device */
    if (S_ISSOCK(st.st_mode)) {
        int type = 0;
        socklen_t tlen = sizeof type;
        struct sockaddr_storage peer;
        socklen_t plen = sizeof peer;
        if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tlen) < 0)
            return -errno;
        if (getpeername(fd, (struct sockaddr *)&peer, &plen) < 0) {
            rc = -errno;
            return fl__refuse(opts, rc, "the socket is not connected");
        }
        /* A datagram carries one record; the buffer would put several records in one. */
        if ((type == SOCK_DGRAM || type == SOCK_SEQPACKET) && (o.flags & FORKLOG_BUFFERED))
            return fl__refuse(opts, -EINVAL, "FORKLOG_BUFFERED on a datagram socket: one record per datagram");
    }

    forklog *log;
    if ((rc = fl__handle_new(&log, "", &o)) < 0)
        return rc;
    /* The handle's own descriptor, above 2, close-on-exec; the caller keeps fd. */
    if ((log->fd = fcntl(fd, F_DUPFD_CLOEXEC, 3)) < 0) {
        /* EINVAL here means an RLIMIT_NOFILE of 3 or less: no number above 2 exists, so no descriptor is left. */
        rc = errno == EINVAL ? -EMFILE : -errno;
        fl__handle_free(log);
        return rc;
    }
    /* A regular file is appended to: every write at its end, so that a dead writer's fragment can be cut back.
     * The flag is on the open file description, which the caller's descriptor shares: an open that fails takes
     * it back. */
    int set_append = S_ISREG(st.st_mode) && !(fl & O_APPEND);
    if (set_append && fcntl(log->fd, F_SETFL, fl | O_APPEND) < 0) {
        rc = -errno;
        close(log->fd);
        fl__handle_free(log);
        return rc;
    }
    if ((rc = fl__handle_start(log, &o)) < 0) {
        if (set_append)
            (void)fcntl(fd, F_SETFL, fl);
        return rc;
    }
    *out = log;
    return 0;
}

int forklog_open_fd(forklog **out, int fd, const struct forklog_options *opts)
{
    int old;
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
    int rc = fl__open_desc(out, fd, opts);
    pthread_setcancelstate(old, &old);
    return rc;
}

static int fl__cut_result(size_t cut)
{
    return cut > (size_t)INT_MAX ? INT_MAX : (int)cut;
}

/* forklog_write() of a record that needs its newline or is too long. */
__attribute__((noinline)) static int fl__write_fixed(forklog *log, const char *rec, size_t len)
{
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

int forklog_write(forklog *log, const void *record, size_t len)
{
    if (!log || (!record && len))
        return -EINVAL;
    const char *rec = record;
    if (len && rec[len - 1] == '\n' && len <= log->max_record) {
        /* The usual record: whole, with its newline. */
        struct iovec iov = {(void *)(uintptr_t)rec, len};
        return fl__append(log, &iov, 1, len);
    }
    return fl__write_fixed(log, rec, len);
}

/* Builds the record into buf (bufcap bytes, on the caller's stack) when it fits, else the heap, and appends it.
 * ctx: the handle's context, loaded once by the caller, so that the record has it whole (old or new) whatever
 * another thread's forklog_context_add() does meanwhile. */
static int fl__emit(forklog *log, enum forklog_level level, const struct timespec *now, const struct fl__loc *loc,
                    const struct fl__ctx *ctx, const char *msg, size_t msglen, size_t msg_total,
                    const struct forklog_field *fields, size_t nfields, char *buf, size_t bufcap)
{
    size_t cap = fl__build_bound(log, msglen, loc, ctx, fields, nfields);
    if (cap > log->max_record)
        cap = log->max_record;
    char *out = buf;
    /* len is set by one of the two builds below; gcc at -Os and -Og does not see that the second runs whenever the
     * first did not, and a -Werror build would stop on its warning. */
    size_t cut, len = 0;
    int whole = 0;
    if (cap > bufcap) {
        /* The bound counts every message byte as escaped (6 bytes): most records still fit the stack buffer. */
        len = fl__build(log, level, now, loc, ctx, msg, msglen, msg_total, fields, nfields, buf,
                        bufcap < log->max_record ? bufcap : log->max_record, &cut, &whole);
        if (!whole && !(out = malloc(cap)))
            return -ENOMEM;
    }
    if (!whole)
        len = fl__build(log, level, now, loc, ctx, msg, msglen, msg_total, fields, nfields, out, cap, &cut, NULL);
    struct iovec iov = {out, len};
    /* A record built in memory of its own is not cancellable until that memory is freed: cancelled at its write(2),
     * the thread would leave it taken for as long as its process lives (fl__nocancel). */
    const int cancel = out != buf ? fl__nocancel() : 0;
    int rc = fl__append(log, &iov, 1, len);
    if (out != buf) {
        free(out);
        fl__cancel_back(cancel);
    }
    return rc < 0 ? rc : fl__cut_result(cut);
}

static int fl__level_ok(const forklog *log, enum forklog_level level, int *rc)
{
    if (!log || level < FORKLOG_DEBUG || level > FORKLOG_ERROR) {
        *rc = -EINVAL;
        return 0;
    }
    *rc = 0;
    /* The log's run-time level (forklog_set_level), one relaxed load of the shared segment per record. */
    unsigned shared = atomic_load_explicit(&log->seg->level, memory_order_relaxed);
    return (unsigned)level >= (shared ? shared : (unsigned)log->level);
}

/* A message longer than the stack buffer with nothing after it (no location, context or field): when it has
 * nothing to escape and the record fits max_record, prefix (out[0..p)), message and end go out as they are, in one
 * writev(2), with no copy of the message. Returns what fl__append returns, or 1 when the record needs building. */
static int fl__append_long(forklog *log, const char *out, size_t p, const char *msg, size_t len)
{
    const int json = log->format == FORKLOG_FORMAT_JSON;
    const size_t close = json ? 3 : 1; /* `"}\n` or `\n` */
    if (p + len + close > log->max_record || fl__needs_escape(json, msg, len))
        return 1;
    struct iovec iov[3] = {{(void *)(uintptr_t)out, p},
                           {(void *)(uintptr_t)msg, len},
                           {(void *)(uintptr_t)(json ? "\"}\n" : "\n"), close}};
    return fl__append(log, iov, 3, p + len + close);
}

/* The slow path of fl__vlog, out of line so that the fast path's frame holds one record buffer: the whole message
 * (up to max_record bytes of it), then escaping, quoting, fields and cutting. out[0..p) holds the prefix, and,
 * when the message fitted the room after it, out[p..p + n) the message; `again` formats it anew otherwise. */
static int fl__vlog_slow(forklog *log, enum forklog_level level, const struct timespec *now, const struct fl__loc *loc,
                         const struct fl__ctx *ctx, int tail, const char *fmt, va_list *again, char *out, size_t p,
                         size_t n, const char *str_arg) FORKLOG_PRINTF(7, 0) __attribute__((noinline));
static int fl__vlog_slow(forklog *log, enum forklog_level level, const struct timespec *now, const struct fl__loc *loc,
                         const struct fl__ctx *ctx, int tail, const char *fmt, va_list *again, char *out, size_t p,
                         size_t n, const char *str_arg)
{
    int rc;
    const int json = log->format == FORKLOG_FORMAT_JSON;
    const size_t close = json ? 3 : 1;
    size_t cap = log->max_record < FL__STACK_RECORD ? log->max_record : FL__STACK_RECORD;
    size_t room = cap - p - close;
    const char *msg = out + p;
    size_t total = n, msglen = total;
    char *heap = NULL;
    char aside[FL__STACK_RECORD];
    if (total > room && str_arg) {
        /* "%s" with a long string: the string is the message; nothing to format or copy. */
        msg = str_arg;
        msglen = total < log->max_record ? total : log->max_record;
    } else if (total > room) {
        size_t want = total < log->max_record ? total : log->max_record;
        if (!(heap = malloc(want + 1)))
            return -ENOMEM;
        vsnprintf(heap, want + 1, fmt, *again);
        msg = heap;
        msglen = want;
    } else {
        /* The message sits where the record will be built: move it aside first. */
        memcpy(aside, out + p, total);
        msg = aside;
    }
    /* The message's own memory, as fl__emit's record: not cancellable until it is freed. */
    const int cancel = heap ? fl__nocancel() : 0;
    rc = !tail && msglen == total ? fl__append_long(log, out, p, msg, total) : 1;
    if (rc == 1)
        rc = fl__emit(log, level, now, loc, ctx, msg, msglen, total, NULL, 0, out, FL__STACK_RECORD);
    if (heap) {
        free(heap);
        fl__cancel_back(cancel);
    }
    return rc;
}

static int fl__vlog(forklog *log, enum forklog_level level, const struct fl__loc *loc, const char *fmt, va_list ap)
    FORKLOG_PRINTF(4, 0);
static int fl__vlog(forklog *log, enum forklog_level level, const struct fl__loc *loc, const char *fmt, va_list ap)
{
    int rc;
    if (!fmt)
        return -EINVAL;
    if (!fl__level_ok(log, level, &rc))
        return rc;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    const int json = log->format == FORKLOG_FORMAT_JSON;
    const struct fl__ctx *ctx = atomic_load_explicit(&log->ctx, memory_order_acquire);
    const int tail = (loc && loc->file) || (ctx && ctx->n);

    /* Fast path: format the message straight after the prefix; if it fits, needs no escaping and nothing
     * follows it, that buffer is the record. One pass, no copy. */
    char out[FL__STACK_RECORD];
    size_t cap = log->max_record < sizeof out ? log->max_record : sizeof out;
    size_t p = fl__prefix(log, level, &now, out);
    size_t close = json ? 3 : 1; /* `"}\n` or `\n` */
    size_t room = cap - p - close;
    va_list again;
    va_copy(again, ap);
    int n = -1, esc = -1; /* esc: whether the message needs escaping, -1 until known */
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
                esc = fl__copy_esc(out + p, str, sl, json);
            else if ((sl = strlen(str)) > INT_MAX)
                sl = INT_MAX;
            n = (int)sl;
            str_arg = sl <= room ? NULL : str;
        }
    } else {
        /* The conversions users write most (%s %d %ld %u %zu %x %.6f ...), without vsnprintf, byte for byte the
         * same; anything else, or a message longer than the room, goes to vsnprintf. */
        va_list fast;
        va_copy(fast, ap);
        n = fl__vformat(out + p, room, fmt, fast);
        va_end(fast);
    }
    if (n < 0)
        n = vsnprintf(out + p, room + 1, fmt, ap);
    if (n < 0) {
        va_end(again);
        return -EINVAL;
    }
    if ((size_t)n <= room && esc < 0)
        esc = fl__needs_escape(json, out + p, (size_t)n);
    if (!tail && (size_t)n <= room && !esc) {
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
    if (tail && (size_t)n <= room && !esc && (json || !n || (out[p] != '"' && !memchr(out + p, '=', (size_t)n)))) {
        /* The location and the context follow the message, in place, when nothing needs escaping or quoting. */
        size_t o = p + (size_t)n;
        if (json)
            out[o++] = '"';
        long len = fl__tail_fast(log, loc, ctx, NULL, 0, out, o, cap);
        if (len > 0) {
            va_end(again);
            struct iovec iov = {out, (size_t)len};
            return fl__append(log, &iov, 1, (size_t)len);
        }
    }

    rc = fl__vlog_slow(log, level, &now, loc, ctx, tail, fmt, &again, out, p, (size_t)n, str_arg);
    va_end(again);
    return rc;
}

int forklog_vlog(forklog *log, enum forklog_level level, const char *fmt, va_list ap)
{
    return fl__vlog(log, level, NULL, fmt, ap);
}

int forklog_log(forklog *log, enum forklog_level level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = fl__vlog(log, level, NULL, fmt, ap);
    va_end(ap);
    return rc;
}

int forklog_vlog_at(forklog *log, enum forklog_level level, const char *file, int line, const char *func,
                    const char *fmt, va_list ap)
{
    struct fl__loc loc = {file, func, line};
    return fl__vlog(log, level, &loc, fmt, ap);
}

int forklog_log_at(forklog *log, enum forklog_level level, const char *file, int line, const char *func,
                   const char *fmt, ...)
{
    struct fl__loc loc = {file, func, line};
    va_list ap;
    va_start(ap, fmt);
    int rc = fl__vlog(log, level, &loc, fmt, ap);
    va_end(ap);
    return rc;
}

static int fl__log_fields(forklog *log, enum forklog_level level, const struct fl__loc *loc, const char *msg,
                          const struct forklog_field *fields, size_t nfields)
{
    int rc;
    if (!msg || (nfields && !fields) || nfields > FORKLOG_MAX_FIELDS)
        return -EINVAL;
    if (!fl__level_ok(log, level, &rc))
        return rc;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    size_t len = strlen(msg);
    char stack[FL__STACK_RECORD];

    /* Fast path: a message and values with nothing to escape or quote, written in one pass, in place. */
    const int json = log->format == FORKLOG_FORMAT_JSON;
    const struct fl__ctx *ctx = atomic_load_explicit(&log->ctx, memory_order_acquire);
    const int tail = (loc && loc->file) || (ctx && ctx->n) || nfields;
    size_t cap = log->max_record < sizeof stack ? log->max_record : sizeof stack;
    size_t p = fl__prefix(log, level, &now, stack);
    unsigned found;
    if (len < cap - p && !((found = fl__copy_scan(stack + p, msg, len, json)) & 1) &&
        (json || !tail || !len || (msg[0] != '"' && !(found & 2)))) {
        size_t o = p + len;
        if (json)
            stack[o++] = '"';
        long n = fl__tail_fast(log, loc, ctx, fields, nfields, stack, o, cap);
        if (n < 0)
            return (int)n;
        if (n > 0) {
            struct iovec iov = {stack, (size_t)n};
            return fl__append(log, &iov, 1, (size_t)n);
        }
    }

    if (!tail && len >= cap - p && (rc = fl__append_long(log, stack, p, msg, len)) != 1)
        return rc;
    if ((rc = fl__check_fields(fields, nfields)) < 0)
        return rc;
    return fl__emit(log, level, &now, loc, ctx, msg, len, len, fields, nfields, stack, sizeof stack);
}

int forklog_log_fields(forklog *log, enum forklog_level level, const char *msg, const struct forklog_field *fields,
                       size_t nfields)
{
    return fl__log_fields(log, level, NULL, msg, fields, nfields);
}

int forklog_log_fields_at(forklog *log, enum forklog_level level, const char *file, int line, const char *func,
                          const char *msg, const struct forklog_field *fields, size_t nfields)
{
    struct fl__loc loc = {file, func, line};
    return fl__log_fields(log, level, &loc, msg, fields, nfields);
}

/* Whether the calling process has one thread: /proc/self/task has a link per thread beyond its own two. 0 when it
 * cannot tell (no /proc). */
static int fl__one_thread(void)
{
    struct stat st;
    return stat("/proc/self/task", &st) == 0 && st.st_nlink == 3;
}

int forklog_context_add(forklog *log, const struct forklog_field *fields, size_t n)
{
    if (!log || (n && !fields) || n > FORKLOG_MAX_FIELDS)
        return -EINVAL;
    struct fl__ctx *old = atomic_load_explicit(&log->ctx, memory_order_acquire);
    for (;;) {
        struct fl__ctx *c;
        int rc = fl__ctx_merge(fl__keyset_of(log->format, log->keys), old, fields, n, &c);
        if (rc < 0)
            return rc;
        if (!c)
            return 0; /* nothing before, nothing added */
        /* The old context stays allocated (a record of another thread may be reading it) until close, or until a
         * call finds the process with one thread: then no record is being built but by a signal handler that
         * interrupted this call, and that one reads the new context. So a single-threaded worker that adds
         * context per request does not grow. */
        c->prev = old;
        if (atomic_compare_exchange_strong_explicit(&log->ctx, &old, c, memory_order_acq_rel, memory_order_acquire)) {
            if (old && fl__one_thread()) {
                c->prev = NULL;
                fl__ctx_free(old);
            }
            return 0;
        }
        free(c); /* another thread added first: merge again with its context */
    }
}

int forklog_set_level(forklog *log, enum forklog_level level)
{
    if (!log || (level != 0 && (level < FORKLOG_DEBUG || level > FORKLOG_ERROR)))
        return -EINVAL;
    atomic_store_explicit(&log->seg->level, (unsigned)level, memory_order_relaxed);
    return 0;
}

int forklog_get_level(forklog *log)
{
    if (!log)
        return -EINVAL;
    unsigned shared = atomic_load_explicit(&log->seg->level, memory_order_relaxed);
    return shared ? (int)shared : (int)log->level;
}

int forklog_flush(forklog *log)
{
    if (!log)
        return -EINVAL;
    if (!(log->flags & FORKLOG_BUFFERED))
        return 0;
    return fl__flush(log);
}

int forklog_reopen(forklog *log)
{
    if (!log)
        return -EINVAL;
    if (!log->path[0])
        return 0; /* forklog_open_fd(): no name to reopen; the descriptor is the log */
    atomic_fetch_add_explicit(&log->seg->reopen_req, 1, memory_order_release);
    return 0;
}

static int fl__close(forklog *log)
{
    int rc = forklog_flush(log);
    /* Called while a thread cancelled inside a call of this handle unwinds (a cleanup handler, a C++ destructor), the
     * thread may still hold the lock, taken through this handle's mapping. The kernel frees a dead holder's lock
     * only through the mapping it was taken in: unmapped first, the lock would stay held by a thread that no longer
     * exists, and every process of the log would wait for it for ever. It is released here instead, its state left
     * as the cancelled call left it (not IDLE in the middle of a write), which the next holder repairs as it repairs
     * a dead holder's. The flush above failed with -EDEADLK: that thread is still inside its call. A robust mutex
     * checks its owner (glibc and musl): the unlock is EPERM, and changes nothing, unless this thread holds it, so
     * the record path keeps no note of which lock a thread holds. `held`, a hint, is left to the next holder: a
     * waiter that spins on it sleeps on the lock, which this unlock wakes. */
    if (fl__my.busy == fl__pid(log))
        (void)pthread_mutex_unlock(&log->seg->mu);
    fl__seg_close(log);
    if (log->proc) {
        long page = sysconf(_SC_PAGESIZE);
        munmap(log->proc, page > 0 ? (size_t)page : 4096);
    }
    if (close(log->fd) < 0 && rc == 0)
        rc = -errno;
    fl__handle_free(log);
    return rc;
}

int forklog_close(forklog *log)
{
    if (!log)
        return 0;
    int old;
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
    int rc = fl__close(log);
    pthread_setcancelstate(old, &old);
    return rc;
}
