//! Faults at fleet scale: 20 handsets, 10,000 confirmations, all through a
//! link that drops, refuses, resets and truncates, while the server is killed
//! with SIGKILL and restarted three times and half of the handsets upload from
//! `doorcode handset sync` processes that are themselves killed mid-upload.
//!
//! The verdict is read from the server's own SQLite file as well as its API:
//! one confirmation row and exactly one outcome event per parcel, every
//! parcel in the state its handset recorded, each device's sequence complete.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::fleet::*;
use doorcode_core::sync::{SyncClient, SyncConfig};
use doorcode_tools::netsim::{Faults, Mode, Proxy};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const HANDSETS: usize = 20;
const PER_HANDSET: usize = 500;
const TOTAL: usize = HANDSETS * PER_HANDSET;
/// Handsets `0..IN_PROCESS` upload from this process; the rest from CLI processes.
const IN_PROCESS: usize = 10;
/// SIGKILLs per CLI handset before its syncs are left to finish.
const KILLS_PER_CLI_HANDSET: u32 = 6;

/// Drives one handset's uploads from `doorcode handset sync` processes,
/// SIGKILLing each after a pseudo-random 80..=600 ms until `KILLS_PER_CLI_HANDSET`
/// kills landed on a still-running sync; then lets syncs run to the end.
fn cli_uploads(db: PathBuf, seed: u64, kills: Arc<AtomicU32>) {
    let date = today().to_string();
    let started = Instant::now();
    let mut mine = 0;
    let mut x = seed;
    while outbox_pending(&db) > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "{}: uploads did not finish in 10 minutes",
            db.display()
        );
        let mut child = Command::new(env!("CARGO_BIN_EXE_doorcode"))
            .args(["handset", "--db"])
            .arg(&db)
            .args(["sync", "--batch-size", "50", "--date", &date])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        if mine < KILLS_PER_CLI_HANDSET {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            std::thread::sleep(Duration::from_millis(80 + (x >> 33) % 520));
            if child.try_wait().unwrap().is_none() {
                child.kill().unwrap();
                mine += 1;
                kills.fetch_add(1, Ordering::Relaxed);
            }
        }
        child.wait().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_confirmations_survive_faults_kills_and_restarts() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let sdir = dir.path().join("server");
    let port = free_port();
    let (mut srv, token) = ServerProc::spawn(&sdir, port);
    let admin = Admin::new(port, token.unwrap());
    let plan = plan_day(&admin, HANDSETS, PER_HANDSET).await;
    let proxy = Proxy::start(srv.addr(), 0x5ca1e).await.unwrap();

    // Morning: every handset enrolls and pulls its day over a clean link,
    // then the whole day is worked offline (most parcels against the code).
    let cfg = SyncConfig {
        batch_size: 100,
        ..fast_cfg()
    };
    let mut expect: HashMap<String, &'static str> = HashMap::new();
    let mut in_process: Vec<Arc<SyncClient>> = Vec::new();
    let mut cli_dbs: Vec<PathBuf> = Vec::new();
    for (i, (courier, _)) in plan.iter().enumerate() {
        let c = enrolled(&admin, dir.path(), courier, &proxy.url(), cfg.clone()).await;
        pull_until_held(&c).await;
        expect.extend(work_the_day(c.handset()));
        if i < IN_PROCESS {
            in_process.push(Arc::new(c));
        } else {
            // Closed here; its own processes take over from the same files.
            drop(c);
            cli_dbs.push(dir.path().join(format!("{courier}.db")));
        }
    }
    assert_eq!(expect.len(), TOTAL);
    let prepared = started.elapsed();

    proxy.set_mode(Mode::Faulty(Faults {
        drop_pct: 5,
        unavailable_pct: 5,
        reset_after_request_pct: 10,
        truncate_pct: 5,
        max_delay_ms: 10,
    }));
    let upload_start = Instant::now();
    let mut tasks = Vec::new();
    for c in &in_process {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            upload_all(&c, Duration::from_secs(600)).await;
        }));
    }
    let kills = Arc::new(AtomicU32::new(0));
    for (i, db) in cli_dbs.iter().enumerate() {
        let (db, kills) = (db.clone(), kills.clone());
        tasks.push(tokio::task::spawn_blocking(move || {
            cli_uploads(db, 0x9e37_79b9 + i as u64, kills)
        }));
    }

    // The server dies (SIGKILL) each time another quarter of the day is up,
    // and comes back on the same data and port while uploads keep retrying.
    let pending_total = || -> u64 {
        let a: u64 = in_process
            .iter()
            .map(|c| u64::from(c.handset().status().unwrap().outbox_pending))
            .sum();
        a + cli_dbs.iter().map(|d| outbox_pending(d)).sum::<u64>()
    };
    let mut restarts = Vec::new();
    for quarter in [3u64, 2, 1] {
        let threshold = TOTAL as u64 * quarter / 4;
        loop {
            let p = pending_total();
            if p <= threshold {
                break;
            }
            assert!(
                upload_start.elapsed() < Duration::from_secs(600),
                "stuck at {p} pending"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let p = pending_total();
        srv.kill9();
        restarts.push(p);
        tokio::time::sleep(Duration::from_millis(300)).await;
        srv = ServerProc::spawn(&sdir, port).0;
    }
    for t in tasks {
        t.await.unwrap();
    }
    let upload_time = upload_start.elapsed();
    assert_eq!(pending_total(), 0);
    proxy.set_mode(Mode::Pass);
    let [conns, dropped, unavailable, resets, truncated, _] = proxy.stats().snapshot();
    let kills = kills.load(Ordering::Relaxed);
    eprintln!(
        "fleet: {HANDSETS} handsets, {TOTAL} confirmations; prepared in {prepared:.1?}, uploaded in {upload_time:.1?}; \
         server SIGKILLed and restarted at {restarts:?} pending; {kills} handset sync processes SIGKILLed mid-sync; \
         link: {conns} connections, {dropped} dropped, {unavailable} 503s, {resets} resets after the server answered, {truncated} truncated"
    );
    assert!(
        dropped > 0 && unavailable > 0 && resets > 0 && truncated > 0,
        "every fault happened"
    );
    assert_eq!(restarts.len(), 3);
    assert!(
        kills >= (HANDSETS - IN_PROCESS) as u32 * 3,
        "only {kills} handset processes were still syncing when killed"
    );

    // The server's own database: one confirmation and one outcome per parcel.
    let db = rusqlite::Connection::open(sdir.join("doorcode.db")).unwrap();
    let (rows, parcels): (i64, i64) = db
        .query_row(
            "SELECT COUNT(*), COUNT(DISTINCT parcel_id) FROM confirmations",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((rows, parcels), (TOTAL as i64, TOTAL as i64));
    let mut outcomes: HashMap<String, (String, i64)> = HashMap::new();
    let mut q = db
        .prepare(
            "SELECT p.parcel_id, p.status,
                    (SELECT COUNT(*) FROM parcel_events e WHERE e.parcel_id = p.parcel_id
                       AND e.kind IN ('delivered', 'failed', 'disputed'))
             FROM parcels p",
        )
        .unwrap();
    for row in q
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
    {
        let (pid, status, n) = row.unwrap();
        outcomes.insert(pid, (status, n));
    }
    for (pid, want) in &expect {
        let (status, n) = &outcomes[pid];
        assert_eq!(status, want, "{pid}");
        assert_eq!(*n, 1, "{pid} was counted {n} times");
    }
    let bad_signals: i64 = crate::support::dump::one(
        &db,
        "SELECT COUNT(*) FROM signals WHERE kind IN ('seq_gap', 'seq_reuse')",
    );
    assert_eq!(bad_signals, 0, "a sequence gap or reuse was signalled");
    let seqs: Vec<(i64, i64)> = db
        .prepare("SELECT last_seq, (SELECT COUNT(*) FROM confirmations c WHERE c.device_id = d.device_id) FROM devices d")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(seqs.len(), HANDSETS);
    assert!(
        seqs.iter()
            .all(|&s| s == (PER_HANDSET as i64, PER_HANDSET as i64)),
        "{seqs:?}"
    );
    // And the API agrees, for a sample of parcels across all couriers.
    let sample: HashMap<String, &'static str> = expect
        .iter()
        .filter(|(pid, _)| pid.ends_with('7'))
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    assert!(sample.len() >= TOTAL / 20);
    assert_exactly_once(&admin, &sample).await;
    drop(srv);
}
