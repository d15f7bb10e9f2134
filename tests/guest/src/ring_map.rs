//! A read-only mapping of a channel's ring, for zero-copy readers in tests.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use memchan_abi as abi;
use rustix::io::Errno;

/// A mapping of a channel, unmapped on drop.
pub struct RingMap {
    /// Start of the mapping.
    pub ptr: *mut u8,
    /// Its length.
    pub len: usize,
}

// SAFETY: the mapping is read-only shared memory; reading it from any thread is fine.
unsafe impl Send for RingMap {}

impl RingMap {
    /// `mmap(NULL, len, prot, flags, fd, offset)`.
    pub fn new(
        fd: &OwnedFd,
        len: usize,
        prot: i32,
        flags: i32,
        offset: i64,
    ) -> Result<Self, Errno> {
        // SAFETY: a fresh mapping chosen by the kernel; the arguments are what is under test.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                flags,
                fd.as_raw_fd(),
                offset,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(crate::last_errno());
        }
        Ok(Self { ptr: p.cast(), len })
    }

    /// The whole ring, read-only and shared.
    pub fn ro(fd: &OwnedFd) -> Self {
        let len = crate::info(fd).mmap_bytes as usize;
        Self::new(fd, len, libc::PROT_READ, libc::MAP_SHARED, 0).expect("mmap")
    }

    /// A `u64` control field, loaded with acquire ordering.
    pub fn ctl(&self, off: usize) -> u64 {
        assert!(off + 8 <= 4096 && off.is_multiple_of(8));
        // SAFETY: an aligned field inside the control page of a live mapping; the kernel writes
        // these fields with single aligned stores.
        unsafe { AtomicU64::from_ptr(self.ptr.add(off).cast()).load(Ordering::Acquire) }
    }

    /// Copies `len` bytes at `off`.
    pub fn bytes(&self, off: usize, len: usize) -> Vec<u8> {
        assert!(off + len <= self.len);
        // SAFETY: in bounds of a live mapping (checked above).
        unsafe { std::slice::from_raw_parts(self.ptr.add(off), len).to_vec() }
    }

    /// A native-endian `u32` at `off`.
    pub fn u32_at(&self, off: usize) -> u32 {
        u32::from_ne_bytes(self.bytes(off, 4).try_into().unwrap())
    }

    /// A native-endian `u64` at `off`.
    pub fn u64_at(&self, off: usize) -> u64 {
        u64::from_ne_bytes(self.bytes(off, 8).try_into().unwrap())
    }

    /// `head_pos` of the control page.
    pub fn head_pos(&self) -> u64 {
        self.ctl(std::mem::offset_of!(abi::RingControl, head_pos))
    }

    /// `tail_pos` of the control page.
    pub fn tail_pos(&self) -> u64 {
        self.ctl(std::mem::offset_of!(abi::RingControl, tail_pos))
    }

    /// `tail_seq` of the control page.
    pub fn tail_seq(&self) -> u64 {
        self.ctl(std::mem::offset_of!(abi::RingControl, tail_seq))
    }

    /// Reads the record at ring position `pos` in place: (header, payload), or `None` if the
    /// kernel overwrote it while we copied (the reader was lapped).
    pub fn record(&self, pos: u64) -> Option<(abi::RecordHeader, Vec<u8>)> {
        let ring = self.u64_at(8);
        let base = self.u64_at(16) as usize + (pos % ring) as usize;
        let h = abi::RecordHeader {
            seq: self.u64_at(base),
            timestamp_ns: self.u64_at(base + 8),
            len: self.u32_at(base + 16),
            flags: self.u32_at(base + 20),
        };
        // A torn header can carry any length: clamp before copying.
        let len = (h.len as usize).min(self.len - base - abi::RECORD_HEADER_SIZE as usize);
        let payload = self.bytes(base + abi::RECORD_HEADER_SIZE as usize, len);
        std::sync::atomic::fence(Ordering::Acquire);
        (self.tail_pos() <= pos).then_some((h, payload))
    }
}

impl Drop for RingMap {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}
