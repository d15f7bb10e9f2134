#!/usr/bin/env python3
"""A memchan subscriber using only the standard library.

    python3 examples/python/subscriber.py [DEVICE] [-n COUNT] [--mmap]

Default: select() + read() in record mode (each read returns a 24-byte header -- seq,
timestamp, length -- and the payload). With --mmap: reads records in place from the
read-only ring mapping (control page + double-mapped data), validating each against the
ring's tail as memchan.h describes, and releases them with MEMCHAN_IOC_CONSUME.
"""
import argparse
import errno
import fcntl
import mmap
import os
import select
import struct
import sys

# From abi/include/memchan.h (Linux's generic _IOC encoding).
IOC_MAGIC = 0xB8


def _ioc(direction, nr, size):
    return (direction << 30) | (size << 16) | (IOC_MAGIC << 8) | nr


INFO_FMT = "=IIIIQIIQQIIQ"  # struct memchan_channel_info
READER_FMT = "=IIQQQQQ"  # struct memchan_reader_state
HEADER_FMT = "=QQII"  # struct memchan_record_header
HEADER_SIZE = struct.calcsize(HEADER_FMT)
IOC_INFO = _ioc(2, 1, struct.calcsize(INFO_FMT))
IOC_READER = _ioc(2, 3, struct.calcsize(READER_FMT))
IOC_RECORD_MODE = _ioc(0, 6, 0)
IOC_CONSUME = _ioc(1, 7, 8)
RING_MAGIC = 0x5248434D


def info(fd):
    raw = fcntl.ioctl(fd, IOC_INFO, bytes(struct.calcsize(INFO_FMT)))
    f = struct.unpack(INFO_FMT, raw)
    return {"index": f[2], "policy": f[3], "ring_bytes": f[4], "msg_max": f[5],
            "mmap_bytes": f[11]}


def reader_state(fd):
    raw = fcntl.ioctl(fd, IOC_READER, bytes(struct.calcsize(READER_FMT)))
    f = struct.unpack(READER_FMT, raw)
    return {"cursor_seq": f[2], "cursor_pos": f[3], "lag": f[4], "lost": f[5]}


def show(seq, payload):
    print(f"seq {seq} len {len(payload)}: {payload.decode(errors='replace')}", flush=True)


def by_read(fd, count):
    chan = info(fd)
    fcntl.ioctl(fd, IOC_RECORD_MODE, 1)
    lost_seen = 0
    while count != 0:
        select.select([fd], [], [])
        try:
            rec = os.read(fd, HEADER_SIZE + chan["msg_max"])
        except OSError as e:
            if e.errno == errno.EPIPE:  # overrun: the kernel counted what was lost
                lost = reader_state(fd)["lost"]
                print(f"overrun: {lost - lost_seen} lost", flush=True)
                lost_seen = lost
                continue
            raise
        seq, _ts, length, _flags = struct.unpack_from(HEADER_FMT, rec)
        show(seq, rec[HEADER_SIZE:HEADER_SIZE + length])
        count -= 1


def by_mmap(fd, count):
    chan = info(fd)
    ring = mmap.mmap(fd, chan["mmap_bytes"], mmap.MAP_SHARED, mmap.PROT_READ)
    magic, version, ring_bytes, data_off = struct.unpack_from("=IIQQ", ring, 0)
    if magic != RING_MAGIC or version != 1:
        sys.exit("not a memchan ring of ABI version 1")
    st = reader_state(fd)
    seq, pos = st["cursor_seq"], st["cursor_pos"]
    while count != 0:
        head_pos = struct.unpack_from("=Q", ring, 24)[0]
        if head_pos == pos:
            fcntl.ioctl(fd, IOC_CONSUME, struct.pack("=Q", seq))  # release what was read
            select.select([fd], [], [])
            continue
        off = data_off + pos % ring_bytes
        rseq, _ts, length, _flags = struct.unpack_from(HEADER_FMT, ring, off)
        payload = bytes(ring[off + HEADER_SIZE:off + HEADER_SIZE + length])
        tail_pos = struct.unpack_from("=Q", ring, 40)[0]
        if tail_pos > pos or rseq != seq:  # lapped while copying: start over at the tail
            tail_seq = struct.unpack_from("=Q", ring, 48)[0]
            print(f"overrun: {tail_seq - seq} lost", flush=True)
            seq, pos = tail_seq, tail_pos
            continue
        show(seq, payload)
        seq += 1
        pos += (HEADER_SIZE + length + 7) // 8 * 8
        count -= 1
    fcntl.ioctl(fd, IOC_CONSUME, struct.pack("=Q", seq))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("device", nargs="?", default="/dev/memchan")
    p.add_argument("-n", type=int, default=-1, help="stop after N messages")
    p.add_argument("--mmap", action="store_true", help="read in place from the mapping")
    a = p.parse_args()
    try:
        fd = os.open(a.device, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        sys.exit(f"{a.device}: no such channel (is the memchan module loaded?)")
    chan = info(fd)
    mode = "mmap" if a.mmap else "read"
    print(f"ready: channel {chan['index']} ({mode})", flush=True)
    (by_mmap if a.mmap else by_read)(fd, a.n)


if __name__ == "__main__":
    main()
