// SPDX-License-Identifier: GPL-2.0

//! memchan: message channels on character devices.
//!
//! A process writes a message to `/dev/memchan` (one `write()` is one message) and every
//! process that has the channel open for reading receives it with one `read()`, `poll()`,
//! or directly from a read-only mapping of the channel's ring.
//!
//! Layout of the driver:
//! - [`ring`]: the broadcast ring: records, subscriber cursors, overflow policy (pure logic,
//!   KUnit-tested);
//! - [`pages`]: the pages behind a ring and how they are mapped into userspace;
//! - [`channel`]: one channel: locking, waiting, waking, and the operations files perform;
//! - [`file`]: the file operations of an open `/dev/memchan*` (the `MiscDevice` impl);
//! - [`named`]: channels created at run time through configfs
//!   (`mkdir /sys/kernel/config/memchan/<name>` makes `/dev/memchan-<name>`);
//! - [`observe`]: every channel's settings and counters in sysfs;
//! - [`sys`]: the few raw kernel accesses the safe abstractions of 7.3 do not offer yet; every
//!   `unsafe` block of the driver lives there;
//! - [`abi`]: the ABI shared with userspace (`abi/src/abi.rs`, also the `memchan-abi` crate).

#[path = "../abi/src/abi.rs"]
// Not every ABI item is used by the kernel side, and the items are `pub` for userspace.
#[allow(dead_code, unreachable_pub)]
mod abi;
mod channel;
mod file;
mod named;
mod observe;
mod pages;
mod ring;
mod sys;

use kernel::{
    configfs,
    fs::File,
    page::PAGE_SIZE,
    prelude::*,
    new_spinlock,
    str::CString,
    sync::{
        atomic::{
            Atomic,
            Relaxed, //
        },
        Arc,
        SpinLock, //
    }, //
};

use channel::{
    Channel,
    ChannelConfig, //
};
use ring::Policy;

module! {
    type: Memchan,
    name: "memchan",
    authors: ["memchan developers"],
    description: "memchan: broadcast message channels on character devices",
    license: "GPL",
    params: {
        channels: u32 {
            default: 4,
            description: "Number of channels (1-16): /dev/memchan, /dev/memchan1, ...",
        },
        ring_kib: u32 {
            default: 64,
            description: "Ring size per channel in KiB (power of two, 4-16384)",
        },
        msg_max: u32 {
            default: 4096,
            description: "Largest message in bytes (1 to what fits in the ring)",
        },
        policy: u32 {
            default: 1,
            description: "Initial overflow policy: 0 = block, 1 = overwrite",
        },
        max_readers: u32 {
            default: 128,
            description: "Subscriber limit per channel (1-4096)",
        },
        readers_per_user: u32 {
            default: 0,
            description: "Subscriber limit per user and channel (0: only max_readers)",
        },
        stall_ms: u32 {
            default: 0,
            description: "Under block, drop the slowest readers to an overrun once a writer waited this long (ms; 0: never)",
        },
    },
}

/// Device names: channel 0 is `memchan`, channel `i` is `memchan<i>`.
const NAMES: [&CStr; abi::CHANNELS_MAX as usize] = [
    c"memchan", c"memchan1", c"memchan2", c"memchan3", c"memchan4", c"memchan5", c"memchan6",
    c"memchan7", c"memchan8", c"memchan9", c"memchan10", c"memchan11", c"memchan12",
    c"memchan13", c"memchan14", c"memchan15",
];

// The ABI's ioctl encoding must match the kernel's.
const _: () = {
    use kernel::ioctl::{_IO, _IOR, _IOW};
    let m = abi::IOC_MAGIC;
    assert!(abi::IOC_INFO == _IOR::<abi::ChannelInfo>(m, 1));
    assert!(abi::IOC_STATS == _IOR::<abi::ChannelStats>(m, 2));
    assert!(abi::IOC_READER == _IOR::<abi::ReaderState>(m, 3));
    assert!(abi::IOC_SEEK == _IO(m, 4));
    assert!(abi::IOC_SET_POLICY == _IO(m, 5));
    assert!(abi::IOC_RECORD_MODE == _IO(m, 6));
    assert!(abi::IOC_CONSUME == _IOW::<u64>(m, 7));
    assert!(abi::IOC_SEND_BATCH == _IOW::<abi::SendBatch>(m, 8));
    assert!(core::mem::size_of::<abi::RecordHeader>() == abi::RECORD_HEADER_SIZE as usize);
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

/// One channel exposed as a misc device node.
#[pin_data(PinnedDrop)]
pub(crate) struct ChannelDev {
    /// The misc device registration; declared first so that it is dropped (deregistered,
    /// so no new `open` can start) before the rest of the device goes away.
    #[pin]
    reg: sys::Registration,
    /// The channel state; every open file holds a reference of its own.
    chan: Arc<Channel>,
    /// Access rule checked at open (named channels); `None`: the node's permissions alone. A
    /// spinlock, so that `open` sees the three values of one configfs update, never a mix.
    #[pin]
    access: SpinLock<Option<Access>>,
    /// Whether dropping the device closes the channel (see [`ChannelDev::retire`]).
    close_on_drop: Atomic<bool>,
}

impl ChannelDev {
    /// Registers the device node `/dev/<name>` of `chan` (node permission bits `mode`, 0 for
    /// the default).
    pub(crate) fn new(
        name: CString,
        mode: u16,
        chan: Arc<Channel>,
        access: Option<Access>,
    ) -> impl PinInit<Self, Error> {
        // The registration is initialised last: once it succeeds, `open` may run at once and
        // must find `chan` ready.
        try_pin_init!(Self {
            chan,
            access <- new_spinlock!(access, "memchan::access"),
            close_on_drop: Atomic::new(true),
            reg <- sys::Registration::new(name, mode),
        })
    }

    /// Removes the device node but keeps the channel open, handing it back. Once this returns,
    /// every `open` of the node has finished (`misc_deregister` waits for them), so the
    /// channel's users are all known.
    pub(crate) fn retire(dev: Pin<KBox<Self>>) -> Arc<Channel> {
        dev.close_on_drop.store(false, Relaxed);
        let chan = dev.chan.clone();
        drop(dev);
        chan
    }

    /// The channel of this device.
    pub(crate) fn channel(&self) -> &Arc<Channel> {
        &self.chan
    }

    /// The access rule now, for a named channel.
    fn access(&self) -> Option<Access> {
        *self.access.lock()
    }

    /// Changes the access rule of a named channel (no effect on a load-time channel's).
    pub(crate) fn change_access(&self, change: impl FnOnce(&mut Access)) {
        let mut access = self.access.lock();
        if let Some(a) = Option::as_mut(&mut *access) {
            change(a);
        }
    }

    /// `EACCES` unless the opener of `file` may read (`want` 4), write (2) or both; else
    /// whether the opener owns the channel, both decided by one snapshot of the access rule.
    ///
    /// Owning is being the owner of a named channel (its `uid` attribute) at open time. A
    /// load-time channel has no owner but root: the owner of a node says nothing (any node with
    /// its device number opens it, such as one a container runtime made). Owners and holders
    /// of `CAP_SYS_ADMIN` change a channel's policy.
    pub(crate) fn admit(&self, file: &File, want: u32) -> Result<bool> {
        match self.access() {
            Some(a) if !sys::permits(file, a.uid, a.gid, a.mode, want) => Err(EACCES),
            Some(a) => Ok(sys::opener_fsuid(file) == a.uid),
            None => Ok(false),
        }
    }
}

#[pinned_drop]
impl PinnedDrop for ChannelDev {
    fn drop(self: Pin<&mut Self>) {
        // Files still open on the channel see it removed (end of file, `POLLHUP`, `ENODEV`).
        if self.close_on_drop.load(Relaxed) {
            self.chan.close();
        }
    }
}

/// Checks the module parameters; logs the reason and gives `EINVAL` for a bad one.
fn config() -> Result<(u32, ChannelConfig)> {
    let channels = module_parameters::channels.value();
    let policy = module_parameters::policy.value();
    if channels == 0 || channels > abi::CHANNELS_MAX {
        pr_err!("channels={channels}: must be 1 to {}\n", abi::CHANNELS_MAX);
        return Err(EINVAL);
    }
    let Ok(policy) = Policy::from_abi(policy) else {
        pr_err!("policy={policy}: must be 0 (block) or 1 (overwrite)\n");
        return Err(EINVAL);
    };
    let cfg = ChannelConfig::checked(
        0,
        module_parameters::ring_kib.value(),
        module_parameters::msg_max.value(),
        module_parameters::max_readers.value(),
        policy,
    )?;
    Ok((channels, cfg))
}

impl ChannelConfig {
    /// A channel configuration from sizes given by the user (module parameters or configfs
    /// attributes); logs the reason and gives `EINVAL` for a bad one.
    pub(crate) fn checked(
        index: u32,
        ring_kib: u32,
        msg_max: u32,
        max_readers: u32,
        policy: Policy,
    ) -> Result<Self> {
        let ring_bytes = u64::from(ring_kib) * 1024;
    if !ring_kib.is_power_of_two()
        || !(abi::RING_KIB_MIN..=abi::RING_KIB_MAX).contains(&ring_kib)
        || ring_bytes < PAGE_SIZE as u64
    {
        pr_err!(
            "ring_kib={ring_kib}: must be a power of two from {} to {} (and at least a page)\n",
            abi::RING_KIB_MIN,
            abi::RING_KIB_MAX
        );
        return Err(EINVAL);
    }
    if msg_max == 0 || abi::record_size(msg_max) > ring_bytes {
        pr_err!("msg_max={msg_max}: must be at least 1 and fit in the {ring_kib} KiB ring\n");
        return Err(EINVAL);
    }
    if max_readers == 0 || max_readers > MAX_READERS {
        pr_err!("max_readers={max_readers}: must be 1 to {MAX_READERS}\n");
        return Err(EINVAL);
    }
    Ok(Self {
        index,
        ring_bytes,
        msg_max,
        policy,
        max_readers: max_readers as usize,
        stall_ms: module_parameters::stall_ms.value(),
        readers_per_user: module_parameters::readers_per_user.value(),
    })
    }
}

/// Largest subscriber limit a channel may have.
const MAX_READERS: u32 = 4096;

/// Creates the load-time channels `/dev/memchan`, `/dev/memchan1`, ...
fn devices(channels: u32, cfg: ChannelConfig) -> Result<KVec<Pin<KBox<ChannelDev>>>> {
    let mut devs = KVec::with_capacity(channels as usize, GFP_KERNEL)?;
    for (index, name) in (0..channels).zip(NAMES.iter()) {
        // On error, `devs` is dropped: the channels created so far are removed again.
        let dev = CString::try_from(*name).map_err(Error::from).and_then(|owned| {
            let chan = Channel::new(ChannelConfig { index, ..cfg })?;
            KBox::pin_init(ChannelDev::new(owned, 0, chan, None), GFP_KERNEL)
        });
        let dev = dev.inspect_err(|e| pr_err!("creating /dev/{name:?}: error {}\n", e.to_errno()))?;
        devs.push(dev, GFP_KERNEL)?;
    }
    pr_info!(
        "{channels} channel(s) (/dev/memchan...), ring {} KiB, messages up to {} bytes, policy {}\n",
        cfg.ring_bytes / 1024,
        cfg.msg_max,
        cfg.policy.name()
    );
    Ok(devs)
}

/// The module: owns the load-time channel devices and the configfs subsystem of the named ones.
#[pin_data]
struct Memchan {
    /// `/sys/kernel/config/memchan`; unregistered first on unload (configfs holds a module
    /// reference while it has children, so by then there are none).
    #[pin]
    named: configfs::Subsystem<named::Named>,
    /// The load-time channel devices, `/dev/memchan` first.
    _devs: KVec<Pin<KBox<ChannelDev>>>,
}

impl kernel::InPlaceModule for Memchan {
    fn init(_module: &'static ThisModule) -> impl PinInit<Self, Error> {
        let cfg = config();
        try_pin_init!(Self {
            _devs: {
                let (channels, cfg) = cfg?;
                devices(channels, cfg)?
            },
            named <- named::subsystem(cfg?.1),
        })
    }
}
