//! `memchan`: send and receive messages on memchan channels from the shell.

use std::io::{BufRead, Write};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use memchan::{Channel, Error};

/// Send and receive messages on memchan channels (/dev/memchan).
#[derive(Parser)]
#[command(
    name = "memchan",
    version,
    after_help = "Examples:\n  memchan recv -n 1 &\n  memchan send 'hello'\n  printf 'a\\nb\\n' | memchan send"
)]
struct Cli {
    /// The channel's device node.
    #[arg(long, short, global = true, default_value = memchan::DEFAULT_PATH)]
    device: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Send each argument as one message (each stdin line when none are given).
    Send {
        /// The messages.
        messages: Vec<String>,
    },
    /// Receive messages and print each on its own line.
    Recv {
        /// Stop after this many messages (default: run until interrupted).
        #[arg(short = 'n', long)]
        count: Option<u64>,
    },
}

/// Exit codes scripts can rely on (from sysexits.h).
fn exit_code(err: &Error) -> u8 {
    match err {
        Error::DeviceMissing { .. } => 69,    // EX_UNAVAILABLE
        Error::PermissionDenied { .. } => 77, // EX_NOPERM
        Error::MessageTooLarge { .. } => 65,  // EX_DATAERR
        _ => 1,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Send { messages } => send(&cli.device, &messages),
        Cmd::Recv { count } => recv(&cli.device, count),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("memchan: {err}");
            ExitCode::from(exit_code(&err))
        }
    }
}

fn send(device: &str, messages: &[String]) -> Result<(), Error> {
    let ch = Channel::open_writer(device)?;
    if !messages.is_empty() {
        return messages.iter().try_for_each(|m| ch.send(m.as_bytes()));
    }
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|e| Error::Os {
            op: "reading stdin",
            errno: rustix::io::Errno::from_io_error(&e).unwrap_or(rustix::io::Errno::IO),
        })?;
        ch.send(line.as_bytes())?;
    }
    Ok(())
}

fn recv(device: &str, count: Option<u64>) -> Result<(), Error> {
    let ch = Channel::open_reader(device)?;
    let mut buf = Vec::new();
    let mut out = std::io::stdout().lock();
    let mut n = 0u64;
    while count.is_none_or(|c| n < c) {
        let msg = ch.recv(&mut buf)?;
        let msg = msg.strip_suffix(b"\n").unwrap_or(msg);
        if out
            .write_all(msg)
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
