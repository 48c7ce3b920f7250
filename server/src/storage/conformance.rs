//! The storage test suite, generic over any backend: every [`Storage`]
//! (SQLite now, PostgreSQL next) must pass [`run_all`] on an empty database.
//! It lives in the library so every backend's tests can call it.
#![allow(clippy::unwrap_used, clippy::panic, clippy::expect_used)]

use super::*;
use chrono::{DateTime, Duration, NaiveDate, Utc};

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-23T06:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn day(n: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, n).unwrap()
}

fn parcel(id: &str, requires_code: bool) -> NewParcel {
    NewParcel {
        parcel_id: id.into(),
        recipient_name: format!("Customer {id}"),
        email: Some(format!("{id}@example.com")),
        phone: None,
        address: "1 Example Street".into(),
        value: 10.0,
        currency: "EUR".into(),
        requires_code,
        track_token: format!("track-{id}-0123456789abcdef"),
    }
}

fn route(id: &str, courier: &str, date: NaiveDate, parcels: &[&str]) -> RouteInput {
    RouteInput {
        route_id: id.into(),
        courier_id: courier.into(),
        delivery_date: date,
        stops: vec![RouteStopInput {
            stop_id: "S-1".into(),
            address: "1 Example Street".into(),
            recipient: None,
            parcel_ids: parcels.iter().map(|p| p.to_string()).collect(),
        }],
    }
}

async fn enroll(s: &dyn Storage, courier: &str, device: &str) -> Device {
    let code = format!("code-{device}");
    s.create_enrollment(&code, courier, t0() + Duration::minutes(15), t0())
        .await
        .unwrap();
    s.enroll_device(
        &code,
        NewDevice {
            device_id: device.into(),
            name: "phone".into(),
            public_key: "pk".into(),
            token_hash: format!("hash-{device}"),
        },
        t0(),
    )
    .await
    .unwrap()
    .expect("enrolled")
}

async fn manifest_for(s: &dyn Storage, route: &RouteData, device: &str) -> StoredManifest {
    let items = route
        .stops
        .iter()
        .flat_map(|st| st.parcels.iter().map(|p| (p.parcel_id.clone(), p.attempt)))
        .collect();
    s.store_manifest(StoredManifest {
        route_id: route.route_id.clone(),
        delivery_date: route.delivery_date,
        device_id: device.into(),
        manifest_id: format!("m-{}-{device}", route.route_id),
        revision: route.revision,
        envelope_json: format!("{{\"rev\":{}}}", route.revision),
        items,
    })
    .await
    .unwrap()
}

fn confirmation(
    id: &str,
    device: &str,
    seq: u64,
    m: &StoredManifest,
    parcel: &str,
    attempt: u32,
    code_ok: Option<bool>,
) -> IngestConfirmation {
    IngestConfirmation {
        confirmation_id: id.into(),
        device_id: device.into(),
        seq,
        manifest_id: m.manifest_id.clone(),
        revision: m.revision,
        parcel_id: parcel.into(),
        delivery_date: m.delivery_date,
        attempt,
        outcome: "delivered".into(),
        reason: None,
        verified: if code_ok.is_some() {
            "offline".into()
        } else {
            "none".into()
        },
        failed_attempts: 0,
        recorded_at: t0(),
        code_ok,
        late: false,
        many_tries_threshold: 3,
        received_at: t0(),
    }
}

/// Run every check. Ids are prefixed per check, so one database serves all.
pub async fn run_all(s: &dyn Storage) {
    parcels_upsert_and_read(s).await;
    routes_assign_attempts_and_queue_notices(s).await;
    route_conflicts_change_nothing(s).await;
    enrollment_is_one_time_and_expires(s).await;
    manifests_keep_the_newest_revision(s).await;
    confirmations_are_idempotent_and_checked(s).await;
    verify_counts_locks_and_reissue_unlocks(s).await;
    close_day_moves_undelivered(s).await;
    notices_lease_retry_and_finish(s).await;
}

pub async fn parcels_upsert_and_read(s: &dyn Storage) {
    let r = s
        .upsert_parcels(vec![parcel("a-1", true), parcel("a-2", false)], t0())
        .await
        .unwrap();
    assert_eq!(r, vec![UpsertStatus::Created, UpsertStatus::Created]);
    let mut p = parcel("a-1", false);
    p.recipient_name = "New Name".into();
    p.track_token = "ignored-for-existing".into();
    assert_eq!(
        s.upsert_parcels(vec![p], t0()).await.unwrap(),
        vec![UpsertStatus::Updated]
    );
    let v = s.parcel("a-1").await.unwrap().unwrap();
    assert_eq!(
        (
            v.recipient_name.as_str(),
            v.requires_code,
            v.status.as_str(),
            v.attempt
        ),
        ("New Name", false, "pending", 0)
    );
    assert_eq!(v.events.len(), 2);
    let c = s
        .parcel_by_track_token("track-a-1-0123456789abcdef")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.parcel_id, "a-1");
    assert!(s.parcel("nope").await.unwrap().is_none());
    assert!(s.parcel_by_track_token("nope").await.unwrap().is_none());
}

pub async fn routes_assign_attempts_and_queue_notices(s: &dyn Storage) {
    s.upsert_parcels(vec![parcel("b-1", true), parcel("b-2", false)], t0())
        .await
        .unwrap();
    let saved = s
        .save_route(route("R-b", "C-b", day(23), &["b-1", "b-2"]), t0())
        .await
        .unwrap();
    assert_eq!((saved.revision, saved.notices_queued), (1, 1));
    let again = s
        .save_route(route("R-b", "C-b", day(23), &["b-1", "b-2"]), t0())
        .await
        .unwrap();
    assert_eq!(
        (again.revision, again.notices_queued),
        (2, 0),
        "same day keeps the code"
    );
    let r = s.route_for_courier("C-b", day(23)).await.unwrap().unwrap();
    assert_eq!(r.route_id, "R-b");
    assert_eq!(
        r.stops[0]
            .parcels
            .iter()
            .map(|p| (p.parcel_id.as_str(), p.attempt))
            .collect::<Vec<_>>(),
        vec![("b-1", 1), ("b-2", 1)]
    );
    // Moving to another day is a new attempt, and the old route changes.
    let moved = s
        .save_route(route("R-b2", "C-b", day(24), &["b-1"]), t0())
        .await
        .unwrap();
    assert_eq!(moved.notices_queued, 1);
    let p = s.parcel("b-1").await.unwrap().unwrap();
    assert_eq!((p.attempt, p.delivery_date), (2, Some(day(24))));
    let old = s.route("R-b", day(23)).await.unwrap().unwrap();
    assert_eq!(old.revision, 3);
    assert_eq!(old.stops[0].parcels.len(), 1);
    // The board lists a day's parcels by their current date.
    let on23 = s.parcel_ids_on(day(23)).await.unwrap();
    let on24 = s.parcel_ids_on(day(24)).await.unwrap();
    assert!(on23.contains(&"b-2".to_string()) && !on23.contains(&"b-1".to_string()));
    assert!(on24.contains(&"b-1".to_string()) && !on24.contains(&"b-2".to_string()));
    // Dropping a parcel from a route makes it pending again.
    s.save_route(route("R-b2", "C-b", day(24), &[]), t0())
        .await
        .unwrap();
    assert_eq!(s.parcel("b-1").await.unwrap().unwrap().status, "pending");
}

pub async fn route_conflicts_change_nothing(s: &dyn Storage) {
    s.upsert_parcels(vec![parcel("c-1", true), parcel("c-2", true)], t0())
        .await
        .unwrap();
    s.save_route(route("R-c", "C-c", day(23), &["c-1"]), t0())
        .await
        .unwrap();
    let e = s
        .save_route(route("R-c2", "C-c", day(23), &["c-2"]), t0())
        .await
        .unwrap_err();
    assert!(
        matches!(e, StorageError::Conflict(_)),
        "one route per courier per day"
    );
    let e = s
        .save_route(route("R-c3", "C-c3", day(23), &["c-1"]), t0())
        .await
        .unwrap_err();
    assert!(
        matches!(e, StorageError::Conflict(_)),
        "one route per parcel per day"
    );
    let e = s
        .save_route(route("R-c", "C-c", day(23), &["c-2", "c-missing"]), t0())
        .await
        .unwrap_err();
    assert!(matches!(e, StorageError::NotFound(_)));
    assert_eq!(
        s.route("R-c", day(23)).await.unwrap().unwrap().revision,
        1,
        "nothing changed"
    );
    assert_eq!(s.parcel("c-2").await.unwrap().unwrap().status, "pending");
    assert!(s.route("R-c2", day(23)).await.unwrap().is_none());
}

pub async fn enrollment_is_one_time_and_expires(s: &dyn Storage) {
    let dev = |id: &str| NewDevice {
        device_id: id.into(),
        name: "n".into(),
        public_key: "pk".into(),
        token_hash: format!("h-{id}"),
    };
    s.create_enrollment("e-code", "C-e", t0() + Duration::minutes(15), t0())
        .await
        .unwrap();
    let d = s
        .enroll_device("e-code", dev("d-e1"), t0())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.courier_id, "C-e");
    assert!(
        s.enroll_device("e-code", dev("d-e2"), t0())
            .await
            .unwrap()
            .is_none(),
        "one-time"
    );
    s.create_enrollment("e-late", "C-e", t0() + Duration::minutes(15), t0())
        .await
        .unwrap();
    assert!(
        s.enroll_device("e-late", dev("d-e3"), t0() + Duration::minutes(16))
            .await
            .unwrap()
            .is_none(),
        "expired"
    );
    assert_eq!(
        s.device_by_token("h-d-e1")
            .await
            .unwrap()
            .unwrap()
            .device_id,
        "d-e1"
    );
    assert!(s.device_by_token("h-d-e2").await.unwrap().is_none());
    assert_eq!(s.devices_of_courier("C-e").await.unwrap().len(), 1);
}

pub async fn manifests_keep_the_newest_revision(s: &dyn Storage) {
    s.upsert_parcels(vec![parcel("m-1", true)], t0())
        .await
        .unwrap();
    s.save_route(route("R-m", "C-m", day(23), &["m-1"]), t0())
        .await
        .unwrap();
    s.save_route(route("R-m", "C-m", day(23), &["m-1"]), t0())
        .await
        .unwrap();
    let r = s.route("R-m", day(23)).await.unwrap().unwrap();
    let m2 = manifest_for(s, &r, "d-m").await;
    assert_eq!(m2.revision, 2);
    let mut older = r.clone();
    older.revision = 1;
    let kept = manifest_for(s, &older, "d-m").await;
    assert_eq!(
        (kept.revision, kept.envelope_json.as_str()),
        (2, "{\"rev\":2}"),
        "an older build never replaces a newer one"
    );
    let got = s.manifest("R-m", day(23), "d-m").await.unwrap().unwrap();
    assert_eq!(got.revision, 2);
    assert!(s.manifest("R-m", day(23), "other").await.unwrap().is_none());
    let current = s
        .current_manifest("C-m", day(23), "d-m")
        .await
        .unwrap()
        .expect("built at the route's revision");
    assert_eq!(
        (
            current.route_id.as_str(),
            current.revision,
            current.envelope_json.as_str()
        ),
        ("R-m", 2, "{\"rev\":2}")
    );
    assert!(
        s.current_manifest("C-m", day(23), "other")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        s.current_manifest("C-m", day(24), "d-m")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        s.current_manifest("C-x", day(23), "d-m")
            .await
            .unwrap()
            .is_none()
    );
    s.save_route(route("R-m", "C-m", day(23), &["m-1"]), t0())
        .await
        .unwrap();
    assert!(
        s.current_manifest("C-m", day(23), "d-m")
            .await
            .unwrap()
            .is_none(),
        "a build older than the route is not current"
    );
}

pub async fn confirmations_are_idempotent_and_checked(s: &dyn Storage) {
    s.upsert_parcels(
        vec![
            parcel("k-1", true),
            parcel("k-2", true),
            parcel("k-3", false),
            parcel("k-4", true),
        ],
        t0(),
    )
    .await
    .unwrap();
    s.save_route(route("R-k", "C-k", day(23), &["k-1", "k-2", "k-3"]), t0())
        .await
        .unwrap();
    enroll(s, "C-k", "d-k").await;
    enroll(s, "C-k2", "d-k2").await;
    let r = s.route("R-k", day(23)).await.unwrap().unwrap();
    let m = manifest_for(s, &r, "d-k").await;
    let ok = confirmation("c-k1", "d-k", 1, &m, "k-1", 1, Some(true));
    assert_eq!(
        s.ingest_confirmation(ok.clone()).await.unwrap(),
        IngestOutcome::Accepted { disputed: false }
    );
    assert_eq!(
        s.ingest_confirmation(ok.clone()).await.unwrap(),
        IngestOutcome::Duplicate
    );
    let mut stolen = ok.clone();
    stolen.device_id = "d-k2".into();
    assert_eq!(
        s.ingest_confirmation(stolen).await.unwrap(),
        IngestOutcome::Rejected("confirmation_id_reused".into(), true)
    );
    assert_eq!(s.parcel("k-1").await.unwrap().unwrap().status, "delivered");
    let bad = confirmation("c-k2", "d-k", 2, &m, "k-2", 1, Some(false));
    assert_eq!(
        s.ingest_confirmation(bad).await.unwrap(),
        IngestOutcome::Accepted { disputed: true }
    );
    assert_eq!(s.parcel("k-2").await.unwrap().unwrap().status, "disputed");
    let none = confirmation("c-k3", "d-k", 3, &m, "k-3", 1, None);
    assert_eq!(
        s.ingest_confirmation(none).await.unwrap(),
        IngestOutcome::Accepted { disputed: false }
    );
    let other_device = confirmation("c-k4", "d-k2", 1, &m, "k-3", 1, None);
    assert_eq!(
        s.ingest_confirmation(other_device).await.unwrap(),
        IngestOutcome::Rejected("not_on_manifest".into(), true)
    );
    let off_manifest = confirmation("c-k5", "d-k", 4, &m, "k-4", 1, Some(true));
    assert_eq!(
        s.ingest_confirmation(off_manifest).await.unwrap(),
        IngestOutcome::Rejected("not_on_manifest".into(), true)
    );
    let wrong_attempt = confirmation("c-k6", "d-k", 4, &m, "k-2", 2, Some(true));
    assert_eq!(
        s.ingest_confirmation(wrong_attempt).await.unwrap(),
        IngestOutcome::Rejected("not_on_manifest".into(), true)
    );
    let unknown = confirmation("c-k7", "d-k", 4, &m, "k-404", 1, Some(true));
    assert_eq!(
        s.ingest_confirmation(unknown).await.unwrap(),
        IngestOutcome::Rejected("unknown_parcel".into(), true)
    );
    // Seq reuse and a gap are signals; late confirmations too.
    let mut reuse = confirmation("c-k8", "d-k", 3, &m, "k-3", 1, None);
    reuse.late = true;
    s.ingest_confirmation(reuse).await.unwrap();
    s.ingest_confirmation(confirmation("c-k9", "d-k", 9, &m, "k-3", 1, None))
        .await
        .unwrap();
    let kinds: Vec<String> = s
        .signals()
        .await
        .unwrap()
        .into_iter()
        .filter(|x| x.device_id.as_deref() == Some("d-k"))
        .map(|x| x.kind)
        .collect();
    for k in ["code_mismatch", "seq_reuse", "late_confirmation", "seq_gap"] {
        assert!(kinds.iter().any(|x| x == k), "{k} missing in {kinds:?}");
    }
}

pub async fn verify_counts_locks_and_reissue_unlocks(s: &dyn Storage) {
    s.upsert_parcels(vec![parcel("v-1", true)], t0())
        .await
        .unwrap();
    s.save_route(route("R-v", "C-v", day(23), &["v-1"]), t0())
        .await
        .unwrap();
    enroll(s, "C-v", "d-v").await;
    let r = s.route("R-v", day(23)).await.unwrap().unwrap();
    let m = manifest_for(s, &r, "d-v").await;
    assert!(s.verify_target("d-other", "v-1").await.unwrap().is_none());
    let t = s.verify_target("d-v", "v-1").await.unwrap().unwrap();
    assert_eq!(
        (t.delivery_date, t.attempt, t.requires_code),
        (day(23), 1, true)
    );
    let try_ = |ok| s.record_verify("d-v", "v-1", day(23), 1, ok, 3, t0());
    assert_eq!(
        try_(false).await.unwrap(),
        VerifyOutcome::Rejected { attempts_left: 2 }
    );
    assert_eq!(try_(true).await.unwrap(), VerifyOutcome::Accepted);
    assert_eq!(
        try_(false).await.unwrap(),
        VerifyOutcome::Rejected { attempts_left: 1 }
    );
    assert_eq!(try_(false).await.unwrap(), VerifyOutcome::Locked);
    assert_eq!(try_(true).await.unwrap(), VerifyOutcome::Locked);
    assert_eq!(
        s.record_verify("d-v", "v-1", day(23), 2, true, 3, t0())
            .await
            .unwrap(),
        VerifyOutcome::Stale
    );
    let moved = s.reissue("v-1", t0()).await.unwrap();
    assert_eq!(moved.routes, vec![("R-v".to_string(), day(23))]);
    let p = s.parcel("v-1").await.unwrap().unwrap();
    assert_eq!((p.attempt, p.locked, p.wrong_tries), (2, false, 0));
    assert_eq!(s.route("R-v", day(23)).await.unwrap().unwrap().revision, 2);
    assert!(
        s.verify_target("d-v", "v-1").await.unwrap().is_none(),
        "attempt 2 is not on a built manifest yet"
    );
    // A handset that never synced the reissue delivers with attempt 1's code:
    // recorded, and dispatch is told.
    s.ingest_confirmation(confirmation("c-v1", "d-v", 1, &m, "v-1", 1, Some(true)))
        .await
        .unwrap();
    let superseded: Vec<_> = s
        .signals()
        .await
        .unwrap()
        .into_iter()
        .filter(|x| x.kind == "superseded_code")
        .collect();
    assert_eq!(superseded.len(), 1, "{superseded:?}");
    assert_eq!(superseded[0].parcel_id.as_deref(), Some("v-1"));
    assert!(matches!(
        s.reissue("v-404", t0()).await,
        Err(StorageError::NotFound(_))
    ));
}

pub async fn close_day_moves_undelivered(s: &dyn Storage) {
    s.upsert_parcels(
        vec![
            parcel("x-1", true),
            parcel("x-2", true),
            parcel("x-3", false),
        ],
        t0(),
    )
    .await
    .unwrap();
    s.save_route(route("R-x", "C-x", day(25), &["x-1", "x-2", "x-3"]), t0())
        .await
        .unwrap();
    enroll(s, "C-x", "d-x").await;
    let r = s.route("R-x", day(25)).await.unwrap().unwrap();
    let m = manifest_for(s, &r, "d-x").await;
    s.ingest_confirmation(confirmation("c-x1", "d-x", 1, &m, "x-1", 1, Some(true)))
        .await
        .unwrap();
    let moved = s.close_day(day(25), day(26), t0()).await.unwrap();
    assert_eq!(moved.parcel_ids, vec!["x-2".to_string(), "x-3".to_string()]);
    assert_eq!(moved.routes, vec![("R-x".to_string(), day(26))]);
    let next = s.route_for_courier("C-x", day(26)).await.unwrap().unwrap();
    assert_eq!(next.revision, 1);
    assert_eq!(
        next.stops[0]
            .parcels
            .iter()
            .map(|p| (p.parcel_id.as_str(), p.attempt))
            .collect::<Vec<_>>(),
        vec![("x-2", 2), ("x-3", 2)]
    );
    assert_eq!(s.parcel("x-1").await.unwrap().unwrap().status, "delivered");
    // The courier's next-day route already uses stop S-1 for another address.
    s.upsert_parcels(vec![parcel("x-4", true), parcel("x-5", true)], t0())
        .await
        .unwrap();
    s.save_route(route("R-y", "C-y", day(25), &["x-4"]), t0())
        .await
        .unwrap();
    let mut other = route("R-y", "C-y", day(26), &["x-5"]);
    other.stops[0].address = "99 Other Road".into();
    s.save_route(other, t0()).await.unwrap();
    let moved = s.close_day(day(25), day(26), t0()).await.unwrap();
    assert_eq!(moved.parcel_ids, vec!["x-4".to_string()]);
    let next = s.route("R-y", day(26)).await.unwrap().unwrap();
    assert_eq!(next.revision, 2);
    let stops: Vec<(&str, &str, usize)> = next
        .stops
        .iter()
        .map(|st| (st.stop_id.as_str(), st.address.as_str(), st.parcels.len()))
        .collect();
    assert_eq!(
        stops,
        vec![
            ("S-1", "99 Other Road", 1),
            ("S-1~2026-11-25", "1 Example Street", 1)
        ]
    );
    // Closing again moves nothing more from that day.
    assert!(
        s.close_day(day(25), day(26), t0())
            .await
            .unwrap()
            .parcel_ids
            .is_empty()
    );
}

pub async fn notices_lease_retry_and_finish(s: &dyn Storage) {
    // Drain everything the other checks queued.
    let far = t0() + Duration::days(1);
    while !s.claim_notices(far, 1, 100).await.unwrap().is_empty() {}
    let later = far + Duration::seconds(2);
    for n in s.claim_notices(later, 1, 1000).await.unwrap() {
        s.notice_sent(n.notice_id, later).await.unwrap();
    }
    s.upsert_parcels(vec![parcel("n-1", true)], far)
        .await
        .unwrap();
    s.save_route(route("R-n", "C-n", day(27), &["n-1"]), later)
        .await
        .unwrap();
    let now = later;
    let jobs = s.claim_notices(now, 60, 10).await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        (jobs[0].parcel_id.as_str(), jobs[0].attempt, jobs[0].tries),
        ("n-1", 1, 0)
    );
    assert!(
        s.claim_notices(now + Duration::seconds(30), 60, 10)
            .await
            .unwrap()
            .is_empty(),
        "leased"
    );
    let again = s
        .claim_notices(now + Duration::seconds(61), 60, 10)
        .await
        .unwrap();
    assert_eq!(
        again.len(),
        1,
        "a claim not acknowledged comes back after the lease"
    );
    let id = again[0].notice_id;
    s.notice_failed(id, "smtp down", Some(now + Duration::seconds(120)))
        .await
        .unwrap();
    assert!(
        s.claim_notices(now + Duration::seconds(100), 60, 10)
            .await
            .unwrap()
            .is_empty(),
        "backoff"
    );
    let j = s
        .claim_notices(now + Duration::seconds(121), 60, 10)
        .await
        .unwrap();
    assert_eq!((j.len(), j[0].tries), (1, 1));
    s.notice_sent(id, now + Duration::seconds(122))
        .await
        .unwrap();
    assert!(
        s.claim_notices(now + Duration::days(9), 60, 10)
            .await
            .unwrap()
            .is_empty(),
        "sent is done"
    );
    let (pending, sent, _) = s.notice_counts().await.unwrap();
    assert_eq!(pending, 0);
    assert!(sent >= 1);
}
