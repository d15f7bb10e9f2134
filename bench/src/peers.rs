//! The transports compared: each gives two connected endpoints that move whole messages.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use memchan::{MappedReceiver, Producer, Receiver, Sender};
use rustix::event::{epoll, EventfdFlags};
use rustix::io::Errno;

/// One end of a message transport.
pub trait Endpoint {
    /// Sends one message.
    fn send(&mut self, msg: &[u8]);
    /// Receives one message into `buf`; returns its length.
    fn recv(&mut self, buf: &mut [u8]) -> usize;
    /// Sends what `send` held back (transports that batch).
    fn flush(&mut self) {}
}

/// Builds an endpoint in the thread that will use it (some transports' endpoints cannot move
/// between threads).
pub type Build = Box<dyn FnOnce() -> Box<dyn Endpoint> + Send>;

/// A way to connect two endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Pipe,
    Fifo,
    SeqPacket,
    PosixMq,
    EventfdShm,
    SpinShm,
    MemchanRead,
    MemchanEpoll,
    MemchanMmapPoll,
    MemchanMmapSpin,
    /// Throughput only: `Sender::send_batch` of 32 messages per call, batched reads.
    MemchanBatch,
    /// The producer-mapped mode (no system call per message) to a busy-polling mapped reader.
    ProducerMmapSpin,
    /// The producer-mapped mode to a mapped reader that sleeps in `poll`.
    ProducerMmapPoll,
    /// The producer-mapped mode to a reader that sleeps in `read()`.
    ProducerRead,
    /// iceoryx2 publish-subscribe, subscribers busy-waiting.
    Iceoryx2Busy,
    /// iceoryx2 publish-subscribe, subscribers sleeping on its event service.
    Iceoryx2Event,
}

impl Kind {
    pub const ALL: [Kind; 15] = [
        Kind::Pipe,
        Kind::Fifo,
        Kind::SeqPacket,
        Kind::PosixMq,
        Kind::EventfdShm,
        Kind::SpinShm,
        Kind::MemchanRead,
        Kind::MemchanEpoll,
        Kind::MemchanMmapPoll,
        Kind::MemchanMmapSpin,
        Kind::ProducerRead,
        Kind::ProducerMmapPoll,
        Kind::ProducerMmapSpin,
        Kind::Iceoryx2Busy,
        Kind::Iceoryx2Event,
    ];

    /// What the transport is to the comparison: `memchan`, a `peer` users would pick
    /// instead, or the `floor` (shared memory with spinning, the least any transport can cost).
    pub fn role(self) -> &'static str {
        match self {
            Kind::SpinShm => "floor",
            Kind::Pipe
            | Kind::Fifo
            | Kind::SeqPacket
            | Kind::PosixMq
            | Kind::EventfdShm
            | Kind::Iceoryx2Busy
            | Kind::Iceoryx2Event => "peer",
            _ => "memchan",
        }
    }

    /// Whether the receiver spins on shared memory instead of sleeping (compared with the
    /// floor and with each other, not with transports that sleep).
    pub fn busy(self) -> bool {
        matches!(
            self,
            Kind::SpinShm | Kind::MemchanMmapSpin | Kind::ProducerMmapSpin | Kind::Iceoryx2Busy
        )
    }

    /// memchan's path (`read`, `epoll`, `mmap-poll`, `mmap-busy`, `batch`, and with the
    /// producer-mapped sender `producer-read`, `producer-mmap-poll`, `producer-mmap-busy`);
    /// empty for the others.
    pub fn path(self) -> &'static str {
        match self {
            Kind::MemchanRead => "read",
            Kind::MemchanEpoll => "epoll",
            Kind::MemchanMmapPoll => "mmap-poll",
            Kind::MemchanMmapSpin => "mmap-busy",
            Kind::MemchanBatch => "batch",
            Kind::ProducerRead => "producer-read",
            Kind::ProducerMmapPoll => "producer-mmap-poll",
            Kind::ProducerMmapSpin => "producer-mmap-busy",
            _ => "",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Pipe => "pipe",
            Kind::Fifo => "fifo",
            Kind::SeqPacket => "unix seqpacket",
            Kind::PosixMq => "posix mq",
            Kind::EventfdShm => "eventfd + shm ring",
            Kind::SpinShm => "spin on shm (floor)",
            Kind::MemchanRead => "memchan read",
            Kind::MemchanEpoll => "memchan epoll+read",
            Kind::MemchanMmapPoll => "memchan mmap (poll)",
            Kind::MemchanMmapSpin => "memchan mmap (busy)",
            Kind::MemchanBatch => "memchan batch send (32) + read",
            Kind::ProducerRead => "memchan producer + read",
            Kind::ProducerMmapPoll => "memchan producer + mmap (poll)",
            Kind::ProducerMmapSpin => "memchan producer + mmap (busy)",
            Kind::Iceoryx2Busy => "iceoryx2 (busy)",
            Kind::Iceoryx2Event => "iceoryx2 events",
        }
    }
}

/// Two connected endpoints (a → b and b → a), as builders.
pub fn pair(kind: Kind, max: usize, tag: u32) -> (Build, Build) {
    match kind {
        Kind::Iceoryx2Busy | Kind::Iceoryx2Event => {
            crate::iceoryx::pair(max, kind == Kind::Iceoryx2Event)
        }
        _ => {
            let (a, b) = connected(kind, max, tag);
            (
                Box::new(move || a as Box<dyn Endpoint>),
                Box::new(move || b as Box<dyn Endpoint>),
            )
        }
    }
}

/// A sendable endpoint, built where it is connected.
type Ready = Box<dyn Endpoint + Send>;

/// Two connected endpoints of a transport whose endpoints can move between threads.
fn connected(kind: Kind, max: usize, tag: u32) -> (Ready, Ready) {
    match kind {
        Kind::Iceoryx2Busy | Kind::Iceoryx2Event => unreachable!("built by `pair`"),
        Kind::Pipe => {
            let (r1, w1) = rustix::pipe::pipe().unwrap();
            let (r2, w2) = rustix::pipe::pipe().unwrap();
            for fd in [&w1, &w2] {
                // Room for the largest messages without splitting writes.
                let _ = rustix::pipe::fcntl_setpipe_size(fd, max.max(65536) * 2);
            }
            (
                Box::new(Stream { r: r2, w: w1 }),
                Box::new(Stream { r: r1, w: w2 }),
            )
        }
        Kind::Fifo => {
            // A tmpfs: FIFOs cannot be opened on the 9p scratch directory.
            let dir = "/dev/shm";
            let open = |name: String| {
                let p = format!("{dir}/{name}");
                let _ = std::fs::remove_file(&p);
                rustix::fs::mknodat(
                    rustix::fs::CWD,
                    p.as_str(),
                    rustix::fs::FileType::Fifo,
                    rustix::fs::Mode::from_raw_mode(0o600),
                    0,
                )
                .unwrap();
                // O_RDWR: opening never blocks waiting for the other side.
                let fd = rustix::fs::open(
                    p.as_str(),
                    rustix::fs::OFlags::RDWR,
                    rustix::fs::Mode::empty(),
                )
                .unwrap();
                let _ = rustix::pipe::fcntl_setpipe_size(&fd, max.max(65536) * 2);
                fd
            };
            let ab = open(format!("fifo-ab-{tag}"));
            let ba = open(format!("fifo-ba-{tag}"));
            let ab2 = rustix::io::dup(&ab).unwrap();
            let ba2 = rustix::io::dup(&ba).unwrap();
            (
                Box::new(Stream { r: ba, w: ab }),
                Box::new(Stream { r: ab2, w: ba2 }),
            )
        }
        Kind::SeqPacket => {
            let (a, b) = seqpacket_pair(max);
            (Box::new(Packet(a)), Box::new(Packet(b)))
        }
        Kind::PosixMq => {
            let ab = mq(&format!("/memchan-bench-ab-{tag}"), max);
            let ba = mq(&format!("/memchan-bench-ba-{tag}"), max);
            (
                Box::new(Mq {
                    tx: ab.clone(),
                    rx: ba.clone(),
                }),
                Box::new(Mq { tx: ba, rx: ab }),
            )
        }
        Kind::EventfdShm => {
            let ab = Arc::new(ShmRing::new(max));
            let ba = Arc::new(ShmRing::new(max));
            (
                Box::new(ShmEnd {
                    tx: ab.clone(),
                    rx: ba.clone(),
                    spin: false,
                }),
                Box::new(ShmEnd {
                    tx: ba,
                    rx: ab,
                    spin: false,
                }),
            )
        }
        Kind::SpinShm => {
            let ab = Arc::new(ShmRing::new(max));
            let ba = Arc::new(ShmRing::new(max));
            (
                Box::new(ShmEnd {
                    tx: ab.clone(),
                    rx: ba.clone(),
                    spin: true,
                }),
                Box::new(ShmEnd {
                    tx: ba,
                    rx: ab,
                    spin: true,
                }),
            )
        }
        Kind::MemchanRead
        | Kind::MemchanEpoll
        | Kind::MemchanMmapPoll
        | Kind::MemchanMmapSpin
        | Kind::MemchanBatch => {
            // Channel 1 carries a → b, channel 2 b → a.
            let end = |tx: u32, rx: u32| -> Ready {
                let sender = Sender::open_index(tx).unwrap();
                match kind {
                    Kind::MemchanRead => Box::new(McRead {
                        tx: sender,
                        rx: Receiver::open_index(rx).unwrap(),
                    }),
                    Kind::MemchanBatch => Box::new(McBatch {
                        inner: McRead {
                            tx: sender,
                            rx: Receiver::open_index(rx).unwrap(),
                        },
                        held: Vec::new(),
                        n: 0,
                    }),
                    Kind::MemchanEpoll => {
                        let r = Receiver::open_nonblocking(memchan::channel_path(rx)).unwrap();
                        let ep = epoll::create(epoll::CreateFlags::CLOEXEC).unwrap();
                        epoll::add(
                            &ep,
                            r.as_fd(),
                            epoll::EventData::new_u64(1),
                            epoll::EventFlags::IN,
                        )
                        .unwrap();
                        Box::new(McEpoll {
                            tx: sender,
                            rx: r,
                            ep,
                        })
                    }
                    _ => Box::new(McMmap {
                        tx: sender,
                        rx: MappedReceiver::open_index(rx).unwrap(),
                        spin: kind == Kind::MemchanMmapSpin,
                    }),
                }
            };
            (end(1, 2), end(2, 1))
        }
        Kind::ProducerRead | Kind::ProducerMmapPoll | Kind::ProducerMmapSpin => {
            // As above; each end is the producer of the channel it sends on.
            let end = |tx: u32, rx: u32| -> Ready {
                let tx = Producer::open_index(tx).unwrap();
                let rx = match kind {
                    Kind::ProducerRead => ProducerRx::Read(Receiver::open_index(rx).unwrap()),
                    _ => ProducerRx::Mapped(
                        MappedReceiver::open_index(rx).unwrap(),
                        kind == Kind::ProducerMmapSpin,
                    ),
                };
                Box::new(McProducer { tx, rx })
            };
            (end(1, 2), end(2, 1))
        }
    }
}

/// The memchan channel fan-out uses (channels 1 and 2 carry the pairs).
const FAN_CHANNEL: u32 = 3;

/// One writer to `readers` readers of `max`-byte messages, as builders (the writer's, then
/// each reader's). Transports: memchan's `read()` (with `write()` or the producer-mapped
/// mode), seqpacket (one socket per reader) and iceoryx2.
pub fn fan(kind: Kind, readers: usize, max: usize) -> (Build, Vec<Build>) {
    let reader = || -> Build {
        Box::new(|| Box::new(FanReader(Receiver::open_index(FAN_CHANNEL).unwrap())))
    };
    match kind {
        Kind::Iceoryx2Busy | Kind::Iceoryx2Event => {
            crate::iceoryx::fan(readers, max, kind == Kind::Iceoryx2Event)
        }
        Kind::MemchanRead => (
            Box::new(|| Box::new(FanWriter::Write(Sender::open_index(FAN_CHANNEL).unwrap()))),
            (0..readers).map(|_| reader()).collect(),
        ),
        Kind::ProducerRead => (
            Box::new(|| {
                Box::new(FanWriter::Producer(
                    Producer::open_index(FAN_CHANNEL).unwrap(),
                ))
            }),
            (0..readers).map(|_| reader()).collect(),
        ),
        Kind::SeqPacket => {
            let (writers, ends): (Vec<_>, Vec<_>) =
                (0..readers).map(|_| seqpacket_pair(max)).unzip();
            (
                Box::new(move || Box::new(FanWriter::Packets(writers))),
                ends.into_iter()
                    .map(|end| {
                        Box::new(move || Box::new(Packet(end)) as Box<dyn Endpoint>) as Build
                    })
                    .collect(),
            )
        }
        _ => unimplemented!("fan-out over {}", kind.name()),
    }
}

/// The writer of a fan-out.
enum FanWriter {
    Write(Sender),
    Producer(Producer),
    /// One socket per reader, each sent every message.
    Packets(Vec<OwnedFd>),
}

impl Endpoint for FanWriter {
    fn send(&mut self, msg: &[u8]) {
        match self {
            FanWriter::Write(tx) => tx.send(msg).unwrap(),
            FanWriter::Producer(tx) => tx.send(msg).unwrap(),
            FanWriter::Packets(socks) => {
                for s in socks {
                    rustix::net::send(&*s, msg, rustix::net::SendFlags::empty()).unwrap();
                }
            }
        }
    }
    fn recv(&mut self, _: &mut [u8]) -> usize {
        unreachable!("a fan-out writer only sends")
    }
}

/// A fan-out reader of a memchan channel (`read()` into the receiver's buffer).
struct FanReader(Receiver);

impl Endpoint for FanReader {
    fn send(&mut self, _: &[u8]) {
        unreachable!("a fan-out reader only receives")
    }
    fn recv(&mut self, buf: &mut [u8]) -> usize {
        let m = self.0.recv().unwrap();
        // Touched where it lies, as in the pair transports (see `McRead::recv`).
        buf[0] = m.payload.first().copied().unwrap_or(0);
        m.payload.len()
    }
}

/// A connected `SOCK_SEQPACKET` pair with buffers for `max`-byte messages.
pub fn seqpacket_pair(max: usize) -> (OwnedFd, OwnedFd) {
    use rustix::net::{socketpair, sockopt, AddressFamily, SocketFlags, SocketType};
    let (a, b) = socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .unwrap();
    for s in [&a, &b] {
        let _ = sockopt::set_socket_send_buffer_size(s, max.max(4096) * 64);
        let _ = sockopt::set_socket_recv_buffer_size(s, max.max(4096) * 64);
    }
    (a, b)
}

/// Byte streams (pipe, FIFO): fixed-size messages, read exactly.
struct Stream {
    r: OwnedFd,
    w: OwnedFd,
}

impl Endpoint for Stream {
    fn send(&mut self, msg: &[u8]) {
        let mut done = 0;
        while done < msg.len() {
            done += rustix::io::write(&self.w, &msg[done..]).unwrap();
        }
    }
    fn recv(&mut self, buf: &mut [u8]) -> usize {
        // The peer's message has the size of `buf` in every workload here.
        let mut done = 0;
        while done < buf.len() {
            done += rustix::io::read(&self.r, &mut buf[done..]).unwrap();
        }
        done
    }
}

/// A seqpacket socket: one message per send/recv.
pub struct Packet(pub OwnedFd);

impl Endpoint for Packet {
    fn send(&mut self, msg: &[u8]) {
        rustix::net::send(&self.0, msg, rustix::net::SendFlags::empty()).unwrap();
    }
    fn recv(&mut self, buf: &mut [u8]) -> usize {
        rustix::net::recv(&self.0, buf, rustix::net::RecvFlags::empty())
            .unwrap()
            .0
    }
}

/// A POSIX message queue descriptor (libc: rustix has no mq), shared by the two endpoints
/// of a pair and closed when both are gone: an endpoint that finished first and closed a
/// queue its peer still read made the peer's last `mq_receive` fail with `EBADF`.
struct MqFd(libc::mqd_t);

impl Drop for MqFd {
    fn drop(&mut self) {
        // SAFETY: an open message queue descriptor, owned by this value alone.
        unsafe { libc::mq_close(self.0) };
    }
}

fn mq(name: &str, max: usize) -> Arc<MqFd> {
    let cname = std::ffi::CString::new(name).unwrap();
    // SAFETY: valid C string; the attr and rlimit structs are fully initialised.
    unsafe {
        // Queue memory counts against RLIMIT_MSGQUEUE (800 KiB by default): lift it (root).
        let lim = libc::rlimit {
            rlim_cur: libc::RLIM_INFINITY,
            rlim_max: libc::RLIM_INFINITY,
        };
        libc::setrlimit(libc::RLIMIT_MSGQUEUE, &lim);
        libc::mq_unlink(cname.as_ptr());
        let mut attr: libc::mq_attr = std::mem::zeroed();
        attr.mq_maxmsg = 10;
        attr.mq_msgsize = max as libc::c_long;
        let fd = libc::mq_open(
            cname.as_ptr(),
            libc::O_RDWR | libc::O_CREAT,
            0o600,
            &attr as *const libc::mq_attr,
        );
        assert!(
            fd >= 0,
            "mq_open {name}: {}",
            std::io::Error::last_os_error()
        );
        libc::mq_unlink(cname.as_ptr());
        Arc::new(MqFd(fd))
    }
}

struct Mq {
    tx: Arc<MqFd>,
    rx: Arc<MqFd>,
}

impl Endpoint for Mq {
    fn send(&mut self, msg: &[u8]) {
        // SAFETY: `msg` is valid for its length.
        let r = unsafe { libc::mq_send(self.tx.0, msg.as_ptr().cast(), msg.len(), 0) };
        assert_eq!(r, 0, "mq_send: {}", std::io::Error::last_os_error());
    }
    fn recv(&mut self, buf: &mut [u8]) -> usize {
        // SAFETY: `buf` is valid for its length.
        let r = unsafe {
            libc::mq_receive(
                self.rx.0,
                buf.as_mut_ptr().cast(),
                buf.len(),
                std::ptr::null_mut(),
            )
        };
        assert!(r >= 0, "mq_receive: {}", std::io::Error::last_os_error());
        r as usize
    }
}

/// The do-it-yourself baseline: a single-producer single-consumer ring in shared memory,
/// with an eventfd to wake a sleeping consumer (or spinning, for the physical floor).
pub struct ShmRing {
    slots: Vec<std::cell::UnsafeCell<Vec<u8>>>,
    lens: Vec<AtomicU64>,
    head: AtomicU64,
    tail: AtomicU64,
    efd: OwnedFd,
}

// SAFETY: a slot is written only by the producer before it publishes `head`, and read only by
// the consumer after it saw `head` pass it and before it advances `tail`.
unsafe impl Sync for ShmRing {}

const SHM_SLOTS: usize = 64;

impl ShmRing {
    pub fn new(max: usize) -> Self {
        Self {
            slots: (0..SHM_SLOTS)
                .map(|_| std::cell::UnsafeCell::new(vec![0; max]))
                .collect(),
            lens: (0..SHM_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            head: AtomicU64::new(0),
            tail: AtomicU64::new(0),
            efd: rustix::event::eventfd(0, EventfdFlags::CLOEXEC).unwrap(),
        }
    }

    pub fn push(&self, msg: &[u8], spin: bool) {
        let h = self.head.load(Ordering::Relaxed);
        while h - self.tail.load(Ordering::Acquire) >= SHM_SLOTS as u64 {
            std::hint::spin_loop();
        }
        let i = (h % SHM_SLOTS as u64) as usize;
        // SAFETY: see `Sync`: the slot is free (tail passed it) and only the producer writes.
        unsafe { (&mut *self.slots[i].get())[..msg.len()].copy_from_slice(msg) };
        self.lens[i].store(msg.len() as u64, Ordering::Relaxed);
        self.head.store(h + 1, Ordering::Release);
        if !spin {
            rustix::io::write(&self.efd, &1u64.to_ne_bytes()).unwrap();
        }
    }

    pub fn pop(&self, buf: &mut [u8], spin: bool) -> usize {
        let t = self.tail.load(Ordering::Relaxed);
        loop {
            if self.head.load(Ordering::Acquire) > t {
                break;
            }
            if spin {
                std::hint::spin_loop();
            } else {
                let mut v = [0u8; 8];
                match rustix::io::read(&self.efd, &mut v) {
                    Ok(_) | Err(Errno::INTR) => {}
                    Err(e) => panic!("eventfd: {e}"),
                }
            }
        }
        let i = (t % SHM_SLOTS as u64) as usize;
        let n = self.lens[i].load(Ordering::Relaxed) as usize;
        // SAFETY: see `Sync`: the producer published this slot and will not touch it until
        // `tail` moves past it.
        buf[..n].copy_from_slice(unsafe { &(&*self.slots[i].get())[..n] });
        self.tail.store(t + 1, Ordering::Release);
        n
    }
}

struct ShmEnd {
    tx: Arc<ShmRing>,
    rx: Arc<ShmRing>,
    spin: bool,
}

impl Endpoint for ShmEnd {
    fn send(&mut self, msg: &[u8]) {
        self.tx.push(msg, self.spin);
    }
    fn recv(&mut self, buf: &mut [u8]) -> usize {
        self.rx.pop(buf, self.spin)
    }
}

struct McRead {
    tx: Sender,
    rx: Receiver,
}

impl Endpoint for McRead {
    fn send(&mut self, msg: &[u8]) {
        self.tx.send(msg).unwrap();
    }
    fn recv(&mut self, buf: &mut [u8]) -> usize {
        let m = self.rx.recv().unwrap();
        // The payload lies in the receiver's buffer, where `read()` put it: touch it there, as
        // the mmap transport does (a real consumer parses in place; a pipe's reader gets its
        // one copy into `buf`, memchan's reader got its one copy into the receiver's buffer).
        buf[0] = m.payload.first().copied().unwrap_or(0);
        m.payload.len()
    }
}

/// Messages per `send_batch` in the batch transport.
const BATCH: usize = 32;

struct McBatch {
    /// Receiving (and the sender) as in the plain read transport.
    inner: McRead,
    /// Messages held back until a batch is full (buffers reused).
    held: Vec<Vec<u8>>,
    /// How many of `held` are in use.
    n: usize,
}

impl Endpoint for McBatch {
    fn send(&mut self, msg: &[u8]) {
        if self.held.len() <= self.n {
            self.held.push(Vec::new());
        }
        self.held[self.n].clear();
        self.held[self.n].extend_from_slice(msg);
        self.n += 1;
        if self.n == BATCH {
            self.flush();
        }
    }
    fn recv(&mut self, buf: &mut [u8]) -> usize {
        self.inner.recv(buf)
    }
    fn flush(&mut self) {
        let msgs: Vec<&[u8]> = self.held[..self.n].iter().map(Vec::as_slice).collect();
        assert_eq!(self.inner.tx.send_batch(&msgs).unwrap(), msgs.len());
        self.n = 0;
    }
}

struct McEpoll {
    tx: Sender,
    rx: Receiver,
    ep: OwnedFd,
}

impl Endpoint for McEpoll {
    fn send(&mut self, msg: &[u8]) {
        self.tx.send(msg).unwrap();
    }
    fn recv(&mut self, buf: &mut [u8]) -> usize {
        loop {
            match self.rx.try_recv() {
                Ok(m) => {
                    buf[..m.payload.len()].copy_from_slice(m.payload);
                    return m.payload.len();
                }
                Err(memchan::Error::WouldBlock) => {
                    let mut events = Vec::with_capacity(1);
                    let _ =
                        epoll::wait(&self.ep, rustix::buffer::spare_capacity(&mut events), None);
                }
                Err(e) => panic!("{e}"),
            }
        }
    }
}

struct McMmap {
    tx: Sender,
    rx: MappedReceiver,
    spin: bool,
}

impl Endpoint for McMmap {
    fn send(&mut self, msg: &[u8]) {
        self.tx.send(msg).unwrap();
    }
    fn recv(&mut self, buf: &mut [u8]) -> usize {
        let rec = if self.spin {
            self.rx.recv_spin()
        } else {
            self.rx.recv()
        }
        .unwrap();
        // Touch the payload where it lies (a real consumer would parse it in place).
        let n = rec.payload().len();
        buf[0] = rec.payload().first().copied().unwrap_or(0);
        n
    }
}

/// What a producer-mapped endpoint receives with.
enum ProducerRx {
    Read(Receiver),
    /// The mapped receiver, busy-polling if true.
    Mapped(MappedReceiver, bool),
}

struct McProducer {
    tx: Producer,
    rx: ProducerRx,
}

impl Endpoint for McProducer {
    fn send(&mut self, msg: &[u8]) {
        self.tx.send(msg).unwrap();
    }
    fn recv(&mut self, buf: &mut [u8]) -> usize {
        match &mut self.rx {
            ProducerRx::Read(rx) => {
                let m = rx.recv().unwrap();
                let n = m.payload.len();
                buf[0] = m.payload.first().copied().unwrap_or(0);
                n
            }
            ProducerRx::Mapped(rx, spin) => {
                let rec = if *spin { rx.recv_spin() } else { rx.recv() }.unwrap();
                let n = rec.payload().len();
                buf[0] = rec.payload().first().copied().unwrap_or(0);
                n
            }
        }
    }
}
