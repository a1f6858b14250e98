/* SPDX-License-Identifier: MIT */
/* Self-checking records for the crash, rotation and hostile-condition tests.
 *
 * A record's message is `K id=I seq=S t=T n=N |` followed by N payload bytes, K being 'R' (raw, forklog_write)
 * or 'L' (forklog_log, text format: the line then starts with the `TS LEVEL pid=P ` prefix). The payload is a
 * slice of a fixed printable pattern chosen by (id, seq), so the reader can tell a whole record from a torn,
 * glued or misplaced one without knowing anything else. T is a free tag (the reopen tests store in it how many
 * reopens had returned when the call started). An empty line is a 0-byte raw record.
 *
 * Writers run in forked children: nothing here calls cr_assert on the writing side. The reading side (rc_scan)
 * runs in the test process and asserts.
 */
#ifndef FORKLOG_TEST_RECORDS_H
#define FORKLOG_TEST_RECORDS_H

#include "helpers.h"

#include <forklog.h>
#include <stdint.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>

#define RC_PATTERN_SPAN 4096u
#define RC_MAX_PAYLOAD  ((size_t)1 << 20)
#define RC_HEAD_MAX     96

/* First call of a writer child: it dies with the test process, so that a test that fails or times out never
 * leaves writers running. */
static inline void rc_child(void)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
}

/* The pattern: RC_MAX_PAYLOAD + RC_PATTERN_SPAN printable bytes, no '\n', never a control byte. */
static char *rc_pattern;

static inline void rc_init(void)
{
    if (rc_pattern)
        return;
    size_t n = RC_MAX_PAYLOAD + RC_PATTERN_SPAN;
    rc_pattern = malloc(n);
    if (!rc_pattern)
        abort();
    uint32_t x = 2463534242u;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        rc_pattern[i] = (char)('!' + x % 94); /* '!' .. '~' */
    }
}

static inline uint32_t rc_hash(unsigned id, unsigned seq)
{
    uint32_t h = id * 2654435761u ^ (seq + 0x9e3779b9u) * 2246822519u;
    h ^= h >> 15;
    return h * 2654435761u;
}

static inline const char *rc_payload(unsigned id, unsigned seq)
{
    return rc_pattern + rc_hash(id, seq) % RC_PATTERN_SPAN;
}

/* Builds the message of record (id, seq) with n payload bytes into buf (RC_HEAD_MAX + n bytes). Returns its
 * length (no newline). */
static inline size_t rc_build(char *buf, char kind, unsigned id, unsigned seq, unsigned tag, size_t n)
{
    int h = snprintf(buf, RC_HEAD_MAX, "%c id=%u seq=%u t=%u n=%zu |", kind, id, seq, tag, n);
    memcpy(buf + h, rc_payload(id, seq), n);
    return (size_t)h + n;
}

/* A payload size: mostly small, some KiB, a few up to `max` bytes. */
static inline size_t rc_size(unsigned *seed, size_t max)
{
    unsigned r = (unsigned)rand_r(seed) % 1000;
    size_t n;
    if (r < 15)
        n = (size_t)rand_r(seed) % (max + 1);
    else if (r < 200)
        n = (size_t)rand_r(seed) % 16385;
    else
        n = (size_t)rand_r(seed) % 301;
    return n > max ? max : n;
}

/* Writes record (id, seq) raw ('R') or formatted ('L'). Returns forklog's result. For 'L' the message must fit
 * max_record with the prefix (the callers keep it under 64 KiB). */
static inline int rc_write(forklog *log, char *buf, char kind, unsigned id, unsigned seq, unsigned tag, size_t n)
{
    size_t len = rc_build(buf, kind, id, seq, tag, n);
    if (kind == 'R')
        return forklog_write(log, buf, len);
    return forklog_log(log, FORKLOG_INFO, "%.*s", (int)len, buf);
}

/* What the reader learned. seen[id][seq] counts copies of each record; file[id][seq] is the index (in the
 * caller's list of files) of the last copy; tag likewise. */
struct rc_seen {
    unsigned ids, seqs; /* bounds of the tables */
    unsigned char *count;
    unsigned short *file;
    unsigned *tag;
    size_t records, empty;
};

static inline void rc_seen_init(struct rc_seen *s, unsigned ids, unsigned seqs)
{
    s->ids = ids;
    s->seqs = seqs;
    s->count = calloc((size_t)ids * seqs, 1);
    s->file = calloc((size_t)ids * seqs, sizeof *s->file);
    s->tag = calloc((size_t)ids * seqs, sizeof *s->tag);
    cr_assert(s->count && s->file && s->tag);
    s->records = s->empty = 0;
}

static inline void rc_seen_free(struct rc_seen *s)
{
    free(s->count);
    free(s->file);
    free(s->tag);
}

static inline unsigned rc_count(const struct rc_seen *s, unsigned id, unsigned seq)
{
    return s->count[(size_t)id * s->seqs + seq];
}

/* Reads one file and checks that it holds only whole records: every line parses, has exactly its payload, and
 * the file ends with a newline. Adds what it finds to *s under index `file_index`. Returns the file size, or
 * -1 when the file does not exist. */
static inline long long rc_scan(struct rc_seen *s, const char *path, unsigned file_index)
{
    rc_init();
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        cr_assert_eq(errno, ENOENT, "%s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    cr_assert_eq(fstat(fd, &st), 0);
    size_t len = (size_t)st.st_size;
    if (len == 0) {
        close(fd);
        return 0;
    }
    char *buf = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    cr_assert_neq(buf, MAP_FAILED);
    close(fd);
    cr_assert_eq(buf[len - 1], '\n', "%s ends with a fragment (size %zu): no whole record at its end", path, len);
    size_t lineno = 0;
    for (char *line = buf; line < buf + len; lineno++) {
        char *end = memchr(line, '\n', (size_t)(buf + len - line));
        size_t ll = (size_t)(end - line);
        if (ll == 0) {
            s->empty++;
            line = end + 1;
            continue;
        }
        char *rec = line;
        if (line[0] != 'R') {
            /* A formatted record: `YYYY-MM-DDTHH:MM:SS.uuuuuuZ INFO pid=N L id=...`. */
            cr_assert(ll > 28 && line[26] == 'Z' && memcmp(line + 27, " INFO pid=", 10) == 0,
                      "%s line %zu at offset %zu is not a record: %.60s", path, lineno, (size_t)(line - buf), line);
            rec = memchr(line + 37, ' ', ll - 37);
            cr_assert_not_null(rec, "%s line %zu: no message", path, lineno);
            rec++;
            cr_assert_eq(*rec, 'L', "%s line %zu: formatted record without L: %.60s", path, lineno, line);
        }
        char head[RC_HEAD_MAX + 1];
        size_t hl = (size_t)(end - rec) < RC_HEAD_MAX ? (size_t)(end - rec) : RC_HEAD_MAX;
        memcpy(head, rec, hl);
        head[hl] = '\0';
        unsigned id, seq, tag;
        size_t n;
        int off = 0;
        char kind;
        cr_assert_eq(sscanf(head, "%c id=%u seq=%u t=%u n=%zu |%n", &kind, &id, &seq, &tag, &n, &off), 5,
                     "%s line %zu at offset %zu: bad header: %.60s", path, lineno, (size_t)(line - buf), line);
        cr_assert(off > 0, "%s line %zu: header without '|': %.60s", path, lineno, line);
        cr_assert(id < s->ids && seq < s->seqs, "%s line %zu: id %u seq %u out of range", path, lineno, id, seq);
        cr_assert_eq((size_t)(end - rec), (size_t)off + n,
                     "%s line %zu (id %u seq %u): %zu payload bytes where %zu were written: torn or glued record", path,
                     lineno, id, seq, (size_t)(end - rec) - (size_t)off, n);
        cr_assert(memcmp(rec + off, rc_payload(id, seq), n) == 0, "%s line %zu (id %u seq %u): payload differs", path,
                  lineno, id, seq);
        size_t k = (size_t)id * s->seqs + seq;
        if (s->count[k] < 255)
            s->count[k]++;
        s->file[k] = (unsigned short)file_index;
        s->tag[k] = tag;
        s->records++;
        line = end + 1;
    }
    munmap(buf, len);
    return (long long)len;
}

/* A thread that flushes a log (its result in rc): a flush that waits in write(2) while the test acts. */
struct flusher {
    forklog *log;
    int rc;
};

static inline void *flush_run(void *arg)
{
    struct flusher *f = arg;
    f->rc = forklog_flush(f->log);
    return NULL;
}

/* A reader of a FIFO (or any stream) on a thread of its own: buf takes `want` bytes at most, `got` of them read. */
struct short_reader {
    int fd;
    char *buf;
    size_t want, got;
};

/* A reader of a FIFO that reads into buf (want bytes at most) to the end of the stream. */
static inline void *read_to_the_end(void *arg)
{
    struct short_reader *r = arg;
    while (r->got < r->want) {
        ssize_t n = read(r->fd, r->buf + r->got, r->want - r->got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        r->got += (size_t)n;
    }
    return NULL;
}

#endif
