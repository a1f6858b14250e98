/* SPDX-License-Identifier: MIT */
/*
 * A strict, independent UTF-8 and JSON checker (RFC 8259, RFC 3629), shared by the fuzzers and tests/test_fields.c.
 * Header-only: every function is static. Written without looking at lib/format.c.
 */
#ifndef FORKLOG_JSON_CHECK_H
#define FORKLOG_JSON_CHECK_H

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#endif

/* ---- an independent UTF-8 and JSON checker ----------------------------------------------------------------- */

/* Length of the well-formed UTF-8 sequence at s (Unicode Table 3-7), 0 if there is none. */
static size_t ck_utf8(const unsigned char *s, size_t n)
{
    if (n == 0)
        return 0;
    unsigned c = s[0];
    if (c < 0x80)
        return 1;
    size_t len;
    unsigned lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf)
        len = 2;
    else if (c == 0xe0)
        len = 3, lo = 0xa0;
    else if (c == 0xed)
        len = 3, hi = 0x9f;
    else if ((c >= 0xe1 && c <= 0xec) || c == 0xee || c == 0xef)
        len = 3;
    else if (c == 0xf0)
        len = 4, lo = 0x90;
    else if (c >= 0xf1 && c <= 0xf3)
        len = 4;
    else if (c == 0xf4)
        len = 4, hi = 0x8f;
    else
        return 0;
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    return len;
}

/* What the escaper must produce as JSON for src, decoded: src with every byte that does not start a well-formed
 * sequence replaced by U+FFFD. Returns the length written to out (room: 3 * n). */
static size_t ck_replace(const unsigned char *src, size_t n, unsigned char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        size_t l = ck_utf8(src + i, n - i);
        if (l == 0) {
            memcpy(out + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        } else {
            memcpy(out + o, src + i, l);
            o += l;
            i += l;
        }
    }
    return o;
}

struct ck {
    const unsigned char *s;
    size_t n, i;
};

static int ck_hex4(struct ck *p, unsigned *v)
{
    if (p->n - p->i < 4)
        return 0;
    *v = 0;
    for (int k = 0; k < 4; k++) {
        unsigned char c = p->s[p->i++];
        unsigned d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            d = c - 'A' + 10;
        else
            return 0;
        *v = *v * 16 + d;
    }
    return 1;
}

static size_t ck_put_utf8(unsigned cp, unsigned char *out)
{
    if (cp < 0x80) {
        out[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (unsigned char)(0xc0 | cp >> 6);
        out[1] = (unsigned char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (unsigned char)(0xe0 | cp >> 12);
        out[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3f));
        out[2] = (unsigned char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (unsigned char)(0xf0 | cp >> 18);
    out[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3f));
    out[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3f));
    out[3] = (unsigned char)(0x80 | (cp & 0x3f));
    return 4;
}

/* The body of a JSON string, up to (not including) `end` (a '"', or the end of input when end < 0), decoded into
 * out (room: n bytes) when out is not NULL. RFC 8259 section 7 and valid UTF-8. Returns 1 if valid. */
static int ck_string_body(struct ck *p, int end, unsigned char *out, size_t *outlen)
{
    size_t o = 0;
    for (;;) {
        if (p->i == p->n) {
            if (end < 0)
                break;
            return 0;
        }
        unsigned char c = p->s[p->i];
        if (end >= 0 && c == (unsigned char)end) {
            p->i++;
            break;
        }
        if (c < 0x20)
            return 0;
        if (c == '"' && end < 0)
            return 0; /* an unescaped quote inside a bare string body */
        if (c == '\\') {
            p->i++;
            if (p->i == p->n)
                return 0;
            unsigned char e = p->s[p->i++];
            unsigned char lit;
            switch (e) {
            case '"': lit = '"'; break;
            case '\\': lit = '\\'; break;
            case '/': lit = '/'; break;
            case 'b': lit = '\b'; break;
            case 'f': lit = '\f'; break;
            case 'n': lit = '\n'; break;
            case 'r': lit = '\r'; break;
            case 't': lit = '\t'; break;
            case 'u': {
                unsigned cp;
                if (!ck_hex4(p, &cp))
                    return 0;
                if (cp >= 0xdc00 && cp <= 0xdfff)
                    return 0; /* lone low surrogate */
                if (cp >= 0xd800 && cp <= 0xdbff) {
                    unsigned lo;
                    if (p->n - p->i < 2 || p->s[p->i] != '\\' || p->s[p->i + 1] != 'u')
                        return 0;
                    p->i += 2;
                    if (!ck_hex4(p, &lo) || lo < 0xdc00 || lo > 0xdfff)
                        return 0;
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                }
                unsigned char u[4];
                size_t ul = ck_put_utf8(cp, u);
                if (out)
                    memcpy(out + o, u, ul);
                o += ul;
                continue;
            }
            default: return 0;
            }
            if (out)
                out[o] = lit;
            o++;
            continue;
        }
        size_t l = ck_utf8(p->s + p->i, p->n - p->i);
        if (l == 0)
            return 0;
        if (out)
            memcpy(out + o, p->s + p->i, l);
        o += l;
        p->i += l;
    }
    if (outlen)
        *outlen = o;
    return 1;
}

static int ck_number(struct ck *p, unsigned long long *v)
{
    size_t start = p->i;
    if (p->i < p->n && p->s[p->i] == '-')
        p->i++;
    if (p->i == p->n)
        return 0;
    if (p->s[p->i] == '0')
        p->i++;
    else if (p->s[p->i] >= '1' && p->s[p->i] <= '9')
        while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9')
            p->i++;
    else
        return 0;
    if (p->i < p->n && p->s[p->i] == '.') {
        p->i++;
        size_t d = p->i;
        while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9')
            p->i++;
        if (p->i == d)
            return 0;
    }
    if (p->i < p->n && (p->s[p->i] == 'e' || p->s[p->i] == 'E')) {
        p->i++;
        if (p->i < p->n && (p->s[p->i] == '+' || p->s[p->i] == '-'))
            p->i++;
        size_t d = p->i;
        while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9')
            p->i++;
        if (p->i == d)
            return 0;
    }
    *v = strtoull((const char *)p->s + start, NULL, 10);
    return 1;
}

static void ck_ws(struct ck *p)
{
    while (p->i < p->n && (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' || p->s[p->i] == '\r'))
        p->i++;
}

/* One member of a flat JSON object: its key and value, strings decoded (malloc'd, NUL-terminated). */
struct ck_member {
    char *key;
    char type; /* 's' string, 'n' number, 't' true, 'f' false, 'z' null */
    char *str; /* 's': the decoded value; 'n': the number's text */
    size_t slen;
};

static void ck_members_free(struct ck_member *m, int n)
{
    for (int i = 0; i < n; i++) {
        free(m[i].key);
        free(m[i].str);
    }
}

static char *ck_decode(const unsigned char *s, size_t n, size_t start, size_t *len)
{
    struct ck p = {s, n, start};
    size_t l = 0;
    ck_string_body(&p, '"', NULL, &l);
    char *out = malloc(l + 1);
    if (!out)
        abort();
    struct ck q = {s, n, start};
    ck_string_body(&q, '"', (unsigned char *)out, &l);
    out[l] = '\0';
    *len = l;
    return out;
}

/* Checks that rec[0..len) is exactly one JSON object whose values are scalars, then '\n', then nothing, and valid
 * UTF-8 throughout. Fills up to max members (in order). Returns the member count, or -1 with *why set. */
static int ck_json_flat(const unsigned char *rec, size_t len, struct ck_member *m, int max, const char **why)
{
    int n = 0;
    if (len == 0 || rec[len - 1] != '\n' || memchr(rec, '\n', len - 1)) {
        *why = "not one line ending in a newline";
        return -1;
    }
    struct ck p = {rec, len - 1, 0};
    ck_ws(&p);
    if (p.i == p.n || p.s[p.i++] != '{') {
        *why = "does not start an object";
        return -1;
    }
    ck_ws(&p);
    if (p.i < p.n && p.s[p.i] == '}') {
        p.i++;
        goto end;
    }
    for (;;) {
        ck_ws(&p);
        if (p.i == p.n || p.s[p.i++] != '"') {
            *why = "a key is not a string";
            goto fail;
        }
        size_t ks = p.i, kl;
        if (!ck_string_body(&p, '"', NULL, &kl)) {
            *why = "invalid key";
            goto fail;
        }
        ck_ws(&p);
        if (p.i == p.n || p.s[p.i++] != ':') {
            *why = "no ':' after a key";
            goto fail;
        }
        ck_ws(&p);
        if (p.i == p.n) {
            *why = "value missing";
            goto fail;
        }
        struct ck_member mm = {0};
        if (n < max)
            mm.key = ck_decode(rec, p.n, ks, &kl);
        unsigned char c = p.s[p.i];
        if (c == '"') {
            p.i++;
            size_t vs = p.i, vl;
            if (!ck_string_body(&p, '"', NULL, &vl)) {
                free(mm.key);
                *why = "invalid string value";
                goto fail;
            }
            mm.type = 's';
            if (n < max)
                mm.str = ck_decode(rec, p.n, vs, &mm.slen);
        } else if (c == 't' || c == 'f' || c == 'n') {
            const char *lit = c == 't' ? "true" : c == 'f' ? "false" : "null";
            size_t ll = strlen(lit);
            if (p.n - p.i < ll || memcmp(p.s + p.i, lit, ll) != 0) {
                free(mm.key);
                *why = "bad literal";
                goto fail;
            }
            p.i += ll;
            mm.type = c == 'n' ? 'z' : c;
        } else {
            size_t vs = p.i;
            unsigned long long v;
            if (!ck_number(&p, &v)) {
                free(mm.key);
                *why = "value is not a JSON value";
                goto fail;
            }
            mm.type = 'n';
            if (n < max) {
                mm.slen = p.i - vs;
                mm.str = malloc(mm.slen + 1);
                if (!mm.str)
                    abort();
                memcpy(mm.str, p.s + vs, mm.slen);
                mm.str[mm.slen] = '\0';
            }
        }
        if (n < max)
            m[n] = mm;
        n++;
        ck_ws(&p);
        if (p.i == p.n) {
            *why = "unterminated object";
            goto fail;
        }
        c = p.s[p.i++];
        if (c == '}')
            break;
        if (c != ',') {
            *why = "expected ',' or '}'";
            goto fail;
        }
    }
end:
    ck_ws(&p);
    if (p.i != p.n) {
        *why = "bytes after the object";
        goto fail;
    }
    return n;
fail:
    ck_members_free(m, n < max ? n : max);
    return -1;
}

#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

#endif /* FORKLOG_JSON_CHECK_H */
