//! The data lifecycle (DESIGN "Data lifecycle"): how long what is kept, what
//! an erase removes, and the anonymous record that outlives a parcel's
//! personal data so statistics still count every day.
//!
//! - A parcel's personal data (name, email, phone, address, and every row
//!   that repeats them or could rebuild a notice: notices, events,
//!   confirmations, signals, stops, stored manifests, the tracking token)
//!   goes `retention_days` after its last delivery day ([`Cutoffs`]), or at
//!   once on an erase ([`may_erase`]).
//! - Stored manifests go as soon as their day is over; past-day notices once
//!   they are sent (or given up).
//! - What stays is one [`AnonRecord`] per parcel: id, day, final state,
//!   attempt, why it last failed, and the kinds of its signals.

use super::{Label, ParcelState, Policy, Refusal, SignalKind};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use doorcode_core::confirmation::FailReason;
use serde::Serialize;
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// `--retention-days` when not given (defined with the rest of the
/// configuration, so config needs nothing from the domain).
pub use crate::config::DEFAULT_RETENTION_DAYS;
/// The longest `--retention-days` (ten years): a date arithmetic bound, not a policy.
pub const MAX_RETENTION_DAYS: u32 = 3660;
/// Rows one retention step removes per table, so a step's transaction
/// stays short and the API keeps answering while the job runs.
pub const BATCH: u32 = 500;
/// The widest `GET /v1/stats` range, in days (both ends included).
pub const MAX_STATS_DAYS: i64 = 366;

/// The tables the lifecycle removes rows from: the only values of the
/// metrics' `table` label.
pub const TABLES: [&str; 12] = [
    "parcels",
    "parcel_events",
    "notices",
    "confirmations",
    "signals",
    "stops",
    "stop_parcels",
    "routes",
    "manifests",
    "manifest_items",
    "enrollments",
    "notice_files",
];

/// What stays of a parcel once its personal data is gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct AnonRecord {
    pub parcel_id: String,
    /// Its last delivery day (the day it was created if it never had one).
    pub day: NaiveDate,
    pub final_state: ParcelState,
    pub attempt: u32,
    /// The reason of its last failed attempt, if one failed.
    #[schema(value_type = Option<String>)]
    pub failure: Option<FailReason>,
    /// One entry per signal raised about it, sorted.
    pub signals: Vec<SignalKind>,
}

impl AnonRecord {
    /// From the live rows: the stored words are parsed here, unknown ones
    /// (a newer server's) are dropped rather than failing a whole purge.
    pub fn of(
        parcel_id: String,
        day: NaiveDate,
        final_state: ParcelState,
        attempt: u32,
        failure: Option<&str>,
        signal_kinds: &str,
    ) -> Self {
        let failure = failure.and_then(|f| FailReason::ALL.into_iter().find(|r| r.as_str() == f));
        Self {
            parcel_id,
            day,
            final_state,
            attempt,
            failure,
            signals: parse_kinds(signal_kinds),
        }
    }

    /// The signal kinds as stored: comma-separated words.
    pub fn signal_kinds(&self) -> String {
        self.signals
            .iter()
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Comma-separated signal words, sorted; unknown words are dropped.
pub fn parse_kinds(s: &str) -> Vec<SignalKind> {
    let mut v: Vec<SignalKind> = s
        .split(',')
        .filter_map(|w| SignalKind::parse(w.trim()))
        .collect();
    v.sort_by_key(|k| k.as_str());
    v
}

/// The dates before which each kind of data goes, for one retention run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cutoffs {
    /// Parcels (and everything about them) whose last day is before this go.
    pub purge_before: NaiveDate,
    /// Stored manifests of days before this go (their day is over).
    pub manifests_before: NaiveDate,
    /// Sent or given-up notices of days before this go.
    pub notices_before: NaiveDate,
    /// Enrollment codes that expired before this go.
    pub enrollments_before: DateTime<Utc>,
}

/// The cut-offs at `now`: personal data is kept `retention_days` full days
/// after a parcel's last delivery day (the depot's local dates).
pub fn cutoffs(policy: &Policy, now: DateTime<Utc>, retention_days: u32) -> Cutoffs {
    let today = policy.today(now);
    let days = i64::from(retention_days.min(MAX_RETENTION_DAYS));
    let purge_before = today
        .checked_sub_signed(Duration::days(days))
        .unwrap_or(NaiveDate::MIN);
    Cutoffs {
        purge_before,
        manifests_before: today,
        notices_before: today,
        enrollments_before: now - Duration::days(days),
    }
}

/// Whether dispatch may erase a parcel now: one still out for delivery
/// (scheduled, or failed but not yet moved on) only with `force`, which
/// also voids its code (the parcel, its route entry and its manifests go).
pub fn may_erase(state: ParcelState, force: bool) -> Result<(), Refusal> {
    if state.is_open() && !force {
        return Err(Refusal::Conflict(
            "the parcel is still scheduled; erase with ?force=true to void its code too".into(),
        ));
    }
    Ok(())
}

/// One day of statistics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct DayStats {
    pub day: NaiveDate,
    /// Parcels whose last delivery day this was.
    pub parcels: u64,
    pub delivered: u64,
    /// Deliveries that failed the full code check.
    pub disputed: u64,
    /// Parcels whose last attempt failed, by the courier's reason.
    pub failed: BTreeMap<String, u64>,
    /// Parcels neither delivered, disputed nor failed (never confirmed).
    pub open: u64,
    /// Parcels the customer reported as not ordered, still on hold.
    pub held: u64,
    /// Signals about that day's parcels, by kind.
    pub signals: BTreeMap<String, u64>,
}

/// A stats range: `from..=to`, at most [`MAX_STATS_DAYS`] days.
pub fn stats_range(from: NaiveDate, to: NaiveDate) -> Result<(), Refusal> {
    if to < from {
        return Err(Refusal::Invalid("`to` is before `from`".into()));
    }
    if (to - from).num_days() >= MAX_STATS_DAYS {
        return Err(Refusal::Invalid(format!(
            "a range holds at most {MAX_STATS_DAYS} days"
        )));
    }
    Ok(())
}

/// Per-day counts over `from..=to`, one entry per day (empty days too),
/// from the anonymous records (and the live parcels' records alike).
pub fn stats(records: &[AnonRecord], from: NaiveDate, to: NaiveDate) -> Vec<DayStats> {
    let mut days: BTreeMap<NaiveDate, DayStats> = from
        .iter_days()
        .take_while(|d| *d <= to)
        .map(|day| {
            (
                day,
                DayStats {
                    day,
                    ..DayStats::default()
                },
            )
        })
        .collect();
    for r in records {
        let Some(d) = days.get_mut(&r.day) else {
            continue;
        };
        d.parcels += 1;
        match (r.final_state, r.failure) {
            (ParcelState::Delivered, _) => d.delivered += 1,
            (ParcelState::Disputed, _) => d.disputed += 1,
            (ParcelState::Failed, Some(f)) => {
                *d.failed.entry(f.as_str().to_string()).or_default() += 1
            }
            (ParcelState::Failed, None) => *d.failed.entry("other".into()).or_default() += 1,
            // Moved on at the day's close: its last attempt failed or never happened.
            (ParcelState::Scheduled | ParcelState::Pending, Some(f)) => {
                *d.failed.entry(f.as_str().to_string()).or_default() += 1
            }
            (ParcelState::Scheduled | ParcelState::Pending, None) => d.open += 1,
            (ParcelState::Held, _) => d.held += 1,
        }
        for k in &r.signals {
            *d.signals.entry(k.as_str().to_string()).or_default() += 1;
        }
    }
    days.into_values().collect()
}

/// Rows removed, by table (each one of [`TABLES`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct Removed(pub BTreeMap<String, u64>);

impl Removed {
    pub fn add(&mut self, table: &'static str, n: u64) {
        debug_assert!(TABLES.contains(&table));
        if n > 0 {
            *self.0.entry(table.to_string()).or_default() += n;
        }
    }

    pub fn merge(&mut self, other: &Removed) {
        for (t, n) in &other.0 {
            *self.0.entry(t.clone()).or_default() += n;
        }
    }

    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::domain::testing::{at, day, policy};

    fn rec(id: &str, d: NaiveDate, st: ParcelState, f: Option<&str>, s: &str) -> AnonRecord {
        AnonRecord::of(id.into(), d, st, 1, f, s)
    }

    #[test]
    fn cutoffs_keep_full_days_after_the_last_day() {
        let c = cutoffs(&policy(), at(23, 6, 0), 90);
        assert_eq!(c.purge_before, day(23) - Duration::days(90));
        assert_eq!(c.manifests_before, day(23));
        assert_eq!(c.notices_before, day(23));
        // Zero days: everything before today goes.
        assert_eq!(cutoffs(&policy(), at(23, 6, 0), 0).purge_before, day(23));
    }

    #[test]
    fn a_scheduled_parcel_is_erased_only_with_force() {
        assert!(matches!(
            may_erase(ParcelState::Scheduled, false),
            Err(Refusal::Conflict(_))
        ));
        assert!(may_erase(ParcelState::Failed, false).is_err());
        assert!(may_erase(ParcelState::Scheduled, true).is_ok());
        for s in [
            ParcelState::Pending,
            ParcelState::Delivered,
            ParcelState::Disputed,
        ] {
            assert!(may_erase(s, false).is_ok(), "{s}");
        }
    }

    #[test]
    fn records_parse_and_drop_unknown_words() {
        let r = rec(
            "P-1",
            day(23),
            ParcelState::Failed,
            Some("refused"),
            "stale_manifest,from_the_future,code_mismatch",
        );
        assert_eq!(r.failure, Some(FailReason::Refused));
        assert_eq!(
            r.signals,
            [SignalKind::CodeMismatch, SignalKind::StaleManifest]
        );
        assert_eq!(r.signal_kinds(), "code_mismatch,stale_manifest");
        assert!(
            rec("P", day(23), ParcelState::Failed, Some("?"), "")
                .failure
                .is_none()
        );
    }

    #[test]
    fn stats_count_each_day_and_only_the_range() {
        let rs = [
            rec("a", day(23), ParcelState::Delivered, None, ""),
            rec("b", day(23), ParcelState::Disputed, None, "code_mismatch"),
            rec(
                "c",
                day(23),
                ParcelState::Failed,
                Some("customer_absent"),
                "",
            ),
            rec(
                "d",
                day(24),
                ParcelState::Scheduled,
                None,
                "many_wrong_tries",
            ),
            rec("e", day(24), ParcelState::Scheduled, Some("refused"), ""),
            rec("f", day(26), ParcelState::Delivered, None, ""),
        ];
        let s = stats(&rs, day(23), day(25));
        assert_eq!(s.len(), 3, "one entry per day, empty days too");
        assert_eq!((s[0].parcels, s[0].delivered, s[0].disputed), (3, 1, 1));
        assert_eq!(s[0].failed.get("customer_absent"), Some(&1));
        assert_eq!(s[0].signals.get("code_mismatch"), Some(&1));
        assert_eq!((s[1].parcels, s[1].open), (2, 1));
        assert_eq!(s[1].failed.get("refused"), Some(&1));
        assert_eq!(
            s[2],
            DayStats {
                day: day(25),
                ..DayStats::default()
            }
        );
    }

    #[test]
    fn stats_ranges_are_bounded() {
        assert!(stats_range(day(23), day(23)).is_ok());
        assert!(stats_range(day(24), day(23)).is_err());
        let far = day(1) + Duration::days(MAX_STATS_DAYS);
        assert!(stats_range(day(1), far).is_err());
        assert!(stats_range(day(1), far - Duration::days(1)).is_ok());
    }
}
