/* SPDX-License-Identifier: MIT */
/*
 * forklog_bench_threads: many writer threads of one process, FORKLOG_BUFFERED, 100 B records. For each thread
 * count T, T threads each append n records with forklog_write() at once (a barrier starts them; every thread stays
 * alive until all are done, as in a server's thread pool), R times; prints the median ns per record (wall time of
 * the whole cell over all records, forklog_close() included) and records/s, and the same for the floor: T threads
 * doing an unlocked write(2) per record on one O_APPEND descriptor.
 *
 * Each forklog file is checked afterwards: every record whole, each thread's records all there, once, in order.
 *
 * usage: forklog_bench_threads [-T LIST] [-n RECORDS_PER_THREAD] [-r RUNS] [-d DIR]
 *   defaults: -T 8,16,32,64,96 -n 30000 -r 5 -d /var/tmp
 */
#include <forklog.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define REC      100
#define MAX_T    256
#define MAX_LIST 16
#define MAX_RUNS 32

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
    fprintf(stderr, "forklog_bench_threads: %s\n", what);
    exit(1);
}

struct cell {
    forklog *log; /* NULL: the floor, on fd */
    int fd;
    unsigned n;
    pthread_barrier_t start, end;
};

struct arg {
    struct cell *c;
    unsigned id;
};

/* v as n lowercase hex digits (cheaper than snprintf, whose cost would swamp a buffered append's). */
static void put_hex(char *out, unsigned v, int n)
{
    while (n-- > 0) {
        out[n] = "0123456789abcdef"[v & 15];
        v >>= 4;
    }
}

/* "TTT SSSSSSSS xxx...\n": thread id, sequence, padding to REC bytes. */
static void *writer(void *p)
{
    struct arg *a = p;
    struct cell *c = a->c;
    char rec[REC];
    memset(rec, 'x', sizeof rec);
    rec[REC - 1] = '\n';
    pthread_barrier_wait(&c->start);
    for (unsigned i = 0; i < c->n; i++) {
        put_hex(rec, a->id, 3);
        rec[3] = ' ';
        put_hex(rec + 4, i, 8);
        rec[12] = ' ';
        if (c->log ? forklog_write(c->log, rec, REC) != 0 : write(c->fd, rec, REC) != REC)
            die("a write failed");
    }
    pthread_barrier_wait(&c->end);
    return NULL;
}

static void check(const char *path, unsigned threads, unsigned n)
{
    int fd = open(path, O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0)
        die("check: cannot open the file");
    if ((size_t)st.st_size != (size_t)threads * n * REC)
        die("CHECK FAILED: the file does not hold every record once");
    const char *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED)
        die("check: mmap");
    unsigned *next = calloc(threads, sizeof *next);
    for (size_t off = 0; off < (size_t)st.st_size; off += REC) {
        unsigned id = 0, seq = 0;
        char head[13]; /* the mapping has no NUL after the last record: parse a copy */
        memcpy(head, m + off, 12);
        head[12] = 0;
        if (m[off + REC - 1] != '\n' || sscanf(head, "%3x %8x", &id, &seq) != 2 || id >= threads || seq != next[id])
            die("CHECK FAILED: a record is torn, lost, doubled or out of its thread's order");
        next[id]++;
    }
    free(next);
    munmap((void *)(uintptr_t)m, (size_t)st.st_size);
    close(fd);
}

/* One cell: T threads, n records each; returns the seconds it took. */
static double run(const char *path, int use_forklog, unsigned threads, unsigned n)
{
    unlink(path);
    /* Designated: pthread_barrier_t is a union in glibc but a struct holding one in musl, whose brace levels
     * differ (-Wmissing-braces); the barriers are initialised below. */
    struct cell c = {.log = NULL, .fd = -1, .n = n};
    if (use_forklog) {
        struct forklog_options o = {.flags = FORKLOG_BUFFERED};
        if (forklog_open(&c.log, path, &o) != 0)
            die("forklog_open failed");
    } else if ((c.fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644)) < 0) {
        die("cannot open the floor's file");
    }
    pthread_barrier_init(&c.start, NULL, threads + 1);
    pthread_barrier_init(&c.end, NULL, threads);
    pthread_t t[MAX_T];
    struct arg a[MAX_T];
    for (unsigned k = 0; k < threads; k++) {
        a[k] = (struct arg){&c, k};
        if (pthread_create(&t[k], NULL, writer, &a[k]) != 0)
            die("pthread_create failed");
    }
    double t0 = now_s();
    pthread_barrier_wait(&c.start);
    for (unsigned k = 0; k < threads; k++)
        pthread_join(t[k], NULL);
    if (c.log ? forklog_close(c.log) != 0 : close(c.fd) != 0)
        die("close failed");
    double took = now_s() - t0;
    pthread_barrier_destroy(&c.start);
    pthread_barrier_destroy(&c.end);
    if (use_forklog)
        check(path, threads, n);
    unlink(path);
    return took;
}

static int cmp(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

int main(int argc, char **argv)
{
    unsigned list[MAX_LIST] = {8, 16, 32, 64, 96}, nlist = 5, n = 30000, runs = 5;
    const char *dir = "/var/tmp";
    int opt;
    while ((opt = getopt(argc, argv, "T:n:r:d:h")) != -1) {
        switch (opt) {
        case 'T':
            nlist = 0;
            for (char *s = optarg, *e; *s && nlist < MAX_LIST; s = *e ? e + 1 : e) {
                unsigned long v = strtoul(s, &e, 10);
                if (e == s || v == 0 || v > MAX_T)
                    die("-T: thread counts from 1 to 256, comma-separated");
                list[nlist++] = (unsigned)v;
            }
            break;
        case 'n': n = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'r':
            runs = (unsigned)strtoul(optarg, NULL, 10);
            if (runs == 0 || runs > MAX_RUNS)
                die("-r: 1 to 32 runs");
            break;
        case 'd': dir = optarg; break;
        default:
            fprintf(stderr, "usage: forklog_bench_threads [-T LIST] [-n RECORDS_PER_THREAD] [-r RUNS] [-d DIR]\n");
            return opt == 'h' ? 0 : 2;
        }
    }
    if (n == 0)
        die("-n: at least one record per thread");
    char path[4096];
    snprintf(path, sizeof path, "%s/forklog-bench-threads.%ld.log", dir, (long)getpid());
    printf("forklog_bench_threads: %u records of %d B per thread, FORKLOG_BUFFERED, median of %u runs, %ld CPUs\n", n,
           REC, runs, sysconf(_SC_NPROCESSORS_ONLN));
    printf("%8s %14s %12s %14s %12s %9s\n", "threads", "floor ns/rec", "floor rec/s", "forklog ns/rec", "rec/s",
           "vs floor");
    for (unsigned l = 0; l < nlist; l++) {
        double f[MAX_RUNS], b[MAX_RUNS];
        for (unsigned r = 0; r < runs; r++) {
            f[r] = run(path, 0, list[l], n);
            b[r] = run(path, 1, list[l], n);
        }
        qsort(f, runs, sizeof f[0], cmp);
        qsort(b, runs, sizeof b[0], cmp);
        double total = (double)list[l] * n, fm = f[runs / 2], bm = b[runs / 2];
        printf("%8u %14.1f %11.2fM %14.1f %11.2fM %8.2fx\n", list[l], fm * 1e9 / total, total / fm / 1e6,
               bm * 1e9 / total, total / bm / 1e6, fm / bm);
        fflush(stdout);
    }
    return 0;
}
