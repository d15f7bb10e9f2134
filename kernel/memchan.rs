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
//! - [`sys`]: the few raw kernel accesses the safe abstractions of 7.3 do not offer yet; every
//!   `unsafe` block of the driver lives there;
//! - [`abi`]: the ABI shared with userspace (`abi/src/abi.rs`, also the `memchan-abi` crate).

#[path = "../abi/src/abi.rs"]
// Not every ABI item is used by the kernel side, and the items are `pub` for userspace.
#[allow(dead_code, unreachable_pub)]
mod abi;
mod channel;
mod file;
mod pages;
mod ring;
mod sys;

use kernel::{
    miscdevice::{
        MiscDeviceOptions,
        MiscDeviceRegistration, //
    },
    page::PAGE_SIZE,
    prelude::*,
    sync::Arc, //
};

use channel::{
    Channel,
    ChannelConfig, //
};
use file::MemchanFile;
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
    assert!(core::mem::size_of::<abi::RecordHeader>() == abi::RECORD_HEADER_SIZE as usize);
};

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
    fn new(name: &'static CStr, cfg: ChannelConfig) -> impl PinInit<Self, Error> {
        // The registration is initialised last: once it succeeds, `open` may run at once and
        // must find `chan` ready.
        try_pin_init!(Self {
            chan: Channel::new(cfg)?,
            reg <- MiscDeviceRegistration::register(MiscDeviceOptions { name }),
        })
    }

    /// The channel of this device.
    pub(crate) fn channel(&self) -> &Arc<Channel> {
        &self.chan
    }
}

/// Checks the module parameters; logs the reason and gives `EINVAL` for a bad one.
fn config() -> Result<(u32, ChannelConfig)> {
    let channels = module_parameters::channels.value();
    let ring_kib = module_parameters::ring_kib.value();
    let msg_max = module_parameters::msg_max.value();
    let policy = module_parameters::policy.value();
    let max_readers = module_parameters::max_readers.value();
    if channels == 0 || channels > abi::CHANNELS_MAX {
        pr_err!("channels={channels}: must be 1 to {}\n", abi::CHANNELS_MAX);
        return Err(EINVAL);
    }
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
    let Ok(policy) = Policy::from_abi(policy) else {
        pr_err!("policy={policy}: must be 0 (block) or 1 (overwrite)\n");
        return Err(EINVAL);
    };
    if max_readers == 0 || max_readers > 4096 {
        pr_err!("max_readers={max_readers}: must be 1 to 4096\n");
        return Err(EINVAL);
    }
    let cfg = ChannelConfig { index: 0, ring_bytes, msg_max, policy, max_readers: max_readers as usize };
    Ok((channels, cfg))
}

/// The module: owns every channel device.
struct Memchan {
    /// The channel devices, `/dev/memchan` first.
    _devs: KVec<Pin<KBox<ChannelDev>>>,
}

impl kernel::Module for Memchan {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        let (channels, cfg) = config()?;
        let mut devs = KVec::with_capacity(channels as usize, GFP_KERNEL)?;
        for (index, name) in (0..channels).zip(NAMES.iter()) {
            // On error, `devs` is dropped: the channels created so far are removed again.
            let dev = KBox::pin_init(ChannelDev::new(name, ChannelConfig { index, ..cfg }), GFP_KERNEL)
                .inspect_err(|e| pr_err!("creating /dev/{name:?}: error {}\n", e.to_errno()))?;
            devs.push(dev, GFP_KERNEL)?;
        }
        pr_info!(
            "{channels} channel(s) (/dev/memchan...), ring {} KiB, messages up to {} bytes, policy {}\n",
            cfg.ring_bytes / 1024,
            cfg.msg_max,
            cfg.policy.name()
        );
        Ok(Self { _devs: devs })
    }
}
