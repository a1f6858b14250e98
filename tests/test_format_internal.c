/* SPDX-License-Identifier: MIT */
/* White-box tests of the formatter's fast paths against plain references: the per-second timestamp cache and
 * civil-date conversion against gmtime_r, the word-at-a-time escape scan against a byte loop. format.c is
 * compiled into this program, so its internal functions are reachable. */
#include "helpers.h"

#include "../lib/format.c"

#include "../fuzz/json_check.h"

#include <dlfcn.h>
#include <fenv.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
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

/* The record's timestamp is clamped to years 0000 .. 9999 as a TIME field is, the edges exact, and a clamped
 * second never reaches the per-second cache (whose path would not clamp the fraction). */
Test(format_internal, rfc3339_clamps_to_years_0000_to_9999)
{
    static const struct {
        long long sec;
        long nsec;
        const char *want;
    } cases[] = {
        {253402300799LL, 999999999, "9999-12-31T23:59:59.999999Z"},
        {253402300799LL, 1000, "9999-12-31T23:59:59.000001Z"},
        {253402300800LL, 0, "9999-12-31T23:59:59.999999Z"},
        {253402300800LL, 123456789, "9999-12-31T23:59:59.999999Z"},
        {(long long)1e15, 0, "9999-12-31T23:59:59.999999Z"},
        {LLONG_MAX, 0, "9999-12-31T23:59:59.999999Z"},
        {-62167219200LL, 0, "0000-01-01T00:00:00.000000Z"},
        {-62167219200LL, 999999999, "0000-01-01T00:00:00.999999Z"},
        {-62167219201LL, 999999999, "0000-01-01T00:00:00.000000Z"},
        {-(long long)1e15, 5000, "0000-01-01T00:00:00.000000Z"},
        {LLONG_MIN, 999999999, "0000-01-01T00:00:00.000000Z"},
    };
    char got[28];
    got[27] = '\0';
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        for (int again = 0; again < 2; again++) { /* the second time from the cache, if it kept the second */
            struct timespec ts = {(time_t)cases[i].sec, cases[i].nsec};
            fl__rfc3339(got, &ts);
            cr_assert_str_eq(got, cases[i].want, "%lld.%09ld", cases[i].sec, cases[i].nsec);
        }
}

struct first_stamp {
    struct timespec ts;
    char got[28];
};

static void *first_stamp_of_a_thread(void *arg)
{
    struct first_stamp *a = arg;
    fl__rfc3339(a->got, &a->ts);
    a->got[27] = '\0';
    return NULL;
}

/* The per-thread second cache starts with a real second: a thread whose first record is at that very second gets
 * its real date, as at any other (each time in a new thread, whose cache is as it starts). */
Test(format_internal, a_threads_first_timestamp_is_right_at_any_second)
{
    static const struct {
        long long sec;
        long nsec;
        const char *want;
    } cases[] = {{-1, 500000000, "1969-12-31T23:59:59.500000Z"},
                 {-1, 0, "1969-12-31T23:59:59.000000Z"},
                 {0, 0, "1970-01-01T00:00:00.000000Z"},
                 {1700000000, 123456789, "2023-11-14T22:13:20.123456Z"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct first_stamp a = {{(time_t)cases[i].sec, cases[i].nsec}, {0}};
        pthread_t th;
        cr_assert_eq(pthread_create(&th, NULL, first_stamp_of_a_thread, &a), 0);
        cr_assert_eq(pthread_join(th, NULL), 0);
        cr_assert(memcmp(a.got, cases[i].want, 28) == 0, "%lld.%09ld: \"%.27s\" (byte 0: %d), want %s", cases[i].sec,
                  cases[i].nsec, a.got, a.got[0], cases[i].want);
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

Test(format_internal, copy_scan_copies_and_matches_byte_loop)
{
    unsigned seed = 778;
    unsigned char buf[80];
    char dst[96];
    for (int i = 0; i < 300000; i++) {
        size_t len = (size_t)rand_r(&seed) % sizeof buf;
        for (size_t k = 0; k < len; k++)
            buf[k] = (unsigned char)(0x20 + rand_r(&seed) % 0x5f); /* printable ASCII but DEL */
        for (int hits = rand_r(&seed) % 3; len && hits > 0; hits--) {
            static const unsigned char special[] = {0,    1,    0x1f, 0x7f, 0x80, 0xff, '"', '\\',
                                                    0x20, 0x7e, 0x21, 0x5b, '=',  '<',  '>'};
            buf[(size_t)rand_r(&seed) % len] = special[(size_t)rand_r(&seed) % sizeof special];
        }
        for (int json = 0; json <= 1; json++) {
            memset(dst, 0x55, sizeof dst);
            unsigned got = fl__copy_scan(dst, (const char *)buf, len, json);
            unsigned want = reference_needs_escape(json, buf, len) ? 1u : 0u;
            if (!json && memchr(buf, '=', len))
                want |= 2u;
            cr_assert_eq(got, want, "json=%d len=%zu: %u, want %u", json, len, got, want);
            cr_assert(memcmp(dst, buf, len) == 0, "json=%d len=%zu: the copy differs", json, len);
            cr_assert_eq((unsigned char)dst[len], 0x55, "json=%d len=%zu: written past the end", json, len);
        }
    }
}

/* Every length up to 160 (the 16-byte blocks, two per step, and the overlapping last two; the words; the bytes),
 * one byte of each kind at every position, and none: the three scans against the byte loop, and the copies. */
Test(format_internal, scans_find_each_byte_at_every_position)
{
    static const unsigned char special[] = {0, 1, 0x1f, 0x7f, 0x80, 0xc3, 0xff, '"', '\\', '=', 0x20, 0x7e, 'a'};
    unsigned char buf[160];
    char dst[176];
    for (size_t len = 0; len <= sizeof buf; len++) {
        for (size_t at = 0; at <= len; at++) {
            for (size_t k = 0; k < (at < len ? sizeof special : 1); k++) {
                for (size_t i = 0; i < len; i++)
                    buf[i] = (unsigned char)('A' + i % 26);
                if (at < len)
                    buf[at] = special[k];
                for (int json = 0; json <= 1; json++) {
                    int want = reference_needs_escape(json, buf, len);
                    unsigned want_eq = !json && memchr(buf, '=', len) ? 2u : 0u;
                    cr_assert_eq(fl__needs_escape(json, (const char *)buf, len) != 0, want != 0,
                                 "needs_escape json=%d len=%zu at=%zu byte=0x%02x", json, len, at, special[k]);
                    memset(dst, 0x55, sizeof dst);
                    cr_assert_eq(fl__copy_esc(dst, (const char *)buf, len, json) != 0, want != 0,
                                 "copy_esc json=%d len=%zu at=%zu byte=0x%02x", json, len, at, special[k]);
                    cr_assert(memcmp(dst, buf, len) == 0 && (unsigned char)dst[len] == 0x55, "copy_esc copy, len=%zu",
                              len);
                    memset(dst, 0x55, sizeof dst);
                    cr_assert_eq(fl__copy_scan(dst, (const char *)buf, len, json), (want ? 1u : 0u) | want_eq,
                                 "copy_scan json=%d len=%zu at=%zu byte=0x%02x", json, len, at, special[k]);
                    cr_assert(memcmp(dst, buf, len) == 0 && (unsigned char)dst[len] == 0x55, "copy_scan copy, len=%zu",
                              len);
                }
            }
        }
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
        size_t len = fl__build(&log, FORKLOG_INFO, &ts, NULL, atomic_load(&(&log)->ctx), "msg", 3, 3, fields, 3, out,
                               sizeof out, &cut, NULL);
        out[len] = '\0';
        cr_assert_eq(cut, 0);
        cr_assert_null(strstr(out, "label"), "the oversized field is dropped: %s", out);
        const char *tail = json ? "\"msg\":\"msg\",\"task\":7,\"code\":-3}\n" : " msg task=7 code=-3\n";
        cr_assert_not_null(strstr(out, tail), "got %s", out);
        label[100] = '\0'; /* now it fits */
        len = fl__build(&log, FORKLOG_INFO, &ts, NULL, atomic_load(&(&log)->ctx), "msg", 3, 3, fields, 3, out,
                        sizeof out, &cut, NULL);
        out[len] = '\0';
        cr_assert_not_null(strstr(out, json ? ",\"label\":\"\\\"\\\"" : " label=\"\\\"\\\""), "got %s", out);
        cr_assert_eq(out[len - 1], '\n');
        label[100] = '"';
    }
}

static double random_double(unsigned *seed);

/* ---- the fields fast path against fl__build ---------------------------------------------------------------- */

Test(format_internal, byte_classes_match_their_definitions)
{
    for (int c = 0; c < 256; c++) {
        int key = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
                  c == '-' || c == '@';
        int not_bare = c <= 0x20 || c == 0x7f || c == '"' || c == '=' || c == '\\';
        int text_esc = c < 0x20 || c == 0x7f || c == '"' || c == '\\';
        int json_esc = text_esc || c >= 0x80;
        cr_assert_eq(!!(fl__cls[c] & FL__C_KEY), key, "byte %d", c);
        cr_assert_eq(!!(fl__cls[c] & FL__C_NOT_BARE), not_bare, "byte %d", c);
        cr_assert_eq(!!(fl__cls[c] & FL__C_TEXT_ESC), text_esc, "byte %d", c);
        cr_assert_eq(!!(fl__cls[c] & FL__C_JSON_ESC), json_esc, "byte %d", c);
        cr_assert_eq(!!(fl__cls[c] & FL__C_FMT_STOP), c == 0 || c == '%', "byte %d", c);
    }
    static const char *const keys[] = {"ts",
                                       "level",
                                       "pid",
                                       "tid",
                                       "app",
                                       "msg",
                                       "file",
                                       "line",
                                       "func",
                                       "cut",
                                       "t",
                                       "cost",
                                       "fx",
                                       "message",
                                       "@timestamp",
                                       "log.level",
                                       "process.pid",
                                       "x.cut",
                                       "l",
                                       "lines",
                                       "service.na",
                                       "service.name",
                                       "c",
                                       "cu",
                                       "cuts",
                                       "forklog.cut",
                                       "log.origin.function",
                                       "log.origin.file.name",
                                       "log.origin.file.line",
                                       "process.thread.id",
                                       "a"};
    for (int ks = 0; ks <= 1; ks++)
        for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
            cr_assert_eq(fl__is_builtin_fast(ks, keys[i], strlen(keys[i])),
                         fl__is_builtin(ks, keys[i], strlen(keys[i])), "%s", keys[i]);
    for (int ks = 0; ks <= 1; ks++)
        for (int k = 0; k < FL__K_COUNT; k++)
            cr_assert(fl__is_builtin_fast(ks, fl__builtin[ks][k].s, fl__builtin[ks][k].n));
}

static const char *random_string(unsigned *seed, char *buf, size_t cap)
{
    static const char *const some[] = {"GET",
                                       "",
                                       "a b",
                                       "x=1",
                                       "say \"hi\"",
                                       "back\\slash",
                                       "tab\there",
                                       "\xc3\xa9t\xc3\xa9",
                                       "\x7f",
                                       "line\nbreak",
                                       "plain-value_1.2",
                                       "@"};
    switch (rand_r(seed) % 4) {
    case 0: return some[(size_t)rand_r(seed) % (sizeof some / sizeof some[0])];
    case 1: {
        size_t n = (size_t)rand_r(seed) % (cap - 1);
        for (size_t i = 0; i < n; i++)
            buf[i] = (char)(rand_r(seed) % 8 ? 'a' + rand_r(seed) % 26 : 1 + rand_r(seed) % 255);
        buf[n] = '\0';
        return buf;
    }
    default: {
        size_t n = (size_t)rand_r(seed) % 24;
        for (size_t i = 0; i < n; i++)
            buf[i] = (char)('a' + rand_r(seed) % 26);
        buf[n] = '\0';
        return buf;
    }
    }
}

/* What api.c does with a message and fields: the fast path when it takes the record, which must then be byte for
 * byte what fl__build writes; -EINVAL exactly when fl__check_fields refuses the fields. */
Test(format_internal, tail_fast_matches_build)
{
    /* Valid keys first (built-in ones of both key sets, and their `fields.` names), then NVALID .. NKEYS. */
    static const char *const keys[] = {"method",
                                       "status",
                                       "cost",
                                       "bytes",
                                       "ts",
                                       "msg",
                                       "level",
                                       "a",
                                       "b",
                                       "message",
                                       "@timestamp",
                                       "fields.ts",
                                       "fields.msg",
                                       "fields.message",
                                       "fields.@timestamp",
                                       "fields.level",
                                       "bad key",
                                       "",
                                       "k\xc3\xa9",
                                       "file",
                                       "x"};
    enum { NVALID = 16, NKEYS = sizeof keys / sizeof keys[0] };
    static char longkey[80];
    memset(longkey, 'k', sizeof longkey - 1);
    unsigned seed = 99;
    int taken = 0, einval = 0;
    static char app_tok[64];
    struct timespec ts = {1700000000, 123456789};
    for (int iter = 0; iter < 200000; iter++) {
        forklog *log = calloc(1, sizeof *log + 1);
        cr_assert_not_null(log);
        int json = rand_r(&seed) % 2;
        log->format = json ? FORKLOG_FORMAT_JSON : FORKLOG_FORMAT_TEXT;
        log->keys = rand_r(&seed) % 2 ? FORKLOG_KEYS_ECS : FORKLOG_KEYS_SHORT;
        log->max_record = rand_r(&seed) % 4 ? 4096 : 256 + (size_t)rand_r(&seed) % 512;
        if (rand_r(&seed) % 4 == 0)
            log->app_len = fl__app_token(log, "svc", app_tok, sizeof app_tok), log->app_tok = app_tok;
        log->prefix_max = fl__prefix_bound(log);
        /* Context (keys valid, as forklog_context_add makes sure), sometimes. */
        struct fl__ctx *ctx = NULL;
        char cstr[3][32];
        if (rand_r(&seed) % 4 == 0) {
            ctx = malloc(sizeof *ctx + 3 * sizeof ctx->f[0]);
            cr_assert_not_null(ctx);
            ctx->prev = NULL;
            ctx->n = 1 + (size_t)rand_r(&seed) % 3;
            for (size_t i = 0; i < ctx->n; i++)
                ctx->f[i] =
                    FORKLOG_STR(keys[(size_t)rand_r(&seed) % NVALID], random_string(&seed, cstr[i], sizeof cstr[i]));
            atomic_store(&log->ctx, ctx);
        }
        struct fl__loc loc = {rand_r(&seed) % 2 ? "src/x.c" : "dir with space/y.c", rand_r(&seed) % 2 ? "fn" : NULL,
                              rand_r(&seed) % 1000 - 10};
        const struct fl__loc *lp = rand_r(&seed) % 5 == 0 ? &loc : NULL;
        size_t n = (size_t)rand_r(&seed) % 7;
        struct forklog_field f[6];
        char strs[6][48];
        for (size_t i = 0; i < n; i++) {
            const char *k =
                rand_r(&seed) % 50 == 0 ? longkey : keys[(size_t)rand_r(&seed) % (rand_r(&seed) % 8 ? NVALID : NKEYS)];
            switch (rand_r(&seed) % 9) {
            case 0: f[i] = FORKLOG_INT(k, (long long)rand_r(&seed) - RAND_MAX / 2); break;
            case 1: f[i] = FORKLOG_UINT(k, (unsigned long long)rand_r(&seed) << 33 | 7u); break;
            case 2: f[i] = FORKLOG_DBL(k, random_double(&seed)); break;
            case 3: f[i] = FORKLOG_BOOL(k, rand_r(&seed) % 2); break;
            case 4: f[i] = FORKLOG_DUR_NS(k, (long long)rand_r(&seed) * (rand_r(&seed) % 3 - 1)); break;
            case 5: f[i] = FORKLOG_STR(k, NULL); break;
            case 6:
                f[i] = FORKLOG_INT(k, 1);
                f[i].type = (enum forklog_field_type)(rand_r(&seed) % 2 ? 0 : 99);
                if (rand_r(&seed) % 4)
                    f[i].type = FORKLOG_FIELD_INT;
                break;
            default: f[i] = FORKLOG_STR(k, random_string(&seed, strs[i], sizeof strs[i])); break;
            }
        }
        char mbuf[64];
        const char *msg = random_string(&seed, mbuf, sizeof mbuf);
        size_t len = strlen(msg);
        const int tail = lp || atomic_load(&log->ctx) || n;

        char fast[4096], slow[4096];
        size_t cap = log->max_record < sizeof fast ? log->max_record : sizeof fast;
        size_t p = fl__prefix(log, FORKLOG_WARN, &ts, fast);
        long got = 0;
        if (len < cap - p && !fl__needs_escape(json, msg, len) &&
            (json || !tail || !len || (msg[0] != '"' && !memchr(msg, '=', len)))) {
            memcpy(fast + p, msg, len);
            size_t o = p + len;
            if (json)
                fast[o++] = '"';
            got = fl__tail_fast(log, lp, atomic_load(&log->ctx), f, n, fast, o, cap);
        }
        int valid = fl__check_fields(f, n) == 0;
        if (got < 0) {
            cr_assert_eq(got, -EINVAL);
            cr_assert_not(valid, "the fast path refused valid fields");
            einval++;
        } else if (got > 0) {
            cr_assert(valid, "the fast path took invalid fields");
            size_t bcap = fl__build_bound(log, len, lp, atomic_load(&(log)->ctx), f, n);
            if (bcap > log->max_record)
                bcap = log->max_record;
            cr_assert_leq(bcap, sizeof slow);
            size_t cut;
            size_t want = fl__build(log, FORKLOG_WARN, &ts, lp, atomic_load(&(log)->ctx), msg, len, len, f, n, slow,
                                    bcap, &cut, NULL);
            cr_assert_eq((size_t)got, want, "length: fast %ld, build %zu: %.*s | %.*s", got, want, (int)got, fast,
                         (int)want, slow);
            cr_assert(memcmp(fast, slow, want) == 0, "fast %.*s build %.*s", (int)got, fast, (int)want, slow);
            if (json) {
                /* Valid JSON, each key once. */
                struct ck_member m[24];
                const char *why = "";
                int k = ck_json_flat((const unsigned char *)slow, want, m, 24, &why);
                cr_assert_geq(k, 0, "not valid JSON (%s): %.*s", why, (int)want, slow);
                for (int a = 0; a < k && a < 24; a++)
                    for (int b2 = a + 1; b2 < k && b2 < 24; b2++)
                        cr_assert_str_neq(m[a].key, m[b2].key, "key %s twice: %.*s", m[a].key, (int)want, slow);
                ck_members_free(m, k < 24 ? k : 24);
            }
            taken++;
        }
        free(ctx);
        free(log);
    }
    cr_assert_gt(taken, 50000, "the fast path took only %d records", taken);
    cr_assert_gt(einval, 1000, "only %d invalid field lists", einval);
}

/* The fast path's own key check and number writers against fl__build: keys of 1 to 66 bytes, each with an
 * invalid byte anywhere or none (a key the fast path takes is valid, one it refuses is not); integers and durations
 * at and around every power of ten, zero, negative, with runs of trailing zeros, and random ones. The key is copied
 * into a buffer that ends at its NUL, so that the sanitizer build sees any read past it. */
Test(format_internal, tail_fast_keys_and_numbers_match_build)
{
    static const long long durs[] = {0,          1,         9,         10,         999999999,   1000000000,
                                     1000000001, 100000000, 120000000, 1234567,    1000,        5000000,
                                     999999990,  100000001, -1,        -999999999, -1000000000, 3000000000LL,
                                     LLONG_MAX,  LLONG_MIN, 10000,     99990000,   900000000,   1001};
    static const char bad[] = {' ', '=', '"', '\x80', '\xff', '/', ':', '\x01', '[', '`', '{', '~', '+', ','};
    unsigned seed = 4242;
    struct timespec ts = {1700000000, 5};
    int taken = 0, refused = 0;
    for (int iter = 0; iter < 120000; iter++) {
        forklog *log = calloc(1, sizeof *log + 1);
        cr_assert_not_null(log);
        const int json = iter % 2;
        log->format = json ? FORKLOG_FORMAT_JSON : FORKLOG_FORMAT_TEXT;
        log->keys = iter / 2 % 2 ? FORKLOG_KEYS_ECS : FORKLOG_KEYS_SHORT;
        log->max_record = 4096;
        log->prefix_max = fl__prefix_bound(log);
        struct forklog_field f[4];
        char *kbuf[4];
        const size_t n = 1 + (size_t)rand_r(&seed) % 4;
        for (size_t i = 0; i < n; i++) {
            /* A key of 1..66 bytes of the key alphabet, sometimes empty or with one invalid byte. */
            static const char alpha[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.@-";
            size_t kl = rand_r(&seed) % 50 == 0 ? 0 : 1 + (size_t)rand_r(&seed) % 66;
            kbuf[i] = malloc(kl + 1);
            cr_assert_not_null(kbuf[i]);
            for (size_t j = 0; j < kl; j++)
                kbuf[i][j] = alpha[(size_t)rand_r(&seed) % (sizeof alpha - 1)];
            if (kl && rand_r(&seed) % 5 == 0)
                kbuf[i][(size_t)rand_r(&seed) % kl] = bad[(size_t)rand_r(&seed) % sizeof bad];
            kbuf[i][kl] = '\0';
            const char *k = kbuf[i];
            long long v;
            switch (rand_r(&seed) % 4) {
            case 0: v = durs[(size_t)rand_r(&seed) % (sizeof durs / sizeof durs[0])]; break;
            case 1: { /* a power of ten, one below or above, its negative, or a run of trailing zeros */
                long long p10 = 1;
                for (int d = rand_r(&seed) % 19; d > 0; d--)
                    p10 *= 10;
                v = p10 + rand_r(&seed) % 3 - 1;
                if (rand_r(&seed) % 3 == 0)
                    v = (rand_r(&seed) % 9 + 1) * p10;
                if (rand_r(&seed) % 4 == 0)
                    v = -v;
                break;
            }
            case 2: v = (long long)rand_r(&seed) % 1000000000; break;
            default: v = (long long)((uint64_t)rand_r(&seed) << 33 ^ (uint64_t)rand_r(&seed) << 2); break;
            }
            switch (rand_r(&seed) % 4) {
            case 0: f[i] = FORKLOG_INT(k, v); break;
            case 1: f[i] = FORKLOG_UINT(k, rand_r(&seed) % 2 ? (unsigned long long)v : ULLONG_MAX - (unsigned)v); break;
            case 2: f[i] = FORKLOG_STR(k, rand_r(&seed) % 2 ? "GET" : "a b"); break;
            default: f[i] = FORKLOG_DUR_NS(k, v); break;
            }
        }
        char fast[4096], slow[4096];
        size_t o = fl__prefix(log, FORKLOG_INFO, &ts, fast);
        fast[o++] = 'm';
        if (json)
            fast[o++] = '"';
        long got = fl__tail_fast(log, NULL, NULL, f, n, fast, o, sizeof fast);
        const int valid = fl__check_fields(f, n) == 0;
        if (got < 0) {
            cr_assert_eq(got, -EINVAL);
            cr_assert_not(valid, "the fast path refused valid fields (%s)", f[0].key);
            refused++;
        } else {
            cr_assert_gt(got, 0, "the fast path declined a record that fits");
            cr_assert(valid, "the fast path took invalid fields");
            size_t cut;
            size_t want = fl__build(log, FORKLOG_INFO, &ts, NULL, atomic_load(&(log)->ctx), "m", 1, 1, f, n, slow,
                                    sizeof slow, &cut, NULL);
            cr_assert(want == (size_t)got && memcmp(fast, slow, want) == 0, "fast:\n%.*s\nbuild:\n%.*s", (int)got, fast,
                      (int)want, slow);
            taken++;
        }
        for (size_t i = 0; i < n; i++)
            free(kbuf[i]);
        free(log);
    }
    cr_assert_gt(taken, 40000);
    cr_assert_gt(refused, 10000);
}

/* One field as the record writes it: ` key=value` (text) or `,"key":value` (JSON); s is a string or, when NULL,
 * the integer i. */
static void written(char *out, size_t cap, int json, const char *key, const char *s, long long i)
{
    size_t n = strlen(out);
    if (s)
        snprintf(out + n, cap - n, json ? ",\"%s\":\"%s\"" : " %s=%s", key, s);
    else
        snprintf(out + n, cap - n, json ? ",\"%s\":%lld" : " %s=%lld", key, i);
}

/* A built-in key K is written `fields.K`, so that it and a key named `fields.K` are one key: whichever of the two
 * comes last wins, at its place, in the call's fields, in the context, and across the two; in text, JSON and ECS
 * JSON, for each of the key set's names; the same exact record from the fast path, from fl__build, and from
 * fl__build at a cap the record just fits (where the fast path leaves it to fl__build). */
Test(format_internal, a_builtin_key_and_its_fields_name_are_one_key)
{
    struct timespec ts = {1700000000, 123456789};
    int checked = 0;
    for (int mode = 0; mode < 3; mode++) {
        forklog *log = calloc(1, sizeof *log + 1);
        cr_assert_not_null(log);
        const int json = mode > 0;
        log->format = json ? FORKLOG_FORMAT_JSON : FORKLOG_FORMAT_TEXT;
        log->keys = mode == 2 ? FORKLOG_KEYS_ECS : FORKLOG_KEYS_SHORT;
        log->max_record = 4096;
        log->prefix_max = fl__prefix_bound(log);
        const int ks = fl__keyset(log);
        for (int b = 0; b < FL__K_COUNT; b++) {
            const char *K = fl__builtin[ks][b].s;
            char FK[96];
            snprintf(FK, sizeof FK, "fields.%s", K);
            /* Scenarios: which of the two names comes first, and where each stands (c: context, f: the call). */
            for (int sc = 0; sc < 10; sc++) {
                const int k_first = sc % 2 == 0; /* K, then fields.K; else the other way round */
                const char *first = k_first ? K : FK, *second = k_first ? FK : K;
                struct forklog_field cf[3], f[3];
                size_t nc = 0, n = 0;
                char want_tail[512] = "";
                switch (sc / 2) {
                case 0: /* both in the call */
                    f[n++] = FORKLOG_STR(first, "a");
                    f[n++] = FORKLOG_INT("x", 1);
                    f[n++] = FORKLOG_STR(second, "b");
                    written(want_tail, sizeof want_tail, json, "x", NULL, 1);
                    written(want_tail, sizeof want_tail, json, FK, "b", 0);
                    break;
                case 1: /* the first in the context, the second in the call */
                    cf[nc++] = FORKLOG_STR(first, "a");
                    cf[nc++] = FORKLOG_INT("c", 0);
                    f[n++] = FORKLOG_INT("x", 1);
                    f[n++] = FORKLOG_STR(second, "b");
                    written(want_tail, sizeof want_tail, json, "c", NULL, 0);
                    written(want_tail, sizeof want_tail, json, "x", NULL, 1);
                    written(want_tail, sizeof want_tail, json, FK, "b", 0);
                    break;
                case 2: /* both in the context */
                    cf[nc++] = FORKLOG_STR(first, "a");
                    cf[nc++] = FORKLOG_INT("c", 0);
                    cf[nc++] = FORKLOG_STR(second, "b");
                    f[n++] = FORKLOG_INT("x", 1);
                    written(want_tail, sizeof want_tail, json, "c", NULL, 0);
                    written(want_tail, sizeof want_tail, json, FK, "b", 0);
                    written(want_tail, sizeof want_tail, json, "x", NULL, 1);
                    break;
                case 3: /* both in the call, and the context holds the first too */
                    cf[nc++] = FORKLOG_STR(first, "z");
                    f[n++] = FORKLOG_STR(second, "a");
                    f[n++] = FORKLOG_INT("x", 1);
                    f[n++] = FORKLOG_STR(first, "b");
                    written(want_tail, sizeof want_tail, json, "x", NULL, 1);
                    written(want_tail, sizeof want_tail, json, FK, "b", 0);
                    break;
                default: /* only one of them, in the call: nothing is dropped */
                    f[n++] = FORKLOG_STR(first, "a");
                    written(want_tail, sizeof want_tail, json, FK, "a", 0);
                    break;
                }
                struct fl__ctx *ctx = NULL;
                if (nc) {
                    ctx = malloc(sizeof *ctx + nc * sizeof ctx->f[0]);
                    cr_assert_not_null(ctx);
                    ctx->prev = NULL;
                    ctx->n = nc;
                    memcpy(ctx->f, cf, nc * sizeof cf[0]);
                }
                atomic_store(&log->ctx, ctx);
                const char *msg = "m";
                char want[1024];
                size_t p = fl__prefix(log, FORKLOG_INFO, &ts, want);
                snprintf(want + p, sizeof want - p, "%s%s%s%s\n", msg, json ? "\"" : "", want_tail, json ? "}" : "");
                size_t wlen = strlen(want);

                char fast[4096], slow[4096];
                fl__prefix(log, FORKLOG_INFO, &ts, fast);
                memcpy(fast + p, msg, 1);
                size_t o = p + 1;
                if (json)
                    fast[o++] = '"';
                long got = fl__tail_fast(log, NULL, ctx, f, n, fast, o, sizeof fast);
                cr_assert_gt(got, 0, "the fast path took the record");
                cr_assert(got == (long)wlen && memcmp(fast, want, wlen) == 0, "fast path:\n%.*s\nwant:\n%s", (int)got,
                          fast, want);
                size_t cut;
                size_t len = fl__build(log, FORKLOG_INFO, &ts, NULL, atomic_load(&(log)->ctx), msg, 1, 1, f, n, slow,
                                       sizeof slow, &cut, NULL);
                cr_assert(len == wlen && memcmp(slow, want, wlen) == 0, "fl__build:\n%.*s\nwant:\n%s", (int)len, slow,
                          want);
                /* At a cap the record just fits (with the room fl__build keeps for a cut marker), the fast path
                 * declines and fl__build writes the whole record. */
                const size_t tight = wlen + 2 + FL__MARKER_MAX;
                cr_assert_eq(fl__tail_fast(log, NULL, ctx, f, n, fast, o, tight), 0);
                len = fl__build(log, FORKLOG_INFO, &ts, NULL, atomic_load(&(log)->ctx), msg, 1, 1, f, n, slow, tight,
                                &cut, NULL);
                cr_assert(len == wlen && memcmp(slow, want, wlen) == 0 && cut == 0,
                          "fl__build near the cap:\n%.*s\nwant:\n%s", (int)len, slow, want);
                atomic_store(&log->ctx, NULL);
                free(ctx);
                checked++;
            }
        }
        free(log);
    }
    cr_assert_eq(checked, 3 * FL__K_COUNT * 10);
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

/* In each rounding mode, the fast path's %f is what vsnprintf writes, or left to it; formats without %f are still
 * taken. The mode goes back to nearest afterwards. */
Test(format_internal, vformat_in_every_rounding_mode)
{
    int (*set_round)(int) = th_fesetround();
    if (!set_round)
        cr_skip_test("fesetround() not found in libm");
    static const struct {
        int mode;
        const char *name;
    } modes[] = {
        {FE_TONEAREST, "to nearest"}, {FE_UPWARD, "upward"}, {FE_DOWNWARD, "downward"}, {FE_TOWARDZERO, "toward zero"}};
    /* Computed before the mode changes, so that each argument is the same double in every mode. */
    const double third = 1.0 / 3, values[] = {0.25, 1.0 / 3, -1.0 / 3, 2.5, -2.5, 0.125, 1e-7, 123456.789, -0.0};
    double random[2000];
    unsigned seed = 31337;
    for (size_t i = 0; i < sizeof random / sizeof random[0]; i++)
        random[i] = random_double(&seed);
    for (size_t m = 0; m < sizeof modes / sizeof modes[0]; m++) {
        cr_assert_eq(set_round(modes[m].mode), 0, "fesetround(%s)", modes[m].name);
        const int nearest = modes[m].mode == FE_TONEAREST;
        cr_assert_eq(differ_check("%.1f %.2f", 0.25, third), nearest, "%s", modes[m].name);
        for (size_t i = 0; i < sizeof values / sizeof values[0]; i++)
            cr_assert_eq(
                differ_check("%f|%.0f|%.3f|%+9.1f|%.17f", values[i], values[i], values[i], values[i], values[i]),
                nearest, "%s, %g", modes[m].name, values[i]);
        for (size_t i = 0; i < sizeof random / sizeof random[0]; i++) {
            char fmt[16];
            snprintf(fmt, sizeof fmt, "%%.%zuf", i % 18);
            cr_assert_eq(differ_check(fmt, random[i]), nearest && fabs(random[i]) < 0x1p63, "%s, %s of %a",
                         modes[m].name, fmt, random[i]);
        }
        cr_assert(differ_check("%d %s %u", -7, "no %f here", 7u), "%s", modes[m].name);
    }
    cr_assert_eq(set_round(FE_TONEAREST), 0);
    cr_assert(differ_check("%.1f %.2f", 0.25, third));
}

#if defined(__x86_64__) && defined(__GNUC__)
/* A program that sets one unit's rounding mode only, as fesetround() never does: glibc's printf asks the x87 control
 * word, musl's computes in x87 arithmetic, double arithmetic rounds in SSE's MXCSR. The fast path must print what
 * vsnprintf prints, or leave the format to it, with either unit rounding upward. */
Test(format_internal, vformat_when_one_unit_rounds_otherwise)
{
    const double third = 1.0 / 3, values[] = {0.25, 1.0 / 3, -1.0 / 3, 2.5, 0.125, 123456.789};
    unsigned short cw, up_cw;
    unsigned int csr, up_csr;
    __asm__ volatile("fnstcw %0" : "=m"(cw));
    __asm__ volatile("stmxcsr %0" : "=m"(csr));
    up_cw = (unsigned short)((cw & ~0x0c00u) | 0x0800u); /* x87 rounding control: upward */
    up_csr = (csr & ~0x6000u) | 0x4000u;                 /* MXCSR rounding control: upward */
    for (int unit = 0; unit < 2; unit++) {
        if (unit == 0)
            __asm__ volatile("fldcw %0" : : "m"(up_cw));
        else
            __asm__ volatile("ldmxcsr %0" : : "m"(up_csr));
        for (size_t i = 0; i < sizeof values / sizeof values[0]; i++)
            differ_check("%f|%.0f|%.1f|%.3f", values[i], values[i], values[i], values[i]);
        cr_assert(differ_check("%d %s", -7, "no %f here"));
        __asm__ volatile("fldcw %0" : : "m"(cw));
        __asm__ volatile("ldmxcsr %0" : : "m"(csr));
    }
    cr_assert(differ_check("%.1f %.2f", 0.25, third));
}

/* A program that lowers the x87 precision control to 53 or 24 bits (rounding still to nearest): musl's printf computes
 * %f in long double arithmetic, which then rounds at that precision and prints other digits than the exact ones
 * (musl-gcc: 1.0/3 as %.2f is 0.34, as %.17f 0.33333333333333332). The fast path must leave %f to vsnprintf then;
 * glibc's printf, which computes with integers, prints the same either way, so the bytes are checked too. */
Test(format_internal, vformat_when_the_x87_precision_is_not_64_bits)
{
    const double third = 1.0 / 3, values[] = {0.25, 1.0 / 3, -1.0 / 3, 2.5, 0.1, 123456.789012345678};
    unsigned short cw, low_cw;
    __asm__ volatile("fnstcw %0" : "=m"(cw));
    static const unsigned short precisions[] = {0x0200, 0x0000}; /* 53 bits, 24 bits */
    for (int k = 0; k < 2; k++) {
        low_cw = (unsigned short)((cw & ~0x0f00u) | precisions[k]); /* rounding to nearest, lower precision */
        __asm__ volatile("fldcw %0" : : "m"(low_cw));
        for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
            int taken = differ_check("%f|%.0f|%.2f|%.17f", values[i], values[i], values[i], values[i]);
            __asm__ volatile("fldcw %0" : : "m"(cw));
            cr_assert_not(taken, "precision control %#x: %%f of %a taken by the fast path", precisions[k], values[i]);
            __asm__ volatile("fldcw %0" : : "m"(low_cw));
        }
        cr_assert(differ_check("%d %s", -7, "no %f here"));
        __asm__ volatile("fldcw %0" : : "m"(cw));
    }
    cr_assert(differ_check("%.1f %.2f", 0.25, third));
}
#endif

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
