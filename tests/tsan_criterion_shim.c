/* SPDX-License-Identifier: MIT */
/* Preloaded by tests/tsan.sh into the Criterion tests under ThreadSanitizer. Criterion's BoxFort places its
 * inheritable arena at a random address in [0x200000000000, 0x600000000000) drawn with rand_r() on a seed of its own,
 * and nearly all of that range is TSan's shadow or memory it refuses to map: the program aborts at once ("Could not
 * initialize inheritable arena", Criterion issue #274). Draws on a seed kept in libcriterion are steered into
 * 0x560000000000 .. 0x568000000000, which TSan leaves to the program; every other caller (the tests' own rand_r())
 * gets a plain linear congruential draw. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <string.h>

int rand_r(unsigned *seed);

int rand_r(unsigned *seed)
{
    *seed = *seed * 1103515245u + 12345u;
    unsigned v = (*seed >> 16) & 0x7fff;
    Dl_info info;
    if (dladdr(seed, &info) && info.dli_fname && strstr(info.dli_fname, "libcriterion"))
        return (int)(0x360000u + v); /* BoxFort: base + (r & 0x3fffff) << 24 */
    return (int)v;
}
