/* SPDX-License-Identifier: MIT */
/*
 * The pool helper: tasks over forked workers, one timing record per task, no hang on crash or timeout.
 *
 * Model. The calling thread (the parent) forks the workers and is the only writer of pool records. Workers take
 * task indexes from an atomic counter in an anonymous MAP_SHARED mapping made per call (a free worker takes the
 * next index: no syscall per task), time each task (CLOCK_MONOTONIC, plus a CLOCK_REALTIME start) and publish
 * the outcome in a shared per-task result. The parent turns each published result into one record, so a worker
 * that dies between finishing a task and telling anyone still gets its task recorded, exactly once.
 *
 * Per task, in the worker:  i = next++;  res[i] = start times;  res[i].phase = RUNNING;  CAS slot.task 0 -> i + 1;
 *                           rc = task(i);  res[i] = rc, duration;  res[i].phase = FINISHED;  slot.done++;
 *                           CAS slot.task -> 0.
 * The parent learns of completions by scanning res; it sleeps in poll() only after setting a `sleeping` flag,
 * and a worker writes one byte to the wake pipe only when it finds the flag set (Dekker-style, seq_cst), so a
 * busy parent costs workers nothing. A worker's death shows as EOF on its own pipe (it holds the only write end)
 * and is confirmed with waitpid() on that exact pid; its slot tells which task it was running. A timeout is
 * claimed by the parent with a CAS on the slot (i + 1 -> KILLED) before SIGKILL, so a worker that finished at
 * the deadline is never killed in its next task: it loses the CAS and waits to be killed with its result
 * already published, and that result is what gets recorded. A worker idle (slot.task 0) for timeout_s without
 * finishing a task is stopped or stuck outside any task (between taking an index and publishing it, or in its
 * exit): the parent claims it the same way (0 -> KILLED), so a worker that starts a task at that moment loses the
 * CAS and waits to be killed, and the index it took is found at the end, not run.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#include <sys/syscall.h>
#endif

#if ATOMIC_INT_LOCK_FREE != 2 || ATOMIC_LONG_LOCK_FREE != 2
#error "forklog's pool needs lock-free atomic int and long (they live in memory shared between processes)"
#endif

#ifdef __linux__
/* pipe2() is in glibc and musl but declared only under _GNU_SOURCE; the pool builds in strict C11 mode too.
 * O_CLOEXEC at creation keeps the pool's pipes out of programs that another thread of the caller executes. */
int pipe2(int fds[2], int flags);
#define fl__pool_pipe(fds, flags) pipe2((fds), (flags))
#else
static int fl__pool_pipe(int fds[2], int flags)
{
    if (pipe(fds) < 0)
        return -1;
    for (int k = 0; k < 2; k++) {
        fcntl(fds[k], F_SETFD, FD_CLOEXEC);
        if (flags & O_NONBLOCK)
            fcntl(fds[k], F_SETFL, fcntl(fds[k], F_GETFL) | O_NONBLOCK);
    }
    return 0;
}
#endif

/* A pipe whose two descriptors are above 2. A caller that closed its standard descriptors would otherwise hand
 * their numbers to the pool's pipes, and in a worker a task that prints to stdout or stderr would write into a
 * pool pipe, and one that closes or reopens them would close a pool pipe. Returns 0, or -1 with errno set. */
static int fl__pool_make_pipe(int fds[2], int flags)
{
    if (fl__pool_pipe(fds, flags) < 0)
        return -1;
    for (int k = 0; k < 2; k++) {
        int hi = fl__fd_above_stdio(fds[k]); /* O_NONBLOCK belongs to the pipe, not the descriptor: it stays */
        if (hi < 0) {
            close(fds[1 - k]); /* fds[k] is closed already */
            errno = -hi;
            return -1;
        }
        fds[k] = hi;
    }
    return 0;
}

#ifdef __GLIBC__
#if __GLIBC_PREREQ(2, 32)
#include <sys/single_threaded.h>
#define FL__POOL_SINGLE_THREADED() (__libc_single_threaded != 0) /* the process never had another thread */
#endif
/* on_exit() is glibc's, declared only under _DEFAULT_SOURCE; the pool builds in strict C11 mode too. */
int on_exit(void (*fn)(int status, void *arg), void *arg);
#endif

/* Phases of a task result (fl__pool_res.phase). */
#define FL__POOL_FREE     0 /* not taken yet (or taken by a worker that died before publishing the start) */
#define FL__POOL_RUNNING  1 /* a worker runs it: start times are valid */
#define FL__POOL_FINISHED 2 /* the worker published code and duration */
#define FL__POOL_RECORDED 3 /* the parent wrote its record (parent only) */

/* Phases of a worker slot (fl__pool_slot.phase). */
#define FL__POOL_STARTING    0 /* forked, initializer not done */
#define FL__POOL_READY       1 /* initializer done, taking tasks */
#define FL__POOL_INIT_FAILED 2 /* initializer returned non-zero */
#define FL__POOL_INIT_KILLED 3 /* initializer ran past timeout_s: the parent kills the worker */

/* fl__pool_slot.task: 0 idle, i + 1 running task i, this value: the parent claimed the running task (or the idle
 * worker) as timed out. */
#define FL__POOL_KILLED SIZE_MAX

#define FL__POOL_EXIT_INIT    125         /* a worker whose initializer failed (the slot phase is what counts) */
#define FL__POOL_EXIT_UNWOUND 126         /* a worker whose stack unwound out of the task or initializer */
#define FL__POOL_MAX_WORKERS  65536u      /* more is a bad option (-EINVAL) */
#define FL__POOL_CHECK_NS     100000000LL /* waitpid(WNOHANG) every worker at least this often (100 ms) */
#define FL__POOL_LABEL_MAX    128         /* labels are cut (at a UTF-8 boundary) to this many bytes in records */
#define FL__POOL_FD_SPARE     16          /* descriptors below RLIMIT_NOFILE that a second worker's pipe leaves */
#define FL__POOL_FOREVER_S    1e9         /* seconds (about 31 years): a longer timeout_s is cut to this */

/* Shared: the task counter and the parent's sleep flag, on separate cache lines. */
struct fl__pool_head {
    _Alignas(64) atomic_size_t next;
    _Alignas(64) atomic_int sleeping;
};

/* Shared, one per worker slot; a slot is reused only after its worker has been reaped. */
struct fl__pool_slot {
    _Alignas(64) atomic_size_t task;
    atomic_size_t done; /* tasks the worker finished: an idle worker whose count moves is not stuck */
    atomic_int phase;
    atomic_int exit_unknown; /* the worker's task called exit() and its status cannot be known (no on_exit()) */
    atomic_int watched;      /* the parent has tried to open the worker's process descriptor: it may start */
};

/* Shared, one per task. Plain fields are written before the release store of phase (or of slot.task) that
 * publishes them, and read after the matching acquire load. */
struct fl__pool_res {
    atomic_int phase;
    int code;
    pid_t worker;
    int status; /* enum forklog_task_status, set by the parent when it records */
    int signal; /* set by the parent */
    int64_t start_mono;
    int64_t start_real; /* ns since the epoch */
    int64_t dur_ns;
};

/* Parent-private view of one worker slot. */
struct fl__pool_proc {
    pid_t pid;          /* 0: the slot is free */
    int fd;             /* read end of the worker's death pipe; -1 once it reported EOF */
    int pidfd;          /* a process descriptor of the worker (fl__pool_pidfd_open), or -1 */
    int pidfd_polled;   /* its pidfd is polled: cleared if it reports readable while the worker is not reapable */
    int reaped;         /* ended and waited for: its pid may be another process's (fl__pool_cancelled) */
    int dying;          /* SIGKILLed by the parent, not reaped yet */
    size_t killed_task; /* the task claimed as timed out, or SIZE_MAX */
    int64_t fork_ns;
    int64_t idle_ns; /* when the parent first saw the worker idle with `idle_done` tasks done; 0: not idle */
    size_t idle_done;
    int64_t hup_ns; /* when its pipe reported EOF while the process was not reapable yet; 0 otherwise */
};

struct fl__pool {
    const struct forklog_pool_options *o;
    forklog_task_fn task;
    void *ctx;
    size_t ntasks;
    unsigned nworkers, nslots;
    void *map;
    size_t map_len;
    struct fl__pool_head *head;
    struct fl__pool_slot *slots;
    struct fl__pool_res *res;
    struct fl__pool_proc *procs;
    struct pollfd *pfd;
    unsigned *pfd_slot;
    int wake_rd, wake_wr;
    dev_t wake_dev;
    ino_t wake_ino;
    pid_t parent;
    int fd_limit;       /* RLIMIT_NOFILE (soft) when the call started */
    int exit_handler;   /* the worker's exit handler was registered by the parent (glibc: fl__pool_exit_handler) */
    int exit_lock_free; /* no other thread can hold glibc's exit handler lock at a fork (fl__pool_exit_lock_free) */
    int64_t timeout_ns; /* 0: none */
    enum forklog_level level;
    size_t mid;   /* every task below mid has been looked at by fl__pool_collect */
    size_t *pend; /* tasks below mid not recorded yet */
    size_t npend, cap_pend;
    size_t *logq; /* recorded tasks whose record waits for the log's lock (see fl__pool_log_free) */
    size_t nlogq, cap_logq;
    unsigned nlive;   /* slots with a process (dying ones included) */
    unsigned nactive; /* live and not being killed */
    unsigned init_failures, max_init_failures;
    int stop;       /* no more forks */
    int stop_err;   /* the negative errno that stopped the pool, 0 if none */
    int fork_retry; /* a fork failed with workers alive: retry after the next reap */
    int64_t last_check;
    size_t workers_started;
    int result; /* what the call returns */
};

static int64_t fl__pool_real_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static const char *fl__pool_status_name(int status)
{
    switch (status) {
    case FORKLOG_TASK_OK: return "ok";
    case FORKLOG_TASK_FAILED: return "failed";
    case FORKLOG_TASK_CRASHED: return "crashed";
    case FORKLOG_TASK_TIMEOUT: return "timeout";
    default: return "not_run";
    }
}

/* ---- the worker ------------------------------------------------------------------------------------------ */

static _Noreturn void fl__pool_worker_exit(struct fl__pool *p, int code)
{
    if (p->o->log)
        (void)forklog_flush(p->o->log);
    _exit(code);
}

/* The pid of the worker this process is, 0 in the caller. A process that a task forks inherits the exit handler
 * below, which is a no-op there: fork() clears this (fl__pool_atfork_child), and the pid check covers a process made
 * without fork handlers (_Fork(), a raw clone), unless one made so after the worker has ended gets its pid. */
static pid_t fl__pool_self;

#ifdef __GLIBC__
/* Whether the worker this process is (fl__pool_self) has the handler below registered, and whether its copy of
 * glibc's exit handler lock is sure to be free (see fl__pool_exit_lock_free). */
static int fl__pool_self_handler, fl__pool_self_lock_free;

/* Registered in every worker (see fl__pool_worker): ends the worker at once, with the status given to exit(). */
static void fl__pool_on_exit(int status, void *arg)
{
    (void)arg;
    if (getpid() == fl__pool_self)
        _exit(status);
}
#else
/* Without on_exit() the status given to exit() is out of reach: the slot says so, and the parent records the
 * task with code -1, as when the caller reaps the worker itself. */
static atomic_int *fl__pool_self_exit;
static void fl__pool_at_exit(void)
{
    if (getpid() == fl__pool_self) {
        atomic_store(fl__pool_self_exit, 1);
        _exit(1);
    }
}
#endif

/* Set in a process forked from a worker (a fork handler the worker registers), so that a task's child that
 * returns from the task is caught without a system call per task. */
static volatile sig_atomic_t fl__pool_forked;
static int fl__pool_atfork_done; /* the registration is inherited: once per process tree is enough */

static void fl__pool_atfork_child(void)
{
    fl__pool_forked = 1;
    /* Not a worker, whatever pid it has or gets: once the worker has ended, a process that this one forks may get
     * the worker's pid, and its exit() must run its handlers and flush its stdio as anywhere else. */
    fl__pool_self = 0;
}

/* A task (or initializer) that forks and whose child returns instead of exiting would bring the child back into
 * the worker's loop: it would take tasks and race the worker for its slot, or park in pause() for ever. A child
 * ends here instead, with the low byte of the task's return value. fork() runs the handler above; a child made
 * without fork handlers (_Fork(), a raw clone) is found by its pid, checked only after a task that took at least
 * FL__POOL_PID_CHECK_NS (10 us): a fork takes longer than that (40 us at least for a tiny static program on a
 * 2-vCPU VM), and getpid() (0.2 us there) on every tiny task would double its cost. */
#define FL__POOL_PID_CHECK_NS 10000
static void fl__pool_not_a_worker(pid_t me, int rc, int64_t dur_ns)
{
    if (fl__pool_forked || (dur_ns >= FL__POOL_PID_CHECK_NS && getpid() != me))
        _exit(rc & 0xff);
}

/* The parent claimed this worker's task or initializer (timeout) and is about to SIGKILL it. */
static _Noreturn void fl__pool_park(void)
{
    for (;;)
        pause();
}

static void fl__pool_wake(struct fl__pool *p)
{
    /* Only if the descriptor is still the pool's pipe: a task may have closed it and reused the number. */
    struct stat st;
    if (fstat(p->wake_wr, &st) == 0 && st.st_ino == p->wake_ino && st.st_dev == p->wake_dev) {
        ssize_t n = write(p->wake_wr, "w", 1);
        (void)n; /* full (already awake) or failed: the parent's periodic check covers it */
    }
}

/* Registers the worker's exit handler in the parent, before any fork, so that every worker inherits it (glibc).
 * Registered in the worker instead, it would take glibc's lock of the exit handler list, which fork() does not
 * take (musl's does): a worker forked while another thread of the caller held it, registering a handler of its
 * own (atexit(), a C++ static's destructor), would wait for ever for a lock that no thread of the worker holds,
 * before its initializer. In the caller, and in any process that is not a worker, the handler does nothing
 * (fl__pool_self). It is registered once per call, after every handler the caller registered before the call,
 * so it still runs before those in a worker; glibc keeps each registration (32 bytes) until the process ends. */
static int fl__pool_exit_handler(void)
{
#ifdef __GLIBC__
    /* Called in a worker (a task that runs a pool of its own) forked while another thread could hold that same lock,
     * on_exit() could wait for ever for it, copied held from the fork, before forking anything. The worker's own
     * handler is already registered, and the workers it forks inherit it: it ends them as well (fl__pool_self). */
    if (fl__pool_self == getpid() && fl__pool_self_handler && !fl__pool_self_lock_free)
        return 1;
    return on_exit(fl__pool_on_exit, NULL) == 0;
#else
    return 0;
#endif
}

/* Whether the workers forked by this call get glibc's exit handler lock free for sure: the calling process has never
 * had another thread (__libc_single_threaded, glibc 2.32), and, if it is a worker itself, got it free in turn. Without
 * __libc_single_threaded the answer is no. */
static int fl__pool_exit_lock_free(void)
{
#if defined(__GLIBC__) && defined(FL__POOL_SINGLE_THREADED)
    return FL__POOL_SINGLE_THREADED() && (fl__pool_self != getpid() || fl__pool_self_lock_free);
#else
    return 0;
#endif
}

/* The cleanup of fl__pool_worker, which never returns: reached only when the stack unwinds out of it, because the
 * task or the initializer called pthread_exit() or threw a C++ exception that nothing below caught (one that a
 * catch of the caller's, above forklog_pool_map(), would catch; with no catch at all, std::terminate() aborts the
 * worker first). Past this frame the worker would run the parent's cleanup of a cancelled call (killing the
 * parent's other workers) or the caller's own code after the call. It ends here instead, as a crash with exit
 * status FL__POOL_EXIT_UNWOUND. Needs the library compiled with -fexceptions (CMakeLists.txt), without which
 * unwinding skips the cleanups of C frames. A process that the task forked and that unwinds ends here too. */
static void fl__pool_unwound(int *unused)
{
    (void)unused;
    _exit(FL__POOL_EXIT_UNWOUND);
}

/* poll() of one descriptor without waiting: the events it has now (revents), 0 for none, -1 for an error. Even with no
 * wait, poll() fails with EINTR when a signal is pending, which says nothing of the descriptor: it is asked again. */
static int fl__poll_now(int fd, short events, short *revents)
{
    struct pollfd pfd = {fd, events, 0};
    int n;
    while ((n = poll(&pfd, 1, 0)) < 0 && errno == EINTR) {
    }
    *revents = pfd.revents;
    return n;
}

#ifndef __GLIBC__
/* musl's pthread_exit() does not unwind the stack, so fl__pool_unwound is not run: it runs the handlers that
 * pthread_cleanup_push() registered, newest first. The worker's copy of that list holds the caller's cleanup of a
 * cancelled call (fl__pool_cancelled, pushed before the fork), which killed the worker's siblings and unmapped the
 * pool's memory, after which its exit handler crashed with SIGSEGV; and with another thread alive, the worker was
 * left running without its task loop for as long as that thread lived. This handler, pushed in the worker, runs
 * before it (after the task's own) and ends the worker as fl__pool_unwound does. */
static void fl__pool_thread_exited(void *unused)
{
    (void)unused;
    _exit(FL__POOL_EXIT_UNWOUND);
}
#endif

#ifdef __linux__
/* Whether the parent has ended. getppid() tells, but only while the parent is in the worker's PID namespace: a
 * caller that has moved its children into a new one (unshare(CLONE_NEWPID)) is not, and getppid() is 0 in the
 * worker while the parent lives and, after its death, as long as the new parent (a reaper of the caller's own
 * namespace) is outside as well. Then the worker's pipe tells: once no read end of it is left, its write end
 * polls POLLERR. The parent holds the read end until it has reaped the worker. Other copies only delay the answer:
 * a sibling forked after this worker holds one until its own start closes it (microseconds), and a process that
 * another thread of the caller forks meanwhile (a worker of another pool, say) until it ends or executes a program
 * (the pipe is close-on-exec). Only a parent that died before the prctl() below is left to this check. */
static int fl__pool_orphan(const struct fl__pool *p, int death_wr)
{
    pid_t pp = getppid();
    if (pp == p->parent)
        return 0;
    if (pp != 0)
        return 1; /* another process has taken the worker over */
    short ev;
    return fl__poll_now(death_wr, 0, &ev) == 1 && (ev & POLLERR);
}
#endif

/* The kernel clears a process's parent-death signal when its effective user or group (or its file system user or
 * group) changes: an initializer or a task that drops privileges, as pre-fork servers do, would leave its worker
 * running after the parent is killed, hanging for ever in a task or draining the queue for nobody. Set again where
 * it was cleared, then the same check as at the start, since the parent may have died meanwhile. One prctl() when
 * nothing changed. */
static void fl__pool_rearm(const struct fl__pool *p, int death_wr)
{
#ifdef __linux__
    int sig = 0;
    if (prctl(PR_GET_PDEATHSIG, &sig) == 0 && sig == SIGKILL)
        return;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (fl__pool_orphan(p, death_wr))
        _exit(FL__POOL_EXIT_INIT);
#else
    (void)p, (void)death_wr;
#endif
}

static _Noreturn void fl__pool_worker(struct fl__pool *p, unsigned k, int death_wr)
{
    __attribute__((cleanup(fl__pool_unwound))) int unwound = 0;
    (void)unwound;
    struct fl__pool_slot *slot = &p->slots[k];
    /* The inherited pool descriptors other than our own pipe's write end and the wake write end: the read ends
     * and the other workers' pipes (whose write ends the parent has already closed). */
    close(p->wake_rd);
    for (unsigned j = 0; j < p->nslots; j++) {
        if (p->procs[j].pid && p->procs[j].fd >= 0)
            close(p->procs[j].fd);
        if (p->procs[j].pid && p->procs[j].pidfd >= 0)
            close(p->procs[j].pidfd);
    }
    /* death_wr is held open until exit: its EOF tells the parent we are gone */
#ifdef __linux__
    /* Nothing left running if the parent dies; the check closes the race with a death before the prctl. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (fl__pool_orphan(p, death_wr))
        _exit(FL__POOL_EXIT_INIT);
#endif
    /* Nothing that can end the worker before the parent has its process descriptor (fl__pool_pidfd_open): a worker
     * reaped by the caller before that would be known by its pid only. The parent opens it right after fork(). */
    while (!atomic_load_explicit(&slot->watched, memory_order_acquire)) {
        sched_yield();
#ifdef __linux__
        if (fl__pool_orphan(p, death_wr))
            _exit(FL__POOL_EXIT_INIT);
#else
        if (getppid() != p->parent)
            _exit(FL__POOL_EXIT_INIT);
#endif
    }
    pid_t me = getpid();
    /* A task (or the initializer) that calls exit() would run, in the worker, the exit handlers and stdio
     * flushes it inherited from the caller: a caller's cleanup that removes its pid file or socket, output the
     * caller still had buffered written a second time. A handler registered after those (now, or with glibc by
     * the parent just before its forks: fl__pool_exit_handler) runs before them (they run in the reverse order of
     * registration) and ends the worker with _exit() instead; handlers that the task registers itself still run
     * first, as they should. If the registration fails, exit() stays as it was. musl's fork() takes the lock of
     * its exit handler list, so a worker may register there. */
    fl__pool_self = me;
    fl__pool_forked = 0; /* inherited as 1 by a worker of a pool that a task runs */
    if (!fl__pool_atfork_done && pthread_atfork(NULL, NULL, fl__pool_atfork_child) == 0)
        fl__pool_atfork_done = 1;
#ifdef __GLIBC__
    /* the parent could not: see fl__pool_exit_handler */
    fl__pool_self_handler = p->exit_handler || on_exit(fl__pool_on_exit, NULL) == 0;
    fl__pool_self_lock_free = p->exit_lock_free;
#else
    fl__pool_self_exit = &slot->exit_unknown;
    (void)atexit(fl__pool_at_exit);
#endif
#ifndef __GLIBC__
    pthread_cleanup_push(fl__pool_thread_exited, NULL);
#endif
    int irc = p->o->init ? p->o->init(p->o->init_arg) : 0;
    fl__pool_not_a_worker(me, irc, FL__POOL_PID_CHECK_NS); /* once per worker: always by its pid */
    fl__pool_rearm(p, death_wr);
    if (irc != 0) {
        atomic_store(&slot->phase, FL__POOL_INIT_FAILED);
        fl__pool_worker_exit(p, FL__POOL_EXIT_INIT);
    }
    int expect = FL__POOL_STARTING;
    if (!atomic_compare_exchange_strong(&slot->phase, &expect, FL__POOL_READY))
        fl__pool_park();

    const unsigned max = p->o->max_tasks_per_worker;
    unsigned done = 0;
    while (!max || done < max) {
        size_t i = atomic_fetch_add_explicit(&p->head->next, 1, memory_order_relaxed);
        if (i >= p->ntasks)
            break;
        struct fl__pool_res *r = &p->res[i];
        r->worker = me;
        r->start_real = fl__pool_real_ns();
        r->start_mono = fl__mono_ns();
        atomic_store_explicit(&r->phase, FL__POOL_RUNNING, memory_order_relaxed);
        size_t idle = 0;
        if (!atomic_compare_exchange_strong_explicit(&slot->task, &idle, i + 1, memory_order_release,
                                                     memory_order_relaxed))
            fl__pool_park(); /* idle past timeout_s: the parent is killing this worker; task i is not run */

        int rc = p->task(i, p->ctx);
        int64_t dur = fl__mono_ns() - r->start_mono;
        fl__pool_not_a_worker(me, rc, dur); /* before a child could publish anything */

        r->dur_ns = dur;
        r->code = rc;
        atomic_store(&r->phase, FL__POOL_FINISHED);
        /* The count first: a slot seen idle has the count of the task that made it so. */
        atomic_store(&slot->done, ++done);
        size_t cur = i + 1;
        if (!atomic_compare_exchange_strong(&slot->task, &cur, 0))
            fl__pool_park(); /* timed out at the deadline: the parent records the result published above */
        /* Only after a task of 10 us or more, as for the pid check: a system call per tiny task would double its
         * cost. A user change takes less than a microsecond once warm, so a tiny task that changes it leaves the
         * worker without its parent-death signal until a longer task ends (docs/pool.md: do it in the initializer). */
        if (dur >= FL__POOL_PID_CHECK_NS)
            fl__pool_rearm(p, death_wr);
        if (atomic_load(&p->head->sleeping) && atomic_exchange(&p->head->sleeping, 0))
            fl__pool_wake(p);
    }
#ifndef __GLIBC__
    pthread_cleanup_pop(0);
#endif
    fl__pool_worker_exit(p, 0);
}

/* ---- the parent: records ----------------------------------------------------------------------------------- */

/* Copies label into buf, cut to FL__POOL_LABEL_MAX bytes at a UTF-8 boundary. */
static const char *fl__pool_label(struct fl__pool *p, size_t i, char *buf)
{
    if (!p->o->label)
        return NULL;
    const char *l = p->o->label(i, p->ctx);
    if (!l)
        return NULL;
    size_t n = strlen(l);
    if (n <= FL__POOL_LABEL_MAX)
        return l;
    /* A character is at most 4 bytes: if the byte at the cut is a continuation byte, its lead byte is at most 3
     * bytes back. A longer run of continuation bytes is not UTF-8, and backing up over it all would cut the label
     * to nothing: it is cut at the limit instead. */
    n = FL__POOL_LABEL_MAX;
    size_t k = n;
    while (k > n - 3 && ((unsigned char)l[k] & 0xC0) == 0x80)
        k--;
    if (((unsigned char)l[k] & 0xC0) != 0x80)
        n = k;
    memcpy(buf, l, n);
    buf[n] = '\0';
    return buf;
}

static void fl__pool_log_record(struct fl__pool *p, size_t i);

/* Doubles the array *v of *cap indexes (64 at first). Returns 0 or -ENOMEM. */
static int fl__pool_grow(size_t **v, size_t *cap)
{
    size_t n = *cap ? *cap * 2 : 64;
    size_t *nv = realloc(*v, n * sizeof *nv);
    if (!nv)
        return -ENOMEM;
    *v = nv;
    *cap = n;
    return 0;
}

/* Whether the parent may write a record now without waiting for the log's lock behind a worker. A task holds the
 * lock while it logs, and a worker stopped there (SIGSTOP, a debugger) holds it for as long as it stays stopped:
 * a parent that waited for the lock would never reach the deadline that kills that worker, timeout_s or not. So
 * with timeout_s the parent writes a record only after it found the lock free (taking it once, which also
 * repairs what a killed holder left); otherwise the record waits in p->logq and the parent goes on supervising.
 * A worker may still take the lock in the microseconds between this look and the write, and be stopped right
 * there: that is left. Without timeout_s, a stopped worker keeps the pool waiting anyway. A log that is not a regular
 * file must also have room for a record (below). */
static int fl__pool_log_free(struct fl__pool *p)
{
    if (!p->timeout_ns || p->nlive == 0)
        return 1;
    /* Marked inside a call like a record's, for as long as it may hold the lock: a signal handler that interrupts
     * it and writes to the log is refused with -EDEADLK instead of waiting for ever for this thread's lock. Already
     * marked (the map called by such a handler): the record's own call will be refused, with no wait. */
    struct fl__mine *my = fl__enter(p->o->log);
    if (!my)
        return 1;
    int rc = fl__trylock(p->o->log);
    if (rc == EBUSY)
        rc = fl__lock_yield(p->o->log, NULL); /* held for a record's write (microseconds), as a rule */
    if (rc == 0)
        fl__unlock(p->o->log);
    fl__leave(my);
    if (rc == EBUSY)
        return 0;
    /* A log that is not a regular file (a FIFO, a pipe, a socket, a device) takes no more bytes for as long as its
     * reader does not read: the write would wait for that reader, and no deadline would be kept meanwhile. The
     * record waits until the target has room for one (POLLOUT: a free page of a pipe, more than a record). */
    if (!atomic_load_explicit(&p->o->log->seg->regular, memory_order_relaxed)) {
        short ev;
        if (fl__poll_now(p->o->log->fd, POLLOUT, &ev) == 0)
            return 0;
    }
    return 1; /* free, or an error that the write itself will meet and report */
}

/* Writes the records waiting in p->logq, in order, while the log's lock is found free (every one when `all`). */
static void fl__pool_log_queued(struct fl__pool *p, int all)
{
    size_t k = 0;
    while (k < p->nlogq && (all || fl__pool_log_free(p)))
        fl__pool_log_record(p, p->logq[k++]);
    if (k) {
        memmove(p->logq, p->logq + k, (p->nlogq - k) * sizeof *p->logq);
        p->nlogq -= k;
    }
}

static void fl__pool_record(struct fl__pool *p, size_t i, int status, int code, int sig, pid_t worker, int64_t dur_ns)
{
    struct fl__pool_res *r = &p->res[i];
    r->status = status;
    r->code = code;
    r->signal = sig;
    r->worker = worker;
    r->dur_ns = dur_ns;
    atomic_store_explicit(&r->phase, FL__POOL_RECORDED, memory_order_relaxed);
    if (p->o->results) {
        struct forklog_task_result *out = &p->o->results[i];
        out->status = (enum forklog_task_status)status;
        out->code = code;
        out->signal = sig;
        out->worker = worker;
        out->start = status == FORKLOG_TASK_NOT_RUN ? 0 : (double)r->start_real / 1e9;
        out->duration_s = (double)dur_ns / 1e9;
    }
    if (!p->o->log)
        return;
    if (p->nlogq || !fl__pool_log_free(p)) {
        if (p->nlogq < p->cap_logq || fl__pool_grow(&p->logq, &p->cap_logq) == 0) {
            p->logq[p->nlogq++] = i;
            return;
        }
        /* No memory to keep it for later: written now, as before the queue (and in its place in the order). */
        fl__pool_log_queued(p, 1);
    }
    fl__pool_log_record(p, i);
}

/* Writes the record of task i from its recorded result. */
static void fl__pool_log_record(struct fl__pool *p, size_t i)
{
    const struct fl__pool_res *r = &p->res[i];
    int status = r->status;
    char lbuf[FL__POOL_LABEL_MAX + 1];
    struct forklog_field f[8];
    size_t n = 0;
    f[n++] = FORKLOG_UINT("task", i);
    f[n++] = FORKLOG_STR("status", fl__pool_status_name(status));
    f[n++] = FORKLOG_DUR_NS("cost", r->dur_ns);
    f[n++] = FORKLOG_INT("worker", r->worker);
    f[n++] = FORKLOG_INT("code", r->code);
    f[n++] = FORKLOG_INT("signal", r->signal);
    if (status != FORKLOG_TASK_NOT_RUN) {
        struct timespec start = {(time_t)(r->start_real / 1000000000), (long)(r->start_real % 1000000000)};
        f[n++] = FORKLOG_TIMESPEC("start", start);
    }
    const char *label = fl__pool_label(p, i, lbuf);
    if (label)
        f[n++] = FORKLOG_STR("label", label);
    enum forklog_level lvl = p->level;
    if (status != FORKLOG_TASK_OK && lvl < FORKLOG_WARN)
        lvl = FORKLOG_WARN;
    (void)forklog_log_fields(p->o->log, lvl, "task", f, n); /* a failing log does not stop the pool */
}

/* Records a task its worker finished (phase FINISHED, acquired). */
static void fl__pool_record_finished(struct fl__pool *p, size_t i)
{
    struct fl__pool_res *r = &p->res[i];
    fl__pool_record(p, i, r->code == 0 ? FORKLOG_TASK_OK : FORKLOG_TASK_FAILED, r->code, 0, r->worker, r->dur_ns);
}

static int fl__pool_pend_add(struct fl__pool *p, size_t i)
{
    if (p->npend == p->cap_pend) {
        size_t cap = p->cap_pend ? p->cap_pend * 2 : 64;
        size_t *np = realloc(p->pend, cap * sizeof *np);
        if (!np)
            return -ENOMEM;
        p->pend = np;
        p->cap_pend = cap;
    }
    p->pend[p->npend++] = i;
    return 0;
}

/* Records every task finished since the last call. Returns how many. Cost: the tasks taken since the last call
 * plus the few still running (at most one per worker, plus any whose worker died before publishing). */
static size_t fl__pool_collect(struct fl__pool *p)
{
    size_t got = 0, keep = 0;
    for (size_t k = 0; k < p->npend; k++) {
        size_t i = p->pend[k];
        int ph = atomic_load_explicit(&p->res[i].phase, memory_order_acquire);
        if (ph == FL__POOL_FINISHED) {
            fl__pool_record_finished(p, i);
            got++;
        } else if (ph != FL__POOL_RECORDED) {
            p->pend[keep++] = i;
        }
    }
    p->npend = keep;
    size_t hi = atomic_load_explicit(&p->head->next, memory_order_relaxed);
    if (hi > p->ntasks)
        hi = p->ntasks;
    for (; p->mid < hi; p->mid++) {
        size_t i = p->mid;
        int ph = atomic_load_explicit(&p->res[i].phase, memory_order_acquire);
        if (ph == FL__POOL_FINISHED) {
            fl__pool_record_finished(p, i);
            got++;
        } else if (ph != FL__POOL_RECORDED && fl__pool_pend_add(p, i) < 0) {
            break; /* out of memory: look at it again next time */
        }
    }
    return got;
}

/* ---- the parent: workers ----------------------------------------------------------------------------------- */

/* A worker is waited for and killed through a process descriptor where the kernel has them (pidfd_open(), Linux
 * 5.3; waitid(P_PIDFD), 5.4): a pid names the worker only until it is reaped, and a caller that ignores SIGCHLD
 * or reaps in its own handler takes it at its end, after which the pid may be another process's (a child of the
 * caller's own, which waitpid(pid) would not tell from the worker, and which a kill at the deadline would hit).
 * The descriptor names the worker for as long as it is open. Opened right after the fork, when the worker cannot
 * have been reaped yet: it waits for it before anything else (slot.watched). Without one
 * (an older kernel, no descriptor left) the worker is waited for and killed by its pid. */
#define FL__P_PIDFD ((idtype_t)3) /* P_PIDFD, in <linux/wait.h> and glibc 2.36's <sys/wait.h> only */
#if defined(__linux__) && !defined(__alpha__)
/* Numbers every architecture shares for system calls added since Linux 5.1 (alpha's are 110 higher); C libraries
 * whose headers predate them (musl 1.2.3) do not name them. An older kernel answers ENOSYS: then by pid. */
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#endif

/* A process descriptor of worker `pid` (close-on-exec, as a pidfd always is), or -1. Nothing here is a
 * cancellation point: the worker waits for it (slot.watched). */
static int fl__pool_pidfd_open(pid_t pid)
{
#if defined(__linux__) && defined(SYS_pidfd_open)
    return (int)syscall(SYS_pidfd_open, pid, 0);
#else
    (void)pid;
    return -1;
#endif
}

static void fl__pool_kill(const struct fl__pool_proc *w)
{
#if defined(__linux__) && defined(SYS_pidfd_send_signal)
    if (w->pidfd >= 0 && syscall(SYS_pidfd_send_signal, w->pidfd, SIGKILL, NULL, 0) == 0)
        return;
    if (w->pidfd >= 0 && errno == ESRCH)
        return; /* it has ended (a zombie, or reaped by the caller): nothing to kill, and its pid is not it */
#endif
    kill(w->pid, SIGKILL);
}

/* Forks a worker into free slot k. Returns 0 or a negative errno. */
static int fl__pool_spawn_now(struct fl__pool *p, unsigned k)
{
    int fds[2];
    if (fl__pool_make_pipe(fds, O_CLOEXEC) < 0)
        return -errno;
    /* Descriptors are handed out lowest first, so a pipe end this close to the limit means that fewer than
     * FL__POOL_FD_SPARE are left. While other workers run, the pool gives the pipe back and goes on with the
     * workers it has, rather than leave the caller's other threads, and the log (which opens a file when it
     * rotates or reopens), without a descriptor. The first worker may take any: without it nothing runs. */
    if (p->nactive > 0 && (fds[0] > fds[1] ? fds[0] : fds[1]) >= p->fd_limit - FL__POOL_FD_SPARE) {
        close(fds[0]);
        close(fds[1]);
        return -EMFILE;
    }
    atomic_store(&p->slots[k].task, 0);
    atomic_store(&p->slots[k].done, 0);
    atomic_store(&p->slots[k].phase, FL__POOL_STARTING);
    atomic_store(&p->slots[k].exit_unknown, 0);
    atomic_store(&p->slots[k].watched, 0);
    pid_t pid = fork();
    if (pid < 0) {
        int err = -errno;
        close(fds[0]);
        close(fds[1]);
        return err;
    }
    if (pid == 0) {
        close(fds[0]);
        fl__pool_worker(p, k, fds[1]);
    }
    int pidfd = fl__pool_pidfd_open(pid);
    atomic_store_explicit(&p->slots[k].watched, 1, memory_order_release);
    close(fds[1]);
    struct fl__pool_proc *w = &p->procs[k];
    w->pid = pid;
    w->reaped = 0;
    w->fd = fds[0];
    /* Above 2, as the pool's pipes are (fl__pool_make_pipe). */
    w->pidfd = pidfd >= 0 ? fl__fd_above_stdio(pidfd) : -1;
    if (w->pidfd < 0)
        w->pidfd = -1;
    w->pidfd_polled = 1;
    w->dying = 0;
    w->killed_task = SIZE_MAX;
    w->fork_ns = fl__mono_ns();
    w->idle_ns = 0;
    w->hup_ns = 0;
    p->nlive++;
    p->nactive++;
    p->workers_started++;
    return 0;
}

/* fl__pool_spawn_now, not cancellable (fl__nocancel): cancelled at a close() between the fork and the slot's
 * bookkeeping, the worker would be left running, unknown to fl__pool_cancelled. */
static int fl__pool_spawn(struct fl__pool *p, unsigned k)
{
    const int cancel = fl__nocancel();
    int rc = fl__pool_spawn_now(p, k);
    fl__cancel_back(cancel);
    return rc;
}

/* Forks workers until there are nworkers (or no task is left to take). */
static void fl__pool_fill(struct fl__pool *p)
{
    while (!p->stop && !p->fork_retry && p->nactive < p->nworkers &&
           atomic_load_explicit(&p->head->next, memory_order_relaxed) < p->ntasks) {
        unsigned k = 0;
        while (k < p->nslots && p->procs[k].pid)
            k++;
        if (k == p->nslots)
            return; /* every slot holds a worker being killed: fork once one is reaped */
        int rc = fl__pool_spawn(p, k);
        if (rc < 0) {
            /* A worker being killed still holds its pipe and counts as a process (RLIMIT_NOFILE, RLIMIT_NPROC,
             * pids.max) until it is reaped, which frees what the fork lacked: the pool stops only when no worker
             * process is left at all, and otherwise forks again after the next reap. */
            if (p->nlive == 0) {
                p->stop = 1;
                p->stop_err = rc;
            } else {
                p->fork_retry = 1;
            }
            return;
        }
    }
}

/* Worker k has ended: `st` is its wait status when `known`. Records the task it was running, if any. */
static void fl__pool_ended(struct fl__pool *p, unsigned k, int st, int known)
{
    struct fl__pool_proc *w = &p->procs[k];
    struct fl__pool_slot *slot = &p->slots[k];
    size_t t = atomic_load(&slot->task);
    size_t ti = t == FL__POOL_KILLED ? w->killed_task : t ? t - 1 : SIZE_MAX;
    if (atomic_load(&slot->exit_unknown))
        known = 0;
    if (ti != SIZE_MAX) {
        struct fl__pool_res *r = &p->res[ti];
        int ph = atomic_load(&r->phase);
        if (ph == FL__POOL_FINISHED) {
            fl__pool_record_finished(p, ti); /* it finished; it died (or was killed) just after */
        } else if (ph != FL__POOL_RECORDED) {
            int sig = known && WIFSIGNALED(st) ? WTERMSIG(st) : 0;
            int code = !known ? -1 : WIFEXITED(st) ? WEXITSTATUS(st) : 0;
            int64_t dur = fl__mono_ns() - r->start_mono;
            /* A timed-out worker ended by the parent's own SIGKILL: say so even when the caller's SIGCHLD
             * handler (or SIG_IGN) took the wait status first. */
            if (t == FL__POOL_KILLED)
                fl__pool_record(p, ti, FORKLOG_TASK_TIMEOUT, 0, known ? sig : SIGKILL, w->pid, dur);
            else
                fl__pool_record(p, ti, FORKLOG_TASK_CRASHED, code, sig, w->pid, dur);
        }
    } else if (atomic_load(&slot->phase) != FL__POOL_READY) {
        /* Failed, crashed or hung in its initializer: no task was taken. */
        if (++p->init_failures > p->max_init_failures && !p->stop) {
            p->stop = 1;
            p->stop_err = -ECHILD;
        }
    }
    if (w->fd >= 0)
        close(w->fd);
    w->fd = -1;
    if (w->pidfd >= 0)
        close(w->pidfd);
    w->pidfd = -1;
    if (!w->dying)
        p->nactive--;
    p->nlive--;
    w->pid = 0;
    p->fork_retry = 0;
}

/* Whether a wait's report (siginfo_t.si_code) is a stop rather than an end. A worker whose task called
 * ptrace(PTRACE_TRACEME) is traced by the thread that forked it, and wait reports every stop of a traced child,
 * WEXITED alone or not: a signal that would have ended it (a crash), or any other, stops it there instead, and
 * nothing continues it. It has not ended: it is a stopped task, killed at its deadline and reaped then. */
static int fl__pool_stop_code(int code)
{
    return code == CLD_TRAPPED || code == CLD_STOPPED || code == CLD_CONTINUED;
}

/* waitpid(WNOHANG) on worker k, through its process descriptor when it has one (fl__pool_pidfd_open). Returns 1 if
 * it has ended (and was handled). */
static int fl__pool_try_reap(struct fl__pool *p, unsigned k)
{
    struct fl__pool_proc *w = &p->procs[k];
    int st = 0, r;
    if (w->pidfd >= 0) {
        siginfo_t si;
        memset(&si, 0, sizeof si);
        do
            r = waitid(FL__P_PIDFD, (id_t)w->pidfd, &si, WEXITED | WNOHANG);
        while (r < 0 && errno == EINTR);
        if (r == 0 && si.si_pid == 0)
            return 0; /* running */
        if (r == 0 && fl__pool_stop_code(si.si_code))
            return 0; /* stopped under this thread's trace (see fl__pool_stop_code): not an end */
        if (r == 0 || errno == ECHILD) {
            w->reaped = 1;
            /* As a wait status: an exit code in bits 8..15, or the signal (0x80: a core dump). */
            if (r == 0)
                st = si.si_code == CLD_EXITED ? (si.si_status & 0xff) << 8
                                              : (si.si_status & 0x7f) | (si.si_code == CLD_DUMPED ? 0x80 : 0);
            fl__pool_ended(p, k, st, r == 0);
            return 1;
        }
        close(w->pidfd); /* a kernel without waitid(P_PIDFD) (before 5.4): by pid from now on */
        w->pidfd = -1;
    }
    pid_t pr;
    do
        pr = waitpid(w->pid, &st, WNOHANG);
    while (pr < 0 && errno == EINTR);
    if (pr == 0 || (pr > 0 && WIFSTOPPED(st)))
        return 0;
    w->reaped = 1;
    /* ECHILD: the caller ignores SIGCHLD (auto-reap) or reaped it itself: it has ended, status unknown. */
    fl__pool_ended(p, k, st, pr > 0);
    return 1;
}

/* Claims timed-out tasks (and initializers) and kills their workers. Returns the nearest deadline, or
 * INT64_MAX. */
static int64_t fl__pool_timeouts(struct fl__pool *p, int64_t now)
{
    int64_t next = INT64_MAX;
    if (!p->timeout_ns)
        return next;
    for (unsigned k = 0; k < p->nslots; k++) {
        struct fl__pool_proc *w = &p->procs[k];
        struct fl__pool_slot *slot = &p->slots[k];
        if (!w->pid || w->dying)
            continue;
        int64_t start;
        size_t t = atomic_load_explicit(&slot->task, memory_order_acquire);
        int claimed = 0;
        /* Past a deadline the worker is checked first (fl__pool_try_reap): one found ended is handled as such,
         * and one that is not is killed. Through its process descriptor, that is the worker whatever the caller
         * reaps. Without one, by its pid, which names the worker only while it is our unreaped child: a caller
         * that ignores SIGCHLD, or reaps in its handler, may have taken it at its end, and its pid may be
         * another process's by now, which waitpid(WNOHANG) does not tell from the worker if it is a child of the
         * caller's own. */
        if (t != 0)
            w->idle_ns = 0; /* busy: an idle time starts again when next seen idle */
        if (t != 0 && t != FL__POOL_KILLED) {
            start = p->res[t - 1].start_mono;
            if (now - start >= p->timeout_ns && fl__pool_try_reap(p, k))
                continue;
            if (now - start >= p->timeout_ns) {
                claimed = atomic_compare_exchange_strong(&slot->task, &t, FL__POOL_KILLED);
                if (claimed)
                    w->killed_task = t - 1;
            }
        } else if (t == 0 && atomic_load(&slot->phase) == FL__POOL_READY) {
            /* Idle: between two tasks or exiting, which takes microseconds. Idle for timeout_s with no task
             * finished since, the worker is stopped or stuck outside any task, and would keep the pool waiting
             * for ever: it is killed as a task past its deadline would be. */
            size_t done = atomic_load_explicit(&slot->done, memory_order_relaxed);
            if (!w->idle_ns || done != w->idle_done) {
                w->idle_ns = now;
                w->idle_done = done;
            }
            start = w->idle_ns;
            if (now - start >= p->timeout_ns && fl__pool_try_reap(p, k))
                continue;
            if (now - start >= p->timeout_ns && atomic_compare_exchange_strong(&slot->task, &t, FL__POOL_KILLED)) {
                claimed = 1;
                w->killed_task = SIZE_MAX; /* no task: the index it may have taken is found at the end */
            }
        } else if (t == 0 && atomic_load(&slot->phase) == FL__POOL_STARTING) {
            start = w->fork_ns;
            if (now - start >= p->timeout_ns && fl__pool_try_reap(p, k))
                continue;
            if (now - start >= p->timeout_ns) {
                int expect = FL__POOL_STARTING;
                claimed = atomic_compare_exchange_strong(&slot->phase, &expect, FL__POOL_INIT_KILLED);
            }
        } else if (t == 0 && atomic_load(&slot->phase) == FL__POOL_INIT_FAILED) {
            /* Its initializer failed and it is exiting (a flush and _exit(), microseconds). Still there after
             * timeout_s, it is stopped or stuck in its exit, and would keep the pool waiting for ever, as an idle
             * worker would: it is killed. It takes no task any more, so there is nothing to claim. */
            if (!w->idle_ns)
                w->idle_ns = now;
            start = w->idle_ns;
            if (now - start >= p->timeout_ns && fl__pool_try_reap(p, k))
                continue;
            claimed = now - start >= p->timeout_ns;
        } else {
            continue;
        }
        if (claimed) {
            fl__pool_kill(w); /* not reaped by the check above: still our child, but see there */
            w->dying = 1;
            p->nactive--;
        } else if (start + p->timeout_ns < next) {
            next = start + p->timeout_ns;
        }
    }
    return next;
}

/* Sleeps until a completion, a worker's exit, the nearest deadline or the periodic check. */
static void fl__pool_wait(struct fl__pool *p, int64_t deadline)
{
    int64_t now = fl__mono_ns();
    int64_t until = p->last_check + FL__POOL_CHECK_NS;
    if (deadline < until)
        until = deadline;
    nfds_t n = 0;
    p->pfd[n].fd = p->wake_rd;
    p->pfd[n++].events = POLLIN;
    for (unsigned k = 0; k < p->nslots; k++) {
        struct fl__pool_proc *w = &p->procs[k];
        if (!w->pid)
            continue;
        /* A process descriptor is readable once its process has ended, whoever holds the worker's pipe: a
         * grandchild that a task left running keeps the pipe open, and its EOF would come only with that
         * grandchild's end, leaving the worker's end to the periodic check (up to 100 ms late, its slot not
         * replaced meanwhile). The pipe is still polled: it is all a kernel without process descriptors offers. */
        if (w->pidfd >= 0 && w->pidfd_polled) {
            p->pfd_slot[n] = k;
            p->pfd[n].fd = w->pidfd;
            p->pfd[n++].events = POLLIN;
        }
        if (w->fd >= 0) {
            p->pfd_slot[n] = k;
            p->pfd[n].fd = w->fd;
            p->pfd[n++].events = POLLIN;
        } else if (w->hup_ns) {
            /* EOF seen, not reapable yet: exiting (microseconds) or a task closed the pipe (poll slowly). */
            int64_t t = now + (now - w->hup_ns < 10000000 ? 1000000 : 50000000);
            if (t < until)
                until = t;
        }
    }
    if (p->nlogq && now + 1000000 < until)
        until = now + 1000000; /* records wait for the log's lock: look at it again soon */
    int ms = 0;
    if (until > now) {
        int64_t d = (until - now + 999999) / 1000000;
        ms = d > INT_MAX ? INT_MAX : (int)d;
    }
    int rc = poll(p->pfd, n, ms);
    if (rc < 0 && errno != EINTR) {
        /* poll(2) refuses more descriptors than RLIMIT_NOFILE, which another thread may lower during the call
         * (EINVAL), and may lack kernel memory for them (ENOMEM): failing at once, every time, it would make this
         * loop spin. The wake pipe alone is polled then, so a completion still wakes the parent, and with even
         * that refused the call only sleeps; worker ends are found by the periodic check meanwhile. */
        n = 1;
        rc = poll(p->pfd, n, ms);
        if (rc < 0 && errno != EINTR) {
            n = 0;
            rc = poll(p->pfd, n, ms);
        }
    }
    atomic_store(&p->head->sleeping, 0);
    if (rc <= 0)
        return;
    if (p->pfd[0].revents) {
        char buf[64];
        while (read(p->wake_rd, buf, sizeof buf) > 0) {
        }
    }
    for (nfds_t j = 1; j < n; j++) {
        if (!p->pfd[j].revents)
            continue;
        unsigned k = p->pfd_slot[j];
        struct fl__pool_proc *w = &p->procs[k];
        if (!w->pid)
            continue; /* reaped at its other descriptor's entry */
        int is_pidfd = p->pfd[j].fd == w->pidfd;
        if (p->pfd[j].fd != w->fd && !is_pidfd)
            continue; /* that descriptor was closed at its other entry (a kernel without waitid(P_PIDFD)) */
        if (fl__pool_try_reap(p, k))
            continue;
        if (is_pidfd) {
            /* Readable while not reapable (it should not happen): not polled again, the periodic check remains. */
            w->pidfd_polled = 0;
        } else {
            /* EOF (or a stray byte) while the process lives: stop polling its pipe, poll its pid instead. */
            close(w->fd);
            w->fd = -1;
            w->hup_ns = fl__mono_ns();
        }
    }
}

/* ---- the report ------------------------------------------------------------------------------------------- */

static int fl__pool_cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Nearest rank: the smallest value with at least pct % of the values at or below it. */
static double fl__pool_rank(const int64_t *v, size_t n, unsigned pct)
{
    if (!n)
        return 0;
    size_t r = (n * pct + 99) / 100;
    if (r < 1)
        r = 1;
    return (double)v[r - 1] / 1e9;
}

static void fl__pool_report(struct fl__pool *p, struct forklog_pool_report *rep, int64_t wall_ns)
{
    memset(rep, 0, sizeof *rep);
    int64_t *d = malloc((p->ntasks ? p->ntasks : 1) * sizeof *d);
    size_t n = 0;
    double sum = 0;
    for (size_t i = 0; i < p->ntasks; i++) {
        const struct fl__pool_res *r = &p->res[i];
        switch (r->status) {
        case FORKLOG_TASK_OK: rep->ok++; break;
        case FORKLOG_TASK_FAILED: rep->failed++; break;
        case FORKLOG_TASK_CRASHED: rep->crashed++; break;
        case FORKLOG_TASK_TIMEOUT: rep->timed_out++; break;
        default: rep->not_run++; continue;
        }
        sum += (double)r->dur_ns / 1e9;
        if (d)
            d[n++] = r->dur_ns;
    }
    rep->workers_started = p->workers_started;
    rep->wall_s = (double)wall_ns / 1e9;
    rep->tasks_per_s = wall_ns > 0 ? (double)p->ntasks / rep->wall_s : 0;
    size_t ran = p->ntasks - rep->not_run;
    rep->mean_s = ran ? sum / (double)ran : 0;
    if (d && n) {
        qsort(d, n, sizeof *d, fl__pool_cmp_i64);
        rep->min_s = (double)d[0] / 1e9;
        rep->p50_s = fl__pool_rank(d, n, 50);
        rep->p95_s = fl__pool_rank(d, n, 95);
        rep->p99_s = fl__pool_rank(d, n, 99);
        rep->max_s = (double)d[n - 1] / 1e9;
    }
    free(d);
}

static void fl__pool_summary(struct fl__pool *p, const struct forklog_pool_report *rep)
{
    struct forklog_field f[15];
    size_t n = 0;
    f[n++] = FORKLOG_UINT("tasks", p->ntasks);
    f[n++] = FORKLOG_UINT("ok", rep->ok);
    f[n++] = FORKLOG_UINT("failed", rep->failed);
    f[n++] = FORKLOG_UINT("crashed", rep->crashed);
    f[n++] = FORKLOG_UINT("timeout", rep->timed_out);
    f[n++] = FORKLOG_UINT("not_run", rep->not_run);
    f[n++] = FORKLOG_UINT("workers", rep->workers_started);
    f[n++] = FORKLOG_DUR("wall", rep->wall_s);
    f[n++] = FORKLOG_DUR("min", rep->min_s);
    f[n++] = FORKLOG_DUR("p50", rep->p50_s);
    f[n++] = FORKLOG_DUR("p95", rep->p95_s);
    f[n++] = FORKLOG_DUR("p99", rep->p99_s);
    f[n++] = FORKLOG_DUR("max", rep->max_s);
    f[n++] = FORKLOG_DUR("mean", rep->mean_s);
    f[n++] = FORKLOG_DBL("tasks_per_s", rep->tasks_per_s);
    enum forklog_level lvl = p->level;
    if (rep->ok != p->ntasks && lvl < FORKLOG_WARN)
        lvl = FORKLOG_WARN;
    (void)forklog_log_fields(p->o->log, lvl, "pool summary", f, n);
}

/* ---- forklog_pool_map ------------------------------------------------------------------------------------ */

static int fl__pool_setup(struct fl__pool *p)
{
    long page = sysconf(_SC_PAGESIZE);
    size_t pg = page > 0 ? (size_t)page : 4096;
    size_t slots_off = sizeof(struct fl__pool_head);
    size_t res_off = slots_off + (size_t)p->nslots * sizeof(struct fl__pool_slot);
    if (p->ntasks > (SIZE_MAX - res_off - pg) / sizeof(struct fl__pool_res))
        return -ENOMEM;
    p->map_len = (res_off + p->ntasks * sizeof(struct fl__pool_res) + pg - 1) / pg * pg;
    void *m = mmap(NULL, p->map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    /* EAGAIN too (over RLIMIT_MEMLOCK under mlockall(MCL_FUTURE)) is no memory for the pool: returned as is, it
     * would read as a failed fork, after which every task has its not_run record, while none has one here. */
    if (m == MAP_FAILED)
        return -ENOMEM;
    p->map = m; /* zero-filled: every task FREE, every slot idle */
    p->head = m;
    p->slots = (struct fl__pool_slot *)(void *)((char *)m + slots_off);
    p->res = (struct fl__pool_res *)(void *)((char *)m + res_off);
    p->procs = calloc(p->nslots, sizeof *p->procs);
    /* The wake pipe, and per worker its pipe and its process descriptor. */
    p->pfd = calloc(2 * (size_t)p->nslots + 1, sizeof *p->pfd);
    p->pfd_slot = calloc(2 * (size_t)p->nslots + 1, sizeof *p->pfd_slot);
    if (!p->procs || !p->pfd || !p->pfd_slot)
        return -ENOMEM;
    for (unsigned k = 0; k < p->nslots; k++)
        p->procs[k].fd = p->procs[k].pidfd = -1;
    int fds[2];
    if (fl__pool_make_pipe(fds, O_CLOEXEC | O_NONBLOCK) < 0) {
        /* No descriptor for the wake pipe (EMFILE, ENFILE): no worker can start, but the call goes on so that
         * every task still gets its not_run record and the summary, as when the first fork fails. */
        p->stop = 1;
        p->stop_err = -errno;
        return 0;
    }
    p->wake_rd = fds[0];
    p->wake_wr = fds[1];
    struct stat st;
    if (fstat(p->wake_wr, &st) < 0)
        return -errno;
    p->wake_dev = st.st_dev;
    p->wake_ino = st.st_ino;
    return 0;
}

static void fl__pool_teardown(struct fl__pool *p)
{
    if (p->wake_rd >= 0)
        close(p->wake_rd);
    if (p->wake_wr >= 0)
        close(p->wake_wr);
    if (p->map)
        munmap(p->map, p->map_len);
    free(p->procs);
    free(p->pfd);
    free(p->pfd_slot);
    free(p->pend);
    free(p->logq);
}

/* Cleanup of a cancelled call (pthread_cleanup_push): every worker still there is killed and waited for (through
 * its process descriptor, or its pid), then descriptors and memory go. The tasks not recorded yet get no record. */
static void fl__pool_cancelled(void *arg)
{
    struct fl__pool *p = arg;
    for (unsigned k = 0; k < p->nslots; k++)
        if (p->procs[k].pid && !p->procs[k].reaped)
            fl__pool_kill(&p->procs[k]);
    for (unsigned k = 0; k < p->nslots; k++) {
        struct fl__pool_proc *w = &p->procs[k];
        if (!w->pid)
            continue;
        int r;
        if (w->reaped) {
            /* cancelled while its end was being recorded: nothing to wait for */
        } else if (w->pidfd >= 0) {
            siginfo_t si;
            do
                r = waitid(FL__P_PIDFD, (id_t)w->pidfd, &si, WEXITED);
            while ((r < 0 && errno == EINTR) || (r == 0 && fl__pool_stop_code(si.si_code)));
        } else {
            int st = 0;
            do
                r = (int)waitpid(w->pid, &st, 0);
            while ((r < 0 && errno == EINTR) || (r > 0 && WIFSTOPPED(st)));
        }
        if (w->fd >= 0)
            close(w->fd);
        if (w->pidfd >= 0)
            close(w->pidfd);
        w->pid = 0;
    }
    fl__pool_teardown(p);
}

static void fl__pool_run(struct fl__pool *p, int64_t t0, struct forklog_pool_report *report);

int forklog_pool_map(const struct forklog_pool_options *opts, size_t ntasks, forklog_task_fn task, void *ctx,
                     struct forklog_pool_report *report)
{
    if (report)
        memset(report, 0, sizeof *report);
    if (!opts || !task)
        return -EINVAL;
    if (!(opts->timeout_s >= 0) || opts->workers > FL__POOL_MAX_WORKERS ||
        (opts->level != 0 && (opts->level < FORKLOG_DEBUG || opts->level > FORKLOG_ERROR)))
        return -EINVAL;
    if (ntasks > SIZE_MAX / sizeof(struct fl__pool_res)) {
        /* As when the mapping cannot be made (below): no task ran, and the report's counts add up to ntasks. No
         * results array of that many entries can exist, so `results` is left alone. */
        if (report)
            report->not_run = ntasks;
        return -ENOMEM;
    }
    if (opts->results)
        memset(opts->results, 0, ntasks * sizeof *opts->results);
    if (ntasks == 0)
        return 0;

    int64_t t0 = fl__mono_ns();
    struct fl__pool pool;
    struct fl__pool *p = &pool;
    memset(p, 0, sizeof *p);
    p->o = opts;
    p->task = task;
    p->ctx = ctx;
    p->ntasks = ntasks;
    p->wake_rd = p->wake_wr = -1;
    p->parent = getpid();
    struct rlimit rl;
    p->fd_limit = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)INT_MAX ? (int)rl.rlim_cur : INT_MAX;
    p->level = opts->level ? opts->level : FORKLOG_INFO;
    /* A timeout of FL__POOL_FOREVER_S or more (INFINITY included) never comes in practice: it is kept at that, whose
     * nanoseconds fit an int64_t with any CLOCK_MONOTONIC time added. Left to the check below, it would become a
     * nanosecond and kill every task at once. */
    double timeout_s = opts->timeout_s < FL__POOL_FOREVER_S ? opts->timeout_s : FL__POOL_FOREVER_S;
    p->timeout_ns = timeout_s > 0 ? (int64_t)(timeout_s * 1e9) : 0;
    if (timeout_s > 0 && !p->timeout_ns)
        p->timeout_ns = 1; /* below a nanosecond: no worker is ready in time (a failed initializer each) */
    unsigned w = opts->workers;
    if (!w) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        w = cpus > 0 ? (cpus > (long)FL__POOL_MAX_WORKERS ? FL__POOL_MAX_WORKERS : (unsigned)cpus) : 1;
    }
    if (w > ntasks)
        w = (unsigned)ntasks;
    p->nworkers = w;
    /* Twice the workers: a replacement can start while the worker it replaces is being killed. */
    p->nslots = 2 * w;
    p->max_init_failures = opts->max_init_failures ? opts->max_init_failures : 2 * w + 2;
    p->exit_lock_free = fl__pool_exit_lock_free();
    p->exit_handler = fl__pool_exit_handler();
    int rc = fl__pool_setup(p);
    if (rc < 0) {
        /* No task ran, and `results` says not_run for each: so does the report, whose counts add up to ntasks. */
        if (report)
            report->not_run = ntasks;
        fl__pool_teardown(p);
        return rc;
    }
    /* Cancelled (pthread_cancel()) at any cancellation point of the run (its poll(), a record's write), the call
     * leaves nothing behind: fl__pool_cancelled kills and reaps its workers and frees the rest. So does a label
     * callback that throws a C++ exception: built with -fexceptions, the cleanup runs on any unwinding. */
    pthread_cleanup_push(fl__pool_cancelled, p);
    fl__pool_run(p, t0, report);
    pthread_cleanup_pop(0);
    rc = p->result;
    fl__pool_teardown(p);
    return rc;
}

/* The call's work, from the first fork to the summary; its result goes to p->result. */
static void fl__pool_run(struct fl__pool *p, int64_t t0, struct forklog_pool_report *report)
{
    const struct forklog_pool_options *opts = p->o;
    const size_t ntasks = p->ntasks;
    p->last_check = fl__mono_ns();
    for (;;) {
        if (p->nlogq)
            fl__pool_log_queued(p, 0);
        size_t progress = fl__pool_collect(p);
        int64_t now = fl__mono_ns();
        int64_t deadline = fl__pool_timeouts(p, now);
        int all = now - p->last_check >= FL__POOL_CHECK_NS;
        if (all)
            p->last_check = now;
        /* Workers whose pipe reported EOF before they were reapable, every time; every worker periodically,
         * which covers what EOF cannot: a pipe held open by the worker's own children or by a process another
         * thread of the caller forked, and a worker whose task closed its pipe. */
        for (unsigned k = 0; k < p->nslots; k++)
            if (p->procs[k].pid && (all || p->procs[k].hup_ns))
                (void)fl__pool_try_reap(p, k);
        /* A worker forked now was not there when the deadlines were taken: its initializer's (or, with none, its
         * first task's) comes timeout_s after its fork at the earliest, and the wait must not pass it. */
        const size_t started = p->workers_started;
        fl__pool_fill(p);
        if (p->timeout_ns && p->workers_started != started && now + p->timeout_ns < deadline)
            deadline = now + p->timeout_ns;
        if (p->nlive == 0 && (p->stop || atomic_load_explicit(&p->head->next, memory_order_relaxed) >= p->ntasks))
            break;
        if (progress)
            continue;
        atomic_store(&p->head->sleeping, 1);
        atomic_thread_fence(memory_order_seq_cst);
        if (fl__pool_collect(p)) {
            atomic_store(&p->head->sleeping, 0);
            continue;
        }
        fl__pool_wait(p, deadline);
    }

    /* Every worker is reaped. Record what is left: finished results not yet seen, and tasks that never
     * started (the pool stopped, or a worker died between taking an index and publishing its start). */
    (void)fl__pool_collect(p);
    fl__pool_log_queued(p, 1); /* no worker is left to hold the lock */
    size_t not_run = 0;
    for (size_t i = 0; i < ntasks; i++) {
        int ph = atomic_load(&p->res[i].phase);
        if (ph == FL__POOL_FINISHED) {
            fl__pool_record_finished(p, i);
        } else if (ph != FL__POOL_RECORDED) {
            fl__pool_record(p, i, FORKLOG_TASK_NOT_RUN, 0, 0, 0, 0);
            not_run++;
        }
    }

    struct forklog_pool_report rep;
    fl__pool_report(p, &rep, fl__mono_ns() - t0);
    if (opts->log) {
        fl__pool_summary(p, &rep);
        (void)forklog_flush(opts->log);
    }
    if (report)
        *report = rep;
    p->result = p->stop_err && not_run ? p->stop_err : (int)(ntasks - rep.ok > INT_MAX ? INT_MAX : ntasks - rep.ok);
}
