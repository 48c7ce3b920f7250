//! The statuses, as enums with one spelling each ([`Label`]): JSON, SQL
//! and logs use the same words.

use super::*;

/// A status stored as text: one spelling, used by JSON, SQL and logs alike.
/// Each backend has one `ToSql`/`FromSql` for every `Label`.
pub trait Label: Sized + Copy + 'static {
    const ALL: &'static [Self];
    fn as_str(self) -> &'static str;
    fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|v| v.as_str() == s)
    }
}

/// Declares a status enum with its spelling (serde uses the same words).
/// With `wire` first, also its conversion to the `doorcode_core::wire` enum
/// of the same name, which answers carry (one arm per variant, so a variant
/// added here and not there does not compile).
macro_rules! label {
    (wire $(#[$m:meta])* pub enum $name:ident { $($(#[$vm:meta])* $var:ident = $s:literal,)* }) => {
        label! { $(#[$m])* pub enum $name { $($(#[$vm])* $var = $s,)* } }

        impl From<$name> for doorcode_core::wire::$name {
            fn from(v: $name) -> Self {
                match v { $($name::$var => Self::$var,)* }
            }
        }
    };
    ($(#[$m:meta])* pub enum $name:ident { $($(#[$vm:meta])* $var:ident = $s:literal,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vm])* $var,)* }

        impl Label for $name {
            const ALL: &'static [Self] = &[$(Self::$var,)*];
            fn as_str(self) -> &'static str {
                match self { $(Self::$var => $s,)* }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

label! {
    wire
    /// What saving a route did: `unchanged` when it was sent again as stored
    /// (no new revision, no notice, no manifest), so a re-run import is a no-op.
    pub enum RouteStatus {
        Created = "created",
        Updated = "updated",
        Unchanged = "unchanged",
    }
}

label! {
    wire
    /// Where a parcel stands.
    pub enum ParcelState {
        /// Known, not on a route.
        Pending = "pending",
        /// On a route for a day, with a code for its attempt.
        Scheduled = "scheduled",
        /// The courier recorded a failed attempt; it may still be delivered that day.
        Failed = "failed",
        Delivered = "delivered",
        /// A delivery failed the server's full code check.
        Disputed = "disputed",
        /// The customer pressed "I did not order this": no code, not to be
        /// handed over, until dispatch releases it with a reissue.
        Held = "held",
    }
}

impl ParcelState {
    /// Still out for delivery: a confirmation may change it, the day's close moves it.
    pub fn is_open(self) -> bool {
        matches!(self, Self::Scheduled | Self::Failed)
    }
}

label! {
    wire
    /// A dispute or fraud signal for dispatch.
    pub enum SignalKind {
        /// A delivery whose code failed the full check.
        CodeMismatch = "code_mismatch",
        /// A delivery without a code of a parcel that needs one.
        DeliveredWithoutCode = "delivered_without_code",
        /// Three or more wrong tries: online, or reported from the door, or a lockout there.
        ManyWrongTries = "many_wrong_tries",
        /// Recorded at or after the code's `valid_until`.
        LateConfirmation = "late_confirmation",
        SeqGap = "seq_gap",
        SeqReuse = "seq_reuse",
        /// Online tries locked the parcel.
        VerifyLockout = "verify_lockout",
        /// A confirmation for a parcel no longer on the device's current route at that attempt.
        StaleManifest = "stale_manifest",
        /// A confirmation reports fewer wrong tries than the server counted online.
        TriesMismatch = "tries_mismatch",
        /// Schema 1 only: a delivery with a replaced attempt's code was accepted.
        /// Such confirmations are now refused as `not_on_current_route` with a
        /// `stale_manifest` signal; old rows keep their kind.
        SupersededCode = "superseded_code",
        /// The customer reported a parcel they did not order (the tracking
        /// page's button), or a handset delivered such a parcel.
        NotOrdered = "not_ordered",
    }
}

impl SignalKind {
    /// The kinds today's rules raise (every kind but the schema-1 one).
    pub const RAISED: &'static [Self] = &[
        Self::CodeMismatch,
        Self::DeliveredWithoutCode,
        Self::ManyWrongTries,
        Self::LateConfirmation,
        Self::SeqGap,
        Self::SeqReuse,
        Self::VerifyLockout,
        Self::StaleManifest,
        Self::TriesMismatch,
        Self::NotOrdered,
    ];

    /// Disputes are deliveries that failed the full check; the rest are signals.
    pub fn is_dispute(self) -> bool {
        matches!(self, Self::CodeMismatch | Self::DeliveredWithoutCode)
    }
}

label! {
    /// A line of a parcel's history.
    pub enum EventKind {
        Created = "created",
        Updated = "updated",
        Scheduled = "scheduled",
        Unscheduled = "unscheduled",
        Delivered = "delivered",
        Disputed = "disputed",
        Failed = "failed",
        CodeVoided = "code_voided",
        DayClosed = "day_closed",
        VerifiedOnline = "verified_online",
        WrongCode = "wrong_code",
        Locked = "locked",
        /// On hold: the customer said they did not order it.
        Held = "held",
    }
}

label! {
    /// Where a notice in the outbox stands.
    pub enum NoticeState {
        Pending = "pending",
        Sent = "sent",
        Failed = "failed",
    }
}

label! {
    wire
    /// The answer for one uploaded confirmation.
    pub enum ItemStatus {
        Accepted = "accepted",
        Duplicate = "duplicate",
        Rejected = "rejected",
    }
}

label! {
    wire
    /// Why an item (a confirmation or a parcel) was refused.
    pub enum RejectReason {
        MalformedEnvelope = "malformed_envelope",
        WrongDevice = "wrong_device",
        DeviceKeyInvalid = "device_key_invalid",
        DeviceRevoked = "device_revoked",
        BadSignature = "bad_signature",
        BadEncoding = "bad_encoding",
        UnsupportedVersion = "unsupported_version",
        UnknownFormat = "unknown_format",
        MalformedBody = "malformed_body",
        /// `seq` or `revision` above 2^53 (what JSON numbers hold exactly).
        OutOfRange = "out_of_range",
        /// The id was first used by another device.
        ConfirmationIdReused = "confirmation_id_reused",
        UnknownParcel = "unknown_parcel",
        NotOnManifest = "not_on_manifest",
        NotOnCurrentRoute = "not_on_current_route",
        /// Whether a parcel needs a code is fixed once it is on a route for a day.
        RequiresCodeFrozen = "requires_code_frozen",
        /// The server could not decide now; the same item may succeed later.
        ServerError = "server_error",
    }
}

impl RejectReason {
    /// True when sending the same item again can never succeed.
    pub fn permanent(self) -> bool {
        !matches!(self, Self::ServerError)
    }
}

impl Label for Outcome {
    const ALL: &'static [Self] = &[Outcome::Delivered, Outcome::Failed];
    fn as_str(self) -> &'static str {
        Outcome::as_str(self)
    }
}

impl Label for Verified {
    const ALL: &'static [Self] = &[Verified::Online, Verified::Offline, Verified::None];
    fn as_str(self) -> &'static str {
        Verified::as_str(self)
    }
}

impl Label for FailReason {
    const ALL: &'static [Self] = &FailReason::ALL;
    fn as_str(self) -> &'static str {
        FailReason::as_str(self)
    }
}
