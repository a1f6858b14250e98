/* SPDX-License-Identifier: MIT */
/* A program outside the tree: forks writers that share one forklog handle, then checks the file. Built against
 * the installed library (pkg-config, find_package) and against the single header alone. */
#ifdef FORKLOG_SINGLE_HEADER
#define FORKLOG_IMPLEMENTATION
#endif
#include "forklog.h"

#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

enum { CHILDREN = 4, RECORDS = 50 };

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s LOGFILE\n", argv[0]);
        return 2;
    }
    forklog *log;
    int rc = forklog_open(&log, argv[1], NULL);
    if (rc < 0) {
        fprintf(stderr, "forklog_open: %s\n", strerror(-rc));
        return 1;
    }
    for (int c = 0; c < CHILDREN; c++) {
        pid_t pid = fork();
        if (pid < 0)
            return 1;
        if (pid == 0) {
            int bad = 0;
            for (int i = 0; i < RECORDS; i++)
                bad |= forklog_info(log, "child %d record %d", c, i) != 0;
            bad |= forklog_close(log) != 0;
            _exit(bad);
        }
    }
    int failed = 0, status;
    while (wait(&status) > 0)
        failed |= !WIFEXITED(status) || WEXITSTATUS(status) != 0;
    failed |= forklog_info(log, "forklog %s: parent done", forklog_version_string()) != 0;
    failed |= forklog_close(log) != 0;

    FILE *f = fopen(argv[1], "r");
    if (!f)
        return 1;
    char line[512];
    int lines = 0;
    while (fgets(line, sizeof line, f))
        lines += strchr(line, '\n') != NULL && strstr(line, " INFO pid=") != NULL;
    fclose(f);
    if (failed || lines != CHILDREN * RECORDS + 1) {
        fprintf(stderr, "FAIL: %d whole records, %d expected\n", lines, CHILDREN * RECORDS + 1);
        return 1;
    }
    printf("consumer OK: %d records\n", lines);
    return 0;
}
