/* SPDX-License-Identifier: MIT */
/*
 * fuzz_api: the whole record path through the public API, read back by tests/grammar.h (a reader written from
 * docs/design.md alone). One input opens a handle on a memfd (forklog_open_fd) with fuzz options (format, key set,
 * thread id, name, max_record, context fields), may add context (forklog_context_add), then writes one record with
 * forklog_log_fields(_at) or forklog_log(_at) with a message, a location and typed fields made of fuzz bytes:
 * strings of any bytes, integers at the extremes, doubles of any bit pattern (NaN payloads, subnormals), durations
 * and times of any value, and keys of any bytes; the call runs in any rounding mode. Checked:
 *   - a key or type that is not valid (docs/design.md "Keys": 1 to 64 bytes of [A-Za-z0-9_.@-]) makes the call
 *     fail with -EINVAL and write nothing; so does a name that is not 1 to 64 bytes of UTF-8 without control bytes;
 *   - a valid call returns 0 or the count of message bytes cut and writes exactly one line, which reads back by the
 *     grammar: the message (cut by that count), every field with its exact value (left out only when it does not
 *     fit), the location, the built-ins, the cut marker; a JSON record is valid JSON and valid UTF-8.
 * Build: cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DFORKLOG_FUZZ=ON && cmake --build build-fuzz
 * Run:   build-fuzz/fuzz/fuzz_api -max_total_time=60
 */
#include <forklog.h>

#include "../tests/grammar.h"

#include <errno.h>
#include <fenv.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#pragma GCC diagnostic ignored "-Wformat-security"
#pragma GCC diagnostic ignored "-Wformat-nonliteral"

#define FAIL(...)                                                                                                      \
    do {                                                                                                               \
        fprintf(stderr, "fuzz_api: " __VA_ARGS__);                                                                     \
        fputc('\n', stderr);                                                                                           \
        abort();                                                                                                       \
    } while (0)

struct in {
    const uint8_t *d;
    size_t n;
};

static uint64_t take(struct in *in, size_t bytes)
{
    uint64_t v = 0;
    for (size_t i = 0; i < bytes && in->n > 0; i++) {
        v = v << 8 | *in->d++;
        in->n--;
    }
    return v;
}

/* A malloc'd string of up to max bytes of input (a length byte first); NUL bytes of the input end it early. */
static char *take_str(struct in *in, size_t max)
{
    size_t len = (size_t)take(in, 1);
    if (len > max)
        len = max;
    if (len > in->n)
        len = in->n;
    char *s = malloc(len + 1);
    if (!s)
        abort();
    memcpy(s, in->d, len);
    s[len] = '\0';
    in->d += len;
    in->n -= len;
    return s;
}

/* The documented key rule, written here from docs/design.md ("Keys"). */
static bool key_valid(const char *k)
{
    if (!k)
        return false;
    size_t n = strlen(k);
    if (n < 1 || n > FORKLOG_MAX_KEY)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)k[i];
        if (!(isalnum(c) && c < 0x80) && c != '_' && c != '.' && c != '-' && c != '@')
            return false;
    }
    return true;
}

/* The documented name rule: 1 to 64 bytes of valid UTF-8 without control bytes. */
static bool name_valid(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > 64)
        return false;
    for (size_t i = 0; i < n;) {
        size_t l = gr_utf8_len((const unsigned char *)s + i, n - i);
        if (l == 0 || (l == 1 && gr_ctrl((unsigned char)s[i])))
            return false;
        i += l;
    }
    return true;
}

/* Keys to try beside the record's own names (gr_builtin_key). */
static const char *const special_keys[] = {"fields.ts",
                                           "fields.msg",
                                           "fields.message",
                                           "fields.cut",
                                           "fields.forklog.cut",
                                           "k",
                                           "x-y",
                                           "a.b@c",
                                           "fields.fields.ts",
                                           "",
                                           "a b",
                                           "a=b",
                                           "\xc3\xa9",
                                           "0123456789012345678901234567890123456789012345678901234567890123",
                                           "01234567890123456789012345678901234567890123456789012345678901234"};

/* A field of fuzz bytes; its key and string are malloc'd. The type may be one that is not valid. */
static struct forklog_field take_field(struct in *in)
{
    struct forklog_field f;
    memset(&f, 0, sizeof f);
    unsigned kb = (unsigned)take(in, 1);
    size_t j = kb % (GR_BUILTIN_KEYS + sizeof special_keys / sizeof *special_keys);
    f.key = kb >= 0xc0            ? take_str(in, 80)
            : j < GR_BUILTIN_KEYS ? strdup(gr_builtin_key(j))
                                  : strdup(special_keys[j - GR_BUILTIN_KEYS]);
    unsigned tb = (unsigned)take(in, 1);
    f.type = tb == 0xff ? 0 : tb == 0xfe ? 8 : (enum forklog_field_type)(1 + tb % 7);
    uint64_t v = take(in, 8);
    switch ((int)f.type) {
    case FORKLOG_FIELD_STR: f.v.s = tb & 0x80 && !(tb & 0x40) ? NULL : take_str(in, 255); break;
    case FORKLOG_FIELD_INT: {
        static const long long e[] = {0, -1, 1, LLONG_MIN, LLONG_MAX, LLONG_MIN + 1, LLONG_MAX - 1, -10, 10};
        f.v.i = tb & 0x80 ? e[v % 9] : (long long)v;
        break;
    }
    case FORKLOG_FIELD_UINT: f.v.u = tb & 0x80 ? (unsigned long long[]){0, 1, ULLONG_MAX, 1ULL << 63}[v % 4] : v; break;
    case FORKLOG_FIELD_DBL:
        if (tb & 0x80) {
            /* A subnormal or a NaN with a payload, either sign. */
            uint64_t bits = tb & 0x40 ? (v & 0x800fffffffffffffULL) : (v | 0x7ff0000000000001ULL);
            memcpy(&f.v.d, &bits, sizeof bits);
        } else {
            memcpy(&f.v.d, &v, sizeof v);
        }
        break;
    case FORKLOG_FIELD_BOOL: f.v.b = (int)(v & 0xffffffff); break;
    case FORKLOG_FIELD_DUR: {
        static const long long e[] = {0, -1, 1, LLONG_MIN, LLONG_MAX, 999999999, -1000000000, 1000000000};
        f.v.ns = tb & 0x80 ? e[v % 8] : (long long)v;
        break;
    }
    case FORKLOG_FIELD_TIME: {
        static const long long e[] = {
            0, -1, -62167219200LL, -62167219201LL, 253402300799LL, 253402300800LL, LLONG_MIN, LLONG_MAX};
        f.v.t.sec = tb & 0x80 ? e[v % 8] : (long long)v >> (v & 31);
        uint64_t w = take(in, 8);
        static const long ne[] = {0, 999999999, -1, 1000000000, LONG_MAX, LONG_MIN, 1999999999L, -999999999L};
        f.v.t.nsec = tb & 0x40 ? ne[w % 8] : (long)w;
        break;
    }
    default: break;
    }
    return f;
}

static void free_field(struct forklog_field *f)
{
    free((char *)f->key);
    if (f->type == FORKLOG_FIELD_STR)
        free((char *)f->v.s);
}

static bool field_valid(const struct forklog_field *f)
{
    return key_valid(f->key) && f->type >= FORKLOG_FIELD_STR && f->type <= FORKLOG_FIELD_TIME;
}

static int memfd = -1;

/* The sweep driver's (FUZZ_API_SWEEP): a max_record that overrides the input's, and the last record's length. */
static size_t force_max_record, last_len;

static char *slurp(size_t *len)
{
    off_t end = lseek(memfd, 0, SEEK_END);
    if (end < 0)
        abort();
    char *buf = malloc((size_t)end + 1);
    if (!buf || pread(memfd, buf, (size_t)end, 0) != end)
        abort();
    buf[end] = '\0';
    *len = (size_t)end;
    return buf;
}

#define MAXF 16

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (memfd < 0 && (memfd = memfd_create("fuzz_api", 0)) < 0)
        abort();
    if (ftruncate(memfd, 0) != 0)
        abort();
    struct in in = {data, size};
    unsigned cfg = (unsigned)take(&in, 1);
    const bool json = cfg & 1, ecs = cfg & 2, tid = cfg & 4, ctx_add = cfg & 32, loc = cfg & 64, printf_ = cfg & 128;
    /* Second byte: the rounding mode the call runs in (doubles must read back, rounding to nearest, whatever it
     * is), and how many times the message bytes repeat (long messages, cut at max_record, from short inputs). */
    unsigned cfg2 = (unsigned)take(&in, 1);
    static const int rounding[] = {FE_TONEAREST, FE_UPWARD, FE_DOWNWARD, FE_TOWARDZERO};
    size_t rep = 1 + (cfg2 >> 2);
    /* Third byte: FORKLOG_BUFFERED (the record waits in the shared buffer until the close), and for forklog_log(),
     * the message as the format itself with each '%' doubled rather than through "%s". */
    unsigned cfg3 = (unsigned)take(&in, 1);
    const bool buffered = cfg3 & 1, as_format = cfg3 & 2;
    unsigned mrsel = (unsigned)take(&in, 2);
    size_t max_record = force_max_record ? force_max_record : mrsel == 0 ? 0 : 256 + mrsel % 6000;
    char *name = NULL;
    if (cfg & 8) {
        unsigned nb = (unsigned)take(&in, 1);
        static const char *const names[] = {"checkout",          "my app", "a=b", "q\"uote", "back\\slash",
                                            "\xc3\xa9t\xc3\xa9", "\"x"};
        name = nb < 0x80 ? strdup(names[nb % 7]) : take_str(&in, 80);
    }
    bool valid = !name || name_valid(name);

    struct forklog_field ctx[4];
    size_t nctx = cfg & 16 ? 1 + (size_t)take(&in, 1) % 4 : 0;
    for (size_t i = 0; i < nctx; i++) {
        ctx[i] = take_field(&in);
        valid = valid && field_valid(&ctx[i]);
    }
    struct forklog_options o = {.level = FORKLOG_DEBUG,
                                .format = json ? FORKLOG_FORMAT_JSON : FORKLOG_FORMAT_TEXT,
                                .flags = (tid ? FORKLOG_TID : 0u) | (buffered ? FORKLOG_BUFFERED : 0u),
                                .max_record = max_record,
                                .keys = ecs ? FORKLOG_KEYS_ECS : FORKLOG_KEYS_SHORT,
                                .name = name,
                                .context = nctx ? ctx : NULL,
                                .ncontext = nctx};
    forklog *log = NULL;
    int rc = forklog_open_fd(&log, memfd, &o);
    struct gr_field cur[2 * MAXF];
    size_t ncur = 0;
    for (size_t i = 0; i < nctx; i++) {
        if (valid)
            gr_merge(cur, &ncur, gr_expected(&ctx[i], json, ecs));
        free_field(&ctx[i]);
    }
    if (!valid) {
        if (rc != -EINVAL)
            FAIL("open with an invalid name or context field returned %d", rc);
        free(name);
        return 0;
    }
    /* A max_record that leaves no room after the longest prefix the options make is refused (docs/api.md): only a
     * long name brings that prefix near 256 bytes. */
    if (rc == -EINVAL && name && max_record && max_record < 420) {
        free(name);
        for (size_t i = 0; i < ncur; i++)
            free(cur[i].s);
        return 0;
    }
    if (rc != 0)
        FAIL("open returned %d", rc);

    if (ctx_add) {
        struct forklog_field add[3];
        size_t na = 1 + (size_t)take(&in, 1) % 3;
        bool ok = true;
        for (size_t i = 0; i < na; i++) {
            add[i] = take_field(&in);
            ok = ok && field_valid(&add[i]);
        }
        rc = forklog_context_add(log, add, na);
        if (ok ? rc != 0 : rc != -EINVAL)
            FAIL("context_add of %s fields returned %d", ok ? "valid" : "invalid", rc);
        for (size_t i = 0; i < na; i++) {
            if (ok)
                gr_merge(cur, &ncur, gr_expected(&add[i], json, ecs));
            free_field(&add[i]);
        }
    }

    struct gr_expect e;
    memset(&e, 0, sizeof e);
    e.json = json, e.ecs = ecs, e.tid = tid, e.app = name;
    e.max_record = max_record ? max_record : 1 << 20;
    e.level = 1 + (int)(take(&in, 1) % 4);
    char *file = NULL, *func = NULL;
    int line = 0;
    if (loc) {
        unsigned lb = (unsigned)take(&in, 1);
        file = lb & 1 ? take_str(&in, 255) : NULL;
        func = lb & 2 ? take_str(&in, 255) : NULL;
        line = (int)(uint32_t)take(&in, 4);
        e.loc = file != NULL, e.file = file, e.func = func, e.line = line;
    }
    /* The message: up to 16 KiB, so that records past 4 KiB (built on the heap) and any max_record cut come up. */
    size_t mlen = (size_t)take(&in, 2) % 16384;
    if (mlen > in.n)
        mlen = in.n;
    if (mlen * rep > 65536)
        rep = mlen > 65536 ? 1 : 65536 / mlen;
    char *msg = malloc(mlen * rep + 1);
    if (!msg)
        abort();
    for (size_t r = 0; r < rep; r++)
        memcpy(msg + r * mlen, in.d, mlen);
    msg[mlen * rep] = '\0';
    in.d += mlen, in.n -= mlen;
    e.msg = msg, e.msglen = strlen(msg);

    struct forklog_field f[MAXF];
    size_t nf = 0;
    bool ok = true;
    while (!printf_ && in.n > 0 && nf < MAXF) {
        f[nf] = take_field(&in);
        ok = ok && field_valid(&f[nf]);
        nf++;
    }
    struct gr_field all[3 * MAXF];
    size_t nall = 0;
    for (size_t i = 0; i < ncur; i++) {
        all[nall] = cur[i];
        all[nall].s = cur[i].s ? strdup(cur[i].s) : NULL;
        nall++;
    }
    for (size_t i = 0; i < nf && ok; i++)
        gr_merge(all, &nall, gr_expected(&f[i], json, ecs));
    if (fesetround(rounding[cfg2 & 3]) != 0)
        abort();
    char *fmt = NULL;
    if (printf_ && as_format) {
        /* The message as a format: every '%' doubled, so that it formats to the message itself. */
        size_t ml = strlen(msg), k = 0;
        if (!(fmt = malloc(2 * ml + 1)))
            abort();
        for (size_t i = 0; i < ml; i++) {
            fmt[k++] = msg[i];
            if (msg[i] == '%')
                fmt[k++] = '%';
        }
        fmt[k] = '\0';
    }
    if (printf_ && fmt)
        rc = loc ? forklog_log_at(log, e.level, file, line, func, fmt) : forklog_log(log, e.level, fmt);
    else if (printf_)
        rc = loc ? forklog_log_at(log, e.level, file, line, func, "%s", msg) : forklog_log(log, e.level, "%s", msg);
    else
        rc = loc ? forklog_log_fields_at(log, e.level, file, line, func, msg, f, nf)
                 : forklog_log_fields(log, e.level, msg, f, nf);
    fesetround(FE_TONEAREST);
    for (size_t i = 0; i < nf; i++)
        free_field(&f[i]);
    if (forklog_close(log) != 0)
        FAIL("close failed");

    size_t len;
    char *buf = slurp(&len);
    last_len = len;
    if (!ok) {
        if (rc != -EINVAL)
            FAIL("a call with an invalid key or type returned %d", rc);
        if (len != 0)
            FAIL("a refused call wrote %zu bytes: %.*s", len, (int)len, buf);
    } else {
        if (rc < 0)
            FAIL("the call returned %d", rc);
        e.ret = rc;
        e.fields = all, e.nfields = nall;
        e.has_fields_after = e.loc || nall > 0;
        if (len == 0 || buf[len - 1] != '\n' || memchr(buf, '\n', len - 1))
            FAIL("not one line: %zu bytes: %.*s", len, (int)len, buf);
        struct gr_err err = {{0}};
        if (!gr_check(&e, buf, len - 1, &err))
            FAIL("%s\n  line (%zu bytes, returned %d): %.*s", err.msg, len, rc, (int)(len > 2000 ? 2000 : len), buf);
    }
    free(buf);
    for (size_t i = 0; i < nall; i++)
        free(all[i].s);
    for (size_t i = 0; i < ncur; i++)
        free(cur[i].s);
    free(msg);
    free(fmt);
    free(file);
    free(func);
    free(name);
    return 0;
}

#ifdef FUZZ_API_SWEEP
/* Every input named on the command line (a corpus), with every max_record from 256 to past its record's length:
 * the cut and its marker at every length. */
int main(int argc, char **argv)
{
    for (int a = 1; a < argc; a++) {
        FILE *fp = fopen(argv[a], "rb");
        if (!fp)
            continue;
        static uint8_t buf[1 << 16];
        size_t n = fread(buf, 1, sizeof buf, fp);
        fclose(fp);
        force_max_record = 1 << 20;
        last_len = 0;
        LLVMFuzzerTestOneInput(buf, n);
        size_t top = last_len + 8 < 8192 ? last_len + 8 : 8192;
        for (size_t mr = 256; mr <= top; mr++) {
            force_max_record = mr;
            LLVMFuzzerTestOneInput(buf, n);
        }
    }
    return 0;
}
#endif
