/*
 * A memchan reader in plain C: only memchan.h, poll() and read().
 *
 *   cc -I abi/include -o reader examples/c/reader.c
 *   ./reader [DEVICE [COUNT]]      (default /dev/memchan, forever)
 *
 * Prints "seq <n> len <len>: <payload>" per message, and reports overruns (EPIPE) with the
 * exact number of messages lost, as the kernel counts them.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <memchan.h>

int main(int argc, char **argv)
{
	const char *dev = argc > 1 ? argv[1] : MEMCHAN_DEVICE_PATH;
	long count = argc > 2 ? atol(argv[2]) : -1;
	struct memchan_channel_info info = { 0 };
	struct memchan_reader_state st = { 0 };
	__u64 lost_seen = 0;
	char *buf;
	int fd;

	fd = open(dev, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "open %s: %s%s\n", dev, strerror(errno),
			errno == ENOENT ? " (is the memchan module loaded?)" : "");
		return 69;
	}
	if (ioctl(fd, MEMCHAN_IOC_INFO, &info) < 0) {
		perror("MEMCHAN_IOC_INFO (not a memchan device?)");
		return 69;
	}
	/* Record mode: each read() returns a header (seq, timestamp, len) and the payload. */
	if (ioctl(fd, MEMCHAN_IOC_RECORD_MODE, 1) < 0) {
		perror("MEMCHAN_IOC_RECORD_MODE");
		return 1;
	}
	buf = malloc(MEMCHAN_RECORD_HEADER_SIZE + info.msg_max);
	if (!buf)
		return 1;
	printf("ready: channel %u, policy %s, ring %llu bytes\n", info.index,
	       info.policy == MEMCHAN_POLICY_BLOCK ? "block" : "overwrite",
	       (unsigned long long)info.ring_bytes);
	fflush(stdout);

	while (count != 0) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		struct memchan_record_header h;
		ssize_t n;

		if (poll(&pfd, 1, -1) < 0) {
			if (errno == EINTR)
				continue;
			perror("poll");
			return 1;
		}
		n = read(fd, buf, MEMCHAN_RECORD_HEADER_SIZE + info.msg_max);
		if (n < 0 && errno == EPIPE) {
			/* Overrun: the reader was lapped. The kernel says how many were lost. */
			if (ioctl(fd, MEMCHAN_IOC_READER, &st) == 0) {
				printf("overrun: %llu lost\n",
				       (unsigned long long)(st.lost - lost_seen));
				lost_seen = st.lost;
			}
			continue;
		}
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			perror("read");
			return 1;
		}
		if (n < MEMCHAN_RECORD_HEADER_SIZE)
			return 1;
		memcpy(&h, buf, sizeof(h));
		printf("seq %llu len %u: %.*s\n", (unsigned long long)h.seq, h.len, (int)h.len,
		       buf + MEMCHAN_RECORD_HEADER_SIZE);
		fflush(stdout);
		if (count > 0)
			count--;
	}
	free(buf);
	close(fd);
	return 0;
}
