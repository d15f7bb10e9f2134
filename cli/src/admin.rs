//! `memchan create` and `memchan destroy`: named channels through configfs.

use clap::Args as ClapArgs;
use memchan::named::{self, ChannelOptions};
use memchan::{Error, Policy};

use crate::PolicyArg;

/// Options of `memchan create`.
#[derive(ClapArgs)]
pub struct CreateArgs {
    /// The channel's name; its node is /dev/memchan-NAME.
    #[arg(help = format!(
        "The channel's name (A-Z a-z 0-9 _ . -, up to {}); its node is /dev/memchan-NAME",
        memchan::abi::NAME_MAX
    ))]
    name: String,
    /// Ring size: bytes, or with a K or M suffix.
    #[arg(long, value_parser = parse_size, help = format!(
        "Ring size: bytes, or with a K or M suffix (a power of two from {}K to {}M)",
        memchan::abi::RING_KIB_MIN,
        memchan::abi::RING_KIB_MAX / 1024
    ))]
    ring: Option<u32>,
    /// Largest message in bytes.
    #[arg(long)]
    msg_max: Option<u32>,
    /// Subscriber limit.
    #[arg(long, help = format!("Subscriber limit (1 to {})", memchan::abi::MAX_READERS_MAX))]
    max_readers: Option<u32>,
    /// Overflow policy.
    #[arg(long, value_enum)]
    policy: Option<PolicyArg>,
    /// Permission bits, octal (e.g. 660): who may read (r) and write (w).
    #[arg(long, value_parser = parse_mode)]
    mode: Option<u32>,
    /// Owning user: a name or a uid.
    #[arg(long)]
    owner: Option<String>,
    /// Owning group: a name or a gid.
    #[arg(long)]
    group: Option<String>,
}

/// A size in bytes with an optional K/M suffix, as KiB.
fn parse_size(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => match t[i..].to_ascii_lowercase().as_str() {
            "k" | "kb" | "kib" => (&t[..i], 1u64 << 10),
            "m" | "mb" | "mib" => (&t[..i], 1 << 20),
            other => return Err(format!("unknown unit {other:?}: use K or M")),
        },
        None => (t, 1),
    };
    let bytes = num
        .trim()
        .parse::<u64>()
        .map_err(|e| format!("{s:?}: {e}"))?
        .checked_mul(mult)
        .ok_or("too large")?;
    if bytes % 1024 != 0 {
        return Err(format!("{s}: not a whole number of KiB"));
    }
    u32::try_from(bytes / 1024).map_err(|_| "too large".to_string())
}

/// Octal permission bits.
fn parse_mode(s: &str) -> Result<u32, String> {
    match u32::from_str_radix(s, 8) {
        Ok(m) if m <= 0o777 => Ok(m),
        _ => Err(format!("{s:?}: octal permission bits, e.g. 660")),
    }
}

/// A uid from a user name or number.
fn uid(s: &str) -> Result<u32, Error> {
    s.parse()
        .ok()
        .or_else(|| uzers::get_user_by_name(s).map(|u| u.uid()))
        .ok_or_else(|| Error::InvalidSetting {
            attr: "owner",
            value: format!("{s} (no such user)"),
        })
}

/// A gid from a group name or number.
fn gid(s: &str) -> Result<u32, Error> {
    s.parse()
        .ok()
        .or_else(|| uzers::get_group_by_name(s).map(|g| g.gid()))
        .ok_or_else(|| Error::InvalidSetting {
            attr: "group",
            value: format!("{s} (no such group)"),
        })
}

/// `memchan create`.
pub fn create(a: &CreateArgs) -> Result<(), Error> {
    let opts = ChannelOptions {
        ring_kib: a.ring,
        msg_max: a.msg_max,
        max_readers: a.max_readers,
        policy: a.policy.map(Policy::from),
        uid: a.owner.as_deref().map(uid).transpose()?,
        gid: a.group.as_deref().map(gid).transpose()?,
        mode: a.mode,
    };
    let path = named::create(&a.name, &opts)?;
    // Let udev apply the node's kernel mode first (the "add" event), then set the real one.
    let _ = std::process::Command::new("udevadm")
        .args(["settle", "--timeout=10"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    if let Err(e) = named::apply_node_owner(&a.name) {
        let _ = named::destroy(&a.name);
        return Err(e);
    }
    println!("{}", path.display());
    Ok(())
}

/// `memchan destroy`.
pub fn destroy(name: &str) -> Result<(), Error> {
    named::destroy(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_modes() {
        assert_eq!(parse_size("64K"), Ok(64));
        assert_eq!(parse_size("1M"), Ok(1024));
        assert_eq!(parse_size("65536"), Ok(64));
        assert!(parse_size("1000").is_err());
        assert!(parse_size("3X").is_err());
        assert_eq!(parse_mode("660"), Ok(0o660));
        assert!(parse_mode("1000").is_err());
        assert!(parse_mode("9").is_err());
    }
}
