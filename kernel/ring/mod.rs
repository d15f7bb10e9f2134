// SPDX-License-Identifier: GPL-2.0

//! The broadcast ring: records, subscriber cursors and the overflow policy.
//!
//! Pure logic over a [`Storage`] (the channel's pages in the driver, a plain buffer in the
//! KUnit tests of [`tests`]); no locking, no sleeping, no user memory: the channel calls every
//! method under its ring lock. The producer-mapped mode, where a producer writes the records
//! itself and the ring takes them, is [`take`].
//!
//! Positions are byte offsets counted since the ring was created, and sequence numbers count
//! records; both are `u64` with wrapping arithmetic and are compared only through [`ahead`]
//! (serial-number arithmetic, RFC 1982), never with `<`: a producer may move both by large
//! jumps (see [`take`]), so they may wrap, and every comparison must hold across the wrap. A
//! position maps to storage offset `pos % size`. The ring holds the records between `tail`
//! (oldest retained) and `head` (where the next one goes). A record is a [`RecordHeader`], the
//! payload and zero padding to [`abi::RECORD_ALIGN`].

use kernel::prelude::*;

use crate::{
    abi::{
        self,
        RecordHeader, //
    },
    compat::code::ebadmsg,
    memory::RingSpan,
};

mod take;
#[cfg(CONFIG_KUNIT = "y")]
mod tests;

use take::Producer;
pub(crate) use take::TAKE_MAX;

/// Records one [`Ring::consume`] walks at most under one hold of the ring lock: a release of a
/// whole ring of the smallest records is done in steps, with the lock dropped between them.
pub(crate) const CONSUME_STEP: u64 = 256;

/// How far `a` is ahead of `b` (negative: behind), for sequence numbers and positions, which
/// wrap: the order holds as long as the two are less than 2^63 apart, which every pair of values
/// the ring compares is (the head moves by at most [`take::JUMP_MAX`] at a time, and every
/// cursor is kept between the tail and the head).
pub(crate) fn ahead(a: u64, b: u64) -> i64 {
    a.wrapping_sub(b) as i64
}

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
    /// The next record this subscriber receives.
    cur: Cursor,
    /// Messages lost to overwrites, in total.
    lost: u64,
    /// Messages lost in overruns not yet reported by `EPIPE`.
    pending_lost: u64,
    /// An overrun is pending (reported by the next `EPIPE`): a flag of its own, not
    /// `pending_lost != 0`, which a producer's jumps could bring round to 0 (its counts
    /// saturate).
    overrun: bool,
    /// A release (`MEMCHAN_IOC_CONSUME`) up to this sequence number beyond the ring's head:
    /// the mmap reader read records its producer published that were not taken yet (a take
    /// postponed, see [`Ring::take_postponed`]); applied as they are taken.
    consume_to: Option<u64>,
}

impl Slot {
    /// Moves this subscriber forward to `to`, losing the records it skips: counted in its
    /// losses and the channel's `stats`, reported by one `EPIPE`. A new overrun unless one is
    /// pending already (a reader that stays behind is lapped again on every write until it
    /// reads, which extends the same overrun).
    fn overrun_to(&mut self, to: Cursor, stats: &mut Stats) {
        let lost = to.seq.wrapping_sub(self.cur.seq);
        if !self.overrun {
            stats.overruns = stats.overruns.wrapping_add(1);
        }
        self.overrun = true;
        self.lost = self.lost.saturating_add(lost);
        self.pending_lost = self.pending_lost.saturating_add(lost);
        self.cur = to;
        stats.lost = stats.lost.saturating_add(lost);
    }

    /// Moves this subscriber forward to `to` (at or behind the head), past records its reader
    /// released without reading them through `read()`: counted as delivered. No-op if the
    /// cursor is there or beyond already.
    fn jump_to(&mut self, to: Cursor, stats: &mut Stats) {
        if ahead(to.seq, self.cur.seq) > 0 {
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
    /// Counters.
    pub(crate) stats: Stats,
    /// Who may need a wake-up.
    pub(crate) waiting: Waiting,
    /// Under `block`: since when (`CLOCK_MONOTONIC` ns) writers have found no room, if they
    /// have; reset by every record published (the channel's stall limit counts from here).
    pub(crate) stalled_since: Option<u64>,
    /// The producer-mapped mode: who has the ring and what its takes left to do.
    prod: Producer,
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
            stats: Stats::default(),
            waiting: Waiting::default(),
            stalled_since: None,
            prod: Producer::new(order),
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

    /// Makes slot `i`, which the channel gave out to an opening file (its seats, `seats.rs`),
    /// a subscriber positioned at the head: it receives messages written from now on.
    /// `EINVAL` if there is no such slot or it is active.
    pub(crate) fn subscribe_at(&mut self, i: usize) -> Result {
        let head = self.head;
        let slot = self.slots.get_mut(i).filter(|s| !s.active).ok_or(EINVAL)?;
        *slot = Slot {
            active: true,
            cur: head,
            ..Slot::default()
        };
        if self.subscribers == 0 {
            // No cursor constrained the bound: start it at the only one.
            self.low = head;
        }
        self.subscribers = self.subscribers.wrapping_add(1);
        Ok(())
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
        if ahead(at.seq, self.low.seq) < 0 {
            self.low = at;
        }
    }

    /// Recomputes [`Ring::low`] exactly: the slowest active cursor, the one furthest behind the
    /// head (the head if none).
    fn rescan(&mut self) {
        let head = self.head;
        self.low = self
            .slots
            .iter()
            .filter(|s| s.active)
            .map(|s| s.cur)
            .max_by_key(|c| head.seq.wrapping_sub(c.seq))
            .unwrap_or(head);
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
            if self.prod.ever {
                // The producer rewrote it (a record it discarded, or a hostile one).
                return Err(ebadmsg());
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
    /// them). A record that is not whole where the walk meets it (a former producer's bytes:
    /// it may have rewritten anything before it left) ends the ring's contents: the ring starts
    /// over empty at the head, as [`Ring::unclaim`] does, its readers lapped with exact counts,
    /// so that nothing a producer leaves behind locks the writers out.
    fn discard_for(&mut self, rsize: u64) -> Result {
        let old_tail = self.tail;
        while self
            .head
            .pos
            .wrapping_sub(self.tail.pos)
            .saturating_add(rsize)
            > self.size
        {
            match self.header_at(self.tail) {
                Ok(h) if self.tail.seq != self.head.seq && self.within_head(self.tail, h.len) => {
                    self.tail = self.tail.after(h.len);
                }
                Ok(_) | Err(_) if self.prod.ever => {
                    self.tail = self.head;
                    break;
                }
                Ok(_) => return Err(EIO),
                Err(e) => return Err(e),
            }
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
        if let Some(s) = self.prod.slot.and_then(|i| self.slots.get_mut(i)) {
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
        if self.subscribers == 0 || ahead(self.low.seq, tail.seq) >= 0 {
            return;
        }
        let producer = self.prod.slot;
        for (i, s) in self.slots.iter_mut().enumerate().filter(|(_, s)| s.active) {
            if ahead(s.cur.seq, tail.seq) >= 0 {
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
        if s.overrun {
            return Ok(Next::Overrun);
        }
        if s.cur.seq == self.head.seq {
            if s.cur.pos != self.head.pos {
                // Records a former producer rewrote ended short of the head: nothing is between.
                let head = self.head;
                self.slot_mut(i)?.cur = head;
            }
            return Ok(Next::Empty);
        }
        let cur = s.cur;
        match self.header_at(cur) {
            // The kernel writes `flags` 0; a record with others was rewritten by a producer.
            Ok(h) if h.flags == 0 && self.within_head(cur, h.len) => Ok(Next::Record(h, cur.pos)),
            Ok(_) | Err(_) if self.prod.ever => {
                let head = self.head;
                let s = self.slots.get_mut(i).ok_or(EINVAL)?;
                s.overrun_to(head, &mut self.stats);
                Ok(Next::Overrun)
            }
            Ok(_) => Err(EIO),
            Err(e) => Err(e),
        }
    }

    /// `at`, or the head if `at` has its sequence number: a walk over records a former producer
    /// rewrote may end there short of the head's position, and a cursor must never sit there.
    fn settled(&self, at: Cursor) -> Cursor {
        if at.seq == self.head.seq {
            self.head
        } else {
            at
        }
    }

    /// Whether the record at `at` with a payload of `len` bytes ends at or before the head.
    fn within_head(&self, at: Cursor, len: u32) -> bool {
        record_size(len) <= self.head.pos.wrapping_sub(at.pos)
    }

    /// Publishes the control page's `flags` from the ring's state.
    fn publish_flags(&mut self) -> Result {
        let mut flags = 0;
        if self.prod.claimed {
            flags |= abi::CTL_PRODUCER;
        }
        if self.prod.fault {
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

    /// Clears subscriber `i`'s pending overrun once it has been reported.
    pub(crate) fn clear_overrun(&mut self, i: usize) -> Result {
        let s = self.slot_mut(i)?;
        s.pending_lost = 0;
        s.overrun = false;
        Ok(())
    }

    /// Moves subscriber `i`'s cursor from `from` to `to`, past the `count` records between,
    /// which its reader copied out without the lock, provided that the cursor is still at
    /// `from` with no overrun pending (no other reader of the file took them, no seek, not
    /// lapped), the tail has not passed `from` (none of them was discarded, so none was
    /// overwritten while being copied), and no producer came or went since the reader found
    /// them (`claims`, [`Ring::claims`] then: `to` is framed by lengths a producer wrote, which
    /// its leaving checks only for cursors as they stand then). Returns whether the cursor
    /// moved.
    pub(crate) fn commit_range(
        &mut self,
        i: usize,
        from: Cursor,
        to: Cursor,
        count: u64,
        claims: u64,
    ) -> Result<bool> {
        if claims != self.prod.claims {
            return Ok(false);
        }
        // With a producer, its own tail counts as well, loaded now (after the copy): the ring's
        // may be behind it if the last take met it moving. A correct producer raises it before
        // it overwrites records; one that passed `from` overwrote what was copied, which laps
        // the reader (up to the head: where the tail is exactly was not checked).
        let passed =
            self.prod.claimed && (self.store.producer_tail()?.wrapping_sub(from.pos) as i64) > 0;
        let (tail, head) = (self.tail, self.head);
        let to = self.settled(to);
        let s = self.slots.get_mut(i).filter(|s| s.active).ok_or(EINVAL)?;
        if s.cur != from || s.overrun || ahead(tail.seq, from.seq) > 0 {
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
        s.overrun = false;
        s.consume_to = None;
        self.lower_bound(to);
        if self.prod.claimed {
            // `room_pos` must never be ahead of the slowest reader.
            self.rescan();
            self.store.publish_room(self.low.pos)?;
        }
        Ok(())
    }

    /// Advances subscriber `i` past every record with a sequence number below `upto` (the
    /// mmap reader's release), walking at most [`CONSUME_STEP`] records: returns whether it got
    /// there; if not, the cursor moved as far as it walked and the caller drops the lock and
    /// calls again (no hold of the lock walks the ring). `EINVAL` if `upto` is beyond the head,
    /// unless a producer may have published it (a mapped reader reads the producer's head):
    /// then the cursor moves to the head, and what goes beyond applies as the records are
    /// taken. No-op if the cursor is already past it.
    pub(crate) fn consume(&mut self, i: usize, upto: u64) -> Result<bool> {
        let head = self.head;
        // Behind the cursor (or so far ahead that it reads as behind: serial-number order).
        if ahead(upto, self.slot(i)?.cur.seq) <= 0 {
            return Ok(true);
        }
        if ahead(upto, head.seq) >= 0 {
            let beyond = ahead(upto, head.seq) > 0;
            if beyond && !self.prod.claimed {
                return Err(EINVAL);
            }
            let s = self.slots.get_mut(i).filter(|s| s.active).ok_or(EINVAL)?;
            s.jump_to(head, &mut self.stats);
            if beyond {
                s.consume_to = Some(match s.consume_to {
                    Some(to) if ahead(to, upto) > 0 => to,
                    _ => upto,
                });
                self.prod.consumes_pending = true;
            }
            return Ok(true);
        }
        let mut cur = self.slot(i)?.cur;
        let mut n = 0u64;
        let mut done = true;
        while ahead(cur.seq, upto) < 0 && ahead(cur.seq, head.seq) < 0 {
            if n >= CONSUME_STEP {
                done = false;
                break;
            }
            let whole = match self.header_at(cur) {
                Ok(h) if self.within_head(cur, h.len) => Some(h),
                Ok(_) => None,
                Err(e) if e == ebadmsg() => None,
                Err(e) => return Err(e),
            };
            let Some(h) = whole else {
                // Rewritten since it was taken: a correct producer under `overwrite` raises
                // its tail and reuses the oldest records at any time. The cursor goes as far
                // as the records are whole, where `next` finds the overrun.
                if self.prod.ever {
                    break;
                }
                return Err(ebadmsg());
            };
            cur = cur.after(h.len);
            n = n.wrapping_add(1);
        }
        let cur = self.settled(cur);
        let s = self.slot_mut(i)?;
        if n > 0 && ahead(cur.seq, s.cur.seq) > 0 {
            s.cur = cur;
            self.stats.delivered = self.stats.delivered.wrapping_add(n);
        }
        Ok(done)
    }

    /// Subscriber `i`'s state for `MEMCHAN_IOC_READER` and fdinfo (without `flags`).
    pub(crate) fn reader_state(&self, i: usize) -> Result<abi::ReaderState> {
        let s = self.slot(i)?;
        Ok(abi::ReaderState {
            size: 0,
            flags: abi::READER_SUBSCRIBER | if s.overrun { abi::READER_OVERRUN } else { 0 },
            cursor_seq: s.cur.seq,
            cursor_pos: s.cur.pos,
            lag: self.head.seq.wrapping_sub(s.cur.seq),
            lost: s.lost,
            pending_lost: s.pending_lost,
        })
    }
}
