/* SPDX-License-Identifier: MIT */
/* A signal handler may log while the call it interrupted is still building its record (docs/api.md): the handler's
 * record is written as any other, and the interrupted one must keep its own time. Each thread caches the text of
 * the last second it formatted; a handler that replaced the cache between the interrupted call's look at it and its
 * copy gave that call's record the handler's date and time of day, and a handler that interrupted an update of the
 * cache took the interrupted call's. The clock of this program's own (which the static library calls) puts the
 * thread's records at 2001-09-09T01:46:40 and the handler's a year later, so that any mix shows; a 20 us timer
 * interrupts a thread that writes buffered records (no system call, so the interruptions land in the building).
 * Not a Criterion program: that clock_gettime would be Criterion's too. Exit 0 when every record has its own
 * time, 1 otherwise (with the count). */
#include <forklog.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

enum { RECORDS = 300000 };
#define MAIN_SEC    1000000000LL               /* 2001-09-09T01:46:40Z */
#define HANDLER_SEC (MAIN_SEC + 365LL * 86400) /* 2002-09-09T01:46:40Z */

static volatile sig_atomic_t in_handler;
static forklog *log_;
static volatile long handler_calls;

int clock_gettime(clockid_t c, struct timespec *ts)
{
    int rc = (int)syscall(SYS_clock_gettime, c, ts);
    if (rc == 0 && c == CLOCK_REALTIME)
        ts->tv_sec = (time_t)(in_handler ? HANDLER_SEC : MAIN_SEC);
    return rc;
}

static void on_alarm(int sig)
{
    (void)sig;
    in_handler = 1;
    if (forklog_log(log_, FORKLOG_INFO, "H") == 0)
        handler_calls++;
    in_handler = 0;
}

static int fail(const char *why)
{
    fprintf(stderr, "FAIL handler_timestamp: %s\n", why);
    return 1;
}

int main(void)
{
    char dir[] = "/tmp/forklog-handler-ts-XXXXXX", path[64];
    if (!mkdtemp(dir))
        return fail("mkdtemp");
    snprintf(path, sizeof path, "%s/ts.log", dir);
    struct forklog_options o = {.flags = FORKLOG_BUFFERED, .buffer_size = 16u << 20, .flush_ms = 1000000};
    if (forklog_open(&log_, path, &o) != 0)
        return fail("forklog_open");
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    struct itimerval it = {{0, 20}, {0, 20}}, off = {{0, 0}, {0, 0}};
    if (sigaction(SIGALRM, &sa, NULL) != 0 || setitimer(ITIMER_REAL, &it, NULL) != 0)
        return fail("timer");
    for (int i = 0; i < RECORDS; i++)
        if (forklog_log(log_, FORKLOG_INFO, "M") != 0)
            return fail("forklog_log");
    setitimer(ITIMER_REAL, &off, NULL);
    signal(SIGALRM, SIG_IGN); /* no handler during or after the close */
    if (forklog_close(log_) != 0)
        return fail("forklog_close");

    FILE *f = fopen(path, "r");
    if (!f)
        return fail("fopen");
    char line[256];
    long mains = 0, handlers = 0, wrong = 0, other = 0;
    while (fgets(line, sizeof line, f)) {
        size_t n = strlen(line);
        int m = n > 2 && strcmp(line + n - 3, " M\n") == 0, h = n > 2 && strcmp(line + n - 3, " H\n") == 0;
        if (m) {
            mains++;
            wrong += strncmp(line, "2001-09-09T01:46:40.", 20) != 0;
        } else if (h) {
            handlers++;
            wrong += strncmp(line, "2002-09-09T01:46:40.", 20) != 0;
        } else {
            other++;
        }
    }
    fclose(f);
    unlink(path);
    rmdir(dir);
    if (mains != RECORDS || handlers != handler_calls || other) {
        fprintf(stderr, "FAIL handler_timestamp: %ld thread records of %d, %ld handler records of %ld, %ld others\n",
                mains, RECORDS, handlers, (long)handler_calls, other);
        return 1;
    }
    if (handler_calls < 1000)
        return fail("fewer than 1000 handler records: the test did not test anything");
    if (wrong) {
        fprintf(stderr, "FAIL handler_timestamp: %ld of %ld records carry the other call's time\n", wrong,
                mains + handlers);
        return 1;
    }
    printf("handler_timestamp: %ld thread and %ld handler records, each with its own time\n", mains, handlers);
    return 0;
}
