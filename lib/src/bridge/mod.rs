//! A channel bridged to a Zenoh key expression (feature `zenoh`): what `memchan bridge` runs.
//!
//! - `out`: every message of the channel is published on the key, with its sequence number
//!   and timestamp in the attachment ([`wire`]).
//! - `in`: every sample received on the key (from a bridge or any Zenoh publisher) is written
//!   into the channel as one message.
//! - `both`: both, and nothing received is published back ([`echo`] recognises the bridge's
//!   own writes; its subscriber ignores its own session's samples), however many bridges
//!   share the key.
//!
//! Policies map onto Zenoh's congestion control: a `block` channel publishes with
//! `CongestionControl::Block` (a slow network slows the channel's writers down, nothing is
//! dropped), an `overwrite` channel with `Drop` (writers never wait; what the network drops
//! shows as loss). Writing into a `block` channel waits for room, which stops taking samples
//! from Zenoh and pushes back on blocking publishers.
//!
//! Gaps in the sequence numbers of a source channel (overruns there, samples dropped on the
//! way, a bridge that was down) are counted as [`BridgeStats::lost`] by the receiving bridge.
//!
//! ```no_run
//! use memchan::bridge::{Bridge, BridgeOptions, Direction};
//!
//! let bridge = Bridge::start(&BridgeOptions {
//!     channel: "/dev/memchan".into(),
//!     key: "robot/telemetry".into(),
//!     direction: Direction::Out,
//!     zenoh: Default::default(),
//! })?;
//! std::thread::sleep(std::time::Duration::from_secs(10));
//! println!("{:?}", bridge.stop()?);
//! # Ok::<(), memchan::bridge::BridgeError>(())
//! ```

mod config;
mod echo;
mod loss;
pub mod wire;

use std::hash::{BuildHasher, Hasher};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, Timespec};
use zenoh::bytes::ZBytes;
use zenoh::handlers::{FifoChannel, FifoChannelHandler};
use zenoh::key_expr::KeyExpr;
use zenoh::pubsub::{Publisher, Subscriber};
use zenoh::qos::CongestionControl;
use zenoh::sample::{Locality, Sample};
use zenoh::{Session, Wait};

pub use config::{Mode, ZenohOptions};
use echo::{Digest, EchoFilter};
use loss::{LossTracker, Seen};
use wire::Attachment;

use crate::{Error, Policy, Receiver, Sender};

/// How often the bridge's threads look at the stop flag while nothing happens.
const TICK: Duration = Duration::from_millis(100);
/// Samples received from Zenoh and not yet written into the channel, at most.
const IN_QUEUE: usize = 1024;

/// What can go wrong starting or running a bridge.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BridgeError {
    /// The channel (missing, permissions, ...).
    #[error(transparent)]
    Channel(#[from] Error),
    /// Not a key expression, or one with wildcards where the bridge publishes.
    #[error("invalid key expression {key:?}: {reason}")]
    KeyExpr {
        /// The key given.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Not a Zenoh endpoint.
    #[error(
        "invalid endpoint {endpoint:?}: {reason} (an endpoint is PROTOCOL/ADDRESS:PORT, e.g. \
         tcp/192.168.1.2:7447)"
    )]
    Endpoint {
        /// The endpoint given.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The Zenoh configuration (file or setting) is not valid.
    #[error("Zenoh configuration: {0}")]
    Config(String),
    /// Zenoh failed (opening the session: an endpoint that cannot be listened on, ...).
    #[error("Zenoh: {op}: {reason}")]
    Zenoh {
        /// What was being done.
        op: &'static str,
        /// Zenoh's error.
        reason: String,
    },
}

fn zenoh_err(op: &'static str) -> impl FnOnce(zenoh::Error) -> BridgeError {
    move |e| BridgeError::Zenoh {
        op,
        reason: e.to_string(),
    }
}

/// Which way messages go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Channel to Zenoh.
    Out,
    /// Zenoh to channel.
    In,
    /// Both, without echoing.
    Both,
}

impl Direction {
    fn out(self) -> bool {
        matches!(self, Self::Out | Self::Both)
    }

    fn inward(self) -> bool {
        matches!(self, Self::In | Self::Both)
    }
}

/// What to bridge.
#[derive(Clone, Debug)]
pub struct BridgeOptions {
    /// The channel's device node.
    pub channel: PathBuf,
    /// The key expression (wildcards only for `in`).
    pub key: String,
    /// Which way.
    pub direction: Direction,
    /// The Zenoh side.
    pub zenoh: ZenohOptions,
}

/// A bridge's counters since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BridgeStats {
    /// Messages of the channel published.
    pub sent: u64,
    /// Their payload bytes.
    pub sent_bytes: u64,
    /// Messages of the channel this bridge's reader lost to overruns (`overwrite` channel
    /// faster than the network); the receiving side counts them as lost too.
    pub source_lost: u64,
    /// Messages of the channel not published because this bridge wrote them (`both`).
    pub echoes: u64,
    /// Samples written into the channel.
    pub received: u64,
    /// Their payload bytes.
    pub received_bytes: u64,
    /// Messages of the source channels that never arrived (sequence gaps).
    pub lost: u64,
    /// Samples without a bridge's attachment (plain Zenoh publishers): written, unchecked.
    pub foreign: u64,
    /// Samples larger than the channel's largest message: not written.
    pub too_large: u64,
    /// Source channels heard from.
    pub streams: u64,
    /// Samples that carry this bridge's own origin (its publications, come back through a
    /// router, or forged): never written.
    pub own: u64,
}

/// The counters, shared with the bridge's threads.
#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    sent_bytes: AtomicU64,
    source_lost: AtomicU64,
    echoes: AtomicU64,
    received: AtomicU64,
    received_bytes: AtomicU64,
    lost: AtomicU64,
    foreign: AtomicU64,
    too_large: AtomicU64,
    streams: AtomicU64,
    own: AtomicU64,
}

/// Adds to a counter, saturating (a forged sequence number cannot wrap `lost` around).
fn add(c: &AtomicU64, n: u64) {
    let _ = c.fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_add(n)));
}

fn bytes(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

impl Counters {
    fn snapshot(&self) -> BridgeStats {
        BridgeStats {
            sent: self.sent.load(Relaxed),
            sent_bytes: self.sent_bytes.load(Relaxed),
            source_lost: self.source_lost.load(Relaxed),
            echoes: self.echoes.load(Relaxed),
            received: self.received.load(Relaxed),
            received_bytes: self.received_bytes.load(Relaxed),
            lost: self.lost.load(Relaxed),
            foreign: self.foreign.load(Relaxed),
            too_large: self.too_large.load(Relaxed),
            streams: self.streams.load(Relaxed),
            own: self.own.load(Relaxed),
        }
    }
}

/// What the bridge's threads share.
struct Shared {
    stop: AtomicBool,
    counters: Counters,
    echo: EchoFilter,
    /// This bridge run (attachment `origin`).
    origin: u64,
}

/// A running bridge: one thread per direction, one Zenoh session. Stops when dropped
/// ([`Bridge::stop`] says how it went).
pub struct Bridge {
    session: Option<Session>,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<Result<(), BridgeError>>>,
    policy: Policy,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge")
            .field("origin", &self.shared.origin)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// A random 64-bit number (std's hasher keys come from the OS).
fn random_u64() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish()
}

/// The source channel's identity: this boot and the channel's path, so that a restarted
/// bridge continues the stream (and the gap while it was down counts as lost).
fn stream_id(channel: &std::path::Path) -> u64 {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let path = std::fs::canonicalize(channel).unwrap_or_else(|_| channel.to_path_buf());
    // FNV-1a: stable across runs and builds, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in boot
        .trim()
        .bytes()
        .chain([0])
        .chain(path.as_os_str().as_encoded_bytes().iter().copied())
    {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn monotonic() -> Duration {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

impl Bridge {
    /// Opens the channel, checks the key, opens the Zenoh session and starts bridging.
    pub fn start(opts: &BridgeOptions) -> Result<Self, BridgeError> {
        let bad_key = |reason: String| BridgeError::KeyExpr {
            key: opts.key.clone(),
            reason,
        };
        let key = KeyExpr::try_from(opts.key.clone()).map_err(|e| bad_key(e.to_string()))?;
        if opts.direction.out() && key.is_wild() {
            return Err(bad_key(
                "a bridge that publishes (out, both) needs a key without wildcards".into(),
            ));
        }
        opts.zenoh.to_config(None)?; // checked before the channel is opened
                                     // The channel before the session: a missing channel is reported before anything
                                     // touches the network.
        let rx = match opts.direction.out() {
            true => Some(Receiver::open(&opts.channel)?),
            false => None,
        };
        let tx = match opts.direction.inward() {
            true => Some(Sender::open_nonblocking(&opts.channel)?),
            false => None,
        };
        let info = match (&rx, &tx) {
            (Some(rx), _) => rx.info()?,
            (None, Some(tx)) => tx.info()?,
            (None, None) => return Err(bad_key("no direction".into())),
        };
        // Records the reader can have to meet: the ring's and its batch buffer's.
        let held = info
            .ring_bytes
            .saturating_add(bytes(crate::BATCH_BYTES.max(info.msg_max)));
        let records = held / memchan_abi::record_size(1).max(1);
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            counters: Counters::default(),
            echo: EchoFilter::new(usize::try_from(records).unwrap_or(usize::MAX)),
            origin: random_u64(),
        });
        // Zenoh accepts 1 GiB messages by default; a sample larger than the channel takes is
        // never written, so it is not received either (an attachment and headers fit in 4 KiB).
        let max_sample = info.msg_max.saturating_add(4096);
        let config = opts.zenoh.to_config(Some(max_sample))?;
        let session = zenoh::open(config)
            .wait()
            .map_err(zenoh_err("open session"))?;
        let mut bridge = Self {
            session: None,
            shared,
            threads: Vec::new(),
            policy: info.policy,
        };
        if let Some(rx) = rx {
            let congestion = match info.policy {
                Policy::Block => CongestionControl::Block,
                Policy::Overwrite => CongestionControl::Drop,
            };
            let publisher = session
                .declare_publisher(key.clone())
                .congestion_control(congestion)
                .allowed_destination(Locality::Remote)
                .wait()
                .map_err(zenoh_err("declare publisher"))?;
            let shared = Arc::clone(&bridge.shared);
            let stream = stream_id(&opts.channel);
            let echoes = opts.direction == Direction::Both;
            bridge.threads.push(std::thread::spawn(move || {
                publish(&shared, rx, &publisher, stream, echoes)
            }));
        }
        if let Some(tx) = tx {
            let subscriber = session
                .declare_subscriber(key)
                .allowed_origin(Locality::Remote)
                .with(FifoChannel::new(IN_QUEUE))
                .wait()
                .map_err(zenoh_err("declare subscriber"))?;
            let shared = Arc::clone(&bridge.shared);
            let echoes = opts.direction == Direction::Both;
            bridge.threads.push(std::thread::spawn(move || {
                deliver(&shared, &subscriber, &tx, echoes)
            }));
        }
        bridge.session = Some(session);
        Ok(bridge)
    }

    /// The counters so far.
    pub fn stats(&self) -> BridgeStats {
        self.shared.counters.snapshot()
    }

    /// The channel's policy (read at start), which chose the congestion control.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Zenoh peers and routers this bridge is connected to now.
    pub fn peers(&self) -> usize {
        self.session.as_ref().map_or(0, |s| {
            s.info().peers_zid().wait().count() + s.info().routers_zid().wait().count()
        })
    }

    /// Whether a direction stopped by itself (an error: [`Bridge::stop`] returns it).
    pub fn is_finished(&self) -> bool {
        self.threads.iter().any(|t| t.is_finished())
    }

    /// Stops bridging, closes the session, returns the final counters or the first error a
    /// direction stopped with.
    pub fn stop(mut self) -> Result<BridgeStats, BridgeError> {
        self.shutdown()?;
        Ok(self.stats())
    }

    fn shutdown(&mut self) -> Result<(), BridgeError> {
        self.shared.stop.store(true, Relaxed);
        let mut result = Ok(());
        for t in self.threads.drain(..) {
            let r = t.join().unwrap_or_else(|_| {
                Err(BridgeError::Zenoh {
                    op: "bridge thread",
                    reason: "panicked".into(),
                })
            });
            if result.is_ok() {
                result = r;
            }
        }
        if let Some(session) = self.session.take() {
            session.close().wait().map_err(zenoh_err("close session"))?;
        }
        result
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// Channel to Zenoh, until the stop flag.
fn publish(
    shared: &Shared,
    mut rx: Receiver,
    publisher: &Publisher<'_>,
    stream: u64,
    echoes: bool,
) -> Result<(), BridgeError> {
    let c = &shared.counters;
    let mut skipped = 0u64;
    while !shared.stop.load(Relaxed) {
        let msg = match rx.recv_timeout(TICK) {
            Ok(msg) => msg,
            Err(Error::TimedOut) => continue,
            Err(Error::Overrun { lost }) => {
                add(&c.source_lost, lost);
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if echoes && shared.echo.is_echo(msg.timestamp, Digest::of(msg.payload)) {
            add(&c.echoes, 1);
            skipped = skipped.saturating_add(1);
            continue;
        }
        let attachment = Attachment {
            origin: shared.origin,
            stream,
            seq: msg.seq,
            timestamp_ns: u64::try_from(msg.timestamp.as_nanos()).unwrap_or(u64::MAX),
            skipped,
        };
        publisher
            .put(ZBytes::from(msg.payload))
            .attachment(ZBytes::from(attachment.encode().to_vec()))
            .wait()
            .map_err(zenoh_err("publish"))?;
        add(&c.sent, 1);
        add(&c.sent_bytes, bytes(msg.payload.len()));
    }
    Ok(())
}

/// Zenoh to channel, until the stop flag.
fn deliver(
    shared: &Shared,
    subscriber: &Subscriber<FifoChannelHandler<Sample>>,
    tx: &Sender,
    echoes: bool,
) -> Result<(), BridgeError> {
    let c = &shared.counters;
    let mut loss = LossTracker::default();
    while !shared.stop.load(Relaxed) {
        let sample = match subscriber.recv_timeout(TICK) {
            Ok(Some(sample)) => sample,
            Ok(None) => continue,
            Err(e) => return Err(zenoh_err("receive")(e)),
        };
        match sample
            .attachment()
            .and_then(|a| Attachment::decode(&a.to_bytes()))
        {
            // Ours, back through a router: never written again.
            Some(a) if a.origin == shared.origin => {
                add(&c.own, 1);
                continue;
            }
            Some(a) => {
                if let Seen::Next { lost } = loss.observe(&a) {
                    add(&c.lost, lost);
                }
                c.streams.store(bytes(loss.streams()), Relaxed);
            }
            None => add(&c.foreign, 1),
        }
        let payload = sample.payload().to_bytes();
        if payload.len() > tx.max_message() {
            add(&c.too_large, 1);
            continue;
        }
        if payload.is_empty() {
            // A channel stores nothing for an empty write.
            continue;
        }
        let pending = echoes.then(|| shared.echo.begin(Digest::of(&payload), monotonic()));
        let sent = write(shared, tx, &payload);
        if let Some(p) = pending {
            shared.echo.end(p, monotonic());
        }
        if !sent? {
            break;
        }
        add(&c.received, 1);
        add(&c.received_bytes, bytes(payload.len()));
    }
    Ok(())
}

/// Writes one message, waiting for room (in ticks, to see the stop flag). `false`: stopped
/// before it could be written.
fn write(shared: &Shared, tx: &Sender, payload: &[u8]) -> Result<bool, BridgeError> {
    loop {
        match tx.send(payload) {
            Ok(()) => return Ok(true),
            Err(Error::WouldBlock) => {}
            Err(e) => return Err(e.into()),
        }
        if shared.stop.load(Relaxed) {
            return Ok(false);
        }
        let tick = Timespec {
            tv_sec: 0,
            tv_nsec: i64::from(TICK.subsec_nanos()),
        };
        let fd = tx.as_fd();
        let mut fds = [PollFd::new(&fd, PollFlags::OUT)];
        match rustix::event::poll(&mut fds, Some(&tick)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => {
                return Err(Error::Os {
                    op: "poll for room",
                    errno: e,
                }
                .into())
            }
        }
    }
}
