//! doorcode-ffi: the handset core for Kotlin and Swift, through uniffi
//! proc-macros. A thin layer: every rule lives in `doorcode-core`; this crate
//! only converts types, maps errors to a small flat enum an app can branch
//! on, and adapts the platform's secret store (Keystore, Keychain).
// uniffi's generated scaffolding is `extern "C"` and needs `unsafe`.
#![allow(unsafe_code)]

use chrono::NaiveDate;
use doorcode_core::codes::{self, Code, SALT_LEN};
use doorcode_core::sync::SyncClient;
use doorcode_core::{Error, b64};
use secrets::ForeignSecrets;
use std::path::Path;
use std::sync::Arc;

uniffi::setup_scaffolding!();

mod error;
mod progress;
mod records;
mod secrets;
#[cfg(test)]
mod tests;

pub use error::DoorcodeError;
pub use progress::{SyncListener, SyncListenerError, SyncProgress};
pub use records::{
    CheckedBy, Enrollment, FailReason, HandsetStatus, Language, ManifestUpdate, Parcel,
    ParcelState, RecordedOutcome, RejectedUpload, Stop, SyncReport, VerifyResult,
};
pub use secrets::{SecretStore, SecretStoreError};

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

    /// Sets the languages spoken codes are read in (`verify`,
    /// `verify_offline`), first one first where a word means different
    /// things in two of them. Words of other languages are refused as
    /// unreadable, not counted as a try. Empty means English, the default.
    /// Not stored: set it each time the handset is opened.
    pub fn set_languages(&self, languages: Vec<Language>) -> Result<(), DoorcodeError> {
        Ok(core(self).set_languages(&records::core_languages(languages))?)
    }

    /// The languages spoken codes are read in.
    pub fn languages(&self) -> Result<Vec<Language>, DoorcodeError> {
        Ok(core(self)
            .languages()?
            .into_iter()
            .map(Language::from)
            .collect())
    }

    /// `sync`, telling `listener` each step as it happens: started, manifest
    /// pulled, n of m uploaded, then done (with the report) or failed.
    /// Failed is always sent before this throws.
    pub async fn sync_with_progress(
        &self,
        date: Option<String>,
        listener: Arc<dyn SyncListener>,
    ) -> Result<SyncReport, DoorcodeError> {
        let listener = progress::ForeignListener(listener);
        let date = match date.map(|d| parse_date(&d)).transpose() {
            Ok(d) => d,
            Err(e) => {
                listener.tell(SyncProgress::Failed {
                    error: e.to_string(),
                });
                return Err(e);
            }
        };
        Ok(self.client.sync_observed(date, &listener).await?.into())
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

    /// Asks the depot to send the customer's notice again (the customer
    /// says the code never arrived; the code stays the same). Throws
    /// `ResendLimited` within 10 minutes of the last resend, `Server` when
    /// the depot refuses (not on this route, unknown parcel), and the door's
    /// errors (`OnHold`, `Locked`, `AlreadyRecorded`, ...) before asking.
    pub async fn resend(&self, parcel_id: String) -> Result<(), DoorcodeError> {
        Ok(self.client.resend(&parcel_id).await?)
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
            parcels_held: s.parcels_held,
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
/// `digits` digits, in `languages` (empty: English), exactly as `verify`
/// does before anything is counted. For live feedback while the courier
/// types.
#[uniffi::export(default(languages = []))]
pub fn read_code_input(
    input: String,
    digits: u8,
    languages: Vec<Language>,
) -> Result<String, DoorcodeError> {
    Ok(doorcode_core::input::parse_code_input_in(
        &input,
        digits,
        &records::core_languages(languages),
    )
    .map_err(Error::from)?
    .expose()
    .to_string())
}

/// The language of a code or locale tag (`es`, `es-MX`, `pt_BR`), or
/// null/nil when codes cannot be read in it.
#[uniffi::export]
pub fn language_from_tag(tag: String) -> Option<Language> {
    doorcode_core::input::Language::from_tag(&tag).map(Language::from)
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
