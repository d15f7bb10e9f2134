//! Userspace access to memchan channels: kernel message channels that are character devices.
//!
//! A channel (`/dev/memchan`, `/dev/memchan1`, ...) delivers every message written to it, whole,
//! to every receiver that has it open. Each receiver has its own position, sees sequence numbers
//! and send times, and is told exactly how many messages it lost if it falls a whole ring
//! behind under the `overwrite` policy.
//!
//! - [`Sender`]: `send`, `send_vectored`.
//! - [`Receiver`]: `recv` into a reused buffer, `try_recv`, `recv_timeout`, `iter`, `seek`,
//!   `state`.
//! - [`MappedReceiver`]: zero-copy receive from the read-only ring mapping.
//! - [`Producer`]: send with no system call per message, writing the ring in place
//!   (`reserve`/`commit`, `send`, `send_batch`).
//! - `tokio::AsyncReceiver` (feature `tokio`): `async fn recv` and a `Stream`.
//! - `bridge::Bridge` (feature `zenoh`): a channel bridged to a Zenoh key expression, in, out
//!   or both ways, with sequence numbers and loss counts across the network.
//! - [`named`]: create and remove named channels (`/dev/memchan-<name>`) at run time.
//! - [`query`]: a channel's settings and counters, read from sysfs without opening it.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! fn main() -> Result<(), memchan::Error> {
//!     let mut rx = memchan::Receiver::open("/dev/memchan")?;
//!     let tx = memchan::Sender::open("/dev/memchan")?;
//!     tx.send(b"hello")?;
//!     let msg = rx.recv_timeout(Duration::from_secs(1))?;
//!     assert_eq!(msg.payload, b"hello");
//!     println!("message {} sent at {:?}", msg.seq, msg.timestamp);
//!     Ok(())
//! }
//! ```
//!
//! Errors are one enum, [`Error`], mapping the kernel's errno values to what they mean for a
//! channel (see its variants). Nothing here panics on any input.

#![warn(missing_docs)]

#[cfg(feature = "zenoh")]
pub mod bridge;
mod error;
mod handle;
mod mapped;
pub mod named;
mod producer;
mod receiver;
mod sender;
mod sys;
mod sysfs;
#[cfg(feature = "tokio")]
pub mod tokio;
mod types;

pub use error::{Error, Result};
pub use mapped::{Borrowed, MappedReceiver, SPINS_BEFORE_RELEASE};
pub use producer::Producer;
pub use receiver::{Iter, Receiver, BATCH_BYTES};
pub use sender::Sender;
pub use sysfs::query;
pub use types::{channel_path, Info, Message, OwnedMessage, Policy, ReaderState, Seek, Stats};

/// The shared ABI (ioctl numbers, structs, ring layout), for programs that go lower level.
pub use memchan_abi as abi;

/// Path of the default channel.
pub const DEFAULT_PATH: &str = memchan_abi::DEVICE_PATH;
