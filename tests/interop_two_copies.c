/* SPDX-License-Identifier: MIT */
/* Two copies of the library in one process: this program is linked to libforklog.a and loads libforklog.so with
 * dlopen() (RTLD_LOCAL), as a program that links forklog statically and loads a plugin that uses the shared
 * library would. It opens one log through each copy, and its threads, and those of a child forked afterwards,
 * write through both in turn (FORKLOG_BUFFERED when asked: a thread then has a ring by its pid and tid in both).
 *     interop_two_copies LIBFORKLOG_SO PATH [buffered]
 * Records `I id=ID seq=S |PAYLOAD` as tests/interop_writer.c writes them, COUNT per thread, ids 1 and 2 in the
 * parent and 11 and 12 in the child. Exit status: 0; 2 usage or dlopen; 3 an open failed; 5 a record or a close
 * failed. */
#include "forklog.h"

#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

enum { COUNT = 2000 };

typedef int (*open_fn)(forklog **, const char *, const struct forklog_options *);
typedef int (*write_fn)(forklog *, const void *, size_t);
typedef int (*close_fn)(forklog *);
static write_fn so_write;
static forklog *via_a, *via_so;

static void *writer(void *arg)
{
    unsigned id = (unsigned)(size_t)arg;
    char b[160];
    for (unsigned s = 0; s < COUNT; s++) {
        int n = snprintf(b, sizeof b, "I id=%u seq=%u |", id, s);
        for (unsigned i = 0; i < 40 + (id * 7 + s) % 60; i++)
            b[n++] = (char)('a' + (id + s + i) % 26);
        b[n++] = '\n';
        /* Each record through the other copy than the one before. */
        if ((s & 1 ? so_write(via_so, b, (size_t)n) : forklog_write(via_a, b, (size_t)n)) != 0)
            return (void *)1;
    }
    return NULL;
}

static int run(unsigned first)
{
    pthread_t t[2];
    void *bad[2] = {NULL, NULL};
    for (unsigned i = 0; i < 2; i++)
        if (pthread_create(&t[i], NULL, writer, (void *)(size_t)(first + i)) != 0)
            return 5;
    for (unsigned i = 0; i < 2; i++)
        pthread_join(t[i], &bad[i]);
    return bad[0] || bad[1] ? 5 : 0;
}

int main(int argc, char **argv)
{
    if (argc < 3)
        return 2;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    void *so = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!so) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return 2;
    }
    open_fn so_open = (open_fn)(size_t)dlsym(so, "forklog_open");
    close_fn so_close = (close_fn)(size_t)dlsym(so, "forklog_close");
    so_write = (write_fn)(size_t)dlsym(so, "forklog_write");
    if (!so_open || !so_close || !so_write || so_open == forklog_open)
        return 2;
    struct forklog_options o = {.flags = argc > 3 && strcmp(argv[3], "buffered") == 0 ? FORKLOG_BUFFERED : 0};
    if (forklog_open(&via_a, argv[2], &o) != 0 || so_open(&via_so, argv[2], &o) != 0)
        return 3;
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int rc = run(11);
        _exit(rc | (forklog_close(via_a) != 0 || so_close(via_so) != 0 ? 5 : 0));
    }
    int rc = run(1), status = 1;
    if (pid < 0 || waitpid(pid, &status, 0) != pid || status != 0)
        rc = 5;
    if (forklog_close(via_a) != 0 || so_close(via_so) != 0)
        rc = 5;
    return rc;
}
