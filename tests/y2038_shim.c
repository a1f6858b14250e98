/* SPDX-License-Identifier: MIT */
/* Preloaded into a 32-bit glibc program (tests/abi32_check.c's `clock` check): the wall clock runs 20 years ahead,
 * past January 2038, and the two entry points of clock_gettime() answer as glibc's do then: the time64 one
 * (__clock_gettime64, which a _TIME_BITS=64 build calls) gives the time; the 32-bit one (clock_gettime, which a
 * build with a 32-bit time_t calls) fails with EOVERFLOW once the seconds do not fit, as glibc's wrapper does. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define AHEAD 631152000LL /* 20 years of seconds */

struct fl__ts64 {
    int64_t sec;
    int32_t nsec;
    int32_t pad;
};

static int fl__now64(clockid_t c, struct fl__ts64 *t)
{
    if (syscall(403 /* i386's clock_gettime64 */, c, t) < 0)
        return -1;
    if (c == CLOCK_REALTIME || c == CLOCK_REALTIME_COARSE)
        t->sec += AHEAD;
    return 0;
}

int __clock_gettime64(clockid_t c, struct fl__ts64 *t);
int __clock_gettime64(clockid_t c, struct fl__ts64 *t)
{
    return fl__now64(c, t);
}

int clock_gettime(clockid_t c, struct timespec *ts)
{
    struct fl__ts64 t;
    if (fl__now64(c, &t) < 0)
        return -1;
    if ((int64_t)(time_t)t.sec != t.sec) {
        errno = EOVERFLOW;
        return -1;
    }
    ts->tv_sec = (time_t)t.sec;
    ts->tv_nsec = t.nsec;
    return 0;
}
