//! Fault injection (debug kernel): allocation failures injected into module load (channel
//! creation included) and open must give a clean error and leave nothing behind; the
//! kmemleak scan at the end of the guest run checks for leaks.
//!
//! Uses `/proc/thread-self/fail-nth` (`CONFIG_FAULT_INJECTION`, with `FAILSLAB` and
//! `FAIL_PAGE_ALLOC` made to apply to sleeping allocations): the Nth allocation of this
//! thread fails. On the plain test kernel (no fault injection) these tests say so and pass.

use std::io::Write;
use std::os::fd::AsRawFd;

use memchan_guest_tests::*;
use rustix::fs::OFlags;

/// Fault injection set up for a test; undone on drop.
struct Injection;

const KUNIT_FILTER: &str = "/sys/module/kunit/parameters/filter_glob";

impl Injection {
    /// Arms fault injection for sleeping slab and page allocations, quietly (no stack dump per
    /// injected failure), with KUnit's at-load run of the module's suite filtered out (an
    /// injected failure inside KUnit's own bookkeeping would read as a failed test). `None`
    /// without fault injection in this kernel.
    fn arm(test: &str) -> Option<Self> {
        if !std::path::Path::new("/proc/thread-self/fail-nth").exists() {
            assert_ne!(
                std::env::var("MEMCHAN_FLAVOR").as_deref(),
                Ok("debug"),
                "the debug kernel has no fault injection"
            );
            skip(
                test,
                "no fault injection in this kernel (runs on the debug kernel)",
            );
            return None;
        }
        if !std::path::Path::new("/sys/kernel/debug/failslab").exists() {
            assert_eq!(sh("mount -t debugfs none /sys/kernel/debug"), 0);
        }
        for (attr, v) in [
            ("failslab/ignore-gfp-wait", "N"),
            ("fail_page_alloc/ignore-gfp-wait", "N"),
            ("fail_page_alloc/min-order", "0"),
            ("failslab/verbose", "0"),
            ("fail_page_alloc/verbose", "0"),
        ] {
            std::fs::write(format!("/sys/kernel/debug/{attr}"), v)
                .unwrap_or_else(|e| panic!("{attr}: {e}"));
        }
        std::fs::write(KUNIT_FILTER, "memchan_none_such").unwrap();
        Some(Self)
    }
}

impl Drop for Injection {
    fn drop(&mut self) {
        let _ = std::fs::write(KUNIT_FILTER, "*.*");
    }
}

/// This thread's `fail-nth` file, kept open for writing: opening it allocates, writing does
/// not.
struct FailNth(std::fs::File);

const FAIL_NTH: &str = "/proc/thread-self/fail-nth";

impl FailNth {
    fn new() -> Self {
        Self(
            std::fs::OpenOptions::new()
                .write(true)
                .open(FAIL_NTH)
                .unwrap(),
        )
    }

    /// Runs `f` with the `n`th fault-injection point of this thread failing; returns its result
    /// and whether that point was reached (the failure injected).
    fn run<T>(&mut self, n: u32, f: impl FnOnce() -> T) -> (T, bool) {
        use std::io::Read;
        // Opened before arming (the file is not seekable: one fresh reader per check).
        let mut reader = std::fs::File::open(FAIL_NTH).unwrap();
        self.0.write_all(n.to_string().as_bytes()).unwrap();
        let r = f();
        let mut left = String::new();
        reader.read_to_string(&mut left).unwrap();
        self.0.write_all(b"0").unwrap();
        (r, left.trim() == "0")
    }
}

/// `finit_module(ko, params)` from this thread.
fn load(ko: &std::fs::File, params: &str) -> Result<(), Errno> {
    let params = std::ffi::CString::new(params).unwrap();
    // SAFETY: finit_module with a valid fd and NUL-terminated parameter string.
    let r = unsafe { libc::syscall(libc::SYS_finit_module, ko.as_raw_fd(), params.as_ptr(), 0) };
    if r < 0 {
        Err(last_errno())
    } else {
        Ok(())
    }
}

fn loaded() -> bool {
    std::path::Path::new("/sys/module/memchan").exists()
}

#[test]
fn allocation_failures_during_load_fail_cleanly() {
    require_guest();
    let Some(_armed) = Injection::arm("allocation_failures_during_load_fail_cleanly") else {
        return;
    };
    let ko = std::fs::File::open(std::env::var("MEMCHAN_KO").unwrap()).unwrap();
    if loaded() {
        assert_eq!(sh("rmmod memchan"), 0);
    }
    // Every `stride`th allocation point (each needs a module load, slow on the debug kernel
    // under emulation); MEMCHAN_FAULT_STRIDE=1 covers every one. Two channels, so that a
    // later channel's failure unwinds an earlier one: each more channel adds ~120 points
    // (four made 793, two make 547) and about two minutes of loads on the debug kernel, but
    // no new path.
    let stride: u32 = std::env::var("MEMCHAN_FAULT_STRIDE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let mut fi = FailNth::new();
    let (mut failed, mut tolerated) = (0, 0);
    let mut n = 1;
    loop {
        let (r, injected) = fi.run(n, || load(&ko, "channels=2 ring_kib=16"));
        if !injected {
            r.expect("load failed without an injected fault");
            break;
        }
        match r {
            Ok(()) => {
                // The failed allocation had a fallback; the module is fine. Next.
                tolerated += 1;
                assert_eq!(sh("rmmod memchan"), 0);
            }
            Err(e) => {
                assert!(
                    !loaded(),
                    "module live after failed load (fail-nth {n}: {e})"
                );
                assert!(
                    !std::path::Path::new(DEV).exists(),
                    "{DEV} left behind (fail-nth {n})"
                );
                failed += 1;
            }
        }
        n += stride;
        assert!(
            n < 20000,
            "load never completed without an injected failure"
        );
    }
    println!("module load: {n} allocation points, every {stride}th made to fail: {failed} gave a clean error, {tolerated} were absorbed");
    assert!(
        failed > 5,
        "fault injection did not reach the module's allocations"
    );
    // The module works after all that.
    let r = open(OFlags::RDONLY | OFlags::NONBLOCK).unwrap();
    let w = open(OFlags::WRONLY).unwrap();
    send(&w, b"after faults").unwrap();
    assert_eq!(recv(&r).unwrap(), b"after faults");
    drop((r, w));
    assert_eq!(reload(""), 0);
}

#[test]
fn allocation_failures_during_open_fail_cleanly() {
    require_guest();
    let Some(_armed) = Injection::arm("allocation_failures_during_open_fail_cleanly") else {
        return;
    };
    let probe = open(OFlags::WRONLY).unwrap();
    let subscribers = info(&probe).subscribers;
    let mut fi = FailNth::new();
    let mut failed = 0;
    let mut n = 1;
    let fd = loop {
        let (r, injected) = fi.run(n, || open(OFlags::RDWR));
        match r {
            Ok(fd) if !injected => break fd,
            Ok(fd) => drop(fd), // absorbed failure: fine, go on
            Err(e) => {
                assert!(injected, "open failed without an injected fault: {e}");
                assert_eq!(
                    info(&probe).subscribers,
                    subscribers,
                    "subscriber leaked by a failed open ({e})"
                );
                failed += 1;
            }
        }
        n += 1;
        assert!(n < 1000, "open never completed without an injected failure");
    };
    println!("open: {failed} injected allocation failures, each a clean error");
    assert!(failed > 0);
    assert_eq!(info(&probe).subscribers, subscribers + 1);
    send(&probe, b"x").unwrap();
    assert_eq!(recv(&fd).unwrap(), b"x");
}

#[test]
fn allocation_failures_creating_and_resizing_named_channels_fail_cleanly() {
    require_guest();
    let Some(_armed) =
        Injection::arm("allocation_failures_creating_and_resizing_named_channels_fail_cleanly")
    else {
        return;
    };
    let dir = "/sys/kernel/config/memchan/faulty";
    let node = std::path::Path::new("/dev/memchan-faulty");
    let mut fi = FailNth::new();
    let (mut failed, mut n) = (0, 1);
    // mkdir: every allocation on the way (configfs, the channel, its ring, the device) fails
    // once; each failure leaves neither a directory nor a node.
    loop {
        let (r, injected) = fi.run(n, || std::fs::create_dir(dir));
        match r {
            Ok(()) if !injected => break,
            Ok(()) => std::fs::remove_dir(dir).unwrap(),
            Err(e) => {
                assert!(injected, "mkdir failed without an injected fault: {e}");
                assert!(!node.exists(), "node left by a failed mkdir (fail-nth {n})");
                assert!(
                    !std::path::Path::new(dir).exists(),
                    "directory left by a failed mkdir (fail-nth {n}: {e})"
                );
                failed += 1;
            }
        }
        n += 1;
        assert!(
            n < 2000,
            "mkdir never completed without an injected failure"
        );
    }
    println!("mkdir: {failed} injected allocation failures, each a clean error");
    assert!(failed > 0);
    // Resizing re-creates the channel: a failure keeps the old one (or, if even that cannot be
    // rebuilt, reports it and recovers on the next write).
    let (mut failed, mut n) = (0, 1);
    loop {
        let (r, injected) = fi.run(n, || std::fs::write(format!("{dir}/ring_kib"), "8"));
        match r {
            Ok(()) if !injected => break,
            Ok(()) => {}
            Err(e) => {
                assert!(injected, "resize failed without an injected fault: {e}");
                failed += 1;
            }
        }
        n += 1;
        assert!(
            n < 2000,
            "resize never completed without an injected failure"
        );
    }
    println!("resize: {failed} injected allocation failures, each a clean error");
    assert_eq!(
        std::fs::read_to_string(format!("{dir}/ring_kib"))
            .unwrap()
            .trim(),
        "8"
    );
    let fd = open_path("/dev/memchan-faulty", OFlags::RDWR).unwrap();
    assert_eq!(info(&fd).ring_bytes, 8192);
    send(&fd, b"ok").unwrap();
    assert_eq!(recv(&fd).unwrap(), b"ok");
    drop(fd);
    std::fs::remove_dir(dir).unwrap();
}

/// One round of everything a message does once the files are open, with no allocation of
/// its own in userspace (buffers made beforehand): a `write()`, a batch of four records by
/// `MEMCHAN_IOC_SEND_BATCH`, payload `read()`s, batch-mode `read()`s, `poll`, a mapped
/// reader's `IOC_READER` + `IOC_CONSUME`. Returns the first failure.
struct Traffic {
    w: std::os::fd::OwnedFd,
    payload: std::os::fd::OwnedFd,
    batch: std::os::fd::OwnedFd,
    mapped: std::os::fd::OwnedFd,
    idle: std::os::fd::OwnedFd,
    _map: RingMap,
    msg: Vec<u8>,
    records: Vec<u8>,
    buf: Vec<u8>,
}

impl Traffic {
    fn new() -> Self {
        use memchan_abi as abi;
        let nb = OFlags::NONBLOCK;
        let w = open(OFlags::WRONLY | nb).unwrap();
        set_policy(&w, abi::POLICY_OVERWRITE);
        let batch = open(OFlags::RDONLY | nb).unwrap();
        ioctl(
            &batch,
            abi::IOC_RECORD_MODE,
            abi::RECORD_MODE_BATCH as usize,
        )
        .unwrap();
        let mapped = open(OFlags::RDONLY | nb).unwrap();
        let mut records = Vec::new();
        for i in 0..4u8 {
            let mut r = vec![0u8; abi::record_size(64) as usize];
            r[16..20].copy_from_slice(&64u32.to_ne_bytes());
            r[24..88].fill(i);
            records.extend(r);
        }
        Self {
            w,
            payload: open(OFlags::RDONLY | nb).unwrap(),
            batch,
            _map: RingMap::ro(&mapped),
            mapped,
            idle: open(OFlags::RDONLY | nb).unwrap(),
            msg: vec![0x5a; 64],
            records,
            buf: vec![1u8; 65536],
        }
    }

    fn round(&mut self) -> Result<(), (&'static str, Errno)> {
        use memchan_abi as abi;
        rustix::io::write(&self.w, &self.msg).map_err(|e| ("write", e))?;
        let req = abi::SendBatch {
            data: self.records.as_ptr() as u64,
            len: self.records.len() as u64,
        };
        ioctl(&self.w, abi::IOC_SEND_BATCH, &req as *const _ as usize)
            .map_err(|e| ("send batch", e))?;
        let mut pfd = [libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(&self.payload),
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: one valid pollfd, no wait.
        if unsafe { libc::poll(pfd.as_mut_ptr(), 1, 0) } != 1 {
            return Err(("poll", last_errno()));
        }
        for _ in 0..5 {
            rustix::io::read(&self.payload, &mut self.buf).map_err(|e| ("read", e))?;
        }
        loop {
            match rustix::io::read(&self.batch, &mut self.buf) {
                Ok(_) => {}
                Err(Errno::AGAIN) => break,
                Err(e) => return Err(("batch read", e)),
            }
        }
        let st: abi::ReaderState = get(&self.mapped, abi::IOC_READER).map_err(|e| ("reader", e))?;
        let upto = st.cursor_seq + st.lag;
        ioctl(&self.mapped, abi::IOC_CONSUME, &upto as *const u64 as usize)
            .map_err(|e| ("consume", e))?;
        Ok(())
    }

    /// The reader that reads only now: reads all there is; whether it was lapped meanwhile
    /// (an overrun reported on the way).
    fn catch_up(&mut self) -> Result<bool, (&'static str, Errno)> {
        let mut lapped = false;
        loop {
            match rustix::io::read(&self.idle, &mut self.buf) {
                Ok(_) => {}
                Err(Errno::PIPE) => lapped = true,
                Err(Errno::AGAIN) => return Ok(lapped),
                Err(e) => return Err(("idle reader", e)),
            }
        }
    }
}

#[test]
fn messages_move_without_allocating() {
    require_guest();
    let Some(_armed) = Injection::arm("messages_move_without_allocating") else {
        return;
    };
    let mut t = Traffic::new();
    // The same code once without injection: buffers, stack and the send-batch buffer (made
    // on a file's first batch) exist before the check.
    for _ in 0..50 {
        t.round().unwrap();
    }
    t.catch_up().unwrap();
    // 64 KiB ring, 5 records of 88 bytes per round: 1000 rounds wrap it several times and
    // lap the idle reader.
    let mut fi = FailNth::new();
    let ((rounds, caught_up), injected) = fi.run(1, || {
        let rounds = (0..1000).try_for_each(|_| t.round());
        (rounds, t.catch_up())
    });
    assert_eq!(rounds, Ok(()));
    assert_eq!(caught_up, Ok(true), "the idle reader was not lapped");
    assert!(
        !injected,
        "moving messages allocated memory (the first slab or page allocation of the thread \
         was made to fail and was reached)"
    );
    println!("5000 messages written, read three ways and overrun: no allocation");
}
