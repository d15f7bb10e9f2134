//! Async receiving with tokio (feature `tokio`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), memchan::Error> {
//! use memchan::tokio::AsyncReceiver;
//!
//! let mut a = AsyncReceiver::open("/dev/memchan")?;
//! let mut b = AsyncReceiver::open("/dev/memchan1")?;
//! tokio::select! {
//!     m = a.recv() => println!("memchan:  {:?}", m?.payload),
//!     m = b.recv() => println!("memchan1: {:?}", m?.payload),
//! }
//! # Ok(())
//! # }
//! ```

use std::path::Path;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use rustix::fs::OFlags;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::{Error, Message, OwnedMessage, Receiver, Result};

/// A [`Receiver`] driven by the tokio reactor (epoll on the channel file).
///
/// `recv` is cancel-safe: a message is taken from the channel only in the poll that returns
/// it, so dropping the future in a `select!` loses nothing.
#[derive(Debug)]
pub struct AsyncReceiver {
    inner: AsyncFd<Receiver>,
}

impl AsyncReceiver {
    /// Opens the channel at `path` for receiving. Must be called within a tokio runtime.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::Os {
                op: "AsyncReceiver::open outside a tokio runtime",
                errno: rustix::io::Errno::INVAL,
            });
        }
        let rx = Receiver::open_flags(path.as_ref(), OFlags::NONBLOCK)?;
        // SAFETY: the receiver owns its file descriptor and never closes or replaces it while
        // it lives; the `AsyncFd` owns the receiver.
        let inner = unsafe { AsyncFd::register_with_interest(rx, Interest::READABLE) }
            .map_err(|e| Error::io("register with tokio", &e.into_parts().1))?;
        Ok(Self { inner })
    }

    /// Waits for the next message.
    pub async fn recv(&mut self) -> Result<Message<'_>> {
        // Records already fetched come first: the file may not be readable for them.
        if !self.inner.get_mut().advance() {
            self.fetch().await?;
        }
        // Borrowed through `self`, so that the message outlives the readiness guard.
        self.inner.get_ref().last()
    }

    /// Waits until a `read()` fetched the next record(s).
    async fn fetch(&mut self) -> Result<()> {
        loop {
            let mut guard = self
                .inner
                .readable_mut()
                .await
                .map_err(|e| Error::io("wait", &e))?;
            match guard.get_inner_mut().fill() {
                Err(Error::WouldBlock) => guard.clear_ready(),
                other => return other,
            }
        }
    }

    /// The wrapped receiver (for `info`, `state`, `seek`, ...).
    pub fn get_ref(&self) -> &Receiver {
        self.inner.get_ref()
    }

    /// The wrapped receiver, mutably.
    pub fn get_mut(&mut self) -> &mut Receiver {
        self.inner.get_mut()
    }
}

impl futures_core::Stream for AsyncReceiver {
    type Item = Result<OwnedMessage>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.inner.get_mut().advance() {
            return Poll::Ready(Some(this.inner.get_ref().last().map(|m| m.to_owned())));
        }
        loop {
            let mut guard = match ready!(this.inner.poll_read_ready_mut(cx)) {
                Ok(g) => g,
                Err(e) => return Poll::Ready(Some(Err(Error::io("wait", &e)))),
            };
            let rx = guard.get_inner_mut();
            match rx.fill() {
                Err(Error::WouldBlock) => guard.clear_ready(),
                Err(e) => return Poll::Ready(Some(Err(e))),
                Ok(()) => return Poll::Ready(Some(rx.last().map(|m| m.to_owned()))),
            }
        }
    }
}
