/* SPDX-License-Identifier: MIT */
/* Every record read back through tests/grammar.h, a reader written from the documented grammar alone: random and
 * hostile messages, every field type and edge value, context, location, thread ids, names, both formats, both key
 * sets, buffered and direct, small max_record values. */
#include <forklog.h>

#include "helpers.h"

#include "grammar.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

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

TestSuite(grammar, .init = setup, .fini = teardown);

/* ---- random input --------------------------------------------------------------------------------------------- */

static uint64_t rng_state;

static uint64_t rnd(void)
{
    uint64_t x = rng_state;
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    return rng_state = x;
}

static size_t rndn(size_t n)
{
    return n ? (size_t)(rnd() % n) : 0;
}

/* A hostile string of about `len` bytes (no NUL). */
static char *rnd_string(size_t len)
{
    static const char *const pieces[] = {"=",
                                         "\"",
                                         "\\",
                                         " ",
                                         "\n",
                                         "\r",
                                         "\t",
                                         "\x01",
                                         "\x7f",
                                         "\x1b",
                                         "\xff",
                                         "\xc0\x80",
                                         "\xed\xa0\x80",
                                         "\xf4\x90\x80\x80",
                                         "\xe2\x82",
                                         "\xe2\x82\xac",
                                         "\xf0\x9f\x98\x80",
                                         "\\n",
                                         "\\x41",
                                         "\\\"",
                                         "a=b",
                                         " [forklog: 3 bytes cut]",
                                         "tid=",
                                         "app=",
                                         "%",
                                         "x",
                                         "ab",
                                         "\xc3\xa9"};
    char *s = malloc(len + 8);
    size_t n = 0;
    while (n < len) {
        const char *p;
        if (rndn(3) == 0)
            p = pieces[rndn(sizeof pieces / sizeof *pieces)];
        else {
            static char one[2];
            one[0] = (char)(0x20 + rndn(95));
            p = one;
        }
        size_t l = strlen(p);
        if (n + l > len + 4)
            break;
        memcpy(s + n, p, l);
        n += l;
    }
    s[n] = 0;
    return s;
}

/* Plain printable ASCII with spaces: nothing to escape (the copy and writev paths). */
static char *rnd_plain(size_t len)
{
    char *s = malloc(len + 1);
    for (size_t i = 0; i < len; i++)
        s[i] = rndn(8) == 0 ? ' ' : (char)('a' + rndn(26));
    s[len] = 0;
    return s;
}

static char *rnd_message(size_t max_record)
{
    switch (rndn(10)) {
    case 8: return rnd_plain(4050 + rndn(100));
    case 9: return rnd_plain(max_record > 64 ? max_record - 64 + rndn(128) : rndn(300));
    case 0: return strdup("");
    case 1: return rnd_string(1 + rndn(8));
    case 2: return rnd_string(rndn(max_record * 2));
    case 3: {
        char *s = rnd_string(rndn(40));
        s[0] = s[0] ? '"' : 0;
        return s;
    }
    case 4: return strdup("plain words only");
    default: return rnd_string(rndn(120));
    }
}

/* ---- keys and fields ------------------------------------------------------------------------------------------- */

/* Keys to try beside the record's own names (gr_builtin_key). */
static const char *const special_keys[] = {"fields.ts",  "fields.msg", "fields.message",   "k",         "k",
                                           "x-y",        "a.b@c",      "fields.fields.ts", "log",       "process",
                                           "log.origin", "message.x",  "fields.log",       "log.logger"};

static char *rnd_key(void)
{
    if (rndn(2)) {
        size_t j = rndn(GR_BUILTIN_KEYS + sizeof special_keys / sizeof *special_keys);
        return strdup(j < GR_BUILTIN_KEYS ? gr_builtin_key(j) : special_keys[j - GR_BUILTIN_KEYS]);
    }
    static const char kc[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.@-";
    size_t l = rndn(4) == 0 ? FORKLOG_MAX_KEY : 1 + rndn(6);
    char *k = malloc(l + 1);
    for (size_t i = 0; i < l; i++)
        k[i] = kc[rndn(sizeof kc - 1)];
    k[l] = 0;
    return k;
}

static const double dbl_edges[] = {0.0,
                                   -0.0,
                                   1.0,
                                   -1.5,
                                   0.1,
                                   1e300,
                                   -1e-300,
                                   5e-324,
                                   1.7976931348623157e308,
                                   123456789012345678.0,
                                   0.30000000000000004,
                                   1e21,
                                   1e-7,
                                   100.0,
                                   1e15,
                                   1e16};

/* A field with an owned key and string; never an invalid one. */
static struct forklog_field rnd_field(void)
{
    struct forklog_field f;
    memset(&f, 0, sizeof f);
    f.key = rnd_key();
    switch (rndn(7)) {
    case 0:
        f.type = FORKLOG_FIELD_STR;
        f.v.s = rndn(6) == 0 ? NULL : rndn(6) == 0 ? strdup("") : rnd_string(rndn(30));
        break;
    case 1: {
        static const long long e[] = {0, -1, 1, LLONG_MIN, LLONG_MAX, 200, -42};
        f.type = FORKLOG_FIELD_INT;
        f.v.i = rndn(2) ? e[rndn(7)] : (long long)rnd();
        break;
    }
    case 2:
        f.type = FORKLOG_FIELD_UINT;
        f.v.u = rndn(2) ? (unsigned long long[]){0, 1, ULLONG_MAX, 1ULL << 63}[rndn(4)] : rnd();
        break;
    case 3: {
        f.type = FORKLOG_FIELD_DBL;
        size_t c = rndn(5);
        if (c == 0)
            f.v.d = (double[]){NAN, INFINITY, -INFINITY, -NAN}[rndn(4)];
        else if (c == 1) {
            uint64_t bits = rnd();
            memcpy(&f.v.d, &bits, sizeof bits);
        } else
            f.v.d = dbl_edges[rndn(sizeof dbl_edges / sizeof *dbl_edges)] * (rndn(2) ? 1 : -1) *
                    (rndn(2) ? 1 : (double)rndn(1000) / 7.0);
        break;
    }
    case 4:
        f.type = FORKLOG_FIELD_BOOL;
        f.v.b = (int)rndn(3);
        break;
    case 5: {
        static const long long e[] = {0, 1, -1, 999999999, 1000000000, -1500000000, LLONG_MIN, LLONG_MAX, 5200000};
        f.type = FORKLOG_FIELD_DUR;
        f.v.ns = rndn(2) ? e[rndn(9)] : (long long)rnd();
        break;
    }
    default: {
        static const long long e[] = {
            0,         -1,        -62167219200LL, -62167219201LL,       253402300799LL, 253402300800LL,
            LLONG_MIN, LLONG_MAX, 1798473913,     -86400 * 365LL * 3000};
        f.type = FORKLOG_FIELD_TIME;
        f.v.t.sec = rndn(2) ? e[rndn(10)] : (long long)rnd() >> rndn(40);
        long ne[] = {0, 999999999, 1, 999999, 123456789, -1, 1000000000, LONG_MAX, LONG_MIN, 2500000000L};
        f.v.t.nsec = rndn(3) ? (long)rndn(1000000000) : ne[rndn(10)];
        break;
    }
    }
    return f;
}

static void free_field(struct forklog_field *f)
{
    free((char *)f->key);
    if (f->type == FORKLOG_FIELD_STR)
        free((char *)f->v.s);
}

/* ---- one run --------------------------------------------------------------------------------------------------- */

struct cfg {
    bool json, ecs, tid, buffered;
    const char *name;
    size_t max_record;
    size_t nctx; /* random context fields at open */
    bool ctx_add;
};

struct rec {
    struct gr_expect e;
    char *msg;
    char *file, *func;
};

static const char *const names[] = {"checkout",
                                    "my app",
                                    "a=b",
                                    "q\"uote",
                                    "back\\slash",
                                    "\xc3\xa9t\xc3\xa9",
                                    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"};

static char *fmt_msg(size_t *len, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static char *fmt_msg(size_t *len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *s = malloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    *len = (size_t)n;
    return s;
}

/* Runs nrec random calls with one configuration and checks every line; returns the number of bad lines. */
static int run(const struct cfg *c, uint64_t seed, int nrec, int *nchecked)
{
    rng_state = seed | 1;
    char *path = th_path(dir, "g.log");
    unlink(path);
    struct forklog_field ctx[8];
    size_t nctx = c->nctx;
    for (size_t i = 0; i < nctx; i++)
        ctx[i] = rnd_field();
    struct forklog_options o = {.level = FORKLOG_DEBUG,
                                .format = c->json ? FORKLOG_FORMAT_JSON : FORKLOG_FORMAT_TEXT,
                                .flags = (c->tid ? FORKLOG_TID : 0u) | (c->buffered ? FORKLOG_BUFFERED : 0u),
                                .max_record = c->max_record,
                                .keys = c->ecs ? FORKLOG_KEYS_ECS : FORKLOG_KEYS_SHORT,
                                .name = c->name,
                                .context = nctx ? ctx : NULL,
                                .ncontext = nctx};
    forklog *log;
    int rc = forklog_open(&log, path, &o);
    cr_assert_eq(rc, 0, "open: %s", strerror(-rc));
    struct gr_field cur[FORKLOG_MAX_FIELDS * 2];
    size_t ncur = 0;
    for (size_t i = 0; i < nctx; i++)
        gr_merge(cur, &ncur, gr_expected(&ctx[i], c->json, c->ecs));
    for (size_t i = 0; i < nctx; i++)
        free_field(&ctx[i]);
    size_t mr = c->max_record ? c->max_record : 1 << 20;
    struct rec *recs = calloc((size_t)nrec, sizeof *recs);
    int n = 0;
    for (int r = 0; r < nrec; r++) {
        if (c->ctx_add && rndn(10) == 0 && ncur < 40) {
            struct forklog_field add[3];
            size_t na = 1 + rndn(3);
            for (size_t i = 0; i < na; i++)
                add[i] = rnd_field();
            rc = forklog_context_add(log, add, na);
            cr_assert_eq(rc, 0, "context_add: %d", rc);
            for (size_t i = 0; i < na; i++) {
                gr_merge(cur, &ncur, gr_expected(&add[i], c->json, c->ecs));
                free_field(&add[i]);
            }
        }
        struct rec *x = &recs[n];
        struct gr_expect *e = &x->e;
        memset(x, 0, sizeof *x);
        e->json = c->json, e->ecs = c->ecs, e->tid = c->tid, e->app = c->name, e->max_record = mr;
        e->level = 1 + (int)rndn(4);
        bool loc = rndn(3) == 0;
        if (loc) {
            x->file = rndn(3) ? strdup("src/pay.c") : rnd_string(rndn(20));
            x->func = rndn(4) == 0 ? NULL : rndn(2) ? strdup("charge") : rnd_string(rndn(10));
            e->loc = true, e->file = x->file, e->func = x->func;
            e->line = (int)(rndn(3) == 0 ? (int[]){0, -1, INT_MIN, INT_MAX}[rndn(4)] : (int)rndn(5000));
        }
        struct gr_field all[FORKLOG_MAX_FIELDS * 3];
        size_t nall = 0;
        for (size_t i = 0; i < ncur; i++) {
            all[nall] = cur[i];
            all[nall].s = cur[i].s ? malloc(cur[i].slen + 1) : NULL;
            if (cur[i].s)
                memcpy(all[nall].s, cur[i].s, cur[i].slen + 1);
            nall++;
        }
        if (rndn(2)) {
            /* forklog_log_fields(_at) */
            size_t nf = rndn(4) == 0 ? rndn(FORKLOG_MAX_FIELDS + 1) : rndn(5);
            struct forklog_field f[FORKLOG_MAX_FIELDS];
            for (size_t i = 0; i < nf; i++)
                f[i] = rnd_field();
            x->msg = rnd_message(mr);
            e->msg = x->msg, e->msglen = strlen(x->msg);
            for (size_t i = 0; i < nf; i++)
                gr_merge(all, &nall, gr_expected(&f[i], c->json, c->ecs));
            rc = loc ? forklog_log_fields_at(log, e->level, e->file, e->line, e->func, x->msg, f, nf)
                     : forklog_log_fields(log, e->level, x->msg, f, nf);
            for (size_t i = 0; i < nf; i++)
                free_field(&f[i]);
        } else {
            /* forklog_log(_at) with a format */
            char *arg = rnd_message(mr);
            size_t len = 0;
            int lv = e->level;
            switch (rndn(7)) {
            case 0:
                x->msg = fmt_msg(&len, "%s", arg);
                rc = loc ? forklog_log_at(log, lv, e->file, e->line, e->func, "%s", arg)
                         : forklog_log(log, lv, "%s", arg);
                break;
            case 1: {
                int a = (int)rnd();
                long long b = (long long)rnd();
                unsigned u = (unsigned)rnd();
                double d = (double)(int)rnd() / 1000.0;
                x->msg = fmt_msg(&len, "%d|%lld|%u|%x|%X|%+5.2f|%-6s|%08.3f|%% %c", a, b, u, u, u, d, "ab", d, 'q');
                rc = loc ? forklog_log_at(log, lv, e->file, e->line, e->func,
                                          "%d|%lld|%u|%x|%X|%+5.2f|%-6s|%08.3f|%% %c", a, b, u, u, u, d, "ab", d, 'q')
                         : forklog_log(log, lv, "%d|%lld|%u|%x|%X|%+5.2f|%-6s|%08.3f|%% %c", a, b, u, u, u, d, "ab", d,
                                       'q');
                break;
            }
            case 2:
                /* An embedded NUL and a control byte through %c. */
                x->msg = fmt_msg(&len, "a%cb%cc=%s", 0, 1, "v");
                rc = loc ? forklog_log_at(log, lv, e->file, e->line, e->func, "a%cb%cc=%s", 0, 1, "v")
                         : forklog_log(log, lv, "a%cb%cc=%s", 0, 1, "v");
                break;
            case 3: {
                double d = (double[]){NAN, INFINITY, 1e300, 0.5}[rndn(4)];
                x->msg = fmt_msg(&len, "%g %e %.3f %p %s", d, d, d, (void *)0x1234, arg);
                rc = loc ? forklog_log_at(log, lv, e->file, e->line, e->func, "%g %e %.3f %p %s", d, d, d,
                                          (void *)0x1234, arg)
                         : forklog_log(log, lv, "%g %e %.3f %p %s", d, d, d, (void *)0x1234, arg);
                break;
            }
            case 4: {
                int w = (int)rndn(3000);
                x->msg = fmt_msg(&len, "%*d:%s", w, 7, arg);
                rc = loc ? forklog_log_at(log, lv, e->file, e->line, e->func, "%*d:%s", w, 7, arg)
                         : forklog_log(log, lv, "%*d:%s", w, 7, arg);
                break;
            }
            case 5:
                x->msg = fmt_msg(&len, "%s", "");
                rc =
                    loc ? forklog_log_at(log, lv, e->file, e->line, e->func, "%s", "") : forklog_log(log, lv, "%s", "");
                break;
            default:
                x->msg = fmt_msg(&len, "%s%s", arg, arg);
                rc = loc ? forklog_log_at(log, lv, e->file, e->line, e->func, "%s%s", arg, arg)
                         : forklog_log(log, lv, "%s%s", arg, arg);
                break;
            }
            free(arg);
            e->msg = x->msg, e->msglen = len;
        }
        cr_assert_geq(rc, 0, "record %d: %s", r, strerror(-rc));
        e->ret = rc;
        e->fields = malloc((nall ? nall : 1) * sizeof *e->fields);
        memcpy(e->fields, all, nall * sizeof *all);
        e->nfields = nall;
        e->has_fields_after = loc || nall > 0;
        n++;
    }
    cr_assert_eq(forklog_close(log), 0);
    size_t len;
    char *buf = th_slurp(path, &len);
    cr_assert_not_null(buf);
    int bad = 0, line = 0;
    size_t p = 0;
    while (p < len && line < n) {
        char *nl = memchr(buf + p, '\n', len - p);
        if (!nl) {
            cr_log_error("seed %llu: the last record does not end with a newline", (unsigned long long)seed);
            bad++;
            break;
        }
        struct gr_err err = {{0}};
        if (!gr_check(&recs[line].e, buf + p, (size_t)(nl - buf - p), &err)) {
            if (bad < 8) {
                size_t ll = (size_t)(nl - buf - p);
                cr_log_error(
                    "seed %llu cfg json=%d ecs=%d tid=%d buf=%d name=%s max=%zu: record %d: %s\n  line: %.*s%s",
                    (unsigned long long)seed, c->json, c->ecs, c->tid, c->buffered, c->name ? c->name : "-",
                    c->max_record, line, err.msg, (int)(ll > 600 ? 600 : ll), buf + p, ll > 600 ? "..." : "");
            }
            bad++;
        }
        p = (size_t)(nl - buf) + 1;
        line++;
    }
    if (line != n || p != len) {
        cr_log_error("seed %llu: %d lines for %d records, %zu of %zu bytes read", (unsigned long long)seed, line, n, p,
                     len);
        bad++;
    }
    *nchecked += line;
    for (int i = 0; i < n; i++) {
        for (size_t k = 0; k < recs[i].e.nfields; k++)
            free(recs[i].e.fields[k].s);
        free(recs[i].e.fields);
        free(recs[i].msg), free(recs[i].file), free(recs[i].func);
    }
    for (size_t k = 0; k < ncur; k++)
        free(cur[k].s);
    free(recs);
    free(buf);
    free(path);
    return bad;
}

static void sweep(bool json, bool ecs)
{
    static const size_t mrs[] = {0, 256, 300, 512, 1024, 4096, 5000};
    int bad = 0, checked = 0;
    uint64_t seed = 0x9e3779b97f4a7c15ULL;
    const char *env = getenv("GRAMMAR_SEED");
    if (env)
        seed = strtoull(env, NULL, 0);
    int rounds = getenv("GRAMMAR_ROUNDS") ? atoi(getenv("GRAMMAR_ROUNDS")) : 24;
    /* GRAMMAR_STRICT: a record with no marker must hold every field (what the docs said before they told of fields
     * left out without one). */
    gr_strict_fields = getenv("GRAMMAR_STRICT") != NULL;
    for (int round = 0; round < rounds; round++) {
        struct cfg c = {.json = json, .ecs = ecs};
        uint64_t s = seed + (uint64_t)round * 0x1000193ULL;
        rng_state = s | 1;
        c.tid = rndn(2), c.buffered = rndn(2), c.ctx_add = rndn(2);
        c.name = rndn(2) ? names[rndn(sizeof names / sizeof *names)] : NULL;
        c.max_record = mrs[rndn(sizeof mrs / sizeof *mrs)];
        c.nctx = rndn(3) == 0 ? rndn(8) : 0;
        if (c.max_record && c.max_record < 400)
            c.name = c.name && strlen(c.name) < 20 ? c.name : NULL;
        bad += run(&c, rnd(), 150, &checked);
    }
    cr_assert_eq(bad, 0, "%d of %d records do not read back as documented", bad, checked);
}

Test(grammar, text_records_read_back_as_documented)
{
    sweep(false, false);
}

Test(grammar, json_records_read_back_as_documented)
{
    sweep(true, false);
}

Test(grammar, json_records_with_the_ecs_keys_read_back_as_documented)
{
    sweep(true, true);
}

/* A field that does not fit is left out whole, without a marker, and the call returns 0 when the message fits: the
 * marker and the count speak for the message alone (docs/design.md, "Records that do not fit max_record"). */
Test(grammar, a_field_left_out_for_room_leaves_no_marker_and_returns_0)
{
    char z[400];
    memset(z, 'z', sizeof z - 1);
    z[sizeof z - 1] = '\0';
    for (int json = 0; json <= 1; json++) {
        char *path = th_path(dir, json ? "lo.jsonl" : "lo.log");
        struct forklog_options o = {.max_record = 256, .format = json ? FORKLOG_FORMAT_JSON : FORKLOG_FORMAT_TEXT};
        forklog *log;
        cr_assert_eq(forklog_open(&log, path, &o), 0);
        struct forklog_field f[] = {FORKLOG_INT("a", 1), FORKLOG_STR("z", z), FORKLOG_INT("b", 2)};
        cr_assert_eq(forklog_log_fields(log, FORKLOG_INFO, "hi", f, 3), 0);
        cr_assert_eq(forklog_close(log), 0);
        size_t len;
        char *buf = th_slurp(path, &len);
        cr_assert_null(memchr(buf, 'z', len), "%s", buf);
        cr_assert_null(strstr(buf, json ? "\"cut\"" : "bytes cut]"), "%s", buf);
        cr_assert_not_null(strstr(buf, json ? "\"msg\":\"hi\",\"a\":1,\"b\":2}\n" : " hi a=1 b=2\n"), "%s", buf);
        struct gr_expect e = {
            .json = json, .level = FORKLOG_INFO, .msg = "hi", .msglen = 2, .has_fields_after = true, .max_record = 256};
        struct gr_field g[3];
        memset(g, 0, sizeof g);
        for (int i = 0; i < 3; i++)
            g[i] = gr_expected(&f[i], json, false);
        e.fields = g, e.nfields = 3;
        struct gr_err err = {{0}};
        cr_assert(gr_check(&e, buf, len - 1, &err), "%s", err.msg);
        gr_strict_fields = true;
        cr_assert_not(gr_check(&e, buf, len - 1, &err), "a strict reader sees the field missing");
        gr_strict_fields = false;
        free(g[1].s);
        free(buf);
        free(path);
    }
}

/* ---- the pool's records ---------------------------------------------------------------------------------------- */

static const char *pool_labels[12];

static const char *pool_label(size_t i, void *ctx)
{
    (void)ctx;
    return pool_labels[i % 12];
}

static int pool_task(size_t i, void *ctx)
{
    (void)ctx;
    return (int)(i % 3);
}

/* The label as documented: the first 128 bytes, moved back to the first byte of a character cut in two (at most 3
 * bytes back; a longer run of continuation bytes is cut at 128). */
static size_t label_keep(const char *l)
{
    size_t n = strlen(l);
    if (n <= 128)
        return n;
    for (size_t back = 0; back <= 3; back++) {
        unsigned char c = (unsigned char)l[128 - back];
        if ((c & 0xc0) != 0x80)
            return 128 - back;
    }
    return 128;
}

static char *task_line_expect(struct gr_expect *e, const char *line, size_t len, const struct forklog_task_result *res,
                              size_t ntasks, struct gr_field *f, size_t *nf)
{
    const char *t = e->json ? memmem(line, len, "\"task\":", 7) : memmem(line, len, " task=", 6);
    if (!t)
        return NULL;
    size_t i = strtoull(t + (e->json ? 7 : 6), NULL, 10);
    if (i >= ntasks)
        return NULL;
    static const char *const st[] = {"not_run", "ok", "failed", "crashed", "timeout"};
    memset(f, 0, 8 * sizeof *f);
    size_t n = 0;
    strcpy(f[n].key, "task"), f[n].type = FORKLOG_FIELD_UINT, f[n++].u = i;
    strcpy(f[n].key, "status"), f[n].type = FORKLOG_FIELD_STR, f[n].s = strdup(st[res[i].status]),
                                f[n].slen = strlen(st[res[i].status]), n++;
    strcpy(f[n].key, "cost"), f[n++].type = GR_ANY_DUR;
    strcpy(f[n].key, "worker"), f[n].type = FORKLOG_FIELD_INT, f[n++].i = res[i].worker;
    strcpy(f[n].key, "code"), f[n].type = FORKLOG_FIELD_INT, f[n++].i = res[i].code;
    strcpy(f[n].key, "signal"), f[n].type = FORKLOG_FIELD_INT, f[n++].i = res[i].signal;
    if (res[i].status != FORKLOG_TASK_NOT_RUN)
        strcpy(f[n].key, "start"), f[n++].type = GR_ANY_TIME;
    const char *l = pool_labels[i % 12];
    if (l) {
        size_t k = label_keep(l);
        strcpy(f[n].key, "label"), f[n].type = FORKLOG_FIELD_STR, f[n].s = strndup(l, k), f[n].slen = k, n++;
    }
    *nf = n;
    e->msg = "task", e->msglen = 4, e->has_fields_after = true;
    e->level = res[i].status == FORKLOG_TASK_OK ? FORKLOG_INFO : FORKLOG_WARN;
    return (char *)line;
}

Test(grammar, pool_records_read_back_as_documented)
{
    static char l300[301], lemoji[130], leuro[131], lbad[140];
    memset(l300, 0x80, 300);
    memset(lemoji, 'a', 125), memcpy(lemoji + 125, "\xf0\x9f\x98\x80", 4);
    memset(leuro, 'a', 127), memcpy(leuro + 127, "\xe2\x82\xac", 3);
    memset(lbad, 'b', 124), memcpy(lbad + 124, "\xc3\x80\x80\x80\x80\x80\x80", 7);
    const char *labels[12] = {"data1", NULL, "line one\nline two", "",       "a=b \"q\" \\",     l300, lemoji,
                              leuro,   lbad, "\x01\x7f\xff",       "task=7", "\xc3\xa9t\xc3\xa9"};
    memcpy(pool_labels, labels, sizeof labels);
    for (int mode = 0; mode < 3; mode++) {
        char *path = th_path(dir, mode == 0 ? "p.log" : mode == 1 ? "p.jsonl" : "p.ecs.jsonl");
        struct forklog_options o = {.format = mode ? FORKLOG_FORMAT_JSON : FORKLOG_FORMAT_TEXT,
                                    .keys = mode == 2 ? FORKLOG_KEYS_ECS : FORKLOG_KEYS_SHORT};
        forklog *log;
        cr_assert_eq(forklog_open(&log, path, &o), 0);
        enum { N = 36 };
        struct forklog_task_result res[N];
        struct forklog_pool_report rep;
        struct forklog_pool_options po = {.workers = 2, .log = log, .label = pool_label, .results = res};
        int rc = forklog_pool_map(&po, N, pool_task, NULL, &rep);
        cr_assert_eq(rc, 24, "%d", rc);
        cr_assert_eq(forklog_close(log), 0);
        size_t len;
        char *buf = th_slurp(path, &len);
        size_t p = 0;
        int lines = 0, bad = 0;
        while (p < len) {
            char *nl = memchr(buf + p, '\n', len - p);
            cr_assert_not_null(nl);
            size_t ll = (size_t)(nl - buf - p);
            struct gr_expect e = {.json = mode != 0, .ecs = mode == 2, .max_record = 1 << 20};
            struct gr_field f[20];
            size_t nf = 0;
            if (lines < N) {
                cr_assert_not_null(task_line_expect(&e, buf + p, ll, res, N, f, &nf), "%.*s", (int)ll, buf + p);
            } else {
                /* The summary: every duration from the report, as FORKLOG_DUR writes it. */
                const char *k[] = {"tasks", "ok", "failed", "crashed", "timeout", "not_run", "workers"};
                size_t v[] = {N, rep.ok, rep.failed, rep.crashed, rep.timed_out, rep.not_run, rep.workers_started};
                memset(f, 0, sizeof f);
                for (size_t j = 0; j < 7; j++)
                    strcpy(f[nf].key, k[j]), f[nf].type = FORKLOG_FIELD_UINT, f[nf++].u = v[j];
                const char *dk[] = {"wall", "min", "p50", "p95", "p99", "max", "mean"};
                double dv[] = {rep.wall_s, rep.min_s, rep.p50_s, rep.p95_s, rep.p99_s, rep.max_s, rep.mean_s};
                for (size_t j = 0; j < 7; j++)
                    strcpy(f[nf].key, dk[j]), f[nf].type = FORKLOG_FIELD_DUR,
                                              f[nf++].ns = forklog_field_dur("x", dv[j]).v.ns;
                strcpy(f[nf].key, "tasks_per_s"), f[nf].type = FORKLOG_FIELD_DBL, f[nf++].d = rep.tasks_per_s;
                e.msg = "pool summary", e.msglen = 12, e.has_fields_after = true, e.level = FORKLOG_WARN;
            }
            e.fields = f, e.nfields = nf;
            struct gr_err err = {{0}};
            if (!gr_check(&e, buf + p, ll, &err)) {
                cr_log_error("mode %d: %s\n  %.*s", mode, err.msg, (int)ll, buf + p);
                bad++;
            }
            for (size_t j = 0; j < nf; j++)
                free(f[j].s);
            p += ll + 1;
            lines++;
        }
        cr_assert_eq(lines, N + 1);
        cr_assert_eq(bad, 0, "%d pool records do not read back as documented", bad);
        free(buf);
        free(path);
    }
}

/* ---- the forklog(1) command ------------------------------------------------------------------------------------ */

#ifdef FORKLOG_CLI
/* The count in a cut record's marker, or 0. */
static long long marker_count(const char *line, size_t len, bool json)
{
    if (json) {
        const char *c = NULL;
        for (const char *q = line; (q = memmem(q, len - (size_t)(q - line), ",\"cut\":", 7)); q++)
            c = q;
        return c && line[len - 1] == '}' ? strtoll(c + 7, NULL, 10) : 0;
    }
    const char *c = NULL;
    for (const char *q = line; (q = memmem(q, len - (size_t)(q - line), " [forklog: ", 11)); q++)
        c = q;
    return c && len > 4 && memcmp(line + len - 4, "cut]", 4) == 0 ? strtoll(c + 11, NULL, 10) : 0;
}

Test(grammar, cli_records_read_back_as_documented)
{
    static const char *const lines[] = {"plain",    "",          "%s%n%d",          "tab\there\rcr", "\x01\x1b[31m\x7f",
                                        "\xff\xfe", "q\"=\\x41", "tid=1 app=x a=b", "\xe2\x82"};
    const size_t nl = sizeof lines / sizeof *lines;
    for (int json = 0; json <= 1; json++) {
        char *path = th_path(dir, json ? "cli.jsonl" : "cli.log");
        char *in = th_path(dir, "in.txt");
        FILE *fp = fopen(in, "w");
        for (size_t i = 0; i < nl; i++)
            fprintf(fp, "%s\n", lines[i]);
        /* A line past the log's largest record (1 MiB): cut, with a marker. */
        for (size_t i = 0; i < (1u << 20) + 100; i++)
            fputc(i % 7 == 0 ? '\t' : 'x', fp);
        fputc('\n', fp);
        fclose(fp);
        char cmd[1024];
        snprintf(cmd, sizeof cmd, "%s append %s %s < %s 2>/dev/null", FORKLOG_CLI, json ? "--json" : "", path, in);
        int st = system(cmd);
        cr_assert_eq(st, 0, "%s: %d", cmd, st);
        size_t len;
        char *buf = th_slurp(path, &len);
        fp = fopen(in, "r");
        char *want = NULL;
        size_t cap = 0;
        size_t p = 0;
        int n = 0, bad = 0;
        ssize_t wl;
        while ((wl = getline(&want, &cap, fp)) > 0) {
            want[--wl] = 0;
            char *nlp = memchr(buf + p, '\n', len - p);
            cr_assert_not_null(nlp, "record %d missing", n);
            size_t ll = (size_t)(nlp - buf - p);
            struct gr_expect e = {
                .json = json, .level = FORKLOG_INFO, .msg = want, .msglen = (size_t)wl, .max_record = 1 << 20};
            e.ret = ll + 1 + 8 >= e.max_record ? marker_count(buf + p, ll, json) : 0;
            struct gr_err err = {{0}};
            if (!gr_check(&e, buf + p, ll, &err)) {
                cr_log_error("json=%d line %d: %s\n  %.*s", json, n, err.msg, (int)(ll > 300 ? 300 : ll), buf + p);
                bad++;
            }
            p += ll + 1;
            n++;
        }
        cr_assert_eq(p, len, "more records than lines");
        cr_assert_eq(bad, 0, "%d forklog(1) records do not read back as documented", bad);
        fclose(fp);
        free(want);
        free(buf);
        free(in);
        free(path);
    }
}
#endif
