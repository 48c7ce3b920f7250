//! Keeps the load generator from rotting: a tiny day through the whole run
//! against the debug `doorcode` binary, on SQLite and (when reachable) on
//! PostgreSQL; every phase must have run and printed its row. No speed is
//! asserted. Without PostgreSQL the PostgreSQL half FAILS under CI and prints
//! a loud SKIPPED banner elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;

/// PostgreSQL for the test, as the server's tests find it.
#[path = "../../server/tests/it/support/pg.rs"]
mod pg;

use pg::base_url as pg_url;

/// Whether PostgreSQL answers; under CI it must.
fn postgres_reachable() -> bool {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    match rt.block_on(pg::connect(&pg_url())) {
        Ok(_) => true,
        Err(e) => {
            pg::unreachable("the load smoke test's PostgreSQL run", &e);
            false
        }
    }
}

/// The `doorcode` binary of this build profile, next to `doorcode-load`.
/// `cargo test --workspace` builds it (in the tools package);
/// alone, build it first: `cargo build -p doorcode-tools`. The test cannot
/// build it itself: cargo holds the target dir's lock while tests run.
fn server_bin() -> PathBuf {
    let load = PathBuf::from(env!("CARGO_BIN_EXE_doorcode-load"));
    let bin = load
        .parent()
        .unwrap()
        .join(format!("doorcode{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "no server binary at {}: run `cargo build -p doorcode-tools` first",
        bin.display()
    );
    eprintln!("server binary: {}", bin.display());
    bin
}

/// Table rows of one backend: the cells of each `| backend | ...` line.
fn rows<'a>(table: &'a str, backend: &str) -> Vec<Vec<&'a str>> {
    table
        .lines()
        .filter(|l| l.starts_with(&format!("| {backend} |")))
        .map(|l| l.trim_matches('|').split('|').map(str::trim).collect())
        .collect()
}

fn check_backend(table: &str, backend: &str, storage_floors: usize) {
    let rows = rows(table, backend);
    let phases: Vec<&str> = rows.iter().map(|r| r[1]).collect();
    let want = [
        "storm: enroll (POST /v1/devices)",
        "storm: first manifest GET (built, signed, stored)",
        "manifest GET, stored (200, full body)",
        "manifest re-pull, If-None-Match (304)",
        "online verify (POST /v1/verify), 1 in 4 wrong",
    ];
    for w in want {
        assert_eq!(
            phases.iter().filter(|p| **p == w).count(),
            1,
            "{backend}: row {w:?} missing in\n{table}"
        );
    }
    let ingest = phases
        .iter()
        .filter(|p| {
            p.starts_with(
                "ingest, signed confirmations in batches of 10, retention purging beside it",
            )
        })
        .count();
    assert_eq!(
        ingest,
        1 + storage_floors,
        "{backend}: ingest rows in\n{table}"
    );
    // 3 handsets x 2 rounds; 3 x 8 checks; 3 x 30 parcels in batches of 10.
    let requests = |phase: &str| {
        rows.iter().find(|r| r[1] == phase).unwrap()[2]
            .parse::<usize>()
            .unwrap()
    };
    assert_eq!(requests("storm: enroll (POST /v1/devices)"), 3);
    assert_eq!(requests("manifest GET, stored (200, full body)"), 6);
    assert_eq!(requests("manifest re-pull, If-None-Match (304)"), 6);
    assert_eq!(
        requests("online verify (POST /v1/verify), 1 in 4 wrong"),
        24
    );
    for r in &rows {
        assert!(
            r[3].ends_with("/s") && !r[3].starts_with("0 "),
            "{backend}: no throughput in {r:?}"
        );
        if r[1].starts_with("ingest") {
            assert_eq!(r[2], "9", "{backend}: 90 confirmations in batches of 10");
        }
        if !r[1].starts_with("storm") {
            assert!(
                r[10].ends_with('%'),
                "{backend}: no ratio to the floor in {r:?}"
            );
        }
    }
}

/// Run doorcode-load against the debug server and assert it succeeded;
/// its stdout and stderr.
fn run_ok(args: &[&str]) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_doorcode-load"))
        .args(args)
        .arg("--server-bin")
        .arg(server_bin())
        .env("DOORCODE_TEST_PG", pg_url())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "doorcode-load {args:?} failed:\n{stderr}\n{stdout}"
    );
    (stdout, stderr)
}

#[test]
fn a_tiny_day_runs_every_phase_against_its_floor() {
    let pg = postgres_reachable();
    let (stdout, stderr) = run_ok(&[
        "--quick",
        "--batch",
        "10",
        // A history day of 20 routes planned 8 at a time, purged by the
        // retention job while the ingest runs.
        "--history",
        "20",
        "--backend",
        if pg { "both" } else { "sqlite" },
    ]);
    check_backend(&stdout, "SQLite", 1);
    if pg {
        check_backend(&stdout, "PostgreSQL", 2);
    }
    for backend in if pg {
        &["SQLite", "PostgreSQL"][..]
    } else {
        &["SQLite"][..]
    } {
        let purged = stderr
            .lines()
            .find_map(|l| l.strip_prefix(&format!("[{backend}] retention removed ")))
            .unwrap_or_else(|| panic!("{backend}: no retention run in\n{stderr}"));
        let rows: u64 = purged.split(' ').next().unwrap().parse().unwrap();
        assert!(rows > 0, "{backend}: the history was not purged: {purged}");
    }
}

#[test]
fn a_missing_server_binary_is_an_error_not_a_panic() {
    let out = Command::new(env!("CARGO_BIN_EXE_doorcode-load"))
        .args([
            "--quick",
            "--backend",
            "sqlite",
            "--server-bin",
            "/nonexistent/doorcode",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("doorcode-load: starting doorcode serve"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// The storm mode on a small fleet: every handset's pull and 304 re-pull
/// answered, the one `storm:` line printed with no errors.
#[test]
fn a_storm_of_50_handsets_pulls_and_re_pulls_without_errors() {
    let (stdout, _) = run_ok(&[
        "--storm",
        "50",
        "--parcels",
        "40",
        "--concurrency",
        "16",
        "--backend",
        "sqlite",
    ]);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("storm: "))
        .unwrap_or_else(|| panic!("no storm line in\n{stdout}"));
    assert!(
        line.starts_with("storm: 50 handsets, ") && line.contains(" s, 0 errors"),
        "{line}"
    );
}

/// Asking for more connections than the open-files limit allows fails
/// before any server starts, and says how to raise the limit.
#[test]
fn a_storm_beyond_the_open_files_limit_says_how_to_raise_it() {
    let out = Command::new(env!("CARGO_BIN_EXE_doorcode-load"))
        .args([
            "--storm",
            "10",
            "--concurrency",
            "100000000",
            "--backend",
            "sqlite",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ulimit -n"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
