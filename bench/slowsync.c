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

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real)
        real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    int rc = real(fd);
    slow_down();
    return rc;
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real)
        real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    int rc = real(fd);
    slow_down();
    return rc;
}
