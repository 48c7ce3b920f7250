//! The data lifecycle's storage checks (erase, retention steps, the lease,
//! the anonymous records), run on every backend by `storage_suite!`.

use super::*;
use doorcode_server::domain::lifecycle::{self, AnonRecord};
use doorcode_server::storage::lifecycle::{Erase, Lease};

fn lease(job: &str, holder: &str, until: DateTime<Utc>) -> Lease {
    Lease {
        job: job.into(),
        holder: holder.into(),
        until,
    }
}

fn erase(parcel_id: &str, force: bool, today: NaiveDate) -> Erase {
    Erase {
        parcel_id: parcel_id.into(),
        force,
        today,
    }
}

fn find<'a>(rs: &'a [AnonRecord], id: &str) -> &'a AnonRecord {
    rs.iter()
        .find(|r| r.parcel_id == id)
        .unwrap_or_else(|| panic!("no record of {id} in {rs:?}"))
}

pub async fn erase_keeps_only_the_anonymous_record(s: &dyn Storage) {
    let m = one_route(s, &["P-1", "P-2"]).await;
    assert_eq!(
        ingest(s, delivered("c-1", "D-1", 1, &m, "P-2", 1, Some(true))).await,
        OK
    );
    assert_eq!(
        ingest(s, failed("c-2", 2, &m, "P-1", FailReason::CustomerAbsent)).await,
        OK
    );
    let rev = s.route("R-1", day(23)).await.unwrap().unwrap().revision;

    let e = s
        .erase_parcel(erase("P-2", false, day(23)), t0())
        .await
        .unwrap();
    assert_eq!(e.record.final_state, ParcelState::Delivered);
    assert_eq!(e.routes, [("R-1".to_string(), day(23))]);
    assert_eq!(e.removed.0.get("parcels"), Some(&1));
    assert!(e.removed.0.contains_key("manifests"), "{:?}", e.removed);
    assert!(s.parcel("P-2").await.unwrap().is_none());
    assert!(s.parcel_contact("P-2").await.unwrap().is_none());
    assert!(
        s.parcel_by_track_hash("track-P-2-0123456789abcdef")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        s.manifest(build("R-1", day(23), "D-1"))
            .await
            .unwrap()
            .is_none()
    );
    let r = s.route("R-1", day(23)).await.unwrap().unwrap();
    assert_eq!(r.revision, rev + 1, "a new revision, rebuilt without it");
    let left: Vec<&str> = r.stops[0]
        .parcels
        .iter()
        .map(|p| p.parcel_id.as_str())
        .collect();
    assert_eq!(left, ["P-1"], "the shared stop stays for the other parcel");

    // Still out for delivery (failed, not yet moved on): only with force.
    assert!(matches!(
        s.erase_parcel(erase("P-1", false, day(23)), t0()).await,
        Err(StorageError::Conflict(_))
    ));
    assert!(
        s.parcel("P-1").await.unwrap().is_some(),
        "a refusal changes nothing"
    );
    s.erase_parcel(erase("P-1", true, day(23)), t0())
        .await
        .unwrap();
    let r = s.route("R-1", day(23)).await.unwrap().unwrap();
    assert!(r.stops.is_empty(), "a stop only erased parcels used goes");
    assert!(matches!(
        s.erase_parcel(erase("P-9", true, day(23)), t0()).await,
        Err(StorageError::NotFound(_))
    ));

    let rs = s.records_between(day(23), day(23)).await.unwrap();
    assert_eq!(rs.len(), 2, "{rs:?}");
    assert_eq!(find(&rs, "P-2").final_state, ParcelState::Delivered);
    let p1 = find(&rs, "P-1");
    assert_eq!(
        (p1.final_state, p1.failure, p1.attempt),
        (ParcelState::Failed, Some(FailReason::CustomerAbsent), 1)
    );
    assert!(
        s.records_between(day(24), day(25))
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn retention_purges_in_batches_and_keeps_records(s: &dyn Storage) {
    let m = one_route(s, &["P-1", "P-2", "P-3"]).await;
    s.upsert_parcels(vec![parcel("P-4", false)], t0())
        .await
        .unwrap();
    assert_eq!(
        ingest(s, delivered("c-1", "D-1", 1, &m, "P-1", 1, Some(false))).await,
        IngestOutcome::Accepted { disputed: true }
    );
    assert_eq!(
        ingest(s, failed("c-2", 2, &m, "P-2", FailReason::Refused)).await,
        OK
    );
    for n in s.claim_notices(t0(), 60, 100).await.unwrap() {
        s.notice_sent(n.notice_id, t0()).await.unwrap();
    }
    let live = s.records_between(day(23), day(23)).await.unwrap();
    assert_eq!(
        live.len(),
        4,
        "P-4 was never routed: its day is its creation day"
    );

    // The next morning: the day's manifests and sent notices go, nothing else.
    let next = at(24, 6, 0);
    let cut = lifecycle::cutoffs(&policy(), next, 90);
    let mut removed = lifecycle::Removed::default();
    loop {
        let sw = s.retention_step(cut, 1, next).await.unwrap();
        assert!(sw.purged.is_empty());
        if sw.removed.total() == 0 {
            break;
        }
        removed.merge(&sw.removed);
    }
    assert_eq!(removed.0.get("manifests"), Some(&1), "{removed:?}");
    assert_eq!(removed.0.get("notices"), Some(&3), "{removed:?}");
    assert!(!removed.0.contains_key("parcels"));
    assert!(
        s.manifest(build("R-1", day(23), "D-1"))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(s.notice_counts().await.unwrap(), (0, 0, 0));
    assert!(s.parcel("P-1").await.unwrap().is_some());

    // 91 days on, the window is over: one parcel per step, records stay.
    let later = at(23, 6, 0) + Duration::days(91);
    let cut = lifecycle::cutoffs(&policy(), later, 90);
    let (mut steps, mut purged) = (0, Vec::new());
    loop {
        let sw = s.retention_step(cut, 1, later).await.unwrap();
        assert!(sw.purged.len() <= 1, "bounded: {:?}", sw.purged);
        purged.extend(sw.purged);
        steps += 1;
        if sw.removed.total() == 0 {
            break;
        }
    }
    purged.sort();
    assert_eq!(purged, ["P-1", "P-2", "P-3", "P-4"]);
    assert!(steps >= 5, "{steps} steps");
    for p in ["P-1", "P-2", "P-3", "P-4"] {
        assert!(s.parcel(p).await.unwrap().is_none(), "{p}");
    }
    assert!(s.route("R-1", day(23)).await.unwrap().is_none());
    assert!(signals(s, day(23)).await.is_empty());
    let rs = s.records_between(day(23), day(23)).await.unwrap();
    assert_eq!(rs.len(), 4, "{rs:?}");
    let p1 = find(&rs, "P-1");
    assert_eq!(p1.final_state, ParcelState::Disputed);
    assert!(p1.signals.contains(&SignalKind::CodeMismatch), "{p1:?}");
    assert_eq!(find(&rs, "P-2").failure, Some(FailReason::Refused));
    assert_eq!(find(&rs, "P-3").final_state, ParcelState::Scheduled);
    assert_eq!(find(&rs, "P-4").final_state, ParcelState::Pending);
    let mut wider = s.records_between(day(20), day(23)).await.unwrap();
    let mut rs = rs;
    rs.sort_by(|a, b| a.parcel_id.cmp(&b.parcel_id));
    wider.sort_by(|a, b| a.parcel_id.cmp(&b.parcel_id));
    assert_eq!(rs, wider, "kept records read back the same");
    // A new parcel inside the window is untouched by the next run.
    s.upsert_parcels(vec![parcel("P-5", false)], later)
        .await
        .unwrap();
    let sw = s.retention_step(cut, 10, later).await.unwrap();
    assert_eq!(sw.removed.total(), 0);
    assert!(s.parcel("P-5").await.unwrap().is_some());
}

pub async fn one_node_holds_the_retention_lease(s: &dyn Storage) {
    let until = t0() + Duration::minutes(10);
    assert!(
        s.take_lease(lease("retention", "A", until), t0())
            .await
            .unwrap()
    );
    assert!(
        !s.take_lease(lease("retention", "B", until), t0())
            .await
            .unwrap()
    );
    assert!(
        s.take_lease(lease("other-job", "B", until), t0())
            .await
            .unwrap(),
        "leases are per job"
    );
    let later = t0() + Duration::minutes(5);
    assert!(
        s.take_lease(
            lease("retention", "A", later + Duration::minutes(10)),
            later
        )
        .await
        .unwrap(),
        "the holder renews"
    );
    let t11 = t0() + Duration::minutes(11);
    assert!(
        !s.take_lease(lease("retention", "B", t11), t11)
            .await
            .unwrap(),
        "renewed"
    );
    let t16 = t0() + Duration::minutes(16);
    assert!(
        s.take_lease(lease("retention", "B", t16 + Duration::minutes(10)), t16)
            .await
            .unwrap(),
        "an expired lease passes to another node"
    );
    assert!(
        !s.take_lease(lease("retention", "A", t16), t16)
            .await
            .unwrap()
    );
}
