/* SPDX-License-Identifier: MIT */
/*
 * forklog_bench: P forked writers append records of a given size to one file on the local disk, for forklog and
 * for every alternative a user might pick instead, and report records/s, the ratio to the floor (an unlocked
 * write(2) on an O_APPEND descriptor inherited from the parent) and per-call latency percentiles.
 *
 * Method of measurement (docs/performance.md says the same):
 *   - Fixed total work per cell by default: a cell writes n records in all, split evenly over its P writers
 *     (--per-writer makes -n a per-writer count instead).
 *   - The writers are forked and set up (descriptor opened, record built) before the clock starts; they block on
 *     a pipe, and the parent starts the clock when it closes that pipe. A cell ends when the last writer has
 *     written its last record (for the buffered mode: after its forklog_flush()). Process start and exit are
 *     not timed.
 *   - Warm-up: before the first round of each size and P, every method runs once unrecorded (-w; default 1). On
 *     a virtual machine, the first writes into memory the guest never touched wait for the host to back it
 *     (5-10x slower here), and the cells run first took that for their own cost.
 *   - Rounds: for round r (0..R-1), every selected method runs once, in an order rotated by r, so slow drift of
 *     the machine hits every method alike. The rate of a cell is the median of its R runs; the spread is min-max
 *     (and the inter-quartile range in CSV). The ratio is this median over the floor's median for the same size
 *     and P, measured in the same rounds.
 *   - Latency: each writer times 1 call in S on average (default 8; the gap between timed calls is random,
 *     1..2S-1, so that it cannot alias with periodic costs such as a buffer flush every k records; the first gap
 *     is the rest of one under way, so that the first call is timed with the same chance 1/S as any other) with
 *     clock_gettime(CLOCK_MONOTONIC) around the call; the percentiles pool the samples of all R runs of a cell.
 *   - After every run the file is checked: every record whole (fixed layout: writer id, sequence, payload that
 *     depends on the writer and position), the exact count, per-writer order. A failed check aborts.
 */
#include <forklog.h>

#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <limits.h>
#include <semaphore.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- methods ------------------------------------------------------------------------------------------------ */

enum method {
    M_FLOOR, /* unlocked write(2) on the O_APPEND descriptor the parent opened before fork */
    M_OWNFD, /* unlocked write(2); each writer opens the file itself (own open file description) */
    M_BULK,  /* unlocked write(2) of a 64 KiB block of whole records, each writer's own, on the inherited
              * descriptor: the kernel's copy into the file alone, the most any buffered method can reach */
    M_FLOCK, /* flock(LOCK_EX) / write / flock(LOCK_UN); each writer opens its own descriptor (flock locks
              * belong to the open file description, so an inherited one would not exclude anybody) */
    M_FCNTL, /* fcntl(F_SETLKW) whole-file write lock / write / unlock on the inherited descriptor */
    M_SEM,   /* sem_wait / write / sem_post, a pshared POSIX semaphore in shared memory (what Python's
              * multiprocessing.Lock is) */
    M_RAW,   /* forklog_write */
    M_TEXT,  /* forklog_log, text format */
    M_JSON,  /* forklog_log, JSON format */
    M_BUF,   /* forklog_write with FORKLOG_BUFFERED; each writer's forklog_flush() is timed */
    M_JOIN,  /* forklog_write by writers that were exec'd and opened the log themselves (joining its segment) */
    /* Records as users write them (text format): printf formats and a record of four typed fields. The message
     * carries the checked body (writer id, sequence, payload) as one %s argument or as the message. */
    M_FMT_REQ,   /* forklog_log(log, INFO, "request %s cost %.6f s", body, cost) */
    M_FMT_ITEMS, /* forklog_log(log, INFO, "%d items in %ld ms %s", n, ms, body) */
    M_FMT_PAIR,  /* forklog_log(log, INFO, "%s: %s", "open", body) */
    M_KV4,       /* forklog_log_fields(log, INFO, body, {method, status, cost, bytes}, 4) */
    M_FMT_REQ_B, /* the same four with FORKLOG_BUFFERED (each writer's final forklog_flush() is timed) */
    M_FMT_ITEMS_B,
    M_FMT_PAIR_B,
    M_KV4_B,
    M_COUNT
};

static const char *const method_names[M_COUNT] = {"floor",
                                                  "own-fd",
                                                  "bulk",
                                                  "flock",
                                                  "fcntl",
                                                  "sem",
                                                  "forklog-raw",
                                                  "forklog-text",
                                                  "forklog-json",
                                                  "forklog-buffered",
                                                  "forklog-join",
                                                  "forklog-fmt-request",
                                                  "forklog-fmt-items",
                                                  "forklog-fmt-pair",
                                                  "forklog-kv4",
                                                  "forklog-fmt-request-buf",
                                                  "forklog-fmt-items-buf",
                                                  "forklog-fmt-pair-buf",
                                                  "forklog-kv4-buf"};

static int method_is_forklog(int m)
{
    return m == M_RAW || m == M_TEXT || m == M_JSON || m == M_BUF || m == M_JOIN || m >= M_FMT_REQ;
}

/* The user-like methods: the same record in direct (M_FMT_REQ..M_KV4) and buffered mode. */
static int method_base(int m)
{
    return m >= M_FMT_REQ_B ? m - (M_FMT_REQ_B - M_FMT_REQ) : m;
}

static int method_is_buffered(int m)
{
    return m == M_BUF || m >= M_FMT_REQ_B;
}

/* Methods whose records go to the file in blocks (forklog's buffered ones and the bulk bound): their cells get more
 * records. */
static int method_is_batched(int m)
{
    return method_is_buffered(m) || m == M_BULK;
}

/* A formatted method's message is `before` bytes, the checked body, `after` bytes. */
#define KV4_TAIL " method=GET status=200 cost=0.001234567 bytes=4321"
static size_t fmt_before(int m)
{
    switch (method_base(m)) {
    case M_FMT_REQ: return 8;    /* "request " */
    case M_FMT_ITEMS: return 22; /* "NNN items in NNNNN ms " */
    case M_FMT_PAIR: return 6;   /* "open: " */
    default: return 0;
    }
}

static size_t fmt_after(int m)
{
    switch (method_base(m)) {
    case M_FMT_REQ: return 16; /* " cost N.NNN123 s" */
    case M_KV4: return sizeof KV4_TAIL - 1;
    default: return 0;
    }
}

/* ---- configuration -------------------------------------------------------------------------------------------- */

#define MAX_LIST    16
#define MAX_WRITERS 512
#define HDR_LEN     13 /* "www.ssssssss." : writer id (3 hex), sequence (8 hex), dots */
#define BULK_BLOCK  65536

/* Bytes around the message in a forklog_log record, with a pid of up to 7 digits (text:
 * `2026-11-28T16:05:13.123456Z INFO pid=NNNNNNN msg\n`, JSON:
 * `{"ts":"...","level":"info","pid":NNNNNNN,"msg":"msg"}\n`). The message is sized so that the record is about
 * the requested size; the check knows the exact message length. */
#define TEXT_OVERHEAD 46
#define JSON_OVERHEAD 76

struct config {
    int procs[MAX_LIST];
    int nprocs;
    size_t sizes[MAX_LIST];
    int nsizes;
    int methods[M_COUNT];
    int nmethods;
    int repeats;
    int warmup;     /* unrecorded rounds before the first of each size and P */
    size_t records; /* 0: default per size */
    int per_writer;
    int sample_every;
    int csv;
    int tail; /* --tail: the share of timed calls above 0.1 .. 10 ms, per cell */
    int quick;
    int any_fs;
    int keep_files;
    unsigned timeout_s;
    const char *dir_arg;
};

/* ---- small helpers ------------------------------------------------------------------------------------------ */

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("forklog_bench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        die("out of memory (%zu bytes)", n);
    return p;
}

static const char hexdig[] = "0123456789abcdef";

static void put_hex(char *p, unsigned long v, int digits)
{
    for (int i = digits - 1; i >= 0; i--) {
        p[i] = hexdig[v & 15];
        v >>= 4;
    }
}

static int get_hex(const char *p, int digits, unsigned long *out)
{
    unsigned long v = 0;
    for (int i = 0; i < digits; i++) {
        char c = p[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0)
            return -1;
        v = v << 4 | (unsigned long)d;
    }
    *out = v;
    return 0;
}

/* "abcd...zabcd..." : the payload of writer w at message offset j is pattern[(7 * w + j) % 26]. */
static char *pattern;

static const char *payload_at(unsigned w, size_t j)
{
    return pattern + (7 * (size_t)w + j) % 26;
}

static void load(char *out, size_t cap)
{
    FILE *f = fopen("/proc/loadavg", "r");
    out[0] = 0;
    if (f) {
        if (fgets(out, (int)cap, f)) {
            size_t l = strlen(out);
            if (l && out[l - 1] == '\n')
                out[l - 1] = 0;
        }
        fclose(f);
    }
}

/* CPU seconds the whole machine spent busy (/proc/stat), and those of this process and its reaped children. The
 * difference over a run is what other processes took from the benchmark: the noise indicator of a shared host.
 * *steal: the seconds a hypervisor gave this machine's virtual CPUs to others (steal time), which no process of
 * this machine used. */
static double machine_busy_s(double *steal)
{
    FILE *f = fopen("/proc/stat", "r");
    unsigned long long v[8] = {0};
    *steal = 0;
    if (!f)
        return 0;
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6],
                   &v[7]);
    fclose(f);
    if (n < 7)
        return 0;
    double hz = (double)(sysconf(_SC_CLK_TCK) > 0 ? sysconf(_SC_CLK_TCK) : 100);
    *steal = n >= 8 ? (double)v[7] / hz : 0;
    /* user nice system idle iowait irq softirq: everything but idle and iowait */
    return (double)(v[0] + v[1] + v[2] + v[5] + v[6]) / hz;
}

static double own_cpu_s(void)
{
    struct rusage a, b;
    getrusage(RUSAGE_SELF, &a);
    getrusage(RUSAGE_CHILDREN, &b);
    return (double)(a.ru_utime.tv_sec + a.ru_stime.tv_sec + b.ru_utime.tv_sec + b.ru_stime.tv_sec) +
           (double)(a.ru_utime.tv_usec + a.ru_stime.tv_usec + b.ru_utime.tv_usec + b.ru_stime.tv_usec) / 1e6;
}

/* Message length (text/JSON) or record length (others, newline included) for a requested record size. */
static size_t body_len(int m, size_t size)
{
    size_t over = m == M_TEXT ? TEXT_OVERHEAD : m == M_JSON ? JSON_OVERHEAD : 0;
    if (m >= M_FMT_REQ)
        over = TEXT_OVERHEAD + fmt_before(m) + fmt_after(m);
    /* The four fields alone leave less than 100 B for the rest: their message is the header only. */
    size_t least = method_base(m) == M_KV4 ? HDR_LEN : HDR_LEN + 3;
    return size > over + least ? size - over : least;
}

/* ---- shared state of one run ------------------------------------------------------------------------------ */

struct shared {
    sem_t sem;
    int64_t t_end[MAX_WRITERS];
    size_t nsamples[MAX_WRITERS];
    char error[256];
    int64_t samples[]; /* writer w: samples[w * per_writer_cap ...] */
};

/* ---- one writer (a child process) ---------------------------------------------------------------------------- */

struct run {
    int method;
    int procs;
    size_t size;
    size_t counts[MAX_WRITERS]; /* records per writer */
    size_t sample_cap;          /* samples per writer */
    int sample_every;
    const char *path;
    int fd;       /* inherited descriptor (floor, fcntl, sem) */
    forklog *log; /* forklog methods */
    struct shared *sh;
};

static void child_fail(struct shared *sh, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));
static void child_fail(struct shared *sh, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sh->error, sizeof sh->error, fmt, ap);
    va_end(ap);
    _exit(3);
}

static void write_once(struct shared *sh, int fd, const char *rec, size_t len)
{
    ssize_t n = write(fd, rec, len);
    if (n != (ssize_t)len)
        child_fail(sh, "write returned %zd of %zu: %s", n, len, n < 0 ? strerror(errno) : "short write");
}

/* The number of calls to the next timed one: uniform in 1 .. 2S-1 (xorshift32). */
static unsigned next_gap(uint32_t *rng, unsigned every)
{
    *rng ^= *rng << 13;
    *rng ^= *rng >> 17;
    *rng ^= *rng << 5;
    return 1 + *rng % (2 * every - 1);
}

static void writer(const struct run *r, unsigned w, int ready_fd, int go_fd)
{
    struct shared *sh = r->sh;
    const int m = r->method;
    size_t blen = body_len(m, r->size);
    int text = m == M_TEXT || m == M_JSON || m >= M_FMT_REQ;
    const struct forklog_field kv4[4] = {FORKLOG_STR("method", "GET"), FORKLOG_INT("status", 200),
                                         FORKLOG_DUR_NS("cost", 1234567), FORKLOG_UINT("bytes", 4321)};
    /* The record (or message) is built once; only the sequence number changes per call. */
    char *rec = xmalloc(blen + 1);
    put_hex(rec, w, 3);
    rec[3] = '.';
    put_hex(rec + 4, 0, 8);
    rec[12] = '.';
    size_t plen = text ? blen - HDR_LEN : blen - HDR_LEN - 1;
    memcpy(rec + HDR_LEN, payload_at(w, HDR_LEN), plen);
    if (text)
        rec[blen] = 0;
    else
        rec[blen - 1] = '\n';

    int fd = r->fd;
    if (m == M_OWNFD || m == M_FLOCK) {
        fd = open(r->path, O_WRONLY | O_APPEND | O_CLOEXEC);
        if (fd < 0)
            child_fail(sh, "open %s: %s", r->path, strerror(errno));
    }
    /* M_BULK: the block (64 KiB, or one record when a record is larger) and the bytes in it. */
    char *block = NULL;
    size_t bcap = blen > BULK_BLOCK ? blen : BULK_BLOCK, bused = 0;
    if (m == M_BULK)
        block = xmalloc(bcap);
    struct flock lk;
    memset(&lk, 0, sizeof lk);
    lk.l_whence = SEEK_SET;
    int64_t *samp = sh->samples + (size_t)w * r->sample_cap;
    size_t ns = 0;
    const size_t count = r->counts[w];
    const unsigned every = (unsigned)r->sample_every;

    char c;
    if (write(ready_fd, "r", 1) != 1)
        child_fail(sh, "ready pipe: %s", strerror(errno));
    while (read(go_fd, &c, 1) < 0 && errno == EINTR) {
    }

    /* The gap between timed calls is random (uniform in 1 .. 2S-1, mean S), not a fixed stride: a fixed stride
     * aliases with periodic costs (a buffer that flushes every 4th record, timed every 8th, shows only flushes).
     * The first gap is not 1: a writer's first call pays the process's first use of the log (its own open file
     * description, the first touch of its buffer), 100 to 1000 times a later call, and timing it in every writer
     * and run put P such samples in each run's few hundred of a 64 KiB cell, where they made the p99. It is drawn
     * as the rest of a gap already under way (gap g with a weight of 2S - g), so that every call, the first too,
     * is timed with the same chance 1/S. */
    uint32_t rng = 2463534242u ^ (w * 2654435761u);
    unsigned gap, skip;
    do {
        gap = next_gap(&rng, every);
        skip = next_gap(&rng, every) - 1;
    } while (skip >= 2 * every - gap);
    unsigned tick = 0;
    for (size_t i = 0; i < count; i++) {
        put_hex(rec + 4, i, 8);
        int sample = ++tick == gap;
        int64_t t0 = 0, t1;
        if (sample)
            t0 = now_ns();
        int rc = 0;
        switch (m) {
        case M_FLOOR:
        case M_OWNFD: write_once(sh, fd, rec, blen); break;
        case M_BULK:
            if (bused + blen > bcap) {
                write_once(sh, fd, block, bused);
                bused = 0;
            }
            memcpy(block + bused, rec, blen);
            bused += blen;
            break;
        case M_FLOCK:
            while ((rc = flock(fd, LOCK_EX)) < 0 && errno == EINTR) {
            }
            if (rc < 0)
                child_fail(sh, "flock: %s", strerror(errno));
            write_once(sh, fd, rec, blen);
            flock(fd, LOCK_UN);
            break;
        case M_FCNTL:
            lk.l_type = F_WRLCK;
            while ((rc = fcntl(fd, F_SETLKW, &lk)) < 0 && errno == EINTR) {
            }
            if (rc < 0)
                child_fail(sh, "fcntl(F_SETLKW): %s", strerror(errno));
            write_once(sh, fd, rec, blen);
            lk.l_type = F_UNLCK;
            fcntl(fd, F_SETLK, &lk);
            break;
        case M_SEM:
            while ((rc = sem_wait(&sh->sem)) < 0 && errno == EINTR) {
            }
            if (rc < 0)
                child_fail(sh, "sem_wait: %s", strerror(errno));
            write_once(sh, fd, rec, blen);
            sem_post(&sh->sem);
            break;
        case M_RAW:
        case M_BUF:
        case M_JOIN: rc = forklog_write(r->log, rec, blen); break;
        case M_TEXT:
        case M_JSON: rc = forklog_log(r->log, FORKLOG_INFO, "%s", rec); break;
        case M_FMT_REQ:
        case M_FMT_REQ_B:
            rc = forklog_log(r->log, FORKLOG_INFO, "request %s cost %.6f s", rec,
                             (double)(i % 1000) / 1000.0 + 0.000123);
            break;
        case M_FMT_ITEMS:
        case M_FMT_ITEMS_B:
            rc = forklog_log(r->log, FORKLOG_INFO, "%d items in %ld ms %s", 100 + (int)(i % 900),
                             10000L + (long)(i % 90000), rec);
            break;
        case M_FMT_PAIR:
        case M_FMT_PAIR_B: rc = forklog_log(r->log, FORKLOG_INFO, "%s: %s", "open", rec); break;
        case M_KV4:
        case M_KV4_B: rc = forklog_log_fields(r->log, FORKLOG_INFO, rec, kv4, 4); break;
        default: break;
        }
        /* The call's end is read first: drawing the next gap (a division) is not the call's cost, and a buffered
         * record takes only some tens of nanoseconds. */
        if (sample) {
            t1 = now_ns();
            if (ns < r->sample_cap)
                samp[ns++] = t1 - t0;
            tick = 0;
            gap = next_gap(&rng, every);
        }
        if (rc != 0)
            child_fail(sh, "%s record %zu returned %d (%s)", method_names[m], i, rc, rc < 0 ? strerror(-rc) : "cut");
    }
    if (bused)
        write_once(sh, fd, block, bused);
    free(block);
    if (method_is_buffered(m)) {
        int rc = forklog_flush(r->log);
        if (rc != 0)
            child_fail(sh, "forklog_flush returned %d (%s)", rc, strerror(-rc));
    }
    sh->t_end[w] = now_ns();
    sh->nsamples[w] = ns;
    if (r->log)
        forklog_close(r->log);
    _exit(0);
}

/* forklog-join: the writer execs this program again (`--join-writer ...`): a process that inherits no handle and
 * no mapping, and opens the log itself, as a separately started program would. */
static void exec_join_writer(const struct run *r, unsigned w, int ready_fd, int go_fd, int shfd, size_t shlen)
{
    char a[8][32];
    snprintf(a[0], sizeof a[0], "%u", w);
    snprintf(a[1], sizeof a[1], "%zu", r->counts[w]);
    snprintf(a[2], sizeof a[2], "%zu", r->size);
    snprintf(a[3], sizeof a[3], "%d", r->sample_every);
    snprintf(a[4], sizeof a[4], "%zu", r->sample_cap);
    snprintf(a[5], sizeof a[5], "%d %d", ready_fd, go_fd);
    snprintf(a[6], sizeof a[6], "%d", shfd);
    snprintf(a[7], sizeof a[7], "%zu", shlen);
    char *argv[] = {
        "forklog_bench", "--join-writer", (char *)r->path, a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], NULL};
    execv("/proc/self/exe", argv);
    child_fail(r->sh, "exec /proc/self/exe: %s", strerror(errno));
}

/* The exec'd side of forklog-join: argv as exec_join_writer builds it. */
static void join_writer_main(char **argv)
{
    struct run r;
    memset(&r, 0, sizeof r);
    r.method = M_JOIN;
    r.path = argv[2];
    unsigned w = (unsigned)strtoul(argv[3], NULL, 10);
    r.counts[w] = strtoull(argv[4], NULL, 10);
    r.size = strtoull(argv[5], NULL, 10);
    r.sample_every = atoi(argv[6]);
    r.sample_cap = strtoull(argv[7], NULL, 10);
    int ready_fd, go_fd;
    if (sscanf(argv[8], "%d %d", &ready_fd, &go_fd) != 2)
        _exit(2);
    int shfd = atoi(argv[9]);
    size_t shlen = strtoull(argv[10], NULL, 10);
    r.sh = mmap(NULL, shlen, PROT_READ | PROT_WRITE, MAP_SHARED, shfd, 0);
    if (r.sh == MAP_FAILED)
        _exit(2);
    pattern = xmalloc(r.size + 64);
    for (size_t i = 0; i < r.size + 64; i++)
        pattern[i] = (char)('a' + i % 26);
    int rc = forklog_open(&r.log, r.path, NULL);
    if (rc < 0)
        child_fail(r.sh, "forklog_open %s in an exec'd writer: %s", r.path, strerror(-rc));
    writer(&r, w, ready_fd, go_fd);
}

/* ---- the check of an output file ------------------------------------------------------------------------------ */

static void check_fail(const struct run *r, size_t recno, size_t off, const char *line, size_t llen, const char *why)
    __attribute__((noreturn));
static void check_fail(const struct run *r, size_t recno, size_t off, const char *line, size_t llen, const char *why)
{
    fprintf(stderr,
            "forklog_bench: CHECK FAILED for method %s, P=%d, size %zu: record #%zu at byte offset %zu: %s\n"
            "  the record starts: \"",
            method_names[r->method], r->procs, r->size, recno, off, why);
    for (size_t i = 0; i < llen && i < 120; i++)
        fputc(line[i] >= 32 && line[i] < 127 ? line[i] : '?', stderr);
    fprintf(stderr, "%s\"\n  the file is kept: %s\n", llen > 120 ? "..." : "", r->path);
    exit(2);
}

/* Where the message starts in a text or JSON record, or NULL; *mlen gets its length. */
static const char *parse_prefix(int json, const char *l, size_t len, size_t *mlen)
{
    const char *e = l + len;
    const char *p = l;
    if (json) {
        static const char a[] = "{\"ts\":\"", b[] = "\",\"level\":\"info\",\"pid\":", c[] = ",\"msg\":\"";
        if (len < sizeof a - 1 || memcmp(p, a, sizeof a - 1) != 0)
            return NULL;
        p += sizeof a - 1;
        if (e - p < 27 || p[4] != '-' || p[10] != 'T' || p[19] != '.' || p[26] != 'Z')
            return NULL;
        p += 27;
        if ((size_t)(e - p) < sizeof b - 1 || memcmp(p, b, sizeof b - 1) != 0)
            return NULL;
        p += sizeof b - 1;
        const char *d = p;
        while (p < e && *p >= '0' && *p <= '9')
            p++;
        if (p == d || (size_t)(e - p) < sizeof c - 1 + 2 || memcmp(p, c, sizeof c - 1) != 0)
            return NULL;
        p += sizeof c - 1;
        if (e[-2] != '"' || e[-1] != '}')
            return NULL;
        *mlen = (size_t)(e - 2 - p);
        return p;
    }
    static const char a[] = " INFO pid=";
    if (len < 27 || p[4] != '-' || p[10] != 'T' || p[19] != '.' || p[26] != 'Z')
        return NULL;
    p += 27;
    if ((size_t)(e - p) < sizeof a - 1 || memcmp(p, a, sizeof a - 1) != 0)
        return NULL;
    p += sizeof a - 1;
    const char *d = p;
    while (p < e && *p >= '0' && *p <= '9')
        p++;
    if (p == d || p == e || *p != ' ')
        return NULL;
    p++;
    *mlen = (size_t)(e - p);
    return p;
}

static void check_file(const struct run *r)
{
    int fd = open(r->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        die("check: open %s: %s", r->path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) < 0)
        die("check: fstat: %s", strerror(errno));
    size_t fsize = (size_t)st.st_size;
    size_t total = 0;
    for (int w = 0; w < r->procs; w++)
        total += r->counts[w];
    if (fsize == 0 && total == 0) {
        close(fd);
        return;
    }
    if (fsize == 0)
        check_fail(r, 0, 0, "", 0, "the file is empty");
    const char *map = mmap(NULL, fsize, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED)
        die("check: mmap: %s", strerror(errno));
    madvise((void *)(uintptr_t)map, fsize, MADV_SEQUENTIAL);
    const int m = r->method;
    const int text = m == M_TEXT || m == M_JSON || m >= M_FMT_REQ;
    const size_t want = text ? body_len(m, r->size) : body_len(m, r->size) - 1; /* message length */
    size_t next[MAX_WRITERS] = {0};
    size_t off = 0, recno = 0;
    while (off < fsize) {
        const char *l = map + off;
        const char *nl = memchr(l, '\n', fsize - off);
        if (!nl)
            check_fail(r, recno, off, l, fsize - off, "the file does not end with a newline (torn last record)");
        size_t len = (size_t)(nl - l);
        const char *msg = l;
        size_t mlen = len;
        if (text && !(msg = parse_prefix(m == M_JSON, l, len, &mlen)))
            check_fail(r, recno, off, l, len, m == M_JSON ? "not a forklog JSON record" : "not a forklog text record");
        if (m >= M_FMT_REQ) {
            if (mlen < fmt_before(m) + fmt_after(m))
                check_fail(r, recno, off, l, len, "formatted message too short");
            if (method_base(m) == M_KV4 && memcmp(msg + mlen - fmt_after(m), KV4_TAIL, fmt_after(m)) != 0)
                check_fail(r, recno, off, l, len, "the four fields are not as written");
            msg += fmt_before(m);
            mlen -= fmt_before(m) + fmt_after(m);
        }
        if (mlen != want) {
            char why[96];
            snprintf(why, sizeof why, "message is %zu bytes, expected %zu (torn or interleaved)", mlen, want);
            check_fail(r, recno, off, l, len, why);
        }
        unsigned long w, seq;
        if (get_hex(msg, 3, &w) < 0 || msg[3] != '.' || get_hex(msg + 4, 8, &seq) < 0 || msg[12] != '.')
            check_fail(r, recno, off, l, len, "bad record header");
        if (w >= (unsigned long)r->procs)
            check_fail(r, recno, off, l, len, "writer id out of range");
        if (seq != next[w]) {
            char why[96];
            snprintf(why, sizeof why, "writer %lu: sequence %lu, expected %zu (lost, duplicated or reordered)", w, seq,
                     next[w]);
            check_fail(r, recno, off, l, len, why);
        }
        if (memcmp(msg + HDR_LEN, payload_at((unsigned)w, HDR_LEN), mlen - HDR_LEN) != 0)
            check_fail(r, recno, off, l, len, "payload differs (torn or interleaved record)");
        next[w]++;
        recno++;
        off += len + 1;
    }
    for (int w = 0; w < r->procs; w++) {
        if (next[w] != r->counts[w]) {
            fprintf(stderr,
                    "forklog_bench: CHECK FAILED for method %s, P=%d, size %zu: writer %d has %zu records, expected "
                    "%zu\n  the file is kept: %s\n",
                    method_names[m], r->procs, r->size, w, next[w], r->counts[w], r->path);
            exit(2);
        }
    }
    if (recno != total)
        die("CHECK FAILED: %zu records, expected %zu (%s)", recno, total, r->path);
    munmap((void *)(uintptr_t)map, fsize);
    close(fd);
}

/* ---- one run: fork, time, reap, check ------------------------------------------------------------------------ */

static volatile sig_atomic_t alarm_fired;

static void on_alarm(int sig)
{
    (void)sig;
    alarm_fired = 1;
}

/* Runs one cell once; returns the elapsed time in ns and appends the latency samples to *lat. */
static int64_t run_once(const struct config *c, int m, int procs, size_t size, size_t per_cell, const char *dir,
                        int64_t **lat, size_t *nlat, size_t *cap_lat)
{
    static unsigned serial;
    char path[PATH_MAX + 96];
    if (snprintf(path, sizeof path, "%s/run-%u-%s-P%d-%zu.log", dir, serial++, method_names[m], procs, size) >=
        (int)sizeof path)
        die("path too long: %s", dir);

    struct run r;
    memset(&r, 0, sizeof r);
    r.method = m;
    r.procs = procs;
    r.size = size;
    r.path = path;
    r.fd = -1;
    r.sample_every = c->sample_every;
    size_t maxc = 0;
    for (int w = 0; w < procs; w++) {
        r.counts[w] = c->per_writer ? per_cell : per_cell / (size_t)procs + ((size_t)w < per_cell % (size_t)procs);
        if (r.counts[w] > maxc)
            maxc = r.counts[w];
    }
    if (maxc >= 0xffffffffUL)
        die("too many records per writer (the sequence has 8 hex digits)");
    r.sample_cap = maxc; /* the random gaps may be shorter than S for a while; never more than one per call */
    size_t shlen = sizeof(struct shared) + sizeof(int64_t) * r.sample_cap * (size_t)procs;
    /* forklog-join's writers are exec'd: they find the shared state through a memfd they inherit. */
    int shfd = -1;
    if (m == M_JOIN && ((shfd = memfd_create("forklog_bench", 0)) < 0 || ftruncate(shfd, (off_t)shlen) < 0))
        die("memfd: %s", strerror(errno));
    struct shared *sh = mmap(NULL, shlen, PROT_READ | PROT_WRITE, MAP_SHARED | (shfd < 0 ? MAP_ANONYMOUS : 0), shfd, 0);
    if (sh == MAP_FAILED)
        die("mmap: %s", strerror(errno));
    r.sh = sh;

    unlink(path);
    if (method_is_forklog(m)) {
        struct forklog_options o;
        memset(&o, 0, sizeof o);
        o.format = m == M_JSON ? FORKLOG_FORMAT_JSON : FORKLOG_FORMAT_TEXT;
        o.flags = method_is_buffered(m) ? FORKLOG_BUFFERED : 0;
        o.max_record = size + 4096 > ((size_t)1 << 20) ? size + 4096 : 0;
        int rc = forklog_open(&r.log, path, &o);
        if (rc < 0)
            die("forklog_open %s: %s", path, strerror(-rc));
    } else {
        r.fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (r.fd < 0)
            die("open %s: %s", path, strerror(errno));
    }
    if (m == M_SEM && sem_init(&sh->sem, 1, 1) < 0)
        die("sem_init: %s", strerror(errno));

    int ready[2], go[2];
    if (pipe(ready) < 0 || pipe(go) < 0)
        die("pipe: %s", strerror(errno));
    pid_t pids[MAX_WRITERS];
    fflush(NULL);
    for (int w = 0; w < procs; w++) {
        pid_t pid = fork();
        if (pid < 0)
            die("fork: %s", strerror(errno));
        if (pid == 0) {
            close(ready[0]);
            close(go[1]);
            if (m == M_JOIN)
                exec_join_writer(&r, (unsigned)w, ready[1], go[0], shfd, shlen);
            writer(&r, (unsigned)w, ready[1], go[0]);
        }
        pids[w] = pid;
    }
    close(ready[1]);
    close(go[0]);
    for (int got = 0; got < procs;) {
        char buf[MAX_WRITERS];
        ssize_t n = read(ready[0], buf, (size_t)(procs - got));
        if (n <= 0)
            die("a writer died before it was ready (%s)", sh->error[0] ? sh->error : "no message");
        got += (int)n;
    }
    close(ready[0]);

    alarm_fired = 0;
    alarm(c->timeout_s);
    int64_t t0 = now_ns();
    close(go[1]); /* every writer's read() returns 0: go */
    int failed = 0;
    for (int w = 0; w < procs; w++) {
        int st;
        pid_t p;
        while ((p = waitpid(pids[w], &st, 0)) < 0 && errno == EINTR && !alarm_fired) {
        }
        if (p < 0 && alarm_fired) {
            for (int k = 0; k < procs; k++)
                kill(pids[k], SIGKILL);
            while (wait(NULL) > 0) {
            }
            die("method %s, P=%d, size %zu: the writers did not finish within %u s (deadlock?); file kept: %s",
                method_names[m], procs, size, c->timeout_s, path);
        }
        if (p < 0)
            die("waitpid: %s", strerror(errno));
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            failed = 1;
    }
    alarm(0);
    if (failed)
        die("method %s, P=%d, size %zu: a writer failed: %s", method_names[m], procs, size,
            sh->error[0] ? sh->error : "killed by a signal");
    int64_t t1 = t0;
    for (int w = 0; w < procs; w++)
        if (sh->t_end[w] > t1)
            t1 = sh->t_end[w];

    if (r.log) {
        int rc = forklog_close(r.log);
        if (rc < 0)
            die("forklog_close: %s", strerror(-rc));
    }
    if (r.fd >= 0)
        close(r.fd);
    if (m == M_SEM)
        sem_destroy(&sh->sem);
    if (shfd >= 0)
        close(shfd);

    check_file(&r);
    if (!c->keep_files)
        unlink(path);

    for (int w = 0; w < procs; w++) {
        size_t k = sh->nsamples[w];
        if (*nlat + k > *cap_lat) {
            size_t nc = (*nlat + k) * 2;
            int64_t *nl = realloc(*lat, nc * sizeof **lat);
            if (!nl)
                die("out of memory");
            *lat = nl;
            *cap_lat = nc;
        }
        memcpy(*lat + *nlat, sh->samples + (size_t)w * r.sample_cap, k * sizeof **lat);
        *nlat += k;
    }
    munmap(sh, shlen);
    return t1 - t0;
}

/* ---- statistics and output ---------------------------------------------------------------------------------- */

struct cell {
    double rates[64];
    int nrates;
    int64_t *lat;
    size_t nlat, cap_lat;
    double med, min, max, q1, q3;
    double p50, p99, p999; /* ns */
    size_t records;        /* per run */
};

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Linear-interpolated quantile of a sorted array. */
static double quantile(const double *v, int n, double q)
{
    if (n == 0)
        return 0;
    double pos = q * (n - 1);
    int i = (int)pos;
    double f = pos - i;
    return i + 1 < n ? v[i] * (1 - f) + v[i + 1] * f : v[i];
}

static double lat_quantile(const int64_t *v, size_t n, double q)
{
    if (n == 0)
        return 0;
    size_t i = (size_t)(q * (double)(n - 1) + 0.5);
    return (double)v[i < n ? i : n - 1];
}

static void finish_cell(struct cell *cl)
{
    double s[64];
    if (cl->nrates < 1 || cl->nrates > 64)
        return;
    memcpy(s, cl->rates, sizeof s[0] * (size_t)cl->nrates);
    qsort(s, (size_t)cl->nrates, sizeof s[0], cmp_double);
    cl->med = quantile(s, cl->nrates, 0.5);
    cl->min = s[0];
    cl->max = s[cl->nrates - 1];
    cl->q1 = quantile(s, cl->nrates, 0.25);
    cl->q3 = quantile(s, cl->nrates, 0.75);
    qsort(cl->lat, cl->nlat, sizeof cl->lat[0], cmp_i64);
    cl->p50 = lat_quantile(cl->lat, cl->nlat, 0.5);
    cl->p99 = lat_quantile(cl->lat, cl->nlat, 0.99);
    cl->p999 = lat_quantile(cl->lat, cl->nlat, 0.999);
}

/* --tail: per cell, the share of the timed calls (sorted by finish_cell) that took longer than each threshold. A
 * p99.9 is decided by the calls above it: two methods whose shares above 1 ms are 0.09% and 0.11% have p99.9s of
 * ~100 us and ~2 ms, and this table shows how close to the edge each one is. */
static void print_tail(const struct config *c, size_t size, struct cell (*cells)[M_COUNT])
{
    static const double ms[] = {0.1, 0.5, 1, 2, 5, 10};
    const size_t nt = sizeof ms / sizeof ms[0];
    printf("\n%zu B, share of the timed calls that took longer than:\n%-17s %3s %10s", size, "method", "P", "calls");
    for (size_t t = 0; t < nt; t++)
        printf(" %8g ms", ms[t]);
    printf("\n");
    for (int pi = 0; pi < c->nprocs; pi++) {
        for (int mm = 0; mm < M_COUNT; mm++) {
            int sel = 0;
            for (int k = 0; k < c->nmethods; k++)
                sel |= c->methods[k] == mm;
            const struct cell *cl = &cells[pi][mm];
            if (!sel || !cl->nlat)
                continue;
            printf("%-17s %3d %10zu", method_names[mm], c->procs[pi], cl->nlat);
            size_t i = 0;
            for (size_t t = 0; t < nt; t++) {
                while (i < cl->nlat && (double)cl->lat[i] <= ms[t] * 1e6)
                    i++;
                printf(" %10.3f%%", 100.0 * (double)(cl->nlat - i) / (double)cl->nlat);
            }
            printf("\n");
        }
    }
}

/* 1234567 -> "1.23M", 45678 -> "45.7k"; the unit is chosen by the value as rounded to 3 digits, so that 999,600 is
 * "1M", not "1e+03k". */
static void human(char *out, size_t cap, double v)
{
    if (v >= 999.5e3)
        snprintf(out, cap, "%.3gM", v / 1e6);
    else if (v >= 999.5)
        snprintf(out, cap, "%.3gk", v / 1e3);
    else
        snprintf(out, cap, "%.3g", v);
}

static void us(char *out, size_t cap, double ns)
{
    if (ns >= 100000)
        snprintf(out, cap, "%.0f", ns / 1000);
    else if (ns >= 10000)
        snprintf(out, cap, "%.1f", ns / 1000);
    else
        snprintf(out, cap, "%.2f", ns / 1000);
}

static const char *fs_name(long type)
{
    switch ((unsigned long)type & 0xffffffffUL) {
    case 0xEF53UL: return "ext2/3/4";
    case 0x58465342UL: return "xfs";
    case 0x9123683EUL: return "btrfs";
    case 0x01021994UL: return "tmpfs";
    case 0x858458f6UL: return "ramfs";
    case 0x794c7630UL: return "overlayfs";
    case 0x6969UL: return "nfs";
    case 0xFF534D42UL: return "cifs";
    case 0x2fc12fc1UL: return "zfs";
    case 0xF2F52010UL: return "f2fs";
    case 0x65735546UL: return "fuse";
    default: return "unknown";
    }
}

static void usage(FILE *f)
{
    fprintf(f, "usage: forklog_bench [options]\n"
               "  -P LIST     writer counts, comma-separated (default 1,2,4,8)\n"
               "  -s LIST     record sizes in bytes, K/M suffixes allowed (default 100,1K,64K)\n"
               "  -m LIST     methods (default all): floor,own-fd,bulk,flock,fcntl,sem,forklog-raw,forklog-text,\n"
               "              forklog-json,forklog-buffered,forklog-join (short forms: raw,text,json,buffered,join;\n"
               "              join: writers exec'd, each opening the log itself), forklog-fmt-request,\n"
               "              forklog-fmt-items, forklog-fmt-pair, forklog-kv4 (records as users write them: printf\n"
               "              formats and four typed fields, text) and their -buf forms (FORKLOG_BUFFERED); short\n"
               "              forms without forklog- (fmt-request, kv4-buf, ...)\n"
               "  -r N        runs of every cell (default 5); the median is reported\n"
               "  -w N        unrecorded rounds of every method before the first run of each size and P (default\n"
               "              1): the first writes of a fresh machine fault in memory the later ones reuse\n"
               "  -n N        records per cell, split over the P writers (default per size: 300000 for <=256 B,\n"
               "              1000000 for the buffered methods and bulk there; 150000 for <=4 KiB, 8000 above)\n"
               "  --per-writer  -n counts records per writer instead of per cell\n"
               "  -S N        time 1 call in N on average, random gaps (default 8; 1 = every call)\n"
               "  -d DIR      directory for the files (a fresh subdirectory is made there; default /var/tmp)\n"
               "  --csv       CSV instead of the tables\n"
               "  --tail      also the share of timed calls that took longer than 0.1, 0.5, 1, 2, 5 and 10 ms\n"
               "  --quick     smoke run (~20-30 s): -r 2, a fifth of the default records\n"
               "  --any-fs    allow tmpfs/ramfs/network file systems for -d\n"
               "  --keep      keep the output files\n"
               "  -t SEC      abort when one run takes longer (default 120)\n"
               "  -h          this help\n");
}

static int parse_size(const char *s, size_t *out)
{
    char *e;
    errno = 0;
    unsigned long long v = strtoull(s, &e, 10);
    if (errno || e == s)
        return -1;
    if (*e == 'k' || *e == 'K')
        v <<= 10, e++;
    else if (*e == 'm' || *e == 'M')
        v <<= 20, e++;
    if (*e)
        return -1;
    *out = (size_t)v;
    return 0;
}

static int method_by_name(const char *s)
{
    for (int m = 0; m < M_COUNT; m++)
        if (strcmp(s, method_names[m]) == 0 ||
            (method_is_forklog(m) && strcmp(s, method_names[m] + strlen("forklog-")) == 0))
            return m;
    if (strcmp(s, "ownfd") == 0)
        return M_OWNFD;
    if (strcmp(s, "semaphore") == 0)
        return M_SEM;
    return -1;
}

static void parse_args(int argc, char **argv, struct config *c)
{
    memset(c, 0, sizeof *c);
    int defP[] = {1, 2, 4, 8};
    memcpy(c->procs, defP, sizeof defP);
    c->nprocs = 4;
    c->sizes[0] = 100, c->sizes[1] = 1024, c->sizes[2] = 65536;
    c->nsizes = 3;
    for (int m = 0; m < M_COUNT; m++)
        c->methods[m] = m;
    c->nmethods = M_COUNT;
    c->repeats = 5;
    c->warmup = 1;
    c->sample_every = 8;
    c->timeout_s = 120;
    int r_set = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            exit(0);
        } else if (!strcmp(a, "--csv")) {
            c->csv = 1;
        } else if (!strcmp(a, "--tail")) {
            c->tail = 1;
        } else if (!strcmp(a, "--quick")) {
            c->quick = 1;
        } else if (!strcmp(a, "--per-writer")) {
            c->per_writer = 1;
        } else if (!strcmp(a, "--any-fs")) {
            c->any_fs = 1;
        } else if (!strcmp(a, "--keep")) {
            c->keep_files = 1;
        } else if (a[0] == '-' && strchr("PsmrwnSdt", a[1]) && a[1] && !a[2]) {
            if (!v) {
                usage(stderr);
                die("%s needs a value", a);
            }
            i++;
            char *copy = strdup(v), *save = NULL, *tok;
            size_t x;
            switch (a[1]) {
            case 'P':
                c->nprocs = 0;
                for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
                    if (parse_size(tok, &x) < 0 || x < 1 || x > MAX_WRITERS || c->nprocs == MAX_LIST)
                        die("bad -P value: %s (1..%d, at most %d entries)", v, MAX_WRITERS, MAX_LIST);
                    c->procs[c->nprocs++] = (int)x;
                }
                break;
            case 's':
                c->nsizes = 0;
                for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
                    if (parse_size(tok, &x) < 0 || x < 32 || x > ((size_t)256 << 20) || c->nsizes == MAX_LIST)
                        die("bad -s value: %s (32 B .. 256 MiB)", v);
                    c->sizes[c->nsizes++] = x;
                }
                break;
            case 'm':
                c->nmethods = 0;
                for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
                    int m = method_by_name(tok);
                    if (m < 0)
                        die("unknown method: %s (see -h)", tok);
                    c->methods[c->nmethods++] = m;
                    if (c->nmethods > M_COUNT)
                        die("too many methods");
                }
                break;
            case 'r':
                if (parse_size(v, &x) < 0 || x < 1 || x > 64)
                    die("bad -r value: %s (1..64)", v);
                c->repeats = (int)x;
                r_set = 1;
                break;
            case 'w':
                if (parse_size(v, &x) < 0 || x > 64)
                    die("bad -w value: %s (0..64)", v);
                c->warmup = (int)x;
                break;
            case 'n':
                if (parse_size(v, &x) < 0 || x < 1)
                    die("bad -n value: %s", v);
                c->records = x;
                break;
            case 'S':
                if (parse_size(v, &x) < 0 || x < 1 || x > 1000000)
                    die("bad -S value: %s", v);
                c->sample_every = (int)x;
                break;
            case 'd': c->dir_arg = v; break;
            case 't':
                if (parse_size(v, &x) < 0 || x < 1 || x > 86400)
                    die("bad -t value: %s", v);
                c->timeout_s = (unsigned)x;
                break;
            default: break;
            }
            free(copy);
        } else {
            usage(stderr);
            die("unknown argument: %s", a);
        }
    }
    if (c->quick && !r_set)
        c->repeats = 2;
}

/* Records per cell without -n. The buffered methods run 6-20x faster than the floor with small records: with the
 * floor's 300,000 a cell of theirs lasts 15-50 ms, and its fixed costs (the writers' start, the first touch of their
 * buffers, the last flush) weigh in it (at P=8, 13-16x the floor against 18-22x with 1,000,000 records, on the
 * development machine). */
static size_t default_records(size_t size, int m)
{
    if (size <= 256)
        return method_is_batched(m) ? 1000000 : 300000;
    return size <= 4096 ? 150000 : 8000;
}

static size_t records_per_cell(const struct config *c, size_t size, int m)
{
    if (c->records)
        return c->records;
    size_t n = default_records(size, m);
    return c->quick ? n / 5 : n;
}

int main(int argc, char **argv)
{
    if (argc == 11 && strcmp(argv[1], "--join-writer") == 0)
        join_writer_main(argv);
    struct config c;
    parse_args(argc, argv, &c);

    size_t maxsize = 0;
    for (int i = 0; i < c.nsizes; i++)
        if (c.sizes[i] > maxsize)
            maxsize = c.sizes[i];
    pattern = xmalloc(maxsize + 64);
    for (size_t i = 0; i < maxsize + 64; i++)
        pattern[i] = (char)('a' + i % 26);

    /* The directory: a fresh one under -d or /var/tmp, on a real disk file system. */
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/forklog-bench.XXXXXX", c.dir_arg ? c.dir_arg : "/var/tmp");
    if (!mkdtemp(dir))
        die("mkdtemp %s: %s", dir, strerror(errno));
    struct statfs sfs;
    if (statfs(dir, &sfs) < 0)
        die("statfs %s: %s", dir, strerror(errno));
    const char *fs = fs_name((long)sfs.f_type);
    if (!c.any_fs && (!strcmp(fs, "tmpfs") || !strcmp(fs, "ramfs") || !strcmp(fs, "nfs") || !strcmp(fs, "cifs") ||
                      !strcmp(fs, "fuse"))) {
        rmdir(dir);
        die("%s is on %s, not a local disk file system: pass -d DIR on a disk (or --any-fs)", dir, fs);
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm; /* no SA_RESTART: waitpid returns EINTR */
    sigaction(SIGALRM, &sa, NULL);

    char load0[128], load1[128];
    load(load0, sizeof load0);
    struct utsname un;
    uname(&un);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    time_t wall0 = time(NULL);
    char when[64];
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime(&wall0));
    FILE *out = stdout;
    const char *cm = c.csv ? "# " : "";
    fprintf(out, "%sforklog_bench %s, %s, Linux %s %s, %ld CPUs\n", cm, forklog_version_string(), when, un.release,
            un.machine, ncpu);
    fprintf(out, "%sdir %s (fs: %s, statfs type 0x%lx)\n", cm, dir, fs, (unsigned long)sfs.f_type);
    fprintf(out, "%sload at start (/proc/loadavg): %s\n", cm, load0);
    fprintf(out,
            "%swork: %s; %d runs per cell after %d warm-up round(s), methods rotated per round; latency: 1 call in %d "
            "timed (random gaps)%s\n",
            cm, c.per_writer ? "fixed records per writer" : "fixed records per cell, split over the P writers",
            c.repeats, c.warmup, c.sample_every, c.quick ? "; QUICK mode" : "");
    fflush(out);

    int64_t tstart = now_ns();
    double steal0, busy0 = machine_busy_s(&steal0), own0 = own_cpu_s();
    if (c.csv)
        printf("size,procs,method,runs,records_per_run,median_rec_s,min_rec_s,max_rec_s,q1_rec_s,q3_rec_s,"
               "ratio_to_floor,median_MB_s,lat_samples,p50_us,p99_us,p999_us\n");

    for (int si = 0; si < c.nsizes; si++) {
        size_t size = c.sizes[si];
        struct cell cells[MAX_LIST][M_COUNT];
        memset(cells, 0, sizeof cells);
        for (int pi = 0; pi < c.nprocs; pi++) {
            int procs = c.procs[pi];
            fprintf(stderr, "forklog_bench: size %zu, P=%d, %d rounds of %d methods...\n", size, procs, c.repeats,
                    c.nmethods);
            for (int round = -c.warmup; round < c.repeats; round++) {
                for (int k = 0; k < c.nmethods; k++) {
                    int m = c.methods[((k + round) % c.nmethods + c.nmethods) % c.nmethods];
                    struct cell *cl = &cells[pi][m];
                    size_t n = records_per_cell(&c, size, m);
                    if (round < 0) {
                        /* A warm-up run: its time and latencies are dropped. */
                        int64_t *wl = NULL;
                        size_t wn = 0, wcap = 0;
                        (void)run_once(&c, m, procs, size, n, dir, &wl, &wn, &wcap);
                        free(wl);
                        continue;
                    }
                    int64_t ns = run_once(&c, m, procs, size, n, dir, &cl->lat, &cl->nlat, &cl->cap_lat);
                    size_t total = c.per_writer ? n * (size_t)procs : n;
                    cl->records = total;
                    cl->rates[cl->nrates++] = (double)total * 1e9 / (double)(ns > 0 ? ns : 1);
                }
            }
            for (int k = 0; k < c.nmethods; k++)
                finish_cell(&cells[pi][c.methods[k]]);
        }

        /* Per size: the detailed table (or CSV), then the matrix methods x P with the ratio to the floor. */
        int have_floor = 0;
        for (int k = 0; k < c.nmethods; k++)
            have_floor |= c.methods[k] == M_FLOOR;
        if (!c.csv) {
            size_t n = records_per_cell(&c, size, M_FLOOR), nb = records_per_cell(&c, size, M_BUF);
            int any_buffered = 0;
            for (int k = 0; k < c.nmethods; k++)
                any_buffered |= method_is_batched(c.methods[k]);
            char more[64] = "";
            if (any_buffered && nb != n)
                snprintf(more, sizeof more, " (buffered methods: %zu)", nb);
            printf("\n== %zu B records, %zu records per cell%s%s ==\n", size, n, c.per_writer ? " per writer" : "",
                   more);
            printf("%-17s %3s %10s %21s %9s %9s %9s %9s %9s\n", "method", "P", "rec/s", "min-max rec/s", "vs floor",
                   "MB/s", "p50 us", "p99 us", "p99.9 us");
        }
        for (int pi = 0; pi < c.nprocs; pi++) {
            for (int mm = 0; mm < M_COUNT; mm++) {
                int sel = 0;
                for (int k = 0; k < c.nmethods; k++)
                    sel |= c.methods[k] == mm;
                if (!sel)
                    continue;
                struct cell *cl = &cells[pi][mm];
                double ratio = have_floor ? cl->med / cells[pi][M_FLOOR].med : 0;
                double mbs = cl->med * (double)size / 1e6;
                if (c.csv) {
                    printf("%zu,%d,%s,%d,%zu,%.0f,%.0f,%.0f,%.0f,%.0f,%s%.4f,%.1f,%zu,%.3f,%.3f,%.3f\n", size,
                           c.procs[pi], method_names[mm], cl->nrates, cl->records, cl->med, cl->min, cl->max, cl->q1,
                           cl->q3, "", have_floor ? ratio : 0.0, mbs, cl->nlat, cl->p50 / 1000, cl->p99 / 1000,
                           cl->p999 / 1000);
                } else {
                    char a[32], b[32], d[32], spread[80], r[32], l1[32], l2[32], l3[32];
                    human(a, sizeof a, cl->med);
                    human(b, sizeof b, cl->min);
                    human(d, sizeof d, cl->max);
                    snprintf(spread, sizeof spread, "%s-%s", b, d);
                    if (have_floor)
                        snprintf(r, sizeof r, "%.2fx", ratio);
                    else
                        snprintf(r, sizeof r, "-");
                    us(l1, sizeof l1, cl->p50);
                    us(l2, sizeof l2, cl->p99);
                    us(l3, sizeof l3, cl->p999);
                    printf("%-17s %3d %10s %21s %9s %9.1f %9s %9s %9s\n", method_names[mm], c.procs[pi], a, spread, r,
                           mbs, l1, l2, l3);
                }
            }
        }
        if (!c.csv) {
            printf("\n%zu B, median rec/s (ratio to the floor's median, min-max spread as %% of the median):\n", size);
            printf("%-17s", "method");
            for (int pi = 0; pi < c.nprocs; pi++) {
                char h[16];
                snprintf(h, sizeof h, "P=%d", c.procs[pi]);
                printf(" | %-24s", h);
            }
            printf("\n");
            for (int mm = 0; mm < M_COUNT; mm++) {
                int sel = 0;
                for (int k = 0; k < c.nmethods; k++)
                    sel |= c.methods[k] == mm;
                if (!sel)
                    continue;
                printf("%-17s", method_names[mm]);
                for (int pi = 0; pi < c.nprocs; pi++) {
                    struct cell *cl = &cells[pi][mm];
                    char a[32], e[96];
                    human(a, sizeof a, cl->med);
                    if (have_floor)
                        snprintf(e, sizeof e, "%s (%.2fx) +-%.0f%%", a, cl->med / cells[pi][M_FLOOR].med,
                                 50 * (cl->max - cl->min) / cl->med);
                    else
                        snprintf(e, sizeof e, "%s +-%.0f%%", a, 50 * (cl->max - cl->min) / cl->med);
                    printf(" | %-24s", e);
                }
                printf("\n");
            }
        }
        if (c.tail && !c.csv)
            print_tail(&c, size, cells);
        for (int pi = 0; pi < c.nprocs; pi++)
            for (int mm = 0; mm < M_COUNT; mm++)
                free(cells[pi][mm].lat);
        fflush(stdout);
    }

    load(load1, sizeof load1);
    double secs = (double)(now_ns() - tstart) / 1e9;
    double steal, others = (machine_busy_s(&steal) - busy0) - (own_cpu_s() - own0);
    if (others < 0)
        others = 0;
    steal -= steal0;
    fprintf(out, "%s%sload at end (/proc/loadavg): %s; benchmark took %.0f s\n", c.csv ? "" : "\n", cm, load1, secs);
    fprintf(out,
            "%sother processes used %.1f CPU-seconds during the run (%.2f of the %ld CPUs on average); the hypervisor "
            "gave %.1f CPU-seconds of this machine's CPUs to others (steal time)\n",
            cm, others, others / secs, ncpu, steal);
    if (!c.keep_files)
        rmdir(dir);
    return 0;
}
