//! The storage suite against PostgreSQL, plus what only a shared database
//! has: several pools ("nodes") on one schema at once, migrations under a
//! lock, an upgrade in place. Each test gets its own schema. Without a
//! reachable PostgreSQL these tests FAIL under CI and print a loud SKIPPED
//! banner elsewhere (see pgtest).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::storage_suite::{parcel, t0};
use crate::support::migrations;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use doorcode_core::confirmation::{Outcome, Verified};
use doorcode_server::domain::verify::{Target, VerifyInput};
use doorcode_server::domain::{At, Policy, RejectReason, SignalKind};
use doorcode_server::storage::postgres::PostgresStorage;
use doorcode_server::storage::*;
use std::collections::HashSet;
use std::sync::Arc;

struct Pg {
    s: PostgresStorage,
    schema: crate::support::pg::PgSchema,
}

impl Pg {
    fn storage(&self) -> &dyn Storage {
        &self.s
    }

    async fn finish(self) {
        drop(self.s);
        // Connecting again runs no migration twice.
        let again = PostgresStorage::connect(&self.schema.url).await.unwrap();
        assert_eq!(
            again.schema_version().await.unwrap(),
            PostgresStorage::migrations()
        );
        drop(again);
        self.schema.drop_schema().await;
    }
}

async fn store(check: &str) -> Option<Pg> {
    let schema = crate::support::pg::fresh_schema(check).await?;
    let s = PostgresStorage::connect(&schema.url_with("pool_size=4"))
        .await
        .unwrap();
    Some(Pg { s, schema })
}

crate::storage_suite!();

fn policy() -> Policy {
    crate::storage_suite::policy()
}

fn day() -> NaiveDate {
    crate::storage_suite::day(23)
}

/// n parcels on one route, one enrolled device with a stored manifest.
async fn day_setup(s: &dyn Storage, n: usize) -> (Vec<String>, StoredManifest) {
    let ids: Vec<String> = (0..n).map(|i| format!("P-{i:03}")).collect();
    s.upsert_parcels(ids.iter().map(|i| parcel(i, true)).collect(), t0())
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
        At {
            now: t0(),
            policy: &policy(),
        },
    )
    .await
    .unwrap();
    s.create_enrollment(NewEnrollment {
        code_hash: "enroll-1".into(),
        courier_id: "C-1".into(),
        expires_at: t0() + Duration::minutes(15),
        created_at: t0(),
    })
    .await
    .unwrap();
    s.enroll_device(
        NewDevice {
            enrollment: "enroll-1".into(),
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
        outcome: Outcome::Delivered,
        reason: None,
        verified: Verified::Offline,
        failed_attempts: 0,
        recorded_at: t0(),
        code_ok: Some(true),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_migrations_once_when_nodes_start_together_and_newer_refused() {
    let Some(pg) = crate::support::pg::fresh_schema("pg_migrations_once").await else {
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
        assert_eq!(
            s.schema_version().await.unwrap(),
            PostgresStorage::migrations()
        );
    }
    assert_eq!(
        pg.count("doorcode_migrations").await,
        PostgresStorage::migrations()
    );
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
    let Some(pg) = crate::support::pg::fresh_schema("pg_two_nodes_ingest").await else {
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
                let p = policy();
                let at = At {
                    now: t0(),
                    policy: &p,
                };
                (i, node.ingest_confirmation(c, at).await.unwrap())
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
    assert_eq!(
        b.ingest_confirmation(
            stolen,
            At {
                now: t0(),
                policy: &policy()
            }
        )
        .await
        .unwrap(),
        IngestOutcome::Rejected(RejectReason::ConfirmationIdReused)
    );
    drop((a, b));
    pg.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_attempt_counters_hold_under_concurrent_verifies() {
    let Some(pg) = crate::support::pg::fresh_schema("pg_attempt_counters").await else {
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
            let input = VerifyInput {
                device_id: "D-1".into(),
                parcel_id: pid,
                target: Target {
                    delivery_date: day(),
                    attempt: 1,
                },
                ok: false,
            };
            let mut p = policy();
            p.max_attempts = max;
            node.record_verify(
                input,
                At {
                    now: t0(),
                    policy: &p,
                },
            )
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
    let Some(pg) = crate::support::pg::fresh_schema("pg_notice_claims").await else {
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

/// A schema-1 database with a device and signals, upgraded in place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_schema_1_upgrades_with_its_devices_and_signals() {
    let Some(pg) = crate::support::pg::fresh_schema("pg_schema_1_upgrades").await else {
        return;
    };
    migrations::postgres_at(
        &pg,
        1,
        "INSERT INTO devices(device_id, courier_id, name, public_key, token_hash, enrolled_at)
               VALUES('D-1', 'C-1', 'phone', 'pk', 'th', '2026-11-20T08:00:00Z');
             INSERT INTO confirmations(confirmation_id, device_id, seq, manifest_id, revision, parcel_id,
               delivery_date, attempt, outcome, verified, failed_attempts, disputed, recorded_at, received_at)
               VALUES('c-1', 'D-1', 1, 'm', 1, 'P-1', '2026-11-23', 1, 'delivered', 'offline', 0, FALSE,
                 '2026-11-23T09:00:00Z', '2026-11-24T09:00:00Z');
             INSERT INTO signals(kind, parcel_id, device_id, confirmation_id, detail, at)
               VALUES('superseded_code', 'P-1', 'D-1', 'c-1', 'old', '2026-11-24T09:00:00Z'),
                     ('verify_lockout', 'P-2', 'D-1', NULL, 'locked', '2026-11-25T10:00:00Z');",
    )
    .await;
    let s = PostgresStorage::connect(&pg.url).await.unwrap();
    assert_eq!(
        s.schema_version().await.unwrap(),
        PostgresStorage::migrations()
    );
    let d = s.device("D-1").await.unwrap().unwrap();
    assert_eq!(
        (d.last_seen_at, d.revoked_at),
        (t("2026-11-20T08:00:00Z"), None),
        "last seen at enrollment"
    );
    let on23 = s.signals_on(d23(), 0, 10).await.unwrap();
    assert_eq!(
        on23.iter().map(|x| x.kind).collect::<Vec<_>>(),
        [SignalKind::SupersededCode],
        "the confirmation's day, and the old kind kept"
    );
    let on25 = s
        .signals_on(d23() + Duration::days(2), 0, 10)
        .await
        .unwrap();
    assert_eq!(
        on25[0].kind,
        SignalKind::VerifyLockout,
        "else the day it was raised"
    );
    drop(s);
    pg.drop_schema().await;
}

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn d23() -> NaiveDate {
    day()
}
