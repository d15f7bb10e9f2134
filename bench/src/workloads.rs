//! The workloads: ping-pong latency, 1 → 1 throughput, 1 → N fan-out, size scaling.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::peers::{self, Kind};
use crate::Row;

/// Largest message used (the module is reloaded to accept it).
pub const MAX: usize = 65536;

/// Reloads the module for benchmarking: block policy (lossless, like the peers), 4 MiB rings,
/// 64 KiB messages; raises the POSIX mq message size limit.
pub fn setup() {
    let ko = std::env::var("MEMCHAN_KO").expect("MEMCHAN_KO (run by cargo xtask bench)");
    let sh = |c: &str| {
        std::process::Command::new("sh")
            .args(["-c", c])
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    let _ = sh("rmmod memchan 2>/dev/null");
    assert!(
        sh(&format!(
            "insmod {ko} channels=4 ring_kib=4096 msg_max={MAX} policy=0"
        )),
        "insmod failed"
    );
    let _ = std::fs::write("/proc/sys/fs/mqueue/msgsize_max", format!("{MAX}"));
}

/// Online CPUs, counted once before any thread is pinned (a pinned thread's
/// `available_parallelism` is 1, and threads inherit their creator's mask).
pub fn cpus() -> usize {
    static CPUS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Pins the calling thread to `cpu` (modulo the number of CPUs).
fn pin(cpu: usize) {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu % cpus());
    let _ = rustix::thread::sched_setaffinity(None, &set);
}

/// Lets the calling thread (and what it starts) run on every CPU again: the workloads pin
/// the main thread, and processes started from it inherit the mask.
pub fn unpin() {
    let mut set = rustix::thread::CpuSet::new();
    for cpu in 0..cpus() {
        set.set(cpu);
    }
    let _ = rustix::thread::sched_setaffinity(None, &set);
}

/// Pins fan-out reader `r` to a CPU other than the writer's (CPU 0), round robin, where
/// there is more than one: a reader sharing the writer's CPU would make the writer's CPU
/// time include that reader's context switches (and, under QEMU's software emulation, the
/// emulated TLB refills after each one), which measures the scheduler, not the transport.
fn pin_reader(r: usize) {
    let others = cpus().saturating_sub(1).max(1);
    pin(1 + r % others);
}

/// CPU time (user + system) of the calling thread, from `getrusage(RUSAGE_THREAD)` (the
/// test kernel has no POSIX timers, so no `CLOCK_THREAD_CPUTIME_ID`).
fn thread_cpu() -> Duration {
    // SAFETY: `getrusage` fills in the zeroed struct it is given.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_THREAD, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Voluntary context switches (sleeps) of the calling thread so far.
fn thread_sleeps() -> i64 {
    // SAFETY: `getrusage` fills in the zeroed struct it is given.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_THREAD, &mut ru);
        ru
    };
    ru.ru_nvcsw
}

/// Whether transport `name` is measured: all of them, unless `MEMCHAN_BENCH_TRANSPORTS` (a
/// comma-separated list of names, e.g. `pipe,memchan read`) narrows it for an experiment or a
/// profile (`cargo xtask bench --profile`).
fn selected(name: &str) -> bool {
    match std::env::var("MEMCHAN_BENCH_TRANSPORTS") {
        Ok(list) if !list.is_empty() => list.split(',').any(|t| t.trim() == name),
        _ => true,
    }
}

pub fn iters(base: usize, scale: f64) -> usize {
    ((base as f64 * scale) as usize).max(10)
}

/// Measures every case `reps` times, round robin (each case once, then each again, ...),
/// after a warm-up round whose results are dropped. The host's speed drifts (the other
/// core's load, QEMU translating code the first time it runs): measured one after another,
/// all of a case's repetitions would share one phase of the drift, and the first case would
/// pay the warm-up; interleaved, every case sees every phase. Returns each case's results, in
/// the order of `cases`.
pub fn rounds<C: Copy, T>(
    cases: &[C],
    reps: usize,
    mut measure: impl FnMut(C) -> T,
) -> Vec<Vec<T>> {
    for &c in cases {
        let _ = measure(c);
    }
    let mut out: Vec<Vec<T>> = cases.iter().map(|_| Vec::with_capacity(reps)).collect();
    for _ in 0..reps {
        for (&c, values) in cases.iter().zip(&mut out) {
            values.push(measure(c));
        }
    }
    out
}

/// The selected ones of `kinds`.
fn chosen(kinds: &[Kind]) -> Vec<Kind> {
    kinds
        .iter()
        .copied()
        .filter(|k| selected(k.name()))
        .collect()
}

/// Ping-pong: one-way latency (RTT / 2) percentiles, in ns.
fn pingpong(kind: Kind, size: usize, n: usize) -> Histogram<u64> {
    let (mk_a, mk_b) = peers::pair(kind, size.max(64), 0);
    let warm = n / 10 + 10;
    let ready = Arc::new(Barrier::new(2));
    let ready2 = ready.clone();
    let echo = std::thread::spawn(move || {
        pin(1);
        let mut b = mk_b();
        ready2.wait();
        let mut buf = vec![0u8; size.max(64)];
        let sleeps = thread_sleeps();
        for _ in 0..warm + n {
            let len = b.recv(&mut buf);
            b.send(&buf[..len]);
        }
        thread_sleeps() - sleeps
    });
    pin(0);
    let mut a = mk_a();
    ready.wait();
    let msg = vec![0x5au8; size];
    let mut buf = vec![0u8; size.max(64)];
    let mut h = Histogram::<u64>::new(3).unwrap();
    for i in 0..warm + n {
        let t = Instant::now();
        a.send(&msg);
        a.recv(&mut buf);
        if i >= warm {
            let _ = h.record((t.elapsed().as_nanos() / 2) as u64);
        }
    }
    let sleeps = echo.join().unwrap();
    println!(
        "  {} {size} B ping-pong: echo slept {} times per 1000 messages",
        kind.name(),
        sleeps * 1000 / (warm + n) as i64
    );
    h
}

pub fn latency(rows: &mut Vec<Row>, reps: usize, scale: f64) {
    let kinds = chosen(&Kind::ALL);
    for size in [64, 1024, 16384] {
        let hists = rounds(&kinds, reps, |k| pingpong(k, size, iters(2000, scale)));
        for (kind, hs) in kinds.iter().zip(hists) {
            for (q, metric) in [
                (0.5, "p50 ns"),
                (0.99, "p99 ns"),
                (0.999, "p99.9 ns"),
                (1.0, "max ns"),
            ] {
                let values = hs.iter().map(|h| h.value_at_quantile(q) as f64).collect();
                rows.push(Row::new("latency", metric, *kind, size, true, values));
            }
            let p50: Vec<u64> = hs.iter().map(|h| h.value_at_quantile(0.5)).collect();
            println!("latency {size:>6} B {:<22} p50 {p50:?} ns", kind.name());
        }
    }
}

/// 1 writer → 1 reader: messages per second.
fn stream(kind: Kind, size: usize, n: usize) -> f64 {
    let (mk_a, mk_b) = peers::pair(kind, size, 1);
    let start = Arc::new(Barrier::new(2));
    let s2 = start.clone();
    let reader = std::thread::spawn(move || {
        pin(1);
        let mut b = mk_b();
        let mut buf = vec![0u8; size.max(64)];
        s2.wait();
        let sleeps = thread_sleeps();
        for _ in 0..n {
            b.recv(&mut buf);
        }
        (Instant::now(), thread_sleeps() - sleeps)
    });
    pin(0);
    let mut a = mk_a();
    let msg = vec![0x5au8; size];
    start.wait();
    let sleeps = thread_sleeps();
    let t0 = Instant::now();
    for _ in 0..n {
        a.send(&msg);
    }
    a.flush();
    let writer_sleeps = thread_sleeps() - sleeps;
    let (end, reader_sleeps) = reader.join().unwrap();
    // Why a rate is what it is: how often each side went to sleep (and had to be woken).
    println!(
        "  {} {size} B: sleeps per 1000 messages: writer {}, reader {}",
        kind.name(),
        writer_sleeps * 1000 / n as i64,
        reader_sleeps * 1000 / n as i64
    );
    n as f64 / end.duration_since(t0).as_secs_f64()
}

const STREAM_KINDS: [Kind; 13] = [
    Kind::Pipe,
    Kind::SeqPacket,
    Kind::PosixMq,
    Kind::EventfdShm,
    Kind::MemchanRead,
    Kind::MemchanEpoll,
    Kind::MemchanMmapPoll,
    Kind::MemchanBatch,
    Kind::ProducerRead,
    Kind::ProducerMmapPoll,
    Kind::ProducerMmapSpin,
    Kind::Iceoryx2Busy,
    Kind::Iceoryx2Event,
];

pub fn throughput(rows: &mut Vec<Row>, reps: usize, scale: f64) {
    let kinds = chosen(&STREAM_KINDS);
    for size in [64, 4096] {
        let rates = rounds(&kinds, reps, |k| stream(k, size, iters(20000, scale)));
        for (kind, v) in kinds.iter().zip(rates) {
            println!("throughput {size:>5} B {:<22} {:?} msg/s", kind.name(), v);
            let mb = v.iter().map(|m| m * size as f64 / 1e6).collect();
            rows.push(Row::new("throughput", "msgs/s", *kind, size, false, v));
            rows.push(Row::new("throughput", "MB/s", *kind, size, false, mb));
        }
    }
}

/// 1 writer → `readers` readers of 64 B messages, `n` messages: (deliveries/s, writer CPU ns
/// per message).
fn fan(kind: Kind, readers: usize, n: usize) -> (f64, f64) {
    let size = 64;
    let (mk_writer, mk_readers) = peers::fan(kind, readers, size);
    let start = Arc::new(Barrier::new(readers + 1));
    let mut threads = Vec::new();
    for (r, mk) in mk_readers.into_iter().enumerate() {
        let s = start.clone();
        threads.push(std::thread::spawn(move || {
            pin_reader(r);
            let mut end = mk();
            let mut buf = vec![0u8; 128];
            s.wait();
            for _ in 0..n {
                end.recv(&mut buf);
            }
            Instant::now()
        }));
    }
    pin(0);
    let mut tx = mk_writer();
    let msg = [0x5au8; 64];
    start.wait();
    let (t0, c0) = (Instant::now(), thread_cpu());
    for _ in 0..n {
        tx.send(&msg);
    }
    let cpu = thread_cpu() - c0;
    let end = threads
        .into_iter()
        .map(|t| t.join().unwrap())
        .max()
        .unwrap();
    let secs = end.duration_since(t0).as_secs_f64();
    (
        (readers * n) as f64 / secs,
        cpu.as_nanos() as f64 / n as f64,
    )
}

pub fn fanout(rows: &mut Vec<Row>, reps: usize, scale: f64) {
    let kinds = chosen(&[
        Kind::MemchanRead,
        Kind::ProducerRead,
        Kind::SeqPacket,
        Kind::Iceoryx2Event,
    ]);
    for readers in [1, 2, 4, 8] {
        let results = rounds(&kinds, reps, |kind| fan(kind, readers, iters(20000, scale)));
        for (&kind, v) in kinds.iter().zip(results) {
            println!("fanout {readers} {:<16} {:?}", kind.name(), v);
            let rate = v.iter().map(|x| x.0).collect();
            let cpu = v.iter().map(|x| x.1).collect();
            rows.push(Row::new("fanout", "deliveries/s", kind, 64, false, rate).readers(readers));
            rows.push(
                Row::new("fanout", "writer CPU ns/msg", kind, 64, true, cpu).readers(readers),
            );
        }
    }
}

/// CPU cost of moving one message, without wake-ups or a second CPU: one thread sends a
/// message and receives it back, over and over (the kernel work of both sides, which the
/// ping-pong and streaming figures mix with scheduling).
fn one_thread(kind: Kind, size: usize, n: usize) -> f64 {
    let (mk_a, mk_b) = peers::pair(kind, size.max(64), 2);
    pin(0);
    let (mut a, mut b) = (mk_a(), mk_b());
    let msg = vec![0x5au8; size];
    let mut buf = vec![0u8; size.max(64)];
    for _ in 0..n / 10 + 10 {
        a.send(&msg);
        b.recv(&mut buf);
    }
    let t0 = Instant::now();
    for _ in 0..n {
        a.send(&msg);
        b.recv(&mut buf);
    }
    t0.elapsed().as_nanos() as f64 / n as f64
}

pub fn cost(rows: &mut Vec<Row>, reps: usize, scale: f64) {
    let kinds = chosen(&[
        Kind::Pipe,
        Kind::SeqPacket,
        Kind::PosixMq,
        Kind::MemchanRead,
        Kind::MemchanMmapPoll,
        Kind::ProducerMmapPoll,
        Kind::Iceoryx2Busy,
    ]);
    for size in [64, 4096] {
        let costs = rounds(&kinds, reps, |k| one_thread(k, size, iters(20000, scale)));
        for (kind, v) in kinds.iter().zip(costs) {
            println!("cost {size:>5} B {:<22} {:?} ns", kind.name(), v);
            rows.push(Row::new(
                "one thread",
                "ns per send + receive",
                *kind,
                size,
                true,
                v,
            ));
        }
    }
}

pub fn sizes(rows: &mut Vec<Row>, reps: usize, scale: f64) {
    let kinds = chosen(&[
        Kind::Pipe,
        Kind::SeqPacket,
        Kind::MemchanRead,
        Kind::MemchanMmapPoll,
    ]);
    for size in [64, 256, 1024, 4096, 16384, 65536] {
        let results = rounds(&kinds, reps, |k| {
            let lat = pingpong(k, size, iters(500, scale)).value_at_quantile(0.5) as f64;
            (lat, stream(k, size, iters(4000, scale)) * size as f64 / 1e6)
        });
        for (kind, v) in kinds.iter().zip(results) {
            let (lat, tput): (Vec<f64>, Vec<f64>) = v.into_iter().unzip();
            println!(
                "size {size:>6} B {:<22} p50 {lat:?} ns, {tput:?} MB/s",
                kind.name()
            );
            rows.push(Row::new("size", "p50 ns", *kind, size, true, lat));
            rows.push(Row::new("size", "MB/s", *kind, size, false, tput));
        }
    }
}

/// Slab memory (KiB) before and after moving many messages: no allocation per message means
/// no growth.
pub fn slab_check(scale: f64) -> (u64, u64, u64) {
    let slab = || {
        std::fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("Slab:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    let n = iters(50000, scale);
    let _ = stream(Kind::MemchanRead, 64, 1000);
    let before = slab();
    let _ = stream(Kind::MemchanRead, 64, n);
    let after = slab();
    println!("slab: {before} KiB before, {after} KiB after {n} messages");
    (before, after, n as u64)
}
