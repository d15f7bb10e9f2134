//! Plain data: channel paths, policies, and what the info/stats/reader ioctls report.

use std::path::PathBuf;
use std::time::Duration;

use memchan_abi as abi;

/// The device node of channel `index`: `/dev/memchan` for 0, `/dev/memchan<index>` otherwise.
pub fn channel_path(index: u32) -> PathBuf {
    if index == 0 {
        PathBuf::from(abi::DEVICE_PATH)
    } else {
        PathBuf::from(format!("{}{index}", abi::DEVICE_PATH))
    }
}

/// What a channel does when a writer gets a whole ring ahead of its slowest receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Policy {
    /// Writers wait for the slowest receiver: nothing is ever lost.
    Block,
    /// Writers never wait: a receiver that falls a ring behind loses the oldest messages and
    /// is told how many ([`crate::Error::Overrun`]).
    Overwrite,
}

impl Policy {
    /// The ABI value.
    pub(crate) fn raw(self) -> u32 {
        match self {
            Self::Block => abi::POLICY_BLOCK,
            Self::Overwrite => abi::POLICY_OVERWRITE,
        }
    }

    /// From the ABI value (unknown values read as `Block`, the conservative choice).
    pub(crate) fn from_raw(raw: u32) -> Self {
        if raw == abi::POLICY_OVERWRITE {
            Self::Overwrite
        } else {
            Self::Block
        }
    }

    /// `"block"` or `"overwrite"`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Block => "block",
            Self::Overwrite => "overwrite",
        }
    }
}

impl std::str::FromStr for Policy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "block" => Ok(Self::Block),
            "overwrite" => Ok(Self::Overwrite),
            _ => Err(format!("unknown policy {s:?}: use block or overwrite")),
        }
    }
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a receiver continues from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seek {
    /// The oldest message still in the ring (replay what is there).
    Oldest,
    /// After the newest message: only messages written from now on.
    Newest,
}

impl Seek {
    /// The ABI value.
    pub(crate) fn raw(self) -> u32 {
        match self {
            Self::Oldest => abi::SEEK_OLDEST,
            Self::Newest => abi::SEEK_NEWEST,
        }
    }
}

/// A channel's configuration and state (`MEMCHAN_IOC_INFO`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Info {
    /// Channel index (0 is `/dev/memchan`).
    pub index: u32,
    /// Overflow policy.
    pub policy: Policy,
    /// Ring size in bytes.
    pub ring_bytes: u64,
    /// Largest message, in bytes.
    pub msg_max: usize,
    /// Sequence number the next message will get.
    pub next_seq: u64,
    /// Sequence number of the oldest message still in the ring (`next_seq` if none).
    pub oldest_seq: u64,
    /// Open files with read access.
    pub subscribers: u32,
    /// Open files with write access.
    pub writers: u32,
    /// Length of the zero-copy mapping.
    pub mmap_bytes: u64,
}

impl From<abi::ChannelInfo> for Info {
    fn from(r: abi::ChannelInfo) -> Self {
        Self {
            index: r.index,
            policy: Policy::from_raw(r.policy),
            ring_bytes: r.ring_bytes,
            msg_max: usize::try_from(r.msg_max).unwrap_or(usize::MAX),
            next_seq: r.head_seq,
            oldest_seq: r.oldest_seq,
            subscribers: r.subscribers,
            writers: r.writers,
            mmap_bytes: r.mmap_bytes,
        }
    }
}

impl Info {
    /// Messages currently held in the ring.
    pub fn messages_in_ring(&self) -> u64 {
        self.next_seq.saturating_sub(self.oldest_seq)
    }
}

/// A channel's counters since it was created (`MEMCHAN_IOC_STATS`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages written.
    pub messages: u64,
    /// Payload bytes written.
    pub bytes: u64,
    /// Times a receiver fell a whole ring behind (overwrite policy).
    pub overruns: u64,
    /// Messages lost by receivers in total (overwrite policy).
    pub lost: u64,
    /// Writes that had to wait for room (block policy).
    pub blocked_writes: u64,
    /// Messages delivered by `read()`, summed over receivers.
    pub delivered: u64,
}

impl From<abi::ChannelStats> for Stats {
    fn from(r: abi::ChannelStats) -> Self {
        Self {
            messages: r.messages,
            bytes: r.bytes,
            overruns: r.overruns,
            lost: r.lost,
            blocked_writes: r.blocked_writes,
            delivered: r.delivered,
        }
    }
}

/// One receiver's position in its channel (`MEMCHAN_IOC_READER`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReaderState {
    /// Sequence number of the next message this receiver gets.
    pub next_seq: u64,
    /// Messages written but not yet received.
    pub lag: u64,
    /// Messages this receiver lost to overwrites, in total.
    pub lost: u64,
    /// An overrun is pending: the next receive reports it.
    pub overrun_pending: bool,
}

impl From<abi::ReaderState> for ReaderState {
    fn from(r: abi::ReaderState) -> Self {
        Self {
            next_seq: r.cursor_seq,
            lag: r.lag,
            lost: r.lost,
            overrun_pending: r.flags & abi::READER_OVERRUN != 0,
        }
    }
}

/// A received message, borrowed from the receiver's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    /// The channel's sequence number of this message (1, 2, 3, ... per channel).
    pub seq: u64,
    /// When it was written: `CLOCK_MONOTONIC` time since boot.
    pub timestamp: Duration,
    /// The payload.
    pub payload: &'a [u8],
}

impl Message<'_> {
    /// An owned copy.
    pub fn to_owned(&self) -> OwnedMessage {
        OwnedMessage {
            seq: self.seq,
            timestamp: self.timestamp,
            payload: self.payload.to_vec(),
        }
    }
}

/// A received message that owns its payload (what iterators and streams yield).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedMessage {
    /// The channel's sequence number of this message.
    pub seq: u64,
    /// When it was written: `CLOCK_MONOTONIC` time since boot.
    pub timestamp: Duration,
    /// The payload.
    pub payload: Vec<u8>,
}
