//! userfaultfd for tests: memory whose page faults another thread of the test resolves (or
//! leaves waiting), the way FUSE- or userfaultfd-backed buffers behave for the kernel.
//!
//! The ABI is `include/uapi/linux/userfaultfd.h` (the `libc` crate has none of it).

use std::os::fd::{FromRawFd, OwnedFd};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::io::Errno;

/// `struct uffdio_api`.
#[repr(C)]
struct Api {
    api: u64,
    features: u64,
    ioctls: u64,
}

/// `struct uffdio_range`.
#[repr(C)]
struct Range {
    start: u64,
    len: u64,
}

/// `struct uffdio_register`.
#[repr(C)]
struct Register {
    range: Range,
    mode: u64,
    ioctls: u64,
}

/// `struct uffdio_zeropage`.
#[repr(C)]
struct Zeropage {
    range: Range,
    mode: u64,
    zeropage: i64,
}

const API: u64 = 0xAA;
const IOC_API: u32 = 0xc018_aa3f;
const IOC_REGISTER: u32 = 0xc020_aa00;
const IOC_ZEROPAGE: u32 = 0xc020_aa04;
const REGISTER_MODE_MISSING: u64 = 1;
/// `sizeof(struct uffd_msg)`; a page fault's address is at byte 16.
const MSG_SIZE: usize = 32;
/// The page size of the guest.
pub const PAGE: usize = 4096;

/// A userfaultfd (non-blocking), ready for [`Uffd::register`].
pub struct Uffd(OwnedFd);

impl Uffd {
    /// A new userfaultfd, or `None` when the kernel has none (`ENOSYS`).
    pub fn new() -> Option<Self> {
        // SAFETY: a raw system call with flags only.
        let raw =
            unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | libc::O_NONBLOCK) };
        if raw < 0 && crate::last_errno() == Errno::NOSYS {
            return None;
        }
        assert!(raw >= 0, "userfaultfd: {}", crate::last_errno());
        // SAFETY: a new descriptor owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw as i32) };
        let mut api = Api {
            api: API,
            features: 0,
            ioctls: 0,
        };
        crate::ioctl(&fd, IOC_API, &mut api as *mut Api as usize).expect("UFFDIO_API");
        Some(Self(fd))
    }

    /// Makes missing-page faults in `[addr, addr + len)` (an anonymous private mapping of the
    /// caller's) wait for this userfaultfd. Again after the range was mapped anew.
    pub fn register(&self, addr: usize, len: usize) {
        let mut reg = Register {
            range: Range {
                start: addr as u64,
                len: len as u64,
            },
            mode: REGISTER_MODE_MISSING,
            ioctls: 0,
        };
        crate::ioctl(&self.0, IOC_REGISTER, &mut reg as *mut Register as usize)
            .expect("UFFDIO_REGISTER");
    }

    /// The page of the next fault, if one arrives within `ms` milliseconds.
    pub fn next_fault(&self, ms: i64) -> Option<usize> {
        let mut fds = [PollFd::new(&self.0, PollFlags::IN)];
        let tick = Timespec {
            tv_sec: ms / 1000,
            tv_nsec: ms % 1000 * 1_000_000,
        };
        if poll(&mut fds, Some(&tick)).unwrap_or(0) == 0 {
            return None;
        }
        let mut msg = [0u8; MSG_SIZE];
        if rustix::io::read(&self.0, &mut msg) != Ok(MSG_SIZE) {
            return None;
        }
        let addr = u64::from_ne_bytes(msg[16..24].try_into().unwrap()) as usize;
        Some(addr & !(PAGE - 1))
    }

    /// Resolves the fault on `page` with a zero page (the faulting task goes on).
    pub fn zeropage(&self, page: usize) {
        let mut z = Zeropage {
            range: Range {
                start: page as u64,
                len: PAGE as u64,
            },
            mode: 0,
            zeropage: 0,
        };
        // EEXIST (another thread's fault resolved it first) is fine.
        let _ = crate::ioctl(&self.0, IOC_ZEROPAGE, &mut z as *mut Zeropage as usize);
    }
}

/// Maps `len` bytes of fresh anonymous memory at `addr` (`MAP_FIXED`, replacing what was
/// there), or anywhere if `addr` is 0; its pages are missing until touched.
pub fn map_anon(addr: usize, len: usize) -> usize {
    let fixed = if addr == 0 { 0 } else { libc::MAP_FIXED };
    // SAFETY: a private anonymous mapping; with MAP_FIXED it replaces a mapping of the caller's
    // own, which the caller says no Rust reference points into.
    let p = unsafe {
        libc::mmap(
            addr as *mut libc::c_void,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | fixed,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED, "mmap: {}", crate::last_errno());
    p as usize
}
