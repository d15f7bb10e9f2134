//! `memchan bridge`: a channel bridged to a Zenoh key expression (`memchan::bridge`).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::ValueEnum;
use memchan::bridge::ZenohOptions;
use memchan::bridge::{Bridge, BridgeError, BridgeOptions, BridgeStats, Direction, Mode};

/// Arguments of `memchan bridge`.
#[derive(clap::Args)]
pub struct Args {
    /// Channel number, name or path.
    channel: String,
    /// Zenoh key expression (wildcards such as `robot/**` only with --direction in).
    key: String,
    /// out: publish the channel's messages; in: write the samples received into the channel;
    /// both: both, without sending anything back where it came from.
    #[arg(long, short, value_enum, default_value_t = DirectionArg::Out)]
    direction: DirectionArg,
    /// Listen on ENDPOINT (e.g. tcp/0.0.0.0:7447); repeatable.
    #[arg(long, value_name = "ENDPOINT")]
    listen: Vec<String>,
    /// Connect to ENDPOINT (e.g. tcp/192.168.1.2:7447), retried until it answers; repeatable.
    #[arg(long, value_name = "ENDPOINT")]
    connect: Vec<String>,
    /// Zenoh mode (default peer: other peers are found by multicast scouting or --connect).
    #[arg(long, value_enum)]
    mode: Option<ModeArg>,
    /// A Zenoh configuration file (JSON5), applied before the options above.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// One Zenoh setting, PATH=JSON5 (e.g. scouting/multicast/enabled=false); repeatable.
    #[arg(long = "cfg", value_name = "PATH=VALUE", value_parser = setting)]
    settings: Vec<(String, String)>,
    /// Seconds between stats lines.
    #[arg(long, default_value_t = 5.0, value_name = "SECS")]
    interval: f64,
    /// Stats lines as text or as JSON objects (one per line, on stdout).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// No stats lines (errors are still printed).
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum DirectionArg {
    Out,
    In,
    Both,
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    Peer,
    Client,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Format {
    Text,
    Json,
}

fn setting(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() && !v.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not PATH=VALUE")),
    }
}

/// Exit status for a bridge error (sysexits.h, as the other commands).
fn exit_code(err: &BridgeError) -> u8 {
    match err {
        BridgeError::Channel(e) => crate::exit_code(e),
        BridgeError::KeyExpr { .. } | BridgeError::Endpoint { .. } | BridgeError::Config(_) => 64,
        _ => 69,
    }
}

/// Runs the bridge until SIGINT or SIGTERM (a second SIGINT exits at once).
pub fn main(args: &Args) -> ExitCode {
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("memchan bridge: {err}");
            ExitCode::from(exit_code(&err))
        }
    }
}

/// Zenoh's own log (its connections, leases, routing), to standard error, when `RUST_LOG` asks
/// for it (`RUST_LOG=zenoh=debug`): standard output carries the stats lines.
fn zenoh_log() {
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_thread_names(true)
            .init();
    }
}

fn run(args: &Args) -> Result<(), BridgeError> {
    zenoh_log();
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(&stop))
            .and_then(|_| signal_hook::flag::register(sig, Arc::clone(&stop)))
            .map_err(|e| BridgeError::Config(format!("installing signal handlers: {e}")))?;
    }
    let direction = match args.direction {
        DirectionArg::Out => Direction::Out,
        DirectionArg::In => Direction::In,
        DirectionArg::Both => Direction::Both,
    };
    let opts = BridgeOptions {
        channel: crate::channel::path(&args.channel),
        key: args.key.clone(),
        direction,
        zenoh: ZenohOptions {
            mode: args.mode.map(|m| match m {
                ModeArg::Peer => Mode::Peer,
                ModeArg::Client => Mode::Client,
            }),
            listen: args.listen.clone(),
            connect: args.connect.clone(),
            config_file: args.config.clone(),
            settings: args.settings.clone(),
        },
    };
    let bridge = Bridge::start(&opts)?;
    if !args.quiet {
        let arrow = match direction {
            Direction::Out => "->",
            Direction::In => "<-",
            _ => "<->",
        };
        eprintln!(
            "memchan bridge: {} {arrow} {} ({} channel: congestion control {}); Ctrl-C stops",
            opts.channel.display(),
            opts.key,
            bridge.policy(),
            match bridge.policy() {
                memchan::Policy::Block => "block",
                memchan::Policy::Overwrite => "drop",
            }
        );
    }
    let interval = Duration::from_secs_f64(args.interval.clamp(0.1, 86_400.0));
    let start = Instant::now();
    let mut last = (start, BridgeStats::default());
    let mut next = start + interval;
    while !stop.load(Relaxed) && !bridge.is_finished() {
        std::thread::sleep(Duration::from_millis(50));
        let now = Instant::now();
        if now >= next {
            next = now + interval;
            let stats = bridge.stats();
            if !args.quiet {
                print_stats(
                    args.format,
                    start,
                    last,
                    (now, stats),
                    bridge.peers(),
                    false,
                );
            }
            last = (now, stats);
        }
    }
    let peers = bridge.peers();
    let stats = bridge.stop()?;
    if !args.quiet {
        print_stats(
            args.format,
            start,
            last,
            (Instant::now(), stats),
            peers,
            true,
        );
    }
    Ok(())
}

/// Binary prefixes for a byte count.
fn size(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    match i {
        0 => format!("{n} B"),
        _ => format!("{v:.1} {}", units.get(i).copied().unwrap_or("B")),
    }
}

fn print_stats(
    format: Format,
    start: Instant,
    (t0, s0): (Instant, BridgeStats),
    (t1, s1): (Instant, BridgeStats),
    peers: usize,
    last: bool,
) {
    let secs = t1.duration_since(t0).as_secs_f64().max(1e-9);
    let sent_rate = s1.sent.saturating_sub(s0.sent) as f64 / secs;
    let recv_rate = s1.received.saturating_sub(s0.received) as f64 / secs;
    let elapsed = t1.duration_since(start).as_secs_f64();
    let line = match format {
        Format::Json => serde_json::json!({
            "elapsed_s": elapsed,
            "final": last,
            "peers": peers,
            "sent": s1.sent,
            "sent_bytes": s1.sent_bytes,
            "sent_per_s": sent_rate,
            "source_lost": s1.source_lost,
            "echoes": s1.echoes,
            "received": s1.received,
            "received_bytes": s1.received_bytes,
            "received_per_s": recv_rate,
            "lost": s1.lost,
            "foreign": s1.foreign,
            "too_large": s1.too_large,
            "streams": s1.streams,
            "own": s1.own,
        })
        .to_string(),
        Format::Text => {
            let mut l = format!(
                "{elapsed:7.1}s  out {} msg {} {sent_rate:.0}/s  in {} msg {} {recv_rate:.0}/s  \
                 lost {}  peers {peers}",
                s1.sent,
                size(s1.sent_bytes),
                s1.received,
                size(s1.received_bytes),
                s1.lost.saturating_add(s1.source_lost),
            );
            if s1.too_large > 0 {
                l.push_str(&format!("  too large {}", s1.too_large));
            }
            if last {
                l.push_str("  (final)");
            }
            l
        }
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
