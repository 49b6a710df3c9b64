//! The tutorials' client: opens the ring at key 0x2020 (or creates it if the server is not up
//! yet), prints each message as a line until the empty message, then removes the ring.

use crossbeam_utils::Backoff;
use shmpipe::{Key, Ring, RingConfig, TryRecvError};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ring = Ring::open_or_create(Key::Number(0x2020), &RingConfig::new())?;
    let mut rx = ring.consumer()?;
    let backoff = Backoff::new();
    let mut lines = 0u64;
    loop {
        match rx.try_read() {
            Ok(msg) if msg.is_empty() => break,
            Ok(msg) => {
                println!("{}", String::from_utf8_lossy(&msg));
                lines += 1;
                backoff.reset();
            }
            Err(TryRecvError::Empty) => backoff.snooze(),
            Err(e) => return Err(e.into()),
        }
    }
    // Both sides are done with the key: remove it (the memory goes when the server detaches).
    ring.remove()?;
    eprintln!("client: {lines} lines received, ring removed");
    Ok(())
}
