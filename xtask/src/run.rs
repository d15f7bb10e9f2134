//! Running external commands: long steps with progress and a log file, short queries.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// How often a long step reports that it is still running.
const HEARTBEAT: Duration = Duration::from_secs(20);

/// Formats a duration as `1m05s`.
pub fn elapsed(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}.{}s", s, d.subsec_millis() / 100)
    }
}

/// Prints a stage header.
pub fn stage(what: &str) {
    println!("==> {what}");
}

/// Runs a long command with its output going to `log`, printing progress (elapsed time and the
/// log's latest line) every few seconds. On failure prints the end of the log and `hint`.
pub fn logged(what: &str, cmd: &mut Command, log: &Path, hint: &str) -> Result<()> {
    if let Some(dir) = log.parent() {
        crate::cache::mkdir(dir)?;
    }
    println!("==> {what} (log: {})", log.display());
    let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let err = out.try_clone()?;
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    let mut next_beat = start + HEARTBEAT;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        std::thread::sleep(Duration::from_millis(200));
        if Instant::now() >= next_beat {
            next_beat += HEARTBEAT;
            let last = last_lines(log, 1).join("");
            println!(
                "    ... {} elapsed; {}",
                elapsed(start.elapsed()),
                shorten(&last, 90)
            );
        }
    };
    if status.success() {
        println!("    done in {}", elapsed(start.elapsed()));
        return Ok(());
    }
    eprintln!(
        "    FAILED after {} ({status}); end of {}:",
        elapsed(start.elapsed()),
        log.display()
    );
    for line in last_lines(log, 30) {
        eprintln!("    | {line}");
    }
    bail!("{what} failed; full log: {}. {hint}", log.display())
}

/// Runs a command with inherited stdio and fails unless it succeeds.
pub fn checked(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!("{:?} failed: {status}", cmd.get_program());
    }
    Ok(())
}

/// Runs a command and returns its stdout (trimmed); fails unless it succeeds.
pub fn query(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!("{:?} failed: {}", cmd.get_program(), out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The last `n` non-empty lines of a (possibly large) log file.
pub fn last_lines(path: &Path, n: usize) -> Vec<String> {
    let Ok(mut f) = File::open(path) else {
        return Vec::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(16 * 1024)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}

/// Cuts `s` to at most `max` characters.
fn shorten(s: &str, max: usize) -> String {
    let s = s.trim();
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let cut: String = s.chars().take(max).collect();
        format!("{cut}...")
    }
}

/// `PATH` with `dir` in front.
pub fn path_with(dir: &Path) -> std::ffi::OsString {
    let mut paths = vec![dir.to_path_buf()];
    if let Some(old) = std::env::var_os("PATH") {
        paths.extend(std::env::split_paths(&old));
    }
    std::env::join_paths(paths).unwrap_or_default()
}

/// A log file for `name` in the cache's log directory.
pub fn log_path(name: &str) -> PathBuf {
    crate::cache::root()
        .join("logs")
        .join(format!("{name}.log"))
}
