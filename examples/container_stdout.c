/* SPDX-License-Identifier: MIT */
/*
 * Logging to standard output, as in a container whose runtime collects stdout: the program opens
 * "/dev/stdout" as its log, forks workers that log through the inherited handle, and every record reaches
 * stdout whole, one line each.
 *
 * What works, by what stdout is:
 *   - a pipe (`prog | cat`, docker's and systemd's log collectors, a Kubernetes container's stdout): works;
 *     records of up to PIPE_BUF (4096) bytes are never interleaved, as each record is one write(2);
 *   - a terminal or another character device: works;
 *   - a regular file (`prog > out.log`): works; records are appended;
 *   - a unix socket (systemd's StandardOutput=journal, some runtimes): forklog_open() fails with -ENXIO,
 *     since a socket cannot be opened by name. The program then says so on stderr and writes its records
 *     with one write(2) each on descriptor 1 instead, without forklog's lock.
 * FORKLOG_PRIVATE: the lock is shared with this process's own children only, and no segment file is made for
 * /dev/stdout (a shared one would be created beside the log, in /dev).
 *
 * Usage: container_stdout [workers] [records]        (defaults: 4 workers, 25 records each)
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
#include <unistd.h>

static forklog *log_handle; /* NULL: stdout could not be opened as a log; write(2) on 1 instead */

static void record(const char *msg)
{
    if (log_handle) {
        forklog_info(log_handle, "%s", msg);
        return;
    }
    char line[512];
    int len = snprintf(line, sizeof line, "INFO pid=%d %s\n", (int)getpid(), msg);
    if (write(STDOUT_FILENO, line, (size_t)len) < 0)
        _exit(1);
}

int main(int argc, char **argv)
{
    int workers = argc > 1 ? atoi(argv[1]) : 4, records = argc > 2 ? atoi(argv[2]) : 25;
    if (workers < 1 || workers > 256 || records < 1) {
        fprintf(stderr, "usage: %s [workers] [records]\n", argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN); /* a reader that goes away is -EPIPE, not the end of the program */
    struct forklog_options o = {.flags = FORKLOG_PRIVATE};
    int rc = forklog_open(&log_handle, "/dev/stdout", &o);
    if (rc < 0) {
        fprintf(stderr, "container_stdout: /dev/stdout as a log: %s%s; writing records on descriptor 1\n",
                strerror(-rc), rc == -ENXIO ? " (a socket, or a FIFO with no reader)" : "");
        log_handle = NULL;
    }
    char msg[128];
    snprintf(msg, sizeof msg, "started %d workers, %d records each", workers, records);
    record(msg);
    for (int w = 0; w < workers; w++) {
        pid_t pid = fork();
        if (pid < 0)
            return 1;
        if (pid == 0) {
            for (int i = 0; i < records; i++) {
                snprintf(msg, sizeof msg, "worker %d record %d", w, i);
                record(msg);
            }
            forklog_close(log_handle);
            _exit(0);
        }
    }
    int failed = 0, status;
    while (wait(&status) > 0)
        failed |= !WIFEXITED(status) || WEXITSTATUS(status) != 0;
    record(failed ? "a worker failed" : "all workers done");
    forklog_close(log_handle);
    return failed;
}
