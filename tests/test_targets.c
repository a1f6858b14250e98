/* SPDX-License-Identifier: MIT */
/* What the log writes to, and what rotation may touch: targets that are not regular files (a FIFO, a character
 * device, a pipe, a unix socket), files created for an owner and group other than the creator's (a privileged
 * parent whose workers drop their privileges), and rotated names that hold something other than a regular file.
 * Every record is self-checking (records.h) and read back; children never assert: they report through their
 * exit status, each failing step with its own code. */
#include "points.h"
#include "records.h"

#include <dirent.h>
#include <dlfcn.h>
#include <grp.h>
#include <limits.h>
#include <pthread.h>
#include <sys/ioctl.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/user.h>

/* The unprivileged user and group of the privilege tests: nobody and nogroup on Debian-like systems. */
#define NOBODY 65534

/* Seconds a call that must not block has before the test calls it a hang. */
#define HANG_S 10.0

static char *dir, *logpath;

static void setup(void)
{
    dir = th_tmpdir();
    logpath = th_path(dir, "t.log");
    rc_init();
}

static void teardown(void)
{
    th_rmdir(dir);
    free(logpath);
    free(dir);
}

TestSuite(targets, .init = setup, .fini = teardown);

/* path.k (path itself for k 0), malloc'd. */
static char *rotated(const char *path, unsigned k)
{
    size_t n = strlen(path) + 16;
    char *p = malloc(n);
    cr_assert_not_null(p);
    if (k == 0)
        snprintf(p, n, "%s", path);
    else
        snprintf(p, n, "%s.%u", path, k);
    return p;
}

static forklog *open_log(const char *path, const struct forklog_options *o)
{
    forklog *log = NULL;
    int rc = forklog_open(&log, path, o);
    cr_assert_eq(rc, 0, "forklog_open(%s): %s", path, strerror(-rc));
    return log;
}

/* The names in the test directory, sorted and joined by spaces ("" when empty), but for hidden ones (the log's
 * segment file, `.NAME.forklog`, is there while the log is open). */
static char *listing(void)
{
    struct dirent **names;
    int n = scandir(dir, &names, NULL, alphasort);
    cr_assert_geq(n, 0);
    char *out = calloc(1, 4096);
    cr_assert_not_null(out);
    for (int i = 0; i < n; i++) {
        if (names[i]->d_name[0] != '.') {
            if (out[0])
                strcat(out, " ");
            strncat(out, names[i]->d_name, 4096 - strlen(out) - 2);
        }
        free(names[i]);
    }
    free(names);
    return out;
}

static void assert_listing(const char *want)
{
    char *have = listing();
    cr_assert_str_eq(have, want, "the directory holds [%s], not [%s]", have, want);
    free(have);
}

/* The file type bits of what is at path (lstat: a symlink is a symlink). */
static mode_t type_of(const char *path)
{
    struct stat st;
    cr_assert_eq(lstat(path, &st), 0, "%s: %s", path, strerror(errno));
    return st.st_mode & S_IFMT;
}

/* Writes records (id, seq0 .. seq0 + n - 1) of `payload` bytes; returns 0, or 10 + the first failing index. For
 * children: never asserts. */
static int write_records(forklog *log, unsigned id, unsigned seq0, unsigned n, size_t payload)
{
    char buf[RC_HEAD_MAX + 256];
    if (payload > 256)
        return 1;
    for (unsigned i = 0; i < n; i++)
        if (rc_write(log, buf, 'R', id, seq0 + i, 0, payload) != 0)
            return 10 + (int)i;
    return 0;
}

/* ---- targets that are not regular files ------------------------------------------------------------------ */

/* Drains a descriptor into a growing buffer until end of file, in a thread, so that writers never fill a pipe. */
struct drain {
    int fd;
    char *buf;
    size_t len, cap;
    pthread_t thread;
};

static void *drain_run(void *arg)
{
    struct drain *d = arg;
    for (;;) {
        if (d->cap - d->len < 65536) {
            d->cap = d->cap ? d->cap * 2 : 1 << 20;
            d->buf = realloc(d->buf, d->cap);
            if (!d->buf)
                abort();
        }
        ssize_t n = read(d->fd, d->buf + d->len, d->cap - d->len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return NULL;
        d->len += (size_t)n;
    }
}

static void drain_start(struct drain *d, int fd)
{
    memset(d, 0, sizeof *d);
    d->fd = fd;
    cr_assert_eq(pthread_create(&d->thread, NULL, drain_run, d), 0);
}

/* Waits for end of file (every writer closed) and checks what came through: only whole records, each of ids
 * 0 .. ids-1 and seqs 0 .. seqs-1 exactly once. */
static void drain_check(struct drain *d, unsigned ids, unsigned seqs)
{
    cr_assert_eq(pthread_join(d->thread, NULL), 0);
    close(d->fd);
    char *copy = th_path(dir, "drained");
    int fd = open(copy, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, d->buf, d->len), (ssize_t)d->len);
    close(fd);
    struct rc_seen seen;
    rc_seen_init(&seen, ids, seqs);
    rc_scan(&seen, copy, 0);
    for (unsigned id = 0; id < ids; id++)
        for (unsigned q = 0; q < seqs; q++)
            cr_assert_eq(rc_count(&seen, id, q), 1, "record %u/%u came through %u times", id, q,
                         rc_count(&seen, id, q));
    cr_assert_eq(seen.records, (size_t)ids * seqs);
    rc_seen_free(&seen);
    unlink(copy);
    free(copy);
    free(d->buf);
}

/* An open for reading that does not wait for a writer, then blocking reads. */
static int open_reader(const char *path)
{
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    cr_assert_geq(fd, 0, "%s: %s", path, strerror(errno));
    cr_assert_eq(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK), 0);
    return fd;
}

/* Three children and the parent write 30 records each to the log; each child exits with write_records' code. */
static void four_writers(forklog *log)
{
    pid_t kids[3];
    for (unsigned c = 0; c < 3; c++) {
        kids[c] = fork();
        cr_assert_neq(kids[c], -1);
        if (kids[c] == 0) {
            rc_child();
            int rc = write_records(log, c + 1, 0, 30, 60);
            _exit(rc ? rc : forklog_close(log) == 0 ? 0 : 2);
        }
    }
    cr_assert_eq(write_records(log, 0, 0, 30, 60), 0);
    for (unsigned c = 0; c < 3; c++)
        cr_assert_eq(th_wait_for(kids[c], 60), 0, "writer %u", c + 1);
}

Test(targets, fifo_with_a_reader_is_written_whole_and_never_rotated)
{
    cr_assert_eq(mkfifo(logpath, 0600), 0);
    int rfd = open_reader(logpath);
    /* 120 records of ~90 bytes: rotate_bytes is passed many times over. */
    struct forklog_options o = {.rotate_bytes = 500, .rotate_keep = 3};
    forklog *log = open_log(logpath, &o);
    /* Read only once the log holds the write end: a read of a FIFO that no writer has open yet is end of file. */
    struct drain d;
    drain_start(&d, rfd);
    four_writers(log);
    cr_assert_eq(forklog_close(log), 0);
    drain_check(&d, 4, 30);
    cr_assert_eq(type_of(logpath), S_IFIFO, "the FIFO was replaced");
    assert_listing("t.log");
}

Test(targets, sync_on_a_fifo_or_a_device_writes_each_record_once_and_succeeds)
{
    /* FORKLOG_SYNC applies to regular files: a FIFO or a device cannot be synced (fdatasync() fails with EINVAL
     * there), and a record already in the stream must not be reported failed, or a caller that retries would
     * write it twice. */
    cr_assert_eq(mkfifo(logpath, 0600), 0);
    int rfd = open_reader(logpath);
    struct forklog_options o = {.flags = FORKLOG_SYNC};
    forklog *log = open_log(logpath, &o);
    cr_assert_eq(forklog_write(log, "first synced", 12), 0);
    cr_assert_eq(forklog_log(log, FORKLOG_INFO, "%s", "second synced"), 0);
    cr_assert_eq(forklog_close(log), 0);
    char got[512];
    size_t len = 0;
    for (;;) {
        ssize_t n = read(rfd, got + len, sizeof got - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        cr_assert_geq(n, 0, "read: %s", strerror(errno));
        if (n == 0)
            break;
        len += (size_t)n;
    }
    close(rfd);
    got[len] = '\0';
    cr_assert(strncmp(got, "first synced\n", 13) == 0, "the reader got:\n%s", got);
    cr_assert_eq(th_count_lines(got, len), 2, "the reader got:\n%s", got);
    cr_assert(len > 14 && strcmp(got + len - 14, "second synced\n") == 0, "the reader got:\n%s", got);

    forklog *null;
    cr_assert_eq(forklog_open(&null, "/dev/null", &o), 0);
    cr_assert_eq(forklog_write(null, "to the device", 13), 0);
    cr_assert_eq(forklog_close(null), 0);
}

Test(targets, fifo_without_a_reader_never_blocks)
{
    cr_assert_eq(mkfifo(logpath, 0600), 0);
    /* No reader: forklog_open fails at once with -ENXIO and creates nothing. In a child, so that a hang is a
     * failure of this test and not of the run. */
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        rc_child();
        forklog *log = (forklog *)1;
        char why[256];
        struct forklog_options o = {.error = why, .error_size = sizeof why};
        int rc = forklog_open(&log, logpath, &o);
        _exit(rc == -ENXIO && log == NULL
                  ? strstr(why, "FIFO that no process has open for reading; forklog does not wait for a reader") ? 0 : 2
                  : 1);
    }
    cr_assert_eq(th_wait_for(pid, HANG_S), 0,
                 "forklog_open on a FIFO with no reader: not -ENXIO at once (1), or opts->error does not say why (2)");
    assert_listing("t.log");

    /* With a reader, the log opens; the reader then goes away. */
    int rfd = open_reader(logpath);
    struct forklog_options o = {.rotate_bytes = 100};
    forklog *log = open_log(logpath, &o);
    cr_assert_eq(forklog_write(log, "while read", 10), 0);
    char got[32] = {0};
    cr_assert_eq(read(rfd, got, sizeof got - 1), 11);
    cr_assert_str_eq(got, "while read\n");
    close(rfd);

    /* A forked child writes: its write fails with -EPIPE (SIGPIPE ignored), as a plain write would; it must not
     * wait for a reader that will never come. */
    pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        rc_child();
        signal(SIGPIPE, SIG_IGN);
        _exit(forklog_write(log, "reader gone", 11) == -EPIPE ? 0 : 1);
    }
    cr_assert_eq(th_wait_for(pid, HANG_S), 0, "a child's write to a FIFO whose reader has gone: not -EPIPE at once");

    /* A reopen finds no reader either: -ENXIO, at once. */
    cr_assert_eq(forklog_reopen(log), 0);
    pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        rc_child();
        signal(SIGPIPE, SIG_IGN);
        _exit(forklog_write(log, "after reopen", 12) == -ENXIO ? 0 : 1);
    }
    cr_assert_eq(th_wait_for(pid, HANG_S), 0, "a reopen of a FIFO with no reader: not -ENXIO at once");
    forklog_close(log);
    cr_assert_eq(type_of(logpath), S_IFIFO);
    assert_listing("t.log");
}

/* The same, then the reader goes away (closes its end): with `want` short of the stream, in the middle of it. */
static void *read_then_leave(void *arg)
{
    read_to_the_end(arg);
    close(((struct short_reader *)arg)->fd);
    return NULL;
}

/* A reader of the FIFO at logpath that reads to the end while this process flushes and closes log. */
static struct short_reader flush_and_close_for_the_next_reader(forklog *log)
{
    struct short_reader next = {.fd = open_reader(logpath), .want = (size_t)2 << 20};
    cr_assert_not_null(next.buf = malloc(next.want));
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, read_to_the_end, &next), 0);
    cr_assert_eq(forklog_flush(log), 0);
    cr_assert_eq(forklog_close(log), 0);
    pthread_join(t, NULL);
    close(next.fd);
    return next;
}

/* A FIFO made at logpath, a reader *r of it that will take 10,000 bytes, and a log on it with options o (NULL: the
 * defaults); SIGPIPE ignored. */
static forklog *fifo_log(struct short_reader *r, const struct forklog_options *o)
{
    signal(SIGPIPE, SIG_IGN);
    cr_assert_eq(mkfifo(logpath, 0600), 0);
    *r = (struct short_reader){.fd = open_reader(logpath), .want = 10000};
    cr_assert_not_null(r->buf = malloc(r->want));
    return open_log(logpath, o);
}

/* fifo_log() of a buffered log (rings of 1 MiB, records flushed only when asked). */
static forklog *buffered_fifo_log(struct short_reader *r)
{
    struct forklog_options o = {.flags = FORKLOG_BUFFERED, .flush_ms = 600000, .buffer_size = (size_t)1 << 20};
    return fifo_log(r, &o);
}

/* What reader a got, then what reader b got, in one buffer (malloc'd) of *len bytes. */
static char *both_readers(const struct short_reader *a, const struct short_reader *b, size_t *len)
{
    *len = a->got + b->got;
    char *got = malloc(*len + 1);
    cr_assert_not_null(got);
    memcpy(got, a->buf, a->got);
    memcpy(got + a->got, b->buf, b->got);
    return got;
}

/* The FIFO at logpath removed, log moved by forklog_reopen() to the regular file it then creates there, flushed and
 * closed: that file's bytes (malloc'd, *len of them). */
static char *moved_to_a_file(forklog *log, size_t *len)
{
    cr_assert_eq(unlink(logpath), 0);
    cr_assert_eq(forklog_reopen(log), 0);
    cr_assert_eq(forklog_flush(log), 0);
    cr_assert_eq(forklog_close(log), 0);
    return th_slurp(logpath, len);
}

/* A line of len bytes (malloc'd): 'A's, then its newline. */
static char *line_of_a(size_t len)
{
    char *rec = malloc(len);
    cr_assert_not_null(rec);
    memset(rec, 'A', len - 1);
    rec[len - 1] = '\n';
    return rec;
}

/* A buffered log on the FIFO at logpath holding 3000 records of 90 bytes, none written yet: in the rings of its
 * writer threads, or (rotating: ignored on a FIFO, but the log then has the one buffer of a rotating log) in one
 * shared buffer. *stream receives the bytes they make, in order (malloc'd), *slen their count. */
static forklog *buffered_3000(int rotating, char **stream, size_t *slen)
{
    struct forklog_options o = {.flags = FORKLOG_BUFFERED,
                                .flush_ms = 600000,
                                .buffer_size = (size_t)1 << 20,
                                .rotate_bytes = rotating ? (1u << 30) : 0};
    forklog *log = open_log(logpath, &o);
    char rec[128];
    cr_assert_not_null(*stream = malloc((size_t)1 << 20));
    *slen = 0;
    for (int i = 0; i < 3000; i++) {
        int n = snprintf(rec, sizeof rec, "record %04d %070d\n", i, i);
        cr_assert_eq(forklog_write(log, rec, (size_t)n), 0);
        memcpy(*stream + *slen, rec, (size_t)n);
        *slen += (size_t)n;
    }
    return log;
}

/* A FIFO's reader goes away in the middle of a flush of the buffered records (a log shipper that restarts): the
 * flush fails with -EPIPE, and the bytes that went into the FIFO are in it, waiting in the pipe for its next reader;
 * nothing can take them back. Kept in the buffer and written again by the next flush, they reached the next reader
 * twice, the first time with the record that went out in part cut short and glued to the first record sent again.
 * The next flush goes on from the first byte that did not go out: the stream the two readers get, one after the
 * other, is every record once, in order, each whole. */
Test(targets, a_buffered_fifo_whose_reader_goes_away_mid_flush_gets_no_record_twice)
{
    signal(SIGPIPE, SIG_IGN);
    cr_assert_eq(mkfifo(logpath, 0600), 0);
    struct short_reader r = {.fd = open_reader(logpath), .want = 10000};
    for (int rotating = 0; rotating < 2; rotating++) {
        char *stream;
        size_t slen;
        forklog *log = buffered_3000(rotating, &stream, &slen);
        r.buf = malloc(r.want);
        r.got = 0;
        pthread_t t;
        cr_assert_eq(pthread_create(&t, NULL, read_then_leave, &r), 0);
        int rc = forklog_flush(log);
        pthread_join(t, NULL);
        cr_assert_eq(r.got, r.want);
        cr_assert_eq(rc, -EPIPE, "the flush whose reader went away: %d", rc);
        /* The next reader, and the flush that finds it. */
        struct short_reader next = flush_and_close_for_the_next_reader(log);
        size_t len = next.got;
        cr_assert_eq(r.want + len, slen, "the readers got %zu + %zu bytes of a stream of %zu%s", r.want, len, slen,
                     rotating ? " (rotating)" : "");
        cr_assert(memcmp(r.buf, stream, r.want) == 0 && memcmp(next.buf, stream + r.want, len) == 0,
                  "the readers did not get the records once each, in order%s", rotating ? " (rotating)" : "");
        free(next.buf);
        free(r.buf);
        free(stream);
        r.fd = open_reader(logpath); /* for the next round; the last is closed below */
    }
    close(r.fd);
}

/* A forked child that writes rec (or flushes, rec NULL), armed to be killed at crash point cp. It closes its copy of
 * reader, a FIFO's read end, which would otherwise keep the FIFO's reader there after the reader went away. Returns
 * its pid; it exits 1 if it lives through the call. */
static pid_t killed_at(forklog *log, enum fl__crash_point cp, int reader, const void *rec, size_t len)
{
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        rc_child();
        close(reader);
        signal(SIGPIPE, SIG_IGN);
        fl__crash_arm(cp, 1, FL__CRASH_KILL);
        if (rec)
            (void)forklog_write(log, rec, len);
        else
            (void)forklog_flush(log);
        _exit(1);
    }
    return pid;
}

/* A record rec of len bytes written to log (rec NULL: a flush of log) while reader r reads its 10,000 bytes and goes
 * away: in this process, which gets -EPIPE, or (killed) in a forked child killed once the write failed (and, a flush,
 * dropped what went out: WRITE_FAILED). */
static void as_the_reader_leaves(forklog *log, struct short_reader *r, int killed, const char *rec, size_t len)
{
    const char *what = rec ? "record" : "flush";
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, read_then_leave, r), 0);
    if (killed) {
        pid_t pid = killed_at(log, FL__CP_WRITE_FAILED, r->fd, rec, len);
        pthread_join(t, NULL);
        cr_assert_eq(th_wait_for(pid, HANG_S), 128 + SIGKILL, "the %s's writer was not killed at WRITE_FAILED", what);
    } else {
        int rc = rec ? forklog_write(log, rec, len) : forklog_flush(log);
        pthread_join(t, NULL);
        cr_assert_eq(rc, -EPIPE, "the %s whose reader went away: %d", what, rc);
    }
}

/* The same in direct mode: a record whose reader goes away while it is written fails with -EPIPE, and its first part
 * stays in the FIFO for the next reader. The next record was glued to that fragment, one line for the reader, where
 * the record a call acknowledged could not be found. As a regular file that ends in the middle of a line gets a
 * newline before the next record, the fragment is ended first: the next reader gets it on a line of its own, then
 * every later record whole. */
Test(targets, a_record_whose_fifo_reader_goes_away_leaves_a_fragment_the_next_record_is_not_glued_to)
{
    struct short_reader r;
    forklog *log = fifo_log(&r, NULL);
    size_t big = (size_t)200 << 10;
    char *rec = line_of_a(big);
    as_the_reader_leaves(log, &r, 0, rec, big);
    pthread_t t;
    struct short_reader next = {.fd = open_reader(logpath), .want = big};
    cr_assert_not_null(next.buf = malloc(next.want));
    cr_assert_eq(pthread_create(&t, NULL, read_to_the_end, &next), 0);
    cr_assert_eq(forklog_write(log, "next record", 11), 0);
    cr_assert_eq(forklog_info(log, "and %s", "another"), 0);
    cr_assert_eq(forklog_close(log), 0);
    pthread_join(t, NULL);
    close(next.fd);
    size_t len = next.got;
    cr_assert_gt(len, 30);
    cr_assert_eq(th_count_lines(next.buf, len), 3, "the fragment, then two whole records");
    char *first_nl = memchr(next.buf, '\n', len);
    for (char *p = next.buf; p < first_nl; p++)
        cr_assert_eq(*p, 'A', "the fragment's line holds something else at byte %zu", (size_t)(p - next.buf));
    cr_assert(!strncmp(first_nl + 1, "next record\n", 12), "the record after the fragment: %.40s", first_nl + 1);
    cr_assert(memcmp(next.buf + len - 13, " and another\n", 13) == 0, "the last record is not whole");
    cr_assert_not_null(memmem(first_nl + 13, len - (size_t)(first_nl + 13 - next.buf), " INFO pid=", 10));
    free(next.buf);
    free(r.buf);
    free(rec);
}

/* A buffered log on a FIFO (its writer threads' rings, or the shared buffer of a rotating log) whose reader goes away
 * in the middle of a flush, and a flusher killed: the flusher of that flush, right after it dropped what went out
 * (WRITE_FAILED); or (before_rest) the next flusher, before it sent anything of the rest of the record that flush
 * cut short (WRITE_BEGIN). Then this process writes and flushes one record for the next reader. */
static void flusher_dies_then_next_record(int before_rest)
{
    signal(SIGPIPE, SIG_IGN);
    cr_assert_eq(mkfifo(logpath, 0600), 0);
    static const char after[] = "the record after the death\n";
    for (int rotating = 0; rotating < 2; rotating++) {
        struct short_reader r = {.fd = open_reader(logpath), .want = 10000};
        cr_assert_not_null(r.buf = malloc(r.want));
        char *stream;
        size_t slen;
        forklog *log = buffered_3000(rotating, &stream, &slen);
        pthread_t t;
        cr_assert_eq(pthread_create(&t, NULL, read_then_leave, &r), 0);
        if (!before_rest) {
            pid_t pid = killed_at(log, FL__CP_WRITE_FAILED, r.fd, NULL, 0);
            pthread_join(t, NULL);
            cr_assert_eq(r.got, r.want);
            cr_assert_eq(th_wait_for(pid, HANG_S), 128 + SIGKILL, "the flusher was not killed at WRITE_FAILED");
        } else {
            int rc = forklog_flush(log);
            pthread_join(t, NULL);
            cr_assert_eq(rc, -EPIPE, "the flush whose reader went away: %d", rc);
            cr_assert_eq(r.got, r.want);
            cr_assert_eq(th_wait_for(killed_at(log, FL__CP_WRITE_BEGIN, -1, NULL, 0), HANG_S), 128 + SIGKILL,
                         "the flusher was not killed at WRITE_BEGIN");
        }
        struct short_reader next = {.fd = open_reader(logpath), .want = (size_t)2 << 20};
        cr_assert_not_null(next.buf = malloc(next.want));
        cr_assert_eq(pthread_create(&t, NULL, read_to_the_end, &next), 0);
        cr_assert_eq(forklog_write(log, after, sizeof after - 1), 0);
        cr_assert_eq(forklog_flush(log), 0);
        cr_assert_eq(forklog_close(log), 0);
        pthread_join(t, NULL);
        close(next.fd);
        size_t len, alen = sizeof after - 1;
        char *got = both_readers(&r, &next, &len);
        cr_assert_gt(len, r.want + alen, "the next reader got %zu bytes%s", next.got, rotating ? " (rotating)" : "");
        cr_assert(memcmp(got + len - alen, after, alen) == 0, "the record after the death is not whole at the end%s",
                  rotating ? " (rotating)" : "");
        size_t pre = len - alen - 1; /* the stream's bytes, before the newline that ends the fragment */
        if (!before_rest) {
            /* The dead flusher had dropped what went out: the next flush goes on where the stream stopped, as after
             * a flusher that lives on, and the readers get every record once, in order, each whole. */
            cr_assert_eq(len, slen + alen, "the readers got %zu bytes, not %zu%s", len, slen + alen,
                         rotating ? " (rotating)" : "");
            cr_assert(memcmp(got, stream, slen) == 0, "the readers did not get the records once each, in order%s",
                      rotating ? " (rotating)" : "");
        } else {
            cr_assert_eq(got[pre], '\n', "the record after the death is glued to the fragment: ...%.50s%s",
                         got + pre - 40, rotating ? " (rotating)" : "");
            cr_assert_lt(pre, slen);
            cr_assert(memcmp(got, stream, pre) == 0, "the readers did not get the records once each, in order%s",
                      rotating ? " (rotating)" : "");
        }
        free(got);
        free(next.buf);
        free(r.buf);
        free(stream);
    }
}

/* The flusher of the flush whose reader goes away is a forked child killed right after it dropped what went out from
 * the buffer or the rings (WRITE_FAILED). The first part of the record cut short stays in the FIFO for the next
 * reader, and the rest of it, in the buffer or its ring, is what the next flush begins with, as after a flusher that
 * lives on: what the two readers get, one after the other, is every record once, in order, each whole, then the
 * next record, which this process writes and flushes. */
Test(targets, a_buffered_fifo_whose_flusher_dies_after_its_reader_went_away_gets_no_glued_line)
{
    flusher_dies_then_next_record(0);
}

/* The flush whose reader goes away fails in this process, and leaves the rest of the record it cut short to the next
 * flush; the next flusher is a forked child killed before its write (WRITE_BEGIN), which sent nothing. All it was to
 * write counts as written, as for any flusher that dies on a stream, the rest of the record cut short too: the FIFO
 * ends in the middle of that record, and the next record, which this process writes and flushes, was glued to it.
 * What the two readers get, one after the other, is the records in order, each once, the last one sent cut short on
 * a line of its own, then the next record whole: in the rings, and in the shared buffer of a rotating log. */
Test(targets, a_buffered_fifo_whose_flusher_dies_before_writing_the_rest_of_a_cut_record_gets_no_glued_line)
{
    flusher_dies_then_next_record(1);
}

/* A buffered log on a FIFO whose reader went away before the flush: the flush fails with -EPIPE, nothing of it went
 * out, and its flusher, a forked child, is killed right there (WRITE_FAILED). It was repaired as one killed in its
 * write, everything in its plan counted as written: every record, each acknowledged and none sent, was lost. The next
 * reader gets them all, once each, in order (the rings, then the one buffer of a rotating log). */
Test(targets, a_flusher_killed_after_a_flush_that_sent_nothing_loses_no_record)
{
    signal(SIGPIPE, SIG_IGN);
    cr_assert_eq(mkfifo(logpath, 0600), 0);
    for (int rotating = 0; rotating < 2; rotating++) {
        int rfd = open_reader(logpath);
        char *stream;
        size_t slen;
        forklog *log = buffered_3000(rotating, &stream, &slen);
        close(rfd);
        cr_assert_eq(th_wait_for(killed_at(log, FL__CP_WRITE_FAILED, -1, NULL, 0), HANG_S), 128 + SIGKILL,
                     "the flusher was not killed at WRITE_FAILED%s", rotating ? " (rotating)" : "");
        struct short_reader next = flush_and_close_for_the_next_reader(log);
        cr_assert_eq(next.got, slen, "the next reader got %zu bytes of %zu%s", next.got, slen,
                     rotating ? " (rotating)" : "");
        cr_assert(memcmp(next.buf, stream, slen) == 0, "the reader did not get the records once each, in order%s",
                  rotating ? " (rotating)" : "");
        free(next.buf);
        free(stream);
    }
}

/* A writer thread that appends n records "<tag> NNNN ..." to its own ring, then waits (its ring stays its own) until
 * told to end. */
struct ring_writer {
    forklog *log;
    char tag;
    unsigned n;
    pthread_barrier_t done, end;
    pthread_t t;
};

static int ring_record(char *rec, size_t cap, char tag, unsigned i)
{
    return snprintf(rec, cap, "%c %04u %070u\n", tag, i, i);
}

static void *ring_writer_run(void *arg)
{
    struct ring_writer *w = arg;
    char rec[128];
    for (unsigned i = 0; i < w->n; i++)
        if (forklog_write(w->log, rec, (size_t)ring_record(rec, sizeof rec, w->tag, i)) != 0)
            break;
    pthread_barrier_wait(&w->done);
    pthread_barrier_wait(&w->end);
    return NULL;
}

/* Starts w's thread and waits until its records are in its ring; appends them to stream. */
static void ring_writer_start(struct ring_writer *w, char *stream, size_t *slen)
{
    pthread_barrier_init(&w->done, NULL, 2);
    pthread_barrier_init(&w->end, NULL, 2);
    cr_assert_eq(pthread_create(&w->t, NULL, ring_writer_run, w), 0);
    pthread_barrier_wait(&w->done);
    for (unsigned i = 0; i < w->n; i++)
        *slen += (size_t)ring_record(stream + *slen, 128, w->tag, i);
}

/* Lets w's thread end (it keeps its ring until then) and waits for it. */
static void ring_writer_end(struct ring_writer *w)
{
    pthread_barrier_wait(&w->end);
    pthread_join(w->t, NULL);
}

/* Reads what the FIFO at logpath still holds (what the pipe took beyond what its reader read), which must be the
 * stream's bytes from `sent` on; returns `sent` past them. */
static size_t fifo_rest(const char *stream, size_t sent)
{
    int rd = open(logpath, O_RDONLY | O_NONBLOCK);
    cr_assert_geq(rd, 0);
    char chunk[4096];
    ssize_t n;
    while ((n = read(rd, chunk, sizeof chunk)) > 0) {
        cr_assert(memcmp(chunk, stream + sent, (size_t)n) == 0, "the FIFO holds other bytes than the stream's");
        sent += (size_t)n;
    }
    close(rd);
    return sent;
}

/* The log moves to a regular file (the FIFO removed, forklog_reopen() creates a file at path) after a failed flush
 * cut a record of ring `t` short in the FIFO (sent: the bytes of the stream its reader read). The rest of that record
 * belongs to the FIFO its first part went to: the new file must hold whole records only, every record of `t` after
 * the one cut short, the first ring's new record and `u`'s, each once, `t`'s in order. how 0: the move in this
 * process; 1 and 2: the mover is a forked child killed at REST_MARKED or REST_DROPPED, in the middle of dropping
 * the rest, and this process finishes the move. */
static void moved_on_after_a_cut(forklog *log, const char *stream, size_t slen, size_t sent, int how,
                                 struct ring_writer *w, struct ring_writer *u)
{
    static const char after[] = "m after the move\n";
    /* What the pipe took beyond what the reader read went out too: the FIFO keeps it for its next reader. */
    sent = fifo_rest(stream, sent);
    size_t cut = sent;
    while (cut < slen && stream[cut - 1] != '\n')
        cut++; /* the end of the record that went out in part */
    cr_assert_lt(cut, slen);
    cr_assert_neq(stream[sent - 1], '\n', "the failed flush did not cut a record");
    cr_assert_eq(stream[cut], 't', "the record cut short is not the second ring's");
    cr_assert_eq(unlink(logpath), 0);
    cr_assert_eq(forklog_reopen(log), 0);
    if (how) {
        const int point = how == 1 ? FL__CP_REST_MARKED : FL__CP_REST_DROPPED;
        cr_assert_eq(th_wait_for(killed_at(log, point, -1, NULL, 0), HANG_S), 128 + SIGKILL,
                     "the mover was not killed at %s", how == 1 ? "REST_MARKED" : "REST_DROPPED");
    }
    cr_assert_eq(forklog_write(log, after, sizeof after - 1), 0);
    cr_assert_eq(forklog_flush(log), 0);
    cr_assert_eq(forklog_close(log), 0);
    pthread_barrier_wait(&w->end);
    pthread_barrier_wait(&u->end);
    pthread_join(w->t, NULL);
    pthread_join(u->t, NULL);
    size_t len;
    char *got = th_slurp(logpath, &len);
    unsigned next_t = 0, next_u = 0, afters = 0;
    cr_assert_eq(sscanf(stream + cut, "t %u", &next_t), 1);
    const unsigned first_t = next_t;
    for (size_t at = 0; at < len;) {
        const char *nl = memchr(got + at, '\n', len - at);
        cr_assert_not_null(nl, "the file ends in the middle of a line: %.60s", got + at);
        size_t n = (size_t)(nl - (got + at)) + 1;
        char rec[128];
        unsigned i = 0;
        if (n == sizeof after - 1 && memcmp(got + at, after, n) == 0) {
            afters++;
        } else {
            cr_assert(n < sizeof rec && sscanf(got + at, "%*c %u", &i) == 1 && (got[at] == 't' || got[at] == 'u') &&
                          (size_t)ring_record(rec, sizeof rec, got[at], i) == n && memcmp(rec, got + at, n) == 0,
                      "a line of the new file is not a whole record: %.*s", (int)(n < 60 ? n : 60), got + at);
            unsigned *next = got[at] == 't' ? &next_t : &next_u;
            cr_assert_eq(i, *next, "record %c %u where %u was due", got[at], i, *next);
            (*next)++;
        }
        at += n;
    }
    cr_assert_eq(afters, 1);
    cr_assert_eq(next_t, w->n, "the second ring's records end at %u of %u (from %u)", next_t, w->n, first_t);
    cr_assert_eq(next_u, u->n);
    free(got);
}

/* The flush whose reader goes away writes three rings, and stops in the middle of a record of the second; nothing of
 * the third went out. The first ring gets a record since. die 0: the flush fails in this process, and the rest of
 * the record cut short is what the next flush must begin with; it began with the first ring, and the record was cut
 * in two by the one that ring got since, its first part glued to it. What the two readers get, one after the other,
 * is every record once, each whole. die 1: the flusher is a forked child killed after the drop (WRITE_FAILED): the
 * same stream as 0 (the drop was done, and the second ring is still written first). die 2 and 3: as 0, with between the
 * first ring's new record and the next reader a flush that sends nothing (2: no reader, -EPIPE) or a flusher killed
 * once it planned every ring (3: RING_TARGET), which leave every ring that holds a record short of that plan: the
 * second ring must still be written first. die 4: as 0, then a flusher killed before its write (WRITE_BEGIN), which
 * sent nothing: all it was to write counts as written, as in 1, and the record this process writes after it gets a line
 * of its own, not glued to the fragment that the failed flush left in the FIFO. die 8: as 2, the flusher of the flush
 * that sends nothing a forked child killed once that flush failed (WRITE_FAILED): the same stream as 0. */
static void three_rings_one_cut(int die)
{
    struct short_reader r;
    forklog *log = buffered_fifo_log(&r);
    char rec[128], *stream = malloc((size_t)1 << 20), *tail = malloc(4096);
    cr_assert(stream && tail);
    size_t slen = 0, tlen = 0;
    for (unsigned i = 0; i < 100; i++) { /* this thread's ring, the first one */
        int n = ring_record(rec, sizeof rec, 'm', i);
        cr_assert_eq(forklog_write(log, rec, (size_t)n), 0);
        memcpy(stream + slen, rec, (size_t)n);
        slen += (size_t)n;
    }
    struct ring_writer w = {.log = log, .tag = 't', .n = 3000}, u = {.log = log, .tag = 'u', .n = 10};
    ring_writer_start(&w, stream, &slen);
    /* The tail of the stream: the first ring's record written after the failed flush, then the third ring's. */
    static const char after[] = "m after the failed flush\n";
    memcpy(tail, after, sizeof after - 1);
    tlen = sizeof after - 1;
    ring_writer_start(&u, tail, &tlen);
    as_the_reader_leaves(log, &r, die == 1, NULL, 0);
    cr_assert_eq(r.got, r.want);
    if (die >= 5 && die <= 7) {
        moved_on_after_a_cut(log, stream, slen, r.got, die - 5, &w, &u);
        free(r.buf);
        free(stream);
        free(tail);
        return;
    }
    cr_assert_eq(forklog_write(log, after, sizeof after - 1), 0);
    if (die == 2)
        cr_assert_eq(forklog_flush(log), -EPIPE, "a flush with no reader");
    if (die == 8)
        cr_assert_eq(th_wait_for(killed_at(log, FL__CP_WRITE_FAILED, -1, NULL, 0), HANG_S), 128 + SIGKILL,
                     "the flusher of the flush with no reader was not killed at WRITE_FAILED");
    if (die == 3)
        cr_assert_eq(th_wait_for(killed_at(log, FL__CP_RING_TARGET, -1, NULL, 0), HANG_S), 128 + SIGKILL,
                     "the flusher was not killed at RING_TARGET");
    if (die == 4) {
        cr_assert_eq(th_wait_for(killed_at(log, FL__CP_WRITE_BEGIN, -1, NULL, 0), HANG_S), 128 + SIGKILL,
                     "the flusher was not killed at WRITE_BEGIN");
        static const char death[] = "m after the death\n";
        memcpy(tail, death, sizeof death - 1); /* all that was planned before is gone: the tail is this record */
        tlen = sizeof death - 1;
        cr_assert_eq(forklog_write(log, death, tlen), 0);
    }
    struct short_reader next = flush_and_close_for_the_next_reader(log);
    ring_writer_end(&w);
    ring_writer_end(&u);
    size_t len;
    char *got = both_readers(&r, &next, &len);
    if (die != 4) {
        cr_assert_eq(len, slen + tlen, "the readers got %zu + %zu bytes of a stream of %zu", r.got, next.got,
                     slen + tlen);
        memcpy(stream + slen, tail, tlen);
        size_t at = 0;
        while (at < len && got[at] == stream[at])
            at++;
        cr_assert_eq(at, len, "the readers' stream differs from the records at byte %zu: %.60s", at, got + at);
    } else {
        cr_assert_gt(len, r.want + tlen, "the next reader got %zu bytes", next.got);
        cr_assert(memcmp(got + len - tlen, tail, tlen) == 0,
                  "the stream does not end with the first ring's new record and the third ring's records: %.60s",
                  got + (len > tlen + 30 ? len - tlen - 30 : 0));
        size_t pre = len - tlen - 1; /* the stream's bytes, before the newline that ends the fragment */
        cr_assert_eq(got[pre], '\n', "the record after the death is glued to the fragment: ...%.50s", got + pre - 40);
        cr_assert_lt(pre, slen);
        cr_assert(memcmp(got, stream, pre) == 0, "the readers did not get the records once each, in order");
    }
    free(got);
    free(next.buf);
    free(r.buf);
    free(stream);
    free(tail);
}

Test(targets, a_record_cut_by_a_failed_flush_of_rings_is_not_split_by_another_ring)
{
    three_rings_one_cut(0);
}

Test(targets, a_flusher_of_rings_killed_after_a_failed_flush_keeps_the_rings_nothing_of_went_out)
{
    three_rings_one_cut(1);
}

/* The ring that holds the rest was told by its tail short of its plan, as every ring is that a flush planned and did
 * not write: the first ring, with its new record, was taken for it and written first, that record glued to the
 * fragment and the rest written after it on a line of its own. */
Test(targets, a_record_cut_by_a_failed_flush_of_rings_is_not_split_after_a_flush_that_sent_nothing)
{
    three_rings_one_cut(2);
}

/* The same with the flusher of the flush that sends nothing killed right after it failed (WRITE_FAILED): it was
 * repaired as one killed in its write, and all it planned counted as written, the rest of the record cut short and
 * every ring's records, none of which went out. */
Test(targets, a_record_cut_by_a_failed_flush_of_rings_is_not_lost_after_a_flusher_killed_once_it_sent_nothing)
{
    three_rings_one_cut(8);
}

Test(targets, a_record_cut_by_a_failed_flush_of_rings_is_not_split_after_a_flusher_killed_once_it_planned)
{
    three_rings_one_cut(3);
}

Test(targets, a_flusher_of_rings_killed_before_its_write_after_a_failed_flush_leaves_no_glued_line)
{
    three_rings_one_cut(4);
}

Test(targets, a_record_cut_in_a_fifo_is_not_continued_in_the_file_the_log_moves_to)
{
    three_rings_one_cut(5);
}

Test(targets, a_mover_killed_once_it_marked_where_the_rest_of_a_cut_record_ends_leaves_whole_records)
{
    three_rings_one_cut(6);
}

Test(targets, a_mover_killed_once_it_dropped_the_rest_of_a_cut_record_leaves_whole_records)
{
    three_rings_one_cut(7);
}

#if defined(__x86_64__)
/* Whether the traced child `pid`, stopped, is at the return of a write(2) or writev(2) that failed with EPIPE. */
static int at_epipe_return(pid_t pid)
{
    struct user_regs_struct regs;
    cr_assert_eq(ptrace(PTRACE_GETREGS, pid, NULL, &regs), 0);
    return (regs.orig_rax == SYS_write || regs.orig_rax == SYS_writev) && (long long)regs.rax == -EPIPE;
}

/* A child that will run forklog_flush(log) under this process's ptrace (its copy of the reader's descriptor closed,
 * SIGPIPE ignored), stopped before it begins, with PTRACE_O_TRACESYSGOOD and PTRACE_O_EXITKILL set. Skips the test
 * where ptrace is not allowed. */
static pid_t traced_flusher(forklog *log, int reader_fd)
{
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        rc_child();
        close(reader_fd);
        signal(SIGPIPE, SIG_IGN);
        if (ptrace(PTRACE_TRACEME, 0, NULL, NULL) < 0)
            _exit(20);
        raise(SIGSTOP);
        (void)forklog_flush(log);
        _exit(1);
    }
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 20)
        cr_skip_test("ptrace is not allowed here");
    cr_assert(WIFSTOPPED(st) && WSTOPSIG(st) == SIGSTOP);
    cr_assert_eq(ptrace(PTRACE_SETOPTIONS, pid, NULL, (void *)(long)(PTRACE_O_TRACESYSGOOD | PTRACE_O_EXITKILL)), 0);
    return pid;
}
#endif

/* The flush whose reader goes away writes three rings, and stops in the middle of a record of the second; nothing of
 * the third went out. Its flusher drops what went out ring by ring (fl__drop_sent), state still FLUSHING, and is
 * killed in the middle of that drop, where no crash point stands: a forked child traced with ptrace, stepped one
 * instruction at a time from the return of its write that failed with EPIPE, and killed (when 0) once the second
 * ring's plan was cut down to the rest of its record cut short, or (1) once the second ring's tail moved. The third
 * ring's plan, which the drop had not reached yet, still reached to its head: the repair of a flusher killed in the
 * drop counts the plan as written, and the third ring's records, acknowledged and never sent, were lost. What the two
 * readers get is every record once, each whole, but the one cut short, whose first part may stand on a line of its
 * own. */
static void killed_in_the_drop(int when)
{
#if !defined(__x86_64__)
    (void)when;
    cr_skip_test("the ptrace staging reads x86-64 registers");
#else
    struct short_reader r;
    forklog *log = buffered_fifo_log(&r);
    char rec[128], *stream = malloc((size_t)1 << 20);
    cr_assert_not_null(stream);
    size_t slen = 0;
    for (unsigned i = 0; i < 100; i++) { /* this thread's ring, the first one */
        int n = ring_record(rec, sizeof rec, 'm', i);
        cr_assert_eq(forklog_write(log, rec, (size_t)n), 0);
    }
    struct ring_writer w = {.log = log, .tag = 't', .n = 3000}, u = {.log = log, .tag = 'u', .n = 10};
    ring_writer_start(&w, stream, &slen);
    ring_writer_start(&u, stream, &slen);
    struct fl__seg *s = log->seg;
    uint64_t tail0[FL__RINGS], plan0[FL__RINGS];
    for (unsigned k = 0; k < FL__RINGS; k++)
        tail0[k] = atomic_load(&s->rings[k].tail);
    const pid_t pid = traced_flusher(log, r.fd);
    int st;
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, read_then_leave, &r), 0);
    int req = PTRACE_SYSCALL, sig = 0, failed = 0, there = 0;
    for (long steps = 0; !there && steps < 5000000; steps++) {
        cr_assert_eq(ptrace(req, pid, NULL, (void *)(long)sig), 0);
        cr_assert_eq(waitpid(pid, &st, 0), pid);
        cr_assert(WIFSTOPPED(st), "the flusher ended before its drop (status %#x)", st);
        sig = WSTOPSIG(st) == (SIGTRAP | 0x80) || WSTOPSIG(st) == SIGTRAP ? 0 : WSTOPSIG(st);
        if (!failed) {
            if (WSTOPSIG(st) == (SIGTRAP | 0x80) && at_epipe_return(pid)) {
                /* The write failed, nothing of the drop done: its plan, from here on one instruction at a time. */
                failed = 1;
                req = PTRACE_SINGLESTEP;
                for (unsigned k = 0; k < FL__RINGS; k++)
                    plan0[k] = *(volatile uint64_t *)&s->rings[k].planned;
                cr_assert_neq(plan0[2], tail0[2], "the third ring is not in the plan");
            }
            continue;
        }
        unsigned tails = 0, plans = 0;
        for (unsigned k = 0; k < FL__RINGS; k++) {
            tails += atomic_load(&s->rings[k].tail) != tail0[k];
            plans += *(volatile uint64_t *)&s->rings[k].planned != plan0[k];
        }
        there = when == 0 ? plans > 0 : tails >= 2;
    }
    cr_assert(there, "the flusher did not reach its drop");
    if (when == 0) /* the first plan cut down: the drop has not reached the third ring */
        cr_assert_eq(s->rings[2].planned, plan0[2], "the drop had already reached the third ring");
    kill(pid, SIGKILL);
    cr_assert_eq(th_wait_for(pid, HANG_S), 128 + SIGKILL);
    pthread_join(t, NULL);
    cr_assert_eq(r.got, r.want);
    static const char after[] = "m after the death\n";
    cr_assert_eq(forklog_write(log, after, sizeof after - 1), 0);
    struct short_reader next = flush_and_close_for_the_next_reader(log);
    ring_writer_end(&w);
    ring_writer_end(&u);
    size_t len;
    char *got = both_readers(&r, &next, &len);
    static unsigned seen_m[100], seen_t[3000], seen_u[10];
    memset(seen_m, 0, sizeof seen_m);
    memset(seen_t, 0, sizeof seen_t);
    memset(seen_u, 0, sizeof seen_u);
    unsigned afters = 0, fragments = 0;
    for (size_t at = 0; at < len;) {
        const char *line = got + at, *nl = memchr(line, '\n', len - at);
        cr_assert_not_null(nl, "the stream ends in the middle of a line");
        size_t n = (size_t)(nl - line) + 1;
        unsigned i = 0;
        char c = line[0];
        const unsigned count = c == 'm' ? 100 : c == 't' ? 3000 : c == 'u' ? 10 : 0;
        if (n == sizeof after - 1 && memcmp(line, after, n) == 0) {
            afters++;
        } else if (n < sizeof rec && sscanf(line, "%*c %u", &i) == 1 && i < count &&
                   (size_t)ring_record(rec, sizeof rec, c, i) == n && memcmp(rec, line, n) == 0) {
            (c == 'm' ? seen_m : c == 't' ? seen_t : seen_u)[i]++;
        } else {
            /* The first part of the record cut short, on a line of its own. */
            cr_assert(c == 't' && n < 79, "a line that is not a whole record: %.*s", (int)(n < 60 ? n : 60), line);
            fragments++;
        }
        at += n;
    }
    cr_assert_leq(fragments, 1);
    cr_assert_eq(afters, 1);
    for (unsigned i = 0; i < 100; i++)
        cr_assert_eq(seen_m[i], 1, "record m %u came through %u times", i, seen_m[i]);
    unsigned missing_t = 0;
    for (unsigned i = 0; i < 3000; i++) {
        cr_assert_leq(seen_t[i], 1, "record t %u came through %u times", i, seen_t[i]);
        missing_t += !seen_t[i];
    }
    cr_assert_leq(missing_t, fragments, "%u records of the second ring are missing", missing_t);
    for (unsigned i = 0; i < 10; i++)
        cr_assert_eq(seen_u[i], 1, "record u %u (the third ring: nothing of it went out) came through %u times", i,
                     seen_u[i]);
    free(got);
    free(next.buf);
    free(r.buf);
    free(stream);
#endif
}

Test(targets, a_flusher_killed_once_its_drop_cut_a_rings_plan_keeps_the_rings_nothing_of_went_out)
{
    killed_in_the_drop(0);
}

Test(targets, a_flusher_killed_once_its_drop_moved_a_second_tail_keeps_the_rings_nothing_of_went_out)
{
    killed_in_the_drop(1);
}

/* A rotating buffered log on a FIFO (its records in the one shared buffer) whose reader goes away in the middle of a
 * flush: its flusher drops what went out from the front of the buffer (fl__drop_sent), state still FLUSHING, and is
 * killed in the middle of that drop, where no crash point stands: a forked child traced with ptrace, stepped one
 * instruction at a time from the return of its write that failed with EPIPE, and killed (when 0) once the drop named
 * the rest of the record cut short (flush_rest), before the buffer's front moved, or (1) once the buffer's count was
 * cut down to what did not go out. The repair of a flusher killed in its write counts the whole buffer as written:
 * the records after the one cut short, acknowledged and never sent, were lost. What the two readers get is every
 * record once, in order, each whole, but the one cut short, whose first part may stand on a line of its own. */
static void killed_in_the_drop_of_the_shared_buffer(int when)
{
#if !defined(__x86_64__)
    (void)when;
    cr_skip_test("the ptrace staging reads x86-64 registers");
#else
    signal(SIGPIPE, SIG_IGN);
    cr_assert_eq(mkfifo(logpath, 0600), 0);
    struct short_reader r = {.fd = open_reader(logpath), .want = 10000};
    cr_assert_not_null(r.buf = malloc(r.want));
    char *stream;
    size_t slen;
    forklog *log = buffered_3000(1, &stream, &slen);
    struct fl__seg *s = log->seg;
    cr_assert_eq(s->buf_used, slen, "the records are not in the shared buffer");
    const pid_t pid = traced_flusher(log, r.fd);
    int st;
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, read_then_leave, &r), 0);
    int req = PTRACE_SYSCALL, sig = 0, failed = 0, there = 0;
    for (long steps = 0; !there && steps < 5000000; steps++) {
        cr_assert_eq(ptrace(req, pid, NULL, (void *)(long)sig), 0);
        cr_assert_eq(waitpid(pid, &st, 0), pid);
        cr_assert(WIFSTOPPED(st), "the flusher ended before its drop (status %#x)", st);
        sig = WSTOPSIG(st) == (SIGTRAP | 0x80) || WSTOPSIG(st) == SIGTRAP ? 0 : WSTOPSIG(st);
        if (!failed) {
            if (WSTOPSIG(st) == (SIGTRAP | 0x80) && at_epipe_return(pid)) {
                failed = 1; /* the write failed, nothing of the drop done: from here on one instruction at a time */
                req = PTRACE_SINGLESTEP;
                cr_assert_eq(*(volatile uint32_t *)&s->flush_rest, 0);
            }
            continue;
        }
        there = when == 0 ? *(volatile uint32_t *)&s->flush_rest != 0 : *(volatile size_t *)&s->buf_used != slen;
    }
    cr_assert(there, "the flusher did not reach its drop");
    cr_assert_eq(*(volatile uint32_t *)&s->state, FL__FLUSHING, "the flusher was past its drop");
    kill(pid, SIGKILL);
    cr_assert_eq(th_wait_for(pid, HANG_S), 128 + SIGKILL);
    pthread_join(t, NULL);
    cr_assert_eq(r.got, r.want);
    static const char after[] = "the record after the death\n";
    struct short_reader next = {.fd = open_reader(logpath), .want = (size_t)2 << 20};
    cr_assert_not_null(next.buf = malloc(next.want));
    cr_assert_eq(pthread_create(&t, NULL, read_to_the_end, &next), 0);
    cr_assert_eq(forklog_write(log, after, sizeof after - 1), 0);
    cr_assert_eq(forklog_flush(log), 0);
    cr_assert_eq(forklog_close(log), 0);
    pthread_join(t, NULL);
    close(next.fd);
    size_t len;
    char *got = both_readers(&r, &next, &len);
    static unsigned seen[3000];
    memset(seen, 0, sizeof seen);
    unsigned afters = 0, fragments = 0, missing = 0;
    int last = -1;
    for (size_t at = 0; at < len;) {
        const char *line = got + at, *nl = memchr(line, '\n', len - at);
        cr_assert_not_null(nl, "the stream ends in the middle of a line");
        size_t n = (size_t)(nl - line) + 1;
        int i = -1;
        char rec[128];
        if (n == sizeof after - 1 && memcmp(line, after, n) == 0) {
            afters++;
        } else if (sscanf(line, "record %d", &i) == 1 && i >= 0 && i < 3000 &&
                   (size_t)snprintf(rec, sizeof rec, "record %04d %070d\n", i, i) == n && memcmp(rec, line, n) == 0) {
            cr_assert_gt(i, last, "record %d after record %d", i, last);
            seen[i]++;
            last = i;
        } else {
            /* The first part of the record cut short, on a line of its own. */
            cr_assert_eq(fragments, 0, "a line that is not a whole record: %.*s", (int)(n < 60 ? n : 60), line);
            fragments++;
        }
        at += n;
    }
    cr_assert_eq(afters, 1);
    for (unsigned i = 0; i < 3000; i++) {
        cr_assert_leq(seen[i], 1, "record %u came through %u times", i, seen[i]);
        missing += !seen[i];
    }
    cr_assert_leq(missing, fragments, "%u records are missing (%u came through, the stream %zu bytes of %zu)", missing,
                  3000 - missing, len, slen);
    free(got);
    free(next.buf);
    free(r.buf);
    free(stream);
#endif
}

Test(targets, a_flusher_of_the_shared_buffer_killed_in_its_drop_before_the_front_moved_loses_no_record)
{
    killed_in_the_drop_of_the_shared_buffer(0);
}

Test(targets, a_flusher_of_the_shared_buffer_killed_once_its_drop_cut_the_count_loses_no_record)
{
    killed_in_the_drop_of_the_shared_buffer(1);
}

/* A thread that appends n records of two lines each, "t NNNN ...\n" then "t NNNN second line\n", to its own ring. */
static int two_line_record(char *rec, size_t cap, unsigned i)
{
    return snprintf(rec, cap, "t %04u %090u\nt %04u second line\n", i, i, i);
}

static void *two_line_writer_run(void *arg)
{
    struct ring_writer *w = arg;
    char rec[160];
    for (unsigned i = 0; i < w->n; i++)
        if (forklog_write(w->log, rec, (size_t)two_line_record(rec, sizeof rec, i)) != 0)
            break;
    pthread_barrier_wait(&w->done);
    pthread_barrier_wait(&w->end);
    return NULL;
}

/* A flush of two rings to a FIFO whose reader goes away in the middle of it cuts a record of two lines
 * (forklog_write() takes a newline inside a record) of the second ring short, and its flusher is a forked child
 * killed right after the drop of what went out (WRITE_FAILED); the first ring gets a record since. The dead flusher's
 * plan of the second ring ended at the first newline after the cut: the record's second line was left in the ring,
 * the mark that it goes first went with the repair, and the next flush wrote the first ring's new record before it,
 * between the two lines of one record. What the readers get is every record, its lines together. */
Test(targets, a_record_of_two_lines_cut_by_a_flusher_killed_after_a_failed_flush_keeps_its_lines_together)
{
    struct short_reader r;
    forklog *log = buffered_fifo_log(&r);
    char rec[160];
    for (unsigned i = 0; i < 100; i++) { /* this thread's ring, the first one */
        int n = ring_record(rec, sizeof rec, 'm', i);
        cr_assert_eq(forklog_write(log, rec, (size_t)n), 0);
    }
    struct ring_writer w = {.log = log, .n = 3000};
    pthread_barrier_init(&w.done, NULL, 2);
    pthread_barrier_init(&w.end, NULL, 2);
    cr_assert_eq(pthread_create(&w.t, NULL, two_line_writer_run, &w), 0);
    pthread_barrier_wait(&w.done);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, read_then_leave, &r), 0);
    pid_t pid = killed_at(log, FL__CP_WRITE_FAILED, r.fd, NULL, 0);
    pthread_join(t, NULL);
    cr_assert_eq(th_wait_for(pid, HANG_S), 128 + SIGKILL, "the flusher was not killed at WRITE_FAILED");
    static const char after[] = "m after the failed flush\n";
    cr_assert_eq(forklog_write(log, after, sizeof after - 1), 0);
    struct short_reader next = flush_and_close_for_the_next_reader(log);
    ring_writer_end(&w);
    size_t len;
    char *got = both_readers(&r, &next, &len);
    /* Every second line of a record follows the line its record began with (whole, or the part of it that went out
     * before the reader left), and the second ring's records come once each, in order. */
    unsigned seconds = 0;
    const char *prev = NULL;
    for (size_t at = 0; at < len;) {
        const char *line = got + at, *nl = memchr(line, '\n', len - at);
        cr_assert_not_null(nl, "the stream ends in the middle of a line");
        unsigned i;
        if (sscanf(line, "t %u second lin%c", &i, rec) == 2) {
            char head[16];
            snprintf(head, sizeof head, "t %04u ", i);
            cr_assert(prev && strncmp(prev, head, strlen(head)) == 0 && strncmp(prev, line, strlen(head) + 1) != 0,
                      "the second line of record t %u follows another line: %.40s", i, prev ? prev : "(none)");
            cr_assert_eq(i, seconds, "record t %u where %u was due", i, seconds);
            seconds++;
        }
        prev = line;
        at = (size_t)(nl + 1 - got);
    }
    cr_assert_eq(seconds, w.n, "the second ring's records end at %u of %u", seconds, w.n);
    free(got);
    free(next.buf);
    free(r.buf);
}

/* A line of 16,000 bytes: "w NNNN ", 'x's, its newline. */
static void big_line(char *rec, unsigned i)
{
    memset(rec, 'x', 16000);
    memcpy(rec, "w ", 2);
    char id[8];
    snprintf(id, sizeof id, "%04u ", i);
    memcpy(rec + 2, id, 5);
    rec[15999] = '\n';
}

/* A ring of 128 KiB, written and flushed once up to 64,000 bytes, then holding seven records of 16,000 bytes, whose
 * fifth wraps around the ring's end; the flush of those, to a FIFO whose reader leaves after 10,000 bytes, stops
 * after about as much as the pipe takes beyond that: in the record that wraps. move 0: a next reader, the flusher
 * killed at WRITE_FAILED; 1: the log moves to a regular file. Either way every record is whole and once: in the
 * stream, the rest of the one cut short first; in the new file, those after it. */
static void cut_across_the_wrap(int move)
{
    signal(SIGPIPE, SIG_IGN);
    cr_assert_eq(mkfifo(logpath, 0600), 0);
    struct short_reader a = {.fd = open_reader(logpath), .want = 4 * 16000};
    cr_assert_not_null(a.buf = malloc(a.want));
    struct forklog_options o = {.flags = FORKLOG_BUFFERED, .flush_ms = 600000, .buffer_size = (size_t)128 << 10};
    forklog *log = open_log(logpath, &o);
    char *stream = malloc(11 * 16000);
    cr_assert_not_null(stream);
    for (unsigned i = 0; i < 4; i++) {
        big_line(stream + i * 16000, i);
        cr_assert_eq(forklog_write(log, stream + i * 16000, 16000), 0);
    }
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, read_then_leave, &a), 0);
    cr_assert_eq(forklog_flush(log), 0);
    pthread_join(t, NULL);
    cr_assert_eq(a.got, a.want);
    for (unsigned i = 4; i < 11; i++) {
        big_line(stream + i * 16000, i);
        cr_assert_eq(forklog_write(log, stream + i * 16000, 16000), 0);
    }
    struct short_reader r = {.fd = open_reader(logpath), .want = 10000};
    cr_assert_not_null(r.buf = malloc(r.want));
    as_the_reader_leaves(log, &r, !move, NULL, 0);
    const char *s0 = stream + 4 * 16000; /* what the failed flush was to write */
    const size_t slen = 7 * 16000;
    size_t sent = r.got;
    cr_assert(memcmp(r.buf, s0, r.got) == 0);
    if (!move) {
        struct short_reader next = {.fd = open_reader(logpath), .want = slen};
        cr_assert_not_null(next.buf = malloc(next.want));
        cr_assert_eq(pthread_create(&t, NULL, read_to_the_end, &next), 0);
        cr_assert_eq(forklog_flush(log), 0);
        cr_assert_eq(forklog_close(log), 0);
        pthread_join(t, NULL);
        close(next.fd);
        cr_assert_eq(sent + next.got, slen, "the readers got %zu + %zu bytes of %zu", sent, next.got, slen);
        cr_assert(memcmp(next.buf, s0 + sent, next.got) == 0, "the next reader's bytes are not the rest of the stream");
        free(next.buf);
    } else {
        sent = fifo_rest(s0, sent);
        cr_assert(sent % 16000 != 0 && sent / 16000 == 4, "the flush was cut at %zu, not in the record that wraps",
                  sent);
        size_t len;
        char *got = moved_to_a_file(log, &len);
        cr_assert_eq(len, 2 * 16000, "the new file holds %zu bytes", len);
        cr_assert(memcmp(got, s0 + 5 * 16000, len) == 0, "the new file does not hold the records after the cut one");
        free(got);
    }
    free(r.buf);
    free(a.buf);
    free(stream);
}

Test(targets, a_record_cut_where_its_ring_wraps_is_finished_once_after_a_flusher_killed_after_the_cut)
{
    cut_across_the_wrap(0);
}

Test(targets, a_record_cut_where_its_ring_wraps_is_dropped_to_its_end_when_the_log_moves)
{
    cut_across_the_wrap(1);
}

/* Records of 128 bytes: 512 of them fill an empty pipe (65,536 bytes) to the byte. */
static int record_128(char *rec, size_t cap, unsigned i)
{
    return snprintf(rec, cap, "r %04u %0120u\n", i, i);
}

/* A failed flush to a FIFO that stopped at the end of a record: 1,000 buffered records of 128 bytes, the pipe takes
 * the first 512 of them whole, and its reader goes away without reading (a log shipper that restarts). Nothing was
 * cut short; the log then moves to a regular file (the FIFO removed, forklog_reopen() creates a file at path). The
 * 488 records that did not go out, each acknowledged, must be in the new file, each once, in order: none taken for
 * the rest of a record cut short and dropped. */
Test(targets, a_flush_that_stopped_at_the_end_of_a_record_loses_no_record_when_the_log_moves)
{
    signal(SIGPIPE, SIG_IGN);
    cr_assert_eq(mkfifo(logpath, 0600), 0);
    int rd = open_reader(logpath);
    struct forklog_options o = {.flags = FORKLOG_BUFFERED, .flush_ms = 600000, .buffer_size = (size_t)1 << 20};
    forklog *log = open_log(logpath, &o);
    char rec[256];
    const unsigned n = 1000;
    for (unsigned i = 0; i < n; i++)
        cr_assert_eq(forklog_write(log, rec, (size_t)record_128(rec, sizeof rec, i)), 0);
    struct flusher f = {.log = log};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, flush_run, &f), 0);
    int full = 0;
    for (int i = 0; i < 10000 && full < 65536; i++) {
        cr_assert_eq(ioctl(rd, FIONREAD, &full), 0);
        usleep(1000);
    }
    cr_assert_eq(full, 65536, "the pipe did not fill up: %d bytes", full);
    usleep(20000); /* the flusher waits in write(2) for room */
    close(rd);
    pthread_join(t, NULL);
    cr_assert_eq(f.rc, -EPIPE, "the flush whose reader went away: %d", f.rc);
    size_t len;
    char *got = moved_to_a_file(log, &len);
    unsigned next = 512;
    for (size_t at = 0; at < len;) {
        const char *nl = memchr(got + at, '\n', len - at);
        cr_assert_not_null(nl, "the file ends in the middle of a line: %.60s", got + at);
        size_t k = (size_t)(nl - (got + at)) + 1;
        unsigned i = 0;
        cr_assert(sscanf(got + at, "r %u", &i) == 1 && (size_t)record_128(rec, sizeof rec, i) == k &&
                      memcmp(rec, got + at, k) == 0,
                  "a line of the new file is not a whole record: %.*s", (int)(k < 60 ? k : 60), got + at);
        cr_assert_eq(i, next, "record %u where %u was due", i, next);
        next++;
        at += k;
    }
    cr_assert_eq(next, n, "the new file's records end at %u of %u", next, n);
    free(got);
}

/* A direct writer's record of 200,000 bytes into a FIFO nobody reads yet, and the writer killed: by SIGKILL while
 * it waits in write(2) on the full pipe (how 0), or right after a write(2) that sent all of it (how 1: WRITE_DONE,
 * before the size moved); how 2: as 0, the same bytes as 2,000 buffered records of 100 bytes, their flusher killed.
 * Then a reader comes, and this process writes "after". 0 and 2: the reader gets the 65,536 bytes the pipe took, a
 * newline, and "after" on a line of its own (before, "after" was glued to the fragment, and the line made of both was
 * neither record); 1: the whole record, and "after" after one empty line at most. */
static void big_record_writer_killed(int how)
{
    signal(SIGPIPE, SIG_IGN);
    cr_assert_eq(mkfifo(logpath, 0600), 0);
    const size_t big = 200000;
    struct short_reader r = {.fd = open_reader(logpath), .want = big + 64};
    cr_assert_not_null(r.buf = malloc(r.want));
    struct forklog_options o = {.flags = how == 2 ? FORKLOG_BUFFERED : 0, .flush_ms = 600000};
    forklog *log = open_log(logpath, &o);
    char *rec = line_of_a(big);
    if (how == 2) /* the same bytes as 2,000 records of 100 bytes, buffered */
        for (size_t i = 0; i < big; i += 100)
            rec[i + 99] = '\n';
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        rc_child();
        close(r.fd);
        if (how == 1)
            fl__crash_arm(FL__CP_WRITE_DONE, 1, FL__CRASH_KILL);
        if (how == 2) {
            for (size_t i = 0; i < big; i += 100)
                if (forklog_write(log, rec + i, 100) != 0)
                    _exit(2);
            (void)forklog_flush(log);
        } else {
            (void)forklog_write(log, rec, big);
        }
        _exit(1);
    }
    pthread_t t;
    if (how == 1) {
        /* The child's write of all of it needs a reader. */
        cr_assert_eq(pthread_create(&t, NULL, read_to_the_end, &r), 0);
        cr_assert_eq(th_wait_for(pid, HANG_S), 128 + SIGKILL, "the writer was not killed at WRITE_DONE");
    } else {
        int full = 0;
        for (int i = 0; i < 10000 && full < 65536; i++) {
            cr_assert_eq(ioctl(r.fd, FIONREAD, &full), 0);
            usleep(1000);
        }
        cr_assert_eq(full, 65536, "the pipe did not fill up: %d bytes", full);
        usleep(20000); /* the writer waits in write(2) for room */
        cr_assert_eq(kill(pid, SIGKILL), 0);
        cr_assert_eq(th_wait(pid), 128 + SIGKILL);
        cr_assert_eq(pthread_create(&t, NULL, read_to_the_end, &r), 0);
    }
    cr_assert_eq(forklog_write(log, "after\n", 6), 0);
    cr_assert_eq(forklog_close(log), 0);
    pthread_join(t, NULL);
    close(r.fd);
    if (how == 1) {
        cr_assert(r.got == big + 6 || r.got == big + 7, "the reader got %zu bytes", r.got);
        cr_assert(memcmp(r.buf, rec, big) == 0, "the record is not whole");
        const char *end = r.got == big + 7 ? "\nafter\n" : "after\n";
        cr_assert(memcmp(r.buf + big, end, r.got - big) == 0, "after the record: %.7s", r.buf + big);
    } else {
        cr_assert_eq(r.got, (size_t)65536 + 7, "the reader got %zu bytes", r.got);
        cr_assert(memcmp(r.buf, rec, 65536) == 0, "the stream is not the first 65,536 bytes of the records");
        cr_assert(memcmp(r.buf + 65536, "\nafter\n", 7) == 0, "the next record is glued to the fragment: ...%.17s",
                  r.buf + 65526);
    }
    free(r.buf);
    free(rec);
}

Test(targets, a_writer_killed_in_the_middle_of_a_big_record_to_a_fifo_leaves_the_next_record_a_line_of_its_own)
{
    big_record_writer_killed(0);
}

Test(targets, a_writer_killed_after_a_big_record_went_whole_to_a_fifo_leaves_at_most_an_empty_line)
{
    big_record_writer_killed(1);
}

Test(targets, a_flusher_killed_in_the_middle_of_its_flush_to_a_fifo_leaves_the_next_record_a_line_of_its_own)
{
    big_record_writer_killed(2);
}

/* A stream socket takes a write in pieces (a unix socket: of half its send buffer), whatever its length: the writer
 * of a record of 4,000 bytes, under PIPE_BUF, killed while it waits for room, leaves the first piece in the stream.
 * forklog_open_fd() of a socketpair with the smallest send buffer, a record of 1,000 bytes first, nobody reading yet;
 * then a reader comes, and this process writes "after": it must begin a line of its own, not be glued to the
 * fragment (the line made of both is neither record). */
Test(targets,
     a_writer_killed_in_the_middle_of_a_small_record_to_a_stream_socket_leaves_the_next_record_a_line_of_its_own)
{
    signal(SIGPIPE, SIG_IGN);
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    int sndbuf = 1; /* the kernel's smallest */
    cr_assert_eq(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf), 0);
    forklog *log = NULL;
    cr_assert_eq(forklog_open_fd(&log, sv[0], NULL), 0);
    const size_t pre = 1000, small = 4000;
    cr_assert_leq(small, (size_t)PIPE_BUF);
    char *first = line_of_a(pre), *rec = line_of_a(small);
    memset(rec, 'B', small - 1);
    cr_assert_eq(forklog_write(log, first, pre), 0);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        rc_child();
        close(sv[1]);
        (void)forklog_write(log, rec, small);
        _exit(1);
    }
    int queued = 0, was = -1;
    for (int i = 0; i < 2000 && (queued <= (int)pre || queued != was); i++) {
        was = queued;
        usleep(10000);
        cr_assert_eq(ioctl(sv[1], FIONREAD, &queued), 0);
    }
    cr_assert(queued > (int)pre && queued < (int)(pre + small), "the socket took %d bytes", queued);
    cr_assert_eq(kill(pid, SIGKILL), 0);
    cr_assert_eq(th_wait(pid), 128 + SIGKILL);
    struct short_reader r = {.fd = sv[1], .want = pre + small + 64};
    cr_assert_not_null(r.buf = malloc(r.want));
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, read_to_the_end, &r), 0);
    cr_assert_eq(forklog_write(log, "after\n", 6), 0);
    cr_assert_eq(forklog_close(log), 0);
    close(sv[0]);
    pthread_join(t, NULL);
    close(sv[1]);
    cr_assert_eq(r.got, (size_t)queued + 7, "the reader got %zu bytes", r.got);
    cr_assert(memcmp(r.buf, first, pre) == 0 && memcmp(r.buf + pre, rec, (size_t)queued - pre) == 0,
              "the stream is not the first record and a fragment of the second");
    cr_assert(memcmp(r.buf + queued, "\nafter\n", 7) == 0, "the next record is glued to the fragment: ...%.17s",
              r.buf + queued - 10);
    free(r.buf);
    free(rec);
    free(first);
}

/* A datagram socket (SOCK_DGRAM, SOCK_SEQPACKET) sends each record whole or not at all, at any length: a writer
 * killed in its write leaves no fragment. forklog_open_fd() of a socketpair of each type, a child killed right before
 * its write (WRITE_BEGIN: nothing sent) and one killed right after it (WRITE_DONE: its datagram sent whole), then
 * this process writes "after". The reader must get the second child's record and "after", one datagram each, and
 * nothing else: a repair that took the socket for a stream that may end in the middle of a line put a newline before
 * the next record, which a datagram socket sends as a datagram of its own (an empty message to syslog or the
 * journal). */
Test(targets, a_writer_killed_in_its_write_to_a_datagram_socket_leaves_no_empty_datagram)
{
    const int types[] = {SOCK_DGRAM, SOCK_SEQPACKET};
    for (unsigned k = 0; k < 2; k++) {
        int sv[2];
        cr_assert_eq(socketpair(AF_UNIX, types[k] | SOCK_CLOEXEC, 0, sv), 0);
        forklog *log = NULL;
        cr_assert_eq(forklog_open_fd(&log, sv[0], NULL), 0);
        cr_assert_eq(th_wait_for(killed_at(log, FL__CP_WRITE_BEGIN, -1, "before\n", 7), HANG_S), 128 + SIGKILL,
                     "the writer was not killed at WRITE_BEGIN");
        cr_assert_eq(forklog_write(log, "between\n", 8), 0);
        cr_assert_eq(th_wait_for(killed_at(log, FL__CP_WRITE_DONE, -1, "whole\n", 6), HANG_S), 128 + SIGKILL,
                     "the writer was not killed at WRITE_DONE");
        cr_assert_eq(forklog_write(log, "after\n", 6), 0);
        cr_assert_eq(forklog_close(log), 0);
        close(sv[0]);
        const char *want[] = {"between\n", "whole\n", "after\n"};
        char buf[64];
        for (unsigned i = 0; i < 3; i++) {
            ssize_t n = recv(sv[1], buf, sizeof buf - 1, MSG_DONTWAIT);
            cr_assert_gt(n, 0, "type %d: datagram %u: %s", types[k], i, n < 0 ? strerror(errno) : "none");
            buf[n] = 0;
            cr_assert_str_eq(buf, want[i], "type %d: datagram %u is %zd bytes, \"%.*s\" and a newline, not %s",
                             types[k], i, n, (int)n - 1, buf, want[i]);
        }
        ssize_t n = recv(sv[1], buf, sizeof buf, MSG_DONTWAIT);
        cr_assert(n <= 0, "type %d: a datagram more: %zd bytes", types[k], n);
        close(sv[1]);
    }
}

/* A record whose FIFO reader went away, then the next record. how 0: the writer of the failed record is a forked
 * child killed once it marked the stream as ending mid-line (WRITE_FAILED); 1: the record fails in this process, and
 * the writer of the next one is a child killed right after the newline that ends the fragment (FILE_NEWLINE),
 * before its record; 2: the record fails in this process, and a forklog_reopen() of the same FIFO comes before the
 * next record; 3: as 2, after a whole record that the first reader got. Then this process writes the next record. The
 * next reader must get the fragment on a line of its own (an empty line after it at most, from the newline of a writer
 * killed before its record), then the record. */
static void fragment_then_next_record(int how)
{
    struct short_reader r;
    forklog *log = fifo_log(&r, NULL);
    size_t big = (size_t)200 << 10;
    char *rec = line_of_a(big);
    pthread_t t;
    if (how == 3)
        cr_assert_eq(forklog_write(log, "whole record\n", 13), 0);
    as_the_reader_leaves(log, &r, how == 0, rec, big);
    struct short_reader next = {.fd = open_reader(logpath), .want = big};
    cr_assert_not_null(next.buf = malloc(next.want));
    cr_assert_eq(pthread_create(&t, NULL, read_to_the_end, &next), 0);
    if (how == 1)
        cr_assert_eq(th_wait_for(killed_at(log, FL__CP_FILE_NEWLINE, -1, "victim\n", 7), HANG_S), 128 + SIGKILL,
                     "the next writer was not killed at FILE_NEWLINE");
    if (how >= 2)
        cr_assert_eq(forklog_reopen(log), 0);
    cr_assert_eq(forklog_write(log, "next record\n", 12), 0);
    cr_assert_eq(forklog_close(log), 0);
    pthread_join(t, NULL);
    close(next.fd);
    size_t len = next.got;
    char *nl = memchr(next.buf, '\n', len);
    cr_assert_not_null(nl, "the next reader got no line");
    size_t frag = (size_t)(nl - next.buf);
    cr_assert(frag > 0 && frag < big - 1, "the fragment's line is %zu bytes", frag);
    for (size_t i = 0; i < frag; i++)
        cr_assert_eq(next.buf[i], 'A', "the fragment's line holds something else at byte %zu: %.40s", i, next.buf + i);
    const char *rest = nl + 1;
    size_t left = len - frag - 1;
    if (left > 0 && rest[0] == '\n') {
        rest++; /* the newline of a writer killed before its record */
        left--;
    }
    cr_assert(left == 12 && !memcmp(rest, "next record\n", 12), "after the fragment: %zu bytes, %.40s", left, rest);
    free(next.buf);
    free(r.buf);
    free(rec);
}

Test(targets, a_direct_writer_killed_after_its_record_failed_mid_fifo_leaves_the_next_record_a_line_of_its_own)
{
    fragment_then_next_record(0);
}

Test(targets, a_writer_killed_after_ending_a_fifos_fragment_leaves_the_next_record_a_line_of_its_own)
{
    fragment_then_next_record(1);
}

/* A reopen of the same FIFO makes a new generation, which knew nothing of the fragment the failed record left in
 * the pipe: the next record was glued to it. */
Test(targets, a_reopen_of_the_same_fifo_after_a_fragment_leaves_the_next_record_a_line_of_its_own)
{
    fragment_then_next_record(2);
}

/* The same after a whole record: the segment counted the bytes that went out to the FIFO as its size, which the FIFO
 * found again at path (its size always 0) was shorter than, so the reopen took it for another file, started one more
 * generation, which knew nothing of the fragment, and the next record was glued to it. */
Test(targets, a_reopen_of_the_same_fifo_after_records_and_a_fragment_leaves_the_next_record_a_line_of_its_own)
{
    fragment_then_next_record(3);
}

Test(targets, character_device_is_never_renamed)
{
    /* A private /dev/null (1, 3), so that a failure cannot rename the real one. */
    if (mknod(logpath, S_IFCHR | 0666, makedev(1, 3)) != 0)
        cr_skip_test("mknod: %s (needs CAP_MKNOD)", strerror(errno));
    struct forklog_options o = {.rotate_bytes = 200, .rotate_keep = 2};
    forklog *log = NULL;
    int rc = forklog_open(&log, logpath, &o);
    if (rc == -EACCES)
        cr_skip_test("device nodes cannot be opened here (a nodev mount)");
    cr_assert_eq(rc, 0, "forklog_open: %s", strerror(-rc));
    four_writers(log);
    cr_assert_eq(forklog_close(log), 0);
    struct stat st;
    cr_assert_eq(lstat(logpath, &st), 0);
    cr_assert(S_ISCHR(st.st_mode) && st.st_rdev == makedev(1, 3), "the device node was replaced");
    assert_listing("t.log");
}

Test(targets, pipe_through_proc_self_fd)
{
    int p[2];
    cr_assert_eq(pipe(p), 0);
    struct drain d;
    drain_start(&d, p[0]);
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", p[1]);
    struct forklog_options o = {.rotate_bytes = 300};
    forklog *log = open_log(path, &o);
    four_writers(log);
    cr_assert_eq(forklog_close(log), 0);
    close(p[1]);
    drain_check(&d, 4, 30);
    assert_listing("");
}

Test(targets, unix_socket_is_enxio_and_nothing_is_created)
{
    int sfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(sfd, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    cr_assert_lt(strlen(logpath), sizeof sa.sun_path);
    strcpy(sa.sun_path, logpath);
    cr_assert_eq(bind(sfd, (struct sockaddr *)&sa, sizeof sa), 0);
    char why[256];
    struct forklog_options o = {.rotate_bytes = 100, .owner = NOBODY, .error = why, .error_size = sizeof why};
    forklog *log = (forklog *)1;
    cr_assert_eq(forklog_open(&log, logpath, &o), -ENXIO);
    cr_assert_null(log);
    cr_assert(strstr(why, "is a unix socket: connect a socket to it and use forklog_open_fd()"), "opts->error: %s",
              why);
    close(sfd);
    cr_assert_eq(type_of(logpath), S_IFSOCK);
    assert_listing("t.log");
}

/* ---- privilege drop: owner and group of created files ------------------------------------------------- */

/* renameat(2) as the library calls it, counted: how often a process tries to rotate. */
static unsigned renames_tried;

int renameat(int from_dir, const char *from, int to_dir, const char *to)
{
    static int (*real)(int, const char *, int, const char *);
    if (!real)
        *(void **)&real = dlsym(RTLD_NEXT, "renameat");
    renames_tried++;
    return real(from_dir, from, to_dir, to);
}

static void need_root(void)
{
    if (geteuid() != 0)
        cr_skip_test("needs root: the test gives files away and drops privileges");
}

/* In a child: become NOBODY:NOBODY with no supplementary group, or exit 90. */
static void drop_privileges(void)
{
    if (setgroups(0, NULL) != 0 || setgid(NOBODY) != 0 || setuid(NOBODY) != 0 || geteuid() != NOBODY)
        _exit(90);
}

static void assert_owner(const char *path, uid_t uid, gid_t gid)
{
    struct stat st;
    cr_assert_eq(lstat(path, &st), 0, "%s: %s", path, strerror(errno));
    cr_assert(S_ISREG(st.st_mode), "%s is not a regular file", path);
    cr_assert(st.st_uid == uid && st.st_gid == gid, "%s is owned by %u:%u, not %u:%u", path, (unsigned)st.st_uid,
              (unsigned)st.st_gid, (unsigned)uid, (unsigned)gid);
}

static long long size_of(const char *path)
{
    struct stat st;
    cr_assert_eq(stat(path, &st), 0, "%s: %s", path, strerror(errno));
    return (long long)st.st_size;
}

Test(targets, workers_that_dropped_privileges_lose_no_record)
{
    need_root();
    enum { WORKERS = 4, RECORDS = 300, ROT = 3000 };
    /* A root-owned 0755 directory: the workers may not create, rename or remove anything in it. */
    cr_assert_eq(chmod(dir, 0755), 0);
    struct forklog_options o = {.rotate_bytes = ROT, .rotate_keep = 1000, .owner = NOBODY, .group = NOBODY};
    forklog *log = open_log(logpath, &o);
    assert_owner(logpath, NOBODY, NOBODY);
    pid_t kids[WORKERS];
    for (unsigned w = 0; w < WORKERS; w++) {
        kids[w] = fork();
        cr_assert_neq(kids[w], -1);
        if (kids[w] == 0) {
            rc_child();
            drop_privileges();
            int rc = write_records(log, w + 1, 0, RECORDS, 40 + w * 7);
            _exit(rc ? rc : forklog_close(log) == 0 ? 0 : 2);
        }
    }
    /* The parent writes too: it rotates whenever its record finds the file past rotate_bytes, and now and then
     * asks every process to reopen the file. */
    char buf[RC_HEAD_MAX + 256];
    for (unsigned q = 0; q < RECORDS; q++) {
        if (q % 25 == 0)
            cr_assert_eq(forklog_reopen(log), 0);
        cr_assert_eq(rc_write(log, buf, 'R', 0, q, 0, 50), 0, "parent record %u", q);
        if (q % 8 == 0)
            usleep(200);
    }
    for (unsigned w = 0; w < WORKERS; w++)
        cr_assert_eq(th_wait_for(kids[w], 60), 0, "worker %u failed (exit code: step)", w + 1);
    cr_assert_eq(forklog_close(log), 0);

    /* Every record of every process, exactly once, in files all owned by NOBODY. */
    struct rc_seen seen;
    rc_seen_init(&seen, WORKERS + 1, RECORDS);
    unsigned files = 0, over = 0;
    for (unsigned k = 0;; k++) {
        char *p = rotated(logpath, k);
        if (k > 0 && access(p, F_OK) != 0) {
            free(p);
            break;
        }
        assert_owner(p, NOBODY, NOBODY);
        over += rc_scan(&seen, p, k) > ROT;
        files++;
        free(p);
    }
    for (unsigned id = 0; id <= WORKERS; id++)
        for (unsigned q = 0; q < RECORDS; q++)
            cr_assert_eq(rc_count(&seen, id, q), 1, "record %u/%u is there %u times", id, q, rc_count(&seen, id, q));
    cr_assert_eq(seen.records, (size_t)(WORKERS + 1) * RECORDS);
    cr_assert_gt(files, 2, "the parent never rotated");
    fprintf(stderr, "privilege drop: %u files, %u of them grown past rotate_bytes by workers that may not rotate\n",
            files, over);
    rc_seen_free(&seen);
}

/* A worker that may not rename in the log's directory tries a rotation once, then writes on into the current file
 * without trying again for a second (each try costs it ~8 system calls per record), unless another process rotates
 * or reopens meanwhile: then it tries at its next record. */
Test(targets, a_worker_whose_rotation_is_refused_tries_again_after_a_second_or_a_rotation)
{
    need_root();
    cr_assert_eq(chmod(dir, 0755), 0);
    struct forklog_options o = {.rotate_bytes = 300, .rotate_keep = 5, .owner = NOBODY, .group = NOBODY};
    forklog *log = open_log(logpath, &o);
    int to_parent[2], to_child[2];
    cr_assert_eq(pipe(to_parent), 0);
    cr_assert_eq(pipe(to_child), 0);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        rc_child();
        drop_privileges();
        close(to_parent[0]);
        close(to_child[1]);
        /* 50 records of ~100 B: past rotate_bytes at the 4th; one refused try in all. */
        int rc = write_records(log, 1, 0, 50, 60);
        if (rc)
            _exit(rc);
        if (renames_tried != 1)
            _exit(70 + (int)(renames_tried < 9 ? renames_tried : 9));
        usleep(1100 * 1000);
        if ((rc = write_records(log, 1, 50, 10, 60)) != 0)
            _exit(rc);
        if (renames_tried != 2)
            _exit(80 + (int)(renames_tried < 9 ? renames_tried : 9));
        /* The parent rotates: the next record past rotate_bytes tries again at once. */
        char c = 'r';
        if (write(to_parent[1], &c, 1) != 1 || read(to_child[0], &c, 1) != 1)
            _exit(91);
        if ((rc = write_records(log, 1, 60, 10, 60)) != 0)
            _exit(rc);
        _exit(renames_tried == 3 ? 0 : 100 + (int)(renames_tried < 9 ? renames_tried : 9));
    }
    close(to_parent[1]);
    close(to_child[0]);
    char c;
    cr_assert_eq(read(to_parent[0], &c, 1), 1,
                 "the worker ended early with code %d (10 + a failing record; 70 + its tries after the first records, "
                 "80 + after a second: 1 and 2 expected)",
                 th_wait(pid));
    char buf[RC_HEAD_MAX + 64];
    cr_assert_eq(rc_write(log, buf, 'R', 0, 0, 0, 60), 0);
    assert_listing("t.log t.log.1");
    cr_assert_eq(write(to_child[1], &c, 1), 1);
    int st = th_wait(pid);
    cr_assert_eq(st, 0,
                 "the worker failed with code %d (10 + a failing record; 70 + its tries after the first records, 80 + "
                 "after a second, 100 + after the parent's rotation: 1, 2 and 3 expected)",
                 st);
    cr_assert_eq(forklog_close(log), 0);
    /* Every record once: the worker's first 60 in t.log.1, the parent's and the worker's last 10 in t.log. */
    char *one = rotated(logpath, 1);
    struct rc_seen seen;
    rc_seen_init(&seen, 2, 70);
    rc_scan(&seen, one, 1);
    rc_scan(&seen, logpath, 0);
    for (unsigned q = 0; q < 70; q++)
        cr_assert(rc_count(&seen, 1, q) == 1 && seen.file[1 * 70 + q] == (q < 60 ? 1 : 0), "worker record %u", q);
    cr_assert(rc_count(&seen, 0, 0) == 1 && seen.file[0] == 0);
    cr_assert_eq(seen.records, 71);
    rc_seen_free(&seen);
    free(one);
    close(to_parent[0]);
    close(to_child[1]);
}

Test(targets, a_worker_that_may_not_rotate_writes_into_the_current_file)
{
    need_root();
    cr_assert_eq(chmod(dir, 0755), 0);
    struct forklog_options o = {.rotate_bytes = 300, .rotate_keep = 5, .owner = NOBODY, .group = NOBODY};
    forklog *log = open_log(logpath, &o);
    /* A worker alone takes the file far past rotate_bytes: it may not rename in the directory, so each of its
     * records goes into the current file and returns 0. */
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        rc_child();
        drop_privileges();
        _exit(write_records(log, 1, 0, 12, 60));
    }
    int st = th_wait(pid);
    cr_assert_eq(st, 0, "the worker failed with code %d (10 + its failing record)", st);
    long long grown = size_of(logpath);
    cr_assert_gt(grown, 300, "the file should have grown past rotate_bytes");
    assert_listing("t.log");
    /* The parent's next record rotates: the worker's records are in t.log.1, the parent's in a new t.log that
     * was created by root and given to NOBODY. */
    char buf[RC_HEAD_MAX + 64];
    cr_assert_eq(rc_write(log, buf, 'R', 0, 0, 0, 60), 0);
    assert_listing("t.log t.log.1");
    char *one = rotated(logpath, 1);
    cr_assert_eq(size_of(one), grown);
    assert_owner(one, NOBODY, NOBODY);
    assert_owner(logpath, NOBODY, NOBODY);
    /* A reopen that finds t.log missing creates it, and gives it away too. */
    char *moved = th_path(dir, "moved");
    cr_assert_eq(rename(logpath, moved), 0);
    cr_assert_eq(forklog_reopen(log), 0);
    cr_assert_eq(rc_write(log, buf, 'R', 0, 1, 0, 60), 0);
    assert_owner(logpath, NOBODY, NOBODY);
    /* The worker can open and write the files the parent created. */
    pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        rc_child();
        drop_privileges();
        _exit(write_records(log, 1, 12, 1, 60));
    }
    cr_assert_eq(th_wait(pid), 0);
    cr_assert_eq(forklog_close(log), 0);

    struct rc_seen seen;
    rc_seen_init(&seen, 2, 13);
    rc_scan(&seen, one, 1);
    for (unsigned q = 0; q < 12; q++)
        cr_assert(rc_count(&seen, 1, q) == 1 && seen.file[1 * 13 + q] == 1, "worker record %u", q);
    cr_assert_eq(seen.records, 12);
    rc_scan(&seen, moved, 2);
    cr_assert(rc_count(&seen, 0, 0) == 1 && seen.file[0] == 2);
    rc_scan(&seen, logpath, 0);
    cr_assert(rc_count(&seen, 0, 1) == 1 && seen.file[1] == 0);
    cr_assert(rc_count(&seen, 1, 12) == 1 && seen.file[1 * 13 + 12] == 0);
    cr_assert_eq(seen.records, 15);
    rc_seen_free(&seen);
    free(moved);
    free(one);
}

Test(targets, owner_and_group_each_on_its_own_and_a_failed_fchown_keeps_the_record)
{
    need_root();
    /* Group only: the owner stays the creator's (root). */
    struct forklog_options o = {.group = NOBODY};
    forklog *log = open_log(logpath, &o);
    cr_assert_eq(forklog_close(log), 0);
    assert_owner(logpath, 0, NOBODY);
    /* A file that exists is never changed. */
    struct forklog_options both = {.owner = NOBODY, .group = NOBODY};
    log = open_log(logpath, &both);
    cr_assert_eq(forklog_close(log), 0);
    assert_owner(logpath, 0, NOBODY);
    cr_assert_eq(unlink(logpath), 0);

    /* An unprivileged process may not give its files to another user: forklog_open, the rotation and the record
     * all succeed, and the files stay the process's own. */
    cr_assert_eq(chown(dir, NOBODY, NOBODY), 0);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        rc_child();
        drop_privileges();
        struct forklog_options away = {.owner = 4242, .group = 4242, .rotate_bytes = 200, .rotate_keep = 2};
        forklog *l = NULL;
        if (forklog_open(&l, logpath, &away) != 0)
            _exit(1);
        int rc = write_records(l, 0, 0, 4, 60);
        _exit(rc ? rc : forklog_close(l) == 0 ? 0 : 2);
    }
    cr_assert_eq(th_wait(pid), 0);
    char *one = rotated(logpath, 1);
    assert_owner(logpath, NOBODY, NOBODY);
    assert_owner(one, NOBODY, NOBODY);
    struct rc_seen seen;
    rc_seen_init(&seen, 1, 4);
    rc_scan(&seen, logpath, 0);
    rc_scan(&seen, one, 1);
    for (unsigned q = 0; q < 4; q++)
        cr_assert_eq(rc_count(&seen, 0, q), 1);
    rc_seen_free(&seen);
    free(one);
}

/* ---- rotated names that are not regular files ---------------------------------------------------------- */

/* Plants a file with `content` at dir/name; returns its path. */
static char *plant_file(const char *name, const char *content)
{
    char *p = th_path(dir, name);
    int fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    cr_assert_geq(fd, 0, "%s: %s", p, strerror(errno));
    cr_assert_eq(write(fd, content, strlen(content)), (ssize_t)strlen(content));
    close(fd);
    return p;
}

static void assert_content(const char *path, const char *content)
{
    size_t len;
    char *buf = th_slurp(path, &len);
    cr_assert_not_null(buf, "%s is gone", path);
    cr_assert_str_eq(buf, content, "%s was changed", path);
    free(buf);
}

/* A directory at t.log.k with a file in it. */
static void plant_directory(unsigned k)
{
    char *d = rotated(logpath, k);
    cr_assert_eq(mkdir(d, 0755), 0);
    char *inner = th_path(d, "inside");
    int fd = open(inner, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, "user data\n", 10), 10);
    close(fd);
    free(inner);
    free(d);
}

static void assert_directory_untouched(unsigned k)
{
    char *d = rotated(logpath, k);
    cr_assert_eq(type_of(d), S_IFDIR, "%s is no longer the directory", d);
    char *inner = th_path(d, "inside");
    assert_content(inner, "user data\n");
    free(inner);
    free(d);
}

/* One writer, records 0 .. n-1 of 100 payload bytes (~130 bytes a line) with rotate_bytes 300: a rotation every
 * second record. Every call must return 0. */
static void write_sequence(const struct forklog_options *o, unsigned n)
{
    forklog *log = open_log(logpath, o);
    char buf[RC_HEAD_MAX + 100];
    for (unsigned q = 0; q < n; q++)
        cr_assert_eq(rc_write(log, buf, 'R', 0, q, 0, 100), 0, "record %u", q);
    cr_assert_eq(forklog_close(log), 0);
}

/* Reads t.log, t.log.1 .. t.log.kept (regular files, each must exist) for one writer's records 0 .. n-1: the
 * records present are exactly the newest ones, from `first` on, each once, newer files holding newer records
 * (the documented keep rule deletes the oldest files, nothing else). Returns first. */
static unsigned assert_newest_kept(unsigned kept, unsigned n)
{
    struct rc_seen seen;
    rc_seen_init(&seen, 1, n);
    for (unsigned k = 0; k <= kept; k++) {
        char *p = rotated(logpath, k);
        cr_assert_eq(type_of(p), S_IFREG, "%s", p);
        rc_scan(&seen, p, k);
        free(p);
    }
    unsigned first = 0;
    while (first < n && rc_count(&seen, 0, first) == 0)
        first++;
    for (unsigned q = first; q < n; q++) {
        cr_assert_eq(rc_count(&seen, 0, q), 1, "record %u is there %u times (kept from %u)", q, rc_count(&seen, 0, q),
                     first);
        if (q > first)
            cr_assert_leq(seen.file[q], seen.file[q - 1], "record %u is in an older file than record %u", q, q - 1);
    }
    cr_assert_eq(seen.file[n - 1], 0, "the newest record is not in the current file");
    rc_seen_free(&seen);
    return first;
}

Test(targets, directory_at_path_1_stops_rotation_not_records)
{
    plant_directory(1);
    struct forklog_options o = {.rotate_bytes = 300, .rotate_keep = 1};
    forklog *log = open_log(logpath, &o);
    four_writers(log);
    cr_assert_eq(forklog_close(log), 0);
    /* No rotation could happen: every record is in t.log, which grew past rotate_bytes. */
    struct rc_seen seen;
    rc_seen_init(&seen, 4, 30);
    rc_scan(&seen, logpath, 0);
    for (unsigned id = 0; id < 4; id++)
        for (unsigned q = 0; q < 30; q++)
            cr_assert_eq(rc_count(&seen, id, q), 1, "record %u/%u", id, q);
    rc_seen_free(&seen);
    assert_directory_untouched(1);
    assert_listing("t.log t.log.1");
}

Test(targets, directory_at_path_2_ends_the_chain)
{
    plant_directory(2);
    struct forklog_options o = {.rotate_bytes = 300, .rotate_keep = 3};
    write_sequence(&o, 40);
    /* The chain is t.log.1 alone: it is the oldest kept, and the one replaced at each rotation. */
    assert_directory_untouched(2);
    assert_listing("t.log t.log.1 t.log.2");
    unsigned first = assert_newest_kept(1, 40);
    cr_assert_geq(first, 30, "more was kept than t.log and t.log.1 can hold (from record %u)", first);
}

Test(targets, symlink_at_a_rotated_name_is_left_alone)
{
    char *secret = plant_file("secret", "not the log\n");
    char *three = rotated(logpath, 3);
    cr_assert_eq(symlink(secret, three), 0);
    struct forklog_options o = {.rotate_bytes = 300, .rotate_keep = 5};
    write_sequence(&o, 40);
    /* t.log.1 and t.log.2 rotate; t.log.2 is the oldest kept; the link stays, pointing where it pointed. */
    cr_assert_eq(type_of(three), S_IFLNK, "the symlink was replaced");
    char target[4096];
    ssize_t n = readlink(three, target, sizeof target - 1);
    cr_assert_gt(n, 0);
    target[n] = '\0';
    cr_assert_str_eq(target, secret);
    assert_content(secret, "not the log\n");
    assert_listing("secret t.log t.log.1 t.log.2 t.log.3");
    unsigned first = assert_newest_kept(2, 40);
    cr_assert_geq(first, 30, "more was kept than t.log .. t.log.2 can hold (from record %u)", first);
    free(three);
    free(secret);
}

Test(targets, symlink_at_path_1_means_no_rotation)
{
    char *secret = plant_file("secret", "not the log\n");
    char *one = rotated(logpath, 1);
    cr_assert_eq(symlink(secret, one), 0);
    struct forklog_options o = {.rotate_bytes = 300, .rotate_keep = 2};
    write_sequence(&o, 20);
    cr_assert_eq(type_of(one), S_IFLNK);
    assert_content(secret, "not the log\n");
    assert_listing("secret t.log t.log.1");
    cr_assert_eq(assert_newest_kept(0, 20), 0, "every record is in t.log");
    free(one);
    free(secret);
}

Test(targets, fifo_at_a_rotated_name_is_left_alone)
{
    char *one = rotated(logpath, 1);
    cr_assert_eq(mkfifo(one, 0600), 0);
    struct forklog_options o = {.rotate_bytes = 300, .rotate_keep = 2};
    write_sequence(&o, 20);
    cr_assert_eq(type_of(one), S_IFIFO, "the FIFO was replaced");
    assert_listing("t.log t.log.1");
    cr_assert_eq(assert_newest_kept(0, 20), 0, "every record is in t.log");
    free(one);
}

Test(targets, a_file_put_at_path_by_somebody_else_is_not_renamed)
{
    /* The log's file is moved away by hand and another file put at t.log, with no forklog_reopen(). The next
     * rotation must not rename that file: the log moves to it, as a reopen would, and keeps its content. */
    struct forklog_options o = {.rotate_bytes = 300, .rotate_keep = 3};
    forklog *log = open_log(logpath, &o);
    char buf[RC_HEAD_MAX + 100];
    cr_assert_eq(rc_write(log, buf, 'R', 0, 0, 0, 100), 0);
    cr_assert_eq(rc_write(log, buf, 'R', 0, 1, 0, 100), 0);
    char *away = th_path(dir, "away");
    cr_assert_eq(rename(logpath, away), 0);
    free(plant_file("t.log", "L id=9 seq=0 t=0 n=0 |\n"));
    cr_assert_eq(rc_write(log, buf, 'R', 0, 2, 0, 100), 0); /* 2 x 130 + 130 > 300 */
    cr_assert_eq(forklog_close(log), 0);
    assert_listing("away t.log");
    size_t len;
    char *got = th_slurp(logpath, &len);
    cr_assert_eq(strncmp(got, "L id=9 seq=0 t=0 n=0 |\nR id=0 seq=2 ", 35), 0, "t.log holds: %.60s", got);
    free(got);
    struct rc_seen seen;
    rc_seen_init(&seen, 1, 3);
    rc_scan(&seen, away, 1);
    cr_assert(rc_count(&seen, 0, 0) == 1 && rc_count(&seen, 0, 1) == 1 && seen.records == 2);
    rc_seen_free(&seen);
    free(away);
}
