/* SPDX-License-Identifier: MIT */
/* "No allocation for a record that fits the stack buffer": records of up to 4 KiB that take the slow path
 * (a message to escape, fields, a message long beside its record) are built without malloc(). Linked statically
 * with -Wl,--wrap=malloc, so that the library's calls of malloc() are counted here. Not a Criterion program
 * (Criterion allocates in the same process). Exit 0, or 1 with the reason. */
#include <forklog.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void *__real_malloc(size_t n);
void *__wrap_malloc(size_t n);
static int counting;
enum { json_ts_len = 35 }; /* {"ts":"YYYY-MM-DDTHH:MM:SS.uuuuuuZ" */
static size_t calls, largest;

void *__wrap_malloc(size_t n)
{
    if (counting) {
        calls++;
        if (n > largest)
            largest = n;
    }
    return __real_malloc(n);
}

static int fail(const char *why)
{
    fprintf(stderr, "FAIL record_no_alloc: %s\n", why);
    return 1;
}

int main(void)
{
    char dir[] = "/tmp/forklog-noalloc-XXXXXX", path[64];
    if (!mkdtemp(dir))
        return fail("mkdtemp");
    snprintf(path, sizeof path, "%s/a.log", dir);
    static char msg[4096];
    size_t sizes[] = {1, 100, 650, 1000, 2000, 3900};
    int nrec = 0;
    for (int json = 0; json <= 1; json++) {
        forklog *log;
        struct forklog_options o = {.format = json ? FORKLOG_FORMAT_JSON : FORKLOG_FORMAT_TEXT};
        if (forklog_open(&log, path, &o) != 0)
            return fail("forklog_open");
        for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
            memset(msg, 'm', sizes[k]);
            msg[0] = '\t'; /* escaped: the slow path */
            msg[sizes[k]] = '\0';
            counting = 1;
            int a = forklog_info_kv(log, msg, FORKLOG_INT("n", 1), FORKLOG_STR("s", "x y"));
            int b = forklog_info(log, "%s", msg);
            counting = 0;
            if (a != 0 || b != 0)
                return fail("a record was cut");
            nrec += 2;
            if (calls) {
                fprintf(stderr, "a %zu-byte message: %zu malloc() calls, the largest %zu bytes\n", sizes[k], calls,
                        largest);
                return fail("a record that fits 4 KiB was built with malloc()");
            }
        }
        if (forklog_close(log) != 0)
            return fail("forklog_close");
    }
    /* Every record whole, each under 4 KiB. */
    FILE *f = fopen(path, "r");
    if (!f)
        return fail("the log is missing");
    static char line[8192];
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        size_t len = strlen(line);
        if (!len || line[len - 1] != '\n' || len > 4096)
            return fail("a record is not one line of at most 4 KiB");
        n++;
    }
    fclose(f);
    unlink(path);
    if (n != nrec)
        return fail("records missing");
    /* A long message with nothing to escape and nothing after it goes out as it is, in one writev(2): no copy,
     * no malloc(), with forklog_log_fields() as with forklog_log()'s "%s". */
    static char big[100001];
    memset(big, 'b', sizeof big - 1);
    for (int json = 0; json <= 1; json++) {
        forklog *log;
        struct forklog_options o = {.format = json ? FORKLOG_FORMAT_JSON : FORKLOG_FORMAT_TEXT};
        if (forklog_open(&log, path, &o) != 0)
            return fail("forklog_open");
        counting = 1;
        int a = forklog_log_fields(log, FORKLOG_INFO, big, NULL, 0);
        int b = forklog_info(log, "%s", big);
        counting = 0;
        if (a != 0 || b != 0 || forklog_close(log) != 0)
            return fail("a long record failed");
        if (calls)
            return fail("a long message with nothing to escape was copied with malloc()");
    }
    /* The two calls wrote the same record (after the timestamp), whole. */
    if (!(f = fopen(path, "r")))
        return fail("the log is missing");
    static char rec[4][100200];
    for (int i = 0; i < 4; i++)
        if (!fgets(rec[i], sizeof rec[i], f) || !strchr(rec[i], '\n') || !strstr(rec[i], big))
            return fail("a long record is not whole");
    fclose(f);
    unlink(path);
    rmdir(dir);
    const size_t ts = json_ts_len;
    for (int i = 0; i < 4; i += 2) {
        size_t skip = i ? ts : 27; /* after the timestamp: text `2026-...Z`, JSON `{"ts":"2026-...Z"` */
        if (strcmp(rec[i] + skip, rec[i + 1] + skip) != 0)
            return fail("forklog_log_fields() and forklog_log(\"%s\") wrote different records");
    }
    printf("record_no_alloc: %d records of up to 4 KiB on the slow path and 4 of 100 KB, no malloc()\n", n);
    return 0;
}
