/* The kernel-side interest set: epoll on Linux, kqueue on macOS and the BSDs.
 *
 * The compiled core keeps each long-lived map's interest in the kernel
 * between passes and only tells it what changed.  This header is the whole
 * of the per-OS difference: a handful of calls that speak poll(2)'s
 * vocabulary (CYA_POLLIN, CYA_POLLPRI, CYA_POLLOUT in, revents out), so the
 * Cython code never sees epoll or kqueue.  Where neither exists (Windows,
 * other Unixes) CYA_KSET is 0 and the core keeps its poll/select passes.
 *
 * Every registration carries a serial chosen by the caller; an event comes
 * back with the serial it was registered under, so the caller can tell a
 * current registration from a stale one.
 */
#ifndef CYASYNCORE_KSET_H
#define CYASYNCORE_KSET_H

#include "compat.h"

#if defined(__linux__) && !defined(CYA_NO_KSET)
#define CYA_KSET 1
#define CYA_KSET_NAME "epoll"
#include <stdint.h>
#include <sys/epoll.h>
#include <unistd.h>
typedef struct epoll_event cya_kraw;

#elif (defined(__APPLE__) || defined(__FreeBSD__) || defined(__OpenBSD__) || \
       defined(__NetBSD__) || defined(__DragonFly__)) && !defined(CYA_NO_KSET)
#define CYA_KSET 2
#define CYA_KSET_NAME "kqueue"
#include <stdint.h>
#include <sys/types.h>
#include <sys/event.h>
#include <sys/time.h>
#include <fcntl.h>
#include <unistd.h>
typedef struct kevent cya_kraw;

#else
#define CYA_KSET 0
#define CYA_KSET_NAME ""
typedef struct { int unused; } cya_kraw;
#endif

/* One ready descriptor, as a pass wants it. */
typedef struct {
    int fd;
    unsigned int serial;
    short revents;
} cya_kevent;

#if CYA_KSET == 1

static int cya_kset_open(void)
{
    return epoll_create1(EPOLL_CLOEXEC);
}

static uint32_t cya_epoll_mask(short events)
{
    uint32_t m = 0;
    if (events & CYA_POLLIN) m |= EPOLLIN;
    if (events & CYA_POLLPRI) m |= EPOLLPRI;
    if (events & CYA_POLLOUT) m |= EPOLLOUT;
    return m;
}

/* Make fd's registration `events` (0: none) where it was `old` (0: none).
 * Returns 0 or an errno value. */
static int cya_kset_set(int kfd, int fd, short old, short events, unsigned int serial)
{
    struct epoll_event ev;
    int op;
    memset(&ev, 0, sizeof ev);
    if (events == 0) {
        if (old == 0)
            return 0;
        if (epoll_ctl(kfd, EPOLL_CTL_DEL, fd, &ev) == 0 || errno == ENOENT)
            return 0;
        return errno;
    }
    ev.events = cya_epoll_mask(events);
    ev.data.u64 = ((uint64_t)serial << 32) | (uint32_t)fd;
    op = old ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    if (epoll_ctl(kfd, op, fd, &ev) == 0)
        return 0;
    /* Our idea of what is registered can be wrong after a descriptor was
     * closed and reused behind the loop's back: try the other operation. */
    if (op == EPOLL_CTL_MOD && errno == ENOENT)
        op = EPOLL_CTL_ADD;
    else if (op == EPOLL_CTL_ADD && errno == EEXIST)
        op = EPOLL_CTL_MOD;
    else
        return errno;
    if (epoll_ctl(kfd, op, fd, &ev) == 0)
        return 0;
    return errno;
}

/* Whether fd is still registered as `events` under `serial`, changing
 * nothing when it is.  epoll drops a registration without a word when the
 * file under it goes, so a number closed (or dup2'ed over) behind the
 * loop's back names a file the set never heard of.  Returns 0, ENOENT
 * (the registration is gone: make it anew) or EBADF (not open). */
static int cya_kset_check(int kfd, int fd, short events, unsigned int serial)
{
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = cya_epoll_mask(events);
    ev.data.u64 = ((uint64_t)serial << 32) | (uint32_t)fd;
    return epoll_ctl(kfd, EPOLL_CTL_MOD, fd, &ev) == 0 ? 0 : errno;
}

/* Forget fd whatever it was registered for (before it is closed). */
static void cya_kset_forget(int kfd, int fd)
{
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    (void)epoll_ctl(kfd, EPOLL_CTL_DEL, fd, &ev);
}

/* Watch fd for reading until it is first reported, then never again (a
 * thread hand-over's wake-up descriptor ending a wait already under way,
 * issue 14).  Returns 0 or an errno value. */
static int cya_kset_add_once(int kfd, int fd, unsigned int serial)
{
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = EPOLLIN | EPOLLONESHOT;
    ev.data.u64 = ((uint64_t)serial << 32) | (uint32_t)fd;
    if (epoll_ctl(kfd, EPOLL_CTL_ADD, fd, &ev) == 0)
        return 0;
    if (errno == EEXIST && epoll_ctl(kfd, EPOLL_CTL_MOD, fd, &ev) == 0)
        return 0;
    return errno;
}

/* Wait up to ms (-1: for ever) for at most max events; call without the GIL.
 * Returns the count, or -1 with errno set. */
static int cya_kset_wait(int kfd, cya_kraw *raw, cya_kevent *out, int max, int ms)
{
    int i, n = epoll_wait(kfd, raw, max, ms);
    for (i = 0; i < n; i++) {
        uint32_t e = raw[i].events;
        short r = 0;
        if (e & EPOLLIN) r |= CYA_POLLIN;
        if (e & EPOLLPRI) r |= CYA_POLLPRI;
        if (e & EPOLLOUT) r |= CYA_POLLOUT;
        if (e & EPOLLERR) r |= CYA_POLLERR;
        if (e & EPOLLHUP) r |= CYA_POLLHUP;
        out[i].fd = (int)(uint32_t)raw[i].data.u64;
        out[i].serial = (unsigned int)(raw[i].data.u64 >> 32);
        out[i].revents = r;
    }
    return n;
}

#elif CYA_KSET == 2

static int cya_kset_open(void)
{
    int kq = kqueue();
    if (kq >= 0)
        (void)fcntl(kq, F_SETFD, FD_CLOEXEC);
    return kq;
}

static int cya_kq_change(int kfd, int fd, short filter, unsigned short flags, unsigned int serial)
{
    struct kevent ch;
    EV_SET(&ch, (uintptr_t)fd, filter, flags, 0, 0, (void *)(uintptr_t)serial);
    if (kevent(kfd, &ch, 1, NULL, 0, NULL) == 0)
        return 0;
    if (errno == ENOENT && (flags & EV_DELETE))
        return 0;
    return errno;
}

static int cya_kset_set(int kfd, int fd, short old, short events, unsigned int serial)
{
    short rd = CYA_POLLIN | CYA_POLLPRI;
    int err;
    /* Adding again replaces the serial; deleting what is absent is fine. */
    if (events & rd)
        err = cya_kq_change(kfd, fd, EVFILT_READ, EV_ADD | EV_ENABLE, serial);
    else
        err = (old & rd) ? cya_kq_change(kfd, fd, EVFILT_READ, EV_DELETE, 0) : 0;
    if (err)
        return err;
    if (events & CYA_POLLOUT)
        return cya_kq_change(kfd, fd, EVFILT_WRITE, EV_ADD | EV_ENABLE, serial);
    return (old & CYA_POLLOUT) ? cya_kq_change(kfd, fd, EVFILT_WRITE, EV_DELETE, 0) : 0;
}

/* kqueue forgets a descriptor's filters when its number is closed, so
 * adding them again is the check and the repair at once. */
static int cya_kset_check(int kfd, int fd, short events, unsigned int serial)
{
    return cya_kset_set(kfd, fd, events, events, serial);
}

static void cya_kset_forget(int kfd, int fd)
{
    (void)cya_kq_change(kfd, fd, EVFILT_READ, EV_DELETE, 0);
    (void)cya_kq_change(kfd, fd, EVFILT_WRITE, EV_DELETE, 0);
}

static int cya_kset_add_once(int kfd, int fd, unsigned int serial)
{
    return cya_kq_change(kfd, fd, EVFILT_READ, EV_ADD | EV_ONESHOT, serial);
}

/* kqueue says which descriptors are ready but not in poll(2)'s words (no
 * POLLPRI, EOF as a flag): ask poll(2) about those, without waiting, and
 * report its revents.  A descriptor reported for both filters comes back
 * twice; the caller merges. */
static int cya_kset_wait(int kfd, cya_kraw *raw, cya_kevent *out, int max, int ms)
{
    struct timespec ts, *tsp = NULL;
    struct pollfd one;
    int i, j = 0, n;
    if (ms >= 0) {
        ts.tv_sec = ms / 1000;
        ts.tv_nsec = (long)(ms % 1000) * 1000000L;
        tsp = &ts;
    }
    n = kevent(kfd, NULL, 0, raw, max, tsp);
    for (i = 0; i < n; i++) {
        one.fd = (int)raw[i].ident;
        one.events = CYA_POLLIN | CYA_POLLPRI | CYA_POLLOUT;
        one.revents = 0;
        if (poll(&one, 1, 0) <= 0 || one.revents == 0)
            continue;
        out[j].fd = one.fd;
        out[j].serial = (unsigned int)(uintptr_t)raw[i].udata;
        out[j].revents = one.revents;
        j++;
    }
    return n < 0 ? n : j;
}

#else

static int cya_kset_open(void)
{
    errno = ENOSYS;
    return -1;
}
static int cya_kset_set(int kfd, int fd, short old, short events, unsigned int serial)
{
    (void)kfd; (void)fd; (void)old; (void)events; (void)serial;
    return ENOSYS;
}
static int cya_kset_check(int kfd, int fd, short events, unsigned int serial)
{
    (void)kfd; (void)fd; (void)events; (void)serial;
    return ENOSYS;
}
static void cya_kset_forget(int kfd, int fd) { (void)kfd; (void)fd; }
static int cya_kset_add_once(int kfd, int fd, unsigned int serial)
{
    (void)kfd; (void)fd; (void)serial;
    return ENOSYS;
}
static int cya_kset_wait(int kfd, cya_kraw *raw, cya_kevent *out, int max, int ms)
{
    (void)kfd; (void)raw; (void)out; (void)max; (void)ms;
    errno = ENOSYS;
    return -1;
}
#endif

static int cya_kset_close(int kfd)
{
#ifdef _WIN32
    (void)kfd;
    return 0;
#else
    return close(kfd);
#endif
}

#endif
