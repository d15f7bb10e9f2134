// SPDX-License-Identifier: GPL-2.0

//! A channel's device node: `/dev/memchan*` registered as a misc device, who may open it, its
//! file operations table and its sysfs attributes.
//!
//! A [`ChannelDev`] owns a [`Registration`] and the [`Channel`] behind it; an open file finds
//! its device from the registration ([`device_of`]), checks the access rule, and gets a
//! [`MemchanFile`] (`file.rs`), which the table's operations are handed.
//!
//! The registration is raw: `MiscDeviceOptions` of 7.3 takes only a `'static` name, while
//! channels created at run time need a name of their own, a node mode, sysfs attributes
//! (`groups`), and a `poll` operation, which 7.3's `MiscDevice` lacks: the table registered is
//! the one `MiscDevice` generates plus `poll` ([`FOPS`]), set once here, so `misc_open` installs
//! it on every open file. 7.3 has no safe sysfs attribute abstraction for devices either
//! ([`sysfs_show`]), and `Kiocb` does not expose `O_NONBLOCK` ([`kiocb_nonblocking`]).

use core::cell::UnsafeCell;

use kernel::{
    bindings,
    fs::{
        file,
        File,
        Kiocb,
        LocalFile, //
    },
    iov::{
        IovIterDest,
        IovIterSource, //
    },
    miscdevice::{
        MiscDevice,
        MiscDeviceOptions,
        MiscDeviceRegistration, //
    },
    mm::virt::VmaNew,
    new_spinlock,
    page::PAGE_SIZE,
    prelude::*,
    seq_file::SeqFile,
    str::CString,
    sync::{
        atomic::{
            Atomic,
            Relaxed, //
        },
        poll::PollTable,
        Arc,
        SpinLock, //
    },
    types::ForeignOwnable, //
};

use crate::{
    access::{
        self,
        Access,
        Want, //
    },
    channel::Channel,
    file::MemchanFile,
    observe, //
};

/// One channel exposed as a misc device node.
#[pin_data(PinnedDrop)]
pub(crate) struct ChannelDev {
    /// The misc device registration; declared first so that it is dropped (deregistered,
    /// so no new `open` can start) before the rest of the device goes away.
    #[pin]
    reg: Registration,
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
            reg <- Registration::new(name, mode),
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

    /// `EACCES` unless the opener of `file` may do what it wants (read, write or both); else
    /// whether the opener owns the channel, both decided by one snapshot of the access rule.
    ///
    /// Owning is being the owner of a named channel (its `uid` attribute) at open time. A
    /// load-time channel has no owner but root: the owner of a node says nothing (any node with
    /// its device number opens it, such as one a container runtime made). Owners and holders
    /// of `CAP_SYS_ADMIN` change a channel's policy.
    pub(crate) fn admit(&self, file: &File, want: Want) -> Result<bool> {
        match self.access() {
            Some(a) if !a.permits(file, want) => Err(EACCES),
            Some(a) => Ok(access::opener_fsuid(file) == a.uid),
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

/// A registered misc device that owns its name, with a node mode and memchan's sysfs
/// attributes.
#[pin_data]
pub(crate) struct Registration {
    /// The registration; declared first, so dropped (deregistered) before `name`.
    #[pin]
    misc: MiscDeviceRegistration<MemchanFile>,
    /// The device name; `misc_register` keeps a pointer to it (for `/proc/misc`).
    _name: CString,
}

impl Registration {
    /// Registers `/dev/<name>`, its node created with permission bits `mode` (0: the default,
    /// 0600), with the file operations [`FOPS`] and the sysfs attributes of [`observe`] in
    /// `/sys/class/misc/<name>/`.
    pub(crate) fn new(name: CString, mode: u16) -> impl PinInit<Self, Error> {
        // The string's bytes live in a heap buffer that stays put when the `CString` moves.
        let name_ptr = name.as_char_ptr();
        let register = move |slot: *mut MiscDeviceRegistration<MemchanFile>| -> Result {
            let mut raw = MiscDeviceOptions { name: c"memchan" }.into_raw::<MemchanFile>();
            raw.name = name_ptr;
            raw.mode = mode;
            raw.groups = SYSFS.groups();
            // `misc_open` installs this table on every file it opens.
            raw.fops = &FOPS.0;
            let raw_slot = slot.cast::<bindings::miscdevice>();
            // SAFETY: `slot` is valid for writing a `MiscDeviceRegistration`, which is
            // `repr(transparent)` over `Opaque<miscdevice>`, itself transparent over `miscdevice`.
            unsafe { raw_slot.write(raw) };
            // SAFETY: `raw_slot` holds a `miscdevice` made by `into_raw` with a name that
            // outlives the registration, `'static` groups and the `'static` `FOPS`; pinned.
            let ret = unsafe { bindings::misc_register(raw_slot) };
            kernel::error::to_result(ret)
        };
        try_pin_init!(Self {
            // The name is in place before the device is registered (and so visible).
            _name: name,
            // The type relies on none of `name`, `mode`, `groups`, `fops`: its open trampoline
            // (`rust/kernel/miscdevice.rs`, 7.3) only casts `private_data` back to the
            // registration, and `FOPS` keeps that `open` (re-check on each kernel update).
            // SAFETY: On `Ok` the slot is initialised as `MiscDeviceRegistration::register`
            // would (registered, made by `into_raw`); on `Err` nothing needs dropping; pinned.
            misc <- unsafe { pin_init::pin_init_from_closure(register) },
        })
    }
}

// `Registration::new` writes a `miscdevice` into a `MiscDeviceRegistration` slot: the two must
// have one layout (the wrapper is `repr(transparent)` over `Opaque<miscdevice>`).
const _: () = assert!(
    core::mem::size_of::<MiscDeviceRegistration<MemchanFile>>()
        == core::mem::size_of::<bindings::miscdevice>()
        && core::mem::align_of::<MiscDeviceRegistration<MemchanFile>>()
            == core::mem::align_of::<bindings::miscdevice>()
);

/// Returns the device whose registration is `misc`.
pub(crate) fn device_of(misc: &MiscDeviceRegistration<MemchanFile>) -> &ChannelDev {
    let misc: *const MiscDeviceRegistration<MemchanFile> = misc;
    // Lifetime: `misc_open` calls `open` under `misc_mtx`, and `misc_deregister` (run when the
    // `ChannelDev` is dropped, before its memory is freed) takes the same mutex; sysfs `show`
    // runs under a kernfs active reference, which `misc_deregister` drains.
    // SAFETY: A `MiscDeviceRegistration<MemchanFile>` only exists as the `misc` field of a
    // [`Registration`] (the only code creating one is `Registration::new`), which only exists
    // as the `reg` field of a pinned `ChannelDev`; both outlive `misc` (above).
    unsafe {
        let reg = kernel::container_of!(misc.cast_mut(), Registration, misc);
        &*kernel::container_of!(reg, ChannelDev, reg)
    }
}

/// Number of sysfs attributes.
const ATTRS: usize = observe::ATTRS.len();

/// The sysfs attribute tables of every memchan device (writable memory, as in C: sysfs and
/// lockdep may use the embedded keys).
struct Sysfs(UnsafeCell<SysfsTables>);

/// The tables behind [`SYSFS`].
struct SysfsTables {
    /// One read-only attribute per name in [`observe::ATTRS`].
    attrs: [bindings::device_attribute; ATTRS],
    /// Pointers to the `attr` of each, NULL-terminated.
    list: [*mut bindings::attribute; ATTRS + 1],
    /// The group.
    group: bindings::attribute_group,
    /// The groups of a device, NULL-terminated.
    groups: [*const bindings::attribute_group; 2],
}

// SAFETY: The kernel only reads the tables (and lockdep the keys inside, which are its own
// business); Rust code never touches them after compile time.
unsafe impl Sync for Sysfs {}

impl Sysfs {
    /// The groups list for `miscdevice::groups`.
    fn groups(&self) -> *mut *const bindings::attribute_group {
        // SAFETY: Field projection within the static.
        unsafe { (&raw mut (*self.0.get()).groups).cast() }
    }
}

/// A read-only device attribute (permission bits `mode`) shown by [`sysfs_show`].
const fn attribute((name, mode): (&'static CStr, u16)) -> bindings::device_attribute {
    let mut a: bindings::device_attribute = pin_init::zeroed();
    a.attr.name = kernel::str::as_char_ptr_in_const_context(name);
    a.attr.mode = mode;
    a.__bindgen_anon_1.show = Some(sysfs_show);
    a
}

/// The attribute tables, built at compile time.
static SYSFS: Sysfs = {
    let t: *mut SysfsTables = SYSFS.0.get();
    let mut attrs = [attribute((c"x", 0)); ATTRS];
    let mut list = [core::ptr::null_mut(); ATTRS + 1];
    let mut i = 0;
    while i < ATTRS {
        attrs[i] = attribute(observe::ATTRS[i]);
        // SAFETY: Field projection within the static being defined (no access).
        list[i] = unsafe { &raw mut (*t).attrs[i].attr };
        i += 1;
    }
    let mut group: bindings::attribute_group = pin_init::zeroed();
    // SAFETY: Field projection within the static being defined: an address, no access.
    group.__bindgen_anon_2.attrs = unsafe { &raw mut (*t).list }.cast();
    // SAFETY: Field projection within the static being defined: an address, no access.
    let groups = [unsafe { &raw const (*t).group }, core::ptr::null()];
    Sysfs(UnsafeCell::new(SysfsTables {
        attrs,
        list,
        group,
        groups,
    }))
};

/// `show` of every memchan sysfs attribute: formats it with [`observe::show`].
///
/// # Safety
///
/// Called by sysfs for a device registered through [`Registration`], with one of the
/// attributes in [`SYSFS`] and a `PAGE_SIZE` buffer.
unsafe extern "C" fn sysfs_show(
    dev: *mut bindings::device,
    attr: *mut bindings::device_attribute,
    buf: *mut kernel::ffi::c_char,
) -> isize {
    // SAFETY: `misc_register` stores the `miscdevice` as the device's driver data; it is the
    // inner value of a `MiscDeviceRegistration` (transparent), which outlives this call (see
    // `device_of`).
    let data = unsafe { bindings::dev_get_drvdata(dev) };
    // SAFETY: `data` is that `miscdevice`, inside a live transparent `MiscDeviceRegistration`.
    let misc = unsafe { &*data.cast::<MiscDeviceRegistration<MemchanFile>>() };
    // SAFETY: Our attributes' names are `'static` C strings.
    let name = unsafe { CStr::from_char_ptr((*attr).attr.name) };
    // SAFETY: sysfs passes a zeroed buffer of `PAGE_SIZE` bytes, ours for this call.
    let out = unsafe { core::slice::from_raw_parts_mut(buf.cast::<u8>(), PAGE_SIZE) };
    match observe::show(device_of(misc).channel(), name, out) {
        Ok(n) => isize::try_from(n).unwrap_or(0),
        Err(e) => e.to_errno() as isize,
    }
}

/// Immutable file operations: plain function pointers and the owning module.
struct SyncFops(bindings::file_operations);

// SAFETY: The table is never written after its (compile-time) initialisation and contains only
// function pointers and a pointer to this module, which are safe to share between threads.
unsafe impl Sync for SyncFops {}

/// The `MiscDevice`-generated file operations of [`MemchanFile`] plus `poll` and, set here
/// rather than left to the generated table (which sets it on 7.3 only), the `owner`: every
/// open file pins the module, so `rmmod` fails while one is open (the
/// `zz_rmmod_refused_while_open...` test).
static FOPS: SyncFops = SyncFops(bindings::file_operations {
    poll: Some(memchan_poll),
    owner: crate::compat::this_module().as_ptr(),
    // SAFETY: `into_raw` returns a `miscdevice` whose `fops` points to the `'static` constant
    // vtable the `MiscDevice` machinery builds for `MemchanFile`; reading it at compile time
    // copies that table.
    ..unsafe {
        *MiscDeviceOptions { name: c"memchan" }
            .into_raw::<MemchanFile>()
            .fops
    }
});

/// `poll` of memchan files (in [`FOPS`]).
///
/// # Safety
///
/// Called by the VFS with a valid open memchan `file` (whose `private_data` is the
/// `Pin<KBox<MemchanFile>>` stored by the `MiscDevice` open trampoline) and a valid or null
/// poll table.
unsafe extern "C" fn memchan_poll(
    file: *mut bindings::file,
    wait: *mut bindings::poll_table_struct,
) -> bindings::__poll_t {
    // SAFETY: Per this function's contract `file` is valid and open, so `private_data` holds the
    // foreign-owned `Pin<KBox<MemchanFile>>`, which lives until `release`, after any poll.
    let me = unsafe { <Pin<KBox<MemchanFile>> as ForeignOwnable>::borrow((*file).private_data) };
    // SAFETY: `file` is valid for the duration of this call; `poll` is not called inside an
    // `fdget_pos` region, so `File` is appropriate.
    let file = unsafe { File::from_raw_file(file) };
    // SAFETY: `wait` is a valid (or null) poll table for the duration of this call.
    let table = unsafe { PollTable::from_raw(wait) };
    me.poll(file, table)
}

/// The file operations: `open` checks the access rule and makes the file's state; the others
/// hand the call to it (`file.rs`).
#[vtable]
impl MiscDevice for MemchanFile {
    type Ptr = Pin<KBox<Self>>;

    fn open(file: &File, misc: &MiscDeviceRegistration<Self>) -> Result<Pin<KBox<Self>>> {
        let dev = device_of(misc);
        // What the file may do is what the VFS granted (`f_mode`): access mode 3 (which some
        // tools use for ioctl-only opens) grants neither reading nor writing, so it neither
        // subscribes nor counts as a writer. It needs both permissions, as for a file.
        let (read, write) = access::granted(file);
        let owner = dev.admit(file, Want::of(file))?;
        MemchanFile::new(
            dev.channel(),
            read,
            write,
            owner,
            access::opener_fsuid(file),
        )
    }

    fn read_iter(kiocb: Kiocb<'_, Self::Ptr>, iov: &mut IovIterDest<'_>) -> Result<usize> {
        let nonblock = kiocb_nonblocking(&kiocb);
        kiocb.file().read(iov, nonblock)
    }

    fn write_iter(kiocb: Kiocb<'_, Self::Ptr>, iov: &mut IovIterSource<'_>) -> Result<usize> {
        let nonblock = kiocb_nonblocking(&kiocb);
        kiocb.file().write(iov, nonblock)
    }

    fn ioctl(me: Pin<&MemchanFile>, file: &File, cmd: u32, arg: usize) -> Result<isize> {
        me.ioctl(file, cmd, arg)
    }

    fn mmap(me: Pin<&MemchanFile>, _file: &File, vma: &VmaNew) -> Result {
        me.mmap(vma)
    }

    fn show_fdinfo(me: Pin<&MemchanFile>, m: &SeqFile, _file: &File) {
        me.show_fdinfo(m)
    }
}

/// Whether the file behind `kiocb` was opened (or `fcntl`-ed) with `O_NONBLOCK`.
fn kiocb_nonblocking<T: ForeignOwnable>(kiocb: &Kiocb<'_, T>) -> bool {
    // `LocalFile` (not `File`): `read(2)`/`write(2)` may run inside an `fdget_pos` region.
    // SAFETY: `kiocb` wraps a valid `struct kiocb` for the whole callback, and its `ki_filp` is
    // the file being read or written, kept alive by the caller's reference.
    let file = unsafe { LocalFile::from_raw_file((*kiocb.as_raw()).ki_filp) };
    file.flags() & file::flags::O_NONBLOCK != 0
}
