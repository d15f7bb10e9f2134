//! `memchan recv`.

use std::io::Write;
use std::time::Duration;

use clap::ValueEnum;
use memchan::{Error, Receiver, Seek};

/// Arguments of `memchan recv`.
#[derive(clap::Args)]
pub struct Args {
    /// Channel number, name or path.
    channel: String,
    /// Stop after N messages (waits for them).
    #[arg(short = 'n', long = "count", value_name = "N")]
    count: Option<u64>,
    /// Keep waiting for new messages (until interrupted, or -n is reached).
    #[arg(short, long)]
    follow: bool,
    /// Start at the oldest message still in the ring, or with the next new one.
    #[arg(long, value_enum, default_value_t = From::Newest)]
    from: From,
    /// Output: the payload as text, JSON lines with metadata, or hex.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Give up (exit status 75) when no message comes for this many seconds.
    #[arg(long, value_name = "SECS")]
    timeout: Option<f64>,
}

/// Where to start.
#[derive(Clone, Copy, ValueEnum)]
enum From {
    Oldest,
    Newest,
}

/// How messages are printed.
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Format {
    /// The payload (a trailing newline is not doubled), one message per line.
    Text,
    /// One JSON object per line: seq, timestamp_ns, lag, len, payload (or payload_hex).
    Json,
    /// `seq<TAB>hex bytes`, one message per line.
    Hex,
}

/// Receives and prints messages.
pub fn run(args: &Args) -> Result<(), Error> {
    let mut rx = Receiver::open(crate::channel::path(&args.channel))?;
    if let From::Oldest = args.from {
        rx.seek(Seek::Oldest)?;
    }
    let wait = args.follow || args.count.is_some();
    let timeout = args
        .timeout
        .map(|s| Duration::try_from_secs_f64(s.max(0.0)).unwrap_or(Duration::MAX));
    let mut out = std::io::stdout().lock();
    let mut n = 0u64;
    while args.count.is_none_or(|c| n < c) {
        let got = match (wait, timeout) {
            (false, _) => rx.try_recv(),
            (true, Some(t)) => rx.recv_timeout(t),
            (true, None) => rx.recv(),
        };
        let mut line = match got {
            Ok(m) => format(args.format, m.seq, m.timestamp, m.payload),
            Err(Error::WouldBlock) if !wait => break,
            Err(Error::Overrun { lost }) => {
                eprintln!("memchan: overrun: {lost} message(s) lost (reader too slow)");
                if args.format == Format::Json {
                    let v = serde_json::json!({ "overrun": lost });
                    if writeln!(out, "{v}").is_err() {
                        break;
                    }
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        if args.format == Format::Json {
            if let serde_json::Value::Object(map) = &mut line {
                map.insert("lag".into(), rx.state()?.lag.into());
            }
        }
        let written = match &line {
            serde_json::Value::String(s) => out.write_all(s.as_bytes()),
            v => write!(out, "{v}"),
        };
        if written
            .and_then(|()| out.write_all(b"\n"))
            .and_then(|()| out.flush())
            .is_err()
        {
            break; // stdout closed (e.g. piped into `head`)
        }
        n += 1;
    }
    Ok(())
}

/// One message in `format` (text and hex as a JSON string value, printed raw).
fn format(format: Format, seq: u64, ts: Duration, payload: &[u8]) -> serde_json::Value {
    match format {
        Format::Text => {
            let p = payload.strip_suffix(b"\n").unwrap_or(payload);
            String::from_utf8_lossy(p).into_owned().into()
        }
        Format::Hex => format!("{seq}\t{}", hex(payload)).into(),
        Format::Json => {
            let mut v = serde_json::json!({
                "seq": seq,
                "timestamp_ns": u64::try_from(ts.as_nanos()).unwrap_or(u64::MAX),
                "len": payload.len(),
            });
            if let serde_json::Value::Object(map) = &mut v {
                match std::str::from_utf8(payload) {
                    Ok(s) => map.insert("payload".into(), s.into()),
                    Err(_) => map.insert("payload_hex".into(), hex(payload).into()),
                };
            }
            v
        }
    }
}

/// Lower-case hex digits of `bytes`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        let ts = Duration::from_nanos(5);
        assert_eq!(format(Format::Text, 1, ts, b"hi\n"), "hi");
        assert_eq!(format(Format::Hex, 2, ts, b"\x00\xff"), "2\t00ff");
        let j = format(Format::Json, 3, ts, b"\xff");
        assert_eq!(j["payload_hex"], "ff");
        assert_eq!(j["seq"], 3);
        assert_eq!(j["timestamp_ns"], 5);
    }
}
