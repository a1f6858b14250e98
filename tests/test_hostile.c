/* SPDX-License-Identifier: MIT */
/* Hostile conditions (promises 5 to 9): file size limits and a full disk, a flood of signals, fork while
 * another thread is in the middle of a record, descriptor and mapping leaks, permissions and planted symlinks.
 * Children never assert: they report through their exit status (each failing step has its own code). */
#include "records.h"

#include "internal.h"

#include <dirent.h>
#include <dlfcn.h>
#include <malloc.h>
#include <pthread.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <time.h>

static char *dir, *logpath;

static void setup(void)
{
    dir = th_tmpdir();
    logpath = th_path(dir, "hostile.log");
    rc_init();
}

static void teardown(void)
{
    th_rmdir(dir);
    free(logpath);
    free(dir);
}

TestSuite(hostile, .init = setup, .fini = teardown);

/* renameat(2) as the library sees it. The test program's definition takes the place of libc's for the library too
 * (symbol interposition), so a test can plant a symlink at path in the instant between fl__rotate's
 * rename of path to path.1 (relative to path's directory) and its creation of the new path: the race an attacker
 * would have to win. Otherwise it is plain renameat. */
static volatile int plant_after_rename; /* 1: a symlink to plant_target; 2: a FIFO */
static char plant_target[4096];
static volatile int planted;

int renameat(int fromdir, const char *from, int todir, const char *to)
{
    static int (*real)(int, const char *, int, const char *);
    if (!real)
        *(void **)&real = dlsym(RTLD_NEXT, "renameat");
    int rc = real(fromdir, from, todir, to);
    if (rc == 0 && plant_after_rename && logpath &&
        strcmp(from, fromdir == AT_FDCWD ? logpath : strrchr(logpath, '/') + 1) == 0) {
        int fifo = plant_after_rename == 2;
        plant_after_rename = 0;
        planted = (fifo ? mkfifo(logpath, 0644) : symlink(plant_target, logpath)) == 0 ? 1 : -1;
    }
    return rc;
}

/* syscall(2) as the library sees it (interposed like rename above). When refuse_renameat2 is set, renameat2 fails
 * with that errno, as on a kernel before Linux 3.15 (ENOSYS) or a file system without RENAME_NOREPLACE (EINVAL): the
 * library then puts a file back with link(2) and unlink(2). Every other system call goes through. */
static volatile int refuse_renameat2;

long syscall(long n, ...)
{
    va_list ap;
    va_start(ap, n);
    long a[6];
    for (int i = 0; i < 6; i++)
        a[i] = va_arg(ap, long);
    va_end(ap);
    if (n == SYS_renameat2 && refuse_renameat2) {
        errno = refuse_renameat2;
        return -1;
    }
    static long (*real)(long, ...);
    if (!real)
        *(void **)&real = dlsym(RTLD_NEXT, "syscall");
    return real(n, a[0], a[1], a[2], a[3], a[4], a[5]);
}

/* unlinkat(2) as the library sees it (interposed like rename above): when kill_in_unlink is set, the process dies
 * instead of removing a name that ends in it: a writer killed between the link(2) and the unlink(2) of a put-back
 * without renameat2. */
static const char *volatile kill_in_unlink;

int unlinkat(int dirfd, const char *name, int flags)
{
    size_t n = strlen(name), k = kill_in_unlink ? strlen(kill_in_unlink) : 0;
    if (k && n >= k && strcmp(name + n - k, kill_in_unlink) == 0)
        raise(SIGKILL);
    return (int)syscall(SYS_unlinkat, dirfd, name, flags);
}

/* pread(2) as the library sees it (interposed like rename above). When fork_in_pread is set, the next pread forks a
 * child that only waits (a pre-fork server's new worker): another thread of the process forking at the moment the
 * library reads a segment file through a descriptor of the moment, which the child inherits. */
static volatile int fork_in_pread;
static volatile pid_t pread_child;
/* When set, the next pread is where a pthread_cancel() of the calling thread lands: pread(2) is a cancellation
 * point, so a request that arrived just before it is acted upon there. */
static volatile int cancel_in_pread;

static ssize_t fork_then_pread(int fd, void *buf, size_t count, off_t offset)
{
    if (cancel_in_pread) {
        cancel_in_pread = 0;
        pthread_cancel(pthread_self());
        pthread_testcancel();
    }
    if (fork_in_pread) {
        fork_in_pread = 0;
        pid_t pid = fork();
        if (pid == 0) {
            for (;;)
                pause();
        }
        pread_child = pid;
    }
    return syscall(SYS_pread64, fd, buf, count, offset);
}

/* Both names: the library is built with _FILE_OFFSET_BITS=64, which makes its pread() calls pread64() where off_t is
 * 32 bits wide by default. */
ssize_t pread(int fd, void *buf, size_t count, off_t offset)
{
    return fork_then_pread(fd, buf, count, offset);
}

ssize_t pread64(int fd, void *buf, size_t count, off64_t offset)
{
    return fork_then_pread(fd, buf, count, (off_t)offset);
}

/* dup3(2) as the library sees it (interposed like rename above): when cancel_in_dup3 is set, a pthread_cancel() of
 * the calling thread arrives while it puts a reopened file under its descriptor's number, between the open() of
 * the new file and the close() of the descriptor it came in (both cancellation points). */
static volatile int cancel_in_dup3;

int dup3(int oldfd, int newfd, int flags)
{
    if (cancel_in_dup3) {
        cancel_in_dup3 = 0;
        pthread_cancel(pthread_self());
    }
    return (int)syscall(SYS_dup3, oldfd, newfd, flags);
}

/* write(2) as the library sees it (interposed like rename above): a pthread_cancel() of cancel_writer that arrives
 * as it is about to write is acted upon there (write is a cancellation point). */
static volatile int cancel_in_write;
static pthread_t cancel_writer;

ssize_t write(int fd, const void *buf, size_t count)
{
    if (cancel_in_write && pthread_equal(pthread_self(), cancel_writer)) {
        cancel_in_write = 0;
        pthread_cancel(pthread_self());
        pthread_testcancel();
    }
    return syscall(SYS_write, fd, buf, count);
}

/* writev(2) as the library sees it: the same, for a record of several pieces. */
ssize_t writev(int fd, const struct iovec *iov, int iovcnt)
{
    if (cancel_in_write && pthread_equal(pthread_self(), cancel_writer)) {
        cancel_in_write = 0;
        pthread_cancel(pthread_self());
        pthread_testcancel();
    }
    return syscall(SYS_writev, fd, iov, iovcnt);
}

static forklog *open_log(const struct forklog_options *o)
{
    forklog *log = NULL;
    int rc = forklog_open(&log, logpath, o);
    cr_assert_eq(rc, 0, "forklog_open: %s", strerror(-rc));
    return log;
}

static off_t fd_size(int fd)
{
    struct stat st;
    return fstat(fd, &st) == 0 ? st.st_size : -1;
}

/* A record of exactly n bytes with its newline: "<c><c>...<c>\n". */
static void fill(char *buf, char c, size_t n)
{
    memset(buf, c, n - 1);
    buf[n - 1] = '\n';
}

/* ---- promise 5: RLIMIT_FSIZE and a full disk ------------------------------------------------------------- */

static int set_fsize(rlim_t cur)
{
    struct rlimit rl = {cur, RLIM_INFINITY};
    return setrlimit(RLIMIT_FSIZE, &rl);
}

Test(hostile, rlimit_fsize_fails_whole_and_recovers)
{
    forklog *log = open_log(NULL);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        char r[400];
        fill(r, 'a', 100);
        for (int i = 0; i < 10; i++)
            if (forklog_write(log, r, 100) != 0)
                _exit(10);
        if (set_fsize(1150) != 0)
            _exit(11);
        char big[300];
        fill(big, 'B', sizeof big);
        /* 150 bytes fit under the limit: the first write(2) is short, the next fails with EFBIG. */
        if (forklog_write(log, big, sizeof big) != -EFBIG)
            _exit(12);
        if (fd_size(log->fd) != 1000)
            _exit(13); /* a partial record stayed */
        fill(r, 'c', 100);
        if (forklog_write(log, r, 100) != 0)
            _exit(14); /* the lock was released and a record that fits still goes in */
        if (forklog_write(log, r, 100) != -EFBIG || fd_size(log->fd) != 1100)
            _exit(15);
        char msg[200];
        memset(msg, 'm', sizeof msg - 1);
        msg[sizeof msg - 1] = '\0';
        if (forklog_info(log, "%s", msg) != -EFBIG || fd_size(log->fd) != 1100)
            _exit(16);
        if (set_fsize(RLIM_INFINITY) != 0)
            _exit(17);
        if (forklog_write(log, big, sizeof big) != 0 || forklog_info(log, "%s", msg) != 0)
            _exit(18); /* later writes work once the limit is raised */
        _exit(forklog_close(log) == 0 ? 0 : 19);
    }
    cr_assert_eq(th_wait(pid), 0, "the child failed at the step its exit code names");
    cr_assert_eq(forklog_write(log, "parent", 6), 0);
    cr_assert_eq(forklog_close(log), 0);
    size_t len;
    char *buf = th_slurp(logpath, &len);
    cr_assert_not_null(buf);
    cr_assert_eq(th_count_lines(buf, len), 10 + 1 + 1 + 1 + 1);
    cr_assert_eq(buf[1000], 'c', "the record written under the limit follows the ten before it");
    cr_assert_eq(buf[1100], 'B', "then the 300-byte record, whole, once the limit was raised");
    cr_assert_eq(buf[1399], '\n');
    cr_assert_eq(memcmp(buf + len - 7, "parent\n", 7), 0);
    free(buf);
}

/* The log cut short behind its back while in use (`: > app.log` to free a disk, logrotate's copytruncate): the
 * segment's idea of where the last whole record ends lies past the file's end from then on. A write that then failed
 * cut the file back to that point: ftruncate() extended the file with zeros up to it and kept the failed record's
 * fragment, or (past RLIMIT_FSIZE) failed and kept the fragment alone. The failed record's own bytes are what goes. */
Test(hostile, a_failed_write_after_the_log_was_cut_short_behind_its_back_leaves_nothing_of_it)
{
    forklog *log = open_log(NULL);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        char r[1000];
        fill(r, 'a', sizeof r);
        for (int i = 0; i < 8; i++)
            if (forklog_write(log, r, sizeof r) != 0)
                _exit(10);
        if (truncate(logpath, 0) != 0)
            _exit(11);
        if (set_fsize(5500) != 0)
            _exit(12);
        fill(r, 'b', sizeof r);
        for (int i = 0; i < 5; i++)
            if (forklog_write(log, r, sizeof r) != 0)
                _exit(13);
        fill(r, 'c', sizeof r);
        if (forklog_write(log, r, sizeof r) != -EFBIG) /* 500 bytes go in, then EFBIG */
            _exit(14);
        if (fd_size(log->fd) != 5000)
            _exit(15); /* the failed record's fragment stayed */
        if (set_fsize(RLIM_INFINITY) != 0 || forklog_write(log, r, sizeof r) != 0 || fd_size(log->fd) != 6000)
            _exit(16);
        _exit(forklog_close(log) == 0 ? 0 : 17);
    }
    int st = th_wait(pid);
    cr_assert_eq(st, 0, "the child failed at step %d", st);
    cr_assert_eq(forklog_close(log), 0);
    size_t len;
    char *buf = th_slurp(logpath, &len);
    cr_assert_eq(len, 6000);
    for (size_t k = 0; k < 6; k++)
        cr_assert(buf[k * 1000] == (k < 5 ? 'b' : 'c') && buf[k * 1000 + 999] == '\n', "record %zu is not whole", k);
    free(buf);

    /* A full file system, where the cut extended the file with zeros (root: a small tmpfs of the test's own). */
    char *small = th_small_fs(dir, "size=256k");
    if (!small)
        cr_skip_test("no mount namespace of its own here (needs root)");
    char *path = th_path(small, "cut.log");
    cr_assert_eq(forklog_open(&log, path, NULL), 0);
    char r[3000];
    fill(r, 'd', sizeof r);
    for (int i = 0; i < 8; i++)
        cr_assert_eq(forklog_write(log, r, sizeof r), 0);
    cr_assert_eq(truncate(path, 0), 0);
    fill(r, 'e', sizeof r);
    for (int i = 0; i < 2; i++)
        cr_assert_eq(forklog_write(log, r, sizeof r), 0);
    char *filler = th_fill_fs(small);
    cr_assert_eq(forklog_write(log, r, sizeof r), -ENOSPC);
    cr_assert_eq(fd_size(log->fd), 6000, "a failed write left the file %lld bytes long", (long long)fd_size(log->fd));
    cr_assert_eq(log->seg->size, 6000, "the log counts %llu bytes", (unsigned long long)log->seg->size);
    cr_assert_eq(unlink(filler), 0);
    fill(r, 'f', sizeof r);
    cr_assert_eq(forklog_write(log, r, sizeof r), 0);
    cr_assert_eq(forklog_close(log), 0);
    buf = th_slurp(path, &len);
    cr_assert_eq(len, 9000);
    for (size_t k = 0; k < 3; k++)
        cr_assert(buf[k * 3000] == (k < 2 ? 'e' : 'f') && buf[k * 3000 + 2999] == '\n', "record %zu is not whole", k);
    free(buf);
    cr_assert_eq(umount(small), 0);
    free(filler);
    free(path);
    free(small);
}

Test(hostile, rlimit_fsize_buffered_flush_keeps_the_buffer)
{
    struct forklog_options o = {.flags = FORKLOG_BUFFERED, .flush_ms = 60000, .buffer_size = 4096};
    forklog *log = open_log(&o);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        char r[100];
        fill(r, 'a', 100);
        for (int i = 0; i < 10; i++)
            if (forklog_write(log, r, 100) != 0)
                _exit(10);
        if (fd_size(log->fd) != 0)
            _exit(11);
        if (set_fsize(500) != 0)
            _exit(12);
        if (forklog_flush(log) != -EFBIG)
            _exit(13);
        if (fd_size(log->fd) != 0)
            _exit(14); /* half a buffer stayed */
        if (set_fsize(RLIM_INFINITY) != 0)
            _exit(15);
        if (forklog_flush(log) != 0 || fd_size(log->fd) != 1000)
            _exit(16); /* the buffer was kept and written whole on the next flush */
        _exit(forklog_close(log) == 0 ? 0 : 17);
    }
    cr_assert_eq(th_wait(pid), 0, "the child failed at the step its exit code names");
    cr_assert_eq(forklog_close(log), 0);
    size_t len;
    char *buf = th_slurp(logpath, &len);
    cr_assert_eq(len, 1000);
    cr_assert_eq(th_count_lines(buf, len), 10);
    free(buf);
}

Test(hostile, full_disk_is_enospc_and_not_a_hang)
{
    /* /dev/full: every write(2) fails with ENOSPC. Not a regular file (no repair is possible there), but the
     * error must come back as -ENOSPC each time and the lock must be released. */
    forklog *log = NULL;
    int rc = forklog_open(&log, "/dev/full", NULL);
    cr_assert_eq(rc, 0, "open /dev/full: %s", strerror(-rc));
    cr_assert_eq(forklog_write(log, "x", 1), -ENOSPC);
    cr_assert_eq(forklog_info(log, "y"), -ENOSPC);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0)
        _exit(forklog_write(log, "z", 1) == -ENOSPC && forklog_close(log) == 0 ? 0 : 1);
    cr_assert_eq(th_wait_for(pid, 10), 0);
    cr_assert_eq(forklog_close(log), 0);
}

/* ---- promise 6: a flood of signals without SA_RESTART --------------------------------------------------- */

static volatile sig_atomic_t alarms;

static void on_alarm(int sig)
{
    (void)sig;
    alarms++;
}

Test(hostile, signal_flood_no_error_no_torn_record, .timeout = 110)
{
    forklog *log = open_log(NULL);
    enum { P = 4, N = 300 };
    pid_t pid[P];
    for (unsigned p = 0; p < P; p++) {
        pid[p] = fork();
        cr_assert_neq(pid[p], -1);
        if (pid[p] == 0) {
            struct sigaction sa;
            rc_child();
            memset(&sa, 0, sizeof sa);
            sa.sa_handler = on_alarm; /* no SA_RESTART: every slow call may fail with EINTR */
            sigemptyset(&sa.sa_mask);
            if (sigaction(SIGALRM, &sa, NULL) != 0)
                _exit(2);
            struct itimerval it = {{0, 20}, {0, 20}};
            if (setitimer(ITIMER_REAL, &it, NULL) != 0)
                _exit(2);
            char *buf = malloc(RC_HEAD_MAX + RC_MAX_PAYLOAD);
            unsigned seed = p + 5;
            for (unsigned seq = 0; seq < N; seq++) {
                char kind = seq % 3 == 0 ? 'L' : 'R';
                size_t n = seq % 50 == 7 ? RC_MAX_PAYLOAD - RC_HEAD_MAX - 1
                                         : rc_size(&seed, kind == 'L' ? 60000 : RC_MAX_PAYLOAD - RC_HEAD_MAX - 1);
                if (rc_write(log, buf, kind, p, seq, 0, n) != 0)
                    _exit(3);
            }
            struct itimerval off = {{0, 0}, {0, 0}};
            setitimer(ITIMER_REAL, &off, NULL);
            free(buf);
            if (alarms < 100)
                _exit(4); /* no flood: the test did not test anything */
            _exit(forklog_close(log) == 0 ? 0 : 5);
        }
    }
    for (unsigned p = 0; p < P; p++)
        cr_assert_eq(th_wait_for(pid[p], 100), 0, "writer %u failed (3: a call returned an error)", p);
    cr_assert_eq(forklog_close(log), 0);
    struct rc_seen seen;
    rc_seen_init(&seen, P, N);
    rc_scan(&seen, logpath, 0);
    for (unsigned p = 0; p < P; p++)
        for (unsigned q = 0; q < N; q++)
            cr_assert_eq(rc_count(&seen, p, q), 1, "writer %u record %u", p, q);
    cr_assert_eq(seen.records, (size_t)P * N);
    rc_seen_free(&seen);
}

/* A handler that writes to the log its thread is writing to: the interrupted call may hold the lock (direct mode, a
 * flush) or be in the middle of copying its record into its ring (buffered mode). The handler's call must neither wait
 * forever for a lock its own thread holds nor write into the ring under the interrupted copy: it fails with -EDEADLK
 * and writes nothing. Every call that returned 0 has its record in the file once, whole. */
enum { REENTER_MAIN = 30000, REENTER_HANDLER = 20000 };
static forklog *reenter_log;
static int *reenter_main_rc, *reenter_handler_rc;
static volatile sig_atomic_t reenter_calls;

static void reenter_on_alarm(int sig)
{
    (void)sig;
    if (reenter_calls >= REENTER_HANDLER)
        return;
    int seq = reenter_calls++;
    char rec[32];
    int n = snprintf(rec, sizeof rec, "H %06d\n", seq);
    reenter_handler_rc[seq] = forklog_write(reenter_log, rec, (size_t)n);
}

/* Writes REENTER_MAIN records while a 50 us timer's handler writes too; 0 when every call was made. */
static int reenter_child(forklog *log)
{
    reenter_log = log;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = reenter_on_alarm;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGALRM, &sa, NULL) != 0)
        return 2;
    struct itimerval it = {{0, 50}, {0, 50}};
    if (setitimer(ITIMER_REAL, &it, NULL) != 0)
        return 2;
    static const char fill_x[] = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
    char rec[128];
    for (int i = 0; i < REENTER_MAIN; i++) {
        int n = snprintf(rec, sizeof rec, "M %06d %.*s\n", i, 20 + i % 60, fill_x);
        reenter_main_rc[i] = forklog_write(log, rec, (size_t)n);
    }
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);
    /* A signal already pending is discarded: a handler must not use the handle during or after its close. */
    signal(SIGALRM, SIG_IGN);
    return forklog_close(log) == 0 ? 0 : 3;
}

Test(hostile, a_handler_that_interrupts_a_call_of_its_thread_neither_hangs_nor_loses_a_record, .timeout = 110)
{
    size_t bytes = (REENTER_MAIN + REENTER_HANDLER) * sizeof(int);
    int *rcs = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(rcs, MAP_FAILED);
    reenter_main_rc = rcs;
    reenter_handler_rc = rcs + REENTER_MAIN;
    /* Direct mode (the lock held at the interruption), buffered with a flush every millisecond (the lock held, or a
     * ring copy under way), and buffered with no flush until close (ring copies only). */
    const struct forklog_options modes[] = {
        {.flags = 0},
        {.flags = FORKLOG_BUFFERED, .buffer_size = 4096, .flush_ms = 1},
        {.flags = FORKLOG_BUFFERED, .buffer_size = 16u << 20, .flush_ms = 1000000},
    };
    for (unsigned m = 0; m < sizeof modes / sizeof modes[0]; m++) {
        unlink(logpath);
        memset(rcs, 0x7f, bytes);
        forklog *log = open_log(&modes[m]);
        pid_t pid = fork();
        cr_assert_neq(pid, -1);
        if (pid == 0)
            _exit(reenter_child(log));
        int st = th_wait_for(pid, 30);
        cr_assert_eq(forklog_close(log), 0);
        cr_assert_eq(st, 0, "mode %u: the writer ended with %d (-2: it hung)", m, st);

        size_t len;
        char *buf = th_slurp(logpath, &len);
        cr_assert_not_null(buf);
        unsigned char *seen = calloc(REENTER_MAIN + REENTER_HANDLER, 1);
        cr_assert_not_null(seen);
        size_t torn = 0;
        for (char *line = buf, *nl; line < buf + len; line = nl + 1) {
            nl = memchr(line, '\n', (size_t)(buf + len - line));
            cr_assert_not_null(nl, "mode %u: the file does not end with a newline", m);
            int seq, end = 0, fill = 0;
            if (sscanf(line, "M %6d %*[x]%n", &seq, &end) == 1 && line + end == nl && seq >= 0 && seq < REENTER_MAIN &&
                (fill = (int)(nl - line) - 9) == 20 + seq % 60)
                seen[seq]++;
            else if (sscanf(line, "H %6d%n", &seq, &end) == 1 && line + end == nl && seq >= 0 && seq < REENTER_HANDLER)
                seen[REENTER_MAIN + seq]++;
            else
                torn++;
        }
        cr_assert_eq(torn, 0, "mode %u: %zu lines that are no whole record", m, torn);
        int calls = 0, refused = 0;
        for (int i = 0; i < REENTER_MAIN + REENTER_HANDLER; i++) {
            if (rcs[i] == 0x7f7f7f7f)
                continue; /* a handler call never made */
            calls += i >= REENTER_MAIN;
            refused += rcs[i] == -EDEADLK;
            cr_assert(rcs[i] == 0 || rcs[i] == -EDEADLK, "mode %u: call %d returned %d", m, i, rcs[i]);
            cr_assert_eq(seen[i], rcs[i] == 0 ? 1 : 0, "mode %u: call %d returned %d and its record is there %u times",
                         m, i, rcs[i], seen[i]);
        }
        cr_assert_gt(calls, 100, "mode %u: only %d handler calls: the test did not test anything", m, calls);
        cr_assert_gt(refused, 0, "mode %u: no handler call interrupted a call of its thread", m);
        free(seen);
        free(buf);
    }
    munmap(rcs, bytes);
}

/* ---- promise 7: fork while another thread is in the middle of a record ----------------------------------- */

struct big_writer {
    forklog *log;
    atomic_int stop;
    atomic_int tid;
    unsigned written;
    int failed;
};

static void *write_big(void *arg)
{
    struct big_writer *bw = arg;
    atomic_store(&bw->tid, (int)syscall(SYS_gettid));
    char *buf = malloc(RC_HEAD_MAX + RC_MAX_PAYLOAD);
    while (!atomic_load(&bw->stop) && bw->written < 4000) {
        if (rc_write(bw->log, buf, 'R', 0, bw->written, 0, RC_MAX_PAYLOAD - RC_HEAD_MAX - 1) != 0) {
            bw->failed = 1;
            break;
        }
        bw->written++;
    }
    free(buf);
    return NULL;
}

Test(hostile, fork_while_a_thread_is_mid_record, .timeout = 110)
{
    forklog *log = open_log(NULL);
    struct big_writer bw = {.log = log};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, write_big, &bw), 0);
    enum { CHILDREN = 30 };
    int mid = 0;
    for (unsigned i = 0; i < CHILDREN; i++) {
        /* Fork at the moment the other thread holds the lock and is writing its 1 MiB record. */
        double end = th_now_s() + 1.0;
        while (th_now_s() < end) {
            struct fl__seg *s = log->seg;
            if (*(volatile uint32_t *)&s->state == FL__WRITING &&
                (*(volatile int *)&s->mu.__data.__owner & 0x3fffffff) == atomic_load(&bw.tid))
                break;
            sched_yield();
        }
        mid += *(volatile uint32_t *)&log->seg->state == FL__WRITING;
        pid_t pid = fork();
        cr_assert_neq(pid, -1);
        if (pid == 0) {
            char buf[RC_HEAD_MAX + 100];
            int rc = rc_write(log, buf, 'L', 1 + i, 0, 0, 100);
            _exit(rc == 0 && forklog_close(log) == 0 ? 0 : 1);
        }
        cr_assert_eq(th_wait_for(pid, 20), 0, "child %u could not log (-2: it hung)", i);
    }
    atomic_store(&bw.stop, 1);
    cr_assert_eq(pthread_join(th, NULL), 0);
    cr_assert_not(bw.failed);
    cr_assert_eq(forklog_close(log), 0);
    cr_assert_gt(mid, CHILDREN / 2, "only %d forks happened mid-record", mid);
    struct rc_seen seen;
    rc_seen_init(&seen, CHILDREN + 1, 4001);
    rc_scan(&seen, logpath, 0);
    for (unsigned q = 0; q < bw.written; q++)
        cr_assert_eq(rc_count(&seen, 0, q), 1, "the thread's record %u", q);
    for (unsigned i = 0; i < CHILDREN; i++)
        cr_assert_eq(rc_count(&seen, 1 + i, 0), 1, "child %u's record", i);
    cr_assert_eq(seen.records, (size_t)bw.written + CHILDREN);
    rc_seen_free(&seen);
}

/* Another process opens the log, writes "after" and closes it; it exits 0, 1 (the open failed) or 2. */
static pid_t fork_open_write_close(void)
{
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        forklog *l;
        if (forklog_open(&l, logpath, NULL) != 0)
            _exit(1);
        _exit(forklog_info(l, "after") == 0 && forklog_close(l) == 0 ? 0 : 2);
    }
    return pid;
}

/* The last user's close that cannot write the buffered records (a file size limit, a full disk) leaves the segment file
 * with them, for the next open to write. The close looks at the file through a description of its own, under the
 * exclusive flock; a child forked by another thread in that instant inherits the description, and with it the lock,
 * for as long as it lives. The next open of the log would then wait for ever for the shared flock. */
Test(hostile, a_child_forked_while_the_last_user_closes_does_not_keep_the_log_locked, .timeout = 60)
{
    forklog *log = open_log(&(struct forklog_options){.flags = FORKLOG_BUFFERED, .flush_ms = 1000000});
    for (int i = 0; i < 10; i++)
        cr_assert_eq(forklog_info(log, "kept %d", i), 0);
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit old;
    cr_assert_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
    cr_assert_eq(set_fsize(1), 0);
    fork_in_pread = 1;
    int rc = forklog_close(log);
    fork_in_pread = 0;
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, SIG_DFL);
    cr_assert_eq(rc, -EFBIG, "the close's flush: %d", rc);
    cr_assert_gt(pread_child, 0, "no child was forked while the close looked at the segment file");

    /* The child lives on, as a worker would. Another process opens the log: it must not wait, and it writes the
     * records the close left. */
    int st = th_wait_for(fork_open_write_close(), 10);
    kill(pread_child, SIGKILL);
    th_wait(pread_child);
    cr_assert_eq(st, 0, "the next open ended with %d (-2: it waited for the lock the forked child kept)", st);
    size_t len;
    char *buf = th_slurp(logpath, &len);
    cr_assert_eq(th_count_lines(buf, len), 11, "%s", buf);
    free(buf);
}

static int count_fds(void);

/* A thread cancelled in the middle of a call (pthread_cancel() is acted upon at the next cancellation point: open,
 * close, pread, write, ...) must not leave the log's segment file locked. The last user's close holds the segment
 * file's exclusive flock while it looks at the file (a pread); cancelled there, it never unlocked nor closed that
 * description, and every later forklog_open() of the log, in any process, waited for the shared flock for as long
 * as the cancelled thread's process lived. */
static void *close_cancelled(void *arg)
{
    cancel_in_pread = 1;
    forklog_close(arg);
    cancel_in_pread = 0;
    return NULL;
}

Test(hostile, a_thread_cancelled_in_the_last_close_does_not_keep_the_log_locked, .timeout = 60)
{
    forklog *log = open_log(NULL);
    cr_assert_eq(forklog_info(log, "before"), 0);
    int fds = count_fds();
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, close_cancelled, log), 0);
    void *res;
    cr_assert_eq(pthread_join(th, &res), 0);
    int reached = !cancel_in_pread;
    cancel_in_pread = 0;
    cr_assert(reached, "the close never read the segment file");

    /* This process lives on, as a server whose worker thread was cancelled would. Another process opens the log:
     * it must not wait. */
    int st = th_wait_for(fork_open_write_close(), 10);
    cr_assert_eq(st, 0, "the next open ended with %d (-2: it waited for the lock the cancelled close kept)", st);
    cr_assert_eq(count_fds(), fds - 2, "descriptors left by the cancelled close: %d more than the handle's two",
                 count_fds() - (fds - 2));
    size_t len;
    char *buf = th_slurp(logpath, &len);
    cr_assert_eq(th_count_lines(buf, len), 2, "%s", buf);
    free(buf);
}

/* A thread cancelled while its record reopens the log (forklog_reopen() was called) between the open() of the new
 * file and the close() of the descriptor it came in: the record is not written (its call never returned), the lock
 * it held goes to the next writer as a dead holder's would, and no descriptor stays open. */
static void *log_cancelled_in_reopen(void *arg)
{
    cancel_in_dup3 = 1;
    forklog_info(arg, "cancelled");
    cancel_in_dup3 = 0;
    return NULL;
}

Test(hostile, a_thread_cancelled_in_a_reopen_leaves_no_descriptor, .timeout = 60)
{
    forklog *log = open_log(NULL);
    cr_assert_eq(forklog_info(log, "before"), 0);
    int fds = count_fds();
    cr_assert_eq(forklog_reopen(log), 0);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, log_cancelled_in_reopen, log), 0);
    void *res;
    cr_assert_eq(pthread_join(th, &res), 0);
    int reached = !cancel_in_dup3;
    cancel_in_dup3 = 0;
    cr_assert(reached, "the record never reopened the file");
    cr_assert_eq(forklog_info(log, "after"), 0);
    cr_assert_eq(count_fds(), fds, "%d descriptors more after the cancelled reopen", count_fds() - fds);
    cr_assert_eq(forklog_close(log), 0);
    size_t len;
    char *buf = th_slurp(logpath, &len);
    cr_assert(strstr(buf, " before\n") && strstr(buf, " after\n"), "%s", buf);
    free(buf);
}

/* A combining poster (direct mode: it found the lock taken and posted its record in a slot of the segment) that then
 * takes the lock and writes its own slot, cancelled in that write(2): the next holder repairs the batch and writes
 * the record, and the slot must become free again. Were it left DONE for a poster that is gone, it would stay taken
 * for as long as the process lives, for every process of the log: 32 such cancellations end combining for all. */
static void *post_cancelled(void *arg)
{
    forklog_info(arg, "posted");
    pthread_testcancel(); /* the request is acted upon here if not in the call */
    return NULL;
}

Test(hostile, a_poster_cancelled_in_its_write_leaves_its_slot_free, .timeout = 60)
{
    forklog *log = open_log(NULL);
    cr_assert_eq(forklog_info(log, "before"), 0);
    struct fl__seg *s = log->seg;
    /* Hold the lock, as a writer of another process would, so that the thread posts its record. */
    cr_assert_eq(pthread_mutex_lock(&s->mu), 0);
    cancel_in_write = 1;
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, post_cancelled, log), 0);
    cancel_writer = th;
    double end = th_now_s() + 10;
    while (!atomic_load(&s->posted) && th_now_s() < end)
        usleep(100);
    cr_assert_neq(atomic_load(&s->posted), 0, "the thread posted nothing");
    cr_assert_eq(pthread_mutex_unlock(&s->mu), 0); /* the poster takes it and writes its own slot */
    void *res;
    cr_assert_eq(pthread_join(th, &res), 0);
    int reached = !cancel_in_write;
    cancel_in_write = 0;
    cr_assert(reached, "the poster never wrote");
    cr_assert_eq(res, PTHREAD_CANCELED, "the poster's cancellation was lost");
    cr_assert_eq(forklog_info(log, "after"), 0);
    for (unsigned k = 0; k < FL__SLOTS; k++)
        cr_assert_eq(atomic_load(&s->slots[k].word) & FL__SLOT_STATE, FL__SLOT_FREE,
                     "slot %u is in state %u after every call returned", k,
                     (unsigned)(atomic_load(&s->slots[k].word) & FL__SLOT_STATE));
    cr_assert_eq(forklog_close(log), 0);
    size_t len;
    char *buf = th_slurp(logpath, &len);
    cr_assert(strstr(buf, " before\n") && strstr(buf, " after\n"), "%s", buf);
    free(buf);
}

/* A record longer than the stack's buffer is built in memory of its own (malloc), freed after its write(2). A thread
 * cancelled at that write ends as a killed writer does for the file, but its process lives on: the memory must not
 * stay taken. 40 cancelled records of 20000 bytes each would leave about 1.6 MB behind (two buffers each). */
static const char *big_message;
static atomic_int big_written;

static void *log_big_cancelled(void *arg)
{
    cancel_writer = pthread_self();
    cancel_in_write = 1;
    if (forklog_log(arg, FORKLOG_INFO, "big %s", big_message) == 0)
        atomic_fetch_add(&big_written, 1);
    cancel_in_write = 0;
    pthread_testcancel(); /* the request is acted upon here if not in the call */
    return NULL;
}

Test(hostile, a_thread_cancelled_in_the_write_of_a_long_record_leaves_no_memory, .timeout = 60)
{
    forklog *log = open_log(NULL);
    cr_assert_eq(forklog_info(log, "before"), 0);
    enum { LEN = 20000, ROUNDS = 40 };
    char *msg = malloc(LEN + 1);
    cr_assert_not_null(msg);
    memset(msg, 'm', LEN);
    msg[LEN] = '\0';
    big_message = msg;
    /* One round first: whatever the C library keeps for threads (their stacks, their descriptors) is made then. */
    size_t used = 0;
    for (unsigned round = 0; round <= ROUNDS; round++) {
        if (round == 1)
            used = mallinfo2().uordblks;
        pthread_t th;
        cr_assert_eq(pthread_create(&th, NULL, log_big_cancelled, log), 0);
        void *res;
        cr_assert_eq(pthread_join(th, &res), 0);
        cr_assert_eq(res, PTHREAD_CANCELED, "round %u: the write was not where the thread was cancelled", round);
    }
    size_t after = mallinfo2().uordblks;
    cr_assert_lt(after, used + LEN, "%zu bytes more in use after %d cancelled records", after - used, ROUNDS);
    cr_assert_eq(forklog_info(log, "after"), 0);
    cr_assert_eq(forklog_close(log), 0);
    size_t len;
    char *buf = th_slurp(logpath, &len);
    /* A record whose call returned is in the file, whole; one cancelled at its write left nothing. */
    size_t want = 2 + (size_t)atomic_load(&big_written);
    cr_assert_eq(th_count_lines(buf, len), want, "%zu lines, %zu expected", th_count_lines(buf, len), want);
    for (const char *q = buf; (q = strstr(q, " big ")) != NULL; q += LEN)
        cr_assert(strspn(q + 5, "m") == LEN && q[5 + LEN] == '\n', "a big record is not whole");
    free(buf);
    free(msg);
}

/* A thread cancelled at its write(2) still holds the lock while its cleanup handlers run, and a handler (or a C++
 * destructor) that closes the thread's own handle unmaps the lock: the kernel, which frees a dead holder's lock
 * through the mapping it was taken in, could then never free it, and every other handle of the log waited for ever.
 * The close releases it; the next holder repairs what the cancelled write left. */
static void close_in_cleanup(void *log)
{
    (void)forklog_close(log);
}

static void *log_cancelled_then_close(void *arg)
{
    (void)arg;
    forklog *own = open_log(NULL);
    pthread_cleanup_push(close_in_cleanup, own);
    cancel_writer = pthread_self();
    cancel_in_write = 1;
    (void)forklog_info(own, "cancelled");
    cancel_in_write = 0;
    pthread_testcancel();
    pthread_cleanup_pop(1);
    return NULL;
}

Test(hostile, a_handle_closed_by_the_cleanup_of_a_thread_cancelled_in_its_write_leaves_the_log_unlocked, .timeout = 30)
{
    forklog *log = open_log(NULL);
    cr_assert_eq(forklog_info(log, "before"), 0);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, log_cancelled_then_close, NULL), 0);
    void *res;
    cr_assert_eq(pthread_join(th, &res), 0);
    cr_assert_eq(res, PTHREAD_CANCELED, "the write was not where the thread was cancelled");
    /* Before the fix this call waited for the lock for ever (the test's timeout). */
    cr_assert_eq(forklog_info(log, "after"), 0);
    cr_assert_eq(forklog_close(log), 0);
    size_t len;
    char *buf = th_slurp(logpath, &len);
    cr_assert_eq(th_count_lines(buf, len), 2, "%s", buf);
    cr_assert(strstr(buf, " before\n") && strstr(buf, " after\n") && !strstr(buf, "cancelled"), "%s", buf);
    free(buf);
}

/* ---- promise 8: no descriptor or mapping leak ---------------------------------------------------------- */

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    cr_assert_not_null(d);
    int n = 0;
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

/* Number of mappings and their total size in KiB. */
static void count_maps(long *lines, long *kib)
{
    FILE *f = fopen("/proc/self/maps", "r");
    cr_assert_not_null(f);
    char line[4096];
    *lines = 0;
    *kib = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx", &lo, &hi) == 2) {
            (*lines)++;
            *kib += (long)((hi - lo) >> 10);
        }
    }
    fclose(f);
}

static void open_write_close(const struct forklog_options *o, int i)
{
    forklog *log;
    int rc = forklog_open(&log, logpath, o);
    if (rc != 0)
        cr_assert_fail("cycle %d: forklog_open: %s", i, strerror(-rc));
    if (i % 100 == 0) {
        rc = forklog_write(log, "cycle", 5);
        if (rc != 0)
            cr_assert_fail("cycle %d: forklog_write: %s", i, strerror(-rc));
    }
    if (forklog_close(log) != 0)
        cr_assert_fail("cycle %d: forklog_close", i);
}

Test(hostile, no_fd_or_mapping_leak_over_2000_cycles, .timeout = 110)
{
    /* Direct and buffered (the rings) on the log's shared segment file, which each cycle creates and removes, and a
     * private segment. */
    struct forklog_options opts[3] = {
        {0}, {.flags = FORKLOG_BUFFERED, .buffer_size = 64 << 10}, {.flags = FORKLOG_PRIVATE | FORKLOG_BUFFERED}};
    static const char *const name[3] = {"direct", "buffered", "private"};
    for (int k = 0; k < 3; k++) {
        for (int i = 0; i < 200; i++) /* warm-up: the allocator settles */
            open_write_close(&opts[k], i);
        int fds = count_fds();
        long lines, kib;
        count_maps(&lines, &kib);
        for (int i = 0; i < 2000; i++)
            open_write_close(&opts[k], i);
        long lines2, kib2;
        count_maps(&lines2, &kib2);
        cr_assert_eq(count_fds(), fds, "descriptors leaked (%s)", name[k]);
        /* A leaked mapping per cycle would be 2,000 mappings (or, merged, 8 MiB or more). */
        cr_assert_leq(lines2, lines + 2, "%ld mappings before, %ld after (%s)", lines, lines2, name[k]);
        cr_assert_leq(kib2, kib + 1024, "%ld KiB mapped before, %ld after (%s)", kib, kib2, name[k]);
        char *seg = th_path(dir, ".hostile.log.forklog");
        cr_assert_neq(access(seg, F_OK), 0, "the segment file is left after the last close (%s)", name[k]);
        free(seg);
    }
}

/* The last close of a process that has run out of memory (its RLIMIT_AS reached, its heap used up) still removes the
 * segment file, which holds nothing: the check that it is empty and its name need no allocation. Direct and
 * buffered (the rings). */
Test(hostile, the_last_close_of_a_process_out_of_memory_removes_the_segment_file, .timeout = 60)
{
    if (TH_SANITIZED)
        cr_skip_test("a sanitizer's runtime maps its own memory and dies when RLIMIT_AS refuses it");
    struct forklog_options opts[2] = {{0}, {.flags = FORKLOG_BUFFERED, .buffer_size = 64 << 10}};
    char *seg = th_path(dir, ".hostile.log.forklog");
    for (int k = 0; k < 2; k++) {
        pid_t pid = fork();
        cr_assert_geq(pid, 0);
        if (pid == 0) {
            forklog *log;
            if (forklog_open(&log, logpath, &opts[k]) != 0)
                _exit(1);
            if (forklog_log(log, FORKLOG_INFO, "record %d", k) != 0 || forklog_flush(log) != 0)
                _exit(2);
            const unsigned long long vm = th_mapped_bytes();
            if (!vm)
                _exit(77);
            /* Below what the process maps by the size of the segment, so that unmapping it makes no room either. */
            struct stat sst;
            if (stat(seg, &sst) != 0)
                _exit(4);
            struct rlimit rl = {(rlim_t)(vm - (size_t)sst.st_size), RLIM_INFINITY};
            if (setrlimit(RLIMIT_AS, &rl) != 0)
                _exit(77);
            while (malloc(32)) /* nothing left on the heap, and no room to grow it */
                ;
            _exit(forklog_close(log) == 0 ? 0 : 3);
        }
        int st = th_wait(pid);
        if (st == 77)
            cr_skip_test("cannot limit the address space");
        cr_assert_eq(st, 0, "child step %d failed (mode %d)", st, k);
        cr_assert_neq(access(seg, F_OK), 0, "the segment file is left after the last close (mode %d)", k);
    }
    size_t len;
    char *buf = th_slurp(logpath, &len);
    cr_assert_not_null(buf);
    cr_assert_eq(th_count_lines(buf, len), 2, "both records are in the file");
    free(buf);
    free(seg);
}

Test(hostile, a_process_started_with_0_1_and_2_closed_keeps_them_closed_and_its_output_out_of_the_log, .timeout = 60)
{
    /* A program started with its standard descriptors closed (`prog <&- >&- 2>&-`, some supervisors) gets 0, 1 and 2
     * back from open(): the log's descriptor and the segment file's took them, and the program's own printf() (or a
     * library's message to stderr), which it believes goes nowhere, went into the log unlocked, or over the segment's
     * head, where every later opener of the log found a segment that "kept changing" (-EAGAIN). */
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        close(0);
        close(1);
        close(2);
        forklog *log;
        if (forklog_open(&log, logpath, NULL) != 0)
            _exit(10);
        for (int fd = 0; fd < 3; fd++)
            if (fcntl(fd, F_GETFD) != -1)
                _exit(11 + fd); /* the handle took a standard descriptor */
        if (forklog_write(log, "first", 5) != 0)
            _exit(14);
        static const char out[] = "what the program prints to its closed stdout and stderr, a hundred bytes or so\n";
        if (write(1, out, sizeof out - 1) >= 0 || write(2, out, sizeof out - 1) >= 0)
            _exit(15);
        pid_t other = fork();
        if (other < 0)
            _exit(16);
        if (other == 0) {
            forklog *o;
            _exit(forklog_open(&o, logpath, NULL) == 0 && forklog_write(o, "other", 5) == 0 && forklog_close(o) == 0
                      ? 0
                      : 1);
        }
        if (th_wait_for(other, 30) != 0)
            _exit(17); /* another process could not join the log */
        _exit(forklog_write(log, "last", 4) == 0 && forklog_close(log) == 0 ? 0 : 18);
    }
    cr_assert_eq(th_wait_for(pid, 50), 0, "the child failed at the step its exit code names");
    size_t len;
    char *buf = th_slurp(logpath, &len);
    cr_assert_not_null(buf);
    cr_assert_str_eq(buf, "first\nother\nlast\n");
    free(buf);
}

/* ---- promise 9: permissions and symlinks ---------------------------------------------------------------- */

static char *numbered(unsigned k)
{
    size_t n = strlen(logpath) + 16;
    char *p = malloc(n);
    cr_assert_not_null(p);
    snprintf(p, n, "%s.%u", logpath, k);
    return p;
}

static mode_t mode_of(const char *path)
{
    struct stat st;
    cr_assert_eq(lstat(path, &st), 0, "%s: %s", path, strerror(errno));
    cr_assert(S_ISREG(st.st_mode), "%s is not a regular file", path);
    return st.st_mode & 07777;
}

Test(hostile, mode_under_umask_for_created_and_rotated_files)
{
    mode_t old = umask(027);
    struct forklog_options o = {.mode = 0666, .rotate_bytes = 300, .rotate_keep = 3};
    forklog *log = open_log(&o);
    cr_assert_eq(mode_of(logpath), 0640);
    char r[100];
    fill(r, 'r', sizeof r);
    for (int i = 0; i < 12; i++)
        cr_assert_eq(forklog_write(log, r, sizeof r), 0);
    for (unsigned k = 1; k <= 3; k++) {
        char *p = numbered(k);
        cr_assert_eq(mode_of(p), 0640, "%s", p);
        free(p);
    }
    cr_assert_eq(mode_of(logpath), 0640, "the file created by rotation");
    /* A reopen after the file was removed creates it again, with the same mode. */
    cr_assert_eq(unlink(logpath), 0);
    cr_assert_eq(forklog_reopen(log), 0);
    cr_assert_eq(forklog_write(log, r, sizeof r), 0);
    cr_assert_eq(mode_of(logpath), 0640, "the file created by a reopen");
    cr_assert_eq(forklog_close(log), 0);
    umask(old);
}

/* Plants a file outside the log's names and returns its path; symlinks point to it. */
static char *plant_secret(const char *name, const char *content)
{
    char *p = th_path(dir, name);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, content, strlen(content)), (ssize_t)strlen(content));
    close(fd);
    return p;
}

static void assert_untouched(const char *path, const char *content)
{
    size_t len;
    char *buf = th_slurp(path, &len);
    cr_assert_not_null(buf, "%s is gone", path);
    cr_assert_str_eq(buf, content, "%s was written through a symlink", path);
    free(buf);
}

Test(hostile, symlinks_at_rotated_names_are_never_followed_or_replaced)
{
    enum { KEEP = 3 };
    char *secret[KEEP + 1];
    char content[KEEP + 1][32];
    for (unsigned k = 1; k <= KEEP + 1; k++) {
        char name[32];
        snprintf(name, sizeof name, "secret%u", k);
        snprintf(content[k - 1], sizeof content[k - 1], "secret %u\n", k);
        secret[k - 1] = plant_secret(name, content[k - 1]);
        char *link = numbered(k);
        cr_assert_eq(symlink(secret[k - 1], link), 0);
        free(link);
    }
    struct forklog_options o = {.rotate_bytes = 300, .rotate_keep = KEEP};
    forklog *log = open_log(&o);
    char buf[RC_HEAD_MAX + 100];
    for (unsigned q = 0; q < 40; q++)
        cr_assert_eq(rc_write(log, buf, 'R', 0, q, 0, 100), 0);
    cr_assert_eq(forklog_close(log), 0);
    for (unsigned k = 0; k <= KEEP; k++)
        assert_untouched(secret[k], content[k]);
    /* A symlink at path.1 is not the log's: it is never renamed, replaced or followed, so no rotation can happen,
     * and every record is in the current file. */
    struct rc_seen seen;
    rc_seen_init(&seen, 1, 40);
    rc_scan(&seen, logpath, 0);
    for (unsigned k = 1; k <= KEEP; k++) {
        char *p = numbered(k);
        struct stat st;
        cr_assert_eq(lstat(p, &st), 0);
        cr_assert(S_ISLNK(st.st_mode), "%s is no longer the planted symlink", p);
        free(p);
    }
    for (unsigned q = 0; q < 40; q++)
        cr_assert_eq(rc_count(&seen, 0, q), 1, "record %u", q);
    rc_seen_free(&seen);
    for (unsigned k = 0; k <= KEEP; k++)
        free(secret[k]);
}

static void symlink_planted_after_the_rename(int renameat2_errno)
{
    refuse_renameat2 = renameat2_errno;
    const char *content = "not the log\n";
    char *secret = plant_secret("secret", content);
    snprintf(plant_target, sizeof plant_target, "%s", secret);
    struct forklog_options o = {.rotate_bytes = 300, .rotate_keep = 20};
    forklog *log = open_log(&o);
    char buf[RC_HEAD_MAX + 100];
    unsigned q = 0, ok = 0;
    for (; q < 3; q++)
        cr_assert_eq(rc_write(log, buf, 'R', 0, q, 0, 60), 0);
    /* The next record rotates; the symlink appears at path right after path was renamed to path.1. */
    plant_after_rename = 1;
    int rc = rc_write(log, buf, 'R', 0, q++, 0, 60);
    cr_assert_eq(planted, 1, "the test could not plant its symlink");
    cr_assert(rc == 0 || rc == -ELOOP, "rotation against a planted symlink: %s", strerror(-rc));
    ok = rc == 0;
    /* Whatever became of that record, every later one, from this process or a child, goes to a file of the log
     * and none through the link. */
    for (; q < 14; q++)
        cr_assert_eq(rc_write(log, buf, 'R', 0, q, 0, 60), 0, "record %u", q);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        for (unsigned k = 0; k < 10; k++)
            if (rc_write(log, buf, 'R', 1, k, 0, 60) != 0)
                _exit(1);
        _exit(forklog_close(log) == 0 ? 0 : 2);
    }
    cr_assert_eq(th_wait(pid), 0);
    cr_assert_eq(forklog_close(log), 0);
    assert_untouched(secret, content);
    struct rc_seen seen;
    rc_seen_init(&seen, 2, 20);
    mode_of(logpath); /* the planted link is gone from path */
    rc_scan(&seen, logpath, 0);
    for (unsigned k = 1; k <= 20; k++) {
        char *p = numbered(k);
        struct stat st;
        if (lstat(p, &st) == 0) {
            cr_assert(S_ISREG(st.st_mode), "%s is not a regular file", p);
            rc_scan(&seen, p, k);
        }
        free(p);
    }
    cr_assert_eq(seen.records, 3 + ok + 10 + 10, "records that returned 0 are in the files, once");
    fprintf(stderr, "symlink planted after rename: the rotating record returned %d (%s)\n", rc, strerror(-rc));
    rc_seen_free(&seen);
    free(secret);
}

Test(hostile, rotation_never_follows_a_symlink_planted_at_path_after_the_rename)
{
    symlink_planted_after_the_rename(0);
}

/* The same where renameat2(2) is refused: the put-back's link(2) meets the symlink (EEXIST), which it replaces. */
Test(hostile, rotation_never_follows_a_symlink_planted_at_path_without_renameat2)
{
    symlink_planted_after_the_rename(ENOSYS);
}

/* A FIFO (with no reader) appears at path right after the rotation renamed the log's file to path.1: the new file
 * cannot be created nor the FIFO opened. The log's file goes back to path only over nothing but a symlink: the FIFO
 * stays, and the log writes on into its file, under the name path.1. */
static void fifo_planted_after_the_rename(int renameat2_errno)
{
    refuse_renameat2 = renameat2_errno;
    struct forklog_options o = {.rotate_bytes = 300, .rotate_keep = 20};
    forklog *log = open_log(&o);
    char buf[RC_HEAD_MAX + 100];
    unsigned q = 0;
    for (; q < 3; q++)
        cr_assert_eq(rc_write(log, buf, 'R', 0, q, 0, 60), 0);
    plant_after_rename = 2;
    cr_assert_eq(rc_write(log, buf, 'R', 0, q++, 0, 60), 0);
    cr_assert_eq(planted, 1, "the test could not make its FIFO");
    for (; q < 10; q++)
        cr_assert_eq(rc_write(log, buf, 'R', 0, q, 0, 60), 0, "record %u", q);
    cr_assert_eq(forklog_close(log), 0);
    struct stat st;
    cr_assert_eq(lstat(logpath, &st), 0);
    cr_assert(S_ISFIFO(st.st_mode), "the FIFO at path was replaced");
    char *one = numbered(1);
    struct rc_seen seen;
    rc_seen_init(&seen, 1, 16);
    rc_scan(&seen, one, 1);
    for (unsigned k = 0; k < q; k++)
        cr_assert_eq(rc_count(&seen, 0, k), 1, "record %u is in %s %u times", k, one, rc_count(&seen, 0, k));
    cr_assert_eq(seen.records, q);
    rc_seen_free(&seen);
    unlink(logpath);
    free(one);
}

Test(hostile, rotation_puts_the_file_back_over_nothing_another_program_put_at_path)
{
    fifo_planted_after_the_rename(0);
}

/* The same where renameat2(2) is refused, as by a file system without RENAME_NOREPLACE: link(2) fails on the FIFO
 * (EEXIST) and the FIFO stays. */
Test(hostile, rotation_puts_the_file_back_over_nothing_else_without_renameat2)
{
    fifo_planted_after_the_rename(EINVAL);
}

/* Whether RLIMIT_NOFILE, just lowered to the lowest free descriptor, holds as the kernel's does: a file created with
 * O_EXCL under it is refused before it exists. Valgrind keeps a limit of its own, checked after the kernel's open:
 * the file is made, then its descriptor refused, and a rotation's new file would be left at path. */
static bool nofile_limit_holds(void)
{
    char *probe = th_path(dir, "probe");
    int pfd = open(probe, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    struct stat pst;
    const bool holds = pfd < 0 && lstat(probe, &pst) != 0;
    if (pfd >= 0)
        close(pfd);
    if (!holds)
        unlink(probe);
    free(probe);
    return holds;
}

/* A forked child writes record `first` (which opens its own description of the file), then, with no descriptor left
 * (RLIMIT_NOFILE lowered to the lowest free one) and renameat2() failing with renameat2_errno (0: not), record
 * `second` of n bytes of body, which needs a rotation, and closes. Skips the test where the limit is refused or does
 * not hold as the kernel's does (Valgrind keeps a limit of its own). */
static void a_rotation_out_of_descriptors(forklog *log, unsigned first, unsigned second, size_t n, int renameat2_errno)
{
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        char buf[RC_HEAD_MAX + 200];
        if (rc_write(log, buf, 'R', 0, first, 0, 60) != 0)
            _exit(1);
        refuse_renameat2 = renameat2_errno;
        struct rlimit rl, was;
        if (getrlimit(RLIMIT_NOFILE, &was) != 0)
            _exit(2);
        int lowest = dup(0);
        if (lowest < 0)
            _exit(3);
        close(lowest);
        rl = was;
        rl.rlim_cur = (rlim_t)lowest;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0 || !nofile_limit_holds())
            _exit(77);
        if (rc_write(log, buf, 'R', 0, second, 0, n) != 0)
            _exit(4);
        if (setrlimit(RLIMIT_NOFILE, &was) != 0)
            _exit(5);
        _exit(forklog_close(log) == 0 ? 0 : 6);
    }
    int st = th_wait(pid);
    if (st == 77)
        cr_skip_test("RLIMIT_NOFILE does not hold here as the kernel's does (under Valgrind, say)");
    cr_assert_eq(st, 0, "the child that rotated failed at step %d", st);
}

/* Nothing is at path after the rename, but the new file cannot be opened (the process is out of descriptors): the
 * log's file goes back to path, and the record that rotated goes into it with the others, once. */
static void nothing_planted_after_the_rename(int renameat2_errno)
{
    struct forklog_options o = {.rotate_bytes = 300, .rotate_keep = 20};
    forklog *log = open_log(&o);
    char buf[RC_HEAD_MAX + 100];
    unsigned q = 0;
    for (; q < 2; q++)
        cr_assert_eq(rc_write(log, buf, 'R', 0, q, 0, 60), 0);
    a_rotation_out_of_descriptors(log, 2, 3, 60, renameat2_errno);
    q = 4;
    cr_assert_eq(forklog_close(log), 0);
    mode_of(logpath);
    char *one = numbered(1);
    struct stat st1;
    cr_assert(lstat(one, &st1) != 0 && errno == ENOENT, "%s is left after the put-back", one);
    struct rc_seen seen;
    rc_seen_init(&seen, 1, 16);
    rc_scan(&seen, logpath, 0);
    for (unsigned k = 0; k < q; k++)
        cr_assert_eq(rc_count(&seen, 0, k), 1, "record %u is in %s %u times", k, logpath, rc_count(&seen, 0, k));
    cr_assert_eq(seen.records, q);
    rc_seen_free(&seen);
    free(one);
}

Test(hostile, rotation_puts_the_file_back_at_a_free_path)
{
    nothing_planted_after_the_rename(0);
}

Test(hostile, rotation_puts_the_file_back_at_a_free_path_without_renameat2)
{
    nothing_planted_after_the_rename(ENOSYS);
}

/* rotate_keep 1, and path.1 holds the oldest kept records: a rotation replaces path.1 with path. A process with no
 * descriptor left for the new file writes a record that needs the rotation. The rotation cannot be made, and must
 * then delete nothing: the record goes into the current file, and path.1 keeps its records until a rotation is made.
 * (Its renames first put path onto path.1, deleting the file there, and then the log's file back at path.) */
Test(hostile, a_rotation_that_cannot_open_the_new_file_deletes_no_kept_file)
{
    struct forklog_options o = {.rotate_bytes = 300, .rotate_keep = 1};
    forklog *log = open_log(&o);
    char buf[RC_HEAD_MAX + 200];
    char *one = numbered(1);
    unsigned q = 0;
    for (; q < 4; q++) /* three records of 84 bytes fill path; the fourth rotates them to path.1 */
        cr_assert_eq(rc_write(log, buf, 'R', 0, q, 0, 60), 0, "record %u", q);
    cr_assert_eq(access(one, F_OK), 0, "the fourth record did not rotate");
    a_rotation_out_of_descriptors(log, 4, 5, 150, 0); /* 168 + 175 bytes: past rotate_bytes */
    cr_assert_eq(forklog_close(log), 0);
    struct rc_seen seen;
    rc_seen_init(&seen, 1, 8);
    rc_scan(&seen, logpath, 0);
    rc_scan(&seen, one, 1);
    for (unsigned k = 0; k < 6; k++)
        cr_assert_eq(rc_count(&seen, 0, k), 1, "record %u is in the files %u times", k, rc_count(&seen, 0, k));
    cr_assert_eq(seen.records, 6);
    rc_seen_free(&seen);
    free(one);
}

/* The log's file was removed behind its back, and the rotation that a record needs cannot create a new one (no
 * descriptor left): the record fails, and every process leaves the removed file for path. A later record that fits the
 * old file's size must still go to a new file at path, never into the file that has no name. */
Test(hostile, a_rotation_that_cannot_create_the_removed_file_moves_the_log_to_path_all_the_same)
{
    struct forklog_options o = {.rotate_bytes = 1000, .rotate_keep = 5};
    forklog *log = open_log(&o);
    char rec[900];
    memset(rec, 'a', sizeof rec);
    rec[sizeof rec - 1] = '\n';
    cr_assert_eq(forklog_write(log, rec, sizeof rec), 0);
    cr_assert_eq(unlink(logpath), 0);
    struct rlimit was, none;
    cr_assert_eq(getrlimit(RLIMIT_NOFILE, &was), 0);
    int lowest = dup(0);
    cr_assert_geq(lowest, 0);
    close(lowest);
    none = (struct rlimit){(rlim_t)lowest, was.rlim_max};
    cr_assert_eq(setrlimit(RLIMIT_NOFILE, &none), 0);
    if (!nofile_limit_holds()) {
        cr_assert_eq(setrlimit(RLIMIT_NOFILE, &was), 0);
        cr_assert_eq(forklog_close(log), 0);
        cr_skip_test("RLIMIT_NOFILE does not hold here as the kernel's does (under Valgrind, say)");
    }
    memset(rec, 'b', 199);
    rec[199] = '\n';
    int rc = forklog_write(log, rec, 200); /* 900 + 200: past rotate_bytes */
    cr_assert_eq(setrlimit(RLIMIT_NOFILE, &was), 0);
    cr_assert_eq(rc, -EMFILE);
    cr_assert_neq(access(logpath, F_OK), 0, "nothing was created at path");
    cr_assert_eq(forklog_write(log, "small", 5), 0); /* 900 + 6: within rotate_bytes */
    cr_assert_eq(forklog_close(log), 0);
    size_t len;
    char *buf = th_slurp(logpath, &len);
    cr_assert_not_null(buf, "the record went into the removed file: nothing at path");
    cr_assert_str_eq(buf, "small\n");
    free(buf);
}

/* path.1 is the log's file under a second name, which the repair of a put-back killed between its link(2) and its
 * unlink(2) could not remove (a repairer that may not write the directory leaves it so; here the link is made by
 * hand): the next rotation's look at path.1 removes that name. Otherwise every record would be in two files, and with
 * rotate_keep 1 each rotation would rename path onto its own other name, which rename(2) does nothing for, and the
 * file would grow past rotate_bytes for ever. */
Test(hostile, a_rotation_removes_path_1_when_it_is_the_logs_file_under_a_second_name)
{
    struct forklog_options o = {.rotate_bytes = 300, .rotate_keep = 1};
    forklog *log = open_log(&o);
    char buf[RC_HEAD_MAX + 100];
    for (unsigned q = 0; q < 3; q++)
        cr_assert_eq(rc_write(log, buf, 'R', 0, q, 0, 60), 0, "record %u", q);
    char *one = numbered(1);
    cr_assert_eq(link(logpath, one), 0);
    const unsigned n = 40;
    for (unsigned q = 3; q < n; q++)
        cr_assert_eq(rc_write(log, buf, 'R', 0, q, 0, 60), 0, "record %u", q);
    cr_assert_eq(forklog_close(log), 0);
    struct stat s0, s1;
    cr_assert_eq(lstat(logpath, &s0), 0);
    cr_assert_eq(lstat(one, &s1), 0);
    cr_assert(s0.st_ino != s1.st_ino || s0.st_dev != s1.st_dev, "%s is %s under another name", one, logpath);
    struct rc_seen seen;
    rc_seen_init(&seen, 1, n);
    long long size = rc_scan(&seen, logpath, 0);
    cr_assert_leq(size, 300, "%s has %lld bytes", logpath, size);
    size = rc_scan(&seen, one, 1);
    cr_assert_leq(size, 300, "%s has %lld bytes", one, size);
    for (unsigned q = 0; q < n; q++) /* rotated out of the chain (rotate_keep 1), or there once */
        cr_assert_leq(rc_count(&seen, 0, q), 1, "record %u is in the files %u times", q, rc_count(&seen, 0, q));
    for (unsigned q = n - 3; q < n; q++)
        cr_assert_eq(rc_count(&seen, 0, q), 1, "record %u is in the files %u times", q, rc_count(&seen, 0, q));
    rc_seen_free(&seen);
    free(one);
}

/* A process out of descriptors rotates without renameat2, and is killed between the link(2) that puts the log's file
 * back at path and the unlink(2) of path.1: the one file has both names. A process of its own forklog_open() writes
 * on: no record may be in two files, and the rotations that follow must move the file, never rename it onto its
 * other name (a no-op) and write on past rotate_bytes. */
static void put_back_killed_between_link_and_unlink(unsigned keep)
{
    struct forklog_options o = {.rotate_bytes = 300, .rotate_keep = keep};
    forklog *log = open_log(&o); /* the survivor's own handle, opened first: the segment stays in use */
    char buf[RC_HEAD_MAX + 100];
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        rc_child();
        forklog *mine = NULL;
        if (forklog_open(&mine, logpath, &o) != 0)
            _exit(1);
        for (unsigned q = 0; q < 3; q++)
            if (rc_write(mine, buf, 'R', 0, q, 0, 60) != 0)
                _exit(2);
        refuse_renameat2 = ENOSYS;
        struct rlimit rl;
        if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
            _exit(3);
        int lowest = dup(0);
        if (lowest < 0)
            _exit(4);
        close(lowest);
        rl.rlim_cur = (rlim_t)lowest;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            _exit(77);
        if (!nofile_limit_holds())
            _exit(77);
        kill_in_unlink = "hostile.log.1";
        (void)rc_write(mine, buf, 'R', 0, 3, 0, 60); /* the rotation's put-back kills it */
        _exit(5);
    }
    int st = th_wait_for(pid, 20);
    if (st == 77)
        cr_skip_test("RLIMIT_NOFILE does not hold here as the kernel's does (under Valgrind, say)");
    cr_assert_eq(st, 128 + SIGKILL, "the child was to die in its put-back, ended with %d", st);
    const unsigned n = 40;
    /* A record short enough to need no rotation (three of 60 bytes are in the file, the killed fourth never
     * was): the repair after the death, before it, leaves the file one name. */
    cr_assert_eq(rc_write(log, buf, 'R', 0, 4, 0, 0), 0, "record 4");
    struct stat s0, sk;
    char *one = numbered(1);
    cr_assert_eq(lstat(logpath, &s0), 0);
    cr_assert(lstat(one, &sk) != 0 || sk.st_ino != s0.st_ino || sk.st_dev != s0.st_dev,
              "%s is %s under another name after the repair", one, logpath);
    free(one);
    for (unsigned q = 5; q < n; q++)
        cr_assert_eq(rc_write(log, buf, 'R', 0, q, 0, 60), 0, "record %u", q);
    cr_assert_eq(forklog_close(log), 0);
    struct rc_seen seen;
    rc_seen_init(&seen, 1, n);
    cr_assert_eq(lstat(logpath, &s0), 0);
    long long size = rc_scan(&seen, logpath, 0);
    cr_assert_leq(size, 300, "%s has %lld bytes", logpath, size);
    for (unsigned k = 1; k <= keep; k++) {
        char *name = numbered(k);
        if (lstat(name, &sk) == 0)
            cr_assert(sk.st_ino != s0.st_ino || sk.st_dev != s0.st_dev, "%s is %s under another name", name, logpath);
        size = rc_scan(&seen, name, k);
        cr_assert_leq(size, 300, "%s has %lld bytes", name, size);
        free(name);
    }
    for (unsigned q = n - 3; q < n; q++) /* the last three records: in path or path.1 with keep 1 */
        cr_assert_eq(rc_count(&seen, 0, q), 1, "record %u is in the files %u times", q, rc_count(&seen, 0, q));
    for (unsigned q = 0; q < n; q++)
        if (q != 3) /* never acknowledged: once or not at all; gone only when rotated out of the chain */
            cr_assert_leq(rc_count(&seen, 0, q), 1, "record %u is in the files %u times", q, rc_count(&seen, 0, q));
    for (unsigned q = 0; keep == 20 && q < n; q++)
        if (q != 3)
            cr_assert_eq(rc_count(&seen, 0, q), 1, "record %u is in the files %u times", q, rc_count(&seen, 0, q));
    cr_assert_leq(rc_count(&seen, 0, 3), 1, "record 3 is in the files %u times", rc_count(&seen, 0, 3));
    rc_seen_free(&seen);
}

Test(hostile, a_put_back_killed_between_link_and_unlink_leaves_one_name)
{
    put_back_killed_between_link_and_unlink(20);
}

/* With rotate_keep 1, path.1 is the whole chain: the next rotation renames path onto path.1, its own other name. */
Test(hostile, a_put_back_killed_between_link_and_unlink_leaves_one_name_keep_1)
{
    put_back_killed_between_link_and_unlink(1);
}

static void become_nobody(void)
{
    if (geteuid() != 0)
        return;
    struct passwd *pw = getpwnam("nobody");
    uid_t uid = pw ? pw->pw_uid : 65534;
    gid_t gid = pw ? pw->pw_gid : 65534;
    if (setgid(gid) != 0 || setuid(uid) != 0)
        _exit(90);
}

Test(hostile, file_of_another_user)
{
    /* The file belongs to root (mode 0644) in a directory only root may write. An unprivileged process: */
    chmod(dir, 0755);
    int fd = open(logpath, O_WRONLY | O_CREAT, 0644);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, "root\n", 5), 5);
    close(fd);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        become_nobody();
        forklog *log = (forklog *)1;
        int rc = forklog_open(&log, logpath, NULL);
        _exit(rc == -EACCES && log == NULL ? 0 : 1); /* cannot open it for writing */
    }
    cr_assert_eq(th_wait(pid), 0, "expected -EACCES opening another user's 0644 file");

    /* The same file made writable by all (0666): it opens (with a private segment) and takes records, but size-based
     * rotation needs to rename in the directory, which the process may not: the record that would rotate goes into the
     * current file instead (nothing is lost because a rotation could not happen), and the file is not rotated. */
    cr_assert_eq(chmod(logpath, 0666), 0);
    pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        become_nobody();
        /* It may not create the log's segment file in that directory either: it says so (that the file could not
         * be created, not opened: there is none), and a private segment is the way to write anyway. */
        struct forklog_options o = {.rotate_bytes = 100};
        forklog *log;
        char why[256];
        o.error = why;
        o.error_size = sizeof why;
        if (forklog_open(&log, logpath, &o) != -EACCES || !strstr(why, "cannot create the log's segment file") ||
            !strstr(why, ".hostile.log.forklog") || !strstr(why, "FORKLOG_PRIVATE"))
            _exit(6);
        o.flags = FORKLOG_PRIVATE;
        if (forklog_open(&log, logpath, &o) != 0)
            _exit(1);
        char r[50];
        fill(r, 'n', sizeof r);
        if (forklog_write(log, r, sizeof r) != 0) /* 5 + 50 <= 100: no rotation needed */
            _exit(2);
        if (forklog_write(log, r, sizeof r) != 0) /* 105 > 100: rotation, not permitted: the current file */
            _exit(3);
        if (forklog_write(log, r, sizeof r) != 0)
            _exit(4);
        _exit(forklog_close(log) == 0 ? 0 : 5);
    }
    int st = th_wait(pid);
    cr_assert_eq(st, 0, "the unprivileged writer failed at step %d", st);
    size_t len;
    char *buf = th_slurp(logpath, &len);
    cr_assert_eq(len, 5 + 3 * 50, "every record is in the current file");
    cr_assert_eq(strncmp(buf, "root\nnnnn", 9), 0);
    free(buf);
    char *one = numbered(1);
    cr_assert_neq(access(one, F_OK), 0, "no rotated file could have been made");
    free(one);
}
