/* SPDX-License-Identifier: MIT */
/* Run-time checks for builds the Criterion suite does not run: a 32-bit program (-m32), with a 32-bit time_t or
 * with _TIME_BITS=64, built with every source of lib/ and its crash points (tests/build_matrix.sh builds and runs
 * it; Criterion itself cannot be linked there). Usage: abi32_check TEST DIR; exit status 0 when it holds.
 *   time:  FORKLOG_TIME of a double is written as the time it is, after January 2038 and clamped at the years
 *          0000 .. 9999, whatever the caller's time_t.
 *   clock: each record's timestamp is the clock's, run with tests/y2038_shim.c preloaded (the wall clock 20 years
 *          ahead, its 32-bit clock_gettime() failing with EOVERFLOW as glibc's does then).
 *   wait:  a writer waiting for a lock whose holder is stopped sleeps in bounded waits: it uses almost no CPU.
 *   bound: a field of 11 MB given 64 times (one key: the record has it once) fits a max_record of 32 MiB and is
 *          written, although six times its bytes 64 times over pass 4 GiB, where a 32-bit size_t wraps. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "forklog.h"
/* Last (for the crash points): lib/internal.h asks for a 64-bit time_t, too late here on purpose, so that this
 * file is a caller with the time_t its build gives it. */
#include "internal.h"

static int fails;
#define FAIL(...) (fprintf(stderr, "FAIL: " __VA_ARGS__), fputc('\n', stderr), fails++)

static char *read_all(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static forklog *open_log(const char *dir, const char *name, char *path, size_t size)
{
    snprintf(path, size, "%s/%s", dir, name);
    unlink(path);
    forklog *log = NULL;
    int rc = forklog_open(&log, path, NULL);
    if (rc < 0) {
        FAIL("forklog_open(%s): %s", path, strerror(-rc));
        exit(1);
    }
    return log;
}

static void check_time(const char *dir)
{
    char path[4096];
    forklog *log = open_log(dir, "time.log", path, sizeof path);
    forklog_info_kv(log, "t", FORKLOG_TIME("a", 2208988800.5), FORKLOG_TIME("b", 4102444800.0), FORKLOG_TIME("c", 1e18),
                    FORKLOG_TIME("d", -1e18), FORKLOG_TIME("e", -1.25));
    forklog_close(log);
    const char *want = " t a=2040-01-01T00:00:00.500000Z b=2100-01-01T00:00:00.000000Z c=9999-12-31T23:59:59.999999Z "
                       "d=0000-01-01T00:00:00.000000Z e=1969-12-31T23:59:58.750000Z\n";
    const char *got = read_all(path);
    if (!got || !strstr(got, want))
        FAIL("FORKLOG_TIME with a %zu-bit time_t:\n  got  %s  want ...%s", sizeof(time_t) * 8, got ? got : "", want);
}

static void check_clock(const char *dir)
{
    char path[4096];
    forklog *log = open_log(dir, "clock.log", path, sizeof path);
    forklog_info(log, "r");
    forklog_close(log);
    const char *got = read_all(path);
    /* The shim runs the wall clock 631152000 s (20 years) ahead: the record is from 2044 at least. */
    int year = got ? atoi(got) : 0;
    if (year < 2044 || year > 2099)
        FAIL("a record written in 2044 or later has the timestamp %.27s", got ? got : "(none)");
}

static void check_bound(const char *dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/bound.log", dir);
    unlink(path);
    forklog *log = NULL;
    struct forklog_options o = {.max_record = 32u << 20};
    if (forklog_open(&log, path, &o) < 0) {
        FAIL("forklog_open(%s)", path);
        return;
    }
    /* 384 times len (6 times, 64 fields) is 2^32 + 128. */
    const size_t len = 11184811;
    char *v = malloc(len + 1);
    if (!v) {
        FAIL("no memory");
        return;
    }
    memset(v, 'v', len);
    v[len] = '\0';
    struct forklog_field f[64];
    for (int k = 0; k < 64; k++)
        f[k] = FORKLOG_STR("k", v);
    int rc = forklog_log_fields(log, FORKLOG_INFO, "m", f, 64);
    forklog_close(log);
    free(v);
    struct stat st = {0};
    if (rc != 0 || stat(path, &st) < 0 || (size_t)st.st_size < len)
        FAIL("a record with a field of %zu bytes and a max_record of 32 MiB: rc %d, %lld bytes in the file", len, rc,
             (long long)st.st_size);
    unlink(path);
}

static long cpu_ticks(pid_t pid)
{
    char p[64], buf[1024];
    snprintf(p, sizeof p, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(p, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *c = strrchr(buf, ')');
    unsigned long ut = 0, st = 0;
    /* After the command name: state, then utime and stime are the 12th and 13th numbers. */
    if (!c || sscanf(c + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    return (long)(ut + st);
}

static void check_wait(const char *dir)
{
    char path[4096];
    forklog *log = open_log(dir, "wait.log", path, sizeof path);
    pid_t holder = fork();
    if (holder == 0) {
        fl__crash_arm(FL__CP_LOCK_HELD, 1, FL__CRASH_STOP);
        _exit(forklog_write(log, "holder", 6) == 0 ? 0 : 1);
    }
    int st;
    waitpid(holder, &st, WUNTRACED);
    pid_t waiter = fork();
    if (waiter == 0)
        _exit(forklog_write(log, "waiter", 6) == 0 ? 0 : 1);
    usleep(200000);
    long t0 = cpu_ticks(waiter);
    sleep(2);
    long t1 = cpu_ticks(waiter);
    long hz = sysconf(_SC_CLK_TCK);
    if (t0 < 0 || t1 < 0 || t1 - t0 > hz / 5)
        FAIL("a writer waiting 2 s for a stopped holder's lock used %.2f s of CPU (it should sleep)",
             (double)(t1 - t0) / (double)hz);
    kill(holder, SIGCONT);
    waitpid(holder, &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st))
        FAIL("holder status %#x", st);
    waitpid(waiter, &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st))
        FAIL("waiter status %#x", st);
    forklog_close(log);
    const char *got = read_all(path);
    if (!got || strcmp(got, "holder\nwaiter\n") != 0)
        FAIL("wait.log holds: %s", got ? got : "(nothing)");
}

int main(int argc, char **argv)
{
    if (argc != 3)
        return 2;
    if (!strcmp(argv[1], "time"))
        check_time(argv[2]);
    else if (!strcmp(argv[1], "clock"))
        check_clock(argv[2]);
    else if (!strcmp(argv[1], "wait"))
        check_wait(argv[2]);
    else if (!strcmp(argv[1], "bound"))
        check_bound(argv[2]);
    else
        return 2;
    return fails != 0;
}
