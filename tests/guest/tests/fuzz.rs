//! A seeded, reproducible syscall fuzzer against the device.
//!
//! Random sequences of open (all flag combinations), read/write (sizes 0 to huge; valid, null,
//! kernel, unaligned and partially unmapped buffers), ioctls (every memchan number, mangled
//! ones, random ones; random arguments), mmap/mprotect/munmap/mremap, poll/epoll, fdinfo,
//! dup/close, and fork/threads sharing descriptors; exclusive epoll waiters left registered;
//! several threads in `read`/`write`/`SEND_BATCH` on one descriptor while their buffers are
//! unmapped and mapped again under them; buffers whose pages fault to a userfaultfd handler that
//! answers late; policy flips while a mapped reader holds a record (which must then either stay
//! as it was or be reported overwritten). The kernel must not report anything (the log scanner
//! checks), the fuzzer must not crash, and every channel must still work after.
//!
//! `MEMCHAN_FUZZ_SEED` replays a run, `MEMCHAN_FUZZ_OPS` sets its length; the seed is printed
//! first, so a failing run can always be replayed.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use memchan_abi as abi;
use memchan_guest_tests::*;
use rustix::fs::OFlags;

/// Length of a channel's read-only mapping with the default 64 KiB ring: control page,
/// producer page, the data twice.
const MAP_LEN: usize = 2 * 4096 + 2 * 65536;

/// The channels of a default load. (No path that does not exist: `O_CREAT` would make it a
/// regular file in /dev, whose mappings raise SIGBUS when touched.)
const PATHS: [&str; 4] = [
    "/dev/memchan",
    "/dev/memchan1",
    "/dev/memchan2",
    "/dev/memchan3",
];

/// Memory the fuzzer passes to the kernel: a valid buffer whose last page is unmapped
/// (`PROT_NONE`), so that "partially unmapped" buffers are easy to make; pages that a
/// userfaultfd handler thread fills in late (if the kernel has userfaultfd); and pages that
/// [`flip`] replaces, unmaps and protects while calls use them.
#[derive(Clone, Copy)]
struct Arena {
    base: usize,
    len: usize,
    /// `UFFD_PAGES` pages registered with the userfaultfd (0: none).
    uffd: usize,
    /// `FLIP_PAGES` pages for [`flip`].
    flip: usize,
}

const UFFD_PAGES: usize = 4;
const FLIP_PAGES: usize = 2;

impl Arena {
    fn new(uffd: Option<&Uffd>) -> Self {
        let len = 64 * 4096;
        let base = uffd::map_anon(0, len + 4096);
        // SAFETY: our own mapping; the guard page becomes inaccessible.
        unsafe { libc::mprotect((base + len) as *mut libc::c_void, 4096, libc::PROT_NONE) };
        let flip = uffd::map_anon(0, FLIP_PAGES * 4096);
        let uffd = uffd.map_or(0, |u| {
            let p = uffd::map_anon(0, UFFD_PAGES * 4096);
            u.register(p, UFFD_PAGES * 4096);
            p
        });
        Self {
            base,
            len,
            uffd,
            flip,
        }
    }

    /// A pointer for a buffer of `size` bytes: valid, null, small, kernel, unaligned, running
    /// into the guard page, in the userfaultfd pages or in the flipped ones.
    fn pointer(&self, rng: &mut fastrand::Rng, size: usize) -> usize {
        let base = self.base;
        match rng.u8(0..12) {
            0 => 0,
            1 => 8,
            2 => 0xffff_8880_0000_0000,
            3 => usize::MAX - 64,
            4 => base + self.len - size.min(self.len) / 2 - 1, // crosses into the guard page
            5 => base + 1,                                     // unaligned
            6 if self.uffd != 0 => self.uffd + rng.usize(0..UFFD_PAGES * 4096),
            7 => self.flip + rng.usize(0..FLIP_PAGES * 4096),
            _ => base + rng.usize(0..64) * 8,
        }
    }
}

/// Changes the flipped pages under whoever uses them: fresh pages, no pages, or no access.
fn flip(rng: &mut fastrand::Rng, arena: &Arena) {
    let len = FLIP_PAGES * 4096;
    match rng.u8(0..3) {
        0 => {
            uffd::map_anon(arena.flip, len);
        }
        1 => {
            // SAFETY: the flipped pages are only ever passed to system calls, never referenced.
            unsafe { libc::munmap(arena.flip as *mut libc::c_void, len) };
        }
        _ => {
            // SAFETY: as above; a missing range is ENOMEM, which is fine.
            unsafe { libc::mprotect(arena.flip as *mut libc::c_void, len, libc::PROT_READ) };
        }
    }
}

/// A read, write, `SEND_BATCH` or `FIONREAD` on `fd`, from one of several threads sharing it.
fn same_fd_call(rng: &mut fastrand::Rng, fd: i32, arena: &Arena) {
    let size = sizes(rng).min(2 * abi::SEND_BATCH_MAX as usize);
    let p = arena.pointer(rng, size);
    // SAFETY: the kernel must validate buffers and arguments; that is what is tested.
    unsafe {
        match rng.u8(0..4) {
            0 => {
                libc::read(fd, p as *mut libc::c_void, size);
            }
            1 => {
                libc::write(fd, p as *const libc::c_void, size.min(8192));
            }
            2 => {
                let req = abi::SendBatch {
                    data: p as u64,
                    len: size as u64,
                };
                libc::ioctl(fd, abi::IOC_SEND_BATCH as _, &req as *const abi::SendBatch);
            }
            _ => {
                let mut n = 0i32;
                libc::ioctl(fd, libc::FIONREAD as _, &mut n as *mut i32);
            }
        }
    }
}

/// Writes valid batch records (payloads of 8 bytes) into the arena, so that `SEND_BATCH` from
/// it sends something rather than only failing.
fn seed_batches(arena: &Arena) {
    let rec = abi::record_size(8) as usize;
    for at in (0..arena.len / 2).step_by(rec) {
        let len = 8u32.to_ne_bytes();
        // SAFETY: inside the arena's valid part; nothing holds a reference to it.
        unsafe {
            std::ptr::copy_nonoverlapping(len.as_ptr(), (arena.base + at + 16) as *mut u8, 4)
        };
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
    match rng.u8(0..26) {
        0 | 1 => {
            // At most 64 descriptors: a full table makes room by closing one, so that the set
            // keeps changing over a long run.
            if fds.len() >= 64 {
                drop(fds.swap_remove(rng.usize(0..fds.len())));
            }
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
                    MAP_LEN,
                    MAP_LEN + 4096,
                    2 * 4096 + 65536,
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
            let off = *rng
                .choice(&[0i64, 4096, 1 << 40, -4096, abi::MMAP_PRODUCER_OFFSET as i64])
                .unwrap();
            let f = fd(fds, rng);
            // Half the time a valid request, so that mprotect/mremap/munmap/touch get work.
            let (len, prot, off) = if rng.bool() {
                (MAP_LEN, libc::PROT_READ, 0)
            } else {
                (len, prot, off)
            };
            // SAFETY: a new mapping chosen by the kernel.
            let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, f, off) };
            if p != libc::MAP_FAILED {
                let target = std::fs::read_link(format!("/proc/self/fd/{f}")).unwrap_or_default();
                assert!(
                    target.to_string_lossy().starts_with("/dev/memchan") && len == MAP_LEN && off == 0 && prot & !libc::PROT_READ == 0,
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
            // An epoll instance watching one of our descriptors, often as an exclusive waiter,
            // kept among the descriptors (so its registration stays while reads, writes and
            // other waiters come and go), or a short wait on one of them.
            let target = fd(fds, rng);
            if rng.bool() || fds.len() >= 64 {
                let mut out = [libc::epoll_event { events: 0, u64: 0 }; 4];
                let ms = if ctx.may_block { rng.i32(0..3) } else { 0 };
                // SAFETY: epoll_wait into a local array (EINVAL on a descriptor not epoll's).
                let r = unsafe { libc::epoll_wait(target, out.as_mut_ptr(), 4, ms) };
                return ("epoll_wait", err(r as _));
            }
            let events = match rng.u8(0..3) {
                0 => rng.u32(..),
                1 => (libc::EPOLLIN | libc::EPOLLEXCLUSIVE) as u32,
                _ => (libc::EPOLLIN | libc::EPOLLET | libc::EPOLLEXCLUSIVE) as u32,
            };
            // SAFETY: a new epoll descriptor, owned below.
            let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
            assert!(ep >= 0, "epoll_create1: {}", last_errno());
            // SAFETY: a descriptor we just made and now own.
            let ep = unsafe { OwnedFd::from_raw_fd(ep) };
            let mut ev = libc::epoll_event { events, u64: 1 };
            // SAFETY: epoll_ctl with a valid event.
            let r =
                unsafe { libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, target, &mut ev) };
            fds.push(ep);
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
            let tarena = *arena;
            let t = std::thread::spawn(move || {
                let mut trng = fastrand::Rng::with_seed(seed);
                let mut tmaps = Vec::new();
                for _ in 0..50 {
                    op(
                        &mut trng,
                        &mut tfds,
                        &mut tmaps,
                        &tarena,
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
        19 if !ctx.nested && !fds.is_empty() => {
            // Several threads in read/write/SEND_BATCH/FIONREAD on one descriptor, while this
            // thread changes the flipped pages under them and interrupts whoever is blocked.
            let f = fd(fds, rng);
            let arena = *arena;
            let crowd: Vec<_> = (0..3)
                .map(|_| {
                    let mut trng = fastrand::Rng::with_seed(rng.u64(..));
                    std::thread::spawn(move || {
                        for _ in 0..8 {
                            same_fd_call(&mut trng, f, &arena);
                        }
                    })
                })
                .collect();
            while crowd.iter().any(|t| !t.is_finished()) {
                flip(rng, &arena);
                std::thread::sleep(Duration::from_micros(rng.u64(0..3000)));
                for t in crowd.iter().filter(|t| !t.is_finished()) {
                    // SAFETY: the thread is not joined yet, so its handle is valid.
                    unsafe { libc::pthread_kill(t.as_pthread_t(), libc::SIGALRM) };
                }
            }
            for t in crowd {
                t.join().expect("fuzz thread panicked");
            }
            ("crowd", 0)
        }
        21 => {
            // A mapped reader holds the record at its cursor while the policy flips and writers
            // go on: the record must read the same afterwards, or be reported overwritten.
            let path = *rng.choice(&PATHS).unwrap();
            let (Ok(r), Ok(w)) = (
                open_path(path, OFlags::RDONLY | OFlags::NONBLOCK),
                open_path(path, OFlags::WRONLY | OFlags::NONBLOCK),
            ) else {
                return ("mapped", last_errno().raw_os_error());
            };
            let Ok(map) = RingMap::new(
                &r,
                info(&r).mmap_bytes as usize,
                libc::PROT_READ,
                libc::MAP_SHARED,
                0,
            ) else {
                return ("mapped", last_errno().raw_os_error());
            };
            for i in 0..rng.u8(1..8) {
                let _ = send(&w, &[i; 100]);
            }
            let at = reader(&r);
            let held = (at.cursor_seq < info(&r).head_seq)
                .then(|| map.record(at.cursor_pos))
                .flatten();
            let policy = [abi::POLICY_BLOCK, abi::POLICY_OVERWRITE][rng.usize(0..2)];
            let _ = ioctl(&w, abi::IOC_SET_POLICY, policy as usize);
            for _ in 0..rng.u32(0..400) {
                if send(&w, &[7; 200]).is_err() {
                    break;
                }
            }
            let _ = ioctl(&w, abi::IOC_SET_POLICY, (policy ^ 1) as usize);
            if let Some((h, payload)) = held {
                assert_eq!(
                    h.seq, at.cursor_seq,
                    "{path}: a held record with another seq"
                );
                if let Some(again) = map.record(at.cursor_pos) {
                    assert_eq!(
                        again,
                        (h, payload),
                        "{path}: a held record changed unreported"
                    );
                }
            }
            let next = at.cursor_seq + 1;
            let r = ioctl(&r, abi::IOC_CONSUME, &next as *const u64 as usize);
            ("mapped", errno_code(r))
        }
        22 if arena.uffd != 0 && !ctx.nested => {
            // The userfaultfd pages go away and come back missing: faults again.
            uffd::map_anon(arena.uffd, UFFD_PAGES * 4096);
            UFFD.get()
                .expect("the userfaultfd")
                .register(arena.uffd, UFFD_PAGES * 4096);
            ("uffd", 0)
        }
        23 => {
            flip(rng, arena);
            ("flip", 0)
        }
        // Not nested: a producer may rewrite any byte of the ring while it has it, so a
        // mapped reader's held record (op 21) in another thread could change unreported.
        24 if !ctx.nested => hostile_producer(rng),
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

/// A hostile producer: claims a channel, then publishes a few rounds of forged headers, tails
/// and heads (jumps as far as a take accepts, past it, backwards, anywhere), each with a
/// doorbell, while the channel's other users go on; then leaves (the claim ends under load).
fn hostile_producer(rng: &mut fastrand::Rng) -> (&'static str, i32) {
    let path = *rng.choice(&PATHS).unwrap();
    let Ok(fd) = open_path(path, OFlags::RDWR | OFlags::NONBLOCK) else {
        return ("producer", last_errno().raw_os_error());
    };
    if let Err(e) = ioctl(&fd, abi::IOC_PRODUCER, 0) {
        return ("producer", e.raw_os_error());
    }
    let i = info(&fd);
    let Ok(map) = RingMap::new(
        &fd,
        i.mmap_bytes as usize - 4096,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_SHARED,
        abi::MMAP_PRODUCER_OFFSET as i64,
    ) else {
        return ("producer", last_errno().raw_os_error());
    };
    let ring = i.ring_bytes;
    let put = |off: usize, v: u64| {
        if off + 8 <= map.len {
            // SAFETY: in bounds and 8-byte aligned (callers align), our own writable mapping.
            unsafe { std::ptr::write_volatile(map.ptr.add(off).cast::<u64>(), v) };
        }
    };
    let at = |pos: u64| 4096 + (pos % ring) as usize;
    let (head_pos, head_seq, tail_pos, tail_seq) = (0, 8, 16, 24);
    let mut result = 0;
    for _ in 0..rng.u8(1..6) {
        let (pos, seq) = (map.u64_at(head_pos), map.u64_at(head_seq));
        // A record at a chosen distance, as dense as positions allow or anything.
        let d = match rng.u8(0..5) {
            0 => (1u64 << 62) / 32 - 2,
            1 => (1u64 << 62) / 32 + rng.u64(0..4),
            2 => rng.u64(0..4 * ring) / 32,
            3 => rng.u64(..) / 32,
            _ => 0,
        };
        let (p, s) = (pos.wrapping_add(32 * d), seq.wrapping_add(d));
        let len = if rng.u8(0..4) == 0 {
            rng.u32(..)
        } else {
            rng.u32(1..64)
        };
        put(at(p), if rng.u8(0..8) == 0 { rng.u64(..) } else { s });
        put(at(p) + 16, u64::from(len));
        for _ in 0..rng.u8(0..4) {
            put((4096 + rng.u64(0..2 * ring) as usize) & !7, rng.u64(..));
        }
        if rng.bool() {
            put(tail_seq, s);
            put(tail_pos, if rng.u8(0..8) == 0 { rng.u64(..) } else { p });
        }
        put(head_seq, s.wrapping_add(1));
        put(head_pos, p.wrapping_add(abi::record_size(len.min(1 << 20))));
        result = errno_code(ioctl(&fd, abi::IOC_DOORBELL, 0));
    }
    // Leaves, while the others may still be reading and writing.
    drop(map);
    drop(fd);
    ("producer", result)
}

extern "C" fn on_alarm(_: libc::c_int) {}

/// When the fuzzing thread entered a possibly blocking call (ms since `EPOCH`, +1), or 0.
static IN_CALL: AtomicU64 = AtomicU64::new(0);
/// Set when the fuzzing is over: the watchdog exits.
static DONE: AtomicBool = AtomicBool::new(false);
static EPOCH: OnceLock<Instant> = OnceLock::new();
/// The userfaultfd behind the arena's userfaultfd pages.
static UFFD: OnceLock<Uffd> = OnceLock::new();

fn now_ms() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// Interrupts the fuzzing thread's blocking read/write after ~5 ms: a watchdog thread sends
/// it SIGALRM (handled without `SA_RESTART`, so the call fails with `EINTR`). The test kernel
/// has no POSIX timers, and a process-wide signal could wake another thread anyway.
fn start_watchdog() -> std::thread::JoinHandle<()> {
    // SAFETY: pthread_self has no preconditions.
    let target = unsafe { libc::pthread_self() } as usize;
    std::thread::spawn(move || {
        while !DONE.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(2));
            let since = IN_CALL.load(Ordering::Relaxed);
            if since != 0 && now_ms().saturating_sub(since) > 5 {
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
        .unwrap_or(3000);
    println!("fuzz seed {seed} (replay: MEMCHAN_FUZZ_SEED={seed} MEMCHAN_FUZZ_OPS={ops})");
    // SAFETY: installing a no-op SIGALRM handler without SA_RESTART.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_alarm as *const () as usize;
        libc::sigaction(libc::SIGALRM, &sa, std::ptr::null_mut());
    }
    let watchdog = start_watchdog();
    let mut rng = fastrand::Rng::with_seed(seed);
    let uffd = Uffd::new();
    if uffd.is_none() {
        println!("fuzz: no userfaultfd in this kernel: no userfaultfd-backed buffers");
    }
    let arena = Arena::new(uffd.as_ref());
    seed_batches(&arena);
    let handler = uffd.map(|u| {
        let u = UFFD.get_or_init(|| u);
        let mut hrng = fastrand::Rng::with_seed(seed ^ 1);
        // Answers each fault late (up to 5 ms), as a slow FUSE server or a hostile handler.
        std::thread::spawn(move || {
            while !DONE.load(Ordering::Relaxed) {
                if let Some(page) = u.next_fault(10) {
                    std::thread::sleep(Duration::from_micros(hrng.u64(0..5000)));
                    u.zeropage(page);
                }
            }
        })
    });
    let mut fds = Vec::new();
    let mut maps = Vec::new();
    let mut tally: BTreeMap<(&str, i32), u64> = BTreeMap::new();
    let start = Instant::now();
    let mut shown = Instant::now();
    for done in 0..ops {
        let ctx = Ctx {
            nested: false,
            may_block: true,
        };
        *tally
            .entry(op(&mut rng, &mut fds, &mut maps, &arena, ctx))
            .or_default() += 1;
        // A long run shows progress (past libtest's capture, which only takes `print!`).
        if shown.elapsed() > Duration::from_secs(60) {
            shown = Instant::now();
            let _ = writeln!(
                std::io::stderr(),
                "fuzz: {done} of {ops} operations after {:.0?}",
                start.elapsed()
            );
        }
    }
    let elapsed = start.elapsed();
    DONE.store(true, Ordering::Relaxed);
    watchdog.join().unwrap();
    if let Some(h) = handler {
        h.join().unwrap();
    }
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
