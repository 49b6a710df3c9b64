//! The Rust peer of the Python tests (python/tests): sends or receives a checkable stream over
//! a SysV key, so a Python process can be the other side, started before or after it.
//!
//! ```text
//! py_peer send KEY N          N byte messages, message i = msg(i), then a clean close
//! py_peer recv KEY N          expects exactly msg(0..N) then the end of stream
//! py_peer send-ticks KEY N FP N Tick values, tick(i); FP = tag | default (fingerprint)
//! py_peer recv-ticks KEY N FP expects exactly tick(0..N) then the end of stream
//! ```
//!
//! Each ring is opened with `open_or_create`, so either side may start first. On success it
//! prints `ok N` and exits 0; on a wrong message it prints what differed and exits 1.

use std::process::ExitCode;

use shmpipe::bytemuck::{Pod, Zeroable};
use shmpipe::{Key, RecvError, Ring, RingConfig};

/// The typed ring's value; the Python side's dtype is
/// `[("seq", "<u8"), ("price", "<f8"), ("qty", "<u4"), ("side", "<u4")]` with `align=True`.
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
#[bytemuck(crate = "shmpipe::bytemuck")]
#[repr(C)]
struct Tick {
    seq: u64,
    price: f64,
    qty: u32,
    side: u32,
}

/// The tag both sides use for `FP = tag`.
const TAG: &str = "shmpipe.test.Tick/v1";

/// Byte message `i`: `i` as a little-endian u64, then `i % 300` bytes `(i + j) as u8`.
fn msg(i: u64) -> Vec<u8> {
    let mut m = i.to_le_bytes().to_vec();
    m.extend((0..i % 300).map(|j| (i + j) as u8));
    m
}

/// Tick `i`.
fn tick(i: u64) -> Tick {
    Tick {
        seq: i,
        price: i as f64 * 0.5,
        qty: (i % 1000) as u32,
        side: (i % 2) as u32,
    }
}

/// The typed claim of `ring`, with [`TAG`] or `Tick`'s default fingerprint.
fn claim(ring: &Ring, tagged: bool) -> shmpipe::TypedClaim<'_, Tick> {
    match tagged {
        true => ring.typed::<Tick>().tagged(shmpipe::type_tag(TAG)),
        false => ring.typed::<Tick>(),
    }
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(n) => {
            println!("ok {n}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Res<u64> {
    let [cmd, key, n, rest @ ..] = args else {
        return Err("usage: py_peer send|recv|send-ticks|recv-ticks KEY N [tag|default]".into());
    };
    let key = Key::new(i32::from_str_radix(key.trim_start_matches("0x"), 16)?);
    let n: u64 = n.parse()?;
    let typed = || -> Res<RingConfig> {
        let cfg = RingConfig::new().slot_size(32).slot_count(256);
        Ok(match rest.first().map(String::as_str) {
            Some("tag") => cfg.message_type_tagged::<Tick>(shmpipe::type_tag(TAG)),
            Some("default") => cfg.message_type::<Tick>(),
            _ => return Err("ticks need tag or default".into()),
        })
    };
    let tagged = rest.first().map(String::as_str) == Some("tag");
    match cmd.as_str() {
        "send" => {
            let ring = Ring::open_or_create(key, &RingConfig::new().slot_size(64).slot_count(256))?;
            let mut tx = ring.producer()?;
            for i in 0..n {
                tx.send(&msg(i))?;
            }
            tx.close()?;
        }
        "recv" => {
            let ring = Ring::open_or_create(key, &RingConfig::new().slot_size(64).slot_count(256))?;
            let mut rx = ring.consumer()?;
            let mut buf = vec![0u8; rx.max_message()];
            for i in 0..n {
                let len = rx.recv(&mut buf)?;
                if buf[..len] != msg(i) {
                    return Err(format!("message {i} differs: {:?}", &buf[..len.min(16)]).into());
                }
            }
            match rx.recv(&mut buf) {
                Err(RecvError::Disconnected) => {}
                other => return Err(format!("after {n} messages: {other:?}").into()),
            }
        }
        "send-ticks" => {
            let ring = Ring::open_or_create(key, &typed()?)?;
            let mut tx = claim(&ring, tagged).producer()?;
            for i in 0..n {
                tx.send(tick(i))?;
            }
            tx.into_inner().close()?;
        }
        "recv-ticks" => {
            let ring = Ring::open_or_create(key, &typed()?)?;
            let mut rx = claim(&ring, tagged).consumer()?;
            for i in 0..n {
                let t = rx.recv()?;
                if t != tick(i) {
                    return Err(format!("tick {i} differs: {t:?}").into());
                }
            }
            match rx.recv() {
                Err(RecvError::Disconnected) => {}
                other => return Err(format!("after {n} ticks: {other:?}").into()),
            }
        }
        _ => return Err(format!("unknown command {cmd:?}").into()),
    }
    Ok(n)
}
