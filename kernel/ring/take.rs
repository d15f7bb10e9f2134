// SPDX-License-Identifier: GPL-2.0

//! The producer take protocol: a producer claims the ring and writes records into it through
//! its own mapping (see `abi::ProducerControl`); the kernel takes them (checks the producer's
//! tail and head and every record between, each read once) whenever someone needs them, and
//! applies the releases of mapped readers that went beyond its head as the records arrive.
//! Everything a producer publishes is untrusted: a take accepts only what a correct producer
//! could have published, and anything else faults the producer.

use kernel::prelude::*;

use super::{
    ahead,
    record_size,
    Cursor,
    Ring,
    Storage, //
};
use crate::{
    abi::{
        self,
        RecordHeader, //
    },
    compat::code::{
        ebadmsg,
        enodata, //
    },
};

/// Most records one try of taking a producer's records checks before it commits them: a try
/// that meets the producer's tail moving starts over, and halves this for the next one (a
/// shorter walk is less likely to be passed by the producer's tail).
pub(crate) const TAKE_MAX: u64 = 1024;

/// Tries of one take that may meet the producer's tail moving before the take is postponed.
const TAKE_TRIES: u32 = 8;

/// The furthest one take may move the ring's head: 2^62 bytes (and so at most 2^57 sequence
/// numbers, one per [`record_size`]`(1)` bytes). A correct producer may lap the ring any number
/// of times between two takes (under `overwrite`, with no reader to take its records), so a
/// jump is not bounded by the ring's size; but no take may move the head so far that the
/// ring's values stop being comparable: with this bound, every cursor, the tail and the head
/// stay within 2^63 of each other, where [`ahead`] orders them, across the wrap of `u64`.
pub(crate) const JUMP_MAX: u64 = 1 << 62;

/// Most records [`Ring::kept_from`] walks when a producer leaves, under the lock: the records
/// from the tail (or else the slowest reader) to the head are kept only if there are at most
/// this many.
const LEAVE_CHECK_MAX: u64 = 16 * TAKE_MAX;

/// Sorts `v` by `key`, ascending, in place: a heapsort, with no allocation and, unlike the
/// sorts of `core`, no panic path (objtool flags the one in `core`'s quicksort in a module
/// built by Debian's toolchain).
pub(super) fn sort_by_key(v: &mut [u16], key: impl Fn(u16) -> u64) {
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

/// The state of the producer-mapped mode (see `abi::ProducerControl`), kept in the ring: who
/// has it, whether what it published was valid, and what its takes left to do.
pub(super) struct Producer {
    /// A producer has claimed the ring (see `abi::ProducerControl`): records arrive through
    /// [`Ring::take_produced`].
    pub(super) claimed: bool,
    /// The producer published something invalid: nothing more of it is taken.
    pub(super) fault: bool,
    /// A producer has had the ring at some point: its bytes may still be anything, so a
    /// record that is not the expected one is an overrun for its reader, not a driver bug.
    pub(super) ever: bool,
    /// The producer's own subscriber slot: kept at the head, so that it never holds the ring
    /// back (the producer reads nothing through it).
    pub(super) slot: Option<usize>,
    /// The last take left records the producer had published untaken (its tail kept moving,
    /// or its head ran on past the take's budget). They arrive with a later take: at the
    /// latest at the doorbell the producer rings after it moved its tail (see
    /// `abi::ProducerControl`).
    pub(super) postponed: bool,
    /// Some subscriber has a [`Slot::consume_to`] set.
    pub(super) consumes_pending: bool,
    /// Room for one index per subscriber slot, allocated with the ring: the releases one
    /// take applies, sorted ([`Ring::apply_consumes`]).
    pub(super) order: KVec<u16>,
    /// The last take stopped at its budget for one hold of the lock ([`TAKE_MAX`] records
    /// taken, or as many walked for releases) with more to do: the caller drops the lock and
    /// takes again ([`Ring::take_more`]).
    pub(super) more: bool,
    /// A release beyond the head was left short by the walk's budget (see
    /// [`Ring::apply_consumes`]): the next take applies it even if no record arrives.
    pub(super) consumes_short: bool,
    /// A take applied a release ([`Slot::consume_to`]) that moved a cursor: under `block`,
    /// a producer waiting for room must look again ([`Ring::take_released`]).
    pub(super) released: bool,
    /// Claims and unclaims so far (wrapping): what a reader found in the ring under one
    /// producer is committed only under the same claim ([`Ring::commit_range`]), since a
    /// record's length, which frames the next one, may be the producer's forgery. 64 bits: an
    /// owner cycling claims while a reader's copy is held up cannot bring it round (32 bits
    /// took 2^31 claims, hours).
    pub(super) claims: u64,
}

impl Producer {
    /// No producer yet; `order` has room for one index per subscriber slot.
    pub(super) fn new(order: KVec<u16>) -> Self {
        Self {
            claimed: false,
            fault: false,
            ever: false,
            slot: None,
            postponed: false,
            consumes_pending: false,
            order,
            more: false,
            consumes_short: false,
            released: false,
            claims: 0,
        }
    }
}

impl<S: Storage> Ring<S> {
    /// Loads the producer's head (with acquire ordering), for nothing but its ordering: a
    /// record it published is visible to whatever the caller loads after this (see
    /// `Channel::take_produced`).
    pub(crate) fn look_at_producer(&self) {
        let _ = self.store.producer_head();
    }

    /// Whether a producer has claimed the ring.
    pub(crate) fn produced(&self) -> bool {
        self.prod.claimed
    }

    /// Which claim (or time without one) the ring's records belong to: changes at every claim
    /// and unclaim. A reader passes it back to [`Ring::commit_range`].
    pub(crate) fn claims(&self) -> u64 {
        self.prod.claims
    }

    /// A producer claims the ring (`EBUSY` if one has): from now on records arrive through
    /// [`Ring::take_produced`]; the producer page already holds the head and tail.
    pub(crate) fn claim(&mut self, slot: usize) -> Result {
        if self.prod.claimed {
            return Err(EBUSY);
        }
        let head = self.head;
        let s = self.slot_mut(slot)?;
        s.cur = head;
        s.pending_lost = 0;
        s.overrun = false;
        self.rescan();
        self.store.publish_room(self.low.pos)?;
        self.prod.slot = Some(slot);
        self.prod.claimed = true;
        self.prod.claims = self.prod.claims.wrapping_add(1);
        self.prod.ever = true;
        self.prod.fault = false;
        self.publish_flags()
    }

    /// The producer left: takes what it had published (if `take`: not once the channel is
    /// removed), then mirrors the ring's head and tail into the producer page again, for
    /// readers and the next producer.
    pub(crate) fn unclaim(&mut self, take: bool) -> Result<bool> {
        let took = take && self.take_produced();
        // A tail the take did not reach (the producer discarded all it had published, and
        // maybe began to overwrite the records the ring holds; or it faulted): the ring's
        // records may be rewritten, payloads included, so none of them is kept.
        let discarded = !self.store.producer_tail().is_ok_and(|t| t == self.tail.pos);
        self.prod.claimed = false;
        self.prod.claims = self.prod.claims.wrapping_add(1);
        self.prod.fault = false;
        self.prod.postponed = false;
        self.prod.slot = None;
        self.prod.more = false;
        // Releases beyond the head wait for records no one will publish now.
        for s in self.slots.iter_mut() {
            s.consume_to = None;
        }
        self.prod.consumes_pending = false;
        self.prod.consumes_short = false;
        self.prod.released = false;
        // No one writes the bytes any more: the producer's mapping is gone, and no pin of its
        // pages can outlive it (`Pages::map_producer`). Its records, and where the readers
        // stand in them, are checked once, in a walk of bounded length ([`Ring::kept_from`]);
        // where that fails, the ring starts over empty at the head (its readers lapped, with
        // exact counts).
        match (!discarded).then(|| self.kept_from()).flatten() {
            Some(from) => self.tail = from,
            None => {
                self.tail = self.head;
                self.lap_readers();
            }
        }
        self.publish_flags()?;
        self.store.publish_tail(self.tail)?;
        self.store.publish_head(self.head)?;
        Ok(took)
    }

    /// Where the ring can keep a former producer's records from, checked: the tail, or if the
    /// walk from there would be longer than [`LEAVE_CHECK_MAX`] records, the slowest reader's
    /// cursor (older records go; no reader needs them). Every record from there to the head is
    /// whole, numbered in order and ends where the next begins, the last at the head, and every
    /// reader's cursor lies on one of their boundaries (a producer may have rewritten the
    /// records a reader was in the middle of, so that the cursor points at bytes of its
    /// choice). `None` if not (or if even that walk is too long).
    fn kept_from(&mut self) -> Option<Cursor> {
        let head = self.head;
        // The readers, slowest first.
        self.prod.order.clear();
        for (i, s) in self.slots.iter().enumerate() {
            if s.active {
                let i = u16::try_from(i).ok()?;
                self.prod.order.push_within_capacity(i).ok()?;
            }
        }
        let slots = &self.slots;
        sort_by_key(&mut self.prod.order, |i| {
            slots.get(usize::from(i)).map_or(0, |s| {
                u64::MAX.wrapping_sub(head.seq.wrapping_sub(s.cur.seq))
            })
        });
        let slowest = match self.prod.order.first() {
            Some(&i) => self.slots.get(usize::from(i))?.cur,
            None => head,
        };
        // Never behind the tail (a cursor that is must be lapped).
        if ahead(slowest.seq, self.tail.seq) < 0 || ahead(head.seq, slowest.seq) < 0 {
            return None;
        }
        let from = if head.seq.wrapping_sub(self.tail.seq) <= LEAVE_CHECK_MAX {
            self.tail
        } else if head.seq.wrapping_sub(slowest.seq) <= LEAVE_CHECK_MAX {
            slowest
        } else {
            return None;
        };
        let (mut cur, mut k) = (from, 0usize);
        loop {
            while let Some(&i) = self.prod.order.get(k) {
                let at = self.slots.get(usize::from(i))?.cur;
                if at.seq != cur.seq {
                    break;
                }
                if at.pos != cur.pos {
                    return None;
                }
                k = k.wrapping_add(1);
            }
            if cur.seq == head.seq {
                return (cur.pos == head.pos && k == self.prod.order.len()).then_some(from);
            }
            match self.header_at(cur) {
                Ok(h) if h.flags == 0 && self.within_head(cur, h.len) => cur = cur.after(h.len),
                _ => return None,
            }
        }
    }

    /// Whether the producer published something invalid (see [`Ring::take_produced`]).
    pub(crate) fn faulted(&self) -> bool {
        self.prod.fault
    }

    /// Tells the producer whether readers wait (see `abi::ProducerControl`), with a full fence
    /// after it; a no-op without a producer.
    pub(crate) fn publish_waiters(&mut self, waiters: bool) -> Result {
        if self.prod.claimed {
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
    /// producer. Bounded: at most [`TAKE_MAX`] records (then [`Ring::take_more`] says so, and
    /// the caller takes again after dropping the lock), and [`TAKE_TRIES`] tries that meet the
    /// tail moving (then the take is postponed, [`Ring::take_postponed`]).
    pub(crate) fn take_produced(&mut self) -> bool {
        self.prod.postponed = false;
        self.prod.more = false;
        if !self.prod.claimed || self.prod.fault {
            return false;
        }
        let mut took = false;
        if self.take_records(&mut took).is_err() {
            self.prod.fault = true;
            self.prod.more = false;
            let _ = self.publish_flags();
        }
        if self.prod.consumes_pending && (took || self.prod.consumes_short) {
            self.prod.consumes_short = false;
            self.apply_consumes();
        }
        took
    }

    /// Whether the last [`Ring::take_produced`] stopped at its budget for one hold of the lock
    /// with more to take or to apply: the caller drops the lock and takes again.
    pub(crate) fn take_more(&self) -> bool {
        self.prod.claimed && self.prod.more
    }

    /// Whether the last [`Ring::take_produced`] left records untaken that its producer had
    /// published (without fault): a correct producer moving its tail all along, or one
    /// publishing faster than a take checks. The records arrive with a later take.
    pub(crate) fn take_postponed(&self) -> bool {
        self.prod.claimed && self.prod.postponed
    }

    /// Whether a take applied a release that moved a cursor since the last call (under
    /// `block`, there may be room for a waiting producer).
    pub(crate) fn take_released(&mut self) -> bool {
        core::mem::take(&mut self.prod.released)
    }

    /// [`Ring::take_produced`] without the fault handling: tries until one reaches the
    /// producer's head. A correct producer may be moving its tail (and overwriting what it
    /// discarded) while the records are checked; a try changes the ring only when it
    /// succeeds, so one that met a moving tail changes nothing and the next walks half as far
    /// (one that succeeds, twice as far, up to [`TAKE_MAX`]).
    /// Sets `took` if any record arrived. `EBADMSG` only for what no correct producer
    /// publishes.
    fn take_records(&mut self, took: &mut bool) -> Result {
        // One hold's worth: what is left is taken in the next hold ([`Ring::take_more`]).
        let mut budget = TAKE_MAX;
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
                    if budget == 0 {
                        self.prod.more = true;
                        return Ok(());
                    }
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
        self.prod.postponed = true;
        Ok(())
    }

    /// Applies the releases ([`Slot::consume_to`]) that went beyond the ring's head, as far as
    /// the records have arrived. A release to or beyond the head moves the cursor there in one
    /// step; those that fall between are sorted by where they end and applied in one walk
    /// over the records (each is a record boundary on it), of at most [`TAKE_MAX`] records: a
    /// release the walk did not reach moves as far as it got and stays pending
    /// ([`Ring::take_more`]), so that no hold of the lock walks the ring, however many readers
    /// released.
    fn apply_consumes(&mut self) {
        let head = self.head;
        let mut pending = false;
        self.prod.order.clear();
        let mut from: Option<Cursor> = None;
        for (i, s) in self.slots.iter_mut().enumerate() {
            let Some(to) = s.consume_to.filter(|_| s.active) else {
                continue;
            };
            let before = s.cur.seq;
            if ahead(to, head.seq) >= 0 {
                s.jump_to(head, &mut self.stats);
                if to == head.seq {
                    s.consume_to = None;
                } else {
                    pending = true;
                }
            } else if ahead(to, s.cur.seq) > 0 {
                // Never full: room for every slot. The walk starts at the first cursor.
                if let Ok(i) = u16::try_from(i) {
                    if self.prod.order.push_within_capacity(i).is_ok() {
                        from = Some(from.map_or(s.cur, |f| {
                            if ahead(s.cur.seq, f.seq) < 0 {
                                s.cur
                            } else {
                                f
                            }
                        }));
                        continue;
                    }
                }
                s.consume_to = None;
            } else {
                s.consume_to = None;
            }
            self.prod.released |= s.cur.seq != before;
        }
        self.prod.consumes_pending = pending;
        let Some(mut cur) = from else {
            return;
        };
        let slots = &self.slots;
        // By where each ends, counted from the walk's start (all end ahead of it).
        sort_by_key(&mut self.prod.order, |i| {
            slots
                .get(usize::from(i))
                .and_then(|s| s.consume_to)
                .map_or(0, |to| to.wrapping_sub(cur.seq))
        });
        let mut steps = 0u64;
        for k in 0..self.prod.order.len() {
            let Some(i) = self.prod.order.get(k).map(|&i| usize::from(i)) else {
                break;
            };
            let Some(upto) = self.slots.get(i).and_then(|s| s.consume_to) else {
                continue;
            };
            // Up to this release's end; a record that is not whole any more (rewritten since it
            // was taken) stops the walk.
            let mut stopped = false;
            while ahead(cur.seq, upto) < 0 {
                if steps >= TAKE_MAX {
                    break;
                }
                match self.header_at(cur) {
                    Ok(h) if self.within_head(cur, h.len) => cur = cur.after(h.len),
                    _ => {
                        stopped = true;
                        break;
                    }
                }
                steps = steps.wrapping_add(1);
            }
            // As far as the records are whole (`next` finds the overrun where they stop); a
            // release the budget cut short stays, for the next hold of the lock.
            let short = !stopped && ahead(cur.seq, upto) < 0;
            cur = self.settled(cur);
            if let Some(s) = self.slots.get_mut(i) {
                if !short {
                    s.consume_to = None;
                }
                let before = s.cur.seq;
                s.jump_to(cur, &mut self.stats);
                self.prod.released |= s.cur.seq != before;
            }
            if short {
                self.prod.consumes_pending = true;
                self.prod.consumes_short = true;
                self.prod.more = true;
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
        // Aligned, and never behind the ring's head nor further ahead than a jump may go.
        let jump = new_head.wrapping_sub(self.head.pos);
        if jump % u64::from(abi::RECORD_ALIGN) != 0 || jump > JUMP_MAX {
            return Err(ebadmsg());
        }
        let tail = match self.check_tail(tail_pos, new_head) {
            Err(e) if e == enodata() => return Ok((0, true)),
            t => t?,
        };
        // The ring never spans more than its size: a correct producer raises its tail before
        // it publishes the head that needs it, and the tail was the same after the head.
        if new_head.wrapping_sub(tail.pos) > self.size {
            return Err(ebadmsg());
        }
        // If the producer lapped the ring's head, its records now start at its tail.
        let start = if ahead(tail.seq, self.head.seq) > 0 {
            tail
        } else {
            self.head
        };
        // Between the tail and the head, never behind the ring's head (no head moves back).
        let ahead = new_head.wrapping_sub(start.pos);
        if ahead > new_head.wrapping_sub(tail.pos) {
            return Err(ebadmsg());
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
            return Err(ebadmsg());
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
            return Err(ebadmsg());
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
                return Err(ebadmsg());
            }
            return Err(enodata());
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
            return Err(ebadmsg());
        }
        Ok(t)
    }
}
