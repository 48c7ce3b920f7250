//! Storage behind one small async trait, so SQLite (embedded, default) and
//! PostgreSQL run the same domain operations and the same test suite.
//!
//! Every method is one domain operation and one transaction: a backend must
//! give it all-or-nothing semantics. No delivery code is ever stored; codes are
//! derived from the code key by the caller.

pub mod conformance;
pub mod postgres;
pub mod sqlite;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use utoipa::ToSchema;

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

/// A parcel as dispatch sends it. `requires_code` is already resolved by the
/// code policy (explicit flag, else value threshold).
#[derive(Debug, Clone)]
pub struct NewParcel {
    pub parcel_id: String,
    pub recipient_name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub address: String,
    pub value: f64,
    pub currency: String,
    pub requires_code: bool,
    /// Fresh random track token, used only if the parcel is new.
    pub track_token: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UpsertStatus {
    Created,
    Updated,
}

/// What dispatch and the customer page may see about a parcel: never a code.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ParcelView {
    pub parcel_id: String,
    pub recipient_name: String,
    pub address: String,
    pub requires_code: bool,
    /// pending | scheduled | delivered | failed | disputed
    pub status: String,
    pub delivery_date: Option<NaiveDate>,
    pub attempt: u32,
    pub route_id: Option<String>,
    pub wrong_tries: u32,
    pub locked: bool,
    pub events: Vec<ParcelEvent>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ParcelEvent {
    pub at: DateTime<Utc>,
    pub kind: String,
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
    pub status: String,
    pub delivery_date: Option<NaiveDate>,
    pub attempt: u32,
    pub track_token: String,
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

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RouteSaved {
    pub route_id: String,
    pub delivery_date: NaiveDate,
    pub revision: u64,
    pub notices_queued: u32,
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

#[derive(Debug, Clone)]
pub struct Device {
    pub device_id: String,
    pub courier_id: String,
    pub name: String,
    pub public_key: String,
}

#[derive(Debug, Clone)]
pub struct NewDevice {
    pub device_id: String,
    pub name: String,
    pub public_key: String,
    pub token_hash: String,
}

/// The facts of a verified confirmation, without its code. The caller has
/// already checked the signature and compared the code in constant time.
#[derive(Debug, Clone)]
pub struct IngestConfirmation {
    pub confirmation_id: String,
    pub device_id: String,
    pub seq: u64,
    pub manifest_id: String,
    pub revision: u64,
    pub parcel_id: String,
    pub delivery_date: NaiveDate,
    pub attempt: u32,
    pub outcome: String,
    pub reason: Option<String>,
    pub verified: String,
    pub failed_attempts: u32,
    pub recorded_at: DateTime<Utc>,
    /// None when the confirmation carried no code.
    pub code_ok: Option<bool>,
    /// recorded_at is at or after the day's valid_until.
    pub late: bool,
    pub many_tries_threshold: u32,
    pub received_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestOutcome {
    Accepted {
        disputed: bool,
    },
    Duplicate,
    /// (reason, permanent)
    Rejected(String, bool),
}

#[derive(Debug, Clone)]
pub struct VerifyTarget {
    pub delivery_date: NaiveDate,
    pub attempt: u32,
    pub requires_code: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyOutcome {
    Accepted,
    Rejected {
        attempts_left: u32,
    },
    Locked,
    /// The parcel moved to another attempt while we checked; ask again.
    Stale,
}

/// A dispute or fraud signal for dispatch.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Signal {
    pub id: i64,
    /// code_mismatch | delivered_without_code | many_wrong_tries | late_confirmation | superseded_code | seq_gap | seq_reuse | verify_lockout
    pub kind: String,
    pub parcel_id: Option<String>,
    pub device_id: Option<String>,
    pub confirmation_id: Option<String>,
    pub detail: String,
    pub at: DateTime<Utc>,
}

/// One claimed notice to send.
#[derive(Debug, Clone)]
pub struct NoticeJob {
    pub notice_id: i64,
    pub parcel_id: String,
    pub delivery_date: NaiveDate,
    pub attempt: u32,
    pub tries: u32,
}

/// Result of moving parcels (close day, reissue): routes needing a rebuild.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct Moved {
    pub parcel_ids: Vec<String>,
    #[schema(value_type = Vec<Object>)]
    pub routes: Vec<(String, NaiveDate)>,
}

#[async_trait::async_trait]
pub trait Storage: Send + Sync {
    /// Create or update parcels; one result per item, in order.
    async fn upsert_parcels(
        &self,
        items: Vec<NewParcel>,
        now: DateTime<Utc>,
    ) -> Result<Vec<UpsertStatus>>;
    async fn parcel(&self, parcel_id: &str) -> Result<Option<ParcelView>>;
    async fn parcel_contact(&self, parcel_id: &str) -> Result<Option<ParcelContact>>;
    async fn parcel_by_track_token(&self, token: &str) -> Result<Option<ParcelContact>>;
    /// Ids of the parcels whose current delivery date is `date`, sorted (the
    /// dispatcher's board reads each with [`Storage::parcel`]).
    async fn parcel_ids_on(&self, date: NaiveDate) -> Result<Vec<String>>;

    /// Create or replace a route for a date: revision+1, assign parcels
    /// (attempt+1 when a parcel changes day), queue a notice per new code.
    async fn save_route(&self, route: RouteInput, now: DateTime<Utc>) -> Result<RouteSaved>;
    async fn route(&self, route_id: &str, date: NaiveDate) -> Result<Option<RouteData>>;
    async fn route_for_courier(
        &self,
        courier_id: &str,
        date: NaiveDate,
    ) -> Result<Option<RouteData>>;

    async fn create_enrollment(
        &self,
        code_hash: &str,
        courier_id: &str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<()>;
    /// Consume a valid enrollment code and register the device; None if the
    /// code is unknown, used or expired.
    async fn enroll_device(
        &self,
        code_hash: &str,
        device: NewDevice,
        now: DateTime<Utc>,
    ) -> Result<Option<Device>>;
    async fn device_by_token(&self, token_hash: &str) -> Result<Option<Device>>;
    async fn device(&self, device_id: &str) -> Result<Option<Device>>;
    async fn devices_of_courier(&self, courier_id: &str) -> Result<Vec<Device>>;

    async fn manifest(
        &self,
        route_id: &str,
        date: NaiveDate,
        device_id: &str,
    ) -> Result<Option<StoredManifest>>;
    /// The device's stored manifest for its courier's route on `date`, if it
    /// was built at the route's current revision. One indexed read, so a
    /// fetch or a 304 does not load the whole route; None means load the
    /// route and build (or there is no route).
    async fn current_manifest(
        &self,
        courier_id: &str,
        date: NaiveDate,
        device_id: &str,
    ) -> Result<Option<StoredManifest>> {
        let Some(route) = self.route_for_courier(courier_id, date).await? else {
            return Ok(None);
        };
        Ok(self
            .manifest(&route.route_id, date, device_id)
            .await?
            .filter(|m| m.revision >= route.revision))
    }
    /// Store a build unless a build at the same or a newer revision exists.
    /// Returns the manifest now current (ours or the newer one).
    async fn store_manifest(&self, m: StoredManifest) -> Result<StoredManifest>;

    async fn ingest_confirmation(&self, c: IngestConfirmation) -> Result<IngestOutcome>;
    /// One upload's confirmations, in order, one result per item. The default
    /// takes a transaction each; SQLite commits the upload in one transaction
    /// (one fsync instead of one per item), each item in its own savepoint so
    /// a failed item leaves the others as they would be alone.
    async fn ingest_confirmations(
        &self,
        items: Vec<IngestConfirmation>,
    ) -> Vec<Result<IngestOutcome>> {
        let mut out = Vec::with_capacity(items.len());
        for c in items {
            out.push(self.ingest_confirmation(c).await);
        }
        out
    }

    /// Where a parcel stands for an online check by this device; None when the
    /// parcel is not on any manifest built for the device.
    async fn verify_target(&self, device_id: &str, parcel_id: &str)
    -> Result<Option<VerifyTarget>>;
    /// Count one online try for the parcel's attempt and lock at `max_attempts`.
    #[allow(clippy::too_many_arguments)]
    async fn record_verify(
        &self,
        device_id: &str,
        parcel_id: &str,
        date: NaiveDate,
        attempt: u32,
        ok: bool,
        max_attempts: u32,
        now: DateTime<Utc>,
    ) -> Result<VerifyOutcome>;

    /// Void the current code: attempt+1, clear the lock, queue a notice.
    async fn reissue(&self, parcel_id: &str, now: DateTime<Utc>) -> Result<Moved>;
    /// Move undelivered parcels of `date` to `next`, attempt+1, queue notices.
    async fn close_day(
        &self,
        date: NaiveDate,
        next: NaiveDate,
        now: DateTime<Utc>,
    ) -> Result<Moved>;

    async fn signals(&self) -> Result<Vec<Signal>>;

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
}

/// The `superseded_code` signal's detail: a parcel was handed over against
/// the code of an attempt dispatch had already replaced (a handset that had
/// not synced since the reissue). The customer, or whoever read them the old
/// code, got the parcel; dispatch should find out which.
pub(crate) fn superseded_detail(used: u32, current: i64) -> String {
    format!("delivered with the code of attempt {used} after dispatch issued attempt {current}")
}
