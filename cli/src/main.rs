//! The `shmpipe` command: moves a byte stream (or lines as messages) between two processes
//! through a shmpipe ring, and inspects, creates and removes rings.
//!
//! ```text
//! shmpipe send --key 0x2020 big.iso &          # either side may start first
//! shmpipe recv --key 0x2020 -o copy.iso
//! shmpipe stat                                 # the rings on this machine, ipcs -m style
//! shmpipe gc                                   # remove rings left behind by crashes
//! ```
//!
//! Exit status: 0 on success, 1 on an error (one line on standard error, naming the key), 2 on
//! a usage error.
//!
//! This file holds the argument definitions (clap), the shared pieces of every command (which
//! segment a command is about, error reporting and exit codes), and dispatch to the commands in
//! the modules:
//!
//! - `transfer`: `send` and `recv`, the byte-stream and `--lines` transfers.
//! - `stat`: `stat` (alias `info`), the `ipcs -m` view of shmpipe rings, as a table or JSON.
//! - `admin`: `create`, `rm` and `gc`.
//! - `bench`: `bench`, the cross-process benchmarks against pipes and sockets.
//! - `progress`: the progress bar of long transfers.
//! - `signals`: SIGINT/SIGTERM/SIGHUP during a transfer.
//! - `sysv`: reading `/proc/sysvipc/shm` (finding a segment by key without attaching).

mod admin;
mod bench;
mod load;
mod progress;
mod signals;
mod stat;
mod sysv;
mod transfer;

use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgGroup, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use shmpipe::Key;

/// Examples shown at the end of `shmpipe --help`.
const EXAMPLES: &str = "\
Examples:
  shmpipe send --key 0x2020 big.iso &    # start either side first
  shmpipe recv --key 0x2020 -o copy.iso
  tail -f log | shmpipe send --key 0x2020 --lines    # a server...
  shmpipe recv --key 0x2020 --lines                  # ...and its client
  shmpipe stat              # every shmpipe ring, like ipcs -m
  shmpipe stat --key 0x2020 --json
  shmpipe gc --dry-run      # rings left behind by crashes
  shmpipe completions bash > ~/.local/share/bash-completion/completions/shmpipe
  shmpipe man > ~/.local/share/man/man1/shmpipe.1

Exit status: 0 success, 1 error (one line on stderr), 2 usage error.";

/// The states `stat` prints (shown at the end of `shmpipe stat --help`).
const STAT_STATES: &str = "\
States (the STATE column, and \"state\" in JSON):
  in-use          processes are attached: a transfer in progress, or a side waiting
  pending         nobody attached; messages (or an empty stream) wait for a receiver that may
                  still come; kept by gc
  idle            a persistent ring nobody uses now, closed cleanly; kept until shmpipe rm
  orphan          nobody attached, no side alive, and a side died (or the ring is empty and
                  not persistent); gc removes it
  initialising    its creator is still writing the header
  abandoned-init  its creator died while writing the header; gc removes it
  removing        marked for removal with nobody attached; the kernel frees it now
  other-version   a shmpipe ring of another layout version; left alone
  unreadable      the kernel refused this user a look (permissions); left alone
  no-access       this user may not read the segment (as ipcs -m, it is listed with what the
                  kernel shows); it may or may not be a shmpipe ring
After the state:
  dest            marked for removal: freed when the last process detaches (its key reads 0)
  persistent      stays until shmpipe rm, even when both sides are done
  owner=UID       owned or created by another user: send and recv refuse it unless
                  --accept-owner UID";

/// Move data between processes through a lock-free ring in System V shared memory.
#[derive(Debug, Parser)]
#[command(
    name = "shmpipe",
    version,
    arg_required_else_help = true,
    after_help = EXAMPLES
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Stream a file (or standard input) into a ring, creating it if needed.
    Send(SendArgs),
    /// Stream a ring out to standard output (or a file) until the sender closes it.
    Recv(RecvArgs),
    /// Create a persistent ring that stays until `shmpipe rm`; prints its shmid.
    Create(CreateArgs),
    /// Remove a ring: a segment, or a ring file with --path (refuses what is not a shmpipe
    /// ring).
    Rm(RmArgs),
    /// Remove orphaned shmpipe rings (left by crashes) and nothing else.
    Gc(GcArgs),
    /// Show shmpipe rings: all of them as a table like `ipcs -m`, or one in detail.
    #[command(visible_alias = "info", after_help = STAT_STATES)]
    Stat(StatArgs),
    /// Measure shmpipe against pipes and sockets between two processes (about 20 s).
    ///
    /// Round-trip times and streaming throughput for each transport and message size, as a
    /// table with the ratios to a pipe, or as JSON.
    Bench(bench::BenchArgs),
    /// Print a completion script for SHELL to standard output.
    ///
    /// Install it where the shell looks, e.g. bash:
    /// `shmpipe completions bash > ~/.local/share/bash-completion/completions/shmpipe`;
    /// zsh: `shmpipe completions zsh > ~/.zfunc/_shmpipe` (a directory in $fpath);
    /// fish: `shmpipe completions fish > ~/.config/fish/completions/shmpipe.fish`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) to standard output.
    ///
    /// Install it with `shmpipe man > ~/.local/share/man/man1/shmpipe.1`, or read it at once
    /// with `shmpipe man | man -l -`.
    Man,
    /// Carry a ring's stream to another machine over zenoh: `bridge out` publishes a local
    /// ring, `bridge in` delivers into one (built with the feature `bridge`).
    #[cfg(feature = "bridge")]
    Bridge(shmpipe_bridge::cli::BridgeArgs),
    /// The other process of `shmpipe bench` (internal).
    #[command(name = bench::PEER_SUBCOMMAND, hide = true)]
    BenchPeer(bench::PeerArgs),
}

/// Which segment: by key, by `ftok`, or by shmid. Every command puts these options in a group
/// named `target`; commands that need one make the group required.
#[derive(Debug, Args, Clone)]
#[group(skip)]
pub struct TargetArgs {
    /// Key of the ring: hex (0x2020), decimal (8224), or "private" (a new ring reachable
    /// only by its shmid). Key 0 is IPC_PRIVATE and is refused: say "private".
    #[arg(long, short = 'k', value_name = "KEY", group = "target", value_parser = parse_key)]
    pub key: Option<Key>,
    /// Derive the key from an existing file, as ftok(3) does (with --proj-id).
    #[arg(long, value_name = "PATH", group = "target", requires = "proj_id")]
    pub ftok: Option<PathBuf>,
    /// Project id for --ftok: 1 to 255, or one character such as 'a'.
    #[arg(long, value_name = "N", requires = "ftok", value_parser = parse_proj_id)]
    pub proj_id: Option<u8>,
    /// The segment's id (the shmid `ipcs -m` and `shmpipe stat` show).
    #[arg(long, value_name = "SHMID", group = "target")]
    pub id: Option<i32>,
}

/// The shape and permissions of a ring that a command creates.
#[derive(Debug, Args, Clone)]
pub struct ShapeArgs {
    /// Bytes of the ring's buffer if this command creates it: a power of two from one slot to
    /// 2G, with an optional K, M or G suffix (binary). [default: 4M]
    #[arg(long, value_name = "SIZE", value_parser = parse_capacity)]
    pub capacity: Option<u64>,
    /// Bytes per slot: a power of two from 8 to 1M; a message takes whole slots. [default: 64]
    #[arg(long, value_name = "SIZE", value_parser = parse_slot_size)]
    pub slot_size: Option<u64>,
    /// Permission bits (octal) of a ring this command creates; also the widest mode accepted
    /// on an existing ring of this user (a wider one is refused: others may be reading it).
    #[arg(long, value_name = "MODE", default_value = "0600", value_parser = parse_mode)]
    pub mode: u32,
    /// Back a ring this command creates with huge pages (SHM_HUGETLB); fails, never falls back,
    /// if none are free (see /proc/sys/vm/nr_hugepages).
    #[arg(long)]
    pub huge_pages: bool,
    /// Accept an existing ring on huge pages made by another process (refused by default: its
    /// pages could vanish under the mapping). Every page is touched at attach, so a shortage
    /// is an error there; implied by --huge-pages.
    #[arg(long)]
    pub accept_huge_pages: bool,
}

/// `shmpipe send`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").required(true)))]
pub struct SendArgs {
    /// Which ring.
    #[command(flatten)]
    pub target: TargetArgs,
    /// The file to send; standard input if absent or "-".
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Send each line (without its newline) as one message, for a `recv --lines` or a program
    /// reading messages.
    #[arg(long, short = 'l')]
    pub lines: bool,
    /// Ring shape, lifetime and progress display.
    #[command(flatten)]
    pub opts: TransferOpts,
}

/// What `send` and `recv` share: the ring they may create, and the progress bar.
#[derive(Debug, Args)]
pub struct TransferOpts {
    /// Ring shape, if this side creates it.
    #[command(flatten)]
    pub shape: ShapeArgs,
    /// Use a ring in a memory-mapped file at PATH (e.g. /dev/shm/NAME, or a file on disk)
    /// instead of a SysV segment: created if absent, unlinked once both sides are in unless
    /// --persist.
    #[arg(long, value_name = "PATH", group = "target")]
    pub path: Option<PathBuf>,
    /// Keep the ring after both sides are done (if this side creates it).
    #[arg(long)]
    pub persist: bool,
    /// Pre-fault the ring and lock it in RAM (mlock) for this side; fails if RLIMIT_MEMLOCK
    /// (ulimit -l) is too small and the process lacks CAP_IPC_LOCK.
    #[arg(long)]
    pub lock: bool,
    /// Never show a progress bar (shown on a terminal for transfers over half a second).
    #[arg(long, short = 'q')]
    pub no_progress: bool,
    /// Give up (exit 1) after waiting this long at one time: for the other side to come, for
    /// room in the ring (send) or for the next message (recv). A number with a unit: 250ms,
    /// 5s, 2m, 1h (a bare number is seconds). Default: wait for ever.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<std::time::Duration>,
    /// Whose rings to trust besides our own.
    #[command(flatten)]
    pub owners: OwnerArgs,
}

/// Which users' rings a command accepts besides its own (root included: by default a ring
/// another user owns or created is refused, since they could read what goes through it).
#[derive(Debug, Args, Clone, Default)]
pub struct OwnerArgs {
    /// Accept a ring owned or created by this user id (repeat for several), with whatever mode
    /// its owner gave it; for `gc`, also remove that user's stale rings.
    #[arg(long = "accept-owner", value_name = "UID")]
    pub accept_owner: Vec<u32>,
}

impl OwnerArgs {
    /// `config` accepting these owners.
    pub fn apply(&self, config: shmpipe::RingConfig) -> shmpipe::RingConfig {
        self.accept_owner
            .iter()
            .fold(config, |c, &uid| c.accept_owner(uid))
    }
}

/// `shmpipe recv`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").required(true)))]
pub struct RecvArgs {
    /// Which ring.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Write to this file (created or truncated) instead of standard output.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Write each message followed by a newline (the other side of `send --lines`).
    #[arg(long, short = 'l')]
    pub lines: bool,
    /// Ring shape, lifetime and progress display.
    #[command(flatten)]
    pub opts: TransferOpts,
}

/// `shmpipe create`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").required(true)))]
pub struct CreateArgs {
    /// Which key (--id does not apply: the kernel chooses the shmid).
    #[command(flatten)]
    pub target: TargetArgs,
    /// Ring shape.
    #[command(flatten)]
    pub shape: ShapeArgs,
}

/// `shmpipe rm`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").required(true)))]
pub struct RmArgs {
    /// Which ring.
    #[command(flatten)]
    pub target: TargetArgs,
    /// A ring in a file (see `send --path`): unlinks it, refusing a file that is not a ring.
    #[arg(long, value_name = "PATH", group = "target")]
    pub path: Option<PathBuf>,
    /// With --path: remove the file even though live processes hold the ring's roles (they
    /// carry on with it; nobody new finds it).
    #[arg(long, requires = "path")]
    pub force: bool,
}

/// `shmpipe gc`.
#[derive(Debug, Args)]
pub struct GcArgs {
    /// Only this ring (default: every shmpipe ring on the system).
    #[command(flatten)]
    pub target: TargetArgs,
    /// Say what would be removed, and remove nothing.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Also list the rings that are kept, and why.
    #[arg(long, short = 'v')]
    pub verbose: bool,
    /// Whose stale rings to remove besides our own.
    #[command(flatten)]
    pub owners: OwnerArgs,
}

/// `shmpipe stat`.
#[derive(Debug, Args)]
pub struct StatArgs {
    /// One ring in detail (default: every shmpipe ring, one line each).
    #[command(flatten)]
    pub target: TargetArgs,
    /// A ring in a file (see `send --path`) instead of a segment.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["key", "ftok", "id"])]
    pub path: Option<PathBuf>,
    /// JSON: an array of rings, or one object with --key/--ftok/--id/--path.
    #[arg(long)]
    pub json: bool,
}

/// Which segment a command is about, once `--ftok` is resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// By key (a number, or `Key::Private` for a new private ring).
    Key(Key),
    /// By shmid.
    Id(i32),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Key(k) => write!(f, "key {k}"),
            Target::Id(id) => write!(f, "shmid {id}"),
        }
    }
}

impl TargetArgs {
    /// The target given, if any (`ftok` is called here).
    pub fn resolve(&self) -> Result<Option<Target>, CliError> {
        if let Some(k) = self.key {
            return Ok(Some(Target::Key(k)));
        }
        if let Some(id) = self.id {
            return Ok(Some(Target::Id(id)));
        }
        if let Some(path) = &self.ftok {
            // clap makes --proj-id required with --ftok.
            let proj = self.proj_id.unwrap_or(1);
            return Ok(Some(Target::Key(Key::ftok(path, proj)?)));
        }
        Ok(None)
    }

    /// The target of a command that requires one (clap enforces that one is given).
    pub fn required(&self) -> Result<Target, CliError> {
        self.resolve()?.ok_or_else(|| {
            CliError::usage("one of --key, --ftok PATH --proj-id N or --id SHMID is required")
        })
    }
}

/// An error to report: one line on standard error, then exit with `code`.
#[derive(Debug)]
pub struct CliError {
    /// Exit status: 1 for errors, 2 for usage errors.
    pub code: u8,
    /// The message, without the "shmpipe: " prefix and without a newline.
    pub msg: String,
}

impl CliError {
    /// An error (exit status 1).
    pub fn new(msg: impl Into<String>) -> CliError {
        CliError {
            code: 1,
            msg: msg.into(),
        }
    }

    /// A usage error (exit status 2).
    pub fn usage(msg: impl Into<String>) -> CliError {
        CliError {
            code: 2,
            msg: msg.into(),
        }
    }
}

impl From<shmpipe::Error> for CliError {
    fn from(e: shmpipe::Error) -> CliError {
        match e {
            shmpipe::Error::ForeignOwner {
                ident,
                owner_uid,
                creator_uid,
                mode,
                expected_uid,
                allowed_mode,
            } => CliError::new(foreign_owner(
                ident,
                owner_uid,
                creator_uid,
                mode,
                expected_uid,
                allowed_mode,
            )),
            // The library's messages name the key and shmid ("key 0x00002020 (shmid 7): ...").
            e => CliError::new(e.to_string()),
        }
    }
}

/// A ring that is not ours, in this command's words: who owns it, its mode, and the flag that
/// would accept it.
fn foreign_owner(
    ident: shmpipe::Ident,
    owner: u32,
    creator: Option<u32>,
    mode: u32,
    me: u32,
    allowed: u32,
) -> String {
    let created = match creator {
        Some(c) if c != owner => format!(" (created by uid {c})"),
        _ => String::new(),
    };
    let mut flags: Vec<String> = [Some(owner), creator]
        .into_iter()
        .flatten()
        .filter(|&uid| uid != me)
        .map(|uid| format!("--accept-owner {uid}"))
        .collect();
    flags.dedup();
    if flags.is_empty() {
        format!(
            "{ident}: owned by uid {owner} with mode {mode:04o}, which lets others in beyond \
             --mode {allowed:04o}: refused; --mode {:04o} accepts it",
            mode | allowed
        )
    } else {
        format!(
            "{ident}: owned by uid {owner}{created} with mode {mode:04o}, not by this user \
             (uid {me}): refused, they could read what goes through it; {} accepts it",
            flags.join(" ")
        )
    }
}

/// Runs the command line and returns the exit status.
fn main() -> ExitCode {
    // clap prints usage errors itself and exits with status 2 (0 for --help and --version).
    let matches = Cli::command().get_matches();
    let name = matches.subcommand_name().unwrap_or_default().to_owned();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let result = match cli.command {
        Command::Send(a) => transfer::send(a),
        Command::Recv(a) => transfer::recv(a),
        Command::Create(a) => admin::create(a),
        Command::Rm(a) => admin::rm(a),
        Command::Gc(a) => admin::gc(a),
        Command::Stat(a) => stat::stat(a),
        Command::Bench(a) => bench::bench(a),
        Command::BenchPeer(a) => bench::peer(a),
        #[cfg(feature = "bridge")]
        Command::Bridge(a) => Ok(shmpipe_bridge::cli::run(a)),
        Command::Completions { shell } => generated(|out| {
            clap_complete::generate(shell, &mut Cli::command(), "shmpipe", out);
            Ok(())
        }),
        Command::Man => generated(|out| clap_mangen::Man::new(Cli::command()).render(out)),
    };
    match result {
        Ok(code) => code,
        // A usage error found after parsing (arguments that contradict each other) looks and
        // exits like one of clap's: "error: ...", the usage line, status 2.
        Err(e) if e.code == 2 => {
            let mut cli = Cli::command();
            let cmd = cli.find_subcommand_mut(&name).expect("a subcommand ran");
            std::mem::take(cmd)
                .bin_name(format!("shmpipe {name}"))
                .error(clap::error::ErrorKind::ValueValidation, e.msg)
                .exit()
        }
        Err(e) => {
            // One line, whatever the message holds.
            let msg = e.msg.replace('\n', " ");
            eprintln!("shmpipe: {msg}");
            ExitCode::from(e.code)
        }
    }
}

/// Writes what `write` generates (a completion script, the man page) to standard output.
fn generated(
    write: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
) -> Result<ExitCode, CliError> {
    use std::io::Write as _;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    write(&mut out)
        .and_then(|()| out.flush())
        .map_err(|e| CliError::new(format!("standard output: {e}")))?;
    Ok(ExitCode::SUCCESS)
}

/// Parses `--key`, refusing 0: it is `IPC_PRIVATE`, a new ring no one finds by key, which a
/// number never means by accident.
fn parse_key(s: &str) -> Result<Key, String> {
    let key: Key = s
        .parse()
        .map_err(|e: shmpipe::segment::ParseKeyError| e.to_string())?;
    let named = s.trim().eq_ignore_ascii_case("private") || s.trim() == "IPC_PRIVATE";
    if key == Key::Private && !named {
        return Err(format!(
            "key {s} is IPC_PRIVATE, a new ring nobody can find by key: use --key private \
             for that (the other side then joins with --id SHMID)"
        ));
    }
    Ok(key)
}

/// The library's limits on a ring's shape: a slot holds at least one record header (8 bytes)
/// and at most 1 MiB; the slot array is at most 2 GiB.
const MIN_SLOT_SIZE: u64 = shmpipe::RECORD_HEADER as u64;
/// See [`MIN_SLOT_SIZE`].
const MAX_SLOT_SIZE: u64 = 1 << 20;
/// See [`MIN_SLOT_SIZE`].
const MAX_CAPACITY: u64 = 1 << 31;

/// Parses `--slot-size`: a size from [`MIN_SLOT_SIZE`] to [`MAX_SLOT_SIZE`].
fn parse_slot_size(s: &str) -> Result<u64, String> {
    parse_size_in(s, MIN_SLOT_SIZE, MAX_SLOT_SIZE)
}

/// Parses `--capacity`: a size up to [`MAX_CAPACITY`] (at least one slot: checked with the
/// slot size).
fn parse_capacity(s: &str) -> Result<u64, String> {
    parse_size_in(s, MIN_SLOT_SIZE, MAX_CAPACITY)
}

/// Parses a size from `min` to `max`.
fn parse_size_in(s: &str, min: u64, max: u64) -> Result<u64, String> {
    let n = parse_size(s)?;
    if !(min..=max).contains(&n) {
        return Err(format!(
            "{s:?} is out of range: from {} to {}",
            show_size(min),
            show_size(max)
        ));
    }
    Ok(n)
}

/// A power-of-two size as `parse_size` reads it: `64`, `64K`, `2G`.
fn show_size(n: u64) -> String {
    match n.trailing_zeros() {
        30.. => format!("{}G", n >> 30),
        20.. => format!("{}M", n >> 20),
        10.. => format!("{}K", n >> 10),
        _ => n.to_string(),
    }
}

/// Parses a size: a number of bytes with an optional binary suffix (K, M, G, T; "KiB", "k",
/// "KB" all mean 1024), which must be a power of two.
fn parse_size(s: &str) -> Result<u64, String> {
    let (n, shift) = size_parts(s, 40, "K, M or G", "65536, 64K, 4M")?;
    let bytes = n
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("{s:?} is out of range"))?;
    if !bytes.is_power_of_two() {
        return Err(format!("{s:?} is not a power of two"));
    }
    Ok(bytes)
}

/// A size's number and the power of two its suffix stands for: "4M" is (4, 20), a bare number
/// (or "B") 0; "KiB", "k" and "KB" all mean 1024. Suffixes beyond `2^max_shift` are refused;
/// `units` names the ones to use and `examples` a few sizes, in the errors.
fn size_parts(s: &str, max_shift: u32, units: &str, examples: &str) -> Result<(u64, u32), String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(digits);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. {examples})"))?;
    let shift = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => u32::MAX,
    };
    if shift > max_shift {
        return Err(format!(
            "{s:?}: unknown size suffix {suffix:?} (use {units})"
        ));
    }
    Ok((n, shift))
}

/// Parses a duration: a non-negative number (decimals allowed) with a unit `ms`, `s`, `m` or
/// `h`; a bare number is seconds.
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    let end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(end);
    let bad = || format!("{s:?} is not a duration (e.g. 250ms, 5s, 2m)");
    let n: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(bad()),
    };
    std::time::Duration::try_from_secs_f64(secs).map_err(|_| bad())
}

/// Parses permission bits in octal: `600`, `0600`, `0o600`.
fn parse_mode(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let digits = t.strip_prefix("0o").unwrap_or(t);
    match u32::from_str_radix(digits, 8) {
        Ok(m) if m <= 0o777 => Ok(m),
        _ => Err(format!("{s:?} is not an octal mode such as 0600 or 0660")),
    }
}

/// Parses an ftok project id: a number from 1 to 255, or a single ASCII character.
fn parse_proj_id(s: &str) -> Result<u8, String> {
    if let Ok(n) = s.parse::<u8>() {
        if n != 0 {
            return Ok(n);
        }
    }
    let mut chars = s.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if c.is_ascii() && c != '\0' && !c.is_ascii_digit() => Ok(c as u8),
        _ => Err(format!(
            "{s:?} is not a project id (1 to 255, or one character such as a)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_parse() {
        use std::time::Duration;
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        for bad in ["", "soon", "5 s", "-1s", "1e400", "5d", "ms"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sizes_modes_and_project_ids_parse() {
        assert_eq!(parse_size("4M"), Ok(4 << 20));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert!(parse_size("3M").is_err());
        assert!(parse_size("4X").is_err());
        assert!(parse_size("").is_err());
        assert_eq!(parse_mode("0600"), Ok(0o600));
        assert_eq!(parse_mode("660"), Ok(0o660));
        assert_eq!(parse_mode("0o644"), Ok(0o644));
        assert!(parse_mode("0800").is_err());
        assert!(parse_mode("01777").is_err());
        assert_eq!(parse_proj_id("7"), Ok(7));
        assert_eq!(parse_proj_id("a"), Ok(b'a'));
        assert!(parse_proj_id("0").is_err());
        assert!(parse_proj_id("256").is_err());
        assert!(parse_proj_id("ab").is_err());
    }

    /// The limits `--help` states are the library's: just inside is a ring, just outside is
    /// refused by the library too (so the parser refuses nothing the library would make).
    #[test]
    fn shape_limits_are_the_librarys() {
        use shmpipe::{Error, Heap, Ring, RingConfig};
        let ring = |slot: u64, count: u64| {
            let cfg = RingConfig::new()
                .slot_size(slot as u32)
                .slot_count(count as u32);
            Ring::create(Heap, &cfg)
        };
        assert!(ring(MAX_SLOT_SIZE, 1).is_ok());
        assert!(ring(MIN_SLOT_SIZE, 1).is_ok());
        for (slot, count) in [
            (MAX_SLOT_SIZE * 2, 1),
            (MIN_SLOT_SIZE / 2, 1),
            (MAX_SLOT_SIZE, MAX_CAPACITY / MAX_SLOT_SIZE * 2),
        ] {
            let e = ring(slot, count).err();
            assert!(
                matches!(e, Some(Error::InvalidConfig { .. })),
                "{slot} x {count}: {e:?}"
            );
        }
        assert_eq!(parse_capacity("2G"), Ok(MAX_CAPACITY));
        assert!(parse_capacity("4G").is_err());
        assert_eq!(parse_slot_size("8"), Ok(8));
        assert!(parse_slot_size("4").is_err() && parse_slot_size("2M").is_err());
        assert!(parse_key("0").is_err() && parse_key("0x0").is_err());
        assert_eq!(parse_key("private"), Ok(Key::Private));
    }

    #[test]
    fn a_target_is_required_where_it_must_be() {
        assert!(Cli::try_parse_from(["shmpipe", "send"]).is_err());
        assert!(Cli::try_parse_from(["shmpipe", "send", "--key", "0x2020", "--id", "5"]).is_err());
        assert!(Cli::try_parse_from(["shmpipe", "send", "--ftok", "/tmp"]).is_err());
        let ok = Cli::try_parse_from(["shmpipe", "recv", "--ftok", "/tmp", "--proj-id", "a"]);
        assert!(ok.is_ok());
        assert!(Cli::try_parse_from(["shmpipe", "stat"]).is_ok());
        assert!(Cli::try_parse_from(["shmpipe", "gc", "--dry-run"]).is_ok());
        assert!(Cli::try_parse_from(["shmpipe", "info", "--key", "8224"]).is_ok());
    }
}
