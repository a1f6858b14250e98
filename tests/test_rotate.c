/* SPDX-License-Identifier: MIT */
/* Rotation (promises 3 and 4): size-based rotation by many processes at once, and external rotation by
 * the real logrotate program followed by forklog_reopen() (from the parent, and from a SIGHUP handler). Every
 * record is self-checking (records.h): whole, present exactly once across path, path.1 .. path.N, and in a file
 * where rotation allows it. Children never assert. */
#include "internal.h"
#include "records.h"

#include <dirent.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <time.h>

static char *dir, *logpath;

static void setup(void)
{
    dir = th_tmpdir();
    logpath = th_path(dir, "rot.log");
    rc_init();
}

static void teardown(void)
{
    th_rmdir(dir);
    free(logpath);
    free(dir);
}

TestSuite(rotate, .init = setup, .fini = teardown);

static char *rotated_name(unsigned k)
{
    size_t n = strlen(logpath) + 16;
    char *p = malloc(n);
    cr_assert_not_null(p);
    if (k == 0)
        snprintf(p, n, "%s", logpath);
    else
        snprintf(p, n, "%s.%u", logpath, k);
    return p;
}

/* How many rotated files exist: path.1 .. path.N with no gap; fails on any other file in the directory. */
static unsigned count_rotated(void)
{
    unsigned n = 0;
    for (;; n++) {
        char *p = rotated_name(n + 1);
        int exists = access(p, F_OK) == 0;
        free(p);
        if (!exists)
            break;
    }
    DIR *d = opendir(dir);
    cr_assert_not_null(d);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0 || strcmp(e->d_name, "rot.log") == 0 ||
            strncmp(e->d_name, "logrotate.", 10) == 0)
            continue;
        unsigned k = 0;
        int off = 0;
        cr_assert(sscanf(e->d_name, "rot.log.%u%n", &k, &off) == 1 && e->d_name[off] == '\0', "unexpected file %s",
                  e->d_name);
        cr_assert(k >= 1 && k <= n, "rot.log.%u exists beyond the last rotated file rot.log.%u", k, n);
    }
    closedir(d);
    return n;
}

/* Length of the first line of a file, newline included (0 if empty). */
static size_t first_line_len(const char *path)
{
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f);
    size_t n = 0;
    int c;
    while ((c = fgetc(f)) != EOF) {
        n++;
        if (c == '\n')
            break;
    }
    fclose(f);
    return n;
}

/* ---- size-based rotation by 8 processes ------------------------------------------------------------------- */

enum { PROCS = 8, RECS = 1000, ROT_BYTES = 64 * 1024, BIG = 100 * 1024 };

static void rotate_writer(forklog *log, unsigned id)
{
    rc_child();
    char *buf = malloc(RC_HEAD_MAX + BIG);
    if (!buf)
        _exit(2);
    unsigned seed = id * 31u + 7u;
    for (unsigned seq = 0; seq < RECS; seq++) {
        char kind = seq % 4 == 0 ? 'L' : 'R';
        size_t n = rc_size(&seed, BIG);
        if (rc_write(log, buf, kind, id, seq, 0, n) != 0)
            _exit(3);
    }
    free(buf);
    _exit(forklog_close(log) == 0 ? 0 : 4);
}

static void run_size_rotation(unsigned flags)
{
    struct forklog_options o = {.rotate_bytes = ROT_BYTES, .rotate_keep = 1000, .flags = flags};
    forklog *log;
    cr_assert_eq(forklog_open(&log, logpath, &o), 0);
    pid_t pid[PROCS];
    for (unsigned p = 0; p < PROCS; p++) {
        pid[p] = fork();
        cr_assert_neq(pid[p], -1);
        if (pid[p] == 0)
            rotate_writer(log, p);
    }
    for (unsigned p = 0; p < PROCS; p++)
        cr_assert_eq(th_wait(pid[p]), 0, "writer %u failed", p);
    cr_assert_eq(forklog_close(log), 0);

    unsigned n = count_rotated();
    cr_assert_gt(n, 20, "only %u rotations: the test did not rotate enough", n);
    cr_assert_lt(n, 1000, "%u rotations: rotate_keep 1000 may have deleted files", n);
    struct rc_seen seen;
    rc_seen_init(&seen, PROCS, RECS);
    /* Oldest first: path.n is file 0, path is file n. */
    for (unsigned k = n + 1; k-- > 0;) {
        char *p = rotated_name(k);
        size_t before = seen.records;
        long long size = rc_scan(&seen, p, n - k);
        cr_assert_geq(size, 0, "%s missing", p);
        size_t in_file = seen.records - before;
        if (k > 0) {
            cr_assert_gt(in_file, 0, "%s is empty", p);
            /* Rotation happens only before a record that would pass rotate_bytes, and never after. */
            cr_assert(size <= ROT_BYTES || in_file == 1, "%s: %lld bytes in %zu records, past rotate_bytes", p, size,
                      in_file);
            char *newer = rotated_name(k - 1);
            size_t next = first_line_len(newer);
            cr_assert_gt((unsigned long long)size + next, (unsigned long long)ROT_BYTES,
                         "%s was rotated at %lld bytes though the next record (%zu bytes) fitted", p, size, next);
            free(newer);
        } else {
            cr_assert(size <= ROT_BYTES || in_file == 1, "%s: %lld bytes past rotate_bytes", p, size);
        }
        free(p);
    }
    /* Every record exactly once, and each writer's records in order across the files: nothing was written to a
     * file after a newer one had records of the same writer. */
    for (unsigned id = 0; id < PROCS; id++) {
        unsigned last_file = 0;
        for (unsigned q = 0; q < RECS; q++) {
            cr_assert_eq(rc_count(&seen, id, q), 1, "writer %u record %u is in the files %u times", id, q,
                         rc_count(&seen, id, q));
            unsigned f = seen.file[(size_t)id * seen.seqs + q];
            cr_assert_geq(f, last_file, "writer %u record %u went to an older file (%u < %u)", id, q, f, last_file);
            last_file = f;
        }
    }
    cr_assert_eq(seen.records, (size_t)PROCS * RECS);
    fprintf(stderr, "size rotation %s: %u rotations, %zu records\n", flags ? "buffered" : "direct", n, seen.records);
    rc_seen_free(&seen);
}

Test(rotate, eight_processes_direct, .timeout = 110)
{
    run_size_rotation(0);
}

Test(rotate, eight_processes_buffered, .timeout = 110)
{
    run_size_rotation(FORKLOG_BUFFERED);
}

Test(rotate, small_keep_deletes_the_oldest)
{
    struct forklog_options o = {.rotate_bytes = 1000, .rotate_keep = 3};
    forklog *log;
    cr_assert_eq(forklog_open(&log, logpath, &o), 0);
    char buf[RC_HEAD_MAX + 200];
    unsigned seed = 1;
    enum { N = 300 };
    for (unsigned seq = 0; seq < N; seq++)
        cr_assert_eq(rc_write(log, buf, 'R', 0, seq, 0, 50 + (size_t)rand_r(&seed) % 100), 0);
    cr_assert_eq(forklog_close(log), 0);
    cr_assert_eq(count_rotated(), 3, "rotate_keep 3: path.1 .. path.3 and no more");
    /* The files hold, oldest first (path.3, path.2, path.1, path), the newest records without a gap. */
    struct rc_seen seen;
    rc_seen_init(&seen, 1, N);
    for (unsigned k = 4; k-- > 0;) {
        char *p = rotated_name(k);
        long long size = rc_scan(&seen, p, 3 - k);
        cr_assert(size > 0 && size <= 1000, "%s: %lld bytes", p, size);
        free(p);
    }
    unsigned first = N;
    for (unsigned q = 0; q < N; q++)
        if (rc_count(&seen, 0, q)) {
            first = q;
            break;
        }
    cr_assert_gt(first, 0, "the oldest records should be gone");
    for (unsigned q = first; q < N; q++) {
        cr_assert_eq(rc_count(&seen, 0, q), 1, "record %u", q);
        if (q > first)
            cr_assert_geq(seen.file[q], seen.file[q - 1], "record %u is in an older file than record %u", q, q - 1);
    }
    cr_assert_eq(seen.file[N - 1], 3, "the newest record is in path");
    rc_seen_free(&seen);
}

/* The size of the file of path, of path.k (k > 0), or -1 when there is none. */
static long long size_of(unsigned k)
{
    char *p = rotated_name(k);
    struct stat st;
    long long size = stat(p, &st) == 0 ? (long long)st.st_size : -1;
    free(p);
    return size;
}

/* The bound exactly: a record that brings the file to rotate_bytes goes into it, and the next one rotates; a record
 * larger than rotate_bytes goes into an empty file as it is (nothing to rotate, no empty path.1), and the next record
 * rotates that file. Direct and buffered (the one buffer of a rotating log). */
Test(rotate, a_file_fills_to_rotate_bytes_exactly_and_an_empty_file_is_never_rotated)
{
    const unsigned flags[] = {0, FORKLOG_BUFFERED};
    char rec[100], big[1500];
    memset(rec, 'r', sizeof rec);
    rec[sizeof rec - 1] = '\n';
    memset(big, 'b', sizeof big);
    big[sizeof big - 1] = '\n';
    for (unsigned f = 0; f < sizeof flags / sizeof flags[0]; f++) {
        struct forklog_options o = {.flags = flags[f], .rotate_bytes = 1000, .rotate_keep = 5};
        forklog *log;
        cr_assert_eq(forklog_open(&log, logpath, &o), 0);
        for (unsigned i = 0; i < 10; i++)
            cr_assert_eq(forklog_write(log, rec, sizeof rec), 0);
        cr_assert_eq(forklog_flush(log), 0);
        cr_assert_eq(size_of(0), 1000, "flags %u: ten records of 100 bytes fill rotate_bytes 1000", flags[f]);
        cr_assert_eq(size_of(1), -1, "flags %u: rotated before a record that would pass rotate_bytes", flags[f]);
        cr_assert_eq(forklog_write(log, rec, sizeof rec), 0);
        cr_assert_eq(forklog_flush(log), 0);
        cr_assert_eq(size_of(2), -1, "flags %u", flags[f]);
        cr_assert_eq(size_of(1), 1000, "flags %u", flags[f]);
        cr_assert_eq(size_of(0), 100, "flags %u", flags[f]);
        cr_assert_eq(forklog_close(log), 0);
        for (unsigned k = 0; k <= 1; k++) {
            char *p = rotated_name(k);
            cr_assert_eq(unlink(p), 0);
            free(p);
        }

        cr_assert_eq(forklog_open(&log, logpath, &o), 0);
        cr_assert_eq(forklog_write(log, big, sizeof big), 0);
        cr_assert_eq(forklog_flush(log), 0);
        cr_assert_eq(size_of(1), -1, "flags %u: an empty file was rotated", flags[f]);
        cr_assert_eq(size_of(0), (long long)sizeof big, "flags %u", flags[f]);
        cr_assert_eq(forklog_write(log, big, sizeof big), 0);
        cr_assert_eq(forklog_close(log), 0);
        cr_assert_eq(size_of(2), -1, "flags %u", flags[f]);
        cr_assert_eq(size_of(1), (long long)sizeof big, "flags %u", flags[f]);
        cr_assert_eq(size_of(0), (long long)sizeof big, "flags %u", flags[f]);
        for (unsigned k = 0; k <= 1; k++) {
            char *p = rotated_name(k);
            cr_assert_eq(unlink(p), 0);
            free(p);
        }
    }
}

Test(rotate, small_keep_many_processes)
{
    struct forklog_options o = {.rotate_bytes = 4096, .rotate_keep = 2};
    forklog *log;
    cr_assert_eq(forklog_open(&log, logpath, &o), 0);
    enum { P = 4, N = 500 };
    pid_t pid[P];
    for (unsigned p = 0; p < P; p++) {
        pid[p] = fork();
        cr_assert_neq(pid[p], -1);
        if (pid[p] == 0) {
            char buf[RC_HEAD_MAX + 300];
            unsigned seed = p + 1;
            for (unsigned seq = 0; seq < N; seq++)
                if (rc_write(log, buf, 'R', p, seq, 0, (size_t)rand_r(&seed) % 300) != 0)
                    _exit(1);
            _exit(forklog_close(log) == 0 ? 0 : 2);
        }
    }
    for (unsigned p = 0; p < P; p++)
        cr_assert_eq(th_wait(pid[p]), 0);
    cr_assert_eq(forklog_close(log), 0);
    cr_assert_eq(count_rotated(), 2);
    struct rc_seen seen;
    rc_seen_init(&seen, P, N);
    for (unsigned k = 3; k-- > 0;) {
        char *p = rotated_name(k);
        long long size = rc_scan(&seen, p, 2 - k);
        cr_assert(size > 0 && size <= 4096, "%s: %lld bytes", p, size);
        free(p);
    }
    /* Each writer's surviving records are its newest ones, without a gap. */
    for (unsigned id = 0; id < P; id++) {
        unsigned q = N;
        while (q > 0 && rc_count(&seen, id, q - 1) == 1)
            q--;
        for (unsigned r = 0; r < q; r++)
            cr_assert_eq(rc_count(&seen, id, r), 0, "writer %u: record %u kept though %u is gone", id, r, q - 1);
    }
    rc_seen_free(&seen);
}

/* ---- external rotation: logrotate, then forklog_reopen() -------------------------------------------------- */

static const char *logrotate_program(void)
{
    static const char *const where[] = {"/usr/sbin/logrotate", "/sbin/logrotate", "/usr/bin/logrotate"};
    for (size_t i = 0; i < sizeof where / sizeof where[0]; i++)
        if (access(where[i], X_OK) == 0)
            return where[i];
    cr_assert_fail("logrotate is not installed: this test needs the real program (Debian: apt-get install logrotate; "
                   ".ci/run and tests/run install it)");
    return NULL;
}

enum { LR_WRITERS = 4, LR_ROUNDS = 5, LR_SEQS = 60000 };

struct lr_shared {
    atomic_uint reopens; /* forklog_reopen() calls that have returned */
    atomic_uint rotated; /* logrotate runs that have finished */
    atomic_uint acked[LR_WRITERS];
    atomic_int stop;
};

static forklog *g_log;
static struct lr_shared *g_sh;

static void on_sighup(int sig)
{
    (void)sig;
    int e = errno;
    forklog_reopen(g_log);
    atomic_fetch_add(&g_sh->reopens, 1);
    errno = e;
}

static void lr_writer(forklog *log, struct lr_shared *sh, unsigned id, int sighup)
{
    rc_child();
    if (sighup) {
        g_log = log;
        g_sh = sh;
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_sighup; /* no SA_RESTART */
        sigemptyset(&sa.sa_mask);
        if (sigaction(SIGHUP, &sa, NULL) != 0)
            _exit(2);
    }
    char *buf = malloc(RC_HEAD_MAX + 32768);
    if (!buf)
        _exit(2);
    unsigned seed = id + 99u;
    unsigned seq = 0;
    while (!atomic_load(&sh->stop) && seq < LR_SEQS) {
        /* The tag says what had happened when this call started: 2 * reopens returned, + 1 if logrotate has
         * already moved the file but no reopen followed yet. */
        unsigned re = atomic_load(&sh->reopens), rot = atomic_load(&sh->rotated);
        unsigned tag = 2 * re + (rot > re);
        char kind = seq % 3 == 0 ? 'L' : 'R';
        if (rc_write(log, buf, kind, id, seq, tag, rc_size(&seed, 32768)) != 0)
            _exit(3);
        atomic_store(&sh->acked[id], ++seq);
        usleep(200);
    }
    free(buf);
    _exit(forklog_close(log) == 0 ? 0 : 4);
}

static void run_logrotate_program(const char *prog, const char *conf, const char *state)
{
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        execl(prog, prog, "-f", "-s", state, conf, (char *)NULL);
        _exit(127);
    }
    cr_assert_eq(th_wait(pid), 0, "%s -f -s %s %s failed", prog, state, conf);
}

static void run_logrotate(int sighup)
{
    const char *prog = logrotate_program();
    char *conf = th_path(dir, "logrotate.conf");
    char *state = th_path(dir, "logrotate.state");
    FILE *f = fopen(conf, "w");
    cr_assert_not_null(f);
    fprintf(f, "%s {\n    rotate 100\n    create 0600\n    nocompress\n    missingok\n}\n", logpath);
    fclose(f);

    forklog *log;
    cr_assert_eq(forklog_open(&log, logpath, NULL), 0);
    struct lr_shared *sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(sh, MAP_FAILED);
    pid_t pid[LR_WRITERS];
    for (unsigned i = 0; i < LR_WRITERS; i++) {
        pid[i] = fork();
        cr_assert_neq(pid[i], -1);
        if (pid[i] == 0)
            lr_writer(log, sh, i, sighup);
    }
    for (unsigned r = 0; r < LR_ROUNDS; r++) {
        usleep(40 * 1000);
        run_logrotate_program(prog, conf, state);
        atomic_store(&sh->rotated, r + 1);
        usleep(20 * 1000); /* writers go on with the old (renamed) file meanwhile */
        if (sighup) {
            cr_assert_eq(kill(pid[r % LR_WRITERS], SIGHUP), 0);
            struct timespec t0, t;
            clock_gettime(CLOCK_MONOTONIC, &t0);
            while (atomic_load(&sh->reopens) != r + 1) {
                clock_gettime(CLOCK_MONOTONIC, &t);
                cr_assert_lt(t.tv_sec - t0.tv_sec, 10, "the SIGHUP handler did not run");
                usleep(100);
            }
        } else {
            cr_assert_eq(forklog_reopen(log), 0);
            atomic_store(&sh->reopens, r + 1);
        }
    }
    usleep(40 * 1000);
    atomic_store(&sh->stop, 1);
    for (unsigned i = 0; i < LR_WRITERS; i++)
        cr_assert_eq(th_wait(pid[i]), 0, "writer %u failed", i);
    cr_assert_eq(forklog_close(log), 0);

    /* path is generation LR_ROUNDS, path.k generation LR_ROUNDS - k. */
    struct stat st;
    cr_assert_eq(stat(logpath, &st), 0);
    cr_assert_eq(st.st_mode & 07777, 0600, "path is logrotate's file (create 0600), not one forklog made");
    struct rc_seen seen;
    rc_seen_init(&seen, LR_WRITERS, LR_SEQS);
    size_t per_gen[LR_ROUNDS + 1];
    for (unsigned k = LR_ROUNDS + 1; k-- > 0;) {
        char *p = rotated_name(k);
        size_t before = seen.records;
        cr_assert_geq(rc_scan(&seen, p, LR_ROUNDS - k), 0, "%s missing", p);
        per_gen[LR_ROUNDS - k] = seen.records - before;
        cr_assert_gt(per_gen[LR_ROUNDS - k], 0, "%s got no record", p);
        free(p);
    }
    size_t total = 0, old_after_rename = 0;
    for (unsigned id = 0; id < LR_WRITERS; id++) {
        unsigned a = atomic_load(&sh->acked[id]);
        total += a;
        for (unsigned q = 0; q < a; q++) {
            size_t k = (size_t)id * seen.seqs + q;
            cr_assert_eq(seen.count[k], 1, "writer %u record %u is in the files %u times", id, q, seen.count[k]);
            unsigned gen = seen.file[k], tag = seen.tag[k];
            /* A call that started after the r-th reopen returned lands in generation r or later. */
            cr_assert_geq(gen, tag / 2, "writer %u record %u started after reopen %u but is in generation %u", id, q,
                          tag / 2, gen);
            if (tag % 2 && gen == tag / 2)
                old_after_rename++;
        }
    }
    cr_assert_eq(seen.records, total, "records nobody acknowledged in the files");
    cr_assert_gt(old_after_rename, 0, "no record went to the renamed file between logrotate and the reopen");
    fprintf(stderr, "logrotate%s: %zu records, %zu of them written to the renamed file before the reopen\n",
            sighup ? " + SIGHUP" : "", total, old_after_rename);
    rc_seen_free(&seen);
    munmap(sh, sizeof *sh);
    free(conf);
    free(state);
}

Test(rotate, logrotate_create_then_reopen, .timeout = 110)
{
    run_logrotate(0);
}

Test(rotate, logrotate_create_then_sighup_reopen, .timeout = 110)
{
    run_logrotate(1);
}

Test(rotate, reopen_after_a_move_by_hand)
{
    /* The simplest external rotation: mv, reopen; the old file keeps what was written before the reopen. */
    forklog *log;
    cr_assert_eq(forklog_open(&log, logpath, NULL), 0);
    cr_assert_eq(forklog_write(log, "one", 3), 0);
    char *old = rotated_name(1);
    cr_assert_eq(rename(logpath, old), 0);
    cr_assert_eq(forklog_write(log, "two", 3), 0); /* no reopen yet: still the moved file */
    cr_assert_eq(forklog_reopen(log), 0);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0)
        _exit(forklog_write(log, "three", 5) == 0 && forklog_close(log) == 0 ? 0 : 1);
    cr_assert_eq(th_wait(pid), 0);
    cr_assert_eq(forklog_write(log, "four", 4), 0);
    cr_assert_eq(forklog_close(log), 0);
    size_t len;
    char *buf = th_slurp(old, &len);
    cr_assert_str_eq(buf, "one\ntwo\n");
    free(buf);
    buf = th_slurp(logpath, &len);
    cr_assert_str_eq(buf, "three\nfour\n");
    free(buf);
    free(old);
}

Test(rotate, child_forked_during_a_reopen_writes_to_the_new_file)
{
    /* fork() copies the descriptor table before the memory. When another thread of the parent completes a reopen
     * in between (the new descriptor replaces the old, then the handle takes the new generation), the child has
     * the new generation in its handle and the old, renamed file under its descriptor. That moment cannot be
     * staged from user space; the child below is put in the state it leaves, and must still write to the file
     * that is at the path now, never into the renamed one after the reopen returned. */
    forklog *log;
    cr_assert_eq(forklog_open(&log, logpath, NULL), 0);
    cr_assert_eq(forklog_write(log, "one", 3), 0);
    int go[2];
    cr_assert_eq(pipe(go), 0);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        char c;
        close(go[1]);
        if (read(go[0], &c, 1) != 1)
            _exit(2);
        log->gen = log->seg->gen; /* the generation of the parent's reopen, with the descriptor of before it */
        _exit(forklog_write(log, "three", 5) == 0 && forklog_close(log) == 0 ? 0 : 1);
    }
    close(go[0]);
    char *old = rotated_name(1);
    cr_assert_eq(rename(logpath, old), 0);
    cr_assert_eq(forklog_reopen(log), 0);
    cr_assert_eq(forklog_write(log, "two", 3), 0); /* reopened: the new file */
    cr_assert_eq(write(go[1], "g", 1), 1);
    close(go[1]);
    cr_assert_eq(th_wait(pid), 0);
    cr_assert_eq(forklog_write(log, "four", 4), 0);
    size_t len;
    char *buf = th_slurp(old, &len);
    cr_assert_str_eq(buf, "one\n", "the renamed file got a record after the reopen");
    free(buf);
    buf = th_slurp(logpath, &len);
    cr_assert_str_eq(buf, "two\nthree\nfour\n");
    cr_assert_eq(log->seg->size, len, "the segment believes %llu bytes, the file has %zu",
                 (unsigned long long)log->seg->size, len);
    free(buf);
    cr_assert_eq(forklog_close(log), 0);
    free(old);
}

/* Buffered records written after a reopen onto a file that is already near rotate_bytes: the flush rotates first,
 * as a record would, so that no file passes the bound by a buffer (here by 500 bytes). Each way a flush comes:
 * forklog_flush(), forklog_close(), and the next record when the buffer and it would pass the bound. */
Test(rotate, a_buffer_flushed_after_a_reopen_onto_a_file_near_the_bound_rotates_first)
{
    for (int how = 0; how < 3; how++) {
        struct forklog_options o = {
            .flags = FORKLOG_BUFFERED, .rotate_bytes = 1000, .rotate_keep = 3, .flush_ms = 60000};
        forklog *log;
        cr_assert_eq(forklog_open(&log, logpath, &o), 0);
        char rec[100];
        memset(rec, 'a' + how, sizeof rec);
        rec[sizeof rec - 1] = '\n';
        for (int i = 0; i < 5; i++)
            cr_assert_eq(forklog_write(log, rec, sizeof rec), 0);
        /* The log moved away and another file, of 950 bytes, put at its name; then a reopen. */
        char *moved = th_path(dir, "moved");
        cr_assert_eq(rename(logpath, moved), 0);
        char big[950];
        memset(big, 'x', sizeof big);
        big[sizeof big - 1] = '\n';
        int fd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        cr_assert_geq(fd, 0);
        cr_assert_eq(write(fd, big, sizeof big), (ssize_t)sizeof big);
        close(fd);
        cr_assert_eq(forklog_reopen(log), 0);
        if (how == 0)
            cr_assert_eq(forklog_flush(log), 0);
        else if (how == 2)
            cr_assert_eq(forklog_write(log, rec, sizeof rec), 0);
        cr_assert_eq(forklog_close(log), 0);
        char *one = rotated_name(1);
        struct stat st;
        cr_assert_eq(stat(one, &st), 0, "how %d: no rotation", how);
        cr_assert_eq(st.st_size, (off_t)sizeof big, "how %d: %s holds %lld bytes", how, one, (long long)st.st_size);
        cr_assert_eq(stat(logpath, &st), 0);
        cr_assert_eq(st.st_size, (off_t)(sizeof rec * (how == 2 ? 6 : 5)), "how %d: %s holds %lld bytes", how, logpath,
                     (long long)st.st_size);
        cr_assert_eq(stat(moved, &st), 0);
        cr_assert_eq(st.st_size, 0, "how %d: the moved file got records", how);
        unlink(one);
        unlink(moved);
        unlink(logpath);
        free(one);
        free(moved);
    }
}
