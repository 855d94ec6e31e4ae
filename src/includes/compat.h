/* Platform switches for the compiled core: every OS difference lives here,
 * as 0/1 macros and tiny inline helpers, so the Cython code has no IF/DEF. */
#ifndef CYASYNCORE_COMPAT_H
#define CYASYNCORE_COMPAT_H

#include <errno.h>
#include <string.h>

#ifdef _WIN32
/* Windows: no poll(2) worth using (WSAPoll misses failed connects), so the
 * core waits through Python's select module; these stubs only let it compile. */
#define CYA_HAVE_POLL 0
typedef struct { int fd; short events; short revents; } cya_pollfd;
#define CYA_POLLIN 0x0001
#define CYA_POLLPRI 0x0002
#define CYA_POLLOUT 0x0004
#define CYA_POLLERR 0x0008
#define CYA_POLLHUP 0x0010
#define CYA_POLLNVAL 0x0020
static int cya_poll(cya_pollfd *fds, unsigned long n, int ms)
{
    (void)fds; (void)n; (void)ms;
    errno = ENOSYS;
    return -1;
}
static double cya_monotonic(void) { return 0.0; }
#else
#include <poll.h>
#define CYA_HAVE_POLL 1
typedef struct pollfd cya_pollfd;
#define CYA_POLLIN POLLIN
#define CYA_POLLPRI POLLPRI
#define CYA_POLLOUT POLLOUT
#define CYA_POLLERR POLLERR
#define CYA_POLLHUP POLLHUP
#define CYA_POLLNVAL POLLNVAL
#include <time.h>
static int cya_poll(cya_pollfd *fds, unsigned long n, int ms)
{
    return poll(fds, (nfds_t)n, ms);
}
/* Seconds on a clock that never jumps: for the rest of a wait after EINTR. */
static double cya_monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}
#endif

/* Index of needle in hay[0:hlen], or -1.  Terminators are short, so a
 * memchr on the first byte and a memcmp beats anything cleverer. */
static Py_ssize_t cya_find(const char *hay, Py_ssize_t hlen,
                           const char *needle, Py_ssize_t nlen)
{
    const char *p = hay, *end = hay + hlen - nlen;
    if (nlen <= 0)
        return 0;
    if (nlen > hlen)
        return -1;
    while (p <= end) {
        p = (const char *)memchr(p, needle[0], (size_t)(end - p + 1));
        if (p == NULL)
            return -1;
        if (memcmp(p, needle, (size_t)nlen) == 0)
            return p - hay;
        p++;
    }
    return -1;
}

/* Length of the longest proper prefix of needle that ends hay[0:hlen]. */
static Py_ssize_t cya_prefix_at_end(const char *hay, Py_ssize_t hlen,
                                    const char *needle, Py_ssize_t nlen)
{
    Py_ssize_t n = nlen - 1;
    for (; n > 0; n--) {
        if (n <= hlen && memcmp(hay + hlen - n, needle, (size_t)n) == 0)
            return n;
    }
    return 0;
}

#endif
