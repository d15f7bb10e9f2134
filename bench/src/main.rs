//! `memchan-bench`: memchan and its peers measured side by side, in one run on one machine.
//!
//! Run by `cargo xtask bench` inside the test guest (it reloads the module with larger rings
//! and messages). Writes raw results as JSON to `$MEMCHAN_SCRATCH/bench.json`; xtask turns them
//! into the markdown table and charts under `bench/results/`.

mod iceoryx;
mod network;
mod peers;
mod workloads;

use serde::Serialize;

/// One measured value of one transport, repeated.
#[derive(Serialize)]
pub struct Row {
    /// Workload: "latency", "throughput", "fanout", "one thread", "size", "network".
    pub group: &'static str,
    /// What was measured, e.g. "p50", "msgs/s", "writer ns/msg".
    pub metric: &'static str,
    /// Transport name (for people: tables and charts).
    pub transport: &'static str,
    /// [`peers::Kind::role`]: `memchan`, `peer` or `floor` (for programs).
    pub role: &'static str,
    /// [`peers::Kind::path`]: memchan's receive path, empty for the others.
    pub path: &'static str,
    /// [`peers::Kind::busy`]: whether the receiver spins instead of sleeping.
    pub busy: bool,
    /// Message size in bytes.
    pub size: usize,
    /// Number of readers (fan-out), else 1.
    pub readers: usize,
    /// Whether lower is better.
    pub lower_is_better: bool,
    /// One value per repetition.
    pub values: Vec<f64>,
}

impl Row {
    /// A row of transport `kind`, one reader.
    pub fn new(
        group: &'static str,
        metric: &'static str,
        kind: peers::Kind,
        size: usize,
        lower_is_better: bool,
        values: Vec<f64>,
    ) -> Self {
        Row {
            group,
            metric,
            transport: kind.name(),
            role: kind.role(),
            path: kind.path(),
            busy: kind.busy(),
            size,
            readers: 1,
            lower_is_better,
            values,
        }
    }

    /// The same row, for `readers` readers (fan-out).
    pub fn readers(self, readers: usize) -> Self {
        Row { readers, ..self }
    }
}

/// The whole run.
#[derive(Serialize)]
struct Report {
    kernel: String,
    cpus: usize,
    repetitions: usize,
    slab_kib_before: u64,
    slab_kib_after: u64,
    slab_messages: u64,
    rows: Vec<Row>,
}

/// Says how many iceoryx2 subscriber waits in `workload` ended by the bound on them rather
/// than by a notification (see `iceoryx::limited_waits`).
fn limited(workload: &str) {
    let n = iceoryx::limited_waits();
    if n > 0 {
        println!(
            "{workload}: {n} iceoryx2 listener wait(s) ended by the {:?} bound",
            iceoryx::WAIT_LIMIT
        );
    }
}

fn main() {
    // A panic in any thread ends the run at once, naming itself: a worker that died would
    // otherwise leave the others waiting at a barrier or in a join, with nothing printed.
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        std::process::exit(101);
    }));
    // Helper processes of the network workload, started by it in a network namespace.
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["--zenoh-source", endpoint] => return network::source(endpoint),
        ["--zenoh-sink", endpoint] => return network::sink(endpoint),
        [] => {}
        _ => panic!("usage: memchan-bench [--zenoh-source EP | --zenoh-sink EP] (see main.rs)"),
    }
    let reps: usize = std::env::var("MEMCHAN_BENCH_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let scale: f64 = std::env::var("MEMCHAN_BENCH_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    let cpus = workloads::cpus();
    println!("bench: {cpus} CPUs, {reps} repetitions, scale {scale}");
    // MEMCHAN_BENCH_SETUP=only reloads the module for benchmarking and exits; =skip runs on the
    // module as it is: a profile loads it first, so that perf, which learns where modules lie
    // when it starts recording, can name the module's functions.
    match std::env::var("MEMCHAN_BENCH_SETUP").as_deref() {
        Ok("only") => {
            workloads::setup();
            return;
        }
        Ok("skip") => {}
        _ => workloads::setup(),
    }
    let mut rows = Vec::new();
    // MEMCHAN_BENCH_ONLY=throughput (a comma-separated list) runs only those workloads, for
    // quick experiments; published results run all of them.
    let only = std::env::var("MEMCHAN_BENCH_ONLY").unwrap_or_default();
    let run = |w: &str| only.is_empty() || only.split(',').any(|o| o == w);
    if run("latency") {
        workloads::latency(&mut rows, reps, scale);
        limited("latency");
    }
    if run("throughput") {
        workloads::throughput(&mut rows, reps, scale);
        limited("throughput");
    }
    if run("fanout") {
        workloads::fanout(&mut rows, reps, scale);
        limited("fanout");
    }
    if run("cost") {
        workloads::cost(&mut rows, reps, scale);
        limited("cost");
    }
    if run("sizes") {
        workloads::sizes(&mut rows, reps, scale);
        limited("sizes");
    }
    if run("network") {
        network::network(&mut rows, reps, scale);
    }
    let (before, after, n) = workloads::slab_check(scale);
    let report = Report {
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        cpus,
        repetitions: reps,
        slab_kib_before: before,
        slab_kib_after: after,
        slab_messages: n,
        rows,
    };
    let dir = std::env::var("MEMCHAN_SCRATCH").unwrap_or_else(|_| ".".into());
    let path = format!("{dir}/bench.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    println!("bench: {} rows written to {path}", report.rows.len());
}
