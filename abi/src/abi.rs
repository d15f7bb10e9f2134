// SPDX-License-Identifier: GPL-2.0 OR MIT

//! Definitions shared by the memchan kernel module and userspace.
//!
//! This file is compiled twice: as the body of the `memchan-abi` crate, and as a module of the
//! kernel crate (`kernel/memchan.rs`). It must therefore use only `core` and contain nothing
//! but plain constants and `#[repr(C)]` types with fixed-width fields.

/// Version of this ABI. Bumped on any incompatible change.
pub const ABI_VERSION: u32 = 1;

/// Name of the default channel's misc device (and of the kernel module).
pub const DEVICE_NAME: &str = "memchan";

/// Path of the default channel's device node.
pub const DEVICE_PATH: &str = "/dev/memchan";

/// Largest message, in bytes, that one `write()` may carry.
///
/// Larger writes fail with `EMSGSIZE` and store nothing.
pub const MSG_MAX: u32 = 4096;
