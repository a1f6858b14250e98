/* SPDX-License-Identifier: MIT */
/* A pool worker stopped outside any task, between taking a task's index and publishing its start, must not keep
 * forklog_pool_map() waiting: with timeout_s set, an idle worker that finishes nothing for timeout_s is killed
 * like a task past its deadline. The stop is put at the worker's read of CLOCK_REALTIME in that window (the
 * task's start time) by a clock_gettime() of this program's own, which the static library calls; it stands for
 * a SIGSTOP from outside landing there. Not a Criterion program: that clock_gettime would be Criterion's too.
 * Exit 0 when the call returned in time with the expected results and log, 1 otherwise (with the reason). */
#include <forklog.h>

#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

enum { TASKS = 4 };
static pid_t parent;
static atomic_int *stopped; /* shared: only the first worker's second task start is stopped, once */

int clock_gettime(clockid_t c, struct timespec *ts)
{
    static int reads; /* per process: 0 in each new worker */
    if (stopped && c == CLOCK_REALTIME && getpid() != parent && ++reads == 2 && !atomic_exchange(stopped, 1))
        raise(SIGSTOP);
    return (int)syscall(SYS_clock_gettime, c, ts);
}

static int task(size_t i, void *ctx)
{
    (void)i, (void)ctx;
    return 0;
}

static void on_alarm(int sig)
{
    (void)sig;
    static const char m[] = "FAIL pool_stopped_worker: forklog_pool_map() did not return within 20 s\n";
    (void)!write(2, m, sizeof m - 1);
    _exit(1);
}

static int fail(const char *why)
{
    fprintf(stderr, "FAIL pool_stopped_worker: %s\n", why);
    return 1;
}

int main(void)
{
    char dir[] = "/tmp/forklog-pool-stop-XXXXXX", path[64];
    if (!mkdtemp(dir))
        return fail("mkdtemp");
    snprintf(path, sizeof path, "%s/pool.log", dir);
    parent = getpid();
    stopped = mmap(NULL, sizeof *stopped, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (stopped == MAP_FAILED)
        return fail("mmap");
    forklog *log;
    if (forklog_open(&log, path, NULL) != 0)
        return fail("forklog_open");
    signal(SIGALRM, on_alarm);
    alarm(20);
    struct forklog_task_result res[TASKS];
    struct forklog_pool_options po = {.workers = 1, .timeout_s = 1, .results = res, .log = log};
    struct forklog_pool_report rep;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    int rc = forklog_pool_map(&po, TASKS, task, NULL, &rep);
    clock_gettime(CLOCK_MONOTONIC, &b);
    alarm(0);
    double took = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
    printf("pool_stopped_worker: returned %d after %.2f s: ok=%zu not_run=%zu timed_out=%zu workers=%zu\n", rc, took,
           rep.ok, rep.not_run, rep.timed_out, rep.workers_started);
    if (!atomic_load(stopped))
        return fail("no worker was stopped: the test did not reach its window");
    /* Task 1's index was taken by the stopped worker, which was killed 1 s later; a new worker ran 2 and 3. */
    if (rc != 1 || rep.ok != 3 || rep.not_run != 1 || rep.timed_out != 0 || rep.workers_started != 2)
        return fail("unexpected counts");
    for (int i = 0; i < TASKS; i++)
        if (res[i].status != (i == 1 ? FORKLOG_TASK_NOT_RUN : FORKLOG_TASK_OK))
            return fail("unexpected task status");
    if (forklog_close(log) != 0)
        return fail("forklog_close");
    /* One record per task and the summary, each a whole line. */
    FILE *f = fopen(path, "r");
    if (!f)
        return fail("the log is missing");
    char line[1024];
    int tasks = 0, not_run = 0, summary = 0;
    while (fgets(line, sizeof line, f)) {
        if (!strchr(line, '\n'))
            return fail("a line of the log is cut");
        tasks += strstr(line, " task task=") != NULL;
        not_run += strstr(line, " task task=1 status=not_run") != NULL;
        summary += strstr(line, " pool summary tasks=4 ok=3 ") != NULL;
    }
    fclose(f);
    unlink(path);
    rmdir(dir);
    if (tasks != TASKS || not_run != 1 || summary != 1)
        return fail("the log does not hold one record per task and the summary");
    return 0;
}
