//! The `memchan` command-line tool against the real module.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use memchan_guest_tests::{require_guest, sh, wait_blocked_on};

/// The tool built on the host (`$MEMCHAN_CLI`, set by xtask).
fn cli() -> Command {
    Command::new(std::env::var("MEMCHAN_CLI").expect("MEMCHAN_CLI set by xtask"))
}

fn run(args: &[&str]) -> Output {
    cli().args(args).output().expect("run memchan")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn recv_follows_and_prints_json_with_metadata() {
    require_guest();
    let reader = cli()
        .args(["recv", "1", "-n", "3", "--format", "json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_blocked_on(reader.id(), "/dev/memchan1");
    assert!(run(&["send", "1", "alpha", "beta"]).status.success());
    let mut send = cli()
        .args(["send", "memchan1"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    send.stdin
        .take()
        .unwrap()
        .write_all(b"from stdin\n")
        .unwrap();
    assert!(send.wait().unwrap().success());
    let out = reader.wait_with_output().unwrap();
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let payloads: Vec<&str> = lines
        .iter()
        .map(|v| v["payload"].as_str().unwrap())
        .collect();
    assert_eq!(payloads, ["alpha", "beta", "from stdin"]);
    let seq0 = lines[0]["seq"].as_u64().unwrap();
    for (k, v) in lines.iter().enumerate() {
        assert_eq!(v["seq"].as_u64(), Some(seq0 + k as u64));
        assert!(v["timestamp_ns"].as_u64().unwrap() > 0);
        assert!(v["lag"].is_u64());
    }
}

#[test]
fn recv_without_follow_prints_what_is_there_and_exits() {
    require_guest();
    let o = run(&["recv", "2"]);
    assert!(o.status.success());
    assert_eq!(stdout(&o), "", "nothing new: nothing printed, no waiting");
    assert!(run(&["send", "/dev/memchan2", "kept-in-ring"])
        .status
        .success());
    let o = run(&["recv", "2", "--from", "oldest"]);
    assert!(o.status.success());
    assert!(
        stdout(&o).lines().any(|l| l == "kept-in-ring"),
        "{}",
        stdout(&o)
    );
    let o = run(&["recv", "2", "--from", "oldest", "--format", "hex"]);
    let hex: String = b"kept-in-ring".iter().map(|b| format!("{b:02x}")).collect();
    assert!(stdout(&o).lines().any(|l| l.ends_with(&format!("\t{hex}"))));
}

#[test]
fn timeout_exits_with_75() {
    require_guest();
    let o = run(&["recv", "3", "-n", "1", "--timeout", "0.3"]);
    assert_eq!(o.status.code(), Some(75));
}

#[test]
fn info_stats_and_policy() {
    require_guest();
    let o = run(&["info"]);
    assert!(o.status.success());
    let table = stdout(&o);
    for dev in ["/dev/memchan ", "/dev/memchan1", "/dev/memchan3"] {
        assert!(table.contains(dev), "{table}");
    }
    assert!(run(&["policy", "1", "block"]).status.success());
    assert!(stdout(&run(&["info", "1"])).contains("policy       block"));
    assert!(run(&["policy", "1", "overwrite"]).status.success());
    assert!(stdout(&run(&["info", "1"])).contains("policy       overwrite"));
    // stats lists a blocked reader with its pid and lag.
    let reader = cli()
        .args(["recv", "1", "--follow"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_blocked_on(reader.id(), "/dev/memchan1");
    let o = run(&["stats", "1"]);
    let text = stdout(&o);
    assert!(o.status.success());
    assert!(text.contains("messages"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().next() == Some(&reader.id().to_string())),
        "the reader is not listed:\n{text}"
    );
    memchan_guest_tests::kill(reader);
    // --watch refreshes until interrupted.
    let mut w = cli()
        .args(["stats", "1", "--watch", "--interval", "0.2"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Read until the second refresh (the guest is emulated: allow it time),
    // then interrupt it.
    let mut pipe = w.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = String::new();
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = std::io::Read::read(&mut pipe, &mut buf) {
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            if seen.matches("messages").count() >= 2 && seen.contains("/s)") {
                break;
            }
        }
        let _ = tx.send(seen);
    });
    let seen = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
    w.kill().unwrap();
    w.wait().unwrap();
    assert!(seen.matches("messages").count() >= 2, "no refresh:\n{seen}");
    assert!(seen.contains("/s)"), "no rates:\n{seen}");
}

#[test]
fn errors_have_exit_codes_and_hints() {
    require_guest();
    let o = run(&["recv", "9"]);
    assert_eq!(o.status.code(), Some(69));
    assert!(String::from_utf8_lossy(&o.stderr).contains("module loaded"));
    let big = "x".repeat(5000);
    let o = run(&["send", "1", &big]);
    assert_eq!(o.status.code(), Some(65));
    assert!(String::from_utf8_lossy(&o.stderr).contains("exceeds"));
    let o = run(&["policy", "1", "sometimes"]);
    assert_eq!(o.status.code(), Some(2), "bad usage");
    // A root-only node (no udev rule here): an unprivileged user gets 77 and a hint.
    let cli_path = std::env::var("MEMCHAN_CLI").unwrap();
    let code = sh(&format!(
        "chmod 600 /dev/memchan3; setpriv --reuid=65534 --regid=65534 --clear-groups \
         {cli_path} recv 3 2>{dir}/perm.err; echo $? > {dir}/perm.code",
        dir = std::env::var("MEMCHAN_SCRATCH").unwrap()
    ));
    assert_eq!(code, 0);
    let dir = std::env::var("MEMCHAN_SCRATCH").unwrap();
    let rc = std::fs::read_to_string(format!("{dir}/perm.code")).unwrap();
    let err = std::fs::read_to_string(format!("{dir}/perm.err")).unwrap();
    assert_eq!(rc.trim(), "77", "{err}");
    assert!(err.contains("permission denied"), "{err}");
}

#[test]
fn help_and_completions() {
    require_guest();
    let o = run(&["--help"]);
    assert!(stdout(&o).contains("Examples:"));
    let o = run(&["completions", "bash"]);
    assert!(o.status.success() && stdout(&o).contains("memchan"));
}

#[test]
fn create_and_destroy_named_channels() {
    require_guest();
    /// Removes the channel even if an assertion fails.
    struct Cleanup;
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir("/sys/kernel/config/memchan/clitest");
        }
    }
    let _c = Cleanup;
    let o = run(&[
        "create",
        "clitest",
        "--ring",
        "128K",
        "--msg-max",
        "512",
        "--policy",
        "block",
        "--mode",
        "660",
        "--group",
        "nogroup",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(stdout(&o).trim(), "/dev/memchan-clitest");
    // The node shows what memchan enforces.
    let st = rustix::fs::stat("/dev/memchan-clitest").unwrap();
    assert_eq!(st.st_mode & 0o777, 0o660);
    assert_eq!(st.st_gid, 65534);
    let text = stdout(&run(&["info", "clitest"]));
    assert!(text.contains("policy       block"), "{text}");
    assert!(text.contains("131072 bytes"), "{text}");
    assert!(text.contains("gid 65534 mode 0660"), "{text}");
    assert!(stdout(&run(&["info"])).contains("/dev/memchan-clitest"));
    assert!(run(&["send", "clitest", "hello"]).status.success());
    let text = stdout(&run(&["recv", "clitest", "--from", "oldest"]));
    assert_eq!(text.trim(), "hello");
    let text = stdout(&run(&["stats", "clitest"]));
    assert!(
        text.lines().any(|l| l.trim() == "messages        1"),
        "{text}"
    );
    // Errors: exists (73), bad name (64), bad size (64, nothing left behind), missing (69).
    assert_eq!(run(&["create", "clitest"]).status.code(), Some(73));
    let o = run(&["create", "no/slash"]);
    assert_eq!(o.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&o.stderr).contains("invalid channel name"));
    let o = run(&["create", "oddring", "--ring", "100K"]);
    assert_eq!(
        o.status.code(),
        Some(64),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!std::path::Path::new("/sys/kernel/config/memchan/oddring").exists());
    assert!(run(&["destroy", "clitest"]).status.success());
    assert!(!std::path::Path::new("/dev/memchan-clitest").exists());
    let o = run(&["destroy", "clitest"]);
    assert_eq!(o.status.code(), Some(69));
    // Only root configures channels.
    let cli_path = std::env::var("MEMCHAN_CLI").unwrap();
    assert_eq!(
        sh(&format!(
            "setpriv --reuid=65534 --regid=65534 --clear-groups {cli_path} create mine 2>/dev/null; \
             test $? -eq 77"
        )),
        0
    );
}
