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

mod ring_map;
pub mod uffd;

pub use ring_map::RingMap;
use rustix::fs::{Mode, OFlags};
pub use rustix::io::Errno;
pub use uffd::Uffd;

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

/// The start of the line [`skip`] prints, which `cargo xtask test` counts.
pub const SKIP_MARKER: &str = "memchan-test skipped: ";

/// Reports test `test` as skipped for `reason` (the caller then returns): libtest has no
/// skipped outcome, so `cargo xtask test` counts these lines and reports such a test as
/// skipped, not passed.
pub fn skip(test: &str, reason: &str) {
    println!("{SKIP_MARKER}{test}: {reason}");
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

/// Raw `ioctl` returning the result or the errno (tests pass hostile arguments on purpose).
pub fn ioctl(fd: &OwnedFd, cmd: u32, arg: usize) -> Result<i32, Errno> {
    use std::os::fd::AsRawFd;
    // SAFETY: the kernel validates `arg`; a bad pointer must give EFAULT, which is under test.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), cmd as _, arg) };
    if r < 0 {
        Err(Errno::from_raw_os_error(
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
        ))
    } else {
        Ok(r)
    }
}

/// Reads a struct the kernel fills in with ioctl `cmd`.
pub fn get<T: Default>(fd: &OwnedFd, cmd: u32) -> Result<T, Errno> {
    let mut v = T::default();
    ioctl(fd, cmd, &mut v as *mut T as usize)?;
    Ok(v)
}

/// `MEMCHAN_IOC_INFO`.
pub fn info(fd: &OwnedFd) -> memchan_abi::ChannelInfo {
    get(fd, memchan_abi::IOC_INFO).expect("IOC_INFO")
}

/// `MEMCHAN_IOC_STATS`.
pub fn stats(fd: &OwnedFd) -> memchan_abi::ChannelStats {
    get(fd, memchan_abi::IOC_STATS).expect("IOC_STATS")
}

/// `MEMCHAN_IOC_READER`.
pub fn reader(fd: &OwnedFd) -> memchan_abi::ReaderState {
    get(fd, memchan_abi::IOC_READER).expect("IOC_READER")
}

/// Sets the channel's policy (needs a writable fd).
pub fn set_policy(fd: &OwnedFd, policy: u32) {
    ioctl(fd, memchan_abi::IOC_SET_POLICY, policy as usize).expect("IOC_SET_POLICY");
}

/// Opens channel `path` with `flags`.
pub fn open_path(path: &str, flags: OFlags) -> rustix::io::Result<OwnedFd> {
    rustix::fs::open(path, flags | OFlags::CLOEXEC, Mode::empty())
}

/// Reads one message (record mode off) into a fresh buffer.
pub fn recv(fd: &OwnedFd) -> Result<Vec<u8>, Errno> {
    let mut buf = vec![0u8; 65536];
    let n = rustix::io::read(fd, &mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

/// Reads one record-mode message: header and payload.
pub fn recv_record(fd: &OwnedFd) -> Result<(memchan_abi::RecordHeader, Vec<u8>), Errno> {
    let buf = recv(fd)?;
    let hs = memchan_abi::RECORD_HEADER_SIZE as usize;
    assert!(buf.len() >= hs, "record shorter than its header");
    let h = memchan_abi::RecordHeader::parse(&buf).expect("a whole header");
    assert_eq!(
        h.len as usize,
        buf.len() - hs,
        "header length differs from read() size"
    );
    Ok((h, buf[hs..].to_vec()))
}

/// Writes one message.
pub fn send(fd: &OwnedFd, msg: &[u8]) -> Result<usize, Errno> {
    rustix::io::write(fd, msg)
}

/// `poll()` revents for `fd` with a zero timeout.
pub fn revents(fd: &OwnedFd) -> rustix::event::PollFlags {
    let mut fds = [rustix::event::PollFd::new(
        fd,
        rustix::event::PollFlags::all(),
    )];
    let now = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    rustix::event::poll(&mut fds, Some(&now)).expect("poll");
    fds[0].revents()
}

/// Reloads the module with `params` (e.g. `"channels=2 ring_kib=4"`); returns insmod's status.
pub fn reload(params: &str) -> i32 {
    let ko = std::env::var("MEMCHAN_KO").expect("MEMCHAN_KO set by xtask");
    if std::path::Path::new("/sys/module/memchan").exists() {
        assert_eq!(sh("rmmod memchan"), 0, "rmmod failed (a file still open?)");
    }
    sh(&format!("insmod {ko} {params}"))
}

/// The calling thread's last OS error as an `Errno`.
pub fn last_errno() -> Errno {
    Errno::from_raw_os_error(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
}

/// A named channel made through configfs for one test, removed when dropped (also when the
/// test fails: a leftover named channel would keep the module from unloading).
pub struct TestChannel {
    dir: String,
    /// Its device node.
    pub path: String,
}

impl TestChannel {
    /// `mkdir /sys/kernel/config/memchan/<name>`, then writes each `(attribute, value)`.
    pub fn new(name: &str, settings: &[(&str, &str)]) -> Self {
        let dir = format!("/sys/kernel/config/memchan/{name}");
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {dir}: {e}"));
        let ch = Self {
            dir,
            path: format!("/dev/memchan-{name}"),
        };
        for (attr, value) in settings {
            std::fs::write(format!("{}/{attr}", ch.dir), value)
                .unwrap_or_else(|e| panic!("{attr} = {value}: {e}"));
        }
        ch
    }
}

impl TestChannel {
    /// Writes configfs attribute `attr` of the channel.
    pub fn set(&self, attr: &str, value: &str) {
        std::fs::write(format!("{}/{attr}", self.dir), value)
            .unwrap_or_else(|e| panic!("{attr} = {value}: {e}"));
    }

    /// Reads configfs attribute `attr` of the channel (without the newline).
    pub fn get(&self, attr: &str) -> String {
        let v = std::fs::read_to_string(format!("{}/{attr}", self.dir))
            .unwrap_or_else(|e| panic!("reading {attr}: {e}"));
        v.trim_end().to_string()
    }
}

/// Runs `f` in a forked child process with user and group id `uid` and no supplementary
/// groups (no capabilities, unless `uid` is 0), and returns what it returned (its exit code;
/// 100 if the ids could not be set). `f` must only make system calls (no allocation: the
/// parent has other threads).
pub fn as_user(uid: u32, f: impl FnOnce() -> i32) -> i32 {
    // SAFETY: the child only makes system calls (as `f` promises) and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", last_errno());
    if pid == 0 {
        // SAFETY: plain system calls in the child; `_exit` never returns.
        unsafe {
            let ok = libc::setgroups(0, std::ptr::null()) == 0
                && libc::setgid(uid) == 0
                && libc::setuid(uid) == 0;
            libc::_exit(if ok { f() } else { 100 });
        }
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(r, pid, "waitpid: {}", last_errno());
    assert!(libc::WIFEXITED(status), "child did not exit normally");
    libc::WEXITSTATUS(status)
}

/// The raw errno of `r` as an exit code for [`as_user`] (0 for success).
pub fn errno_code<T>(r: Result<T, Errno>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.raw_os_error(),
    }
}

/// The calling thread's kernel thread id.
pub fn gettid() -> i32 {
    // SAFETY: `gettid` has no preconditions.
    unsafe { libc::gettid() }
}

/// The scheduler state letter of thread `tid` of this process.
pub fn thread_state(tid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

impl Drop for TestChannel {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}
