/* SPDX-License-Identifier: MIT */
/*
 * Logging to standard output, as in a container whose runtime collects stdout: the program makes a log of
 * descriptor 1 with forklog_open_fd(), forks workers that log through the inherited handle, and every record
 * reaches stdout whole, one line each, whatever the size of the records.
 *
 * What stdout may be, and what holds:
 *   - a pipe (`prog | cat`, docker's and containerd's log collectors, a Kubernetes container's stdout): records
 *     of any size up to max_record are never interleaved, since each is written under the lock (PIPE_BUF alone
 *     would cover 4096 bytes only);
 *   - a unix stream socket (systemd's StandardOutput=journal, some runtimes): the same; no name is needed,
 *     which forklog_open("/dev/stdout") could not do for a socket (-ENXIO);
 *   - a terminal or another character device: the same;
 *   - a regular file (`prog > out.log`): records are appended; forklog sets O_APPEND on the shared descriptor.
 * The lock is shared with this process's own children only (forklog_open_fd() gives a handle its own segment),
 * and nothing is created anywhere. If the reader goes away, a record fails with -EPIPE (SIGPIPE is ignored).
 *
 * Usage: container_stdout [workers] [records] [bytes]   (defaults: 4 workers, 25 records each, short records)
 *   bytes: each worker record's message is padded with 'x' to exactly that many bytes (32 .. 1048000), to show
 *   records longer than PIPE_BUF reaching a pipe whole.
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

static forklog *log_handle; /* NULL: stdout could not be made a log (closed, read-only, non-blocking) */

/* 0, or a negative errno: -EPIPE when the reader has gone away. */
/* A decimal number, or -1. */
static long number(const char *s)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    return errno || end == s || *end ? -1 : v;
}

static int record(const char *msg)
{
    if (log_handle) {
        int rc = forklog_info(log_handle, "%s", msg);
        return rc < 0 ? rc : 0; /* a positive count: bytes cut to fit max_record, the record is written */
    }
    size_t size = strlen(msg) + 64;
    char *line = malloc(size);
    if (!line)
        return -ENOMEM;
    int len = snprintf(line, size, "INFO pid=%d %s\n", (int)getpid(), msg);
    int rc = write(STDOUT_FILENO, line, (size_t)len) < 0 ? -errno : 0;
    free(line);
    return rc;
}

/* A failed record: said on stderr, once per process. */
static int failed_record(const char *who, int rc)
{
    fprintf(stderr, "container_stdout: %s: %s%s\n", who, strerror(-rc),
            rc == -EPIPE ? " (the reader went away): stopping" : "");
    return 1;
}

int main(int argc, char **argv)
{
    long workers = argc > 1 ? number(argv[1]) : 4, records = argc > 2 ? number(argv[2]) : 25;
    long bytes = argc > 3 ? number(argv[3]) : 0;
    if (argc > 4 || workers < 1 || workers > 256 || records < 1 || records > 100000000 ||
        (argc > 3 && (bytes < 32 || bytes > 1048000))) {
        fprintf(stderr, "usage: %s [workers 1..256] [records] [bytes 32..1048000]\n", argv[0]);
        return 2;
    }
    char *msg = malloc(bytes > 128 ? (size_t)bytes + 1 : 129);
    if (!msg) {
        perror("container_stdout");
        return 1;
    }
    signal(SIGPIPE, SIG_IGN); /* a reader that goes away is -EPIPE, not the end of the program */
    char why[160];
    struct forklog_options o = {.error = why, .error_size = sizeof why};
    int rc = forklog_open_fd(&log_handle, STDOUT_FILENO, &o);
    if (rc < 0) {
        fprintf(stderr, "container_stdout: stdout as a log: %s%s%s; writing records on descriptor 1\n", strerror(-rc),
                why[0] ? ": " : "", why);
        log_handle = NULL;
    }
    snprintf(msg, 129, "started %ld workers, %ld records each", workers, records);
    int failed = 0;
    if ((rc = record(msg)) < 0) {
        free(msg);
        return failed_record("parent", rc);
    }
    for (int w = 0; w < workers; w++) {
        pid_t pid = fork();
        if (pid < 0) {
            perror("container_stdout: fork");
            failed = 1; /* the workers already started finish */
            break;
        }
        if (pid == 0) {
            /* A worker stops at its first failed record (-EPIPE: nobody reads any more) and exits non-zero. */
            char who[32];
            snprintf(who, sizeof who, "worker %d", w);
            int bad = 0;
            for (long i = 0; i < records && !bad; i++) {
                int n = snprintf(msg, 129, "worker %d record %ld ", w, i);
                if (bytes > n) {
                    memset(msg + n, 'x', (size_t)(bytes - n));
                    msg[bytes] = '\0';
                }
                if ((rc = record(msg)) < 0)
                    bad = failed_record(who, rc);
            }
            if (log_handle && (rc = forklog_close(log_handle)) < 0)
                bad = failed_record(who, rc);
            _exit(bad);
        }
    }
    int status;
    while (wait(&status) > 0)
        failed |= !WIFEXITED(status) || WEXITSTATUS(status) != 0;
    if ((rc = record(failed ? "a worker failed" : "all workers done")) < 0)
        failed = failed_record("parent", rc);
    if (log_handle && (rc = forklog_close(log_handle)) < 0)
        failed = failed_record("parent", rc);
    free(msg);
    return failed;
}
