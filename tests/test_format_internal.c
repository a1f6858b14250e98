/* SPDX-License-Identifier: MIT */
/* White-box tests of the formatter's fast paths against plain references: the per-second timestamp cache and
 * civil-date conversion against gmtime_r, the word-at-a-time escape scan against a byte loop. format.c is
 * compiled into this program, so its internal functions are reachable. */
#include "helpers.h"

#include "../lib/format.c"

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <time.h>

static void reference_time(char out[64], time_t sec, long nsec)
{
    struct tm tm;
    cr_assert_not_null(gmtime_r(&sec, &tm));
    snprintf(out, 64, "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
             tm.tm_min, tm.tm_sec, nsec / 1000);
}

Test(format_internal, rfc3339_matches_gmtime_r)
{
    unsigned seed = 12345;
    char got[28], want[64];
    got[27] = '\0';
    for (int i = 0; i < 200000; i++) {
        /* 1970 .. 2400, and runs of the same second to exercise the cache. */
        time_t sec = (time_t)(((uint64_t)rand_r(&seed) << 16 ^ (uint64_t)rand_r(&seed)) % 13569465600ull);
        if (i % 3)
            sec = (time_t)(sec - sec % 86400 + 86399); /* the last second of a day */
        for (int k = 0; k < 3; k++) {
            long nsec = rand_r(&seed) % 1000000000;
            struct timespec ts = {sec, nsec};
            fl__rfc3339(got, &ts);
            reference_time(want, sec, nsec);
            cr_assert_str_eq(got, want, "t=%lld.%09ld", (long long)sec, nsec);
        }
    }
}

static int reference_needs_escape(int json, const unsigned char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (s[i] < 0x20 || s[i] == 0x7f || (json && (s[i] == '"' || s[i] == '\\' || s[i] >= 0x80)))
            return 1;
    return 0;
}

Test(format_internal, needs_escape_matches_byte_loop)
{
    unsigned seed = 777;
    unsigned char buf[64];
    for (int i = 0; i < 500000; i++) {
        size_t len = (size_t)rand_r(&seed) % sizeof buf;
        for (size_t k = 0; k < len; k++)
            buf[k] = (unsigned char)(0x20 + rand_r(&seed) % 0x5f); /* printable ASCII but DEL */
        if (len && rand_r(&seed) % 2) {
            static const unsigned char special[] = {0,    1,    0x1f, 0x7f, 0x80, 0xff, '"',
                                                    '\\', 0x20, 0x7e, 0x21, 0x5b, '='};
            buf[(size_t)rand_r(&seed) % len] = special[(size_t)rand_r(&seed) % sizeof special];
        }
        for (int json = 0; json <= 1; json++)
            cr_assert_eq(fl__needs_escape(json, (const char *)buf, len) != 0,
                         reference_needs_escape(json, buf, len) != 0, "json=%d len=%zu", json, len);
    }
}

Test(format_internal, a_field_that_does_not_fit_is_left_out_whole)
{
    static struct forklog log; /* only format and proc are read; zero = text, no cache */
    struct timespec ts = {1700000000, 0};
    char label[5000];
    memset(label, '"', sizeof label - 1); /* escapes to twice its size */
    label[sizeof label - 1] = '\0';
    struct forklog_field fields[] = {
        FORKLOG_UINT("task", 7),
        FORKLOG_STR("label", label),
        FORKLOG_INT("code", -3),
    };
    char out[4096];
    for (int json = 0; json <= 1; json++) {
        log.format = json ? FORKLOG_FORMAT_JSON : FORKLOG_FORMAT_TEXT;
        size_t cut;
        size_t len = fl__build(&log, FORKLOG_INFO, &ts, NULL, "msg", 3, 3, fields, 3, out, sizeof out, &cut);
        out[len] = '\0';
        cr_assert_eq(cut, 0);
        cr_assert_null(strstr(out, "label"), "the oversized field is dropped: %s", out);
        const char *tail = json ? "\"msg\":\"msg\",\"task\":7,\"code\":-3}\n" : " msg task=7 code=-3\n";
        cr_assert_not_null(strstr(out, tail), "got %s", out);
        label[100] = '\0'; /* now it fits */
        len = fl__build(&log, FORKLOG_INFO, &ts, NULL, "msg", 3, 3, fields, 3, out, sizeof out, &cut);
        out[len] = '\0';
        cr_assert_not_null(strstr(out, json ? ",\"label\":\"\\\"\\\"" : " label=\"\\\"\\\""), "got %s", out);
        cr_assert_eq(out[len - 1], '\n');
        label[100] = '"';
    }
}

/* ---- the printf fast path against vsnprintf ---------------------------------------------------------------- */

/* The tests below hand formats built at run time, and formats printf warns about on purpose. */
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
#pragma GCC diagnostic ignored "-Wformat"
#pragma GCC diagnostic ignored "-Wpragmas"
#ifdef __clang__
#pragma clang diagnostic ignored "-Wunknown-warning-option"
#endif
#pragma GCC diagnostic ignored "-Wformat-overflow"
#pragma GCC diagnostic ignored "-Wformat-security"

/* Formats with fl__vformat and vsnprintf; when the fast path takes the format, the bytes must be the same. Returns
 * whether the fast path took it. */
static int differ_check(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int differ_check(const char *fmt, ...)
{
    char fast[4096], slow[4096];
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = fl__vformat(fast, sizeof fast - 1, fmt, ap);
    int m = vsnprintf(slow, sizeof slow, fmt, ap2);
    va_end(ap2);
    va_end(ap);
    if (n >= 0) {
        fast[n] = '\0';
        cr_assert_eq(n, m, "fmt \"%s\": fast %d bytes \"%s\", vsnprintf %d \"%s\"", fmt, n, fast, m, slow);
        cr_assert(memcmp(fast, slow, (size_t)n) == 0, "fmt \"%s\": fast \"%s\", vsnprintf \"%s\"", fmt, fast, slow);
    }
    return n >= 0;
}

Test(format_internal, vformat_the_formats_users_write)
{
    cr_assert(differ_check("request %s cost %.6f s", "data1", 0.012345));
    cr_assert(differ_check("%d items in %ld ms", 42, 1234L));
    cr_assert(differ_check("%s: %s", "open", "No such file or directory"));
    cr_assert(differ_check("%d %d %lld %lld %u %x %X %zu %zd", INT_MIN, INT_MAX, LLONG_MIN, LLONG_MAX, UINT_MAX,
                           0xdeadbeefu, 0xabcu, (size_t)SIZE_MAX, (ssize_t)-5));
    cr_assert(differ_check("[%5d] [%-5d] [%05d] [%+d] [% d] [%.3d] [%8.3d] [%-8.3d|] [%.0d] [%+.0d]", 42, 42, -42, 7, 7,
                           -7, 5, 5, 0, 0));
    cr_assert(differ_check("[%10s] [%-10s|] [%.2s] [%c] [%3c] [%-3c|] %%", "abc", "abc", "abcdef", 'x', 'y', 'z'));
    cr_assert(
        differ_check("[%hhd] [%hd] [%hhu] [%hu] [%jd] [%td]", 300, 70000, 300, 70000, (intmax_t)-1, (ptrdiff_t)-9));
    cr_assert(differ_check("%f %.0f %.1f %.2f %.9f %.17f", 3.14159, 0.5, 0.25, 1.005, 1e-9, 0.1));
    cr_assert(differ_check("%f %f %f %f", -0.0, -1e-300, 4.9e-324, 1e15));
    cr_assert(
        differ_check("[%12.4f] [%-12.4f|] [%012.4f] [%+.3f] [% .3f] [%+012.1f]", -3.5, 2.25, -7.125, 1.0, 1.0, -0.05));
    cr_assert(differ_check("%.0f %.0f %.0f %.0f %.0f", 1.5, 2.5, 3.5, -0.5, -1.5));
    cr_assert(differ_check("%f %lf", 9007199254740992.0, 9.2233720368547e18));
    /* What the fast path leaves to vsnprintf. */
    cr_assert_not(differ_check("%g", 1.0));
    cr_assert_not(differ_check("%e", 1.0));
    cr_assert_not(differ_check("%p", (void *)0));
    cr_assert_not(differ_check("%#x", 1u));
    cr_assert_not(differ_check("%*d", 3, 1));
    cr_assert_not(differ_check("%s", (char *)NULL));
    cr_assert_not(differ_check("%f", 1e300));
    cr_assert_not(differ_check("%f", NAN));
    cr_assert_not(differ_check("%f", -INFINITY));
    cr_assert_not(differ_check("%.18f", 1.0));
    cr_assert_not(differ_check("%Lf", 1.0L));
    cr_assert_not(differ_check("%1$d", 1));
}

static double random_double(unsigned *seed)
{
    uint64_t bits = (uint64_t)rand_r(seed) << 62 ^ (uint64_t)rand_r(seed) << 31 ^ (uint64_t)rand_r(seed);
    double d;
    switch (rand_r(seed) % 5) {
    case 0: memcpy(&d, &bits, sizeof d); return d; /* any bit pattern */
    case 1: return (double)(rand_r(seed) % 2000000) / 1000000.0 - 1.0;
    case 2: return ldexp((double)(rand_r(seed) % 1000) + 0.5, -(rand_r(seed) % 30)); /* exact ties */
    case 3: return (double)(int64_t)bits / 1024.0;
    default: return ldexp((double)rand_r(seed), rand_r(seed) % 90 - 60);
    }
}

Test(format_internal, vformat_matches_vsnprintf_on_random_conversions)
{
    unsigned seed = 4242;
    static const char *const flags[] = {"", "-", "+", " ", "0", "-0", "+0", " 0", "+-", "0+ "};
    static const char *const lens[] = {"", "hh", "h", "l", "ll", "z", "j", "t"};
    int taken = 0;
    for (int i = 0; i < 300000; i++) {
        char fmt[64];
        const char *fl = flags[rand_r(&seed) % 10];
        char width[8] = "", prec[8] = "";
        if (rand_r(&seed) % 2)
            snprintf(width, sizeof width, "%d", rand_r(&seed) % 30);
        if (rand_r(&seed) % 2)
            snprintf(prec, sizeof prec, ".%d", rand_r(&seed) % 20);
        int kind = rand_r(&seed) % 4;
        if (kind == 0) {
            const char *len = lens[rand_r(&seed) % 8];
            char conv = "diuxX"[rand_r(&seed) % 5];
            snprintf(fmt, sizeof fmt, "<%%%s%s%s%s%c>", fl, width, prec, len, conv);
            long long v = (long long)((uint64_t)rand_r(&seed) << 33 ^ (uint64_t)rand_r(&seed) << 2 ^
                                      (uint64_t)(rand_r(&seed) & 3));
            if (rand_r(&seed) % 4 == 0)
                v = (long long[]){0, -1, 1, INT_MIN, INT_MAX, LLONG_MIN, LLONG_MAX, 255, 65535}[rand_r(&seed) % 9];
            /* Pass the argument with the type the length modifier reads. */
            if (!strcmp(len, "l") || !strcmp(len, "ll") || !strcmp(len, "z") || !strcmp(len, "j") || !strcmp(len, "t"))
                taken += differ_check(fmt, v);
            else
                taken += differ_check(fmt, (int)v);
        } else if (kind == 1) {
            snprintf(fmt, sizeof fmt, "<%%%s%s%s%sf>", fl, width, prec, rand_r(&seed) % 2 ? "l" : "");
            taken += differ_check(fmt, random_double(&seed));
        } else if (kind == 2) {
            snprintf(fmt, sizeof fmt, "<%%%s%s%ss>", rand_r(&seed) % 2 ? "-" : "", width, prec);
            taken += differ_check(fmt, "hello, world");
        } else {
            snprintf(fmt, sizeof fmt, "x%%%s%sc|%%%%", rand_r(&seed) % 2 ? "-" : "", width);
            taken += differ_check(fmt, 'A' + rand_r(&seed) % 26);
        }
    }
    cr_assert_gt(taken, 150000, "the fast path took only %d of the formats", taken);
}
