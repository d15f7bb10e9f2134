// SPDX-License-Identifier: GPL-2.0

//! Who holds a channel open: its subscriber seats (one per subscriber slot of the ring, and
//! the user holding each, for the per-user limit) and its writers.
//!
//! `open()` runs under the misc devices' global mutex, so it must not wait for anything a user
//! can keep busy, such as the channel's ring lock: a file takes its seat here, under a spinlock
//! held for a bounded scan of the seats, and the ring activates the seats taken since it last
//! looked at the start of its next lock hold ([`Seats::take_joined`]). A subscriber thus
//! receives every message whose write takes the ring lock after its `open()` returned, as
//! before, and nothing an `open()` does waits for the ring lock.

use kernel::prelude::*;

/// A channel's seats.
pub(crate) struct Seats {
    /// Per subscriber slot: the user holding it, if taken.
    holders: KVec<Option<u32>>,
    /// Slots taken since the ring last looked (each at most once: a seat is given back only
    /// after the ring has seen it).
    joined: KVec<u16>,
    /// Open files with write access.
    writers: u32,
    /// Set once the channel is removed: no file takes a seat after it.
    closed: bool,
}

impl Seats {
    /// Seats for `max_readers` subscribers (at most `u16::MAX + 1`), all free.
    pub(crate) fn new(max_readers: usize) -> Result<Self> {
        if max_readers == 0 || max_readers > usize::from(u16::MAX).wrapping_add(1) {
            return Err(EINVAL);
        }
        let mut holders = KVec::with_capacity(max_readers, GFP_KERNEL)?;
        for _ in 0..max_readers {
            holders.push(None, GFP_KERNEL)?;
        }
        Ok(Self {
            holders,
            joined: KVec::with_capacity(max_readers, GFP_KERNEL)?,
            writers: 0,
            closed: false,
        })
    }

    /// Registers a file that user `uid` opens: a seat if it reads (`ENOSPC` if none is free,
    /// or the user holds `per_user` already; 0: no such limit), a writer if it writes.
    /// `ENODEV` once the channel is closed. Returns the seat, which the ring activates at its
    /// next lock hold. One scan of the seats, no allocation.
    pub(crate) fn take(
        &mut self,
        read: bool,
        write: bool,
        uid: u32,
        per_user: usize,
    ) -> Result<Option<usize>> {
        if self.closed {
            return Err(ENODEV);
        }
        let seat = if read {
            let mut mine = 0usize;
            let mut free = None;
            for (i, h) in self.holders.iter().enumerate() {
                match h {
                    Some(u) if *u == uid => mine = mine.wrapping_add(1),
                    Some(_) => {}
                    None => {
                        free.get_or_insert(i);
                    }
                }
            }
            if per_user > 0 && mine >= per_user {
                return Err(ENOSPC);
            }
            let i = free.ok_or(ENOSPC)?;
            let index = u16::try_from(i).map_err(|_| EINVAL)?;
            self.joined
                .push_within_capacity(index)
                .map_err(|_| ENOSPC)?;
            if let Some(h) = self.holders.get_mut(i) {
                *h = Some(uid);
            }
            Some(i)
        } else {
            None
        };
        if write {
            self.writers = self.writers.wrapping_add(1);
        }
        Ok(seat)
    }

    /// Gives back what [`Seats::take`] registered, once the ring has let go of the seat.
    pub(crate) fn give_back(&mut self, seat: Option<usize>, write: bool) {
        if let Some(h) = seat.and_then(|i| self.holders.get_mut(i)) {
            *h = None;
        }
        if write {
            self.writers = self.writers.saturating_sub(1);
        }
    }

    /// Whether seats were taken since the last [`Seats::take_joined`].
    pub(crate) fn any_joined(&self) -> bool {
        !self.joined.is_empty()
    }

    /// Calls `activate` with each seat taken since the last call, in order, and forgets them.
    pub(crate) fn take_joined(&mut self, mut activate: impl FnMut(usize)) {
        for &i in self.joined.iter() {
            activate(usize::from(i));
        }
        self.joined.clear();
    }

    /// Open files with write access.
    pub(crate) fn writers(&self) -> u32 {
        self.writers
    }

    /// Whether no file holds the channel open (no seat taken, no writer).
    pub(crate) fn idle(&self) -> bool {
        self.writers == 0 && self.holders.iter().all(|h| h.is_none())
    }

    /// No file takes a seat from now on.
    pub(crate) fn close(&mut self) {
        self.closed = true;
    }
}

#[kunit_tests(memchan_seats)]
mod tests {
    use super::*;

    #[test]
    fn one_user_takes_at_most_its_share_of_the_seats() -> Result {
        let mut s = Seats::new(4)?;
        s.take(true, false, 1000, 2)?;
        s.take(true, false, 1000, 2)?;
        assert_eq!(s.take(true, false, 1000, 2), Err(ENOSPC));
        // Writing needs no seat.
        assert_eq!(s.take(false, true, 1000, 2)?, None);
        assert_eq!(s.take(true, false, 1001, 2)?, Some(2));
        Ok(())
    }

    #[test]
    fn seats_are_limited_reused_and_joined_once() -> Result {
        let mut s = Seats::new(4)?;
        for i in 0..4 {
            assert_eq!(s.take(true, true, 0, 0)?, Some(i));
        }
        assert_eq!(s.take(true, false, 0, 0), Err(ENOSPC));
        let mut seen = KVec::new();
        s.take_joined(|i| {
            let _ = seen.push(i, GFP_KERNEL);
        });
        assert_eq!(&*seen, &[0usize, 1, 2, 3][..]);
        assert!(!s.any_joined());
        s.give_back(Some(2), true);
        assert_eq!(s.take(true, false, 0, 0)?, Some(2));
        assert!(s.any_joined());
        assert_eq!(s.writers(), 3);
        for i in 0..4 {
            s.give_back(Some(i), i < 3);
        }
        assert!(s.idle());
        s.close();
        assert_eq!(s.take(false, true, 0, 0), Err(ENODEV));
        Ok(())
    }
}
