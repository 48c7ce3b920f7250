//! The generic storage suite against PostgreSQL, unchanged, plus what only a
//! shared database has: several pools ("nodes") on one schema at once.
//! Each test gets its own schema. Without a reachable PostgreSQL these tests
//! FAIL under CI and print a loud SKIPPED banner elsewhere (see pgtest).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod pgtest;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use doorcode_server::storage::postgres::PostgresStorage;
use doorcode_server::storage::*;
use std::collections::HashSet;
use std::sync::Arc;

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-23T06:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 23).unwrap()
}

fn parcel(id: &str) -> NewParcel {
    NewParcel {
        parcel_id: id.into(),
        recipient_name: format!("Customer {id}"),
        email: Some(format!("{id}@example.com")),
        phone: None,
        address: "1 Example Street".into(),
        value: 100.0,
        currency: "EUR".into(),
        requires_code: true,
        track_token: format!("track-{id}-0123456789abcdef"),
    }
}

/// n parcels on one route, one enrolled device with a stored manifest.
async fn day_setup(s: &dyn Storage, n: usize) -> (Vec<String>, StoredManifest) {
    let ids: Vec<String> = (0..n).map(|i| format!("P-{i:03}")).collect();
    s.upsert_parcels(ids.iter().map(|i| parcel(i)).collect(), t0())
        .await
        .unwrap();
    s.save_route(
        RouteInput {
            route_id: "R-1".into(),
            courier_id: "C-1".into(),
            delivery_date: day(),
            stops: vec![RouteStopInput {
                stop_id: "S-1".into(),
                address: "1 Example Street".into(),
                recipient: None,
                parcel_ids: ids.clone(),
            }],
        },
        t0(),
    )
    .await
    .unwrap();
    s.create_enrollment("enroll-1", "C-1", t0() + Duration::minutes(15), t0())
        .await
        .unwrap();
    s.enroll_device(
        "enroll-1",
        NewDevice {
            device_id: "D-1".into(),
            name: "phone".into(),
            public_key: "pk".into(),
            token_hash: "th-1".into(),
        },
        t0(),
    )
    .await
    .unwrap()
    .unwrap();
    let m = s
        .store_manifest(StoredManifest {
            route_id: "R-1".into(),
            delivery_date: day(),
            device_id: "D-1".into(),
            manifest_id: "M-1".into(),
            revision: 1,
            envelope_json: "{}".into(),
            items: ids.iter().map(|i| (i.clone(), 1)).collect(),
        })
        .await
        .unwrap();
    (ids, m)
}

fn confirmation(i: usize, pid: &str, m: &StoredManifest) -> IngestConfirmation {
    IngestConfirmation {
        confirmation_id: format!("conf-{i:03}"),
        device_id: "D-1".into(),
        seq: u64::try_from(i + 1).unwrap(),
        manifest_id: m.manifest_id.clone(),
        revision: m.revision,
        parcel_id: pid.into(),
        delivery_date: day(),
        attempt: 1,
        outcome: "delivered".into(),
        reason: None,
        verified: "offline".into(),
        failed_attempts: 0,
        recorded_at: t0(),
        code_ok: Some(true),
        late: false,
        many_tries_threshold: 3,
        received_at: t0(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_passes_the_storage_suite() {
    let Some(pg) = pgtest::fresh_schema("pg_passes_the_storage_suite").await else {
        return;
    };
    let s = PostgresStorage::connect(&pg.url).await.unwrap();
    conformance::run_all(&s).await;
    // Connecting again runs no migration twice and keeps the data.
    drop(s);
    let s = PostgresStorage::connect(&pg.url).await.unwrap();
    assert!(s.parcel("a-1").await.unwrap().is_some());
    assert_eq!(s.schema_version().await.unwrap(), 1);
    assert_eq!(pg.count("doorcode_migrations").await, 1);
    drop(s);
    pg.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_migrations_once_when_nodes_start_together_and_newer_refused() {
    let Some(pg) = pgtest::fresh_schema("pg_migrations_once").await else {
        return;
    };
    let starts: Vec<_> = (0..6)
        .map(|_| {
            let url = pg.url_with("pool_size=2");
            tokio::spawn(async move { PostgresStorage::connect(&url).await })
        })
        .collect();
    for s in starts {
        let s = s.await.unwrap().unwrap();
        assert_eq!(s.schema_version().await.unwrap(), 1);
    }
    assert_eq!(pg.count("doorcode_migrations").await, 1);
    assert_eq!(pg.count("parcels").await, 0);
    pg.client
        .batch_execute(&format!(
            "INSERT INTO {}.doorcode_migrations(version) VALUES (99)",
            pg.name
        ))
        .await
        .unwrap();
    let e = PostgresStorage::connect(&pg.url).await.err().unwrap();
    assert!(e.to_string().contains("newer than this server"), "{e}");
    pg.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_two_nodes_ingest_the_same_batch_exactly_once() {
    let Some(pg) = pgtest::fresh_schema("pg_two_nodes_ingest").await else {
        return;
    };
    let a = Arc::new(PostgresStorage::connect(&pg.url).await.unwrap());
    let b = Arc::new(PostgresStorage::connect(&pg.url).await.unwrap());
    let (ids, m) = day_setup(a.as_ref(), 30).await;
    // Every confirmation goes to both nodes at the same moment.
    let barrier = Arc::new(tokio::sync::Barrier::new(2 * ids.len()));
    let mut tasks = Vec::new();
    for (i, pid) in ids.iter().enumerate() {
        for node in [a.clone(), b.clone()] {
            let c = confirmation(i, pid, &m);
            let barrier = barrier.clone();
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                (i, node.ingest_confirmation(c).await.unwrap())
            }));
        }
    }
    let mut accepted = HashSet::new();
    let mut duplicates = 0;
    for t in tasks {
        match t.await.unwrap() {
            (i, IngestOutcome::Accepted { disputed: false }) => {
                assert!(accepted.insert(i), "confirmation {i} accepted twice")
            }
            (_, IngestOutcome::Duplicate) => duplicates += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((accepted.len(), duplicates), (ids.len(), ids.len()));
    assert_eq!(pg.count("confirmations").await, 30);
    assert_eq!(
        pg.count("parcels WHERE status='delivered'").await,
        30,
        "every parcel delivered"
    );
    assert_eq!(
        pg.count("parcel_events WHERE kind='delivered'").await,
        30,
        "each confirmation's effects applied once"
    );
    assert_eq!(
        pg.count("signals WHERE kind='seq_reuse'").await,
        0,
        "a duplicate is not a seq reuse"
    );
    // The same id from another device is refused, not counted.
    let mut stolen = confirmation(0, &ids[0], &m);
    stolen.device_id = "D-other".into();
    assert!(matches!(
        b.ingest_confirmation(stolen).await,
        Ok(IngestOutcome::Rejected(r, true)) if r == "confirmation_id_reused"
    ));
    drop((a, b));
    pg.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_attempt_counters_hold_under_concurrent_verifies() {
    let Some(pg) = pgtest::fresh_schema("pg_attempt_counters").await else {
        return;
    };
    let a = Arc::new(PostgresStorage::connect(&pg.url).await.unwrap());
    let b = Arc::new(PostgresStorage::connect(&pg.url).await.unwrap());
    let (ids, _) = day_setup(a.as_ref(), 2).await;
    let max = 5u32;
    let tries = 16;
    let barrier = Arc::new(tokio::sync::Barrier::new(tries));
    let mut tasks = Vec::new();
    for i in 0..tries {
        let node = if i % 2 == 0 { a.clone() } else { b.clone() };
        let pid = ids[0].clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            node.record_verify("D-1", &pid, day(), 1, false, max, t0())
                .await
                .unwrap()
        }));
    }
    let mut left = Vec::new();
    let mut locked = 0;
    for t in tasks {
        match t.await.unwrap() {
            VerifyOutcome::Rejected { attempts_left } => left.push(attempts_left),
            VerifyOutcome::Locked => locked += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    left.sort_unstable();
    assert_eq!(left, vec![1, 2, 3, 4], "each wrong try counted once");
    assert_eq!(locked, tries - 4);
    let p = a.parcel(&ids[0]).await.unwrap().unwrap();
    assert_eq!((p.wrong_tries, p.locked), (max, true));
    assert_eq!(pg.count("signals WHERE kind='verify_lockout'").await, 1);
    // The other parcel was untouched.
    let q = b.parcel(&ids[1]).await.unwrap().unwrap();
    assert_eq!((q.wrong_tries, q.locked), (0, false));
    drop((a, b));
    pg.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_two_nodes_never_claim_the_same_notice() {
    let Some(pg) = pgtest::fresh_schema("pg_notice_claims").await else {
        return;
    };
    let a = Arc::new(PostgresStorage::connect(&pg.url).await.unwrap());
    let b = Arc::new(PostgresStorage::connect(&pg.url).await.unwrap());
    let (ids, _) = day_setup(a.as_ref(), 60).await;
    let now = t0() + Duration::seconds(1);
    // Both nodes' senders claim small batches at the same time, each taking
    // a moment to "send" a batch before claiming the next.
    let barrier = Arc::new(tokio::sync::Barrier::new(4));
    let mut tasks = Vec::new();
    for node in [a.clone(), b.clone(), a.clone(), b.clone()] {
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let (mut mine, mut sizes) = (Vec::new(), Vec::new());
            loop {
                let jobs = node.claim_notices(now, 60, 7).await.unwrap();
                if jobs.is_empty() {
                    return (mine, sizes);
                }
                sizes.push(jobs.len());
                mine.extend(jobs.into_iter().map(|j| j.notice_id));
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }));
    }
    let mut all = Vec::new();
    let mut busy_claimers = 0;
    let mut max_batch = 0;
    for t in tasks {
        let (mine, sizes) = t.await.unwrap();
        busy_claimers += usize::from(!mine.is_empty());
        max_batch = max_batch.max(sizes.into_iter().max().unwrap_or(0));
        all.extend(mine);
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), unique.len(), "a notice was claimed twice");
    assert_eq!(all.len(), ids.len(), "every notice claimed");
    assert!(busy_claimers >= 2, "claims were spread across claimers");
    assert!(
        max_batch <= 7,
        "a claim took {max_batch} notices; the limit is 7"
    );
    // Leased: nothing comes back before the lease ends; then all of it.
    assert!(
        b.claim_notices(now + Duration::seconds(59), 60, 100)
            .await
            .unwrap()
            .is_empty()
    );
    let back = a
        .claim_notices(now + Duration::seconds(61), 60, 100)
        .await
        .unwrap();
    assert_eq!(back.len(), ids.len());
    drop((a, b));
    pg.drop_schema().await;
}
