/* SPDX-License-Identifier: MIT */
/* A reader of one forklog record, written from docs/design.md ("Records", "The grammar") and docs/api.md alone,
 * not from lib/format.c: it parses a text or JSON line per the documented grammar and compares every value with
 * what the caller gave. test_grammar.c drives it. */
#ifndef FORKLOG_TEST_GRAMMAR_H
#define FORKLOG_TEST_GRAMMAR_H

#include <forklog.h>

#include <ctype.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- what a record should hold ---------------------------------------------------------------------------- */

/* Field types whose exact value the caller cannot know (a pool task's cost and start): shape only. */
#define GR_ANY_DUR  100
#define GR_ANY_TIME 101

struct gr_field {
    char key[80]; /* as written: "fields." added for a built-in name */
    int type;     /* enum forklog_field_type, or GR_ANY_* */
    char *s;      /* STR: a copy (NULL: a NULL string) */
    size_t slen;
    long long i;
    unsigned long long u;
    double d;
    int b;
    long long ns;
    long long sec;
    long nsec;
};

struct gr_expect {
    bool json, ecs, tid;
    const char *app; /* NULL: none */
    int level;
    const char *msg; /* the whole message as given (before any cut) */
    size_t msglen;
    bool has_fields_after; /* location, context or fields follow: decides text quoting */
    bool loc;
    const char *file;
    int line;
    const char *func;
    struct gr_field *fields; /* merged: context then call, one per key, last value at the place of the last */
    size_t nfields;
    long long ret; /* the call's return: > 0 bytes cut */
    size_t max_record;
};

/* ---- helpers ------------------------------------------------------------------------------------------------ */

struct gr_buf {
    char *p;
    size_t n, cap;
};

/* Not inlined: gcc -O3 then sees a length of SIZE_MAX down a path no call takes (*i - st with *i < st) and fails
 * the -Werror build (stringop-overflow). */
__attribute__((noinline)) static void gr_put(struct gr_buf *b, const void *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        b->cap = (b->n + n + 1) * 2 + 64;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static inline void gr_putc(struct gr_buf *b, char c)
{
    gr_put(b, &c, 1);
}

static inline void gr_putf(struct gr_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline void gr_putf(struct gr_buf *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0)
        gr_put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* The documented built-in keys: text uses the short names; JSON the key set's. */
static const char *const gr_short_keys[] = {"ts", "level", "pid", "tid", "app", "msg", "file", "line", "func", "cut"};
static const char *const gr_ecs_keys[] = {
    "@timestamp",          "log.level",  "process.pid",          "process.thread.id",
    "service.name",        "message",    "log.origin.file.name", "log.origin.file.line",
    "log.origin.function", "forklog.cut"};

/* The record's own names of both key sets, one by one (i < GR_BUILTIN_KEYS): keys that tests try as field keys. */
#define GR_BUILTIN_KEYS 20
static inline const char *gr_builtin_key(size_t i)
{
    return i < 10 ? gr_short_keys[i] : gr_ecs_keys[i - 10];
}

/* The key as written (docs/design.md "Keys"). */
static inline void gr_written_key(char *out, size_t outsz, const char *key, bool json, bool ecs)
{
    const char *const *set = json && ecs ? gr_ecs_keys : gr_short_keys;
    const size_t kl = strlen(key);
    for (int i = 0; i < 10; i++) {
        const size_t bl = strlen(set[i]);
        /* The ECS keys also take the keys on a name's path (an object there) and below it (a value there). */
        const bool path = json && ecs &&
                          ((kl < bl && set[i][kl] == '.' && strncmp(set[i], key, kl) == 0) ||
                           (kl > bl && key[bl] == '.' && strncmp(key, set[i], bl) == 0));
        if (strcmp(key, set[i]) == 0 || path) {
            snprintf(out, outsz, "fields.%s", key);
            return;
        }
    }
    snprintf(out, outsz, "%s", key);
}

/* The field a reader must find for f, written with `json` and `ecs` (its string copied: free it). */
static inline struct gr_field gr_expected(const struct forklog_field *f, bool json, bool ecs)
{
    struct gr_field g;
    memset(&g, 0, sizeof g);
    gr_written_key(g.key, sizeof g.key, f->key, json, ecs);
    g.type = f->type;
    switch (f->type) {
    case FORKLOG_FIELD_STR:
        g.s = f->v.s ? strdup(f->v.s) : NULL;
        g.slen = f->v.s ? strlen(f->v.s) : 0;
        break;
    case FORKLOG_FIELD_INT: g.i = f->v.i; break;
    case FORKLOG_FIELD_UINT: g.u = f->v.u; break;
    case FORKLOG_FIELD_DBL: g.d = f->v.d; break;
    case FORKLOG_FIELD_BOOL: g.b = f->v.b != 0; break;
    case FORKLOG_FIELD_DUR: g.ns = f->v.ns; break;
    case FORKLOG_FIELD_TIME: g.sec = f->v.t.sec, g.nsec = f->v.t.nsec; break;
    }
    return g;
}

/* Appends g to list, removing an earlier field with the same written key (the last wins, at its place). */
static inline void gr_merge(struct gr_field *list, size_t *n, struct gr_field g)
{
    for (size_t i = 0; i < *n; i++)
        if (strcmp(list[i].key, g.key) == 0) {
            free(list[i].s);
            memmove(&list[i], &list[i + 1], (*n - i - 1) * sizeof *list);
            (*n)--;
            break;
        }
    list[(*n)++] = g;
}

/* Length of the valid UTF-8 sequence at s (RFC 3629: no overlong form, no surrogate, nothing past U+10FFFF), or
 * 0 when the bytes there are not one. */
static inline size_t gr_utf8_len(const unsigned char *s, size_t n)
{
    if (n == 0)
        return 0;
    unsigned c = s[0];
    if (c < 0x80)
        return 1;
    size_t len;
    unsigned cp;
    if (c >= 0xc2 && c <= 0xdf)
        len = 2, cp = c & 0x1f;
    else if (c >= 0xe0 && c <= 0xef)
        len = 3, cp = c & 0x0f;
    else if (c >= 0xf0 && c <= 0xf4)
        len = 4, cp = c & 0x07;
    else
        return 0;
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

/* The input with every byte that is not part of valid UTF-8 replaced by U+FFFD (docs: "byte by byte"). */
static inline void gr_fffd(struct gr_buf *b, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    gr_put(b, "", 0);
    for (size_t i = 0; i < n;) {
        size_t l = gr_utf8_len(u + i, n - i);
        if (l == 0) {
            gr_put(b, "\xef\xbf\xbd", 3);
            i++;
        } else {
            gr_put(b, s + i, l);
            i += l;
        }
    }
}

static inline bool gr_ctrl(unsigned char c)
{
    return c < 0x20 || c == 0x7f;
}

/* Control bytes of a bare text message escaped, everything else as is. */
static inline void gr_esc_ctrl(struct gr_buf *b, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n')
            gr_put(b, "\\n", 2);
        else if (c == '\r')
            gr_put(b, "\\r", 2);
        else if (c == '\t')
            gr_put(b, "\\t", 2);
        else if (gr_ctrl(c))
            gr_putf(b, "\\x%02x", c);
        else
            gr_putc(b, (char)c);
    }
}

/* The timestamp of a time, as documented: UTC, microseconds (truncated), years clamped to 0000..9999. */
static inline void gr_timestamp(char out[28], long long sec, long nsec)
{
    /* nsec outside 0..999999999 "is normalised". */
    long long carry = nsec / 1000000000L;
    nsec %= 1000000000L;
    if (nsec < 0)
        nsec += 1000000000L, carry--;
    if (__builtin_add_overflow(sec, carry, &sec))
        sec = carry > 0 ? LLONG_MAX : LLONG_MIN; /* past either end: clamped below */
    /* 0000-01-01 is day -719528 from the epoch; 10000-01-01 is day 2932897. */
    const long long lo = -719528LL * 86400, hi = 2932897LL * 86400;
    if (sec < lo) {
        strcpy(out, "0000-01-01T00:00:00.000000Z");
        return;
    }
    if (sec >= hi) {
        strcpy(out, "9999-12-31T23:59:59.999999Z");
        return;
    }
    long long days = sec >= 0 ? sec / 86400 : -((-sec + 86399) / 86400);
    long long rem = sec - days * 86400;
    /* Howard Hinnant's civil_from_days. */
    long long z = days + 719468;
    long long era = (z >= 0 ? z : z - 146096) / 146097;
    long long doe = z - era * 146097;
    long long yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    long long y = yoe + era * 400;
    long long doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    long long mp = (5 * doy + 2) / 153;
    long long d = doy - (153 * mp + 2) / 5 + 1;
    long long m = mp < 10 ? mp + 3 : mp - 9;
    y += m <= 2;
    char tmp[96];
    snprintf(tmp, sizeof tmp, "%04lld-%02lld-%02lldT%02lld:%02lld:%02lld.%06ldZ", y, m, d, rem / 3600, rem / 60 % 60,
             rem % 60, nsec / 1000);
    memcpy(out, tmp, 27);
    out[27] = 0;
}

/* Seconds of a duration: the nanoseconds as a fraction without trailing zeros. */
static inline void gr_dur(char out[40], long long ns)
{
    unsigned long long a = ns < 0 ? 0ULL - (unsigned long long)ns : (unsigned long long)ns;
    unsigned long long s = a / 1000000000ULL, f = a % 1000000000ULL;
    int n = snprintf(out, 40, "%s%llu", ns < 0 ? "-" : "", s);
    if (f) {
        char fr[16];
        snprintf(fr, sizeof fr, "%09llu", f);
        size_t l = 9;
        while (fr[l - 1] == '0')
            l--;
        fr[l] = 0;
        snprintf(out + n, 40 - (size_t)n, ".%s", fr);
    }
}

/* The shortest of %.15g, %.16g, %.17g that reads back as the same double. */
static inline void gr_dbl(char out[40], double d)
{
    if (isnan(d)) {
        strcpy(out, "NaN");
        return;
    }
    if (isinf(d)) {
        strcpy(out, d > 0 ? "+Inf" : "-Inf");
        return;
    }
    for (int p = 15; p <= 17; p++) {
        snprintf(out, 40, "%.*g", p, d);
        if (strtod(out, NULL) == d)
            return;
    }
}

/* The text form of a field's value, or NULL for a NULL string; *plain says it is not a string (never quoted). */
static inline void gr_value_text(struct gr_buf *b, const struct gr_field *f)
{
    char tmp[48];
    switch (f->type) {
    case FORKLOG_FIELD_STR: gr_put(b, f->s, f->slen); return;
    case FORKLOG_FIELD_INT: gr_putf(b, "%lld", f->i); return;
    case FORKLOG_FIELD_UINT: gr_putf(b, "%llu", f->u); return;
    case FORKLOG_FIELD_DBL:
        gr_dbl(tmp, f->d);
        gr_put(b, tmp, strlen(tmp));
        return;
    case FORKLOG_FIELD_BOOL: gr_putf(b, "%s", f->b ? "true" : "false"); return;
    case FORKLOG_FIELD_DUR:
        gr_dur(tmp, f->ns);
        gr_put(b, tmp, strlen(tmp));
        return;
    case FORKLOG_FIELD_TIME:
        gr_timestamp(tmp, f->sec, f->nsec);
        gr_put(b, tmp, strlen(tmp));
        return;
    }
}

static inline bool gr_dur_shape(const char *s)
{
    size_t i = 0;
    if (s[i] == '-')
        i++;
    if (!isdigit((unsigned char)s[i]))
        return false;
    while (isdigit((unsigned char)s[i]))
        i++;
    if (s[i] == '.') {
        size_t st = ++i;
        while (isdigit((unsigned char)s[i]))
            i++;
        if (i == st || i - st > 9 || s[i - 1] == '0')
            return false;
    }
    return s[i] == 0;
}

/* The fewest bytes a string takes rendered: text (bare or quoted) or JSON (a lower bound: DEL counted as 1). */
static inline size_t gr_str_len(const char *s, size_t n, bool json)
{
    size_t l = 2;
    if (json) {
        const unsigned char *u = (const unsigned char *)s;
        for (size_t i = 0; i < n;) {
            unsigned char c = u[i];
            size_t q = gr_utf8_len(u + i, n - i);
            if (q == 0)
                l += 3, i++;
            else if (c == '"' || c == '\\' || c == '\n' || c == '\r' || c == '\t' || c == '\b' || c == '\f')
                l += 2, i++;
            else if (c < 0x20)
                l += 6, i++;
            else
                l += q, i += q;
        }
        return l;
    }
    bool bare = n > 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        bare = bare && !(c <= 0x20 || c == '"' || c == '=' || c == '\\' || c == 0x7f);
        l += c == '"' || c == '\\' || c == '\n' || c == '\r' || c == '\t' ? 2 : c < 0x20 || c == 0x7f ? 4 : 1;
    }
    return bare ? n : l;
}

static inline void gr_value_text(struct gr_buf *b, const struct gr_field *f);

/* The fewest bytes a field takes in a record: ` key=value` or `,"key":value`. */
static inline size_t gr_field_len(const struct gr_field *f, bool json)
{
    if (f->type >= 100)
        return 0;
    size_t l = json ? 4 + strlen(f->key) : 2 + strlen(f->key);
    if (f->type == FORKLOG_FIELD_STR)
        return l + (f->s ? gr_str_len(f->s, f->slen, json) : json ? 4 : 0);
    struct gr_buf v = {0};
    gr_value_text(&v, f);
    l += v.n;
    if (json && (f->type == FORKLOG_FIELD_TIME || (f->type == FORKLOG_FIELD_DBL && (isnan(f->d) || isinf(f->d)))))
        l += 2;
    free(v.p);
    return l;
}

/* The fewest bytes the location takes. */
static inline size_t gr_loc_len(const char *file, int line, const char *func, bool json, bool ecs)
{
    char ln[24];
    size_t l = (size_t)snprintf(ln, sizeof ln, "%d", line);
    l += gr_str_len(file, strlen(file), json) + (func ? gr_str_len(func, strlen(func), json) : 0);
    if (!json)
        return l + strlen(" file= line=") + (func ? strlen(" func=") : 0);
    return l + (ecs ? strlen(",\"log.origin.file.name\":,\"log.origin.file.line\":") : strlen(",\"file\":,\"line\":")) +
           (func ? (ecs ? strlen(",\"log.origin.function\":") : strlen(",\"func\":")) : 0);
}

/* ---- text --------------------------------------------------------------------------------------------------- */

struct gr_err {
    char msg[512];
};

#define GR_FAIL(err, ...)                                                                                              \
    do {                                                                                                               \
        snprintf((err)->msg, sizeof(err)->msg, __VA_ARGS__);                                                           \
        return false;                                                                                                  \
    } while (0)

static inline bool gr_hex(char c, int *v)
{
    if (c >= '0' && c <= '9')
        *v = c - '0';
    else if (c >= 'a' && c <= 'f')
        *v = c - 'a' + 10;
    else
        return false;
    return true;
}

/* A quoted token at s[*i] (the opening quote): unescaped into out; *i moves past the closing quote. */
static inline bool gr_text_quoted(const char *s, size_t n, size_t *i, struct gr_buf *out, struct gr_err *err)
{
    size_t p = *i + 1;
    for (;;) {
        if (p >= n)
            GR_FAIL(err, "unterminated quoted token at %zu", *i);
        unsigned char c = (unsigned char)s[p];
        if (c == '"') {
            *i = p + 1;
            return true;
        }
        if (gr_ctrl(c))
            GR_FAIL(err, "raw control byte 0x%02x in a quoted token at %zu", c, p);
        if (c != '\\') {
            gr_putc(out, (char)c);
            p++;
            continue;
        }
        if (p + 1 >= n)
            GR_FAIL(err, "backslash at the end at %zu", p);
        char e = s[p + 1];
        int h1, h2;
        if (e == 'n')
            gr_putc(out, '\n'), p += 2;
        else if (e == 'r')
            gr_putc(out, '\r'), p += 2;
        else if (e == 't')
            gr_putc(out, '\t'), p += 2;
        else if (e == '"')
            gr_putc(out, '"'), p += 2;
        else if (e == '\\')
            gr_putc(out, '\\'), p += 2;
        else if (e == 'x' && p + 3 < n && gr_hex(s[p + 2], &h1) && gr_hex(s[p + 3], &h2))
            gr_putc(out, (char)(h1 * 16 + h2)), p += 4;
        else
            GR_FAIL(err, "bad escape \\%c in a quoted token at %zu", e, p);
    }
}

static inline bool gr_keychar(char c)
{
    return isalnum((unsigned char)c) || c == '_' || c == '.' || c == '@' || c == '-';
}

static inline bool gr_bare_value_char(unsigned char c)
{
    return !(c <= 0x20 || c == '"' || c == '=' || c == '\\' || c == 0x7f);
}

/* Whether a string can be written bare. */
static inline bool gr_can_be_bare(const char *s, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!gr_bare_value_char((unsigned char)s[i]))
            return false;
    return true;
}

struct gr_tfield {
    char key[96];
    bool quoted, empty;
    struct gr_buf raw; /* the token as written (bare) */
    struct gr_buf val; /* unescaped */
};

/* A value at s[*i]: quoted, bare, or empty (followed by SP or the end). */
static inline bool gr_text_value(const char *s, size_t n, size_t *i, struct gr_tfield *f, struct gr_err *err)
{
    if (*i < n && s[*i] == '"') {
        f->quoted = true;
        size_t st = *i;
        if (!gr_text_quoted(s, n, i, &f->val, err))
            return false;
        gr_put(&f->raw, s + st, *i - st);
        return true;
    }
    size_t st = *i;
    while (*i < n && s[*i] != ' ') {
        if (!gr_bare_value_char((unsigned char)s[*i]))
            GR_FAIL(err, "byte 0x%02x not allowed in a bare value at %zu", (unsigned char)s[*i], *i);
        (*i)++;
    }
    f->empty = *i == st;
    gr_put(&f->raw, s + st, *i - st);
    gr_put(&f->val, s + st, *i - st);
    return true;
}

static inline bool gr_text_key(const char *s, size_t n, size_t *i, char *key, size_t keysz, struct gr_err *err)
{
    size_t st = *i;
    while (*i < n && gr_keychar(s[*i]))
        (*i)++;
    size_t kl = *i - st;
    size_t base = kl >= 7 && memcmp(s + st, "fields.", 7) == 0 ? kl - 7 : kl;
    if (kl == 0 || (base == 0 && kl == 0) || base > 64 || kl >= keysz)
        GR_FAIL(err, "bad key at %zu (length %zu)", st, kl);
    if (*i >= n || s[*i] != '=')
        GR_FAIL(err, "no '=' after the key at %zu", st);
    memcpy(key, s + st, kl);
    key[kl] = 0;
    (*i)++;
    return true;
}

static inline bool gr_uint_at(const char *s, size_t n, size_t *i, unsigned long long *v)
{
    size_t st = *i;
    *v = 0;
    while (*i < n && s[*i] >= '0' && s[*i] <= '9')
        *v = *v * 10 + (unsigned)(s[(*i)++] - '0');
    return *i > st;
}

static inline bool gr_lit(const char *s, size_t n, size_t *i, const char *lit)
{
    size_t l = strlen(lit);
    if (*i + l > n || memcmp(s + *i, lit, l) != 0)
        return false;
    *i += l;
    return true;
}

static inline bool gr_check_timestamp(const char *s, size_t n, size_t i)
{
    static const char pat[] = "dddd-dd-ddTdd:dd:dd.ddddddZ";
    if (i + 27 > n)
        return false;
    for (int k = 0; k < 27; k++)
        if (pat[k] == 'd' ? !isdigit((unsigned char)s[i + k]) : s[i + k] != pat[k])
            return false;
    return true;
}

/* Compares one parsed text field with what it should be. */
static inline bool gr_text_field_eq(const struct gr_tfield *t, const struct gr_field *f, struct gr_err *err)
{
    if (strcmp(t->key, f->key) != 0)
        GR_FAIL(err, "key %s where %s was expected", t->key, f->key);
    if (f->type == GR_ANY_DUR || f->type == GR_ANY_TIME) {
        const char *r = t->raw.p ? t->raw.p : "";
        if (t->quoted || (f->type == GR_ANY_DUR ? !gr_dur_shape(r) : strlen(r) != 27 || !gr_check_timestamp(r, 27, 0)))
            GR_FAIL(err, "%s: '%s' is not a documented %s", f->key, r, f->type == GR_ANY_DUR ? "duration" : "time");
        return true;
    }
    if (f->type == FORKLOG_FIELD_STR) {
        if (!f->s) {
            if (!t->empty || t->quoted)
                GR_FAIL(err, "%s: NULL string written as '%s'", f->key, t->raw.p);
            return true;
        }
        if (t->val.n != f->slen || (f->slen && memcmp(t->val.p, f->s, f->slen) != 0))
            GR_FAIL(err, "%s: string reads back as '%s' (%zu bytes), given %zu bytes", f->key, t->val.p, t->val.n,
                    f->slen);
        if (t->quoted == gr_can_be_bare(f->s, f->slen))
            GR_FAIL(err, "%s: written %s though it %s be bare", f->key, t->quoted ? "quoted" : "bare",
                    t->quoted ? "could" : "could not");
        return true;
    }
    struct gr_buf want = {0};
    gr_value_text(&want, f);
    bool ok = !t->quoted && t->raw.n == want.n && (want.n == 0 || memcmp(t->raw.p, want.p, want.n) == 0);
    if (!ok) {
        snprintf(err->msg, sizeof err->msg, "%s: value '%s', documented form '%s'", f->key, t->raw.p ? t->raw.p : "",
                 want.p);
        free(want.p);
        return false;
    }
    free(want.p);
    /* Numbers also read back to the value. */
    if (f->type == FORKLOG_FIELD_DBL && !isnan(f->d)) {
        double r = isinf(f->d) ? f->d : strtod(t->raw.p, NULL);
        if (memcmp(&r, &f->d, sizeof r) != 0)
            GR_FAIL(err, "%s: %s does not read back as the double", f->key, t->raw.p);
    }
    return true;
}

static inline void gr_tfield_free(struct gr_tfield *t)
{
    free(t->raw.p);
    free(t->val.p);
}

static const char *const gr_level_text[] = {"", "DEBUG", "INFO", "WARN", "ERROR"};
static const char *const gr_level_json[] = {"", "debug", "info", "warn", "error"};

/* Checks that the kept message reads back as the input, cut by e->ret bytes; fields may be left out whole. */
/* A field missing from a record is allowed only when it does not fit beside what the record holds (the code's
 * documented "left out whole"); gr_strict_fields makes any missing field of an uncut record an error. reclen is the
 * fewest bytes the record takes with what it kept: for a cut record, with its message cut as far as a marker allows
 * (gr_cut_len), since a field is left out only then. */
static bool gr_strict_fields;

static inline bool gr_missing_ok(const struct gr_expect *e, const struct gr_field *f, size_t reclen, struct gr_err *err)
{
    if (gr_strict_fields && e->ret <= 0)
        GR_FAIL(err, "field %s left out of a record of %zu bytes with no cut marker and 0 returned", f->key, reclen);
    if (reclen + gr_field_len(f, e->json) <= e->max_record)
        GR_FAIL(err, "field %s (%zu bytes) left out though it fits the %zu-byte record%s", f->key,
                gr_field_len(f, e->json), reclen, e->ret > 0 ? " with its message cut to the marker" : "");
    return true;
}

/* The fewest bytes of a cut record with the tail it kept (tail bytes, before the end), its message cut to nothing
 * but the widest marker it can need (one that reports the whole message cut) and its quotes: prefix bytes up to the
 * message. A text message that holds '=' or starts with a quote is counted quoted, as it is beside a field. */
static inline size_t gr_cut_len(const struct gr_expect *e, size_t prefix, size_t tail)
{
    char widest[64];
    int w = e->json ? snprintf(widest, sizeof widest, ",\"%s\":%zu", e->ecs ? "forklog.cut" : "cut", e->msglen)
                    : snprintf(widest, sizeof widest, " [forklog: %zu bytes cut]", e->msglen);
    size_t quotes = e->json ? 1 : (memchr(e->msg, '=', e->msglen) || (e->msglen && e->msg[0] == '"')) ? 2 : 0;
    return prefix + quotes + (size_t)w + tail + (e->json ? 2 : 1);
}

static inline bool gr_fields_match(const struct gr_expect *e, const char (*keys)[96], size_t nkeys,
                                   bool (*eq)(const void *, size_t, const struct gr_field *, struct gr_err *),
                                   const void *ctx, size_t reclen, struct gr_err *err)
{
    size_t j = 0;
    for (size_t k = 0; k < nkeys; k++) {
        while (j < e->nfields && strcmp(e->fields[j].key, keys[k]) != 0) {
            if (!gr_missing_ok(e, &e->fields[j], reclen, err))
                return false;
            j++;
        }
        if (j == e->nfields)
            GR_FAIL(err, "unexpected field %s (or out of order)", keys[k]);
        if (!eq(ctx, k, &e->fields[j], err))
            return false;
        j++;
    }
    for (; j < e->nfields; j++)
        if (!gr_missing_ok(e, &e->fields[j], reclen, err))
            return false;
    return true;
}

static inline bool gr_text_eq_cb(const void *ctx, size_t k, const struct gr_field *f, struct gr_err *err)
{
    return gr_text_field_eq(&((const struct gr_tfield *)ctx)[k], f, err);
}

/* Checks the message as read back: the first msglen - ret bytes of the input. */
static inline bool gr_msg_eq(const struct gr_expect *e, const char *got, size_t gotlen, struct gr_err *err)
{
    size_t cut = e->ret > 0 ? (size_t)e->ret : 0;
    if (cut > e->msglen)
        GR_FAIL(err, "return %lld is more than the message's %zu bytes", e->ret, e->msglen);
    size_t keep = e->msglen - cut;
    struct gr_buf want = {0};
    if (e->json)
        gr_fffd(&want, e->msg, keep);
    else
        gr_put(&want, e->msg, keep);
    bool ok = gotlen == want.n && (want.n == 0 || memcmp(got, want.p, want.n) == 0);
    if (!ok) {
        size_t d = 0;
        while (d < gotlen && d < want.n && got[d] == want.p[d])
            d++;
        snprintf(err->msg, sizeof err->msg,
                 "message reads back as %zu bytes, expected %zu (input %zu, cut %zu); first difference at %zu", gotlen,
                 want.n, e->msglen, cut, d);
    }
    free(want.p);
    return ok;
}

static inline bool gr_check_text(const struct gr_expect *e, const char *s, size_t n, struct gr_err *err, bool tail)
{
    size_t i = 0;
    unsigned long long v;
    if (!gr_check_timestamp(s, n, 0))
        GR_FAIL(err, "bad timestamp");
    i = 27;
    if (!gr_lit(s, n, &i, " ") || !gr_lit(s, n, &i, gr_level_text[e->level]) || !gr_lit(s, n, &i, " pid=") ||
        !gr_uint_at(s, n, &i, &v))
        GR_FAIL(err, "bad level or pid");
    if (e->tid) {
        if (!gr_lit(s, n, &i, " tid=") || !gr_uint_at(s, n, &i, &v))
            GR_FAIL(err, "no tid");
    }
    if (e->app) {
        if (!gr_lit(s, n, &i, " app="))
            GR_FAIL(err, "no app");
        struct gr_tfield a = {0};
        bool ok = gr_text_value(s, n, &i, &a, err);
        if (ok && (a.val.n != strlen(e->app) || (a.val.n && memcmp(a.val.p, e->app, a.val.n) != 0) ||
                   a.quoted == gr_can_be_bare(e->app, strlen(e->app)))) {
            snprintf(err->msg, sizeof err->msg, "app reads back as '%s'", a.val.p ? a.val.p : "");
            ok = false;
        }
        gr_tfield_free(&a);
        if (!ok)
            return false;
    }
    if (!gr_lit(s, n, &i, " "))
        GR_FAIL(err, "no space before the message");
    /* The message. */
    const size_t msg_start = i;
    struct gr_buf msg = {0};
    bool quoted = i < n && s[i] == '"' && tail;
    size_t mend;
    if (quoted) {
        if (!gr_text_quoted(s, n, &i, &msg, err))
            return free(msg.p), false;
        mend = i;
    } else {
        /* Bare: up to the last space before the first '=' of the rest, or the end. */
        size_t st = i;
        if (tail) {
            const char *eq = memchr(s + st, '=', n - st);
            if (!eq)
                GR_FAIL(err, "no field after the message");
            size_t q = (size_t)(eq - s);
            while (q > st && s[q - 1] != ' ')
                q--;
            if (q == st)
                GR_FAIL(err, "no space before the first field");
            mend = q - 1;
        } else {
            mend = n;
        }
        i = mend;
    }
    /* The marker. */
    size_t msgraw_end = mend;
    if (e->ret > 0) {
        char marker[64];
        int ml = snprintf(marker, sizeof marker, " [forklog: %lld bytes cut]", e->ret);
        if (quoted) {
            if (!gr_lit(s, n, &i, marker)) {
                free(msg.p);
                GR_FAIL(err, "no cut marker '%s' after the quoted message", marker);
            }
        } else {
            if (mend < (size_t)ml || memcmp(s + mend - ml, marker, (size_t)ml) != 0)
                GR_FAIL(err, "no cut marker '%s' at the end of the bare message", marker);
            msgraw_end = mend - (size_t)ml;
        }
    }
    bool ok = true;
    if (!quoted) {
        /* The bare message's start is mend minus its length; recompute from the prefix length. */
        size_t start = 0;
        {
            /* Walk the prefix again to find where the message began. */
            size_t p = 27 + 1 + strlen(gr_level_text[e->level]) + 5;
            while (p < n && isdigit((unsigned char)s[p]))
                p++;
            if (e->tid) {
                p += 5;
                while (p < n && isdigit((unsigned char)s[p]))
                    p++;
            }
            if (e->app) {
                p += 5;
                if (s[p] == '"') {
                    struct gr_buf tmp = {0};
                    gr_text_quoted(s, n, &p, &tmp, err);
                    free(tmp.p);
                } else {
                    while (p < n && s[p] != ' ')
                        p++;
                }
            }
            start = p + 1;
        }
        size_t cut = e->ret > 0 ? (size_t)e->ret : 0;
        struct gr_buf want = {0};
        gr_esc_ctrl(&want, e->msg, cut > e->msglen ? 0 : e->msglen - cut);
        size_t gl = msgraw_end - start;
        if (gl != want.n || (want.n && memcmp(s + start, want.p, want.n) != 0)) {
            snprintf(err->msg, sizeof err->msg, "bare message is '%.*s' (%zu bytes), documented form %zu bytes",
                     (int)(gl > 200 ? 200 : gl), s + start, gl, want.n);
            ok = false;
        }
        if (ok && tail) {
            /* A bare message followed by fields never holds '=' nor starts with a quote. */
            if (memchr(e->msg, '=', e->msglen - cut) || (e->msglen - cut > 0 && e->msg[0] == '"')) {
                snprintf(err->msg, sizeof err->msg, "message with '=' or a leading quote written bare before fields");
                ok = false;
            }
        }
        free(want.p);
    } else {
        ok = gr_msg_eq(e, msg.p, msg.n, err);
        if (ok) {
            size_t keep = e->msglen - (e->ret > 0 ? (size_t)e->ret : 0);
            (void)keep;
            if (!memchr(e->msg, '=', e->msglen) && !(e->msglen > 0 && e->msg[0] == '"')) {
                snprintf(err->msg, sizeof err->msg, "message quoted though it holds no '=' and no leading quote");
                ok = false;
            }
        }
    }
    free(msg.p);
    if (!ok)
        return false;
    const size_t tail_start = i;
    /* Location and fields. */
    struct gr_tfield tf[200];
    char keys[200][96];
    size_t nt = 0;
    while (i < n) {
        if (s[i] != ' ')
            GR_FAIL(err, "junk at %zu after a token: '%.20s'", i, s + i);
        i++;
        if (nt == 200)
            GR_FAIL(err, "too many fields");
        memset(&tf[nt], 0, sizeof tf[nt]);
        if (!gr_text_key(s, n, &i, tf[nt].key, sizeof tf[nt].key, err))
            return false;
        if (!gr_text_value(s, n, &i, &tf[nt], err))
            return false;
        memcpy(keys[nt], tf[nt].key, 96);
        nt++;
    }
    /* A record read as one whose tail was all left out wrote its message bare; with a field or the location beside
     * it, a message that holds '=' or starts with a quote would be quoted, its quotes and backslashes escaped: that
     * much more room is what a missing field or location must not have found. */
    size_t requote = 0;
    if (!tail && e->has_fields_after && (memchr(e->msg, '=', e->msglen) || (e->msglen && e->msg[0] == '"'))) {
        requote = 2;
        for (size_t k = 0; k < e->msglen; k++)
            requote += e->msg[k] == '"' || e->msg[k] == '\\';
    }
    const size_t reclen = e->ret > 0 ? gr_cut_len(e, msg_start, n - tail_start) : n + 1 + requote;
    size_t k0 = 0;
    if (e->loc && (nt == 0 || strcmp(tf[0].key, "file") != 0)) {
        if (reclen + gr_loc_len(e->file, e->line, e->func, false, false) <= e->max_record)
            ok = false, snprintf(err->msg, sizeof err->msg, "location left out though it fits");
    } else if (e->loc) {
        struct gr_buf ln = {0};
        gr_putf(&ln, "%d", e->line);
        if (nt < 2 || strcmp(tf[0].key, "file") || strcmp(tf[1].key, "line"))
            ok = false, snprintf(err->msg, sizeof err->msg, "no location");
        else if (tf[0].val.n != strlen(e->file) || (tf[0].val.n && memcmp(tf[0].val.p, e->file, tf[0].val.n)) ||
                 tf[0].quoted == gr_can_be_bare(e->file, strlen(e->file)))
            ok = false, snprintf(err->msg, sizeof err->msg, "file reads back as '%s'", tf[0].val.p);
        else if (tf[1].quoted || strcmp(tf[1].raw.p ? tf[1].raw.p : "", ln.p))
            ok = false, snprintf(err->msg, sizeof err->msg, "line reads back as '%s'", tf[1].raw.p);
        k0 = 2;
        if (ok && e->func) {
            if (nt < 3 || strcmp(tf[2].key, "func"))
                ok = false, snprintf(err->msg, sizeof err->msg, "no func");
            else if (tf[2].val.n != strlen(e->func) || (tf[2].val.n && memcmp(tf[2].val.p, e->func, tf[2].val.n)) ||
                     tf[2].quoted == gr_can_be_bare(e->func, strlen(e->func)))
                ok = false, snprintf(err->msg, sizeof err->msg, "func reads back as '%s'", tf[2].val.p);
            k0 = 3;
        }
        free(ln.p);
    }
    if (ok) {
        /* Each key once. */
        for (size_t a = 0; a < nt && ok; a++)
            for (size_t b = a + 1; b < nt && ok; b++)
                if (strcmp(tf[a].key, tf[b].key) == 0)
                    ok = false, snprintf(err->msg, sizeof err->msg, "key %.96s twice", tf[a].key);
    }
    if (ok)
        ok = gr_fields_match(e, (const char(*)[96])keys + k0, nt - k0, gr_text_eq_cb, tf + k0, reclen, err);
    for (size_t k = 0; k < nt; k++)
        gr_tfield_free(&tf[k]);
    return ok;
}

/* ---- JSON --------------------------------------------------------------------------------------------------- */

enum gr_jtype { GR_JSTR, GR_JNUM, GR_JTRUE, GR_JFALSE, GR_JNULL };

struct gr_jmember {
    struct gr_buf key;
    enum gr_jtype type;
    struct gr_buf val;   /* decoded string, or the number's text */
    size_t at, vat, end; /* offsets in the line: the key's opening quote, the value's first byte, past the value */
};

static inline int gr_hex4(const char *s, size_t n, size_t i, unsigned *v)
{
    *v = 0;
    if (i + 4 > n)
        return -1;
    for (int k = 0; k < 4; k++) {
        char c = s[i + k];
        int h;
        if (c >= '0' && c <= '9')
            h = c - '0';
        else if (c >= 'a' && c <= 'f')
            h = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            h = c - 'A' + 10;
        else
            return -1;
        *v = *v << 4 | (unsigned)h;
    }
    return 0;
}

static inline void gr_put_cp(struct gr_buf *b, unsigned cp)
{
    char u[4];
    if (cp < 0x80)
        gr_putc(b, (char)cp);
    else if (cp < 0x800)
        u[0] = (char)(0xc0 | cp >> 6), u[1] = (char)(0x80 | (cp & 0x3f)), gr_put(b, u, 2);
    else if (cp < 0x10000)
        u[0] = (char)(0xe0 | cp >> 12), u[1] = (char)(0x80 | (cp >> 6 & 0x3f)), u[2] = (char)(0x80 | (cp & 0x3f)),
        gr_put(b, u, 3);
    else
        u[0] = (char)(0xf0 | cp >> 18), u[1] = (char)(0x80 | (cp >> 12 & 0x3f)), u[2] = (char)(0x80 | (cp >> 6 & 0x3f)),
        u[3] = (char)(0x80 | (cp & 0x3f)), gr_put(b, u, 4);
}

/* An RFC 8259 string at s[*i]; the raw bytes must be valid UTF-8 (checked for the whole line elsewhere). */
static inline bool gr_json_string(const char *s, size_t n, size_t *i, struct gr_buf *out, struct gr_err *err)
{
    if (*i >= n || s[*i] != '"')
        GR_FAIL(err, "string expected at %zu", *i);
    size_t p = *i + 1;
    gr_put(out, "", 0);
    for (;;) {
        if (p >= n)
            GR_FAIL(err, "unterminated string at %zu", *i);
        unsigned char c = (unsigned char)s[p];
        if (c == '"')
            break;
        if (c < 0x20)
            GR_FAIL(err, "raw control byte 0x%02x in a JSON string at %zu", c, p);
        if (c != '\\') {
            gr_putc(out, (char)c);
            p++;
            continue;
        }
        if (p + 1 >= n)
            GR_FAIL(err, "backslash at the end");
        char e = s[p + 1];
        p += 2;
        switch (e) {
        case '"': gr_putc(out, '"'); break;
        case '\\': gr_putc(out, '\\'); break;
        case '/': gr_putc(out, '/'); break;
        case 'b': gr_putc(out, '\b'); break;
        case 'f': gr_putc(out, '\f'); break;
        case 'n': gr_putc(out, '\n'); break;
        case 'r': gr_putc(out, '\r'); break;
        case 't': gr_putc(out, '\t'); break;
        case 'u': {
            unsigned cp;
            if (gr_hex4(s, n, p, &cp))
                GR_FAIL(err, "bad \\u at %zu", p);
            p += 4;
            if (cp >= 0xd800 && cp <= 0xdbff) {
                unsigned lo;
                if (p + 6 > n || s[p] != '\\' || s[p + 1] != 'u' || gr_hex4(s, n, p + 2, &lo) || lo < 0xdc00 ||
                    lo > 0xdfff)
                    GR_FAIL(err, "lone high surrogate at %zu", p);
                p += 6;
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            } else if (cp >= 0xdc00 && cp <= 0xdfff) {
                GR_FAIL(err, "lone low surrogate at %zu", p);
            }
            gr_put_cp(out, cp);
            break;
        }
        default: GR_FAIL(err, "bad escape \\%c at %zu", e, p - 2);
        }
    }
    *i = p + 1;
    return true;
}

static inline bool gr_json_number(const char *s, size_t n, size_t *i, struct gr_buf *out, struct gr_err *err)
{
    size_t st = *i, p = *i;
    if (p < n && s[p] == '-')
        p++;
    if (p < n && s[p] == '0')
        p++;
    else if (p < n && s[p] >= '1' && s[p] <= '9')
        while (p < n && isdigit((unsigned char)s[p]))
            p++;
    else
        GR_FAIL(err, "bad number at %zu", st);
    if (p < n && s[p] == '.') {
        p++;
        if (p >= n || !isdigit((unsigned char)s[p]))
            GR_FAIL(err, "bad fraction at %zu", st);
        while (p < n && isdigit((unsigned char)s[p]))
            p++;
    }
    if (p < n && (s[p] == 'e' || s[p] == 'E')) {
        p++;
        if (p < n && (s[p] == '+' || s[p] == '-'))
            p++;
        if (p >= n || !isdigit((unsigned char)s[p]))
            GR_FAIL(err, "bad exponent at %zu", st);
        while (p < n && isdigit((unsigned char)s[p]))
            p++;
    }
    gr_put(out, s + st, p - st);
    *i = p;
    return true;
}

static inline bool gr_json_parse(const char *s, size_t n, struct gr_jmember *m, size_t maxm, size_t *nm,
                                 struct gr_err *err)
{
    /* Valid UTF-8 throughout. */
    for (size_t k = 0; k < n;) {
        size_t l = gr_utf8_len((const unsigned char *)s + k, n - k);
        if (!l)
            GR_FAIL(err, "invalid UTF-8 at byte %zu (0x%02x)", k, (unsigned char)s[k]);
        k += l;
    }
    size_t i = 0;
    *nm = 0;
    if (n < 2 || s[0] != '{')
        GR_FAIL(err, "not an object");
    i = 1;
    for (;;) {
        if (*nm == maxm)
            GR_FAIL(err, "too many members");
        struct gr_jmember *x = &m[(*nm)++];
        memset(x, 0, sizeof *x);
        x->at = i;
        if (!gr_json_string(s, n, &i, &x->key, err))
            return false;
        if (i >= n || s[i] != ':')
            GR_FAIL(err, "':' expected at %zu", i);
        i++;
        x->vat = i;
        if (i < n && s[i] == '"') {
            x->type = GR_JSTR;
            if (!gr_json_string(s, n, &i, &x->val, err))
                return false;
        } else if (gr_lit(s, n, &i, "true")) {
            x->type = GR_JTRUE;
        } else if (gr_lit(s, n, &i, "false")) {
            x->type = GR_JFALSE;
        } else if (gr_lit(s, n, &i, "null")) {
            x->type = GR_JNULL;
        } else {
            x->type = GR_JNUM;
            if (!gr_json_number(s, n, &i, &x->val, err))
                return false;
        }
        x->end = i;
        if (i < n && s[i] == ',') {
            i++;
            continue;
        }
        if (i < n && s[i] == '}' && i + 1 == n)
            return true;
        GR_FAIL(err, "',' or a final '}' expected at %zu", i);
    }
}

static inline bool gr_json_field_eq(const struct gr_jmember *x, const struct gr_field *f, struct gr_err *err)
{
    char tmp[48];
    if (f->type == GR_ANY_DUR) {
        if (x->type != GR_JNUM || !gr_dur_shape(x->val.p))
            GR_FAIL(err, "%s: not a documented duration", f->key);
        return true;
    }
    if (f->type == GR_ANY_TIME) {
        if (x->type != GR_JSTR || x->val.n != 27 || !gr_check_timestamp(x->val.p, 27, 0))
            GR_FAIL(err, "%s: not a documented time", f->key);
        return true;
    }
    switch (f->type) {
    case FORKLOG_FIELD_STR:
        if (!f->s) {
            if (x->type != GR_JNULL)
                GR_FAIL(err, "%s: NULL string is not null", f->key);
            return true;
        }
        if (x->type != GR_JSTR)
            GR_FAIL(err, "%s: not a string", f->key);
        {
            struct gr_buf want = {0};
            gr_fffd(&want, f->s, f->slen);
            bool ok = want.n == x->val.n && memcmp(want.p ? want.p : "", x->val.p, want.n) == 0;
            free(want.p);
            if (!ok)
                GR_FAIL(err, "%s: string reads back as '%s'", f->key, x->val.p);
        }
        return true;
    case FORKLOG_FIELD_BOOL:
        if (x->type != (f->b ? GR_JTRUE : GR_JFALSE))
            GR_FAIL(err, "%s: not %s", f->key, f->b ? "true" : "false");
        return true;
    case FORKLOG_FIELD_TIME:
        gr_timestamp(tmp, f->sec, f->nsec);
        if (x->type != GR_JSTR || strcmp(x->val.p, tmp))
            GR_FAIL(err, "%s: time '%s', documented '%s'", f->key, x->val.p ? x->val.p : "", tmp);
        return true;
    case FORKLOG_FIELD_DBL:
        gr_dbl(tmp, f->d);
        if (isnan(f->d) || isinf(f->d)) {
            if (x->type != GR_JSTR || strcmp(x->val.p, tmp))
                GR_FAIL(err, "%s: '%s', documented string '%s'", f->key, x->val.p ? x->val.p : "", tmp);
            return true;
        }
        if (x->type != GR_JNUM || strcmp(x->val.p, tmp))
            GR_FAIL(err, "%s: '%s', documented number %s", f->key, x->val.p ? x->val.p : "", tmp);
        {
            double r = strtod(x->val.p, NULL);
            if (memcmp(&r, &f->d, sizeof r))
                GR_FAIL(err, "%s: %s does not read back", f->key, x->val.p);
        }
        return true;
    default: {
        struct gr_buf want = {0};
        gr_value_text(&want, f);
        bool ok = x->type == GR_JNUM && strcmp(x->val.p, want.p) == 0;
        if (!ok)
            snprintf(err->msg, sizeof err->msg, "%s: '%s', documented number %s", f->key, x->val.p ? x->val.p : "",
                     want.p);
        free(want.p);
        return ok;
    }
    }
}

static inline bool gr_json_eq_cb(const void *ctx, size_t k, const struct gr_field *f, struct gr_err *err)
{
    return gr_json_field_eq(&((const struct gr_jmember *)ctx)[k], f, err);
}

static inline bool gr_check_json_members(const struct gr_expect *e, struct gr_jmember *m, size_t nm, size_t n,
                                         struct gr_err *err)
{
    const char *const *K = e->ecs ? gr_ecs_keys : gr_short_keys;
    size_t k = 0;
#define KEY_IS(idx) (k < nm && strcmp(m[k].key.p, K[idx]) == 0)
    if (!KEY_IS(0) || m[k].type != GR_JSTR || m[k].val.n != 27 || !gr_check_timestamp(m[k].val.p, 27, 0))
        GR_FAIL(err, "bad ts member");
    k++;
    if (!KEY_IS(1) || m[k].type != GR_JSTR || strcmp(m[k].val.p, gr_level_json[e->level]))
        GR_FAIL(err, "bad level member");
    k++;
    if (!KEY_IS(2) || m[k].type != GR_JNUM || !isdigit((unsigned char)m[k].val.p[0]) || strpbrk(m[k].val.p, ".eE"))
        GR_FAIL(err, "bad pid member");
    k++;
    if (e->tid) {
        if (!KEY_IS(3) || m[k].type != GR_JNUM || !isdigit((unsigned char)m[k].val.p[0]))
            GR_FAIL(err, "bad tid member");
        k++;
    }
    if (e->app) {
        if (!KEY_IS(4) || m[k].type != GR_JSTR || strcmp(m[k].val.p, e->app))
            GR_FAIL(err, "bad app member");
        k++;
    }
    if (!KEY_IS(5) || m[k].type != GR_JSTR)
        GR_FAIL(err, "bad msg member (%s)", k < nm ? m[k].key.p : "none");
    if (!gr_msg_eq(e, m[k].val.p, m[k].val.n, err))
        return false;
    /* The record's length with what it kept; for a cut record, with its message cut to the marker: the prefix up to
     * the message's first byte, the tail from past its closing quote to the comma before the cut member. */
    const size_t reclen = e->ret > 0 && nm > k + 1 ? gr_cut_len(e, m[k].vat + 1, m[nm - 1].at - 1 - m[k].end) : n + 1;
    k++;
    if (e->loc && !KEY_IS(6)) {
        if (reclen + gr_loc_len(e->file, e->line, e->func, true, e->ecs) <= e->max_record)
            GR_FAIL(err, "location left out though it fits");
    } else if (e->loc) {
        struct gr_buf want = {0};
        gr_fffd(&want, e->file, strlen(e->file));
        bool ok = KEY_IS(6) && m[k].type == GR_JSTR && strcmp(m[k].val.p, want.p) == 0;
        free(want.p);
        if (!ok)
            GR_FAIL(err, "bad file member");
        k++;
        char ln[24];
        snprintf(ln, sizeof ln, "%d", e->line);
        if (!KEY_IS(7) || m[k].type != GR_JNUM || strcmp(m[k].val.p, ln))
            GR_FAIL(err, "bad line member '%s', want %s", k < nm ? m[k].val.p : "", ln);
        k++;
        if (e->func) {
            struct gr_buf w2 = {0};
            gr_fffd(&w2, e->func, strlen(e->func));
            ok = KEY_IS(8) && m[k].type == GR_JSTR && strcmp(m[k].val.p, w2.p) == 0;
            free(w2.p);
            if (!ok)
                GR_FAIL(err, "bad func member");
            k++;
        }
    }
    size_t end = nm;
    if (e->ret > 0) {
        char c[32];
        snprintf(c, sizeof c, "%lld", e->ret);
        if (nm == 0 || strcmp(m[nm - 1].key.p, K[9]) || m[nm - 1].type != GR_JNUM || strcmp(m[nm - 1].val.p, c))
            GR_FAIL(err, "no cut member %s:%s at the end (last is %s)", K[9], c, nm ? m[nm - 1].key.p : "");
        end = nm - 1;
    }
#undef KEY_IS
    /* Each key once. */
    for (size_t a = 0; a < nm; a++)
        for (size_t b = a + 1; b < nm; b++)
            if (m[a].key.n == m[b].key.n && memcmp(m[a].key.p, m[b].key.p, m[a].key.n) == 0)
                GR_FAIL(err, "key %s twice", m[a].key.p);
    char(*keys)[96] = calloc(end - k + 1, 96);
    for (size_t j = k; j < end; j++)
        snprintf(keys[j - k], 96, "%s", m[j].key.p);
    bool ok = gr_fields_match(e, (const char(*)[96])keys, end - k, gr_json_eq_cb, m + k, reclen, err);
    free(keys);
    return ok;
}

static inline bool gr_check_json(const struct gr_expect *e, const char *s, size_t n, struct gr_err *err)
{
    static struct gr_jmember m[256];
    size_t nm = 0;
    bool ok = gr_json_parse(s, n, m, 256, &nm, err) && gr_check_json_members(e, m, nm, n, err);
    for (size_t k = 0; k < nm; k++)
        free(m[k].key.p), free(m[k].val.p);
    return ok;
}

/* One line without its '\n'; the record as a whole is line + 1 bytes. */
static inline bool gr_check(const struct gr_expect *e, const char *s, size_t n, struct gr_err *err)
{
    if (memchr(s, '\n', n))
        GR_FAIL(err, "a newline inside the record");
    if (n + 1 > e->max_record)
        GR_FAIL(err, "record of %zu bytes over max_record %zu", n + 1, e->max_record);
    if (e->ret > 0 && n + 1 + 8 < e->max_record)
        GR_FAIL(err, "cut record of %zu bytes well short of max_record %zu", n + 1, e->max_record);
    if (e->json)
        return gr_check_json(e, s, n, err);
    if (gr_check_text(e, s, n, err, e->has_fields_after))
        return true;
    /* Everything after the message left out for want of room: the message is then written as when alone. */
    struct gr_err err2;
    if (e->has_fields_after && gr_check_text(e, s, n, &err2, false))
        return true;
    return false;
}

#endif
