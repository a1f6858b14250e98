/* SPDX-License-Identifier: MIT */
/* A woken waiter that dies before it takes the lock must not leave the other sleepers asleep on a free lock.
 *
 * The window is inside pthread_mutex_lock(), between the futex wake-up and the acquisition, where no crash point
 * of ours can stand, so the test stops the real waiter there with ptrace: at the exit of its FUTEX_WAIT that
 * returned 0 (woken). The scene, staged step by step:
 *   1. a holder stops with the lock (crash point LOCK_HELD); two waiters, both traced, go to sleep on the lock;
 *   2. the holder is continued and unlocks: the kernel wakes one waiter, which ptrace stops as its wait returns;
 *   3. a third writer takes the free lock with pthread_mutex_trylock() (which sets no waiters bit) and stops
 *      holding it (LOCK_HELD);
 *   4. the woken waiter is SIGKILLed: the kernel sees a lock word that is not 0 and wakes nobody for it;
 *   5. the third writer is continued, writes and unlocks: no waiters bit, so no wake-up.
 * The other sleeper must still take the lock and write its record within the bound. Without bounded sleeps it
 * sleeps forever. x86-64 only (it reads the syscall registers). */
#include "points.h"

#include <linux/futex.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/user.h>

static char *dir, *logpath;

static void setup(void)
{
    dir = th_tmpdir();
    logpath = th_path(dir, "wake.log");
}

static void teardown(void)
{
    th_rmdir(dir);
    free(logpath);
    free(dir);
}

TestSuite(wake, .init = setup, .fini = teardown);

/* How long the surviving sleeper has to write its record once the scene is over. */
#define BOUND_S 5.0

#if defined(__x86_64__)

struct tracee {
    pid_t pid;
    int waiting; /* inside a FUTEX_WAIT (entered, not returned) */
    int woken;   /* stopped at the return of a FUTEX_WAIT that returned 0 */
    int exited;  /* its exit status is in status */
    int status;
};

/* A traced writer of `rec`: it stops itself so that the parent can set the options before it writes. */
static pid_t start_traced(forklog *log, const char *rec)
{
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (ptrace(PTRACE_TRACEME, 0, NULL, NULL) < 0)
            _exit(20);
        raise(SIGSTOP);
        _exit(forklog_write(log, rec, strlen(rec)) == 0 ? 0 : 1);
    }
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFSTOPPED(st) && WSTOPSIG(st) == SIGSTOP);
    cr_assert_eq(ptrace(PTRACE_SETOPTIONS, pid, NULL, (void *)(long)(PTRACE_O_TRACESYSGOOD | PTRACE_O_EXITKILL)), 0);
    cr_assert_eq(ptrace(PTRACE_SYSCALL, pid, NULL, NULL), 0);
    return pid;
}

/* The log's mutex, where the waiters sleep. Other futexes (the C library's or a sanitizer's own locks) are not
 * the lock's: a wake-up from one of them must not be taken for the lock's. */
static const pthread_mutex_t *lock_mutex;

static int is_futex_wait(const struct user_regs_struct *r)
{
    int cmd = (int)r->rsi & FUTEX_CMD_MASK;
    uintptr_t at = (uintptr_t)r->rdi, mu = (uintptr_t)lock_mutex;
    return r->orig_rax == SYS_futex && (cmd == FUTEX_WAIT || cmd == FUTEX_WAIT_BITSET) && at >= mu &&
           at < mu + sizeof *lock_mutex;
}

/* Handles one stop of any tracee, waiting at most until `end`. A tracee whose FUTEX_WAIT returned 0 stays stopped
 * (woken = 1) when `catch_wake` is set; every other stop is continued. Returns 0 when nothing happened. */
static int trace_step(struct tracee *t, int n, int catch_wake, double end)
{
    for (;;) {
        for (int i = 0; i < n; i++) {
            if (t[i].exited || t[i].woken)
                continue;
            int st;
            pid_t r = waitpid(t[i].pid, &st, WNOHANG | __WALL);
            if (r != t[i].pid)
                continue;
            if (WIFEXITED(st) || WIFSIGNALED(st)) {
                t[i].exited = 1;
                t[i].status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
                return 1;
            }
            int sig = WSTOPSIG(st);
            if (sig == (SIGTRAP | 0x80)) {
                struct user_regs_struct regs;
                cr_assert_eq(ptrace(PTRACE_GETREGS, t[i].pid, NULL, &regs), 0);
                if (is_futex_wait(&regs)) {
                    if ((long long)regs.rax == -ENOSYS) {
                        t[i].waiting = 1; /* entry */
                    } else {
                        t[i].waiting = 0; /* exit: 0 woken, -ETIMEDOUT, -EAGAIN, ... */
                        if (catch_wake && regs.rax == 0) {
                            t[i].woken = 1;
                            return 1;
                        }
                    }
                }
                sig = 0;
            }
            cr_assert_eq(ptrace(PTRACE_SYSCALL, t[i].pid, NULL, (void *)(long)sig), 0);
            return 1;
        }
        if (th_now_s() > end)
            return 0;
        usleep(200);
    }
}

/* One staging; returns 1 when the scene was set (a waiter was caught woken with the lock then taken by trylock),
 * 0 when a sleeper's own timeout got in the way and it must be tried again. Asserts the outcome either way. */
static int stage(const struct forklog_options *o, const char *pad)
{
    forklog *log;
    cr_assert_eq(forklog_open(&log, logpath, o), 0);
    lock_mutex = &log->seg->mu; /* the same address in the forked tracees */
    char holder_rec[4096], rec[2][4096], third_rec[4096];
    snprintf(holder_rec, sizeof holder_rec, "holder%s", pad);
    snprintf(rec[0], sizeof rec[0], "waiter 0%s", pad);
    snprintf(rec[1], sizeof rec[1], "waiter 1%s", pad);
    snprintf(third_rec, sizeof third_rec, "third%s", pad);

    pid_t h = cp_stopped_holder(log, holder_rec, FL__CP_COUNT, 0);
    struct tracee t[2] = {{.pid = start_traced(log, rec[0])}, {.pid = start_traced(log, rec[1])}};
    /* 1. Both waiters asleep in the futex. */
    double end = th_now_s() + 10;
    while (!(t[0].waiting && t[1].waiting) && th_now_s() < end)
        trace_step(t, 2, 0, end);
    cr_assert(t[0].waiting && t[1].waiting, "the waiters did not go to sleep on the lock");
    usleep(2000);
    /* 2. The holder unlocks; catch the waiter the kernel wakes. */
    cr_assert_eq(kill(h, SIGCONT), 0);
    cr_assert_eq(th_wait_for(h, 10), 0);
    end = th_now_s() + 10;
    while (!t[0].woken && !t[1].woken && !t[0].exited && !t[1].exited && th_now_s() < end)
        trace_step(t, 2, 1, end);
    int set = t[0].woken || t[1].woken;
    if (set) {
        /* The other waiter's bounded sleep may have run out meanwhile, and it may have taken the free lock (and be
         * stopped now at a system call, holding it). The scene is set only if it is still inside its futex wait
         * (it cannot leave it while stopped at the exit) and the lock is free. */
        int w = t[0].woken ? 0 : 1;
        int free_lock = pthread_mutex_trylock(&log->seg->mu) == 0;
        if (free_lock)
            pthread_mutex_unlock(&log->seg->mu);
        if (!t[1 - w].waiting || !free_lock) {
            t[w].woken = 0;
            cr_assert_eq(ptrace(PTRACE_SYSCALL, t[w].pid, NULL, NULL), 0);
            set = 0;
        }
    }
    pid_t third = 0;
    if (set) {
        int w = t[0].woken ? 0 : 1;
        /* 3. A third writer takes the free lock with trylock and stops holding it. */
        third = cp_stopped_holder(log, third_rec, FL__CP_COUNT, 0);
        /* 4. The woken waiter dies before taking the lock. */
        cr_assert_eq(kill(t[w].pid, SIGKILL), 0);
        t[w].woken = 0;
        end = th_now_s() + 10;
        while (!t[w].exited && th_now_s() < end)
            trace_step(t, 2, 0, end);
        cr_assert(t[w].exited && t[w].status == 128 + SIGKILL);
        /* 5. The third writer writes and unlocks without waking anybody. */
        cr_assert_eq(kill(third, SIGCONT), 0);
        cr_assert_eq(th_wait_for(third, 10), 0);
    }
    /* The survivor(s) must write within the bound. */
    end = th_now_s() + BOUND_S;
    while (!(t[0].exited && t[1].exited) && th_now_s() < end)
        trace_step(t, 2, 0, end);
    for (int i = 0; i < 2; i++) {
        if (!t[i].exited) {
            kill(t[i].pid, SIGKILL);
            waitpid(t[i].pid, NULL, __WALL);
            cr_assert_fail("waiter %d still waits %.0f s after the lock was freed: it sleeps on a free lock", i,
                           BOUND_S);
        }
    }
    cr_assert_eq(forklog_close(log), 0);

    size_t len;
    char *buf = th_slurp(logpath, &len);
    cr_assert_not_null(buf);
    cr_assert_eq(cp_count_line(buf, holder_rec), 1);
    for (int i = 0; i < 2; i++) {
        int dead = t[i].status == 128 + SIGKILL;
        cr_assert(dead || t[i].status == 0, "waiter %d ended with %d", i, t[i].status);
        /* The dead waiter's record may have been written on its behalf (combining) before it died; never twice. */
        int n = cp_count_line(buf, rec[i]);
        cr_assert(dead ? n <= 1 : n == 1, "waiter %d's record is there %d times", i, n);
    }
    cr_assert_eq(cp_count_line(buf, third_rec), set ? 1 : 0);
    free(buf);
    unlink(logpath);
    return set;
}

static void run(const struct forklog_options *o, const char *pad)
{
    for (int attempt = 0; attempt < 5; attempt++)
        if (stage(o, pad))
            return;
    cr_assert_fail("could not stage the lost wake-up in 5 attempts");
}

Test(wake, woken_waiter_killed_before_taking_the_lock_direct, .timeout = 120)
{
    /* 2 KiB records take the plain path: the waiters sleep in the lock itself. */
    static char pad[2048];
    memset(pad, 'x', sizeof pad - 1);
    run(NULL, pad);
}

Test(wake, woken_waiter_killed_before_taking_the_lock_combining, .timeout = 120)
{
    /* Small records: the waiters post them, and the holder writes them before it unlocks; each waiter then still
     * sleeps on the lock until it sees its record done. */
    run(NULL, "");
}

Test(wake, woken_waiter_killed_before_taking_the_lock_buffered, .timeout = 120)
{
    /* With rotation, buffered records go through one buffer under the lock (without, appends take no lock). */
    struct forklog_options o = {.flags = FORKLOG_BUFFERED, .rotate_bytes = 1 << 30};
    run(&o, "");
}

#else
Test(wake, woken_waiter_killed_before_taking_the_lock)
{
    cr_skip_test("the ptrace staging reads x86-64 registers");
}
#endif
