//! `cargo xtask install`: build memchan for the Debian kernel this machine runs, install it and
//! load it.
//!
//! On a Debian 13 machine running a 7.3-or-later trixie-backports kernel, or a Debian forky or
//! sid machine running its 7.2-or-later kernel: installs that kernel's `linux-headers` and
//! `linux-source` and the toolchain the suite builds its kernels with (the packages of
//! [`buildroot::STOCK`] or [`buildroot::FORKY_STOCK`]), rebuilds the Rust metadata the headers
//! lack from the source (as `--debian` does, see `debian.rs`; cached under
//! `<cache>/install/`), builds
//! `memchan.ko` and the `memchan` command, and installs
//!
//! - `/lib/modules/<release>/updates/memchan.ko` (then `depmod`, so that `modprobe memchan`
//!   works from now on, after reboots too),
//! - `/etc/udev/rules.d/99-memchan.rules` and the system group `memchan` it names,
//! - `/usr/local/bin/memchan`,
//! - with `--autoload`, `/etc/modules-load.d/memchan.conf` (loaded at every boot);
//!
//! then loads the module (`modprobe`, replacing a loaded one). `--remove` undoes all of it.
//! Steps that need root run through `sudo` when the caller is not root; builds run as the
//! caller. Tested by `cargo xtask test` in a fresh Debian 13 root (and by `--check=forky` in a
//! forky root), which is then booted with its own kernel (see [`check`]).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::buildroot::{self, BuildRoot};
use crate::kernel::Builder;
use crate::{cache, debian, demo, logscan, run, setup, vm};

/// What `cargo xtask install` is asked to do.
#[derive(clap::Args, Clone, Default)]
pub struct InstallOpts {
    /// Build and install for this Debian kernel release instead of the running one (it is then
    /// not loaded).
    #[arg(long, value_name = "RELEASE")]
    release: Option<String>,
    /// Install this `memchan` binary instead of building one (`cargo build --release`).
    #[arg(long, value_name = "PATH")]
    cli: Option<PathBuf>,
    /// Install, but do not load the module now.
    #[arg(long)]
    no_load: bool,
    /// Also load the module at every boot (`/etc/modules-load.d/memchan.conf`).
    #[arg(long)]
    autoload: bool,
    /// Unload and remove everything an earlier install put in place.
    #[arg(long, conflicts_with_all = ["cli", "autoload"])]
    remove: bool,
    /// Do not install here: test this command in a fresh Debian root (13 with backports'
    /// kernel, or `--check=forky`), booted with its own kernel in QEMU (what `cargo xtask
    /// test` runs).
    #[arg(
        long,
        value_enum,
        value_name = "SUITE",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "backports",
        conflicts_with_all = ["release", "cli", "no_load", "autoload", "remove"]
    )]
    check: Option<debian::Suite>,
}

/// Where the files go.
const MODULE_DIR: &str = "updates";
const UDEV_RULE: &str = "/etc/udev/rules.d/99-memchan.rules";
const CLI_PATH: &str = "/usr/local/bin/memchan";
const AUTOLOAD: &str = "/etc/modules-load.d/memchan.conf";
const GROUP: &str = "memchan";

/// `cargo xtask install`.
pub fn run(opts: &InstallOpts) -> Result<i32> {
    if let Some(suite) = opts.check {
        return Ok(if check(suite)? { 0 } else { 1 });
    }
    let start = Instant::now();
    let os = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    if !os.lines().any(|l| l == "ID=debian") {
        bail!(
            "`cargo xtask install` is for Debian 13 with a trixie-backports kernel, or Debian \
             forky or sid (this is not Debian). On another Rust-enabled kernel whose build \
             tree has its Rust metadata, build with `make -C <build tree> M=$PWD/kernel` (README, \"Install\")"
        );
    }
    let running = run::query(Command::new("uname").arg("-r"))?;
    let release = opts.release.clone().unwrap_or_else(|| running.clone());
    let target = match (
        debian::parse_release(&release),
        debian::Suite::of_release(&release),
    ) {
        (Some(v), Some(suite)) if v >= suite.target().min_series => suite.target(),
        _ => bail!(
            "{release} is not a Debian kernel memchan builds against (7.3 or later from \
             trixie-backports, `+deb13`; 7.2 or later from forky or sid, `+deb14`): install one \
             (on Debian 13: apt-get install -t trixie-backports linux-image-amd64), reboot into \
             it, and run this again"
        ),
    };
    let load = release == running && !opts.no_load;
    if opts.remove {
        remove(&release)?;
        println!("==> memchan removed from {release}");
        return Ok(0);
    }

    run::stage(&format!("packages for building against {release}"));
    let headers = format!("linux-headers-{release}");
    let mut packages: Vec<&str> = target.stock.packages().to_vec();
    packages.push(&headers);
    apt_get(&packages)?;
    let version = run::query(Command::new("dpkg-query").args(["-W", "-f=${Version}", &headers]))?;
    let source = format!("linux-source-{}", debian::series(&release));
    apt_get(&[&format!("{source}={version}")]).with_context(|| {
        format!(
            "the kernel source of {release} ({source} {version}) is needed to rebuild its Rust \
             metadata; Debian's archive keeps only the newest: upgrade the kernel ({}), \
             reboot, and run this again",
            target.kernel_hint
        )
    })?;

    let root = buildroot::native(target.stock).with_make_var(format!("KERNELRELEASE={release}"));
    let dir = cache::root()
        .join("install")
        .join(format!("{release}_{version}"));
    let tarball = PathBuf::from(format!("/usr/src/{source}.tar.xz"));
    let hdr = PathBuf::from(format!("/usr/src/{headers}"));
    let build = debian::prepared(&root, &release, &version, &hdr, &tarball, &dir)?;
    let ko = build_module(&root, &build)?;
    let cli = match &opts.cli {
        Some(cli) => cli.clone(),
        None => build_cli()?,
    };

    run::stage("installing");
    let module_path = format!("/lib/modules/{release}/{MODULE_DIR}/memchan.ko");
    let rule = cache::repo().join("kernel/99-memchan.rules");
    privileged(&["install", "-D", "-m", "0644", &path(&ko), &module_path])?;
    privileged(&["install", "-D", "-m", "0644", &path(&rule), UDEV_RULE])?;
    privileged(&["groupadd", "--force", "--system", GROUP])?;
    privileged(&["install", "-D", "-m", "0755", &path(&cli), CLI_PATH])?;
    if opts.autoload {
        let conf = cache::root().join("tmp/memchan-modules-load.conf");
        cache::mkdir(conf.parent().unwrap_or(Path::new("/")))?;
        std::fs::write(
            &conf,
            "# Installed by memchan's `cargo xtask install --autoload`.\nmemchan\n",
        )?;
        privileged(&["install", "-D", "-m", "0644", &path(&conf), AUTOLOAD])?;
    }
    privileged(&["depmod", "-a", &release])?;
    println!("    {module_path}\n    {UDEV_RULE} (group {GROUP})\n    {CLI_PATH}");
    if opts.autoload {
        println!("    {AUTOLOAD}");
    }
    if load {
        load_module()?;
    } else {
        println!("    not loaded now: `sudo modprobe memchan` loads it in {release}");
    }
    println!(
        "==> memchan installed for {release} ({})",
        run::elapsed(start.elapsed())
    );
    Ok(0)
}

/// `p` as a string for a command line.
fn path(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// `args` run as root: directly when the caller is root, else through `sudo`.
fn privileged(args: &[&str]) -> Result<()> {
    let mut cmd = if setup::is_root() {
        Command::new(args[0])
    } else {
        let mut c = Command::new("sudo");
        c.arg(args[0]);
        c
    };
    cmd.args(&args[1..]);
    run::checked(&mut cmd).with_context(|| format!("`{}` failed", args.join(" ")))
}

/// Installs those of `packages` that are missing (one `apt-get update` first).
fn apt_get(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| {
            let name = p.split('=').next().unwrap_or(p);
            let want = p.split_once('=').map(|(_, v)| v);
            let have = Command::new("dpkg-query")
                .args(["-W", "-f=${db:Status-Abbrev} ${Version}", name])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            let installed = have.starts_with("ii");
            !(installed && want.is_none_or(|v| have.trim_end().ends_with(v)))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let log = run::log_path("install-apt");
    let sudo = if setup::is_root() { "" } else { "sudo " };
    run::logged(
        &format!("apt-get install {}", missing.join(" ")),
        Command::new("sh").arg("-c").arg(format!(
            "{sudo}apt-get update && {sudo}env DEBIAN_FRONTEND=noninteractive \
                 apt-get install -y --no-install-recommends {}",
            missing.join(" ")
        )),
        &log,
        "On Debian 13, are trixie-backports in the apt sources? (deb \
         http://deb.debian.org/debian trixie-backports main)",
    )
}

/// Builds `memchan.ko` against the prepared tree `build` and returns its path.
fn build_module(root: &BuildRoot, build: &Path) -> Result<PathBuf> {
    let out = build.join("memchan-module");
    cache::mkdir(&out)?;
    let mut cmd = Builder::Root(root.clone()).make();
    cmd.arg("-C")
        .arg(build)
        .arg(format!("M={}", cache::repo().join("kernel").display()))
        .arg(format!("MO={}", out.display()))
        .arg("modules");
    run::logged(
        "building memchan.ko",
        &mut cmd,
        &run::log_path("install-module"),
        "The compiler errors are in the log.",
    )?;
    Ok(out.join("memchan.ko"))
}

/// Builds the `memchan` command (release profile) and returns its path.
fn build_cli() -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    run::logged(
        "building the memchan command (cargo build --release -p memchan-cli)",
        Command::new(cargo)
            .args(["build", "--release", "-p", "memchan-cli"])
            .current_dir(cache::repo()),
        &run::log_path("install-cli"),
        "The compiler errors are in the log.",
    )?;
    Ok(cache::target_dir().join("release/memchan"))
}

/// Loads the installed module, replacing a loaded one, and applies the udev rule.
fn load_module() -> Result<()> {
    if Path::new("/sys/module/memchan").exists() {
        privileged(&["modprobe", "-r", "memchan"]).context(
            "an older memchan is loaded and in use: the new one is installed and loads once \
             the old one is unloaded (`sudo modprobe -r memchan`) or at the next boot",
        )?;
    }
    let secure_boot =
        run::query(Command::new("mokutil").arg("--sb-state")).is_ok_and(|s| s.contains("enabled"));
    privileged(&["modprobe", "memchan"]).with_context(|| {
        if secure_boot {
            "Secure Boot is on, and it refuses unsigned modules: sign memchan.ko with a key \
             enrolled with mokutil (docs/debian.md, \"Secure Boot\")"
        } else {
            "see `sudo dmesg | tail`"
        }
    })?;
    let _ = privileged(&[
        "udevadm",
        "trigger",
        "--subsystem-match=misc",
        "--action=add",
    ]);
    let _ = privileged(&["udevadm", "settle"]);
    println!("    loaded: see `ls -l /dev/memchan*` and `memchan list`");
    Ok(())
}

/// Unloads the module and removes what [`run`] installed.
fn remove(release: &str) -> Result<()> {
    if Path::new("/sys/module/memchan").exists() {
        privileged(&["modprobe", "-r", "memchan"])
            .context("memchan is in use: close its users (or reboot) and run this again")?;
    }
    let module_path = format!("/lib/modules/{release}/{MODULE_DIR}/memchan.ko");
    privileged(&["rm", "-f", &module_path, UDEV_RULE, CLI_PATH, AUTOLOAD])?;
    privileged(&["depmod", "-a", release])
}

/// The guest script of [`check`]: what a user does after installing and rebooting.
const GUEST_CHECK: &str = r#"#!/bin/sh
set -e
echo "[guest] Linux $(uname -r): after \`cargo xtask install\`"
modprobe memchan
modinfo -n memchan | grep -q "/updates/memchan.ko"
udevadm settle 2>/dev/null || true
ls -l /dev/memchan /dev/memchan1
[ "$(stat -c %G:%a /dev/memchan1)" = memchan:660 ] || { echo "udev rule not applied"; exit 1; }
memchan --version
cat /dev/memchan > /tmp/got & reader=$!
sleep 1
echo installed-and-working > /dev/memchan
sleep 1
kill $reader
grep -qx installed-and-working /tmp/got
memchan stats 0 | head -n 3
modprobe -r memchan
echo "memchan-install-check: passed"
"#;

/// `cargo xtask test`'s install test: a fresh Debian root of `suite` with its newest kernel
/// ([`buildroot::MACHINE`]: Debian 13 with backports' kernel; [`buildroot::FORKY_MACHINE`])
/// gets `cargo xtask install --no-load` (packages, Rust metadata, module, udev rule, command,
/// `depmod`: everything up to loading), then is booted with its own kernel in QEMU, where
/// `modprobe memchan`, the udev rule and the command are checked.
/// Returns whether it passed.
pub fn check(suite: debian::Suite) -> Result<bool> {
    let start = Instant::now();
    setup::ensure(false)?; // QEMU and virtme-ng
    let machine = buildroot::ensure(suite.target().machine)?;
    let modules = machine.dir().join("usr/lib/modules");
    let release = std::fs::read_dir(&modules)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .find(|r| debian::parse_release(r).is_some() && debian::Suite::of_release(r) == Some(suite))
        .with_context(|| format!("no Debian kernel in {}", modules.display()))?;
    let xtask = std::env::current_exe()?;
    let cli = demo::build_cli()?;
    run::logged(
        &format!(
            "`cargo xtask install --no-load` in a Debian {} root with {release}",
            suite.target().name
        ),
        machine
            .command(&path(&xtask))
            .args(["install", "--no-load", "--release", &release, "--cli"])
            .arg(&cli)
            .env("HOME", "/root"),
        &run::log_path("install-check"),
        "The install's own output is in the log.",
    )?;
    let script = machine.dir().join("root/memchan-install-check.sh");
    std::fs::write(&script, GUEST_CHECK)?;
    let kernel = machine.dir().join(format!("boot/vmlinuz-{release}"));
    // Under `timeout`: a guest that hangs at boot under emulation must not hang the run.
    let boot = |console: &Path| {
        let vng = vm::vng_command(&kernel);
        let mut cmd = Command::new("timeout");
        cmd.args(["--kill-after=10", "600"])
            .arg(vng.get_program())
            .args(vng.get_args())
            .envs(vng.get_envs().filter_map(|(k, v)| Some((k, v?))))
            .arg("--root")
            .arg(machine.dir())
            .arg("--cwd")
            .arg(machine.dir().join("root"))
            .args(["--exec", "sh /root/memchan-install-check.sh"]);
        let ran = run::logged(
            &format!("booting that root with its kernel {release}"),
            &mut cmd,
            console,
            "The guest's output is in the log.",
        );
        (ran, std::fs::read_to_string(console).unwrap_or_default())
    };
    let mut console = run::log_path("install-check-guest");
    let (mut ran, mut log) = boot(&console);
    if !log.contains(vm::SCRIPT_STARTED) {
        // As in `vm::boot`: a kernel that fails before the check's script starts has not run
        // anything of memchan's (the emulator's text-patching races have oopsed Debian's
        // kernel at boot); a second such failure fails the check.
        println!(
            "==> the guest kernel failed before the check started (console log: {}): booting \
             once more",
            console.display()
        );
        console = run::log_path("install-check-guest-again");
        (ran, log) = boot(&console);
    }
    let reports = logscan::reports(&log);
    let booted = ran.is_ok() && log.contains("memchan-install-check: passed") && reports.is_empty();
    // And `--remove` takes it all away again (the next run installs again: 7 s when cached).
    let removed = run::logged(
        "`cargo xtask install --remove` in that root",
        machine
            .command(&path(&xtask))
            .args(["install", "--remove", "--release", &release])
            .env("HOME", "/root"),
        &run::log_path("install-check-remove"),
        "The output is in the log.",
    )
    .is_ok()
        && [
            format!("lib/modules/{release}/{MODULE_DIR}/memchan.ko"),
            UDEV_RULE.trim_start_matches('/').to_string(),
            CLI_PATH.trim_start_matches('/').to_string(),
        ]
        .iter()
        .all(|f| !machine.dir().join(f).exists());
    if !removed {
        println!("    `install --remove` left files behind or failed");
    }
    let passed = booted && removed;
    for r in &reports {
        println!("    kernel report: {r}");
    }
    println!(
        "==> install check {} ({}; console log: {})",
        if passed { "passed" } else { "FAILED" },
        run::elapsed(start.elapsed()),
        console.display()
    );
    Ok(passed)
}
