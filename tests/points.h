/* SPDX-License-Identifier: MIT */
/* Helpers for the tests that stop a process at a named crash point (lib/internal.h, FL__CRASH_POINTS): they link
 * the forklog_crashpoints library. Children never assert: they report through their exit status. */
#ifndef FORKLOG_TEST_POINTS_H
#define FORKLOG_TEST_POINTS_H

#include "helpers.h"

#include "internal.h"

#include <sys/prctl.h>

/* The point called `name`; the test fails if there is none. */
static inline enum fl__crash_point cp_find(const char *name)
{
    for (int cp = 0; fl__crash_name((enum fl__crash_point)cp); cp++)
        if (strcmp(fl__crash_name((enum fl__crash_point)cp), name) == 0)
            return (enum fl__crash_point)cp;
    cr_assert_fail("no crash point %s", name);
    return FL__CP_COUNT;
}

/* Waits until child `pid` has stopped (SIGSTOP at a crash point), at most `limit` seconds. Returns 1 if it did; on
 * failure the child is killed and 0 returned. */
static inline int cp_wait_stopped(pid_t pid, double limit)
{
    double end = th_now_s() + limit;
    for (;;) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG | WUNTRACED);
        if (r == pid && WIFSTOPPED(st))
            return 1;
        if (r == pid || (r < 0 && errno != EINTR) || th_now_s() > end) {
            kill(pid, SIGKILL);
            if (r != pid)
                waitpid(pid, &st, 0);
            return 0;
        }
        usleep(500);
    }
}

/* Forks a writer that stops holding the lock (at its first LOCK_HELD), and, once continued, writes `rec` and dies
 * at the `hit`-th passage of point `die` (no death when hit is 0). Returns when it is stopped with the lock. */
static inline pid_t cp_stopped_holder(forklog *log, const char *rec, enum fl__crash_point die, unsigned hit)
{
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* a failed test leaves nobody holding the lock */
        fl__crash_arm(FL__CP_LOCK_HELD, 1, FL__CRASH_STOP);
        if (hit)
            fl__crash_arm(die, hit, FL__CRASH_KILL);
        _exit(forklog_write(log, rec, strlen(rec)) == 0 ? 0 : 1);
    }
    cr_assert(cp_wait_stopped(pid, 10), "the holder did not stop with the lock");
    return pid;
}

/* Waits until `n` records are posted (flagged in the segment), at most 10 s. */
static inline int cp_wait_posted(forklog *log, int n)
{
    double until = th_now_s() + 10;
    while (__builtin_popcount(atomic_load(&log->seg->posted)) < n && th_now_s() < until)
        usleep(500);
    return __builtin_popcount(atomic_load(&log->seg->posted)) >= n;
}

/* Forks a writer of `rec` that first arms point `die` at hit `hit` (none when hit is 0). It exits 0 when its
 * call returned 0. */
static inline pid_t cp_writer(forklog *log, const char *rec, enum fl__crash_point die, unsigned hit)
{
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (hit)
            fl__crash_arm(die, hit, FL__CRASH_KILL);
        _exit(forklog_write(log, rec, strlen(rec)) == 0 ? 0 : 1);
    }
    return pid;
}

/* A holder of `rec` stopped with the lock, a writer of `post` whose record is then posted (*poster), and the
 * holder continued until it stops again at point `then` (before it gathers, before it unlocks, ...). The holder
 * exits 0 when its call returned 0, else with the call's errno (-rc). */
static inline pid_t cp_holder_with_a_post(forklog *log, const char *rec, enum fl__crash_point then, const char *post,
                                          pid_t *poster)
{
    pid_t holder = fork();
    cr_assert_neq(holder, -1);
    if (holder == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        fl__crash_arm(FL__CP_LOCK_HELD, 1, FL__CRASH_STOP);
        fl__crash_arm(then, 1, FL__CRASH_STOP);
        int rc = forklog_write(log, rec, strlen(rec));
        _exit(rc < 0 ? -rc & 0x7f : 0);
    }
    cr_assert(cp_wait_stopped(holder, 10), "the holder did not stop with the lock");
    *poster = cp_writer(log, post, FL__CP_COUNT, 0);
    if (!cp_wait_posted(log, 1)) {
        kill(holder, SIGKILL);
        kill(*poster, SIGKILL);
        cr_assert_fail("the writer of \"%s\" did not post", post);
    }
    cr_assert_eq(kill(holder, SIGCONT), 0);
    cr_assert(cp_wait_stopped(holder, 10), "the holder did not stop at %s", fl__crash_name(then));
    return holder;
}

/* How many times line `want` (without its newline) is in buf. */
static inline int cp_count_line(const char *buf, const char *want)
{
    size_t wl = strlen(want);
    int n = 0;
    for (const char *line = buf; *line;) {
        const char *end = strchr(line, '\n');
        if (!end)
            break;
        if ((size_t)(end - line) == wl && memcmp(line, want, wl) == 0)
            n++;
        line = end + 1;
    }
    return n;
}

/* The segment's idea of the file's size equals the real one: checked with the lock held, by the test process,
 * after its own last record (so any repair is done). */
static inline void cp_assert_size_agrees(forklog *log, const char *path)
{
    struct stat st;
    cr_assert_eq(pthread_mutex_lock(&log->seg->mu), 0);
    int rc = stat(path, &st);
    uint64_t size = log->seg->size;
    pthread_mutex_unlock(&log->seg->mu);
    cr_assert_eq(rc, 0);
    cr_assert_eq(size, (uint64_t)st.st_size, "the segment believes %llu bytes, the file has %lld",
                 (unsigned long long)size, (long long)st.st_size);
}

#endif
