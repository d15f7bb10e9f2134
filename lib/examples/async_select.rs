//! Two channels and a timer in one `tokio::select!`:
//! `cargo run -p memchan --features tokio --example async_select`.

use std::time::Duration;

use memchan::tokio::AsyncReceiver;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), memchan::Error> {
    let mut a = AsyncReceiver::open(memchan::channel_path(0))?;
    let mut b = AsyncReceiver::open(memchan::channel_path(1))?;
    memchan::Sender::open_index(1)?.send(b"to channel 1")?;
    loop {
        tokio::select! {
            m = a.recv() => println!("channel 0: {:?}", String::from_utf8_lossy(m?.payload)),
            m = b.recv() => println!("channel 1: {:?}", String::from_utf8_lossy(m?.payload)),
            () = tokio::time::sleep(Duration::from_millis(200)) => break,
        }
    }
    Ok(())
}
