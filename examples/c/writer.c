/*
 * A memchan writer in plain C: each write() is one message.
 *
 *   cc -I abi/include -o writer examples/c/writer.c
 *   ./writer DEVICE MESSAGE...
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <memchan.h>

int main(int argc, char **argv)
{
	int fd, i;

	if (argc < 3) {
		fprintf(stderr, "usage: %s DEVICE MESSAGE...\n", argv[0]);
		return 2;
	}
	fd = open(argv[1], O_WRONLY | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "open %s: %s\n", argv[1], strerror(errno));
		return 69;
	}
	for (i = 2; i < argc; i++) {
		size_t len = strlen(argv[i]);

		if (write(fd, argv[i], len) != (ssize_t)len) {
			/* EMSGSIZE: longer than the channel's msg_max. */
			fprintf(stderr, "write: %s\n", strerror(errno));
			return errno == EMSGSIZE ? 65 : 1;
		}
	}
	close(fd);
	return 0;
}
