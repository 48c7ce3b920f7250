//! The HTTP bodies both sides of the API speak, written once: the handset's
//! [`crate::sync::SyncClient`], the dispatch client ([`crate::dispatch`]),
//! the tools, the load generator and the tests read and write these.
//!
//! Statuses and reasons are enums that serialize to the same words the server
//! sends (docs/SERVER.md). A client older than its server meets words it does
//! not know as `Unknown` instead of failing the whole answer.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

/// Every 4xx/5xx answer: a stable word and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// A stable machine-readable word, e.g. `invalid_body`.
    pub error: String,
    /// What went wrong, for people.
    pub message: String,
}

// ---------- dispatch: parcels ----------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Recipient {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
}

/// One parcel of `POST /v1/parcels`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ParcelIn {
    pub parcel_id: String,
    pub recipient: Recipient,
    pub address: String,
    pub value: f64,
    pub currency: String,
    /// Overrides the server's value threshold when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requires_code: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ParcelBatch {
    pub parcels: Vec<ParcelIn>,
}

/// What `POST /v1/parcels` did with one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ParcelStatus {
    Created,
    Updated,
    /// Sent again as stored: nothing was written.
    Unchanged,
    Rejected,
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ParcelResult {
    pub parcel_id: String,
    pub status: ParcelStatus,
    /// For an item refused by a rule, e.g. `requires_code_frozen`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<RejectReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requires_code: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_url: Option<String>,
    /// For a rejected item: what is wrong with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ParcelResults {
    pub results: Vec<ParcelResult>,
}

/// Where a parcel stands on the server (not the handset's view of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ParcelState {
    Pending,
    Scheduled,
    Failed,
    Delivered,
    Disputed,
    /// The customer reported they did not order it (the tracking page's button).
    Held,
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ParcelEvent {
    pub at: DateTime<Utc>,
    /// `created`, `updated`, `scheduled`, `delivered`, `code_voided`, …
    pub kind: String,
    pub detail: String,
}

/// `GET /v1/parcels/{id}` and the answer of a reissue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ParcelDetail {
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
    pub track_url: String,
}

/// `POST /v1/parcels/{id}/reissue`; an empty body keeps the code policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReissueIn {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requires_code: Option<bool>,
}

// ---------- dispatch: routes, days, enrollments, disputes ----------

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct StopIn {
    pub stop_id: String,
    pub address: String,
    /// Display name on the handset; the server defaults it to the first parcel's recipient.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
    pub parcel_ids: Vec<String>,
}

/// `POST /v1/routes`: a courier's whole route for a day, replacing the last one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RouteIn {
    pub route_id: String,
    pub courier_id: String,
    pub delivery_date: NaiveDate,
    pub stops: Vec<StopIn>,
}

/// What `POST /v1/routes` did with a route.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RouteStatus {
    Created,
    Updated,
    /// Sent again as stored: same revision, no notice, no manifest built.
    Unchanged,
    /// A status this client does not know (or an older server that sends none).
    #[default]
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RouteOut {
    pub route_id: String,
    pub delivery_date: NaiveDate,
    #[serde(default)]
    pub status: RouteStatus,
    pub revision: u64,
    pub notices_queued: u32,
    pub manifests_built: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EnrollmentIn {
    pub courier_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnrollmentOut {
    /// One-time, valid 15 minutes; the courier types it into `POST /v1/devices`.
    pub enrollment_code: String,
    pub courier_id: String,
    pub expires_at: DateTime<Utc>,
}

/// `POST /v1/days/{date}/close`: undelivered parcels moved to `next_date`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CloseOut {
    pub date: NaiveDate,
    pub next_date: NaiveDate,
    pub parcel_ids: Vec<String>,
    /// `(route_id, delivery_date)` of every route that changed.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>))]
    pub routes: Vec<(String, NaiveDate)>,
}

/// A dispute or fraud signal for dispatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SignalKind {
    CodeMismatch,
    DeliveredWithoutCode,
    ManyWrongTries,
    LateConfirmation,
    SeqGap,
    SeqReuse,
    VerifyLockout,
    StaleManifest,
    TriesMismatch,
    /// Schema 1 only (old rows keep their kind).
    SupersededCode,
    /// The customer reported a parcel they did not order, or it was delivered anyway.
    NotOrdered,
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Signal {
    pub id: i64,
    pub kind: SignalKind,
    pub parcel_id: Option<String>,
    pub device_id: Option<String>,
    pub confirmation_id: Option<String>,
    pub day: NaiveDate,
    pub detail: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_matched: Option<bool>,
    pub at: DateTime<Utc>,
}

/// `GET /v1/disputes?date=…`, one page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DisputesOut {
    pub date: NaiveDate,
    pub disputes: Vec<Signal>,
    pub signals: Vec<Signal>,
    /// `cursor` for the next page; absent on the day's last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

// ---------- device ----------

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PublicKey {
    pub kid: String,
    pub alg: String,
    /// base64url Ed25519 public key.
    pub public_key: String,
}

/// `GET /.well-known/doorcode-keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Keys {
    pub keys: Vec<PublicKey>,
}

/// `POST /v1/devices`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DeviceIn {
    pub enrollment_code: String,
    /// base64url Ed25519 public key (32 bytes) the device signs confirmations with.
    pub device_public_key: String,
    pub device_name: String,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceOut {
    pub device_id: String,
    /// Bearer token for device calls; shown once, stored hashed.
    pub device_token: String,
    pub courier_id: String,
    pub server_keys: Vec<PublicKey>,
}

impl std::fmt::Debug for DeviceOut {
    /// Without the token: answers end up in logs and test failures.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceOut")
            .field("device_id", &self.device_id)
            .field("courier_id", &self.courier_id)
            .field("server_keys", &self.server_keys)
            .finish_non_exhaustive()
    }
}

/// `POST /v1/confirmations`: signed envelopes `{v, kid, body, sig}`. Any
/// JSON value is taken: an item that is not an envelope is rejected on its
/// own (`malformed_envelope`), so one bad item never blocks the others.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ConfirmationBatch {
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Value>))]
    pub confirmations: Vec<serde_json::Value>,
}

/// The answer for one uploaded confirmation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ItemStatus {
    Accepted,
    Duplicate,
    Rejected,
    #[serde(other)]
    Unknown,
}

/// Why an item (a confirmation or a parcel) was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    MalformedEnvelope,
    WrongDevice,
    DeviceKeyInvalid,
    DeviceRevoked,
    BadSignature,
    BadEncoding,
    UnsupportedVersion,
    UnknownFormat,
    MalformedBody,
    /// `seq` or `revision` above 2^53.
    OutOfRange,
    ConfirmationIdReused,
    UnknownParcel,
    NotOnManifest,
    NotOnCurrentRoute,
    RequiresCodeFrozen,
    /// The server could not decide now; the same item may succeed later.
    ServerError,
    #[serde(other)]
    Unknown,
}

impl RejectReason {
    /// The word on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MalformedEnvelope => "malformed_envelope",
            Self::WrongDevice => "wrong_device",
            Self::DeviceKeyInvalid => "device_key_invalid",
            Self::DeviceRevoked => "device_revoked",
            Self::BadSignature => "bad_signature",
            Self::BadEncoding => "bad_encoding",
            Self::UnsupportedVersion => "unsupported_version",
            Self::UnknownFormat => "unknown_format",
            Self::MalformedBody => "malformed_body",
            Self::OutOfRange => "out_of_range",
            Self::ConfirmationIdReused => "confirmation_id_reused",
            Self::UnknownParcel => "unknown_parcel",
            Self::NotOnManifest => "not_on_manifest",
            Self::NotOnCurrentRoute => "not_on_current_route",
            Self::RequiresCodeFrozen => "requires_code_frozen",
            Self::ServerError => "server_error",
            Self::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ItemResult {
    /// The item's place in the uploaded batch.
    pub index: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmation_id: Option<String>,
    pub status: ItemStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<RejectReason>,
    /// For rejections: true means retrying the same envelope can never succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permanent: Option<bool>,
    /// For accepted deliveries whose code failed the full check.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disputed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConfirmationResults {
    pub results: Vec<ItemResult>,
}

/// `POST /v1/verify`: the digits the customer gave at the door.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct VerifyIn {
    pub parcel_id: String,
    pub code: String,
}

impl std::fmt::Debug for VerifyIn {
    /// Codes are never logged.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VerifyIn({}, <code>)", self.parcel_id)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum VerifyResult {
    Accepted,
    Rejected,
    Locked,
    #[serde(other)]
    Unknown,
}

impl VerifyResult {
    /// The word serde writes, for metric labels and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Rejected => "rejected",
            Self::Locked => "locked",
            Self::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VerifyOut {
    pub result: VerifyResult,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts_left: Option<u32>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    #[test]
    fn statuses_are_the_servers_words() {
        let r: ItemResult = serde_json::from_value(json!({"index": 2, "status": "rejected",
            "reason": "not_on_current_route", "permanent": true}))
        .unwrap();
        assert_eq!(r.status, ItemStatus::Rejected);
        assert_eq!(r.reason, Some(RejectReason::NotOnCurrentRoute));
        assert_eq!(
            serde_json::to_value(RejectReason::NotOnCurrentRoute).unwrap(),
            json!(RejectReason::NotOnCurrentRoute.as_str())
        );
        let p: ParcelResult =
            serde_json::from_value(json!({"parcel_id": "P-1", "status": "updated"})).unwrap();
        assert_eq!(p.status, ParcelStatus::Updated);
    }

    #[test]
    fn a_word_this_client_does_not_know_is_unknown_not_an_error() {
        let v: VerifyOut = serde_json::from_value(json!({"result": "something_new"})).unwrap();
        assert_eq!(v.result, VerifyResult::Unknown);
    }

    #[test]
    fn verify_results_spell_as_serde_writes_them() {
        for r in [
            VerifyResult::Accepted,
            VerifyResult::Rejected,
            VerifyResult::Locked,
            VerifyResult::Unknown,
        ] {
            assert_eq!(
                serde_json::to_value(r).unwrap(),
                serde_json::Value::from(r.as_str())
            );
        }
    }

    #[test]
    fn debug_shows_no_code_and_no_token() {
        let v = VerifyIn {
            parcel_id: "P-1".into(),
            code: "123456".into(),
        };
        assert!(!format!("{v:?}").contains("123456"));
        let d = DeviceOut {
            device_id: "d".into(),
            device_token: "secret-token".into(),
            courier_id: "c".into(),
            server_keys: vec![],
        };
        assert!(!format!("{d:?}").contains("secret-token"));
    }
}
