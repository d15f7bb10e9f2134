//! Naming channels on the command line.

use std::path::PathBuf;

/// The device path for a channel argument: a number (`1` → `/dev/memchan1`), a device name
/// (`memchan1` → `/dev/memchan1`), a path (anything with a `/`), or a named channel's name
/// (`telemetry` → `/dev/memchan-telemetry`).
pub fn path(arg: &str) -> PathBuf {
    if let Ok(index) = arg.parse::<u32>() {
        return memchan::channel_path(index);
    }
    if arg.contains('/') {
        return PathBuf::from(arg);
    }
    if arg.starts_with("memchan") {
        return PathBuf::from("/dev").join(arg);
    }
    memchan::named::named_path(arg)
}

/// The existing channel device nodes: the load-time ones in index order, then the named ones
/// by name.
pub fn all() -> Vec<PathBuf> {
    let fixed = (0..memchan::abi::CHANNELS_MAX).map(memchan::channel_path);
    let named = memchan::named::list()
        .unwrap_or_default()
        .into_iter()
        .map(|n| memchan::named::named_path(&n));
    fixed.chain(named).filter(|p| p.exists()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_arguments() {
        assert_eq!(path("0"), PathBuf::from("/dev/memchan"));
        assert_eq!(path("3"), PathBuf::from("/dev/memchan3"));
        assert_eq!(path("memchan2"), PathBuf::from("/dev/memchan2"));
        assert_eq!(path("/tmp/x"), PathBuf::from("/tmp/x"));
        assert_eq!(path("memchan-a"), PathBuf::from("/dev/memchan-a"));
        assert_eq!(path("telemetry"), PathBuf::from("/dev/memchan-telemetry"));
    }
}
