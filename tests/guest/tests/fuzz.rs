//! A seeded, reproducible syscall fuzzer against the device.
//!
//! Random sequences of open (all flag combinations), read/write (sizes 0 to huge; valid, null,
//! kernel, unaligned and partially unmapped buffers), ioctls (every memchan number, mangled
//! ones, random ones; random arguments), mmap/mprotect/munmap/mremap, poll/epoll, fdinfo,
//! dup/close, and fork/threads sharing descriptors. The kernel must not report anything (the
//! log scanner checks), the fuzzer must not crash, and every channel must still work after.
//!
//! `MEMCHAN_FUZZ_SEED` replays a run, `MEMCHAN_FUZZ_OPS` sets its length; the seed is printed
//! first, so a failing run can always be replayed.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use memchan_abi as abi;
use memchan_guest_tests::*;
use rustix::fs::OFlags;

/// The channels of a default load. (No path that does not exist: `O_CREAT` would make it a
/// regular file in /dev, whose mappings raise SIGBUS when touched.)
const PATHS: [&str; 4] = [
    "/dev/memchan",
    "/dev/memchan1",
    "/dev/memchan2",
    "/dev/memchan3",
];

/// Memory the fuzzer passes to the kernel: a valid buffer whose last page is unmapped
/// (`PROT_NONE`), so that "partially unmapped" buffers are easy to make.
struct Arena {
    base: *mut u8,
    len: usize,
}

impl Arena {
    fn new() -> Self {
        let len = 64 * 4096;
        // SAFETY: anonymous private mapping owned by the arena.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len + 4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        // SAFETY: our own mapping; the guard page becomes inaccessible.
        unsafe { libc::mprotect(base.cast::<u8>().add(len).cast(), 4096, libc::PROT_NONE) };
        Self {
            base: base.cast(),
            len,
        }
    }

    /// A pointer for a buffer of `size` bytes: valid, null, small, kernel, unaligned, or
    /// running into the guard page.
    fn pointer(&self, rng: &mut fastrand::Rng, size: usize) -> usize {
        let base = self.base as usize;
        match rng.u8(0..10) {
            0 => 0,
            1 => 8,
            2 => 0xffff_8880_0000_0000,
            3 => usize::MAX - 64,
            4 => base + self.len - size.min(self.len) / 2 - 1, // crosses into the guard page
            5 => base + 1,                                     // unaligned
            _ => base + rng.usize(0..64) * 8,
        }
    }
}

fn sizes(rng: &mut fastrand::Rng) -> usize {
    *rng.choice(&[
        0usize,
        1,
        7,
        23,
        24,
        25,
        100,
        4095,
        4096,
        4097,
        65536,
        1 << 20,
        usize::MAX / 2,
    ])
    .unwrap()
}

fn ioctl_cmd(rng: &mut fastrand::Rng) -> u32 {
    let known = [
        abi::IOC_INFO,
        abi::IOC_STATS,
        abi::IOC_READER,
        abi::IOC_SEEK,
        abi::IOC_SET_POLICY,
        abi::IOC_RECORD_MODE,
        abi::IOC_CONSUME,
        libc::FIONREAD as u32,
    ];
    let k = *rng.choice(&known).unwrap();
    match rng.u8(0..6) {
        0 | 1 => k,
        2 => k ^ (1 << rng.u32(0..32)), // mangled direction/size/nr bit
        3 => {
            (abi::IOC_MAGIC << 8)
                | rng.u32(0..256)
                | (rng.u32(0..4) << 30)
                | (rng.u32(0..128) << 16)
        }
        _ => rng.u32(..),
    }
}

/// A live mapping the fuzzer made.
struct Map {
    ptr: usize,
    len: usize,
    readable: bool,
}

/// Runs one random operation; returns its name and result (errno or 0).
/// Where an op runs: `nested` ops do not fork or spawn threads; ops that must not block (a
/// thread is running, and the process-wide timer could interrupt the wrong one) only read and
/// write non-blocking descriptors.
#[derive(Clone, Copy)]
struct Ctx {
    nested: bool,
    may_block: bool,
}

/// Whether `fd` may be read or written in `ctx` without risking an endless block.
fn io_ok(ctx: Ctx, fd: i32) -> bool {
    // SAFETY: F_GETFL on any descriptor number is harmless.
    ctx.may_block || unsafe { libc::fcntl(fd, libc::F_GETFL) } & libc::O_NONBLOCK != 0
}

fn op(
    rng: &mut fastrand::Rng,
    fds: &mut Vec<OwnedFd>,
    maps: &mut Vec<Map>,
    arena: &Arena,
    ctx: Ctx,
) -> (&'static str, i32) {
    let err = |r: libc::c_long| {
        if r < 0 {
            last_errno().raw_os_error()
        } else {
            0
        }
    };
    let fd = |fds: &Vec<OwnedFd>, rng: &mut fastrand::Rng| {
        fds.get(rng.usize(0..fds.len().max(1)))
            .map_or(-1, |f| f.as_raw_fd())
    };
    match rng.u8(0..20) {
        0 | 1 if fds.len() < 64 => {
            let path = *rng.choice(&PATHS).unwrap();
            let mut flags = rng.u32(0..4) as i32; // O_RDONLY, O_WRONLY, O_RDWR, and the invalid 3
            for f in [
                libc::O_NONBLOCK,
                libc::O_APPEND,
                libc::O_TRUNC,
                libc::O_CREAT,
                libc::O_EXCL,
                libc::O_SYNC,
                libc::O_DIRECT,
                libc::O_NOCTTY,
                libc::O_NOATIME,
                libc::O_PATH,
            ] {
                if rng.u8(0..4) == 0 {
                    flags |= f;
                }
            }
            let c = std::ffi::CString::new(path).unwrap();
            // SAFETY: a plain open(2) of a NUL-terminated path.
            let r = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, 0o600) };
            if r >= 0 {
                // SAFETY: a descriptor we just opened and now own.
                fds.push(unsafe { OwnedFd::from_raw_fd(r) });
            }
            ("open", err(r as _))
        }
        2..=4 => {
            let size = sizes(rng);
            let p = arena.pointer(rng, size);
            let f = fd(fds, rng);
            if !io_ok(ctx, f) {
                return ("skip", 0);
            }
            arm_timer();
            // SAFETY: the kernel must validate the buffer; that is what is tested.
            let r = unsafe { libc::read(f, p as *mut libc::c_void, size) };
            disarm_timer();
            ("read", err(r as _))
        }
        5..=7 => {
            let size = sizes(rng).min(8192);
            let p = arena.pointer(rng, size);
            let f = fd(fds, rng);
            if !io_ok(ctx, f) {
                return ("skip", 0);
            }
            arm_timer();
            // SAFETY: as for read.
            let r = unsafe { libc::write(f, p as *const libc::c_void, size) };
            disarm_timer();
            ("write", err(r as _))
        }
        8..=10 => {
            let cmd = ioctl_cmd(rng);
            let arg = if rng.bool() {
                arena.pointer(rng, 64)
            } else {
                rng.usize(0..4)
            };
            // Keep the channels usable: a block policy would stall other fuzz writes until the
            // timer fires, which is fine, but restore overwrite now and then (below).
            // SAFETY: as for read.
            let r = unsafe { libc::ioctl(fd(fds, rng), cmd as _, arg) };
            ("ioctl", err(r as _))
        }
        11 => {
            let len = *rng
                .choice(&[
                    0usize,
                    4096,
                    4096 + 2 * 65536,
                    4096 + 2 * 65536 + 4096,
                    4096 + 65536,
                    1 << 30,
                ])
                .unwrap();
            let prot = [libc::PROT_READ, libc::PROT_WRITE, libc::PROT_EXEC]
                .iter()
                .filter(|_| rng.bool())
                .fold(0, |a, p| a | p);
            let flags = if rng.bool() {
                libc::MAP_SHARED
            } else {
                libc::MAP_PRIVATE
            };
            let off = *rng.choice(&[0i64, 4096, 1 << 40, -4096]).unwrap();
            let f = fd(fds, rng);
            // Half the time a valid request, so that mprotect/mremap/munmap/touch get work.
            let (len, prot, off) = if rng.bool() {
                (135168, libc::PROT_READ, 0)
            } else {
                (len, prot, off)
            };
            // SAFETY: a new mapping chosen by the kernel.
            let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, f, off) };
            if p != libc::MAP_FAILED {
                let target = std::fs::read_link(format!("/proc/self/fd/{f}")).unwrap_or_default();
                assert!(
                    target.to_string_lossy().starts_with("/dev/memchan") && len == 135168 && off == 0 && prot & !libc::PROT_READ == 0,
                    "mmap(len {len}, prot {prot}, flags {flags}, off {off}) of fd {f} ({target:?}) succeeded"
                );
                maps.push(Map {
                    ptr: p as usize,
                    len,
                    readable: prot & libc::PROT_READ != 0,
                });
                return ("mmap", 0);
            }
            ("mmap", last_errno().raw_os_error())
        }
        12 if !maps.is_empty() => {
            let i = rng.usize(0..maps.len());
            let m = &mut maps[i];
            match rng.u8(0..4) {
                0 => {
                    let prot = [
                        libc::PROT_READ,
                        libc::PROT_WRITE,
                        libc::PROT_EXEC,
                        libc::PROT_NONE,
                    ][rng.usize(0..4)];
                    // SAFETY: our own mapping.
                    let r = unsafe { libc::mprotect(m.ptr as *mut _, m.len, prot) };
                    if r == 0 {
                        m.readable = prot & libc::PROT_READ != 0;
                    }
                    ("mprotect", err(r as _))
                }
                1 => {
                    let new = if rng.bool() {
                        m.len + 4096
                    } else {
                        (m.len / 2) & !4095
                    };
                    // SAFETY: our own mapping.
                    let p = unsafe {
                        libc::mremap(m.ptr as *mut _, m.len, new.max(4096), libc::MREMAP_MAYMOVE)
                    };
                    if p != libc::MAP_FAILED {
                        m.ptr = p as usize;
                        m.len = new.max(4096);
                        return ("mremap", 0);
                    }
                    ("mremap", last_errno().raw_os_error())
                }
                2 if m.readable => {
                    // SAFETY: a readable page of our own mapping.
                    let v = unsafe {
                        std::ptr::read_volatile(
                            (m.ptr + rng.usize(0..m.len) / 4096 * 4096) as *const u8,
                        )
                    };
                    std::hint::black_box(v);
                    ("touch", 0)
                }
                _ => {
                    let m = maps.swap_remove(i);
                    // SAFETY: our own mapping, forgotten afterwards.
                    let r = unsafe { libc::munmap(m.ptr as *mut _, m.len) };
                    ("munmap", err(r as _))
                }
            }
        }
        13 => {
            let mut pfds: Vec<libc::pollfd> = fds
                .iter()
                .take(8)
                .map(|f| libc::pollfd {
                    fd: f.as_raw_fd(),
                    events: rng.i16(..),
                    revents: 0,
                })
                .collect();
            // SAFETY: a valid pollfd array.
            let r = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as _, 0) };
            ("poll", err(r as _))
        }
        14 => {
            // SAFETY: epoll on our descriptors, zero timeout.
            let r = unsafe {
                let ep = libc::epoll_create1(libc::EPOLL_CLOEXEC);
                let mut ev = libc::epoll_event {
                    events: rng.u32(..),
                    u64: 1,
                };
                libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd(fds, rng), &mut ev);
                let mut out = [libc::epoll_event { events: 0, u64: 0 }; 4];
                let r = libc::epoll_wait(ep, out.as_mut_ptr(), 4, 0);
                libc::close(ep);
                r
            };
            ("epoll", err(r as _))
        }
        15 => {
            let _ = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd(fds, rng)));
            ("fdinfo", 0)
        }
        16 if !fds.is_empty() => {
            let i = rng.usize(0..fds.len());
            if rng.bool() {
                drop(fds.swap_remove(i));
                ("close", 0)
            } else {
                match fds[i].try_clone() {
                    Ok(f) => {
                        fds.push(f);
                        ("dup", 0)
                    }
                    Err(e) => ("dup", e.raw_os_error().unwrap_or(0)),
                }
            }
        }
        17 if !ctx.nested => {
            // A forked child shares the descriptors (and mappings) and runs ops of its own.
            let seed = rng.u64(..);
            // SAFETY: the child only runs the fuzzer loop and then `_exit`s.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                let mut crng = fastrand::Rng::with_seed(seed);
                let mut cmaps = Vec::new();
                let mut cfds: Vec<OwnedFd> =
                    fds.iter().filter_map(|f| f.try_clone().ok()).collect();
                // No watchdog thread in the child: non-blocking I/O only.
                let ctx = Ctx {
                    nested: true,
                    may_block: false,
                };
                for _ in 0..50 {
                    op(&mut crng, &mut cfds, &mut cmaps, arena, ctx);
                }
                // SAFETY: leave the child without running destructors or atexit handlers.
                unsafe { libc::_exit(0) };
            }
            let mut status = 0;
            // SAFETY: reaping our own child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            assert!(
                libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                "forked fuzz child failed: {status:#x}"
            );
            ("fork", 0)
        }
        18 if !ctx.nested => {
            // A thread shares the descriptor table and runs ops concurrently with ours.
            let seed = rng.u64(..);
            let mut tfds: Vec<OwnedFd> = fds.iter().filter_map(|f| f.try_clone().ok()).collect();
            let arena_ptr = (arena.base as usize, arena.len);
            let t = std::thread::spawn(move || {
                let arena = Arena {
                    base: arena_ptr.0 as *mut u8,
                    len: arena_ptr.1,
                };
                let mut trng = fastrand::Rng::with_seed(seed);
                let mut tmaps = Vec::new();
                for _ in 0..50 {
                    op(
                        &mut trng,
                        &mut tfds,
                        &mut tmaps,
                        &arena,
                        Ctx {
                            nested: true,
                            may_block: false,
                        },
                    );
                }
                for m in tmaps {
                    // SAFETY: the thread's own mappings.
                    unsafe { libc::munmap(m.ptr as *mut _, m.len) };
                }
            });
            for _ in 0..20 {
                op(
                    rng,
                    fds,
                    maps,
                    arena,
                    Ctx {
                        nested: true,
                        may_block: false,
                    },
                );
            }
            t.join().expect("fuzz thread panicked");
            ("thread", 0)
        }
        _ => {
            // Keep the channels flowing: back to overwrite on some writable fd.
            if let Some(f) = fds
                .iter()
                .find(|f| ioctl(f, abi::IOC_SET_POLICY, abi::POLICY_OVERWRITE as usize).is_ok())
            {
                std::hint::black_box(f);
            }
            ("reset", 0)
        }
    }
}

extern "C" fn on_alarm(_: libc::c_int) {}

/// When the fuzzing thread entered a possibly blocking call (ms since `EPOCH`, +1), or 0.
static IN_CALL: AtomicU64 = AtomicU64::new(0);
/// Set when the fuzzing is over: the watchdog exits.
static DONE: AtomicBool = AtomicBool::new(false);
static EPOCH: OnceLock<Instant> = OnceLock::new();

fn now_ms() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// Interrupts the fuzzing thread's blocking read/write after ~20 ms: a watchdog thread sends
/// it SIGALRM (handled without `SA_RESTART`, so the call fails with `EINTR`). The test kernel
/// has no POSIX timers, and a process-wide signal could wake another thread anyway.
fn start_watchdog() -> std::thread::JoinHandle<()> {
    // SAFETY: pthread_self has no preconditions.
    let target = unsafe { libc::pthread_self() } as usize;
    std::thread::spawn(move || {
        while !DONE.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(10));
            let since = IN_CALL.load(Ordering::Relaxed);
            if since != 0 && now_ms().saturating_sub(since) > 20 {
                // SAFETY: the fuzzing thread outlives the watchdog (it joins it).
                unsafe { libc::pthread_kill(target as libc::pthread_t, libc::SIGALRM) };
            }
        }
    })
}

fn arm_timer() {
    IN_CALL.store(now_ms(), Ordering::Relaxed);
}

fn disarm_timer() {
    IN_CALL.store(0, Ordering::Relaxed);
}

#[test]
fn fuzz_the_device_then_check_every_channel_still_works() {
    require_guest();
    let seed = std::env::var("MEMCHAN_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let ops: u64 = std::env::var("MEMCHAN_FUZZ_OPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5000);
    println!("fuzz seed {seed} (replay: MEMCHAN_FUZZ_SEED={seed} MEMCHAN_FUZZ_OPS={ops})");
    // SAFETY: installing a no-op SIGALRM handler without SA_RESTART.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_alarm as *const () as usize;
        libc::sigaction(libc::SIGALRM, &sa, std::ptr::null_mut());
    }
    let watchdog = start_watchdog();
    let mut rng = fastrand::Rng::with_seed(seed);
    let arena = Arena::new();
    let mut fds = Vec::new();
    let mut maps = Vec::new();
    let mut tally: BTreeMap<(&str, i32), u64> = BTreeMap::new();
    let start = Instant::now();
    for _ in 0..ops {
        let ctx = Ctx {
            nested: false,
            may_block: true,
        };
        *tally
            .entry(op(&mut rng, &mut fds, &mut maps, &arena, ctx))
            .or_default() += 1;
    }
    let elapsed = start.elapsed();
    DONE.store(true, Ordering::Relaxed);
    watchdog.join().unwrap();
    for m in maps {
        // SAFETY: our own mappings.
        unsafe { libc::munmap(m.ptr as *mut _, m.len) };
    }
    drop(fds);
    let mut per_op: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for ((name, e), n) in &tally {
        let entry = per_op.entry(name).or_default();
        entry.0 += n;
        if *e != 0 {
            entry.1 += n;
        }
    }
    let summary: Vec<String> = per_op
        .iter()
        .map(|(k, (n, e))| format!("{k} {n} ({e} failed)"))
        .collect();
    println!(
        "fuzz: {ops} operations in {elapsed:.1?} (seed {seed}): {}",
        summary.join(", ")
    );
    // Every channel still works.
    for path in &PATHS {
        let w = open_path(path, OFlags::WRONLY | OFlags::NONBLOCK).unwrap();
        set_policy(&w, abi::POLICY_OVERWRITE);
        let r = open_path(path, OFlags::RDONLY | OFlags::NONBLOCK).unwrap();
        send(&w, b"alive").unwrap();
        assert_eq!(
            recv(&r).unwrap(),
            b"alive",
            "{path} broken after fuzzing (seed {seed})"
        );
    }
}
