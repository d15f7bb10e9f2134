// SPDX-License-Identifier: GPL-2.0

//! Observability: every channel's configuration and counters as sysfs attributes, one value
//! per file, in `/sys/class/misc/<device>/` (e.g. `/sys/class/misc/memchan1/messages`).
//!
//! Why sysfs: these are properties of a device, read by tools without opening the channel
//! (opening would subscribe); sysfs is where the kernel publishes device state, readable by
//! any user and stable ABI. configfs is for configuration that userspace writes (named
//! channels' settings live there), and debugfs is neither stable nor, by default, readable by
//! unprivileged users.

use core::fmt::Write;

use kernel::{
    prelude::*,
    str::Formatter, //
};

use crate::ChannelDev;

/// The attribute names.
pub(crate) const ATTRS: [&CStr; 16] = [
    c"policy",
    c"ring_bytes",
    c"msg_max",
    c"max_readers",
    c"subscribers",
    c"writers",
    c"oldest_seq",
    c"next_seq",
    c"messages",
    c"bytes",
    c"overruns",
    c"lost",
    c"blocked_writes",
    c"delivered",
    c"index",
    c"mmap_bytes",
];

/// Formats attribute `name` of `dev` into `out` (a line of text), returning its length.
pub(crate) fn show(dev: &ChannelDev, name: &CStr, out: &mut [u8]) -> Result<usize> {
    let chan = dev.channel();
    let mut f = Formatter::new(out);
    let res = match name.to_bytes() {
        b"policy" => writeln!(f, "{}", chan.policy().name()),
        b"max_readers" => writeln!(f, "{}", chan.max_readers()),
        b"index" => writeln!(f, "{}", chan.index()),
        stat => {
            let info = chan.info();
            let stats = chan.stats();
            let value = match stat {
                b"ring_bytes" => info.ring_bytes,
                b"mmap_bytes" => info.mmap_bytes,
                b"msg_max" => info.msg_max.into(),
                b"subscribers" => info.subscribers.into(),
                b"writers" => info.writers.into(),
                b"oldest_seq" => info.oldest_seq,
                b"next_seq" => info.head_seq,
                b"messages" => stats.messages,
                b"bytes" => stats.bytes,
                b"overruns" => stats.overruns,
                b"lost" => stats.lost,
                b"blocked_writes" => stats.blocked_writes,
                b"delivered" => stats.delivered,
                _ => return Err(EINVAL),
            };
            writeln!(f, "{value}")
        }
    };
    res.map_err(|_| EINVAL)?;
    Ok(f.bytes_written())
}
