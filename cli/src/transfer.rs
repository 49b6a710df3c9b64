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
    Consumer, Error, Ident, Key, Liveness, Producer, RecvError, Ring, RingConfig, RingSlice,
    SendError, Shmid, TryRecvError,
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

/// How long a side waits without progress before it says, once, what it waits for (only
/// while the other side has not come yet: a slow peer is no news).
const NOTE_AFTER: Duration = Duration::from_secs(1);

/// A side's waits without progress: it tells the user, once, what it waits for when the other
/// side has not come yet, and gives up after `--timeout`.
struct Stall {
    since: Option<Instant>,
    noted: bool,
    timeout: Option<Duration>,
}

impl Stall {
    fn new(timeout: Option<Duration>) -> Stall {
        Stall {
            since: None,
            noted: false,
            timeout,
        }
    }

    /// Something moved: the next wait starts afresh.
    fn progress(&mut self) {
        self.since = None;
    }

    /// After a wait that brought nothing. `come` is whether the other side has ever claimed
    /// its role; `waiting_for` says what we wait for in either case.
    fn waited(
        &mut self,
        ident: Ident,
        come: bool,
        waiting_for: impl Fn(bool) -> String,
    ) -> Result<(), Failure> {
        let now = Instant::now();
        let waited = now.saturating_duration_since(*self.since.get_or_insert(now));
        if !come && !self.noted && waited >= NOTE_AFTER {
            self.noted = true;
            eprintln!("shmpipe: {} on {ident}", waiting_for(false));
        }
        match self.timeout {
            Some(t) if waited >= t => Err(CliError::new(format!(
                "{ident}: timed out after {} {}",
                show_duration(t),
                waiting_for(come)
            ))
            .into()),
            _ => Ok(()),
        }
    }
}

/// A duration as the user would write it for `--timeout`.
fn show_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// What `recv` waits for.
fn recv_waits_for(come: bool) -> String {
    if come {
        "waiting for the next message from the sender".into()
    } else {
        "waiting for a producer (none has claimed the ring yet)".into()
    }
}

/// What `send` waits for (only when the ring is full).
fn send_waits_for(come: bool) -> String {
    if come {
        "waiting for room in the ring (the receiver does not read)".into()
    } else {
        "waiting for a receiver (none has claimed the ring yet, and the ring is full)".into()
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
        let cfg = RingConfig::new()
            .slot_size(slot_size)
            .slot_count(slot_count)
            .mode(self.mode)
            .persistent(persistent)
            .huge_pages(self.huge_pages)
            .accept_huge_pages(self.accept_huge_pages);
        // The CLI's default shape is for creating: an existing ring of any shape is joined.
        Ok(if self.explicit() {
            cfg
        } else {
            cfg.join_any_shape()
        })
    }
}

/// Opens the ring a transfer uses, creating it if needed. Without an explicit shape, an
/// existing ring of any shape is used as it is.
fn open_ring(target: Target, shape: &ShapeArgs, cfg: &RingConfig) -> Result<Ring, CliError> {
    match target {
        Target::Id(id) => Ok(Ring::open(Shmid(id), cfg)?),
        Target::Key(Key::Private) => {
            let ring = Ring::create(Key::Private, cfg)?;
            let id = ring.shmid().unwrap_or(-1);
            eprintln!(
                "shmpipe: created private ring shmid {id}; the other side joins with --id {id}"
            );
            Ok(ring)
        }
        Target::Key(key) => match Ring::open_or_create(key, cfg) {
            Err(Error::ConfigMismatch { .. }) if !shape.explicit() => Ok(Ring::open(key, cfg)?),
            other => Ok(other?),
        },
    }
}

/// Opens the ring of a transfer: the file of `--path`, or the segment of the target options.
fn open_transfer(target: &TargetArgs, opts: &TransferOpts) -> Result<Ring, CliError> {
    let cfg = opts.owners.apply(opts.shape.config(opts.persist)?);
    let Some(path) = &opts.path else {
        return open_ring(target.required()?, &opts.shape, &cfg);
    };
    match Ring::open_or_create(path, &cfg) {
        Err(Error::ConfigMismatch { .. }) if !opts.shape.explicit() => Ok(Ring::open(path, &cfg)?),
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
            holder: Liveness::Dead,
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
    let mut stall = Stall::new(a.opts.timeout);
    let mut side = Side {
        ident,
        progress: &mut progress,
        watch: &mut watch,
        stall: &mut stall,
    };
    let result = if a.lines {
        send_lines(&mut tx, &mut side, &mut input, &name)
    } else {
        send_bytes(&mut tx, &mut side, &mut input, &name)
    };
    match result {
        // Closes the ring: end of stream for the receiver. A close that fails (our owner word
        // was rewritten by another process) is not a clean end, and must not exit 0.
        Ok(()) => match tx.close() {
            Ok(()) => {
                progress.finish();
                Ok(ExitCode::SUCCESS)
            }
            Err(c) => {
                progress.abandon();
                remove_if_unjoined(&ring);
                Err(CliError::new(c.to_string()))
            }
        },
        Err(failure) => {
            let so_far = progress.so_far();
            progress.abandon();
            remove_if_unjoined(&ring);
            // Never close the ring after a failure: the receiver would take the truncated
            // stream for a complete one. Keeping the role until we exit makes it a dead sender.
            std::mem::forget(tx);
            match failure {
                Failure::Signal(sig) => interrupted(sig, ident, &so_far, "sent"),
                Failure::BrokenPipe => Ok(ExitCode::from(BROKEN_PIPE_STATUS)),
                Failure::Error(e) => Err(e),
            }
        }
    }
}

/// A transfer ended by a signal (the progress bar already cleared): one line saying where it
/// stopped, then the process ends by the signal (a shell reports 128 + its number, 130 for
/// Ctrl-C).
fn interrupted(sig: libc::c_int, ident: Ident, so_far: &str, verb: &str) -> ! {
    eprintln!(
        "shmpipe: {ident}: interrupted by {} after {so_far} {verb}",
        signals::name(sig)
    );
    signals::die_of(sig)
}

/// What a send error means to the user.
fn send_error(ident: Ident, e: &SendError) -> CliError {
    CliError::new(match e {
        SendError::Disconnected => {
            format!("{ident}: the receiver closed the ring before the end of the input")
        }
        SendError::PeerDied { pid, .. } => format!("{ident}: the receiver (pid {pid}) died"),
        SendError::Corrupted(c) => c.to_string(),
        SendError::WrongProcess(w) => w.to_string(),
        SendError::Timeout => format!("{ident}: timed out"),
        SendError::TooLarge { len, max } => {
            format!("{ident}: a message of {len} bytes exceeds the ring's largest, {max} bytes")
        }
        e => format!("{ident}: {e}"),
    })
}

/// What a sending loop carries besides the producer and its input.
struct Side<'a> {
    ident: Ident,
    progress: &'a mut Progress,
    watch: &'a mut ReceiverWatch,
    stall: &'a mut Stall,
}

impl Side<'_> {
    /// A wait for room ran out its poll interval.
    fn waited(&mut self, tx: &Producer) -> Result<(), Failure> {
        self.progress.add(0);
        self.stall
            .waited(self.ident, tx.peer_has_come(), send_waits_for)
    }
}

/// The byte stream: each `read` of the input goes straight into reserved ring memory and is
/// committed as one message.
fn send_bytes(
    tx: &mut Producer,
    side: &mut Side<'_>,
    input: &mut File,
    name: &str,
) -> Result<(), Failure> {
    let ident = side.ident;
    let chunk = tx.stream_chunk();
    loop {
        if let Some(sig) = signals::caught() {
            return Err(Failure::Signal(sig));
        }
        let mut grant = match tx.reserve_timeout(chunk, POLL) {
            Ok(grant) => grant,
            Err(SendError::Timeout) => {
                side.waited(tx)?;
                continue;
            }
            Err(e) => return Err(send_error(ident, &e).into()),
        };
        side.stall.progress();
        // One `read(2)` straight into the slots: the kernel writes them, no reference to
        // memory the receiver could touch is made (`RingSliceMut::read_from_fd`).
        match grant.view_mut().read_from_fd(&*input) {
            Ok(0) => return Ok(()), // end of input; the empty grant is discarded
            Ok(n) => {
                grant.commit_len(n);
                side.progress.add(n as u64);
                side.watch.check(tx, ident)?;
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
    side: &mut Side<'_>,
    input: &mut File,
    name: &str,
) -> Result<(), Failure> {
    let ident = side.ident;
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
                Err(SendError::Timeout) => {
                    if let Some(sig) = signals::caught() {
                        return Err(Failure::Signal(sig));
                    }
                    side.waited(tx)?;
                }
                Err(e) => return Err(send_error(ident, &e).into()),
            }
        }
        side.stall.progress();
        side.progress.add_message(line.len() as u64 + 1);
        side.watch.check(tx, ident)?;
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
    let mut stall = Stall::new(a.opts.timeout);
    let result = if a.lines {
        recv_lines(
            &mut rx,
            ident,
            &mut output,
            &name,
            &mut progress,
            &mut stall,
        )
    } else {
        recv_bytes(
            &mut rx,
            ident,
            &mut output,
            &name,
            &mut progress,
            &mut stall,
        )
    };
    // Closing the consumer tells the sender (if it is still sending) that nobody reads. After
    // a clean end of stream, a close that fails (our owner word was rewritten by another
    // process) makes the transfer fail: what we wrote may not be what was sent.
    let closed = rx.close();
    let result = match (result, closed) {
        (Ok(()), Err(c)) => Err(Failure::Error(CliError::new(c.to_string()))),
        (result, _) => result,
    };
    match result {
        Ok(()) => {
            progress.finish();
            Ok(ExitCode::SUCCESS)
        }
        Err(failure) => {
            let so_far = progress.so_far();
            progress.abandon();
            remove_if_unjoined(&ring);
            match failure {
                Failure::Signal(sig) => interrupted(sig, ident, &so_far, "received"),
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

/// Writes all of `buf` (private memory), giving up on a signal.
fn write_all(out: &mut File, name: &str, buf: &[u8]) -> Result<(), Failure> {
    write_fully(name, buf.len(), |done| out.write(&buf[done..]))
}

/// [`write_all`] straight from the ring: `write(2)` reads the slots (the kernel copies them,
/// no reference into memory the sender could write is made: `RingSlice::write_to_fd`).
fn write_all_ring(out: &mut File, name: &str, msg: RingSlice<'_>) -> Result<(), Failure> {
    write_fully(name, msg.len(), |done| {
        msg.subslice(done, msg.len() - done)
            .expect("write(2) returns at most the length")
            .write_to_fd(&*out)
    })
}

/// Calls `write(done)` (which writes from byte `done` on) until `len` bytes are written,
/// retrying after `EINTR` unless a signal asks to stop.
fn write_fully(
    name: &str,
    len: usize,
    mut write: impl FnMut(usize) -> io::Result<usize>,
) -> Result<(), Failure> {
    let mut done = 0;
    while done < len {
        match write(done) {
            Ok(0) => {
                return Err(CliError::new(format!("{name}: write returned 0")).into());
            }
            Ok(n) => done += n,
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
    stall: &mut Stall,
) -> Result<(), Failure> {
    loop {
        if let Some(sig) = signals::caught() {
            return Err(Failure::Signal(sig));
        }
        let waited = match rx.lend_timeout(POLL) {
            Ok(msg) => {
                stall.progress();
                write_all_ring(out, name, msg.view())?;
                progress.add(msg.len() as u64);
                false
            }
            Err(RecvError::Timeout) => true,
            Err(RecvError::Disconnected) => return Ok(()),
            Err(e) => return Err(recv_error(ident, &e)),
        };
        if waited {
            progress.add(0);
            stall.waited(ident, rx.peer_has_come(), recv_waits_for)?;
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
    stall: &mut Stall,
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
            match rx.try_lend() {
                Ok(msg) => {
                    stall.progress();
                    put(&mut buf, out, msg.view())?;
                    progress.add_message(msg.len() as u64 + 1);
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
        let waited = match rx.lend_timeout(POLL) {
            Ok(msg) => {
                stall.progress();
                put(&mut buf, out, msg.view())?;
                progress.add_message(msg.len() as u64 + 1);
                false
            }
            Err(RecvError::Timeout) => true,
            Err(RecvError::Disconnected) => return Ok(()),
            Err(e) => return Err(recv_error(ident, &e)),
        };
        if waited {
            progress.add(0);
            stall.waited(ident, rx.peer_has_come(), recv_waits_for)?;
        }
    }
}
