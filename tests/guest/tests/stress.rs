//! Stress: several writers x several readers per channel, several channels at once, with
//! checksummed, sequence-stamped payloads of random sizes, read through `read()`, epoll and
//! the zero-copy mapping.
//!
//! - `block`: every reader receives every message exactly once, in each writer's order, intact.
//! - `overwrite`: for every reader, received + reported lost == written, exactly.
//!
//! `MEMCHAN_STRESS_SECS` sets how long the writers run (default: a CI-sized few seconds);
//! `cargo xtask stress --secs N` runs a soak. The report (messages moved) is printed.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use memchan_abi as abi;
use memchan_guest_tests::*;
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::fs::OFlags;

const WRITERS: usize = 4;
const READERS: usize = 8;
/// Payload header: writer id, writer sequence, crc32 of the random body.
const HDR: usize = 12;

fn secs() -> u64 {
    std::env::var("MEMCHAN_STRESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4)
}

/// A message from writer `id`, number `n`, with a random body of up to `max` bytes.
fn message(id: u32, n: u32, rng: &mut fastrand::Rng, max: usize) -> Vec<u8> {
    let len = rng.usize(0..=max - HDR);
    let body: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
    let mut m = Vec::with_capacity(HDR + len);
    m.extend_from_slice(&id.to_ne_bytes());
    m.extend_from_slice(&n.to_ne_bytes());
    m.extend_from_slice(&crc32fast::hash(&body).to_ne_bytes());
    m.extend_from_slice(&body);
    m
}

/// Checks a message and returns (writer id, writer sequence).
fn check(m: &[u8]) -> (usize, u32) {
    assert!(m.len() >= HDR, "short message ({} bytes)", m.len());
    let id = u32::from_ne_bytes(m[0..4].try_into().unwrap()) as usize;
    let n = u32::from_ne_bytes(m[4..8].try_into().unwrap());
    let crc = u32::from_ne_bytes(m[8..12].try_into().unwrap());
    assert!(id < WRITERS, "bad writer id {id}");
    assert_eq!(
        crc32fast::hash(&m[HDR..]),
        crc,
        "corrupt payload from writer {id} #{n}"
    );
    (id, n)
}

/// How a reader takes messages.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Read,
    Epoll,
    Mmap,
}

/// What a reader saw.
#[derive(Debug, Default)]
struct Seen {
    received: u64,
    lost: u64,
    per_writer: [u32; WRITERS],
}

/// Shared stop condition: writers are done and the final head sequence is known.
struct Stop {
    done: AtomicBool,
    final_seq: AtomicU64,
}

impl Stop {
    fn reached(&self, fd: &OwnedFd) -> bool {
        self.done.load(Ordering::Acquire)
            && reader(fd).cursor_seq >= self.final_seq.load(Ordering::Acquire)
    }
}

/// Records one message in `seen`, checking order (gaps only after a reported loss).
fn note(seen: &mut Seen, m: &[u8], lossless: bool) {
    let (id, n) = check(m);
    if lossless {
        assert_eq!(
            n, seen.per_writer[id],
            "writer {id}: message lost, duplicated or reordered"
        );
    } else {
        assert!(
            n >= seen.per_writer[id],
            "writer {id}: reordered or duplicated ({n})"
        );
    }
    seen.per_writer[id] = n + 1;
    seen.received += 1;
}

fn wait_in(fd: &OwnedFd) {
    let mut fds = [PollFd::new(fd, PollFlags::IN | PollFlags::ERR)];
    let t = Timespec {
        tv_sec: 0,
        tv_nsec: 50_000_000,
    };
    let _ = rustix::event::poll(&mut fds, Some(&t));
}

fn run_reader(
    path: String,
    kind: Kind,
    lossless: bool,
    slow: bool,
    stop: Arc<Stop>,
    ready: std::sync::mpsc::Sender<()>,
) -> Seen {
    let fd = open_path(&path, OFlags::RDONLY | OFlags::NONBLOCK).expect("open reader");
    let mut seen = Seen::default();
    let mut rng = fastrand::Rng::with_seed(kind as u64 + 17);
    let ep = rustix::event::epoll::create(rustix::event::epoll::CreateFlags::CLOEXEC).unwrap();
    rustix::event::epoll::add(
        &ep,
        &fd,
        rustix::event::epoll::EventData::new_u64(1),
        rustix::event::epoll::EventFlags::IN,
    )
    .unwrap();
    let map = matches!(kind, Kind::Mmap).then(|| RingMap::ro(&fd));
    let mut pos = reader(&fd).cursor_pos;
    let mut seq = reader(&fd).cursor_seq;
    ready.send(()).unwrap();
    loop {
        if slow && rng.u8(..) < 8 {
            std::thread::sleep(Duration::from_millis(5));
        }
        match (&map, kind) {
            (Some(m), _) => {
                let head = m.head_pos();
                if pos == head {
                    ioctl(&fd, abi::IOC_CONSUME, &seq as *const u64 as usize).unwrap();
                    if stop.reached(&fd) {
                        break;
                    }
                    wait_in(&fd);
                    continue;
                }
                match m.record(pos) {
                    Some((h, p)) => {
                        assert_eq!(h.seq, seq, "mmap record out of sequence");
                        note(&mut seen, &p, lossless);
                        pos += abi::record_size(h.len);
                        seq += 1;
                        if seq.is_multiple_of(16) || pos == m.head_pos() {
                            ioctl(&fd, abi::IOC_CONSUME, &seq as *const u64 as usize).unwrap();
                        }
                    }
                    None => {
                        assert!(!lossless, "mmap reader lapped on a block channel");
                        // Lapped: resynchronise at the oldest record (atomically, through the
                        // kernel's cursor) and count what was skipped ourselves.
                        ioctl(&fd, abi::IOC_SEEK, abi::SEEK_OLDEST as usize).unwrap();
                        let st = reader(&fd);
                        assert!(st.cursor_seq > seq, "lapped but the tail did not pass us");
                        seen.lost += st.cursor_seq - seq;
                        pos = st.cursor_pos;
                        seq = st.cursor_seq;
                    }
                }
            }
            (None, _) => match recv(&fd) {
                Ok(m) => note(&mut seen, &m, lossless),
                Err(Errno::AGAIN) => {
                    if stop.reached(&fd) {
                        break;
                    }
                    if matches!(kind, Kind::Epoll) {
                        let mut ev = Vec::with_capacity(1);
                        let t = Timespec {
                            tv_sec: 0,
                            tv_nsec: 50_000_000,
                        };
                        rustix::event::epoll::wait(
                            &ep,
                            rustix::buffer::spare_capacity(&mut ev),
                            Some(&t),
                        )
                        .unwrap();
                    } else {
                        wait_in(&fd);
                    }
                }
                Err(Errno::PIPE) => assert!(!lossless, "EPIPE on a block channel"),
                Err(e) => panic!("read: {e}"),
            },
        }
    }
    if !matches!(kind, Kind::Mmap) {
        seen.lost = reader(&fd).lost;
    }
    seen
}

/// Runs WRITERS x READERS on channel `path` with `policy` for `secs`; returns messages written
/// and delivered.
fn scenario(path: &str, policy: u32, slow_readers: bool, secs: u64, msg_max: usize) -> (u64, u64) {
    let ctl = open_path(path, OFlags::WRONLY).unwrap();
    set_policy(&ctl, policy);
    let lossless = policy == abi::POLICY_BLOCK;
    let stop = Arc::new(Stop {
        done: AtomicBool::new(false),
        final_seq: AtomicU64::new(0),
    });
    let kinds = [
        Kind::Read,
        Kind::Read,
        Kind::Read,
        Kind::Read,
        Kind::Epoll,
        Kind::Epoll,
        Kind::Mmap,
        Kind::Mmap,
    ];
    let (rtx, rrx) = std::sync::mpsc::channel();
    let readers: Vec<_> = kinds
        .iter()
        .take(READERS)
        .enumerate()
        .map(|(i, &kind)| {
            let (p, s, tx) = (path.to_string(), stop.clone(), rtx.clone());
            std::thread::spawn(move || {
                run_reader(p, kind, lossless, slow_readers && i % 2 == 0, s, tx)
            })
        })
        .collect();
    for _ in 0..READERS {
        rrx.recv().unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(secs);
    let writers: Vec<_> = (0..WRITERS as u32)
        .map(|id| {
            let p = path.to_string();
            std::thread::spawn(move || {
                let fd = open_path(&p, OFlags::WRONLY).unwrap();
                let mut rng = fastrand::Rng::with_seed(u64::from(id));
                let mut n = 0u32;
                while Instant::now() < deadline {
                    send(&fd, &message(id, n, &mut rng, msg_max)).expect("write");
                    n += 1;
                }
                n
            })
        })
        .collect();
    let written: Vec<u32> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    let total: u64 = written.iter().map(|&n| u64::from(n)).sum();
    stop.final_seq.store(info(&ctl).head_seq, Ordering::Release);
    stop.done.store(true, Ordering::Release);
    let mut delivered = 0;
    for (i, r) in readers.into_iter().enumerate() {
        let seen = r.join().unwrap();
        delivered += seen.received;
        if lossless {
            assert_eq!(
                seen.per_writer.map(u64::from).iter().sum::<u64>(),
                total,
                "reader {i} ({:?})",
                kinds[i]
            );
            assert_eq!(seen.lost, 0);
            for (w, &n) in written.iter().enumerate() {
                assert_eq!(seen.per_writer[w], n, "reader {i}: writer {w}");
            }
        } else {
            assert_eq!(
                seen.received + seen.lost,
                total,
                "reader {i} ({:?}): received {} + lost {} != written {total}",
                kinds[i],
                seen.received,
                seen.lost
            );
        }
    }
    set_policy(&ctl, abi::POLICY_OVERWRITE);
    (total, delivered)
}

#[test]
fn stress_all_channels_block_and_overwrite_at_once() {
    require_guest();
    let secs = secs();
    let max = abi::MSG_MAX as usize;
    let start = Instant::now();
    let runs = [
        ("/dev/memchan", abi::POLICY_BLOCK, false, max),
        ("/dev/memchan1", abi::POLICY_OVERWRITE, true, max),
        ("/dev/memchan2", abi::POLICY_BLOCK, false, 64),
        ("/dev/memchan3", abi::POLICY_OVERWRITE, true, 256),
    ];
    let handles: Vec<_> = runs
        .iter()
        .map(|&(p, pol, slow, max)| {
            std::thread::spawn(move || (p, pol, scenario(p, pol, slow, secs, max)))
        })
        .collect();
    let mut total = (0, 0);
    for h in handles {
        let (p, pol, (w, d)) = h.join().unwrap();
        let name = if pol == abi::POLICY_BLOCK {
            "block"
        } else {
            "overwrite"
        };
        println!("stress {p} ({name}): {w} messages written by {WRITERS} writers, {d} delivered to {READERS} readers");
        total.0 += w;
        total.1 += d;
    }
    println!(
        "stress total: {} messages written, {} delivered in {:.1?}",
        total.0,
        total.1,
        start.elapsed()
    );
    assert!(total.0 > 0 && total.1 > 0);
}
