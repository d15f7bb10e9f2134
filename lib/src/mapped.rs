//! The zero-copy receiver: records read in place from the read-only ring mapping.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::Path;
use std::time::{Duration, Instant};

use memchan_abi as abi;
use rustix::fs::OFlags;

use crate::handle::Handle;
use crate::sys::{self, RingMap};
use crate::{channel_path, Error, Info, Policy, Result, Seek};

/// Offsets of the control page fields read here (`abi::RingControl`).
/// Turns of [`MappedReceiver::recv_spin`]'s wait before it gives back what was read (about a
/// millisecond on current hardware: far longer than a message takes to come when they flow).
pub const SPINS_BEFORE_RELEASE: u32 = 1 << 14;

const MAGIC: usize = std::mem::offset_of!(abi::RingControl, magic);
const RING_BYTES: usize = std::mem::offset_of!(abi::RingControl, ring_bytes);
const DATA_OFFSET: usize = std::mem::offset_of!(abi::RingControl, data_offset);
const PRODUCER_OFFSET: usize = std::mem::offset_of!(abi::RingControl, producer_offset);
/// Offsets in the producer page (`abi::ProducerControl`), where the head and tail are read.
const HEAD_POS: usize = std::mem::offset_of!(abi::ProducerControl, head_pos);
const TAIL_POS: usize = std::mem::offset_of!(abi::ProducerControl, tail_pos);
/// Record header size.
const HDR: usize = abi::RECORD_HEADER_SIZE as usize;

/// Receives messages by reading them where the kernel wrote them: no copy and no system call
/// per message while messages are waiting (one `poll` when it has to wait).
///
/// Each record is validated before it is handed out: its sequence number must be the expected
/// one and the ring's tail must not have passed it (lap detection). How the payload is handed
/// out depends on the channel's policy when the receiver was opened:
///
/// - `block`: the kernel never overwrites a record this receiver has not released, so
///   [`Borrowed::payload`] is the ring memory itself (true zero copy). Records are released
///   when the [`Borrowed`] is dropped.
/// - `overwrite`: the kernel may reuse a record's bytes at any moment, so an in-place borrow
///   could change under the caller. The receiver copies the record out and checks the copy
///   afterwards: a record that was overwritten during the copy is never returned; the caller
///   gets [`Error::Overrun`] with the exact number of messages lost instead.
///
/// If a writer switches a `block` channel to `overwrite` while a [`Borrowed`] is held,
/// [`Borrowed::release`] reports the overrun, so the caller learns that the bytes it looked at
/// may have changed.
#[derive(Debug)]
pub struct MappedReceiver {
    /// The subscriber file (its kernel cursor trails `next` and is advanced by `consume`).
    handle: Handle,
    map: RingMap,
    ring_bytes: u64,
    data_offset: usize,
    /// Offsets of the head and tail positions in the mapping (in the producer page).
    head_off: usize,
    tail_off: usize,
    msg_max: usize,
    in_place: bool,
    next_seq: u64,
    next_pos: u64,
    consumed_seq: u64,
    consumed_pos: u64,
    /// Copy of the current record under `overwrite`.
    copy: Vec<u8>,
}

impl MappedReceiver {
    /// Opens the channel at `path` and maps its ring; receives messages sent from now on.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let (handle, info) = Handle::open(path, OFlags::RDONLY | OFlags::NONBLOCK)?;
        let len = usize::try_from(info.mmap_bytes).map_err(|_| Error::BadRing("mapping size"))?;
        let map = RingMap::new(handle.fd.as_fd(), len).map_err(|e| handle.err("mmap", e))?;
        let ctl = |off| {
            map.load_acquire(off)
                .ok_or(Error::BadRing("short control page"))
        };
        // `magic` and `abi_version`, loaded together as one native-endian word.
        let [m0, m1, m2, m3, v0, v1, v2, v3] = ctl(MAGIC)?.to_ne_bytes();
        if u32::from_ne_bytes([m0, m1, m2, m3]) != abi::RING_MAGIC
            || u32::from_ne_bytes([v0, v1, v2, v3]) != abi::ABI_VERSION
        {
            return Err(Error::BadRing(
                "bad magic or ABI version in the control page",
            ));
        }
        let ring_bytes = ctl(RING_BYTES)?;
        let data_offset =
            usize::try_from(ctl(DATA_OFFSET)?).map_err(|_| Error::BadRing("data offset"))?;
        if !ring_bytes.is_power_of_two() {
            return Err(Error::BadRing("ring size is not a power of two"));
        }
        let producer = usize::try_from(ctl(PRODUCER_OFFSET)?)
            .ok()
            .filter(|&p| {
                p.saturating_add(std::mem::size_of::<abi::ProducerControl>()) <= data_offset
            })
            .ok_or(Error::BadRing("producer page offset"))?;
        let mut me = Self {
            handle,
            map,
            ring_bytes,
            data_offset,
            head_off: producer + HEAD_POS,
            tail_off: producer + TAIL_POS,
            msg_max: info.msg_max,
            in_place: info.policy == Policy::Block,
            next_seq: 0,
            next_pos: 0,
            consumed_seq: 0,
            consumed_pos: 0,
            copy: Vec::with_capacity(info.msg_max),
        };
        me.resync()?;
        Ok(me)
    }

    /// Opens channel number `index` (see [`channel_path`]).
    pub fn open_index(index: u32) -> Result<Self> {
        Self::open(channel_path(index))
    }

    /// Takes the position of the kernel-side cursor of this file.
    fn resync(&mut self) -> Result<()> {
        let raw =
            sys::reader(self.handle.fd.as_fd()).map_err(|e| self.handle.err("reader state", e))?;
        self.next_seq = raw.cursor_seq;
        self.next_pos = raw.cursor_pos;
        self.consumed_seq = raw.cursor_seq;
        self.consumed_pos = raw.cursor_pos;
        Ok(())
    }

    /// Recovers from being lapped: continues at the oldest record and says how many were lost.
    fn lapped(&mut self) -> Error {
        let before = self.next_seq;
        let res = sys::seek(self.handle.fd.as_fd(), abi::SEEK_OLDEST)
            .map_err(|e| self.handle.err("seek", e))
            .and_then(|()| self.resync());
        match res {
            Ok(()) => Error::Overrun {
                lost: self.next_seq.saturating_sub(before),
            },
            Err(e) => e,
        }
    }

    /// Whether the ring's tail has passed `pos` (the record there may be overwritten).
    fn passed(&self, pos: u64) -> Result<bool> {
        RingMap::fence_acquire();
        let tail = self
            .map
            .load_acquire(self.tail_off)
            .ok_or(Error::BadRing("short control page"))?;
        Ok((tail.wrapping_sub(pos) as i64) > 0)
    }

    /// The next record if one is there, without waiting (`Ok(None)` if none).
    pub fn try_recv(&mut self) -> Result<Option<Borrowed<'_>>> {
        let head = self
            .map
            .load_acquire(self.head_off)
            .ok_or(Error::BadRing("short control page"))?;
        if head == self.next_pos {
            return Ok(None);
        }
        if self.passed(self.next_pos)? {
            return Err(self.lapped());
        }
        // In range: `ring_bytes` is a power of two and the data area is mapped twice.
        let off = self
            .data_offset
            .saturating_add(usize::try_from(self.next_pos % self.ring_bytes).unwrap_or(0));
        let mut hdr = [0u8; HDR];
        if !self.map.copy_out(off, &mut hdr) {
            return Err(Error::BadRing("record outside the mapping"));
        }
        let h = abi::RecordHeader::parse(&hdr).ok_or(Error::BadRing("short record"))?;
        let (seq, ts) = (h.seq, h.timestamp_ns);
        let len = usize::try_from(h.len).unwrap_or(usize::MAX);
        if self.passed(self.next_pos)? {
            return Err(self.lapped());
        }
        // A producer's records are checked like the kernel checks them: the expected
        // sequence number, a length within the limit, the whole record below the head.
        let whole = abi::record_size(h.len) <= head.wrapping_sub(self.next_pos);
        if seq != self.next_seq || len > self.msg_max || !whole {
            return Err(Error::BadRing(
                "record header does not match the ring state",
            ));
        }
        let payload_off = off.saturating_add(HDR);
        if !self.in_place {
            self.copy.resize(len, 0);
            if !self.map.copy_out(payload_off, &mut self.copy) {
                return Err(Error::BadRing("record outside the mapping"));
            }
            if self.passed(self.next_pos)? {
                return Err(self.lapped());
            }
        }
        Ok(Some(Borrowed {
            seq,
            timestamp: Duration::from_nanos(ts),
            offset: payload_off,
            len,
            pos: self.next_pos,
            rx: self,
            released: false,
        }))
    }

    /// Waits for the next record.
    pub fn recv(&mut self) -> Result<Borrowed<'_>> {
        self.recv_deadline(None)
    }

    /// Waits at most `timeout` for the next record ([`Error::TimedOut`] if none came).
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Borrowed<'_>> {
        self.recv_deadline(Some(Instant::now() + timeout))
    }

    /// Spins on the control page until a record arrives: the lowest latency, one CPU busy.
    ///
    /// No system call while records keep coming: what was read is given back to the kernel
    /// (room for writers under `block`, the cursor `poll` and the counters see) every half
    /// ring, as always, and once the wait has lasted [`SPINS_BEFORE_RELEASE`] turns.
    pub fn recv_spin(&mut self) -> Result<Borrowed<'_>> {
        let mut spins = 0u32;
        loop {
            // Polonius-free early return: check first, then borrow.
            if self.ready()? {
                break;
            }
            spins = spins.saturating_add(1);
            if spins == SPINS_BEFORE_RELEASE {
                self.release_consumed()?;
            }
            std::hint::spin_loop();
        }
        self.try_recv()?.ok_or(Error::WouldBlock)
    }

    fn recv_deadline(&mut self, deadline: Option<Instant>) -> Result<Borrowed<'_>> {
        loop {
            if self.ready()? {
                break;
            }
            // Tell the kernel what was read (frees room under `block`; makes poll meaningful).
            self.release_consumed()?;
            if self.ready()? {
                break;
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            self.handle.wait(left)?;
            if !self.ready()? && left.is_some_and(|l| l.is_zero()) {
                return Err(Error::TimedOut);
            }
        }
        self.try_recv()?.ok_or(Error::WouldBlock)
    }

    /// Whether a record (or a lap) is waiting.
    fn ready(&self) -> Result<bool> {
        let head = self
            .map
            .load_acquire(self.head_off)
            .ok_or(Error::BadRing("short control page"))?;
        Ok(head != self.next_pos)
    }

    /// Moves the kernel cursor up to what has been released.
    ///
    /// Under `overwrite` the kernel cursor, which trails this receiver, can be lapped even
    /// though this receiver read everything in time; the kernel then holds an overrun for the
    /// file (and `poll` stays readable). That is put right by moving the kernel cursor to the
    /// oldest record and consuming up to this receiver's position again.
    fn release_consumed(&mut self) -> Result<()> {
        let rx = &self.handle;
        let os = |op| move |e| rx.err(op, e);
        if self.consumed_seq != self.next_seq {
            sys::consume(rx.fd.as_fd(), self.next_seq).map_err(os("consume"))?;
            self.consumed_seq = self.next_seq;
            self.consumed_pos = self.next_pos;
        }
        if !self.in_place {
            let st = sys::reader(rx.fd.as_fd()).map_err(os("reader state"))?;
            // Serial-number order: sequence numbers wrap (a producer may drive them there).
            let behind = (st.cursor_seq.wrapping_sub(self.next_seq) as i64) < 0;
            if st.flags & abi::READER_OVERRUN != 0 || behind {
                sys::seek(rx.fd.as_fd(), abi::SEEK_OLDEST).map_err(os("seek"))?;
                sys::consume(rx.fd.as_fd(), self.next_seq).map_err(os("consume"))?;
            }
        }
        Ok(())
    }

    /// Called when a record is released: advance, and give room back to writers once half the
    /// ring is held.
    fn advance(&mut self, len: usize) -> Result<()> {
        let size = abi::record_size(u32::try_from(len).unwrap_or(u32::MAX));
        self.next_pos = self.next_pos.wrapping_add(size);
        self.next_seq = self.next_seq.wrapping_add(1);
        if self.next_pos.wrapping_sub(self.consumed_pos) > self.ring_bytes / 2 {
            self.release_consumed()?;
        }
        Ok(())
    }

    /// Moves to the oldest record in the ring or past the newest.
    pub fn seek(&mut self, to: Seek) -> Result<()> {
        sys::seek(self.handle.fd.as_fd(), to.raw()).map_err(|e| self.handle.err("seek", e))?;
        self.resync()
    }

    /// The channel's configuration and state.
    pub fn info(&self) -> Result<Info> {
        self.handle.info()
    }

    /// Sequence number of the next record this receiver returns.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Whether payloads are borrowed in place (`block` policy) rather than copied.
    pub fn is_zero_copy(&self) -> bool {
        self.in_place
    }
}

impl AsFd for MappedReceiver {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.handle.fd.as_fd()
    }
}

/// A record of a [`MappedReceiver`], valid until it is released (dropped, or
/// [`Borrowed::release`]).
#[derive(Debug)]
pub struct Borrowed<'a> {
    rx: &'a mut MappedReceiver,
    /// Sequence number.
    pub seq: u64,
    /// Send time (`CLOCK_MONOTONIC` since boot).
    pub timestamp: Duration,
    offset: usize,
    len: usize,
    pos: u64,
    released: bool,
}

impl Borrowed<'_> {
    /// The payload: the ring memory itself under `block`, a validated copy under `overwrite`.
    pub fn payload(&self) -> &[u8] {
        if self.rx.in_place {
            // SAFETY: under `block` the kernel does not overwrite a record before this file
            // releases it (IOC_CONSUME), which happens only after this borrow ends (`release`
            // and `drop` take the `Borrowed`). A policy switch meanwhile is detected by
            // `release`.
            unsafe { self.rx.map.slice(self.offset, self.len) }.unwrap_or(&[])
        } else {
            self.rx.copy.get(..self.len).unwrap_or(&[])
        }
    }

    /// Releases the record; [`Error::Overrun`] if the ring's tail passed it while it was
    /// borrowed (its bytes may have changed: discard what was read from it).
    pub fn release(mut self) -> Result<()> {
        self.finish(true)
    }

    /// Advances past the record unless the tail passed it; then, with `report`, recovers and
    /// returns the overrun, else leaves it for the next receive to find and report.
    fn finish(&mut self, report: bool) -> Result<()> {
        if self.released {
            return Ok(());
        }
        self.released = true;
        if self.rx.in_place && self.rx.passed(self.pos)? {
            return Err(if report {
                self.rx.lapped()
            } else {
                Error::WouldBlock
            });
        }
        self.rx.advance(self.len)
    }
}

impl Drop for Borrowed<'_> {
    fn drop(&mut self) {
        // Released without looking at the outcome: a lap is reported by the next receive.
        let _ = self.finish(false);
    }
}

impl AsRawFd for MappedReceiver {
    fn as_raw_fd(&self) -> RawFd {
        self.handle.fd.as_raw_fd()
    }
}
