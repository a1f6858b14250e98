/* SPDX-License-Identifier: MIT */
/* Every crash point in every mode. For each named step of the lock, repair, combining, write, flush, rotation and
 * reopen protocols (lib/internal.h), and each mode (direct, combining, buffered, rotating), a writer is killed
 * with SIGKILL at that step, in the real code, while others write, and then:
 *   - every acknowledged record is in the file(s) exactly once, and the victim's record in flight at most once;
 *   - nothing is torn (every line is a whole self-checking record);
 *   - no writer waits on a free lock: every survivor finishes within a bound;
 *   - the size the segment believes is the file's real size.
 * The table `reach` says in which modes each point must be reached; a point missing from it fails the test, so a
 * new protocol step cannot be added without being killed at. A point reached in no mode here ("") must be named by
 * another test's source (FL__CP_NAME or "NAME"), the staged test that stops or kills there. Children never assert: they
 * report through their exit status and shared memory. */
#include "points.h"
#include "records.h"

#include <dirent.h>
#include <stdatomic.h>
#include <sys/mman.h>

enum { BG = 3, BG_RECORDS = 80, V_RECORDS = 60, ID_V = BG, ID_H, ID_P0, ID_PARENT, IDS };

/* Seconds the survivors have, all together, once the scene is set (the holder continued, or the first writer's
 * death repaired), to finish all of their records. */
#define QUIET_TAIL_S 20.0

struct mode {
    char letter;
    const char *name;
    struct forklog_options opts;
    size_t min, max; /* record payload sizes */
};

static const struct mode modes[] = {
    /* Records over 1 KiB take the plain path: one writer, one write, no combining. */
    {'D', "direct", {.flags = 0}, 1100, 3000},
    {'C', "combining", {.flags = 0}, 20, 900},
    /* Buffered without rotation: lock-free rings (4 KiB each); with rotation: one buffer under the lock. */
    {'B', "buffered", {.flags = FORKLOG_BUFFERED, .buffer_size = 4096}, 20, 900},
    {'R', "rotating", {.rotate_bytes = 16384, .rotate_keep = 1000}, 20, 900},
    {'Q',
     "buffered rotating",
     {.flags = FORKLOG_BUFFERED, .buffer_size = 4096, .rotate_bytes = 16384, .rotate_keep = 1000},
     20,
     900},
};

/* Where each point must be reached: D direct, C combining, B buffered (rings), R rotating, Q buffered and rotating
 * (the locked buffer). FILE_NEWLINE ("") is passed only for a file that ends mid-line: test_crash kills there.
 * REPAIR_DEFERRED ("") is passed only by a repairer that cannot open the log's path: test_combine kills there.
 * POST_RECLAIM ("") is passed only by a poster that finds every slot used and one of them left by a dead poster:
 * test_combine stops there. The segment's points ("") are passed by forklog_open() and forklog_close(), not by
 * records: test_join kills there. The rings' ownership points
 * ("") are passed only when a thread finds a ring bearing its pid and tid, or every ring taken: test_ring kills or
 * stops there. WRITE_FAILED ("") is passed only by a write that fails: test_targets kills there, after a FIFO's
 * reader went away in the middle of a record or a flush. REST_MARKED and REST_DROPPED ("") are passed only when the
 * log moves off a FIFO after such a flush: test_targets kills there. */
static const struct {
    const char *point;
    const char *modes;
} reach[] = {
    /* One point per line. */
    /* clang-format off */
    {"LOCK_ACQUIRED", "DCBRQ"},
    {"LOCK_SLEEP_TIMEOUT", "DCBRQ"},
    {"REPAIR_FILE", "DCBRQ"},
    {"REPAIR_BATCH", "DCBRQ"},
    {"REPAIR_DEFERRED", ""},
    {"LOCK_HELD", "DCBRQ"},
    {"UNLOCK", "DCBRQ"},
    {"OWN_FD_OPENED", "DCBRQ"},
    {"REOPEN_TAKEN", "DCBRQ"},
    {"REOPEN_SEEN", "DCBRQ"},
    {"REOPEN_OPENED", "DCBRQ"},
    {"FILE_NEWLINE", ""},
    {"REST_MARKED", ""},
    {"REST_DROPPED", ""},
    {"FILE_KNOWN", "DCBRQ"},
    {"ROTATE_BEGIN", "RQ"},
    {"ROTATE_RENAMED", "RQ"},
    {"FILE_CREATED", "RQ"},
    {"ROTATE_CREATED", "RQ"},
    {"ROTATE_DONE", "RQ"},
    {"WRITE_TARGET", "DCBRQ"},
    {"WRITE_BEGIN", "DCBRQ"},
    {"WRITE_TORN", "DCBRQ"},
    {"WRITE_FAILED", ""},
    {"WRITE_DONE", "DCBRQ"},
    {"WRITE_SIZED", "DCBRQ"},
    {"WRITE_COMMITTED", "DCBRQ"},
    {"BUF_COPIED", "Q"},
    {"BUF_PUBLISHED", "Q"},
    {"POST_RECLAIM", ""},
    {"POST_CLAIMED", "C"},
    {"POST_POSTED", "C"},
    {"POST_FLAGGED", "C"},
    {"POST_DONE_SEEN", "C"},
    {"BATCH_GATHER", "C"},
    {"BATCH_SWAPPED", "C"},
    {"BATCH_TAKEN", "C"},
    {"BATCH_TARGET", "C"},
    {"BATCH_WRITTEN", "C"},
    {"BATCH_RESULT", "C"},
    {"BATCH_MARKED", "C"},
    {"RING_CLAIMED", "B"},
    {"RING_ADOPTED", ""},
    {"RING_OWNER_GONE", ""},
    {"RING_COPIED", "B"},
    {"RING_PUBLISHED", "B"},
    {"RING_TARGET", "B"},
    {"RING_PLANNED", "B"},
    {"RING_RELEASED", "B"},
    {"SEG_CREATED", ""},
    {"SEG_ALONE", ""},
    {"SEG_RECOVERED", ""},
    {"SEG_SIZED", ""},
    {"SEG_BUILT", ""},
    {"SEG_JOIN_LOCKED", ""},
    {"SEG_JOINED", ""},
    {"SEG_CLOSE_ALONE", ""},
    /* clang-format on */
};

static const char *reach_modes(enum fl__crash_point cp)
{
    for (size_t i = 0; i < sizeof reach / sizeof reach[0]; i++)
        if (strcmp(reach[i].point, fl__crash_name(cp)) == 0)
            return reach[i].modes;
    return NULL;
}

struct shared {
    atomic_uint acked[IDS]; /* records 0 .. acked-1 of writer id returned 0 */
};

/* A writer child: n records of id, acknowledging each in shared memory before the next call; with reopen_every,
 * a forklog_reopen() before every reopen_every-th record. Exits 0, or 3 when a call failed. */
static _Noreturn void writer(forklog *log, struct shared *sh, const struct mode *m, unsigned id, unsigned n,
                             unsigned reopen_every)
{
    char *buf = malloc(RC_HEAD_MAX + m->max);
    if (!buf)
        _exit(2);
    unsigned seed = id * 7919u + 1;
    for (unsigned seq = 0; seq < n; seq++) {
        if (reopen_every && seq % reopen_every == 0)
            forklog_reopen(log);
        size_t len = m->min + (size_t)rand_r(&seed) % (m->max - m->min + 1);
        if (rc_write(log, buf, 'R', id, seq, 0, len) != 0)
            _exit(3);
        atomic_store(&sh->acked[id], seq + 1);
    }
    /* Buffered, its records may still wait: written here. With the rings, appends take no lock: the holder and the
     * first writer of the repair scene take it here. */
    if ((log->flags & FORKLOG_BUFFERED) && forklog_flush(log) != 0)
        _exit(4);
    _exit(0);
}

/* Forks a writer that first arms `arm` (a list of point, hit, action triples ended by hit 0). */
struct arming {
    enum fl__crash_point cp;
    unsigned hit;
    enum fl__crash_action action;
};

static pid_t spawn(forklog *log, struct shared *sh, const struct mode *m, unsigned id, unsigned n,
                   unsigned reopen_every, const struct arming *arm)
{
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        rc_child();
        for (; arm && arm->hit; arm++)
            fl__crash_arm(arm->cp, arm->hit, arm->action);
        writer(log, sh, m, id, n, reopen_every);
    }
    return pid;
}

static int is_batch_point(enum fl__crash_point cp)
{
    return strncmp(fl__crash_name(cp), "BATCH_", 6) == 0;
}

/* One case: the victim dies at the first passage of `cp`. Returns whether it did. */
static int run_case(const char *dir, const struct mode *m, enum fl__crash_point cp)
{
    char *logpath = th_path(dir, "points.log");
    forklog *log = NULL;
    struct forklog_options o = m->opts;
    cr_assert_eq(forklog_open(&log, logpath, &o), 0);
    struct shared *sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(sh, MAP_FAILED);
    const char *name = fl__crash_name(cp);
    int repair = cp == FL__CP_REPAIR_FILE || cp == FL__CP_REPAIR_BATCH;
    int holder_dies = is_batch_point(cp);
    struct arming die[] = {{cp, 1, FL__CRASH_KILL}, {cp, 0, 0}};

    /* The scene. For the repair points, a first writer dies holding the lock (with half a record in the file where
     * the mode writes at once; buffered, with its acknowledged record written by its flush but not yet counted as
     * written, so that the rings' or the buffer's repair is still to make after the file's), and the victim is the
     * next locker. Otherwise a holder stops with the lock, so that
     * the victim and the others queue, post or sleep behind it; for the batch points the holder is the victim. */
    pid_t h = 0;
    if (repair) {
        struct arming p0[] = {{strchr("BQ", m->letter) ? FL__CP_WRITE_DONE : FL__CP_WRITE_TORN, 1, FL__CRASH_KILL},
                              {cp, 0, 0}};
        pid_t p = spawn(log, sh, m, ID_P0, 1, 0, p0);
        cr_assert_eq(th_wait_for(p, 10), 128 + SIGKILL, "%s/%s: the first writer did not die", m->name, name);
    } else {
        struct arming hold[] = {{FL__CP_LOCK_HELD, 1, FL__CRASH_STOP}, {cp, holder_dies, FL__CRASH_KILL}, {cp, 0, 0}};
        h = spawn(log, sh, m, ID_H, 1, 0, hold);
        cr_assert(cp_wait_stopped(h, 10), "%s/%s: the holder did not stop with the lock", m->name, name);
    }
    pid_t v = spawn(log, sh, m, ID_V, V_RECORDS, 5, holder_dies ? NULL : die);
    int vst = -1;
    if (repair)
        vst = th_wait_for(v, QUIET_TAIL_S);
    pid_t bg[BG];
    for (unsigned i = 0; i < BG; i++)
        bg[i] = spawn(log, sh, m, i, BG_RECORDS, 0, NULL);
    if (h) {
        /* Long enough for the others to queue and for a sleeper's bounded wait to run out. */
        usleep(60 * 1000);
        cr_assert_eq(kill(h, SIGCONT), 0);
    }

    /* The quiet tail: no more kills but the victim's; every survivor must finish within QUIET_TAIL_S of its start,
     * all of them together (one bound per wait, one after the other, would allow a multiple of it). */
    const double tail_end = th_now_s() + QUIET_TAIL_S;
    if (!repair)
        vst = th_wait_for(v, tail_end - th_now_s());
    int hst = h ? th_wait_for(h, tail_end - th_now_s()) : 0;
    for (unsigned i = 0; i < BG; i++) {
        int st = th_wait_for(bg[i], tail_end - th_now_s());
        cr_assert_eq(st, 0, "%s/%s: writer %u ended with %d (-2: still waiting after %.0f s)", m->name, name, i, st,
                     QUIET_TAIL_S);
    }
    int reached = holder_dies ? hst == 128 + SIGKILL : vst == 128 + SIGKILL;
    cr_assert(holder_dies ? vst == 0 : (vst == 0 || reached), "%s/%s: victim ended with %d", m->name, name, vst);
    cr_assert(holder_dies ? (hst == 0 || reached) : hst == 0, "%s/%s: holder ended with %d", m->name, name, hst);

    /* The test process writes last (repairing whatever is left) and checks the segment's size. */
    char *buf = malloc(RC_HEAD_MAX + 16);
    cr_assert_eq(rc_write(log, buf, 'R', ID_PARENT, 0, 0, 8), 0, "%s/%s: the test process's record", m->name, name);
    free(buf);
    cr_assert_eq(forklog_flush(log), 0);
    cp_assert_size_agrees(log, logpath);
    cr_assert_eq(forklog_close(log), 0);

    struct rc_seen seen;
    rc_seen_init(&seen, IDS, BG_RECORDS > V_RECORDS ? BG_RECORDS : V_RECORDS);
    rc_scan(&seen, logpath, 0);
    if (m->opts.rotate_bytes) {
        for (unsigned k = 1; k <= m->opts.rotate_keep; k++) {
            char rotated[64];
            snprintf(rotated, sizeof rotated, "points.log.%u", k);
            char *p = th_path(dir, rotated);
            rc_scan(&seen, p, k);
            free(p);
        }
    }
    for (unsigned i = 0; i < BG; i++)
        for (unsigned q = 0; q < BG_RECORDS; q++)
            cr_assert_eq(rc_count(&seen, i, q), 1, "%s/%s: writer %u record %u is there %u times", m->name, name, i, q,
                         rc_count(&seen, i, q));
    unsigned acked = atomic_load(&sh->acked[ID_V]);
    for (unsigned q = 0; q < V_RECORDS; q++) {
        unsigned c = rc_count(&seen, ID_V, q);
        if (q < acked)
            cr_assert_eq(c, 1, "%s/%s: acknowledged record %u of the victim is there %u times", m->name, name, q, c);
        else if (q == acked)
            cr_assert_leq(c, 1, "%s/%s: the victim's record in flight is there %u times", m->name, name, c);
        else
            cr_assert_eq(c, 0, "%s/%s: record %u of the victim was never written but is there", m->name, name, q);
    }
    unsigned hc = rc_count(&seen, ID_H, 0);
    if (h && !(holder_dies && reached))
        cr_assert_eq(hc, 1, "%s/%s: the holder's record is there %u times", m->name, name, hc);
    else
        cr_assert_leq(hc, 1, "%s/%s: the dead holder's record is there %u times", m->name, name, hc);
    /* The first writer's record: once if its call returned (buffered, before the flush it died in), else at most. */
    if (atomic_load(&sh->acked[ID_P0]))
        cr_assert_eq(rc_count(&seen, ID_P0, 0), 1, "%s/%s: the first writer's acknowledged record is there %u times",
                     m->name, name, rc_count(&seen, ID_P0, 0));
    else
        cr_assert_leq(rc_count(&seen, ID_P0, 0), 1);
    cr_assert_eq(rc_count(&seen, ID_PARENT, 0), 1);
    rc_seen_free(&seen);
    munmap(sh, sizeof *sh);
    free(logpath);
    return reached;
}

static void run_mode(char letter)
{
    const struct mode *m = NULL;
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++)
        if (modes[i].letter == letter)
            m = &modes[i];
    cr_assert_not_null(m);
    rc_init();
    int cases = 0, reached = 0;
    for (int c = 0; c < FL__CP_COUNT; c++) {
        enum fl__crash_point cp = (enum fl__crash_point)c;
        const char *where = reach_modes(cp);
        cr_assert_not_null(where, "crash point %s has no row in this test's table", fl__crash_name(cp));
        if (!strchr(where, letter))
            continue;
        /* A few points are passed only by the writer that wins a race (REOPEN_SEEN: the first holder after a
         * reopen request; FILE_KNOWN: the first after a new generation), so a case that did not reach its point is
         * run again, up to 5 times; every run checks every invariant. */
        int ok = 0;
        for (int attempt = 0; attempt < 5 && !ok; attempt++) {
            char *dir = th_tmpdir();
            ok = run_case(dir, m, cp);
            th_rmdir(dir);
            free(dir);
        }
        cr_assert(ok, "%s: crash point %s was never reached in 5 runs", m->name, fl__crash_name(cp));
        cases++;
        reached += ok;
    }
    fprintf(stderr, "crash points %s: %d points, each killed at, every invariant held\n", m->name, reached);
}

/* Whether a test source other than this one names point `name` as a staged test arms it: FL__CP_NAME, or "NAME"
 * (cp_find, a table of names). */
static int armed_elsewhere(const char *name)
{
    char code[64], quoted[64];
    snprintf(code, sizeof code, "FL__CP_%s", name);
    snprintf(quoted, sizeof quoted, "\"%s\"", name);
    DIR *d = opendir(TESTS_SOURCE_DIR);
    cr_assert_not_null(d, "cannot list %s", TESTS_SOURCE_DIR);
    int found = 0;
    for (struct dirent *e; !found && (e = readdir(d));) {
        size_t n = strlen(e->d_name);
        if (n < 3 || strcmp(e->d_name + n - 2, ".c") != 0 || strcmp(e->d_name, "test_points.c") == 0)
            continue;
        char *path = th_path(TESTS_SOURCE_DIR, e->d_name);
        size_t len;
        char *src = th_slurp(path, &len);
        cr_assert_not_null(src, "cannot read %s", path);
        for (const char *at = src; !found && (at = strstr(at, code)); at += strlen(code)) {
            char next = at[strlen(code)];
            found = !(next == '_' || (next >= 'A' && next <= 'Z') || (next >= '0' && next <= '9'));
        }
        found = found || strstr(src, quoted) != NULL;
        free(src);
        free(path);
    }
    closedir(d);
    return found;
}

Test(points, every_point_not_reached_here_is_killed_at_by_another_test)
{
    /* A point this test does not reach in any mode ("" in `reach`) is proven only by a staged test of its own: one
     * that stops or kills a process there. A new point, or one whose only test was dropped, fails here. */
    for (int c = 0; c < FL__CP_COUNT; c++) {
        const char *name = fl__crash_name((enum fl__crash_point)c);
        const char *where = reach_modes((enum fl__crash_point)c);
        cr_assert_not_null(where, "crash point %s has no row in this test's table", name);
        if (!*where)
            cr_expect(armed_elsewhere(name), "crash point %s is reached by no mode here and armed by no other test",
                      name);
    }
}

Test(points, every_point_direct, .timeout = 240)
{
    run_mode('D');
}

Test(points, every_point_combining, .timeout = 240)
{
    run_mode('C');
}

Test(points, every_point_buffered, .timeout = 240)
{
    run_mode('B');
}

Test(points, every_point_rotating, .timeout = 240)
{
    run_mode('R');
}

Test(points, every_point_buffered_rotating, .timeout = 240)
{
    run_mode('Q');
}
