/* White-box tests of the formatter's fast paths against plain references: the per-second timestamp cache and
 * civil-date conversion against gmtime_r, the word-at-a-time escape scan against a byte loop. format.c is
 * compiled into this program, so its internal functions are reachable. */
#include "helpers.h"

#include "../lib/format.c"

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
            static const unsigned char special[] = {0, 1, 0x1f, 0x7f, 0x80, 0xff, '"', '\\', 0x20, 0x7e, 0x21, 0x5b};
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
    struct fl__field fields[] = {
        {.key = "task", .type = FL__F_UINT, .u = 7},
        {.key = "label", .type = FL__F_STR, .s = label},
        {.key = "code", .type = FL__F_INT, .i = -3},
    };
    char out[4096];
    for (int json = 0; json <= 1; json++) {
        log.format = json ? FORKLOG_FORMAT_JSON : FORKLOG_FORMAT_TEXT;
        size_t cut;
        size_t len = fl__build(&log, FORKLOG_INFO, &ts, "msg", 3, 3, fields, 3, out, sizeof out, &cut);
        out[len] = '\0';
        cr_assert_eq(cut, 0);
        cr_assert_null(strstr(out, "label"), "the oversized field is dropped: %s", out);
        const char *tail = json ? "\"msg\":\"msg\",\"task\":7,\"code\":-3}\n" : " msg task=7 code=-3\n";
        cr_assert_not_null(strstr(out, tail), "got %s", out);
        label[100] = '\0'; /* now it fits */
        len = fl__build(&log, FORKLOG_INFO, &ts, "msg", 3, 3, fields, 3, out, sizeof out, &cut);
        out[len] = '\0';
        cr_assert_not_null(strstr(out, json ? ",\"label\":\"\\\"\\\"" : " label=\"\\\"\\\""), "got %s", out);
        cr_assert_eq(out[len - 1], '\n');
        label[100] = '"';
    }
}
