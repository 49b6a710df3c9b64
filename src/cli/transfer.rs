//! `shmpipe send` and `shmpipe recv`: a byte stream (or, with `--lines`, one message per line)
//! from a file or standard input, through a ring, to standard output or a file.
//!
//! Bytes are copied once on each side: `send` reserves room in the ring and `read`s the input
//! straight into it, then commits what was read; `recv` lends each message in place and
//! `write`s it straight from the ring. Either side may start first (the ring is created on
//! demand); the sender closing the ring is the end of the stream.
//!
//! The sender never closes the ring cleanly after a failure: the receiver must not mistake a
//! truncated stream for a complete one. It exits holding its role, so the receiver gets "the
//! sender died" instead of end of stream.

use std::fs::File;
use std::io::{self, IsTerminal, Read, Seek, Write};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use shmpipe::{
    Consumer, Error, Ident, Key, Producer, RecvError, Ring, RingConfig, RingSlice, SendError,
    TryRecvError,
};

use super::progress::Progress;
use super::signals::{self, POLL};
use super::{CliError, RecvArgs, SendArgs, ShapeArgs, Target, TargetArgs, TransferOpts};

/// Bytes of the slot array of a ring the command creates, unless `--capacity` says otherwise.
pub const DEFAULT_CAPACITY: u64 = 4 << 20;
/// Bytes per slot unless `--slot-size` says otherwise.
pub const DEFAULT_SLOT_SIZE: u64 = 64;
/// Output buffer of `recv --lines` (written out whenever the ring is empty, or when full).
const LINE_OUT_BUF: usize = 64 << 10;
/// Initial input buffer of `send --lines` (grows up to the largest message).
const LINE_IN_BUF: usize = 64 << 10;
/// Exit status after the reader of our standard output went away (128 + SIGPIPE, what a
/// shell reports for a process killed by SIGPIPE).
const BROKEN_PIPE_STATUS: u8 = 141;

/// How a transfer ended, other than by end of stream.
enum Failure {
    /// A signal was caught.
    Signal(libc::c_int),
    /// The reader of our output went away (EPIPE).
    BrokenPipe,
    /// Anything else: reported, exit status 1.
    Error(CliError),
}

impl From<CliError> for Failure {
    fn from(e: CliError) -> Failure {
        Failure::Error(e)
    }
}

/// How often `send` asks the kernel whether the receiver still lives. The library notices a
/// dead receiver while it waits for room; a sender whose ring never fills (a server writing a
/// line now and then) would otherwise go on writing into a ring nobody reads.
const PEER_CHECK_EVERY: Duration = Duration::from_millis(500);

/// Checks now and then that the receiver of a ring, once it came, is still alive.
struct ReceiverWatch {
    next: Instant,
}

impl ReceiverWatch {
    fn new() -> ReceiverWatch {
        ReceiverWatch {
            next: Instant::now() + PEER_CHECK_EVERY,
        }
    }

    /// `Err` if the receiver closed the ring or died (asked at most every
    /// [`PEER_CHECK_EVERY`]): a send notices that by itself only when it has to wait for room.
    fn check(&mut self, tx: &Producer, ident: Ident) -> Result<(), Failure> {
        let now = Instant::now();
        if now < self.next {
            return Ok(());
        }
        self.next = now + PEER_CHECK_EVERY;
        tx.check_consumer()
            .map_err(|e| send_error(ident, &e).into())
    }
}

impl ShapeArgs {
    /// Whether the user chose a shape (then an existing ring of another shape is an error).
    fn explicit(&self) -> bool {
        self.capacity.is_some() || self.slot_size.is_some()
    }

    /// The configuration of a ring to create.
    pub(super) fn config(&self, persistent: bool) -> Result<RingConfig, CliError> {
        let capacity = self.capacity.unwrap_or(DEFAULT_CAPACITY);
        let slot = self.slot_size.unwrap_or(DEFAULT_SLOT_SIZE);
        if capacity < slot {
            return Err(CliError::usage(format!(
                "--capacity {capacity} is smaller than one slot of {slot} bytes"
            )));
        }
        let slot_size = u32::try_from(slot)
            .map_err(|_| CliError::usage(format!("--slot-size {slot} is too large")))?;
        let slot_count = u32::try_from(capacity / slot).map_err(|_| {
            CliError::usage(format!(
                "--capacity {capacity} makes too many slots of {slot} bytes"
            ))
        })?;
        Ok(RingConfig::new()
            .slot_size(slot_size)
            .slot_count(slot_count)
            .mode(self.mode)
            .persistent(persistent)
            .huge_pages(self.huge_pages))
    }
}

/// Opens the ring a transfer uses, creating it if needed. Without an explicit shape, an
/// existing ring of any shape is used as it is.
fn open_ring(target: Target, shape: &ShapeArgs, persistent: bool) -> Result<Ring, CliError> {
    let cfg = shape.config(persistent)?;
    match target {
        Target::Id(id) => Ok(Ring::open_id(id)?),
        Target::Key(Key::Private) => {
            let ring = Ring::create(Key::Private, &cfg)?;
            let id = ring.shmid().unwrap_or(-1);
            eprintln!(
                "shmpipe: created private ring shmid {id}; the other side joins with --id {id}"
            );
            Ok(ring)
        }
        Target::Key(key) => match Ring::open_or_create(key, &cfg) {
            Err(Error::ConfigMismatch { .. }) if !shape.explicit() => Ok(Ring::open(key)?),
            other => Ok(other?),
        },
    }
}

/// Opens the ring of a transfer: the file of `--path`, or the segment of the target options.
fn open_transfer(target: &TargetArgs, opts: &TransferOpts) -> Result<Ring, CliError> {
    let Some(path) = &opts.path else {
        return open_ring(target.required()?, &opts.shape, opts.persist);
    };
    let cfg = opts.shape.config(opts.persist)?;
    match Ring::open_or_create_file(path, &cfg) {
        Err(Error::ConfigMismatch { .. }) if !opts.shape.explicit() => Ok(Ring::open_file(path)?),
        other => Ok(other?),
    }
}

/// Claims a role. A persistent file ring outlives its users, so a role still held by a process
/// that died (confirmed by the kernel) is taken over: that is a restart, not a conflict.
fn claim<T>(
    ring: &Ring,
    claim: impl Fn(&Ring) -> Result<T, Error>,
    take_over: impl Fn(&Ring) -> Result<T, Error>,
) -> Result<T, CliError> {
    match claim(ring) {
        Err(Error::RoleTaken {
            holder_alive: false,
            ..
        }) if ring.path().is_some() => Ok(take_over(ring)?),
        other => Ok(other?),
    }
}

/// `--lock`: pre-faults and locks this side's mapping of the ring, before claiming a role. On
/// failure a ring this process created (and so nobody else made) is removed as after a failed
/// transfer; a ring the peer created is left alone for it.
fn lock_if_asked(ring: &Ring, lock: bool) -> Result<(), CliError> {
    if !lock {
        return Ok(());
    }
    ring.lock_memory().map_err(|e| {
        let ours = ring
            .segment()
            .and_then(|seg| seg.stat().ok())
            .is_some_and(|st| st.creator_pid as u32 == std::process::id());
        if ours {
            remove_if_unjoined(ring);
        }
        CliError::from(e)
    })
}

/// After a failed or interrupted transfer: removes the ring if the other side never came (it
/// is not marked for removal, which happens once both sides have attached) and it is not
/// persistent, so a failed transfer leaves nothing behind. Errors are ignored: this is
/// clean-up on the way out, and `gc` removes what it leaves.
fn remove_if_unjoined(ring: &Ring) {
    if ring.path().is_some() {
        // A file ring is unlinked once both sides are in; still linked means nobody came.
        if !ring.is_persistent() && ring.is_linked() {
            let _ = ring.remove();
        }
        return;
    }
    let Some(seg) = ring.segment() else { return };
    let Ok(stat) = seg.stat() else { return };
    if stat.marked_for_removal {
        return;
    }
    if !ring.is_persistent() {
        let _ = ring.remove();
    }
}

/// Standard input or output as a `File` of its own (a duplicate of the descriptor), so reads
/// and writes go straight to the kernel, with no buffer in between.
fn dup_std(fd: std::os::fd::BorrowedFd<'_>, what: &str) -> Result<File, CliError> {
    fd.try_clone_to_owned()
        .map(File::from)
        .map_err(|e| CliError::new(format!("{what}: {e}")))
}

/// The input of `send` and its name for messages.
fn open_input(path: Option<&Path>) -> Result<(File, String), CliError> {
    match path {
        None => Ok((
            dup_std(io::stdin().as_fd(), "standard input")?,
            "standard input".into(),
        )),
        Some(p) if p.as_os_str() == "-" => Ok((
            dup_std(io::stdin().as_fd(), "standard input")?,
            "standard input".into(),
        )),
        Some(p) => {
            let name = p.display().to_string();
            let f = File::open(p).map_err(|e| CliError::new(format!("{name}: {e}")))?;
            if f.metadata().is_ok_and(|m| m.is_dir()) {
                return Err(CliError::new(format!("{name}: is a directory")));
            }
            Ok((f, name))
        }
    }
}

/// The output of `recv` and its name for messages.
fn open_output(path: Option<&Path>) -> Result<(File, String), CliError> {
    match path {
        Some(p) if p.as_os_str() != "-" => {
            let name = p.display().to_string();
            let f = File::create(p).map_err(|e| CliError::new(format!("{name}: {e}")))?;
            Ok((f, name))
        }
        _ => Ok((
            dup_std(io::stdout().as_fd(), "standard output")?,
            "standard output".into(),
        )),
    }
}

/// Bytes left in the input if it is a regular file (for the progress bar).
fn remaining_len(f: &mut File) -> Option<u64> {
    let meta = f.metadata().ok()?;
    if !meta.is_file() {
        return None;
    }
    let pos = f.stream_position().unwrap_or(0);
    Some(meta.len().saturating_sub(pos))
}

/// `shmpipe send`.
pub fn send(a: SendArgs) -> Result<ExitCode, CliError> {
    if a.opts.path.is_none() {
        a.target.required()?;
    }
    let (mut input, name) = open_input(a.file.as_deref())?;
    let total = remaining_len(&mut input);
    // A bar would garble what the user types.
    let bar = !a.opts.no_progress && !input.is_terminal();
    signals::install();
    let ring = open_transfer(&a.target, &a.opts)?;
    lock_if_asked(&ring, a.opts.lock)?;
    let ident = ring.ident();
    let mut tx = claim(&ring, Ring::producer, Ring::take_over_producer)?;
    let mut progress = Progress::new(bar, total);
    let mut watch = ReceiverWatch::new();
    let result = if a.lines {
        send_lines(&mut tx, ident, &mut input, &name, &mut progress, &mut watch)
    } else {
        send_bytes(&mut tx, ident, &mut input, &name, &mut progress, &mut watch)
    };
    match result {
        Ok(()) => {
            drop(tx); // closes the ring: end of stream for the receiver
            progress.finish();
            Ok(ExitCode::SUCCESS)
        }
        Err(failure) => {
            progress.abandon();
            remove_if_unjoined(&ring);
            // Never close the ring after a failure: the receiver would take the truncated
            // stream for a complete one. Keeping the role until we exit makes it a dead sender.
            std::mem::forget(tx);
            match failure {
                Failure::Signal(sig) => signals::die_of(sig),
                Failure::BrokenPipe => Ok(ExitCode::from(BROKEN_PIPE_STATUS)),
                Failure::Error(e) => Err(e),
            }
        }
    }
}

/// What a send error means to the user.
fn send_error(ident: Ident, e: &SendError<impl Sized>) -> CliError {
    CliError::new(match e {
        SendError::Disconnected(_) => {
            format!("{ident}: the receiver closed the ring before the end of the input")
        }
        SendError::PeerDied { pid, .. } => format!("{ident}: the receiver (pid {pid}) died"),
        SendError::Corrupted(c) => c.to_string(),
        SendError::Timeout(_) => format!("{ident}: timed out"),
        SendError::TooLarge { len, max } => {
            format!("{ident}: a message of {len} bytes exceeds the ring's largest, {max} bytes")
        }
    })
}

/// The byte stream: each `read` of the input goes straight into reserved ring memory and is
/// committed as one message.
fn send_bytes(
    tx: &mut Producer,
    ident: Ident,
    input: &mut File,
    name: &str,
    progress: &mut Progress,
    watch: &mut ReceiverWatch,
) -> Result<(), Failure> {
    let chunk = tx.stream_chunk();
    loop {
        if let Some(sig) = signals::caught() {
            return Err(Failure::Signal(sig));
        }
        let mut grant = match tx.reserve_timeout(chunk, Some(POLL)) {
            Ok(grant) => grant,
            Err(SendError::Timeout(())) => {
                progress.add(0);
                continue;
            }
            Err(e) => return Err(send_error(ident, &e).into()),
        };
        // One `read(2)` straight into the slots: the kernel writes them, no reference to
        // memory the receiver could touch is made (`RingSliceMut::read_from_fd`).
        match grant.view_mut().read_from_fd(&*input) {
            Ok(0) => return Ok(()), // end of input; the empty grant is discarded
            Ok(n) => {
                grant.commit_len(n);
                progress.add(n as u64);
                watch.check(tx, ident)?;
            }
            // A signal: nothing was read, the grant is discarded; the loop looks at it.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(CliError::new(format!("{name}: {e}")).into()),
        }
    }
}

/// One message per line of the input, without its newline (a last line without a newline is
/// a message too).
fn send_lines(
    tx: &mut Producer,
    ident: Ident,
    input: &mut File,
    name: &str,
    progress: &mut Progress,
    watch: &mut ReceiverWatch,
) -> Result<(), Failure> {
    let max = tx.max_message();
    let mut lines = LineReader::new(max);
    let mut number = 0u64;
    loop {
        if let Some(sig) = signals::caught() {
            return Err(Failure::Signal(sig));
        }
        let line = match lines.next(input) {
            Ok(Some(line)) => line,
            Ok(None) => return Ok(()),
            Err(LineError::Io(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(LineError::Io(e)) => return Err(CliError::new(format!("{name}: {e}")).into()),
            Err(LineError::TooLong) => {
                return Err(CliError::new(format!(
                    "{name}: line {} is longer than the largest message of {ident}, {max} \
                     bytes (use a larger --capacity)",
                    number + 1
                ))
                .into());
            }
        };
        number += 1;
        loop {
            match tx.send_timeout(line, POLL) {
                Ok(()) => break,
                Err(SendError::Timeout(_)) => {
                    if let Some(sig) = signals::caught() {
                        return Err(Failure::Signal(sig));
                    }
                    progress.add(0);
                }
                Err(e) => return Err(send_error(ident, &e).into()),
            }
        }
        progress.add(line.len() as u64 + 1);
        watch.check(tx, ident)?;
    }
}

/// Why [`LineReader::next`] returned no line.
enum LineError {
    /// Reading failed (`Interrupted` included: call again).
    Io(io::Error),
    /// A line longer than the largest message.
    TooLong,
}

/// Splits the input into lines with one buffer of its own, and (unlike `BufRead::read_until`)
/// returns `Interrupted` to the caller so that a signal ends a transfer blocked on input.
struct LineReader {
    buf: Vec<u8>,
    /// Start of the first unreturned byte.
    start: usize,
    /// End of the bytes read.
    end: usize,
    /// Bytes before this are known not to be newlines.
    scanned: usize,
    eof: bool,
    /// The longest line allowed.
    max: usize,
}

impl LineReader {
    fn new(max: usize) -> LineReader {
        LineReader {
            buf: vec![0; LINE_IN_BUF],
            start: 0,
            end: 0,
            scanned: 0,
            eof: false,
            max,
        }
    }

    /// The next line without its newline; `None` at the end of the input.
    fn next(&mut self, input: &mut File) -> Result<Option<&[u8]>, LineError> {
        loop {
            if let Some(i) = self.buf[self.scanned..self.end]
                .iter()
                .position(|&b| b == b'\n')
            {
                let (s, e) = (self.start, self.scanned + i);
                self.start = e + 1;
                self.scanned = self.start;
                if e - s > self.max {
                    return Err(LineError::TooLong);
                }
                return Ok(Some(&self.buf[s..e]));
            }
            self.scanned = self.end;
            if self.end - self.start > self.max {
                return Err(LineError::TooLong);
            }
            if self.eof {
                if self.start < self.end {
                    let s = self.start;
                    self.start = self.end;
                    return Ok(Some(&self.buf[s..self.end]));
                }
                return Ok(None);
            }
            // Make room: move the partial line to the front, grow if it fills the buffer.
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.scanned -= self.start;
                self.start = 0;
            }
            if self.end == self.buf.len() {
                let len = self.buf.len() * 2;
                self.buf.resize(len, 0);
            }
            let n = input
                .read(&mut self.buf[self.end..])
                .map_err(LineError::Io)?;
            if n == 0 {
                self.eof = true;
            }
            self.end += n;
        }
    }
}

/// `shmpipe recv`.
pub fn recv(a: RecvArgs) -> Result<ExitCode, CliError> {
    if a.opts.path.is_none() {
        a.target.required()?;
    }
    let (mut output, name) = open_output(a.output.as_deref())?;
    // A bar would garble output written to the same terminal.
    let bar = !a.opts.no_progress && !output.is_terminal();
    signals::install();
    let ring = open_transfer(&a.target, &a.opts)?;
    lock_if_asked(&ring, a.opts.lock)?;
    let ident = ring.ident();
    let mut rx = claim(&ring, Ring::consumer, Ring::take_over_consumer)?;
    let mut progress = Progress::new(bar, None);
    let result = if a.lines {
        recv_lines(&mut rx, ident, &mut output, &name, &mut progress)
    } else {
        recv_bytes(&mut rx, ident, &mut output, &name, &mut progress)
    };
    // Closing the consumer tells the sender (if it is still sending) that nobody reads.
    drop(rx);
    match result {
        Ok(()) => {
            progress.finish();
            Ok(ExitCode::SUCCESS)
        }
        Err(failure) => {
            progress.abandon();
            remove_if_unjoined(&ring);
            match failure {
                Failure::Signal(sig) => signals::die_of(sig),
                Failure::BrokenPipe => Ok(ExitCode::from(BROKEN_PIPE_STATUS)),
                Failure::Error(e) => Err(e),
            }
        }
    }
}

/// What a receive error means to the user.
fn recv_error(ident: Ident, e: &RecvError) -> Failure {
    Failure::Error(CliError::new(match e {
        RecvError::PeerDied { pid } => format!(
            "{ident}: the sender (pid {pid}) died before closing the ring: the data is incomplete"
        ),
        RecvError::Corrupted(c) => c.to_string(),
        e => format!("{ident}: {e}"),
    }))
}

/// Writes all of `buf`, straight from where it is (ring memory included), giving up on a
/// signal.
fn write_all(out: &mut File, name: &str, mut buf: &[u8]) -> Result<(), Failure> {
    while !buf.is_empty() {
        match out.write(buf) {
            Ok(0) => {
                return Err(CliError::new(format!("{name}: write returned 0")).into());
            }
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                if let Some(sig) = signals::caught() {
                    return Err(Failure::Signal(sig));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Err(Failure::BrokenPipe),
            Err(e) => return Err(CliError::new(format!("{name}: {e}")).into()),
        }
    }
    Ok(())
}

/// [`write_all`] straight from the ring: `write(2)` reads the slots (the kernel copies them,
/// no reference into memory the sender could write is made: `RingSlice::write_to_fd`).
fn write_all_ring(out: &mut File, name: &str, mut msg: RingSlice<'_>) -> Result<(), Failure> {
    while !msg.is_empty() {
        match msg.write_to_fd(&*out) {
            Ok(0) => {
                return Err(CliError::new(format!("{name}: write returned 0")).into());
            }
            Ok(n) => {
                msg = msg
                    .subslice(n, msg.len() - n)
                    .expect("write(2) returns at most the length");
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                if let Some(sig) = signals::caught() {
                    return Err(Failure::Signal(sig));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Err(Failure::BrokenPipe),
            Err(e) => return Err(CliError::new(format!("{name}: {e}")).into()),
        }
    }
    Ok(())
}

/// The byte stream: each message is written out from the ring, then released.
fn recv_bytes(
    rx: &mut Consumer,
    ident: Ident,
    out: &mut File,
    name: &str,
    progress: &mut Progress,
) -> Result<(), Failure> {
    loop {
        if let Some(sig) = signals::caught() {
            return Err(Failure::Signal(sig));
        }
        match rx.read_timeout(Some(POLL)) {
            Ok(msg) => {
                write_all_ring(out, name, msg.view())?;
                progress.add(msg.len() as u64);
            }
            Err(RecvError::Timeout) => progress.add(0),
            Err(RecvError::Disconnected) => return Ok(()),
            Err(e) => return Err(recv_error(ident, &e)),
        }
    }
}

/// Each message followed by a newline. Lines are gathered in a buffer that is written out
/// whenever the ring is empty (so a slow stream shows each line at once) or the buffer fills.
fn recv_lines(
    rx: &mut Consumer,
    ident: Ident,
    out: &mut File,
    name: &str,
    progress: &mut Progress,
) -> Result<(), Failure> {
    let mut buf: Vec<u8> = Vec::with_capacity(LINE_OUT_BUF);
    let put = |buf: &mut Vec<u8>, out: &mut File, msg: RingSlice<'_>| -> Result<(), Failure> {
        if buf.len() + msg.len() >= LINE_OUT_BUF {
            write_all(out, name, buf)?;
            buf.clear();
        }
        if msg.len() >= LINE_OUT_BUF {
            write_all_ring(out, name, msg)?;
        } else {
            msg.append_to(buf);
        }
        buf.push(b'\n');
        Ok(())
    };
    loop {
        if let Some(sig) = signals::caught() {
            return Err(Failure::Signal(sig));
        }
        // Everything already in the ring, without waiting.
        let ended = loop {
            match rx.try_read() {
                Ok(msg) => {
                    put(&mut buf, out, msg.view())?;
                    progress.add(msg.len() as u64 + 1);
                }
                Err(TryRecvError::Empty) => break false,
                Err(TryRecvError::Disconnected) => break true,
                Err(TryRecvError::Corrupted(c)) => {
                    return Err(CliError::new(c.to_string()).into());
                }
                Err(e) => return Err(CliError::new(format!("{ident}: {e}")).into()),
            }
        };
        write_all(out, name, &buf)?;
        buf.clear();
        if ended {
            return Ok(());
        }
        // Then wait for the next message.
        match rx.read_timeout(Some(POLL)) {
            Ok(msg) => {
                put(&mut buf, out, msg.view())?;
                progress.add(msg.len() as u64 + 1);
            }
            Err(RecvError::Timeout) => progress.add(0),
            Err(RecvError::Disconnected) => return Ok(()),
            Err(e) => return Err(recv_error(ident, &e)),
        }
    }
}
