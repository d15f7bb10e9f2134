//! Plain QEMU boots with a busybox initramfs, for the debug (KASAN) kernel.
//!
//! virtme-ng's guest init does much more than the tests need, and a KASAN kernel built from
//! the same configuration is slow under software emulation. virtme-ng does boot this kernel
//! (with `--qemu-opts=-machine q35 --memory 2G`), but measured on 2026-12-03 the debug suite
//! took 9m46s that way against 5m32s-5m57s here: 61 s to the guest script instead of 14 s (40 s
//! of them udev's coldplug of every device), and each test binary 1.3-5× slower. That is four
//! minutes of every CI run, so this path stays until virtme-ng's guest is as light.
//!
//! This init mounts the host's root read-only over 9p and the run directory read-write at its own path, switches to the host's
//! root (so host-built binaries and tools run as they are, as under virtme-ng), mounts the
//! usual pseudo filesystems, starts `systemd-udevd` if the host has it, runs the guest script,
//! writes its exit code to `<run dir>/rc` and powers off. The machine is `q35`: on QEMU's
//! default `pc` machine this kernel could not route the virtio-9p device's PCI interrupt.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::buildroot::BuildRoot;
use crate::{cache, run};

/// Guest memory: KASAN's shadow memory and quarantine need more than the default flavor's.
const MEMORY: &str = "2G";

/// The initramfs `/init` (busybox sh): mounts the host's root and the run directory over 9p
/// and switches to the host's root, running `<run dir>/stage2.sh` as PID 1. `memchan_run` (the
/// run directory) comes from the kernel command line, which the kernel passes to init as an
/// environment variable. `switch_root` rather than `chroot`: udev refuses to run in a chroot.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
fail() { echo "[init] $*"; poweroff -f; }
[ -n "$memchan_run" ] || fail "no memchan_run= on the kernel command line"
echo "[init] mounting the host's root over 9p"
H=/host
mkdir -p $H
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot $H || fail "cannot mount the host root"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 rundir "$H$memchan_run" || fail "cannot mount the run directory"
umount /proc /sys /dev
exec switch_root $H /bin/sh "$memchan_run/stage2.sh"
"#;

/// PID 1 on the host's root (run from the run directory): pseudo filesystems, udev, the guest
/// script, its exit code to `rc`, power off (with the busybox copied next to it, so that no
/// host tool is needed for that).
const STAGE2: &str = r#"R=$(dirname "$0")
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/tmp TERM=dumb
# A writable /tmp, unless that would hide the repository or the cache (e.g. a clone in /tmp).
case " @KEEP@ " in
  *" /tmp/"*) export TMPDIR="$R/scratch" HOME="$R/scratch" ;;
  *) mount -t tmpfs tmpfs /tmp ;;
esac
for u in /usr/lib/systemd/systemd-udevd /lib/systemd/systemd-udevd; do
  if [ -x "$u" ]; then "$u" --daemon; break; fi
done
echo "[init] running the guest script"
sh "$R/guest.sh" </dev/console >/dev/console 2>&1
echo $? > "$R/rc"
sync
"$R/busybox" poweroff -f
"#;

/// Puts the second stage and a busybox into the run directory.
pub fn stage2(root: &BuildRoot, run_dir: &Path) -> Result<()> {
    let keep = format!("{} {}", cache::repo().display(), cache::root().display());
    std::fs::write(run_dir.join("stage2.sh"), STAGE2.replace("@KEEP@", &keep))?;
    std::fs::copy(root.busybox(), run_dir.join("busybox"))
        .with_context(|| format!("copying {}", root.busybox().display()))?;
    Ok(())
}

/// Makes the initramfs (busybox from the build root + `/init`) if it is missing; returns it.
pub fn initramfs(root: &BuildRoot) -> Result<PathBuf> {
    let dir = cache::root().join("initramfs");
    let out = dir.join("initramfs.cpio.gz");
    let stamp = dir.join("init");
    if out.exists() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(INIT) {
        return Ok(out);
    }
    let stage = dir.join("tree");
    if stage.exists() {
        std::fs::remove_dir_all(&stage)?;
    }
    for d in ["bin", "dev", "proc", "sys", "host"] {
        cache::mkdir(&stage.join(d))?;
    }
    std::fs::copy(root.busybox(), stage.join("bin/busybox"))
        .with_context(|| format!("copying {}", root.busybox().display()))?;
    let init = stage.join("init");
    std::fs::write(&init, INIT)?;
    std::fs::set_permissions(&init, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    run::logged(
        "making the debug guest's initramfs (busybox + /init)",
        Command::new("sh")
            .current_dir(&stage)
            .arg("-c")
            .arg(format!(
                "set -e; mknod -m 600 dev/console c 5 1; \
             find . | cpio -o -H newc --quiet | gzip -1 > '{}'",
                out.display()
            )),
        &run::log_path("initramfs"),
        "Making the initramfs needs root (mknod) and cpio.",
    )?;
    std::fs::write(&stamp, INIT)?;
    Ok(out)
}

/// The QEMU command that boots `bzimage` with the initramfs and runs `<run_dir>/guest.sh`.
pub fn command(bzimage: &Path, initramfs: &Path, run_dir: &Path, cpus: &str) -> Command {
    let mut cmd = Command::new("qemu-system-x86_64");
    let fsdev = |id: &str, path: &Path, ro: bool| {
        format!(
            "local,id={id},path={},security_model=none,multidevs=remap{}",
            path.display(),
            if ro { ",readonly=on" } else { "" }
        )
    };
    cmd.args(["-machine", "q35", "-accel", "tcg", "-cpu", "max"])
        .args(["-smp", cpus, "-m", MEMORY])
        .args(["-display", "none", "-serial", "stdio", "-monitor", "none"])
        .args(["-no-reboot", "-nic", "none", "-kernel"])
        .arg(bzimage)
        .arg("-initrd")
        .arg(initramfs)
        .arg("-append")
        .arg(format!(
            "console=ttyS0 panic=-1 memchan_run={}",
            run_dir.display()
        ))
        .arg("-fsdev")
        .arg(fsdev("hostroot", Path::new("/"), true))
        .args(["-device", "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot"])
        .arg("-fsdev")
        .arg(fsdev("rundir", run_dir, false))
        .args(["-device", "virtio-9p-pci,fsdev=rundir,mount_tag=rundir"]);
    cmd
}

/// The guest script's exit code, as the init wrote it (an error if the guest never got there).
pub fn exit_code(run_dir: &Path) -> Result<i32> {
    let path = run_dir.join("rc");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("the guest wrote no exit code ({})", path.display()))?;
    match text.trim().parse() {
        Ok(code) => Ok(code),
        Err(_) => bail!("bad exit code {text:?} in {}", path.display()),
    }
}
