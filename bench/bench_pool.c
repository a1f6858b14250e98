/* SPDX-License-Identifier: MIT */
/*
 * forklog_bench_pool: the overhead of forklog_pool_map() itself. 100,000 empty tasks (default) over 2 workers
 * (default), once with a log (one timing record per task plus the summary record) and once without, each
 * measured R times; prints the median tasks/s and the min-max spread. Compare with bench/pool_python.py
 * (Python's Pool.map(chunksize=1) on the same count).
 *
 * The clock runs around forklog_pool_map() as a whole: forking the workers, every task, the records, reaping.
 * With a log, the file is checked afterwards: one record per task (plus the summary), every line whole.
 */
#include <forklog.h>

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int empty_task(size_t index, void *ctx)
{
    (void)index;
    (void)ctx;
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Counts the lines of the file; returns -1 if it does not end with a newline. */
static long count_lines(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    struct stat st;
    if (fstat(fd, &st) < 0 || st.st_size == 0) {
        close(fd);
        return st.st_size == 0 ? 0 : -1;
    }
    size_t n = (size_t)st.st_size;
    const char *m = mmap(NULL, n, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED)
        return -1;
    long lines = 0;
    for (const char *p = m, *e = m + n; p < e;) {
        const char *nl = memchr(p, '\n', (size_t)(e - p));
        if (!nl) {
            lines = -1;
            break;
        }
        lines++;
        p = nl + 1;
    }
    munmap((void *)(uintptr_t)m, n);
    return lines;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: forklog_bench_pool [-n TASKS (100000)] [-w WORKERS (2)] [-r RUNS (5)] [-d DIR (/var/tmp)]\n"
               "                          [-m log|nolog|both (both)] [-f text|json (text)]\n");
}

int main(int argc, char **argv)
{
    size_t ntasks = 100000;
    unsigned workers = 2;
    int runs = 5;
    const char *dirarg = "/var/tmp";
    const char *mode = "both";
    int json = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        if (!v || a[0] != '-' || !a[1] || a[2]) {
            usage(stderr);
            return 2;
        }
        i++;
        switch (a[1]) {
        case 'n': ntasks = strtoul(v, NULL, 10); break;
        case 'w': workers = (unsigned)strtoul(v, NULL, 10); break;
        case 'r': runs = atoi(v); break;
        case 'd': dirarg = v; break;
        case 'm': mode = v; break;
        case 'f': json = !strcmp(v, "json"); break;
        default: usage(stderr); return 2;
        }
    }
    if (ntasks == 0 || workers == 0 || runs < 1 || runs > 100) {
        usage(stderr);
        return 2;
    }

    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/forklog-bench-pool.XXXXXX", dirarg);
    if (!mkdtemp(dir)) {
        fprintf(stderr, "forklog_bench_pool: mkdtemp %s: %s\n", dir, strerror(errno));
        return 2;
    }
    struct statfs sfs;
    if (statfs(dir, &sfs) == 0 && ((unsigned long)sfs.f_type == 0x01021994UL))
        fprintf(stderr, "forklog_bench_pool: warning: %s is on tmpfs\n", dir);

    FILE *lf = fopen("/proc/loadavg", "r");
    char load[128] = "";
    if (lf) {
        if (!fgets(load, sizeof load, lf))
            load[0] = 0;
        fclose(lf);
    }
    printf("forklog_bench_pool %s: %zu empty tasks, %u workers, %d runs per variant, dir %s (statfs type 0x%lx)\n",
           forklog_version_string(), ntasks, workers, runs, dir, (unsigned long)sfs.f_type);
    printf("load at start: %s", load[0] ? load : "?\n");
    printf("%-8s %12s %25s %14s %s\n", "variant", "tasks/s", "min-max tasks/s", "us per task", "(median of runs)");

    const int want_log[2] = {strcmp(mode, "nolog") != 0, strcmp(mode, "log") != 0};
    for (int variant = 0; variant < 2; variant++) {
        if (!want_log[variant])
            continue;
        int with_log = variant == 0;
        double rates[100];
        for (int r = 0; r < runs; r++) {
            char path[PATH_MAX + 32];
            snprintf(path, sizeof path, "%s/pool-%d.log", dir, r);
            forklog *log = NULL;
            if (with_log) {
                struct forklog_options o;
                memset(&o, 0, sizeof o);
                o.format = json ? FORKLOG_FORMAT_JSON : FORKLOG_FORMAT_TEXT;
                int rc = forklog_open(&log, path, &o);
                if (rc < 0) {
                    fprintf(stderr, "forklog_bench_pool: forklog_open: %s\n", strerror(-rc));
                    return 2;
                }
            }
            struct forklog_pool_options po;
            memset(&po, 0, sizeof po);
            po.workers = workers;
            po.log = log;
            struct forklog_pool_report rep;
            memset(&rep, 0, sizeof rep);
            double t0 = now_s();
            int rc = forklog_pool_map(&po, ntasks, empty_task, NULL, &rep);
            double t1 = now_s();
            if (rc != 0) {
                fprintf(stderr, "forklog_bench_pool: forklog_pool_map returned %d (%s)\n", rc,
                        rc < 0 ? strerror(-rc) : "tasks did not end ok");
                return 2;
            }
            if (rep.ok != ntasks) {
                fprintf(stderr, "forklog_bench_pool: report says %zu ok of %zu\n", rep.ok, ntasks);
                return 2;
            }
            if (log) {
                forklog_close(log);
                long lines = count_lines(path);
                /* One record per task, plus the summary record(s) the pool writes at the end. */
                if (lines < (long)ntasks || lines > (long)ntasks + 8) {
                    fprintf(stderr,
                            "forklog_bench_pool: %s has %ld whole lines, expected %zu task records (+summary)\n", path,
                            lines, ntasks);
                    return 2;
                }
                unlink(path);
            }
            rates[r] = (double)ntasks / (t1 - t0);
        }
        double s[100];
        memcpy(s, rates, sizeof s[0] * (size_t)runs);
        qsort(s, (size_t)runs, sizeof s[0], cmp_double);
        double med = runs % 2 ? s[runs / 2] : (s[runs / 2 - 1] + s[runs / 2]) / 2;
        char spread[64];
        snprintf(spread, sizeof spread, "%.0f-%.0f", s[0], s[runs - 1]);
        printf("%-8s %12.0f %25s %14.2f\n", with_log ? "log" : "no log", med, spread, 1e6 / med);
        fflush(stdout);
    }
    lf = fopen("/proc/loadavg", "r");
    if (lf) {
        if (!fgets(load, sizeof load, lf))
            load[0] = 0;
        fclose(lf);
    }
    printf("load at end: %s", load);
    rmdir(dir);
    return 0;
}
