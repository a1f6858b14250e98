/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer targets for the record formatter (run by CI): lib/format.c is compiled into the fuzzer directly.
 *
 *   fuzz_format  fl__build(): the fuzz input is the message (and, on request, a string field); text and JSON.
 *                Every record must be exactly one line ending in its only '\n', no longer than the cap the sink
 *                would pass; a text record holds no control byte; a JSON record is one object with string and
 *                number values that a strict RFC 8259 validator (written here, independent of format.c) accepts,
 *                valid UTF-8, whose "msg" decodes back to the message (invalid UTF-8 as U+FFFD byte by byte) up to
 *                the reported cut, and whose "cut" equals it.
 *   fuzz_fields  the same with fields after the message, as the pool's timing records have (-DFUZZ_FIELDS): a
 *                string field made of fuzz bytes, a number and a decimal, some in the handle's context, with keys
 *                that repeat (built-in ones and their `fields.` names too: each key once in a JSON record); and
 *                the fields fast path (fl__tail_fast), whenever it takes a record, writes the same bytes as
 *                fl__build.
 *   fuzz_escape  fl__escape() (built with -DFUZZ_ESCAPE): never past cap, progress whenever one escape fits, the
 *                whole input when 6 bytes per input byte fit; text output has no control byte; JSON output is a
 *                valid string body that decodes back to the consumed input.
 *
 * A violated property calls abort(), which libFuzzer reports as a crash with the input that caused it.
 * Build: cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DFORKLOG_FUZZ=ON && cmake --build build-fuzz
 * Run:   build-fuzz/fuzz/fuzz_format -max_total_time=30
 */
#include "internal.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FAIL(...)                                                                                                      \
    do {                                                                                                               \
        fprintf(stderr, "fuzz_format: " __VA_ARGS__);                                                                  \
        fputc('\n', stderr);                                                                                           \
        abort();                                                                                                       \
    } while (0)

#include "json_check.h"

#ifndef FUZZ_ESCAPE
/* The message's and the cut marker's keys (the key set). */
static const char *msg_key = "msg", *cut_key = "cut";

/* A strict check of one JSON Lines record: an object whose values are strings or numbers, then '\n', then
 * nothing. Returns the decoded "msg" (malloc'd, into *msg and *msglen) and the "cut" number (0 if absent). */
static void ck_json_record(const unsigned char *rec, size_t len, unsigned char **msg, size_t *msglen,
                           unsigned long long *cut)
{
    if (len == 0 || rec[len - 1] != '\n')
        FAIL("JSON record does not end with a newline");
    struct ck p = {rec, len - 1, 0};
    *msg = NULL;
    *msglen = 0;
    *cut = 0;
    int nkeys = 0, have_msg = 0;
    ck_ws(&p);
    if (p.i == p.n || p.s[p.i++] != '{')
        FAIL("JSON record does not start an object");
    ck_ws(&p);
    if (p.i < p.n && p.s[p.i] == '}')
        FAIL("empty JSON object");
    for (;;) {
        ck_ws(&p);
        if (p.i == p.n || p.s[p.i++] != '"')
            FAIL("JSON key is not a string (at %zu)", p.i);
        unsigned char key[64];
        size_t klen = 0;
        size_t kstart = p.i;
        if (!ck_string_body(&p, '"', NULL, &klen) || klen >= sizeof key)
            FAIL("invalid JSON key at %zu", kstart);
        struct ck kp = {rec, p.n, kstart};
        ck_string_body(&kp, '"', key, &klen);
        key[klen] = '\0';
        ck_ws(&p);
        if (p.i == p.n || p.s[p.i++] != ':')
            FAIL("no ':' after JSON key %s", key);
        ck_ws(&p);
        if (p.i == p.n)
            FAIL("JSON value missing");
        if (p.s[p.i] == '"') {
            p.i++;
            size_t vstart = p.i, vlen;
            if (!ck_string_body(&p, '"', NULL, &vlen))
                FAIL("invalid JSON string value for key %s at %zu", key, vstart);
            if (strcmp((char *)key, msg_key) == 0) {
                have_msg++;
                free(*msg);
                *msg = malloc(vlen + 1);
                struct ck vp = {rec, p.n, vstart};
                ck_string_body(&vp, '"', *msg, msglen);
            }
        } else if (p.s[p.i] == 't' || p.s[p.i] == 'f' || p.s[p.i] == 'n') {
            const char *lit = p.s[p.i] == 't' ? "true" : p.s[p.i] == 'f' ? "false" : "null";
            size_t ll = strlen(lit);
            if (p.n - p.i < ll || memcmp(p.s + p.i, lit, ll) != 0)
                FAIL("JSON value of %s is not a JSON value", key);
            p.i += ll;
        } else {
            unsigned long long v;
            if (!ck_number(&p, &v))
                FAIL("JSON value of %s is neither a string nor a number", key);
            if (strcmp((char *)key, cut_key) == 0)
                *cut = v;
        }
        nkeys++;
        ck_ws(&p);
        if (p.i == p.n)
            FAIL("unterminated JSON object");
        unsigned char c = p.s[p.i++];
        if (c == '}')
            break;
        if (c != ',')
            FAIL("expected ',' or '}' at %zu", p.i - 1);
    }
    ck_ws(&p);
    if (p.i != p.n)
        FAIL("bytes after the JSON object");
    if (have_msg != 1 || nkeys < 4)
        FAIL("JSON record without exactly one msg, or without ts/level/pid");
    if (strcmp(msg_key, "msg") == 0 &&
        (memcmp(rec, "{\"ts\":\"", 7) != 0 || memcmp(rec + 34, "\",\"level\":\"", 11) != 0))
        FAIL("JSON record does not start with ts and level");
}

static void ck_timestamp(const unsigned char *t)
{
    static const char shape[] = "dddd-dd-ddTdd:dd:dd.ddddddZ";
    for (int i = 0; i < 27; i++)
        if (shape[i] == 'd' ? !(t[i] >= '0' && t[i] <= '9') : t[i] != (unsigned char)shape[i])
            FAIL("timestamp byte %d is 0x%02x", i, t[i]);
}

#endif

/* ---- the targets ----------------------------------------------------------------------------------------- */

static uint64_t take(const uint8_t **d, size_t *n, size_t bytes)
{
    uint64_t v = 0;
    for (size_t i = 0; i<bytes && * n> 0; i++) {
        v = v << 8 | **d;
        (*d)++;
        (*n)--;
    }
    return v;
}

#ifndef FUZZ_ESCAPE

/* Input: flags (1 byte), max_record selector (2), time (5), field split (2), then the message bytes. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *d = data;
    size_t n = size;
    unsigned flags = (unsigned)take(&d, &n, 1);
    size_t max_record = 256 + (size_t)take(&d, &n, 2);
    struct timespec now;
    uint64_t t = take(&d, &n, 5);
    now.tv_sec = (time_t)(t >> 4) - ((time_t)1 << 34); /* about year 1425 .. 3600: clamping included */
    now.tv_nsec = (long)(t % 1000) * 999999;
    size_t split = (size_t)take(&d, &n, 2);

    const int json = flags & 1;
    const enum forklog_level level = (enum forklog_level)(1 + (flags >> 1 & 3));
#ifdef FUZZ_FIELDS
    const int with_fields = 1;
#else
    const int with_fields = 0;
#endif
    const int pretend_longer = flags >> 4 & 1;

    forklog *log = calloc(1, sizeof *log + 1);
    if (!log)
        return 0;
    log->format = json ? FORKLOG_FORMAT_JSON : FORKLOG_FORMAT_TEXT;
    log->level = FORKLOG_DEBUG;
    log->max_record = max_record;
    log->keys = with_fields && (flags & 0x20) ? FORKLOG_KEYS_ECS : FORKLOG_KEYS_SHORT;
    log->flags = with_fields && (flags & 0x40) ? FORKLOG_TID : 0;
    msg_key = json && log->keys == FORKLOG_KEYS_ECS ? "message" : "msg";
    cut_key = json && log->keys == FORKLOG_KEYS_ECS ? "forklog.cut" : "cut";

    /* The message, and (with_fields) up to 8 typed fields made of the bytes after `split`: a type, a key out of a
     * list that repeats keys and holds built-in ones, and a value (a string of fuzz bytes up to a NUL, or 8 bytes
     * of raw bits: NaN, infinities, INT_MIN, any time). flags bit 5: ECS keys, bit 6: thread id, bit 7: a
     * location. */
    size_t msglen = n;
    char *fstr[8] = {0};
    struct forklog_field fields[8];
    size_t nfields = 0;
    struct fl__loc loc = {"src/some file.c", "main", 42}, *locp = NULL;
    if (with_fields) {
        static const char *const keys[] = {"a",
                                           "b",
                                           "msg",
                                           "ts",
                                           "fields.a",
                                           "k.x-1",
                                           "a",
                                           "message",
                                           "@timestamp",
                                           "tid",
                                           "cut",
                                           "forklog.cut",
                                           "Z_9",
                                           "fields.ts",
                                           "fields.msg",
                                           "fields.message",
                                           "fields.@timestamp",
                                           "fields.cut"};
        size_t at = n ? split % (n + 1) : 0;
        msglen = at;
        const uint8_t *fd = d + at;
        size_t fn = n - at;
        while (fn > 0 && nfields < 8) {
            unsigned type = (unsigned)take(&fd, &fn, 1);
            struct forklog_field *f = &fields[nfields];
            f->key = keys[(type >> 3) % (sizeof keys / sizeof keys[0])];
            f->type = (enum forklog_field_type)(1 + type % 7);
            if (f->type == FORKLOG_FIELD_STR) {
                size_t flen = strnlen((const char *)fd, fn);
                if (type & 0x80 && flen == 0) {
                    f->v.s = NULL;
                } else {
                    if (!(fstr[nfields] = malloc(flen + 1)))
                        abort();
                    memcpy(fstr[nfields], fd, flen);
                    fstr[nfields][flen] = '\0';
                    f->v.s = fstr[nfields];
                }
                fd += flen < fn ? flen + 1 : flen;
                fn -= flen < fn ? flen + 1 : flen;
            } else {
                uint64_t v = take(&fd, &fn, 8);
                switch (f->type) {
                case FORKLOG_FIELD_INT: f->v.i = (long long)v; break;
                case FORKLOG_FIELD_UINT: f->v.u = v; break;
                case FORKLOG_FIELD_DBL: memcpy(&f->v.d, &v, sizeof v); break;
                case FORKLOG_FIELD_BOOL: f->v.b = (int)(v & 1); break;
                case FORKLOG_FIELD_DUR: f->v.ns = (long long)v; break;
                default:
                    f->v.t.sec = (long long)(v >> 20) - ((long long)1 << 42);
                    f->v.t.nsec = (long)(v & 0xfffff) * 1999 - 5;
                    break;
                }
            }
            nfields++;
        }
        if (flags & 0x80)
            locp = &loc;
    }
    /* flags bit 3 (with fields): the first three fields are the handle's context instead (keys and types valid, as
     * forklog_context_add makes sure). */
    struct fl__ctx *ctx = NULL;
    if (with_fields && (flags & 0x08) && nfields) {
        size_t nc = nfields < 3 ? nfields : 3;
        if (!(ctx = malloc(sizeof *ctx + nc * sizeof ctx->f[0])))
            abort();
        ctx->prev = NULL;
        ctx->n = nc;
        memcpy(ctx->f, fields, nc * sizeof fields[0]);
        memmove(fields, fields + nc, (nfields - nc) * sizeof fields[0]);
        nfields -= nc;
        atomic_store(&log->ctx, ctx);
    }
    char *msg = malloc(msglen ? msglen : 1); /* exactly sized: ASan sees any read past it */
    if (!msg) {
        abort();
    }
    memcpy(msg, d, msglen);
    size_t msg_total = msglen + (pretend_longer ? split : 0); /* the caller had more than it passes */

    /* The cap exactly as fl__emit computes it. */
    size_t cap = fl__build_bound(log, msglen, locp, atomic_load(&(log)->ctx), fields, nfields);
    if (cap > max_record)
        cap = max_record;
    char *out = malloc(cap);
    if (!out)
        abort();
    size_t cut = 0;
    size_t len = fl__build(log, level, &now, locp, atomic_load(&(log)->ctx), msg, msglen, msg_total, fields, nfields,
                           out, cap, &cut, NULL);
    const unsigned char *rec = (const unsigned char *)out;

    if (len == 0 || len > cap)
        FAIL("record length %zu, cap %zu", len, cap);
    if (rec[len - 1] != '\n')
        FAIL("record does not end with a newline");
    if (memchr(rec, '\n', len - 1))
        FAIL("record holds more than one line");
    if (cut > msg_total)
        FAIL("cut %zu of a %zu-byte message", cut, msg_total);
    if (msg_total > msglen && cut < msg_total - msglen)
        FAIL("bytes the caller never passed are not counted as cut");
    size_t used = msg_total - cut; /* message bytes kept */

    if (json) {
        if (log->keys == FORKLOG_KEYS_SHORT)
            ck_timestamp(rec + 7);
        /* Strict JSON, and every key at most once. */
        struct ck_member mem[32];
        const char *why = NULL;
        int nm = ck_json_flat(rec, len, mem, 32, &why);
        if (nm < 0)
            FAIL("invalid JSON record: %s", why);
        for (int a = 0; a < nm && a < 32; a++)
            for (int b = a + 1; b < nm && b < 32; b++)
                if (strcmp(mem[a].key, mem[b].key) == 0)
                    FAIL("key %s twice in one record", mem[a].key);
        ck_members_free(mem, nm < 32 ? nm : 32);
        unsigned char *dmsg;
        size_t dlen;
        unsigned long long jcut;
        ck_json_record(rec, len, &dmsg, &dlen, &jcut);
        if (jcut != cut)
            FAIL("\"cut\":%llu but fl__build reported %zu", jcut, cut);
        unsigned char *want = malloc(3 * used + 1);
        if (!want)
            abort();
        size_t wlen = ck_replace((const unsigned char *)msg, used, want);
        if (wlen != dlen || memcmp(want, dmsg, dlen) != 0)
            FAIL("msg does not decode to the first %zu message bytes", used);
        free(want);
        free(dmsg);
    } else {
        ck_timestamp(rec);
        for (size_t i = 0; i + 1 < len; i++)
            if (rec[i] < 0x20 || rec[i] == 0x7f)
                FAIL("text record holds control byte 0x%02x at %zu", rec[i], i);
        if (cut) {
            char marker[64];
            snprintf(marker, sizeof marker, " [forklog: %zu bytes cut]", cut);
            size_t ml = strlen(marker), at = 0;
            while (at + ml <= len && memcmp(rec + at, marker, ml) != 0)
                at++;
            if (at + ml > len)
                FAIL("cut %zu but no marker saying so", cut);
        }
    }
    if (with_fields && msg_total == msglen) {
        /* The fast path, as forklog_log_fields() takes it: when it takes the record, the same bytes. */
        char fast[4096];
        size_t fcap = max_record < sizeof fast ? max_record : sizeof fast;
        size_t p = fl__prefix(log, level, &now, fast);
        const int tail = locp || ctx || nfields;
        long got = 0;
        if (msglen < fcap - p && !fl__needs_escape(json, msg, msglen) &&
            (json || !tail || !msglen || (msg[0] != '"' && !memchr(msg, '=', msglen)))) {
            memcpy(fast + p, msg, msglen);
            size_t o = p + msglen;
            if (json)
                fast[o++] = '"';
            got = fl__tail_fast(log, locp, ctx, fields, nfields, fast, o, fcap);
        }
        if (got < 0)
            FAIL("the fast path refused valid fields (%ld)", got);
        if (got > 0 && ((size_t)got != len || memcmp(fast, out, len) != 0))
            FAIL("fast path \"%.*s\", fl__build \"%.*s\"", (int)got, fast, (int)len, out);
    }
    free(out);
    free(msg);
    for (int k = 0; k < 8; k++)
        free(fstr[k]);
    free(ctx);
    free(log);
    return 0;
}

#else /* FUZZ_ESCAPE */

/* Input: flags (1 byte), cap (2), then the source bytes. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *d = data;
    size_t n = size;
    const int json = (int)(take(&d, &n, 1) & 1);
    size_t cap = (size_t)take(&d, &n, 2) % (6 * n + 8);
    char *src = malloc(n ? n : 1);
    char *dst = malloc(cap ? cap : 1);
    if (!src || !dst)
        abort();
    memcpy(src, d, n);
    size_t used = (size_t)-1;
    size_t o = fl__escape(json, dst, cap, src, n, &used);
    if (o > cap)
        FAIL("wrote %zu bytes into %zu", o, cap);
    if (used > n)
        FAIL("consumed %zu of %zu bytes", used, n);
    if (n > 0 && cap >= 6 && used == 0)
        FAIL("no progress with room for any escape");
    if (cap >= 6 * n && used != n)
        FAIL("stopped at %zu of %zu with room for everything", used, n);
    const unsigned char *u = (const unsigned char *)dst;
    if (json) {
        struct ck p = {u, o, 0};
        unsigned char *dec = malloc(o + 1);
        size_t dlen;
        if (!dec || !ck_string_body(&p, -1, dec, &dlen))
            FAIL("not a valid JSON string body");
        unsigned char *want = malloc(3 * used + 1);
        if (!want)
            abort();
        size_t wlen = ck_replace((const unsigned char *)src, used, want);
        if (wlen != dlen || memcmp(want, dec, dlen) != 0)
            FAIL("JSON escape does not decode to its input");
        free(want);
        free(dec);
    } else {
        for (size_t i = 0; i < o; i++)
            if (u[i] < 0x20 || u[i] == 0x7f)
                FAIL("text escape left control byte 0x%02x", u[i]);
    }
    free(src);
    free(dst);
    return 0;
}

#endif
