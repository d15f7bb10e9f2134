//! The sending side of a channel.

use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::Path;

use rustix::fs::OFlags;
use rustix::io::Errno;

use crate::handle::Handle;
use crate::{channel_path, Error, Info, Policy, Result, Stats};

/// Sends messages to a channel: each `send` is one message, delivered whole to every receiver.
///
/// A sender holds no messages back and takes no room in the ring. Under the `block` policy
/// `send` waits while the slowest receiver is a whole ring behind.
#[derive(Debug)]
pub struct Sender {
    handle: Handle,
    msg_max: usize,
    /// Records being assembled by [`Sender::send_batch`] (reused).
    batch: Vec<u8>,
}

impl Sender {
    /// Opens the channel at `path` for sending.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_flags(path.as_ref(), OFlags::empty())
    }

    /// Opens channel number `index` (see [`channel_path`]).
    pub fn open_index(index: u32) -> Result<Self> {
        Self::open(channel_path(index))
    }

    /// Opens `path` for sending without ever waiting: `send` fails with
    /// [`Error::WouldBlock`] where it would wait for room.
    pub fn open_nonblocking(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_flags(path.as_ref(), OFlags::NONBLOCK)
    }

    fn open_flags(path: &Path, flags: OFlags) -> Result<Self> {
        let (handle, info) = Handle::open(path, OFlags::WRONLY | flags)?;
        Ok(Self {
            handle,
            msg_max: info.msg_max,
            batch: Vec::new(),
        })
    }

    /// Sends each of `msgs` as one message, in order, with one system call per
    /// [`abi::SEND_BATCH_MAX`](crate::abi::SEND_BATCH_MAX) bytes of records (header + payload +
    /// padding each) instead of one per message. Returns how many were sent: all of them,
    /// unless the sender is non-blocking and the channel filled up (then at least one, or
    /// [`Error::WouldBlock`]). Every message is checked against the channel's limit first:
    /// [`Error::MessageTooLarge`] sends nothing. Empty messages store nothing, as with `send`.
    pub fn send_batch(&mut self, msgs: &[&[u8]]) -> Result<usize> {
        if let Some(big) = msgs.iter().find(|m| m.len() > self.msg_max) {
            return Err(Error::MessageTooLarge {
                len: big.len(),
                max: self.msg_max,
            });
        }
        let max = crate::abi::SEND_BATCH_MAX as usize;
        let mut sent = 0;
        while sent < msgs.len() {
            // Encode as many records as fit in one call.
            self.batch.clear();
            let mut count = 0;
            for m in &msgs[sent..] {
                let size = crate::abi::record_size(m.len() as u32) as usize;
                if count > 0 && self.batch.len() + size > max {
                    break;
                }
                let header = crate::abi::RecordHeader {
                    len: m.len() as u32,
                    ..Default::default()
                }
                .to_bytes();
                self.batch.extend_from_slice(&header);
                self.batch.extend_from_slice(m);
                self.batch
                    .resize(self.batch.len() + size - header.len() - m.len(), 0);
                count += 1;
            }
            let done = loop {
                match crate::sys::send_batch(self.handle.fd.as_fd(), &self.batch) {
                    Err(Errno::INTR) => continue,
                    Err(Errno::AGAIN) if sent > 0 => return Ok(sent),
                    Err(e) => return Err(self.handle.err("send batch", e)),
                    Ok(n) => break n,
                }
            };
            // Count the whole records the kernel took.
            let mut at = 0;
            for m in &msgs[sent..sent + count] {
                if at >= done {
                    break;
                }
                at += crate::abi::record_size(m.len() as u32) as usize;
                sent += 1;
            }
        }
        Ok(sent)
    }

    /// Sends one message.
    pub fn send(&self, msg: &[u8]) -> Result<()> {
        // `write`, not a one-part `writev`: the kernel then neither copies an iovec array in
        // nor walks one (a single user buffer takes its fast path).
        if msg.len() > self.msg_max {
            return Err(Error::MessageTooLarge {
                len: msg.len(),
                max: self.msg_max,
            });
        }
        loop {
            match rustix::io::write(&self.handle.fd, msg) {
                Ok(_) => return Ok(()),
                Err(e) => self.retry_or_fail(e, msg.len())?,
            }
        }
    }

    /// What a failed `write`/`writev` of `len` bytes becomes: `Ok` to retry (`EINTR`), else
    /// the error.
    fn retry_or_fail(&self, e: Errno, len: usize) -> Result<()> {
        match e {
            Errno::INTR => Ok(()),
            Errno::MSGSIZE => Err(Error::MessageTooLarge {
                len,
                max: self.msg_max,
            }),
            e => Err(self.handle.err("write", e)),
        }
    }

    /// Sends the concatenation of `parts` as one message (one `writev`, no copy in userspace).
    pub fn send_vectored(&self, parts: &[IoSlice<'_>]) -> Result<()> {
        let len = parts.iter().fold(0usize, |n, p| n.saturating_add(p.len()));
        if len > self.msg_max {
            return Err(Error::MessageTooLarge {
                len,
                max: self.msg_max,
            });
        }
        loop {
            match rustix::io::writev(&self.handle.fd, parts) {
                Ok(_) => return Ok(()),
                Err(e) => self.retry_or_fail(e, len)?,
            }
        }
    }

    /// Largest message this channel accepts, in bytes.
    pub fn max_message(&self) -> usize {
        self.msg_max
    }

    /// The channel's configuration and state.
    pub fn info(&self) -> Result<Info> {
        self.handle.info()
    }

    /// The channel's counters.
    pub fn stats(&self) -> Result<Stats> {
        self.handle.stats()
    }

    /// Sets the channel's overflow policy (for every sender and receiver of the channel).
    pub fn set_policy(&self, policy: Policy) -> Result<()> {
        self.handle.set_policy(policy)
    }

    /// The path this sender was opened from.
    pub fn path(&self) -> &Path {
        &self.handle.path
    }
}

impl AsFd for Sender {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.handle.fd.as_fd()
    }
}

impl AsRawFd for Sender {
    fn as_raw_fd(&self) -> RawFd {
        self.handle.fd.as_raw_fd()
    }
}
