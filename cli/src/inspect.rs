//! `memchan info` and `memchan stats`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use memchan::{Error, Info, Stats};

/// `memchan info [CHANNEL]`.
pub fn info(channel: Option<&str>) -> Result<(), Error> {
    if let Some(ch) = channel {
        let path = crate::channel::path(ch);
        let (i, _) = memchan::query(&path)?;
        println!("channel      {} ({})", i.index, path.display());
        println!("policy       {}", i.policy);
        println!("ring         {} bytes", i.ring_bytes);
        println!("max message  {} bytes", i.msg_max);
        println!(
            "messages     {} in the ring (seq {}..{})",
            i.messages_in_ring(),
            i.oldest_seq,
            i.next_seq
        );
        println!("readers      {}", i.subscribers);
        println!("writers      {}", i.writers);
        println!("mmap length  {} bytes", i.mmap_bytes);
        if let Some(access) = named_access(&path) {
            println!("access       {access}");
        }
        return Ok(());
    }
    let paths = crate::channel::all();
    if paths.is_empty() {
        return Err(Error::DeviceMissing {
            path: PathBuf::from(memchan::DEFAULT_PATH),
        });
    }
    println!(
        "{:<24} {:>3} {:<9} {:>9} {:>7} {:>10} {:>7} {:>7}",
        "DEVICE", "IDX", "POLICY", "RING", "MSG_MAX", "NEXT_SEQ", "READERS", "WRITERS"
    );
    for path in paths {
        match memchan::query(&path) {
            Ok((i, _)) => println!(
                "{:<24} {:>3} {:<9} {:>9} {:>7} {:>10} {:>7} {:>7}",
                path.display(),
                i.index,
                i.policy.name(),
                i.ring_bytes,
                i.msg_max,
                i.next_seq,
                i.subscribers,
                i.writers
            ),
            Err(e) => println!("{:<24} {e}", path.display()),
        }
    }
    Ok(())
}

/// For a named channel, its owner, group and mode from configfs.
fn named_access(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?.strip_prefix("memchan-")?;
    let dir = Path::new(memchan::named::CONFIGFS_DIR).join(name);
    let get = |a: &str| {
        std::fs::read_to_string(dir.join(a))
            .ok()
            .map(|s| s.trim().to_string())
    };
    Some(format!(
        "uid {} gid {} mode {} (checked by memchan at open)",
        get("uid")?,
        get("gid")?,
        get("mode")?
    ))
}

/// One reader of a channel, found in `/proc/<pid>/fdinfo`.
struct Reader {
    pid: u32,
    comm: String,
    fd: u32,
    lag: u64,
    lost: u64,
}

/// Every process's open files on `path` with read access (this process excluded), from
/// `/proc`. Processes of other users are visible only to root.
fn readers(path: &Path) -> Vec<Reader> {
    let me = std::process::id();
    let mut found = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return found;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).ok().as_deref() != Some(path) {
                continue;
            }
            let Some(n) = fd.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let info =
                std::fs::read_to_string(p.path().join(format!("fdinfo/{n}"))).unwrap_or_default();
            let field = |k: &str| {
                info.lines()
                    .find_map(|l| l.strip_prefix(k))
                    .and_then(|v| v.trim().parse::<u64>().ok())
            };
            if let Some(lag) = field("memchan_lag:") {
                found.push(Reader {
                    pid,
                    comm: std::fs::read_to_string(p.path().join("comm"))
                        .unwrap_or_default()
                        .trim()
                        .to_string(),
                    fd: n,
                    lag,
                    lost: field("memchan_lost:").unwrap_or(0),
                });
            }
        }
    }
    found
}

/// Per-second rate of a counter between two samples.
fn rate(now: u64, before: u64, dt: Duration) -> f64 {
    let secs = dt.as_secs_f64();
    if secs <= 0.0 {
        0.0
    } else {
        now.saturating_sub(before) as f64 / secs
    }
}

/// Prints one report; with `prev`, also rates since it.
fn report(
    out: &mut impl Write,
    path: &Path,
    info: &Info,
    s: &Stats,
    prev: Option<(&Stats, Duration)>,
) -> std::io::Result<()> {
    writeln!(
        out,
        "{}: policy {}, {} reader(s), {} writer(s), seq {}..{}",
        path.display(),
        info.policy,
        info.subscribers,
        info.writers,
        info.oldest_seq,
        info.next_seq
    )?;
    let r = |now, before: fn(&Stats) -> u64| match prev {
        Some((p, dt)) => format!("  ({:.0}/s)", rate(now, before(p), dt)),
        None => String::new(),
    };
    writeln!(
        out,
        "  messages        {}{}",
        s.messages,
        r(s.messages, |p| p.messages)
    )?;
    writeln!(
        out,
        "  bytes           {}{}",
        s.bytes,
        r(s.bytes, |p| p.bytes)
    )?;
    writeln!(
        out,
        "  delivered       {}{}",
        s.delivered,
        r(s.delivered, |p| p.delivered)
    )?;
    writeln!(
        out,
        "  overruns        {}{}",
        s.overruns,
        r(s.overruns, |p| p.overruns)
    )?;
    writeln!(out, "  lost            {}{}", s.lost, r(s.lost, |p| p.lost))?;
    writeln!(
        out,
        "  blocked writes  {}{}",
        s.blocked_writes,
        r(s.blocked_writes, |p| p.blocked_writes)
    )?;
    let readers = readers(path);
    if !readers.is_empty() {
        writeln!(
            out,
            "  {:>7} {:<16} {:>4} {:>10} {:>10}",
            "PID", "COMMAND", "FD", "LAG", "LOST"
        )?;
        for r in readers {
            writeln!(
                out,
                "  {:>7} {:<16} {:>4} {:>10} {:>10}",
                r.pid, r.comm, r.fd, r.lag, r.lost
            )?;
        }
    }
    Ok(())
}

/// `memchan stats CHANNEL [--watch]`.
pub fn stats(path: &Path, watch: bool, interval: f64) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    let mut prev: Option<(Stats, Instant)> = None;
    let interval = Duration::try_from_secs_f64(interval.max(0.1)).unwrap_or(Duration::from_secs(1));
    loop {
        let (info, stats) = memchan::query(path)?;
        let now = Instant::now();
        if watch {
            // Clear the screen and go home, like watch(1).
            let _ = write!(out, "\x1b[H\x1b[2J");
        }
        let p = prev.as_ref().map(|(s, t)| (s, now.duration_since(*t)));
        if report(&mut out, path, &info, &stats, p)
            .and_then(|()| out.flush())
            .is_err()
            || !watch
        {
            return Ok(());
        }
        prev = Some((stats, now));
        std::thread::sleep(interval);
    }
}
