/* SPDX-License-Identifier: MIT */
/* forklog_open_fd(): a log made of a descriptor the program already has. A pipe read by another process, with
 * records far above PIPE_BUF from 8 forked writers; a stream and a datagram socketpair; a terminal (a pty); the
 * null device; a regular file opened without O_APPEND; the descriptors it refuses (nothing written, nothing
 * leaked); a reader that goes away (-EPIPE, no hang); and a pipe made non-blocking, or a socket given a send
 * timeout, after the open (EAGAIN in the middle of a record). Records are self-checking (records.h) and read back;
 * children never assert: they report through their exit status. */
#include "records.h"

#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <termios.h>

/* Seconds a call that must not block has before the test calls it a hang. */
#define HANG_S 10.0

static char *dir;

static void setup(void)
{
    dir = th_tmpdir();
    rc_init();
}

static void teardown(void)
{
    th_rmdir(dir);
    free(dir);
}

TestSuite(fd, .init = setup, .fini = teardown);

static forklog *open_fd(int fd, const struct forklog_options *o)
{
    forklog *log = NULL;
    int rc = forklog_open_fd(&log, fd, o);
    cr_assert_eq(rc, 0, "forklog_open_fd(%d): %s", fd, strerror(-rc));
    cr_assert_not_null(log);
    return log;
}

/* The lowest free descriptor number at or above 3, in a child (no cr_assert). */
static int lowest_free_fd_child(void)
{
    int fd = fcntl(1, F_DUPFD, 3);
    if (fd >= 0)
        close(fd);
    return fd;
}

/* The lowest free descriptor number: equal before and after a call that leaks none. */
static int lowest_free_fd(void)
{
    int fd = dup(0);
    cr_assert_geq(fd, 0);
    close(fd);
    return fd;
}

/* Forks `writers` children that write `records` self-checking raw records each through the inherited handle
 * (id = writer, seq = 0 ..): every fourth one `big` bytes or near, the others up to big / 8. A child exits 0
 * when every call returned 0, else 10 + the writer's id. The pids go in pids[]. */
static void fork_writers(forklog *log, pid_t *pids, unsigned writers, unsigned records, size_t big)
{
    for (unsigned w = 0; w < writers; w++) {
        pids[w] = fork();
        cr_assert_geq(pids[w], 0);
        if (pids[w] == 0) {
            rc_child();
            char *buf = malloc(RC_HEAD_MAX + big);
            unsigned seed = w * 7919u + 1;
            if (!buf)
                _exit(9);
            for (unsigned s = 0; s < records; s++) {
                size_t n = s % 4 == 0 ? big - (size_t)rand_r(&seed) % (big / 8) : rc_size(&seed, big / 8);
                if (rc_write(log, buf, 'R', w, s, 0, n) != 0)
                    _exit(10 + (int)w);
            }
            forklog_close(log);
            _exit(0);
        }
    }
}

/* A reader process: copies everything from rfd to `out` until end of file. Exit 0, or 1 on an error. A slow one
 * starts 300 ms late, then drains in bursts (4 KiB reads, a 10 ms pause every 16), so that a writer finds the stream
 * full for longer than a short send timeout, at its first large record for sure. */
static pid_t fork_reader(int rfd, int wfd, const char *out, int slow)
{
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        rc_child();
        close(wfd);
        int ofd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (ofd < 0)
            _exit(1);
        const size_t cap = slow ? 4096 : 1 << 16;
        char *buf = malloc(cap);
        if (slow)
            usleep(300000);
        for (unsigned i = 1;; i++) {
            ssize_t n = read(rfd, buf, cap);
            if (n == 0)
                _exit(0);
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                _exit(1);
            }
            if (write(ofd, buf, (size_t)n) != n)
                _exit(1);
            if (slow && i % 16 == 0)
                usleep(10000);
        }
    }
    return pid;
}

/* Every writer's records 0 .. records-1 each exactly once, whole, in the file. */
static void check_complete(const char *path, unsigned writers, unsigned records)
{
    struct rc_seen seen;
    rc_seen_init(&seen, writers, records);
    cr_assert_geq(rc_scan(&seen, path, 0), 0, "%s: no output", path);
    for (unsigned w = 0; w < writers; w++)
        for (unsigned s = 0; s < records; s++)
            cr_assert_eq(rc_count(&seen, w, s), 1, "writer %u record %u: %u copies", w, s, rc_count(&seen, w, s));
    cr_assert_eq(seen.records, (size_t)writers * records);
    rc_seen_free(&seen);
}

/* wfd/rfd: a stream (pipe or stream socket); a copier reads it into a file while `writers` forked children
 * write through one handle of wfd. */
static void stream_case(int wfd, int rfd, unsigned writers, unsigned records, size_t big)
{
    char *out = th_path(dir, "stream.out");
    pid_t copier = fork_reader(rfd, wfd, out, 0);
    close(rfd);
    forklog *log = open_fd(wfd, NULL);
    close(wfd); /* the handle has its own copy: the caller may close its descriptor at once */
    pid_t pids[16];
    fork_writers(log, pids, writers, records, big);
    for (unsigned w = 0; w < writers; w++)
        cr_assert_eq(th_wait_for(pids[w], 120), 0, "writer %u failed", w);
    cr_assert_eq(forklog_close(log), 0);
    cr_assert_eq(th_wait_for(copier, HANG_S), 0, "the reader did not see the end of the stream");
    check_complete(out, writers, records);
    free(out);
}

Test(fd, pipe_records_far_above_pipe_buf_from_8_writers_stay_whole)
{
    int p[2];
    cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
    stream_case(p[1], p[0], 8, 24, (size_t)256 << 10);
}

Test(fd, stream_socketpair_records_stay_whole)
{
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    stream_case(sv[0], sv[1], 4, 24, (size_t)128 << 10);
}

Test(fd, datagram_socketpair_one_record_per_datagram_and_emsgsize_sends_nothing)
{
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv), 0);
    struct timeval tv = {.tv_sec = 10};
    cr_assert_eq(setsockopt(sv[1], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
    forklog *log = open_fd(sv[0], NULL);

    /* A record larger than the socket's send buffer: -EMSGSIZE, and nothing of it reaches the reader. */
    int sndbuf = 16384;
    cr_assert_eq(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf), 0);
    char *buf = malloc(RC_HEAD_MAX + ((size_t)256 << 10));
    cr_assert_not_null(buf);
    size_t len = rc_build(buf, 'R', 0, 0, 0, (size_t)200 << 10);
    cr_assert_eq(forklog_write(log, buf, len), -EMSGSIZE);
    sndbuf = 1 << 20;
    cr_assert_eq(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf), 0);
    close(sv[0]);

    /* 4 writers, records up to 32 KiB: each datagram is exactly one whole record. */
    enum { WRITERS = 4, RECORDS = 50 };
    pid_t pids[WRITERS];
    fork_writers(log, pids, WRITERS, RECORDS, (size_t)32 << 10);
    char *out = th_path(dir, "dgram.out");
    int ofd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    cr_assert_geq(ofd, 0);
    for (unsigned i = 0; i < WRITERS * RECORDS; i++) {
        ssize_t n = recv(sv[1], buf, RC_HEAD_MAX + ((size_t)256 << 10), 0);
        cr_assert_gt(n, 0, "datagram %u: %s", i, n < 0 ? strerror(errno) : "empty");
        cr_assert_eq(buf[n - 1], '\n', "datagram %u does not end a record", i);
        cr_assert_null(memchr(buf, '\n', (size_t)n - 1), "datagram %u holds more than one record", i);
        cr_assert_eq(write(ofd, buf, (size_t)n), n);
    }
    close(ofd);
    for (unsigned w = 0; w < WRITERS; w++)
        cr_assert_eq(th_wait_for(pids[w], 60), 0, "writer %u failed", w);
    cr_assert_eq(forklog_close(log), 0);
    /* Nothing more: the -EMSGSIZE record never went out. */
    cr_assert_eq(recv(sv[1], buf, 16, MSG_DONTWAIT), -1);
    check_complete(out, WRITERS, RECORDS);
    close(sv[1]);
    free(buf);
    free(out);
}

Test(fd, terminal_records_come_out_of_the_pty_master_whole)
{
    int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    cr_assert_geq(master, 0, "posix_openpt: %s", strerror(errno));
    cr_assert_eq(grantpt(master), 0);
    cr_assert_eq(unlockpt(master), 0);
    int slave = open(ptsname(master), O_WRONLY | O_NOCTTY | O_CLOEXEC);
    cr_assert_geq(slave, 0);
    struct termios t;
    cr_assert_eq(tcgetattr(slave, &t), 0);
    cfmakeraw(&t); /* no "\r\n" for "\n", no echo */
    cr_assert_eq(tcsetattr(slave, TCSANOW, &t), 0);
    forklog *log = open_fd(slave, NULL);
    close(slave);
    enum { WRITERS = 4, RECORDS = 20 };
    pid_t pids[WRITERS];
    fork_writers(log, pids, WRITERS, RECORDS, 3000);
    cr_assert_eq(forklog_close(log), 0);

    char *out = th_path(dir, "tty.out");
    int ofd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    cr_assert_geq(ofd, 0);
    size_t lines = 0;
    char buf[8192];
    double end = th_now_s() + 60;
    while (lines < WRITERS * RECORDS && th_now_s() < end) {
        struct pollfd pf = {master, POLLIN, 0};
        if (poll(&pf, 1, 100) <= 0)
            continue;
        ssize_t n = read(master, buf, sizeof buf);
        if (n <= 0)
            break; /* EIO: every slave descriptor is closed */
        cr_assert_eq(write(ofd, buf, (size_t)n), n);
        lines += th_count_lines(buf, (size_t)n);
    }
    close(ofd);
    for (unsigned w = 0; w < WRITERS; w++)
        cr_assert_eq(th_wait_for(pids[w], HANG_S), 0, "writer %u failed", w);
    check_complete(out, WRITERS, RECORDS);
    close(master);
    free(out);
}

Test(fd, dev_null_takes_every_record)
{
    int fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
    cr_assert_geq(fd, 0);
    forklog *log = open_fd(fd, NULL);
    close(fd);
    pid_t pids[2];
    fork_writers(log, pids, 2, 20, (size_t)64 << 10);
    for (unsigned w = 0; w < 2; w++)
        cr_assert_eq(th_wait_for(pids[w], 60), 0, "writer %u failed", w);
    cr_assert_eq(forklog_info(log, "to %s", "nowhere"), 0);
    cr_assert_eq(forklog_flush(log), 0);
    cr_assert_eq(forklog_reopen(log), 0);
    cr_assert_eq(forklog_close(log), 0);
}

Test(fd, regular_file_without_o_append_is_appended_to_and_the_caller_keeps_its_descriptor)
{
    char *path = th_path(dir, "file.out");
    /* As the shell's `>`: O_WRONLY | O_TRUNC, no O_APPEND, and something written already. */
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    cr_assert_geq(fd, 0);
    char first[RC_HEAD_MAX + 64];
    size_t flen = rc_build(first, 'R', 4, 0, 0, 40);
    first[flen++] = '\n';
    cr_assert_eq(write(fd, first, flen), (ssize_t)flen);
    forklog *log = open_fd(fd, NULL);
    cr_assert(fcntl(fd, F_GETFL) & O_APPEND, "the shared description has O_APPEND");
    cr_assert_eq(forklog_reopen(log), 0); /* no name: nothing to reopen, and no error */
    /* The caller's own descriptor stays its own: still open, and writes through it land at the end. */
    cr_assert_eq(lseek(fd, 0, SEEK_SET), 0);
    flen = rc_build(first, 'R', 4, 1, 0, 50);
    first[flen++] = '\n';
    cr_assert_eq(write(fd, first, flen), (ssize_t)flen);
    close(fd);
    pid_t pids[4];
    fork_writers(log, pids, 4, 30, (size_t)64 << 10);
    for (unsigned w = 0; w < 4; w++)
        cr_assert_eq(th_wait_for(pids[w], 60), 0, "writer %u failed", w);
    cr_assert_eq(forklog_close(log), 0);
    struct rc_seen seen;
    rc_seen_init(&seen, 5, 30);
    cr_assert_gt(rc_scan(&seen, path, 0), 0);
    cr_assert_eq(seen.records, 4 * 30 + 2);
    for (unsigned w = 0; w < 4; w++)
        for (unsigned s = 0; s < 30; s++)
            cr_assert_eq(rc_count(&seen, w, s), 1);
    cr_assert_eq(rc_count(&seen, 4, 0) + rc_count(&seen, 4, 1), 2);
    rc_seen_free(&seen);
    free(path);
}

Test(fd, a_description_whose_o_append_another_descriptor_cleared_still_gets_every_record_at_the_end)
{
    /* forklog_open_fd() sets O_APPEND on the open file description, which the caller's descriptors share: any of
     * them can clear it again (fcntl F_SETFL on a dup, a library that "fixes" the flags). The handle's descriptor
     * then writes at the description's own position, which does not move when the handle's forked processes
     * (descriptions of their own) append: the parent's next record went over the child's, acknowledged, record. */
    char *path = th_path(dir, "cleared.out");
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
    cr_assert_geq(fd, 0);
    forklog *log = open_fd(fd, NULL);
    cr_assert_eq(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_APPEND), 0);
    cr_assert_eq(forklog_write(log, "parent record one", 17), 0);
    for (int i = 0; i < 3; i++) {
        pid_t pid = fork();
        cr_assert_geq(pid, 0);
        if (pid == 0) {
            rc_child();
            _exit(forklog_write(log, "child record", 12) == 0 && forklog_close(log) == 0 ? 0 : 1);
        }
        cr_assert_eq(th_wait_for(pid, HANG_S), 0);
        cr_assert_eq(forklog_write(log, "parent record", 13), 0);
    }
    cr_assert_eq(forklog_close(log), 0);
    close(fd);
    size_t len;
    char *buf = th_slurp(path, &len);
    cr_assert_not_null(buf);
    cr_assert_str_eq(buf, "parent record one\nchild record\nparent record\nchild record\nparent record\n"
                          "child record\nparent record\n");
    free(buf);
    free(path);
}

Test(fd, the_largest_buffer_opens_on_a_machine_with_less_memory_than_its_rings)
{
    /* buffer_size 1 GiB: 64 rings of it are 64 GiB of address space, of which a log uses what its writers fill.
     * The open must not ask the kernel to set all of it aside, for a descriptor or a private segment by path. */
    char *path = th_path(dir, "big.out");
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    cr_assert_geq(fd, 0);
    struct forklog_options o = {.flags = FORKLOG_BUFFERED, .buffer_size = (size_t)1 << 30};
    forklog *log = open_fd(fd, &o);
    cr_assert_eq(forklog_write(log, "through the descriptor", 22), 0);
    cr_assert_eq(forklog_close(log), 0);
    close(fd);
    o.flags |= FORKLOG_PRIVATE;
    int rc = forklog_open(&log, path, &o);
    cr_assert_eq(rc, 0, "forklog_open, FORKLOG_PRIVATE: %s", strerror(-rc));
    cr_assert_eq(forklog_write(log, "by its path", 11), 0);
    cr_assert_eq(forklog_close(log), 0);
    size_t len;
    char *buf = th_slurp(path, &len);
    cr_assert_str_eq(buf, "through the descriptor\nby its path\n");
    free(buf);
    free(path);
}

/* The address space this process uses now, in bytes (VmSize), or 0. */
static unsigned long long vm_size_child(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    unsigned long long kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmSize: %llu kB", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb * 1024;
}

/* A process whose RLIMIT_NOFILE leaves no number above 2 has no descriptor to give the handle: that is -EMFILE, as
 * documented, not the -EINVAL that fcntl(F_DUPFD_CLOEXEC, 3) gives for a minimum at or above the limit (which
 * would read as a bad argument or option). */
Test(fd, no_descriptor_number_above_2_is_emfile)
{
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        for (int fd = 3; fd < 4096; fd++)
            close(fd);
        struct rlimit rl = {3, 3};
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            _exit(90);
        forklog *log = (forklog *)0x1;
        int rc = forklog_open_fd(&log, 1, NULL);
        _exit(rc == -EMFILE && !log ? 0 : rc == -EINVAL ? 1 : 2);
    }
    cr_assert_eq(th_wait(pid), 0, "forklog_open_fd() with no descriptor number above 2 must fail with -EMFILE");
}

Test(fd, a_failed_open_leaves_the_callers_descriptor_as_it_was)
{
    /* The open sets O_APPEND on the description the caller's descriptor shares; when it fails afterwards (here: no
     * address space left for the segment), the caller's descriptor is given back without it. */
    char *path = th_path(dir, "file.out");
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    cr_assert_geq(fd, 0);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        unsigned long long vm = vm_size_child();
        struct rlimit rl = {(rlim_t)(vm + ((unsigned long long)256 << 20)),
                            (rlim_t)(vm + ((unsigned long long)256 << 20))};
        if (!vm || setrlimit(RLIMIT_AS, &rl) < 0)
            _exit(77);
        struct forklog_options o = {.flags = FORKLOG_BUFFERED, .buffer_size = (size_t)1 << 30};
        forklog *log;
        int rc = forklog_open_fd(&log, fd, &o);
        if (rc != -ENOMEM)
            _exit(2);
        _exit(fcntl(fd, F_GETFL) & O_APPEND ? 1 : 0);
    }
    int st = th_wait(pid);
    if (st == 77)
        cr_skip_test("cannot limit the address space");
    cr_assert_neq(st, 2, "the open did not fail for want of address space");
    cr_assert_eq(st, 0, "the failed open left O_APPEND on the caller's descriptor");
    close(fd);
    free(path);
}

Test(fd, handle_descriptor_is_close_on_exec_and_above_2)
{
    int p[2];
    cr_assert_eq(pipe(p), 0);
    /* In a child with descriptor 0 closed: the handle's copy never takes 0, 1 or 2, and is close-on-exec. */
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        rc_child();
        close(0);
        int next = lowest_free_fd_child();
        forklog *log;
        if (forklog_open_fd(&log, p[1], NULL) != 0)
            _exit(1);
        if (fcntl(0, F_GETFD) != -1)
            _exit(2); /* took 0 */
        if (next < 3 || !(fcntl(next, F_GETFD) & FD_CLOEXEC))
            _exit(3);
        _exit(forklog_close(log) == 0 ? 0 : 4);
    }
    cr_assert_eq(th_wait_for(pid, HANG_S), 0);
    forklog *log = open_fd(p[1], NULL);
    cr_assert_eq(fcntl(p[1], F_GETFD) & FD_CLOEXEC, 0, "the caller's descriptor flags are untouched");
    cr_assert_eq(forklog_write(log, "x", 1), 0);
    char c[2];
    cr_assert_eq(read(p[0], c, 2), 2);
    cr_assert_eq(memcmp(c, "x\n", 2), 0);
    cr_assert_eq(forklog_close(log), 0);
    cr_assert_eq(write(p[1], "y", 1), 1, "the caller's descriptor is still open after forklog_close");
    close(p[0]);
    close(p[1]);
}

/* forklog_open_fd(fd) fails with `want`, stores NULL, leaks no descriptor, and writes nothing. */
static void refused(int fd, const struct forklog_options *o, int want, const char *what)
{
    forklog *log = (forklog *)(uintptr_t)1;
    int before = lowest_free_fd();
    int rc = forklog_open_fd(&log, fd, o);
    cr_assert_eq(rc, want, "%s: %d (%s), %d expected", what, rc, strerror(-rc), want);
    cr_assert_null(log, "%s: *out not NULL", what);
    cr_assert_eq(lowest_free_fd(), before, "%s: a descriptor leaked", what);
}

Test(fd, bad_descriptors_are_refused_and_nothing_is_written)
{
    char *path = th_path(dir, "ro.log");
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    cr_assert_geq(fd, 0);
    refused(-1, NULL, -EBADF, "fd -1");
    int closed = dup(fd);
    close(closed);
    refused(closed, NULL, -EBADF, "a closed descriptor");
    int d = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    refused(d, NULL, -EISDIR, "a directory");
    close(d);
    int ro = open(path, O_RDONLY | O_CLOEXEC);
    refused(ro, NULL, -EBADF, "a read-only file");
    close(ro);
    int op = open(path, O_PATH | O_CLOEXEC);
    refused(op, NULL, -EBADF, "an O_PATH descriptor");
    close(op);
    int p[2];
    cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
    refused(p[0], NULL, -EBADF, "a pipe's read end");
    struct forklog_options o = {.rotate_bytes = 4096};
    char err[160];
    o.error = err;
    o.error_size = sizeof err;
    refused(fd, &o, -EINVAL, "rotate_bytes");
    cr_assert(strstr(err, "rotation needs a path"), "error text: %s", err);
    o.rotate_bytes = 0;
    o.rotate_keep = 3;
    refused(fd, &o, -EINVAL, "rotate_keep");
    o.rotate_keep = 0;
    o.flags = 1u << 30;
    refused(fd, &o, -EINVAL, "an unknown flag");
    cr_assert_eq(fcntl(p[1], F_SETFL, O_NONBLOCK), 0);
    refused(p[1], NULL, -EINVAL, "a non-blocking pipe");
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    refused(s, NULL, -ENOTCONN, "an unconnected socket");
    close(s);
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv), 0);
    struct forklog_options b = {.flags = FORKLOG_BUFFERED};
    refused(sv[0], &b, -EINVAL, "FORKLOG_BUFFERED on a datagram socket");
    cr_assert_eq(forklog_open_fd(NULL, fd, NULL), -EINVAL);
    /* Nothing written anywhere, and the refused descriptors are as they were. */
    struct stat st;
    cr_assert_eq(fstat(fd, &st), 0);
    cr_assert_eq(st.st_size, 0);
    cr_assert_eq(fcntl(fd, F_GETFL) & O_APPEND, 0, "a refused regular file got O_APPEND");
    cr_assert_eq(recv(sv[1], err, sizeof err, MSG_DONTWAIT), -1);
    struct pollfd pf = {p[0], POLLIN, 0};
    cr_assert_eq(poll(&pf, 1, 0), 0, "something was written to a refused pipe");
    close(p[0]);
    close(p[1]);
    close(sv[0]);
    close(sv[1]);
    close(fd);
    free(path);
}

/* A descriptor that is no file at all (an eventfd, a timerfd, an epoll instance: an inode with no file type) is
 * open for writing and passed every check, and then every record failed with -EINVAL, the code of a bad argument.
 * Refused at open, as the other descriptors records cannot go through. */
Test(fd, a_descriptor_that_is_no_file_is_refused_at_open)
{
    char err[160];
    struct forklog_options o = {.error = err, .error_size = sizeof err};
    int efd = eventfd(0, EFD_CLOEXEC);
    cr_assert_geq(efd, 0);
    refused(efd, &o, -EINVAL, "an eventfd");
    cr_assert(strstr(err, "not a file"), "error text: %s", err);
    struct pollfd pf = {efd, POLLIN, 0};
    cr_assert_eq(poll(&pf, 1, 0), 0, "something was written to the eventfd");
    close(efd);
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
    cr_assert_geq(tfd, 0);
    refused(tfd, &o, -EINVAL, "a timerfd");
    close(tfd);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    cr_assert_geq(ep, 0);
    refused(ep, &o, -EINVAL, "an epoll instance");
    close(ep);
}

/* A child that ignores SIGPIPE and writes 256 KiB records through a handle of wfd until a call fails: exit 0 if
 * that call returned -EPIPE, 1 if it returned something else. */
static pid_t fork_writer_until_error(int wfd, int rfd)
{
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        rc_child();
        if (rfd >= 0)
            close(rfd); /* the reader's end is the test's alone */
        signal(SIGPIPE, SIG_IGN);
        forklog *log;
        if (forklog_open_fd(&log, wfd, NULL) != 0)
            _exit(2);
        char *buf = malloc(RC_HEAD_MAX + ((size_t)256 << 10));
        if (!buf)
            _exit(3);
        for (unsigned s = 0;; s++) {
            int rc = rc_write(log, buf, 'R', 0, s, 0, (size_t)256 << 10);
            if (rc != 0)
                _exit(rc == -EPIPE ? 0 : 1);
        }
    }
    return pid;
}

Test(fd, reader_gone_is_epipe_without_a_hang)
{
    /* The reader reads a little, then goes away while the writer is in the middle of a record. */
    int p[2];
    cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
    pid_t w = fork_writer_until_error(p[1], p[0]);
    close(p[1]);
    char buf[4096];
    size_t got = 0;
    while (got < 100000) {
        ssize_t n = read(p[0], buf, sizeof buf);
        cr_assert_gt(n, 0);
        got += (size_t)n;
    }
    close(p[0]);
    cr_assert_eq(th_wait_for(w, HANG_S), 0, "pipe: the write after the reader went away was not -EPIPE at once");

    /* A stream socket whose peer closed. */
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    close(sv[1]);
    w = fork_writer_until_error(sv[0], -1);
    close(sv[0]);
    cr_assert_eq(th_wait_for(w, HANG_S), 0, "socket: the write after the peer closed was not -EPIPE at once");
}

/* The handle's description made non-blocking after the open (by the caller through its own descriptor, or by any
 * process sharing the description), or given a send timeout (SO_SNDTIMEO, which forklog_open_fd() cannot see): a
 * write(2) then stops with EAGAIN when the stream is full, after part of a large record went out. That part cannot
 * be taken back: the call returned -EAGAIN with it in the stream, and the next record was glued to it. A record
 * whose call returned 0 must be there whole, once; one whose call failed must not be there at all. */
static void nonblocking_case(int wfd, int rfd, int setfl)
{
    enum { RECORDS = 40 };
    char *out = th_path(dir, "nonblock.out");
    pid_t copier = fork_reader(rfd, wfd, out, 1);
    close(rfd);
    forklog *log = open_fd(wfd, NULL);
    if (setfl)
        cr_assert_eq(fcntl(wfd, F_SETFL, fcntl(wfd, F_GETFL) | O_NONBLOCK), 0);
    else {
        struct timeval tv = {0, 2000};
        cr_assert_eq(setsockopt(wfd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv), 0);
    }
    close(wfd);
    char *buf = malloc(RC_HEAD_MAX + ((size_t)512 << 10));
    cr_assert_not_null(buf);
    int rcs[RECORDS];
    unsigned failed = 0;
    for (unsigned s = 0; s < RECORDS; s++) {
        rcs[s] = rc_write(log, buf, 'R', 0, s, 0, s % 2 ? (size_t)512 << 10 : 3000);
        cr_assert(rcs[s] == 0 || rcs[s] == -EAGAIN, "record %u: %s", s, strerror(-rcs[s]));
        failed += rcs[s] != 0;
    }
    cr_assert_eq(forklog_close(log), 0);
    cr_assert_eq(th_wait_for(copier, 60), 0, "the reader did not see the end of the stream");
    struct rc_seen seen;
    rc_seen_init(&seen, 1, RECORDS);
    cr_assert_geq(rc_scan(&seen, out, 0), 0, "%s: no output", out);
    for (unsigned s = 0; s < RECORDS; s++)
        cr_assert_eq(rc_count(&seen, 0, s), rcs[s] == 0 ? 1u : 0u, "record %u (call returned %d): %u copies", s, rcs[s],
                     rc_count(&seen, 0, s));
    cr_assert_eq(seen.records, (size_t)RECORDS - failed);
    rc_seen_free(&seen);
    free(buf);
    free(out);
}

Test(fd, a_record_that_finds_a_non_blocking_pipe_full_fails_with_eagain_and_sends_nothing)
{
    /* The caller made the description non-blocking after the open, and the reader does not read: a record that finds
     * no room for any of its bytes fails with -EAGAIN at once, nothing of it sent, rather than wait for room as one
     * that sent a part must. */
    int p[2];
    cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
    forklog *log = open_fd(p[1], NULL);
    cr_assert_eq(fcntl(p[1], F_SETFL, fcntl(p[1], F_GETFL) | O_NONBLOCK), 0);
    char junk[4096];
    memset(junk, 'j', sizeof junk);
    while (write(p[1], junk, sizeof junk) > 0) {
    }
    while (write(p[1], junk, 1) == 1) {
    }
    cr_assert_eq(errno, EAGAIN);
    pid_t w = fork();
    cr_assert_neq(w, -1);
    if (w == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        _exit(forklog_write(log, "the record", 10) == -EAGAIN ? 0 : 1);
    }
    int st = th_wait_for(w, HANG_S);
    if (st == -2) {
        kill(w, SIGKILL);
        th_wait(w);
    }
    cr_assert_eq(st, 0, "the record: status %d (1: not -EAGAIN; -2: still waiting for room after %.0f s)", st, HANG_S);
    cr_assert_eq(fcntl(p[0], F_SETFL, O_NONBLOCK), 0);
    ssize_t n;
    while ((n = read(p[0], junk, sizeof junk)) > 0)
        cr_assert_null(memchr(junk, 't', (size_t)n), "part of the failed record is in the pipe");
    cr_assert_eq(forklog_close(log), 0);
    close(p[0]);
}

Test(fd, a_pipe_made_non_blocking_after_the_open_never_gets_part_of_a_record)
{
    int p[2];
    cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
    nonblocking_case(p[1], p[0], 1);
}

Test(fd, a_stream_socket_with_a_send_timeout_never_gets_part_of_a_record)
{
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    nonblocking_case(sv[0], sv[1], 0);
}
