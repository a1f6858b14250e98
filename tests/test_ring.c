/* SPDX-License-Identifier: MIT */
/* The lock-free buffer: FORKLOG_BUFFERED without rotation, where each writer thread appends to a ring of its own
 * with no lock. Threads and processes at once, more writers than rings, records too large for a ring, a full ring,
 * the age bound: every record once, whole, and each writer's records in the order of its calls. Children never
 * assert: they report through their exit status. */
#include "points.h"
#include "records.h"

#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080 /* Linux 5.6; older headers lack it */
#endif
#include <grp.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>

static char *dir, *logpath;

static void setup(void)
{
    dir = th_tmpdir();
    logpath = th_path(dir, "ring.log");
    rc_init();
}

static void teardown(void)
{
    th_rmdir(dir);
    free(logpath);
    free(dir);
}

TestSuite(ring, .init = setup, .fini = teardown);

/* fallocate(2) as the library sees it: test_ring is linked with --wrap for both names the library may call
 * (lib/ring.c). When refuse_fallocate is 1 it fails with ENOSPC, as XFS and btrfs do on a full file system even
 * for a range that has its blocks already; set to another errno, with that one; otherwise it is the system call (with
 * 64-bit arguments: on a 32-bit machine the refusal is all it does, and the tests that need more skip there). */
static volatile int refuse_fallocate, fallocate_refused;

static int wrapped_fallocate(int fd, int mode, off_t off, off_t len)
{
    if (refuse_fallocate) {
        fallocate_refused++;
        errno = refuse_fallocate == 1 ? ENOSPC : refuse_fallocate;
        return -1;
    }
#if UINTPTR_MAX > 0xffffffffu
    return (int)syscall(SYS_fallocate, fd, mode, off, len);
#else
    (void)fd, (void)mode, (void)off, (void)len;
    errno = EOPNOTSUPP;
    return -1;
#endif
}

int __wrap_fallocate(int fd, int mode, off_t off, off_t len);
int __wrap_fallocate(int fd, int mode, off_t off, off_t len)
{
    return wrapped_fallocate(fd, mode, off, len);
}

int __wrap_fallocate64(int fd, int mode, off_t off, off_t len);
int __wrap_fallocate64(int fd, int mode, off_t off, off_t len)
{
    return wrapped_fallocate(fd, mode, off, len);
}

/* Reads the log at path and checks that writer id wrote records 0 .. want-1, each once, in order of seq. */
static void check_file_in_order(const char *path, unsigned writers, unsigned want)
{
    size_t len;
    char *buf = th_slurp(path, &len);
    cr_assert_not_null(buf);
    struct rc_seen seen;
    rc_seen_init(&seen, writers, want);
    rc_scan(&seen, path, 0);
    for (unsigned id = 0; id < writers; id++)
        for (unsigned q = 0; q < want; q++)
            cr_assert_eq(rc_count(&seen, id, q), 1, "writer %u record %u is there %u times", id, q,
                         rc_count(&seen, id, q));
    cr_assert_eq(seen.records, (size_t)writers * want);
    rc_seen_free(&seen);
    /* Order: the sequence numbers of each writer only grow along the file. */
    unsigned *next = calloc(writers, sizeof *next);
    for (char *line = buf; line < buf + len;) {
        char *end = memchr(line, '\n', (size_t)(buf + len - line));
        unsigned id, seq;
        cr_assert_eq(sscanf(line, "R id=%u seq=%u", &id, &seq), 2);
        cr_assert_eq(seq, next[id], "writer %u: record %u where %u was next", id, seq, next[id]);
        next[id]++;
        line = end + 1;
    }
    free(next);
    free(buf);
}

static void check_in_order(unsigned writers, unsigned want)
{
    check_file_in_order(logpath, writers, want);
}

struct thread_arg {
    forklog *log;
    unsigned id, count;
    size_t max;
    int rc;
};

static void *thread_writer(void *p)
{
    struct thread_arg *a = p;
    char *buf = malloc(RC_HEAD_MAX + a->max);
    unsigned seed = a->id;
    for (unsigned q = 0; q < a->count && a->rc == 0; q++)
        a->rc = rc_write(a->log, buf, 'R', a->id, q, 0, (size_t)rand_r(&seed) % (a->max + 1));
    free(buf);
    return NULL;
}

/* `procs` processes of `threads` threads each write `count` records of up to `max` bytes. */
static void run(struct forklog_options *o, unsigned procs, unsigned threads, unsigned count, size_t max)
{
    forklog *log;
    cr_assert_eq(forklog_open(&log, logpath, o), 0);
    cr_assert_gt(log->seg->ring_cap, 0, "buffered without rotation uses the rings");
    pid_t pid[16];
    for (unsigned p = 0; p < procs; p++) {
        pid[p] = fork();
        cr_assert_neq(pid[p], -1);
        if (pid[p] == 0) {
            rc_child();
            pthread_t th[32];
            struct thread_arg a[32];
            for (unsigned t = 0; t < threads; t++) {
                a[t] = (struct thread_arg){log, p * threads + t, count, max, 0};
                if (pthread_create(&th[t], NULL, thread_writer, &a[t]) != 0)
                    _exit(2);
            }
            int bad = 0;
            for (unsigned t = 0; t < threads; t++) {
                pthread_join(th[t], NULL);
                bad |= a[t].rc != 0;
            }
            _exit(bad ? 3 : forklog_close(log) == 0 ? 0 : 4);
        }
    }
    for (unsigned p = 0; p < procs; p++)
        cr_assert_eq(th_wait_for(pid[p], 60), 0, "process %u failed", p);
    cr_assert_eq(forklog_close(log), 0);
    check_in_order(procs * threads, count);
}

Test(ring, threads_and_processes_in_order)
{
    struct forklog_options o = {.flags = FORKLOG_BUFFERED};
    run(&o, 4, 3, 3000, 300);
}

Test(ring, more_writers_than_rings)
{
    /* 8 threads more than rings: they write at once, under the lock. 4 KiB rings, so that they wrap and a flush
     * takes two pieces of many of them. */
    struct forklog_options o = {.flags = FORKLOG_BUFFERED, .buffer_size = 4096};
    run(&o, 3, (FL__RINGS + 8 + 2) / 3, 500, 200);
}

Test(ring, small_rings_and_records_too_large_for_them)
{
    /* 4 KiB rings: full every few records, and records over 2 KiB go straight to the file after the rings. */
    struct forklog_options o = {.flags = FORKLOG_BUFFERED, .buffer_size = 4096};
    run(&o, 3, 2, 1500, 3500);
}

Test(ring, one_thread_writes_two_logs_in_turn)
{
    /* One thread, a ring in each log's segment, 4 KiB rings so that records straddle their ends: every record of
     * both logs whole and in order (an append continues where this thread's last record in that ring ended). */
    struct forklog_options o = {.flags = FORKLOG_BUFFERED, .buffer_size = 4096};
    char *other = th_path(dir, "other.log");
    forklog *a, *b;
    cr_assert_eq(forklog_open(&a, logpath, &o), 0);
    cr_assert_eq(forklog_open(&b, other, &o), 0);
    char *buf = malloc(RC_HEAD_MAX + 1500);
    unsigned seed = 7;
    for (unsigned q = 0; q < 3000; q++) {
        cr_assert_eq(rc_write(a, buf, 'R', 0, q, 0, (size_t)rand_r(&seed) % 1500), 0);
        cr_assert_eq(rc_write(b, buf, 'R', 0, q, 0, (size_t)rand_r(&seed) % 1500), 0);
    }
    free(buf);
    cr_assert_eq(forklog_close(a), 0);
    cr_assert_eq(forklog_close(b), 0);
    check_file_in_order(logpath, 1, 3000);
    check_file_in_order(other, 1, 3000);
    free(other);
}

/* A 100-byte record "<tag> <seq>" padded with dots. */
static void write100(forklog *log, char tag, unsigned seq)
{
    char rec[100];
    memset(rec, '.', sizeof rec);
    int n = snprintf(rec, sizeof rec, "%c %03u ", tag, seq);
    rec[n] = '.';
    rec[99] = '\n';
    cr_assert_eq(forklog_write(log, rec, sizeof rec), 0);
}

static size_t file_size(const char *path)
{
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    return (size_t)st.st_size;
}

static void *write_one_b(void *log)
{
    write100(log, 'B', 0);
    return NULL;
}

Test(ring, a_writer_past_half_its_ring_writes_it_early_unless_alone)
{
    /* 4 KiB rings, no age flush during the test. */
    struct forklog_options o = {.flags = FORKLOG_BUFFERED, .buffer_size = 4096, .flush_ms = 60000};
    forklog *log;
    cr_assert_eq(forklog_open(&log, logpath, &o), 0);
    /* Alone (every other ring empty): past half its ring, a writer leaves it to fill. */
    for (unsigned q = 0; q < 30; q++)
        write100(log, 'A', q);
    cr_assert_eq(file_size(logpath), 0, "a lone writer past half its ring wrote it early");
    /* Full: the 41st record does not fit, so the 40 before it are written, and only they. */
    for (unsigned q = 30; q < 41; q++)
        write100(log, 'A', q);
    cr_assert_eq(file_size(logpath), 4000);
    /* Another thread's record waits in its ring; past half again, this writer writes its own ring, not that one. */
    pthread_t b;
    cr_assert_eq(pthread_create(&b, NULL, write_one_b, log), 0);
    cr_assert_eq(pthread_join(b, NULL), 0);
    for (unsigned q = 41; q < 62; q++)
        write100(log, 'A', q);
    cr_assert_eq(file_size(logpath), 6100, "past half its ring beside another writer: its 21 records written");
    cr_assert_eq(forklog_close(log), 0);
    size_t len;
    char *buf = th_slurp(logpath, &len);
    cr_assert_eq(len, 6300);
    for (unsigned q = 0; q < 62; q++) {
        char want[8];
        snprintf(want, sizeof want, "A %03u ", q);
        cr_assert_eq(memcmp(buf + 100 * q, want, 6), 0, "record %u is not A %03u", q, q);
    }
    cr_assert_eq(memcmp(buf + 6200, "B 000 ", 6), 0, "the other thread's record is not last");
    free(buf);
}

Test(ring, the_age_bound_writes_an_idle_writers_records)
{
    /* One record, then nothing from this writer: another process's call past flush_ms writes it (without the age
     * bound it would wait for a flush or a close). */
    struct forklog_options o = {.flags = FORKLOG_BUFFERED, .flush_ms = 50};
    forklog *log;
    cr_assert_eq(forklog_open(&log, logpath, &o), 0);
    cr_assert_eq(forklog_write(log, "idle writer", 11), 0);
    size_t len;
    free(th_slurp(logpath, &len));
    cr_assert_eq(len, 0, "the record waits in its ring");
    usleep(120 * 1000);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0)
        _exit(forklog_write(log, "another writer", 14) == 0 ? 0 : 1);
    cr_assert_eq(th_wait(pid), 0);
    /* The other writer's call found the idle writer's record due and flushed every ring, its own among them. */
    char *buf = th_slurp(logpath, &len);
    cr_assert_not_null(strstr(buf, "idle writer\n"), "the due record is not written: [%s]", buf);
    cr_assert_eq(th_count_lines(buf, len), 2, "[%s]", buf);
    free(buf);
    cr_assert_eq(forklog_close(log), 0);
    buf = th_slurp(logpath, &len);
    cr_assert_eq(th_count_lines(buf, len), 2, "nothing written twice: [%s]", buf);
    cr_assert_not_null(strstr(buf, "another writer\n"));
    free(buf);
}

Test(ring, a_writer_killed_while_copying_publishes_nothing)
{
    /* Killed between the copy and the publish: the record was never acknowledged and nothing of it is written;
     * the next writer takes its ring back once no ring is free. */
    struct forklog_options o = {.flags = FORKLOG_BUFFERED};
    forklog *log;
    cr_assert_eq(forklog_open(&log, logpath, &o), 0);
    cr_assert_eq(forklog_write(log, "before", 6), 0);
    for (int i = 0; i < FL__RINGS; i++) {
        pid_t dead = cp_writer(log, "never published", FL__CP_RING_COPIED, 1);
        cr_assert_eq(th_wait(dead), 128 + SIGKILL);
    }
    /* Every ring but the parent's is held by a dead writer now; a new writer gets one back. */
    pid_t pid = cp_writer(log, "after", FL__CP_COUNT, 0);
    cr_assert_eq(th_wait_for(pid, 10), 0);
    cr_assert_eq(forklog_close(log), 0);
    size_t len;
    char *buf = th_slurp(logpath, &len);
    cr_assert_str_eq(buf, "before\nafter\n");
    free(buf);
}

static void *write_one_t(void *log)
{
    write100(log, 'T', 0);
    return NULL;
}

Test(ring, a_log_opened_again_gives_each_thread_a_ring_of_its_own)
{
    /* A thread writes, the log is closed and opened again (its segment most likely mapped where the old one was),
     * another thread takes the first ring of the new segment, and the first thread writes again: it must take a
     * ring of its own, not write into the other thread's because the address is the same. */
    struct forklog_options o = {.flags = FORKLOG_BUFFERED, .flush_ms = 60000};
    forklog *log;
    cr_assert_eq(forklog_open(&log, logpath, &o), 0);
    write100(log, 'M', 0);
    const void *first = log->seg;
    cr_assert_eq(forklog_close(log), 0);
    cr_assert_eq(forklog_open(&log, logpath, &o), 0);
    if ((const void *)log->seg != first)
        cr_skip_test("the new segment is mapped elsewhere (%p, was %p): nothing to tell apart", (void *)log->seg,
                     first);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, write_one_t, log), 0);
    cr_assert_eq(pthread_join(t, NULL), 0);
    write100(log, 'M', 1);
    struct fl__seg *s = log->seg;
    cr_assert_neq(atomic_load(&s->rings[0].owner), 0);
    cr_assert_neq(atomic_load(&s->rings[1].owner), 0, "this thread wrote into the other thread's ring");
    cr_assert_neq(atomic_load(&s->rings[0].owner), atomic_load(&s->rings[1].owner));
    cr_assert_eq(atomic_load(&s->rings[0].head), 100);
    cr_assert_eq(atomic_load(&s->rings[1].head), 100);
    cr_assert_eq(forklog_close(log), 0);
    size_t len;
    char *buf = th_slurp(logpath, &len);
    cr_assert_eq(len, 300);
    cr_assert_eq(memcmp(buf, "M 000 ", 6), 0);
    cr_assert(memcmp(buf + 100, "T 000 ", 6) == 0 || memcmp(buf + 200, "T 000 ", 6) == 0, "[%.300s]", buf);
    cr_assert(memcmp(buf + 100, "M 001 ", 6) == 0 || memcmp(buf + 200, "M 001 ", 6) == 0, "[%.300s]", buf);
    free(buf);
}

struct x_arg {
    forklog *log;
    unsigned seq;
};

static void *write_one_x(void *p)
{
    struct x_arg *a = p;
    write100(a->log, 'X', a->seq);
    return NULL;
}

static void one_thread_writes(forklog *log, unsigned seq)
{
    struct x_arg a = {log, seq};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, write_one_x, &a), 0);
    cr_assert_eq(pthread_join(t, NULL), 0);
}

Test(ring, a_thread_back_from_another_log_writes_to_its_own_ring)
{
    /* This thread holds ring 5 with a record waiting in it, and lower rings are free (taken back from threads that
     * are gone). Back from writing another log, its next record must go to ring 5 behind the first, not to a
     * free ring that a flush would write before ring 5. */
    struct forklog_options o = {.flags = FORKLOG_BUFFERED, .flush_ms = 60000};
    char *other = th_path(dir, "other.log");
    forklog *a, *b;
    cr_assert_eq(forklog_open(&a, logpath, &o), 0);
    cr_assert_eq(forklog_open(&b, other, &o), 0);
    for (unsigned k = 0; k < 5; k++)
        one_thread_writes(a, k); /* rings 0-4, their threads gone */
    write100(a, 'M', 0);         /* ring 5 */
    for (unsigned k = 6; k < FL__RINGS; k++)
        one_thread_writes(a, k); /* rings 6-15 */
    /* No ring free: this one takes the gone threads' rings back (after writing them) and gets ring 0. */
    one_thread_writes(a, FL__RINGS);
    cr_assert_neq(atomic_load(&a->seg->rings[5].owner), 0);
    cr_assert_eq(atomic_load(&a->seg->rings[1].owner), 0, "ring 1 was not taken back");
    write100(a, 'F', 0);
    write100(b, 'B', 0);
    write100(a, 'S', 0);
    cr_assert_eq(forklog_close(a), 0);
    cr_assert_eq(forklog_close(b), 0);
    size_t len;
    char *buf = th_slurp(logpath, &len);
    cr_assert_eq(len, 100 * (FL__RINGS + 3));
    char *f = strstr(buf, "F 000 "), *sec = strstr(buf, "S 000 ");
    cr_assert(f && sec && f < sec, "this thread's records are out of order: [%s]", buf);
    free(buf);
    free(other);
}

/* A record acknowledged to this process and one to a child, which is then killed once its flush of them is written;
 * then "after", and the close. The stream must hold each once. */
static void flusher_killed_after_writing(forklog *log)
{
    cr_assert_eq(forklog_write(log, "acked by the parent\n", 20), 0);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        rc_child();
        if (forklog_write(log, "acked by the child\n", 19) != 0)
            _exit(2);
        fl__crash_arm(FL__CP_WRITE_DONE, 1, FL__CRASH_KILL);
        forklog_flush(log);
        _exit(3);
    }
    cr_assert_eq(th_wait(pid), 128 + SIGKILL);
    cr_assert_eq(forklog_write(log, "after\n", 6), 0);
    cr_assert_eq(forklog_close(log), 0);
}

/* What the stream read through r (closed here) holds after flusher_killed_after_writing: each record once. */
static void stream_holds_each_once(int r)
{
    char buf[256];
    ssize_t n = read(r, buf, sizeof buf - 1);
    close(r);
    cr_assert_gt(n, 0);
    buf[n] = 0;
    cr_assert_str_eq(buf, "acked by the parent\nacked by the child\nafter\n");
}

Test(ring, a_flusher_killed_after_writing_to_a_pipe_leaves_nothing_to_write_again)
{
    /* On a pipe nothing can be measured after a death: what the dead flusher was writing counts as written (at
     * most once), as the shared buffer's records do. */
    int p[2];
    cr_assert_eq(pipe(p), 0);
    struct forklog_options o = {.flags = FORKLOG_BUFFERED, .flush_ms = 60000};
    forklog *log;
    cr_assert_eq(forklog_open_fd(&log, p[1], &o), 0);
    cr_assert_gt(log->seg->ring_cap, 0);
    flusher_killed_after_writing(log);
    close(p[1]);
    stream_holds_each_once(p[0]);
}

Test(ring, a_flusher_of_the_shared_buffer_killed_after_writing_to_a_fifo_leaves_nothing_to_write_again)
{
    /* The one buffer of a rotating log, on a FIFO: what the dead flusher wrote counts as written, as the rings' do. */
    char *fifo = th_path(dir, "fifo.log");
    cr_assert_eq(mkfifo(fifo, 0600), 0);
    int r = open(fifo, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    cr_assert_geq(r, 0);
    struct forklog_options o = {.flags = FORKLOG_BUFFERED, .flush_ms = 60000, .rotate_bytes = 1 << 20};
    forklog *log;
    cr_assert_eq(forklog_open(&log, fifo, &o), 0);
    cr_assert_gt(log->buf_cap, 0);
    flusher_killed_after_writing(log);
    stream_holds_each_once(r);
    free(fifo);
}

/* In a new time namespace (this process's children are in it): opens the log by name, writes `count` records as
 * writers id and id + 1 (two threads), closes. Exit status 0, 77 when no namespace can be made. */
static int guest(const char *path, unsigned flags, unsigned id, unsigned count)
{
    if (unshare(CLONE_NEWTIME) < 0)
        return 77;
    pid_t pid = fork();
    if (pid < 0)
        return 2;
    if (pid == 0) {
        forklog *log;
        struct forklog_options o = {.flags = flags};
        if (forklog_open(&log, path, &o) != 0)
            _exit(3);
        if (!(log->flags & FL__GUEST))
            _exit(4);
        pthread_t th[2];
        struct thread_arg a[2];
        for (unsigned t = 0; t < 2; t++) {
            a[t] = (struct thread_arg){log, id + t, count, 200, 0};
            if (pthread_create(&th[t], NULL, thread_writer, &a[t]) != 0)
                _exit(5);
        }
        int bad = 0;
        for (unsigned t = 0; t < 2; t++) {
            pthread_join(th[t], NULL);
            bad |= a[t].rc != 0;
        }
        _exit(bad ? 6 : forklog_close(log) == 0 ? 0 : 7);
    }
    return th_wait_for(pid, 60);
}

/* Two processes of two new time namespaces, whose clocks are not the log's, write `flags` records beside a writer
 * of the log's own: every record is there once and in order. */
static void guests_and_a_native(const char *path, unsigned flags)
{
    struct forklog_options o = {.flags = flags};
    forklog *log;
    cr_assert_eq(forklog_open(&log, path, &o), 0);
    cr_assert_eq(log->flags & FL__GUEST, 0);
    pid_t pid[2];
    for (unsigned g = 0; g < 2; g++) {
        pid[g] = fork();
        cr_assert_neq(pid[g], -1);
        if (pid[g] == 0) {
            rc_child();
            _exit(guest(path, flags, 2 * g, 2000));
        }
    }
    struct thread_arg a = {log, 4, 2000, 200, 0};
    thread_writer(&a);
    cr_assert_eq(a.rc, 0);
    int st[2];
    for (unsigned g = 0; g < 2; g++)
        st[g] = th_wait_for(pid[g], 60);
    if (st[0] == 77 || st[1] == 77)
        cr_skip_test("unshare(CLONE_NEWTIME) is not allowed here");
    cr_assert_eq(st[0], 0, "guest 0 failed: %d", st[0]);
    cr_assert_eq(st[1], 0, "guest 1 failed: %d", st[1]);
    cr_assert_eq(forklog_close(log), 0);
    check_file_in_order(path, 5, 2000);
}

Test(ring, processes_of_other_time_namespaces_share_the_log)
{
    /* Their monotonic clocks are not the log's, so they take no ring (buffered) and no combining slot (direct) and
     * write at once, under the lock. (A process of another PID namespace is refused: see
     * a_process_of_another_pid_namespace_killed_waiting_for_the_lock_does_not_free_it_under_its_holder.) */
    guests_and_a_native(logpath, FORKLOG_BUFFERED);
    char *direct = th_path(dir, "direct.log");
    guests_and_a_native(direct, 0);
    free(direct);
}

static sem_t written;
static pthread_barrier_t done;

static void *write_one_and_hold(void *p)
{
    struct x_arg *a = p;
    write100(a->log, 'H', a->seq);
    sem_post(&written);
    pthread_barrier_wait(&done);
    return NULL;
}

/* Every ring taken by a live thread with a record in it: FL__RINGS threads that each write one record and hold
 * their ring until let_every_ring_go(). They write one after the other: a record published beside the log's first
 * one, before the due time is set, has every ring written at once (see fl__ring_append). */
static void hold_every_ring(forklog *log, pthread_t *t, struct x_arg *a)
{
    cr_assert_eq(sem_init(&written, 0, 0), 0);
    cr_assert_eq(pthread_barrier_init(&done, NULL, FL__RINGS + 1), 0);
    for (unsigned k = 0; k < FL__RINGS; k++) {
        a[k] = (struct x_arg){log, k};
        cr_assert_eq(pthread_create(&t[k], NULL, write_one_and_hold, &a[k]), 0);
        while (sem_wait(&written) != 0)
            cr_assert_eq(errno, EINTR);
    }
}

static void let_every_ring_go(pthread_t *t)
{
    pthread_barrier_wait(&done);
    for (unsigned k = 0; k < FL__RINGS; k++)
        cr_assert_eq(pthread_join(t[k], NULL), 0);
    sem_destroy(&written);
    pthread_barrier_destroy(&done);
}

Test(ring, a_thread_that_finds_no_ring_free_writes_its_record_alone)
{
    /* Every ring held by a live thread, a record waiting in each: a thread that finds none free writes its record
     * at once, and only it (the others wait for their own flush). */
    struct forklog_options o = {.flags = FORKLOG_BUFFERED, .flush_ms = 60000};
    forklog *log;
    cr_assert_eq(forklog_open(&log, logpath, &o), 0);
    pthread_t t[FL__RINGS];
    struct x_arg a[FL__RINGS];
    hold_every_ring(log, t, a);
    cr_assert_eq(file_size(logpath), 0);
    write100(log, 'N', 0);
    write100(log, 'N', 1);
    size_t len;
    char *buf = th_slurp(logpath, &len);
    cr_assert_eq(len, 200, "[%s]", buf);
    cr_assert_eq(memcmp(buf, "N 000 ", 6), 0);
    cr_assert_eq(memcmp(buf + 100, "N 001 ", 6), 0);
    free(buf);
    let_every_ring_go(t);
    cr_assert_eq(forklog_close(log), 0);
    buf = th_slurp(logpath, &len);
    cr_assert_eq(len, 100 * (FL__RINGS + 2));
    free(buf);
}

Test(ring, a_ring_or_buffer_that_a_damaged_segment_overstates_is_not_read)
{
    /* Another process that may write the segment file can set any count; a flush never reads past a ring or
     * the shared buffer for it: the overstated ring or buffer is dropped, and records go on. */
    struct forklog_options o = {.flags = FORKLOG_BUFFERED, .flush_ms = 60000};
    forklog *log;
    cr_assert_eq(forklog_open(&log, logpath, &o), 0);
    write100(log, 'A', 0);
    struct fl__seg *s = log->seg;
    atomic_store(&s->rings[1].head, atomic_load(&s->rings[1].tail) + 10 * (uint64_t)log->ring_cap);
    atomic_store(&s->rings[2].tail, atomic_load(&s->rings[2].head) + 100);
    cr_assert_eq(forklog_flush(log), 0);
    cr_assert_eq(atomic_load(&s->rings[1].tail), atomic_load(&s->rings[1].head));
    cr_assert_eq(atomic_load(&s->rings[2].tail), atomic_load(&s->rings[2].head));
    write100(log, 'A', 1);
    cr_assert_eq(forklog_close(log), 0);
    size_t len;
    char *buf = th_slurp(logpath, &len);
    cr_assert_eq(len, 200);
    cr_assert_eq(memcmp(buf, "A 000 ", 6), 0);
    cr_assert_eq(memcmp(buf + 100, "A 001 ", 6), 0);
    free(buf);

    /* The one buffer of a rotating log. */
    char *other = th_path(dir, "rotating.log");
    struct forklog_options r = {.flags = FORKLOG_BUFFERED, .flush_ms = 60000, .rotate_bytes = 1 << 20};
    cr_assert_eq(forklog_open(&log, other, &r), 0);
    write100(log, 'B', 0);
    log->seg->buf_used = log->buf_cap + 4096;
    write100(log, 'B', 1);
    cr_assert_eq(forklog_close(log), 0);
    buf = th_slurp(other, &len);
    cr_assert_eq(len, 100, "[%.*s]", (int)len, buf);
    cr_assert_eq(memcmp(buf, "B 001 ", 6), 0);
    free(buf);
    free(other);
}

/* Thread B of ring_b_records: its records, in its ring. */
struct ring_b {
    forklog *log;
    unsigned n;
};
static void *write_b(void *arg)
{
    struct ring_b *b = arg;
    for (unsigned seq = 0; seq < b->n; seq++)
        write100(b->log, 'B', seq);
    return NULL;
}

/* A buffered log of 4 KiB and no age bound whose thread B, ended now, wrote n records of 100 bytes into its ring. */
static forklog *ring_b_records(unsigned n)
{
    struct forklog_options o = {.flags = FORKLOG_BUFFERED, .buffer_size = 4096, .flush_ms = 60000};
    struct ring_b b = {NULL, n};
    cr_assert_eq(forklog_open(&b.log, logpath, &o), 0);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, write_b, &b), 0);
    cr_assert_eq(pthread_join(t, NULL), 0);
    return b.log;
}

/* A flush of every ring that fails: under a file size limit of 0, -EFBIG (SIGXFSZ ignored). */
static void flush_fails_at_the_size_limit(forklog *log)
{
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit was, none;
    cr_assert_eq(getrlimit(RLIMIT_FSIZE, &was), 0);
    none = (struct rlimit){0, was.rlim_max};
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &none), 0);
    cr_assert_eq(forklog_flush(log), -EFBIG);
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &was), 0);
}

/* A flush of every ring that fails (here the file size limit) plans every ring and moves no tail; a later flush of one
 * ring alone (a record of more than half a ring, written after what its thread's ring holds) must plan the others
 * afresh, at their tails: with the failed plan's heads left in them, its success would move the other rings' tails
 * past records it never wrote, and they would be lost. */
Test(ring, a_flush_of_one_ring_after_a_failed_flush_of_all_loses_no_other_rings_records)
{
    forklog *log = ring_b_records(3);
    write100(log, 'A', 0);
    flush_fails_at_the_size_limit(log);
    cr_assert_eq(file_size(logpath), 0);
    /* More than half a ring: written at once, after ring A alone. */
    char big[3000];
    memset(big, 'L', sizeof big);
    big[sizeof big - 1] = '\n';
    cr_assert_eq(forklog_write(log, big, sizeof big), 0);
    cr_assert_eq(forklog_close(log), 0);
    /* A's record and the long one, then B's three at the close. */
    size_t len;
    char *buf = th_slurp(logpath, &len);
    cr_assert_eq(len, 100 + sizeof big + 3 * 100, "%zu bytes, not A's record, the long one and B's three", len);
    cr_assert_eq(memcmp(buf, "A 000 ", 6), 0);
    cr_assert_eq(memcmp(buf + 100, big, sizeof big), 0);
    for (unsigned seq = 0; seq < 3; seq++) {
        char want[8];
        snprintf(want, sizeof want, "B %03u ", seq);
        cr_assert_eq(memcmp(buf + 100 + sizeof big + 100 * seq, want, 6), 0, "B's record %u", seq);
    }
    free(buf);
}

/* A flush of the rings that fails plans them (ring_target, the heads) and writes nothing: it must end its plan. Left
 * planned, the next holder to repair after a death would take the plan for a flush that died when the file has the
 * planned size (here: another program appended as many bytes, and a reopen made the log read the file's size again),
 * and move the tails past records never written. */
Test(ring, a_failed_flush_leaves_no_plan_that_a_later_repair_would_take_for_written)
{
    /* Thread B's 30 records: past half of its ring, but no other ring holds any: not written yet. */
    forklog *log = ring_b_records(30);
    flush_fails_at_the_size_limit(log);
    /* Another program appends a line as long as the failed flush; the log is reopened. */
    char line[3000];
    memset(line, 'L', sizeof line);
    line[sizeof line - 1] = '\n';
    int fd = open(logpath, O_WRONLY | O_APPEND | O_CLOEXEC);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, line, sizeof line), (ssize_t)sizeof line);
    close(fd);
    cr_assert_eq(forklog_reopen(log), 0);
    /* A holder dies with the lock once it has read the file's size: the next holder repairs. */
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        rc_child();
        fl__crash_arm(FL__CP_FILE_KNOWN, 1, FL__CRASH_KILL);
        forklog_flush(log);
        _exit(3);
    }
    cr_assert_eq(th_wait(pid), 128 + SIGKILL);
    cr_assert_eq(forklog_close(log), 0);
    size_t len;
    char *buf = th_slurp(logpath, &len);
    cr_assert_eq(len, sizeof line + 30 * 100, "%zu bytes: B's records are gone", len);
    cr_assert_eq(memcmp(buf, line, sizeof line), 0);
    for (unsigned seq = 0; seq < 30; seq++) {
        char want[8];
        snprintf(want, sizeof want, "B %03u ", seq);
        cr_assert_eq(memcmp(buf + sizeof line + 100 * seq, want, 6), 0, "B's record %u", seq);
    }
    free(buf);
}

Test(ring, a_file_system_that_cannot_reserve_blocks_still_gives_each_writer_a_ring)
{
    /* fallocate(2) not supported (EOPNOTSUPP: ext2 and ext3 files, ramfs, most FUSE file systems): the ring stays
     * sparse, as before any reservation, and is used: the append takes no lock and the record waits in it. Only a
     * refusal for want of space gives the writer no ring. */
    refuse_fallocate = EOPNOTSUPP;
    struct forklog_options o = {.flags = FORKLOG_BUFFERED, .buffer_size = 4096, .flush_ms = 60000};
    forklog *log;
    cr_assert_eq(forklog_open(&log, logpath, &o), 0);
    write100(log, 'A', 0);
    refuse_fallocate = 0;
    cr_assert_gt(fallocate_refused, 0, "the ring's blocks were not asked for");
    cr_assert_eq(file_size(logpath), 0, "the record was written at once: the writer got no ring");
    cr_assert_eq(forklog_close(log), 0);
    size_t len;
    char *buf = th_slurp(logpath, &len);
    cr_assert_eq(len, 100);
    cr_assert_eq(memcmp(buf, "A 000 ", 6), 0);
    free(buf);
}

/* ---- one writer per ring, whatever pids come back ------------------------------------------------------------ */

/* A 100-byte record "<tag> <seq>" padded with dots, for a child (no assertion). */
static int rec100(forklog *log, char tag, unsigned seq)
{
    char rec[100];
    memset(rec, '.', sizeof rec);
    int n = snprintf(rec, sizeof rec, "%c %03u ", tag, seq);
    rec[n] = '.';
    rec[99] = '\n';
    return forklog_write(log, rec, sizeof rec);
}

/* The file holds exactly the records named in want ("T NNN", each once), each a whole line of its own: the prefix,
 * then only dots up to the newline. */
static void check_records(const char *path, const char *const *want, size_t n)
{
    size_t len;
    char *buf = th_slurp(path, &len);
    cr_assert_not_null(buf);
    unsigned *seen = calloc(n, sizeof *seen);
    size_t lines = 0;
    for (char *line = buf; line < buf + len; lines++) {
        char *end = memchr(line, '\n', (size_t)(buf + len - line));
        cr_assert_not_null(end, "the file ends in the middle of a line");
        size_t i = 0;
        while (i < n && memcmp(line, want[i], 5) != 0)
            i++;
        cr_assert_lt(i, n, "a record nobody wrote: [%.*s]", (int)(end - line), line);
        cr_assert_eq(line[5], ' ', "[%.*s]", (int)(end - line), line);
        for (char *c = line + 6; c < end; c++)
            cr_assert_eq(*c, '.', "a torn or mixed line: [%.*s]", (int)(end - line), line);
        seen[i]++;
        line = end + 1;
    }
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(seen[i], 1, "record %s is there %u times", want[i], seen[i]);
    cr_assert_eq(lines, n);
    free(seen);
    free(buf);
}

/* Runs scene(path, arg) as pid 1 of a new PID namespace (th_pid_namespace_scene); it must return 0. */
static void in_pid_namespace(int (*scene)(const char *, int), const char *path, int arg)
{
    int st = th_pid_namespace_scene(scene, path, arg);
    cr_assert_eq(st, 0, "the scene failed at step %d", st);
}

static int fill_go[2];
static pthread_barrier_t filled;

static void *filler(void *p)
{
    forklog **log = p;
    static atomic_uint next;
    if (rec100(*log, 'F', atomic_fetch_add(&next, 1)) != 0)
        abort();
    pthread_barrier_wait(&filled);
    char c;
    (void)!read(fill_go[0], &c, 1); /* a live owner until the scene ends */
    return NULL;
}

/* FL__RINGS - 1 threads of this process take a ring each, write a record F 000.. and hold it (live owners). */
static int fill_rings(forklog **log, pthread_t *th)
{
    if (pipe(fill_go) < 0 || pthread_barrier_init(&filled, NULL, FL__RINGS) != 0)
        return 0;
    for (unsigned k = 0; k < FL__RINGS - 1; k++)
        if (pthread_create(&th[k], NULL, filler, log) != 0)
            return 0;
    pthread_barrier_wait(&filled);
    return 1;
}

static void unfill_rings(pthread_t *th)
{
    close(fill_go[1]);
    for (unsigned k = 0; k < FL__RINGS - 1; k++)
        pthread_join(th[k], NULL);
    close(fill_go[0]);
    pthread_barrier_destroy(&filled);
}

static int say(int fd, char c)
{
    return write(fd, &c, 1) == 1;
}

static char hear(int fd)
{
    char c = 0;
    return read(fd, &c, 1) == 1 ? c : 0;
}

/* The ring whose owner bears pid and tid `pid` (a single-threaded process), FL__RINGS if none. */
static unsigned ring_of(forklog *log, pid_t pid)
{
    for (unsigned k = 0; k < FL__RINGS; k++)
        if ((atomic_load(&log->seg->rings[k].owner) & FL__OWNER_ID) == ((uint64_t)pid << 22 | (uint64_t)pid))
            return k;
    return FL__RINGS;
}

/* D takes the last free ring, writes D 000 and exits. R finds no ring free, sees D gone and is stopped at `stop`:
 * with the lock, before it looks at D's ring again (LOCK_ACQUIRED), or after it found D gone again with the lock
 * held, right before it frees the ring (RING_OWNER_GONE). Q is then born with D's pid (and tid), finds the ring
 * bearing them and writes Q 000 into it, with no lock. R goes on and writes R 000; Q is stopped with Q 001 copied
 * into its ring and not yet published while R writes R 001; then Q publishes. One writer per ring: R must not
 * have freed and taken the ring Q took, so every record is whole and there once. */
static int scene_pid_reused_during_a_take_back(const char *path, int stop)
{
    struct forklog_options o = {.flags = FORKLOG_BUFFERED, .buffer_size = 4096, .flush_ms = 60000};
    forklog *log;
    if (forklog_open(&log, path, &o) != 0)
        return 3;
    pthread_t th[FL__RINGS - 1];
    if (!fill_rings(&log, th))
        return 4;
    pid_t d = fork();
    if (d == 0)
        _exit(rec100(log, 'D', 0) == 0 ? 0 : 1);
    if (th_wait(d) != 0)
        return 5;
    unsigned k = ring_of(log, d);
    if (k == FL__RINGS)
        return 6;
    int rc_[2], rr[2], qc[2], qr[2];
    if (pipe(rc_) < 0 || pipe(rr) < 0 || pipe(qc) < 0 || pipe(qr) < 0)
        return 7;
    pid_t r = fork();
    if (r == 0) {
        fl__crash_arm((enum fl__crash_point)stop, 1, FL__CRASH_STOP);
        say(rr[1], rec100(log, 'R', 0) == 0 ? 'a' : 'e');
        hear(rc_[0]);
        say(rr[1], rec100(log, 'R', 1) == 0 ? 'a' : 'e');
        _exit(0);
    }
    if (!cp_wait_stopped(r, 10))
        return 8;
    if (th_next_pid_is(d))
        return 78;
    pid_t q = fork();
    if (q == 0) {
        say(qr[1], rec100(log, 'Q', 0) == 0 ? 'a' : 'e');
        hear(qc[0]);
        fl__crash_arm(FL__CP_RING_COPIED, 1, FL__CRASH_STOP);
        say(qr[1], rec100(log, 'Q', 1) == 0 ? 'a' : 'e');
        _exit(0);
    }
    if (q != d)
        return 78;
    if (hear(qr[0]) != 'a') /* Q 000 went into D's ring with R stopped (holding the lock) */
        return 9;
    if (ring_of(log, q) != k || atomic_load(&log->seg->rings[k].owner) >> 44 != 1)
        return 10;
    kill(r, SIGCONT);
    if (hear(rr[0]) != 'a')
        return 11;
    if (ring_of(log, q) != k || ring_of(log, r) != FL__RINGS) /* R neither freed nor took Q's ring */
        return 12;
    say(qc[1], 'g');
    if (!cp_wait_stopped(q, 10)) /* Q copied Q 001 into its ring */
        return 13;
    say(rc_[1], 'g');
    if (hear(rr[0]) != 'a')
        return 14;
    kill(q, SIGCONT);
    if (hear(qr[0]) != 'a')
        return 15;
    if (th_wait_for(q, 10) != 0 || th_wait_for(r, 10) != 0)
        return 16;
    unfill_rings(th);
    return forklog_close(log) == 0 ? 0 : 17;
}

/* The records of a scene whose filler threads held all rings but one ("F 000" ..), then `more`. */
static void check_filled_and(const char *path, const char *const *more, size_t nmore)
{
    const char *want[FL__RINGS + 8];
    char names[FL__RINGS - 1][8];
    size_t n = 0;
    cr_assert_leq(nmore, 9);
    for (unsigned k = 0; k < FL__RINGS - 1; k++) {
        snprintf(names[k], sizeof names[k], "F %03u", k);
        want[n++] = names[k];
    }
    for (size_t i = 0; i < nmore; i++)
        want[n++] = more[i];
    check_records(path, want, n);
}

static void check_pid_reuse_scene(const char *path)
{
    const char *const more[] = {"D 000", "Q 000", "Q 001", "R 000", "R 001"};
    check_filled_and(path, more, sizeof more / sizeof more[0]);
}

Test(ring, a_pid_reused_while_its_ring_is_taken_back_leaves_the_ring_one_writer)
{
    /* Stopped before it looks at the ring with the lock held, the freer finds the ring's word moved (Q took it);
     * stopped after it found the owner gone with the lock held, its compare-and-swap fails for the same reason. */
    in_pid_namespace(scene_pid_reused_during_a_take_back, logpath, FL__CP_LOCK_ACQUIRED);
    check_pid_reuse_scene(logpath);
    char *other = th_path(dir, "other.log");
    in_pid_namespace(scene_pid_reused_during_a_take_back, other, FL__CP_RING_OWNER_GONE);
    check_pid_reuse_scene(other);
    free(other);
}

/* A process whose thread has a ring writes through a second handle of the same log: the thread takes that ring by its
 * pid and tid, for a key it did not have (RING_ADOPTED), and is killed right there, its first handle's record A 000
 * waiting in the ring. The ring's owner is gone with its tag moved: the next thread that finds no ring free must
 * write A 000 (once) and take the ring back, and a thread that only writes it out (the close) must not write it
 * again. */
Test(ring, a_thread_killed_as_it_takes_its_ring_by_its_pid_and_tid_loses_no_record)
{
    struct forklog_options o = {.flags = FORKLOG_BUFFERED, .buffer_size = 4096, .flush_ms = 60000};
    forklog *log;
    cr_assert_eq(forklog_open(&log, logpath, &o), 0);
    pthread_t th[FL__RINGS - 1];
    cr_assert(fill_rings(&log, th));
    pid_t a = fork();
    cr_assert_neq(a, -1);
    if (a == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        forklog *second;
        if (rec100(log, 'A', 0) != 0 || forklog_open(&second, logpath, &o) != 0)
            _exit(3);
        fl__crash_arm(FL__CP_RING_ADOPTED, 1, FL__CRASH_KILL);
        _exit(rec100(second, 'A', 1) == 0 ? 0 : 4);
    }
    cr_assert_eq(th_wait_for(a, 10), 128 + SIGKILL, "the writer did not die as it took its ring");
    struct fl__seg *s = log->seg;
    unsigned k = ring_of(log, a);
    cr_assert_lt(k, FL__RINGS, "no ring bears the dead writer's pid and tid");
    cr_assert_eq(atomic_load(&s->rings[k].owner) & ~FL__OWNER_ID, FL__OWNER_TAG, "the ring's tag did not move");
    cr_assert_eq(atomic_load(&s->rings[k].head) - atomic_load(&s->rings[k].tail), 100, "A 000 is not in the ring");
    /* Every other ring has a live owner: this thread's record takes the dead writer's ring back. */
    double t0 = th_now_s();
    cr_assert_eq(rec100(log, 'P', 0), 0);
    cr_assert_lt(th_now_s() - t0, 2.0, "the next writer waited %.3f s", th_now_s() - t0);
    cr_assert_eq(ring_of(log, a), FL__RINGS, "the dead writer's ring was not taken back");
    unfill_rings(th);
    cr_assert_eq(forklog_close(log), 0);
    check_filled_and(logpath, (const char *const[]){"A 000", "P 000"}, 2);
}

/* A writes A 000 (taking the last free ring) and forks B, which never logs; A exits, X takes A's ring back and
 * writes X 000 into it. B forks C, which gets A's pid: C inherited the memory of A's thread, "ring k of this
 * handle, pid A", but it is not A and ring k is X's now. C must not write into it. */
static int scene_inherited_ring_cache(const char *path, int unused)
{
    (void)unused;
    struct forklog_options o = {.flags = FORKLOG_BUFFERED, .buffer_size = 4096, .flush_ms = 60000};
    forklog *log;
    if (forklog_open(&log, path, &o) != 0)
        return 3;
    pthread_t th[FL__RINGS - 1];
    if (!fill_rings(&log, th))
        return 4;
    int ab[2], bc[2], xc[2], xr[2];
    if (pipe(ab) < 0 || pipe(bc) < 0 || pipe(xc) < 0 || pipe(xr) < 0)
        return 5;
    pid_t a = fork();
    if (a == 0) {
        if (rec100(log, 'A', 0) != 0)
            _exit(1);
        pid_t b = fork();
        if (b == 0) {
            pid_t want;
            if (read(bc[0], &want, sizeof want) != sizeof want)
                _exit(1);
            pid_t c = fork();
            if (c == 0)
                _exit(getpid() != want ? 78 : rec100(log, 'C', 0) == 0 ? 0 : 1);
            _exit(th_wait_for(c, 10));
        }
        _exit(write(ab[1], &b, sizeof b) == sizeof b ? 0 : 1);
    }
    pid_t b;
    if (read(ab[0], &b, sizeof b) != sizeof b || th_wait(a) != 0)
        return 6;
    unsigned k = ring_of(log, a);
    if (k == FL__RINGS)
        return 7;
    pid_t x = fork();
    if (x == 0) {
        say(xr[1], rec100(log, 'X', 0) == 0 ? 'a' : 'e');
        hear(xc[0]);
        _exit(rec100(log, 'X', 1) == 0 ? 0 : 1);
    }
    if (hear(xr[0]) != 'a' || ring_of(log, x) != k) /* X took A's ring back */
        return 8;
    uint64_t head = atomic_load(&log->seg->rings[k].head);
    if (th_next_pid_is(a))
        return 78;
    if (write(bc[1], &a, sizeof a) != sizeof a)
        return 9;
    int rc = th_wait_for(b, 10);
    if (rc != 0)
        return rc == 78 ? 78 : 10;
    if (atomic_load(&log->seg->rings[k].head) != head || ring_of(log, x) != k)
        return 11; /* C wrote into X's ring */
    say(xc[1], 'g');
    if (th_wait_for(x, 10) != 0)
        return 12;
    unfill_rings(th);
    return forklog_close(log) == 0 ? 0 : 13;
}

Test(ring, a_child_with_a_pid_its_ancestor_had_does_not_use_the_ancestors_ring)
{
    in_pid_namespace(scene_inherited_ring_cache, logpath, 0);
    const char *const more[] = {"A 000", "X 000", "X 001", "C 000"};
    check_filled_and(logpath, more, sizeof more / sizeof more[0]);
}

/* FORKLOG_TID: each thread caches its thread id for its process. A thread that logged forks a child that does not
 * log (its only thread a copy of that thread, with that cache), and the parent ends; the child's own child gets
 * the parent's pid back. Its records must carry its own thread id (its pid: it is a main thread), not the id of
 * the thread that wrote the cache two processes up. */
struct tid_scene {
    forklog *log;
    int xc[2];
};

static void *tid_thread(void *p)
{
    struct tid_scene *sc = p;
    if (forklog_info(sc->log, "T") != 0)
        return (void *)1;
    pid_t a = fork();
    if (a == 0) {
        pid_t want;
        if (read(sc->xc[0], &want, sizeof want) != sizeof want)
            _exit(1);
        if (th_next_pid_is(want))
            _exit(78);
        pid_t c = fork();
        if (c == 0) {
            if (getpid() != want)
                _exit(78);
            char msg[64];
            snprintf(msg, sizeof msg, "C tid should be %d", (int)getpid());
            _exit(forklog_info(sc->log, "%s", msg) == 0 ? 0 : 1);
        }
        _exit(th_wait_for(c, 10));
    }
    return (void *)(intptr_t)a;
}

static int scene_inherited_tid_cache(const char *path, int unused)
{
    (void)unused;
    int xc[2], ap[2];
    if (pipe(xc) < 0 || pipe(ap) < 0)
        return 5;
    pid_t p = fork();
    if (p == 0) {
        struct tid_scene sc = {.xc = {xc[0], xc[1]}};
        if (forklog_open(&sc.log, path, &(struct forklog_options){.flags = FORKLOG_TID}) != 0)
            _exit(3);
        pthread_t th;
        void *a;
        if (pthread_create(&th, NULL, tid_thread, &sc) != 0 || pthread_join(th, &a) != 0 || (intptr_t)a <= 1)
            _exit(4);
        pid_t ap_ = (pid_t)(intptr_t)a;
        _exit(write(ap[1], &ap_, sizeof ap_) == sizeof ap_ ? 0 : 6); /* the pid of the child, which outlives us */
    }
    pid_t a;
    if (read(ap[0], &a, sizeof a) != sizeof a || th_wait(p) != 0)
        return 7;
    /* p is gone: its pid is free for the grandchild. */
    if (write(xc[1], &p, sizeof p) != sizeof p)
        return 8;
    int st = th_wait_for(a, 20);
    return st;
}

Test(ring, a_child_with_a_pid_its_ancestor_had_logs_its_own_thread_id)
{
    in_pid_namespace(scene_inherited_tid_cache, logpath, 0);
    size_t len;
    char *buf = th_slurp(logpath, &len);
    cr_assert_not_null(buf);
    char *c = strstr(buf, " C tid should be ");
    cr_assert_not_null(c, "%s", buf);
    int want = atoi(c + strlen(" C tid should be "));
    char *line = c;
    while (line > buf && line[-1] != '\n')
        line--;
    char *tid = strstr(line, " tid=");
    cr_assert(tid && tid < c, "%s", buf);
    cr_assert_eq(atoi(tid + 5), want, "the record carries another thread's id: %.*s", (int)(strchr(c, '\n') - line),
                 line);
    free(buf);
}

/* ---- the age bound on every path ------------------------------------------------------------------------------ */

/* A record of `len` bytes "<tag> <seq>" padded with dots. */
static void write_len(forklog *log, char tag, unsigned seq, size_t len)
{
    char *rec = malloc(len);
    memset(rec, '.', len);
    int n = snprintf(rec, len, "%c %03u ", tag, seq);
    rec[n] = '.';
    rec[len - 1] = '\n';
    cr_assert_eq(forklog_write(log, rec, len), 0);
    free(rec);
}

static int file_has(const char *path, const char *what)
{
    size_t len;
    char *buf = th_slurp(path, &len);
    int has = buf && strstr(buf, what) != NULL;
    free(buf);
    return has;
}

Test(ring, the_age_bound_holds_for_records_too_large_for_a_ring)
{
    /* A record over half a ring is written at once; when the rings are due, every ring goes with it. */
    struct forklog_options o = {.flags = FORKLOG_BUFFERED, .buffer_size = 4096, .flush_ms = 300};
    forklog *log;
    cr_assert_eq(forklog_open(&log, logpath, &o), 0);
    const double t0 = th_now_s();
    one_thread_writes(log, 0); /* X 000 waits in that thread's ring */
    write_len(log, 'B', 0, 3000);
    /* Unless a stall of the machine made X 000 nearly flush_ms old already (see the test below). */
    if (th_now_s() - t0 < 0.25)
        cr_assert(fl__rings_pending(log->seg), "X 000 was written before it was due");
    usleep(400 * 1000);
    write_len(log, 'B', 1, 3000);
    cr_assert(file_has(logpath, "X 000 "), "a record older than flush_ms waits while large records are written");
    cr_assert_eq(forklog_close(log), 0);
    const char *want[] = {"X 000", "B 000", "B 001"};
    check_records(logpath, want, 3);
}

Test(ring, the_age_bound_holds_for_a_thread_that_finds_no_ring_free)
{
    /* Every ring held by a live thread with a record in it; past the due time, the record of a thread that has no
     * ring is written with every ring. */
    struct forklog_options o = {.flags = FORKLOG_BUFFERED, .flush_ms = 300};
    forklog *log;
    cr_assert_eq(forklog_open(&log, logpath, &o), 0);
    pthread_t t[FL__RINGS];
    struct x_arg a[FL__RINGS];
    const double t0 = th_now_s();
    hold_every_ring(log, t, a);
    write100(log, 'N', 0);
    /* The threads write one after the other, which takes a while on a loaded machine: once the first record may be
     * flush_ms old (less two steps of the coarse clock, see fl__due_clock), the library may write every ring, and
     * rightly so. Below that, no ring may have been written. */
    if (th_now_s() - t0 < 0.25)
        cr_assert(fl__rings_pending(log->seg), "the records were written before they were due");
    usleep(400 * 1000);
    write100(log, 'N', 1);
    cr_assert(!fl__rings_pending(log->seg), "records older than flush_ms wait while ringless records are written");
    let_every_ring_go(t);
    cr_assert_eq(forklog_close(log), 0);
    const char *want[FL__RINGS + 2];
    char names[FL__RINGS][8];
    size_t n = 0;
    for (unsigned k = 0; k < FL__RINGS; k++) {
        snprintf(names[k], sizeof names[k], "H %03u", k);
        want[n++] = names[k];
    }
    want[n++] = "N 000";
    want[n++] = "N 001";
    check_records(logpath, want, n);
}

/* Forks a process that enters a new time namespace and forks a guest there, which opens the log buffered: returns
 * that handle in the guest, and the first process's pid in the test process. The first process ends as the guest
 * does (its exit status), or with 77 when unshare(CLONE_NEWTIME) is not allowed; a guest whose open fails, or whose
 * handle is not a guest's, exits with 3. */
static pid_t fork_guest(forklog **gl)
{
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid != 0)
        return pid;
    rc_child();
    if (unshare(CLONE_NEWTIME) < 0)
        _exit(77);
    pid_t g = fork();
    if (g != 0)
        _exit(th_wait_for(g, 30));
    struct forklog_options o = {.flags = FORKLOG_BUFFERED};
    if (forklog_open(gl, logpath, &o) != 0 || !((*gl)->flags & FL__GUEST))
        _exit(3);
    return 0;
}

/* A guest child (fork_guest) that says 'o' on rep once it runs (when `opened`), then writes records G 000 and G 001,
 * each when told on go and saying 'a' after it, and exits: 0, or the step that failed (4 a record, 5 the close, 6 no
 * word on go). */
static void guest_two_records(forklog *gl, const int go[2], const int rep[2], int opened)
{
    close(go[1]);
    close(rep[0]);
    if (opened)
        say(rep[1], 'o');
    for (unsigned q = 0; q < 2; q++) {
        if (!hear(go[0]))
            _exit(6);
        if (rec100(gl, 'G', q) != 0)
            _exit(4);
        say(rep[1], 'a');
    }
    _exit(forklog_close(gl) == 0 ? 0 : 5);
}

/* Opens the log at logpath with o, and forks a guest_two_records() child of it, its ends of go and rep closed here;
 * returns its pid. */
static pid_t open_with_a_guest(const struct forklog_options *o, forklog **log, int go[2], int rep[2], int opened)
{
    cr_assert_eq(forklog_open(log, logpath, o), 0);
    cr_assert_eq(pipe(go), 0);
    cr_assert_eq(pipe(rep), 0);
    forklog *gl;
    pid_t pid = fork_guest(&gl);
    if (pid == 0)
        guest_two_records(gl, go, rep, opened);
    close(go[0]);
    close(rep[1]);
    return pid;
}

Test(ring, a_guest_keeps_the_age_bound_of_the_rings)
{
    /* A guest (pid 1 of a new PID namespace) takes no ring; it writes the rings at its first record, and then
     * once flush_ms has passed on its own clock. Only the guest writes while the native's records wait. */
    struct forklog_options o = {.flags = FORKLOG_BUFFERED, .flush_ms = 300};
    forklog *log;
    cr_assert_eq(forklog_open(&log, logpath, &o), 0);
    write100(log, 'N', 0);
    int go[2], rep[2];
    cr_assert_eq(pipe(go), 0);
    cr_assert_eq(pipe(rep), 0);
    forklog *gl;
    pid_t pid = fork_guest(&gl);
    if (pid == 0) {
        close(go[1]); /* the test process's end: its death ends the guest's wait */
        close(rep[0]);
        for (unsigned q = 0; q < 2; q++) {
            if (!hear(go[0]))
                _exit(6);
            if (rec100(gl, 'G', q) != 0)
                _exit(4);
            char n[8];
            snprintf(n, sizeof n, "N %03u ", q);
            say(rep[1], file_has(logpath, n) ? 'a' : 'e');
        }
        _exit(forklog_close(gl) == 0 ? 0 : 5);
    }
    close(go[0]);
    close(rep[1]);
    usleep(400 * 1000);
    cr_assert(fl__rings_pending(log->seg), "N 000 was written before it was due");
    say(go[1], 'g');
    char c = hear(rep[0]);
    if (c == 0 && th_wait_for(pid, 10) == 77)
        cr_skip_test("unshare(CLONE_NEWTIME) is not allowed here");
    cr_assert_eq(c, 'a', "a guest's first record left an older record in its ring");
    /* The due time is flush_ms away again; N 001 waits in the ring until the guest's clock says it is due. */
    cr_assert_eq(forklog_flush(log), 0);
    write100(log, 'N', 1);
    cr_assert(fl__rings_pending(log->seg));
    usleep(400 * 1000);
    say(go[1], 'g');
    cr_assert_eq(hear(rep[0]), 'a', "a guest's record, flush_ms after its last, left an older record in its ring");
    cr_assert_eq(th_wait_for(pid, 10), 0);
    close(go[1]);
    close(rep[0]);
    cr_assert_eq(forklog_close(log), 0);
    const char *want[] = {"N 000", "N 001", "G 000", "G 001"};
    check_records(logpath, want, 4);
}

/* Opens the log at logpath with o and a guest of it (open_with_a_guest), then makes path a FIFO, opens its reader
 * (*rd) and moves the log there. Skips the test where the guest cannot be made. Returns the guest's pid. */
static pid_t a_guest_on_a_fifo(const struct forklog_options *o, forklog **log, int go[2], int rep[2], int *rd)
{
    pid_t pid = open_with_a_guest(o, log, go, rep, 1);
    char c = hear(rep[0]);
    int st = c ? 0 : th_wait_for(pid, 10);
    if (st == 77)
        cr_skip_test("unshare(CLONE_NEWTIME) is not allowed here");
    cr_assert_eq(c, 'o', "the guest's open (the guest's exit status %d)", st);
    cr_assert_eq(unlink(logpath), 0);
    cr_assert_eq(mkfifo(logpath, 0600), 0);
    *rd = open(logpath, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    cr_assert_geq(*rd, 0);
    cr_assert_eq(fcntl(*rd, F_SETFL, fcntl(*rd, F_GETFL) & ~O_NONBLOCK), 0);
    cr_assert_eq(forklog_reopen(*log), 0);
    return pid;
}

/* A next reader of the FIFO at logpath, to which the guest `pid` then writes its second record; then the log is
 * flushed and closed. Returns what that reader got. */
static struct short_reader the_guests_second_record_to_the_next_reader(forklog *log, pid_t pid, int go[2], int rep[2])
{
    int rd = open(logpath, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    cr_assert_geq(rd, 0);
    cr_assert_eq(fcntl(rd, F_SETFL, fcntl(rd, F_GETFL) & ~O_NONBLOCK), 0);
    struct short_reader r = {.fd = rd, .want = (size_t)1 << 20};
    cr_assert_not_null(r.buf = malloc(r.want));
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, read_to_the_end, &r), 0);
    say(go[1], 'g');
    cr_assert_eq(hear(rep[0]), 'a', "the guest's second record");
    cr_assert_eq(th_wait_for(pid, 10), 0);
    cr_assert_eq(forklog_flush(log), 0);
    cr_assert_eq(forklog_close(log), 0);
    pthread_join(t, NULL);
    close(rd);
    return r;
}

/* A flush of the rings to a FIFO cut a record short: its reader went away once the pipe was full (a log shipper that
 * restarts), the first part of the record in the pipe, the rest in the native's ring for the next flush to begin
 * with. A guest, which takes no ring, then writes a record at once, flush_ms not yet passed on its clock since its
 * first: that record must not follow the first part, glued to it (the line made of both is neither record, and the
 * rest then stands alone). What the next reader gets is every record once, each a whole line. The log is a regular
 * file when the guest joins it (a FIFO's segment is private), and forklog_reopen() moves it to a FIFO made at path. */
Test(ring, a_guests_record_is_not_glued_to_a_record_a_failed_flush_cut_short_in_a_fifo)
{
    signal(SIGPIPE, SIG_IGN);
    struct forklog_options o = {.flags = FORKLOG_BUFFERED, .flush_ms = 600000, .buffer_size = (size_t)1 << 20};
    forklog *log;
    int go[2], rep[2], rd;
    pid_t pid = a_guest_on_a_fifo(&o, &log, go, rep, &rd);
    say(go[1], 'g');
    char c = hear(rep[0]);
    cr_assert_eq(c, 'a', "the guest's first record (the guest's exit status %d)", c ? 0 : th_wait_for(pid, 10));
    enum { N = 1000 };
    for (unsigned i = 0; i < N; i++)
        write100(log, 'N', i);
    struct flusher f = {.log = log};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, flush_run, &f), 0);
    int full = 0, was = -1;
    for (int i = 0; i < 2000 && (full <= 100 || full != was); i++) {
        was = full;
        usleep(10000);
        cr_assert_eq(ioctl(rd, FIONREAD, &full), 0);
    }
    /* The flusher waits in write(2) for room, the pipe full, with a record cut short in it. */
    cr_assert(full > 100 && full < 100 * N && full % 100 != 0, "the pipe holds %d bytes", full);
    close(rd);
    pthread_join(t, NULL);
    cr_assert_eq(f.rc, -EPIPE, "the flush whose reader went away: %d", f.rc);
    /* The next reader gets what the pipe kept, then the rest. */
    struct short_reader r = the_guests_second_record_to_the_next_reader(log, pid, go, rep);
    char *buf = r.buf;
    size_t len = r.got;
    unsigned seen_n[N] = {0}, seen_g[2] = {0};
    for (size_t at = 0; at < len; at += 100) {
        const char *line = buf + at;
        const char *nl = memchr(line, '\n', len - at);
        cr_assert_not_null(nl, "the stream ends in the middle of a line");
        unsigned q = 0;
        cr_assert(nl - line == 99 && (line[0] == 'N' || line[0] == 'G') && sscanf(line + 2, "%u", &q) == 1 &&
                      q < (line[0] == 'N' ? N : 2u),
                  "a line that is not a whole record: [%.*s]", (int)(nl - line), line);
        for (const char *p = line + 6; p < nl; p++)
            cr_assert_eq(*p, '.', "a line that is not a whole record: [%.*s]", (int)(nl - line), line);
        (line[0] == 'N' ? seen_n : seen_g)[q]++;
    }
    for (unsigned i = 0; i < N; i++)
        cr_assert_eq(seen_n[i], 1, "N %03u is there %u times", i, seen_n[i]);
    cr_assert(seen_g[0] == 1 && seen_g[1] == 1, "the guest's records: %u and %u", seen_g[0], seen_g[1]);
    free(buf);
}

#ifndef F_GETPIPE_SZ
#define F_GETPIPE_SZ 1032 /* Linux's, named only under _GNU_SOURCE */
#endif

/* The same with the one shared buffer of a rotating log, and a flush whose part that went out ends right after the
 * first line of a record of two lines (forklog_write() takes a newline inside a record): the pipe, which the reader
 * leaves without reading, takes the buffer up to that newline. Nothing was cut short in the middle of a line, so the
 * flush named no rest (a ring's would be FL__REST_LINE_END), and the guest's next record, flush_ms not passed on its
 * clock, was written at once: between the two lines of a record whose call had returned. What the next reader gets
 * is every record whole, the lines of each together. */
Test(ring, a_guests_record_does_not_come_between_the_lines_of_a_record_a_failed_flush_of_the_shared_buffer_cut)
{
    signal(SIGPIPE, SIG_IGN);
    struct forklog_options o = {
        .flags = FORKLOG_BUFFERED, .flush_ms = 600000, .buffer_size = (size_t)1 << 20, .rotate_bytes = 1u << 30};
    forklog *log;
    int go[2], rep[2], rd;
    pid_t pid = a_guest_on_a_fifo(&o, &log, go, rep, &rd);
    /* The guest's first record writes what the buffer holds first, and the next write of the buffer is then due on
     * its clock flush_ms later. */
    write100(log, 'P', 0);
    say(go[1], 'g');
    char c = hear(rep[0]);
    cr_assert_eq(c, 'a', "the guest's first record (the guest's exit status %d)", c ? 0 : th_wait_for(pid, 10));
    char first[200];
    for (size_t got = 0; got < sizeof first;) {
        ssize_t k = read(rd, first + got, sizeof first - got);
        cr_assert_gt(k, 0, "the buffer and the guest's first record in the FIFO");
        got += (size_t)k;
    }
    cr_assert(first[0] == 'P' && first[100] == 'G', "the FIFO holds [%.*s]", 200, first);
    /* Records of 128 bytes up to the pipe's size, the last of them the first line of a record of two lines. */
    const int pipe_size = fcntl(rd, F_GETPIPE_SZ);
    cr_assert(pipe_size > 0 && pipe_size % 128 == 0, "a pipe of %d bytes", pipe_size);
    const unsigned two = (unsigned)pipe_size / 128 - 1, n = two + 11;
    char rec[256];
    for (unsigned i = 0; i < n; i++) {
        memset(rec, '.', 128);
        int k = snprintf(rec, sizeof rec, "N %04u ", i);
        rec[k] = '.';
        rec[127] = '\n';
        size_t len = 128;
        if (i == two)
            len += (size_t)snprintf(rec + 128, sizeof rec - 128, "N %04u second line\n", i);
        cr_assert_eq(forklog_write(log, rec, len), 0);
    }
    struct flusher f = {.log = log};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, flush_run, &f), 0);
    int full = 0;
    for (int i = 0; i < 2000 && full < pipe_size; i++) {
        usleep(10000);
        cr_assert_eq(ioctl(rd, FIONREAD, &full), 0);
    }
    cr_assert_eq(full, pipe_size, "the pipe holds %d bytes", full);
    close(rd); /* the reader goes away without reading */
    pthread_join(t, NULL);
    cr_assert_eq(f.rc, -EPIPE, "the flush whose reader went away: %d", f.rc);
    struct short_reader r = the_guests_second_record_to_the_next_reader(log, pid, go, rep);
    unsigned next = 0, guests = 0;
    const char *prev = NULL;
    for (size_t at = 0; at < r.got;) {
        const char *line = r.buf + at, *nl = memchr(line, '\n', r.got - at);
        cr_assert_not_null(nl, "the stream ends in the middle of a line");
        unsigned q = 0;
        if (line[0] == 'G') {
            guests++;
        } else if (strncmp(line + 6, " second line\n", 13) == 0) {
            cr_assert(sscanf(line, "N %u", &q) == 1 && q == two && prev && strncmp(prev, line, 7) == 0,
                      "the second line of record N %04u follows another line: %.20s", two, prev ? prev : "(none)");
        } else {
            cr_assert(nl - line == 127 && sscanf(line, "N %u", &q) == 1 && q == next,
                      "a line that is not record N %04u: [%.*s]", next, (int)(nl - line < 60 ? nl - line : 60), line);
            next++;
        }
        prev = line;
        at = (size_t)(nl + 1 - r.buf);
    }
    cr_assert_eq(next, n);
    cr_assert_eq(guests, 1);
    free(r.buf);
}

Test(ring, a_guest_keeps_the_age_bound_of_the_shared_buffer)
{
    /* A buffered, rotating log buffers in one shared buffer under the lock, not in rings. A guest buffers nothing
     * itself; its first record writes what the others buffered, as with rings. */
    struct forklog_options o = {.flags = FORKLOG_BUFFERED, .rotate_bytes = 1 << 20, .flush_ms = 300};
    forklog *log;
    cr_assert_eq(forklog_open(&log, logpath, &o), 0);
    cr_assert_eq(log->ring_cap, 0);
    write100(log, 'N', 0);
    cr_assert_neq(log->seg->buf_used, 0, "N 000 was written before it was due");
    forklog *gl;
    pid_t pid = fork_guest(&gl);
    if (pid == 0) {
        if (rec100(gl, 'G', 0) != 0)
            _exit(4);
        _exit(file_has(logpath, "N 000 ") ? (forklog_close(gl) == 0 ? 0 : 5) : 6);
    }
    int rc = th_wait_for(pid, 30);
    if (rc == 77)
        cr_skip_test("unshare(CLONE_NEWTIME) is not allowed here");
    cr_assert_eq(rc, 0, "a guest's record left an older record in the shared buffer (%d)", rc);
    cr_assert_eq(forklog_close(log), 0);
    const char *want[] = {"N 000", "G 000"};
    check_records(logpath, want, 2);
}

/* The log's first ring record is published, and its writer killed before it sets the due time (still 0). Then one
 * record of this process: with `wait_first`, flush_ms after that death, into this thread's ring (100 bytes); else at
 * once, too large for a ring. Either finds the dead writer's record pending, and writes it with its own. */
static void first_writer_died_before_the_due_time(int wait_first)
{
    struct forklog_options o = {.flags = FORKLOG_BUFFERED, .buffer_size = 4096, .flush_ms = 300};
    forklog *log;
    cr_assert_eq(forklog_open(&log, logpath, &o), 0);
    pid_t v = fork();
    cr_assert_neq(v, -1);
    if (v == 0) {
        rc_child();
        fl__crash_arm(FL__CP_RING_PUBLISHED, 1, FL__CRASH_KILL);
        write100(log, 'V', 0);
        _exit(1);
    }
    cr_assert_eq(th_wait_for(v, 10), 128 + SIGKILL);
    cr_assert(fl__rings_pending(log->seg) && atomic_load(&log->seg->due_ns) == 0);
    if (wait_first) {
        usleep(400 * 1000);
        write100(log, 'B', 0);
    } else {
        write_len(log, 'B', 0, 3000); /* more than half a ring: written at once */
    }
    cr_assert(file_has(logpath, "V 000 "), "a record published without a due time waits (%s)",
              wait_first ? "a record older than flush_ms, beside a ring record" : "while large ones go");
    cr_assert_eq(forklog_close(log), 0);
    const char *want[] = {"V 000", "B 000"};
    check_records(logpath, want, 2);
}

Test(ring, the_age_bound_holds_when_the_first_writer_died_before_setting_the_due_time)
{
    first_writer_died_before_the_due_time(0);
}

Test(ring, the_age_bound_holds_for_ring_records_when_the_first_writer_died_before_setting_the_due_time)
{
    first_writer_died_before_the_due_time(1);
}

/* The log's first ring record, V 000, is published and its writer V killed before it sets the due time (still 0).
 * flush_ms later, the next record comes from a process given V's pid (and so its tid): it takes V's ring by its pid
 * and tid, and appends B 000 behind V 000, older than flush_ms by then. That call must write V 000: with no due time
 * set, a ring that held a record before the writer's own counts as due, the writer's ring as much as another. */
static int scene_first_writer_died_and_its_pid_came_back(const char *path, int unused)
{
    (void)unused;
    struct forklog_options o = {.flags = FORKLOG_BUFFERED, .buffer_size = 4096, .flush_ms = 300};
    forklog *log;
    if (forklog_open(&log, path, &o) != 0)
        return 3;
    pid_t v = fork();
    if (v < 0)
        return 4;
    if (v == 0) {
        fl__crash_arm(FL__CP_RING_PUBLISHED, 1, FL__CRASH_KILL);
        _exit(rec100(log, 'V', 0) == 0 ? 0 : 1);
    }
    if (th_wait_for(v, 10) != 128 + SIGKILL)
        return 5;
    const unsigned k = ring_of(log, v);
    if (k == FL__RINGS || atomic_load(&log->seg->due_ns) != 0 || !fl__rings_pending(log->seg))
        return 6; /* V 000 waits in V's ring, and no due time is set */
    usleep(400 * 1000);
    if (th_next_pid_is(v))
        return 78;
    pid_t b = fork();
    if (b < 0)
        return 7;
    if (b == 0)
        _exit(getpid() != v ? 78 : rec100(log, 'B', 0) == 0 ? 0 : 1);
    int st = th_wait_for(b, 10);
    if (st != 0)
        return st == 78 ? 78 : 8;
    if (ring_of(log, v) != k || atomic_load(&log->seg->rings[k].owner) >> 44 != 1)
        return 9; /* B took V's ring by its pid and tid */
    if (!file_has(path, "V 000 "))
        return 10; /* older than flush_ms, and still waiting after B's call */
    return forklog_close(log) == 0 ? 0 : 11;
}

Test(ring, the_age_bound_holds_when_the_first_writer_died_before_setting_the_due_time_and_its_pid_came_back)
{
    in_pid_namespace(scene_first_writer_died_and_its_pid_came_back, logpath, 0);
    const char *want[] = {"V 000", "B 000"};
    check_records(logpath, want, 2);
}

Test(ring, a_handle_without_a_per_process_page_keeps_the_threads_order)
{
    /* Two handles of one log in one thread; the second has no per-process page (its mmap() failed at the open:
     * set here as that failure leaves it). It takes no ring, and its record is written after the one the thread's
     * ring (the first handle's) holds. */
    struct forklog_options o = {.flags = FORKLOG_BUFFERED, .flush_ms = 60000};
    forklog *h1, *h2;
    cr_assert_eq(forklog_open(&h1, logpath, &o), 0);
    cr_assert_eq(forklog_open(&h2, logpath, &o), 0);
    munmap(h2->proc, (size_t)sysconf(_SC_PAGESIZE));
    h2->proc = NULL;
    write100(h1, 'A', 0);
    write100(h2, 'B', 0);
    write_len(h2, 'C', 0, 3000);
    cr_assert_eq(forklog_close(h2), 0);
    cr_assert_eq(forklog_close(h1), 0);
    const char *want[] = {"A 000", "B 000", "C 000"};
    check_records(logpath, want, 3);
    size_t len;
    char *buf = th_slurp(logpath, &len);
    char *a = strstr(buf, "A 000 "), *b = strstr(buf, "B 000 "), *c = strstr(buf, "C 000 ");
    cr_assert(a < b && b < c, "one thread's records out of order: [%s]", buf);
    free(buf);
}

static forklog *leader_log;

/* Whether this process's main thread has ended: /proc says its state is Z, as the library reads it (fl__owner_gone).
 * Waits for it at most 10 s. */
static int main_thread_is_a_zombie(void)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/self/task/%d/stat", (int)getpid());
    for (double end = th_now_s() + 10; th_now_s() < end; usleep(1000)) {
        char buf[256] = "";
        FILE *f = fopen(path, "r");
        if (!f)
            return 0;
        int got = fgets(buf, sizeof buf, f) != NULL;
        fclose(f);
        const char *close_paren = got ? strrchr(buf, ')') : NULL;
        if (close_paren && close_paren[1] == ' ' && close_paren[2] == 'Z')
            return 1;
    }
    return 0;
}

static void *after_the_main_thread(void *arg)
{
    uint64_t leader = (uint64_t)(uintptr_t)arg;
    if (!main_thread_is_a_zombie())
        _exit(6);
    struct fl__seg *s = leader_log->seg;
    if (forklog_flush(leader_log) != 0) /* its ring empty */
        _exit(2);
    /* Fill every other ring, so that this thread's record must free the gone main thread's. */
    unsigned k = 0;
    for (; k < FL__RINGS; k++) {
        unsigned long long w = 0;
        if ((atomic_load(&s->rings[k].owner) & FL__OWNER_ID) != (leader & FL__OWNER_ID))
            atomic_compare_exchange_strong(&s->rings[k].owner, &w, (unsigned long long)getppid() << 22 | 1);
    }
    if (rec100(leader_log, 'W', 0) != 0)
        _exit(3);
    for (k = 0; k < FL__RINGS; k++)
        if ((atomic_load(&s->rings[k].owner) & FL__OWNER_ID) == (leader & FL__OWNER_ID))
            _exit(4); /* still taken */
    _exit(0);
}

/* A process's main thread ends with pthread_exit() while another goes on: it stays a zombie that tgkill() finds until
 * the whole process ends. Its empty ring is still taken back when no other is free. With `groups`, in a process with
 * many supplementary groups: its /proc/self/status has a long Groups line, and the NSpid line that says whether /proc
 * shows this PID namespace comes after it, past the first 4 KiB. */
static void main_thread_ends(int groups)
{
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        rc_child();
        gid_t list[2000];
        for (unsigned i = 0; i < 2000; i++)
            list[i] = 1000000 + i;
        if (groups && setgroups(2000, list) < 0)
            _exit(77);
        struct forklog_options o = {.flags = FORKLOG_BUFFERED, .flush_ms = 60000};
        if (forklog_open(&leader_log, logpath, &o) != 0 || rec100(leader_log, 'M', 0) != 0)
            _exit(1);
        uint64_t leader = atomic_load(&leader_log->seg->rings[0].owner);
        pthread_t t;
        if (pthread_create(&t, NULL, after_the_main_thread, (void *)(uintptr_t)leader) != 0)
            _exit(5);
        pthread_exit(NULL);
    }
    int st = th_wait_for(pid, 20);
    if (st == 77)
        cr_skip_test("setgroups() is not allowed here");
    cr_assert_neq(st, 6, "the main thread did not end (its state never Z) within 10 s");
    cr_assert_eq(st, 0, "the ring of the main thread that ended was not taken back (step %d)", st);
}

Test(ring, the_ring_of_a_main_thread_that_ended_is_taken_back)
{
    main_thread_ends(0);
}

Test(ring, the_ring_of_a_main_thread_that_ended_is_taken_back_by_a_process_with_many_groups)
{
    main_thread_ends(1);
}

Test(ring, a_flusher_stopped_after_moving_the_tails_has_not_ended_its_plan)
{
    /* RING_RELEASED: the tails moved past the written data, phase still PLANNED (a death there is repaired by
     * moving them again, to the same place). */
    struct forklog_options o = {.flags = FORKLOG_BUFFERED, .flush_ms = 60000};
    forklog *log;
    cr_assert_eq(forklog_open(&log, logpath, &o), 0);
    write100(log, 'A', 0);
    pid_t f = fork();
    cr_assert_neq(f, -1);
    if (f == 0) {
        rc_child();
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        fl__crash_arm(FL__CP_RING_RELEASED, 1, FL__CRASH_STOP);
        _exit(forklog_flush(log) == 0 ? 0 : 1);
    }
    cr_assert(cp_wait_stopped(f, 10));
    struct fl__seg *s = log->seg;
    cr_assert_eq(s->ring_phase, FL__RINGS_PLANNED);
    cr_assert(!fl__rings_pending(s), "the tails have not moved");
    kill(f, SIGKILL);
    cr_assert_eq(th_wait_for(f, 10), 128 + SIGKILL);
    write100(log, 'B', 0); /* the next holder repairs: nothing written twice */
    cr_assert_eq(forklog_close(log), 0);
    const char *want[] = {"A 000", "B 000"};
    check_records(logpath, want, 2);
}

/* A record appended to a ring after a forklog_reopen() returned goes to the file at path, as in direct mode, even when
 * the process that writes it out took the lock, and synced its file, before that reopen: the flusher (F) stops
 * after its sync (FILE_KNOWN, with the lock), the log is renamed and reopened, and this thread appends C; F's plan
 * takes C, which must not follow the records before it into the renamed file. */
Test(ring, a_record_appended_after_a_reopen_is_not_flushed_into_the_renamed_file)
{
    struct forklog_options o = {.flags = FORKLOG_BUFFERED, .flush_ms = 60000};
    forklog *log;
    cr_assert_eq(forklog_open(&log, logpath, &o), 0);
    write100(log, 'A', 0);
    /* A pending reopen, so that F's sync starts a generation and reads its file (FILE_KNOWN). */
    cr_assert_eq(forklog_reopen(log), 0);
    pid_t f = fork();
    cr_assert_neq(f, -1);
    if (f == 0) {
        rc_child();
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        fl__crash_arm(FL__CP_FILE_KNOWN, 1, FL__CRASH_STOP);
        _exit(forklog_flush(log) == 0 ? 0 : 1);
    }
    cr_assert(cp_wait_stopped(f, 10), "the flusher did not stop after its sync");
    char *old = th_path(dir, "ring.log.1");
    cr_assert_eq(rename(logpath, old), 0);
    cr_assert_eq(forklog_reopen(log), 0);
    write100(log, 'C', 0); /* into this thread's ring, with no lock: F holds it */
    kill(f, SIGCONT);
    cr_assert_eq(th_wait_for(f, 10), 0);
    cr_assert_eq(forklog_close(log), 0);
    /* A was appended before the reopen: either file may hold it, once. */
    size_t olen, nlen;
    char *ob = th_slurp(old, &olen), *nb = th_slurp(logpath, &nlen);
    cr_assert(ob && nb);
    cr_assert_null(strstr(ob, "C 000"), "the record appended after the reopen is in the renamed file: [%s]", ob);
    cr_assert_not_null(strstr(nb, "C 000"), "the record appended after the reopen is not at path: [%s]", nb);
    cr_assert_eq((strstr(ob, "A 000") != NULL) + (strstr(nb, "A 000") != NULL), 1);
    cr_assert_eq(th_count_lines(ob, olen) + th_count_lines(nb, nlen), 2);
    free(ob);
    free(nb);
    free(old);
}

/* This new PID namespace sees the outer namespace's /proc (in_pid_namespace mounts no other): the number of W, a
 * live single-threaded writer here, is there a zombie of the outer namespace (z). A writer that finds no ring free
 * asks after every owner, and W must not count as gone (only a /proc of this namespace may say a thread is a
 * zombie). */
static int scene_a_live_writer_that_proc_shows_as_a_zombie(const char *path, int z)
{
    static forklog *log;
    struct forklog_options o = {.flags = FORKLOG_BUFFERED, .flush_ms = 60000};
    int up[2], end[2];
    if (forklog_open(&log, path, &o) != 0 || pipe(up) < 0 || pipe(end) < 0)
        return 2;
    if (th_next_pid_is(z))
        return 78;
    pid_t w = fork();
    if (w == 0) {
        close(end[1]);
        if (rec100(log, 'W', 0) != 0 || !say(up[1], 'r'))
            _exit(1);
        (void)hear(end[0]); /* alive until the scene ends */
        _exit(forklog_close(log) == 0 ? 0 : 2);
    }
    if (w != z)
        return 78;
    if (hear(up[0]) != 'r')
        return 3;
    unsigned k = ring_of(log, w);
    pthread_t th[FL__RINGS];
    if (k == FL__RINGS || !fill_rings(&log, th))
        return 4;
    if (rec100(log, 'X', 0) != 0) /* no ring free: asks after every owner */
        return 5;
    int kept = ring_of(log, w) == k;
    close(end[1]);
    if (th_wait_for(w, 10) != 0)
        return 6;
    unfill_rings(th);
    if (forklog_close(log) != 0)
        return 7;
    return kept ? 0 : 8;
}

Test(ring, a_live_writer_that_another_namespaces_proc_shows_as_a_zombie_keeps_its_ring)
{
    pid_t z = fork(); /* a zombie of this namespace while the scene runs */
    cr_assert_neq(z, -1);
    if (z == 0)
        _exit(0);
    usleep(50 * 1000);
    in_pid_namespace(scene_a_live_writer_that_proc_shows_as_a_zombie, logpath, (int)z);
    cr_assert_eq(waitpid(z, NULL, 0), z);
    const char *want[FL__RINGS + 1];
    char names[FL__RINGS - 1][8];
    size_t n = 0;
    want[n++] = "W 000";
    for (unsigned k = 0; k < FL__RINGS - 1; k++) {
        snprintf(names[k], sizeof names[k], "F %03u", k);
        want[n++] = names[k];
    }
    want[n++] = "X 000";
    check_records(logpath, want, n);
}

Test(ring, a_full_file_system_gives_a_new_writer_no_ring_and_kills_nobody)
{
    /* The rings are sparse in the segment file, and a thread that took one on a full file system would be killed
     * by SIGBUS at its first store into a page without a block. It gets no ring instead: its records are written
     * at once, each returning 0 while it fits in the log's last page and -ENOSPC after, and every record whose
     * call returned 0 is in the file, once. A small tmpfs in a mount namespace of the test's own (root only). */
    char *small = th_small_fs(dir, "size=256k");
    if (!small)
        cr_skip_test("no mount namespace of its own here (needs root)");
    char *path = th_path(small, "full.log");
    struct forklog_options o = {.flags = FORKLOG_BUFFERED, .buffer_size = 64 * 1024};
    forklog *log;
    cr_assert_eq(forklog_open(&log, path, &o), 0);
    write100(log, 'F', 0);
    cr_assert_eq(forklog_flush(log), 0); /* the log's first page: room for the next 39 records of 100 bytes */
    char *filler = th_fill_fs(small);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        rc_child();
        unsigned ok = 0;
        while (ok < 100 && rec100(log, 'W', ok) == 0)
            ok++;
        for (unsigned q = ok; q < ok + 5; q++)
            if (rec100(log, 'W', q) != -ENOSPC)
                _exit(255);
        _exit((int)ok);
    }
    int st = th_wait_for(pid, 20);
    cr_assert(st >= 0 && st < 100, "the new writer: status %d (%d: killed by signal %d)", st, st, st - 128);
    cr_assert_gt(st, 0, "no record fitted in the log's last page");
    cr_assert_eq(unlink(filler), 0);
    write100(log, 'A', 0);
    cr_assert_eq(forklog_close(log), 0);
    char names[102][16];
    const char *want[102];
    size_t n = 0;
    snprintf(names[n], sizeof names[n], "F 000");
    want[n] = names[n], n++;
    for (int q = 0; q < st; q++, n++) {
        snprintf(names[n], sizeof names[n], "W %03d", q);
        want[n] = names[n];
    }
    snprintf(names[n], sizeof names[n], "A 000");
    want[n] = names[n], n++;
    check_records(path, want, n);
    cr_assert_eq(umount(small), 0);
    free(filler);
    free(path);
    free(small);
}

/* One thread, two handles of one buffered log. Its records through the first wait in its ring; through the second,
 * the thread finds that ring by its pid and tid and takes it, but cannot reserve its blocks (ENOSPC, as XFS and btrfs
 * answer on a full file system even for blocks the file has). Its records through the second handle are then
 * written at once, each after what waits in the ring: the thread's records stay in the order of its calls. */
Test(ring, a_thread_whose_ring_cannot_be_backed_again_keeps_its_order)
{
    struct forklog_options o = {.flags = FORKLOG_BUFFERED, .flush_ms = 60000};
    forklog *a, *b;
    cr_assert_eq(forklog_open(&a, logpath, &o), 0);
    cr_assert_eq(forklog_open(&b, logpath, &o), 0);
    write100(a, 'A', 0);
    write100(a, 'A', 1);
    refuse_fallocate = 1;
    write100(b, 'B', 0);
    write100(b, 'B', 1);
    refuse_fallocate = 0;
    cr_assert_gt(fallocate_refused, 0, "the second handle reserved no blocks: the case is not reached");
    write100(a, 'A', 2);
    cr_assert_eq(forklog_flush(a), 0);
    cr_assert_eq(forklog_close(b), 0);
    cr_assert_eq(forklog_close(a), 0);
    size_t len;
    char *buf = th_slurp(logpath, &len);
    cr_assert_not_null(buf);
    static const char *const order[] = {"A 000", "A 001", "B 000", "B 001", "A 002"};
    char *line = buf;
    for (size_t i = 0; i < sizeof order / sizeof *order; i++) {
        cr_assert(line + 100 <= buf + len, "the file ends before %s", order[i]);
        cr_assert(memcmp(line, order[i], 5) == 0, "record %zu is [%.5s], not %s", i, line, order[i]);
        cr_assert_eq(line[99], '\n');
        line += 100;
    }
    cr_assert_eq(line, buf + len, "more in the file than the thread wrote");
    free(buf);
}

/* A 16 MiB ext file system whose files have no extents (an ext2 or ext3 file system, as the ext4 driver mounts them):
 * fallocate(2) is EOPNOTSUPP there. Mounted at dir/small from a loop image, in a mount namespace of the test's own.
 * Returns its path (malloc'd), or NULL where that cannot be had (not root, no mkfs.ext4, no loop device). */
static char *ext_no_extents_fs(const char *in)
{
    if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
        return NULL;
    char *img = th_path(in, "ext.img"), *small = th_path(in, "small");
    char cmd[1024];
    cr_assert_eq(mkdir(small, 0755), 0);
    snprintf(cmd, sizeof cmd,
             "truncate -s 16M '%s' && mkfs.ext4 -q -F -O ^extent,^has_journal,^64bit '%s' >/dev/null 2>&1 && "
             "mount -o loop '%s' '%s' 2>/dev/null",
             img, img, img, small);
    free(img);
    if (system(cmd) != 0) {
        free(small);
        return NULL;
    }
    return small;
}

static forklog *request_log;

static void *one_request(void *arg)
{
    return (void *)(intptr_t)rec100(request_log, 'W', (unsigned)(uintptr_t)arg);
}

Test(ring, a_file_system_without_fallocate_keeps_the_rings_sparse)
{
    /* A program that starts a thread per request, on a log whose file system cannot reserve blocks. The rings stay
     * sparse there, as before any reservation: 300 threads one after the other each take a ring (a fresh one until
     * all 64 were taken) and write one record into its first page, a few hundred KiB in all. glibc's
     * posix_fallocate() would instead write a byte into every block of every ring taken, filling the 16 MiB disk
     * with rings (64 x 256 KiB), after which a store into a ring it reported reserved was killed by SIGBUS. */
    char *small = ext_no_extents_fs(dir);
    if (!small)
        cr_skip_test("no ext file system on a loop device here (needs root, mkfs.ext4 and a loop device)");
    char *path = th_path(small, "requests.log");
    enum { N = 300 };
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        rc_child();
        struct forklog_options o = {.flags = FORKLOG_BUFFERED, .buffer_size = 256 * 1024};
        if (forklog_open(&request_log, path, &o) != 0)
            _exit(2);
        for (unsigned i = 0; i < N; i++) {
            pthread_t t;
            void *rc;
            if (pthread_create(&t, NULL, one_request, (void *)(uintptr_t)i) != 0 || pthread_join(t, &rc) != 0)
                _exit(3);
            if (rc)
                _exit(4);
        }
        _exit(forklog_close(request_log) == 0 ? 0 : 5);
    }
    int st = th_wait_for(pid, 60);
    cr_assert_eq(st, 0, "the writer: status %d (%d: killed by signal %d)", st, st, st - 128);
    static char names[N][6];
    const char *want[N];
    for (unsigned i = 0; i < N; i++) {
        snprintf(names[i], sizeof names[i], "W %03u", i);
        want[i] = names[i];
    }
    check_records(path, want, N);
    cr_assert_eq(umount(small), 0);
    free(path);
    free(small);
}

Test(ring, a_guest_record_in_a_rotating_buffered_log_keeps_the_files_within_rotate_bytes)
{
    /* A guest writes its records at once, beside the shared buffer the natives fill. Its second record fits the
     * file but not the file and the buffer: the buffer must go first, or the next native record sends the buffer
     * into the file after it, past rotate_bytes, before it rotates. */
    struct forklog_options o = {
        .flags = FORKLOG_BUFFERED, .buffer_size = 4096, .rotate_bytes = 1000, .rotate_keep = 5, .flush_ms = 60000};
    forklog *log;
    int go[2], rep[2];
    pid_t pid = open_with_a_guest(&o, &log, go, rep, 0);
    write100(log, 'N', 0);
    say(go[1], 'g');
    char c = hear(rep[0]);
    if (c == 0 && th_wait_for(pid, 10) == 77)
        cr_skip_test("unshare(CLONE_NEWTIME) is not allowed here");
    for (unsigned q = 1; q < 9; q++)
        write100(log, 'N', q);
    say(go[1], 'g');
    cr_assert_eq(hear(rep[0]), 'a');
    cr_assert_eq(th_wait_for(pid, 10), 0);
    write100(log, 'N', 9);
    cr_assert_eq(forklog_close(log), 0);
    char *p1 = th_path(dir, "ring.log.1");
    cr_assert_leq(file_size(p1), 1000, "%s holds %zu bytes, over rotate_bytes 1000", p1, file_size(p1));
    cr_assert_eq(file_size(p1) + file_size(logpath), 1200);
    for (unsigned q = 0; q < 12; q++) {
        char want[16];
        snprintf(want, sizeof want, "%c %03u ", q < 10 ? 'N' : 'G', q < 10 ? q : q - 10);
        cr_assert(file_has(p1, want) != file_has(logpath, want), "%s is not in exactly one file", want);
    }
    free(p1);
}

struct x_at {
    forklog *log;
    unsigned seq;
    double returned;
};

static void *write_x_at(void *p)
{
    struct x_at *a = p;
    write100(a->log, 'X', a->seq);
    a->returned = th_now_s();
    return NULL;
}

/* A thread writes X NNN and ends; this thread then writes on. Every call that starts flush_ms after X NNN's call
 * returned must find it due, and leave it in the file: the age bound, whatever the step of the clocks. */
static void age_bound_at_every_call(unsigned flush_ms, unsigned rounds)
{
    struct forklog_options o = {.flags = FORKLOG_BUFFERED, .flush_ms = flush_ms};
    forklog *log;
    cr_assert_eq(forklog_open(&log, logpath, &o), 0);
    unsigned m = 0;
    write100(log, 'M', m++);
    for (unsigned x = 0; x < rounds; x++) {
        struct x_at a = {log, x, 0};
        pthread_t t;
        cr_assert_eq(pthread_create(&t, NULL, write_x_at, &a), 0);
        cr_assert_eq(pthread_join(t, NULL), 0);
        char want[16];
        snprintf(want, sizeof want, "X %03u ", x);
        for (;;) {
            double start = th_now_s();
            write100(log, 'M', m++);
            if (start - a.returned >= flush_ms / 1e3) {
                cr_assert(file_has(logpath, want), "%s waits %.1f ms after its call, flush_ms %u", want,
                          (th_now_s() - a.returned) * 1e3, flush_ms);
                break;
            }
            usleep(100);
        }
        usleep(1000 * (x % 7)); /* another phase of the clock's ticks */
    }
    cr_assert_eq(forklog_close(log), 0);
}

Test(ring, the_age_bound_holds_at_every_call_with_a_flush_ms_below_the_clock_tick)
{
    age_bound_at_every_call(2, 20);
}

Test(ring, the_age_bound_holds_at_every_call_with_a_longer_flush_ms)
{
    age_bound_at_every_call(60, 8);
}

/* As pid 1 of a new PID namespace: runs a writer of record `rec` as pid 2 (pid 1 ignores the SIGSTOP it would raise
 * itself), which first arms crash point `stop_at` to stop it (FL__CP_COUNT: none). Returns the writer's exit status
 * (0: its call returned 0), 3 when its open failed with -EXDEV, 2 when it failed otherwise. */
static int pid_one_runs_a_writer(const char *rec, int stop_at)
{
    pid_t w = fork();
    if (w < 0)
        return 2;
    if (w == 0) {
        rc_child();
        forklog *log;
        struct forklog_options o = {.flags = FORKLOG_BUFFERED};
        int rc = forklog_open(&log, logpath, &o);
        if (rc < 0)
            _exit(rc == -EXDEV ? 3 : 2);
        if (stop_at != FL__CP_COUNT)
            fl__crash_arm((enum fl__crash_point)stop_at, 1, FL__CRASH_STOP);
        _exit(forklog_write(log, rec, strlen(rec)) == 0 ? 0 : 1);
    }
    int st;
    while (waitpid(w, &st, WUNTRACED) == w && WIFSTOPPED(st)) {
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Runs pid_one_runs_a_writer(rec, stop_at) in a new PID namespace (th_fork_pid_namespace): returns the first process's
 * pid; killing it kills the namespace. */
static pid_t writer_in_a_new_pid_namespace(const char *rec, enum fl__crash_point stop_at)
{
    return th_fork_pid_namespace(pid_one_runs_a_writer, rec, (int)stop_at);
}

/* The pid of the process whose NSpid line ends with `2` and whose parent's parent is `m` (the writer of
 * writer_in_a_new_pid_namespace), 0 if none yet. */
static pid_t pid_two_under(pid_t m)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "for i in $(pgrep -P %d); do for w in $(pgrep -P $i); do echo $w; done; done", (int)m);
    FILE *f = popen(cmd, "r");
    cr_assert_not_null(f);
    int w = 0;
    if (fscanf(f, "%d", &w) != 1)
        w = 0;
    pclose(f);
    return w;
}

/* The robust mutex names its holder by thread id, as the holder's own PID namespace numbers it, and the kernel
 * that cleans up after a thread killed in the middle of taking it compares that id with the dying thread's, as the
 * dying thread's namespace numbers it. Two processes that are both pid 2 of two namespaces (two containers sharing
 * the log's directory): one holds the lock (stopped before its write), the other is killed while it waits for it.
 * Nobody else may take the lock until the holder has unlocked it, and the log must stay whole. */
Test(ring, a_process_of_another_pid_namespace_killed_waiting_for_the_lock_does_not_free_it_under_its_holder,
     .timeout = 60)
{
    forklog *log;
    struct forklog_options o = {.flags = FORKLOG_BUFFERED};
    cr_assert_eq(forklog_open(&log, logpath, &o), 0);
    cr_assert_eq(forklog_write(log, "before", 6), 0);
    /* The holder: pid 2 of a namespace, stopped with the lock held, its record's target set. */
    pid_t hm = writer_in_a_new_pid_namespace("holder", cp_find("WRITE_BEGIN"));
    pid_t h = 0;
    double until = th_now_s() + 10;
    int st = -1;
    while (th_now_s() < until) {
        pid_t r = waitpid(hm, &st, WNOHANG);
        if (r == hm)
            break;
        h = pid_two_under(hm);
        char path[64], state[256] = "";
        snprintf(path, sizeof path, "/proc/%d/stat", (int)h);
        FILE *f = h ? fopen(path, "r") : NULL;
        if (f) {
            if (!fgets(state, sizeof state, f))
                state[0] = 0;
            fclose(f);
        }
        const char *close_paren = strrchr(state, ')');
        if (close_paren && close_paren[2] == 'T')
            break;
        h = 0;
        usleep(2000);
    }
    if (st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 77)
        cr_skip_test("unshare(CLONE_NEWPID) is not allowed here");
    if (st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 3) {
        /* Refused at open: no process of another PID namespace ever takes the lock. */
        cr_assert_eq(forklog_write(log, "after", 5), 0);
        cr_assert_eq(forklog_close(log), 0);
        size_t len;
        char *buf = th_slurp(logpath, &len);
        cr_assert_str_eq(buf, "before\nafter\n");
        free(buf);
        return;
    }
    cr_assert_neq(h, 0, "the holder of another PID namespace did not stop with the lock (status %d)", st);
    /* The waiter: pid 2 of another namespace, killed (with its namespace) while it sleeps on the lock. */
    pid_t wm = writer_in_a_new_pid_namespace("waiter", FL__CP_COUNT);
    usleep(300000);
    kill(wm, SIGKILL); /* its init: the namespace goes with it */
    pid_t wi = 0;
    for (int i = 0; i < 100 && !wi; i++) {
        wi = pid_two_under(wm);
        usleep(1000);
    }
    (void)wi;
    waitpid(wm, NULL, 0);
    /* A writer of this namespace: it must wait for the holder. */
    pid_t n = fork();
    cr_assert_neq(n, -1);
    if (n == 0) {
        rc_child();
        _exit(forklog_write(log, "native", 6) == 0 ? 0 : 1);
    }
    usleep(500000);
    int got_in = waitpid(n, &st, WNOHANG) == n;
    kill(h, SIGCONT);
    if (!got_in)
        cr_assert_eq(th_wait_for(n, 10), 0);
    cr_assert_eq(th_wait_for(hm, 10), 0, "the holder's call failed");
    cr_assert_not(got_in, "a writer took the lock while a process of another PID namespace held it");
    cr_assert_eq(forklog_write(log, "after", 5), 0);
    cp_assert_size_agrees(log, logpath);
    cr_assert_eq(forklog_close(log), 0);
}
