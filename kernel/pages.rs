// SPDX-License-Identifier: GPL-2.0

//! The memory behind a channel: a control page, a producer page and the ring's data pages.
//!
//! The pages are one `vmalloc` allocation ([`RingMemory`]): contiguous for the kernel, so
//! the ring copies records with plain `memcpy`s (at most two pieces when a record wraps around
//! the end), zeroed when allocated (so a new ring and record padding never show old kernel
//! bytes), allocated once when the channel is created and mappable into userspace read-only
//! (see [`Pages::map`]), and for a channel's producer its page and the data writable
//! ([`Pages::map_producer`]). The kernel writes their contents only through [`PageRing`], the
//! ring's [`Storage`], which lives inside the channel's ring lock (and never while a producer
//! has the ring), and reads them through it or, without the lock, by `read()` and mappings as
//! a seqlock's readers (see [`RingMemory`]); mapping them needs no lock because it never
//! touches their contents.

use kernel::{
    bindings,
    error::to_result,
    iov::IovIterDest,
    mm::virt::VmaNew,
    page::PAGE_SIZE,
    prelude::*,
    sync::Arc, //
};

use crate::{
    abi,
    compat::barrier::{
        smp_mb,
        Full,
        Read,
        Write, //
    },
    memory::{
        self,
        RingAccess,
        RingMemory,
        RingSpan, //
    },
    ring::{
        Cursor,
        Storage, //
    },
};

/// Byte offsets of the fields of [`abi::RingControl`] the kernel writes, in the control page.
const CTL_MAGIC: usize = core::mem::offset_of!(abi::RingControl, magic);
/// See [`CTL_MAGIC`].
const CTL_ABI_VERSION: usize = core::mem::offset_of!(abi::RingControl, abi_version);
/// See [`CTL_MAGIC`].
const CTL_RING_BYTES: usize = core::mem::offset_of!(abi::RingControl, ring_bytes);
/// See [`CTL_MAGIC`].
const CTL_DATA_OFFSET: usize = core::mem::offset_of!(abi::RingControl, data_offset);
/// See [`CTL_MAGIC`].
const CTL_HEAD_POS: usize = core::mem::offset_of!(abi::RingControl, head_pos);
/// See [`CTL_MAGIC`].
const CTL_HEAD_SEQ: usize = core::mem::offset_of!(abi::RingControl, head_seq);
/// See [`CTL_MAGIC`].
const CTL_TAIL_POS: usize = core::mem::offset_of!(abi::RingControl, tail_pos);
/// See [`CTL_MAGIC`].
const CTL_TAIL_SEQ: usize = core::mem::offset_of!(abi::RingControl, tail_seq);
/// See [`CTL_MAGIC`].
const CTL_PRODUCER_OFFSET: usize = core::mem::offset_of!(abi::RingControl, producer_offset);
/// See [`CTL_MAGIC`].
const CTL_ROOM_POS: usize = core::mem::offset_of!(abi::RingControl, room_pos);
/// See [`CTL_MAGIC`]; `waiters` and `flags` share this aligned word (see [`ctl_word`]).
const CTL_WAITERS: usize = core::mem::offset_of!(abi::RingControl, waiters);

// `waiters` and `flags` are stored together as one aligned `u64`.
const _: () = assert!(
    CTL_WAITERS % 8 == 0 && core::mem::offset_of!(abi::RingControl, flags) == CTL_WAITERS + 4
);

/// Byte offset of the producer page ([`abi::ProducerControl`]) in the channel's memory.
const PRODUCER: usize = PAGE_SIZE;
/// Byte offsets of the fields of the producer page.
const PRD_HEAD_POS: usize = PRODUCER + core::mem::offset_of!(abi::ProducerControl, head_pos);
/// See [`PRD_HEAD_POS`].
const PRD_HEAD_SEQ: usize = PRODUCER + core::mem::offset_of!(abi::ProducerControl, head_seq);
/// See [`PRD_HEAD_POS`].
const PRD_TAIL_POS: usize = PRODUCER + core::mem::offset_of!(abi::ProducerControl, tail_pos);
/// See [`PRD_HEAD_POS`].
const PRD_TAIL_SEQ: usize = PRODUCER + core::mem::offset_of!(abi::ProducerControl, tail_seq);

/// Byte offset of the ring's data in the channel's memory (after the control and producer
/// pages).
const DATA: usize = 2 * PAGE_SIZE;

/// The `waiters`/`flags` word of the control page, as one native `u64` store.
fn ctl_word(waiters: u32, flags: u32) -> u64 {
    let mut b = [0u8; 8];
    let (w, f) = b.split_at_mut(4);
    w.copy_from_slice(&waiters.to_ne_bytes());
    f.copy_from_slice(&flags.to_ne_bytes());
    u64::from_ne_bytes(b)
}

/// A channel's pages, for mapping them (their contents are reached through [`PageRing`]).
pub(crate) struct Pages {
    /// Control page ([`abi::RingControl`]) and data: one allocation.
    mem: Arc<RingMemory>,
    /// Ring size in bytes.
    size: u64,
}

impl Pages {
    /// Allocates a zeroed ring of `size` bytes (a power of two, a multiple of the page size)
    /// with its control page filled in; returns the pages and the ring's storage over them.
    pub(crate) fn new(size: u64) -> Result<(Self, PageRing)> {
        let bytes = usize::try_from(size).map_err(|_| EINVAL)?;
        if bytes == 0 || !size.is_power_of_two() || bytes % PAGE_SIZE != 0 {
            return Err(EINVAL);
        }
        let (mem, mut access) = memory::ring_memory(bytes.checked_add(DATA).ok_or(EINVAL)?)?;
        // Not shared yet: plain writes will do.
        access
            .span(CTL_MAGIC, 4)?
            .copy_from(&abi::RING_MAGIC.to_ne_bytes())?;
        access
            .span(CTL_ABI_VERSION, 4)?
            .copy_from(&abi::ABI_VERSION.to_ne_bytes())?;
        access.store_u64(CTL_RING_BYTES, size)?;
        access.store_u64(CTL_DATA_OFFSET, DATA as u64)?;
        access.store_u64(CTL_PRODUCER_OFFSET, PRODUCER as u64)?;
        Ok((
            Self { mem, size },
            PageRing {
                mem: access,
                mask: bytes.wrapping_sub(1),
                size: bytes,
                produced: false,
                word: (0, 0),
            },
        ))
    }

    /// `size - 1` (the size is a power of two).
    fn mask(&self) -> usize {
        (self.size as usize).wrapping_sub(1)
    }

    /// Reads the header of the record at ring position `pos` without the ring lock. The
    /// writer may be overwriting it (under `overwrite`): the caller must confirm under the
    /// lock afterwards that it was not (see `Channel::read`) before trusting what it got.
    pub(crate) fn peek_header(&self, pos: u64) -> Result<abi::RecordHeader> {
        let mut raw = [0u8; abi::RECORD_HEADER_SIZE as usize];
        for (i, chunk) in raw.chunks_exact_mut(8).enumerate() {
            // Records are 8-byte aligned: each word lies on one side of the ring's end.
            let at = pos.wrapping_add((i as u64).wrapping_mul(8));
            let [(off, _), _] = pieces(self.size as usize, self.mask(), at, 8)?;
            chunk.copy_from_slice(&self.mem.load_u64(off)?.to_ne_bytes());
        }
        Ok(abi::RecordHeader::from_bytes(&raw))
    }

    /// Copies `prefix`, then the `len` ring bytes at position `pos`, to userspace through
    /// `iov`, without the ring lock (so it may fault and sleep), then lets `confirm` (given
    /// the bytes copied) check under the lock that the writer did not reuse them meanwhile; if
    /// it says no, `iov` goes back to where it was. See [`RingMemory::copy_to_iter_confirmed`].
    pub(crate) fn copy_to_user(
        &self,
        pos: u64,
        len: usize,
        iov: &mut IovIterDest<'_>,
        prefix: &[u8],
        confirm: impl FnOnce(usize) -> Result<bool>,
    ) -> Result<(usize, bool)> {
        let pieces = pieces(self.size as usize, self.mask(), pos, len)?;
        self.mem
            .copy_to_iter_confirmed(&pieces, iov, prefix, confirm)
    }

    /// Length of the whole mapping: the control and producer pages plus the data mapped twice.
    pub(crate) fn mmap_bytes(&self) -> u64 {
        (DATA as u64).wrapping_add(self.size.wrapping_mul(2))
    }

    /// Whether `vma` asks for the producer's mapping ([`abi::MMAP_PRODUCER_OFFSET`]).
    pub(crate) fn is_producer_map(vma: &VmaNew) -> bool {
        vma_pgoff(vma) as u64 == abi::MMAP_PRODUCER_OFFSET / PAGE_SIZE as u64
    }

    /// Maps the pages read-only into a new mapping `vma`: control page, producer page, data,
    /// data again (see [`abi::RingControl`] for the layout).
    ///
    /// `EACCES` for a writable mapping, `EPERM` for an executable one, `EINVAL` for a wrong
    /// length or offset. Clearing `VM_MAYWRITE`/`VM_MAYEXEC` also refuses later `mprotect`
    /// upgrades; `VM_DONTEXPAND` refuses `mremap` growth.
    pub(crate) fn map(&self, vma: &VmaNew) -> Result {
        if vma.writable() {
            return Err(EACCES);
        }
        if vma.executable() {
            return Err(EPERM);
        }
        vma.try_clear_maywrite()?;
        vma.try_clear_mayexec()?;
        let len = vma.end().wrapping_sub(vma.start()) as u64;
        if len != self.mmap_bytes() || vma_pgoff(vma) != 0 {
            return Err(EINVAL);
        }
        vma.set_dontexpand();
        self.insert(vma, 0)
    }

    /// Maps the producer page and the data writable into a new mapping `vma` for the channel's
    /// producer: producer page, data, data again (see [`abi::ProducerControl`]).
    ///
    /// `EINVAL` unless it is shared (a private copy would publish nothing) and exactly that
    /// long; `EPERM` for an executable one. The mapping is not inherited across `fork`
    /// (`VM_DONTCOPY`: the claim belongs to the file, the mapping to the process that made
    /// it), cannot grow, and cannot become executable. Its pages are mapped by their frames
    /// (`remap_pfn_range`: `VM_PFNMAP | VM_IO`, special page table entries), so that no
    /// `get_user_pages`, fast or slow (`O_DIRECT`, `vmsplice`, io_uring buffers), can take a
    /// reference to them: once the mapping is gone, nothing the producer started can write
    /// the ring any more, which is what ending the claim relies on (`Ring::unclaim`). A
    /// mapping of normal pages (`vm_insert_page`) with `VM_IO` stops only the slow path.
    pub(crate) fn map_producer(&self, vma: &VmaNew) -> Result {
        if vma.executable() {
            return Err(EPERM);
        }
        if vma.flags() & bindings::VM_SHARED == 0 {
            return Err(EINVAL);
        }
        vma.try_clear_mayexec()?;
        let len = vma.end().wrapping_sub(vma.start()) as u64;
        if len != self.mmap_bytes().wrapping_sub(PRODUCER as u64) {
            return Err(EINVAL);
        }
        vma.set_dontexpand();
        vma.set_dontcopy();
        let end = DATA.wrapping_add(self.size as usize);
        let all = (PRODUCER..end).step_by(PAGE_SIZE);
        let data = (DATA..end).step_by(PAGE_SIZE);
        let mut addr = vma.start();
        for off in Iterator::chain(all, data) {
            let pfn = self.mem.pfn(off)?;
            let raw = vma.as_ptr();
            // In the driver's `mmap` hook (`VmaNew`'s invariant) the mmap lock is held for
            // writing and the VMA is not visible yet. The VMA is shared, so not copy-on-write,
            // and has no `VM_MIXEDMAP`. `pfn` is a page of this channel's memory, which
            // outlives the VMA (`vm_file` holds the file, which holds the channel).
            // SAFETY: as above; `addr` is page aligned, its page lies within the VMA (whose
            // length is exactly the pages mapped, checked above) and is not mapped yet (each
            // page once, in order); the entry is special and takes no page reference.
            let err = unsafe {
                bindings::remap_pfn_range(raw, addr, pfn, PAGE_SIZE, (*raw).vm_page_prot)
            };
            to_result(err)?;
            addr = addr.checked_add(PAGE_SIZE).ok_or(EINVAL)?;
        }
        Ok(())
    }

    /// Inserts the memory's pages into `vma` from page `first` on, then the data pages again.
    fn insert(&self, vma: &VmaNew, first: usize) -> Result {
        let map = vma.set_mixedmap();
        let mut addr = vma.start();
        // `Iterator::chain` spelled out: the prelude's `pin_init::Init` also has a `chain`.
        let all = self.mem.pages().skip(first);
        let data = self.mem.pages().skip(DATA / PAGE_SIZE);
        for page in Iterator::chain(all, data) {
            map.vm_insert_page(addr, &page)?;
            addr = addr.checked_add(PAGE_SIZE).ok_or(EINVAL)?;
        }
        Ok(())
    }
}

/// The ring's view of the channel's memory: the only way its contents are written after
/// creation. The ring keeps it inside its lock.
pub(crate) struct PageRing {
    /// The memory's one accessor.
    mem: RingAccess,
    /// `size - 1`: ring positions wrap with this mask (the size is a power of two).
    mask: usize,
    /// Ring size in bytes.
    size: usize,
    /// Whether a producer has claimed the channel: the producer page and the data are then
    /// written by userspace at any time, so the kernel reads them only by single loads and
    /// stops mirroring its head and tail into the producer page.
    produced: bool,
    /// The control page's `waiters` and `flags`, as last stored.
    word: (u32, u32),
}

impl PageRing {
    /// See [`pieces`].
    fn pieces(&self, pos: u64, len: usize) -> Result<[(usize, usize); 2]> {
        pieces(self.size, self.mask, pos, len)
    }
}

/// The (at most two) pieces of the ring range of `len` bytes at `pos` in a ring of `size`
/// bytes (`mask` is `size - 1`): offsets in the memory and lengths, the second one empty
/// unless the range wraps around the end.
fn pieces(size: usize, mask: usize, pos: u64, len: usize) -> Result<[(usize, usize); 2]> {
    if len > size {
        return Err(EINVAL);
    }
    let off = (pos as usize) & mask;
    let first = size.wrapping_sub(off).min(len);
    Ok([
        (DATA.wrapping_add(off), first),
        (DATA, len.wrapping_sub(first)),
    ])
}

impl Storage for PageRing {
    fn write(&mut self, pos: u64, src: &[u8]) -> Result {
        let [(a, n), (b, m)] = self.pieces(pos, src.len())?;
        let (s1, s2) = src.split_at(n);
        self.mem.span(a, n)?.copy_from(s1)?;
        if m > 0 {
            self.mem.span(b, m)?.copy_from(s2)?;
        }
        Ok(())
    }

    fn write_with(
        &mut self,
        pos: u64,
        len: usize,
        fill: &mut dyn FnMut(&mut RingSpan<'_>) -> Result,
    ) -> Result {
        let [(a, n), (b, m)] = self.pieces(pos, len)?;
        fill(&mut self.mem.span(a, n)?)?;
        if m > 0 {
            fill(&mut self.mem.span(b, m)?)?;
        }
        Ok(())
    }

    fn read(&self, pos: u64, dst: &mut [u8]) -> Result {
        // Word by word, with single loads: a producer may be writing these bytes meanwhile
        // (the caller validates what it got). Records are 8-byte aligned, so no word wraps.
        if pos % 8 != 0 || dst.len() % 8 != 0 {
            return Err(EINVAL);
        }
        for (i, chunk) in dst.chunks_exact_mut(8).enumerate() {
            let at = pos.wrapping_add((i as u64).wrapping_mul(8));
            let [(off, _), _] = self.pieces(at, 8)?;
            chunk.copy_from_slice(&self.mem.load_u64(off)?.to_ne_bytes());
        }
        Ok(())
    }

    fn publish_tail(&mut self, tail: Cursor) -> Result {
        self.mem.store_u64(CTL_TAIL_SEQ, tail.seq)?;
        self.mem.store_u64(CTL_TAIL_POS, tail.pos)?;
        if !self.produced {
            self.mem.store_u64(PRD_TAIL_SEQ, tail.seq)?;
            self.mem.store_u64(PRD_TAIL_POS, tail.pos)?;
        }
        // Readers must see the new tail before any discarded record is overwritten.
        smp_mb(Full);
        Ok(())
    }

    fn publish_head(&mut self, head: Cursor) -> Result {
        // The record must be complete before readers can see the head pass it, and `head_seq`
        // is stored before `head_pos`: a reader that loads `head_pos` with acquire finds the
        // matching `head_seq` (or a later one), as `abi::RingControl` promises.
        smp_mb(Write);
        self.mem.store_u64(CTL_HEAD_SEQ, head.seq)?;
        if !self.produced {
            self.mem.store_u64(PRD_HEAD_SEQ, head.seq)?;
        }
        smp_mb(Write);
        self.mem.store_u64(CTL_HEAD_POS, head.pos)?;
        if !self.produced {
            self.mem.store_u64(PRD_HEAD_POS, head.pos)?;
        }
        Ok(())
    }

    fn set_flags(&mut self, flags: u32) -> Result {
        self.produced = flags & abi::CTL_PRODUCER != 0;
        self.word.1 = flags;
        self.mem
            .store_u64(CTL_WAITERS, ctl_word(self.word.0, flags))?;
        smp_mb(Full);
        Ok(())
    }

    fn producer_head(&self) -> Result<u64> {
        let pos = self.mem.load_u64(PRD_HEAD_POS)?;
        // Acquire: the records below `pos` are read after it.
        smp_mb(Read);
        Ok(pos)
    }

    fn producer_tail(&self) -> Result<u64> {
        // After whatever was read of the ring before: a record read, then the tail found
        // unmoved, was not overwritten meanwhile (the producer raises the tail first).
        smp_mb(Read);
        let pos = self.mem.load_u64(PRD_TAIL_POS)?;
        smp_mb(Read);
        Ok(pos)
    }

    fn publish_waiters(&mut self, waiters: bool) -> Result {
        let w = u32::from(waiters);
        if w != self.word.0 {
            self.word.0 = w;
            self.mem.store_u64(CTL_WAITERS, ctl_word(w, self.word.1))?;
        }
        // Whoever set it looks at the producer's head next: see `abi::ProducerControl`.
        smp_mb(Full);
        Ok(())
    }

    fn publish_room(&mut self, room: u64) -> Result {
        self.mem.store_u64(CTL_ROOM_POS, room)
    }
}

/// The mapping's offset into the file, in pages.
fn vma_pgoff(vma: &VmaNew) -> usize {
    // SAFETY: `vma` refers to a valid VMA under construction, and `vm_pgoff` is a plain field
    // set by `mmap_region` before calling the driver's `mmap` hook; reading it is a plain load.
    unsafe { (*vma.as_ptr()).vm_pgoff }
}
