//! Userspace access to memchan channels.
//!
//! A memchan channel is a character device (`/dev/memchan`): each `write()` is one message,
//! and each reader that has the channel open receives it with one `read()`.
//!
//! ```no_run
//! use memchan::Channel;
//!
//! # fn main() -> Result<(), memchan::Error> {
//! let rx = Channel::open_reader(memchan::DEFAULT_PATH)?;
//! let tx = Channel::open_writer(memchan::DEFAULT_PATH)?;
//! tx.send(b"hello")?;
//! let mut buf = Vec::new();
//! assert_eq!(rx.recv(&mut buf)?, b"hello");
//! # Ok(())
//! # }
//! ```

mod channel;
mod error;

pub use channel::Channel;
pub use error::Error;

/// Path of the default channel.
pub const DEFAULT_PATH: &str = memchan_abi::DEVICE_PATH;

/// Largest message of a channel with the default `msg_max` load parameter, in bytes.
pub const MSG_MAX: usize = memchan_abi::MSG_MAX as usize;
