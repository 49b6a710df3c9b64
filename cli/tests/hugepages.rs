//! The `shmpipe` command on huge pages that vanish (docs/DESIGN.md, "When memory disappears:
//! SIGBUS"): a hostile `SHM_NORESERVE` segment is refused or reported, never a SIGBUS. The
//! library's side of it is tests/sigbus.rs, whose huge-page fixtures this file shares. Without
//! root or hugetlb support the test prints why and returns.

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

// The library's test helpers, and its huge-page fixtures: `tests/common` and `tests/huge` are
// symlinks to the library's, so the published package carries them.
mod common;
mod huge;

use common::RemoveFile;
use huge::{HostileSegment, HugePool};

const CHILD_TIMEOUT: Duration = Duration::from_secs(60);

/// The CLI sending into the hostile segment: refused without `--accept-huge-pages`, an error
/// at attach with it; the process exits with an error message either way, never by a signal
/// (before, it died of SIGBUS once its writes reached the second page).
#[test]
fn the_cli_refuses_a_noreserve_hugetlb_segment_or_reports_it() {
    let Some(pool) = HugePool::take() else { return };
    if !pool.set_extra(1) {
        return;
    }
    let hostile = HostileSegment::new();
    let id = hostile.shmid.to_string();
    let input = RemoveFile(common::temp_path("input"));
    std::fs::write(&input.0, vec![7u8; 3 << 20]).unwrap();
    let input = input.0.display().to_string();
    for (extra, expect) in [
        (None, "--accept-huge-pages"),
        (Some("--accept-huge-pages"), "SHM_NORESERVE"),
    ] {
        // Both sides, so that (before) the stream ran into the second page.
        let recv = cli(&["recv", "--id", &id], extra, None);
        let send = cli(&["send", "--id", &id], extra, Some(&input));
        for (what, child) in [("send", send), ("recv", recv)] {
            let (status, stderr) = finish(child);
            assert_eq!(
                status.signal(),
                None,
                "shmpipe {what} {extra:?} died: {stderr}"
            );
            assert!(
                !status.success(),
                "shmpipe {what} {extra:?} succeeded: {stderr}"
            );
            assert!(
                stderr.contains(expect),
                "shmpipe {what} {extra:?}: {stderr}"
            );
        }
    }
}

/// Starts `shmpipe ARGS [EXTRA] [FILE]`, its output piped.
fn cli(args: &[&str], extra: Option<&str>, file: Option<&str>) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_shmpipe"))
        .args(args)
        .args(extra)
        .args(file)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits (bounded: killed after the child timeout) for a `cli` process; its status and stderr.
fn finish(mut child: std::process::Child) -> (std::process::ExitStatus, String) {
    let deadline = Instant::now() + CHILD_TIMEOUT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
