//! The tutorials' server: creates the ring at key 0x2020 (or opens it if the client started
//! first) and sends each line of standard input as one message, then a last empty message to
//! say it is done.
//!
//! ```text
//! cargo run --example server < some-file      # in one terminal
//! cargo run --example client                  # in another, before or after
//! ```

use std::io::BufRead;

use crossbeam_utils::Backoff;
use shmpipe::{Key, Ring, RingConfig, TrySendError};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ring = Ring::open_or_create(Key::Number(0x2020), &RingConfig::new())?;
    let mut tx = ring.producer()?;
    for line in std::io::stdin().lock().lines() {
        send(&mut tx, line?.as_bytes())?;
    }
    send(&mut tx, b"")?;
    eprintln!("server: sent, {}", ring.ident());
    Ok(())
}

/// Sends one message, waiting while the ring is full (blocking sends come in a later version).
fn send(tx: &mut shmpipe::Producer, msg: &[u8]) -> Result<(), Box<dyn std::error::Error>> {
    let backoff = Backoff::new();
    loop {
        match tx.try_send(msg) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(_)) => backoff.snooze(),
            Err(e) => return Err(e.to_string().into()),
        }
    }
}
