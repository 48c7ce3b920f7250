//! The one error type of the handset side. Each variant says what went wrong
//! and, where it helps, what to do. None carries a code.

use crate::confirmation::ConfirmationError;
use crate::envelope::EnvelopeError;
use crate::input::InputError;
use crate::manifest::{ManifestError, SignedManifestError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // --- input at the door: never counts as a try
    #[error("{0}")]
    Input(#[from] InputError),

    // --- manifest refusals
    #[error("the manifest's signature does not verify; it was not installed")]
    BadSignature,
    #[error(
        "the manifest is signed by key \"{0}\", which this handset does not trust; re-enroll if the server rotated keys"
    )]
    UnknownKey(String),
    #[error("the manifest is for device {manifest_device}, not this one")]
    WrongDevice { manifest_device: String },
    #[error(
        "the manifest revision {offered} is older than the held revision {held} (rollback refused)"
    )]
    Rollback { held: u64, offered: u64 },
    #[error(
        "the server sent revision {revision} of this route again with different content; the held manifest was kept. Tell dispatch: the depot must issue a new revision"
    )]
    ManifestConflict { revision: u64 },
    #[error("the manifest has expired; sync again for today's")]
    ManifestExpired,
    #[error("the manifest is not valid yet")]
    ManifestNotYetValid,
    #[error("manifest format {0} is not supported; update the app")]
    UnknownFormat(u64),
    #[error("the manifest is invalid: {0}")]
    BadManifest(ManifestError),
    #[error("the envelope is invalid: {0}")]
    BadEnvelope(EnvelopeError),

    // --- the door
    #[error("this handset is not enrolled; enroll it with a code from dispatch")]
    NotEnrolled,
    #[error("parcel {0} is not on any manifest held here")]
    UnknownParcel(String),
    #[error(
        "parcel {0} is locked after too many wrong codes; record it as failed (locked_out) or ask dispatch to reissue"
    )]
    Locked(String),
    #[error("parcel {parcel_id} already has an outcome ({outcome})")]
    AlreadyRecorded { parcel_id: String, outcome: String },
    #[error(
        "parcel {0} is on hold: the customer reported they did not order it. Do not hand it over; take it back and record it as failed with reason refused"
    )]
    Held(String),
    #[error("parcel {0} needs a code; use verify")]
    CodeRequired(String),
    #[error("parcel {0} needs no code; deliver it without one")]
    NoCodeRequired(String),
    #[error(
        "reason {reason} is not allowed here: a locked parcel fails only as locked_out, and only a locked one can (locked: {locked})"
    )]
    ReasonNotAllowed { reason: &'static str, locked: bool },

    // --- the network
    #[error("the server cannot be reached ({0}); work offline and sync later")]
    Offline(String),
    #[error("the server refused this device's token; enroll the handset again")]
    Unauthorized,
    #[error("the server refused: {message} ({error}, HTTP {status})")]
    Server {
        status: u16,
        error: String,
        message: String,
    },
    #[error("the server's answer could not be read: {0}")]
    BadResponse(String),
    #[error(
        "the customer's notice for parcel {parcel_id} was already sent again less than 10 minutes ago{}; ask the customer to check their email and messages, then try again later",
        retry_after_s.map(|s| format!(" (the server says to wait {s} s)")).unwrap_or_default()
    )]
    ResendTooSoon {
        parcel_id: String,
        retry_after_s: Option<u64>,
    },
    #[error("{}", resend_refused(parcel_id, *status, message))]
    ResendRefused {
        parcel_id: String,
        status: u16,
        message: String,
    },
    #[error("{0} confirmations still wait for upload; sync before enrolling again")]
    PendingUploads(u32),

    // --- plumbing
    #[error("the confirmation could not be built: {0}")]
    Confirmation(#[from] ConfirmationError),
    #[error("secret store: {0}")]
    Secrets(String),
    #[error(
        "the handset's storage is full: nothing new was recorded and nothing already held was lost; free space on the device, then try again"
    )]
    DiskFull,
    #[error(
        "the handset database cannot be written ({0}): nothing new was recorded and nothing already held was lost; check the app's storage (read-only or removed), then try again"
    )]
    ReadOnly(String),
    #[error("the handset database failed: {0}")]
    Storage(rusqlite::Error),
    #[error("the handset database holds unexpected data: {0}")]
    Corrupt(String),
}

/// Why the depot would not resend a notice, in the courier's terms.
fn resend_refused(parcel_id: &str, status: u16, message: &str) -> String {
    match status {
        403 => format!(
            "the server will not resend the notice for parcel {parcel_id}: it is not on this courier's current route; sync, and ask dispatch if it should be ({message})"
        ),
        404 => format!(
            "the server knows no parcel {parcel_id}, or does not offer resending notices yet ({message})"
        ),
        _ => format!(
            "the server cannot resend the notice for parcel {parcel_id} now: {message} (HTTP {status})"
        ),
    }
}

impl From<SignedManifestError> for Error {
    fn from(e: SignedManifestError) -> Self {
        match e {
            SignedManifestError::Envelope(EnvelopeError::BadSignature) => Error::BadSignature,
            SignedManifestError::Envelope(EnvelopeError::UnknownKey(k)) => Error::UnknownKey(k),
            SignedManifestError::Envelope(e) => Error::BadEnvelope(e),
            SignedManifestError::Body(ManifestError::UnknownFormat(f)) => Error::UnknownFormat(f),
            SignedManifestError::Body(e) => Error::BadManifest(e),
        }
    }
}

/// Disk full and read-only get their own variants: the courier (or the app)
/// must be told to act on the device, not to retry blindly or re-enroll.
impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        match &e {
            rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::DiskFull => {
                Error::DiskFull
            }
            rusqlite::Error::SqliteFailure(f, _)
                if matches!(f.code, ErrorCode::ReadOnly | ErrorCode::CannotOpen) =>
            {
                Error::ReadOnly(e.to_string())
            }
            _ => Error::Storage(e),
        }
    }
}

impl Error {
    /// True when a retry later may succeed (no signal, server busy, garbled answer).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Offline(_) | Error::BadResponse(_) => true,
            Error::Server { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            _ => false,
        }
    }

    /// True when the cause is the disk (full, read-only, I/O), not the data.
    pub fn is_disk(&self) -> bool {
        use rusqlite::ErrorCode::*;
        matches!(self, Error::DiskFull | Error::ReadOnly(_))
            || matches!(self, Error::Storage(rusqlite::Error::SqliteFailure(f, _))
            if matches!(f.code, DiskFull | ReadOnly | SystemIoFailure | CannotOpen | DatabaseBusy | DatabaseLocked))
    }
}
