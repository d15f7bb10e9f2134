//! Every channel's settings and counters, read without opening it: from sysfs
//! (`/sys/class/misc/<device>/`, reached as `/sys/dev/char/<major>:<minor>/`).

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use rustix::fs::{major, minor, stat, OFlags};

use crate::handle::Handle;
use crate::{Error, Info, Result, Stats};

/// Reads a channel's [`Info`] and [`Stats`] without keeping it open (for tools like
/// `memchan info`): as root from sysfs (`/sys/class/misc/<device>/`), which needs no access
/// to the channel; values are read one by one, not as one snapshot. Otherwise (not root) by
/// opening the channel (needs read access; the short-lived subscriber this takes is not
/// counted in the returned `subscribers`).
pub fn query(path: impl AsRef<Path>) -> Result<(Info, Stats)> {
    if let Some(found) = sysfs_query(path.as_ref()) {
        return found;
    }
    let (handle, mut info) = Handle::open(path.as_ref(), OFlags::RDONLY)?;
    info.subscribers = info.subscribers.saturating_sub(1);
    let stats = handle.stats()?;
    Ok((info, stats))
}

/// The sysfs directory of the channel device at `path` (`/sys/dev/char/<major>:<minor>`),
/// if it is a memchan device.
fn sysfs_dir(path: &Path) -> Option<PathBuf> {
    let st = stat(path).ok()?;
    let rdev = st.st_rdev;
    let d = PathBuf::from(format!("/sys/dev/char/{}:{}", major(rdev), minor(rdev)));
    d.join("messages").exists().then_some(d)
}

/// Reads a channel's [`Info`] and [`Stats`] from sysfs, without opening it (so without
/// becoming a subscriber, and without read access), as root: the counters are root's. Each
/// value is read on its own: they are not one snapshot. `None` if `path` is no memchan device
/// or the counters are not ours to read.
pub(crate) fn sysfs_query(path: &Path) -> Option<Result<(Info, Stats)>> {
    let d = sysfs_dir(path)?;
    // The counters are root's: anyone else asks the channel itself (with its access rules).
    if fs::File::open(d.join("messages")).is_err_and(|e| e.kind() == ErrorKind::PermissionDenied) {
        return None;
    }
    let read = |attr: &str| -> Result<String> {
        let p = d.join(attr);
        fs::read_to_string(&p)
            .map(|s| s.trim().to_string())
            .map_err(|e| match e.kind() {
                // The channel went away between the lookup and the read.
                ErrorKind::NotFound => Error::DeviceMissing { path: path.into() },
                _ => Error::io("read sysfs attribute", &e),
            })
    };
    let num = |attr: &str| -> Result<u64> {
        read(attr)?
            .parse()
            .map_err(|_| Error::BadRing("sysfs attribute is not a number"))
    };
    let get = || -> Result<(Info, Stats)> {
        let info = Info {
            index: u32::try_from(num("index")?).unwrap_or(u32::MAX),
            policy: read("policy")?
                .parse()
                .map_err(|_| Error::BadRing("sysfs policy is neither block nor overwrite"))?,
            ring_bytes: num("ring_bytes")?,
            msg_max: usize::try_from(num("msg_max")?).unwrap_or(usize::MAX),
            next_seq: num("next_seq")?,
            oldest_seq: num("oldest_seq")?,
            subscribers: u32::try_from(num("subscribers")?).unwrap_or(u32::MAX),
            writers: u32::try_from(num("writers")?).unwrap_or(u32::MAX),
            mmap_bytes: num("mmap_bytes")?,
        };
        let stats = Stats {
            messages: num("messages")?,
            bytes: num("bytes")?,
            overruns: num("overruns")?,
            lost: num("lost")?,
            blocked_writes: num("blocked_writes")?,
            delivered: num("delivered")?,
        };
        Ok((info, stats))
    };
    Some(get())
}
