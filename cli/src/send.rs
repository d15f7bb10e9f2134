//! `memchan send`.

use std::io::BufRead;
use std::path::Path;

use memchan::{Error, Sender};

/// Sends each message, or each stdin line when there are none.
pub fn run(path: &Path, messages: &[String]) -> Result<(), Error> {
    let tx = Sender::open(path)?;
    if !messages.is_empty() {
        return messages.iter().try_for_each(|m| tx.send(m.as_bytes()));
    }
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|e| Error::io("reading stdin", &e))?;
        tx.send(line.as_bytes())?;
    }
    Ok(())
}
