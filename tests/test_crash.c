/* SPDX-License-Identifier: MIT */
/* Crash consistency: a dead lock holder never blocks the others, and a writer killed at any point of a record leaves
 * no fragment. The first tests stop or kill a real writer at a named step of the record path (a crash point), in
 * each state the write, flush and rotation can leave; the chaos tests SIGKILL real writers at random moments and
 * check that the file holds only whole records and every acknowledged one. Children never assert: they report
 * through their exit status, a pipe or shared memory. */
#include "points.h"
#include "records.h"

#include <dlfcn.h>
#include <stdarg.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <time.h>

static char *dir, *logpath;

/* pthread_mutex_consistent() as the library sees it: this definition takes the place of libc's for the whole
 * program, and fails with EINVAL in a process that set fail_consistent. */
static int fail_consistent;

int pthread_mutex_consistent(pthread_mutex_t *mu)
{
    static int (*real)(pthread_mutex_t *);
    if (fail_consistent)
        return EINVAL;
    if (!real)
        *(void **)&real = dlsym(RTLD_NEXT, "pthread_mutex_consistent");
    return real ? real(mu) : EINVAL;
}

/* open(2) as the library sees it (open64 with 64-bit file offsets): when fail_open_for_writing is set, an open for
 * writing fails with that errno, as an open of path may for reasons of the caller's own (EBUSY: a terminal in
 * exclusive mode at path; ETIMEDOUT: a file on a network file system). */
static int fail_open_for_writing;

static int open_as(const char *sym, const char *name, int flags, va_list ap)
{
    mode_t mode = (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE ? (mode_t)va_arg(ap, unsigned) : 0;
    if (fail_open_for_writing && (flags & O_ACCMODE) != O_RDONLY) {
        errno = fail_open_for_writing;
        return -1;
    }
    int (*real)(const char *, int, ...);
    *(void **)&real = dlsym(RTLD_NEXT, sym);
    return real ? real(name, flags, mode) : -1;
}

int open(const char *name, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    int fd = open_as("open", name, flags, ap);
    va_end(ap);
    return fd;
}

int open64(const char *name, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    int fd = open_as("open64", name, flags, ap);
    va_end(ap);
    return fd;
}

static void setup(void)
{
    dir = th_tmpdir();
    logpath = th_path(dir, "crash.log");
    rc_init();
}

static void teardown(void)
{
    th_rmdir(dir);
    free(logpath);
    free(dir);
}

TestSuite(crash, .init = setup, .fini = teardown);

static forklog *open_log(const struct forklog_options *o)
{
    forklog *log = NULL;
    int rc = forklog_open(&log, logpath, o);
    cr_assert_eq(rc, 0, "forklog_open: %s", strerror(-rc));
    return log;
}

static off_t file_size(const char *path)
{
    struct stat st;
    cr_assert_eq(stat(path, &st), 0, "%s: %s", path, strerror(errno));
    return st.st_size;
}

static char *read_all(size_t *len)
{
    char *buf = th_slurp(logpath, len);
    cr_assert_not_null(buf, "log file missing");
    return buf;
}

/* A real writer that dies, or stops holding the lock, at one step of the record path (a crash point, compiled into
 * the forklog_crashpoints library this test links). */
enum holder_act {
    HOLD_IDLE,            /* stops with the lock taken, nothing started (LOCK_HELD); the test kills it */
    HOLD_WRITING_NOTHING, /* stops with state WRITING and target set, nothing written (WRITE_BEGIN); killed */
    HOLD_WRITING_HALF,    /* dies with half of its record written (WRITE_TORN) */
    HOLD_WRITING_ALL,     /* dies with the whole record written, before committing it (WRITE_DONE) */
    HOLD_ROTATING,        /* dies after renaming path to path.1, before creating path (ROTATE_RENAMED) */
    HOLD_FLUSHING_HALF    /* forklog_flush(): dies with half of the shared buffer written (WRITE_TORN) */
};

static pid_t start_holder(forklog *log, enum holder_act act, const char *rec, size_t len)
{
    static const struct {
        enum fl__crash_point cp;
        enum fl__crash_action action;
    } at[] = {
        [HOLD_IDLE] = {FL__CP_LOCK_HELD, FL__CRASH_STOP},
        [HOLD_WRITING_NOTHING] = {FL__CP_WRITE_BEGIN, FL__CRASH_STOP},
        [HOLD_WRITING_HALF] = {FL__CP_WRITE_TORN, FL__CRASH_KILL},
        [HOLD_WRITING_ALL] = {FL__CP_WRITE_DONE, FL__CRASH_KILL},
        [HOLD_ROTATING] = {FL__CP_ROTATE_RENAMED, FL__CRASH_KILL},
        [HOLD_FLUSHING_HALF] = {FL__CP_WRITE_TORN, FL__CRASH_KILL},
    };
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        fl__crash_arm(at[act].cp, 1, at[act].action);
        int rc = act == HOLD_FLUSHING_HALF ? forklog_flush(log) : forklog_write(log, rec, len);
        _exit(rc == 0 ? 50 : 51); /* the crash point was not reached */
    }
    if (at[act].action == FL__CRASH_STOP)
        cr_assert(cp_wait_stopped(pid, 10), "the holder did not stop at %s", fl__crash_name(at[act].cp));
    return pid;
}

/* ---- promise 1: a dead lock holder never blocks the others ------------------------------------------------ */

Test(crash, sigkilled_holder_others_proceed_at_once)
{
    forklog *log = open_log(NULL);
    cr_assert_eq(forklog_write(log, "before", 6), 0);
    pid_t holder = start_holder(log, HOLD_WRITING_NOTHING, "the holder's record", 19);

    /* Writers that queue up behind the holder: each reports how long its call took, through a pipe. */
    enum { WAITERS = 3 };
    int p[2];
    cr_assert_eq(pipe(p), 0);
    pid_t w[WAITERS];
    for (int i = 0; i < WAITERS; i++) {
        w[i] = fork();
        cr_assert_neq(w[i], -1);
        if (w[i] == 0) {
            close(p[0]);
            char rec[32];
            int n = snprintf(rec, sizeof rec, "waiter %d", i);
            int rc = forklog_write(log, rec, (size_t)n);
            /* The lock must now be usable as a plain robust mutex: never ENOTRECOVERABLE. */
            int lk = pthread_mutex_lock(&log->seg->mu);
            if (lk == 0)
                pthread_mutex_unlock(&log->seg->mu);
            double t = th_now_s();
            if (write(p[1], &t, sizeof t) != sizeof t)
                _exit(4);
            _exit(rc != 0 ? 1 : lk != 0 ? 2 : forklog_close(log) != 0 ? 3 : 0);
        }
    }
    close(p[1]);
    usleep(200 * 1000); /* the waiters are now blocked on the lock */
    int got_early = 0;
    {
        /* Nobody may have got through while the holder lives. */
        int fl = fcntl(p[0], F_GETFL);
        fcntl(p[0], F_SETFL, fl | O_NONBLOCK);
        double t;
        got_early = read(p[0], &t, sizeof t) > 0;
        fcntl(p[0], F_SETFL, fl);
    }
    cr_assert_not(got_early, "a writer got the lock while the holder was alive");

    double t0 = th_now_s();
    cr_assert_eq(kill(holder, SIGKILL), 0);
    cr_assert_eq(th_wait(holder), 128 + SIGKILL);
    int rc = forklog_write(log, "after", 5);
    double parent_s = th_now_s() - t0;
    cr_assert_eq(rc, 0, "forklog_write after the holder died: %s", strerror(-rc));
    for (int i = 0; i < WAITERS; i++) {
        double t;
        cr_assert_eq(read(p[0], &t, sizeof t), (ssize_t)sizeof t, "waiter did not report");
        cr_assert_lt(t - t0, 2.0, "a waiter needed %.3f s after the holder died", t - t0);
    }
    close(p[0]);
    for (int i = 0; i < WAITERS; i++)
        cr_assert_eq(th_wait_for(w[i], 10), 0, "waiter %d failed", i);
    cr_assert_lt(parent_s, 2.0, "the parent needed %.3f s after the holder died", parent_s);
    cr_assert_eq(log->seg->repairs, 1, "exactly one EOWNERDEAD repair, got %llu",
                 (unsigned long long)log->seg->repairs);
    cr_assert_eq(pthread_mutex_lock(&log->seg->mu), 0, "the lock is consistent again");
    pthread_mutex_unlock(&log->seg->mu);
    cr_assert_eq(forklog_close(log), 0);

    size_t len;
    char *buf = read_all(&len);
    cr_assert_eq(th_count_lines(buf, len), 2 + WAITERS);
    cr_assert_eq(strncmp(buf, "before\n", 7), 0);
    cr_assert_not_null(strstr(buf, "\nafter\n"), "the parent's record missing: %s", buf);
    for (int i = 0; i < WAITERS; i++) {
        char want[32];
        snprintf(want, sizeof want, "\nwaiter %d\n", i);
        cr_assert_not_null(strstr(buf, want), "waiter %d's record missing: %s", i, buf);
    }
    free(buf);
}

Test(crash, idle_holder_killed_nothing_to_repair)
{
    forklog *log = open_log(NULL);
    cr_assert_eq(forklog_write(log, "a", 1), 0);
    pid_t holder = start_holder(log, HOLD_IDLE, "never", 5);
    cr_assert_eq(kill(holder, SIGKILL), 0);
    cr_assert_eq(th_wait(holder), 128 + SIGKILL);
    cr_assert_eq(forklog_write(log, "b", 1), 0);
    cr_assert_eq(forklog_close(log), 0);
    size_t len;
    char *buf = read_all(&len);
    cr_assert_str_eq(buf, "a\nb\n");
    free(buf);
}

Test(crash, a_holder_that_cannot_make_the_lock_consistent_does_not_keep_it)
{
    /* The holder dies; the next locker's pthread_mutex_consistent() fails. Its call fails, and it must not keep
     * the lock: another writer gets an answer at once (the lock cannot be recovered then: -ENOTRECOVERABLE), not a
     * wait for as long as that process lives. Once every user closed the log, the next open builds a new lock. */
    forklog *log = open_log(NULL);
    cr_assert_eq(forklog_write(log, "a", 1), 0);
    pid_t holder = start_holder(log, HOLD_IDLE, "never", 5);
    cr_assert_eq(kill(holder, SIGKILL), 0);
    cr_assert_eq(th_wait(holder), 128 + SIGKILL);
    int go[2], done[2];
    cr_assert_eq(pipe(go), 0);
    cr_assert_eq(pipe(done), 0);
    pid_t failer = fork();
    cr_assert_neq(failer, -1);
    if (failer == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        fail_consistent = 1;
        int rc = forklog_write(log, "not consistent", 14);
        char c = rc == -EINVAL ? 0 : 1;
        if (write(done[1], &c, 1) != 1)
            _exit(3);
        /* Alive until the other writer had its answer. */
        if (read(go[0], &c, 1) != 1)
            _exit(4);
        _exit(0);
    }
    char c = 9;
    cr_assert_eq(read(done[0], &c, 1), 1);
    cr_assert_eq(c, 0, "the call whose pthread_mutex_consistent() failed did not return -EINVAL");
    pid_t other = fork();
    cr_assert_neq(other, -1);
    if (other == 0)
        _exit(forklog_write(log, "other", 5) == -ENOTRECOVERABLE ? 0 : 1);
    int st = th_wait_for(other, 2);
    cr_assert_eq(write(go[1], &c, 1), 1);
    cr_assert_eq(th_wait_for(failer, 10), 0);
    cr_assert_eq(st, 0, "another writer did not get -ENOTRECOVERABLE within 2 s (status %d)", st);
    cr_assert_eq(forklog_close(log), 0);
    log = open_log(NULL);
    cr_assert_eq(forklog_write(log, "b", 1), 0);
    cr_assert_eq(forklog_close(log), 0);
    size_t len;
    char *buf = read_all(&len);
    cr_assert_str_eq(buf, "a\nb\n");
    free(buf);
}

/* The thread ends holding the lock while its process lives on, as one cancelled at its write(2) does: state WRITING,
 * target and the held hint set, nothing written (WRITE_BEGIN, where the thread alone ends). Returns (NULL) only
 * from there. */
static void *hold_and_exit(void *arg)
{
    forklog *log = arg;
    fl__crash_arm(FL__CP_WRITE_BEGIN, 1, FL__CRASH_EXIT);
    int rc = forklog_write(log, "never", 5);
    fl__crash_arm(FL__CP_WRITE_BEGIN, 0, 0);
    return (void *)(intptr_t)(rc == 0 ? 1 : 2);
}

Test(crash, holder_thread_exits_holding_the_lock)
{
    forklog *log = open_log(NULL);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, hold_and_exit, log), 0);
    void *ret;
    cr_assert_eq(pthread_join(th, &ret), 0);
    cr_assert_eq((intptr_t)ret, 0, "the thread did not end at its write");
    cr_assert(log->seg->state == FL__WRITING && atomic_load(&log->seg->held), "the thread left no write begun");
    /* The thread is gone but its process lives: the lock counts as dead all the same, and its write is repaired. */
    double t0 = th_now_s();
    int rc = forklog_write(log, "after thread death", 18);
    cr_assert_eq(rc, 0, "%s", strerror(-rc));
    cr_assert_lt(th_now_s() - t0, 2.0);
    cr_assert_eq(log->seg->repairs, 1);

    /* The same from a child's thread, with the parent waiting. */
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        pthread_t t2;
        if (pthread_create(&t2, NULL, hold_and_exit, log) != 0 || pthread_join(t2, &ret) != 0 || ret != NULL)
            _exit(1);
        int crc = forklog_write(log, "child after its thread died", 27);
        _exit(crc == 0 && forklog_close(log) == 0 ? 0 : 2);
    }
    cr_assert_eq(th_wait_for(pid, 10), 0);
    cr_assert_eq(forklog_write(log, "parent", 6), 0);
    cr_assert_eq(log->seg->repairs, 2);
    cr_assert_eq(forklog_close(log), 0);
    size_t len;
    char *buf = read_all(&len);
    cr_assert_str_eq(buf, "after thread death\nchild after its thread died\nparent\n");
    free(buf);
}

Test(crash, repairer_dying_before_consistent_is_repaired_again)
{
    forklog *log = open_log(NULL);
    cr_assert_eq(forklog_write(log, "x", 1), 0);
    char rec[1000];
    memset(rec, 'h', sizeof rec);
    pid_t first = start_holder(log, HOLD_WRITING_HALF, rec, sizeof rec);
    cr_assert_eq(th_wait(first), 128 + SIGKILL);
    /* A second writer gets EOWNERDEAD and dies before it repairs or calls pthread_mutex_consistent(). */
    pid_t second = cp_writer(log, "second", FL__CP_LOCK_ACQUIRED, 1);
    cr_assert_eq(th_wait(second), 128 + SIGKILL);
    cr_assert_eq(log->seg->repairs, 0, "the second writer died before its repair");
    cr_assert_eq(forklog_write(log, "y", 1), 0);
    cr_assert_eq(log->seg->repairs, 1, "the third writer repaired");
    cr_assert_eq(forklog_close(log), 0);
    size_t len;
    char *buf = read_all(&len);
    cr_assert_str_eq(buf, "x\ny\n");
    free(buf);
}

/* ---- promise 2: a torn record is cut --------------------------------------------------------------------- */

Test(crash, torn_record_is_cut_by_the_next_writer)
{
    forklog *log = open_log(NULL);
    cr_assert_eq(forklog_write(log, "before", 6), 0);
    char *rec = malloc(RC_HEAD_MAX + RC_MAX_PAYLOAD);
    size_t len = rc_build(rec, 'R', 1, 0, 0, RC_MAX_PAYLOAD - RC_HEAD_MAX);
    rec[len++] = '\n';
    pid_t holder = start_holder(log, HOLD_WRITING_HALF, rec, len);
    cr_assert_eq(th_wait(holder), 128 + SIGKILL);
    cr_assert_eq(file_size(logpath), (off_t)(7 + len / 2), "the dead writer left half a record in the file");
    cr_assert_eq(forklog_write(log, "next", 4), 0);
    cr_assert_eq(forklog_close(log), 0);
    size_t flen;
    char *buf = read_all(&flen);
    cr_assert_str_eq(buf, "before\nnext\n", "the fragment must be cut (file size %zu)", flen);
    free(buf);
    free(rec);
}

Test(crash, torn_record_cut_when_a_reopen_is_pending)
{
    /* A forklog_reopen() (say logrotate's SIGHUP) lands between the death and the repair: the fragment is in the
     * file of the current generation and must still be cut, before the reopen is acted on. */
    forklog *log = open_log(NULL);
    cr_assert_eq(forklog_write(log, "before", 6), 0);
    char rec[5000];
    size_t len = rc_build(rec, 'R', 1, 0, 0, 4000);
    rec[len++] = '\n';
    pid_t holder = start_holder(log, HOLD_WRITING_HALF, rec, len);
    cr_assert_eq(th_wait(holder), 128 + SIGKILL);
    cr_assert_eq(forklog_reopen(log), 0);
    cr_assert_eq(file_size(logpath), (off_t)(7 + len / 2));
    cr_assert_eq(forklog_write(log, "next", 4), 0);
    cr_assert_eq(forklog_close(log), 0);
    size_t flen;
    char *buf = read_all(&flen);
    cr_assert_str_eq(buf, "before\nnext\n", "the fragment must be cut (file size %zu)", flen);
    free(buf);
}

Test(crash, a_holder_killed_while_it_takes_a_reopen_request_does_not_lose_it)
{
    /* logrotate renames the log and asks for a reopen (nocreate, SIGHUP); the first lock holder after the request
     * dies halfway through turning it into a new generation. forklog_reopen() returned 0, so every process must
     * still move to path before its next record: the request must be neither lost with the dead holder nor left
     * for ever to the renamed file. */
    forklog *log = open_log(NULL);
    cr_assert_eq(forklog_write(log, "one", 3), 0);
    char *old = th_path(dir, "crash.log.1");
    cr_assert_eq(rename(logpath, old), 0);
    cr_assert_eq(forklog_reopen(log), 0);
    pid_t holder = fork();
    cr_assert_neq(holder, -1);
    if (holder == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        fl__crash_arm(FL__CP_REOPEN_TAKEN, 1, FL__CRASH_KILL);
        _exit(forklog_write(log, "dead", 4) == 0 ? 50 : 51); /* the crash point was not reached */
    }
    cr_assert_eq(th_wait(holder), 128 + SIGKILL, "the holder did not die at REOPEN_TAKEN");
    pid_t child = fork();
    cr_assert_neq(child, -1);
    if (child == 0)
        _exit(forklog_write(log, "two", 3) == 0 && forklog_close(log) == 0 ? 0 : 1);
    cr_assert_eq(th_wait(child), 0);
    cr_assert_eq(forklog_write(log, "three", 5), 0);
    cr_assert_eq(forklog_close(log), 0);
    size_t len;
    char *buf = th_slurp(old, &len);
    cr_assert_not_null(buf);
    cr_assert_str_eq(buf, "one\n", "records written after the reopen returned went to the renamed file");
    free(buf);
    buf = th_slurp(logpath, &len);
    cr_assert_not_null(buf, "nobody reopened %s after forklog_reopen() returned", logpath);
    cr_assert_str_eq(buf, "two\nthree\n");
    free(buf);
    free(old);
}

Test(crash, completed_write_of_a_dead_holder_is_kept)
{
    forklog *log = open_log(NULL);
    cr_assert_eq(forklog_write(log, "before", 6), 0);
    pid_t holder = start_holder(log, HOLD_WRITING_ALL, "whole record\n", 13);
    cr_assert_eq(th_wait(holder), 128 + SIGKILL);
    cr_assert_eq(forklog_write(log, "next", 4), 0);
    cr_assert_eq(forklog_close(log), 0);
    size_t len;
    char *buf = read_all(&len);
    cr_assert_str_eq(buf, "before\nwhole record\nnext\n");
    free(buf);
}

/* ---- a file moved away and replaced without forklog_reopen() ------------------------------------------------ */

/* logpath + ".1", malloc'd. */
static char *moved_name(void)
{
    size_t n = strlen(logpath) + 3;
    char *p = malloc(n);
    cr_assert_not_null(p);
    snprintf(p, n, "%s.1", logpath);
    return p;
}

/* Moves the log's file to path.1 and creates an empty file at path, as logrotate's `create` or a move by hand
 * does, with no forklog_reopen(). */
static void move_and_replace(const char *moved)
{
    cr_assert_eq(rename(logpath, moved), 0);
    int fd = open(logpath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    cr_assert_geq(fd, 0, "create %s: %s", logpath, strerror(errno));
    close(fd);
}

/* A process that opens the log afresh (it joins the segment) and writes `rec`; with `torn`, it dies with half of
 * the record written (WRITE_TORN). Exits 0 when its call returned 0. */
static pid_t new_opener(const char *rec, int torn)
{
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        forklog *j;
        if (forklog_open(&j, logpath, NULL) < 0)
            _exit(2);
        if (torn)
            fl__crash_arm(FL__CP_WRITE_TORN, 1, FL__CRASH_KILL);
        _exit(forklog_write(j, rec, strlen(rec)) == 0 && forklog_close(j) == 0 ? 0 : 1);
    }
    return pid;
}

static void assert_file_is(const char *path, const char *want)
{
    size_t len;
    char *buf = th_slurp(path, &len);
    cr_assert_not_null(buf, "%s missing", path);
    cr_assert_str_eq(buf, want, "%s holds:\n%s", path, buf);
    free(buf);
}

/* Writes `content` to path, replacing the file. */
static void put_file(const char *path, const char *content)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    cr_assert_geq(fd, 0, "create %s: %s", path, strerror(errno));
    cr_assert_eq(write(fd, content, strlen(content)), (ssize_t)strlen(content));
    close(fd);
}

/* A writer forked from log (cp_writer) that dies at point `cp` while writing `rec` (a whole line). */
static void die_writing(forklog *log, enum fl__crash_point cp, const char *rec)
{
    cr_assert_eq(th_wait(cp_writer(log, rec, cp, 1)), 128 + SIGKILL, "the writer did not die at %s",
                 fl__crash_name(cp));
}

/* The generation's file is cut short behind the log's back (`: > app.log`) while the process that moved the log to
 * it is gone and the others are idle on an older generation. A new opener finds the file it opened has the
 * generation's inode and device but not its size: it is not that file as the log knows it, and the new opener starts
 * a new generation on it instead of appending with the old size. Its torn record is then cut by the next holder.
 * (The same holds for a file removed and another created at path with the freed inode number.) */
Test(crash, a_file_cut_short_behind_the_logs_back_is_not_taken_with_its_old_size)
{
    forklog *idle = open_log(NULL);
    cr_assert_eq(forklog_write(idle, "d1", 2), 0);
    char *moved = moved_name();
    cr_assert_eq(rename(logpath, moved), 0);
    cr_assert_eq(forklog_reopen(idle), 0);
    cr_assert_eq(th_wait(new_opener("c1, the record that moves the log to a new file\n", 0)), 0);
    cr_assert_eq(truncate(logpath, 0), 0);
    cr_assert_eq(th_wait(new_opener("c2, killed half way through its write\n", 1)), 128 + SIGKILL);
    cr_assert_eq(forklog_write(idle, "d2", 2), 0);
    cr_assert_eq(forklog_close(idle), 0);
    assert_file_is(moved, "d1\n");
    assert_file_is(logpath, "d2\n");
    free(moved);
}

/* A writer dies mid-record, and logrotate renames the log (with `create`, or not) before anybody else writes and
 * before it asks for a reopen. The next holder is a process that opened the log by name and has not written yet:
 * its descriptor is the renamed file, which it repairs (the fragment cut) and writes, as the log's other processes
 * do until the reopen. A dead holder's completed write is kept there too; after the reopen, records go to path. */
Test(crash, a_joiner_repairs_the_file_renamed_after_a_death_before_its_first_record)
{
    for (int create = 0; create < 2; create++) {
        char *moved = moved_name();
        unlink(logpath);
        unlink(moved);
        forklog *log = open_log(NULL);
        cr_assert_eq(forklog_write(log, "A0", 2), 0);
        int go[2], ready[2];
        cr_assert_eq(pipe(go), 0);
        cr_assert_eq(pipe(ready), 0);
        pid_t joiner = fork();
        cr_assert_neq(joiner, -1);
        if (joiner == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            forklog *j;
            char c;
            if (forklog_open(&j, logpath, NULL) != 0 || write(ready[1], "r", 1) != 1 || read(go[0], &c, 1) != 1)
                _exit(2);
            _exit(forklog_write(j, "J0", 2) == 0 && forklog_close(j) == 0 ? 0 : 1);
        }
        char c;
        cr_assert_eq(read(ready[0], &c, 1), 1, "the joiner did not open the log");
        close(ready[0]);
        close(ready[1]);
        char torn[1001];
        memset(torn, 'W', sizeof torn - 2);
        torn[sizeof torn - 2] = '\n';
        torn[sizeof torn - 1] = '\0';
        die_writing(log, FL__CP_WRITE_TORN, torn);
        cr_assert_eq(rename(logpath, moved), 0);
        if (create)
            put_file(logpath, "");
        cr_assert_eq(write(go[1], "g", 1), 1);
        cr_assert_eq(th_wait(joiner), 0, "the joiner's record failed");
        close(go[0]);
        close(go[1]);
        cr_assert_eq(forklog_write(log, "A1", 2), 0);
        die_writing(log, FL__CP_WRITE_DONE, "W2\n");
        cr_assert_eq(forklog_write(log, "A2", 2), 0);
        cr_assert_eq(forklog_reopen(log), 0);
        cr_assert_eq(forklog_write(log, "A3", 2), 0);
        cr_assert_eq(forklog_close(log), 0);
        assert_file_is(moved, "A0\nJ0\nA1\nW2\nA2\n");
        assert_file_is(logpath, "A3\n");
        free(moved);
    }
}

/* A writer dies mid-record, and logrotate renames the log and creates a new one; the next holder is a process on an
 * older generation (it has not written since a reopen), whose descriptor is not the dead holder's file.
 * When it can open path (`no_fd` 0), it finds another file there: the dead holder's file is out of its reach. The
 * fragment stays in the renamed file, and nobody may append there again with a size that no longer says where that
 * file ends (a later cut back to it would take the records written since): every process moves to the file at path
 * before its next record.
 * When it can open no descriptor (`no_fd` EMFILE), or its open of path fails otherwise (`no_fd` EBUSY or ETIMEDOUT,
 * which must not read as a lock that another process holds), it cannot tell whether path is still the dead holder's
 * file: it changes nothing and its record fails with that error. The next holder, whose descriptor is the renamed
 * file, cuts the fragment there, and the log goes on in that file until a reopen. */
static void unreachable_after_a_death(int no_fd)
{
    char *old = th_path(dir, "crash.log.old");
    char *moved = moved_name();
    forklog *log = open_log(NULL);
    cr_assert_eq(forklog_write(log, "A0", 2), 0);
    int go[2];
    cr_assert_eq(pipe(go), 0);
    pid_t older = fork(); /* stays on the first generation */
    cr_assert_neq(older, -1);
    if (older == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        char c;
        if (read(go[0], &c, 1) != 1)
            _exit(2);
        if (no_fd == EBUSY || no_fd == ETIMEDOUT) {
            fail_open_for_writing = no_fd;
        } else if (no_fd) {
            struct rlimit rl;
            if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
                _exit(3);
            rl.rlim_cur = 64;
            if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
                _exit(77); /* refused here (Valgrind keeps the limit of its own) */
            while (dup(0) >= 0) {
            }
            if (open("/dev/null", O_RDONLY | O_CLOEXEC) >= 0)
                _exit(77); /* the limit does not hold here (Valgrind keeps descriptors of its own) */
        }
        int rc = forklog_write(log, "C0", 2);
        _exit(no_fd ? (rc == -no_fd ? 0 : 4) : rc == 0 ? 0 : 5);
    }
    cr_assert_eq(rename(logpath, old), 0);
    cr_assert_eq(forklog_reopen(log), 0);
    cr_assert_eq(forklog_write(log, "A1", 2), 0);
    die_writing(log, FL__CP_WRITE_TORN, "a record that dies half way through\n");
    cr_assert_eq(rename(logpath, moved), 0);
    put_file(logpath, "");
    cr_assert_eq(write(go[1], "g", 1), 1);
    int st = th_wait_for(older, 10);
    if (st == 77)
        cr_skip_test("RLIMIT_NOFILE does not stop a process from opening descriptors here");
    cr_assert_eq(st, 0,
                 "the older process's record: exit status %d (4: not -%d; 5: failed; -2: still running after 10 s)", st,
                 no_fd);
    cr_assert_eq(log->seg->state, no_fd ? FL__WRITING : FL__IDLE, "the older process left state %u", log->seg->state);
    close(go[0]);
    close(go[1]);
    cr_assert_eq(forklog_write(log, "A2", 2), 0);
    die_writing(log, FL__CP_WRITE_TORN, "another record that dies half way through\n");
    cr_assert_eq(forklog_write(log, "A3", 2), 0);
    cr_assert_eq(forklog_close(log), 0);
    assert_file_is(old, "A0\n");
    if (no_fd) {
        assert_file_is(moved, "A1\nA2\nA3\n");
        assert_file_is(logpath, "");
    } else {
        assert_file_is(moved, "A1\na record that dies"); /* its first half */
        assert_file_is(logpath, "C0\nA2\nA3\n");
    }
    free(moved);
    free(old);
}

Test(crash, a_repair_that_cannot_reach_the_dead_holders_file_moves_every_process_to_path)
{
    unreachable_after_a_death(0);
}

Test(crash, a_repair_that_cannot_open_path_is_left_to_a_holder_that_reaches_the_file)
{
    unreachable_after_a_death(EMFILE);
}

Test(crash, a_repair_whose_open_of_path_is_busy_fails_its_call_and_is_left_to_the_next_holder)
{
    unreachable_after_a_death(EBUSY);
}

Test(crash, a_repair_whose_open_of_path_times_out_fails_its_call_and_is_left_to_the_next_holder)
{
    unreachable_after_a_death(ETIMEDOUT);
}

Test(crash, torn_record_of_a_new_opener_after_a_move_is_cut)
{
    /* The new opener writes to the file now at path; it dies half way through. The next writer, on the old
     * generation, must cut the fragment from that file, and every record after it goes there, each on its own. */
    forklog *log = open_log(NULL);
    cr_assert_eq(forklog_write(log, "before", 6), 0);
    char *moved = moved_name();
    move_and_replace(moved);
    cr_assert_eq(th_wait(new_opener("the new opener's record, killed half way through its write\n", 1)), 128 + SIGKILL);
    cr_assert_gt(file_size(logpath), 0, "the new opener did not write to the file at path");
    cr_assert_eq(forklog_write(log, "next", 4), 0);
    cr_assert_eq(th_wait(new_opener("another opener\n", 0)), 0);
    cp_assert_size_agrees(log, logpath);
    cr_assert_eq(forklog_close(log), 0);
    assert_file_is(moved, "before\n");
    assert_file_is(logpath, "next\nanother opener\n");
    free(moved);
}

Test(crash, every_process_moves_to_the_file_a_new_opener_found_at_path)
{
    /* After a new opener wrote to the file now at path, the processes of the old file follow it there; a failed
     * write of theirs is cut back to the end of that file, not to a size that counts another file's bytes. */
    signal(SIGXFSZ, SIG_IGN);
    forklog *log = open_log(NULL);
    cr_assert_eq(forklog_write(log, "before", 6), 0);
    char *moved = moved_name();
    move_and_replace(moved);
    cr_assert_eq(th_wait(new_opener("opener record\n", 0)), 0);
    /* A forked writer whose record cannot be written whole: the file may grow by 5 bytes only. */
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        struct rlimit rl = {(rlim_t)(sizeof "opener record\n" - 1 + 5), RLIM_INFINITY};
        if (setrlimit(RLIMIT_FSIZE, &rl) < 0)
            _exit(2);
        _exit(forklog_write(log, "a record that cannot be written whole", 37) == -EFBIG ? 0 : 1);
    }
    cr_assert_eq(th_wait(pid), 0, "the write past RLIMIT_FSIZE did not fail with -EFBIG");
    cr_assert_eq(forklog_write(log, "after", 5), 0);
    cp_assert_size_agrees(log, logpath);
    cr_assert_eq(forklog_close(log), 0);
    assert_file_is(moved, "before\n");
    assert_file_is(logpath, "opener record\nafter\n");
    free(moved);
}

Test(crash, a_child_forked_during_a_reopen_cuts_a_fragment_in_the_new_file)
{
    /* fork() copies the descriptor table before the memory: a child forked while another thread of its parent
     * completed a reopen has the new generation in its handle and the old, renamed file under its descriptor
     * (test_rotate's child_forked_during_a_reopen_writes_to_the_new_file stages that state the same way). If its
     * first lock finds a holder dead half way through a record in the new file, the repair must still cut that
     * fragment, and the child's record must not be glued to it. */
    forklog *log = open_log(NULL);
    cr_assert_eq(forklog_write(log, "one", 3), 0);
    int go[2];
    cr_assert_eq(pipe(go), 0);
    pid_t child = fork();
    cr_assert_neq(child, -1);
    if (child == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        char c;
        close(go[1]);
        if (read(go[0], &c, 1) != 1)
            _exit(2);
        log->gen = log->seg->gen; /* the generation of the parent's reopen, with the descriptor of before it */
        _exit(forklog_write(log, "three", 5) == 0 ? 0 : 1);
    }
    close(go[0]);
    char *moved = moved_name();
    cr_assert_eq(rename(logpath, moved), 0);
    cr_assert_eq(forklog_reopen(log), 0);
    cr_assert_eq(forklog_write(log, "two", 3), 0); /* reopened: the new file */
    char rec[3000];
    size_t len = rc_build(rec, 'R', 1, 0, 0, 2000);
    rec[len++] = '\n';
    cr_assert_eq(th_wait(start_holder(log, HOLD_WRITING_HALF, rec, len)), 128 + SIGKILL);
    cr_assert_eq(file_size(logpath), (off_t)(4 + len / 2), "the dead writer left half a record in the new file");
    cr_assert_eq(write(go[1], "g", 1), 1);
    close(go[1]);
    cr_assert_eq(th_wait(child), 0);
    cr_assert_eq(forklog_write(log, "four", 4), 0);
    cp_assert_size_agrees(log, logpath);
    cr_assert_eq(forklog_close(log), 0);
    assert_file_is(moved, "one\n");
    assert_file_is(logpath, "two\nthree\nfour\n");
    free(moved);
}

Test(crash, holder_dead_in_the_middle_of_a_rotation)
{
    struct forklog_options o = {.rotate_bytes = 1 << 20};
    forklog *log = open_log(&o);
    cr_assert_eq(forklog_write(log, "old", 3), 0);
    /* A record that takes the file past rotate_bytes: its writer renames path to path.1 and dies. */
    char *big = malloc(1 << 20);
    memset(big, 'b', 1 << 20);
    pid_t holder = start_holder(log, HOLD_ROTATING, big, 1 << 20);
    free(big);
    cr_assert_eq(th_wait(holder), 128 + SIGKILL);
    cr_assert_eq(forklog_write(log, "new", 3), 0);
    cr_assert_eq(forklog_close(log), 0);
    size_t len;
    char *buf = read_all(&len);
    cr_assert_str_eq(buf, "new\n", "after the repair, records go to a fresh path");
    free(buf);
    char *one = th_path(dir, "crash.log.1");
    buf = th_slurp(one, &len);
    cr_assert_not_null(buf);
    cr_assert_str_eq(buf, "old\n");
    free(buf);
    free(one);
}

/* The writer of a record that takes the file past rotate_bytes killed at each step of its rotation. The next
 * holder, a process whose descriptor is the file the rotation began with, finishes it or leaves it undone, and
 * writes a record that would still fit in that file: before any rename (ROTATE_BEGIN) the file stays the log's;
 * once path is renamed to path.1 (ROTATE_RENAMED), path created (FILE_CREATED, ROTATE_CREATED) or the rotation done
 * (ROTATE_DONE), the record goes to the new file at path, never into path.1 behind it. The dead writer's record is
 * nowhere. */
Test(crash, a_holder_killed_at_each_step_of_a_rotation_leaves_it_done_or_undone)
{
    static const struct {
        const char *point;
        const char *at_path, *at_one; /* NULL: no such file */
    } steps[] = {
        {"ROTATE_BEGIN", "old\nnew\n", NULL}, {"ROTATE_RENAMED", "new\n", "old\n"}, {"FILE_CREATED", "new\n", "old\n"},
        {"ROTATE_CREATED", "new\n", "old\n"}, {"ROTATE_DONE", "new\n", "old\n"},
    };
    char rec[121];
    memset(rec, 'd', sizeof rec);
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        const enum fl__crash_point point = cp_find(steps[i].point);
        char name[32], one_name[40];
        snprintf(name, sizeof name, "rotating%zu.log", i);
        snprintf(one_name, sizeof one_name, "%s.1", name);
        char *path = th_path(dir, name), *one = th_path(dir, one_name);
        struct forklog_options o = {.rotate_bytes = 100, .rotate_keep = 5};
        forklog *log;
        cr_assert_eq(forklog_open(&log, path, &o), 0);
        cr_assert_eq(forklog_write(log, "old", 3), 0);
        pid_t w = fork();
        cr_assert_neq(w, -1);
        if (w == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            fl__crash_arm(point, 1, FL__CRASH_KILL);
            _exit(forklog_write(log, rec, sizeof rec) == 0 ? 0 : 1);
        }
        cr_assert_eq(th_wait_for(w, 10), 128 + SIGKILL, "%s: the writer did not die there", steps[i].point);
        double t0 = th_now_s();
        cr_assert_eq(forklog_write(log, "new", 3), 0);
        cr_assert_lt(th_now_s() - t0, 2.0, "%s: the next writer waited", steps[i].point);
        cp_assert_size_agrees(log, path);
        cr_assert_eq(forklog_close(log), 0);
        size_t len;
        char *buf = th_slurp(path, &len);
        cr_assert_not_null(buf, "%s: no file at path", steps[i].point);
        cr_assert_str_eq(buf, steps[i].at_path, "%s: path holds\n%s", steps[i].point, buf);
        free(buf);
        buf = th_slurp(one, &len);
        if (steps[i].at_one) {
            cr_assert_not_null(buf, "%s: no path.1", steps[i].point);
            cr_assert_str_eq(buf, steps[i].at_one, "%s: path.1 holds\n%s", steps[i].point, buf);
        } else {
            cr_assert_null(buf, "%s: path.1 holds\n%s", steps[i].point, buf);
        }
        free(buf);
        free(path);
        free(one);
    }
}

Test(crash, a_record_torn_right_after_its_rotation_is_cut_in_the_new_file)
{
    /* The record that takes the file past rotate_bytes rotates it, and its writer dies with half of it written into
     * the new file. The rotation made the new file the generation's (its identity, its size 0), so the next holder,
     * whose own descriptor is still the rotated file, finds the fragment at path and cuts it. */
    struct forklog_options o = {.rotate_bytes = 1000, .rotate_keep = 5};
    forklog *log = open_log(&o);
    char rec[601];
    memset(rec, 'a', 600);
    rec[600] = 0;
    cr_assert_eq(forklog_write(log, rec, 600), 0);
    rec[0] = 'b';
    pid_t holder = start_holder(log, HOLD_WRITING_HALF, rec, 600);
    cr_assert_eq(th_wait(holder), 128 + SIGKILL);
    cr_assert_eq(file_size(logpath), 300, "the dead writer left half its record in the new file");
    cr_assert_eq(forklog_write(log, "next", 4), 0);
    cr_assert_eq(forklog_close(log), 0);
    size_t len;
    char *buf = read_all(&len);
    cr_assert_str_eq(buf, "next\n", "the fragment must be cut (file size %zu)", len);
    free(buf);
    char *one = th_path(dir, "crash.log.1");
    buf = th_slurp(one, &len);
    cr_assert_not_null(buf);
    cr_assert_eq(len, 601, "path.1 holds the first record, %zu bytes", len);
    free(buf);
    free(one);
}

Test(crash, a_directory_put_at_a_rotated_name_during_a_rotation_is_not_moved)
{
    /* The rotation looks at path.1, path.2, ... with lstat() before it renames them. A directory put at path.1
     * between the look and the renames (the rotator stopped at ROTATE_BEGIN, after its look) must still be left
     * alone, as one put there before: moved up the chain to path.2, it would end the chain there, and every later
     * rotation would replace path.1, deleting records though rotate_keep allows 5 files. */
    struct forklog_options o = {.rotate_bytes = 100, .rotate_keep = 5};
    forklog *log = open_log(&o);
    char rec[81];
    memset(rec, 'a', 80);
    rec[80] = 0;
    cr_assert_eq(forklog_write(log, rec, 80), 0);
    rec[0] = 'b';
    cr_assert_eq(forklog_write(log, rec, 80), 0); /* rotated: path.1 holds a */
    char *one = th_path(dir, "crash.log.1"), *two = th_path(dir, "crash.log.2"), *away = th_path(dir, "moved-away");
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        fl__crash_arm(FL__CP_ROTATE_BEGIN, 1, FL__CRASH_STOP);
        rec[0] = 'c';
        _exit(forklog_write(log, rec, 80) == 0 ? 0 : 1);
    }
    cr_assert(cp_wait_stopped(pid, 10), "the rotator did not stop at ROTATE_BEGIN");
    /* Meanwhile path.1 is moved away (its records kept) and a directory is put in its place. */
    cr_assert_eq(rename(one, away), 0);
    cr_assert_eq(mkdir(one, 0755), 0);
    cr_assert_eq(kill(pid, SIGCONT), 0);
    cr_assert_eq(th_wait(pid), 0);
    struct stat st;
    cr_assert_eq(lstat(one, &st), 0);
    cr_assert(S_ISDIR(st.st_mode), "the directory put at path.1 was moved");
    cr_assert(lstat(two, &st) != 0 || S_ISREG(st.st_mode), "the rotation moved a directory to path.2");
    /* Every record is still somewhere: the later rotations replace nothing while the directory ends the chain. */
    for (int i = 0; i < 5; i++) {
        rec[0] = (char)('d' + i);
        cr_assert_eq(forklog_write(log, rec, 80), 0);
    }
    cr_assert_eq(forklog_close(log), 0);
    size_t len;
    char *buf = th_slurp(away, &len);
    cr_assert_not_null(buf);
    cr_assert_eq(buf[0], 'a');
    free(buf);
    buf = read_all(&len);
    cr_assert_eq(th_count_lines(buf, len), 7, "path holds b..h: the directory at path.1 stops rotation");
    free(buf);
    rmdir(one);
    free(one);
    free(two);
    free(away);
}

Test(crash, holder_dead_in_the_middle_of_a_flush)
{
    struct forklog_options o = {.flags = FORKLOG_BUFFERED, .flush_ms = 60000};
    forklog *log = open_log(&o);
    for (int i = 0; i < 50; i++) {
        char r[64];
        int n = snprintf(r, sizeof r, "buffered %d", i);
        cr_assert_eq(forklog_write(log, r, (size_t)n), 0);
    }
    cr_assert_eq(file_size(logpath), 0);
    pid_t holder = start_holder(log, HOLD_FLUSHING_HALF, NULL, 0);
    cr_assert_eq(th_wait(holder), 128 + SIGKILL);
    cr_assert_gt(file_size(logpath), 0, "the dead flusher left half a buffer in the file");
    cr_assert_eq(forklog_flush(log), 0);
    cr_assert_eq(forklog_close(log), 0);
    size_t len;
    char *buf = read_all(&len);
    cr_assert_eq(th_count_lines(buf, len), 50);
    char *p = buf;
    for (int i = 0; i < 50; i++) {
        char want[64];
        int n = snprintf(want, sizeof want, "buffered %d\n", i);
        cr_assert_eq(strncmp(p, want, (size_t)n), 0, "record %d: %.30s", i, p);
        p += n;
    }
    free(buf);
}

/* The flusher of the shared buffer (of a buffered log with rotation) killed after its write, at each step of the
 * commit: every byte in the file (WRITE_DONE), size moved to the write's end (WRITE_SIZED), the buffer emptied
 * (WRITE_COMMITTED). Each leaves a different segment, and the next holder must keep the write and empty the buffer
 * from each: every record once, the segment's size the file's. */
Test(crash, a_flusher_of_the_shared_buffer_killed_at_each_step_of_its_commit_writes_each_record_once)
{
    static const char *const steps[] = {"WRITE_DONE", "WRITE_SIZED", "WRITE_COMMITTED"};
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        const enum fl__crash_point step = cp_find(steps[i]);
        char name[32];
        snprintf(name, sizeof name, "commit%zu.log", i);
        char *path = th_path(dir, name);
        struct forklog_options o = {.flags = FORKLOG_BUFFERED, .flush_ms = 60000, .rotate_bytes = 1 << 20};
        forklog *log;
        cr_assert_eq(forklog_open(&log, path, &o), 0);
        char want[1024];
        size_t len = 0;
        for (int r = 0; r < 20; r++) {
            int n = snprintf(want + len, sizeof want - len, "buffered %d\n", r);
            cr_assert_eq(forklog_write(log, want + len, (size_t)n - 1), 0);
            len += (size_t)n;
        }
        cr_assert_eq(log->seg->buf_used, len, "the records are not in the shared buffer");
        pid_t f = fork();
        cr_assert_neq(f, -1);
        if (f == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            fl__crash_arm(step, 1, FL__CRASH_KILL);
            _exit(forklog_flush(log) == 0 ? 0 : 1);
        }
        cr_assert_eq(th_wait_for(f, 10), 128 + SIGKILL, "%s: the flusher did not die there", steps[i]);
        cr_assert_eq(file_size(path), (off_t)len, "%s: the buffer is not whole in the file", steps[i]);
        double t0 = th_now_s();
        cr_assert_eq(forklog_write(log, "after", 5), 0);
        cr_assert_lt(th_now_s() - t0, 2.0, "%s: the next writer waited", steps[i]);
        cr_assert_eq(forklog_flush(log), 0);
        cp_assert_size_agrees(log, path);
        cr_assert_eq(forklog_close(log), 0);
        memcpy(want + len, "after\n", 7);
        size_t got;
        char *buf = th_slurp(path, &got);
        cr_assert_not_null(buf);
        cr_assert_str_eq(buf, want, "%s: the log holds\n%s", steps[i], buf);
        free(buf);
        free(path);
    }
}

/* ---- a file that ends in the middle of a line ------------------------------------------------------------ */

static void assert_log_is(const char *want)
{
    size_t len;
    char *buf = read_all(&len);
    cr_assert_eq(len, strlen(want), "the log holds %zu bytes:\n%s", len, buf);
    cr_assert_str_eq(buf, want);
    free(buf);
}

/* A line another program left unfinished (or a record torn by a machine crash) is ended with a newline before the
 * first record, in every way of opening the log; opening alone writes nothing, and a file that ends in a newline,
 * or an empty one, gets none. */
Test(crash, a_log_that_ends_mid_line_gets_its_first_record_on_a_line_of_its_own)
{
    static const struct {
        const char *name;
        struct forklog_options o;
        int by_fd;
    } ways[] = {
        {"named", {.flags = 0}, 0},
        {"buffered", {.flags = FORKLOG_BUFFERED}, 0},
        {"buffered rotating", {.flags = FORKLOG_BUFFERED, .rotate_bytes = 1 << 20, .rotate_keep = 2}, 0},
        {"private", {.flags = FORKLOG_PRIVATE}, 0},
        {"forklog_open_fd", {.flags = 0}, 1},
    };
    static const struct {
        const char *before, *after;
    } files[] = {
        {"line one\nhalf a li", "line one\nhalf a li\nfirst\nsecond\n"},
        {"x", "x\nfirst\nsecond\n"},
        {"line one\n", "line one\nfirst\nsecond\n"},
        {"", "first\nsecond\n"},
    };
    for (size_t w = 0; w < sizeof ways / sizeof ways[0]; w++) {
        for (size_t f = 0; f < sizeof files / sizeof files[0]; f++) {
            put_file(logpath, files[f].before);
            forklog *log = NULL;
            int fd = -1;
            if (ways[w].by_fd) {
                fd = open(logpath, O_WRONLY | O_CLOEXEC);
                cr_assert_geq(fd, 0);
                cr_assert_eq(forklog_open_fd(&log, fd, &ways[w].o), 0, "%s", ways[w].name);
            } else {
                log = open_log(&ways[w].o);
            }
            assert_log_is(files[f].before); /* the open wrote nothing */
            cr_assert_eq(forklog_write(log, "first", 5), 0, "%s", ways[w].name);
            cr_assert_eq(forklog_write(log, "second", 6), 0, "%s", ways[w].name);
            cr_assert_eq(forklog_close(log), 0, "%s", ways[w].name);
            if (fd >= 0)
                close(fd);
            assert_log_is(files[f].after);
        }
    }
}

/* forklog_reopen() onto a file that ends mid-line: the new generation's first record is on a line of its own too,
 * and the renamed file is left as it was. */
Test(crash, a_reopen_onto_a_file_that_ends_mid_line_ends_that_line_first)
{
    forklog *log = open_log(NULL);
    cr_assert_eq(forklog_write(log, "one", 3), 0);
    char *moved = moved_name();
    cr_assert_eq(rename(logpath, moved), 0);
    put_file(logpath, "someone else's half li");
    cr_assert_eq(forklog_reopen(log), 0);
    cr_assert_eq(forklog_write(log, "two", 3), 0);
    cr_assert_eq(forklog_close(log), 0);
    assert_file_is(moved, "one\n");
    assert_log_is("someone else's half li\ntwo\n");
    free(moved);
}

/* The first record's holder dies after the newline (FILE_NEWLINE), or after reading the file that the newline
 * ended (FILE_KNOWN): the next holder adds no second newline, and its record follows on a line of its own. */
Test(crash, a_holder_killed_after_ending_a_line_leaves_one_newline)
{
    static const enum fl__crash_point at[] = {FL__CP_FILE_NEWLINE, FL__CP_FILE_KNOWN};
    for (size_t i = 0; i < sizeof at / sizeof at[0]; i++) {
        put_file(logpath, "line one\nhalf a li");
        forklog *log = open_log(NULL);
        pid_t victim = cp_writer(log, "dead", at[i], 1);
        cr_assert_eq(th_wait(victim), 128 + SIGKILL, "the writer did not die at %s", fl__crash_name(at[i]));
        assert_log_is("line one\nhalf a li\n");
        cr_assert_eq(forklog_write(log, "next", 4), 0);
        cr_assert_eq(forklog_close(log), 0);
        assert_log_is("line one\nhalf a li\nnext\n");
    }
}

/* The newline cannot be written (RLIMIT_FSIZE at the file's size): the record fails with -EFBIG and the file is
 * unchanged; once the limit is raised, the line is ended and the record written. */
Test(crash, a_newline_that_cannot_be_written_fails_the_record_and_changes_nothing)
{
    put_file(logpath, "half a li");
    forklog *log = open_log(NULL);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl = {9, RLIM_INFINITY};
        if (setrlimit(RLIMIT_FSIZE, &rl) != 0)
            _exit(10);
        if (forklog_write(log, "first", 5) != -EFBIG)
            _exit(11);
        if (file_size(logpath) != 9)
            _exit(12);
        rl.rlim_cur = RLIM_INFINITY;
        if (setrlimit(RLIMIT_FSIZE, &rl) != 0)
            _exit(13);
        _exit(forklog_write(log, "second", 6) == 0 ? 0 : 14);
    }
    cr_assert_eq(th_wait(pid), 0, "the child failed at the step its exit code names");
    cr_assert_eq(forklog_write(log, "third", 5), 0);
    cr_assert_eq(forklog_close(log), 0);
    assert_log_is("half a li\nsecond\nthird\n");
}

/* Sets (on) or clears the append-only attribute of path (FS_APPEND_FL). Returns 0, or -errno where the file system
 * or the credentials do not allow it. */
static int set_append_only(const char *path, int on)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int flags = 0, rc = ioctl(fd, FS_IOC_GETFLAGS, &flags);
    if (rc == 0) {
        flags = on ? flags | FS_APPEND_FL : flags & ~FS_APPEND_FL;
        rc = ioctl(fd, FS_IOC_SETFLAGS, &flags);
    }
    rc = rc < 0 ? -errno : 0;
    close(fd);
    return rc;
}

/* An append-only file cannot be cut: the fragment of a writer killed mid-record stays, and the next record starts
 * on a line of its own after it. */
Test(crash, the_fragment_an_append_only_file_keeps_is_ended_before_the_next_record)
{
    forklog *log = open_log(NULL);
    cr_assert_eq(forklog_write(log, "before", 6), 0);
    int rc = set_append_only(logpath, 1);
    if (rc < 0) {
        forklog_close(log);
        cr_skip_test("no append-only attribute here: %s", strerror(-rc));
    }
    pid_t holder = start_holder(log, HOLD_WRITING_HALF, "0123456789\n", 11);
    int st = th_wait(holder);
    int next = forklog_write(log, "next", 4);
    cr_assert_eq(set_append_only(logpath, 0), 0);
    cr_assert_eq(st, 128 + SIGKILL);
    cr_assert_eq(next, 0);
    cr_assert_eq(forklog_close(log), 0);
    assert_log_is("before\n01234\nnext\n");
}

/* The log ends mid-line at open, and is moved away and replaced (no forklog_reopen()) before anybody writes. A new
 * opener writes first: as in every_process_moves_to_the_file_a_new_opener_found_at_path, every process follows it
 * to the file at path, and a failed write of the first opener is cut back within that file; the moved file is left
 * as it was. */
Test(crash, a_moved_log_that_ended_mid_line_is_followed_after_a_new_opener)
{
    signal(SIGXFSZ, SIG_IGN);
    put_file(logpath, "line one\nline two\nhalf a li");
    forklog *log = open_log(NULL);
    char *moved = moved_name();
    move_and_replace(moved);
    cr_assert_eq(th_wait(new_opener("opener record\n", 0)), 0);
    cr_assert_eq(forklog_write(log, "after", 5), 0);
    struct rlimit old, rl;
    cr_assert_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
    rl = (struct rlimit){25, old.rlim_max};
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
    int rc = forklog_write(log, "a record that cannot be written whole", 37);
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &old), 0);
    cr_assert_eq(rc, -EFBIG);
    cr_assert_eq(forklog_close(log), 0);
    assert_file_is(logpath, "opener record\nafter\n");
    assert_file_is(moved, "line one\nline two\nhalf a li");
    free(moved);
}

/* ---- the chaos test ---------------------------------------------------------------------------------------
 * Writers append self-checking records; the parent SIGKILLs one at random moments (a third of the kills aimed at
 * the current lock holder while it is in the middle of a write, a third at a waiter the instant the lock is
 * released, when the one the kernel woke may not have taken it yet, the rest at whoever: spinning, posting or
 * sleeping) and starts a replacement with a new id. Each writer publishes in shared
 * memory how many of its records have returned 0, before it starts the next call. Then the quiet tail: the kills
 * stop, and every writer alive must write CH_TAIL more records and end within CH_QUIET_S seconds, so that a writer
 * left asleep on a free lock (or behind a lost record) fails the test instead of hiding behind ongoing traffic. At
 * the end the file(s) must hold only whole records, every acknowledged record exactly once, the one record in
 * flight of a killed writer at most once, nothing else. */

enum {
    CH_MAX_WRITERS = 8,
    CH_MAX_KILLS = 300,
    CH_IDS = CH_MAX_WRITERS + CH_MAX_KILLS + 8,
    CH_SEQS = 4096,
    CH_TAIL = 64,
    CH_BUDGET = 2 << 20
};
#define CH_QUIET_S 15.0

struct chaos_config {
    const char *name;
    unsigned flags;
    int writers, kills;
    size_t max_record; /* largest raw payload */
    unsigned long long rotate_bytes;
};

struct chaos_shared {
    atomic_uint acked[CH_IDS];       /* records 0 .. acked-1 of writer id returned 0 */
    atomic_uint empty_acked[CH_IDS]; /* 0-byte records that returned 0 */
    atomic_int stop;
    atomic_int errors;
    atomic_int last_error;
};

static _Noreturn void chaos_fail(struct chaos_shared *sh, int rc)
{
    atomic_fetch_add(&sh->errors, 1);
    atomic_store(&sh->last_error, rc);
    _exit(3);
}

static void chaos_writer(forklog *log, struct chaos_shared *sh, const struct chaos_config *c, unsigned id)
{
    rc_child();
    char *buf = malloc(RC_HEAD_MAX + RC_MAX_PAYLOAD);
    if (!buf)
        _exit(2);
    unsigned seed = id * 7919u + 17u;
    unsigned seq = 0;
    size_t bytes = 0; /* a budget, so that the file stays small however fast the machine */
    while (seq < CH_SEQS - CH_TAIL && bytes < CH_BUDGET && !atomic_load(&sh->stop)) {
        unsigned r = (unsigned)rand_r(&seed) % 100;
        int rc;
        if (r < 3) {
            rc = forklog_write(log, NULL, 0);
            if (rc == 0) {
                atomic_fetch_add(&sh->empty_acked[id], 1);
                continue;
            }
        } else {
            char kind = r < 25 ? 'L' : 'R';
            size_t max = c->max_record < 60000 || kind == 'R' ? c->max_record : 60000;
            size_t n = rc_size(&seed, max);
            rc = rc_write(log, buf, kind, id, seq, 0, n);
            bytes += n;
            if (rc == 0) {
                atomic_store(&sh->acked[id], ++seq);
                continue;
            }
        }
        chaos_fail(sh, rc);
    }
    while (!atomic_load(&sh->stop))
        usleep(1000);
    /* The quiet tail: small records, all writers at once, nobody killed any more. */
    for (int t = 0; t < CH_TAIL; t++) {
        int rc = rc_write(log, buf, 'R', id, seq, 0, (size_t)rand_r(&seed) % 200);
        if (rc != 0)
            chaos_fail(sh, rc);
        atomic_store(&sh->acked[id], ++seq);
    }
    free(buf);
    _exit(forklog_close(log) == 0 ? 0 : 4);
}

static pid_t chaos_spawn(forklog *log, struct chaos_shared *sh, const struct chaos_config *c, unsigned id)
{
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0)
        chaos_writer(log, sh, c, id);
    return pid;
}

static void run_chaos(const struct chaos_config *c)
{
    struct forklog_options o = {.flags = c->flags, .rotate_bytes = c->rotate_bytes, .rotate_keep = 1000};
    forklog *log = open_log(&o);
    struct fl__seg *seg = log->seg;
    struct chaos_shared *sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(sh, MAP_FAILED);
    unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();
    const char *env = getenv("FORKLOG_CHAOS_SEED");
    if (env)
        seed = (unsigned)strtoul(env, NULL, 10);
    fprintf(stderr, "chaos %s: seed %u (FORKLOG_CHAOS_SEED to replay the kill schedule)\n", c->name, seed);

    double t0 = th_now_s();
    pid_t pid[CH_MAX_WRITERS];
    unsigned next_id = 0;
    for (int i = 0; i < c->writers; i++)
        pid[i] = chaos_spawn(log, sh, c, next_id++);
    int kills = 0, aimed = 0, woken = 0, torn_seen = 0;
    while (kills < c->kills) {
        int victim = -1;
        unsigned aim = (unsigned)rand_r(&seed) % 3;
        if (aim == 2) {
            /* Aim at a waiter the instant the lock is released: the one the kernel just woke may be caught
             * between its wake-up and taking the lock. */
            double end = th_now_s() + 0.05;
            while (!atomic_load_explicit(&seg->held, memory_order_relaxed) && th_now_s() < end)
                ;
            while (atomic_load_explicit(&seg->held, memory_order_relaxed) && th_now_s() < end)
                ;
            pid_t owner = *(volatile int *)&seg->mu.__data.__owner & 0x3fffffff;
            int pick = (int)((unsigned)rand_r(&seed) % (unsigned)c->writers);
            victim = pid[pick] == owner ? (pick + 1) % c->writers : pick;
            woken++;
        } else if (aim == 1) {
            /* Aim at the lock holder while it is writing (a record, or the shared buffer). */
            double end = th_now_s() + 0.05;
            while (victim < 0 && th_now_s() < end) {
                uint32_t state = *(volatile uint32_t *)&seg->state;
                if (state == FL__WRITING || state == FL__FLUSHING) {
                    pid_t owner = *(volatile int *)&seg->mu.__data.__owner & 0x3fffffff;
                    for (int i = 0; i < c->writers; i++)
                        if (pid[i] == owner)
                            victim = i;
                }
                if (victim < 0)
                    sched_yield();
            }
        }
        if (aim == 2) {
        } else if (victim >= 0) {
            aimed++;
        } else {
            usleep((useconds_t)(rand_r(&seed) % 3000));
            victim = (int)((unsigned)rand_r(&seed) % (unsigned)c->writers);
        }
        cr_assert_eq(kill(pid[victim], SIGKILL), 0);
        int st = th_wait(pid[victim]);
        cr_assert_eq(st, 128 + SIGKILL, "writer exited with %d before it was killed (error %d: %s)", st,
                     atomic_load(&sh->last_error), strerror(-atomic_load(&sh->last_error)));
        /* Did this kill leave a fragment? Only knowable while nobody has taken the dead writer's lock yet. */
        struct stat fst;
        if ((*(volatile int *)&seg->mu.__data.__owner & 0x3fffffff) == pid[victim] &&
            *(volatile uint32_t *)&seg->state != FL__IDLE && stat(logpath, &fst) == 0 &&
            (uint64_t)fst.st_size > *(volatile uint64_t *)&seg->size &&
            (uint64_t)fst.st_size < *(volatile uint64_t *)&seg->target)
            torn_seen++;
        pid[victim] = chaos_spawn(log, sh, c, next_id++);
        kills++;
    }
    double kill_s = th_now_s() - t0;
    usleep(50 * 1000);
    atomic_store(&sh->stop, 1);
    double tail0 = th_now_s();
    for (int i = 0; i < c->writers; i++) {
        int st = th_wait_for(pid[i], CH_QUIET_S - (th_now_s() - tail0));
        cr_assert_eq(
            st, 0, "writer %d ended with %d in the quiet tail (-2: not done %.0f s after the kills stopped; error %d)",
            i, st, CH_QUIET_S, atomic_load(&sh->last_error));
    }
    double tail_s = th_now_s() - tail0;
    cr_assert_eq(atomic_load(&sh->errors), 0, "a call failed: %s", strerror(-atomic_load(&sh->last_error)));
    unsigned long long repairs = (unsigned long long)seg->repairs;
    cr_assert_eq(forklog_close(log), 0); /* buffered: writes what the dead left in the shared buffer */

    struct rc_seen seen;
    rc_seen_init(&seen, CH_IDS, CH_SEQS + 1);
    long long size = rc_scan(&seen, logpath, 0);
    unsigned files = 1;
    for (unsigned k = 1; c->rotate_bytes && k <= 1000; k++) {
        char name[PATH_MAX];
        snprintf(name, sizeof name, "%s.%u", logpath, k);
        long long n = rc_scan(&seen, name, k);
        if (n >= 0) {
            size += n;
            files++;
        }
    }
    size_t acked_total = 0, empty_acked = 0, in_flight = 0;
    for (unsigned id = 0; id < next_id; id++) {
        unsigned a = atomic_load(&sh->acked[id]);
        empty_acked += atomic_load(&sh->empty_acked[id]);
        acked_total += a;
        for (unsigned q = 0; q < a; q++)
            cr_assert_eq(rc_count(&seen, id, q), 1, "writer %u record %u returned 0 but is in the file %u times", id, q,
                         rc_count(&seen, id, q));
        if (a < CH_SEQS) {
            cr_assert_leq(rc_count(&seen, id, a), 1, "writer %u record %u (in flight) is there twice", id, a);
            in_flight += rc_count(&seen, id, a);
        }
        for (unsigned q = a + 1; q <= CH_SEQS; q++)
            cr_assert_eq(rc_count(&seen, id, q), 0, "writer %u record %u was never written", id, q);
    }
    cr_assert_eq(seen.records, acked_total + in_flight);
    cr_assert(seen.empty >= empty_acked && seen.empty <= empty_acked + next_id,
              "%zu empty records in the file, %zu acknowledged", seen.empty, empty_acked);
    cr_assert_gt(repairs, 0, "no kill hit a lock holder: the test did not test the repair");
    fprintf(stderr,
            "chaos %s: %d kills (%d aimed at the holder mid-write, %d of them left a fragment; %d at a waiter as the "
            "lock was released), %llu repairs, "
            "%u writers, %zu records acknowledged + %zu in flight kept, %lld bytes in %u file(s), %.1f s of kills, "
            "quiet tail %.2f s, %.1f s in all\n",
            c->name, kills, aimed, torn_seen, woken, repairs, next_id, acked_total, in_flight, size, files, kill_s,
            tail_s, th_now_s() - t0);
    rc_seen_free(&seen);
    munmap(sh, sizeof *sh);
}

Test(crash, chaos_direct, .timeout = 110)
{
    static const struct chaos_config c = {"direct", 0, 6, 200, RC_MAX_PAYLOAD - RC_HEAD_MAX - 1, 0};
    run_chaos(&c);
}

Test(crash, chaos_buffered, .timeout = 110)
{
    static const struct chaos_config c = {"buffered", FORKLOG_BUFFERED, 6, 200, RC_MAX_PAYLOAD - RC_HEAD_MAX - 1, 0};
    run_chaos(&c);
}

Test(crash, chaos_small_records_quiet_tail, .timeout = 110)
{
    /* 8 writers on a few CPUs with records up to 2 KiB: most wait, post or sleep, so most kills land there. */
    static const struct chaos_config c = {"small records", 0, 8, 300, 2048, 0};
    run_chaos(&c);
}

Test(crash, chaos_rotating, .timeout = 110)
{
    static const struct chaos_config c = {"rotating", 0, 8, 300, 2048, 256 << 10};
    run_chaos(&c);
}
