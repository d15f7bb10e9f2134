//! The `memchan` library against the real module: round trip, broadcast, timeouts, overruns,
//! the zero-copy receiver under pressure, async receive, and every error a program can meet.

use std::io::IoSlice;
use std::time::{Duration, Instant};

use memchan::{channel_path, Error, MappedReceiver, Policy, Receiver, Seek, Sender};
use memchan_guest_tests::{require_guest, TestChannel, PATIENCE};

/// Sets a channel's policy for the test and restores the module default (overwrite) after.
struct PolicyGuard(Sender);

impl PolicyGuard {
    fn set(index: u32, policy: Policy) -> Self {
        let tx = Sender::open_index(index).expect("open sender");
        tx.set_policy(policy).expect("set policy");
        Self(tx)
    }
}

impl Drop for PolicyGuard {
    fn drop(&mut self) {
        let _ = self.0.set_policy(Policy::Overwrite);
    }
}

fn monotonic_now() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

#[test]
fn round_trip_with_sequence_numbers_and_timestamps() {
    require_guest();
    let mut rx = Receiver::open_index(1).unwrap();
    let tx = Sender::open_index(1).unwrap();
    let before = monotonic_now();
    tx.send(b"one").unwrap();
    tx.send_vectored(&[IoSlice::new(b"tw"), IoSlice::new(b"o")])
        .unwrap();
    let after = monotonic_now();
    let a = rx.recv().unwrap().to_owned();
    let b = rx.recv().unwrap().to_owned();
    assert_eq!(a.payload, b"one");
    assert_eq!(b.payload, b"two", "a vectored send is one message");
    assert_eq!(b.seq, a.seq + 1);
    assert!(a.timestamp >= before && b.timestamp <= after && a.timestamp <= b.timestamp);
    assert!(matches!(rx.try_recv(), Err(Error::WouldBlock)));
    let st = rx.state().unwrap();
    assert_eq!((st.lag, st.lost, st.next_seq), (0, 0, b.seq + 1));
}

#[test]
fn every_receiver_gets_every_message_in_order() {
    require_guest();
    let _p = PolicyGuard::set(2, Policy::Block);
    let mut r1 = Receiver::open_index(2).unwrap();
    let mut r2 = Receiver::open_index(2).unwrap();
    let mut m = MappedReceiver::open_index(2).unwrap();
    assert!(m.is_zero_copy(), "block policy: records are read in place");
    let tx = Sender::open_index(2).unwrap();
    for i in 0..200u32 {
        tx.send(&i.to_le_bytes()).unwrap();
    }
    let mut seqs = Vec::new();
    for i in 0..200u32 {
        let a = r1.recv().unwrap();
        assert_eq!(a.payload, i.to_le_bytes());
        seqs.push(a.seq);
        assert_eq!(r2.recv().unwrap().payload, i.to_le_bytes());
        let rec = m.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(rec.payload(), i.to_le_bytes());
        assert_eq!(rec.seq, *seqs.last().unwrap());
        rec.release().unwrap();
    }
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1));
}

#[test]
fn iterator_and_seek_oldest_replay() {
    require_guest();
    let tx = Sender::open_index(1).unwrap();
    let mut rx = Receiver::open_index(1).unwrap();
    tx.send(b"replay-a").unwrap();
    tx.send(b"replay-b").unwrap();
    let got: Vec<_> = rx.iter().take(2).map(|m| m.unwrap().payload).collect();
    assert_eq!(got, [b"replay-a".to_vec(), b"replay-b".to_vec()]);
    rx.seek(Seek::Oldest).unwrap();
    let info = rx.info().unwrap();
    assert_eq!(rx.state().unwrap().next_seq, info.oldest_seq);
    assert_eq!(rx.state().unwrap().lag, info.messages_in_ring());
    rx.seek(Seek::Newest).unwrap();
    assert!(matches!(rx.try_recv(), Err(Error::WouldBlock)));
}

#[test]
fn timeouts_wait_as_long_as_asked() {
    require_guest();
    let mut rx = Receiver::open_index(3).unwrap();
    let start = Instant::now();
    assert!(matches!(
        rx.recv_timeout(Duration::from_millis(300)),
        Err(Error::TimedOut)
    ));
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(300),
        "returned after {waited:?}"
    );
    let mut m = MappedReceiver::open_index(3).unwrap();
    assert!(matches!(
        m.recv_timeout(Duration::from_millis(100)),
        Err(Error::TimedOut)
    ));
    // A message arriving during the wait ends it.
    let t = std::thread::spawn(|| {
        std::thread::sleep(Duration::from_millis(200));
        Sender::open_index(3).unwrap().send(b"late").unwrap();
    });
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10)).unwrap().payload,
        b"late"
    );
    t.join().unwrap();
}

#[test]
fn overrun_reports_the_exact_number_lost() {
    require_guest();
    let _p = PolicyGuard::set(3, Policy::Overwrite);
    let mut rx = Receiver::open_index(3).unwrap();
    let tx = Sender::open_index(3).unwrap();
    let ring = tx.info().unwrap().ring_bytes;
    let msg = [7u8; 1000];
    let written = 3 * ring / 1000;
    for _ in 0..written {
        tx.send(&msg).unwrap();
    }
    let lost = match rx.try_recv() {
        Err(Error::Overrun { lost }) => lost,
        other => panic!("expected an overrun, got {other:?}"),
    };
    let mut received = 0;
    while rx.try_recv().is_ok() {
        received += 1;
    }
    assert_eq!(received + lost, written, "received + lost == written");
    let st = rx.state().unwrap();
    assert_eq!(st.lost, lost);
    assert!(!st.overrun_pending);
}

/// A payload that proves itself: index, length, then bytes derived from both.
fn stamped(i: u64, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len.max(16));
    v.extend_from_slice(&i.to_le_bytes());
    v.extend_from_slice(&(len as u64).to_le_bytes());
    v.extend((16..len).map(|k| (i as usize * 31 + k) as u8));
    v
}

fn check_stamped(p: &[u8]) -> u64 {
    assert!(p.len() >= 16, "short payload");
    let i = u64::from_le_bytes(p[..8].try_into().unwrap());
    let len = u64::from_le_bytes(p[8..16].try_into().unwrap());
    assert_eq!(len as usize, p.len(), "torn record: length");
    assert_eq!(p, stamped(i, p.len()), "torn record: bytes");
    i
}

#[test]
fn zero_copy_receiver_never_returns_a_torn_or_stale_record_under_overwrite() {
    require_guest();
    let _p = PolicyGuard::set(2, Policy::Overwrite);
    let mut m = MappedReceiver::open_index(2).unwrap();
    assert!(!m.is_zero_copy(), "overwrite policy: validated copies");
    let writer = std::thread::spawn(|| {
        let tx = Sender::open_index(2).unwrap();
        let mut n = 0u64;
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            let len = 16 + fastrand::usize(..2000);
            tx.send(&stamped(n, len)).unwrap();
            n += 1;
        }
        n
    });
    let (mut received, mut lost, mut overruns) = (0u64, 0u64, 0u64);
    let mut next = 0u64;
    let mut slow = 0u32;
    loop {
        match m.recv_timeout(Duration::from_millis(500)) {
            Ok(rec) => {
                let i = check_stamped(rec.payload());
                assert_eq!(i, next, "stale or reordered record");
                next = i + 1;
                received += 1;
                rec.release().unwrap();
                // Fall behind now and then, to be lapped.
                slow += 1;
                if slow.is_multiple_of(64) {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            Err(Error::Overrun { lost: l }) => {
                lost += l;
                next += l;
                overruns += 1;
            }
            Err(Error::TimedOut) if writer.is_finished() => break,
            Err(Error::TimedOut) => {}
            Err(e) => panic!("{e}"),
        }
    }
    let written = writer.join().unwrap();
    println!("zero-copy under overwrite: written {written}, received {received}, lost {lost} in {overruns} overruns");
    assert!(
        overruns > 0,
        "the reader was never lapped: the test proved nothing"
    );
    assert_eq!(received + lost, written, "received + lost == written");
}

#[test]
fn zero_copy_receiver_holds_writers_back_until_it_releases_under_block() {
    require_guest();
    let _p = PolicyGuard::set(1, Policy::Block);
    let mut m = MappedReceiver::open_index(1).unwrap();
    let tx = Sender::open_nonblocking(channel_path(1)).unwrap();
    let mut sent = 0u64;
    loop {
        match tx.send(&[1u8; 512]) {
            Ok(()) => sent += 1,
            Err(Error::WouldBlock) => break,
            Err(e) => panic!("{e}"),
        }
        assert!(sent < 10_000, "the writer was never held back");
    }
    // Everything sent is still there, read in place; releasing gives room back.
    for _ in 0..sent {
        let rec = m.try_recv().unwrap().expect("a record");
        assert_eq!(rec.payload(), [1u8; 512]);
    }
    assert!(m.try_recv().unwrap().is_none());
    let _ = m.recv_timeout(Duration::from_millis(1)); // releases to the kernel before waiting
    tx.send(b"room again").unwrap();
}

#[test]
fn async_receivers_on_several_channels_in_one_select() {
    require_guest();
    use memchan::tokio::AsyncReceiver;
    use tokio_stream::StreamExt;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut a = AsyncReceiver::open(channel_path(1)).unwrap();
        let mut b = AsyncReceiver::open(channel_path(2)).unwrap();
        let sender = tokio::task::spawn_blocking(|| {
            std::thread::sleep(Duration::from_millis(100));
            Sender::open_index(2).unwrap().send(b"on two").unwrap();
            std::thread::sleep(Duration::from_millis(100));
            Sender::open_index(1).unwrap().send(b"on one").unwrap();
        });
        let mut got = Vec::new();
        while got.len() < 2 {
            tokio::select! {
                m = a.recv() => got.push((1, m.unwrap().payload.to_vec())),
                m = b.recv() => got.push((2, m.unwrap().payload.to_vec())),
                () = tokio::time::sleep(Duration::from_secs(10)) => panic!("nothing arrived"),
            }
        }
        assert_eq!(got, [(2, b"on two".to_vec()), (1, b"on one".to_vec())]);
        sender.await.unwrap();
        // The same receiver as a Stream.
        Sender::open_index(1).unwrap().send(b"streamed").unwrap();
        let m = tokio::time::timeout(Duration::from_secs(10), a.next())
            .await
            .expect("stream item")
            .expect("stream open")
            .unwrap();
        assert_eq!(m.payload, b"streamed");
    });
    // Outside a runtime: an error, not a panic.
    assert!(AsyncReceiver::open(channel_path(1)).is_err());
}

#[test]
fn errors_say_what_happened() {
    require_guest();
    let missing = Receiver::open("/dev/memchan99").unwrap_err();
    assert!(matches!(missing, Error::DeviceMissing { .. }));
    assert!(missing.to_string().contains("module loaded"));
    assert!(matches!(
        Receiver::open("/dev/null").unwrap_err(),
        Error::NotAChannel { .. }
    ));
    assert!(matches!(
        Sender::open("/dev/null/x").unwrap_err(),
        Error::Os { .. }
    ));
    let tx = Sender::open_index(1).unwrap();
    let max = tx.max_message();
    match tx.send(&vec![0; max + 1]) {
        Err(Error::MessageTooLarge { len, max: m }) => assert_eq!((len, m), (max + 1, max)),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        Error::MessageTooLarge { len: 1, max: 0 }.errno(),
        Some(rustix::io::Errno::MSGSIZE)
    );
    // WouldBlock, TimedOut and Overrun: see the tests above. PermissionDenied: see cli.rs.
}

#[test]
fn receivers_fetch_in_batches_and_count_what_they_hold() {
    require_guest();
    let opts = memchan::named::ChannelOptions {
        ring_kib: Some(64),
        policy: Some(memchan::Policy::Block),
        ..Default::default()
    };
    let _ = memchan::named::destroy("libbatch");
    let path = memchan::named::create("libbatch", &opts).unwrap();
    struct Rm;
    impl Drop for Rm {
        fn drop(&mut self) {
            let _ = memchan::named::destroy("libbatch");
        }
    }
    let _rm = Rm;
    assert_eq!(
        memchan::named::create("libbatch", &opts)
            .unwrap_err()
            .errno(),
        Some(rustix::io::Errno::EXIST)
    );
    let tx = memchan::Sender::open(&path).unwrap();
    let mut rx = memchan::Receiver::open(&path).unwrap();
    for i in 0..100u32 {
        tx.send(&i.to_ne_bytes()).unwrap();
    }
    // The first receive fetches all 100; the kernel then holds none for this receiver.
    let m = rx.recv().unwrap();
    assert_eq!(m.payload, 0u32.to_ne_bytes());
    let first = m.seq;
    let st = rx.state().unwrap();
    assert_eq!((st.lag, st.next_seq), (99, first + 1));
    assert_eq!(memchan::query(&path).unwrap().0.next_seq, first + 100);
    for i in 1..100u32 {
        let m = rx.try_recv().unwrap();
        assert_eq!(
            (m.seq, m.payload),
            (first + u64::from(i), &i.to_ne_bytes()[..])
        );
    }
    assert!(matches!(rx.try_recv(), Err(memchan::Error::WouldBlock)));
    assert_eq!(rx.state().unwrap().lag, 0);
    // Seeking drops what was fetched: replay starts at the oldest record again.
    tx.send(b"x").unwrap();
    rx.recv_timeout(Duration::from_secs(5)).unwrap();
    rx.seek(memchan::Seek::Oldest).unwrap();
    assert_eq!(rx.recv().unwrap().seq, first);
}

#[test]
fn send_batch_sends_many_messages_in_few_calls() {
    require_guest();
    let _ = memchan::named::destroy("libsendbatch");
    let opts = memchan::named::ChannelOptions {
        ring_kib: Some(1024),
        policy: Some(memchan::Policy::Block),
        ..Default::default()
    };
    let path = memchan::named::create("libsendbatch", &opts).unwrap();
    struct Rm;
    impl Drop for Rm {
        fn drop(&mut self) {
            let _ = memchan::named::destroy("libsendbatch");
        }
    }
    let _rm = Rm;
    let mut tx = memchan::Sender::open(&path).unwrap();
    let mut rx = memchan::Receiver::open(&path).unwrap();
    // 3000 messages of 1..=100 bytes: more than one call's worth (64 KiB of records).
    let msgs: Vec<Vec<u8>> = (0..3000u32)
        .map(|i| vec![(i % 251) as u8; 1 + (i % 100) as usize])
        .collect();
    let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
    assert_eq!(tx.send_batch(&refs).unwrap(), 3000);
    let first = rx.recv().unwrap().seq;
    for m in &msgs[1..] {
        let got = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(got.payload, m.as_slice());
    }
    assert_eq!(rx.state().unwrap().next_seq, first + 3000);
    // One message over the limit: nothing is sent.
    let big = vec![0u8; 5000];
    let bad: [&[u8]; 2] = [b"fine", &big];
    assert!(matches!(
        tx.send_batch(&bad),
        Err(Error::MessageTooLarge { len: 5000, .. })
    ));
    assert!(matches!(rx.try_recv(), Err(Error::WouldBlock)));
}

#[test]
fn a_removed_channel_ends_receiving_with_a_clear_error() {
    require_guest();
    let ch = TestChannel::new("removed", &[]);
    let mut rx = Receiver::open(&ch.path).unwrap();
    Sender::open(&ch.path).unwrap().send(b"last words").unwrap();
    drop(ch);
    // What it held is still read, then the end of file says the channel is gone (it used to
    // be reported as a corrupt record).
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap().payload, b"last words");
    match rx.recv_timeout(PATIENCE) {
        Err(Error::Removed { path }) => assert!(path.ends_with("memchan-removed")),
        other => panic!("expected Removed, got {other:?}"),
    }
}
