/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * memchan.h - the memchan kernel/userspace ABI for C, C++ and (via ctypes/struct) Python.
 *
 * Mirrors abi/src/abi.rs (the single source of truth, shared by the Rust kernel module and the
 * Rust library); `cargo test -p memchan-abi` checks every constant, size and field offset here
 * against it. See abi.rs for the full documentation of each item.
 */
#ifndef MEMCHAN_H
#define MEMCHAN_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define MEMCHAN_ABI_VERSION 1
#define MEMCHAN_DEVICE_PATH "/dev/memchan"   /* channel 0; channel i>0: /dev/memchan<i> */
#define MEMCHAN_CHANNELS_MAX 16
#define MEMCHAN_MSG_MAX 4096                 /* default message-size limit */
#define MEMCHAN_RING_KIB_DEFAULT 64
#define MEMCHAN_RING_KIB_MIN 4
#define MEMCHAN_RING_KIB_MAX (16 * 1024)
#define MEMCHAN_MAX_READERS_MAX 4096         /* largest max_readers */
#define MEMCHAN_NAME_MAX 32                  /* longest named channel name */
#define MEMCHAN_NAMED_MAX 64                 /* most named channels at once */

#define MEMCHAN_POLICY_BLOCK 0               /* writers wait for the slowest subscriber */
#define MEMCHAN_POLICY_OVERWRITE 1           /* writers never wait; lapped readers get EPIPE */

#define MEMCHAN_SEEK_OLDEST 0
#define MEMCHAN_SEEK_NEWEST 1

/* Header of each record in the ring, and in front of each read() payload in record mode. */
struct memchan_record_header {
	__u64 seq;          /* per-channel sequence number, from 1 */
	__u64 timestamp_ns; /* CLOCK_MONOTONIC at write() */
	__u32 len;          /* payload bytes */
	__u32 flags;        /* 0 */
};
#define MEMCHAN_RECORD_HEADER_SIZE 24
#define MEMCHAN_RECORD_ALIGN 8
#define MEMCHAN_RECORD_SIZE(len) \
	((((__u64)MEMCHAN_RECORD_HEADER_SIZE + (len)) + MEMCHAN_RECORD_ALIGN - 1) / \
	 MEMCHAN_RECORD_ALIGN * MEMCHAN_RECORD_ALIGN)

/* Page 0 of the mapping; data (mapped twice in a row) at data_offset. */
#define MEMCHAN_RING_MAGIC 0x5248434dU
struct memchan_ring_control {
	__u32 magic;
	__u32 abi_version;
	__u64 ring_bytes;
	__u64 data_offset;
	__u64 head_pos;  /* load-acquire, then read records below it */
	__u64 head_seq;
	__u64 tail_pos;  /* re-load after copying a record: if past it, the copy is torn */
	__u64 tail_seq;
	__u64 producer_offset; /* struct memchan_producer_control: head and tail as published */
	__u64 room_pos;  /* block + producer: slowest reader; fill up to room_pos + ring_bytes */
	__u32 waiters;   /* non-zero: a reader sleeps or polls; the producer rings the doorbell */
	__u32 flags;     /* MEMCHAN_CTL_* */
};
#define MEMCHAN_CTL_PRODUCER 1       /* a producer has claimed the channel */
#define MEMCHAN_CTL_PRODUCER_FAULT 2 /* it published something invalid; no longer taken */
#define MEMCHAN_CTL_OVERWRITE 4      /* the policy is overwrite (else block) */

/* Page 1 of the mapping (at producer_offset): the ring's head and tail as its writer
 * publishes them (the kernel's own values without a producer). Readers load head_pos and
 * tail_pos here. The protocol of a producer: see ProducerControl in abi/src/abi.rs and the
 * example examples/c/producer.c. */
struct memchan_producer_control {
	__u64 head_pos;  /* store head_seq, then head_pos with release */
	__u64 head_seq;
	__u64 tail_pos;  /* raise tail_seq, then tail_pos, then a full fence, then overwrite */
	__u64 tail_seq;
};
#define MEMCHAN_MMAP_PRODUCER_OFFSET 0x100000000ULL /* mmap offset of the writable mapping */

struct memchan_channel_info {
	__u32 size;
	__u32 abi_version;
	__u32 index;
	__u32 policy;
	__u64 ring_bytes;
	__u32 msg_max;
	__u32 record_header;
	__u64 head_seq;
	__u64 oldest_seq;
	__u32 subscribers;
	__u32 writers;
	__u64 mmap_bytes;
};

struct memchan_channel_stats {
	__u32 size;
	__u32 reserved;
	__u64 messages;
	__u64 bytes;
	__u64 overruns;
	__u64 lost;
	__u64 blocked_writes;
	__u64 delivered;
};

#define MEMCHAN_READER_SUBSCRIBER 1
#define MEMCHAN_READER_RECORD_MODE 2
#define MEMCHAN_READER_OVERRUN 4

struct memchan_reader_state {
	__u32 size;
	__u32 flags;
	__u64 cursor_seq;
	__u64 cursor_pos;
	__u64 lag;
	__u64 lost;
	__u64 pending_lost;
};

#define MEMCHAN_IOC_MAGIC 0xB8
#define MEMCHAN_IOC_INFO        _IOR(MEMCHAN_IOC_MAGIC, 1, struct memchan_channel_info)
#define MEMCHAN_IOC_STATS       _IOR(MEMCHAN_IOC_MAGIC, 2, struct memchan_channel_stats)
#define MEMCHAN_IOC_READER      _IOR(MEMCHAN_IOC_MAGIC, 3, struct memchan_reader_state)
#define MEMCHAN_IOC_SEEK        _IO(MEMCHAN_IOC_MAGIC, 4)  /* arg: MEMCHAN_SEEK_* by value */
#define MEMCHAN_IOC_SET_POLICY  _IO(MEMCHAN_IOC_MAGIC, 5)  /* arg: MEMCHAN_POLICY_* by value; owner or CAP_SYS_ADMIN */
#define MEMCHAN_IOC_RECORD_MODE _IO(MEMCHAN_IOC_MAGIC, 6)  /* arg: a MEMCHAN_RECORD_MODE_* */
/* Record modes: payload only; header + payload per read(); as many whole records per read()
 * as are ready and fit, each header + payload + zero padding (MEMCHAN_RECORD_SIZE(len)). */
#define MEMCHAN_RECORD_MODE_OFF 0
#define MEMCHAN_RECORD_MODE_ON 1
#define MEMCHAN_RECORD_MODE_BATCH 2
#define MEMCHAN_IOC_CONSUME     _IOW(MEMCHAN_IOC_MAGIC, 7, __u64) /* arg: pointer to next seq */

/* Several messages in one call: records as batch reads return them (header with len set,
 * payload, zero padding); returns the bytes of whole records sent (at least the first, at
 * most MEMCHAN_SEND_BATCH_MAX); flags must be 0, seq and timestamp are set by the kernel. */
struct memchan_send_batch {
	__u64 data; /* address of the records */
	__u64 len;  /* their length in bytes */
};
#define MEMCHAN_IOC_SEND_BATCH  _IOW(MEMCHAN_IOC_MAGIC, 8, struct memchan_send_batch)
#define MEMCHAN_SEND_BATCH_MAX  65536

/* The producer-mapped mode: claim (write access; EBUSY if taken), then ring the doorbell
 * after publishing when ring_control.waiters is set (arg 0), or to wait for n bytes of room
 * under block (arg n). */
#define MEMCHAN_IOC_PRODUCER    _IO(MEMCHAN_IOC_MAGIC, 9)
#define MEMCHAN_IOC_DOORBELL    _IO(MEMCHAN_IOC_MAGIC, 10) /* arg: room needed, by value */

#endif /* MEMCHAN_H */
