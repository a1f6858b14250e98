/* SPDX-License-Identifier: MIT */
/*
 * A pool of 8 worker processes sends one HTTP request per data item to an API and appends the cost of each
 * request to one log, request.log: for real, and offline.
 *
 * The "API" is a small HTTP/1.0 server in a child process on 127.0.0.1 (an ephemeral port): no outside network.
 * forklog_pool_map() forks the workers; each task does one real GET /?data=data<N> over TCP, reads the whole
 * response, checks for 200, and logs `request data<N> cost <seconds>` itself; the pool adds one timing record per
 * item (label data<N>) and a summary. The demo then prints the summary, reads the log back (every record whole,
 * exactly one timing record and one request record per item from this run's processes, whatever other processes
 * write to the same log meanwhile), shows a few of its records and explains the count.
 * The log goes into a new temporary folder (its path is printed), so that running the demo leaves nothing behind
 * in the current folder.
 *
 * Usage: forklog-demo [-w workers] [-n items] [-o logpath]   (defaults: 8, 200,
 * $TMPDIR/forklog-demo-XXXXXX/request.log)
 */
#ifndef _DEFAULT_SOURCE
#define _DEFAULT_SOURCE
#endif
#include <forklog.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct demo {
    forklog *log;
    struct sockaddr_in server;
    char **labels; /* "data1" .. "data<N>" */
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- the API: a tiny HTTP/1.0 server -------------------------------------------------------------------- */

static void serve_one(int c)
{
    char req[2048];
    size_t got = 0;
    while (got < sizeof req - 1) {
        ssize_t n = read(c, req + got, sizeof req - 1 - got);
        if (n <= 0)
            break;
        got += (size_t)n;
        req[got] = '\0';
        if (strstr(req, "\r\n\r\n"))
            break;
    }
    req[got] = '\0';
    char body[256];
    const char *status = "200 OK";
    const char *q = strncmp(req, "GET /?data=", 11) == 0 ? req + 11 : NULL;
    size_t qlen = q ? strcspn(q, " \r\n&") : 0;
    int blen;
    if (q && qlen > 0 && qlen < 64)
        blen = snprintf(body, sizeof body, "{\"data\":\"%.*s\",\"ok\":true}\n", (int)qlen, q);
    else {
        status = "400 Bad Request";
        blen = snprintf(body, sizeof body, "bad request\n");
    }
    char resp[512];
    int rlen = snprintf(resp, sizeof resp,
                        "HTTP/1.0 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                        "Connection: close\r\n\r\n%s",
                        status, blen, body);
    for (int off = 0; off < rlen;) {
        ssize_t n = write(c, resp + off, (size_t)(rlen - off));
        if (n <= 0)
            break;
        off += (int)n;
    }
}

static _Noreturn void server_main(int ls, pid_t parent)
{
    /* Ends with the demo, however the demo ends (a SIGTERM included), not left behind holding its port. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
        _exit(1);
    signal(SIGPIPE, SIG_IGN);
    for (;;) {
        int c = accept(ls, NULL, NULL);
        if (c < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            _exit(1);
        }
        serve_one(c);
        close(c);
    }
}

/* ---- the task: one GET per item --------------------------------------------------------------------------- */

static const char *item_label(size_t i, void *ctx)
{
    return ((struct demo *)ctx)->labels[i];
}

static int send_request(size_t i, void *ctx)
{
    struct demo *d = ctx;
    const char *item = d->labels[i];
    double t0 = now_s();
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return errno;
    if (connect(s, (const struct sockaddr *)&d->server, sizeof d->server) < 0) {
        int err = errno;
        close(s);
        return err;
    }
    char req[256];
    int len = snprintf(req, sizeof req, "GET /?data=%s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", item);
    if (write(s, req, (size_t)len) != len) {
        close(s);
        return EIO;
    }
    char resp[4096];
    size_t got = 0;
    for (;;) {
        ssize_t n = read(s, resp + got, sizeof resp - 1 - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
        if (got == sizeof resp - 1)
            break;
    }
    close(s);
    resp[got] = '\0';
    double cost = now_s() - t0;
    int ok = strncmp(resp, "HTTP/1.0 200 ", 13) == 0 && strstr(resp, item) != NULL;
    /* The task's own record: `request <item> cost <seconds>`; a record that could not be written fails the task
     * (its code is the errno). */
    int rc = forklog_log(d->log, ok ? FORKLOG_INFO : FORKLOG_WARN, "request %s cost %.6f%s", item, cost,
                         ok ? "" : " (bad response)");
    if (rc < 0)
        return -rc;
    return ok ? 0 : 1;
}

/* ---- the log check ------------------------------------------------------------------------------------------ */

/* This run's writers: the demo itself (the pool's timing and summary records) and the pool's workers (the request
 * records), found in the timing records. Another process may write the same log at the same time (a second demo
 * given the same -o, the log's other programs): its records are not this run's, and are neither counted nor
 * shown. */
struct run {
    pid_t parent;
    pid_t *workers;
    size_t nworkers;
};

/* The pid of a record (`... pid=4242 ...`), or -1. */
static long record_pid(const char *line)
{
    const char *p = strstr(line, " pid=");
    return p ? strtol(p + 5, NULL, 10) : -1;
}

static int is_worker(const struct run *run, long pid)
{
    for (size_t i = 0; i < run->nworkers; i++)
        if (run->workers[i] == pid)
            return 1;
    return 0;
}

/* Whether a record is one of this run's that contains `what`. */
static int ours(const struct run *run, const char *line, const char *what)
{
    long pid = record_pid(line);
    return strstr(line, what) && (pid == run->parent || is_worker(run, pid));
}

/* Reads path from offset `from` and checks: every record whole (a timestamp, a level, a pid, a newline), and per
 * item exactly one pool timing record and one request record of this run. Fills run->workers. Returns the number
 * of this run's records, or -1. */
static long check_log(const char *path, off_t from, ino_t ino, size_t n, char **labels, int expect_ok, struct run *run)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "log check: cannot open %s: %s\n", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || st.st_ino != ino || st.st_size < from) {
        /* The check reads the file at path only: a log that another of its users rotates (its rotate_bytes is
         * shared) or that was replaced holds only part of the run, or none of it. */
        fprintf(stderr,
                "log check: %s is no longer the file the run began with (rotated or replaced by another "
                "program): its records cannot all be counted here\n",
                path);
        close(fd);
        return -1;
    }
    size_t len = (size_t)(st.st_size - from);
    char *buf = malloc(len + 1);
    size_t got = 0;
    while (buf && got < len) {
        ssize_t r = pread(fd, buf + got, len - got, from + (off_t)got);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    if (!buf || got != len || (len && buf[len - 1] != '\n')) {
        fprintf(stderr, "log check: the log does not end with a whole record\n");
        free(buf);
        return -1;
    }
    buf[len] = '\0';
    unsigned *timing = calloc(n, sizeof *timing), *requests = calloc(n, sizeof *requests);
    size_t lines = 0;
    for (const char *c = buf; (c = strchr(c, '\n')); c++)
        lines++;
    run->nworkers = 0;
    run->workers = malloc((lines ? lines : 1) * sizeof *run->workers);
    if ((n && (!timing || !requests)) || !run->workers) {
        fprintf(stderr, "log check: out of memory\n");
        free(timing);
        free(requests);
        free(buf);
        return -1;
    }
    long records = 0, summaries = 0, bad = 0;
    /* First the demo's own records, which name the workers; then the workers' records. */
    for (int pass = 0; pass < 2; pass++) {
        for (char *line = buf; *line;) {
            char *end = strchr(line, '\n');
            *end = '\0';
            long pid = record_pid(line);
            /* 2026-11-28T16:05:13.123456Z INFO pid=4242 ... : whatever process wrote it */
            char *sp = strchr(line, ' ');
            if (pass == 0 &&
                (strlen(line) < 40 || line[4] != '-' || line[10] != 'T' || line[26] != 'Z' || !sp || pid <= 0)) {
                fprintf(stderr, "log check: not a whole record: %s\n", line);
                bad++;
            }
            const char *t = strstr(line, " task task=");
            const char *r = strstr(line, " request data");
            const char *w = strstr(line, " worker=");
            size_t idx;
            if (pass == 0 && pid == run->parent) {
                records++;
                if (t && sscanf(t, " task task=%zu ", &idx) == 1 && idx < n) {
                    const char *l = strstr(t, " label=");
                    if (!l || strcmp(l + 7, labels[idx]) != 0 || (expect_ok && !strstr(t, " status=ok "))) {
                        fprintf(stderr, "log check: unexpected timing record: %s\n", line);
                        bad++;
                    }
                    timing[idx]++;
                    long wpid = w ? strtol(w + 8, NULL, 10) : 0;
                    if (wpid > 0 && !is_worker(run, wpid))
                        run->workers[run->nworkers++] = (pid_t)wpid;
                } else if (strstr(line, " pool summary tasks=")) {
                    summaries++;
                } else {
                    fprintf(stderr, "log check: unexpected record: %s\n", line);
                    bad++;
                }
            } else if (pass == 1 && pid != run->parent && is_worker(run, pid)) {
                records++;
                if (r && sscanf(r, " request data%zu cost ", &idx) == 1 && idx >= 1 && idx <= n) {
                    requests[idx - 1]++;
                } else {
                    fprintf(stderr, "log check: unexpected record: %s\n", line);
                    bad++;
                }
            }
            *end = '\n';
            line = end + 1;
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (timing[i] != 1 || (expect_ok && requests[i] != 1)) {
            fprintf(stderr, "log check: %s has %u timing and %u request records\n", labels[i], timing[i], requests[i]);
            bad++;
        }
    }
    if (summaries != 1) {
        fprintf(stderr, "log check: %ld summary records\n", summaries);
        bad++;
    }
    free(timing);
    free(requests);
    free(buf);
    return bad ? -1 : records;
}

/* Prints the first `want` records of this run in the log (from offset `from`) that contain `what`, whole and
 * indented. */
static void show_records(const char *path, off_t from, const struct run *run, const char *what, int want)
{
    FILE *f = fopen(path, "r");
    if (!f || fseeko(f, from, SEEK_SET) != 0) {
        if (f)
            fclose(f);
        return;
    }
    char *line = NULL;
    size_t cap = 0;
    while (want > 0 && getline(&line, &cap, f) > 0)
        if (ours(run, line, what)) {
            printf("    %s", line);
            want--;
        }
    free(line);
    fclose(f);
}

/* ---- main -------------------------------------------------------------------------------------------------- */

static void usage(FILE *f, const char *argv0)
{
    fprintf(f,
            "usage: %s [-w workers] [-n items] [-o logpath]\n"
            "  Sends one HTTP request per data item to a local server through a pool of forked workers and logs\n"
            "  the cost of each to one file. Defaults: -w 8 -n 200, and -o request.log in a new temporary folder\n",
            argv0);
}

static long parse_count(const char *s, long max)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    return errno || *end || v < 1 || v > max ? -1 : v;
}

int main(int argc, char **argv)
{
    long workers = 8, items = 200;
    const char *path = NULL;
    char tmp_path[4096];
    int opt;
    while ((opt = getopt(argc, argv, "w:n:o:h")) != -1) {
        switch (opt) {
        case 'w': workers = parse_count(optarg, 1024); break;
        case 'n': items = parse_count(optarg, 10000000); break;
        case 'o': path = optarg; break;
        case 'h': usage(stdout, argv[0]); return 0;
        default: usage(stderr, argv[0]); return 2;
        }
        if (workers < 0 || items < 0) {
            usage(stderr, argv[0]);
            return 2;
        }
    }
    if (optind != argc) {
        usage(stderr, argv[0]);
        return 2;
    }

    /* The API: listen on an ephemeral loopback port, serve from a child process. */
    struct demo d;
    memset(&d, 0, sizeof d);
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    d.server.sin_family = AF_INET;
    d.server.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    d.server.sin_port = 0;
    socklen_t alen = sizeof d.server;
    if (ls < 0 || bind(ls, (struct sockaddr *)&d.server, sizeof d.server) < 0 || listen(ls, 256) < 0 ||
        getsockname(ls, (struct sockaddr *)&d.server, &alen) < 0) {
        perror("demo: local server socket");
        return 1;
    }
    fflush(stdout);
    pid_t parent = getpid(), server = fork();
    if (server < 0) {
        perror("demo: fork");
        return 1;
    }
    if (server == 0)
        server_main(ls, parent);
    close(ls); /* the workers must not inherit the listening socket */

    /* The items: data1, data2, ... */
    int labeled = (d.labels = calloc((size_t)items, sizeof *d.labels)) != NULL;
    for (long i = 0; labeled && i < items; i++)
        if ((labeled = (d.labels[i] = malloc(24)) != NULL))
            snprintf(d.labels[i], 24, "data%ld", i + 1);
    if (!labeled) {
        fprintf(stderr, "demo: out of memory for %ld labels\n", items);
        kill(server, SIGKILL);
        waitpid(server, NULL, 0);
        return 1;
    }

    /* The log: by default request.log in a new temporary folder; opened once, before the pool forks, and
     * appended to (a log given with -o keeps what it held). */
    if (!path) {
        const char *tmpdir = getenv("TMPDIR");
        snprintf(tmp_path, sizeof tmp_path, "%s/forklog-demo-XXXXXX", tmpdir && *tmpdir ? tmpdir : "/tmp");
        if (!mkdtemp(tmp_path)) {
            perror("demo: mkdtemp");
            kill(server, SIGKILL);
            waitpid(server, NULL, 0);
            return 1;
        }
        strncat(tmp_path, "/request.log", sizeof tmp_path - strlen(tmp_path) - 1);
        path = tmp_path;
    }
    struct stat st;
    off_t from = stat(path, &st) == 0 ? st.st_size : 0;
    int rc = forklog_open(&d.log, path, NULL);
    if (rc < 0) {
        fprintf(stderr, "demo: %s: %s\n", path, strerror(-rc));
        kill(server, SIGKILL);
        waitpid(server, NULL, 0);
        return 1;
    }
    const ino_t ino = stat(path, &st) == 0 ? st.st_ino : 0;

    printf("forklog %s demo: %ld items, %ld workers, server http://127.0.0.1:%u/, log %s\n", forklog_version_string(),
           items, workers, (unsigned)ntohs(d.server.sin_port), path);
    fflush(stdout);
    struct forklog_pool_options po = {.workers = (unsigned)workers, .timeout_s = 10, .log = d.log, .label = item_label};
    struct forklog_pool_report rep;
    int bad = forklog_pool_map(&po, (size_t)items, send_request, &d, &rep);

    kill(server, SIGKILL);
    waitpid(server, NULL, 0);
    if ((rc = forklog_close(d.log)) < 0) {
        fprintf(stderr, "demo: closing %s: %s\n", path, strerror(-rc));
        return 1;
    }

    if (bad < 0) {
        fprintf(stderr, "demo: the pool could not run: %s\n", strerror(-bad));
        return 1;
    }
    printf("requests: %ld, ok %zu, failed %zu, crashed %zu, timeout %zu\n", items, rep.ok, rep.failed, rep.crashed,
           rep.timed_out);
    printf("cost: min %.3f ms, p50 %.3f ms, p95 %.3f ms, p99 %.3f ms, max %.3f ms, mean %.3f ms\n", rep.min_s * 1e3,
           rep.p50_s * 1e3, rep.p95_s * 1e3, rep.p99_s * 1e3, rep.max_s * 1e3, rep.mean_s * 1e3);
    printf("wall %.3f s, %.0f requests/s, %zu worker processes\n", rep.wall_s, rep.tasks_per_s, rep.workers_started);

    struct run run = {.parent = getpid()};
    long records = check_log(path, from, ino, (size_t)items, d.labels, bad == 0, &run);
    for (long i = 0; d.labels && i < items; i++)
        free(d.labels[i]);
    free(d.labels);
    if (records < 0) {
        printf("log check: FAILED\n");
        free(run.workers);
        return 1;
    }
    printf("log check: OK (%ld records)\n", records);
    if (bad != 0) {
        free(run.workers);
        return 1;
    }
    printf("\n%s now holds, from this run:\n"
           "  %ld `request` records, one per item, each written by the task in its worker process:\n",
           path, items);
    show_records(path, from, &run, " request data", 2);
    printf("  %ld `task` records, one per item, written by the pool in the parent with each task's cost and status\n"
           "  (even a task whose worker crashed or timed out gets one):\n",
           items);
    show_records(path, from, &run, " task task=", 2);
    printf("  and 1 `pool summary` record: %ld + %ld + 1 = %ld records, every one a whole line:\n", items, items,
           2 * items + 1);
    show_records(path, from, &run, " pool summary ", 1);
    free(run.workers);
    return bad == 0 ? 0 : 1;
}
