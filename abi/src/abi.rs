// SPDX-License-Identifier: GPL-2.0 OR MIT

//! Definitions shared by the memchan kernel module and userspace.
//!
//! This file is compiled twice: as the body of the `memchan-abi` crate, and as a module of the
//! kernel crate (`kernel/memchan.rs`). It must therefore use only `core` and contain nothing
//! but plain constants, `const fn`s and `#[repr(C)]` types with fixed-width fields and explicit
//! padding (so that 32-bit processes on 64-bit kernels see the same layout). The C header
//! `abi/include/memchan.h` mirrors it; a host test keeps the two in sync.
//!
//! # Byte order
//!
//! Everything is in the machine's native byte order: ioctl structs, record headers in the ring
//! and in `read()` results, and the control page. A channel never leaves its machine (a bridge
//! to another machine re-encodes messages); [`RecordHeader::to_bytes`] and
//! [`RecordHeader::from_bytes`] are the one encoding of a header as bytes.
//!
//! # Extension rule
//!
//! Every struct the kernel fills in starts with `size`, the number of bytes the kernel knows of
//! it. New fields are only ever appended. The kernel matches an ioctl by its type, number and
//! direction, not by the struct size encoded in it, and takes that size as the caller's:
//! - a struct the kernel fills in (`_IOR`): it copies `min(caller's size, its size)` bytes, so
//!   an old program gets the fields it knows and a new program on an old kernel finds the rest
//!   of its struct untouched (`size` tells how much was filled);
//! - a struct the kernel reads (`_IOW`): it reads `min(caller's size, its size)` bytes and takes
//!   fields the caller did not send as 0; bytes beyond the fields the kernel knows must be 0,
//!   or the call fails with `E2BIG` (as `copy_struct_from_user` does): a new program's
//!   request is never half understood.

/// Version of this ABI. Bumped on any incompatible change.
pub const ABI_VERSION: u32 = 1;

/// Name of the default channel's misc device (and of the kernel module).
pub const DEVICE_NAME: &str = "memchan";

/// Path of the default channel's device node (channel 0).
///
/// Channel `i > 0` is `/dev/memchan<i>` (`/dev/memchan1`, `/dev/memchan2`, ...).
pub const DEVICE_PATH: &str = "/dev/memchan";

/// Largest number of channels one module load can create (`channels` parameter).
pub const CHANNELS_MAX: u32 = 16;

/// Default message-size limit, in bytes (`msg_max` parameter).
pub const MSG_MAX: u32 = 4096;

/// Largest subscriber limit a channel may have (`max_readers` parameter and attribute).
pub const MAX_READERS_MAX: u32 = 4096;

/// Longest name of a named channel (`/dev/memchan-<name>`), in bytes.
pub const NAME_MAX: usize = 32;

/// Most named channels that may exist at once.
pub const NAMED_MAX: u32 = 64;

/// Default ring size in KiB (`ring_kib` parameter): must be a power of two.
pub const RING_KIB_DEFAULT: u32 = 64;

/// Smallest and largest ring size in KiB.
pub const RING_KIB_MIN: u32 = 4;
/// Largest ring size in KiB (16 MiB).
pub const RING_KIB_MAX: u32 = 16 * 1024;

/// Overflow policy `block`: writers wait for the slowest subscriber; nothing is lost, unless
/// the channel has a stall limit (`stall_ms`) and a subscriber holds writers back that long:
/// then it is dropped to an overrun.
pub const POLICY_BLOCK: u32 = 0;
/// Overflow policy `overwrite`: writers never wait; lapped subscribers lose the oldest
/// messages and are told so (`EPIPE` once, then the exact count by ioctl and in fdinfo).
pub const POLICY_OVERWRITE: u32 = 1;

/// `MEMCHAN_IOC_SEEK` argument: move to the oldest message still in the ring (replay).
pub const SEEK_OLDEST: u32 = 0;
/// `MEMCHAN_IOC_SEEK` argument: skip everything pending; read only new messages.
pub const SEEK_NEWEST: u32 = 1;

/// Header of every record, in the ring and (in record mode) in front of each `read()` payload.
///
/// In the ring, a record is this header, `len` payload bytes, then zero padding up to a
/// multiple of [`RECORD_ALIGN`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordHeader {
    /// Per-channel sequence number, starting at 1 and increasing by 1 per message.
    pub seq: u64,
    /// `CLOCK_MONOTONIC` time of the `write()`, in nanoseconds.
    pub timestamp_ns: u64,
    /// Payload length in bytes.
    pub len: u32,
    /// Reserved for flags; 0.
    pub flags: u32,
}

/// Size of [`RecordHeader`].
pub const RECORD_HEADER_SIZE: u32 = 24;

// Its fields, back to back, are the whole header: `to_bytes`/`from_bytes` encode exactly them.
const _: () = assert!(
    core::mem::size_of::<RecordHeader>() == RECORD_HEADER_SIZE as usize
        && 8 + 8 + 4 + 4 == RECORD_HEADER_SIZE as usize
);

impl RecordHeader {
    /// The header as it is stored (native byte order, fields in declaration order, no
    /// padding).
    pub fn to_bytes(self) -> [u8; RECORD_HEADER_SIZE as usize] {
        let mut b = [0u8; RECORD_HEADER_SIZE as usize];
        let fields = self
            .seq
            .to_ne_bytes()
            .into_iter()
            .chain(self.timestamp_ns.to_ne_bytes())
            .chain(self.len.to_ne_bytes())
            .chain(self.flags.to_ne_bytes());
        for (dst, src) in b.iter_mut().zip(fields) {
            *dst = src;
        }
        b
    }

    /// The header stored in `b` (see [`RecordHeader::to_bytes`]).
    pub fn from_bytes(b: &[u8; RECORD_HEADER_SIZE as usize]) -> Self {
        /// The `N` bytes at `at` of `b` (always there: `b` is a whole header).
        fn field<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
            b.get(at..)
                .and_then(|r| r.first_chunk())
                .copied()
                .unwrap_or([0; N])
        }
        Self {
            seq: u64::from_ne_bytes(field(b, 0)),
            timestamp_ns: u64::from_ne_bytes(field(b, 8)),
            len: u32::from_ne_bytes(field(b, 16)),
            flags: u32::from_ne_bytes(field(b, 20)),
        }
    }

    /// The header at the front of `bytes`, if it holds one.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        bytes.first_chunk().map(Self::from_bytes)
    }
}

/// Records in the ring start at multiples of this.
pub const RECORD_ALIGN: u32 = 8;

/// Bytes a message of `len` bytes takes in the ring (header + payload + padding).
pub const fn record_size(len: u32) -> u64 {
    let raw = RECORD_HEADER_SIZE as u64 + len as u64;
    let align = RECORD_ALIGN as u64;
    raw.div_ceil(align) * align
}

/// Value of [`RingControl::magic`]: "MCHR".
pub const RING_MAGIC: u32 = 0x5248_434d;

/// The first page of a channel's mapping: where the ring is and how far it is filled.
///
/// Mapping layout (`mmap(NULL, info.mmap_bytes, PROT_READ, MAP_SHARED, fd, 0)`):
/// page 0 is this control page; the `ring_bytes` of data follow at `data_offset` and are mapped
/// **twice** in a row, so a record that wraps around the end of the ring is still contiguous:
/// the record at ring position `pos` is at `data_offset + pos % ring_bytes` and extends up to
/// `msg_max + header` bytes without wrapping.
///
/// Memory ordering: the kernel writes a record completely, then publishes it by a release
/// store of `head_pos`/`head_seq` (`smp_store_release`). It discards the oldest records by
/// first raising `tail_pos`/`tail_seq` (with a full barrier) and only then overwriting them.
/// A reader therefore: loads `head_pos` with acquire; reads records below it; copies a record
/// out; then loads `tail_pos` again (after an acquire fence) — if `tail_pos` passed the record's
/// position the copy may be torn and must be discarded (the reader was lapped). Each record's
/// `seq` must also equal the sequence number the reader expects.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingControl {
    /// [`RING_MAGIC`].
    pub magic: u32,
    /// [`ABI_VERSION`].
    pub abi_version: u32,
    /// Ring size in bytes (a power of two).
    pub ring_bytes: u64,
    /// Offset of the (double-mapped) data area in the mapping.
    pub data_offset: u64,
    /// Ring position (bytes written since creation) where the next record goes.
    pub head_pos: u64,
    /// Sequence number the next record gets (so `head_seq - 1` is the newest message).
    pub head_seq: u64,
    /// Ring position of the oldest record still in the ring.
    pub tail_pos: u64,
    /// Sequence number of the oldest record still in the ring.
    pub tail_seq: u64,
    /// Offset of the producer page ([`ProducerControl`]) in the mapping.
    pub producer_offset: u64,
    /// Under `block`, with a producer: ring position of the slowest subscriber's next record
    /// (the head if there is none). A producer may fill the ring up to `room_pos + ring_bytes`.
    /// It may lag (lower than the truth, never higher); [`IOC_DOORBELL`] with the room needed
    /// brings it up to date, waiting for room if there is none.
    pub room_pos: u64,
    /// Non-zero while some reader of the channel is asleep in `read()` or waits in `poll`,
    /// `select` or `epoll`: a producer that publishes records must then ring the doorbell
    /// ([`ProducerControl`] gives the protocol).
    pub waiters: u32,
    /// `CTL_*` flags.
    pub flags: u32,
}

/// [`RingControl::flags`]: a producer has claimed the channel ([`IOC_PRODUCER`]).
pub const CTL_PRODUCER: u32 = 1;
/// [`RingControl::flags`]: the producer published something invalid; the kernel stopped taking
/// its records until it leaves (see [`ProducerControl`]).
pub const CTL_PRODUCER_FAULT: u32 = 2;
/// [`RingControl::flags`]: the policy is `overwrite` (else `block`), for a producer to follow.
pub const CTL_OVERWRITE: u32 = 4;

/// The second page of a channel's mapping (at [`RingControl::producer_offset`]): the ring's
/// head and tail as its writer publishes them. Readers of the mapping take the head and tail
/// from here. Without a producer the kernel keeps it up to date, with the same values as the
/// control page's (and the same memory ordering).
///
/// # The producer-mapped mode
///
/// A file opened for reading and writing may claim the channel as its producer
/// ([`IOC_PRODUCER`]; its own subscription then stays at the head; one producer at a time,
/// `EBUSY` for a second claim; the claim ends when the file is released, that is when its
/// last descriptor is closed and its producer mapping unmapped, and so when its owner dies).
/// The producer maps this page and the data writable (`mmap(NULL, mmap_bytes -
/// producer_offset, PROT_READ | PROT_WRITE, MAP_SHARED, fd, MMAP_PRODUCER_OFFSET)`: this page,
/// then the data twice in a row, as in the read-only mapping) and publishes records with no
/// system call:
///
/// 1. Room: under `block`, the bytes `[head_pos, head_pos + n)` must stay below
///    `RingControl::room_pos + ring_bytes`; if they do not, call [`IOC_DOORBELL`] with `n`,
///    which waits for room. Under both policies, if `head_pos + n - tail_pos > ring_bytes`,
///    first discard the oldest records: raise `tail_seq`, then `tail_pos` (release), to the
///    first record to keep, and issue a full fence before overwriting any byte below it.
/// 2. Write the records at `head_pos` in the ring's layout ([`RecordHeader`] with the next
///    sequence numbers, `flags` 0, a timestamp of its choice; payload; zero padding).
/// 3. Publish: store `head_seq`, then `head_pos` with release.
/// 4. Wake-up: a full fence (`SeqCst`), then load `RingControl::waiters`; if it is non-zero,
///    call [`IOC_DOORBELL`] (argument 0). The kernel sets `waiters` and issues a full fence
///    before it looks at `head_pos` one last time and puts a reader to sleep, so either the
///    producer sees `waiters` set or the kernel sees the new head: no wake-up is lost. A tail
///    moved in step 1 needs this step as well (the kernel may have met it moving, see below):
///    the publish that follows serves; a producer that discards and then does not publish
///    soon does step 4 on its own.
///
/// The kernel trusts nothing here. It takes the producer's records when a reader, poller or ioctl
/// needs them (and at every doorbell): it loads `head_pos` once, and accepts the records from its
/// own head up to it only if each is whole and has the next sequence number, `flags` 0 and a length
/// of 1 to `msg_max`; a tail must lie on a whole record, whose sequence number the kernel takes as
/// the tail's (`tail_seq` is for readers), in agreement with the positions. A tail that moves while
/// the kernel checks makes it check again, a shorter stretch each time (up to 8 times); if the tail
/// never holds still that long, the take is postponed: the records arrive with a later take, at the
/// latest at the doorbell of step 4 after that tail move (readers are not woken, and `poll` does
/// not report them, before). A tail at the producer's head but not at the kernel's (all it
/// published discarded, nothing published since) is nothing to take yet. A mapped reader's
/// [`IOC_CONSUME`] beyond the kernel's head moves its cursor to the kernel's head at once and
/// applies the rest as the records are taken (its records count as delivered; a release beyond
/// all the producer will publish stays in force until the reader seeks). A release that meets a
/// record rewritten since it was taken (the producer reused it) stops there, and the reader's
/// next read reports the overrun.
/// Under `block`, the kernel keeps its own writes behind the slowest reader, but it cannot stop
/// a producer that ignores `room_pos` from overwriting records readers have not read: they then
/// see an overrun with an exact count, as under `overwrite`; `block` is lossless with a correct
/// producer only. A reader whose copy the moving tail passed is lapped (to the kernel's head: the lost count may
/// include records it could still have read). Anything else sets [`CTL_PRODUCER_FAULT`]: the kernel
/// keeps the records it accepted and refuses the rest until the producer leaves (doorbells fail
/// with `EIO`). Sequence numbers thus keep their meaning; timestamps are whatever the producer
/// wrote. `write()` and [`IOC_SEND_BATCH`] on a claimed channel fail with `EBUSY`. When the
/// producer leaves, the kernel takes what it had published and carries on from there: it checks
/// the records once more, from the tail (or, if there are more than 16384, from the slowest
/// reader: older ones are dropped), and that every reader's cursor lies on one of them; if that
/// fails, or the producer had discarded everything, the ring starts over empty at the kernel's
/// head, its readers lapped (the records it never took are not counted, and their sequence
/// numbers, which a mapped reader may have seen in this page, are given again). A record it had
/// not published (its owner was killed while writing it) is never seen. One take moves the head
/// by at most 2^62 bytes; a producer that jumps further faults. A record-mode `read()`
/// returns the header the kernel checked; a batch read returns the ring's bytes as they are (a
/// hostile producer may rewrite a later header after the check), so a batch reader checks each
/// header against the bytes returned, as the library does.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProducerControl {
    /// Ring position where the next record goes.
    pub head_pos: u64,
    /// Sequence number the next record gets.
    pub head_seq: u64,
    /// Ring position of the oldest record still in the ring.
    pub tail_pos: u64,
    /// Sequence number of the oldest record still in the ring.
    pub tail_seq: u64,
}

/// `mmap` offset of the producer's writable mapping (see [`ProducerControl`]).
pub const MMAP_PRODUCER_OFFSET: u64 = 1 << 32;

/// `MEMCHAN_IOC_INFO`: the channel's configuration and state.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChannelInfo {
    /// Bytes of this struct the kernel filled in.
    pub size: u32,
    /// [`ABI_VERSION`].
    pub abi_version: u32,
    /// Channel index (0 is `/dev/memchan`).
    pub index: u32,
    /// [`POLICY_BLOCK`] or [`POLICY_OVERWRITE`].
    pub policy: u32,
    /// Ring size in bytes.
    pub ring_bytes: u64,
    /// Largest message in bytes.
    pub msg_max: u32,
    /// Size of the record header ([`RECORD_HEADER_SIZE`]).
    pub record_header: u32,
    /// Sequence number the next message will get.
    pub head_seq: u64,
    /// Sequence number of the oldest message still in the ring (== `head_seq` if none).
    pub oldest_seq: u64,
    /// Open files with read access (subscribers).
    pub subscribers: u32,
    /// Open files with write access.
    pub writers: u32,
    /// Length of the whole mapping (`mmap` must ask for exactly this).
    pub mmap_bytes: u64,
}

/// `MEMCHAN_IOC_STATS`: counters since the channel was created.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChannelStats {
    /// Bytes of this struct the kernel filled in.
    pub size: u32,
    /// Padding; 0.
    pub reserved: u32,
    /// Messages written.
    pub messages: u64,
    /// Payload bytes written.
    pub bytes: u64,
    /// Overruns: times a subscriber fell a whole ring behind (overwrite policy) or was dropped
    /// for stalling writers (block policy with a stall limit); each is reported to it by one
    /// `EPIPE`.
    pub overruns: u64,
    /// Messages lost by subscribers in total (in overruns).
    pub lost: u64,
    /// Writes that had to wait for room (block policy).
    pub blocked_writes: u64,
    /// Messages delivered by `read()`, summed over subscribers.
    pub delivered: u64,
}

/// Reader flag: this file is a subscriber (opened with read access).
pub const READER_SUBSCRIBER: u32 = 1;
/// Reader flag: record mode is on.
pub const READER_RECORD_MODE: u32 = 2;
/// Reader flag: an overrun is pending (the next `read()` fails with `EPIPE`).
pub const READER_OVERRUN: u32 = 4;

/// `MEMCHAN_IOC_READER`: this open file's position in the channel.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReaderState {
    /// Bytes of this struct the kernel filled in.
    pub size: u32,
    /// `READER_*` flags.
    pub flags: u32,
    /// Sequence number of the next message this reader will receive.
    pub cursor_seq: u64,
    /// Ring position of that message.
    pub cursor_pos: u64,
    /// Messages written but not yet received by this reader.
    pub lag: u64,
    /// Messages this reader lost to overwrites, in total.
    pub lost: u64,
    /// Messages lost in the overrun not yet reported by `EPIPE` (0 if none is pending).
    pub pending_lost: u64,
}

/// ioctl "type" byte of memchan (`Documentation/userspace-api/ioctl/ioctl-number.rst`).
pub const IOC_MAGIC: u32 = 0xB8;

/// `_IOC` direction bits: none.
pub const IOC_NONE: u32 = 0;
/// `_IOC` direction bits: userspace writes (kernel reads).
pub const IOC_WRITE: u32 = 1;
/// `_IOC` direction bits: userspace reads (kernel writes).
pub const IOC_READ: u32 = 2;

/// ioctl number (`_IOC_NR`) of [`IOC_INFO`].
pub const NR_INFO: u32 = 1;
/// ioctl number of [`IOC_STATS`].
pub const NR_STATS: u32 = 2;
/// ioctl number of [`IOC_READER`].
pub const NR_READER: u32 = 3;
/// ioctl number of [`IOC_SEEK`].
pub const NR_SEEK: u32 = 4;
/// ioctl number of [`IOC_SET_POLICY`].
pub const NR_SET_POLICY: u32 = 5;
/// ioctl number of [`IOC_RECORD_MODE`].
pub const NR_RECORD_MODE: u32 = 6;
/// ioctl number of [`IOC_CONSUME`].
pub const NR_CONSUME: u32 = 7;
/// ioctl number of [`IOC_SEND_BATCH`].
pub const NR_SEND_BATCH: u32 = 8;
/// ioctl number of [`IOC_PRODUCER`].
pub const NR_PRODUCER: u32 = 9;
/// ioctl number of [`IOC_DOORBELL`].
pub const NR_DOORBELL: u32 = 10;

/// Linux's generic `_IOC` encoding (x86, arm, arm64, riscv, ...): the kernel module asserts at
/// compile time that this matches `kernel::ioctl`, and the C header test matches `<linux/ioctl.h>`.
pub const fn ioc(dir: u32, nr: u32, size: usize) -> u32 {
    (dir << 30) | ((size as u32) << 16) | (IOC_MAGIC << 8) | nr
}

/// Read [`ChannelInfo`].
pub const IOC_INFO: u32 = ioc(IOC_READ, NR_INFO, core::mem::size_of::<ChannelInfo>());
/// Read [`ChannelStats`].
pub const IOC_STATS: u32 = ioc(IOC_READ, NR_STATS, core::mem::size_of::<ChannelStats>());
/// Read this file's [`ReaderState`].
pub const IOC_READER: u32 = ioc(IOC_READ, NR_READER, core::mem::size_of::<ReaderState>());
/// Move this reader's cursor: argument (by value) [`SEEK_OLDEST`] or [`SEEK_NEWEST`].
/// Clears a pending overrun.
pub const IOC_SEEK: u32 = ioc(IOC_NONE, NR_SEEK, 0);
/// Set the channel's overflow policy: argument (by value) [`POLICY_BLOCK`] or
/// [`POLICY_OVERWRITE`]. Needs a file opened for writing by the channel's owner (a named
/// channel's `uid`; a load-time channel has no owner but root, whoever owns its node) or with
/// `CAP_SYS_ADMIN`; `EPERM` otherwise.
pub const IOC_SET_POLICY: u32 = ioc(IOC_NONE, NR_SET_POLICY, 0);
/// Record mode, by value: [`RECORD_MODE_OFF`], [`RECORD_MODE_ON`] or [`RECORD_MODE_BATCH`].
pub const IOC_RECORD_MODE: u32 = ioc(IOC_NONE, NR_RECORD_MODE, 0);
/// `IOC_RECORD_MODE` argument: each `read()` returns one message's payload only.
pub const RECORD_MODE_OFF: u32 = 0;
/// `IOC_RECORD_MODE` argument: each `read()` returns one [`RecordHeader`] followed by the
/// payload.
pub const RECORD_MODE_ON: u32 = 1;
/// `IOC_RECORD_MODE` argument: each `read()` returns as many whole records as are ready and
/// fit in the buffer, up to 16 KiB per call (at least one; it waits for the first as usual),
/// each a [`RecordHeader`], the payload and zero padding to [`RECORD_ALIGN`] — [`record_size`]
/// bytes, as in the ring.
/// A batch stops before a pending overrun, which the next `read()` reports.
pub const RECORD_MODE_BATCH: u32 = 2;
/// Advance this reader's cursor past every message with a sequence number below the `u64`
/// the argument points to (the mmap reader's "release"): frees room in `block` mode. Sequence
/// numbers wrap: "below" is serial-number order (RFC 1982), so a value more than 2^63 ahead of
/// the cursor counts as behind it (a no-op).
pub const IOC_CONSUME: u32 = ioc(IOC_WRITE, NR_CONSUME, core::mem::size_of::<u64>());

/// Sends several messages with one call: the argument points to a [`SendBatch`], whose buffer
/// holds records laid out as batch reads return them ([`RECORD_MODE_BATCH`]): a
/// [`RecordHeader`] (only `len` counts; `seq` and `timestamp_ns` are set by the kernel; `flags`
/// must be 0), the payload, zero padding to [`RECORD_ALIGN`]. Each record becomes one message,
/// in order; a zero-length record stores nothing. Returns the number of bytes of the records
/// sent, always whole records: at least the first, at most [`SEND_BATCH_MAX`] bytes' worth;
/// send the rest again. Errors concern the first record, as for `write()` (`EMSGSIZE`,
/// `EAGAIN`, ...); `EINVAL` for a malformed or truncated first record. Needs write access.
pub const IOC_SEND_BATCH: u32 = ioc(IOC_WRITE, NR_SEND_BATCH, core::mem::size_of::<SendBatch>());

/// Most bytes of records one [`IOC_SEND_BATCH`] call sends.
pub const SEND_BATCH_MAX: u32 = 65536;

/// `MEMCHAN_IOC_SEND_BATCH` argument.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendBatch {
    /// Address of the records.
    pub data: u64,
    /// Length of the records in bytes.
    pub len: u64,
}

/// Claims the channel as this file's producer (see [`ProducerControl`]). Needs a file opened
/// for reading and writing (`EBADF` otherwise) by the channel's owner or with `CAP_SYS_ADMIN`,
/// as [`IOC_SET_POLICY`] does (`EPERM` otherwise: a producer shuts every other writer out);
/// `EBUSY` if another file is the producer (or this one already is).
pub const IOC_PRODUCER: u32 = ioc(IOC_NONE, NR_PRODUCER, 0);
/// The producer's doorbell, argument (by value) the bytes of records it wants room for next
/// (0: none): the kernel takes the records published so far and wakes the readers waiting for
/// them; with a non-zero argument under `block`, it then waits until that many bytes fit
/// (`EAGAIN` for a non-blocking file, `EMSGSIZE` if they never can) and updates
/// [`RingControl::room_pos`]. `EIO` once the producer published something invalid; `EPERM`
/// from a file that is not the producer.
pub const IOC_DOORBELL: u32 = ioc(IOC_NONE, NR_DOORBELL, 0);
