//! The inverse of the `arbitrary` decoding of the fuzz inputs, for writing seed corpora: an
//! input built in Rust is encoded to the bytes from which `Arbitrary` decodes that same input.
//! The seed generator checks every seed by decoding it again (`roundtrip`), so a change in
//! `arbitrary`'s format shows up there, not as silently meaningless seeds.
//!
//! The format (arbitrary 1.x): integers little-endian; `bool` one byte (low bit); an enum
//! variant a `u32` whose `(v * variants) >> 32` is its index, then its fields; a `Vec` one
//! byte 1 before each element and a 0 after the last; the last field of the top-level struct
//! decoded "take rest" (a `&[u8]` is simply the remaining bytes).

use arbitrary::{Arbitrary, Unstructured};

use crate::{
    Attack, Base, BatchRecvOp, BatchSendOp, Buf, Finish, HostileInput, ImageAction, ImageInput,
    ImageOp, Len, Mode, Op, OpsInput, Roles, Shape, Step,
};

/// Writes a value as the bytes `Arbitrary` decodes it from.
pub trait Encode {
    /// Appends the encoding of `self` to `out`.
    fn encode(&self, out: &mut Vec<u8>);
}

/// Writes the selector of variant `index` of an enum with `count` variants.
fn variant(out: &mut Vec<u8>, index: u32, count: u32) {
    let v = ((u64::from(index) << 32).div_ceil(u64::from(count))) as u32;
    debug_assert_eq!((u64::from(v) * u64::from(count)) >> 32, u64::from(index));
    out.extend_from_slice(&v.to_le_bytes());
}

macro_rules! encode_int {
    ($($t:ty),*) => {$(
        impl Encode for $t {
            fn encode(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}
encode_int!(u8, u16, u64, i8, i16);

impl<T: Encode> Encode for Vec<T> {
    fn encode(&self, out: &mut Vec<u8>) {
        for x in self {
            out.push(1);
            x.encode(out);
        }
        out.push(0);
    }
}

impl Encode for Base {
    fn encode(&self, out: &mut Vec<u8>) {
        let i = match self {
            Base::Zero => 0,
            Base::Two32 => 1,
            Base::Two64 => 2,
        };
        variant(out, i, 3);
    }
}

impl Encode for Shape {
    fn encode(&self, out: &mut Vec<u8>) {
        self.slot_size_log.encode(out);
        self.slot_count_log.encode(out);
        self.max_message.encode(out);
        self.base.encode(out);
        self.offset.encode(out);
    }
}

impl Encode for Len {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Len::Zero => variant(out, 0, 5),
            Len::Max => variant(out, 1, 5),
            Len::OverMax => variant(out, 2, 5),
            Len::Slots(k) => {
                variant(out, 3, 5);
                k.encode(out);
            }
            Len::Any(v) => {
                variant(out, 4, 5);
                v.encode(out);
            }
        }
    }
}

impl Encode for Buf {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Buf::Max => variant(out, 0, 2),
            Buf::Short(v) => {
                variant(out, 1, 2);
                v.encode(out);
            }
        }
    }
}

impl Encode for Finish {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Finish::Commit => variant(out, 0, 3),
            Finish::Short(v) => {
                variant(out, 1, 3);
                v.encode(out);
            }
            Finish::Drop => variant(out, 2, 3),
        }
    }
}

impl Encode for Op {
    fn encode(&self, out: &mut Vec<u8>) {
        const N: u32 = 14;
        match self {
            Op::Send(l) => {
                variant(out, 0, N);
                l.encode(out);
            }
            Op::SendTimeout(l) => {
                variant(out, 1, N);
                l.encode(out);
            }
            Op::Reserve(l, f) => {
                variant(out, 2, N);
                l.encode(out);
                f.encode(out);
            }
            Op::Recv(b) => {
                variant(out, 3, N);
                b.encode(out);
            }
            Op::RecvVec => variant(out, 4, N),
            Op::Read => variant(out, 5, N),
            Op::RecvTimeout => variant(out, 6, N),
            Op::ReadTimeout => variant(out, 7, N),
            Op::SendBatch(v) => {
                variant(out, 8, N);
                v.encode(out);
            }
            Op::RecvBatch(v) => {
                variant(out, 9, N);
                v.encode(out);
            }
            Op::DropProducer => variant(out, 10, N),
            Op::ClaimProducer => variant(out, 11, N),
            Op::DropConsumer => variant(out, 12, N),
            Op::ClaimConsumer => variant(out, 13, N),
        }
    }
}

impl Encode for BatchSendOp {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            BatchSendOp::Send(l) => {
                variant(out, 0, 4);
                l.encode(out);
            }
            BatchSendOp::Reserve(l, f) => {
                variant(out, 1, 4);
                l.encode(out);
                f.encode(out);
            }
            BatchSendOp::Publish => variant(out, 2, 4),
            BatchSendOp::Recv(b) => {
                variant(out, 3, 4);
                b.encode(out);
            }
        }
    }
}

impl Encode for BatchRecvOp {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            BatchRecvOp::Recv(b) => {
                variant(out, 0, 4);
                b.encode(out);
            }
            BatchRecvOp::Read => variant(out, 1, 4),
            BatchRecvOp::Release => variant(out, 2, 4),
            BatchRecvOp::Send(l) => {
                variant(out, 3, 4);
                l.encode(out);
            }
        }
    }
}

impl Encode for OpsInput {
    fn encode(&self, out: &mut Vec<u8>) {
        self.shape.encode(out);
        self.ops.encode(out);
    }
}

impl Encode for Roles {
    fn encode(&self, out: &mut Vec<u8>) {
        let i = match self {
            Roles::Consumer => 0,
            Roles::Producer => 1,
            Roles::Both => 2,
        };
        variant(out, i, 3);
    }
}

impl Encode for ImageAction {
    fn encode(&self, out: &mut Vec<u8>) {
        const N: u32 = 7;
        match self {
            ImageAction::Recv(b) => {
                variant(out, 0, N);
                b.encode(out);
            }
            ImageAction::Read => variant(out, 1, N),
            ImageAction::RecvTimeout => variant(out, 2, N),
            ImageAction::Send(l) => {
                variant(out, 3, N);
                l.encode(out);
            }
            ImageAction::Reserve(l, f) => {
                variant(out, 4, N);
                l.encode(out);
                f.encode(out);
            }
            ImageAction::RecvBatch(n) => {
                variant(out, 5, N);
                n.encode(out);
            }
            ImageAction::SendBatch(n) => {
                variant(out, 6, N);
                n.encode(out);
            }
        }
    }
}

impl Encode for ImageOp {
    fn encode(&self, out: &mut Vec<u8>) {
        self.what.encode(out);
        self.repeat.encode(out);
    }
}

impl Encode for ImageInput<'_> {
    fn encode(&self, out: &mut Vec<u8>) {
        self.roles.encode(out);
        out.push(u8::from(self.repair));
        self.ops.encode(out);
        out.extend_from_slice(self.image);
    }
}

impl Encode for Mode {
    fn encode(&self, out: &mut Vec<u8>) {
        let i = match self {
            Mode::Consumer => 0,
            Mode::Producer => 1,
        };
        variant(out, i, 2);
    }
}

impl Encode for Attack {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Attack::Keep => variant(out, 0, 5),
            Attack::Set(v) => {
                variant(out, 1, 5);
                v.encode(out);
            }
            Attack::Add(d) => {
                variant(out, 2, 5);
                d.encode(out);
            }
            Attack::Flip(b) => {
                variant(out, 3, 5);
                b.encode(out);
            }
            Attack::Near(k) => {
                variant(out, 4, 5);
                k.encode(out);
            }
        }
    }
}

impl Encode for Step {
    fn encode(&self, out: &mut Vec<u8>) {
        const N: u32 = 8;
        match self {
            Step::Send(l) => {
                variant(out, 0, N);
                l.encode(out);
            }
            Step::SendTimeout(l) => {
                variant(out, 1, N);
                l.encode(out);
            }
            Step::Reserve(l, f) => {
                variant(out, 2, N);
                l.encode(out);
                f.encode(out);
            }
            Step::SendBatch(v) => {
                variant(out, 3, N);
                v.encode(out);
            }
            Step::Recv(b) => {
                variant(out, 4, N);
                b.encode(out);
            }
            Step::Read => variant(out, 5, N),
            Step::RecvTimeout => variant(out, 6, N),
            Step::RecvBatch(n) => {
                variant(out, 7, N);
                n.encode(out);
            }
        }
    }
}

impl Encode for HostileInput {
    fn encode(&self, out: &mut Vec<u8>) {
        self.shape.encode(out);
        self.mode.encode(out);
        self.index.encode(out);
        self.records.encode(out);
        self.other.encode(out);
        self.steps.encode(out);
    }
}

/// Encodes `input` and checks that `Arbitrary` decodes the bytes back to it (as libFuzzer's
/// `fuzz_target!` does: `arbitrary_take_rest`).
///
/// # Panics
///
/// If the round trip does not give `input` back.
pub fn roundtrip<'a, T>(input: &T, bytes: &'a mut Vec<u8>) -> &'a [u8]
where
    T: Encode + PartialEq + std::fmt::Debug + for<'b> Arbitrary<'b>,
{
    bytes.clear();
    input.encode(bytes);
    let back = T::arbitrary_take_rest(Unstructured::new(bytes)).expect("decodes");
    assert_eq!(&back, input, "encoding does not round-trip");
    bytes
}
