//! The tutorials' server: creates the ring at key 0x2020 (or opens it if the client started
//! first) and sends each line of standard input as one message. Dropping the producer at the end
//! closes the ring: the client receives every line, then end of stream.
//!
//! ```text
//! cargo run --example server < some-file      # in one terminal
//! cargo run --example client                  # in another, before or after
//! ```

use std::io::BufRead;

use shmpipe::{Key, Ring, RingConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ring = Ring::open_or_create(Key::Number(0x2020), &RingConfig::new())?;
    let mut tx = ring.producer()?;
    let mut lines = 0u64;
    for line in std::io::stdin().lock().lines() {
        // Blocks while the ring is full; fails if the client closed or died.
        tx.send(line?.as_bytes())?;
        lines += 1;
    }
    eprintln!("server: {lines} lines sent through {}", ring.ident());
    Ok(())
}
