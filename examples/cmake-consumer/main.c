/* SPDX-License-Identifier: MIT */
/* A program of another project, built with find_package(forklog): a parent and two forked children each log
 * one record. Usage: hello_forklog LOGFILE; prints how many records were written, and fails if any was not. */
#include <forklog.h>

#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s LOGFILE\n", argv[0]);
        return 2;
    }
    forklog *log;
    int rc = forklog_open(&log, argv[1], NULL);
    if (rc < 0) {
        fprintf(stderr, "%s: %s\n", argv[1], strerror(-rc));
        return 1;
    }
    int records = 0, failed = 0;
    for (int i = 0; i < 2; i++) {
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            failed = 1;
            break;
        }
        if (pid == 0) {
            int bad = 0;
            if ((rc = forklog_info(log, "child %d says hello", i)) < 0 || (rc = forklog_close(log)) < 0) {
                fprintf(stderr, "child %d: %s\n", i, strerror(-rc));
                bad = 1;
            }
            _exit(bad);
        }
    }
    int status;
    while (wait(&status) > 0) {
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
            records++;
        else
            failed = 1;
    }
    if ((rc = forklog_info(log, "parent: forklog %s", forklog_version_string())) < 0) {
        fprintf(stderr, "parent: %s\n", strerror(-rc));
        failed = 1;
    } else {
        records++;
    }
    if ((rc = forklog_close(log)) < 0) {
        fprintf(stderr, "parent: closing the log: %s\n", strerror(-rc));
        failed = 1;
    }
    printf("hello_forklog: %d records in %s with forklog %s\n", records, argv[1], forklog_version_string());
    return failed;
}
