// SPDX-License-Identifier: GPL-2.0

//! What an open `/dev/memchan*` does: the state of an open file and its operations (called
//! from the file operations table in `device.rs`).
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
    fs::File,
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
    access,
    channel::{
        Channel,
        Delivered,
        Shape, //
    },
    memory::{
        self,
        RingSpan, //
    },
    pages::Pages,
    ring::Policy, //
};

/// Per-open state of a `/dev/memchan*` file.
#[pin_data(PinnedDrop)]
pub(crate) struct MemchanFile {
    /// The channel this file was opened on.
    chan: Arc<Channel>,
    /// Its seat (`seats.rs`), which is its subscriber slot in the ring, if opened with read
    /// access.
    seat: Option<usize>,
    /// Whether opened with write access.
    writer: bool,
    /// Whether the opener owned the channel (`ChannelDev::admit` in `device.rs`): the file may
    /// change the policy (as may one opened with `CAP_SYS_ADMIN`).
    owner: bool,
    /// Record mode: [`abi::RECORD_MODE_OFF`], [`abi::RECORD_MODE_ON`] or
    /// [`abi::RECORD_MODE_BATCH`].
    record_mode: Atomic<u32>,
    /// 1 once the file has been polled (see [`Channel::poll`]).
    polled: Atomic<u32>,
    /// 1 once the file has claimed the channel as its producer ([`abi::IOC_PRODUCER`]), until
    /// it is released.
    producer: Atomic<u32>,
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
    UserSlice::new(UserPtr::from_addr(arg), n)
        .writer()
        .write_slice(bytes.get(..n).ok_or(EINVAL)?)?;
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
        self.seat.ok_or(EBADF)
    }

    /// `poll` (the file operations table in `device.rs` has it).
    pub(crate) fn poll(&self, file: &File, table: PollTable<'_>) -> u32 {
        let first = self.polled.xchg(1, Relaxed) == 0;
        self.chan.poll(file, table, self.seat, first)
    }

    /// [`abi::IOC_SEND_BATCH`] of `req`: copies the records in (at most [`abi::SEND_BATCH_MAX`]
    /// bytes) and sends them; returns the bytes of the records sent.
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
    fn send_batch_from(
        &self,
        file: &File,
        buf: &mut [u8],
        addr: usize,
        len: usize,
    ) -> Result<isize> {
        let buf = buf.get_mut(..len).ok_or(EINVAL)?;
        UserSlice::new(UserPtr::from_addr(addr), len)
            .reader()
            .read_slice(buf)?;
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

    /// The state of a file opened on `chan` by user `uid`, granted reading and writing as
    /// `read` and `write`, by the channel's owner if `owner`: subscribes if `read`.
    pub(crate) fn new(
        chan: &Arc<Channel>,
        read: bool,
        write: bool,
        owner: bool,
        uid: u32,
    ) -> Result<Pin<KBox<Self>>> {
        // The memory first: once the seat is taken nothing may fail, so that `open()` never
        // gives one back, which takes the ring lock if the ring has seen it (under the misc
        // devices' global mutex).
        let me = KBox::<Self>::new_uninit(GFP_KERNEL_ACCOUNT)?;
        let seat = chan.attach(read, write, uid)?;
        let init = pin_init!(Self {
            chan: chan.clone(),
            seat,
            writer: write,
            owner,
            record_mode: Atomic::new(0),
            polled: Atomic::new(0),
            producer: Atomic::new(0),
            bbuf <- new_mutex!(KVVec::new(), "memchan::bbuf"),
        });
        match me.write_pin_init(init) {
            Ok(me) => Ok(me),
            Err(never) => match never {},
        }
    }

    /// `read()`: one message (or, in record mode, record or batch) into `iov`.
    pub(crate) fn read(&self, iov: &mut IovIterDest<'_>, nonblock: bool) -> Result<usize> {
        let slot = self.slot()?;
        Ok(match self.chan.read(slot, self.shape(), iov, nonblock)? {
            Delivered::Bytes(n) => n,
            Delivered::End => 0,
        })
    }

    /// `write()`: `iov` as one message.
    pub(crate) fn write(&self, iov: &mut IovIterSource<'_>, nonblock: bool) -> Result<usize> {
        let len = iov.len();
        if len > self.chan.msg_max() as usize {
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
            if !memory::fault_in_readable(iov, len) {
                return Err(EFAULT);
            }
            let mut taken = 0usize;
            let mut fill = |dst: &mut RingSpan<'_>| {
                // SAFETY: `fill` is given the channel's ring bytes (`PageRing::write_with`),
                // which lie in its `RingMemory`.
                let n = unsafe { memory::copy_from_iter_nofault(iov, dst) };
                taken = taken.wrapping_add(n);
                if n == dst.len() {
                    Ok(())
                } else {
                    Err(EFAULT)
                }
            };
            match self.chan.send(len32, &mut fill, nonblock) {
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

    /// `ioctl(cmd, arg)` on `file`.
    pub(crate) fn ioctl(&self, file: &File, cmd: u32, arg: usize) -> Result<isize> {
        if cmd == crate::compat::FIONREAD {
            // Bytes the next `read()` needs (0 if nothing is ready): the payload, plus the
            // header in record mode, plus the padding in batch record mode.
            let n = self.chan.next_size(self.slot()?, self.shape())?;
            return put_user(arg, &i32::try_from(n).map_err(|_| EOVERFLOW)?, 4);
        }
        if _IOC_TYPE(cmd) != abi::IOC_MAGIC {
            return Err(ENOTTY);
        }
        // By type, number and direction; the size is the caller's (see `abi`).
        let size = _IOC_SIZE(cmd);
        let by_value = || u32::try_from(arg).map_err(|_| EINVAL);
        match (_IOC_NR(cmd), _IOC_DIR(cmd)) {
            (abi::NR_INFO, abi::IOC_READ) => put_user(arg, &self.chan.info(), size),
            (abi::NR_STATS, abi::IOC_READ) => put_user(arg, &self.chan.stats(), size),
            (abi::NR_READER, abi::IOC_READ) => {
                let mut st = self.chan.reader_state(self.slot()?)?;
                if self.record() {
                    st.flags |= abi::READER_RECORD_MODE;
                }
                put_user(arg, &st, size)
            }
            (abi::NR_SEEK, abi::IOC_NONE) => {
                self.chan.seek(self.slot()?, by_value()?)?;
                Ok(0)
            }
            (abi::NR_SET_POLICY, abi::IOC_NONE) => {
                // The policy decides what every other user of the channel gets (losses, or
                // writers stalled by idle readers): only its owner changes it.
                if !self.writer || !(self.owner || access::opener_capable_sys_admin(file)) {
                    return Err(EPERM);
                }
                self.chan.set_policy(Policy::from_abi(by_value()?)?);
                Ok(0)
            }
            (abi::NR_RECORD_MODE, abi::IOC_NONE) => {
                self.slot()?;
                let mode = by_value()?;
                match mode {
                    abi::RECORD_MODE_OFF | abi::RECORD_MODE_ON | abi::RECORD_MODE_BATCH => {
                        self.record_mode.store(mode, Relaxed)
                    }
                    _ => return Err(EINVAL),
                }
                Ok(0)
            }
            (abi::NR_CONSUME, abi::IOC_WRITE) => {
                let slot = self.slot()?;
                let upto: u64 = get_user(arg, size)?;
                self.chan.consume(slot, upto)?;
                Ok(0)
            }
            (abi::NR_SEND_BATCH, abi::IOC_WRITE) => self.send_batch(file, get_user(arg, size)?),
            (abi::NR_PRODUCER, abi::IOC_NONE) => {
                // Read access too: the producer's mapping shows the ring's contents.
                let slot = self.slot()?;
                if !self.writer {
                    return Err(EBADF);
                }
                // A producer shuts every other writer out: only the channel's owner, as for
                // the policy.
                if !(self.owner || access::opener_capable_sys_admin(file)) {
                    return Err(EPERM);
                }
                if self.producer.load(Relaxed) != 0 {
                    return Err(EBUSY);
                }
                self.chan.claim(slot)?;
                self.producer.store(1, Relaxed);
                Ok(0)
            }
            (abi::NR_DOORBELL, abi::IOC_NONE) => {
                if self.producer.load(Relaxed) == 0 {
                    return Err(EPERM);
                }
                let nonblock = file.flags() & kernel::fs::file::flags::O_NONBLOCK != 0;
                self.chan.doorbell(arg as u64, nonblock)?;
                Ok(0)
            }
            _ => Err(ENOTTY),
        }
    }

    /// `mmap()`: the ring, read-only, for subscribers; at [`abi::MMAP_PRODUCER_OFFSET`], the
    /// producer page and the data, writable, for the producer (`EACCES` for anyone else).
    pub(crate) fn mmap(&self, vma: &VmaNew) -> Result {
        if Pages::is_producer_map(vma) {
            if self.producer.load(Relaxed) == 0 {
                return Err(EACCES);
            }
            return self.chan.mmap_producer(vma);
        }
        self.slot().map_err(|_| EACCES)?;
        self.chan.mmap(vma)
    }

    /// The file's lines in `/proc/<pid>/fdinfo/<fd>`.
    pub(crate) fn show_fdinfo(&self, m: &SeqFile) {
        seq_print!(m, "memchan_channel:\t{}\n", self.chan.index());
        seq_print!(m, "memchan_policy:\t{}\n", self.chan.policy().name());
        seq_print!(m, "memchan_writer:\t{}\n", u8::from(self.writer));
        if self.producer.load(Relaxed) != 0 {
            let (faulted, postponed) = self.chan.producer_state();
            seq_print!(m, "memchan_producer_fault:\t{}\n", u8::from(faulted));
            seq_print!(m, "memchan_take_postponed:\t{}\n", u8::from(postponed));
        }
        if let Some(Ok(st)) = self.seat.map(|s| self.chan.reader_state(s)) {
            seq_print!(m, "memchan_cursor:\t{}\n", st.cursor_seq);
            seq_print!(m, "memchan_lag:\t{}\n", st.lag);
            seq_print!(m, "memchan_lost:\t{}\n", st.lost);
            seq_print!(m, "memchan_pending_lost:\t{}\n", st.pending_lost);
            seq_print!(
                m,
                "memchan_record_mode:\t{}\n",
                self.record_mode.load(Relaxed)
            );
        }
    }
}

#[pinned_drop]
impl PinnedDrop for MemchanFile {
    fn drop(self: Pin<&mut Self>) {
        // Released: no descriptor and no mapping of the file is left, so no producer mapping.
        if self.producer.load(Relaxed) != 0 {
            self.chan.unclaim();
        }
        self.chan
            .detach(self.seat, self.writer, self.polled.load(Relaxed) != 0);
    }
}
