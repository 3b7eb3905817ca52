/*
 * Flooder for `loa bench flood`: unauthenticated datagrams at a target rate from many source addresses.
 *
 * usage: flooder RATE SECONDS SOURCES DEST_IPV4 DEST_PORT FIRST_SOURCE_IPV4 < TEMPLATES
 *   TEMPLATES: one "KIND HEX" per line (KIND 0..7, HEX the datagram, at most 1400 bytes), at most 65536 lines.
 * Opens SOURCES non-blocking UDP sockets bound to consecutive IPv4 addresses from FIRST_SOURCE_IPV4 on (port 0),
 * and sends the templates in turn, BATCH per sendmmsg(2) call from one socket after the other, paced to RATE
 * datagrams per second for SECONDS seconds (as fast as it can when it cannot keep up). Every 5 ms it empties
 * every socket with recvmmsg(2) (MSG_DONTWAIT), counting what the target sent back to each source; after the
 * last send it waits 500 ms and empties them again. Prints one JSON line: datagrams and bytes sent, per kind
 * sent, received datagrams and bytes, the wall time of the send loop in nanoseconds, and per source
 * [sent_bytes, received_bytes, received_datagrams].
 * Exit status 2 on bad arguments or input, 1 on a system call failure.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64
#define MAX_TEMPLATES 65536
#define MAX_LEN 1400
#define MAX_SOURCES 4096
#define KINDS 8

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static unsigned char *data[MAX_TEMPLATES];
static size_t lens[MAX_TEMPLATES];
static int kinds[MAX_TEMPLATES];
static int socks[MAX_SOURCES];
static long long src_sent[MAX_SOURCES], src_rx_bytes[MAX_SOURCES], src_rx[MAX_SOURCES];

static void drain(int nsocks) {
    static unsigned char buf[BATCH][2048];
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    for (int s = 0; s < nsocks; s++) {
        for (;;) {
            for (int i = 0; i < BATCH; i++) {
                iov[i].iov_base = buf[i];
                iov[i].iov_len = sizeof buf[i];
                memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
                msgs[i].msg_hdr.msg_iov = &iov[i];
                msgs[i].msg_hdr.msg_iovlen = 1;
            }
            int got = recvmmsg(socks[s], msgs, BATCH, MSG_DONTWAIT, NULL);
            if (got <= 0) break;
            for (int i = 0; i < got; i++) src_rx_bytes[s] += msgs[i].msg_len;
            src_rx[s] += got;
        }
    }
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: %s RATE SECONDS SOURCES DEST_IPV4 DEST_PORT FIRST_SOURCE_IPV4 < TEMPLATES\n", argv[0]);
        return 2;
    }
    double rate = strtod(argv[1], NULL), seconds = strtod(argv[2], NULL);
    long nsocks = strtol(argv[3], NULL, 10), port = strtol(argv[5], NULL, 10);
    struct in_addr dest_ip, first_ip;
    if (rate <= 0 || seconds <= 0 || nsocks < 1 || nsocks > MAX_SOURCES || port < 1 || port > 65535 ||
        inet_pton(AF_INET, argv[4], &dest_ip) != 1 || inet_pton(AF_INET, argv[6], &first_ip) != 1) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
    static char line[2 * MAX_LEN + 64];
    int count = 0;
    while (count < MAX_TEMPLATES && fgets(line, sizeof line, stdin)) {
        int kind;
        char *hex = strchr(line, ' ');
        if (!hex || sscanf(line, "%d", &kind) != 1 || kind < 0 || kind >= KINDS) {
            fprintf(stderr, "bad template line %d\n", count + 1);
            return 2;
        }
        hex++;
        size_t hexlen = strcspn(hex, "\r\n");
        if (hexlen % 2 || hexlen == 0 || hexlen / 2 > MAX_LEN) {
            fprintf(stderr, "bad template length on line %d\n", count + 1);
            return 2;
        }
        data[count] = malloc(hexlen / 2);
        for (size_t i = 0; i < hexlen / 2; i++) {
            int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
            if (hi < 0 || lo < 0) {
                fprintf(stderr, "bad hex on line %d\n", count + 1);
                return 2;
            }
            data[count][i] = (unsigned char)(hi * 16 + lo);
        }
        lens[count] = hexlen / 2;
        kinds[count] = kind;
        count++;
    }
    if (count == 0) {
        fprintf(stderr, "no templates\n");
        return 2;
    }
    struct sockaddr_in dest = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port), .sin_addr = dest_ip};
    unsigned int first = ntohl(first_ip.s_addr);
    for (long s = 0; s < nsocks; s++) {
        socks[s] = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        struct sockaddr_in src = {.sin_family = AF_INET, .sin_port = 0, .sin_addr.s_addr = htonl(first + (unsigned)s)};
        if (socks[s] < 0 || bind(socks[s], (struct sockaddr *)&src, sizeof src) != 0) {
            perror("socket/bind");
            return 1;
        }
    }
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    long long sent = 0, sent_bytes = 0, per_kind[KINDS] = {0}, blocked = 0;
    long long total = (long long)(rate * seconds);
    long long start = now_ns(), last_drain = start;
    int next = 0;
    long s = 0;
    while (sent < total) {
        long long t = now_ns();
        long long due = (long long)((double)(t - start) * rate / 1e9) + 1;
        if (due > total) due = total;
        if (t - last_drain > 5000000LL) {
            drain((int)nsocks);
            last_drain = t;
        }
        if (sent >= due) {
            struct timespec pause = {0, 200000};
            nanosleep(&pause, NULL);
            continue;
        }
        int n = (int)(due - sent < BATCH ? due - sent : BATCH);
        for (int i = 0; i < n; i++) {
            int k = (next + i) % count;
            iov[i].iov_base = data[k];
            iov[i].iov_len = lens[k];
            memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
            msgs[i].msg_hdr.msg_name = &dest;
            msgs[i].msg_hdr.msg_namelen = sizeof dest;
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        int done = sendmmsg(socks[s], msgs, (unsigned)n, 0);
        if (done < 0) {
            if (errno == EAGAIN || errno == ENOBUFS || errno == EINTR) {
                blocked++;
                continue;
            }
            perror("sendmmsg");
            return 1;
        }
        for (int i = 0; i < done; i++) {
            int k = (next + i) % count;
            per_kind[kinds[k]]++;
            sent_bytes += (long long)lens[k];
            src_sent[s] += (long long)lens[k];
        }
        sent += done;
        next = (next + done) % count;
        s = (s + 1) % nsocks;
    }
    long long wall = now_ns() - start;
    struct timespec grace = {0, 500000000};
    nanosleep(&grace, NULL);
    drain((int)nsocks);
    long long rx = 0, rx_bytes = 0;
    for (long i = 0; i < nsocks; i++) {
        rx += src_rx[i];
        rx_bytes += src_rx_bytes[i];
    }
    printf("{\"sent\": %lld, \"sent_bytes\": %lld, \"blocked\": %lld, \"wall_ns\": %lld, \"received\": %lld, "
           "\"received_bytes\": %lld, \"per_kind\": [", sent, sent_bytes, blocked, wall, rx, rx_bytes);
    for (int k = 0; k < KINDS; k++) printf("%s%lld", k ? ", " : "", per_kind[k]);
    printf("], \"sources\": [");
    for (long i = 0; i < nsocks; i++)
        printf("%s[%lld, %lld, %lld]", i ? ", " : "", src_sent[i], src_rx_bytes[i], src_rx[i]);
    printf("]}\n");
    return 0;
}
