//! A decision's plan: the [`Changes`] a backend applies in the same
//! transaction it loaded the facts in.

use super::*;

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
    pub track: Option<super::records::TrackRef>,
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
