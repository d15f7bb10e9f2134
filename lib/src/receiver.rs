//! The receiving side of a channel, through `read()`.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::Path;
use std::time::{Duration, Instant};

use memchan_abi as abi;
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::fs::OFlags;
use rustix::io::Errno;

use crate::handle::Handle;
use crate::{
    channel_path, sys, Error, Info, Message, OwnedMessage, ReaderState, Result, Seek, Stats,
};

/// Header size as a `usize`.
const HDR: usize = abi::RECORD_HEADER_SIZE as usize;

/// Parses a record header (`abi::RecordHeader`, native endian) from the front of `bytes`.
pub(crate) fn parse_header(bytes: &[u8]) -> Option<abi::RecordHeader> {
    let u64_at = |at: usize| Some(u64::from_ne_bytes(bytes.get(at..at + 8)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?));
    Some(abi::RecordHeader {
        seq: u64_at(0)?,
        timestamp_ns: u64_at(8)?,
        len: u32_at(16)?,
        flags: u32_at(20)?,
    })
}

/// Receives every message sent to a channel after it was opened (or after a [`Receiver::seek`]).
///
/// Each receiver has its own position in the channel: receivers never take messages from each
/// other. Messages come with their sequence number and send time. Under the `overwrite` policy a
/// receiver that falls a whole ring behind gets one [`Error::Overrun`] with the exact number of
/// messages it lost, then continues with the oldest message still there.
#[derive(Debug)]
pub struct Receiver {
    handle: Handle,
    /// Record header + payload of the last message.
    buf: Vec<u8>,
    /// Bytes of `buf` the last `read()` filled.
    len: usize,
    /// Opened with `O_NONBLOCK`: `try_recv` is a single `read()`.
    nonblocking: bool,
    /// Overwrite losses already reported.
    lost_reported: u64,
}

impl Receiver {
    /// Opens the channel at `path` for receiving.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_flags(path.as_ref(), OFlags::empty())
    }

    /// Opens channel number `index` (see [`channel_path`]).
    pub fn open_index(index: u32) -> Result<Self> {
        Self::open(channel_path(index))
    }

    /// Opens `path` non-blocking: [`Receiver::try_recv`] is then one `read()` (for event loops
    /// that wait with their own `epoll`); `recv` still waits, with `poll`.
    pub fn open_nonblocking(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_flags(path.as_ref(), OFlags::NONBLOCK)
    }

    pub(crate) fn open_flags(path: &Path, flags: OFlags) -> Result<Self> {
        let (handle, info) = Handle::open(path, OFlags::RDONLY | flags)?;
        sys::record_mode(handle.fd.as_fd(), true).map_err(|e| handle.err("record mode", e))?;
        Ok(Self {
            handle,
            buf: vec![0; HDR.saturating_add(info.msg_max)],
            len: 0,
            nonblocking: flags.contains(OFlags::NONBLOCK),
            lost_reported: 0,
        })
    }

    /// Waits for the next message and returns it (borrowed from this receiver's buffer, which
    /// is reused: no allocation per message).
    pub fn recv(&mut self) -> Result<Message<'_>> {
        self.recv_deadline(None)
    }

    /// Returns the next message if there is one, else [`Error::WouldBlock`].
    pub fn try_recv(&mut self) -> Result<Message<'_>> {
        if self.nonblocking {
            self.fill()?;
            return self.last();
        }
        self.wait(Some(Duration::ZERO))
            .and_then(|()| self.fill())
            .map_err(|e| match e {
                Error::TimedOut => Error::WouldBlock,
                e => e,
            })?;
        self.last()
    }

    /// Waits at most `timeout` for the next message ([`Error::TimedOut`] if none came).
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Message<'_>> {
        self.recv_deadline(Some(Instant::now() + timeout))
    }

    fn recv_deadline(&mut self, deadline: Option<Instant>) -> Result<Message<'_>> {
        loop {
            if let Some(deadline) = deadline {
                self.wait(Some(deadline.saturating_duration_since(Instant::now())))?;
            } else if self.nonblocking {
                self.wait(None)?;
            }
            match self.fill() {
                // Non-blocking file, and another reader of this file took the message.
                Err(Error::WouldBlock) if self.nonblocking => continue,
                res => res?,
            }
            return self.last();
        }
    }

    /// Waits until a message (or an overrun report) is ready, for at most `timeout`.
    pub(crate) fn wait(&self, timeout: Option<Duration>) -> Result<()> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let ts = left.map(|d| Timespec {
                tv_sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                tv_nsec: i64::from(d.subsec_nanos()),
            });
            let mut fds = [PollFd::new(&self.handle.fd, PollFlags::IN)];
            match rustix::event::poll(&mut fds, ts.as_ref()) {
                Ok(0) => return Err(Error::TimedOut),
                Ok(_) => return Ok(()),
                Err(Errno::INTR) => continue,
                Err(e) => return Err(self.handle.err("poll", e)),
            }
        }
    }

    /// One `read()` of the next record into the buffer (or the overrun report).
    pub(crate) fn fill(&mut self) -> Result<()> {
        self.len = 0;
        loop {
            match rustix::io::read(&self.handle.fd, &mut self.buf) {
                Ok(n) => {
                    self.len = n;
                    return Ok(());
                }
                Err(Errno::INTR) => continue,
                Err(Errno::PIPE) => return Err(self.overrun()),
                Err(e) => return Err(self.handle.err("read", e)),
            }
        }
    }

    /// The record the last [`Receiver::fill`] read.
    pub(crate) fn last(&self) -> Result<Message<'_>> {
        let h = parse_header(&self.buf).ok_or(Error::BadRing("short record"))?;
        let payload = self
            .buf
            .get(HDR..self.len)
            .ok_or(Error::BadRing("short record"))?;
        Ok(Message {
            seq: h.seq,
            timestamp: Duration::from_nanos(h.timestamp_ns),
            payload,
        })
    }

    /// The overrun just reported by `EPIPE`, with the number of messages lost.
    fn overrun(&mut self) -> Error {
        match self.state() {
            Ok(state) => {
                let lost = state.lost.saturating_sub(self.lost_reported);
                self.lost_reported = state.lost;
                Error::Overrun { lost }
            }
            Err(e) => e,
        }
    }

    /// Blocking iterator over owned copies of the messages (ends never; errors are items, and
    /// receiving continues after an overrun).
    pub fn iter(&mut self) -> Iter<'_> {
        Iter { rx: self }
    }

    /// Moves this receiver to the oldest message in the ring or past the newest. Clears a
    /// pending overrun (the loss is still counted in [`Receiver::state`]).
    pub fn seek(&mut self, to: Seek) -> Result<()> {
        sys::seek(self.handle.fd.as_fd(), to.raw()).map_err(|e| self.handle.err("seek", e))?;
        self.lost_reported = self.state()?.lost;
        Ok(())
    }

    /// This receiver's position: next sequence number, lag, losses.
    pub fn state(&self) -> Result<ReaderState> {
        sys::reader(self.handle.fd.as_fd())
            .map(ReaderState::from)
            .map_err(|e| self.handle.err("reader state", e))
    }

    /// The channel's configuration and state.
    pub fn info(&self) -> Result<Info> {
        self.handle.info()
    }

    /// The channel's counters.
    pub fn stats(&self) -> Result<Stats> {
        self.handle.stats()
    }

    /// Maps an errno from `op` on this receiver's channel.
    pub(crate) fn err(&self, op: &'static str, errno: Errno) -> Error {
        self.handle.err(op, errno)
    }

    /// The path this receiver was opened from.
    pub fn path(&self) -> &Path {
        &self.handle.path
    }
}

impl AsFd for Receiver {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.handle.fd.as_fd()
    }
}

/// Iterator returned by [`Receiver::iter`].
#[derive(Debug)]
pub struct Iter<'a> {
    rx: &'a mut Receiver,
}

impl Iterator for Iter<'_> {
    type Item = Result<OwnedMessage>;

    fn next(&mut self) -> Option<Self::Item> {
        Some(self.rx.recv().map(|m| m.to_owned()))
    }
}

impl AsRawFd for Receiver {
    fn as_raw_fd(&self) -> RawFd {
        self.handle.fd.as_raw_fd()
    }
}
