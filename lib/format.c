/* SPDX-License-Identifier: MIT */
/*
 * Record formatting: timestamps, escaping, typed fields, the layout of text and JSON records, and a printf fast
 * path. No locks and no allocation; the only state is per thread (the timestamp's second, the thread id), so they
 * are safe in a forked child and from any thread.
 */
#include "internal.h"

#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <langinfo.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

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

/* "00" .. "99": two decimal digits per lookup. */
static const char fl__pairs[201] = "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
                                   "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
                                   "8081828384858687888990919293949596979899";

/* The six digits of the microseconds of tv_nsec, in three two-digit steps (the compiler turns the divisions by
 * constants into multiplications). */
static void fl__micros(char out[6], long nsec)
{
    unsigned us = (unsigned)(nsec / 1000) % 1000000u;
    unsigned hi = us / 10000, rest = us % 10000;
    memcpy(out, fl__pairs + 2 * hi, 2);
    memcpy(out + 2, fl__pairs + 2 * (rest / 100), 2);
    memcpy(out + 4, fl__pairs + 2 * (rest % 100), 2);
}

static void fl__digits(char *out, unsigned long v, int n)
{
    while (n-- > 0) {
        out[n] = (char)('0' + v % 10);
        v /= 10;
    }
}

/* The seconds of 0000-01-01T00:00:00Z and 9999-12-31T23:59:59Z: a time outside is written as the nearer of the
 * two, so that every timestamp has four digits of year and times keep their order. */
#define FL__SEC_MIN (-62167219200LL)
#define FL__SEC_MAX 253402300799LL

static void fl__rfc3339_slow(char out[27], long long sec, long nsec);

/* The date and time of day change once a second: each thread keeps the last second it formatted. A forked
 * child inherits a copy that is still right. A thread starts with a real second and its real text, so that the
 * cache is right from its first record whatever that record's time (and the record path tests nothing more).
 * A signal handler may log while its thread is building a record (docs/api.md), and so read or replace the cache
 * in the middle of the interrupted call's read or update: `seq` is odd while an update is under way and moves with
 * each one. A reader that finds it odd, or finds that it moved during its copy, formats the time itself; a handler
 * that interrupted an update stores nothing. Without it, a record took the other call's date and time of day with
 * its own microseconds. */
static _Thread_local struct {
    unsigned seq;
    time_t sec;
    char text[19]; /* YYYY-MM-DDTHH:MM:SS, no NUL (hence the initialiser's braces) */
} fl__second_cache = {
    0, -1, {'1', '9', '6', '9', '-', '1', '2', '-', '3', '1', 'T', '2', '3', ':', '5', '9', ':', '5', '9'}};

static inline void fl__rfc3339_inline(char out[27], const struct timespec *ts)
{
    const unsigned seq = fl__second_cache.seq;
    atomic_signal_fence(memory_order_seq_cst);
    if (!(seq & 1) && ts->tv_sec == fl__second_cache.sec) {
        memcpy(out, fl__second_cache.text, 19);
        atomic_signal_fence(memory_order_seq_cst);
        if (fl__second_cache.seq == seq) {
            out[19] = '.';
            fl__micros(out + 20, ts->tv_nsec);
            out[26] = 'Z';
            return;
        }
    }
    fl__rfc3339_slow(out, (long long)ts->tv_sec, ts->tv_nsec);
    /* A clamped second is not kept: its fraction is clamped too, which the cached path would not do. The
     * second goes through a variable so that gcc's -Wtype-limits does not call the test always true where
     * time_t has 32 bits (and fail a -Werror build there). */
    const long long sec = (long long)ts->tv_sec;
    if (sec >= FL__SEC_MIN && sec <= FL__SEC_MAX && !(fl__second_cache.seq & 1)) {
        fl__second_cache.seq++;
        atomic_signal_fence(memory_order_seq_cst);
        memcpy(fl__second_cache.text, out, 19);
        fl__second_cache.sec = ts->tv_sec;
        atomic_signal_fence(memory_order_seq_cst);
        fl__second_cache.seq++;
    }
}

void fl__rfc3339(char out[27], const struct timespec *ts)
{
    fl__rfc3339_inline(out, ts);
}

/* sec and nsec (0 .. 999999999) as `YYYY-MM-DDTHH:MM:SS.uuuuuuZ`, clamped to years 0000 .. 9999: a time before
 * is 0000-01-01T00:00:00.000000Z, a time after 9999-12-31T23:59:59.999999Z. */
static void fl__rfc3339_slow(char out[27], long long sec, long nsec)
{
    if (sec < FL__SEC_MIN) {
        sec = FL__SEC_MIN;
        nsec = 0;
    } else if (sec > FL__SEC_MAX) {
        sec = FL__SEC_MAX;
        nsec = 999999999;
    }
    int64_t secs = (int64_t)sec;
    int64_t days = secs / 86400;
    int64_t rem = secs % 86400;
    if (rem < 0) {
        rem += 86400;
        days -= 1;
    }
    int y;
    unsigned m, d;
    fl__civil(days, &y, &m, &d);
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
    fl__digits(out + 20, (unsigned long)(nsec / 1000), 6);
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

int fl__utf8_valid(const char *s, size_t len)
{
    for (size_t i = 0, n; i < len; i += n)
        if (!(n = fl__utf8_len((const unsigned char *)s + i, len - i)))
            return 0;
    return 1;
}

static const char fl__hex[] = "0123456789abcdef";

size_t fl__escape(int mode, char *dst, size_t cap, const char *src, size_t len, size_t *used)
{
    const int json = mode == 1, quoted = json || mode == 2;
    const unsigned char *s = (const unsigned char *)src;
    size_t o = 0, i = 0;
    while (i < len) {
        unsigned char c = s[i];
        char esc[6];
        const char *put = (const char *)s + i;
        size_t put_len = 1, take = 1;
        if (c < 0x20 || c == 0x7f || (quoted && (c == '"' || c == '\\'))) {
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
            while (j < len && s[j] >= 0x20 && s[j] != 0x7f && !(quoted && (s[j] == '"' || s[j] == '\\')) &&
                   !(json && s[j] >= 0x80))
                j++;
            take = put_len = j - i;
            if (o + put_len > cap) {
                /* Cut where the room ends, but never inside a valid UTF-8 sequence: a message of valid UTF-8 then
                 * stays valid UTF-8 when it is cut (the text format keeps non-ASCII bytes as they are). A cut
                 * inside a character moves back to its first byte, at most 3 bytes; bytes that are not UTF-8 are
                 * cut where they are. */
                size_t end = i + (cap - o), lead = end;
                while (lead > i && end - lead < 3 && (s[lead] & 0xC0) == 0x80)
                    lead--;
                if (lead < end && (s[lead] & 0xC0) == 0xC0) {
                    size_t n = fl__utf8_len(s + lead, j - lead);
                    if (n && lead + n > end)
                        end = lead;
                }
                take = put_len = end - i;
            }
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

/* Longest cut marker: text ` [forklog: 18446744073709551615 bytes cut]`, JSON `,"forklog.cut":18446744073709551615`. */
#define FL__MARKER_MAX 48

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

/* The record's own keys, per key set (0: short, also text's; 1: ECS / OpenTelemetry). */
enum {
    FL__K_TS,
    FL__K_LEVEL,
    FL__K_PID,
    FL__K_TID,
    FL__K_APP,
    FL__K_MSG,
    FL__K_FILE,
    FL__K_LINE,
    FL__K_FUNC,
    FL__K_CUT,
    FL__K_COUNT
};
static const struct fl__str fl__builtin[2][FL__K_COUNT] = {
    {FL__STR("ts"), FL__STR("level"), FL__STR("pid"), FL__STR("tid"), FL__STR("app"), FL__STR("msg"), FL__STR("file"),
     FL__STR("line"), FL__STR("func"), FL__STR("cut")},
    {FL__STR("@timestamp"), FL__STR("log.level"), FL__STR("process.pid"), FL__STR("process.thread.id"),
     FL__STR("service.name"), FL__STR("message"), FL__STR("log.origin.file.name"), FL__STR("log.origin.file.line"),
     FL__STR("log.origin.function"), FL__STR("forklog.cut")}};

/* The key set of a handle's records: text always uses the short names. */
static int fl__keyset(const forklog *log)
{
    return fl__keyset_of(log->format, log->keys);
}

/* Whether a field's key is taken by the record's own keys, and is then written `fields.KEY`: one of them, or, in the
 * ECS key set, whose consumers (Elasticsearch) read a dotted name as a path of objects, a key on the path of one
 * (`log`, `log.origin`, `process`, `service`: an object there) or below one (`message.x`, `log.level.y`: a value
 * there). Such a key would make the record's types clash, and the whole record be refused by the index. */
static int fl__is_builtin(int ks, const char *k, size_t klen)
{
    for (int i = 0; i < FL__K_COUNT; i++) {
        const struct fl__str b = fl__builtin[ks][i];
        if (b.s[0] != k[0])
            continue;
        if (b.n == klen  ? memcmp(b.s, k, klen) == 0
            : !ks        ? 0
            : b.n > klen ? b.s[klen] == '.' && memcmp(b.s, k, klen) == 0
                         : k[b.n] == '.' && memcmp(b.s, k, b.n) == 0)
            return 1;
    }
    return 0;
}

/* ---- values ---------------------------------------------------------------------------------------------------- */

static const uint64_t fl__pow10[20] = {1ull,
                                       10ull,
                                       100ull,
                                       1000ull,
                                       10000ull,
                                       100000ull,
                                       1000000ull,
                                       10000000ull,
                                       100000000ull,
                                       1000000000ull,
                                       10000000000ull,
                                       100000000000ull,
                                       1000000000000ull,
                                       10000000000000ull,
                                       100000000000000ull,
                                       1000000000000000ull,
                                       10000000000000000ull,
                                       100000000000000000ull,
                                       1000000000000000000ull,
                                       10000000000000000000ull};

/* memcpy for the short pieces of a record (literals, numbers, short strings): up to 16 bytes without a call, in
 * two overlapping loads and stores. */
static inline void fl__copy(char *d, const char *s, size_t n)
{
    if (n > 16) {
        memcpy(d, s, n);
    } else if (n >= 8) {
        uint64_t a, b;
        memcpy(&a, s, 8);
        memcpy(&b, s + n - 8, 8);
        memcpy(d, &a, 8);
        memcpy(d + n - 8, &b, 8);
    } else if (n >= 4) {
        uint32_t a, b;
        memcpy(&a, s, 4);
        memcpy(&b, s + n - 4, 4);
        memcpy(d, &a, 4);
        memcpy(d + n - 4, &b, 4);
    } else if (n) {
        d[0] = s[0];
        d[n / 2] = s[n / 2];
        d[n - 1] = s[n - 1];
    }
}

/* The number of decimal digits of v. */
static inline size_t fl__ndigits(unsigned long long v)
{
#if defined(__GNUC__)
    /* From the bit length: log10(2) ~ 1233 / 4096, corrected by one comparison. */
    size_t n = (size_t)(((64 - __builtin_clzll(v | 1)) * 1233) >> 12);
    return n + ((v | 1) >= fl__pow10[n]);
#else
    size_t n = 1;
    while (n < 20 && v >= fl__pow10[n])
        n++;
    return n;
#endif
}

/* Two and four decimal digits of v, from the table of pairs. */
static inline void fl__dec2(char *out, unsigned v)
{
    memcpy(out, fl__pairs + 2 * v, 2);
}

static inline void fl__dec4(char *out, unsigned v)
{
    fl__dec2(out, v / 100);
    fl__dec2(out + 2, v % 100);
}

/* The decimal digits of v into out[0..n), n being fl__ndigits(v) or more (zero-padded on the left): eight digits
 * at a time from the right while more than eight are left, then four, then the rest; each step a division by a
 * constant (a multiplication) and table lookups, no loop over single digits. */
static inline void fl__udec_fixed(char *out, unsigned long long v, size_t n)
{
    while (n > 8) {
        unsigned lo = (unsigned)(v % 100000000u);
        v /= 100000000u;
        n -= 8;
        fl__dec4(out + n, lo / 10000);
        fl__dec4(out + n + 4, lo % 10000);
    }
    unsigned w = (unsigned)v;
    if (n > 4) {
        n -= 4;
        fl__dec4(out + n, w % 10000);
        w /= 10000;
    }
    switch (n) {
    case 4: fl__dec4(out, w); break;
    case 3:
        out[0] = (char)('0' + w / 100);
        fl__dec2(out + 1, w % 100);
        break;
    case 2: fl__dec2(out, w); break;
    case 1: out[0] = (char)('0' + w); break;
    default: break;
    }
}

/* Decimal digits of v, written backwards so that they end at `end`. Returns how many. */
static size_t fl__udec_back(char *end, unsigned long long v)
{
    const char *pairs = fl__pairs;
    char *p = end;
    while (v >= 100) {
        unsigned r = (unsigned)(v % 100);
        v /= 100;
        p -= 2;
        memcpy(p, pairs + 2 * r, 2);
    }
    if (v >= 10) {
        p -= 2;
        memcpy(p, pairs + 2 * v, 2);
    } else {
        *--p = (char)('0' + v);
    }
    return (size_t)(end - p);
}

static size_t fl__utoa(char *out, unsigned long long v)
{
    size_t n = fl__ndigits(v);
    fl__udec_fixed(out, v, n);
    return n;
}

static size_t fl__itoa(char *out, long long v)
{
    if (v < 0) {
        out[0] = '-';
        return 1 + fl__utoa(out + 1, -(unsigned long long)v);
    }
    return fl__utoa(out, (unsigned long long)v);
}

static int fl__rounds_to_nearest(void);

/* The decimal digits of a, whatever the rounding mode: printf's %e with more digits than the exact value has (at
 * most 767 significant ones for a double, about as many for the midpoint of two, in long double) is exact. Parses
 * it into dig[0..n) (n digits, the first not 0 unless a is 0) and the exponent of the first; the locale's radix, of
 * one or more bytes, is skipped. Returns n. */
#define FL__EXACT_DIGITS 800
static size_t fl__exact_digits(long double a, char *dig, int *exp10)
{
    char buf[FL__EXACT_DIGITS + 64];
    int len = snprintf(buf, sizeof buf, "%.*Le", FL__EXACT_DIGITS, a);
    size_t n = 0;
    int i = 0;
    for (; i < len && buf[i] != 'e'; i++)
        if (buf[i] >= '0' && buf[i] <= '9')
            dig[n++] = buf[i];
    *exp10 = i < len ? atoi(buf + i + 1) : 0;
    return n;
}

/* Compares the decimal numbers 0.a[0..an) * 10^(ax + 1) and 0.b[0..bn) * 10^(bx + 1), both above 0 with a first
 * digit that is not 0: -1, 0 or 1. */
static int fl__dec_cmp(const char *a, size_t an, int ax, const char *b, size_t bn, int bx)
{
    if (ax != bx)
        return ax < bx ? -1 : 1;
    for (size_t i = 0; i < an || i < bn; i++) {
        char x = i < an ? a[i] : '0', y = i < bn ? b[i] : '0';
        if (x != y)
            return x < y ? -1 : 1;
    }
    return 0;
}

/* fl__dtoa in a rounding mode other than to nearest (fesetround), where printf and strtod follow the mode: a %.Ng
 * of printf's would not be the nearest N digits, and strtod would not say whether they read back as d where a
 * reader (rounding to nearest) reads them. The N digits are rounded here, to nearest, from the exact decimal value
 * of d, and they read back as d when they lie between the midpoints to d's neighbours (on one, when d's last bit
 * is 0: ties go to even), which long double holds exactly. The same bytes as fl__dtoa writes rounding to nearest.
 * a is finite and above 0; returns the length of the number written at out (room for 40 bytes). */
static size_t fl__dtoa_exact(char *out, double a)
{
    char dig[FL__EXACT_DIGITS + 8], lo[FL__EXACT_DIGITS + 8], hi[FL__EXACT_DIGITS + 8];
    int x, lox = 0, hix = 0;
    size_t n = fl__exact_digits(a, dig, &x), lon = 0, hin = 0;
    uint64_t bits;
    memcpy(&bits, &a, sizeof bits);
#if LDBL_MANT_DIG >= 64 && LDBL_MANT_DIG != 106
    /* The neighbours' gaps are exact differences (Sterbenz); past the largest double, the gap it would have. In long
     * double: double arithmetic would take a subnormal neighbour for 0 under SSE's denormals-are-zero. */
    double up, down;
    uint64_t ub = bits + 1, db = bits - 1;
    memcpy(&up, &ub, sizeof up);
    memcpy(&down, &db, sizeof down);
    const long double gap_up = (ub >> 52) == 0x7ff ? (long double)a - down : (long double)up - a,
                      gap_down = (long double)a - down;
    lon = fl__exact_digits((long double)a - gap_down / 2, lo, &lox);
    hin = fl__exact_digits((long double)a + gap_up / 2, hi, &hix);
#endif
    char c[18];
    int cx = x;
    /* Without the midpoints (no long double wide enough), 17 digits, which always read back. */
    int prec = lon && hin ? 15 : 17;
    for (;; prec++) {
        /* dig rounded to prec digits, to nearest, ties to even. */
        memcpy(c, dig, (size_t)prec);
        cx = x;
        int up_ = 0;
        if ((size_t)prec < n && dig[prec] != '0') {
            up_ = dig[prec] > '5';
            if (dig[prec] == '5') {
                up_ = (dig[prec - 1] - '0') & 1;
                for (size_t i = (size_t)prec + 1; i < n && !up_; i++)
                    up_ = dig[i] != '0';
            }
        }
        if (up_) {
            int i = prec - 1;
            while (i >= 0 && c[i] == '9')
                c[i--] = '0';
            if (i >= 0) {
                c[i]++;
            } else {
                c[0] = '1'; /* 999.. became 1000..: one more digit before the point */
                cx++;
            }
        }
        if (prec == 17)
            break;
        int below = fl__dec_cmp(c, (size_t)prec, cx, hi, hin, hix),
            above = fl__dec_cmp(c, (size_t)prec, cx, lo, lon, lox);
        const int even = !(bits & 1);
        if ((below < 0 || (below == 0 && even)) && (above > 0 || (above == 0 && even)))
            break;
    }
    /* As %.{prec}g lays it out: trailing zeros dropped, fixed notation for exponents -4 .. prec - 1. */
    size_t nd = (size_t)prec;
    while (nd > 1 && c[nd - 1] == '0')
        nd--;
    size_t o = 0;
    if (cx < -4 || cx >= prec) {
        out[o++] = c[0];
        if (nd > 1) {
            out[o++] = '.';
            memcpy(out + o, c + 1, nd - 1);
            o += nd - 1;
        }
        o += (size_t)snprintf(out + o, 8, "e%c%02d", cx < 0 ? '-' : '+', cx < 0 ? -cx : cx);
    } else if (cx < 0) {
        out[o++] = '0';
        out[o++] = '.';
        for (int i = -1; i > cx; i--)
            out[o++] = '0';
        memcpy(out + o, c, nd);
        o += nd;
    } else {
        for (int i = 0; i <= cx; i++)
            out[o++] = (size_t)i < nd ? c[i] : '0';
        if (nd > (size_t)cx + 1) {
            out[o++] = '.';
            memcpy(out + o, c + cx + 1, nd - (size_t)cx - 1);
            o += nd - (size_t)cx - 1;
        }
    }
    return o;
}

/* The shortest %.Ng (N = 15, 16 or 17) that reads back as d; the locale's radix becomes '.'. NaN and infinities
 * are `NaN`, `+Inf`, `-Inf` (quoted in JSON). out has room for 48 bytes. */
static size_t fl__dtoa(char *out, double d, int json)
{
    /* From the bits, not d != d: the single header builds with the program's flags (-Wfloat-equal, -ffast-math). */
    uint64_t bits;
    memcpy(&bits, &d, sizeof bits);
    const uint64_t mag = bits & 0x7fffffffffffffffull;
    const char *special = mag > 0x7ff0000000000000ull    ? "NaN"
                          : mag == 0x7ff0000000000000ull ? (bits >> 63 ? "-Inf" : "+Inf")
                                                         : 0;
    if (special) {
        size_t n = 0, l = strlen(special);
        if (json)
            out[n++] = '"';
        memcpy(out + n, special, l);
        n += l;
        if (json)
            out[n++] = '"';
        return n;
    }
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
    /* The exact digits and the midpoints of fl__dtoa_exact are long double arithmetic, and so are musl's printf and
     * strtod: with the x87 precision control below 64 bits (a program may set 53 or 24 bits), they round at that
     * precision, and the number written read back as another double. It is computed at 64 bits, in the program's
     * rounding mode, and the control word is put back. */
    unsigned short x87;
    __asm__ volatile("fnstcw %0" : "=m"(x87));
    if ((x87 & 0x0300) != 0x0300) {
        const unsigned short full = (unsigned short)(x87 | 0x0300);
        __asm__ volatile("fldcw %0" : : "m"(full) : "memory");
        size_t n = fl__dtoa(out, d, json);
        __asm__ volatile("fldcw %0" : : "m"(x87) : "memory");
        return n;
    }
#endif
    /* Zero, the sign and the read-back are asked of the bits: under SSE's denormals-are-zero (set by -ffast-math's
     * start-up code), a subnormal compares equal to 0, and to whatever subnormal its digits read back as. */
    if ((bits << 1) != 0 && !fl__rounds_to_nearest()) {
        size_t o = 0;
        if (bits >> 63)
            out[o++] = '-';
        bits &= ~((uint64_t)1 << 63);
        double a;
        memcpy(&a, &bits, sizeof a);
        return o + fl__dtoa_exact(out + o, a);
    }
    char buf[64];
    int n = 0;
    for (int prec = 15; prec <= 17; prec++) {
        n = snprintf(buf, sizeof buf, "%.*g", prec, d);
        if (prec == 17)
            break;
        double back = strtod(buf, NULL);
        if (memcmp(&back, &d, sizeof d) == 0)
            break;
    }
    size_t o = 0;
    for (int i = 0; i < n && o < 40; i++) {
        char c = buf[i];
        if ((c >= '0' && c <= '9') || c == '-' || c == '+' || c == 'e')
            out[o++] = c;
        else if (o == 0 || out[o - 1] != '.')
            out[o++] = '.'; /* the radix, whatever the locale made of it (one or more bytes) */
    }
    return o;
}

/* A duration in ns as seconds: `-1.5`, `0.000000250`, `3`. out has room for 32 bytes. */
static size_t fl__dur(char *out, long long ns)
{
    size_t o = 0;
    unsigned long long a = (unsigned long long)ns;
    if (ns < 0) {
        out[o++] = '-';
        a = -(unsigned long long)ns;
    }
    o += fl__utoa(out + o, a / 1000000000u);
    unsigned long frac = (unsigned long)(a % 1000000000u);
    if (frac) {
        out[o++] = '.';
        fl__udec_fixed(out + o, frac, 9);
        size_t k = 9;
        while (out[o + k - 1] == '0')
            k--;
        o += k;
    }
    return o;
}

/* A text value goes bare when it is not empty and holds no space, quote, '=', backslash or control byte. */
static int fl__bare(const char *s, size_t n)
{
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c == 0x7f || c == '"' || c == '=' || c == '\\')
            return 0;
    }
    return 1;
}

/* Output that either fits whole or is abandoned. */
struct fl__w {
    char *p;
    size_t n, cap;
    int over;
};

static void fl__w_put(struct fl__w *w, const char *s, size_t n)
{
    if (w->over || n > w->cap - w->n) {
        w->over = 1;
        return;
    }
    memcpy(w->p + w->n, s, n);
    w->n += n;
}

/* A string value: JSON always quoted and escaped; text bare or quoted. */
static void fl__w_string(struct fl__w *w, int json, const char *s, size_t n)
{
    int quote = json || !fl__bare(s, n);
    if (!quote) {
        fl__w_put(w, s, n);
        return;
    }
    fl__w_put(w, "\"", 1);
    if (w->over)
        return;
    size_t used;
    size_t room = w->cap - w->n;
    w->n += fl__escape(json ? 1 : 2, w->p + w->n, room, s, n, &used);
    if (used < n) {
        w->over = 1;
        return;
    }
    fl__w_put(w, "\"", 1);
}

/* A value that is not a string, as a field renders it, into out (room for 64 bytes). Returns its length, or 0 for
 * an unknown type (fl__check_fields refuses it first). */
static size_t fl__value(char *out, int json, const struct forklog_field *f)
{
    size_t n = 0;
    switch (f->type) {
    case FORKLOG_FIELD_INT: return fl__itoa(out, f->v.i);
    case FORKLOG_FIELD_UINT: return fl__utoa(out, f->v.u);
    case FORKLOG_FIELD_DBL: return fl__dtoa(out, f->v.d, json);
    case FORKLOG_FIELD_BOOL:
        n = f->v.b ? 4 : 5;
        memcpy(out, f->v.b ? "true" : "false", n);
        return n;
    case FORKLOG_FIELD_DUR: return fl__dur(out, f->v.ns);
    case FORKLOG_FIELD_TIME: {
        long long sec = f->v.t.sec;
        long nsec = f->v.t.nsec;
        if (nsec < 0 || nsec > 999999999) {
            long long carry = nsec / 1000000000;
            nsec %= 1000000000;
            if (nsec < 0) {
                nsec += 1000000000;
                carry--;
            }
            /* Saturated: a second past LLONG_MAX or LLONG_MIN is clamped to 9999 or 0000 anyway. */
            if (carry > 0 && sec > LLONG_MAX - carry)
                sec = LLONG_MAX;
            else if (carry < 0 && sec < LLONG_MIN - carry)
                sec = LLONG_MIN;
            else
                sec += carry;
        }
        if (json)
            out[n++] = '"';
        fl__rfc3339_slow(out + n, sec, nsec);
        n += 27;
        if (json)
            out[n++] = '"';
        return n;
    }
    default: return 0;
    }
}

/* One field: ` key=value` (text) or `,"key":value` (JSON). `rename`: the key is one of the record's own and is
 * written as `fields.key`. */
static void fl__w_field(struct fl__w *w, int json, int rename, const char *key, size_t klen,
                        const struct forklog_field *f)
{
    fl__w_put(w, json ? ",\"" : " ", json ? 2 : 1);
    if (rename)
        fl__w_put(w, "fields.", 7);
    fl__w_put(w, key, klen);
    fl__w_put(w, json ? "\":" : "=", json ? 2 : 1);
    if (f->type == FORKLOG_FIELD_STR) {
        if (!f->v.s) {
            if (json)
                fl__w_put(w, "null", 4);
            return;
        }
        fl__w_string(w, json, f->v.s, strlen(f->v.s));
        return;
    }
    char num[64];
    size_t n = fl__value(num, json, f);
    if (n == 0)
        w->over = 1;
    else
        fl__w_put(w, num, n);
}

static int fl__key_ok(const char *k, size_t *klen)
{
    if (!k)
        return 0;
    size_t n = 0;
    for (; k[n]; n++) {
        unsigned char c = (unsigned char)k[n];
        if (n == FORKLOG_MAX_KEY || !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                                      c == '_' || c == '.' || c == '-' || c == '@'))
            return 0;
    }
    *klen = n;
    return n > 0;
}

int fl__check_fields(const struct forklog_field *fields, size_t n)
{
    if (n && !fields)
        return -EINVAL;
    if (n > FORKLOG_MAX_FIELDS)
        return -EINVAL;
    for (size_t k = 0; k < n; k++) {
        size_t klen;
        if (!fl__key_ok(fields[k].key, &klen))
            return -EINVAL;
        if (fields[k].type < FORKLOG_FIELD_STR || fields[k].type > FORKLOG_FIELD_TIME)
            return -EINVAL;
    }
    return 0;
}

/* The caller's location as fields (file, line, and func when known) in lf[0..3); returns how many: 0 without one. */
static int fl__loc_fields(const struct fl__loc *loc, struct forklog_field lf[3])
{
    if (!loc || !loc->file)
        return 0;
    lf[0].type = FORKLOG_FIELD_STR, lf[0].v.s = loc->file;
    lf[1].type = FORKLOG_FIELD_INT, lf[1].v.i = loc->line;
    lf[2].type = FORKLOG_FIELD_STR, lf[2].v.s = loc->func;
    return loc->func ? 3 : 2;
}

/* Whether two keys are written as the same name: a key with `pre` set (one of the record's own) is written
 * `fields.KEY`, so that "ts" and "fields.ts" name the same field. */
static int fl__same_written_key(const char *a, size_t an, int apre, const char *b, size_t bn, int bpre)
{
    if (an + (apre ? 7 : 0) != bn + (bpre ? 7 : 0))
        return 0;
    if (apre == bpre)
        return memcmp(a, b, an) == 0;
    if (apre) { /* b must be `fields.` and a */
        const char *t = a;
        a = b, b = t;
        bn = an;
    }
    return memcmp(a, "fields.", 7) == 0 && memcmp(a + 7, b, bn) == 0;
}

int fl__same_key(int ks, const char *a, const char *b)
{
    size_t an = strlen(a), bn = strlen(b);
    return fl__same_written_key(a, an, fl__is_builtin(ks, a, an), b, bn, fl__is_builtin(ks, b, bn));
}

/* Renders what follows the message: the location, the context, the call's fields, each whole or not at all, into
 * out[0..cap); a field whose key (as written) a later one of the context or the call gives again is left out, so
 * that the last value wins. The call has at most FORKLOG_MAX_FIELDS fields, and so has the context (fl__check_fields
 * and forklog_context_add see to it). Returns the length. */
static size_t fl__tail(int json, int ks, const struct fl__loc *loc, const struct fl__ctx *ctx,
                       const struct forklog_field *f, size_t n, char *out, size_t cap, int *left_out)
{
    size_t o = 0;
    *left_out = 0;
    struct fl__w w;
    struct forklog_field lf[3];
    /* The location (file, line, func) goes in whole or not at all. */
    for (int i = 0, nl = fl__loc_fields(loc, lf); i < nl && !*left_out; i++) {
        const struct fl__str *key = &fl__builtin[ks][FL__K_FILE + i];
        w = (struct fl__w){out + o, 0, cap - o, 0};
        fl__w_field(&w, json, 0, key->s, key->n, &lf[i]);
        if (w.over)
            *left_out = 1, o = 0;
        else
            o += w.n;
    }
    const size_t nctx = ctx ? ctx->n : 0, total = nctx + n;
    if (nctx > FORKLOG_MAX_FIELDS || n > FORKLOG_MAX_FIELDS)
        return o;
    /* Each key's length and whether it is written `fields.KEY`. */
    size_t klen[2 * FORKLOG_MAX_FIELDS];
    unsigned char pre[2 * FORKLOG_MAX_FIELDS];
    for (size_t i = 0; i < total; i++) {
        const char *k = i < nctx ? ctx->f[i].key : f[i - nctx].key;
        klen[i] = strlen(k);
        pre[i] = (unsigned char)fl__is_builtin(ks, k, klen[i]);
    }
    for (size_t i = 0; i < total; i++) {
        const struct forklog_field *fi = i < nctx ? &ctx->f[i] : &f[i - nctx];
        int again = 0;
        for (size_t j = i + 1; j < total && !again; j++)
            again = fl__same_written_key(j < nctx ? ctx->f[j].key : f[j - nctx].key, klen[j], pre[j], fi->key, klen[i],
                                         pre[i]);
        if (again)
            continue;
        w = (struct fl__w){out + o, 0, cap - o, 0};
        fl__w_field(&w, json, pre[i], fi->key, klen[i], fi);
        if (!w.over)
            o += w.n;
        *left_out |= w.over;
    }
    return o;
}

/* ---- the fields fast path ------------------------------------------------------------------------------------- */

/* For the small helpers of the fast path, which the compiler would otherwise call out of line from its two copies
 * (text and JSON) of fl__tail_fast. */
#ifdef __GNUC__
#define FL__INLINE static inline __attribute__((always_inline))
#else
#define FL__INLINE static inline
#endif

/* What a byte is to the fast paths (the fields' and the printf one's), one bit per question. */
enum {
    FL__C_KEY = 1,      /* [A-Za-z0-9_.@-] */
    FL__C_NOT_BARE = 2, /* keeps a text value from going bare: space and below, DEL, '"', '=', '\\' */
    FL__C_TEXT_ESC = 4, /* escaped in a quoted text value: below space, DEL, '"', '\\' */
    FL__C_JSON_ESC = 8, /* escaped or validated in a JSON string: below space, DEL, '"', '\\', 0x80 and above */
    FL__C_FMT_STOP = 16 /* ends a run of a format's literal bytes: '%', NUL */
};
static const unsigned char fl__cls[256] = {
    30, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, /* 0x00 */
    14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, /* 0x10 */
    2,  0,  14, 0,  0,  16, 0,  0,  0,  0,  0,  0,  0,  1,  1,  0,  /* 0x20 space ! " ... % ... - . / */
    1,  1,  1,  1,  1,  1,  1,  1,  1,  1,  0,  0,  0,  2,  0,  0,  /* 0x30 0-9 : ; < = > ? */
    1,  1,  1,  1,  1,  1,  1,  1,  1,  1,  1,  1,  1,  1,  1,  1,  /* 0x40 @ A-O */
    1,  1,  1,  1,  1,  1,  1,  1,  1,  1,  1,  0,  14, 0,  0,  1,  /* 0x50 P-Z [ \ ] ^ _ */
    0,  1,  1,  1,  1,  1,  1,  1,  1,  1,  1,  1,  1,  1,  1,  1,  /* 0x60 ` a-o */
    1,  1,  1,  1,  1,  1,  1,  1,  1,  1,  1,  0,  0,  0,  0,  14, /* 0x70 p-z { | } ~ DEL */
    8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  /* 0x80 */
    8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  /* 0x90 */
    8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  /* 0xa0 */
    8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  /* 0xb0 */
    8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  /* 0xc0 */
    8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  /* 0xd0 */
    8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  /* 0xe0 */
    8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  8,  /* 0xf0 */
};

/* Copies the key k to p while checking it: valid when 1 .. FORKLOG_MAX_KEY key bytes ([A-Za-z0-9_.@-]) end at its
 * NUL. One pass, a byte at a time (four per step), reading nothing past the first byte that is not a key byte (the
 * NUL ends the run); that byte is written too, so up to FORKLOG_MAX_KEY + 4 bytes at p. Returns the length, or 0
 * for a key that is not valid. */
FL__INLINE size_t fl__key_copy(char *p, const char *k)
{
    const unsigned char *u = (const unsigned char *)k;
    for (size_t l = 0; l <= FORKLOG_MAX_KEY; l += 4) {
        unsigned char c;
        /* Valid when the byte that ends the run is the NUL; l + i - 1 wraps for an empty key. */
#define FL__KEY_BYTE(i)                                                                                                \
    p[l + (i)] = (char)(c = u[l + (i)]);                                                                               \
    if (!(fl__cls[c] & FL__C_KEY))                                                                                     \
        return c == 0 && l + (i)-1 < FORKLOG_MAX_KEY ? l + (i) : 0;
        FL__KEY_BYTE(0)
        FL__KEY_BYTE(1)
        FL__KEY_BYTE(2)
        FL__KEY_BYTE(3)
#undef FL__KEY_BYTE
    }
    return 0;
}

/* Whether a key is one of the record's own (fl__is_builtin), with the lengths and first bytes of the key set's
 * names ruling most keys out before any comparison. */
static inline int fl__is_builtin_fast(int ks, const char *k, size_t klen)
{
    /* Per key set and first byte, the lengths of the names that start with it (all below 32; a longer key may
     * pass this test by its length modulo 32, and fl__is_builtin then says no). */
    static const uint32_t lengths[2][256] = {{['a'] = 1u << 3,
                                              ['c'] = 1u << 3,
                                              ['f'] = 1u << 4,
                                              ['l'] = 1u << 4 | 1u << 5,
                                              ['m'] = 1u << 3,
                                              ['p'] = 1u << 3,
                                              ['t'] = 1u << 2 | 1u << 3},
                                             {['@'] = 1u << 10,
                                              ['f'] = 1u << 11,
                                              ['l'] = 1u << 9 | 1u << 19 | 1u << 20,
                                              ['m'] = 1u << 7,
                                              ['p'] = 1u << 11 | 1u << 17,
                                              ['s'] = 1u << 12}};
    /* The ECS key set also takes the keys on a name's path and below it (fl__is_builtin): any length. */
    return (ks ? lengths[ks][(unsigned char)k[0]] != 0 : lengths[ks][(unsigned char)k[0]] >> (klen & 31) & 1) &&
           fl__is_builtin(ks, k, klen);
}

/* The decimal digits of v (below 10^4) at p, without leading zeros; returns their end. */
FL__INLINE char *fl__dec_upto4(char *p, unsigned v)
{
    if (v < 100) {
        if (v < 10) {
            *p = (char)('0' + v);
            return p + 1;
        }
        fl__dec2(p, v);
        return p + 2;
    }
    const unsigned hi = v / 100;
    if (hi < 10)
        *p++ = (char)('0' + hi);
    else
        fl__dec2(p, hi), p += 2;
    fl__dec2(p, v % 100);
    return p + 2;
}

/* Writes a field's value at p (a key and its `=` or `":` before it), as fl__w_field does, if it fits below
 * out + end and needs no escaping (text: a value that goes bare, or quoted with nothing to escape; JSON: a string
 * with nothing to escape); room for 64 bytes at p is known. Returns the new end of the output, 0 to leave the
 * record to fl__build, or -1 for a type that is none of forklog's (which fl__check_fields refuses). */
#ifdef __GNUC__
__attribute__((always_inline))
#endif
static inline long
fl__fast_value(char *out, char *p, size_t end, int json, const struct forklog_field *f)
{
    switch (f->type) {
    case FORKLOG_FIELD_INT:
    case FORKLOG_FIELD_UINT: {
        unsigned long long a = f->v.u;
        if (f->type == FORKLOG_FIELD_INT && f->v.i < 0) {
            *p++ = '-';
            a = -a;
        }
        if (a < 100000000) {
            /* Below 10^8 (most numbers), in 32-bit steps: the digits above the last four, then those four. */
            unsigned v = (unsigned)a;
            if (v >= 10000) {
                p = fl__dec_upto4(p, v / 10000);
                fl__dec4(p, v % 10000);
                return p + 4 - out;
            }
            return fl__dec_upto4(p, v) - out;
        }
        size_t n = fl__ndigits(a);
        fl__udec_fixed(p, a, n);
        return p + n - out;
    }
    case FORKLOG_FIELD_DUR:
        if (f->v.ns >= 0 && f->v.ns < 1000000000) {
            /* A duration below a second, as fl__dur writes it: `0`, or `0.` and the nine digits of the nanoseconds
             * (32-bit steps: one, then four and four) without the zeros that end them. */
            *p++ = '0';
            if (f->v.ns) {
                const unsigned ns = (unsigned)f->v.ns, low8 = ns % 100000000;
                p[0] = '.';
                p[1] = (char)('0' + ns / 100000000);
                fl__dec4(p + 2, low8 / 10000);
                fl__dec4(p + 6, low8 % 10000);
                p += 10;
                while (p[-1] == '0')
                    p--;
            }
            return p - out;
        }
        /* fall through */
    case FORKLOG_FIELD_DBL:
    case FORKLOG_FIELD_BOOL:
    case FORKLOG_FIELD_TIME: {
        size_t n = fl__value(p, json, f);
        return n ? p + n - out : 0;
    }
    case FORKLOG_FIELD_STR: break;
    default: return -1;
    }
    const char *v = f->v.s;
    if (!v) {
        if (json) {
            memcpy(p, "null", 4);
            p += 4;
        }
        return p - out;
    }
    unsigned cls = 0;
    size_t n = 0;
    for (unsigned char c; (c = (unsigned char)v[n]) != 0; n++)
        cls |= fl__cls[c];
    if (cls & (json ? FL__C_JSON_ESC : FL__C_TEXT_ESC))
        return 0;
    const int quote = json || n == 0 || (cls & FL__C_NOT_BARE);
    if ((size_t)(p - out) + n + 2 > end)
        return 0;
    if (quote)
        *p++ = '"';
    fl__copy(p, v, n);
    p += n;
    if (quote)
        *p++ = '"';
    return p - out;
}

/* The room a field needs before its value is looked at: separator, `fields.`, the longest key, `":`, 64 bytes. */
#define FL__FIELD_ROOM (2 + 7 + FORKLOG_MAX_KEY + 2 + 64)

/* A field whose key is known good (the location's, the context's) at out + o. Returns the new end, or 0. */
static size_t fl__fast_field(char *out, size_t o, size_t end, int json, int rename, const char *key, size_t klen,
                             const struct forklog_field *f)
{
    if (end - o < FL__FIELD_ROOM)
        return 0;
    char *p = out + o;
    if (json) {
        memcpy(p, ",\"", 2);
        p += 2;
    } else {
        *p++ = ' ';
    }
    if (rename) {
        memcpy(p, "fields.", 7);
        p += 7;
    }
    fl__copy(p, key, klen);
    p += klen;
    if (json) {
        memcpy(p, "\":", 2);
        p += 2;
    } else {
        *p++ = '=';
    }
    const long r = fl__fast_value(out, p, end, json, f);
    return r > 0 ? (size_t)r : 0;
}

/* For fl__tail_fast: the bit of a written key (k, kl bytes) in the 64-bit set of hashes (first byte and length) of
 * the keys written so far. */
static inline uint64_t fl__key_bit(const char *k, size_t kl)
{
    return (uint64_t)1 << (((unsigned char)k[0] + 7u * (unsigned)kl) & 63);
}

/* For fl__tail_fast, when entry e's key (written at out + at[e] + sep, kl[e] bytes) has the hash of an earlier one:
 * drops the earlier entries that wrote the same key (their kl[j] becomes 0). Returns whether it dropped any. */
static int fl__drop_earlier(const char *out, const size_t *at, unsigned char *kl, size_t e, size_t sep)
{
    const char *k = out + at[e] + sep;
    int dropped = 0;
    for (size_t j = 0; j < e; j++)
        if (kl[j] == kl[e] && memcmp(out + at[j] + sep, k, kl[e]) == 0)
            kl[j] = 0, dropped = 1;
    return dropped;
}

/* fl__tail_fast for one format: json is a constant in each of the two copies the compiler makes of this. */
#ifdef __GNUC__
__attribute__((always_inline))
#endif
static inline long
fl__tail_fast_as(const int json, const forklog *log, const struct fl__loc *loc, const struct fl__ctx *ctx,
                 const struct forklog_field *f, size_t n, char *out, size_t o, size_t cap)
{
    const int ks = fl__keyset(log);
    const size_t close = json ? 2 : 1;
    /* fl__build leaves out or cuts nothing of a record that ends this far below its cap. */
    const size_t reserve = 2 + FL__MARKER_MAX + close;
    if (cap < o + reserve)
        return 0;
    const size_t end = cap - reserve;
    if (n > FORKLOG_MAX_FIELDS)
        return -EINVAL;
    struct forklog_field lf[3];
    for (int i = 0, nl = fl__loc_fields(loc, lf); i < nl; i++) {
        const struct fl__str *key = &fl__builtin[ks][FL__K_FILE + i];
        if (!(o = fl__fast_field(out, o, end, json, 0, key->s, key->n, &lf[i])))
            return 0;
    }
    /* The context's fields, then the call's, each rendered where it stands; a key given again by a later field
     * drops the earlier one, as fl__tail skips it. Keys are compared as written (a key of the record's own is
     * written `fields.KEY`, so that "ts" and "fields.ts" are the same), in the output itself: at[e] is where entry
     * e starts, its key sep bytes later, kl[e] bytes long (0 once a later entry drops it). A 64-bit set of hashes of
     * the written keys (length and first byte) rules most keys out of the comparison. The first key of the call that is
     * not valid fails the call, as fl__check_fields. */
    const size_t nctx = ctx ? ctx->n : 0, sep = json ? 2 : 1;
    if (nctx > FORKLOG_MAX_FIELDS)
        return 0;
    size_t at[2 * FORKLOG_MAX_FIELDS + 1];
    unsigned char kl[2 * FORKLOG_MAX_FIELDS];
    uint64_t seen = 0;
    int dropped = 0;
    for (size_t e = 0; e < nctx; e++) {
        at[e] = o;
        const struct forklog_field *c = &ctx->f[e];
        size_t l = strlen(c->key);
        const int pre = fl__is_builtin_fast(ks, c->key, l);
        if (!(o = fl__fast_field(out, o, end, json, pre, c->key, l, c)))
            return 0;
        kl[e] = (unsigned char)(l + (pre ? 7 : 0));
        const uint64_t bit = fl__key_bit(out + at[e] + sep, kl[e]);
        if (seen & bit)
            dropped |= fl__drop_earlier(out, at, kl, e, sep);
        seen |= bit;
    }
    /* The separator before a key and the `=` or `":` after it, each sep bytes, each written as one 2-byte store
     * (in text the byte after the one that counts is written over next). */
    uint16_t sepw, eqw;
    memcpy(&sepw, json ? ",\"" : " ", 2);
    memcpy(&eqw, json ? "\":" : "=", 2);
    for (size_t e = nctx; e < nctx + n; e++) {
        const struct forklog_field *fi = f++;
        const char *k = fi->key;
        if (!k)
            return -EINVAL;
        if (end - o < FL__FIELD_ROOM)
            return 0;
        at[e] = o;
        char *p = out + o;
        memcpy(p, &sepw, 2);
        p += sep;
        /* The key: validated and copied in one pass. */
        size_t l = fl__key_copy(p, k);
        if (!l)
            return -EINVAL;
        if (fl__is_builtin_fast(ks, p, l)) {
            memmove(p + 7, p, l);
            memcpy(p, "fields.", 7);
            l += 7;
        }
        kl[e] = (unsigned char)l;
        const uint64_t bit = fl__key_bit(p, l);
        if (seen & bit)
            dropped |= fl__drop_earlier(out, at, kl, e, sep);
        seen |= bit;
        p += l;
        memcpy(p, &eqw, 2);
        p += sep;
        /* 0: leave the record to fl__build; -1: a type that is not one (fl__check_fields refuses it). */
        long r = fl__fast_value(out, p, end, json, fi);
        if (r <= 0)
            return r < 0 ? -EINVAL : 0;
        o = (size_t)r;
    }
    if (dropped) {
        /* Close the gaps the dropped fields left. */
        at[nctx + n] = o;
        size_t w = at[0];
        for (size_t e = 0; e < nctx + n; e++) {
            size_t len = at[e + 1] - at[e];
            if (kl[e]) {
                memmove(out + w, out + at[e], len);
                w += len;
            }
        }
        o = w;
    }
    if (json)
        out[o++] = '}';
    out[o++] = '\n';
    return (long)o;
}

/* Hot: without it, GCC guesses the code after the key loops cold and writes the values for size (div, calls). */
#ifdef __GNUC__
__attribute__((hot))
#endif
long fl__tail_fast(const forklog *log, const struct fl__loc *loc, const struct fl__ctx *ctx,
                   const struct forklog_field *f, size_t n, char *out, size_t o, size_t cap)
{
    if (log->format == FORKLOG_FORMAT_JSON)
        return fl__tail_fast_as(1, log, loc, ctx, f, n, out, o, cap);
    return fl__tail_fast_as(0, log, loc, ctx, f, n, out, o, cap);
}

/* The bounds are summed in 64 bits: where size_t has 32, six times a message or a string of 716 MB, or of 11 MB in
 * each of 64 fields, wrapped around to a small bound, and the record was cut to it (or its fields left out) although
 * it fitted max_record. 128 fields of up to 4 GiB each (six times over) stay far below 2^64. */
static uint64_t fl__field_bound(const struct forklog_field *f)
{
    uint64_t n = 16 + 7 + (uint64_t)strlen(f->key);
    return n + (f->type == FORKLOG_FIELD_STR && f->v.s ? 6 * (uint64_t)strlen(f->v.s) + 2 : 64);
}

size_t fl__build_bound(const forklog *log, size_t msglen, const struct fl__loc *loc, const struct fl__ctx *ctx,
                       const struct forklog_field *fields, size_t nfields)
{
    uint64_t n = (uint64_t)(log->prefix_max ? log->prefix_max : FL__PREFIX_MAX + log->app_len) + 6 * (uint64_t)msglen +
                 2 + FL__MARKER_MAX + 4;
    if (loc && loc->file)
        n += 3 * 64 + 6 * (uint64_t)strlen(loc->file) + (loc->func ? 6 * (uint64_t)strlen(loc->func) : 0);
    for (size_t k = 0; ctx && k < ctx->n; k++)
        n += fl__field_bound(&ctx->f[k]);
    for (size_t k = 0; k < nfields; k++)
        n += fl__field_bound(&fields[k]);
    return n < SIZE_MAX ? (size_t)n : SIZE_MAX;
}

long fl__pid(const forklog *log)
{
    return fl__pid_inline(log);
}

/* A number for this process, never the same twice along a line of forks: kept in a private page that a forked child
 * sees zero-filled (MADV_WIPEONFORK), and taken at the process's first ask from a counter that fork() copies, so
 * higher than any number its ancestors took before they forked. NULL page (no MADV_WIPEONFORK): 0, and the pid
 * alone keys what it would. */
static _Atomic(atomic_ullong *) fl__proc_key_page;
static atomic_ullong fl__proc_keys;

static void fl__proc_key_page_new(void)
{
#ifdef MADV_WIPEONFORK
    long page = sysconf(_SC_PAGESIZE);
    size_t pg = page > 0 ? (size_t)page : 4096;
    void *m = mmap(NULL, pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return;
    if (madvise(m, pg, MADV_WIPEONFORK) < 0) {
        munmap(m, pg);
        return;
    }
    atomic_store_explicit(&fl__proc_key_page, m, memory_order_release);
#endif
}

void fl__proc_key_init(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, fl__proc_key_page_new);
}

static unsigned long long fl__proc_key(void)
{
    atomic_ullong *p = atomic_load_explicit(&fl__proc_key_page, memory_order_acquire);
    if (!p)
        return 0;
    unsigned long long key = atomic_load_explicit(p, memory_order_relaxed);
    if (!key) {
        unsigned long long mine = atomic_fetch_add_explicit(&fl__proc_keys, 1, memory_order_relaxed) + 1;
        key = atomic_compare_exchange_strong(p, &key, mine) ? mine : key;
    }
    return key;
}

/* The kernel thread id, cached per thread and process. A forked child's only thread is a copy of the thread that
 * forked, cache included, and its pid may be one that an ancestor had (pids are given again once free): a thread
 * that logged forks a child that does not log and ends with its process, and the child's own child gets that pid.
 * Keyed by the pid alone, that grandchild's records carried the id of the ancestor's thread; the process key tells
 * them apart. */
static _Thread_local struct {
    long pid, tid;
    unsigned long long key;
} fl__tid_cache;

static long fl__tid(long pid)
{
    unsigned long long key = fl__proc_key();
    if (fl__tid_cache.pid != pid || fl__tid_cache.key != key) {
        fl__tid_cache.tid = (long)syscall(SYS_gettid);
        fl__tid_cache.pid = pid;
        fl__tid_cache.key = key;
    }
    return fl__tid_cache.tid;
}

/* text: `TS LEVEL pid=N[ tid=T][app] `; JSON: `{"ts":"TS","level":"level","pid":N[,"tid":T][app],"msg":"` */
static const struct fl__str fl__parts[3][5] = {
    {FL__STR(""), FL__STR(" "), FL__STR(" pid="), FL__STR(" tid="), FL__STR(" ")},
    {FL__STR("{\"ts\":\""), FL__STR("\",\"level\":\""), FL__STR("\",\"pid\":"), FL__STR(",\"tid\":"),
     FL__STR(",\"msg\":\"")},
    {FL__STR("{\"@timestamp\":\""), FL__STR("\",\"log.level\":\""), FL__STR("\",\"process.pid\":"),
     FL__STR(",\"process.thread.id\":"), FL__STR(",\"message\":\"")}};

size_t fl__prefix_bound(const forklog *log)
{
    const int json = log->format == FORKLOG_FORMAT_JSON;
    const struct fl__str *part = fl__parts[json + fl__keyset(log)];
    return part[0].n + 27 + part[1].n + 5 + part[2].n + 20 + part[3].n + 20 + log->app_len + part[4].n;
}

/* What follows the timestamp up to the thread id (or, without FORKLOG_TID, to the end of the prefix). */
static char *fl__prefix_rest(const forklog *log, enum forklog_level level, long pid, int whole, char *o)
{
    static const struct fl__str levels[2][5] = {
        {FL__STR(""), FL__STR("DEBUG"), FL__STR("INFO"), FL__STR("WARN"), FL__STR("ERROR")},
        {FL__STR(""), FL__STR("debug"), FL__STR("info"), FL__STR("warn"), FL__STR("error")}};
    const int json = log->format == FORKLOG_FORMAT_JSON;
    const struct fl__str *part = fl__parts[json + fl__keyset(log)];
    char num[24];
    o = fl__put_str(o, part[1]);
    o = fl__put_str(o, levels[json][level]);
    o = fl__put_str(o, part[2]);
    size_t n = fl__udec_back(num + sizeof num, (unsigned long)pid);
    memcpy(o, num + sizeof num - n, n);
    o += n;
    if (whole) {
        if (log->app_len)
            memcpy(o, log->app_tok, log->app_len);
        o = fl__put_str(o + log->app_len, part[4]);
    }
    return o;
}

/* fl__prefix when the rest is not cached yet, or with the thread id. */
__attribute__((noinline)) static size_t fl__prefix_slow(const forklog *log, enum forklog_level level,
                                                        const struct timespec *now, char *out)
{
    const int json = log->format == FORKLOG_FORMAT_JSON;
    const int tid = (log->flags & FORKLOG_TID) != 0;
    const struct fl__str *part = fl__parts[json + fl__keyset(log)];
    char *o = out + part[0].n;
    fl__copy(out, part[0].s, part[0].n);
    fl__rfc3339_inline(o, now);
    o += 27;
    long pid = fl__pid_inline(log);
    /* The rest depends on the process and the level only (but the thread id): built once per process and level
     * in the handle's per-process page, then copied in 16-byte steps. */
    struct fl__proc *proc = log->proc;
    int state = proc ? atomic_load_explicit(&proc->pre_state[level], memory_order_acquire) : -1;
    if (state == 2) {
        const char *c = proc->pre[level];
        size_t n = proc->pre_len[level];
        for (size_t i = 0; i < n; i += 16)
            memcpy(o + i, c + i, 16);
        o += n;
    } else {
        char *start = o;
        o = fl__prefix_rest(log, level, pid, !tid, o);
        size_t n = (size_t)(o - start);
        unsigned char idle = 0;
        if (state == 0 && n <= FL__PRE_CACHE &&
            atomic_compare_exchange_strong_explicit(&proc->pre_state[level], &idle, 1, memory_order_relaxed,
                                                    memory_order_relaxed)) {
            memcpy(proc->pre[level], start, n);
            proc->pre_len[level] = (unsigned char)n;
            atomic_store_explicit(&proc->pre_state[level], 2, memory_order_release);
        }
    }
    if (tid) {
        char num[24];
        o = fl__put_str(o, part[3]);
        size_t n = fl__udec_back(num + sizeof num, (unsigned long)fl__tid(pid));
        memcpy(o, num + sizeof num - n, n);
        o += n;
        if (log->app_len)
            memcpy(o, log->app_tok, log->app_len);
        o = fl__put_str(o + log->app_len, part[4]);
    }
    return (size_t)(o - out);
}

size_t fl__prefix(const forklog *log, enum forklog_level level, const struct timespec *now, char *out)
{
    /* The usual record: no thread id, and the rest cached (see fl__prefix_slow). */
    const struct fl__proc *proc = log->proc;
    if (!proc || (log->flags & FORKLOG_TID) || atomic_load_explicit(&proc->pre_state[level], memory_order_acquire) != 2)
        return fl__prefix_slow(log, level, now, out);
    const int json = log->format == FORKLOG_FORMAT_JSON;
    const struct fl__str *part = fl__parts[json + fl__keyset(log)];
    char *o = out + part[0].n;
    fl__copy(out, part[0].s, part[0].n);
    fl__rfc3339_inline(o, now);
    o += 27;
    const char *c = proc->pre[level];
    size_t n = proc->pre_len[level];
    for (size_t i = 0; i < n; i += 16)
        memcpy(o + i, c + i, 16);
    return (size_t)(o + n - out);
}

/* ` app=NAME` (text, quoted when needed) or `,"KEY":"NAME"` for the handle's format; out has room for 8 * len + 32
 * bytes. Returns the length. */
size_t fl__app_token(const forklog *log, const char *name, char *out, size_t cap)
{
    const int json = log->format == FORKLOG_FORMAT_JSON;
    const struct fl__str *key = &fl__builtin[fl__keyset(log)][FL__K_APP];
    struct forklog_field f;
    f.type = FORKLOG_FIELD_STR;
    f.v.s = name;
    struct fl__w w = {out, 0, cap, 0};
    fl__w_field(&w, json, 0, key->s, key->n, &f);
    return w.over ? 0 : w.n;
}

/* Byte-parallel tests on 8 bytes at a time (Hacker's Delight / the "bit twiddling hacks" idioms). */
#define FL__ONES           ((uint64_t)0x0101010101010101u)
#define FL__HIGHS          ((uint64_t)0x8080808080808080u)
#define FL__HAS_ZERO(x)    (((x)-FL__ONES) & ~(x)&FL__HIGHS)
#define FL__HAS_LESS(x, n) (((x)-FL__ONES * (n)) & ~(x)&FL__HIGHS)

/* What fl__copy_scan returns for src[0..len), copying it to dst when `copy`; with eq 0, bit 1 is never set. Escapes
 * are rare: every byte is looked at, with no early exit. */
FL__INLINE unsigned fl__scan_as(char *dst, const char *src, size_t len, const int json, const int eq, const int copy)
{
    size_t i = 0;
#ifdef __SSE2__
    if (len >= 16) {
        /* Blocks of 16 bytes, two per step; the last two overlap the ones before them rather than fall back to
         * bytes. A byte below 0x20 shows in the running minimum; the other bytes looked for are matched. */
        const __m128i del = _mm_set1_epi8(0x7f), equal = _mm_set1_epi8('=');
        const __m128i quote = _mm_set1_epi8('"'), bsl = _mm_set1_epi8('\\');
        __m128i low = _mm_set1_epi8(-1), hit = _mm_setzero_si128(), eqs = _mm_setzero_si128();
#define FL__SCAN16(at, more)                                                                                           \
    do {                                                                                                               \
        __m128i x = _mm_loadu_si128((const __m128i *)(const void *)(src + (at)));                                      \
        if (copy)                                                                                                      \
            _mm_storeu_si128((__m128i *)(void *)(dst + (at)), x);                                                      \
        low = _mm_min_epu8(low, x);                                                                                    \
        hit = _mm_or_si128(hit, _mm_cmpeq_epi8(x, del));                                                               \
        more;                                                                                                          \
    } while (0)
/* JSON: the high bit of x itself marks a byte >= 0x80. */
#define FL__JSON16                                                                                                     \
    hit = _mm_or_si128(hit, _mm_or_si128(x, _mm_or_si128(_mm_cmpeq_epi8(x, quote), _mm_cmpeq_epi8(x, bsl))))
#define FL__EQ16 eqs = _mm_or_si128(eqs, _mm_cmpeq_epi8(x, equal))
        if (json) {
            for (; i + 32 < len; i += 32) {
                FL__SCAN16(i, FL__JSON16);
                FL__SCAN16(i + 16, FL__JSON16);
            }
            FL__SCAN16(len >= 32 ? len - 32 : 0, FL__JSON16);
            FL__SCAN16(len - 16, FL__JSON16);
        } else if (eq) {
            for (; i + 32 < len; i += 32) {
                FL__SCAN16(i, FL__EQ16);
                FL__SCAN16(i + 16, FL__EQ16);
            }
            FL__SCAN16(len >= 32 ? len - 32 : 0, FL__EQ16);
            FL__SCAN16(len - 16, FL__EQ16);
        } else {
            for (; i + 32 < len; i += 32) {
                FL__SCAN16(i, (void)0);
                FL__SCAN16(i + 16, (void)0);
            }
            FL__SCAN16(len >= 32 ? len - 32 : 0, (void)0);
            FL__SCAN16(len - 16, (void)0);
        }
#undef FL__EQ16
#undef FL__JSON16
#undef FL__SCAN16
        /* A byte below 0x20 was seen when the minimum is one. */
        hit = _mm_or_si128(hit, _mm_cmpeq_epi8(_mm_min_epu8(low, _mm_set1_epi8(0x1f)), low));
        return (_mm_movemask_epi8(hit) ? 1u : 0u) | (_mm_movemask_epi8(eqs) ? 2u : 0u);
    }
#endif
    if (len >= 4) {
        /* Words of 8 bytes, the last one overlapping the one before it (4..7 bytes: two overlapping halves of
         * one word), each copied and tested at once as the bytes below are. */
        uint64_t esc = 0, eqs = 0;
        for (;;) {
            uint64_t x;
            if (len >= 8) {
                memcpy(&x, src + i, 8);
                if (copy)
                    memcpy(dst + i, &x, 8);
            } else {
                uint32_t a, b;
                memcpy(&a, src, 4);
                memcpy(&b, src + len - 4, 4);
                if (copy) {
                    memcpy(dst, &a, 4);
                    memcpy(dst + len - 4, &b, 4);
                }
                x = (uint64_t)a | (uint64_t)b << 32;
            }
            esc |= FL__HAS_LESS(x, 0x20) | FL__HAS_ZERO(x ^ (FL__ONES * 0x7f));
            if (json)
                esc |= (x & FL__HIGHS) | FL__HAS_ZERO(x ^ (FL__ONES * '"')) | FL__HAS_ZERO(x ^ (FL__ONES * '\\'));
            else if (eq)
                eqs |= FL__HAS_ZERO(x ^ (FL__ONES * '='));
            if (i + 8 >= len)
                break;
            i = i + 16 <= len ? i + 8 : len - 8;
        }
        return (esc ? 1u : 0u) | (eqs ? 2u : 0u);
    }
    unsigned found = 0;
    for (; i < len; i++) {
        unsigned char c = (unsigned char)src[i];
        if (copy)
            dst[i] = (char)c;
        if (c < 0x20 || c == 0x7f || (json && (c == '"' || c == '\\' || c >= 0x80)))
            found |= 1;
        if (c == '=')
            found |= 2;
    }
    return found & (json || !eq ? 1u : 3u);
}

int fl__needs_escape(int json, const char *s, size_t len)
{
    return (int)fl__scan_as(NULL, s, len, json, 0, 0);
}

unsigned fl__copy_scan(char *dst, const char *src, size_t len, int json)
{
    return fl__scan_as(dst, src, len, json, 1, 1);
}

int fl__copy_esc(char *dst, const char *src, size_t len, int json)
{
    return (int)fl__scan_as(dst, src, len, json, 0, 1);
}

/* The cut marker reporting `count` message bytes cut into out (FL__MARKER_MAX bytes): ` [forklog: N bytes cut]` after
 * a text message, `,"cut":N` (the key set's name) before the end of a JSON record. Returns its length. */
static size_t fl__marker(char *out, int json, int ks, size_t count)
{
    int n = json ? snprintf(out, FL__MARKER_MAX, ",\"%s\":%zu", fl__builtin[ks][FL__K_CUT].s, count)
                 : snprintf(out, FL__MARKER_MAX, " [forklog: %zu bytes cut]", count);
    return n > 0 ? (size_t)n : 0;
}

/* The length fl__marker gives for `count`, without writing it. */
static size_t fl__marker_len(int json, int ks, size_t count)
{
    return (json ? 4 + fl__builtin[ks][FL__K_CUT].n : sizeof " [forklog:  bytes cut]" - 1) + fl__ndigits(count);
}

size_t fl__build(const forklog *log, enum forklog_level level, const struct timespec *now, const struct fl__loc *loc,
                 const struct fl__ctx *ctx, const char *msg, size_t msglen, size_t msg_total,
                 const struct forklog_field *fields, size_t nfields, char *out, size_t cap, size_t *cut, int *whole)
{
    const int json = log->format == FORKLOG_FORMAT_JSON;
    const int ks = fl__keyset(log);
    size_t p = fl__prefix(log, level, now, out);

    /* What follows the message is rendered first, right after the prefix, then moved to the end of the buffer
     * while the message is escaped into the room left, then moved back behind it: the record stays well-formed
     * at any cap, fields that do not fit are left out whole, and the message is cut to what is left. A text
     * message followed by fields is quoted when it holds an '=' or starts with a quote, so that it never reads as
     * fields; without fields it is written as it always was. */
    const size_t close = json ? 2 : 1; /* `}\n` or `\n` */
    const int has_tail = (loc && loc->file) || (ctx && ctx->n) || nfields;
    const int quote_text = !json && msglen && (msg[0] == '"' || memchr(msg, '=', msglen));
    /* First as if the message fits: the tail may take all the room but the message's quotes (a field that does
     * not fit is left out whole). If the message must be cut, again with room kept for the cut marker. But a short
     * message, one of at most FL__MARKER_MAX bytes escaped (the widest marker of all), is never cut: the second pass
     * then keeps room for the message whole instead, and no field that fits beside the whole message is left out. */
    const size_t quotes = json ? 1 : quote_text && has_tail ? 2 : 0;
    size_t short_len = SIZE_MAX; /* the escaped message's length when it is that short, else SIZE_MAX */
    if (msglen == msg_total && msglen <= FL__MARKER_MAX) {
        char scratch[FL__MARKER_MAX];
        size_t used, elen = fl__escape(json ? 1 : quotes ? 2 : 0, scratch, sizeof scratch, msg, msglen, &used);
        if (used == msglen)
            short_len = elen;
    }
    /* The widest marker this message can need (the count it reports is at most msg_total): the tail of a record
     * whose message must be cut gets all the room but that, so that a field is left out only when it does not fit
     * beside the message cut as far as its marker allows. Room for the widest marker of all (FL__MARKER_MAX) left
     * out fields that fitted beside the one the record needed, and kept a few dozen message bytes in their place. */
    const size_t widest = fl__marker_len(json, ks, msg_total);
    for (int attempt = 0;; attempt++) {
        const size_t reserve = !attempt                ? quotes + close
                               : short_len != SIZE_MAX ? quotes + short_len + close
                                                       : quotes + widest + close;
        size_t tcap = cap > p + reserve ? cap - p - reserve : 0;
        int left_out = 0;
        size_t tlen = has_tail ? fl__tail(json, ks, loc, ctx, fields, nfields, out + p, tcap, &left_out) : 0;
        size_t tstart = cap - close - tlen;
        if (tlen)
            memmove(out + tstart, out + p, tlen);
        const int quoted = quote_text && tlen;
        const int mode = json ? 1 : quoted ? 2 : 0;
        size_t o = p;
        if (quoted)
            out[o++] = '"';
        size_t room = tstart - o - (json || quoted ? 1 : 0);
        size_t used;
        size_t mlen = fl__escape(mode, out + o, room, msg, msglen, &used);
        size_t cut_bytes = msg_total - used;
        if (attempt == 0 && cut_bytes)
            continue;
        char marker[FL__MARKER_MAX];
        size_t markerlen = 0;
        if (cut_bytes) {
            /* Make room for the marker, whose width depends on the count it reports: the widest one's (the room
             * kept for it) first, then the width of the last marker, which a smaller count never widens, so that
             * the record ends as near cap as the message's escapes allow. Each pass writes the message again, the
             * same bytes as far as it goes. */
            for (size_t mroom = widest, pass = 0; pass < 4 && markerlen != mroom; pass++) {
                if (markerlen)
                    mroom = markerlen;
                mlen = fl__escape(mode, out + o, room > mroom ? room - mroom : 0, msg, msglen, &used);
                cut_bytes = msg_total - used;
                markerlen = fl__marker(marker, json, ks, cut_bytes);
            }
        }
        o += mlen;
        if (json || quoted)
            out[o++] = '"';
        if (!json && markerlen) {
            memcpy(out + o, marker, markerlen);
            o += markerlen;
        }
        if (tlen) {
            memmove(out + o, out + tstart, tlen);
            o += tlen;
        }
        if (json) {
            if (markerlen) {
                memcpy(out + o, marker, markerlen);
                o += markerlen;
            }
            out[o++] = '}';
        }
        out[o++] = '\n';
        *cut = cut_bytes;
        if (whole)
            *whole = attempt == 0 && !left_out;
        return o;
    }
}

/* ---- the printf fast path -------------------------------------------------------------------------------------- */

#ifdef __SIZEOF_INT128__
__extension__ typedef unsigned __int128 fl__u128;
#else
typedef unsigned long long fl__u128; /* never used for arithmetic: %f goes to vsnprintf then */
#endif

/* Pads, sign, zeros and body into out at *o, as printf lays out one conversion. Returns 0, or -1 if it does not
 * fit. */
static int fl__emit_conv(char *out, size_t cap, size_t *o, size_t width, int minus, char sign, size_t zeros,
                         const char *body, size_t blen, const char *body2, size_t blen2)
{
    size_t len = (sign ? 1 : 0) + zeros + blen + blen2;
    size_t pad = width > len ? width - len : 0;
    if (len + pad > cap - *o)
        return -1;
    char *p = out + *o;
    if (!minus && pad) {
        memset(p, ' ', pad);
        p += pad;
    }
    if (sign)
        *p++ = sign;
    if (zeros) {
        memset(p, '0', zeros);
        p += zeros;
    }
    fl__copy(p, body, blen);
    p += blen;
    fl__copy(p, body2, blen2);
    p += blen2;
    if (minus && pad) {
        memset(p, ' ', pad);
        p += pad;
    }
    *o = (size_t)(p - out);
    return 0;
}

/* %f of a finite double with precision prec (0..17), as glibc rounds: the exact binary value m * 2^e, to nearest,
 * ties to even. The integer part goes to *ip, the prec fraction digits (as an integer below 10^prec) to *fp.
 * Returns -1 for values of 2^63 and above (vsnprintf's business). No division: the fraction's bits times 10^prec,
 * shifted, in 128-bit arithmetic. */
static int fl__fixed(uint64_t bits, int prec, uint64_t *ip, uint64_t *fp)
{
#ifdef __SIZEOF_INT128__
    const int bexp = (int)(bits >> 52 & 0x7ff);
    uint64_t m = bits & (((uint64_t)1 << 52) - 1);
    int e = -1074;
    if (bexp) {
        m |= (uint64_t)1 << 52;
        e = bexp - 1075;
    }
    *fp = 0;
    if (m == 0) {
        *ip = 0;
        return 0;
    }
    if (e >= 0) {
        if (e > 10)
            return -1; /* 2^63 and above */
        *ip = m << e;
        return 0;
    }
    const unsigned k = (unsigned)-e;
    uint64_t i = k < 64 ? m >> k : 0;
    uint64_t frac = k < 64 ? m & (((uint64_t)1 << k) - 1) : m; /* the fraction is frac / 2^k */
    uint64_t q = 0;
    if (k < 128) {
        fl__u128 P = (fl__u128)frac * fl__pow10[prec]; /* < 2^63 * 10^17 < 2^120 */
        fl__u128 q128 = P >> k;
        fl__u128 r = P - (q128 << k);
        fl__u128 half = (fl__u128)1 << (k - 1);
        q = (uint64_t)q128;
        /* A tie goes to the even last digit: the fraction's last digit, or the integer's when prec is 0. */
        if (r > half || (r == half && ((prec ? q : i) & 1)))
            q++;
    } /* else the fraction times 10^prec is below 2^-10: 0 */
    if (q == fl__pow10[prec]) {
        i++;
        q = 0;
    }
    *ip = i;
    *fp = q;
    return 0;
#else
    (void)bits, (void)prec, (void)ip, (void)fp;
    return -1; /* no 128-bit integers: vsnprintf */
#endif
}

/* Whether floating-point arithmetic rounds to nearest, the only mode fl__fixed rounds in (the C library's printf
 * follows fesetround()), without fegetround(), which would make the library depend on libm. On x86-64 both units'
 * rounding controls are read, the x87 control word's (which glibc's printf asks, and musl's computes with) and
 * MXCSR's (double arithmetic): fesetround() sets both, and a program that set only one gets vsnprintf. The x87
 * precision control must be its default, 64 bits: musl's printf computes its digits and its rounding in long double
 * arithmetic, which a program that set 53 or 24 bits (as some do for results that match other platforms) rounds
 * at that precision, so that its %f then prints other digits than the exact ones fl__fixed prints. Elsewhere
 * the arithmetic itself is asked: 1 plus three quarters of a unit in the last place goes up to the next double,
 * and its negative down, only when rounding to nearest (upward, downward and toward zero each round one of the two
 * toward 1 or -1); the operands are volatile so that the sums are computed at run time, in the current mode. */
static int fl__rounds_to_nearest(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    unsigned short x87;
    unsigned int mxcsr;
    __asm__ volatile("fnstcw %0" : "=m"(x87));
    __asm__ volatile("stmxcsr %0" : "=m"(mxcsr));
    return (x87 & 0x0f00) == 0x0300 && !(mxcsr & 0x6000);
#else
    static const volatile double one = 1.0, three_quarters_ulp = 0x1.8p-53;
    volatile double up = one + three_quarters_ulp, down = -one - three_quarters_ulp;
    /* Neither below nor above: equal (no == on a double, for the single header's -Wfloat-equal builds). */
    return !(up < 0x1.0000000000001p0 || up > 0x1.0000000000001p0) &&
           !(down < -0x1.0000000000001p0 || down > -0x1.0000000000001p0);
#endif
}

int fl__vformat(char *out, size_t cap, const char *fmt, va_list ap)
{
    size_t o = 0;
    const char *f = fmt;
    int f_exact = -1; /* whether this call's %f may be done here: the locale's radix is '.', rounding to nearest */
    for (;;) {
        const char *lit = f;
        while (!(fl__cls[(unsigned char)*f] & FL__C_FMT_STOP))
            f++;
        size_t nlit = (size_t)(f - lit);
        if (nlit > cap - o)
            return -1;
        fl__copy(out + o, lit, nlit);
        o += nlit;
        if (!*f)
            return o > (size_t)INT32_MAX ? -1 : (int)o;
        f++;
        /* The commonest conversions, with no flags, width or precision: %s %d %u %ld %lu %zu. */
        if (*f == 's') {
            f++;
            const char *str = va_arg(ap, const char *);
            if (!str)
                return -1; /* "(null)": vsnprintf's business */
            size_t n = strnlen(str, cap - o + 1);
            if (n > cap - o)
                return -1;
            fl__copy(out + o, str, n);
            o += n;
            continue;
        }
        {
            int ll = 0;
            const char *g = f;
            if (*g == 'l' || *g == 'z')
                ll = *g++;
            if (*g == 'd' || *g == 'i' || *g == 'u') {
                unsigned long long a;
                int neg = 0;
                if (*g == 'u')
                    a = ll == 'l' ? va_arg(ap, unsigned long) : ll == 'z' ? va_arg(ap, size_t) : va_arg(ap, unsigned);
                else {
                    long long v = ll == 'l'   ? va_arg(ap, long)
                                  : ll == 'z' ? (long long)va_arg(ap, ssize_t)
                                              : va_arg(ap, int);
                    neg = v < 0;
                    a = neg ? -(unsigned long long)v : (unsigned long long)v;
                }
                size_t n = fl__ndigits(a);
                if ((size_t)neg + n > cap - o)
                    return -1;
                if (neg)
                    out[o++] = '-';
                fl__udec_fixed(out + o, a, n);
                o += n;
                f = g + 1;
                continue;
            }
        }
        int minus = 0, plus = 0, space = 0, zero = 0, prec = -1, len = 0;
        size_t width = 0;
        char conv;
        if (f[0] == '.' && f[1] >= '0' && f[1] <= '9' && (f[2] == 'f' || f[2] == 'F')) {
            /* "%.Nf", the commonest %f: no flags, no width, one digit of precision. */
            prec = f[1] - '0';
            conv = f[2];
            f += 3;
        } else {
            for (;; f++) {
                if (*f == '-')
                    minus = 1;
                else if (*f == '+')
                    plus = 1;
                else if (*f == ' ')
                    space = 1;
                else if (*f == '0')
                    zero = 1;
                else
                    break;
            }
            while (*f >= '0' && *f <= '9') {
                width = width * 10 + (size_t)(*f++ - '0');
                if (width > 65536)
                    return -1;
            }
            if (*f == '.') {
                f++;
                prec = 0;
                while (*f >= '0' && *f <= '9') {
                    prec = prec * 10 + (*f++ - '0');
                    if (prec > 65536)
                        return -1;
                }
            }
            switch (*f) {
            case 'h':
                f++;
                len = 'h';
                if (*f == 'h')
                    f++, len = 'H';
                break;
            case 'l':
                f++;
                len = 'l';
                if (*f == 'l')
                    f++, len = 'L';
                break;
            case 'j':
            case 'z':
            case 't': len = *f++; break;
            default: break;
            }
            conv = *f;
            if (!conv)
                return -1;
            f++;
        }
        char digits[48];
        char *const dend = digits + sizeof digits;
        size_t nd = 0;
        switch (conv) {
        case '%':
            if (minus || plus || space || zero || width || prec >= 0 || len || o == cap)
                return -1;
            out[o++] = '%';
            continue;
        case 'd':
        case 'i': {
            long long v;
            switch (len) {
            case 'H': v = (signed char)va_arg(ap, int); break;
            case 'h': v = (short)va_arg(ap, int); break;
            case 'l': v = va_arg(ap, long); break;
            case 'L': v = va_arg(ap, long long); break;
            case 'j': v = (long long)va_arg(ap, intmax_t); break;
            case 'z': v = (long long)va_arg(ap, ssize_t); break;
            case 't': v = (long long)va_arg(ap, ptrdiff_t); break;
            default: v = va_arg(ap, int); break;
            }
            unsigned long long a = v < 0 ? -(unsigned long long)v : (unsigned long long)v;
            nd = prec == 0 && a == 0 ? 0 : fl__udec_back(dend, a);
            char sign = v < 0 ? '-' : plus ? '+' : space ? ' ' : 0;
            size_t zeros = prec > 0 && (size_t)prec > nd ? (size_t)prec - nd : 0;
            size_t body = (sign ? 1 : 0) + zeros + nd;
            if (zero && !minus && prec < 0 && width > body)
                zeros += width - body;
            if (fl__emit_conv(out, cap, &o, width, minus, sign, zeros, dend - nd, nd, NULL, 0) < 0)
                return -1;
            continue;
        }
        case 'u':
        case 'x':
        case 'X': {
            unsigned long long a;
            switch (len) {
            case 'H': a = (unsigned char)va_arg(ap, unsigned); break;
            case 'h': a = (unsigned short)va_arg(ap, unsigned); break;
            case 'l': a = va_arg(ap, unsigned long); break;
            case 'L': a = va_arg(ap, unsigned long long); break;
            case 'j': a = (unsigned long long)va_arg(ap, uintmax_t); break;
            case 'z': a = (unsigned long long)va_arg(ap, size_t); break;
            case 't': a = (unsigned long long)(size_t)va_arg(ap, ptrdiff_t); break;
            default: a = va_arg(ap, unsigned); break;
            }
            if (prec == 0 && a == 0)
                nd = 0;
            else if (conv == 'u')
                nd = fl__udec_back(dend, a);
            else {
                const char *hex = conv == 'x' ? "0123456789abcdef" : "0123456789ABCDEF";
                do {
                    digits[sizeof digits - ++nd] = hex[a & 15];
                    a >>= 4;
                } while (a);
            }
            size_t zeros = prec > 0 && (size_t)prec > nd ? (size_t)prec - nd : 0;
            if (zero && !minus && prec < 0 && width > zeros + nd)
                zeros += width - zeros - nd;
            if (fl__emit_conv(out, cap, &o, width, minus, 0, zeros, dend - nd, nd, NULL, 0) < 0)
                return -1;
            continue;
        }
        case 'c': {
            if (len || plus || space || zero || prec >= 0)
                return -1;
            char c = (char)(unsigned char)va_arg(ap, int);
            if (fl__emit_conv(out, cap, &o, width, minus, 0, 0, &c, 1, NULL, 0) < 0)
                return -1;
            continue;
        }
        case 's': {
            if (len || plus || space || zero)
                return -1;
            const char *s = va_arg(ap, const char *);
            if (!s)
                return -1; /* "(null)", or nothing under a small precision: vsnprintf's business */
            size_t n = prec >= 0 ? strnlen(s, (size_t)prec) : strnlen(s, cap - o + 1);
            if (fl__emit_conv(out, cap, &o, width, minus, 0, 0, s, n, NULL, 0) < 0)
                return -1;
            continue;
        }
        case 'f':
        case 'F': {
            if ((len && len != 'l') || prec > 17)
                return -1;
            double d = va_arg(ap, double);
            if (f_exact < 0) {
                const char *r = nl_langinfo(RADIXCHAR);
                f_exact = r && r[0] == '.' && r[1] == '\0' && fl__rounds_to_nearest();
            }
            if (!f_exact)
                return -1;
            if (prec < 0)
                prec = 6;
            uint64_t bits;
            memcpy(&bits, &d, sizeof bits);
            if ((bits >> 52 & 0x7ff) == 0x7ff)
                return -1; /* NaN and infinities */
            uint64_t ip, fp;
            if (fl__fixed(bits, prec, &ip, &fp) < 0)
                return -1;
            nd = fl__ndigits(ip);
            if (!width && !plus && !space) {
                /* No padding and no sign but '-': straight into the output. */
                size_t neg = (size_t)(bits >> 63), need = neg + nd + (prec ? (size_t)prec + 1 : 0);
                if (need > cap - o)
                    return -1;
                out[o] = '-';
                o += neg;
                fl__udec_fixed(out + o, ip, nd);
                o += nd;
                if (prec) {
                    out[o++] = '.';
                    fl__udec_fixed(out + o, fp, (size_t)prec);
                    o += (size_t)prec;
                }
                continue;
            }
            fl__udec_fixed(dend - nd, ip, nd);
            char frac[24];
            size_t nf = 0;
            if (prec > 0) {
                frac[0] = '.';
                fl__udec_fixed(frac + 1, fp, (size_t)prec);
                nf = (size_t)prec + 1;
            }
            char sign = bits >> 63 ? '-' : plus ? '+' : space ? ' ' : 0;
            size_t zeros = 0, body = (sign ? 1 : 0) + nd + nf;
            if (zero && !minus && width > body)
                zeros = width - body;
            if (fl__emit_conv(out, cap, &o, width, minus, sign, zeros, dend - nd, nd, frac, nf) < 0)
                return -1;
            continue;
        }
        default: return -1;
        }
    }
}
