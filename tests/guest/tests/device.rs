//! The first `/dev/memchan` round trips, through real processes and the real module.

use std::io::Write;
use std::process::Stdio;

use memchan_guest_tests::*;
use rustix::fs::OFlags;
use rustix::io::Errno;

#[test]
fn module_is_loaded_and_node_exists() {
    require_guest();
    let modules = std::fs::read_to_string("/proc/modules").unwrap();
    assert!(
        modules.lines().any(|l| l.starts_with("memchan ")),
        "memchan not in /proc/modules"
    );
    let st = rustix::fs::stat(DEV).expect("stat /dev/memchan");
    assert_eq!(
        st.st_mode & libc_s_ifmt(),
        0o020000,
        "/dev/memchan is not a character device"
    );
}

/// `S_IFMT`.
fn libc_s_ifmt() -> u32 {
    0o170000
}

#[test]
fn echo_reaches_a_blocked_reader_in_another_process() {
    require_guest();
    let mut reader = spawn_sh(&format!("exec cat {DEV}"));
    let pid = reader.id();
    wait_blocked_on(pid, DEV);
    assert_eq!(sh(&format!("echo hi > {DEV}")), 0, "writer failed");
    let got = Output::new(reader.stdout.take().unwrap()).take(3, PATIENCE);
    kill(reader);
    assert_eq!(got, b"hi\n");
}

#[test]
fn messages_arrive_in_order_one_per_read() {
    require_guest();
    let mut reader = spawn_sh(&format!("exec cat {DEV}"));
    wait_blocked_on(reader.id(), DEV);
    let out = Output::new(reader.stdout.take().unwrap());
    // Each message is written only after the reader passed the previous one on, so this also
    // shows a reader going back to sleep between messages.
    let mut got = Vec::new();
    for msg in ["one", "two", "3!!"] {
        wait_blocked_on(reader.id(), DEV);
        assert_eq!(sh(&format!("echo '{msg}' > {DEV}")), 0);
        got.extend(out.take(4, PATIENCE));
    }
    kill(reader);
    assert_eq!(String::from_utf8_lossy(&got), "one\ntwo\n3!!\n");
}

#[test]
fn nonblocking_read_on_empty_channel_is_eagain() {
    require_guest();
    let fd = open(OFlags::RDONLY | OFlags::NONBLOCK).expect("open");
    let mut buf = [0u8; 64];
    assert_eq!(rustix::io::read(&fd, &mut buf), Err(Errno::AGAIN));
    // Still EAGAIN: nothing was consumed or invented by the first call.
    assert_eq!(rustix::io::read(&fd, &mut buf), Err(Errno::AGAIN));
}

#[test]
fn a_reader_only_sees_messages_written_after_it_opened() {
    require_guest();
    assert_eq!(sh(&format!("echo old > {DEV}")), 0);
    let fd = open(OFlags::RDONLY | OFlags::NONBLOCK).expect("open");
    let mut buf = [0u8; 64];
    assert_eq!(rustix::io::read(&fd, &mut buf), Err(Errno::AGAIN));
    assert_eq!(sh(&format!("echo new > {DEV}")), 0);
    assert_eq!(rustix::io::read(&fd, &mut buf), Ok(4));
    assert_eq!(&buf[..4], b"new\n");
    assert_eq!(
        rustix::io::read(&fd, &mut buf),
        Err(Errno::AGAIN),
        "delivered twice"
    );
}

#[test]
fn one_write_is_one_message_all_or_nothing() {
    require_guest();
    let rd = open(OFlags::RDONLY | OFlags::NONBLOCK).expect("open reader");
    let wr = open(OFlags::WRONLY).expect("open writer");
    let max = memchan_abi::MSG_MAX as usize;
    let big = vec![0x5a_u8; max + 1];
    assert_eq!(
        rustix::io::write(&wr, &big),
        Err(Errno::MSGSIZE),
        "oversize write accepted"
    );
    let mut buf = vec![0u8; max + 1];
    assert_eq!(
        rustix::io::read(&rd, &mut buf),
        Err(Errno::AGAIN),
        "oversize write stored"
    );
    // A message of exactly the maximum size round-trips intact.
    let full: Vec<u8> = (0..max).map(|i| (i % 251) as u8).collect();
    assert_eq!(rustix::io::write(&wr, &full), Ok(max));
    assert_eq!(rustix::io::read(&rd, &mut buf), Ok(max));
    assert_eq!(&buf[..max], &full[..]);
}

#[test]
fn zero_length_write_stores_nothing() {
    require_guest();
    let rd = open(OFlags::RDONLY | OFlags::NONBLOCK).expect("open reader");
    let wr = open(OFlags::WRONLY).expect("open writer");
    assert_eq!(rustix::io::write(&wr, b""), Ok(0));
    let mut buf = [0u8; 16];
    assert_eq!(rustix::io::read(&rd, &mut buf), Err(Errno::AGAIN));
}

#[test]
fn short_read_buffer_is_emsgsize_and_keeps_the_message() {
    require_guest();
    let rd = open(OFlags::RDONLY | OFlags::NONBLOCK).expect("open reader");
    assert_eq!(sh(&format!("printf 'hello world' > {DEV}")), 0);
    let mut small = [0u8; 4];
    assert_eq!(rustix::io::read(&rd, &mut small), Err(Errno::MSGSIZE));
    assert_eq!(small, [0u8; 4], "partial data copied on EMSGSIZE");
    let mut buf = [0u8; 64];
    assert_eq!(rustix::io::read(&rd, &mut buf), Ok(11));
    assert_eq!(&buf[..11], b"hello world");
}

#[test]
fn bad_user_buffer_is_efault_and_channel_survives() {
    require_guest();
    let rd = open(OFlags::RDONLY | OFlags::NONBLOCK).expect("open reader");
    let wr = open(OFlags::WRONLY).expect("open writer");
    // SAFETY: the pointer is deliberately invalid; the kernel must reject it, not use it.
    let bad = unsafe { std::slice::from_raw_parts(8 as *const u8, 16) };
    assert_eq!(rustix::io::write(&wr, bad), Err(Errno::FAULT));
    assert_eq!(sh(&format!("printf 'after' > {DEV}")), 0);
    // SAFETY: as above, for the read direction.
    let bad = unsafe { std::slice::from_raw_parts_mut(8 as *mut u8, 16) };
    assert_eq!(rustix::io::read(&rd, bad), Err(Errno::FAULT));
    let mut buf = [0u8; 16];
    assert_eq!(
        rustix::io::read(&rd, &mut buf),
        Ok(5),
        "message lost after EFAULT"
    );
    assert_eq!(&buf[..5], b"after");
}

#[test]
fn signal_ends_a_blocked_read() {
    require_guest();
    let reader = spawn_sh(&format!("exec cat {DEV}"));
    let pid = reader.id();
    wait_blocked_on(pid, DEV);
    let mut reader = reader;
    reader.kill().unwrap(); // SIGKILL while blocked in read()
    let start = std::time::Instant::now();
    let status = reader.wait().unwrap();
    assert!(!status.success());
    assert!(
        start.elapsed() < PATIENCE,
        "blocked reader did not die promptly"
    );
}

/// Installs a no-op SIGUSR1 handler, with or without `SA_RESTART`.
fn sigusr1_handler(restart: bool) {
    extern "C" fn noop(_: libc::c_int) {}
    // SAFETY: a plain sigaction with a handler that does nothing.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = noop as *const () as usize;
        sa.sa_flags = if restart { libc::SA_RESTART } else { 0 };
        assert_eq!(libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()), 0);
    }
}

/// Starts a thread blocked in `read()` on a fresh reader; returns its pthread and result.
fn blocked_reader() -> (
    libc::pthread_t,
    std::sync::mpsc::Receiver<Result<Vec<u8>, Errno>>,
) {
    let fd = open(OFlags::RDONLY).expect("open");
    let (tx, rx) = std::sync::mpsc::channel();
    let (ttx, trx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // SAFETY: pthread_self and gettid have no preconditions.
        ttx.send(unsafe { (libc::pthread_self(), libc::gettid()) })
            .unwrap();
        let mut buf = [0u8; 64];
        let r = rustix::io::read(&fd, &mut buf).map(|n| buf[..n].to_vec());
        tx.send(r).unwrap();
    });
    let (t, tid) = trx.recv().unwrap();
    // A signal sent before the thread sleeps in read() would be handled first and the read
    // would then block for good: wait until it sleeps (nothing else it does sleeps), however
    // slow the kernel, instead of for a fixed time.
    let deadline = std::time::Instant::now() + PATIENCE;
    while state(tid as u32) != Some('S') {
        assert!(
            std::time::Instant::now() < deadline,
            "reader thread never blocked"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    std::thread::sleep(std::time::Duration::from_millis(50));
    (t, rx)
}

#[test]
fn a_signal_interrupts_a_blocked_read_with_eintr_or_restarts_it() {
    require_guest();
    // Without SA_RESTART: EINTR.
    sigusr1_handler(false);
    let (t, rx) = blocked_reader();
    // SAFETY: signalling our own live thread.
    unsafe { libc::pthread_kill(t, libc::SIGUSR1) };
    assert_eq!(
        rx.recv_timeout(PATIENCE).expect("read not interrupted"),
        Err(Errno::INTR)
    );
    // With SA_RESTART: the read goes on and receives the next message.
    sigusr1_handler(true);
    let (t, rx) = blocked_reader();
    // SAFETY: as above.
    unsafe { libc::pthread_kill(t, libc::SIGUSR1) };
    assert!(
        rx.recv_timeout(std::time::Duration::from_millis(300))
            .is_err(),
        "read returned instead of restarting"
    );
    assert_eq!(sh(&format!("printf after-signal > {DEV}")), 0);
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap().unwrap(), b"after-signal");
}

#[test]
fn writer_process_stdin_pipe_delivers_each_write() {
    require_guest();
    // A long-lived writer process: each `write()` it makes is one message.
    let fd = open(OFlags::RDONLY).expect("open reader");
    let mut writer = std::process::Command::new("sh")
        .args(["-c", &format!("exec cat > {DEV}")])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = writer.stdin.take().unwrap();
    stdin.write_all(b"via a pipe\n").unwrap();
    let mut buf = [0u8; 64];
    let n = rustix::io::read(&fd, &mut buf).expect("blocking read");
    assert_eq!(&buf[..n], b"via a pipe\n");
    drop(stdin);
    assert!(writer.wait().unwrap().success());
}

#[test]
fn zz_rmmod_refused_while_open_then_clean_and_reload() {
    // Named zz_ so it runs last (tests run in name order with --test-threads=1).
    require_guest();
    let ko = std::env::var("MEMCHAN_KO").expect("MEMCHAN_KO set by xtask");
    let fd = open(OFlags::RDONLY).expect("open");
    assert_ne!(
        sh("rmmod memchan 2>/dev/null"),
        0,
        "rmmod succeeded with a file open"
    );
    assert!(std::path::Path::new(DEV).exists());
    drop(fd);
    assert_eq!(sh("rmmod memchan"), 0, "rmmod failed with nothing open");
    assert!(
        !std::path::Path::new(DEV).exists(),
        "/dev/memchan still there after rmmod"
    );
    let modules = std::fs::read_to_string("/proc/modules").unwrap();
    assert!(!modules.lines().any(|l| l.starts_with("memchan ")));
    assert_eq!(sh(&format!("insmod {ko}")), 0, "reload failed");
    let fd = open(OFlags::RDONLY | OFlags::NONBLOCK).expect("open after reload");
    let mut buf = [0u8; 8];
    assert_eq!(rustix::io::read(&fd, &mut buf), Err(Errno::AGAIN));
}
