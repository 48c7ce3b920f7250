//! End to end: real `doorcode serve` processes on loopback, handsets on the
//! real core over real HTTP, through a proxy that drops, delays, resets and
//! truncates, with servers and handsets killed mid-flight. In every case each
//! confirmation reaches the server exactly once in effect and none is lost.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::fleet::*;
use doorcode_core::codes::{self, CodeKey};
use doorcode_core::confirmation::FailReason;
use doorcode_core::store::{ParcelState, VerifyOutcome};
use doorcode_core::sync::SyncConfig;
use doorcode_tools::netsim::{Faults, Mode, Proxy};
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_day_then_reconnect() {
    let (dir, srv, admin, plan) = planned_day(2, 60).await;
    let mut expect = HashMap::new();
    let mut clients = Vec::new();
    for (courier, _) in &plan {
        let proxy = Proxy::start(srv.addr(), 1).await.unwrap();
        let c = enrolled(
            &admin,
            dir.path(),
            courier,
            &proxy.url(),
            SyncConfig {
                reuse_connections: true,
                ..fast_cfg()
            },
        )
        .await;
        pull_until_held(&c).await;
        proxy.set_mode(Mode::Offline);
        // At the door: the sync client tries online, the link is dead, it checks offline.
        let key = CodeKey::from_bytes(CODE_KEY);
        for p in c
            .handset()
            .stops()
            .unwrap()
            .into_iter()
            .flat_map(|s| s.parcels)
        {
            if p.requires_code {
                let code = codes::derive_code(&key, &p.parcel_id, today(), 1, 6).unwrap();
                let out = c.verify(&p.parcel_id, code.expose()).await.unwrap();
                assert!(
                    matches!(
                        out,
                        VerifyOutcome::Accepted {
                            verified: doorcode_core::confirmation::Verified::Offline,
                            ..
                        }
                    ),
                    "{out:?}"
                );
                expect.insert(p.parcel_id, "delivered");
            } else {
                c.handset().fail(&p.parcel_id, FailReason::Refused).unwrap();
                expect.insert(p.parcel_id, "failed");
            }
        }
        let offline = c.sync(Some(today())).await.unwrap();
        assert!(
            !offline.online && offline.pending == 60 && offline.next_retry_ms.is_some(),
            "{offline:?}"
        );
        clients.push((proxy, c));
    }
    for (proxy, c) in &clients {
        proxy.set_mode(Mode::Pass);
        let (acc, dup) = upload_all(c, Duration::from_secs(30)).await;
        assert_eq!((acc, dup), (60, 0));
        assert_eq!(c.handset().status().unwrap().parcels_pending, 0);
        assert!(
            c.handset()
                .stops()
                .unwrap()
                .iter()
                .flat_map(|s| &s.parcels)
                .all(|p| p.state != ParcelState::Pending)
        );
    }
    assert_exactly_once(&admin, &expect).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flaky_link_loses_nothing_over_1000_confirmations() {
    let (dir, srv, admin, plan) = planned_day(4, 250).await;
    let proxy = Proxy::start(srv.addr(), 0xfa17).await.unwrap();
    let mut expect = HashMap::new();
    let mut clients = Vec::new();
    for (courier, _) in &plan {
        let c = enrolled(
            &admin,
            dir.path(),
            courier,
            &proxy.url(),
            SyncConfig {
                batch_size: 20,
                ..fast_cfg()
            },
        )
        .await;
        clients.push(c);
    }
    proxy.set_mode(Mode::Faulty(Faults {
        drop_pct: 10,
        unavailable_pct: 10,
        reset_after_request_pct: 15,
        truncate_pct: 10,
        max_delay_ms: 20,
    }));
    for c in &clients {
        pull_until_held(c).await;
        expect.extend(work_the_day(c.handset()));
    }
    assert_eq!(expect.len(), 1000);
    // All four handsets upload at the same time, each on its own task.
    let clients: Vec<Arc<_>> = clients.into_iter().map(Arc::new).collect();
    let results = joined(spawn_uploads(&clients, Duration::from_secs(240))).await;
    let (acc, dup) = results.iter().fold((0, 0), |(a, d), (x, y)| (a + x, d + y));
    let [conns, dropped, unavailable, resets, truncated, _] = proxy.stats().snapshot();
    eprintln!(
        "flaky link: {conns} connections, {dropped} dropped, {unavailable} 503s, {resets} resets after the server answered, \
         {truncated} truncated; handsets saw {acc} accepted + {dup} duplicates for 1000 confirmations"
    );
    assert!(
        dropped > 0 && unavailable > 0 && resets > 0 && truncated > 0,
        "every fault happened"
    );
    assert!(acc + dup >= 1000);
    proxy.set_mode(Mode::Pass);
    assert_exactly_once(&admin, &expect).await;
    // No restart here, so the server's counter must say exactly 1000 too.
    assert_eq!(
        admin
            .metric("doorcode_confirmations_total{status=\"accepted\"}")
            .await,
        1000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_and_restarted_mid_upload() {
    let dir = tempfile::tempdir().unwrap();
    let sdir = dir.path().join("server");
    let port = free_port();
    let (mut srv, admin) = ServerProc::with_admin(&sdir, port);
    let plan = plan_day(&admin, 2, 500).await;
    let mut expect = HashMap::new();
    let mut clients = Vec::new();
    let cfg = SyncConfig {
        batch_size: 10,
        ..fast_cfg()
    };
    for (courier, _) in &plan {
        let c = Arc::new(
            enrolled(
                &admin,
                dir.path(),
                courier,
                &format!("http://127.0.0.1:{port}"),
                cfg.clone(),
            )
            .await,
        );
        pull_until_held(&c).await;
        expect.extend(work_the_day(c.handset()));
        clients.push(c);
    }
    assert_eq!(expect.len(), 1000);
    let tasks = spawn_uploads(&clients, Duration::from_secs(240));
    // Kill the server while batches are in flight, twice, and bring it back.
    for round in 0..2 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let pending: u32 = clients
            .iter()
            .map(|c| c.handset().status().unwrap().outbox_pending)
            .sum();
        srv.kill9();
        eprintln!("restart {round}: killed the server with {pending} confirmations pending");
        tokio::time::sleep(Duration::from_millis(300)).await;
        srv = ServerProc::spawn(&sdir, port).0;
    }
    joined(tasks).await;
    assert_exactly_once(&admin, &expect).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handset_process_killed_mid_sync() {
    let (dir, srv, admin, plan) = planned_day(1, 1000).await;
    // A slow link, so a sync takes long enough to be killed in the middle.
    let proxy = Proxy::start(srv.addr(), 7).await.unwrap();
    let courier = &plan[0].0;
    let db: PathBuf = dir.path().join(format!("{courier}.db"));
    let expect = {
        let c = enrolled(&admin, dir.path(), courier, &proxy.url(), fast_cfg()).await;
        pull_until_held(&c).await;
        work_the_day(c.handset())
    };
    assert_eq!(expect.len(), 1000);
    proxy.set_mode(Mode::Faulty(Faults {
        max_delay_ms: 20,
        ..Faults::default()
    }));
    // Kill each sync process once it has visibly uploaded something (the
    // outbox shrank), a random few milliseconds later: always mid-upload,
    // whatever the machine's speed.
    let mut kills = 0;
    let mut finished_alone = 0;
    for i in 0..25u64 {
        let before = outbox_pending(&db);
        if before == 0 {
            break;
        }
        let mut child = doorcode(&["handset", "--db"])
            .arg(&db)
            .args(["sync", "--batch-size", "20", "--date", &today().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        loop {
            if child.try_wait().unwrap().is_some() {
                finished_alone += 1;
                break;
            }
            if outbox_pending(&db) < before {
                tokio::time::sleep(Duration::from_millis((i * 7) % 25)).await;
                if child.try_wait().unwrap().is_none() {
                    child.kill().unwrap();
                    kills += 1;
                }
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "a sync made no progress in 30 s"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        child.wait().unwrap();
    }
    // The last sync runs to the end in a process of its own.
    let (_, status, _) = handset(&db, &["status"]);
    let pending_before: Value = serde_json::from_slice(status.as_bytes()).unwrap();
    let mut rounds = 0;
    loop {
        let (ok, out, err) = handset(&db, &["sync", "--date", &today().to_string()]);
        assert!(ok, "{err}");
        let r: Value = serde_json::from_slice(out.as_bytes()).unwrap();
        rounds += 1;
        if r["pending"] == 0 {
            break;
        }
        assert!(rounds < 50, "sync never finished: {r}");
    }
    eprintln!(
        "handset killed {kills} times mid-upload ({finished_alone} syncs finished first); {} still pending after the kills; {rounds} final syncs",
        pending_before["status"]["outbox_pending"]
    );
    assert!(
        kills >= 10,
        "only {kills} syncs were still running when killed"
    );
    let left = pending_before["status"]["outbox_pending"].as_u64().unwrap();
    assert!(
        left < 1000,
        "no killed sync got any upload through; the kills were not mid-upload"
    );
    assert_exactly_once(&admin, &expect).await;
}
