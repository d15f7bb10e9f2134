// SPDX-License-Identifier: GPL-2.0

//! One channel: its ring, the wait queues, and the operations open files perform on it.
//!
//! Locking: one mutex per channel guards the [`Ring`]. It is a sleeping lock, as a pipe's is:
//! a task that finds it held spins only while the holder runs and otherwise sleeps, where a
//! spinlock's waiter would burn its CPU for as long as a preempted holder (or a descheduled
//! virtual CPU) stays off. Under it, `write()` copies the message from userspace straight into
//! the ring (one copy, as a pipe does) with page faults disabled: the user pages are faulted in
//! before the lock is taken, and a page that is gone again by then ends the copy instead of
//! sleeping for it, and the writer faults it in without the lock and tries again (`file.rs`).
//! A slow, FUSE- or userfaultfd-backed buffer thus holds up only its own writer: no user keeps
//! the lock held while it waits for its own memory (nor, through `open`, the misc devices'
//! global mutex). No hold's work grows with the ring: a release (`consume`) walks at most
//! [`ring::CONSUME_STEP`] records per hold and a producer's take [`ring::TAKE_MAX`] (plus as
//! many in tries that met its tail moving, and the releases waiting for them), with the lock
//! dropped between holds; a producer's leaving checks at most 16384 records. `open()` (under
//! the misc devices' global mutex) does not take the lock at all (it takes a seat,
//! [`Seats`]). Allocations happen outside it.
//!
//! Reads hold the lock only to find the next message and, afterwards, to move the cursor: the
//! copy to userspace runs without it, straight from the ring (one copy; the records of a batch
//! read are one contiguous range, as the ring stores them in the batch layout), so readers do
//! not hold up the writer or each other, and a slow user buffer only its own reader. What the
//! copy read is trusted only once the cursor moves ([`Ring::commit_range`]): the cursor is
//! still where the copy started (no other reader of the file took the messages, no seek) and
//! the tail has not passed it. Under `block` the writer cannot reuse unread bytes anyway;
//! under `overwrite` it discards records (raising the tail, under the lock) before reusing
//! their bytes, so a copy that raced with the reuse fails that check and the read starts over
//! (and reports the overrun). This is the protocol mmap readers follow, run by the kernel.
//!
//! Readers asleep in `read` wait on `arrived`, polled files on `readable`, writers of a `block`
//! channel (and polled files) on `writable`; every wait is interruptible and re-checks the state
//! under the lock, and pollers register before checking, so no wake-up is lost. `read()` sleepers
//! have a queue of their own because they are woken one at a time (below): on a queue shared with
//! pollers, an exclusive poll entry (`EPOLLEXCLUSIVE`, an io_uring poll) ahead of a sleeper would
//! take that one wake-up and the sleeper would sleep on. The poll queue is woken whole, exclusive
//! entries included: every subscriber has a cursor of its own, so every one of them has something
//! new. Only subscribers register on it. Sleepers and polled files are counted under the lock
//! ([`Waiting`]), so that a writer (or reader) skips the wake-up when nobody can be waiting for it,
//! the common case of a stream that never runs dry.
//!
//! Readers asleep in `read` are woken in a chain: the writer wakes the first one, and each
//! woken reader wakes the next, as many as were asleep when the records were published
//! ([`Waiting::readers_to_wake`]); while such a chain runs, a writer only extends it, without
//! a wake-up of its own. A writer's cost per message thus stays the same however
//! many subscribers wait, and the woken readers share the work (with two CPUs, they run one
//! after the other anyway). Polled files are not part of the chain: each publish wakes the poll
//! queue, which only sees poll entries. A reader whose sleep a signal ends wakes all the others, as
//! it cannot know whether it took a turn in the chain.
//!
//! A channel can be removed while files still have it open (a named channel's `rmdir`, or a
//! reconfiguration): [`Channel::close`] wakes everyone; afterwards reads return the messages
//! still queued for the file and then end of file, `poll` reports `POLLHUP`, writes fail with
//! `ENODEV`, and mappings stay valid (the pages live as long as the channel, which every open
//! file keeps alive).

use kernel::{
    bindings,
    fs::File,
    iov::IovIterDest,
    mm::virt::VmaNew,
    new_condvar,
    new_mutex,
    new_poll_condvar,
    new_spinlock,
    page::PAGE_SIZE,
    prelude::*,
    sync::{
        atomic::{
            Acquire,
            Atomic,
            Relaxed,
            Release, //
        },
        lock::{
            mutex::MutexBackend,
            Guard, //
        },
        poll::{
            PollCondVar,
            PollTable, //
        },
        Arc,
        CondVar,
        CondVarTimeoutResult,
        Mutex,
        SpinLock, //
    },
    time::{
        msecs_to_jiffies,
        ClockSource,
        Monotonic, //
    }, //
};

use crate::{
    abi,
    memory::RingSpan,
    pages::{
        PageRing,
        Pages, //
    },
    ring::{
        self,
        record_in,
        Cursor,
        Next,
        Policy,
        Ring,
        Waiting, //
    },
    seats::Seats,
};

/// Validated parameters of a channel.
#[derive(Clone, Copy)]
pub(crate) struct ChannelConfig {
    /// Channel index (0 is `/dev/memchan`).
    pub(crate) index: u32,
    /// Ring size in bytes (a power of two, a multiple of the page size).
    pub(crate) ring_bytes: u64,
    /// Largest message.
    pub(crate) msg_max: u32,
    /// Initial overflow policy.
    pub(crate) policy: Policy,
    /// Subscriber limit.
    pub(crate) max_readers: usize,
    /// Initial stall limit in milliseconds (0: none): see [`Channel::wait_for_room`].
    pub(crate) stall_ms: u32,
    /// Initial limit of subscribers per user (0: none).
    pub(crate) readers_per_user: u32,
}

/// The sizes of a channel as users give them (module parameters, configfs attributes).
#[derive(Clone, Copy)]
pub(crate) struct Sizes {
    /// Ring size in KiB: a power of two from [`abi::RING_KIB_MIN`] to [`abi::RING_KIB_MAX`],
    /// at least a page.
    pub(crate) ring_kib: u32,
    /// Largest message: at least 1, and its record must fit in the ring.
    pub(crate) msg_max: u32,
    /// Subscriber limit: 1 to [`abi::MAX_READERS_MAX`].
    pub(crate) max_readers: u32,
}

impl ChannelConfig {
    /// The configuration of channel 0 with `sizes` (checked: logs the reason and gives
    /// `EINVAL` for a bad one), `policy`, and the limits `stall_ms` and `readers_per_user`.
    pub(crate) fn checked(
        sizes: Sizes,
        policy: Policy,
        stall_ms: u32,
        readers_per_user: u32,
    ) -> Result<Self> {
        let Sizes {
            ring_kib,
            msg_max,
            max_readers,
        } = sizes;
        let ring_bytes = u64::from(ring_kib) * 1024;
        if !ring_kib.is_power_of_two()
            || !(abi::RING_KIB_MIN..=abi::RING_KIB_MAX).contains(&ring_kib)
            || ring_bytes < PAGE_SIZE as u64
        {
            pr_err!(
                "ring_kib={ring_kib}: must be a power of two from {} to {} (and at least a page)\n",
                abi::RING_KIB_MIN,
                abi::RING_KIB_MAX
            );
            return Err(EINVAL);
        }
        if msg_max == 0 || abi::record_size(msg_max) > ring_bytes {
            pr_err!("msg_max={msg_max}: must be at least 1 and fit in the {ring_kib} KiB ring\n");
            return Err(EINVAL);
        }
        if max_readers == 0 || max_readers > abi::MAX_READERS_MAX {
            pr_err!(
                "max_readers={max_readers}: must be 1 to {}\n",
                abi::MAX_READERS_MAX
            );
            return Err(EINVAL);
        }
        Ok(Self {
            index: 0,
            ring_bytes,
            msg_max,
            policy,
            max_readers: max_readers as usize,
            stall_ms,
            readers_per_user,
        })
    }

    /// The sizes of this configuration, as [`ChannelConfig::checked`] takes them.
    pub(crate) fn sizes(&self) -> Result<Sizes> {
        Ok(Sizes {
            ring_kib: u32::try_from(self.ring_bytes / 1024).map_err(|_| EINVAL)?,
            msg_max: self.msg_max,
            max_readers: u32::try_from(self.max_readers).map_err(|_| EINVAL)?,
        })
    }
}

/// What a `read()` returns of a message: the file's record mode.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// The payload alone.
    Payload,
    /// Header and payload ([`abi::RECORD_MODE_ON`]).
    Record,
    /// As many whole records (header, payload, padding: the ring's own layout) as are ready
    /// and fit, at least one and at most this many bytes unless one record is larger
    /// ([`abi::RECORD_MODE_BATCH`]).
    Batch(usize),
}

/// One channel.
#[pin_data]
pub(crate) struct Channel {
    /// Configuration it was created with.
    cfg: ChannelConfig,
    /// The ring's pages (for `mmap`; the ring reads and writes them through its storage).
    pages: Pages,
    /// The ring.
    #[pin]
    ring: Mutex<Ring<PageRing>>,
    /// Readers asleep in `read` wait here for messages (exclusively, woken in a chain).
    #[pin]
    arrived: CondVar,
    /// Polled files wait here for messages.
    #[pin]
    readable: PollCondVar,
    /// Writers and pollers of a `block` channel wait here for room.
    #[pin]
    writable: PollCondVar,
    /// Set (under the ring lock) once the channel has been removed; see [`Channel::close`].
    closed: Atomic<u32>,
    /// Who holds the channel open: subscriber seats and writers, taken at `open()` without
    /// the ring lock.
    #[pin]
    seats: SpinLock<Seats>,
    /// Seats were taken that the ring has not activated yet (set under the seats' lock, read
    /// at every ring lock hold; see [`Channel::ring_lock`]).
    joining: Atomic<u32>,
    /// Under `block`, the longest a writer waits for room before the slowest readers are
    /// dropped to an overrun, in milliseconds (0: as long as it takes).
    stall_ms: Atomic<u32>,
    /// Most subscribers one user may have (0: no limit but `max_readers`).
    readers_per_user: Atomic<u32>,
    /// The policy (`abi::POLICY_*`), a copy of the ring's for readers that must not take the
    /// ring lock (sysfs); stored under the lock.
    policy_now: Atomic<u32>,
}

/// Whom to wake after records were published: see [`Channel::wake_readers`].
#[derive(Clone, Copy, Default)]
struct ReadWake {
    /// The first `read()` sleeper (the chain's start).
    sleeper: bool,
    /// The polled files.
    pollers: bool,
}

/// The ring, locked.
type RingGuard<'a> = Guard<'a, Ring<PageRing>, MutexBackend>;

/// Whether a writer may be waiting for room: one asleep in `write`, or a polled file.
fn writers_waiting(ring: &Ring<PageRing>) -> bool {
    let w: Waiting = ring.waiting;
    w.writers > 0 || w.pollers > 0
}

/// What a [`Channel::read`] delivered.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivered {
    /// This many bytes (never 0: no message is empty).
    Bytes(usize),
    /// Nothing, ever again: the channel was removed and nothing is left for the reader (a
    /// `read()` returns 0, end of file).
    End,
}

/// `CLOCK_MONOTONIC` now, in nanoseconds.
fn now_ns() -> u64 {
    u64::try_from(<Monotonic as ClockSource>::ktime_get()).unwrap_or(0)
}

impl Channel {
    /// Creates a channel with a zeroed ring.
    pub(crate) fn new(cfg: ChannelConfig) -> Result<Arc<Self>> {
        let (pages, store) = Pages::new(cfg.ring_bytes)?;
        let seats = Seats::new(cfg.max_readers)?;
        let ring = Ring::new(
            store,
            cfg.ring_bytes,
            cfg.msg_max,
            cfg.policy,
            cfg.max_readers,
        )?;
        Arc::pin_init(
            try_pin_init!(Self {
                cfg,
                pages,
                ring <- new_mutex!(ring, "memchan::ring"),
                arrived <- new_condvar!("memchan::arrived"),
                readable <- new_poll_condvar!("memchan::readable"),
                writable <- new_poll_condvar!("memchan::writable"),
                closed: Atomic::new(0),
                seats <- new_spinlock!(seats, "memchan::seats"),
                joining: Atomic::new(0),
                stall_ms: Atomic::new(cfg.stall_ms),
                readers_per_user: Atomic::new(cfg.readers_per_user),
                policy_now: Atomic::new(cfg.policy.to_abi()),
            }),
            GFP_KERNEL,
        )
    }

    /// Locks the ring, after activating the subscribers that opened since the last hold
    /// ([`Seats`]): every lock hold goes through here.
    fn ring_lock(&self) -> RingGuard<'_> {
        let mut ring = self.ring.lock();
        self.seat_joined(&mut ring);
        ring
    }

    /// Activates the subscribers that opened since the ring last looked, at the head: at the
    /// start of every lock hold, [`Channel::ring_lock`]'s and those a wait on a condition
    /// variable begins when it takes the lock back.
    fn seat_joined(&self, ring: &mut RingGuard<'_>) {
        if self.joining.load(Acquire) != 0 {
            let mut seats = self.seats.lock();
            self.joining.store(0, Relaxed);
            seats.take_joined(|i| {
                // Free in the ring: the seat was free until the ring saw it taken.
                let _ = ring.subscribe_at(i);
            });
        }
    }

    /// Locks the ring, after taking what its producer (if it has one) published since, and
    /// waking the readers for it ([`Ring::take_produced`]): every operation sees the records
    /// published before it began, up to [`ring::TAKE_MAX`] of them (the rest with the next
    /// operation, or [`Channel::lock_all`]).
    fn lock(&self) -> RingGuard<'_> {
        let mut ring = self.ring_lock();
        self.take_produced(&mut ring);
        ring
    }

    /// [`Channel::lock`], taking everything the producer published: hold after hold (the lock
    /// dropped between them), up to a whole ring's worth (what a correct producer may have
    /// published since the last take); beyond that (a producer publishing as fast as it is
    /// taken), the rest arrives with a later take. For its doorbell, its leaving and the
    /// channel's removal; other operations take one hold's worth ([`ring::TAKE_MAX`]) each,
    /// so that a producer publishing all along costs each of them a bounded amount, and a
    /// reader that finds nothing takes again before it sleeps.
    fn lock_all(&self) -> RingGuard<'_> {
        let mut ring = self.lock();
        let mut holds = self.cfg.ring_bytes / abi::record_size(1) / ring::TAKE_MAX + 2;
        while ring.take_more() && holds > 0 && !self.is_closed() {
            holds -= 1;
            drop(ring);
            ring = self.lock();
        }
        ring
    }

    /// Takes the producer's new records, if any, and wakes the readers for them (under the
    /// lock: rare, and the woken wait for it only briefly), and the producer if releases that
    /// waited for the records made room. Returns whether any arrived.
    fn take_produced(&self, ring: &mut RingGuard<'_>) -> bool {
        // Once removed, nothing more arrives (`close` took what there was): a reader that got
        // end of file never gets more.
        if !ring.produced() || self.is_closed() {
            return false;
        }
        let took = self.take_for_all(ring);
        if took {
            let wake = Self::wake_readers(ring);
            self.notify_readers(wake);
        }
        if ring.take_released() {
            self.writable.notify_all();
        }
        took
    }

    /// [`Ring::take_produced`], for every subscriber whose `open()` returned before the records
    /// were published: the producer's head is loaded (acquire) before the seats are looked at
    /// again, so a record published after such an `open()` (which took its seat, then
    /// returned) has its subscriber activated before the take can commit it.
    fn take_for_all(&self, ring: &mut RingGuard<'_>) -> bool {
        ring.look_at_producer();
        self.seat_joined(ring);
        ring.take_produced()
    }

    /// Tells the producer whether any reader waits (asleep in `read`, or a polled file).
    fn publish_waiters(ring: &mut RingGuard<'_>) {
        let w = ring.waiting;
        let _ = ring.publish_waiters(w.readers > 0 || w.pollers > 0);
    }

    /// Marks the channel removed and wakes every waiter (see the module docs for what open
    /// files see afterwards).
    pub(crate) fn close(&self) {
        // Set under the lock: a waiter checks the flag under the lock before it sleeps, and the
        // condition variables release the lock only once the waiter is queued. What a producer
        // published until now is taken first; nothing after.
        let ring = self.lock_all();
        let mut seats = self.seats.lock();
        self.closed.store(1, Relaxed);
        // No file attaches after it.
        seats.close();
        drop(seats);
        drop(ring);
        self.arrived.notify_all();
        self.readable.notify_all();
        self.writable.notify_all();
    }

    /// Sleeps on `arrived` (the lock released meanwhile), counted in [`Waiting::readers`],
    /// and passes the wake-up on (see the module docs). True if a signal ended the wait.
    ///
    /// With a producer, the reader first sets the control page's `waiters` (a full fence
    /// after it) and looks at the producer's head once more: a producer that published before
    /// the fence is seen here, one that published after it sees `waiters` and rings the
    /// doorbell, which takes the lock and wakes the sleeper (see `abi::ProducerControl`).
    fn sleep_readable(&self, ring: &mut RingGuard<'_>) -> bool {
        ring.waiting.readers = ring.waiting.readers.wrapping_add(1);
        if ring.produced() {
            Self::publish_waiters(ring);
            let took = self.take_for_all(ring);
            if ring.take_released() {
                self.writable.notify_all();
            }
            if took {
                ring.waiting.readers = ring.waiting.readers.wrapping_sub(1);
                Self::publish_waiters(ring);
                let wake = Self::wake_readers(ring);
                self.notify_readers(wake);
                return false;
            }
        }
        // A take postponed (the producer's tail moving) needs no look after a while: the
        // producer that moved its tail rings the doorbell after it, seeing `waiters` set.
        let signal = self.arrived.wait_interruptible(ring);
        self.seat_joined(ring);
        ring.waiting.readers = ring.waiting.readers.wrapping_sub(1);
        Self::publish_waiters(ring);
        let w = &mut ring.waiting;
        if signal {
            // Woken by the signal, or by the chain as well: wake everyone rather than risk
            // ending the chain here.
            w.readers_to_wake = 0;
            self.arrived.notify_all();
        } else if w.readers_to_wake > 0 {
            w.readers_to_wake = w.readers_to_wake.wrapping_sub(1);
            if w.readers_to_wake > 0 {
                self.arrived.notify_one();
            }
        }
        signal
    }

    /// After records were published (under the lock): starts the chain of reader wake-ups
    /// if anyone may be waiting. Returns whom to wake once the lock is released
    /// ([`Channel::notify_readers`]).
    fn wake_readers(ring: &mut RingGuard<'_>) -> ReadWake {
        let w = &mut ring.waiting;
        // While a chain runs (`readers_to_wake > 0`), a woken reader is on its way and will
        // wake the next one: extending the chain to every current sleeper is enough, without
        // a wake-up of its own. (`readers_to_wake` never exceeds the woken-but-not-yet-running
        // readers plus the sleepers, so the chain reaches every one of them.)
        let chain_running = w.readers_to_wake > 0;
        w.readers_to_wake = w.readers;
        ReadWake {
            sleeper: w.readers > 0 && !chain_running,
            pollers: w.pollers > 0,
        }
    }

    /// Wakes what [`Channel::wake_readers`] asked for (without the ring lock): the first
    /// sleeper of the chain, and the polled files.
    fn notify_readers(&self, wake: ReadWake) {
        if wake.sleeper {
            self.arrived.notify_one();
        }
        if wake.pollers {
            // Every polled subscriber needs this wake-up, `EPOLLEXCLUSIVE` ones included:
            // each has a cursor of its own (unlike a pipe's readers, who share one stream),
            // and a wake-up with one exclusive slot would always go to the first of them.
            self.readable.notify_all();
        }
    }

    /// A writer of `rsize` bytes of records found no room under `block`: with a stall limit
    /// set, checks the channel's stall clock ([`Ring::stalled_since`], started by the first
    /// writer that found no room, stopped by the next record published). Once it has run for
    /// the limit, drops the readers that hold the ring back to an overrun
    /// ([`Ring::drop_stalled`]) and returns `Some(0)`: try again now. Otherwise the
    /// milliseconds left (`Some`), or `None` without a limit. The clock is the channel's, not
    /// the writer's: restarts after signals, later records of a batch and non-blocking
    /// writers all see the same one, so writers are held up at most the limit in all.
    fn stall_left(&self, ring: &mut RingGuard<'_>, rsize: u64) -> Result<Option<u32>> {
        let stall_ms = self.stall_ms.load(Relaxed);
        if stall_ms == 0 {
            return Ok(None);
        }
        let limit = u64::from(stall_ms).saturating_mul(1_000_000);
        let now = now_ns();
        let start = *ring.stalled_since.get_or_insert(now);
        let waited = now.saturating_sub(start);
        if waited >= limit {
            ring.drop_stalled(rsize)?;
            return Ok(Some(0));
        }
        Ok(Some(
            u32::try_from(limit.wrapping_sub(waited).div_ceil(1_000_000)).unwrap_or(u32::MAX),
        ))
    }

    /// A non-blocking writer of `rsize` bytes found no room under `block`: `Ok` to try again
    /// now (the stall limit ran out and the laggards were dropped), else `EAGAIN`.
    fn retry_nonblocking(&self, ring: &mut RingGuard<'_>, rsize: u64) -> Result {
        match self.stall_left(ring, rsize)? {
            Some(0) => Ok(()),
            _ => Err(EAGAIN),
        }
    }

    /// A blocking writer of `rsize` bytes found no room under `block`: sleeps on `writable`
    /// (the lock released meanwhile), counted in [`Waiting::writers`], until woken or until
    /// the stall limit runs out ([`Channel::stall_left`]); the caller then tries again.
    /// `ERESTARTSYS` if a signal ended the wait. A reader that does not read (or keeps seeking
    /// back, or never consumes its mapping) thus stalls writers for a bounded time.
    fn wait_for_room(&self, ring: &mut RingGuard<'_>, rsize: u64) -> Result {
        let left = self.stall_left(ring, rsize)?;
        if left == Some(0) {
            return Ok(());
        }
        ring.waiting.writers = ring.waiting.writers.wrapping_add(1);
        let signal = match left {
            None => self.writable.wait_interruptible(ring),
            Some(ms) => matches!(
                self.writable
                    .wait_interruptible_timeout(ring, msecs_to_jiffies(ms)),
                CondVarTimeoutResult::Signal { .. }
            ),
        };
        // The lock is taken back: whoever opened meanwhile receives what this writer writes.
        self.seat_joined(ring);
        ring.waiting.writers = ring.waiting.writers.wrapping_sub(1);
        if signal {
            return Err(ERESTARTSYS);
        }
        Ok(())
    }

    /// Sets the stall limit (configfs `stall_ms`).
    pub(crate) fn set_stall_ms(&self, ms: u32) {
        // Under the lock, as `close` sets its flag: a writer reads the limit under the lock
        // before it sleeps, so it either sees the new one or is queued for this wake-up.
        let ring = self.ring_lock();
        self.stall_ms.store(ms, Relaxed);
        drop(ring);
        // Writers waiting without a limit start counting now.
        self.writable.notify_all();
    }

    /// Sets the limit of subscribers per user (configfs `readers_per_user`); subscribers
    /// already there stay.
    pub(crate) fn set_readers_per_user(&self, n: u32) {
        self.readers_per_user.store(n, Relaxed);
    }

    /// Whether [`Channel::close`] ran.
    fn is_closed(&self) -> bool {
        self.closed.load(Relaxed) != 0
    }

    /// Whether no file has the channel open (no subscriber and no writer).
    pub(crate) fn is_idle(&self) -> bool {
        self.seats.lock().idle()
    }

    /// Largest message.
    pub(crate) fn msg_max(&self) -> u32 {
        self.cfg.msg_max
    }

    /// Subscriber limit.
    pub(crate) fn max_readers(&self) -> usize {
        self.cfg.max_readers
    }

    /// Registers a file that user `uid` opens: a subscriber slot if it reads (`ENOSPC` if
    /// none is free, or the user has its share already), a writer count if it writes.
    /// `ENODEV` once the channel is closed (an open racing the removal of its node).
    ///
    /// Runs in `open()`, under the misc devices' global mutex: it takes only the seats'
    /// spinlock, never the ring lock (see [`Seats`]); the ring activates the slot at the start
    /// of its next lock hold, positioned at the head then.
    pub(crate) fn attach(&self, read: bool, write: bool, uid: u32) -> Result<Option<usize>> {
        let per_user = self.readers_per_user.load(Relaxed) as usize;
        let mut seats = self.seats.lock();
        let slot = seats.take(read, write, uid, per_user)?;
        if seats.any_joined() {
            self.joining.store(1, Release);
        }
        Ok(slot)
    }

    /// Unregisters a closing file (`polled` if it was ever polled, see [`Channel::poll`]).
    pub(crate) fn detach(&self, slot: Option<usize>, write: bool, polled: bool) {
        // The ring lets go of the slot first (activating it first if it never was), then the
        // seat is free for the next opener.
        let mut ring = self.ring_lock();
        if let Some(i) = slot {
            ring.unsubscribe(i);
        }
        if polled {
            ring.waiting.pollers = ring.waiting.pollers.wrapping_sub(1);
            Self::publish_waiters(&mut ring);
        }
        drop(ring);
        self.seats.lock().give_back(slot, write);
        // A slow subscriber leaving may make room for blocked writers.
        self.writable.notify_all();
    }

    /// Appends one message of `len` bytes, which `fill` copies straight into the ring (see
    /// [`Ring::push_with`]; it runs under the ring lock, so it must not sleep: a user copy runs
    /// with page faults disabled and fails with `EFAULT`, publishing nothing). In `block` mode
    /// waits for room (unless `nonblock`: `EAGAIN`). A signal ends the wait with `ERESTARTSYS`.
    pub(crate) fn send(
        &self,
        len: u32,
        fill: &mut dyn FnMut(&mut RingSpan<'_>) -> Result,
        nonblock: bool,
    ) -> Result<u64> {
        let mut ring = self.ring_lock();
        let mut counted = false;
        let seq = loop {
            if self.is_closed() {
                return Err(ENODEV);
            }
            if ring.produced() {
                return Err(EBUSY);
            }
            match ring.push_with(len, now_ns(), fill) {
                Err(e) if e == EAGAIN => {
                    if nonblock {
                        self.retry_nonblocking(&mut ring, abi::record_size(len))?;
                        continue;
                    }
                    if !counted {
                        counted = true;
                        ring.stats.blocked_writes = ring.stats.blocked_writes.wrapping_add(1);
                    }
                    self.wait_for_room(&mut ring, abi::record_size(len))?;
                }
                other => break other?,
            }
        };
        let wake = Self::wake_readers(&mut ring);
        drop(ring);
        self.notify_readers(wake);
        Ok(seq)
    }

    /// Appends the records in `buf` (the [`abi::IOC_SEND_BATCH`] layout) as messages, in
    /// order, with one wake-up of the readers. Returns the bytes of the whole records sent.
    /// Errors only for the first record (as [`Channel::send`], or `EINVAL` if it is malformed
    /// or truncated); a later one that cannot be sent (malformed, truncated, too long, no room
    /// without waiting, a signal while waiting) ends the batch. `buf` (the file's own copy) is
    /// at most [`abi::SEND_BATCH_MAX`] bytes, which bounds the work done under the lock.
    ///
    /// The leading run of well-formed, non-empty records, checked and padded outside the lock
    /// ([`batch_run`]), goes into the ring in one copy under one short hold of the lock
    /// ([`Ring::push_records`]); whatever that cannot take (an empty or malformed record, a
    /// ring without room for the whole run yet) goes record by record
    /// ([`Channel::send_records`]).
    pub(crate) fn send_batch(&self, buf: &mut [u8], nonblock: bool) -> Result<usize> {
        let run = ring::batch_run(buf, self.cfg.msg_max);
        let mut at = 0usize;
        if run > 0 {
            let mut ring = self.ring_lock();
            if self.is_closed() {
                return Err(ENODEV);
            }
            if ring.produced() {
                return Err(EBUSY);
            }
            match ring.push_records(buf.get_mut(..run).ok_or(EINVAL)?, now_ns()) {
                Ok(()) => {
                    at = run;
                    let wake = Self::wake_readers(&mut ring);
                    drop(ring);
                    self.notify_readers(wake);
                }
                Err(e) if e == EAGAIN || e == EMSGSIZE => {}
                Err(e) => return Err(e),
            }
        }
        if at >= buf.len() {
            return Ok(at);
        }
        self.send_records(buf, at, nonblock)
    }

    /// [`Channel::send_batch`] record by record, from offset `start` of `buf` (0: nothing sent
    /// yet), under one hold of the ring lock (released only while waiting for room).
    fn send_records(&self, buf: &mut [u8], start: usize, nonblock: bool) -> Result<usize> {
        let mut ring = self.ring_lock();
        let mut at = start;
        let mut counted = false;
        let result = loop {
            if at >= buf.len() {
                break Ok(at);
            }
            let first = at == 0;
            // A record: header (only `len` counts, `flags` must be 0), payload, padding.
            let whole = record_in(buf, at)
                .and_then(|(h, size)| Some((h.len, size, buf.get_mut(at..at.checked_add(size)?)?)));
            let Some((len, size, rec)) = whole else {
                break if first { Err(EINVAL) } else { Ok(at) };
            };
            if self.is_closed() {
                break if first { Err(ENODEV) } else { Ok(at) };
            }
            if ring.produced() {
                break if first { Err(EBUSY) } else { Ok(at) };
            }
            if len == 0 {
                at = at.wrapping_add(size);
                continue;
            }
            match ring.push_record(rec, len, now_ns()) {
                Ok(_) => at = at.wrapping_add(size),
                Err(e) if e == EAGAIN && nonblock => {
                    if let Err(e) = self.retry_nonblocking(&mut ring, abi::record_size(len)) {
                        break if first { Err(e) } else { Ok(at) };
                    }
                }
                Err(e) if e == EAGAIN => {
                    if !counted {
                        counted = true;
                        ring.stats.blocked_writes = ring.stats.blocked_writes.wrapping_add(1);
                    }
                    // Readers must hear of what is already in before the wait can end.
                    if !first {
                        let wake = Self::wake_readers(&mut ring);
                        self.notify_readers(wake);
                    }
                    if let Err(e) = self.wait_for_room(&mut ring, abi::record_size(len)) {
                        break if first { Err(e) } else { Ok(at) };
                    }
                }
                Err(e) => break if first { Err(e) } else { Ok(at) },
            }
        };
        let wake = if result.as_ref().is_ok_and(|n| *n > start) {
            Self::wake_readers(&mut ring)
        } else {
            ReadWake::default()
        };
        drop(ring);
        self.notify_readers(wake);
        result
    }

    /// Waits, under `ring` (released while sleeping), until subscriber `slot` has a record and
    /// returns its header and position; `None` once the channel is removed and nothing is
    /// left. `EPIPE` (once, clearing it) for a pending overrun; `EAGAIN` if `nonblock`;
    /// `ERESTARTSYS` on a signal.
    fn wait_next(
        &self,
        ring: &mut RingGuard<'_>,
        slot: usize,
        nonblock: bool,
    ) -> Result<Option<(abi::RecordHeader, u64)>> {
        loop {
            match ring.next(slot)? {
                Next::Record(h, pos) => return Ok(Some((h, pos))),
                Next::Overrun => {
                    ring.clear_overrun(slot)?;
                    return Err(EPIPE);
                }
                Next::Empty if self.is_closed() => return Ok(None),
                Next::Empty if nonblock => return Err(EAGAIN),
                Next::Empty => {
                    if self.sleep_readable(ring) {
                        return Err(ERESTARTSYS);
                    }
                }
            }
        }
    }

    /// `read()` for subscriber `slot`: waits until it has a message (or an overrun to report),
    /// copies what `shape` asks for of it to `iov` and moves the cursor past it. `EAGAIN` if
    /// `nonblock` and there is none; `EPIPE` (once) after an overrun; `EMSGSIZE` if it needs
    /// more than `iov` holds (the message stays); [`Delivered::End`] once the channel is removed
    /// and nothing is left for the reader; `EFAULT` if the user buffer faults (the message stays,
    /// unless the ring overwrote it meanwhile).
    ///
    /// The lock is held only to find the message and to move the cursor: the copy to
    /// userspace runs without it, straight from the ring (see the module docs), so a reader's
    /// copy never holds up the writer or the other readers. The cursor moves only if it is
    /// still where the copy started and nothing copied was discarded meanwhile
    /// ([`Ring::commit_range`]); otherwise the read starts over (another reader of the same
    /// file took the message, a seek moved the cursor, the ring lapped it, which the next
    /// round reports, or a producer claimed or left the ring).
    pub(crate) fn read(
        &self,
        slot: usize,
        shape: Shape,
        iov: &mut IovIterDest<'_>,
        nonblock: bool,
    ) -> Result<Delivered> {
        let hsize = abi::RECORD_HEADER_SIZE as usize;
        loop {
            let mut ring = self.lock();
            let Some((h, pos)) = self.wait_next(&mut ring, slot, nonblock)? else {
                return Ok(Delivered::End);
            };
            let (head, claims) = (ring.head(), ring.claims());
            drop(ring);
            let from = Cursor { pos, seq: h.seq };
            let len = h.len as usize;
            let room = iov.len();
            // A record's header is the one checked here, never the ring's bytes again: a
            // producer may rewrite those after the check (its copy would not match the bytes).
            let header = h.to_bytes();
            let (prefix, start, bytes, to, count) = match shape {
                Shape::Payload | Shape::Record => {
                    let prefix = if shape == Shape::Record {
                        &header[..]
                    } else {
                        &[][..]
                    };
                    let bytes = len.checked_add(prefix.len()).ok_or(EINVAL)?;
                    if bytes > room {
                        return Err(EMSGSIZE);
                    }
                    let start = pos.wrapping_add(hsize as u64);
                    (prefix, start, bytes, from.after(h.len), 1)
                }
                Shape::Batch(cap) => {
                    let limit = room.min(cap) & !(abi::RECORD_ALIGN as usize - 1);
                    let (to, count) = self.batch_end(from, h.len, head, limit as u64)?;
                    (&[][..], pos, to.pos.wrapping_sub(pos) as usize, to, count)
                }
            };
            let confirm = |copied: usize| -> Result<bool> {
                if copied != bytes {
                    return Ok(false);
                }
                let mut ring = self.lock();
                let moved = ring.commit_range(slot, from, to, count, claims)?;
                let wake = moved && ring.policy() == Policy::Block && writers_waiting(&ring);
                drop(ring);
                if wake {
                    self.writable.notify_all();
                }
                Ok(moved)
            };
            let ring_bytes = bytes.wrapping_sub(prefix.len());
            match self
                .pages
                .copy_to_user(start, ring_bytes, iov, prefix, confirm)?
            {
                (_, true) => return Ok(Delivered::Bytes(bytes)),
                (copied, false) if copied != bytes => return Err(EFAULT),
                // Someone or something moved the cursor, or a producer came or went,
                // meanwhile: start over (each round finds the cursor moved, an overrun or the
                // claim as it is now, so this ends unless the others keep racing it; a signal
                // ends it too).
                _ => {
                    if kernel::current!().signal_pending() {
                        return Err(ERESTARTSYS);
                    }
                }
            }
        }
    }

    /// Batch record mode: where a batch that starts with the record at `from` (whose payload
    /// is `len` bytes) ends: the whole records up to `head` that fit in `limit` bytes. Reads
    /// the later headers without the lock ([`Pages::peek_header`]): a header that is not the
    /// expected one (the writer is reusing its bytes) ends the batch, and the caller's commit
    /// check catches the rest. `EMSGSIZE` if not even the first record fits. Returns the
    /// cursor after the batch and the records in it.
    fn batch_end(&self, from: Cursor, len: u32, head: Cursor, limit: u64) -> Result<(Cursor, u64)> {
        let mut to = from.after(len);
        if to.pos.wrapping_sub(from.pos) > limit {
            return Err(EMSGSIZE);
        }
        let mut count = 1u64;
        while ring::ahead(to.seq, head.seq) < 0 {
            let h = self.pages.peek_header(to.pos)?;
            if h.seq != to.seq || h.len == 0 || h.len > self.cfg.msg_max || h.flags != 0 {
                break;
            }
            let next = to.after(h.len);
            if next.pos.wrapping_sub(from.pos) > limit || ring::ahead(next.pos, head.pos) > 0 {
                break;
            }
            to = next;
            count = count.wrapping_add(1);
        }
        Ok((to, count))
    }

    /// Size the buffer of a `read()` of `shape` needs for the next message (0 if none):
    /// `FIONREAD`. In batch mode that is the whole record with its padding, which a batch read
    /// returns (and needs room for).
    pub(crate) fn next_size(&self, slot: usize, shape: Shape) -> Result<u64> {
        let mut ring = self.lock();
        let Next::Record(h, _) = ring.next(slot)? else {
            return Ok(0);
        };
        Ok(match shape {
            Shape::Payload => u64::from(h.len),
            Shape::Record => u64::from(h.len).wrapping_add(u64::from(abi::RECORD_HEADER_SIZE)),
            Shape::Batch(_) => abi::record_size(h.len),
        })
    }

    /// `poll` mask for an open file (`slot` if it subscribes). `first` on the file's first
    /// poll: from then on until it closes (`detach` with `polled`) it counts as a waiter
    /// ([`Waiting::pollers`]), as an epoll registration outlives the call.
    pub(crate) fn poll(
        &self,
        file: &File,
        table: PollTable<'_>,
        slot: Option<usize>,
        first: bool,
    ) -> u32 {
        if slot.is_some() {
            table.register_wait(file, &self.readable);
        }
        table.register_wait(file, &self.writable);
        let mut ring = self.lock();
        if first {
            ring.waiting.pollers = ring.waiting.pollers.wrapping_add(1);
        }
        if ring.produced() {
            // As `sleep_readable`: `waiters` set, then one more look at the producer's head.
            Self::publish_waiters(&mut ring);
            self.take_produced(&mut ring);
        }
        let mut mask = 0;
        if self.is_closed() {
            mask |= bindings::POLLHUP;
        } else if !ring.would_block(self.cfg.msg_max) {
            mask |= bindings::POLLOUT | bindings::POLLWRNORM;
        }
        if let Some(i) = slot {
            match ring.next(i) {
                Ok(Next::Record(..)) => mask |= bindings::POLLIN | bindings::POLLRDNORM,
                Ok(Next::Overrun) => mask |= bindings::POLLERR | bindings::POLLPRI,
                Ok(Next::Empty) => {}
                Err(_) => mask |= bindings::POLLERR,
            }
        }
        mask
    }

    /// `MEMCHAN_IOC_INFO`.
    pub(crate) fn info(&self) -> abi::ChannelInfo {
        let ring = self.lock();
        abi::ChannelInfo {
            size: core::mem::size_of::<abi::ChannelInfo>() as u32,
            abi_version: abi::ABI_VERSION,
            index: self.cfg.index,
            policy: ring.policy().to_abi(),
            ring_bytes: ring.size(),
            msg_max: ring.msg_max(),
            record_header: abi::RECORD_HEADER_SIZE,
            head_seq: ring.head().seq,
            oldest_seq: ring.tail().seq,
            subscribers: ring.subscribers(),
            writers: self.seats.lock().writers(),
            mmap_bytes: self.pages.mmap_bytes(),
        }
    }

    /// `MEMCHAN_IOC_STATS`.
    pub(crate) fn stats(&self) -> abi::ChannelStats {
        let s = self.lock().stats;
        abi::ChannelStats {
            size: core::mem::size_of::<abi::ChannelStats>() as u32,
            reserved: 0,
            messages: s.messages,
            bytes: s.bytes,
            overruns: s.overruns,
            lost: s.lost,
            blocked_writes: s.blocked_writes,
            delivered: s.delivered,
        }
    }

    /// `MEMCHAN_IOC_READER` (without the record-mode flag, which the file adds).
    pub(crate) fn reader_state(&self, slot: usize) -> Result<abi::ReaderState> {
        let mut st = self.lock().reader_state(slot)?;
        st.size = core::mem::size_of::<abi::ReaderState>() as u32;
        Ok(st)
    }

    /// For the producer's fdinfo: (faulted, the take just made was postponed), see
    /// [`Ring::take_postponed`].
    pub(crate) fn producer_state(&self) -> (bool, bool) {
        let ring = self.lock();
        (ring.faulted(), ring.take_postponed())
    }

    /// `MEMCHAN_IOC_SEEK`. Wakes only whom the move can unblock: a move back, or a cleared
    /// overrun (`POLLERR` becomes `POLLIN` for an edge-triggered poller), gives the file's
    /// readers records to read (its sleepers and pollers are on the shared queues, woken if
    /// anyone waits there); a move forward may give writers of a `block` channel room.
    pub(crate) fn seek(&self, slot: usize, whence: u32) -> Result {
        let mut ring = self.lock();
        let before = ring.reader_state(slot)?;
        ring.seek(slot, whence)?;
        let after = ring.reader_state(slot)?.cursor_seq;
        let moved = ring::ahead(after, before.cursor_seq);
        let cleared = before.flags & abi::READER_OVERRUN != 0;
        let w = ring.waiting;
        let readers = (moved < 0 || cleared) && (w.readers > 0 || w.pollers > 0);
        let writers = moved > 0 && ring.policy() == Policy::Block && writers_waiting(&ring);
        drop(ring);
        if readers {
            self.arrived.notify_all();
            self.readable.notify_all();
        }
        if writers {
            self.writable.notify_all();
        }
        Ok(())
    }

    /// `MEMCHAN_IOC_CONSUME`: in steps of at most [`ring::CONSUME_STEP`] records, with the
    /// lock dropped between them, so that a release of a whole ring holds up no one.
    pub(crate) fn consume(&self, slot: usize, upto: u64) -> Result {
        loop {
            let mut ring = self.lock();
            let res = ring.consume(slot, upto);
            let wake = writers_waiting(&ring);
            drop(ring);
            if wake {
                self.writable.notify_all();
            }
            if res? {
                return Ok(());
            }
            if kernel::current!().signal_pending() {
                // The cursor moved as far as it got: a restart goes on from there.
                return Err(ERESTARTSYS);
            }
        }
    }

    /// `MEMCHAN_IOC_SET_POLICY`.
    pub(crate) fn set_policy(&self, policy: Policy) {
        let mut ring = self.ring_lock();
        let _ = ring.set_policy(policy);
        self.policy_now.store(policy.to_abi(), Relaxed);
        drop(ring);
        // Writers blocked under `block` may proceed under `overwrite`.
        self.writable.notify_all();
    }

    /// The policy, without taking the ring lock (a change may be under way).
    pub(crate) fn policy(&self) -> Policy {
        Policy::from_abi(self.policy_now.load(Relaxed)).unwrap_or(self.cfg.policy)
    }

    /// Ring size in bytes.
    pub(crate) fn ring_bytes(&self) -> u64 {
        self.cfg.ring_bytes
    }

    /// Length of the whole mapping.
    pub(crate) fn mmap_bytes(&self) -> u64 {
        self.pages.mmap_bytes()
    }

    /// Index of this channel.
    pub(crate) fn index(&self) -> u32 {
        self.cfg.index
    }

    /// Maps the ring read-only into `vma` (see [`Pages::map`]). Inserting pages may sleep: no
    /// ring lock here (nor needed: only the contents change, never the pages).
    pub(crate) fn mmap(&self, vma: &VmaNew) -> Result {
        self.pages.map(vma)
    }

    /// Maps the producer page and the data writable into `vma`, for the producer's file (the
    /// caller checked; see [`Pages::map_producer`]).
    pub(crate) fn mmap_producer(&self, vma: &VmaNew) -> Result {
        self.pages.map_producer(vma)
    }

    /// `MEMCHAN_IOC_PRODUCER`: the calling file, subscriber `slot`, becomes the channel's
    /// producer (`EBUSY` if there is one; `ENODEV` once the channel is removed). Its slot stays
    /// at the head from now on.
    pub(crate) fn claim(&self, slot: usize) -> Result {
        let mut ring = self.lock();
        if self.is_closed() {
            return Err(ENODEV);
        }
        ring.claim(slot)?;
        Self::publish_waiters(&mut ring);
        drop(ring);
        // Writers asleep for room under `block` get `EBUSY` now, not when a reader next moves.
        self.writable.notify_all();
        Ok(())
    }

    /// The producer's file is released (its last descriptor closed, its mappings gone): takes
    /// what it published and lets the next one claim the channel.
    pub(crate) fn unclaim(&self) {
        // Takes what the producer published, in holds of bounded work.
        let mut ring = self.lock_all();
        ring.look_at_producer();
        self.seat_joined(&mut ring);
        let _ = ring.unclaim(!self.is_closed());
        drop(ring);
        // The last records arrived, or the readers were lapped (the ring started over): either
        // is news for every waiter, edge-triggered pollers included.
        self.arrived.notify_all();
        self.readable.notify_all();
        self.writable.notify_all();
    }

    /// `MEMCHAN_IOC_DOORBELL` from the producer's file: takes the records it published and
    /// wakes their readers ([`Channel::lock`]); with `need` bytes under `block`, then waits
    /// until that many fit before the slowest subscriber, and publishes where it is
    /// (`RingControl::room_pos`). `EIO` once the producer published something invalid;
    /// `EAGAIN` if `nonblock` and there is no room; `EMSGSIZE` if there never can be;
    /// `ERESTARTSYS` on a signal; `ENODEV` once the channel is removed.
    pub(crate) fn doorbell(&self, need: u64, nonblock: bool) -> Result {
        let mut ring = self.lock_all();
        if !ring.produced() {
            return Err(EPERM);
        }
        if self.is_closed() {
            return Err(ENODEV);
        }
        if ring.faulted() {
            return Err(EIO);
        }
        if need == 0 || ring.policy() != Policy::Block {
            return Ok(());
        }
        if need > ring.size() {
            return Err(EMSGSIZE);
        }
        let mut counted = false;
        loop {
            if self.is_closed() {
                return Err(ENODEV);
            }
            if ring.room_for(need)? {
                return Ok(());
            }
            if nonblock {
                self.retry_nonblocking(&mut ring, need)?;
                continue;
            }
            if !counted {
                counted = true;
                ring.stats.blocked_writes = ring.stats.blocked_writes.wrapping_add(1);
            }
            self.wait_for_room(&mut ring, need)?;
        }
    }
}
