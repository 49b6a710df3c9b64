//! `shmpipe bridge out|in` (and the `shmpipe-bridge` binary): the arguments and what they run.
//! The `shmpipe` command embeds [`BridgeArgs`] behind its feature `bridge`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgGroup, Args, Subcommand};
use shmpipe::{Key, Ring, RingConfig};

use crate::{
    BridgeError, InTarget, OutOptions, Summary, ZenohOptions, bridge_in, bridge_out_with, lease_of,
};

/// `bridge`: carry a ring's stream over zenoh to another machine.
#[derive(Debug, Args)]
pub struct BridgeArgs {
    /// Which direction.
    #[command(subcommand)]
    pub command: BridgeCommand,
}

/// The two ends of a bridge.
#[derive(Debug, Subcommand)]
pub enum BridgeCommand {
    /// Take the consumer role of a local ring and publish every message on a zenoh key
    /// expression, until the ring's producer closes it.
    Out(OutArgs),
    /// Subscribe to a zenoh key expression and deliver the stream into a local ring as its
    /// producer (the ring is created with the stream's shape if missing).
    In(InArgs),
}

/// `bridge out`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("ring").required(true)))]
pub struct OutArgs {
    /// The local ring.
    #[command(flatten)]
    pub ring: RingArgs,
    /// The zenoh key expression to publish on, e.g. demo/ticks.
    #[arg(long, value_name = "KEYEXPR")]
    pub to: String,
    /// zenoh's settings.
    #[command(flatten)]
    pub zenoh: ZenohArgs,
}

/// `bridge in`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("ring").required(true)))]
pub struct InArgs {
    /// The zenoh key expression a `bridge out` publishes on.
    #[arg(long, value_name = "KEYEXPR")]
    pub from: String,
    /// The local ring.
    #[command(flatten)]
    pub ring: RingArgs,
    /// zenoh's settings.
    #[command(flatten)]
    pub zenoh: ZenohArgs,
}

/// Which local ring: a SysV key or a ring file.
#[derive(Debug, Args)]
#[group(skip)]
pub struct RingArgs {
    /// Key of a SysV ring: hex (0x2020) or decimal.
    #[arg(long, short = 'k', value_name = "KEY", group = "ring", value_parser = parse_key)]
    pub key: Option<Key>,
    /// A ring in a memory-mapped file at PATH (e.g. /dev/shm/NAME).
    #[arg(long, value_name = "PATH", group = "ring")]
    pub path: Option<PathBuf>,
    /// Accept a ring owned or created by this user id (repeat for several).
    #[arg(long = "accept-owner", value_name = "UID")]
    pub accept_owner: Vec<u32>,
}

impl RingArgs {
    fn config(&self) -> RingConfig {
        self.accept_owner
            .iter()
            .fold(RingConfig::new(), |c, &uid| c.accept_owner(uid))
    }
}

/// zenoh's usual options.
#[derive(Debug, Args)]
pub struct ZenohArgs {
    /// A zenoh configuration file (JSON5), as zenohd and zenoh's tools take; the options below
    /// apply on top of it.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Endpoint to connect to, e.g. tcp/192.168.1.2:7447 (repeat for several).
    #[arg(long, short = 'e', value_name = "ENDPOINT")]
    pub connect: Vec<String>,
    /// Endpoint to listen on, e.g. tcp/0.0.0.0:7447 (repeat for several).
    #[arg(long, short = 'l', value_name = "ENDPOINT")]
    pub listen: Vec<String>,
    /// zenoh's mode: peer (default), client or router.
    #[arg(long, short = 'm', value_name = "MODE")]
    pub mode: Option<String>,
    /// Do not look for peers by multicast (only the endpoints given are used).
    #[arg(long)]
    pub no_multicast_scouting: bool,
}

impl ZenohArgs {
    fn options(&self) -> ZenohOptions {
        ZenohOptions {
            config: self.config.clone(),
            connect: self.connect.clone(),
            listen: self.listen.clone(),
            mode: self.mode.clone(),
            no_multicast_scouting: self.no_multicast_scouting,
        }
    }
}

fn parse_key(s: &str) -> Result<Key, String> {
    let key: Key = s
        .parse()
        .map_err(|e: shmpipe::segment::ParseKeyError| e.to_string())?;
    if key == Key::Private {
        return Err(format!(
            "key {s} is IPC_PRIVATE, which the other process cannot find: give a key"
        ));
    }
    Ok(key)
}

/// Runs a bridge to its end: exit status 0 after a clean end of stream, 1 with one line on
/// standard error otherwise. On an error the process exits at once, so a local peer blocked
/// on the ring sees this process die (`PeerDied`) rather than an end of stream.
pub fn run(args: BridgeArgs) -> ExitCode {
    let (what, result) = match args.command {
        BridgeCommand::Out(a) => ("bridge out", block_on(run_out(a))),
        BridgeCommand::In(a) => ("bridge in", block_on(run_in(a))),
    };
    match result {
        Ok((key, sum)) => {
            eprintln!(
                "shmpipe {what}: {key}: end of stream after {} messages ({} bytes)",
                sum.messages, sum.bytes
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("shmpipe {what}: error: {e}");
            // No destructors: the ring role stays held until the kernel reaps us.
            std::process::exit(1)
        }
    }
}

/// How long closing the zenoh session may take: it flushes what is queued, but a link to a
/// vanished peer with a send blocked on it would hold it for zenoh's `wait_before_close`.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

fn block_on<T>(f: impl Future<Output = T>) -> T {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let out = rt.block_on(f);
    // Without waiting for a ring thread still blocked in a send to a vanished peer
    // (`bridge_out_with`): the process exits next.
    rt.shutdown_background();
    out
}

/// Closes the session, flushing what is queued, for at most [`CLOSE_WAIT`].
async fn close(session: zenoh::Session) {
    let _ = tokio::time::timeout(CLOSE_WAIT, session.close()).await;
}

async fn open(config: zenoh::Config) -> Result<zenoh::Session, BridgeError> {
    zenoh::open(config).await.map_err(|e| BridgeError::Zenoh {
        what: "opening the session".into(),
        source: e,
    })
}

async fn run_out(a: OutArgs) -> Result<(String, Summary), BridgeError> {
    let cfg = a.ring.config();
    let ring = match (&a.ring.key, &a.ring.path) {
        (Some(k), _) => Ring::open_or_create(*k, &cfg),
        (None, Some(p)) => Ring::open_or_create(p.as_path(), &cfg),
        (None, None) => unreachable!("clap requires one"),
    }
    .map_err(|source| BridgeError::Ring {
        key: a.to.clone(),
        source,
    })?;
    let config = a.zenoh.options().to_config()?;
    // A receiving bridge silent for the lease while this one is blocked sending to it has
    // vanished, as zenoh would judge a link.
    let options = OutOptions::default().receiver_silence(lease_of(&config));
    let session = open(config).await?;
    let result = bridge_out_with(&session, &ring, &a.to, &options).await;
    // Flushes what is queued, the end of stream or the failure's reason included.
    // A dead receiver is told nothing, and a send still blocked on a vanished one would hold
    // up closing (or dropping) the session: leave it to the exit that follows.
    if matches!(result, Err(BridgeError::PeerDied { .. })) {
        std::mem::forget(session);
    } else {
        close(session).await;
    }
    Ok((a.to, result?))
}

async fn run_in(a: InArgs) -> Result<(String, Summary), BridgeError> {
    let target = match (&a.ring.key, &a.ring.path) {
        (Some(k), _) => InTarget::Key(*k),
        (None, Some(p)) => InTarget::Path(p.clone()),
        (None, None) => unreachable!("clap requires one"),
    };
    let session = open(a.zenoh.options().to_config()?).await?;
    let result = bridge_in(&session, &a.from, target, a.ring.config()).await;
    close(session).await;
    Ok((a.from, result?))
}
