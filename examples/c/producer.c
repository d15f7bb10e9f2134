/*
 * A memchan producer in plain C: messages written straight into the ring through the
 * producer's writable mapping, published with a store, no system call per message (the
 * doorbell ioctl only when a reader waits, and a wait for room under the block policy).
 *
 *   cc -I abi/include -o producer examples/c/producer.c
 *   ./producer DEVICE MESSAGE...
 *
 * Exit status: 0 sent, 65 a message is too long, 75 the channel has a producer already.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <memchan.h>

struct producer {
	int fd;
	const struct memchan_ring_control *ctl; /* read-only mapping */
	struct memchan_producer_control *prd;   /* writable mapping: producer page, data x2 */
	unsigned char *data;
	__u64 ring_bytes, head_pos, head_seq, tail_pos, tail_seq;
	__u32 msg_max;
};

static __u64 now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (__u64)ts.tv_sec * 1000000000u + (__u64)ts.tv_nsec;
}

static int producer_open(struct producer *p, const char *path)
{
	struct memchan_channel_info info;
	void *ro, *rw;

	p->fd = open(path, O_RDWR | O_CLOEXEC); /* read access too: the mapping shows the ring */
	if (p->fd < 0 || ioctl(p->fd, MEMCHAN_IOC_PRODUCER) < 0 ||
	    ioctl(p->fd, MEMCHAN_IOC_INFO, &info) < 0)
		return -1;
	ro = mmap(NULL, info.mmap_bytes, PROT_READ, MAP_SHARED, p->fd, 0);
	if (ro == MAP_FAILED)
		return -1;
	p->ctl = ro;
	rw = mmap(NULL, info.mmap_bytes - p->ctl->producer_offset, PROT_READ | PROT_WRITE,
		  MAP_SHARED, p->fd, MEMCHAN_MMAP_PRODUCER_OFFSET);
	if (rw == MAP_FAILED)
		return -1;
	p->prd = rw;
	p->data = (unsigned char *)rw + (p->ctl->data_offset - p->ctl->producer_offset);
	p->ring_bytes = info.ring_bytes;
	p->msg_max = info.msg_max;
	/* Where the channel stands: the kernel filled in the producer page. */
	p->head_pos = p->prd->head_pos;
	p->head_seq = p->prd->head_seq;
	p->tail_pos = p->prd->tail_pos;
	p->tail_seq = p->prd->tail_seq;
	return 0;
}

static int producer_send(struct producer *p, const void *msg, __u32 len)
{
	__u64 size = MEMCHAN_RECORD_SIZE(len), end = p->head_pos + size;
	struct memchan_record_header h = { p->head_seq, now_ns(), len, 0 };
	unsigned char *rec;
	__u32 flags = __atomic_load_n(&p->ctl->flags, __ATOMIC_ACQUIRE);

	if (len > p->msg_max) /* the kernel would refuse the producer from then on */
		return errno = EMSGSIZE, -1;
	/* 1. Room: under block, wait (in the kernel) until the slowest reader is far enough. */
	if (!(flags & MEMCHAN_CTL_OVERWRITE) &&
	    end - __atomic_load_n(&p->ctl->room_pos, __ATOMIC_ACQUIRE) > p->ring_bytes &&
	    ioctl(p->fd, MEMCHAN_IOC_DOORBELL, (unsigned long)size) < 0)
		return -1;
	/* Discard the oldest records: raise the tail first, fence, then overwrite. */
	if (end - p->tail_pos > p->ring_bytes) {
		while (end - p->tail_pos > p->ring_bytes) {
			const struct memchan_record_header *old =
				(const void *)(p->data + p->tail_pos % p->ring_bytes);

			p->tail_pos += MEMCHAN_RECORD_SIZE(old->len);
			p->tail_seq++;
		}
		__atomic_store_n(&p->prd->tail_seq, p->tail_seq, __ATOMIC_RELEASE);
		__atomic_store_n(&p->prd->tail_pos, p->tail_pos, __ATOMIC_RELEASE);
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
	}
	/* 2. The record in place (the data is mapped twice: it never wraps here). */
	rec = p->data + p->head_pos % p->ring_bytes;
	memcpy(rec, &h, sizeof(h));
	memcpy(rec + sizeof(h), msg, len);
	memset(rec + sizeof(h) + len, 0, size - sizeof(h) - len);
	p->head_pos = end;
	p->head_seq++;
	/* 3. Publish: head_seq, then head_pos with release. */
	__atomic_store_n(&p->prd->head_seq, p->head_seq, __ATOMIC_RELEASE);
	__atomic_store_n(&p->prd->head_pos, p->head_pos, __ATOMIC_RELEASE);
	/* 4. A full fence, then the doorbell only if a reader waits. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (__atomic_load_n(&p->ctl->waiters, __ATOMIC_RELAXED) &&
	    ioctl(p->fd, MEMCHAN_IOC_DOORBELL, 0UL) < 0)
		return -1;
	return 0;
}

int main(int argc, char **argv)
{
	struct producer p;
	int i;

	if (argc < 3) {
		fprintf(stderr, "usage: %s DEVICE MESSAGE...\n", argv[0]);
		return 2;
	}
	if (producer_open(&p, argv[1]) < 0) {
		fprintf(stderr, "producer %s: %s\n", argv[1], strerror(errno));
		return errno == EBUSY ? 75 : 69;
	}
	for (i = 2; i < argc; i++) {
		size_t len = strlen(argv[i]);

		if (len == 0)
			continue; /* an empty message stores nothing, as with write() */
		if (producer_send(&p, argv[i], (__u32)len) < 0) {
			fprintf(stderr, "send: %s\n", strerror(errno));
			return errno == EMSGSIZE ? 65 : 1;
		}
	}
	/* Closing the file (and exiting) ends the claim. */
	return 0;
}
