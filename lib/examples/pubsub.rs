//! Publish and subscribe on one channel: `cargo run -p memchan --example pubsub [DEVICE]`
//! (in a guest with the module loaded, e.g. `cargo xtask vm -- cargo run ...` or the built
//! binary).

use std::time::Duration;

fn main() -> Result<(), memchan::Error> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| memchan::DEFAULT_PATH.into());
    // Subscribe first: a receiver gets the messages sent after it opened.
    let mut rx = memchan::Receiver::open(&path)?;
    let tx = memchan::Sender::open(&path)?;
    for i in 0..3 {
        tx.send(format!("tick {i}").as_bytes())?;
    }
    for _ in 0..3 {
        let m = rx.recv_timeout(Duration::from_secs(1))?;
        println!(
            "seq {} at {:?}: {}",
            m.seq,
            m.timestamp,
            String::from_utf8_lossy(m.payload)
        );
    }
    let state = rx.state()?;
    println!("lag {} lost {}", state.lag, state.lost);
    Ok(())
}
