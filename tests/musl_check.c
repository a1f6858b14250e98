/* SPDX-License-Identifier: MIT */
/* The central promise checked at run time where the Criterion suite cannot run: with musl (Criterion is a glibc
 * library). tests/build_matrix.sh builds it with musl-gcc, and with the compiler of the build, each time with every
 * source of lib/ and its crash points (FL__CRASH_POINTS), and runs it. Usage: musl_check CHECK DIR, CHECK one of
 * the names below or `all`; exit status 0 when it holds, else 1 with a one-line reason on stderr. Every check reads
 * the file(s) back: each line must be a whole record of a known writer (its payload is a pattern chosen by the
 * writer and the sequence number, so a torn, glued or foreign line is seen), each writer's records in order.
 *   writers:  6 forked writers, direct then FORKLOG_BUFFERED, records of 8 bytes to 70000 (well past PIPE_BUF),
 *             some formatted (forklog_log), some raw: each record once, each writer's in order, the count exact.
 *   points:   for every crash point, in four logs (direct; direct rotating; buffered, that is the writers' rings;
 *             buffered rotating, the shared buffer), a writer that dies at the point's first passage, once as the
 *             holder (it stops with the lock, the others post their records to it, it goes on) and once as a
 *             poster (another writer stops with the lock while it posts), while three others go on: they end
 *             within PT_BOUND_S, every acknowledged record is in the files once, the dead writer's record in flight
 *             at most once, nothing torn. Each point of the lock, write, combining, buffer, ring and rotation
 *             protocols (pt_required) must have killed it in one log at least, and the robust mutex's EOWNERDEAD
 *             repair must have run. MUSL_CHECK_VERBOSE=1 lists the points no writer died at.
 *   pool:     forklog_pool_map() with a task whose worker dies (SIGKILL), one that calls exit() (the caller's exit
 *             handler and its buffered stdio must not run in the worker), one that calls pthread_exit() (its worker
 *             ends with _exit(126), and the other workers' tasks go on) and one that sleeps past the timeout: the
 *             call returns within a bound, with the outcome of each task and one record per task.
 *   rotate:   4 writers, direct then buffered, on a log rotated every 64 KiB: no file past the bound, no record
 *             split or lost or doubled across the files, each writer's records in order from the oldest file. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "forklog.h"
#include "internal.h"

static const char *check_name = "?";

/* Ends the program: the check failed, for the reason given (one line). */
static _Noreturn __attribute__((format(printf, 1, 2))) void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "musl_check %s: FAIL: ", check_name);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

/* SIGALRM: a check that did not end within its bound (a hang) fails, instead of keeping the build waiting. */
static void too_long(int sig)
{
    (void)sig;
    char msg[160];
    int n = snprintf(msg, sizeof msg, "musl_check %s: FAIL: not done within its bound (a hang)\n", check_name);
    ssize_t w = write(2, msg, n > 0 ? (size_t)n : 0);
    (void)w;
    _exit(1);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Waits for child `pid` at most `limit` seconds; returns its status, or -1 (it was killed then) when it did not end
 * in time. With `stopped`, a stop also ends the wait (the status then says WIFSTOPPED). */
static int wait_for(pid_t pid, double limit, int stopped)
{
    double end = now_s() + limit;
    for (;;) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG | (stopped ? WUNTRACED : 0));
        if (r == pid)
            return st;
        if (r < 0 && errno != EINTR)
            fail("waitpid(%d): %s", (int)pid, strerror(errno));
        if (now_s() > end) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            return -1;
        }
        usleep(1000);
    }
}

/* ---- records --------------------------------------------------------------------------------------------------- */

/* A record is `w<id> s<seq> n<len> |` and len bytes of a pattern of (id, seq, byte index), raw (forklog_write) or
 * formatted (forklog_log: after the text prefix `TS LEVEL pid=P `). */
enum { MAX_IDS = 8, MAX_SEQS = 1024 };

static char pattern_byte(unsigned id, unsigned seq, size_t i)
{
    return (char)('a' + (id * 7u + seq * 13u + (unsigned)i) % 26u);
}

static const size_t sizes[] = {8, 200, 3000, 4097, 9000, 70000, 40, 1500};
#define NSIZES (sizeof sizes / sizeof sizes[0])

/* Writes record (id, seq) of payload size n, formatted every third time. Returns the call's result. */
static int put(forklog *log, unsigned id, unsigned seq, size_t n)
{
    static char buf[80 + 70000];
    int head = snprintf(buf, 80, "w%u s%u n%zu |", id, seq, n);
    for (size_t i = 0; i < n; i++)
        buf[(size_t)head + i] = pattern_byte(id, seq, i);
    buf[(size_t)head + n] = '\0';
    if (seq % 3 == 1)
        return forklog_log(log, FORKLOG_INFO, "%s", buf);
    return forklog_write(log, buf, (size_t)head + n);
}

/* What was read back: how many times each record is there, and the last sequence number of each writer. */
struct seen {
    unsigned char count[MAX_IDS][MAX_SEQS];
    int last[MAX_IDS];
    size_t records;
};

static void seen_init(struct seen *s)
{
    memset(s, 0, sizeof *s);
    for (int i = 0; i < MAX_IDS; i++)
        s->last[i] = -1;
}

/* Reads `path` and adds its records to *s; returns the file's size, or -1 when there is no such file. Any line
 * that is not a whole record, and a record out of its writer's order, fails the check. */
static long long scan(struct seen *s, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        if (errno == ENOENT)
            return -1;
        fail("fopen(%s): %s", path, strerror(errno));
    }
    size_t cap = 1 << 20, len = 0;
    char *buf = malloc(cap + 1);
    for (size_t n; buf && (n = fread(buf + len, 1, cap - len, f)) > 0;) {
        len += n;
        if (len == cap)
            buf = realloc(buf, (cap *= 2) + 1);
    }
    fclose(f);
    if (!buf)
        fail("no memory to read %s", path);
    buf[len] = '\0';
    if (len && buf[len - 1] != '\n')
        fail("%s ends with a fragment: %.60s", path, strrchr(buf, '\n') ? strrchr(buf, '\n') + 1 : buf);
    size_t lineno = 0;
    for (char *line = buf, *end; line < buf + len; line = end + 1) {
        end = strchr(line, '\n');
        *end = '\0';
        lineno++;
        char *rec = line;
        if (*rec != 'w') {
            /* formatted: `2026-12-07T15:31:00.123456Z INFO pid=P w...` */
            char *pid = strstr(line, " INFO pid=");
            rec = pid ? strchr(pid + 10, ' ') : NULL;
            if (!rec || line[26] != 'Z' || pid != line + 27)
                fail("%s line %zu is no record: %.60s", path, lineno, line);
            rec++;
        }
        unsigned id, seq;
        size_t n;
        int off = 0;
        if (sscanf(rec, "w%u s%u n%zu |%n", &id, &seq, &n, &off) != 3 || off == 0 || id >= MAX_IDS || seq >= MAX_SEQS)
            fail("%s line %zu has no record's head: %.60s", path, lineno, line);
        if (strlen(rec + off) != n)
            fail("%s line %zu (w%u s%u): %zu payload bytes, not %zu (torn or glued)", path, lineno, id, seq,
                 strlen(rec + off), n);
        for (size_t i = 0; i < n; i++)
            if (rec[off + (int)i] != pattern_byte(id, seq, i))
                fail("%s line %zu (w%u s%u): payload differs at byte %zu", path, lineno, id, seq, i);
        if ((int)seq <= s->last[id])
            fail("%s line %zu: w%u s%u after s%d (out of order or doubled)", path, lineno, id, seq, s->last[id]);
        s->last[id] = (int)seq;
        s->count[id][seq]++;
        s->records++;
    }
    free(buf);
    return (long long)len;
}

/* Adds the rotated files (path.N .. path.1, oldest first) and then path to *s; returns how many files there were. A
 * rotation killed between two of its renames leaves a name free below older files (the next rotation fills it):
 * every name up to path.1000 is looked at. */
static int scan_all(struct seen *s, const char *path, long long *largest)
{
    char name[4200];
    int files = 0;
    *largest = 0;
    for (int k = 1000; k >= 0; k--) {
        if (k)
            snprintf(name, sizeof name, "%s.%d", path, k);
        long long n = scan(s, k ? name : path);
        if (n >= 0)
            files++;
        if (n > *largest)
            *largest = n;
    }
    return files;
}

static void remove_all(const char *path)
{
    char name[4200];
    unlink(path);
    for (int k = 1; k <= 1000; k++) {
        snprintf(name, sizeof name, "%s.%d", path, k);
        unlink(name);
    }
}

/* Writer `id`'s records 0 .. n-1 are each in the file once; the others are not there. */
static void expect_all(const struct seen *s, unsigned id, unsigned n, const char *what)
{
    for (unsigned q = 0; q < MAX_SEQS; q++)
        if (s->count[id][q] != (q < n))
            fail("%s: writer %u record %u is there %u times", what, id, q, s->count[id][q]);
}

static forklog *open_log(const char *path, const struct forklog_options *o)
{
    remove_all(path);
    forklog *log = NULL;
    int rc = forklog_open(&log, path, o);
    if (rc < 0)
        fail("forklog_open(%s): %s", path, strerror(-rc));
    return log;
}

/* What the writers of one log share: how many of each one's records returned 0. */
struct shared {
    atomic_uint acked[MAX_IDS];
    atomic_int error[MAX_IDS];
};

static struct shared *shared_new(void)
{
    struct shared *sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED)
        fail("mmap: %s", strerror(errno));
    return sh;
}

/* A forked writer's work: `n` records (sizes from size index `id` on, cut to less than `max` bytes of payload past
 * it), each acknowledged one published in sh; then the close. Exits 0, 3 at the first call that fails (its error in
 * sh), 4 when the close fails. */
static _Noreturn void write_acked(forklog *log, struct shared *sh, unsigned id, unsigned n, size_t max)
{
    for (unsigned q = 0; q < n; q++) {
        size_t len = sizes[(id + q) % NSIZES];
        int rc = put(log, id, q, len > max ? len % max : len);
        if (rc != 0) {
            atomic_store(&sh->error[id], rc);
            _exit(3);
        }
        atomic_store(&sh->acked[id], q + 1);
    }
    _exit(forklog_close(log) == 0 ? 0 : 4);
}

/* A forked writer of `n` records (sizes from size index `first` on, up to `max` bytes of payload); it publishes each
 * acknowledged record in sh, closes its handle and exits 0, or exits 3 at the first call that fails. */
static pid_t writer(forklog *log, struct shared *sh, unsigned id, unsigned n, size_t max)
{
    pid_t pid = fork();
    if (pid < 0)
        fail("fork: %s", strerror(errno));
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        write_acked(log, sh, id, n, max);
    }
    return pid;
}

/* ---- writers --------------------------------------------------------------------------------------------------- */

/* w forked writers of n records each, up to max bytes, through log; each must end well within 30 s. Closes log. */
static void run_writers(forklog *log, unsigned w, unsigned n, size_t max, const char *what)
{
    struct shared *sh = shared_new();
    pid_t pid[MAX_IDS];
    for (unsigned i = 0; i < w; i++)
        pid[i] = writer(log, sh, i, n, max);
    for (unsigned i = 0; i < w; i++) {
        int st = wait_for(pid[i], 30, 0);
        if (st != 0)
            fail("%s: writer %u ended with status %#x (-1: not within 30 s; error %s)", what, i, (unsigned)st,
                 strerror(-atomic_load(&sh->error[i])));
    }
    if (forklog_close(log) != 0)
        fail("%s: forklog_close", what);
    munmap(sh, sizeof *sh);
}

static void check_writers_with(const char *dir, unsigned flags, const char *what)
{
    enum { W = 6, N = 200 };
    char path[4096];
    snprintf(path, sizeof path, "%s/writers.log", dir);
    struct forklog_options o = {.flags = flags};
    run_writers(open_log(path, &o), W, N, 70000, what);
    struct seen *s = malloc(sizeof *s);
    seen_init(s);
    scan(s, path);
    for (unsigned i = 0; i < W; i++)
        expect_all(s, i, N, what);
    if (s->records != W * N)
        fail("%s: %zu records, not %d", what, s->records, W * N);
    free(s);
    remove_all(path);
}

static void check_writers(const char *dir)
{
    check_writers_with(dir, 0, "direct");
    check_writers_with(dir, FORKLOG_BUFFERED, "buffered");
}

/* ---- points ---------------------------------------------------------------------------------------------------- */

#define PT_BOUND_S 10.0
enum { PT_OTHERS = 3, PT_N = 30, PT_CONFIGS = 4 };

static const struct {
    const char *name;
    unsigned flags;
    unsigned long long rotate_bytes;
} pt_config[PT_CONFIGS] = {
    {"direct", 0, 0},
    {"direct rotating", 0, 24 << 10},
    {"buffered", FORKLOG_BUFFERED, 0},
    {"buffered rotating", FORKLOG_BUFFERED, 24 << 10},
};

/* The points of the lock, write, combining, buffer, ring and rotation protocols that a writer dying at its first
 * passage must reach in one of the logs at least (the others need a scene of their own: a reopen, a file that ends
 * mid-line, a path it cannot open, every slot taken, the opener of a segment). */
static const char *const pt_required[] = {
    "LOCK_ACQUIRED",  "LOCK_HELD",       "UNLOCK",       "WRITE_TARGET",  "WRITE_BEGIN",  "WRITE_TORN",
    "WRITE_DONE",     "WRITE_COMMITTED", "BUF_COPIED",   "BUF_PUBLISHED", "RING_CLAIMED", "RING_COPIED",
    "RING_PUBLISHED", "RING_TARGET",     "RING_PLANNED", "RING_RELEASED", "ROTATE_BEGIN", "ROTATE_RENAMED",
    "FILE_CREATED",   "ROTATE_CREATED",  "ROTATE_DONE",  "FILE_KNOWN",    "POST_CLAIMED", "POST_POSTED",
    "POST_FLAGGED",   "POST_DONE_SEEN",  "BATCH_GATHER", "BATCH_SWAPPED", "BATCH_TAKEN",  "BATCH_TARGET",
    "BATCH_WRITTEN",  "BATCH_RESULT",    "BATCH_MARKED",
};

/* A forked writer `id` of PT_N records that first arms point `cp` to kill it at its first passage, and (stop) point
 * LOCK_HELD to stop it there: armed last, so that for LOCK_HELD itself the death wins. */
static pid_t pt_writer(forklog *log, struct shared *sh, unsigned id, enum fl__crash_point cp, int stop)
{
    pid_t pid = fork();
    if (pid < 0)
        fail("fork: %s", strerror(errno));
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (stop)
            fl__crash_arm(FL__CP_LOCK_HELD, 1, FL__CRASH_STOP);
        if (cp != FL__CP_COUNT)
            fl__crash_arm(cp, 1, FL__CRASH_KILL);
        write_acked(log, sh, id, PT_N, 5000);
    }
    return pid;
}

/* One scene: writer 0 dies at the first passage of point cp while writers 1 .. PT_OTHERS go on. As the holder
 * (poster 0), writer 0 stops once it holds the lock, the others start (and post their records to it), and it goes
 * on. As a poster, writer PT_HOLDER stops with the lock, writer 0 starts (and posts to it), and the holder goes on.
 * Returns whether writer 0 died there. Adds the EOWNERDEAD repairs to *repairs. */
enum { PT_PARENT = PT_OTHERS + 1, PT_HOLDER = PT_OTHERS + 2 };
static int pt_scene(const char *dir, int cfg, enum fl__crash_point cp, int poster, unsigned long long *repairs)
{
    char path[4096], where[200];
    snprintf(path, sizeof path, "%s/points.log", dir);
    snprintf(where, sizeof where, "%s, %s, %s", pt_config[cfg].name, fl__crash_name(cp), poster ? "poster" : "holder");
    struct forklog_options o = {
        .flags = pt_config[cfg].flags, .rotate_bytes = pt_config[cfg].rotate_bytes, .rotate_keep = 1000};
    forklog *log = open_log(path, &o);
    struct shared *sh = shared_new();
    /* Only direct records of a log without rotation are posted to the holder (lib/combine.c). */
    int posting = !(pt_config[cfg].flags & FORKLOG_BUFFERED) && !pt_config[cfg].rotate_bytes;

    unsigned stopper = poster ? PT_HOLDER : 0;
    pid_t stopped = pt_writer(log, sh, stopper, poster ? FL__CP_COUNT : cp, 1), victim = stopped;
    int st = wait_for(stopped, PT_BOUND_S, 1);
    if (st == -1)
        fail("%s: writer %u neither stopped with the lock nor ended within %.0f s", where, stopper, PT_BOUND_S);
    /* The poster's record is posted (or it died on its way there) before the holder goes on. */
    int victim_st = -1;
    if (poster) {
        victim = pt_writer(log, sh, 0, cp, 0);
        double until = now_s() + PT_BOUND_S;
        while (WIFSTOPPED(st) && posting && !atomic_load(&log->seg->posted) && now_s() < until &&
               waitpid(victim, &victim_st, WNOHANG) == 0)
            usleep(200);
    }
    pid_t pid[PT_OTHERS + 1];
    for (unsigned i = 1; i <= PT_OTHERS; i++)
        pid[i] = writer(log, sh, i, PT_N, 5000);
    if (WIFSTOPPED(st)) {
        /* As the holder: the others' records are posted to it (one at least) before it goes on. */
        double until = now_s() + PT_BOUND_S;
        while (!poster && posting && !atomic_load(&log->seg->posted) && now_s() < until)
            usleep(200);
        kill(stopped, SIGCONT);
        st = wait_for(stopped, PT_BOUND_S, 0);
        if (st == -1)
            fail("%s: writer %u did not end within %.0f s once continued", where, stopper, PT_BOUND_S);
    }
    if (poster) {
        if (st != 0)
            fail("%s: the holder ended with status %#x (error %s)", where, (unsigned)st,
                 strerror(-atomic_load(&sh->error[PT_HOLDER])));
        if (victim_st != -1)
            st = victim_st;
        else if ((st = wait_for(victim, PT_BOUND_S, 0)) == -1)
            fail("%s: writer 0 did not end within %.0f s", where, PT_BOUND_S);
    }
    int died = WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL;
    if (!died && st != 0)
        fail("%s: writer 0 ended with status %#x (error %s)", where, (unsigned)st,
             strerror(-atomic_load(&sh->error[0])));
    double t0 = now_s();
    for (unsigned i = 1; i <= PT_OTHERS; i++) {
        st = wait_for(pid[i], PT_BOUND_S - (now_s() - t0), 0);
        if (st != 0)
            fail("%s: writer %u ended with status %#x (-1: not within %.0f s of the death; error %s)", where, i,
                 (unsigned)st, PT_BOUND_S, strerror(-atomic_load(&sh->error[i])));
    }
    /* A record of this process: it repairs what nobody repaired yet, then the close writes what is buffered. */
    int rc = put(log, PT_PARENT, 0, 10);
    if (rc != 0)
        fail("%s: a record after the death: %s", where, strerror(-rc));
    *repairs += log->seg->repairs;
    if ((rc = forklog_close(log)) != 0)
        fail("%s: forklog_close: %s", where, strerror(-rc));

    struct seen *s = malloc(sizeof *s);
    seen_init(s);
    long long largest;
    scan_all(s, path, &largest);
    for (unsigned i = 1; i <= PT_OTHERS; i++)
        expect_all(s, i, PT_N, where);
    expect_all(s, PT_PARENT, 1, where);
    expect_all(s, PT_HOLDER, poster ? PT_N : 0, where);
    unsigned acked = atomic_load(&sh->acked[0]);
    for (unsigned q = 0; q < PT_N; q++)
        if (s->count[0][q] != (q < acked) && !(q == acked && s->count[0][q] == 1))
            fail("%s: the dead writer's record %u (%u acknowledged) is there %u times", where, q, acked,
                 s->count[0][q]);
    free(s);
    munmap(sh, sizeof *sh);
    remove_all(path);
    return died;
}

static void check_points(const char *dir)
{
    static int died[FL__CP_COUNT];
    unsigned long long repairs = 0;
    for (int cfg = 0; cfg < PT_CONFIGS; cfg++)
        for (int cp = 0; cp < FL__CP_COUNT; cp++)
            for (int poster = 0; poster < 2; poster++)
                died[cp] += pt_scene(dir, cfg, (enum fl__crash_point)cp, poster, &repairs);
    char missing[1024] = "";
    for (size_t i = 0; i < sizeof pt_required / sizeof pt_required[0]; i++) {
        int cp = 0;
        while (fl__crash_name((enum fl__crash_point)cp) &&
               strcmp(fl__crash_name((enum fl__crash_point)cp), pt_required[i]))
            cp++;
        if (cp == FL__CP_COUNT)
            fail("no crash point %s", pt_required[i]);
        if (!died[cp] && strlen(missing) + strlen(pt_required[i]) + 2 < sizeof missing)
            strcat(strcat(missing, " "), pt_required[i]);
    }
    if (*missing)
        fail("no writer died at:%s", missing);
    if (repairs == 0)
        fail("no holder found its predecessor dead (EOWNERDEAD): the repair was not tested");
    if (getenv("MUSL_CHECK_VERBOSE")) {
        fprintf(stderr, "points: %llu repairs; not reached:", repairs);
        for (int cp = 0; cp < FL__CP_COUNT; cp++)
            if (!died[cp])
                fprintf(stderr, " %s", fl__crash_name((enum fl__crash_point)cp));
        fputc('\n', stderr);
    }
}

/* ---- pool ------------------------------------------------------------------------------------------------------ */

enum { POOL_TASKS = 10, POOL_CRASH = 2, POOL_EXIT = 4, POOL_STALL = 6, POOL_THREAD_EXIT = 8 };
static pid_t pool_caller;
static char pool_marker[4096];

/* The caller's exit handler: it must never run in a worker whose task calls exit(). */
static void pool_caller_at_exit(void)
{
    if (getpid() != pool_caller) {
        FILE *f = fopen(pool_marker, "w");
        if (f)
            fclose(f);
    }
}

static int pool_task(size_t i, void *ctx)
{
    (void)ctx;
    if (i == POOL_CRASH)
        raise(SIGKILL);
    if (i == POOL_EXIT)
        exit(7);
    if (i == POOL_STALL)
        sleep(30);
    if (i == POOL_THREAD_EXIT)
        pthread_exit(NULL);
    usleep(100 * 1000); /* the other workers' tasks run meanwhile */
    return 0;
}

/* Task 1 calls pthread_exit() while task 0 runs in the worker forked before its own. */
static int pool_sibling_task(size_t i, void *ctx)
{
    (void)ctx;
    usleep(i ? 100 * 1000 : 500 * 1000);
    if (i == 1)
        pthread_exit(NULL);
    return 0;
}

static void check_pool(const char *dir)
{
    {
        struct forklog_task_result res[2];
        struct forklog_pool_options o = {.workers = 2, .timeout_s = 5.0, .results = res};
        int rc = forklog_pool_map(&o, 2, pool_sibling_task, NULL, NULL);
        if (rc != 1 || res[0].status != FORKLOG_TASK_OK || res[1].status != FORKLOG_TASK_CRASHED ||
            res[1].code != 126 || res[1].signal != 0)
            fail("a task that called pthread_exit(): returned %d; the other task status %d signal %d, its own status "
                 "%d code %d signal %d (want 1; ok; crashed with code 126)",
                 rc, (int)res[0].status, res[0].signal, (int)res[1].status, res[1].code, res[1].signal);
    }

    char path[4096];
    snprintf(path, sizeof path, "%s/pool.log", dir);
    forklog *log = open_log(path, NULL);
    pool_caller = getpid();
    snprintf(pool_marker, sizeof pool_marker, "%s/pool.at_exit", dir);
    unlink(pool_marker);
    atexit(pool_caller_at_exit);
    /* Output the caller has buffered: a worker's exit() must not write it a second time. */
    char out[4096];
    snprintf(out, sizeof out, "%s/pool.stdio", dir);
    FILE *buffered = fopen(out, "w");
    if (!buffered || fputs("caller\n", buffered) < 0)
        fail("%s: %s", out, strerror(errno));
    struct forklog_task_result res[POOL_TASKS];
    struct forklog_pool_options o = {.workers = 3, .timeout_s = 1.0, .log = log, .results = res};
    struct forklog_pool_report rep;
    double t0 = now_s();
    int rc = forklog_pool_map(&o, POOL_TASKS, pool_task, NULL, &rep);
    double took = now_s() - t0;
    forklog_close(log);
    if (took > 10)
        fail("forklog_pool_map took %.1f s with a timeout of 1 s", took);
    struct stat st;
    if (stat(pool_marker, &st) == 0)
        fail("a task's exit() ran the caller's exit handler in its worker");
    if (stat(out, &st) != 0 || st.st_size != 0)
        fail("a task's exit() wrote the caller's buffered output (%lld bytes in %s)", (long long)st.st_size, out);
    fclose(buffered);
    unlink(out);
    if (rc != 4 || rep.ok != POOL_TASKS - 4 || rep.crashed != 3 || rep.timed_out != 1) {
        char outcome[POOL_TASKS * 24] = "";
        for (int i = 0; i < POOL_TASKS; i++)
            snprintf(outcome + strlen(outcome), sizeof outcome - strlen(outcome), " %d:%d/%d/%d", i, (int)res[i].status,
                     res[i].code, res[i].signal);
        fail("forklog_pool_map returned %d: %zu ok, %zu crashed, %zu timed out (task:status/code/signal%s)", rc, rep.ok,
             rep.crashed, rep.timed_out, outcome);
    }
    static const char *const status[] = {"not_run", "ok", "failed", "crashed", "timeout"};
    FILE *f = fopen(path, "r");
    if (!f)
        fail("%s: %s", path, strerror(errno));
    int count[POOL_TASKS] = {0}, lines = 0;
    char line[4096];
    while (fgets(line, sizeof line, f)) {
        lines++;
        const char *t = strstr(line, " task task=");
        if (!t)
            continue;
        size_t i;
        char word[16];
        if (sscanf(t, " task task=%zu status=%15s", &i, word) != 2 || i >= POOL_TASKS)
            fail("pool.log: a task record that does not parse: %s", line);
        count[i]++;
        enum forklog_task_status want = i == POOL_CRASH || i == POOL_EXIT || i == POOL_THREAD_EXIT
                                            ? FORKLOG_TASK_CRASHED
                                        : i == POOL_STALL ? FORKLOG_TASK_TIMEOUT
                                                          : FORKLOG_TASK_OK;
        if (res[i].status != want || strcmp(word, status[want]) != 0)
            fail("task %zu: status %d, recorded %s; expected %s", i, (int)res[i].status, word, status[want]);
    }
    fclose(f);
    if (res[POOL_THREAD_EXIT].code != 126 || res[POOL_THREAD_EXIT].signal != 0)
        fail("a task that called pthread_exit() ended its worker with code %d, signal %d: not _exit(126)",
             res[POOL_THREAD_EXIT].code, res[POOL_THREAD_EXIT].signal);
    for (int i = 0; i < POOL_TASKS; i++)
        if (count[i] != 1)
            fail("task %d has %d records", i, count[i]);
    if (lines != POOL_TASKS + 1)
        fail("pool.log has %d lines: one per task and the summary make %d", lines, POOL_TASKS + 1);
    remove_all(path);
}

/* ---- rotate ---------------------------------------------------------------------------------------------------- */

static void check_rotate_with(const char *dir, unsigned flags, const char *what)
{
    enum { W = 4, N = 250, BOUND = 64 << 10 };
    char path[4096];
    snprintf(path, sizeof path, "%s/rotate.log", dir);
    struct forklog_options o = {.flags = flags, .rotate_bytes = BOUND, .rotate_keep = 1000};
    run_writers(open_log(path, &o), W, N, 9000, what);
    struct seen *s = malloc(sizeof *s);
    seen_init(s);
    long long largest;
    int files = scan_all(s, path, &largest);
    for (unsigned i = 0; i < W; i++)
        expect_all(s, i, N, what);
    if (files < 10 || largest > BOUND)
        fail("%s: %d files, the largest of %lld bytes (rotate_bytes %d)", what, files, largest, BOUND);
    free(s);
    remove_all(path);
}

static void check_rotate(const char *dir)
{
    check_rotate_with(dir, 0, "direct");
    check_rotate_with(dir, FORKLOG_BUFFERED, "buffered");
}

int main(int argc, char **argv)
{
    static const struct {
        const char *name;
        void (*run)(const char *dir);
        unsigned bound_s; /* about ten times what it takes on 2 busy CPUs */
    } checks[] = {{"writers", check_writers, 60},
                  {"points", check_points, 180},
                  {"pool", check_pool, 60},
                  {"rotate", check_rotate, 60}};
    if (argc != 3) {
        fprintf(stderr, "usage: musl_check writers|points|pool|rotate|all DIR\n");
        return 2;
    }
    int ran = 0;
    for (size_t i = 0; i < sizeof checks / sizeof checks[0]; i++) {
        if (strcmp(argv[1], "all") != 0 && strcmp(argv[1], checks[i].name) != 0)
            continue;
        check_name = checks[i].name;
        double t0 = now_s();
        signal(SIGALRM, too_long);
        alarm(checks[i].bound_s);
        checks[i].run(argv[2]);
        alarm(0);
        if (getenv("MUSL_CHECK_VERBOSE"))
            fprintf(stderr, "musl_check %s: ok in %.1f s\n", check_name, now_s() - t0);
        ran++;
    }
    if (!ran) {
        fprintf(stderr, "musl_check: no check %s\n", argv[1]);
        return 2;
    }
    return 0;
}
