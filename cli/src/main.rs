//! `memchan`: send, receive and inspect memchan channels from the shell.

mod admin;
mod bridge;
mod channel;
mod inspect;
mod recv;
mod send;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use memchan::{Error, Policy};

/// Send, receive and inspect memchan kernel message channels (/dev/memchan*).
///
/// CHANNEL is a channel number (0 is /dev/memchan, 1 is /dev/memchan1, ...), a named
/// channel's name (telemetry is /dev/memchan-telemetry), a device name (memchan1) or a path.
#[derive(Parser)]
#[command(
    name = "memchan",
    version,
    after_help = "\
Examples:
  memchan recv 0 --follow &            print every message sent to /dev/memchan
  memchan send 0 'hello' 'world'       two messages
  printf 'a\\nb\\n' | memchan send 0     one message per stdin line
  memchan recv 0 --from oldest         dump what the ring still holds, then exit
  memchan recv 0 -n 1 --timeout 5      wait up to 5 s for one message
  memchan recv 0 --follow --format json | jq .seq
  memchan info                         every channel in a table
  memchan stats 0 --watch              live rates, lag per reader, overruns
  memchan policy 0 overwrite           writers never wait; slow readers lose the oldest
  memchan create telemetry --ring 1M --policy block --mode 660 --group adm
  memchan destroy telemetry            remove it (open files read what is left, then EOF)
  memchan bridge 0 robot/telemetry --listen tcp/0.0.0.0:7447         publish /dev/memchan
  memchan bridge 0 robot/telemetry -d in --connect tcp/10.0.0.1:7447  and, elsewhere, receive it

Exit status: 0 success; 2 bad usage; 64 invalid name or setting; 65 message too large;
69 no such channel (module not loaded?); 73 channel exists or too many; 75 timed out or
channel busy; 77 permission denied; 1 anything else."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Send each MESSAGE as one message (each stdin line when none are given).
    Send {
        /// Channel number, name or path.
        channel: String,
        /// The messages.
        messages: Vec<String>,
    },
    /// Receive messages: what is pending, and with --follow or -n, what comes next.
    Recv(recv::Args),
    /// Show a channel's configuration and state (a table of all channels without CHANNEL).
    Info {
        /// Channel number, name or path.
        channel: Option<String>,
    },
    /// Show a channel's counters and its readers; --watch refreshes them with rates.
    Stats {
        /// Channel number, name or path.
        channel: String,
        /// Refresh every INTERVAL seconds until interrupted.
        #[arg(long, short)]
        watch: bool,
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
    },
    /// Set a channel's overflow policy (needs the channel's owner or CAP_SYS_ADMIN).
    Policy {
        /// Channel number, name or path.
        channel: String,
        /// block: writers wait for the slowest reader; overwrite: writers never wait.
        #[arg(value_enum)]
        policy: PolicyArg,
    },
    /// Create a named channel /dev/memchan-NAME (root; configfs).
    ///
    /// Unset options take the module's defaults (its load parameters; owner root, mode 600).
    /// memchan checks owner, group and mode itself when the channel is opened; the device node
    /// gets the same owner and mode.
    Create(admin::CreateArgs),
    /// Remove a named channel (root). Files still open on it read what is left, then end of
    /// file; writes to it fail.
    Destroy {
        /// The channel's name.
        name: String,
    },
    /// Bridge a channel to a Zenoh key expression: out publishes its messages, in writes what
    /// is received into it, both does both (nothing is sent back where it came from).
    ///
    /// A block channel publishes with Zenoh's blocking congestion control (writers feel a slow
    /// network), an overwrite channel with dropping (what is dropped is counted as lost on the
    /// receiving side). Stats lines (sent, received, lost, rates, peers) go to stdout every
    /// --interval seconds; SIGINT or SIGTERM stops the bridge cleanly.
    Bridge(bridge::Args),
    /// Print a shell completion script (e.g. `memchan completions bash > /etc/bash_completion.d/memchan`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// Overflow policy on the command line (`block` or `overwrite`; clap refuses anything else).
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum PolicyArg {
    /// Writers wait for the slowest reader.
    Block,
    /// Writers never wait; slow readers lose the oldest messages.
    Overwrite,
}

impl From<PolicyArg> for Policy {
    fn from(p: PolicyArg) -> Self {
        match p {
            PolicyArg::Block => Policy::Block,
            PolicyArg::Overwrite => Policy::Overwrite,
        }
    }
}

/// Exit codes scripts can rely on (from sysexits.h).
pub(crate) fn exit_code(err: &Error) -> u8 {
    match err {
        Error::InvalidName { .. } | Error::InvalidSetting { .. } => 64, // EX_USAGE
        Error::MessageTooLarge { .. } => 65,                            // EX_DATAERR
        Error::DeviceMissing { .. }
        | Error::Removed { .. }
        | Error::NotAChannel { .. }
        | Error::NoConfigfs { .. } => 69, // EX_UNAVAILABLE
        Error::Exists { .. } | Error::TooManyChannels => 73,            // EX_CANTCREAT
        Error::TimedOut | Error::Busy { .. } => 75,                     // EX_TEMPFAIL
        Error::PermissionDenied { .. } => 77,                           // EX_NOPERM
        _ => 1,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Bridge(args) => return bridge::main(&args),
        Cmd::Send { channel, messages } => send::run(&channel::path(&channel), &messages),
        Cmd::Recv(args) => recv::run(&args),
        Cmd::Info { channel } => inspect::info(channel.as_deref()),
        Cmd::Stats {
            channel,
            watch,
            interval,
        } => inspect::stats(&channel::path(&channel), watch, interval),
        Cmd::Policy { channel, policy } => {
            let policy = Policy::from(policy);
            memchan::Sender::open(channel::path(&channel)).and_then(|tx| tx.set_policy(policy))
        }
        Cmd::Create(args) => admin::create(&args),
        Cmd::Destroy { name } => admin::destroy(&name),
        Cmd::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "memchan",
                &mut std::io::stdout(),
            );
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("memchan: {err}");
            ExitCode::from(exit_code(&err))
        }
    }
}
