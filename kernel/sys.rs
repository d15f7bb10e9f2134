// SPDX-License-Identifier: GPL-2.0

//! The raw kernel accesses that the safe abstractions of Linux 7.3 do not offer yet.
//!
//! Every `unsafe` block of the driver is in this file, each with its justification:
//! - [`channel_of`]: `MiscDevice::open` receives only the registration, not the device that
//!   embeds it; recover the embedding [`ChannelDev`] with `container_of!`.
//! - [`kiocb_nonblocking`]: `Kiocb` does not expose `O_NONBLOCK` (`iocb_flags()` does not map
//!   it), so read the flag from the `struct file` behind the kiocb.

use kernel::{
    fs::{
        file,
        Kiocb,
        LocalFile, //
    },
    miscdevice::MiscDeviceRegistration,
    sync::Arc,
    types::ForeignOwnable, //
};

use crate::{
    channel::Channel,
    file::MemchanFile,
    ChannelDev, //
};

/// Returns the channel of the device whose registration is `misc`.
pub(crate) fn channel_of(misc: &MiscDeviceRegistration<MemchanFile>) -> &Arc<Channel> {
    let reg: *const MiscDeviceRegistration<MemchanFile> = misc;
    // SAFETY: A `MiscDeviceRegistration<MemchanFile>` is only ever created as the `reg` field of
    // a pinned `ChannelDev` (see `ChannelDev::new`), so stepping back by the field offset stays
    // inside that allocation and yields a valid `ChannelDev`. It lives at least as long as
    // `misc`: `misc_open` calls `open` under `misc_mtx`, and `misc_deregister` (run when the
    // `ChannelDev` is dropped, before its memory is freed) takes the same mutex.
    let dev = unsafe { &*kernel::container_of!(reg.cast_mut(), ChannelDev, reg) };
    dev.channel()
}

/// Whether the file behind `kiocb` was opened (or `fcntl`-ed) with `O_NONBLOCK`.
pub(crate) fn kiocb_nonblocking<T: ForeignOwnable>(kiocb: &Kiocb<'_, T>) -> bool {
    // SAFETY: `kiocb` wraps a valid `struct kiocb` for the duration of the read or write
    // callback, and its `ki_filp` points to the file being read or written, which the caller's
    // file reference keeps alive. `LocalFile` (not `File`) is right because `read(2)`/`write(2)`
    // may run inside an `fdget_pos` region of this thread.
    let file = unsafe { LocalFile::from_raw_file((*kiocb.as_raw()).ki_filp) };
    file.flags() & file::flags::O_NONBLOCK != 0
}
