/* SPDX-License-Identifier: MIT */
/*
 * forklog_bench_pool: the overhead of forklog_pool_map() itself. 100,000 empty tasks (default) over 2 workers
 * (default), once with a log (one timing record per task plus the summary record) and once without, each
 * measured R times; prints the median tasks/s and the min-max spread. Compare with bench/pool_python.py
 * (Python's Pool.map(chunksize=1) on the same count).
 *
 * The clock runs around forklog_pool_map() as a whole: forking the workers, every task, the records, reaping.
 * With a log, the file is checked afterwards: one whole `ok` record of each task, once, and one summary of all the
 * tasks ok (-c FILE checks a file alone).
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

/* Whether the line l[0..len) is all of pattern pat: P_TS is a timestamp (2026-12-06T01:03:40.806540Z), P_INT one or
 * more digits (their value goes to the next *num), P_DUR a number as the pool writes a duration (digits, '.', 'e',
 * '+', '-'), any other byte itself. */
#define P_TS  "\001"
#define P_INT "\002"
#define P_DUR "\003"

static int match(const char *l, size_t len, const char *pat, size_t *num, int nnum)
{
    const char *e = l + len;
    for (; *pat; pat++) {
        if (*pat == P_TS[0]) {
            static const char shape[] = "dddd-dd-ddTdd:dd:dd.ddddddZ";
            if ((size_t)(e - l) < sizeof shape - 1)
                return 0;
            for (size_t i = 0; i < sizeof shape - 1; i++)
                if (shape[i] == 'd' ? l[i] < '0' || l[i] > '9' : l[i] != shape[i])
                    return 0;
            l += sizeof shape - 1;
        } else if (*pat == P_INT[0]) {
            size_t v = 0;
            const char *d = l;
            for (; l < e && *l >= '0' && *l <= '9'; l++)
                v = v * 10 + (size_t)(*l - '0');
            if (l == d || l - d > 19)
                return 0;
            if (nnum-- > 0)
                *num++ = v;
        } else if (*pat == P_DUR[0]) {
            const char *d = l;
            while (l < e && ((*l >= '0' && *l <= '9') || *l == '.' || *l == 'e' || *l == '+' || *l == '-'))
                l++;
            if (l == d)
                return 0;
        } else if (l == e || *l++ != *pat) {
            return 0;
        }
    }
    return l == e;
}

/* The file of one run with a log: one whole `ok` record of each task 0 .. ntasks-1, once, and one summary saying
 * that every task was ok, each line whole. Returns NULL, or what is wrong (msg, cap) with the line's byte offset.
 * Counting lines would not do: the summary's line stood in for a lost task record, a repeated one went unseen,
 * and a record torn by another one was still a line. */
static const char *check_file(const char *path, size_t ntasks, int json, char *msg, size_t cap)
{
    static const char task_text[] = P_TS " INFO pid=" P_INT " task task=" P_INT " status=ok cost=" P_DUR
                                         " worker=" P_INT " code=0 signal=0 start=" P_TS;
    static const char task_json[] =
        "{\"ts\":\"" P_TS "\",\"level\":\"info\",\"pid\":" P_INT ",\"msg\":\"task\",\"task\":" P_INT
        ",\"status\":\"ok\",\"cost\":" P_DUR ",\"worker\":" P_INT ",\"code\":0,\"signal\":0,\"start\":\"" P_TS "\"}";
    static const char sum_text[] =
        P_TS " INFO pid=" P_INT " pool summary tasks=" P_INT " ok=" P_INT
             " failed=0 crashed=0 timeout=0 not_run=0 workers=" P_INT " wall=" P_DUR " min=" P_DUR " p50=" P_DUR
             " p95=" P_DUR " p99=" P_DUR " max=" P_DUR " mean=" P_DUR " tasks_per_s=" P_DUR;
    static const char sum_json[] =
        "{\"ts\":\"" P_TS "\",\"level\":\"info\",\"pid\":" P_INT ",\"msg\":\"pool summary\",\"tasks\":" P_INT
        ",\"ok\":" P_INT ",\"failed\":0,\"crashed\":0,\"timeout\":0,\"not_run\":0,\"workers\":" P_INT ",\"wall\":" P_DUR
        ",\"min\":" P_DUR ",\"p50\":" P_DUR ",\"p95\":" P_DUR ",\"p99\":" P_DUR ",\"max\":" P_DUR ",\"mean\":" P_DUR
        ",\"tasks_per_s\":" P_DUR "}";
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        snprintf(msg, cap, "cannot read it: %s", strerror(errno));
        if (fd >= 0)
            close(fd);
        return msg;
    }
    size_t n = (size_t)st.st_size;
    const char *m = n ? mmap(NULL, n, PROT_READ, MAP_PRIVATE, fd, 0) : NULL;
    close(fd);
    if (m == MAP_FAILED) {
        snprintf(msg, cap, "cannot map it: %s", strerror(errno));
        return msg;
    }
    unsigned char *seen = calloc(ntasks ? ntasks : 1, 1);
    if (!seen) {
        snprintf(msg, cap, "out of memory");
        return msg;
    }
    const char *err = NULL;
    size_t tasks = 0, summaries = 0, off = 0;
    while (off < n && !err) {
        const char *l = m + off, *nl = memchr(l, '\n', n - off);
        size_t len = nl ? (size_t)(nl - l) : n - off, v[4];
        if (!nl)
            snprintf(msg, cap, "the last record has no newline (torn), at byte %zu", off), err = msg;
        else if (match(l, len, json ? task_json : task_text, v, 2)) {
            if (v[1] >= ntasks || seen[v[1]])
                snprintf(msg, cap, "task %zu recorded again or out of range, at byte %zu", v[1], off), err = msg;
            else
                seen[v[1]] = 1, tasks++;
        } else if (match(l, len, json ? sum_json : sum_text, v, 3)) {
            if (summaries++ || v[1] != ntasks || v[2] != ntasks)
                snprintf(msg, cap, "a second summary, or not of %zu ok tasks, at byte %zu", ntasks, off), err = msg;
        } else {
            snprintf(msg, cap, "not a whole task or summary record (torn?), at byte %zu", off), err = msg;
        }
        off += len + 1;
    }
    if (!err && (tasks != ntasks || summaries != 1))
        snprintf(msg, cap, "%zu task records and %zu summaries, expected %zu and 1", tasks, summaries, ntasks),
            err = msg;
    free(seen);
    if (n)
        munmap((void *)(uintptr_t)m, n);
    return err;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: forklog_bench_pool [-n TASKS (100000)] [-w WORKERS (2)] [-r RUNS (5)] [-d DIR (/var/tmp)]\n"
               "                          [-m log|nolog|both (both)] [-f text|json (text)]\n"
               "       forklog_bench_pool -c FILE [-n TASKS] [-f text|json]: only check FILE, a run's log\n");
}

int main(int argc, char **argv)
{
    size_t ntasks = 100000;
    unsigned workers = 2;
    int runs = 5;
    const char *dirarg = "/var/tmp";
    const char *mode = "both";
    int json = 0;
    const char *check_only = NULL;
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
        case 'c': check_only = v; break;
        default: usage(stderr); return 2;
        }
    }
    if (ntasks == 0 || workers == 0 || runs < 1 || runs > 100) {
        usage(stderr);
        return 2;
    }
    if (check_only) {
        /* -c FILE: only the check of a run's file (of -n tasks, format -f), to show that it fails on a broken one. */
        char why[160];
        if (check_file(check_only, ntasks, json, why, sizeof why)) {
            fprintf(stderr, "forklog_bench_pool: CHECK FAILED: %s: %s\n", check_only, why);
            return 2;
        }
        printf("forklog_bench_pool: %s: %zu task records and the summary, whole\n", check_only, ntasks);
        return 0;
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
                char why[160];
                if (check_file(path, ntasks, json, why, sizeof why)) {
                    fprintf(stderr, "forklog_bench_pool: CHECK FAILED: %s: %s (the file is kept)\n", path, why);
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
