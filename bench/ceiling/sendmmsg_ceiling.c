/*
 * Fan-out ceiling: the same payload to the same destinations with sendmmsg(2), as plain C does it.
 *
 * usage: sendmmsg_ceiling FRAMES BATCH PAYLOAD_HEX < DESTINATIONS
 *   DESTINATIONS: one "ADDRESS PORT" per line, all IPv4 or all IPv6 (numeric).
 * Sends the payload FRAMES times to every destination from one non-blocking UDP socket, BATCH messages per
 * call (all iovecs point at the one payload, one sockaddr per destination built up front), waiting with poll(2)
 * on EAGAIN/ENOBUFS. Prints one JSON line: datagrams sent, skipped, times blocked, and the CPU time of the
 * sending thread (CLOCK_THREAD_CPUTIME_ID) and wall time of the send loop alone, in nanoseconds.
 * Exit status 2 on bad arguments or input, 1 on a system call failure.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_BATCH 1024

static long long now_ns(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s FRAMES BATCH PAYLOAD_HEX < DESTINATIONS\n", argv[0]);
        return 2;
    }
    long frames = strtol(argv[1], NULL, 10);
    long batch = strtol(argv[2], NULL, 10);
    size_t hexlen = strlen(argv[3]);
    if (frames < 1 || batch < 1 || batch > MAX_BATCH || hexlen % 2 || hexlen / 2 > 65535) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
    size_t size = hexlen / 2;
    unsigned char *payload = malloc(size ? size : 1);
    for (size_t i = 0; i < size; i++) {
        int hi = hexval(argv[3][2 * i]), lo = hexval(argv[3][2 * i + 1]);
        if (hi < 0 || lo < 0) {
            fprintf(stderr, "bad payload hex\n");
            return 2;
        }
        payload[i] = (unsigned char)(hi << 4 | lo);
    }

    size_t cap = 1024, count = 0;
    struct sockaddr_in6 *addrs = calloc(cap, sizeof *addrs);
    socklen_t *lens = calloc(cap, sizeof *lens);
    int family = 0;
    char host[128];
    unsigned port;
    while (scanf("%127s %u", host, &port) == 2) {
        if (count == cap) {
            cap *= 2;
            addrs = realloc(addrs, cap * sizeof *addrs);
            lens = realloc(lens, cap * sizeof *lens);
        }
        memset(&addrs[count], 0, sizeof addrs[count]);
        struct sockaddr_in *v4 = (struct sockaddr_in *)&addrs[count];
        if (inet_pton(AF_INET, host, &v4->sin_addr) == 1 && family != AF_INET6) {
            family = AF_INET;
            v4->sin_family = AF_INET;
            v4->sin_port = htons((unsigned short)port);
            lens[count] = sizeof *v4;
        } else if (inet_pton(AF_INET6, host, &addrs[count].sin6_addr) == 1 && family != AF_INET) {
            family = AF_INET6;
            addrs[count].sin6_family = AF_INET6;
            addrs[count].sin6_port = htons((unsigned short)port);
            lens[count] = sizeof addrs[count];
        } else {
            fprintf(stderr, "bad or mixed-family destination: %s\n", host);
            return 2;
        }
        count++;
    }
    if (count == 0) {
        fprintf(stderr, "no destinations on standard input\n");
        return 2;
    }

    int fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        perror("socket");
        return 1;
    }
    struct iovec iov = {.iov_base = payload, .iov_len = size};
    struct mmsghdr *msgs = calloc(count, sizeof *msgs);
    for (size_t i = 0; i < count; i++) {
        msgs[i].msg_hdr.msg_name = &addrs[i];
        msgs[i].msg_hdr.msg_namelen = lens[i];
        msgs[i].msg_hdr.msg_iov = &iov;
        msgs[i].msg_hdr.msg_iovlen = 1;
    }

    long long sent = 0, skipped = 0, blocked = 0;
    struct pollfd pfd = {.fd = fd, .events = POLLOUT};
    long long cpu0 = now_ns(CLOCK_THREAD_CPUTIME_ID), wall0 = now_ns(CLOCK_MONOTONIC);
    for (long f = 0; f < frames; f++) {
        size_t pos = 0;
        while (pos < count) {
            size_t n = count - pos < (size_t)batch ? count - pos : (size_t)batch;
            int done = sendmmsg(fd, msgs + pos, (unsigned)n, 0);
            if (done > 0) {
                pos += (size_t)done;
                sent += done;
            } else if (errno == EINTR) {
                continue;
            } else if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS) {
                blocked++;
                poll(&pfd, 1, 1);
            } else if (errno == ENETUNREACH || errno == EHOSTUNREACH || errno == EPERM || errno == EACCES ||
                       errno == EADDRNOTAVAIL || errno == ECONNREFUSED) {
                pos++;
                skipped++;
            } else {
                perror("sendmmsg");
                return 1;
            }
        }
    }
    long long cpu = now_ns(CLOCK_THREAD_CPUTIME_ID) - cpu0, wall = now_ns(CLOCK_MONOTONIC) - wall0;
    printf("{\"destinations\": %zu, \"frames\": %ld, \"sent\": %lld, \"skipped\": %lld, \"blocked\": %lld, "
           "\"cpu_ns\": %lld, \"wall_ns\": %lld}\n",
           count, frames, sent, skipped, blocked, cpu, wall);
    close(fd);
    return 0;
}
