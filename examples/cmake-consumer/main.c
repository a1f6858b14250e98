/* SPDX-License-Identifier: MIT */
/* A program of another project, built with find_package(forklog): a parent and two forked children each log
 * one record. Usage: hello_forklog LOGFILE */
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
    for (int i = 0; i < 2; i++)
        if (fork() == 0) {
            int bad = forklog_info(log, "child %d says hello", i) != 0;
            bad |= forklog_close(log) != 0;
            _exit(bad);
        }
    int status, failed = 0;
    while (wait(&status) > 0)
        failed |= !WIFEXITED(status) || WEXITSTATUS(status) != 0;
    failed |= forklog_info(log, "parent: forklog %s", forklog_version_string()) != 0;
    failed |= forklog_close(log) != 0;
    printf("hello_forklog: 3 records in %s with forklog %s\n", argv[1], forklog_version_string());
    return failed;
}
