/*
 * floor: the physical floor of fan-out on this machine.
 *
 * Any chat server must, at the very least, hand each delivery to the kernel.
 * This program does exactly that and nothing else: one 64-byte send() per
 * delivery, round-robin over N loopback TCP connections, paced at the same
 * deliveries per second as the benchmark, while a reader thread pinned to the
 * other core drains every socket. On loopback the receive path runs in the
 * sender's context, so the sender's CPU time per send is what one delivery
 * costs at minimum; natter's CPU per delivery is reported as a ratio to it.
 *
 * Usage: floor [sockets=1000] [deliveries_per_sec=90000] [seconds=5]
 *              [sender_cpu=0] [reader_cpu=1] [payload=64]
 * Prints one JSON line on stdout.
 *
 * Build: gcc -O2 -pthread -o floor floor.c   (bench/compare.sh does this)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_SOCKETS 16384

static int senders[MAX_SOCKETS];   /* accepted side: the "server" writes here */
static int receivers[MAX_SOCKETS]; /* connected side: the "clients" read here */
static int nsockets;
static atomic_int stop;
static long long received_bytes;

static void die(const char *what) {
    perror(what);
    exit(1);
}

static void pin(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    int rc = pthread_setaffinity_np(pthread_self(), sizeof set, &set);
    if (rc != 0) {
        errno = rc;
        die("pthread_setaffinity_np");
    }
}

static double now(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int reader_cpu;

/* Drains every receiving socket until told to stop. */
static void *reader(void *unused) {
    (void)unused;
    pin(reader_cpu);
    int ep = epoll_create1(0);
    if (ep < 0) die("epoll_create1");
    for (int i = 0; i < nsockets; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = receivers[i]};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, receivers[i], &ev) < 0) die("epoll_ctl");
    }
    static char buf[65536];
    struct epoll_event events[256];
    while (!atomic_load(&stop)) {
        int n = epoll_wait(ep, events, 256, 50);
        for (int i = 0; i < n; i++) {
            ssize_t got;
            while ((got = recv(events[i].data.fd, buf, sizeof buf, MSG_DONTWAIT)) > 0)
                received_bytes += got;
        }
    }
    return NULL;
}

static void connect_pairs(void) {
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    if (listener < 0) die("socket");
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof addr;
    if (bind(listener, (struct sockaddr *)&addr, sizeof addr) < 0) die("bind");
    if (listen(listener, 4096) < 0) die("listen");
    if (getsockname(listener, (struct sockaddr *)&addr, &len) < 0) die("getsockname");
    int one = 1;
    for (int i = 0; i < nsockets; i++) {
        receivers[i] = socket(AF_INET, SOCK_STREAM, 0);
        if (receivers[i] < 0) die("socket");
        if (connect(receivers[i], (struct sockaddr *)&addr, sizeof addr) < 0) die("connect");
        senders[i] = accept(listener, NULL, NULL);
        if (senders[i] < 0) die("accept");
        /* As a chat server does: every message leaves at once. */
        setsockopt(senders[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    close(listener);
}

int main(int argc, char **argv) {
    nsockets = argc > 1 ? atoi(argv[1]) : 1000;
    long rate = argc > 2 ? atol(argv[2]) : 90000;
    double seconds = argc > 3 ? atof(argv[3]) : 5.0;
    int sender_cpu = argc > 4 ? atoi(argv[4]) : 0;
    reader_cpu = argc > 5 ? atoi(argv[5]) : 1;
    int payload = argc > 6 ? atoi(argv[6]) : 64;
    if (nsockets < 1 || nsockets > MAX_SOCKETS || rate < 1 || seconds <= 0 || seconds > 600 ||
        payload < 1 || payload > 4096) {
        fprintf(stderr, "usage: floor [sockets<=%d] [deliveries/s] [seconds<=600] [sender_cpu] [reader_cpu] [payload<=4096]\n", MAX_SOCKETS);
        return 2;
    }
    connect_pairs();
    pin(sender_cpu);
    pthread_t thread;
    if (pthread_create(&thread, NULL, reader, NULL) != 0) die("pthread_create");

    char message[4096];
    memset(message, 'x', sizeof message);
    /* Paced in 1 ms ticks, like a server woken by a burst of input. */
    const double tick = 0.001;
    double per_tick = rate * tick, owed = 0;
    long long sends = 0, next = 0;
    double wall0 = now(CLOCK_MONOTONIC), cpu0 = now(CLOCK_THREAD_CPUTIME_ID);
    double deadline = wall0 + seconds, tick_at = wall0;
    /* A sender that cannot keep up stops at twice the planned time. */
    while (tick_at < deadline && now(CLOCK_MONOTONIC) < wall0 + 2 * seconds) {
        owed += per_tick;
        while (owed >= 1) {
            if (send(senders[next], message, payload, 0) != payload) die("send");
            next = (next + 1) % nsockets;
            sends++;
            owed -= 1;
        }
        tick_at += tick;
        double wait = tick_at - now(CLOCK_MONOTONIC);
        if (wait > 0) {
            struct timespec ts = {0, (long)(wait * 1e9)};
            nanosleep(&ts, NULL);
        }
    }
    double cpu = now(CLOCK_THREAD_CPUTIME_ID) - cpu0, wall = now(CLOCK_MONOTONIC) - wall0;
    usleep(100000);
    atomic_store(&stop, 1);
    pthread_join(thread, NULL);
    printf("{\"sockets\":%d,\"rate\":%ld,\"payload\":%d,\"seconds\":%.3f,\"sends\":%lld,"
           "\"received_bytes\":%lld,\"sender_cpu_s\":%.4f,\"sender_cores\":%.3f,\"us_per_send\":%.3f}\n",
           nsockets, rate, payload, wall, sends, received_bytes, cpu, cpu / wall, cpu * 1e6 / sends);
    return 0;
}
