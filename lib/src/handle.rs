//! What senders and receivers share: an open channel file and the ioctls on it.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use memchan_abi as abi;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use crate::{sys, Error, Info, Policy, Result, Stats};

/// An open channel file and the path it was opened from (for error messages).
#[derive(Debug)]
pub(crate) struct Handle {
    pub(crate) fd: OwnedFd,
    pub(crate) path: PathBuf,
}

impl Handle {
    /// Opens `path` with `flags` (`CLOEXEC` is always added) and checks that it is a memchan
    /// channel.
    pub(crate) fn open(path: &Path, flags: OFlags) -> Result<(Self, Info)> {
        let op = if flags.contains(OFlags::WRONLY) {
            "open for writing"
        } else {
            "open for reading"
        };
        let fd = rustix::fs::open(path, flags | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| Error::from_errno(op, path, e))?;
        let handle = Self {
            fd,
            path: path.to_path_buf(),
        };
        let info = handle.info()?;
        Ok((handle, info))
    }

    /// Maps an errno from `op` on this channel.
    pub(crate) fn err(&self, op: &'static str, errno: rustix::io::Errno) -> Error {
        Error::from_errno(op, &self.path, errno)
    }

    /// The channel's configuration and state.
    pub(crate) fn info(&self) -> Result<Info> {
        let raw = sys::info(self.fd.as_fd()).map_err(|e| self.err("info", e))?;
        if raw.abi_version != abi::ABI_VERSION {
            return Err(Error::BadRing("the module speaks another ABI version"));
        }
        Ok(Info::from(raw))
    }

    /// The channel's counters.
    pub(crate) fn stats(&self) -> Result<Stats> {
        sys::stats(self.fd.as_fd())
            .map(Stats::from)
            .map_err(|e| self.err("stats", e))
    }

    /// Sets the overflow policy (needs write access).
    pub(crate) fn set_policy(&self, policy: Policy) -> Result<()> {
        sys::set_policy(self.fd.as_fd(), policy.raw()).map_err(|e| self.err("set policy", e))
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
            let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
            match rustix::event::poll(&mut fds, ts.as_ref()) {
                Ok(0) => return Err(Error::TimedOut),
                Ok(_) => return Ok(()),
                Err(Errno::INTR) => continue,
                Err(e) => return Err(self.err("poll", e)),
            }
        }
    }
}
