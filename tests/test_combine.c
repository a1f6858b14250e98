/* Combining: a writer that finds the lock taken posts its record in a shared slot, and the next lock holder
 * writes it together with its own in one writev(2). A child takes the lock by hand (through the internal
 * segment) while three writers post, then ends the way a combiner can end: it unlocks, or it dies before, in the
 * middle of, or after writing their records. Every writer's call must return 0 and the file must hold each
 * record exactly once, whole. Children never assert: they report through their exit status. */
#include "helpers.h"

#include "internal.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/prctl.h>

static char *dir, *logpath;

static void setup(void)
{
    dir = th_tmpdir();
    logpath = th_path(dir, "combine.log");
}

static void teardown(void)
{
    th_rmdir(dir);
    free(logpath);
    free(dir);
}

TestSuite(combine, .init = setup, .fini = teardown);

enum holder_end {
    END_UNLOCK,           /* unlock without touching the posted records: a poster writes them all */
    END_DIE_TAKEN,        /* took the records, died before writing */
    END_DIE_HALF_WRITTEN, /* died in the middle of the batch's write */
    END_DIE_ALL_WRITTEN,  /* the batch is in the file, not committed */
    END_DIE_COMMITTED     /* committed, died before marking the records done */
};

enum { POSTERS = 3 };

/* The child: takes the lock, says so, waits for the go, then does what fl__write_batch does up to `end`. */
static pid_t start_holder(forklog *log, enum holder_end end, int *go)
{
    int ready[2], gop[2];
    cr_assert_eq(pipe(ready), 0);
    cr_assert_eq(pipe(gop), 0);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* a failed test leaves nobody holding the lock */
        close(ready[0]);
        close(gop[1]);
        struct fl__seg *s = log->seg;
        if (pthread_mutex_lock(&s->mu) != 0)
            _exit(10);
        atomic_store(&s->held, 1);
        char c;
        if (write(ready[1], "L", 1) != 1 || read(gop[0], &c, 1) != 1)
            _exit(11);
        if (end == END_UNLOCK) {
            atomic_store(&s->held, 0);
            pthread_mutex_unlock(&s->mu);
            _exit(0);
        }
        s->batch_target = s->size;
        s->batch_open = 1;
        unsigned posted = atomic_exchange(&s->posted, 0);
        char batch[POSTERS * FL__SLOT_CAP];
        size_t total = 0;
        for (unsigned k = 0; k < FL__SLOTS; k++) {
            if (!(posted & (1u << k)))
                continue;
            struct fl__slot *sl = &s->slots[k];
            atomic_store(&sl->state, FL__SLOT_TAKEN);
            memcpy(batch + total, sl->data, sl->len);
            total += sl->len;
        }
        s->batch_target = s->size + total;
        if (end != END_DIE_TAKEN) {
            s->target = s->batch_target;
            s->state = FL__WRITING;
            size_t n = end == END_DIE_HALF_WRITTEN ? total / 2 : total;
            if (write(log->fd, batch, n) != (ssize_t)n)
                _exit(12);
            if (end == END_DIE_COMMITTED) {
                s->size = s->target;
                s->state = FL__IDLE;
            }
        }
        raise(SIGKILL);
        _exit(13);
    }
    close(ready[1]);
    close(gop[0]);
    char c = 0;
    cr_assert_eq(read(ready[0], &c, 1), 1, "the holder did not take the lock");
    close(ready[0]);
    *go = gop[1];
    return pid;
}

/* Leaves every slot as a process killed after posting would: done, owned by a pid that no longer exists. */
static void leak_every_slot(forklog *log)
{
    pid_t dead = fork();
    cr_assert_neq(dead, -1);
    if (dead == 0)
        _exit(0);
    cr_assert_eq(th_wait(dead), 0);
    for (unsigned k = 0; k < FL__SLOTS; k++) {
        log->seg->slots[k].owner = dead;
        atomic_store(&log->seg->slots[k].state, FL__SLOT_DONE);
    }
}

static void run_leaked(enum holder_end end, int leaked)
{
    forklog *log;
    cr_assert_eq(forklog_open(&log, logpath, NULL), 0);
    if (leaked)
        leak_every_slot(log);
    cr_assert_eq(forklog_write(log, "before", 6), 0);
    int go;
    pid_t holder = start_holder(log, end, &go);
    pid_t posters[POSTERS];
    for (int i = 0; i < POSTERS; i++) {
        posters[i] = fork();
        cr_assert_neq(posters[i], -1);
        if (posters[i] == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            close(go); /* only the parent may release the holder */
            char rec[64];
            int n = snprintf(rec, sizeof rec, "poster %d record", i);
            _exit(forklog_write(log, rec, (size_t)n) == 0 ? 0 : 1);
        }
    }
    /* Every poster has posted its record: the lock is taken, so none could write it itself. */
    double until = th_now_s() + 10;
    while (__builtin_popcount(atomic_load(&log->seg->posted)) < POSTERS && th_now_s() < until)
        usleep(1000);
    if (__builtin_popcount(atomic_load(&log->seg->posted)) != POSTERS) {
        kill(holder, SIGKILL);
        for (int i = 0; i < POSTERS; i++)
            kill(posters[i], SIGKILL);
        cr_assert_fail("the posters did not post");
    }
    cr_assert_eq(write(go, "g", 1), 1);
    close(go);
    int st = th_wait_for(holder, 10);
    cr_assert_eq(st, end == END_UNLOCK ? 0 : 128 + SIGKILL, "holder status %d", st);
    for (int i = 0; i < POSTERS; i++)
        cr_assert_eq(th_wait_for(posters[i], 10), 0, "poster %d did not return 0", i);
    if (end == END_UNLOCK)
        cr_assert_eq(log->seg->combined, POSTERS, "one holder wrote the three posted records together");
    cr_assert_eq(forklog_write(log, "after", 5), 0);
    cr_assert_eq(forklog_close(log), 0);

    size_t len;
    char *buf = th_slurp(logpath, &len);
    cr_assert_not_null(buf);
    cr_assert_eq(th_count_lines(buf, len), POSTERS + 2, "got:\n%s", buf);
    cr_assert_eq(strncmp(buf, "before\n", 7), 0);
    cr_assert_str_eq(buf + len - 6, "after\n");
    for (int i = 0; i < POSTERS; i++) {
        char want[64];
        snprintf(want, sizeof want, "\nposter %d record\n", i);
        char *at = strstr(buf, want);
        cr_assert_not_null(at, "poster %d's record is missing:\n%s", i, buf);
        cr_assert_null(strstr(at + 1, want), "poster %d's record is there twice:\n%s", i, buf);
    }
    free(buf);
}

static void run(enum holder_end end)
{
    run_leaked(end, 0);
}

Test(combine, slots_of_dead_processes_are_taken_back)
{
    /* With every slot held by a dead poster, the posters can post only if those slots are reclaimed. */
    run_leaked(END_UNLOCK, 1);
}

Test(combine, posted_records_are_written_by_the_next_holder)
{
    run(END_UNLOCK);
}

Test(combine, combiner_dead_before_writing_the_batch)
{
    run(END_DIE_TAKEN);
}

Test(combine, combiner_dead_in_the_middle_of_the_batch)
{
    run(END_DIE_HALF_WRITTEN);
}

Test(combine, combiner_dead_after_writing_the_batch)
{
    run(END_DIE_ALL_WRITTEN);
}

Test(combine, combiner_dead_after_committing_the_batch)
{
    run(END_DIE_COMMITTED);
}
