//! The tutorials' client: opens the ring at key 0x2020 (or creates it if the server is not up
//! yet) and prints each message as a line until the server closes the ring.
//!
//! The ring is not persistent: once both sides have claimed their roles its segment is marked
//! for removal, so nothing is left in `ipcs -m` when both are done.

use shmpipe::{Key, RecvError, Ring, RingConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ring = Ring::open_or_create(Key::Number(0x2020), &RingConfig::new())?;
    let mut rx = ring.consumer()?;
    let mut lines = 0u64;
    loop {
        match rx.lend() {
            Ok(msg) => println!("{}", String::from_utf8_lossy(&msg.to_vec())),
            Err(RecvError::Disconnected) => break, // the server closed: end of stream
            Err(e) => return Err(e.into()),
        }
        lines += 1;
    }
    eprintln!("client: {lines} lines received");
    Ok(())
}
