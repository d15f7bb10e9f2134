// SPDX-License-Identifier: GPL-2.0

//! The ABI shared with userspace, as the kernel uses it: the layout and limits of
//! `abi/src/abi.rs` (also the `memchan-abi` crate, whose tests check it against the C header),
//! which structs may be copied to and from userspace as bytes, and the ioctl encoding checked
//! against the kernel's own macros.

use kernel::transmute::{
    AsBytes,
    FromBytes, //
};

#[path = "../abi/src/abi.rs"]
// Not every ABI item is used by the kernel side, and the items are `pub` for userspace.
#[allow(dead_code, unreachable_pub)]
mod layout;

pub(crate) use layout::*;

// SAFETY: `repr(C)` of `u64` and `u32` fields laid out without padding (the ABI tests check
// size and offsets against the C header): every byte is initialised.
unsafe impl AsBytes for ChannelInfo {}
// SAFETY: `repr(C)` of two `u32` then `u64` fields: no padding, every byte is initialised.
unsafe impl AsBytes for ChannelStats {}
// SAFETY: `repr(C)` of `u64` and `u32` fields laid out without padding (checked against the C
// header by the ABI tests): every byte is initialised.
unsafe impl AsBytes for ReaderState {}
// SAFETY: `repr(C)` of two `u64` fields, no padding: every bit pattern is a valid value.
unsafe impl FromBytes for SendBatch {}
// SAFETY: `repr(C)` of two `u64` fields, no padding: every byte is initialised.
unsafe impl AsBytes for SendBatch {}

// The ABI's ioctl encoding must match the kernel's.
const _: () = {
    use kernel::ioctl::{_IO, _IOR, _IOW};
    let m = IOC_MAGIC;
    assert!(IOC_INFO == _IOR::<ChannelInfo>(m, 1));
    assert!(IOC_STATS == _IOR::<ChannelStats>(m, 2));
    assert!(IOC_READER == _IOR::<ReaderState>(m, 3));
    assert!(IOC_SEEK == _IO(m, 4));
    assert!(IOC_SET_POLICY == _IO(m, 5));
    assert!(IOC_RECORD_MODE == _IO(m, 6));
    assert!(IOC_CONSUME == _IOW::<u64>(m, 7));
    assert!(IOC_SEND_BATCH == _IOW::<SendBatch>(m, 8));
    assert!(IOC_PRODUCER == _IO(m, 9));
    assert!(IOC_DOORBELL == _IO(m, 10));
};
