// SPDX-License-Identifier: GPL-2.0

//! memchan: message channels on character devices.
//!
//! A process writes a message to `/dev/memchan` (one `write()` is one message) and every
//! process that has the channel open for reading receives it with one `read()`, `poll()`,
//! or directly from a read-only mapping of the channel's ring.
//!
//! Layout of the driver, from the device node down to memory (each module uses only those
//! listed after it; `docs/architecture.md` follows a message through them):
//! - [`named`]: channels created at run time through configfs
//!   (`mkdir /sys/kernel/config/memchan/<name>` makes `/dev/memchan-<name>`);
//! - [`device`]: a channel's device node: misc device registration, the file operations table
//!   (with `poll`), `open`, sysfs attributes;
//! - [`file`]: an open file's state and operations (`read`, `write`, ioctls, `mmap`);
//! - [`access`]: who may open a channel and change its policy;
//! - [`observe`]: every channel's settings and counters in sysfs;
//! - [`channel`]: one channel: locking, waiting, waking, and the operations files perform;
//! - [`seats`]: who holds a channel open (subscriber seats, writers), taken at `open()` without
//!   the ring lock;
//! - [`pages`]: the pages behind a ring and how they are mapped into userspace;
//! - [`ring`]: the broadcast ring: records, subscriber cursors, overflow policy, and the
//!   producer take protocol (`ring/take.rs`) (pure logic, KUnit-tested in `ring/tests.rs`);
//! - [`memory`]: the channel's memory and the raw, bounds-checked accesses to it;
//! - [`abi`]: the ABI shared with userspace (`abi/src/abi.rs`, also the `memchan-abi` crate).
//!
//! Beside them, [`compat`] holds what differs between the kernel versions memchan builds
//! against (7.2 and 7.3), selected by the cfgs `Kbuild` derives from the kernel's version.
//!
//! Unsafe code is next to the concept that needs it, each block with its reason: raw misc
//! registration, sysfs and `poll` in `device`, the user copy into the ring (and rewinding the
//! iterator after a failed one) in `file`, credential checks in `access`, ring memory in
//! `memory`, the mapping offset in `pages`, byte views of the ABI structs in `abi`.

mod abi;
mod access;
mod channel;
mod compat;
mod device;
mod file;
mod memory;
mod named;
mod observe;
mod pages;
mod ring;
mod seats;

use kernel::{
    configfs,
    prelude::*,
    str::CString, //
};

use channel::{
    Channel,
    ChannelConfig,
    Sizes, //
};
use device::ChannelDev;
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
            description: "Under block: overrun the slowest readers after a writer waits N ms",
        },
    },
}

/// Device names: channel 0 is `memchan`, channel `i` is `memchan<i>`.
const NAMES: [&CStr; abi::CHANNELS_MAX as usize] = [
    c"memchan",
    c"memchan1",
    c"memchan2",
    c"memchan3",
    c"memchan4",
    c"memchan5",
    c"memchan6",
    c"memchan7",
    c"memchan8",
    c"memchan9",
    c"memchan10",
    c"memchan11",
    c"memchan12",
    c"memchan13",
    c"memchan14",
    c"memchan15",
];

/// Checks the module parameters; logs the reason and gives `EINVAL` for a bad one.
fn config() -> Result<(u32, ChannelConfig)> {
    let channels = compat::param(&module_parameters::channels);
    let policy = compat::param(&module_parameters::policy);
    if channels == 0 || channels > abi::CHANNELS_MAX {
        pr_err!("channels={channels}: must be 1 to {}\n", abi::CHANNELS_MAX);
        return Err(EINVAL);
    }
    let Ok(policy) = Policy::from_abi(policy) else {
        pr_err!("policy={policy}: must be 0 (block) or 1 (overwrite)\n");
        return Err(EINVAL);
    };
    let sizes = Sizes {
        ring_kib: compat::param(&module_parameters::ring_kib),
        msg_max: compat::param(&module_parameters::msg_max),
        max_readers: compat::param(&module_parameters::max_readers),
    };
    let cfg = ChannelConfig::checked(
        sizes,
        policy,
        compat::param(&module_parameters::stall_ms),
        compat::param(&module_parameters::readers_per_user),
    )?;
    Ok((channels, cfg))
}

/// Creates the load-time channels `/dev/memchan`, `/dev/memchan1`, ...
fn devices(channels: u32, cfg: ChannelConfig) -> Result<KVec<Pin<KBox<ChannelDev>>>> {
    let mut devs = KVec::with_capacity(channels as usize, GFP_KERNEL)?;
    for (index, name) in (0..channels).zip(NAMES.iter()) {
        // On error, `devs` is dropped: the channels created so far are removed again.
        let dev = CString::try_from(*name)
            .map_err(Error::from)
            .and_then(|owned| {
                let chan = Channel::new(ChannelConfig { index, ..cfg })?;
                KBox::pin_init(ChannelDev::new(owned, 0, chan, None), GFP_KERNEL)
            });
        let dev =
            dev.inspect_err(|e| pr_err!("creating /dev/{name:?}: error {}\n", e.to_errno()))?;
        devs.push(dev, GFP_KERNEL)?;
    }
    pr_info!(
        "{channels} channel(s) (/dev/memchan...), ring {} KiB, msg_max {}, policy {}\n",
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
