//! `cargo xtask kernel`: configure and build the Rust-enabled test kernel.
//!
//! Configuration: `make tinyconfig`, then the checked-in fragment
//! `xtask/kernel-config/test-kernel.config` merged on top, then `olddefconfig`; every option of
//! the fragment must survive (Kconfig silently drops options whose dependencies are missing,
//! `CONFIG_RUST` among them). The build is skipped when its key (kernel source version,
//! toolchain versions, fragment text) matches the one stored in the build tree.
//!
//! The default flavor is built with the host's Rust toolchain (rustc + Debian's `rust-src`,
//! bindgen, libclang from PyPI) and GCC. The debug flavor needs KASAN, which 7.3 only allows
//! together with Rust in a clang-built kernel: it is built inside the clang build root
//! (`buildroot.rs`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::buildroot::{self, BuildRoot};
use crate::setup::{self, Toolchain};
use crate::{cache, run, KernelOpts};

/// Bump when the way the kernel is built changes, to force a rebuild.
const RECIPE: u32 = 2;

/// How kernel and module builds are run.
#[derive(Clone)]
pub enum Builder {
    /// With the host toolchain (GCC, rustup's rustc).
    Host(Toolchain),
    /// Inside the clang build root.
    Root(BuildRoot),
}

impl Builder {
    /// `program` run with this builder's toolchain (host environment, or inside the root).
    fn command(&self, program: &str) -> Command {
        match self {
            Self::Host(tc) => {
                let mut cmd = Command::new(program);
                tc.apply(&mut cmd);
                cmd
            }
            Self::Root(root) => root.command(program),
        }
    }

    /// The `make` variables that select this builder's toolchain.
    fn make_vars(&self) -> Vec<String> {
        match self {
            Self::Host(_) => Vec::new(),
            Self::Root(root) => root.make_vars(),
        }
    }

    /// A `make` command for this builder (environment and toolchain variables set).
    pub fn make(&self) -> Command {
        let mut cmd = self.command("make");
        cmd.args(self.make_vars());
        cmd
    }

    /// `sh -c script` for this builder; `$MAKE_VARS` holds the toolchain's `make` variables.
    pub fn sh(&self, script: &str) -> Command {
        let mut cmd = self.command("sh");
        let vars = self.make_vars().join(" ");
        cmd.arg("-c").arg(format!("MAKE_VARS='{vars}'; {script}"));
        cmd
    }

    /// Text identifying the toolchain, for build keys.
    fn key(&self, host: &Toolchain) -> Result<String> {
        Ok(match self {
            Self::Host(tc) => tc.key(),
            Self::Root(root) => format!("linux: {}\n{}", host.linux_version, root.versions()?),
        })
    }
}

/// File in the build tree holding the key of the last successful build.
const KEY_FILE: &str = ".memchan-build-key";

/// A built kernel tree and the toolchain that built it.
pub struct KernelTree {
    /// The build tree (`O=`, or `--kdir`): what `make -C` gets for module builds.
    pub build: PathBuf,
    /// The kernel image to boot.
    pub bzimage: PathBuf,
    /// How builds against this tree are run.
    pub builder: Builder,
    /// Whether this is the debug flavor (sanitizers, kmemleak, fault injection).
    pub debug: bool,
    /// Debian's stock kernel: its release string and the directory holding its modules
    /// (`usr/lib/modules/<release>/`, what virtme-ng boots it with).
    pub stock: Option<Stock>,
}

/// Debian's stock kernel, unpacked.
#[derive(Clone)]
pub struct Stock {
    /// The release string (`uname -r`), e.g. `7.3.4+deb13-amd64`.
    pub release: String,
    /// The Debian package version, e.g. `7.3.4-1~bpo13+1`.
    pub version: String,
    /// The static busybox virtme-ng builds the guest's initramfs from (the host has none).
    pub busybox: PathBuf,
}

/// The checked-in configuration fragments of a flavor, in merge order.
fn fragments(extra: Option<&str>) -> Vec<PathBuf> {
    let dir = cache::repo().join("xtask/kernel-config");
    let mut v = vec![dir.join("test-kernel.config")];
    if let Some(extra) = extra {
        v.push(dir.join(extra));
    }
    v
}

/// The flavor's extra fragment, if any.
fn extra_fragment(opts: &KernelOpts) -> Option<&'static str> {
    if opts.debug {
        Some("debug.config")
    } else if opts.perf {
        Some("perf.config")
    } else {
        None
    }
}

/// Makes sure the test kernel (or `--kdir`) is built and returns it (`--debian` is
/// `debian::ensure`'s; see [`crate::module::kernel`]).
pub fn ensure(opts: &KernelOpts) -> Result<KernelTree> {
    if let Some(kdir) = &opts.kdir {
        let toolchain = setup::ensure(false)?;
        if !kdir.join("Module.symvers").exists() || !kdir.join("rust/libkernel.rmeta").exists() {
            bail!(
                "{} is not a built Rust-enabled kernel tree (no Module.symvers or \
                 rust/libkernel.rmeta): build it first, or drop --kdir to use the test kernel",
                kdir.display()
            );
        }
        let bzimage = kdir.join("arch/x86/boot/bzImage");
        let debug = std::fs::read_to_string(kdir.join(".config"))
            .is_ok_and(|c| c.lines().any(|l| l == "CONFIG_DEBUG_KMEMLEAK=y"));
        return Ok(KernelTree {
            build: kdir.clone(),
            bzimage,
            builder: Builder::Host(toolchain),
            debug,
            stock: None,
        });
    }
    let toolchain = setup::ensure(opts.src.is_none())?;
    let (src, mut flavor) = match (&opts.src, &toolchain.linux_src) {
        (Some(src), _) => (src.clone(), "custom-src".to_string()),
        (None, Some(src)) => (src.clone(), "default".to_string()),
        (None, None) => bail!("no kernel source"),
    };
    // Fixes to the kernel's own code that memchan's tests need, applied to the Debian source
    // (ours to patch); a source tree given with --src is used as it is.
    let patch_text = if opts.src.is_none() {
        apply_patches(&src)?
    } else {
        String::new()
    };
    let debug = opts.debug;
    let extra = extra_fragment(opts);
    if debug {
        flavor.push_str("-debug");
    } else if opts.perf {
        flavor.push_str("-perf");
    }
    let builder = if debug {
        Builder::Root(buildroot::ensure(&buildroot::CLANG)?)
    } else {
        Builder::Host(toolchain.clone())
    };
    let build = cache::build_dir(&flavor);
    let bzimage = build.join("arch/x86/boot/bzImage");
    let frag_text = fragment_text(extra)?;
    let key = format!(
        "recipe: {RECIPE}\nsource: {}\n{}fragment:\n{frag_text}patches:\n{patch_text}",
        src.display(),
        builder.key(&toolchain)?
    );
    let key_path = build.join(KEY_FILE);
    if bzimage.exists() && std::fs::read_to_string(&key_path).ok().as_deref() == Some(&*key) {
        println!("==> test kernel ({flavor}) up to date: {}", build.display());
        return Ok(KernelTree {
            build,
            bzimage,
            builder,
            debug,
            stock: None,
        });
    }
    let _ = std::fs::remove_file(&key_path);
    cache::mkdir(&build)?;
    configure(&src, &build, &builder, extra)?;
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get() + 1);
    run::logged(
        &format!(
            "building the {flavor} test kernel with {jobs} jobs (about {} minutes on 2 cores \
             the first time, seconds when nothing changed)",
            if debug { "11-15" } else { "8-10" }
        ),
        make(&src, &build, &builder).args([format!("-j{jobs}").as_str(), "bzImage", "modules"]),
        &run::log_path(&format!("kernel-build-{flavor}")),
        "Look for the first `error:` in the log.",
    )?;
    std::fs::write(&key_path, key)?;
    println!("    kernel: {}", bzimage.display());
    Ok(KernelTree {
        build,
        bzimage,
        builder,
        debug,
        stock: None,
    })
}

/// The kernel patches carried in `xtask/kernel-patches/`, in name order.
fn patches() -> Result<Vec<PathBuf>> {
    let dir = cache::repo().join("xtask/kernel-patches");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "patch"))
        .collect();
    found.sort();
    Ok(found)
}

/// Applies each carried patch to `src` unless it is applied already; returns their text (part
/// of the build key).
fn apply_patches(src: &Path) -> Result<String> {
    let mut text = String::new();
    for p in patches()? {
        let quiet = |args: &[&str]| {
            Command::new("patch")
                .args(args)
                .arg("-i")
                .arg(&p)
                .arg("-d")
                .arg(src)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !quiet(&["-p1", "-R", "--dry-run", "-s", "-f"]) {
            println!("==> patching the kernel source: {}", p.display());
            if !quiet(&["-p1", "-s", "-f", "-N"]) {
                bail!(
                    "{} does not apply to {}: remove the source directory to unpack it afresh",
                    p.display(),
                    src.display()
                );
            }
        }
        text.push_str(&std::fs::read_to_string(&p)?);
    }
    Ok(text)
}

/// The text of all fragments of a flavor (part of the build key, and what must survive).
fn fragment_text(extra: Option<&str>) -> Result<String> {
    let mut text = String::new();
    for f in fragments(extra) {
        let part =
            std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
        text.push_str(&part);
    }
    Ok(text)
}

/// `make -C src O=build` with the builder's toolchain.
fn make(src: &Path, build: &Path, builder: &Builder) -> Command {
    let mut cmd = builder.make();
    cmd.arg("-C").arg(src).arg(format!("O={}", build.display()));
    cmd
}

/// tinyconfig + fragments + olddefconfig, then checks that every fragment option stuck.
fn configure(src: &Path, build: &Path, builder: &Builder, extra: Option<&str>) -> Result<()> {
    run::logged(
        "checking the Rust toolchain (make rustavailable)",
        make(src, build, builder).arg("rustavailable"),
        &run::log_path("kernel-rustavailable"),
        "The kernel cannot use this Rust toolchain; `cargo xtask setup` fetches matching parts.",
    )?;
    run::logged(
        "configuring: tinyconfig + the fragments in xtask/kernel-config/",
        &mut builder.sh(&format!(
            "set -e; make -C '{src}' O='{build}' $MAKE_VARS tinyconfig; \
             '{src}/scripts/kconfig/merge_config.sh' -m -O '{build}' '{build}/.config' {frags}; \
             make -C '{src}' O='{build}' $MAKE_VARS olddefconfig",
            src = src.display(),
            build = build.display(),
            frags = fragments(extra)
                .iter()
                .map(|f| format!("'{}'", f.display()))
                .collect::<Vec<_>>()
                .join(" ")
        )),
        &run::log_path("kernel-config"),
        "See the log.",
    )?;
    let config = std::fs::read_to_string(build.join(".config")).context("reading .config")?;
    let frag_text = fragment_text(extra)?;
    let missing: Vec<String> = wanted(&frag_text)
        .into_iter()
        .filter(|(name, value)| match value {
            Some(line) => !config.lines().any(|c| c == line),
            None => config.lines().any(|c| c.starts_with(&format!("{name}="))),
        })
        .map(|(name, value)| value.unwrap_or(format!("# {name} is not set")))
        .collect();
    if !missing.is_empty() {
        bail!(
            "the kernel configuration dropped {} (missing dependencies?). For CONFIG_RUST, \
             run `make -C {} O={} rustavailable` to see why Rust is unavailable",
            missing.join(", "),
            src.display(),
            build.display()
        );
    }
    Ok(())
}

/// What the fragments ask for, the later fragment winning: option name → `Some(line)` for
/// `CONFIG_X=...`, `None` for `# CONFIG_X is not set`.
fn wanted(text: &str) -> Vec<(String, Option<String>)> {
    let mut out: Vec<(String, Option<String>)> = Vec::new();
    for line in text.lines().map(str::trim) {
        let entry =
            if let Some((name, _)) = line.split_once('=').filter(|_| line.starts_with("CONFIG_")) {
                (name.to_string(), Some(line.to_string()))
            } else if let Some(name) = line
                .strip_prefix("# ")
                .and_then(|l| l.strip_suffix(" is not set"))
                .filter(|n| n.starts_with("CONFIG_"))
            {
                (name.to_string(), None)
            } else {
                continue;
            };
        out.retain(|(n, _)| *n != entry.0);
        out.push(entry);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::wanted;

    #[test]
    fn later_fragments_override_earlier_ones() {
        let w = wanted("CONFIG_A=y\nCONFIG_B=y\n# CONFIG_A is not set\n# comment\n");
        assert_eq!(
            w,
            vec![
                ("CONFIG_B".into(), Some("CONFIG_B=y".into())),
                ("CONFIG_A".into(), None)
            ]
        );
    }
}
