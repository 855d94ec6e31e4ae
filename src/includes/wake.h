/* The wake-up descriptor of the compiled timers (issue 14): an eventfd on
 * Linux, a non-blocking close-on-exec self-pipe elsewhere. */
#ifndef CYASYNCORE_WAKE_H
#define CYASYNCORE_WAKE_H

#include <errno.h>

#ifdef _WIN32
static int cya_wake_open(int *r, int *w) { (void)r; (void)w; errno = ENOSYS; return -1; }
static void cya_wake_signal(int w) { (void)w; }
static void cya_wake_drain(int r) { (void)r; }
#else
#include <fcntl.h>
#include <stdint.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/eventfd.h>
#define CYA_WAKE_EVENTFD 1
#else
#define CYA_WAKE_EVENTFD 0
#endif

static int cya_wake_open(int *r, int *w)
{
#if CYA_WAKE_EVENTFD
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd < 0)
        return -1;
    *r = *w = fd;
    return 0;
#else
    int fds[2];
    if (pipe(fds) < 0)
        return -1;
    for (int i = 0; i < 2; i++) {
        fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) | O_NONBLOCK);
        fcntl(fds[i], F_SETFD, FD_CLOEXEC);
    }
    *r = fds[0];
    *w = fds[1];
    return 0;
#endif
}

/* EAGAIN means a wake-up is pending already: nothing more to do. */
static void cya_wake_signal(int w)
{
#if CYA_WAKE_EVENTFD
    uint64_t one = 1;
    ssize_t done = write(w, &one, sizeof one);
#else
    char one = 0;
    ssize_t done = write(w, &one, 1);
#endif
    (void)done;
}

static void cya_wake_drain(int r)
{
#if CYA_WAKE_EVENTFD
    uint64_t count;
    ssize_t done = read(r, &count, sizeof count);
    (void)done;
#else
    char buf[256];
    while (read(r, buf, sizeof buf) > 0)
        ;
#endif
}
#endif

#endif
