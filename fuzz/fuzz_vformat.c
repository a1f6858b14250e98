/* SPDX-License-Identifier: MIT */
/*
 * fuzz_vformat: the printf fast path (fl__vformat, lib/format.c) against the C library's vsnprintf. The input
 * builds formats of one to three conversions out of every flag, width, precision, length modifier and conversion
 * the fast path knows (and some it must leave alone: %g %e %p %#x %*d %Lf), with literal bytes between them, and
 * arguments from raw input bits (NaN, infinities, subnormals, ties, INT_MIN, LLONG_MIN, huge and tiny doubles).
 * Whenever fl__vformat takes a format its output must be byte for byte what vsnprintf writes; when it does not
 * (returns -1), the caller uses vsnprintf, so any answer is right. The second byte picks the rounding mode
 * (fesetround) both run in.
 * Build: cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DFORKLOG_FUZZ=ON && cmake --build build-fuzz
 * Run:   build-fuzz/fuzz/fuzz_vformat -max_total_time=30
 */
#include "internal.h"

#include <fenv.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#pragma GCC diagnostic ignored "-Wformat-nonliteral"

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

/* One argument, of the type its conversion reads. */
union arg {
    long long ll;
    int i;
    double d;
    const char *s;
};
enum kind { K_INT, K_LL, K_DBL, K_STR, K_NONE };

static int both(char *fast, char *slow, size_t cap, const char *fmt, ...)
{
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = fl__vformat(fast, cap, fmt, ap);
    int m = vsnprintf(slow, cap + 1, fmt, ap2);
    va_end(ap2);
    va_end(ap);
    if (n >= 0 && (n != m || memcmp(fast, slow, (size_t)n) != 0)) {
        fprintf(stderr, "fuzz_vformat: format \"%s\": fast %d bytes \"%.*s\", vsnprintf %d bytes \"%s\"\n", fmt, n, n,
                fast, m, slow);
        abort();
    }
    if (n >= 0 && (size_t)n > cap)
        abort();
    return n;
}

#define CALL3(a, b, c) both(fast, slow, cap, fmt, a, b, c)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *d = data;
    size_t n = size;
    static const char *const flags[] = {"", "-", "+", " ", "0", "-0", "+ ", "0+", " -0", "#"};
    static const char *const lens[] = {"", "hh", "h", "l", "ll", "z", "j", "t", "L"};
    static const char convs[] = "diuxXcsfF%geEp";
    static const char *const strs[] = {"", "a", "hello, world", "\xc3\xa9t\xc3\xa9", "tab\there", "%s"};
    char fmt[256];
    size_t fo = 0;
    enum kind kinds[3] = {K_NONE, K_NONE, K_NONE};
    union arg args[3];
    memset(args, 0, sizeof args);
    int nconv = 0;
    size_t cap = (size_t)take(&d, &n, 1) * 2; /* the output room, 0..510 */
    static const int rounding[] = {FE_TONEAREST, FE_UPWARD, FE_DOWNWARD, FE_TOWARDZERO};
    int mode = rounding[take(&d, &n, 1) % 4];
    while (n > 0 && fo < 200) {
        uint8_t op = (uint8_t)take(&d, &n, 1);
        if (op < 96 || nconv == 3) {
            /* a literal byte: anything but '%' and NUL */
            char c = (char)(op < 96 ? op + 32 : (op & 0x7f) | 1);
            if (c == '%')
                c = '.';
            fmt[fo++] = c;
            continue;
        }
        uint64_t spec = take(&d, &n, 3);
        char conv = convs[spec % (sizeof convs - 1)];
        const char *fl = flags[(spec >> 4) % 10];
        const char *len = lens[(spec >> 8) % 9];
        char width[8] = "", prec[8] = "";
        if (spec >> 12 & 1)
            snprintf(width, sizeof width, "%u", (unsigned)(spec >> 13 & 31));
        if (spec >> 18 & 1)
            snprintf(prec, sizeof prec, ".%u", (unsigned)(spec >> 19 & 31));
        if (conv == '%') {
            fo += (size_t)snprintf(fmt + fo, sizeof fmt - fo, "%%%%");
            continue;
        }
        /* Only formats whose argument types are well defined: %c and %s without a length modifier, %f with
         * none, l or L, integers with any but L. */
        if ((conv == 'c' || conv == 's' || conv == 'p') && len[0])
            len = "";
        if ((conv == 'f' || conv == 'F' || conv == 'g' || conv == 'e' || conv == 'E') && len[0] && strcmp(len, "l"))
            len = "";
        if (strchr("diuxX", conv) && !strcmp(len, "L"))
            len = "ll";
        if ((conv == 's' || conv == 'c' || conv == 'p') && (strchr(fl, '0') || strchr(fl, '+') || strchr(fl, ' ')))
            fl = "-";
        if (conv == 'c' || conv == 'p')
            prec[0] = '\0';
        fo += (size_t)snprintf(fmt + fo, sizeof fmt - fo, "%%%s%s%s%s%c", fl, width, prec, len, conv);
        uint64_t v = take(&d, &n, 8);
        if (conv == 'f' || conv == 'F' || conv == 'g' || conv == 'e' || conv == 'E') {
            kinds[nconv] = K_DBL;
            switch (v & 3) {
            case 0: memcpy(&args[nconv].d, &v, sizeof v); break;
            case 1: args[nconv].d = ldexp((double)(v >> 12), (int)(v >> 2 & 127) - 100); break;
            case 2: args[nconv].d = ((double)(int64_t)(v >> 2) / 1e6); break;
            default: args[nconv].d = ldexp((double)(v >> 40 | 1) * 0.5, -(int)(v >> 2 & 63)); break;
            }
        } else if (conv == 's') {
            kinds[nconv] = K_STR;
            args[nconv].s = strs[v % 6];
        } else if (conv == 'p') {
            kinds[nconv] = K_STR;
            args[nconv].s = NULL;
        } else if (len[0] == 'l' || len[0] == 'z' || len[0] == 'j' || len[0] == 't') {
            kinds[nconv] = K_LL;
            static const long long edge[] = {0, -1, 1, INT32_MIN, INT32_MAX, INT64_MIN, INT64_MAX, 255, 65535};
            args[nconv].ll = v >> 60 == 0 ? edge[v % 9] : (long long)v;
        } else {
            kinds[nconv] = K_INT;
            args[nconv].i = v >> 60 == 0 ? (int)(INT32_MIN + (int)(v % 3)) : (int)v;
        }
        nconv++;
    }
    fmt[fo] = '\0';
    char *fast = malloc(cap ? cap : 1), *slow = malloc(cap + 1);
    if (!fast || !slow)
        abort();
    /* Every combination of kinds, with the arguments in their types. */
    {
        /* Dispatch on the three kinds: 5^3 cases are generated by nesting. */
#define PICK(k, body)                                                                                                  \
    switch (kinds[k]) {                                                                                                \
    case K_INT: {                                                                                                      \
        int a##k = args[k].i;                                                                                          \
        body                                                                                                           \
    } break;                                                                                                           \
    case K_LL: {                                                                                                       \
        long long a##k = args[k].ll;                                                                                   \
        body                                                                                                           \
    } break;                                                                                                           \
    case K_DBL: {                                                                                                      \
        double a##k = args[k].d;                                                                                       \
        body                                                                                                           \
    } break;                                                                                                           \
    case K_STR: {                                                                                                      \
        const char *a##k = args[k].s;                                                                                  \
        body                                                                                                           \
    } break;                                                                                                           \
    default: {                                                                                                         \
        int a##k = 0;                                                                                                  \
        body                                                                                                           \
    } break;                                                                                                           \
    }
        /* The arguments are made in the default mode, then formatted in the chosen one. */
        if (fesetround(mode) != 0)
            abort();
        PICK(0, PICK(1, PICK(2, CALL3(a0, a1, a2);)))
        fesetround(FE_TONEAREST);
    }
    free(fast);
    free(slow);
    return 0;
}
