//! doorcode-ffi: the handset core for Kotlin and Swift, through uniffi
//! proc-macros. A thin layer: every rule lives in `doorcode-core`; this crate
//! only converts types, maps errors to a small flat enum an app can branch
//! on, and adapts the platform's secret store (Keystore, Keychain).
// uniffi's generated scaffolding is `extern "C"` and needs `unsafe`.
#![allow(unsafe_code)]

use chrono::NaiveDate;
use doorcode_core::codes::{self, Code, SALT_LEN};
use doorcode_core::confirmation::{self, Outcome, Verified};
use doorcode_core::secrets::SecretError;
use doorcode_core::store::{self, ParcelState as CoreParcelState, VerifyOutcome};
use doorcode_core::sync::{self, ManifestSync, SyncClient};
use doorcode_core::{Error, b64};
use std::path::Path;
use std::sync::Arc;

uniffi::setup_scaffolding!();

/// Everything that can go wrong, flat so Kotlin's `message` and Swift's
/// description carry the core's explanatory text. Branch on the variant,
/// show the message. No message ever contains a code.
#[derive(Debug, thiserror::Error, uniffi::Error)]
#[uniffi(flat_error)]
pub enum DoorcodeError {
    /// The entered text is not a code of the right length. Not counted as a try.
    #[error("{0}")]
    InvalidCode(String),
    /// An argument from the app is malformed (a date, a base64 salt, ...).
    #[error("{0}")]
    InvalidArgument(String),
    /// Enroll first (or again, after a sign-out).
    #[error("{0}")]
    NotEnrolled(String),
    #[error("{0}")]
    UnknownParcel(String),
    /// Too many wrong codes: fail the parcel as `LOCKED_OUT` or ask dispatch to reissue.
    #[error("{0}")]
    Locked(String),
    #[error("{0}")]
    AlreadyRecorded(String),
    /// The action does not fit this parcel (a code where none is needed, a
    /// reason a locked parcel cannot have, ...).
    #[error("{0}")]
    NotAllowed(String),
    /// No network or the server did not answer: work offline, sync later.
    #[error("{0}")]
    Offline(String),
    /// The server refused the device token: enroll again.
    #[error("{0}")]
    Unauthorized(String),
    /// The server refused or answered something unreadable.
    #[error("{0}")]
    Server(String),
    /// Confirmations still wait for upload; sync first.
    #[error("{0}")]
    PendingUploads(String),
    /// A manifest was refused (signature, key, device, rollback, expiry, format).
    #[error("{0}")]
    Manifest(String),
    /// The app's `SecretStore` failed.
    #[error("{0}")]
    SecretStore(String),
    /// The handset database failed (disk full, read-only, corrupt).
    #[error("{0}")]
    Storage(String),
}

impl From<Error> for DoorcodeError {
    fn from(e: Error) -> Self {
        let m = e.to_string();
        match e {
            Error::Input(_) => Self::InvalidCode(m),
            Error::BadSignature
            | Error::UnknownKey(_)
            | Error::WrongDevice { .. }
            | Error::Rollback { .. }
            | Error::ManifestExpired
            | Error::ManifestNotYetValid
            | Error::UnknownFormat(_)
            | Error::BadManifest(_)
            | Error::BadEnvelope(_) => Self::Manifest(m),
            Error::NotEnrolled => Self::NotEnrolled(m),
            Error::UnknownParcel(_) => Self::UnknownParcel(m),
            Error::Locked(_) => Self::Locked(m),
            Error::AlreadyRecorded { .. } => Self::AlreadyRecorded(m),
            Error::CodeRequired(_) | Error::NoCodeRequired(_) | Error::ReasonNotAllowed { .. } => {
                Self::NotAllowed(m)
            }
            Error::Offline(_) => Self::Offline(m),
            Error::Unauthorized => Self::Unauthorized(m),
            Error::Server { .. } | Error::BadResponse(_) => Self::Server(m),
            Error::PendingUploads(_) => Self::PendingUploads(m),
            Error::Secrets(_) => Self::SecretStore(m),
            Error::Confirmation(_)
            | Error::DiskFull
            | Error::ReadOnly(_)
            | Error::Storage(_)
            | Error::Corrupt(_) => Self::Storage(m),
        }
    }
}

/// What a foreign `SecretStore` throws.
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum SecretStoreError {
    #[error("{reason}")]
    Failed { reason: String },
}

impl From<uniffi::UnexpectedUniFFICallbackError> for SecretStoreError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        Self::Failed { reason: e.reason }
    }
}

/// Where the device key and token live: Android Keystore, iOS Keychain.
/// Implemented by the app; names are short ASCII identifiers.
#[uniffi::export(with_foreign)]
pub trait SecretStore: Send + Sync {
    /// The stored bytes, or null/nil when nothing is stored under `name`.
    fn get(&self, name: String) -> Result<Option<Vec<u8>>, SecretStoreError>;
    fn put(&self, name: String, value: Vec<u8>) -> Result<(), SecretStoreError>;
    /// Deleting a missing name is not an error.
    fn delete(&self, name: String) -> Result<(), SecretStoreError>;
}

/// Adapts the foreign store to the core's trait.
struct ForeignSecrets(Arc<dyn SecretStore>);

fn secret_err(e: SecretStoreError) -> SecretError {
    SecretError(e.to_string())
}

impl doorcode_core::secrets::SecretStore for ForeignSecrets {
    fn get(&self, name: &str) -> Result<Option<Vec<u8>>, SecretError> {
        self.0.get(name.to_string()).map_err(secret_err)
    }
    fn put(&self, name: &str, value: &[u8]) -> Result<(), SecretError> {
        self.0
            .put(name.to_string(), value.to_vec())
            .map_err(secret_err)
    }
    fn delete(&self, name: &str) -> Result<(), SecretError> {
        self.0.delete(name.to_string()).map_err(secret_err)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum FailReason {
    CustomerAbsent,
    Refused,
    /// Only for a parcel locked after too many wrong codes.
    LockedOut,
    AddressNotFound,
    Damaged,
    Other,
}

impl From<FailReason> for confirmation::FailReason {
    fn from(r: FailReason) -> Self {
        use confirmation::FailReason as C;
        match r {
            FailReason::CustomerAbsent => C::CustomerAbsent,
            FailReason::Refused => C::Refused,
            FailReason::LockedOut => C::LockedOut,
            FailReason::AddressNotFound => C::AddressNotFound,
            FailReason::Damaged => C::Damaged,
            FailReason::Other => C::Other,
        }
    }
}

impl From<confirmation::FailReason> for FailReason {
    fn from(r: confirmation::FailReason) -> Self {
        use confirmation::FailReason as C;
        match r {
            C::CustomerAbsent => Self::CustomerAbsent,
            C::Refused => Self::Refused,
            C::LockedOut => Self::LockedOut,
            C::AddressNotFound => Self::AddressNotFound,
            C::Damaged => Self::Damaged,
            C::Other => Self::Other,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum ParcelState {
    Pending,
    Delivered,
    Failed,
    Locked,
}

/// How a code was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum CheckedBy {
    /// The server checked the full code.
    Online,
    /// The handset checked the short offline tag; the server re-checks on upload.
    Offline,
    /// No code was needed.
    NotChecked,
}

impl From<Verified> for CheckedBy {
    fn from(v: Verified) -> Self {
        match v {
            Verified::Online => Self::Online,
            Verified::Offline => Self::Offline,
            Verified::None => Self::NotChecked,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Parcel {
    pub parcel_id: String,
    pub requires_code: bool,
    pub attempt: u32,
    pub state: ParcelState,
    pub failed_tries: u32,
    pub attempts_left: u32,
    pub fail_reason: Option<FailReason>,
}

#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Stop {
    pub route_id: String,
    /// `YYYY-MM-DD`.
    pub delivery_date: String,
    pub stop_id: String,
    pub sequence: u32,
    pub address: String,
    pub recipient: String,
    pub parcels: Vec<Parcel>,
}

impl From<store::StopView> for Stop {
    fn from(s: store::StopView) -> Self {
        Self {
            route_id: s.route_id,
            delivery_date: codes::date_str(s.delivery_date),
            stop_id: s.stop_id,
            sequence: s.sequence,
            address: s.address,
            recipient: s.recipient,
            parcels: s
                .parcels
                .into_iter()
                .map(|p| Parcel {
                    parcel_id: p.parcel_id,
                    requires_code: p.requires_code,
                    attempt: p.attempt,
                    state: match p.state {
                        CoreParcelState::Pending => ParcelState::Pending,
                        CoreParcelState::Delivered => ParcelState::Delivered,
                        CoreParcelState::Failed => ParcelState::Failed,
                        CoreParcelState::Locked => ParcelState::Locked,
                    },
                    failed_tries: p.failed_tries,
                    attempts_left: p.attempts_left,
                    fail_reason: p.reason.map(FailReason::from),
                })
                .collect(),
        }
    }
}

/// The answer at the door. A rejected try is already durable.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum VerifyResult {
    /// Hand the parcel over; the delivery is recorded as confirmation `seq`.
    Accepted {
        parcel_id: String,
        seq: u64,
        checked_by: CheckedBy,
    },
    /// Wrong code; the customer may try again `attempts_left` times.
    Rejected {
        parcel_id: String,
        attempts_left: u32,
        checked_by: CheckedBy,
    },
    /// No tries left: fail the parcel as `LOCKED_OUT`, or dispatch reissues.
    Locked {
        parcel_id: String,
        checked_by: CheckedBy,
    },
}

impl From<VerifyOutcome> for VerifyResult {
    fn from(o: VerifyOutcome) -> Self {
        match o {
            VerifyOutcome::Accepted {
                parcel_id,
                seq,
                verified,
            } => Self::Accepted {
                parcel_id,
                seq,
                checked_by: verified.into(),
            },
            VerifyOutcome::Rejected {
                parcel_id,
                attempts_left,
                verified,
            } => Self::Rejected {
                parcel_id,
                attempts_left,
                checked_by: verified.into(),
            },
            VerifyOutcome::Locked {
                parcel_id,
                verified,
            } => Self::Locked {
                parcel_id,
                checked_by: verified.into(),
            },
        }
    }
}

/// An outcome recorded in the outbox, uploaded by the next sync.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct RecordedOutcome {
    pub parcel_id: String,
    pub seq: u64,
    pub confirmation_id: String,
    pub delivered: bool,
}

impl From<store::Recorded> for RecordedOutcome {
    fn from(r: store::Recorded) -> Self {
        Self {
            parcel_id: r.parcel_id,
            seq: r.seq,
            confirmation_id: r.confirmation_id,
            delivered: r.outcome == Outcome::Delivered,
        }
    }
}

/// What a sync did to the day's manifest.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum ManifestUpdate {
    Pulled {
        revision: u64,
        stops: u32,
        parcels: u32,
    },
    Unchanged {
        revision: Option<u64>,
    },
    /// The server has no route for this courier that day.
    NoManifest,
    Failed {
        error: String,
    },
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl From<ManifestSync> for ManifestUpdate {
    fn from(m: ManifestSync) -> Self {
        match m {
            ManifestSync::Pulled {
                revision,
                stops,
                parcels,
            } => Self::Pulled {
                revision,
                stops: count(stops),
                parcels: count(parcels),
            },
            ManifestSync::Unchanged { revision } => Self::Unchanged { revision },
            ManifestSync::NoManifest => Self::NoManifest,
            ManifestSync::Failed { error } => Self::Failed { error },
        }
    }
}

/// What one sync did. A sync only throws for what no retry fixes (not
/// enrolled, token refused); network trouble lands in `errors` with
/// `next_retry_ms`.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct SyncReport {
    pub date: String,
    pub manifest: ManifestUpdate,
    pub uploaded: u32,
    pub duplicates: u32,
    pub rejected: u32,
    pub pending: u32,
    pub wiped_days: u32,
    pub online: bool,
    pub next_retry_ms: Option<u64>,
    pub clock_offset_ms: i64,
    pub errors: Vec<String>,
}

impl From<sync::SyncReport> for SyncReport {
    fn from(r: sync::SyncReport) -> Self {
        Self {
            date: codes::date_str(r.date),
            manifest: r.manifest.into(),
            uploaded: r.uploaded,
            duplicates: r.duplicates,
            rejected: r.rejected,
            pending: r.pending,
            wiped_days: r.wiped_days,
            online: r.online,
            next_retry_ms: r.next_retry_ms,
            clock_offset_ms: r.clock_offset_ms,
            errors: r.errors,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Enrollment {
    pub device_id: String,
    pub courier_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct HandsetStatus {
    pub device_id: Option<String>,
    pub courier_id: Option<String>,
    pub manifests: u32,
    pub parcels_pending: u32,
    pub parcels_delivered: u32,
    pub parcels_failed: u32,
    pub parcels_locked: u32,
    pub outbox_pending: u32,
    pub outbox_rejected: u32,
    pub last_sync_at: Option<String>,
}

/// A confirmation the server refused for good: shown, never retried.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct RejectedUpload {
    pub seq: u64,
    pub confirmation_id: String,
    pub parcel_id: String,
    pub delivery_date: String,
    pub reason: String,
}

/// The courier's handset: one per app, safe to share across threads.
#[derive(uniffi::Object)]
pub struct Handset {
    client: SyncClient,
}

fn core(h: &Handset) -> &doorcode_core::Handset {
    h.client.handset()
}

#[uniffi::export(async_runtime = "tokio")]
impl Handset {
    /// Opens (or creates) the handset database at `db_path`, keeping the
    /// device key and token in `secrets`.
    #[uniffi::constructor]
    pub fn open(
        db_path: String,
        secrets: Arc<dyn SecretStore>,
    ) -> Result<Arc<Self>, DoorcodeError> {
        let h =
            doorcode_core::Handset::open(Path::new(&db_path), Arc::new(ForeignSecrets(secrets)))?;
        Ok(Arc::new(Self {
            client: SyncClient::new(Arc::new(h))?,
        }))
    }

    /// Enrolls with a one-time code from dispatch. Refused while
    /// confirmations wait for upload.
    pub async fn enroll(
        &self,
        server_url: String,
        enrollment_code: String,
        device_name: String,
    ) -> Result<Enrollment, DoorcodeError> {
        let id = self
            .client
            .enroll(&server_url, &enrollment_code, &device_name)
            .await?;
        Ok(Enrollment {
            device_id: id.device_id,
            courier_id: id.courier_id,
        })
    }

    /// Pulls the manifest of `date` (`YYYY-MM-DD`, default today), uploads
    /// waiting confirmations and wipes finished past days.
    pub async fn sync(&self, date: Option<String>) -> Result<SyncReport, DoorcodeError> {
        let date = date.map(|d| parse_date(&d)).transpose()?;
        Ok(self.client.sync(date).await?.into())
    }

    /// The stops of every manifest valid now, with each parcel's state.
    pub fn stops(&self) -> Result<Vec<Stop>, DoorcodeError> {
        Ok(core(self).stops()?.into_iter().map(Stop::from).collect())
    }

    /// Checks the code the customer gave (typed, or a speech transcript):
    /// online when the server answers within a few seconds, else offline.
    pub async fn verify(
        &self,
        parcel_id: String,
        input: String,
    ) -> Result<VerifyResult, DoorcodeError> {
        Ok(self.client.verify(&parcel_id, &input).await?.into())
    }

    /// Checks the code against the offline tag only, without any network.
    pub fn verify_offline(
        &self,
        parcel_id: String,
        input: String,
    ) -> Result<VerifyResult, DoorcodeError> {
        Ok(core(self).verify(&parcel_id, &input)?.into())
    }

    /// Hands over a parcel that needs no code.
    pub fn deliver(&self, parcel_id: String) -> Result<RecordedOutcome, DoorcodeError> {
        Ok(core(self).deliver(&parcel_id)?.into())
    }

    /// Records a failed delivery; it uploads with the next sync.
    pub fn fail(
        &self,
        parcel_id: String,
        reason: FailReason,
    ) -> Result<RecordedOutcome, DoorcodeError> {
        Ok(core(self).fail(&parcel_id, reason.into())?.into())
    }

    pub fn status(&self) -> Result<HandsetStatus, DoorcodeError> {
        let s = core(self).status()?;
        Ok(HandsetStatus {
            device_id: s.device_id,
            courier_id: s.courier_id,
            manifests: s.manifests,
            parcels_pending: s.parcels_pending,
            parcels_delivered: s.parcels_delivered,
            parcels_failed: s.parcels_failed,
            parcels_locked: s.parcels_locked,
            outbox_pending: s.outbox_pending,
            outbox_rejected: s.outbox_rejected,
            last_sync_at: s.last_sync_at,
        })
    }

    /// Confirmations the server refused for good.
    pub fn rejected_uploads(&self) -> Result<Vec<RejectedUpload>, DoorcodeError> {
        Ok(core(self)
            .rejected_confirmations()?
            .into_iter()
            .map(|r| RejectedUpload {
                seq: r.seq,
                confirmation_id: r.confirmation_id,
                parcel_id: r.parcel_id,
                delivery_date: r.delivery_date,
                reason: r.reason,
            })
            .collect())
    }

    /// Signs out: deletes the device key and token and wipes the database.
    /// Throws `PendingUploads` while confirmations wait, unless `force`
    /// (which loses them).
    pub fn sign_out(&self, force: bool) -> Result<(), DoorcodeError> {
        Ok(core(self).sign_out(force)?)
    }
}

fn parse_date(s: &str) -> Result<NaiveDate, DoorcodeError> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|_| DoorcodeError::InvalidArgument(format!("{s:?} is not a YYYY-MM-DD date")))
}

/// Reads typed or spoken input ("four two double seven one oh") as a code of
/// `digits` digits, exactly as `verify` does before anything is counted.
/// For live feedback while the courier types.
#[uniffi::export]
pub fn read_code_input(input: String, digits: u8) -> Result<String, DoorcodeError> {
    Ok(doorcode_core::input::parse_code_input(&input, digits)
        .map_err(Error::from)?
        .expose()
        .to_string())
}

/// The protocol's offline tag (`../shared/vectors`): what the handset
/// compares against at the door. Exposed so apps and tests can check the
/// binding against the shared vectors.
#[uniffi::export]
pub fn offline_tag(
    salt_b64: String,
    parcel_id: String,
    delivery_date: String,
    code: String,
    bits: u8,
) -> Result<u32, DoorcodeError> {
    let salt: [u8; SALT_LEN] = b64::decode_array(&salt_b64).ok_or_else(|| {
        DoorcodeError::InvalidArgument(format!(
            "the salt must be {SALT_LEN} bytes in unpadded base64url"
        ))
    })?;
    let date = parse_date(&delivery_date)?;
    let code = Code::new(code).map_err(|e| DoorcodeError::InvalidCode(e.to_string()))?;
    codes::offline_tag(&salt, &parcel_id, date, &code, bits)
        .map_err(|e| DoorcodeError::InvalidArgument(e.to_string()))
}
