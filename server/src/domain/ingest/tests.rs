//! The ingest decision's rules, one test each, without a database.

#![allow(clippy::unwrap_used)]

use super::super::testing::*;
use super::*;

fn conf(id: &str, seq: u64, parcel: &str) -> IngestConfirmation {
    IngestConfirmation {
        confirmation_id: id.into(),
        device_id: "D-1".into(),
        seq,
        manifest_id: "M-1".into(),
        revision: 1,
        parcel_id: parcel.into(),
        delivery_date: day(23),
        attempt: 1,
        outcome: Outcome::Delivered,
        reason: None,
        verified: Verified::Offline,
        failed_attempts: 0,
        recorded_at: at(23, 10, 0),
        code_ok: Some(true),
    }
}

fn failed(id: &str, seq: u64, parcel: &str, reason: FailReason) -> IngestConfirmation {
    IngestConfirmation {
        outcome: Outcome::Failed,
        reason: Some(reason),
        verified: Verified::None,
        code_ok: None,
        ..conf(id, seq, parcel)
    }
}

/// D-1 of courier C-1, last seq 0; parcels on its manifest M-1 rev 1.
fn facts(parcels: &[&str]) -> IngestFacts {
    let mut f = IngestFacts {
        device: Some(DeviceFacts {
            device_id: "D-1".into(),
            courier_id: "C-1".into(),
            last_seq: 0,
            revoked: false,
        }),
        ..IngestFacts::default()
    };
    for p in parcels {
        f.parcels.insert(p.to_string(), parcel(p));
        f.manifest_items.insert(ManifestItem {
            manifest_id: "M-1".into(),
            revision: 1,
            parcel_id: p.to_string(),
            delivery_date: day(23),
            attempt: 1,
        });
    }
    f
}

fn kinds(plan: &IngestPlan) -> Vec<SignalKind> {
    plan.changes.signals.iter().map(|s| s.kind).collect()
}

fn one(f: &IngestFacts, c: IngestConfirmation) -> IngestPlan {
    decide(f, &[c], &policy())
}

#[test]
fn a_matching_code_delivers_and_is_stored() {
    let plan = one(&facts(&["P-1"]), conf("c1", 1, "P-1"));
    assert_eq!(plan.outcomes, [IngestOutcome::Accepted { disputed: false }]);
    assert_eq!(
        plan.changes.states,
        [("P-1".to_string(), ParcelState::Delivered)]
    );
    assert_eq!(plan.changes.events[0].kind, EventKind::Delivered);
    assert_eq!(plan.confirmations.len(), 1);
    assert_eq!(plan.last_seq, Some(1));
    assert!(kinds(&plan).is_empty());
}

#[test]
fn a_wrong_code_is_a_dispute_never_a_delivery() {
    let mut c = conf("c1", 1, "P-1");
    c.code_ok = Some(false);
    let plan = one(&facts(&["P-1"]), c);
    assert_eq!(plan.outcomes, [IngestOutcome::Accepted { disputed: true }]);
    assert_eq!(
        plan.changes.states,
        [("P-1".to_string(), ParcelState::Disputed)]
    );
    assert_eq!(kinds(&plan), [SignalKind::CodeMismatch]);
    assert!(plan.confirmations[0].disputed);
}

#[test]
fn no_code_for_a_parcel_that_needs_one_is_delivered_without_code() {
    let mut c = conf("c1", 1, "P-1");
    c.code_ok = None;
    c.verified = Verified::None;
    let plan = one(&facts(&["P-1"]), c.clone());
    assert_eq!(kinds(&plan), [SignalKind::DeliveredWithoutCode]);
    let mut f = facts(&["P-1"]);
    f.parcels.get_mut("P-1").unwrap().requires_code = false;
    let plan = one(&f, c);
    assert_eq!(plan.outcomes, [IngestOutcome::Accepted { disputed: false }]);
    assert!(kinds(&plan).is_empty());
}

#[test]
fn a_dispute_never_undoes_a_delivery() {
    let mut bad = conf("c2", 2, "P-1");
    bad.code_ok = Some(false);
    let plan = decide(&facts(&["P-1"]), &[conf("c1", 1, "P-1"), bad], &policy());
    assert_eq!(
        plan.changes.states,
        [("P-1".to_string(), ParcelState::Delivered)],
        "one state per parcel, the delivery kept"
    );
}

#[test]
fn the_same_id_is_a_duplicate_from_its_device_and_reused_from_another() {
    let mut f = facts(&["P-1"]);
    f.seen.insert("c1".into(), "D-1".into());
    f.seen.insert("c9".into(), "D-2".into());
    let plan = decide(&f, &[conf("c1", 1, "P-1"), conf("c9", 2, "P-1")], &policy());
    assert_eq!(
        plan.outcomes,
        [
            IngestOutcome::Duplicate,
            IngestOutcome::Rejected(RejectReason::ConfirmationIdReused)
        ]
    );
    assert!(plan.changes == Changes::default() && plan.confirmations.is_empty());
}

#[test]
fn an_id_twice_in_one_upload_is_stored_once() {
    let plan = decide(
        &facts(&["P-1"]),
        &[conf("c1", 1, "P-1"), conf("c1", 1, "P-1")],
        &policy(),
    );
    assert_eq!(plan.outcomes[1], IngestOutcome::Duplicate);
    assert_eq!(plan.confirmations.len(), 1);
}

#[test]
fn unknown_parcels_and_parcels_off_the_manifest_are_refused() {
    let f = facts(&["P-1"]);
    assert_eq!(
        one(&f, conf("c1", 1, "P-404")).outcomes,
        [IngestOutcome::Rejected(RejectReason::UnknownParcel)]
    );
    let mut other = facts(&["P-1"]);
    other.parcels.insert("P-2".into(), parcel("P-2"));
    assert_eq!(
        one(&other, conf("c1", 1, "P-2")).outcomes,
        [IngestOutcome::Rejected(RejectReason::NotOnManifest)]
    );
    let mut c = conf("c1", 1, "P-1");
    c.revision = 2;
    assert_eq!(
        one(&f, c).outcomes,
        [IngestOutcome::Rejected(RejectReason::NotOnManifest)],
        "another revision's manifest"
    );
}

#[test]
fn seq_and_revision_above_2_pow_53_are_out_of_range() {
    let f = facts(&["P-1"]);
    for (seq, rev) in [(MAX_COUNTER + 1, 1), (u64::MAX, 1), (1, MAX_COUNTER + 1)] {
        let mut c = conf("c1", seq, "P-1");
        c.revision = rev;
        let plan = one(&f, c);
        assert_eq!(
            plan.outcomes,
            [IngestOutcome::Rejected(RejectReason::OutOfRange)]
        );
        assert!(RejectReason::OutOfRange.permanent());
        assert_eq!(plan.last_seq, None, "a huge seq never reaches last_seq");
    }
    let keys = IngestFacts::keys(&[conf("c1", u64::MAX, "P-1"), conf("c2", 2, "P-1")]);
    assert_eq!(keys.seqs, [2], "no facts are loaded for it either");
}

#[test]
fn a_parcel_moved_to_another_courier_is_not_on_current_route_and_signalled() {
    let mut f = facts(&["P-1"]);
    let p = f.parcels.get_mut("P-1").unwrap();
    p.route_id = Some("R-2".into());
    p.route_courier = Some("C-2".into());
    let plan = one(&f, conf("c1", 4, "P-1"));
    assert_eq!(
        plan.outcomes,
        [IngestOutcome::Rejected(RejectReason::NotOnCurrentRoute)]
    );
    assert!(RejectReason::NotOnCurrentRoute.permanent());
    assert!(plan.changes.states.is_empty() && plan.changes.events.is_empty());
    assert!(
        plan.confirmations.is_empty(),
        "the parcel's state does not change"
    );
    let s = &plan.changes.signals[0];
    assert_eq!(
        (s.kind, s.code_matched, s.device_id.as_deref()),
        (SignalKind::StaleManifest, Some(true), Some("D-1"))
    );
    assert!(s.detail.contains("code matched"), "{}", s.detail);
    assert_eq!(plan.last_seq, Some(4), "its seq was used");
}

#[test]
fn stale_manifest_says_whether_the_code_matched() {
    let mut f = facts(&["P-1"]);
    f.parcels.get_mut("P-1").unwrap().route_courier = Some("C-2".into());
    let mut c = conf("c1", 1, "P-1");
    c.code_ok = Some(false);
    let s = &one(&f, c).changes.signals[0];
    assert_eq!(s.code_matched, Some(false));
    assert!(s.detail.contains("did not match"), "{}", s.detail);
    let s = &one(&f, failed("c2", 1, "P-1", FailReason::CustomerAbsent))
        .changes
        .signals[0];
    assert_eq!(s.code_matched, None);
}

#[test]
fn an_attempt_replaced_by_a_reissue_is_not_on_current_route() {
    let mut f = facts(&["P-1"]);
    f.parcels.get_mut("P-1").unwrap().attempt = 2;
    let plan = one(&f, conf("c1", 1, "P-1"));
    assert_eq!(
        plan.outcomes,
        [IngestOutcome::Rejected(RejectReason::NotOnCurrentRoute)]
    );
    let s = &plan.changes.signals[0];
    assert_eq!(s.kind, SignalKind::StaleManifest);
    assert!(s.detail.contains("attempt 2 replaced it"), "{}", s.detail);
}

#[test]
fn a_day_closed_before_the_upload_makes_it_stale() {
    let mut f = facts(&["P-1"]);
    let p = f.parcels.get_mut("P-1").unwrap();
    p.delivery_date = Some(day(24));
    p.attempt = 2;
    let plan = one(&f, failed("c1", 1, "P-1", FailReason::CustomerAbsent));
    assert_eq!(
        plan.outcomes,
        [IngestOutcome::Rejected(RejectReason::NotOnCurrentRoute)]
    );
    assert!(plan.changes.signals[0].detail.contains("2026-11-24"));
}

#[test]
fn stale_manifest_is_raised_once_per_confirmation() {
    let mut f = facts(&["P-1"]);
    f.parcels.get_mut("P-1").unwrap().route_courier = None;
    let c = conf("c1", 1, "P-1");
    let plan = decide(&f, &[c.clone(), c.clone()], &policy());
    assert_eq!(kinds(&plan), [SignalKind::StaleManifest]);
    f.stale_signalled.insert("c1".into());
    let again = one(&f, c);
    assert_eq!(
        again.outcomes,
        [IngestOutcome::Rejected(RejectReason::NotOnCurrentRoute)]
    );
    assert!(kinds(&again).is_empty(), "a re-upload adds no row");
}

#[test]
fn a_revoked_or_unknown_device_is_refused() {
    let mut f = facts(&["P-1"]);
    f.device.as_mut().unwrap().revoked = true;
    assert_eq!(
        one(&f, conf("c1", 1, "P-1")).outcomes,
        [IngestOutcome::Rejected(RejectReason::DeviceRevoked)]
    );
    f.device = None;
    assert_eq!(
        one(&f, conf("c1", 1, "P-1")).outcomes,
        [IngestOutcome::Rejected(RejectReason::WrongDevice)]
    );
}

#[test]
fn a_seq_jump_is_a_gap_and_a_used_seq_is_a_reuse() {
    let f = facts(&["P-1", "P-2", "P-3"]);
    let plan = decide(
        &f,
        &[
            conf("c1", 1, "P-1"),
            conf("c2", 5, "P-2"),
            conf("c3", 5, "P-3"),
        ],
        &policy(),
    );
    assert_eq!(kinds(&plan), [SignalKind::SeqGap, SignalKind::SeqReuse]);
    assert!(plan.changes.signals[0].detail.contains("from 1 to 5"));
    assert_eq!(plan.last_seq, Some(5));
    let mut f = facts(&["P-1"]);
    f.used_seqs.insert(1);
    assert_eq!(
        kinds(&one(&f, conf("c1", 1, "P-1"))),
        [SignalKind::SeqReuse]
    );
}

#[test]
fn recorded_after_the_day_is_late() {
    let mut c = conf("c1", 1, "P-1");
    c.recorded_at = at(24, 0, 0);
    assert_eq!(
        kinds(&one(&facts(&["P-1"]), c)),
        [SignalKind::LateConfirmation]
    );
    let mut c = conf("c1", 1, "P-1");
    c.recorded_at = at(23, 23, 59);
    assert!(kinds(&one(&facts(&["P-1"]), c)).is_empty());
}

#[test]
fn three_wrong_tries_at_the_door_or_a_lockout_are_many_wrong_tries() {
    let mut c = conf("c1", 1, "P-1");
    c.failed_attempts = 2;
    assert!(kinds(&one(&facts(&["P-1"]), c.clone())).is_empty());
    c.failed_attempts = 3;
    assert_eq!(
        kinds(&one(&facts(&["P-1"]), c)),
        [SignalKind::ManyWrongTries]
    );
    let mut c = failed("c1", 1, "P-1", FailReason::LockedOut);
    c.failed_attempts = 5;
    let plan = one(&facts(&["P-1"]), c);
    assert_eq!(
        kinds(&plan),
        [SignalKind::ManyWrongTries],
        "one signal, not two"
    );
    assert!(plan.changes.signals[0].detail.contains("locked out"));
}

#[test]
fn fewer_tries_than_the_server_counted_online_is_tries_mismatch() {
    let mut f = facts(&["P-1"]);
    f.parcels.get_mut("P-1").unwrap().wrong_tries = 4;
    let mut c = conf("c1", 1, "P-1");
    c.failed_attempts = 0;
    let plan = one(&f, c.clone());
    assert_eq!(kinds(&plan), [SignalKind::TriesMismatch]);
    assert!(plan.changes.signals[0].detail.contains("counted 4"));
    c.failed_attempts = 4;
    assert_eq!(kinds(&one(&f, c)), [SignalKind::ManyWrongTries]);
}

#[test]
fn a_failed_attempt_fails_a_scheduled_parcel_only() {
    let plan = one(
        &facts(&["P-1"]),
        failed("c1", 1, "P-1", FailReason::CustomerAbsent),
    );
    assert_eq!(
        plan.changes.states,
        [("P-1".to_string(), ParcelState::Failed)]
    );
    assert!(plan.changes.events[0].detail.contains("customer_absent"));
    let mut f = facts(&["P-1"]);
    f.parcels.get_mut("P-1").unwrap().state = ParcelState::Delivered;
    let plan = one(&f, failed("c1", 1, "P-1", FailReason::Other));
    assert!(plan.changes.states.is_empty());
}
