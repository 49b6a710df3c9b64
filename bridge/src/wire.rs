//! What travels on the zenoh key expression (docs/DESIGN.md, "Bridging over zenoh"): every
//! sample carries an attachment (version, kind, stream id, sequence number); the payload is the
//! message itself, the stream header, the end of stream or a failure's reason.

use shmpipe::{MessageType, Ring};

/// The protocol's version, the attachment's first byte; a receiver refuses any other.
pub const VERSION: u8 = 1;
/// Length of the attachment: version, kind, stream id (u64), sequence number (u64).
pub const ATTACHMENT_LEN: usize = 18;
/// Length of an encoded [`Header`].
pub const HEADER_LEN: usize = 32;

/// What a sample is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The stream header (sequence 0): the source ring's shape and message type.
    Header = 0,
    /// One message of the ring, byte for byte.
    Data = 1,
    /// The source ring's producer closed: nothing follows. Payload: the number of messages.
    End = 2,
    /// The sending bridge failed: nothing follows. Payload: the reason, UTF-8.
    Abort = 3,
}

/// A sample's attachment, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tag {
    /// What the payload is.
    pub kind: Kind,
    /// Chosen at random by the sending bridge for each stream: a receiver never splices two.
    pub stream: u64,
    /// 0 for the header, then 1, 2, ... for every later sample: a receiver expects exactly the
    /// next one.
    pub seq: u64,
}

impl Tag {
    /// The attachment's bytes.
    pub fn encode(&self) -> [u8; ATTACHMENT_LEN] {
        let mut b = [0u8; ATTACHMENT_LEN];
        b[0] = VERSION;
        b[1] = self.kind as u8;
        b[2..10].copy_from_slice(&self.stream.to_le_bytes());
        b[10..18].copy_from_slice(&self.seq.to_le_bytes());
        b
    }

    /// Decodes an attachment; `Err` says what is wrong with it.
    pub fn decode(b: &[u8]) -> Result<Tag, String> {
        if b.len() != ATTACHMENT_LEN {
            return Err(format!(
                "attachment of {} bytes, expected {ATTACHMENT_LEN}",
                b.len()
            ));
        }
        if b[0] != VERSION {
            return Err(format!(
                "bridge protocol version {}, this bridge speaks {VERSION}",
                b[0]
            ));
        }
        let kind = match b[1] {
            0 => Kind::Header,
            1 => Kind::Data,
            2 => Kind::End,
            3 => Kind::Abort,
            k => return Err(format!("unknown sample kind {k}")),
        };
        Ok(Tag {
            kind,
            stream: u64_at(b, 2),
            seq: u64_at(b, 10),
        })
    }
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

/// The stream header: the source ring's shape and message type, which the receiving bridge
/// checks against its own ring (and uses to create it when missing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The source ring's slot size.
    pub slot_size: u32,
    /// The source ring's slot count.
    pub slot_count: u32,
    /// The largest message the source ring allows.
    pub max_message: u64,
    /// A typed ring's message type (size, alignment, fingerprint); `None` for bytes.
    pub message_type: Option<MessageType>,
}

impl Header {
    /// The header describing `ring`.
    pub fn of(ring: &Ring) -> Header {
        Header {
            slot_size: ring.slot_size() as u32,
            slot_count: ring.slot_count() as u32,
            max_message: ring.max_message() as u64,
            message_type: ring.message_type(),
        }
    }

    /// The header's bytes (little-endian; a type size of 0 means untyped).
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&self.slot_size.to_le_bytes());
        b[4..8].copy_from_slice(&self.slot_count.to_le_bytes());
        b[8..16].copy_from_slice(&self.max_message.to_le_bytes());
        if let Some(t) = self.message_type {
            b[16..20].copy_from_slice(&t.size.to_le_bytes());
            b[20..24].copy_from_slice(&t.align.to_le_bytes());
            b[24..32].copy_from_slice(&t.fingerprint.to_le_bytes());
        }
        b
    }

    /// Decodes a header; `Err` says what is wrong with it.
    pub fn decode(b: &[u8]) -> Result<Header, String> {
        if b.len() != HEADER_LEN {
            return Err(format!(
                "stream header of {} bytes, expected {HEADER_LEN}",
                b.len()
            ));
        }
        let size = u32_at(b, 16);
        Ok(Header {
            slot_size: u32_at(b, 0),
            slot_count: u32_at(b, 4),
            max_message: u64_at(b, 8),
            message_type: (size != 0).then(|| MessageType {
                size,
                align: u32_at(b, 20),
                fingerprint: u64_at(b, 24),
            }),
        })
    }

    /// Whether every message of this stream can be delivered into `ring` as it is: the same
    /// message type (or both untyped), and no message longer than the ring takes. `Err` says
    /// what differs.
    pub fn check_against(&self, ring: &Ring) -> Result<(), String> {
        let mine = ring.message_type();
        if mine != self.message_type {
            return Err(format!(
                "the stream carries {}, the local ring {}",
                describe(self.message_type),
                describe(mine)
            ));
        }
        if (ring.max_message() as u64) < self.max_message {
            return Err(format!(
                "the stream's messages may be up to {} bytes, the local ring takes at most {}",
                self.max_message,
                ring.max_message()
            ));
        }
        Ok(())
    }
}

fn describe(t: Option<MessageType>) -> String {
    match t {
        None => "bytes (untyped)".into(),
        Some(t) => format!(
            "typed values of {} bytes, alignment {}, fingerprint {:#018x}",
            t.size, t.align, t.fingerprint
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_and_headers_round_trip_and_bad_ones_are_refused() {
        let t = Tag {
            kind: Kind::End,
            stream: 0xdead_beef_0123,
            seq: u64::MAX - 1,
        };
        assert_eq!(Tag::decode(&t.encode()), Ok(t));
        let mut bad = t.encode();
        bad[0] = 9;
        assert!(Tag::decode(&bad).unwrap_err().contains("version 9"));
        bad[0] = VERSION;
        bad[1] = 7;
        assert!(Tag::decode(&bad).unwrap_err().contains("kind 7"));
        assert!(Tag::decode(&bad[..5]).is_err());

        let h = Header {
            slot_size: 64,
            slot_count: 4096,
            max_message: 131_072,
            message_type: Some(MessageType {
                size: 24,
                align: 8,
                fingerprint: 42,
            }),
        };
        assert_eq!(Header::decode(&h.encode()), Ok(h));
        let untyped = Header {
            message_type: None,
            ..h
        };
        assert_eq!(Header::decode(&untyped.encode()), Ok(untyped));
        assert!(Header::decode(&[0u8; 31]).is_err());
    }
}
