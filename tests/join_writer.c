/* SPDX-License-Identifier: MIT */
/* A writer program for the tests in which processes that share no ancestry with the log's opener join it: it is
 * exec'd (posix_spawn) by test_join and opens the log itself.
 *     join_writer PATH ID COUNT SIZE [buffered]
 * writes records ID/0 .. ID/COUNT-1 of SIZE payload bytes (tests/records.h), then closes the log. Exit status: 0,
 * 2 usage, 3 open failed, 4 a record failed, 5 close failed. */
#include "records.h"

int main(int argc, char **argv)
{
    if (argc < 5)
        return 2;
    rc_init();
    unsigned id = (unsigned)strtoul(argv[2], NULL, 10), count = (unsigned)strtoul(argv[3], NULL, 10);
    size_t size = (size_t)strtoul(argv[4], NULL, 10);
    struct forklog_options o = {.flags = argc > 5 && strcmp(argv[5], "buffered") == 0 ? FORKLOG_BUFFERED : 0};
    forklog *log;
    if (forklog_open(&log, argv[1], &o) != 0)
        return 3;
    char *buf = malloc(RC_HEAD_MAX + size);
    if (!buf)
        return 4;
    for (unsigned seq = 0; seq < count; seq++)
        if (rc_write(log, buf, 'R', id, seq, 0, size) != 0)
            return 4;
    free(buf);
    return forklog_close(log) == 0 ? 0 : 5;
}
