// SPDX-License-Identifier: GPL-2.0

//! File operations of an open `/dev/memchan*`.
//!
//! - `write()`: one call is one message, all or nothing; longer than [`MSG_MAX`] gives
//!   `EMSGSIZE`; a zero-length write stores nothing and returns 0 (a zero-length message would
//!   read as end-of-file to `cat` and every other tool).
//! - `read()`: returns exactly one message, newer than the last one this file received; blocks
//!   until there is one, or gives `EAGAIN` with `O_NONBLOCK`. A buffer shorter than the message
//!   gives `EMSGSIZE` and leaves the message unread.

use kernel::{
    fs::{
        File,
        Kiocb, //
    },
    iov::{
        IovIterDest,
        IovIterSource, //
    },
    miscdevice::{
        MiscDevice,
        MiscDeviceRegistration, //
    },
    prelude::*,
    sync::{
        atomic::{
            Atomic,
            Relaxed, //
        },
        Arc, //
    }, //
};

use crate::{
    channel::{
        Channel,
        Wait,
        MSG_MAX, //
    },
    sys, //
};

/// Per-open state of a `/dev/memchan*` file.
pub(crate) struct MemchanFile {
    /// The channel this file was opened on.
    chan: Arc<Channel>,
    /// Sequence number of the last message this file received (or the newest one at open time).
    cursor: Atomic<u64>,
}

/// Allocates a zeroed bounce buffer of `len` bytes for copying a message to or from userspace.
fn bounce(len: usize) -> Result<KVec<u8>> {
    let mut buf = KVec::with_capacity(len, GFP_KERNEL_ACCOUNT)?;
    buf.resize(len, 0, GFP_KERNEL_ACCOUNT)?;
    Ok(buf)
}

#[vtable]
impl MiscDevice for MemchanFile {
    type Ptr = KBox<Self>;

    fn open(_file: &File, misc: &MiscDeviceRegistration<Self>) -> Result<KBox<Self>> {
        let chan = sys::channel_of(misc).clone();
        let cursor = Atomic::new(chan.head_seq());
        Ok(KBox::new(Self { chan, cursor }, GFP_KERNEL_ACCOUNT)?)
    }

    fn read_iter(kiocb: Kiocb<'_, Self::Ptr>, iov: &mut IovIterDest<'_>) -> Result<usize> {
        let me = kiocb.file();
        let wait = if sys::kiocb_nonblocking(&kiocb) {
            Wait::NonBlock
        } else {
            Wait::Block
        };
        let mut buf = bounce(MSG_MAX)?;
        let got = me.chan.recv(me.cursor.load(Relaxed), &mut buf, wait)?;
        if iov.len() < got.len {
            return Err(EMSGSIZE);
        }
        let msg = buf.get(..got.len).ok_or(EINVAL)?;
        if iov.copy_to_iter(msg) != got.len {
            return Err(EFAULT);
        }
        me.cursor.store(got.seq, Relaxed);
        Ok(got.len)
    }

    fn write_iter(kiocb: Kiocb<'_, Self::Ptr>, iov: &mut IovIterSource<'_>) -> Result<usize> {
        let me = kiocb.file();
        let len = iov.len();
        if len > MSG_MAX {
            return Err(EMSGSIZE);
        }
        if len == 0 {
            return Ok(0);
        }
        let mut buf = KVec::new();
        if iov.copy_from_iter_vec(&mut buf, GFP_KERNEL_ACCOUNT)? != len {
            return Err(EFAULT);
        }
        me.chan.send(&buf)?;
        Ok(len)
    }
}
