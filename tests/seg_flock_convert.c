/* SPDX-License-Identifier: MIT */
/* "Taking the exclusive lock and moving to the shared one is not atomic" (docs/design.md, "Life cycle"): flock(2)
 * drops the builder's exclusive lock before it grants the shared one, and another opener that tries the exclusive
 * lock in that moment gets it, finds itself alone, and builds the segment again; it may even write, close as the
 * last user and remove the file. The first builder must then not go on with the segment it mapped: a segment
 * nobody else can find is a lock nobody else takes, and its idea of where the file ends goes stale.
 *
 * Here the builder A moves to the shared lock after B has opened, written and closed (removing the segment file);
 * C then opens the log (a new segment file), writes three records and closes; A's next record fails (RLIMIT_FSIZE)
 * and A cuts the file back to the end of the last whole record it knows of: with A on the removed segment, that
 * cut took C's three acknowledged records.
 *
 * The window is a few instructions of the kernel's; flock() is wrapped at link time (-Wl,--wrap=flock, the library
 * linked statically) so that the builder's move to the shared lock does what the kernel does, unlock then lock, with
 * B's whole open and close in between. Not a Criterion program: the wrapper must be the process's own. Exit 0, or 1
 * with the reason. */
#include <forklog.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

int __real_flock(int fd, int op);
int __wrap_flock(int fd, int op);

/* In the builder: the pipe that says "exclusive lock dropped", and the one it waits on before the shared lock. */
static int widen = -1, resume = -1;

int __wrap_flock(int fd, int op)
{
    if (op == LOCK_SH && widen >= 0) {
        int rc = __real_flock(fd, LOCK_UN); /* what flock(2) does first when it converts a lock */
        char c = 0;
        if (rc < 0 || write(widen, &c, 1) != 1 || read(resume, &c, 1) != 1)
            _exit(3);
        widen = -1;
    }
    return __real_flock(fd, op);
}

static int fail(const char *why)
{
    fprintf(stderr, "FAIL seg_flock_convert: %s\n", why);
    return 1;
}

/* Opens path, writes n records tagged `tag`, closes; exits 0 when every call returned 0. */
static void writer(const char *path, const char *tag, int n)
{
    forklog *log;
    int rc = forklog_open(&log, path, NULL);
    for (int i = 0; i < n && rc == 0; i++)
        rc = forklog_info(log, "%s record %d", tag, i);
    int rc2 = rc == 0 ? forklog_close(log) : 0;
    _exit(rc == 0 && rc2 == 0 ? 0 : 2);
}

static int count(const char *path, const char *what)
{
    char line[512];
    int n = 0;
    FILE *f = fopen(path, "r");
    while (f && fgets(line, sizeof line, f))
        n += strstr(line, what) != NULL;
    if (f)
        fclose(f);
    return n;
}

static int exited_0(pid_t pid)
{
    int st;
    return waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

int main(void)
{
    char dir[] = "/tmp/forklog-convert-XXXXXX", path[80], seg[96];
    if (!mkdtemp(dir))
        return fail("mkdtemp");
    snprintf(path, sizeof path, "%s/a.log", dir);
    snprintf(seg, sizeof seg, "%s/.a.log.forklog", dir);
    int down[2], up[2];
    if (pipe(down) < 0 || pipe(up) < 0)
        return fail("pipe");
    char c = 0;

    /* A: alone, so it builds; stopped between dropping the exclusive lock and taking the shared one. Once open, it
     * waits for C, then writes a record that its RLIMIT_FSIZE fails. */
    pid_t a = fork();
    if (a == 0) {
        widen = up[1];
        resume = down[0];
        forklog *log;
        int rc = forklog_open(&log, path, NULL);
        if (rc < 0 || write(up[1], &c, 1) != 1 || read(down[0], &c, 1) != 1)
            _exit(2);
        struct stat st;
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl;
        if (stat(path, &st) < 0 || getrlimit(RLIMIT_FSIZE, &rl) < 0)
            _exit(2);
        rl.rlim_cur = (rlim_t)st.st_size + 10;
        if (setrlimit(RLIMIT_FSIZE, &rl) < 0)
            _exit(2);
        rc = forklog_info(log, "A record that does not fit the limit");
        forklog_close(log);
        _exit(rc == -EFBIG ? 0 : 2);
    }
    if (read(up[0], &c, 1) != 1)
        return fail("A never reached its shared lock");
    /* B finds nobody holding the segment: builds it again, writes, closes as its last user, removes it. */
    pid_t b = fork();
    if (b == 0)
        writer(path, "B", 1);
    if (!exited_0(b))
        return fail("B failed");
    if (write(down[1], &c, 1) != 1 || read(up[0], &c, 1) != 1)
        return fail("A could not open the log");
    /* C opens the log while A holds it open. */
    pid_t cpid = fork();
    if (cpid == 0)
        writer(path, "C", 3);
    if (!exited_0(cpid))
        return fail("C failed");
    int before = count(path, "C record");
    if (write(down[1], &c, 1) != 1)
        return fail("write");
    if (!exited_0(a))
        return fail("A's record past its RLIMIT_FSIZE did not fail with -EFBIG");
    int after = count(path, "C record");
    if (before != 3 || after != 3) {
        fprintf(stderr, "C's acknowledged records in the log: %d after C closed, %d after A's failed write\n", before,
                after);
        return fail("a failed write of another process cut acknowledged records");
    }
    if (count(path, "B record") != 1)
        return fail("B's record is missing");
    if (access(seg, F_OK) == 0)
        return fail("the segment file stayed");
    unlink(path);
    rmdir(dir);
    return 0;
}
