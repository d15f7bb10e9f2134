//! The C and Python examples (no bindings, only `memchan.h` / the standard library) talk to
//! the real module.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use memchan_guest_tests::{require_guest, wait_blocked_on, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn scratch() -> PathBuf {
    PathBuf::from(std::env::var("MEMCHAN_SCRATCH").expect("MEMCHAN_SCRATCH set by xtask"))
}

/// Compiles `examples/c/<name>.c` with warnings as errors; returns the binary.
fn compile(name: &str) -> PathBuf {
    let out = scratch().join(format!("example-{name}"));
    let st = Command::new("cc")
        .args(["-Wall", "-Wextra", "-Werror", "-O2", "-I"])
        .arg(repo().join("abi/include"))
        .arg("-o")
        .arg(&out)
        .arg(repo().join(format!("examples/c/{name}.c")))
        .status()
        .expect("run cc");
    assert!(st.success(), "compiling {name}.c failed");
    out
}

/// Starts a reader, waits until it printed its ready line and blocks on `dev`.
fn start_reader(mut cmd: Command, dev: &str) -> (Child, Output) {
    let mut child = cmd.stdout(Stdio::piped()).spawn().expect("start reader");
    let out = Output::new(child.stdout.take().unwrap());
    let ready = out.take(6, Duration::from_secs(20));
    assert!(
        String::from_utf8_lossy(&ready).starts_with("ready"),
        "{ready:?}"
    );
    wait_blocked_on(child.id(), dev);
    (child, out)
}

/// Collects the reader's lines until it exits (it stops after the expected count).
fn finish(mut child: Child, out: Output, first: usize) -> Vec<String> {
    let st = child.wait().unwrap();
    assert!(st.success(), "reader failed: {st}");
    let rest = out.take(usize::MAX, Duration::from_secs(2));
    let text = String::from_utf8_lossy(&rest).into_owned();
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    assert!(lines.len() >= first, "{text}");
    lines
}

/// Every line ends with the payload, and sequence numbers are consecutive.
fn check(lines: &[String], payloads: &[&str]) {
    let got: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.split_once(": ").map(|(_, p)| p))
        .collect();
    assert_eq!(got, payloads, "{lines:?}");
    let seqs: Vec<u64> = lines
        .iter()
        .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
        .collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
}

#[test]
fn c_reader_and_writer() {
    require_guest();
    let (reader, writer) = (compile("reader"), compile("writer"));
    let mut cmd = Command::new(&reader);
    cmd.args(["/dev/memchan1", "3"]);
    let (child, out) = start_reader(cmd, "/dev/memchan1");
    let st = Command::new(&writer)
        .args(["/dev/memchan1", "one", "two", "three"])
        .status()
        .unwrap();
    assert!(st.success());
    check(&finish(child, out, 3), &["one", "two", "three"]);
    // Too large for the channel: the writer reports EMSGSIZE with exit status 65.
    let big = "x".repeat(5000);
    let st = Command::new(&writer)
        .args(["/dev/memchan1", &big])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(65));
}

#[test]
fn c_producer_publishes_through_its_mapping() {
    require_guest();
    let (reader, producer) = (compile("reader"), compile("producer"));
    let mut cmd = Command::new(&reader);
    cmd.args(["/dev/memchan1", "3"]);
    let (child, out) = start_reader(cmd, "/dev/memchan1");
    let st = Command::new(&producer)
        .args(["/dev/memchan1", "uno", "dos", "tres"])
        .status()
        .unwrap();
    assert!(st.success());
    check(&finish(child, out, 3), &["uno", "dos", "tres"]);
    let big = "x".repeat(5000);
    let st = Command::new(&producer)
        .args(["/dev/memchan1", &big])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(65));
}

fn python(script: &str) -> Command {
    let mut cmd = Command::new("python3");
    cmd.arg(repo().join(format!("examples/python/{script}")));
    cmd
}

#[test]
fn python_subscriber_by_read_and_by_mmap() {
    require_guest();
    for mode in [None, Some("--mmap")] {
        let mut cmd = python("subscriber.py");
        cmd.args(["/dev/memchan2", "-n", "2"]).args(mode);
        let (child, out) = start_reader(cmd, "/dev/memchan2");
        let st = python("writer.py")
            .args(["/dev/memchan2", "py-1", "py-2"])
            .status()
            .unwrap();
        assert!(st.success());
        check(&finish(child, out, 2), &["py-1", "py-2"]);
    }
}
