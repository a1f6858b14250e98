/* SPDX-License-Identifier: MIT */
/* Multi-process stress: 8 processes x 2 threads append records of 0 B to 256 KiB (raw and formatted) to one
 * file; the parent then reads every record back: whole, not interleaved, each writer's sequence complete, the
 * count exact. */
#include "helpers.h"

#include <forklog.h>
#include <pthread.h>

enum { PROCS = 8, THREADS = 2, RECORDS = 1000, MAX_PAYLOAD = 256 * 1024 };

static char payload_char(int w, int seq)
{
    return (char)('a' + (w * 7 + seq) % 26);
}

/* Payload sizes: mostly small, some KiB, a few up to 256 KiB. */
static size_t payload_size(unsigned *seed)
{
    unsigned r = (unsigned)rand_r(seed);
    switch (r % 100) {
    case 0:
    case 1:
    case 2: return (size_t)rand_r(seed) % (MAX_PAYLOAD + 1);
    default: return r % 100 < 73 ? (size_t)rand_r(seed) % 8193 : (size_t)rand_r(seed) % 201;
    }
}

struct writer {
    forklog *log;
    int w; /* writer id: proc * THREADS + thread */
    int failures;
};

static void *write_records(void *arg)
{
    struct writer *wr = arg;
    unsigned seed = (unsigned)wr->w * 2654435761u + 1;
    char *buf = malloc(MAX_PAYLOAD + 64);
    if (!buf) {
        wr->failures++;
        return NULL;
    }
    for (int seq = 0; seq < RECORDS; seq++) {
        size_t n = payload_size(&seed);
        int head = snprintf(buf, 64, "w=%d seq=%d len=%zu ", wr->w, seq, n);
        memset(buf + head, payload_char(wr->w, seq), n);
        buf[head + (int)n] = '\0';
        int rc =
            (seq % 2) ? forklog_write(wr->log, buf, (size_t)head + n) : forklog_log(wr->log, FORKLOG_INFO, "%s", buf);
        if (rc != 0)
            wr->failures++;
    }
    free(buf);
    return NULL;
}

/* Checks every record; fails the test at the first bad one. */
static void check_file(const char *path, int json)
{
    size_t len;
    char *buf = th_slurp(path, &len);
    cr_assert_not_null(buf);
    cr_assert(len > 0 && buf[len - 1] == '\n', "the file ends with a whole record");
    int next[PROCS * THREADS] = {0};
    size_t records = 0;
    for (char *line = buf; line < buf + len;) {
        char *end = memchr(line, '\n', (size_t)(buf + len - line));
        cr_assert_not_null(end);
        *end = '\0';
        char *rec = strstr(line, "w=");
        cr_assert_not_null(rec, "record %zu has no writer tag: %.80s", records, line);
        int w, seq, off = 0;
        size_t n;
        cr_assert_eq(sscanf(rec, "w=%d seq=%d len=%zu %n", &w, &seq, &n, &off), 3, "record %zu: %.80s", records, line);
        cr_assert(w >= 0 && w < PROCS * THREADS, "record %zu: writer %d", records, w);
        cr_assert_eq(seq, next[w], "writer %d: record %d where %d was due", w, seq, next[w]);
        next[w]++;
        char *p = rec + off;
        char want = payload_char(w, seq);
        size_t got = strspn(p, (char[]){want, '\0'});
        cr_assert_eq(got, n, "writer %d seq %d: %zu of %zu payload bytes", w, seq, got, n);
        const char *tail = json && seq % 2 == 0 ? "\"}" : "";
        cr_assert_str_eq(p + n, tail, "writer %d seq %d: stray bytes after the payload", w, seq);
        if (seq % 2 == 0)
            cr_assert(line != rec, "a formatted record has its prefix");
        records++;
        line = end + 1;
    }
    cr_assert_eq(records, (size_t)PROCS * THREADS * RECORDS);
    for (int w = 0; w < PROCS * THREADS; w++)
        cr_assert_eq(next[w], RECORDS, "writer %d wrote %d records", w, next[w]);
    free(buf);
}

static void run_stress(const struct forklog_options *opts)
{
    char *dir = th_tmpdir();
    char *path = th_path(dir, "stress.log");
    forklog *log;
    cr_assert_eq(forklog_open(&log, path, opts), 0);
    pid_t pids[PROCS];
    for (int p = 0; p < PROCS; p++) {
        pids[p] = fork();
        cr_assert_neq(pids[p], -1);
        if (pids[p] == 0) {
            struct writer wr[THREADS];
            pthread_t th[THREADS];
            int bad = 0;
            for (int t = 0; t < THREADS; t++) {
                wr[t] = (struct writer){log, p * THREADS + t, 0};
                bad |= pthread_create(&th[t], NULL, write_records, &wr[t]) != 0;
            }
            for (int t = 0; t < THREADS; t++) {
                pthread_join(th[t], NULL);
                bad |= wr[t].failures != 0;
            }
            bad |= forklog_close(log) != 0;
            _exit(bad);
        }
    }
    for (int p = 0; p < PROCS; p++)
        cr_assert_eq(th_wait(pids[p]), 0, "writer process %d failed", p);
    cr_assert_eq(forklog_close(log), 0);
    check_file(path, opts && opts->format == FORKLOG_FORMAT_JSON);
    th_rmdir(dir);
    free(path);
    free(dir);
}

Test(stress, text_direct, .timeout = 240)
{
    run_stress(NULL);
}

Test(stress, json_direct, .timeout = 240)
{
    struct forklog_options o = {.format = FORKLOG_FORMAT_JSON};
    run_stress(&o);
}

Test(stress, text_buffered, .timeout = 240)
{
    struct forklog_options o = {.flags = FORKLOG_BUFFERED, .buffer_size = 64 * 1024};
    run_stress(&o);
}
