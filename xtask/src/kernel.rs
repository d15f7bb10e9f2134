//! `cargo xtask kernel`: configure and build the Rust-enabled test kernel.
//!
//! Configuration: `make tinyconfig`, then the checked-in fragment
//! `xtask/kernel-config/test-kernel.config` merged on top, then `olddefconfig`; every option of
//! the fragment must survive (Kconfig silently drops options whose dependencies are missing,
//! `CONFIG_RUST` among them). The build is skipped when its key (kernel source version,
//! toolchain versions, fragment text) matches the one stored in the build tree.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::setup::{self, Toolchain};
use crate::{cache, run, KernelOpts};

/// Bump when the way the kernel is built changes, to force a rebuild.
const RECIPE: u32 = 1;

/// File in the build tree holding the key of the last successful build.
const KEY_FILE: &str = ".memchan-build-key";

/// A built kernel tree and the toolchain that built it.
pub struct KernelTree {
    /// The build tree (`O=`, or `--kdir`): what `make -C` gets for module builds.
    pub build: PathBuf,
    /// The kernel image to boot.
    pub bzimage: PathBuf,
    /// Toolchain environment for builds against this tree.
    pub toolchain: Toolchain,
    /// Whether this is the debug flavor (sanitizers, kmemleak, fault injection).
    pub debug: bool,
}

/// The checked-in configuration fragments of a flavor, in merge order.
fn fragments(debug: bool) -> Vec<PathBuf> {
    let dir = cache::repo().join("xtask/kernel-config");
    let mut v = vec![dir.join("test-kernel.config")];
    if debug {
        v.push(dir.join("debug.config"));
    }
    v
}

/// Makes sure the test kernel (or `--kdir`) is built and returns it.
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
            toolchain,
            debug,
        });
    }
    let toolchain = setup::ensure(opts.src.is_none())?;
    let (src, mut flavor) = match (&opts.src, &toolchain.linux_src) {
        (Some(src), _) => (src.clone(), "custom-src".to_string()),
        (None, Some(src)) => (src.clone(), "default".to_string()),
        (None, None) => bail!("no kernel source"),
    };
    let debug = opts.debug;
    if debug {
        flavor.push_str("-debug");
    }
    let build = cache::build_dir(&flavor);
    let bzimage = build.join("arch/x86/boot/bzImage");
    let frag_text = fragment_text(debug)?;
    let key = format!(
        "recipe: {RECIPE}\nsource: {}\n{}fragment:\n{frag_text}",
        src.display(),
        toolchain.key()
    );
    let key_path = build.join(KEY_FILE);
    if bzimage.exists() && std::fs::read_to_string(&key_path).ok().as_deref() == Some(&*key) {
        println!("==> test kernel ({flavor}) up to date: {}", build.display());
        return Ok(KernelTree {
            build,
            bzimage,
            toolchain,
            debug,
        });
    }
    let _ = std::fs::remove_file(&key_path);
    cache::mkdir(&build)?;
    configure(&src, &build, &toolchain, debug)?;
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get() + 1);
    run::logged(
        &format!(
            "building the {flavor} test kernel with {jobs} jobs (about {} minutes on 2 cores \
             the first time, seconds when nothing changed)",
            if debug { "12-15" } else { "8-10" }
        ),
        make(&src, &build, &toolchain).args([format!("-j{jobs}").as_str(), "bzImage", "modules"]),
        &run::log_path(&format!("kernel-build-{flavor}")),
        "Look for the first `error:` in the log.",
    )?;
    std::fs::write(&key_path, key)?;
    println!("    kernel: {}", bzimage.display());
    Ok(KernelTree {
        build,
        bzimage,
        toolchain,
        debug,
    })
}

/// The text of all fragments of a flavor (part of the build key, and what must survive).
fn fragment_text(debug: bool) -> Result<String> {
    let mut text = String::new();
    for f in fragments(debug) {
        let part =
            std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
        text.push_str(&part);
    }
    Ok(text)
}

/// `make -C src O=build` with the toolchain environment.
fn make(src: &Path, build: &Path, tc: &Toolchain) -> Command {
    let mut cmd = Command::new("make");
    cmd.arg("-C").arg(src).arg(format!("O={}", build.display()));
    tc.apply(&mut cmd);
    cmd
}

/// tinyconfig + fragments + olddefconfig, then checks that every fragment option stuck.
fn configure(src: &Path, build: &Path, tc: &Toolchain, debug: bool) -> Result<()> {
    run::logged(
        "checking the Rust toolchain (make rustavailable)",
        make(src, build, tc).arg("rustavailable"),
        &run::log_path("kernel-rustavailable"),
        "The kernel cannot use this Rust toolchain; `cargo xtask setup` fetches matching parts.",
    )?;
    let mut script = Command::new("sh");
    tc.apply(&mut script);
    run::logged(
        "configuring: tinyconfig + the fragments in xtask/kernel-config/",
        script.arg("-c").arg(format!(
            "set -e; make -C '{src}' O='{build}' tinyconfig; \
             '{src}/scripts/kconfig/merge_config.sh' -m -O '{build}' '{build}/.config' {frags}; \
             make -C '{src}' O='{build}' olddefconfig",
            src = src.display(),
            build = build.display(),
            frags = fragments(debug)
                .iter()
                .map(|f| format!("'{}'", f.display()))
                .collect::<Vec<_>>()
                .join(" ")
        )),
        &run::log_path("kernel-config"),
        "See the log.",
    )?;
    let config = std::fs::read_to_string(build.join(".config")).context("reading .config")?;
    let frag_text = fragment_text(debug)?;
    let missing: Vec<&str> = frag_text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("CONFIG_"))
        .filter(|l| !config.lines().any(|c| c == *l))
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
