//! The producer-mapped mode: a writer that publishes records through its own writable mapping,
//! with no system call per message, against the real module: every kind of reader gets them,
//! sleepers are woken through the doorbell, both policies hold, and a hostile producer can
//! hurt nothing but its own channel's messages.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

use memchan::named::{self, ChannelOptions};
use memchan::{Error, MappedReceiver, Policy, Producer, Receiver, Sender};
use memchan_abi as abi;
use memchan_guest_tests::{
    ioctl, open_path, recv, require_guest, revents, send, stats, Errno, RingMap, PATIENCE,
};
use rustix::event::PollFlags;
use rustix::fs::OFlags;

/// A named channel for one test, removed when dropped.
struct Chan {
    name: String,
    path: PathBuf,
}

impl Chan {
    fn new(name: &str, ring_kib: u32, policy: Policy) -> Self {
        let _ = named::destroy(name);
        let opts = ChannelOptions {
            ring_kib: Some(ring_kib),
            msg_max: Some(1024),
            policy: Some(policy),
            mode: Some(0o666),
            ..ChannelOptions::default()
        };
        let path = named::create(name, &opts).expect("create the channel");
        Self {
            name: name.into(),
            path,
        }
    }

    fn node(&self) -> &str {
        self.path.to_str().unwrap()
    }
}

impl Drop for Chan {
    fn drop(&mut self) {
        let _ = named::destroy(&self.name);
    }
}

/// A payload that names its index and has a length of its own.
fn payload(i: usize) -> Vec<u8> {
    let mut v = format!("msg-{i}-").into_bytes();
    v.resize(8 + (i * 37) % 300, b'a' + (i % 26) as u8);
    v
}

#[test]
fn every_kind_of_reader_gets_what_the_producer_publishes() {
    require_guest();
    let c = Chan::new("prod-all", 64, Policy::Block);
    let mut rx = Receiver::open(&c.path).unwrap();
    let mut mapped = MappedReceiver::open(&c.path).unwrap();
    let raw = open_path(c.node(), OFlags::RDONLY | OFlags::NONBLOCK).unwrap();
    let mut p = Producer::open(&c.path).unwrap();
    let first = p.next_seq();
    let n = 200;
    for i in 0..n {
        if i % 3 == 0 {
            let msg = payload(i);
            let buf = p.reserve(msg.len()).unwrap();
            buf.copy_from_slice(&msg);
            p.commit().unwrap();
        } else if i % 3 == 1 {
            p.send(&payload(i)).unwrap();
        } else {
            p.send_batch(&[&payload(i)]).unwrap();
        }
        let m = rx.recv_timeout(PATIENCE).unwrap();
        assert_eq!(m.seq, first + i as u64);
        assert_eq!(m.payload, &payload(i)[..]);
        let b = mapped.recv_timeout(PATIENCE).unwrap();
        assert_eq!(b.seq, first + i as u64);
        assert_eq!(b.payload(), &payload(i)[..]);
        b.release().unwrap();
        assert_eq!(recv(&raw).unwrap(), payload(i));
    }
    let s = stats(&raw);
    assert_eq!(s.messages, n as u64);
    assert_eq!(p.info().unwrap().next_seq, first + n as u64);
}

#[test]
fn one_producer_at_a_time_and_no_writes_meanwhile() {
    require_guest();
    let c = Chan::new("prod-one", 16, Policy::Overwrite);
    let mut rx = Receiver::open_nonblocking(&c.path).unwrap();
    let tx = Sender::open(&c.path).unwrap();
    tx.send(b"before").unwrap();
    let mut p = Producer::open(&c.path).unwrap();
    assert!(matches!(
        Producer::open(&c.path),
        Err(Error::ProducerTaken { .. })
    ));
    let w = open_path(c.node(), OFlags::WRONLY).unwrap();
    assert_eq!(send(&w, b"x"), Err(Errno::BUSY));
    // A write-only file may not claim (its mapping would show the ring).
    assert_eq!(ioctl(&w, abi::IOC_PRODUCER, 0), Err(Errno::BADF));
    // Nor may anyone but the producer ring the doorbell or map the ring writable.
    let r = open_path(c.node(), OFlags::RDWR).unwrap();
    assert_eq!(ioctl(&r, abi::IOC_DOORBELL, 0), Err(Errno::PERM));
    let len = p.info().unwrap().mmap_bytes as usize - 4096;
    assert_eq!(
        RingMap::new(
            &r,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            abi::MMAP_PRODUCER_OFFSET as i64
        )
        .err(),
        Some(Errno::ACCESS)
    );
    p.send(b"during").unwrap();
    drop(p);
    // The claim ended with the producer: writes work again, in sequence.
    tx.send(b"after").unwrap();
    let mut p2 = Producer::open(&c.path).unwrap();
    p2.send(b"second producer").unwrap();
    let got: Vec<(u64, Vec<u8>)> = (0..4)
        .map(|_| {
            let m = rx.try_recv().unwrap();
            (m.seq, m.payload.to_vec())
        })
        .collect();
    let seqs: Vec<u64> = got.iter().map(|g| g.0).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    let texts: Vec<&[u8]> = got.iter().map(|g| &g.1[..]).collect();
    assert_eq!(
        texts,
        [&b"before"[..], b"during", b"after", b"second producer"]
    );
}

#[test]
fn a_writer_asleep_for_room_gets_ebusy_when_a_producer_claims() {
    require_guest();
    let c = Chan::new("prod-busy", 16, Policy::Block);
    // A reader that never reads: under `block`, the ring fills up and stays full.
    let stuck = Receiver::open(&c.path).unwrap();
    let fill = open_path(c.node(), OFlags::WRONLY | OFlags::NONBLOCK).unwrap();
    while send(&fill, &[7; 512]).is_ok() {}
    assert_eq!(send(&fill, &[7; 512]), Err(Errno::AGAIN));
    let node = c.node().to_string();
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let (tx, rx) = std::sync::mpsc::channel();
    let writer = std::thread::spawn(move || {
        let w = open_path(&node, OFlags::WRONLY).unwrap();
        ready_tx.send(()).unwrap();
        tx.send(send(&w, &[8; 512])).unwrap();
    });
    ready.recv().unwrap();
    // Asleep in `write()` (a pipe writer with a full pipe is in the same place).
    std::thread::sleep(Duration::from_millis(500));
    let p = Producer::open(&c.path).unwrap();
    // Before the claim woke writers, this one slept on until a reader moved.
    let got = rx.recv_timeout(PATIENCE);
    drop(p);
    drop(stuck);
    writer.join().unwrap();
    assert_eq!(got, Ok(Err(Errno::BUSY)), "the sleeping writer's result");
}

#[test]
fn sleeping_readers_are_woken_by_the_doorbell_under_stress() {
    require_guest();
    let c = Chan::new("prod-wake", 64, Policy::Block);
    let n = 3000usize;
    let path = c.path.clone();
    // A reader that sleeps in read() whenever it has caught up, one that sleeps in poll()
    // (the mapped receiver), and the producer pausing now and then so that they do.
    let mut rx = Receiver::open(&path).unwrap();
    let mut mapped = MappedReceiver::open(&path).unwrap();
    let readers = [
        std::thread::spawn(move || {
            for i in 0..n {
                let m = rx.recv_timeout(PATIENCE).expect("read() sleeper not woken");
                assert_eq!(m.payload, &payload(i)[..]);
            }
        }),
        std::thread::spawn(move || {
            for i in 0..n {
                let b = mapped
                    .recv_timeout(PATIENCE)
                    .expect("poll() sleeper not woken");
                assert_eq!(b.payload(), &payload(i)[..]);
            }
        }),
    ];
    let mut p = Producer::open(&path).unwrap();
    for i in 0..n {
        p.send(&payload(i)).unwrap();
        if i % 7 == 0 {
            std::thread::sleep(Duration::from_micros(50 + (i as u64 % 300)));
        }
    }
    for r in readers {
        r.join().unwrap();
    }
}

#[test]
fn block_makes_the_producer_wait_for_the_slowest_reader() {
    require_guest();
    let c = Chan::new("prod-block", 4, Policy::Block);
    let mut rx = Receiver::open(&c.path).unwrap();
    let path = c.path.clone();
    let n = 2000usize;
    let producer = std::thread::spawn(move || {
        let mut p = Producer::open(&path).unwrap();
        for i in 0..n {
            p.send(&payload(i)).unwrap();
        }
    });
    // Far more than the 4 KiB ring holds: nothing may be lost or overwritten.
    for i in 0..n {
        let m = rx.recv_timeout(PATIENCE).unwrap();
        assert_eq!(m.payload, &payload(i)[..], "message {i}");
        if i % 100 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    producer.join().unwrap();
    assert_eq!(rx.stats().unwrap().lost, 0);
}

#[test]
fn overwrite_laps_slow_readers_with_exact_losses() {
    require_guest();
    let c = Chan::new("prod-lap", 4, Policy::Overwrite);
    let mut rx = Receiver::open_nonblocking(&c.path).unwrap();
    let mut p = Producer::open(&c.path).unwrap();
    let first = p.next_seq();
    let n = 500u64;
    for i in 0..n {
        p.send(&(i as u32).to_ne_bytes().repeat(8)).unwrap();
    }
    let lost = match rx.try_recv() {
        Err(Error::Overrun { lost }) => lost,
        other => panic!("no overrun: {other:?}"),
    };
    let mut seen = 0u64;
    let mut last = None;
    while let Ok(m) = rx.try_recv() {
        assert_eq!(m.seq, first + lost + seen);
        let i = u32::from_ne_bytes(m.payload[..4].try_into().unwrap());
        assert_eq!(u64::from(i), lost + seen);
        last = Some(i);
        seen += 1;
    }
    assert_eq!(lost + seen, n, "lost {lost} + read {seen}");
    assert_eq!(last, Some(n as u32 - 1));
}

/// A producer keeping a small ring full while 8 readers sleep in `read()`: its tail moves with
/// every message, and the kernel must take its records anyway (it faulted it within seconds
/// once). Under `overwrite` the readers also copy records the producer is about to reuse:
/// every message delivered must be the one its sequence number names, torn ones never.
fn a_full_ring_with_many_readers(name: &str, policy: Policy) {
    let c = Chan::new(name, 16, policy);
    let n = 20_000usize;
    let mut p = Producer::open(&c.path).unwrap();
    let first = p.next_seq();
    let readers: Vec<_> = (0..8)
        .map(|_| {
            let mut rx = Receiver::open(&c.path).unwrap();
            std::thread::spawn(move || {
                let (mut seen, mut lost) = (0u64, 0u64);
                loop {
                    match rx.recv_timeout(PATIENCE) {
                        Ok(m) => {
                            let i = usize::try_from(m.seq - first).unwrap();
                            assert_eq!(m.payload, &payload(i)[..], "message {i}");
                            seen += 1;
                            if i == n - 1 {
                                return (seen, lost);
                            }
                        }
                        Err(Error::Overrun { lost: l }) if policy == Policy::Overwrite => lost += l,
                        Err(e) => panic!("reader: {e}"),
                    }
                }
            })
        })
        .collect();
    for i in 0..n {
        p.send(&payload(i))
            .expect("the kernel refused a correct producer");
    }
    for r in readers {
        let (seen, lost) = r.join().unwrap();
        assert!(
            seen > 0 && seen + lost >= n as u64,
            "seen {seen}, lost {lost}"
        );
        if policy == Policy::Block {
            assert_eq!((seen, lost), (n as u64, 0));
        }
    }
    assert_eq!(p.stats().unwrap().messages, n as u64);
}

#[test]
fn block_full_ring_with_many_readers_keeps_the_producer() {
    require_guest();
    a_full_ring_with_many_readers("prod-full-block", Policy::Block);
}

#[test]
fn overwrite_full_ring_with_many_readers_delivers_no_torn_message() {
    require_guest();
    a_full_ring_with_many_readers("prod-full-over", Policy::Overwrite);
}

/// The producer role by hand: claim, map writable, and the producer page's words.
struct RawProducer {
    fd: OwnedFd,
    map: RingMap,
    ring: u64,
}

impl RawProducer {
    fn claim(c: &Chan) -> Self {
        let fd = open_path(c.node(), OFlags::RDWR | OFlags::NONBLOCK).unwrap();
        ioctl(&fd, abi::IOC_PRODUCER, 0).unwrap();
        let i = memchan_guest_tests::info(&fd);
        let map = RingMap::new(
            &fd,
            i.mmap_bytes as usize - 4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            abi::MMAP_PRODUCER_OFFSET as i64,
        )
        .unwrap();
        Self {
            fd,
            map,
            ring: i.ring_bytes,
        }
    }

    fn put(&self, off: usize, v: u64) {
        assert!(off + 8 <= self.map.len);
        // SAFETY: in bounds, aligned, our own writable mapping.
        unsafe { std::ptr::write_volatile(self.map.ptr.cast::<u8>().add(off).cast::<u64>(), v) };
    }

    fn word(&self, off: usize) -> u64 {
        self.map.u64_at(off)
    }

    /// Byte offset of ring position `pos` in the mapping.
    fn at(&self, pos: u64) -> usize {
        4096 + (pos % self.ring) as usize
    }

    /// Writes a record of 8 bytes `fill` with sequence number `seq` at ring position `pos`,
    /// as a correct producer does (not published); returns the position after it.
    fn record(&self, pos: u64, seq: u64, fill: u8) -> u64 {
        let at = self.at(pos);
        self.put(at, seq);
        self.put(at + 8, 0);
        self.put(at + 16, 8);
        self.put(at + 24, u64::from_ne_bytes([fill; 8]));
        pos + abi::record_size(8)
    }
}

const P_HEAD_POS: usize = std::mem::offset_of!(abi::ProducerControl, head_pos);
const P_HEAD_SEQ: usize = std::mem::offset_of!(abi::ProducerControl, head_seq);
const P_TAIL_POS: usize = std::mem::offset_of!(abi::ProducerControl, tail_pos);
const P_TAIL_SEQ: usize = std::mem::offset_of!(abi::ProducerControl, tail_seq);

#[test]
fn a_producer_that_discarded_all_it_published_is_not_readable() {
    require_guest();
    let c = Chan::new("prod-gone", 16, Policy::Overwrite);
    let r = open_path(c.node(), OFlags::RDONLY | OFlags::NONBLOCK).unwrap();
    // And a reader asleep in read() all along: woken by the doorbell, not by a timer.
    let sleeper = open_path(c.node(), OFlags::RDONLY).unwrap();
    let sleeper = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        let first = rustix::io::read(&sleeper, &mut buf);
        let n = rustix::io::read(&sleeper, &mut buf);
        (first, n, buf)
    });
    let p = RawProducer::claim(&c);
    let (mut pos, mut seq) = (p.word(P_HEAD_POS), p.word(P_HEAD_SEQ));
    for _ in 0..3 {
        pos = p.record(pos, seq, b'a');
        seq += 1;
    }
    p.put(P_HEAD_SEQ, seq);
    p.put(P_HEAD_POS, pos);
    // Before the kernel took them, the producer discards all three (as for a record that
    // needs the room) and holds still: nothing is readable, and poll does not say otherwise
    // (it did once, and a poll loop spun on it for as long as the producer held still).
    p.put(P_TAIL_SEQ, seq);
    p.put(P_TAIL_POS, pos);
    let mut buf = [0u8; 64];
    for _ in 0..3 {
        assert!(
            !revents(&r).contains(PollFlags::IN),
            "readable with nothing to read"
        );
        assert_eq!(rustix::io::read(&r, &mut buf), Err(Errno::AGAIN));
    }
    // Its next record arrives, after an overrun of the three.
    let end = p.record(pos, seq, b'b');
    p.put(P_HEAD_SEQ, seq + 1);
    p.put(P_HEAD_POS, end);
    ioctl(&p.fd, abi::IOC_DOORBELL, 0).unwrap();
    assert_eq!(rustix::io::read(&r, &mut buf), Err(Errno::PIPE));
    assert_eq!(rustix::io::read(&r, &mut buf), Ok(8));
    assert_eq!(&buf[..8], b"bbbbbbbb");
    let (first, n, got) = sleeper.join().unwrap();
    assert_eq!((first, n), (Err(Errno::PIPE), Ok(8)));
    assert_eq!(&got[..8], b"bbbbbbbb");
    assert_eq!(stats(&r).lost, 6);
}

#[test]
fn a_hostile_producer_hurts_only_its_own_channel() {
    require_guest();
    let c = Chan::new("prod-evil", 16, Policy::Overwrite);
    let r = open_path(c.node(), OFlags::RDONLY | OFlags::NONBLOCK).unwrap();
    let rb = open_path(c.node(), OFlags::RDONLY | OFlags::NONBLOCK).unwrap();
    ioctl(&rb, abi::IOC_RECORD_MODE, abi::RECORD_MODE_BATCH as usize).unwrap();
    // Meanwhile, every other kind of reader runs flat out: blocking read() (woken by the
    // doorbells), poll, epoll-less mapped reads, sysfs.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut others = Vec::new();
    for kind in 0..3 {
        let (stop, path, name) = (stop.clone(), c.path.clone(), c.name.clone());
        others.push(std::thread::spawn(move || {
            let mut rx = Receiver::open(&path).unwrap();
            let mut mapped = MappedReceiver::open(&path).unwrap();
            let raw = open_path(path.to_str().unwrap(), OFlags::RDONLY).unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match kind {
                    0 => {
                        let _ = rx.recv_timeout(Duration::from_millis(20));
                    }
                    1 => {
                        let _ = mapped.recv_timeout(Duration::from_millis(20)).map(|b| {
                            let _ = b.payload().len();
                        });
                    }
                    _ => {
                        let _ = revents(&raw);
                        let _ = std::fs::read_to_string(format!(
                            "/sys/class/misc/memchan-{name}/stats"
                        ));
                    }
                }
            }
        }));
    }
    let mut rng = fastrand::Rng::with_seed(7);
    for round in 0..300 {
        let p = RawProducer::claim(&c);
        let head = p.word(P_HEAD_POS);
        // Random bytes over records, random lengths, positions and sequence numbers.
        for _ in 0..rng.usize(1..20) {
            let off = (4096 + rng.usize(0..(2 * p.ring as usize - 8))) & !7;
            p.put(off, rng.u64(..));
        }
        let len = rng.u32(0..5000);
        let hdr = p.at(head);
        p.put(hdr, p.word(P_HEAD_SEQ));
        p.put(hdr + 16, u64::from(len) | (u64::from(rng.u32(0..2)) << 32));
        let new_head = match rng.u8(0..4) {
            0 => head + abi::record_size(len),
            1 => head.wrapping_add(rng.u64(..)),
            2 => head + rng.u64(0..3 * p.ring),
            _ => head.wrapping_sub(rng.u64(0..p.ring)),
        };
        if rng.bool() {
            p.put(P_TAIL_POS, rng.u64(..));
            p.put(P_TAIL_SEQ, rng.u64(..));
        }
        p.put(P_HEAD_SEQ, rng.u64(..));
        p.put(P_HEAD_POS, new_head);
        let bell = ioctl(&p.fd, abi::IOC_DOORBELL, 0);
        assert!(matches!(bell, Ok(_) | Err(Errno::IO)), "{round}: {bell:?}");
        // Readers get validated records or errors, and never hang.
        let mut buf = vec![0u8; 1 << 16];
        for fd in [&r, &rb] {
            for _ in 0..64 {
                match rustix::io::read(fd, &mut buf) {
                    Ok(n) => assert!(n > 0 && n <= buf.len()),
                    Err(Errno::AGAIN) => break,
                    Err(Errno::PIPE) => {}
                    Err(e) => panic!("{round}: read gave {e:?}"),
                }
            }
            let _ = ioctl(fd, libc::FIONREAD as u32, buf.as_mut_ptr() as usize);
            let _ = revents(fd);
        }
        let _ = memchan_guest_tests::info(&r);
        let _ = std::fs::read_to_string(format!("/sys/class/misc/memchan-{}/stats", c.name));
        drop(p);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in others {
        t.join().expect("a reader failed");
    }
    // Once the hostile producer is gone, the channel works as ever.
    let w = open_path(c.node(), OFlags::WRONLY).unwrap();
    let fresh = open_path(c.node(), OFlags::RDONLY | OFlags::NONBLOCK).unwrap();
    send(&w, b"still fine").unwrap();
    assert_eq!(recv(&fresh).unwrap(), b"still fine");
    let mut p = Producer::open(&c.path).unwrap();
    p.send(b"and a producer too").unwrap();
    assert_eq!(recv(&fresh).unwrap(), b"and a producer too");
    assert!(revents(&fresh).is_empty() || revents(&fresh).contains(PollFlags::OUT));
}

#[test]
fn a_record_never_published_is_never_seen() {
    require_guest();
    let c = Chan::new("prod-dead", 16, Policy::Block);
    let r = open_path(c.node(), OFlags::RDONLY | OFlags::NONBLOCK).unwrap();
    let p = RawProducer::claim(&c);
    let head = p.word(P_HEAD_POS);
    let seq = p.word(P_HEAD_SEQ);
    // A whole, valid record written but not published: its producer "dies" here.
    let hdr = p.at(head);
    p.put(hdr, seq);
    p.put(hdr + 16, 8);
    p.put(hdr + 24, u64::from_ne_bytes(*b"half-way"));
    drop(p);
    assert_eq!(recv(&r), Err(Errno::AGAIN));
    let mut next = Producer::open(&c.path).unwrap();
    assert_eq!(next.next_seq(), seq);
    next.send(b"next").unwrap();
    assert_eq!(recv(&r).unwrap(), b"next");
    assert_eq!(recv(&r), Err(Errno::AGAIN));
}

#[test]
fn no_pin_of_the_producer_mapping_can_outlive_the_claim() {
    require_guest();
    let c = Chan::new("prod-pin", 16, Policy::Overwrite);
    let p = RawProducer::claim(&c);
    // `vmsplice` takes references to the pages behind the buffer (fast GUP, which ignores
    // `VM_IO`) and keeps them in the pipe after the mapping and the claim are gone: through
    // them, a former producer could read (and, with a pin for writing such as O_DIRECT's,
    // write) the ring after `unclaim`. Pages mapped by frame refuse every such reference.
    let mut fds = [0; 2];
    // SAFETY: a plain pipe(2) into a local array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: the pipe's two ends, just created and owned by nobody else.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    for off in [0, 4096] {
        let iov = libc::iovec {
            // SAFETY: within our mapping.
            iov_base: unsafe { p.map.ptr.add(off) }.cast(),
            iov_len: 4096,
        };
        // SAFETY: one valid iovec over our own mapping.
        let n = unsafe { libc::vmsplice(wr.as_raw_fd(), &iov, 1, 0) };
        let e = std::io::Error::last_os_error();
        assert_eq!(
            (n, e.raw_os_error()),
            (-1, Some(libc::EFAULT)),
            "vmsplice of the producer mapping at {off} was accepted"
        );
    }
    drop((rd, wr, p));
}

#[test]
fn a_producer_driving_the_numbers_to_the_wrap_leaves_a_working_channel() {
    require_guest();
    let c = Chan::new("prod-wrap", 4, Policy::Block);
    let p = RawProducer::claim(&c);
    // Each doorbell, the producer discards everything and publishes one record as far ahead
    // as a take accepts (positions 2^62 on, sequence numbers one per 32 bytes of them: one
    // record of one byte), until the next sequence number is 50 short of 2^64.
    let target = u64::MAX - 49;
    let most = (1u64 << 62) / 32 - 1;
    let mut doorbells = 0;
    loop {
        let (pos, seq) = (p.word(P_HEAD_POS), p.word(P_HEAD_SEQ));
        if seq == target {
            break;
        }
        let d = target.wrapping_sub(seq).min(most) - 1;
        let (tail_pos, tail_seq) = (pos.wrapping_add(32 * d), seq.wrapping_add(d));
        let head = p.record(tail_pos, tail_seq, b'j');
        p.put(P_TAIL_SEQ, tail_seq);
        p.put(P_TAIL_POS, tail_pos);
        p.put(P_HEAD_SEQ, tail_seq.wrapping_add(1));
        p.put(P_HEAD_POS, head);
        ioctl(&p.fd, abi::IOC_DOORBELL, 0).expect("a jump a take accepts");
        doorbells += 1;
        assert!(doorbells < 200);
    }
    drop(p);
    // Ordinary traffic across the wrap, under `block`: `slow` reads nothing, so the writer
    // must stop when the ring is full of what it has not read.
    let w = open_path(c.node(), OFlags::WRONLY | OFlags::NONBLOCK).unwrap();
    let fast = open_path(c.node(), OFlags::RDONLY | OFlags::NONBLOCK).unwrap();
    let slow = open_path(c.node(), OFlags::RDONLY | OFlags::NONBLOCK).unwrap();
    ioctl(&fast, abi::IOC_RECORD_MODE, abi::RECORD_MODE_ON as usize).unwrap();
    ioctl(&slow, abi::IOC_RECORD_MODE, abi::RECORD_MODE_ON as usize).unwrap();
    let capacity = 4096 / abi::record_size(8);
    for k in 0..capacity {
        send(&w, &k.to_ne_bytes()).unwrap();
        let (h, body) = memchan_guest_tests::recv_record(&fast).unwrap();
        assert_eq!(
            (h.seq, body),
            (target.wrapping_add(k), k.to_ne_bytes().to_vec())
        );
    }
    assert_eq!(send(&w, b"one more"), Err(Errno::AGAIN));
    for k in 0..capacity {
        let (h, body) = memchan_guest_tests::recv_record(&slow).unwrap();
        assert_eq!(
            (h.seq, body),
            (target.wrapping_add(k), k.to_ne_bytes().to_vec())
        );
    }
    assert_eq!(recv(&slow), Err(Errno::AGAIN));
    assert_eq!(memchan_guest_tests::reader(&slow).lost, 0);
    // And `overwrite` laps `slow` across it with an exact count.
    memchan_guest_tests::set_policy(&w, abi::POLICY_OVERWRITE);
    for k in 0..capacity + 3 {
        send(&w, &k.to_ne_bytes()).unwrap();
        memchan_guest_tests::recv_record(&fast).unwrap();
    }
    assert_eq!(recv(&slow), Err(Errno::PIPE));
    assert_eq!(memchan_guest_tests::reader(&slow).lost, 3);
}
