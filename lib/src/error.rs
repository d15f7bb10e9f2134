//! The library's error type: errno values mapped to what they mean for a channel.

use std::path::{Path, PathBuf};

use rustix::io::Errno;

/// What can go wrong talking to a channel.
///
/// Every variant says what happened in terms of the channel; the `Display` text also says what
/// to do about it where there is something to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The device node does not exist (or its channel is gone).
    #[error(
        "{}: no such channel: is the memchan module loaded? (`insmod memchan.ko`, or \
         `cargo xtask vm` on a machine without a Rust-enabled kernel)",
        path.display()
    )]
    DeviceMissing {
        /// The path that was opened.
        path: PathBuf,
    },
    /// The device node's (or named channel's) owner, group or mode does not allow this
    /// access, or configuring channels was asked by someone other than root.
    #[error("{}: permission denied for {access}: {}", path.display(), permission_hint(access))]
    PermissionDenied {
        /// The path that was opened.
        path: PathBuf,
        /// What was asked: "reading", "writing", "changing the policy" or "configuring
        /// channels".
        access: &'static str,
    },
    /// The file is not a memchan channel (the ioctl is unknown to its driver).
    #[error("{}: not a memchan channel", path.display())]
    NotAChannel {
        /// The path that was opened.
        path: PathBuf,
    },
    /// Non-blocking operation and no message (or no room) right now.
    #[error("no message available right now (would block)")]
    WouldBlock,
    /// No message arrived within the time given.
    #[error("no message within the time limit")]
    TimedOut,
    /// This receiver fell a whole ring behind (overwrite policy): `lost` messages were
    /// overwritten before it could read them. Receiving continues with the oldest message
    /// still in the ring.
    #[error("overrun: {lost} message(s) were overwritten before this receiver read them")]
    Overrun {
        /// Messages lost in this overrun.
        lost: u64,
    },
    /// The message is larger than the channel accepts.
    #[error("message of {len} bytes exceeds the channel's maximum of {max} bytes")]
    MessageTooLarge {
        /// Length of the rejected message.
        len: usize,
        /// The channel's maximum (`msg_max`).
        max: usize,
    },
    /// The module speaks another ABI version, or its ring mapping does not look like a memchan
    /// ring of this version (only a mismatched module produces this).
    #[error("unexpected ring layout: {0}")]
    BadRing(&'static str),
    /// Not a valid name for a named channel.
    #[error(
        "invalid channel name {name:?}: {reason} (a name is 1 to {} characters of A-Z a-z 0-9 \
         _ . -, starting with a letter or digit)",
        crate::abi::NAME_MAX
    )]
    InvalidName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A named channel of that name exists already.
    #[error("a channel named {name:?} exists already (`memchan destroy {name}` removes it)")]
    Exists {
        /// The name given.
        name: String,
    },
    /// The module's configfs directory is missing.
    #[error(
        "{}: missing: load the memchan module and mount configfs \
         (`mount -t configfs none /sys/kernel/config`)",
        path.display()
    )]
    NoConfigfs {
        /// The directory looked for.
        path: PathBuf,
    },
    /// The module refused a setting of a named channel.
    #[error(
        "the kernel refused {attr} = {value}: ring_kib is a power of two from {} to {}, \
         msg_max must fit in the ring, max_readers is 1 to {}, mode is octal up to 777",
        crate::abi::RING_KIB_MIN,
        crate::abi::RING_KIB_MAX,
        crate::abi::MAX_READERS_MAX
    )]
    InvalidSetting {
        /// The attribute.
        attr: &'static str,
        /// The value written.
        value: String,
    },
    /// The channel's sizes can only change while no file has it open.
    #[error("{}: the channel is open; sizes can only change while nothing has it open", path.display())]
    Busy {
        /// The attribute written.
        path: PathBuf,
    },
    /// The channel has a producer already ([`Producer`](crate::Producer)): one at a time, and
    /// no `write()`s while it lasts.
    #[error("{}: the channel has a producer already (one at a time; it ends when that process closes it or exits)", path.display())]
    ProducerTaken {
        /// The channel.
        path: PathBuf,
    },
    /// The channel was destroyed while open: everything it held has been read (end of file).
    #[error("{}: the channel was removed (everything it held has been read)", path.display())]
    Removed {
        /// The channel.
        path: PathBuf,
    },
    /// The module's limit on named channels (64) is reached.
    #[error("too many named channels (the module allows 64): destroy one first")]
    TooManyChannels,
    /// Any other operating-system error.
    #[error("{op}: {errno}")]
    Os {
        /// The failing operation.
        op: &'static str,
        /// The error code.
        errno: Errno,
    },
}

impl Error {
    /// Maps an errno from operation `op` on `path`.
    pub(crate) fn from_errno(op: &'static str, path: &Path, errno: Errno) -> Self {
        match errno {
            Errno::NOENT | Errno::NXIO | Errno::NODEV => Self::DeviceMissing { path: path.into() },
            Errno::ACCESS | Errno::PERM => Self::PermissionDenied {
                path: path.into(),
                access: match op {
                    "read" | "open for reading" => "reading",
                    "set policy" => "changing the policy",
                    _ => "writing",
                },
            },
            Errno::NOTTY => Self::NotAChannel { path: path.into() },
            Errno::AGAIN => Self::WouldBlock,
            // EINTR never gets here: every blocking call is restarted after a signal.
            errno => Self::Os { op, errno },
        }
    }

    /// An I/O error from `op` that is not about a channel (stdin, the async reactor).
    pub fn io(op: &'static str, err: &std::io::Error) -> Self {
        Self::Os {
            op,
            errno: Errno::from_io_error(err).unwrap_or(Errno::IO),
        }
    }

    /// The errno behind this error, if it came from the kernel (`EPIPE` for an overrun).
    pub fn errno(&self) -> Option<Errno> {
        Some(match self {
            Self::DeviceMissing { .. } => Errno::NOENT,
            Self::Removed { .. } => Errno::NODEV,
            Self::PermissionDenied { .. } => Errno::ACCESS,
            Self::NotAChannel { .. } => Errno::NOTTY,
            Self::WouldBlock => Errno::AGAIN,
            Self::TimedOut => Errno::TIMEDOUT,
            Self::Overrun { .. } => Errno::PIPE,
            Self::MessageTooLarge { .. } => Errno::MSGSIZE,
            Self::Os { errno, .. } => *errno,
            Self::InvalidName { .. } | Self::InvalidSetting { .. } => Errno::INVAL,
            Self::Exists { .. } => Errno::EXIST,
            Self::NoConfigfs { .. } => Errno::NOENT,
            Self::Busy { .. } | Self::ProducerTaken { .. } => Errno::BUSY,
            Self::TooManyChannels => Errno::NOSPC,
            Self::BadRing(_) => return None,
        })
    }
}

/// What to do about a permission error for `access`.
fn permission_hint(access: &str) -> &'static str {
    if access == "configuring channels" {
        "creating, changing and removing channels needs root"
    } else {
        "ask for the device node's group (for a named channel: its uid/gid/mode, see `memchan \
         create --help`), or install kernel/99-memchan.rules (group `memchan`) and join that group"
    }
}

/// The library's `Result`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
