//! `shmpipe-bridge out|in`: the same as `shmpipe bridge out|in` (docs/CLI.md), for machines
//! where the `shmpipe` command was built without its feature `bridge`.

use std::process::ExitCode;

use clap::Parser;
use shmpipe_bridge::cli::{BridgeArgs, run};

/// Carry a shmpipe ring's stream to another machine over zenoh.
#[derive(Debug, Parser)]
#[command(name = "shmpipe-bridge", version)]
struct Cli {
    #[command(flatten)]
    args: BridgeArgs,
}

fn main() -> ExitCode {
    run(Cli::parse().args)
}
