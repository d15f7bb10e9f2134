//! The clang build root that the debug (KASAN) kernel flavor is built in.
//!
//! In Linux 7.3 `config RUST` depends on `!KASAN || CC_IS_CLANG`, so a kernel with both Rust and
//! KASAN must be built with clang, and the module with the same rustc as its kernel. The host
//! (Debian 12) has neither a recent enough clang nor a rustc whose `rust-src` Debian still ships
//! in a suite that does not rotate. So the debug flavor is built inside a Debian 13 (trixie)
//! tree made with `mmdebstrap`: clang/lld 19, rustc + rust-src + clippy 1.85 and bindgen 0.71,
//! the toolchain Debian builds its own Rust-enabled kernels with. It also provides the static
//! busybox that the debug guest's initramfs is made from.
//!
//! Commands run inside it through `unshare --mount` + `chroot`, with the repository and the
//! cache bind-mounted at their own paths, so every path means the same inside and outside.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Result};

use crate::{cache, run, setup};

/// Debian suite of the build root.
const SUITE: &str = "trixie";

/// What the build root holds (`mmdebstrap --include`).
const PACKAGES: &[&str] = &[
    "clang-19",
    "lld-19",
    "llvm-19",
    "libclang-19-dev",
    "rustc",
    "rust-src",
    "rust-clippy",
    "bindgen",
    "make",
    "gcc",
    "libc6-dev",
    "flex",
    "bison",
    "bc",
    "libelf-dev",
    "libssl-dev",
    "cpio",
    "kmod",
    "python3",
    "xz-utils",
    "busybox-static",
];

/// `make` variables selecting the build root's LLVM toolchain.
pub const MAKE_VARS: &[&str] = &["LLVM=-19"];

/// Marker written once the build root is complete; holds the recipe it was made from.
const DONE_FILE: &str = ".memchan-buildroot";

/// Enters the build root: bind mounts, then `chroot` and `cd` to the caller's directory.
/// Arguments: root, repository, cache, then the command.
const ENTER: &str = r#"set -e
root=$1 repo=$2 cache=$3; shift 3
for d in "$repo" "$cache"; do mkdir -p "$root$d"; mount --bind "$d" "$root$d"; done
mount -t proc proc "$root/proc"
mount --bind /dev "$root/dev"
exec chroot "$root" /bin/sh -c 'cd "$0" && exec "$@"' "$(pwd)" "$@"
"#;

/// A ready build root.
#[derive(Clone)]
pub struct BuildRoot {
    dir: PathBuf,
}

impl BuildRoot {
    /// `program` to be run inside the build root (add arguments and a working directory as with
    /// any `Command`; the directory must be under the repository or the cache).
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--", "sh", "-c", ENTER, "enter"])
            .arg(&self.dir)
            .arg(cache::repo())
            .arg(cache::root())
            .arg(program)
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("CARGO");
        cmd
    }

    /// The versions of the tools inside, for build keys.
    pub fn versions(&self) -> Result<String> {
        let mut cmd = self.command("sh");
        cmd.arg("-c").arg(
            "rustc --version; clang-19 --version | head -n1; bindgen --version; \
             clippy-driver --version",
        );
        Ok(format!("build root: {SUITE}\n{}\n", run::query(&mut cmd)?))
    }

    /// The static busybox binary inside.
    pub fn busybox(&self) -> PathBuf {
        self.dir.join("bin/busybox")
    }
}

/// Makes the build root if it is missing (about 2 minutes and 1.8 GB) and returns it.
pub fn ensure() -> Result<BuildRoot> {
    let dir = cache::root().join("buildroot").join(SUITE);
    let recipe = format!("{SUITE}: {}\n", PACKAGES.join(" "));
    let done = dir.join(DONE_FILE);
    if std::fs::read_to_string(&done).ok().as_deref() == Some(&*recipe) {
        return Ok(BuildRoot { dir });
    }
    if !setup::is_root() {
        bail!("making the clang build root for the debug kernel needs root (mmdebstrap, chroot)");
    }
    setup::apt_install(&["mmdebstrap", "debian-archive-keyring"])?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    cache::mkdir(dir.parent().unwrap_or(Path::new("/")))?;
    run::logged(
        &format!(
            "making the Debian {SUITE} clang build root for the debug kernel with mmdebstrap \
             (about 2 minutes, 1.8 GB)"
        ),
        Command::new("mmdebstrap")
            .args(["--variant=minbase", "--mode=root"])
            .arg(format!("--include={}", PACKAGES.join(",")))
            .arg(SUITE)
            .arg(&dir)
            .arg(format!("deb http://deb.debian.org/debian {SUITE} main")),
        &run::log_path("buildroot"),
        "mmdebstrap needs the Debian mirror (deb.debian.org) and root; see the log.",
    )?;
    std::fs::write(&done, recipe)?;
    Ok(BuildRoot { dir })
}
