//! Across a network link: two channels bridged by `memchan bridge` over Zenoh, against Zenoh
//! publish/subscribe alone on the same link, so that the bridge's own cost shows.
//!
//! Two network namespaces joined by a veth pair stand in for two machines (nothing leaves the
//! guest). Bridged: this process writes channel 2, a `memchan bridge --direction out` in the
//! first namespace publishes it, a `memchan bridge --direction in` in the second writes what
//! arrives into channel 3, and this process reads channel 3. Zenoh alone: a publisher process
//! in the first namespace and a subscriber process in the second (`memchan-bench
//! --zenoh-source` / `--zenoh-sink`), with the bridge's Zenoh settings and congestion control
//! (`block` channels: `CongestionControl::Block`). Every message carries the monotonic clock
//! of its sending (one clock for every process of the guest), so latency is one-way.

use std::io::{BufRead, BufReader, Write as _};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use memchan::bridge::ZenohOptions;
use memchan::{channel_path, Error, Receiver, Sender};
use serde::{Deserialize, Serialize};
use zenoh::qos::CongestionControl;
use zenoh::Wait;

use crate::workloads::{iters, rounds};
use crate::Row;

const NS_A: &str = "mcnA";
const NS_B: &str = "mcnB";
const ADDR_A: &str = "10.78.0.1";
const ADDR_B: &str = "10.78.0.2";
/// The bridges' Zenoh port (the publishing bridge listens, the other connects).
const BRIDGE_EP: &str = "tcp/10.78.0.1:7450";
/// Zenoh alone: the publisher listens, the subscriber connects, as with the bridges.
const ZENOH_EP: &str = "tcp/10.78.0.1:7451";
const BRIDGE_KEY: &str = "memchan/bench/bridge";
const ZENOH_KEY: &str = "memchan/bench/zenoh";
/// The channels bridged (the module is loaded with four).
const FROM: u32 = 2;
const TO: u32 = 3;
/// Latency is measured one message at a time, this far apart (no queueing behind the last).
const PACE: Duration = Duration::from_millis(2);
/// How long one message may take before a phase is given up (software emulation, connection
/// set-up included).
const SLOW: Duration = Duration::from_secs(30);
/// The message header: kind, index, sent at, phase started at.
const HEADER: usize = 32;
const PROBE: u8 = 0;
const DATA: u8 = 1;
const END: u8 = 2;

/// The monotonic clock, in ns (the same clock in every process of the guest).
fn now_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (t.tv_sec as u64) * 1_000_000_000 + t.tv_nsec as u64
}

fn word(msg: &[u8], at: usize) -> u64 {
    msg.get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

/// What the receiving end saw of one phase.
#[derive(Serialize, Deserialize, Debug, Default, Clone, Copy)]
struct Received {
    /// Data messages that arrived.
    count: u64,
    /// One-way latency percentiles, ns.
    p50: u64,
    p99: u64,
    /// Messages per second, from the phase's start at the sender to the last arrival.
    rate: f64,
}

/// Counts one phase's messages as they arrive, until its end marker.
struct Tally {
    hist: Histogram<u64>,
    count: u64,
    start: u64,
    last: u64,
}

impl Tally {
    fn new() -> Self {
        Self {
            hist: Histogram::new(3).expect("3 significant digits"),
            count: 0,
            start: 0,
            last: 0,
        }
    }

    /// Takes one message; `true` at the phase's end marker.
    fn take(&mut self, msg: &[u8]) -> bool {
        let at = now_ns();
        match msg.first() {
            Some(&DATA) => {
                self.count += 1;
                self.start = word(msg, 24);
                self.last = at;
                let _ = self.hist.record(at.saturating_sub(word(msg, 16)));
                false
            }
            Some(&END) => true,
            _ => false,
        }
    }

    fn result(&self) -> Received {
        let secs = self.last.saturating_sub(self.start) as f64 / 1e9;
        Received {
            count: self.count,
            p50: self.hist.value_at_quantile(0.5),
            p99: self.hist.value_at_quantile(0.99),
            rate: if secs > 0.0 {
                self.count as f64 / secs
            } else {
                0.0
            },
        }
    }
}

/// One phase: `n` messages of `size` bytes, paced for latency or back to back for throughput.
#[derive(Serialize, Deserialize, Debug, Clone, Copy)]
struct Phase {
    size: usize,
    n: usize,
    paced: bool,
}

/// Sends a phase's messages and its end marker through `put`.
fn emit(phase: Phase, mut put: impl FnMut(&[u8])) {
    let mut msg = vec![0x5au8; phase.size.max(HEADER)];
    let start = now_ns();
    let t0 = Instant::now();
    msg[24..32].copy_from_slice(&start.to_le_bytes());
    for i in 0..phase.n {
        if phase.paced {
            let due = t0 + PACE * i as u32;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        msg[0] = DATA;
        msg[8..16].copy_from_slice(&(i as u64).to_le_bytes());
        msg[16..24].copy_from_slice(&now_ns().to_le_bytes());
        put(&msg);
    }
    msg[0] = END;
    put(&msg[..HEADER]);
}

/// A probe message (dropped by receivers; sent until one arrives).
fn probe() -> [u8; HEADER] {
    let mut msg = [0u8; HEADER];
    msg[0] = PROBE;
    msg
}

/// Two namespaces joined by veth, removed when dropped.
struct Net;

impl Net {
    fn new() -> Option<Self> {
        let sh = |c: &str| {
            Command::new("sh")
                .args(["-c", c])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        sh(&format!("ip netns del {NS_A}; ip netns del {NS_B}"));
        let up = sh(&format!(
            "set -e; ip netns add {NS_A}; ip netns add {NS_B}; \
             ip link add vA netns {NS_A} type veth peer name vB netns {NS_B}; \
             ip -n {NS_A} addr add {ADDR_A}/24 dev vA; ip -n {NS_B} addr add {ADDR_B}/24 dev vB; \
             for n in {NS_A} {NS_B}; do ip -n $n link set lo up; done; \
             ip -n {NS_A} link set vA up; ip -n {NS_B} link set vB up"
        ));
        up.then_some(Self)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = Command::new("sh")
            .args(["-c", &format!("ip netns del {NS_A}; ip netns del {NS_B}")])
            .status();
    }
}

/// A helper process in a namespace, killed when dropped.
struct Helper(Child);

impl Helper {
    fn start(ns: &str, program: &str, args: &[&str]) -> Self {
        let child = Command::new("ip")
            .args(["netns", "exec", ns, program])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {program} in {ns}: {e}"));
        Self(child)
    }

    fn stdin(&mut self) -> &mut ChildStdin {
        self.0.stdin.as_mut().expect("piped stdin")
    }

    fn stdout(&mut self) -> BufReader<ChildStdout> {
        BufReader::new(self.0.stdout.take().expect("piped stdout"))
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A way across the link.
trait Link {
    /// Runs one phase, returns what arrived.
    fn phase(&mut self, phase: Phase) -> Received;
}

/// Channel 2 → `memchan bridge` → veth → `memchan bridge` → channel 3.
struct Bridged {
    tx: Sender,
    rx: Receiver,
    _bridges: [Helper; 2],
}

impl Bridged {
    fn start(cli: &str) -> Self {
        let common = ["--quiet", "--cfg", "scouting/multicast/enabled=false"];
        let (from, to) = (channel_path(FROM), channel_path(TO));
        let (from, to) = (from.to_string_lossy(), to.to_string_lossy());
        let mut out = vec!["bridge", &from, BRIDGE_KEY, "--direction", "out"];
        out.extend(["--listen", BRIDGE_EP]);
        out.extend(common);
        let mut inward = vec!["bridge", &to, BRIDGE_KEY, "--direction", "in"];
        inward.extend(["--connect", BRIDGE_EP]);
        inward.extend(common);
        let mut rx = Receiver::open_index(TO).expect("open channel 3");
        let tx = Sender::open_index(FROM).expect("open channel 2");
        let bridges = [
            Helper::start(NS_A, cli, &out),
            Helper::start(NS_B, cli, &inward),
        ];
        let deadline = Instant::now() + SLOW * 4;
        'flowing: loop {
            assert!(Instant::now() < deadline, "no bridged message arrived");
            tx.send(&probe()).expect("send a probe");
            while let Ok(m) = rx.recv_timeout(Duration::from_millis(200)) {
                if m.payload.first() == Some(&PROBE) {
                    break 'flowing;
                }
            }
        }
        Self {
            tx,
            rx,
            _bridges: bridges,
        }
    }
}

impl Link for Bridged {
    fn phase(&mut self, phase: Phase) -> Received {
        let (tx, rx) = (&self.tx, &mut self.rx);
        std::thread::scope(|s| {
            let receiving = s.spawn(move || {
                let mut tally = Tally::new();
                loop {
                    match rx.recv_timeout(SLOW) {
                        Ok(m) if tally.take(m.payload) => break,
                        Ok(_) => {}
                        Err(Error::Overrun { lost }) => println!("  bridged: {lost} overrun"),
                        Err(e) => {
                            println!("  bridged: phase {phase:?} given up: {e}");
                            break;
                        }
                    }
                }
                tally.result()
            });
            emit(phase, |m| tx.send(m).expect("send on channel 2"));
            receiving.join().expect("receiving thread")
        })
    }
}

/// A Zenoh publisher process in one namespace, a subscriber process in the other.
struct ZenohAlone {
    source: Helper,
    results: BufReader<ChildStdout>,
    _sink: Helper,
}

impl ZenohAlone {
    fn start(bench: &str) -> Self {
        let mut source = Helper::start(NS_A, bench, &["--zenoh-source", ZENOH_EP]);
        let mut sink = Helper::start(NS_B, bench, &["--zenoh-sink", ZENOH_EP]);
        let mut results = sink.stdout();
        // Probes until the subscriber says one arrived (it prints "ready").
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let mut first = String::new();
        let reader = std::thread::spawn(move || {
            let n = results.read_line(&mut first);
            let _ = ready_tx.send((n.is_ok() && first.trim() == "ready", first));
            results
        });
        let deadline = Instant::now() + SLOW * 4;
        loop {
            assert!(Instant::now() < deadline, "no Zenoh message arrived");
            writeln!(source.stdin(), "probe").expect("command the publisher");
            match ready.recv_timeout(Duration::from_millis(200)) {
                Ok((true, _)) => break,
                Ok((false, line)) => panic!("Zenoh subscriber: {line:?}"),
                Err(_) => {}
            }
        }
        Self {
            source,
            results: reader.join().expect("reader"),
            _sink: sink,
        }
    }
}

impl Link for ZenohAlone {
    fn phase(&mut self, phase: Phase) -> Received {
        let command = serde_json::to_string(&phase).expect("a phase in JSON");
        writeln!(self.source.stdin(), "{command}").expect("command the publisher");
        let mut line = String::new();
        self.results
            .read_line(&mut line)
            .expect("the subscriber's result");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("subscriber said {line:?}: {e}"))
    }
}

/// The Zenoh session of a helper, set up as the bridges set theirs up.
fn session(listen: Option<&str>, connect: Option<&str>) -> zenoh::Session {
    let opts = ZenohOptions {
        listen: listen.into_iter().map(String::from).collect(),
        connect: connect.into_iter().map(String::from).collect(),
        settings: vec![("scouting/multicast/enabled".into(), "false".into())],
        ..ZenohOptions::default()
    };
    let config = opts
        .to_config(Some(crate::workloads::MAX + 4096))
        .expect("a Zenoh configuration");
    zenoh::open(config).wait().expect("a Zenoh session")
}

/// `memchan-bench --zenoh-source EP`: publishes what its standard input asks for (`probe`, or
/// a [`Phase`] in JSON), listening on `EP`.
pub fn source(endpoint: &str) {
    let session = session(Some(endpoint), None);
    let publisher = session
        .declare_publisher(ZENOH_KEY)
        .congestion_control(CongestionControl::Block)
        .wait()
        .expect("a publisher");
    let put = |m: &[u8]| publisher.put(m.to_vec()).wait().expect("publish");
    for line in std::io::stdin().lock().lines().map_while(Result::ok) {
        if line == "probe" {
            put(&probe());
        } else {
            let phase: Phase = serde_json::from_str(&line).expect("a phase");
            emit(phase, put);
        }
    }
}

/// `memchan-bench --zenoh-sink EP`: subscribes, connecting to `EP`; prints `ready` at the first
/// probe, then one [`Received`] in JSON per phase.
pub fn sink(endpoint: &str) {
    let session = session(None, Some(endpoint));
    let subscriber = session
        .declare_subscriber(ZENOH_KEY)
        .with(zenoh::handlers::FifoChannel::new(1024))
        .wait()
        .expect("a subscriber");
    let mut out = std::io::stdout().lock();
    let mut ready = false;
    let mut tally = Tally::new();
    while let Ok(Some(sample)) = subscriber.recv_timeout(SLOW * 8) {
        let msg = sample.payload().to_bytes();
        if !ready && msg.first() == Some(&PROBE) {
            ready = true;
            let _ = writeln!(out, "ready");
        }
        if tally.take(&msg) {
            let line = serde_json::to_string(&tally.result()).expect("JSON");
            let _ = writeln!(out, "{line}");
            tally = Tally::new();
        }
    }
}

/// The two ways across, in this order.
const TRANSPORTS: [&str; 2] = ["memchan bridge (veth)", "zenoh pub/sub (veth)"];

pub fn network(rows: &mut Vec<Row>, reps: usize, scale: f64) {
    let Ok(cli) = std::env::var("MEMCHAN_BENCH_CLI") else {
        println!("network: skipped (no MEMCHAN_BENCH_CLI: run by cargo xtask bench)");
        return;
    };
    // The earlier workloads left this thread pinned to CPU 0; the bridges and helpers started
    // from it would all share that CPU.
    crate::workloads::unpin();
    let Some(_net) = Net::new() else {
        println!("network: skipped (this kernel cannot make network namespaces joined by veth)");
        return;
    };
    let bench = std::env::current_exe().expect("own path");
    let bench = bench.to_string_lossy();
    let mut links: Vec<Box<dyn Link>> = vec![
        Box::new(Bridged::start(&cli)),
        Box::new(ZenohAlone::start(&bench)),
    ];
    for size in [64, 1024] {
        let latency = Phase {
            size,
            n: iters(500, scale),
            paced: true,
        };
        let throughput = Phase {
            size,
            n: iters(5000, scale),
            paced: false,
        };
        let results = rounds(&[0, 1], reps, |i: usize| {
            let link = &mut links[i];
            let l = link.phase(latency);
            let t = link.phase(throughput);
            for (what, r, n) in [("latency", l, latency.n), ("throughput", t, throughput.n)] {
                if r.count != n as u64 {
                    println!(
                        "  {}: {what} phase: {} of {n} arrived",
                        TRANSPORTS[i], r.count
                    );
                }
            }
            (l, t)
        });
        for (transport, v) in TRANSPORTS.iter().zip(results) {
            let p50: Vec<f64> = v.iter().map(|(l, _)| l.p50 as f64).collect();
            let p99 = v.iter().map(|(l, _)| l.p99 as f64).collect();
            let rate: Vec<f64> = v.iter().map(|(_, t)| t.rate).collect();
            let mb = rate.iter().map(|r| r * size as f64 / 1e6).collect();
            println!("network {size:>5} B {transport:<22} p50 {p50:?} ns, {rate:?} msg/s");
            let bridged = *transport == TRANSPORTS[0];
            let row = |metric, lower_is_better, values| Row {
                group: "network",
                metric,
                transport,
                role: if bridged { "memchan" } else { "peer" },
                path: if bridged { "bridge" } else { "" },
                busy: false,
                size,
                readers: 1,
                lower_is_better,
                values,
            };
            rows.push(row("p50 ns", true, p50));
            rows.push(row("p99 ns", true, p99));
            rows.push(row("msgs/s", false, rate));
            rows.push(row("MB/s", false, mb));
        }
    }
}
