//! Storage behind one small async trait, so SQLite (embedded, default) and
//! PostgreSQL persist the same decisions and pass the same test suite
//! (`server/tests/storage_suite`).
//!
//! Every method is one transaction: a backend must give it all-or-nothing
//! semantics. A method that decides something loads the facts, calls the
//! decision in [`crate::domain`] and applies the plan it returns; the rules
//! live there, never here. No delivery code is ever stored; codes are derived
//! from the code key by the caller.

pub mod lifecycle;
pub mod migrations;
pub mod postgres;
mod sql;
pub mod sqlite;

use crate::domain::verify::{VerifyFacts, VerifyInput};
use crate::domain::{At, EventKind, ParcelState, Refusal, SignalKind};
use chrono::{DateTime, NaiveDate, Utc};

pub use crate::domain::close_day::Closed;
pub use crate::domain::ingest::{IngestConfirmation, IngestOutcome, Upload};
pub use crate::domain::limits::{NewSession, RateCount, RateHit};
pub use crate::domain::parcels::UpsertStatus;
pub use crate::domain::records::{
    Device, Moved, NewParcel, RouteInput, RouteSaved, RouteStopInput, Signal,
};
pub use crate::domain::reissue::ReissueInput;
pub use crate::domain::verify::VerifyOutcome;

/// Storage failures. `Conflict` and `NotFound` map to 4xx; `Backend` to 5xx.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("storage backend: {0}")]
    Backend(String),
}

pub type Result<T> = std::result::Result<T, StorageError>;

impl From<Refusal> for StorageError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::NotFound(m) => Self::NotFound(m),
            Refusal::Conflict(m) => Self::Conflict(m),
            Refusal::Invalid(m) => Self::Invalid(m),
        }
    }
}

/// What dispatch and the customer page may see about a parcel: never a code.
#[derive(Debug, Clone)]
pub struct ParcelView {
    pub parcel_id: String,
    pub recipient_name: String,
    pub address: String,
    pub requires_code: bool,
    pub status: ParcelState,
    pub delivery_date: Option<NaiveDate>,
    pub attempt: u32,
    pub route_id: Option<String>,
    pub wrong_tries: u32,
    pub locked: bool,
    pub events: Vec<ParcelEvent>,
}

#[derive(Debug, Clone)]
pub struct ParcelEvent {
    pub at: DateTime<Utc>,
    pub kind: EventKind,
    pub detail: String,
}

/// Contact and scheduling facts the notice sender and the track page need.
#[derive(Debug, Clone)]
pub struct ParcelContact {
    pub parcel_id: String,
    pub recipient_name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub requires_code: bool,
    pub status: ParcelState,
    pub delivery_date: Option<NaiveDate>,
    pub attempt: u32,
    /// What the tracking link is derived from under the track key
    /// (`crate::keys::TrackKey::token`); None only for a row an older
    /// server wrote after this one converted the clear tokens.
    pub track_nonce: Option<String>,
}

/// A parcel whose track token was stored in the clear (before migration 0005),
/// converted: the old token's lookup HMAC (so the link already sent keeps
/// working) and a new derived link for the notices from now on.
#[derive(Debug, Clone)]
pub struct TrackConversion {
    pub parcel_id: String,
    /// The clear token as read, so a row changed meanwhile is left alone.
    pub clear: String,
    pub legacy_hash: String,
    pub track: crate::domain::TrackRef,
}

/// A compare-and-set of one recorded key fingerprint (key rotation): `name`
/// becomes `new` at `at` only if it is still `expected` (None: not recorded).
#[derive(Debug, Clone)]
pub struct FingerprintSwap {
    pub name: String,
    pub expected: Option<String>,
    pub new: String,
    pub at: DateTime<Utc>,
}

/// A build by its id and revision (what a manifest's ETag names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildTag {
    pub manifest_id: String,
    pub revision: u64,
}

/// A manifest pull as storage reads it: the token's hash, the day, and the
/// build the client says it holds (or the node has in memory).
#[derive(Debug, Clone, Copy)]
pub struct Pull<'a> {
    pub token_hash: &'a str,
    pub date: NaiveDate,
    pub held: Option<&'a BuildTag>,
}

impl Pull<'_> {
    /// `DEVICE_WITH_MANIFEST`'s `$1` and `$2`: the held build's id and revision.
    pub(crate) fn held_params(&self) -> (Option<&str>, Option<i64>) {
        (
            self.held.map(|h| h.manifest_id.as_str()),
            self.held
                .map(|h| i64::try_from(h.revision).unwrap_or(i64::MAX)),
        )
    }
}

/// The device's current build for a day, as a manifest pull reads it.
#[derive(Debug, Clone)]
pub enum CurrentBuild {
    /// None at the route's revision (or no route): build one.
    Missing,
    /// The build the client holds is current: its body was not read.
    Held,
    /// The current build, body and all.
    Stored(StoredManifest),
}

impl CurrentBuild {
    /// From a `DEVICE_WITH_MANIFEST` row's route id and envelope columns
    /// (both NULL: no build; the envelope NULL: the held build is current);
    /// `stored` reads the rest of a build from the row.
    pub(crate) fn of_row<E>(
        route_id: Option<String>,
        envelope: Option<String>,
        stored: impl FnOnce(String, String) -> std::result::Result<StoredManifest, E>,
    ) -> std::result::Result<Self, E> {
        Ok(match (route_id, envelope) {
            (None, _) => Self::Missing,
            (Some(_), None) => Self::Held,
            (Some(route_id), Some(envelope)) => Self::Stored(stored(route_id, envelope)?),
        })
    }

    /// The stored build, if it was read.
    pub fn stored(self) -> Option<StoredManifest> {
        match self {
            Self::Stored(m) => Some(m),
            Self::Missing | Self::Held => None,
        }
    }
}

/// The facts a manifest is built from.
#[derive(Debug, Clone)]
pub struct RouteData {
    pub route_id: String,
    pub courier_id: String,
    pub delivery_date: NaiveDate,
    pub revision: u64,
    pub stops: Vec<RouteStopData>,
}

#[derive(Debug, Clone)]
pub struct RouteStopData {
    pub stop_id: String,
    pub sequence: u32,
    pub address: String,
    pub recipient: String,
    pub parcels: Vec<RouteParcelData>,
}

#[derive(Debug, Clone)]
pub struct RouteParcelData {
    pub parcel_id: String,
    pub requires_code: bool,
    pub attempt: u32,
    /// On hold (the customer did not order it): the manifest says `"hold": true`.
    pub held: bool,
}

/// Which build: there is one per route, day and device.
#[derive(Debug, Clone, Copy)]
pub struct BuildKey<'a> {
    pub route_id: &'a str,
    pub date: NaiveDate,
    pub device_id: &'a str,
}

/// A built, signed manifest for one device at one route revision.
#[derive(Debug, Clone)]
pub struct StoredManifest {
    pub route_id: String,
    pub delivery_date: NaiveDate,
    pub device_id: String,
    pub manifest_id: String,
    pub revision: u64,
    /// The envelope JSON exactly as served.
    pub envelope_json: String,
    /// (parcel_id, attempt) pairs on this build, for membership checks.
    pub items: Vec<(String, u32)>,
}

/// A one-time enrollment code (stored hashed) for a courier's new handset.
#[derive(Debug, Clone)]
pub struct NewEnrollment {
    pub code_hash: String,
    pub courier_id: String,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct NewDevice {
    /// The hash of the enrollment code it consumes.
    pub enrollment: String,
    pub device_id: String,
    pub name: String,
    pub public_key: String,
    pub token_hash: String,
}

/// One claimed notice to send.
#[derive(Debug, Clone)]
pub struct NoticeJob {
    pub notice_id: i64,
    pub parcel_id: String,
    pub delivery_date: NaiveDate,
    pub attempt: u32,
    pub tries: u32,
    /// The last try's error; the notice sender keeps the channels a notice
    /// already reached at its head (`crate::notices::Progress`).
    pub last_error: Option<String>,
}

#[async_trait::async_trait]
pub trait Storage: lifecycle::LifecycleStore + Send + Sync {
    /// Create or update parcels; one result per item, in order
    /// ([`crate::domain::parcels::decide`]).
    async fn upsert_parcels(
        &self,
        items: Vec<NewParcel>,
        now: DateTime<Utc>,
    ) -> Result<Vec<UpsertStatus>>;
    async fn parcel(&self, parcel_id: &str) -> Result<Option<ParcelView>>;
    async fn parcel_contact(&self, parcel_id: &str) -> Result<Option<ParcelContact>>;
    /// The parcel whose tracking link has this lookup HMAC
    /// (`crate::keys::TrackKey::lookup`), current or from before migration 0005.
    async fn parcel_by_track_hash(&self, hash: &str) -> Result<Option<ParcelContact>>;
    /// Up to `limit` parcels whose track token is still stored in the clear
    /// (written before migration 0005): (parcel_id, token).
    async fn clear_track_tokens(&self, limit: u32) -> Result<Vec<(String, String)>>;
    /// Replace clear tokens with their HMACs, in one transaction. A row no
    /// longer holding `clear` (converted by another node) is left; returns
    /// how many rows changed.
    async fn convert_track_tokens(&self, rows: Vec<TrackConversion>) -> Result<u64>;

    /// The recorded key fingerprints, (name, fingerprint), by name.
    async fn key_fingerprints(&self) -> Result<Vec<(String, String)>>;
    /// Record each fingerprint whose name has none yet (the first node's
    /// win; `INSERT … ON CONFLICT DO NOTHING`), then return all recorded.
    async fn record_key_fingerprints(
        &self,
        fps: Vec<(String, String)>,
        now: DateTime<Utc>,
    ) -> Result<Vec<(String, String)>>;
    /// Apply `swap`; false if the fingerprint changed meanwhile.
    async fn replace_key_fingerprint(&self, swap: FingerprintSwap) -> Result<bool>;
    /// Ids of the parcels whose current delivery date is `date`, sorted (the
    /// dispatcher's board reads each with [`Storage::parcel`]).
    async fn parcel_ids_on(&self, date: NaiveDate) -> Result<Vec<String>>;

    /// Create or replace a route for a date ([`crate::domain::route::decide`]).
    async fn save_route(&self, route: RouteInput, at: At<'_>) -> Result<RouteSaved>;
    async fn route(&self, route_id: &str, date: NaiveDate) -> Result<Option<RouteData>>;
    async fn route_for_courier(
        &self,
        courier_id: &str,
        date: NaiveDate,
    ) -> Result<Option<RouteData>>;

    async fn create_enrollment(&self, e: NewEnrollment) -> Result<()>;
    /// Consume a valid enrollment code and register the device; None if the
    /// code is unknown, used or expired.
    async fn enroll_device(&self, device: NewDevice, now: DateTime<Utc>) -> Result<Option<Device>>;
    async fn device_by_token(&self, token_hash: &str) -> Result<Option<Device>>;
    async fn device(&self, device_id: &str) -> Result<Option<Device>>;
    /// Every device of the courier, revoked and unseen ones too
    /// ([`crate::domain::devices::gets_builds`] picks who gets builds).
    async fn devices_of_courier(&self, courier_id: &str) -> Result<Vec<Device>>;
    /// Record a request from the device at `now`.
    async fn device_seen(&self, device_id: &str, now: DateTime<Utc>) -> Result<()>;
    /// Revoke a device; false if it is unknown. A revoked device stays revoked.
    async fn revoke_device(&self, device_id: &str, now: DateTime<Utc>) -> Result<bool>;

    async fn manifest(&self, key: BuildKey<'_>) -> Result<Option<StoredManifest>>;
    /// The device with this token and, in the same read, its stored
    /// manifest for its courier's route on `date` if it was built at the
    /// route's current revision: a manifest pull, and so every 304, is one
    /// storage call and no route load. When that build is `held` (the
    /// client's `If-None-Match`) its body is not read.
    async fn device_with_manifest(&self, pull: Pull<'_>) -> Result<Option<(Device, CurrentBuild)>>;
    /// Store a build unless a build at the same or a newer revision exists.
    /// Returns the manifest now current (ours or the newer one).
    async fn store_manifest(&self, m: StoredManifest) -> Result<StoredManifest>;

    /// One upload, received at `at.now`, in one transaction: facts for all
    /// its items, [`crate::domain::ingest::decide`], the plan applied. One
    /// outcome per item, in order; an error means nothing was stored.
    async fn ingest_confirmations(&self, upload: Upload, at: At<'_>) -> Result<Vec<IngestOutcome>>;
    /// One confirmation (an upload of one).
    async fn ingest_confirmation(
        &self,
        c: IngestConfirmation,
        at: At<'_>,
    ) -> Result<IngestOutcome> {
        let upload = Upload {
            device_id: c.device_id.clone(),
            items: vec![c],
        };
        let out = self.ingest_confirmations(upload, at).await?;
        out.into_iter()
            .next()
            .ok_or_else(|| StorageError::Backend("ingest returned no outcome".into()))
    }

    /// Where a parcel stands for an online check by this device
    /// ([`crate::domain::verify::target`] reads it).
    async fn verify_facts(&self, device: &Device, parcel_id: &str) -> Result<VerifyFacts>;
    /// Count one online try ([`crate::domain::verify::decide`] on the parcel
    /// re-read under lock).
    async fn record_verify(&self, input: VerifyInput, at: At<'_>) -> Result<VerifyOutcome>;

    /// Void the current code ([`crate::domain::reissue::decide`]).
    async fn reissue(&self, input: ReissueInput, now: DateTime<Utc>) -> Result<Moved>;

    /// Put a parcel on hold at the customer's word ([`crate::domain::hold::decide`]).
    async fn hold_parcel(&self, parcel_id: &str, at: At<'_>) -> Result<Moved>;
    /// Move undelivered parcels of `date` to the next working day
    /// ([`crate::domain::close_day::decide`]).
    async fn close_day(&self, date: NaiveDate, at: At<'_>) -> Result<Closed>;

    /// Up to `limit` of the signals about `day` with an id above `after`, by id.
    async fn signals_on(&self, day: NaiveDate, after: i64, limit: u32) -> Result<Vec<Signal>>;

    /// Claim due notices for `lease_secs`; an unacknowledged claim comes back
    /// after the lease, so a crash mid-send never loses a notice.
    async fn claim_notices(
        &self,
        now: DateTime<Utc>,
        lease_secs: i64,
        limit: u32,
    ) -> Result<Vec<NoticeJob>>;
    /// Extend the claims of notices this sender still holds (pending and
    /// claimed) to `until`, while it is still sending them.
    async fn renew_notice_claims(&self, notice_ids: &[i64], until: DateTime<Utc>) -> Result<()>;
    async fn notice_sent(&self, notice_id: i64, now: DateTime<Utc>) -> Result<()>;
    /// Record a failed send; `retry_at` None gives up for good.
    async fn notice_failed(
        &self,
        notice_id: i64,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
    ) -> Result<()>;
    /// (pending, sent, failed) counts.
    async fn notice_counts(&self) -> Result<(u64, u64, u64)>;

    // The state every node shares (DESIGN "Several nodes on one database");
    // the rules are in [`crate::domain::limits`].

    /// Store a board session, after deleting at most `sweep` sessions
    /// expired at `now`.
    async fn create_session(&self, s: NewSession, now: DateTime<Utc>, sweep: u32) -> Result<()>;
    /// The CSRF token of the session `id_hash` if it is still live at `now`.
    async fn session_csrf(&self, id_hash: &str, now: DateTime<Utc>) -> Result<Option<String>>;
    /// End a session (sign-out); nothing if it is unknown.
    async fn delete_session(&self, id_hash: &str) -> Result<()>;
    /// Count one hit on the (limit, key) row in one statement: one more, or
    /// a new window when the row's ended at or before `hit.now`. A key not
    /// yet stored is inserted only while the limit has fewer than `hit.cap`
    /// rows (after deleting up to `hit.sweep` expired ones); None means it
    /// was not, and the caller counts it elsewhere.
    async fn rate_hit(&self, hit: &RateHit) -> Result<Option<RateCount>>;
    /// Give back one hit of the (limit, key) row's current window.
    async fn rate_refund(&self, limit: &str, key: &str, now: DateTime<Utc>) -> Result<()>;
    /// Delete at most `limit` expired sessions and at most `limit` expired
    /// rate-limit rows; how many went.
    async fn sweep_shared_state(&self, now: DateTime<Utc>, limit: u32) -> Result<u64>;
}

/// The facts types the backends fill, in one place for their `use`.
pub(crate) mod facts {
    pub use crate::domain::close_day::CloseFacts;
    pub use crate::domain::ingest::{DeviceFacts, IngestFacts, ManifestItem};
    pub use crate::domain::route::RouteFacts;
    pub use crate::domain::route::RouteParcel;
    pub use crate::domain::{ParcelFacts, close_day::NextStop, close_day::Placed};
}
