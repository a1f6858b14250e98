/* SPDX-License-Identifier: MIT */
/* A writer that tests/interop_builds.sh builds several ways (linked to libforklog.so, to libforklog.a, with the
 * single header alone, against musl, with another layout number) and runs at once on one log.
 *     interop_writer PATH ID COUNT [json] [raw] [child] [ready=FILE] [wait=FILE] [exec=N:PROGRAM]
 * writes records `I id=ID seq=S |PAYLOAD` (S from 0, or from start=S), raw ones with forklog_write(). `child`: a
 * forked child writes COUNT records of its own (ID + 100) through the inherited handle. `ready=FILE`: creates FILE
 * once the log is open; `wait=FILE`: waits for FILE before the close. `exec=N:PROGRAM`: at record N, execs PROGRAM
 * (another build) with the same arguments and start=N, without closing the log.
 * Exit status: 0; 2 usage; 3 open failed (4: with -EPROTO, the error line on stderr); 5 a record or the close failed;
 * 6 exec failed. */
#ifdef FORKLOG_SINGLE_HEADER
#define FORKLOG_IMPLEMENTATION
#endif
#include "forklog.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

static int put(forklog *log, int raw, unsigned id, unsigned seq)
{
    char b[160];
    int n = snprintf(b, sizeof b, "I id=%u seq=%u |", id, seq);
    for (unsigned i = 0; i < 40 + (id * 7 + seq) % 60; i++)
        b[n++] = (char)('a' + (id + seq + i) % 26);
    b[n] = 0;
    if (!raw)
        return forklog_log(log, FORKLOG_INFO, "%s", b);
    b[n++] = '\n';
    return forklog_write(log, b, (size_t)n);
}

int main(int argc, char **argv)
{
    if (argc < 4)
        return 2;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    unsigned id = (unsigned)atoi(argv[2]), count = (unsigned)atoi(argv[3]), start = 0, exec_at = 0;
    const char *ready = NULL, *wait_for = NULL, *exec_prog = NULL;
    int raw = 0, child = 0;
    char err[256] = "";
    struct forklog_options o = {.error = err, .error_size = sizeof err};
    for (int i = 4; i < argc; i++) {
        if (strcmp(argv[i], "json") == 0)
            o.format = FORKLOG_FORMAT_JSON;
        else if (strcmp(argv[i], "raw") == 0)
            raw = 1;
        else if (strcmp(argv[i], "child") == 0)
            child = 1;
        else if (strncmp(argv[i], "ready=", 6) == 0)
            ready = argv[i] + 6;
        else if (strncmp(argv[i], "wait=", 5) == 0)
            wait_for = argv[i] + 5;
        else if (strncmp(argv[i], "start=", 6) == 0)
            start = (unsigned)atoi(argv[i] + 6);
        else if (strncmp(argv[i], "exec=", 5) == 0 && strchr(argv[i], ':')) {
            exec_at = (unsigned)atoi(argv[i] + 5);
            exec_prog = strchr(argv[i], ':') + 1;
        }
    }
    forklog *log;
    int rc = forklog_open(&log, argv[1], &o);
    if (rc < 0) {
        fprintf(stderr, "interop_writer %u: open: %s (%s)\n", id, strerror(-rc), err);
        return rc == -EPROTO ? 4 : 3;
    }
    if (ready) {
        FILE *f = fopen(ready, "w");
        if (f)
            fclose(f);
    }
    pid_t pid = -1;
    if (child && start == 0 && (pid = fork()) == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        for (unsigned s = 0; s < count; s++)
            if (put(log, raw, id + 100, s) != 0)
                _exit(5);
        _exit(forklog_close(log) == 0 ? 0 : 5);
    }
    for (unsigned s = start; s < count; s++) {
        if (exec_prog && s == exec_at) {
            /* The same arguments, but exec= and child, and from record s on; the log is not closed first. */
            char from[32], *args[32];
            int k = 0;
            snprintf(from, sizeof from, "start=%u", s);
            args[k++] = (char *)exec_prog;
            for (int i = 1; i < argc && k < 30; i++)
                if (strncmp(argv[i], "exec=", 5) != 0 && strcmp(argv[i], "child") != 0 &&
                    strncmp(argv[i], "start=", 6) != 0)
                    args[k++] = argv[i];
            args[k++] = from;
            args[k] = NULL;
            if (pid > 0 && waitpid(pid, &rc, 0) == pid && rc != 0)
                return 5;
            execv(exec_prog, args);
            return 6;
        }
        if (put(log, raw, id, s) != 0)
            return 5;
    }
    while (wait_for && access(wait_for, F_OK) != 0)
        usleep(1000);
    if (pid > 0 && (waitpid(pid, &rc, 0) != pid || rc != 0))
        return 5;
    return forklog_close(log) == 0 ? 0 : 5;
}
