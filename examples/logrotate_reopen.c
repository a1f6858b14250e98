/* SPDX-License-Identifier: MIT */
/*
 * Rotation by logrotate(8): the program logs from several forked workers, and its SIGHUP handler calls
 * forklog_reopen(), which is async-signal-safe. logrotate renames the log (app.log to app.log.1, ...), then
 * runs `postrotate`, which sends SIGHUP (see examples/logrotate.conf); every process of the log moves to a new
 * app.log before its next record, and the first one creates that file with the options' mode (with `nocreate`,
 * logrotate leaves that to the program). Records written between the rename and the signal land whole at the
 * end of the renamed file. No record is lost or split.
 *
 * Usage: logrotate_reopen LOGFILE PIDFILE SECONDS [workers]
 *   writes its pid to PIDFILE (for postrotate), logs `worker W seq N` records for SECONDS (4 workers by
 *   default, one record about every millisecond each) and a last `worker W done after N records` each, then
 *   removes PIDFILE and prints "<workers> workers done". SIGTERM or SIGINT ends it early, the same way: each
 *   worker writes its last record, and the parent reaps them all and removes PIDFILE.
 */
#ifndef _DEFAULT_SOURCE
#define _DEFAULT_SOURCE
#endif
#include <forklog.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static forklog *log_handle;
static volatile sig_atomic_t stop; /* SIGTERM or SIGINT: every process ends between two records */

static void on_hup(int sig)
{
    (void)sig;
    forklog_reopen(log_handle); /* increments a counter in the shared segment: nothing else */
}

static void on_term(int sig)
{
    (void)sig;
    stop = 1;
}

static void on_child(int sig)
{
    (void)sig; /* only wakes the parent's sigsuspend() */
}

static double since(const struct timespec *start)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - start->tv_sec) + (double)(now.tv_nsec - start->tv_nsec) / 1e9;
}

int main(int argc, char **argv)
{
    if (argc < 4 || argc > 5) {
        fprintf(stderr, "usage: %s LOGFILE PIDFILE SECONDS [workers]\n", argv[0]);
        return 2;
    }
    double seconds = atof(argv[3]);
    int workers = argc > 4 ? atoi(argv[4]) : 4;
    if (seconds <= 0 || workers < 1 || workers > 64) {
        fprintf(stderr, "%s: SECONDS > 0, 1..64 workers\n", argv[0]);
        return 2;
    }
    /* The mode (and, for a privileged parent whose workers drop their privileges, .owner and .group) of every
     * file the log creates: the first one, and each new one after a rotation. */
    struct forklog_options opts = {.mode = 0640};
    int rc = forklog_open(&log_handle, argv[1], &opts);
    if (rc < 0) {
        fprintf(stderr, "%s: %s\n", argv[1], strerror(-rc));
        return 1;
    }
    /* The handlers are installed before the pid file exists, so logrotate never signals a program without them.
     * SIGHUP is handled at any moment. SIGTERM and SIGINT (a service stop, ^C) stop every process; in the parent
     * they, and SIGCHLD, are blocked except in sigsuspend(), so that none is missed between a check and the wait.
     * SIGCHLD gets a handler even when it was inherited ignored: waitpid() then has each worker's status. */
    struct sigaction sa = {.sa_handler = on_hup, .sa_flags = SA_RESTART};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGHUP, &sa, NULL);
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = on_child;
    sigaction(SIGCHLD, &sa, NULL);
    sigset_t blocked, unblocked;
    sigemptyset(&blocked);
    sigaddset(&blocked, SIGTERM);
    sigaddset(&blocked, SIGINT);
    sigaddset(&blocked, SIGCHLD);
    sigprocmask(SIG_BLOCK, &blocked, &unblocked);
    FILE *pf = fopen(argv[2], "w");
    if (!pf || fprintf(pf, "%d\n", (int)getpid()) < 0 || fclose(pf) != 0) {
        perror(argv[2]);
        return 1;
    }

    struct timespec start, tick = {0, 1000000L};
    clock_gettime(CLOCK_MONOTONIC, &start);
    pid_t pids[64];
    int started = 0, failed = 0, fork_failed = 0;
    for (int w = 0; w < workers; w++) {
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork"); /* the workers already started are stopped below */
            failed = fork_failed = 1;
            break;
        }
        if (pid == 0) {
            /* The worker: SIGHUP goes to the parent only (its pid is in the pid file); the reopen it asks for
             * reaches every process through the shared segment. SIGTERM comes from the parent, or from a service
             * manager that signals every process. */
            sigprocmask(SIG_SETMASK, &unblocked, NULL);
            long seq = 0;
            int bad = 0;
            do {
                bad |= forklog_info(log_handle, "worker %d seq %ld", w, seq++) != 0;
                nanosleep(&tick, NULL);
            } while (!stop && since(&start) < seconds);
            bad |= forklog_info(log_handle, "worker %d done after %ld records", w, seq) != 0;
            /* The handler must not run on a handle being closed (a SIGHUP may reach the whole process group). */
            signal(SIGHUP, SIG_IGN);
            forklog_close(log_handle);
            _exit(bad);
        }
        pids[started++] = pid;
    }
    /* Until every worker has ended: on SIGTERM or SIGINT, pass it on to the workers still running (a pid that has
     * not been reaped is never reused), then reap them. */
    int alive = started, passed_on = 0;
    while (alive > 0) {
        if ((stop || fork_failed) && !passed_on) {
            for (int w = 0; w < started; w++)
                if (pids[w] > 0)
                    kill(pids[w], SIGTERM);
            passed_on = 1;
        }
        for (int w = 0; w < started; w++) {
            int status;
            pid_t r = pids[w] > 0 ? waitpid(pids[w], &status, WNOHANG) : 0;
            if (r == 0)
                continue;
            if (r < 0)
                fprintf(stderr, "waitpid %d: %s\n", (int)pids[w], strerror(errno));
            failed |= r < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0;
            pids[w] = 0;
            alive--;
        }
        if (alive > 0)
            sigsuspend(&unblocked); /* until SIGCHLD, SIGTERM or SIGINT (a SIGHUP too) */
    }
    /* Shutdown: first the pid file, so that logrotate's postrotate no longer finds this process; then SIGHUP is
     * ignored, so that a signal sent by a postrotate that read the pid file just before never runs the handler on
     * a handle being closed (a use after free); only then the handle is closed. */
    unlink(argv[2]);
    signal(SIGHUP, SIG_IGN);
    forklog_close(log_handle);
    printf("%d workers done%s%s\n", started, stop ? ", stopped by a signal" : "",
           failed ? ", some records failed" : "");
    return failed;
}
