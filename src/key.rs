//! The name of a System V segment: a leaf every layer may use (errors name keys).

use std::fmt;
use std::str::FromStr;

/// The name of a System V shared-memory segment.
///
/// A key is how two unrelated processes find the same segment: they agree on a number
/// (`0x2020`), or derive one from a path with [`Key::ftok`]. [`Key::Private`] (`IPC_PRIVATE`)
/// creates a segment no other process can find by key; share it across `fork` or by handing
/// the other process the shmid (see [`Shmid`](crate::Shmid)).
///
/// # Examples
///
/// ```
/// use shmpipe::Key;
/// let k: Key = "0x2020".parse().unwrap();
/// assert_eq!(k, Key::Number(0x2020));
/// assert_eq!(k.to_string(), "0x00002020");
/// assert_eq!(Key::new(0), Key::Private);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Key {
    /// `IPC_PRIVATE`: a new segment that can only be reached by its shmid.
    Private,
    /// A numeric key agreed on by both processes. Never 0 (that is [`Key::Private`]).
    Number(i32),
}

impl Key {
    /// A key from its raw value; 0 is `IPC_PRIVATE`.
    pub const fn new(raw: i32) -> Key {
        if raw == libc::IPC_PRIVATE {
            Key::Private
        } else {
            Key::Number(raw)
        }
    }

    /// The raw `key_t` passed to `shmget`.
    pub const fn raw(self) -> libc::key_t {
        match self {
            Key::Private => libc::IPC_PRIVATE,
            Key::Number(k) => k,
        }
    }
}

impl From<i32> for Key {
    fn from(raw: i32) -> Key {
        Key::new(raw)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Private => f.write_str("IPC_PRIVATE"),
            // ipcs prints keys as 0x%08x of the unsigned value; do the same.
            Key::Number(k) => write!(f, "0x{:08x}", *k as u32),
        }
    }
}

/// The error of parsing a [`Key`] from text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid key {0:?}: expected a number such as 0x2020 or 8224, or \"private\"")]
pub struct ParseKeyError(String);

impl FromStr for Key {
    type Err = ParseKeyError;

    /// Parses `0x2020` (hex), `8224` (decimal, may be negative), or `private`/`IPC_PRIVATE`.
    fn from_str(s: &str) -> Result<Key, ParseKeyError> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("private") || t == "IPC_PRIVATE" {
            return Ok(Key::Private);
        }
        let parsed = if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
            // Hex keys are written unsigned (as ipcs prints them) and reinterpreted as key_t.
            u32::from_str_radix(hex, 16).ok().map(|v| v as i32)
        } else {
            t.parse::<i32>().ok()
        };
        parsed
            .map(Key::new)
            .ok_or_else(|| ParseKeyError(s.to_owned()))
    }
}
