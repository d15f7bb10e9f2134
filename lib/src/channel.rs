//! An open channel: send and receive whole messages.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use crate::{Error, MSG_MAX};

/// An open memchan channel.
#[derive(Debug)]
pub struct Channel {
    fd: OwnedFd,
    path: String,
}

impl Channel {
    /// Opens `path` for receiving: from now on every message written to the channel is
    /// delivered to this handle.
    pub fn open_reader(path: &str) -> Result<Self, Error> {
        Self::open_with(path, OFlags::RDONLY)
    }

    /// Opens `path` for sending only (a sender never holds messages back).
    pub fn open_writer(path: &str) -> Result<Self, Error> {
        Self::open_with(path, OFlags::WRONLY)
    }

    /// Opens `path` with raw `flags` (access mode, `NONBLOCK`); `CLOEXEC` is always added.
    pub fn open_with(path: &str, flags: OFlags) -> Result<Self, Error> {
        let fd = rustix::fs::open(path, flags | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| Error::from_errno("open", path, e))?;
        Ok(Self {
            fd,
            path: path.to_string(),
        })
    }

    /// Sends one message.
    pub fn send(&self, msg: &[u8]) -> Result<(), Error> {
        if msg.len() > MSG_MAX {
            return Err(Error::MessageTooLarge {
                len: msg.len(),
                max: MSG_MAX,
            });
        }
        loop {
            match rustix::io::write(&self.fd, msg) {
                Ok(_) => return Ok(()),
                Err(Errno::INTR) => continue,
                Err(Errno::MSGSIZE) => {
                    return Err(Error::MessageTooLarge {
                        len: msg.len(),
                        max: MSG_MAX,
                    })
                }
                Err(e) => return Err(Error::from_errno("write", &self.path, e)),
            }
        }
    }

    /// Receives the next message into `buf` (resized as needed) and returns it. Blocks unless
    /// the channel was opened with `NONBLOCK` (then [`Error::WouldBlock`] when there is none).
    pub fn recv<'b>(&self, buf: &'b mut Vec<u8>) -> Result<&'b [u8], Error> {
        buf.resize(MSG_MAX, 0);
        loop {
            match rustix::io::read(&self.fd, buf.as_mut_slice()) {
                Ok(n) => return Ok(&buf[..n]),
                Err(Errno::INTR) => continue,
                Err(e) => return Err(Error::from_errno("read", &self.path, e)),
            }
        }
    }

    /// The path this channel was opened from.
    pub fn path(&self) -> &str {
        &self.path
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
