/* SPDX-License-Identifier: MIT */
/*
 * A pre-fork server: the parent opens the log and a listening socket on 127.0.0.1, forks N workers that accept
 * connections on the shared socket and log one record per HTTP request, then plays the client itself: it sends
 * M requests, stops the workers and checks that the log holds exactly one whole record per request.
 * Offline (loopback only), bounded (M requests, a 10 s alarm). SIGTERM, SIGINT or the alarm stop the parent and
 * every worker (the parent shuts the listening socket, which wakes every worker waiting for a connection, and
 * reaps them); a worker whose parent dies ends too (PR_SET_PDEATHSIG).
 *
 * Usage: prefork_server LOGFILE [workers] [requests]          (defaults: 4 workers, 200 requests)
 * Prints one line per worker with the requests it served, then "OK: <M> requests, <M> records", or "NOT CHECKED"
 * when the log was rotated during the run (its other users rotate it, or logrotate moved it).
 */
#ifndef _DEFAULT_SOURCE
#define _DEFAULT_SOURCE
#endif
#include <forklog.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

enum { MAX_WORKERS = 64 };

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static volatile sig_atomic_t stop;
static int listen_fd = -1; /* the parent's: shut by its handler */

/* The parent's handler of SIGTERM, SIGINT and SIGALRM: shutdown(2), async-signal-safe, makes every accept() and
 * select() on the listening socket return at once, in every worker. The worker's handler only sets the flag. */
static void on_term(int sig)
{
    (void)sig;
    int e = errno;
    stop = 1;
    if (listen_fd >= 0)
        shutdown(listen_fd, SHUT_RD);
    errno = e;
}

/* One worker: accept, read the request line, log `GET <path> 200 <bytes> <seconds>`, then answer (so that a
 * request the client saw answered is in the log; one whose record failed is answered 500). Ends when the listening
 * socket is shut (accept() fails), or at SIGTERM, between two requests: SIGTERM is blocked except in pselect(), so it
 * cannot slip in between the check of `stop` and the wait for a connection. The listening socket is non-blocking:
 * several workers may wake for one connection, and those that do not get it wait again. */
static _Noreturn void worker(int ls, forklog *log, pid_t parent, const sigset_t *unblocked)
{
    listen_fd = -1;
    struct sigaction sa = {.sa_handler = on_term};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGINT, SIG_IGN); /* ^C reaches the whole process group: the parent stops the workers */
    signal(SIGALRM, SIG_DFL);
#ifdef __linux__
    prctl(PR_SET_PDEATHSIG, SIGTERM); /* the parent's death, even by SIGKILL, stops the worker */
#endif
    if (getppid() != parent) /* the parent died before prctl() */
        _exit(1);
    unsigned served = 0;
    int bad = 0, rc;
    while (!stop) {
        fd_set r;
        FD_ZERO(&r);
        FD_SET(ls, &r);
        if (pselect(ls + 1, &r, NULL, NULL, NULL, unblocked) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        int c = accept(ls, NULL, NULL);
        if (c < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ECONNABORTED)
                continue;
            break; /* EINVAL: the parent shut the socket */
        }
        double t0 = now_s();
        char req[1024];
        ssize_t n = read(c, req, sizeof req - 1);
        req[n > 0 ? n : 0] = '\0';
        char path[256] = "?";
        sscanf(req, "GET %255s", path);
        char resp[512];
        int len = snprintf(resp, sizeof resp,
                           "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n\r\n%s\n",
                           strlen(path) + 1, path);
        served++;
        rc = forklog_info(log, "GET %s 200 %d %.6f served=%u", path, len, now_s() - t0, served);
        if (rc < 0) {
            fprintf(stderr, "prefork_server: GET %s: the record failed: %s; answered 500\n", path, strerror(-rc));
            len = snprintf(resp, sizeof resp, "HTTP/1.0 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n");
            bad = 1;
        }
        if (write(c, resp, (size_t)len) != len && (rc = forklog_warn(log, "GET %s: the answer was not sent", path)) < 0)
            fprintf(stderr, "prefork_server: GET %s: the answer was not sent, nor logged: %s\n", path, strerror(-rc));
        close(c);
    }
    if ((rc = forklog_close(log)) < 0) {
        fprintf(stderr, "prefork_server: worker: closing the log: %s\n", strerror(-rc));
        bad = 1;
    }
    _exit(bad);
}

/* Shuts the listening socket (every worker's accept() fails at once, and it ends), sends SIGTERM too, and reaps
 * the workers; one still running 5 s later, or at a second signal, is killed. Returns how many failed. */
static int stop_workers(int ls, const pid_t *pids, int n)
{
    shutdown(ls, SHUT_RD);
    for (int w = 0; w < n; w++)
        kill(pids[w], SIGTERM);
    alarm(5);
    int failed = 0;
    for (int w = 0; w < n; w++) {
        int status;
        pid_t r;
        while ((r = waitpid(pids[w], &status, 0)) < 0 && errno == EINTR)
            kill(pids[w], SIGKILL);
        failed += r < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0;
    }
    alarm(0);
    return failed;
}

static int request(const struct sockaddr_in *addr, int i)
{
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0 || connect(s, (const struct sockaddr *)addr, sizeof *addr) < 0) {
        if (s >= 0)
            close(s);
        return -1;
    }
    char req[64], resp[512];
    int len = snprintf(req, sizeof req, "GET /item/%d HTTP/1.0\r\n\r\n", i);
    int ok = write(s, req, (size_t)len) == len;
    size_t got = 0;
    ssize_t n;
    while (ok && got < sizeof resp - 1 && (n = read(s, resp + got, sizeof resp - 1 - got)) > 0)
        got += (size_t)n;
    resp[got] = '\0';
    close(s);
    return ok && strncmp(resp, "HTTP/1.0 200 ", 13) == 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 4) {
        fprintf(stderr, "usage: %s LOGFILE [workers] [requests]\n", argv[0]);
        return 2;
    }
    char *end = "";
    long nw = argc > 2 ? strtol(argv[2], &end, 10) : 4;
    if (*end)
        nw = -1;
    long nr = argc > 3 ? strtol(argv[3], &end, 10) : 200;
    if (*end || nr > 100000000)
        nr = -1;
    int nworkers = nw < 0 || nw > MAX_WORKERS ? -1 : (int)nw, nreq = (int)nr;
    if (nworkers < 1 || nworkers > MAX_WORKERS || nreq < 1) {
        fprintf(stderr, "%s: 1..%d workers, at least 1 request\n", argv[0], MAX_WORKERS);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);

    /* The log is appended to: this run's records start at its present size. */
    struct stat st;
    off_t from = stat(argv[1], &st) == 0 ? st.st_size : 0;
    forklog *log;
    int rc = forklog_open(&log, argv[1], NULL);
    if (rc < 0) {
        fprintf(stderr, "%s: %s\n", argv[1], strerror(-rc));
        return 1;
    }
    struct stat was; /* the file this run starts in */
    if (stat(argv[1], &was) != 0)
        was.st_ino = 0;
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof addr;
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (ls < 0 || bind(ls, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(ls, 128) < 0 ||
        getsockname(ls, (struct sockaddr *)&addr, &alen) < 0) {
        perror("listen on 127.0.0.1");
        return 1;
    }
    /* SIGTERM, SIGINT and the alarm stop the parent's requests and every worker. They are blocked while the
     * workers are forked (so that none is missed), and SIGTERM stays blocked in the workers except in pselect(). */
    listen_fd = ls;
    struct sigaction sa = {.sa_handler = on_term}; /* no SA_RESTART: a request in progress fails with EINTR */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGALRM, &sa, NULL);
    sigset_t blocked, unblocked;
    sigemptyset(&blocked);
    sigaddset(&blocked, SIGTERM);
    sigaddset(&blocked, SIGINT);
    sigaddset(&blocked, SIGALRM);
    sigprocmask(SIG_BLOCK, &blocked, &unblocked);
    alarm(10); /* bounded, whatever happens */
    int log_failed = 0;
    rc =
        forklog_info(log, "server listening on 127.0.0.1:%u with %d workers", (unsigned)ntohs(addr.sin_port), nworkers);
    if (rc < 0) {
        fprintf(stderr, "%s: %s\n", argv[1], strerror(-rc));
        log_failed = 1;
    }

    /* The workers inherit the listening socket and the log handle, and use both as they are. */
    pid_t pids[MAX_WORKERS], parent = getpid();
    int started = 0;
    for (; started < nworkers; started++) {
        pids[started] = fork();
        if (pids[started] < 0) {
            perror("fork");
            stop_workers(ls, pids, started);
            return 1;
        }
        if (pids[started] == 0) {
            sigset_t worker_mask = unblocked; /* SIGTERM blocked but in pselect() */
            sigaddset(&worker_mask, SIGTERM);
            sigprocmask(SIG_SETMASK, &worker_mask, NULL);
            worker(ls, log, parent, &unblocked);
        }
    }
    sigprocmask(SIG_SETMASK, &unblocked, NULL);

    int failed = 0, done = 0;
    for (; done < nreq && !stop; done++)
        failed += request(&addr, done) != 0;

    /* Every answered request is in the log (logged before it was answered): stop the workers. */
    int failed_workers = stop_workers(ls, pids, started);
    if (stop)
        fprintf(stderr, "%s: stopped by a signal after %d of %d requests\n", argv[0], done, nreq);
    if ((rc = forklog_info(log, "server stopped: %d requests, %d failed", nreq, failed)) < 0 ||
        (rc = forklog_close(log)) < 0) {
        fprintf(stderr, "%s: %s\n", argv[1], strerror(-rc));
        log_failed = 1;
    }

    /* Read this run's records back: one whole `GET /item/<i> 200` record per request, and who served them. Only
     * a regular file can be (a device such as /dev/full reads forever). This run's records are those of its
     * workers: another process may write the same log at the same time (a second run given the same LOGFILE, the
     * log's other programs), and its records, even its own `GET /item/` ones, are not counted. */
    FILE *f = fopen(argv[1], "r");
    if (!f || fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode) || fseeko(f, from, SEEK_SET) != 0) {
        fprintf(stderr, "%s: cannot be read back\n", argv[1]);
        if (f)
            fclose(f);
        f = NULL;
    }
    if (f && (st.st_ino != was.st_ino || st.st_dev != was.st_dev || st.st_size < from)) {
        /* The log's users rotate it (rotate_bytes, joined from them) or logrotate moved it: this run's records
         * are spread over the rotated files. */
        printf("NOT CHECKED: %s was rotated or replaced during the run\n", argv[1]);
        fclose(f);
        return failed || failed_workers || log_failed ? 1 : 0;
    }
    char *line = NULL;
    size_t cap = 0;
    int records = 0, bad = 0, served[MAX_WORKERS] = {0};
    unsigned char *seen = calloc((size_t)nreq, 1);
    while (f && seen && getline(&line, &cap, f) > 0) {
        const char *get = strstr(line, " GET /item/"), *pid = strstr(line, " pid=");
        int w = started;
        if (get && pid)
            for (w = 0; w < started && strtol(pid + 5, NULL, 10) != pids[w]; w++)
                ;
        if (w == started)
            continue;
        int i;
        if (!strchr(line, '\n') || sscanf(get, " GET /item/%d 200 ", &i) != 1 || i < 0 || i >= nreq || seen[i]++)
            bad++;
        records++;
        served[w]++;
    }
    free(line);
    if (f)
        fclose(f);
    for (int w = 0; w < nworkers && records > 0; w++)
        printf("worker %d (pid %d): %d requests\n", w, (int)pids[w], served[w]);
    free(seen);
    if (failed || bad || records != nreq || failed_workers || log_failed) {
        printf("FAIL: %d requests, %d failed, %d records, %d bad, %d workers failed\n", nreq, failed, records, bad,
               failed_workers);
        return 1;
    }
    printf("OK: %d requests, %d records\n", nreq, records);
    return 0;
}
