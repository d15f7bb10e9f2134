//! `cargo xtask setup`: fetch or install everything the test kernel and the guest need.
//!
//! Every step checks first and does nothing when its result is already present, so this runs
//! at the start of every other verb. Host packages come from apt (root only); the kernel source
//! and `rust-src` come from Debian trixie(-backports) through a private apt configuration that
//! never touches the system's; bindgen from crates.io; libclang and virtme-ng from PyPI.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{cache, run};

/// Debian packages the host needs: kernel build dependencies, QEMU, and what virtme-ng calls.
const HOST_PACKAGES: &[&str] = &[
    "make",
    "gcc",
    "flex",
    "bison",
    "bc",
    "libelf-dev",
    "libssl-dev",
    "cpio",
    "xz-utils",
    "qemu-system-x86",
    "kmod",
    "udev",
    "patch",
    "python3",
    "python3-venv",
    "ca-certificates",
];

/// PyPI packages installed into the tools venv (pinned to versions seen working).
const PIP_PACKAGES: &[&str] = &["libclang==18.1.1", "virtme-ng==1.42"];

/// PyPI packages only the guest tests use (kept out of the build keys): Zenoh's Python binding,
/// for the bridge's interoperability test. Same version as the `zenoh` crate.
const TEST_PIP_PACKAGES: &[&str] = &["eclipse-zenoh==1.10.2"];

/// Oldest kernel series memchan supports.
const MIN_SERIES: (u32, u32) = (7, 3);

/// The Debian suites the kernel source and `rust-src` come from.
const APT_SOURCES: &str = "\
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie-backports main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main
";

/// Everything needed to build a Rust-enabled kernel and boot it.
#[derive(Clone)]
pub struct Toolchain {
    /// Kernel source tree (`None` when the caller brings its own tree).
    pub linux_src: Option<PathBuf>,
    /// `package=version` of the kernel source (part of the build key).
    pub linux_version: String,
    /// Rust standard library source (`RUST_LIB_SRC`).
    pub rust_lib_src: PathBuf,
    /// `rustc --version`.
    pub rustc_version: String,
    /// Directory with the `bindgen` binary.
    pub bindgen_bin: PathBuf,
    /// Directory with `libclang.so` (`LIBCLANG_PATH`).
    pub libclang: PathBuf,
}

impl Toolchain {
    /// Sets the environment a kernel or module build needs on `cmd`.
    pub fn apply(&self, cmd: &mut Command) {
        cmd.env("PATH", run::path_with(&self.bindgen_bin))
            .env("LIBCLANG_PATH", &self.libclang)
            .env("RUST_LIB_SRC", &self.rust_lib_src);
    }

    /// Text identifying the toolchain, for build keys.
    pub fn key(&self) -> String {
        format!(
            "linux: {}\nrustc: {}\nbindgen-cli + pip: {}\n",
            self.linux_version,
            self.rustc_version,
            PIP_PACKAGES.join(" ")
        )
    }
}

/// `cargo xtask setup`.
pub fn run() -> Result<()> {
    let tc = ensure(true)?;
    println!("setup complete; cache: {}", cache::root().display());
    if let Some(src) = &tc.linux_src {
        println!("  kernel source: {} ({})", src.display(), tc.linux_version);
    }
    println!("  rust-src:      {}", tc.rust_lib_src.display());
    println!("  bindgen:       {}", tc.bindgen_bin.display());
    println!("  libclang:      {}", tc.libclang.display());
    println!("  virtme-ng:     {}", vng().display());
    Ok(())
}

/// Makes sure everything is present; fetches the kernel source only if `want_source`.
pub fn ensure(want_source: bool) -> Result<Toolchain> {
    host_packages()?;
    let rustc_version = run::query(Command::new("rustc").arg("--version"))?;
    let (linux_src, linux_version) = if want_source {
        let (dir, ver) = linux_source()?;
        (Some(dir), ver)
    } else {
        (None, "external".to_string())
    };
    let rust_lib_src = rust_src(&rustc_version)?;
    let bindgen_bin = bindgen()?;
    let libclang = python_tools()?;
    Ok(Toolchain {
        linux_src,
        linux_version,
        rust_lib_src,
        rustc_version,
        bindgen_bin,
        libclang,
    })
}

/// The virtme-ng launcher.
pub fn vng() -> PathBuf {
    cache::venv().join("bin/vng")
}

/// Installs missing host packages with apt-get (or says how, when not root).
fn host_packages() -> Result<()> {
    apt_install(HOST_PACKAGES)
}

/// Installs those of `packages` that are missing on the host with apt-get (or says how, when
/// not root).
pub fn apt_install(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| {
            Command::new("dpkg-query")
                .args(["-W", "-f=${db:Status-Abbrev}", p])
                .output()
                .map(|o| !String::from_utf8_lossy(&o.stdout).starts_with("ii"))
                .unwrap_or(true)
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let install = format!(
        "apt-get install -y --no-install-recommends {}",
        missing.join(" ")
    );
    if !is_root() {
        bail!(
            "missing host packages: {}. Run as root: apt-get update && {install}",
            missing.join(" ")
        );
    }
    let log = run::log_path("setup-apt");
    run::logged(
        "apt-get update",
        Command::new("apt-get").arg("update"),
        &log,
        "Check the network and the system's apt sources.",
    )?;
    run::logged(
        &format!("installing host packages: {}", missing.join(" ")),
        Command::new("sh")
            .args(["-c", &install])
            .env("DEBIAN_FRONTEND", "noninteractive"),
        &run::log_path("setup-apt-install"),
        &format!("Try by hand: {install}"),
    )
}

pub fn is_root() -> bool {
    run::query(Command::new("id").arg("-u"))
        .map(|u| u == "0")
        .unwrap_or(false)
}

/// The Debian forky (testing) suite, for its stock kernel. Testing's `Release` files say they
/// expire within days, and a mirror that lags behind (the one these machines reach serves
/// forky's of 2026-10-30) is refused unless that check is off; signatures are still checked.
const FORKY_SOURCES: &str = "\
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg check-valid-until=no] http://deb.debian.org/debian forky main
";

/// A private apt configuration (Debian trixie and trixie-backports, or forky), state in the
/// cache.
pub struct Apt {
    dir: PathBuf,
    updated: bool,
    /// The suites, for messages.
    label: &'static str,
}

impl Apt {
    /// Debian trixie and trixie-backports (the kernel source, `rust-src`, backports' kernel).
    pub fn new() -> Result<Self> {
        Self::with(cache::apt_dir(), APT_SOURCES, "trixie(-backports)")
    }

    /// Debian forky (its stock kernel); state apart from trixie's.
    pub fn forky() -> Result<Self> {
        Self::with(cache::root().join("apt-forky"), FORKY_SOURCES, "forky")
    }

    fn with(dir: PathBuf, sources: &str, label: &'static str) -> Result<Self> {
        for sub in ["lists/partial", "cache/archives/partial", "debs"] {
            cache::mkdir(&dir.join(sub))?;
        }
        std::fs::write(dir.join("sources.list"), sources)?;
        Ok(Self {
            dir,
            updated: false,
            label,
        })
    }

    fn cmd(&self, tool: &str) -> Command {
        let mut cmd = Command::new(tool);
        let d = &self.dir;
        cmd.arg("-o")
            .arg(format!(
                "Dir::Etc::sourcelist={}",
                d.join("sources.list").display()
            ))
            .args([
                "-o",
                "Dir::Etc::sourceparts=-",
                "-o",
                "APT::Sandbox::User=root",
            ])
            .arg("-o")
            .arg(format!("Dir::State::Lists={}", d.join("lists").display()))
            .arg("-o")
            .arg(format!("Dir::Cache={}", d.join("cache").display()));
        cmd
    }

    /// Refreshes the package lists (once per run).
    fn update(&mut self) -> Result<()> {
        if !self.updated {
            let (what, log) = (
                format!("fetching Debian {} package lists", self.label),
                format!("setup-apt-lists-{}", self.label.replace(['(', ')'], "")),
            );
            run::logged(
                &what,
                self.cmd("apt-get").arg("update"),
                &run::log_path(&log),
                "Check that deb.debian.org is reachable.",
            )?;
            self.updated = true;
        }
        Ok(())
    }

    /// Available versions of `pkg`, newest first.
    pub fn versions(&mut self, pkg: &str) -> Result<Vec<String>> {
        self.update()?;
        let out = run::query(self.cmd("apt-cache").args(["madison", pkg]))?;
        Ok(out
            .lines()
            .filter_map(|l| l.split('|').nth(1))
            .map(|v| v.trim().to_string())
            .collect())
    }

    /// Package names starting with `prefix`.
    pub fn names(&mut self, prefix: &str) -> Result<Vec<String>> {
        self.update()?;
        let out = run::query(self.cmd("apt-cache").args(["pkgnames", prefix]))?;
        Ok(out.lines().map(str::to_string).collect())
    }

    /// Downloads `pkg=version` and unpacks it into `dest` (emptied first).
    fn fetch_and_unpack(&mut self, pkg: &str, version: &str, dest: &Path) -> Result<()> {
        let _ = std::fs::remove_dir_all(dest);
        self.unpack_into(pkg, version, dest)
    }

    /// Downloads `pkg=version` and unpacks it into `dest`, next to what is there.
    pub fn unpack_into(&mut self, pkg: &str, version: &str, dest: &Path) -> Result<()> {
        self.update()?;
        let debs = self.dir.join("debs");
        run::logged(
            &format!("downloading {pkg} {version}"),
            self.cmd("apt-get")
                .current_dir(&debs)
                .args(["download", &format!("{pkg}={version}")]),
            &run::log_path(&format!("setup-download-{pkg}")),
            "Check that deb.debian.org is reachable.",
        )?;
        let deb = std::fs::read_dir(&debs)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{pkg}_")) && n.ends_with(".deb"))
            })
            .with_context(|| format!("{pkg} .deb not found in {}", debs.display()))?;
        cache::mkdir(dest)?;
        run::logged(
            &format!("unpacking {}", deb.display()),
            Command::new("dpkg-deb").arg("-x").arg(&deb).arg(dest),
            &run::log_path(&format!("setup-unpack-{pkg}")),
            "Is the disk full?",
        )?;
        std::fs::remove_file(&deb)?;
        Ok(())
    }
}

/// Marks a directory as completely unpacked.
const DONE: &str = ".memchan-complete";

/// The newest Debian `linux-source-7.x` (7.3 or later), unpacked. Set `MEMCHAN_LINUX_SOURCE`
/// to a package name (e.g. `linux-source-7.3`) to pin the series.
fn linux_source() -> Result<(PathBuf, String)> {
    let src_root = cache::root().join("src");
    // Reuse what is unpacked unless a specific series was asked for that is not there.
    let wanted = std::env::var("MEMCHAN_LINUX_SOURCE").ok();
    if let Some(found) = unpacked_linux(&src_root, wanted.as_deref())? {
        return Ok(found);
    }
    let mut apt = Apt::new()?;
    let pkg = match wanted {
        Some(p) => p,
        None => {
            let mut series: Vec<((u32, u32), String)> = apt
                .names("linux-source-")?
                .into_iter()
                .filter_map(|n| Some((parse_series(n.strip_prefix("linux-source-")?)?, n)))
                .filter(|(s, _)| *s >= MIN_SERIES)
                .collect();
            series.sort();
            series
                .pop()
                .map(|(_, n)| n)
                .context("no linux-source-7.x (7.3 or later) in Debian trixie-backports")?
        }
    };
    let version = apt
        .versions(&pkg)?
        .into_iter()
        .next()
        .with_context(|| format!("{pkg} not found in Debian trixie(-backports)"))?;
    let tag = format!("{pkg}_{version}");
    let deb_dir = cache::root().join("tmp").join(&tag);
    apt.fetch_and_unpack(&pkg, &version, &deb_dir)?;
    let tarball = std::fs::read_dir(deb_dir.join("usr/src"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.to_string_lossy().ends_with(".tar.xz"))
        .context("no kernel tarball in the linux-source package")?;
    let dest = src_root.join(&tag);
    let _ = std::fs::remove_dir_all(&dest);
    cache::mkdir(&dest)?;
    run::logged(
        &format!("extracting kernel source into {}", dest.display()),
        Command::new("tar")
            .arg("-xf")
            .arg(&tarball)
            .arg("-C")
            .arg(&dest)
            .arg("--strip-components=1"),
        &run::log_path("setup-untar-linux"),
        "Is the disk full? (the source needs about 1.5 GB)",
    )?;
    std::fs::remove_dir_all(&deb_dir)?;
    std::fs::write(dest.join(DONE), &version)?;
    Ok((dest, tag))
}

/// Parses `7.3` into `(7, 3)`.
fn parse_series(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// The newest completely unpacked kernel source in the cache (of package `wanted`, if set).
fn unpacked_linux(src_root: &Path, wanted: Option<&str>) -> Result<Option<(PathBuf, String)>> {
    let Ok(entries) = std::fs::read_dir(src_root) else {
        return Ok(None);
    };
    let mut found: Vec<((u32, u32), PathBuf, String)> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join(DONE).exists())
        .filter_map(|p| {
            let tag = p.file_name()?.to_str()?.to_string();
            let pkg = tag.split('_').next()?;
            if wanted.is_some_and(|w| w != pkg) {
                return None;
            }
            Some((
                parse_series(pkg.strip_prefix("linux-source-")?)?,
                p.clone(),
                tag,
            ))
        })
        .collect();
    found.sort();
    Ok(found.pop().map(|(_, p, t)| (p, t)))
}

/// The Rust standard library source for `rustc_version`: the toolchain's own `rust-src` if it
/// has one, else Debian's build of the same version.
fn rust_src(rustc_version: &str) -> Result<PathBuf> {
    let sysroot = run::query(Command::new("rustc").args(["--print", "sysroot"]))?;
    let own = Path::new(&sysroot).join("lib/rustlib/src/rust/library");
    if own.join("core").exists() {
        return Ok(own);
    }
    let version = rustc_version
        .split_whitespace()
        .nth(1)
        .context("cannot parse `rustc --version`")?
        .to_string();
    let dest = cache::root().join("rust-src").join(&version);
    let lib = dest.join("usr/lib/rustlib/src/rust/library");
    if dest.join(DONE).exists() && lib.join("core").exists() {
        return Ok(lib);
    }
    let mut apt = Apt::new()?;
    let prefix = format!("{version}+");
    let deb_version = apt
        .versions("rust-src")?
        .into_iter()
        .find(|v| v.starts_with(&prefix))
        .with_context(|| {
            format!(
                "Debian has no rust-src for rustc {version}; install a toolchain Debian \
                 trixie-backports has rust-src for (e.g. `rustup default 1.95.0`)"
            )
        })?;
    apt.fetch_and_unpack("rust-src", &deb_version, &dest)?;
    std::fs::write(dest.join(DONE), &deb_version)?;
    Ok(lib)
}

/// bindgen-cli from crates.io.
fn bindgen() -> Result<PathBuf> {
    let root = cache::bindgen_root();
    let bin = root.join("bin");
    if bin.join("bindgen").exists() {
        return Ok(bin);
    }
    run::logged(
        "building bindgen-cli from crates.io (about 1 minute)",
        Command::new("cargo")
            .args(["install", "--locked", "bindgen-cli", "--root"])
            .arg(&root),
        &run::log_path("setup-bindgen"),
        "Check that crates.io is reachable.",
    )?;
    Ok(bin)
}

/// Version of cargo-nextest installed from crates.io (the one seen working).
const NEXTEST_VERSION: &str = "0.9.151";

/// `cargo-nextest` (installed from crates.io on first use): it runs the test binaries, one
/// process per test, and reports every outcome in JUnit XML, which `test.rs` counts.
pub fn nextest() -> Result<PathBuf> {
    let root = cache::nextest_root();
    let bin = root.join("bin/cargo-nextest");
    let stamp = root.join(DONE);
    if bin.exists() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(NEXTEST_VERSION) {
        return Ok(bin);
    }
    run::logged(
        &format!("building cargo-nextest {NEXTEST_VERSION} from crates.io (about 4 minutes)"),
        Command::new("cargo")
            .args(["install", "--locked", "--force"])
            .arg(format!("cargo-nextest@{NEXTEST_VERSION}"))
            .arg("--root")
            .arg(&root),
        &run::log_path("setup-nextest"),
        "Check that crates.io is reachable.",
    )?;
    std::fs::write(&stamp, NEXTEST_VERSION)?;
    Ok(bin)
}

/// The tools venv's Python, with [`TEST_PIP_PACKAGES`] installed (what the guest tests call
/// `$MEMCHAN_PYTHON`).
pub fn test_python() -> Result<PathBuf> {
    let venv = cache::venv();
    let python = venv.join("bin/python3");
    let stamp = venv.join("test-packages.done");
    let want = TEST_PIP_PACKAGES.join(" ");
    if python.exists() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(want.as_str()) {
        return Ok(python);
    }
    python_tools()?;
    pip_install(
        TEST_PIP_PACKAGES,
        "(for the guest tests)",
        &stamp,
        "setup-pip-test",
    )?;
    Ok(python)
}

/// `pip install`s `packages` into the venv (logged to `log`), then writes their list to
/// `stamp`, which says they are there.
fn pip_install(packages: &[&str], why: &str, stamp: &Path, log: &str) -> Result<()> {
    let want = packages.join(" ");
    run::logged(
        &format!("installing {want} from PyPI {why}"),
        Command::new(cache::venv().join("bin/pip"))
            .args(["install", "--quiet"])
            .args(packages),
        &run::log_path(log),
        "Check that pypi.org is reachable.",
    )?;
    std::fs::write(stamp, want)?;
    Ok(())
}

/// A Python venv with libclang (>= 17, for the kernel's bindgen) and virtme-ng.
fn python_tools() -> Result<PathBuf> {
    let venv = cache::venv();
    let stamp = venv.join(DONE);
    let want = PIP_PACKAGES.join(" ");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(want.as_str()) && vng().exists() {
        return cache::libclang_dir();
    }
    if !venv.join("bin/pip").exists() {
        run::logged(
            "creating Python venv for libclang and virtme-ng",
            Command::new("python3").arg("-m").arg("venv").arg(&venv),
            &run::log_path("setup-venv"),
            "Install python3-venv.",
        )?;
    }
    pip_install(PIP_PACKAGES, "(libclang, virtme-ng)", &stamp, "setup-pip")?;
    cache::libclang_dir()
}
