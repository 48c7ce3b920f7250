//! Confirmation ingest: what each uploaded item becomes (accepted, duplicate
//! or rejected), what it changes and which signals it raises. One upload is
//! decided in order, item after item, on the facts loaded for all of it.

use super::*;
use std::collections::{HashMap, HashSet};

/// `seq` and `revision` above this are refused (`out_of_range`): JSON numbers
/// are exact up to 2^53, and a larger one could wrap the gap check.
pub const MAX_COUNTER: u64 = 1 << 53;

/// A confirmation whose signature the app has checked, and whose code it has
/// compared in constant time; the code itself is not here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestConfirmation {
    pub confirmation_id: String,
    pub device_id: String,
    pub seq: u64,
    pub manifest_id: String,
    pub revision: u64,
    pub parcel_id: String,
    pub delivery_date: NaiveDate,
    pub attempt: u32,
    pub outcome: Outcome,
    pub reason: Option<FailReason>,
    pub verified: Verified,
    pub failed_attempts: u32,
    pub recorded_at: DateTime<Utc>,
    /// Whether the code matched this attempt's code; None when there was none.
    pub code_ok: Option<bool>,
}

/// One upload: a device's confirmations, in the order it sent them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    pub device_id: String,
    pub items: Vec<IngestConfirmation>,
}

/// The answer for one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestOutcome {
    Accepted { disputed: bool },
    Duplicate,
    Rejected(RejectReason),
}

impl IngestOutcome {
    pub fn status(self) -> ItemStatus {
        match self {
            Self::Accepted { .. } => ItemStatus::Accepted,
            Self::Duplicate => ItemStatus::Duplicate,
            Self::Rejected(_) => ItemStatus::Rejected,
        }
    }
}

/// The uploading device as storage has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceFacts {
    pub device_id: String,
    pub courier_id: String,
    pub last_seq: u64,
    pub revoked: bool,
}

/// One `(manifest, revision, parcel, day, attempt)` a manifest built for the device carried.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ManifestItem {
    pub manifest_id: String,
    pub revision: u64,
    pub parcel_id: String,
    pub delivery_date: NaiveDate,
    pub attempt: u32,
}

/// Everything an upload's decision reads, loaded for all its items at once.
#[derive(Debug, Clone, Default)]
pub struct IngestFacts {
    /// None when the device is not enrolled.
    pub device: Option<DeviceFacts>,
    /// Confirmation ids already stored, with the device that sent them.
    pub seen: HashMap<String, String>,
    /// The items' parcels.
    pub parcels: HashMap<String, ParcelFacts>,
    /// The device's manifest items for the items' parcels.
    pub manifest_items: HashSet<ManifestItem>,
    /// Of the items' seqs, those the device's stored confirmations already use.
    pub used_seqs: HashSet<u64>,
    /// Of the items' ids, those a `stale_manifest` signal already names.
    pub stale_signalled: HashSet<String>,
}

impl IngestFacts {
    /// The ids, parcels and seqs to load facts for (in-range items only).
    pub fn keys(items: &[IngestConfirmation]) -> Keys {
        let ok = || items.iter().filter(|c| in_range(c));
        Keys {
            confirmation_ids: ok().map(|c| c.confirmation_id.clone()).collect(),
            parcel_ids: ok().map(|c| c.parcel_id.clone()).collect(),
            seqs: ok().map(|c| c.seq).collect(),
        }
    }
}

/// What a backend loads facts for.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    pub confirmation_ids: Vec<String>,
    pub parcel_ids: Vec<String>,
    pub seqs: Vec<u64>,
}

/// A confirmation to store, with the server's verdict on its code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfirmationRow {
    pub c: IngestConfirmation,
    pub disputed: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct IngestPlan {
    /// One per item, in order.
    pub outcomes: Vec<IngestOutcome>,
    /// Accepted confirmations, in order.
    pub confirmations: Vec<ConfirmationRow>,
    /// The device's highest seq after the upload, if it moved.
    pub last_seq: Option<u64>,
    pub changes: Changes,
}

fn in_range(c: &IngestConfirmation) -> bool {
    c.seq <= MAX_COUNTER && c.revision <= MAX_COUNTER
}

/// Decide one upload. Items are taken in order, each seeing what the ones
/// before it did (a duplicate id, a used seq, a parcel already delivered).
pub fn decide(facts: &IngestFacts, items: &[IngestConfirmation], policy: &Policy) -> IngestPlan {
    let mut run = Run {
        facts,
        policy,
        plan: IngestPlan::default(),
        seen: HashMap::new(),
        states: HashMap::new(),
        state_order: Vec::new(),
        used_seqs: HashSet::new(),
        stale_signalled: HashSet::new(),
        last_seq: facts.device.as_ref().map_or(0, |d| d.last_seq),
    };
    for c in items {
        let out = run.one(c);
        run.plan.outcomes.push(out);
    }
    let start = facts.device.as_ref().map_or(0, |d| d.last_seq);
    if run.last_seq > start {
        run.plan.last_seq = Some(run.last_seq);
    }
    for pid in std::mem::take(&mut run.state_order) {
        if let Some(s) = run.states.get(&pid) {
            run.plan.changes.states.push((pid, *s));
        }
    }
    run.plan
}

/// One upload being decided: the facts plus what earlier items changed.
struct Run<'a> {
    facts: &'a IngestFacts,
    policy: &'a Policy,
    plan: IngestPlan,
    seen: HashMap<String, String>,
    states: HashMap<String, ParcelState>,
    state_order: Vec<String>,
    used_seqs: HashSet<u64>,
    stale_signalled: HashSet<String>,
    last_seq: u64,
}

impl Run<'_> {
    fn seen_by(&self, id: &str) -> Option<&str> {
        self.seen
            .get(id)
            .or_else(|| self.facts.seen.get(id))
            .map(String::as_str)
    }

    fn state(&self, p: &ParcelFacts) -> ParcelState {
        self.states.get(&p.parcel_id).copied().unwrap_or(p.state)
    }

    fn set_state(&mut self, parcel_id: &str, s: ParcelState) {
        if self.states.insert(parcel_id.to_string(), s).is_none() {
            self.state_order.push(parcel_id.to_string());
        }
    }

    fn signal(&mut self, c: &IngestConfirmation, kind: SignalKind, detail: String) {
        self.plan.changes.signals.push(NewSignal {
            kind,
            parcel_id: c.parcel_id.clone(),
            device_id: Some(c.device_id.clone()),
            confirmation_id: Some(c.confirmation_id.clone()),
            day: c.delivery_date,
            detail,
            code_matched: None,
        });
    }

    fn one(&mut self, c: &IngestConfirmation) -> IngestOutcome {
        if !in_range(c) {
            return IngestOutcome::Rejected(RejectReason::OutOfRange);
        }
        if let Some(dev) = self.seen_by(&c.confirmation_id) {
            return if dev == c.device_id {
                IngestOutcome::Duplicate
            } else {
                IngestOutcome::Rejected(RejectReason::ConfirmationIdReused)
            };
        }
        let facts = self.facts;
        let Some(device) = facts.device.as_ref().filter(|d| d.device_id == c.device_id) else {
            return IngestOutcome::Rejected(RejectReason::WrongDevice);
        };
        if device.revoked {
            return IngestOutcome::Rejected(RejectReason::DeviceRevoked);
        }
        let Some(parcel) = facts.parcels.get(&c.parcel_id) else {
            return IngestOutcome::Rejected(RejectReason::UnknownParcel);
        };
        let item = ManifestItem {
            manifest_id: c.manifest_id.clone(),
            revision: c.revision,
            parcel_id: c.parcel_id.clone(),
            delivery_date: c.delivery_date,
            attempt: c.attempt,
        };
        if !facts.manifest_items.contains(&item) {
            return IngestOutcome::Rejected(RejectReason::NotOnManifest);
        }
        if !parcel.on_route_of(&device.courier_id, c.delivery_date, c.attempt) {
            self.stale(c, parcel);
            return IngestOutcome::Rejected(RejectReason::NotOnCurrentRoute);
        }
        self.sequence(c);
        self.counts(c, parcel);
        let disputed = self.outcome(c, parcel);
        self.seen
            .insert(c.confirmation_id.clone(), c.device_id.clone());
        self.plan.confirmations.push(ConfirmationRow {
            c: c.clone(),
            disputed,
        });
        IngestOutcome::Accepted { disputed }
    }

    /// `not_on_current_route`: the parcel's state stays; dispatch learns once
    /// per confirmation whether the courier had the right code.
    fn stale(&mut self, c: &IngestConfirmation, p: &ParcelFacts) {
        // The device did use this seq: later items must not read as a gap.
        self.last_seq = self.last_seq.max(c.seq);
        if self.facts.stale_signalled.contains(&c.confirmation_id)
            || !self.stale_signalled.insert(c.confirmation_id.clone())
        {
            return;
        }
        let now = match (p.delivery_date, &p.route_id) {
            (Some(d), Some(r)) if d == c.delivery_date && p.attempt != c.attempt => {
                format!("attempt {} replaced it on route {r}", p.attempt)
            }
            (Some(d), Some(r)) => format!("now attempt {} on route {r} on {d}", p.attempt),
            _ => "now on no route".to_string(),
        };
        let code = match c.code_ok {
            Some(true) => "the code matched that attempt's code",
            Some(false) => "the code did not match that attempt's code",
            None => "no code was given",
        };
        let detail = format!(
            "{} of attempt {} on {} after the parcel left this courier's current route ({now}); {code}",
            c.outcome.as_str(),
            c.attempt,
            c.delivery_date
        );
        self.plan.changes.signals.push(NewSignal {
            kind: SignalKind::StaleManifest,
            parcel_id: c.parcel_id.clone(),
            device_id: Some(c.device_id.clone()),
            confirmation_id: Some(c.confirmation_id.clone()),
            day: c.delivery_date,
            detail,
            code_matched: c.code_ok,
        });
    }

    /// `seq_reuse` and `seq_gap`.
    fn sequence(&mut self, c: &IngestConfirmation) {
        let reused = self.facts.used_seqs.contains(&c.seq) || self.used_seqs.contains(&c.seq);
        if reused {
            let detail = format!("seq {} was already used by this device", c.seq);
            self.signal(c, SignalKind::SeqReuse, detail);
        } else if c.seq > self.last_seq + 1 {
            let detail = format!("seq jumped from {} to {}", self.last_seq, c.seq);
            self.signal(c, SignalKind::SeqGap, detail);
        }
        self.used_seqs.insert(c.seq);
        self.last_seq = self.last_seq.max(c.seq);
    }

    /// `late_confirmation`, `many_wrong_tries` and `tries_mismatch`.
    fn counts(&mut self, c: &IngestConfirmation, p: &ParcelFacts) {
        let (_, valid_until) = self.policy.calendar.window(c.delivery_date);
        if c.recorded_at >= valid_until {
            let detail = "recorded at or after the code's valid_until".to_string();
            self.signal(c, SignalKind::LateConfirmation, detail);
        }
        let locked_out = c.reason == Some(FailReason::LockedOut);
        if locked_out || c.failed_attempts >= self.policy.many_tries_threshold {
            let mut detail = format!("{} wrong tries at the door", c.failed_attempts);
            if locked_out {
                detail.push_str("; the parcel locked out there");
            }
            self.signal(c, SignalKind::ManyWrongTries, detail);
        }
        if c.failed_attempts < p.wrong_tries {
            let detail = format!(
                "the handset reports {} wrong tries; the server counted {} online",
                c.failed_attempts, p.wrong_tries
            );
            self.signal(c, SignalKind::TriesMismatch, detail);
        }
    }

    /// The parcel's new state and history; true when the delivery is disputed.
    fn outcome(&mut self, c: &IngestConfirmation, p: &ParcelFacts) -> bool {
        let state = self.state(p);
        match c.outcome {
            Outcome::Delivered => {
                if state == ParcelState::Held {
                    // The customer said they did not order it: its code was void.
                    self.set_state(&c.parcel_id, ParcelState::Disputed);
                    let detail = "a delivery of a parcel the customer reported they did not order";
                    self.signal(c, SignalKind::NotOrdered, detail.to_string());
                    let detail = format!("delivered while on hold, by device {}", c.device_id);
                    self.plan
                        .changes
                        .event(&c.parcel_id, EventKind::Disputed, detail);
                    return true;
                }
                let code_fine = c.code_ok.unwrap_or(!p.requires_code);
                if code_fine {
                    if state.is_open() {
                        self.set_state(&c.parcel_id, ParcelState::Delivered);
                    }
                    let detail = format!(
                        "confirmed by device {} (verified {})",
                        c.device_id,
                        c.verified.as_str()
                    );
                    self.plan
                        .changes
                        .event(&c.parcel_id, EventKind::Delivered, detail);
                    return false;
                }
                if state != ParcelState::Delivered {
                    self.set_state(&c.parcel_id, ParcelState::Disputed);
                }
                let kind = if c.code_ok.is_some() {
                    SignalKind::CodeMismatch
                } else {
                    SignalKind::DeliveredWithoutCode
                };
                let detail = "a delivery confirmation failed the server's full code check";
                self.signal(c, kind, detail.to_string());
                let detail = format!("{kind} from device {}", c.device_id);
                self.plan
                    .changes
                    .event(&c.parcel_id, EventKind::Disputed, detail);
                true
            }
            Outcome::Failed => {
                if state == ParcelState::Scheduled {
                    self.set_state(&c.parcel_id, ParcelState::Failed);
                }
                let reason = c.reason.map_or("", FailReason::as_str);
                let detail = format!("attempt {} failed: {reason}", c.attempt);
                self.plan
                    .changes
                    .event(&c.parcel_id, EventKind::Failed, detail);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
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
}
