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
//! | confirmation ingest (status and signals per item) | `ingest/` | [`ingest::decide`] |
//! | online verify (tries, lockout, the day's window) | `verify.rs` | [`verify::target`], [`verify::decide`] |
//! | reissue (new attempt, new tracking link) | `reissue.rs` | [`reissue::decide`] |
//! | closing a day | `close_day.rs` | [`close_day::decide`] |
//! | who gets manifest builds | `devices.rs` | [`devices::gets_builds`] |
//! | paging disputes and signals by day | `disputes.rs` | [`disputes::next_cursor`] |
//! | retention cut-offs, who may be erased, the anonymous record, statistics | `lifecycle.rs` | [`lifecycle::cutoffs`], [`lifecycle::may_erase`], [`lifecycle::stats`] |
//! | rate-limit windows, keys and row bounds; board sessions | `limits.rs` | [`limits::hit`], [`limits::verdict`], [`limits::session`] |

pub mod close_day;
pub mod devices;
pub mod disputes;
pub mod hold;
pub mod ingest;
pub mod lifecycle;
pub mod limits;
pub mod parcels;
pub mod reissue;
pub mod route;
pub mod verify;

mod changes;
pub mod records;
mod status;

pub use changes::*;
pub use records::{
    Device, Moved, NewParcel, RouteInput, RouteSaved, RouteStopInput, Signal, TrackRef,
};
pub use status::*;

use crate::config::{Calendar, Config};
use chrono::{DateTime, NaiveDate, Utc};
use doorcode_core::confirmation::{FailReason, Outcome, Verified};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

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
