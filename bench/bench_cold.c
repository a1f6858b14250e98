/* SPDX-License-Identifier: MIT */
/*
 * forklog_bench_cold: where a direct-mode record's time goes besides its write(2). One process, one writer, 100 B
 * records, no buffering: each record is built and then written with one write(2), as the P=1 cells of
 * forklog_bench run. The program defines write() and writev() itself (the library is linked statically, so its
 * calls are these), times every system call, and prints per record the time outside it (the user-space part: the
 * loop, formatting, the lock and the bookkeeping) beside the time inside it. Methods run in rotation, R rounds of
 * n records each; the medians are printed.
 *
 * A second table runs forklog_write() and one format in buffered mode (no system call per record: the flushes'
 * write(2) is timed and left out) with nothing, a getppid() or a write(2) of 100 B to another file between two
 * records: what a system call, and the kernel's write path, cost the user-space part of the record that follows.
 *
 * A third table times the two steps that no timestamped record written under the lock can skip, alone: reading
 * the clock (clock_gettime(CLOCK_REALTIME), as a record's timestamp does) and locking and unlocking a robust
 * process-shared mutex (as the append lock is); and the highest ratio to the floor that a record could reach if it
 * cost the floor's loop, its write(2) and those two steps, and nothing else.
 *
 * usage: forklog_bench_cold [-n RECORDS] [-r ROUNDS] [-d DIR]       defaults: -n 20000 -r 15 -d /var/tmp
 */
#include <forklog.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define REC        100
#define MAX_ROUNDS 101

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Nanoseconds spent inside write(2) and writev(2) since the last reset. */
static long long in_kernel_ns;

ssize_t write(int fd, const void *buf, size_t n)
{
    long long t = now_ns();
    ssize_t r = (ssize_t)syscall(SYS_write, fd, buf, n);
    in_kernel_ns += now_ns() - t;
    return r;
}

ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
    long long t = now_ns();
    ssize_t r = (ssize_t)syscall(SYS_writev, fd, iov, cnt);
    in_kernel_ns += now_ns() - t;
    return r;
}

enum method { FLOOR, RAW, TEXT, REQUEST, ITEMS, PAIR, KV4, METHODS };
static const char *const names[METHODS] = {
    "floor (write(2))",          "forklog_write", "forklog_log \"%s\"", "\"request %s cost %.6f s\"",
    "\"%d items in %ld ms %s\"", "\"%s: %s\"",    "four typed fields"};

static forklog *log_, *buffered;
static int floor_fd, other_fd;
static char rec[REC + 1], msg[METHODS][REC + 1];

static int one(forklog *log, enum method m, long i)
{
    const struct forklog_field kv4[4] = {FORKLOG_STR("method", "GET"), FORKLOG_INT("status", 200),
                                         FORKLOG_DUR_NS("cost", 1234567), FORKLOG_UINT("bytes", 4321)};
    switch (m) {
    case FLOOR: return write(floor_fd, rec, REC) == REC ? 0 : -EIO;
    case RAW: return forklog_write(log, rec, REC);
    case TEXT: return forklog_log(log, FORKLOG_INFO, "%s", msg[m]);
    case REQUEST:
        return forklog_log(log, FORKLOG_INFO, "request %s cost %.6f s", msg[m], (double)(i % 1000) / 1000.0 + 1e-4);
    case ITEMS:
        return forklog_log(log, FORKLOG_INFO, "%d items in %ld ms %s", 100 + (int)(i % 900), 10000L + i % 90000,
                           msg[m]);
    case PAIR: return forklog_log(log, FORKLOG_INFO, "%s: %s", "open", msg[m]);
    case KV4: return forklog_log_fields(log, FORKLOG_INFO, msg[m], kv4, 4);
    default: return -EINVAL;
    }
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    long n = 20000;
    int rounds = 15;
    const char *dir = "/var/tmp";
    for (int opt; (opt = getopt(argc, argv, "n:r:d:h")) != -1;) {
        if (opt == 'n')
            n = atol(optarg);
        else if (opt == 'r')
            rounds = atoi(optarg);
        else if (opt == 'd')
            dir = optarg;
        else {
            fprintf(stderr, "usage: %s [-n RECORDS] [-r ROUNDS] [-d DIR]\n", argv[0]);
            return opt == 'h' ? 0 : 2;
        }
    }
    if (n < 1 || rounds < 1 || rounds > MAX_ROUNDS) {
        fprintf(stderr, "%s: -n at least 1, -r 1..%d\n", argv[0], MAX_ROUNDS);
        return 2;
    }
    char path[4096], fpath[4096], bpath[4096], opath[4096];
    snprintf(path, sizeof path, "%s/forklog_bench_cold.%ld.log", dir, (long)getpid());
    snprintf(fpath, sizeof fpath, "%s/forklog_bench_cold.%ld.floor", dir, (long)getpid());
    snprintf(bpath, sizeof bpath, "%s/forklog_bench_cold.%ld.buffered", dir, (long)getpid());
    snprintf(opath, sizeof opath, "%s/forklog_bench_cold.%ld.other", dir, (long)getpid());
    const struct forklog_options bo = {.flags = FORKLOG_BUFFERED};
    int rc = forklog_open(&log_, path, NULL);
    int brc = forklog_open(&buffered, bpath, &bo);
    floor_fd = open(fpath, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
    other_fd = open(opath, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
    if (rc < 0 || brc < 0 || floor_fd < 0 || other_fd < 0) {
        fprintf(stderr, "%s: cannot open the logs in %s\n", argv[0], dir);
        return 1;
    }
    memset(rec, 'a', REC - 1);
    rec[REC - 1] = '\n';
    /* Each method's message so that its record is REC bytes: one record with a 50-byte message, measured. */
    for (int m = TEXT; m < METHODS; m++) {
        memset(msg[m], 'b', 50);
        struct stat st;
        if (stat(path, &st) != 0 || one(log_, (enum method)m, 0) < 0) {
            fprintf(stderr, "%s: %s: the first record failed\n", argv[0], names[m]);
            return 1;
        }
        off_t was = st.st_size;
        if (stat(path, &st) != 0 || st.st_size - was > 50 + REC || st.st_size - was < 51) {
            fprintf(stderr, "%s: %s: a record of another size than expected\n", argv[0], names[m]);
            return 1;
        }
        long len = 50 + REC - (long)(st.st_size - was);
        if (len < 1) {
            fprintf(stderr, "%s: %s: its fixed part alone is over %d bytes\n", argv[0], names[m], REC);
            return 1;
        }
        memset(msg[m], 0, sizeof msg[m]);
        memset(msg[m], 'b', (size_t)len);
    }
    static double user[METHODS][MAX_ROUNDS], sys[METHODS][MAX_ROUNDS];
    for (int r = 0; r < rounds; r++) {
        for (int k = 0; k < METHODS; k++) {
            int m = (k + r) % METHODS; /* rotated: no method always runs after the same one */
            in_kernel_ns = 0;
            long long t0 = now_ns();
            for (long i = 0; i < n; i++)
                if (one(log_, (enum method)m, i) < 0) {
                    fprintf(stderr, "%s: %s: a record failed\n", argv[0], names[m]);
                    return 1;
                }
            long long total = now_ns() - t0;
            user[m][r] = (double)(total - in_kernel_ns) / (double)n;
            sys[m][r] = (double)in_kernel_ns / (double)n;
        }
    }
    printf("%ld records of %d B per method and round, %d rounds; medians, ns per record\n", n, REC, rounds);
    printf("%-28s %10s %10s %10s %9s\n", "method", "outside", "in write", "total", "vs floor");
    double floor_total = 0;
    for (int m = 0; m < METHODS; m++) {
        double t[MAX_ROUNDS];
        for (int r = 0; r < rounds; r++)
            t[r] = user[m][r] + sys[m][r];
        qsort(user[m], (size_t)rounds, sizeof(double), cmp);
        qsort(sys[m], (size_t)rounds, sizeof(double), cmp);
        qsort(t, (size_t)rounds, sizeof(double), cmp);
        if (m == FLOOR)
            floor_total = t[rounds / 2];
        printf("%-28s %10.0f %10.0f %10.0f %8.2fx\n", names[m], user[m][rounds / 2], sys[m][rounds / 2], t[rounds / 2],
               floor_total / t[rounds / 2]);
    }

    /* Buffered, with something between two records. Every case reads the clock twice around it, nothing
     * included, so that the timing costs each the same. */
    static const char *const between[3] = {"nothing", "getppid()", "write(2) 100 B"};
    static const enum method brec[2] = {RAW, REQUEST};
    static double bu[2][3][MAX_ROUNDS];
    for (int r = 0; r < rounds; r++) {
        for (int k = 0; k < 6; k++) {
            int c = (k + r) % 6, m = c / 3, b = c % 3;
            in_kernel_ns = 0;
            long long t0 = now_ns();
            for (long i = 0; i < n; i++) {
                if (one(buffered, brec[m], i) < 0) {
                    fprintf(stderr, "%s: buffered %s: a record failed\n", argv[0], names[brec[m]]);
                    return 1;
                }
                long long a = now_ns();
                if (b == 1)
                    (void)syscall(SYS_getppid);
                else if (b == 2 && syscall(SYS_write, other_fd, rec, REC) != REC)
                    return 1;
                in_kernel_ns += now_ns() - a;
            }
            bu[m][b][r] = (double)(now_ns() - t0 - in_kernel_ns) / (double)n;
        }
    }
    printf("\nFORKLOG_BUFFERED, ns per record outside every system call, with between two records:\n");
    printf("%-28s %10s %10s %15s\n", "method", between[0], between[1], between[2]);
    for (int m = 0; m < 2; m++) {
        printf("%-28s", names[brec[m]]);
        for (int b = 0; b < 3; b++) {
            qsort(bu[m][b], (size_t)rounds, sizeof(double), cmp);
            printf(" %*.0f", b == 2 ? 15 : 10, bu[m][b][rounds / 2]);
        }
        printf("\n");
    }
    /* The two steps alone, and the floor's loop without the timing of its write(2) (which the first table adds to
     * every method alike), in rotation as above. */
    pthread_mutexattr_t ma;
    pthread_mutex_t mx;
    if (pthread_mutexattr_init(&ma) != 0 || pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED) != 0 ||
        pthread_mutexattr_setrobust(&ma, PTHREAD_MUTEX_ROBUST) != 0 || pthread_mutex_init(&mx, &ma) != 0) {
        fprintf(stderr, "%s: cannot make a robust process-shared mutex\n", argv[0]);
        return 1;
    }
    static double step[3][MAX_ROUNDS];
    volatile long sink = 0;
    for (int r = 0; r < rounds; r++) {
        for (int k = 0; k < 3; k++) {
            int c = (k + r) % 3;
            long long t0 = now_ns();
            for (long i = 0; i < n; i++) {
                if (c == 0) {
                    struct timespec ts;
                    clock_gettime(CLOCK_REALTIME, &ts);
                    sink += ts.tv_nsec;
                } else if (c == 1) {
                    if (pthread_mutex_lock(&mx) != 0)
                        return 1;
                    sink++;
                    pthread_mutex_unlock(&mx);
                } else if (syscall(SYS_write, floor_fd, rec, REC) != REC) {
                    return 1;
                }
            }
            step[c][r] = (double)(now_ns() - t0) / (double)n;
        }
    }
    (void)sink;
    pthread_mutex_destroy(&mx);
    pthread_mutexattr_destroy(&ma);
    for (int c = 0; c < 3; c++)
        qsort(step[c], (size_t)rounds, sizeof(double), cmp);
    double clock_ns = step[0][rounds / 2], lock_ns = step[1][rounds / 2], bare = step[2][rounds / 2];
    printf("\nThe steps no timestamped record written under the lock can skip, alone, ns per call:\n");
    printf("%-44s %10.0f\n", "clock_gettime(CLOCK_REALTIME)", clock_ns);
    printf("%-44s %10.0f\n", "robust shared mutex, lock and unlock", lock_ns);
    printf("%-44s %10.0f\n", "floor, its write(2) not timed", bare);
    printf("%-44s %9.2fx\n", "that floor + both steps, vs that floor", bare / (bare + clock_ns + lock_ns));

    forklog_close(log_);
    forklog_close(buffered);
    close(floor_fd);
    close(other_fd);
    unlink(path);
    unlink(fpath);
    unlink(bpath);
    unlink(opath);
    return 0;
}
