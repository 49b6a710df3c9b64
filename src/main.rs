//! The `shmpipe` command. This first version inspects rings; sending, receiving, `stat`, `rm`
//! and `gc` arrive with the command-line issue.

use std::process::ExitCode;

use shmpipe::{Key, Ring};

const USAGE: &str = "usage: shmpipe info (--key KEY | --id SHMID)

Prints a ring's configuration, counters and role holders (attaching to it briefly).
KEY is a number (0x2020 or 8224); SHMID is the id ipcs -m shows.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    let ring = match words.as_slice() {
        ["info", "--key", k] => match k.parse::<Key>() {
            Ok(key) => Ring::open(key),
            Err(e) => return usage_error(&e.to_string()),
        },
        ["info", "--id", id] => match id.parse::<i32>() {
            Ok(id) => Ring::open_id(id),
            Err(e) => return usage_error(&format!("invalid shmid {id:?}: {e}")),
        },
        ["-h" | "--help" | "help"] => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        ["-V" | "--version"] => {
            println!("shmpipe {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        _ => return usage_error("expected a command"),
    };
    match ring {
        Ok(ring) => {
            let s = ring.status();
            println!("ring         {}", ring.ident());
            println!(
                "slots        {} x {} bytes",
                ring.slot_count(),
                ring.slot_size()
            );
            println!("max message  {} bytes", ring.max_message());
            println!("instance     {:016x}", ring.instance_id());
            println!(
                "tail/head    {} / {} ({} slots used)",
                s.tail, s.head, s.used_slots
            );
            println!("messages     {} sent, {} received", s.sent, s.received);
            println!("producer pid {}", s.producer_pid);
            println!("consumer pid {}", s.consumer_pid);
            if let Some(Ok(st)) = ring.segment().map(|seg| seg.stat()) {
                // Our own attach is one of them.
                println!("attached     {} (including this command)", st.attach_count);
                println!("mode         {:o}", st.mode);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("shmpipe: {e}");
            ExitCode::from(1)
        }
    }
}

fn usage_error(msg: &str) -> ExitCode {
    eprintln!("shmpipe: {msg}\n{USAGE}");
    ExitCode::from(2)
}
