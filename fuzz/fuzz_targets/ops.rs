//! `ops`: sequences of producer and consumer operations on an in-process ring of a small
//! arbitrary shape (2 to 16 slots of 8 to 128 bytes, counters starting near 0, 2^32 or 2^64 so
//! they wrap), checked step by step against a reference model (`shmpipe_fuzz::Model`). Every
//! outcome (Ok, Full, Empty, TooLarge, BufferTooSmall, Disconnected, RoleTaken), every
//! received byte, and the shared counters after every step must match the model exactly; any
//! divergence panics.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use shmpipe::{
    Consumer, Error, Heap, Liveness, Producer, RecvError, Ring, Role, SendError, TryRecvError,
    TrySendError,
};
use shmpipe_fuzz::{
    BatchRecvOp, BatchSendOp, Buf, Finish, Len, Model, Op, OpsInput, RecvFail, SendFail,
};

fuzz_target!(|input: OpsInput| run(input));

/// Everything one run holds.
struct World {
    ring: Ring,
    model: Model,
    tx: Option<Producer>,
    rx: Option<Consumer>,
}

fn run(input: OpsInput) {
    let ring = Ring::create(Heap, &input.shape.config()).expect("the shape is valid");
    let mut w = World {
        model: Model::new(&ring, input.shape.initial_index()),
        tx: Some(ring.producer().expect("producer")),
        rx: Some(ring.consumer().expect("consumer")),
        ring,
    };
    for op in input.ops {
        w.step(op);
        w.check_counters();
    }
}

impl World {
    fn len(&self, l: Len) -> usize {
        self.model.len(l)
    }

    fn step(&mut self, op: Op) {
        match op {
            Op::Send(l) => self.send(l),
            Op::SendTimeout(l) => self.send_timeout(l),
            Op::Reserve(l, f) => self.reserve(l, f),
            Op::Recv(b) => self.recv(b),
            Op::RecvVec => self.recv_vec(),
            Op::Read => self.read(),
            Op::RecvTimeout => self.recv_timeout(),
            Op::ReadTimeout => self.lend_timeout(),
            Op::SendBatch(items) => self.send_batch(items),
            Op::RecvBatch(items) => self.recv_batch(items),
            Op::DropProducer => {
                if self.tx.take().is_some() {
                    self.model.drop_producer();
                }
            }
            Op::ClaimProducer => match (self.ring.producer(), self.model.producer) {
                (Ok(p), false) => {
                    self.tx = Some(p);
                    self.model.claim_producer();
                }
                (Err(e), true) => expect_role_taken(e, Role::Producer),
                (r, held) => panic!("producer claim with one held={held}: {r:?}"),
            },
            Op::DropConsumer => {
                if self.rx.take().is_some() {
                    self.model.drop_consumer();
                }
            }
            Op::ClaimConsumer => match (self.ring.consumer(), self.model.consumer) {
                (Ok(c), false) => {
                    self.rx = Some(c);
                    self.model.claim_consumer();
                }
                (Err(e), true) => expect_role_taken(e, Role::Consumer),
                (r, held) => panic!("consumer claim with one held={held}: {r:?}"),
            },
        }
    }

    /// The shared counters are what the model says.
    fn check_counters(&self) {
        let s = self.ring.status();
        assert_eq!(s.tail, self.model.published, "stored tail");
        assert_eq!(s.head, self.model.released, "stored head");
    }

    fn send(&mut self, l: Len) {
        let Some(tx) = self.tx.as_mut() else { return };
        let len = l.resolve(
            self.model.max,
            self.model.slot_size as usize,
            self.model.cap as usize,
        );
        let max = self.model.max;
        let data = self.model.new_message(len);
        let got = tx.try_send(&data);
        match (self.model.claim(len), got) {
            (Ok(at), Ok(())) => {
                self.model.finish(at, data);
                self.model.publish();
            }
            (Err(f), Err(e)) => check_send_fail(f, &e, len, max),
            (want, got) => panic!("try_send({len}): model {want:?}, ring {got:?}"),
        }
    }

    fn send_timeout(&mut self, l: Len) {
        let len = self.len(l);
        let Some(tx) = self.tx.as_mut() else { return };
        let data = self.model.new_message(len);
        let got = tx.send_timeout(&data, Duration::ZERO);
        match (self.model.claim(len), got) {
            (Ok(at), Ok(())) => {
                self.model.finish(at, data);
                self.model.publish();
            }
            (Err(SendFail::Full), Err(SendError::Timeout)) => {}
            (Err(SendFail::TooLarge), Err(SendError::TooLarge { len: n, max })) => {
                assert_eq!((n, max), (len, self.model.max));
            }
            (Err(SendFail::Disconnected), Err(SendError::Disconnected)) => {}
            (want, got) => panic!("send_timeout({len}): model {want:?}, ring {got:?}"),
        }
    }

    fn reserve(&mut self, l: Len, f: Finish) {
        let len = self.len(l);
        let Some(tx) = self.tx.as_mut() else { return };
        let max = self.model.max;
        let mut data = self.model.new_message(len);
        let want = self.model.claim(len);
        match (want, tx.try_reserve(len)) {
            (Ok(at), Ok(mut g)) => {
                assert_eq!(g.len(), len);
                g.copy_from_slice(&data);
                if let Some(n) = finish(g, f) {
                    data.truncate(n);
                    self.model.finish(at, data);
                    self.model.publish();
                }
            }
            (Err(f), Err(e)) => check_send_fail(f, &e, len, max),
            (want, got) => panic!("reserve({len}): model {want:?}, ring {got:?}"),
        }
    }

    fn recv(&mut self, b: Buf) {
        let Some(rx) = self.rx.as_mut() else { return };
        let mut buf = vec![0xa5; b.resolve(self.model.max)];
        let got = rx.try_recv(&mut buf);
        if recv_matches(&mut self.model, got, &buf) {
            self.model.release();
        }
    }

    fn recv_vec(&mut self) {
        let Some(rx) = self.rx.as_mut() else { return };
        let mut out = vec![1, 2, 3];
        let got = rx.try_recv_vec(&mut out);
        if recv_matches(&mut self.model, got.clone(), &out) {
            assert_eq!(got, Ok(out.len()));
            self.model.release();
        }
    }

    fn read(&mut self) {
        let Some(rx) = self.rx.as_mut() else { return };
        let want = self.model.next_message();
        match (want, rx.try_lend()) {
            (Ok(m), Ok(g)) => {
                assert_eq!(g.to_vec(), &m[..], "try_lend content");
                check_views(g.view(), &m);
                drop(g);
                self.model.consume();
                self.model.release();
            }
            (Err(f), Err(e)) => check_recv_fail(f, e),
            (want, got) => panic!("try_lend: model {want:?}, ring {:?}", got.map(|g| g.len())),
        }
    }

    fn recv_timeout(&mut self) {
        let Some(rx) = self.rx.as_mut() else { return };
        let mut buf = vec![0; self.model.max];
        let got = rx.recv_timeout(&mut buf, Duration::ZERO);
        match (self.model.next_message(), got) {
            (Ok(m), Ok(n)) => {
                assert_eq!(&buf[..n], &m[..], "recv_timeout content");
                self.model.consume();
                self.model.release();
            }
            (Err(RecvFail::Empty), Err(RecvError::Timeout))
            | (Err(RecvFail::Disconnected), Err(RecvError::Disconnected)) => {}
            (want, got) => panic!("recv_timeout: model {want:?}, ring {got:?}"),
        }
    }

    fn lend_timeout(&mut self) {
        let Some(rx) = self.rx.as_mut() else { return };
        let want = self.model.next_message();
        match (want, rx.lend_timeout(Duration::ZERO)) {
            (Ok(m), Ok(g)) => {
                assert_eq!(g.to_vec(), &m[..], "lend_timeout content");
                drop(g);
                self.model.consume();
                self.model.release();
            }
            (Err(RecvFail::Empty), Err(RecvError::Timeout))
            | (Err(RecvFail::Disconnected), Err(RecvError::Disconnected)) => {}
            (want, got) => panic!(
                "lend_timeout: model {want:?}, ring {:?}",
                got.map(|g| g.len())
            ),
        }
    }

    fn send_batch(&mut self, items: Vec<BatchSendOp>) {
        let World {
            model,
            tx,
            rx,
            ring,
            ..
        } = self;
        let Some(tx) = tx.as_mut() else { return };
        let (max, ss, cap) = (model.max, model.slot_size as usize, model.cap as usize);
        let mut batch = tx.batch();
        for item in items {
            match item {
                BatchSendOp::Send(l) => {
                    let len = l.resolve(max, ss, cap);
                    let data = model.new_message(len);
                    let got = batch.try_send(&data);
                    match (model.claim(len), got) {
                        (Ok(at), Ok(())) => model.finish(at, data),
                        (Err(f), Err(e)) => {
                            if f == SendFail::Full {
                                model.publish(); // a full batch publishes what it has
                            }
                            check_send_fail(f, &e, len, max);
                        }
                        (want, got) => {
                            panic!("batch try_send({len}): model {want:?}, ring {got:?}")
                        }
                    }
                }
                BatchSendOp::Reserve(l, f) => {
                    let len = l.resolve(max, ss, cap);
                    let mut data = model.new_message(len);
                    match (model.claim(len), batch.try_reserve(len)) {
                        (Ok(at), Ok(mut g)) => {
                            g.copy_from_slice(&data);
                            if let Some(n) = finish(g, f) {
                                data.truncate(n);
                                model.finish(at, data);
                            }
                        }
                        (Err(fail), Err(e)) => {
                            if fail == SendFail::Full {
                                model.publish();
                            }
                            check_send_fail(fail, &e, len, max);
                        }
                        (want, got) => panic!("batch reserve({len}): model {want:?}, ring {got:?}"),
                    }
                }
                BatchSendOp::Publish => {
                    batch.publish();
                    model.publish();
                }
                BatchSendOp::Recv(b) => {
                    if let Some(rx) = rx.as_mut() {
                        let mut buf = vec![0xa5; b.resolve(max)];
                        let got = rx.try_recv(&mut buf);
                        if recv_matches(model, got, &buf) {
                            model.release();
                        }
                    }
                }
            }
            assert_eq!(
                batch.pending_slots(),
                model.tail.wrapping_sub(model.published),
                "pending slots"
            );
            let s = ring.status();
            assert_eq!((s.tail, s.head), (model.published, model.released));
        }
        drop(batch);
        model.publish();
    }

    fn recv_batch(&mut self, items: Vec<BatchRecvOp>) {
        let World {
            model,
            tx,
            rx,
            ring,
            ..
        } = self;
        let Some(rx) = rx.as_mut() else { return };
        let (max, ss, cap) = (model.max, model.slot_size as usize, model.cap as usize);
        let mut batch = rx.batch();
        for item in items {
            match item {
                BatchRecvOp::Recv(b) => {
                    let mut buf = vec![0xa5; b.resolve(max)];
                    let got = batch.try_recv(&mut buf);
                    recv_matches(model, got, &buf);
                }
                BatchRecvOp::Read => match (model.next_message(), batch.try_lend()) {
                    (Ok(m), Ok(g)) => {
                        assert_eq!(g.to_vec(), &m[..], "batch try_lend content");
                        drop(g);
                        model.consume();
                    }
                    (Err(f), Err(e)) => check_recv_fail(f, e),
                    (want, got) => {
                        panic!(
                            "batch try_lend: model {want:?}, ring {:?}",
                            got.map(|g| g.len())
                        )
                    }
                },
                BatchRecvOp::Release => {
                    batch.release();
                    model.release();
                }
                BatchRecvOp::Send(l) => {
                    if let Some(tx) = tx.as_mut() {
                        let len = l.resolve(max, ss, cap);
                        let data = model.new_message(len);
                        let got = tx.try_send(&data);
                        match (model.claim(len), got) {
                            (Ok(at), Ok(())) => {
                                model.finish(at, data);
                                model.publish();
                            }
                            (Err(f), Err(e)) => check_send_fail(f, &e, len, max),
                            (want, got) => panic!("try_send({len}): model {want:?}, ring {got:?}"),
                        }
                    }
                }
            }
            let s = ring.status();
            assert_eq!((s.tail, s.head), (model.published, model.released));
        }
        drop(batch);
        model.release();
    }
}

/// Commits or drops a grant as `f` says; the length committed, if any.
fn finish(g: shmpipe::WriteGrant<'_>, f: Finish) -> Option<usize> {
    let len = g.len();
    match f {
        Finish::Commit => {
            g.commit();
            Some(len)
        }
        Finish::Short(v) => {
            let n = usize::from(v) % (len + 1);
            g.commit_len(n);
            Some(n)
        }
        Finish::Drop => None,
    }
}

/// Compares a receive into `buf` with the model; returns whether a message was consumed
/// (then the model's read position moved past it; releasing is the caller's).
fn recv_matches(model: &mut Model, got: Result<usize, TryRecvError>, buf: &[u8]) -> bool {
    match (model.next_message(), got) {
        (Ok(m), Err(TryRecvError::BufferTooSmall { needed, available })) => {
            assert_eq!((needed, available), (m.len(), buf.len()));
            assert!(
                m.len() > buf.len(),
                "BufferTooSmall for a message that fits"
            );
            false
        }
        (Ok(m), Ok(n)) => {
            assert!(
                m.len() <= buf.len(),
                "received a message larger than the buffer"
            );
            assert_eq!(&buf[..n], &m[..], "received content");
            model.consume();
            true
        }
        (Err(f), Err(e)) => {
            check_recv_fail(f, e);
            false
        }
        (want, got) => panic!("try_recv: model {want:?}, ring {got:?}"),
    }
}

fn check_recv_fail(want: RecvFail, got: TryRecvError) {
    match (want, got) {
        (RecvFail::Empty, TryRecvError::Empty)
        | (RecvFail::Disconnected, TryRecvError::Disconnected) => {}
        (want, got) => panic!("receive: model {want:?}, ring {got:?}"),
    }
}

/// Compares a failed send of `len` bytes with the model.
fn check_send_fail(want: SendFail, got: &TrySendError, len: usize, max: usize) {
    match (want, got) {
        (SendFail::Full, TrySendError::Full)
        | (SendFail::Disconnected, TrySendError::Disconnected) => {}
        (SendFail::TooLarge, TrySendError::TooLarge { len: l, max: m }) => {
            assert_eq!((*l, *m), (len, max), "TooLarge fields");
        }
        (want, got) => panic!("send: model {want:?}, ring {got:?}"),
    }
}

fn expect_role_taken(e: Error, role: Role) {
    match e {
        Error::RoleTaken {
            role: r,
            pid,
            holder,
            ..
        } => {
            assert_eq!(r, role);
            assert_eq!(pid, std::process::id());
            assert_eq!(holder, Liveness::Alive);
        }
        e => panic!("claiming the {role} role while held: {e}"),
    }
}

/// The view of a lent message against the model's copy: chunks, values at every offset,
/// sub-views and splits agree with slicing the copy, and every range past the end is an
/// error, never a panic.
fn check_views(v: shmpipe::RingSlice<'_>, m: &[u8]) {
    assert_eq!(v.len(), m.len());
    for size in [1, 3, 8, 64] {
        let chunks: Vec<u8> = v.chunks(size).flat_map(|c| c.to_vec()).collect();
        assert_eq!(chunks, m, "chunks({size})");
        assert_eq!(v.chunks(size).len(), m.len().div_ceil(size));
    }
    for at in 0..=m.len() + 8 {
        let want = m
            .get(at..at + 4)
            .map(|b| u32::from_ne_bytes(b.try_into().unwrap()));
        assert_eq!(v.read_at::<u32>(at).ok(), want, "read_at({at})");
        match v.split_at(at) {
            Ok((a, b)) => assert_eq!(
                (a.to_vec(), b.to_vec()),
                (m[..at].to_vec(), m[at..].to_vec())
            ),
            Err(_) => assert!(at > m.len()),
        }
        let sub = v.subslice(at, 5).ok().map(|s| s.to_vec());
        assert_eq!(
            sub,
            m.get(at..at + 5).map(<[u8]>::to_vec),
            "subslice({at}, 5)"
        );
    }
    assert!(v.subslice(usize::MAX, 2).is_err());
}
