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
 *   removes PIDFILE and prints "<workers> workers done".
 */
#ifndef _DEFAULT_SOURCE
#define _DEFAULT_SOURCE
#endif
#include <forklog.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static forklog *log_handle;

static void on_hup(int sig)
{
    (void)sig;
    forklog_reopen(log_handle); /* increments a counter in the shared segment: nothing else */
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
    /* The handler is installed before the pid file exists, so logrotate never signals a program without it. */
    struct sigaction sa = {.sa_handler = on_hup, .sa_flags = SA_RESTART};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGHUP, &sa, NULL);
    FILE *pf = fopen(argv[2], "w");
    if (!pf || fprintf(pf, "%d\n", (int)getpid()) < 0 || fclose(pf) != 0) {
        perror(argv[2]);
        return 1;
    }

    struct timespec start, now, tick = {0, 1000000L};
    clock_gettime(CLOCK_MONOTONIC, &start);
    pid_t pids[64];
    for (int w = 0; w < workers; w++) {
        pids[w] = fork();
        if (pids[w] < 0)
            return 1;
        if (pids[w] == 0) {
            /* The worker: SIGHUP goes to the parent only (its pid is in the pid file); the reopen it asks for
             * reaches every process through the shared segment. */
            long seq = 0;
            int failed = 0;
            do {
                failed |= forklog_info(log_handle, "worker %d seq %ld", w, seq++) != 0;
                nanosleep(&tick, NULL);
                clock_gettime(CLOCK_MONOTONIC, &now);
            } while ((double)(now.tv_sec - start.tv_sec) + (double)(now.tv_nsec - start.tv_nsec) / 1e9 < seconds);
            failed |= forklog_info(log_handle, "worker %d done after %ld records", w, seq) != 0;
            /* The handler must not run on a handle being closed (a SIGHUP may reach the whole process group). */
            signal(SIGHUP, SIG_IGN);
            forklog_close(log_handle);
            _exit(failed);
        }
    }
    int failed = 0;
    for (int w = 0; w < workers; w++) {
        int status;
        while (waitpid(pids[w], &status, 0) < 0)
            ; /* EINTR: a SIGHUP */
        failed |= !WIFEXITED(status) || WEXITSTATUS(status) != 0;
    }
    /* Shutdown: first the pid file, so that logrotate's postrotate no longer finds this process; then SIGHUP is
     * ignored, so that a signal sent by a postrotate that read the pid file just before never runs the handler on
     * a handle being closed (a use after free); only then the handle is closed. */
    unlink(argv[2]);
    signal(SIGHUP, SIG_IGN);
    forklog_close(log_handle);
    printf("%d workers done%s\n", workers, failed ? ", some records failed" : "");
    return failed;
}
