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
//! a usage error. The code is in `src/cli/`; this file only runs it.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
