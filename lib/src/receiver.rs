//! The receiving side of a channel, through `read()`.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::Path;
use std::time::{Duration, Instant};

use memchan_abi as abi;
use rustix::fs::OFlags;
use rustix::io::Errno;

use crate::handle::Handle;
use crate::{
    channel_path, sys, Error, Info, Message, OwnedMessage, ReaderState, Result, Seek, Stats,
};

/// Header size as a `usize`.
const HDR: usize = abi::RECORD_HEADER_SIZE as usize;

/// Size of a receiver's batch buffer (at least one record of the channel's largest message).
pub const BATCH_BYTES: usize = 64 * 1024;

/// Receives every message sent to a channel after it was opened (or after a [`Receiver::seek`]).
///
/// Each receiver has its own position in the channel: receivers never take messages from each
/// other. Messages come with their sequence number and send time. Under the `overwrite` policy a
/// receiver that falls a whole ring behind gets one [`Error::Overrun`] with the exact number of
/// messages it lost, then continues with the oldest message still there.
///
/// Records are fetched in batches (one `read()` returns every message that is ready, up to
/// [`BATCH_BYTES`]), so a receiver that keeps up pays about one system call per batch, not per
/// message. Messages fetched but not yet returned count in [`Receiver::state`]'s lag.
#[derive(Debug)]
pub struct Receiver {
    handle: Handle,
    /// Records fetched by the last `read()`.
    buf: Vec<u8>,
    /// Offset in `buf` of the record [`Receiver::last`] returns.
    cur: usize,
    /// Bytes of `buf` the last `read()` filled (0: nothing buffered).
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
        sys::record_mode(handle.fd.as_fd(), abi::RECORD_MODE_BATCH)
            .map_err(|e| handle.err("record mode", e))?;
        let one = usize::try_from(abi::record_size(
            u32::try_from(info.msg_max).unwrap_or(u32::MAX),
        ))
        .unwrap_or(usize::MAX);
        Ok(Self {
            handle,
            buf: vec![0; one.max(BATCH_BYTES)],
            cur: 0,
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
        if self.advance() {
            return self.last();
        }
        if self.nonblocking {
            self.fill()?;
            return self.last();
        }
        self.handle
            .wait(Some(Duration::ZERO))
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
        if self.advance() {
            return self.last();
        }
        loop {
            if let Some(deadline) = deadline {
                self.handle
                    .wait(Some(deadline.saturating_duration_since(Instant::now())))?;
            } else if self.nonblocking {
                self.handle.wait(None)?;
            }
            match self.fill() {
                // Non-blocking file, and another reader of this file took the message.
                Err(Error::WouldBlock) if self.nonblocking => continue,
                res => res?,
            }
            return self.last();
        }
    }

    /// Moves to the next record already fetched, if there is one (else empties the buffer).
    pub(crate) fn advance(&mut self) -> bool {
        if self.len == 0 {
            return false;
        }
        let next = self.next_offset(self.cur);
        if next < self.len {
            self.cur = next;
            return true;
        }
        self.cur = 0;
        self.len = 0;
        false
    }

    /// Offset of the record after the one at `at` (past the end if there is none).
    fn next_offset(&self, at: usize) -> usize {
        let len = self
            .buf
            .get(at..)
            .and_then(abi::RecordHeader::parse)
            .map_or(0, |h| h.len);
        let size = usize::try_from(abi::record_size(len)).unwrap_or(usize::MAX);
        at.saturating_add(size)
    }

    /// Records fetched but not yet returned.
    fn buffered(&self) -> u64 {
        let (mut at, mut n) = (self.next_offset(self.cur), 0);
        while self.len > 0 && at < self.len {
            at = self.next_offset(at);
            n += 1;
        }
        n
    }

    /// The next record: from the buffer, else one `read()` (or the overrun report).
    pub(crate) fn fill(&mut self) -> Result<()> {
        if self.advance() {
            return Ok(());
        }
        loop {
            match rustix::io::read(&self.handle.fd, &mut self.buf) {
                // End of file: a destroyed channel, read to its end.
                Ok(0) => {
                    return Err(Error::Removed {
                        path: self.handle.path.clone(),
                    })
                }
                Ok(n) => {
                    self.cur = 0;
                    self.len = n;
                    return Ok(());
                }
                Err(Errno::INTR) => continue,
                Err(Errno::PIPE) => return Err(self.overrun()),
                Err(e) => return Err(self.handle.err("read", e)),
            }
        }
    }

    /// The current record (the one [`Receiver::fill`] moved to).
    pub(crate) fn last(&self) -> Result<Message<'_>> {
        let rec = self.buf.get(self.cur..self.len).unwrap_or_default();
        let h = abi::RecordHeader::parse(rec).ok_or(Error::BadRing("short record"))?;
        let end = usize::try_from(h.len).map_or(usize::MAX, |l| l.saturating_add(HDR));
        let payload = rec.get(HDR..end).ok_or(Error::BadRing("short record"))?;
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
        // Fetched records are behind the new position (or skipped by it).
        self.cur = 0;
        self.len = 0;
        sys::seek(self.handle.fd.as_fd(), to.raw()).map_err(|e| self.handle.err("seek", e))?;
        self.lost_reported = self.state()?.lost;
        Ok(())
    }

    /// This receiver's position: next sequence number, lag, losses (records fetched into
    /// this receiver but not yet returned count as not received).
    pub fn state(&self) -> Result<ReaderState> {
        let mut st = sys::reader(self.handle.fd.as_fd())
            .map(ReaderState::from)
            .map_err(|e| self.handle.err("reader state", e))?;
        let pending = self.buffered();
        if pending > 0 {
            let next = self.next_offset(self.cur);
            if let Some(h) = self.buf.get(next..).and_then(abi::RecordHeader::parse) {
                st.next_seq = h.seq;
            }
            st.lag = st.lag.saturating_add(pending);
        }
        Ok(st)
    }

    /// The channel's configuration and state.
    pub fn info(&self) -> Result<Info> {
        self.handle.info()
    }

    /// The channel's counters.
    pub fn stats(&self) -> Result<Stats> {
        self.handle.stats()
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
