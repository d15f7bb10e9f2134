//! `cargo xtask test`: lint and host tests, then the whole guest suite in one guest boot.
//!
//! Ends with one line `memchan tests: N passed, M failed, K skipped` (libtest's counts summed
//! over host and guest; a guest test that cannot run on a kernel prints a skip line, see
//! `memchan_guest_tests::skip`, and counts as skipped, not passed) and a non-zero exit status
//! if anything failed, including a guest that did not finish or a kernel report in the log.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{cache, install, module, run, vm, KernelOpts};

/// The crate whose tests need the real device (excluded from host `cargo test`).
const GUEST_CRATE: &str = "memchan-guest-tests";

/// The whole guest suite must finish within this time.
const GUEST_TIMEOUT: Duration = Duration::from_secs(1800);

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
    /// Adds up every `test result: ... N passed; M failed; ...` line in `text`; a test that
    /// printed a skip line passed for libtest but counts as skipped.
    fn parse(text: &str) -> Self {
        let mut c = Self::default();
        for line in text.lines() {
            if line.contains("test result:") {
                c.passed += number_before(line, " passed");
                c.failed += number_before(line, " failed");
            } else if line.contains(SKIP_MARKER) {
                c.skipped += 1;
            }
        }
        c.passed = c.passed.saturating_sub(c.skipped);
        c
    }
}

/// The number right before `word` in `line` (0 if none).
fn number_before(line: &str, word: &str) -> u64 {
    line.split_once(word)
        .and_then(|(head, _)| head.rsplit(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// `cargo xtask test`.
pub fn run(opts: &KernelOpts, quick: bool) -> Result<i32> {
    let start = Instant::now();
    lint()?;
    let host = host_tests()?;
    let exes = build_guest_tests()?;
    let body = exes
        .iter()
        .map(|(_, e)| {
            format!(
                "{} --test-threads=1 --show-output || rc=1",
                vm::shell_quote(&e.to_string_lossy())
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    let body = format!("rc=0\n{body}\nexit $rc");
    // The test kernel, then (unless --quick, or an option chose one kernel) its debug flavor
    // and Debian's stock kernel.
    let mut flavors = vec![opts.clone()];
    if !quick && !opts.debug && !opts.debian && opts.kdir.is_none() && opts.src.is_none() {
        flavors.push(KernelOpts {
            debug: true,
            ..opts.clone()
        });
        flavors.push(KernelOpts {
            debian: true,
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
        let g = Counts::parse(&guest.log);
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
        let ok = install::check()?;
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
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path)?;
            for (i, line) in text.lines().enumerate() {
                if line.chars().count() > 100 {
                    long.push(format!("{}:{}", path.display(), i + 1));
                }
            }
        }
    }
    if !long.is_empty() {
        bail!("lines longer than 100 columns: {}", long.join(", "));
    }
    Ok(())
}

/// Host-side tests: everything but the guest crate. Output is streamed and counted.
fn host_tests() -> Result<Counts> {
    run::stage("host tests: cargo test --workspace (without the guest suite)");
    let mut child = Command::new("cargo")
        .args(["test", "--workspace", "--exclude", GUEST_CRATE])
        .current_dir(cache::repo())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut text = String::new();
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            println!("{line}");
            text.push_str(&line);
            text.push('\n');
        }
    }
    let status = child.wait()?;
    let counts = Counts::parse(&text);
    if !status.success() && counts.failed == 0 {
        bail!("host `cargo test` failed before running tests ({status})");
    }
    Ok(counts)
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
    fn counts_libtest_summaries() {
        let text = "test a ... ok\ntest result: ok. 5 passed; 0 failed; 0 ignored\n\
                    test result: FAILED. 2 passed; 1 failed; 0 ignored\n";
        let c = Counts::parse(text);
        assert_eq!((c.passed, c.failed, c.skipped), (7, 1, 0));
    }

    #[test]
    fn a_skipped_test_is_not_counted_as_passed() {
        let text = "test a ... memchan-test skipped: a: no fault injection\nok\n\
                    memchan-test skipped: b: no userfaultfd\n\
                    test result: ok. 5 passed; 0 failed; 0 ignored\n";
        let c = Counts::parse(text);
        assert_eq!((c.passed, c.failed, c.skipped), (3, 0, 2));
    }
}
