//! The running server's shared state and the service steps that span
//! storage, crypto and notices: building manifests, checking codes,
//! ingesting confirmations, the dispatcher's actions and the customer's
//! view. The API handlers and the web pages both call these; they return
//! [`ServiceError`], which `error.rs` maps to HTTP in one place.

mod dispatch;
pub mod envelopes;
mod ingest;
mod manifests;
mod track;
mod verify;

pub(crate) use dispatch::normalize_enrollment;
pub use dispatch::{DayClosed, Enrollment};
pub use ingest::ItemResult;
pub use track::{TRACK_LINK_DAYS, TrackView};

use crate::config::Config;
use crate::domain::Policy;
use crate::domain::verify::Refused;
use crate::keys::{Signer, TrackKey};
use crate::metrics::Metrics;
use crate::notices::Notifier;
use crate::storage::{Storage, StorageError};
use chrono::NaiveDate;
use doorcode_core::codes::{Code, CodeKey, derive_code};
use std::sync::Arc;
use tokio::sync::Notify;

/// Everything a handler needs. Cheap to clone.
#[derive(Clone)]
pub struct App {
    pub cfg: Arc<Config>,
    pub storage: Arc<dyn Storage>,
    pub code_key: Arc<CodeKey>,
    /// Tracking links are derived from it and stored only as its HMAC.
    pub track_key: Arc<TrackKey>,
    pub signer: Arc<Signer>,
    pub metrics: Arc<Metrics>,
    pub notice_wake: Arc<Notify>,
    /// Sends notices (the outbox sender and the tracking page's resend).
    pub notifier: Notifier,
    pub admin_hash: Arc<String>,
    /// The last envelope each handset pulled, bounded (`envelopes.rs`).
    pub envelopes: Arc<envelopes::Envelopes>,
}

/// Why a service step did not happen. Says what went wrong in domain terms;
/// `impl From<ServiceError> for ApiError` decides the HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// An online check refused before it counted as a try.
    #[error("code check refused: {0:?}")]
    Refused(Refused),
    /// The parcel kept changing while its code was checked.
    #[error("the parcel changed while checking")]
    Changed,
    #[error("no such parcel")]
    UnknownParcel,
    /// No parcel has this tracking link (or it expired).
    #[error("unknown tracking link")]
    UnknownTrackToken,
    #[error("no route for this courier on {0}")]
    NoRoute(NaiveDate),
    /// Closing a day found no working day to move its parcels to.
    #[error("{0}")]
    NoWorkingDay(String),
    /// Input that breaks a rule; `kind` is the stable error word.
    #[error("{message}")]
    Invalid { kind: &'static str, message: String },
    /// A malformed request (a bad range, a bad parameter): 400.
    #[error("{message}")]
    BadRequest { kind: &'static str, message: String },
    /// A fault of the server (crypto, randomness); the detail is for the log.
    #[error("{0}")]
    Internal(String),
}

impl ServiceError {
    pub(crate) fn internal(detail: impl std::fmt::Display) -> Self {
        Self::Internal(detail.to_string())
    }
}

impl App {
    /// The rules' numbers, from the configuration.
    pub fn policy(&self) -> Policy {
        Policy::of(&self.cfg)
    }

    pub fn code(
        &self,
        parcel_id: &str,
        date: NaiveDate,
        attempt: u32,
    ) -> Result<Code, ServiceError> {
        derive_code(
            &self.code_key,
            parcel_id,
            date,
            attempt,
            self.cfg.code_digits,
        )
        .map_err(|e| ServiceError::internal(format!("code derivation: {e}")))
    }
}
