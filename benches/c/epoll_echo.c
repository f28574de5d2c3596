/*
 * The limit evloop's echo is measured against in benches/latency.sh: one
 * thread, epoll, nothing between the kernel and the echo.
 *
 *   epoll_echo PORT block   epoll_wait sleeps until something is ready
 *   epoll_echo PORT spin    epoll_wait with a zero timeout, for ever
 *
 * Level-triggered; each connection echoes what it reads, keeping what the
 * socket would not take and reading no more until that has left. Stops on
 * SIGINT/SIGTERM.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF 65536
#define MAX_FD 65536

struct conn {
    char *buf;   /* bytes read, not yet written back */
    size_t off, len;
};

static struct conn conns[MAX_FD];
static volatile sig_atomic_t stopping;

static void on_signal(int sig) { (void)sig; stopping = 1; }

static void drop_conn(int ep, int fd) {
    epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
    close(fd);
    free(conns[fd].buf);
    memset(&conns[fd], 0, sizeof conns[fd]);
}

static void watch(int ep, int op, int fd, unsigned events) {
    struct epoll_event ev = {.events = events, .data.fd = fd};
    if (epoll_ctl(ep, op, fd, &ev) < 0) {
        perror("epoll_ctl");
        exit(1);
    }
}

/* Write what is pending; 0 when all of it left, 1 when the socket is full, -1 on error. */
static int flush(int fd) {
    struct conn *c = &conns[fd];
    while (c->off < c->len) {
        ssize_t n = write(fd, c->buf + c->off, c->len - c->off);
        if (n < 0) {
            if (errno == EINTR) continue;
            return errno == EAGAIN ? 1 : -1;
        }
        c->off += (size_t)n;
    }
    c->off = c->len = 0;
    return 0;
}

static void on_ready(int ep, int fd, unsigned events) {
    struct conn *c = &conns[fd];
    if (events & EPOLLOUT) {
        int r = flush(fd);
        if (r < 0) { drop_conn(ep, fd); return; }
        if (r > 0) return;
        watch(ep, EPOLL_CTL_MOD, fd, EPOLLIN);
    }
    if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR))) return;
    ssize_t n = read(fd, c->buf, BUF);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) { drop_conn(ep, fd); return; }
    if (n < 0) return;
    c->off = 0;
    c->len = (size_t)n;
    int r = flush(fd);
    if (r < 0) drop_conn(ep, fd);
    else if (r > 0) watch(ep, EPOLL_CTL_MOD, fd, EPOLLOUT);
}

int main(int argc, char **argv) {
    if (argc != 3 || (strcmp(argv[2], "block") && strcmp(argv[2], "spin"))) {
        fprintf(stderr, "usage: %s PORT block|spin\n", argv[0]);
        return 2;
    }
    int timeout = strcmp(argv[2], "spin") == 0 ? 0 : -1;
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1])),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(ls, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(ls, 1024) < 0) {
        perror("bind/listen");
        return 1;
    }
    int ep = epoll_create1(EPOLL_CLOEXEC);
    watch(ep, EPOLL_CTL_ADD, ls, EPOLLIN);
    fprintf(stderr, "epoll_echo listening on 127.0.0.1:%s (%s)\n", argv[1], argv[2]);

    struct epoll_event events[256];
    while (!stopping) {
        int n = epoll_wait(ep, events, 256, timeout);
        if (n < 0 && errno != EINTR) { perror("epoll_wait"); return 1; }
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd != ls) { on_ready(ep, fd, events[i].events); continue; }
            for (;;) {
                int c = accept4(ls, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (c < 0) break;
                if (c >= MAX_FD || !(conns[c].buf = malloc(BUF))) { close(c); continue; }
                setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                watch(ep, EPOLL_CTL_ADD, c, EPOLLIN);
            }
        }
    }
    fprintf(stderr, "epoll_echo stopped\n");
    return 0;
}
