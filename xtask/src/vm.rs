//! `cargo xtask vm`: boot the test kernel in QEMU with memchan loaded.
//!
//! The default flavor boots through virtme-ng; the debug (KASAN) flavor, too slow for
//! virtme-ng's init, boots plain QEMU with a small initramfs (`qemu.rs`). Both look the same
//! to the command:
//! The guest sees the host's filesystem read-only (so host-built binaries run as they are), the
//! repository as its working directory, and one writable scratch directory
//! (`$MEMCHAN_SCRATCH`). The kernel console is logged to `<run dir>/console.log`; kernel lines
//! are not echoed (except memchan's own), and any kernel report in them fails the run.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

use crate::kernel::Builder;
use crate::module::{self, Built};
use crate::{cache, logscan, qemu, run, setup, KernelOpts};

/// Guest CPUs (benchmarks and concurrency tests want at least two).
const CPUS: &str = "2";
/// Guest memory.
const MEMORY: &str = "1G";
/// Exit code reported when the guest had to be killed.
const TIMEOUT_CODE: i32 = 124;

/// `cargo xtask vm [-- CMD...]`.
pub fn run_verb(opts: &KernelOpts, timeout: u64, cmd: &[String]) -> Result<i32> {
    let built = module::ensure(opts)?;
    if cmd.is_empty() {
        return interactive(&built);
    }
    let line = cmd
        .iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ");
    Ok(boot(&built, &line, Duration::from_secs(timeout))?.code)
}

/// How a guest run ended.
pub struct Outcome {
    /// Exit code of the guest command (non-zero too when the kernel reported a problem).
    pub code: i32,
    /// The guest's writable scratch directory (what it left there).
    pub scratch: PathBuf,
}

/// Quotes `s` for `sh` (`shlex`; a NUL byte, which no shell word can hold, is dropped).
pub fn shell_quote(s: &str) -> String {
    let clean = s.replace('\0', "");
    shlex::try_quote(&clean).map_or_else(|_| String::from("''"), |q| q.into_owned())
}

/// A fresh directory for one guest run, with a writable `scratch/` inside.
fn run_dir() -> Result<PathBuf> {
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let dir = cache::runs_dir().join(format!("{stamp}-{}", std::process::id()));
    cache::mkdir(&dir.join("scratch"))?;
    Ok(dir)
}

/// Checks run in a debug-flavor guest after the command: a kmemleak scan whose memchan
/// entries are copied into the kernel log (where the log scanner fails the run on them).
const DEBUG_EPILOGUE: &str = r#"
KL=/sys/kernel/debug/kmemleak
[ -e "$KL" ] || mount -t debugfs none /sys/kernel/debug 2>/dev/null
if [ -w "$KL" ]; then
  echo scan > "$KL"; sleep 1; echo scan > "$KL"
  if grep -q memchan "$KL"; then
    echo "[guest] kmemleak found leaks in memchan:"; cat "$KL"
    while IFS= read -r l; do echo "memchan kmemleak: $l" > /dev/kmsg; done < "$KL"
  else
    echo "[guest] kmemleak: no leak in memchan"
  fi
fi
"#;

/// Takes the network stack's once-only secrets (the TCP connection hash seeds, IPv4 and IPv6;
/// UDP sends on the way, for what they take) before any test runs. The first connect flips a
/// static key from a workqueue; under software
/// emulation a CPU running that very site while the kworker patches it can trap on the int3
/// the patching left behind ("Oops: int3" in `inet_init_ehash_secret`, seen once on Debian's
/// kernel at the bridge tests' first connection). Here nothing else runs.
const NET_ONCE: &str = r#"ip link set lo up 2>/dev/null
python3 - 2>/dev/null <<'PY'
import socket
for fam, addr in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        try:
            s = socket.socket(fam, kind)
            s.settimeout(1)
            s.connect((addr, 9))
            s.send(b"x")
        except OSError:
            pass
PY
sleep 1"#;

/// Writes the guest-side scripts: environment, `insmod`, [`NET_ONCE`], `body` (in its own shell, so that
/// its `exit` ends only it), then the flavor's checks; the guest exits with `body`'s status.
fn write_script(dir: &Path, built: &Built, body: &str) -> Result<PathBuf> {
    let script = dir.join("guest.sh");
    let body_path = dir.join("body.sh");
    std::fs::write(&body_path, format!("{body}\n"))?;
    let epilogue = if built.kernel.debug {
        DEBUG_EPILOGUE
    } else {
        ""
    };
    let text = format!(
        "#!/bin/sh\n\
         export MEMCHAN_GUEST=1 MEMCHAN_KO='{ko}' MEMCHAN_SCRATCH='{scratch}' MEMCHAN_FLAVOR={flavor}\n\
         export MEMCHAN_CLI='{cli}' MEMCHAN_PYTHON='{python}'\n\
         export PATH=\"$PATH:/usr/sbin:/sbin\"\n\
         cd '{repo}' || exit 125\n\
         echo \"[guest] Linux $(uname -r), $(nproc) CPUs; loading memchan.ko\"\n\
         modprobe -q configfs 2>/dev/null\n\
         mountpoint -q /sys/kernel/config || mount -t configfs none /sys/kernel/config\n\
         insmod \"$MEMCHAN_KO\" || {{ echo '[guest] insmod failed'; exit 125; }}\n\
         {net_once}\n\
         sh '{body}' \"$@\"\n\
         rc=$?\n\
         {epilogue}\n\
         exit $rc\n",
        ko = built.ko.display(),
        repo = cache::repo().display(),
        cli = cache::target_dir().join("debug/memchan").display(),
        // Without it (PyPI unreachable), the Python interoperability test reports a skip.
        python = setup::test_python().map_or_else(
            |e| {
                eprintln!("warning: no Python with eclipse-zenoh for the guest tests: {e:#}");
                String::new()
            },
            |p| p.display().to_string()
        ),
        scratch = dir.join("scratch").display(),
        body = body_path.display(),
        net_once = NET_ONCE,
        flavor = if built.kernel.debug {
            "debug"
        } else if built.kernel.stock.is_some() {
            "debian"
        } else {
            "default"
        },
    );
    std::fs::write(&script, text)?;
    Ok(script)
}

/// virtme-ng booting `kernel`: what every virtme-ng run here shares.
pub fn vng_command(kernel: &Path) -> Command {
    let mut cmd = Command::new(setup::vng());
    // virtme-ng starts its helpers (virtme-run, ...) from PATH.
    cmd.env("PATH", run::path_with(&cache::venv().join("bin")));
    cmd.arg("--run")
        .arg(kernel)
        .args(["--cpus", CPUS, "--memory", MEMORY, "--verbose"])
        // virtiofsd is not available here; going straight to 9p saves ~15 s per boot.
        .arg("--force-9p");
    if std::env::var("MEMCHAN_KVM").as_deref() != Ok("1") {
        // Software emulation: KVM is present on these machines but not usable for guests.
        cmd.arg("--disable-kvm");
    }
    cmd
}

/// The virtme-ng command line shared by batch and interactive runs.
fn vng(built: &Built, dir: &Path) -> Command {
    let mut cmd = vng_command(&built.kernel.bzimage);
    cmd.arg("--cwd")
        .arg(cache::repo())
        .arg(format!("--rwdir={}", dir.join("scratch").display()));
    if let Some(stock) = &built.kernel.stock {
        // virtme-ng makes the initramfs that loads Debian's 9p/virtio modules from busybox,
        // which the host does not have.
        cmd.arg("--busybox").arg(&stock.busybox);
    }
    cmd
}

/// Boots a guest, runs `body` (shell) after loading the module, and returns its exit code;
/// a kernel report in the console log turns success into failure.
///
/// A boot that fails before the guest script starts (memchan not loaded yet) is tried once
/// more, saying so: under software emulation the guest kernel has been seen to hang for good
/// while switching clocksources, and the KASAN kernel once reported a bad access in an
/// interrupt taken during early CPU setup, before any module; Debian's kernel once oopsed on an
/// `int3` of boot-time code patching. None is memchan's doing; a second such failure fails the
/// run.
pub fn boot(built: &Built, body: &str, timeout: Duration) -> Result<Outcome> {
    match boot_once(built, body, timeout)? {
        Attempt::Ran(outcome) => Ok(outcome),
        Attempt::NoBoot(why, log) => {
            eprintln!(
                "==> the guest kernel failed before memchan was loaded ({why}; console log: {}): \
                 booting once more",
                log.display()
            );
            match boot_once(built, body, timeout)? {
                Attempt::Ran(outcome) => Ok(outcome),
                Attempt::NoBoot(why, log) => anyhow::bail!(
                    "the guest kernel failed twice before memchan was loaded ({why}; console \
                     log: {})",
                    log.display()
                ),
            }
        }
    }
}

/// How long a guest may take from QEMU's start to the guest script's first line.
const BOOT_LIMIT: Duration = Duration::from_secs(240);

/// How the first line of a guest script starts (see [`write_script`]; the install check's
/// script too).
pub const SCRIPT_STARTED: &str = "[guest] Linux ";

/// One boot: it ran the script, or it failed before (why, and its console log).
enum Attempt {
    Ran(Outcome),
    NoBoot(String, PathBuf),
}

/// What the console pumps saw: the guest script started; a kernel report came before it.
#[derive(Default)]
struct Progress {
    started: std::sync::atomic::AtomicBool,
    early_report: std::sync::atomic::AtomicBool,
}

fn boot_once(built: &Built, body: &str, timeout: Duration) -> Result<Attempt> {
    use std::sync::atomic::Ordering::Relaxed;
    let dir = run_dir()?;
    let script = write_script(&dir, built, body)?;
    let console_path = dir.join("console.log");
    run::stage(&format!(
        "booting {} in QEMU (console log: {})",
        kernel_name(built),
        console_path.display()
    ));
    let start = Instant::now();
    let (mut launcher, plain_qemu) = match &built.kernel.builder {
        Builder::Root(root) if built.kernel.stock.is_none() => {
            let initramfs = qemu::initramfs(root)?;
            qemu::stage2(root, &dir)?;
            let cmd = qemu::command(&built.kernel.bzimage, &initramfs, &dir, CPUS);
            (cmd, true)
        }
        _ => {
            let mut cmd = vng(built, &dir);
            cmd.arg("--exec").arg(format!("sh {}", script.display()));
            (cmd, false)
        }
    };
    let mut child = {
        use std::os::unix::process::CommandExt;
        launcher
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .context("starting QEMU (run `cargo xtask setup`)")?
    };
    let console = Arc::new(Mutex::new(std::fs::File::create(&console_path)?));
    let progress = Arc::new(Progress::default());
    let pumps: Vec<_> = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|stream| {
        let console = Arc::clone(&console);
        let progress = Arc::clone(&progress);
        std::thread::spawn(move || pump(stream, &console, &progress))
    })
    .collect();
    let mut timed_out = false;
    let mut no_boot = None;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        let started = progress.started.load(Relaxed);
        let why = if started {
            None
        } else if progress.early_report.load(Relaxed) {
            Some("a kernel report during boot".to_string())
        } else if start.elapsed() > BOOT_LIMIT {
            Some(format!(
                "no guest script after {}",
                run::elapsed(BOOT_LIMIT)
            ))
        } else {
            None
        };
        if let Some(why) = why.filter(|_| no_boot.is_none()) {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            no_boot = Some(why);
        }
        if !timeout.is_zero() && start.elapsed() > timeout && !timed_out {
            eprintln!(
                "[xtask] guest still running after {}: killing it",
                run::elapsed(timeout)
            );
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            timed_out = true;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    for p in pumps {
        let _ = p.join();
    }
    if let Some(why) = no_boot {
        let log = std::fs::read_to_string(&console_path).unwrap_or_default();
        for r in logscan::reports(&log) {
            eprintln!("----\n{r}\n----");
        }
        return Ok(Attempt::NoBoot(why, console_path));
    }
    let mut code = if timed_out {
        TIMEOUT_CODE
    } else if plain_qemu {
        qemu::exit_code(&dir).unwrap_or_else(|err| {
            eprintln!("[xtask] {err:#}");
            1
        })
    } else {
        status.code().unwrap_or(1)
    };
    println!(
        "==> guest finished in {} with exit code {code}",
        run::elapsed(start.elapsed())
    );
    let log = std::fs::read_to_string(&console_path).unwrap_or_default();
    let reports = logscan::reports(&log);
    if !reports.is_empty() {
        eprintln!(
            "\n==> the guest kernel reported {} problem(s):",
            reports.len()
        );
        for r in &reports {
            eprintln!("----\n{r}\n----");
        }
        eprintln!("full console log: {}", console_path.display());
        if code == 0 {
            code = 1;
        }
    } else if code != 0 {
        eprintln!("full console log: {}", console_path.display());
    }
    Ok(Attempt::Ran(Outcome {
        code,
        scratch: dir.join("scratch"),
    }))
}

/// What the guest boots, for progress lines.
fn kernel_name(built: &Built) -> String {
    match &built.kernel.stock {
        Some(stock) => format!("Debian's kernel {} ({})", stock.release, stock.version),
        None if built.kernel.debug => "the debug test kernel".to_string(),
        None => "the test kernel".to_string(),
    }
}

/// Copies guest output to the console log; echoes all but the kernel's lines, keeping the
/// first occurrence of each of memchan's own kernel messages (they tell the story of the run;
/// tests that reload the module hundreds of times would repeat them).
fn pump(
    stream: Box<dyn std::io::Read + Send>,
    console: &Mutex<std::fs::File>,
    progress: &Progress,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut out = std::io::stdout();
    let mut shown = std::collections::HashSet::new();
    for line in BufReader::new(stream).split(b'\n').map_while(Result::ok) {
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches('\r');
        if let Ok(mut f) = console.lock() {
            let _ = writeln!(f, "{text}");
        }
        if text.contains(SCRIPT_STARTED) {
            progress.started.store(true, Relaxed);
        } else if !progress.started.load(Relaxed) && logscan::starts_report(text) {
            progress.early_report.store(true, Relaxed);
        }
        if !logscan::is_kernel_line(text) {
            let _ = writeln!(out, "{text}");
        } else if text.contains("memchan:") {
            let body = text.split_once(']').map_or(text, |(_, b)| b.trim());
            if shown.insert(body.to_string()) {
                let _ = writeln!(out, "  (kernel) {body}");
            }
        }
    }
}

/// An interactive guest shell with the module loaded.
///
/// virtme-ng gives its own shell a proper console; the module is loaded by a wrapper that
/// virtme-ng starts as the user's shell (`--shell`), which then becomes `bash`.
fn interactive(built: &Built) -> Result<i32> {
    let dir = run_dir()?;
    let script = write_script(
        &dir,
        built,
        "echo '[guest] memchan loaded; exit the shell to power off'\nexec /bin/bash -i",
    )?;
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    run::stage("booting the test kernel in QEMU (interactive; `exit` powers off)");
    if let (Builder::Root(root), None) = (&built.kernel.builder, &built.kernel.stock) {
        // The serial console is the terminal: a plain shell, no job control.
        let initramfs = qemu::initramfs(root)?;
        qemu::stage2(root, &dir)?;
        qemu::command(&built.kernel.bzimage, &initramfs, &dir, CPUS)
            .status()
            .context("starting QEMU (run `cargo xtask setup`)")?;
        return qemu::exit_code(&dir);
    }
    let status = vng(built, &dir)
        .arg("--shell")
        .arg(&script)
        .status()
        .context("starting virtme-ng (run `cargo xtask setup`)")?;
    Ok(status.code().unwrap_or(1))
}
