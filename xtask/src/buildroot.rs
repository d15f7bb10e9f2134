//! The Debian build roots: clang for the debug (KASAN) kernel flavor (Debian 13), Debian's own
//! kernel toolchain for building against Debian's stock kernels (Debian 13 for
//! trixie-backports' kernel, forky for forky's), and fresh machines to test `install` in.
//!
//! In Linux 7.3 `config RUST` depends on `!KASAN || CC_IS_CLANG`, so a kernel with both Rust and
//! KASAN must be built with clang, and the module with the same rustc as its kernel. The host
//! (Debian 12) has neither a recent enough clang nor a rustc whose `rust-src` Debian still ships
//! in a suite that does not rotate. So the debug flavor is built inside a Debian 13 (trixie)
//! tree made with `mmdebstrap`: clang/lld 19, rustc + rust-src + clippy 1.85 and bindgen 0.71,
//! the toolchain Debian builds its own Rust-enabled kernels with. It also provides the static
//! busybox that the debug guest's initramfs is made from.
//!
//! The stock root ([`STOCK`]) holds what Debian builds its own kernel packages with (gcc-14,
//! rustc 1.85, bindgen 0.71, and `pahole` for BTF): module builds against Debian's kernel must
//! reproduce its Rust metadata, which only the same toolchain does. It is a separate tree
//! because `pahole` in the clang root would make the KASAN module build warn that its kernel
//! was built without it.
//!
//! Commands run inside it through `unshare --mount` + `chroot`, with the repository and the
//! cache bind-mounted at their own paths, so every path means the same inside and outside.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Result};

use crate::{cache, run, setup};

/// What a build root is made of.
pub struct Recipe {
    /// Directory name under `<cache>/buildroot/`.
    name: &'static str,
    /// The Debian suite it is made from.
    suite: &'static str,
    /// What it holds (`mmdebstrap --include`).
    packages: &'static [&'static str],
    /// `make` variables selecting its toolchain.
    make_vars: &'static [&'static str],
    /// Shell commands printing the versions of its tools (for build keys).
    versions: &'static str,
    /// What it is for (progress messages).
    purpose: &'static str,
    /// Whether trixie-backports is among its apt sources (Debian's 7.3 kernels live there).
    backports: bool,
}

/// Packages both roots hold (after the given ones): kernel build dependencies, rustc, busybox.
macro_rules! common_packages {
    ($($extra:literal),*) => {
        &[
            $($extra,)* "rustc", "rust-src", "rust-clippy", "bindgen", "make", "gcc", "libc6-dev", "flex",
            "bison", "bc", "libelf-dev", "libssl-dev", "cpio", "kmod", "python3", "xz-utils",
            "busybox-static",
        ]
    };
}

/// The clang root of the debug (KASAN) flavor.
pub const CLANG: Recipe = Recipe {
    name: "trixie",
    suite: "trixie",
    packages: common_packages!("clang-19", "lld-19", "llvm-19", "libclang-19-dev"),
    make_vars: &["LLVM=-19"],
    versions: "rustc --version; clang-19 --version | head -n1; bindgen --version; \
               clippy-driver --version",
    purpose: "the clang build root for the debug kernel",
    backports: false,
};

/// The root with Debian 13's kernel toolchain, for the trixie-backports kernel.
pub const STOCK: Recipe = Recipe {
    name: "trixie-stock",
    suite: "trixie",
    packages: common_packages!("gcc-14", "dwarves", "libclang-19-dev"),
    make_vars: &["CC=gcc-14"],
    versions: "rustc --version; gcc-14 --version | head -n1; bindgen --version; \
               clippy-driver --version; pahole --version",
    purpose: "the build root with Debian's kernel toolchain",
    backports: false,
};

/// A fresh Debian 13 machine running the newest backports kernel, as a user has it before
/// `cargo xtask install`: what that command is tested in (then booted with its own kernel).
pub const MACHINE: Recipe = Recipe {
    name: "trixie-machine",
    suite: "trixie",
    packages: &[
        "linux-image-amd64/trixie-backports",
        "udev",
        "kmod",
        "passwd",
        "procps",
        "busybox-static",
    ],
    make_vars: &[],
    versions: "uname -s",
    purpose: "a Debian 13 machine with the newest backports kernel (to test `install` in)",
    backports: true,
};

/// The root with Debian forky's kernel toolchain (gcc-16, rustc 1.97, bindgen 0.72 and the
/// libclang it depends on), for forky's 7.2 kernel.
pub const FORKY_STOCK: Recipe = Recipe {
    name: "forky-stock",
    suite: "forky",
    packages: common_packages!("gcc-16", "dwarves", "libclang-dev"),
    make_vars: &["CC=gcc-16"],
    versions: "rustc --version; gcc-16 --version | head -n1; bindgen --version; \
               clippy-driver --version; pahole --version",
    purpose: "the build root with Debian forky's kernel toolchain",
    backports: false,
};

/// A fresh Debian forky (testing) machine, as [`MACHINE`] is for Debian 13.
pub const FORKY_MACHINE: Recipe = Recipe {
    name: "forky-machine",
    suite: "forky",
    packages: &[
        "linux-image-amd64",
        "udev",
        "kmod",
        "passwd",
        "procps",
        "busybox-static",
    ],
    make_vars: &[],
    versions: "uname -s",
    purpose: "a Debian forky machine with its kernel (to test `install` in)",
    backports: false,
};

impl Recipe {
    /// The packages it holds.
    pub fn packages(&self) -> &'static [&'static str] {
        self.packages
    }
}

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
    recipe: &'static Recipe,
    /// `make` variables added by the user of the root (e.g. Debian's release string).
    extra_vars: Vec<String>,
}

impl BuildRoot {
    /// `program` to be run inside the build root (add arguments and a working directory as with
    /// any `Command`; the directory must be under the repository or the cache).
    pub fn command(&self, program: &str) -> Command {
        if self.dir == Path::new("/") {
            let mut cmd = Command::new(program);
            cmd.env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                .env_remove("RUSTUP_TOOLCHAIN")
                .env_remove("CARGO");
            return cmd;
        }
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
        cmd.arg("-c").arg(self.recipe.versions);
        Ok(format!(
            "build root: {}\n{}\n",
            self.recipe.name,
            run::query(&mut cmd)?
        ))
    }

    /// The `make` variables selecting this root's toolchain.
    pub fn make_vars(&self) -> Vec<String> {
        let fixed = self.recipe.make_vars.iter().map(|v| v.to_string());
        fixed.chain(self.extra_vars.iter().cloned()).collect()
    }

    /// This root with `var` added to every `make` command line.
    pub fn with_make_var(mut self, var: String) -> Self {
        self.extra_vars.push(var);
        self
    }

    /// The static busybox binary inside.
    pub fn busybox(&self) -> PathBuf {
        self.dir.join("bin/busybox")
    }

    /// The root directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// This machine itself standing in for a root of `which` (a Debian machine that has its
/// packages, see `install.rs`): commands run directly with the system's `PATH`, so Debian's
/// rustc and bindgen are used, not rustup's.
pub fn native(which: &'static Recipe) -> BuildRoot {
    BuildRoot {
        dir: PathBuf::from("/"),
        recipe: which,
        extra_vars: Vec::new(),
    }
}

/// Makes the build root if it is missing (about 2 minutes and 1.8 GB) and returns it.
pub fn ensure(which: &'static Recipe) -> Result<BuildRoot> {
    let dir = cache::root().join("buildroot").join(which.name);
    let suite = which.suite;
    let mut recipe = format!("{suite}: {}\n", which.packages.join(" "));
    if which.backports {
        recipe.push_str("with trixie-backports\n");
    }
    let root = BuildRoot {
        dir: dir.clone(),
        recipe: which,
        extra_vars: Vec::new(),
    };
    let done = dir.join(DONE_FILE);
    if std::fs::read_to_string(&done).ok().as_deref() == Some(&*recipe) {
        return Ok(root);
    }
    if !setup::is_root() {
        bail!("making {} needs root (mmdebstrap, chroot)", which.purpose);
    }
    setup::apt_install(&["mmdebstrap", "debian-archive-keyring"])?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    cache::mkdir(dir.parent().unwrap_or(Path::new("/")))?;
    run::logged(
        &format!(
            "making {} (Debian {suite}) with mmdebstrap (about 2 minutes, 1-2 GB)",
            which.purpose
        ),
        Command::new("mmdebstrap")
            .args(["--variant=minbase", "--mode=root"])
            .arg(format!("--include={}", which.packages.join(",")))
            .arg(suite)
            .arg(&dir)
            .arg(if suite == "forky" {
                // As in `setup::FORKY_SOURCES`: forky's `Release` may have expired on the mirror.
                "deb [check-valid-until=no] http://deb.debian.org/debian forky main".to_string()
            } else {
                format!("deb http://deb.debian.org/debian {suite} main")
            })
            .args(
                which
                    .backports
                    .then(|| format!("deb http://deb.debian.org/debian {suite}-backports main")),
            ),
        &run::log_path(&format!("buildroot-{}", which.name)),
        "mmdebstrap needs the Debian mirror (deb.debian.org) and root; see the log.",
    )?;
    std::fs::write(&done, recipe)?;
    Ok(root)
}
