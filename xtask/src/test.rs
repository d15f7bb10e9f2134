//! `cargo xtask test`: lint and host tests, then the whole guest suite in one guest boot.
//!
//! Tests run under cargo-nextest (`.config/nextest.toml`): on the host directly, in the guest
//! from an archive built on the host. Ends with one line `memchan tests: N passed, M failed, K
//! skipped`, counted from nextest's JUnit reports (a guest test that cannot run on a kernel
//! prints a skip line, see `memchan_guest_tests::skip`, and counts as skipped, not passed),
//! and a non-zero exit status if anything failed, including a guest that did not finish or a
//! kernel report in the log.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{cache, install, module, run, setup, vm, KernelOpts};

/// The crate whose tests need the real device (excluded from host `cargo test`).
const GUEST_CRATE: &str = "memchan-guest-tests";

/// The whole guest suite must finish within this time (a hung guest is killed then). The KASAN
/// kernel's run is the longest: 21 minutes on a busy 2-core host for 9179c36, and past 30 with
/// the hostile-producer tests of issue 28 while a long fuzz run shared the host.
const GUEST_TIMEOUT: Duration = Duration::from_secs(2700);

/// The start of the line a guest test prints when it skips itself (the guest test crate's
/// `SKIP_MARKER`).
const SKIP_MARKER: &str = "memchan-test skipped: ";

/// Passed/failed/skipped counts from libtest summary lines and skip lines.
#[derive(Default, Clone, Copy)]
struct Counts {
    passed: u64,
    failed: u64,
    skipped: u64,
}

impl Counts {
    /// The outcomes in nextest's JUnit report `xml`: a test case with a `failure` or `error`
    /// failed; one whose output holds a skip line was skipped; the others passed.
    fn from_junit(xml: &str) -> Result<Self> {
        let doc = roxmltree::Document::parse(xml).context("nextest's JUnit report")?;
        let mut c = Self::default();
        for case in doc.descendants().filter(|n| n.has_tag_name("testcase")) {
            let child = |tag: &str| case.children().find(|n| n.has_tag_name(tag));
            if child("failure").is_some() || child("error").is_some() {
                c.failed += 1;
            } else if child("system-out")
                .and_then(|n| n.text())
                .is_some_and(|t| t.contains(SKIP_MARKER))
            {
                c.skipped += 1;
            } else {
                c.passed += 1;
            }
        }
        Ok(c)
    }

    /// The counts of the JUnit report at `path` (`None` if there is none: nothing ran).
    fn from_report(path: &Path) -> Result<Option<Self>> {
        match std::fs::read_to_string(path) {
            Ok(xml) => Self::from_junit(&xml).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// `cargo xtask test`.
pub fn run(opts: &KernelOpts, quick: bool) -> Result<i32> {
    let start = Instant::now();
    lint()?;
    let host = host_tests()?;
    let archive = archive_guest_tests()?;
    // In the guest: the archive's binaries, run from an extraction in the scratch directory
    // (the host's filesystem is read-only there), where the JUnit report lands too.
    // The workspace's nextest config, with the run store (and so the JUnit report) moved into
    // the scratch directory: the host's filesystem is read-only in the guest. The archive is
    // unpacked into the guest's memory (`/run`, a tmpfs in every guest): with one process per
    // test, the test kernel's suite took 5m03s run from the 9p-mounted scratch directory,
    // 2m45s from memory; and the debug guest's `/tmp` is that scratch directory when the
    // repository is under `/tmp`.
    let config = std::fs::read_to_string(cache::repo().join(".config/nextest.toml"))?;
    let body = format!(
        "N=\"$MEMCHAN_SCRATCH/nextest\"; X=/run/memchan-nextest\n\
         mkdir -p \"$N\" \"$X\"\n\
         {{ printf '[store]\\ndir = \"%s\"\\n\\n' \"$N/store\"; cat <<'EOF'\n{config}EOF\n}} > \"$N/config.toml\"\n\
         {} nextest run --archive-file {} --workspace-remap {} --extract-to \"$X\" \
         --extract-overwrite --config-file \"$N/config.toml\" --profile guest --no-fail-fast \
         -E 'kind(test)'",
        vm::shell_quote(&setup::nextest()?.to_string_lossy()),
        vm::shell_quote(&archive.to_string_lossy()),
        vm::shell_quote(&cache::repo().to_string_lossy()),
    );
    // The test kernel, then (unless --quick, or an option chose one kernel) its debug flavor
    // and Debian's stock kernel.
    let mut flavors = vec![opts.clone()];
    if !quick && !opts.debug && opts.debian.is_none() && opts.kdir.is_none() && opts.src.is_none() {
        flavors.push(KernelOpts {
            debug: true,
            ..opts.clone()
        });
        flavors.push(KernelOpts {
            debian: Some(crate::debian::Suite::Backports),
            ..opts.clone()
        });
    }
    let mut passed = host.passed;
    let mut failed = host.failed;
    let mut skipped = host.skipped;
    let mut lines = vec![format!(
        "host: {} passed, {} failed",
        host.passed, host.failed
    )];
    for flavor in &flavors {
        let built = module::build(flavor, true)?;
        let name = if built.kernel.debug {
            "debug kernel".to_string()
        } else if let Some(stock) = &built.kernel.stock {
            format!("Debian {}", stock.release)
        } else {
            "test kernel".to_string()
        };
        let guest = vm::boot(&built, &body, GUEST_TIMEOUT)?;
        let report = guest.scratch.join("nextest/store/guest/junit.xml");
        let g = Counts::from_report(&report)?.unwrap_or_default();
        passed += g.passed;
        failed += g.failed;
        skipped += g.skipped;
        let mut line = format!(
            "{name}: {} passed, {} failed, {} skipped",
            g.passed, g.failed, g.skipped
        );
        if built.warnings > 0 {
            line.push_str(&format!(
                "; {} module build warning(s) (one failure)",
                built.warnings
            ));
            failed += 1;
        }
        if guest.code != 0 && g.failed == 0 {
            line.push_str(&format!(
                "; guest run failed, exit code {} (one failure)",
                guest.code
            ));
            failed += 1;
        }
        if g.passed + g.failed == 0 {
            line.push_str("; no guest test ran (one failure)");
            failed += 1;
        }
        lines.push(line);
    }
    if flavors.len() > 1 {
        // After the suite on Debian's kernel: the install path on a fresh Debian machine.
        let ok = install::check(crate::debian::Suite::Backports)?;
        lines.push(format!(
            "install on Debian: {}",
            if ok { "passed" } else { "FAILED" }
        ));
        if ok {
            passed += 1;
        } else {
            failed += 1;
        }
    }
    println!(
        "\n==> {} ({} total)",
        lines.join("; "),
        run::elapsed(start.elapsed())
    );
    println!("memchan tests: {passed} passed, {failed} failed, {skipped} skipped");
    Ok(if failed == 0 { 0 } else { 1 })
}

/// `cargo xtask stress` / `fuzz`: one guest test binary (by target name) with `env` set,
/// without a time limit.
pub fn run_one(opts: &KernelOpts, target: &str, env: &str) -> Result<i32> {
    let exes = build_guest_tests()?;
    let exe = exes
        .iter()
        .find(|(name, _)| name == target)
        .with_context(|| format!("no guest test binary named {target}"))?;
    let built = module::ensure(opts)?;
    let cmd = format!(
        "env {env} {} --show-output",
        vm::shell_quote(&exe.1.to_string_lossy())
    );
    println!("==> in the guest: {cmd}");
    Ok(vm::boot(&built, &cmd, Duration::ZERO)?.code)
}

/// `cargo fmt --check` and `cargo clippy -D warnings` over the workspace.
fn lint() -> Result<()> {
    run::stage("cargo fmt --check");
    run::checked(
        Command::new("cargo")
            .args(["fmt", "--all", "--check"])
            .current_dir(cache::repo()),
    )
    .context("formatting differs: run `cargo fmt --all`")?;
    kernel_format()?;
    run::stage("cargo clippy (warnings are errors)");
    run::checked(
        Command::new("cargo")
            .args([
                "clippy",
                "--quiet",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ])
            .current_dir(cache::repo()),
    )
    .context("clippy found problems")
}

/// The module's sources: formatted with the kernel's `rustfmt` settings
/// (`kernel/.rustfmt.toml`, a copy of the kernel tree's) and within 100 columns, as
/// `Documentation/rust/coding-guidelines.rst` asks (rustfmt leaves long strings and comments
/// alone).
fn kernel_format() -> Result<()> {
    run::stage("rustfmt --check on kernel/ (the kernel's settings, 100 columns)");
    let dir = cache::repo().join("kernel");
    run::checked(
        Command::new("rustfmt")
            .args(["--check", "--edition", "2021", "--config-path"])
            .arg(dir.join(".rustfmt.toml"))
            .arg(dir.join("memchan.rs")),
    )
    .context("the module's formatting differs: run the rustfmt command above without --check")?;
    let mut long = Vec::new();
    // The crate's files, in `kernel/` and its module directories (`kernel/ring/`).
    let mut dirs = vec![dir];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path)?;
                for (i, line) in text.lines().enumerate() {
                    if line.chars().count() > 100 {
                        long.push(format!("{}:{}", path.display(), i + 1));
                    }
                }
            }
        }
    }
    if !long.is_empty() {
        bail!("lines longer than 100 columns: {}", long.join(", "));
    }
    Ok(())
}

/// Host-side tests: everything but the guest crate, under nextest (counted from its report),
/// then the doc tests (which nextest does not run; they must pass, like the lint).
fn host_tests() -> Result<Counts> {
    run::stage("host tests: cargo nextest run --workspace (without the guest suite)");
    // nextest's store is `target/nextest` under the workspace, whatever `CARGO_TARGET_DIR`
    // says (CI sets it: with `cache::target_dir()` here, its host tests counted 0).
    let report = cache::repo().join("target/nextest/host/junit.xml");
    let _ = std::fs::remove_file(&report);
    let status = Command::new(setup::nextest()?)
        .args(["nextest", "run", "--workspace", "--exclude", GUEST_CRATE])
        .args(["--profile", "host", "--no-fail-fast"])
        .current_dir(cache::repo())
        .status()?;
    let counts = Counts::from_report(&report)?.unwrap_or_default();
    if !status.success() && counts.failed == 0 {
        bail!("host `cargo nextest run` failed before running tests ({status})");
    }
    run::stage("host doc tests: cargo test --doc");
    run::checked(
        Command::new("cargo")
            .args([
                "test",
                "--quiet",
                "--doc",
                "--workspace",
                "--exclude",
                GUEST_CRATE,
            ])
            .current_dir(cache::repo()),
    )
    .context("a doc test failed")?;
    Ok(counts)
}

/// Builds the guest test suite (and the `memchan` tool it tests) into a nextest archive and
/// returns its path.
fn archive_guest_tests() -> Result<PathBuf> {
    crate::demo::build_cli()?;
    run::stage("building the guest test suite (cargo nextest archive)");
    let archive = cache::target_dir().join("guest-tests.tar.zst");
    run::checked(
        Command::new(setup::nextest()?)
            .args([
                "nextest",
                "archive",
                "--package",
                GUEST_CRATE,
                "--archive-file",
            ])
            .arg(&archive)
            .current_dir(cache::repo()),
    )
    .context("building the guest tests failed")?;
    Ok(archive)
}

/// Builds the guest test binaries (and the `memchan` tool they test) and returns their paths.
fn build_guest_tests() -> Result<Vec<(String, PathBuf)>> {
    crate::demo::build_cli()?;
    run::stage("building the guest test suite");
    let out = Command::new("cargo")
        .args([
            "test",
            "--package",
            GUEST_CRATE,
            "--no-run",
            "--message-format=json",
        ])
        .current_dir(cache::repo())
        .stderr(Stdio::inherit())
        .output()?;
    if !out.status.success() {
        bail!("building the guest tests failed");
    }
    // Run in name order: `zz_module` reloads the module, so it goes last.
    let mut exes: Vec<(String, PathBuf)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["profile"]["test"].as_bool() == Some(true))
        .filter(|v| v["target"]["kind"][0].as_str() == Some("test"))
        .filter_map(|v| {
            let name = v["target"]["name"].as_str()?.to_string();
            Some((name, PathBuf::from(v["executable"].as_str()?)))
        })
        .collect();
    exes.sort();
    if exes.is_empty() {
        bail!("no guest test executables were built");
    }
    Ok(exes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_junit_outcomes() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites name="nextest-run" tests="4" failures="1" errors="0">
  <testsuite name="memchan-guest-tests::device" tests="4">
    <testcase name="a" classname="device"><system-out>fine</system-out></testcase>
    <testcase name="b" classname="device"><failure type="test failure"/></testcase>
    <testcase name="c" classname="device"><system-out>memchan-test skipped: c: no KUnit</system-out></testcase>
    <testcase name="d" classname="device"/>
  </testsuite>
</testsuites>"#;
        let c = Counts::from_junit(xml).unwrap();
        assert_eq!((c.passed, c.failed, c.skipped), (2, 1, 1));
    }
}
