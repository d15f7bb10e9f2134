// SPDX-License-Identifier: GPL-2.0

//! Named channels, created and removed at run time through configfs.
//!
//! - `mkdir /sys/kernel/config/memchan/<name>` creates a channel and its device node
//!   `/dev/memchan-<name>` at once, with the module parameters' sizes and policy, owned by
//!   root with mode `0600`. Names are 1 to [`NAME_MAX`] characters of `A-Z a-z 0-9 _ . -`,
//!   starting with a letter or digit (`EINVAL`, `ENAMETOOLONG`); an existing name gives
//!   `EEXIST`; at most [`NAMED_MAX`] named channels exist at once (`ENOSPC`).
//! - Attributes in that directory: `device` (the node's name, read-only); `ring_kib`,
//!   `msg_max`, `max_readers` (writable while no file has the channel open, else `EBUSY`: the
//!   channel is then re-created with the new sizes and an empty ring, under the same node name);
//!   `policy` (`block` or `overwrite`, writable at any time, like `MEMCHAN_IOC_SET_POLICY`);
//!   `uid`, `gid`, `mode` (octal): who may open the channel, checked by `open` like a file's
//!   owner and mode (writable at any time; files already open keep their access); the owner
//!   (`uid`) may also change the policy with `MEMCHAN_IOC_SET_POLICY`. `stall_ms` and
//!   `readers_per_user` bound what readers can do to a `block` channel's writers and to its
//!   slots (see `Channel::wait_for_room`, `Ring::subscribe`); writable at any time. The node
//!   itself is created `0666` so that these attributes are the one place that decides.
//! - `rmdir` removes the channel: its node disappears and no new open succeeds. Files still
//!   open keep the channel's memory alive; they read what is left for them and then end of
//!   file, `poll` reports `POLLHUP`, writes fail with `ENODEV`, and mappings stay readable until
//!   unmapped. The name is free again at once, also while someone holds one of the old
//!   directory's attribute files open (configfs fails their reads and writes with `ENOENT`).
//! - While named channels exist, the module cannot be unloaded (configfs holds a reference).

use core::fmt::Write;

use kernel::{
    configfs,
    configfs_attrs,
    new_mutex,
    page::PAGE_SIZE,
    prelude::*,
    str::{
        CString,
        Formatter, //
    },
    sync::{
        atomic::{
            Atomic,
            Relaxed, //
        },
        Arc,
        Mutex,
        SetOnce, //
    }, //
};

#[allow(unused_imports)] // Used by `configfs_attrs!` on 7.2 only.
use crate::compat::configfs_scope::*;
use crate::{
    abi::{
        self,
        NAMED_MAX,
        NAME_MAX, //
    },
    access::Access,
    channel::{
        Channel,
        ChannelConfig,
        Sizes, //
    },
    compat,
    device::ChannelDev,
    ring::Policy, //
};

/// Mode of a new named channel.
const DEFAULT_MODE: u32 = 0o600;
/// Mode of a named channel's device node; access is decided by [`Access`].
const NODE_MODE: u16 = 0o666;

/// Named channels that exist now.
static COUNT: Atomic<u32> = Atomic::new(0);
/// Index reported for the next named channel (`MEMCHAN_IOC_INFO`, sysfs `index`): named
/// channels are numbered from [`abi::CHANNELS_MAX`] up (wrapping after 2^32 creations).
static NEXT_INDEX: Atomic<u32> = Atomic::new(abi::CHANNELS_MAX);

/// Settings of a new named channel (from the module parameters), set once at load.
static DEFAULTS: SetOnce<ChannelConfig> = SetOnce::new();

/// The data of `/sys/kernel/config/memchan`: makes named channels. It has no fields, since
/// 7.2's configfs passes its callbacks a reference to the wrong place (see [`compat`]); the
/// defaults are in [`DEFAULTS`].
#[pin_data]
pub(crate) struct Named {}

/// The configfs subsystem `memchan`; new channels get `defaults`.
pub(crate) fn subsystem(
    defaults: ChannelConfig,
) -> impl PinInit<configfs::Subsystem<Named>, Error> {
    // Once per load: the module's statics are new at every load.
    DEFAULTS.populate(defaults);
    let item_type = configfs_attrs! {
        container: configfs::Subsystem<Named>,
        data: Named,
        child: NamedChannel,
        attributes: [
            channels: 0,
        ],
    };
    configfs::Subsystem::new(c"memchan", item_type, try_pin_init!(Named {}))
}

/// `EINVAL` (or `ENAMETOOLONG`) unless `name` is a valid channel name.
fn check_name(name: &CStr) -> Result {
    let b = name.to_bytes();
    if b.len() > NAME_MAX {
        pr_err!("channel name too long (at most {NAME_MAX} characters)\n");
        return Err(compat::code::enametoolong());
    }
    let first_ok = b.first().is_some_and(u8::is_ascii_alphanumeric);
    if !first_ok
        || !b
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c))
    {
        pr_err!("channel name {name:?}: use A-Z a-z 0-9 _ . - and start with a letter or digit\n");
        return Err(EINVAL);
    }
    Ok(())
}

#[vtable]
impl configfs::GroupOperations for Named {
    type Child = NamedChannel;

    fn make_group(
        &self,
        name: &CStr,
    ) -> Result<impl PinInit<configfs::Group<NamedChannel>, Error>> {
        check_name(name)?;
        let item_type = configfs_attrs! {
            container: configfs::Group<NamedChannel>,
            data: NamedChannel,
            attributes: [
                device: 0,
                ring_kib: 1,
                msg_max: 2,
                max_readers: 3,
                policy: 4,
                uid: 5,
                gid: 6,
                mode: 7,
                stall_ms: 8,
                readers_per_user: 9,
            ],
        };
        let defaults = DEFAULTS.copy().ok_or(EINVAL)?;
        let chan = NamedChannel::new(name, defaults)?;
        Ok(configfs::Group::new(name.try_into()?, item_type, chan))
    }
}

#[vtable]
impl configfs::AttributeOperations<0> for Named {
    type Data = Named;

    /// `channels`: how many named channels exist.
    fn show(_: &Named, page: &mut [u8; PAGE_SIZE]) -> Result<usize> {
        emit(page, fmt!("{}\n", COUNT.load(Relaxed)))
    }
}

/// A place among the [`NAMED_MAX`] named channels, given back on drop.
struct Slot;

impl Slot {
    /// Takes a place, or `ENOSPC`.
    fn take() -> Result<Self> {
        if COUNT.fetch_add(1, Relaxed) >= NAMED_MAX {
            COUNT.fetch_sub(1, Relaxed);
            pr_err!("at most {NAMED_MAX} named channels\n");
            return Err(ENOSPC);
        }
        Ok(Slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        COUNT.fetch_sub(1, Relaxed);
    }
}

/// What a named channel is configured as; guarded by [`NamedChannel::state`].
struct State {
    /// Sizes, index and (initial) policy of the channel.
    cfg: ChannelConfig,
    /// Who may open it.
    access: Access,
    /// The device; `None` only if re-creating it failed (a later write retries).
    dev: Option<Pin<KBox<ChannelDev>>>,
}

/// One named channel: the data of `/sys/kernel/config/memchan/<name>`. configfs drops it when
/// the directory is removed (an open attribute file holds no reference to it), and with it
/// the device.
#[pin_data]
pub(crate) struct NamedChannel {
    /// The device name, `memchan-<name>`.
    dev_name: CString,
    /// Configuration and device; a mutex (re-creating the device sleeps).
    #[pin]
    state: Mutex<State>,
    /// Its place among the named channels.
    _slot: Slot,
}

impl NamedChannel {
    /// Creates the channel `name` and its device node.
    fn new(name: &CStr, defaults: ChannelConfig) -> Result<impl PinInit<Self, Error>> {
        let slot = Slot::take()?;
        let dev_name =
            CString::try_from_fmt(fmt!("memchan-{}", name.to_str().map_err(|_| EINVAL)?))?;
        let cfg = ChannelConfig {
            index: NEXT_INDEX.fetch_add(1, Relaxed),
            ..defaults
        };
        let access = Access {
            uid: 0,
            gid: 0,
            mode: DEFAULT_MODE,
        };
        let mut state = State {
            cfg,
            access,
            dev: None,
        };
        state.dev = Some(state.device(&dev_name)?);
        Ok(try_pin_init!(Self {
            dev_name,
            state <- new_mutex!(state, "memchan::named"),
            _slot: slot,
        }))
    }

    /// Applies `change` to the sizes and re-creates the channel with them: `EBUSY` while a file
    /// has it open; the sizes are checked like the module parameters (`EINVAL`).
    fn resize(&self, change: impl FnOnce(&mut Sizes)) -> Result {
        let mut st = self.state.lock();
        let c = st.cfg;
        let mut sizes = c.sizes()?;
        change(&mut sizes);
        let policy = st.dev.as_ref().map_or(c.policy, |d| d.channel().policy());
        let cfg = ChannelConfig {
            index: c.index,
            ..ChannelConfig::checked(sizes, policy, c.stall_ms, c.readers_per_user)?
        };
        if st.dev.as_ref().is_some_and(|d| !d.channel().is_idle()) {
            return Err(EBUSY);
        }
        // A device name can be registered once: the old node goes first. An `open` may have
        // found it after the check above; once the node is gone, every such open has attached,
        // so the check is repeated: a channel that was opened meanwhile stays as it is.
        if let Some(old) = st.dev.take() {
            let chan = ChannelDev::retire(old);
            if !chan.is_idle() {
                return match st.device_of(&self.dev_name, chan.clone()) {
                    Ok(back) => {
                        st.dev = Some(back);
                        Err(EBUSY)
                    }
                    Err(e) => {
                        // The node is gone for good (a later size write retries it).
                        chan.close();
                        Err(e)
                    }
                };
            }
            chan.close();
        }
        st.cfg = cfg;
        match st.device(&self.dev_name) {
            Ok(dev) => {
                st.dev = Some(dev);
                Ok(())
            }
            Err(e) => {
                // Keep the old sizes (a later write retries the device as well).
                st.cfg = c;
                st.dev = st.device(&self.dev_name).ok();
                Err(e)
            }
        }
    }

    /// The policy now: the live channel's (set by ioctl too), else the configured one.
    fn policy(&self) -> Policy {
        let st = self.state.lock();
        st.dev
            .as_ref()
            .map_or(st.cfg.policy, |d| d.channel().policy())
    }

    /// Changes a setting that applies at once: in the configuration (`change`) and on the live
    /// channel (`apply`).
    fn tune(
        &self,
        change: impl FnOnce(&mut ChannelConfig),
        apply: impl FnOnce(&Channel),
    ) -> Result {
        let mut st = self.state.lock();
        change(&mut st.cfg);
        if let Some(d) = &st.dev {
            apply(d.channel());
        }
        Ok(())
    }

    /// Sets one of the access fields to `v` (and the live device's copy).
    fn set_access(&self, v: u32, field: fn(&mut Access) -> &mut u32) -> Result {
        let mut st = self.state.lock();
        *field(&mut st.access) = v;
        if let Some(d) = st.dev.as_ref() {
            d.change_access(|a| *field(a) = v);
        }
        Ok(())
    }
}

impl State {
    /// Registers a device for this configuration under `name`.
    fn device(&self, name: &CStr) -> Result<Pin<KBox<ChannelDev>>> {
        self.device_of(name, Channel::new(self.cfg)?)
    }

    /// Registers a device for `chan` under `name`, with this configuration's access rule.
    fn device_of(&self, name: &CStr, chan: Arc<Channel>) -> Result<Pin<KBox<ChannelDev>>> {
        KBox::pin_init(
            ChannelDev::new(CString::try_from(name)?, NODE_MODE, chan, Some(self.access)),
            GFP_KERNEL,
        )
    }
}

/// Writes `args` into a configfs page, returning the length.
fn emit(page: &mut [u8], args: core::fmt::Arguments<'_>) -> Result<usize> {
    let mut f = Formatter::new(page);
    f.write_fmt(args).map_err(|_| EINVAL)?;
    Ok(f.bytes_written())
}

/// The written value without surrounding white space (`echo` adds a newline).
fn text(page: &[u8]) -> Result<&str> {
    Ok(core::str::from_utf8(page).map_err(|_| EINVAL)?.trim())
}

/// A decimal number.
fn parse_u32(page: &[u8]) -> Result<u32> {
    text(page)?.parse().map_err(|_| EINVAL)
}

/// Octal permission bits (`0640` or `640`), at most `0777`.
fn parse_mode(page: &[u8]) -> Result<u32> {
    let m = u32::from_str_radix(text(page)?, 8).map_err(|_| EINVAL)?;
    if m > 0o777 {
        return Err(EINVAL);
    }
    Ok(m)
}

/// The `AttributeOperations<$n>` of [`NamedChannel`] (the number in `make_group`'s table):
/// `show` writes the `fmt!` arguments `$show` (given the channel as `$c`), `store`, if given,
/// runs `$store` with the channel as `$sc` and the written bytes as `$page`.
macro_rules! attribute {
    (
        $n:literal, $(#[$doc:meta])*
        show: |$c:ident| $show:expr
        $(, store: |$sc:ident, $page:ident| $store:expr)? $(,)?
    ) => {
        #[vtable]
        impl configfs::AttributeOperations<$n> for NamedChannel {
            type Data = NamedChannel;

            $(#[$doc])*
            fn show($c: &NamedChannel, page: &mut [u8; PAGE_SIZE]) -> Result<usize> {
                emit(page, $show)
            }

            $(
                fn store($sc: &NamedChannel, $page: &[u8]) -> Result {
                    $store
                }
            )?
        }
    };
}

attribute!(0,
    /// `device`: the node's name under `/dev`.
    show: |c| fmt!("{}\n", c.dev_name.to_str().map_err(|_| EINVAL)?),
);

attribute!(1,
    /// `ring_kib`: ring size in KiB.
    show: |c| fmt!("{}\n", c.state.lock().cfg.ring_bytes / 1024),
    store: |c, page| {
        let v = parse_u32(page)?;
        c.resize(|s| s.ring_kib = v)
    },
);

attribute!(2,
    /// `msg_max`: largest message in bytes.
    show: |c| fmt!("{}\n", c.state.lock().cfg.msg_max),
    store: |c, page| {
        let v = parse_u32(page)?;
        c.resize(|s| s.msg_max = v)
    },
);

attribute!(3,
    /// `max_readers`: subscriber limit.
    show: |c| fmt!("{}\n", c.state.lock().cfg.max_readers),
    store: |c, page| {
        let v = parse_u32(page)?;
        c.resize(|s| s.max_readers = v)
    },
);

attribute!(4,
    /// `policy`: `block` or `overwrite` (or `0`, `1`), writable at any time.
    show: |c| fmt!("{}\n", c.policy().name()),
    store: |c, page| {
        let policy = Policy::parse(text(page)?)?;
        c.tune(|cfg| cfg.policy = policy, |chan| chan.set_policy(policy))
    },
);

attribute!(5,
    /// `uid`: owning user id.
    show: |c| fmt!("{}\n", c.state.lock().access.uid),
    store: |c, page| c.set_access(parse_u32(page)?, |a| &mut a.uid),
);

attribute!(6,
    /// `gid`: owning group id.
    show: |c| fmt!("{}\n", c.state.lock().access.gid),
    store: |c, page| c.set_access(parse_u32(page)?, |a| &mut a.gid),
);

attribute!(7,
    /// `mode`: permission bits, octal.
    show: |c| fmt!("{:04o}\n", c.state.lock().access.mode),
    store: |c, page| c.set_access(parse_mode(page)?, |a| &mut a.mode),
);

attribute!(8,
    /// `stall_ms`: under `block`, how long a writer waits for room before the readers holding
    /// the ring back are dropped to an overrun (0: as long as it takes). Writable at any time.
    show: |c| fmt!("{}\n", c.state.lock().cfg.stall_ms),
    store: |c, page| {
        let v = parse_u32(page)?;
        c.tune(|cfg| cfg.stall_ms = v, |chan| chan.set_stall_ms(v))
    },
);

attribute!(9,
    /// `readers_per_user`: most subscribers one user may have (0: only `max_readers`).
    /// Writable at any time; subscribers already there stay.
    show: |c| fmt!("{}\n", c.state.lock().cfg.readers_per_user),
    store: |c, page| {
        let v = parse_u32(page)?;
        c.tune(|cfg| cfg.readers_per_user = v, |chan| chan.set_readers_per_user(v))
    },
);
