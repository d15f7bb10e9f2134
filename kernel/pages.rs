// SPDX-License-Identifier: GPL-2.0

//! The memory behind a channel: a control page and the ring's data pages.
//!
//! All pages are order-0, zeroed when allocated (so a new ring and record padding never show
//! old kernel bytes), allocated once when the channel is created and mappable into userspace
//! read-only (see [`Pages::map`]). Their contents are only touched through [`PageRing`], the
//! ring's [`Storage`], which lives inside the channel's ring lock; mapping them needs no lock
//! because it never touches their contents.

use kernel::{
    mm::virt::VmaNew,
    page::{
        Page,
        PAGE_SIZE, //
    },
    prelude::*,
    sync::{
        barrier::{
            smp_mb,
            Full,
            Write, //
        },
        Arc, //
    }, //
};

use crate::{
    abi,
    ring::{
        Cursor,
        Storage, //
    },
    sys, //
};

/// Byte offset of `RingControl::head_pos` in the control page.
const CTL_HEAD_POS: usize = 24;
/// Byte offset of `RingControl::head_seq`.
const CTL_HEAD_SEQ: usize = 32;
/// Byte offset of `RingControl::tail_pos`.
const CTL_TAIL_POS: usize = 40;
/// Byte offset of `RingControl::tail_seq`.
const CTL_TAIL_SEQ: usize = 48;

/// A channel's pages.
pub(crate) struct Pages {
    /// Page 0 of the mapping: [`abi::RingControl`].
    ctl: Page,
    /// The ring's data, `size / PAGE_SIZE` pages.
    data: KVec<Page>,
    /// Ring size in bytes.
    size: u64,
}

impl Pages {
    /// Allocates a zeroed ring of `size` bytes (a multiple of the page size).
    pub(crate) fn new(size: u64) -> Result<Self> {
        let pages = usize::try_from(size).map_err(|_| EINVAL)? / PAGE_SIZE;
        if pages == 0 || !size.is_power_of_two() || (pages as u64).wrapping_mul(PAGE_SIZE as u64) != size {
            return Err(EINVAL);
        }
        let mut data = KVec::with_capacity(pages, GFP_KERNEL)?;
        for _ in 0..pages {
            data.push(Page::alloc_page(GFP_KERNEL | __GFP_ZERO)?, GFP_KERNEL)?;
        }
        let ctl = Page::alloc_page(GFP_KERNEL | __GFP_ZERO)?;
        let pages = Self { ctl, data, size };
        // Not shared yet: no lock needed for these first writes.
        sys::page_write(&pages.ctl, 0, &abi::RING_MAGIC.to_ne_bytes())?;
        sys::page_write(&pages.ctl, 4, &abi::ABI_VERSION.to_ne_bytes())?;
        sys::page_write(&pages.ctl, 8, &size.to_ne_bytes())?;
        sys::page_write(&pages.ctl, 16, &(PAGE_SIZE as u64).to_ne_bytes())?;
        Ok(pages)
    }

    /// Length of the whole mapping: the control page plus the data mapped twice.
    pub(crate) fn mmap_bytes(&self) -> u64 {
        (PAGE_SIZE as u64).wrapping_add(self.size.wrapping_mul(2))
    }

    /// Inserts the pages into a new mapping: control page, data, data again.
    pub(crate) fn map(&self, vma: &VmaNew) -> Result {
        let map = vma.set_mixedmap();
        let mut addr = vma.start();
        // `Iterator::chain` spelled out: the prelude's `pin_init::Init` also has a `chain`.
        let data = self.data.iter();
        let pages = Iterator::chain(Iterator::chain(core::iter::once(&self.ctl), data.clone()), data);
        for page in pages {
            map.vm_insert_page(addr, page)?;
            addr = addr.checked_add(PAGE_SIZE).ok_or(EINVAL)?;
        }
        Ok(())
    }


    /// Calls `f(page, offset in page, range of buf)` for each page-sized piece of the ring
    /// range starting at `pos` with `len` bytes.
    fn for_each_piece(
        &self,
        pos: u64,
        len: usize,
        mut f: impl FnMut(&Page, usize, core::ops::Range<usize>) -> Result,
    ) -> Result {
        // Checked and wrapping arithmetic only: no panic paths in the data path. `size` is a
        // non-zero multiple of the page size, so none of these can actually fail or wrap.
        // The size is a power of two (checked in `new`): offsets wrap with a mask.
        let mask = usize::try_from(self.size.wrapping_sub(1)).map_err(|_| EINVAL)?;
        let mut off = (pos as usize) & mask;
        let mut done = 0usize;
        while done < len {
            let page = self.data.get(off / PAGE_SIZE).ok_or(EINVAL)?;
            let in_page = off % PAGE_SIZE;
            let n = PAGE_SIZE.wrapping_sub(in_page).min(len.wrapping_sub(done));
            let end = done.wrapping_add(n);
            f(page, in_page, done..end)?;
            done = end;
            off = off.wrapping_add(n) & mask;
        }
        Ok(())
    }
}

/// The ring's view of the pages: the only way their contents are written after creation.
pub(crate) struct PageRing(Arc<Pages>);

impl PageRing {
    /// The storage for `pages`; the caller keeps exactly one, inside its ring lock.
    pub(crate) fn new(pages: Arc<Pages>) -> Self {
        Self(pages)
    }

    /// Writes a `u64` field of the control page (an aligned 8-byte store).
    fn ctl_u64(&mut self, off: usize, v: u64) -> Result {
        sys::page_write(&self.0.ctl, off, &v.to_ne_bytes())
    }
}

impl Storage for PageRing {
    fn write(&mut self, pos: u64, src: &[u8]) -> Result {
        self.0.for_each_piece(pos, src.len(), |page, off, range| {
            sys::page_write(page, off, src.get(range).ok_or(EINVAL)?)
        })
    }

    fn write_with(
        &mut self,
        pos: u64,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]) -> Result,
    ) -> Result {
        self.0.for_each_piece(pos, len, |page, off, range| {
            sys::page_fill(page, off, range.len(), &mut *fill)?
        })
    }

    fn read(&self, pos: u64, dst: &mut [u8]) -> Result {
        let len = dst.len();
        self.0.for_each_piece(pos, len, |page, off, range| {
            sys::page_read(page, off, dst.get_mut(range).ok_or(EINVAL)?)
        })
    }

    fn publish_tail(&mut self, tail: Cursor) -> Result {
        self.ctl_u64(CTL_TAIL_SEQ, tail.seq)?;
        self.ctl_u64(CTL_TAIL_POS, tail.pos)?;
        // Readers must see the new tail before any discarded record is overwritten.
        smp_mb(Full);
        Ok(())
    }

    fn publish_head(&mut self, head: Cursor) -> Result {
        // The record must be complete before readers can see the head pass it.
        smp_mb(Write);
        self.ctl_u64(CTL_HEAD_SEQ, head.seq)?;
        self.ctl_u64(CTL_HEAD_POS, head.pos)
    }
}
