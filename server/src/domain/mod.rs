//! The server's rules, each written once. Every decision has the same shape:
//!
//! 1. a storage backend loads the **facts** the decision needs, in as few
//!    queries as it can (one transaction);
//! 2. a pure function here decides: `(facts, input, policy) -> plan`. No I/O,
//!    no clock, no randomness: those come in as input. Each rule has its own
//!    unit test without a database;
//! 3. the backend applies the plan's [`Changes`] in the same transaction.
//!
//! The backends keep only dialect SQL, migrations and connection handling.
//! Statuses are enums here ([`ParcelState`], [`SignalKind`], [`EventKind`],
//! [`NoticeState`], [`RejectReason`]); each backend maps them to its column
//! type once, through [`Label`].
//!
//! | decision | file | function |
//! |---|---|---|
//! | parcel upsert (`requires_code_frozen`) | `parcels.rs` | [`parcels::decide`] |
//! | route save (attempts, notices, past dates) | `route.rs` | [`route::decide`] |
//! | confirmation ingest (status and signals per item) | `ingest.rs` | [`ingest::decide`] |
//! | online verify (tries, lockout, the day's window) | `verify.rs` | [`verify::target`], [`verify::decide`] |
//! | reissue (new attempt, new tracking link) | `reissue.rs` | [`reissue::decide`] |
//! | closing a day | `close_day.rs` | [`close_day::decide`] |
//! | who gets manifest builds | `devices.rs` | [`devices::gets_builds`] |
//! | paging disputes and signals by day | `disputes.rs` | [`disputes::next_cursor`] |
//! | retention cut-offs, who may be erased, the anonymous record, statistics | `lifecycle.rs` | [`lifecycle::cutoffs`], [`lifecycle::may_erase`], [`lifecycle::stats`] |

pub mod close_day;
pub mod devices;
pub mod disputes;
pub mod hold;
pub mod ingest;
pub mod lifecycle;
pub mod parcels;
pub mod reissue;
pub mod route;
pub mod verify;

use crate::config::{Calendar, Config};
use crate::storage::NewParcel;
use chrono::{DateTime, NaiveDate, Utc};
use doorcode_core::confirmation::{FailReason, Outcome, Verified};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A status stored as text: one spelling, used by JSON, SQL and logs alike.
/// Each backend has one `ToSql`/`FromSql` for every `Label`.
pub trait Label: Sized + Copy + 'static {
    const ALL: &'static [Self];
    fn as_str(self) -> &'static str;
    fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|v| v.as_str() == s)
    }
}

/// Declares a status enum with its spelling (serde uses the same words).
macro_rules! label {
    ($(#[$m:meta])* pub enum $name:ident { $($(#[$vm:meta])* $var:ident = $s:literal,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vm])* $var,)* }

        impl Label for $name {
            const ALL: &'static [Self] = &[$(Self::$var,)*];
            fn as_str(self) -> &'static str {
                match self { $(Self::$var => $s,)* }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

label! {
    /// Where a parcel stands.
    pub enum ParcelState {
        /// Known, not on a route.
        Pending = "pending",
        /// On a route for a day, with a code for its attempt.
        Scheduled = "scheduled",
        /// The courier recorded a failed attempt; it may still be delivered that day.
        Failed = "failed",
        Delivered = "delivered",
        /// A delivery failed the server's full code check.
        Disputed = "disputed",
        /// The customer pressed "I did not order this": no code, not to be
        /// handed over, until dispatch releases it with a reissue.
        Held = "held",
    }
}

impl ParcelState {
    /// Still out for delivery: a confirmation may change it, the day's close moves it.
    pub fn is_open(self) -> bool {
        matches!(self, Self::Scheduled | Self::Failed)
    }
}

label! {
    /// A dispute or fraud signal for dispatch.
    pub enum SignalKind {
        /// A delivery whose code failed the full check.
        CodeMismatch = "code_mismatch",
        /// A delivery without a code of a parcel that needs one.
        DeliveredWithoutCode = "delivered_without_code",
        /// Three or more wrong tries: online, or reported from the door, or a lockout there.
        ManyWrongTries = "many_wrong_tries",
        /// Recorded at or after the code's `valid_until`.
        LateConfirmation = "late_confirmation",
        SeqGap = "seq_gap",
        SeqReuse = "seq_reuse",
        /// Online tries locked the parcel.
        VerifyLockout = "verify_lockout",
        /// A confirmation for a parcel no longer on the device's current route at that attempt.
        StaleManifest = "stale_manifest",
        /// A confirmation reports fewer wrong tries than the server counted online.
        TriesMismatch = "tries_mismatch",
        /// Schema 1 only: a delivery with a replaced attempt's code was accepted.
        /// Such confirmations are now refused as `not_on_current_route` with a
        /// `stale_manifest` signal; old rows keep their kind.
        SupersededCode = "superseded_code",
        /// The customer reported a parcel they did not order (the tracking
        /// page's button), or a handset delivered such a parcel.
        NotOrdered = "not_ordered",
    }
}

impl SignalKind {
    /// The kinds today's rules raise (every kind but the schema-1 one).
    pub const RAISED: &'static [Self] = &[
        Self::CodeMismatch,
        Self::DeliveredWithoutCode,
        Self::ManyWrongTries,
        Self::LateConfirmation,
        Self::SeqGap,
        Self::SeqReuse,
        Self::VerifyLockout,
        Self::StaleManifest,
        Self::TriesMismatch,
        Self::NotOrdered,
    ];

    /// Disputes are deliveries that failed the full check; the rest are signals.
    pub fn is_dispute(self) -> bool {
        matches!(self, Self::CodeMismatch | Self::DeliveredWithoutCode)
    }
}

label! {
    /// A line of a parcel's history.
    pub enum EventKind {
        Created = "created",
        Updated = "updated",
        Scheduled = "scheduled",
        Unscheduled = "unscheduled",
        Delivered = "delivered",
        Disputed = "disputed",
        Failed = "failed",
        CodeVoided = "code_voided",
        DayClosed = "day_closed",
        VerifiedOnline = "verified_online",
        WrongCode = "wrong_code",
        Locked = "locked",
        /// On hold: the customer said they did not order it.
        Held = "held",
    }
}

label! {
    /// Where a notice in the outbox stands.
    pub enum NoticeState {
        Pending = "pending",
        Sent = "sent",
        Failed = "failed",
    }
}

label! {
    /// The answer for one uploaded confirmation.
    pub enum ItemStatus {
        Accepted = "accepted",
        Duplicate = "duplicate",
        Rejected = "rejected",
    }
}

label! {
    /// Why an item (a confirmation or a parcel) was refused.
    pub enum RejectReason {
        MalformedEnvelope = "malformed_envelope",
        WrongDevice = "wrong_device",
        DeviceKeyInvalid = "device_key_invalid",
        DeviceRevoked = "device_revoked",
        BadSignature = "bad_signature",
        BadEncoding = "bad_encoding",
        UnsupportedVersion = "unsupported_version",
        UnknownFormat = "unknown_format",
        MalformedBody = "malformed_body",
        /// `seq` or `revision` above 2^53 (what JSON numbers hold exactly).
        OutOfRange = "out_of_range",
        /// The id was first used by another device.
        ConfirmationIdReused = "confirmation_id_reused",
        UnknownParcel = "unknown_parcel",
        NotOnManifest = "not_on_manifest",
        NotOnCurrentRoute = "not_on_current_route",
        /// Whether a parcel needs a code is fixed once it is on a route for a day.
        RequiresCodeFrozen = "requires_code_frozen",
        /// The server could not decide now; the same item may succeed later.
        ServerError = "server_error",
    }
}

impl RejectReason {
    /// True when sending the same item again can never succeed.
    pub fn permanent(self) -> bool {
        !matches!(self, Self::ServerError)
    }
}

impl Label for Outcome {
    const ALL: &'static [Self] = &[Outcome::Delivered, Outcome::Failed];
    fn as_str(self) -> &'static str {
        Outcome::as_str(self)
    }
}

impl Label for Verified {
    const ALL: &'static [Self] = &[Verified::Online, Verified::Offline, Verified::None];
    fn as_str(self) -> &'static str {
        Verified::as_str(self)
    }
}

impl Label for FailReason {
    const ALL: &'static [Self] = &FailReason::ALL;
    fn as_str(self) -> &'static str {
        FailReason::as_str(self)
    }
}

/// The numbers the rules use, from the server's configuration.
#[derive(Debug, Clone)]
pub struct Policy {
    pub max_attempts: u32,
    /// Wrong tries (online, or reported from the door) that raise `many_wrong_tries`.
    pub many_tries_threshold: u32,
    pub calendar: Calendar,
}

impl Policy {
    pub fn of(cfg: &Config) -> Self {
        Self {
            max_attempts: cfg.max_attempts,
            many_tries_threshold: cfg.many_tries_threshold,
            calendar: cfg.calendar.clone(),
        }
    }

    /// The depot's local date at `now`.
    pub fn today(&self, now: DateTime<Utc>) -> NaiveDate {
        now.with_timezone(&self.calendar.time_zone).date_naive()
    }

    /// Where `now` falls against `date`'s code window `[valid_from, valid_until)`.
    pub fn phase(&self, date: NaiveDate, now: DateTime<Utc>) -> DayPhase {
        let (from, until) = self.calendar.window(date);
        if now < from {
            DayPhase::Before
        } else if now < until {
            DayPhase::Within
        } else {
            DayPhase::After
        }
    }
}

/// When, and under which rules, a decision is taken.
#[derive(Debug, Clone, Copy)]
pub struct At<'a> {
    pub now: DateTime<Utc>,
    pub policy: &'a Policy,
}

/// A code is valid only within its day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DayPhase {
    Before,
    Within,
    After,
}

/// A decision that refuses the whole request (not one item of it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
}

/// What storage knows about one parcel, as most decisions need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParcelFacts {
    pub parcel_id: String,
    pub state: ParcelState,
    pub requires_code: bool,
    pub delivery_date: Option<NaiveDate>,
    pub attempt: u32,
    /// Online wrong tries counted for the current attempt.
    pub wrong_tries: u32,
    pub locked: bool,
    /// The route it is on for its delivery date.
    pub route_id: Option<String>,
    /// That route's courier.
    pub route_courier: Option<String>,
}

impl ParcelFacts {
    /// On `courier`'s route for `date` at `attempt`: who may confirm it.
    pub fn on_route_of(&self, courier: &str, date: NaiveDate, attempt: u32) -> bool {
        self.delivery_date == Some(date)
            && self.attempt == attempt
            && self.route_courier.as_deref() == Some(courier)
    }

    /// Whether the tracking page shows the code at `now` ([`code_visible`]).
    pub fn code_visible(&self, policy: &Policy, now: DateTime<Utc>) -> bool {
        code_visible(
            self.requires_code,
            self.state,
            self.attempt,
            self.delivery_date,
            policy,
            now,
        )
    }
}

/// Whether the tracking page shows a parcel's code at `now`: it needs one,
/// is still out for delivery, and its day has begun and not ended.
pub fn code_visible(
    requires_code: bool,
    state: ParcelState,
    attempt: u32,
    delivery_date: Option<NaiveDate>,
    policy: &Policy,
    now: DateTime<Utc>,
) -> bool {
    match delivery_date {
        Some(d) if requires_code && state.is_open() && attempt > 0 => {
            policy.phase(d, now) == DayPhase::Within
        }
        _ => false,
    }
}

/// One line of a parcel's history to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub parcel_id: String,
    pub kind: EventKind,
    pub detail: String,
}

/// A signal to raise. `day` is the delivery day it concerns; the board and
/// `/v1/disputes` page by it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSignal {
    pub kind: SignalKind,
    pub parcel_id: String,
    pub device_id: Option<String>,
    pub confirmation_id: Option<String>,
    pub day: NaiveDate,
    pub detail: String,
    /// For `stale_manifest`: whether the code matched that attempt's code
    /// (None: the confirmation carried no code).
    pub code_matched: Option<bool>,
}

/// A notice to queue for a parcel's new code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoticeRequest {
    pub parcel_id: String,
    pub delivery_date: NaiveDate,
    pub attempt: u32,
}

/// A route on a day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteDay {
    pub route_id: String,
    pub date: NaiveDate,
}

/// A route's head row: whose it is and at which revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteHead {
    pub route_id: String,
    pub date: NaiveDate,
    pub courier_id: String,
    pub revision: u64,
}

/// A stop of a route on a day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopRow {
    pub route_id: String,
    pub date: NaiveDate,
    pub stop_id: String,
    pub sequence: u32,
    pub address: String,
    pub recipient: String,
}

/// A parcel at a stop of a route on a day (one placement per parcel and day).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub route_id: String,
    pub date: NaiveDate,
    pub stop_id: String,
    pub parcel_id: String,
    pub position: u32,
}

/// A change to the routes, stops and placements tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteChange {
    /// Create or replace the route's head.
    Put(RouteHead),
    /// Create the route (it must not exist).
    Open(RouteHead),
    /// Revision + 1 (its manifests are rebuilt).
    Bump(RouteDay),
    /// Remove every stop and placement of the route.
    Clear(RouteDay),
    AddStop(StopRow),
    /// Place a parcel, replacing its placement on that date.
    Place(Placement),
    /// Take a parcel (id) off whatever route it is on for a date.
    Unplace(NaiveDate, String),
}

/// A parcel on a route for a day at an attempt: open, unlocked, no wrong tries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scheduled {
    pub parcel_id: String,
    pub route_id: String,
    pub date: NaiveDate,
    pub attempt: u32,
    pub requires_code: bool,
    /// A new tracking link (reissue); None keeps the current one.
    pub track_token: Option<String>,
}

/// The online wrong tries counted for a parcel's attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TryCount {
    pub parcel_id: String,
    pub wrong_tries: u32,
    pub locked: bool,
}

/// A change to one parcel row.
#[derive(Debug, Clone, PartialEq)]
pub enum ParcelChange {
    /// The parcel's details, creating it if it is new (its track token is
    /// written only then).
    Put(NewParcel),
    Schedule(Scheduled),
    /// Off its route (parcel id): pending, no day.
    Unschedule(String),
    /// Same day and attempt, another route id: (parcel id, route id).
    Reassign(String, String),
    Tries(TryCount),
}

/// Everything a decision writes, applied in one transaction in this order:
/// routes, parcels, states, events, signals, notices. The model is
/// matrix-rust-sdk's `StateChanges`: rules build it, a store only persists it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Changes {
    pub routes: Vec<RouteChange>,
    pub parcels: Vec<ParcelChange>,
    /// New states, at most one per parcel (ingest collapses them).
    pub states: Vec<(String, ParcelState)>,
    pub events: Vec<Event>,
    pub signals: Vec<NewSignal>,
    pub notices: Vec<NoticeRequest>,
}

impl Changes {
    pub fn event(&mut self, parcel_id: &str, kind: EventKind, detail: impl Into<String>) {
        self.events.push(Event {
            parcel_id: parcel_id.to_string(),
            kind,
            detail: detail.into(),
        });
    }

    /// Put a parcel on a route for a day at an attempt, and queue its notice
    /// when it needs a code. Returns the number of notices queued (0 or 1).
    pub fn schedule(&mut self, s: Scheduled) -> u32 {
        self.event(
            &s.parcel_id,
            EventKind::Scheduled,
            format!("route {} on {}, attempt {}", s.route_id, s.date, s.attempt),
        );
        let notices = if s.requires_code {
            self.notices.push(NoticeRequest {
                parcel_id: s.parcel_id.clone(),
                delivery_date: s.date,
                attempt: s.attempt,
            });
            1
        } else {
            0
        };
        self.parcels.push(ParcelChange::Schedule(s));
        notices
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Facts and inputs for the decision tests.
    #![allow(clippy::unwrap_used)]

    use super::*;

    pub fn day(n: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, n).unwrap()
    }

    /// `hh:mm` UTC on 2026-11-`n`.
    pub fn at(n: u32, hh: u32, mm: u32) -> DateTime<Utc> {
        day(n).and_hms_opt(hh, mm, 0).unwrap().and_utc()
    }

    pub fn policy() -> Policy {
        Policy {
            max_attempts: 5,
            many_tries_threshold: 3,
            calendar: Calendar::default(),
        }
    }

    /// A parcel needing a code, scheduled on C-1's route R-1 on the 23rd, attempt 1.
    pub fn parcel(id: &str) -> ParcelFacts {
        ParcelFacts {
            parcel_id: id.into(),
            state: ParcelState::Scheduled,
            requires_code: true,
            delivery_date: Some(day(23)),
            attempt: 1,
            wrong_tries: 0,
            locked: false,
            route_id: Some("R-1".into()),
            route_courier: Some("C-1".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::testing::*;
    use super::*;

    fn spelled_as_serde<T: Label + Serialize + std::fmt::Debug>() {
        for v in T::ALL {
            assert_eq!(
                serde_json::to_value(v).unwrap(),
                serde_json::Value::from(v.as_str()),
                "{v:?}"
            );
            assert_eq!(T::parse(v.as_str()).map(|p| p.as_str()), Some(v.as_str()));
        }
        assert!(T::parse("no such word").is_none());
    }

    #[test]
    fn every_label_has_one_spelling() {
        spelled_as_serde::<ParcelState>();
        spelled_as_serde::<SignalKind>();
        spelled_as_serde::<EventKind>();
        spelled_as_serde::<NoticeState>();
        spelled_as_serde::<ItemStatus>();
        spelled_as_serde::<RejectReason>();
        spelled_as_serde::<Outcome>();
        spelled_as_serde::<Verified>();
        spelled_as_serde::<FailReason>();
    }

    #[test]
    fn disputes_are_failed_code_checks() {
        let disputes: Vec<_> = SignalKind::ALL.iter().filter(|k| k.is_dispute()).collect();
        assert_eq!(
            disputes,
            [&SignalKind::CodeMismatch, &SignalKind::DeliveredWithoutCode]
        );
        assert!(!SignalKind::RAISED.contains(&SignalKind::SupersededCode));
        assert_eq!(SignalKind::RAISED.len() + 1, SignalKind::ALL.len());
    }

    #[test]
    fn a_code_is_valid_only_within_its_day() {
        let p = policy();
        assert_eq!(p.phase(day(23), at(22, 23, 59)), DayPhase::Before);
        assert_eq!(p.phase(day(23), at(23, 0, 0)), DayPhase::Within);
        assert_eq!(p.phase(day(23), at(23, 23, 59)), DayPhase::Within);
        assert_eq!(p.phase(day(23), at(24, 0, 0)), DayPhase::After);
    }

    #[test]
    fn the_tracking_page_shows_the_code_only_on_its_day_while_open() {
        let p = policy();
        let mut f = parcel("P-1");
        assert!(!f.code_visible(&p, at(22, 12, 0)), "not before the day");
        assert!(f.code_visible(&p, at(23, 12, 0)));
        assert!(!f.code_visible(&p, at(24, 0, 0)), "not after it");
        f.state = ParcelState::Delivered;
        assert!(!f.code_visible(&p, at(23, 12, 0)), "not once delivered");
        f.state = ParcelState::Failed;
        assert!(
            f.code_visible(&p, at(23, 12, 0)),
            "a failed try may be retried"
        );
        f.requires_code = false;
        assert!(!f.code_visible(&p, at(23, 12, 0)));
    }

    #[test]
    fn only_the_current_courier_attempt_and_day_may_confirm() {
        let f = parcel("P-1");
        assert!(f.on_route_of("C-1", day(23), 1));
        assert!(!f.on_route_of("C-2", day(23), 1), "another courier");
        assert!(!f.on_route_of("C-1", day(23), 2), "another attempt");
        assert!(!f.on_route_of("C-1", day(24), 1), "another day");
        let pending = ParcelFacts {
            route_courier: None,
            ..f
        };
        assert!(!pending.on_route_of("C-1", day(23), 1), "off its route");
    }
}
