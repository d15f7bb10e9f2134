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

use crate::channel::Channel;

/// The attributes and their permission bits. The configuration is public (as in configfs);
/// the traffic counters are root's alone: a channel's activity is information about the users
/// of a channel that the reader may not be allowed to open, and reading the counters takes the
/// ring lock, which no one without access should contend for. Users with access to a channel
/// read the same counters with `MEMCHAN_IOC_INFO`/`MEMCHAN_IOC_STATS`.
pub(crate) const ATTRS: [(&CStr, u16); 16] = [
    (c"policy", PUBLIC),
    (c"ring_bytes", PUBLIC),
    (c"msg_max", PUBLIC),
    (c"max_readers", PUBLIC),
    (c"subscribers", ROOT),
    (c"writers", ROOT),
    (c"oldest_seq", ROOT),
    (c"next_seq", ROOT),
    (c"messages", ROOT),
    (c"bytes", ROOT),
    (c"overruns", ROOT),
    (c"lost", ROOT),
    (c"blocked_writes", ROOT),
    (c"delivered", ROOT),
    (c"index", PUBLIC),
    (c"mmap_bytes", PUBLIC),
];

/// Readable by anyone.
const PUBLIC: u16 = 0o444;
/// Readable by root.
const ROOT: u16 = 0o400;

/// Formats attribute `name` of `chan` into `out` (a line of text), returning its length.
pub(crate) fn show(chan: &Channel, name: &CStr, out: &mut [u8]) -> Result<usize> {
    let mut f = Formatter::new(out);
    let res = match name.to_bytes() {
        // The configuration, without the ring lock.
        b"policy" => writeln!(f, "{}", chan.policy().name()),
        b"max_readers" => writeln!(f, "{}", chan.max_readers()),
        b"index" => writeln!(f, "{}", chan.index()),
        b"ring_bytes" => writeln!(f, "{}", chan.ring_bytes()),
        b"mmap_bytes" => writeln!(f, "{}", chan.mmap_bytes()),
        b"msg_max" => writeln!(f, "{}", chan.msg_max()),
        // The counters (root only), one consistent snapshot each.
        stat => {
            let info = chan.info();
            let stats = chan.stats();
            let value = match stat {
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
