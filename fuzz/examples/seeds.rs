//! Writes the committed seed corpora, `fuzz/corpus/{ops,image,hostile}/`: a handful of small,
//! meaningful inputs per target, each built as a Rust value and encoded to the bytes its
//! target decodes (checked by decoding them again), so the fuzzer starts from the interesting
//! corners (wrap-around, padding, full ring, batches, each corruption) instead of finding
//! them by chance. Image seeds are snapshots of real rings in SysV segments after real traffic.
//!
//! ```sh
//! cargo run --manifest-path fuzz/Cargo.toml --example seeds
//! ```
//!
//! Deterministic: running it again rewrites the same files.

use std::fs;
use std::path::{Path, PathBuf};

use arbitrary::{Arbitrary, Unstructured};
use shmpipe::{Key, Ring, RingConfig};
use shmpipe_fuzz::encode::{Encode, roundtrip};
use shmpipe_fuzz::{
    Attack, Base, BatchRecvOp, BatchSendOp, Buf, Finish, HostileInput, ImageAction, ImageInput,
    ImageOp, Len, Mode, Op, OpsInput, Roles, Shape, Step,
};

fn shape(slot_size_log: u8, slot_count_log: u8, max: u16, base: Base, offset: i16) -> Shape {
    Shape {
        slot_size_log,
        slot_count_log,
        max_message: max,
        base,
        offset,
    }
}

/// 8 slots of 16 bytes, counters from 0.
const SMALL: Shape = Shape {
    slot_size_log: 1,
    slot_count_log: 2,
    max_message: u16::MAX,
    base: Base::Zero,
    offset: 0,
};

fn dir(target: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    fs::create_dir_all(&d).expect("create corpus dir");
    d
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    fs::write(dir(target).join(name), bytes).expect("write seed");
}

fn ops_seeds() {
    use Op::*;
    let seeds: Vec<(&str, OpsInput)> = vec![
        (
            "send-recv",
            OpsInput {
                shape: SMALL,
                ops: vec![Send(Len::Any(5)), Recv(Buf::Max), Recv(Buf::Max), Read],
            },
        ),
        (
            "fill-full-drain",
            OpsInput {
                shape: SMALL,
                ops: vec![
                    Send(Len::Max),
                    Send(Len::Max),
                    Send(Len::Zero),
                    SendTimeout(Len::Zero),
                    Read,
                    Send(Len::Max),
                    RecvVec,
                    RecvTimeout,
                    ReadTimeout,
                    Recv(Buf::Max),
                ],
            },
        ),
        (
            "wrap-2p64-padding",
            OpsInput {
                shape: shape(0, 2, u16::MAX, Base::Two64, 3),
                ops: vec![
                    Send(Len::Slots(2)),
                    Send(Len::Slots(2)),
                    Recv(Buf::Max),
                    Recv(Buf::Max),
                    Send(Len::Slots(3)),
                    Recv(Buf::Max),
                    Send(Len::Slots(0)),
                    Read,
                ],
            },
        ),
        (
            "wrap-2p32",
            OpsInput {
                shape: shape(3, 1, 100, Base::Two32, -2),
                ops: vec![
                    Send(Len::Any(30)),
                    Send(Len::Any(90)),
                    Recv(Buf::Max),
                    Send(Len::Any(60)),
                    Recv(Buf::Max),
                    Recv(Buf::Max),
                ],
            },
        ),
        (
            "reserve-short-drop",
            OpsInput {
                shape: SMALL,
                ops: vec![
                    Reserve(Len::Max, Finish::Short(3)),
                    Reserve(Len::Max, Finish::Drop),
                    Reserve(Len::Slots(1), Finish::Commit),
                    Reserve(Len::OverMax, Finish::Commit),
                    Recv(Buf::Short(1)),
                    Recv(Buf::Max),
                    Recv(Buf::Max),
                ],
            },
        ),
        (
            "send-batch",
            OpsInput {
                shape: SMALL,
                ops: vec![SendBatch(vec![
                    BatchSendOp::Send(Len::Any(3)),
                    BatchSendOp::Recv(Buf::Max),
                    BatchSendOp::Reserve(Len::Any(9), Finish::Short(2)),
                    BatchSendOp::Publish,
                    BatchSendOp::Recv(Buf::Max),
                    BatchSendOp::Send(Len::Max),
                    BatchSendOp::Send(Len::Max),
                    BatchSendOp::Send(Len::Max),
                ])],
            },
        ),
        (
            "recv-batch",
            OpsInput {
                shape: SMALL,
                ops: vec![
                    Send(Len::Max),
                    Send(Len::Max),
                    Send(Len::Any(3)),
                    RecvBatch(vec![
                        BatchRecvOp::Read,
                        BatchRecvOp::Send(Len::Max),
                        BatchRecvOp::Recv(Buf::Max),
                        BatchRecvOp::Release,
                        BatchRecvOp::Send(Len::Max),
                        BatchRecvOp::Recv(Buf::Short(0)),
                    ]),
                ],
            },
        ),
        (
            "roles",
            OpsInput {
                shape: SMALL,
                ops: vec![
                    ClaimProducer,
                    Send(Len::Any(4)),
                    DropProducer,
                    Recv(Buf::Max),
                    Recv(Buf::Max),
                    ClaimProducer,
                    Send(Len::Zero),
                    DropConsumer,
                    Send(Len::Zero),
                    ClaimConsumer,
                    ClaimConsumer,
                    Recv(Buf::Max),
                ],
            },
        ),
        (
            "too-small-then-close",
            OpsInput {
                shape: shape(0, 3, u16::MAX, Base::Zero, -5),
                ops: vec![
                    Send(Len::Slots(4)),
                    Recv(Buf::Max),
                    Send(Len::Slots(5)),
                    Recv(Buf::Short(2)),
                    DropConsumer,
                    ClaimConsumer,
                    Send(Len::Slots(2)),
                    Recv(Buf::Max),
                ],
            },
        ),
        (
            "one-slot-max-zero",
            OpsInput {
                shape: shape(0, 0, u16::MAX, Base::Zero, 1),
                ops: vec![
                    Send(Len::Zero),
                    Send(Len::Zero),
                    Send(Len::Zero),
                    Recv(Buf::Max),
                    Send(Len::OverMax),
                ],
            },
        ),
    ];
    let mut bytes = Vec::new();
    for (name, input) in &seeds {
        write("ops", name, roundtrip(input, &mut bytes));
    }
}

/// A snapshot of a real ring: created in a private SysV segment with `cfg`, driven by `f`,
/// then copied byte for byte. The owner words are cleared unless `keep_owners` (then they name
/// this process, which is dead when the seed is replayed: a takeover).
fn snapshot(
    cfg: &RingConfig,
    keep_owners: bool,
    f: impl FnOnce(&mut shmpipe::Producer, &mut shmpipe::Consumer),
) -> Vec<u8> {
    let ring = Ring::create(Key::Private, &cfg.clone().persistent(true)).expect("create");
    let (mut tx, mut rx) = (ring.producer().expect("tx"), ring.consumer().expect("rx"));
    f(&mut tx, &mut rx);
    let seg = ring.segment().expect("a segment");
    let mut image = vec![0u8; seg.len()];
    // SAFETY: the segment is attached for `seg.len()` bytes while `ring` lives; the producer
    // and consumer are in this thread and idle, so nothing writes the memory during the copy.
    unsafe { std::ptr::copy_nonoverlapping(seg.as_ptr(), image.as_mut_ptr(), image.len()) };
    drop((tx, rx));
    ring.remove().expect("remove");
    if !keep_owners {
        for owner in [128 + 16, 256 + 16] {
            image[owner..owner + 8].fill(0);
        }
    }
    image
}

fn image_seeds() {
    let small = RingConfig::new().slot_size(16).slot_count(8);
    let send = |tx: &mut shmpipe::Producer, len: usize| tx.try_send(&vec![7u8; len]).unwrap();
    let recv = |rx: &mut shmpipe::Consumer| drop(rx.try_lend().unwrap());
    let images: Vec<(&str, Roles, Vec<u8>)> = vec![
        ("empty", Roles::Both, snapshot(&small, false, |_, _| {})),
        (
            "three-messages",
            Roles::Consumer,
            snapshot(&small, false, |tx, _| {
                for len in [0, 8, 20] {
                    send(tx, len);
                }
            }),
        ),
        (
            "padding",
            Roles::Consumer,
            snapshot(&small, false, |tx, rx| {
                for _ in 0..3 {
                    send(tx, 20);
                }
                recv(rx);
                recv(rx);
                send(tx, 40); // does not fit before the end: padding, then slot 0
            }),
        ),
        (
            "wrap-2p64",
            Roles::Both,
            snapshot(
                &small.clone().initial_index(u64::MAX - 2),
                false,
                |tx, rx| {
                    send(tx, 10);
                    send(tx, 30);
                    recv(rx);
                    send(tx, 24);
                },
            ),
        ),
        (
            "full",
            Roles::Producer,
            snapshot(&small, false, |tx, _| {
                for _ in 0..8 {
                    send(tx, 8);
                }
            }),
        ),
        (
            "dead-owners",
            Roles::Both,
            snapshot(&small, true, |tx, _| send(tx, 5)),
        ),
        (
            // A typed ring (the type fields of the configuration line set): 8-byte values.
            "typed",
            Roles::Both,
            snapshot(&small.clone().message_type::<u64>(), false, |tx, rx| {
                for v in 0..5u64 {
                    tx.try_send(&v.to_ne_bytes()).unwrap();
                }
                recv(rx);
            }),
        ),
        (
            "bigger-segment",
            Roles::Both,
            snapshot(
                &RingConfig::new().slot_size(64).slot_count(4),
                false,
                |tx, _| send(tx, 100),
            ),
        ),
    ];
    let mut out = Vec::new();
    for (name, roles, image) in &images {
        let ops = vec![
            ImageOp {
                what: ImageAction::Recv(Buf::Max),
                repeat: 3,
            },
            ImageOp {
                what: ImageAction::Send(Len::Any(13)),
                repeat: 2,
            },
            ImageOp {
                what: ImageAction::Reserve(Len::Max, Finish::Short(5)),
                repeat: 0,
            },
            ImageOp {
                what: ImageAction::RecvBatch(3),
                repeat: 1,
            },
            ImageOp {
                what: ImageAction::SendBatch(4),
                repeat: 1,
            },
            ImageOp {
                what: ImageAction::Read,
                repeat: 7,
            },
        ];
        let input = ImageInput {
            roles: *roles,
            repair: false,
            ops,
            image,
        };
        out.clear();
        input.encode(&mut out);
        let back = ImageInput::arbitrary_take_rest(Unstructured::new(&out)).expect("decodes");
        assert_eq!(back, input, "image seed does not round-trip");
        write("image", name, &out);
    }
    // Repaired headers (the target makes the configuration valid): arbitrary counters and
    // slot bytes behind a valid header.
    let mut garbage = vec![0u8; 384 + 8 * 16];
    garbage[16] = 1; // 16-byte slots
    garbage[20] = 3; // 8 slots
    garbage[24] = 40; // max message 40
    garbage[128..136].copy_from_slice(&(u64::MAX - 1).to_le_bytes()); // tail
    garbage[256] = 5; // head 5 slots behind the tail
    // Record headers of every kind and some lengths around the limits, one per slot.
    let records: [(u32, u32); 8] = [
        (0, 1),
        (9, 1),
        (88, 2),
        (40, 1),
        (41, 1),
        (3, 0),
        (8, 3),
        (24, 2),
    ];
    for (slot, (len, kind)) in records.iter().enumerate() {
        let at = 384 + slot * 16;
        garbage[at..at + 4].copy_from_slice(&len.to_le_bytes());
        garbage[at + 4..at + 8].copy_from_slice(&kind.to_le_bytes());
    }
    for (name, image) in [
        ("repaired-zeros", vec![0u8; 16]),
        ("repaired-garbage", garbage),
    ] {
        let input = ImageInput {
            roles: Roles::Both,
            repair: true,
            ops: vec![
                ImageOp {
                    what: ImageAction::Recv(Buf::Max),
                    repeat: 7,
                },
                ImageOp {
                    what: ImageAction::Send(Len::Max),
                    repeat: 3,
                },
            ],
            image: &image,
        };
        out.clear();
        input.encode(&mut out);
        write("image", name, &out);
    }
    // One corruption the consumer must report: a record longer than the maximum.
    let mut bad = images[1].2.clone();
    bad[384..388].copy_from_slice(&1000u32.to_le_bytes());
    let input = ImageInput {
        roles: Roles::Consumer,
        repair: false,
        ops: vec![ImageOp {
            what: ImageAction::Recv(Buf::Max),
            repeat: 2,
        }],
        image: &bad,
    };
    out.clear();
    input.encode(&mut out);
    write("image", "record-too-long", &out);
}

fn hostile_seeds() {
    use Attack::*;
    use Step::*;
    // Traffic for both modes: the consumer's first reads find records, the producer fills the
    // ring (8 slots of 16 bytes: a maximum message takes 4) so that it has to read the head.
    let traffic = || {
        vec![
            Send(Len::Any(5)),
            Recv(Buf::Max),
            Send(Len::Max),
            Send(Len::Max),
            Send(Len::Max),
            Read,
            Send(Len::Max),
            RecvBatch(2),
            SendBatch(vec![Len::Zero, Len::Max, Len::Any(7)]),
            Reserve(Len::Max, Finish::Short(1)),
            Recv(Buf::Max),
            SendTimeout(Len::Max),
            RecvTimeout,
            Recv(Buf::Max),
            Send(Len::Slots(2)),
            Recv(Buf::Short(3)),
            Read,
        ]
    };
    let input = |shape: Shape, mode, index, records, other| HostileInput {
        shape,
        mode,
        index,
        records,
        other,
        steps: traffic(),
    };
    // The `Near(k)` values (see the target): tail [head+cap, head+cap+1, head-1, ...], head
    // [tail, tail+1, old-1, ...], len [max, max+1, padding, padding+1, ...], kind [0, 1, 2, 3].
    let seeds: Vec<(&str, HostileInput)> = vec![
        (
            "consumer-honest-values",
            input(SMALL, Mode::Consumer, vec![Keep], vec![Keep], vec![Keep]),
        ),
        (
            "consumer-tail-past-capacity",
            input(SMALL, Mode::Consumer, vec![Near(1)], vec![], vec![]),
        ),
        (
            "consumer-tail-at-capacity",
            input(SMALL, Mode::Consumer, vec![Near(0)], vec![], vec![]),
        ),
        (
            "consumer-tail-backwards",
            input(
                shape(0, 3, u16::MAX, Base::Two32, -1),
                Mode::Consumer,
                vec![Keep, Add(-1), Set(u64::MAX)],
                vec![],
                vec![],
            ),
        ),
        (
            "consumer-record-too-long",
            input(
                shape(1, 2, u16::MAX, Base::Two64, 4),
                Mode::Consumer,
                vec![],
                vec![Near(1)],
                vec![],
            ),
        ),
        (
            "consumer-unknown-kind",
            input(SMALL, Mode::Consumer, vec![], vec![Keep, Near(3)], vec![]),
        ),
        (
            "consumer-padding-at-zero",
            input(
                SMALL,
                Mode::Consumer,
                vec![],
                vec![Near(2), Near(2)],
                vec![],
            ),
        ),
        (
            "consumer-producer-gone",
            input(SMALL, Mode::Consumer, vec![], vec![], vec![Keep, Set(0)]),
        ),
        (
            "consumer-claims-zeroed",
            input(
                SMALL,
                Mode::Consumer,
                vec![],
                vec![],
                vec![Set(0), Set(0), Set(0), Set(0)],
            ),
        ),
        (
            "consumer-owner-rewritten",
            input(
                SMALL,
                Mode::Consumer,
                vec![],
                vec![],
                vec![Keep, Keep, Set(0x1234), Keep, Set(0x1234)],
            ),
        ),
        (
            "producer-owner-rewritten",
            input(
                SMALL,
                Mode::Producer,
                vec![],
                vec![],
                // A send reads the owner word, the closed flag, then swaps the waiting flag:
                // the second send's owner read is rewritten.
                vec![Keep, Keep, Keep, Set(0x1234)],
            ),
        ),
        (
            "producer-head-past-tail",
            input(SMALL, Mode::Producer, vec![Near(1)], vec![], vec![]),
        ),
        (
            "producer-head-ahead-in-range",
            input(SMALL, Mode::Producer, vec![Near(0)], vec![], vec![]),
        ),
        (
            "producer-head-backwards",
            input(
                shape(1, 2, u16::MAX, Base::Zero, -3),
                Mode::Producer,
                vec![Keep, Near(2), Flip(63)],
                vec![],
                vec![],
            ),
        ),
        (
            "producer-closed-flag",
            input(
                SMALL,
                Mode::Producer,
                vec![],
                vec![],
                vec![Keep, Keep, Set(1)],
            ),
        ),
    ];
    let mut bytes = Vec::new();
    for (name, input) in &seeds {
        write("hostile", name, roundtrip(input, &mut bytes));
    }
}

fn main() {
    ops_seeds();
    image_seeds();
    hostile_seeds();
    for t in ["ops", "image", "hostile"] {
        let n = fs::read_dir(dir(t)).map(|d| d.count()).unwrap_or(0);
        println!("fuzz/corpus/{t}: {n} seeds");
    }
}
