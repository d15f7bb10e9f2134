//! Every `unsafe` operation of the library: the typed ioctls (through `rustix::ioctl`, with the
//! request numbers from the shared ABI crate) and the read-only ring mapping.

use std::os::fd::{AsFd, BorrowedFd};
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU64, Ordering};

use memchan_abi as abi;
use rustix::io::Errno;
use rustix::ioctl::{ioctl, Getter, IntegerSetter, NoArg, Setter};
use rustix::mm::{MapFlags, ProtFlags};

/// `MEMCHAN_IOC_INFO`.
pub fn info(fd: BorrowedFd<'_>) -> Result<abi::ChannelInfo, Errno> {
    // SAFETY: IOC_INFO is a read ioctl whose argument is a `ChannelInfo` the kernel fills in
    // (its size is encoded in the request number and checked by the kernel module).
    unsafe { ioctl(fd, Getter::<{ abi::IOC_INFO }, abi::ChannelInfo>::new()) }
}

/// `MEMCHAN_IOC_STATS`.
pub fn stats(fd: BorrowedFd<'_>) -> Result<abi::ChannelStats, Errno> {
    // SAFETY: IOC_STATS reads into a `ChannelStats`, as encoded in the request number.
    unsafe { ioctl(fd, Getter::<{ abi::IOC_STATS }, abi::ChannelStats>::new()) }
}

/// `MEMCHAN_IOC_READER`.
pub fn reader(fd: BorrowedFd<'_>) -> Result<abi::ReaderState, Errno> {
    // SAFETY: IOC_READER reads into a `ReaderState`, as encoded in the request number.
    unsafe { ioctl(fd, Getter::<{ abi::IOC_READER }, abi::ReaderState>::new()) }
}

/// `MEMCHAN_IOC_SEEK` with `abi::SEEK_*`.
pub fn seek(fd: BorrowedFd<'_>, whence: u32) -> Result<(), Errno> {
    // SAFETY: IOC_SEEK takes its argument by value; the kernel rejects unknown values.
    unsafe {
        ioctl(
            fd,
            IntegerSetter::<{ abi::IOC_SEEK }>::new_usize(whence as usize),
        )
    }
}

/// `MEMCHAN_IOC_SET_POLICY` with `abi::POLICY_*`.
pub fn set_policy(fd: BorrowedFd<'_>, policy: u32) -> Result<(), Errno> {
    // SAFETY: IOC_SET_POLICY takes its argument by value; the kernel rejects unknown values.
    unsafe {
        ioctl(
            fd,
            IntegerSetter::<{ abi::IOC_SET_POLICY }>::new_usize(policy as usize),
        )
    }
}

/// `MEMCHAN_IOC_SEND_BATCH`: an ioctl whose argument points to a `SendBatch` and whose
/// return value (bytes of records sent) is the result.
struct SendBatchIoctl(abi::SendBatch);

// SAFETY: The opcode is IOC_SEND_BATCH, a write ioctl reading a `SendBatch` through the
// pointer `as_ptr` returns (valid for the call); the kernel does not write through it.
unsafe impl rustix::ioctl::Ioctl for SendBatchIoctl {
    type Output = usize;
    const IS_MUTATING: bool = false;

    fn opcode(&self) -> rustix::ioctl::Opcode {
        abi::IOC_SEND_BATCH as rustix::ioctl::Opcode
    }

    fn as_ptr(&mut self) -> *mut std::ffi::c_void {
        std::ptr::from_mut(&mut self.0).cast()
    }

    unsafe fn output_from_ptr(
        out: rustix::ioctl::IoctlOutput,
        _: *mut std::ffi::c_void,
    ) -> rustix::io::Result<usize> {
        usize::try_from(out).map_err(|_| Errno::INVAL)
    }
}

/// `MEMCHAN_IOC_SEND_BATCH` on the records in `records`; returns the bytes sent.
pub fn send_batch(fd: BorrowedFd<'_>, records: &[u8]) -> Result<usize, Errno> {
    let req = abi::SendBatch {
        data: records.as_ptr() as u64,
        len: records.len() as u64,
    };
    // SAFETY: `records` stays borrowed (valid) for the call; see `SendBatchIoctl`.
    unsafe { ioctl(fd, SendBatchIoctl(req)) }
}

/// `MEMCHAN_IOC_RECORD_MODE`.
pub fn record_mode(fd: BorrowedFd<'_>, mode: u32) -> Result<(), Errno> {
    // SAFETY: IOC_RECORD_MODE takes its mode by value; the kernel checks it.
    unsafe {
        ioctl(
            fd,
            IntegerSetter::<{ abi::IOC_RECORD_MODE }>::new_usize(mode as usize),
        )
    }
}

/// `MEMCHAN_IOC_CONSUME`: releases every message with a sequence number below `seq`.
pub fn consume(fd: BorrowedFd<'_>, seq: u64) -> Result<(), Errno> {
    // SAFETY: IOC_CONSUME is a write ioctl whose argument points to a `u64`, as encoded in the
    // request number; `Setter` passes a pointer to its own copy of `seq`.
    unsafe { ioctl(fd, Setter::<{ abi::IOC_CONSUME }, u64>::new(seq)) }
}

/// `MEMCHAN_IOC_PRODUCER`: claims the channel as this file's producer.
pub fn claim(fd: BorrowedFd<'_>) -> Result<(), Errno> {
    // SAFETY: IOC_PRODUCER takes no argument.
    unsafe { ioctl(fd, NoArg::<{ abi::IOC_PRODUCER }>::new()) }
}

/// `MEMCHAN_IOC_DOORBELL` asking for `need` bytes of room (0: none).
pub fn doorbell(fd: BorrowedFd<'_>, need: u64) -> Result<(), Errno> {
    let need = usize::try_from(need).map_err(|_| Errno::INVAL)?;
    // SAFETY: IOC_DOORBELL takes its argument by value.
    unsafe { ioctl(fd, IntegerSetter::<{ abi::IOC_DOORBELL }>::new_usize(need)) }
}

/// The producer's writable shared mapping of a channel: the producer page, then the data area
/// mapped twice (see `abi::ProducerControl`).
#[derive(Debug)]
pub struct ProducerMap {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is memory owned by this value; writes go through `&mut self`.
unsafe impl Send for ProducerMap {}

impl ProducerMap {
    /// Maps `len` bytes of `fd` at `abi::MMAP_PRODUCER_OFFSET`, readable and writable, shared.
    pub fn new(fd: impl AsFd, len: usize) -> Result<Self, Errno> {
        // SAFETY: a fresh mapping at an address of the kernel's choosing aliases nothing in
        // this process; it is unmapped only in `drop`.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                fd,
                abi::MMAP_PRODUCER_OFFSET,
            )?
        };
        let base = NonNull::new(ptr.cast::<u8>()).ok_or(Errno::FAULT)?;
        Ok(Self { base, len })
    }

    /// The atomic `u64` at `offset` (`None` if out of range or misaligned).
    fn word(&self, offset: usize) -> Option<&AtomicU64> {
        if offset % 8 != 0 || offset.checked_add(8)? > self.len {
            return None;
        }
        // SAFETY: in bounds and 8-aligned (mappings are page-aligned); the words of the
        // producer page are only ever accessed atomically, here and by the kernel (single
        // aligned loads).
        Some(unsafe { AtomicU64::from_ptr(self.base.as_ptr().add(offset).cast()) })
    }

    /// Loads the `u64` at `offset` (relaxed: the producer reads back what it stored).
    pub fn load(&self, offset: usize) -> Option<u64> {
        Some(self.word(offset)?.load(Ordering::Relaxed))
    }

    /// Stores `v` at `offset` with release ordering (`None` if out of range).
    pub fn store_release(&mut self, offset: usize, v: u64) -> Option<()> {
        self.word(offset)?.store(v, Ordering::Release);
        Some(())
    }

    /// The `len` bytes at `offset`, to be written (`None` if out of range).
    pub fn bytes_mut(&mut self, offset: usize, len: usize) -> Option<&mut [u8]> {
        if offset.checked_add(len)? > self.len {
            return None;
        }
        // SAFETY: in bounds. Nothing else writes the data area while this file is the
        // producer: the kernel writes a claimed ring's memory not at all, the mapping is not
        // inherited by children (`VM_DONTCOPY`), and `&mut self` makes this the only borrow in
        // this process. Other processes only read these bytes (and validate what they read).
        Some(unsafe { std::slice::from_raw_parts_mut(self.base.as_ptr().add(offset), len) })
    }
}

impl Drop for ProducerMap {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are exactly the mapping made in `new`, and no borrow of it
        // outlives `self`.
        let _ = unsafe { rustix::mm::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// A full fence (`SeqCst`): the producer's store of its head before its load of `waiters`.
pub fn fence_full() {
    fence(Ordering::SeqCst);
}

/// A read-only shared mapping of a channel: control page, then the data area mapped twice.
#[derive(Debug)]
pub struct RingMap {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; every access goes through the
// methods below, which only read, with the ordering the ABI prescribes.
unsafe impl Send for RingMap {}
// SAFETY: see `Send`: shared access only reads.
unsafe impl Sync for RingMap {}

impl RingMap {
    /// Maps `len` bytes of `fd` read-only and shared.
    pub fn new(fd: impl AsFd, len: usize) -> Result<Self, Errno> {
        // SAFETY: a fresh mapping at an address of the kernel's choosing aliases nothing in
        // this process; it is unmapped only in `drop`.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ,
                MapFlags::SHARED,
                fd,
                0,
            )?
        };
        let base = NonNull::new(ptr.cast::<u8>()).ok_or(Errno::FAULT)?;
        Ok(Self { base, len })
    }

    /// Loads the aligned `u64` at `offset` with acquire ordering (`None` if out of range or
    /// misaligned).
    pub fn load_acquire(&self, offset: usize) -> Option<u64> {
        if offset % 8 != 0 || offset.checked_add(8)? > self.len {
            return None;
        }
        // SAFETY: in bounds and 8-aligned (mappings are page-aligned); the kernel updates the
        // control page with single aligned stores, so an atomic load sees whole values.
        let atomic = unsafe { AtomicU64::from_ptr(self.base.as_ptr().add(offset).cast()) };
        Some(atomic.load(Ordering::Acquire))
    }

    /// An acquire fence: orders earlier reads of record bytes before later control loads.
    pub fn fence_acquire() {
        fence(Ordering::Acquire);
    }

    /// Copies `out.len()` bytes at `offset` out of the mapping (`false` if out of range).
    ///
    /// The bytes may be changing under the copy (overwrite policy); the caller validates the
    /// copy afterwards through the control page, as the ABI describes.
    pub fn copy_out(&self, offset: usize, out: &mut [u8]) -> bool {
        let Some(end) = offset.checked_add(out.len()) else {
            return false;
        };
        if end > self.len {
            return false;
        }
        let words = if offset % 8 == 0 { out.len() / 8 } else { 0 };
        let (head, tail) = out.split_at_mut(words * 8);
        // SAFETY: `offset..end` is inside the mapping, and the word loop only runs when
        // `offset` is 8-aligned (the mapping is page-aligned). Volatile reads, because the
        // kernel may write these bytes concurrently (the caller then discards the copy).
        unsafe {
            let src = self.base.as_ptr().add(offset);
            for (i, chunk) in head.chunks_exact_mut(8).enumerate() {
                let w = std::ptr::read_volatile(src.cast::<u64>().add(i));
                chunk.copy_from_slice(&w.to_ne_bytes());
            }
            let src = src.add(words * 8);
            for (i, b) in tail.iter_mut().enumerate() {
                *b = std::ptr::read_volatile(src.add(i));
            }
        }
        true
    }

    /// Borrows `len` bytes at `offset` in place (`None` if out of range).
    ///
    /// # Safety
    ///
    /// The kernel must not write these bytes while the slice lives: true for records this
    /// file has not released (`IOC_CONSUME`) under the `block` policy.
    pub unsafe fn slice(&self, offset: usize, len: usize) -> Option<&[u8]> {
        if offset.checked_add(len)? > self.len {
            return None;
        }
        // SAFETY: in bounds; the caller guarantees that nothing writes the bytes meanwhile.
        Some(unsafe { std::slice::from_raw_parts(self.base.as_ptr().add(offset), len) })
    }
}

impl Drop for RingMap {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are exactly the mapping made in `new`, and no borrow of it
        // outlives `self`.
        let _ = unsafe { rustix::mm::munmap(self.base.as_ptr().cast(), self.len) };
    }
}
