// SPDX-License-Identifier: GPL-2.0

//! A channel's memory: one zeroed `vmalloc` allocation (control page, producer page, then the
//! ring's data) that the kernel reads and writes as plain bytes, that readers map read-only,
//! and whose producer page and data a channel's producer maps writable.
//!
//! Why raw access: the ring reaches any byte with plain loads and stores (no mapping per
//! access), a writer's data is copied from userspace straight into it, and its pages are
//! mapped into userspace. 7.3 has `VVec`, whose pages one can list only with `&mut` access,
//! and `VmallocPageIter::new`, which is unsafe. `read()` copies from it to userspace without
//! the ring lock while the writer may be reusing the bytes ([`RingMemory::copy_to_iter_confirmed`],
//! [`RingMemory::load_u64`]): the copy is done by C (`_copy_to_iter`) and word loads are
//! volatile, so no Rust reference to racing bytes exists; the caller confirms under the lock
//! that nothing was reused, and the iterator is reverted (`IovIterDest::revert`, unsafe) when it
//! was. Writes from userspace under the ring lock go through [`copy_from_iter_nofault`], with
//! the user pages faulted in beforehand by [`fault_in_readable`] (`IovIterSource` has no way to
//! fault them in ahead of a copy).
//!
//! Every byte offset is checked against the allocation in one place, `RingMemory::at`.

use core::{
    marker::PhantomData,
    ptr::NonNull, //
};

use kernel::{
    alloc::allocator::VmallocPageIter,
    bindings,
    iov::{
        IovIterDest,
        IovIterSource, //
    },
    page::PAGE_SIZE,
    prelude::*,
    sync::Arc, //
};

/// A channel's memory: the control page followed by the ring's data, one zeroed `vmalloc`
/// allocation, so the kernel reaches any byte of it with plain loads and stores (no mapping per
/// access), and userspace maps its pages (see [`RingMemory::pages`]).
///
/// The kernel writes its contents only through its one [`RingAccess`] (made together with it by
/// [`ring_memory`]), which lives inside the channel's ring lock; a channel's producer (see
/// `abi::ProducerControl`) writes the producer page and the data through its own mapping while
/// its claim lasts, and the kernel then only reads them, with single loads. They are read
/// through it, and also without the lock: by `read()` ([`RingMemory::load_u64`],
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

// SAFETY: the memory belongs to the value and is not tied to a thread; in the kernel, who may
// write its contents is the one `RingAccess`, itself behind the ring lock (see `Sync` for the
// readers and for a producer's mapping).
unsafe impl Send for RingMemory {}
// SAFETY: shared references look up pages (`pages`) and read contents without the ring lock
// (`load_u64`, `copy_to_iter_confirmed`) while the one `RingAccess` may be writing them, as a
// seqlock's readers and writer do: every such access, on both sides, is a raw one (volatile
// loads, C copies, `RingSpan` copies), never a Rust reference to the bytes, and the readers
// discard what they read unless the ring lock confirms it was not being rewritten. Plain copies
// racing with these reads are still a data race in Rust's model; they are sound by the kernel
// memory model's convention that C seqlock data relies on too (KCSAN would want the readers'
// copies marked as such). While a producer has its writable mapping, userspace writes the
// producer page and the data at any time; the kernel then writes neither (the ring refuses
// its own writes while claimed) and reads them only by volatile loads and C copies, and
// validates what it read (`Ring::take_produced`).
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

    /// Copies `prefix` (kernel bytes: a record's checked header), then the byte ranges `pieces`
    /// (offset, length), in order, to userspace through `iov`, stopping at a fault, then calls
    /// `confirm` with the number of bytes copied (the prefix's included). If it
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
        prefix: &[u8],
        confirm: impl FnOnce(usize) -> Result<bool>,
    ) -> Result<(usize, bool)> {
        let mut copied = iov.copy_to_iter(prefix);
        let faulted = copied < prefix.len();
        for &(off, len) in pieces.iter().filter(|_| !faulted) {
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

    /// The page frame number of the page at byte offset `off` (page aligned) of the
    /// allocation, for a mapping that refers to the page by its frame (`Pages::map_producer`).
    pub(crate) fn pfn(&self, off: usize) -> Result<usize> {
        if off % PAGE_SIZE != 0 {
            return Err(EINVAL);
        }
        let p = self.at(off, PAGE_SIZE)?;
        // SAFETY: `p` is page aligned and within the live `vmalloc` allocation `self` owns
        // (checked by `at`), so `vmalloc_to_pfn` finds the page mapped there.
        Ok(unsafe { bindings::vmalloc_to_pfn(p.cast()) })
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
    let mem = Arc::new(
        RingMemory {
            _buf: buf,
            base,
            len,
        },
        GFP_KERNEL,
    )?;
    Ok((mem.clone(), RingAccess { mem }))
}

/// The only way to the contents of a [`RingMemory`]: exactly one exists per memory (made by
/// [`ring_memory`]), so its `&mut self` methods have the kernel's only access to the bytes.
pub(crate) struct RingAccess {
    /// The memory (kept alive by this reference).
    mem: Arc<RingMemory>,
}

impl RingAccess {
    /// Loads the aligned `u64` at `off` in one access (see [`RingMemory::load_u64`]): a
    /// producer's mapping may be writing it meanwhile, so the value is only a snapshot for the
    /// caller to validate.
    pub(crate) fn load_u64(&self, off: usize) -> Result<u64> {
        self.mem.load_u64(off)
    }

    /// Bytes `off..off + len`, to be written (`EINVAL` if outside the memory).
    pub(crate) fn span(&mut self, off: usize, len: usize) -> Result<RingSpan<'_>> {
        let p = self.mem.at(off, len)?.cast_mut();
        // `at` checked the range; the pointer is never null (it is within an allocation).
        let ptr = NonNull::new(p).ok_or(EINVAL)?;
        Ok(RingSpan {
            ptr,
            len,
            _borrow: PhantomData,
        })
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
        Self {
            ptr: NonNull::from(buf).cast(),
            len,
            _borrow: PhantomData,
        }
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
        let n = PAGE_SIZE
            .wrapping_sub(off)
            .min(dst.len().wrapping_sub(done));
        // SAFETY: `at` lies within `dst`, so (per this function's contract) within a live
        // `vmalloc` allocation.
        let page = unsafe { bindings::vmalloc_to_page(at.cast()) };
        if page.is_null() {
            break;
        }
        let (folio, iter) = (page.cast(), iov.as_raw());
        // Every `vmalloc` page is order-0 and not compound: the ring is allocated without
        // `VM_ALLOW_HUGE_VMAP`, and `vm_area_alloc_pages` splits each higher-order chunk with
        // `split_page`, so even a huge mapping is made of such pages.
        // SAFETY: such a page is its own folio; `off + n` stays within it; the kernel writes
        // only those `n` bytes, which `dst` (exclusive among writers) covers; the iterator is
        // valid (`as_raw`) and advanced by what is copied.
        let got = unsafe { bindings::copy_folio_from_iter_atomic(folio, off, n, iter) };
        done = done.wrapping_add(got);
        if got < n {
            break;
        }
    }
    done
}
