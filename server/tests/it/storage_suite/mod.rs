//! The storage test suite: every backend runs every check, one test each, on
//! a fresh store. A test file defines `async fn store(name: &str) ->
//! Option<F>`, where `F` has `fn storage(&self) -> &dyn Storage` and
//! `async fn finish(self)`, then calls [`storage_suite!`]. The list of checks
//! lives only in the macro, so no backend can skip one (the model is
//! matrix-rust-sdk's `statestore_integration_tests!`).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

/// One `#[tokio::test]` per check for the backend whose `store` is in scope.
#[macro_export]
macro_rules! storage_suite {
    () => {
        $crate::storage_suite!(@tests
            parcels_upsert_and_read,
            requires_code_is_frozen_once_routed,
            routes_assign_attempts_and_queue_notices,
            the_same_parcels_and_route_sent_again_change_nothing,
            route_conflicts_change_nothing,
            a_route_for_a_past_day_is_refused,
            concurrent_route_saves_all_succeed,
            enrollment_is_one_time_and_expires,
            manifests_keep_the_newest_revision,
            revoked_and_unseen_devices_get_no_builds,
            confirmations_are_idempotent,
            the_full_code_check_decides_delivered_or_disputed,
            only_parcels_on_the_devices_manifest_are_confirmed,
            an_upload_is_decided_in_order,
            a_parcel_moved_to_another_courier_is_not_on_current_route,
            a_route_given_to_another_courier_is_not_on_current_route,
            an_old_attempt_after_a_reissue_is_not_on_current_route,
            an_upload_after_the_day_closed_is_not_on_current_route,
            seq_gaps_and_reuse_are_signalled,
            late_confirmations_are_signalled,
            seq_and_revision_above_2_pow_53_are_out_of_range,
            many_wrong_tries_at_the_door_are_signalled,
            fewer_tries_than_counted_online_is_tries_mismatch,
            verify_counts_locks_and_reissue_unlocks,
            the_third_wrong_online_try_is_many_wrong_tries,
            verify_is_refused_outside_the_codes_day,
            verify_is_refused_off_the_current_route,
            a_reissue_gives_a_new_tracking_link,
            a_held_parcel_bumps_its_route_is_carried_held_and_a_reissue_releases_it,
            close_day_moves_undelivered,
            close_day_renames_a_taken_stop,
            close_day_never_uses_another_couriers_route,
            signals_page_by_day,
            every_signal_kind_is_raised_and_read_back,
            notices_lease_retry_and_finish,
            a_claimed_notice_brings_back_its_last_error,
            erase_keeps_only_the_anonymous_record,
            retention_purges_in_batches_and_keeps_records,
            one_node_holds_the_retention_lease,
            key_fingerprints_first_writer_wins,
            key_fingerprint_replaced_only_if_unchanged,
            track_links_are_found_by_their_hash_only,
            a_fresh_store_has_no_clear_track_tokens,
            a_rate_counter_counts_in_its_window_then_restarts,
            concurrent_rate_hits_each_get_their_own_count,
            a_full_limit_takes_no_new_key_but_counts_known_ones,
            expired_rate_rows_make_room_in_bounded_batches,
            a_refund_gives_back_one_hit_of_the_current_window,
            board_sessions_expire_and_sign_out_deletes_them,
            expired_shared_state_is_swept_in_batches,
        );
    };
    (@tests $($check:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $check() {
            let Some(f) = store(stringify!($check)).await else {
                return;
            };
            $crate::storage_suite::$check(f.storage()).await;
            f.finish().await;
        }
    )*};
}

use chrono::{DateTime, Duration, NaiveDate, Utc};
use doorcode_core::confirmation::{FailReason, Outcome, Verified};
use doorcode_server::config::Calendar;
use doorcode_server::domain::verify::{self, Refused, Target, VerifyInput};
use doorcode_server::domain::{
    At, EventKind, Label, ParcelState, Policy, RejectReason, RouteStatus, SignalKind, TrackRef,
    devices,
};
use doorcode_server::storage::*;
use std::collections::BTreeSet;

mod lifecycle;
mod shared;
pub use lifecycle::*;
pub use shared::*;

// ---------- fixtures ----------

/// The pinned clock: 06:00 UTC on Monday 23 November 2026.
pub fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-23T06:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

pub fn day(n: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, n).unwrap()
}

/// `hh:mm` UTC on 2026-11-`n`.
pub fn at(n: u32, hh: u32, mm: u32) -> DateTime<Utc> {
    day(n).and_hms_opt(hh, mm, 0).unwrap().and_utc()
}

pub fn policy() -> Policy {
    Policy {
        max_attempts: 3,
        many_tries_threshold: 3,
        calendar: Calendar::default(),
    }
}

pub fn parcel(id: &str, requires_code: bool) -> NewParcel {
    NewParcel {
        parcel_id: id.into(),
        details: doorcode_server::domain::parcels::ParcelDetails {
            recipient_name: format!("Customer {id}"),
            email: Some(format!("{id}@example.com")),
            phone: None,
            address: "1 Example Street".into(),
            value: 10.0,
            currency: "EUR".into(),
            requires_code,
        },
        track: TrackRef {
            nonce: format!("nonce-{id}"),
            hash: format!("track-{id}-0123456789abcdef"),
        },
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

/// Decisions at `now` under the policy `p`.
fn at_time(now: DateTime<Utc>, p: &Policy) -> At<'_> {
    At { now, policy: p }
}

async fn save(s: &dyn Storage, r: RouteInput) -> RouteSaved {
    s.save_route(r, at_time(t0(), &policy())).await.unwrap()
}

async fn enroll(s: &dyn Storage, courier: &str, device: &str) -> Device {
    let code = format!("code-{device}");
    s.create_enrollment(enrollment(&code, courier, t0() + Duration::minutes(15)))
        .await
        .unwrap();
    s.enroll_device(
        NewDevice {
            enrollment: code,
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
        manifest_id: format!("m-{}-{device}-{}", route.route_id, route.revision),
        revision: route.revision,
        envelope_json: format!("{{\"rev\":{}}}", route.revision),
        items,
    })
    .await
    .unwrap()
}

/// One courier `C-1` with device `D-1` and route `R-1` on the 23rd for
/// `parcels` (all needing a code), and the device's manifest.
async fn one_route(s: &dyn Storage, parcels: &[&str]) -> StoredManifest {
    s.upsert_parcels(parcels.iter().map(|p| parcel(p, true)).collect(), t0())
        .await
        .unwrap();
    save(s, route("R-1", "C-1", day(23), parcels)).await;
    enroll(s, "C-1", "D-1").await;
    let r = s.route("R-1", day(23)).await.unwrap().unwrap();
    manifest_for(s, &r, "D-1").await
}

/// A delivery of `parcel` at `attempt` on manifest `m`; `code_ok` is the
/// app's verdict on the code (None: no code).
fn delivered(
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
        outcome: Outcome::Delivered,
        reason: None,
        verified: if code_ok.is_some() {
            Verified::Offline
        } else {
            Verified::None
        },
        failed_attempts: 0,
        recorded_at: t0(),
        code_ok,
    }
}

fn failed(
    id: &str,
    seq: u64,
    m: &StoredManifest,
    parcel: &str,
    reason: FailReason,
) -> IngestConfirmation {
    IngestConfirmation {
        outcome: Outcome::Failed,
        reason: Some(reason),
        verified: Verified::None,
        code_ok: None,
        ..delivered(id, "D-1", seq, m, parcel, 1, None)
    }
}

async fn ingest(s: &dyn Storage, c: IngestConfirmation) -> IngestOutcome {
    s.ingest_confirmation(c, at_time(t0(), &policy()))
        .await
        .unwrap()
}

fn enrollment(code: &str, courier: &str, expires_at: DateTime<Utc>) -> NewEnrollment {
    NewEnrollment {
        code_hash: code.into(),
        courier_id: courier.into(),
        expires_at,
        created_at: t0(),
    }
}

fn build<'a>(route_id: &'a str, d: NaiveDate, device_id: &'a str) -> BuildKey<'a> {
    BuildKey {
        route_id,
        date: d,
        device_id,
    }
}

/// A device of `courier` with this id, for the facts reads that take one.
fn device(courier: &str, id: &str) -> Device {
    Device {
        device_id: id.into(),
        courier_id: courier.into(),
        name: "phone".into(),
        public_key: "pk".into(),
        revoked_at: None,
        last_seen_at: t0(),
        enrolled_at: t0(),
    }
}

/// Close day `d` (a weekday: the next working day is the next day).
async fn close(s: &dyn Storage, d: NaiveDate) -> Moved {
    let c = s.close_day(d, at_time(t0(), &policy())).await.unwrap();
    assert_eq!(c.next_date, d.succ_opt().unwrap());
    c.moved
}

fn rejected(r: RejectReason) -> IngestOutcome {
    IngestOutcome::Rejected(r)
}

const OK: IngestOutcome = IngestOutcome::Accepted { disputed: false };

/// Every signal about `d`, page by page.
async fn signals(s: &dyn Storage, d: NaiveDate) -> Vec<Signal> {
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let page = s.signals_on(d, after, 2).await.unwrap();
        let Some(last) = page.last() else {
            return all;
        };
        after = last.id;
        all.extend(page);
    }
}

/// Signals as (kind, parcel).
fn by_parcel(sig: &[Signal]) -> Vec<(SignalKind, Option<&str>)> {
    sig.iter()
        .map(|x| (x.kind, x.parcel_id.as_deref()))
        .collect()
}

/// Signals as (kind, confirmation).
fn by_confirmation(sig: &[Signal]) -> Vec<(SignalKind, Option<&str>)> {
    sig.iter()
        .map(|x| (x.kind, x.confirmation_id.as_deref()))
        .collect()
}

/// Up to 10 due notices claimed at `at` for a 60 s lease.
async fn claim(s: &dyn Storage, at: DateTime<Utc>) -> Vec<NoticeJob> {
    s.claim_notices(at, 60, 10).await.unwrap()
}

async fn kinds(s: &dyn Storage, d: NaiveDate) -> Vec<SignalKind> {
    signals(s, d).await.into_iter().map(|x| x.kind).collect()
}

async fn state(s: &dyn Storage, parcel: &str) -> (ParcelState, u32) {
    let p = s.parcel(parcel).await.unwrap().unwrap();
    (p.status, p.attempt)
}

async fn try_code(s: &dyn Storage, parcel: &str, attempt: u32, ok: bool) -> VerifyOutcome {
    let input = VerifyInput {
        device_id: "D-1".into(),
        parcel_id: parcel.into(),
        target: Target {
            delivery_date: day(23),
            attempt,
        },
        ok,
    };
    s.record_verify(input, at_time(at(23, 9, 0), &policy()))
        .await
        .unwrap()
}

/// A stored link whose lookup value is `hash` (the storage never sees a token).
pub fn tref(hash: &str) -> TrackRef {
    TrackRef {
        nonce: format!("nonce-of-{hash}"),
        hash: hash.into(),
    }
}

async fn reissue(s: &dyn Storage, parcel: &str, token: &str) -> Moved {
    let input = ReissueInput {
        parcel_id: parcel.into(),
        track: tref(token),
        requires_code: None,
    };
    s.reissue(input, t0()).await.unwrap()
}

// ---------- parcels and routes ----------

pub async fn parcels_upsert_and_read(s: &dyn Storage) {
    let r = s
        .upsert_parcels(vec![parcel("a-1", true), parcel("a-2", false)], t0())
        .await
        .unwrap();
    assert_eq!(r, vec![UpsertStatus::Created, UpsertStatus::Created]);
    let mut p = parcel("a-1", false);
    p.details.recipient_name = "New Name".into();
    p.track = tref("ignored-for-existing");
    assert_eq!(
        s.upsert_parcels(vec![p], t0()).await.unwrap(),
        vec![UpsertStatus::Updated],
        "not on a route yet: the code policy may change"
    );
    let v = s.parcel("a-1").await.unwrap().unwrap();
    assert_eq!(
        (
            v.recipient_name.as_str(),
            v.requires_code,
            v.status,
            v.attempt
        ),
        ("New Name", false, ParcelState::Pending, 0)
    );
    let events: Vec<EventKind> = v.events.iter().map(|e| e.kind).collect();
    assert_eq!(events, [EventKind::Created, EventKind::Updated]);
    let c = s
        .parcel_by_track_hash("track-a-1-0123456789abcdef")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.parcel_id, "a-1");
    assert!(s.parcel("nope").await.unwrap().is_none());
    assert!(s.parcel_by_track_hash("nope").await.unwrap().is_none());
}

pub async fn requires_code_is_frozen_once_routed(s: &dyn Storage) {
    s.upsert_parcels(vec![parcel("f-1", true)], t0())
        .await
        .unwrap();
    save(s, route("R-f", "C-f", day(23), &["f-1"])).await;
    let mut change = parcel("f-1", false);
    change.details.recipient_name = "Someone Else".into();
    assert_eq!(
        s.upsert_parcels(vec![change, parcel("f-2", false)], t0())
            .await
            .unwrap(),
        [
            UpsertStatus::Rejected(RejectReason::RequiresCodeFrozen),
            UpsertStatus::Created
        ],
        "the other items of the batch still apply"
    );
    let v = s.parcel("f-1").await.unwrap().unwrap();
    assert_eq!(
        (v.requires_code, v.recipient_name.as_str()),
        (true, "Customer f-1"),
        "nothing of the refused item changed"
    );
    let mut same = parcel("f-1", true);
    same.details.address = "2 Example Street".into();
    assert_eq!(
        s.upsert_parcels(vec![same], t0()).await.unwrap(),
        [UpsertStatus::Updated]
    );
    // A reissue applies a new policy from the next attempt.
    let input = ReissueInput {
        parcel_id: "f-1".into(),
        track: tref("track-f-1-second"),
        requires_code: Some(false),
    };
    s.reissue(input, t0()).await.unwrap();
    let r = s.route("R-f", day(23)).await.unwrap().unwrap();
    let p = &r.stops[0].parcels[0];
    assert_eq!((p.attempt, p.requires_code), (2, false));
    let (pending, ..) = s.notice_counts().await.unwrap();
    assert_eq!(
        pending, 1,
        "only attempt 1 had a notice: attempt 2 needs no code"
    );
}

pub async fn routes_assign_attempts_and_queue_notices(s: &dyn Storage) {
    s.upsert_parcels(vec![parcel("b-1", true), parcel("b-2", false)], t0())
        .await
        .unwrap();
    let saved = save(s, route("R-b", "C-b", day(23), &["b-1", "b-2"])).await;
    assert_eq!((saved.revision, saved.notices_queued), (1, 1));
    let again = save(s, route("R-b", "C-b", day(23), &["b-2", "b-1"])).await;
    assert_eq!(
        (again.status, again.revision, again.notices_queued),
        (RouteStatus::Updated, 2, 0),
        "same day keeps the code"
    );
    let r = s.route_for_courier("C-b", day(23)).await.unwrap().unwrap();
    assert_eq!(r.route_id, "R-b");
    assert_eq!(r.stops[0].recipient, "Customer b-2");
    assert_eq!(
        r.stops[0]
            .parcels
            .iter()
            .map(|p| (p.parcel_id.as_str(), p.attempt))
            .collect::<Vec<_>>(),
        vec![("b-2", 1), ("b-1", 1)]
    );
    // Moving to another day is a new attempt, and the old route changes.
    let moved = save(s, route("R-b2", "C-b", day(24), &["b-1"])).await;
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
    save(s, route("R-b2", "C-b", day(24), &[])).await;
    assert_eq!(state(s, "b-1").await.0, ParcelState::Pending);
}

pub async fn the_same_parcels_and_route_sent_again_change_nothing(s: &dyn Storage) {
    let items = || vec![parcel("u-1", true), parcel("u-2", false)];
    s.upsert_parcels(items(), t0()).await.unwrap();
    let first = save(s, route("R-u", "C-u", day(23), &["u-1", "u-2"])).await;
    assert_eq!((first.status, first.revision), (RouteStatus::Created, 1));
    let history = |v: ParcelView| v.events.iter().map(|e| e.kind).collect::<Vec<_>>();
    let before = history(s.parcel("u-1").await.unwrap().unwrap());
    let (pending, ..) = s.notice_counts().await.unwrap();

    assert_eq!(
        s.upsert_parcels(items(), t0()).await.unwrap(),
        vec![UpsertStatus::Unchanged, UpsertStatus::Unchanged]
    );
    let again = save(s, route("R-u", "C-u", day(23), &["u-1", "u-2"])).await;
    assert_eq!(
        (again.status, again.revision, again.notices_queued),
        (RouteStatus::Unchanged, 1, 0)
    );
    assert_eq!(history(s.parcel("u-1").await.unwrap().unwrap()), before);
    assert_eq!(s.notice_counts().await.unwrap().0, pending, "no notice");
    assert_eq!(s.route("R-u", day(23)).await.unwrap().unwrap().revision, 1);

    let mut renamed = parcel("u-2", false);
    renamed.details.recipient_name = "Another Name".into();
    assert_eq!(
        s.upsert_parcels(vec![renamed], t0()).await.unwrap(),
        vec![UpsertStatus::Updated],
        "one field differs"
    );
    let other = save(s, route("R-u", "C-u2", day(23), &["u-1", "u-2"])).await;
    assert_eq!(
        (other.status, other.revision),
        (RouteStatus::Updated, 2),
        "another courier is a change"
    );
}

pub async fn route_conflicts_change_nothing(s: &dyn Storage) {
    s.upsert_parcels(vec![parcel("c-1", true), parcel("c-2", true)], t0())
        .await
        .unwrap();
    save(s, route("R-c", "C-c", day(23), &["c-1"])).await;
    let p = policy();
    let e = s
        .save_route(route("R-c2", "C-c", day(23), &["c-2"]), at_time(t0(), &p))
        .await
        .unwrap_err();
    assert!(
        matches!(e, StorageError::Conflict(_)),
        "one route per courier per day"
    );
    let e = s
        .save_route(route("R-c3", "C-c3", day(23), &["c-1"]), at_time(t0(), &p))
        .await
        .unwrap_err();
    assert!(
        matches!(e, StorageError::Conflict(_)),
        "one route per parcel per day"
    );
    let e = s
        .save_route(
            route("R-c", "C-c", day(23), &["c-2", "c-missing"]),
            at_time(t0(), &p),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, StorageError::NotFound(_)));
    assert_eq!(
        s.route("R-c", day(23)).await.unwrap().unwrap().revision,
        1,
        "nothing changed"
    );
    assert_eq!(state(s, "c-2").await.0, ParcelState::Pending);
    assert!(s.route("R-c2", day(23)).await.unwrap().is_none());
}

/// An importer sending routes eight at a time: every save lands (the
/// PostgreSQL backend once failed them against each other past its retries).
pub async fn concurrent_route_saves_all_succeed(s: &dyn Storage) {
    let ids: Vec<Vec<String>> = (0..8)
        .map(|r| (0..20).map(|i| format!("cr{r}-{i}")).collect())
        .collect();
    let parcels = ids.iter().flatten().map(|id| parcel(id, true)).collect();
    s.upsert_parcels(parcels, t0()).await.unwrap();
    let one = |r: usize| {
        // A stop per parcel, as real routes have.
        let mut input = route(&format!("R-cr{r}"), &format!("C-cr{r}"), day(23), &[]);
        input.stops = ids[r]
            .iter()
            .enumerate()
            .map(|(i, id)| RouteStopInput {
                stop_id: format!("S-{i}"),
                address: format!("{i} Example Street"),
                recipient: None,
                parcel_ids: vec![id.clone()],
            })
            .collect();
        async move { s.save_route(input, at_time(t0(), &policy())).await }
    };
    // The notice sender claims the new notices meanwhile, as on a live node.
    let sender = async {
        for _ in 0..20 {
            s.claim_notices(t0(), 60, 50).await.unwrap();
            tokio::task::yield_now().await;
        }
    };
    let (all, ()) = tokio::join!(
        async {
            tokio::join!(
                one(0),
                one(1),
                one(2),
                one(3),
                one(4),
                one(5),
                one(6),
                one(7)
            )
        },
        sender
    );
    for (r, saved) in [all.0, all.1, all.2, all.3, all.4, all.5, all.6, all.7]
        .into_iter()
        .enumerate()
    {
        assert!(saved.is_ok(), "route {r}: {saved:?}");
        assert!(
            s.route(&format!("R-cr{r}"), day(23))
                .await
                .unwrap()
                .is_some()
        );
    }
}

pub async fn a_route_for_a_past_day_is_refused(s: &dyn Storage) {
    s.upsert_parcels(vec![parcel("y-1", true)], t0())
        .await
        .unwrap();
    let e = s
        .save_route(
            route("R-y", "C-y", day(22), &["y-1"]),
            at_time(t0(), &policy()),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, StorageError::Invalid(ref m) if m.contains("past")),
        "{e}"
    );
    assert!(s.route("R-y", day(22)).await.unwrap().is_none());
    assert_eq!(state(s, "y-1").await, (ParcelState::Pending, 0));
    let (pending, ..) = s.notice_counts().await.unwrap();
    assert_eq!(pending, 0, "no code was issued for a past day");
}

// ---------- devices and manifests ----------

pub async fn enrollment_is_one_time_and_expires(s: &dyn Storage) {
    let dev = |code: &str, id: &str| NewDevice {
        enrollment: code.into(),
        device_id: id.into(),
        name: "n".into(),
        public_key: "pk".into(),
        token_hash: format!("h-{id}"),
    };
    s.create_enrollment(enrollment("e-code", "C-e", t0() + Duration::minutes(15)))
        .await
        .unwrap();
    let d = s
        .enroll_device(dev("e-code", "d-e1"), t0())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.courier_id, "C-e");
    assert!(
        s.enroll_device(dev("e-code", "d-e2"), t0())
            .await
            .unwrap()
            .is_none(),
        "one-time"
    );
    s.create_enrollment(enrollment("e-late", "C-e", t0() + Duration::minutes(15)))
        .await
        .unwrap();
    assert!(
        s.enroll_device(dev("e-late", "d-e3"), t0() + Duration::minutes(16))
            .await
            .unwrap()
            .is_none(),
        "expired"
    );
    let got = s.device_by_token("h-d-e1").await.unwrap().unwrap();
    assert_eq!(
        (got.device_id.as_str(), got.last_seen_at, got.revoked_at),
        ("d-e1", t0(), None),
        "seen at enrollment"
    );
    assert!(s.device_by_token("h-d-e2").await.unwrap().is_none());
    assert_eq!(s.devices_of_courier("C-e").await.unwrap().len(), 1);
}

pub async fn manifests_keep_the_newest_revision(s: &dyn Storage) {
    s.upsert_parcels(vec![parcel("m-1", true), parcel("m-2", true)], t0())
        .await
        .unwrap();
    save(s, route("R-m", "C-m", day(23), &["m-1"])).await;
    save(s, route("R-m", "C-m", day(23), &["m-1", "m-2"])).await;
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
    let got = s
        .manifest(build("R-m", day(23), "d-m"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.revision, 2);
    assert!(
        s.manifest(build("R-m", day(23), "other"))
            .await
            .unwrap()
            .is_none()
    );
    // The device with its token, and its current build, in one read.
    enroll(s, "C-m", "d-m").await;
    let (dev, current) = s
        .device_with_manifest(pull("hash-d-m", day(23), None))
        .await
        .unwrap()
        .map(|(d, c)| (d, c.stored()))
        .expect("the device");
    assert_eq!(
        (dev.device_id.as_str(), dev.courier_id.as_str()),
        ("d-m", "C-m")
    );
    let current = current.expect("built at the route's revision");
    assert_eq!(
        (
            current.route_id.as_str(),
            current.device_id.as_str(),
            current.delivery_date,
            current.manifest_id.as_str(),
            current.revision,
            current.envelope_json.as_str()
        ),
        (
            "R-m",
            "d-m",
            day(23),
            m2.manifest_id.as_str(),
            2,
            "{\"rev\":2}"
        )
    );
    // The build the client holds, when current, is named without its body;
    // an older tag reads the body.
    let held = BuildTag {
        manifest_id: m2.manifest_id.clone(),
        revision: 2,
    };
    let (_, current) = s
        .device_with_manifest(pull("hash-d-m", day(23), Some(&held)))
        .await
        .unwrap()
        .expect("the device");
    assert!(matches!(current, CurrentBuild::Held), "{current:?}");
    let older = BuildTag {
        revision: 1,
        ..held
    };
    let (_, current) = s
        .device_with_manifest(pull("hash-d-m", day(23), Some(&older)))
        .await
        .unwrap()
        .expect("the device");
    assert!(
        matches!(&current, CurrentBuild::Stored(m) if m.revision == 2),
        "{current:?}"
    );
    // Another device of the courier has no build; another day has no route;
    // a device of another courier has none of this route's builds.
    enroll(s, "C-m", "other").await;
    enroll(s, "C-x", "d-x").await;
    manifest_for(s, &r, "d-x").await;
    for (token, date) in [("hash-other", 23), ("hash-d-m", 24), ("hash-d-x", 23)] {
        let (_, m) = s
            .device_with_manifest(pull(token, day(date), None))
            .await
            .unwrap()
            .map(|(d, c)| (d, c.stored()))
            .expect("the device");
        assert!(m.is_none(), "{token} on day {date}");
    }
    assert!(
        s.device_with_manifest(pull("hash-nobody", day(23), None))
            .await
            .unwrap()
            .map(|(d, c)| (d, c.stored()))
            .is_none()
    );
    // A revoked device is still read, revoked, for auth to refuse.
    s.revoke_device("other", t0()).await.unwrap();
    let (revoked, _) = s
        .device_with_manifest(pull("hash-other", day(23), None))
        .await
        .unwrap()
        .map(|(d, c)| (d, c.stored()))
        .expect("the device");
    assert!(revoked.revoked_at.is_some());
    save(s, route("R-m", "C-m", day(23), &["m-1"])).await;
    let (_, stale) = s
        .device_with_manifest(pull("hash-d-m", day(23), None))
        .await
        .unwrap()
        .map(|(d, c)| (d, c.stored()))
        .expect("the device");
    assert!(
        stale.is_none(),
        "a build older than the route is not current"
    );
}

pub async fn revoked_and_unseen_devices_get_no_builds(s: &dyn Storage) {
    let m = one_route(s, &["r-1"]).await;
    enroll(s, "C-1", "D-2").await;
    enroll(s, "C-1", "D-3").await;
    let now = t0() + Duration::days(31);
    s.device_seen("D-1", now - Duration::hours(2))
        .await
        .unwrap();
    s.device_seen("D-3", now - Duration::hours(2))
        .await
        .unwrap();
    assert!(
        s.revoke_device("D-3", now - Duration::hours(1))
            .await
            .unwrap()
    );
    assert!(
        s.revoke_device("D-3", now).await.unwrap(),
        "revoking again is fine"
    );
    assert!(!s.revoke_device("D-404", now).await.unwrap());
    let all = s.devices_of_courier("C-1").await.unwrap();
    assert_eq!(all.len(), 3, "storage keeps them all");
    let d3 = all.iter().find(|d| d.device_id == "D-3").unwrap();
    assert_eq!(
        d3.revoked_at,
        Some(now - Duration::hours(1)),
        "the first revocation stands"
    );
    let builds: Vec<&str> = all
        .iter()
        .filter(|d| devices::gets_builds(d, now))
        .map(|d| d.device_id.as_str())
        .collect();
    assert_eq!(builds, ["D-1"], "D-2 unseen for 31 days, D-3 revoked");
    assert_eq!(
        s.device_by_token("hash-D-1")
            .await
            .unwrap()
            .unwrap()
            .last_seen_at,
        now - Duration::hours(2)
    );
    // Revoked before its upload arrives: refused, nothing stored.
    s.revoke_device("D-1", now).await.unwrap();
    assert_eq!(
        ingest(s, delivered("c-r1", "D-1", 1, &m, "r-1", 1, Some(true))).await,
        rejected(RejectReason::DeviceRevoked)
    );
    assert_eq!(state(s, "r-1").await.0, ParcelState::Scheduled);
}

// ---------- confirmations ----------

pub async fn confirmations_are_idempotent(s: &dyn Storage) {
    let m = one_route(s, &["k-1"]).await;
    enroll(s, "C-2", "D-2").await;
    let ok = delivered("c-k1", "D-1", 1, &m, "k-1", 1, Some(true));
    assert_eq!(ingest(s, ok.clone()).await, OK);
    assert_eq!(ingest(s, ok.clone()).await, IngestOutcome::Duplicate);
    let mut stolen = ok.clone();
    stolen.device_id = "D-2".into();
    assert_eq!(
        ingest(s, stolen).await,
        rejected(RejectReason::ConfirmationIdReused)
    );
    assert_eq!(state(s, "k-1").await.0, ParcelState::Delivered);
    let events = s.parcel("k-1").await.unwrap().unwrap().events;
    assert_eq!(
        events
            .iter()
            .filter(|e| e.kind == EventKind::Delivered)
            .count(),
        1,
        "a duplicate changes nothing"
    );
    assert!(kinds(s, day(23)).await.is_empty(), "and raises nothing");
}

pub async fn the_full_code_check_decides_delivered_or_disputed(s: &dyn Storage) {
    let m = one_route(s, &["k-1", "k-2", "k-3"]).await;
    s.upsert_parcels(vec![parcel("k-4", false)], t0())
        .await
        .unwrap();
    save(
        s,
        route("R-1", "C-1", day(23), &["k-1", "k-2", "k-3", "k-4"]),
    )
    .await;
    let r = s.route("R-1", day(23)).await.unwrap().unwrap();
    let m2 = manifest_for(s, &r, "D-1").await;
    assert_eq!(
        ingest(s, delivered("c1", "D-1", 1, &m, "k-1", 1, Some(true))).await,
        OK
    );
    assert_eq!(
        ingest(s, delivered("c2", "D-1", 2, &m, "k-2", 1, Some(false))).await,
        IngestOutcome::Accepted { disputed: true }
    );
    assert_eq!(
        ingest(s, delivered("c3", "D-1", 3, &m, "k-3", 1, None)).await,
        IngestOutcome::Accepted { disputed: true },
        "no code for a parcel that needs one"
    );
    assert_eq!(
        ingest(s, delivered("c4", "D-1", 4, &m2, "k-4", 1, None)).await,
        OK,
        "no code needed"
    );
    assert_eq!(state(s, "k-1").await.0, ParcelState::Delivered);
    assert_eq!(state(s, "k-2").await.0, ParcelState::Disputed);
    assert_eq!(state(s, "k-3").await.0, ParcelState::Disputed);
    assert_eq!(state(s, "k-4").await.0, ParcelState::Delivered);
    let sig = signals(s, day(23)).await;
    let got = by_parcel(&sig);
    assert_eq!(
        got,
        [
            (SignalKind::CodeMismatch, Some("k-2")),
            (SignalKind::DeliveredWithoutCode, Some("k-3"))
        ]
    );
    assert!(sig.iter().all(|x| x.kind.is_dispute() && x.day == day(23)));
    assert_eq!(sig[0].confirmation_id.as_deref(), Some("c2"));
    // A dispute never undoes a delivery.
    assert_eq!(
        ingest(s, delivered("c5", "D-1", 5, &m, "k-1", 1, Some(false))).await,
        IngestOutcome::Accepted { disputed: true }
    );
    assert_eq!(state(s, "k-1").await.0, ParcelState::Delivered);
}

pub async fn only_parcels_on_the_devices_manifest_are_confirmed(s: &dyn Storage) {
    let m = one_route(s, &["k-1", "k-2"]).await;
    enroll(s, "C-2", "D-2").await;
    s.upsert_parcels(vec![parcel("k-9", true)], t0())
        .await
        .unwrap();
    let cases = [
        (
            delivered("c1", "D-2", 1, &m, "k-1", 1, Some(true)),
            RejectReason::NotOnManifest,
        ),
        (
            delivered("c2", "D-1", 1, &m, "k-9", 1, Some(true)),
            RejectReason::NotOnManifest,
        ),
        (
            delivered("c3", "D-1", 1, &m, "k-2", 2, Some(true)),
            RejectReason::NotOnManifest,
        ),
        (
            delivered("c4", "D-1", 1, &m, "k-404", 1, Some(true)),
            RejectReason::UnknownParcel,
        ),
    ];
    for (c, reason) in cases {
        assert_eq!(ingest(s, c).await, rejected(reason));
    }
    assert_eq!(state(s, "k-1").await.0, ParcelState::Scheduled);
    assert!(kinds(s, day(23)).await.is_empty());
}

pub async fn an_upload_is_decided_in_order(s: &dyn Storage) {
    let m = one_route(s, &["o-1", "o-2"]).await;
    let absent = failed("c1", 1, &m, "o-1", FailReason::CustomerAbsent);
    let later = delivered("c2", "D-1", 2, &m, "o-1", 1, Some(true));
    let upload = |items| Upload {
        device_id: "D-1".into(),
        items,
    };
    let items = vec![
        absent.clone(),
        later,
        absent,
        delivered("c3", "D-1", 3, &m, "o-2", 1, Some(true)),
    ];
    let p = policy();
    let out = s
        .ingest_confirmations(upload(items), at_time(t0(), &p))
        .await
        .unwrap();
    assert_eq!(out, [OK, OK, IngestOutcome::Duplicate, OK]);
    assert_eq!(
        state(s, "o-1").await.0,
        ParcelState::Delivered,
        "failed, then delivered"
    );
    let events: Vec<EventKind> = s
        .parcel("o-1")
        .await
        .unwrap()
        .unwrap()
        .events
        .iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        events,
        [
            EventKind::Created,
            EventKind::Scheduled,
            EventKind::Failed,
            EventKind::Delivered
        ]
    );
    assert!(kinds(s, day(23)).await.is_empty(), "seqs 1, 2, 3: no gap");
    assert!(
        s.ingest_confirmations(upload(vec![]), at_time(t0(), &p))
            .await
            .unwrap()
            .is_empty()
    );
}

/// The stale_manifest signals about `parcel`: (device, code matched).
async fn stale(s: &dyn Storage, d: NaiveDate, parcel: &str) -> Vec<(Option<String>, Option<bool>)> {
    signals(s, d)
        .await
        .into_iter()
        .filter(|x| x.kind == SignalKind::StaleManifest && x.parcel_id.as_deref() == Some(parcel))
        .map(|x| (x.device_id, x.code_matched))
        .collect()
}

pub async fn a_parcel_moved_to_another_courier_is_not_on_current_route(s: &dyn Storage) {
    let m = one_route(s, &["s-1", "s-2"]).await;
    // Dispatch takes s-1 off C-1's route and gives it to C-2 the same day.
    save(s, route("R-1", "C-1", day(23), &["s-2"])).await;
    save(s, route("R-2", "C-2", day(23), &["s-1"])).await;
    assert_eq!(state(s, "s-1").await, (ParcelState::Scheduled, 2));
    let c = delivered("c-s1", "D-1", 1, &m, "s-1", 1, Some(true));
    assert_eq!(
        ingest(s, c.clone()).await,
        rejected(RejectReason::NotOnCurrentRoute)
    );
    assert_eq!(
        state(s, "s-1").await,
        (ParcelState::Scheduled, 2),
        "the parcel's state does not change"
    );
    assert_eq!(
        stale(s, day(23), "s-1").await,
        [(Some("D-1".into()), Some(true))]
    );
    // The same envelope again: the same answer, no second signal.
    assert_eq!(
        ingest(s, c).await,
        rejected(RejectReason::NotOnCurrentRoute)
    );
    assert_eq!(stale(s, day(23), "s-1").await.len(), 1);
    // A wrong code from the stale handset says so.
    let c = delivered("c-s2", "D-1", 2, &m, "s-1", 1, Some(false));
    assert_eq!(
        ingest(s, c).await,
        rejected(RejectReason::NotOnCurrentRoute)
    );
    assert_eq!(
        stale(s, day(23), "s-1").await[1],
        (Some("D-1".into()), Some(false))
    );
    assert_eq!(
        state(s, "s-1").await.0,
        ParcelState::Scheduled,
        "never disputed by it"
    );
    // Its seqs were used: the next one is no gap.
    assert_eq!(
        ingest(s, delivered("c-s3", "D-1", 3, &m, "s-2", 1, Some(true))).await,
        OK
    );
    assert!(!kinds(s, day(23)).await.contains(&SignalKind::SeqGap));
}

pub async fn a_route_given_to_another_courier_is_not_on_current_route(s: &dyn Storage) {
    let m = one_route(s, &["g-1"]).await;
    // The same route, same day, now C-2's: the attempt (and code) stay.
    save(s, route("R-1", "C-2", day(23), &["g-1"])).await;
    assert_eq!(state(s, "g-1").await, (ParcelState::Scheduled, 1));
    let c = failed("c-g1", 1, &m, "g-1", FailReason::CustomerAbsent);
    assert_eq!(
        ingest(s, c).await,
        rejected(RejectReason::NotOnCurrentRoute)
    );
    assert_eq!(state(s, "g-1").await.0, ParcelState::Scheduled);
    assert_eq!(stale(s, day(23), "g-1").await, [(Some("D-1".into()), None)]);
}

pub async fn an_old_attempt_after_a_reissue_is_not_on_current_route(s: &dyn Storage) {
    let m = one_route(s, &["v-1"]).await;
    reissue(s, "v-1", "track-v-1-second").await;
    // A handset that never synced the reissue hands over with attempt 1's code.
    let c = delivered("c-v1", "D-1", 1, &m, "v-1", 1, Some(true));
    assert_eq!(
        ingest(s, c).await,
        rejected(RejectReason::NotOnCurrentRoute)
    );
    assert_eq!(state(s, "v-1").await, (ParcelState::Scheduled, 2));
    let sig = signals(s, day(23)).await;
    assert_eq!(sig.len(), 1);
    assert_eq!(
        (sig[0].kind, sig[0].code_matched),
        (SignalKind::StaleManifest, Some(true))
    );
    assert!(sig[0].detail.contains("attempt 2"), "{}", sig[0].detail);
}

pub async fn an_upload_after_the_day_closed_is_not_on_current_route(s: &dyn Storage) {
    let m = one_route(s, &["z-1"]).await;
    close(s, day(23)).await;
    let c = failed("c-z1", 1, &m, "z-1", FailReason::CustomerAbsent);
    assert_eq!(
        ingest(s, c).await,
        rejected(RejectReason::NotOnCurrentRoute)
    );
    assert_eq!(state(s, "z-1").await, (ParcelState::Scheduled, 2));
    assert_eq!(
        stale(s, day(23), "z-1").await.len(),
        1,
        "about the day it was for"
    );
}

pub async fn seq_gaps_and_reuse_are_signalled(s: &dyn Storage) {
    let m = one_route(s, &["q-1", "q-2", "q-3"]).await;
    ingest(s, delivered("c1", "D-1", 1, &m, "q-1", 1, Some(true))).await;
    assert_eq!(
        ingest(s, delivered("c2", "D-1", 5, &m, "q-2", 1, Some(true))).await,
        OK
    );
    assert_eq!(
        ingest(s, delivered("c3", "D-1", 5, &m, "q-3", 1, Some(true))).await,
        OK,
        "a signal, not a rejection"
    );
    let sig = signals(s, day(23)).await;
    let got = by_confirmation(&sig);
    assert_eq!(
        got,
        [
            (SignalKind::SeqGap, Some("c2")),
            (SignalKind::SeqReuse, Some("c3"))
        ]
    );
    assert!(sig[0].detail.contains("from 1 to 5"), "{}", sig[0].detail);
}

pub async fn late_confirmations_are_signalled(s: &dyn Storage) {
    let m = one_route(s, &["l-1", "l-2"]).await;
    let mut on_time = delivered("c1", "D-1", 1, &m, "l-1", 1, Some(true));
    on_time.recorded_at = at(23, 23, 59);
    ingest(s, on_time).await;
    let mut late = failed("c2", 2, &m, "l-2", FailReason::CustomerAbsent);
    late.recorded_at = at(24, 0, 0);
    assert_eq!(ingest(s, late).await, OK);
    let sig = signals(s, day(23)).await;
    assert_eq!(sig.len(), 1);
    assert_eq!(
        (sig[0].kind, sig[0].parcel_id.as_deref()),
        (SignalKind::LateConfirmation, Some("l-2"))
    );
}

pub async fn seq_and_revision_above_2_pow_53_are_out_of_range(s: &dyn Storage) {
    let m = one_route(s, &["n-1"]).await;
    let limit = 1u64 << 53;
    for (seq, revision) in [
        (limit + 1, m.revision),
        (u64::MAX, m.revision),
        (1, limit + 1),
        (1, u64::MAX),
    ] {
        let mut c = delivered("c-big", "D-1", seq, &m, "n-1", 1, Some(true));
        c.revision = revision;
        assert_eq!(ingest(s, c).await, rejected(RejectReason::OutOfRange));
    }
    assert!(RejectReason::OutOfRange.permanent());
    assert_eq!(state(s, "n-1").await.0, ParcelState::Scheduled);
    // Nothing of them stuck: seq 1 is the device's first, no gap.
    assert_eq!(
        ingest(s, delivered("c-ok", "D-1", 1, &m, "n-1", 1, Some(true))).await,
        OK
    );
    assert!(kinds(s, day(23)).await.is_empty());
    // 2^53 itself is in range.
    let c = delivered("c-edge", "D-1", limit, &m, "n-1", 1, Some(true));
    assert_eq!(ingest(s, c).await, OK);
}

pub async fn many_wrong_tries_at_the_door_are_signalled(s: &dyn Storage) {
    let m = one_route(s, &["w-1", "w-2", "w-3"]).await;
    let mut two = delivered("c1", "D-1", 1, &m, "w-1", 1, Some(true));
    two.failed_attempts = 2;
    ingest(s, two).await;
    let mut three = delivered("c2", "D-1", 2, &m, "w-2", 1, Some(true));
    three.failed_attempts = 3;
    ingest(s, three).await;
    let mut locked = failed("c3", 3, &m, "w-3", FailReason::LockedOut);
    locked.failed_attempts = 5;
    ingest(s, locked).await;
    let sig = signals(s, day(23)).await;
    let got = by_parcel(&sig);
    assert_eq!(
        got,
        [
            (SignalKind::ManyWrongTries, Some("w-2")),
            (SignalKind::ManyWrongTries, Some("w-3"))
        ]
    );
}

pub async fn fewer_tries_than_counted_online_is_tries_mismatch(s: &dyn Storage) {
    let m = one_route(s, &["t-1", "t-2"]).await;
    assert_eq!(
        try_code(s, "t-1", 1, false).await,
        VerifyOutcome::Rejected { attempts_left: 2 }
    );
    assert_eq!(try_code(s, "t-1", 1, true).await, VerifyOutcome::Accepted);
    // The handset claims the customer got it right the first time.
    let c = delivered("c1", "D-1", 1, &m, "t-1", 1, Some(true));
    assert_eq!(ingest(s, c).await, OK, "a signal, not a rejection");
    let mut honest = delivered("c2", "D-1", 2, &m, "t-2", 1, Some(true));
    honest.failed_attempts = 0;
    ingest(s, honest).await;
    let sig = signals(s, day(23)).await;
    let got = by_parcel(&sig);
    assert_eq!(got, [(SignalKind::TriesMismatch, Some("t-1"))]);
    assert!(sig[0].detail.contains("counted 1"), "{}", sig[0].detail);
}

// ---------- online verify ----------

pub async fn verify_counts_locks_and_reissue_unlocks(s: &dyn Storage) {
    one_route(s, &["v-1"]).await;
    let p = policy();
    let now = at(23, 9, 0);
    assert_eq!(
        verify::target(
            &s.verify_facts(&device("C-9", "D-other"), "v-1")
                .await
                .unwrap(),
            now,
            &p
        ),
        Err(Refused::NotOnManifest)
    );
    let t = verify::target(
        &s.verify_facts(&device("C-1", "D-1"), "v-1").await.unwrap(),
        now,
        &p,
    )
    .unwrap();
    assert_eq!((t.delivery_date, t.attempt), (day(23), 1));
    assert_eq!(
        try_code(s, "v-1", 1, false).await,
        VerifyOutcome::Rejected { attempts_left: 2 }
    );
    assert_eq!(try_code(s, "v-1", 1, true).await, VerifyOutcome::Accepted);
    assert_eq!(
        try_code(s, "v-1", 1, false).await,
        VerifyOutcome::Rejected { attempts_left: 1 }
    );
    assert_eq!(try_code(s, "v-1", 1, false).await, VerifyOutcome::Locked);
    assert_eq!(try_code(s, "v-1", 1, true).await, VerifyOutcome::Locked);
    assert_eq!(try_code(s, "v-1", 2, true).await, VerifyOutcome::Stale);
    let k = kinds(s, day(23)).await;
    assert!(k.contains(&SignalKind::VerifyLockout), "{k:?}");
    let moved = reissue(s, "v-1", "track-v-1-second").await;
    assert_eq!(moved.routes, vec![("R-1".to_string(), day(23))]);
    let v = s.parcel("v-1").await.unwrap().unwrap();
    assert_eq!((v.attempt, v.locked, v.wrong_tries), (2, false, 0));
    assert_eq!(s.route("R-1", day(23)).await.unwrap().unwrap().revision, 2);
    assert_eq!(
        verify::target(
            &s.verify_facts(&device("C-1", "D-1"), "v-1").await.unwrap(),
            now,
            &p
        ),
        Err(Refused::NotOnManifest),
        "attempt 2 is not on a built manifest yet"
    );
    let e = s
        .reissue(
            ReissueInput {
                parcel_id: "v-404".into(),
                track: tref("t"),
                requires_code: None,
            },
            t0(),
        )
        .await;
    assert!(matches!(e, Err(StorageError::NotFound(_))));
}

pub async fn the_third_wrong_online_try_is_many_wrong_tries(s: &dyn Storage) {
    one_route(s, &["u-1"]).await;
    let mut p = policy();
    p.max_attempts = 5;
    let input = |ok| VerifyInput {
        device_id: "D-1".into(),
        parcel_id: "u-1".into(),
        target: Target {
            delivery_date: day(23),
            attempt: 1,
        },
        ok,
    };
    for left in [4, 3, 2] {
        let out = s
            .record_verify(input(false), at_time(at(23, 9, 0), &p))
            .await
            .unwrap();
        assert_eq!(
            out,
            VerifyOutcome::Rejected {
                attempts_left: left
            }
        );
    }
    let out = s
        .record_verify(input(true), at_time(at(23, 9, 1), &p))
        .await
        .unwrap();
    assert_eq!(out, VerifyOutcome::Accepted, "no lockout");
    let sig = signals(s, day(23)).await;
    assert_eq!(sig.len(), 1);
    assert_eq!(
        (
            sig[0].kind,
            sig[0].device_id.as_deref(),
            sig[0].confirmation_id.as_deref()
        ),
        (SignalKind::ManyWrongTries, Some("D-1"), None)
    );
}

pub async fn verify_is_refused_outside_the_codes_day(s: &dyn Storage) {
    one_route(s, &["x-1"]).await;
    let f = s.verify_facts(&device("C-1", "D-1"), "x-1").await.unwrap();
    let p = policy();
    assert_eq!(
        verify::target(&f, at(22, 23, 59), &p),
        Err(Refused::NotYetValid(at(23, 0, 0))),
        "tomorrow's code does not verify today"
    );
    assert!(verify::target(&f, at(23, 0, 0), &p).is_ok());
    assert_eq!(
        verify::target(&f, at(24, 0, 0), &p),
        Err(Refused::Expired(at(24, 0, 0)))
    );
    let p = s.parcel_contact("x-1").await.unwrap().unwrap();
    let visible = |now| {
        doorcode_server::domain::code_visible(
            p.requires_code,
            p.status,
            p.attempt,
            p.delivery_date,
            &policy(),
            now,
        )
    };
    assert!(
        !visible(at(22, 12, 0)),
        "the tracking page hides it before the day"
    );
    assert!(visible(at(23, 12, 0)));
    assert!(!visible(at(24, 0, 0)));
}

pub async fn verify_is_refused_off_the_current_route(s: &dyn Storage) {
    one_route(s, &["x-1"]).await;
    save(s, route("R-1", "C-2", day(23), &["x-1"])).await;
    let f = s.verify_facts(&device("C-1", "D-1"), "x-1").await.unwrap();
    assert_eq!(
        verify::target(&f, at(23, 9, 0), &policy()),
        Err(Refused::NotOnCurrentRoute)
    );
}

pub async fn a_reissue_gives_a_new_tracking_link(s: &dyn Storage) {
    one_route(s, &["h-1"]).await;
    let old = "track-h-1-0123456789abcdef";
    assert!(s.parcel_by_track_hash(old).await.unwrap().is_some());
    reissue(s, "h-1", "track-h-1-second-link").await;
    assert!(
        s.parcel_by_track_hash(old).await.unwrap().is_none(),
        "the old link answers like an unknown one"
    );
    let c = s
        .parcel_by_track_hash("track-h-1-second-link")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((c.parcel_id.as_str(), c.attempt), ("h-1", 2));
}

pub async fn a_held_parcel_bumps_its_route_is_carried_held_and_a_reissue_releases_it(
    s: &dyn Storage,
) {
    one_route(s, &["k-1", "k-2"]).await;
    let p = policy();
    let before = s.route("R-1", day(23)).await.unwrap().unwrap().revision;
    let moved = s.hold_parcel("k-1", at_time(t0(), &p)).await.unwrap();
    assert_eq!(moved.routes, [("R-1".to_string(), day(23))]);
    let r = s.route("R-1", day(23)).await.unwrap().unwrap();
    assert!(r.revision > before, "handsets pull the hold");
    let held: Vec<&str> = r
        .stops
        .iter()
        .flat_map(|st| &st.parcels)
        .filter(|x| x.held)
        .map(|x| x.parcel_id.as_str())
        .collect();
    assert_eq!(held, ["k-1"]);
    assert_eq!(state(s, "k-1").await, (ParcelState::Held, 1));
    assert_eq!(kinds(s, day(23)).await, [SignalKind::NotOrdered]);
    // Pressed again: nothing more.
    let again = s.hold_parcel("k-1", at_time(t0(), &p)).await.unwrap();
    assert!(again.routes.is_empty());
    assert_eq!(kinds(s, day(23)).await.len(), 1);
    // Dispatch releases it: the next attempt, scheduled, not held.
    reissue(s, "k-1", "track-k-1-released-link").await;
    assert_eq!(state(s, "k-1").await, (ParcelState::Scheduled, 2));
    let r = s.route("R-1", day(23)).await.unwrap().unwrap();
    assert!(r.stops.iter().flat_map(|st| &st.parcels).all(|x| !x.held));
}

// ---------- closing a day ----------

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
    save(s, route("R-x", "C-x", day(25), &["x-1", "x-2", "x-3"])).await;
    enroll(s, "C-x", "d-x").await;
    let r = s.route("R-x", day(25)).await.unwrap().unwrap();
    let m = manifest_for(s, &r, "d-x").await;
    let mut c = delivered("c-x1", "d-x", 1, &m, "x-1", 1, Some(true));
    c.recorded_at = at(25, 9, 0);
    assert_eq!(ingest(s, c).await, OK);
    let moved = close(s, day(25)).await;
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
    assert_eq!(state(s, "x-1").await.0, ParcelState::Delivered);
    assert!(
        close(s, day(25)).await.parcel_ids.is_empty(),
        "closing again moves nothing more from that day"
    );
}

pub async fn close_day_renames_a_taken_stop(s: &dyn Storage) {
    // The courier's next-day route already uses stop S-1 for another address.
    s.upsert_parcels(vec![parcel("x-4", true), parcel("x-5", true)], t0())
        .await
        .unwrap();
    save(s, route("R-y", "C-y", day(25), &["x-4"])).await;
    let mut other = route("R-y", "C-y", day(26), &["x-5"]);
    other.stops[0].address = "99 Other Road".into();
    save(s, other).await;
    let moved = close(s, day(25)).await;
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
            ("S-1#2026-11-25", "1 Example Street", 1)
        ]
    );
}

pub async fn close_day_never_uses_another_couriers_route(s: &dyn Storage) {
    s.upsert_parcels(vec![parcel("w-1", true), parcel("w-2", true)], t0())
        .await
        .unwrap();
    save(s, route("R-w", "C-1", day(23), &["w-1"])).await;
    // On the 24th the route id R-w belongs to another courier.
    save(s, route("R-w", "C-2", day(24), &["w-2"])).await;
    let moved = close(s, day(23)).await;
    assert_eq!(moved.routes, [("R-w#C-1".to_string(), day(24))]);
    let mine = s.route_for_courier("C-1", day(24)).await.unwrap().unwrap();
    assert_eq!(mine.route_id, "R-w#C-1");
    assert_eq!(mine.stops[0].parcels[0].parcel_id, "w-1");
    let theirs = s.route("R-w", day(24)).await.unwrap().unwrap();
    assert_eq!(theirs.courier_id, "C-2");
    let ids: Vec<&str> = theirs.stops[0]
        .parcels
        .iter()
        .map(|p| p.parcel_id.as_str())
        .collect();
    assert_eq!(ids, ["w-2"], "C-2's handset never gets C-1's parcel");
}

// ---------- signals ----------

pub async fn signals_page_by_day(s: &dyn Storage) {
    let m = one_route(s, &["p-1"]).await;
    // Seven seq gaps on the 23rd, each a signal.
    for i in 0..7u64 {
        let c = delivered(
            &format!("c{i}"),
            "D-1",
            10 * (i + 1),
            &m,
            "p-1",
            1,
            Some(true),
        );
        ingest(s, c).await;
    }
    let first = s.signals_on(day(23), 0, 3).await.unwrap();
    assert_eq!(first.len(), 3);
    let second = s.signals_on(day(23), first[2].id, 3).await.unwrap();
    let third = s.signals_on(day(23), second[2].id, 3).await.unwrap();
    assert_eq!((second.len(), third.len()), (3, 1));
    let ids: Vec<i64> = first
        .iter()
        .chain(&second)
        .chain(&third)
        .map(|x| x.id)
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "oldest first, no repeats: {ids:?}"
    );
    assert!(
        s.signals_on(day(23), third[0].id, 3)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        s.signals_on(day(24), 0, 100).await.unwrap().is_empty(),
        "another day has none"
    );
}

pub async fn every_signal_kind_is_raised_and_read_back(s: &dyn Storage) {
    let m = one_route(s, &["e-1", "e-2", "e-3", "e-4", "e-5", "e-6", "e-7", "e-8"]).await;
    let p = policy();
    // e-7 leaves the courier's route (the handset still has it).
    save(
        s,
        route(
            "R-1",
            "C-1",
            day(23),
            &["e-1", "e-2", "e-3", "e-4", "e-5", "e-6", "e-8"],
        ),
    )
    .await;
    // not_ordered: the customer holds e-8.
    s.hold_parcel("e-8", at_time(t0(), &p)).await.unwrap();
    // verify_lockout (max 3) and many_wrong_tries online, on e-1.
    for _ in 0..3 {
        try_code(s, "e-1", 1, false).await;
    }
    // code_mismatch, delivered_without_code.
    ingest(s, delivered("c1", "D-1", 1, &m, "e-2", 1, Some(false))).await;
    ingest(s, delivered("c2", "D-1", 2, &m, "e-3", 1, None)).await;
    // seq_gap, then seq_reuse.
    ingest(s, delivered("c3", "D-1", 9, &m, "e-4", 1, Some(true))).await;
    let mut late = failed("c4", 9, &m, "e-5", FailReason::CustomerAbsent);
    // late_confirmation.
    late.recorded_at = at(24, 1, 0);
    ingest(s, late).await;
    // tries_mismatch on e-6 (one wrong try online, none reported).
    try_code(s, "e-6", 1, false).await;
    ingest(s, delivered("c5", "D-1", 10, &m, "e-6", 1, Some(true))).await;
    // stale_manifest.
    ingest(s, delivered("c6", "D-1", 11, &m, "e-7", 1, Some(true))).await;
    let raised: BTreeSet<&str> = kinds(s, day(23)).await.iter().map(|k| k.as_str()).collect();
    let all: BTreeSet<&str> = SignalKind::RAISED.iter().map(|k| k.as_str()).collect();
    assert_eq!(
        raised, all,
        "every kind the rules raise, stored and read back"
    );
    assert_eq!(p.max_attempts, 3);
}

// ---------- notices ----------

/// The sender keeps the channels a notice reached in its `last_error`
/// (`notices::Progress`); a retry's claim must read it back as written.
pub async fn a_claimed_notice_brings_back_its_last_error(s: &dyn Storage) {
    let now = t0() + Duration::seconds(2);
    s.upsert_parcels(vec![parcel("n-e", true)], t0())
        .await
        .unwrap();
    save(s, route("R-e", "C-e", day(27), &["n-e"])).await;
    let j = claim(s, now).await;
    assert_eq!(j.len(), 1);
    assert_eq!(j[0].last_error, None, "a new notice has no error");
    let text = "done=smtp-0011aabb; webhook-22334455: webhook answered 500 \u{e9}";
    s.notice_failed(j[0].notice_id, text, Some(now + Duration::seconds(5)))
        .await
        .unwrap();
    let j = claim(s, now + Duration::seconds(6)).await;
    assert_eq!(j.len(), 1);
    assert_eq!(j[0].last_error.as_deref(), Some(text));
    assert_eq!(j[0].tries, 1);
}

pub async fn notices_lease_retry_and_finish(s: &dyn Storage) {
    let now = t0() + Duration::seconds(2);
    s.upsert_parcels(vec![parcel("n-1", true)], t0())
        .await
        .unwrap();
    save(s, route("R-n", "C-n", day(27), &["n-1"])).await;
    let jobs = claim(s, now).await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        (
            jobs[0].parcel_id.as_str(),
            jobs[0].attempt,
            jobs[0].tries,
            jobs[0].delivery_date
        ),
        ("n-1", 1, 0, day(27))
    );
    assert!(
        claim(s, now + Duration::seconds(30)).await.is_empty(),
        "leased"
    );
    let again = claim(s, now + Duration::seconds(61)).await;
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
        claim(s, now + Duration::seconds(100)).await.is_empty(),
        "backoff"
    );
    let j = claim(s, now + Duration::seconds(121)).await;
    assert_eq!((j.len(), j[0].tries), (1, 1));
    s.notice_sent(id, now + Duration::seconds(122))
        .await
        .unwrap();
    assert!(
        claim(s, now + Duration::days(9)).await.is_empty(),
        "sent is done"
    );
    assert_eq!(s.notice_counts().await.unwrap(), (0, 1, 0));
    // A notice given up on for good.
    save(s, route("R-n", "C-n", day(28), &["n-1"])).await;
    let j = claim(s, now).await;
    s.notice_failed(j[0].notice_id, "no such address", None)
        .await
        .unwrap();
    assert_eq!(s.notice_counts().await.unwrap(), (0, 1, 1));
}

// ---------- keys and tracking links ----------

pub async fn key_fingerprints_first_writer_wins(s: &dyn Storage) {
    assert!(s.key_fingerprints().await.unwrap().is_empty());
    let pair = |n: &str, f: &str| (n.to_string(), f.to_string());
    let first = s
        .record_key_fingerprints(vec![pair("code-key", "aaa")], t0())
        .await
        .unwrap();
    assert_eq!(first, vec![pair("code-key", "aaa")]);
    // A second node with another code key: its value does not replace the
    // first; a name not yet recorded is added.
    let second = s
        .record_key_fingerprints(
            vec![pair("code-key", "bbb"), pair("admin-token", "ccc")],
            t0(),
        )
        .await
        .unwrap();
    assert_eq!(
        second,
        vec![pair("admin-token", "ccc"), pair("code-key", "aaa")],
        "by name, the first value kept"
    );
    assert_eq!(s.key_fingerprints().await.unwrap(), second);
}

fn pull<'a>(token_hash: &'a str, date: NaiveDate, held: Option<&'a BuildTag>) -> Pull<'a> {
    Pull {
        token_hash,
        date,
        held,
    }
}

fn swap(name: &str, expected: Option<&str>, new: &str) -> FingerprintSwap {
    FingerprintSwap {
        name: name.into(),
        expected: expected.map(str::to_string),
        new: new.into(),
        at: t0(),
    }
}

pub async fn key_fingerprint_replaced_only_if_unchanged(s: &dyn Storage) {
    let pair = |n: &str, f: &str| (n.to_string(), f.to_string());
    s.record_key_fingerprints(vec![pair("signing-keys", "k1")], t0())
        .await
        .unwrap();
    assert!(
        !s.replace_key_fingerprint(swap("signing-keys", Some("k0"), "k2"))
            .await
            .unwrap(),
        "a stale expectation changes nothing"
    );
    assert!(
        !s.replace_key_fingerprint(swap("signing-keys", None, "k2"))
            .await
            .unwrap(),
        "\"not recorded\" is wrong when it is"
    );
    assert!(
        s.replace_key_fingerprint(swap("signing-keys", Some("k1"), "k2"))
            .await
            .unwrap()
    );
    assert!(
        s.replace_key_fingerprint(swap("track-key", None, "t1"))
            .await
            .unwrap()
    );
    assert_eq!(
        s.key_fingerprints().await.unwrap(),
        vec![pair("signing-keys", "k2"), pair("track-key", "t1")]
    );
}

pub async fn track_links_are_found_by_their_hash_only(s: &dyn Storage) {
    s.upsert_parcels(vec![parcel("l-1", true), parcel("l-2", true)], t0())
        .await
        .unwrap();
    let c = s
        .parcel_by_track_hash("track-l-1-0123456789abcdef")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.parcel_id, "l-1");
    assert_eq!(
        c.track_nonce.as_deref(),
        Some("nonce-l-1"),
        "the nonce the link is derived from comes back"
    );
    assert_eq!(
        s.parcel_contact("l-2")
            .await
            .unwrap()
            .unwrap()
            .track_nonce
            .as_deref(),
        Some("nonce-l-2")
    );
    assert!(
        s.parcel_by_track_hash("nonce-l-1").await.unwrap().is_none(),
        "the nonce is not a lookup key"
    );
    assert!(s.parcel_by_track_hash("").await.unwrap().is_none());
    // A reissue stores the new link's nonce and hash; the old hash is unknown.
    save(s, route("R-l", "C-l", day(23), &["l-1"])).await;
    reissue(s, "l-1", "track-l-1-second").await;
    assert!(
        s.parcel_by_track_hash("track-l-1-0123456789abcdef")
            .await
            .unwrap()
            .is_none()
    );
    let c = s
        .parcel_by_track_hash("track-l-1-second")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.track_nonce.as_deref(), Some("nonce-of-track-l-1-second"));
}

pub async fn a_fresh_store_has_no_clear_track_tokens(s: &dyn Storage) {
    s.upsert_parcels(vec![parcel("c-1", true)], t0())
        .await
        .unwrap();
    assert!(
        s.clear_track_tokens(10).await.unwrap().is_empty(),
        "a parcel written by this server has a nonce: nothing to convert"
    );
    // A conversion naming a row that holds no clear token changes nothing.
    let n = s
        .convert_track_tokens(vec![TrackConversion {
            parcel_id: "c-1".into(),
            clear: "track-c-1-0123456789abcdef".into(),
            legacy_hash: "legacy".into(),
            track: tref("other"),
        }])
        .await
        .unwrap();
    assert_eq!(n, 0);
    assert!(s.parcel_by_track_hash("legacy").await.unwrap().is_none());
    assert!(
        s.parcel_by_track_hash("track-c-1-0123456789abcdef")
            .await
            .unwrap()
            .is_some()
    );
}
