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
    bindings,
    fs::{
        File,
        Kiocb, //
    },
    ioctl::{
        _IOC_DIR,
        _IOC_NR,
        _IOC_SIZE,
        _IOC_TYPE, //
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
    transmute::{
        AsBytes,
        FromBytes, //
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

use kernel::fs::file::flags::{
    O_ACCMODE,
    O_RDONLY,
    O_WRONLY, //
};

/// Per-open state of a `/dev/memchan*` file.
#[pin_data(PinnedDrop)]
pub(crate) struct MemchanFile {
    /// The channel this file was opened on.
    chan: Arc<Channel>,
    /// Subscriber slot, if opened with read access.
    slot: Option<usize>,
    /// Whether opened with write access.
    writer: bool,
    /// Whether the opener owned the channel ([`crate::ChannelDev::is_owner`]): the file may
    /// change the policy (as may one opened with `CAP_SYS_ADMIN`).
    owner: bool,
    /// Record mode: [`abi::RECORD_MODE_OFF`], [`abi::RECORD_MODE_ON`] or
    /// [`abi::RECORD_MODE_BATCH`].
    record_mode: Atomic<u32>,
    /// 1 once the file has been polled (see [`Channel::poll`]).
    polled: Atomic<u32>,
    /// Buffer for [`abi::IOC_SEND_BATCH`], allocated ([`abi::SEND_BATCH_MAX`] bytes) on the
    /// file's first batch. A batch takes it out for the whole call and puts it back at the
    /// end, so the lock is held only for those two moves, never while a batch waits for room:
    /// a second thread batching on the same file meanwhile finds it empty and uses a buffer of
    /// its own.
    #[pin]
    bbuf: Mutex<KVVec<u8>>,
}

/// Bytes a batch read (`RECORD_MODE_BATCH`) takes at most per call, unless one record is
/// larger.
const BATCH_BYTES: usize = 16 * 1024;

/// Most bytes of one batch read on `chan`: [`BATCH_BYTES`], or the largest record (header,
/// payload, padding) if that is larger.
fn batch_bytes(chan: &Channel) -> usize {
    (abi::record_size(chan.msg_max()) as usize).max(BATCH_BYTES)
}

/// A zeroed buffer of `len` bytes (`kvmalloc`: no high-order allocation needed), charged to
/// the caller's memory cgroup.
fn buffer(len: usize) -> Result<KVVec<u8>> {
    let mut buf = KVVec::with_capacity(len, GFP_KERNEL_ACCOUNT)?;
    buf.resize(len, 0, GFP_KERNEL_ACCOUNT)?;
    Ok(buf)
}

/// Copies the first `size` bytes of `v` (all of it if `size` is larger: the caller's struct is
/// newer) to the user address `arg` (the ABI's extension rule, see `abi`).
fn put_user<T: AsBytes>(arg: usize, v: &T, size: usize) -> Result<isize> {
    let bytes = v.as_bytes();
    let n = size.min(bytes.len());
    UserSlice::new(UserPtr::from_addr(arg), n).writer().write_slice(bytes.get(..n).ok_or(EINVAL)?)?;
    Ok(0)
}

/// Reads a `T` of which the caller sends `size` bytes from the user address `arg` (the ABI's
/// extension rule): fields it did not send are 0; bytes it sent beyond the fields known here
/// must be 0 (`E2BIG` otherwise, as `copy_struct_from_user` does).
fn get_user<T: AsBytes + FromBytes + Default>(arg: usize, size: usize) -> Result<T> {
    let mut v = T::default();
    let known = core::mem::size_of::<T>();
    let mut reader = UserSlice::new(UserPtr::from_addr(arg), size).reader();
    let n = size.min(known);
    reader.read_slice(v.as_bytes_mut().get_mut(..n).ok_or(EINVAL)?)?;
    let mut rest = [0u8; 64];
    while !reader.is_empty() {
        let chunk = reader.len().min(rest.len());
        let part = rest.get_mut(..chunk).ok_or(EINVAL)?;
        reader.read_slice(part)?;
        if part.iter().any(|&b| b != 0) {
            return Err(E2BIG);
        }
    }
    Ok(v)
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

    /// [`abi::IOC_SEND_BATCH`] of `req`: copies the records in (at most [`abi::SEND_BATCH_MAX`] bytes)
    /// and sends them; returns the bytes of the records sent.
    fn send_batch(&self, file: &File, req: abi::SendBatch) -> Result<isize> {
        if !self.writer {
            return Err(EBADF);
        }
        let max = abi::SEND_BATCH_MAX as usize;
        let len = usize::try_from(req.len).unwrap_or(max).min(max);
        let addr = usize::try_from(req.data).map_err(|_| EFAULT)?;
        let mut own = core::mem::take(&mut *self.bbuf.lock());
        if own.len() < max {
            own = buffer(max)?;
        }
        let result = self.send_batch_from(file, &mut own, addr, len);
        let mut guard = self.bbuf.lock();
        if guard.len() < max {
            *guard = own;
        }
        result
    }

    /// [`MemchanFile::send_batch`] through the file's buffer `buf`, taken out of the file.
    fn send_batch_from(&self, file: &File, buf: &mut [u8], addr: usize, len: usize) -> Result<isize> {
        let buf = buf.get_mut(..len).ok_or(EINVAL)?;
        UserSlice::new(UserPtr::from_addr(addr), len).reader().read_slice(buf)?;
        let nonblock = file.flags() & kernel::fs::file::flags::O_NONBLOCK != 0;
        let sent = self.chan.send_batch(buf, nonblock)?;
        isize::try_from(sent).map_err(|_| EINVAL)
    }

    /// Whether record mode is on (single or batch).
    fn record(&self) -> bool {
        self.record_mode.load(Relaxed) != abi::RECORD_MODE_OFF
    }

    /// What a `read()` returns of a message, by the file's record mode.
    fn shape(&self) -> Shape {
        match self.record_mode.load(Relaxed) {
            abi::RECORD_MODE_BATCH => Shape::Batch(batch_bytes(&self.chan)),
            abi::RECORD_MODE_ON => Shape::Record,
            _ => Shape::Payload,
        }
    }
}

#[vtable]
impl MiscDevice for MemchanFile {
    type Ptr = Pin<KBox<Self>>;

    fn open(file: &File, misc: &MiscDeviceRegistration<Self>) -> Result<Pin<KBox<Self>>> {
        let dev = sys::device_of(misc);
        // What the file may do is what the VFS granted (`f_mode`): access mode 3 (which some
        // tools use for ioctl-only opens) grants neither reading nor writing, so it neither
        // subscribes nor counts as a writer. It needs both permissions, as for a file.
        let (read, write) = sys::fmode_read_write(file);
        let want = match file.flags() & O_ACCMODE {
            O_RDONLY => 4,
            O_WRONLY => 2,
            _ => 6,
        };
        let owner = dev.admit(file, want)?;
        let chan = dev.channel().clone();
        let slot = chan.attach(read, write, sys::opener_fsuid(file))?;
        let owned = chan.clone();
        let me = KBox::pin_init(
            try_pin_init!(Self {
                chan: owned,
                slot,
                writer: write,
                owner,
                record_mode: Atomic::new(0),
                polled: Atomic::new(0),
                bbuf <- new_mutex!(KVVec::new(), "memchan::bbuf"),
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
        match me.chan.read(slot, me.shape(), iov, nonblock) {
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
        // The copy runs under the ring lock with page faults disabled: fault the pages in
        // first, and if one is gone again by the time of the copy (nothing is published
        // then), fault it in without the lock and try again, as `generic_perform_write` does.
        loop {
            if !sys::fault_in_readable(iov, len) {
                return Err(EFAULT);
            }
            let mut taken = 0usize;
            let mut fill = |dst: &mut sys::RingSpan<'_>| {
                // SAFETY: `fill` is given the channel's ring bytes (`PageRing::write_with`),
                // which lie in its `RingMemory`.
                let n = unsafe { sys::copy_from_iter_nofault(iov, dst) };
                taken = taken.wrapping_add(n);
                if n == dst.len() {
                    Ok(())
                } else {
                    Err(EFAULT)
                }
            };
            match me.chan.send(len32, &mut fill, nonblock) {
                Ok(_) => return Ok(len),
                // SAFETY: the copies of this attempt advanced `iov` by exactly `taken` bytes,
                // so going back by as much stays within it.
                Err(e) if e == EFAULT => unsafe { iov.revert(taken) },
                Err(e) => return Err(e),
            }
            // Only this writer loops (the lock is free meanwhile); a signal ends it.
            if kernel::current!().signal_pending() {
                return Err(ERESTARTSYS);
            }
        }
    }

    fn ioctl(me: Pin<&MemchanFile>, file: &File, cmd: u32, arg: usize) -> Result<isize> {
        if cmd == bindings::FIONREAD {
            // Bytes the next `read()` needs (0 if nothing is ready): the payload, plus the
            // header in record mode, plus the padding in batch record mode.
            let n = me.chan.next_size(me.slot()?, me.shape())?;
            return put_user(arg, &i32::try_from(n).map_err(|_| EOVERFLOW)?, 4);
        }
        if _IOC_TYPE(cmd) != abi::IOC_MAGIC {
            return Err(ENOTTY);
        }
        // By type, number and direction; the size is the caller's (see `abi`).
        let size = _IOC_SIZE(cmd);
        let by_value = || u32::try_from(arg).map_err(|_| EINVAL);
        match (_IOC_NR(cmd), _IOC_DIR(cmd)) {
            (abi::NR_INFO, abi::IOC_READ) => put_user(arg, &me.chan.info(), size),
            (abi::NR_STATS, abi::IOC_READ) => put_user(arg, &me.chan.stats(), size),
            (abi::NR_READER, abi::IOC_READ) => {
                let mut st = me.chan.reader_state(me.slot()?)?;
                if me.record() {
                    st.flags |= abi::READER_RECORD_MODE;
                }
                put_user(arg, &st, size)
            }
            (abi::NR_SEEK, abi::IOC_NONE) => {
                me.chan.seek(me.slot()?, by_value()?)?;
                Ok(0)
            }
            (abi::NR_SET_POLICY, abi::IOC_NONE) => {
                // The policy decides what every other user of the channel gets (losses, or
                // writers stalled by idle readers): only its owner changes it.
                if !me.writer || !(me.owner || sys::opener_capable_sys_admin(file)) {
                    return Err(EPERM);
                }
                me.chan.set_policy(Policy::from_abi(by_value()?)?);
                Ok(0)
            }
            (abi::NR_RECORD_MODE, abi::IOC_NONE) => {
                me.slot()?;
                let mode = by_value()?;
                match mode {
                    abi::RECORD_MODE_OFF | abi::RECORD_MODE_ON | abi::RECORD_MODE_BATCH => {
                        me.record_mode.store(mode, Relaxed)
                    }
                    _ => return Err(EINVAL),
                }
                Ok(0)
            }
            (abi::NR_CONSUME, abi::IOC_WRITE) => {
                let slot = me.slot()?;
                let upto: u64 = get_user(arg, size)?;
                me.chan.consume(slot, upto)?;
                Ok(0)
            }
            (abi::NR_SEND_BATCH, abi::IOC_WRITE) => me.send_batch(file, get_user(arg, size)?),
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
