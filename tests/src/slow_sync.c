/* A disk that syncs slowly, for one coord-server process: loaded with LD_PRELOAD, it delays
 * every fsync and fdatasync by COORD_TEST_SYNC_DELAY_MS milliseconds before doing it, as a
 * throttled or overloaded volume would. Built and loaded by `coord_tests::slow_disk`. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <time.h>

typedef int (*sync_call)(int);

static void wait_like_a_slow_disk(void) {
    static long delay_ms = -1;
    if (delay_ms < 0) {
        const char *text = getenv("COORD_TEST_SYNC_DELAY_MS");
        delay_ms = text ? atol(text) : 0;
    }
    if (delay_ms <= 0) {
        return;
    }
    struct timespec left = {delay_ms / 1000, (delay_ms % 1000) * 1000000L};
    while (nanosleep(&left, &left) != 0 && errno == EINTR) {
    }
}

/* Waits, then makes the real call (looked up once), with the caller's errno kept. */
static int sync_slowly(const char *name, sync_call *real, int fd) {
    if (!*real) {
        *real = (sync_call)dlsym(RTLD_NEXT, name);
    }
    int saved = errno;
    wait_like_a_slow_disk();
    errno = saved;
    return (*real)(fd);
}

int fsync(int fd) {
    static sync_call real;
    return sync_slowly("fsync", &real, fd);
}

int fdatasync(int fd) {
    static sync_call real;
    return sync_slowly("fdatasync", &real, fd);
}
