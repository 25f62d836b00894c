/* A slower disk for `make bench`'s store rows: every fsync and fdatasync of the process
 * returns SLOWSYNC_US microseconds later than the disk answered, as on a disk whose cache
 * flush costs that much more (a SATA SSD without power-loss protection, a network volume).
 * Loaded with LD_PRELOAD by bench/store.py; LMDB's commits call fdatasync through libc. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>

static void slow_down(void) {
    static long us = -1;
    if (us < 0) {
        const char *value = getenv("SLOWSYNC_US");
        us = value ? atol(value) : 0;
    }
    if (us > 0) {
        struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
        nanosleep(&ts, NULL);
    }
}

typedef int (*sync_call)(int);

static int call_then_slow_down(sync_call *real, const char *name, int fd) {
    if (!*real)
        *real = (sync_call)dlsym(RTLD_NEXT, name);
    int rc = (*real)(fd);
    slow_down();
    return rc;
}

int fdatasync(int fd) {
    static sync_call real;
    return call_then_slow_down(&real, "fdatasync", fd);
}

int fsync(int fd) {
    static sync_call real;
    return call_then_slow_down(&real, "fsync", fd);
}
