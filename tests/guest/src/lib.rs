//! Helpers for the guest tests: spawning helper processes and waiting for them to block.
//!
//! These tests need the real module: `cargo xtask test` runs them inside a guest where
//! `memchan.ko` is loaded (`MEMCHAN_GUEST=1`). On the host they are not part of
//! `cargo test --workspace`, and if started by hand they refuse to run rather than pass.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rustix::fs::{Mode, OFlags};

/// The default channel's node.
pub const DEV: &str = memchan_abi::DEVICE_PATH;

/// How long a test waits for something that should happen at once.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Panics unless running in the test guest with the module loaded.
pub fn require_guest() {
    assert_eq!(
        std::env::var("MEMCHAN_GUEST").as_deref(),
        Ok("1"),
        "guest tests must run inside the test VM: use `cargo xtask test`"
    );
}

/// Opens the default channel with `flags`.
pub fn open(flags: OFlags) -> rustix::io::Result<OwnedFd> {
    rustix::fs::open(DEV, flags | OFlags::CLOEXEC, Mode::empty())
}

/// Starts `sh -c script` with its stdout piped to the test.
pub fn spawn_sh(script: &str) -> Child {
    Command::new("sh")
        .args(["-c", script])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn sh")
}

/// Runs `sh -c script` to completion and returns its exit status code.
pub fn sh(script: &str) -> i32 {
    let out = Command::new("sh")
        .args(["-c", script])
        .output()
        .expect("run sh");
    if !out.status.success() {
        eprintln!("`{script}`: {}", String::from_utf8_lossy(&out.stderr));
    }
    out.status.code().unwrap_or(-1)
}

/// Waits until process `pid` has `path` open and is sleeping (blocked in a system call).
pub fn wait_blocked_on(pid: u32, path: &str) {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if has_open(pid, path) && state(pid) == Some('S') {
            // Sleeping with the device open: give it a moment to be well inside the wait.
            std::thread::sleep(Duration::from_millis(50));
            if state(pid) == Some('S') {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("process {pid} did not block on {path} within {PATIENCE:?}");
}

/// Whether `pid` has a file descriptor open on `path`.
pub fn has_open(pid: u32, path: &str) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.filter_map(Result::ok)
        .any(|e| std::fs::read_link(e.path()).is_ok_and(|t| t == Path::new(path)))
}

/// The scheduler state letter of `pid` (`R`, `S`, `D`, ...).
pub fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Bytes a child writes to its stdout, collected by a background thread.
pub struct Output(mpsc::Receiver<Vec<u8>>);

impl Output {
    /// Starts collecting `out`.
    pub fn new(out: ChildStdout) -> Self {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut out = out;
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = out.read(&mut buf) {
                if tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Self(rx)
    }

    /// Returns what arrived once at least `want` bytes did, or whatever arrived in `within`.
    pub fn take(&self, want: usize, within: Duration) -> Vec<u8> {
        let deadline = Instant::now() + within;
        let mut got = Vec::new();
        while got.len() < want {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.0.recv_timeout(left) {
                Ok(chunk) => got.extend(chunk),
                Err(_) => break,
            }
        }
        got
    }
}

/// Kills and reaps a child.
pub fn kill(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}
