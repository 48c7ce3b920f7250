//! Crash test: a child process records outcomes and wrong tries in a loop and
//! is killed with SIGKILL at random moments. After each kill the store is
//! reopened and checked: nothing the child was told is durable is lost, no
//! try count goes backwards, and `seq` stays strictly increasing, never reused.
//!
//! The child is this test binary again, running only the `#[ignore]`d
//! `crash::child` test; it reports each durable event on stdout as a line
//! starting with `@@ ` (libtest's own lines are skipped).
//! `DOORCODE_CRASH_KILLS` sets the number of kills (default 200).

use doorcode_core::confirmation::FailReason;
use doorcode_core::handset::SystemClock;
use doorcode_core::secrets::FileSecretStore;
use doorcode_core::store::{Store, VerifyOutcome};
use doorcode_core::testkit::{self, ManifestSpec, TestDepot};
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const STOPS: usize = 600;
const PER_STOP: usize = 2;

/// What marks the child's event lines among libtest's output.
const EVENT: &str = "@@ ";

#[test]
fn sigkill_at_random_moments_loses_nothing() {
    parent();
}

/// The child: run by the parent test, never on its own.
#[test]
#[ignore = "run by sigkill_at_random_moments_loses_nothing as its child process"]
fn child() {
    let dir = std::env::var("DOORCODE_CRASH_CHILD").expect("run by the parent test");
    child_loop(Path::new(&dir));
}

/// A tiny deterministic PRNG (xorshift64*) so runs are reproducible from the seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn child_loop(dir: &Path) {
    let depot = TestDepot::new();
    let secrets = Arc::new(FileSecretStore::new(dir.join("secrets")).unwrap());
    let h = depot
        .enrolled_handset(
            &dir.join("handset.db"),
            secrets,
            Arc::new(SystemClock),
            "d-crash",
        )
        .unwrap();
    let seed = std::env::var("DOORCODE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1u64);
    let mut rng = Rng(seed | 1);
    let date = chrono::Utc::now().date_naive();
    let mut out = std::io::stdout().lock();
    // libtest has printed "test crash::child ... " without a line break.
    writeln!(out).unwrap();
    loop {
        let stops = h.stops().unwrap();
        let open: Vec<_> = stops
            .iter()
            .flat_map(|s| s.parcels.iter())
            .filter(|p| {
                matches!(
                    p.state,
                    doorcode_core::store::ParcelState::Pending
                        | doorcode_core::store::ParcelState::Locked
                )
            })
            .cloned()
            .collect();
        if open.is_empty() {
            // Day done: dispatch reissues everything as the next attempt.
            let (rev, attempt): (u64, u32) = h
                .with_store(|s| {
                    Ok(s.connection().query_row(
                        "SELECT revision, (SELECT MAX(attempt) FROM parcels) FROM revisions",
                        [],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )?)
                })
                .unwrap();
            let mut spec = ManifestSpec::today("d-crash", STOPS, PER_STOP);
            spec.revision = rev + 1;
            spec.attempt = attempt + 1;
            h.install_manifest(&depot.seal(&depot.manifest(&spec)))
                .unwrap();
            continue;
        }
        writeln!(out, "{EVENT}READY").unwrap();
        out.flush().unwrap();
        for p in open.iter().take(50) {
            let code = depot.code(&p.parcel_id, date, p.attempt);
            if p.state == doorcode_core::store::ParcelState::Locked {
                let r = h.fail(&p.parcel_id, FailReason::LockedOut).unwrap();
                writeln!(out, "{EVENT}F {} {} {}", p.parcel_id, p.attempt, r.seq).unwrap();
                out.flush().unwrap();
                continue;
            }
            match rng.below(4) {
                0 | 1 => {
                    // A wrong code: flip the last digit.
                    let mut wrong = code.expose().to_string();
                    let last = wrong.pop().unwrap();
                    wrong.push(if last == '9' {
                        '0'
                    } else {
                        char::from(last as u8 + 1)
                    });
                    match h.verify(&p.parcel_id, &wrong).unwrap() {
                        VerifyOutcome::Accepted { seq, .. } => {
                            writeln!(out, "{EVENT}D {} {} {}", p.parcel_id, p.attempt, seq)
                        }
                        VerifyOutcome::Rejected { attempts_left, .. } => {
                            writeln!(
                                out,
                                "{EVENT}T {} {} {}",
                                p.parcel_id,
                                p.attempt,
                                5 - attempts_left
                            )
                        }
                        VerifyOutcome::Locked { .. } => {
                            writeln!(out, "{EVENT}T {} {} 5", p.parcel_id, p.attempt)
                        }
                    }
                    .unwrap();
                }
                2 => match h.verify(&p.parcel_id, code.expose()).unwrap() {
                    VerifyOutcome::Accepted { seq, .. } => {
                        writeln!(out, "{EVENT}D {} {} {}", p.parcel_id, p.attempt, seq).unwrap()
                    }
                    other => panic!("the right code was refused: {other:?}"),
                },
                _ => {
                    let r = h.fail(&p.parcel_id, FailReason::CustomerAbsent).unwrap();
                    writeln!(out, "{EVENT}F {} {} {}", p.parcel_id, p.attempt, r.seq).unwrap();
                }
            }
            out.flush().unwrap();
        }
    }
}

#[derive(Default)]
struct Seen {
    /// Highest try count each (parcel, attempt) was reported or observed at.
    tries: HashMap<(String, u32), u32>,
    /// (parcel, attempt) -> (outcome, seq) reported durable.
    outcomes: HashMap<(String, u32), (char, u64)>,
    seqs: HashSet<u64>,
    max_seq: u64,
}

fn check(db: &Path, seen: &mut Seen, reported: &[String]) -> usize {
    // Everything reported durable by the child this round.
    let mut events = 0;
    for line in reported {
        let parts: Vec<&str> = line.split(' ').collect();
        match parts.as_slice() {
            ["T", pid, attempt, n] => {
                let n: u32 = n.parse().unwrap();
                let e = seen
                    .tries
                    .entry(((*pid).to_string(), attempt.parse().unwrap()))
                    .or_default();
                *e = (*e).max(n);
            }
            [kind @ ("D" | "F"), pid, attempt, seq] => {
                let seq: u64 = seq.parse().unwrap();
                let k = kind.chars().next().unwrap();
                let prev = seen
                    .outcomes
                    .insert(((*pid).to_string(), attempt.parse().unwrap()), (k, seq));
                assert!(prev.is_none(), "parcel {pid} #{attempt} was recorded twice");
            }
            ["READY"] => continue,
            _ => panic!("unexpected child line {line:?}"),
        }
        events += 1;
    }

    let store = Store::open(db).unwrap();
    let conn = store.connection();
    // Try counts: never below what was reported or seen before.
    let mut stmt = conn
        .prepare("SELECT parcel_id, attempt, failed_tries FROM parcel_state")
        .unwrap();
    let now_tries: HashMap<(String, u32), u32> = stmt
        .query_map([], |r| Ok(((r.get(0)?, r.get(1)?), r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for (key, &n) in &seen.tries {
        let got = now_tries.get(key).copied().unwrap_or(0);
        assert!(
            got >= n,
            "parcel {key:?}: try count went backwards ({got} < {n})"
        );
    }
    for (pid, n) in now_tries {
        let e = seen.tries.entry(pid).or_default();
        *e = (*e).max(n);
    }
    // Outcomes: every reported one is in parcel_state and in the outbox with its seq.
    for ((pid, attempt), (kind, seq)) in &seen.outcomes {
        let (outcome, st_seq): (String, u64) = conn
            .query_row(
                "SELECT outcome, seq FROM parcel_state WHERE parcel_id = ?1 AND attempt = ?2",
                rusqlite::params![pid, attempt],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap_or_else(|e| panic!("parcel {pid}: recorded outcome lost ({e})"));
        let want = if *kind == 'D' { "delivered" } else { "failed" };
        assert_eq!(outcome, want, "parcel {pid}");
        assert_eq!(st_seq, *seq, "parcel {pid} seq");
        let in_outbox: String = conn
            .query_row("SELECT parcel_id FROM outbox WHERE seq = ?1", [seq], |r| {
                r.get(0)
            })
            .unwrap_or_else(|e| panic!("seq {seq} missing from the outbox ({e})"));
        assert_eq!(&in_outbox, pid);
    }
    // seq: strictly increasing with creation order, never reused, counter ahead of all.
    let mut stmt = conn
        .prepare("SELECT seq FROM outbox ORDER BY created_at, seq")
        .unwrap();
    let seqs: Vec<u64> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for w in seqs.windows(2) {
        assert!(
            w[0] < w[1],
            "seq not strictly increasing: {} then {}",
            w[0],
            w[1]
        );
    }
    let next: u64 = conn
        .query_row(
            "SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'next_seq'",
            [],
            |r| r.get(0),
        )
        .unwrap_or(1);
    let mut new_max = seen.max_seq;
    for &s in &seqs {
        assert!(s < next, "seq {s} is not below the counter {next}");
        if seen.seqs.insert(s) {
            assert!(
                s > seen.max_seq,
                "new seq {s} is not above every earlier one ({})",
                seen.max_seq
            );
            new_max = new_max.max(s);
        }
    }
    seen.max_seq = new_max;
    let ids: u64 = conn
        .query_row(
            "SELECT COUNT(DISTINCT confirmation_id) FROM outbox",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(ids, seqs.len() as u64, "a confirmation id was reused");
    events
}

fn parent() {
    let kills: usize = std::env::var("DOORCODE_CRASH_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("handset.db");
    let depot = TestDepot::new();
    {
        let secrets = Arc::new(FileSecretStore::new(dir.path().join("secrets")).unwrap());
        let h = depot
            .enrolled_handset(&db, secrets, Arc::new(SystemClock), "d-crash")
            .unwrap();
        let spec = ManifestSpec::today("d-crash", STOPS, PER_STOP);
        h.install_manifest(&depot.seal(&depot.manifest(&spec)))
            .unwrap();
        assert_eq!(testkit::parcel_id(0, 0), "P-0000-00");
    }
    let exe = std::env::current_exe().unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id()));
    let mut seen = Seen::default();
    let started = Instant::now();
    let mut events = 0;
    let mut killed = 0;
    for round in 0..kills {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash::child",
                "--ignored",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env("DOORCODE_CRASH_CHILD", dir.path())
            .env("DOORCODE_CRASH_SEED", rng.next().to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let Some(event) = line.strip_prefix(EVENT) else {
                    continue; // libtest's own output
                };
                if event == "READY" {
                    let _ = tx.send(());
                }
                lines.push(event.to_string());
            }
            lines
        });
        // Kill at a random moment once the child is recording, not while it starts.
        rx.recv_timeout(Duration::from_secs(30))
            .expect("the child never got ready");
        std::thread::sleep(Duration::from_micros(500 + rng.below(25_000)));
        // SIGKILL: no destructor, no flush, no chance to finish a transaction.
        child.kill().unwrap();
        let status = child.wait().unwrap();
        if status.code().is_some() && !status.success() {
            panic!("round {round}: the child failed on its own: {status}");
        }
        killed += 1;
        let lines = reader.join().unwrap();
        events += check(&db, &mut seen, &lines);
    }
    println!(
        "crash: {killed} SIGKILLs in {:.1}s; {events} durable events checked; {} outcomes, max seq {}",
        started.elapsed().as_secs_f64(),
        seen.outcomes.len(),
        seen.max_seq
    );
    assert_eq!(killed, kills);
    assert!(events > 0, "the child never recorded anything");
}
