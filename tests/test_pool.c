/* SPDX-License-Identifier: MIT */
/* The pool helper: crashes, timeouts, failing codes, initializers, recycling, many tasks, a bystander child,
 * nested pools, threads, descriptors, and the log check (one whole record per task, text and JSON).
 * Tasks and initializers run in forked workers: they never assert, they report through their return value,
 * their exit, or files; the test process asserts. */
#include "helpers.h"
#include "internal.h" /* crash points: fl__crash_arm() */

#include <dirent.h>
#include <forklog.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>

#ifdef TEST_POOL_PIDS
/* This program again, as on a kernel without process descriptors, where the pool waits for and kills its workers
 * by pid: TEST_POOL_PIDS 1, pidfd_open() fails with ENOSYS (before Linux 5.3); 2, pidfd_open() works and
 * waitid(P_PIDFD) fails with EINVAL (Linux 5.3). The library's calls are wrapped at link time (--wrap), and the
 * refusals counted, so that a test can tell that the pool met them. */
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
static atomic_uint pids_refused;

long __real_syscall(long n, ...);
long __wrap_syscall(long n, ...);
long __wrap_syscall(long n, ...)
{
    va_list ap;
    va_start(ap, n);
    long a[6];
    for (int i = 0; i < 6; i++)
        a[i] = va_arg(ap, long);
    va_end(ap);
    if (TEST_POOL_PIDS == 1 && n == SYS_pidfd_open) {
        atomic_fetch_add(&pids_refused, 1);
        errno = ENOSYS;
        return -1;
    }
    return __real_syscall(n, a[0], a[1], a[2], a[3], a[4], a[5]);
}

int __real_waitid(idtype_t type, id_t id, siginfo_t *si, int options);
int __wrap_waitid(idtype_t type, id_t id, siginfo_t *si, int options);
int __wrap_waitid(idtype_t type, id_t id, siginfo_t *si, int options)
{
    if (TEST_POOL_PIDS == 2 && type == (idtype_t)3 /* P_PIDFD */) {
        atomic_fetch_add(&pids_refused, 1);
        errno = EINVAL;
        return -1;
    }
    return __real_waitid(type, id, si, options);
}
#endif

/* ---- helpers --------------------------------------------------------------------------------------------- */

static forklog *open_log(const char *path, enum forklog_format format)
{
    struct forklog_options o = {0};
    o.format = format;
    forklog *log = NULL;
    int rc = forklog_open(&log, path, &o);
    cr_assert_eq(rc, 0, "forklog_open: %s", strerror(-rc));
    return log;
}

/* Dies of `sig` for real: default disposition (sanitizers and test runners may catch SIGSEGV), no core file. */
static void die_of(int sig)
{
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
    signal(sig, SIG_DFL);
    if (sig == SIGABRT)
        abort();
    raise(sig);
    _exit(99);
}

/* Open descriptors of this process (the directory stream's own included). */
static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

static const char *item_label(size_t i, void *ctx)
{
    (void)ctx;
    static char labels[64][16];
    static int made;
    if (!made) {
        for (int k = 0; k < 64; k++)
            snprintf(labels[k], sizeof labels[k], "item-%d", k);
        made = 1;
    }
    return i < 64 ? labels[i] : NULL;
}

/* Lines of buf that contain needle. */
static size_t count_matching(const char *buf, const char *needle)
{
    size_t n = 0;
    const char *line = buf;
    while (*line) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        char *copy = strndup(line, len);
        if (strstr(copy, needle))
            n++;
        free(copy);
        line += len + (end ? 1 : 0);
    }
    return n;
}

static int ok_task(size_t i, void *ctx)
{
    (void)i, (void)ctx;
    return 0;
}

/* ---- bad inputs -------------------------------------------------------------------------------------------- */

Test(pool, bad_inputs)
{
    /* Each refusal runs nothing and writes nothing: no record in the log, the report left zeroed. */
    char *dir = th_tmpdir();
    char *path = th_path(dir, "pool.log");
    forklog *log = open_log(path, FORKLOG_FORMAT_TEXT);
    struct forklog_pool_options o = {.log = log};
    struct forklog_pool_report rep;
    cr_assert_eq(forklog_pool_map(NULL, 3, ok_task, NULL, &rep), -EINVAL);
    cr_assert_eq(forklog_pool_map(&o, 3, NULL, NULL, &rep), -EINVAL);
    o.timeout_s = -1;
    cr_assert_eq(forklog_pool_map(&o, 3, ok_task, NULL, NULL), -EINVAL);
    o.timeout_s = NAN;
    cr_assert_eq(forklog_pool_map(&o, 3, ok_task, NULL, NULL), -EINVAL);
    o.timeout_s = -INFINITY;
    cr_assert_eq(forklog_pool_map(&o, 3, ok_task, NULL, NULL), -EINVAL);
    o.timeout_s = 0;
    o.workers = 65537;
    cr_assert_eq(forklog_pool_map(&o, 3, ok_task, NULL, &rep), -EINVAL);
    o.workers = 0;
    o.level = (enum forklog_level)9;
    cr_assert_eq(forklog_pool_map(&o, 3, ok_task, NULL, NULL), -EINVAL);
    o.level = (enum forklog_level) - 1;
    cr_assert_eq(forklog_pool_map(&o, 3, ok_task, NULL, NULL), -EINVAL);
    struct forklog_pool_report zero;
    memset(&zero, 0, sizeof zero);
    cr_assert_eq(memcmp(&rep, &zero, sizeof rep), 0, "a refused call leaves the report zeroed");
    cr_assert_eq(forklog_close(log), 0);
    size_t len;
    char *buf = th_slurp(path, &len);
    cr_assert_eq(len, 0, "a refused call wrote to the log: %s", buf);
    free(buf);
    free(path);
    th_rmdir(dir);
    free(dir);
    o.log = NULL;
    o.level = 0;
    memset(&rep, 0xff, sizeof rep);
    cr_assert_eq(forklog_pool_map(&o, 0, ok_task, NULL, &rep), 0);
    cr_assert_eq(memcmp(&rep, &zero, sizeof rep), 0, "ntasks 0 leaves an empty report");
}

/* ---- crashes, timeouts, failing codes ---------------------------------------------------------------------- */

static int crash_task(size_t i, void *ctx)
{
    (void)ctx;
    switch (i) {
    case 3: die_of(SIGSEGV); break;
    case 5: die_of(SIGABRT); break;
    case 7: _exit(3);
    case 9: die_of(SIGKILL); break;
    default: break;
    }
    return 0;
}

Test(pool, crashes_are_recorded_and_the_map_goes_on)
{
    char *dir = th_tmpdir();
    char *path = th_path(dir, "pool.log");
    forklog *log = open_log(path, FORKLOG_FORMAT_TEXT);
    struct forklog_task_result res[14];
    struct forklog_pool_options o = {.workers = 3, .log = log, .results = res, .label = item_label};
    struct forklog_pool_report rep;
    int rc = forklog_pool_map(&o, 14, crash_task, NULL, &rep);
    cr_assert_eq(rc, 4, "rc %d", rc);
    cr_assert_eq(rep.crashed, 4);
    cr_assert_eq(rep.ok, 10);
    cr_assert_eq(rep.failed + rep.timed_out + rep.not_run, 0);
    cr_assert_geq(rep.workers_started, 4, "crashed workers are replaced");
    cr_assert_eq(res[3].status, FORKLOG_TASK_CRASHED);
    cr_assert_eq(res[3].signal, SIGSEGV);
    cr_assert_eq(res[5].status, FORKLOG_TASK_CRASHED);
    cr_assert_eq(res[5].signal, SIGABRT);
    cr_assert_eq(res[7].status, FORKLOG_TASK_CRASHED);
    cr_assert_eq(res[7].code, 3);
    cr_assert_eq(res[7].signal, 0);
    cr_assert_eq(res[9].status, FORKLOG_TASK_CRASHED);
    cr_assert_eq(res[9].signal, SIGKILL);
    for (size_t i = 0; i < 14; i++) {
        cr_assert_neq(res[i].worker, 0);
        cr_assert_gt(res[i].start, 1e9);
        if (i != 3 && i != 5 && i != 7 && i != 9)
            cr_assert_eq(res[i].status, FORKLOG_TASK_OK, "task %zu", i);
    }
    forklog_close(log);
    size_t len;
    char *buf = th_slurp(path, &len);
    cr_assert_eq(th_count_lines(buf, len), 15);
    cr_assert_eq(count_matching(buf, " WARN "), 5, "4 crashes and the summary at WARN");
    cr_assert_eq(count_matching(buf, " code=0 signal=11 "), 1);
    cr_assert_eq(count_matching(buf, " code=0 signal=6 "), 1);
    cr_assert_eq(count_matching(buf, " code=3 signal=0 "), 1);
    cr_assert_eq(count_matching(buf, "label=item-7"), 1);
    free(buf);
    th_rmdir(dir);
    free(path);
    free(dir);
}

static int hang_task(size_t i, void *ctx)
{
    (void)ctx;
    if (i == 2)
        for (;;)
            sleep(60);
    return 0;
}

Test(pool, timeout_kills_and_replaces_the_worker)
{
    struct forklog_task_result res[6];
    /* One worker: tasks 3.. need the replacement of the worker killed in task 2. */
    struct forklog_pool_options o = {.workers = 1, .timeout_s = 0.3, .results = res};
    struct forklog_pool_report rep;
    int rc = forklog_pool_map(&o, 6, hang_task, NULL, &rep);
    cr_assert_eq(rc, 1);
    cr_assert_eq(rep.timed_out, 1);
    cr_assert_eq(rep.ok, 5);
    cr_assert_eq(res[2].status, FORKLOG_TASK_TIMEOUT);
    cr_assert_eq(res[2].signal, SIGKILL);
    cr_assert_geq(res[2].duration_s, 0.3, "killed only past the timeout (%f)", res[2].duration_s);
    cr_assert_geq(rep.max_s, 0.3);
    cr_assert_eq(rep.workers_started, 2, "the killed worker was replaced");
    cr_assert_neq(res[3].worker, res[2].worker);
}

#ifdef TEST_POOL_PIDS
/* The pool met the refusals of this program's kernel (it went by pid) and still records every crash and timeout
 * with its signal, and replaces the workers. */
Test(pool, without_process_descriptors_the_pool_goes_by_pid)
{
    struct forklog_task_result res[14];
    struct forklog_pool_options o = {.workers = 3, .results = res};
    struct forklog_pool_report rep;
    cr_assert_eq(forklog_pool_map(&o, 14, crash_task, NULL, &rep), 4);
    cr_assert_gt(atomic_load(&pids_refused), 0, "the pool never asked for a process descriptor");
    cr_assert_eq(rep.crashed, 4);
    cr_assert_eq(rep.ok, 10);
    cr_assert_eq(res[3].signal, SIGSEGV);
    cr_assert_eq(res[5].signal, SIGABRT);
    cr_assert_eq(res[7].code, 3);
    cr_assert_eq(res[9].signal, SIGKILL);
    struct forklog_task_result t[6];
    struct forklog_pool_options ot = {.workers = 1, .timeout_s = 0.3, .results = t};
    cr_assert_eq(forklog_pool_map(&ot, 6, hang_task, NULL, &rep), 1);
    cr_assert_eq(t[2].status, FORKLOG_TASK_TIMEOUT);
    cr_assert_eq(t[2].signal, SIGKILL);
    cr_assert_eq(rep.ok, 5);
    cr_assert_eq(rep.workers_started, 2);
}
#endif

static int short_sleep_task(size_t i, void *ctx)
{
    (void)i, (void)ctx;
    usleep(20000);
    return 0;
}

/* A timeout too long to ever come (31 years and more, INFINITY) is no timeout at all: no task is killed. It once
 * fell through to the "below a nanosecond" case and killed every task at once. */
Test(pool, huge_and_infinite_timeouts_kill_nothing)
{
    const double timeouts[] = {1e9, 1e12, 1e300, INFINITY};
    for (size_t k = 0; k < sizeof timeouts / sizeof timeouts[0]; k++) {
        struct forklog_task_result res[6];
        struct forklog_pool_options o = {.workers = 2, .timeout_s = timeouts[k], .results = res};
        struct forklog_pool_report rep;
        int rc = forklog_pool_map(&o, 6, short_sleep_task, NULL, &rep);
        cr_assert_eq(rc, 0, "timeout_s %g: rc %d, %zu timed out", timeouts[k], rc, rep.timed_out);
        cr_assert_eq(rep.ok, 6);
        cr_assert_eq(rep.workers_started, 2, "timeout_s %g: no worker killed and replaced", timeouts[k]);
        for (size_t i = 0; i < 6; i++)
            cr_assert_eq(res[i].status, FORKLOG_TASK_OK, "timeout_s %g: task %zu", timeouts[k], i);
    }
}

static int code_task(size_t i, void *ctx)
{
    (void)ctx;
    return (int)(i % 4) * 10;
}

Test(pool, failing_return_codes)
{
    struct forklog_task_result res[20];
    struct forklog_pool_options o = {.workers = 3, .results = res};
    struct forklog_pool_report rep;
    cr_assert_eq(forklog_pool_map(&o, 20, code_task, NULL, &rep), 15);
    cr_assert_eq(rep.failed, 15);
    cr_assert_eq(rep.ok, 5);
    cr_assert_eq(rep.crashed, 0);
    cr_assert_leq(rep.workers_started, 3, "failing tasks do not cost workers");
    for (size_t i = 0; i < 20; i++) {
        cr_assert_eq(res[i].status, i % 4 ? FORKLOG_TASK_FAILED : FORKLOG_TASK_OK);
        cr_assert_eq(res[i].code, (int)(i % 4) * 10);
    }
}

/* A worker killed from outside the pool while it runs a task. */
struct killer {
    char *pidfile;
};

static int pidfile_task(size_t i, void *ctx)
{
    const struct killer *k = ctx;
    if (i != 1)
        return 0;
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", k->pidfile);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return 1;
    fprintf(f, "%ld\n", (long)getpid());
    fclose(f);
    rename(tmp, k->pidfile);
    for (;;)
        sleep(60);
}

static void *killer_thread(void *arg)
{
    const struct killer *k = arg;
    for (int tries = 0; tries < 3000; tries++) {
        FILE *f = fopen(k->pidfile, "r");
        if (f) {
            long pid = 0;
            int n = fscanf(f, "%ld", &pid);
            fclose(f);
            if (n == 1 && pid > 0) {
                kill((pid_t)pid, SIGTERM);
                return NULL;
            }
        }
        usleep(10000);
    }
    return NULL;
}

Test(pool, worker_killed_from_outside)
{
    char *dir = th_tmpdir();
    struct killer k = {th_path(dir, "pid")};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, killer_thread, &k), 0);
    struct forklog_task_result res[5];
    struct forklog_pool_options o = {.workers = 2, .results = res};
    int rc = forklog_pool_map(&o, 5, pidfile_task, &k, NULL);
    pthread_join(th, NULL);
    cr_assert_eq(rc, 1);
    cr_assert_eq(res[1].status, FORKLOG_TASK_CRASHED);
    cr_assert_eq(res[1].signal, SIGTERM);
    th_rmdir(dir);
    free(k.pidfile);
    free(dir);
}

/* ---- initializers and recycling ---------------------------------------------------------------------------- */

static int init_fails(void *arg)
{
    (void)arg;
    return 1;
}

Test(pool, initializer_always_failing_gives_up)
{
    char *dir = th_tmpdir();
    char *path = th_path(dir, "pool.log");
    forklog *log = open_log(path, FORKLOG_FORMAT_TEXT);
    struct forklog_task_result res[40];
    struct forklog_pool_options o = {.workers = 3, .init = init_fails, .log = log, .results = res};
    struct forklog_pool_report rep;
    int rc = forklog_pool_map(&o, 40, ok_task, NULL, &rep);
    cr_assert_eq(rc, -ECHILD, "rc %d", rc);
    cr_assert_eq(rep.not_run, 40);
    cr_assert_eq(rep.ok + rep.failed + rep.crashed + rep.timed_out, 0);
    /* Default cap: workers * 2 + 2 = 8 failures allowed; the 9th stops the forks. */
    cr_assert_geq(rep.workers_started, 9);
    cr_assert_leq(rep.workers_started, 8 + 3, "bounded forks (%zu)", rep.workers_started);
    for (size_t i = 0; i < 40; i++) {
        cr_assert_eq(res[i].status, FORKLOG_TASK_NOT_RUN);
        cr_assert_eq(res[i].worker, 0);
    }
    forklog_close(log);
    size_t len;
    char *buf = th_slurp(path, &len);
    cr_assert_eq(count_matching(buf, " task task="), 40);
    cr_assert_eq(count_matching(buf, " status=not_run "), 40);
    cr_assert_eq(count_matching(buf, " pool summary "), 1);
    cr_assert_eq(count_matching(buf, " not_run=40 "), 1);
    free(buf);

    /* An explicit cap. */
    o.max_init_failures = 1;
    o.log = NULL;
    rc = forklog_pool_map(&o, 40, ok_task, NULL, &rep);
    cr_assert_eq(rc, -ECHILD);
    cr_assert_leq(rep.workers_started, 1 + 3);
    th_rmdir(dir);
    free(path);
    free(dir);
}

/* Fails in the first worker that runs it (the one that creates the marker file), succeeds after. */
static int init_fails_once(void *arg)
{
    int fd = open((const char *)arg, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd >= 0) {
        close(fd);
        return 7;
    }
    return 0;
}

Test(pool, initializer_failing_once_then_working)
{
    char *dir = th_tmpdir();
    char *marker = th_path(dir, "marker");
    /* One worker: its initializer fails, the replacement's works and runs every task. */
    struct forklog_pool_options o = {.workers = 1, .init = init_fails_once, .init_arg = marker};
    struct forklog_pool_report rep;
    cr_assert_eq(forklog_pool_map(&o, 10, ok_task, NULL, &rep), 0);
    cr_assert_eq(rep.ok, 10);
    cr_assert_eq(rep.workers_started, 2, "one replacement for the failed initializer");
    struct stat st;
    cr_assert_eq(stat(marker, &st), 0, "the first initializer ran");
    th_rmdir(dir);
    free(marker);
    free(dir);
}

/* Hangs in the first worker, returns at once after: with timeout_s the hung initializer is killed. */
static int init_hangs_once(void *arg)
{
    if (init_fails_once(arg))
        for (;;)
            sleep(60);
    return 0;
}

Test(pool, initializer_hanging_is_killed_after_timeout)
{
    char *dir = th_tmpdir();
    char *marker = th_path(dir, "marker");
    struct forklog_pool_options o = {.workers = 1, .init = init_hangs_once, .init_arg = marker, .timeout_s = 0.3};
    struct forklog_pool_report rep;
    cr_assert_eq(forklog_pool_map(&o, 10, ok_task, NULL, &rep), 0);
    cr_assert_eq(rep.ok, 10);
    cr_assert_eq(rep.workers_started, 2, "the hung initializer's worker was killed and replaced");
    th_rmdir(dir);
    free(marker);
    free(dir);
}

/* Fails in the first worker, which is then stopped in its exit (as a SIGSTOP from outside or a debugger would stop
 * it): at the next passage through the log's lock, the flush the worker makes before _exit(). */
static forklog *stop_exit_log;
static int init_fails_then_stops_in_exit(void *arg)
{
    if (!init_fails_once(arg))
        return 0;
    fl__crash_arm(FL__CP_LOCK_ACQUIRED, 1, FL__CRASH_STOP);
    return 7;
}

/* The pool in a child (a hang must fail the test, not stall it): exit 0 when all 10 tasks ran ok. */
static int run_init_stopped_in_exit(const char *marker, const char *path)
{
    struct forklog_options lo = {.flags = FORKLOG_BUFFERED};
    if (forklog_open(&stop_exit_log, path, &lo) != 0)
        return 2;
    struct forklog_pool_options o = {.workers = 1,
                                     .init = init_fails_then_stops_in_exit,
                                     .init_arg = (void *)marker,
                                     .timeout_s = 0.3,
                                     .log = stop_exit_log};
    struct forklog_pool_report rep;
    int rc = forklog_pool_map(&o, 10, ok_task, NULL, &rep);
    return rc == 0 && rep.ok == 10 && rep.workers_started == 2 ? 0 : 3;
}

Test(pool, worker_stopped_in_its_exit_after_a_failed_initializer_is_killed)
{
    char *dir = th_tmpdir();
    char *marker = th_path(dir, "marker");
    char *path = th_path(dir, "pool.log");
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0)
        _exit(run_init_stopped_in_exit(marker, path));
    int st = th_wait_for(pid, 20);
    cr_assert_neq(st, -2, "forklog_pool_map() hung on a worker stopped in its exit after its initializer failed");
    cr_assert_eq(st, 0, "status %d", st);
    struct stat sb;
    cr_assert_eq(stat(marker, &sb), 0, "the first initializer ran");
    th_rmdir(dir);
    free(path);
    free(marker);
    free(dir);
}

/* Task 0 is stopped while it holds the log's lock (in its own forklog_log(), as a SIGSTOP from outside or a
 * debugger would stop it there); the others finish, and their records are due meanwhile. */
static forklog *stop_lock_log;
static int stops_holding_the_lock_task(size_t i, void *ctx)
{
    (void)ctx;
    if (i == 0) {
        fl__crash_arm(FL__CP_LOCK_HELD, 1, FL__CRASH_STOP);
        forklog_log(stop_lock_log, FORKLOG_INFO, "task 0 logs");
        return 5; /* not reached */
    }
    usleep(20000);
    return 0;
}

/* The pool in a child (a hang must fail the test, not stall it): exit 0 when task 0 timed out, the others ran
 * ok, and the log holds one record per task and the summary. */
static int run_stopped_holding_the_lock(const char *path)
{
    if (forklog_open(&stop_lock_log, path, NULL) != 0)
        return 2;
    struct forklog_task_result res[6];
    struct forklog_pool_options o = {.workers = 2, .timeout_s = 0.5, .log = stop_lock_log, .results = res};
    struct forklog_pool_report rep;
    int rc = forklog_pool_map(&o, 6, stops_holding_the_lock_task, NULL, &rep);
    if (rc != 1 || rep.ok != 5 || rep.timed_out != 1 || res[0].status != FORKLOG_TASK_TIMEOUT ||
        res[0].signal != SIGKILL)
        return 3;
    forklog_close(stop_lock_log);
    size_t len;
    char *buf = th_slurp(path, &len);
    if (!buf || count_matching(buf, " task task=") != 6 || count_matching(buf, " task task=0 status=timeout ") != 1 ||
        count_matching(buf, " pool summary ") != 1 || count_matching(buf, "task 0 logs") != 0)
        return 4;
    free(buf);
    return 0;
}

Test(pool, worker_stopped_holding_the_log_lock_is_killed_after_timeout)
{
    char *dir = th_tmpdir();
    char *path = th_path(dir, "pool.log");
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0)
        _exit(run_stopped_holding_the_lock(path));
    int st = th_wait_for(pid, 20);
    cr_assert_neq(st, -2, "forklog_pool_map() hung behind a worker stopped while it held the log's lock");
    cr_assert_eq(st, 0, "status %d", st);
    th_rmdir(dir);
    free(path);
    free(dir);
}

/* A signal handler that writes to the pool's log, run while the parent holds the log's lock for its look at whether
 * the lock is free (timeout_s): forklog_write() of a handler that interrupted a forklog call of its thread fails
 * with -EDEADLK (docs/api.md), where waiting for the lock its own thread holds would hang the parent. */
static forklog *handler_log;
static volatile int handler_rc = 1;
static void write_from_handler(int sig)
{
    (void)sig;
    static const char rec[] = "from the handler\n";
    handler_rc = forklog_write(handler_log, rec, sizeof rec - 1);
}

static int slow_task(size_t i, void *ctx)
{
    (void)i, (void)ctx;
    usleep(50000);
    return 0;
}

/* The pool in a child, stopped holding the lock at its first look (the tasks do not log, so it is the parent's):
 * exit 0 when the handler's call was refused and every task ran ok. */
static int run_handler_in_the_parents_look(const char *path)
{
    if (forklog_open(&handler_log, path, NULL) != 0)
        return 2;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = write_from_handler;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGUSR1, &sa, NULL) != 0)
        return 2;
    struct forklog_pool_options o = {.workers = 2, .timeout_s = 10, .log = handler_log};
    struct forklog_pool_report rep;
    fl__crash_arm(FL__CP_LOCK_HELD, 1, FL__CRASH_STOP);
    int rc = forklog_pool_map(&o, 6, slow_task, NULL, &rep);
    if (rc != 0 || rep.ok != 6)
        return 3;
    if (handler_rc != -EDEADLK)
        return 4;
    return forklog_close(handler_log) == 0 ? 0 : 5;
}

Test(pool, a_handler_that_writes_while_the_parent_looks_at_the_lock_is_refused)
{
    char *dir = th_tmpdir();
    char *path = th_path(dir, "pool.log");
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        _exit(run_handler_in_the_parents_look(path));
    }
    int st;
    double end = th_now_s() + 10;
    pid_t r;
    while ((r = waitpid(pid, &st, WNOHANG | WUNTRACED)) == 0 && th_now_s() < end)
        usleep(500);
    cr_assert(r == pid && WIFSTOPPED(st), "the pool's parent did not stop holding the lock");
    cr_assert_eq(kill(pid, SIGUSR1), 0);
    cr_assert_eq(kill(pid, SIGCONT), 0);
    st = th_wait_for(pid, 20);
    cr_assert_neq(st, -2, "the handler's forklog_write() waited for the lock its own thread held: the pool hung");
    cr_assert_eq(st, 0, "status %d", st);
    size_t len;
    char *buf = th_slurp(path, &len);
    cr_assert_not_null(buf);
    cr_assert_eq(count_matching(buf, "from the handler"), 0);
    cr_assert_eq(count_matching(buf, " task task="), 6);
    free(buf);
    th_rmdir(dir);
    free(path);
    free(dir);
}

static int init_append_pid(void *arg)
{
    int fd = open((const char *)arg, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0)
        return 1;
    char line[32];
    int n = snprintf(line, sizeof line, "%ld\n", (long)getpid());
    int ok = write(fd, line, (size_t)n) == n;
    close(fd);
    return ok ? 0 : 1;
}

Test(pool, recycling_with_max_tasks_per_worker)
{
    char *dir = th_tmpdir();
    char *inits = th_path(dir, "inits");
    struct forklog_task_result res[11];
    struct forklog_pool_options o = {
        .workers = 2, .init = init_append_pid, .init_arg = inits, .max_tasks_per_worker = 2, .results = res};
    struct forklog_pool_report rep;
    cr_assert_eq(forklog_pool_map(&o, 11, ok_task, NULL, &rep), 0);
    cr_assert_eq(rep.ok, 11);
    size_t len;
    char *buf = th_slurp(inits, &len);
    cr_assert_not_null(buf);
    cr_assert_eq(th_count_lines(buf, len), rep.workers_started, "the initializer ran in every worker");
    /* Every task's worker ran the initializer, and no worker ran more than 2 tasks. */
    size_t distinct = 0;
    for (size_t i = 0; i < 11; i++) {
        char needle[32];
        snprintf(needle, sizeof needle, "%ld", (long)res[i].worker);
        cr_assert_eq(count_matching(buf, needle), 1, "worker %s ran the initializer once", needle);
        size_t same = 0, first = 1;
        for (size_t j = 0; j < 11; j++) {
            same += res[j].worker == res[i].worker;
            if (j < i && res[j].worker == res[i].worker)
                first = 0;
        }
        cr_assert_leq(same, 2);
        distinct += first;
    }
    cr_assert_geq(distinct, 6, "11 tasks at 2 per worker need at least 6 workers (%zu)", distinct);
    free(buf);
    th_rmdir(dir);
    free(inits);
    free(dir);
}

/* ---- many tasks, and the log check ------------------------------------------------------------------------- */

Test(pool, ten_thousand_tiny_tasks)
{
    char *dir = th_tmpdir();
    char *path = th_path(dir, "pool.log");
    forklog *log = open_log(path, FORKLOG_FORMAT_TEXT);
    enum { N = 10000 };
    struct forklog_pool_options o = {.workers = 4, .log = log};
    struct forklog_pool_report rep;
    cr_assert_eq(forklog_pool_map(&o, N, ok_task, NULL, &rep), 0);
    cr_assert_eq(rep.ok, N);
    cr_assert_leq(rep.workers_started, 4);
    cr_assert_gt(rep.tasks_per_s, 0);
    cr_assert_leq(rep.min_s, rep.p50_s);
    cr_assert_leq(rep.p50_s, rep.p95_s);
    cr_assert_leq(rep.p95_s, rep.p99_s);
    cr_assert_leq(rep.p99_s, rep.max_s);
    forklog_close(log);
    size_t len;
    char *buf = th_slurp(path, &len);
    cr_assert_eq(th_count_lines(buf, len), N + 1);
    unsigned char *seen = calloc(N, 1);
    size_t records = 0;
    for (char *line = buf; *line;) {
        char *end = strchr(line, '\n');
        cr_assert_not_null(end);
        *end = '\0';
        const char *t = strstr(line, " task task=");
        if (t) {
            size_t idx;
            char status[16];
            cr_assert_eq(sscanf(t, " task task=%zu status=%15s", &idx, status), 2, "%s", line);
            cr_assert_lt(idx, (size_t)N);
            cr_assert_eq(seen[idx]++, 0, "task %zu recorded twice", idx);
            cr_assert_str_eq(status, "ok");
            records++;
        } else {
            cr_assert_not_null(strstr(line, " pool summary tasks=10000 ok=10000 "), "%s", line);
        }
        line = end + 1;
    }
    cr_assert_eq(records, N);
    free(seen);
    free(buf);
    th_rmdir(dir);
    free(path);
    free(dir);
}

/* Task i: i % 3 == 0 ok, 1 returns 5, 2 exits with 9. */
static int mixed_task(size_t i, void *ctx)
{
    (void)ctx;
    if (i % 3 == 1)
        return 5;
    if (i % 3 == 2)
        _exit(9);
    return 0;
}

static const char *mixed_status(size_t i)
{
    return i % 3 == 0 ? "ok" : i % 3 == 1 ? "failed" : "crashed";
}

Test(pool, log_check_text)
{
    char *dir = th_tmpdir();
    char *path = th_path(dir, "pool.log");
    forklog *log = open_log(path, FORKLOG_FORMAT_TEXT);
    enum { N = 30 };
    struct forklog_pool_options o = {.workers = 3, .log = log, .label = item_label};
    cr_assert_eq(forklog_pool_map(&o, N, mixed_task, NULL, NULL), 20);
    forklog_close(log);
    size_t len;
    char *buf = th_slurp(path, &len);
    cr_assert_eq(th_count_lines(buf, len), N + 1);
    cr_assert_eq(buf[len - 1], '\n');
    int seen[N] = {0};
    for (char *line = buf; *line;) {
        char *end = strchr(line, '\n');
        *end = '\0';
        /* 2026-11-28T16:05:13.123456Z INFO pid=4242 task task=0 status=ok cost=0.000012 worker=4243 code=0
         * signal=0 start=2026-11-28T16:05:13.123400Z label=item-0 */
        cr_assert_eq(strlen(line) > 28 && line[4] == '-' && line[10] == 'T' && line[26] == 'Z', 1, "%s", line);
        const char *t = strstr(line, " task task=");
        if (!t) {
            cr_assert_not_null(strstr(line, " WARN "), "%s", line);
            cr_assert_not_null(strstr(line, " pool summary tasks=30 ok=10 failed=10 crashed=10 timeout=0 not_run=0 "),
                               "%s", line);
            cr_assert_not_null(strstr(line, " p50="));
            cr_assert_not_null(strstr(line, " p99="));
            line = end + 1;
            continue;
        }
        size_t idx, label;
        char status[16];
        double cost;
        long worker;
        int code, sig;
        char start[32];
        int n = sscanf(t, " task task=%zu status=%15s cost=%lf worker=%ld code=%d signal=%d start=%31s label=item-%zu",
                       &idx, status, &cost, &worker, &code, &sig, start, &label);
        cr_assert_eq(n, 8, "%s", line);
        cr_assert_lt(idx, (size_t)N);
        cr_assert_eq(label, idx);
        seen[idx]++;
        cr_assert_str_eq(status, mixed_status(idx), "%s", line);
        cr_assert_gt(worker, 0);
        cr_assert_geq(cost, 0);
        cr_assert_eq(strlen(start), 27);
        cr_assert_eq(code, idx % 3 == 1 ? 5 : idx % 3 == 2 ? 9 : 0);
        cr_assert_eq(sig, 0);
        cr_assert_not_null(strstr(line, idx % 3 ? " WARN " : " INFO "), "%s", line);
        line = end + 1;
    }
    for (int i = 0; i < N; i++)
        cr_assert_eq(seen[i], 1, "task %d has %d records", i, seen[i]);
    free(buf);
    th_rmdir(dir);
    free(path);
    free(dir);
}

Test(pool, log_check_json)
{
    char *dir = th_tmpdir();
    char *path = th_path(dir, "pool.log");
    forklog *log = open_log(path, FORKLOG_FORMAT_JSON);
    enum { N = 30 };
    struct forklog_pool_options o = {.workers = 3, .log = log, .label = item_label};
    cr_assert_eq(forklog_pool_map(&o, N, mixed_task, NULL, NULL), 20);
    forklog_close(log);
    size_t len;
    char *buf = th_slurp(path, &len);
    cr_assert_eq(th_count_lines(buf, len), N + 1);
    int seen[N] = {0};
    size_t summaries = 0;
    for (char *line = buf; *line;) {
        char *end = strchr(line, '\n');
        *end = '\0';
        cr_assert_eq(strncmp(line, "{\"ts\":\"", 7), 0, "%s", line);
        cr_assert_eq(end[-1], '}', "%s", line);
        const char *t = strstr(line, "\"msg\":\"task\",\"task\":");
        if (!t) {
            cr_assert_not_null(strstr(line, "\"level\":\"warn\""), "%s", line);
            cr_assert_not_null(strstr(line, "\"msg\":\"pool summary\",\"tasks\":30,\"ok\":10,\"failed\":10,"
                                            "\"crashed\":10,\"timeout\":0,\"not_run\":0,"),
                               "%s", line);
            summaries++;
            line = end + 1;
            continue;
        }
        size_t idx, label;
        char status[16];
        double cost;
        long worker;
        int code, sig;
        int n = sscanf(t,
                       "\"msg\":\"task\",\"task\":%zu,\"status\":\"%15[a-z_]\",\"cost\":%lf,\"worker\":%ld,\"code\":%d,"
                       "\"signal\":%d,",
                       &idx, status, &cost, &worker, &code, &sig);
        cr_assert_eq(n, 6, "%s", line);
        cr_assert_lt(idx, (size_t)N);
        seen[idx]++;
        cr_assert_str_eq(status, mixed_status(idx), "%s", line);
        const char *l = strstr(line, ",\"label\":\"item-");
        cr_assert_not_null(l, "%s", line);
        cr_assert_eq(sscanf(l, ",\"label\":\"item-%zu\"}", &label), 1);
        cr_assert_eq(label, idx);
        cr_assert_not_null(strstr(line, ",\"start\":\"20"), "%s", line);
        cr_assert_not_null(strstr(line, idx % 3 ? "\"level\":\"warn\"" : "\"level\":\"info\""), "%s", line);
        line = end + 1;
    }
    cr_assert_eq(summaries, 1);
    for (int i = 0; i < N; i++)
        cr_assert_eq(seen[i], 1, "task %d has %d records", i, seen[i]);
    free(buf);
    th_rmdir(dir);
    free(path);
    free(dir);
}

/* ---- the caller's children, signals, descriptors ------------------------------------------------------------ */

static volatile sig_atomic_t chld_seen;
static void on_chld(int sig)
{
    (void)sig;
    chld_seen++;
}

Test(pool, bystander_child_and_signal_state_are_left_alone)
{
    /* A child of the caller, forked before the map, waiting on a pipe. */
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    pid_t by = fork();
    cr_assert_geq(by, 0);
    if (by == 0) {
        close(fds[1]);
        char c;
        _exit(read(fds[0], &c, 1) == 1 && c == 'x' ? 42 : 1);
    }
    close(fds[0]);

    struct sigaction sa, before_sa, after_sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_chld;
    sigemptyset(&sa.sa_mask);
    cr_assert_eq(sigaction(SIGCHLD, &sa, &before_sa), 0);
    sigset_t block, before_mask, after_mask;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR1);
    cr_assert_eq(pthread_sigmask(SIG_BLOCK, &block, NULL), 0);
    cr_assert_eq(pthread_sigmask(SIG_BLOCK, NULL, &before_mask), 0);

    struct forklog_task_result res[14];
    struct forklog_pool_options o = {.workers = 3, .results = res, .timeout_s = 20};
    int rc = forklog_pool_map(&o, 14, crash_task, NULL, NULL);
    cr_assert_eq(rc, 4);

    cr_assert_eq(sigaction(SIGCHLD, NULL, &after_sa), 0);
    cr_assert(after_sa.sa_handler == on_chld, "SIGCHLD disposition kept");
    cr_assert_eq(pthread_sigmask(SIG_BLOCK, NULL, &after_mask), 0);
    cr_assert_eq(sigismember(&after_mask, SIGUSR1), 1);
    cr_assert_eq(sigismember(&after_mask, SIGCHLD), sigismember(&before_mask, SIGCHLD));
    cr_assert_gt(chld_seen, 0, "the caller's SIGCHLD handler saw the workers end");

    /* The bystander is still ours to reap, with its own exit status. */
    int st;
    cr_assert_eq(waitpid(by, &st, WNOHANG), 0, "the pool did not reap the caller's child");
    cr_assert_eq(write(fds[1], "x", 1), 1);
    close(fds[1]);
    cr_assert_eq(th_wait(by), 42);
    sigaction(SIGCHLD, &before_sa, NULL);
}

Test(pool, caller_ignoring_sigchld_still_returns)
{
    /* SIGCHLD ignored: the kernel reaps the workers, so their wait status is lost; the pool still ends and
     * still marks the crashed task (code -1: status unknown). */
    struct sigaction ign, old;
    memset(&ign, 0, sizeof ign);
    ign.sa_handler = SIG_IGN;
    sigemptyset(&ign.sa_mask);
    cr_assert_eq(sigaction(SIGCHLD, &ign, &old), 0);
    struct forklog_task_result res[14];
    struct forklog_pool_options o = {.workers = 3, .results = res};
    int rc = forklog_pool_map(&o, 14, crash_task, NULL, NULL);
    sigaction(SIGCHLD, &old, NULL);
    cr_assert_eq(rc, 4);
    for (size_t i = 0; i < 14; i++)
        cr_assert_eq(res[i].status, (i == 3 || i == 5 || i == 7 || i == 9) ? FORKLOG_TASK_CRASHED : FORKLOG_TASK_OK);
}

static int fd_count_task(size_t i, void *ctx)
{
    (void)i;
    int expected = *(const int *)ctx;
    int n = count_fds();
    return n == expected ? 0 : 100 + n;
}

Test(pool, no_descriptor_leaks)
{
    char *dir = th_tmpdir();
    char *path = th_path(dir, "pool.log");
    forklog *log = open_log(path, FORKLOG_FORMAT_TEXT);
    int before = count_fds();
    cr_assert_gt(before, 0);
    /* A worker holds what the caller holds, plus its own pipe's write end and the wake pipe's write end. */
    int expected = before + 2;
    struct forklog_task_result res[14];
    struct forklog_pool_options o = {.workers = 3, .log = log, .results = res};
    int rc = forklog_pool_map(&o, 12, fd_count_task, &expected, NULL);
    for (size_t i = 0; i < 12; i++)
        cr_assert_eq(res[i].code, 0, "task %zu saw %d descriptors, expected %d", i, res[i].code - 100, expected);
    cr_assert_eq(rc, 0);
    cr_assert_eq(forklog_pool_map(&o, 14, crash_task, NULL, NULL), 4);
    cr_assert_eq(count_fds(), before, "the caller's descriptors are as they were");
    forklog_close(log);
    th_rmdir(dir);
    free(path);
    free(dir);
}

/* Task 1 closes every descriptor above stderr, then opens a file several times so that the numbers of the pool's
 * pipes now name that file; later tasks sleep a little so that the parent sleeps and workers try to wake it. The
 * map must still end, and nothing of the pool may be written into the file. */
static int closing_task(size_t i, void *ctx)
{
    if (i == 1) {
        for (int fd = 3; fd < 1024; fd++)
            close(fd);
        for (int k = 0; k < 16; k++)
            if (open((const char *)ctx, O_WRONLY | O_CREAT | O_APPEND, 0644) < 0)
                return 1;
        return 0;
    }
    usleep(2000);
    return 0;
}

Test(pool, task_closing_every_descriptor)
{
    char *dir = th_tmpdir();
    char *victim = th_path(dir, "victim");
    struct forklog_task_result res[30];
    struct forklog_pool_options o = {.workers = 2, .results = res};
    struct forklog_pool_report rep;
    cr_assert_eq(forklog_pool_map(&o, 30, closing_task, victim, &rep), 0);
    cr_assert_eq(rep.ok, 30);
    struct stat st;
    cr_assert_eq(stat(victim, &st), 0);
    cr_assert_eq(st.st_size, 0, "the pool wrote into a descriptor the task reused");
    th_rmdir(dir);
    free(victim);
    free(dir);
}

/* ---- nested pools and threads ------------------------------------------------------------------------------ */

struct nest {
    forklog *log;
};

static const char *inner_label(size_t i, void *ctx)
{
    (void)ctx;
    static const char *const l[] = {"inner-0", "inner-1", "inner-2", "inner-3"};
    return i < 4 ? l[i] : NULL;
}

static int outer_task(size_t i, void *ctx)
{
    (void)i;
    struct nest *n = ctx;
    struct forklog_task_result res[4];
    struct forklog_pool_options o = {.workers = 2, .log = n->log, .label = inner_label, .results = res};
    struct forklog_pool_report rep;
    int rc = forklog_pool_map(&o, 4, crash_task, NULL, &rep); /* crash_task: tasks 0..3, task 3 crashes */
    if (rc != 1 || rep.ok != 3 || rep.crashed != 1 || res[3].signal != SIGSEGV)
        return 10;
    return 0;
}

Test(pool, nested_pools)
{
    char *dir = th_tmpdir();
    char *path = th_path(dir, "pool.log");
    forklog *log = open_log(path, FORKLOG_FORMAT_TEXT);
    struct nest n = {log};
    struct forklog_task_result res[3];
    struct forklog_pool_options o = {.workers = 2, .log = log, .results = res};
    cr_assert_eq(forklog_pool_map(&o, 3, outer_task, &n, NULL), 0);
    for (size_t i = 0; i < 3; i++)
        cr_assert_eq(res[i].status, FORKLOG_TASK_OK, "outer task %zu: code %d", i, res[i].code);
    forklog_close(log);
    size_t len;
    char *buf = th_slurp(path, &len);
    cr_assert_eq(th_count_lines(buf, len), 3 + 1 + 3 * (4 + 1));
    cr_assert_eq(count_matching(buf, " task task="), 3 + 3 * 4);
    cr_assert_eq(count_matching(buf, " label=inner-3"), 3);
    cr_assert_eq(count_matching(buf, " pool summary tasks=4 ok=3 failed=0 crashed=1 "), 3);
    cr_assert_eq(count_matching(buf, " pool summary tasks=3 ok=3 "), 1);
    free(buf);
    th_rmdir(dir);
    free(path);
    free(dir);
}

struct writer {
    forklog *log;
    int lines;
};

static void *writer_thread(void *arg)
{
    struct writer *w = arg;
    for (int k = 0; k < w->lines; k++) {
        char line[64];
        int n = snprintf(line, sizeof line, "thread line %d", k);
        if (forklog_write(w->log, line, (size_t)n) != 0)
            return (void *)1;
    }
    return NULL;
}

static int small_work_task(size_t i, void *ctx)
{
    (void)ctx;
    volatile unsigned x = 0;
    for (unsigned k = 0; k < 1000; k++)
        x = x + (unsigned)i * k;
    return x == 1 ? 1 : 0; /* never 1: i * k sums are 0 or multiples of 1000 */
}

Test(pool, another_thread_logs_while_the_map_runs)
{
    char *dir = th_tmpdir();
    char *path = th_path(dir, "pool.log");
    forklog *log = open_log(path, FORKLOG_FORMAT_TEXT);
    struct writer w = {log, 3000};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, writer_thread, &w), 0);
    struct forklog_pool_options o = {.workers = 3, .log = log};
    int rc = forklog_pool_map(&o, 500, small_work_task, NULL, NULL);
    void *wret;
    pthread_join(th, &wret);
    cr_assert_eq(rc, 0);
    cr_assert_null(wret);
    forklog_close(log);
    size_t len;
    char *buf = th_slurp(path, &len);
    cr_assert_eq(th_count_lines(buf, len), 3000 + 500 + 1);
    size_t thread_lines = 0, tasks = 0, other = 0;
    for (char *line = buf; *line;) {
        char *end = strchr(line, '\n');
        *end = '\0';
        if (strncmp(line, "thread line ", 12) == 0 && strchr(line, 'T') == NULL)
            thread_lines++;
        else if (strstr(line, " INFO pid=") && strstr(line, " task task=") && strstr(line, " status=ok "))
            tasks++;
        else
            other++;
        line = end + 1;
    }
    cr_assert_eq(thread_lines, 3000);
    cr_assert_eq(tasks, 500);
    cr_assert_eq(other, 1, "the summary");
    free(buf);
    th_rmdir(dir);
    free(path);
    free(dir);
}

struct in_thread {
    int rc;
    struct forklog_pool_report rep;
    struct forklog_task_result res[14];
};

static void *map_thread(void *arg)
{
    struct in_thread *t = arg;
    struct forklog_pool_options o = {.workers = 3, .results = t->res, .timeout_s = 20};
    t->rc = forklog_pool_map(&o, 14, crash_task, NULL, &t->rep);
    return NULL;
}

Test(pool, map_called_from_a_thread)
{
    struct in_thread t;
    memset(&t, 0, sizeof t);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, map_thread, &t), 0);
    pthread_join(th, NULL);
    cr_assert_eq(t.rc, 4);
    cr_assert_eq(t.rep.ok, 10);
    cr_assert_eq(t.rep.crashed, 4);
    cr_assert_eq(t.res[3].signal, SIGSEGV);
}

Test(pool, two_pools_in_two_threads_at_once)
{
    struct in_thread a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    pthread_t ta, tb;
    cr_assert_eq(pthread_create(&ta, NULL, map_thread, &a), 0);
    cr_assert_eq(pthread_create(&tb, NULL, map_thread, &b), 0);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    struct in_thread *both[] = {&a, &b};
    for (int k = 0; k < 2; k++) {
        cr_assert_eq(both[k]->rc, 4);
        cr_assert_eq(both[k]->rep.ok, 10);
        cr_assert_eq(both[k]->rep.crashed, 4);
        cr_assert_eq(both[k]->res[7].code, 3);
    }
}

/* ---- hostile callers and tasks: helpers -------------------------------------------------------------------- */

static const char *status_name(enum forklog_task_status s)
{
    switch (s) {
    case FORKLOG_TASK_OK: return "ok";
    case FORKLOG_TASK_FAILED: return "failed";
    case FORKLOG_TASK_CRASHED: return "crashed";
    case FORKLOG_TASK_TIMEOUT: return "timeout";
    default: return "not_run";
    }
}

/* Length of the valid UTF-8 sequence at s (RFC 3629: no overlongs, no surrogates, nothing past U+10FFFF), or 0. A
 * NUL byte is never a continuation byte, so this never reads past the end of a string. */
static size_t utf8_len(const unsigned char *s)
{
    unsigned char c = s[0], lo = 0x80, hi = 0xBF;
    size_t n;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        n = 2;
    else if (c >= 0xE0 && c <= 0xEF)
        n = 3, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    else if (c >= 0xF0 && c <= 0xF4)
        n = 4, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    else
        return 0;
    if (s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
    return n;
}

/* A JSON string (RFC 8259) at *pp, valid UTF-8 inside; moves *pp past it. */
static int json_string(const unsigned char **pp)
{
    const unsigned char *p = *pp;
    if (*p++ != '"')
        return 0;
    for (;;) {
        if (*p == '"') {
            *pp = p + 1;
            return 1;
        }
        if (*p < 0x20)
            return 0; /* a raw control byte, or the end of the line inside the string */
        if (*p == '\\') {
            p++;
            if (*p == 'u') {
                for (int k = 1; k <= 4; k++)
                    if (!strchr("0123456789abcdefABCDEF", p[k]) || !p[k])
                        return 0;
                p += 5;
            } else if (*p && strchr("\"\\/bfnrt", *p)) {
                p++;
            } else {
                return 0;
            }
            continue;
        }
        size_t n = utf8_len(p);
        if (!n)
            return 0;
        p += n;
    }
}

/* A JSON number at *pp; moves *pp past it. */
static int json_number(const unsigned char **pp)
{
    const unsigned char *p = *pp;
    if (*p == '-')
        p++;
    if (*p == '0')
        p++;
    else if (*p >= '1' && *p <= '9')
        while (*p >= '0' && *p <= '9')
            p++;
    else
        return 0;
    if (*p == '.') {
        if (!(*++p >= '0' && *p <= '9'))
            return 0;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-')
            p++;
        if (!(*p >= '0' && *p <= '9'))
            return 0;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    *pp = p;
    return 1;
}

/* Whether line is exactly one JSON object of string and number values (what a pool record is), valid JSON and
 * valid UTF-8. */
static int json_flat_object(const char *line)
{
    const unsigned char *p = (const unsigned char *)line;
    if (*p++ != '{')
        return 0;
    if (*p == '}')
        return p[1] == '\0';
    for (;;) {
        if (!json_string(&p) || *p++ != ':')
            return 0;
        if (*p == '"' ? !json_string(&p) : !json_number(&p))
            return 0;
        if (*p != ',')
            return *p == '}' && p[1] == '\0';
        p++;
    }
}

/* The report counts what the results say, and a non-negative return value is the number of tasks not ok. */
static void check_counts(int rc, const struct forklog_task_result *res, size_t n, const struct forklog_pool_report *rep)
{
    size_t c[5] = {0};
    for (size_t i = 0; i < n; i++) {
        cr_assert_leq((unsigned)res[i].status, 4u);
        c[res[i].status]++;
    }
    cr_assert_eq(rep->not_run, c[FORKLOG_TASK_NOT_RUN]);
    cr_assert_eq(rep->ok, c[FORKLOG_TASK_OK]);
    cr_assert_eq(rep->failed, c[FORKLOG_TASK_FAILED]);
    cr_assert_eq(rep->crashed, c[FORKLOG_TASK_CRASHED]);
    cr_assert_eq(rep->timed_out, c[FORKLOG_TASK_TIMEOUT]);
    if (rc >= 0)
        cr_assert_eq((size_t)rc, n - rep->ok, "rc %d, %zu of %zu ok", rc, rep->ok, n);
}

/* Reads the log back and checks it against the results: the file is whole lines only (it ends with '\n' and has
 * no NUL byte); each line is a record (text: the RFC 3339 time first; JSON: one valid JSON object); there is
 * exactly one record per task, with the status, code, signal and worker of res[i]; and one summary record with
 * the report's counts. Returns the file for further checks (the caller frees it). */
static char *check_log(const char *path, int json, size_t n, const struct forklog_task_result *res,
                       const struct forklog_pool_report *rep)
{
    size_t len;
    char *buf = th_slurp(path, &len);
    cr_assert_not_null(buf, "no log at %s", path);
    cr_assert_gt(len, 0);
    cr_assert_eq(buf[len - 1], '\n', "the log ends with a whole line");
    cr_assert_eq(strlen(buf), len, "no NUL byte in the log");
    cr_assert_eq(th_count_lines(buf, len), n + 1, "one record per task and the summary");
    unsigned char *seen = calloc(n, 1);
    cr_assert_not_null(seen);
    size_t summaries = 0;
    for (char *line = buf; *line;) {
        char *end = strchr(line, '\n');
        *end = '\0';
        if (json)
            cr_assert(json_flat_object(line), "not one valid JSON object: %s", line);
        else
            cr_assert(strlen(line) > 28 && line[4] == '-' && line[10] == 'T' && line[26] == 'Z', "%s", line);
        const char *t = strstr(line, json ? "\"msg\":\"task\"," : " task task=");
        if (t) {
            size_t idx;
            char status[16];
            double cost;
            long worker;
            int code, sig;
            int got = json
                          ? sscanf(t,
                                   "\"msg\":\"task\",\"task\":%zu,\"status\":\"%15[a-z_]\",\"cost\":%lf,\"worker\":%ld,"
                                   "\"code\":%d,\"signal\":%d",
                                   &idx, status, &cost, &worker, &code, &sig)
                          : sscanf(t, " task task=%zu status=%15s cost=%lf worker=%ld code=%d signal=%d", &idx, status,
                                   &cost, &worker, &code, &sig);
            cr_assert_eq(got, 6, "%s", line);
            cr_assert_lt(idx, n, "%s", line);
            cr_assert_eq(seen[idx]++, 0, "task %zu recorded twice", idx);
            cr_assert_str_eq(status, status_name(res[idx].status), "%s", line);
            cr_assert_eq(code, res[idx].code, "%s", line);
            cr_assert_eq(sig, res[idx].signal, "%s", line);
            cr_assert_eq(worker, (long)res[idx].worker, "%s", line);
        } else {
            char want[200];
            snprintf(want, sizeof want,
                     json ? "\"msg\":\"pool summary\",\"tasks\":%zu,\"ok\":%zu,\"failed\":%zu,\"crashed\":%zu,"
                            "\"timeout\":%zu,\"not_run\":%zu,"
                          : " pool summary tasks=%zu ok=%zu failed=%zu crashed=%zu timeout=%zu not_run=%zu ",
                     n, rep->ok, rep->failed, rep->crashed, rep->timed_out, rep->not_run);
            cr_assert_not_null(strstr(line, want), "%s\nwanted: %s", line, want);
            summaries++;
        }
        *end = '\n';
        line = end + 1;
    }
    cr_assert_eq(summaries, 1);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(seen[i], 1, "task %zu has %d records", i, seen[i]);
    free(seen);
    return buf;
}

/* Task 0 and task 2 run 90 ms and return 0; task 1 kills its worker. Task 0 is the first worker's first task, task 2
 * the first task of a worker forked to replace the one task 1 killed (with one worker, each runs in a new one). */
static int slow_first_task(size_t i, void *ctx)
{
    (void)ctx;
    if (i == 1)
        die_of(SIGKILL);
    usleep(90000);
    return 0;
}

/* The first task of a worker just forked, the pool's first or a replacement, is held to timeout_s like any other:
 * killed at 30 ms, well before the pool's periodic check (100 ms), not left to return at 90 ms and be recorded ok. */
Test(pool, the_first_task_of_a_new_worker_times_out_at_its_deadline)
{
    char *dir = th_tmpdir();
    char *path = th_path(dir, "pool.log");
    forklog *log = open_log(path, FORKLOG_FORMAT_TEXT);
    struct forklog_task_result res[3];
    struct forklog_pool_options o = {.workers = 1, .timeout_s = 0.03, .log = log, .results = res};
    struct forklog_pool_report rep;
    int rc = forklog_pool_map(&o, 3, slow_first_task, NULL, &rep);
    forklog_close(log);
    for (size_t i = 0; i < 3; i += 2) {
        cr_assert_eq(res[i].status, FORKLOG_TASK_TIMEOUT, "task %zu: %s after %f s", i, status_name(res[i].status),
                     res[i].duration_s);
        cr_assert_eq(res[i].signal, SIGKILL);
        cr_assert_geq(res[i].duration_s, 0.03, "task %zu killed only past the timeout (%f)", i, res[i].duration_s);
    }
    cr_assert_eq(res[1].status, FORKLOG_TASK_CRASHED);
    cr_assert_eq(res[1].signal, SIGKILL);
    cr_assert_eq(rc, 3);
    cr_assert_eq(rep.timed_out, 2);
    /* Three workers, one per task; a worker not ready 30 ms after its fork (a sanitizer build on a loaded machine)
     * counts as a failed start and is replaced, one more. */
    cr_assert_geq(rep.workers_started, 3, "%zu workers started", rep.workers_started);
    free(check_log(path, 0, 3, res, &rep));
    th_rmdir(dir);
    free(path);
    free(dir);
}

static int task0_hangs(size_t i, void *ctx)
{
    (void)ctx;
    if (i == 0)
        sleep(60);
    return 0;
}

static volatile sig_atomic_t fifo_alarms;

static void fifo_on_alarm(int sig)
{
    (void)sig;
    fifo_alarms++;
}

/* The log is a FIFO whose reader reads nothing for 2 s, so that the parent's records fill it (64 KiB) at once: a
 * record's write would wait for the reader, and the hanging task 0 would be killed only then. It is killed at its
 * deadline; the records wait in the parent, and every one is in the FIFO once the reader reads. With `flood`, a
 * 20 us interval timer interrupts the caller's calls meanwhile (a handler without SA_RESTART): a look at the FIFO's
 * room that fails with EINTR must not be taken for room. */
static void run_log_fifo_unread(int flood)
{
    char *dir = th_tmpdir();
    char *fifo = th_path(dir, "pool.fifo");
    char *copy = th_path(dir, "copy.log");
    cr_assert_eq(mkfifo(fifo, 0600), 0);
    int rd = open(fifo, O_RDONLY | O_NONBLOCK);
    cr_assert_geq(rd, 0);
    pid_t reader = fork(); /* before the log is open: it holds no write end, and sees EOF at its close */
    cr_assert_geq(reader, 0);
    if (reader == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        sleep(2);
        int out = open(copy, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (out < 0 || fcntl(rd, F_SETFL, 0) < 0)
            _exit(1);
        char buf[65536];
        ssize_t n;
        while ((n = read(rd, buf, sizeof buf)) > 0)
            if (write(out, buf, (size_t)n) != n)
                _exit(1);
        _exit(n == 0 ? 0 : 1);
    }
    close(rd);
    forklog *log = open_log(fifo, FORKLOG_FORMAT_TEXT);
    enum { N = 2000 };
    struct forklog_task_result *res = calloc(N, sizeof *res);
    cr_assert_not_null(res);
    struct forklog_pool_options o = {.workers = 2, .timeout_s = 0.3, .log = log, .results = res};
    struct forklog_pool_report rep;
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = fifo_on_alarm;
    sigemptyset(&sa.sa_mask);
    struct itimerval on = {{0, 20}, {0, 20}}, off = {{0, 0}, {0, 0}};
    if (flood) {
        cr_assert_eq(sigaction(SIGALRM, &sa, &old), 0);
        cr_assert_eq(setitimer(ITIMER_REAL, &on, NULL), 0);
    }
    int rc = forklog_pool_map(&o, N, task0_hangs, NULL, &rep);
    if (flood) {
        setitimer(ITIMER_REAL, &off, NULL);
        sigaction(SIGALRM, &old, NULL);
        cr_assert_geq(fifo_alarms, 100, "no flood: %d alarms", (int)fifo_alarms);
    }
    forklog_close(log);
    cr_assert_eq(th_wait_for(reader, 30), 0, "the reader did not copy the FIFO to its end");
    cr_assert_eq(res[0].status, FORKLOG_TASK_TIMEOUT, "%s", status_name(res[0].status));
    cr_assert_lt(res[0].duration_s, 1.5, "task 0 killed after %f s, when the reader began to read", res[0].duration_s);
    cr_assert_eq(rc, 1);
    cr_assert_eq(rep.ok, N - 1);
    free(check_log(copy, 0, N, res, &rep));
    free(res);
    th_rmdir(dir);
    free(copy);
    free(fifo);
    free(dir);
}

Test(pool, a_log_fifo_that_its_reader_does_not_read_holds_no_deadline_back)
{
    run_log_fifo_unread(0);
}

Test(pool, a_log_fifo_that_its_reader_does_not_read_holds_no_deadline_back_under_a_signal_flood)
{
    run_log_fifo_unread(1);
}

/* What a forked caller (a child of the test process that calls forklog_pool_map) hands back: shared memory. */
struct caller_out {
    int rc;
    int failures; /* test-specific count of things that went wrong in the caller */
    struct forklog_pool_report rep;
    struct forklog_task_result res[];
};

static struct caller_out *caller_out_new(size_t n)
{
    void *m = mmap(NULL, sizeof(struct caller_out) + n * sizeof(struct forklog_task_result), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(m, MAP_FAILED);
    struct caller_out *out = m;
    out->rc = INT_MIN;
    return out;
}

static void caller_out_free(struct caller_out *out, size_t n)
{
    munmap(out, sizeof(struct caller_out) + n * sizeof(struct forklog_task_result));
}

/* ---- hostile callers: SIGCHLD ---------------------------------------------------------------------------------- */

/* Task i: i % 6 == 1 fails with 3, 2 exits with 6, 3 dies of SIGSEGV; task 4 hangs past timeout_s; the rest are
 * ok. */
static int sig_mix_task(size_t i, void *ctx)
{
    (void)ctx;
    switch (i % 6) {
    case 1: return 3;
    case 2: _exit(6);
    case 3: die_of(SIGSEGV); break;
    case 4:
        if (i == 4)
            for (;;)
                pause();
        break;
    default: break;
    }
    return 0;
}

#define SIG_MIX_N 18

/* The outcome of sig_mix_task over SIG_MIX_N tasks. lost: 0 the wait statuses must be known, 1 they must be
 * unknown (SIGCHLD ignored: the kernel reaps), 2 either (a handler of the caller reaps, racing with the pool). */
static void check_sig_mix(int rc, const struct forklog_task_result *res, const struct forklog_pool_report *rep,
                          int lost)
{
    cr_assert_eq(rc, 10, "rc %d", rc);
    cr_assert_eq(rep->ok, 8);
    cr_assert_eq(rep->failed, 3);
    cr_assert_eq(rep->crashed, 6);
    cr_assert_eq(rep->timed_out, 1);
    cr_assert_eq(rep->not_run, 0);
    check_counts(rc, res, SIG_MIX_N, rep);
    for (size_t i = 0; i < SIG_MIX_N; i++) {
        const struct forklog_task_result *r = &res[i];
        cr_assert_gt(r->worker, 0, "task %zu", i);
        if (i == 4) {
            cr_assert_eq(r->status, FORKLOG_TASK_TIMEOUT);
            cr_assert_eq(r->signal, SIGKILL, "a timeout is a SIGKILL even when someone else reaped the worker");
            cr_assert_eq(r->code, 0);
            cr_assert_geq(r->duration_s, 0.25);
            continue;
        }
        switch (i % 6) {
        case 1:
            cr_assert_eq(r->status, FORKLOG_TASK_FAILED, "task %zu", i);
            cr_assert_eq(r->code, 3);
            break;
        case 2:
        case 3: {
            cr_assert_eq(r->status, FORKLOG_TASK_CRASHED, "task %zu", i);
            int known_code = i % 6 == 2 ? 6 : 0, known_sig = i % 6 == 2 ? 0 : SIGSEGV;
            int known = r->code == known_code && r->signal == known_sig;
            int unknown = r->code == -1 && r->signal == 0;
            cr_assert(lost == 0   ? known
                      : lost == 1 ? unknown
                                  : known || unknown,
                      "task %zu: code %d signal %d", i, r->code, r->signal);
            break;
        }
        default: cr_assert_eq(r->status, FORKLOG_TASK_OK, "task %zu", i);
        }
    }
}

static volatile sig_atomic_t reaped_by_handler;

/* A caller's SIGCHLD handler that reaps every child it can, the pool's workers included. */
static void reap_everything(int sig)
{
    (void)sig;
    int saved = errno;
    while (waitpid(-1, NULL, WNOHANG) > 0)
        reaped_by_handler++;
    errno = saved;
}

/* Runs the signal mix with the caller's SIGCHLD disposition set to `handler` (SIG_IGN, or a handler with `flags`),
 * checks that the pool kept it, and reads the log back. `lost` is check_sig_mix's. */
static void run_with_sigchld(void (*handler)(int), int flags, enum forklog_format format, int lost)
{
    char *dir = th_tmpdir();
    char *path = th_path(dir, "pool.log");
    forklog *log = open_log(path, format);
    struct sigaction sa, old, after;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sa.sa_flags = flags;
    sigemptyset(&sa.sa_mask);
    cr_assert_eq(sigaction(SIGCHLD, &sa, &old), 0);
    struct forklog_task_result res[SIG_MIX_N];
    struct forklog_pool_options o = {.workers = 3, .timeout_s = 0.3, .log = log, .results = res};
    struct forklog_pool_report rep;
    double t0 = th_now_s();
    int rc = forklog_pool_map(&o, SIG_MIX_N, sig_mix_task, NULL, &rep);
    double took = th_now_s() - t0;
    cr_assert_eq(sigaction(SIGCHLD, &old, &after), 0);
    cr_assert(after.sa_handler == handler, "the caller's disposition is kept");
    cr_assert_eq(after.sa_flags & SA_RESTART, flags & SA_RESTART, "and its flags");
    cr_assert_lt(took, 10, "took %f s", took);
    check_sig_mix(rc, res, &rep, lost);
    forklog_close(log);
    free(check_log(path, format == FORKLOG_FORMAT_JSON, SIG_MIX_N, res, &rep));
    th_rmdir(dir);
    free(path);
    free(dir);
}

/* Task 0 leaves a grandchild that holds every descriptor of the worker for a second, then ends its worker with
 * _exit(5) long before its deadline. */
static int exit_behind_a_grandchild_task(size_t i, void *ctx)
{
    (void)ctx;
    if (i != 0)
        return 0;
    pid_t g = fork();
    if (g == 0) {
        sleep(1);
        _exit(0);
    }
    usleep(2000);
    _exit(5);
}

/* With SIGCHLD ignored the worker is reaped by the kernel as it ends, and the grandchild keeps its pipe open: the
 * pool learns nothing until the deadline. There, a worker that is no longer its child is not killed (its pid may
 * belong to another process by then): it is found ended, and its task recorded crashed, status unknown. */
Test(pool, worker_reaped_by_the_caller_before_its_deadline_is_not_killed)
{
    enum { N = 3 };
    struct caller_out *out = caller_out_new(N);
    pid_t c = fork();
    cr_assert_geq(c, 0);
    if (c == 0) {
        signal(SIGCHLD, SIG_IGN);
        struct forklog_pool_options o = {.workers = 1, .timeout_s = 0.05, .results = out->res};
        out->rc = forklog_pool_map(&o, N, exit_behind_a_grandchild_task, NULL, &out->rep);
        _exit(0);
    }
    cr_assert_eq(th_wait_for(c, 30), 0);
    cr_assert_eq(out->res[0].status, FORKLOG_TASK_CRASHED, "task 0: status %s", status_name(out->res[0].status));
    cr_assert_eq(out->res[0].code, -1);
    cr_assert_eq(out->res[0].signal, 0);
    cr_assert_eq(out->rc, 1, "rc %d", out->rc);
    check_counts(out->rc, out->res, N, &out->rep);
    caller_out_free(out, N);
}

/* Task 0 leaves a grandchild that holds every descriptor of the worker for 3 s, publishes its worker's pid and
 * ends the worker at once. */
static _Atomic int *published_pid;

static int publish_and_exit_task(size_t i, void *ctx)
{
    (void)ctx;
    if (i != 0)
        return 0;
    if (fork() == 0) {
        sleep(3);
        _exit(0);
    }
    atomic_store(published_pid, (int)getpid());
    _exit(5);
}

static void *map_publish_and_exit(void *arg)
{
    struct caller_out *out = arg;
    struct forklog_pool_options o = {.workers = 1, .timeout_s = 1, .results = out->res};
    out->rc = forklog_pool_map(&o, 2, publish_and_exit_task, NULL, &out->rep);
    return NULL;
}

/* The init of a new PID namespace, with SIGCHLD ignored: runs the pool in a thread and, once task 0's worker has
 * ended (reaped by the kernel at once), starts a child of its own with that worker's pid (ns_last_pid). Exit 0:
 * the pool left that child alone; 10: the pool killed it; 77: the pid went to another process (try again). */
static int the_callers_child_gets_the_workers_pid(struct caller_out *out)
{
    signal(SIGCHLD, SIG_IGN);
    pthread_t th;
    if (pthread_create(&th, NULL, map_publish_and_exit, out) != 0)
        return 20;
    int w;
    while (!(w = atomic_load(published_pid)))
        usleep(100);
    while (kill(w, 0) == 0)
        usleep(50);
    if (th_next_pid_is(w))
        return 30;
    pid_t c = fork();
    if (c == 0) {
        sleep(5);
        _exit(0);
    }
    pthread_join(th, NULL);
    int alive = c > 0 && kill(c, 0) == 0;
    if (c > 0)
        kill(c, SIGKILL);
    return c != w ? 77 : alive ? 0 : 10;
}

/* A worker that ends while a grandchild holds its pipe, with SIGCHLD ignored, is gone at once; a child the caller
 * starts next may get its pid (made certain here through ns_last_pid, in a PID namespace of the test's own). That
 * child of the caller's own is not the worker: the pool must neither take its life for the task's nor kill it at
 * the task's deadline. (The pool sees the worker's end at once through its process descriptor, and its replacement
 * may take the pid first: 77, tried again.) */
Test(pool, a_new_child_of_the_caller_with_a_dead_workers_pid_is_not_killed_at_the_deadline)
{
#ifdef TEST_POOL_PIDS
    cr_skip_test("by pid, a child of the caller's own that gets a reaped worker's pid cannot be told from the worker "
                 "(docs/pool.md)");
#endif
    published_pid = mmap(NULL, sizeof *published_pid, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(published_pid, MAP_FAILED);
    int code = 77;
    for (int attempt = 0; attempt < 40 && code == 77; attempt++) {
        struct caller_out *out = caller_out_new(2);
        atomic_store(published_pid, 0);
        /* A namespace whose init has ended takes no new process, and a process unshares its children's PID
         * namespace only once: a new process per attempt makes a new namespace. */
        pid_t m = fork();
        cr_assert_geq(m, 0);
        if (m == 0) {
            if (unshare(CLONE_NEWPID) < 0)
                _exit(40);
            pid_t init = fork(); /* pid 1 of the new namespace */
            if (init == 0)
                _exit(the_callers_child_gets_the_workers_pid(out));
            int ist;
            if (init < 0 || waitpid(init, &ist, 0) != init)
                _exit(41);
            _exit(WIFEXITED(ist) ? WEXITSTATUS(ist) : 42);
        }
        int st;
        cr_assert_eq(waitpid(m, &st, 0), m);
        cr_assert(WIFEXITED(st), "the namespace's init ended with wait status %#x", st);
        code = WEXITSTATUS(st);
        if (code == 40) {
            caller_out_free(out, 2);
            cr_skip_test("no PID namespace of its own (unshare)");
        }
        if (code == 30) {
            caller_out_free(out, 2);
            cr_skip_test("ns_last_pid cannot be written here");
        }
        cr_assert_neq(code, 10, "the pool killed the caller's own child, which had the dead worker's pid");
        cr_assert(code == 0 || code == 77, "exit %d", code);
        if (code == 0) {
            cr_assert_eq(out->res[0].status, FORKLOG_TASK_CRASHED, "task 0: status %s",
                         status_name(out->res[0].status));
            cr_assert_lt(out->res[0].duration_s, 2, "task 0 took the caller's child's life: %f s",
                         out->res[0].duration_s);
            cr_assert_eq(out->res[1].status, FORKLOG_TASK_OK);
        }
        caller_out_free(out, 2);
    }
    munmap((void *)published_pid, sizeof *published_pid);
    cr_assert_eq(code, 0, "the dead worker's pid never went to the caller's child in 40 tries");
}

static int sleep_long_task(size_t i, void *ctx)
{
    (void)i, (void)ctx;
    sleep(60);
    return 0;
}

static void *map_sleepers(void *log)
{
    struct forklog_pool_options o = {.workers = 3, .log = log};
    forklog_pool_map(&o, 9, sleep_long_task, NULL, NULL);
    return NULL;
}

/* pthread_cancel() of a thread inside forklog_pool_map(), asleep in its poll() while its workers run: the thread
 * ends at once, and leaves no worker running or unreaped and no descriptor behind; the log stays usable. */
Test(pool, a_cancelled_call_kills_and_reaps_its_workers_and_leaves_no_descriptor)
{
    char *dir = th_tmpdir();
    char *path = th_path(dir, "pool.log");
    forklog *log = open_log(path, FORKLOG_FORMAT_TEXT);
    int fds = count_fds();
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, map_sleepers, log), 0);
    usleep(300000);
    double t0 = th_now_s();
    cr_assert_eq(pthread_cancel(th), 0);
    void *ret;
    cr_assert_eq(pthread_join(th, &ret), 0);
    cr_assert_eq(ret, PTHREAD_CANCELED);
    cr_assert_lt(th_now_s() - t0, 5, "the cancelled call took %f s to end", th_now_s() - t0);
    errno = 0;
    cr_assert_eq(waitpid(-1, NULL, WNOHANG), -1, "a worker is left (running or unreaped)");
    cr_assert_eq(errno, ECHILD);
    cr_assert_eq(count_fds(), fds, "descriptors: %d before, %d after", fds, count_fds());
    cr_assert_eq(forklog_info(log, "after the cancelled pool"), 0);
    cr_assert_eq(forklog_close(log), 0);
    size_t len;
    char *text = th_slurp(path, &len);
    cr_assert(len > 0 && text[len - 1] == '\n' && strstr(text, "after the cancelled pool\n"), "log: %s", text);
    cr_assert_null(strstr(text, "status="), "no task finished, so no task has a record: %s", text);
    free(text);
    th_rmdir(dir);
    free(path);
    free(dir);
}

Test(pool, sigchld_ignored_every_task_recorded)
{
    run_with_sigchld(SIG_IGN, 0, FORKLOG_FORMAT_TEXT, 1);
}

Test(pool, sigchld_default_with_sa_nocldwait_every_task_recorded)
{
    run_with_sigchld(SIG_DFL, SA_NOCLDWAIT, FORKLOG_FORMAT_TEXT, 1);
}

Test(pool, sigchld_handler_reaping_workers_with_sa_restart)
{
    run_with_sigchld(reap_everything, SA_RESTART, FORKLOG_FORMAT_TEXT, 2);
}

Test(pool, sigchld_handler_reaping_workers_without_sa_restart)
{
    run_with_sigchld(reap_everything, 0, FORKLOG_FORMAT_JSON, 2);
}

/* ---- hostile tasks: children, grandchildren, exit(), descriptors, sessions --------------------------------------- */

/* Forks a grandchild that sleeps 30 s holding every descriptor of the worker, the pool's pipes included, and
 * writes its pid to dir/gc-<i>. */
static pid_t linger(const char *dir, size_t i)
{
    pid_t c = fork();
    if (c == 0) {
        sleep(30);
        _exit(0);
    }
    if (c > 0) {
        char path[4096];
        snprintf(path, sizeof path, "%s/gc-%zu", dir, i);
        FILE *f = fopen(path, "w");
        if (!f)
            return -1;
        fprintf(f, "%ld\n", (long)c);
        fclose(f);
    }
    return c;
}

/* Task i % 4: 0 forks a child and waits for it (its exit status must reach the task: the pool never reaps the
 * task's children); 1 leaves a lingering grandchild behind; 2 does too, then exits with 4; 3 forks a child it never
 * waits for, except task 7, which leaves a lingering grandchild and hangs past timeout_s. */
static int family_task(size_t i, void *ctx)
{
    const char *dir = ctx;
    switch (i % 4) {
    case 0: {
        pid_t c = fork();
        if (c < 0)
            return 1;
        if (c == 0) {
            usleep(20000);
            _exit(33);
        }
        int st;
        pid_t r;
        while ((r = waitpid(c, &st, 0)) < 0 && errno == EINTR) {
        }
        if (r != c)
            return 2;
        return WIFEXITED(st) && WEXITSTATUS(st) == 33 ? 0 : 3;
    }
    case 1: return linger(dir, i) > 0 ? 0 : 1;
    case 2:
        if (linger(dir, i) <= 0)
            return 1;
        _exit(4);
    default:
        if (i == 7) {
            linger(dir, i);
            for (;;)
                pause();
        }
        if (fork() == 0)
            _exit(0);
        return 0;
    }
}

/* Each task leaves a grandchild that holds every descriptor of its worker, the worker's pipe included, until the
 * test closes the pipe in ctx; with max_tasks_per_worker 1, every task ends its worker. */
static int lingering_grandchild_task(size_t i, void *ctx)
{
    (void)i;
    const int *hold = ctx;
    pid_t g = fork();
    if (g < 0)
        return 1;
    if (g == 0) {
        char c;
        close(hold[1]);
        ssize_t r = read(hold[0], &c, 1); /* until the test closes its write end */
        (void)r;
        _exit(0);
    }
    return 0;
}

/* A worker whose pipe a grandchild holds open is seen ended when it ends (its process descriptor), not at the next
 * 100 ms check: 40 workers, one after the other, take far less than the 2 s or more those checks would cost (4 s
 * measured), so that a loaded machine does not make the bound. */
Test(pool, a_grandchild_holding_the_pipe_does_not_delay_the_next_worker)
{
    enum { N = 40 };
    int hold[2];
    cr_assert_eq(pipe2(hold, O_CLOEXEC), 0);
    struct forklog_task_result res[N];
    struct forklog_pool_options o = {.workers = 1, .max_tasks_per_worker = 1, .results = res};
    struct forklog_pool_report rep;
    double t0 = th_now_s();
    int rc = forklog_pool_map(&o, N, lingering_grandchild_task, hold, &rep);
    double took = th_now_s() - t0;
    close(hold[1]); /* the grandchildren end */
    close(hold[0]);
    cr_assert_eq(rc, 0, "rc %d", rc);
    check_counts(rc, res, N, &rep);
    cr_assert_eq(rep.workers_started, N);
#if defined(TEST_POOL_PIDS) && TEST_POOL_PIDS == 1
    /* Without process descriptors such a worker's end is found by the 100 ms check, as docs/pool.md says. */
    const double bound = N * 0.2 + 2;
#else
    const double bound = 2.0;
#endif
    cr_assert_lt(took, bound, "%d workers took %.3f s: each one's end was seen late", N, took);
}

Test(pool, tasks_with_children_and_lingering_grandchildren)
{
    char *dir = th_tmpdir();
    char *path = th_path(dir, "pool.log");
    forklog *log = open_log(path, FORKLOG_FORMAT_TEXT);
    enum { N = 12 };
    struct forklog_task_result res[N];
    struct forklog_pool_options o = {.workers = 3, .timeout_s = 0.5, .log = log, .results = res};
    struct forklog_pool_report rep;
    double t0 = th_now_s();
    int rc = forklog_pool_map(&o, N, family_task, dir, &rep);
    double took = th_now_s() - t0;

    /* The grandchildren must still be alive (the pool did not wait for them); kill them before any assert. */
    static const size_t lingering[] = {1, 2, 5, 6, 7, 9, 10};
    size_t alive = 0, found = 0;
    for (size_t k = 0; k < sizeof lingering / sizeof *lingering; k++) {
        char name[32];
        snprintf(name, sizeof name, "gc-%zu", lingering[k]);
        char *gc = th_path(dir, name);
        FILE *f = fopen(gc, "r");
        long pid = 0;
        if (f) {
            found += fscanf(f, "%ld", &pid) == 1 && pid > 0;
            fclose(f);
        }
        if (pid > 0) {
            alive += kill((pid_t)pid, 0) == 0;
            kill((pid_t)pid, SIGKILL);
        }
        free(gc);
    }
    cr_assert_lt(took, 10, "the pool waited for its workers' children (%f s)", took);
    cr_assert_eq(found, 7);
    cr_assert_eq(alive, 7, "the grandchildren outlived the map");
    cr_assert_eq(rc, 4, "rc %d", rc);
    check_counts(rc, res, N, &rep);
    for (size_t i = 0; i < N; i++) {
        if (i == 7) {
            cr_assert_eq(res[i].status, FORKLOG_TASK_TIMEOUT);
            cr_assert_eq(res[i].signal, SIGKILL);
        } else if (i % 4 == 2) {
            cr_assert_eq(res[i].status, FORKLOG_TASK_CRASHED, "task %zu", i);
            cr_assert_eq(res[i].code, 4);
        } else {
            cr_assert_eq(res[i].status, FORKLOG_TASK_OK, "task %zu: code %d", i, res[i].code);
        }
    }
    forklog_close(log);
    free(check_log(path, 0, N, res, &rep));
    th_rmdir(dir);
    free(path);
    free(dir);
}

/* An atexit handler of the caller that removes its file, like a program's cleanup of its pid file or socket: run
 * in a worker, it would remove the file while the caller still runs. Disarmed (NULL) outside the test. */
static const char *caller_file;
static void caller_cleanup(void)
{
    if (caller_file)
        unlink(caller_file);
}

/* A handler a task registers in its own worker: that one belongs to the worker and must run. */
static const char *task_file;
static void task_cleanup(void)
{
    if (task_file)
        close(open(task_file, O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
}

/* Task i % 4: 1 calls exit(7), 2 calls _exit(9); task 3 registers task_cleanup and calls exit(11), task 7 calls
 * exit(0); the rest are ok. */
static int exit_task(size_t i, void *ctx)
{
    (void)ctx;
    switch (i % 4) {
    case 1: exit(7);
    case 2: _exit(9);
    case 3:
        if (i == 3) {
            if (atexit(task_cleanup) != 0)
                return 1;
            exit(11);
        }
        if (i == 7)
            exit(0);
        break;
    default: break;
    }
    return 0;
}

Test(pool, tasks_calling_exit_do_not_run_the_callers_exit_handlers)
{
    char *dir = th_tmpdir();
    char *path = th_path(dir, "pool.log");
    char *marker = th_path(dir, "caller-file");
    char *task_marker = th_path(dir, "task-file");
    char *out_path = th_path(dir, "stdio");
    forklog *log = open_log(path, FORKLOG_FORMAT_TEXT);
    close(open(marker, O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
    caller_file = marker;
    task_file = task_marker;
    cr_assert_eq(atexit(caller_cleanup), 0);
    /* A stdio stream of the caller with a line still in its buffer: a worker that flushed its copy would write
     * the line a second time. */
    FILE *out = fopen(out_path, "w");
    cr_assert_not_null(out);
    cr_assert_eq(setvbuf(out, NULL, _IOFBF, 4096), 0);
    fputs("caller line\n", out);

    enum { N = 12 };
    struct forklog_task_result res[N];
    struct forklog_pool_options o = {.workers = 3, .log = log, .results = res};
    struct forklog_pool_report rep;
    int rc = forklog_pool_map(&o, N, exit_task, NULL, &rep);
    caller_file = NULL;
    task_file = NULL;
    fclose(out);

    struct stat st;
    cr_assert_eq(stat(marker, &st), 0, "a worker ran the caller's atexit handler");
    cr_assert_eq(stat(task_marker, &st), 0, "the handler a task registered in its worker ran");
    size_t len;
    char *text = th_slurp(out_path, &len);
    cr_assert_str_eq(text, "caller line\n", "a worker flushed the caller's stdio buffer");
    free(text);
    cr_assert_eq(rc, 8, "rc %d", rc);
    check_counts(rc, res, N, &rep);
    cr_assert_eq(rep.crashed, 8);
    for (size_t i = 0; i < N; i++) {
        int code = i % 4 == 1 ? 7 : i % 4 == 2 ? 9 : i == 3 ? 11 : i == 7 ? 0 : -1;
        if (code < 0) {
            cr_assert_eq(res[i].status, FORKLOG_TASK_OK, "task %zu", i);
            continue;
        }
        cr_assert_eq(res[i].status, FORKLOG_TASK_CRASHED, "task %zu", i);
        cr_assert_eq(res[i].code, code, "task %zu: code %d", i, res[i].code);
        cr_assert_eq(res[i].signal, 0, "task %zu: signal %d", i, res[i].signal);
    }
    forklog_close(log);
    free(check_log(path, 0, N, res, &rep));
    th_rmdir(dir);
    free(out_path);
    free(task_marker);
    free(marker);
    free(path);
    free(dir);
}

/* Another thread of the caller registers exit handlers all along (as atexit() calls in libraries, or C++ statics'
 * destructors, do on first use) while the pool forks 200 workers, one per task: a worker forked while that thread
 * held the C library's lock of the exit handler list must not wait for it before it runs its task. */
static atomic_int registering_stop, registering_started;
static void registered_handler(void)
{
}
static void *register_exit_handlers(void *arg)
{
    (void)arg;
    for (long n = 0; n < 2000000 && !atomic_load(&registering_stop); n++) {
        if (atexit(registered_handler) != 0)
            break;
        if (n == 1000)
            atomic_store(&registering_started, 1);
    }
    atomic_store(&registering_started, 1);
    return NULL;
}

/* Runs 200 tasks `task`, one per worker, while another thread of the caller keeps registering exit handlers:
 * every task must run, within 30 s. */
static void map_while_another_thread_registers_exit_handlers(forklog_task_fn task, const char *hang)
{
    enum { N = 200 };
    struct caller_out *out = caller_out_new(N);
    pid_t c = fork();
    cr_assert_geq(c, 0);
    if (c == 0) {
        pthread_t t;
        if (pthread_create(&t, NULL, register_exit_handlers, NULL) != 0)
            _exit(2);
        while (!atomic_load(&registering_started))
            sched_yield();
        struct forklog_pool_options o = {.workers = 2, .max_tasks_per_worker = 1, .results = out->res};
        out->rc = forklog_pool_map(&o, N, task, NULL, &out->rep);
        atomic_store(&registering_stop, 1);
        pthread_join(t, NULL);
        _exit(0); /* not exit(): two million handlers */
    }
    cr_assert_eq(th_wait_for(c, 30), 0, "the pool hung (%s)", hang);
    cr_assert_eq(out->rc, 0, "rc %d", out->rc);
    check_counts(out->rc, out->res, N, &out->rep);
    cr_assert_eq(out->rep.ok, N);
    caller_out_free(out, N);
}

Test(pool, workers_forked_while_another_thread_registers_exit_handlers_run)
{
    map_while_another_thread_registers_exit_handlers(ok_task, "a worker waits for the exit handler list's lock");
}

/* A task that runs a pool of its own, of one task. */
static int nested_one_task(size_t i, void *ctx)
{
    (void)i, (void)ctx;
    struct forklog_pool_options o = {.workers = 1};
    return forklog_pool_map(&o, 1, ok_task, NULL, NULL);
}

/* The same, each task running a pool of its own: a worker forked while the other thread held the lock of the exit
 * handler list has it held for ever, and the nested call must not wait for it (it registered its exit handler there,
 * and waited for ever before forking anything). */
Test(pool, nested_pools_in_workers_forked_while_another_thread_registers_exit_handlers_run)
{
    map_while_another_thread_registers_exit_handlers(nested_one_task,
                                                     "a nested call waits for the exit handler list's lock");
}

/* When ctx says the caller had closed descriptors 0, 1 and 2, every task first checks that they are still closed
 * (no task opens any): the pool's own descriptors must not take those numbers, where a task would print into them
 * or close them. Then task i % 4: 0 closes descriptors 0, 1 and 2; 1 and 2 write 64 KiB to stdout and to stderr,
 * whatever they are; task 3 closes every descriptor from 3 up, like closefrom(3). */
static int stdio_task(size_t i, void *ctx)
{
    const int *caller_closed = ctx;
    if (*caller_closed)
        for (int fd = 0; fd < 3; fd++)
            if (fcntl(fd, F_GETFD) != -1)
                return 10 + fd;
    switch (i % 4) {
    case 0:
        close(0);
        close(1);
        close(2);
        return 0;
    case 1:
    case 2: {
        static char junk[65536];
        memset(junk, 'j', sizeof junk);
        for (int fd = 1; fd < 3; fd++) {
            ssize_t n = write(fd, junk, sizeof junk);
            (void)n;
        }
        return 0;
    }
    default:
        if (i == 3)
            for (int fd = 3; fd < 1024; fd++)
                close(fd);
        return 0;
    }
}

/* Runs stdio_task over n tasks in a forked caller that has closed its descriptors 0, 1 and 2 first when `closed`. */
static void run_stdio_tasks(int closed)
{
    char *dir = th_tmpdir();
    char *path = th_path(dir, "pool.log");
    enum { N = 40 };
    struct caller_out *out = caller_out_new(N);
    pid_t c = fork();
    cr_assert_geq(c, 0);
    if (c == 0) {
        forklog *log;
        if (forklog_open(&log, path, NULL) != 0)
            _exit(2);
        /* /dev/null on 0-2 when they stay open: a task writing 64 KiB to a terminal or a pipe could block. */
        int null = open("/dev/null", O_RDWR);
        for (int fd = 0; fd < 3; fd++)
            if (closed)
                close(fd);
            else
                dup2(null, fd);
        if (null > 2)
            close(null);
        struct forklog_pool_options o = {.workers = 3, .log = log, .results = out->res};
        out->rc = forklog_pool_map(&o, N, stdio_task, &closed, &out->rep);
        forklog_close(log);
        _exit(0);
    }
    cr_assert_eq(th_wait_for(c, 30), 0);
    cr_assert_eq(out->rc, 0, "rc %d", out->rc);
    check_counts(out->rc, out->res, N, &out->rep);
    for (size_t i = 0; i < N; i++)
        cr_assert_eq(out->res[i].status, FORKLOG_TASK_OK, "task %zu: %s code %d signal %d", i,
                     status_name(out->res[i].status), out->res[i].code, out->res[i].signal);
    free(check_log(path, 0, N, out->res, &out->rep));
    caller_out_free(out, N);
    th_rmdir(dir);
    free(path);
    free(dir);
}

Test(pool, tasks_closing_stdio_and_every_descriptor)
{
    run_stdio_tasks(0);
}

Test(pool, caller_with_stdio_closed)
{
    run_stdio_tasks(1);
}

/* Every task calls setsid(); task 1 then hangs past timeout_s. */
static int setsid_task(size_t i, void *ctx)
{
    (void)ctx;
    /* setsid() fails (EPERM) in a worker that an earlier task already made a session leader. */
    if (setsid() < 0 && getsid(0) != getpid())
        return 20;
    if (i == 1)
        for (;;)
            pause();
    return 0;
}

Test(pool, tasks_calling_setsid_and_a_timeout)
{
    char *dir = th_tmpdir();
    char *path = th_path(dir, "pool.log");
    forklog *log = open_log(path, FORKLOG_FORMAT_JSON);
    enum { N = 8 };
    struct forklog_task_result res[N];
    struct forklog_pool_options o = {.workers = 2, .timeout_s = 0.3, .log = log, .results = res};
    struct forklog_pool_report rep;
    int rc = forklog_pool_map(&o, N, setsid_task, NULL, &rep);
    cr_assert_eq(rc, 1, "rc %d", rc);
    check_counts(rc, res, N, &rep);
    cr_assert_eq(res[1].status, FORKLOG_TASK_TIMEOUT);
    cr_assert_eq(res[1].signal, SIGKILL);
    cr_assert_geq(res[1].duration_s, 0.3);
    cr_assert_lt(res[1].duration_s, 10);
    for (size_t i = 0; i < N; i++)
        if (i != 1)
            cr_assert_eq(res[i].status, FORKLOG_TASK_OK, "task %zu: code %d", i, res[i].code);
    forklog_close(log);
    free(check_log(path, 1, N, res, &rep));
    th_rmdir(dir);
    free(path);
    free(dir);
}

/* ---- a caller killed while its workers run ----------------------------------------------------------------------- */

/* Shared with the workers: the pid of each worker that got to its hanging task. */
struct orphan_scene {
    atomic_int hanging;
    pid_t pid[4];
};

/* What drops the privileges of a worker, as pre-fork servers do: the kernel clears a process's parent-death signal
 * when its effective user or group changes. */
enum { DROP_NONE, DROP_IN_INIT, DROP_IN_TASK };
static int drop_mode;

static int drop_privileges(void *arg)
{
    (void)arg;
    return setgid(65534) != 0 || setuid(65534) != 0;
}

/* With DROP_IN_TASK, task i < 2 drops the privileges of its worker and returns; every other task hangs. */
static int orphan_task(size_t i, void *ctx)
{
    struct orphan_scene *sc = ctx;
    if (drop_mode == DROP_IN_TASK && i < 2)
        return drop_privileges(NULL) || usleep(1000) != 0;
    sc->pid[atomic_fetch_add(&sc->hanging, 1)] = getpid();
    for (;;)
        pause();
}

/* A caller killed (SIGKILL) while each of its two workers hangs in a task: no worker outlives it, also when the
 * initializer or an earlier task changed the worker's user (which clears the parent-death signal). The workers hold
 * the write end of a pipe the test reads: its EOF says that every one of them has ended. */
static void run_caller_killed(int mode)
{
    if (mode != DROP_NONE && geteuid() != 0)
        cr_skip_test("changing a worker's user needs root");
    struct orphan_scene *sc = mmap(NULL, sizeof *sc, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(sc, MAP_FAILED);
    memset(sc, 0, sizeof *sc);
    int hold[2];
    cr_assert_eq(pipe(hold), 0);
    drop_mode = mode;
    pid_t c = fork();
    cr_assert_geq(c, 0);
    if (c == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        close(hold[0]);
        struct forklog_pool_options o = {.workers = 2, .init = mode == DROP_IN_INIT ? drop_privileges : NULL};
        (void)forklog_pool_map(&o, mode == DROP_IN_TASK ? 4 : 2, orphan_task, sc, NULL);
        _exit(0);
    }
    close(hold[1]);
    double end = th_now_s() + 20;
    while (atomic_load(&sc->hanging) < 2 && th_now_s() < end)
        usleep(1000);
    int started = atomic_load(&sc->hanging);
    kill(c, SIGKILL);
    (void)th_wait(c);
    struct pollfd pfd = {hold[0], POLLIN, 0};
    int ended = poll(&pfd, 1, 5000) == 1;
    for (int k = 0; k < started; k++)
        kill(sc->pid[k], SIGKILL); /* whatever the outcome: nothing left behind by the test */
    close(hold[0]);
    munmap(sc, sizeof *sc);
    cr_assert_eq(started, 2, "%d workers got to their task", started);
    cr_assert(ended, "a worker still ran 5 s after its caller was killed");
}

Test(pool, workers_end_with_their_killed_caller)
{
    run_caller_killed(DROP_NONE);
}

Test(pool, workers_whose_initializer_changed_their_user_end_with_their_killed_caller)
{
    run_caller_killed(DROP_IN_INIT);
}

Test(pool, workers_whose_task_changed_their_user_end_with_their_killed_caller)
{
    run_caller_killed(DROP_IN_TASK);
}

/* ---- RLIMIT_NPROC reached when a worker is replaced ------------------------------------------------------------ */

/* A uid that no other process here has: RLIMIT_NPROC counts the processes of the caller's real uid. */
#define NPROC_UID 54321

/* Task 1 lowers its caller's RLIMIT_NPROC to 1 (prlimit(): a process may set the limits of another of its uid),
 * which the caller already fills, then ends its worker: the replacement's fork fails, with no worker left. */
static int nproc_task(size_t i, void *ctx)
{
    (void)ctx;
    if (i != 1)
        return 0;
    struct rlimit one = {1, 1};
    if (prlimit(getppid(), RLIMIT_NPROC, &one, NULL) != 0)
        return 1;
    _exit(7);
}

/* In a child of the test, as NPROC_UID, the log opened before: 0 when every outcome is the documented one, else the
 * number of the check that failed. */
static int run_nproc_reached(const char *path)
{
    forklog *log = open_log(path, FORKLOG_FORMAT_TEXT);
    if (setgid(NPROC_UID) != 0 || setuid(NPROC_UID) != 0)
        return 1;
    struct forklog_task_result res[6];
    struct forklog_pool_options o = {.workers = 1, .timeout_s = 5, .log = log, .results = res};
    struct forklog_pool_report rep;
    int64_t t0 = fl__mono_ns();
    int rc = forklog_pool_map(&o, 6, nproc_task, NULL, &rep);
    int64_t took = fl__mono_ns() - t0;
    forklog_close(log);
    if (took > 3000000000LL)
        return 3;
    if (rc != -EAGAIN)
        return 4;
    if (rep.ok != 1 || rep.crashed != 1 || rep.not_run != 4 || rep.failed + rep.timed_out != 0)
        return 5;
    if (res[0].status != FORKLOG_TASK_OK || res[1].status != FORKLOG_TASK_CRASHED || res[1].code != 7)
        return 6;
    for (int i = 2; i < 6; i++)
        if (res[i].status != FORKLOG_TASK_NOT_RUN)
            return 7;
    return 0;
}

Test(pool, rlimit_nproc_reached_when_replacing_the_only_worker_records_the_rest_not_run)
{
    if (geteuid() != 0)
        cr_skip_test("needs root to take a uid of its own, whose RLIMIT_NPROC counts only this test's processes");
    char *dir = th_tmpdir();
    char *path = th_path(dir, "pool.log");
    pid_t c = fork();
    cr_assert_geq(c, 0);
    if (c == 0)
        _exit(run_nproc_reached(path));
    int st;
    cr_assert_eq(waitpid(c, &st, 0), c);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %#x", st);
    size_t len;
    char *buf = th_slurp(path, &len);
    cr_assert_eq(th_count_lines(buf, len), 7, "one record per task and the summary:\n%s", buf);
    cr_assert_eq(count_matching(buf, " status=not_run cost=0 worker=0 "), 4, "%s", buf);
    cr_assert_eq(count_matching(buf, "task=1 status=crashed "), 1, "%s", buf);
    cr_assert_eq(count_matching(buf, "task=0 status=ok "), 1, "%s", buf);
    cr_assert_eq(count_matching(buf, " ok=1 failed=0 crashed=1 timeout=0 not_run=4 workers=1 "), 1, "%s", buf);
    free(buf);
    th_rmdir(dir);
    free(path);
    free(dir);
}

/* ---- a worker traced by its caller ------------------------------------------------------------------------------ */

/* Task 1 makes its worker traced by the caller (PTRACE_TRACEME), then crashes: under a tracer the signal stops the
 * worker instead (a signal-delivery stop), which the caller's wait for that child reports. The worker has not ended
 * there: nothing continues it, so it is killed at its deadline, and reaped. */
static int traced_crash_task(size_t i, void *ctx)
{
    (void)ctx;
    if (i == 1) {
        if (ptrace(PTRACE_TRACEME, 0, NULL, NULL) != 0)
            return 1;
        die_of(SIGSEGV);
    }
    return 0;
}

static void run_traced_worker_is_killed_and_reaped(void)
{
    char *dir = th_tmpdir();
    char *path = th_path(dir, "pool.log");
    forklog *log = open_log(path, FORKLOG_FORMAT_TEXT);
    struct forklog_task_result res[4];
    struct forklog_pool_options o = {.workers = 1, .timeout_s = 0.3, .log = log, .results = res};
    struct forklog_pool_report rep;
    int rc = forklog_pool_map(&o, 4, traced_crash_task, NULL, &rep);
    forklog_close(log);
    pid_t traced = res[1].worker;
    cr_assert_gt(traced, 0);
    int st;
    pid_t w = waitpid(traced, &st, WNOHANG | __WALL);
    int gone = w < 0 && errno == ECHILD;
    if (!gone) {
        kill(traced, SIGKILL);
        while (waitpid(traced, &st, __WALL) < 0 && errno == EINTR) {
        }
    }
    cr_assert(gone, "the traced worker outlived the pool (waitpid %d, status %#x)", (int)w, st);
    cr_assert_eq(rc, 1, "rc %d", rc);
    cr_assert_eq(rep.timed_out, 1);
    cr_assert_eq(rep.ok, 3);
    cr_assert_eq(res[1].status, FORKLOG_TASK_TIMEOUT, "status %d signal %d", (int)res[1].status, res[1].signal);
    cr_assert_eq(res[1].signal, SIGKILL);
    cr_assert_geq(res[1].duration_s, 0.3);
    size_t len;
    char *buf = th_slurp(path, &len);
    cr_assert_eq(th_count_lines(buf, len), 5, "%s", buf);
    cr_assert_eq(count_matching(buf, "task=1 status=timeout "), 1, "%s", buf);
    cr_assert_eq(count_matching(buf, " ok=3 failed=0 crashed=0 timeout=1 not_run=0 "), 1, "%s", buf);
    free(buf);
    th_rmdir(dir);
    free(path);
    free(dir);
}

Test(pool, a_worker_its_task_made_traced_by_the_caller_and_stopped_in_a_crash_is_killed_and_reaped)
{
    run_traced_worker_is_killed_and_reaped();
}

/* ---- hostile callers: a thousand workers, few descriptors -------------------------------------------------------- */

static int short_task(size_t i, void *ctx)
{
    (void)i, (void)ctx;
    usleep(20000);
    return 0;
}

static atomic_int opener_stop;

/* Another thread of the caller that keeps making (and closing) a pipe while the map runs: it counts in
 * out->failures the times it found fewer than two descriptors free. */
static void *opener_thread(void *arg)
{
    struct caller_out *out = arg;
    while (!atomic_load(&opener_stop)) {
        int fds[2];
        if (pipe(fds) == 0) {
            close(fds[0]);
            close(fds[1]);
        } else if (errno == EMFILE) {
            out->failures++;
        }
        usleep(200);
    }
    return NULL;
}

/* A forked caller asks for `workers` workers for n tasks, under RLIMIT_NOFILE = nofile when nofile is not 0, with
 * another thread opening files meanwhile. */
static void run_many_workers(unsigned workers, size_t n, rlim_t nofile)
{
    char *dir = th_tmpdir();
    char *path = th_path(dir, "pool.log");
    struct caller_out *out = caller_out_new(n);
    pid_t c = fork();
    cr_assert_geq(c, 0);
    if (c == 0) {
        struct rlimit rl = {nofile, nofile};
        if (nofile && setrlimit(RLIMIT_NOFILE, &rl) != 0)
            _exit(2);
        forklog *log;
        if (forklog_open(&log, path, NULL) != 0)
            _exit(3);
        int before = count_fds();
        pthread_t th;
        if (pthread_create(&th, NULL, opener_thread, out) != 0)
            _exit(4);
        struct forklog_pool_options o = {.workers = workers, .log = log, .results = out->res};
        out->rc = forklog_pool_map(&o, n, short_task, NULL, &out->rep);
        atomic_store(&opener_stop, 1);
        pthread_join(th, NULL);
        if (count_fds() != before)
            _exit(5);
        forklog_close(log);
        _exit(0);
    }
    cr_assert_eq(th_wait_for(c, 60), 0);
    cr_assert_eq(out->rc, 0, "rc %d", out->rc);
    cr_assert_eq(out->rep.ok, n);
    check_counts(out->rc, out->res, n, &out->rep);
    cr_assert_geq(out->rep.workers_started, 2);
    if (nofile)
        cr_assert_lt(out->rep.workers_started, nofile, "%zu workers", out->rep.workers_started);
    cr_assert_eq(out->failures, 0, "another thread of the caller found no descriptor %d times", out->failures);
    free(check_log(path, 0, n, out->res, &out->rep));
    caller_out_free(out, n);
    th_rmdir(dir);
    free(path);
    free(dir);
}

Test(pool, a_thousand_workers)
{
    run_many_workers(1000, 2000, 0);
}

Test(pool, a_thousand_workers_within_256_descriptors)
{
    run_many_workers(1000, 2000, 256);
}

Test(pool, no_descriptor_left_every_task_recorded_not_run)
{
    char *dir = th_tmpdir();
    char *path = th_path(dir, "pool.log");
    enum { N = 10 };
    struct caller_out *out = caller_out_new(N);
    pid_t c = fork();
    cr_assert_geq(c, 0);
    if (c == 0) {
        struct rlimit rl = {64, 64};
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            _exit(2);
        forklog *log;
        if (forklog_open(&log, path, NULL) != 0)
            _exit(3);
        while (open("/dev/null", O_RDONLY) >= 0) {
        }
        struct forklog_pool_options o = {.workers = 2, .log = log, .results = out->res};
        out->rc = forklog_pool_map(&o, N, ok_task, NULL, &out->rep);
        forklog_close(log);
        _exit(0);
    }
    cr_assert_eq(th_wait_for(c, 30), 0);
    cr_assert_eq(out->rc, -EMFILE, "rc %d", out->rc);
    cr_assert_eq(out->rep.not_run, N);
    cr_assert_eq(out->rep.workers_started, 0);
    check_counts(out->rc, out->res, N, &out->rep);
    free(check_log(path, 0, N, out->res, &out->rep));
    caller_out_free(out, N);
    th_rmdir(dir);
    free(path);
    free(dir);
}

/* The caller has closed 0, 1 and 2 and its RLIMIT_NOFILE is 3: the wake pipe lands on 0 and 1 and cannot be moved
 * above 2. That is the documented "no descriptor left" case: every task not_run and -EMFILE, not the -EINVAL of
 * fcntl(F_DUPFD_CLOEXEC, 3), which the pool documents only for bad arguments, before anything starts. */
Test(pool, no_descriptor_number_above_2_is_emfile)
{
    enum { N = 4 };
    struct caller_out *out = caller_out_new(N);
    pid_t c = fork();
    cr_assert_geq(c, 0);
    if (c == 0) {
        for (int fd = 0; fd < 4096; fd++)
            close(fd);
        struct rlimit rl = {3, 3};
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            _exit(2);
        struct forklog_pool_options o = {.workers = 1, .results = out->res};
        out->rc = forklog_pool_map(&o, N, ok_task, NULL, &out->rep);
        _exit(0);
    }
    cr_assert_eq(th_wait_for(c, 30), 0);
    cr_assert_eq(out->rc, -EMFILE, "rc %d", out->rc);
    cr_assert_eq(out->rep.not_run, N);
    cr_assert_eq(out->rep.workers_started, 0);
    check_counts(out->rc, out->res, N, &out->rep);
    caller_out_free(out, N);
}

/* A caller that locks its future memory (mlockall(MCL_FUTURE), as real-time programs do) and has too small an
 * RLIMIT_MEMLOCK for the pool's shared mapping: mmap() fails with EAGAIN. That is no memory for the pool, returned
 * before any record as -ENOMEM; -EAGAIN means a failed fork, after which every task has its not_run record. Run in a
 * child that drops to an unprivileged user, since root is not held to RLIMIT_MEMLOCK. */
Test(pool, shared_mapping_over_the_memlock_limit_is_enomem)
{
    if (TH_SANITIZED)
        cr_skip_test("the sanitizers make mlockall() do nothing");
    pid_t c = fork();
    cr_assert_geq(c, 0);
    if (c == 0) {
        if (geteuid() == 0 && (setgid(65534) != 0 || setuid(65534) != 0))
            _exit(90);
        struct rlimit rl = {1 << 20, 1 << 20};
        if (setrlimit(RLIMIT_MEMLOCK, &rl) != 0 || mlockall(MCL_FUTURE) != 0)
            _exit(91);
        enum { N = 100000 }; /* a mapping of about 5 MB */
        static struct forklog_task_result res[N];
        memset(res, 0xff, sizeof res);
        struct forklog_pool_options o = {.workers = 1, .results = res};
        struct forklog_pool_report rep;
        memset(&rep, 0xff, sizeof rep);
        int rc = forklog_pool_map(&o, N, ok_task, NULL, &rep);
        if (rc != -ENOMEM)
            _exit(rc < 0 ? -rc : 92);
        /* No task ran: the results say not_run for each, and the report's counts add up to the tasks as well. */
        for (size_t i = 0; i < N; i++)
            if (res[i].status != FORKLOG_TASK_NOT_RUN || res[i].worker != 0)
                _exit(93);
        if (rep.not_run != N || rep.ok || rep.failed || rep.crashed || rep.timed_out || rep.workers_started)
            _exit(94);
        _exit(0);
    }
    int st = th_wait_for(c, 30);
    cr_assert_eq(st, 0, "exit %d (errno %d as the return value, 9x: setup, 93: results, 94: report)", st, st);
}

/* Task 0 hangs past the timeout; the others are quick. */
static int first_hangs_task(size_t i, void *ctx)
{
    (void)ctx;
    if (i == 0)
        for (;;)
            sleep(60);
    return 0;
}

/* RLIMIT_NOFILE so tight that one worker's pipe fits beside the wake pipe and no more. The timed-out worker,
 * killed but not reaped yet, still holds its pipe, so its replacement's pipe fails with EMFILE at first; once
 * the killed worker is reaped the replacement fits, and every other task runs. */
Test(pool, descriptors_for_one_worker_survive_a_timeout)
{
    char *dir = th_tmpdir();
    char *path = th_path(dir, "pool.log");
    enum { N = 5 };
    struct caller_out *out = caller_out_new(N);
    pid_t c = fork();
    cr_assert_geq(c, 0);
    if (c == 0) {
        forklog *log;
        if (forklog_open(&log, path, NULL) != 0)
            _exit(3);
        /* The limit is on descriptor numbers: fill every free number below the highest one open (the test
         * runner's descriptors need not be contiguous), so that the pool's pipes take exactly lo .. lo + 3. */
        int lo = 0;
        DIR *d = opendir("/proc/self/fd");
        if (!d)
            _exit(4);
        struct dirent *e;
        while ((e = readdir(d)) != NULL)
            if (e->d_name[0] != '.' && atoi(e->d_name) >= lo)
                lo = atoi(e->d_name) + 1;
        closedir(d);
        for (;;) {
            int fd = open("/dev/null", O_RDONLY);
            if (fd < 0)
                _exit(4);
            if (fd >= lo) {
                close(fd);
                break;
            }
        }
        struct rlimit rl;
        if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
            _exit(5);
        rl.rlim_cur = (rlim_t)lo + 4; /* the wake pipe and one worker's pipe */
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            _exit(2);
        struct forklog_pool_options o = {.workers = 1, .timeout_s = 0.15, .log = log, .results = out->res};
        out->rc = forklog_pool_map(&o, N, first_hangs_task, NULL, &out->rep);
        forklog_close(log);
        _exit(0);
    }
    cr_assert_eq(th_wait_for(c, 30), 0);
    cr_assert_eq(out->rc, 1, "rc %d, not_run %zu", out->rc, out->rep.not_run);
    cr_assert_eq(out->res[0].status, FORKLOG_TASK_TIMEOUT);
    for (size_t i = 1; i < N; i++)
        cr_assert_eq(out->res[i].status, FORKLOG_TASK_OK, "task %zu: status %d", i, out->res[i].status);
    cr_assert_eq(out->rep.workers_started, 2, "the killed worker was replaced");
    check_counts(out->rc, out->res, N, &out->rep);
    free(check_log(path, 0, N, out->res, &out->rep));
    caller_out_free(out, N);
    th_rmdir(dir);
    free(path);
    free(dir);
}

/* Shared between a forked caller, its pool's workers and the test process. */
static struct lowered_nofile {
    atomic_int started; /* tasks that have begun */
    atomic_int lowered; /* the caller has lowered RLIMIT_NOFILE */
    double cpu_s;       /* CPU time of the caller (every thread) while the limit was low */
    double wall_s;      /* and the wall time */
} * lowered_nofile;

/* Tasks 0..2 wait for the caller to lower its descriptor limit, then: 0 ends ok, 1 dies of SIGSEGV, 2 fails with
 * 5. The others run afterwards, on the two workers left (the crashed one cannot be replaced: no descriptor for a
 * pipe): 5 hangs past timeout_s, the rest end ok. */
static int lowered_nofile_task(size_t i, void *ctx)
{
    (void)ctx;
    atomic_fetch_add(&lowered_nofile->started, 1);
    for (int k = 0; k < 10000 && !atomic_load(&lowered_nofile->lowered); k++)
        usleep(1000);
    usleep(i < 3 ? 400000 : 200000);
    switch (i) {
    case 1: die_of(SIGSEGV); break;
    case 2: return 5;
    case 5:
        for (;;)
            sleep(60);
    default: break;
    }
    return 0;
}

struct lowered_nofile_map {
    forklog *log;
    struct caller_out *out;
};

static void *map_lowered_nofile(void *arg)
{
    struct lowered_nofile_map *m = arg;
    struct forklog_pool_options o = {.workers = 3, .timeout_s = 1.5, .log = m->log, .results = m->out->res};
    m->out->rc = forklog_pool_map(&o, 7, lowered_nofile_task, NULL, &m->out->rep);
    return NULL;
}

static double cpu_now_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* Another thread of the caller lowers RLIMIT_NOFILE to 2 while the pool runs: fewer descriptors than the parent
 * polls (the wake pipe, and a pipe and a process descriptor per worker), so poll(2) refuses them all with EINVAL.
 * The call still sleeps between its looks (little CPU), records the crash and the timeout met meanwhile, returns
 * with every task recorded, and leaves no worker and no descriptor behind. */
Test(pool, descriptor_limit_lowered_below_the_polled_count_while_the_pool_sleeps)
{
    char *dir = th_tmpdir();
    char *path = th_path(dir, "pool.log");
    enum { N = 7 };
    struct caller_out *out = caller_out_new(N);
    lowered_nofile = mmap(NULL, sizeof *lowered_nofile, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(lowered_nofile, MAP_FAILED);
    pid_t c = fork();
    cr_assert_geq(c, 0);
    if (c == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        forklog *log;
        if (forklog_open(&log, path, NULL) != 0)
            _exit(3);
        int before = count_fds();
        struct rlimit rl;
        if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
            _exit(4);
        struct lowered_nofile_map m = {log, out};
        pthread_t th;
        if (pthread_create(&th, NULL, map_lowered_nofile, &m) != 0)
            _exit(5);
        for (int k = 0; k < 10000 && atomic_load(&lowered_nofile->started) < 3; k++)
            usleep(1000);
        struct rlimit low = {2, rl.rlim_max};
        if (setrlimit(RLIMIT_NOFILE, &low) != 0)
            _exit(6);
        double cpu0 = cpu_now_s(), t0 = th_now_s();
        atomic_store(&lowered_nofile->lowered, 1);
        pthread_join(th, NULL);
        lowered_nofile->cpu_s = cpu_now_s() - cpu0;
        lowered_nofile->wall_s = th_now_s() - t0;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            _exit(7);
        errno = 0;
        if (waitpid(-1, NULL, WNOHANG) != -1 || errno != ECHILD)
            _exit(8); /* a worker is left, running or unreaped */
        if (count_fds() != before)
            _exit(9);
        forklog_close(log);
        _exit(0);
    }
    int st = th_wait_for(c, 30);
    cr_assert_eq(st, 0, "caller exit %d (-2: still running after 30 s; 8: a worker left; 9: a descriptor left)", st);
    cr_assert_eq(out->rc, 3, "rc %d", out->rc);
    cr_assert_eq(out->res[1].status, FORKLOG_TASK_CRASHED);
    cr_assert_eq(out->res[1].signal, SIGSEGV);
    cr_assert_eq(out->res[2].status, FORKLOG_TASK_FAILED);
    cr_assert_eq(out->res[2].code, 5);
    cr_assert_eq(out->res[5].status, FORKLOG_TASK_TIMEOUT);
    cr_assert_eq(out->res[5].signal, SIGKILL);
    for (size_t i = 0; i < N; i++)
        if (i != 1 && i != 2 && i != 5)
            cr_assert_eq(out->res[i].status, FORKLOG_TASK_OK, "task %zu: status %d", i, out->res[i].status);
    check_counts(out->rc, out->res, N, &out->rep);
    free(check_log(path, 0, N, out->res, &out->rep));
    /* About 2 s with the limit low; a parent that polls in a loop without sleeping burns as much CPU. */
    cr_assert_lt(lowered_nofile->cpu_s, 0.1 * lowered_nofile->wall_s, "%.3f s of CPU in %.3f s", lowered_nofile->cpu_s,
                 lowered_nofile->wall_s);
    munmap(lowered_nofile, sizeof *lowered_nofile);
    caller_out_free(out, N);
    th_rmdir(dir);
    free(path);
    free(dir);
}

/* ---- a task's child that returns from the task ------------------------------------------------------------- */

/* The process that ran each task (shared with the workers), and how task 0 forks. */
struct forkret_ctx {
    pid_t ran_by[8];
    pid_t (*make_child)(void);
    unsigned child_delay_us;
};

static pid_t plain_fork(void)
{
    return fork();
}

/* Task 0 forks; the child returns 7 from the task at once (or after a delay), as a careless task's child would.
 * The worker waits for it and succeeds only if the child ended there with status 7, before it could run another
 * task. Every task notes which process ran it. */
static int forking_task(size_t i, void *ctx)
{
    struct forkret_ctx *c = ctx;
    c->ran_by[i] = getpid();
    if (i != 0)
        return 0;
    pid_t child = c->make_child();
    if (child < 0)
        return 1;
    if (child == 0) {
        if (c->child_delay_us)
            usleep(c->child_delay_us);
        return 7;
    }
    int st;
    if (waitpid(child, &st, 0) != child)
        return 2;
    return WIFEXITED(st) && WEXITSTATUS(st) == 7 ? 0 : 3;
}

static void run_forking_task(pid_t (*make_child)(void), unsigned delay_us)
{
    enum { N = 8 };
    struct forkret_ctx *c = mmap(NULL, sizeof *c, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(c, MAP_FAILED);
    c->make_child = make_child;
    c->child_delay_us = delay_us;
    struct forklog_task_result res[N];
    struct forklog_pool_options o = {.workers = 1, .timeout_s = 10, .results = res};
    struct forklog_pool_report rep;
    int rc = forklog_pool_map(&o, N, forking_task, c, &rep);
    cr_assert_eq(res[0].status, FORKLOG_TASK_OK, "task 0: status %d code %d", res[0].status, res[0].code);
    cr_assert_eq(rc, 0, "rc %d", rc);
    cr_assert_eq(rep.workers_started, 1);
    for (size_t i = 0; i < N; i++)
        cr_assert_eq(c->ran_by[i], res[i].worker, "task %zu ran in %d, not in its worker %d", i, (int)c->ran_by[i],
                     (int)res[i].worker);
    munmap(c, sizeof *c);
}

Test(pool, a_tasks_child_returning_from_the_task_ends_there)
{
    run_forking_task(plain_fork, 0);
}

#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
pid_t _Fork(void);

static pid_t fork_without_handlers(void)
{
    return _Fork();
}

/* _Fork() runs no fork handler: the worker finds the child by its pid. */
Test(pool, a_tasks_child_made_by_fork_without_handlers_ends_there)
{
    run_forking_task(fork_without_handlers, 1000);
}
#endif

/* ---- unusual callers and tasks -------------------------------------------------------------------------------- */

/* Task 1 calls pthread_exit() once task 0 runs in the other worker, which returns 0 a little later: the stack
 * unwinds out of task 1's worker, which must end there, as a crash with exit status 126, and nothing else. Past
 * the worker's own frame the unwinding would reach the cleanup of the parent's call (fl__pool_cancelled), which
 * kills every worker the parent had forked before and frees the pool. */
struct unwind_shared {
    atomic_int started[2];
    atomic_int inits;
};
static struct unwind_shared *unwind_sh;

/* Waits (at most 5 s) until both tasks run, each in its own worker. */
static void both_tasks_started(size_t i)
{
    atomic_store(&unwind_sh->started[i], 1);
    for (int k = 0; k < 5000 && !(atomic_load(&unwind_sh->started[0]) && atomic_load(&unwind_sh->started[1])); k++)
        usleep(1000);
}

static int pthread_exit_task(size_t i, void *ctx)
{
    (void)ctx;
    both_tasks_started(i);
    if (i == 1)
        pthread_exit(NULL);
    usleep(100000);
    return 0;
}

Test(pool, a_task_calling_pthread_exit_ends_only_its_worker_as_a_crash)
{
    unwind_sh = mmap(NULL, sizeof *unwind_sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(unwind_sh, MAP_FAILED);
    char *dir = th_tmpdir();
    char *path = th_path(dir, "pool.log");
    forklog *log = open_log(path, FORKLOG_FORMAT_TEXT);
    int fds = count_fds();
    struct forklog_task_result res[2];
    struct forklog_pool_options o = {.workers = 2, .log = log, .results = res};
    struct forklog_pool_report rep;
    int rc = forklog_pool_map(&o, 2, pthread_exit_task, NULL, &rep);
    cr_assert_eq(count_fds(), fds, "descriptors: %d before, %d after", fds, count_fds());
    errno = 0;
    cr_assert_eq(waitpid(-1, NULL, WNOHANG), -1, "a worker is left (running or unreaped)");
    cr_assert_eq(errno, ECHILD);
    cr_assert_eq(res[0].status, FORKLOG_TASK_OK, "task 0: %s, code %d, signal %d", status_name(res[0].status),
                 res[0].code, res[0].signal);
    cr_assert_eq(res[1].status, FORKLOG_TASK_CRASHED, "task 1: %s", status_name(res[1].status));
    cr_assert_eq(res[1].code, 126, "task 1: code %d", res[1].code);
    cr_assert_eq(res[1].signal, 0, "task 1: signal %d", res[1].signal);
    cr_assert_neq(res[0].worker, res[1].worker);
    cr_assert_eq(rc, 1, "rc %d", rc);
    check_counts(rc, res, 2, &rep);
    forklog_close(log);
    free(check_log(path, 0, 2, res, &rep));
    th_rmdir(dir);
    free(path);
    free(dir);
    munmap(unwind_sh, sizeof *unwind_sh);
}

/* The first initializer to run returns 0; every other one calls pthread_exit(). Each of those workers must end
 * as a worker whose initializer failed, leaving the one that works to run every task. */
static int pthread_exit_init(void *arg)
{
    (void)arg;
    if (atomic_fetch_add(&unwind_sh->inits, 1) != 0)
        pthread_exit(NULL);
    return 0;
}

static int sleep_50ms_task(size_t i, void *ctx)
{
    (void)i, (void)ctx;
    usleep(50000);
    return 0;
}

Test(pool, an_initializer_calling_pthread_exit_is_a_failed_initializer)
{
    unwind_sh = mmap(NULL, sizeof *unwind_sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(unwind_sh, MAP_FAILED);
    char *dir = th_tmpdir();
    char *path = th_path(dir, "pool.log");
    forklog *log = open_log(path, FORKLOG_FORMAT_TEXT);
    int fds = count_fds();
    enum { N = 4 };
    struct forklog_task_result res[N];
    struct forklog_pool_options o = {
        .workers = 2, .log = log, .results = res, .init = pthread_exit_init, .max_init_failures = 3};
    struct forklog_pool_report rep;
    int rc = forklog_pool_map(&o, N, sleep_50ms_task, NULL, &rep);
    cr_assert_eq(count_fds(), fds, "descriptors: %d before, %d after", fds, count_fds());
    errno = 0;
    cr_assert_eq(waitpid(-1, NULL, WNOHANG), -1, "a worker is left (running or unreaped)");
    cr_assert_eq(errno, ECHILD);
    for (size_t i = 0; i < N; i++)
        cr_assert_eq(res[i].status, FORKLOG_TASK_OK, "task %zu: %s, code %d, signal %d", i, status_name(res[i].status),
                     res[i].code, res[i].signal);
    cr_assert_eq(rc, 0, "rc %d", rc);
    cr_assert_geq(rep.workers_started, 2);
    cr_assert_geq(atomic_load(&unwind_sh->inits), 2);
    check_counts(rc, res, N, &rep);
    forklog_close(log);
    free(check_log(path, 0, N, res, &rep));
    th_rmdir(dir);
    free(path);
    free(dir);
    munmap(unwind_sh, sizeof *unwind_sh);
}

/* A caller that has moved its future children into a new PID namespace (unshare(CLONE_NEWPID)), with that
 * namespace's init started, as a sandbox or a container runtime does: its workers are its children as usual, but
 * getppid() is 0 in each (the parent is outside their namespace). They must run every task. */
Test(pool, a_caller_whose_children_are_in_a_new_pid_namespace_runs_every_task)
{
    enum { N = 8 };
    char *dir = th_tmpdir();
    char *path = th_path(dir, "pool.log");
    forklog *log = open_log(path, FORKLOG_FORMAT_TEXT);
    struct caller_out *out = caller_out_new(N);
    pid_t m = fork();
    cr_assert_geq(m, 0);
    if (m == 0) {
        if (unshare(CLONE_NEWPID) < 0)
            _exit(40);
        pid_t init = fork(); /* pid 1 of the new namespace: it must outlive the workers */
        if (init == 0) {
            for (;;)
                pause();
        }
        if (init < 0)
            _exit(41);
        int fds = count_fds();
        struct forklog_pool_options o = {.workers = 2, .log = log, .results = out->res, .timeout_s = 10};
        out->rc = forklog_pool_map(&o, N, ok_task, NULL, &out->rep);
        out->failures = count_fds() != fds;
        kill(init, SIGKILL);
        if (waitpid(init, NULL, 0) != init)
            out->failures++;
        if (waitpid(-1, NULL, WNOHANG) != -1 || errno != ECHILD)
            out->failures++; /* a worker is left */
        forklog_close(log);
        _exit(0);
    }
    int st = th_wait_for(m, 30);
    forklog_close(log);
    if (st == 40) {
        caller_out_free(out, N);
        th_rmdir(dir);
        free(path);
        free(dir);
        cr_skip_test("no PID namespace of its own (unshare)");
    }
    cr_assert_eq(st, 0, "the caller ended with %d", st);
    cr_assert_eq(out->rc, 0, "rc %d (%s): ok %zu, not_run %zu, workers %zu", out->rc,
                 out->rc < 0 ? strerror(-out->rc) : "tasks not ok", out->rep.ok, out->rep.not_run,
                 out->rep.workers_started);
    cr_assert_eq(out->failures, 0, "descriptors or children left in the caller");
    for (size_t i = 0; i < N; i++)
        cr_assert_eq(out->res[i].status, FORKLOG_TASK_OK, "task %zu: %s", i, status_name(out->res[i].status));
    check_counts(out->rc, out->res, N, &out->rep);
    free(check_log(path, 0, N, out->res, &out->rep));
    caller_out_free(out, N);
    th_rmdir(dir);
    free(path);
    free(dir);
}

/* A process that a task forks outlives the worker, and later forks a child that gets the dead worker's pid (made
 * certain with ns_last_pid, in a PID namespace of the test's own). That child is no worker: its exit() must flush
 * its stdio and run its atexit handlers, as in any process. */
static int reuse_go[2], reuse_back[2];
static const char *reuse_out, *reuse_marker;

static void reuse_atexit(void)
{
    close(open(reuse_marker, O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
}

static int fork_a_helper_task(size_t i, void *ctx)
{
    (void)i, (void)ctx;
    pid_t h = fork();
    if (h != 0)
        return h < 0; /* the worker */
    /* The helper: waits for its go, then forks the child that gets the worker's pid. */
    char c;
    if (read(reuse_go[0], &c, 1) != 1)
        _exit(1);
    pid_t c2 = fork();
    if (c2 == 0) {
        FILE *f = fopen(reuse_out, "w");
        if (!f)
            _exit(2);
        fputs("flushed by exit()\n", f); /* left in the stream's buffer: exit() flushes it */
        atexit(reuse_atexit);
        exit(0);
    }
    int st = 0;
    if (c2 > 0)
        waitpid(c2, &st, 0);
    int msg[2] = {(int)c2, st};
    ssize_t n = write(reuse_back[1], msg, sizeof msg);
    _exit(n == (ssize_t)sizeof msg ? 0 : 3);
}

/* The init of the namespace. Exit 0: the child with the worker's pid exited normally; 10: its stdio buffer was
 * not flushed or its atexit handler did not run; 30: ns_last_pid cannot be written; 77: the pid went elsewhere;
 * other: setup. */
static int pid_reuse_in_namespace(void)
{
    if (pipe(reuse_go) < 0 || pipe(reuse_back) < 0)
        return 20;
    struct forklog_task_result res[1];
    struct forklog_pool_options o = {.workers = 1, .results = res, .timeout_s = 10};
    if (forklog_pool_map(&o, 1, fork_a_helper_task, NULL, NULL) != 0)
        return 21;
    pid_t w = res[0].worker;
    if (th_next_pid_is(w)) {
        kill(-1, SIGKILL); /* the helper, in this namespace */
        return 30;
    }
    if (write(reuse_go[1], "g", 1) != 1)
        return 22;
    struct pollfd pfd = {reuse_back[0], POLLIN, 0};
    int msg[2];
    if (poll(&pfd, 1, 10000) != 1 || read(reuse_back[0], msg, sizeof msg) != (ssize_t)sizeof msg)
        return 23;
    while (waitpid(-1, NULL, 0) > 0) { /* the helper, ours since its worker ended */
    }
    if (msg[0] != (int)w)
        return 77;
    if (msg[1] != 0)
        return 24;
    size_t len;
    char *text = th_slurp(reuse_out, &len);
    int flushed = text && strcmp(text, "flushed by exit()\n") == 0;
    free(text);
    struct stat st;
    return flushed && stat(reuse_marker, &st) == 0 ? 0 : 10;
}

Test(pool, a_tasks_child_with_a_dead_workers_pid_exits_as_any_process)
{
    char *dir = th_tmpdir();
    char *out = th_path(dir, "stdio");
    char *marker = th_path(dir, "atexit");
    reuse_out = out;
    reuse_marker = marker;
    int code = 77;
    for (int attempt = 0; attempt < 5 && code == 77; attempt++) {
        unlink(out);
        unlink(marker);
        pid_t m = fork();
        cr_assert_geq(m, 0);
        if (m == 0) {
            if (unshare(CLONE_NEWPID) < 0)
                _exit(40);
            pid_t init = fork(); /* pid 1 of the new namespace */
            if (init == 0)
                _exit(pid_reuse_in_namespace());
            int ist;
            if (init < 0 || waitpid(init, &ist, 0) != init)
                _exit(41);
            _exit(WIFEXITED(ist) ? WEXITSTATUS(ist) : 42);
        }
        code = th_wait_for(m, 30);
    }
    th_rmdir(dir);
    free(marker);
    free(out);
    free(dir);
    if (code == 40)
        cr_skip_test("no PID namespace of its own (unshare)");
    if (code == 30)
        cr_skip_test("ns_last_pid cannot be written here");
    cr_assert_neq(code, 10, "exit() in the child with the dead worker's pid ended it as if it were the worker");
    cr_assert_eq(code, 0, "exit %d", code);
}

/* More tasks than any pool mapping can hold: -ENOMEM before anything starts, and the report says not_run for each
 * task, as when the mapping cannot be made. */
Test(pool, too_many_tasks_for_memory_is_enomem_with_every_task_not_run)
{
    const size_t sizes[] = {SIZE_MAX, SIZE_MAX / 2, SIZE_MAX / 40};
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
        struct forklog_pool_options o = {.workers = 1};
        struct forklog_pool_report rep;
        memset(&rep, 0xff, sizeof rep);
        int rc = forklog_pool_map(&o, sizes[k], ok_task, NULL, &rep);
        cr_assert_eq(rc, -ENOMEM, "ntasks %zu: rc %d", sizes[k], rc);
        cr_assert_eq(rep.not_run, sizes[k], "ntasks %zu: not_run %zu", sizes[k], rep.not_run);
        cr_assert_eq(rep.ok + rep.failed + rep.crashed + rep.timed_out + rep.workers_started, 0);
        cr_assert_eq(rep.wall_s, 0);
    }
}

/* ---- hostile labels -------------------------------------------------------------------------------------------- */

static char *big_label; /* 1 MiB of U+20AC (3 bytes each) */

/* Task i % 6: a 1 MiB label, newlines and control bytes, invalid UTF-8, a run of 300 continuation bytes, 127
 * bytes and a 4-byte character across the cut, and an empty label. */
static const char *hostile_label(size_t i, void *ctx)
{
    (void)ctx;
    static char cont[301], emoji[132];
    switch (i % 6) {
    case 0: return big_label;
    case 1: return "line one\nline two\r\n\ttab \x01\x1b[31m red \x7f";
    case 2: return "bad \xff\xfe \xc3\x28 \xe2\x82 end";
    case 3: memset(cont, 0x80, 300); return cont;
    case 4:
        memset(emoji, 'x', 127);
        memcpy(emoji + 127, "\xf0\x9f\x98\x80", 4);
        return emoji;
    default: return "";
    }
}

static void run_hostile_labels(int json)
{
    size_t big = (size_t)1 << 20;
    big_label = malloc(big + 1);
    cr_assert_not_null(big_label);
    for (size_t k = 0; k + 3 <= big; k += 3)
        memcpy(big_label + k, "\xe2\x82\xac", 3);
    big_label[big / 3 * 3] = '\0';

    /* What each label must look like in the record, up to the end of the line. The 128-byte cut: 42 whole
     * U+20AC (126 bytes); 128 of the 300 lone continuation bytes (no character boundary near the cut: cut at the
     * limit); 127 'x' (the 4-byte character does not fit). */
    char euro[42 * 3 + 1], conts[128 * 3 + 1], xs[128];
    for (int k = 0; k < 42; k++)
        memcpy(euro + 3 * k, "\xe2\x82\xac", 3);
    euro[126] = '\0';
    for (int k = 0; k < 128; k++)
        memcpy(conts + (json ? 3 * k : k), json ? "\xef\xbf\xbd" : "\x80", json ? 3 : 1);
    conts[json ? 384 : 128] = '\0';
    memset(xs, 'x', 127);
    xs[127] = '\0';
    char want[6][512];
    if (json) {
        snprintf(want[0], sizeof want[0], ",\"label\":\"%s\"}", euro);
        snprintf(want[1], sizeof want[1],
                 ",\"label\":\"line one\\nline two\\r\\n\\ttab \\u0001\\u001b[31m red \x7f\"}");
        snprintf(want[2], sizeof want[2],
                 ",\"label\":\"bad \xef\xbf\xbd\xef\xbf\xbd \xef\xbf\xbd( \xef\xbf\xbd\xef\xbf\xbd end\"}");
        snprintf(want[3], sizeof want[3], ",\"label\":\"%s\"}", conts);
        snprintf(want[4], sizeof want[4], ",\"label\":\"%s\"}", xs);
        snprintf(want[5], sizeof want[5], ",\"label\":\"\"}");
    } else {
        snprintf(want[0], sizeof want[0], " label=%s", euro);
        snprintf(want[1], sizeof want[1], " label=\"line one\\nline two\\r\\n\\ttab \\x01\\x1b[31m red \\x7f\"");
        snprintf(want[2], sizeof want[2], " label=\"bad \xff\xfe \xc3( \xe2\x82 end\"");
        snprintf(want[3], sizeof want[3], " label=%s", conts);
        snprintf(want[4], sizeof want[4], " label=%s", xs);
        snprintf(want[5], sizeof want[5], " label=\"\"");
    }

    char *dir = th_tmpdir();
    char *path = th_path(dir, "pool.log");
    forklog *log = open_log(path, json ? FORKLOG_FORMAT_JSON : FORKLOG_FORMAT_TEXT);
    enum { N = 24 };
    struct forklog_task_result res[N];
    struct forklog_pool_options o = {.workers = 3, .log = log, .results = res, .label = hostile_label};
    struct forklog_pool_report rep;
    cr_assert_eq(forklog_pool_map(&o, N, ok_task, NULL, &rep), 0);
    forklog_close(log);
    char *buf = check_log(path, json, N, res, &rep);
    size_t checked = 0;
    for (char *line = buf; *line;) {
        char *end = strchr(line, '\n');
        *end = '\0';
        size_t idx;
        const char *t = strstr(line, json ? "\"msg\":\"task\",\"task\":" : " task task=");
        if (t && sscanf(t, json ? "\"msg\":\"task\",\"task\":%zu" : " task task=%zu", &idx) == 1) {
            const char *l = strstr(line, json ? ",\"label\":" : " label=");
            cr_assert_not_null(l, "%s", line);
            cr_assert_str_eq(l, want[idx % 6], "task %zu", idx);
            checked++;
        }
        line = end + 1;
    }
    cr_assert_eq(checked, N);
    free(buf);
    free(big_label);
    th_rmdir(dir);
    free(path);
    free(dir);
}

Test(pool, hostile_labels_text)
{
    run_hostile_labels(0);
}

Test(pool, hostile_labels_json)
{
    run_hostile_labels(1);
}
