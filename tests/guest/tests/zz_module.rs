//! Module-level behaviour: KUnit results, load parameters (good and bad), permissions through
//! a udev rule, fresh rings. Reloads the module, so this binary runs last (`zz_`); every test
//! leaves the module loaded with default parameters.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use memchan_abi as abi;
use memchan_guest_tests::*;
use rustix::fs::OFlags;

/// Tests here reload the module: one at a time.
static MODULE: Mutex<()> = Mutex::new(());

/// Takes the module for one test. A test that failed while holding it poisons the lock; the
/// next test still runs (each starts by reloading the module) and reports its own result
/// instead of failing on the poison.
fn module() -> MutexGuard<'static, ()> {
    MODULE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A udev rule file for one test, removed (and udev told) when dropped, also when the test
/// fails: a leftover rule would change the permissions later tests see.
struct UdevRule(&'static str);

impl UdevRule {
    fn install(path: &'static str, text: &str) -> Self {
        std::fs::create_dir_all("/run/udev/rules.d").unwrap();
        std::fs::write(path, text).unwrap();
        assert_eq!(sh("udevadm control --reload"), 0);
        UdevRule(path)
    }
}

impl Drop for UdevRule {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.0);
        sh("udevadm control --reload");
    }
}

/// The permission bits of `path` once udev is done with it. `udevadm settle` alone can return
/// before udevd has read the kernel's event off its socket (seen under the slow debug kernel:
/// the node still had the kernel's 0600), so this waits until the bits are `want` or
/// [`PATIENCE`] runs out, and returns what it last saw.
///
/// Under the debug kernel, after the fault-injection tests' storm of failed loads, udevd has
/// also been seen to process the "add" event without the rule just reloaded (the node kept
/// 0600 for the whole wait, and a second run passed): after 2 s the event is replayed as a
/// "change" (udev applies a rule's MODE/GROUP on every event with a node), so what is tested
/// is still that the rule grants the channel, not how fast udevd reloads its rules.
fn mode_after_udev(path: &str, want: u32) -> u32 {
    let start = Instant::now();
    let name = path.rsplit('/').next().unwrap_or(path);
    let mut replayed = false;
    loop {
        sh("udevadm settle");
        let mode = rustix::fs::stat(path).unwrap().st_mode & 0o777;
        if mode == want || start.elapsed() > PATIENCE {
            return mode;
        }
        if !replayed && start.elapsed() > std::time::Duration::from_secs(2) {
            replayed = true;
            sh(&format!(
                "udevadm trigger --action=change /sys/class/misc/{name}"
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn dmesg() -> String {
    let out = std::process::Command::new("dmesg").output().expect("dmesg");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn kunit_ring_suite_passed_at_load() {
    require_guest();
    // The module carries its KUnit suite only when KUnit is built in (`CONFIG_KUNIT=y`, which
    // gives `/sys/module/kunit`); Debian's kernel has none.
    if !std::path::Path::new("/sys/module/kunit").exists() {
        return skip(
            "kunit_ring_suite_passed_at_load",
            "no KUnit built into this kernel",
        );
    }
    let log = dmesg();
    let summary = log
        .lines()
        .find(|l| l.contains("# memchan_ring: pass:"))
        .unwrap_or_else(|| panic!("no KUnit summary for memchan_ring in dmesg"));
    assert!(summary.contains("fail:0"), "KUnit failures: {summary}");
    assert!(
        !summary.contains("pass:0 "),
        "no KUnit test passed: {summary}"
    );
}

#[test]
fn bad_parameters_fail_the_load_cleanly() {
    require_guest();
    let _g = module();
    for (params, why) in [
        ("channels=0", "channels=0"),
        ("channels=17", "channels=17"),
        ("ring_kib=3", "ring_kib=3"),
        ("ring_kib=100", "ring_kib=100"),
        ("ring_kib=32768", "ring_kib=32768"),
        ("msg_max=0", "msg_max=0"),
        ("ring_kib=4 msg_max=5000", "msg_max=5000"),
        ("policy=2", "policy=2"),
        ("max_readers=0", "max_readers=0"),
    ] {
        assert_ne!(reload(params), 0, "insmod accepted {params}");
        assert!(
            !std::path::Path::new("/sys/module/memchan").exists(),
            "module live after failed load ({params})"
        );
        assert!(
            !std::path::Path::new(DEV).exists(),
            "{DEV} left behind by failed load ({params})"
        );
        assert!(
            dmesg().contains(&format!("memchan: {why}: must be")),
            "no clear dmesg line for {params}"
        );
    }
    assert_eq!(reload(""), 0);
}

#[test]
fn parameters_shape_the_channels() {
    require_guest();
    let _g = module();
    assert_eq!(
        reload("channels=2 ring_kib=8 msg_max=100 policy=0 max_readers=2"),
        0
    );
    assert!(std::path::Path::new("/dev/memchan1").exists());
    assert!(!std::path::Path::new("/dev/memchan2").exists());
    let r = open(OFlags::RDONLY | OFlags::NONBLOCK).unwrap();
    let i = info(&r);
    assert_eq!(
        (i.ring_bytes, i.msg_max, i.policy),
        (8192, 100, abi::POLICY_BLOCK)
    );
    let w = open(OFlags::WRONLY).unwrap();
    assert_eq!(send(&w, &[0u8; 101]), Err(Errno::MSGSIZE));
    assert_eq!(send(&w, &[0u8; 100]), Ok(100));
    let _r2 = open(OFlags::RDONLY).unwrap();
    assert_eq!(
        open(OFlags::RDONLY).err(),
        Some(Errno::NOSPC),
        "subscriber limit not enforced"
    );
    drop((r, w, _r2));
    assert_eq!(reload(""), 0);
}

#[test]
fn a_new_ring_is_all_zeroes() {
    require_guest();
    let _g = module();
    assert_eq!(reload(""), 0);
    let r = open(OFlags::RDONLY).unwrap();
    let m = RingMap::ro(&r);
    // The producer page holds the head and tail (sequence numbers start at 1), nothing else.
    let prd = m.bytes(4096, 4096);
    let words = std::mem::size_of::<abi::ProducerControl>();
    let mut expect = vec![0u8; 4096];
    for f in [
        std::mem::offset_of!(abi::ProducerControl, head_seq),
        std::mem::offset_of!(abi::ProducerControl, tail_seq),
    ] {
        expect[f..f + 8].copy_from_slice(&1u64.to_ne_bytes());
    }
    assert_eq!(&prd[..words], &expect[..words], "producer page");
    assert!(prd[words..].iter().all(|b| *b == 0), "producer page");
    let data = m.bytes(2 * 4096, m.len - 2 * 4096);
    assert!(
        data.iter().all(|b| *b == 0),
        "a fresh ring exposes non-zero bytes"
    );
}

#[test]
fn a_udev_rule_grants_one_channel_to_a_group() {
    require_guest();
    let _g = module();
    // The documented pattern (kernel/99-memchan.rules), with a group every system has.
    let rule = UdevRule::install(
        "/run/udev/rules.d/99-memchan-test.rules",
        "KERNEL==\"memchan1\", GROUP=\"nogroup\", MODE=\"0660\"\n",
    );
    assert_eq!(reload(""), 0);
    assert_eq!(
        mode_after_udev("/dev/memchan1", 0o660),
        0o660,
        "rule mode not applied within {PATIENCE:?}"
    );
    let as_nobody = |cmd: &str| {
        sh(&format!(
            "setpriv --reuid=65534 --regid=65534 --clear-groups sh -c '{cmd}' 2>/dev/null"
        ))
    };
    assert_eq!(
        as_nobody("printf granted > /dev/memchan1"),
        0,
        "group member denied on the granted channel"
    );
    assert_ne!(
        as_nobody("printf denied > /dev/memchan"),
        0,
        "non-root allowed on a root-only channel"
    );
    assert_ne!(
        as_nobody("cat /dev/memchan > /dev/null"),
        0,
        "non-root could read a root-only channel"
    );
    drop(rule);
    assert_eq!(reload(""), 0);
}

#[test]
fn named_channels_pin_the_module_until_removed() {
    require_guest();
    let _g = module();
    std::fs::create_dir("/sys/kernel/config/memchan/pinned").unwrap();
    assert_ne!(
        sh("rmmod memchan 2>/dev/null"),
        0,
        "rmmod with a named channel"
    );
    std::fs::remove_dir("/sys/kernel/config/memchan/pinned").unwrap();
    assert_eq!(reload(""), 0);
    assert!(std::path::Path::new("/sys/kernel/config/memchan").is_dir());
}
