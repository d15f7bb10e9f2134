//! `--debian`: Debian's stock kernel, booted as Debian ships it.
//!
//! Debian's headers packages carry no Rust metadata (`rust/*.rmeta`, `libmacros.so`), so an
//! out-of-tree Rust module cannot be built against them as they are. Rebuilding `prepare` and
//! `rust/` from Debian's own `linux-source` with the headers' `.config`, Debian's release
//! string and Debian's toolchain (the [`buildroot::STOCK`] root) reproduces the crate hashes
//! in Debian's `Module.symvers`; with that `Module.symvers` and the headers' `vmlinux` (the
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

/// Oldest kernel series memchan builds against.
pub const MIN_SERIES: (u32, u32, u32) = (7, 3, 0);

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

/// The newest Debian trixie-backports kernel of series 7.3 or later: release and version.
fn newest(apt: &mut Apt) -> Result<(String, String)> {
    let mut found: Vec<((u32, u32, u32), String)> = apt
        .names("linux-binary-")?
        .into_iter()
        .filter_map(|n| {
            let release = n.strip_prefix("linux-binary-")?.to_string();
            Some((parse_release(&release)?, release))
        })
        .filter(|(v, _)| *v >= MIN_SERIES)
        .collect();
    found.sort();
    let (_, release) = found
        .pop()
        .context("no Debian linux-binary-7.x (7.3 or later) in trixie-backports")?;
    let version = apt
        .versions(&format!("linux-binary-{release}"))?
        .into_iter()
        .next()
        .with_context(|| format!("no version of linux-binary-{release}"))?;
    Ok((release, version))
}

/// The newest completely prepared stock kernel in the cache, if any (no network needed).
fn cached() -> Option<(String, String)> {
    let mut found: Vec<((u32, u32, u32), String, String)> =
        std::fs::read_dir(cache::root().join("debian"))
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("build").join(DONE).exists())
            .filter_map(|p| {
                let name = p.file_name()?.to_str()?.to_string();
                let (release, version) = name.split_once('_')?;
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

/// Makes sure Debian's newest stock kernel is unpacked and its tree prepared for module
/// builds; returns it.
pub fn ensure() -> Result<KernelTree> {
    let root = buildroot::ensure(&buildroot::STOCK)?;
    let mut apt = None;
    let (release, version) = match cached() {
        Some(found) => found,
        None => newest(apt.get_or_insert(Apt::new()?))?,
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
        None => apt.insert(Apt::new()?),
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
    let script = format!(
        "set -e; cp '{hdr}/.config' '{build}/.config'; \
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
