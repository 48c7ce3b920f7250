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
mod tests;
