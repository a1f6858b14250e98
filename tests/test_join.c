/* SPDX-License-Identifier: MIT */
/* Any process joins the log: two forklog_open() calls on the same file, from processes of any ancestry, share one
 * segment (one lock, one file size, one rotation, one buffer), found through the segment file beside the log.
 * The writers here open the log themselves: forked children that inherit no handle, and programs started with
 * posix_spawn (join_writer). Children never assert: they report through their exit status or shared memory. */
#include "points.h"
#include "records.h"

#include <limits.h>
#include <stdarg.h>
#include <spawn.h>
#include <stddef.h>
#include <stdatomic.h>
#include <grp.h>
#include <sys/prctl.h>
#include <sys/file.h>
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/time.h>

extern char **environ;

/* This program's own flock(2), which the library (linked statically) calls instead of the C library's: when armed,
 * the process stops (SIGSTOP) just before its next non-blocking exclusive flock, at the real call of the real code,
 * and goes on when continued. */
static int stop_before_flock_ex;

/* And when armed (fork_when_alone), right after its next non-blocking exclusive flock that succeeds, another thread
 * of the process (forker_main) calls fork(), and the flock returns once the child is made: a program's own fork()
 * while the library holds a segment file alone. The child sleeps, its pid in forked_pid[0]. */
static volatile int fork_when_alone;
static atomic_int fork_asked, fork_made;

static void fork_in_other_thread(void)
{
    atomic_store(&fork_asked, 1);
    while (!atomic_load(&fork_made))
        usleep(100);
}

int flock(int fd, int operation)
{
    if (stop_before_flock_ex && operation == (LOCK_EX | LOCK_NB)) {
        stop_before_flock_ex = 0;
        raise(SIGSTOP);
    }
    int rc = (int)syscall(SYS_flock, fd, operation);
    if (rc == 0 && fork_when_alone && operation == (LOCK_EX | LOCK_NB)) {
        fork_when_alone = 0;
        fork_in_other_thread();
    }
    return rc;
}

static void *forker_main(void *arg)
{
    pid_t *forked_pid = arg;
    while (!atomic_load(&fork_asked))
        usleep(100);
    pid_t pid = fork();
    if (pid == 0) {
        sleep(30); /* the test kills it long before */
        _exit(0);
    }
    forked_pid[0] = pid;
    atomic_store(&fork_made, 1);
    return NULL;
}

/* The same for fchown(2): when armed, the process is SIGKILLed at its next call, before the call is made (a death
 * between the creation of the segment file and giving it to the log's owner). */
static int kill_before_fchown;

int fchown(int fd, uid_t owner, gid_t group)
{
    if (kill_before_fchown)
        raise(SIGKILL);
    return (int)syscall(SYS_fchown, fd, owner, group);
}

/* stat(2) and fstatat(2) as the library sees them (built with 64-bit file offsets: stat64 and fstatat64), as
 * flock above: when armed (flip_seg_name), right after the first lookup of a segment file of that name, the
 * symlinked directory flip_link is pointed at flip_to, atomically, as a deploy does; flipped says it happened. */
static const char *volatile flip_seg_name;
static char flip_link[PATH_MAX], flip_to[64];
static volatile int flipped;

/* Points the symlink `link` at `target`, atomically (a new link renamed over it). */
static int flip_symlink(const char *link, const char *target)
{
    char tmp[PATH_MAX + 8];
    snprintf(tmp, sizeof tmp, "%s.new", link);
    unlink(tmp);
    return symlink(target, tmp) == 0 && rename(tmp, link) == 0 ? 0 : -1;
}

static void flip_after(const char *name)
{
    const char *want = flip_seg_name, *slash = strrchr(name, '/');
    if (!want || strcmp(slash ? slash + 1 : name, want) != 0)
        return;
    flip_seg_name = NULL;
    flipped = flip_symlink(flip_link, flip_to) == 0 ? 1 : -1;
}

/* open(2) and openat(2) as the library sees them, the same way: when armed (flip_log_name), right after the first
 * open of a file of that name for writing, the symlinked directory flip_link is pointed at flip_to. */
static const char *volatile flip_log_name;
/* And when armed (fork_after_rdwr_open), right after the next open for reading and writing that succeeds (the
 * segment file's: the log's are write-only), the fork of fork_when_alone. */
static volatile int fork_after_rdwr_open;

static void flip_after_open(const char *name, int flags)
{
    const char *want = flip_log_name, *slash = strrchr(name, '/');
    if (!want || (flags & O_ACCMODE) != O_WRONLY || strcmp(slash ? slash + 1 : name, want) != 0)
        return;
    flip_log_name = NULL;
    flipped = flip_symlink(flip_link, flip_to) == 0 ? 1 : -1;
}

int open64(const char *name, int flags, ...)
{
    static int (*real)(const char *, int, ...);
    if (!real)
        *(void **)&real = dlsym(RTLD_NEXT, "open64");
    va_list ap;
    va_start(ap, flags);
    mode_t mode = (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE ? (mode_t)va_arg(ap, unsigned) : 0;
    va_end(ap);
    int fd = real(name, flags, mode);
    flip_after_open(name, flags);
    if (fd >= 0 && fork_after_rdwr_open && (flags & O_ACCMODE) == O_RDWR) {
        fork_after_rdwr_open = 0;
        fork_in_other_thread();
    }
    return fd;
}

int openat64(int at, const char *name, int flags, ...)
{
    static int (*real)(int, const char *, int, ...);
    if (!real)
        *(void **)&real = dlsym(RTLD_NEXT, "openat64");
    va_list ap;
    va_start(ap, flags);
    mode_t mode = (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE ? (mode_t)va_arg(ap, unsigned) : 0;
    va_end(ap);
    int fd = real(at, name, flags, mode);
    flip_after_open(name, flags);
    if (fd >= 0 && fork_after_rdwr_open && (flags & O_ACCMODE) == O_RDWR) {
        fork_after_rdwr_open = 0;
        fork_in_other_thread();
    }
    return fd;
}

/* mmap(2) as the library sees it, the same way: when armed (fork_after_seg_map), right after the next shared
 * mapping of a file (the segment file's), the fork of fork_when_alone: a program's own fork() while the library has
 * the segment mapped, its file locked alone. */
static volatile int fork_after_seg_map;

void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off64_t off)
{
    static void *(*real)(void *, size_t, int, int, int, off64_t);
    if (!real)
        *(void **)&real = dlsym(RTLD_NEXT, "mmap64");
    void *m = real(addr, len, prot, flags, fd, off);
    if (m != MAP_FAILED && fork_after_seg_map && (flags & MAP_SHARED) && fd >= 0) {
        fork_after_seg_map = 0;
        fork_in_other_thread();
    }
    return m;
}

int stat64(const char *name, struct stat64 *st)
{
    static int (*real)(const char *, struct stat64 *);
    if (!real)
        *(void **)&real = dlsym(RTLD_NEXT, "stat64");
    int rc = real(name, st);
    flip_after(name);
    return rc;
}

int fstatat64(int at, const char *name, struct stat64 *st, int flags)
{
    static int (*real)(int, const char *, struct stat64 *, int);
    if (!real)
        *(void **)&real = dlsym(RTLD_NEXT, "fstatat64");
    int rc = real(at, name, st, flags);
    flip_after(name);
    return rc;
}

static char *dir, *logpath, *segpath;

static void setup(void)
{
    dir = th_tmpdir();
    logpath = th_path(dir, "join.log");
    segpath = th_path(dir, ".join.log.forklog");
    rc_init();
}

static void teardown(void)
{
    th_rmdir(dir);
    free(logpath);
    free(segpath);
    free(dir);
}

TestSuite(join, .init = setup, .fini = teardown);

/* What each child reports. */
struct report {
    atomic_uint opened;       /* children whose forklog_open() returned */
    atomic_uint go;           /* set by the parent: write, close, exit */
    unsigned long ino[64];    /* the segment file each child mapped */
    unsigned long builds[64]; /* how many times it had been built when the child joined */
    atomic_uint acked[64];    /* records of child k that returned 0 */
};

static struct report *new_report(void)
{
    struct report *r = mmap(NULL, sizeof *r, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(r, MAP_FAILED);
    return r;
}

static int seg_exists(void)
{
    struct stat st;
    return lstat(segpath, &st) == 0;
}

static forklog *open_ok(const struct forklog_options *o)
{
    forklog *log = NULL;
    char why[512] = "";
    struct forklog_options opts = o ? *o : (struct forklog_options){0};
    opts.error = why;
    opts.error_size = sizeof why;
    int rc = forklog_open(&log, logpath, &opts);
    cr_assert_eq(rc, 0, "forklog_open: %s (%s)", strerror(-rc), why);
    return log;
}

/* A forked child that opens the log itself (it inherits no handle), reports, waits for `go` unless nowait, and
 * writes `count` records of `size` bytes as writer `id`. */
static pid_t start_opener(struct report *r, unsigned id, unsigned count, size_t size, unsigned flags, int wait_go)
{
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        rc_child();
        struct forklog_options o = {.flags = flags};
        forklog *log;
        if (forklog_open(&log, logpath, &o) != 0)
            _exit(3);
        struct stat st;
        if (log->seg_fd >= 0 && fstat(log->seg_fd, &st) == 0)
            r->ino[id] = (unsigned long)st.st_ino;
        r->builds[id] = (unsigned long)log->seg->head.builds;
        atomic_fetch_add(&r->opened, 1);
        while (wait_go && !atomic_load(&r->go))
            usleep(200);
        char *buf = malloc(RC_HEAD_MAX + size);
        for (unsigned q = 0; q < count; q++) {
            if (rc_write(log, buf, 'R', id, q, 0, size) != 0)
                _exit(4);
            atomic_store(&r->acked[id], q + 1);
        }
        free(buf);
        _exit(forklog_close(log) == 0 ? 0 : 5);
    }
    return pid;
}

/* Reads the log (and its rotated files up to keep) and checks that writer k wrote exactly records 0 .. want[k]-1,
 * each once. */
static void check_records(unsigned writers, const unsigned *want, unsigned keep)
{
    struct rc_seen seen;
    rc_seen_init(&seen, 64, 4096);
    rc_scan(&seen, logpath, 0);
    for (unsigned k = 1; k <= keep; k++) {
        char name[64];
        snprintf(name, sizeof name, "join.log.%u", k);
        char *p = th_path(dir, name);
        rc_scan(&seen, p, k);
        free(p);
    }
    size_t total = 0;
    for (unsigned id = 0; id < writers; id++) {
        total += want[id];
        for (unsigned q = 0; q < want[id]; q++)
            cr_assert_eq(rc_count(&seen, id, q), 1, "writer %u record %u is there %u times", id, q,
                         rc_count(&seen, id, q));
    }
    cr_assert_eq(seen.records, total, "%zu records in the file(s), %zu written", seen.records, total);
    rc_seen_free(&seen);
}

Test(join, concurrent_first_opens_build_the_segment_once)
{
    enum { N = 8, RECORDS = 300, ROUNDS = 15 };
    for (int round = 0; round < ROUNDS; round++) {
        struct report *r = new_report();
        pid_t pid[N];
        for (unsigned i = 0; i < N; i++)
            pid[i] = start_opener(r, i, RECORDS, 120, 0, 1);
        double end = th_now_s() + 20;
        while (atomic_load(&r->opened) < N && th_now_s() < end)
            usleep(500);
        unsigned opened = atomic_load(&r->opened);
        atomic_store(&r->go, 1);
        for (unsigned i = 0; i < N; i++)
            cr_assert_eq(th_wait_for(pid[i], 20), 0, "round %d: writer %u failed", round, i);
        cr_assert_eq(opened, N, "round %d: only %u of %d opens returned", round, opened, N);
        for (unsigned i = 0; i < N; i++) {
            cr_assert_eq(r->ino[i], r->ino[0], "round %d: writers 0 and %u mapped different segment files", round, i);
            cr_assert_eq(r->builds[i], 1, "round %d: writer %u joined a segment built %lu times", round, i,
                         r->builds[i]);
        }
        unsigned want[N];
        for (unsigned i = 0; i < N; i++)
            want[i] = RECORDS;
        check_records(N, want, 0);
        cr_assert_not(seg_exists(), "round %d: the last close left the segment file", round);
        cr_assert_eq(unlink(logpath), 0);
        munmap(r, sizeof *r);
    }
}

static pid_t spawn_writer(unsigned id, unsigned count, size_t size, const char *mode)
{
    char ids[16], counts[16], sizes[32];
    snprintf(ids, sizeof ids, "%u", id);
    snprintf(counts, sizeof counts, "%u", count);
    snprintf(sizes, sizeof sizes, "%zu", size);
    char *argv[] = {"join_writer", logpath, ids, counts, sizes, (char *)mode, NULL};
    pid_t pid;
    int rc = posix_spawn(&pid, JOIN_WRITER, NULL, NULL, argv, environ);
    cr_assert_eq(rc, 0, "posix_spawn %s: %s", JOIN_WRITER, strerror(rc));
    return pid;
}

Test(join, spawned_programs_forked_children_and_inherited_handles_share_one_lock)
{
    /* The parent's handle, inherited by 3 forked children; 3 forked children that open the log themselves; and 4
     * programs started with posix_spawn. Records up to 64 KiB, so that a write without the lock would tear. */
    forklog *log = open_ok(NULL);
    struct report *r = new_report();
    enum { INHERIT = 3, OPEN = 3, SPAWN = 4, RECORDS = 400 };
    pid_t pid[INHERIT + OPEN + SPAWN];
    unsigned id = 0;
    for (int i = 0; i < INHERIT; i++, id++) {
        pid[id] = fork();
        cr_assert_neq(pid[id], -1);
        if (pid[id] == 0) {
            rc_child();
            char *buf = malloc(RC_HEAD_MAX + 65536);
            unsigned seed = id;
            for (unsigned q = 0; q < RECORDS; q++)
                if (rc_write(log, buf, 'R', id, q, 0, rc_size(&seed, 65536)) != 0)
                    _exit(4);
            _exit(forklog_close(log) == 0 ? 0 : 5);
        }
    }
    for (int i = 0; i < OPEN; i++, id++)
        pid[id] = start_opener(r, id, RECORDS, 40000, 0, 0);
    for (int i = 0; i < SPAWN; i++, id++)
        pid[id] = spawn_writer(id, RECORDS, 50000, "");
    for (unsigned i = 0; i < id; i++) {
        int st = th_wait_for(pid[i], 60);
        cr_assert_eq(st, 0, "writer %u failed: %d", i, st);
    }
    cr_assert_eq(log->seg->head.builds, 1, "every writer joined the parent's segment");
    cr_assert_eq(forklog_close(log), 0);
    unsigned want[INHERIT + OPEN + SPAWN];
    for (unsigned i = 0; i < id; i++)
        want[i] = RECORDS;
    check_records(id, want, 0);
    cr_assert_not(seg_exists());
}

/* `forklog append FILE`, reading its lines from a pipe whose write end goes to *feed. */
static pid_t spawn_cli(int *feed)
{
    int p[2];
    cr_assert_eq(pipe(p), 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, p[0], 0);
    posix_spawn_file_actions_addclose(&fa, p[1]);
    char *argv[] = {"forklog", "append", logpath, NULL};
    pid_t pid;
    int rc = posix_spawn(&pid, FORKLOG_CLI, &fa, NULL, argv, environ);
    cr_assert_eq(rc, 0, "posix_spawn %s: %s", FORKLOG_CLI, strerror(rc));
    posix_spawn_file_actions_destroy(&fa);
    close(p[0]);
    *feed = p[1];
    return pid;
}

/* `forklog append` joins a log whose users chose FORKLOG_BUFFERED: a line it read is in the file while the pipeline
 * waits for its next one (within a few flush intervals), not only at the next line or the end of the input. */
Test(join, the_command_line_tool_writes_out_a_buffered_logs_line_while_its_input_waits)
{
    struct forklog_options o = {.flags = FORKLOG_BUFFERED};
    forklog *app = open_ok(&o);
    cr_assert_eq(forklog_write(app, "the application's record", 24), 0);
    cr_assert_eq(forklog_flush(app), 0);
    int feed;
    pid_t cli = spawn_cli(&feed);
    const char line[] = "a line of a pipeline that then waits\n";
    cr_assert_eq(write(feed, line, sizeof line - 1), (ssize_t)(sizeof line - 1));
    int there = 0;
    for (double until = th_now_s() + 5; !there && th_now_s() < until; usleep(20000)) {
        size_t len;
        char *buf = th_slurp(logpath, &len);
        there = buf && strstr(buf, "a line of a pipeline that then waits\n") != NULL;
        free(buf);
    }
    close(feed);
    cr_assert_eq(th_wait_for(cli, 10), 0, "forklog append failed");
    cr_assert(there, "the line stayed in the buffer while the pipeline waited");
    cr_assert_eq(forklog_close(app), 0);
}

Test(join, a_forked_pool_shell_pipelines_and_a_spawned_program_write_one_log, .timeout = 120)
{
    /* At once: a forked pool of 4 writers on the parent's handle, 3 `forklog append` processes fed from pipes,
     * and a program started with posix_spawn that opens the log itself. Every record whole, each writer's
     * sequence complete. */
    enum { POOL = 4, CLI = 3, RECORDS = 1500 };
    forklog *log = open_ok(NULL);
    pid_t pid[POOL + CLI + 1];
    int feed[CLI];
    unsigned id = 0;
    for (; id < POOL; id++) {
        pid[id] = fork();
        cr_assert_neq(pid[id], -1);
        if (pid[id] == 0) {
            rc_child();
            char *buf = malloc(RC_HEAD_MAX + 8192);
            unsigned seed = id;
            for (unsigned q = 0; q < RECORDS; q++)
                if (rc_write(log, buf, q % 2 ? 'R' : 'L', id, q, 0, rc_size(&seed, 8000)) != 0)
                    _exit(4);
            _exit(forklog_close(log) == 0 ? 0 : 5);
        }
    }
    for (unsigned c = 0; c < CLI; c++, id++)
        pid[id] = spawn_cli(&feed[c]);
    pid[id] = spawn_writer(id, RECORDS, 3000, "");
    id++;
    /* Feed the pipelines, a line at a time, round robin. */
    char *line = malloc(RC_HEAD_MAX + 4096);
    unsigned seed = 77;
    for (unsigned q = 0; q < RECORDS; q++) {
        for (unsigned c = 0; c < CLI; c++) {
            size_t n = rc_build(line, 'L', POOL + c, q, 0, rc_size(&seed, 4000));
            line[n++] = '\n';
            for (size_t off = 0; off < n;) {
                ssize_t w = write(feed[c], line + off, n - off);
                cr_assert_gt(w, 0, "feeding forklog append: %s", strerror(errno));
                off += (size_t)w;
            }
        }
    }
    free(line);
    for (unsigned c = 0; c < CLI; c++)
        close(feed[c]);
    for (unsigned i = 0; i < id; i++) {
        int st = th_wait_for(pid[i], 60);
        cr_assert_eq(st, 0, "writer %u failed: %d", i, st);
    }
    cr_assert_eq(log->seg->head.builds, 1, "everybody joined the parent's segment");
    cr_assert_eq(forklog_close(log), 0);
    unsigned want[POOL + CLI + 1];
    for (unsigned i = 0; i < id; i++)
        want[i] = RECORDS;
    check_records(id, want, 0);
    cr_assert_not(seg_exists());
}

Test(join, every_user_killed_with_the_lock_held_leaves_no_stale_lock)
{
    /* One opener dies in the middle of a record (half of it in the file) while three others wait for the lock;
     * then all of them are killed. A fresh open must neither wait nor keep the fragment. */
    struct report *r = new_report();
    forklog *first = open_ok(NULL);
    char rec[5000];
    size_t len = rc_build(rec, 'R', 9, 0, 0, 4000);
    cr_assert_eq(forklog_write(first, rec, len), 0);
    cr_assert_eq(forklog_close(first), 0);
    pid_t holder = fork();
    cr_assert_neq(holder, -1);
    if (holder == 0) {
        rc_child();
        forklog *log;
        if (forklog_open(&log, logpath, NULL) != 0)
            _exit(3);
        fl__crash_arm(FL__CP_WRITE_TORN, 1, FL__CRASH_STOP);
        size_t l = rc_build(rec, 'R', 9, 1, 0, 4000);
        forklog_write(log, rec, l);
        _exit(6);
    }
    cr_assert(cp_wait_stopped(holder, 10), "the holder did not stop in the middle of its record");
    pid_t waiter[3];
    for (unsigned i = 0; i < 3; i++)
        waiter[i] = start_opener(r, i, 50, 100, 0, 0);
    usleep(100 * 1000);
    cr_assert_eq(atomic_load(&r->acked[0]) + atomic_load(&r->acked[1]) + atomic_load(&r->acked[2]), 0,
                 "a writer got the lock while it was held");
    /* The waiters first: once the holder is dead, the lock is theirs. */
    for (unsigned i = 0; i < 3; i++) {
        kill(waiter[i], SIGKILL);
        cr_assert_eq(th_wait(waiter[i]), 128 + SIGKILL);
    }
    kill(holder, SIGKILL);
    cr_assert_eq(th_wait(holder), 128 + SIGKILL);
    cr_assert(seg_exists(), "the dead users' segment file is left for the next open");

    double t0 = th_now_s();
    forklog *log = open_ok(NULL);
    cr_assert_eq(log->seg->head.builds, 2, "the next open rebuilt the segment");
    len = rc_build(rec, 'R', 9, 2, 0, 100);
    cr_assert_eq(forklog_write(log, rec, len), 0);
    cr_assert_lt(th_now_s() - t0, 2.0, "the open and record took %.2f s", th_now_s() - t0);
    cr_assert_eq(forklog_close(log), 0);
    struct rc_seen seen;
    rc_seen_init(&seen, 10, 4);
    rc_scan(&seen, logpath, 0); /* no torn line */
    cr_assert_eq(rc_count(&seen, 9, 0), 1);
    cr_assert_eq(rc_count(&seen, 9, 1), 0, "the dead holder's half record was cut");
    cr_assert_eq(rc_count(&seen, 9, 2), 1);
    rc_seen_free(&seen);
    cr_assert_not(seg_exists());
}

/* The bytes of a file. */
static char *file_bytes(const char *path, size_t *len)
{
    char *b = th_slurp(path, len);
    cr_assert_not_null(b, "%s is missing", path);
    return b;
}

static void put_bytes(const char *path, const char *b, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, b, len), (ssize_t)len);
    close(fd);
}

Test(join, a_segment_from_before_a_reboot_is_rebuilt_not_waited_on)
{
    /* An image of the segment file taken while a process held the lock: after a reboot the file holds the dead
     * holder's thread id in the lock word, with no owner-died mark (nothing ran the robust list). */
    forklog *first = open_ok(NULL);
    cr_assert_eq(forklog_write(first, "before the reboot", 17), 0);
    pid_t holder = cp_stopped_holder(first, "never written", FL__CP_COUNT, 0);
    size_t len;
    char *image = file_bytes(segpath, &len);
    kill(holder, SIGKILL);
    cr_assert_eq(th_wait(holder), 128 + SIGKILL);
    cr_assert_eq(forklog_close(first), 0);
    cr_assert_not(seg_exists(), "the last close removed the file");
    /* "Reboot": the image comes back, as the disk kept it, and nobody holds the file. */
    int fd = open(segpath, O_WRONLY | O_CREAT | O_EXCL, 0600);
    cr_assert_geq(fd, 0);
    close(fd);
    put_bytes(segpath, image, len);
    int lock_word;
    memcpy(&lock_word, image + offsetof(struct fl__seg, mu) + offsetof(pthread_mutex_t, __data.__lock),
           sizeof lock_word);
    cr_assert_neq(lock_word, 0, "the image holds a locked mutex");

    pid_t child = fork();
    cr_assert_neq(child, -1);
    if (child == 0) {
        rc_child();
        forklog *log;
        if (forklog_open(&log, logpath, NULL) != 0)
            _exit(3);
        if (forklog_write(log, "after the reboot", 16) != 0)
            _exit(4);
        _exit(forklog_close(log) == 0 ? 0 : 5);
    }
    cr_assert_eq(th_wait_for(child, 5), 0, "a fresh open waited on the lock of a previous boot (or failed)");
    size_t flen;
    char *buf = th_slurp(logpath, &flen);
    cr_assert_str_eq(buf, "before the reboot\nafter the reboot\n");
    free(buf);
    free(image);
}

static void write_head(const struct fl__seg_head *h)
{
    int fd = open(segpath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    cr_assert_geq(fd, 0);
    char page[65536] = {0};
    memcpy(page, h, sizeof *h);
    cr_assert_eq(write(fd, page, sizeof page), (ssize_t)sizeof page);
    close(fd);
}

static void refused(int want, const char *needle)
{
    size_t before;
    char *seg_before = file_bytes(segpath, &before);
    forklog *log = (forklog *)1;
    char why[512] = "";
    struct forklog_options o = {.error = why, .error_size = sizeof why};
    int rc = forklog_open(&log, logpath, &o);
    cr_assert_eq(rc, want, "forklog_open: %d (%s), wanted %d", rc, why, want);
    cr_assert_null(log);
    cr_assert_not_null(strstr(why, needle), "the explanation \"%s\" does not say \"%s\"", why, needle);
    size_t after;
    char *seg_after = file_bytes(segpath, &after);
    cr_assert(before == after && memcmp(seg_before, seg_after, before) == 0, "the refused segment was changed");
    free(seg_before);
    free(seg_after);
}

Test(join, a_segment_of_another_layout_or_c_library_is_refused)
{
    forklog *log = open_ok(NULL);
    cr_assert_eq(forklog_write(log, "kept", 4), 0);
    struct fl__seg_head h = log->seg->head;
    cr_assert_eq(forklog_close(log), 0);

    struct fl__seg_head other = h;
    other.layout = h.layout + 1;
    write_head(&other);
    refused(-EPROTO, "layout");
    other = h;
    other.abi ^= 3; /* another C library */
    write_head(&other);
    refused(-EPROTO, "another forklog version or C library");
    other = h;
    memcpy(other.magic, "notours", 8);
    write_head(&other);
    refused(-EPROTO, "not a forklog segment");
    /* Not built (no ready word), as a builder killed half way leaves it, but not a builder's either: another
     * program's file at the segment's name is never truncated or used. */
    other.ready = 0;
    write_head(&other);
    refused(-EPROTO, "not a forklog segment");
    static const char text[] = "somebody's own file, which is no forklog segment at all\n";
    put_bytes(segpath, text, sizeof text - 1);
    refused(-EPROTO, "not a forklog segment");
    /* What a builder killed before its head leaves (zeros, or our magic without the ready word) is built anew. */
    char zeros[4096] = {0};
    put_bytes(segpath, zeros, sizeof zeros);
    forklog *again = open_ok(NULL);
    cr_assert_eq(forklog_close(again), 0);
    other = h;
    other.ready = 0;
    write_head(&other);
    again = open_ok(NULL);
    cr_assert_eq(forklog_close(again), 0);
    /* The same while somebody holds it (a joiner, not a rebuilder, reads the head). */
    other = h;
    other.layout = h.layout + 1;
    write_head(&other);
    int fd = open(segpath, O_RDONLY);
    cr_assert_eq(flock(fd, LOCK_SH), 0);
    refused(-EPROTO, "layout");
    close(fd);
    size_t len;
    char *buf = th_slurp(logpath, &len);
    cr_assert_str_eq(buf, "kept\n", "the log is untouched");
    free(buf);
}

/* An image of the segment file of a log opened with `o`, taken while it is in use, with the 8 bytes at `off`
 * replaced by `v`, left at segpath where nobody holds it. */
static void plant_image(const struct forklog_options *o, size_t off, uint64_t v)
{
    forklog *log = open_ok(o);
    size_t len;
    char *image = file_bytes(segpath, &len);
    cr_assert_eq(forklog_close(log), 0);
    cr_assert_leq(off + sizeof v, len);
    memcpy(image + off, &v, sizeof v);
    put_bytes(segpath, image, len);
    free(image);
}

Test(join, a_segment_whose_sizes_lie_is_refused_and_left_alone)
{
    /* Anybody who may write the log may write its segment file. A length or a buffer size that does not match the
     * head's settings would have a joiner map too little, or append beyond the mapping: refused, alone (the
     * opener would recover it) or joining (somebody holds it), and neither the segment nor the log is touched. */
    forklog *log = open_ok(NULL);
    cr_assert_eq(forklog_write(log, "kept", 4), 0);
    cr_assert_eq(forklog_close(log), 0);
    const struct forklog_options rings = {.flags = FORKLOG_BUFFERED, .buffer_size = 4096, .flush_ms = 600000};
    const struct forklog_options locked = {
        .flags = FORKLOG_BUFFERED, .buffer_size = 4096, .rotate_bytes = 1 << 20, .flush_ms = 600000};
    const struct forklog_options plain = {0};
    static const uint64_t huge = (uint64_t)1 << 40;
    const struct {
        const struct forklog_options *o;
        size_t off;
        uint64_t v;
    } lies[] = {
        {&plain, offsetof(struct fl__seg_head, seg_len), 4096},
        {&rings, offsetof(struct fl__seg_head, seg_len), 4096},
        {&rings, offsetof(struct fl__seg, ring_cap), huge},
        {&rings, offsetof(struct fl__seg, ring_cap), 8192},
        {&rings, offsetof(struct fl__seg, buf_cap), 4096},
        {&locked, offsetof(struct fl__seg, buf_cap), huge},
        {&locked, offsetof(struct fl__seg, ring_cap), 4096},
        {&plain, offsetof(struct fl__seg, buf_cap), huge},
        {&plain, offsetof(struct fl__seg, ring_cap), huge},
        {&plain, offsetof(struct fl__seg_head, buffer_size), 4096},
    };
    for (size_t i = 0; i < sizeof lies / sizeof lies[0]; i++) {
        plant_image(lies[i].o, lies[i].off, lies[i].v);
        refused(-EPROTO, "is damaged");
        int fd = open(segpath, O_RDONLY);
        cr_assert_geq(fd, 0);
        cr_assert_eq(flock(fd, LOCK_SH), 0);
        refused(-EPROTO, "is damaged");
        close(fd);
        cr_assert_eq(unlink(segpath), 0);
    }
    size_t len;
    char *buf = th_slurp(logpath, &len);
    cr_assert_str_eq(buf, "kept\n", "the log is untouched");
    free(buf);
}

/* A child that joins the log, after hiding /proc from itself (a mount namespace of its own) when hide_proc is set.
 * Exits 0 if it is a guest, 1 if not, 77 if /proc could not be hidden, other values on failure. */
static int join_as_guest(int hide_proc)
{
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        rc_child();
        if (hide_proc) {
            struct stat st;
            if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
                mount("none", "/proc", "tmpfs", 0, NULL) < 0 || stat("/proc/self/ns/pid", &st) == 0)
                _exit(77);
        }
        forklog *log;
        if (forklog_open(&log, logpath, NULL) != 0)
            _exit(3);
        int guest = (log->flags & FL__GUEST) != 0;
        _exit(forklog_close(log) == 0 ? !guest : 4);
    }
    return th_wait(pid);
}

Test(join, a_joiner_that_cannot_tell_its_pid_namespace_is_a_guest)
{
    /* The builder's namespaces are in the head; a joiner of the same ones is at home. */
    forklog *log = open_ok(NULL);
    cr_assert_eq(join_as_guest(0), 1, "a joiner of the builder's namespaces was taken for a guest");
    /* A builder that could not read its namespaces (0: unknown), and a joiner that cannot either: two unknowns are
     * not the same namespace. */
    struct fl__seg_head h;
    int fd = open(segpath, O_RDWR);
    cr_assert_geq(fd, 0);
    cr_assert_eq(pread(fd, &h, sizeof h, 0), (ssize_t)sizeof h);
    h.pidns = 0;
    h.timens = 0;
    cr_assert_eq(pwrite(fd, &h, sizeof h, 0), (ssize_t)sizeof h);
    close(fd);
    cr_assert_eq(join_as_guest(0), 0, "a joiner whose builder's PID namespace is unknown is at home");
    int st = join_as_guest(1);
    if (st == 77) {
        cr_assert_eq(forklog_close(log), 0);
        cr_skip_test("cannot hide /proc in a mount namespace (needs root)");
    }
    cr_assert_eq(st, 0, "a joiner that cannot read its PID namespace was taken for the builder's (%d)", st);
    cr_assert_eq(forklog_close(log), 0);
}

static void become(uid_t uid)
{
    if (setgroups(0, NULL) < 0 || setgid(uid) < 0 || setuid(uid) < 0)
        _exit(90);
}

Test(join, the_segment_file_follows_the_permissions_of_the_log)
{
    if (geteuid() != 0)
        cr_skip_test("needs root, to act as other users");
    static const struct {
        unsigned log_mode, seg_mode;
    } cases[] = {{0644, 0600}, {0664, 0660}, {0666, 0666}, {0600, 0600}, {0444, 0600}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        unlink(logpath);
        struct forklog_options o = {.mode = cases[i].log_mode};
        mode_t old = umask(0);
        forklog *log = open_ok(&o);
        umask(old);
        struct stat st;
        cr_assert_eq(stat(segpath, &st), 0);
        cr_assert_eq(st.st_mode & 07777, cases[i].seg_mode, "log %04o: segment %04o, wanted %04o", cases[i].log_mode,
                     st.st_mode & 07777, cases[i].seg_mode);
        cr_assert_eq(forklog_close(log), 0);
    }
    /* A user who may not write the log may not open its segment either (0644: the segment is 0600). */
    unlink(logpath);
    cr_assert_eq(chmod(dir, 0755), 0);
    forklog *log = open_ok(NULL);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        become(65534);
        int fd = open(segpath, O_RDONLY);
        _exit(fd < 0 && errno == EACCES ? 0 : 1);
    }
    cr_assert_eq(th_wait(pid), 0, "another user could read the segment of a log it may not write");
    cr_assert_eq(forklog_close(log), 0);
}

/* A group-writable log whose owner is not in the log's group: the owner's segment file cannot have the log's group,
 * and keeps no group bits, which would grant the owner's own group the lock and the buffer of a log its members may
 * not write. */
Test(join, a_segment_file_that_cannot_have_the_logs_group_grants_no_group)
{
    if (geteuid() != 0)
        cr_skip_test("needs root, to act as other users");
    cr_assert_eq(chmod(dir, 0777), 0);
    put_bytes(logpath, "", 0);
    cr_assert_eq(chown(logpath, 61000, 62000), 0);
    cr_assert_eq(chmod(logpath, 0664), 0);
    int ready[2], go[2];
    cr_assert_eq(pipe(ready), 0);
    cr_assert_eq(pipe(go), 0);
    pid_t owner = fork();
    cr_assert_neq(owner, -1);
    if (owner == 0) {
        become(61000);                    /* the log's owner, in its own group 61000 only */
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* after the change of user, which clears it */
        forklog *log;
        char c = forklog_open(&log, logpath, NULL) == 0 ? 'o' : 'x';
        if (write(ready[1], &c, 1) != 1 || read(go[0], &c, 1) != 1)
            _exit(2);
        _exit(forklog_write(log, "owner\n", 6) == 0 && forklog_close(log) == 0 ? 0 : 3);
    }
    char c;
    cr_assert_eq(read(ready[0], &c, 1), 1);
    cr_assert_eq(c, 'o', "the owner could not open its log");
    struct stat st;
    cr_assert_eq(stat(segpath, &st), 0);
    cr_assert_eq(st.st_uid, 61000);
    cr_assert_eq(st.st_mode & S_IRWXG, 0, "segment %04o, group %d: the group's bits for a group not the log's",
                 st.st_mode & 07777, (int)st.st_gid);
    /* A member of the owner's group, not of the log's: may neither write the log nor open its segment. */
    pid_t outsider = fork();
    cr_assert_neq(outsider, -1);
    if (outsider == 0) {
        gid_t groups[1] = {61000};
        if (setgroups(1, groups) < 0 || setgid(64000) < 0 || setuid(64000) < 0)
            _exit(90);
        int fd = open(segpath, O_RDWR);
        _exit(fd < 0 && errno == EACCES ? 0 : 1);
    }
    cr_assert_eq(th_wait(outsider), 0, "a user outside the log's group may open its segment read-write");
    cr_assert_eq(write(go[1], "g", 1), 1);
    cr_assert_eq(th_wait(owner), 0);
    close(ready[0]), close(ready[1]), close(go[0]), close(go[1]);
    size_t len;
    char *buf = th_slurp(logpath, &len);
    cr_assert_str_eq(buf, "owner\n");
    free(buf);
    /* Such a file found with the group's bits (left by another build, or made by hand): a member of the log's group,
     * who may neither open nor change it, is refused and leaves it as it is; root gives it the log's group and uses
     * it. */
    cr_assert_neq(access(segpath, F_OK), 0, "the owner's last close left the segment file");
    put_bytes(segpath, "", 0);
    cr_assert_eq(chown(segpath, 61000, 61000), 0);
    cr_assert_eq(chmod(segpath, 0660), 0);
    pid_t member = fork();
    cr_assert_neq(member, -1);
    if (member == 0) {
        gid_t groups[1] = {62000};
        if (setgroups(1, groups) < 0 || setgid(63000) < 0 || setuid(63000) < 0)
            _exit(90);
        forklog *log = (forklog *)1;
        char why[512] = "";
        struct forklog_options o = {.error = why, .error_size = sizeof why};
        /* Not in group 61000; the explanation gives the file's owner and bits, beside the log's. */
        _exit(forklog_open(&log, logpath, &o) == -EACCES && log == NULL &&
                      strstr(why, "owner 61000, group 61000, mode 0660, where the log is owner 61000, group 62000")
                  ? 0
                  : 1);
    }
    cr_assert_eq(th_wait(member), 0, "a member of the log's group used a segment file that grants another group");
    cr_assert_eq(stat(segpath, &st), 0);
    cr_assert(st.st_gid == 61000 && (st.st_mode & 07777) == 0660, "the refused file was changed");
    forklog *log = open_ok(NULL);
    cr_assert_eq(stat(segpath, &st), 0);
    cr_assert(st.st_uid == 61000 && st.st_gid == 62000 && (st.st_mode & 07777) == 0660,
              "segment %u:%u %04o: not the log's owner and group", (unsigned)st.st_uid, (unsigned)st.st_gid,
              st.st_mode & 07777);
    cr_assert_eq(forklog_close(log), 0);
}

/* The log's mode or group changed while its segment file exists: logrotate's `create 0640 app adm` (the log was
 * 0660 app:app), a chmod that takes a class's write bit away, while the log is in use or after its users died. The
 * segment file, built for the old bits, now grants what the log does not. Its owner (or root) opening the log gives
 * it the log's owner, group and bits and uses it; refused until every user closed (or for ever, for a file the dead
 * left), the log's own owner could open its log no more, and the explanation's advice to remove the file would have
 * given the log two locks while its users wrote. A user of the log who may not change the file is still refused, and
 * the file left as it is. */
Test(join, a_segment_file_whose_log_lost_a_write_bit_is_narrowed_by_its_owner_and_used)
{
    if (geteuid() != 0)
        cr_skip_test("needs root, to act as other users");
    cr_assert_eq(chmod(dir, 0777), 0);
    put_bytes(logpath, "", 0);
    cr_assert_eq(chown(logpath, 61000, 61000), 0);
    cr_assert_eq(chmod(logpath, 0660), 0);
    struct report *r = new_report();
    pid_t first = fork();
    cr_assert_neq(first, -1);
    if (first == 0) {
        rc_child();
        become(61000);
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* after the change of user, which clears it */
        forklog *log;
        if (forklog_open(&log, logpath, NULL) != 0 || forklog_write(log, "old", 3) != 0)
            _exit(3);
        atomic_store(&r->opened, 1);
        while (!atomic_load(&r->go))
            usleep(200);
        _exit(forklog_reopen(log) == 0 && forklog_write(log, "first", 5) == 0 && forklog_close(log) == 0 ? 0 : 4);
    }
    double end = th_now_s() + 10;
    while (!atomic_load(&r->opened) && th_now_s() < end)
        usleep(500);
    cr_assert(atomic_load(&r->opened), "the log's owner could not open its log");
    struct stat st;
    cr_assert_eq(stat(segpath, &st), 0);
    cr_assert_eq(st.st_mode & 07777, 0660);
    /* logrotate, `create 0640 61000 62000`: the log moved away, a new one made with another group and no group write.
     */
    char *old = th_path(dir, "join.log.1");
    cr_assert_eq(rename(logpath, old), 0);
    put_bytes(logpath, "", 0);
    cr_assert_eq(chown(logpath, 61000, 62000), 0);
    cr_assert_eq(chmod(logpath, 0640), 0);
    /* Another process of the log's owner (a worker started afresh, a cron job) opens the log and writes. */
    pid_t second = fork();
    cr_assert_neq(second, -1);
    if (second == 0) {
        rc_child();
        become(61000);
        forklog *log;
        char why[512] = "";
        struct forklog_options o = {.error = why, .error_size = sizeof why};
        int rc = forklog_open(&log, logpath, &o);
        if (rc != 0) {
            fprintf(stderr, "the log's owner, after the log's group changed: %s (%s)\n", strerror(-rc), why);
            _exit(rc == -EPERM ? 5 : 6);
        }
        _exit(forklog_write(log, "second", 6) == 0 && forklog_close(log) == 0 ? 0 : 7);
    }
    int st2 = th_wait_for(second, 10);
    atomic_store(&r->go, 1);
    cr_assert_eq(th_wait_for(first, 10), 0);
    cr_assert_eq(st2, 0, "the log's owner could not open its log once its group changed (%d)", st2);
    size_t len;
    char *buf = th_slurp(logpath, &len);
    cr_assert_str_eq(buf, "second\nfirst\n");
    free(buf);
    buf = th_slurp(old, &len);
    cr_assert_str_eq(buf, "old\n");
    free(buf);
    cr_assert_not(seg_exists(), "the last close left the segment file");

    /* A segment file of a 0666 log that its users left when they died; the log is 0644 since. A member of the log's
     * group who may write it but not change the file is refused, and the file left as it is; root (or the owner)
     * gives it the log's bits, recovers it and writes. */
    cr_assert_eq(unlink(logpath), 0);
    cr_assert_eq(unlink(old), 0);
    free(old);
    put_bytes(logpath, "", 0);
    cr_assert_eq(chown(logpath, 61000, 62000), 0);
    cr_assert_eq(chmod(logpath, 0666), 0);
    pid_t dead = fork();
    cr_assert_neq(dead, -1);
    if (dead == 0) {
        rc_child();
        become(61000);
        forklog *log;
        if (forklog_open(&log, logpath, NULL) != 0 || forklog_write(log, "dead", 4) != 0)
            _exit(3);
        raise(SIGKILL);
        _exit(4);
    }
    cr_assert_eq(th_wait(dead), 128 + SIGKILL);
    cr_assert_eq(stat(segpath, &st), 0);
    cr_assert_eq(st.st_mode & 07777, 0666);
    cr_assert_eq(chmod(logpath, 0664), 0);
    size_t before;
    char *seg_before = file_bytes(segpath, &before);
    pid_t member = fork();
    cr_assert_neq(member, -1);
    if (member == 0) {
        rc_child();
        gid_t groups[1] = {62000};
        if (setgroups(1, groups) < 0 || setgid(63000) < 0 || setuid(63000) < 0)
            _exit(90);
        forklog *log = (forklog *)1;
        char why[512] = "";
        struct forklog_options o = {.error = why, .error_size = sizeof why};
        _exit(forklog_open(&log, logpath, &o) == -EPERM && log == NULL && strstr(why, "is not the log's segment file")
                  ? 0
                  : 1);
    }
    cr_assert_eq(th_wait(member), 0, "a user who may not change the segment file was not refused");
    size_t after;
    char *seg_after = file_bytes(segpath, &after);
    cr_assert(before == after && memcmp(seg_before, seg_after, before) == 0, "the refused segment was changed");
    free(seg_before);
    free(seg_after);
    cr_assert_eq(stat(segpath, &st), 0);
    cr_assert_eq(st.st_mode & 07777, 0666, "the refused segment's bits were changed");
    forklog *log = open_ok(NULL);
    cr_assert_eq(stat(segpath, &st), 0);
    cr_assert_eq(st.st_mode & 07777, 0660, "segment %04o: not the bits of a 0664 log", st.st_mode & 07777);
    cr_assert_eq(st.st_uid, 61000);
    cr_assert_eq(st.st_gid, 62000);
    cr_assert_eq(forklog_write(log, "root", 4), 0);
    cr_assert_eq(forklog_close(log), 0);
    buf = th_slurp(logpath, &len);
    cr_assert_str_eq(buf, "dead\nroot\n");
    free(buf);
    cr_assert_not(seg_exists());
    munmap(r, sizeof *r);
}

/* Runs as `uid` (its own group): opens the log with rotate_bytes 300, writes "before", says so, waits for go, then
 * writes "after" (after a forklog_reopen() when `reopen`). Exit status 0, or the step that failed. */
static pid_t start_user_writer(struct report *r, uid_t uid, int reopen)
{
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        rc_child();
        become(uid);
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* after the change of user, which clears it */
        umask(022);
        forklog *log;
        struct forklog_options o = {.rotate_bytes = 300};
        if (forklog_open(&log, logpath, &o) != 0 || forklog_write(log, "before", 6) != 0)
            _exit(3);
        atomic_store(&r->opened, 1);
        while (!atomic_load(&r->go))
            usleep(200);
        if (reopen && forklog_reopen(log) != 0)
            _exit(4);
        int rc = forklog_write(log, "after", 5);
        if (rc != 0) {
            fprintf(stderr, "user %u, after another user's rotation or reopen: %s\n", (unsigned)uid, strerror(-rc));
            _exit(5);
        }
        _exit(forklog_close(log) == 0 ? 0 : 6);
    }
    double end = th_now_s() + 10;
    while (!atomic_load(&r->opened) && th_now_s() < end)
        usleep(500);
    cr_assert(atomic_load(&r->opened), "user %u could not open the log", (unsigned)uid);
    return pid;
}

static void assert_file(const char *path, uid_t uid, gid_t gid, mode_t mode)
{
    struct stat st;
    cr_assert_eq(stat(path, &st), 0, "%s: %s", path, strerror(errno));
    cr_assert(st.st_uid == uid && st.st_gid == gid && (st.st_mode & 07777) == mode,
              "%s is %u:%u %04o, wanted %u:%u %04o", path, (unsigned)st.st_uid, (unsigned)st.st_gid,
              (unsigned)(st.st_mode & 07777), (unsigned)uid, (unsigned)gid, (unsigned)mode);
}

/* A log several users write, rotated or re-created by one of them with no owner, group or mode in its options (a root
 * cron job's `forklog append` on a service's log, a second user of a 0666 log): the new file is the old one's
 * owner's, group's and bits' (as far as the process may give them: root, or for the group a member), as logrotate's
 * `create` makes it. It was the rotating process's own, 0644 under its umask: every other user's next record failed
 * with -EACCES, and every later opener was refused (the segment file is the old owner's, which no longer owns the
 * log). */
Test(join, a_rotation_or_reopen_by_another_user_keeps_the_logs_owner_group_and_bits)
{
    if (geteuid() != 0)
        cr_skip_test("needs root, to act as other users");
    cr_assert_eq(chmod(dir, 0777), 0);
    char *one = th_path(dir, "join.log.1");
    char big[400];
    memset(big, 'r', sizeof big - 1);
    big[sizeof big - 1] = '\n';
    for (int reopen = 0; reopen < 2; reopen++) {
        /* A service's 0640 log of 65534; root (umask 022) rotates it, or re-creates it at a reopen. */
        unlink(logpath);
        unlink(one);
        put_bytes(logpath, "", 0);
        cr_assert_eq(chown(logpath, 65534, 65534), 0);
        cr_assert_eq(chmod(logpath, 0640), 0);
        struct report *r = new_report();
        pid_t service = start_user_writer(r, 65534, reopen);
        mode_t old = umask(022);
        forklog *log = open_ok(NULL);
        if (reopen) {
            cr_assert_eq(rename(logpath, one), 0);
            cr_assert_eq(forklog_reopen(log), 0);
            cr_assert_eq(forklog_write(log, "root", 4), 0);
        } else {
            cr_assert_eq(forklog_write(log, big, sizeof big), 0);
        }
        umask(old);
        assert_file(logpath, 65534, 65534, 0640);
        atomic_store(&r->go, 1);
        int st = th_wait_for(service, 10);
        cr_assert_eq(st, 0, "the service failed at step %d after root's %s", st, reopen ? "reopen" : "rotation");
        forklog *again = open_ok(NULL); /* and the log opens again, for root as for anybody */
        cr_assert_eq(forklog_close(again), 0);
        cr_assert_eq(forklog_close(log), 0);
        size_t len;
        char *buf = th_slurp(logpath, &len);
        cr_assert_not_null(strstr(buf, "after\n"));
        free(buf);
        cr_assert_not(seg_exists());
        munmap(r, sizeof *r);
    }
    /* A 0666 log of 61000 that 62000 also writes: 62000 rotates it. It may not give the file away, but the bits
     * stay the log's, and 61000 writes on. */
    unlink(logpath);
    unlink(one);
    put_bytes(logpath, "", 0);
    cr_assert_eq(chown(logpath, 61000, 61000), 0);
    cr_assert_eq(chmod(logpath, 0666), 0);
    struct report *r = new_report();
    pid_t first = start_user_writer(r, 61000, 0);
    pid_t second = fork();
    cr_assert_neq(second, -1);
    if (second == 0) {
        rc_child();
        become(62000);
        umask(022);
        forklog *log;
        _exit(forklog_open(&log, logpath, NULL) == 0 && forklog_write(log, big, sizeof big) == 0 &&
                      forklog_close(log) == 0
                  ? 0
                  : 1);
    }
    cr_assert_eq(th_wait_for(second, 10), 0);
    assert_file(logpath, 62000, 62000, 0666);
    atomic_store(&r->go, 1);
    int st = th_wait_for(first, 10);
    cr_assert_eq(st, 0, "the log's owner failed at step %d after another user's rotation", st);
    size_t len;
    char *buf = th_slurp(one, &len); /* 400 + 6 bytes are past rotate_bytes: "after" rotated once more */
    cr_assert(len == sizeof big && memcmp(buf, big, sizeof big) == 0);
    free(buf);
    buf = th_slurp(logpath, &len);
    cr_assert_str_eq(buf, "after\n");
    free(buf);
    munmap(r, sizeof *r);
    free(one);
}

Test(join, a_segment_file_planted_by_another_user_is_refused_and_never_used)
{
    if (geteuid() != 0)
        cr_skip_test("needs root, to act as another user");
    /* A shared directory, as /tmp is (1777): another user plants the segment before the log exists. */
    cr_assert_eq(chmod(dir, 01777), 0);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        become(65534);
        int fd = open(segpath, O_RDWR | O_CREAT | O_EXCL, 0666);
        _exit(fd >= 0 && write(fd, "planted", 7) == 7 ? 0 : 1);
    }
    cr_assert_eq(th_wait(pid), 0);
    refused(-EPERM, "is not the log's segment file");
    size_t len;
    char *buf = th_slurp(segpath, &len);
    cr_assert_str_eq(buf, "planted", "the planted file was neither read nor written");
    free(buf);
    /* A symlink planted there instead: never followed. */
    char *target = th_path(dir, "target");
    put_bytes(target, "", 0);
    cr_assert_eq(unlink(segpath), 0);
    cr_assert_eq(symlink(target, segpath), 0);
    forklog *log = (forklog *)1;
    char why[512];
    struct forklog_options o = {.error = why, .error_size = sizeof why};
    cr_assert_eq(forklog_open(&log, logpath, &o), -EPERM, "%s", why);
    struct stat st;
    cr_assert_eq(stat(target, &st), 0);
    cr_assert_eq(st.st_size, 0, "the symlink's target was written");
    free(target);
}

Test(join, an_opener_killed_while_it_creates_the_segment_file_locks_nobody_out)
{
    if (geteuid() != 0)
        cr_skip_test("needs root, to act as another user");
    /* The log of user 65534 (0644) in a directory it may write. A root process (a supervisor) opens it and is
     * killed just after the segment file was created, before it gave that file to the log's owner. */
    cr_assert_eq(chmod(dir, 01777), 0);
    put_bytes(logpath, "", 0);
    cr_assert_eq(chown(logpath, 65534, 65534), 0);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        rc_child();
        kill_before_fchown = 1;
        forklog *log;
        (void)forklog_open(&log, logpath, NULL);
        _exit(1);
    }
    cr_assert_eq(th_wait(pid), 128 + SIGKILL);
    /* The log's owner may still open and write its log: a death never leaves the log closed to its users. */
    pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        rc_child();
        become(65534);
        forklog *log;
        if (forklog_open(&log, logpath, NULL) != 0)
            _exit(3);
        _exit(forklog_info(log, "owner") == 0 && forklog_close(log) == 0 ? 0 : 4);
    }
    int st = th_wait(pid);
    cr_assert_eq(st, 0, "the log's owner could not open its log after an opener died creating the segment (%d)", st);
    cr_assert_not(seg_exists());
}

/* After a process was killed holding the segment file alone, with a child that another of its threads forked
 * still alive (forked_pid[0]): a later opener opens the log, writes record (id, q) and closes within 5 s, its
 * close removing the segment file. Then the child is killed. `what` names the scene in the messages. */
static void a_later_opener_waits_for_nobody(const pid_t *forked_pid, unsigned id, unsigned q, const char *what)
{
    pid_t opener = fork();
    cr_assert_neq(opener, -1);
    if (opener == 0) {
        rc_child();
        forklog *log;
        if (forklog_open(&log, logpath, NULL) != 0)
            _exit(6);
        char buf[RC_HEAD_MAX + 100];
        if (rc_write(log, buf, 'R', id, q, 0, 100) != 0)
            _exit(7);
        _exit(forklog_close(log) == 0 ? 0 : 8);
    }
    int st = th_wait_for(opener, 5);
    const int left = seg_exists(); /* the forked child still lives */
    kill(forked_pid[0], SIGKILL);
    cr_assert_eq(st, 0, "%s: a later opener %s (%d)", what, st == -2 ? "still waited after 5 s" : "failed", st);
    cr_assert_not(left, "%s: the later opener's close left the segment file", what);
}

/* A process killed while it holds the segment file alone (building the segment, or removing it as the last user),
 * after another of its threads forked: the child had copies of the process's descriptors, among them the one locked
 * alone, or the one opened to be (forked between the segment file's open and its lock, in an open or a close).
 * Later openers wait for nobody, and the child holds nothing that keeps the last user's close from removing the
 * file. */
Test(join, a_fork_while_the_segment_is_built_or_removed_keeps_no_later_opener_waiting)
{
    pid_t *forked_pid = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(forked_pid, MAP_FAILED);
    static const char *const when[4] = {"built", "removed", "opened to be built", "opened to be removed"};
    size_t lines = 0;
    for (int k = 0; k < 4; k++) {
        forked_pid[0] = 0;
        pid_t pid = fork();
        cr_assert_neq(pid, -1);
        if (pid == 0) {
            rc_child();
            pthread_t t;
            if (pthread_create(&t, NULL, forker_main, forked_pid) != 0)
                _exit(2);
            forklog *log;
            if (k == 0 || k == 2) {
                fl__crash_arm(FL__CP_SEG_ALONE, 1, FL__CRASH_KILL);
                if (k == 0)
                    fork_when_alone = 1;
                else
                    fork_after_rdwr_open = 1;
                (void)forklog_open(&log, logpath, NULL);
                _exit(3);
            }
            if (forklog_open(&log, logpath, NULL) != 0 || forklog_info(log, "before") != 0)
                _exit(4);
            fl__crash_arm(FL__CP_SEG_CLOSE_ALONE, 1, FL__CRASH_KILL);
            if (k == 1)
                fork_when_alone = 1;
            else
                fork_after_rdwr_open = 1;
            (void)forklog_close(log);
            _exit(5);
        }
        cr_assert_eq(th_wait(pid), 128 + SIGKILL, "the segment %s", when[k]);
        cr_assert_gt(forked_pid[0], 0, "the segment %s: no fork", when[k]);
        lines += k % 2 ? 2 : 1;
        char what[80];
        snprintf(what, sizeof what, "the segment %s by a killed process after a fork", when[k]);
        a_later_opener_waits_for_nobody(forked_pid, 1, (unsigned)k, what);
        size_t len;
        char *got = th_slurp(logpath, &len);
        cr_assert_eq(th_count_lines(got, len), lines, "the segment %s: %zu lines", when[k], th_count_lines(got, len));
        cr_assert(k % 2 == 0 || strstr(got, " before\n"));
        free(got);
    }
    munmap(forked_pid, 4096);
}

Test(join, a_log_everybody_may_write_is_shared_by_users_who_do_not_own_it)
{
    if (geteuid() != 0)
        cr_skip_test("needs root, to act as other users");
    /* A 0666 log of user 1000 in a shared directory. User 2000, in none of its groups, opens it first: its segment
     * file stays 2000's (it may not give it to 1000). User 3000 joins it all the same, and both write. */
    cr_assert_eq(chmod(dir, 01777), 0);
    put_bytes(logpath, "", 0);
    cr_assert_eq(chown(logpath, 1000, 1000), 0);
    cr_assert_eq(chmod(logpath, 0666), 0);
    struct report *r = new_report();
    pid_t first = fork();
    cr_assert_neq(first, -1);
    if (first == 0) {
        rc_child();
        become(2000);
        forklog *log;
        if (forklog_open(&log, logpath, NULL) != 0)
            _exit(3);
        atomic_store(&r->opened, 1);
        while (!atomic_load(&r->go))
            usleep(200);
        _exit(forklog_write(log, "first", 5) == 0 && forklog_close(log) == 0 ? 0 : 4);
    }
    double end = th_now_s() + 10;
    while (!atomic_load(&r->opened) && th_now_s() < end)
        usleep(500);
    cr_assert(atomic_load(&r->opened), "user 2000 could not open the log");
    struct stat st;
    cr_assert_eq(stat(segpath, &st), 0);
    cr_assert_eq(st.st_uid, 2000);
    cr_assert_eq(st.st_mode & 07777, 0666);
    pid_t second = fork();
    cr_assert_neq(second, -1);
    if (second == 0) {
        rc_child();
        become(3000);
        forklog *log;
        if (forklog_open(&log, logpath, NULL) != 0)
            _exit(3);
        _exit(forklog_write(log, "second", 6) == 0 && forklog_close(log) == 0 ? 0 : 4);
    }
    int st2 = th_wait_for(second, 10);
    atomic_store(&r->go, 1);
    cr_assert_eq(th_wait_for(first, 10), 0);
    cr_assert_eq(st2, 0, "user 3000 could not join the segment of user 2000 (%d)", st2);
    size_t len;
    char *buf = th_slurp(logpath, &len);
    cr_assert_str_eq(buf, "second\nfirst\n");
    free(buf);
    cr_assert_not(seg_exists());
    munmap(r, sizeof *r);
}

/* A process that joins a log with exactly the two descriptors a handle keeps (the log and its segment file) left
 * under its RLIMIT_NOFILE: its records are written. Its first record used to open the path once more, to be sure of
 * the generation's file, and every record failed with -EMFILE; the descriptor it opened at open is that file. In
 * direct and buffered mode, the parent's handle open all along. */
Test(join, a_joiner_with_no_descriptor_to_spare_writes_its_records)
{
    for (int k = 0; k < 2; k++) {
        const struct forklog_options o = {.flags = k ? FORKLOG_BUFFERED : 0u};
        forklog *parent;
        cr_assert_eq(forklog_open(&parent, logpath, &o), 0);
        pid_t pid = fork();
        cr_assert_geq(pid, 0);
        if (pid == 0) {
            struct rlimit rl = {64, 64};
            if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
                _exit(10);
            int fill[64], n = 0, fd;
            while ((fd = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0)
                fill[n++] = fd;
            if (n < 2)
                _exit(11);
            close(fill[--n]);
            close(fill[--n]);
            forklog *log;
            if (forklog_open(&log, logpath, &o) != 0)
                _exit(12);
            int rc = 0;
            for (int i = 0; i < 3 && rc == 0; i++)
                rc = forklog_log(log, FORKLOG_INFO, "joiner %d", i);
            if (rc != 0)
                _exit(13);
            _exit(forklog_close(log) == 0 ? 0 : 14);
        }
        cr_assert_eq(th_wait(pid), 0,
                     "mode %d: the joiner failed (exit code: 10 limit, 11 fill, 12 open, 13 record, "
                     "14 close)",
                     k);
        cr_assert_eq(forklog_close(parent), 0);
        size_t len;
        char *text = th_slurp(logpath, &len);
        cr_assert_not_null(text);
        cr_assert_eq(th_count_lines(text, len), 3, "mode %d:\n%s", k, text);
        for (int i = 0; i < 3; i++) {
            char want[32];
            snprintf(want, sizeof want, "joiner %d\n", i);
            cr_assert_not_null(strstr(text, want), "mode %d: %s missing", k, want);
        }
        free(text);
        cr_assert_eq(unlink(logpath), 0);
    }
}

/* In a sticky directory (/tmp) only a file's owner, the directory's owner or root may remove it: a last user of the
 * log that did not create its segment file cannot remove it. The file then stays, holding nothing, and the next
 * opener uses it as any file left by the log's last users; the last close of its owner (or of root) removes it. */
static pid_t open_write_close_as(uid_t uid, struct report *r, unsigned slot, const char *what)
{
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        rc_child();
        become(uid);
        forklog *log;
        if (forklog_open(&log, logpath, NULL) != 0)
            _exit(3);
        atomic_store(&r->acked[slot], 1);
        while (atomic_load(&r->go) <= slot)
            usleep(200);
        _exit(forklog_write(log, what, strlen(what)) == 0 && forklog_close(log) == 0 ? 0 : 4);
    }
    double end = th_now_s() + 10;
    while (!atomic_load(&r->acked[slot]) && th_now_s() < end)
        usleep(500);
    cr_assert(atomic_load(&r->acked[slot]), "user %u could not open the log", (unsigned)uid);
    return pid;
}

Test(join, in_a_sticky_directory_a_segment_file_its_last_user_may_not_remove_stays_and_is_used_again)
{
    if (geteuid() != 0)
        cr_skip_test("needs root, to act as other users");
    cr_assert_eq(chmod(dir, 01777), 0);
    put_bytes(logpath, "", 0);
    cr_assert_eq(chown(logpath, 1000, 1000), 0);
    cr_assert_eq(chmod(logpath, 0666), 0);
    struct report *r = new_report();
    /* User 2000 creates the segment file, user 3000 joins; 2000 closes first, 3000 last. */
    pid_t creator = open_write_close_as(2000, r, 0, "a");
    pid_t last = open_write_close_as(3000, r, 1, "b");
    atomic_store(&r->go, 1);
    cr_assert_eq(th_wait_for(creator, 10), 0);
    atomic_store(&r->go, 2);
    cr_assert_eq(th_wait_for(last, 10), 0);
    struct stat st;
    cr_assert_eq(stat(segpath, &st), 0, "the segment file was removed by a user the sticky bit forbids it");
    cr_assert_eq(st.st_uid, 2000);
    /* Used again, by another user and then by its owner, whose close removes it. */
    memset(r, 0, sizeof *r);
    atomic_store(&r->go, 2);
    cr_assert_eq(th_wait_for(open_write_close_as(3000, r, 0, "c"), 10), 0);
    cr_assert_eq(th_wait_for(open_write_close_as(2000, r, 1, "d"), 10), 0);
    cr_assert_not(seg_exists(), "the owner's last close left the segment file");
    size_t len;
    char *buf = th_slurp(logpath, &len);
    cr_assert_str_eq(buf, "a\nb\nc\nd\n");
    free(buf);
    munmap(r, sizeof *r);
}

Test(join, a_directory_at_the_segment_path_is_refused_and_explained)
{
    cr_assert_eq(mkdir(segpath, 0700), 0);
    forklog *log = (forklog *)1;
    char why[512] = "";
    struct forklog_options o = {.error = why, .error_size = sizeof why};
    cr_assert_eq(forklog_open(&log, logpath, &o), -EPERM, "%s", why);
    cr_assert_null(log);
    cr_assert_not_null(strstr(why, "is not the log's segment file"), "%s", why);
    struct stat st;
    cr_assert_eq(lstat(segpath, &st), 0);
    cr_assert(S_ISDIR(st.st_mode), "the directory was left as it was");
}

static void on_alarm(int sig)
{
    (void)sig;
}

Test(join, a_signal_while_waiting_for_the_builder_does_not_fail_the_open)
{
    /* One opener is stopped holding the exclusive flock (it has built the segment); another waits for the shared
     * one, catching a signal every 5 ms with a handler that does not restart calls. Once the builder goes on, the
     * waiter joins. */
    pid_t builder = fork();
    cr_assert_neq(builder, -1);
    if (builder == 0) {
        rc_child();
        fl__crash_arm(FL__CP_SEG_BUILT, 1, FL__CRASH_STOP);
        forklog *log;
        if (forklog_open(&log, logpath, NULL) != 0)
            _exit(3);
        _exit(forklog_close(log) == 0 ? 0 : 4);
    }
    cr_assert(cp_wait_stopped(builder, 10), "the builder did not stop holding the exclusive flock");
    pid_t waiter = fork();
    cr_assert_neq(waiter, -1);
    if (waiter == 0) {
        rc_child();
        struct sigaction sa = {.sa_handler = on_alarm}; /* no SA_RESTART */
        sigemptyset(&sa.sa_mask);
        struct itimerval it = {{0, 5000}, {0, 5000}};
        if (sigaction(SIGALRM, &sa, NULL) < 0 || setitimer(ITIMER_REAL, &it, NULL) < 0)
            _exit(2);
        forklog *log;
        int rc = forklog_open(&log, logpath, NULL);
        struct itimerval off = {{0, 0}, {0, 0}};
        setitimer(ITIMER_REAL, &off, NULL);
        if (rc != 0)
            _exit(rc == -EINTR ? 5 : 3);
        _exit(forklog_close(log) == 0 ? 0 : 4);
    }
    usleep(300000);
    kill(builder, SIGCONT);
    int st = th_wait_for(waiter, 10);
    cr_assert_eq(th_wait_for(builder, 10), 0);
    cr_assert_eq(st, 0, "the waiting opener failed (%d; 5: -EINTR)", st);
}

Test(join, settings_come_from_the_segment_and_a_conflict_is_named)
{
    struct forklog_options a = {
        .flags = FORKLOG_BUFFERED, .buffer_size = 8192, .flush_ms = 50, .rotate_bytes = 4096, .rotate_keep = 3};
    forklog *first = open_ok(&a);
    /* A zeroed struct joins every shared setting. */
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        rc_child();
        forklog *log;
        if (forklog_open(&log, logpath, NULL) != 0)
            _exit(3);
        int ok = (log->flags & FORKLOG_BUFFERED) && log->seg->buf_cap == 8192 && log->flush_ns == 50000000 &&
                 log->rotate_bytes == 4096 && log->rotate_keep == 3;
        _exit(ok ? (forklog_close(log) == 0 ? 0 : 5) : 1);
    }
    cr_assert_eq(th_wait(pid), 0, "a joiner did not take the segment's settings");
    /* Records in the buffer while joiners are refused: a refusal writes, cuts and drops nothing of them. */
    for (int i = 0; i < 3; i++)
        cr_assert_eq(forklog_info(first, "buffered %d", i), 0);
    /* Each explicit value that differs is refused, and named. */
    static const struct {
        struct forklog_options o;
        const char *name;
    } bad[] = {
        {{.rotate_bytes = 100}, "rotate_bytes 100 conflicts with 4096"},
        {{.rotate_keep = 7}, "rotate_keep 7 conflicts with 3"},
        {{.flush_ms = 10}, "flush_ms 10 conflicts with 50"},
        {{.flags = FORKLOG_BUFFERED, .buffer_size = 4096}, "buffer_size 4096 conflicts with 8192"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        forklog *log = (forklog *)1;
        char why[512] = "";
        struct forklog_options o = bad[i].o;
        o.error = why;
        o.error_size = sizeof why;
        cr_assert_eq(forklog_open(&log, logpath, &o), -EINVAL, "%s", bad[i].name);
        cr_assert_null(log);
        cr_assert_not_null(strstr(why, bad[i].name), "\"%s\" does not say \"%s\"", why, bad[i].name);
    }
    /* Equal explicit values join. */
    forklog *same = open_ok(&a);
    cr_assert_eq(forklog_close(same), 0);
    cr_assert_eq(forklog_close(first), 0);
    size_t len;
    char *text = th_slurp(logpath, &len);
    cr_assert_eq(th_count_lines(text, len), 3, "%s", text);
    for (int i = 0; i < 3; i++) {
        char want[32];
        snprintf(want, sizeof want, " buffered %d\n", i);
        cr_assert_not_null(strstr(text, want), "record %d lost:\n%s", i, text);
    }
    free(text);
    /* An unbuffered log refuses a buffered joiner. */
    forklog *plain = open_ok(NULL);
    forklog *log = (forklog *)1;
    char why[512] = "";
    struct forklog_options o = {.flags = FORKLOG_BUFFERED, .error = why, .error_size = sizeof why};
    cr_assert_eq(forklog_open(&log, logpath, &o), -EINVAL);
    cr_assert_not_null(strstr(why, "FORKLOG_BUFFERED"), "%s", why);
    cr_assert_eq(forklog_close(plain), 0);
    /* Once nobody uses the log, an opener's settings are the log's new ones. */
    forklog *again = open_ok(&o);
    cr_assert(again->flags & FORKLOG_BUFFERED);
    cr_assert_eq(forklog_close(again), 0);
}

/* buffer_size without FORKLOG_BUFFERED builds a log without a buffer: the same options must join that log (a
 * program whose configuration always gives a buffer_size, with buffering switched off, opened by two processes),
 * and so must they join a buffered log, whose bit they leave clear. */
Test(join, the_options_that_built_a_log_join_it)
{
    struct forklog_options plain = {.buffer_size = 8192, .flush_ms = 50, .rotate_keep = 3};
    forklog *first = open_ok(&plain);
    cr_assert_not(first->flags & FORKLOG_BUFFERED);
    forklog *second = open_ok(&plain);
    cr_assert_not(second->flags & FORKLOG_BUFFERED);
    cr_assert_eq(forklog_info(second, "second"), 0);
    cr_assert_eq(forklog_close(second), 0);
    cr_assert_eq(forklog_close(first), 0);
    cr_assert_not(seg_exists());

    struct forklog_options buffered = {.flags = FORKLOG_BUFFERED, .buffer_size = 16384};
    first = open_ok(&buffered);
    second = open_ok(&(struct forklog_options){.buffer_size = 8192});
    cr_assert(second->flags & FORKLOG_BUFFERED, "the joiner did not take the log's buffering");
    cr_assert_eq(forklog_close(second), 0);
    cr_assert_eq(forklog_close(first), 0);
}

Test(join, rotation_and_reopen_hold_across_unrelated_processes)
{
    enum { N = 4, RECORDS = 500, KEEP = 1000 };
    struct forklog_options o = {.rotate_bytes = 20000, .rotate_keep = KEEP};
    forklog *log = open_ok(&o);
    struct report *r = new_report();
    pid_t pid[N];
    for (unsigned i = 0; i < N; i++)
        pid[i] = start_opener(r, i, RECORDS, 300, 0, 0);
    for (unsigned i = 0; i < N; i++)
        cr_assert_eq(th_wait_for(pid[i], 30), 0, "writer %u failed", i);
    cr_assert_gt(log->seg->gen, 5, "the unrelated writers rotated the shared file (generation %u)", log->seg->gen);
    cr_assert_eq(forklog_close(log), 0);
    unsigned want[N];
    for (unsigned i = 0; i < N; i++)
        want[i] = RECORDS;
    check_records(N, want, KEEP);
}

Test(join, an_external_reopen_reaches_every_unrelated_writer)
{
    /* Two writers open the log themselves; the log is moved away (as logrotate does) and forklog_reopen() is
     * called through a third, unrelated handle: both writers' next records go to the new file. */
    forklog *log = open_ok(NULL);
    struct report *r = new_report();
    pid_t a = start_opener(r, 0, 1, 50, 0, 1), b = start_opener(r, 1, 1, 50, 0, 1);
    double end = th_now_s() + 10;
    while (atomic_load(&r->opened) < 2 && th_now_s() < end)
        usleep(500);
    cr_assert_eq(forklog_write(log, "old file", 8), 0);
    char *moved = th_path(dir, "join.log.moved");
    cr_assert_eq(rename(logpath, moved), 0);
    cr_assert_eq(forklog_reopen(log), 0);
    atomic_store(&r->go, 1);
    cr_assert_eq(th_wait_for(a, 10), 0);
    cr_assert_eq(th_wait_for(b, 10), 0);
    cr_assert_eq(forklog_close(log), 0);
    size_t len;
    char *old = th_slurp(moved, &len);
    cr_assert_str_eq(old, "old file\n");
    free(old);
    unsigned want[2] = {1, 1};
    check_records(2, want, 0);
    free(moved);
}

Test(join, the_segment_file_is_removed_by_its_last_user_and_left_by_the_dead)
{
    forklog *a = open_ok(NULL);
    cr_assert(seg_exists());
    forklog *b = open_ok(NULL);
    pid_t child = fork();
    cr_assert_neq(child, -1);
    if (child == 0)
        _exit(forklog_close(a) == 0 && forklog_close(b) == 0 ? 0 : 1); /* its parent still holds the file */
    cr_assert_eq(th_wait(child), 0);
    cr_assert(seg_exists(), "a forked child's close removed the file its parent uses");
    cr_assert_eq(forklog_close(a), 0);
    cr_assert(seg_exists(), "the first close removed the file the second handle uses");
    cr_assert_eq(forklog_close(b), 0);
    cr_assert_not(seg_exists(), "the last close left the segment file");
    /* Processes that die holding it leave it (with whatever they buffered); the next open and close clean up. */
    pid_t dead = fork();
    cr_assert_neq(dead, -1);
    if (dead == 0) {
        forklog *log;
        _exit(forklog_open(&log, logpath, NULL) == 0 ? 0 : 1); /* no close */
    }
    cr_assert_eq(th_wait(dead), 0);
    cr_assert(seg_exists());
    forklog *c = open_ok(NULL);
    cr_assert_eq(forklog_close(c), 0);
    cr_assert_not(seg_exists());
    /* A busy machine: many cycles leave nothing behind. */
    for (int i = 0; i < 500; i++) {
        forklog *l = open_ok(NULL);
        cr_assert_eq(forklog_close(l), 0);
    }
    cr_assert_not(seg_exists());
}

static void buffered_survivors(int how)
{
    /* 8 writers, each opening the log itself with FORKLOG_BUFFERED and a buffer that never fills or ages out, all
     * die at once (SIGKILL, or _exit() without forklog_close()). A fresh process opens the log: every record whose
     * call returned is in the file exactly once, none torn. */
    enum { N = 8 };
    struct report *r = new_report();
    pid_t pid[N];
    for (unsigned i = 0; i < N; i++) {
        pid[i] = fork();
        cr_assert_neq(pid[i], -1);
        if (pid[i] == 0) {
            rc_child();
            struct forklog_options o = {.flags = FORKLOG_BUFFERED, .buffer_size = 4 << 20, .flush_ms = 600000};
            forklog *log;
            if (forklog_open(&log, logpath, &o) != 0)
                _exit(3);
            /* Everybody opens before anybody writes: a writer that opened alone after the others died would
             * write out their records itself. */
            atomic_fetch_add(&r->opened, 1);
            while (!atomic_load(&r->go))
                usleep(200);
            char buf[RC_HEAD_MAX + 200];
            unsigned seed = i;
            for (unsigned q = 0; q < 1000; q++) {
                if (rc_write(log, buf, 'R', i, q, 0, rc_size(&seed, 200)) != 0)
                    _exit(4);
                atomic_store(&r->acked[i], q + 1);
                if (how == 1 && q == 999)
                    _exit(0); /* no close */
            }
            pause();
            _exit(6);
        }
    }
    double until = th_now_s() + 20;
    while (atomic_load(&r->opened) < N && th_now_s() < until)
        usleep(500);
    atomic_store(&r->go, 1);
    if (how == 0) {
        /* Kill them at once, some still writing. */
        double end = th_now_s() + 10;
        unsigned total = 0;
        while (th_now_s() < end) {
            total = 0;
            for (unsigned i = 0; i < N; i++)
                total += atomic_load(&r->acked[i]);
            if (total >= N * 300)
                break;
        }
        for (unsigned i = 0; i < N; i++)
            kill(pid[i], SIGKILL);
    }
    for (unsigned i = 0; i < N; i++)
        cr_assert_eq(th_wait_for(pid[i], 20), how == 0 ? 128 + SIGKILL : 0);
    size_t before;
    free(th_slurp(logpath, &before));
    cr_assert_lt(before, 4096,
                 "the records were still in the shared buffer when the writers died (%zu bytes in the file)", before);
    forklog *log = open_ok(NULL);
    cr_assert_eq(forklog_close(log), 0);
    unsigned want[N];
    size_t acked = 0;
    for (unsigned i = 0; i < N; i++)
        acked += want[i] = atomic_load(&r->acked[i]);
    /* The one record in flight of a killed writer was never acknowledged: absent or once. */
    struct rc_seen seen;
    rc_seen_init(&seen, 64, 4096);
    rc_scan(&seen, logpath, 0);
    size_t in_flight = 0;
    for (unsigned i = 0; i < N; i++) {
        for (unsigned q = 0; q < want[i]; q++)
            cr_assert_eq(rc_count(&seen, i, q), 1, "acknowledged record %u/%u is there %u times", i, q,
                         rc_count(&seen, i, q));
        in_flight += rc_count(&seen, i, want[i]);
    }
    cr_assert_eq(seen.records, acked + in_flight);
    fprintf(stderr, "buffered, %s: %zu acknowledged records written by the next open\n",
            how == 0 ? "all killed" : "all _exit()", acked);
    rc_seen_free(&seen);
}

Test(join, buffered_records_survive_every_writer_killed_at_once)
{
    buffered_survivors(0);
}

Test(join, buffered_records_survive_every_writer_exiting_without_close)
{
    buffered_survivors(1);
}

/* The segment is found through the path as given: a path through a symlinked directory names the same directory, so
 * the same segment file and one lock with the real path; a hard link is another name in the directory, so another
 * segment (docs/design.md, "What is guaranteed, and what is not"). A shared setting that conflicts tells which. */
Test(join, a_symlinked_directory_shares_the_segment_and_a_hard_link_does_not)
{
    char *real = th_path(dir, "real"), *alias = th_path(dir, "alias");
    cr_assert_eq(mkdir(real, 0700), 0);
    cr_assert_eq(symlink("real", alias), 0);
    char *by_real = th_path(real, "app.log"), *by_alias = th_path(alias, "app.log"),
         *linked = th_path(real, "hard.log");
    forklog *first;
    cr_assert_eq(forklog_open(&first, by_real, &(struct forklog_options){.rotate_bytes = 4096}), 0);
    cr_assert_eq(link(by_real, linked), 0);
    char why[512] = "";
    struct forklog_options other = {.rotate_bytes = 8192, .error = why, .error_size = sizeof why};
    forklog *log = (forklog *)1;
    cr_assert_eq(forklog_open(&log, by_alias, &other), -EINVAL,
                 "the symlinked directory's path got a segment of its own");
    cr_assert_not_null(strstr(why, "conflicts with 4096"), "%s", why);
    cr_assert_eq(forklog_open(&log, linked, &other), 0, "a hard link shared the segment: %s", why);
    cr_assert_eq(forklog_close(log), 0);
    cr_assert_eq(forklog_close(first), 0);
    cr_assert_eq(unlink(linked), 0);
    cr_assert_eq(unlink(by_real), 0);
    cr_assert_eq(unlink(alias), 0);
    cr_assert_eq(rmdir(real), 0);
    free(linked);
    free(by_alias);
    free(by_real);
    free(alias);
    free(real);
}

/* Removes what the moved-directory tests below leave: the log at path in the directory sub, the moved directory with
 * the old log (and the old segment file, when the test leaves it), and frees the three names. */
static void remove_moved_log(char *sub, char *moved, char *path)
{
    char *old_log = th_path(moved, "app.log"), *old_seg = th_path(moved, ".app.log.forklog");
    cr_assert_eq(unlink(old_log), 0);
    unlink(old_seg);
    cr_assert_eq(unlink(path), 0);
    cr_assert_eq(rmdir(moved), 0);
    cr_assert_eq(rmdir(sub), 0);
    free(old_seg);
    free(old_log);
    free(path);
    free(moved);
    free(sub);
}

/* Opens `path` (in the new directory `sub`) as *old and writes "old one"; moves `sub` to `moved` and makes a new
 * `sub`; opens `path` there as *fresh and writes "new one". */
static void open_then_move_the_directory(const char *sub, const char *moved, const char *path, forklog **old,
                                         forklog **fresh)
{
    cr_assert_eq(mkdir(sub, 0700), 0);
    cr_assert_eq(forklog_open(old, path, NULL), 0);
    cr_assert_eq(forklog_info(*old, "old one"), 0);
    cr_assert_eq(rename(sub, moved), 0);
    cr_assert_eq(mkdir(sub, 0700), 0);
    cr_assert_eq(forklog_open(fresh, path, NULL), 0);
    cr_assert_eq(forklog_info(*fresh, "new one"), 0);
}

/* The log's directory moved away and a new one made at its name (an archiving job, or a symlink to the directory
 * pointed elsewhere), and the old processes told to reopen: the path now names a file in the new directory, and a
 * process started since has built the segment there. A handle of the old segment must not write that file under its
 * own lock: its cut after a failed write went back to where its own records ended and took the new process's
 * acknowledged records with it. The old handle's records fail with -ESTALE instead; the new process keeps every
 * record. */
Test(join, a_reopen_into_a_directory_that_another_segment_serves_fails_and_cuts_nothing)
{
    char *sub = th_path(dir, "app"), *moved = th_path(dir, "app.old"), *path = th_path(sub, "app.log");
    forklog *old, *fresh;
    open_then_move_the_directory(sub, moved, path, &old, &fresh);
    cr_assert_eq(forklog_reopen(old), 0);
    int old_two = forklog_info(old, "old two");
    cr_assert_eq(forklog_info(fresh, "new two"), 0);
    cr_assert_eq(forklog_info(fresh, "new three"), 0);
    /* A worker of the old handle whose write is cut short (RLIMIT_FSIZE, as a full disk would) cuts it back. */
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        struct stat st;
        if (stat(path, &st) < 0)
            _exit(3);
        struct rlimit rl = {(rlim_t)st.st_size + 10, (rlim_t)st.st_size + 10};
        if (setrlimit(RLIMIT_FSIZE, &rl) < 0)
            _exit(3);
        char big[200];
        memset(big, 'x', sizeof big - 1);
        big[sizeof big - 1] = '\0';
        int rc = forklog_info(old, "%s", big);
        _exit(rc == -ESTALE ? 0 : rc == -EFBIG ? 1 : 2);
    }
    int st = th_wait(pid);
    cr_assert_eq(forklog_close(fresh), 0);
    cr_assert_eq(forklog_close(old), 0);
    size_t len;
    char *text = th_slurp(path, &len);
    cr_assert_not_null(text);
    cr_assert_not_null(strstr(text, "new two"), "an acknowledged record of the new directory's log was cut:\n%s", text);
    cr_assert_not_null(strstr(text, "new three"), "an acknowledged record of the new directory's log was cut:\n%s",
                       text);
    cr_assert_null(strstr(text, "old two"), "the old segment's handle wrote into the new directory's log:\n%s", text);
    cr_assert_eq(old_two, -ESTALE);
    cr_assert_eq(st, 0, "the old handle's worker wrote into the new directory's log (exit %d)", st);
    free(text);
    remove_moved_log(sub, moved, path);
}

/* The same move with a buffered handle (a buffer per writer thread, no rotation), where a record call takes no lock
 * and looks at no file: after the reopen, record calls go on returning 0 until the thread's buffer is full, and only
 * the call that must then write it fails with -ESTALE, as do forklog_flush() and forklog_close(). Every record
 * taken stays in the handle's segment file, in the moved directory, and goes into the log there, whole and once,
 * when a process next opens it; nothing of it reaches the new directory's log. */
Test(join, a_buffered_handle_whose_reopen_finds_another_segment_keeps_its_records_for_the_moved_log)
{
    char *sub = th_path(dir, "app"), *moved = th_path(dir, "app.old"), *path = th_path(sub, "app.log");
    cr_assert_eq(mkdir(sub, 0700), 0);
    forklog *old, *fresh;
    struct forklog_options o = {.flags = FORKLOG_BUFFERED, .flush_ms = 600000, .buffer_size = 4096};
    cr_assert_eq(forklog_open(&old, path, &o), 0);
    cr_assert_eq(forklog_info(old, "old 0"), 0);
    cr_assert_eq(rename(sub, moved), 0);
    cr_assert_eq(mkdir(sub, 0700), 0);
    cr_assert_eq(forklog_open(&fresh, path, NULL), 0);
    cr_assert_eq(forklog_info(fresh, "new one"), 0);
    cr_assert_eq(forklog_reopen(old), 0);
    cr_assert_eq(forklog_flush(old), -ESTALE);
    int taken = 1, rc = 0;
    while (taken < 1000 && (rc = forklog_info(old, "old %d %060d", taken, 0)) == 0)
        taken++;
    cr_assert_eq(rc, -ESTALE, "record %d: %d", taken, rc);
    cr_assert_gt(taken, 2, "the buffer took no record after the reopen");
    cr_assert_eq(forklog_close(old), -ESTALE);
    cr_assert_eq(forklog_close(fresh), 0);
    size_t len;
    char *text = th_slurp(path, &len);
    cr_assert_not_null(strstr(text, " new one\n"), "the new log holds: %s", text);
    cr_assert_eq(th_count_lines(text, len), 1, "the new log holds: %s", text);
    free(text);
    char *old_log = th_path(moved, "app.log");
    forklog *again;
    cr_assert_eq(forklog_open(&again, old_log, NULL), 0);
    cr_assert_eq(forklog_close(again), 0);
    text = th_slurp(old_log, &len);
    cr_assert_eq(th_count_lines(text, len), (size_t)taken, "%d records taken, the moved log holds:\n%s", taken, text);
    const char *at = text;
    for (int i = 0; i < taken; i++) {
        char want[96];
        if (i == 0)
            snprintf(want, sizeof want, " old 0\n");
        else
            snprintf(want, sizeof want, " old %d %060d\n", i, 0);
        const char *found = strstr(at, want);
        cr_assert_not_null(found, "record %d is missing or out of order:\n%s", i, text);
        cr_assert_null(strstr(found + 1, want), "record %d twice", i);
        at = found + strlen(want);
    }
    free(text);
    free(old_log);
    remove_moved_log(sub, moved, path);
}

/* The same move with nobody in the new directory yet: the old handle's reopen takes its segment file there, so that a
 * process that opens the path afterwards joins it (its conflicting setting is refused) instead of building a second
 * lock over the same file, and nothing is left behind in the moved directory. */
Test(join, a_reopen_into_a_new_directory_takes_the_segment_there)
{
    char *sub = th_path(dir, "app"), *moved = th_path(dir, "app.old"), *path = th_path(sub, "app.log"),
         *seg = th_path(sub, ".app.log.forklog"), *old_seg = th_path(moved, ".app.log.forklog");
    cr_assert_eq(mkdir(sub, 0700), 0);
    forklog *old, *fresh = (forklog *)1;
    cr_assert_eq(forklog_open(&old, path, &(struct forklog_options){.rotate_bytes = 4096}), 0);
    cr_assert_eq(forklog_info(old, "old one"), 0);
    cr_assert_eq(rename(sub, moved), 0);
    cr_assert_eq(mkdir(sub, 0700), 0);
    cr_assert_eq(forklog_reopen(old), 0);
    cr_assert_eq(forklog_info(old, "old two"), 0);
    struct stat st;
    cr_assert_eq(stat(seg, &st), 0, "the segment did not follow the reopen into the new directory");
    cr_assert_neq(stat(old_seg, &st), 0, "the moved directory still holds the segment file");
    char why[512] = "";
    cr_assert_eq(forklog_open(&fresh, path,
                              &(struct forklog_options){.rotate_bytes = 8192, .error = why, .error_size = sizeof why}),
                 -EINVAL, "a new opener built a second segment over the file the old handle writes");
    cr_assert_not_null(strstr(why, "conflicts with 4096"), "%s", why);
    cr_assert_eq(forklog_open(&fresh, path, NULL), 0);
    cr_assert_eq(forklog_info(fresh, "new one"), 0);
    cr_assert_eq(forklog_info(old, "old three"), 0);
    cr_assert_eq(forklog_close(fresh), 0);
    cr_assert_eq(forklog_close(old), 0);
    cr_assert_neq(stat(seg, &st), 0, "the last user left the segment file");
    size_t len;
    char *text = th_slurp(path, &len);
    cr_assert_not_null(text);
    cr_assert_eq(th_count_lines(text, len), 3, "%s", text);
    free(text);
    free(old_seg);
    free(seg);
    remove_moved_log(sub, moved, path);
}

/* The log's directory moved away and a new one made at its name, and no reopen since: the handle's last close removes
 * its segment file in the moved directory, where it is, and leaves the one another user holds in the new directory. */
Test(join, a_last_close_after_the_logs_directory_moved_removes_the_segment_file_where_it_is)
{
    char *sub = th_path(dir, "app"), *moved = th_path(dir, "app.old"), *path = th_path(sub, "app.log"),
         *seg = th_path(sub, ".app.log.forklog"), *old_seg = th_path(moved, ".app.log.forklog"),
         *old_log = th_path(moved, "app.log");
    forklog *old, *fresh;
    open_then_move_the_directory(sub, moved, path, &old, &fresh);
    cr_assert_eq(forklog_info(old, "old two"), 0);
    cr_assert_eq(forklog_close(old), 0);
    struct stat st;
    cr_assert_neq(stat(old_seg, &st), 0, "the last user of the moved directory's segment file left it");
    cr_assert_eq(stat(seg, &st), 0, "the close removed the segment file another user holds");
    cr_assert_eq(forklog_info(fresh, "new two"), 0);
    cr_assert_eq(forklog_close(fresh), 0);
    cr_assert_neq(stat(seg, &st), 0, "the last user left the segment file");
    const char *want[2][2] = {{"old one", "old two"}, {"new one", "new two"}};
    char *files[2] = {old_log, path};
    for (int k = 0; k < 2; k++) {
        size_t len;
        char *text = th_slurp(files[k], &len);
        cr_assert_not_null(text);
        cr_assert_eq(th_count_lines(text, len), 2, "%s", text);
        for (int i = 0; i < 2; i++) {
            const char *at = strstr(text, want[k][i]);
            cr_assert(at && !strstr(at + 1, want[k][i]), "%s is not once in %s: %s", want[k][i], files[k], text);
        }
        free(text);
    }
    free(old_log);
    free(old_seg);
    free(seg);
    remove_moved_log(sub, moved, path);
}

/* The same move, where the log file that the handle writes is no longer in the moved directory: the archiving job took
 * it elsewhere (or the log's name is a symlink to a file in another directory). The segment file of the handle that
 * built the segment was created unnamed (O_TMPFILE), so /proc names it by its directory alone: its reopen must still
 * find it there and take it into the new directory, which nobody serves, rather than fail with -ESTALE for ever. */
Test(join, a_builders_reopen_into_a_new_directory_takes_the_segment_there_when_the_log_file_moved_elsewhere)
{
    char *sub = th_path(dir, "app"), *moved = th_path(dir, "app.old"), *path = th_path(sub, "app.log"),
         *seg = th_path(sub, ".app.log.forklog"), *old_seg = th_path(moved, ".app.log.forklog"),
         *old_log = th_path(moved, "app.log"), *archived = th_path(dir, "app.log.1");
    cr_assert_eq(mkdir(sub, 0700), 0);
    forklog *old;
    cr_assert_eq(forklog_open(&old, path, NULL), 0);
    cr_assert_eq(forklog_info(old, "old one"), 0);
    cr_assert_eq(rename(sub, moved), 0);
    cr_assert_eq(rename(old_log, archived), 0);
    cr_assert_eq(mkdir(sub, 0700), 0);
    cr_assert_eq(forklog_reopen(old), 0);
    int rc = forklog_info(old, "old two");
    struct stat st;
    int seg_there = stat(seg, &st) == 0;
    cr_assert_eq(forklog_close(old), 0);
    cr_assert_eq(rc, 0, "the reopen into a directory that nobody serves failed: %s", strerror(-rc));
    cr_assert(seg_there, "the segment did not follow the reopen into the new directory");
    size_t len;
    char *text = th_slurp(path, &len);
    cr_assert_not_null(text);
    cr_assert_eq(th_count_lines(text, len), 1, "%s", text);
    free(text);
    cr_assert_eq(rename(archived, old_log), 0); /* back where remove_moved_log() looks for it */
    free(archived);
    free(old_log);
    free(old_seg);
    free(seg);
    remove_moved_log(sub, moved, path);
}

/* The log's directory moved away and none made at its name yet: the path cannot be opened, and a reopen says so with
 * the error docs/api.md gives for it (-ENOENT), not -ESTALE, whose advice (close the handle and open the log again)
 * does not apply: once the directory is back, with nobody serving it, the same handle's next record goes there. */
Test(join, a_reopen_into_a_directory_that_is_gone_is_enoent_until_it_is_back)
{
    char *sub = th_path(dir, "app"), *moved = th_path(dir, "app.old"), *path = th_path(sub, "app.log");
    cr_assert_eq(mkdir(sub, 0700), 0);
    forklog *log;
    cr_assert_eq(forklog_open(&log, path, NULL), 0);
    cr_assert_eq(forklog_info(log, "one"), 0);
    cr_assert_eq(rename(sub, moved), 0);
    cr_assert_eq(forklog_reopen(log), 0);
    int gone = forklog_info(log, "two");
    cr_assert_eq(mkdir(sub, 0700), 0);
    int back = forklog_info(log, "three");
    cr_assert_eq(forklog_close(log), 0);
    cr_assert_eq(gone, -ENOENT, "a reopen into a directory that is gone: %d (%s)", gone, strerror(-gone));
    cr_assert_eq(back, 0, "%s", strerror(-back));
    size_t len;
    char *text = th_slurp(path, &len);
    cr_assert_not_null(text);
    cr_assert_eq(th_count_lines(text, len), 1, "%s", text);
    free(text);
    remove_moved_log(sub, moved, path);
}

/* A deploy's directories: dir/v1 and dir/v2, and dir/cur a symlink to v1; the log is named through it. */
struct deploy {
    char *v1, *v2, *cur, *path, *v1_log, *v2_log, *v1_seg, *v2_seg;
};

static void deploy_make(struct deploy *d)
{
    d->v1 = th_path(dir, "v1");
    d->v2 = th_path(dir, "v2");
    d->cur = th_path(dir, "cur");
    d->path = th_path(d->cur, "app.log");
    d->v1_log = th_path(d->v1, "app.log");
    d->v2_log = th_path(d->v2, "app.log");
    d->v1_seg = th_path(d->v1, ".app.log.forklog");
    d->v2_seg = th_path(d->v2, ".app.log.forklog");
    cr_assert_eq(mkdir(d->v1, 0700), 0);
    cr_assert_eq(mkdir(d->v2, 0700), 0);
    cr_assert_eq(symlink("v1", d->cur), 0);
    snprintf(flip_link, sizeof flip_link, "%s", d->cur);
    snprintf(flip_to, sizeof flip_to, "v2");
    flipped = 0;
}

static void deploy_free(struct deploy *d)
{
    char **all[] = {&d->v1, &d->v2, &d->cur, &d->path, &d->v1_log, &d->v2_log, &d->v1_seg, &d->v2_seg};
    for (size_t k = 0; k < sizeof all / sizeof all[0]; k++)
        free(*all[k]);
}

/* How many times `what` occurs in the file at `path`, whose lines must number `lines`, each a whole record. */
static void deploy_expect(const char *path, size_t lines, const char *const *what, size_t n)
{
    size_t len = 0;
    char *text = th_slurp(path, &len);
    cr_assert_not_null(text, "%s is missing", path);
    cr_assert_eq(th_count_lines(text, len), lines, "%s:\n%s", path, text);
    cr_assert(len == 0 || text[len - 1] == '\n', "%s ends in a torn record:\n%s", path, text);
    cr_assert_null(strstr(text, "xxxx"), "a cut left part of a failed record in %s:\n%s", path, text);
    for (size_t k = 0; k < n; k++) {
        const char *at = strstr(text, what[k]);
        cr_assert_not_null(at, "the acknowledged record \"%s\" is not in %s:\n%s", what[k], path, text);
        cr_assert_null(strstr(at + 1, what[k]), "\"%s\" is twice in %s:\n%s", what[k], path, text);
    }
    free(text);
}

/* Whether the descriptor fd and the file at path are one file. */
static int same_file(int fd, const char *path)
{
    struct stat a, b;
    return fstat(fd, &a) == 0 && stat(path, &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev;
}

/* A record that fails part way, from a child of the handle: its file may grow by 10 bytes more only (RLIMIT_FSIZE,
 * as a full disk would), so the write is cut short and the lock's holder cuts the file back to where the lock says
 * it ended. Returns the child's exit status: 0 when the record failed with -EFBIG. */
static int failed_record_cut_back(forklog *log)
{
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        struct stat st;
        if (fstat(log->fd, &st) < 0)
            _exit(3);
        struct rlimit rl = {(rlim_t)st.st_size + 10, (rlim_t)st.st_size + 10};
        if (setrlimit(RLIMIT_FSIZE, &rl) < 0)
            _exit(3);
        char big[200];
        memset(big, 'x', sizeof big - 1);
        big[sizeof big - 1] = '\0';
        _exit(forklog_info(log, "%s", big) == -EFBIG ? 0 : 1);
    }
    return th_wait(pid);
}

/* A deploy flips the log's symlinked directory (cur -> v1 becomes cur -> v2) while a process opens cur/app.log, after
 * it found v1's file and v1's segment file: the open resolves the directory once, so the process keeps the file and
 * the lock of v1, wherever cur points by the time it looks again. Had it looked cur up again, it would have built a
 * segment in v2 over v1's file: two locks on one file, and its cut after a failed write would take the records that
 * v1's other users wrote meanwhile. */
Test(join, an_open_through_a_symlinked_directory_flipped_midway_keeps_one_directorys_file_and_lock)
{
    struct deploy d;
    deploy_make(&d);
    forklog *old;
    cr_assert_eq(forklog_open(&old, d.v1_log, NULL), 0);
    cr_assert_eq(forklog_info(old, "old one"), 0);
    int go[2], back[2];
    cr_assert_eq(pipe(go), 0);
    cr_assert_eq(pipe(back), 0);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        fl__crash_arm(FL__CP_SEG_JOIN_LOCKED, 1, FL__CRASH_STOP); /* found v1's file and v1's segment file */
        forklog *log;
        if (forklog_open(&log, d.path, NULL) != 0)
            _exit(3);
        struct stat seg;
        char c = fstat(log->seg_fd, &seg) == 0 ? 'o' : 'e';
        if (write(back[1], &c, 1) != 1 || write(back[1], &seg.st_ino, sizeof seg.st_ino) != sizeof seg.st_ino ||
            read(go[0], &c, 1) != 1)
            _exit(4);
        if (forklog_info(log, "new one") != 0)
            _exit(5);
        int cut = failed_record_cut_back(log);
        _exit(forklog_close(log) == 0 && cut == 0 ? 0 : 6);
    }
    cr_assert(cp_wait_stopped(pid, 10), "the opener did not stop at SEG_JOIN_LOCKED");
    cr_assert_eq(flip_symlink(d.cur, "v2"), 0);
    kill(pid, SIGCONT);
    char c = 0;
    ino_t seg_ino = 0;
    cr_assert_eq(read(back[0], &c, 1), 1, "the opener's open failed");
    cr_assert_eq(read(back[0], &seg_ino, sizeof seg_ino), (ssize_t)sizeof seg_ino);
    cr_assert_eq(forklog_info(old, "old two"), 0);
    cr_assert_eq(forklog_info(old, "old three"), 0);
    cr_assert_eq(write(go[1], "g", 1), 1);
    int st = th_wait(pid);
    struct stat v1_seg, v2_seg;
    cr_assert_eq(stat(d.v1_seg, &v1_seg), 0);
    int v2_seg_there = stat(d.v2_seg, &v2_seg) == 0;
    cr_assert_eq(forklog_close(old), 0);
    cr_assert_eq(st, 0, "the flipped opener failed (exit %d)", st);
    cr_assert_eq(seg_ino, v1_seg.st_ino, "the flipped opener took another lock than the one of the file it writes");
    cr_assert_not(v2_seg_there, "the flipped opener built a segment in v2");
    const char *const want[] = {"old one", "new one", "old two", "old three"};
    deploy_expect(d.v1_log, 4, want, 4);
    struct stat none;
    cr_assert_neq(stat(d.v2_log, &none), 0, "the flipped opener created a file in v2");
    close(go[0]);
    close(go[1]);
    close(back[0]);
    close(back[1]);
    deploy_free(&d);
}

/* The same flip at the very instant the open has the log file (v1's) and has not yet looked for its segment file: the
 * segment file is looked for in the directory where the log file was found, v1, and not in v2, where the open would
 * have built a second lock over v1's file. */
Test(join, an_open_through_a_symlinked_directory_flipped_right_after_the_log_file_takes_that_directorys_lock)
{
    struct deploy d;
    deploy_make(&d);
    forklog *old, *log;
    cr_assert_eq(forklog_open(&old, d.v1_log, NULL), 0);
    cr_assert_eq(forklog_info(old, "old one"), 0);
    flip_log_name = "app.log";
    int rc = forklog_open(&log, d.path, NULL);
    flip_log_name = NULL;
    cr_assert_eq(flipped, 1, "the test could not flip the directory during the open");
    cr_assert_eq(rc, 0, "%s", strerror(-rc));
    cr_assert(same_file(log->fd, d.v1_log), "the open did not take the file it found first");
    cr_assert(same_file(log->seg_fd, d.v1_seg), "the open took another lock than the one of the file it writes");
    cr_assert_eq(forklog_info(log, "new one"), 0);
    cr_assert_eq(forklog_info(old, "old two"), 0);
    cr_assert_eq(forklog_info(old, "old three"), 0);
    int cut = failed_record_cut_back(log);
    cr_assert_eq(forklog_close(log), 0);
    cr_assert_eq(forklog_close(old), 0);
    cr_assert_eq(cut, 0, "the failed record (exit %d)", cut);
    struct stat none;
    cr_assert_neq(stat(d.v2_seg, &none), 0, "the open left a segment file in v2");
    cr_assert_neq(stat(d.v2_log, &none), 0, "the open created a file in v2");
    const char *const want[] = {"old one", "new one", "old two", "old three"};
    deploy_expect(d.v1_log, 4, want, 4);
    deploy_free(&d);
}

/* The same flip during a reopen, right after the handle found its own segment file at cur's directory (v1) and before
 * it opens cur/app.log again: the reopen opens v1's file, in the directory where it found its segment, and not v2's,
 * which v2's own segment serves. Writing v2's file under v1's lock, its cut after a failed write went back to where
 * v1's lock said the file ended and took the records that v2's users wrote meanwhile. */
Test(join, a_reopen_through_a_symlinked_directory_flipped_midway_keeps_one_directorys_file_and_lock)
{
    struct deploy d;
    deploy_make(&d);
    forklog *fresh, *h;
    cr_assert_eq(forklog_open(&fresh, d.v2_log, NULL), 0);
    cr_assert_eq(forklog_info(fresh, "fresh one"), 0);
    cr_assert_eq(forklog_open(&h, d.path, NULL), 0);
    cr_assert_eq(forklog_info(h, "h one"), 0);
    cr_assert_eq(forklog_reopen(h), 0);
    flip_seg_name = ".app.log.forklog";
    int rc = forklog_info(h, "h two");
    flip_seg_name = NULL;
    cr_assert_eq(flipped, 1, "the test could not flip the directory during the reopen");
    cr_assert_eq(rc, 0, "%s", strerror(-rc));
    cr_assert(same_file(h->fd, d.v1_log), "the reopen took the file of the directory flipped to");
    cr_assert(same_file(h->seg_fd, d.v1_seg), "the reopen's handle has another lock than v1's");
    cr_assert_eq(forklog_info(fresh, "fresh two"), 0);
    cr_assert_eq(forklog_info(fresh, "fresh three"), 0);
    int cut = failed_record_cut_back(h);
    cr_assert_eq(forklog_close(h), 0);
    cr_assert_eq(forklog_close(fresh), 0);
    cr_assert_eq(cut, 0, "the failed record of the reopened handle (exit %d)", cut);
    const char *const mine[] = {"h one", "h two"}, *const theirs[] = {"fresh one", "fresh two", "fresh three"};
    deploy_expect(d.v1_log, 2, mine, 2);
    deploy_expect(d.v2_log, 3, theirs, 3);
    deploy_free(&d);
}

/* The same flip during a rotation, after the rotator checked its segment file and the names at cur's directory (v1),
 * before the first rename (ROTATE_BEGIN): the renames and the new file are v1's, and v2's file, which v2's own segment
 * serves, is neither renamed nor replaced. */
Test(join, a_rotation_through_a_symlinked_directory_flipped_midway_renames_one_directorys_files)
{
    struct deploy d;
    deploy_make(&d);
    const struct forklog_options o = {.rotate_bytes = 300, .rotate_keep = 3};
    forklog *fresh, *h;
    cr_assert_eq(forklog_open(&fresh, d.v2_log, &o), 0);
    cr_assert_eq(forklog_info(fresh, "fresh one"), 0);
    cr_assert_eq(forklog_open(&h, d.path, &o), 0);
    char pad[160];
    memset(pad, 'p', sizeof pad - 1);
    pad[sizeof pad - 1] = '\0';
    cr_assert_eq(forklog_info(h, "h one %s", pad), 0);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        fl__crash_arm(FL__CP_ROTATE_BEGIN, 1, FL__CRASH_STOP);
        _exit(forklog_info(h, "h two %s", pad) == 0 && fl__crash_hits(FL__CP_ROTATE_BEGIN) == 1 ? 0 : 1);
    }
    cr_assert(cp_wait_stopped(pid, 10), "the rotator did not stop at ROTATE_BEGIN");
    cr_assert_eq(flip_symlink(d.cur, "v2"), 0);
    kill(pid, SIGCONT);
    int st = th_wait(pid);
    cr_assert_eq(forklog_info(fresh, "fresh two"), 0);
    cr_assert_eq(forklog_close(h), 0);
    cr_assert_eq(forklog_close(fresh), 0);
    cr_assert_eq(st, 0, "the rotating record (exit %d)", st);
    char *v1_rotated = th_path(d.v1, "app.log.1"), *v2_rotated = th_path(d.v2, "app.log.1");
    struct stat none;
    cr_assert_neq(stat(v2_rotated, &none), 0, "the rotation renamed v2's file, which another lock serves");
    const char *const one[] = {"h one"}, *const two[] = {"h two"}, *const theirs[] = {"fresh one", "fresh two"};
    deploy_expect(v1_rotated, 1, one, 1);
    deploy_expect(d.v1_log, 1, two, 1);
    deploy_expect(d.v2_log, 2, theirs, 2);
    free(v2_rotated);
    free(v1_rotated);
    deploy_free(&d);
}

/* The segment file's name is the log's with 9 bytes more (`.NAME.forklog`): a log name that the file system takes
 * but whose segment name it does not is -ENAMETOOLONG, with the segment file named in the explanation. */
Test(join, a_log_name_too_long_for_its_segment_file_is_enametoolong)
{
    long name_max = pathconf(dir, _PC_NAME_MAX);
    if (name_max < 16 || name_max > 1024)
        cr_skip_test("no usable NAME_MAX here (%ld)", name_max);
    char name[1040];
    for (int extra = 0; extra <= 9; extra++) {
        size_t n = (size_t)name_max - 9 + (size_t)extra;
        memset(name, 'x', n);
        name[n] = '\0';
        char *path = th_path(dir, name);
        char why[1600] = "";
        struct forklog_options o = {.error = why, .error_size = sizeof why};
        forklog *log = (forklog *)1;
        int rc = forklog_open(&log, path, &o);
        if (extra == 0) {
            cr_assert_eq(rc, 0, "a %zu-byte name: %s", n, why);
            cr_assert_eq(forklog_close(log), 0);
        } else {
            cr_assert_eq(rc, -ENAMETOOLONG, "a %zu-byte name: %d (%s)", n, rc, why);
            cr_assert_null(log);
            cr_assert_not_null(strstr(why, "segment file"), "%s", why);
        }
        unlink(path);
        free(path);
    }
}

/* The same for the whole path: the segment file's path is 9 bytes longer than the log's, so a log path of
 * PATH_MAX - 10 bytes opens and one of PATH_MAX - 9 (which open(2) takes) is -ENAMETOOLONG, as documented. */
Test(join, a_log_path_too_long_for_its_segment_file_is_enametoolong)
{
    char *deep = malloc(PATH_MAX + 64);
    cr_assert_not_null(deep);
    strcpy(deep, dir);
    char comp[201];
    memset(comp, 'd', 200);
    comp[200] = '\0';
    while (strlen(deep) + 201 < PATH_MAX - 40) {
        strcat(deep, "/");
        strcat(deep, comp);
        cr_assert(mkdir(deep, 0755) == 0 || errno == EEXIST, "mkdir: %s", strerror(errno));
    }
    size_t dl = strlen(deep);
    char *path = malloc(PATH_MAX + 64);
    cr_assert_not_null(path);
    for (size_t len = PATH_MAX - 10; len <= PATH_MAX - 1; len++) {
        size_t n = len - dl - 1;
        snprintf(path, PATH_MAX + 64, "%s/%0*d", deep, (int)n, 0);
        cr_assert_eq(strlen(path), len);
        forklog *log = (forklog *)1;
        int rc = forklog_open(&log, path, NULL);
        if (len == PATH_MAX - 10) {
            cr_assert_eq(rc, 0, "a %zu-byte path: %d", len, rc);
            cr_assert_eq(forklog_close(log), 0);
        } else {
            cr_assert_eq(rc, -ENAMETOOLONG, "a %zu-byte path: %d", len, rc);
            cr_assert_null(log);
        }
        unlink(path);
    }
    free(path);
    free(deep);
}

/* Fills the descriptor table up to the soft RLIMIT_NOFILE (lowered to 64) but `free` numbers; returns how many it
 * took (closed by the caller's _exit). In a child only. */
static int fill_descriptors(int free)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return -1;
    rl.rlim_cur = 64;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
        return -1;
    int fds[64], n = 0, fd;
    while (n < 64 && (fd = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0)
        fds[n++] = fd;
    for (int k = 0; k < free && n > 0; k++)
        close(fds[--n]);
    return n;
}

/* A process with few descriptors free: an open, which holds the log's directory as well as the log file and the
 * segment file while it builds, still reads the machine's boot id into the segment (with three free), and the last
 * close, with none free, still removes the segment file. */
Test(join, a_process_at_its_descriptor_limit_builds_a_whole_segment_and_removes_it_at_close)
{
    char boot[37] = {0};
    int bfd = open("/proc/sys/kernel/random/boot_id", O_RDONLY);
    if (bfd < 0 || read(bfd, boot, 36) != 36)
        cr_skip_test("no boot id here");
    close(bfd);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        if (fill_descriptors(3) < 0)
            _exit(77);
        char *probe = th_path(dir, "probe"), *probe2 = th_path(dir, "probe2");
        int a = open(probe, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        int b = open(probe2, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        int c = open("/dev/null", O_RDONLY | O_CLOEXEC);
        int d = open("/dev/null", O_RDONLY | O_CLOEXEC);
        /* Three free, as the kernel counts them (Valgrind keeps a limit of its own). */
        if (a < 0 || b < 0 || c < 0 || d >= 0)
            _exit(77);
        close(a), close(b), close(c), unlink(probe), unlink(probe2);
        forklog *log;
        if (forklog_open(&log, logpath, NULL) != 0)
            _exit(2);
        if (memcmp(log->seg->head.boot, boot, 36) != 0)
            _exit(3); /* the builder could not read the boot id: a segment of an earlier boot would be trusted */
        if (forklog_write(log, "at the limit", 12) != 0)
            _exit(4);
        while (open("/dev/null", O_RDONLY | O_CLOEXEC) >= 0) {
        }
        if (forklog_close(log) != 0)
            _exit(5);
        struct stat st;
        _exit(stat(segpath, &st) == 0 ? 6 : 0);
    }
    int st = th_wait(pid);
    if (st == 77)
        cr_skip_test("RLIMIT_NOFILE does not hold here as the kernel's does (under Valgrind, say)");
    cr_assert_eq(st, 0, "failed at step %d (3: no boot id in the segment; 6: the segment file left)", st);
    size_t len;
    char *text = th_slurp(logpath, &len);
    cr_assert_str_eq(text, "at the limit\n");
    free(text);
}

Test(join, a_private_segment_creates_no_file_and_is_not_shared)
{
    struct forklog_options o = {.flags = FORKLOG_PRIVATE};
    forklog *a = open_ok(&o);
    forklog *b = open_ok(&o);
    cr_assert_not(seg_exists());
    cr_assert_neq(a->seg, b->seg);
    cr_assert_eq(forklog_write(a, "a", 1), 0);
    cr_assert_eq(forklog_write(b, "b", 1), 0);
    cr_assert_eq(forklog_close(a), 0);
    cr_assert_eq(forklog_close(b), 0);
    /* A FIFO, a device: always private, nothing created beside them. */
    char *fifo = th_path(dir, "fifo");
    cr_assert_eq(mkfifo(fifo, 0600), 0);
    int rd = open(fifo, O_RDONLY | O_NONBLOCK);
    forklog *f;
    cr_assert_eq(forklog_open(&f, fifo, NULL), 0);
    cr_assert_eq(f->seg_fd, -1);
    cr_assert_eq(forklog_close(f), 0);
    close(rd);
    char *hidden = th_path(dir, ".fifo.forklog");
    cr_assert_neq(access(hidden, F_OK), 0);
    free(hidden);
    free(fifo);
}

/* A private handle is not serialised with the log's other users, but what they wrote is not its to cut: a write of
 * its own that fails (here EFBIG, past RLIMIT_FSIZE, after part of the record went in) cuts the file back to where
 * it ended just before that record, not to where it ended when the private handle last wrote. */
Test(join, a_failed_write_of_a_private_handle_keeps_what_the_other_users_wrote)
{
    struct forklog_options po = {.flags = FORKLOG_PRIVATE};
    forklog *p = open_ok(&po);
    char buf[RC_HEAD_MAX + 200];
    cr_assert_eq(rc_write(p, buf, 'R', 1, 0, 0, 20), 0);
    forklog *shared = open_ok(NULL);
    for (unsigned q = 0; q < 100; q++)
        cr_assert_eq(rc_write(shared, buf, 'R', 0, q, 0, 100), 0);
    cr_assert_eq(forklog_close(shared), 0);
    size_t before;
    free(th_slurp(logpath, &before));
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl = {before + 10, before + 10};
        if (setrlimit(RLIMIT_FSIZE, &rl) < 0)
            _exit(2);
        _exit(rc_write(p, buf, 'R', 1, 1, 0, 200) == -EFBIG ? 0 : 1);
    }
    cr_assert_eq(th_wait(pid), 0, "the private handle's record did not fail with EFBIG");
    size_t after;
    free(th_slurp(logpath, &after));
    cr_assert_eq(after, before, "the file went from %zu to %zu bytes: the failed write cut other records", before,
                 after);
    cr_assert_eq(forklog_close(p), 0);
    unsigned want[2] = {100, 1};
    check_records(2, want, 0);
}

/* The same after a generation change: a process of the private handle's tree that moves to the generation another
 * one started (here a forklog_reopen() of the parent) takes the size that process saw, and the log's other users
 * append after it; its failed write cuts back to where the file ended just before its record. */
Test(join, a_failed_write_of_a_private_handle_after_a_reopen_keeps_what_the_other_users_wrote)
{
    struct forklog_options po = {.flags = FORKLOG_PRIVATE};
    forklog *p = open_ok(&po);
    char buf[RC_HEAD_MAX + 200];
    cr_assert_eq(rc_write(p, buf, 'R', 1, 0, 0, 20), 0);
    int go[2];
    cr_assert_eq(pipe(go), 0);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        close(go[1]);
        size_t before;
        if (read(go[0], &before, sizeof before) != (ssize_t)sizeof before)
            _exit(3);
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl = {before + 10, before + 10};
        if (setrlimit(RLIMIT_FSIZE, &rl) < 0)
            _exit(2);
        _exit(rc_write(p, buf, 'R', 1, 2, 0, 200) == -EFBIG ? 0 : 1);
    }
    close(go[0]);
    cr_assert_eq(forklog_reopen(p), 0);
    cr_assert_eq(rc_write(p, buf, 'R', 1, 1, 0, 20), 0);
    forklog *shared = open_ok(NULL);
    for (unsigned q = 0; q < 100; q++)
        cr_assert_eq(rc_write(shared, buf, 'R', 0, q, 0, 100), 0);
    cr_assert_eq(forklog_close(shared), 0);
    size_t before;
    free(th_slurp(logpath, &before));
    cr_assert_eq(write(go[1], &before, sizeof before), (ssize_t)sizeof before);
    close(go[1]);
    cr_assert_eq(th_wait(pid), 0, "the private handle's record did not fail with EFBIG");
    size_t after;
    free(th_slurp(logpath, &after));
    cr_assert_eq(after, before, "the file went from %zu to %zu bytes: the failed write cut other records", before,
                 after);
    cr_assert_eq(forklog_close(p), 0);
    unsigned want[2] = {100, 2};
    check_records(2, want, 0);
}

/* The other way round: a FORKLOG_PRIVATE handle (or any program writing the file without forklog) appends between
 * two records of the shared segment's users, so the file ends past where their segment says. A failed write of
 * theirs then cuts back only its own fragment: not to the segment's size, which would take the tail of the record
 * written just before it, acknowledged, and glue the next record onto what was left. */
Test(join, a_failed_write_after_a_private_handle_appended_keeps_every_acknowledged_record)
{
    forklog *shared = open_ok(NULL);
    char buf[RC_HEAD_MAX + 200];
    for (unsigned q = 0; q < 50; q++)
        cr_assert_eq(rc_write(shared, buf, 'R', 0, q, 0, 100), 0);
    struct forklog_options po = {.flags = FORKLOG_PRIVATE};
    forklog *p = open_ok(&po);
    cr_assert_eq(rc_write(p, buf, 'R', 1, 0, 0, 20), 0);
    cr_assert_eq(forklog_close(p), 0);
    cr_assert_eq(rc_write(shared, buf, 'R', 0, 50, 0, 100), 0);
    size_t before;
    free(th_slurp(logpath, &before));
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl = {before + 10, before + 10};
        if (setrlimit(RLIMIT_FSIZE, &rl) < 0)
            _exit(2);
        _exit(rc_write(shared, buf, 'R', 0, 51, 0, 200) == -EFBIG ? 0 : 1);
    }
    cr_assert_eq(th_wait(pid), 0, "the shared handle's record did not fail with EFBIG");
    size_t after;
    free(th_slurp(logpath, &after));
    cr_assert_eq(after, before, "the file went from %zu to %zu bytes: the failed write cut acknowledged records",
                 before, after);
    cr_assert_eq(rc_write(shared, buf, 'R', 0, 51, 0, 100), 0);
    cr_assert_eq(forklog_close(shared), 0);
    unsigned want[2] = {52, 1};
    check_records(2, want, 0);
}

/* /dev/stdout, /dev/fd/N and /proc/self/fd/N name, in each process, that process's own descriptor: one path is another
 * file in every process. Such a path gets a private segment, as FORKLOG_PRIVATE would: a segment file beside it would
 * be shared by unrelated processes that write different files, and a record that one of them combined into its own
 * write would land in the other's file. Here `out` stands for /dev/stdout (a link to /proc/self/fd/9), and two
 * programs whose fd 9 is each a file of its own write through it at once: each file holds exactly its writer's
 * records. A regular file opened as /proc/self/fd/N or /dev/fd/N (where no segment file can be created) is a log. */
Test(join, a_path_through_proc_that_names_each_processs_own_file_gets_a_private_segment, .timeout = 60)
{
    char *link = th_path(dir, "out");
    cr_assert_eq(symlink("/proc/self/fd/9", link), 0);
    enum { N = 2, COUNT = 3000 };
    struct report *r = new_report();
    pid_t pid[N];
    char *file[N];
    for (unsigned k = 0; k < N; k++) {
        char name[16];
        snprintf(name, sizeof name, "file%u", k);
        file[k] = th_path(dir, name);
        pid[k] = fork();
        cr_assert_neq(pid[k], -1);
        if (pid[k] == 0) {
            rc_child();
            int fd = open(file[k], O_WRONLY | O_CREAT | O_APPEND, 0644);
            if (fd < 0 || dup2(fd, 9) != 9)
                _exit(2);
            forklog *log;
            if (forklog_open(&log, link, NULL) != 0)
                _exit(3);
            atomic_fetch_add(&r->opened, 1);
            while (atomic_load(&r->opened) < N)
                usleep(100);
            char buf[RC_HEAD_MAX + 64];
            for (unsigned q = 0; q < COUNT; q++)
                if (rc_write(log, buf, 'R', k, q, 0, 40) != 0)
                    _exit(4);
            _exit(forklog_close(log) == 0 ? 0 : 5);
        }
    }
    for (unsigned k = 0; k < N; k++)
        cr_assert_eq(th_wait_for(pid[k], 50), 0, "writer %u", k);
    char *seg = th_path(dir, ".out.forklog");
    struct stat st;
    cr_assert_neq(lstat(seg, &st), 0, "a segment file was created beside the link");
    free(seg);
    for (unsigned k = 0; k < N; k++) {
        struct rc_seen seen;
        rc_seen_init(&seen, N, COUNT);
        rc_scan(&seen, file[k], 0);
        for (unsigned q = 0; q < COUNT; q++)
            cr_assert_eq(rc_count(&seen, k, q), 1, "record %u of writer %u is %u times in its file", q, k,
                         rc_count(&seen, k, q));
        cr_assert_eq(seen.records, COUNT, "%s holds %zu records, %u of them its writer's", file[k], seen.records,
                     COUNT);
        rc_seen_free(&seen);
        free(file[k]);
    }
    int fd = open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    cr_assert_geq(fd, 0);
    char name[32];
    for (unsigned i = 0; i < 2; i++) {
        snprintf(name, sizeof name, "%s/%d", i == 0 ? "/proc/self/fd" : "/dev/fd", fd);
        forklog *log = NULL;
        char why[512] = "";
        struct forklog_options o = {.error = why, .error_size = sizeof why};
        int rc = forklog_open(&log, name, &o);
        cr_assert_eq(rc, 0, "forklog_open(%s) of a regular file: %s (%s)", name, strerror(-rc), why);
        cr_assert_eq(log->seg_fd, -1);
        cr_assert_eq(forklog_write(log, "x", 1), 0);
        cr_assert_eq(forklog_close(log), 0);
    }
    close(fd);
    /* A path under /proc/self/cwd is each process's working directory: no segment file is made or shared there. */
    cr_assert_eq(chdir(dir), 0);
    const char *base = strrchr(logpath, '/') + 1;
    snprintf(name, sizeof name, "/proc/self/cwd/%s", base);
    forklog *log = NULL;
    cr_assert_eq(forklog_open(&log, name, NULL), 0);
    cr_assert_eq(log->seg_fd, -1, "%s got a shared segment", name);
    cr_assert_eq(forklog_write(log, "x", 1), 0);
    cr_assert_eq(forklog_close(log), 0);
    cr_assert_neq(lstat(segpath, &st), 0, "a segment file was made beside %s", name);
    size_t len;
    char *text = th_slurp(logpath, &len);
    cr_assert_str_eq(text, "x\nx\nx\n");
    free(text);
    free(link);
}

/* ---- the segment's own protocol, killed at each step --------------------------------------------------------
 * A process dies at one step of forklog_open() or forklog_close(); then three writers open the log at once and
 * write. Every record that a call acknowledged is in the file once (the buffered records that writers left before
 * the death included), nothing is torn, nobody waits, and the last close removes the segment file. */

/* Writer `id` opens the log with `o` (buffered, nothing ever ages out), writes n records of 100 bytes and exits
 * without closing: its records stay in the segment, for the next opener to recover. */
static void leave_with(const struct forklog_options *o, unsigned id, unsigned n)
{
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        forklog *log;
        if (forklog_open(&log, logpath, o) != 0)
            _exit(3);
        char buf[RC_HEAD_MAX + 100];
        for (unsigned q = 0; q < n; q++)
            if (rc_write(log, buf, 'R', id, q, 0, 100) != 0)
                _exit(4);
        _exit(0);
    }
    cr_assert_eq(th_wait(pid), 0);
    cr_assert(seg_exists());
}

/* Leaves the segment file holding `n` acknowledged buffered records of writer `id`: a writer that exits without
 * closing. */
static void leave_buffered(unsigned id, unsigned n)
{
    struct forklog_options o = {.flags = FORKLOG_BUFFERED, .flush_ms = 600000};
    leave_with(&o, id, n);
}

Test(join, an_opener_slow_to_lock_recovers_what_a_user_left_in_between)
{
    /* An opener looks at the segment file (empty: it has just created it) and is stopped before its exclusive
     * flock. Meanwhile another process builds the segment, buffers records in it and exits without closing. The
     * first opener then gets the lock alone: it must write those records, not rebuild over them. */
    enum { LEFT = 50, ID_LEFT = 1, ID_SLOW = 2 };
    pid_t slow = fork();
    cr_assert_neq(slow, -1);
    if (slow == 0) {
        rc_child();
        stop_before_flock_ex = 1;
        struct forklog_options o = {.flags = FORKLOG_BUFFERED, .flush_ms = 600000};
        forklog *log;
        if (forklog_open(&log, logpath, &o) != 0)
            _exit(3);
        char buf[RC_HEAD_MAX + 100];
        if (rc_write(log, buf, 'R', ID_SLOW, 0, 0, 100) != 0)
            _exit(4);
        _exit(forklog_close(log) == 0 ? 0 : 5);
    }
    cr_assert(cp_wait_stopped(slow, 10), "the opener did not stop before its flock");
    leave_buffered(ID_LEFT, LEFT);
    kill(slow, SIGCONT);
    cr_assert_eq(th_wait_for(slow, 10), 0, "the slow opener failed");
    cr_assert_not(seg_exists());
    struct rc_seen seen;
    rc_seen_init(&seen, 64, 4096);
    rc_scan(&seen, logpath, 0);
    for (unsigned q = 0; q < LEFT; q++)
        cr_assert_eq(rc_count(&seen, ID_LEFT, q), 1, "acknowledged record %u is there %u times", q,
                     rc_count(&seen, ID_LEFT, q));
    cr_assert_eq(rc_count(&seen, ID_SLOW, 0), 1);
    cr_assert_eq(seen.records, LEFT + 1);
    rc_seen_free(&seen);
}

Test(join, an_opener_slow_to_lock_writes_where_a_reopen_in_between_moved_the_log)
{
    /* An opener opens the log's file and is stopped before its exclusive flock. Meanwhile the file is renamed away,
     * as logrotate does, and another process opens the log (a new file at path), writes, calls forklog_reopen()
     * and closes, the last user: the segment file goes. The first opener then builds the segment alone. It opened
     * its file before the rename and the reopen: its records must go to the file at path, as a joiner's would, not
     * into the file renamed away (which logrotate compresses and removes next). */
    enum { SLOW = 3, ID_SLOW = 1, ID_OTHER = 2 };
    char *moved = th_path(dir, "join.log.1");
    pid_t slow = fork();
    cr_assert_neq(slow, -1);
    if (slow == 0) {
        rc_child();
        stop_before_flock_ex = 1;
        forklog *log;
        if (forklog_open(&log, logpath, NULL) != 0)
            _exit(3);
        char buf[RC_HEAD_MAX + 100];
        for (unsigned q = 0; q < SLOW; q++)
            if (rc_write(log, buf, 'R', ID_SLOW, q, 0, 100) != 0)
                _exit(4);
        _exit(forklog_close(log) == 0 ? 0 : 5);
    }
    cr_assert(cp_wait_stopped(slow, 10), "the opener did not stop before its flock");
    cr_assert_eq(rename(logpath, moved), 0);
    forklog *other = open_ok(NULL);
    char buf[RC_HEAD_MAX + 100];
    cr_assert_eq(rc_write(other, buf, 'R', ID_OTHER, 0, 0, 100), 0);
    cr_assert_eq(forklog_reopen(other), 0);
    cr_assert_eq(forklog_close(other), 0);
    cr_assert_not(seg_exists());
    kill(slow, SIGCONT);
    cr_assert_eq(th_wait_for(slow, 10), 0, "the slow opener failed");
    cr_assert_not(seg_exists());
    struct rc_seen seen, old;
    rc_seen_init(&seen, 4, 64);
    rc_seen_init(&old, 4, 64);
    rc_scan(&seen, logpath, 0);
    rc_scan(&old, moved, 1);
    cr_assert_eq(old.records, 0, "%zu records went into the file renamed away before the reopen", old.records);
    for (unsigned q = 0; q < SLOW; q++)
        cr_assert_eq(rc_count(&seen, ID_SLOW, q), 1, "the slow opener's record %u is at path %u times", q,
                     rc_count(&seen, ID_SLOW, q));
    cr_assert_eq(rc_count(&seen, ID_OTHER, 0), 1);
    cr_assert_eq(seen.records, SLOW + 1);
    rc_seen_free(&seen);
    rc_seen_free(&old);
    free(moved);
}

static void run_seg_point(const char *point)
{
    enum fl__crash_point cp = cp_find(point);
    enum { LEFT = 200, N = 3, RECORDS = 200, ID_LEFT = 10, ID_VICTIM = 11 };
    int joined = cp == FL__CP_SEG_JOINED || cp == FL__CP_SEG_JOIN_LOCKED, closing = cp == FL__CP_SEG_CLOSE_ALONE;
    int leftover = !joined && cp != FL__CP_SEG_CREATED;
    if (leftover)
        leave_buffered(ID_LEFT, LEFT);
    forklog *holder = joined ? open_ok(NULL) : NULL;

    pid_t victim = fork();
    cr_assert_neq(victim, -1);
    if (victim == 0) {
        fl__crash_arm(cp, 1, FL__CRASH_KILL);
        forklog *log;
        if (forklog_open(&log, logpath, NULL) != 0)
            _exit(3);
        char buf[RC_HEAD_MAX + 100];
        if (rc_write(log, buf, 'R', ID_VICTIM, 0, 0, 50) != 0)
            _exit(4);
        forklog_close(log);
        _exit(5); /* never reached the point */
    }
    cr_assert_eq(th_wait_for(victim, 10), 128 + SIGKILL, "the opener did not die at %s", point);

    struct report *r = new_report();
    pid_t pid[N];
    for (unsigned i = 0; i < N; i++)
        pid[i] = start_opener(r, i, RECORDS, 100, 0, 0);
    for (unsigned i = 0; i < N; i++)
        cr_assert_eq(th_wait_for(pid[i], 10), 0, "%s: writer %u failed or waited", point, i);
    if (holder)
        cr_assert_eq(forklog_close(holder), 0);
    cr_assert_not(seg_exists(), "%s: the last close left the segment file", point);

    struct rc_seen seen;
    rc_seen_init(&seen, 64, 4096);
    rc_scan(&seen, logpath, 0);
    for (unsigned i = 0; i < N; i++)
        for (unsigned q = 0; q < RECORDS; q++)
            cr_assert_eq(rc_count(&seen, i, q), 1, "%s: record %u/%u is there %u times", point, i, q,
                         rc_count(&seen, i, q));
    for (unsigned q = 0; q < LEFT; q++)
        cr_assert_eq(rc_count(&seen, ID_LEFT, q), leftover ? 1u : 0u, "%s: left buffered record %u is there %u times",
                     point, q, rc_count(&seen, ID_LEFT, q));
    cr_assert_eq(rc_count(&seen, ID_VICTIM, 0), closing ? 1u : 0u, "%s: the victim's record", point);
    rc_seen_free(&seen);
}

#define SEG_POINT(test, point)                                                                                         \
    Test(join, test)                                                                                                   \
    {                                                                                                                  \
        run_seg_point(point);                                                                                          \
    }
SEG_POINT(opener_dies_after_creating_the_segment_file, "SEG_CREATED")
SEG_POINT(opener_dies_alone_before_recovering, "SEG_ALONE")
SEG_POINT(opener_dies_after_recovering_before_building, "SEG_RECOVERED")
SEG_POINT(opener_dies_after_sizing_the_segment, "SEG_SIZED")
SEG_POINT(opener_dies_after_building_before_the_shared_lock, "SEG_BUILT")
SEG_POINT(joiner_dies_holding_the_shared_lock, "SEG_JOIN_LOCKED")
SEG_POINT(joiner_dies_after_joining, "SEG_JOINED")

/* An opener that finds itself alone writes what the last users left (fl__recover) through the same steps as a
 * lock holder: a reopen by name, the file's size read, a flush of the rings or the buffer. It holds no mutex
 * there, only the exclusive flock, so a death there leaves no EOWNERDEAD: the next opener alone must repair it.
 * The opener is killed at the `hit`-th passage of `point` in its recovery; then `victims` more die there the same
 * way, each recovering what the one before left; then three writers open, write and close: nobody waits or fails,
 * every left record is in the log exactly once and whole, and the last close removes the segment file. */
static void run_recover_point(const char *point, unsigned hit, const struct forklog_options *o, unsigned victims)
{
    enum fl__crash_point cp = cp_find(point);
    enum { LEFT = 30, N = 3, RECORDS = 100, ID_LEFT = 10, ID_LEFT2 = 11, ID_VICTIM = 12 };
    leave_with(o, ID_LEFT, LEFT);
    /* A second user, so that the rings flush holds two rings' data. */
    leave_with(o, ID_LEFT2, LEFT);
    for (unsigned v = 0; v < victims; v++) {
        pid_t victim = fork();
        cr_assert_neq(victim, -1);
        if (victim == 0) {
            fl__crash_arm(cp, hit, FL__CRASH_KILL);
            forklog *log;
            if (forklog_open(&log, logpath, o) != 0)
                _exit(3);
            char buf[RC_HEAD_MAX + 100];
            if (rc_write(log, buf, 'R', ID_VICTIM + v, 0, 0, 50) != 0)
                _exit(4);
            forklog_close(log);
            _exit(5); /* never reached the point */
        }
        cr_assert_eq(th_wait_for(victim, 10), 128 + SIGKILL, "the opener %u did not die at %s (hit %u)", v, point, hit);
        cr_assert(seg_exists(), "%s: the dead opener's segment file is gone", point);
    }

    struct report *r = new_report();
    pid_t pid[N];
    for (unsigned i = 0; i < N; i++)
        pid[i] = start_opener(r, i, RECORDS, 100, o->flags, 0);
    for (unsigned i = 0; i < N; i++)
        cr_assert_eq(th_wait_for(pid[i], 10), 0, "%s: writer %u failed or waited", point, i);
    cr_assert_not(seg_exists(), "%s: the last close left the segment file", point);

    struct rc_seen seen;
    rc_seen_init(&seen, 64, 4096);
    rc_scan(&seen, logpath, 0);
    for (unsigned i = 0; i < N; i++)
        for (unsigned q = 0; q < RECORDS; q++)
            cr_assert_eq(rc_count(&seen, i, q), 1, "%s: record %u/%u is there %u times", point, i, q,
                         rc_count(&seen, i, q));
    for (unsigned q = 0; q < LEFT; q++) {
        cr_assert_eq(rc_count(&seen, ID_LEFT, q), 1, "%s: left record %u is there %u times", point, q,
                     rc_count(&seen, ID_LEFT, q));
        cr_assert_eq(rc_count(&seen, ID_LEFT2, q), 1, "%s: left record %u of the second user is there %u times", point,
                     q, rc_count(&seen, ID_LEFT2, q));
    }
    /* The first victim died in its recovery, before its record; a later one, which found nothing left to write
     * (its predecessor's write was whole), may die at the same point in the flush of its own record at close. */
    size_t theirs = 0;
    for (unsigned v = 0; v < victims; v++) {
        unsigned c = rc_count(&seen, ID_VICTIM + v, 0);
        cr_assert_leq(c, v ? 1u : 0u, "%s: the record of victim %u is there %u times", point, v, c);
        theirs += c;
    }
    cr_assert_eq(seen.records, N * RECORDS + 2 * LEFT + theirs, "%s: %zu records in the log", point, seen.records);
    rc_seen_free(&seen);
}

static const struct forklog_options recover_rings = {.flags = FORKLOG_BUFFERED, .flush_ms = 600000};
static const struct forklog_options recover_buffer = {
    .flags = FORKLOG_BUFFERED, .flush_ms = 600000, .rotate_bytes = 1 << 30, .rotate_keep = 2};

#define RECOVER_POINT(test, point, hit, opts, victims)                                                                 \
    Test(join, test)                                                                                                   \
    {                                                                                                                  \
        run_recover_point(point, hit, &opts, victims);                                                                 \
    }
RECOVER_POINT(recovery_dies_after_reopening_the_log_rings, "REOPEN_OPENED", 1, recover_rings, 1)
RECOVER_POINT(recovery_dies_after_reading_the_file_rings, "FILE_KNOWN", 1, recover_rings, 1)
RECOVER_POINT(recovery_dies_after_planning_the_rings_flush, "RING_TARGET", 1, recover_rings, 1)
RECOVER_POINT(recovery_dies_with_the_rings_flush_planned, "RING_PLANNED", 1, recover_rings, 1)
RECOVER_POINT(recovery_dies_before_writing_the_rings, "WRITE_BEGIN", 1, recover_rings, 1)
RECOVER_POINT(recovery_dies_with_half_the_rings_written, "WRITE_TORN", 1, recover_rings, 2)
RECOVER_POINT(recovery_dies_with_the_rings_written, "WRITE_DONE", 1, recover_rings, 2)
RECOVER_POINT(recovery_dies_with_the_rings_flush_committed, "WRITE_COMMITTED", 1, recover_rings, 1)
RECOVER_POINT(recovery_dies_before_releasing_the_rings, "RING_RELEASED", 1, recover_rings, 2)
RECOVER_POINT(recovery_dies_after_reopening_the_log_buffer, "REOPEN_OPENED", 1, recover_buffer, 1)
RECOVER_POINT(recovery_dies_after_setting_the_buffer_target, "WRITE_TARGET", 1, recover_buffer, 1)
RECOVER_POINT(recovery_dies_with_half_the_buffer_written, "WRITE_TORN", 1, recover_buffer, 2)
RECOVER_POINT(recovery_dies_with_the_buffer_written, "WRITE_DONE", 1, recover_buffer, 2)
RECOVER_POINT(recovery_dies_with_the_buffer_flush_committed, "WRITE_COMMITTED", 1, recover_buffer, 1)

Test(join, a_refused_joiner_removes_the_segment_file_its_lock_kept_the_last_user_from_removing)
{
    /* An opener whose settings conflict with the segment's holds the segment file's shared flock (stopped there)
     * while the last user closes: the close cannot remove the file. The opener, refused with -EINVAL, was never a
     * user, and nobody is left: it removes the file itself. */
    struct forklog_options a = {.rotate_bytes = 1 << 20};
    int go[2];
    cr_assert_eq(pipe(go), 0);
    pid_t b = fork(); /* before the first open: an unrelated opener, which inherits no handle of the log */
    cr_assert_neq(b, -1);
    if (b == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        char c;
        close(go[1]);
        if (read(go[0], &c, 1) != 1)
            _exit(2);
        fl__crash_arm(FL__CP_SEG_JOIN_LOCKED, 1, FL__CRASH_STOP);
        struct forklog_options o = {.rotate_bytes = 4096};
        forklog *log;
        _exit(forklog_open(&log, logpath, &o) == -EINVAL ? 0 : 1);
    }
    close(go[0]);
    forklog *first = open_ok(&a);
    cr_assert_eq(write(go[1], "g", 1), 1);
    close(go[1]);
    cr_assert(cp_wait_stopped(b, 10), "the joiner did not stop with the shared lock");
    cr_assert_eq(forklog_close(first), 0);
    cr_assert(seg_exists(), "the close removed the file under another opener's shared lock");
    kill(b, SIGCONT);
    cr_assert_eq(th_wait_for(b, 10), 0, "the joiner was not refused with -EINVAL");
    cr_assert_not(seg_exists(), "nobody uses the log, and its segment file is still there");
    /* The same when the refused opener is not alone: the file stays for its user. */
    first = open_ok(&a);
    struct forklog_options o = {.rotate_bytes = 4096};
    forklog *log;
    cr_assert_eq(forklog_open(&log, logpath, &o), -EINVAL);
    cr_assert(seg_exists());
    cr_assert_eq(forklog_write(first, "still works", 11), 0);
    cr_assert_eq(forklog_close(first), 0);
    cr_assert_not(seg_exists());
}
Test(join, a_joiner_refused_for_another_layout_leaves_the_file_when_its_user_has_gone)
{
    /* A segment file of another layout (another forklog version's), used by its own program: an opener takes its
     * shared lock (stopped there), the program goes, and the opener is refused with -EPROTO. Unlike a refusal for
     * conflicting settings, that file is never read past its head nor changed: it stays, though nobody holds it. */
    forklog *log = open_ok(NULL);
    cr_assert_eq(forklog_write(log, "kept", 4), 0);
    struct fl__seg_head other = log->seg->head;
    cr_assert_eq(forklog_close(log), 0);
    other.layout++;
    write_head(&other);
    size_t before;
    char *seg_before = file_bytes(segpath, &before);
    int user = open(segpath, O_RDONLY | O_CLOEXEC);
    cr_assert_geq(user, 0);
    cr_assert_eq(flock(user, LOCK_SH), 0);
    pid_t b = fork();
    cr_assert_neq(b, -1);
    if (b == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        close(user); /* the lock stays the program's, whose descriptor is the parent's */
        fl__crash_arm(FL__CP_SEG_JOIN_LOCKED, 1, FL__CRASH_STOP);
        forklog *mine;
        _exit(forklog_open(&mine, logpath, NULL) == -EPROTO ? 0 : 1);
    }
    cr_assert(cp_wait_stopped(b, 10), "the joiner did not stop with the shared lock");
    close(user);
    kill(b, SIGCONT);
    cr_assert_eq(th_wait_for(b, 10), 0, "the joiner was not refused with -EPROTO");
    cr_assert(seg_exists(), "the refused joiner removed a segment file of another layout");
    size_t after;
    char *seg_after = file_bytes(segpath, &after);
    cr_assert(before == after && memcmp(seg_before, seg_after, before) == 0, "the segment file was changed");
    free(seg_before);
    free(seg_after);
}

Test(join, a_joiner_that_cannot_map_the_segment_removes_the_file_its_lock_kept_the_last_user_from_removing)
{
    /* As above, but the opener is refused because the segment does not fit in its address space (-ENOMEM at the
     * mapping, its RLIMIT_AS reached): it was never a user either, and removes the file the last close left. */
    if (TH_SANITIZED)
        cr_skip_test("a sanitizer's runtime maps its own memory and dies when RLIMIT_AS refuses it");
    struct forklog_options a = {.flags = FORKLOG_BUFFERED, .buffer_size = (size_t)16 << 20}; /* a 1 GiB segment */
    int go[2];
    cr_assert_eq(pipe(go), 0);
    pid_t b = fork();
    cr_assert_neq(b, -1);
    if (b == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        char c;
        close(go[1]);
        if (read(go[0], &c, 1) != 1)
            _exit(2);
        const unsigned long long vm = th_mapped_bytes();
        if (!vm)
            _exit(77);
        struct rlimit rl = {(rlim_t)(vm + ((unsigned long long)256 << 20)), RLIM_INFINITY};
        if (setrlimit(RLIMIT_AS, &rl) != 0)
            _exit(77);
        fl__crash_arm(FL__CP_SEG_JOIN_LOCKED, 1, FL__CRASH_STOP);
        forklog *log;
        _exit(forklog_open(&log, logpath, NULL) == -ENOMEM ? 0 : 1);
    }
    close(go[0]);
    forklog *first = open_ok(&a);
    cr_assert_eq(forklog_write(first, "one", 3), 0);
    cr_assert_eq(write(go[1], "g", 1), 1);
    close(go[1]);
    int st = 0;
    pid_t r;
    for (double end = th_now_s() + 10; (r = waitpid(b, &st, WNOHANG | WUNTRACED)) == 0 && th_now_s() < end;)
        usleep(500);
    if (r == b && WIFEXITED(st) && WEXITSTATUS(st) == 77) {
        forklog_close(first);
        cr_skip_test("cannot limit the address space");
    }
    if (r != b || !WIFSTOPPED(st)) {
        kill(b, SIGKILL);
        if (r != b)
            waitpid(b, &st, 0);
        cr_assert_fail("the joiner did not stop with the shared lock");
    }
    cr_assert_eq(forklog_close(first), 0);
    cr_assert(seg_exists(), "the close removed the file under another opener's shared lock");
    kill(b, SIGCONT);
    cr_assert_eq(th_wait_for(b, 10), 0, "the joiner was not refused with -ENOMEM");
    cr_assert_not(seg_exists(), "nobody uses the log, and its segment file is still there");
    size_t len;
    char *buf = th_slurp(logpath, &len);
    cr_assert_not_null(buf);
    cr_assert(len == 4 && memcmp(buf, "one\n", 4) == 0, "the log holds %zu bytes", len);
    free(buf);
}
SEG_POINT(last_user_dies_before_removing_the_segment_file, "SEG_CLOSE_ALONE")

/* A process killed while it holds the segment file alone with a segment of it mapped (the one its last users left,
 * while it writes what they left; or the one it has just built, before it moves to the shared lock), after another
 * of its threads forked: the child's copy of that mapping holds the segment file's open description, and with it
 * the exclusive flock, for as long as the child lives. Later openers wait for nobody, and the last one's close
 * removes the file. */
Test(join, a_fork_while_the_segment_is_mapped_alone_keeps_no_later_opener_waiting)
{
    enum { LEFT = 20, ID_LEFT = 1, ID_AFTER = 2 };
    pid_t *forked_pid = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(forked_pid, MAP_FAILED);
    static const char *const when[2] = {"recovering what its last users left", "built"};
    const enum fl__crash_point point[2] = {cp_find("SEG_RECOVERED"), cp_find("SEG_BUILT")};
    leave_buffered(ID_LEFT, LEFT);
    for (unsigned k = 0; k < 2; k++) {
        forked_pid[0] = 0;
        pid_t pid = fork();
        cr_assert_neq(pid, -1);
        if (pid == 0) {
            rc_child();
            pthread_t t;
            if (pthread_create(&t, NULL, forker_main, forked_pid) != 0)
                _exit(2);
            fl__crash_arm(point[k], 1, FL__CRASH_KILL);
            fork_after_seg_map = 1;
            forklog *log;
            (void)forklog_open(&log, logpath, NULL);
            _exit(3);
        }
        cr_assert_eq(th_wait(pid), 128 + SIGKILL, "the opener that %s did not die", when[k]);
        cr_assert_gt(forked_pid[0], 0, "the segment %s: no fork", when[k]);
        char what[80];
        snprintf(what, sizeof what, "an opener killed with the segment %s after a fork", when[k]);
        a_later_opener_waits_for_nobody(forked_pid, ID_AFTER, k, what);
    }
    struct rc_seen seen;
    rc_seen_init(&seen, 4, 64);
    rc_scan(&seen, logpath, 0);
    for (unsigned q = 0; q < LEFT; q++)
        cr_assert_eq(rc_count(&seen, ID_LEFT, q), 1, "left record %u is there %u times", q,
                     rc_count(&seen, ID_LEFT, q));
    for (unsigned k = 0; k < 2; k++)
        cr_assert_eq(rc_count(&seen, ID_AFTER, k), 1, "the later opener's record %u is there %u times", k,
                     rc_count(&seen, ID_AFTER, k));
    cr_assert_eq(seen.records, LEFT + 2);
    rc_seen_free(&seen);
    munmap(forked_pid, 4096);
}

/* The same for an opener refused after it mapped the segment (settings that conflict with the segment's), whose lock
 * kept the last user's close from removing the file: it converts its shared flock to the exclusive one to remove the
 * file itself, and is killed there, after another of its threads forked while the segment was mapped. */
Test(join, a_fork_while_a_refused_joiner_has_the_segment_mapped_keeps_no_later_opener_waiting)
{
    pid_t *forked_pid = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(forked_pid, MAP_FAILED);
    forked_pid[0] = 0;
    struct forklog_options a = {.rotate_bytes = 1 << 20};
    int go[2];
    cr_assert_eq(pipe(go), 0);
    pid_t b = fork(); /* before the first open: an unrelated opener, which inherits no handle of the log */
    cr_assert_neq(b, -1);
    if (b == 0) {
        rc_child();
        pthread_t t;
        char c;
        close(go[1]);
        if (pthread_create(&t, NULL, forker_main, forked_pid) != 0 || read(go[0], &c, 1) != 1)
            _exit(2);
        fl__crash_arm(FL__CP_SEG_JOIN_LOCKED, 1, FL__CRASH_STOP);
        fl__crash_arm(FL__CP_SEG_CLOSE_ALONE, 1, FL__CRASH_KILL);
        fork_after_seg_map = 1;
        struct forklog_options o = {.rotate_bytes = 4096};
        forklog *log;
        (void)forklog_open(&log, logpath, &o);
        _exit(3);
    }
    close(go[0]);
    forklog *first = open_ok(&a);
    cr_assert_eq(write(go[1], "g", 1), 1);
    close(go[1]);
    cr_assert(cp_wait_stopped(b, 10), "the joiner did not stop with the shared lock");
    cr_assert_eq(forklog_close(first), 0);
    cr_assert(seg_exists(), "the close removed the file under another opener's shared lock");
    kill(b, SIGCONT);
    cr_assert_eq(th_wait_for(b, 10), 128 + SIGKILL, "the refused joiner did not die removing the file");
    cr_assert_gt(forked_pid[0], 0, "no fork");
    a_later_opener_waits_for_nobody(forked_pid, 1, 0, "a refused joiner killed after a fork");
    struct rc_seen seen;
    rc_seen_init(&seen, 4, 64);
    rc_scan(&seen, logpath, 0);
    cr_assert_eq(rc_count(&seen, 1, 0), 1, "the later opener's record is there %u times", rc_count(&seen, 1, 0));
    cr_assert_eq(seen.records, 1);
    rc_seen_free(&seen);
    munmap(forked_pid, 4096);
}

/* A joiner's first record reopens the log by name (its generation is never current) when its descriptor is not the
 * generation's file, with the lock held. A joiner killed at `point` of its first record, while the builder and three
 * more writers share the log: nobody waits or fails, every acknowledged record is there once, the joiner's record at
 * most once, and the last close removes the segment file. With `moved`, the log was moved away (and a new one created
 * by the joiner's open) before that record, so its reopen finds another file. */
static void run_first_record_point(const char *point, int moved)
{
    enum fl__crash_point cp = cp_find(point);
    enum { N = 3, RECORDS = 200, ID_BUILDER = 10, ID_VICTIM = 11 };
    forklog *builder = open_ok(NULL);
    char buf[RC_HEAD_MAX + 100];
    cr_assert_eq(rc_write(builder, buf, 'R', ID_BUILDER, 0, 0, 50), 0);
    char *moved_to = th_path(dir, "join.log.moved");
    if (moved)
        cr_assert_eq(rename(logpath, moved_to), 0);
    pid_t victim = fork();
    cr_assert_neq(victim, -1);
    if (victim == 0) {
        rc_child();
        fl__crash_arm(cp, 1, FL__CRASH_KILL);
        forklog *log;
        if (forklog_open(&log, logpath, NULL) != 0)
            _exit(3);
        if (rc_write(log, buf, 'R', ID_VICTIM, 0, 0, 50) != 0)
            _exit(4);
        _exit(5); /* never reached the point */
    }
    cr_assert_eq(th_wait_for(victim, 10), 128 + SIGKILL, "the joiner did not die at %s", point);
    struct report *r = new_report();
    pid_t pid[N];
    for (unsigned i = 0; i < N; i++)
        pid[i] = start_opener(r, i, RECORDS, 100, 0, 0);
    for (unsigned i = 0; i < N; i++)
        cr_assert_eq(th_wait_for(pid[i], 10), 0, "%s: writer %u failed or waited", point, i);
    cr_assert_eq(rc_write(builder, buf, 'R', ID_BUILDER, 1, 0, 50), 0);
    cp_assert_size_agrees(builder, logpath);
    cr_assert_eq(forklog_close(builder), 0);
    cr_assert_not(seg_exists(), "%s: the last close left the segment file", point);

    struct rc_seen seen;
    rc_seen_init(&seen, 64, 4096);
    rc_scan(&seen, logpath, 0);
    if (moved)
        rc_scan(&seen, moved_to, 1);
    for (unsigned i = 0; i < N; i++)
        for (unsigned q = 0; q < RECORDS; q++)
            cr_assert_eq(rc_count(&seen, i, q), 1, "%s: record %u/%u is there %u times", point, i, q,
                         rc_count(&seen, i, q));
    for (unsigned q = 0; q < 2; q++)
        cr_assert_eq(rc_count(&seen, ID_BUILDER, q), 1, "%s: the builder's record %u", point, q);
    cr_assert_eq(rc_count(&seen, ID_VICTIM, 0), 0, "%s: the joiner's record", point);
    cr_assert_eq(seen.records, N * RECORDS + 2, "%s: %zu records", point, seen.records);
    rc_seen_free(&seen);
    free(moved_to);
}

/* A joiner whose descriptor is the generation's file (nothing moved the log since its open opened it) takes it as
 * it is at its first record: it never reaches REOPEN_OPENED, and its record is written once. */
Test(join, a_joiner_whose_descriptor_is_the_logs_file_does_not_reopen_it)
{
    forklog *builder = open_ok(NULL);
    char buf[RC_HEAD_MAX + 100];
    cr_assert_eq(rc_write(builder, buf, 'R', 10, 0, 0, 50), 0);
    pid_t victim = fork();
    cr_assert_neq(victim, -1);
    if (victim == 0) {
        rc_child();
        fl__crash_arm(cp_find("REOPEN_OPENED"), 1, FL__CRASH_KILL);
        forklog *log;
        if (forklog_open(&log, logpath, NULL) != 0)
            _exit(3);
        if (rc_write(log, buf, 'R', 11, 0, 0, 50) != 0)
            _exit(4);
        _exit(forklog_close(log) == 0 ? 5 : 6);
    }
    cr_assert_eq(th_wait_for(victim, 10), 5, "the joiner reopened the log it had open, or failed");
    cr_assert_eq(forklog_close(builder), 0);
    struct rc_seen seen;
    rc_seen_init(&seen, 64, 16);
    rc_scan(&seen, logpath, 0);
    cr_assert_eq(rc_count(&seen, 10, 0), 1);
    cr_assert_eq(rc_count(&seen, 11, 0), 1);
    cr_assert_eq(seen.records, 2);
    rc_seen_free(&seen);
}

Test(join, joiner_dies_after_reopening_a_log_moved_away_at_its_first_record)
{
    run_first_record_point("REOPEN_OPENED", 1);
}

Test(join, joiner_dies_after_starting_a_generation_on_a_moved_log_at_its_first_record)
{
    run_first_record_point("FILE_KNOWN", 1);
}

Test(join, an_open_that_cannot_size_the_segment_leaves_no_segment_file)
{
    /* A file size limit below the segment's size: the open fails with -EFBIG, and nothing but the log file itself
     * is left (the empty segment file it created is removed). */
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl = {16384, 16384};
        forklog *log;
        _exit(setrlimit(RLIMIT_FSIZE, &rl) == 0 && forklog_open(&log, logpath, NULL) == -EFBIG ? 0 : 1);
    }
    cr_assert_eq(th_wait(pid), 0, "the open should fail with -EFBIG");
    cr_assert_not(seg_exists(), "the failed open left its segment file");
    struct stat st;
    cr_assert_eq(stat(logpath, &st), 0);
    /* The same when the segment file was there already, built and idle (left by a writer that exited without
     * closing): nothing is lost, and the next open works. */
    leave_buffered(1, 0);
    pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl = {16384, 16384};
        forklog *log;
        _exit(setrlimit(RLIMIT_FSIZE, &rl) == 0 && forklog_open(&log, logpath, NULL) == -EFBIG ? 0 : 1);
    }
    cr_assert_eq(th_wait(pid), 0, "the open should fail with -EFBIG");
    cr_assert_not(seg_exists(), "the failed open left the segment file it emptied");
    forklog *log = open_ok(NULL);
    cr_assert_eq(forklog_write(log, "works", 5), 0);
    cr_assert_eq(forklog_close(log), 0);
    cr_assert_not(seg_exists());
}

Test(join, an_open_that_cannot_size_the_segment_fails_with_efbig_with_sigxfsz_left_at_its_default)
{
    /* forklog_open() is documented to fail with -EFBIG when RLIMIT_FSIZE is below the segment's size. A process
     * that keeps SIGXFSZ at its default (most do) and whose records stay far below its limit must get that error,
     * not be killed by the signal that growing the segment file past the limit raises. The same for a buffered
     * log, whose segment is 16 MiB at the default buffer_size, under a limit of 1 MiB. */
    for (int buffered = 0; buffered < 2; buffered++) {
        pid_t pid = fork();
        cr_assert_neq(pid, -1);
        if (pid == 0) {
            struct rlimit rl = {buffered ? 1 << 20 : 16384, buffered ? 1 << 20 : 16384};
            struct forklog_options o = {.flags = buffered ? FORKLOG_BUFFERED : 0};
            forklog *log;
            _exit(setrlimit(RLIMIT_FSIZE, &rl) == 0 && forklog_open(&log, logpath, &o) == -EFBIG ? 0 : 1);
        }
        int st = th_wait(pid);
        cr_assert_eq(st, 0, "%s: the open should fail with -EFBIG (status %d; %d is death by SIGXFSZ)",
                     buffered ? "buffered" : "unbuffered", st, 128 + SIGXFSZ);
        cr_assert_not(seg_exists(), "the failed open left its segment file");
    }
}

/* The last user's close cannot write the buffered records (a file size limit): the close fails, the segment file
 * stays with the records, and the next open writes them, once. Then an open that cannot write them fails itself and
 * keeps them. rotate_bytes 0: the records wait in the rings; otherwise in the one buffer of a rotating log. */
static void close_whose_flush_fails(unsigned long long rotate_bytes)
{
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        struct forklog_options o = {.flags = FORKLOG_BUFFERED, .flush_ms = 600000, .rotate_bytes = rotate_bytes};
        forklog *log;
        if (forklog_open(&log, logpath, &o) != 0)
            _exit(3);
        char buf[RC_HEAD_MAX + 100];
        for (unsigned q = 0; q < 50; q++)
            if (rc_write(log, buf, 'R', 0, q, 0, 100) != 0)
                _exit(4);
        struct rlimit rl = {10, 10};
        if (setrlimit(RLIMIT_FSIZE, &rl) != 0)
            _exit(5);
        _exit(forklog_close(log) == -EFBIG ? 0 : 6);
    }
    cr_assert_eq(th_wait(pid), 0, "the close should fail with -EFBIG");
    cr_assert(seg_exists(), "the segment file keeps the records the close could not write");
    size_t len;
    free(th_slurp(logpath, &len));
    cr_assert_eq(len, 0);
    /* An opener that cannot write them either fails, and they stay. */
    pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl = {10, 10};
        forklog *log;
        _exit(setrlimit(RLIMIT_FSIZE, &rl) == 0 && forklog_open(&log, logpath, NULL) == -EFBIG ? 0 : 1);
    }
    cr_assert_eq(th_wait(pid), 0, "an open that cannot write the left records should fail with -EFBIG");
    cr_assert(seg_exists());
    forklog *log = open_ok(NULL);
    cr_assert_eq(forklog_close(log), 0);
    cr_assert_not(seg_exists());
    unsigned want[1] = {50};
    check_records(1, want, 0);
}

Test(join, a_close_whose_flush_fails_leaves_the_records_for_the_next_open)
{
    close_whose_flush_fails(0);
}

Test(join, a_close_whose_flush_of_the_shared_buffer_fails_leaves_the_records_for_the_next_open)
{
    close_whose_flush_fails(1 << 20);
}

/* A child writes `n` buffered records and exits without closing: they stay in the segment file. */
static void leave_buffered_records(unsigned n)
{
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        struct forklog_options o = {.flags = FORKLOG_BUFFERED, .flush_ms = 60000};
        forklog *log;
        if (forklog_open(&log, logpath, &o) != 0)
            _exit(1);
        for (unsigned q = 0; q < n; q++)
            if (forklog_write(log, "left\n", 5) != 0)
                _exit(2);
        _exit(0);
    }
    cr_assert_eq(th_wait(pid), 0);
    cr_assert(seg_exists());
}

Test(join, a_segment_built_before_the_machine_started_is_not_recovered)
{
    /* Same boot: the next opener writes the records a dead user left. */
    leave_buffered_records(3);
    forklog *log = open_ok(NULL);
    cr_assert_eq(forklog_close(log), 0);
    size_t len;
    char *buf = th_slurp(logpath, &len);
    cr_assert_str_eq(buf, "left\nleft\nleft\n");
    free(buf);
    /* Another boot id in the head (the machine restarted since): its pages need not agree, and nothing of it is
     * written; the segment is built anew. */
    leave_buffered_records(2);
    int fd = open(segpath, O_RDWR);
    cr_assert_geq(fd, 0);
    struct fl__seg_head h;
    cr_assert_eq(pread(fd, &h, sizeof h, 0), (ssize_t)sizeof h);
    cr_assert_neq(h.boot[0], 0, "no boot id here to compare");
    memcpy(h.boot, "00000000-0000-0000-0000-000000000001", sizeof h.boot);
    cr_assert_eq(pwrite(fd, &h, sizeof h, 0), (ssize_t)sizeof h);
    close(fd);
    log = open_ok(NULL);
    cr_assert_eq(log->seg->head.builds, h.builds + 1);
    cr_assert_eq(forklog_write(log, "after\n", 6), 0);
    cr_assert_eq(forklog_close(log), 0);
    buf = th_slurp(logpath, &len);
    cr_assert_str_eq(buf, "left\nleft\nleft\nafter\n");
    free(buf);
}

/* ---- random kills over open, write, reopen and close cycles --------------------------------------------------- */

/* Seconds of random kills per mode (FORKLOG_CYCLE_SECONDS overrides), and the bound every survivor has, once the
 * kills stop, to finish its cycles (the quiet tail). */
#define CYCLE_SECONDS_DEFAULT 5.0
#define CYCLE_QUIET_S         15.0
enum { CYC_LIVE = 5, CYC_IDS = 4096, CYC_RECORDS = 120 };

struct cycles {
    atomic_uint acked[CYC_IDS]; /* records 0 .. acked-1 of worker id returned 0 */
    atomic_uint opens, reopens, closes;
};

/* A worker: until it has written CYC_RECORDS records, opens the log itself, writes 1..12 records (a reopen before
 * some), and closes. Exits 0, or 3 (open), 4 (write), 5 (close) with the error in *why. */
static _Noreturn void cycle_worker(struct cycles *c, const struct forklog_options *o, unsigned id)
{
    rc_child();
    unsigned seed = id * 2654435761u + 7;
    char buf[RC_HEAD_MAX + 400];
    unsigned q = 0;
    while (q < CYC_RECORDS) {
        forklog *log;
        if (forklog_open(&log, logpath, o) != 0)
            _exit(3);
        atomic_fetch_add(&c->opens, 1);
        unsigned n = 1 + (unsigned)rand_r(&seed) % 12;
        for (unsigned k = 0; k < n && q < CYC_RECORDS; k++, q++) {
            if (rand_r(&seed) % 6 == 0) {
                forklog_reopen(log);
                atomic_fetch_add(&c->reopens, 1);
            }
            if (rc_write(log, buf, 'R', id, q, 0, 20 + (size_t)rand_r(&seed) % 380) != 0)
                _exit(4);
            atomic_store(&c->acked[id], q + 1);
        }
        if (forklog_close(log) != 0)
            _exit(5);
        atomic_fetch_add(&c->closes, 1);
    }
    _exit(0);
}

static void run_cycles(const char *mode, const struct forklog_options *o)
{
    double seconds = CYCLE_SECONDS_DEFAULT;
    const char *env = getenv("FORKLOG_CYCLE_SECONDS");
    if (env && atof(env) > 0)
        seconds = atof(env);
    struct cycles *c = mmap(NULL, sizeof *c, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(c, MAP_FAILED);
    pid_t live[CYC_LIVE];
    unsigned live_id[CYC_LIVE], next = 0, kills = 0, done = 0;
    for (unsigned i = 0; i < CYC_LIVE; i++) {
        live_id[i] = next++;
        if ((live[i] = fork()) == 0)
            cycle_worker(c, o, live_id[i]);
    }
    unsigned seed = 12345;
    double end = th_now_s() + seconds;
    while (th_now_s() < end && next < CYC_IDS) {
        usleep(500 + (unsigned)rand_r(&seed) % 4000);
        unsigned i = (unsigned)rand_r(&seed) % CYC_LIVE;
        int st;
        pid_t r = waitpid(live[i], &st, WNOHANG);
        if (r == 0) {
            kill(live[i], SIGKILL);
            waitpid(live[i], &st, 0);
            kills++;
            /* It may have finished between the look and the kill: then it ended on its own. */
            if (WIFEXITED(st))
                cr_assert_eq(WEXITSTATUS(st), 0, "%s: worker %u ended with %d", mode, live_id[i], WEXITSTATUS(st));
        } else {
            cr_assert_eq(r, live[i]);
            cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s: worker %u ended with %d", mode, live_id[i],
                      WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
            done++;
        }
        live_id[i] = next++;
        if ((live[i] = fork()) == 0)
            cycle_worker(c, o, live_id[i]);
    }
    /* The quiet tail: no more kills; every survivor must finish its cycles within the bound. */
    double quiet = th_now_s(), slowest = 0;
    for (unsigned i = 0; i < CYC_LIVE; i++) {
        int st = th_wait_for(live[i], CYCLE_QUIET_S - (th_now_s() - quiet));
        cr_assert_eq(st, 0, "%s: worker %u ended with %d after the kills stopped (-2: still running after %.0f s)",
                     mode, live_id[i], st, CYCLE_QUIET_S);
        double t = th_now_s() - quiet;
        slowest = t > slowest ? t : slowest;
        done++;
    }
    /* Whatever the killed left buffered is written by the next open that finds itself alone. */
    forklog *last = open_ok(o);
    cr_assert_eq(forklog_close(last), 0);
    cr_assert_not(seg_exists(), "%s: the last close left the segment file", mode);

    struct rc_seen seen;
    rc_seen_init(&seen, CYC_IDS, CYC_RECORDS);
    rc_scan(&seen, logpath, 0);
    for (unsigned k = 1; o->rotate_bytes && k <= o->rotate_keep; k++) {
        char name[64];
        snprintf(name, sizeof name, "join.log.%u", k);
        char *p = th_path(dir, name);
        rc_scan(&seen, p, k);
        free(p);
    }
    for (unsigned id = 0; id < next; id++) {
        unsigned acked = atomic_load(&c->acked[id]);
        for (unsigned q = 0; q < CYC_RECORDS; q++) {
            unsigned n = rc_count(&seen, id, q);
            if (q < acked)
                cr_assert_eq(n, 1, "%s: acknowledged record %u of worker %u is there %u times", mode, q, id, n);
            else if (q == acked)
                cr_assert_leq(n, 1, "%s: the record in flight %u of worker %u is there %u times", mode, q, id, n);
            else
                cr_assert_eq(n, 0, "%s: record %u of worker %u was never written but is there", mode, q, id);
        }
    }
    rc_seen_free(&seen);
    fprintf(stderr,
            "cycles %s: %.0f s, %u workers (%u killed, %u finished), %u opens, %u closes, %u reopens; the last "
            "survivor finished %.2f s after the kills stopped (bound %.0f s)\n",
            mode, seconds, next, kills, done, atomic_load(&c->opens), atomic_load(&c->closes), atomic_load(&c->reopens),
            slowest, CYCLE_QUIET_S);
    munmap(c, sizeof *c);
}

Test(join, random_kills_over_open_write_reopen_close_cycles_direct, .timeout = 120)
{
    run_cycles("direct", &(struct forklog_options){0});
}

Test(join, random_kills_over_open_write_reopen_close_cycles_buffered, .timeout = 120)
{
    run_cycles("buffered", &(struct forklog_options){.flags = FORKLOG_BUFFERED, .buffer_size = 4096});
}

Test(join, random_kills_over_open_write_reopen_close_cycles_rotating, .timeout = 120)
{
    run_cycles("rotating", &(struct forklog_options){.rotate_bytes = 32768, .rotate_keep = 1000});
}

Test(join, random_kills_over_open_write_reopen_close_cycles_buffered_rotating, .timeout = 120)
{
    run_cycles("buffered rotating",
               &(struct forklog_options){
                   .flags = FORKLOG_BUFFERED, .buffer_size = 4096, .rotate_bytes = 32768, .rotate_keep = 1000});
}

/* Unrelated writers (each its own forklog_open()) rotate one log while one of them is killed at a step of its own
 * rotation: before its first rename (ROTATE_BEGIN), after a rename (ROTATE_RENAMED: its first, third and sixth, in the
 * middle of a full chain with rotate_keep 2), with the new file made but not yet taken (FILE_CREATED, ROTATE_CREATED),
 * and once it is taken (ROTATE_DONE); direct and buffered. Every record whose call returned is in exactly one file,
 * whole, each writer's sequence complete from its first record that is there on; no file holds more than
 * rotate_bytes but for a lone record; at most one name of the chain is missing (the gap a rotation killed in the
 * middle of its renames leaves). */
static void rotation_killed_by_unrelated_writers(unsigned flags, unsigned keep)
{
    enum { N = 3, V = N, RECORDS = 150, SIZE = 100, ROT = 2048, NAMES = 200 };
    static const struct {
        const char *point;
        unsigned hit;
    } steps[] = {{"ROTATE_BEGIN", 1}, {"ROTATE_RENAMED", 1}, {"ROTATE_RENAMED", 3}, {"ROTATE_RENAMED", 6},
                 {"FILE_CREATED", 1}, {"FILE_CREATED", 3},   {"ROTATE_CREATED", 2}, {"ROTATE_DONE", 2}};
    for (size_t c = 0; c < sizeof steps / sizeof steps[0]; c++) {
        const enum fl__crash_point cp = cp_find(steps[c].point);
        struct forklog_options o = {.rotate_bytes = ROT, .rotate_keep = keep, .flags = flags};
        forklog *log = open_ok(&o);
        struct report *r = new_report();
        pid_t pid[N + 1];
        for (unsigned i = 0; i <= N; i++) {
            pid[i] = fork();
            cr_assert_neq(pid[i], -1);
            if (pid[i] == 0) {
                rc_child();
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                if (i == V)
                    fl__crash_arm(cp, steps[c].hit, FL__CRASH_KILL);
                struct forklog_options oo = {.flags = flags};
                forklog *l;
                if (forklog_open(&l, logpath, &oo) != 0)
                    _exit(3);
                atomic_fetch_add(&r->opened, 1);
                while (!atomic_load(&r->go))
                    usleep(200);
                char *buf = malloc(RC_HEAD_MAX + SIZE);
                unsigned seed = i * 13u + 5u;
                for (unsigned q = 0; q < RECORDS; q++) {
                    if (rc_write(l, buf, 'R', i, q, 0, rc_size(&seed, SIZE)) != 0)
                        _exit(4);
                    atomic_store(&r->acked[i], q + 1);
                }
                free(buf);
                _exit(forklog_close(l) == 0 ? 0 : 5);
            }
        }
        double end = th_now_s() + 10;
        while (atomic_load(&r->opened) < N + 1 && th_now_s() < end)
            usleep(500);
        cr_assert_eq(atomic_load(&r->opened), N + 1);
        atomic_store(&r->go, 1);
        for (unsigned i = 0; i < N; i++)
            cr_assert_eq(th_wait_for(pid[i], 30), 0, "%s/%u: writer %u failed", steps[c].point, steps[c].hit, i);
        cr_assert_eq(th_wait_for(pid[V], 30), 128 + SIGKILL, "%s/%u: the victim was not killed there", steps[c].point,
                     steps[c].hit);
        char last[RC_HEAD_MAX + 8];
        cr_assert_eq(rc_write(log, last, 'R', 63, 0, 0, 8), 0);
        cr_assert_eq(forklog_close(log), 0);
        cr_assert_not(seg_exists(), "%s/%u: the segment file stayed", steps[c].point, steps[c].hit);

        struct rc_seen seen;
        rc_seen_init(&seen, 64, 4096);
        unsigned files = 0, highest = 0;
        for (unsigned k = 0; k <= NAMES; k++) {
            char name[64];
            snprintf(name, sizeof name, k ? "join.log.%u" : "join.log", k);
            char *p = th_path(dir, name);
            size_t before = seen.records;
            long long size = rc_scan(&seen, p, k);
            if (size >= 0) {
                files++;
                highest = k;
                size_t in_file = seen.records - before;
                cr_assert(size <= ROT || in_file == 1,
                          "%s/%u: %s holds %lld bytes in %zu records, past rotate_bytes %d", steps[c].point,
                          steps[c].hit, name, size, in_file, ROT);
                cr_assert(size > 0 || k == 0, "%s/%u: %s is empty", steps[c].point, steps[c].hit, name);
            }
            cr_assert_eq(unlink(p) == 0 || errno == ENOENT, 1);
            free(p);
        }
        cr_assert_leq(highest, keep, "%s/%u: join.log.%u is beyond rotate_keep %u", steps[c].point, steps[c].hit,
                      highest, keep);
        cr_assert_geq(files, keep < 10 ? keep : 10, "%s/%u: only %u files: the writers did not rotate enough",
                      steps[c].point, steps[c].hit, files);
        cr_assert_leq(highest + 1 - files, 1, "%s/%u: %u names missing below join.log.%u", steps[c].point, steps[c].hit,
                      highest + 1 - files, highest);
        cr_assert_eq(rc_count(&seen, 63, 0), 1);
        /* Each writer's records that are there: once each, and every one from the first that is there on (only the
         * oldest files are deleted, and with a large rotate_keep none is: each sequence is there whole). */
        for (unsigned i = 0; i <= N; i++) {
            const unsigned upto = i == V ? atomic_load(&r->acked[V]) : RECORDS;
            unsigned first = 0;
            while (first < upto && rc_count(&seen, i, first) == 0)
                first++;
            cr_assert(keep < NAMES || first == 0, "%s/%u: writer %u's records 0 .. %u are missing", steps[c].point,
                      steps[c].hit, i, first);
            for (unsigned q = first; q < upto; q++)
                cr_assert_eq(rc_count(&seen, i, q), 1, "%s/%u: writer %u record %u is there %u times (from %u on)",
                             steps[c].point, steps[c].hit, i, q, rc_count(&seen, i, q), first);
            if (i == V)
                for (unsigned q = upto; q < RECORDS; q++)
                    cr_assert_leq(rc_count(&seen, V, q), q == upto ? 1u : 0u,
                                  "%s/%u: the victim's record %u, never acknowledged, is there %u times",
                                  steps[c].point, steps[c].hit, q, rc_count(&seen, V, q));
        }
        rc_seen_free(&seen);
        munmap(r, sizeof *r);
    }
}

Test(join, a_rotation_killed_at_each_step_keeps_every_unrelated_writers_records_once_direct, .timeout = 120)
{
    rotation_killed_by_unrelated_writers(0, 200);
    rotation_killed_by_unrelated_writers(0, 2);
}

Test(join, a_rotation_killed_at_each_step_keeps_every_unrelated_writers_records_once_buffered, .timeout = 120)
{
    rotation_killed_by_unrelated_writers(FORKLOG_BUFFERED, 200);
    rotation_killed_by_unrelated_writers(FORKLOG_BUFFERED, 2);
}

/* A rotation whose holder (an unrelated writer, its own forklog_open()) is stopped and then killed at a step of it,
 * the file near rotate_bytes and path.1 already there: before anything moved (ROTATE_BEGIN), after path.1 moved up
 * and before path did, after path moved to path.1 (ROTATE_RENAMED), with the new file made but not yet taken
 * (FILE_CREATED, ROTATE_CREATED), and once it is (ROTATE_DONE). Three other unrelated writers then write a record
 * small enough to fit in the old file: one that wrote before (on the old file's generation), a joiner whose first
 * record this is (its descriptor opened by name before the rename), and one that opened the log while the rotation
 * was stopped. All three go to the file at path, never into the file the dead rotation renamed to path.1; every
 * acknowledged record is there once, no file is past rotate_bytes, and no kept file is gone. */
/* An unrelated writer of rotation_killed_then_small_records: opens the log itself; writer 1 then writes a first record
 * (on the generation of the file it opened); each reports, waits for go, and writes one small record. */
static pid_t small_writer(struct report *r, unsigned flags, unsigned i)
{
    enum { SMALL = 10 };
    static const unsigned ids[] = {1, 2, 4};
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        rc_child();
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        struct forklog_options oo = {.flags = flags};
        forklog *l;
        char b[RC_HEAD_MAX + SMALL];
        if (forklog_open(&l, logpath, &oo) != 0)
            _exit(3);
        unsigned q = 0;
        if (i == 1 && (rc_write(l, b, 'R', ids[i], q++, 0, SMALL) != 0 || forklog_flush(l) != 0))
            _exit(4);
        atomic_fetch_add(&r->opened, 1);
        while (!atomic_load(&r->go))
            usleep(200);
        if (rc_write(l, b, 'R', ids[i], q, 0, SMALL) != 0 || forklog_flush(l) != 0)
            _exit(4);
        _exit(forklog_close(l) == 0 ? 0 : 5);
    }
    return pid;
}

static void rotation_killed_then_small_records(unsigned flags, const char *point, unsigned hit)
{
    enum { ROT = 2048, KEEP = 5, BIG = 800, SMALL = 10, P = 0, W0 = 1, W1 = 2, V = 3, W2 = 4 };
    struct forklog_options o = {.rotate_bytes = ROT, .rotate_keep = KEEP, .flags = flags};
    forklog *log = open_ok(&o);
    char *buf = malloc(RC_HEAD_MAX + BIG);
    cr_assert_not_null(buf);
    unsigned seq = 0;
    struct stat st;
    /* The test process rotates once (path.1 is there), then fills the new file to within BIG of the bound. */
    char *one = th_path(dir, "join.log.1");
    while (access(one, F_OK) != 0) {
        cr_assert_lt(seq, 100);
        cr_assert_eq(rc_write(log, buf, 'R', P, seq++, 0, BIG), 0);
        cr_assert_eq(forklog_flush(log), 0);
    }
    for (;;) {
        cr_assert_eq(stat(logpath, &st), 0);
        if (st.st_size + BIG + RC_HEAD_MAX >= ROT)
            break;
        cr_assert_eq(rc_write(log, buf, 'R', P, seq++, 0, 50), 0);
        cr_assert_eq(forklog_flush(log), 0);
    }
    struct report *r = new_report();
    pid_t w[3];
    for (unsigned i = 0; i < 2; i++)
        w[i] = small_writer(r, flags, i);
    double end = th_now_s() + 10;
    while (atomic_load(&r->opened) < 2 && th_now_s() < end)
        usleep(500);
    cr_assert_eq(atomic_load(&r->opened), 2);
    cr_assert_eq(stat(logpath, &st), 0);
    cr_assert(st.st_size + 4 * (RC_HEAD_MAX + SMALL + 64) <= ROT, "%lld bytes: no room left for the small records",
              (long long)st.st_size);
    pid_t v = fork();
    cr_assert_neq(v, -1);
    if (v == 0) {
        rc_child();
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        fl__crash_arm(cp_find(point), hit, FL__CRASH_STOP);
        struct forklog_options oo = {.flags = flags};
        forklog *l;
        if (forklog_open(&l, logpath, &oo) != 0)
            _exit(3);
        char *b = malloc(2 * RC_HEAD_MAX + BIG + 1);
        if (!b || rc_write(l, b, 'R', V, 0, 0, RC_HEAD_MAX + BIG + 1) != 0 || forklog_flush(l) != 0)
            _exit(4);
        _exit(forklog_close(l) == 0 ? 0 : 5);
    }
    cr_assert(cp_wait_stopped(v, 10), "%s/%u: the rotating writer did not stop there", point, hit);
    w[2] = small_writer(r, flags, 2);
    end = th_now_s() + 10;
    while (atomic_load(&r->opened) < 3 && th_now_s() < end)
        usleep(500);
    cr_assert_eq(atomic_load(&r->opened), 3, "%s/%u: an opener waited for the stopped rotation", point, hit);
    cr_assert_eq(kill(v, SIGKILL), 0);
    cr_assert_eq(th_wait_for(v, 10), 128 + SIGKILL);
    atomic_store(&r->go, 1);
    for (unsigned i = 0; i < 3; i++)
        cr_assert_eq(th_wait_for(w[i], 10), 0, "%s/%u: writer %u failed", point, hit, i);
    cr_assert_eq(rc_write(log, buf, 'R', P, seq, 0, SMALL), 0);
    cr_assert_eq(forklog_close(log), 0);

    struct rc_seen seen;
    rc_seen_init(&seen, 8, 256);
    unsigned files = 0, highest = 0;
    for (unsigned k = 0; k <= KEEP + 1; k++) {
        char name[64];
        snprintf(name, sizeof name, k ? "join.log.%u" : "join.log", k);
        char *p = th_path(dir, name);
        size_t before = seen.records;
        long long size = rc_scan(&seen, p, k);
        if (size >= 0) {
            files++;
            highest = k;
            cr_assert(size <= ROT || seen.records - before == 1, "%s/%u: %s holds %lld bytes, past rotate_bytes %d",
                      point, hit, name, size, ROT);
        }
        free(p);
    }
    cr_assert_leq(highest + 1 - files, 1, "%s/%u: %u names missing below join.log.%u", point, hit, highest + 1 - files,
                  highest);
    for (unsigned q = 0; q <= seq; q++)
        cr_assert_eq(rc_count(&seen, P, q), 1, "%s/%u: the test process's record %u is there %u times", point, hit, q,
                     rc_count(&seen, P, q));
    cr_assert_eq(rc_count(&seen, W1, 0), 1, "%s/%u: the first record of the writer on the old generation", point, hit);
    cr_assert_leq(rc_count(&seen, V, 0), 1, "%s/%u: the dead writer's record is there %u times", point, hit,
                  rc_count(&seen, V, 0));
    const struct {
        unsigned id, seq;
        const char *who;
    } after[] = {{W0, 0, "the joiner's first record"},
                 {W1, 1, "the record of the writer on the old generation"},
                 {W2, 0, "the first record of the writer that opened in the middle of the rotation"}};
    for (unsigned i = 0; i < 3; i++) {
        unsigned id = after[i].id, q = after[i].seq;
        cr_assert_eq(rc_count(&seen, id, q), 1, "%s/%u: %s is there %u times", point, hit, after[i].who,
                     rc_count(&seen, id, q));
        cr_assert_eq(seen.file[(size_t)id * seen.seqs + q], 0,
                     "%s/%u: %s, written after the rotation was killed, went into join.log.%u", point, hit,
                     after[i].who, seen.file[(size_t)id * seen.seqs + q]);
    }
    cr_assert_eq(seen.file[(size_t)P * seen.seqs + seq], 0);
    rc_seen_free(&seen);
    munmap(r, sizeof *r);
    free(one);
    free(buf);
}

static void rotation_killed_then_small_records_all(unsigned flags)
{
    static const struct {
        const char *point;
        unsigned hit;
    } steps[] = {{"ROTATE_BEGIN", 1}, {"ROTATE_RENAMED", 1}, {"ROTATE_RENAMED", 2},
                 {"FILE_CREATED", 1}, {"ROTATE_CREATED", 1}, {"ROTATE_DONE", 1}};
    for (size_t c = 0; c < sizeof steps / sizeof steps[0]; c++) {
        rotation_killed_then_small_records(flags, steps[c].point, steps[c].hit);
        for (unsigned k = 0; k <= 7; k++) {
            char name[64];
            snprintf(name, sizeof name, k ? "join.log.%u" : "join.log", k);
            char *p = th_path(dir, name);
            cr_assert(unlink(p) == 0 || errno == ENOENT);
            free(p);
        }
    }
}

Test(join, records_after_a_rotation_killed_at_each_step_go_to_the_file_at_path_direct)
{
    rotation_killed_then_small_records_all(0);
}

Test(join, records_after_a_rotation_killed_at_each_step_go_to_the_file_at_path_buffered)
{
    rotation_killed_then_small_records_all(FORKLOG_BUFFERED);
}
