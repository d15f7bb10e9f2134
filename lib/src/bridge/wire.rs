//! What a bridged message carries besides its payload: the Zenoh attachment.
//!
//! Every sample a bridge publishes has a 48-byte attachment, little-endian:
//!
//! | offset | field          | meaning                                                       |
//! |--------|----------------|---------------------------------------------------------------|
//! | 0      | `b"mcb1"`      | magic and version                                             |
//! | 4      | `u32` flags    | 0 (reserved)                                                  |
//! | 8      | `u64` origin   | the publishing bridge (random, new each run)                  |
//! | 16     | `u64` stream   | the source channel (same across bridge restarts on one boot)  |
//! | 24     | `u64` seq      | the message's sequence number in the source channel           |
//! | 32     | `u64` time     | when it was written: source's `CLOCK_MONOTONIC`, nanoseconds  |
//! | 40     | `u64` skipped  | messages this bridge run has not forwarded so far, in total   |
//!
//! In Python: `struct.unpack("<4sIQQQQQ", bytes(sample.attachment))`. Samples without it
//! (from any Zenoh publisher) are bridged too, with no sequence checks.

/// Size of the attachment.
pub const ATTACHMENT_BYTES: usize = 48;
/// Its first four bytes.
const MAGIC: [u8; 4] = *b"mcb1";

/// The attachment's fields (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attachment {
    /// The publishing bridge.
    pub origin: u64,
    /// The source channel.
    pub stream: u64,
    /// Sequence number in the source channel.
    pub seq: u64,
    /// Source `CLOCK_MONOTONIC` time of the write, in nanoseconds.
    pub timestamp_ns: u64,
    /// Messages of the source channel this bridge run deliberately did not forward so far
    /// (those it wrote there itself, received from Zenoh): a running total, so that a lost
    /// sample does not take its skips with it.
    pub skipped: u64,
}

impl Attachment {
    /// The wire form.
    pub fn encode(&self) -> [u8; ATTACHMENT_BYTES] {
        let mut out = [0u8; ATTACHMENT_BYTES];
        let fields = [
            self.origin,
            self.stream,
            self.seq,
            self.timestamp_ns,
            self.skipped,
        ];
        let (head, rest) = out.split_at_mut(8);
        head[..4].copy_from_slice(&MAGIC);
        for (chunk, v) in rest.chunks_exact_mut(8).zip(fields) {
            chunk.copy_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// Parses the wire form (`None` for anything else: not from a memchan bridge).
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != ATTACHMENT_BYTES || bytes.get(..4)? != MAGIC {
            return None;
        }
        let word = |i: usize| -> Option<u64> {
            let b = bytes.get(8 + 8 * i..16 + 8 * i)?;
            Some(u64::from_le_bytes(b.try_into().ok()?))
        };
        Some(Self {
            origin: word(0)?,
            stream: word(1)?,
            seq: word(2)?,
            timestamp_ns: word(3)?,
            skipped: word(4)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_foreign_attachments() {
        let a = Attachment {
            origin: 1,
            stream: u64::MAX,
            seq: 42,
            timestamp_ns: 7,
            skipped: 3,
        };
        let wire = a.encode();
        assert_eq!(Attachment::decode(&wire), Some(a));
        assert_eq!(&wire[..4], b"mcb1");
        assert_eq!(&wire[24..32], &42u64.to_le_bytes());
        assert_eq!(Attachment::decode(&wire[..47]), None);
        let mut bad = wire;
        bad[0] = b'x';
        assert_eq!(Attachment::decode(&bad), None);
        assert_eq!(Attachment::decode(b""), None);
    }
}
