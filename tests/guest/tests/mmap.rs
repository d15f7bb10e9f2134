//! Zero-copy readers: the read-only mapping of a channel's ring, its layout, its memory-ordering
//! contract, and every way a hostile mapping request is refused.

use std::os::fd::OwnedFd;

use memchan_abi as abi;
use memchan_guest_tests::*;
use rustix::fs::OFlags;

const RD: OFlags = OFlags::RDONLY.union(OFlags::NONBLOCK);

fn writer(policy: u32) -> OwnedFd {
    let w = open(OFlags::WRONLY | OFlags::NONBLOCK).unwrap();
    set_policy(&w, policy);
    w
}

#[test]
fn control_page_describes_the_ring() {
    require_guest();
    let r = open(RD).unwrap();
    let m = RingMap::ro(&r);
    let i = info(&r);
    assert_eq!(m.u32_at(0), abi::RING_MAGIC);
    assert_eq!(m.u32_at(4), abi::ABI_VERSION);
    assert_eq!(m.u64_at(8), i.ring_bytes);
    // Control page, producer page, then the data.
    assert_eq!(m.u64_at(16), 2 * 4096);
    assert_eq!(
        m.ctl(std::mem::offset_of!(abi::RingControl, producer_offset)),
        4096
    );
    assert_eq!(i.mmap_bytes, 2 * 4096 + 2 * i.ring_bytes);
    assert_eq!(
        m.ctl(std::mem::offset_of!(abi::RingControl, head_seq)),
        i.head_seq
    );
    assert_eq!(
        m.ctl(std::mem::offset_of!(abi::RingControl, tail_seq)),
        i.oldest_seq
    );
}

#[test]
fn records_are_read_in_place_including_across_the_wrap() {
    require_guest();
    let w = writer(abi::POLICY_OVERWRITE);
    let r = open(RD).unwrap();
    let m = RingMap::ro(&r);
    let ring = info(&r).ring_bytes;
    // Enough odd-sized messages to wrap the ring several times; check each one in place.
    let mut pos = m.head_pos();
    let first = reader(&r).cursor_seq;
    let mut wrapped = 0;
    for (seq, i) in (first..).zip(0..(3 * ring / 500)) {
        let msg: Vec<u8> = (0..(300 + i % 500))
            .map(|k| (k as u8) ^ (i as u8))
            .collect();
        send(&w, &msg).unwrap();
        let (h, payload) = m
            .record(pos)
            .expect("overwritten while nothing else writes");
        assert_eq!(h.seq, seq);
        assert_eq!(h.len as usize, msg.len());
        assert_eq!(payload, msg);
        let size = abi::record_size(h.len);
        if pos / ring != (pos + size - 1) / ring {
            wrapped += 1;
        }
        // Padding is zero: never stale bytes.
        let ring_off = m.u64_at(16) as usize + (pos % ring) as usize;
        let pad = m.bytes(ring_off + 24 + msg.len(), size as usize - 24 - msg.len());
        assert!(pad.iter().all(|b| *b == 0), "record padding not zeroed");
        pos += size;
        assert_eq!(m.head_pos(), pos);
    }
    assert!(
        wrapped >= 2,
        "no record straddled the end of the ring ({wrapped})"
    );
}

#[test]
fn consume_frees_room_in_block_mode_without_copying() {
    require_guest();
    let w = writer(abi::POLICY_BLOCK);
    let r = open(RD).unwrap();
    let m = RingMap::ro(&r);
    let msg = vec![3u8; 2000];
    let mut n = 0;
    while send(&w, &msg).is_ok() {
        n += 1;
    }
    assert_eq!(send(&w, &msg), Err(Errno::AGAIN));
    // Read everything in place, then release it.
    let mut pos = reader(&r).cursor_pos;
    let mut seq = reader(&r).cursor_seq;
    for _ in 0..n {
        let (h, p) = m.record(pos).unwrap();
        assert_eq!((h.seq, p.len()), (seq, 2000));
        pos += abi::record_size(h.len);
        seq += 1;
    }
    ioctl(&r, abi::IOC_CONSUME, &seq as *const u64 as usize).unwrap();
    assert_eq!(reader(&r).lag, 0);
    send(&w, &msg).expect("no room after IOC_CONSUME");
    set_policy(&w, abi::POLICY_OVERWRITE);
}

#[test]
fn a_lapped_mmap_reader_can_tell() {
    require_guest();
    let w = writer(abi::POLICY_OVERWRITE);
    let r = open(RD).unwrap();
    let m = RingMap::ro(&r);
    let pos = m.head_pos();
    let ring = info(&r).ring_bytes;
    for _ in 0..(2 * ring / 1000) {
        send(&w, &[9u8; 1000]).unwrap();
    }
    assert!(
        m.record(pos).is_none(),
        "overwritten record accepted as valid"
    );
    assert!(m.tail_pos() > pos);
}

#[test]
fn hostile_mappings_are_refused() {
    require_guest();
    let r = open(RD).unwrap();
    let len = info(&r).mmap_bytes as usize;
    let shared = libc::MAP_SHARED;
    assert_eq!(
        RingMap::new(&r, len, libc::PROT_READ | libc::PROT_WRITE, shared, 0).err(),
        Some(Errno::ACCESS)
    );
    assert_eq!(
        RingMap::new(&r, len, libc::PROT_READ | libc::PROT_EXEC, shared, 0).err(),
        Some(Errno::PERM)
    );
    assert_eq!(
        RingMap::new(&r, len + 4096, libc::PROT_READ, shared, 0).err(),
        Some(Errno::INVAL)
    );
    assert_eq!(
        RingMap::new(&r, len - 4096, libc::PROT_READ, shared, 0).err(),
        Some(Errno::INVAL)
    );
    assert_eq!(
        RingMap::new(&r, 1 << 30, libc::PROT_READ, shared, 0).err(),
        Some(Errno::INVAL)
    );
    assert_eq!(
        RingMap::new(&r, len, libc::PROT_READ, shared, 4096).err(),
        Some(Errno::INVAL)
    );
    let w = open(OFlags::WRONLY).unwrap();
    assert_eq!(
        RingMap::new(&w, len, libc::PROT_READ, shared, 0).err(),
        Some(Errno::ACCESS)
    );
    // The producer's writable mapping is the producer's alone.
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    let prod = abi::MMAP_PRODUCER_OFFSET as i64;
    for fd in [&r, &w] {
        assert_eq!(
            RingMap::new(fd, len - 4096, rw, shared, prod).err(),
            Some(Errno::ACCESS)
        );
    }
    for flags in [libc::MAP_SHARED, libc::MAP_PRIVATE] {
        let m = RingMap::new(&r, len, libc::PROT_READ, flags, 0).unwrap();
        for prot in [
            libc::PROT_READ | libc::PROT_WRITE,
            libc::PROT_READ | libc::PROT_EXEC,
        ] {
            // SAFETY: changing protection of our own mapping; expected to fail.
            let rc = unsafe { libc::mprotect(m.ptr.cast(), m.len, prot) };
            assert_eq!(
                rc, -1,
                "mprotect upgrade allowed (flags {flags}, prot {prot})"
            );
            assert_eq!(last_errno(), Errno::ACCESS);
        }
        // SAFETY: growing our own mapping; expected to fail (VM_DONTEXPAND).
        let p = unsafe { libc::mremap(m.ptr.cast(), m.len, m.len + 4096, libc::MREMAP_MAYMOVE) };
        assert_eq!(p, libc::MAP_FAILED, "mremap grew the mapping");
    }
    // The channel still works.
    let wr = open(OFlags::WRONLY).unwrap();
    send(&wr, b"ok").unwrap();
    assert_eq!(recv(&r).unwrap(), b"ok");
}

#[test]
fn a_mapping_outlives_close_and_keeps_the_module_pinned() {
    require_guest();
    let r = open(RD).unwrap();
    let m = RingMap::ro(&r);
    drop(r);
    assert_eq!(m.u32_at(0), abi::RING_MAGIC);
    assert_ne!(
        sh("rmmod memchan 2>/dev/null"),
        0,
        "rmmod succeeded with a live mapping"
    );
    drop(m);
}
