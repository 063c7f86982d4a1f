// SPDX-License-Identifier: MIT
/* A minimal blocking echo client, the yardstick of bench/client_bench.py (not a data-path program).
 *
 *   blocking_client pingpong ADDR PORT MSG_SIZE ROUND_TRIPS
 *   blocking_client stream ADDR PORT BYTES
 *
 * pingpong: one connection, write a message, read its echo, compare it with what was sent (memcmp),
 * time each round trip (CLOCK_MONOTONIC). stream: one connection, a writer thread and a reader
 * thread (the echo flows back while the rest is still being written), every received byte compared
 * with what was sent. Prints one JSON line: p50/p99 round trip (pingpong), goodput, CPU seconds;
 * exit 1 on a short read or a mismatch. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUF (128u * 1024u)

static uint8_t pattern[BUF];
static int fd;
static uint64_t total;

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what)
{
	perror(what);
	exit(1);
}

static void *writer(void *arg)
{
	(void)arg;
	for (uint64_t sent = 0; sent < total;) {
		size_t in = (size_t)(sent % BUF), n = BUF - in;
		if (total - sent < n)
			n = (size_t)(total - sent);
		ssize_t w = write(fd, pattern + in, n);
		if (w < 0)
			die("write");
		sent += (uint64_t)w;
	}
	shutdown(fd, SHUT_WR);
	return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	if (argc < 5)
		return 2;
	for (size_t i = 0; i < BUF; i++)
		pattern[i] = (uint8_t)(i * 2654435761u >> 13);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[3]))};
	inet_pton(AF_INET, argv[2], &a.sin_addr);
	fd = socket(AF_INET, SOCK_STREAM, 0);
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
		die("connect");
	static uint8_t rbuf[BUF];
	uint64_t t0 = now_ns(), p50 = 0, p99 = 0;
	if (!strcmp(argv[1], "pingpong")) {
		size_t msg = (size_t)atol(argv[4]);
		uint64_t rts = (uint64_t)atoll(argv[5]);
		uint64_t *s = malloc(rts * sizeof(*s));
		for (uint64_t k = 0; k < rts; k++) {
			const uint8_t *m = pattern + (k % 64);
			uint64_t t = now_ns();
			if (write(fd, m, msg) != (ssize_t)msg)
				die("write");
			for (size_t got = 0; got < msg;) {
				ssize_t r = read(fd, rbuf + got, msg - got);
				if (r <= 0)
					die("read");
				got += (size_t)r;
			}
			s[k] = now_ns() - t;
			if (memcmp(rbuf, m, msg))
				die("mismatch");
		}
		total = msg * rts;
		qsort(s, rts, sizeof(*s), cmp_u64);
		p50 = s[(rts * 50 + 99) / 100 - 1];
		p99 = s[(rts * 99 + 99) / 100 - 1];
	} else {
		total = (uint64_t)atoll(argv[4]);
		pthread_t th;
		pthread_create(&th, NULL, writer, NULL);
		for (uint64_t got = 0; got < total;) {
			ssize_t r = read(fd, rbuf, BUF - (size_t)(got % BUF));
			if (r <= 0)
				die("short read");
			if (memcmp(rbuf, pattern + got % BUF, (size_t)r))
				die("mismatch");
			got += (uint64_t)r;
		}
		pthread_join(th, NULL);
	}
	double wall = (double)(now_ns() - t0) / 1e9;
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	printf("{\"p50_ns\":%llu,\"p99_ns\":%llu,\"goodput_bytes_per_s\":%.1f,\"cpu_s\":%.6f}\n",
	       (unsigned long long)p50, (unsigned long long)p99, (double)total / wall,
	       ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
		   ru.ru_stime.tv_usec / 1e6);
	close(fd);
	return 0;
}
