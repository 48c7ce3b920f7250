//! The records and enums an app sees, and their conversion from core's
//! types. All mapping between core and the FFI is here and in `error.rs`.

use doorcode_core::codes;
use doorcode_core::confirmation::{self, Outcome, Verified};
use doorcode_core::input;
use doorcode_core::store::{self, ParcelState as CoreParcelState, VerifyOutcome};
use doorcode_core::sync::{self, ManifestSync};

/// `From` both ways between an FFI enum and the core enum it mirrors,
/// variant for variant: a variant one side lacks does not compile.
macro_rules! mirror_enum {
    ($ffi:ident <=> $module:ident :: $core:ident { $($variant:ident),+ $(,)? }) => {
        impl From<$ffi> for $module::$core {
            fn from(v: $ffi) -> Self {
                match v {
                    $($ffi::$variant => Self::$variant,)+
                }
            }
        }

        impl From<$module::$core> for $ffi {
            fn from(v: $module::$core) -> Self {
                match v {
                    $($module::$core::$variant => Self::$variant,)+
                }
            }
        }
    };
}

/// A language spoken codes can be read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum Language {
    English,
    Spanish,
    Portuguese,
    French,
    German,
    Italian,
    /// Hindi in Latin letters ("char do saat").
    Hindi,
}

mirror_enum!(Language <=> input::Language {
    English, Spanish, Portuguese, French, German, Italian, Hindi
});

pub(crate) fn core_languages(list: Vec<Language>) -> Vec<input::Language> {
    list.into_iter().map(input::Language::from).collect()
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

mirror_enum!(FailReason <=> confirmation::FailReason {
    CustomerAbsent, Refused, LockedOut, AddressNotFound, Damaged, Other
});

#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum ParcelState {
    Pending,
    Delivered,
    Failed,
    Locked,
    /// The customer reported they did not order it: do not hand it over;
    /// fail it as `REFUSED`.
    Held,
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
    /// On hold in the manifest (still true after it was failed as `REFUSED`).
    pub held: bool,
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
                        CoreParcelState::Held => ParcelState::Held,
                    },
                    failed_tries: p.failed_tries,
                    attempts_left: p.attempts_left,
                    fail_reason: p.reason.map(FailReason::from),
                    held: p.held,
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
    pub parcels_held: u32,
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
