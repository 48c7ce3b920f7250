//! `doorcode demo` as a user runs it: the whole day must pass its own
//! invariant checks (it exits non-zero otherwise) and print its summary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

#[test]
fn demo_runs_a_whole_day() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_doorcode"))
        .args(["demo", "--dir"])
        .arg(dir.path().join("day"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "handsets are out of coverage",
        "typo on",
        "back in coverage",
        "server agrees on every parcel",
        "day closed",
        "locked_out",
        "0 lost",
        "track page    http://127.0.0.1:",
        // The doorstep cases (issue 17): Spanish, a resend from the door, "not mine".
        "code read in Spanish              DC-",
        "notice asked for again at door    DC-",
        "(held; the handset refused it 1 time, recorded refused)",
        "pressed \"I did not order this\"",
    ] {
        // Each wrong guess matches the handset's 12-bit tag with probability
        // 1/4096 (DESIGN.md), so about one run in 800 the impostor's five
        // guesses pass offline before the lock: the server's full check then
        // disputes it (the demo checks disputes == impostor passes) and there
        // is no lock-out to report.
        if needle == "locked_out" && !stdout.contains("disputes (server's full check)    0") {
            continue;
        }
        assert!(
            stdout.contains(needle),
            "summary lacks {needle:?}:\n{stdout}"
        );
    }
    // The notices it points at are there, with codes.
    let notices = std::fs::read_dir(dir.path().join("day/server/notices"))
        .unwrap()
        .count();
    assert!(notices > 100, "{notices} notices");
}

#[test]
fn demo_refuses_a_used_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("server")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_doorcode"))
        .args(["demo", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already holds a demo"));
}
