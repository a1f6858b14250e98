/* SPDX-License-Identifier: MIT */
/*
 * forklog(1): append whole records to a forklog log from the shell, next to the log's other writers.
 *
 *   forklog append [-l LEVEL] [--json] FILE [MESSAGE...]   one record, or one record per line of stdin
 *   forklog flush FILE                                     write out what the log's shared buffer holds
 *
 * Written on the public API only (forklog.h), like any other user of the library. The man page,
 * man/forklog.1, is the reference for the interface and the exit codes; keep the two in step.
 */
#include <forklog.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Exit codes (man page, EXIT STATUS): like grep and diff, 1 for "it did not work", 2 for "you asked wrongly". */
enum { ST_OK = 0, ST_FAILED = 1, ST_USAGE = 2 };

static const char usage_text[] = "Usage: forklog append [-l LEVEL] [--json] FILE [MESSAGE...]\n"
                                 "       forklog flush FILE\n"
                                 "       forklog --help | --version\n"
                                 "\n"
                                 "Appends whole records to the log FILE, next to the other processes that write it.\n"
                                 "\n"
                                 "Commands:\n"
                                 "  append  write MESSAGE (its words joined by single spaces) as one record; without\n"
                                 "          MESSAGE, write one record per line of standard input\n"
                                 "  flush   write out the records the log's shared buffer holds\n"
                                 "\n"
                                 "Options of append (before FILE; every word after FILE is part of the message):\n"
                                 "  -l, --level=LEVEL  the record's level: debug, info (default), warn or error\n"
                                 "      --json         write JSON Lines records instead of text\n"
                                 "\n"
                                 "Other options:\n"
                                 "  -h, --help         show this help and exit (also after a command)\n"
                                 "      --version      show the version and exit\n"
                                 "\n"
                                 "Records below the log's minimum level are dropped: info, or the level in the\n"
                                 "environment variable FORKLOG_LEVEL, or the one a writer of the log set with\n"
                                 "forklog_set_level(). SIGINT, SIGTERM and SIGHUP end append between two records\n"
                                 "and flush once its write is done; a second one ends either at once.\n"
                                 "\n"
                                 "Exit status: 0 ok; 1 the log could not be opened, written, flushed or closed, or\n"
                                 "standard input could not be read; 2 usage error; 128+N ended by signal N.\n"
                                 "See forklog(1).\n";

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Every diagnostic is one line on stderr, "forklog: ...", so that it stands out in a cron mail or a CI log. */
static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("forklog: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

#define usage_error(...) (say(__VA_ARGS__), ST_USAGE)

/* The standard descriptors (bit 0 for stdin, 1 for stdout, 2 for stderr) that were closed when forklog started,
 * and that hold_std_fds() filled with /dev/null. */
static unsigned closed_at_start;

/* --help and --version go to stdout: a full disk there is still a failure to report (a closed pipe ends the
 * program with SIGPIPE, as it does cat), and so is a stdout that was closed: what went to the /dev/null that
 * holds its place reached nobody. */
static int finish_stdout(void)
{
    if (closed_at_start & 2) {
        say("cannot write to standard output: %s", strerror(EBADF));
        return ST_FAILED;
    }
    if (fflush(stdout) != 0 || ferror(stdout)) {
        say("cannot write to standard output: %s", strerror(errno));
        return ST_FAILED;
    }
    return ST_OK;
}

static int print_help(void)
{
    fputs(usage_text, stdout);
    return finish_stdout();
}

/* The version of the library actually linked, which is what decides how records are written. */
static int print_version(void)
{
    printf("forklog %s\n", forklog_version_string());
    return finish_stdout();
}

/* A tool started with 0, 1 or 2 closed (by a daemon, a careless cron wrapper) would give one of those numbers to
 * the log's descriptor, and its own stderr messages would then land in the log as bogus records. Hold them first,
 * each with the read end of a pipe of its own whose write end is closed: a read finds the end of the input, a write
 * fails (EBADF) without a signal, and the pipe is this process's alone, so that a FILE naming a closed descriptor
 * (/dev/stdout, /proc/self/fd/1) is told from every other file (std_fd_named). pipe() takes the lowest free number
 * for the read end, and 0..2 are filled in order, so it lands on `fd`. Which were closed is kept: a closed stdin
 * is not an empty input, nor a closed stdout a place help was written to. */
static void hold_std_fds(void)
{
    for (int fd = 0; fd <= 2; fd++)
        if (fcntl(fd, F_GETFD) < 0 && errno == EBADF) {
            int p[2];
            if (pipe(p) < 0)
                return;
            closed_at_start |= 1u << fd;
            close(p[1]);
        }
}

/* The standard descriptor (0, 1 or 2), among the bits of `among`, that `path` names (/dev/stdout, /dev/fd/2,
 * /proc/self/fd/0, a symlink to one of them), or -1; *st receives what path names. */
static int std_fd_named(const char *path, unsigned among, struct stat *st)
{
    struct stat b;
    if (!among || stat(path, st) < 0)
        return -1;
    for (int fd = 0; fd <= 2; fd++)
        if ((among & (1u << fd)) && fstat(fd, &b) == 0 && st->st_dev == b.st_dev && st->st_ino == b.st_ino)
            return fd;
    return -1;
}

static int parse_level(const char *name, enum forklog_level *out)
{
    static const struct {
        const char *name;
        enum forklog_level level;
    } levels[] = {{"debug", FORKLOG_DEBUG},
                  {"info", FORKLOG_INFO},
                  {"warn", FORKLOG_WARN},
                  {"warning", FORKLOG_WARN},
                  {"error", FORKLOG_ERROR}};
    for (size_t i = 0; i < sizeof levels / sizeof levels[0]; i++)
        if (strcasecmp(name, levels[i].name) == 0) {
            *out = levels[i].level;
            return 0;
        }
    return -1;
}

/* The words of the message joined by single spaces, as logger(1) does. NULL when out of memory. */
static char *join_words(int n, char **words)
{
    size_t len = 1;
    for (int i = 0; i < n; i++)
        len += strlen(words[i]) + 1;
    char *msg = malloc(len);
    if (!msg)
        return NULL;
    char *p = msg;
    for (int i = 0; i < n; i++) {
        size_t w = strlen(words[i]);
        if (i > 0)
            *p++ = ' ';
        memcpy(p, words[i], w);
        p += w;
    }
    *p = '\0';
    return msg;
}

/* What the command line asked for. */
struct request {
    const char *path;
    enum forklog_level level;
    enum forklog_format format;
};

/*
 * Parses the options of `command` (argv[0]) up to FILE and takes FILE. Options stop at the first word that is
 * not one ('+'), so a message word such as "-x failed" is never read as an option. Returns the index of the first
 * word after FILE, or -1 with the exit code in *status (ST_OK for --help, which has been printed).
 */
static int parse_command(int argc, char **argv, int record_options, struct request *req, int *status)
{
    static const struct option append_longopts[] = {{"level", required_argument, NULL, 'l'},
                                                    {"json", no_argument, NULL, 'j'},
                                                    {"help", no_argument, NULL, 'h'},
                                                    {NULL, 0, NULL, 0}};
    static const struct option flush_longopts[] = {{"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    const char *command = argv[0];
    int opt;

    opterr = 0; /* getopt's own messages name argv[0], here the command: ours say more */
    for (;;) {
        /* The word that an error is about: the one getopt took, or the one it stopped in ("-xy" stopped at 'x',
         * with optind still on it), never the option before it. */
        int word_at = optind;
        opt = getopt_long(argc, argv, record_options ? "+:l:h" : "+:h",
                          record_options ? append_longopts : flush_longopts, NULL);
        if (opt == -1)
            break;
        switch (opt) {
        case 'l':
            if (parse_level(optarg, &req->level) < 0) {
                *status = usage_error("%s: unknown level '%s' (debug, info, warn or error)", command, optarg);
                return -1;
            }
            break;
        case 'j': req->format = FORKLOG_FORMAT_JSON; break;
        case 'h': *status = print_help(); return -1;
        case ':':
            /* Not argv[optind - 1]: musl's getopt leaves optind at argc + 1 here, where that is argv[argc], NULL. */
            *status = usage_error("%s: option '%s' needs a value", command, argv[word_at]);
            return -1;
        default: {
            const char *word = argv[optind > word_at ? optind - 1 : word_at];
            size_t name = strcspn(word, "=");
            if (optopt && strncmp(word, "--", 2) == 0) /* a long option given a value it does not take */
                *status = usage_error("%s: option '%.*s' takes no value", command, (int)name, word);
            else if (optopt)
                *status = usage_error("%s: unknown option '-%c' (see forklog --help)", command, optopt);
            else
                *status = usage_error("%s: unknown option '%s' (see forklog --help)", command, word);
            return -1;
        }
        }
    }
    if (optind >= argc) {
        *status = usage_error("%s: missing FILE (see forklog --help)", command);
        return -1;
    }
    req->path = argv[optind];
    if (!req->path[0]) {
        *status = usage_error("%s: FILE is empty (see forklog --help)", command);
        return -1;
    }
    return optind + 1;
}

/* The signal that asked append to stop (SIGINT, SIGTERM, SIGHUP), or 0. */
static volatile sig_atomic_t stop_signal;

/* /dev/null, open for reading from set_signals() on, or -1. */
static int stop_input_fd = -1;

/* A signal that interrupts a read(2) of stdin makes it fail with EINTR, and append ends. But one that comes while
 * append is anywhere else (between its look at stop_signal and the read, or inside getline() while a long line
 * streams in) interrupts no read: the next read would wait for input that may never come, and append would not
 * end. So stdin becomes /dev/null here: every later read finds the end of the input at once. dup2() is
 * async-signal-safe; errno is kept for the code that was interrupted.
 * A record's write(2) is finished first, and the library goes on with it after a signal: a log that is a pipe or a
 * FIFO whose reader stopped reading holds it for as long as the reader likes. A second stop signal therefore ends
 * the program at once, as the signal itself would have (signal() and raise() are async-signal-safe): a record in
 * the middle of its write is then left as a writer killed there leaves it. */
static void on_stop(int sig)
{
    if (stop_signal) {
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    int saved = errno;
    stop_signal = sig;
    if (stop_input_fd >= 0)
        dup2(stop_input_fd, STDIN_FILENO);
    errno = saved;
}

/* Before a command opens its log. A write past RLIMIT_FSIZE, or to a pipe or FIFO whose reader went away: fail
 * the record with EFBIG or EPIPE and say so, rather than die of SIGXFSZ or SIGPIPE without a word. SIGINT,
 * SIGTERM and SIGHUP (unless the tool was started with them ignored, as `nohup` does) end the command between two
 * records, with the log closed, rather than in the middle of one: a fatal signal stops write(2) between two pages
 * and would leave part of a record until the log's next writer cuts it. No SA_RESTART: a read of stdin that
 * waits returns at once, and on_stop() makes every later one find the end of the input. */
static void set_signals(void)
{
    /* Only when descriptor 0 is standard input: if hold_std_fds() could not fill it, the log may take it. */
    if (fcntl(STDIN_FILENO, F_GETFD) >= 0)
        stop_input_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGXFSZ, SIG_IGN);
    static const int stops[] = {SIGINT, SIGTERM, SIGHUP};
    for (size_t i = 0; i < sizeof stops / sizeof stops[0]; i++) {
        struct sigaction sa, old;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_stop;
        sigemptyset(&sa.sa_mask);
        if (sigaction(stops[i], NULL, &old) == 0 && old.sa_handler == SIG_DFL)
            sigaction(stops[i], &sa, NULL);
    }
}

/* After the log is closed: a stop signal ends the program as the signal itself would have (status 128+N). */
static int end_by_signal(int status)
{
    int sig = stop_signal;
    if (!sig)
        return status;
    signal(sig, SIG_DFL);
    raise(sig);
    return 128 + sig; /* not reached */
}

static int open_log(forklog **log, const struct request *req)
{
    /* Zeroed but for the format: every other setting is the library's default, as for the log's other users
     * (and where the library shares a log's settings between its openers, theirs apply). The minimum level stays
     * the default (info, or FORKLOG_LEVEL): -l sets the record's level, not the log's filter, so `-l debug`
     * records are dropped like any other debug record. */
    /* A FILE that names a standard descriptor closed at start would be the pipe that holds its place (see
     * hold_std_fds): records written there reach nobody. */
    static const char *const std_names[] = {"standard input", "standard output", "standard error"};
    struct stat st;
    int closed = std_fd_named(req->path, closed_at_start, &st);
    if (closed >= 0) {
        say("cannot open %s: %s (%s is closed)", req->path, strerror(EBADF), std_names[closed]);
        return ST_FAILED;
    }
    char why[512] = "";
    struct forklog_options opts = {0};
    opts.format = req->format;
    opts.error = why;
    opts.error_size = sizeof why;

    /* A standard descriptor that is a socket, as a systemd service's standard output is (a stream to the journal):
     * open(2) cannot open a socket through /proc, so the descriptor itself is made the log. */
    int fd = std_fd_named(req->path, 7u, &st);
    int rc = fd >= 0 && S_ISSOCK(st.st_mode) ? forklog_open_fd(log, fd, &opts) : forklog_open(log, req->path, &opts);
    if (rc < 0) {
        if (why[0])
            say("cannot open %s: %s (%s)", req->path, strerror(-rc), why);
        else
            say("cannot open %s: %s", req->path, strerror(-rc));
        return ST_FAILED;
    }
    return ST_OK;
}

static int close_log(forklog *log, const char *path)
{
    int rc = forklog_close(log);
    if (rc < 0) {
        say("cannot close %s: %s", path, strerror(-rc));
        return ST_FAILED;
    }
    return ST_OK;
}

/* The records written by one `append`, for the summary. */
struct tally {
    unsigned long records, failed;
};

/* One record. A cut record (positive return) is written, so it is no failure: a warning says how much is
 * missing. After a failed record the caller goes on: only the first failure is reported here. Returns what
 * forklog_log() returned. */
static int put_record(forklog *log, const struct request *req, const char *msg, unsigned long lineno, struct tally *t)
{
    int rc = forklog_log(log, req->level, "%s", msg);
    t->records++;
    if (rc > 0) {
        if (lineno)
            say("warning: %s: line %lu cut by %d bytes to fit the log's largest record", req->path, lineno, rc);
        else
            say("warning: %s: message cut by %d bytes to fit the log's largest record", req->path, rc);
    } else if (rc < 0 && t->failed++ == 0) {
        say("cannot write to %s: %s", req->path, strerror(-rc));
    }
    return rc;
}

/* While append waits for its next line, the records it wrote may sit in a buffered log's shared memory
 * (FORKLOG_BUFFERED, which the log's other users may have chosen): the library writes them at its next call once
 * flush_ms has passed, and a pipeline that goes quiet makes no call. A thread of its own writes them out when no
 * line came for IDLE_FLUSH_MS; on a log that is not buffered forklog_flush() does nothing. */
#define IDLE_FLUSH_MS 100

struct idle_flush {
    forklog *log;
    atomic_ulong records; /* written so far by the main thread */
    pthread_mutex_t mu;
    pthread_cond_t wake;
    int stop; /* under mu */
    pthread_t thread;
};

static void *idle_flusher(void *arg)
{
    struct idle_flush *f = arg;
    unsigned long seen = 0, flushed = 0;
    pthread_mutex_lock(&f->mu);
    while (!f->stop) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_nsec += IDLE_FLUSH_MS * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        if (pthread_cond_timedwait(&f->wake, &f->mu, &until) == 0 || f->stop)
            continue;
        unsigned long now = atomic_load(&f->records);
        if (now == seen && now != flushed) {
            pthread_mutex_unlock(&f->mu);
            (void)forklog_flush(f->log); /* a failure stays in the buffer, for the next flush or the close */
            pthread_mutex_lock(&f->mu);
            flushed = now;
        }
        seen = now;
    }
    pthread_mutex_unlock(&f->mu);
    return NULL;
}

/* Starts the thread, with the stop signals blocked in it (they must interrupt the main thread's read). Returns 0,
 * or -1 when it could not be started: append then goes on without it. */
static int idle_flush_start(struct idle_flush *f, forklog *log)
{
    f->log = log;
    atomic_init(&f->records, 0);
    f->stop = 0;
    pthread_condattr_t ca;
    if (pthread_condattr_init(&ca) != 0)
        return -1;
    int ok = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0 && pthread_cond_init(&f->wake, &ca) == 0;
    pthread_condattr_destroy(&ca);
    if (!ok)
        return -1;
    pthread_mutex_init(&f->mu, NULL);
    sigset_t stops, old;
    sigemptyset(&stops);
    sigaddset(&stops, SIGINT);
    sigaddset(&stops, SIGTERM);
    sigaddset(&stops, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &stops, &old);
    int rc = pthread_create(&f->thread, NULL, idle_flusher, f);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        pthread_cond_destroy(&f->wake);
        pthread_mutex_destroy(&f->mu);
        return -1;
    }
    return 0;
}

static void idle_flush_stop(struct idle_flush *f)
{
    pthread_mutex_lock(&f->mu);
    f->stop = 1;
    pthread_cond_signal(&f->wake);
    pthread_mutex_unlock(&f->mu);
    pthread_join(f->thread, NULL);
    pthread_cond_destroy(&f->wake);
    pthread_mutex_destroy(&f->mu);
}

/* One record per line of stdin. getline() because a line has no length limit here: a 100 KiB line from a
 * compiler is one record (cut by the library at the log's max_record, with a marker). A failed record does not
 * stop the loop: the program writing into the pipe (`make 2>&1 | forklog append build.log`) must not be killed
 * by SIGPIPE because the log's disk is full. A log that is a pipe whose reader went away (EPIPE) does stop it:
 * no later record could be written. */
static int append_lines(forklog *log, const struct request *req, struct tally *t)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    unsigned long lineno = 0;
    int status = ST_OK, err = 0;
    struct idle_flush idle;
    int flusher = idle_flush_start(&idle, log) == 0;

    while (!stop_signal && (n = getline(&line, &cap, stdin)) >= 0) {
        if (n > 0 && line[n - 1] == '\n') {
            line[--n] = '\0';
        } else if (stop_signal || ferror(stdin)) {
            /* getline() gives back what it has read of a line when its read(2) fails: a stop signal interrupted it
             * (EINTR), or standard input failed (EAGAIN on a descriptor left non-blocking, EIO, ...). That is not
             * the line: written, it would be a record that looks whole but is not; append ends between two records
             * (and reports the error below). A last line that ends the input without a newline is still a record. */
            int e = errno;
            say("warning: %s: line %lu not written: %s before its end (%zu bytes dropped)", req->path, lineno + 1,
                stop_signal ? "append was stopped" : "standard input failed", (size_t)n);
            errno = e;
            break;
        }
        size_t len = strlen(line);
        if (len < (size_t)n)
            say("warning: %s: line %lu cut at a NUL byte (%zu bytes dropped)", req->path, lineno + 1, (size_t)n - len);
        int rc = put_record(log, req, line, ++lineno, t);
        if (flusher)
            atomic_fetch_add(&idle.records, 1);
        if (rc == -EPIPE) {
            status = ST_FAILED;
            break;
        }
    }
    err = errno;
    if (flusher)
        idle_flush_stop(&idle);
    /* getline() fails without setting the error indicator when it runs out of memory: not the end of the input. */
    if (status == ST_OK && !stop_signal && (ferror(stdin) || !feof(stdin))) {
        say("cannot read standard input: %s", strerror(err));
        status = ST_FAILED;
    }
    free(line);
    return status;
}

/* Whether standard input is the file at `path` (by any name), and a regular file or a pipe: append would read its
 * own records back as lines and write each again, for ever, until the disk is full (cat(1) refuses the same with
 * "input file is output file"). A terminal is read and written without a loop. */
static int stdin_is(const char *path)
{
    struct stat in, log;
    return fstat(STDIN_FILENO, &in) == 0 && (S_ISREG(in.st_mode) || S_ISFIFO(in.st_mode)) && stat(path, &log) == 0 &&
           in.st_dev == log.st_dev && in.st_ino == log.st_ino;
}

static int cmd_append(int argc, char **argv)
{
    struct request req = {NULL, FORKLOG_INFO, FORKLOG_FORMAT_TEXT};
    int status;
    int first_word = parse_command(argc, argv, 1, &req, &status);
    if (first_word < 0)
        return status;

    /* Everything that can be refused is refused before the file is opened (which may create it). A closed stdin
     * cannot be read: that is not an empty input (it would write nothing and succeed). */
    if (first_word == argc && (closed_at_start & 1)) {
        say("cannot read standard input: %s", strerror(EBADF));
        return ST_FAILED;
    }
    if (first_word == argc && stdin_is(req.path)) {
        say("cannot append to %s: standard input is that file (its own records would come back as lines for ever)",
            req.path);
        return ST_FAILED;
    }
    char *msg = NULL;
    if (first_word < argc && !(msg = join_words(argc - first_word, argv + first_word))) {
        say("cannot join the message: %s", strerror(ENOMEM));
        return ST_FAILED;
    }
    forklog *log;
    set_signals();
    status = open_log(&log, &req);
    if (status != ST_OK) {
        free(msg);
        return status;
    }
    struct tally t = {0, 0};
    if (msg)
        put_record(log, &req, msg, 0, &t);
    else
        status = append_lines(log, &req, &t);
    free(msg);
    if (t.failed > 1)
        say("%s: %lu of %lu records not written", req.path, t.failed, t.records);
    if (t.failed > 0)
        status = ST_FAILED;
    if (close_log(log, req.path) != ST_OK)
        status = ST_FAILED;
    return end_by_signal(status);
}

static int cmd_flush(int argc, char **argv)
{
    struct request req = {NULL, FORKLOG_INFO, FORKLOG_FORMAT_TEXT};
    int status;
    int first_word = parse_command(argc, argv, 0, &req, &status);
    if (first_word < 0)
        return status;
    if (first_word < argc)
        return usage_error("flush: unexpected argument '%s' (see forklog --help)", argv[first_word]);

    forklog *log;
    set_signals();
    status = open_log(&log, &req);
    if (status != ST_OK)
        return status;
    int rc = forklog_flush(log);
    if (rc < 0) {
        say("cannot flush %s: %s", req.path, strerror(-rc));
        status = ST_FAILED;
    }
    if (close_log(log, req.path) != ST_OK)
        status = ST_FAILED;
    return end_by_signal(status);
}

int main(int argc, char **argv)
{
    hold_std_fds();
    if (argc < 2)
        return usage_error("missing command: append or flush (see forklog --help)");
    const char *command = argv[1];
    if (strcmp(command, "--help") == 0 || strcmp(command, "-h") == 0)
        return print_help();
    if (strcmp(command, "--version") == 0)
        return print_version();
    /* The command's options are parsed as if the command were the program: argv[0] of getopt is "append". */
    if (strcmp(command, "append") == 0)
        return cmd_append(argc - 1, argv + 1);
    if (strcmp(command, "flush") == 0)
        return cmd_flush(argc - 1, argv + 1);
    if (command[0] == '-')
        return usage_error("unknown option '%s' (see forklog --help)", command);
    return usage_error("unknown command '%s': append or flush (see forklog --help)", command);
}
