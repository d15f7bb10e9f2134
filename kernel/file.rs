// SPDX-License-Identifier: GPL-2.0

//! File operations of an open `/dev/memchan*` (the [`MiscDevice`] impl, plus `poll`).
//!
//! - `write()`: one call is one message, all or nothing; longer than the channel's limit gives
//!   `EMSGSIZE`; a zero-length write stores nothing and returns 0 (a zero-length message would
//!   read as end-of-file to `cat` and every other tool). In `block` mode a full ring makes it
//!   wait (`EAGAIN` with `O_NONBLOCK`).
//! - `read()`: exactly one message (in record mode: [`abi::RecordHeader`] + payload); blocks
//!   until one arrives (`EAGAIN` with `O_NONBLOCK`); a buffer too small gives `EMSGSIZE` and the
//!   message stays unread; after an overrun it fails once with `EPIPE`; on a removed channel,
//!   once the file's queued messages are read, it returns 0 (end of file).
//! - Opening with read access subscribes: the file receives every message written after it
//!   opened. Write-only opens never hold the ring back.

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
    mm::virt::VmaNew,
    new_mutex,
    prelude::*,
    seq_file::SeqFile,
    seq_print,
    sync::{
        atomic::{
            Atomic,
            Relaxed, //
        },
        poll::PollTable,
        Arc,
        Mutex, //
    },
    uaccess::UserSlice, //
};

use crate::{
    abi,
    channel::{
        self,
        Channel,
        Shape, //
    },
    ring::Policy,
    sys, //
};

/// Access-mode bits of the open flags (`O_ACCMODE` in `asm-generic/fcntl.h`).
const O_ACCMODE: u32 = 3;
/// `O_WRONLY`.
const O_WRONLY: u32 = 1;
/// `O_RDWR`.
const O_RDWR: u32 = 2;

/// Per-open state of a `/dev/memchan*` file.
#[pin_data(PinnedDrop)]
pub(crate) struct MemchanFile {
    /// The channel this file was opened on.
    chan: Arc<Channel>,
    /// Subscriber slot, if opened with read access.
    slot: Option<usize>,
    /// Whether opened with write access.
    writer: bool,
    /// Record mode: [`abi::RECORD_MODE_OFF`], [`abi::RECORD_MODE_ON`] or
    /// [`abi::RECORD_MODE_BATCH`].
    record_mode: Atomic<u32>,
    /// 1 once the file has been polled (see [`Channel::poll`]).
    polled: Atomic<u32>,
    /// Buffer for [`abi::IOC_SEND_BATCH`], allocated ([`abi::SEND_BATCH_MAX`] bytes) on the
    /// file's first batch; its lock serialises the batches of this file.
    #[pin]
    bbuf: Mutex<KVec<u8>>,
}

/// Bytes a batch read (`RECORD_MODE_BATCH`) takes at most per call, unless one record is
/// larger.
const BATCH_BYTES: usize = 16 * 1024;

/// Most bytes of one batch read on `chan`: [`BATCH_BYTES`], or the largest record (header,
/// payload, padding) if that is larger.
fn batch_bytes(chan: &Channel) -> usize {
    (abi::record_size(chan.msg_max()) as usize).max(BATCH_BYTES)
}

/// A zeroed buffer of `len` bytes, charged to the caller's memory cgroup.
fn buffer(len: usize) -> Result<KVec<u8>> {
    let mut buf = KVec::with_capacity(len, GFP_KERNEL_ACCOUNT)?;
    buf.resize(len, 0, GFP_KERNEL_ACCOUNT)?;
    Ok(buf)
}

/// Copies `v` to the user address `arg`.
fn put_user<T: kernel::transmute::AsBytes>(arg: usize, v: &T) -> Result<isize> {
    UserSlice::new(UserPtr::from_addr(arg), core::mem::size_of::<T>()).writer().write(v)?;
    Ok(0)
}

impl MemchanFile {
    /// The subscriber slot, or `EBADF` for a file not opened for reading.
    fn slot(&self) -> Result<usize> {
        self.slot.ok_or(EBADF)
    }

    /// `poll` (installed by [`sys::install_poll`]).
    pub(crate) fn poll(&self, file: &File, table: PollTable<'_>) -> u32 {
        let first = self.polled.xchg(1, Relaxed) == 0;
        self.chan.poll(file, table, self.slot, first)
    }

    /// [`abi::IOC_SEND_BATCH`]: copies the records in (at most [`abi::SEND_BATCH_MAX`] bytes)
    /// and sends them; returns the bytes of the records sent.
    fn send_batch(&self, file: &File, arg: usize) -> Result<isize> {
        if !self.writer {
            return Err(EBADF);
        }
        let req: abi::SendBatch =
            UserSlice::new(UserPtr::from_addr(arg), core::mem::size_of::<abi::SendBatch>())
                .reader()
                .read()?;
        let max = abi::SEND_BATCH_MAX as usize;
        let len = usize::try_from(req.len).unwrap_or(max).min(max);
        let addr = usize::try_from(req.data).map_err(|_| EFAULT)?;
        let mut guard = self.bbuf.lock();
        if guard.len() < max {
            *guard = buffer(max)?;
        }
        let buf = guard.get_mut(..len).ok_or(EINVAL)?;
        UserSlice::new(UserPtr::from_addr(addr), len).reader().read_slice(buf)?;
        let nonblock = file.flags() & kernel::fs::file::flags::O_NONBLOCK != 0;
        let sent = self.chan.send_batch(buf, nonblock)?;
        isize::try_from(sent).map_err(|_| EINVAL)
    }

    /// Whether record mode is on (single or batch).
    fn record(&self) -> bool {
        self.record_mode.load(Relaxed) != abi::RECORD_MODE_OFF
    }
}

#[vtable]
impl MiscDevice for MemchanFile {
    type Ptr = Pin<KBox<Self>>;

    fn open(file: &File, misc: &MiscDeviceRegistration<Self>) -> Result<Pin<KBox<Self>>> {
        let dev = sys::device_of(misc);
        let mode = file.flags() & O_ACCMODE;
        let read = mode != O_WRONLY;
        let write = mode == O_WRONLY || mode == O_RDWR;
        dev.check_access(file, if read { 4 } else { 0 } | if write { 2 } else { 0 })?;
        let chan = dev.channel().clone();
        let slot = chan.attach(read, write)?;
        let owned = chan.clone();
        let me = KBox::pin_init(
            try_pin_init!(Self {
                chan: owned,
                slot,
                writer: write,
                record_mode: Atomic::new(0),
                polled: Atomic::new(0),
                bbuf <- new_mutex!(KVec::new(), "memchan::bbuf"),
            }),
            GFP_KERNEL_ACCOUNT,
        );
        match me {
            Ok(me) => {
                sys::install_poll(file);
                Ok(me)
            }
            Err(e) => {
                chan.detach(slot, write, false);
                Err(e)
            }
        }
    }

    fn read_iter(kiocb: Kiocb<'_, Self::Ptr>, iov: &mut IovIterDest<'_>) -> Result<usize> {
        let nonblock = sys::kiocb_nonblocking(&kiocb);
        let me = kiocb.file();
        let slot = me.slot()?;
        let shape = match me.record_mode.load(Relaxed) {
            abi::RECORD_MODE_BATCH => Shape::Batch(batch_bytes(&me.chan)),
            abi::RECORD_MODE_ON => Shape::Record,
            _ => Shape::Payload,
        };
        match me.chan.read(slot, shape, iov, nonblock) {
            Err(e) if e == channel::END => Ok(0),
            other => other,
        }
    }

    fn write_iter(kiocb: Kiocb<'_, Self::Ptr>, iov: &mut IovIterSource<'_>) -> Result<usize> {
        let nonblock = sys::kiocb_nonblocking(&kiocb);
        let me = kiocb.file();
        let len = iov.len();
        if len > me.chan.msg_max() as usize {
            return Err(EMSGSIZE);
        }
        if len == 0 {
            return Ok(0);
        }
        let len32 = u32::try_from(len).map_err(|_| EMSGSIZE)?;
        // The copy happens under the ring lock: fault the pages in first (see `channel`).
        if !sys::fault_in_readable(iov, len) {
            return Err(EFAULT);
        }
        let mut fill = |dst: &mut [u8]| {
            if iov.copy_from_iter(dst) == dst.len() {
                Ok(())
            } else {
                Err(EFAULT)
            }
        };
        me.chan.send(len32, &mut fill, nonblock)?;
        Ok(len)
    }

    fn ioctl(me: Pin<&MemchanFile>, file: &File, cmd: u32, arg: usize) -> Result<isize> {
        match cmd {
            abi::IOC_INFO => put_user(arg, &me.chan.info()),
            abi::IOC_STATS => put_user(arg, &me.chan.stats()),
            abi::IOC_READER => {
                let mut st = me.chan.reader_state(me.slot()?)?;
                if me.record() {
                    st.flags |= abi::READER_RECORD_MODE;
                }
                put_user(arg, &st)
            }
            abi::IOC_SEEK => {
                let whence = u32::try_from(arg).map_err(|_| EINVAL)?;
                me.chan.seek(me.slot()?, whence)?;
                Ok(0)
            }
            abi::IOC_SET_POLICY => {
                if !me.writer {
                    return Err(EPERM);
                }
                let policy = Policy::from_abi(u32::try_from(arg).map_err(|_| EINVAL)?)?;
                me.chan.set_policy(policy);
                Ok(0)
            }
            abi::IOC_RECORD_MODE => {
                me.slot()?;
                let mode = u32::try_from(arg).map_err(|_| EINVAL)?;
                match mode {
                    abi::RECORD_MODE_OFF | abi::RECORD_MODE_ON | abi::RECORD_MODE_BATCH => {
                        me.record_mode.store(mode, Relaxed)
                    }
                    _ => return Err(EINVAL),
                }
                Ok(0)
            }
            abi::IOC_CONSUME => {
                let slot = me.slot()?;
                let upto: u64 = UserSlice::new(UserPtr::from_addr(arg), 8).reader().read()?;
                me.chan.consume(slot, upto)?;
                Ok(0)
            }
            abi::IOC_SEND_BATCH => me.send_batch(file, arg),
            abi::FIONREAD => {
                let n = me.chan.next_size(me.slot()?, me.record())?;
                put_user(arg, &i32::try_from(n).map_err(|_| EOVERFLOW)?)
            }
            _ => Err(ENOTTY),
        }
    }

    fn mmap(me: Pin<&MemchanFile>, _file: &File, vma: &VmaNew) -> Result {
        me.slot().map_err(|_| EACCES)?;
        me.chan.mmap(vma)
    }

    fn show_fdinfo(me: Pin<&MemchanFile>, m: &SeqFile, _file: &File) {
        seq_print!(m, "memchan_channel:\t{}\n", me.chan.index());
        seq_print!(m, "memchan_policy:\t{}\n", me.chan.policy().name());
        seq_print!(m, "memchan_writer:\t{}\n", u8::from(me.writer));
        if let Some(Ok(st)) = me.slot.map(|s| me.chan.reader_state(s)) {
            seq_print!(m, "memchan_cursor:\t{}\n", st.cursor_seq);
            seq_print!(m, "memchan_lag:\t{}\n", st.lag);
            seq_print!(m, "memchan_lost:\t{}\n", st.lost);
            seq_print!(m, "memchan_pending_lost:\t{}\n", st.pending_lost);
            seq_print!(m, "memchan_record_mode:\t{}\n", me.record_mode.load(Relaxed));
        }
    }
}

#[pinned_drop]
impl PinnedDrop for MemchanFile {
    fn drop(self: Pin<&mut Self>) {
        self.chan.detach(self.slot, self.writer, self.polled.load(Relaxed) != 0);
    }
}
