// SPDX-License-Identifier: GPL-2.0

//! The state of one channel and its message semantics.
//!
//! This first version keeps the most recent message only (a mailbox): every write replaces it
//! and bumps the channel's sequence number; a reader remembers the sequence number of the last
//! message it received and blocks until a newer one exists. The per-reader ring with full
//! broadcast semantics replaces the mailbox in a later version; the file operations only see
//! [`Channel::send`] and [`Channel::recv`].

use kernel::{
    new_condvar,
    new_spinlock,
    prelude::*,
    sync::{
        Arc,
        CondVar,
        SpinLock, //
    }, //
};

use crate::abi;

/// Largest message, in bytes.
pub(crate) const MSG_MAX: usize = abi::MSG_MAX as usize;

/// The stored message, protected by the channel lock.
struct Mailbox {
    /// Sequence number of the stored message; 0 while nothing has been written.
    seq: u64,
    /// Length of the stored message in bytes (at most [`MSG_MAX`]).
    len: usize,
    /// Message storage, [`MSG_MAX`] bytes, allocated once when the channel is created so that
    /// no allocation happens under the lock.
    data: KVec<u8>,
}

/// What a successful [`Channel::recv`] delivered.
pub(crate) struct Received {
    /// Sequence number of the message.
    pub(crate) seq: u64,
    /// Length of the message, copied to the front of the caller's buffer.
    pub(crate) len: usize,
}

/// Whether a receiver may sleep until a message arrives.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Sleep (interruptibly) until a message arrives.
    Block,
    /// Fail with `EAGAIN` when no message is available.
    NonBlock,
}

/// One channel: the shared state behind a device node.
#[pin_data]
pub(crate) struct Channel {
    /// The stored message.
    #[pin]
    mailbox: SpinLock<Mailbox>,
    /// Readers sleep here until a new message is stored.
    #[pin]
    readable: CondVar,
}

impl Channel {
    /// Creates an empty channel.
    pub(crate) fn new() -> Result<Arc<Self>> {
        let mut data = KVec::with_capacity(MSG_MAX, GFP_KERNEL)?;
        data.resize(MSG_MAX, 0, GFP_KERNEL)?;
        Arc::pin_init(
            try_pin_init!(Self {
                mailbox <- new_spinlock!(Mailbox { seq: 0, len: 0, data }, "memchan::mailbox"),
                readable <- new_condvar!("memchan::readable"),
            }),
            GFP_KERNEL,
        )
    }

    /// Sequence number of the newest message (0 if none): a new reader's starting cursor.
    pub(crate) fn head_seq(&self) -> u64 {
        self.mailbox.lock().seq
    }

    /// Stores `msg` as the newest message and wakes every waiting reader.
    ///
    /// `msg` must not be longer than [`MSG_MAX`] (`EMSGSIZE` otherwise).
    pub(crate) fn send(&self, msg: &[u8]) -> Result<u64> {
        let seq = {
            let mut mb = self.mailbox.lock();
            let dst = mb.data.get_mut(..msg.len()).ok_or(EMSGSIZE)?;
            dst.copy_from_slice(msg);
            mb.len = msg.len();
            mb.seq = mb.seq.wrapping_add(1);
            mb.seq
        };
        self.readable.notify_all();
        Ok(seq)
    }

    /// Copies the newest message into `buf` if it is newer than `cursor` (the sequence number of
    /// the last message this reader received).
    ///
    /// `buf` must hold [`MSG_MAX`] bytes. With [`Wait::Block`] this sleeps until such a message
    /// exists; a pending signal ends the wait with `ERESTARTSYS`. With [`Wait::NonBlock`] an
    /// empty channel gives `EAGAIN`.
    pub(crate) fn recv(&self, cursor: u64, buf: &mut [u8], wait: Wait) -> Result<Received> {
        let mut mb = self.mailbox.lock();
        while mb.seq == cursor {
            if wait == Wait::NonBlock {
                return Err(EAGAIN);
            }
            if self.readable.wait_interruptible(&mut mb) {
                return Err(ERESTARTSYS);
            }
        }
        let len = mb.len;
        let src = mb.data.get(..len).ok_or(EINVAL)?;
        buf.get_mut(..len).ok_or(EINVAL)?.copy_from_slice(src);
        Ok(Received { seq: mb.seq, len })
    }
}
