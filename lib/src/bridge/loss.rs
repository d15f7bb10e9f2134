//! Counting what never arrived: sequence gaps in the samples of each source channel.

use std::collections::HashMap;

use super::wire::Attachment;

/// Most source channels followed at once (a publisher inventing streams cannot grow this).
const STREAMS_MAX: usize = 1024;

/// Where a stream was last seen.
#[derive(Clone, Copy, Debug)]
struct Last {
    seq: u64,
    /// The publishing bridge run, and its running total of skips.
    origin: u64,
    skipped: u64,
    /// Order of last use, for evicting the stalest stream.
    used: u64,
}

/// Per source channel, the last sequence number received.
#[derive(Debug, Default)]
pub(crate) struct LossTracker {
    streams: HashMap<u64, Last>,
    clock: u64,
}

/// What one sample says about its stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Seen {
    /// The first sample of a stream (or the first after it started over).
    First,
    /// The next one, after `lost` messages that never arrived.
    Next {
        /// Messages of the source channel missing before this sample.
        lost: u64,
    },
}

impl LossTracker {
    /// Accounts for a received sample.
    ///
    /// A sequence number at or below the last one means the source channel started over (its
    /// module was reloaded) or the network repeated itself: the stream is followed from here.
    pub(crate) fn observe(&mut self, a: &Attachment) -> Seen {
        self.clock = self.clock.wrapping_add(1);
        let now = Last {
            seq: a.seq,
            origin: a.origin,
            skipped: a.skipped,
            used: self.clock,
        };
        let seen = match self.streams.get(&a.stream) {
            Some(last) if a.seq > last.seq => {
                // Skips since the last sample: the difference of the running totals, or all of
                // a new bridge run's (it started after the last sample's run ended).
                let skipped = match a.origin == last.origin {
                    true => a.skipped.saturating_sub(last.skipped),
                    false => a.skipped,
                };
                let expected = last.seq.saturating_add(1).saturating_add(skipped);
                Seen::Next {
                    lost: a.seq.saturating_sub(expected),
                }
            }
            _ => Seen::First,
        };
        if seen == Seen::First && !self.streams.contains_key(&a.stream) {
            self.evict_if_full();
        }
        self.streams.insert(a.stream, now);
        seen
    }

    fn evict_if_full(&mut self) {
        if self.streams.len() < STREAMS_MAX {
            return;
        }
        let stalest = self
            .streams
            .iter()
            .min_by_key(|(_, l)| l.used)
            .map(|(k, _)| *k);
        if let Some(k) = stalest {
            self.streams.remove(&k);
        }
    }

    /// Source channels seen.
    pub(crate) fn streams(&self) -> usize {
        self.streams.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn att(stream: u64, seq: u64, skipped: u64) -> Attachment {
        att_from(1, stream, seq, skipped)
    }

    fn att_from(origin: u64, stream: u64, seq: u64, skipped: u64) -> Attachment {
        Attachment {
            origin,
            stream,
            seq,
            timestamp_ns: 0,
            skipped,
        }
    }

    #[test]
    fn gaps_count_and_skips_do_not() {
        let mut t = LossTracker::default();
        assert_eq!(t.observe(&att(7, 10, 0)), Seen::First);
        assert_eq!(t.observe(&att(7, 11, 0)), Seen::Next { lost: 0 });
        assert_eq!(t.observe(&att(7, 15, 0)), Seen::Next { lost: 3 });
        // Two messages the source bridge wrote itself (its total of skips goes to 2), then
        // this one: nothing lost.
        assert_eq!(t.observe(&att(7, 18, 2)), Seen::Next { lost: 0 });
        // One more skip, and the sample after it lost on the way: one message lost, not two.
        assert_eq!(t.observe(&att(7, 21, 3)), Seen::Next { lost: 1 });
        // The bridge restarted (new origin, skips counted afresh): of 22..=25, one skipped and
        // three lost.
        assert_eq!(t.observe(&att_from(2, 7, 26, 1)), Seen::Next { lost: 3 });
        // Another stream is followed on its own.
        assert_eq!(t.observe(&att(8, 1, 0)), Seen::First);
        // The source started over.
        assert_eq!(t.observe(&att_from(2, 7, 1, 1)), Seen::First);
        assert_eq!(t.observe(&att_from(2, 7, 2, 1)), Seen::Next { lost: 0 });
    }

    #[test]
    fn streams_are_bounded() {
        let mut t = LossTracker::default();
        for s in 0..(STREAMS_MAX as u64 + 10) {
            t.observe(&att(s, 1, 0));
        }
        assert_eq!(t.streams(), STREAMS_MAX);
    }
}
