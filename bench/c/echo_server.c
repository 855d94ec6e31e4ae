/*
 * Reference server: what one core of this machine can do with epoll and no
 * interpreter.  It speaks the same four little protocols as the Python
 * servers in bench/servers/, so every scenario has a C figure to compare to.
 *
 *   echo_server MODE        MODE: echo | lines | bulk | slowsend
 *
 * Binds 127.0.0.1 on an ephemeral port and prints "PORT <n>" once listening.
 *   echo      writes back whatever it reads
 *   lines     answers "+\n" for every "\n"-terminated line it reads
 *   bulk      reads "<len>\n" then <len> bytes of payload, answers "OK\n"
 *   slowsend  reads "<len>\n" and answers with <len> bytes of 'x'
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

enum mode { ECHO, LINES, BULK, SLOWSEND };

struct conn {
    int fd;
    int want_out;      /* EPOLLOUT currently requested */
    char *out;         /* pending output, sent from out + out_off */
    size_t out_len, out_off, out_cap;
    char head[32];     /* "<len>\n" header being read (bulk, slowsend) */
    size_t head_len;
    long long body_left; /* bulk: payload bytes still to consume */
};

static enum mode mode;
static int ep;

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static void queue_out(struct conn *c, const char *data, size_t n)
{
    if (c->out_off == c->out_len)
        c->out_off = c->out_len = 0;
    if (c->out_len + n > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap : 4096;
        while (cap < c->out_len + n)
            cap *= 2;
        c->out = realloc(c->out, cap);
        if (!c->out)
            die("realloc");
        c->out_cap = cap;
    }
    if (data)
        memcpy(c->out + c->out_len, data, n);
    else
        memset(c->out + c->out_len, 'x', n);
    c->out_len += n;
}

static void close_conn(struct conn *c)
{
    close(c->fd);
    free(c->out);
    free(c);
}

static void set_interest(struct conn *c, int want_out)
{
    if (want_out == c->want_out)
        return;
    struct epoll_event ev = {.events = EPOLLIN | (want_out ? EPOLLOUT : 0), .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0)
        die("epoll_ctl mod");
    c->want_out = want_out;
}

/* Returns -1 when the connection died. */
static int flush_out(struct conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            if (errno == EINTR)
                continue;
            return -1;
        }
        c->out_off += (size_t)n;
    }
    set_interest(c, c->out_off < c->out_len);
    return 0;
}

/* Consume header bytes; returns the parsed length once "\n" arrives, else -1. */
static long long take_header(struct conn *c, const char **p, const char *end)
{
    while (*p < end) {
        char ch = *(*p)++;
        if (ch == '\n') {
            c->head[c->head_len] = 0;
            c->head_len = 0;
            return atoll(c->head);
        }
        if (c->head_len < sizeof c->head - 1)
            c->head[c->head_len++] = ch;
    }
    return -1;
}

static void handle_input(struct conn *c, const char *buf, size_t n)
{
    const char *p = buf, *end = buf + n;
    switch (mode) {
    case ECHO:
        queue_out(c, buf, n);
        break;
    case LINES:
        for (; p < end; p++)
            if (*p == '\n')
                queue_out(c, "+\n", 2);
        break;
    case BULK:
        while (p < end) {
            if (c->body_left > 0) {
                size_t take = (size_t)(end - p) < (size_t)c->body_left ? (size_t)(end - p)
                                                                      : (size_t)c->body_left;
                p += take;
                c->body_left -= (long long)take;
                if (c->body_left == 0)
                    queue_out(c, "OK\n", 3);
                continue;
            }
            long long len = take_header(c, &p, end);
            if (len == 0)
                queue_out(c, "OK\n", 3);
            else if (len > 0)
                c->body_left = len;
        }
        break;
    case SLOWSEND:
        while (p < end) {
            long long len = take_header(c, &p, end);
            if (len > 0)
                queue_out(c, NULL, (size_t)len);
        }
        break;
    }
}

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s echo|lines|bulk|slowsend\n", argv[0]);
        return 2;
    }
    if (!strcmp(argv[1], "echo"))
        mode = ECHO;
    else if (!strcmp(argv[1], "lines"))
        mode = LINES;
    else if (!strcmp(argv[1], "bulk"))
        mode = BULK;
    else if (!strcmp(argv[1], "slowsend"))
        mode = SLOWSEND;
    else {
        fprintf(stderr, "unknown mode %s\n", argv[1]);
        return 2;
    }
    raise_nofile();

    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (lfd < 0)
        die("socket");
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0)
        die("bind");
    if (listen(lfd, 4096) < 0)
        die("listen");
    socklen_t alen = sizeof addr;
    getsockname(lfd, (struct sockaddr *)&addr, &alen);

    ep = epoll_create1(0);
    if (ep < 0)
        die("epoll_create1");
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev);

    printf("PORT %d\n", ntohs(addr.sin_port));
    fflush(stdout);

    static char buf[65536];
    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (!c) {
                int fd;
                while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    c = calloc(1, sizeof *c);
                    c->fd = fd;
                    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
                }
                continue;
            }
            int dead = 0;
            if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                ssize_t got = recv(c->fd, buf, sizeof buf, 0);
                if (got > 0)
                    handle_input(c, buf, (size_t)got);
                else if (got == 0 || (errno != EAGAIN && errno != EINTR))
                    dead = 1;
            }
            if (!dead && flush_out(c) < 0)
                dead = 1;
            if (dead)
                close_conn(c);
        }
    }
}
