//! The confirmation: what a handset records at the door and uploads, signed by
//! the device key. The server re-checks its code in full.

use crate::codes::Code;
use crate::envelope::{Context, Envelope, EnvelopeError, SigningKey, VerifyingKey};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub const CONFIRMATION_FORMAT: u64 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Delivered,
    Failed,
}

/// Why a parcel was not handed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailReason {
    CustomerAbsent,
    Refused,
    LockedOut,
    AddressNotFound,
    Damaged,
    Other,
}

impl FailReason {
    pub const ALL: [FailReason; 6] = [
        FailReason::CustomerAbsent,
        FailReason::Refused,
        FailReason::LockedOut,
        FailReason::AddressNotFound,
        FailReason::Damaged,
        FailReason::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailReason::CustomerAbsent => "customer_absent",
            FailReason::Refused => "refused",
            FailReason::LockedOut => "locked_out",
            FailReason::AddressNotFound => "address_not_found",
            FailReason::Damaged => "damaged",
            FailReason::Other => "other",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// How the code was checked before the outcome was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verified {
    Online,
    Offline,
    None,
}

impl Verified {
    pub fn as_str(self) -> &'static str {
        match self {
            Verified::Online => "online",
            Verified::Offline => "offline",
            Verified::None => "none",
        }
    }
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Confirmation {
    pub format: u64,
    pub confirmation_id: Uuid,
    pub device_id: String,
    pub seq: u64,
    pub manifest_id: String,
    pub revision: u64,
    pub parcel_id: String,
    pub delivery_date: NaiveDate,
    pub attempt: u32,
    pub outcome: Outcome,
    pub reason: Option<FailReason>,
    pub code: Option<Code>,
    pub verified: Verified,
    pub failed_attempts: u32,
    pub recorded_at: DateTime<Utc>,
    pub since_sync_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfirmationError {
    #[error("confirmation format {0} is not supported")]
    UnknownFormat(u64),
    #[error("the confirmation is not valid JSON for format 1: {0}")]
    Malformed(String),
    #[error("the confirmation field {0} is empty or too long")]
    BadField(&'static str),
    #[error("seq must be at least 1")]
    BadSeq,
    #[error("attempt must be at least 1")]
    BadAttempt,
    #[error("a delivered confirmation has no failure reason")]
    DeliveredWithReason,
    #[error("a failed confirmation needs a reason")]
    FailedWithoutReason,
    #[error("a failed confirmation carries no code")]
    FailedWithCode,
    #[error("a code is present exactly when the outcome was verified online or offline")]
    CodeVerificationMismatch,
    #[error("the envelope's key id is not the confirmation's device")]
    DeviceMismatch,
}

impl Confirmation {
    pub fn from_verified_bytes(body: &[u8]) -> Result<Self, ConfirmationError> {
        #[derive(Deserialize)]
        struct Probe {
            format: u64,
        }
        let probe: Probe = serde_json::from_slice(body)
            .map_err(|e| ConfirmationError::Malformed(e.to_string()))?;
        if probe.format != CONFIRMATION_FORMAT {
            return Err(ConfirmationError::UnknownFormat(probe.format));
        }
        let c: Confirmation = serde_json::from_slice(body)
            .map_err(|e| ConfirmationError::Malformed(e.to_string()))?;
        c.validate()?;
        Ok(c)
    }

    pub fn validate(&self) -> Result<(), ConfirmationError> {
        if self.format != CONFIRMATION_FORMAT {
            return Err(ConfirmationError::UnknownFormat(self.format));
        }
        for (v, f) in [
            (&self.device_id, "device_id"),
            (&self.manifest_id, "manifest_id"),
            (&self.parcel_id, "parcel_id"),
        ] {
            if v.trim().is_empty() || v.len() > 1_000 {
                return Err(ConfirmationError::BadField(f));
            }
        }
        if self.seq == 0 {
            return Err(ConfirmationError::BadSeq);
        }
        if self.attempt == 0 {
            return Err(ConfirmationError::BadAttempt);
        }
        match self.outcome {
            Outcome::Delivered if self.reason.is_some() => {
                return Err(ConfirmationError::DeliveredWithReason);
            }
            Outcome::Failed if self.reason.is_none() => {
                return Err(ConfirmationError::FailedWithoutReason);
            }
            Outcome::Failed if self.code.is_some() => {
                return Err(ConfirmationError::FailedWithCode);
            }
            _ => {}
        }
        let checked = self.verified != Verified::None;
        if checked != self.code.is_some() {
            return Err(ConfirmationError::CodeVerificationMismatch);
        }
        Ok(())
    }

    /// Signs with the device key; the envelope's kid is the device id.
    pub fn seal(&self, device_key: &SigningKey) -> Result<Envelope, ConfirmationError> {
        self.validate()?;
        if device_key.kid() != self.device_id {
            return Err(ConfirmationError::DeviceMismatch);
        }
        let body =
            serde_json::to_vec(self).map_err(|e| ConfirmationError::Malformed(e.to_string()))?;
        Ok(device_key.seal(Context::Confirmation, &body))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignedConfirmationError {
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    #[error(transparent)]
    Body(#[from] ConfirmationError),
}

/// Verifies a device's envelope and parses the body; the body must name the
/// same device as the envelope's kid.
pub fn open_confirmation(
    env: &Envelope,
    device_key: &VerifyingKey,
) -> Result<Confirmation, SignedConfirmationError> {
    let body = device_key.verify(Context::Confirmation, env)?;
    let c = Confirmation::from_verified_bytes(&body)?;
    if c.device_id != env.kid || c.device_id != device_key.kid {
        return Err(ConfirmationError::DeviceMismatch.into());
    }
    Ok(c)
}
