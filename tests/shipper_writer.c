/* SPDX-License-Identifier: MIT */
/*
 * The writer of tests/shipper_rsyslog.sh: a parent opens a JSON Lines log and forks `workers` processes that
 * each write `records` records through the inherited handle, `{"ts":..,"level":"info","pid":..,"msg":"ship",
 * "w":W,"seq":S,"pad":"..."}`, one every `pause_us` microseconds, payloads of 50 to 1500 bytes (below rsyslog's
 * 8 KiB maxMessageSize).
 *
 * Usage: shipper_writer rotate LOG WORKERS RECORDS PAUSE_US ROTATE_BYTES
 *        shipper_writer reopen LOG WORKERS RECORDS PAUSE_US PIDFILE
 *   rotate: size-based rotation by forklog (rotate_bytes, rotate_keep 1000);
 *   reopen: no rotation of its own; SIGHUP calls forklog_reopen() (logrotate's `create` mode), and the pid is
 *           written to PIDFILE once the workers run.
 * Exit status: 0 when every record was written, 1 otherwise.
 */
#include <forklog.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static forklog *lg;

static void on_hup(int sig)
{
    (void)sig;
    forklog_reopen(lg); /* async-signal-safe */
}

int main(int argc, char **argv)
{
    if (argc != 7 || (strcmp(argv[1], "rotate") != 0 && strcmp(argv[1], "reopen") != 0)) {
        fprintf(stderr, "usage: %s rotate|reopen LOG WORKERS RECORDS PAUSE_US ROTATE_BYTES|PIDFILE\n", argv[0]);
        return 2;
    }
    int rotate = strcmp(argv[1], "rotate") == 0;
    int workers = atoi(argv[3]), records = atoi(argv[4]);
    long pause_us = atol(argv[5]);
    char why[256] = "";
    struct forklog_options o = {.format = FORKLOG_FORMAT_JSON, .error = why, .error_size = sizeof why};
    if (rotate) {
        o.rotate_bytes = strtoull(argv[6], NULL, 10);
        o.rotate_keep = 1000;
    }
    int rc = forklog_open(&lg, argv[2], &o);
    if (rc < 0) {
        fprintf(stderr, "shipper_writer: %s: %s %s\n", argv[2], strerror(-rc), why);
        return 1;
    }
    if (!rotate) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_hup;
        sa.sa_flags = SA_RESTART;
        sigaction(SIGHUP, &sa, NULL);
    }
    static char pad[1600];
    memset(pad, 'x', sizeof pad - 1);
    for (int w = 0; w < workers; w++) {
        pid_t pid = fork();
        if (pid < 0)
            return 1;
        if (pid == 0) {
            unsigned seed = (unsigned)w * 7919u + 17;
            for (int s = 0; s < records; s++) {
                size_t n = 50 + (size_t)rand_r(&seed) % 1450;
                pad[n] = '\0';
                struct forklog_field f[] = {FORKLOG_INT("w", w), FORKLOG_INT("seq", s), FORKLOG_STR("pad", pad)};
                rc = forklog_log_fields(lg, FORKLOG_INFO, "ship", f, 3);
                pad[n] = 'x';
                if (rc != 0) {
                    fprintf(stderr, "shipper_writer: worker %d record %d: %s\n", w, s, strerror(rc < 0 ? -rc : 0));
                    _exit(1);
                }
                if (pause_us > 0) {
                    struct timespec ts = {pause_us / 1000000, (pause_us % 1000000) * 1000};
                    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                        ;
                }
            }
            _exit(forklog_close(lg) == 0 ? 0 : 1);
        }
    }
    if (!rotate) {
        FILE *f = fopen(argv[6], "w");
        if (!f || fprintf(f, "%d\n", (int)getpid()) < 0 || fclose(f) != 0)
            return 1;
    }
    int failed = 0, status;
    for (;;) {
        pid_t p = wait(&status);
        if (p < 0 && errno == EINTR)
            continue;
        if (p < 0)
            break;
        failed |= !WIFEXITED(status) || WEXITSTATUS(status) != 0;
    }
    failed |= forklog_close(lg) != 0;
    return failed;
}
