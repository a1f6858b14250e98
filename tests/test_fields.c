/* SPDX-License-Identifier: MIT */
/* Typed fields, context, caller location, run-time level and JSON key sets, read back from the file: exact bytes
 * for text records (after the timestamp), a strict JSON parse (fuzz/json_check.h) for JSON ones. */
#include <forklog.h>

#include "helpers.h"

#include "../fuzz/json_check.h"

#include <dlfcn.h>
#include <errno.h>
#include <fenv.h>
#include <limits.h>
#include <locale.h>
#include <math.h>
#ifdef __GLIBC__
#include <printf.h>
#endif
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static char *dir;

static void setup(void)
{
    dir = th_tmpdir();
}

static void teardown(void)
{
    th_rmdir(dir);
    free(dir);
}

TestSuite(fields, .init = setup, .fini = teardown);

/* Criterion would spell out the macro's whole expansion in its message: keep the call out of the assertion. */
#define OK(e)                                                                                                          \
    do {                                                                                                               \
        int ok_rc = (e);                                                                                               \
        cr_assert_eq(ok_rc, 0, "line %d returned %d", __LINE__, ok_rc);                                                \
    } while (0)

static forklog *open_log(const char *name, struct forklog_options *o, char **path)
{
    *path = th_path(dir, name);
    forklog *log;
    int rc = forklog_open(&log, *path, o);
    cr_assert_eq(rc, 0, "forklog_open: %s", strerror(-rc));
    return log;
}

/* The lines of the file, each without the 27-byte timestamp and the space after it (text). */
static char *slurp(const char *path)
{
    size_t len;
    char *buf = th_slurp(path, &len);
    cr_assert_not_null(buf);
    return buf;
}

/* The n-th line (0-based) of buf with the timestamp cut off. */
static char *text_line(const char *buf, int n)
{
    const char *l = buf;
    for (int i = 0; i < n; i++) {
        l = strchr(l, '\n');
        cr_assert_not_null(l);
        l++;
    }
    const char *e = strchr(l, '\n');
    cr_assert_not_null(e);
    cr_assert_gt(e - l, 28);
    cr_assert_eq(l[26], 'Z');
    size_t len = (size_t)(e - l) - 28;
    char *out = malloc(len + 1);
    memcpy(out, l + 28, len);
    out[len] = '\0';
    return out;
}

static void expect_text(const char *buf, int n, const char *want_fmt, ...) __attribute__((format(printf, 3, 4)));
static void expect_text(const char *buf, int n, const char *want_fmt, ...)
{
    char want[4096];
    va_list ap;
    va_start(ap, want_fmt);
    vsnprintf(want, sizeof want, want_fmt, ap);
    va_end(ap);
    char *got = text_line(buf, n);
    cr_assert_str_eq(got, want);
    free(got);
}

/* Parses line n of buf strictly; returns the member count and fills m. */
static int json_line(const char *buf, int n, struct ck_member *m, int max)
{
    const char *l = buf;
    for (int i = 0; i < n; i++) {
        l = strchr(l, '\n');
        cr_assert_not_null(l);
        l++;
    }
    const char *e = strchr(l, '\n');
    cr_assert_not_null(e);
    const char *why = "";
    int k = ck_json_flat((const unsigned char *)l, (size_t)(e - l) + 1, m, max, &why);
    cr_assert_geq(k, 0, "line %d is not valid JSON (%s): %.*s", n, why, (int)(e - l), l);
    for (int a = 0; a < k; a++)
        for (int b = a + 1; b < k; b++)
            cr_assert_str_neq(m[a].key, m[b].key, "key %s twice: %.*s", m[a].key, (int)(e - l), l);
    return k;
}

static const struct ck_member *member(const struct ck_member *m, int n, const char *key)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(m[i].key, key))
            return &m[i];
    return NULL;
}

static void expect_member(const struct ck_member *m, int n, const char *key, char type, const char *value)
{
    const struct ck_member *x = member(m, n, key);
    cr_assert_not_null(x, "no key %s", key);
    cr_assert_eq(x->type, type, "key %s: type %c, expected %c", key, x->type, type);
    if (value)
        cr_assert_str_eq(x->str, value, "key %s", key);
}

Test(fields, text_every_type)
{
    char *path;
    forklog *log = open_log("a.log", NULL, &path);
    struct timespec t = {1700000000, 123456789};
    struct forklog_field f[] = {
        FORKLOG_STR("method", "GET"),
        FORKLOG_INT("status", -200),
        FORKLOG_UINT("bytes", 18446744073709551615ull),
        FORKLOG_DBL("ratio", 0.1),
        FORKLOG_BOOL("ok", 1),
        FORKLOG_BOOL("cached", 0),
        FORKLOG_DUR("cost", 0.0052),
        FORKLOG_DUR_NS("wait", -1500000000),
        FORKLOG_TIMESPEC("at", t),
        FORKLOG_TIME("t2", 1.5),
        FORKLOG_STR("empty", ""),
        FORKLOG_STR("none", NULL),
        FORKLOG_STR("sp", "a b"),
        FORKLOG_STR("q", "say \"hi\"\\"),
        FORKLOG_STR("ctl", "x\ny\x01"),
        FORKLOG_STR("eq", "a=b"),
        FORKLOG_STR("utf8", "\xc3\xa9t\xc3\xa9"),
    };
    cr_assert_eq(forklog_log_fields(log, FORKLOG_INFO, "request done", f, sizeof f / sizeof f[0]), 0);
    OK(forklog_info_kv(log, "kv", FORKLOG_F("s", "x"), FORKLOG_F("i", -3), FORKLOG_F("u", 3u), FORKLOG_F("d", 2.5),
                       FORKLOG_F("b", (_Bool) true), FORKLOG_F("c", 'A'), FORKLOG_F("ts", t),
                       FORKLOG_F("sz", (size_t)7)));
    cr_assert_eq(forklog_close(log), 0);
    char *buf = slurp(path);
    long pid = (long)getpid();
    expect_text(buf, 0,
                "INFO pid=%ld request done method=GET status=-200 bytes=18446744073709551615 ratio=0.1 ok=true "
                "cached=false cost=0.0052 wait=-1.5 at=2023-11-14T22:13:20.123456Z t2=1970-01-01T00:00:01.500000Z "
                "empty=\"\" none= sp=\"a b\" q=\"say \\\"hi\\\"\\\\\" ctl=\"x\\ny\\x01\" eq=\"a=b\" "
                "utf8=\xc3\xa9t\xc3\xa9",
                pid);
    expect_text(buf, 1, "INFO pid=%ld kv s=x i=-3 u=3 d=2.5 b=true c=65 fields.ts=2023-11-14T22:13:20.123456Z sz=7",
                pid);
    free(buf);
    free(path);
}

Test(fields, json_every_type_strict)
{
    char *path;
    struct forklog_options o = {.format = FORKLOG_FORMAT_JSON};
    forklog *log = open_log("a.log", &o, &path);
    struct forklog_field f[] = {
        FORKLOG_STR("s", "tab\there \"q\" \xff"),
        FORKLOG_INT("i", INT64_MIN),
        FORKLOG_UINT("u", UINT64_MAX),
        FORKLOG_DBL("d", 1e300),
        FORKLOG_DBL("nan", NAN),
        FORKLOG_DBL("inf", INFINITY),
        FORKLOG_DBL("ninf", -INFINITY),
        FORKLOG_DBL("neg0", -0.0),
        FORKLOG_DBL("tiny", 4.9e-324),
        FORKLOG_BOOL("b", 1),
        FORKLOG_DUR_NS("dur", 250),
        FORKLOG_TIME("t", 0.25),
        FORKLOG_STR("null", NULL),
        FORKLOG_STR("msg", "collides"),
        FORKLOG_INT("level", 1),
    };
    cr_assert_eq(forklog_log_fields(log, FORKLOG_WARN, "m\"sg", f, sizeof f / sizeof f[0]), 0);
    cr_assert_eq(forklog_close(log), 0);
    char *buf = slurp(path);
    struct ck_member m[40];
    int n = json_line(buf, 0, m, 40);
    expect_member(m, n, "msg", 's', "m\"sg");
    expect_member(m, n, "level", 's', "warn");
    expect_member(m, n, "s", 's', "tab\there \"q\" \xef\xbf\xbd");
    expect_member(m, n, "i", 'n', "-9223372036854775808");
    expect_member(m, n, "u", 'n', "18446744073709551615");
    expect_member(m, n, "d", 'n', "1e+300");
    expect_member(m, n, "nan", 's', "NaN");
    expect_member(m, n, "inf", 's', "+Inf");
    expect_member(m, n, "ninf", 's', "-Inf");
    expect_member(m, n, "neg0", 'n', "-0");
    expect_member(m, n, "tiny", 'n', "4.94065645841247e-324");
    expect_member(m, n, "b", 't', NULL);
    expect_member(m, n, "dur", 'n', "0.00000025");
    expect_member(m, n, "t", 's', "1970-01-01T00:00:00.250000Z");
    expect_member(m, n, "null", 'z', NULL);
    expect_member(m, n, "fields.msg", 's', "collides");
    expect_member(m, n, "fields.level", 'n', "1");
    cr_assert_str_eq(m[0].key, "ts");
    cr_assert_str_eq(m[3].key, "msg");
    ck_members_free(m, n);
    free(buf);
    free(path);
}

Test(fields, duplicate_keys_last_wins)
{
    char *path;
    struct forklog_field ctx[] = {FORKLOG_STR("svc", "api"), FORKLOG_INT("shard", 1)};
    struct forklog_options o = {.context = ctx, .ncontext = 2};
    forklog *log = open_log("a.log", &o, &path);
    OK(forklog_info_kv(log, "m", FORKLOG_INT("a", 1), FORKLOG_INT("shard", 9), FORKLOG_INT("a", 2)));
    cr_assert_eq(forklog_close(log), 0);
    char *buf = slurp(path);
    expect_text(buf, 0, "INFO pid=%ld m svc=api shard=9 a=2", (long)getpid());
    free(buf);
    free(path);
}

/* Line n of buf, without the newline and without the 27 bytes of the timestamp that start at byte `at`. */
static char *line_without_ts(const char *buf, int n, size_t at)
{
    const char *l = buf;
    for (int i = 0; i < n; i++) {
        l = strchr(l, '\n');
        cr_assert_not_null(l);
        l++;
    }
    const char *e = strchr(l, '\n');
    cr_assert_not_null(e);
    size_t len = (size_t)(e - l);
    cr_assert_gt(len, at + 27);
    cr_assert_eq(l[at + 26], 'Z', "a timestamp at %zu: %.*s", at, (int)len, l);
    char *out = malloc(len - 27 + 1);
    cr_assert_not_null(out);
    memcpy(out, l, at);
    memcpy(out + at, l + at + 27, len - at - 27);
    out[len - 27] = '\0';
    return out;
}

/* Appends one field as the record writes it: ` key=value` or `,"key":value` (a string s, or else the number i). */
static void put_field(char *out, size_t cap, int json, const char *key, const char *s, long long i)
{
    size_t n = strlen(out);
    if (s)
        snprintf(out + n, cap - n, json ? ",\"%s\":\"%s\"" : " %s=%s", key, s);
    else
        snprintf(out + n, cap - n, json ? ",\"%s\":%lld" : " %s=%lld", key, i);
}

/* A key of the record's own (K) is written `fields.K`, so K and `fields.K` are one key: the last given wins, at its
 * place, in the call, in the context (given at open, or added later), and across the two. Every name of each key
 * set, either order, text, JSON and ECS JSON, the exact record: with a short message (the fast path), a message
 * with a byte to escape (fl__build), and a long message at a max_record the record just fits (fl__build). */
Test(fields, a_builtin_key_and_its_fields_name_appear_once)
{
    static const char *const short_keys[] = {"ts", "level", "pid", "tid", "app", "msg", "file", "line", "func", "cut"};
    static const char *const ecs_keys[] = {
        "@timestamp",          "log.level",  "process.pid",          "process.thread.id",
        "service.name",        "message",    "log.origin.file.name", "log.origin.file.line",
        "log.origin.function", "forklog.cut"};
    char *path = th_path(dir, "dup.log");
    const long pid = (long)getpid();
    char longmsg[251];
    memset(longmsg, 'm', sizeof longmsg - 1);
    longmsg[sizeof longmsg - 1] = '\0';
    int records = 0;
    for (int mode = 0; mode < 3; mode++) {
        const int json = mode > 0;
        const char *const *names = mode == 2 ? ecs_keys : short_keys;
        for (int b = 0; b < 10; b++) {
            const char *K = names[b];
            char FK[96];
            snprintf(FK, sizeof FK, "fields.%s", K);
            for (int sc = 0; sc < 8; sc++) {
                const char *first = sc % 2 ? FK : K, *second = sc % 2 ? K : FK;
                struct forklog_field opened[3], added[1], call[3];
                size_t nopened = 0, nadded = 0, ncall = 0;
                char tail[512] = "";
                switch (sc / 2) {
                case 0: /* both in the call */
                    call[ncall++] = FORKLOG_STR(first, "a");
                    call[ncall++] = FORKLOG_INT("x", 1);
                    call[ncall++] = FORKLOG_STR(second, "b");
                    put_field(tail, sizeof tail, json, "x", NULL, 1);
                    put_field(tail, sizeof tail, json, FK, "b", 0);
                    break;
                case 1: /* the first in the context, the second in the call */
                    opened[nopened++] = FORKLOG_STR(first, "a");
                    opened[nopened++] = FORKLOG_INT("c", 0);
                    call[ncall++] = FORKLOG_INT("x", 1);
                    call[ncall++] = FORKLOG_STR(second, "b");
                    put_field(tail, sizeof tail, json, "c", NULL, 0);
                    put_field(tail, sizeof tail, json, "x", NULL, 1);
                    put_field(tail, sizeof tail, json, FK, "b", 0);
                    break;
                case 2: /* both in the context given at open */
                    opened[nopened++] = FORKLOG_STR(first, "a");
                    opened[nopened++] = FORKLOG_INT("c", 0);
                    opened[nopened++] = FORKLOG_STR(second, "b");
                    call[ncall++] = FORKLOG_INT("x", 1);
                    put_field(tail, sizeof tail, json, "c", NULL, 0);
                    put_field(tail, sizeof tail, json, FK, "b", 0);
                    put_field(tail, sizeof tail, json, "x", NULL, 1);
                    break;
                default: /* the first given at open, the second added to the context later */
                    opened[nopened++] = FORKLOG_STR(first, "a");
                    opened[nopened++] = FORKLOG_INT("c", 0);
                    added[nadded++] = FORKLOG_STR(second, "b");
                    call[ncall++] = FORKLOG_INT("x", 1);
                    put_field(tail, sizeof tail, json, "c", NULL, 0);
                    put_field(tail, sizeof tail, json, FK, "b", 0);
                    put_field(tail, sizeof tail, json, "x", NULL, 1);
                    break;
                }
                struct forklog_options o = {.format = json ? FORKLOG_FORMAT_JSON : FORKLOG_FORMAT_TEXT,
                                            .keys = mode == 2 ? FORKLOG_KEYS_ECS : FORKLOG_KEYS_SHORT,
                                            .context = opened,
                                            .ncontext = nopened};
                /* The fast path, then fl__build for a message with a tab in it. */
                unlink(path);
                forklog *log;
                cr_assert_eq(forklog_open(&log, path, &o), 0);
                if (nadded)
                    OK(forklog_context_add(log, added, nadded));
                OK(forklog_log_fields(log, FORKLOG_INFO, "m", call, ncall));
                OK(forklog_log_fields(log, FORKLOG_INFO, "m\tn", call, ncall));
                OK(forklog_log_fields(log, FORKLOG_INFO, longmsg, call, ncall));
                cr_assert_eq(forklog_close(log), 0);
                /* fl__build again, at a max_record the long record just fits (with the room for a cut marker). */
                size_t len;
                char *buf = th_slurp(path, &len);
                cr_assert_not_null(buf);
                const char *third = strchr(strchr(buf, '\n') + 1, '\n') + 1;
                o.max_record = (size_t)(buf + len - third) + 2 + 48;
                free(buf);
                cr_assert_eq(forklog_open(&log, path, &o), 0);
                if (nadded)
                    OK(forklog_context_add(log, added, nadded));
                OK(forklog_log_fields(log, FORKLOG_INFO, longmsg, call, ncall));
                cr_assert_eq(forklog_close(log), 0);
                buf = th_slurp(path, &len);
                static const char *const msgs[] = {"m", "m\\tn", NULL, NULL};
                for (int r = 0; r < 4; r++) {
                    const char *m = msgs[r] ? msgs[r] : longmsg;
                    char want[1024];
                    if (mode == 0)
                        snprintf(want, sizeof want, "INFO pid=%ld %s%s", pid, m, tail);
                    else if (mode == 1)
                        snprintf(want, sizeof want, "{\"ts\":\"\",\"level\":\"info\",\"pid\":%ld,\"msg\":\"%s\"%s}",
                                 pid, m, tail);
                    else
                        snprintf(
                            want, sizeof want,
                            "{\"@timestamp\":\"\",\"log.level\":\"info\",\"process.pid\":%ld,\"message\":\"%s\"%s}",
                            pid, m, tail);
                    char *got = mode == 0 ? text_line(buf, r) : line_without_ts(buf, r, mode == 1 ? 7 : 15);
                    cr_assert_str_eq(got, want, "key %s, scenario %d, record %d", K, sc, r);
                    free(got);
                    records++;
                }
                cr_assert_eq(th_count_lines(buf, len), 4);
                free(buf);
            }
        }
    }
    cr_assert_eq(records, 3 * 10 * 8 * 4);
    free(path);
}

/* A TIME field is written with years 0000 .. 9999: a time before is 0000-01-01T00:00:00.000000Z, one after
 * 9999-12-31T23:59:59.999999Z, the edges themselves and the times just inside as they are; for every way a TIME
 * field is made, both signs, near the edges and far beyond, in text and JSON. */
Test(fields, times_are_clamped_to_years_0000_to_9999)
{
    static const char lo[] = "0000-01-01T00:00:00.000000Z", hi[] = "9999-12-31T23:59:59.999999Z";
    const long long smin = -62167219200LL, smax = 253402300799LL;
    struct forklog_field f[64];
    const char *want[64];
    size_t n = 0;
    char keys[64][8];
#define TIME_CASE(field, expect)                                                                                       \
    do {                                                                                                               \
        snprintf(keys[n], sizeof keys[n], "t%zu", n);                                                                  \
        f[n] = field;                                                                                                  \
        f[n].key = keys[n];                                                                                            \
        want[n++] = (expect);                                                                                          \
    } while (0)
    /* FORKLOG_TIMESPEC / forklog_field_timespec, and FORKLOG_TIME and FORKLOG_F of a struct timespec. */
    const struct {
        long long sec;
        long nsec;
        const char *expect;
    } specs[] = {
        {smax, 999999999, hi},
        {smax, 0, "9999-12-31T23:59:59.000000Z"},
        {smax + 1, 0, hi},
        {smax + 1, 999999999, hi},
        {smax + 86400LL * 366, 5, hi},
        {(long long)1e15, 0, hi},
        {LLONG_MAX, 0, hi},
        {LLONG_MAX, 999999999, hi},
        {smin, 0, lo},
        {smin, 999999, "0000-01-01T00:00:00.000999Z"},
        {smin - 1, 999999999, lo},
        {smin - 86400LL * 366, 5, lo},
        {-(long long)1e15, 999999999, lo},
        {LLONG_MIN, 0, lo},
        {LLONG_MIN, 999999999, lo},
        {0, 0, "1970-01-01T00:00:00.000000Z"},
        {-1, 0, "1969-12-31T23:59:59.000000Z"},
    };
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
        struct timespec ts = {(time_t)specs[i].sec, specs[i].nsec};
        TIME_CASE(FORKLOG_TIMESPEC("k", ts), specs[i].expect);
        if (i % 3 == 0)
            TIME_CASE(FORKLOG_TIME("k", ts), specs[i].expect);
        if (i % 3 == 1)
            TIME_CASE(FORKLOG_F("k", ts), specs[i].expect);
        if (i % 3 == 2) { /* by hand */
            struct forklog_field h = {.key = "k", .type = FORKLOG_FIELD_TIME};
            h.v.t.sec = specs[i].sec;
            h.v.t.nsec = specs[i].nsec;
            TIME_CASE(h, specs[i].expect);
        }
    }
    /* FORKLOG_TIME / forklog_field_time of a double. */
    const struct {
        double sec;
        const char *expect;
    } dbls[] = {
        {253402300799.5, "9999-12-31T23:59:59.500000Z"},
        {253402300800.0, hi},
        {253402300800.5, hi},
        {1e30, hi},
        {9.2e18, hi},
        {INFINITY, hi},
        {-62167219200.0, lo},
        {-62167219199.75, "0000-01-01T00:00:00.250000Z"},
        {-62167219200.5, lo},
        {-1e30, lo},
        {-9.2e18, lo},
        {-INFINITY, lo},
        {NAN, "1970-01-01T00:00:00.000000Z"},
    };
    for (size_t i = 0; i < sizeof dbls / sizeof dbls[0]; i++)
        TIME_CASE(FORKLOG_TIME("k", dbls[i].sec), dbls[i].expect);
#undef TIME_CASE
    for (int json = 0; json <= 1; json++) {
        char *path;
        struct forklog_options o = {.format = json ? FORKLOG_FORMAT_JSON : FORKLOG_FORMAT_TEXT};
        forklog *log = open_log(json ? "t.json" : "t.log", &o, &path);
        /* One field per record, so that each record is read back on its own. */
        for (size_t i = 0; i < n; i++)
            OK(forklog_log_fields(log, FORKLOG_INFO, "t", &f[i], 1));
        cr_assert_eq(forklog_close(log), 0);
        char *buf = slurp(path);
        for (size_t i = 0; i < n; i++) {
            char *got = json ? line_without_ts(buf, (int)i, 7) : text_line(buf, (int)i);
            char line[256];
            if (json)
                snprintf(line, sizeof line, "{\"ts\":\"\",\"level\":\"info\",\"pid\":%ld,\"msg\":\"t\",\"%s\":\"%s\"}",
                         (long)getpid(), keys[i], want[i]);
            else
                snprintf(line, sizeof line, "INFO pid=%ld t %s=%s", (long)getpid(), keys[i], want[i]);
            cr_assert_str_eq(got, line, "case %zu (sec %lld, nsec %ld)", i, f[i].v.t.sec, f[i].v.t.nsec);
            free(got);
        }
        free(buf);
        free(path);
    }
}

/* A tv_nsec outside 0 .. 999999999 is normalised into the seconds, which saturate at LLONG_MAX and LLONG_MIN
 * (then clamp to years 0000 .. 9999) instead of overflowing: run under UBSan too. */
Test(fields, time_nanoseconds_out_of_range_are_normalised_without_overflow)
{
    static const char lo[] = "0000-01-01T00:00:00.000000Z", hi[] = "9999-12-31T23:59:59.999999Z";
    const long long smin = -62167219200LL, smax = 253402300799LL;
    static const long nsecs[] = {1000000000L, -1000000000L, -1L, LONG_MAX, LONG_MIN};
    struct forklog_field f[32];
    const char *want[32];
    size_t n = 0;
    for (size_t i = 0; i < sizeof nsecs / sizeof nsecs[0]; i++) {
        f[n] = FORKLOG_TIMESPEC("t", ((struct timespec){(time_t)LLONG_MAX, nsecs[i]}));
        want[n++] = hi;
        f[n] = FORKLOG_TIMESPEC("t", ((struct timespec){(time_t)LLONG_MIN, nsecs[i]}));
        want[n++] = lo;
    }
    /* Within range, the carry is exact. */
    const struct {
        long long sec;
        long nsec;
        const char *expect;
    } exact[] = {
        {0, 1000000000L, "1970-01-01T00:00:01.000000Z"},
        {0, -1L, "1969-12-31T23:59:59.999999Z"},
        {0, -1000000000L, "1969-12-31T23:59:59.000000Z"},
        {0, 2500000000L, "1970-01-01T00:00:02.500000Z"},
        {0, LONG_MAX, "2262-04-11T23:47:16.854775Z"},
        {0, LONG_MIN, "1677-09-21T00:12:43.145224Z"},
        {smax, 1000000000L, hi},
        {smax + 1, -1L, "9999-12-31T23:59:59.999999Z"},
        {smin, -1L, lo},
        {smin - 1, 1000000000L, "0000-01-01T00:00:00.000000Z"},
        {smin - 1, 1999999999L, "0000-01-01T00:00:00.999999Z"},
    };
    for (size_t i = 0; i < sizeof exact / sizeof exact[0]; i++) {
        struct forklog_field h = {.key = "t", .type = FORKLOG_FIELD_TIME};
        h.v.t.sec = exact[i].sec;
        h.v.t.nsec = exact[i].nsec;
        f[n] = h;
        want[n++] = exact[i].expect;
    }
    char *path;
    forklog *log = open_log("n.log", NULL, &path);
    for (size_t i = 0; i < n; i++)
        OK(forklog_log_fields(log, FORKLOG_INFO, "t", &f[i], 1));
    cr_assert_eq(forklog_close(log), 0);
    char *buf = slurp(path);
    for (size_t i = 0; i < n; i++) {
        char *got = text_line(buf, (int)i);
        char line[128];
        snprintf(line, sizeof line, "INFO pid=%ld t t=%s", (long)getpid(), want[i]);
        cr_assert_str_eq(got, line, "case %zu (sec %lld, nsec %ld)", i, f[i].v.t.sec, f[i].v.t.nsec);
        free(got);
    }
    free(buf);
    free(path);
}

/* "ts" and "fields.ts" are one key (docs/design.md, "Keys"): a context of 64 distinct keys, "ts" among them, takes
 * "fields.ts" as a new value of a key it has, not as a 65th key; so do "message" and "fields.message" with the ECS
 * keys, where "message" is one of the record's own. */
Test(fields, context_add_counts_keys_as_written)
{
    for (int ecs = 0; ecs < 2; ecs++) {
        char names[FORKLOG_MAX_FIELDS][8];
        struct forklog_field ctx[FORKLOG_MAX_FIELDS];
        for (int i = 0; i < FORKLOG_MAX_FIELDS - 1; i++) {
            snprintf(names[i], sizeof names[i], "k%d", i);
            ctx[i] = FORKLOG_INT(names[i], i);
        }
        const char *own = ecs ? "message" : "ts", *renamed = ecs ? "fields.message" : "fields.ts";
        ctx[FORKLOG_MAX_FIELDS - 1] = FORKLOG_INT(own, 1);
        struct forklog_options o = {.format = ecs ? FORKLOG_FORMAT_JSON : FORKLOG_FORMAT_TEXT,
                                    .keys = ecs ? FORKLOG_KEYS_ECS : FORKLOG_KEYS_SHORT,
                                    .context = ctx,
                                    .ncontext = FORKLOG_MAX_FIELDS};
        char *path;
        forklog *log = open_log(ecs ? "w2.log" : "w1.log", &o, &path);
        struct forklog_field again = FORKLOG_INT(renamed, 2);
        OK(forklog_context_add(log, &again, 1));
        OK(forklog_log_fields(log, FORKLOG_INFO, "m", NULL, 0));
        cr_assert_eq(forklog_close(log), 0);
        char *buf = slurp(path);
        char want[64];
        snprintf(want, sizeof want, ecs ? "\"%s\":2" : " %s=2", renamed);
        cr_assert_not_null(strstr(buf, want), "%s", buf);
        cr_assert_null(strstr(strstr(buf, want) + strlen(want), renamed), "%s twice: %s", renamed, buf);
        free(buf);
        free(path);
    }
}

/* A refused forklog_context_add() changes nothing: more than FORKLOG_MAX_FIELDS fields in one call, or a call that
 * would make a 65th distinct key, leaves the context every later record carries as it was, and no field of the
 * refused call, not even the valid ones before the one that is not, gets into a record. */
Test(fields, a_refused_context_add_leaves_the_context_as_it_was)
{
    char names[FORKLOG_MAX_FIELDS + 1][8];
    struct forklog_field many[FORKLOG_MAX_FIELDS + 1];
    for (int i = 0; i <= FORKLOG_MAX_FIELDS; i++) {
        snprintf(names[i], sizeof names[i], "k%d", i);
        many[i] = FORKLOG_INT(names[i], i);
    }
    char *path;
    forklog *log = open_log("a.log", NULL, &path);
    cr_assert_eq(forklog_context_add(NULL, many, 1), -EINVAL);
    cr_assert_eq(forklog_context_add(log, many, FORKLOG_MAX_FIELDS + 1), -EINVAL);
    OK(forklog_log_fields(log, FORKLOG_INFO, "none", NULL, 0));
    OK(forklog_context_add(log, many, FORKLOG_MAX_FIELDS));
    struct forklog_field extra[] = {FORKLOG_INT("k0", 100), FORKLOG_INT("extra", 1)};
    cr_assert_eq(forklog_context_add(log, extra, 2), -EINVAL, "a 65th distinct key");
    struct forklog_field bad[] = {FORKLOG_INT("k1", 101), FORKLOG_INT("bad key", 1)};
    cr_assert_eq(forklog_context_add(log, bad, 2), -EINVAL, "an invalid key after a valid one");
    OK(forklog_log_fields(log, FORKLOG_INFO, "all", NULL, 0));
    cr_assert_eq(forklog_close(log), 0);
    char *buf = slurp(path);
    char *second = strchr(buf, '\n');
    cr_assert_not_null(second);
    *second++ = '\0';
    cr_assert(strlen(buf) > 5 && !strcmp(buf + strlen(buf) - 5, " none"), "the first record has fields: %s", buf);
    cr_assert_null(strstr(buf, "k0="), "the refused context reached a record: %s", buf);
    char want[1024] = " all";
    for (int i = 0; i < FORKLOG_MAX_FIELDS; i++)
        snprintf(want + strlen(want), sizeof want - strlen(want), " k%d=%d", i, i);
    strcat(want, "\n");
    cr_assert_not_null(strstr(second, want), "the context is not the 64 fields of the call that was taken: %s", second);
    cr_assert_eq(strchr(second, '\n')[1], '\0', "one record after the refusals: %s", second);
    free(buf);
    free(path);
}

/* forklog_field_dur() of the values with no duration in nanoseconds: NaN is 0, beyond +-9.2e18 ns the bound, zero
 * of either sign 0; the rest rounds half away from zero. */
Test(fields, a_duration_of_nan_infinity_or_zero_seconds)
{
    static const struct {
        double s;
        long long ns;
    } cases[] = {{NAN, 0},
                 {-NAN, 0},
                 {INFINITY, 9223372036854775807LL},
                 {-INFINITY, -9223372036854775807LL},
                 {1e300, 9223372036854775807LL},
                 {-1e300, -9223372036854775807LL},
                 {0.0, 0},
                 {-0.0, 0},
                 {2.5e-9, 3},
                 {-2.5e-9, -3},
                 {0.0052, 5200000}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct forklog_field f = forklog_field_dur("d", cases[i].s);
        cr_assert_eq(f.type, FORKLOG_FIELD_DUR);
        cr_assert_eq(f.v.ns, cases[i].ns, "%g s: %lld ns, not %lld", cases[i].s, f.v.ns, cases[i].ns);
    }
}

Test(fields, bad_input_is_einval_and_writes_nothing)
{
    char *path;
    forklog *log = open_log("a.log", NULL, &path);
    struct forklog_field ok = FORKLOG_INT("k", 1);
    cr_assert_eq(forklog_log_fields(log, FORKLOG_INFO, "m", NULL, 1), -EINVAL);
    cr_assert_eq(forklog_log_fields(log, FORKLOG_INFO, NULL, &ok, 1), -EINVAL);
    cr_assert_eq(forklog_log_fields(NULL, FORKLOG_INFO, "m", &ok, 1), -EINVAL);
    cr_assert_eq(forklog_log_fields(log, (enum forklog_level)9, "m", &ok, 1), -EINVAL);
    struct forklog_field many[FORKLOG_MAX_FIELDS + 1];
    for (int i = 0; i <= FORKLOG_MAX_FIELDS; i++)
        many[i] = FORKLOG_INT("k", i);
    cr_assert_eq(forklog_log_fields(log, FORKLOG_INFO, "m", many, FORKLOG_MAX_FIELDS + 1), -EINVAL);
    cr_assert_eq(forklog_log_fields(log, FORKLOG_INFO, "m", many, FORKLOG_MAX_FIELDS), 0);
    static const char *const bad_keys[] = {
        "", "a b", "a=b", "k\"", "\xc3\xa9", "x2345678901234567890123456789012345678901234567890123456789012345"};
    for (size_t i = 0; i < sizeof bad_keys / sizeof bad_keys[0]; i++) {
        struct forklog_field f = FORKLOG_INT(bad_keys[i], 1);
        cr_assert_eq(forklog_log_fields(log, FORKLOG_INFO, "m", &f, 1), -EINVAL, "key \"%s\"", bad_keys[i]);
    }
    struct forklog_field nk = FORKLOG_INT(NULL, 1);
    cr_assert_eq(forklog_log_fields(log, FORKLOG_INFO, "m", &nk, 1), -EINVAL);
    struct forklog_field bt = FORKLOG_INT("k", 1);
    bt.type = (enum forklog_field_type)99;
    cr_assert_eq(forklog_log_fields(log, FORKLOG_INFO, "m", &bt, 1), -EINVAL);
    cr_assert_eq(forklog_context_add(log, &bt, 1), -EINVAL);
    cr_assert_eq(forklog_context_add(log, NULL, 1), -EINVAL);
    /* Below the level: 0 at once (the key is not even looked at); only a NULL message, a NULL list and the count
     * are checked, as the header says. */
    cr_assert_eq(forklog_log_fields(log, FORKLOG_DEBUG, "m", &nk, 1), 0);
    cr_assert_eq(forklog_log_fields(log, FORKLOG_DEBUG, NULL, &ok, 1), -EINVAL);
    cr_assert_eq(forklog_log_fields(log, FORKLOG_DEBUG, "m", NULL, 1), -EINVAL);
    cr_assert_eq(forklog_log_fields(log, FORKLOG_DEBUG, "m", many, FORKLOG_MAX_FIELDS + 1), -EINVAL);
    cr_assert_eq(forklog_close(log), 0);
    size_t len;
    char *buf = th_slurp(path, &len);
    cr_assert_eq(th_count_lines(buf, len), 1, "only the valid 64-field record: %s", buf);
    free(buf);
    struct forklog_options o = {.name = "bad\nname"};
    forklog *l2;
    cr_assert_eq(forklog_open(&l2, path, &o), -EINVAL);
    o.name = "";
    cr_assert_eq(forklog_open(&l2, path, &o), -EINVAL);
    /* Not UTF-8: a stray byte, a cut sequence, an overlong form, a surrogate, past U+10FFFF. */
    static const char *const not_utf8[] = {"bad\xff\xfe x", "caf\xc3", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80"};
    for (size_t i = 0; i < sizeof not_utf8 / sizeof *not_utf8; i++) {
        o.name = not_utf8[i];
        cr_assert_eq(forklog_open(&l2, path, &o), -EINVAL, "name %zu is not UTF-8", i);
    }
    o.name = "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x93\x9c";
    cr_assert_eq(forklog_open(&l2, path, &o), 0, "a name in UTF-8");
    cr_assert_eq(forklog_close(l2), 0);
    struct forklog_options o2 = {.context = &nk, .ncontext = 1};
    cr_assert_eq(forklog_open(&l2, path, &o2), -EINVAL);
    struct forklog_options o3 = {.keys = (enum forklog_keys)7};
    cr_assert_eq(forklog_open(&l2, path, &o3), -EINVAL);
    free(path);
}

Test(fields, records_that_do_not_fit_stay_whole_and_valid)
{
    for (int json = 0; json <= 1; json++) {
        char *path;
        struct forklog_options o = {.max_record = 300, .format = json ? FORKLOG_FORMAT_JSON : FORKLOG_FORMAT_TEXT};
        forklog *log = open_log(json ? "j.log" : "t.log", &o, &path);
        char big[1000];
        memset(big, '"', sizeof big - 1);
        big[sizeof big - 1] = '\0';
        int rc = forklog_info_kv(log, big, FORKLOG_INT("a", 1), FORKLOG_STR("big", big), FORKLOG_INT("b", 2));
        cr_assert_gt(rc, 0, "the message is cut");
        cr_assert_eq(forklog_close(log), 0);
        size_t len;
        char *buf = th_slurp(path, &len);
        cr_assert_leq(len, 300);
        cr_assert_eq(buf[len - 1], '\n');
        cr_assert_null(strstr(buf, "big="), "the oversized field is left out whole");
        if (json) {
            struct ck_member m[16];
            int n = json_line(buf, 0, m, 16);
            expect_member(m, n, "a", 'n', "1");
            expect_member(m, n, "b", 'n', "2");
            expect_member(m, n, "cut", 'n', NULL);
            ck_members_free(m, n);
        } else {
            cr_assert_not_null(strstr(buf, " bytes cut]\" a=1 b=2\n") ? "" : strstr(buf, " bytes cut] a=1 b=2\n"), "%s",
                               buf);
        }
        free(buf);
        free(path);
    }
}

Test(fields, message_quoted_when_fields_follow)
{
    char *path;
    forklog *log = open_log("a.log", NULL, &path);
    OK(forklog_info_kv(log, "x=1 y", FORKLOG_INT("k", 1)));
    OK(forklog_info_kv(log, "\"q\" first", FORKLOG_INT("k", 1)));
    OK(forklog_info_kv(log, "", FORKLOG_INT("k", 1)));
    cr_assert_eq(forklog_info(log, "x=%d", 1), 0); /* no fields: as it always was */
    cr_assert_eq(forklog_close(log), 0);
    char *buf = slurp(path);
    long pid = (long)getpid();
    expect_text(buf, 0, "INFO pid=%ld \"x=1 y\" k=1", pid);
    expect_text(buf, 1, "INFO pid=%ld \"\\\"q\\\" first\" k=1", pid);
    expect_text(buf, 2, "INFO pid=%ld  k=1", pid);
    expect_text(buf, 3, "INFO pid=%ld x=1", pid);
    free(buf);
    free(path);
}

Test(fields, context_name_tid_and_child_context)
{
    char *path;
    struct forklog_field ctx[] = {FORKLOG_STR("region", "eu-1")};
    struct forklog_options o = {.name = "my app", .flags = FORKLOG_TID, .context = ctx, .ncontext = 1};
    forklog *log = open_log("a.log", &o, &path);
    cr_assert_eq(forklog_info(log, "parent %d", 1), 0);
    pid_t child = fork();
    if (child == 0) {
        struct forklog_field w = FORKLOG_INT("worker", 3);
        if (forklog_context_add(log, &w, 1) != 0)
            _exit(1);
        if (forklog_info(log, "child %s", "ready") != 0)
            _exit(2);
        w = FORKLOG_INT("worker", 4); /* a key already there takes the new value */
        if (forklog_context_add(log, &w, 1) != 0 || forklog_info_kv(log, "kv", FORKLOG_BOOL("x", 1)) != 0)
            _exit(3);
        forklog_close(log);
        _exit(0);
    }
    cr_assert_eq(th_wait(child), 0);
    cr_assert_eq(forklog_info(log, "parent %d", 2), 0);
    cr_assert_eq(forklog_close(log), 0);
    char *buf = slurp(path);
    long pid = (long)getpid(), tid = (long)syscall(SYS_gettid);
    expect_text(buf, 0, "INFO pid=%ld tid=%ld app=\"my app\" parent 1 region=eu-1", pid, tid);
    expect_text(buf, 1, "INFO pid=%ld tid=%ld app=\"my app\" child ready region=eu-1 worker=3", (long)child,
                (long)child);
    expect_text(buf, 2, "INFO pid=%ld tid=%ld app=\"my app\" kv region=eu-1 worker=4 x=true", (long)child, (long)child);
    expect_text(buf, 3, "INFO pid=%ld tid=%ld app=\"my app\" parent 2 region=eu-1", pid, tid);
    free(buf);
    free(path);
}

static void *thread_logs(void *arg)
{
    forklog *log = arg;
    forklog_info(log, "from a thread");
    return (void *)(intptr_t)syscall(SYS_gettid);
}

Test(fields, tid_per_thread_and_context_add_from_threads)
{
    char *path;
    struct forklog_options o = {.flags = FORKLOG_TID};
    forklog *log = open_log("a.log", &o, &path);
    pthread_t th;
    void *tid;
    cr_assert_eq(pthread_create(&th, NULL, thread_logs, log), 0);
    cr_assert_eq(pthread_join(th, &tid), 0);
    cr_assert_eq(forklog_close(log), 0);
    char *buf = slurp(path);
    expect_text(buf, 0, "INFO pid=%ld tid=%ld from a thread", (long)getpid(), (long)(intptr_t)tid);
    free(buf);
    free(path);
}

Test(fields, location)
{
    char *path;
    struct forklog_options o = {.format = FORKLOG_FORMAT_TEXT};
    forklog *log = open_log("a.log", &o, &path);
    int line = __LINE__ + 1;
    cr_assert_eq(forklog_info_at(log, "at %d", 1), 0);
    OK(forklog_log_fields_at(log, FORKLOG_INFO, "f.c", 7, NULL, "m", NULL, 0));
    cr_assert_eq(forklog_log_at(log, FORKLOG_INFO, NULL, 7, "fn", "no file, no location"), 0);
    cr_assert_eq(forklog_close(log), 0);
    char *buf = slurp(path);
    long pid = (long)getpid();
    expect_text(buf, 0, "INFO pid=%ld at 1 file=%s line=%d func=%s", pid, __FILE__, line, __func__);
    expect_text(buf, 1, "INFO pid=%ld m file=f.c line=7", pid);
    expect_text(buf, 2, "INFO pid=%ld no file, no location", pid);
    free(buf);
    free(path);
}

Test(fields, ecs_keys)
{
    char *path;
    struct forklog_field ctx[] = {FORKLOG_STR("ecs.version", "8.11.0")};
    struct forklog_options o = {.format = FORKLOG_FORMAT_JSON,
                                .keys = FORKLOG_KEYS_ECS,
                                .flags = FORKLOG_TID,
                                .name = "checkout",
                                .context = ctx,
                                .ncontext = 1};
    forklog *log = open_log("a.log", &o, &path);
    OK(forklog_log_fields_at(
        log, FORKLOG_ERROR, "x.c", 3, "f", "failed",
        (struct forklog_field[]){FORKLOG_INT("http.response.status_code", 502), FORKLOG_STR("message", "dup")}, 2));
    cr_assert_eq(forklog_close(log), 0);
    char *buf = slurp(path);
    struct ck_member m[20];
    int n = json_line(buf, 0, m, 20);
    static const char *const order[] = {"@timestamp",
                                        "log.level",
                                        "process.pid",
                                        "process.thread.id",
                                        "service.name",
                                        "message",
                                        "log.origin.file.name",
                                        "log.origin.file.line",
                                        "log.origin.function",
                                        "ecs.version",
                                        "http.response.status_code",
                                        "fields.message"};
    cr_assert_eq(n, 12);
    for (int i = 0; i < 12; i++)
        cr_assert_str_eq(m[i].key, order[i]);
    expect_member(m, n, "log.level", 's', "error");
    expect_member(m, n, "service.name", 's', "checkout");
    expect_member(m, n, "message", 's', "failed");
    expect_member(m, n, "log.origin.file.line", 'n', "3");
    ck_members_free(m, n);
    free(buf);
    free(path);
}

/* With the ECS keys, whose consumers read a dotted name as a path of objects, a key on the path of one of the record's
 * own keys (`log`, `log.origin`, `process`, `service`, `forklog`) or below one (`message.x`, `log.level.y`) is
 * written `fields.KEY` too (docs/design.md, "Keys"): the record's types never clash. Keys beside them (`log.logger`,
 * `process.name`, `services`) are written as given, and so is every key with the short keys. Through the fast path
 * (fields alone) and the general one (a context, a location). */
Test(fields, ecs_keys_on_or_below_a_records_own_key_are_renamed)
{
    static const char *const given[] = {
        "log",        "log.origin",   "log.origin.file", "process",     "process.thread",
        "service",    "forklog",      "message.x",       "log.level.y", "@timestamp.z",
        "log.logger", "process.name", "services",        "messages",    "log.originx"};
    enum { N = sizeof given / sizeof given[0], RENAMED = 10 };
    for (int keys = 0; keys < 2; keys++)
        for (int general = 0; general < 2; general++) {
            char *path;
            struct forklog_field ctx[] = {FORKLOG_STR("env", "prod")};
            struct forklog_options o = {.format = FORKLOG_FORMAT_JSON,
                                        .keys = keys ? FORKLOG_KEYS_ECS : FORKLOG_KEYS_SHORT,
                                        .context = general ? ctx : NULL,
                                        .ncontext = general ? 1 : 0};
            forklog *log = open_log("a.log", &o, &path);
            struct forklog_field f[N];
            for (int i = 0; i < N; i++)
                f[i] = FORKLOG_INT(given[i], i);
            OK(forklog_log_fields(log, FORKLOG_INFO, "m", f, N));
            cr_assert_eq(forklog_close(log), 0);
            char *buf = slurp(path);
            struct ck_member m[40];
            int n = json_line(buf, 0, m, 40);
            cr_assert_gt(n, N, "%s", buf);
            for (int i = 0; i < N; i++) {
                char want[80], num[8];
                snprintf(want, sizeof want, "%s%s", keys && i < RENAMED ? "fields." : "", given[i]);
                snprintf(num, sizeof num, "%d", i);
                cr_assert_str_eq(m[n - N + i].key, want, "keys %d general %d: %s", keys, general, buf);
                expect_member(m, n, want, 'n', num);
            }
            ck_members_free(m, n);
            free(buf);
            unlink(path);
            free(path);
        }
}

Test(fields, set_level_reaches_every_process)
{
    char *path;
    forklog *log = open_log("a.log", NULL, &path);
    cr_assert_eq(forklog_get_level(log), FORKLOG_INFO);
    int go[2];
    cr_assert_eq(pipe(go), 0);
    pid_t child = fork();
    if (child == 0) {
        char c;
        close(go[1]);
        if (read(go[0], &c, 1) != 1)
            _exit(1);
        forklog_debug(log, "child debug"); /* the parent lowered the level meanwhile */
        forklog_close(log);
        _exit(0);
    }
    close(go[0]);
    forklog_debug(log, "dropped");
    cr_assert_eq(forklog_set_level(log, FORKLOG_DEBUG), 0);
    cr_assert_eq(forklog_get_level(log), FORKLOG_DEBUG);
    cr_assert_eq(write(go[1], "g", 1), 1);
    cr_assert_eq(th_wait(child), 0);
    /* Another handle of the same log, opened by name, sees it too. */
    forklog *other;
    cr_assert_eq(forklog_open(&other, path, NULL), 0);
    cr_assert_eq(forklog_get_level(other), FORKLOG_DEBUG);
    cr_assert_eq(forklog_set_level(other, FORKLOG_ERROR), 0);
    cr_assert_eq(forklog_warn(log, "dropped too"), 0);
    cr_assert_eq(forklog_set_level(log, (enum forklog_level)0), 0); /* back to each handle's own */
    cr_assert_eq(forklog_info(log, "info again"), 0);
    cr_assert_eq(forklog_set_level(log, (enum forklog_level)5), -EINVAL);
    cr_assert_eq(forklog_set_level(NULL, FORKLOG_INFO), -EINVAL);
    forklog_close(other);
    cr_assert_eq(forklog_close(log), 0);
    char *buf = slurp(path);
    expect_text(buf, 0, "DEBUG pid=%ld child debug", (long)child);
    expect_text(buf, 1, "INFO pid=%ld info again", (long)getpid());
    cr_assert_null(strstr(buf, "dropped"));
    free(buf);
    free(path);
}

Test(fields, level_from_the_environment)
{
    char *path = th_path(dir, "a.log");
    static const struct {
        const char *env;
        int level;
    } cases[] = {{"debug", 1}, {"WARNING", 3}, {"Error", 4}, {"2", 2}, {"bogus", 2}, {"", 2}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        setenv("FORKLOG_LEVEL", cases[i].env, 1);
        forklog *log;
        cr_assert_eq(forklog_open(&log, path, NULL), 0);
        cr_assert_eq(forklog_get_level(log), cases[i].level, "FORKLOG_LEVEL=%s", cases[i].env);
        forklog_close(log);
    }
    setenv("FORKLOG_LEVEL", "debug", 1);
    struct forklog_options o = {.level = FORKLOG_ERROR}; /* an explicit level wins */
    forklog *log;
    cr_assert_eq(forklog_open(&log, path, &o), 0);
    cr_assert_eq(forklog_get_level(log), FORKLOG_ERROR);
    forklog_close(log);
    unsetenv("FORKLOG_LEVEL");
    free(path);
}

/* A Turkish locale, tr_TR.UTF-8: the installed one, else one built with localedef(1) in the test's directory (through
 * LOCPATH); (locale_t)0 when neither can be had. */
static locale_t turkish_locale(void)
{
    locale_t tr = newlocale(LC_CTYPE_MASK, "tr_TR.UTF-8", (locale_t)0);
    if (tr)
        return tr;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "localedef -i tr_TR -f UTF-8 '%s/tr_TR.UTF-8' >/dev/null 2>&1", dir);
    (void)system(cmd); /* exit status 1 (warnings) still builds it */
    setenv("LOCPATH", dir, 1);
    tr = newlocale(LC_CTYPE_MASK, "tr_TR.UTF-8", (locale_t)0);
    unsetenv("LOCPATH");
    return tr;
}

/* FORKLOG_LEVEL is read in any case whatever the program's locale: in a Turkish one, where the lower case of 'I' is
 * not 'i', strcasecmp() found WARNING unknown and the handle logged at INFO. */
Test(fields, level_from_the_environment_in_a_turkish_locale)
{
    locale_t tr = turkish_locale();
    if (!tr)
        cr_skip_test("no tr_TR.UTF-8 locale, and localedef cannot build one");
    char *path = th_path(dir, "a.log");
    locale_t old = uselocale(tr);
    static const struct {
        const char *env;
        int level;
    } cases[] = {{"WARNING", 3}, {"Warning", 3}, {"INFO", 2}, {"DEBUG", 1}, {"ERROR", 4}, {"debug", 1}};
    int got[sizeof cases / sizeof cases[0]];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        setenv("FORKLOG_LEVEL", cases[i].env, 1);
        forklog *log;
        got[i] = forklog_open(&log, path, NULL) == 0 ? forklog_get_level(log) : -1;
        forklog_close(log);
    }
    uselocale(old);
    freelocale(tr);
    unsetenv("FORKLOG_LEVEL");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        cr_expect_eq(got[i], cases[i].level, "FORKLOG_LEVEL=%s in tr_TR.UTF-8: level %d", cases[i].env, got[i]);
    free(path);
}

Test(fields, the_fast_formatter_in_records)
{
    char *path;
    forklog *log = open_log("a.log", NULL, &path);
    cr_assert_eq(forklog_info(log, "request %s cost %.6f s", "data1", 0.0123455), 0);
    cr_assert_eq(forklog_info(log, "%d items in %ld ms", INT32_MIN, -5L), 0);
    cr_assert_eq(forklog_info(log, "%s: %s", "open", "x"), 0);
    cr_assert_eq(forklog_info(log, "%5.1f|%-4d|%05u|%x", 2.25, 7, 42u, 255u), 0);
    cr_assert_eq(forklog_close(log), 0);
    char *buf = slurp(path);
    long pid = (long)getpid();
    char want[128];
    snprintf(want, sizeof want, "request %s cost %.6f s", "data1", 0.0123455);
    expect_text(buf, 0, "INFO pid=%ld %s", pid, want);
    expect_text(buf, 1, "INFO pid=%ld -2147483648 items in -5 ms", pid);
    expect_text(buf, 2, "INFO pid=%ld open: x", pid);
    expect_text(buf, 3, "INFO pid=%ld   2.2|7   |00042|ff", pid);
    free(buf);
    free(path);
}

/* The prefix after the timestamp is built once per process and level, and kept: every level twice, in the parent
 * and then in a forked child (which must not keep the parent's pid), in text with an app name and in ECS JSON. */
Test(fields, prefix_per_level_and_process)
{
    static const char *const upper[] = {"", "DEBUG", "INFO", "WARN", "ERROR"};
    static const char *const lower[] = {"", "debug", "info", "warn", "error"};
    for (int json = 0; json <= 1; json++) {
        char *path;
        struct forklog_options o = {.level = FORKLOG_DEBUG, .name = "svc"};
        if (json) {
            o.format = FORKLOG_FORMAT_JSON;
            o.keys = FORKLOG_KEYS_ECS;
        }
        forklog *log = open_log(json ? "a.json" : "a.log", &o, &path);
        for (int round = 0; round < 2; round++)
            for (int lv = FORKLOG_DEBUG; lv <= FORKLOG_ERROR; lv++)
                cr_assert_eq(forklog_log(log, (enum forklog_level)lv, "p %d", round), 0);
        pid_t child = fork();
        if (child == 0) {
            for (int round = 0; round < 2; round++)
                for (int lv = FORKLOG_DEBUG; lv <= FORKLOG_ERROR; lv++)
                    if (forklog_log(log, (enum forklog_level)lv, "c %d", round) != 0)
                        _exit(1);
            forklog_close(log);
            _exit(0);
        }
        cr_assert_eq(th_wait(child), 0);
        cr_assert_eq(forklog_close(log), 0);
        char *buf = slurp(path);
        for (int k = 0; k < 16; k++) {
            int lv = FORKLOG_DEBUG + k % 4, round = k / 4 % 2;
            long pid = k < 8 ? (long)getpid() : (long)child;
            char msg[8];
            snprintf(msg, sizeof msg, "%c %d", k < 8 ? 'p' : 'c', round);
            if (!json) {
                expect_text(buf, k, "%s pid=%ld app=svc %s", upper[lv], pid, msg);
                continue;
            }
            struct ck_member m[8];
            int n = json_line(buf, k, m, 8);
            char pids[24];
            snprintf(pids, sizeof pids, "%ld", pid);
            cr_assert_eq(n, 5);
            expect_member(m, n, "log.level", 's', lower[lv]);
            expect_member(m, n, "process.pid", 'n', pids);
            expect_member(m, n, "service.name", 's', "svc");
            expect_member(m, n, "message", 's', msg);
            ck_members_free(m, n);
        }
        free(buf);
        free(path);
    }
}

/* A record is cut or loses a field only when it does not fit max_record: at every value length around the limit,
 * a record that fits is written whole (the room a cut marker would need is kept only for a record that is cut),
 * and one that does not is cut to max_record's bytes or below, with the field left out whole. */
Test(fields, a_record_that_fits_max_record_keeps_its_fields)
{
    for (int json = 0; json <= 1; json++) {
        char *path;
        struct forklog_options o = {.max_record = 256, .format = json ? FORKLOG_FORMAT_JSON : FORKLOG_FORMAT_TEXT};
        forklog *log = open_log(json ? "fit.jsonl" : "fit.log", &o, &path);
        char v[300];
        int rcs[300];
        for (int n = 100; n < 260; n++) {
            memset(v, 'z', (size_t)n); /* a letter of no key or level name */
            v[n] = '\0';
            rcs[n] = forklog_info_kv(log, "m", FORKLOG_STR("k", v));
        }
        cr_assert_eq(forklog_close(log), 0);
        char *buf = slurp(path);
        const char *line = buf;
        int whole = 0, left_out = 0;
        for (int n = 100; n < 260; n++) {
            const char *nl = strchr(line, '\n');
            cr_assert_not_null(nl);
            size_t len = (size_t)(nl - line) + 1;
            cr_assert_leq(len, 256, "n=%d: a %zu-byte record", n, len);
            cr_assert_eq(rcs[n], 0, "n=%d: the message was not cut", n);
            /* The record with its field: what the line must be when that fits. */
            char want[320];
            const char *end = json ? "\"msg\":\"m\",\"k\":\"" : " m k=";
            const char *after = json ? "\"}\n" : "\n";
            const char *at = strstr(line, json ? "\"msg\":\"m\"" : " m");
            cr_assert(at && at < nl, "n=%d: %.*s", n, (int)len, line);
            size_t full = (size_t)(at - line) + strlen(end) + (size_t)n + strlen(after);
            if (full <= 256) {
                snprintf(want, sizeof want, "%s%.*s%s", end, n, v, after);
                cr_assert(len == full && memcmp(at, want, strlen(want)) == 0,
                          "n=%d: a record of %zu bytes fits 256 but was written as %.*s", n, full, (int)len, line);
                whole++;
            } else {
                cr_assert_null(memchr(line, 'z', len), "n=%d: the field that does not fit is left out whole: %.*s", n,
                               (int)len, line);
                left_out++;
            }
            line = nl + 1;
        }
        cr_assert(whole > 0 && left_out > 0, "both sides of the limit: %d whole, %d left out", whole, left_out);
        free(buf);
        free(path);
    }
}

/* A message cut to max_record fills it: the marker takes the room its own count needs, no more. */
Test(fields, a_cut_record_is_max_record_bytes_long)
{
    for (int json = 0; json <= 1; json++) {
        for (size_t max = 256; max <= 4256; max += 1000) {
            char *path;
            struct forklog_options o = {.max_record = max, .format = json ? FORKLOG_FORMAT_JSON : FORKLOG_FORMAT_TEXT};
            forklog *log = open_log("cut.log", &o, &path);
            size_t mlen = 3 * max;
            char *msg = malloc(mlen + 1);
            cr_assert_not_null(msg);
            memset(msg, 'x', mlen);
            msg[mlen] = '\0';
            int a = forklog_info(log, "%s", msg);
            int b = forklog_info_kv(log, msg, FORKLOG_INT("n", 7));
            cr_assert_eq(forklog_close(log), 0);
            char *buf = slurp(path);
            const char *line = buf;
            for (int k = 0; k < 2; k++) {
                int rc = k ? b : a;
                const char *nl = strchr(line, '\n');
                cr_assert_not_null(nl);
                size_t len = (size_t)(nl - line) + 1;
                cr_assert_eq(len, max, "json=%d max=%zu record %d: %zu bytes", json, max, k, len);
                size_t kept = 0;
                for (const char *c = line; c < nl; c++)
                    kept += *c == 'x';
                cr_assert_eq((size_t)rc, mlen - kept, "the count returned is the bytes cut");
                char marker[64];
                if (json)
                    snprintf(marker, sizeof marker, "\"cut\":%d", rc);
                else
                    snprintf(marker, sizeof marker, " [forklog: %d bytes cut]", rc);
                cr_assert(memmem(line, len, marker, strlen(marker)), "no %s in %.*s", marker, (int)len, line);
                line = nl + 1;
            }
            free(buf);
            free(msg);
            unlink(path);
            free(path);
        }
    }
}

struct ctx_race {
    forklog *log;
    atomic_int stop;
};

static void *swap_context(void *arg)
{
    struct ctx_race *r = arg;
    static char long_value[600];
    memset(long_value, 'L', sizeof long_value - 1);
    for (int i = 0; !atomic_load(&r->stop); i++) {
        struct forklog_field f = FORKLOG_STR("k", i % 2 ? long_value : "short");
        if (forklog_context_add(r->log, &f, 1) != 0)
            return (void *)1;
    }
    return NULL;
}

/* Records written while another thread replaces the context carry the old or the new one, whole: a record that
 * needs the slow path (a tab to escape) must neither lose the context nor be cut to fit a buffer sized for another
 * context. A race: a run that cannot fail once the context is read once per record. */
Test(fields, records_keep_the_context_while_another_thread_replaces_it)
{
    char *path;
    struct forklog_field k0 = FORKLOG_STR("k", "first");
    struct forklog_options o = {.context = &k0, .ncontext = 1};
    forklog *log = open_log("race.log", &o, &path);
    struct ctx_race r = {.log = log};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, swap_context, &r), 0);
    char msg[12]; /* short beside the long value: a buffer sized for the short context cannot hold the long one */
    memset(msg, 'm', sizeof msg - 1);
    msg[0] = '\t';
    msg[sizeof msg - 1] = '\0';
    int calls = 0, bad_rc = 0;
    double until = th_now_s() + 0.5;
    while (th_now_s() < until && calls < 10000) {
        for (int i = 0; i < 100; i++, calls++) {
            bad_rc += forklog_log_fields(log, FORKLOG_INFO, msg, NULL, 0) != 0;
            bad_rc += forklog_info(log, "%s", msg) != 0;
        }
    }
    atomic_store(&r.stop, 1);
    void *trc;
    cr_assert_eq(pthread_join(th, &trc), 0);
    cr_assert_null(trc);
    cr_assert_eq(forklog_close(log), 0);
    cr_assert_eq(bad_rc, 0, "%d calls of %d returned a cut count", bad_rc, 2 * calls);
    char *buf = slurp(path);
    size_t lines = 0, without = 0;
    for (const char *line = buf, *nl; (nl = strchr(line, '\n')); line = nl + 1, lines++)
        without += !memmem(line, (size_t)(nl - line), " k=", 3);
    cr_assert_eq(lines, (size_t)(2 * calls));
    cr_assert_eq(without, 0, "%zu of %zu records lost the context", without, lines);
    free(buf);
    free(path);
}

enum { ADDERS = 4, ADDS = 200 };

struct ctx_adder {
    forklog *log;
    pthread_barrier_t *go;
    int t;
    int failed;
};

/* Adds its own pair of keys ADDS times (both with the value of the round, in one call) and writes a record after
 * each add. */
static void *add_context(void *arg)
{
    struct ctx_adder *a = arg;
    char ka[16], kb[16];
    snprintf(ka, sizeof ka, "t%d.a", a->t);
    snprintf(kb, sizeof kb, "t%d.b", a->t);
    pthread_barrier_wait(a->go);
    for (int i = 0; i < ADDS; i++) {
        struct forklog_field pair[2] = {FORKLOG_INT(ka, i), FORKLOG_INT(kb, i)};
        struct forklog_field own[2] = {FORKLOG_INT("t", a->t), FORKLOG_INT("i", i)};
        if (forklog_context_add(a->log, pair, 2) != 0 || forklog_log_fields(a->log, FORKLOG_INFO, "m", own, 2) != 0)
            a->failed = 1;
    }
    return NULL;
}

/* The value of the number member `key` of m[0..n), or -1 when the record has none. */
static long long number_member(const struct ck_member *m, int n, const char *key)
{
    const struct ck_member *x = member(m, n, key);
    if (!x)
        return -1;
    cr_assert_eq(x->type, 'n', "key %s is not a number", key);
    return strtoll(x->str, NULL, 10);
}

/* Threads that add to the context at the same time lose none of each other's adds (a compare and swap that fails
 * merges again with the context that won), and each record carries a context whole: both keys of one add with the
 * same value, and at least the calling thread's own latest add. */
Test(fields, context_adds_from_many_threads_keep_every_add)
{
    char *path;
    struct forklog_field base = FORKLOG_STR("base", "b");
    struct forklog_options o = {.format = FORKLOG_FORMAT_JSON, .context = &base, .ncontext = 1};
    forklog *log = open_log("adders.jsonl", &o, &path);
    pthread_barrier_t go;
    cr_assert_eq(pthread_barrier_init(&go, NULL, ADDERS), 0);
    struct ctx_adder a[ADDERS];
    pthread_t th[ADDERS];
    for (int t = 0; t < ADDERS; t++) {
        a[t] = (struct ctx_adder){.log = log, .go = &go, .t = t};
        cr_assert_eq(pthread_create(&th[t], NULL, add_context, &a[t]), 0);
    }
    for (int t = 0; t < ADDERS; t++) {
        cr_assert_eq(pthread_join(th[t], NULL), 0);
        cr_assert_eq(a[t].failed, 0, "a call of thread %d failed", t);
    }
    pthread_barrier_destroy(&go);
    OK(forklog_log_fields(log, FORKLOG_INFO, "last", NULL, 0));
    cr_assert_eq(forklog_close(log), 0);

    char *buf = slurp(path);
    int lines = 0;
    for (const char *l = buf; (l = strchr(l, '\n')); l++)
        lines++;
    cr_assert_eq(lines, ADDERS * ADDS + 1);
    for (int n = 0; n < lines; n++) {
        struct ck_member m[32];
        int k = json_line(buf, n, m, 32);
        expect_member(m, k, "base", 's', "b");
        const int last = n == lines - 1;
        long long t = last ? -1 : number_member(m, k, "t"), i = last ? -1 : number_member(m, k, "i");
        for (int u = 0; u < ADDERS; u++) {
            char ka[16], kb[16];
            snprintf(ka, sizeof ka, "t%d.a", u);
            snprintf(kb, sizeof kb, "t%d.b", u);
            long long va = number_member(m, k, ka), vb = number_member(m, k, kb);
            cr_assert_eq(va, vb, "line %d: %s is %lld, %s is %lld", n, ka, va, kb, vb);
            if (last)
                cr_assert_eq(va, ADDS - 1, "the last record has %s = %lld: an add was lost", ka, va);
            else if (u == t)
                cr_assert_geq(va, i, "line %d: thread %lld's record %lld has its own %s = %lld", n, t, i, ka, va);
        }
        ck_members_free(m, k);
    }
    free(buf);
    free(path);
}

#ifdef __GLIBC__
/* A printf conversion of the test's own (%W, glibc's register_printf_specifier) that, the first time, stops the
 * thread inside the formatting of its record's message until the test lets it go on: the record has read the
 * handle's context then, and reads it again once the message is formatted. */
static sem_t in_conversion, go_on;
static atomic_int stop_once;

static int print_w(FILE *s, const struct printf_info *info, const void *const *args)
{
    (void)info, (void)args;
    if (atomic_exchange(&stop_once, 0)) {
        sem_post(&in_conversion);
        while (sem_wait(&go_on) != 0)
            ;
    }
    return fprintf(s, "w");
}

static int print_w_args(const struct printf_info *info, size_t n, int *types, int *size)
{
    (void)info, (void)n, (void)types, (void)size;
    return 0;
}

/* The format is not a literal: the compiler does not know %W. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
static void *log_with_w(void *arg)
{
    const char *fmt = "rec %W%s";
    return (void *)(intptr_t)forklog_log(arg, FORKLOG_INFO, fmt, "");
}
#pragma GCC diagnostic pop
#endif

/* A context that forklog_context_add() replaces while another thread is in the middle of a record made with it
 * stays allocated: that record carries it whole (not memory that the heap gave to something else meanwhile), and
 * the next records carry the new one. */
Test(fields, a_context_replaced_while_another_thread_formats_with_it_stays_whole)
{
#ifndef __GLIBC__
    cr_skip_test("needs glibc's register_printf_specifier to stop a thread inside its record");
#else
    char *path;
    struct forklog_field first = FORKLOG_STR("k", "first");
    struct forklog_options o = {.context = &first, .ncontext = 1};
    forklog *log = open_log("kept.log", &o, &path);
    cr_assert_eq(register_printf_specifier('W', print_w, print_w_args), 0);
    cr_assert_eq(sem_init(&in_conversion, 0, 0), 0);
    cr_assert_eq(sem_init(&go_on, 0, 0), 0);
    atomic_store(&stop_once, 1);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, log_with_w, log), 0);
    while (sem_wait(&in_conversion) != 0)
        ;
    struct forklog_field second = FORKLOG_STR("k", "second");
    OK(forklog_context_add(log, &second, 1));
    /* Whatever the add freed would be handed out again here, and written over. */
    enum { SIZES = 64 };
    void *reuse[SIZES];
    for (int i = 0; i < SIZES; i++) {
        reuse[i] = malloc((size_t)(i + 1) * 8);
        cr_assert_not_null(reuse[i]);
        memset(reuse[i], 0xa5, (size_t)(i + 1) * 8);
    }
    sem_post(&go_on);
    void *rc;
    cr_assert_eq(pthread_join(th, &rc), 0);
    cr_assert_eq((intptr_t)rc, 0);
    for (int i = 0; i < SIZES; i++)
        free(reuse[i]);
    OK(forklog_info(log, "after"));
    cr_assert_eq(forklog_close(log), 0);
    char *buf = slurp(path);
    long pid = (long)getpid();
    expect_text(buf, 0, "INFO pid=%ld rec w k=first", pid);
    expect_text(buf, 1, "INFO pid=%ld after k=second", pid);
    cr_assert_null(strchr(strchr(strchr(buf, '\n') + 1, '\n') + 1, '\n'), "more than two records: %s", buf);
    free(buf);
    free(path);
#endif
}

/* Resident memory of this process, in KiB (/proc/self/statm), or -1. */
static long resident_kib(void)
{
    long size, resident;
    FILE *f = fopen("/proc/self/statm", "r");
    int got = f ? fscanf(f, "%ld %ld", &size, &resident) : 0;
    if (f)
        fclose(f);
    return got == 2 ? resident * (sysconf(_SC_PAGESIZE) / 1024) : -1;
}

/* A single-threaded process (a forked worker) that adds a field per request: each call frees the context it
 * replaces, so 100,000 calls do not grow the heap by the ~20 MB they kept before; every record carries the latest. */
Test(fields, a_single_threaded_process_adding_context_per_request_does_not_grow)
{
    char *path;
    struct forklog_field base[2] = {FORKLOG_STR("service", "api"), FORKLOG_STR("host", "h1")};
    struct forklog_options o = {.context = base, .ncontext = 2};
    forklog *log = open_log("grow.log", &o, &path);
    pid_t c = fork();
    cr_assert_geq(c, 0);
    if (c == 0) {
        enum { N = 100000 };
        long before = 0;
        for (long i = 0; i < N; i++) {
            struct forklog_field f = FORKLOG_INT("request_id", i);
            if (forklog_context_add(log, &f, 1) != 0)
                _exit(2);
            if (i == 1000)
                before = resident_kib();
        }
        long grew = resident_kib() - before;
        if (forklog_info(log, "last") != 0)
            _exit(3);
        _exit(TH_SANITIZED || (before > 0 && grew < 4096) ? 0 : 4);
    }
    int st;
    cr_assert_eq(waitpid(c, &st, 0), c);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the child's resident memory grew by 4 MiB or more (status %#x)",
              st);
    cr_assert_eq(forklog_close(log), 0);
    char *buf = slurp(path);
    cr_assert(strstr(buf, "last service=api host=h1 request_id=99999\n"), "%s", buf);
    free(buf);
    free(path);
}

/* A field that does not fit is left out alone: the others, and the message, stay when they fit. */
Test(fields, a_field_too_long_leaves_the_fields_that_fit)
{
    for (int json = 0; json <= 1; json++) {
        char *path;
        struct forklog_options o = {.max_record = 256, .format = json ? FORKLOG_FORMAT_JSON : FORKLOG_FORMAT_TEXT};
        forklog *log = open_log(json ? "two.jsonl" : "two.log", &o, &path);
        char a[200], z[400];
        memset(z, 'z', sizeof z - 1);
        z[sizeof z - 1] = '\0';
        for (int n = 100; n < 200; n++) {
            memset(a, 'a', (size_t)n);
            a[n] = '\0';
            struct forklog_field f[2] = {FORKLOG_STR("a", a), FORKLOG_STR("z", z)};
            OK(forklog_log_fields(log, FORKLOG_INFO, "hi", f, 2));
            OK(forklog_log_fields(log, FORKLOG_INFO, "hi", f, 1)); /* `a` alone */
        }
        cr_assert_eq(forklog_close(log), 0);
        char *buf = slurp(path);
        const char *line = buf;
        for (int n = 100; n < 200; n++) {
            const char *nl = strchr(line, '\n'), *nl2 = nl ? strchr(nl + 1, '\n') : NULL;
            cr_assert(nl && nl2);
            size_t both = (size_t)(nl - line), alone = (size_t)(nl2 - nl - 1);
            cr_assert_null(memchr(line, 'z', both), "n=%d: z does not fit", n);
            /* With z left out, the record is the one with `a` alone (after the timestamp, which may differ). */
            const size_t ts = json ? 34 : 27; /* the timestamp, with `{"ts":"` before it in JSON */
            cr_assert(both == alone && memcmp(line + ts, nl + 1 + ts, both - ts) == 0,
                      "n=%d: %.*s\nagainst a alone: %.*s", n, (int)both, line, (int)alone, nl + 1);
            line = nl2 + 1;
        }
        free(buf);
        free(path);
    }
}

/* The location is written whole or not at all: a file name too long for the record leaves line and func out too. */
Test(fields, a_location_too_long_is_left_out_whole)
{
    char file[301];
    memset(file, 'f', sizeof file - 1);
    file[sizeof file - 1] = '\0';
    for (int json = 0; json <= 1; json++) {
        char *path;
        struct forklog_options o = {.max_record = 256, .format = json ? FORKLOG_FORMAT_JSON : FORKLOG_FORMAT_TEXT};
        forklog *log = open_log(json ? "loc.jsonl" : "loc.log", &o, &path);
        OK(forklog_log_fields_at(log, FORKLOG_INFO, file, 7, "fn", "hello", NULL, 0));
        OK(forklog_log_fields_at(log, FORKLOG_INFO, "a.c", 7, "fn", "hello", NULL, 0));
        cr_assert_eq(forklog_close(log), 0);
        char *buf = slurp(path);
        char *second = strchr(buf, '\n') + 1;
        second[-1] = '\0';
        cr_assert_null(strstr(buf, "line"), "%s", buf);
        cr_assert_null(strstr(buf, "func"), "%s", buf);
        cr_assert_not_null(strstr(buf, "hello"), "%s", buf);
        cr_assert_not_null(
            strstr(second, json ? "\"file\":\"a.c\",\"line\":7,\"func\":\"fn\"" : "file=a.c line=7 func=fn"), "%s",
            second);
        free(buf);
        free(path);
    }
}

/* A short message that fits whole beside the fields that fit is never the reason a field is left out: a record that
 * leaves a field out is too long with it. The room kept for a cut marker (which a short message whole does not need)
 * once made fields that fitted go missing, with the message whole, no marker and 0 returned. */
Test(fields, a_field_that_fits_beside_a_short_message_is_kept)
{
    for (int json = 0; json <= 1; json++) {
        char *path;
        struct forklog_options o = {.max_record = 256, .format = json ? FORKLOG_FORMAT_JSON : FORKLOG_FORMAT_TEXT};
        forklog *log = open_log(json ? "short.jsonl" : "short.log", &o, &path);
        char a[256], c[31];
        memset(c, 'c', sizeof c - 1);
        c[sizeof c - 1] = '\0';
        for (int n = 60; n < 230; n++) {
            memset(a, 'a', (size_t)n);
            a[n] = '\0';
            /* c fits beside a and b, but not with the message too: it is left out, b is not. */
            struct forklog_field f[3] = {FORKLOG_STR("a", a), FORKLOG_INT("b", 1), FORKLOG_STR("c", c)};
            OK(forklog_log_fields(log, FORKLOG_INFO, "hello world", f, 3));
        }
        cr_assert_eq(forklog_close(log), 0);
        char *buf = slurp(path);
        const char *line = buf, *b = json ? ",\"b\":1" : " b=1";
        for (int n = 60; n < 230; n++) {
            const char *nl = strchr(line, '\n');
            cr_assert_not_null(nl);
            size_t len = (size_t)(nl - line) + 1;
            cr_assert_not_null(memmem(line, len, "hello world", 11), "n=%d: %.*s", n, (int)len, line);
            if (!memmem(line, len, b, strlen(b)))
                cr_assert_gt(len + strlen(b), 256, "n=%d: b left out of a %zu-byte record: %.*s", n, len, (int)len,
                             line);
            line = nl + 1;
        }
        free(buf);
        free(path);
    }
}

/* A field is left out of a record whose message is cut only when it does not fit beside the message cut as far as its
 * marker allows: the tail once got all the room but that of the widest marker of all (48 bytes), so that a field that
 * fitted beside the marker the record needed (` [forklog: 1000 bytes cut]`, `,"cut":1000`) was left out, and a few
 * dozen bytes of the message were kept in its place (in 24 of these 110 text records, and 38 JSON ones with the short
 * keys). */
Test(fields, a_field_that_fits_beside_the_cut_marker_is_kept)
{
    for (int fmt = 0; fmt < 3; fmt++) {
        const bool json = fmt > 0, ecs = fmt == 2;
        char *path;
        struct forklog_options o = {.max_record = 300,
                                    .format = json ? FORKLOG_FORMAT_JSON : FORKLOG_FORMAT_TEXT,
                                    .keys = ecs ? FORKLOG_KEYS_ECS : FORKLOG_KEYS_SHORT};
        forklog *log = open_log("wide.log", &o, &path);
        char msg[1001], v[300];
        memset(msg, 'm', 1000);
        msg[1000] = '\0';
        for (int n = 150; n < 260; n++) {
            memset(v, 'v', (size_t)n);
            v[n] = '\0';
            struct forklog_field f = FORKLOG_STR("k", v);
            int rc = forklog_log_fields(log, FORKLOG_INFO, msg, &f, 1);
            cr_assert_gt(rc, 0, "n=%d: the message is cut (%d)", n, rc);
        }
        cr_assert_eq(forklog_close(log), 0);
        char *buf = slurp(path);
        const char *line = buf, *msgkey = ecs ? "\"message\":\"" : "\"msg\":\"";
        char marker[64];
        size_t mk = (size_t)(json ? snprintf(marker, sizeof marker, ",\"%s\":1000", ecs ? "forklog.cut" : "cut")
                                  : snprintf(marker, sizeof marker, " [forklog: 1000 bytes cut]"));
        int kept = 0;
        for (int n = 150; n < 260; n++) {
            const char *nl = strchr(line, '\n');
            cr_assert_not_null(nl);
            size_t len = (size_t)(nl - line) + 1;
            cr_assert_leq(len, 300, "n=%d: %zu bytes", n, len);
            /* The prefix: up to the message's first byte. */
            const char *m = json ? strstr(line, msgkey) : strstr(line, " pid=");
            cr_assert(m && m < nl);
            size_t prefix = json ? (size_t)(m - line) + strlen(msgkey) : (size_t)(strchr(m + 1, ' ') - line) + 1;
            const char *field = json ? ",\"k\":\"" : " k=";
            if (memmem(line, len, field, strlen(field))) {
                kept++;
            } else {
                /* Left out: it must not fit beside the message cut to nothing but the widest marker it can have. */
                size_t with =
                    prefix + (json ? 1 : 0) + mk + strlen(field) + (size_t)n + (json ? 1 : 0) + (json ? 2 : 1);
                cr_assert_gt(with, 300, "fmt=%d n=%d: the field (%zu bytes with the marker) left out of: %.*s", fmt, n,
                             with, (int)len, line);
            }
            line = nl + 1;
        }
        cr_assert_gt(kept, 0);
        free(buf);
        unlink(path);
        free(path);
    }
}

/* The documented line between the two: a message of at most 48 bytes once escaped is never cut, and a field that
 * does not fit beside it whole is left out; a longer one is cut, as far as its marker allows, for a field that fits
 * beside that. Each record: the message, then one field sized to fit beside the message cut to its marker, not whole.
 */
Test(fields, a_message_of_48_bytes_is_never_cut_and_a_longer_one_is_for_a_field)
{
    for (int json = 0; json <= 1; json++)
        for (size_t mlen = 40; mlen <= 60; mlen++) {
            char *path;
            struct forklog_options o = {.max_record = 256, .format = json ? FORKLOG_FORMAT_JSON : FORKLOG_FORMAT_TEXT};
            forklog *log = open_log("short48.log", &o, &path);
            char msg[64], v[256];
            memset(msg, 'm', mlen);
            msg[mlen] = '\0';
            /* A first record without the field gives the prefix's length. */
            OK(forklog_log_fields(log, FORKLOG_INFO, "", NULL, 0));
            cr_assert_eq(forklog_close(log), 0);
            char *buf = slurp(path);
            size_t prefix = strlen(buf) - (json ? 3 : 1); /* `"}\n` or `\n` after an empty message */
            free(buf);
            unlink(path);
            /* The widest marker of this message, and the field that fits beside it but not beside the whole message. */
            char marker[64];
            size_t mk = (size_t)(json ? snprintf(marker, sizeof marker, ",\"cut\":%zu", mlen)
                                      : snprintf(marker, sizeof marker, " [forklog: %zu bytes cut]", mlen));
            size_t close = json ? 3 : 1, sep = json ? 7 : 3; /* `,"k":"` and `"`, or ` k=` */
            size_t n = 256 - prefix - close - mk - sep;      /* the longest value that fits beside the marker */
            cr_assert_lt(n, sizeof v);
            memset(v, 'v', n);
            v[n] = '\0';
            log = open_log("short48.log", &o, &path);
            struct forklog_field f = FORKLOG_STR("k", v);
            int rc = forklog_log_fields(log, FORKLOG_INFO, msg, &f, 1);
            cr_assert_eq(forklog_close(log), 0);
            buf = slurp(path);
            size_t len = strlen(buf);
            cr_assert_leq(len, 256);
            const bool has_field = strstr(buf, json ? ",\"k\":\"v" : " k=v") != NULL;
            if (mlen <= 48) {
                cr_assert_eq(rc, 0, "json=%d mlen=%zu: a short message is never cut (%d): %s", json, mlen, rc, buf);
                cr_assert(strstr(buf, msg), "json=%d mlen=%zu: %s", json, mlen, buf);
                cr_assert_not(has_field, "json=%d mlen=%zu: the field fits beside the whole message: %s", json, mlen,
                              buf);
            } else {
                cr_assert_eq((size_t)rc, mlen, "json=%d mlen=%zu: cut to its marker (%d): %s", json, mlen, rc, buf);
                cr_assert(has_field, "json=%d mlen=%zu: the field fits beside the marker: %s", json, mlen, buf);
                cr_assert_eq(len, 256, "json=%d mlen=%zu: %zu bytes: %s", json, mlen, len, buf);
            }
            free(buf);
            unlink(path);
            free(path);
        }
}

/* Checks a log of `passes` + 1 passes over values[0..nv), one record `v d=VALUE` each, pass after pass: every value
 * reads back as itself, in the same bytes as the last pass (the writer's usual settings) wrote; `what` names the
 * setting of a pass in a failure's message. Frees buf. */
static void check_doubles_read_back(char *buf, const double *values, size_t nv, size_t passes, const char *what)
{
    for (size_t m = 0; m < passes; m++)
        for (size_t i = 0; i < nv; i++) {
            char *line = text_line(buf, (int)(m * nv + i));
            const char *v = strstr(line, " d=");
            cr_assert_not_null(v, "%s", line);
            double back = strtod(v + 3, NULL);
            cr_assert(memcmp(&back, &values[i], sizeof back) == 0, "%s %zu: %a written %s, read back as %a", what, m,
                      values[i], v + 3, back);
            char *usual = text_line(buf, (int)(passes * nv + i));
            cr_assert_str_eq(strstr(usual, " d="), v, "%s %zu", what, m);
            free(usual);
            free(line);
        }
    free(buf);
}

/* A double field is the shortest form that reads back exactly, for a reader rounding to nearest, whatever rounding
 * mode the writer set with fesetround(), in which printf and strtod round otherwise: 12587.616 was written
 * 12587.615999999999 rounding downward, which reads back as another double, and 0.1 as 0.10000000000000001. */
Test(fields, a_double_reads_back_exactly_in_every_rounding_mode)
{
    int (*set_round)(int) = th_fesetround();
    if (!set_round)
        cr_skip_test("fesetround() not found in libm");
    static const int modes[] = {FE_UPWARD, FE_DOWNWARD, FE_TOWARDZERO};
    static const double values[] = {12587.616,
                                    14413.339,
                                    0.1,
                                    -0.3,
                                    1.0 / 3,
                                    1e300,
                                    -4.9406564584124654e-324,
                                    2.2250738585072014e-308,
                                    1.7976931348623157e308,
                                    123456789012345678.0,
                                    9.5};
    const size_t nv = sizeof values / sizeof values[0];
    char *path;
    forklog *log = open_log("round.log", NULL, &path);
    for (size_t m = 0; m <= sizeof modes / sizeof modes[0]; m++) {
        cr_assert_eq(set_round(m < 3 ? modes[m] : FE_TONEAREST), 0);
        for (size_t i = 0; i < nv; i++) {
            struct forklog_field f = FORKLOG_DBL("d", values[i]);
            int rc = forklog_log_fields(log, FORKLOG_INFO, "v", &f, 1);
            cr_assert_eq(set_round(FE_TONEAREST), 0);
            cr_assert_eq(rc, 0);
            cr_assert_eq(set_round(m < 3 ? modes[m] : FE_TONEAREST), 0);
        }
    }
    cr_assert_eq(set_round(FE_TONEAREST), 0);
    cr_assert_eq(forklog_close(log), 0);
    /* The last of the four passes rounds to nearest. */
    check_doubles_read_back(slurp(path), values, nv, 3, "mode");
    free(path);
}

#if defined(__x86_64__) && defined(__GNUC__)
/* A double field is the same shortest form when the program lowered the x87 precision control to 53 or 24 bits
 * (rounding still to nearest), as some do for results that match other platforms: the exact digits and the
 * midpoints between neighbours are long double arithmetic, which then rounds at that precision: 4165.900000000001
 * was written 4165.9 (glibc, 53 bits) and 4165.89990234375 (musl, 24 bits), each another double. */
Test(fields, a_double_reads_back_exactly_when_the_x87_precision_is_not_64_bits)
{
    static const double values[] = {4165.900000000001,
                                    8.54716437468,
                                    17.64233,
                                    0.1,
                                    -0.3,
                                    1.0 / 3,
                                    1e300,
                                    -4.9406564584124654e-324,
                                    2.2250738585072014e-308,
                                    1.7976931348623157e308,
                                    456624005.509443};
    static const unsigned short precisions[] = {0x0200, 0x0000}; /* 53 bits, 24 bits */
    const size_t nv = sizeof values / sizeof values[0];
    char *path;
    forklog *log = open_log("x87.log", NULL, &path);
    unsigned short cw;
    __asm__ volatile("fnstcw %0" : "=m"(cw));
    for (size_t k = 0; k <= 2; k++) {
        const unsigned short low = k < 2 ? (unsigned short)((cw & ~0x0f00u) | precisions[k]) : cw;
        for (size_t i = 0; i < nv; i++) {
            struct forklog_field f = FORKLOG_DBL("d", values[i]);
            __asm__ volatile("fldcw %0" : : "m"(low) : "memory");
            int rc = forklog_log_fields(log, FORKLOG_INFO, "v", &f, 1);
            __asm__ volatile("fldcw %0" : : "m"(cw) : "memory");
            cr_assert_eq(rc, 0);
        }
    }
    cr_assert_eq(forklog_close(log), 0);
    /* The last of the three passes has the default precision; pass 0 is 53 bits, pass 1 24 bits. */
    check_doubles_read_back(slurp(path), values, nv, 2, "precision pass");
    free(path);
}

/* And when the program set SSE's denormals-are-zero and flush-to-zero (MXCSR bits 6 and 15, as -ffast-math's start-up
 * code does): subnormal operands of double arithmetic and comparisons count as 0 then, so a subnormal compared equal
 * to whatever it was read back as, and 2.472085641077927e-309 was written 2.47208564107793e-309, another double. */
Test(fields, a_double_reads_back_exactly_with_denormals_are_zero)
{
    int (*set_round)(int) = th_fesetround();
    if (!set_round)
        cr_skip_test("fesetround() not found in libm");
    static const double values[] = {0x0.1c71224016dc4p-1022,
                                    -0x0.81fc011949e1fp-1022,
                                    0x0.fffffffffffffp-1022,
                                    0x1p-1022,
                                    -0x1.0000000000001p-1022,
                                    0x0.0000000000001p-1022,
                                    0.1};
    static const int modes[] = {FE_TONEAREST, FE_UPWARD, FE_DOWNWARD, FE_TOWARDZERO};
    const size_t nv = sizeof values / sizeof values[0], nm = sizeof modes / sizeof modes[0];
    char *path;
    forklog *log = open_log("daz.log", NULL, &path);
    unsigned csr;
    __asm__ volatile("stmxcsr %0" : "=m"(csr));
    const unsigned daz = csr | 0x8040u;
    for (size_t m = 0; m <= nm; m++) {
        for (size_t i = 0; i < nv; i++) {
            struct forklog_field f = FORKLOG_DBL("d", values[i]);
            if (m < nm) {
                cr_assert_eq(set_round(modes[m]), 0);
                __asm__ volatile("ldmxcsr %0" : : "m"(daz) : "memory");
            }
            int rc = forklog_log_fields(log, FORKLOG_INFO, "v", &f, 1);
            __asm__ volatile("ldmxcsr %0" : : "m"(csr) : "memory");
            cr_assert_eq(set_round(FE_TONEAREST), 0);
            cr_assert_eq(rc, 0);
        }
    }
    cr_assert_eq(forklog_close(log), 0);
    /* The last pass is without denormals-are-zero, rounding to nearest. */
    check_doubles_read_back(slurp(path), values, nv, nm, "mode");
    free(path);
}
#endif
