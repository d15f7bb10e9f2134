//! Named channels (configfs) and sysfs counters, against the real module.
//!
//! Tests here run in parallel: each uses names of its own. The limit test needs the whole
//! module to itself and takes the write side of `SLOTS`; every other test holds the read side.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use memchan_guest_tests::{
    info, open_path, recv, require_guest, revents, send, sh, stats, Errno, RingMap,
};
use rustix::event::PollFlags;
use rustix::fs::OFlags;

/// configfs directory of the module.
const CFG: &str = "/sys/kernel/config/memchan";

/// Readers: tests that create channels; writer: the test that fills every slot.
static SLOTS: RwLock<()> = RwLock::new(());

/// `mkdir` in configfs: the errno if it fails.
fn mkdir(name: &str) -> Result<(), Errno> {
    std::fs::create_dir(Path::new(CFG).join(name))
        .map_err(|e| Errno::from_io_error(&e).expect("errno"))
}

/// `rmdir` in configfs.
fn rmdir(name: &str) -> Result<(), Errno> {
    std::fs::remove_dir(Path::new(CFG).join(name))
        .map_err(|e| Errno::from_io_error(&e).expect("errno"))
}

/// Writes a configfs attribute of channel `name`.
fn set(name: &str, attr: &str, value: &str) -> Result<(), Errno> {
    std::fs::write(Path::new(CFG).join(name).join(attr), value)
        .map_err(|e| Errno::from_io_error(&e).expect("errno"))
}

/// Reads a configfs attribute of channel `name`.
fn get(name: &str, attr: &str) -> String {
    std::fs::read_to_string(Path::new(CFG).join(name).join(attr))
        .unwrap()
        .trim()
        .to_string()
}

/// Reads a sysfs attribute of device `dev` (`memchan-<name>`, `memchan1`, ...).
fn sysfs(dev: &str, attr: &str) -> String {
    std::fs::read_to_string(format!("/sys/class/misc/{dev}/{attr}"))
        .unwrap()
        .trim()
        .to_string()
}

/// The node of named channel `name`.
fn node(name: &str) -> String {
    format!("/dev/memchan-{name}")
}

/// Opens named channel `name`.
fn open(name: &str, flags: OFlags) -> Result<OwnedFd, Errno> {
    open_path(&node(name), flags)
}

/// Removes named channel `name` when dropped, so that a failing test leaves no channel
/// behind (a named channel keeps the module from unloading).
struct Cleanup(&'static str);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = rmdir(self.0);
    }
}

/// Runs `cmd` as user and group 65534 (nobody/nogroup), without supplementary groups.
fn as_nobody(cmd: &str) -> i32 {
    sh(&format!(
        "setpriv --reuid=65534 --regid=65534 --clear-groups sh -c '{cmd}' 2>/dev/null"
    ))
}

#[test]
fn create_use_destroy_with_readers_writers_and_mappings_open() {
    require_guest();
    let _g = SLOTS.read().unwrap();
    let _c = Cleanup("life");
    mkdir("life").unwrap();
    assert!(Path::new(&node("life")).exists(), "no device node");
    assert_eq!(get("life", "device"), "memchan-life");
    let early = open("life", OFlags::RDONLY).unwrap();
    let blocked = open("life", OFlags::RDONLY).unwrap();
    let w = open("life", OFlags::WRONLY).unwrap();
    let map = RingMap::ro(&early);
    for m in [&b"a"[..], b"b", b"c"] {
        send(&w, m).unwrap();
    }
    // A reader that drains the channel and then blocks, until the channel goes away.
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        loop {
            let m = recv(&blocked).expect("read on a removed channel failed");
            if m.is_empty() {
                return got;
            }
            got.push(m);
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(!reader.is_finished(), "the reader did not block");
    rmdir("life").unwrap();
    // The blocked reader gets what was there, then end of file.
    assert_eq!(reader.join().unwrap(), [b"a", b"b", b"c"]);
    assert!(!Path::new(&node("life")).exists(), "node still there");
    assert_eq!(open("life", OFlags::RDONLY).err(), Some(Errno::NOENT));
    // Files still open: readable until drained, then EOF; POLLHUP; writes fail.
    let ev = revents(&early);
    assert!(
        ev.contains(PollFlags::HUP | PollFlags::IN),
        "poll after removal: {ev:?}"
    );
    for m in [&b"a"[..], b"b", b"c"] {
        assert_eq!(recv(&early).unwrap(), m);
    }
    assert_eq!(recv(&early).unwrap(), b"", "no end of file after removal");
    assert_eq!(send(&w, b"late"), Err(Errno::NODEV));
    // The mapping stays valid and still shows the ring.
    assert_eq!(
        map.record(map.tail_pos()).map(|(_, p)| p),
        Some(b"a".to_vec())
    );
    // The name is free again at once, for a new and empty channel.
    mkdir("life").unwrap();
    let again = open("life", OFlags::RDONLY | OFlags::NONBLOCK).unwrap();
    let i = info(&again);
    assert_eq!(i.head_seq, i.oldest_seq, "a new channel is not empty");
    assert_eq!(stats(&again).messages, 0, "a new channel has old counters");
    assert_eq!(recv(&again), Err(Errno::AGAIN));
    assert_eq!(recv(&early).unwrap(), b"", "old file sees the new channel");
    drop(again);
    rmdir("life").unwrap();
    drop((early, w, map));
}

#[test]
fn attributes_set_sizes_and_policy() {
    require_guest();
    let _g = SLOTS.read().unwrap();
    let _c = Cleanup("shape");
    mkdir("shape").unwrap();
    // Defaults: the module parameters; root only.
    assert_eq!(get("shape", "ring_kib"), "64");
    assert_eq!(get("shape", "msg_max"), "4096");
    assert_eq!(get("shape", "max_readers"), "128");
    assert_eq!(get("shape", "policy"), "overwrite");
    assert_eq!(get("shape", "mode"), "0600");
    assert_eq!(get("shape", "uid"), "0");
    set("shape", "ring_kib", "128").unwrap();
    set("shape", "msg_max", "100\n").unwrap();
    set("shape", "max_readers", "2").unwrap();
    set("shape", "policy", "block").unwrap();
    let r1 = open("shape", OFlags::RDONLY).unwrap();
    let i = info(&r1);
    assert_eq!((i.ring_bytes, i.msg_max, i.policy), (128 * 1024, 100, 0));
    assert_eq!(sysfs("memchan-shape", "ring_bytes"), "131072");
    assert_eq!(sysfs("memchan-shape", "max_readers"), "2");
    assert!(i.index >= memchan_abi::CHANNELS_MAX, "index {}", i.index);
    let w = open("shape", OFlags::WRONLY).unwrap();
    assert_eq!(send(&w, &[0u8; 101]), Err(Errno::MSGSIZE));
    let _r2 = open("shape", OFlags::RDONLY).unwrap();
    assert!(
        open("shape", OFlags::RDONLY).is_err(),
        "max_readers not applied"
    );
    // Sizes are fixed while files are open; the policy is not.
    assert_eq!(set("shape", "ring_kib", "256"), Err(Errno::BUSY));
    assert_eq!(get("shape", "ring_kib"), "128");
    set("shape", "policy", "overwrite").unwrap();
    assert_eq!(info(&r1).policy, 1);
    assert_eq!(sysfs("memchan-shape", "policy"), "overwrite");
    // Bad values: a clear EINVAL, nothing changed.
    for (attr, v) in [
        ("ring_kib", "100"),
        ("ring_kib", "2"),
        ("ring_kib", "32768"),
        ("ring_kib", "-4"),
        ("ring_kib", "lots"),
        ("msg_max", "0"),
        ("msg_max", "1048576"),
        ("max_readers", "0"),
        ("max_readers", "5000"),
        ("policy", "sometimes"),
        ("policy", "+1"),
        ("policy", "01"),
        ("policy", "2"),
        ("mode", "1000"),
        ("mode", "9"),
        ("uid", "root"),
    ] {
        assert_eq!(set("shape", attr, v), Err(Errno::INVAL), "{attr} = {v}");
    }
    assert_eq!(get("shape", "msg_max"), "100");
    drop((r1, w, _r2));
    // Idle again: sizes may change; the channel starts over, empty, same node.
    set("shape", "ring_kib", "4").unwrap();
    let r = open("shape", OFlags::RDONLY).unwrap();
    assert_eq!(info(&r).ring_bytes, 4096);
    drop(r);
    rmdir("shape").unwrap();
}

#[test]
fn invalid_and_duplicate_names_are_refused() {
    require_guest();
    let _g = SLOTS.read().unwrap();
    for bad in ["-x", ".hidden", "a b", "tab\tx", "ümlaut", "semi;colon"] {
        assert_eq!(mkdir(bad), Err(Errno::INVAL), "{bad:?}");
    }
    assert_eq!(mkdir(&"n".repeat(33)), Err(Errno::NAMETOOLONG));
    let longest = "L".repeat(32);
    mkdir(&longest).unwrap();
    assert!(Path::new(&node(&longest)).exists());
    rmdir(&longest).unwrap();
    mkdir("dup").unwrap();
    assert_eq!(mkdir("dup"), Err(Errno::EXIST));
    rmdir("dup").unwrap();
    assert_eq!(rmdir("dup"), Err(Errno::NOENT));
    // Subdirectories of a channel are not channels.
    mkdir("flat").unwrap();
    assert!(mkdir("flat/sub").is_err());
    rmdir("flat").unwrap();
}

#[test]
fn at_most_64_named_channels() {
    require_guest();
    let _g = SLOTS.write().unwrap();
    let base: usize = std::fs::read_to_string(format!("{CFG}/channels"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut made = Vec::new();
    let err = loop {
        let name = format!("many{}", made.len());
        match mkdir(&name) {
            Ok(()) => made.push(name),
            Err(e) => break e,
        }
        assert!(made.len() <= 64, "no limit");
    };
    assert_eq!(err, Errno::NOSPC);
    assert_eq!(base + made.len(), 64);
    for n in &made {
        rmdir(n).unwrap();
    }
    mkdir("many0").unwrap();
    rmdir("many0").unwrap();
}

#[test]
fn owner_group_and_mode_decide_who_may_open() {
    require_guest();
    let _g = SLOTS.read().unwrap();
    let _c = Cleanup("perm");
    mkdir("perm").unwrap();
    let n = node("perm");
    let can_read = || as_nobody(&format!("exec 3< {n}")) == 0;
    let can_write = || as_nobody(&format!("exec 3> {n}")) == 0;
    // The node itself is 0666: what follows is memchan's own check.
    let st = rustix::fs::stat(n.as_str()).unwrap();
    assert_eq!(st.st_mode & 0o777, 0o666);
    assert!(
        !can_read() && !can_write(),
        "root-only channel open to nobody"
    );
    set("perm", "uid", "65534").unwrap();
    assert!(can_read() && can_write(), "owner denied");
    set("perm", "uid", "0").unwrap();
    set("perm", "gid", "65534").unwrap();
    set("perm", "mode", "0640").unwrap();
    assert!(can_read(), "group read denied");
    assert!(!can_write(), "group write allowed by 0640");
    set("perm", "gid", "0").unwrap();
    set("perm", "mode", "604").unwrap();
    assert!(can_read() && !can_write(), "other bits not applied");
    set("perm", "mode", "0").unwrap();
    assert!(!can_read());
    // Root passes (CAP_DAC_OVERRIDE), as for files.
    open("perm", OFlags::RDWR).unwrap();
    // The configuration stays readable by anyone, without opening the channel (the counters
    // are root's: hostile.rs).
    assert_eq!(
        as_nobody("cat /sys/class/misc/memchan-perm/policy >/dev/null"),
        0
    );
    // Only root may create or remove channels.
    assert_ne!(as_nobody(&format!("mkdir {CFG}/nobodys")), 0);
    assert_ne!(as_nobody(&format!("rmdir {CFG}/perm")), 0);
    rmdir("perm").unwrap();
}

#[test]
fn counters_are_in_sysfs_for_every_channel() {
    require_guest();
    let _g = SLOTS.read().unwrap();
    let _c = Cleanup("count");
    mkdir("count").unwrap();
    let r = open("count", OFlags::RDONLY).unwrap();
    let w = open("count", OFlags::WRONLY).unwrap();
    for _ in 0..5 {
        send(&w, &[7u8; 10]).unwrap();
    }
    recv(&r).unwrap();
    recv(&r).unwrap();
    let (i, s) = (info(&r), stats(&r));
    let dev = "memchan-count";
    for (attr, want) in [
        ("messages", s.messages),
        ("bytes", s.bytes),
        ("delivered", s.delivered),
        ("overruns", s.overruns),
        ("lost", s.lost),
        ("blocked_writes", s.blocked_writes),
        ("subscribers", i.subscribers.into()),
        ("writers", i.writers.into()),
        ("next_seq", i.head_seq),
        ("oldest_seq", i.oldest_seq),
        ("ring_bytes", i.ring_bytes),
        ("msg_max", i.msg_max.into()),
        ("mmap_bytes", i.mmap_bytes),
        ("index", i.index.into()),
    ] {
        assert_eq!(sysfs(dev, attr), want.to_string(), "{attr}");
    }
    assert_eq!((s.messages, s.bytes, s.delivered), (5, 50, 2));
    // The library reads them from sysfs: no extra subscriber, exact counts.
    let (qi, qs) = memchan::query(node("count")).unwrap();
    assert_eq!((qi.subscribers, qi.writers, qs.messages), (1, 1, 5));
    // Load-time channels publish the same attributes.
    assert_eq!(sysfs("memchan", "index"), "0");
    assert_eq!(sysfs("memchan1", "index"), "1");
    drop((r, w));
    rmdir("count").unwrap();
}

#[test]
fn create_and_destroy_race_with_users() {
    require_guest();
    let _g = SLOTS.read().unwrap();
    let names = ["race0", "race1", "race2"];
    let until = Instant::now() + Duration::from_secs(4);
    let counts = std::thread::scope(|s| {
        let mut workers = Vec::new();
        // Creators and destroyers.
        for t in 0..2u64 {
            workers.push(s.spawn(move || {
                let mut rng = fastrand::Rng::with_seed(t);
                let mut ops = 0u64;
                while Instant::now() < until {
                    let n = names[rng.usize(..names.len())];
                    let _ = if rng.bool() { mkdir(n) } else { rmdir(n) };
                    ops += 1;
                }
                ops
            }));
        }
        // Users: open, write, read, map, poll, close whatever exists right now.
        for t in 0..2u64 {
            workers.push(s.spawn(move || {
                let mut rng = fastrand::Rng::with_seed(100 + t);
                let mut ops = 0u64;
                while Instant::now() < until {
                    let n = names[rng.usize(..names.len())];
                    let Ok(fd) = open(n, OFlags::RDWR | OFlags::NONBLOCK) else {
                        continue;
                    };
                    let _ = send(&fd, b"racing");
                    let _ = recv(&fd);
                    let _ = revents(&fd);
                    if rng.bool() {
                        let m = RingMap::ro(&fd);
                        let _ = m.tail_seq();
                    }
                    ops += 1;
                }
                ops
            }));
        }
        // Configurers: attributes and sysfs counters of channels coming and going.
        workers.push(s.spawn(move || {
            let mut rng = fastrand::Rng::with_seed(7);
            let mut ops = 0u64;
            while Instant::now() < until {
                let n = names[rng.usize(..names.len())];
                let _ = set(n, "policy", if rng.bool() { "block" } else { "overwrite" });
                let _ = set(n, "ring_kib", if rng.bool() { "4" } else { "8" });
                let _ = set(n, "mode", "0660");
                let _ = std::fs::read_to_string(format!("/sys/class/misc/memchan-{n}/messages"));
                ops += 1;
            }
            ops
        }));
        workers
            .into_iter()
            .map(|w| w.join().unwrap())
            .collect::<Vec<_>>()
    });
    for n in names {
        let _ = rmdir(n);
        assert!(!Path::new(&node(n)).exists());
    }
    println!("create/destroy race: operations per thread {counts:?}");
    assert!(counts.iter().all(|&c| c > 0));
}
