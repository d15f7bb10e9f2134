// SPDX-License-Identifier: GPL-2.0

//! Who may do what with a channel: the access rule of a named channel, checked at `open` like a
//! file's permissions, and what the opener of a file was granted and holds.
//!
//! The credential checks are raw calls: 7.3 has no safe accessor for the opener's `fsuid`, for
//! `in_group_p` or `capable`, or for a file's `f_mode`.

use kernel::{
    bindings,
    fs::{
        file::flags::{
            O_ACCMODE,
            O_RDONLY,
            O_WRONLY, //
        },
        File, //
    }, //
};

/// Who may open a named channel: owner, group and permission bits, checked by `open` like a
/// file's (the device node of a named channel is created `0666`; these are the real gate).
#[derive(Clone, Copy)]
pub(crate) struct Access {
    /// Owning user id.
    pub(crate) uid: u32,
    /// Owning group id.
    pub(crate) gid: u32,
    /// Permission bits (`0o777` at most; only the read and write bits matter).
    pub(crate) mode: u32,
}

/// What an open asks for: the permission bits of `mode` it needs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Want(u32);

impl Want {
    /// Reading.
    pub(crate) const READ: Self = Self(4);
    /// Writing.
    pub(crate) const WRITE: Self = Self(2);
    /// Both (also access mode 3, which some tools use for ioctl-only opens).
    pub(crate) const BOTH: Self = Self(6);

    /// What the open of `file` asks for, by its access mode.
    pub(crate) fn of(file: &File) -> Self {
        match file.flags() & O_ACCMODE {
            O_RDONLY => Self::READ,
            O_WRONLY => Self::WRITE,
            _ => Self::BOTH,
        }
    }
}

impl Access {
    /// Whether the opener of `file` may open it for `want`, like a file's permission check
    /// (owner, then group, then other bits; `CAP_DAC_OVERRIDE` passes). Ids are kernel ids (the
    /// initial user namespace).
    pub(crate) fn permits(&self, file: &File, want: Want) -> bool {
        let bits = if opener_fsuid(file) == self.uid {
            self.mode >> 6
        // SAFETY: `open` runs in the opener's context; `in_group_p` reads the current credential.
        } else if unsafe { bindings::in_group_p(bindings::kgid_t { val: self.gid }) } != 0 {
            self.mode >> 3
        } else {
            self.mode
        };
        // SAFETY: `capable` may be called from process context with any capability number.
        bits & want.0 == want.0 || unsafe { bindings::capable(bindings::CAP_DAC_OVERRIDE as i32) }
    }
}

/// The opener's filesystem user id (kernel id, initial user namespace).
pub(crate) fn opener_fsuid(file: &File) -> u32 {
    // SAFETY: `file.cred()` is the opener's credential, valid while `file` is; `fsuid` is never
    // changed after the credential is set up.
    unsafe { (*file.cred().as_ptr()).fsuid.val }
}

/// Whether the opener of `file` had `CAP_SYS_ADMIN` (in the initial user namespace), as
/// `file_ns_capable` judges it: the credential the file was opened with, not the task that
/// uses it now, so a file handed to a privileged process confers nothing.
pub(crate) fn opener_capable_sys_admin(file: &File) -> bool {
    // SAFETY: `file` is a valid open file; `init_user_ns` is a static that lives forever;
    // `file_ns_capable` only reads both.
    unsafe {
        bindings::file_ns_capable(
            file.as_ptr(),
            &raw mut bindings::init_user_ns,
            bindings::CAP_SYS_ADMIN as i32,
        )
    }
}

/// Whether the VFS opened `file` for reading and for writing (`FMODE_READ`, `FMODE_WRITE`).
pub(crate) fn granted(file: &File) -> (bool, bool) {
    // SAFETY: `file` is valid; `f_mode` is an aligned `u32` (the VFS may set other bits of it
    // concurrently, never the read and write bits after open), read with one volatile load.
    let mode = unsafe { (&raw const (*file.as_ptr()).f_mode).read_volatile() };
    (mode & FMODE_READ != 0, mode & FMODE_WRITE != 0)
}

/// `FMODE_READ` (`include/linux/fs.h`; a cast in a macro, which bindgen does not translate).
const FMODE_READ: u32 = 1 << 0;
/// `FMODE_WRITE`.
const FMODE_WRITE: u32 = 1 << 1;
