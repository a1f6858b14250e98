/* SPDX-License-Identifier: MIT */
/*
 * The writer of tests/shipper_rsyslog.sh: a parent opens a JSON Lines log and forks `workers` processes that
 * each write records through the inherited handle, `{"ts":..,"level":"info","pid":..,"msg":"ship","w":W,
 * "seq":S,"pad":"..."}`, one every `pause_us` microseconds, payloads of 50 to 1500 bytes (below rsyslog's
 * 8 KiB maxMessageSize), and then one last record `{..,"msg":"done","w":W,"n":N}` that says how many it wrote.
 *
 * Usage: shipper_writer rotate LOG WORKERS RECORDS PAUSE_US ROTATE_BYTES DELIVERED MAX_LAG
 *        shipper_writer reopen LOG WORKERS PAUSE_US PIDFILE
 *   rotate: RECORDS records per worker, size-based rotation by forklog (rotate_bytes, rotate_keep 1000). The
 *           workers keep pace with the shipper: DELIVERED is the file that receives the shipped records, one a
 *           line, and before each record a worker waits, polling that file every 2 ms, while the records all the
 *           workers wrote outnumber the lines in it by MAX_LAG or more. A worker that waited 30 s without a new
 *           line there says so and stops the waiting of all of them, so that the test's check names the loss;
 *   reopen: no rotation of its own, SIGHUP calls forklog_reopen() (logrotate), and the pid is written to PIDFILE
 *           once the workers run; the workers write until the parent gets SIGTERM, so that every rotation the
 *           test does happens while all of them write.
 * Exit status: 0 when every record was written, 1 otherwise.
 */
#include <forklog.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static forklog *lg;

/* Shared by the parent and the workers. */
struct shared {
    atomic_int stop;     /* reopen: set by the parent's SIGTERM handler */
    atomic_long written; /* rotate: the records all the workers wrote */
    atomic_int unpaced;  /* rotate: a worker gave up waiting for the shipper */
};
static struct shared *sh;

/* A worker's count of the lines in the file of delivered records, read on from where it stopped. */
struct delivered {
    const char *path;
    int fd;
    off_t offset;
    long lines;
};

static long delivered_lines(struct delivered *d)
{
    if (d->fd < 0 && (d->fd = open(d->path, O_RDONLY | O_CLOEXEC)) < 0)
        return d->lines; /* not there yet: the shipper delivered nothing */
    char buf[65536];
    ssize_t n;
    while ((n = pread(d->fd, buf, sizeof buf, d->offset)) > 0) {
        d->offset += n;
        for (const char *p = buf; (p = memchr(p, '\n', (size_t)(buf + n - p))) != NULL; p++)
            d->lines++;
    }
    return d->lines;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Waits while the records written outnumber those delivered by max_lag or more; gives up after 30 s in which
 * nothing more was delivered, and then no worker waits any more. */
static void keep_pace(struct delivered *d, long max_lag, int w)
{
    long seen = -1;
    double since = 0;
    while (!atomic_load(&sh->unpaced) && atomic_load(&sh->written) - delivered_lines(d) >= max_lag) {
        if (d->lines != seen) {
            seen = d->lines;
            since = now();
        } else if (now() - since >= 30) {
            if (!atomic_exchange(&sh->unpaced, 1))
                fprintf(stderr,
                        "shipper_writer: worker %d: nothing more delivered for 30 s (%ld of %ld records); writing on\n",
                        w, d->lines, (long)atomic_load(&sh->written));
            return;
        }
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
}

static void on_hup(int sig)
{
    (void)sig;
    forklog_reopen(lg); /* async-signal-safe */
}

static void on_term(int sig)
{
    (void)sig;
    atomic_store(&sh->stop, 1);
}

static void on_signal(int sig, void (*handler)(int))
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(sig, &sa, NULL);
}

int main(int argc, char **argv)
{
    int rotate = argc == 9 && strcmp(argv[1], "rotate") == 0;
    if (!rotate && !(argc == 6 && strcmp(argv[1], "reopen") == 0)) {
        fprintf(stderr,
                "usage: %s rotate LOG WORKERS RECORDS PAUSE_US ROTATE_BYTES DELIVERED MAX_LAG\n"
                "       %s reopen LOG WORKERS PAUSE_US PIDFILE\n",
                argv[0], argv[0]);
        return 2;
    }
    int workers = atoi(argv[3]);
    long records = rotate ? atol(argv[4]) : -1; /* -1: until SIGTERM */
    long pause_us = atol(argv[rotate ? 5 : 4]);
    long max_lag = rotate ? atol(argv[8]) : 0; /* 0: no pacing */
    char why[256] = "";
    struct forklog_options o = {.format = FORKLOG_FORMAT_JSON, .error = why, .error_size = sizeof why};
    if (rotate) {
        o.rotate_bytes = strtoull(argv[6], NULL, 10);
        o.rotate_keep = 1000;
    }
    sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED)
        return 1;
    atomic_init(&sh->stop, 0);
    atomic_init(&sh->written, 0);
    atomic_init(&sh->unpaced, 0);
    int rc = forklog_open(&lg, argv[2], &o);
    if (rc < 0) {
        fprintf(stderr, "shipper_writer: %s: %s %s\n", argv[2], strerror(-rc), why);
        return 1;
    }
    if (!rotate) {
        on_signal(SIGHUP, on_hup);
        on_signal(SIGTERM, on_term);
    }
    static char pad[1600];
    memset(pad, 'x', sizeof pad - 1);
    for (int w = 0; w < workers; w++) {
        pid_t pid = fork();
        if (pid < 0)
            return 1;
        if (pid == 0) {
            /* SIGHUP and SIGTERM go to the parent, whose pid is in the pid file; a worker only writes. */
            signal(SIGHUP, SIG_IGN);
            signal(SIGTERM, SIG_DFL);
            unsigned seed = (unsigned)w * 7919u + 17;
            struct delivered d = {rotate ? argv[7] : NULL, -1, 0, 0};
            long s;
            for (s = 0; records < 0 ? !atomic_load(&sh->stop) : s < records; s++) {
                if (max_lag > 0)
                    keep_pace(&d, max_lag, w);
                size_t n = 50 + (size_t)rand_r(&seed) % 1450;
                pad[n] = '\0';
                struct forklog_field f[] = {FORKLOG_INT("w", w), FORKLOG_INT("seq", s), FORKLOG_STR("pad", pad)};
                rc = forklog_log_fields(lg, FORKLOG_INFO, "ship", f, 3);
                pad[n] = 'x';
                if (rc != 0) {
                    fprintf(stderr, "shipper_writer: worker %d record %ld: %s\n", w, s, strerror(rc < 0 ? -rc : 0));
                    _exit(1);
                }
                atomic_fetch_add(&sh->written, 1);
                if (pause_us > 0) {
                    struct timespec ts = {pause_us / 1000000, (pause_us % 1000000) * 1000};
                    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                        ;
                }
            }
            if (max_lag > 0)
                keep_pace(&d, max_lag, w);
            struct forklog_field done[] = {FORKLOG_INT("w", w), FORKLOG_INT("n", s)};
            if (forklog_log_fields(lg, FORKLOG_INFO, "done", done, 2) != 0)
                _exit(1);
            atomic_fetch_add(&sh->written, 1);
            _exit(forklog_close(lg) == 0 ? 0 : 1);
        }
    }
    if (!rotate) {
        FILE *f = fopen(argv[5], "w");
        if (!f || fprintf(f, "%d\n", (int)getpid()) < 0 || fclose(f) != 0)
            return 1;
    }
    int failed = 0, status;
    for (;;) {
        pid_t p = wait(&status);
        if (p < 0 && errno == EINTR)
            continue;
        if (p < 0)
            break;
        failed |= !WIFEXITED(status) || WEXITSTATUS(status) != 0;
    }
    failed |= forklog_close(lg) != 0;
    return failed;
}
