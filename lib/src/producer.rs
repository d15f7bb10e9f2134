//! The zero-syscall sender: records written straight into the ring through the producer's
//! writable mapping (see `abi::ProducerControl` for the protocol this follows).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::Path;

use memchan_abi as abi;
use rustix::fs::OFlags;
use rustix::io::Errno;

use crate::handle::Handle;
use crate::sys::{self, ProducerMap, RingMap};
use crate::{channel_path, Error, Info, Result, Stats};

/// Offsets of the control page fields read here (`abi::RingControl`).
const PRODUCER_OFFSET: usize = std::mem::offset_of!(abi::RingControl, producer_offset);
const DATA_OFFSET: usize = std::mem::offset_of!(abi::RingControl, data_offset);
const ROOM_POS: usize = std::mem::offset_of!(abi::RingControl, room_pos);
/// `waiters` and `flags`, loaded together as one native-endian word.
const WAITERS: usize = std::mem::offset_of!(abi::RingControl, waiters);
/// Offsets in the producer page (`abi::ProducerControl`), the start of the producer's mapping.
const HEAD_POS: usize = std::mem::offset_of!(abi::ProducerControl, head_pos);
const HEAD_SEQ: usize = std::mem::offset_of!(abi::ProducerControl, head_seq);
const TAIL_POS: usize = std::mem::offset_of!(abi::ProducerControl, tail_pos);
const TAIL_SEQ: usize = std::mem::offset_of!(abi::ProducerControl, tail_seq);
/// Record header size.
const HDR: usize = abi::RECORD_HEADER_SIZE as usize;

/// A point in the ring.
#[derive(Clone, Copy, Debug)]
struct Cursor {
    pos: u64,
    seq: u64,
}

/// Sends messages with no system call per message: the channel's one producer writes records
/// into the ring itself and publishes them with a store; the kernel checks them and wakes the
/// readers that sleep (one `ioctl`, only when some reader waits).
///
/// A channel has at most one producer ([`Error::ProducerTaken`] for a second); while it has
/// one, `write()`s and [`Sender`](crate::Sender)s fail with `EBUSY`. The claim ends when the
/// producer is dropped (or its process dies); the next one carries on from the last message
/// it published.
///
/// Under `block` the producer waits (in the kernel, asleep) while the slowest receiver is a
/// whole ring behind; under `overwrite` it never waits and receivers lose the oldest messages,
/// with exact counts, as with `write()`. Sequence numbers are the channel's; a message's
/// timestamp is taken here (`CLOCK_MONOTONIC`, from the vDSO).
#[derive(Debug)]
pub struct Producer {
    /// The claimed file (opened for reading and writing: the mapping shows the ring).
    handle: Handle,
    /// The read-only mapping: the control page (`waiters`, `room_pos`, flags).
    ctl: RingMap,
    /// The writable mapping: producer page, data, data.
    map: ProducerMap,
    /// Offset of the data in `map`.
    data: usize,
    ring_bytes: u64,
    msg_max: usize,
    head: Cursor,
    tail: Cursor,
    /// The slowest receiver's position, as last read from the control page.
    room: u64,
    /// A record reserved and not yet committed: its payload length.
    reserved: Option<usize>,
}

impl Producer {
    /// Opens the channel at `path` and claims it as its producer.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let (handle, info) = Handle::open(path, OFlags::RDWR)?;
        sys::claim(handle.fd.as_fd()).map_err(|e| match e {
            Errno::BUSY => Error::ProducerTaken { path: path.into() },
            e => handle.err("claim the producer role", e),
        })?;
        let len = usize::try_from(info.mmap_bytes).map_err(|_| Error::BadRing("mapping size"))?;
        let ctl = RingMap::new(handle.fd.as_fd(), len).map_err(|e| handle.err("mmap", e))?;
        let word = |off| {
            ctl.load_acquire(off)
                .ok_or(Error::BadRing("short control page"))
        };
        let prd = usize::try_from(word(PRODUCER_OFFSET)?).unwrap_or(usize::MAX);
        let data = usize::try_from(word(DATA_OFFSET)?).unwrap_or(usize::MAX);
        let room = word(ROOM_POS)?;
        let data = data
            .checked_sub(prd)
            .filter(|&d| d >= std::mem::size_of::<abi::ProducerControl>())
            .ok_or(Error::BadRing("producer page"))?;
        let plen = len
            .checked_sub(prd)
            .ok_or(Error::BadRing("producer page"))?;
        let map = ProducerMap::new(handle.fd.as_fd(), plen)
            .map_err(|e| handle.err("mmap the producer mapping", e))?;
        let at = |off| map.load(off).ok_or(Error::BadRing("short producer page"));
        let head = Cursor {
            pos: at(HEAD_POS)?,
            seq: at(HEAD_SEQ)?,
        };
        let tail = Cursor {
            pos: at(TAIL_POS)?,
            seq: at(TAIL_SEQ)?,
        };
        Ok(Self {
            handle,
            ctl,
            map,
            data,
            ring_bytes: info.ring_bytes,
            msg_max: info.msg_max,
            head,
            tail,
            room,
            reserved: None,
        })
    }

    /// Opens channel number `index` (see [`channel_path`]).
    pub fn open_index(index: u32) -> Result<Self> {
        Self::open(channel_path(index))
    }

    /// The control page's `waiters` and `flags`.
    fn waiters_flags(&self) -> Result<(u32, u32)> {
        let w = self
            .ctl
            .load_acquire(WAITERS)
            .ok_or(Error::BadRing("short control page"))?;
        let [a, b, c, d, e, f, g, h] = w.to_ne_bytes();
        Ok((
            u32::from_ne_bytes([a, b, c, d]),
            u32::from_ne_bytes([e, f, g, h]),
        ))
    }

    /// Makes room at the head for `bytes` of records: under `block` waits until the slowest
    /// receiver is far enough (asking the kernel only when the last known position says no),
    /// then discards the oldest records as needed (tail first, then a fence).
    fn make_room(&mut self, bytes: u64) -> Result<()> {
        if bytes > self.ring_bytes {
            return Err(Error::MessageTooLarge {
                len: usize::try_from(bytes).unwrap_or(usize::MAX),
                max: self.msg_max,
            });
        }
        let end = self.head.pos.wrapping_add(bytes);
        let (_, flags) = self.waiters_flags()?;
        if flags & abi::CTL_PRODUCER_FAULT != 0 {
            return Err(Error::BadRing("the kernel refused this producer's records"));
        }
        if flags & abi::CTL_OVERWRITE == 0 && end.wrapping_sub(self.room) > self.ring_bytes {
            loop {
                match sys::doorbell(self.handle.fd.as_fd(), bytes) {
                    Ok(()) => break,
                    Err(Errno::INTR) => continue,
                    Err(e) => return Err(self.handle.err("wait for room", e)),
                }
            }
            self.room = self
                .ctl
                .load_acquire(ROOM_POS)
                .ok_or(Error::BadRing("short control page"))?;
        }
        let old = self.tail;
        while end.wrapping_sub(self.tail.pos) > self.ring_bytes {
            let len = self.record_len(self.tail)?;
            self.tail = Cursor {
                pos: self.tail.pos.wrapping_add(abi::record_size(len)),
                seq: self.tail.seq.wrapping_add(1),
            };
        }
        if self.tail.pos != old.pos {
            self.store(TAIL_SEQ, TAIL_POS, self.tail)?;
            // Readers must see the new tail before any discarded byte is overwritten.
            sys::fence_full();
        }
        Ok(())
    }

    /// The payload length of this producer's record at `at` (read back from the ring).
    fn record_len(&mut self, at: Cursor) -> Result<u32> {
        let off = self.offset(at.pos);
        let raw = self
            .map
            .bytes_mut(off, HDR)
            .ok_or(Error::BadRing("record outside the mapping"))?;
        let h = abi::RecordHeader::parse(raw).ok_or(Error::BadRing("short record"))?;
        if h.seq != at.seq || h.len == 0 || h.len as usize > self.msg_max {
            return Err(Error::BadRing("a record of this producer was overwritten"));
        }
        Ok(h.len)
    }

    /// Offset in the mapping of ring position `pos`.
    fn offset(&self, pos: u64) -> usize {
        // `ring_bytes` is a power of two, so this is below it; the data is mapped twice, so a
        // record of up to `ring_bytes` starting there is contiguous.
        self.data
            .saturating_add(usize::try_from(pos & (self.ring_bytes - 1)).unwrap_or(0))
    }

    /// Writes the record of `payload` (filled in by `fill`, `len` bytes) at the head, without
    /// publishing it.
    fn write_record(&mut self, len: usize, fill: impl FnOnce(&mut [u8])) -> Result<()> {
        let len32 = u32::try_from(len).map_err(|_| Error::MessageTooLarge {
            len,
            max: self.msg_max,
        })?;
        let size = usize::try_from(abi::record_size(len32)).unwrap_or(usize::MAX);
        let header = abi::RecordHeader {
            seq: self.head.seq,
            timestamp_ns: now_ns(),
            len: len32,
            flags: 0,
        };
        let off = self.offset(self.head.pos);
        let rec = self
            .map
            .bytes_mut(off, size)
            .ok_or(Error::BadRing("record outside the mapping"))?;
        let (hdr, rest) = rec.split_at_mut(HDR);
        hdr.copy_from_slice(&header.to_bytes());
        let (body, pad) = rest.split_at_mut(len);
        fill(body);
        pad.fill(0);
        self.head = Cursor {
            pos: self.head.pos.wrapping_add(size as u64),
            seq: self.head.seq.wrapping_add(1),
        };
        Ok(())
    }

    /// Stores cursor `c` in the producer page: its sequence number at `seq_off`, then its
    /// position at `pos_off` (release), the order `abi::ProducerControl` prescribes.
    fn store(&mut self, seq_off: usize, pos_off: usize, c: Cursor) -> Result<()> {
        let short = || Error::BadRing("short producer page");
        self.map.store_release(seq_off, c.seq).ok_or_else(short)?;
        self.map.store_release(pos_off, c.pos).ok_or_else(short)
    }

    /// Publishes the records written so far (a release store of the head) and rings the
    /// doorbell if a receiver waits.
    fn publish(&mut self) -> Result<()> {
        self.store(HEAD_SEQ, HEAD_POS, self.head)?;
        // The head store before the `waiters` load: see `abi::ProducerControl`.
        sys::fence_full();
        let (waiters, _) = self.waiters_flags()?;
        if waiters != 0 {
            self.doorbell()?;
        }
        Ok(())
    }

    /// Rings the doorbell: the kernel takes the published records and wakes the receivers
    /// waiting for them.
    pub fn doorbell(&self) -> Result<()> {
        sys::doorbell(self.handle.fd.as_fd(), 0).map_err(|e| match e {
            Errno::IO => Error::BadRing("the kernel refused this producer's records"),
            e => self.handle.err("doorbell", e),
        })
    }

    /// Checks a message length against the channel's limit.
    fn check(&self, len: usize) -> Result<()> {
        if len > self.msg_max {
            return Err(Error::MessageTooLarge {
                len,
                max: self.msg_max,
            });
        }
        Ok(())
    }

    /// Reserves room for a message of `len` bytes (1 to `msg_max`) and returns it, to be
    /// filled in place and published by [`Producer::commit`] (a second reserve replaces an
    /// uncommitted one). Under `block` it may wait for room. Commit soon: room made by
    /// discarding old records is announced to waiting readers only by the commit's doorbell
    /// (see `abi::ProducerControl`, step 4).
    pub fn reserve(&mut self, len: usize) -> Result<&mut [u8]> {
        self.check(len)?;
        if len == 0 {
            return Err(Error::Os {
                op: "reserve an empty message",
                errno: Errno::INVAL,
            });
        }
        let size = abi::record_size(u32::try_from(len).unwrap_or(u32::MAX));
        self.make_room(size)?;
        self.reserved = Some(len);
        let off = self.offset(self.head.pos).saturating_add(HDR);
        self.map
            .bytes_mut(off, len)
            .ok_or(Error::BadRing("record outside the mapping"))
    }

    /// Publishes the message reserved last (its bytes as they are now in the ring). Nothing
    /// to do without a reservation.
    pub fn commit(&mut self) -> Result<()> {
        let Some(len) = self.reserved.take() else {
            return Ok(());
        };
        // The payload is in place: write the header and padding around it.
        self.write_record(len, |_| {})?;
        self.publish()
    }

    /// Sends `msg` as one message (copied into the ring; empty messages store nothing, as with
    /// `write()`).
    pub fn send(&mut self, msg: &[u8]) -> Result<()> {
        self.check(msg.len())?;
        if msg.is_empty() {
            return Ok(());
        }
        self.reserved = None;
        let size = abi::record_size(u32::try_from(msg.len()).unwrap_or(u32::MAX));
        self.make_room(size)?;
        self.write_record(msg.len(), |b| b.copy_from_slice(msg))?;
        self.publish()
    }

    /// Sends each of `msgs` as one message, published together (one store, at most one
    /// doorbell) as far as the ring has room for them, then the rest the same way.
    pub fn send_batch(&mut self, msgs: &[&[u8]]) -> Result<usize> {
        if let Some(big) = msgs.iter().find(|m| m.len() > self.msg_max) {
            return Err(Error::MessageTooLarge {
                len: big.len(),
                max: self.msg_max,
            });
        }
        self.reserved = None;
        let mut pending = false;
        for msg in msgs.iter().filter(|m| !m.is_empty()) {
            let size = abi::record_size(u32::try_from(msg.len()).unwrap_or(u32::MAX));
            // Publish what is written before waiting for (or discarding) room.
            let end = self.head.pos.wrapping_add(size);
            let tight = end.wrapping_sub(self.tail.pos) > self.ring_bytes
                || end.wrapping_sub(self.room) > self.ring_bytes;
            if tight && pending {
                self.publish()?;
            }
            self.make_room(size)?;
            self.write_record(msg.len(), |b| b.copy_from_slice(msg))?;
            pending = true;
        }
        if pending {
            self.publish()?;
        }
        Ok(msgs.len())
    }

    /// The channel's configuration and state.
    pub fn info(&self) -> Result<Info> {
        self.handle.info()
    }

    /// The channel's counters.
    pub fn stats(&self) -> Result<Stats> {
        self.handle.stats()
    }

    /// Sequence number the next message will get.
    pub fn next_seq(&self) -> u64 {
        self.head.seq
    }
}

/// `CLOCK_MONOTONIC` now in nanoseconds (the vDSO: no system call).
fn now_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    u64::try_from(t.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(t.tv_nsec).unwrap_or(0))
}

impl AsFd for Producer {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.handle.fd.as_fd()
    }
}

impl AsRawFd for Producer {
    fn as_raw_fd(&self) -> RawFd {
        self.handle.fd.as_raw_fd()
    }
}
