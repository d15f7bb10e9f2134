// SPDX-License-Identifier: GPL-2.0

//! The raw kernel accesses that the safe abstractions of Linux 7.3 do not offer yet.
//!
//! Every `unsafe` block of the driver is in this file, each with its justification:
//! - [`Registration`]: `MiscDeviceOptions` of 7.3 takes only a `'static` name; channels created
//!   at run time need a name of their own, a node mode, and sysfs attributes (`groups`).
//! - [`device_of`]: `MiscDevice::open` (and a sysfs `show`) receives only the registration, not
//!   the device that embeds it; recover the embedding [`ChannelDev`] with `container_of!`.
//! - [`permits`]: no safe accessor for the opener's `fsuid`, `in_group_p` or `capable`.
//! - [`sysfs_show`]: 7.3 has no safe sysfs attribute abstraction for devices.
//! - [`kiocb_nonblocking`]: `Kiocb` does not expose `O_NONBLOCK` (`iocb_flags()` does not map
//!   it), so read the flag from the `struct file` behind the kiocb.
//! - [`RingMemory`] / [`RingAccess`]: the channel's memory is one `vmalloc` allocation that
//!   the ring reads and writes as plain bytes (no mapping per access, a writer's data copied
//!   from userspace straight into it) and whose pages userspace maps; 7.3 has `VVec`, whose
//!   pages one can list only with `&mut` access, and `VmallocPageIter::new`, which is unsafe.
//!   `read()` copies from it to userspace without the ring lock while the writer may be
//!   reusing the bytes ([`RingMemory::copy_to_iter_confirmed`], [`RingMemory::load_u64`]):
//!   the copy is done by C (`_copy_to_iter`) and word loads are volatile, so no Rust reference
//!   to racing bytes exists; the caller confirms under the lock that nothing was reused, and
//!   the iterator is reverted (`IovIterDest::revert`, unsafe) when it was.
//! - [`fault_in_readable`]: `IovIterSource` has no way to fault the user pages in ahead of a copy.
//! - [`install_poll`]: 7.3's `MiscDevice` has no `poll` hook; an open file is switched to a
//!   copy of the generated file operations that adds one ([`MEMCHAN_FOPS`]).
//! - `AsBytes` for the ABI structs copied to userspace.
//! - [`vma_pgoff`]: `VmaNew` has no accessor for the mapping's file offset.

use kernel::{
    alloc::allocator::VmallocPageIter,
    bindings,
    fs::{
        file,
        File,
        Kiocb,
        LocalFile, //
    },
    miscdevice::{
        MiscDeviceOptions,
        MiscDeviceRegistration, //
    },
    iov::{
        IovIterDest,
        IovIterSource, //
    },
    mm::virt::VmaNew,
    page::PAGE_SIZE,
    prelude::*,
    str::CString,
    sync::{
        poll::PollTable,
        Arc, //
    },
    transmute::AsBytes,
    types::ForeignOwnable, //
};

use core::{
    cell::UnsafeCell,
    marker::PhantomData,
    ptr::NonNull, //
};

use crate::{
    abi,
    file::MemchanFile,
    ChannelDev, //
};

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
    /// 0600), and the sysfs attributes of [`crate::observe`] in `/sys/class/misc/<name>/`.
    pub(crate) fn new(name: CString, mode: u16) -> impl PinInit<Self, Error> {
        // The string's bytes live in a heap buffer that stays put when the `CString` moves.
        let name_ptr = name.as_char_ptr();
        let register = move |slot: *mut MiscDeviceRegistration<MemchanFile>| -> Result {
            let mut raw = MiscDeviceOptions { name: c"memchan" }.into_raw::<MemchanFile>();
            raw.name = name_ptr;
            raw.mode = mode;
            raw.groups = SYSFS.groups();
            let raw_slot = slot.cast::<bindings::miscdevice>();
            // SAFETY: `slot` is valid for writing a `MiscDeviceRegistration`, which is
            // `repr(transparent)` over `Opaque<miscdevice>`, itself transparent over `miscdevice`.
            unsafe { raw_slot.write(raw) };
            // SAFETY: `raw_slot` holds a `miscdevice` made by `into_raw` (as `register` does)
            // with a name that outlives the registration (`_name` is dropped after `misc`, whose
            // drop deregisters) and `'static` sysfs groups. The slot is pinned.
            kernel::error::to_result(unsafe { bindings::misc_register(raw_slot) })
        };
        try_pin_init!(Self {
            // The name is in place before the device is registered (and so visible).
            _name: name,
            // SAFETY: On `Ok` the closure has initialised the slot as `misc_register` would
            // through `MiscDeviceRegistration::register` (the type's invariants hold: registered,
            // made by `into_raw`); on `Err` nothing needs dropping. The slot is pinned memory.
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

/// Whether the opener of `file` may open it for `want` (`4` read, `2` write, or both) on a
/// channel owned by `uid`:`gid` with permission bits `mode`, like a file's permission check
/// (owner, then group, then other bits; `CAP_DAC_OVERRIDE` passes). Ids are kernel ids (the
/// initial user namespace).
pub(crate) fn permits(file: &File, uid: u32, gid: u32, mode: u32, want: u32) -> bool {
    let bits = if opener_fsuid(file) == uid {
        mode >> 6
    // SAFETY: `open` runs in the opener's context; `in_group_p` reads the current credential.
    } else if unsafe { bindings::in_group_p(bindings::kgid_t { val: gid }) } != 0 {
        mode >> 3
    } else {
        mode
    };
    // SAFETY: `capable` may be called from process context with any capability number.
    bits & want == want || unsafe { bindings::capable(bindings::CAP_DAC_OVERRIDE as i32) }
}

/// The opener's filesystem user id (kernel id, initial user namespace).
pub(crate) fn opener_fsuid(file: &File) -> u32 {
    // SAFETY: `file.cred()` is the opener's credential, valid while `file` is; `fsuid` is never
    // changed after the credential is set up.
    unsafe { (*file.cred().as_ptr()).fsuid.val }
}

/// Whether the VFS opened `file` for reading and for writing (`FMODE_READ`, `FMODE_WRITE`).
pub(crate) fn fmode_read_write(file: &File) -> (bool, bool) {
    // SAFETY: `file` is valid; `f_mode` is an aligned `u32` (the VFS may set other bits of it
    // concurrently, never the read and write bits after open), read with one volatile load.
    let mode = unsafe { (&raw const (*file.as_ptr()).f_mode).read_volatile() };
    (mode & FMODE_READ != 0, mode & FMODE_WRITE != 0)
}

/// `FMODE_READ` (`include/linux/fs.h`; a cast in a macro, which bindgen does not translate).
const FMODE_READ: u32 = 1 << 0;
/// `FMODE_WRITE`.
const FMODE_WRITE: u32 = 1 << 1;

/// Whether the opener of `file` had `CAP_SYS_ADMIN` (in the initial user namespace), as
/// `file_ns_capable` judges it: the credential the file was opened with, not the task that
/// uses it now, so a file handed to a privileged process confers nothing.
pub(crate) fn opener_capable_sys_admin(file: &File) -> bool {
    // SAFETY: `file` is a valid open file; `init_user_ns` is a static that lives forever;
    // `file_ns_capable` only reads both.
    unsafe {
        bindings::file_ns_capable(
            file.as_ptr(),
            &raw mut bindings::init_user_ns,
            bindings::CAP_SYS_ADMIN as i32,
        )
    }
}

/// Number of sysfs attributes.
const ATTRS: usize = crate::observe::ATTRS.len();

/// The sysfs attribute tables of every memchan device (writable memory, as in C: sysfs and
/// lockdep may use the embedded keys).
struct Sysfs(UnsafeCell<SysfsTables>);

/// The tables behind [`SYSFS`].
struct SysfsTables {
    /// One read-only attribute per name in [`crate::observe::ATTRS`].
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
        attrs[i] = attribute(crate::observe::ATTRS[i]);
        // SAFETY: Field projection within the static being defined (no access).
        list[i] = unsafe { &raw mut (*t).attrs[i].attr };
        i += 1;
    }
    let mut group: bindings::attribute_group = pin_init::zeroed();
    // SAFETY: As above.
    group.__bindgen_anon_2.attrs = unsafe { &raw mut (*t).list }.cast();
    // SAFETY: As above.
    let groups = [unsafe { &raw const (*t).group }, core::ptr::null()];
    Sysfs(UnsafeCell::new(SysfsTables { attrs, list, group, groups }))
};

/// `show` of every memchan sysfs attribute: formats it with [`crate::observe::show`].
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
    let misc = unsafe { &*bindings::dev_get_drvdata(dev).cast::<MiscDeviceRegistration<MemchanFile>>() };
    // SAFETY: Our attributes' names are `'static` C strings.
    let name = unsafe { CStr::from_char_ptr((*attr).attr.name) };
    // SAFETY: sysfs passes a zeroed buffer of `PAGE_SIZE` bytes, ours for this call.
    let out = unsafe { core::slice::from_raw_parts_mut(buf.cast::<u8>(), PAGE_SIZE) };
    match crate::observe::show(device_of(misc), name, out) {
        Ok(n) => isize::try_from(n).unwrap_or(0),
        Err(e) => e.to_errno() as isize,
    }
}

/// Whether the file behind `kiocb` was opened (or `fcntl`-ed) with `O_NONBLOCK`.
pub(crate) fn kiocb_nonblocking<T: ForeignOwnable>(kiocb: &Kiocb<'_, T>) -> bool {
    // `LocalFile` (not `File`): `read(2)`/`write(2)` may run inside an `fdget_pos` region.
    // SAFETY: `kiocb` wraps a valid `struct kiocb` for the whole callback, and its `ki_filp` is
    // the file being read or written, kept alive by the caller's reference.
    let file = unsafe { LocalFile::from_raw_file((*kiocb.as_raw()).ki_filp) };
    file.flags() & file::flags::O_NONBLOCK != 0
}

/// A channel's memory: the control page followed by the ring's data, one zeroed `vmalloc`
/// allocation, so the kernel reaches any byte of it with plain loads and stores (no mapping per
/// access), and userspace maps its pages (see [`RingMemory::pages`]).
///
/// Its contents are written only through its one [`RingAccess`] (made together with it by
/// [`ring_memory`]), which lives inside the channel's ring lock. They are read through it, and
/// also without the lock: by `read()` ([`RingMemory::load_u64`],
/// [`RingMemory::copy_to_iter_confirmed`]) and by userspace through read-only mappings, at any
/// time. Those readers work like a seqlock's: what they read may be torn by the writer, and is
/// used only once the ring lock (or, for userspace, the publication protocol of
/// `abi::RingControl`) confirms the bytes were not being rewritten.
pub(crate) struct RingMemory {
    /// Owns the allocation; after creation, it is reached only through `base`.
    _buf: VVec<u8>,
    /// Start of the allocation (page aligned: `vmalloc` returns whole pages).
    base: NonNull<u8>,
    /// Its length in bytes (a multiple of the page size).
    len: usize,
}

// SAFETY: the memory belongs to the value and is not tied to a thread; who may write its
// contents is the one `RingAccess`, itself behind the ring lock (see `Sync` for the readers).
unsafe impl Send for RingMemory {}
// SAFETY: shared references look up pages (`pages`) and read contents without the ring lock
// (`load_u64`, `copy_to_iter_confirmed`) while the one `RingAccess` may be writing them, as a
// seqlock's readers and writer do: every such access, on both sides, is a raw one (volatile
// loads, C copies, `RingSpan` copies), never a Rust reference to the bytes, and the readers
// discard what they read unless the ring lock confirms it was not being rewritten. Plain copies
// racing with these reads are still a data race in Rust's model; they are sound by the kernel
// memory model's convention that C seqlock data relies on too (KCSAN would want the readers'
// copies marked as such).
unsafe impl Sync for RingMemory {}

impl RingMemory {
    /// Bounds check for `off..off + len`; returns a pointer to `off`.
    fn at(&self, off: usize, len: usize) -> Result<*const u8> {
        let end = off.checked_add(len).ok_or(EINVAL)?;
        if end > self.len {
            return Err(EINVAL);
        }
        // SAFETY: `off <= len` of the allocation (checked above), so the result is within it
        // or one past its end.
        Ok(unsafe { self.base.as_ptr().add(off) })
    }

    /// Loads the aligned `u64` at `off` in one access, without the ring lock: the ring's
    /// writer may be rewriting those bytes at the same moment (record headers are copied in
    /// byte ranges, so the value may then be torn). Callers must not trust it until they have
    /// confirmed, under the ring lock, that the writer had not reused those bytes (see
    /// `Channel::read`).
    pub(crate) fn load_u64(&self, off: usize) -> Result<u64> {
        if off % 8 != 0 {
            return Err(EINVAL);
        }
        let p = self.at(off, 8)?;
        // SAFETY: in bounds and 8-byte aligned (checked above; `base` is page aligned). A
        // volatile aligned load is one instruction and never creates a Rust reference to
        // bytes the writer may be changing.
        Ok(unsafe { p.cast::<u64>().read_volatile() })
    }

    /// Copies the byte ranges `pieces` (offset, length), in order, to userspace through `iov`,
    /// stopping at a fault, then calls `confirm` with the number of bytes copied. If it
    /// returns false, `iov` is moved back to where it was (the user's bytes stay written).
    /// Returns the number copied and what `confirm` said.
    ///
    /// Runs without the ring lock, so a fault may sleep. The ring's writer may be reusing the
    /// bytes at the same moment (under `overwrite`): `confirm` is where the caller checks,
    /// under the lock, that it was not, as for [`RingMemory::load_u64`].
    pub(crate) fn copy_to_iter_confirmed(
        &self,
        pieces: &[(usize, usize)],
        iov: &mut IovIterDest<'_>,
        confirm: impl FnOnce(usize) -> Result<bool>,
    ) -> Result<(usize, bool)> {
        let mut copied = 0usize;
        for &(off, len) in pieces {
            let p = self.at(off, len)?;
            // The bytes are read by C, with no Rust reference to them, as the kernel's other
            // lockless readers of shared buffers do.
            // SAFETY: `p..p + len` lies within the live allocation (checked by `at`); the
            // iterator is valid (`as_raw`).
            let n = unsafe { bindings::_copy_to_iter(p.cast(), len, iov.as_raw()) };
            copied = copied.wrapping_add(n);
            if n < len {
                break;
            }
        }
        let ok = confirm(copied)?;
        if !ok {
            // SAFETY: the copies above advanced `iov` by exactly `copied` bytes, so going back
            // by as much stays within it.
            unsafe { iov.revert(copied) };
        }
        Ok((copied, ok))
    }

    /// The pages of the allocation, in order.
    pub(crate) fn pages(&self) -> VmallocPageIter<'_> {
        // SAFETY: `base` is the page-aligned start of a `Vmalloc` allocation of `len` bytes,
        // which lives as long as `self` (`_buf` owns it), so for the iterator's lifetime.
        unsafe { VmallocPageIter::new(self.base, self.len) }
    }
}

/// Allocates `len` bytes (a non-zero multiple of the page size) of zeroed channel memory and
/// its one accessor.
pub(crate) fn ring_memory(len: usize) -> Result<(Arc<RingMemory>, RingAccess)> {
    if len == 0 || len % PAGE_SIZE != 0 {
        return Err(EINVAL);
    }
    let mut buf = VVec::from_elem(0u8, len, GFP_KERNEL)?;
    let base = NonNull::new(buf.as_mut_ptr()).ok_or(ENOMEM)?;
    let mem = Arc::new(RingMemory { _buf: buf, base, len }, GFP_KERNEL)?;
    Ok((mem.clone(), RingAccess { mem }))
}

/// The only way to the contents of a [`RingMemory`]: exactly one exists per memory (made by
/// [`ring_memory`]), so its `&mut self` methods have the kernel's only access to the bytes.
pub(crate) struct RingAccess {
    /// The memory (kept alive by this reference).
    mem: Arc<RingMemory>,
}

impl RingAccess {
    /// Bytes `off..off + len` (`EINVAL` if outside the memory).
    pub(crate) fn bytes(&self, off: usize, len: usize) -> Result<&[u8]> {
        let p = self.mem.at(off, len)?;
        // Writers need `&mut self` of this, the only accessor (`span`, `store_u64`).
        // SAFETY: `p..p + len` is in the live allocation (`at`); no kernel write while this
        // borrow lasts (above), and lockless readers only read.
        Ok(unsafe { core::slice::from_raw_parts(p, len) })
    }

    /// Bytes `off..off + len`, to be written (`EINVAL` if outside the memory).
    pub(crate) fn span(&mut self, off: usize, len: usize) -> Result<RingSpan<'_>> {
        let p = self.mem.at(off, len)?.cast_mut();
        // `at` checked the range; the pointer is never null (it is within an allocation).
        let ptr = NonNull::new(p).ok_or(EINVAL)?;
        Ok(RingSpan { ptr, len, _borrow: PhantomData })
    }

    /// Stores `v` at byte `off` (8-byte aligned) in one untorn access, for userspace readers
    /// of the control page (`EINVAL` if misaligned or outside the memory).
    pub(crate) fn store_u64(&mut self, off: usize, v: u64) -> Result {
        if off % 8 != 0 {
            return Err(EINVAL);
        }
        let p = self.mem.at(off, 8)?.cast_mut();
        // One aligned volatile store: a concurrent reader sees the old or the new value.
        // SAFETY: in bounds (`at`), aligned (`base` is page aligned); `&mut self` of the one
        // accessor, so no `RingSpan`/`bytes()` borrow is live; lockless readers only read.
        unsafe { p.cast::<u64>().write_volatile(v) };
        Ok(())
    }
}

/// Bytes of ring memory the kernel is writing (under the ring lock) while lockless readers may
/// be reading them: `read()` without the lock (see [`RingMemory`]'s `Sync`) and userspace
/// mappings, as with a seqlock. Never handed out as a Rust slice, which would promise that no
/// one else looks at the bytes: only copied into. (Tests fill plain buffers through it too.)
pub(crate) struct RingSpan<'a> {
    /// Start of the bytes.
    ptr: NonNull<u8>,
    /// Their number.
    len: usize,
    /// The bytes are borrowed for writing, exclusively among writers.
    _borrow: PhantomData<&'a mut [u8]>,
}

impl<'a> RingSpan<'a> {
    /// The bytes of `buf` (a buffer no one else reads: the KUnit tests' model ring).
    #[cfg(CONFIG_KUNIT = "y")]
    pub(crate) fn of(buf: &'a mut [u8]) -> Self {
        let len = buf.len();
        Self { ptr: NonNull::from(buf).cast(), len, _borrow: PhantomData }
    }

    /// Their number.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Copies `src` in (`EINVAL` unless it has exactly [`RingSpan::len`] bytes).
    pub(crate) fn copy_from(&mut self, src: &[u8]) -> Result {
        if src.len() != self.len {
            return Err(EINVAL);
        }
        // SAFETY: `ptr..ptr + len` is valid for writes while `'a` lasts (the constructors'
        // borrow), and no other kernel code writes it meanwhile; `src` is a valid slice of
        // `len` bytes. A raw copy (`memmove`) makes no reference to the destination.
        unsafe { core::ptr::copy(src.as_ptr(), self.ptr.as_ptr(), self.len) };
        Ok(())
    }

    /// Sets every byte to `byte` (the KUnit tests).
    #[cfg(CONFIG_KUNIT = "y")]
    pub(crate) fn fill(&mut self, byte: u8) {
        // SAFETY: `ptr..ptr + len` is valid for writes while `'a` lasts (the constructors'
        // borrow), and no other kernel code writes it meanwhile; `write_bytes` makes no
        // reference to the destination.
        unsafe { core::ptr::write_bytes(self.ptr.as_ptr(), byte, self.len) };
    }
}

/// Faults in the user pages behind the next `len` bytes of `iov` (without any lock), so that
/// the copy under the ring lock ([`copy_from_iter_nofault`]) will most likely find them. False
/// if some of them cannot be faulted in (the copy would fail with `EFAULT`).
pub(crate) fn fault_in_readable(iov: &mut IovIterSource<'_>, len: usize) -> bool {
    // SAFETY: `as_raw` gives the iterator's valid `struct iov_iter`, which the function only
    // reads (it neither advances nor keeps it).
    unsafe { bindings::fault_in_iov_iter_readable(iov.as_raw(), len) == 0 }
}

/// Copies `dst.len()` bytes from `iov` into ring memory with page faults disabled, through
/// `copy_folio_from_iter_atomic` (what `generic_perform_write` uses): a user page that is not
/// present (reclaimed, unmapped by another thread, or backed by FUSE or a userfaultfd handler)
/// ends the copy at once instead of sleeping, so it can run under the ring lock without
/// letting a user hold that lock for as long as it likes. Returns the bytes copied (`iov`
/// advanced by as many); the caller faults the rest in without the lock and tries again.
///
/// (Raising `current->pagefault_disabled` from Rust, as the inline `pagefault_disable()`
/// does, is not an option: on a GCC-built kernel bindgen's `task_struct` layout differs from
/// the compiler's, 48 bytes apart at that field in the 7.3 test kernel.)
///
/// # Safety
///
/// `dst` must lie within a [`RingMemory`] (a `vmalloc` allocation): its pages are found with
/// `vmalloc_to_page`.
pub(crate) unsafe fn copy_from_iter_nofault(
    iov: &mut IovIterSource<'_>,
    dst: &mut RingSpan<'_>,
) -> usize {
    let mut done = 0usize;
    while done < dst.len() {
        let at = dst.ptr.as_ptr().wrapping_add(done);
        let off = (at as usize) % PAGE_SIZE;
        let n = PAGE_SIZE.wrapping_sub(off).min(dst.len().wrapping_sub(done));
        // SAFETY: `at` lies within `dst`, so (per this function's contract) within a live
        // `vmalloc` allocation.
        let page = unsafe { bindings::vmalloc_to_page(at.cast()) };
        if page.is_null() {
            break;
        }
        // SAFETY: a `vmalloc` page is an order-0 page, which is its own folio; `off + n` stays
        // within it; the kernel writes only those `n` bytes of it, which `dst` (exclusive among
        // writers) covers; the iterator is valid (`as_raw`) and advanced by what is copied.
        let got = unsafe {
            bindings::copy_folio_from_iter_atomic(page.cast(), off, n, iov.as_raw())
        };
        done = done.wrapping_add(got);
        if got < n {
            break;
        }
    }
    done
}



/// The mapping's offset into the file, in pages.
pub(crate) fn vma_pgoff(vma: &VmaNew) -> usize {
    // SAFETY: `vma` refers to a valid VMA under construction, and `vm_pgoff` is a plain field
    // set by `mmap_region` before calling the driver's `mmap` hook; reading it is a plain load.
    unsafe { (*vma.as_ptr()).vm_pgoff }
}

/// `poll` event bits (`include/uapi/asm-generic/poll.h`), as the VFS expects them.
pub(crate) const POLLIN: u32 = bindings::POLLIN;
/// See [`POLLIN`].
pub(crate) const POLLPRI: u32 = bindings::POLLPRI;
/// See [`POLLIN`].
pub(crate) const POLLOUT: u32 = bindings::POLLOUT;
/// See [`POLLIN`].
pub(crate) const POLLERR: u32 = bindings::POLLERR;
/// See [`POLLIN`].
pub(crate) const POLLHUP: u32 = bindings::POLLHUP;
/// See [`POLLIN`].
pub(crate) const POLLRDNORM: u32 = bindings::POLLRDNORM;
/// See [`POLLIN`].
pub(crate) const POLLWRNORM: u32 = bindings::POLLWRNORM;

/// Immutable file operations: plain function pointers and the owning module.
struct SyncFops(bindings::file_operations);

// SAFETY: The table is never written after its (compile-time) initialisation and contains only
// function pointers and a pointer to this module, which are safe to share between threads.
unsafe impl Sync for SyncFops {}

/// The `MiscDevice`-generated file operations of [`MemchanFile`] plus `poll`.
static MEMCHAN_FOPS: SyncFops = SyncFops(bindings::file_operations {
    poll: Some(memchan_poll),
    // SAFETY: `into_raw` returns a `miscdevice` whose `fops` points to the `'static` constant
    // vtable the `MiscDevice` machinery builds for `MemchanFile`; reading it at compile time
    // copies that table.
    ..unsafe { *MiscDeviceOptions { name: c"memchan" }.into_raw::<MemchanFile>().fops }
});

/// Switches `file`, while it is being opened, to [`MEMCHAN_FOPS`] so that it supports `poll`.
///
/// Must be the last step of `MemchanFile::open`, after everything that can fail.
pub(crate) fn install_poll(file: &File) {
    // `do_dentry_open` reads `f_op` again after `->open` returns (as after `misc_open` replaces
    // it); the new table has the same owner module, so `fops_put` in `__fput` stays balanced.
    // SAFETY: Inside `->open` the file is in no file table yet: nothing reads `f_op`
    // concurrently. Same owner and same `private_data` contract as the table it replaces.
    unsafe { (*file.as_ptr()).f_op = &MEMCHAN_FOPS.0 };
}

/// `poll` for memchan files (see [`install_poll`]).
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

// SAFETY: Plain `#[repr(C)]` structs of integer fields without padding: any bit pattern is
// valid, and every byte is initialised.
unsafe impl AsBytes for abi::ChannelInfo {}
// SAFETY: As above.
unsafe impl AsBytes for abi::ChannelStats {}
// SAFETY: As above.
unsafe impl AsBytes for abi::ReaderState {}
// SAFETY: Two `u64` fields, no padding: every bit pattern is a valid value.
unsafe impl kernel::transmute::FromBytes for abi::SendBatch {}
// SAFETY: Two `u64` fields, no padding: every byte is initialised.
unsafe impl AsBytes for abi::SendBatch {}
// SAFETY: `RecordHeader` is `repr(C)` of two `u64` and two `u32`: no padding, every bit
// pattern valid (checked against the C header by the ABI tests).
unsafe impl AsBytes for abi::RecordHeader {}
