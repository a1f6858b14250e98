/*
 * Record formatting: timestamps, escaping, and the layout of text and JSON records. Pure functions of their
 * arguments: no locks, no allocation, no global state, so they are safe in a forked child and from any thread.
 */
#include "internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Days since 1970-01-01 to civil date (proleptic Gregorian), Howard Hinnant's algorithm: no locale, no tz
 * file, no lock, unlike gmtime_r on some libcs. */
static void fl__civil(int64_t days, int *y, unsigned *m, unsigned *d)
{
    days += 719468;
    const int64_t era = (days >= 0 ? days : days - 146096) / 146097;
    const unsigned doe = (unsigned)(days - era * 146097);
    const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int)(yoe + era * 400 + (*m <= 2));
}

static void fl__digits(char *out, unsigned long v, int n)
{
    while (n-- > 0) {
        out[n] = (char)('0' + v % 10);
        v /= 10;
    }
}

static void fl__rfc3339_slow(char out[27], const struct timespec *ts);

/* The date and time of day change once a second: each thread keeps the last second it formatted. A forked
 * child inherits a copy that is still right. */
static _Thread_local struct {
    time_t sec;
    char text[19]; /* YYYY-MM-DDTHH:MM:SS */
} fl__second_cache = {-1, {0}};

void fl__rfc3339(char out[27], const struct timespec *ts)
{
    if (ts->tv_sec != fl__second_cache.sec) {
        fl__rfc3339_slow(out, ts);
        memcpy(fl__second_cache.text, out, 19);
        fl__second_cache.sec = ts->tv_sec;
        return;
    }
    memcpy(out, fl__second_cache.text, 19);
    out[19] = '.';
    fl__digits(out + 20, (unsigned long)(ts->tv_nsec / 1000), 6);
    out[26] = 'Z';
}

static void fl__rfc3339_slow(char out[27], const struct timespec *ts)
{
    int64_t secs = (int64_t)ts->tv_sec;
    int64_t days = secs / 86400;
    int64_t rem = secs % 86400;
    if (rem < 0) {
        rem += 86400;
        days -= 1;
    }
    int y;
    unsigned m, d;
    fl__civil(days, &y, &m, &d);
    if (y < 0)
        y = 0;
    if (y > 9999)
        y = 9999;
    fl__digits(out, (unsigned long)y, 4);
    out[4] = '-';
    fl__digits(out + 5, m, 2);
    out[7] = '-';
    fl__digits(out + 8, d, 2);
    out[10] = 'T';
    fl__digits(out + 11, (unsigned long)(rem / 3600), 2);
    out[13] = ':';
    fl__digits(out + 14, (unsigned long)(rem / 60 % 60), 2);
    out[16] = ':';
    fl__digits(out + 17, (unsigned long)(rem % 60), 2);
    out[19] = '.';
    fl__digits(out + 20, (unsigned long)(ts->tv_nsec / 1000), 6);
    out[26] = 'Z';
}

/* Length of the valid UTF-8 sequence at s[0..len), or 0 if it is not one (RFC 3629: no overlongs, no
 * surrogates, nothing past U+10FFFF). */
static size_t fl__utf8_len(const unsigned char *s, size_t len)
{
    unsigned char c = s[0];
    size_t n;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        n = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0)
            lo = 0xA0;
        if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0)
            lo = 0x90;
        if (c == 0xF4)
            hi = 0x8F;
    } else
        return 0;
    if (len < n)
        return 0;
    if (s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
    return n;
}

static const char fl__hex[] = "0123456789abcdef";

size_t fl__escape(int json, char *dst, size_t cap, const char *src, size_t len, size_t *used)
{
    const unsigned char *s = (const unsigned char *)src;
    size_t o = 0, i = 0;
    while (i < len) {
        unsigned char c = s[i];
        char esc[6];
        const char *put = (const char *)s + i;
        size_t put_len = 1, take = 1;
        if (c < 0x20 || c == 0x7f || (json && (c == '"' || c == '\\'))) {
            char short_form = 0;
            switch (c) {
            case '\n': short_form = 'n'; break;
            case '\r': short_form = 'r'; break;
            case '\t': short_form = 't'; break;
            case '"': short_form = '"'; break;
            case '\\': short_form = '\\'; break;
            case '\b': short_form = json ? 'b' : 0; break;
            case '\f': short_form = json ? 'f' : 0; break;
            default: break;
            }
            esc[0] = '\\';
            if (short_form) {
                esc[1] = short_form;
                put_len = 2;
            } else if (json && c == 0x7f) {
                esc[0] = (char)c; /* DEL needs no escape in JSON */
            } else if (json) {
                memcpy(esc + 1, "u00", 3);
                esc[4] = fl__hex[c >> 4];
                esc[5] = fl__hex[c & 15];
                put_len = 6;
            } else {
                esc[1] = 'x';
                esc[2] = fl__hex[c >> 4];
                esc[3] = fl__hex[c & 15];
                put_len = 4;
            }
            put = esc;
        } else if (json && c >= 0x80) {
            take = fl__utf8_len(s + i, len - i);
            if (take == 0) {
                put = "\xEF\xBF\xBD"; /* U+FFFD for each byte that is not part of valid UTF-8 */
                put_len = 3;
                take = 1;
            } else {
                put_len = take;
            }
        } else {
            /* A run of bytes that need nothing: copy it in one go. */
            size_t j = i + 1;
            while (j < len && s[j] >= 0x20 && s[j] != 0x7f && !(json && (s[j] == '"' || s[j] == '\\' || s[j] >= 0x80)))
                j++;
            take = put_len = j - i;
            if (o + put_len > cap)
                take = put_len = cap - o;
        }
        if (put_len == 0 || o + put_len > cap)
            break;
        memcpy(dst + o, put, put_len);
        o += put_len;
        i += take;
    }
    *used = i;
    return o;
}

/* Longest cut marker: text ` [forklog: 18446744073709551615 bytes cut]`, JSON `,"cut":18446744073709551615`. */
#define FL__MARKER_MAX 48

/* Appends to out at *o, never past cap. */
static void fl__put(char *out, size_t cap, size_t *o, const char *s, size_t n)
{
    if (*o + n > cap)
        n = *o < cap ? cap - *o : 0;
    memcpy(out + *o, s, n);
    *o += n;
}

/* A text value needs quotes when it is empty or holds a space, a quote or '='. */
static int fl__needs_quotes(const char *s)
{
    if (!*s)
        return 1;
    for (; *s; s++)
        if (*s == ' ' || *s == '"' || *s == '=' || *s == '\\')
            return 1;
    return 0;
}

/* Renders the fields into out[0..cap). Text: ` key=value`; JSON: `,"key":value`. A field that does not fit is
 * left out whole. Returns the length. */
static size_t fl__fields(int json, const struct fl__field *f, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    char num[64];
    for (size_t k = 0; k < n; k++) {
        if (f[k].type == FL__F_STR && !f[k].s)
            continue;
        size_t mark = o;
        int cut = 0;
        fl__put(out, cap, &o, json ? ",\"" : " ", json ? 2 : 1);
        fl__put(out, cap, &o, f[k].key, strlen(f[k].key));
        fl__put(out, cap, &o, json ? "\":" : "=", json ? 2 : 1);
        int len = 0;
        switch (f[k].type) {
        case FL__F_INT: len = snprintf(num, sizeof num, "%lld", f[k].i); break;
        case FL__F_UINT: len = snprintf(num, sizeof num, "%llu", f[k].u); break;
        case FL__F_DBL: len = snprintf(num, sizeof num, "%.6f", f[k].d); break;
        case FL__F_TIME: {
            struct timespec ts;
            ts.tv_sec = (time_t)f[k].d;
            ts.tv_nsec = (long)((f[k].d - (double)ts.tv_sec) * 1e9);
            if (ts.tv_nsec < 0)
                ts.tv_nsec = 0;
            if (ts.tv_nsec > 999999999)
                ts.tv_nsec = 999999999;
            if (json)
                num[len++] = '"';
            fl__rfc3339(num + len, &ts);
            len += 27;
            if (json)
                num[len++] = '"';
            break;
        }
        case FL__F_STR: {
            int quote = json || fl__needs_quotes(f[k].s);
            if (quote)
                fl__put(out, cap, &o, "\"", 1);
            size_t slen = strlen(f[k].s), used;
            if (!json) {
                /* Quoted text values escape their quotes and backslashes too, so they read back exactly. */
                size_t i = 0;
                for (; i < slen && o < cap; i++) {
                    if (quote && (f[k].s[i] == '"' || f[k].s[i] == '\\'))
                        fl__put(out, cap, &o, "\\", 1);
                    o += fl__escape(0, out + o, cap - o, f[k].s + i, 1, &used);
                    if (!used)
                        break;
                }
                used = i;
            } else {
                o += fl__escape(1, out + o, cap - o, f[k].s, slen, &used);
            }
            if (quote)
                fl__put(out, cap, &o, "\"", 1);
            cut = used < slen;
            break;
        }
        }
        if (len > 0)
            fl__put(out, cap, &o, num, (size_t)len);
        /* A field that does not fit is left out whole, so the record stays well-formed. */
        if (cut || o >= cap)
            o = mark;
    }
    return o;
}

size_t fl__build_bound(size_t msglen, const struct fl__field *fields, size_t nfields)
{
    size_t n = FL__PREFIX_MAX + 6 * msglen + FL__MARKER_MAX + 4;
    for (size_t k = 0; k < nfields; k++)
        n += 8 + strlen(fields[k].key) + (fields[k].type == FL__F_STR && fields[k].s ? 6 * strlen(fields[k].s) : 64);
    return n;
}

long fl__pid(const forklog *log)
{
    /* The cache lives in a MADV_WIPEONFORK page: a forked child reads 0 and asks the kernel once. getpid() is a
     * real system call since glibc 2.25, ~140 ns here: too much to pay on every record. */
    if (!log->proc)
        return (long)getpid();
    int pid = atomic_load_explicit(&log->proc->pid, memory_order_relaxed);
    if (!pid) {
        pid = (int)getpid();
        atomic_store_explicit(&log->proc->pid, pid, memory_order_relaxed);
    }
    return pid;
}

/* A string with its length, so that the record path never calls strlen on a constant. */
struct fl__str {
    const char *s;
    size_t n;
};
#define FL__STR(lit)                                                                                                   \
    {                                                                                                                  \
        lit, sizeof lit - 1                                                                                            \
    }

static char *fl__put_str(char *o, struct fl__str str)
{
    memcpy(o, str.s, str.n);
    return o + str.n;
}

size_t fl__prefix(const forklog *log, enum forklog_level level, const struct timespec *now, char *out)
{
    char *o = out;
    long pid = fl__pid(log);
    char pidbuf[24];
    size_t pidlen = 0;
    do {
        pidbuf[sizeof pidbuf - 1 - pidlen++] = (char)('0' + pid % 10);
        pid /= 10;
    } while (pid > 0 && pidlen < sizeof pidbuf);
    const int json = log->format == FORKLOG_FORMAT_JSON;
    /* text: `TS LEVEL pid=N `; JSON: `{"ts":"TS","level":"level","pid":N,"msg":"` */
    static const struct fl__str parts[2][4] = {
        {FL__STR(""), FL__STR(" "), FL__STR(" pid="), FL__STR(" ")},
        {FL__STR("{\"ts\":\""), FL__STR("\",\"level\":\""), FL__STR("\",\"pid\":"), FL__STR(",\"msg\":\"")}};
    static const struct fl__str levels[2][5] = {
        {FL__STR(""), FL__STR("DEBUG"), FL__STR("INFO"), FL__STR("WARN"), FL__STR("ERROR")},
        {FL__STR(""), FL__STR("debug"), FL__STR("info"), FL__STR("warn"), FL__STR("error")}};
    const struct fl__str *part = parts[json];
    o = fl__put_str(o, part[0]);
    fl__rfc3339(o, now);
    o = fl__put_str(o + 27, part[1]);
    o = fl__put_str(o, levels[json][level]);
    o = fl__put_str(o, part[2]);
    memcpy(o, pidbuf + sizeof pidbuf - pidlen, pidlen);
    o = fl__put_str(o + pidlen, part[3]);
    return (size_t)(o - out);
}

/* Byte-parallel tests on 8 bytes at a time (Hacker's Delight / the "bit twiddling hacks" idioms). */
#define FL__ONES           ((uint64_t)0x0101010101010101u)
#define FL__HIGHS          ((uint64_t)0x8080808080808080u)
#define FL__HAS_ZERO(x)    (((x)-FL__ONES) & ~(x)&FL__HIGHS)
#define FL__HAS_LESS(x, n) (((x)-FL__ONES * (n)) & ~(x)&FL__HIGHS)

int fl__needs_escape(int json, const char *s, size_t len)
{
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t x;
        memcpy(&x, s + i, 8);
        uint64_t hit = FL__HAS_LESS(x, 0x20) | FL__HAS_ZERO(x ^ (FL__ONES * 0x7f));
        if (json)
            hit |= (x & FL__HIGHS) | FL__HAS_ZERO(x ^ (FL__ONES * '"')) | FL__HAS_ZERO(x ^ (FL__ONES * '\\'));
        if (hit)
            return 1;
    }
    const unsigned char *u = (const unsigned char *)s;
    for (; i < len; i++) {
        unsigned char c = u[i];
        if (c < 0x20 || c == 0x7f || (json && (c == '"' || c == '\\' || c >= 0x80)))
            return 1;
    }
    return 0;
}

size_t fl__build(const forklog *log, enum forklog_level level, const struct timespec *now, const char *msg,
                 size_t msglen, size_t msg_total, const struct fl__field *fields, size_t nfields, char *out, size_t cap,
                 size_t *cut)
{
    const int json = log->format == FORKLOG_FORMAT_JSON;
    size_t o = fl__prefix(log, level, now, out);

    /* Fields go after the message; render them into the tail of out first, then move them into place. The
     * closing bytes (`"` before JSON fields, `}` and the newline) are counted in `close`. */
    const size_t close = json ? 1 + 1 + 1 : 1;
    char fbuf[1024];
    /* The fields leave room for the closing bytes and a cut marker: the record stays well-formed at any cap. */
    size_t fcap = cap > o + close + FL__MARKER_MAX ? cap - o - close - FL__MARKER_MAX : 0;
    if (fcap > sizeof fbuf)
        fcap = sizeof fbuf;
    size_t flen = nfields ? fl__fields(json, fields, nfields, fbuf, fcap) : 0;
    size_t room = cap > o + flen + close ? cap - o - flen - close : 0;

    size_t used;
    size_t mlen = fl__escape(json, out + o, room, msg, msglen, &used);
    size_t cut_bytes = msg_total - used;
    char marker[FL__MARKER_MAX];
    int markerlen = 0;
    if (cut_bytes) {
        /* Make room for the marker, whose width depends on the count it reports. */
        for (int pass = 0; pass < 3; pass++) {
            size_t r = room > (size_t)FL__MARKER_MAX ? room - FL__MARKER_MAX : 0;
            mlen = fl__escape(json, out + o, r, msg, msglen, &used);
            cut_bytes = msg_total - used;
            markerlen = json ? snprintf(marker, sizeof marker, ",\"cut\":%zu", cut_bytes)
                             : snprintf(marker, sizeof marker, " [forklog: %zu bytes cut]", cut_bytes);
            if (mlen + (size_t)markerlen <= room)
                break;
        }
    }
    o += mlen;
    if (json)
        fl__put(out, cap, &o, "\"", 1);
    else if (markerlen)
        fl__put(out, cap, &o, marker, (size_t)markerlen);
    fl__put(out, cap, &o, fbuf, flen);
    if (json) {
        if (markerlen)
            fl__put(out, cap, &o, marker, (size_t)markerlen);
        fl__put(out, cap, &o, "}", 1);
    }
    if (o >= cap)
        o = cap - 1; /* cannot happen with cap >= 256; keeps the newline in all cases */
    out[o++] = '\n';
    *cut = cut_bytes;
    return o;
}
