//! `cargo xtask module`: build `memchan.ko` against the test kernel (or `--kdir`).
//!
//! The build output goes to `<build tree>/memchan-module/` (Kbuild's `MO=`), not into the
//! repository: a module only loads into the kernel tree it was built against, so each tree
//! keeps its own.

use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::kernel::{self, KernelTree};
use crate::{cache, run, KernelOpts};

/// A built module and the kernel it belongs to.
pub struct Built {
    /// Path of `memchan.ko`.
    pub ko: PathBuf,
    /// The kernel tree it was built against.
    pub kernel: KernelTree,
    /// Number of compiler and clippy warnings in the build.
    pub warnings: usize,
}

/// Builds the module (Kbuild decides what is out of date) and returns it.
pub fn ensure(opts: &KernelOpts) -> Result<Built> {
    build(opts, false)
}

/// The kernel tree `opts` select: a Debian stock kernel (`--debian[=SUITE]`) or a test kernel.
pub fn kernel(opts: &KernelOpts) -> Result<kernel::KernelTree> {
    match opts.debian {
        Some(suite) => crate::debian::ensure(suite),
        None => kernel::ensure(opts),
    }
}

/// Builds the module; with `fresh`, recompiles it even if nothing changed (so that all of its
/// warnings are seen).
pub fn build(opts: &KernelOpts, fresh: bool) -> Result<Built> {
    let kernel = self::kernel(opts)?;
    let out = kernel.build.join("memchan-module");
    if fresh {
        let _ = std::fs::remove_dir_all(&out);
    }
    cache::mkdir(&out)?;
    let mut cmd = kernel.builder.make();
    cmd.arg("-C")
        .arg(&kernel.build)
        .arg(format!("M={}", cache::repo().join("kernel").display()))
        .arg(format!("MO={}", out.display()))
        // Clippy runs as part of every module build: it costs a few seconds and its lints
        // (undocumented unsafe blocks among them) are part of the coding standard.
        .arg("CLIPPY=1")
        .arg("modules");
    run::logged(
        "building memchan.ko",
        &mut cmd,
        &run::log_path("module-build"),
        "The compiler errors are in the log.",
    )?;
    let ko = out.join("memchan.ko");
    if !ko.exists() {
        bail!("the module build produced no {}", ko.display());
    }
    let warnings = warnings(&run::log_path("module-build"));
    Ok(Built {
        ko,
        kernel,
        warnings,
    })
}

/// Prints the compiler and clippy warnings of the module build and returns how many there were.
///
/// Kbuild only recompiles when something changed, so warnings are shown by the build that
/// produces them; `cargo xtask test` rebuilds from scratch and fails on any warning.
fn warnings(log: &std::path::Path) -> usize {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    // rustc/clippy warnings, and objtool's (e.g. a panic path objtool cannot follow).
    let is_warning = |l: &str| {
        (l.starts_with("warning: ") && !l.contains("warnings emitted")) || l.contains(": warning: ")
    };
    let count = text.lines().filter(|l| is_warning(l)).count();
    if count > 0 {
        println!("    {count} compiler/clippy/objtool warning(s) in the module build:");
        for line in text
            .lines()
            .filter(|l| is_warning(l) || l.trim_start().starts_with("-->"))
        {
            println!("    | {line}");
        }
    }
    count
}
