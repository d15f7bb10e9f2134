//! `--debian[=SUITE]`: a Debian stock kernel, booted as Debian ships it: the newest
//! trixie-backports kernel (`backports`, the default: 7.3, `+deb13`) or forky's (`forky`, Debian
//! testing: 7.2, `+deb14`), each built against with its own suite's toolchain.
//!
//! Debian's headers packages carry no Rust metadata (`rust/*.rmeta`, `libmacros.so`), so an
//! out-of-tree Rust module cannot be built against them as they are. Rebuilding `prepare` and
//! `rust/` from Debian's own `linux-source` with the headers' `.config`, Debian's release
//! string and the suite's toolchain (its stock build root, [`Target::stock`]) reproduces the
//! crate hashes in Debian's `Module.symvers`; with that `Module.symvers` and the headers' `vmlinux` (the
//! BTF base) copied into the tree, `memchan.ko` links against Debian's kernel and its
//! `struct module` matches (BTF must stay on: without it the layout differs and `insmod`
//! refuses the module).
//!
//! The source is unpacked afresh for this flavor and never patched: the module is proven on
//! the kernel users have, without `xtask/kernel-patches/`.
//!
//! Layout: `<cache>/debian/<release>_<version>/` holds `image/` (`linux-binary` +
//! `linux-modules`: `usr/lib/modules/<release>/{vmlinuz,kernel/}`, which virtme-ng finds by
//! walking up from the kernel image), `headers/`, `src/` and the prepared tree `build/`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::buildroot::{self, BuildRoot};
use crate::kernel::{Builder, KernelTree, Stock};
use crate::setup::Apt;
use crate::{cache, run};

/// Bump when the way the tree is prepared changes, to force a rebuild.
const RECIPE: u32 = 1;

/// A Debian suite whose stock kernel memchan is built and tested against.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum Suite {
    /// Debian 13's trixie-backports (7.3, `+deb13`).
    #[value(alias = "trixie-backports")]
    Backports,
    /// Debian forky, testing (7.2, `+deb14`; sid's kernel has the same ABI and toolchain).
    #[value(alias = "testing")]
    Forky,
}

/// What differs between the suites.
pub struct Target {
    /// Short name, for logs and messages.
    pub name: &'static str,
    /// The `NN` of the kernel release's `+debNN`.
    abi: u32,
    /// Oldest kernel series taken from the suite.
    pub min_series: (u32, u32, u32),
    /// The build root with the suite's kernel toolchain.
    pub stock: &'static buildroot::Recipe,
    /// A fresh machine of the suite with its kernel (to test `install` in).
    pub machine: &'static buildroot::Recipe,
    /// How a user gets the suite's kernel (for messages).
    pub kernel_hint: &'static str,
}

/// trixie-backports.
const BACKPORTS: Target = Target {
    name: "trixie-backports",
    abi: 13,
    min_series: (7, 3, 0),
    stock: &buildroot::STOCK,
    machine: &buildroot::MACHINE,
    kernel_hint: "apt-get install -t trixie-backports linux-image-amd64 linux-headers-amd64",
};

/// forky.
const FORKY: Target = Target {
    name: "forky",
    abi: 14,
    min_series: (7, 2, 0),
    stock: &buildroot::FORKY_STOCK,
    machine: &buildroot::FORKY_MACHINE,
    kernel_hint: "apt-get install linux-image-amd64 linux-headers-amd64",
};

impl Suite {
    /// What differs for this suite.
    pub fn target(self) -> &'static Target {
        match self {
            Self::Backports => &BACKPORTS,
            Self::Forky => &FORKY,
        }
    }

    /// The suite a kernel release (`7.2.12+deb14-amd64`) comes from.
    pub fn of_release(release: &str) -> Option<Self> {
        let abi: u32 = release
            .split_once("+deb")?
            .1
            .split_once('-')?
            .0
            .parse()
            .ok()?;
        [Self::Backports, Self::Forky]
            .into_iter()
            .find(|s| s.target().abi == abi)
    }

    /// Private apt state with the suite's package lists.
    fn apt(self) -> Result<Apt> {
        match self {
            Self::Backports => Apt::new(),
            Self::Forky => Apt::forky(),
        }
    }
}

/// Marks a completely unpacked or prepared directory (holds what it was made from).
const DONE: &str = ".memchan-complete";

/// `7.3.4+deb13-amd64` → `(7, 3, 4)`; `None` for other flavors (`-cloud-amd64`, `-rt-amd64`).
pub fn parse_release(release: &str) -> Option<(u32, u32, u32)> {
    let (upstream, abi) = release.split_once('+')?;
    let suffix = abi.strip_prefix("deb")?.split_once('-')?.1;
    if suffix != "amd64" {
        return None;
    }
    let mut parts = upstream.split('.').map(str::parse::<u32>);
    let (a, b, c) = (
        parts.next()?.ok()?,
        parts.next()?.ok()?,
        parts.next()?.ok()?,
    );
    Some((a, b, c))
}

/// The newest kernel of `suite` (of its series or later): release and version.
fn newest(apt: &mut Apt, suite: Suite) -> Result<(String, String)> {
    let t = suite.target();
    let mut found: Vec<((u32, u32, u32), String)> = apt
        .names("linux-binary-")?
        .into_iter()
        .filter_map(|n| {
            let release = n.strip_prefix("linux-binary-")?.to_string();
            Some((parse_release(&release)?, release))
        })
        .filter(|(v, r)| *v >= t.min_series && Suite::of_release(r) == Some(suite))
        .collect();
    found.sort();
    let (a, b, _) = t.min_series;
    let (_, release) = found
        .pop()
        .with_context(|| format!("no Debian linux-binary-{a}.{b} or later in {}", t.name))?;
    let version = apt
        .versions(&format!("linux-binary-{release}"))?
        .into_iter()
        .next()
        .with_context(|| format!("no version of linux-binary-{release}"))?;
    Ok((release, version))
}

/// The newest completely prepared stock kernel of `suite` in the cache, if any (no network
/// needed).
fn cached(suite: Suite) -> Option<(String, String)> {
    let mut found: Vec<((u32, u32, u32), String, String)> =
        std::fs::read_dir(cache::root().join("debian"))
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("build").join(DONE).exists())
            .filter_map(|p| {
                let name = p.file_name()?.to_str()?.to_string();
                let (release, version) = name.split_once('_')?;
                if Suite::of_release(release) != Some(suite) {
                    return None;
                }
                Some((parse_release(release)?, release.into(), version.into()))
            })
            .collect();
    found.sort();
    found.pop().map(|(_, r, v)| (r, v))
}

/// Unpacks `packages` (at `version`) into `dest` unless that was done already.
fn unpack(apt: &mut Apt, packages: &[String], version: &str, dest: &Path) -> Result<()> {
    let stamp = format!("{version}: {}\n", packages.join(" "));
    if std::fs::read_to_string(dest.join(DONE)).ok().as_deref() == Some(&*stamp) {
        return Ok(());
    }
    let _ = std::fs::remove_dir_all(dest);
    for pkg in packages {
        apt.unpack_into(pkg, version, dest)?;
    }
    std::fs::write(dest.join(DONE), stamp)?;
    Ok(())
}

/// Makes sure the newest stock kernel of `suite` is unpacked and its tree prepared for module
/// builds; returns it.
pub fn ensure(suite: Suite) -> Result<KernelTree> {
    let root = buildroot::ensure(suite.target().stock)?;
    let mut apt = None;
    let (release, version) = match cached(suite) {
        Some(found) => found,
        None => newest(apt.get_or_insert(suite.apt()?), suite)?,
    };
    let dir = cache::root()
        .join("debian")
        .join(format!("{release}_{version}"));
    let (image, headers, build) = (dir.join("image"), dir.join("headers"), dir.join("build"));
    let root = root.with_make_var(format!("KERNELRELEASE={release}"));
    let bzimage = image.join(format!("usr/lib/modules/{release}/vmlinuz"));
    let stock = Stock {
        release: release.clone(),
        version: version.clone(),
        busybox: root.busybox(),
    };
    let tree = |root: BuildRoot| KernelTree {
        build: build.clone(),
        bzimage: bzimage.clone(),
        builder: Builder::Root(root),
        debug: false,
        stock: Some(stock.clone()),
    };
    if bzimage.exists() && is_prepared(&root, &release, &version, &dir)? {
        println!(
            "==> Debian's kernel {release} ({version}) ready: {}",
            build.display()
        );
        return Ok(tree(root));
    }
    let apt = match apt.as_mut() {
        Some(apt) => apt,
        None => apt.insert(suite.apt()?),
    };
    run::stage(&format!(
        "Debian's stock kernel {release} ({version}): packages into {}",
        dir.display()
    ));
    unpack(
        apt,
        &[
            format!("linux-binary-{release}"),
            format!("linux-modules-{release}"),
        ],
        &version,
        &image,
    )?;
    unpack(
        apt,
        &[format!("linux-headers-{release}")],
        &version,
        &headers,
    )?;
    let deb = dir.join("source-deb");
    unpack(
        apt,
        &[format!("linux-source-{}", series(&release))],
        &version,
        &deb,
    )?;
    let tarball = std::fs::read_dir(deb.join("usr/src"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.to_string_lossy().ends_with(".tar.xz"))
        .context("no kernel tarball in the linux-source package")?;
    let hdr = headers.join(format!("usr/src/linux-headers-{release}"));
    prepared(&root, &release, &version, &hdr, &tarball, &dir)?;
    Ok(tree(root))
}

/// `7.3.4+deb13-amd64` → `7.3` (what `linux-source-<series>` is named after).
pub fn series(release: &str) -> String {
    release.split('.').take(2).collect::<Vec<_>>().join(".")
}

/// What a prepared tree in `dir/build` was made from.
fn key(root: &BuildRoot, release: &str, version: &str) -> Result<String> {
    Ok(format!(
        "recipe: {RECIPE}\nrelease: {release}\nversion: {version}\n{}",
        root.versions()?
    ))
}

/// Whether `dir/build` is a tree prepared for this kernel with this toolchain.
fn is_prepared(root: &BuildRoot, release: &str, version: &str, dir: &Path) -> Result<bool> {
    let done = std::fs::read_to_string(dir.join("build").join(DONE)).ok();
    Ok(done.as_deref() == Some(&*key(root, release, version)?))
}

/// Makes `dir/build` a tree prepared for module builds against Debian's kernel `release`
/// (package `version`), from its headers tree `hdr` (`/usr/src/linux-headers-<release>`) and
/// source `tarball` (`linux-source-<series>.tar.xz`), unpacked into `dir/src`; skipped when
/// already done with the same toolchain. `root` runs the builds (with `KERNELRELEASE` set).
pub fn prepared(
    root: &BuildRoot,
    release: &str,
    version: &str,
    hdr: &Path,
    tarball: &Path,
    dir: &Path,
) -> Result<PathBuf> {
    let (src, build) = (dir.join("src"), dir.join("build"));
    if is_prepared(root, release, version, dir)? {
        return Ok(build);
    }
    if std::fs::read_to_string(src.join(DONE)).ok().as_deref() != Some(version) {
        let _ = std::fs::remove_dir_all(&src);
        cache::mkdir(&src)?;
        run::logged(
            &format!("extracting Debian's kernel source into {}", src.display()),
            std::process::Command::new("tar")
                .arg("-xf")
                .arg(tarball)
                .arg("-C")
                .arg(&src)
                .arg("--strip-components=1"),
            &run::log_path("debian-untar"),
            "Is the disk full? (the source needs about 1.5 GB)",
        )?;
        std::fs::write(src.join(DONE), version)?;
    }
    prepare(root, release, hdr, &src, &build)?;
    std::fs::write(build.join(DONE), key(root, release, version)?)?;
    Ok(build)
}

/// Rebuilds the Rust metadata of Debian's kernel: Debian's `.config` (with the signing and
/// trusted-key files it names blanked: they are not in the source package), `prepare`,
/// `rust/`, `modules_prepare`, then Debian's `Module.symvers` and `vmlinux` copied in.
fn prepare(root: &BuildRoot, release: &str, hdr: &Path, src: &Path, build: &Path) -> Result<()> {
    for f in [".config", "Module.symvers", "vmlinux"] {
        if !hdr.join(f).exists() {
            bail!("Debian's headers package has no {f} in {}", hdr.display());
        }
    }
    let _ = std::fs::remove_dir_all(build);
    cache::mkdir(build)?;
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get() + 1);
    // The crate hashes match Debian's only with the very rustc and bindgen that built the
    // kernel (the headers' `.config` names them); a rolling suite's toolchain moves on.
    let script = format!(
        "set -e; \
         want() {{ sed -n \"s/^$1=\\\"\\(.*\\)\\\"$/\\1/p\" '{hdr}/.config'; }}; \
         for t in 'RUSTC rustc' 'BINDGEN bindgen'; do set -- $t; w=$(want CONFIG_$1_VERSION_TEXT); \
           h=$($2 --version | head -n1); \
           [ -z \"$w\" ] || [ \"$w\" = \"$h\" ] || {{ echo \"memchan: Debian built {release} with \
             '$w', this build root has '$h': the Rust metadata would not match the \
             kernel's. Remove the build root (or on a machine, install that $2) and run \
             again.\"; exit 1; }}; \
         done; \
         cp '{hdr}/.config' '{build}/.config'; \
         '{src}/scripts/config' --file '{build}/.config' --set-str SYSTEM_TRUSTED_KEYS '' \
           --set-str SYSTEM_REVOCATION_KEYS '' --set-str MODULE_SIG_KEY certs/signing_key.pem; \
         make -C '{src}' O='{build}' $MAKE_VARS olddefconfig; \
         grep -qx CONFIG_RUST=y '{build}/.config' || {{ echo 'CONFIG_RUST was dropped'; exit 1; }}; \
         make -C '{src}' O='{build}' $MAKE_VARS -j{jobs} prepare; \
         make -C '{src}' O='{build}' $MAKE_VARS -j{jobs} rust/; \
         make -C '{src}' O='{build}' $MAKE_VARS -j{jobs} modules_prepare; \
         cp '{hdr}/Module.symvers' '{hdr}/vmlinux' '{build}/'",
        hdr = hdr.display(),
        build = build.display(),
        src = src.display(),
    );
    run::logged(
        &format!(
            "rebuilding the Rust metadata of Debian's kernel {release} with Debian's toolchain \
             (1-2 minutes on 2 cores)"
        ),
        &mut Builder::Root(root.clone()).sh(&script),
        &run::log_path("debian-prepare"),
        "Look for the first `error` in the log.",
    )
}
