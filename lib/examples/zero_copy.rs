//! Zero-copy receive from the ring mapping: `cargo run -p memchan --example zero_copy [DEVICE]`.

use std::time::Duration;

fn main() -> Result<(), memchan::Error> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| memchan::DEFAULT_PATH.into());
    let mut rx = memchan::MappedReceiver::open(&path)?;
    let tx = memchan::Sender::open(&path)?;
    tx.send(b"read where the kernel wrote it")?;
    let zero_copy = rx.is_zero_copy();
    let rec = rx.recv_timeout(Duration::from_secs(1))?;
    println!(
        "seq {}: {} ({})",
        rec.seq,
        String::from_utf8_lossy(rec.payload()),
        if zero_copy {
            "read in place"
        } else {
            "validated copy (overwrite policy)"
        }
    );
    // Release explicitly to learn whether the record stayed intact while it was borrowed.
    rec.release()
}
