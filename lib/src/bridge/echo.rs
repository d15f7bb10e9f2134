//! Telling the messages a bridge wrote into its channel from everyone else's, so that a
//! `both` bridge does not publish back what it received.
//!
//! The kernel does not say who wrote a record, and a write does not return its sequence
//! number, so the bridge recognises its own writes by content and time: before each write it
//! notes the payload (length and hash) and the time, after it the time again. The record the
//! kernel made has its timestamp (the same `CLOCK_MONOTONIC`) inside that window. A message
//! read from the channel whose timestamp falls in the window of a noted write with the same
//! payload is that write, or another writer's identical message written at the same moment:
//! the two cannot be told apart, and skipping either forwards the same content. No lock is
//! held across the write, so a write that waits for room never stops the reader that would
//! make it.

use std::collections::hash_map::DefaultHasher;
use std::collections::VecDeque;
use std::hash::Hasher;
use std::sync::Mutex;
use std::time::Duration;

/// Identifies a payload: its length and a 64-bit hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Digest {
    len: usize,
    hash: u64,
}

impl Digest {
    pub(crate) fn of(payload: &[u8]) -> Self {
        let mut h = DefaultHasher::new();
        h.write(payload);
        Self {
            len: payload.len(),
            hash: h.finish(),
        }
    }
}

/// A write of this bridge into the channel.
#[derive(Debug)]
struct Write {
    id: u64,
    digest: Digest,
    /// Monotonic time just before the write.
    start: Duration,
    /// Just after it (`None` while it is in progress).
    end: Option<Duration>,
}

/// The writes of this bridge that its reader has not met yet.
#[derive(Debug)]
pub(crate) struct EchoFilter {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    writes: VecDeque<Write>,
    next_id: u64,
    /// Most writes kept: as many records as the ring and the reader's buffer can hold (older
    /// ones were overwritten before the reader got them).
    cap: usize,
}

/// A write in progress ([`EchoFilter::begin`] to [`EchoFilter::end`]).
#[must_use]
pub(crate) struct Pending(u64);

impl EchoFilter {
    /// A filter for a reader that can have at most `cap` records to meet (in the ring and in
    /// its own buffer).
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                writes: VecDeque::new(),
                next_id: 0,
                cap: cap.max(1),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic elsewhere cannot leave the queue inconsistent: every update is one call.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes a write about to start, at monotonic time `now`.
    pub(crate) fn begin(&self, digest: Digest, now: Duration) -> Pending {
        let mut g = self.lock();
        let id = g.next_id;
        g.next_id = g.next_id.wrapping_add(1);
        if g.writes.len() >= g.cap {
            g.writes.pop_front();
        }
        g.writes.push_back(Write {
            id,
            digest,
            start: now,
            end: None,
        });
        Pending(id)
    }

    /// Notes that the write ended (written or failed) at monotonic time `now`.
    pub(crate) fn end(&self, pending: Pending, now: Duration) {
        let mut g = self.lock();
        // The write just begun is at the back (one writer thread).
        if let Some(w) = g.writes.iter_mut().rev().find(|w| w.id == pending.0) {
            w.end = Some(now);
        }
    }

    /// Whether the message read with `timestamp` and `digest` is one of this bridge's writes
    /// (then forgotten: each write matches once). Writes that ended before `timestamp` can no
    /// longer be met (records come in timestamp order) and are forgotten too.
    pub(crate) fn is_echo(&self, timestamp: Duration, digest: Digest) -> bool {
        let mut g = self.lock();
        // Writes end in order (one writer thread), so the passed ones are at the front.
        while g
            .writes
            .front()
            .is_some_and(|w| w.end.is_some_and(|end| end < timestamp))
        {
            g.writes.pop_front();
        }
        let hit = g
            .writes
            .iter()
            .position(|w| w.digest == digest && w.start <= timestamp);
        match hit {
            Some(i) => {
                g.writes.remove(i);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ns: u64) -> Duration {
        Duration::from_nanos(ns)
    }

    #[test]
    fn own_writes_match_once_within_their_window() {
        let f = EchoFilter::new(16);
        let (a, b) = (Digest::of(b"a"), Digest::of(b"b"));
        let p = f.begin(a, t(10));
        f.end(p, t(20));
        // Another writer's "b" in the window is not ours; a message before the write neither.
        assert!(!f.is_echo(t(15), b));
        assert!(!f.is_echo(t(5), a));
        assert!(f.is_echo(t(15), a));
        assert!(!f.is_echo(t(15), a), "matched once");
    }

    #[test]
    fn a_write_in_progress_matches_and_passed_ones_are_forgotten() {
        let f = EchoFilter::new(16);
        let a = Digest::of(b"a");
        let done = f.begin(a, t(10));
        f.end(done, t(20));
        let _open = f.begin(a, t(30));
        // The reader is past the first write (lost to an overrun, say): only the open one
        // remains, and it matches whatever comes after its start.
        assert!(f.is_echo(t(1_000), a));
        assert!(!f.is_echo(t(1_001), a));
    }

    #[test]
    fn the_queue_is_bounded() {
        let f = EchoFilter::new(2);
        for i in 0..10u64 {
            let p = f.begin(Digest::of(&i.to_le_bytes()), t(i));
            f.end(p, t(i));
        }
        assert_eq!(f.lock().writes.len(), 2);
    }
}
