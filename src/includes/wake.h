/* The wake-up descriptor of the compiled timers (issue 14): an eventfd on
 * Linux, a non-blocking close-on-exec self-pipe elsewhere. */
#ifndef CYASYNCORE_WAKE_H
#define CYASYNCORE_WAKE_H

#include <errno.h>

/* Passes blocked in a wait that holds no wake-up descriptor: the table of
 * them and what ends their wait (see wait_begin in _asyncore_timers.pyx). */
#define CYA_WAITERS 32
typedef struct {
    unsigned long serial[CYA_WAITERS];  /* which waits a kick went to; 0: none */
} cya_kicks;

#ifdef _WIN32
static int cya_wake_open(int *r, int *w) { (void)r; (void)w; errno = ENOSYS; return -1; }
static void cya_wake_signal(int w) { (void)w; }
static void cya_wake_drain(int r) { (void)r; }
static int cya_wait_begin(const void *map) { (void)map; return -1; }
static void cya_wait_end(int slot) { (void)slot; }
static void cya_wait_reset(void) { }
static void cya_wait_mark(int slot) { (void)slot; }
static int cya_wait_kicked(int slot) { (void)slot; return 0; }
static int cya_kick(const void *map, cya_kicks *k) { (void)map; (void)k; return 0; }
static int cya_kick_again(const cya_kicks *k) { (void)k; return 0; }
static void cya_nap_us(long us) { (void)us; }
#else
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
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

/* The waiters.  Every call is made with the GIL held (the compiled core
 * never runs without it), except cya_wait_kicked, which a waiter also reads
 * just before it blocks: hence the volatile flag. */
typedef struct {
    const void *map;                /* the map whose pass waits; NULL: free */
    pthread_t thread;
    unsigned long serial;           /* which wait this is, for cya_kick_again */
    volatile sig_atomic_t kicked;
} cya_waiter;

static cya_waiter cya_waiters[CYA_WAITERS];
static unsigned long cya_wait_serials;

/* -1 when the table is full: that wait just cannot be kicked. */
static int cya_wait_begin(const void *map)
{
    for (int i = 0; i < CYA_WAITERS; i++) {
        cya_waiter *w = &cya_waiters[i];
        if (w->map == NULL) {
            w->map = map;
            w->thread = pthread_self();
            w->serial = ++cya_wait_serials;
            w->kicked = 0;
            return i;
        }
    }
    return -1;
}

static void cya_wait_end(int slot)
{
    if (slot >= 0)
        cya_waiters[slot].map = NULL;
}

/* In a forked child: only the forking thread is left, and it was not waiting. */
static void cya_wait_reset(void)
{
    memset(cya_waiters, 0, sizeof cya_waiters);
}

static void cya_wait_mark(int slot)
{
    if (slot >= 0)
        cya_waiters[slot].kicked = 1;
}

static int cya_wait_kicked(int slot)
{
    return slot >= 0 && cya_waiters[slot].kicked;
}

/* SIGURG, whose default action is to ignore it, made to interrupt a wait:
 * a handler that does nothing, installed only while nobody else has one
 * (a program's own handler is never replaced, nor ever called by us).
 * SA_RESTART keeps the other system calls of any thread it reaches going;
 * poll(2), epoll_wait and nanosleep are interrupted whatever the flag. */
static void cya_kick_handler(int sig) { (void)sig; }

static int cya_kick_ready(void)
{
    struct sigaction now, ours;
    if (sigaction(SIGURG, NULL, &now) < 0)
        return 0;
    if (!(now.sa_flags & SA_SIGINFO) && now.sa_handler == cya_kick_handler)
        return 1;
    if ((now.sa_flags & SA_SIGINFO) || now.sa_handler != SIG_DFL)
        return 0;
    memset(&ours, 0, sizeof ours);
    ours.sa_handler = cya_kick_handler;
    sigemptyset(&ours.sa_mask);
    ours.sa_flags = SA_RESTART;
    return sigaction(SIGURG, &ours, NULL) == 0;
}

/* Mark every wait on map kicked and interrupt it; returns how many were
 * signalled (0: none, or SIGURG is not ours to use). */
static int cya_kick(const void *map, cya_kicks *k)
{
    int n = 0, ready = -1;
    for (int i = 0; i < CYA_WAITERS; i++) {
        cya_waiter *w = &cya_waiters[i];
        k->serial[i] = 0;
        if (w->map != map || w->kicked)
            continue;
        w->kicked = 1;
        if (ready < 0)
            ready = cya_kick_ready();
        if (!ready)
            continue;
        k->serial[i] = w->serial;
        if (pthread_kill(w->thread, SIGURG) == 0)
            n++;
    }
    return n;
}

/* A signal that came just before its waiter blocked was lost: signal the
 * waits still on again.  Returns how many were. */
static int cya_kick_again(const cya_kicks *k)
{
    int n = 0;
    for (int i = 0; i < CYA_WAITERS; i++) {
        cya_waiter *w = &cya_waiters[i];
        if (k->serial[i] && w->map != NULL && w->serial == k->serial[i]
                && pthread_kill(w->thread, SIGURG) == 0)
            n++;
    }
    return n;
}

static void cya_nap_us(long us)
{
    struct timespec ts;
    ts.tv_sec = us / 1000000;
    ts.tv_nsec = (us % 1000000) * 1000L;
    (void)nanosleep(&ts, NULL);
}
#endif

#endif
