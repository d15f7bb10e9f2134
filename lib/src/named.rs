//! Named channels, created and removed at run time through configfs.
//!
//! A named channel is a directory in configfs, `/sys/kernel/config/memchan/<name>`; making the
//! directory creates the channel and its device node `/dev/memchan-<name>`, removing it removes
//! the channel (files still open on it read what is left, then end of file). This module wraps
//! that for programs (and the `memchan create` / `memchan destroy` commands). Creating and
//! removing channels needs root (configfs is root's).
//!
//! ```no_run
//! use memchan::named::{self, ChannelOptions};
//! use memchan::Policy;
//!
//! fn main() -> Result<(), memchan::Error> {
//!     let opts = ChannelOptions { ring_kib: Some(256), policy: Some(Policy::Block), ..Default::default() };
//!     let path = named::create("telemetry", &opts)?; // /dev/memchan-telemetry
//!     let tx = memchan::Sender::open(&path)?;
//!     tx.send(b"up")?;
//!     named::destroy("telemetry")
//! }
//! ```

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::{chown, Gid, Uid};
use rustix::io::Errno;

use crate::{Error, Policy, Result};

/// Where named channels live in configfs.
pub const CONFIGFS_DIR: &str = "/sys/kernel/config/memchan";
/// Longest channel name (the kernel's limit).
pub const NAME_MAX: usize = crate::abi::NAME_MAX;

/// Settings of a new named channel; `None` keeps the module's default (its load parameters for
/// sizes and policy; owner root, mode `0600`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChannelOptions {
    /// Ring size in KiB: a power of two, [`abi::RING_KIB_MIN`](crate::abi::RING_KIB_MIN) to
    /// [`abi::RING_KIB_MAX`](crate::abi::RING_KIB_MAX).
    pub ring_kib: Option<u32>,
    /// Largest message in bytes (must fit in the ring).
    pub msg_max: Option<u32>,
    /// Subscriber limit, 1 to [`abi::MAX_READERS_MAX`](crate::abi::MAX_READERS_MAX).
    pub max_readers: Option<u32>,
    /// Overflow policy.
    pub policy: Option<Policy>,
    /// Owning user id.
    pub uid: Option<u32>,
    /// Owning group id.
    pub gid: Option<u32>,
    /// Permission bits (only read and write bits matter), at most `0o777`.
    pub mode: Option<u32>,
}

/// The device node of named channel `name`: `/dev/memchan-<name>`.
pub fn named_path(name: &str) -> PathBuf {
    PathBuf::from(format!("{}-{name}", crate::abi::DEVICE_PATH))
}

/// `Ok` if `name` is a valid channel name (what the kernel accepts), else why not.
pub fn check_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name.len() > NAME_MAX {
        "it is too long"
    } else if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        "it must start with a letter or digit"
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
    {
        "use only A-Z a-z 0-9 _ . -"
    } else {
        return Ok(());
    };
    Err(Error::InvalidName {
        name: name.to_string(),
        reason,
    })
}

/// The configfs directory of channel `name`.
fn dir(name: &str) -> PathBuf {
    Path::new(CONFIGFS_DIR).join(name)
}

/// Maps an error of a configfs or sysfs operation on `path`.
fn fs_error(op: &'static str, path: &Path, err: &std::io::Error) -> Error {
    match Errno::from_io_error(err) {
        Some(Errno::ACCESS | Errno::PERM) => Error::PermissionDenied {
            path: path.into(),
            access: "configuring channels",
        },
        Some(Errno::BUSY) => Error::Busy { path: path.into() },
        _ => Error::io(op, err),
    }
}

/// Writes one attribute of channel `name`.
fn set(name: &str, attr: &'static str, value: &str) -> Result<()> {
    let path = dir(name).join(attr);
    fs::write(&path, value).map_err(|e| match Errno::from_io_error(&e) {
        Some(Errno::INVAL) => Error::InvalidSetting {
            attr,
            value: value.to_string(),
        },
        _ => fs_error("write configfs attribute", &path, &e),
    })
}

/// Reads one attribute of channel `name`.
fn get(name: &str, attr: &str) -> Result<String> {
    let path = dir(name).join(attr);
    fs::read_to_string(&path)
        .map(|s| s.trim().to_string())
        .map_err(|e| fs_error("read configfs attribute", &path, &e))
}

/// Creates named channel `name` with `opts` and returns its device node. On any error the
/// half-made channel is removed again. The kernel checks `opts`' owner and mode at every
/// `open`; the node itself is `0666` until [`apply_node_owner`] mirrors them onto it.
///
/// Errors: [`Error::InvalidName`], [`Error::Exists`], [`Error::NoConfigfs`] (module not
/// loaded, or configfs not mounted), [`Error::PermissionDenied`] (not root),
/// [`Error::InvalidSetting`] (a size the kernel refuses).
pub fn create(name: &str, opts: &ChannelOptions) -> Result<PathBuf> {
    check_name(name)?;
    if !Path::new(CONFIGFS_DIR).is_dir() {
        return Err(Error::NoConfigfs {
            path: CONFIGFS_DIR.into(),
        });
    }
    let d = dir(name);
    if let Err(e) = fs::create_dir(&d) {
        return Err(match e.kind() {
            ErrorKind::AlreadyExists => Error::Exists {
                name: name.to_string(),
            },
            _ => match Errno::from_io_error(&e) {
                Some(Errno::NOSPC) => Error::TooManyChannels,
                _ => fs_error("create channel", &d, &e),
            },
        });
    }
    let path = named_path(name);
    match configure(name, opts) {
        Ok(()) => Ok(path),
        Err(e) => {
            let _ = fs::remove_dir(&d);
            Err(e)
        }
    }
}

/// Applies `opts` to the fresh channel `name`.
fn configure(name: &str, opts: &ChannelOptions) -> Result<()> {
    // Sizes: the message limit must fit the ring at every step, so shrink the limit before
    // the ring and grow it after.
    let cur_msg: u32 = get(name, "msg_max")?.parse().unwrap_or(u32::MAX);
    let msg_first = opts.msg_max.is_some_and(|m| m <= cur_msg);
    if msg_first {
        set_opt(name, "msg_max", opts.msg_max)?;
    }
    set_opt(name, "ring_kib", opts.ring_kib)?;
    if !msg_first {
        set_opt(name, "msg_max", opts.msg_max)?;
    }
    set_opt(name, "max_readers", opts.max_readers)?;
    if let Some(p) = opts.policy {
        set(name, "policy", p.name())?;
    }
    set_opt(name, "uid", opts.uid)?;
    set_opt(name, "gid", opts.gid)?;
    if let Some(m) = opts.mode {
        set(name, "mode", &format!("{m:o}"))?;
    }
    Ok(())
}

/// Gives the device node of named channel `name` the owner, group and mode of its access rule,
/// so that `ls -l` tells the truth and the node's own permission check agrees with memchan's
/// (which decides at `open` whatever the node says). The kernel creates the node `0666`, and
/// udev applies that when it handles the device's "add" event: call this after udev has
/// (`udevadm settle`; the `memchan create` command does both).
pub fn apply_node_owner(name: &str) -> Result<()> {
    let path = named_path(name);
    let mode = u32::from_str_radix(&get(name, "mode")?, 8)
        .map_err(|_| Error::BadRing("configfs mode is not octal"))?;
    let num = |attr| -> Result<u32> {
        get(name, attr)?
            .parse()
            .map_err(|_| Error::BadRing("configfs attribute is not a number"))
    };
    chown(
        &path,
        Some(Uid::from_raw(num("uid")?)),
        Some(Gid::from_raw(num("gid")?)),
    )
    .map_err(|e| Error::from_errno("chown device node", &path, e))?;
    fs::set_permissions(&path, fs::Permissions::from_mode(mode))
        .map_err(|e| fs_error("chmod device node", &path, &e))
}

/// Writes an attribute if a value is given.
fn set_opt(name: &str, attr: &'static str, value: Option<u32>) -> Result<()> {
    match value {
        Some(v) => set(name, attr, &v.to_string()),
        None => Ok(()),
    }
}

/// Removes named channel `name`: its node disappears; files still open on it read what is
/// left for them, then end of file.
pub fn destroy(name: &str) -> Result<()> {
    check_name(name)?;
    let d = dir(name);
    fs::remove_dir(&d).map_err(|e| match e.kind() {
        ErrorKind::NotFound => Error::DeviceMissing {
            path: named_path(name),
        },
        _ => fs_error("remove channel", &d, &e),
    })
}

/// The names of the named channels, sorted.
pub fn list() -> Result<Vec<String>> {
    let entries = match fs::read_dir(CONFIGFS_DIR) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(fs_error("list channels", Path::new(CONFIGFS_DIR), &e)),
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    Ok(names)
}
