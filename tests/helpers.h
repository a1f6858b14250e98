/* SPDX-License-Identifier: MIT */
/* Helpers shared by the Criterion tests. Children never call cr_assert: they report through their exit
 * status, and the parent asserts. */
#ifndef FORKLOG_TEST_HELPERS_H
#define FORKLOG_TEST_HELPERS_H

#include <criterion/criterion.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* 1 in a build with AddressSanitizer or ThreadSanitizer: freed memory is kept in quarantine (resident memory tells
 * nothing), mlockall() does nothing, and the leak check cannot run in a process that changed its user. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define TH_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define TH_SANITIZED 1
#endif
#endif
#ifndef TH_SANITIZED
#define TH_SANITIZED 0
#endif

/* A fresh directory per test (Criterion runs tests in parallel). The caller frees the result. */
static inline char *th_tmpdir(void)
{
    char tmpl[] = "/tmp/forklog-test-XXXXXX";
    char *dir = mkdtemp(tmpl);
    cr_assert_not_null(dir, "mkdtemp: %s", strerror(errno));
    return strdup(dir);
}

/* dir + "/" + name, malloc'd. */
static inline char *th_path(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    cr_assert_not_null(p);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

/* The whole file, NUL-terminated; *len gets its size. Returns NULL (len 0) if it does not exist. */
static inline char *th_slurp(const char *path, size_t *len)
{
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    struct stat st;
    cr_assert_eq(fstat(fd, &st), 0);
    char *buf = malloc((size_t)st.st_size + 1);
    cr_assert_not_null(buf);
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
        cr_assert(n > 0, "read: %s", strerror(errno));
        got += (size_t)n;
    }
    close(fd);
    buf[got] = '\0';
    *len = got;
    return buf;
}

/* Number of '\n' in buf[0..len). */
static inline size_t th_count_lines(const char *buf, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += buf[i] == '\n';
    return n;
}

/* Waits for a child; returns its exit status, or 128 + signal. */
static inline int th_wait(pid_t pid)
{
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* CLOCK_MONOTONIC in seconds. */
/* The bytes this process maps (its address space: the first field of /proc/self/statm, in pages), or 0 when
 * /proc does not say. */
static inline unsigned long long th_mapped_bytes(void)
{
    unsigned long long pages = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f)
        return 0;
    if (fscanf(f, "%llu", &pages) != 1)
        pages = 0;
    fclose(f);
    return pages * (unsigned long long)sysconf(_SC_PAGESIZE);
}

static inline double th_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Waits for a child at most `limit` seconds; a child still running then is killed and reported as -2. Returns its
 * exit status, 128 + signal, or -1. */
static inline int th_wait_for(pid_t pid, double limit)
{
    double end = th_now_s() + limit;
    for (;;) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        if (r < 0 && errno != EINTR)
            return -1;
        if (th_now_s() > end) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            return -2;
        }
        usleep(1000);
    }
}

/* Forks a process that enters a new PID namespace and runs init_main(s, arg) as pid 1 there. Returns the first
 * process's pid: it ends as its pid 1 does (the exit status init_main returned, 128 + N for signal N), with 77 when
 * unshare(CLONE_NEWPID) is not allowed, and kills its pid 1, and so the namespace, when it is killed. Both die with
 * the test's process. */
static inline pid_t th_fork_pid_namespace(int (*init_main)(const char *, int), const char *s, int arg)
{
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (unshare(CLONE_NEWPID) < 0)
            _exit(77);
        pid_t init = fork();
        if (init < 0)
            _exit(2);
        if (init == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            _exit(init_main(s, arg));
        }
        _exit(th_wait_for(init, 60));
    }
    return pid;
}

/* Runs scene(s, arg) as pid 1 of a new PID namespace, where it may choose the pid of its next child
 * (th_next_pid_is), and returns its exit status. Skips the test where no such namespace can be made (77) or its pids
 * cannot be chosen (the scene returns 78). */
static inline int th_pid_namespace_scene(int (*scene)(const char *, int), const char *s, int arg)
{
    int st = th_wait_for(th_fork_pid_namespace(scene, s, arg), 90);
    if (st == 77)
        cr_skip_test("unshare(CLONE_NEWPID) is not allowed here");
    if (st == 78)
        cr_skip_test("the pids of a new PID namespace cannot be chosen here (ns_last_pid)");
    return st;
}

/* Makes the next child of the calling process (in its PID namespace) get pid `want`, if free, through ns_last_pid.
 * 0, or -1 when it cannot be written. */
static inline int th_next_pid_is(pid_t want)
{
    int fd = open("/proc/sys/kernel/ns_last_pid", O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    char num[32];
    int n = snprintf(num, sizeof num, "%d", (int)want - 1);
    int ok = write(fd, num, (size_t)n) == n;
    close(fd);
    return ok ? 0 : -1;
}

/* Removes a test directory and what is in it (one level). A test that mounted a small file system there
 * (th_small_fs) and failed before unmounting it leaves it mounted: it is detached first. */
static inline void th_rmdir(const char *dir)
{
    char *small = th_path(dir, "small");
    umount2(small, MNT_DETACH);
    free(small);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
}

/* A tmpfs of `size` (mount's size= option, such as "128k") mounted at dir/small, in a mount namespace of the calling
 * process's own, so that a file system can be filled without touching the machine's. Returns its path (malloc'd),
 * or NULL where no mount namespace can be had (not root): the test then skips. The namespace ends with the test's
 * process; a test that fails before it unmounts leaves nothing mounted elsewhere. */
static inline char *th_small_fs(const char *dir, const char *size)
{
    /* The source and type of a propagation change are ignored; named all the same (memcheck checks them). */
    if (unshare(CLONE_NEWNS) < 0 || mount("none", "/", "none", MS_REC | MS_PRIVATE, NULL) < 0)
        return NULL;
    char *small = th_path(dir, "small");
    cr_assert_eq(mkdir(small, 0755), 0);
    cr_assert_eq(mount("tmpfs", small, "tmpfs", 0, size), 0, "mount: %s", strerror(errno));
    return small;
}

/* Fills the file system of directory `in` (a file there, written until ENOSPC); returns the file's name, malloc'd. */
static inline char *th_fill_fs(const char *in)
{
    char *filler = th_path(in, "filler");
    int fd = open(filler, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    cr_assert_geq(fd, 0);
    static const char blk[4096];
    while (write(fd, blk, sizeof blk) > 0) {
    }
    while (write(fd, blk, 1) > 0) {
    }
    cr_assert_eq(errno, ENOSPC);
    close(fd);
    return filler;
}

/* fesetround() from libm, which neither the tests nor the library link: looked up at run time (NULL if not found). */
static inline int (*th_fesetround(void))(int)
{
    void *m = dlopen("libm.so.6", RTLD_NOW | RTLD_LOCAL);
    if (!m)
        m = dlopen("libm.so", RTLD_NOW | RTLD_LOCAL);
    void *sym = m ? dlsym(m, "fesetround") : NULL;
    int (*set)(int) = NULL;
    if (sym)
        memcpy(&set, &sym, sizeof set);
    return set;
}

#endif
