// SPDX-License-Identifier: GPL-2.0

//! KUnit tests of the ring and of the producer take protocol, over a plain buffer.

use super::take::{
    sort_by_key,
    JUMP_MAX, //
};
use super::*;

impl<S: Storage> Ring<S> {
    /// Subscribes the first free slot, as the channel's seats (`seats.rs`) pick one (where the
    /// per-user limit is, and tested).
    fn subscribe(&mut self, _uid: u32, _per_user: usize) -> Result<usize> {
        let i = self.slots.iter().position(|s| !s.active).ok_or(ENOSPC)?;
        self.subscribe_at(i)?;
        Ok(i)
    }
}

#[kunit_tests(memchan_ring)]
mod cases {
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
                    r.claims(),
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
            1,
            r.claims()
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
            1,
            r.claims()
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
        assert!(r.commit_range(s, from, to, 1, r.claims())?);
        assert!(!r.commit_range(s, from, to, 1, r.claims())?);
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
            1,
            r.claims()
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
            1,
            r.claims()
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
        r.unclaim(true)?;
        r.claim(p)?;
        assert!(!r.faulted());
        r.store.prod_head = at + 4;
        assert!(!r.take_produced() && r.faulted());
        r.unclaim(true)?;
        r.claim(p)?;
        r.store.prod_head = at.wrapping_add(1 << 40);
        assert!(!r.take_produced() && r.faulted());
        r.unclaim(true)?;
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
        let (mut r, _s, at) = produced_records(4)?;
        assert!(r.take_produced());
        // Behind the ring's head but ahead of the tail: refused before any record is read.
        r.store.prod_head = at - 32;
        assert!(!r.take_produced() && r.faulted());
        assert_eq!(r.head(), Cursor { pos: at, seq: 5 });
        Ok(())
    }

    #[test]
    fn a_copy_overwritten_before_its_commit_is_an_overrun() -> Result {
        let (mut r, s, _) = produced_records(3)?;
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
        assert!(!r.commit_range(s, from, from.after(h.len), 1, r.claims())?);
        assert!(matches!(r.next(s)?, Next::Overrun));
        assert_eq!(r.reader_state(s)?.pending_lost, 3);
        Ok(())
    }

    #[test]
    fn a_range_framed_under_a_producer_is_not_committed_after_it_left() -> Result {
        let (mut r, s, at) = produced_records(3)?;
        assert!(r.take_produced());
        let claims = r.claims();
        let Next::Record(h, pos) = r.next(s)? else {
            return Err(EINVAL);
        };
        let from = Cursor { pos, seq: h.seq };
        // The reader's copy ends where a length the producer may have forged says (9 bytes:
        // 40, inside the second record). While it copies, the producer leaves: its records and
        // the cursors as they stand check out, so they are kept.
        let to = from.after(h.len.wrapping_add(8));
        r.unclaim(true)?;
        assert_eq!(r.head(), Cursor { pos: at, seq: 4 });
        // The range found under the claim is not committed: the read starts over, at `from`.
        assert!(!r.commit_range(s, from, to, 1, claims)?);
        assert_eq!(r.reader_state(s)?.cursor_pos, 0);
        assert!(matches!(r.next(s)?, Next::Record(h, 0) if h.seq == 1));
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

    /// Takes as the channel's lock does: hold after hold while the take says there is more.
    fn take_all(r: &mut Ring<VecStore>) -> bool {
        let mut took = r.take_produced();
        while r.take_more() {
            took |= r.take_produced();
        }
        took
    }

    #[test]
    fn a_take_of_more_than_take_max_records_goes_in_holds() -> Result {
        let n = TAKE_MAX * 2 + 8;
        let (mut r, _s, at) = produced_records(n)?;
        assert!(r.take_produced());
        assert!(r.take_more() && !r.take_postponed());
        assert_eq!(r.head().seq, TAKE_MAX + 1);
        assert!(r.take_produced() && r.take_more());
        assert!(r.take_produced());
        assert!(!r.take_more() && !r.take_postponed());
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
        assert!(take_all(&mut r));
        r.unclaim(true)?;
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
        r.unclaim(true)?;
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
        r.unclaim(true)?;
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
        r.unclaim(true)?;
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
        // Before the take: one reader releases far beyond what there is, one the first two
        // records.
        r.consume(s, 1000)?;
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

    /// The producer of `r` discards all it has and publishes one record `seqs - 1` sequence
    /// numbers and `32 * (seqs - 1)` bytes past the ring's head (as dense as the positions
    /// allow: one record of one byte per 32), which the ring takes: its head moves by `seqs`.
    fn jump(r: &mut Ring<VecStore>, seqs: u64) -> Result {
        let h = r.head();
        let d = seqs - 1;
        let pos = h.pos.wrapping_add(d.wrapping_mul(record_size(1)));
        let seq = h.seq.wrapping_add(d);
        r.store.prod_head = produce_at(r, pos, seq)?;
        r.store.prod_tail = Cursor { pos, seq };
        r.take_produced();
        Ok(())
    }

    /// [`produce`] of a one-byte record at a position that may wrap.
    fn produce_at(r: &mut Ring<VecStore>, pos: u64, seq: u64) -> Result<u64> {
        let h = RecordHeader {
            seq,
            timestamp_ns: 7,
            len: 1,
            flags: 0,
        };
        r.store.write(pos, &h.to_bytes())?;
        Ok(pos.wrapping_add(record_size(1)))
    }

    #[test]
    fn numbers_a_producer_drives_to_the_wrap_leave_a_working_ring() -> Result {
        let mut r = ring(256, 8, Policy::Overwrite)?;
        let (a, b, p) = (r.subscribe(0, 0)?, r.subscribe(0, 0)?, r.subscribe(0, 0)?);
        r.claim(p)?;
        // About 64 takes, each as far as a jump may go, put the head four short of 2^64.
        let target = u64::MAX - 3;
        let most = JUMP_MAX / record_size(1) - 1;
        let mut takes = 0;
        while r.head().seq != target {
            let left = target.wrapping_sub(r.head().seq);
            jump(&mut r, left.min(most))?;
            assert!(!r.faulted());
            takes += 1;
        }
        assert!(takes <= 140);
        r.unclaim(true)?;
        // Both readers were lapped with exact counts, then read the last record.
        let mut buf = [0u8; 8];
        for s in [a, b] {
            assert!(matches!(r.next(s)?, Next::Overrun));
            assert_eq!(r.reader_state(s)?.pending_lost, target - 2);
            r.clear_overrun(s)?;
            assert_eq!(recv(&mut r, s, &mut buf)?, Some((target - 1, 1)));
        }
        // Ordinary traffic across the wrap: `block` waits for `b`, which reads nothing.
        r.set_policy(Policy::Block)?;
        for k in 0..8u64 {
            let seq = push(&mut r, b"w", k)?;
            assert_eq!(seq, target.wrapping_add(k));
            assert_eq!(recv(&mut r, a, &mut buf)?, Some((seq, 1)));
        }
        assert_eq!(r.head().seq, 4);
        assert!(r.would_block(1));
        assert_eq!(push(&mut r, b"w", 9), Err(EAGAIN));
        for k in 0..8u64 {
            assert_eq!(
                recv(&mut r, b, &mut buf)?,
                Some((target.wrapping_add(k), 1))
            );
        }
        assert_eq!(r.reader_state(b)?.lost, target - 2);
        // And `overwrite` laps `b` across it with an exact count.
        r.set_policy(Policy::Overwrite)?;
        for k in 0..12u64 {
            let seq = push(&mut r, b"o", k)?;
            assert_eq!(recv(&mut r, a, &mut buf)?, Some((seq, 1)));
        }
        assert!(matches!(r.next(b)?, Next::Overrun));
        assert_eq!(r.reader_state(b)?.pending_lost, 4);
        assert_eq!(r.reader_state(a)?.lag, 0);
        Ok(())
    }

    #[test]
    fn a_jump_beyond_jump_max_faults_the_producer() -> Result {
        let mut r = ring(256, 8, Policy::Overwrite)?;
        let p = r.subscribe(0, 0)?;
        r.claim(p)?;
        let pos = JUMP_MAX;
        r.store.prod_head = produce_at(&mut r, pos, 1 + JUMP_MAX / 32)?;
        r.store.prod_tail = Cursor {
            pos,
            seq: 1 + JUMP_MAX / 32,
        };
        assert!(!r.take_produced());
        assert!(r.faulted());
        assert_eq!(r.head(), Cursor { pos: 0, seq: 1 });
        Ok(())
    }

    #[test]
    fn a_bad_record_at_the_tail_starts_the_ring_over_instead_of_locking_writers_out() -> Result {
        let (mut r, s, _at) = produced_records(4)?;
        assert!(take_all(&mut r));
        r.unclaim(true)?;
        // Whatever made it so (a pin of the producer's pages outliving its claim, before they
        // were mapped by frame), the record at the tail is not whole any more.
        let tail = r.tail().pos;
        r.store.write(tail, &[0xff; 24])?;
        for k in 0..8u64 {
            assert_eq!(push(&mut r, b"k", k)?, 5 + k);
        }
        assert!(matches!(r.next(s)?, Next::Overrun));
        assert_eq!(r.reader_state(s)?.pending_lost, 8);
        r.clear_overrun(s)?;
        let mut buf = [0u8; 8];
        for seq in 9..=12u64 {
            assert_eq!(recv(&mut r, s, &mut buf)?, Some((seq, 1)));
        }
        Ok(())
    }

    #[test]
    fn a_reader_left_inside_a_rewritten_record_is_lapped_when_the_producer_leaves() -> Result {
        let mut r = ring(256, 136, Policy::Overwrite)?;
        let (s, p) = (r.subscribe(0, 0)?, r.subscribe(0, 0)?);
        r.claim(p)?;
        let at = produce(&mut r, 0, 1, &[1; 40])?;
        r.store.prod_head = produce(&mut r, at, 2, &[2; 104])?;
        assert!(take_all(&mut r));
        let mut buf = [0u8; 136];
        assert_eq!(recv(&mut r, s, &mut buf)?, Some((1, 40)));
        assert_eq!(r.reader_state(s)?.cursor_pos, 64);
        // The producer rewrites the two as one long record and a short one, with a forged
        // record where the reader stands, and leaves.
        let next = produce(&mut r, 0, 1, &[1; 136])?;
        produce(&mut r, next, 2, &[2; 8])?;
        produce(&mut r, 64, 2, &[6; 8])?;
        r.unclaim(true)?;
        // The reader is not handed the forged record: it lost record 2, exactly.
        assert!(matches!(r.next(s)?, Next::Overrun));
        assert_eq!(r.reader_state(s)?.pending_lost, 1);
        assert_eq!(r.tail(), r.head());
        Ok(())
    }

    #[test]
    fn a_release_of_many_records_goes_in_steps() -> Result {
        let mut r = ring(65536, 8, Policy::Overwrite)?;
        let s = r.subscribe(0, 0)?;
        for k in 0..1000u64 {
            push(&mut r, b"c", k)?;
        }
        // Up to the last record, not the head (that is one step).
        let mut calls = 0;
        while !r.consume(s, 1000)? {
            calls += 1;
            assert!(calls < 10);
        }
        assert_eq!(calls, 999 / CONSUME_STEP);
        assert_eq!(r.reader_state(s)?.cursor_seq, 1000);
        assert_eq!(r.reader_state(s)?.lag, 1);
        assert_eq!(r.stats.delivered, 999);
        Ok(())
    }
}
