// SPDX-License-Identifier: GPL-2.0

//! memchan: message channels on character devices.
//!
//! A process writes a message to `/dev/memchan` (one `write()` is one message) and a reader
//! blocked in `read()` wakes up and receives it.
//!
//! Layout of the driver:
//! - [`channel`]: the state of one channel and its message semantics (no FFI);
//! - [`file`]: the file operations of an open `/dev/memchan*` (the `MiscDevice` impl);
//! - [`sys`]: the few raw kernel accesses the safe abstractions of 7.3 do not offer yet; every
//!   `unsafe` block of the driver lives there;
//! - [`abi`]: the ABI shared with userspace (`abi/src/abi.rs`, also the `memchan-abi` crate).

#[path = "../abi/src/abi.rs"]
// Not every ABI item is used by the kernel side, and the items are `pub` for userspace.
#[allow(dead_code, unreachable_pub)]
mod abi;
mod channel;
mod file;
mod sys;

use kernel::{
    miscdevice::{
        MiscDeviceOptions,
        MiscDeviceRegistration, //
    },
    prelude::*,
    sync::Arc, //
};

use channel::Channel;
use file::MemchanFile;

module! {
    type: Memchan,
    name: "memchan",
    authors: ["memchan developers"],
    description: "memchan: message channels on character devices",
    license: "GPL",
}

/// One channel exposed as a misc device node.
#[pin_data]
pub(crate) struct ChannelDev {
    /// The misc device registration; declared first so that it is dropped (deregistered,
    /// so no new `open` can start) before the rest of the device goes away.
    #[pin]
    reg: MiscDeviceRegistration<MemchanFile>,
    /// The channel state; every open file holds a reference of its own.
    chan: Arc<Channel>,
}

impl ChannelDev {
    /// Creates the channel and registers its device node `/dev/<name>`.
    fn new(name: &'static CStr) -> impl PinInit<Self, Error> {
        // The registration is initialised last: once it succeeds, `open` may run at once and
        // must find `chan` ready.
        try_pin_init!(Self {
            chan: Channel::new()?,
            reg <- MiscDeviceRegistration::register(MiscDeviceOptions { name }),
        })
    }

    /// The channel of this device.
    pub(crate) fn channel(&self) -> &Arc<Channel> {
        &self.chan
    }
}

/// The module: owns every channel device.
#[pin_data]
struct Memchan {
    /// The default channel, `/dev/memchan`.
    #[pin]
    default: ChannelDev,
}

impl kernel::InPlaceModule for Memchan {
    fn init(_module: &'static ThisModule) -> impl PinInit<Self, Error> {
        pr_info!("loading: one channel, messages up to {} bytes\n", abi::MSG_MAX);
        try_pin_init!(Self {
            default <- ChannelDev::new(c"memchan"),
        })
    }
}
