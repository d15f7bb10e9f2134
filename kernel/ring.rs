// SPDX-License-Identifier: GPL-2.0

//! The broadcast ring: records, subscriber cursors and the overflow policy.
//!
//! Pure logic over a [`Storage`] (the channel's pages in the driver, a plain buffer in the
//! KUnit tests below); no locking, no sleeping, no user memory: the channel calls every method
//! under its ring lock.
//!
//! Positions are byte offsets counted since the ring was created (`u64`, never wrapping in
//! practice; wrapping arithmetic keeps overflow checks quiet); a position maps to storage
//! offset `pos % size`. The ring holds the records between `tail` (oldest retained) and `head`
//! (where the next one goes). A record is a [`RecordHeader`], the payload and zero padding to
//! [`abi::RECORD_ALIGN`].

use kernel::prelude::*;

use crate::{
    abi::{
        self,
        RecordHeader, //
    },
    memory::RingSpan,
};

/// Most records one try of taking a producer's records checks before it commits them: a try
/// that meets the producer's tail moving starts over, and halves this for the next one (a
/// shorter walk is less likely to be passed by the producer's tail).
pub(crate) const TAKE_MAX: u64 = 1024;

/// Tries of one take that may meet the producer's tail moving before the take is postponed.
const TAKE_TRIES: u32 = 8;

/// Where records live: the channel's pages, or a buffer in tests.
pub(crate) trait Storage {
    /// Copies `src` to the ring at position `pos` (wrapping around the end).
    fn write(&mut self, pos: u64, src: &[u8]) -> Result;
    /// Copies from the ring at position `pos` (wrapping) into `dst`.
    fn read(&self, pos: u64, dst: &mut [u8]) -> Result;
    /// Lets `fill` fill in the `len` bytes at position `pos` (wrapping), piece by piece, in
    /// order; stops at its first error.
    fn write_with(
        &mut self,
        pos: u64,
        len: usize,
        fill: &mut dyn FnMut(&mut RingSpan<'_>) -> Result,
    ) -> Result;
    /// Makes the new tail visible to mmap readers; called *before* the records it discards
    /// are overwritten.
    fn publish_tail(&mut self, tail: Cursor) -> Result;
    /// Makes the new head visible to mmap readers; called *after* the record is written.
    fn publish_head(&mut self, head: Cursor) -> Result;
    /// Publishes the control page's `flags` (`abi::CTL_*`). While they have
    /// `abi::CTL_PRODUCER`, the head and tail are published to the control page only.
    fn set_flags(&mut self, flags: u32) -> Result;
    /// The producer's head position, as it published it (with acquire ordering).
    fn producer_head(&self) -> Result<u64>;
    /// The producer's tail position, as it published it, loaded after whatever was read of
    /// the ring before (a read barrier first).
    fn producer_tail(&self) -> Result<u64>;
    /// Tells the producer whether a reader may be waiting, then issues a full fence.
    fn publish_waiters(&mut self, waiters: bool) -> Result;
    /// Tells the producer where the slowest subscriber is (`block`).
    fn publish_room(&mut self, room: u64) -> Result;
}

/// The overflow policy of a channel.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Policy {
    /// Writers wait for the slowest subscriber; nothing is lost.
    Block,
    /// Writers never wait; lapped subscribers lose the oldest messages.
    Overwrite,
}

impl Policy {
    /// The policy with ABI value `v` (`EINVAL` if none).
    pub(crate) fn from_abi(v: u32) -> Result<Self> {
        match v {
            abi::POLICY_BLOCK => Ok(Self::Block),
            abi::POLICY_OVERWRITE => Ok(Self::Overwrite),
            _ => Err(EINVAL),
        }
    }

    /// The policy named `text`: its name (`block`, `overwrite`) or ABI value (`0`, `1`),
    /// exactly; `EINVAL` for anything else.
    pub(crate) fn parse(text: &str) -> Result<Self> {
        match text {
            "block" | "0" => Ok(Self::Block),
            "overwrite" | "1" => Ok(Self::Overwrite),
            _ => Err(EINVAL),
        }
    }

    /// The ABI value of this policy.
    pub(crate) fn to_abi(self) -> u32 {
        match self {
            Self::Block => abi::POLICY_BLOCK,
            Self::Overwrite => abi::POLICY_OVERWRITE,
        }
    }

    /// The name used in parameters, fdinfo and logs.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Block => "block",
            Self::Overwrite => "overwrite",
        }
    }
}

/// A point in the ring: a byte position and the sequence number of the record there.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub(crate) struct Cursor {
    /// Byte position.
    pub(crate) pos: u64,
    /// Sequence number of the record at `pos`.
    pub(crate) seq: u64,
}

impl Cursor {
    /// The cursor after the record here, whose payload is `len` bytes.
    pub(crate) fn after(self, len: u32) -> Cursor {
        Cursor {
            pos: self.pos.wrapping_add(record_size(len)),
            seq: self.seq.wrapping_add(1),
        }
    }
}

/// Sorts `v` by `key`, ascending, in place: a heapsort, with no allocation and, unlike the
/// sorts of `core`, no panic path (objtool flags the one in `core`'s quicksort in a module
/// built by Debian's toolchain).
fn sort_by_key(v: &mut [u16], key: impl Fn(u16) -> u64) {
    let k = |v: &[u16], i: usize| v.get(i).map_or(0, |&x| key(x));
    let swap = |v: &mut [u16], a: usize, b: usize| {
        if let (Some(&x), Some(&y)) = (v.get(a), v.get(b)) {
            if let Some(p) = v.get_mut(a) {
                *p = y;
            }
            if let Some(p) = v.get_mut(b) {
                *p = x;
            }
        }
    };
    // Moves the entry at `root` down the heap of the first `end` entries.
    let sift = |v: &mut [u16], mut root: usize, end: usize| loop {
        let Some(mut child) = root.checked_mul(2).and_then(|c| c.checked_add(1)) else {
            return;
        };
        if child >= end {
            return;
        }
        let right = child.wrapping_add(1);
        if right < end && k(v, child) < k(v, right) {
            child = right;
        }
        if k(v, root) >= k(v, child) {
            return;
        }
        swap(v, root, child);
        root = child;
    };
    let n = v.len();
    for root in (0..n / 2).rev() {
        sift(v, root, n);
    }
    for end in (1..n).rev() {
        swap(v, 0, end);
        sift(v, 0, end);
    }
}

/// The record at offset `at` of `buf`, laid out as in the ring and in batches (header, payload,
/// padding): its header and its size, if the header is there with `flags` 0 and the whole
/// record lies within `buf`.
pub(crate) fn record_in(buf: &[u8], at: usize) -> Option<(RecordHeader, usize)> {
    let h = buf
        .get(at..)
        .and_then(|rest| rest.first_chunk::<{ abi::RECORD_HEADER_SIZE as usize }>())
        .map(RecordHeader::from_bytes)
        .filter(|h| h.flags == 0)?;
    let size = usize::try_from(record_size(h.len)).ok()?;
    (at.checked_add(size)? <= buf.len()).then_some((h, size))
}

/// The leading run of records in `buf` (the [`abi::IOC_SEND_BATCH`] layout) that
/// [`Ring::push_records`] can take as they are: whole, `flags` 0, a payload of 1 to `msg_max`
/// bytes; zeroes their padding. Returns the run's length in bytes.
pub(crate) fn batch_run(buf: &mut [u8], msg_max: u32) -> usize {
    let hsize = abi::RECORD_HEADER_SIZE as usize;
    let mut at = 0usize;
    while let Some((h, size)) = record_in(buf, at) {
        if h.len == 0 || h.len > msg_max {
            break;
        }
        let body_end = at.wrapping_add(hsize).wrapping_add(h.len as usize);
        if let Some(pad) = buf.get_mut(body_end..at.wrapping_add(size)) {
            pad.fill(0);
        }
        at = at.wrapping_add(size);
    }
    at
}

/// One subscriber's state.
#[derive(Clone, Copy, Default)]
struct Slot {
    /// Whether an open file owns this slot.
    active: bool,
    /// The user id of the file's opener (for the per-user limit).
    uid: u32,
    /// The next record this subscriber receives.
    cur: Cursor,
    /// Messages lost to overwrites, in total.
    lost: u64,
    /// Messages lost in overruns not yet reported by `EPIPE`.
    pending_lost: u64,
    /// A release (`MEMCHAN_IOC_CONSUME`) up to this sequence number beyond the ring's head, if
    /// not 0: the mmap reader read records its producer published that were not taken yet (a
    /// take postponed, see [`Ring::take_postponed`]); applied as they are taken.
    consume_to: u64,
}

impl Slot {
    /// Moves this subscriber forward to `to`, losing the records it skips: counted in its
    /// losses and the channel's `stats`, reported by one `EPIPE`. A new overrun unless one is
    /// pending already (a reader that stays behind is lapped again on every write until it
    /// reads, which extends the same overrun).
    fn overrun_to(&mut self, to: Cursor, stats: &mut Stats) {
        let lost = to.seq.wrapping_sub(self.cur.seq);
        if self.pending_lost == 0 {
            stats.overruns = stats.overruns.wrapping_add(1);
        }
        self.lost = self.lost.wrapping_add(lost);
        self.pending_lost = self.pending_lost.wrapping_add(lost);
        self.cur = to;
        stats.lost = stats.lost.wrapping_add(lost);
    }

    /// Moves this subscriber forward to `to` (at or behind the head), past records its reader
    /// released without reading them through `read()`: counted as delivered. No-op if the
    /// cursor is there or beyond already.
    fn jump_to(&mut self, to: Cursor, stats: &mut Stats) {
        if to.seq > self.cur.seq {
            stats.delivered = stats
                .delivered
                .wrapping_add(to.seq.wrapping_sub(self.cur.seq));
            self.cur = to;
        }
    }
}

/// Channel counters.
#[derive(Clone, Copy, Default)]
pub(crate) struct Stats {
    /// Messages written.
    pub(crate) messages: u64,
    /// Payload bytes written.
    pub(crate) bytes: u64,
    /// Overruns: times a subscriber fell behind by a whole ring (each reported by one `EPIPE`).
    pub(crate) overruns: u64,
    /// Messages lost by subscribers in total.
    pub(crate) lost: u64,
    /// Writes that waited for room.
    pub(crate) blocked_writes: u64,
    /// Messages delivered to subscribers.
    pub(crate) delivered: u64,
}

/// Who may need a wake-up, kept with the ring (under its lock) by the channel: a waiter counts
/// itself in before the lock is released for its sleep, so a waker that sees nobody under the
/// lock can skip the wake-up (and its cross-CPU wait-queue lock) safely.
#[derive(Clone, Copy, Default)]
pub(crate) struct Waiting {
    /// Tasks sleeping until a record arrives.
    pub(crate) readers: u32,
    /// Sleeping readers still to be woken, one after the other, for the records published
    /// last (see `Channel::wake_readers`).
    pub(crate) readers_to_wake: u32,
    /// Tasks sleeping until there is room (`block` policy).
    pub(crate) writers: u32,
    /// Open files that have been polled (`poll`/`select`/`epoll`): they stay registered on the
    /// wait queues between calls, so they are always woken.
    pub(crate) pollers: u32,
}

/// Outcome of looking at a subscriber's next record.
pub(crate) enum Next {
    /// Nothing unread.
    Empty,
    /// The subscriber was lapped and lost messages (reported once, as `EPIPE`).
    Overrun,
    /// The next record (its payload follows the header at `pos + RECORD_HEADER_SIZE`).
    Record(RecordHeader, u64),
}

/// Size in bytes of a record with a `len`-byte payload.
pub(crate) fn record_size(len: u32) -> u64 {
    abi::record_size(len)
}

/// The ring of one channel.
pub(crate) struct Ring<S: Storage> {
    /// Where the bytes live.
    store: S,
    /// Ring size in bytes (a power of two).
    size: u64,
    /// Largest payload.
    msg_max: u32,
    /// Overflow policy.
    policy: Policy,
    /// Where the next record goes.
    head: Cursor,
    /// The oldest record retained.
    tail: Cursor,
    /// Subscriber slots; allocated once, at creation.
    slots: KVec<Slot>,
    /// A position at or before every active subscriber's cursor (exact after
    /// [`Ring::rescan`], stale-low after readers advance). Writes consult it instead of
    /// scanning all slots, which would make every message cost O(`max_readers`).
    low: Cursor,
    /// Active slots.
    subscribers: u32,
    /// Open files with write access.
    pub(crate) writers: u32,
    /// Counters.
    pub(crate) stats: Stats,
    /// Who may need a wake-up.
    pub(crate) waiting: Waiting,
    /// Under `block`: since when (`CLOCK_MONOTONIC` ns) writers have found no room, if they
    /// have; reset by every record published (the channel's stall limit counts from here).
    pub(crate) stalled_since: Option<u64>,
    /// A producer has claimed the ring (see `abi::ProducerControl`): records arrive through
    /// [`Ring::take_produced`].
    produced: bool,
    /// The producer published something invalid: nothing more of it is taken.
    fault: bool,
    /// A producer has had the ring at some point: its bytes may still be anything, so a
    /// record that is not the expected one is an overrun for its reader, not a driver bug.
    ever_produced: bool,
    /// The producer's own subscriber slot: kept at the head, so that it never holds the ring
    /// back (the producer reads nothing through it).
    producer_slot: Option<usize>,
    /// The last take left records the producer had published untaken (its tail kept moving,
    /// or its head ran on past the take's budget). They arrive with a later take: at the
    /// latest at the doorbell the producer rings after it moved its tail (see
    /// `abi::ProducerControl`).
    postponed: bool,
    /// Some subscriber has a [`Slot::consume_to`] set.
    consumes_pending: bool,
    /// Room for one index per subscriber slot, allocated with the ring: the releases one
    /// take applies, sorted ([`Ring::apply_consumes`]).
    order: KVec<u16>,
    /// A take applied a release ([`Slot::consume_to`]) that moved a cursor: under `block`,
    /// a producer waiting for room must look again ([`Ring::take_released`]).
    released: bool,
}

impl<S: Storage> Ring<S> {
    /// Creates an empty ring of `size` bytes over `store` with room for `max_readers`
    /// subscribers. `record_size(msg_max)` must fit in `size`.
    pub(crate) fn new(
        store: S,
        size: u64,
        msg_max: u32,
        policy: Policy,
        max_readers: usize,
    ) -> Result<Self> {
        if !size.is_power_of_two() || record_size(msg_max) > size {
            return Err(EINVAL);
        }
        if u16::try_from(max_readers).is_err() {
            return Err(EINVAL);
        }
        let mut slots = KVec::with_capacity(max_readers, GFP_KERNEL)?;
        for _ in 0..max_readers {
            slots.push(Slot::default(), GFP_KERNEL)?;
        }
        let order = KVec::with_capacity(max_readers, GFP_KERNEL)?;
        let start = Cursor { pos: 0, seq: 1 };
        let mut ring = Self {
            store,
            size,
            msg_max,
            policy,
            head: start,
            tail: start,
            slots,
            low: start,
            subscribers: 0,
            writers: 0,
            stats: Stats::default(),
            waiting: Waiting::default(),
            stalled_since: None,
            produced: false,
            fault: false,
            ever_produced: false,
            producer_slot: None,
            postponed: false,
            consumes_pending: false,
            order,
            released: false,
        };
        ring.store.publish_tail(start)?;
        ring.store.publish_head(start)?;
        ring.publish_flags()?;
        Ok(ring)
    }

    /// Ring size in bytes.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Largest payload.
    pub(crate) fn msg_max(&self) -> u32 {
        self.msg_max
    }

    /// Where the next record goes.
    pub(crate) fn head(&self) -> Cursor {
        self.head
    }

    /// The oldest record retained.
    pub(crate) fn tail(&self) -> Cursor {
        self.tail
    }

    /// Number of subscribers.
    pub(crate) fn subscribers(&self) -> u32 {
        self.subscribers
    }

    /// Adds a subscriber for user `uid` positioned at the head (it receives messages written
    /// from now on). `ENOSPC` when every slot is taken, or when `uid` already has `per_user`
    /// of them (0: no such limit).
    pub(crate) fn subscribe(&mut self, uid: u32, per_user: usize) -> Result<usize> {
        if per_user > 0
            && self
                .slots
                .iter()
                .filter(|s| s.active && s.uid == uid)
                .count()
                >= per_user
        {
            return Err(ENOSPC);
        }
        let head = self.head;
        let (i, slot) = self
            .slots
            .iter_mut()
            .enumerate()
            .find(|(_, s)| !s.active)
            .ok_or(ENOSPC)?;
        *slot = Slot {
            active: true,
            uid,
            cur: head,
            lost: 0,
            pending_lost: 0,
            consume_to: 0,
        };
        if self.subscribers == 0 {
            // No cursor constrained the bound: start it at the only one.
            self.low = head;
        }
        self.subscribers = self.subscribers.wrapping_add(1);
        Ok(i)
    }

    /// Removes subscriber `i`.
    pub(crate) fn unsubscribe(&mut self, i: usize) {
        if let Some(slot) = self.slots.get_mut(i) {
            if slot.active {
                slot.active = false;
                self.subscribers = self.subscribers.wrapping_sub(1);
            }
        }
    }

    /// Subscriber `i`'s slot (`EINVAL` if it is not one).
    fn slot(&self, i: usize) -> Result<&Slot> {
        self.slots.get(i).filter(|s| s.active).ok_or(EINVAL)
    }

    /// Subscriber `i`'s slot, mutably.
    fn slot_mut(&mut self, i: usize) -> Result<&mut Slot> {
        self.slots.get_mut(i).filter(|s| s.active).ok_or(EINVAL)
    }

    /// Lowers the bound [`Ring::low`] to `at` if `at` is before it (a cursor moved back).
    fn lower_bound(&mut self, at: Cursor) {
        if at.seq < self.low.seq {
            self.low = at;
        }
    }

    /// Recomputes [`Ring::low`] exactly: the slowest active cursor (the head if none).
    fn rescan(&mut self) {
        self.low = self
            .slots
            .iter()
            .filter(|s| s.active)
            .map(|s| s.cur)
            .min_by_key(|c| c.seq)
            .unwrap_or(self.head);
    }

    /// Whether `bytes` more bytes of records fit before `at`'s unread data.
    fn fits_after(&self, at: Cursor, bytes: u64) -> bool {
        self.head.pos.wrapping_sub(at.pos).saturating_add(bytes) <= self.size
    }

    /// Whether a record of `len` payload bytes can be added without overwriting anything a
    /// subscriber has not read yet (exact; scans the slots only if the cached bound says no).
    pub(crate) fn fits_unread(&mut self, len: u32) -> bool {
        self.fits_unread_bytes(record_size(len))
    }

    /// [`Ring::fits_unread`] for `bytes` bytes of records.
    fn fits_unread_bytes(&mut self, bytes: u64) -> bool {
        if self.subscribers == 0 || self.fits_after(self.low, bytes) {
            return true;
        }
        self.rescan();
        self.fits_after(self.low, bytes)
    }

    /// Whether a write of `len` bytes would have to wait now.
    pub(crate) fn would_block(&mut self, len: u32) -> bool {
        self.policy == Policy::Block && !self.fits_unread(len)
    }

    /// Reads the header of the record at `at`, checking that it is the expected one.
    fn header_at(&self, at: Cursor) -> Result<RecordHeader> {
        let mut raw = [0u8; abi::RECORD_HEADER_SIZE as usize];
        self.store.read(at.pos, &mut raw)?;
        let h = RecordHeader::from_bytes(&raw);
        if h.seq != at.seq || h.len > self.msg_max || h.len == 0 {
            if self.ever_produced {
                // The producer rewrote it (a record it discarded, or a hostile one).
                return Err(EBADMSG);
            }
            // The ring is only written under the lock; a mismatch is a driver bug.
            pr_err!(
                "ring corrupt at pos {} (seq {} expected {})\n",
                at.pos,
                h.seq,
                at.seq
            );
            return Err(EIO);
        }
        Ok(h)
    }

    /// Appends the message of `len` bytes whose record is laid out in `rec` (at least
    /// `record_size(len)` bytes: header room, the payload at [`abi::RECORD_HEADER_SIZE`],
    /// padding room): fills in the header and the padding and copies the record to the ring
    /// in one piece. `EMSGSIZE` if it is too long; `EAGAIN` if the policy is `block` and it
    /// does not fit yet (the caller waits and retries). Returns its sequence number.
    pub(crate) fn push_record(
        &mut self,
        rec: &mut [u8],
        len: u32,
        timestamp_ns: u64,
    ) -> Result<u64> {
        let (header, rsize) = self.reserve(len, timestamp_ns)?;
        let rec = rec.get_mut(..rsize).ok_or(EINVAL)?;
        let (head, rest) = rec
            .split_first_chunk_mut::<{ abi::RECORD_HEADER_SIZE as usize }>()
            .ok_or(EINVAL)?;
        *head = header.to_bytes();
        rest.get_mut(len as usize..).ok_or(EINVAL)?.fill(0);
        self.store.write(self.head.pos, rec)?;
        self.advance(rsize as u64, 1, u64::from(header.len))?;
        Ok(header.seq)
    }

    /// Appends a message of `len` bytes that `fill` writes straight into the ring (piece by
    /// piece, see [`Storage::write_with`]); if `fill` fails, nothing is published and its
    /// error is returned (under `overwrite`, the oldest records may have been discarded to
    /// make room already). Otherwise as [`Ring::push_record`].
    pub(crate) fn push_with(
        &mut self,
        len: u32,
        timestamp_ns: u64,
        fill: &mut dyn FnMut(&mut RingSpan<'_>) -> Result,
    ) -> Result<u64> {
        let (header, rsize) = self.reserve(len, timestamp_ns)?;
        let hsize = abi::RECORD_HEADER_SIZE as usize;
        let body = self.head.pos.wrapping_add(hsize as u64);
        self.store.write_with(body, len as usize, fill)?;
        self.store.write(self.head.pos, &header.to_bytes())?;
        let zeros = [0u8; abi::RECORD_ALIGN as usize];
        let pad = rsize.wrapping_sub(hsize).wrapping_sub(len as usize);
        if pad > 0 {
            self.store.write(
                body.wrapping_add(u64::from(len)),
                zeros.get(..pad).ok_or(EINVAL)?,
            )?;
        }
        self.advance(rsize as u64, 1, u64::from(header.len))?;
        Ok(header.seq)
    }

    /// Makes room at the head for a message of `len` bytes (discarding the oldest records
    /// under `overwrite`); returns its header and record size. `EMSGSIZE` if it is too long,
    /// `EAGAIN` if it does not fit yet under `block`.
    fn reserve(&mut self, len: u32, timestamp_ns: u64) -> Result<(RecordHeader, usize)> {
        if len > self.msg_max {
            return Err(EMSGSIZE);
        }
        let rsize = record_size(len);
        self.make_room(rsize)?;
        let header = RecordHeader {
            seq: self.head.seq,
            timestamp_ns,
            len,
            flags: 0,
        };
        Ok((header, usize::try_from(rsize).map_err(|_| EINVAL)?))
    }

    /// Makes room at the head for `rsize` bytes of records: discards the oldest records under
    /// `overwrite` (lapping the readers still on them); `EAGAIN` if they do not fit yet under
    /// `block`, `EMSGSIZE` if they could never fit.
    fn make_room(&mut self, rsize: u64) -> Result {
        if rsize > self.size {
            return Err(EMSGSIZE);
        }
        if self.policy == Policy::Block && !self.fits_unread_bytes(rsize) {
            return Err(EAGAIN);
        }
        self.discard_for(rsize)
    }

    /// Under `block`, after writers waited longer than the channel's stall limit: drops the
    /// readers that hold the ring back to an overrun. Every reader without room after it for
    /// `rsize` more bytes loses everything it has not read (counted and reported by `EPIPE`
    /// as any overrun is) and goes on from the head, so that one dead reader stalls writers
    /// once, not once per record. `EMSGSIZE` if the records could never fit.
    pub(crate) fn drop_stalled(&mut self, rsize: u64) -> Result {
        if rsize > self.size {
            return Err(EMSGSIZE);
        }
        let (head, size) = (self.head, self.size);
        for s in self.slots.iter_mut().filter(|s| s.active) {
            if head.pos.wrapping_sub(s.cur.pos).saturating_add(rsize) > size {
                s.overrun_to(head, &mut self.stats);
            }
        }
        self.rescan();
        self.stalled_since = None;
        Ok(())
    }

    /// Discards the oldest records until `rsize` more bytes fit (lapping the readers still on
    /// them).
    fn discard_for(&mut self, rsize: u64) -> Result {
        let old_tail = self.tail;
        while self
            .head
            .pos
            .wrapping_sub(self.tail.pos)
            .saturating_add(rsize)
            > self.size
        {
            let h = self.header_at(self.tail)?;
            self.tail = self.tail.after(h.len);
        }
        if self.tail != old_tail {
            self.store.publish_tail(self.tail)?;
            self.lap_readers();
        }
        Ok(())
    }

    /// Appends the records laid out back to back in `recs` (header, payload, zero padding
    /// each; their `len` fields at most `msg_max` and non-zero, `flags` 0, their sizes adding
    /// up to `recs.len()`: the caller checked), in one copy: numbers them from the head's
    /// sequence number, stamps them all with `timestamp_ns`, and publishes the head once.
    /// `EAGAIN` if the policy is `block` and they do not all fit yet, `EMSGSIZE` if they are
    /// more than the ring holds (nothing appended either way).
    pub(crate) fn push_records(&mut self, recs: &mut [u8], timestamp_ns: u64) -> Result {
        let bytes = recs.len() as u64;
        self.make_room(bytes)?;
        let (mut at, mut seq, mut payload) = (0usize, self.head.seq, 0u64);
        while at < recs.len() {
            let (h, size) = record_in(recs, at).ok_or(EINVAL)?;
            let head = recs
                .get_mut(at..)
                .and_then(|r| r.first_chunk_mut::<{ abi::RECORD_HEADER_SIZE as usize }>())
                .ok_or(EINVAL)?;
            *head = RecordHeader {
                seq,
                timestamp_ns,
                len: h.len,
                flags: 0,
            }
            .to_bytes();
            seq = seq.wrapping_add(1);
            payload = payload.wrapping_add(u64::from(h.len));
            at = at.wrapping_add(size);
        }
        self.store.write(self.head.pos, recs)?;
        self.advance(bytes, seq.wrapping_sub(self.head.seq), payload)
    }

    /// Publishes the `count` records (`bytes` in all, `payload` bytes of payload) just written
    /// at the head.
    fn advance(&mut self, bytes: u64, count: u64, payload: u64) -> Result {
        self.head = Cursor {
            pos: self.head.pos.wrapping_add(bytes),
            seq: self.head.seq.wrapping_add(count),
        };
        self.store.publish_head(self.head)?;
        if let Some(s) = self.producer_slot.and_then(|i| self.slots.get_mut(i)) {
            s.cur = self.head;
        }
        self.stalled_since = None;
        self.stats.messages = self.stats.messages.wrapping_add(count);
        self.stats.bytes = self.stats.bytes.wrapping_add(payload);
        Ok(())
    }

    /// Moves every subscriber whose next record was discarded to the tail, counting its loss.
    /// Scans the slots only if the cached bound says a cursor may be behind the tail.
    fn lap_readers(&mut self) {
        let tail = self.tail;
        if self.subscribers == 0 || self.low.seq >= tail.seq {
            return;
        }
        let producer = self.producer_slot;
        for (i, s) in self.slots.iter_mut().enumerate().filter(|(_, s)| s.active) {
            if s.cur.seq >= tail.seq {
                continue;
            }
            if Some(i) == producer {
                // Reads nothing: it only follows the head.
                s.cur = tail;
            } else {
                s.overrun_to(tail, &mut self.stats);
            }
        }
        self.rescan();
    }

    /// Subscriber `i`'s next record, or a pending overrun (which takes precedence). With a
    /// producer, a record it has rewritten since it was taken (discarded under `overwrite`, or
    /// corrupted) is an overrun to the head: the subscriber loses what it had not read.
    pub(crate) fn next(&mut self, i: usize) -> Result<Next> {
        let s = self.slot(i)?;
        if s.pending_lost > 0 {
            return Ok(Next::Overrun);
        }
        if s.cur.seq == self.head.seq {
            return Ok(Next::Empty);
        }
        let cur = s.cur;
        match self.header_at(cur) {
            // The kernel writes `flags` 0; a record with others was rewritten by a producer.
            Ok(h) if h.flags == 0 && self.within_head(cur, h.len) => Ok(Next::Record(h, cur.pos)),
            Ok(_) | Err(_) if self.ever_produced => {
                let head = self.head;
                let s = self.slots.get_mut(i).ok_or(EINVAL)?;
                s.overrun_to(head, &mut self.stats);
                Ok(Next::Overrun)
            }
            Ok(_) => Err(EIO),
            Err(e) => Err(e),
        }
    }

    /// Whether the record at `at` with a payload of `len` bytes ends at or before the head.
    fn within_head(&self, at: Cursor, len: u32) -> bool {
        record_size(len) <= self.head.pos.wrapping_sub(at.pos)
    }

    /// Whether a producer has claimed the ring.
    pub(crate) fn produced(&self) -> bool {
        self.produced
    }

    /// A producer claims the ring (`EBUSY` if one has): from now on records arrive through
    /// [`Ring::take_produced`]; the producer page already holds the head and tail.
    pub(crate) fn claim(&mut self, slot: usize) -> Result {
        if self.produced {
            return Err(EBUSY);
        }
        let head = self.head;
        let s = self.slot_mut(slot)?;
        s.cur = head;
        s.pending_lost = 0;
        self.rescan();
        self.store.publish_room(self.low.pos)?;
        self.producer_slot = Some(slot);
        self.produced = true;
        self.ever_produced = true;
        self.fault = false;
        self.publish_flags()
    }

    /// Publishes the control page's `flags` from the ring's state.
    fn publish_flags(&mut self) -> Result {
        let mut flags = 0;
        if self.produced {
            flags |= abi::CTL_PRODUCER;
        }
        if self.fault {
            flags |= abi::CTL_PRODUCER_FAULT;
        }
        if self.policy == Policy::Overwrite {
            flags |= abi::CTL_OVERWRITE;
        }
        self.store.set_flags(flags)
    }

    /// The overflow policy.
    pub(crate) fn policy(&self) -> Policy {
        self.policy
    }

    /// Sets the overflow policy.
    pub(crate) fn set_policy(&mut self, policy: Policy) -> Result {
        self.policy = policy;
        self.publish_flags()
    }

    /// The producer left: takes what it had published, then mirrors the ring's head and tail
    /// into the producer page again, for readers and the next producer.
    pub(crate) fn unclaim(&mut self) -> Result<bool> {
        let took = self.take_produced();
        // A tail the take did not reach (the producer discarded all it had published, and
        // maybe began to overwrite the records the ring holds; or it faulted): the ring's
        // records may be rewritten, payloads included, so none of them is kept.
        let discarded = !self.store.producer_tail().is_ok_and(|t| t == self.tail.pos);
        self.produced = false;
        self.fault = false;
        self.postponed = false;
        self.producer_slot = None;
        // Releases beyond the head wait for records no one will publish now.
        for s in self.slots.iter_mut() {
            s.consume_to = 0;
        }
        self.consumes_pending = false;
        self.released = false;
        // No one writes the bytes any more (the producer's mapping is gone): check once that
        // every record from the tail to the head is whole, as the kernel's own writes and
        // discards expect; if one is not, the ring starts over empty at the head (its readers
        // lapped, with exact counts).
        if discarded || !self.records_whole() {
            self.tail = self.head;
            self.lap_readers();
        }
        self.publish_flags()?;
        self.store.publish_tail(self.tail)?;
        self.store.publish_head(self.head)?;
        Ok(took)
    }

    /// Whether the records from the tail to the head are all whole and numbered in order (one
    /// pass, at most one step per [`record_size`]`(1)` bytes of the ring).
    fn records_whole(&self) -> bool {
        let mut cur = self.tail;
        while cur.seq != self.head.seq {
            match self.header_at(cur) {
                Ok(h) if self.within_head(cur, h.len) && h.flags == 0 => cur = cur.after(h.len),
                _ => return false,
            }
        }
        cur.pos == self.head.pos
    }

    /// Whether the producer published something invalid (see [`Ring::take_produced`]).
    pub(crate) fn faulted(&self) -> bool {
        self.fault
    }

    /// Tells the producer whether readers wait (see `abi::ProducerControl`), with a full fence
    /// after it; a no-op without a producer.
    pub(crate) fn publish_waiters(&mut self, waiters: bool) -> Result {
        if self.produced {
            self.store.publish_waiters(waiters)?;
        }
        Ok(())
    }

    /// Recomputes and publishes the slowest subscriber's position for the producer; returns
    /// whether `bytes` more bytes fit before it.
    pub(crate) fn room_for(&mut self, bytes: u64) -> Result<bool> {
        self.rescan();
        self.store.publish_room(self.low.pos)?;
        Ok(self.fits_after(self.low, bytes))
    }

    /// Takes the records the producer published since the last call (see
    /// `abi::ProducerControl`): validates its tail and head, and every record between the
    /// ring's head and the producer's, each read once; publishes them as the ring's. Returns
    /// whether any arrived. Something invalid sets the fault: nothing more is taken from this
    /// producer. Bounded: at most one ring's worth of records, and [`TAKE_TRIES`] tries that
    /// meet the tail moving; if either runs out, the take is postponed
    /// ([`Ring::take_postponed`]).
    pub(crate) fn take_produced(&mut self) -> bool {
        self.postponed = false;
        if !self.produced || self.fault {
            return false;
        }
        let mut took = false;
        if self.take_records(&mut took).is_err() {
            self.fault = true;
            let _ = self.publish_flags();
        }
        if took && self.consumes_pending {
            self.apply_consumes();
        }
        took
    }

    /// Whether the last [`Ring::take_produced`] left records untaken that its producer had
    /// published (without fault): a correct producer moving its tail all along, or one
    /// publishing faster than a take checks. The records arrive with a later take.
    pub(crate) fn take_postponed(&self) -> bool {
        self.produced && self.postponed
    }

    /// Whether a take applied a release that moved a cursor since the last call (under
    /// `block`, there may be room for a waiting producer).
    pub(crate) fn take_released(&mut self) -> bool {
        core::mem::take(&mut self.released)
    }

    /// [`Ring::take_produced`] without the fault handling: tries until one reaches the
    /// producer's head. A correct producer may be moving its tail (and overwriting what it
    /// discarded) while the records are checked; a try changes the ring only when it
    /// succeeds, so one that met a moving tail changes nothing and the next walks half as far
    /// (one that succeeds, twice as far, up to [`TAKE_MAX`]).
    /// Sets `took` if any record arrived. `EBADMSG` only for what no correct producer
    /// publishes.
    fn take_records(&mut self, took: &mut bool) -> Result {
        // Records in a full ring, and one: a correct producer's head is never further ahead.
        let mut budget = (self.size / record_size(1)).saturating_add(1);
        let mut cap = TAKE_MAX;
        let mut missed = 0u32;
        while budget > 0 {
            match self.try_take(cap.min(budget)) {
                Ok((n, reached)) => {
                    *took |= n > 0;
                    if reached {
                        return Ok(());
                    }
                    if n == 0 {
                        break;
                    }
                    budget = budget.saturating_sub(n);
                    cap = cap.saturating_mul(2).min(TAKE_MAX);
                }
                Err(e) if e == EAGAIN => {
                    missed = missed.saturating_add(1);
                    if missed >= TAKE_TRIES {
                        break;
                    }
                    cap = (cap / 2).max(1);
                }
                Err(e) => return Err(e),
            }
        }
        self.postponed = true;
        Ok(())
    }

    /// Applies the releases ([`Slot::consume_to`]) that went beyond the ring's head, as far as
    /// the records have arrived. A release to or beyond the head moves the cursor there in one
    /// step; those that fall between are sorted by where they end and applied in one walk
    /// over the records (each is a record boundary on it), so that a take's hold of the lock
    /// walks the ring at most once more, however many readers released.
    fn apply_consumes(&mut self) {
        let head = self.head;
        let mut pending = false;
        self.order.clear();
        let mut from: Option<Cursor> = None;
        for (i, s) in self.slots.iter_mut().enumerate() {
            if !s.active || s.consume_to == 0 {
                continue;
            }
            let before = s.cur.seq;
            if s.consume_to >= head.seq {
                s.jump_to(head, &mut self.stats);
                if s.consume_to == head.seq {
                    s.consume_to = 0;
                } else {
                    pending = true;
                }
            } else if s.consume_to > s.cur.seq {
                // Never full: room for every slot. The walk starts at the first cursor.
                if let Ok(i) = u16::try_from(i) {
                    if self.order.push_within_capacity(i).is_ok() {
                        from =
                            Some(from.map_or(s.cur, |f| if s.cur.seq < f.seq { s.cur } else { f }));
                        continue;
                    }
                }
                s.consume_to = 0;
            } else {
                s.consume_to = 0;
            }
            self.released |= s.cur.seq != before;
        }
        self.consumes_pending = pending;
        let Some(mut cur) = from else {
            return;
        };
        let slots = &self.slots;
        sort_by_key(&mut self.order, |i| {
            slots.get(usize::from(i)).map_or(0, |s| s.consume_to)
        });
        for k in 0..self.order.len() {
            let Some(i) = self.order.get(k).map(|&i| usize::from(i)) else {
                break;
            };
            let upto = self.slots.get(i).map_or(0, |s| s.consume_to);
            // Up to this release's end; a record that is not whole any more (rewritten since it
            // was taken) stops the walk.
            while cur.seq < upto {
                match self.header_at(cur) {
                    Ok(h) if self.within_head(cur, h.len) => cur = cur.after(h.len),
                    _ => break,
                }
            }
            // As far as the records are whole (`next` finds the overrun where they stop).
            if let Some(s) = self.slots.get_mut(i) {
                s.consume_to = 0;
                let before = s.cur.seq;
                s.jump_to(cur, &mut self.stats);
                self.released |= s.cur.seq != before;
            }
        }
    }

    /// One try of [`Ring::take_records`]: loads the producer's head once, checks its tail, and
    /// checks the records from where they still stand towards the head (at most `cap` of
    /// them); only then takes the tail (lapping the readers it passed) and the records.
    /// Returns how many records it took and whether it reached the producer's head. `EAGAIN`,
    /// with nothing changed, where the producer may have moved its tail meanwhile (a correct
    /// one raises it before it overwrites what it discarded, so what was read may be gone):
    /// try again; `EBADMSG` for anything no correct producer publishes.
    fn try_take(&mut self, cap: u64) -> Result<(u64, bool)> {
        // The tail position before and after the head: if it did not move meanwhile, the
        // pair is one the producer had published together (it raises its tail before it
        // writes what needs the room, and publishes its head after).
        let tail_pos = self.store.producer_tail()?;
        let new_head = self.store.producer_head()?;
        if self.store.producer_tail()? != tail_pos {
            return Err(EAGAIN);
        }
        if new_head.wrapping_sub(self.head.pos) % u64::from(abi::RECORD_ALIGN) != 0 {
            return Err(EBADMSG);
        }
        let tail = match self.check_tail(tail_pos, new_head) {
            Err(e) if e == ENODATA => return Ok((0, true)),
            t => t?,
        };
        // The ring never spans more than its size: a correct producer raises its tail before
        // it publishes the head that needs it, and the tail was the same after the head.
        if new_head.wrapping_sub(tail.pos) > self.size {
            return Err(EBADMSG);
        }
        // If the producer lapped the ring's head, its records now start at its tail.
        let start = if tail.seq > self.head.seq {
            tail
        } else {
            self.head
        };
        // Between the tail and the head, never behind the ring's head (no head moves back).
        let ahead = new_head.wrapping_sub(start.pos);
        if ahead > new_head.wrapping_sub(tail.pos) {
            return Err(EBADMSG);
        }
        let (mut cur, mut payload, mut count) = (start, 0u64, 0u64);
        let mut bad = false;
        while cur.pos != new_head && count < cap {
            let ok = match self.header_at(cur) {
                Ok(h) => (h.flags == 0 && record_size(h.len) <= new_head.wrapping_sub(cur.pos))
                    .then_some(h),
                Err(_) => None,
            };
            let Some(h) = ok else {
                bad = true;
                break;
            };
            payload = payload.wrapping_add(u64::from(h.len));
            cur = cur.after(h.len);
            count = count.wrapping_add(1);
        }
        // If the tail has not passed where the walk started, nothing read was overwritten
        // meanwhile (what the producer overwrites lies behind the tail it raised first).
        let passed = (self.store.producer_tail()?.wrapping_sub(start.pos) as i64) > 0;
        if passed {
            return Err(EAGAIN);
        }
        if bad {
            return Err(EBADMSG);
        }
        if tail.pos != self.tail.pos {
            self.tail = tail;
            self.store.publish_tail(tail)?;
            self.lap_readers();
        }
        let reached = cur.pos == new_head;
        if cur.pos == start.pos {
            return Ok((0, reached));
        }
        // Records the producer discarded before they were taken count as written and lost.
        let skipped = start.seq.wrapping_sub(self.head.seq);
        self.stats.messages = self.stats.messages.wrapping_add(skipped);
        self.head = start;
        self.advance(
            cur.pos.wrapping_sub(start.pos),
            cur.seq.wrapping_sub(start.seq),
            payload,
        )?;
        Ok((count, reached))
    }

    /// The producer's tail at position `pos`: the ring's own if it did not move, else the
    /// record there, with its sequence number (the first the producer kept, not overwritten
    /// before the tail moves on; the page's `tail_seq` is for readers), so no torn pair of
    /// words is ever taken. The position must be aligned, after the ring's tail and at most at
    /// `new_head`; the record there whole, and its sequence number in agreement with the
    /// positions: at most one record per [`record_size`]`(1)` bytes moved, on the same side of
    /// the ring's head. `EAGAIN` if the tail moved on while the record was read (a correct
    /// producer raises its tail, then fences, then overwrites: what was read may be a newer
    /// record, or half of one); `EBADMSG` for a position or a record, read while the tail held
    /// still, that no correct producer publishes; `ENODATA` if the tail is at `new_head` but
    /// not at the ring's head (the producer discarded all it published and has not published
    /// since: nothing to take yet). Changes nothing.
    fn check_tail(&self, pos: u64, new_head: u64) -> Result<Cursor> {
        if pos == self.tail.pos {
            return Ok(self.tail);
        }
        let moved = pos.wrapping_sub(self.tail.pos);
        if moved > new_head.wrapping_sub(self.tail.pos) || pos % u64::from(abi::RECORD_ALIGN) != 0 {
            return Err(EBADMSG);
        }
        if pos == new_head {
            if pos == self.head.pos {
                // Everything discarded, up to the ring's own head.
                return Ok(self.head);
            }
            // Everything the ring did not take discarded, and nothing new published yet (the
            // head's sequence number is not known): nothing to take until the producer
            // publishes, and rings the doorbell if readers wait. Only ahead of the ring's head.
            if (pos.wrapping_sub(self.head.pos) as i64) <= 0 {
                return Err(EBADMSG);
            }
            return Err(ENODATA);
        }
        let mut raw = [0u8; abi::RECORD_HEADER_SIZE as usize];
        self.store.read(pos, &mut raw)?;
        // `producer_tail` orders this load after the read of the record.
        if self.store.producer_tail()? != pos {
            return Err(EAGAIN);
        }
        let h = RecordHeader::from_bytes(&raw);
        let t = Cursor { pos, seq: h.seq };
        let seqs = t.seq.wrapping_sub(self.tail.seq);
        // Relative to the ring's head: both behind it, both at it, or both beyond it.
        let by_pos = t.pos.wrapping_sub(self.head.pos) as i64;
        let by_seq = t.seq.wrapping_sub(self.head.seq) as i64;
        let ok = h.flags == 0
            && h.len != 0
            && h.len <= self.msg_max
            && record_size(h.len) <= new_head.wrapping_sub(pos)
            && seqs != 0
            && seqs <= moved / record_size(1)
            && by_pos.signum() == by_seq.signum()
            && by_seq.unsigned_abs() <= by_pos.unsigned_abs() / record_size(1);
        if !ok {
            return Err(EBADMSG);
        }
        Ok(t)
    }

    /// Clears subscriber `i`'s pending overrun once it has been reported.
    pub(crate) fn clear_overrun(&mut self, i: usize) -> Result {
        self.slot_mut(i)?.pending_lost = 0;
        Ok(())
    }

    /// Moves subscriber `i`'s cursor from `from` to `to`, past the `count` records between,
    /// which its reader copied out without the lock, provided that the cursor is still at
    /// `from` with no overrun pending (no other reader of the file took them, no seek, not
    /// lapped) and the tail has not passed `from` (none of them was discarded, so none was
    /// overwritten while being copied). Returns whether the cursor moved.
    pub(crate) fn commit_range(
        &mut self,
        i: usize,
        from: Cursor,
        to: Cursor,
        count: u64,
    ) -> Result<bool> {
        // With a producer, its own tail counts as well, loaded now (after the copy): the ring's
        // may be behind it if the last take met it moving. A correct producer raises it before
        // it overwrites records; one that passed `from` overwrote what was copied, which laps
        // the reader (up to the head: where the tail is exactly was not checked).
        let passed =
            self.produced && (self.store.producer_tail()?.wrapping_sub(from.pos) as i64) > 0;
        let (tail, head) = (self.tail, self.head);
        let s = self.slots.get_mut(i).filter(|s| s.active).ok_or(EINVAL)?;
        if s.cur != from || s.pending_lost != 0 || tail.seq > from.seq {
            return Ok(false);
        }
        if passed {
            s.overrun_to(head, &mut self.stats);
            return Ok(false);
        }
        s.cur = to;
        self.stats.delivered = self.stats.delivered.wrapping_add(count);
        Ok(true)
    }

    /// Moves subscriber `i` to the oldest retained record or to the head; clears its overrun.
    pub(crate) fn seek(&mut self, i: usize, whence: u32) -> Result {
        let to = match whence {
            abi::SEEK_OLDEST => self.tail,
            abi::SEEK_NEWEST => self.head,
            _ => return Err(EINVAL),
        };
        let s = self.slot_mut(i)?;
        s.cur = to;
        s.pending_lost = 0;
        s.consume_to = 0;
        self.lower_bound(to);
        if self.produced {
            // `room_pos` must never be ahead of the slowest reader.
            self.rescan();
            self.store.publish_room(self.low.pos)?;
        }
        Ok(())
    }

    /// Advances subscriber `i` past every record with a sequence number below `upto` (the
    /// mmap reader's release). `EINVAL` if `upto` is beyond the head, unless a producer may
    /// have published it (a mapped reader reads the producer's head): then the cursor moves
    /// to the head, and what goes beyond applies as the records are taken. No-op if the
    /// cursor is already past it.
    pub(crate) fn consume(&mut self, i: usize, upto: u64) -> Result {
        let head = self.head;
        if upto >= head.seq {
            if upto > head.seq && !self.produced {
                return Err(EINVAL);
            }
            let s = self.slots.get_mut(i).filter(|s| s.active).ok_or(EINVAL)?;
            s.jump_to(head, &mut self.stats);
            if upto > head.seq {
                s.consume_to = s.consume_to.max(upto);
                self.consumes_pending = true;
            }
            return Ok(());
        }
        let mut cur = self.slot(i)?.cur;
        let mut n = 0u64;
        while cur.seq < upto {
            let whole = match self.header_at(cur) {
                Ok(h) if self.within_head(cur, h.len) => Some(h),
                Ok(_) => None,
                Err(e) if e == EBADMSG => None,
                Err(e) => return Err(e),
            };
            let Some(h) = whole else {
                // Rewritten since it was taken: a correct producer under `overwrite` raises
                // its tail and reuses the oldest records at any time. The cursor goes as far
                // as the records are whole, where `next` finds the overrun.
                if self.ever_produced {
                    break;
                }
                return Err(EBADMSG);
            };
            cur = cur.after(h.len);
            n = n.wrapping_add(1);
        }
        let s = self.slot_mut(i)?;
        if cur.seq > s.cur.seq {
            s.cur = cur;
            self.stats.delivered = self.stats.delivered.wrapping_add(n);
        }
        Ok(())
    }

    /// Subscriber `i`'s state for `MEMCHAN_IOC_READER` and fdinfo (without `flags`).
    pub(crate) fn reader_state(&self, i: usize) -> Result<abi::ReaderState> {
        let s = self.slot(i)?;
        Ok(abi::ReaderState {
            size: 0,
            flags: abi::READER_SUBSCRIBER
                | if s.pending_lost > 0 {
                    abi::READER_OVERRUN
                } else {
                    0
                },
            cursor_seq: s.cur.seq,
            cursor_pos: s.cur.pos,
            lag: self.head.seq.wrapping_sub(s.cur.seq),
            lost: s.lost,
            pending_lost: s.pending_lost,
        })
    }
}

#[kunit_tests(memchan_ring)]
mod tests {
    use super::*;
    use core::cell::Cell;

    /// A plain-buffer [`Storage`] that also records the published head and tail.
    struct VecStore {
        buf: KVec<u8>,
        head: Cursor,
        tail: Cursor,
        /// The producer page: its head position and tail, as a test's "producer" sets them.
        prod_head: u64,
        prod_tail: Cursor,
        /// The tail positions successive looks at the producer's tail find (a producer moving
        /// it while the ring takes its records), then `prod_tail`'s.
        tail_plan: KVec<u64>,
        /// Looks at the producer's tail so far.
        tail_looks: Cell<usize>,
    }

    impl VecStore {
        fn new(size: usize) -> Result<Self> {
            let mut buf = KVec::with_capacity(size, GFP_KERNEL)?;
            buf.resize(size, 0xaa, GFP_KERNEL)?;
            Ok(Self {
                buf,
                head: Cursor::default(),
                tail: Cursor::default(),
                prod_head: 0,
                prod_tail: Cursor { pos: 0, seq: 1 },
                tail_plan: KVec::new(),
                tail_looks: Cell::new(0),
            })
        }

        fn index(&self, pos: u64, k: usize) -> usize {
            let size = self.buf.len() as u64;
            // `checked_rem`: no division-by-zero panic path (objtool flags those).
            pos.wrapping_add(k as u64).checked_rem(size).unwrap_or(0) as usize
        }
    }

    impl Storage for VecStore {
        fn write(&mut self, pos: u64, src: &[u8]) -> Result {
            for (k, b) in src.iter().enumerate() {
                let i = self.index(pos, k);
                *self.buf.get_mut(i).ok_or(EINVAL)? = *b;
            }
            Ok(())
        }

        fn read(&self, pos: u64, dst: &mut [u8]) -> Result {
            for (k, b) in dst.iter_mut().enumerate() {
                *b = *self.buf.get(self.index(pos, k)).ok_or(EINVAL)?;
            }
            Ok(())
        }

        fn write_with(
            &mut self,
            pos: u64,
            len: usize,
            fill: &mut dyn FnMut(&mut RingSpan<'_>) -> Result,
        ) -> Result {
            // In two pieces when it wraps, as the page ring may give several.
            let start = self.index(pos, 0);
            let first = len.min(self.buf.len() - start);
            fill(&mut RingSpan::of(
                self.buf.get_mut(start..start + first).ok_or(EINVAL)?,
            ))?;
            fill(&mut RingSpan::of(
                self.buf.get_mut(..len - first).ok_or(EINVAL)?,
            ))
        }

        fn publish_tail(&mut self, tail: Cursor) -> Result {
            self.tail = tail;
            Ok(())
        }

        fn publish_head(&mut self, head: Cursor) -> Result {
            self.head = head;
            Ok(())
        }

        fn set_flags(&mut self, _flags: u32) -> Result {
            Ok(())
        }

        fn producer_head(&self) -> Result<u64> {
            Ok(self.prod_head)
        }

        fn producer_tail(&self) -> Result<u64> {
            let look = self.tail_looks.get();
            self.tail_looks.set(look.wrapping_add(1));
            Ok(self
                .tail_plan
                .get(look)
                .copied()
                .unwrap_or(self.prod_tail.pos))
        }

        fn publish_waiters(&mut self, _waiters: bool) -> Result {
            Ok(())
        }

        fn publish_room(&mut self, _room: u64) -> Result {
            Ok(())
        }
    }

    fn ring(size: u64, msg_max: u32, policy: Policy) -> Result<Ring<VecStore>> {
        Ring::new(VecStore::new(size as usize)?, size, msg_max, policy, 4)
    }

    /// Appends `payload` as a message, the way the driver does (laid out as a record).
    fn push(r: &mut Ring<VecStore>, payload: &[u8], ts: u64) -> Result<u64> {
        let len = u32::try_from(payload.len()).map_err(|_| EMSGSIZE)?;
        let mut rec = KVec::new();
        rec.resize(record_size(len) as usize, 0xbb, GFP_KERNEL)?;
        let hsize = abi::RECORD_HEADER_SIZE as usize;
        rec.get_mut(hsize..hsize + payload.len())
            .ok_or(EINVAL)?
            .copy_from_slice(payload);
        r.push_record(&mut rec, len, ts)
    }

    /// Receives subscriber `i`'s next message into `buf`, returning (seq, len).
    fn recv(r: &mut Ring<VecStore>, i: usize, buf: &mut [u8]) -> Result<Option<(u64, usize)>> {
        match r.next(i)? {
            Next::Empty => Ok(None),
            Next::Overrun => Err(EPIPE),
            Next::Record(h, pos) => {
                let len = h.len as usize;
                let body = pos.wrapping_add(u64::from(abi::RECORD_HEADER_SIZE));
                r.store.read(body, buf.get_mut(..len).ok_or(EMSGSIZE)?)?;
                r.commit_range(
                    i,
                    Cursor { pos, seq: h.seq },
                    Cursor { pos, seq: h.seq }.after(h.len),
                    1,
                )?;
                Ok(Some((h.seq, len)))
            }
        }
    }

    #[test]
    fn broadcast_in_order_to_every_subscriber() -> Result {
        let mut r = ring(256, 32, Policy::Block)?;
        let a = r.subscribe(0, 0)?;
        push(&mut r, b"one", 1)?;
        let b = r.subscribe(0, 0)?; // joins after "one"
        push(&mut r, b"two", 2)?;
        let mut buf = [0u8; 32];
        assert_eq!(recv(&mut r, a, &mut buf)?, Some((1, 3)));
        assert_eq!(buf.get(..3), Some(&b"one"[..]));
        assert_eq!(recv(&mut r, a, &mut buf)?, Some((2, 3)));
        assert_eq!(recv(&mut r, b, &mut buf)?, Some((2, 3)));
        assert_eq!(buf.get(..3), Some(&b"two"[..]));
        assert!(recv(&mut r, a, &mut buf)?.is_none());
        assert_eq!(r.stats.delivered, 3);
        Ok(())
    }

    #[test]
    fn records_wrap_around_intact() -> Result {
        let mut r = ring(128, 40, Policy::Overwrite)?;
        let a = r.subscribe(0, 0)?;
        let mut buf = [0u8; 40];
        for n in 0u8..50 {
            let msg = [n; 37]; // 64-byte records: exactly two per ring
            push(&mut r, &msg, u64::from(n))?;
            assert_eq!(recv(&mut r, a, &mut buf)?, Some((u64::from(n) + 1, 37)));
            assert!(buf.iter().take(37).all(|b| *b == n));
        }
        Ok(())
    }

    /// Lays `payloads` out as records (the send-batch layout; padding left zero).
    fn batch(payloads: &[&[u8]]) -> Result<KVec<u8>> {
        let mut b = KVec::new();
        for p in payloads {
            let len = u32::try_from(p.len()).map_err(|_| EMSGSIZE)?;
            let at = b.len();
            b.resize(at + record_size(len) as usize, 0, GFP_KERNEL)?;
            let h = RecordHeader {
                seq: 0,
                timestamp_ns: 0,
                len,
                flags: 0,
            }
            .to_bytes();
            b.get_mut(at..at + h.len())
                .ok_or(EINVAL)?
                .copy_from_slice(&h);
            let body = at + abi::RECORD_HEADER_SIZE as usize;
            b.get_mut(body..body + p.len())
                .ok_or(EINVAL)?
                .copy_from_slice(p);
        }
        Ok(b)
    }

    #[test]
    fn a_batch_goes_in_whole_numbered_and_wrapping_or_not_at_all() -> Result {
        // 32-byte records for payloads up to 8 bytes: 4 fit in 128.
        let mut r = ring(128, 8, Policy::Block)?;
        let s = r.subscribe(0, 0)?;
        let mut buf = [0u8; 8];
        push(&mut r, b"first", 7)?;
        assert_eq!(recv(&mut r, s, &mut buf)?, Some((1, 5)));
        // Three records from position 32: the last one wraps around the end.
        let mut b = batch(&[b"a", b"bb", b"ccc"])?;
        r.push_records(&mut b, 9)?;
        assert_eq!(r.head(), Cursor { pos: 128, seq: 5 });
        for (seq, len, byte) in [(2, 1, b'a'), (3, 2, b'b'), (4, 3, b'c')] {
            let Next::Record(h, _) = r.next(s)? else {
                return Err(EINVAL);
            };
            assert_eq!((h.seq, h.timestamp_ns, h.len), (seq, 9, len as u32));
            assert_eq!(recv(&mut r, s, &mut buf)?, Some((seq, len)));
            assert!(buf.iter().take(len).all(|b| *b == byte));
        }
        // Under `block`, a batch that does not fit yet is refused whole.
        let mut b = batch(&[b"d", b"e"])?;
        r.push_records(&mut b, 0)?;
        let mut b = batch(&[b"f", b"g", b"h"])?;
        assert_eq!(r.push_records(&mut b, 0), Err(EAGAIN));
        assert_eq!(r.head().seq, 7);
        // A batch larger than the ring never fits.
        let mut b = batch(&[b"1", b"2", b"3", b"4", b"5"])?;
        assert_eq!(r.push_records(&mut b, 0), Err(EMSGSIZE));
        assert_eq!(r.stats.messages, 6);
        Ok(())
    }

    #[test]
    fn overwrite_laps_a_slow_reader_with_an_exact_count() -> Result {
        let mut r = ring(128, 8, Policy::Overwrite)?; // 32-byte records: 4 fit
        let slow = r.subscribe(0, 0)?;
        for n in 0u8..10 {
            push(&mut r, &[n; 8], 0)?;
        }
        let mut buf = [0u8; 8];
        assert_eq!(recv(&mut r, slow, &mut buf), Err(EPIPE));
        let st = r.reader_state(slow)?;
        assert_eq!(st.lost, 6);
        assert_eq!(st.pending_lost, 6);
        r.clear_overrun(slow)?;
        let mut got = 0u64;
        while let Some((seq, _)) = recv(&mut r, slow, &mut buf)? {
            assert_eq!(seq, 7 + got);
            got += 1;
        }
        assert_eq!(got + r.reader_state(slow)?.lost, 10);
        assert_eq!(r.stats.overruns, 1);
        Ok(())
    }

    #[test]
    fn a_copy_lapped_meanwhile_does_not_commit() -> Result {
        let mut r = ring(128, 8, Policy::Overwrite)?; // 32-byte records: 4 fit
        let s = r.subscribe(0, 0)?;
        push(&mut r, &[1; 8], 0)?;
        // The reader finds record 1 and copies it out without the lock...
        let Next::Record(h, pos) = r.next(s)? else {
            return Err(EINVAL);
        };
        // ...and is lapped meanwhile: records 1 and 2 are discarded (and overwritten).
        for _ in 0..5 {
            push(&mut r, &[2; 8], 0)?;
        }
        assert!(!r.commit_range(
            s,
            Cursor { pos, seq: h.seq },
            Cursor { pos, seq: h.seq }.after(h.len),
            1
        )?);
        let st = r.reader_state(s)?;
        assert_eq!((st.lost, st.pending_lost, st.cursor_seq), (2, 2, 3));
        assert_eq!((r.stats.lost, r.stats.delivered), (2, 0));
        assert!(matches!(r.next(s)?, Next::Overrun));
        Ok(())
    }

    #[test]
    fn commit_after_a_concurrent_seek_changes_nothing() -> Result {
        let mut r = ring(256, 8, Policy::Overwrite)?;
        let s = r.subscribe(0, 0)?;
        push(&mut r, b"a", 0)?;
        push(&mut r, b"b", 0)?;
        let Next::Record(h, pos) = r.next(s)? else {
            return Err(EINVAL);
        };
        r.seek(s, abi::SEEK_NEWEST)?; // another thread of the same file seeks meanwhile
        assert!(!r.commit_range(
            s,
            Cursor { pos, seq: h.seq },
            Cursor { pos, seq: h.seq }.after(h.len),
            1
        )?);
        assert_eq!(r.reader_state(s)?.cursor_seq, 3);
        assert_eq!(r.reader_state(s)?.lost, 0);
        Ok(())
    }

    #[test]
    fn a_leaving_slow_reader_makes_room_for_blocked_writers() -> Result {
        let mut r = ring(128, 8, Policy::Block)?;
        let slow = r.subscribe(0, 0)?;
        for _ in 0..4 {
            push(&mut r, b"12345678", 0)?;
        }
        assert!(r.would_block(8));
        r.unsubscribe(slow);
        assert!(!r.would_block(8));
        push(&mut r, b"12345678", 0)?;
        Ok(())
    }

    #[test]
    fn consume_after_a_lap_is_a_no_op() -> Result {
        let mut r = ring(128, 8, Policy::Overwrite)?;
        let s = r.subscribe(0, 0)?;
        for _ in 0..10 {
            push(&mut r, b"12345678", 0)?;
        }
        let before = r.reader_state(s)?;
        r.consume(s, 3)?; // an mmap reader releasing records that were already overwritten
        assert_eq!(r.reader_state(s)?.cursor_seq, before.cursor_seq);
        r.consume(s, 11)?;
        assert_eq!(r.reader_state(s)?.lag, 0);
        Ok(())
    }

    #[test]
    fn only_the_first_of_two_copies_of_a_record_commits() -> Result {
        let mut r = ring(256, 8, Policy::Block)?;
        let s = r.subscribe(0, 0)?;
        push(&mut r, b"a", 0)?;
        push(&mut r, b"b", 0)?;
        // Two threads of one file find record 1 and copy it out at the same time.
        let Next::Record(h, pos) = r.next(s)? else {
            return Err(EINVAL);
        };
        let (from, to) = (
            Cursor { pos, seq: h.seq },
            Cursor { pos, seq: h.seq }.after(h.len),
        );
        assert!(r.commit_range(s, from, to, 1)?);
        assert!(!r.commit_range(s, from, to, 1)?);
        assert_eq!((r.reader_state(s)?.cursor_seq, r.stats.delivered), (2, 1));
        // Record 2 is next, and committing it leaves nothing unread.
        let Next::Record(h2, pos2) = r.next(s)? else {
            return Err(EINVAL);
        };
        assert!(r.commit_range(
            s,
            Cursor {
                pos: pos2,
                seq: h2.seq
            },
            Cursor {
                pos: pos2,
                seq: h2.seq
            }
            .after(h2.len),
            1
        )?);
        assert!(matches!(r.next(s)?, Next::Empty));
        Ok(())
    }

    #[test]
    fn sequence_and_positions_survive_many_wraps() -> Result {
        let mut r = ring(4096, 100, Policy::Overwrite)?;
        let s = r.subscribe(0, 0)?;
        let mut buf = [0u8; 100];
        for n in 0u64..5000 {
            let len = (n % 97) as usize + 1;
            let msg = [(n % 251) as u8; 100];
            push(&mut r, msg.get(..len).ok_or(EINVAL)?, n)?;
            assert_eq!(recv(&mut r, s, &mut buf)?, Some((n + 1, len)));
        }
        assert_eq!(r.reader_state(s)?.lost, 0);
        Ok(())
    }

    #[test]
    fn block_refuses_until_the_slowest_reader_consumes() -> Result {
        let mut r = ring(128, 8, Policy::Block)?;
        let fast = r.subscribe(0, 0)?;
        let slow = r.subscribe(0, 0)?;
        let mut buf = [0u8; 8];
        for n in 0u8..4 {
            push(&mut r, &[n; 8], 0)?;
            recv(&mut r, fast, &mut buf)?;
        }
        assert_eq!(push(&mut r, b"full", 0), Err(EAGAIN));
        assert!(r.would_block(8));
        recv(&mut r, slow, &mut buf)?;
        assert!(!r.would_block(8));
        push(&mut r, b"room", 0)?;
        Ok(())
    }

    #[test]
    fn a_stalled_block_ring_drops_only_the_slowest_reader_to_an_overrun() -> Result {
        let mut r = ring(128, 8, Policy::Block)?;
        let fast = r.subscribe(0, 0)?;
        let slow = r.subscribe(0, 0)?;
        let mut buf = [0u8; 8];
        for n in 0u8..4 {
            push(&mut r, &[n; 8], 0)?;
            recv(&mut r, fast, &mut buf)?;
        }
        assert_eq!(push(&mut r, b"full", 0), Err(EAGAIN));
        r.drop_stalled(record_size(4))?;
        push(&mut r, b"full", 0)?;
        assert_eq!(r.reader_state(fast)?.lost, 0);
        // The slow reader loses all it had not read, so writers have the whole ring again.
        assert_eq!(r.reader_state(slow)?.pending_lost, 4);
        push(&mut r, b"more", 0)?;
        push(&mut r, b"more", 0)?;
        assert!(matches!(r.next(slow)?, Next::Overrun));
        assert_eq!(r.stats.overruns, 1);
        Ok(())
    }

    #[test]
    fn one_user_takes_at_most_its_share_of_the_slots() -> Result {
        let mut r = ring(128, 8, Policy::Block)?;
        r.subscribe(1000, 2)?;
        r.subscribe(1000, 2)?;
        assert_eq!(r.subscribe(1000, 2), Err(ENOSPC));
        r.subscribe(1001, 2)?;
        Ok(())
    }

    #[test]
    fn block_tracks_the_slowest_reader_through_seeks_and_leaves() -> Result {
        // Records of 8-byte payloads take 32 bytes: 4 fit in 128.
        let mut r = ring(128, 8, Policy::Block)?;
        let a = r.subscribe(0, 0)?;
        let b = r.subscribe(0, 0)?;
        let mut buf = [0u8; 8];
        for n in 0u8..4 {
            push(&mut r, &[n; 8], 0)?;
        }
        for _ in 0..4 {
            recv(&mut r, a, &mut buf)?;
            recv(&mut r, b, &mut buf)?;
        }
        assert!(!r.would_block(8));
        push(&mut r, b"e", 0)?;
        // A cursor moving back (replay) holds writers again, though the cached bound was at
        // the head: the whole (full) ring is unread for it now.
        r.seek(a, abi::SEEK_OLDEST)?;
        assert!(r.would_block(8));
        recv(&mut r, a, &mut buf)?;
        assert!(!r.would_block(8));
        push(&mut r, b"f", 0)?;
        recv(&mut r, b, &mut buf)?;
        assert!(r.would_block(8));
        // The slow reader leaving frees the ring at once.
        r.unsubscribe(a);
        assert!(!r.would_block(8));
        // A message being copied out (the cursor moves only once the copy is done) is
        // protected: writers wait for it.
        recv(&mut r, b, &mut buf)?;
        push(&mut r, b"g", 0)?;
        let Next::Record(h, pos) = r.next(b)? else {
            return Err(EINVAL);
        };
        for _ in 0..3 {
            push(&mut r, b"h", 0)?;
        }
        assert!(r.would_block(8));
        assert!(r.commit_range(
            b,
            Cursor { pos, seq: h.seq },
            Cursor { pos, seq: h.seq }.after(h.len),
            1
        )?);
        assert!(!r.would_block(8));
        Ok(())
    }

    #[test]
    fn overwrite_laps_only_the_readers_behind_among_many() -> Result {
        let mut r = Ring::new(VecStore::new(128)?, 128, 8, Policy::Overwrite, 64)?;
        let slots: KVec<usize> = {
            let mut v = KVec::new();
            for _ in 0..64 {
                v.push(r.subscribe(0, 0)?, GFP_KERNEL)?;
            }
            v
        };
        let mut buf = [0u8; 8];
        // Every reader but the last keeps up; the last one falls 6 behind in a 4-record ring.
        for n in 0u8..10 {
            push(&mut r, &[n; 8], 0)?;
            for &s in slots.iter().take(63) {
                recv(&mut r, s, &mut buf)?;
            }
        }
        for &s in slots.iter().take(63) {
            assert_eq!(r.reader_state(s)?.lost, 0);
        }
        let last = *slots.last().ok_or(EINVAL)?;
        assert_eq!(r.reader_state(last)?.lost, 6);
        assert_eq!(r.stats.overruns, 1);
        Ok(())
    }

    #[test]
    fn block_without_subscribers_never_blocks() -> Result {
        let mut r = ring(128, 8, Policy::Block)?;
        for _ in 0..100 {
            push(&mut r, b"x", 0)?;
        }
        assert_eq!(r.head().seq, 101);
        Ok(())
    }

    #[test]
    fn seek_replays_oldest_and_skips_to_newest() -> Result {
        let mut r = ring(256, 8, Policy::Overwrite)?;
        push(&mut r, b"a", 0)?;
        push(&mut r, b"b", 0)?;
        let s = r.subscribe(0, 0)?;
        let mut buf = [0u8; 8];
        assert!(recv(&mut r, s, &mut buf)?.is_none());
        r.seek(s, abi::SEEK_OLDEST)?;
        assert_eq!(recv(&mut r, s, &mut buf)?, Some((1, 1)));
        r.seek(s, abi::SEEK_NEWEST)?;
        assert!(recv(&mut r, s, &mut buf)?.is_none());
        assert_eq!(r.seek(s, 7), Err(EINVAL));
        Ok(())
    }

    #[test]
    fn consume_advances_without_copying() -> Result {
        let mut r = ring(256, 8, Policy::Block)?;
        let s = r.subscribe(0, 0)?;
        for _ in 0..5 {
            push(&mut r, b"abc", 0)?;
        }
        r.consume(s, 4)?;
        assert_eq!(r.reader_state(s)?.cursor_seq, 4);
        assert_eq!(r.consume(s, 99), Err(EINVAL));
        r.consume(s, 2)?; // already past: no-op
        assert_eq!(r.reader_state(s)?.lag, 2);
        Ok(())
    }

    #[test]
    fn limits_are_enforced() -> Result {
        let mut r = ring(128, 8, Policy::Block)?;
        assert_eq!(push(&mut r, &[0u8; 9], 0), Err(EMSGSIZE));
        for _ in 0..4 {
            r.subscribe(0, 0)?;
        }
        assert_eq!(r.subscribe(0, 0), Err(ENOSPC));
        r.unsubscribe(2);
        assert_eq!(r.subscribe(0, 0)?, 2);
        assert!(Ring::new(VecStore::new(100)?, 100, 8, Policy::Block, 1).is_err());
        Ok(())
    }

    #[test]
    fn published_head_and_tail_follow_the_ring() -> Result {
        let mut r = ring(128, 8, Policy::Overwrite)?;
        for _ in 0..6 {
            push(&mut r, b"12345678", 0)?;
        }
        assert_eq!(r.store.head, r.head());
        assert_eq!(r.store.tail, r.tail());
        assert_eq!(r.tail().seq, 3);
        Ok(())
    }

    /// Writes a record as a producer would, at `pos` with `seq`; returns the position after.
    fn produce(r: &mut Ring<VecStore>, pos: u64, seq: u64, payload: &[u8]) -> Result<u64> {
        let len = u32::try_from(payload.len()).map_err(|_| EINVAL)?;
        let h = RecordHeader {
            seq,
            timestamp_ns: 7,
            len,
            flags: 0,
        };
        r.store.write(pos, &h.to_bytes())?;
        r.store
            .write(pos + u64::from(abi::RECORD_HEADER_SIZE), payload)?;
        Ok(pos + record_size(len))
    }

    #[test]
    fn produced_records_are_taken_checked_and_a_bad_one_faults() -> Result {
        let mut r = ring(256, 32, Policy::Overwrite)?;
        let s = r.subscribe(0, 0)?;
        let p = r.subscribe(0, 0)?;
        r.claim(p)?;
        assert_eq!(r.claim(p), Err(EBUSY));
        let mut at = produce(&mut r, 0, 1, b"one")?;
        at = produce(&mut r, at, 2, b"two")?;
        // Nothing published yet: nothing taken.
        assert!(!r.take_produced());
        r.store.prod_head = at;
        assert!(r.take_produced());
        assert_eq!(r.head(), Cursor { pos: at, seq: 3 });
        let mut buf = [0u8; 32];
        assert_eq!(recv(&mut r, s, &mut buf)?, Some((1, 3)));
        assert_eq!(recv(&mut r, s, &mut buf)?, Some((2, 3)));
        // The producer's own slot never holds the ring back.
        assert_eq!(r.reader_state(p)?.lag, 0);
        // A record with a wrong sequence number: nothing more is taken, ever.
        let bad = produce(&mut r, at, 9, b"bad")?;
        r.store.prod_head = bad;
        assert!(!r.take_produced());
        assert!(r.faulted());
        let good = produce(&mut r, at, 3, b"ok")?;
        r.store.prod_head = good;
        assert!(!r.take_produced());
        assert_eq!(r.head().seq, 3);
        // A head that is not a record boundary, or a ring and more ahead: refused as well.
        r.unclaim()?;
        r.claim(p)?;
        assert!(!r.faulted());
        r.store.prod_head = at + 4;
        assert!(!r.take_produced() && r.faulted());
        r.unclaim()?;
        r.claim(p)?;
        r.store.prod_head = at.wrapping_add(1 << 40);
        assert!(!r.take_produced() && r.faulted());
        r.unclaim()?;
        assert_eq!(recv(&mut r, s, &mut buf)?, None);
        Ok(())
    }

    #[test]
    fn a_producer_lapping_the_ring_moves_the_tail_with_exact_losses() -> Result {
        let mut r = ring(128, 32, Policy::Overwrite)?;
        let s = r.subscribe(0, 0)?;
        let p = r.subscribe(0, 0)?;
        r.claim(p)?;
        // Ten 32-byte records through a 128-byte ring: the oldest six are gone.
        let (mut at, mut tail) = (0u64, Cursor { pos: 0, seq: 1 });
        for seq in 1..=10u64 {
            at = produce(&mut r, at, seq, b"x")?;
            if at - tail.pos > 128 {
                tail = Cursor {
                    pos: tail.pos + 32,
                    seq: tail.seq + 1,
                };
            }
        }
        r.store.prod_tail = tail;
        r.store.prod_head = at;
        assert!(r.take_produced());
        assert!(!r.faulted());
        assert_eq!(r.tail(), Cursor { pos: 192, seq: 7 });
        assert!(matches!(r.next(s)?, Next::Overrun));
        assert_eq!(r.reader_state(s)?.pending_lost, 6);
        r.clear_overrun(s)?;
        let mut buf = [0u8; 32];
        for seq in 7..=10 {
            assert_eq!(recv(&mut r, s, &mut buf)?, Some((seq, 1)));
        }
        assert_eq!(r.stats.messages, 10);
        Ok(())
    }

    /// Makes the next looks at the producer's tail find `plan`, `times` times over.
    fn plan_tail(r: &mut Ring<VecStore>, plan: &[u64], times: usize) -> Result {
        r.store.tail_plan.clear();
        r.store.tail_looks.set(0);
        for _ in 0..times {
            r.store.tail_plan.extend_from_slice(plan, GFP_KERNEL)?;
        }
        Ok(())
    }

    #[test]
    fn a_producer_moving_its_tail_all_along_is_not_faulted() -> Result {
        let mut r = ring(256, 32, Policy::Overwrite)?;
        let s = r.subscribe(0, 0)?;
        let p = r.subscribe(0, 0)?;
        r.claim(p)?;
        let at = produce(&mut r, 0, 1, b"one")?;
        r.store.prod_head = at;
        // Every try finds the tail moved on between two looks, as when a producer in a full
        // ring discards a record per message: nothing is taken, and no fault.
        plan_tail(&mut r, &[32, 64], 8)?;
        assert!(!r.take_produced());
        assert!(!r.faulted());
        // Once it holds still (it waits for room, or rings the doorbell), its records are taken.
        assert!(r.take_produced());
        assert_eq!(r.head(), Cursor { pos: at, seq: 2 });
        let mut buf = [0u8; 32];
        assert_eq!(recv(&mut r, s, &mut buf)?, Some((1, 3)));
        Ok(())
    }

    #[test]
    fn a_try_that_meets_a_moving_tail_changes_nothing() -> Result {
        let mut r = ring(256, 32, Policy::Overwrite)?;
        let s = r.subscribe(0, 0)?;
        let p = r.subscribe(0, 0)?;
        r.claim(p)?;
        // Ten 32-byte records through the 256-byte ring: the producer's tail is at 64 (seq 3).
        let mut at = 0;
        for seq in 1..=10 {
            at = produce(&mut r, at, seq, b"x")?;
        }
        r.store.prod_head = at;
        r.store.prod_tail = Cursor { pos: 96, seq: 4 };
        // Each try finds the tail at 64 three times (around the head, after its record), then
        // moved on after the walk: what the walk read may be gone.
        plan_tail(&mut r, &[64, 64, 64, 96], 8)?;
        assert!(!r.take_produced());
        assert!(!r.faulted());
        // The tail was not taken alone: no reader lapped, the tail not ahead of the head.
        assert_eq!(r.tail(), Cursor { pos: 0, seq: 1 });
        assert_eq!(r.head(), Cursor { pos: 0, seq: 1 });
        assert_eq!(r.reader_state(s)?.pending_lost, 0);
        // Held still at 96: taken from there, the reader lapped by exactly three.
        assert!(r.take_produced());
        assert_eq!(r.tail(), Cursor { pos: 96, seq: 4 });
        assert_eq!(r.head(), Cursor { pos: at, seq: 11 });
        assert!(matches!(r.next(s)?, Next::Overrun));
        assert_eq!(r.reader_state(s)?.pending_lost, 3);
        Ok(())
    }

    #[test]
    fn a_head_moved_back_faults_at_once() -> Result {
        let mut r = ring(256, 32, Policy::Overwrite)?;
        let _s = r.subscribe(0, 0)?;
        let p = r.subscribe(0, 0)?;
        r.claim(p)?;
        let mut at = 0;
        for seq in 1..=4 {
            at = produce(&mut r, at, seq, b"x")?;
        }
        r.store.prod_head = at;
        assert!(r.take_produced());
        // Behind the ring's head but ahead of the tail: refused before any record is read.
        r.store.prod_head = at - 32;
        assert!(!r.take_produced() && r.faulted());
        assert_eq!(r.head(), Cursor { pos: at, seq: 5 });
        Ok(())
    }

    #[test]
    fn a_copy_overwritten_before_its_commit_is_an_overrun() -> Result {
        let mut r = ring(256, 32, Policy::Overwrite)?;
        let s = r.subscribe(0, 0)?;
        let p = r.subscribe(0, 0)?;
        r.claim(p)?;
        let mut at = 0;
        for seq in 1..=3 {
            at = produce(&mut r, at, seq, b"x")?;
        }
        r.store.prod_head = at;
        assert!(r.take_produced());
        let Next::Record(h, pos) = r.next(s)? else {
            return Err(EINVAL);
        };
        let from = Cursor { pos, seq: h.seq };
        // While the reader copies the first record, the producer discards it and keeps its
        // tail moving: the take finds nothing it can rely on, and the ring's tail stays at 0.
        plan_tail(&mut r, &[32, 64], 8)?;
        assert!(!r.take_produced());
        r.store.tail_plan.extend_from_slice(&[64], GFP_KERNEL)?;
        assert!(!r.commit_range(s, from, from.after(h.len), 1)?);
        assert!(matches!(r.next(s)?, Next::Overrun));
        assert_eq!(r.reader_state(s)?.pending_lost, 3);
        Ok(())
    }

    /// A ring of `n` records of one byte from a producer, published but not taken yet, with a
    /// subscriber: (ring, subscriber, producer's head).
    fn produced_records(n: u64) -> Result<(Ring<VecStore>, usize, u64)> {
        let size = (n * 32).next_power_of_two().max(256);
        let mut r = ring(size, 32, Policy::Overwrite)?;
        let s = r.subscribe(0, 0)?;
        let p = r.subscribe(0, 0)?;
        r.claim(p)?;
        let mut at = 0;
        for seq in 1..=n {
            at = produce(&mut r, at, seq, b"x")?;
        }
        r.store.prod_head = at;
        Ok((r, s, at))
    }

    #[test]
    fn one_take_takes_more_than_take_max_records_in_tries() -> Result {
        let n = TAKE_MAX * 2 + 8;
        let (mut r, _s, at) = produced_records(n)?;
        assert!(r.take_produced());
        assert!(!r.take_postponed());
        assert_eq!(
            r.head(),
            Cursor {
                pos: at,
                seq: n + 1
            }
        );
        Ok(())
    }

    #[test]
    fn a_producer_leaving_has_all_its_records_taken() -> Result {
        let n = TAKE_MAX + 8;
        let (mut r, _s, at) = produced_records(n)?;
        assert!(r.unclaim()?);
        assert_eq!(
            r.head(),
            Cursor {
                pos: at,
                seq: n + 1
            }
        );
        assert_eq!(
            r.store.head,
            Cursor {
                pos: at,
                seq: n + 1
            }
        );
        Ok(())
    }

    #[test]
    fn a_take_that_keeps_meeting_a_moving_tail_is_postponed() -> Result {
        let (mut r, _s, _at) = produced_records(4)?;
        plan_tail(&mut r, &[32, 64], 8)?;
        assert!(!r.take_produced());
        assert!(r.take_postponed() && !r.faulted());
        assert!(r.take_produced());
        assert!(!r.take_postponed());
        Ok(())
    }

    #[test]
    fn a_release_beyond_a_postponed_take_applies_as_records_arrive() -> Result {
        let (mut r, s, at) = produced_records(4)?;
        plan_tail(&mut r, &[32, 64], 8)?;
        assert!(!r.take_produced() && r.take_postponed());
        // The mapped reader read all four from the producer's head and releases them.
        r.consume(s, 5)?;
        assert_eq!(r.reader_state(s)?.cursor_seq, 1);
        assert!(r.take_produced());
        assert_eq!(r.reader_state(s)?.cursor_seq, 5);
        assert_eq!(r.reader_state(s)?.cursor_pos, at);
        // Without a producer, beyond the head is still an error.
        r.unclaim()?;
        assert_eq!(r.consume(s, 6), Err(EINVAL));
        Ok(())
    }

    #[test]
    fn a_tail_raised_to_the_ring_s_head_is_taken() -> Result {
        let (mut r, s, at) = produced_records(3)?;
        assert!(r.take_produced());
        // The producer discards everything it had: its tail at its head, the ring's head.
        r.store.prod_tail = Cursor { pos: at, seq: 4 };
        assert!(!r.take_produced());
        assert!(!r.take_postponed() && !r.faulted());
        assert_eq!(r.tail(), Cursor { pos: at, seq: 4 });
        assert!(matches!(r.next(s)?, Next::Overrun));
        assert_eq!(r.reader_state(s)?.pending_lost, 3);
        Ok(())
    }

    #[test]
    fn a_tail_at_the_producer_s_head_waits_for_its_next_record() -> Result {
        let (mut r, s, at) = produced_records(3)?;
        // Before any was taken, the producer discarded all three (for a record that needs the
        // room) and holds still: nothing to take yet, and nothing for a waiter to retry.
        r.store.prod_tail = Cursor { pos: at, seq: 4 };
        assert!(!r.take_produced());
        assert!(!r.take_postponed() && !r.faulted());
        assert_eq!(r.head(), Cursor { pos: 0, seq: 1 });
        // Its next record arrives, with the three counted as written and lost.
        r.store.prod_head = produce(&mut r, at, 4, b"y")?;
        assert!(r.take_produced());
        assert_eq!(r.tail(), Cursor { pos: at, seq: 4 });
        assert!(matches!(r.next(s)?, Next::Overrun));
        assert_eq!(r.reader_state(s)?.pending_lost, 3);
        assert_eq!(r.stats.messages, 4);
        Ok(())
    }

    #[test]
    fn a_producer_leaving_during_a_postponed_take_leaves_nothing_postponed() -> Result {
        let (mut r, s, _at) = produced_records(4)?;
        plan_tail(&mut r, &[32, 64], 16)?;
        r.unclaim()?;
        // The next producer starts with nothing postponed (its first take not yet made).
        r.claim(s)?;
        assert!(!r.take_postponed());
        Ok(())
    }

    #[test]
    fn a_producer_leaving_after_discarding_all_it_published_leaves_an_empty_ring() -> Result {
        let (mut r, s, at) = produced_records(3)?;
        assert!(r.take_produced());
        // It publishes three more, then discards all six (and may have begun to overwrite
        // the three the ring holds), and dies before it publishes anything new.
        let mut end = at;
        for seq in 4..=6 {
            end = produce(&mut r, end, seq, b"x")?;
        }
        r.store.prod_head = end;
        r.store.prod_tail = Cursor { pos: end, seq: 7 };
        r.unclaim()?;
        assert_eq!(r.tail(), r.head());
        assert!(matches!(r.next(s)?, Next::Overrun));
        assert_eq!(r.reader_state(s)?.pending_lost, 3);
        Ok(())
    }

    #[test]
    fn the_heapsort_sorts() -> Result {
        let mut v = KVec::new();
        for x in [5u16, 3, 9, 1, 1, 8, 0, 7, 2, 6, 4] {
            v.push(x, GFP_KERNEL)?;
        }
        sort_by_key(&mut v, u64::from);
        assert_eq!(&v[..], &[0u16, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9][..]);
        let mut one = [4u16];
        sort_by_key(&mut one, u64::from);
        sort_by_key(&mut [], u64::from);
        Ok(())
    }

    #[test]
    fn releases_between_the_heads_apply_in_one_walk_in_any_order() -> Result {
        let (mut r, s, _at) = produced_records(8)?;
        let t = r.subscribe(0, 0)?;
        let u = r.subscribe(0, 0)?;
        // Released before the take, in no particular order of where they end.
        for (i, upto) in [(s, 8), (t, 3), (u, 6)] {
            r.consume(i, upto)?;
        }
        assert!(r.take_produced());
        for (i, upto) in [(s, 8u64), (t, 3), (u, 6)] {
            let st = r.reader_state(i)?;
            assert_eq!((st.cursor_seq, st.cursor_pos), (upto, (upto - 1) * 32));
        }
        assert_eq!(r.stats.delivered, 7 + 2 + 5);
        assert!(r.take_released());
        let mut buf = [0u8; 32];
        assert_eq!(recv(&mut r, t, &mut buf)?, Some((3, 1)));
        Ok(())
    }

    #[test]
    fn a_release_that_meets_a_reused_record_stops_there_for_the_overrun() -> Result {
        let (mut r, s, _at) = produced_records(4)?;
        assert!(r.take_produced());
        // Under `overwrite` the producer reuses the second record meanwhile.
        r.store.write(32, &[0xffu8; 8])?;
        r.consume(s, 4)?;
        assert_eq!(r.reader_state(s)?.cursor_seq, 2);
        assert!(matches!(r.next(s)?, Next::Overrun));
        Ok(())
    }

    #[test]
    fn releases_beyond_the_head_follow_the_records_as_they_arrive() -> Result {
        let (mut r, s, at) = produced_records(4)?;
        let t = r.subscribe(0, 0)?;
        // Before the take: one reader releases everything there will ever be, one the first
        // two records.
        r.consume(s, u64::MAX)?;
        r.consume(t, 3)?;
        assert!(r.take_produced());
        assert_eq!(r.reader_state(s)?.cursor_seq, 5);
        assert_eq!(r.reader_state(s)?.cursor_pos, at);
        assert_eq!(r.reader_state(t)?.cursor_seq, 3);
        assert_eq!(r.reader_state(t)?.cursor_pos, 64);
        assert_eq!(r.stats.delivered, 6);
        assert!(r.take_released());
        assert!(!r.take_released());
        // The release of everything stays with the reader (until it seeks).
        r.store.prod_head = produce(&mut r, at, 5, b"z")?;
        assert!(r.take_produced());
        assert_eq!(r.reader_state(s)?.cursor_seq, 6);
        assert_eq!(r.reader_state(t)?.cursor_seq, 3);
        r.seek(s, abi::SEEK_OLDEST)?;
        r.store.prod_head = produce(&mut r, at + 32, 6, b"w")?;
        assert!(r.take_produced());
        assert_eq!(r.reader_state(s)?.cursor_seq, 1);
        Ok(())
    }

    #[test]
    fn a_failed_fill_publishes_nothing() -> Result {
        let mut r = ring(128, 32, Policy::Overwrite)?;
        let s = r.subscribe(0, 0)?;
        push(&mut r, b"one", 0)?;
        let head = r.head();
        // Filled straight from userspace: a fault on the way fails the push.
        let mut pieces = 0;
        let mut faulty = |dst: &mut RingSpan<'_>| {
            pieces += 1;
            dst.fill(b'x');
            Err(EFAULT)
        };
        assert_eq!(r.push_with(20, 0, &mut faulty), Err(EFAULT));
        assert_eq!(pieces, 1);
        assert!(r.head() == head);
        assert_eq!(r.store.head, head);
        // The next message takes its place, and the subscriber sees only whole messages.
        let mut fill = |dst: &mut RingSpan<'_>| {
            dst.fill(b'y');
            Ok(())
        };
        assert_eq!(r.push_with(5, 0, &mut fill)?, head.seq);
        let mut buf = [0u8; 32];
        assert_eq!(recv(&mut r, s, &mut buf)?, Some((1, 3)));
        assert_eq!(recv(&mut r, s, &mut buf)?, Some((2, 5)));
        assert_eq!(buf.get(..5), Some(&b"yyyyy"[..]));
        assert_eq!(recv(&mut r, s, &mut buf)?, None);
        Ok(())
    }
}
