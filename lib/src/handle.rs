//! What senders and receivers share: an open channel file and the ioctls on it.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use memchan_abi as abi;
use rustix::fs::{Mode, OFlags};

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
}

/// Reads a channel's [`Info`] and [`Stats`] without keeping it open (for tools like
/// `memchan info`): as root from sysfs (`/sys/class/misc/<device>/`), which needs no access
/// to the channel; values are read one by one, not as one snapshot. Otherwise (not root, or a
/// module that does not publish them there) by opening the channel (needs read access; the
/// short-lived subscriber this takes is not counted in the returned `subscribers`).
pub fn query(path: impl AsRef<Path>) -> Result<(Info, Stats)> {
    if let Some(found) = crate::named::sysfs_query(path.as_ref()) {
        return found;
    }
    let (handle, mut info) = Handle::open(path.as_ref(), OFlags::RDONLY)?;
    info.subscribers = info.subscribers.saturating_sub(1);
    let stats = handle.stats()?;
    Ok((info, stats))
}
