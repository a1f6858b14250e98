/* SPDX-License-Identifier: MIT */
/*
 * The timing pool: forklog_pool_map() runs 40 small jobs over 4 forked workers, times each one and logs one
 * record per job, written by the parent whatever the job did, plus a summary record. Job 13 fails (returns 7),
 * job 29 crashes (abort() in its worker), job 31 hangs past the 1 s timeout; the others sleep 1-5 ms and succeed.
 * The program prints the report, then reads the log back and counts the records per status.
 *
 * Usage: pool_timing LOGFILE
 * Prints "OK: 37 ok, 1 failed, 1 crashed, 1 timeout, 41 records" when the log holds what the report says, or
 * "NOT CHECKED" when the log was rotated during the run (its other users rotate it, or logrotate moved it).
 */
#ifndef _DEFAULT_SOURCE
#define _DEFAULT_SOURCE
#endif
#include <forklog.h>

#include <signal.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum { JOBS = 40 };

static const char *job_label(size_t i, void *ctx)
{
    static char labels[JOBS][16];
    (void)ctx;
    snprintf(labels[i], sizeof labels[i], "job-%02zu", i); /* called in the parent only, one record at a time */
    return labels[i];
}

static int job(size_t i, void *ctx)
{
    (void)ctx;
    if (i == 13)
        return 7; /* failed, code 7 */
    if (i == 29) {
        struct rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core); /* no core file left behind */
        abort();                          /* crashed (SIGABRT): the parent writes the record */
    }
    if (i == 31)
        pause(); /* past timeout_s: the worker is killed */
    struct timespec d = {0, (long)(1 + i % 5) * 1000000L};
    nanosleep(&d, NULL);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s LOGFILE\n", argv[0]);
        return 2;
    }
    /* The log is appended to: this run's records start at its present size. */
    struct stat st;
    off_t from = stat(argv[1], &st) == 0 ? st.st_size : 0;
    forklog *log;
    int rc = forklog_open(&log, argv[1], NULL);
    if (rc < 0) {
        fprintf(stderr, "%s: %s\n", argv[1], strerror(-rc));
        return 1;
    }
    struct stat was; /* the file this run starts in */
    if (stat(argv[1], &was) != 0)
        was.st_ino = 0;
    struct forklog_pool_options po = {.workers = 4, .timeout_s = 1, .log = log, .label = job_label};
    struct forklog_pool_report rep;
    int bad = forklog_pool_map(&po, JOBS, job, NULL, &rep);
    if ((rc = forklog_close(log)) < 0) {
        fprintf(stderr, "%s: %s\n", argv[1], strerror(-rc));
        return 1;
    }
    if (bad < 0) {
        fprintf(stderr, "the pool could not run: %s\n", strerror(-bad));
        return 1;
    }
    printf("report: %zu ok, %zu failed, %zu crashed, %zu timeout, %zu workers started\n", rep.ok, rep.failed,
           rep.crashed, rep.timed_out, rep.workers_started);
    printf("durations: min %.1f ms, p50 %.1f ms, p95 %.1f ms, max %.1f ms; wall %.2f s\n", rep.min_s * 1e3,
           rep.p50_s * 1e3, rep.p95_s * 1e3, rep.max_s * 1e3, rep.wall_s);

    /* This run's records: one `task task=N status=...` record per job, one `pool summary` record, all written by
     * this process. Another process may write the same log at the same time (a second run given the same LOGFILE,
     * the log's other programs): its records are not counted. */
    FILE *f = fopen(argv[1], "r");
    if (!f || fstat(fileno(f), &st) != 0 || fseeko(f, from, SEEK_SET) != 0) {
        perror(argv[1]);
        return 1;
    }
    if (st.st_ino != was.st_ino || st.st_dev != was.st_dev || st.st_size < from) {
        /* The log's users rotate it (rotate_bytes, joined from them) or logrotate moved it: this run's records
         * are spread over the rotated files. */
        printf("NOT CHECKED: %s was rotated or replaced during the run\n", argv[1]);
        fclose(f);
        return 0;
    }
    char own[32];
    snprintf(own, sizeof own, " pid=%ld ", (long)getpid());
    char *line = NULL;
    size_t cap = 0;
    size_t ok = 0, failed = 0, crashed = 0, timeout = 0, records = 0, summary = 0;
    while (getline(&line, &cap, f) > 0) {
        if (!strstr(line, own))
            continue;
        records++;
        ok += strstr(line, " status=ok ") != NULL;
        failed += strstr(line, " status=failed ") != NULL && strstr(line, " code=7 ") != NULL;
        crashed += strstr(line, " status=crashed ") != NULL && strstr(line, " signal=6 ") != NULL;
        timeout += strstr(line, " status=timeout ") != NULL && strstr(line, " label=job-31") != NULL;
        summary += strstr(line, " pool summary tasks=40 ") != NULL;
    }
    free(line);
    fclose(f);
    if (bad != 3 || ok != rep.ok || ok != JOBS - 3 || failed != 1 || crashed != 1 || timeout != 1 || summary != 1 ||
        records != JOBS + 1) {
        printf("FAIL: the log holds %zu ok, %zu failed, %zu crashed, %zu timeout, %zu summary, %zu records\n", ok,
               failed, crashed, timeout, summary, records);
        return 1;
    }
    printf("OK: %zu ok, %zu failed, %zu crashed, %zu timeout, %zu records\n", ok, failed, crashed, timeout, records);
    return 0;
}
