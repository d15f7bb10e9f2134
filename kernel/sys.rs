// SPDX-License-Identifier: GPL-2.0

//! The raw kernel accesses that the safe abstractions of Linux 7.3 do not offer yet.
//!
//! Every `unsafe` block of the driver is in this file, each with its justification:
//! - [`channel_of`]: `MiscDevice::open` receives only the registration, not the device that
//!   embeds it; recover the embedding [`ChannelDev`] with `container_of!`.
//! - [`kiocb_nonblocking`]: `Kiocb` does not expose `O_NONBLOCK` (`iocb_flags()` does not map
//!   it), so read the flag from the `struct file` behind the kiocb.
//! - [`page_write`] / [`page_read`]: `Page`'s raw accessors, for the ring pages.
//! - [`install_poll`]: 7.3's `MiscDevice` has no `poll` hook; an open file is switched to a
//!   copy of the generated file operations that adds one ([`MEMCHAN_FOPS`]).
//! - `AsBytes` for the ABI structs copied to userspace.
//! - [`vma_pgoff`]: `VmaNew` has no accessor for the mapping's file offset.

use kernel::{
    bindings,
    fs::{
        file,
        File,
        Kiocb,
        LocalFile, //
    },
    miscdevice::{
        MiscDeviceOptions,
        MiscDeviceRegistration, //
    },
    mm::virt::VmaNew,
    page::Page,
    prelude::*,
    sync::{
        poll::PollTable,
        Arc, //
    },
    transmute::AsBytes,
    types::ForeignOwnable, //
};

use crate::{
    abi,
    channel::Channel,
    file::MemchanFile,
    ChannelDev, //
};

/// Returns the channel of the device whose registration is `misc`.
pub(crate) fn channel_of(misc: &MiscDeviceRegistration<MemchanFile>) -> &Arc<Channel> {
    let reg: *const MiscDeviceRegistration<MemchanFile> = misc;
    // Lifetime: `misc_open` calls `open` under `misc_mtx`, and `misc_deregister` (run when the
    // `ChannelDev` is dropped, before its memory is freed) takes the same mutex.
    // SAFETY: A `MiscDeviceRegistration<MemchanFile>` only exists as the `reg` field of a pinned
    // `ChannelDev` (`ChannelDev::new`), which outlives `misc` (above): the result is valid.
    let dev = unsafe { &*kernel::container_of!(reg.cast_mut(), ChannelDev, reg) };
    dev.channel()
}

/// Whether the file behind `kiocb` was opened (or `fcntl`-ed) with `O_NONBLOCK`.
pub(crate) fn kiocb_nonblocking<T: ForeignOwnable>(kiocb: &Kiocb<'_, T>) -> bool {
    // `LocalFile` (not `File`): `read(2)`/`write(2)` may run inside an `fdget_pos` region.
    // SAFETY: `kiocb` wraps a valid `struct kiocb` for the whole callback, and its `ki_filp` is
    // the file being read or written, kept alive by the caller's reference.
    let file = unsafe { LocalFile::from_raw_file((*kiocb.as_raw()).ki_filp) };
    file.flags() & file::flags::O_NONBLOCK != 0
}

/// Copies `src` into `page` at `offset` (`EINVAL` if out of the page).
///
/// Callers hold the owning channel's ring lock, which serialises every kernel access to the
/// ring pages (the `&mut`/`&` receivers of `PageRing` encode that).
pub(crate) fn page_write(page: &Page, offset: usize, src: &[u8]) -> Result {
    // Userspace may read the page through a read-only mapping: outside the Rust memory model,
    // like any user access; the ring's publication protocol covers it.
    // SAFETY: `src` is valid for `src.len()` bytes; no other kernel code accesses the page
    // concurrently: ring pages are only touched through `PageRing`, under the ring lock.
    unsafe { page.write_raw(src.as_ptr(), offset, src.len()) }
}

/// Copies from `page` at `offset` into `dst` (`EINVAL` if out of the page).
pub(crate) fn page_read(page: &Page, offset: usize, dst: &mut [u8]) -> Result {
    // SAFETY: `dst` is valid for writing `dst.len()` bytes; no concurrent kernel write to the
    // page, as for `page_write`.
    unsafe { page.read_raw(dst.as_mut_ptr(), offset, dst.len()) }
}

/// The mapping's offset into the file, in pages.
pub(crate) fn vma_pgoff(vma: &VmaNew) -> usize {
    // SAFETY: `vma` refers to a valid VMA under construction, and `vm_pgoff` is a plain field
    // set by `mmap_region` before calling the driver's `mmap` hook; reading it is a plain load.
    unsafe { (*vma.as_ptr()).vm_pgoff }
}

/// `poll` event bits (`include/uapi/asm-generic/poll.h`), as the VFS expects them.
pub(crate) const POLLIN: u32 = bindings::POLLIN;
/// See [`POLLIN`].
pub(crate) const POLLPRI: u32 = bindings::POLLPRI;
/// See [`POLLIN`].
pub(crate) const POLLOUT: u32 = bindings::POLLOUT;
/// See [`POLLIN`].
pub(crate) const POLLERR: u32 = bindings::POLLERR;
/// See [`POLLIN`].
pub(crate) const POLLRDNORM: u32 = bindings::POLLRDNORM;
/// See [`POLLIN`].
pub(crate) const POLLWRNORM: u32 = bindings::POLLWRNORM;

/// Immutable file operations: plain function pointers and the owning module.
struct SyncFops(bindings::file_operations);

// SAFETY: The table is never written after its (compile-time) initialisation and contains only
// function pointers and a pointer to this module, which are safe to share between threads.
unsafe impl Sync for SyncFops {}

/// The `MiscDevice`-generated file operations of [`MemchanFile`] plus `poll`.
static MEMCHAN_FOPS: SyncFops = SyncFops(bindings::file_operations {
    poll: Some(memchan_poll),
    // SAFETY: `into_raw` returns a `miscdevice` whose `fops` points to the `'static` constant
    // vtable the `MiscDevice` machinery builds for `MemchanFile`; reading it at compile time
    // copies that table.
    ..unsafe { *MiscDeviceOptions { name: c"memchan" }.into_raw::<MemchanFile>().fops }
});

/// Switches `file`, while it is being opened, to [`MEMCHAN_FOPS`] so that it supports `poll`.
///
/// Must be the last step of `MemchanFile::open`, after everything that can fail.
pub(crate) fn install_poll(file: &File) {
    // `do_dentry_open` reads `f_op` again after `->open` returns (as after `misc_open` replaces
    // it); the new table has the same owner module, so `fops_put` in `__fput` stays balanced.
    // SAFETY: Inside `->open` the file is in no file table yet: nothing reads `f_op`
    // concurrently. Same owner and same `private_data` contract as the table it replaces.
    unsafe { (*file.as_ptr()).f_op = &MEMCHAN_FOPS.0 };
}

/// `poll` for memchan files (see [`install_poll`]).
///
/// # Safety
///
/// Called by the VFS with a valid open memchan `file` (whose `private_data` is the
/// `Pin<KBox<MemchanFile>>` stored by the `MiscDevice` open trampoline) and a valid or null
/// poll table.
unsafe extern "C" fn memchan_poll(
    file: *mut bindings::file,
    wait: *mut bindings::poll_table_struct,
) -> bindings::__poll_t {
    // SAFETY: Per this function's contract `file` is valid and open, so `private_data` holds the
    // foreign-owned `Pin<KBox<MemchanFile>>`, which lives until `release`, after any poll.
    let me = unsafe { <Pin<KBox<MemchanFile>> as ForeignOwnable>::borrow((*file).private_data) };
    // SAFETY: `file` is valid for the duration of this call; `poll` is not called inside an
    // `fdget_pos` region, so `File` is appropriate.
    let file = unsafe { File::from_raw_file(file) };
    // SAFETY: `wait` is a valid (or null) poll table for the duration of this call.
    let table = unsafe { PollTable::from_raw(wait) };
    me.poll(file, table)
}

// SAFETY: Plain `#[repr(C)]` structs of integer fields without padding: any bit pattern is
// valid, and every byte is initialised.
unsafe impl AsBytes for abi::ChannelInfo {}
// SAFETY: As above.
unsafe impl AsBytes for abi::ChannelStats {}
// SAFETY: As above.
unsafe impl AsBytes for abi::ReaderState {}
