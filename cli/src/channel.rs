//! Naming channels on the command line.

use std::path::PathBuf;

/// The device path for a channel argument: a number (`1` → `/dev/memchan1`), a device name
/// (`memchan1` → `/dev/memchan1`) or a path (anything with a `/`).
pub fn path(arg: &str) -> PathBuf {
    if let Ok(index) = arg.parse::<u32>() {
        return memchan::channel_path(index);
    }
    if arg.contains('/') {
        return PathBuf::from(arg);
    }
    PathBuf::from("/dev").join(arg)
}

/// The existing channel device nodes, in index order.
pub fn all() -> Vec<PathBuf> {
    (0..memchan::abi::CHANNELS_MAX)
        .map(memchan::channel_path)
        .filter(|p| p.exists())
        .collect()
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
    }
}
