//! Where things live: the repository and the cache of downloaded and built artifacts.
//!
//! Nothing downloaded or built for the test kernel goes into the repository. The cache root is
//! `$MEMCHAN_CACHE`, else `$XDG_CACHE_HOME/memchan`, else `~/.cache/memchan`:
//!
//! ```text
//! apt/                       private apt state (sources list, package lists, .debs)
//! src/linux-<version>/       unpacked kernel source
//! rust-src/<rustc version>/  Rust standard library source matching `rustc --version`
//! tools/bindgen/bin/bindgen  bindgen-cli
//! tools/venv/                Python venv with libclang and virtme-ng
//! tools/nextest/bin/         cargo-nextest (runs and counts the tests)
//! build/<flavor>/            kernel build tree (+ memchan-module/ with memchan.ko)
//! buildroot/trixie/          Debian 13 clang build root for the debug (KASAN) flavor
//! initramfs/                 busybox initramfs that boots the debug flavor
//! runs/                      guest run logs and scratch directories
//! ```

use std::env;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The cache root.
pub fn root() -> PathBuf {
    if let Some(dir) = env::var_os("MEMCHAN_CACHE") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("memchan");
    }
    let home = env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache/memchan")
}

/// The repository root (the parent of the `xtask` crate).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Cargo's target directory (`$CARGO_TARGET_DIR`, else `target/` in the repository).
pub fn target_dir() -> PathBuf {
    env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo().join("target"), PathBuf::from)
}

/// Private apt state directory.
pub fn apt_dir() -> PathBuf {
    root().join("apt")
}

/// Directory with `bin/cargo-nextest`.
pub fn nextest_root() -> PathBuf {
    root().join("tools/nextest")
}

/// Directory with `bin/bindgen`.
pub fn bindgen_root() -> PathBuf {
    root().join("tools/bindgen")
}

/// Python venv with libclang and virtme-ng.
pub fn venv() -> PathBuf {
    root().join("tools/venv")
}

/// Directory holding `libclang.so` (from the PyPI `libclang` wheel inside the venv).
pub fn libclang_dir() -> Result<PathBuf> {
    let lib = venv().join("lib");
    for entry in std::fs::read_dir(&lib).with_context(|| format!("reading {}", lib.display()))? {
        let dir = entry?.path().join("site-packages/clang/native");
        if dir.join("libclang.so").exists() {
            return Ok(dir);
        }
    }
    anyhow::bail!(
        "libclang.so not found under {}: run `cargo xtask setup`",
        lib.display()
    )
}

/// Kernel build tree of the given flavor.
pub fn build_dir(flavor: &str) -> PathBuf {
    root().join("build").join(flavor)
}

/// Directory for guest run logs and scratch space.
pub fn runs_dir() -> PathBuf {
    root().join("runs")
}

/// Creates `dir` (and parents) if missing.
pub fn mkdir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}
