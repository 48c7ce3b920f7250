//! The FFI's one error type: a small flat set an app can branch on, mapped
//! from core's big error enum in one place. Messages are core's, so they say
//! what went wrong and what to do, and never carry a code.

use doorcode_core::Error;

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
    /// The customer reported they did not order this parcel: do not hand it
    /// over; fail it as `REFUSED`.
    #[error("{0}")]
    OnHold(String),
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
    /// The customer's notice was sent again less than 10 minutes ago (by
    /// the courier or the customer); the message says how long to wait.
    #[error("{0}")]
    ResendLimited(String),
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
            | Error::ManifestConflict { .. }
            | Error::ManifestExpired
            | Error::ManifestNotYetValid
            | Error::UnknownFormat(_)
            | Error::BadManifest(_)
            | Error::BadEnvelope(_) => Self::Manifest(m),
            Error::NotEnrolled => Self::NotEnrolled(m),
            Error::UnknownParcel(_) => Self::UnknownParcel(m),
            Error::Locked(_) => Self::Locked(m),
            Error::Held(_) => Self::OnHold(m),
            Error::AlreadyRecorded { .. } => Self::AlreadyRecorded(m),
            Error::CodeRequired(_) | Error::NoCodeRequired(_) | Error::ReasonNotAllowed { .. } => {
                Self::NotAllowed(m)
            }
            Error::Offline(_) => Self::Offline(m),
            Error::Unauthorized => Self::Unauthorized(m),
            Error::Server { .. } | Error::BadResponse(_) | Error::ResendRefused { .. } => {
                Self::Server(m)
            }
            Error::ResendTooSoon { .. } => Self::ResendLimited(m),
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

#[cfg(test)]
mod tests {
    use super::*;
    use doorcode_core::confirmation::ConfirmationError;
    use doorcode_core::envelope::EnvelopeError;
    use doorcode_core::input::InputError;
    use doorcode_core::manifest::ManifestError;

    /// The variant's name, as Kotlin's subclass and Swift's case are named.
    fn variant(e: &DoorcodeError) -> &'static str {
        match e {
            DoorcodeError::InvalidCode(_) => "InvalidCode",
            DoorcodeError::InvalidArgument(_) => "InvalidArgument",
            DoorcodeError::NotEnrolled(_) => "NotEnrolled",
            DoorcodeError::UnknownParcel(_) => "UnknownParcel",
            DoorcodeError::Locked(_) => "Locked",
            DoorcodeError::OnHold(_) => "OnHold",
            DoorcodeError::AlreadyRecorded(_) => "AlreadyRecorded",
            DoorcodeError::NotAllowed(_) => "NotAllowed",
            DoorcodeError::Offline(_) => "Offline",
            DoorcodeError::Unauthorized(_) => "Unauthorized",
            DoorcodeError::Server(_) => "Server",
            DoorcodeError::PendingUploads(_) => "PendingUploads",
            DoorcodeError::ResendLimited(_) => "ResendLimited",
            DoorcodeError::Manifest(_) => "Manifest",
            DoorcodeError::SecretStore(_) => "SecretStore",
            DoorcodeError::Storage(_) => "Storage",
        }
    }

    fn sqlite(code: rusqlite::ErrorCode) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error {
                code,
                extended_code: 0,
            },
            None,
        )
    }

    /// One of every core error, with the variant an app must see.
    fn samples() -> Vec<(Error, &'static str)> {
        vec![
            (
                Error::Input(InputError::WrongLength {
                    expected: 6,
                    got: 5,
                }),
                "InvalidCode",
            ),
            (Error::BadSignature, "Manifest"),
            (Error::UnknownKey("k-old".into()), "Manifest"),
            (
                Error::WrongDevice {
                    manifest_device: "d-2".into(),
                },
                "Manifest",
            ),
            (
                Error::Rollback {
                    held: 3,
                    offered: 2,
                },
                "Manifest",
            ),
            (Error::ManifestConflict { revision: 3 }, "Manifest"),
            (Error::ManifestExpired, "Manifest"),
            (Error::ManifestNotYetValid, "Manifest"),
            (Error::UnknownFormat(2), "Manifest"),
            (Error::BadManifest(ManifestError::TooLarge), "Manifest"),
            (
                Error::BadEnvelope(EnvelopeError::UnsupportedVersion(9)),
                "Manifest",
            ),
            (Error::NotEnrolled, "NotEnrolled"),
            (Error::UnknownParcel("P-1".into()), "UnknownParcel"),
            (Error::Locked("P-1".into()), "Locked"),
            (Error::Held("P-1".into()), "OnHold"),
            (
                Error::AlreadyRecorded {
                    parcel_id: "P-1".into(),
                    outcome: "delivered".into(),
                },
                "AlreadyRecorded",
            ),
            (Error::CodeRequired("P-1".into()), "NotAllowed"),
            (Error::NoCodeRequired("P-1".into()), "NotAllowed"),
            (
                Error::ReasonNotAllowed {
                    reason: "customer_absent",
                    locked: true,
                },
                "NotAllowed",
            ),
            (Error::Offline("connection refused".into()), "Offline"),
            (Error::Unauthorized, "Unauthorized"),
            (
                Error::Server {
                    status: 503,
                    error: "unavailable".into(),
                    message: "try later".into(),
                },
                "Server",
            ),
            (Error::BadResponse("truncated".into()), "Server"),
            (Error::PendingUploads(3), "PendingUploads"),
            (
                Error::ResendTooSoon {
                    parcel_id: "P-1".into(),
                    retry_after_s: Some(420),
                },
                "ResendLimited",
            ),
            (
                Error::ResendRefused {
                    parcel_id: "P-1".into(),
                    status: 403,
                    message: "not on your route".into(),
                },
                "Server",
            ),
            (Error::Confirmation(ConfirmationError::BadSeq), "Storage"),
            (Error::Secrets("keystore locked".into()), "SecretStore"),
            (Error::DiskFull, "Storage"),
            (Error::ReadOnly("read-only file system".into()), "Storage"),
            (Error::Storage(rusqlite::Error::InvalidQuery), "Storage"),
            (Error::Corrupt("bad date".into()), "Storage"),
        ]
    }

    /// Adding a core error variant stops this from compiling: give it a
    /// sample above, with the variant apps must see.
    #[allow(dead_code)]
    fn every_core_variant_has_a_sample(e: &Error) {
        match e {
            Error::Input(_)
            | Error::BadSignature
            | Error::UnknownKey(_)
            | Error::WrongDevice { .. }
            | Error::Rollback { .. }
            | Error::ManifestConflict { .. }
            | Error::ManifestExpired
            | Error::ManifestNotYetValid
            | Error::UnknownFormat(_)
            | Error::BadManifest(_)
            | Error::BadEnvelope(_)
            | Error::NotEnrolled
            | Error::UnknownParcel(_)
            | Error::Locked(_)
            | Error::Held(_)
            | Error::AlreadyRecorded { .. }
            | Error::CodeRequired(_)
            | Error::NoCodeRequired(_)
            | Error::ReasonNotAllowed { .. }
            | Error::Offline(_)
            | Error::Unauthorized
            | Error::Server { .. }
            | Error::BadResponse(_)
            | Error::ResendTooSoon { .. }
            | Error::ResendRefused { .. }
            | Error::PendingUploads(_)
            | Error::Confirmation(_)
            | Error::Secrets(_)
            | Error::DiskFull
            | Error::ReadOnly(_)
            | Error::Storage(_)
            | Error::Corrupt(_) => {}
        }
    }

    #[test]
    fn every_core_error_maps_to_its_variant_with_cores_message() {
        let samples = samples();
        assert_eq!(samples.len(), 32, "one sample per core error variant");
        for (core, want) in samples {
            let message = core.to_string();
            let ffi = DoorcodeError::from(core);
            assert_eq!(variant(&ffi), want, "{message}");
            // Kotlin's `message` and Swift's description are core's text.
            assert_eq!(ffi.to_string(), message);
            assert!(!message.is_empty());
        }
    }

    #[test]
    fn sqlite_disk_failures_reach_the_app_as_storage_saying_what_to_do() {
        let full = DoorcodeError::from(Error::from(sqlite(rusqlite::ErrorCode::DiskFull)));
        assert_eq!(variant(&full), "Storage");
        assert!(full.to_string().contains("storage is full"), "{full}");
        assert!(full.to_string().contains("nothing already held was lost"));
        let ro = DoorcodeError::from(Error::from(sqlite(rusqlite::ErrorCode::ReadOnly)));
        assert_eq!(variant(&ro), "Storage");
        assert!(ro.to_string().contains("cannot be written"), "{ro}");
        let other = DoorcodeError::from(Error::from(sqlite(rusqlite::ErrorCode::Unknown)));
        assert_eq!(variant(&other), "Storage");
    }

    #[test]
    fn input_errors_never_carry_the_digits_entered() {
        for text in ["12345", "1234567", "12a456", "four two 5 6 7 8 9"] {
            let e = doorcode_core::input::parse_code_input(text, 6).unwrap_err();
            let ffi = DoorcodeError::from(Error::from(e));
            assert_eq!(variant(&ffi), "InvalidCode");
            let m = ffi.to_string();
            assert!(
                !m.contains("123") && !m.contains("456") && !m.contains("5678"),
                "{text:?} gave {m:?}"
            );
        }
    }
}
