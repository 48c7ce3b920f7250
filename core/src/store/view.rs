//! What the courier sees: the day's stops with each parcel's state, and the
//! handset's counts.

use super::{Store, parse_date, ts};
use crate::codes;
use crate::confirmation::FailReason;
use crate::error::Error;
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

/// A parcel's state as the courier sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ParcelState {
    Pending,
    Delivered,
    Failed,
    Locked,
    /// The customer reported they did not order it: take it back and record
    /// it failed as `refused`.
    Held,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParcelView {
    pub parcel_id: String,
    pub requires_code: bool,
    pub attempt: u32,
    pub state: ParcelState,
    pub failed_tries: u32,
    pub attempts_left: u32,
    pub reason: Option<FailReason>,
    /// On hold in the manifest (stays true once it is recorded failed).
    pub held: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StopView {
    pub route_id: String,
    pub delivery_date: NaiveDate,
    pub stop_id: String,
    pub sequence: u32,
    pub address: String,
    pub recipient: String,
    pub parcels: Vec<ParcelView>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Status {
    pub device_id: Option<String>,
    pub courier_id: Option<String>,
    pub manifests: u32,
    pub parcels_pending: u32,
    pub parcels_delivered: u32,
    pub parcels_failed: u32,
    pub parcels_locked: u32,
    /// Held parcels not yet recorded failed.
    pub parcels_held: u32,
    pub outbox_pending: u32,
    pub outbox_rejected: u32,
    pub last_sync_at: Option<String>,
    pub next_seq: u64,
}

impl Store {
    /// The stops of every manifest valid at `now`, in route order, with each
    /// parcel's state.
    pub fn stops(&self, now: DateTime<Utc>) -> Result<Vec<StopView>, Error> {
        let now_s = ts(now);
        let mut stmt = self.conn.prepare(
            "SELECT s.route_id, s.delivery_date, s.stop_id, s.sequence, s.address, s.recipient,
                    p.parcel_id, p.requires_code, p.attempt, m.max_attempts,
                    COALESCE(st.failed_tries, 0), st.outcome, st.reason, COALESCE(p.hold, 0)
             FROM manifests m
             JOIN stops s ON s.route_id = m.route_id AND s.delivery_date = m.delivery_date
             LEFT JOIN parcels p ON p.route_id = s.route_id AND p.delivery_date = s.delivery_date
                                 AND p.stop_id = s.stop_id
             LEFT JOIN parcel_state st ON st.parcel_id = p.parcel_id AND st.delivery_date = p.delivery_date
                                      AND st.attempt = p.attempt
             WHERE m.valid_from <= ?1 AND m.valid_until > ?1
             ORDER BY s.delivery_date, s.route_id, s.sequence, s.stop_id, p.parcel_id",
        )?;
        let mut rows = stmt.query([now_s])?;
        let mut out: Vec<StopView> = Vec::new();
        while let Some(r) = rows.next()? {
            let route_id: String = r.get(0)?;
            let date: String = r.get(1)?;
            let stop_id: String = r.get(2)?;
            let same = out.last().is_some_and(|s| {
                s.route_id == route_id
                    && s.stop_id == stop_id
                    && codes::date_str(s.delivery_date) == date
            });
            if !same {
                out.push(StopView {
                    route_id,
                    delivery_date: parse_date(&date)?,
                    stop_id,
                    sequence: r.get(3)?,
                    address: r.get(4)?,
                    recipient: r.get(5)?,
                    parcels: Vec::new(),
                });
            }
            let Some(parcel_id) = r.get::<_, Option<String>>(6)? else {
                continue;
            };
            let max: u32 = r.get(9)?;
            let tries: u32 = r.get(10)?;
            let outcome: Option<String> = r.get(11)?;
            let reason: Option<String> = r.get(12)?;
            let held: bool = r.get(13)?;
            let state = match outcome.as_deref() {
                Some("delivered") => ParcelState::Delivered,
                Some(_) => ParcelState::Failed,
                None if held => ParcelState::Held,
                None if tries >= max => ParcelState::Locked,
                None => ParcelState::Pending,
            };
            if let Some(stop) = out.last_mut() {
                stop.parcels.push(ParcelView {
                    parcel_id,
                    requires_code: r.get(7)?,
                    attempt: r.get(8)?,
                    state,
                    failed_tries: tries,
                    attempts_left: max.saturating_sub(tries),
                    reason: reason.as_deref().and_then(FailReason::parse),
                    held,
                });
            }
        }
        Ok(out)
    }

    pub fn status(&self, now: DateTime<Utc>) -> Result<Status, Error> {
        let count =
            |sql: &str| -> Result<u32, Error> { Ok(self.conn.query_row(sql, [], |r| r.get(0))?) };
        let mut s = Status {
            device_id: self.meta("device_id")?,
            courier_id: self.meta("courier_id")?,
            manifests: count("SELECT COUNT(*) FROM manifests")?,
            outbox_pending: count("SELECT COUNT(*) FROM outbox WHERE status = 'pending'")?,
            outbox_rejected: count("SELECT COUNT(*) FROM outbox WHERE status = 'rejected'")?,
            last_sync_at: self.meta("last_sync_at")?,
            next_seq: self
                .meta("next_seq")?
                .and_then(|v| v.parse().ok())
                .unwrap_or(1),
            ..Status::default()
        };
        for stop in self.stops(now)? {
            for p in stop.parcels {
                match p.state {
                    ParcelState::Pending => s.parcels_pending += 1,
                    ParcelState::Delivered => s.parcels_delivered += 1,
                    ParcelState::Failed => s.parcels_failed += 1,
                    ParcelState::Locked => s.parcels_locked += 1,
                    ParcelState::Held => s.parcels_held += 1,
                }
            }
        }
        Ok(s)
    }
}
