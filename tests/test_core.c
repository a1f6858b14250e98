/* SPDX-License-Identifier: MIT */
/* The core contract: record formats, levels, max_record, bad input, version, fork inheritance. */
#include "helpers.h"

#include <dirent.h>
#include <forklog.h>
#include <limits.h>
#include <pwd.h>
#include <regex.h>
#include <time.h>
#include <wchar.h>

static char *dir, *logpath;

static void setup(void)
{
    dir = th_tmpdir();
    logpath = th_path(dir, "test.log");
}

static void teardown(void)
{
    th_rmdir(dir);
    free(logpath);
    free(dir);
}

TestSuite(core, .init = setup, .fini = teardown);

static forklog *open_with(const struct forklog_options *o)
{
    forklog *log = NULL;
    int rc = forklog_open(&log, logpath, o);
    cr_assert_eq(rc, 0, "forklog_open: %s", strerror(-rc));
    cr_assert_not_null(log);
    return log;
}

static char *read_log(size_t *len)
{
    char *buf = th_slurp(logpath, len);
    cr_assert_not_null(buf, "log file missing");
    return buf;
}

/* Whether directory d holds nothing (hidden files, such as a log's segment file, count). */
static int dir_is_empty(const char *d)
{
    DIR *dp = opendir(d);
    cr_assert_not_null(dp, "opendir %s: %s", d, strerror(errno));
    int n = 0;
    for (struct dirent *e; (e = readdir(dp));)
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(dp);
    return n == 0;
}

static void assert_matches(const char *line, const char *pattern)
{
    regex_t re;
    cr_assert_eq(regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB), 0);
    int m = regexec(&re, line, 0, NULL, 0);
    regfree(&re);
    cr_assert_eq(m, 0, "\"%s\" does not match /%s/", line, pattern);
}

Test(core, version_macros_agree_with_runtime)
{
    cr_assert_eq(forklog_version(), FORKLOG_VERSION_NUMBER);
    cr_assert_str_eq(forklog_version_string(), FORKLOG_VERSION_STRING);
    char v[32];
    snprintf(v, sizeof v, "%d.%d.%d", FORKLOG_VERSION_MAJOR, FORKLOG_VERSION_MINOR, FORKLOG_VERSION_PATCH);
    cr_assert_str_eq(v, FORKLOG_VERSION_STRING);
}

Test(core, text_record_layout)
{
    forklog *log = open_with(NULL);
    cr_assert_eq(forklog_info(log, "request %s cost %.6f s", "data1", 0.012345), 0);
    cr_assert_eq(forklog_close(log), 0);
    size_t len;
    char *buf = read_log(&len);
    char want[64];
    snprintf(want, sizeof want, " INFO pid=%ld request data1 cost 0.012345 s\n", (long)getpid());
    cr_assert_eq(th_count_lines(buf, len), 1);
    buf[len - 1] = '\0';
    assert_matches(buf, "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{6}Z INFO pid=[0-9]+ request");
    buf[len - 1] = '\n';
    cr_assert_str_eq(buf + 27, want);
    free(buf);
}

/* Bounds from clock_gettime(CLOCK_REALTIME), the clock records are stamped with: time() reads the kernel's coarse
 * clock, whose second can lag the precise one by a tick. */
static time_t realtime_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec;
}

Test(core, timestamp_is_now_in_utc)
{
    forklog *log = open_with(NULL);
    time_t before = realtime_s();
    cr_assert_eq(forklog_warn(log, "x"), 0);
    time_t after = realtime_s();
    forklog_close(log);
    size_t len;
    char *buf = read_log(&len);
    struct tm tm = {0};
    cr_assert_not_null(strptime(buf, "%Y-%m-%dT%H:%M:%S", &tm));
    time_t t = timegm(&tm);
    cr_assert(t >= before && t <= after, "record time %ld outside [%ld, %ld]", (long)t, (long)before, (long)after);
    cr_assert_not_null(strstr(buf, "Z WARN pid="));
    free(buf);
}

Test(core, text_escapes_control_bytes_one_line_per_record)
{
    forklog *log = open_with(NULL);
    cr_assert_eq(forklog_error(log,
                               "a\nb\rc\td%ce\x7f"
                               "f\\g \"q\" \xff\xfe",
                               1),
                 0);
    cr_assert_eq(forklog_info(log, "%s", ""), 0);
    forklog_close(log);
    size_t len;
    char *buf = read_log(&len);
    cr_assert_eq(th_count_lines(buf, len), 2);
    char *msg = strstr(buf, "ERROR pid=");
    cr_assert_not_null(msg);
    msg = strchr(msg + 10, ' ') + 1;
    /* Control bytes escaped; backslash, quotes and other bytes kept as they are. */
    const char want[] = "a\\nb\\rc\\td\\x01e\\x7ff\\g \"q\" \xff\xfe\n";
    cr_assert_eq(strncmp(msg, want, sizeof want - 1), 0, "got: %s", msg);
    char *second = strchr(msg, '\n') + 1;
    cr_assert_not_null(strstr(second, " INFO pid="));
    cr_assert_eq(second[strlen(second) - 1], '\n');
    free(buf);
}

static int rec_cmp_json(const char *rec, const char *want_msg)
{
    const char *m = strstr(rec, "\"msg\":\"");
    if (!m)
        return -1;
    return strncmp(m + 7, want_msg, strlen(want_msg));
}

Test(core, json_record_layout_and_escaping)
{
    struct forklog_options o = {.format = FORKLOG_FORMAT_JSON, .level = FORKLOG_DEBUG};
    forklog *log = open_with(&o);
    cr_assert_eq(forklog_debug(log, "q\"b\\n\nc\x01\x1f\b\f\t\x7f"), 0);
    /* Invalid UTF-8: lone continuation, truncated sequence, overlong, surrogate, past U+10FFFF; and valid é, 😀. */
    cr_assert_eq(forklog_info(log, "%s", "\x80|\xc3|\xc0\xaf|\xed\xa0\x80|\xf4\x90\x80\x80|\xc3\xa9|\xf0\x9f\x98\x80"),
                 0);
    forklog_close(log);
    size_t len;
    char *buf = read_log(&len);
    cr_assert_eq(th_count_lines(buf, len), 2);
    char head[80];
    snprintf(head, sizeof head, "\",\"level\":\"debug\",\"pid\":%ld,\"msg\":\"", (long)getpid());
    cr_assert_eq(strncmp(buf, "{\"ts\":\"", 7), 0);
    cr_assert_eq(strncmp(buf + 7 + 27, head, strlen(head)), 0, "got %s", buf);
    cr_assert_eq(rec_cmp_json(buf, "q\\\"b\\\\n\\nc\\u0001\\u001f\\b\\f\\t\x7f\"}\n"), 0, "got %s", buf);
    char *second = strchr(buf, '\n') + 1;
    cr_assert_not_null(strstr(second, "\"level\":\"info\""));
    const char want[] = "\xef\xbf\xbd|\xef\xbf\xbd|\xef\xbf\xbd\xef\xbf\xbd|\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd|"
                        "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd|\xc3\xa9|\xf0\x9f\x98\x80\"}\n";
    cr_assert_eq(rec_cmp_json(second, want), 0, "got %s", second);
    free(buf);
}

Test(core, level_filtering)
{
    struct forklog_options o = {.level = FORKLOG_WARN};
    forklog *log = open_with(&o);
    cr_assert_eq(forklog_debug(log, "d"), 0);
    cr_assert_eq(forklog_info(log, "i"), 0);
    cr_assert_eq(forklog_warn(log, "w"), 0);
    cr_assert_eq(forklog_error(log, "e"), 0);
    forklog_close(log);
    size_t len;
    char *buf = read_log(&len);
    cr_assert_eq(th_count_lines(buf, len), 2);
    cr_assert_not_null(strstr(buf, " WARN pid="));
    cr_assert_not_null(strstr(buf, " ERROR pid="));
    cr_assert_null(strstr(buf, " INFO "));
    free(buf);
}

Test(core, default_level_is_info)
{
    forklog *log = open_with(NULL);
    cr_assert_eq(forklog_debug(log, "d"), 0);
    cr_assert_eq(forklog_info(log, "i"), 0);
    forklog_close(log);
    size_t len;
    char *buf = read_log(&len);
    cr_assert_eq(th_count_lines(buf, len), 1);
    free(buf);
}

Test(core, write_raw_exactly_as_given)
{
    forklog *log = open_with(NULL);
    cr_assert_eq(forklog_write(log, "abc", 3), 0);      /* newline added */
    cr_assert_eq(forklog_write(log, "def\n", 4), 0);    /* kept */
    cr_assert_eq(forklog_write(log, NULL, 0), 0);       /* empty line */
    cr_assert_eq(forklog_write(log, "a\nb\x01", 4), 0); /* no escaping */
    forklog_close(log);
    size_t len;
    char *buf = read_log(&len);
    cr_assert_eq(len, 4 + 4 + 1 + 5);
    cr_assert_eq(memcmp(buf, "abc\ndef\n\na\nb\x01\n", len), 0);
    free(buf);
}

Test(core, appends_to_existing_file)
{
    int fd = open(logpath, O_WRONLY | O_CREAT, 0644);
    cr_assert_eq(write(fd, "old\n", 4), 4);
    close(fd);
    forklog *log = open_with(NULL);
    cr_assert_eq(forklog_write(log, "new", 3), 0);
    forklog_close(log);
    size_t len;
    char *buf = read_log(&len);
    cr_assert_str_eq(buf, "old\nnew\n");
    free(buf);
}

Test(core, raw_truncation_marker_and_return)
{
    struct forklog_options o = {.max_record = 256};
    forklog *log = open_with(&o);
    char big[1000];
    memset(big, 'x', sizeof big);
    char exact[256];
    memset(exact, 'y', sizeof exact);
    exact[255] = '\n';
    cr_assert_eq(forklog_write(log, exact, 256), 0, "a record of exactly max_record is whole");
    cr_assert_eq(forklog_write(log, exact, 255), 0, "255 + added newline is exactly max_record");
    int rc = forklog_write(log, big, sizeof big);
    forklog_close(log);
    size_t len;
    char *buf = read_log(&len);
    cr_assert_eq(len, 256 + 256 + 256);
    char *rec = buf + 512;
    int marker_at = (int)(strstr(rec, " [forklog: ") - rec);
    cr_assert_gt(rc, 0);
    char want[64];
    snprintf(want, sizeof want, " [forklog: %d bytes cut]\n", rc);
    cr_assert_str_eq(rec + marker_at, want);
    cr_assert_eq(marker_at + rc, 1000, "kept + cut = the record");
    for (int i = 0; i < marker_at; i++)
        cr_assert_eq(rec[i], 'x');
    free(buf);
}

Test(core, formatted_truncation_text_and_json)
{
    for (int json = 0; json <= 1; json++) {
        struct forklog_options o = {.max_record = 300, .format = json ? FORKLOG_FORMAT_JSON : FORKLOG_FORMAT_TEXT};
        forklog *log = open_with(&o);
        char msg[5000];
        memset(msg, 'm', sizeof msg - 1);
        msg[sizeof msg - 1] = '\0';
        int rc = forklog_info(log, "%s", msg);
        cr_assert_gt(rc, 0);
        forklog_close(log);
        size_t len;
        char *buf = read_log(&len);
        cr_assert_leq(len, 300);
        cr_assert_eq(th_count_lines(buf, len), 1);
        char *m = strstr(buf, "mmm");
        cr_assert_not_null(m, "got %s", buf);
        size_t kept = strspn(m, "m");
        cr_assert_eq(kept + (size_t)rc, 4999, "kept %zu + cut %d", kept, rc);
        char want[64];
        if (json)
            snprintf(want, sizeof want, "\",\"cut\":%d}\n", rc);
        else
            snprintf(want, sizeof want, " [forklog: %d bytes cut]\n", rc);
        cr_assert_str_eq(m + kept, want);
        free(buf);
        unlink(logpath);
    }
}

/* Whether buf[0..len) is valid UTF-8 (RFC 3629: no overlong forms, no surrogates, nothing past U+10FFFF). */
static int valid_utf8(const unsigned char *s, size_t len)
{
    for (size_t i = 0; i < len;) {
        unsigned char c = s[i];
        size_t n = c < 0x80                 ? 1
                   : c >= 0xC2 && c <= 0xDF ? 2
                   : c >= 0xE0 && c <= 0xEF ? 3
                   : c >= 0xF0 && c <= 0xF4 ? 4
                                            : 0;
        if (!n || i + n > len)
            return 0;
        unsigned char lo = c == 0xE0 ? 0xA0 : c == 0xF0 ? 0x90 : 0x80, hi = c == 0xED ? 0x9F : c == 0xF4 ? 0x8F : 0xBF;
        if (n > 1 && (s[i + 1] < lo || s[i + 1] > hi))
            return 0;
        for (size_t k = 2; k < n; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xBF)
                return 0;
        i += n;
    }
    return 1;
}

/* A text message of valid UTF-8 that must be cut is cut between characters, never inside one: the record stays
 * valid UTF-8, whichever record call wrote it and wherever the room ends (every offset of 2-, 3- and 4-byte
 * characters), and the kept bytes and the count still add up to the message. */
Test(core, text_truncation_never_splits_a_utf8_character)
{
    static const char *const chars[] = {"\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80"};
    struct forklog_options o = {.max_record = 300};
    for (size_t c = 0; c < sizeof chars / sizeof *chars; c++)
        for (size_t pad = 0; pad < 4; pad++)
            for (int call = 0; call < 3; call++) {
                char msg[2000];
                size_t n = pad, cl = strlen(chars[c]);
                memset(msg, 'a', pad);
                while (n + cl < sizeof msg) {
                    memcpy(msg + n, chars[c], cl);
                    n += cl;
                }
                msg[n] = '\0';
                forklog *log = open_with(&o);
                struct forklog_field f = FORKLOG_STR("k", "v");
                int rc = call == 0   ? forklog_info(log, "%s", msg)
                         : call == 1 ? forklog_log_at(log, FORKLOG_INFO, "f.c", 7, "fn", "%s", msg)
                                     : forklog_log_fields(log, FORKLOG_INFO, msg, &f, 1);
                forklog_close(log);
                cr_assert_gt(rc, 0, "the message is cut");
                size_t len;
                char *buf = read_log(&len);
                cr_assert_leq(len, 300);
                cr_assert_eq(th_count_lines(buf, len), 1);
                cr_assert(valid_utf8((const unsigned char *)buf, len),
                          "char %zu, %zu bytes before it, call %d: the record is not valid UTF-8: %.*s", c, pad, call,
                          (int)len, buf);
                char *m = strchr(buf, pad ? 'a' : chars[c][0]);
                char *marker = strstr(buf, " [forklog: ");
                cr_assert(m && marker && m < marker);
                cr_assert_eq((size_t)(marker - m) + (size_t)rc, n, "kept %zu + cut %d", (size_t)(marker - m), rc);
                free(buf);
                unlink(logpath);
            }
}

Test(core, large_formatted_record_whole)
{
    forklog *log = open_with(NULL);
    size_t n = 900 * 1024;
    char *msg = malloc(n + 1);
    memset(msg, 'z', n);
    msg[n] = '\0';
    cr_assert_eq(forklog_info(log, "%s", msg), 0);
    forklog_close(log);
    size_t len;
    char *buf = read_log(&len);
    cr_assert_eq(th_count_lines(buf, len), 1);
    char *m = strchr(buf, 'z');
    cr_assert_eq(strspn(m, "z"), n);
    free(buf);
    free(msg);
}

/* ---- bad input: each returns its negative errno and writes nothing ---- */

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
static int vlog_null_format(forklog *log, ...)
{
    va_list ap;
    va_start(ap, log);
    const char *fmt = NULL; /* through a variable: the point is the run-time check */
    int rc = forklog_vlog(log, FORKLOG_INFO, fmt, ap);
    va_end(ap);
    return rc;
}
#pragma GCC diagnostic pop

Test(core, bad_input_null_and_empty)
{
    forklog *log = (forklog *)0x1;
    cr_assert_eq(forklog_open(NULL, logpath, NULL), -EINVAL);
    cr_assert_eq(forklog_open(&log, NULL, NULL), -EINVAL);
    cr_assert_null(log);
    cr_assert_eq(forklog_open(&log, "", NULL), -EINVAL);
    /* Each refusal says what it refused. */
    char why[128];
    const struct forklog_options o = {.error = why, .error_size = sizeof why};
    cr_assert_eq(forklog_open(NULL, logpath, &o), -EINVAL);
    cr_assert_str_eq(why, "out is NULL");
    cr_assert_eq(forklog_open(&log, NULL, &o), -EINVAL);
    cr_assert_str_eq(why, "the path is NULL");
    cr_assert_eq(forklog_open(&log, "", &o), -EINVAL);
    cr_assert_str_eq(why, "the path is empty");
    struct stat st;
    cr_assert_eq(stat(logpath, &st), -1, "nothing may be created");
    cr_assert_eq(forklog_write(NULL, "x", 1), -EINVAL);
    cr_assert_eq(forklog_log(NULL, FORKLOG_INFO, "x"), -EINVAL);
    cr_assert_eq(forklog_flush(NULL), -EINVAL);
    cr_assert_eq(forklog_reopen(NULL), -EINVAL);
    cr_assert_eq(forklog_close(NULL), 0);

    log = open_with(NULL);
    cr_assert_eq(forklog_write(log, "keep", 4), 0);
    cr_assert_eq(forklog_write(log, NULL, 5), -EINVAL);
    cr_assert_eq(vlog_null_format(log), -EINVAL);
    cr_assert_eq(forklog_log(log, (enum forklog_level)0, "x"), -EINVAL);
    cr_assert_eq(forklog_log(log, (enum forklog_level)5, "x"), -EINVAL);
    cr_assert_eq(forklog_log(log, (enum forklog_level) - 1, "x"), -EINVAL);
    /* An encoding error in vsnprintf: a lone UTF-16 surrogate has no multibyte form in any locale. */
    static const wchar_t surrogate[] = {0xd800, 0};
    cr_assert_eq(forklog_log(log, FORKLOG_INFO, "%ls", surrogate), -EINVAL);
    cr_assert_eq(forklog_log(log, FORKLOG_ERROR, "before %lc after", (wint_t)0xd800), -EINVAL);
    cr_assert_eq(forklog_get_level(NULL), -EINVAL);
    forklog_close(log);
    size_t len;
    char *buf = read_log(&len);
    cr_assert_str_eq(buf, "keep\n");
    free(buf);
}

Test(core, bad_paths)
{
    forklog *log;
    cr_assert_eq(forklog_open(&log, dir, NULL), -EISDIR);
    cr_assert_null(log);
    char *missing = th_path(dir, "no/such/dir/x.log");
    cr_assert_eq(forklog_open(&log, missing, NULL), -ENOENT);
    free(missing);
    char *notdir = th_path(dir, "test.log/x.log");
    int fd = open(logpath, O_WRONLY | O_CREAT, 0644);
    close(fd);
    cr_assert_eq(forklog_open(&log, notdir, NULL), -ENOTDIR);
    free(notdir);
    char *loop = th_path(dir, "loop.log");
    cr_assert_eq(symlink(loop, loop), 0);
    cr_assert_eq(forklog_open(&log, loop, NULL), -ELOOP);
    cr_assert_null(log);
    free(loop);
    char *slash = th_path(dir, "new.log/");
    cr_assert_eq(forklog_open(&log, slash, NULL), -EISDIR);
    cr_assert_null(log);
    free(slash);
    size_t len;
    char *buf = read_log(&len);
    cr_assert_eq(len, 0);
    free(buf);
    /* Nothing else was created: no other file, no segment file beside the log. */
    cr_assert_eq(unlink(logpath), 0);
    char *link = th_path(dir, "loop.log");
    cr_assert_eq(unlink(link), 0);
    free(link);
    cr_assert(dir_is_empty(dir), "a refused open left a file behind");
}

/* A log on a read-only file system: -EROFS, an existing file left as it was, and nothing created beside it. */
Test(core, read_only_file_system_is_erofs)
{
    char *small = th_small_fs(dir, "size=64k");
    if (!small)
        cr_skip_test("no mount namespace of its own here (needs root)");
    char *path = th_path(small, "ro.log");
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, "before\n", 7), 7);
    close(fd);
    cr_assert_eq(mount(NULL, small, NULL, MS_REMOUNT | MS_RDONLY, NULL), 0, "remount: %s", strerror(errno));
    forklog *log = (forklog *)0x1;
    char why[256];
    struct forklog_options o = {.error = why, .error_size = sizeof why};
    cr_assert_eq(forklog_open(&log, path, &o), -EROFS);
    cr_assert_null(log);
    char *fresh = th_path(small, "new.log");
    cr_assert_eq(forklog_open(&log, fresh, NULL), -EROFS);
    cr_assert_null(log);
    struct forklog_options p = {.flags = FORKLOG_PRIVATE};
    cr_assert_eq(forklog_open(&log, path, &p), -EROFS);
    size_t len;
    char *buf = th_slurp(path, &len);
    cr_assert_str_eq(buf, "before\n");
    free(buf);
    DIR *d = opendir(small);
    cr_assert_not_null(d);
    for (struct dirent *e; (e = readdir(d));)
        cr_assert(!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") || !strcmp(e->d_name, "ro.log"),
                  "%s was created on a read-only file system", e->d_name);
    closedir(d);
    cr_assert_eq(umount(small), 0);
    free(fresh);
    free(path);
    free(small);
}

Test(core, unwritable_file_is_eacces)
{
    /* Root passes permission checks, so the check runs in a child that drops to an unprivileged user. */
    int fd = open(logpath, O_WRONLY | O_CREAT, 0444);
    cr_assert_eq(write(fd, "ro\n", 3), 3);
    close(fd);
    chmod(logpath, 0444);
    chmod(dir, 0755);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        if (geteuid() == 0) {
            struct passwd *pw = getpwnam("nobody");
            uid_t uid = pw ? pw->pw_uid : 65534;
            if (setgid(uid) != 0 || setuid(uid) != 0)
                _exit(90);
        }
        forklog *log;
        int rc = forklog_open(&log, logpath, NULL);
        _exit(rc == -EACCES && log == NULL ? 0 : 1);
    }
    cr_assert_eq(th_wait(pid), 0, "expected -EACCES for a read-only file");
    size_t len;
    char *buf = read_log(&len);
    cr_assert_str_eq(buf, "ro\n");
    free(buf);
}

Test(core, invalid_options)
{
    char name65[66], name64[65];
    memset(name65, 'n', 65);
    name65[65] = '\0';
    memcpy(name64, name65, 64);
    name64[64] = '\0';
    struct forklog_field ctx65[FORKLOG_MAX_FIELDS + 1];
    char keys[FORKLOG_MAX_FIELDS + 1][8];
    for (int i = 0; i <= FORKLOG_MAX_FIELDS; i++) {
        snprintf(keys[i], sizeof keys[i], "k%d", i);
        ctx65[i] = FORKLOG_INT(keys[i], i);
    }
    const struct forklog_options bad[] = {
        {.level = (enum forklog_level)9},
        {.format = (enum forklog_format)7},
        {.mode = 010000},
        {.flags = 1u << 20},
        {.max_record = 255},
        {.max_record = ((size_t)1 << 30) + 1},
        {.rotate_keep = 1001},
        {.flags = FORKLOG_BUFFERED, .buffer_size = 100},
        {.buffer_size = ((size_t)1 << 30) + 1},
        {.keys = (enum forklog_keys)2},
        {.name = name65},
        {.context = NULL, .ncontext = 1},
        {.context = ctx65, .ncontext = FORKLOG_MAX_FIELDS + 1},
        /* Each option valid alone, but the prefix they make (233 bytes) leaves no 64 bytes for a message. */
        {.max_record = 256, .format = FORKLOG_FORMAT_JSON, .keys = FORKLOG_KEYS_ECS, .name = name64},
    };
    /* The option each explanation must name. */
    static const char *const named[] = {"level",      "format",      "mode",        "flags",       "max_record",
                                        "max_record", "rotate_keep", "buffer_size", "buffer_size", "keys",
                                        "name",       "context",     "context",     "max_record"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        forklog *log = (forklog *)0x1;
        char why[256] = "stale";
        struct forklog_options o = bad[i];
        o.error = why;
        o.error_size = sizeof why;
        cr_assert_eq(forklog_open(&log, logpath, &o), -EINVAL, "options #%zu", i);
        cr_assert_null(log);
        cr_assert(strncmp(why, named[i], strlen(named[i])) == 0, "options #%zu: \"%s\" does not name %s", i, why,
                  named[i]);
        log = (forklog *)0x1;
        cr_assert_eq(forklog_open(&log, logpath, &bad[i]), -EINVAL, "options #%zu without error", i);
    }
    cr_assert_eq(sizeof named / sizeof named[0], sizeof bad / sizeof bad[0]);
    cr_assert(dir_is_empty(dir), "invalid options must create nothing, neither the file nor its segment file");
}

Test(core, mode_under_umask)
{
    mode_t old = umask(027);
    struct forklog_options o = {.mode = 0666};
    forklog *log = open_with(&o);
    umask(old);
    forklog_close(log);
    struct stat st;
    cr_assert_eq(stat(logpath, &st), 0);
    cr_assert_eq(st.st_mode & 07777, 0640);
}

Test(core, descriptor_is_cloexec_and_sync_flag_works)
{
    struct forklog_options o = {.flags = FORKLOG_SYNC};
    forklog *log = open_with(&o);
    cr_assert_eq(forklog_write(log, "synced", 6), 0);
    /* Find the log descriptor among the low ones (the open's own short-lived descriptors may leave a free number
     * below it) and check FD_CLOEXEC. */
    int probe = open("/dev/null", O_RDONLY);
    int found = 0;
    for (int fd = 3; fd < probe + 16; fd++) {
        char link[64], target[4096];
        snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
        ssize_t n = readlink(link, target, sizeof target - 1);
        if (n > 0 && (target[n] = '\0', strcmp(target, logpath) == 0)) {
            cr_assert(fcntl(fd, F_GETFD) & FD_CLOEXEC);
            cr_assert(fcntl(fd, F_GETFL) & O_APPEND);
            found = 1;
        }
    }
    close(probe);
    cr_assert(found);
    forklog_close(log);
    size_t len;
    char *buf = read_log(&len);
    cr_assert_str_eq(buf, "synced\n");
    free(buf);
}

Test(core, relative_path_survives_chdir_in_child)
{
    char cwd[4096];
    cr_assert_not_null(getcwd(cwd, sizeof cwd));
    cr_assert_eq(chdir(dir), 0);
    forklog *log;
    cr_assert_eq(forklog_open(&log, "rel.log", NULL), 0);
    cr_assert_eq(chdir("/"), 0);
    cr_assert_eq(forklog_reopen(log), 0); /* the reopen must find dir/rel.log, not /rel.log */
    cr_assert_eq(forklog_write(log, "after", 5), 0);
    forklog_close(log);
    cr_assert_eq(chdir(cwd), 0);
    char *rel = th_path(dir, "rel.log");
    size_t len;
    char *buf = th_slurp(rel, &len);
    cr_assert_not_null(buf);
    cr_assert_str_eq(buf, "after\n");
    free(buf);
    free(rel);
}

Test(core, children_inherit_the_handle)
{
    forklog *log = open_with(NULL);
    cr_assert_eq(forklog_info(log, "parent before fork"), 0); /* caches the parent's pid */
    enum { N = 4 };
    pid_t pids[N];
    for (int i = 0; i < N; i++) {
        pids[i] = fork();
        cr_assert_neq(pids[i], -1);
        if (pids[i] == 0) {
            int bad = 0;
            for (int k = 0; k < 100; k++)
                bad |= forklog_info(log, "child %d rec %d", i, k) != 0;
            bad |= forklog_close(log) != 0;
            _exit(bad);
        }
    }
    for (int i = 0; i < N; i++)
        cr_assert_eq(th_wait(pids[i]), 0);
    cr_assert_eq(forklog_info(log, "parent done"), 0);
    cr_assert_eq(forklog_close(log), 0);
    size_t len;
    char *buf = read_log(&len);
    cr_assert_eq(th_count_lines(buf, len), N * 100 + 2);
    for (int i = 0; i < N; i++) {
        /* Each child's records carry its own pid, never the parent's cached one. */
        char needle[64];
        snprintf(needle, sizeof needle, " INFO pid=%ld child %d rec 99\n", (long)pids[i], i);
        cr_assert_not_null(strstr(buf, needle), "missing: %s", needle);
    }
    char parent[64];
    snprintf(parent, sizeof parent, " INFO pid=%ld parent done\n", (long)getpid());
    cr_assert_not_null(strstr(buf, parent));
    free(buf);
}

Test(core, buffered_records_reach_the_file)
{
    struct forklog_options o = {.flags = FORKLOG_BUFFERED, .buffer_size = 4096, .flush_ms = 60000};
    forklog *log = open_with(&o);
    cr_assert_eq(forklog_write(log, "one", 3), 0);
    size_t len;
    char *buf = th_slurp(logpath, &len);
    cr_assert_eq(len, 0, "buffered, not yet written");
    free(buf);
    cr_assert_eq(forklog_flush(log), 0);
    buf = read_log(&len);
    cr_assert_str_eq(buf, "one\n");
    free(buf);
    /* A full buffer is written out whole; a record larger than the buffer goes straight to the file. */
    char rec[100];
    memset(rec, 'r', sizeof rec);
    for (int i = 0; i < 100; i++)
        cr_assert_eq(forklog_write(log, rec, sizeof rec), 0);
    char big[5000];
    memset(big, 'B', sizeof big);
    cr_assert_eq(forklog_write(log, big, sizeof big), 0);
    cr_assert_eq(forklog_write(log, "last", 4), 0);
    cr_assert_eq(forklog_close(log), 0);
    buf = read_log(&len);
    cr_assert_eq(len, 4 + 100 * 101 + 5001 + 5);
    cr_assert_eq(th_count_lines(buf, len), 103);
    cr_assert_eq(memcmp(buf + len - 5, "last\n", 5), 0);
    cr_assert_eq(buf[4 + 100 * 101], 'B', "order kept: the big record after the hundred small ones");
    free(buf);
}

Test(core, buffered_age_bound_flushes_on_next_call)
{
    struct forklog_options o = {.flags = FORKLOG_BUFFERED, .flush_ms = 20};
    forklog *log = open_with(&o);
    cr_assert_eq(forklog_write(log, "a", 1), 0);
    usleep(50 * 1000);
    cr_assert_eq(forklog_write(log, "b", 1), 0);
    size_t len;
    char *buf = read_log(&len);
    cr_assert_str_eq(buf, "a\nb\n", "the call after the bound writes out every buffered record");
    free(buf);
    forklog_close(log);
}

/* A call that the level filters out stays one comparison: it does not look at the buffer's age. */
Test(core, buffered_age_bound_is_checked_by_calls_that_write_not_by_filtered_ones)
{
    struct forklog_options o = {.flags = FORKLOG_BUFFERED, .flush_ms = 20, .level = FORKLOG_WARN};
    forklog *log = open_with(&o);
    cr_assert_eq(forklog_write(log, "a", 1), 0);
    usleep(50 * 1000);
    cr_assert_eq(forklog_info(log, "filtered"), 0);
    size_t len;
    char *buf = read_log(&len);
    cr_assert_eq(len, 0, "a filtered call flushed");
    free(buf);
    cr_assert_eq(forklog_write(log, "b", 1), 0);
    buf = read_log(&len);
    cr_assert_str_eq(buf, "a\nb\n");
    free(buf);
    forklog_close(log);
}

Test(core, buffered_records_survive_writer_death)
{
    struct forklog_options o = {.flags = FORKLOG_BUFFERED, .flush_ms = 60000};
    forklog *log = open_with(&o);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        int bad = forklog_write(log, "from the dead", 13) != 0;
        if (bad)
            _exit(1);
        raise(SIGKILL);
        _exit(2);
    }
    cr_assert_eq(th_wait(pid), 128 + SIGKILL);
    cr_assert_eq(forklog_close(log), 0);
    size_t len;
    char *buf = read_log(&len);
    cr_assert_str_eq(buf, "from the dead\n");
    free(buf);
}

/* The number of the descriptor that names `path` in this process, -1 if none (or more than one). */
static int fd_of(const char *path)
{
    int found = -1, count = 0;
    char link[64], target[4096];
    for (int fd = 0; fd < 1024; fd++) {
        snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
        ssize_t n = readlink(link, target, sizeof target - 1);
        if (n > 0 && (target[n] = '\0', strcmp(target, path) == 0))
            found = fd, count++;
    }
    return count == 1 ? found : -1;
}

Test(core, each_process_writes_through_its_own_open_file_description)
{
    forklog *log = open_with(NULL);
    /* The log's descriptor (the segment file beside it has one too). */
    int inherited = fd_of(logpath);
    cr_assert_geq(inherited, 0, "no descriptor of the log");
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        if (forklog_write(log, "child", 5) != 0)
            _exit(1);
        /* One descriptor of the log is open, under the inherited number (a fork by another thread at any moment
         * must find an open descriptor there), O_APPEND and close-on-exec, and its file position is its own
         * (kcmp-free check: the parent's description stays at 0 below). */
        if (fd_of(logpath) != inherited)
            _exit(2);
        if (!(fcntl(inherited, F_GETFD) & FD_CLOEXEC) || !(fcntl(inherited, F_GETFL) & O_APPEND))
            _exit(3);
        _exit(0);
    }
    cr_assert_eq(th_wait(pid), 0);
    /* The parent still writes through the descriptor it opened; its position was never moved by the child. */
    cr_assert_eq(lseek(inherited, 0, SEEK_CUR), 0);
    cr_assert_eq(forklog_write(log, "parent", 6), 0);
    forklog_close(log);
    size_t len;
    char *buf = read_log(&len);
    cr_assert_str_eq(buf, "child\nparent\n");
    free(buf);
}

Test(core, a_reopen_keeps_the_descriptor_number)
{
    /* The log's descriptor keeps its number when the log moves to another file (a fork by another thread at any
     * moment copies the descriptor table and the handle apart: both must agree on an open descriptor). */
    forklog *log = open_with(NULL);
    cr_assert_eq(forklog_write(log, "a", 1), 0);
    int before = fd_of(logpath);
    cr_assert_geq(before, 0);
    char *moved = th_path(dir, "moved.log");
    cr_assert_eq(rename(logpath, moved), 0);
    cr_assert_eq(forklog_reopen(log), 0);
    cr_assert_eq(forklog_write(log, "b", 1), 0);
    cr_assert_eq(fd_of(logpath), before, "the log's new file is not under the old number");
    cr_assert_eq(fd_of(moved), -1, "the old file is still open");
    cr_assert(fcntl(before, F_GETFD) & FD_CLOEXEC);
    cr_assert(fcntl(before, F_GETFL) & O_APPEND);
    cr_assert_eq(forklog_close(log), 0);
    size_t len;
    char *buf = th_slurp(moved, &len);
    cr_assert_str_eq(buf, "a\n");
    free(buf);
    buf = th_slurp(logpath, &len);
    cr_assert_str_eq(buf, "b\n");
    free(buf);
    free(moved);
}
