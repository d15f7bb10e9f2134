//! The channel semantics: broadcast ring, record mode, overflow policies, poll/epoll, ioctls,
//! fdinfo, several channels. Each test leaves the default channel in `overwrite` mode.

use memchan_abi as abi;
use memchan_guest_tests::*;
use rustix::event::PollFlags;
use rustix::fs::OFlags;

const RD: OFlags = OFlags::RDONLY.union(OFlags::NONBLOCK);

/// A writer fd on the default channel, with the channel reset to `policy`.
fn writer_with(policy: u32) -> std::os::fd::OwnedFd {
    let w = open(OFlags::WRONLY).expect("open writer");
    set_policy(&w, policy);
    w
}

#[test]
fn broadcast_every_subscriber_gets_every_message_in_order() {
    require_guest();
    let w = writer_with(abi::POLICY_OVERWRITE);
    let readers: Vec<_> = (0..3).map(|_| open(RD).unwrap()).collect();
    for r in &readers {
        ioctl(r, abi::IOC_RECORD_MODE, 1).unwrap();
    }
    let first = info(&w).head_seq;
    for i in 0..10u32 {
        send(&w, format!("msg {i}").as_bytes()).unwrap();
    }
    for r in &readers {
        for i in 0..10u32 {
            let (h, p) = recv_record(r).unwrap();
            assert_eq!(h.seq, first + u64::from(i));
            assert_eq!(p, format!("msg {i}").as_bytes());
            assert_eq!(h.flags, 0);
        }
        assert_eq!(recv(r), Err(Errno::AGAIN));
    }
}

#[test]
fn record_mode_header_has_seq_timestamp_and_length() {
    require_guest();
    let w = writer_with(abi::POLICY_OVERWRITE);
    let r = open(RD).unwrap();
    ioctl(&r, abi::IOC_RECORD_MODE, 1).unwrap();
    let before = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    send(&w, b"stamped").unwrap();
    let after = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let ns = |t: rustix::time::Timespec| t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64;
    let (h, p) = recv_record(&r).unwrap();
    assert_eq!(p, b"stamped");
    assert_eq!(h.len, 7);
    assert!(
        h.timestamp_ns >= ns(before) && h.timestamp_ns <= ns(after),
        "timestamp {h:?} outside the write"
    );
    assert_eq!(
        reader(&r).flags & abi::READER_RECORD_MODE,
        abi::READER_RECORD_MODE
    );
    // Record mode off again: plain payloads.
    ioctl(&r, abi::IOC_RECORD_MODE, 0).unwrap();
    send(&w, b"plain").unwrap();
    assert_eq!(recv(&r).unwrap(), b"plain");
    assert_eq!(ioctl(&r, abi::IOC_RECORD_MODE, 3), Err(Errno::INVAL));
}

#[test]
fn fionread_reports_the_next_message_size() {
    require_guest();
    let w = writer_with(abi::POLICY_OVERWRITE);
    let r = open(RD).unwrap();
    let mut n: i32 = -1;
    ioctl(&r, libc::FIONREAD as u32, &mut n as *mut i32 as usize).unwrap();
    assert_eq!(n, 0);
    send(&w, b"12345").unwrap();
    send(&w, b"1234567890").unwrap();
    ioctl(&r, libc::FIONREAD as u32, &mut n as *mut i32 as usize).unwrap();
    assert_eq!(n, 5);
    ioctl(&r, abi::IOC_RECORD_MODE, 1).unwrap();
    ioctl(&r, libc::FIONREAD as u32, &mut n as *mut i32 as usize).unwrap();
    assert_eq!(n, 5 + abi::RECORD_HEADER_SIZE as i32);
}

#[test]
fn write_only_opens_never_hold_the_ring_back() {
    require_guest();
    let w = open(OFlags::WRONLY | OFlags::NONBLOCK).unwrap();
    set_policy(&w, abi::POLICY_BLOCK);
    let ring = info(&w).ring_bytes;
    let msg = vec![7u8; 1000];
    // Several ring-fulls with no subscriber: never EAGAIN.
    for _ in 0..(4 * ring / 1000) {
        send(&w, &msg).expect("blocked without subscribers");
    }
    assert_eq!(info(&w).subscribers, 0);
    set_policy(&w, abi::POLICY_OVERWRITE);
}

#[test]
fn block_policy_waits_for_the_slowest_reader_and_loses_nothing() {
    require_guest();
    let w = open(OFlags::WRONLY | OFlags::NONBLOCK).unwrap();
    set_policy(&w, abi::POLICY_BLOCK);
    let slow = open(RD).unwrap();
    let msg = vec![1u8; 1000];
    let mut written = 0u64;
    loop {
        match send(&w, &msg) {
            Ok(_) => written += 1,
            Err(Errno::AGAIN) => break,
            Err(e) => panic!("write: {e}"),
        }
    }
    assert!(written > 10);
    assert!(
        !revents(&w).contains(PollFlags::OUT),
        "EPOLLOUT on a full block channel"
    );
    let blocked_before = stats(&w).blocked_writes;
    // A blocking writer in another process waits...
    let mut child = std::process::Command::new("sh")
        .args(["-c", &format!("printf 'last' > {DEV}")])
        .spawn()
        .unwrap();
    wait_blocked_on(child.id(), DEV);
    assert!(
        child.try_wait().unwrap().is_none(),
        "writer did not block on a full ring"
    );
    // ...until the slow reader makes room.
    for _ in 0..3 {
        assert_eq!(recv(&slow).unwrap(), msg);
    }
    assert!(child.wait().unwrap().success());
    assert!(stats(&w).blocked_writes > blocked_before);
    for _ in 3..written {
        assert_eq!(recv(&slow).unwrap(), msg);
    }
    assert_eq!(recv(&slow).unwrap(), b"last");
    assert_eq!(reader(&slow).lost, 0);
    set_policy(&w, abi::POLICY_OVERWRITE);
}

#[test]
fn a_writer_blocked_on_a_full_ring_dies_promptly_on_sigkill() {
    require_guest();
    let w = open(OFlags::WRONLY | OFlags::NONBLOCK).unwrap();
    set_policy(&w, abi::POLICY_BLOCK);
    let slow = open(RD).unwrap();
    while send(&w, &[0u8; 1000]).is_ok() {}
    let mut child = std::process::Command::new("sh")
        .args(["-c", &format!("exec printf blocked > {DEV}")])
        .spawn()
        .unwrap();
    wait_blocked_on(child.id(), DEV);
    assert!(child.try_wait().unwrap().is_none(), "writer did not block");
    child.kill().unwrap();
    let start = std::time::Instant::now();
    assert!(!child.wait().unwrap().success());
    assert!(start.elapsed() < PATIENCE);
    // Nothing of the killed write arrived; the channel still works.
    while let Ok(m) = recv(&slow) {
        assert_eq!(m, [0u8; 1000]);
    }
    set_policy(&w, abi::POLICY_OVERWRITE);
    send(&w, b"after").unwrap();
    assert_eq!(recv(&slow).unwrap(), b"after");
}

#[test]
fn overwrite_policy_reports_an_overrun_once_with_the_exact_loss() {
    require_guest();
    let w = writer_with(abi::POLICY_OVERWRITE);
    let r = open(RD).unwrap();
    let ring = info(&w).ring_bytes;
    let total = 3 * ring / 128;
    for i in 0..total {
        send(&w, format!("{i:0100}").as_bytes()).unwrap();
    }
    let st = reader(&r);
    assert!(st.flags & abi::READER_OVERRUN != 0);
    assert!(st.lost > 0 && st.lost == st.pending_lost);
    assert!(revents(&r).contains(PollFlags::ERR | PollFlags::PRI));
    let fdinfo = std::fs::read_to_string(format!(
        "/proc/self/fdinfo/{}",
        std::os::fd::AsRawFd::as_raw_fd(&r)
    ))
    .unwrap();
    assert!(
        fdinfo.contains(&format!("memchan_lost:\t{}", st.lost)),
        "fdinfo: {fdinfo}"
    );
    assert_eq!(recv(&r), Err(Errno::PIPE), "no EPIPE after an overrun");
    let mut received = 0u64;
    let mut next = st.lost;
    while let Ok(m) = recv(&r) {
        assert_eq!(
            m,
            format!("{next:0100}").as_bytes(),
            "gap or reorder after overrun"
        );
        next += 1;
        received += 1;
    }
    let st = reader(&r);
    assert_eq!(received + st.lost, total, "received + lost != written");
    assert_eq!(st.pending_lost, 0);
    assert!(stats(&w).overruns >= 1);
}

#[test]
fn seek_replays_the_oldest_or_skips_to_the_newest() {
    require_guest();
    let w = writer_with(abi::POLICY_OVERWRITE);
    send(&w, b"before-open").unwrap();
    let r = open(RD).unwrap();
    assert_eq!(recv(&r), Err(Errno::AGAIN));
    ioctl(&r, abi::IOC_SEEK, abi::SEEK_OLDEST as usize).unwrap();
    let i = info(&r);
    assert!(reader(&r).lag >= 1);
    assert_eq!(reader(&r).cursor_seq, i.oldest_seq);
    ioctl(&r, abi::IOC_SEEK, abi::SEEK_NEWEST as usize).unwrap();
    assert_eq!(recv(&r), Err(Errno::AGAIN));
    assert_eq!(ioctl(&r, abi::IOC_SEEK, 9), Err(Errno::INVAL));
    // Replay really returns the old message.
    ioctl(&r, abi::IOC_SEEK, abi::SEEK_OLDEST as usize).unwrap();
    let mut last = Vec::new();
    while let Ok(m) = recv(&r) {
        last = m;
    }
    assert_eq!(last, b"before-open");
}

#[test]
fn poll_reflects_exactly_this_readers_state() {
    require_guest();
    let w = writer_with(abi::POLICY_OVERWRITE);
    let r = open(RD).unwrap();
    let ev = revents(&r);
    assert!(
        !ev.contains(PollFlags::IN),
        "readable with nothing unread: {ev:?}"
    );
    assert!(ev.contains(PollFlags::OUT | PollFlags::WRNORM));
    send(&w, b"x").unwrap();
    assert!(revents(&r).contains(PollFlags::IN | PollFlags::RDNORM));
    let other = open(RD).unwrap(); // opened after: nothing for it
    assert!(!revents(&other).contains(PollFlags::IN));
    recv(&r).unwrap();
    assert!(
        !revents(&r).contains(PollFlags::IN),
        "still readable after consuming"
    );
}

#[test]
fn epoll_wakes_on_a_write_from_another_process() {
    require_guest();
    let r = open(RD).unwrap();
    let ep = rustix::event::epoll::create(rustix::event::epoll::CreateFlags::CLOEXEC).unwrap();
    rustix::event::epoll::add(
        &ep,
        &r,
        rustix::event::epoll::EventData::new_u64(7),
        rustix::event::epoll::EventFlags::IN,
    )
    .unwrap();
    let child = std::process::Command::new("sh")
        .args(["-c", &format!("sleep 0.3; printf 'wake' > {DEV}")])
        .spawn()
        .unwrap();
    let mut events = Vec::with_capacity(4);
    let timeout = rustix::event::Timespec {
        tv_sec: 10,
        tv_nsec: 0,
    };
    let n = rustix::event::epoll::wait(
        &ep,
        rustix::buffer::spare_capacity(&mut events),
        Some(&timeout),
    )
    .unwrap();
    assert_eq!(n, 1, "epoll_wait timed out");
    assert_eq!(events[0].data.u64(), 7);
    assert_eq!(recv(&r).unwrap(), b"wake");
    kill(child);
}

#[test]
fn info_stats_and_reader_ioctls_describe_the_channel() {
    require_guest();
    let w = writer_with(abi::POLICY_OVERWRITE);
    let r = open(RD).unwrap();
    let i = info(&r);
    assert_eq!(i.size as usize, std::mem::size_of::<abi::ChannelInfo>());
    assert_eq!(i.abi_version, abi::ABI_VERSION);
    assert_eq!(i.index, 0);
    assert_eq!(i.policy, abi::POLICY_OVERWRITE);
    assert_eq!(i.ring_bytes, u64::from(abi::RING_KIB_DEFAULT) * 1024);
    assert_eq!(i.msg_max, abi::MSG_MAX);
    assert_eq!(i.record_header, abi::RECORD_HEADER_SIZE);
    assert!(i.subscribers >= 1 && i.writers >= 1);
    // Control page, producer page, the data twice.
    assert_eq!(i.mmap_bytes, 2 * 4096 + 2 * i.ring_bytes);
    let s0 = stats(&r);
    send(&w, b"count me").unwrap();
    recv(&r).unwrap();
    let s1 = stats(&r);
    assert_eq!(s1.messages, s0.messages + 1);
    assert_eq!(s1.bytes, s0.bytes + 8);
    assert!(s1.delivered > s0.delivered);
    let st = reader(&r);
    assert_eq!(st.flags & abi::READER_SUBSCRIBER, abi::READER_SUBSCRIBER);
    assert_eq!(st.cursor_seq, info(&r).head_seq);
    assert_eq!(st.lag, 0);
}

#[test]
fn ioctl_structs_grow_old_and_new_size_callers_both_work() {
    require_guest();
    let r = open(RD).unwrap();
    let full = std::mem::size_of::<abi::ChannelInfo>();
    let want = info(&r);
    // An older, shorter struct: the kernel fills in exactly its bytes.
    let mut buf = vec![0xAAu8; full + 16];
    let old = abi::ioc(abi::IOC_READ, abi::NR_INFO, 16);
    assert_eq!(ioctl(&r, old, buf.as_mut_ptr() as usize), Ok(0));
    assert_eq!(
        u32::from_ne_bytes(buf[0..4].try_into().unwrap()),
        full as u32
    );
    assert!(
        buf[16..].iter().all(|&b| b == 0xAA),
        "wrote past the caller's struct"
    );
    // A newer, longer struct: the kernel fills in what it knows and leaves the rest.
    let mut buf = vec![0xAAu8; full + 16];
    let new = abi::ioc(abi::IOC_READ, abi::NR_INFO, full + 8);
    assert_eq!(ioctl(&r, new, buf.as_mut_ptr() as usize), Ok(0));
    let got: abi::ChannelInfo =
        unsafe { std::ptr::read_unaligned(buf.as_ptr() as *const abi::ChannelInfo) };
    assert_eq!(
        (got.size, got.ring_bytes, got.msg_max),
        (want.size, want.ring_bytes, want.msg_max)
    );
    assert!(
        buf[full..].iter().all(|&b| b == 0xAA),
        "the kernel filled unknown fields"
    );
    // A struct the kernel reads: a newer caller's extra bytes must be zero.
    let w = open(OFlags::WRONLY).unwrap();
    send(&w, b"one").unwrap();
    let head = info(&r).head_seq;
    let mut arg = [0u64; 2];
    arg[0] = head;
    arg[1] = 7;
    let consume16 = abi::ioc(abi::IOC_WRITE, abi::NR_CONSUME, 16);
    assert_eq!(
        ioctl(&r, consume16, arg.as_ptr() as usize),
        Err(Errno::TOOBIG)
    );
    assert_eq!(reader(&r).lag, 1, "a refused request changed the cursor");
    arg[1] = 0;
    assert_eq!(ioctl(&r, consume16, arg.as_ptr() as usize), Ok(0));
    assert_eq!(reader(&r).lag, 0);
}

#[test]
fn hostile_ioctls_get_clear_errors_and_change_nothing() {
    require_guest();
    let r = open(RD).unwrap();
    let w = open(OFlags::WRONLY).unwrap();
    assert_eq!(ioctl(&r, 0x1234_5678, 0), Err(Errno::NOTTY));
    assert_eq!(
        ioctl(&r, abi::ioc(abi::IOC_READ, 99, 8), 0),
        Err(Errno::NOTTY)
    );
    assert_eq!(
        ioctl(&r, abi::ioc(abi::IOC_WRITE, abi::NR_INFO, 64), 0),
        Err(Errno::NOTTY),
        "wrong direction"
    );
    assert_eq!(ioctl(&r, abi::IOC_INFO, 8), Err(Errno::FAULT));
    assert_eq!(ioctl(&r, abi::IOC_STATS, usize::MAX - 4), Err(Errno::FAULT));
    assert_eq!(ioctl(&r, abi::IOC_CONSUME, 16), Err(Errno::FAULT));
    assert_eq!(ioctl(&r, libc::FIONREAD as u32, 8), Err(Errno::FAULT));
    assert_eq!(
        ioctl(&r, abi::IOC_SET_POLICY, 1),
        Err(Errno::PERM),
        "policy change needs write access"
    );
    assert_eq!(ioctl(&w, abi::IOC_SET_POLICY, 9), Err(Errno::INVAL));
    assert_eq!(
        ioctl(&w, abi::IOC_READER, 0),
        Err(Errno::BADF),
        "reader state of a write-only fd"
    );
    assert_eq!(ioctl(&w, abi::IOC_SEEK, 0), Err(Errno::BADF));
    let beyond = info(&r).head_seq + 5;
    assert_eq!(
        ioctl(&r, abi::IOC_CONSUME, &beyond as *const u64 as usize),
        Err(Errno::INVAL)
    );
    assert_eq!(info(&r).policy, abi::POLICY_OVERWRITE);
    // The channel still works.
    send(&w, b"still fine").unwrap();
    assert_eq!(recv(&r).unwrap(), b"still fine");
}

#[test]
fn channels_are_independent_and_all_openable() {
    require_guest();
    let a = open_path("/dev/memchan", RD).unwrap();
    let b = open_path("/dev/memchan1", RD).unwrap();
    for i in 1..4 {
        let p = format!("/dev/memchan{i}");
        let fd = open_path(&p, OFlags::RDWR).unwrap_or_else(|e| panic!("open {p}: {e}"));
        assert_eq!(info(&fd).index, i);
    }
    let wb = open_path("/dev/memchan1", OFlags::WRONLY).unwrap();
    send(&wb, b"only on 1").unwrap();
    assert_eq!(recv(&b).unwrap(), b"only on 1");
    assert_eq!(
        recv(&a),
        Err(Errno::AGAIN),
        "message leaked to another channel"
    );
    assert!(
        !revents(&a).contains(PollFlags::IN),
        "poll readiness leaked across channels"
    );
}

#[test]
fn read_returns_the_message_length_not_the_buffer_contents() {
    // Original C module bug: read returned strlen() of the user buffer.
    require_guest();
    let w = writer_with(abi::POLICY_OVERWRITE);
    let r = open(RD).unwrap();
    send(&w, b"abc").unwrap();
    let mut buf = [0xffu8; 64];
    assert_eq!(rustix::io::read(&r, &mut buf), Ok(3));
    assert_eq!(&buf[..3], b"abc");
    assert!(
        buf[3..].iter().all(|b| *b == 0xff),
        "read wrote past the message"
    );
}

#[test]
fn full_length_messages_do_not_spill_into_neighbours() {
    // Original C module bug: a full-length write overflowed the buffer by one byte.
    require_guest();
    let w = writer_with(abi::POLICY_OVERWRITE);
    let r = open(RD).unwrap();
    let max = abi::MSG_MAX as usize;
    let a = vec![0xa5u8; max];
    let b = vec![0x5au8; max];
    send(&w, &a).unwrap();
    send(&w, &b).unwrap();
    send(&w, b"tail").unwrap();
    assert_eq!(recv(&r).unwrap(), a);
    assert_eq!(recv(&r).unwrap(), b);
    assert_eq!(recv(&r).unwrap(), b"tail");
}

#[test]
fn read_blocks_again_after_consuming() {
    // Original C module bug: a global "data ready" flag was never reset.
    require_guest();
    let w = writer_with(abi::POLICY_OVERWRITE);
    let r = open(OFlags::RDONLY).unwrap(); // blocking
    send(&w, b"one").unwrap();
    assert_eq!(recv(&r).unwrap(), b"one");
    let (tx, rx) = std::sync::mpsc::channel();
    let r2 = r.try_clone().unwrap();
    std::thread::spawn(move || tx.send(recv(&r2)));
    assert!(
        rx.recv_timeout(std::time::Duration::from_millis(300))
            .is_err(),
        "read did not block"
    );
    send(&w, b"two").unwrap();
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap().unwrap(), b"two");
}

#[test]
fn concurrent_writers_and_readers_lose_and_duplicate_nothing() {
    // Original C module bug: no locking at all.
    require_guest();
    let w = writer_with(abi::POLICY_BLOCK);
    let readers: Vec<_> = (0..4).map(|_| open(OFlags::RDONLY).unwrap()).collect();
    const PER_WRITER: u32 = 300;
    let writers: Vec<_> = (0..4u32)
        .map(|id| {
            std::thread::spawn(move || {
                let fd = open(OFlags::WRONLY).unwrap();
                for i in 0..PER_WRITER {
                    let msg = format!("{id}:{i}:{}", "x".repeat((i % 97) as usize));
                    send(&fd, msg.as_bytes()).unwrap();
                }
            })
        })
        .collect();
    let handles: Vec<_> = readers
        .into_iter()
        .map(|r| {
            std::thread::spawn(move || {
                let mut next = [0u32; 4];
                for _ in 0..4 * PER_WRITER {
                    let m = String::from_utf8(recv(&r).unwrap()).unwrap();
                    let mut parts = m.splitn(3, ':');
                    let id: usize = parts.next().unwrap().parse().unwrap();
                    let i: u32 = parts.next().unwrap().parse().unwrap();
                    assert_eq!(
                        parts.next().unwrap().len(),
                        (i % 97) as usize,
                        "corrupt payload"
                    );
                    assert_eq!(i, next[id], "writer {id}: out of order or lost");
                    next[id] += 1;
                }
                next
            })
        })
        .collect();
    for t in writers {
        t.join().unwrap();
    }
    for h in handles {
        assert_eq!(h.join().unwrap(), [PER_WRITER; 4]);
    }
    set_policy(&w, abi::POLICY_OVERWRITE);
}

#[test]
fn threads_sharing_one_file_each_get_distinct_messages() {
    require_guest();
    let w = writer_with(abi::POLICY_BLOCK);
    // One blocking file, read by four threads at once: every message exactly once in total.
    let r = std::sync::Arc::new(open(OFlags::RDONLY).unwrap());
    let n = 2000u32;
    let taken = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (r, taken) = (r.clone(), taken.clone());
            std::thread::spawn(move || {
                let mut got = Vec::new();
                while taken.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < n {
                    let m = recv(&r).expect("read");
                    got.push(u32::from_le_bytes(m[..4].try_into().unwrap()));
                }
                got
            })
        })
        .collect();
    for i in 0..n {
        send(&w, &i.to_le_bytes()).unwrap();
    }
    let mut all: Vec<u32> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..n).collect::<Vec<_>>(),
        "a message lost or delivered twice"
    );
    set_policy(&w, abi::POLICY_OVERWRITE);
}

#[test]
fn batch_record_mode_returns_every_ready_record_that_fits() {
    require_guest();
    // A channel of its own (parallel tests use the default one), 4 KiB ring, overwrite.
    let ch = TestChannel::new("batchtest", &[("msg_max", "1024"), ("ring_kib", "4")]);
    let path = ch.path.as_str();
    let w = open_path(path, OFlags::WRONLY).unwrap();
    let r = open_path(path, RD).unwrap();
    ioctl(&r, abi::IOC_RECORD_MODE, abi::RECORD_MODE_BATCH as usize).unwrap();
    assert_eq!(ioctl(&r, abi::IOC_RECORD_MODE, 3), Err(Errno::INVAL));
    let parse = |buf: &[u8]| {
        let mut out = Vec::new();
        let mut at = 0;
        while at < buf.len() {
            let h = abi::RecordHeader::parse(&buf[at..]).expect("a whole header");
            let len = h.len;
            let size = abi::record_size(len) as usize;
            assert!(at + size <= buf.len(), "record runs past the read");
            let body = &buf[at + 24..at + 24 + len as usize];
            assert!(
                buf[at + 24 + len as usize..at + size]
                    .iter()
                    .all(|b| *b == 0),
                "padding not zero"
            );
            out.push((h.seq, body.to_vec()));
            at += size;
        }
        out
    };
    let mut buf = vec![0u8; 4096];
    // Nothing ready: EAGAIN, as in the other modes.
    assert_eq!(rustix::io::read(&r, &mut buf), Err(Errno::AGAIN));
    let first = info(&w).head_seq;
    for m in ["a", "bb", "ccc", "dddddddd", "e"] {
        send(&w, m.as_bytes()).unwrap();
    }
    // All five in one read, in order, each padded to 8 bytes.
    let n = rustix::io::read(&r, &mut buf).unwrap();
    let got = parse(&buf[..n]);
    let want: Vec<(u64, Vec<u8>)> = ["a", "bb", "ccc", "dddddddd", "e"]
        .iter()
        .enumerate()
        .map(|(i, m)| (first + i as u64, m.as_bytes().to_vec()))
        .collect();
    assert_eq!(got, want);
    assert_eq!(n, 5 * 32);
    // A buffer with room for two (records are 32 bytes): two, then the rest.
    for m in ["1", "2", "3"] {
        send(&w, m.as_bytes()).unwrap();
    }
    let n = rustix::io::read(&r, &mut buf[..70]).unwrap();
    assert_eq!(parse(&buf[..n]).len(), 2);
    let n = rustix::io::read(&r, &mut buf).unwrap();
    assert_eq!(parse(&buf[..n]), [(first + 7, b"3".to_vec())]);
    // The first record must fit padded: 25 bytes hold header + 1 but not the padding.
    send(&w, b"x").unwrap();
    assert_eq!(rustix::io::read(&r, &mut buf[..25]), Err(Errno::MSGSIZE));
    assert_eq!(rustix::io::read(&r, &mut buf[..32]).unwrap(), 32);
    // A batch stops before an overrun; the next read reports it, then reading goes on.
    let r2 = open_path(path, RD).unwrap();
    ioctl(&r2, abi::IOC_RECORD_MODE, abi::RECORD_MODE_BATCH as usize).unwrap();
    for i in 0..300u32 {
        send(&w, format!("{i:040}").as_bytes()).unwrap();
    }
    assert_eq!(rustix::io::read(&r2, &mut buf), Err(Errno::PIPE));
    let st = reader(&r2);
    let n = rustix::io::read(&r2, &mut buf).unwrap();
    let got = parse(&buf[..n]);
    assert_eq!(
        got.len() as u64,
        300 - st.lost,
        "not every retained record in one batch"
    );
    assert_eq!(got.last().unwrap().1, format!("{:040}", 299).as_bytes());
    assert_eq!(rustix::io::read(&r2, &mut buf), Err(Errno::AGAIN));
}

#[test]
fn send_batch_sends_each_record_as_a_message() {
    require_guest();
    let ch = TestChannel::new(
        "sendbatch",
        &[("msg_max", "100"), ("ring_kib", "4"), ("policy", "block")],
    );
    let path = ch.path.as_str();
    let w = open_path(path, OFlags::WRONLY | OFlags::NONBLOCK).unwrap();
    let r = open_path(path, RD).unwrap();
    let record = |len: u32, flags: u32, payload: &[u8]| {
        let mut v = abi::RecordHeader {
            len,
            flags,
            ..Default::default()
        }
        .to_bytes()
        .to_vec();
        v.extend_from_slice(payload);
        v.resize(abi::record_size(len) as usize, 0);
        v
    };
    let batch = |records: &[u8]| {
        let req = abi::SendBatch {
            data: records.as_ptr() as u64,
            len: records.len() as u64,
        };
        ioctl(&w, abi::IOC_SEND_BATCH, &req as *const _ as usize)
    };
    // Three records (one empty, which stores nothing): two messages, all bytes taken.
    let mut b = record(3, 0, b"one");
    b.extend(record(0, 0, b""));
    b.extend(record(5, 0, b"three"));
    assert_eq!(batch(&b), Ok(b.len() as i32));
    assert_eq!(recv(&r).unwrap(), b"one");
    assert_eq!(recv(&r).unwrap(), b"three");
    assert_eq!(recv(&r), Err(Errno::AGAIN));
    // A bad later record ends the batch after the good ones; a bad first one is an error.
    let good = record(2, 0, b"ok");
    for bad in [
        record(1, 1, b"f"),        // flags
        record(101, 0, &[7; 101]), // too long
        record(9, 0, b"truncated")[..20].to_vec(),
    ] {
        let mut b = good.clone();
        b.extend_from_slice(&bad);
        assert_eq!(batch(&b), Ok(good.len() as i32));
        assert_eq!(recv(&r).unwrap(), b"ok");
        let want = if bad.len() > 24 && bad[16] == 101 {
            Errno::MSGSIZE
        } else {
            Errno::INVAL
        };
        assert_eq!(batch(&bad), Err(want), "{bad:?}");
    }
    assert_eq!(recv(&r), Err(Errno::AGAIN), "a refused record was stored");
    // Bad pointers: EFAULT, nothing stored.
    assert_eq!(
        ioctl(&w, abi::IOC_SEND_BATCH, 8),
        Err(Errno::FAULT),
        "bad argument pointer"
    );
    let req = abi::SendBatch { data: 8, len: 64 };
    assert_eq!(
        ioctl(&w, abi::IOC_SEND_BATCH, &req as *const _ as usize),
        Err(Errno::FAULT)
    );
    // Only writers may send.
    let req = abi::SendBatch {
        data: good.as_ptr() as u64,
        len: good.len() as u64,
    };
    assert_eq!(
        ioctl(&r, abi::IOC_SEND_BATCH, &req as *const _ as usize),
        Err(Errno::BADF)
    );
    // Block policy, non-blocking writer: the batch stops where the ring is full (4 KiB holds
    // 32 records of 104 bytes), then EAGAIN.
    let mut big = Vec::new();
    for i in 0..40u8 {
        big.extend(record(100, 0, &[i; 100]));
    }
    let n = batch(&big).unwrap() as usize;
    assert!(n > 0 && n < big.len() && n.is_multiple_of(128), "{n}");
    assert_eq!(batch(&big[n..]), Err(Errno::AGAIN));
    for i in 0..(n / 128) as u8 {
        assert_eq!(recv(&r).unwrap(), [i; 100]);
    }
    assert_eq!(stats(&w).blocked_writes, 0);
}

#[test]
fn every_sleeping_reader_wakes_for_every_message_even_when_sleepers_are_killed() {
    // Sleeping readers are woken in a chain (each woken reader wakes the next): a broken
    // chain would leave readers asleep with a message waiting. Here eight readers sleep for
    // each of 40 messages, and every fourth message races with a sleeping `cat` being killed
    // (a reader whose sleep a signal ends must not take the chain down with it).
    require_guest();
    let ch = TestChannel::new("wakechain", &[]);
    let path = ch.path.clone();
    let w = open_path(&path, OFlags::WRONLY).unwrap();
    const READERS: usize = 8;
    const ROUNDS: u32 = 40;
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    for id in 0..READERS {
        let r = open_path(&path, OFlags::RDONLY).unwrap(); // blocking
        let done = done_tx.clone();
        std::thread::spawn(move || {
            for i in 0..ROUNDS {
                let m = recv(&r).expect("read");
                assert_eq!(m, i.to_le_bytes(), "reader {id}: wrong message");
            }
            done.send(id).unwrap();
        });
    }
    for i in 0..ROUNDS {
        let victim = (i % 4 == 0).then(|| {
            let child = spawn_sh(&format!("exec cat {path} > /dev/null"));
            wait_blocked_on(child.id(), &path);
            child
        });
        // Let the readers fall asleep again (the message must reach them either way).
        std::thread::sleep(std::time::Duration::from_millis(20));
        if let Some(mut child) = victim {
            child.kill().unwrap();
            send(&w, &i.to_le_bytes()).unwrap();
            child.wait().unwrap();
        } else {
            send(&w, &i.to_le_bytes()).unwrap();
        }
    }
    let mut finished: Vec<usize> = (0..READERS)
        .map(|_| {
            done_rx
                .recv_timeout(PATIENCE)
                .expect("a reader was left asleep with messages waiting")
        })
        .collect();
    finished.sort_unstable();
    assert_eq!(finished, (0..READERS).collect::<Vec<_>>());
}

/// Each record mode, with the offset of the payload in what a read returns.
const MODES: [(u32, usize); 3] = [
    (abi::RECORD_MODE_OFF, 0),
    (abi::RECORD_MODE_ON, abi::RECORD_HEADER_SIZE as usize),
    (abi::RECORD_MODE_BATCH, abi::RECORD_HEADER_SIZE as usize),
];

/// A fresh private anonymous mapping of `len` bytes (no page of it exists yet), for raw
/// reads; the caller unmaps it.
fn anon_map(len: usize) -> *mut libc::c_void {
    // SAFETY: a new mapping that overlaps nothing; the callers use it only through raw
    // pointers handed to the kernel, and unmap it.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(map, libc::MAP_FAILED);
    map
}

#[test]
fn a_read_into_a_bad_buffer_fails_with_efault_and_leaves_the_message() {
    require_guest();
    use std::os::fd::AsRawFd;
    let w = writer_with(abi::POLICY_OVERWRITE);
    let r = open(RD).unwrap();
    // Two pages, the second one inaccessible: a buffer can start in the first and run into it.
    let page = 4096usize;
    let map = anon_map(2 * page);
    // SAFETY: the second page of the mapping made above.
    assert_eq!(
        unsafe { libc::mprotect(map.cast::<u8>().add(page).cast(), page, libc::PROT_NONE) },
        0
    );
    let read_at = |addr: *mut u8, len: usize| {
        // SAFETY: the kernel checks the buffer; nothing in this process relies on its contents.
        let n = unsafe { libc::read(r.as_raw_fd(), addr.cast(), len) };
        if n < 0 {
            Err(std::io::Error::last_os_error().raw_os_error())
        } else {
            Ok(n as usize)
        }
    };
    let msg: Vec<u8> = (0..200u8).collect();
    for (mode, offset) in MODES {
        ioctl(&r, abi::IOC_RECORD_MODE, mode as usize).unwrap();
        send(&w, &msg).unwrap();
        // A buffer nowhere mapped, and one that runs into the inaccessible page.
        assert_eq!(
            read_at(8 as *mut u8, 4096),
            Err(Some(libc::EFAULT)),
            "mode {mode}"
        );
        // SAFETY: 100 bytes before the end of the accessible page.
        let straddling = unsafe { map.cast::<u8>().add(page - 100) };
        assert_eq!(
            read_at(straddling, 1000),
            Err(Some(libc::EFAULT)),
            "mode {mode}"
        );
        // The message is still there, whole, and only once.
        let mut buf = vec![0u8; 4096];
        let n = read_at(buf.as_mut_ptr(), buf.len()).unwrap();
        assert_eq!(&buf[offset..offset + msg.len()], &msg[..], "mode {mode}");
        assert!(n >= offset + msg.len(), "mode {mode}");
        assert_eq!(
            read_at(buf.as_mut_ptr(), buf.len()),
            Err(Some(libc::EAGAIN)),
            "mode {mode}"
        );
    }
    // SAFETY: unmaps the mapping made above; nothing refers to it any more.
    unsafe { libc::munmap(map, 2 * page) };
    ioctl(&r, abi::IOC_RECORD_MODE, abi::RECORD_MODE_OFF as usize).unwrap();
}

#[test]
fn reads_into_untouched_and_scattered_buffers_get_the_whole_message() {
    // A buffer whose pages are not there yet must be faulted in during the copy, and a
    // readv() vector filled piece by piece: every byte arrives, in every record mode, for
    // messages within one page and across pages.
    require_guest();
    use std::os::fd::AsRawFd;
    let w = writer_with(abi::POLICY_OVERWRITE);
    let r = open(RD).unwrap();
    let len = 3 * 4096;
    for size in [1usize, 64, 1000, 2100, 4000] {
        let msg: Vec<u8> = (0..size).map(|i| (i * 7 + size) as u8).collect();
        for (mode, offset) in MODES {
            ioctl(&r, abi::IOC_RECORD_MODE, mode as usize).unwrap();
            // A fresh anonymous mapping: none of its pages exists before the read.
            send(&w, &msg).unwrap();
            let map = anon_map(len);
            // SAFETY: the mapping is `len` bytes; the kernel writes it.
            let n = unsafe { libc::read(r.as_raw_fd(), map, len) };
            assert!(
                n >= (offset + size) as isize,
                "size {size} mode {mode}: {n}"
            );
            // SAFETY: the read above filled at least `offset + size` bytes of it.
            let got = unsafe { std::slice::from_raw_parts(map.cast::<u8>().add(offset), size) };
            assert_eq!(got, &msg[..], "untouched buffer, size {size} mode {mode}");
            // SAFETY: unmaps the mapping made above; `got` is not used after this.
            unsafe { libc::munmap(map, len) };

            // A vector of three pieces, the message split across them.
            send(&w, &msg).unwrap();
            let mut bufs = [vec![0u8; 7], vec![0u8; 2000], vec![0u8; 6000]];
            let mut iov: Vec<libc::iovec> = bufs
                .iter_mut()
                .map(|b| libc::iovec {
                    iov_base: b.as_mut_ptr().cast(),
                    iov_len: b.len(),
                })
                .collect();
            // SAFETY: every iovec points into a live buffer of its length.
            let n = unsafe { libc::readv(r.as_raw_fd(), iov.as_mut_ptr(), iov.len() as i32) };
            assert!(
                n >= (offset + size) as isize,
                "size {size} mode {mode}: {n}"
            );
            let joined: Vec<u8> = bufs.concat();
            assert_eq!(
                &joined[offset..offset + size],
                &msg[..],
                "readv, size {size} mode {mode}"
            );
            assert_eq!(
                recv(&r),
                Err(Errno::AGAIN),
                "size {size} mode {mode}: more than one message"
            );
        }
    }
    ioctl(&r, abi::IOC_RECORD_MODE, abi::RECORD_MODE_OFF as usize).unwrap();
}
