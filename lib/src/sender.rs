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
        })
    }

    /// Sends one message.
    pub fn send(&self, msg: &[u8]) -> Result<()> {
        self.send_vectored(&[IoSlice::new(msg)])
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
                Err(Errno::INTR) => continue,
                Err(Errno::MSGSIZE) => {
                    return Err(Error::MessageTooLarge {
                        len,
                        max: self.msg_max,
                    })
                }
                Err(e) => return Err(self.handle.err("write", e)),
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
