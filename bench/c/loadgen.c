/*
 * Load generator for the bench.  Written in C so that it is never the
 * bottleneck: it drives the C reference server faster than any Python one.
 *
 *   loadgen --port P --mode MODE [--conns N] [--size BYTES] [--idle K]
 *           [--rcvbuf BYTES]
 *
 * MODE: echo | lines | bulk | slowsend | churn.  After its connections are
 * set up (K idle ones first, each proven accepted by a one-byte echo, with an
 * "IDLE <count>" line after every batch) it prints "READY" and then obeys
 * commands on stdin, one per line:
 *   go MILLISECONDS [ARG]   run one measured phase, print one JSON line
 *   quit                    exit (closing every connection)
 * Between phases nothing is in flight, so the driver can read the server's
 * CPU counters right before "go" and right after the JSON line and charge
 * exactly the phase's work to it.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define STALL_LIMIT_NS (10LL * 1000000000LL) /* no progress for this long: give up */

enum mode { ECHO, LINES, BULK, SLOWSEND, CHURN };

struct conn {
    int fd;
    int want_out;
    int active;            /* a request is in flight */
    int64_t t_start;       /* when the request in flight was started */
    const char *out;       /* request bytes still to write */
    size_t out_len, out_off;
    long long in_left;     /* bytes (or lines) still expected back */
};

static enum mode mode;
static int port, nconns = 1, idle, rcvbuf;
static size_t size = 64;
static int ep;
static struct conn *conns;
static char *payload;
static size_t payload_len;

/* Latency samples of one phase, in nanoseconds. */
static uint32_t *lat;
static size_t lat_n, lat_cap;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int64_t cpu_ns(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ((int64_t)ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000LL +
           ((int64_t)ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000LL;
}

static void fail(const char *what)
{
    printf("{\"error\": \"%s: %s\"}\n", what, strerror(errno));
    fflush(stdout);
    exit(2);
}

static void record(int64_t ns)
{
    if (lat_n == lat_cap) {
        lat_cap = lat_cap ? lat_cap * 2 : 65536;
        lat = realloc(lat, lat_cap * sizeof *lat);
        if (!lat)
            fail("realloc");
    }
    lat[lat_n++] = ns > UINT32_MAX ? UINT32_MAX : (uint32_t)ns;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static double percentile_us(double q)
{
    if (!lat_n)
        return -1;
    size_t i = (size_t)(q * (double)(lat_n - 1) + 0.5);
    return lat[i] / 1000.0;
}

static void set_nodelay(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static struct sockaddr_in server_addr(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    return a;
}

static int blocking_connect(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        fail("socket");
    if (rcvbuf)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = server_addr();
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0)
        fail("connect");
    set_nodelay(fd);
    return fd;
}

static void set_nonblocking(int fd)
{
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

/* Idle connections, opened in batches and each proven accepted by a one-byte
 * round trip, so that the server really holds them in its map. */
static void open_idle(void)
{
    enum { BATCH = 256 };
    int fds[BATCH];
    for (int done = 0; done < idle;) {
        int n = idle - done < BATCH ? idle - done : BATCH;
        for (int i = 0; i < n; i++)
            fds[i] = blocking_connect();
        for (int i = 0; i < n; i++)
            if (send(fds[i], "i", 1, MSG_NOSIGNAL) != 1)
                fail("idle send");
        for (int i = 0; i < n; i++) {
            char ch;
            if (recv(fds[i], &ch, 1, 0) != 1)
                fail("idle recv");
        }
        done += n;
        /* Progress for the driver, which gives set-up a time budget. */
        printf("IDLE %d\n", done);
        fflush(stdout);
    }
}

static void watch(struct conn *c, int want_out)
{
    struct epoll_event ev = {.events = EPOLLIN | (want_out ? EPOLLOUT : 0), .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0)
        fail("epoll_ctl");
    c->want_out = want_out;
}

static void add_conn(struct conn *c, int fd)
{
    memset(c, 0, sizeof *c);
    c->fd = fd;
    set_nonblocking(fd);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
        fail("epoll_ctl add");
}

/* Write what is pending; ask for EPOLLOUT only while something remains. */
static void pump_out(struct conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                break;
            fail("send");
        }
        c->out_off += (size_t)n;
    }
    int want = c->out_off < c->out_len;
    if (want != c->want_out)
        watch(c, want);
}

static void start_request(struct conn *c, const char *data, size_t len, long long expect)
{
    c->active = 1;
    c->t_start = now_ns();
    c->out = data;
    c->out_len = len;
    c->out_off = 0;
    c->in_left = expect;
    pump_out(c);
}

/* Mode-specific request: what to write and how much to expect back. */
static char header[64];
static size_t header_len;
static char *request;   /* header + payload, for bulk */
static size_t request_len;

static void begin(struct conn *c, long long arg)
{
    switch (mode) {
    case ECHO:
        start_request(c, payload, payload_len, (long long)payload_len);
        break;
    case BULK:
        start_request(c, request, request_len, 3); /* "OK\n" */
        break;
    case SLOWSEND:
        header_len = (size_t)snprintf(header, sizeof header, "%lld\n", arg);
        start_request(c, header, header_len, arg);
        break;
    default:
        break;
    }
}

static void print_result(long long ops, long long bytes, int64_t t0, int64_t t1, int64_t cpu0,
                         int with_latency)
{
    double p50 = -1, p99 = -1;
    if (with_latency && lat_n) {
        qsort(lat, lat_n, sizeof *lat, cmp_u32);
        p50 = percentile_us(0.50);
        p99 = percentile_us(0.99);
    }
    printf("{\"ops\": %lld, \"bytes\": %lld, \"elapsed_s\": %.6f, \"p50_us\": %.2f, "
           "\"p99_us\": %.2f, \"client_cpu_s\": %.6f}\n",
           ops, bytes, (t1 - t0) / 1e9, p50, p99, (cpu_ns() - cpu0) / 1e9);
    fflush(stdout);
}

static char rbuf[1 << 20];

/* echo, bulk, slowsend: each connection has one request in flight; when it
 * completes a new one starts until the deadline, then everything drains. */
static void phase_requests(int64_t dur_ns, long long arg)
{
    int64_t t0 = now_ns(), deadline = t0 + dur_ns, cpu0 = cpu_ns(), last_progress = t0;
    long long ops = 0, bytes = 0;
    int in_flight = 0;
    lat_n = 0;
    for (int i = 0; i < nconns; i++) {
        begin(&conns[i], arg);
        in_flight++;
    }
    struct epoll_event evs[256];
    while (in_flight) {
        int n = epoll_wait(ep, evs, 256, 1000);
        int64_t t = now_ns();
        if (n <= 0) {
            if (t - last_progress > STALL_LIMIT_NS) {
                errno = ETIMEDOUT;
                fail("no progress");
            }
            continue;
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (evs[i].events & EPOLLOUT)
                pump_out(c);
            if (!(evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
                continue;
            ssize_t got = recv(c->fd, rbuf, sizeof rbuf, 0);
            if (got == 0) {
                errno = ECONNRESET;
                fail("server closed");
            }
            if (got < 0) {
                if (errno == EAGAIN || errno == EINTR)
                    continue;
                fail("recv");
            }
            last_progress = t;
            bytes += got;
            c->in_left -= got;
            if (c->in_left > 0)
                continue;
            if (c->in_left < 0) {
                errno = EPROTO;
                fail("more bytes than expected");
            }
            t = now_ns();
            record(t - c->t_start);
            ops++;
            c->active = 0;
            if (t < deadline && mode != SLOWSEND)
                begin(c, arg);
            else
                in_flight--;
        }
    }
    /* For bulk the payload is what was moved, not the "OK\n" answers. */
    if (mode == BULK)
        bytes = ops * (long long)payload_len;
    print_result(ops, bytes, t0, now_ns(), cpu0, mode == ECHO);
}

/* Pipelined short lines: keep up to WINDOW lines unanswered, written in
 * batches so that the server reads many lines per recv(). */
#define LINE "LINE 0123456789\n"
#define LINE_LEN 16
#define BATCH_LINES 256
#define WINDOW (4 * BATCH_LINES)

static void phase_lines(int64_t dur_ns)
{
    static char batch[BATCH_LINES * LINE_LEN];
    for (int i = 0; i < BATCH_LINES; i++)
        memcpy(batch + i * LINE_LEN, LINE, LINE_LEN);
    struct conn *c = &conns[0];
    int64_t t0 = now_ns(), deadline = t0 + dur_ns, cpu0 = cpu_ns(), last_progress = t0;
    long long sent = 0, answered = 0;
    struct epoll_event evs[4];
    for (;;) {
        int64_t t = now_ns();
        /* Refill the window while the deadline allows and the previous batch is out. */
        while (t < deadline && c->out_off == c->out_len && sent - answered <= WINDOW - BATCH_LINES) {
            c->out = batch;
            c->out_len = sizeof batch;
            c->out_off = 0;
            sent += BATCH_LINES;
            pump_out(c);
        }
        if (answered == sent && c->out_off == c->out_len)
            break;
        int n = epoll_wait(ep, evs, 4, 1000);
        if (n <= 0) {
            if (now_ns() - last_progress > STALL_LIMIT_NS) {
                errno = ETIMEDOUT;
                fail("no progress");
            }
            continue;
        }
        if (evs[0].events & EPOLLOUT)
            pump_out(c);
        if (evs[0].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
            ssize_t got = recv(c->fd, rbuf, sizeof rbuf, 0);
            if (got == 0) {
                errno = ECONNRESET;
                fail("server closed");
            }
            if (got < 0) {
                if (errno != EAGAIN && errno != EINTR)
                    fail("recv");
                continue;
            }
            last_progress = now_ns();
            for (ssize_t i = 0; i < got; i++)
                answered += rbuf[i] == '\n';
        }
    }
    print_result(answered, answered * LINE_LEN, t0, now_ns(), cpu0, 0);
}

/* Connection churn: connect, one echo of `size` bytes, close; `nconns` at a
 * time.  The latency recorded is connect-to-close. */
static void churn_start(struct conn *c)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0)
        fail("socket");
    set_nodelay(fd);
    add_conn(c, fd);
    c->active = 1;
    c->t_start = now_ns();
    struct sockaddr_in a = server_addr();
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0 && errno != EINPROGRESS)
        fail("connect");
    /* Writing before the handshake completes would fail: wait for EPOLLOUT. */
    c->out = payload;
    c->out_len = payload_len;
    c->out_off = 0;
    c->in_left = (long long)payload_len;
    watch(c, 1);
}

static void phase_churn(int64_t dur_ns)
{
    int64_t t0 = now_ns(), deadline = t0 + dur_ns, cpu0 = cpu_ns(), last_progress = t0;
    long long ops = 0;
    int in_flight = nconns;
    lat_n = 0;
    for (int i = 0; i < nconns; i++)
        churn_start(&conns[i]);
    struct epoll_event evs[256];
    while (in_flight) {
        int n = epoll_wait(ep, evs, 256, 1000);
        if (n <= 0) {
            if (now_ns() - last_progress > STALL_LIMIT_NS) {
                errno = ETIMEDOUT;
                fail("no progress");
            }
            continue;
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (evs[i].events & EPOLLOUT) {
                int err = 0;
                socklen_t len = sizeof err;
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
                if (err) {
                    errno = err;
                    fail("connect");
                }
                pump_out(c);
            }
            if (!(evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
                continue;
            ssize_t got = recv(c->fd, rbuf, sizeof rbuf, 0);
            if (got < 0 && (errno == EAGAIN || errno == EINTR))
                continue;
            if (got <= 0) {
                if (got == 0)
                    errno = ECONNRESET;
                fail("churn recv");
            }
            last_progress = now_ns();
            c->in_left -= got;
            if (c->in_left > 0)
                continue;
            close(c->fd); /* also drops it from the epoll set */
            int64_t t = now_ns();
            record(t - c->t_start);
            ops++;
            if (t < deadline)
                churn_start(c);
            else
                in_flight--;
        }
    }
    print_result(ops, ops * (long long)payload_len * 2, t0, now_ns(), cpu0, 1);
}

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static void usage(void)
{
    fprintf(stderr, "usage: loadgen --port P --mode echo|lines|bulk|slowsend|churn "
                    "[--conns N] [--size BYTES] [--idle K] [--rcvbuf BYTES]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *mode_name = NULL;
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc)
            usage();
        const char *opt = argv[i], *val = argv[++i];
        if (!strcmp(opt, "--port"))
            port = atoi(val);
        else if (!strcmp(opt, "--mode"))
            mode_name = val;
        else if (!strcmp(opt, "--conns"))
            nconns = atoi(val);
        else if (!strcmp(opt, "--size"))
            size = (size_t)atoll(val);
        else if (!strcmp(opt, "--idle"))
            idle = atoi(val);
        else if (!strcmp(opt, "--rcvbuf"))
            rcvbuf = atoi(val);
        else
            usage();
    }
    if (!port || !mode_name || nconns < 1)
        usage();
    static const char *names[] = {"echo", "lines", "bulk", "slowsend", "churn"};
    mode = (enum mode)-1;
    for (int m = 0; m < 5; m++)
        if (!strcmp(mode_name, names[m]))
            mode = (enum mode)m;
    if ((int)mode < 0)
        usage();
    raise_nofile();

    payload_len = size;
    payload = malloc(size ? size : 1);
    memset(payload, 'p', size);
    if (mode == BULK) {
        header_len = (size_t)snprintf(header, sizeof header, "%zu\n", size);
        request_len = header_len + size;
        request = malloc(request_len);
        memcpy(request, header, header_len);
        memset(request + header_len, 'b', size);
    }

    ep = epoll_create1(0);
    if (ep < 0)
        fail("epoll_create1");
    open_idle();
    conns = calloc((size_t)nconns, sizeof *conns);
    if (mode != CHURN)
        for (int i = 0; i < nconns; i++)
            add_conn(&conns[i], blocking_connect());
    printf("READY\n");
    fflush(stdout);

    char line[128];
    while (fgets(line, sizeof line, stdin)) {
        long long ms = 0, arg = 0;
        if (!strncmp(line, "quit", 4))
            break;
        if (sscanf(line, "go %lld %lld", &ms, &arg) < 1) {
            fprintf(stderr, "bad command: %s", line);
            return 2;
        }
        int64_t dur = ms * 1000000LL;
        switch (mode) {
        case LINES:
            phase_lines(dur);
            break;
        case CHURN:
            phase_churn(dur);
            break;
        default:
            phase_requests(dur, arg);
            break;
        }
    }
    return 0;
}
