/* SPDX-License-Identifier: MIT */
/* Combining: a writer that finds the lock taken posts its record in a shared slot, and the next lock holder
 * writes it together with its own in one writev(2). A real writer stops with the lock held (a crash point) while
 * three writers post; it is then continued and dies at one step of its batch (a crash point in the real code).
 * Every poster's call must return 0 and the file must hold each of their records exactly once, whole; the dead
 * holder's own record at most once; and the segment's size must agree with the file's. */
#include "points.h"

#include <dlfcn.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/resource.h>

static char *dir, *logpath;

/* fdatasync(2) as the library sees it: this definition takes the place of libc's for the whole program, counts
 * the calls (across processes: the counters are in shared memory) and the size of the file each one made
 * durable, then calls libc's. */
static struct sync_count {
    atomic_int calls;
    atomic_llong size; /* the size of the file at the last call */
} * syncs;

int fdatasync(int fd)
{
    static int (*real)(int);
    if (!real)
        *(void **)&real = dlsym(RTLD_NEXT, "fdatasync");
    if (!real)
        return -1;
    int rc = real(fd);
    struct stat st;
    if (syncs && rc == 0 && fstat(fd, &st) == 0) {
        atomic_store(&syncs->size, (long long)st.st_size);
        atomic_fetch_add(&syncs->calls, 1);
    }
    return rc;
}

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

enum { POSTERS = 3 };

/* Checks the file: before, each poster's record once, the holder's at most once, after; nothing else. */
static void check_file(forklog *log, int holder_died)
{
    size_t len;
    char *buf = th_slurp(logpath, &len);
    cr_assert_not_null(buf);
    cr_assert(len > 0 && buf[len - 1] == '\n', "the file ends with a fragment:\n%s", buf);
    int holder = cp_count_line(buf, "holder record");
    cr_assert(holder_died ? holder <= 1 : holder == 1, "holder record %d times:\n%s", holder, buf);
    cr_assert_eq(cp_count_line(buf, "before"), 1);
    cr_assert_eq(cp_count_line(buf, "after"), 1);
    for (int i = 0; i < POSTERS; i++) {
        char want[64];
        snprintf(want, sizeof want, "poster %d record", i);
        cr_assert_eq(cp_count_line(buf, want), 1, "%s: %d times:\n%s", want, cp_count_line(buf, want), buf);
    }
    cr_assert_eq(th_count_lines(buf, len), (size_t)(POSTERS + 2 + holder), "stray lines:\n%s", buf);
    cr_assert_str_eq(buf + len - 6, "after\n");
    cp_assert_size_agrees(log, logpath);
    free(buf);
}

/* The holder dies at the hit-th passage of `point` (never, for NULL), after the posters posted. */
static void run(const char *point, unsigned hit)
{
    forklog *log;
    cr_assert_eq(forklog_open(&log, logpath, NULL), 0);
    cr_assert_eq(forklog_write(log, "before", 6), 0);
    pid_t holder = cp_stopped_holder(log, "holder record", point ? cp_find(point) : FL__CP_COUNT, point ? hit : 0);
    pid_t posters[POSTERS];
    for (int i = 0; i < POSTERS; i++) {
        char rec[64];
        snprintf(rec, sizeof rec, "poster %d record", i);
        posters[i] = cp_writer(log, rec, FL__CP_COUNT, 0);
    }
    /* Every poster has posted its record: the lock is taken, so none could write it itself. */
    if (!cp_wait_posted(log, POSTERS)) {
        kill(holder, SIGKILL);
        for (int i = 0; i < POSTERS; i++)
            kill(posters[i], SIGKILL);
        cr_assert_fail("the posters did not post");
    }
    cr_assert_eq(kill(holder, SIGCONT), 0);
    int st = th_wait_for(holder, 10);
    cr_assert_eq(st, point ? 128 + SIGKILL : 0, "holder status %d: point %s not reached", st, point);
    /* Liveness: every poster returns 0 at once, whatever the holder's death left. */
    for (int i = 0; i < POSTERS; i++)
        cr_assert_eq(th_wait_for(posters[i], 10), 0, "poster %d did not return 0 in 10 s", i);
    if (!point)
        cr_assert_eq(log->seg->combined, POSTERS, "one holder wrote the three posted records together");
    cr_assert_eq(forklog_write(log, "after", 5), 0);
    check_file(log, point != NULL);
    cr_assert_eq(forklog_close(log), 0);
}

Test(combine, posted_records_are_written_by_the_next_holder)
{
    run(NULL, 0);
}

/* One test per step of the batch, in the order fl__write_batch takes them. */
#define COMBINE_POINT(test, point, hit)                                                                                \
    Test(combine, test)                                                                                                \
    {                                                                                                                  \
        run(point, hit);                                                                                               \
    }
COMBINE_POINT(holder_dies_entering_the_batch, "BATCH_GATHER", 1)
COMBINE_POINT(holder_dies_after_swapping_the_posted_bits, "BATCH_SWAPPED", 1)
COMBINE_POINT(holder_dies_after_taking_one_slot, "BATCH_TAKEN", 1)
COMBINE_POINT(holder_dies_after_taking_two_slots, "BATCH_TAKEN", 2)
COMBINE_POINT(holder_dies_after_taking_every_slot, "BATCH_TAKEN", 3)
COMBINE_POINT(holder_dies_before_writing_the_batch, "WRITE_BEGIN", 1)
COMBINE_POINT(holder_dies_in_the_middle_of_the_batch, "WRITE_TORN", 1)
COMBINE_POINT(holder_dies_after_writing_the_batch, "WRITE_DONE", 1)
COMBINE_POINT(holder_dies_after_committing_the_batch, "WRITE_COMMITTED", 1)
COMBINE_POINT(holder_dies_after_the_batch_write_returned, "BATCH_WRITTEN", 1)
COMBINE_POINT(holder_dies_after_marking_one_slot_done, "BATCH_MARKED", 1)
COMBINE_POINT(holder_dies_after_marking_every_slot_done, "BATCH_MARKED", 3)
COMBINE_POINT(holder_dies_before_unlocking, "UNLOCK", 1)

/* Forks n posters, each stopped once its record ("poster I record") is posted, then lets the stopped holder go on to
 * its death at `point`. */
static void posters_then_holder_dies(forklog *log, pid_t *posters, int n, pid_t holder, const char *point)
{
    for (int i = 0; i < n; i++) {
        posters[i] = fork();
        cr_assert_neq(posters[i], -1);
        if (posters[i] == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            fl__crash_arm(FL__CP_POST_FLAGGED, 1, FL__CRASH_STOP); /* posted: the holder takes its record */
            char rec[64];
            snprintf(rec, sizeof rec, "poster %d record", i);
            _exit(forklog_write(log, rec, strlen(rec)) == 0 ? 0 : 1);
        }
        cr_assert(cp_wait_stopped(posters[i], 10), "poster %d did not post", i);
    }
    cr_assert_eq(kill(holder, SIGCONT), 0);
    int st = th_wait_for(holder, 10);
    cr_assert_eq(st, 128 + SIGKILL, "the holder did not die at %s (status %d)", point, st);
}

/* The holder dies at the hit-th passage of `point` with three posted records in its batch, and the next holder
 * dies too, at `repair` (REPAIR_FILE: the file repaired, the batch not yet; REPAIR_BATCH: both, before the mutex
 * is made consistent): the posters, stopped once posted, make the repair again when continued. Every poster's call
 * returns 0 with its record once in the file, the dead holder's at most once, nothing torn. */
static void run_repairer_dies(const char *point, unsigned hit, const char *repair)
{
    forklog *log;
    cr_assert_eq(forklog_open(&log, logpath, NULL), 0);
    cr_assert_eq(forklog_write(log, "before", 6), 0);
    pid_t holder = cp_stopped_holder(log, "holder record", cp_find(point), hit);
    pid_t posters[POSTERS];
    posters_then_holder_dies(log, posters, POSTERS, holder, point);
    const uint32_t phase = log->seg->batch_phase;
    uint32_t open_phase = FL__BATCH_GATHER; /* BATCH_TAKEN: taking slots */
    if (strncmp(point, "WRITE_", 6) == 0)
        open_phase = FL__BATCH_WRITE;
    else if (strcmp(point, "BATCH_MARKED") == 0)
        open_phase = FL__BATCH_FINISH;
    cr_assert_eq(phase, open_phase, "the holder died with batch phase %u, not %u", phase, open_phase);
    pid_t repairer = cp_writer(log, "repairer record", cp_find(repair), 1);
    int st = th_wait_for(repairer, 10);
    cr_assert_eq(st, 128 + SIGKILL, "the next holder did not die at %s (status %d)", repair, st);
    for (int i = 0; i < POSTERS; i++) {
        cr_assert_eq(kill(posters[i], SIGCONT), 0);
        st = th_wait_for(posters[i], 10);
        cr_assert_eq(st, 0, "poster %d: status %d (batch phase %u at the holder's death)", i, st, phase);
    }
    cr_assert_eq(forklog_write(log, "after", 5), 0);
    size_t len;
    char *buf = th_slurp(logpath, &len);
    cr_assert_not_null(buf);
    cr_assert(len > 0 && buf[len - 1] == '\n', "the file ends with a fragment:\n%s", buf);
    int holder_n = cp_count_line(buf, "holder record");
    cr_assert_leq(holder_n, 1, "%s", buf);
    cr_assert_eq(cp_count_line(buf, "repairer record"), 0, "%s", buf);
    for (int i = 0; i < POSTERS; i++) {
        char want[64];
        snprintf(want, sizeof want, "poster %d record", i);
        cr_assert_eq(cp_count_line(buf, want), 1, "%s: %d times (batch phase %u at the holder's death):\n%s", want,
                     cp_count_line(buf, want), phase, buf);
    }
    cr_assert_eq(th_count_lines(buf, len), (size_t)(POSTERS + 2 + holder_n), "stray lines:\n%s", buf);
    cp_assert_size_agrees(log, logpath);
    free(buf);
    cr_assert_eq(forklog_close(log), 0);
}

#define COMBINE_REPAIR(test, point, hit, repair)                                                                       \
    Test(combine, test)                                                                                                \
    {                                                                                                                  \
        run_repairer_dies(point, hit, repair);                                                                         \
    }
COMBINE_REPAIR(a_repairer_dies_after_the_file_repair_of_a_batch_being_gathered, "BATCH_TAKEN", 2, "REPAIR_FILE")
COMBINE_REPAIR(a_repairer_dies_after_the_file_repair_of_a_torn_batch, "WRITE_TORN", 1, "REPAIR_FILE")
COMBINE_REPAIR(a_repairer_dies_after_the_file_repair_of_a_written_batch, "WRITE_DONE", 1, "REPAIR_FILE")
COMBINE_REPAIR(a_repairer_dies_after_the_file_repair_of_a_batch_being_marked, "BATCH_MARKED", 1, "REPAIR_FILE")
COMBINE_REPAIR(a_repairer_dies_after_the_batch_repair_of_a_torn_batch, "WRITE_TORN", 1, "REPAIR_BATCH")
COMBINE_REPAIR(a_repairer_dies_after_the_batch_repair_of_a_written_batch, "WRITE_DONE", 1, "REPAIR_BATCH")

/* Every slot is left by a poster that died at `point`; three new posters must still post (they can only by taking
 * those slots back), and every acknowledged record is in the file once. */
static void run_leaked(const char *point)
{
    forklog *log;
    cr_assert_eq(forklog_open(&log, logpath, NULL), 0);
    cr_assert_eq(forklog_write(log, "before", 6), 0);
    enum fl__crash_point cp = cp_find(point);
    int done_seen = cp == FL__CP_POST_DONE_SEEN;
    /* The victims post while a holder is stopped with the lock, and die at the point. For POST_DONE_SEEN the
     * holder writes their records first; then a second holder is stopped for the three real posters. */
    pid_t holder = cp_stopped_holder(log, "victims' holder", FL__CP_COUNT, 0);
    pid_t victims[FL__SLOTS];
    for (int i = 0; i < FL__SLOTS; i++) {
        char rec[64];
        snprintf(rec, sizeof rec, "victim %d record", i);
        victims[i] = cp_writer(log, rec, cp, 1);
    }
    if (done_seen) {
        cr_assert(cp_wait_posted(log, FL__SLOTS), "the victims did not post");
        cr_assert_eq(kill(holder, SIGCONT), 0);
        cr_assert_eq(th_wait_for(holder, 10), 0);
    }
    for (int i = 0; i < FL__SLOTS; i++)
        cr_assert_eq(th_wait_for(victims[i], 10), 128 + SIGKILL, "victim %d did not die at %s", i, point);
    if (done_seen)
        holder = cp_stopped_holder(log, "holder record", FL__CP_COUNT, 0);
    for (unsigned k = 0; k < FL__SLOTS; k++) {
        unsigned st = atomic_load(&log->seg->slots[k].word) & FL__SLOT_STATE;
        cr_assert_neq(st, FL__SLOT_FREE, "slot %u is free: the victims did not hold every slot", k);
    }
    pid_t posters[POSTERS];
    for (int i = 0; i < POSTERS; i++) {
        char rec[64];
        snprintf(rec, sizeof rec, "poster %d record", i);
        posters[i] = cp_writer(log, rec, FL__CP_COUNT, 0);
    }
    int ok = cp_wait_posted(log, POSTERS);
    cr_assert_eq(kill(holder, SIGCONT), 0);
    cr_assert_eq(th_wait_for(holder, 10), 0);
    for (int i = 0; i < POSTERS; i++)
        cr_assert_eq(th_wait_for(posters[i], 10), 0, "poster %d did not return 0 in 10 s", i);
    cr_assert(ok, "the posters could not post: the dead victims' slots were not taken back");
    cr_assert_eq(forklog_write(log, "after", 5), 0);

    size_t len;
    char *buf = th_slurp(logpath, &len);
    for (int i = 0; i < POSTERS; i++) {
        char want[64];
        snprintf(want, sizeof want, "poster %d record", i);
        cr_assert_eq(cp_count_line(buf, want), 1, "%s: %d times:\n%s", want, cp_count_line(buf, want), buf);
    }
    for (int i = 0; i < FL__SLOTS; i++) {
        char want[64];
        snprintf(want, sizeof want, "victim %d record", i);
        /* A victim's record was never acknowledged: absent, or once (it was posted and a holder wrote it). */
        cr_assert_leq(cp_count_line(buf, want), 1, "%s twice", want);
        if (done_seen)
            cr_assert_eq(cp_count_line(buf, want), 1, "%s was done but is not in the file", want);
    }
    cp_assert_size_agrees(log, logpath);
    free(buf);
    cr_assert_eq(forklog_close(log), 0);
}

Test(combine, slots_of_posters_dead_while_filling_are_taken_back)
{
    run_leaked("POST_CLAIMED");
}

Test(combine, slots_of_posters_dead_before_flagging_are_taken_back)
{
    run_leaked("POST_POSTED");
}

Test(combine, slots_of_posters_dead_after_their_record_was_done_are_taken_back)
{
    run_leaked("POST_DONE_SEEN");
}

/* Where line `want` (without its newline) ends in the file, newline included; -1 when it is not there. Children
 * use it, so it never asserts. */
static long long line_end(const char *path, const char *want)
{
    static char buf[1 << 16];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n < 0)
        return -1;
    buf[n] = '\0';
    size_t wl = strlen(want);
    for (char *line = buf; *line;) {
        char *end = strchr(line, '\n');
        if (!end)
            break;
        if ((size_t)(end - line) == wl && memcmp(line, want, wl) == 0)
            return (long long)(end + 1 - buf);
        line = end + 1;
    }
    return -1;
}

Test(combine, a_sync_record_is_made_durable_before_its_call_returns)
{
    /* A FORKLOG_SYNC writer finds the lock held by a writer without FORKLOG_SYNC (stopped at LOCK_HELD). Each of
     * its records must be in a file that an fdatasync() made durable before its call returned, whoever wrote it. */
    syncs = mmap(NULL, sizeof *syncs, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(syncs, MAP_FAILED);
    forklog *plain, *synced;
    cr_assert_eq(forklog_open(&plain, logpath, NULL), 0);
    struct forklog_options o = {.flags = FORKLOG_SYNC};
    cr_assert_eq(forklog_open(&synced, logpath, &o), 0);
    cr_assert_eq(forklog_write(plain, "before", 6), 0);
    pid_t holder = cp_stopped_holder(plain, "holder record", FL__CP_COUNT, 0);
    enum { RECORDS = 3 };
    pid_t writer = fork();
    cr_assert_neq(writer, -1);
    if (writer == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        for (int i = 0; i < RECORDS; i++) {
            char rec[64];
            snprintf(rec, sizeof rec, "sync record %d", i);
            int before = atomic_load(&syncs->calls);
            if (forklog_write(synced, rec, strlen(rec)) != 0)
                _exit(10 + i); /* the call failed */
            if (atomic_load(&syncs->calls) == before)
                _exit(20 + i); /* no fdatasync() during the call */
            long long end = line_end(logpath, rec);
            if (end < 0)
                _exit(30 + i); /* the record is not in the file */
            if (atomic_load(&syncs->size) < end)
                _exit(40 + i); /* the last fdatasync() came before the record was written */
        }
        _exit(0);
    }
    /* Give the writer time to find the lock taken (a writer that may post does so within microseconds). */
    double until = th_now_s() + 0.3;
    while (!atomic_load(&plain->seg->posted) && th_now_s() < until)
        usleep(1000);
    cr_assert_eq(kill(holder, SIGCONT), 0);
    cr_assert_eq(th_wait_for(holder, 10), 0);
    int st = th_wait_for(writer, 10);
    cr_assert_eq(st, 0, "the SYNC writer failed with status %d (2x: no fdatasync() during record x's call)", st);
    cr_assert_eq(forklog_close(synced), 0);
    cr_assert_eq(forklog_write(plain, "after", 5), 0);
    size_t len;
    char *buf = th_slurp(logpath, &len);
    cr_assert_not_null(buf);
    for (int i = 0; i < RECORDS; i++) {
        char want[64];
        snprintf(want, sizeof want, "sync record %d", i);
        cr_assert_eq(cp_count_line(buf, want), 1, "%s: %d times:\n%s", want, cp_count_line(buf, want), buf);
    }
    cr_assert_eq(cp_count_line(buf, "holder record"), 1);
    cr_assert_eq(th_count_lines(buf, len), (size_t)RECORDS + 3, "stray lines:\n%s", buf);
    cp_assert_size_agrees(plain, logpath);
    free(buf);
    cr_assert_eq(forklog_close(plain), 0);
    munmap(syncs, sizeof *syncs);
    syncs = NULL;
}

Test(combine, a_poster_returns_once_its_record_is_written_while_the_holder_keeps_the_lock)
{
    /* The holder writes the batch that carries the poster's record and stops before unlocking (UNLOCK). The
     * poster's record is in the file and its result known: the call must return, not wait for the lock. */
    forklog *log;
    cr_assert_eq(forklog_open(&log, logpath, NULL), 0);
    cr_assert_eq(forklog_write(log, "before", 6), 0);
    pid_t poster;
    pid_t holder = cp_holder_with_a_post(log, "holder record", FL__CP_UNLOCK, "poster record", &poster);
    cr_assert_eq(log->seg->combined, 1, "the holder did not write the posted record");
    int st = th_wait_for(poster, 2);
    cr_assert_eq(kill(holder, SIGCONT), 0);
    cr_assert_eq(th_wait_for(holder, 10), 0);
    cr_assert_eq(st, 0, "the poster did not return 0 within 2 s of its record being written (status %d)", st);
    cr_assert_eq(forklog_write(log, "after", 5), 0);
    size_t len;
    char *buf = th_slurp(logpath, &len);
    cr_assert_not_null(buf);
    cr_assert_str_eq(buf, "before\nholder record\nposter record\nafter\n");
    cp_assert_size_agrees(log, logpath);
    free(buf);
    cr_assert_eq(forklog_close(log), 0);
}

/* forklog_reopen() promises that every process writes its next record to the file at path. A holder that synced
 * its file before the reopen and gathers the posted records after it moves to the new file first, so that it never
 * carries a record whose call began after the reopen had returned into the old, renamed file. The holder stops
 * after its file was synced, before it gathers (BATCH_GATHER), with an early record posted; the log is moved away
 * and reopened; then a late writer posts. With `no_fd`, the holder then cannot open the new file (its RLIMIT_NOFILE
 * lowered to nothing; as well a file its credentials may not open): that failure is its own, as a failed sync
 * before the gathering is, and the posters' calls must not fail with its error. */
static void reopen_while_gathering(int no_fd)
{
    forklog *log;
    cr_assert_eq(forklog_open(&log, logpath, NULL), 0);
    cr_assert_eq(forklog_write(log, "before", 6), 0);
    pid_t early;
    pid_t holder = cp_holder_with_a_post(log, "holder record", FL__CP_BATCH_GATHER, "early poster", &early);
    char *old = th_path(dir, "combine.log.1");
    cr_assert_eq(rename(logpath, old), 0);
    cr_assert_eq(forklog_reopen(log), 0);
    pid_t late = cp_writer(log, "late poster", FL__CP_COUNT, 0);
    int ok = cp_wait_posted(log, 2);
    if (no_fd) {
        struct rlimit none = {0, 0};
        cr_assert_eq(prlimit(holder, RLIMIT_NOFILE, &none, NULL), 0);
    }
    cr_assert_eq(kill(holder, SIGCONT), 0);
    int hst = th_wait_for(holder, 10);
    int est = th_wait_for(early, 10);
    int lst = th_wait_for(late, 10);
    cr_assert(ok, "the late writer did not post");
    cr_assert_eq(hst, no_fd ? EMFILE : 0, "the holder exited %d (%d: -EMFILE)", hst, EMFILE);
    cr_assert_eq(est, 0, "the early poster's call failed (status %d)", est);
    cr_assert_eq(lst, 0, "the late poster's call failed (status %d)", lst);
    cr_assert_eq(forklog_write(log, "after", 5), 0);
    size_t len;
    char *buf = th_slurp(logpath, &len);
    cr_assert_not_null(buf, "no file at path");
    cr_assert_eq(cp_count_line(buf, "late poster"), 1, "the new file:\n%s", buf);
    cr_assert_eq(cp_count_line(buf, "after"), 1, "the new file:\n%s", buf);
    int holder_n = cp_count_line(buf, "holder record"), early_n = cp_count_line(buf, "early poster");
    free(buf);
    buf = th_slurp(old, &len);
    cr_assert_not_null(buf);
    cr_assert_eq(cp_count_line(buf, "late poster"), 0,
                 "a record whose call began after forklog_reopen() returned went to the renamed file:\n%s", buf);
    holder_n += cp_count_line(buf, "holder record");
    early_n += cp_count_line(buf, "early poster"); /* its call began before the reopen: either file, once */
    cr_assert_eq(holder_n, no_fd ? 0 : 1, "the holder's record is in the files %d times", holder_n);
    cr_assert_eq(early_n, 1, "the early poster's record is in the files %d times", early_n);
    cp_assert_size_agrees(log, logpath);
    free(buf);
    free(old);
    cr_assert_eq(forklog_close(log), 0);
}

Test(combine, a_record_posted_after_a_reopen_returned_goes_to_the_new_file)
{
    reopen_while_gathering(0);
}

/* The thread of a_holder_cancelled_at_each_step_of_its_batch_loses_no_record that holds the lock: its cancellation
 * is asked for at the first passage of cancel_point, and its cleanup handler closes the handle of its cancelled
 * call, which releases the lock (docs/api.md). Returns (void *)1 when its call returned 0, 2 when it failed. */
static forklog *cancelled_log;
static enum fl__crash_point cancel_point;

static void close_cancelled(void *log)
{
    (void)forklog_close(log);
}

static void *write_cancelled(void *arg)
{
    (void)arg;
    fl__crash_arm(cancel_point, 1, FL__CRASH_CANCEL);
    int rc = -1;
    pthread_cleanup_push(close_cancelled, cancelled_log);
    rc = forklog_write(cancelled_log, "holder record", 13);
    pthread_cleanup_pop(0);
    return (void *)(intptr_t)(rc == 0 ? 1 : 2);
}

/* One case: a holder has taken a posted record when a forklog_reopen() makes it move to the file at path before it
 * writes the batch; its cancellation is asked for at `point` and acted upon at the next cancellation point it
 * reaches; its process lives on. */
static void cancelled_at(const char *point)
{
    char name[64];
    snprintf(name, sizeof name, "cancelled-%s.log", point);
    char *path = th_path(dir, name);
    cancel_point = cp_find(point);
    forklog *log;
    cr_assert_eq(forklog_open(&log, path, NULL), 0);
    cr_assert_eq(forklog_write(log, "before", 6), 0);
    pid_t holder = fork();
    cr_assert_neq(holder, -1);
    if (holder == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        cancelled_log = log;
        fl__crash_arm(FL__CP_LOCK_HELD, 1, FL__CRASH_STOP);
        fl__crash_arm(FL__CP_BATCH_GATHER, 1, FL__CRASH_STOP);
        pthread_t th;
        void *res = NULL;
        if (pthread_create(&th, NULL, write_cancelled, NULL) != 0 || pthread_join(th, &res) != 0)
            _exit(9);
        _exit(res == PTHREAD_CANCELED ? 0 : (int)(intptr_t)res);
    }
    cr_assert(cp_wait_stopped(holder, 10), "%s: the holder did not stop with the lock", point);
    pid_t poster = cp_writer(log, "poster record", FL__CP_COUNT, 0);
    int posted = cp_wait_posted(log, 1);
    cr_assert_eq(kill(holder, SIGCONT), 0);
    int gathering = cp_wait_stopped(holder, 10);
    cr_assert_eq(forklog_reopen(log), 0);
    if (gathering)
        cr_assert_eq(kill(holder, SIGCONT), 0);
    int pst = th_wait_for(poster, 10);
    int hst = th_wait_for(holder, 10);
    cr_assert(posted, "%s: the poster did not post", point);
    cr_assert(gathering, "%s: the holder did not stop to gather the batch", point);
    cr_assert(hst >= 0 && hst <= 2, "%s: the holder's process ended with %d", point, hst);
    cr_assert(pst == 0 || pst == 1, "%s: the poster's call never returned (status %d)", point, pst);
    cr_assert_eq(forklog_write(log, "after", 5), 0);
    size_t len;
    char *buf = th_slurp(path, &len);
    cr_assert_not_null(buf);
    int pn = cp_count_line(buf, "poster record"), hn = cp_count_line(buf, "holder record");
    cr_assert_eq(pn, pst == 0 ? 1 : 0, "%s: the poster's call ended with %d, and the file holds:\n%s", point, pst, buf);
    cr_assert(hst == 1   ? hn == 1
              : hst == 2 ? hn == 0
                         : hn <= 1,
              "%s: the holder (%d) left its record %d times", point, hst, hn);
    cr_assert_eq(cp_count_line(buf, "before") + cp_count_line(buf, "after"), 2, "%s", buf);
    free(buf);
    cp_assert_size_agrees(log, path);
    cr_assert_eq(forklog_close(log), 0);
    free(path);
}

Test(combine, a_holder_cancelled_at_each_step_of_its_batch_loses_no_record, .timeout = 120)
{
    /* Cancelled at its write(2), a holder leaves state WRITING, which the next holder repairs. A cancellation asked
     * for earlier must not be acted upon before that (the move to the new file reads its last byte, and may end its
     * line): the lock, released by the close, would be taken normally with state IDLE and the record taken, which
     * nobody repairs. A poster's call returns 0 only with its record in the file, once. */
    static const char *const points[] = {
        "BATCH_SWAPPED", "BATCH_TAKEN",  "REOPEN_TAKEN", "REOPEN_SEEN", "REOPEN_OPENED", "FILE_KNOWN",
        "BATCH_TARGET",  "WRITE_TARGET", "WRITE_BEGIN",  "WRITE_DONE",  "WRITE_SIZED",   "WRITE_COMMITTED",
        "BATCH_WRITTEN", "BATCH_RESULT", "BATCH_MARKED", "UNLOCK",
    };
    for (size_t i = 0; i < sizeof points / sizeof points[0]; i++)
        cancelled_at(points[i]);
}

Test(combine, a_full_file_system_fails_posted_records_with_enospc_and_kills_nobody)
{
    /* The segment file is sized sparse; a page of its MAP_SHARED mapping first stored into needs a block of the
     * log's file system, and on a full one the kernel answers with SIGBUS. Writers that post in the slots (pages
     * nobody touched before) must get -ENOSPC like every other writer, not die; and an open on a full file system
     * must fail with -ENOSPC. A small tmpfs in a mount namespace of the test's own (root only). */
    char *small = th_small_fs(dir, "size=128k");
    if (!small)
        cr_skip_test("no mount namespace of its own here (needs root)");
    char *path = th_path(small, "full.log");
    forklog *log;
    cr_assert_eq(forklog_open(&log, path, NULL), 0);
    /* A first record that fills the log's first page: any byte more needs a block the full file system lacks. */
    static char first[4096];
    memset(first, 'b', sizeof first - 1);
    cr_assert_eq(forklog_write(log, first, sizeof first - 1), 0);
    char *filler = th_fill_fs(small);
    pid_t holder = cp_stopped_holder(log, "holder record", FL__CP_COUNT, 0);
    enum { N = 8 };
    pid_t posters[N];
    for (int i = 0; i < N; i++) {
        posters[i] = fork();
        cr_assert_neq(posters[i], -1);
        if (posters[i] == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            _exit(forklog_write(log, "poster record", 13) == -ENOSPC ? 0 : 1);
        }
    }
    int posted = cp_wait_posted(log, N);
    cr_assert_eq(kill(holder, SIGCONT), 0);
    int hst = th_wait_for(holder, 10);
    for (int i = 0; i < N; i++) {
        int st = th_wait_for(posters[i], 10);
        cr_assert_eq(st, 0, "poster %d: status %d (%d: killed by signal %d)", i, st, st, st - 128);
    }
    cr_assert(posted, "the posters did not post");
    cr_assert_eq(hst, 1, "the holder's record did not fail (status %d)", hst);
    cr_assert_eq(forklog_write(log, "full", 4), -ENOSPC);

    /* A log opened on the full file system: -ENOSPC, and nothing left beside it. */
    char *other = th_path(small, "other.log");
    int fd = open(other, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644); /* an empty file needs no block */
    cr_assert_geq(fd, 0);
    close(fd);
    pid_t opener = fork();
    cr_assert_neq(opener, -1);
    if (opener == 0) {
        forklog *o;
        _exit(forklog_open(&o, other, NULL) == -ENOSPC ? 0 : 1);
    }
    int ost = th_wait_for(opener, 10);
    cr_assert_eq(ost, 0, "open on a full file system: status %d (%d: killed by signal %d)", ost, ost, ost - 128);

    cr_assert_eq(unlink(filler), 0);
    cr_assert_eq(forklog_write(log, "after", 5), 0);
    size_t len;
    char *buf = th_slurp(path, &len);
    cr_assert_not_null(buf);
    cr_assert_eq(len, sizeof first + 6);
    cr_assert_str_eq(buf + sizeof first, "after\n");
    cp_assert_size_agrees(log, path);
    free(buf);
    cr_assert_eq(forklog_close(log), 0);
    cr_assert_eq(umount(small), 0);
    free(other);
    free(filler);
    free(path);
    free(small);
}

/* A holder whose process has a file size limit (RLIMIT_FSIZE, SIGXFSZ ignored) takes the record of a poster
 * whose process has none. The limit is the holder's alone: the poster's call must not fail with -EFBIG, and the
 * holder's own record, which fits under its limit, must not fail either. When `poster_holds` is set, the limited
 * process is itself a poster that takes the lock to write its own record, after a holder of the plain path (a
 * record over 1 KiB), which takes no posted record. */
static void run_limited(int poster_holds)
{
    signal(SIGXFSZ, SIG_IGN);
    forklog *log;
    cr_assert_eq(forklog_open(&log, logpath, NULL), 0);
    cr_assert_eq(forklog_write(log, "before", 6), 0);
    static char plain[1101];
    memset(plain, 'p', sizeof plain - 1);
    pid_t holder = 0;
    if (poster_holds)
        holder = cp_stopped_holder(log, plain, FL__CP_COUNT, 0);
    /* The file may grow by 20 bytes in the limited process: its 15-byte record fits, not two of them. */
    const rlim_t limit = 7 + (poster_holds ? sizeof plain : 0) + 20;
    pid_t limited = fork();
    cr_assert_neq(limited, -1);
    if (limited == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        struct rlimit rl = {limit, RLIM_INFINITY};
        if (setrlimit(RLIMIT_FSIZE, &rl) < 0)
            _exit(2);
        if (!poster_holds)
            fl__crash_arm(FL__CP_LOCK_HELD, 1, FL__CRASH_STOP);
        int rc = forklog_write(log, "limited record", 14);
        _exit(rc == 0 ? 0 : rc == -EFBIG ? 3 : 1);
    }
    if (poster_holds)
        cr_assert(cp_wait_posted(log, 1), "the limited writer did not post");
    else
        cr_assert(cp_wait_stopped(limited, 10), "the limited writer did not stop with the lock");
    pid_t poster = cp_writer(log, "poster record", FL__CP_COUNT, 0);
    int ok = cp_wait_posted(log, poster_holds ? 2 : 1);
    if (poster_holds) {
        /* The other poster waits stopped, so that the limited one takes the lock when the holder leaves it. */
        cr_assert_eq(kill(poster, SIGSTOP), 0);
        cr_assert_eq(kill(holder, SIGCONT), 0);
        cr_assert_eq(th_wait_for(holder, 10), 0);
    } else {
        cr_assert_eq(kill(limited, SIGCONT), 0);
    }
    int lst = th_wait_for(limited, 10);
    if (poster_holds)
        cr_assert_eq(kill(poster, SIGCONT), 0);
    int pst = th_wait_for(poster, 10);
    cr_assert(ok, "the poster did not post");
    cr_assert_eq(pst, 0, "the call of a process without a file size limit failed (status %d)", pst);
    cr_assert_eq(lst, 0, "the limited writer's record, which fits its limit, failed (status %d: 3 is -EFBIG)", lst);
    cr_assert_eq(forklog_write(log, "after", 5), 0);
    size_t len;
    char *buf = th_slurp(logpath, &len);
    cr_assert_not_null(buf);
    cr_assert_eq(cp_count_line(buf, "poster record"), 1, "%s", buf);
    cr_assert_eq(cp_count_line(buf, "limited record"), 1, "%s", buf);
    cr_assert_eq(cp_count_line(buf, "after"), 1, "%s", buf);
    cp_assert_size_agrees(log, logpath);
    free(buf);
    cr_assert_eq(forklog_close(log), 0);
}

Test(combine, a_holders_file_size_limit_does_not_fail_the_records_it_carries)
{
    run_limited(0);
}

Test(combine, a_posters_file_size_limit_does_not_fail_the_records_it_carries)
{
    run_limited(1);
}

Test(combine, a_holder_that_cannot_reopen_does_not_fail_the_records_it_carries)
{
    reopen_while_gathering(1);
}

/* How many times `want` is in buf[0..len). */
static int count_in(const char *buf, size_t len, const char *want)
{
    int n = 0;
    size_t wl = strlen(want);
    for (const char *p = buf; buf && (p = memmem(p, len - (size_t)(p - buf), want, wl)) != NULL; p += wl)
        n++;
    return n;
}

/* A record posted while the log was a regular file, carried by a holder after a reopen moved the log to a FIFO
 * (the file renamed, a FIFO made at its name with a reader): what a holder killed mid-write put into a FIFO cannot
 * be told apart from a whole write, and counts as written. So no posted record goes into a batch written to a
 * file that is not regular; the holder, killed in the middle of its own record, takes nobody's with it. */
Test(combine, a_record_posted_before_the_log_became_a_fifo_is_not_lost_with_a_holder_killed_writing_into_it)
{
    forklog *log;
    cr_assert_eq(forklog_open(&log, logpath, NULL), 0);
    cr_assert_eq(forklog_write(log, "before", 6), 0);
    char holder_rec[601];
    memset(holder_rec, 'h', 600);
    holder_rec[600] = '\0';
    pid_t holder = cp_stopped_holder(log, holder_rec, FL__CP_WRITE_TORN, 1);
    pid_t poster = cp_writer(log, "poster record", FL__CP_COUNT, 0);
    if (!cp_wait_posted(log, 1)) {
        kill(holder, SIGKILL);
        kill(poster, SIGKILL);
        cr_assert_fail("the poster did not post");
    }
    char *old = th_path(dir, "combine.log.old"), *out = th_path(dir, "fifo.out");
    cr_assert_eq(rename(logpath, old), 0);
    cr_assert_eq(mkfifo(logpath, 0600), 0);
    int ready[2];
    cr_assert_eq(pipe(ready), 0);
    pid_t reader = fork();
    cr_assert_neq(reader, -1);
    if (reader == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int in = open(logpath, O_RDWR), o = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600); /* O_RDWR: no EOF */
        if (in < 0 || o < 0 || write(ready[1], "r", 1) != 1)
            _exit(1);
        char b[4096];
        ssize_t n;
        while ((n = read(in, b, sizeof b)) > 0)
            if (write(o, b, (size_t)n) != n)
                _exit(2);
        _exit(3);
    }
    close(ready[1]);
    char c;
    cr_assert_eq(read(ready[0], &c, 1), 1, "the FIFO's reader did not start");
    close(ready[0]);
    cr_assert_eq(forklog_reopen(log), 0);
    cr_assert_eq(kill(holder, SIGCONT), 0);
    int hst = th_wait_for(holder, 10), pst = th_wait_for(poster, 10);
    cr_assert_eq(hst, 128 + SIGKILL, "the holder was not killed mid-write (status %d)", hst);
    cr_assert_eq(pst, 0, "the poster's call failed (status %d)", pst);
    cr_assert_eq(forklog_close(log), 0);
    /* Everything written is in the reader's file once a line written after it is there: the FIFO keeps the order.
     * (The reader holds the FIFO open for reading: this open does not wait.) */
    static const char end_line[] = "end of the stream\n";
    int wr = open(logpath, O_WRONLY | O_CLOEXEC);
    cr_assert_geq(wr, 0);
    cr_assert_eq(write(wr, end_line, sizeof end_line - 1), (ssize_t)(sizeof end_line - 1));
    close(wr);
    int copied = 0;
    for (double until = th_now_s() + 10; !copied && th_now_s() < until; usleep(1000)) {
        size_t got;
        char *b = th_slurp(out, &got);
        copied = count_in(b, got, end_line) == 1;
        free(b);
    }
    cr_assert(copied, "the FIFO's reader did not copy the stream to its end within 10 s");
    kill(reader, SIGKILL);
    th_wait(reader);
    size_t len;
    char *buf = th_slurp(out, &len);
    cr_assert_eq(count_in(buf, len, "poster record\n"), 1,
                 "the poster's call returned 0: its record must reach the FIFO, once (%zu bytes read)", len);
    free(buf);
    buf = th_slurp(old, &len);
    cr_assert_eq(count_in(buf, len, "poster record"), 0);
    free(buf);
    free(old);
    free(out);
}

/* A holder writes a combined batch (its record and two posted ones) into the file of a new generation (the log was
 * renamed and forklog_reopen()ed) and dies at `point`. The next holder is a process still on the older generation,
 * whose descriptor is the renamed file, and that can open nothing (RLIMIT_NOFILE 0; as well a file its credentials
 * may not open): it cannot tell whether the batch is whole in the file at path, nor cut a fragment there. It must
 * change nothing (state, batch phase) and fail its own call with -EMFILE, or, with `killed`, die right there
 * (REPAIR_DEFERRED) and leave the repair to the next holder as a dead holder does. The posters can look: the first to
 * take the lock makes the repair, and every poster's call returns 0 with its record in the file once, nothing torn
 * left. With `blind`, poster 0 can open nothing either and takes the lock first: it fails the repair as well, and its
 * call waits, neither returning nor taking its record back; given its descriptors back, with poster 1 still stopped,
 * it makes the repair itself. */
static void repair_left_by_a_process_without_descriptors(const char *point, int killed, int blind)
{
    forklog *log;
    cr_assert_eq(forklog_open(&log, logpath, NULL), 0);
    cr_assert_eq(forklog_write(log, "before", 6), 0);
    const enum fl__crash_point deferred = killed ? cp_find("REPAIR_DEFERRED") : FL__CP_COUNT;
    int go[2];
    cr_assert_eq(pipe(go), 0);
    pid_t older = fork(); /* stays on the first generation: it writes only after the holder's death */
    cr_assert_neq(older, -1);
    if (older == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        char c;
        if (read(go[0], &c, 1) != 1)
            _exit(100);
        if (killed)
            fl__crash_arm(deferred, 1, FL__CRASH_KILL);
        int rc = forklog_write(log, "older record", 12);
        _exit(rc < 0 ? -rc & 0x7f : 0);
    }
    char *old = th_path(dir, "combine.log.1");
    cr_assert_eq(rename(logpath, old), 0);
    cr_assert_eq(forklog_reopen(log), 0);
    pid_t holder = cp_stopped_holder(log, "holder record", cp_find(point), 1);
    enum { N = 2 };
    pid_t posters[N];
    posters_then_holder_dies(log, posters, N, holder, point);
    struct rlimit none = {0, 0};
    cr_assert_eq(prlimit(older, RLIMIT_NOFILE, &none, NULL), 0);
    cr_assert_eq(write(go[1], "g", 1), 1);
    int ost = th_wait_for(older, 10);
    /* What the holder's death left, as the process that could not look leaves it (nobody holds the lock now). */
    uint32_t state = log->seg->state, phase = log->seg->batch_phase;
    int pst[N], waited = 1;
    uint32_t blind_state = FL__WRITING;
    if (blind) {
        struct rlimit was, soft_none; /* the soft limit alone: only a privileged process may raise the hard one */
        cr_assert_eq(prlimit(posters[0], RLIMIT_NOFILE, NULL, &was), 0);
        soft_none = (struct rlimit){0, was.rlim_max};
        cr_assert_eq(prlimit(posters[0], RLIMIT_NOFILE, &soft_none, NULL), 0);
        cr_assert_eq(kill(posters[0], SIGCONT), 0);
        usleep(300000);
        int raw;
        waited = waitpid(posters[0], &raw, WNOHANG) == 0;
        if (!waited)
            pst[0] = WIFEXITED(raw) ? WEXITSTATUS(raw) : 128 + WTERMSIG(raw);
        blind_state = log->seg->state;
        /* Its descriptors back, with poster 1 still stopped: it must make the repair itself. */
        if (waited) {
            cr_assert_eq(prlimit(posters[0], RLIMIT_NOFILE, &was, NULL), 0);
            pst[0] = th_wait_for(posters[0], 10);
        }
    }
    for (int i = blind; i < N; i++) {
        cr_assert_eq(kill(posters[i], SIGCONT), 0);
        pst[i] = th_wait_for(posters[i], 10);
    }
    cr_assert_eq(forklog_write(log, "after", 5), 0);

    size_t len;
    char *buf = th_slurp(logpath, &len);
    cr_assert_not_null(buf, "no file at path");
    cr_assert(len > 0 && buf[len - 1] == '\n', "the file ends with a fragment:\n%s", buf);
    const int holder_n = strcmp(point, "WRITE_DONE") == 0; /* a completed write is kept, a torn one cut */
    for (int i = 0; i < N; i++) {
        char want[64];
        snprintf(want, sizeof want, "poster %d record", i);
        cr_assert_eq(pst[i], 0, "poster %d's call failed (status %d)", i, pst[i]);
        cr_assert_eq(cp_count_line(buf, want), 1, "%s, acknowledged, is in the file %d times:\n%s", want,
                     cp_count_line(buf, want), buf);
    }
    cr_assert_eq(cp_count_line(buf, "holder record"), holder_n, "the dead holder's record:\n%s", buf);
    cr_assert_eq(cp_count_line(buf, "after"), 1, "%s", buf);
    cr_assert_eq(th_count_lines(buf, len), (size_t)(N + 1 + holder_n), "stray lines:\n%s", buf);
    cp_assert_size_agrees(log, logpath);
    free(buf);
    buf = th_slurp(old, &len);
    cr_assert_not_null(buf);
    cr_assert_str_eq(buf, "before\n", "the renamed file:\n%s", buf);
    free(buf);

    cr_assert_eq(ost, killed ? 128 + SIGKILL : EMFILE, "the process that could not look: status %d (%d: -EMFILE)", ost,
                 EMFILE);
    cr_assert_eq(state, FL__WRITING, "the process that could not look changed the state to %u", state);
    cr_assert_eq(phase, FL__BATCH_WRITE, "the process that could not look changed the batch phase to %u", phase);
    cr_assert(waited, "the poster that could not look returned (status %d) before the repair was made", pst[0]);
    cr_assert_eq(blind_state, FL__WRITING, "the poster that could not look changed the state to %u", blind_state);
    close(go[0]);
    close(go[1]);
    free(old);
    cr_assert_eq(forklog_close(log), 0);
}

Test(combine, a_completed_batch_is_not_written_again_by_a_repairer_that_cannot_open_the_file)
{
    repair_left_by_a_process_without_descriptors("WRITE_DONE", 0, 0);
}

Test(combine, a_torn_batch_is_cut_after_a_repairer_that_cannot_open_the_file)
{
    repair_left_by_a_process_without_descriptors("WRITE_TORN", 0, 0);
}

Test(combine, a_poster_that_cannot_open_the_file_waits_for_the_repair_of_its_batch)
{
    repair_left_by_a_process_without_descriptors("WRITE_DONE", 0, 1);
}

Test(combine, a_repairer_killed_after_leaving_the_repair_undone_is_repaired_after)
{
    repair_left_by_a_process_without_descriptors("WRITE_DONE", 1, 0);
}

/* ---- a dead poster's pid given again while its slot is being taken back ---------------------------------------- */

/* In the scene (no assertion there: a forked child's failing assertion hangs the runner), a writer of `rec` that
 * first arms point cp at its hit-th passage (none when hit is 0). Exits 0 when its call returned 0. */
static pid_t scene_writer(forklog *log, const char *rec, enum fl__crash_point cp, unsigned hit,
                          enum fl__crash_action action)
{
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (hit)
            fl__crash_arm(cp, hit, action);
        _exit(forklog_write(log, rec, strlen(rec)) == 0 ? 0 : 1);
    }
    return pid;
}

/* A writer of `rec` stopped with the lock held (LOCK_HELD); 0 when it did not stop. */
static pid_t scene_holder(forklog *log, const char *rec)
{
    pid_t pid = scene_writer(log, rec, FL__CP_LOCK_HELD, 1, FL__CRASH_STOP);
    return pid > 0 && cp_wait_stopped(pid, 10) ? pid : 0;
}

static int scene_posted(forklog *log, int n)
{
    double until = th_now_s() + 10;
    while (__builtin_popcount(atomic_load(&log->seg->posted)) < n && th_now_s() < until)
        usleep(500);
    return __builtin_popcount(atomic_load(&log->seg->posted)) >= n;
}

/* The slot whose word names poster pid in state `state`; FL__SLOTS if none. */
static unsigned scene_slot(forklog *log, pid_t pid, unsigned state)
{
    for (unsigned k = 0; k < FL__SLOTS; k++) {
        unsigned long long w = atomic_load(&log->seg->slots[k].word);
        if (FL__SLOT_PID(w) == pid && (w & FL__SLOT_STATE) == state)
            return k;
    }
    return FL__SLOTS;
}

/* D posts, its record is written, and it dies before freeing its slot (POST_DONE_SEEN); 31 live posters hold the
 * other slots. R finds every slot used, sees D gone, and stops right before it takes D's slot (POST_RECLAIM).
 * Meanwhile the slot changes hands: R2 takes it back, posts, is written and frees it; N is born with D's pid, takes
 * the free slot, is written, and stops after it saw its slot done (its word now as D left it). R goes on while a
 * holder keeps the lock, then N frees its slot. The slot R read was D's, not N's: R must not take N's, or N frees
 * it under R's posted record, which no holder then writes, and R's call returns 0 for a record not in the file.
 * Pid 1 of a PID namespace of its own (th_pid_namespace_scene), where N can be given D's pid (th_next_pid_is). */
static int scene_pid_back_while_its_slot_is_taken_back(const char *unused, int unused_arg)
{
    (void)unused, (void)unused_arg;
    forklog *log;
    if (forklog_open(&log, logpath, NULL) != 0 || forklog_write(log, "before", 6) != 0)
        return 3;
    pid_t h1 = scene_holder(log, "holder 1");
    if (!h1)
        return 4;
    pid_t d = scene_writer(log, "D record", FL__CP_POST_DONE_SEEN, 1, FL__CRASH_KILL);
    if (!scene_posted(log, 1))
        return 5;
    pid_t fill[FL__SLOTS - 1];
    for (int i = 0; i < FL__SLOTS - 1; i++) {
        char rec[32];
        snprintf(rec, sizeof rec, "filler %d", i);
        fill[i] = scene_writer(log, rec, FL__CP_POST_FLAGGED, 1, FL__CRASH_STOP);
        if (!cp_wait_stopped(fill[i], 10))
            return 6;
    }
    if (kill(h1, SIGCONT) != 0 || th_wait_for(h1, 10) != 0 || th_wait_for(d, 10) != 128 + SIGKILL)
        return 7;
    unsigned k = scene_slot(log, d, FL__SLOT_DONE);
    if (k == FL__SLOTS)
        return 8;
    pid_t h2 = scene_holder(log, "holder 2");
    if (!h2)
        return 9;
    pid_t r = scene_writer(log, "R record", FL__CP_POST_RECLAIM, 1, FL__CRASH_STOP);
    if (!cp_wait_stopped(r, 10))
        return 10;
    pid_t r2 = scene_writer(log, "R2 record", FL__CP_COUNT, 0, 0);
    if (!scene_posted(log, 1) || kill(h2, SIGCONT) != 0 || th_wait_for(h2, 10) != 0 || th_wait_for(r2, 10) != 0)
        return 11;
    if ((atomic_load(&log->seg->slots[k].word) & FL__SLOT_STATE) != FL__SLOT_FREE)
        return 12;
    pid_t h3 = scene_holder(log, "holder 3");
    if (!h3)
        return 13;
    if (th_next_pid_is(d))
        return 78;
    pid_t n = scene_writer(log, "N record", FL__CP_POST_DONE_SEEN, 1, FL__CRASH_STOP);
    if (n != d)
        return 14;
    if (!scene_posted(log, 1) || kill(h3, SIGCONT) != 0 || th_wait_for(h3, 10) != 0 || !cp_wait_stopped(n, 10))
        return 15;
    if (scene_slot(log, d, FL__SLOT_DONE) != k)
        return 16;
    pid_t h4 = scene_holder(log, "holder 4");
    if (!h4 || kill(r, SIGCONT) != 0)
        return 17;
    /* R posts in the slot it took, or waits for the lock having found none. */
    double until = th_now_s() + 0.5;
    while (scene_slot(log, r, FL__SLOT_POSTED) == FL__SLOTS && th_now_s() < until)
        usleep(500);
    if (kill(n, SIGCONT) != 0 || th_wait_for(n, 10) != 0)
        return 18;
    if (kill(h4, SIGCONT) != 0 || th_wait_for(h4, 10) != 0)
        return 19;
    if (th_wait_for(r, 10) != 0)
        return 20;
    for (int i = 0; i < FL__SLOTS - 1; i++)
        if (kill(fill[i], SIGCONT) != 0 || th_wait_for(fill[i], 10) != 0)
            return 21;
    if (forklog_write(log, "after", 5) != 0 || forklog_close(log) != 0)
        return 22;

    size_t size;
    char *buf = th_slurp(logpath, &size);
    if (!buf)
        return 23;
    static const char *const once[] = {"before",   "holder 1", "holder 2",  "holder 3", "holder 4",
                                       "D record", "R record", "R2 record", "N record", "after"};
    int rc = 0;
    for (size_t i = 0; i < sizeof once / sizeof once[0] && !rc; i++)
        if (cp_count_line(buf, once[i]) != 1)
            rc = 30 + (int)i; /* 36: R's call returned 0, its record is not in the file */
    for (int i = 0; i < FL__SLOTS - 1 && !rc; i++) {
        char rec[32];
        snprintf(rec, sizeof rec, "filler %d", i);
        if (cp_count_line(buf, rec) != 1)
            rc = 40;
    }
    if (!rc && th_count_lines(buf, size) != sizeof once / sizeof once[0] + FL__SLOTS - 1)
        rc = 41;
    free(buf);
    return rc;
}

Test(combine, a_dead_posters_pid_given_again_while_its_slot_is_taken_back_loses_no_record, .timeout = 60)
{
    int st = th_pid_namespace_scene(scene_pid_back_while_its_slot_is_taken_back, NULL, 0);
    cr_assert_eq(st, 0, "the scene failed at step %d (36: a call returned 0 and its record is not in the file)", st);
}

/* What a signal handler of a poster sees: its handler's record calls, through the poster's handle or through a handle
 * of another log, made while the poster waits for its posted record to be written. */
static struct handler_calls {
    atomic_int runs;
    int rc[8];       /* through the poster's handle */
    int other_rc[8]; /* through the other log's handle */
} * hcalls;
static forklog *handler_own, *handler_other;

static void log_from_handler(int sig)
{
    (void)sig;
    const int k = atomic_load(&hcalls->runs);
    if (k >= 8)
        return;
    const int saved = errno;
    hcalls->rc[k] = forklog_write(handler_own, "handler record", 14);
    hcalls->other_rc[k] = forklog_write(handler_other, "handler record", 14);
    errno = saved;
    atomic_store(&hcalls->runs, k + 1);
}

Test(combine, a_handler_that_logs_while_its_thread_waits_on_a_posted_record_is_refused_and_the_post_is_written_once)
{
    /* docs/api.md: a record call made by a signal handler that interrupted a record call of its thread, through any
     * handle, fails with -EDEADLK and writes nothing. The poster's thread is past building its record: the record
     * is in a slot, flagged, and the thread sleeps on the lock (a handler without SA_RESTART interrupts that sleep).
     * Taken as a record of its own, the handler's would be posted beside it or wait for the lock for as long as the
     * holder keeps it; the interrupted call must still return 0 with its record in the file once. */
    enum { SIGNALS = 8 };
    hcalls = mmap(NULL, sizeof *hcalls, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(hcalls, MAP_FAILED);
    memset(hcalls, 0x7f, sizeof *hcalls);
    atomic_store(&hcalls->runs, 0);
    char *other = th_path(dir, "other.log");
    cr_assert_eq(forklog_open(&handler_own, logpath, NULL), 0);
    cr_assert_eq(forklog_open(&handler_other, other, NULL), 0);
    cr_assert_eq(forklog_write(handler_own, "before", 6), 0);
    pid_t holder = cp_stopped_holder(handler_own, "holder record", FL__CP_COUNT, 0);
    pid_t poster = fork();
    cr_assert_neq(poster, -1);
    if (poster == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = log_from_handler;
        sigemptyset(&sa.sa_mask);
        if (sigaction(SIGUSR1, &sa, NULL) != 0)
            _exit(2);
        _exit(forklog_write(handler_own, "poster record", 13) == 0 ? 0 : 1);
    }
    int posted = cp_wait_posted(handler_own, 1);
    int ran = 0;
    for (int i = 0; posted && i < SIGNALS; i++) {
        usleep(20000); /* past the spinning and the yielding: the poster sleeps on the lock */
        cr_assert_eq(kill(poster, SIGUSR1), 0);
        double until = th_now_s() + 10;
        while (atomic_load(&hcalls->runs) == i && th_now_s() < until)
            usleep(200);
        ran = atomic_load(&hcalls->runs);
        if (ran != i + 1)
            break;
    }
    cr_assert_eq(kill(holder, SIGCONT), 0);
    int hst = th_wait_for(holder, 10);
    int pst = th_wait_for(poster, 10);
    cr_assert(posted, "the poster did not post");
    cr_assert_eq(ran, SIGNALS, "the handler ran %d times of %d: a record call of it hung", ran, SIGNALS);
    for (int i = 0; i < SIGNALS; i++) {
        cr_assert_eq(hcalls->rc[i], -EDEADLK, "the handler's call %d through the poster's handle returned %d", i,
                     hcalls->rc[i]);
        cr_assert_eq(hcalls->other_rc[i], -EDEADLK, "the handler's call %d through another log's handle returned %d", i,
                     hcalls->other_rc[i]);
    }
    cr_assert_eq(hst, 0, "the holder's call failed (status %d)", hst);
    cr_assert_eq(pst, 0, "the interrupted poster's call failed (status %d)", pst);
    cr_assert_eq(forklog_write(handler_own, "after", 5), 0);
    size_t len;
    char *buf = th_slurp(logpath, &len);
    cr_assert_not_null(buf);
    cr_assert_str_eq(buf, "before\nholder record\nposter record\nafter\n");
    cp_assert_size_agrees(handler_own, logpath);
    free(buf);
    buf = th_slurp(other, &len);
    cr_assert_not_null(buf);
    cr_assert_eq(len, 0, "the other log holds:\n%s", buf);
    free(buf);
    cr_assert_eq(forklog_close(handler_other), 0);
    cr_assert_eq(forklog_close(handler_own), 0);
    munmap(hcalls, sizeof *hcalls);
    free(other);
}

/* One batch, its holder's RLIMIT_FSIZE (SIGXFSZ ignored) `room` bytes past the end of its own record: the writev(2)
 * of the batch stops there, in the middle of a posted record, at its first byte or at its end, or it fits. */
static void limited_batch(size_t room)
{
    forklog *log;
    char name[64];
    snprintf(name, sizeof name, "limited-%zu.log", room);
    char *path = th_path(dir, name);
    cr_assert_eq(forklog_open(&log, path, NULL), 0);
    cr_assert_eq(forklog_write(log, "before", 6), 0);
    pid_t holder = cp_stopped_holder(log, "holder record", FL__CP_COUNT, 0);
    pid_t posters[POSTERS];
    for (int i = 0; i < POSTERS; i++) {
        char rec[64];
        snprintf(rec, sizeof rec, "poster %d record", i);
        posters[i] = cp_writer(log, rec, FL__CP_COUNT, 0);
    }
    int posted = cp_wait_posted(log, POSTERS);
    struct rlimit rl = {7 + 14 + room, RLIM_INFINITY};
    cr_assert_eq(prlimit(holder, RLIMIT_FSIZE, &rl, NULL), 0);
    cr_assert_eq(kill(holder, SIGCONT), 0);
    int hst = th_wait_for(holder, 10);
    int pst[POSTERS];
    for (int i = 0; i < POSTERS; i++)
        pst[i] = th_wait_for(posters[i], 10);
    cr_assert(posted, "room %zu: the posters did not post", room);
    cr_assert_eq(hst, 0, "room %zu: the holder's record, which fits its limit, failed (status %d)", room, hst);
    for (int i = 0; i < POSTERS; i++)
        cr_assert_eq(pst[i], 0, "room %zu: poster %d's call failed (status %d)", room, i, pst[i]);
    cr_assert_eq(forklog_write(log, "after", 5), 0);
    size_t len;
    char *buf = th_slurp(path, &len);
    cr_assert_not_null(buf);
    cr_assert(len > 0 && buf[len - 1] == '\n', "room %zu: the file ends with a fragment:\n%s", room, buf);
    cr_assert_eq(strncmp(buf, "before\nholder record\n", 21), 0, "room %zu:\n%s", room, buf);
    for (int i = 0; i < POSTERS; i++) {
        char want[64];
        snprintf(want, sizeof want, "poster %d record", i);
        cr_assert_eq(cp_count_line(buf, want), 1, "room %zu: %s %d times:\n%s", room, want, cp_count_line(buf, want),
                     buf);
    }
    cr_assert_eq(th_count_lines(buf, len), (size_t)(POSTERS + 3), "room %zu: stray lines:\n%s", room, buf);
    cr_assert_str_eq(buf + len - 6, "after\n");
    cp_assert_size_agrees(log, path);
    free(buf);
    cr_assert_eq(forklog_close(log), 0);
    free(path);
}

Test(combine, a_batch_cut_by_its_holders_file_size_limit_anywhere_fails_no_record_and_leaves_no_fragment)
{
    /* The limit is the holder's own: whatever part of the batch went in before it is cut away, the posted records
     * are given back and written whole, once, by their posters, and the holder's own record, which fits, is written
     * alone; no call fails. Each posted record is 16 bytes. */
    signal(SIGXFSZ, SIG_IGN);
    static const size_t rooms[] = {0, 1, 15, 16, 17, 31, 32, 40, 47, 48};
    for (size_t i = 0; i < sizeof rooms / sizeof rooms[0]; i++)
        limited_batch(rooms[i]);
}
