//! `cargo xtask demo`: the product in one command. Boots a guest with memchan loaded, starts a
//! reader blocked on `/dev/memchan`, writes `echo "aaaa" > /dev/memchan` from another process
//! and shows the reader receiving it, then a few more messages.

use std::process::Command;
use std::time::Duration;

use anyhow::Result;

use crate::{cache, module, run, vm, KernelOpts};

/// The guest side of the demo (POSIX sh). `$CLI` is the `memchan` tool built on the host.
const SCRIPT: &str = r#"
say() { printf '\n\033[1;36m[demo] %s\033[0m\n' "$*"; }
GOT="$MEMCHAN_SCRATCH/received"; : > "$GOT"
blocked() { # wait until the reader sleeps in read() with /dev/memchan open
  i=0; while [ $i -lt 100 ]; do
    st=$(cut -d' ' -f3 /proc/$READER/stat 2>/dev/null)
    [ "$st" = S ] && ls -l /proc/$READER/fd 2>/dev/null | grep -q /dev/memchan && return 0
    sleep 0.1; i=$((i+1)); done
  echo "[demo] the reader did not block"; exit 1; }
send() { # run "$@" (a writer), then wait until the reader has printed one more message
  n=$(wc -l < "$GOT"); "$@" || { echo "[demo] writer failed"; exit 1; }
  i=0; while [ "$(wc -l < "$GOT")" -le "$n" ]; do
    i=$((i+1)); [ $i -gt 100 ] && { echo "[demo] the reader received nothing"; exit 1; }
    sleep 0.1; done
  blocked; }
say "memchan is loaded; its device node:"
ls -l /dev/memchan
reader() { # start "$@" as a background reader; its output lines go through the formatter
  rm -f "$MEMCHAN_SCRATCH/reader.pid"
  { "$@" & echo $! > "$MEMCHAN_SCRATCH/reader.pid"; wait; } |
    while IFS= read -r line; do
      printf '         \033[1;32mreader received: %s\033[0m\n' "$line"; echo "$line" >> "$GOT"
    done &
  while [ ! -s "$MEMCHAN_SCRATCH/reader.pid" ]; do sleep 0.1; done
  READER=$(cat "$MEMCHAN_SCRATCH/reader.pid"); }
say "Starting a reader in the background: cat /dev/memchan"
reader cat /dev/memchan
blocked
say "The reader (pid $READER) is blocked in read(): state $(cut -d' ' -f3 /proc/$READER/stat)"
say 'Another process writes: echo "aaaa" > /dev/memchan'
send sh -c 'echo "aaaa" > /dev/memchan'
say "A few more messages, each one write() from its own process:"
for m in "hello from the shell" "bbbb" "cccc"; do
  echo "         \$ echo \"$m\" > /dev/memchan"
  send sh -c "echo \"$m\" > /dev/memchan"
done
kill $READER; wait
say "The memchan tool works both ways: a reader 'memchan recv 0 --follow' (one message per line) ..."
reader "$CLI" recv 0 --follow
blocked
say "... and a writer: memchan send 0 'sent by memchan send', memchan send 0 'and a second message'"
send "$CLI" send 0 'sent by memchan send'
send "$CLI" send 0 'and a second message'
kill $READER; wait
say "Channels can be made at run time: memchan create news --ring 256K --policy block"
"$CLI" create news --ring 256K --policy block || exit 1
say "A reader on it: cat /dev/memchan-news; a writer: echo 'fresh news' > /dev/memchan-news"
reader cat /dev/memchan-news
blocked
send sh -c "echo 'fresh news' > /dev/memchan-news"
say "memchan info: every channel at a glance (read from sysfs, without opening them)"
"$CLI" info
say "memchan stats news: counters, and each reader's lag"
"$CLI" stats news
say "memchan destroy news: the node goes; the reader gets end of file and exits"
"$CLI" destroy news || exit 1
wait
[ -e /dev/memchan-news ] && { echo "[demo] /dev/memchan-news still there"; exit 1; }
say "Done: the blocked readers received all $(wc -l < "$GOT") messages."
"#;

/// Builds the `memchan` tool (debug profile) and returns its path (also `$MEMCHAN_CLI` in the
/// guest).
pub fn build_cli() -> Result<std::path::PathBuf> {
    run::stage("building the memchan command-line tool");
    run::checked(
        Command::new("cargo")
            .args(["build", "--quiet", "--package", "memchan-cli"])
            .current_dir(cache::repo()),
    )?;
    Ok(cache::target_dir().join("debug/memchan"))
}

/// `cargo xtask demo`.
pub fn run(opts: &KernelOpts) -> Result<i32> {
    let cli = build_cli()?;
    let built = module::ensure(opts)?;
    let body = format!("CLI={}\n{SCRIPT}", vm::shell_quote(&cli.to_string_lossy()));
    Ok(vm::boot(&built, &body, Duration::from_secs(600))?.code)
}
