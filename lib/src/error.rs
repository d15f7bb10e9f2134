//! The library's error type: errno values mapped to what they mean for a channel.

use rustix::io::Errno;

/// What can go wrong talking to a channel.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The device node does not exist.
    #[error("{path} does not exist: is the memchan module loaded? (insmod memchan.ko, or `cargo xtask vm`)")]
    DeviceMissing {
        /// The path that was opened.
        path: String,
    },
    /// The device node's permissions do not allow this access.
    #[error(
        "permission denied on {path}: ask for access to the device node (owner, group or mode)"
    )]
    PermissionDenied {
        /// The path that was opened.
        path: String,
    },
    /// Non-blocking operation and no message (or no room) right now.
    #[error("no message available right now (would block)")]
    WouldBlock,
    /// The message is larger than the channel accepts.
    #[error("message of {len} bytes exceeds the channel's maximum of {max} bytes")]
    MessageTooLarge {
        /// Length of the rejected message.
        len: usize,
        /// The channel's maximum.
        max: usize,
    },
    /// A blocking call was interrupted by a signal.
    #[error("interrupted by a signal")]
    Interrupted,
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
    pub(crate) fn from_errno(op: &'static str, path: &str, errno: Errno) -> Self {
        match errno {
            Errno::NOENT | Errno::NXIO | Errno::NODEV => Self::DeviceMissing { path: path.into() },
            Errno::ACCESS | Errno::PERM => Self::PermissionDenied { path: path.into() },
            Errno::AGAIN => Self::WouldBlock,
            Errno::INTR => Self::Interrupted,
            errno => Self::Os { op, errno },
        }
    }
}
