//! The records the decisions read and return: what dispatch sends (parcels,
//! routes), devices, signals and what a move changed. Storage persists them
//! (and re-exports them); the rules here never depend on storage.

use super::{RouteStatus, SignalKind};
use chrono::{DateTime, NaiveDate, Utc};

/// A parcel as dispatch sends it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewParcel {
    pub parcel_id: String,
    pub details: ParcelDetails,
    /// A fresh tracking link, used only if the parcel is new.
    pub track: TrackRef,
}

/// What a dispatcher's upsert sets on a parcel (and compares with what is
/// stored: an item whose details equal them is unchanged). `requires_code`
/// is already resolved by the code policy (explicit flag, else value
/// threshold).
#[derive(Debug, Clone, PartialEq)]
pub struct ParcelDetails {
    pub recipient_name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub address: String,
    pub value: f64,
    pub currency: String,
    pub requires_code: bool,
}

/// What a parcel stores about its tracking link: the random nonce its token
/// is derived from under the track key, and the token's lookup HMAC
/// (`crate::keys::TrackKey`). Neither is a working link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackRef {
    pub nonce: String,
    pub hash: String,
}

#[derive(Debug, Clone)]
pub struct RouteStopInput {
    pub stop_id: String,
    pub address: String,
    pub recipient: Option<String>,
    pub parcel_ids: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct RouteInput {
    pub route_id: String,
    pub courier_id: String,
    pub delivery_date: NaiveDate,
    pub stops: Vec<RouteStopInput>,
}

#[derive(Debug, Clone)]
pub struct RouteSaved {
    pub route_id: String,
    pub delivery_date: NaiveDate,
    pub status: RouteStatus,
    pub revision: u64,
    pub notices_queued: u32,
}

#[derive(Debug, Clone)]
pub struct Device {
    pub device_id: String,
    pub courier_id: String,
    pub name: String,
    pub public_key: String,
    pub revoked_at: Option<DateTime<Utc>>,
    /// The last authenticated request (enrollment at first), to the hour.
    pub last_seen_at: DateTime<Utc>,
    pub enrolled_at: DateTime<Utc>,
}

/// A dispute or fraud signal for dispatch.
#[derive(Debug, Clone)]
pub struct Signal {
    pub id: i64,
    pub kind: SignalKind,
    pub parcel_id: Option<String>,
    pub device_id: Option<String>,
    pub confirmation_id: Option<String>,
    /// The delivery day it concerns.
    pub day: NaiveDate,
    pub detail: String,
    /// For `stale_manifest`: whether the code matched that attempt's code.
    pub code_matched: Option<bool>,
    pub at: DateTime<Utc>,
}

/// Result of moving parcels (close day, reissue): routes needing a rebuild.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Moved {
    pub parcel_ids: Vec<String>,
    pub routes: Vec<(String, NaiveDate)>,
}
