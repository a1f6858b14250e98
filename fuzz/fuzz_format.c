/*
 * libFuzzer targets for the record formatter (issue 4, CI): lib/format.c is compiled into the fuzzer directly.
 *
 *   fuzz_format  fl__build(): the fuzz input is the message (and, on request, a string field); text and JSON.
 *                Every record must be exactly one line ending in its only '\n', no longer than the cap the sink
 *                would pass; a text record holds no control byte; a JSON record is one object with string and
 *                number values that a strict RFC 8259 validator (written here, independent of format.c) accepts,
 *                valid UTF-8, whose "msg" decodes back to the message (invalid UTF-8 as U+FFFD byte by byte) up to
 *                the reported cut, and whose "cut" equals it.
 *   fuzz_fields  the same with fields after the message, as the pool's timing records have (-DFUZZ_FIELDS): a
 *                string field made of fuzz bytes, a number and a decimal.
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

/* ---- an independent UTF-8 and JSON checker ----------------------------------------------------------------- */

/* Length of the well-formed UTF-8 sequence at s (Unicode Table 3-7), 0 if there is none. */
static size_t ck_utf8(const unsigned char *s, size_t n)
{
    if (n == 0)
        return 0;
    unsigned c = s[0];
    if (c < 0x80)
        return 1;
    size_t len;
    unsigned lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf)
        len = 2;
    else if (c == 0xe0)
        len = 3, lo = 0xa0;
    else if (c == 0xed)
        len = 3, hi = 0x9f;
    else if ((c >= 0xe1 && c <= 0xec) || c == 0xee || c == 0xef)
        len = 3;
    else if (c == 0xf0)
        len = 4, lo = 0x90;
    else if (c >= 0xf1 && c <= 0xf3)
        len = 4;
    else if (c == 0xf4)
        len = 4, hi = 0x8f;
    else
        return 0;
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    return len;
}

/* What the escaper must produce as JSON for src, decoded: src with every byte that does not start a well-formed
 * sequence replaced by U+FFFD. Returns the length written to out (room: 3 * n). */
static size_t ck_replace(const unsigned char *src, size_t n, unsigned char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        size_t l = ck_utf8(src + i, n - i);
        if (l == 0) {
            memcpy(out + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        } else {
            memcpy(out + o, src + i, l);
            o += l;
            i += l;
        }
    }
    return o;
}

struct ck {
    const unsigned char *s;
    size_t n, i;
};

static int ck_hex4(struct ck *p, unsigned *v)
{
    if (p->n - p->i < 4)
        return 0;
    *v = 0;
    for (int k = 0; k < 4; k++) {
        unsigned char c = p->s[p->i++];
        unsigned d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            d = c - 'A' + 10;
        else
            return 0;
        *v = *v * 16 + d;
    }
    return 1;
}

static size_t ck_put_utf8(unsigned cp, unsigned char *out)
{
    if (cp < 0x80) {
        out[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (unsigned char)(0xc0 | cp >> 6);
        out[1] = (unsigned char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (unsigned char)(0xe0 | cp >> 12);
        out[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3f));
        out[2] = (unsigned char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (unsigned char)(0xf0 | cp >> 18);
    out[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3f));
    out[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3f));
    out[3] = (unsigned char)(0x80 | (cp & 0x3f));
    return 4;
}

/* The body of a JSON string, up to (not including) `end` (a '"', or the end of input when end < 0), decoded into
 * out (room: n bytes) when out is not NULL. RFC 8259 section 7 and valid UTF-8. Returns 1 if valid. */
static int ck_string_body(struct ck *p, int end, unsigned char *out, size_t *outlen)
{
    size_t o = 0;
    for (;;) {
        if (p->i == p->n) {
            if (end < 0)
                break;
            return 0;
        }
        unsigned char c = p->s[p->i];
        if (end >= 0 && c == (unsigned char)end) {
            p->i++;
            break;
        }
        if (c < 0x20)
            return 0;
        if (c == '"' && end < 0)
            return 0; /* an unescaped quote inside a bare string body */
        if (c == '\\') {
            p->i++;
            if (p->i == p->n)
                return 0;
            unsigned char e = p->s[p->i++];
            unsigned char lit;
            switch (e) {
            case '"': lit = '"'; break;
            case '\\': lit = '\\'; break;
            case '/': lit = '/'; break;
            case 'b': lit = '\b'; break;
            case 'f': lit = '\f'; break;
            case 'n': lit = '\n'; break;
            case 'r': lit = '\r'; break;
            case 't': lit = '\t'; break;
            case 'u': {
                unsigned cp;
                if (!ck_hex4(p, &cp))
                    return 0;
                if (cp >= 0xdc00 && cp <= 0xdfff)
                    return 0; /* lone low surrogate */
                if (cp >= 0xd800 && cp <= 0xdbff) {
                    unsigned lo;
                    if (p->n - p->i < 2 || p->s[p->i] != '\\' || p->s[p->i + 1] != 'u')
                        return 0;
                    p->i += 2;
                    if (!ck_hex4(p, &lo) || lo < 0xdc00 || lo > 0xdfff)
                        return 0;
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                }
                unsigned char u[4];
                size_t ul = ck_put_utf8(cp, u);
                if (out)
                    memcpy(out + o, u, ul);
                o += ul;
                continue;
            }
            default: return 0;
            }
            if (out)
                out[o] = lit;
            o++;
            continue;
        }
        size_t l = ck_utf8(p->s + p->i, p->n - p->i);
        if (l == 0)
            return 0;
        if (out)
            memcpy(out + o, p->s + p->i, l);
        o += l;
        p->i += l;
    }
    if (outlen)
        *outlen = o;
    return 1;
}

#ifndef FUZZ_ESCAPE
static int ck_number(struct ck *p, unsigned long long *v)
{
    size_t start = p->i;
    if (p->i < p->n && p->s[p->i] == '-')
        p->i++;
    if (p->i == p->n)
        return 0;
    if (p->s[p->i] == '0')
        p->i++;
    else if (p->s[p->i] >= '1' && p->s[p->i] <= '9')
        while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9')
            p->i++;
    else
        return 0;
    if (p->i < p->n && p->s[p->i] == '.') {
        p->i++;
        size_t d = p->i;
        while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9')
            p->i++;
        if (p->i == d)
            return 0;
    }
    if (p->i < p->n && (p->s[p->i] == 'e' || p->s[p->i] == 'E')) {
        p->i++;
        if (p->i < p->n && (p->s[p->i] == '+' || p->s[p->i] == '-'))
            p->i++;
        size_t d = p->i;
        while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9')
            p->i++;
        if (p->i == d)
            return 0;
    }
    *v = strtoull((const char *)p->s + start, NULL, 10);
    return 1;
}

static void ck_ws(struct ck *p)
{
    while (p->i < p->n && (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' || p->s[p->i] == '\r'))
        p->i++;
}

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
            if (strcmp((char *)key, "msg") == 0) {
                have_msg++;
                free(*msg);
                *msg = malloc(vlen + 1);
                struct ck vp = {rec, p.n, vstart};
                ck_string_body(&vp, '"', *msg, msglen);
            }
        } else {
            unsigned long long v;
            if (!ck_number(&p, &v))
                FAIL("JSON value of %s is neither a string nor a number", key);
            if (strcmp((char *)key, "cut") == 0)
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
    if (memcmp(rec, "{\"ts\":\"", 7) != 0 || memcmp(rec + 34, "\",\"level\":\"", 11) != 0)
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

    /* The message, and (with_fields) a string field made of the bytes after `split` up to a NUL. */
    size_t msglen = n;
    char *fstr = NULL;
    struct fl__field fields[3];
    size_t nfields = 0;
    if (with_fields) {
        size_t at = n ? split % (n + 1) : 0;
        msglen = at;
        size_t flen = strnlen((const char *)d + at, n - at);
        fstr = malloc(flen + 1);
        if (!fstr) {
            free(log);
            return 0;
        }
        memcpy(fstr, d + at, flen);
        fstr[flen] = '\0';
        fields[nfields++] = (struct fl__field){.key = "label", .type = FL__F_STR, .s = fstr};
        fields[nfields++] = (struct fl__field){.key = "task", .type = FL__F_UINT, .u = (unsigned long long)t};
        fields[nfields++] = (struct fl__field){.key = "duration_s", .type = FL__F_DBL, .d = (double)split / 7.0};
    }
    char *msg = malloc(msglen ? msglen : 1); /* exactly sized: ASan sees any read past it */
    if (!msg) {
        free(fstr);
        free(log);
        return 0;
    }
    memcpy(msg, d, msglen);
    size_t msg_total = msglen + (pretend_longer ? split : 0); /* the caller had more than it passes */

    /* The cap exactly as fl__emit computes it. */
    size_t cap = fl__build_bound(msglen, fields, nfields);
    if (cap > max_record)
        cap = max_record;
    char *out = malloc(cap);
    if (!out) {
        free(msg);
        free(fstr);
        free(log);
        return 0;
    }
    size_t cut = 0;
    size_t len = fl__build(log, level, &now, msg, msglen, msg_total, fields, nfields, out, cap, &cut);
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
        ck_timestamp(rec + 7);
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
    free(out);
    free(msg);
    free(fstr);
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
