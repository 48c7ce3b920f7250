//! The manifest: what a handset gets each morning for its route and day.
//! Only display name, address and a short salted tag per parcel; never a code.

use crate::b64;
use crate::codes::{self, Code, CodeError, SALT_LEN};
use crate::envelope::{self, Context, Envelope, EnvelopeError, SigningKey, VerifyingKey};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// The only manifest format this build understands.
pub const MANIFEST_FORMAT: u64 = 1;
/// Upper bounds that keep a hostile manifest from exhausting a phone.
pub const MAX_STOPS: usize = 5_000;
pub const MAX_PARCELS: usize = 20_000;
pub const MAX_TRIES_LIMIT: u32 = 100;
const MAX_TEXT: usize = 1_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u64,
    pub manifest_id: String,
    pub route_id: String,
    pub courier_id: String,
    pub device_id: String,
    pub delivery_date: NaiveDate,
    pub revision: u64,
    pub issued_at: DateTime<Utc>,
    pub valid_from: DateTime<Utc>,
    pub valid_until: DateTime<Utc>,
    pub tag_bits: u8,
    pub max_attempts: u32,
    #[serde(default = "default_digits")]
    pub code_digits: u8,
    pub stops: Vec<Stop>,
}

fn default_digits() -> u8 {
    codes::DEFAULT_DIGITS
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stop {
    pub stop_id: String,
    pub sequence: u32,
    pub address: String,
    pub recipient: String,
    pub parcels: Vec<ManifestParcel>,
}

/// One parcel as the handset sees it. `salt` and `tag` are present exactly when
/// `requires_code` is true.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestParcel {
    pub parcel_id: String,
    pub requires_code: bool,
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<u32>,
}

impl ManifestParcel {
    /// Builds the entry for a parcel whose code is `code`, with a fresh salt.
    pub fn with_code(
        parcel_id: &str,
        attempt: u32,
        date: NaiveDate,
        code: &Code,
        tag_bits: u8,
    ) -> Result<Self, CodeError> {
        let salt = codes::fresh_salt().map_err(|_| CodeError::BadKey)?;
        let tag = codes::offline_tag(&salt, parcel_id, date, code, tag_bits)?;
        Ok(Self {
            parcel_id: parcel_id.to_string(),
            requires_code: true,
            attempt,
            salt: Some(b64::encode(&salt)),
            tag: Some(tag),
        })
    }

    /// The decoded salt, if this parcel has a valid one.
    pub fn salt_bytes(&self) -> Option<[u8; SALT_LEN]> {
        self.salt.as_deref().and_then(b64::decode_array::<SALT_LEN>)
    }
}

/// Every way a manifest body can be wrong, each distinct.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest format {0} is not supported; update the app")]
    UnknownFormat(u64),
    #[error("the manifest is not valid JSON for format 1: {0}")]
    Malformed(String),
    #[error("the manifest field {0} is empty or too long")]
    BadField(&'static str),
    #[error("the manifest revision must be at least 1")]
    BadRevision,
    #[error("tag_bits must be 1..=32, not {0}")]
    BadTagBits(u8),
    #[error("max_attempts must be 1..={MAX_TRIES_LIMIT}, not {0}")]
    BadMaxAttempts(u32),
    #[error("code_digits must be 6..=8, not {0}")]
    BadCodeDigits(u8),
    #[error("valid_from must be before valid_until")]
    BadValidity,
    #[error("the manifest has too many stops or parcels")]
    TooLarge,
    #[error("stop {0} appears twice")]
    DuplicateStop(String),
    #[error("parcel {0} appears twice")]
    DuplicateParcel(String),
    #[error("parcel {0} has an attempt of 0")]
    BadAttempt(String),
    #[error("parcel {0} needs a 16-byte base64url salt exactly when it requires a code")]
    BadSalt(String),
    #[error("parcel {0} needs a tag below 2^tag_bits exactly when it requires a code")]
    BadTag(String),
}

fn check_text(s: &str, field: &'static str) -> Result<(), ManifestError> {
    if s.trim().is_empty() || s.len() > MAX_TEXT {
        return Err(ManifestError::BadField(field));
    }
    Ok(())
}

impl Manifest {
    /// Parses verified body bytes: the format first, so a newer format gets its
    /// own error rather than a confusing field error, then every rule.
    pub fn from_verified_bytes(body: &[u8]) -> Result<Self, ManifestError> {
        #[derive(Deserialize)]
        struct Probe {
            format: u64,
        }
        let probe: Probe =
            serde_json::from_slice(body).map_err(|e| ManifestError::Malformed(e.to_string()))?;
        if probe.format != MANIFEST_FORMAT {
            return Err(ManifestError::UnknownFormat(probe.format));
        }
        let m: Manifest =
            serde_json::from_slice(body).map_err(|e| ManifestError::Malformed(e.to_string()))?;
        m.validate()?;
        Ok(m)
    }

    /// Every rule in DESIGN.md that a body alone can be checked against.
    pub fn validate(&self) -> Result<(), ManifestError> {
        if self.format != MANIFEST_FORMAT {
            return Err(ManifestError::UnknownFormat(self.format));
        }
        check_text(&self.manifest_id, "manifest_id")?;
        check_text(&self.route_id, "route_id")?;
        check_text(&self.courier_id, "courier_id")?;
        check_text(&self.device_id, "device_id")?;
        if self.revision == 0 {
            return Err(ManifestError::BadRevision);
        }
        if !(1..=32).contains(&self.tag_bits) {
            return Err(ManifestError::BadTagBits(self.tag_bits));
        }
        if !(1..=MAX_TRIES_LIMIT).contains(&self.max_attempts) {
            return Err(ManifestError::BadMaxAttempts(self.max_attempts));
        }
        if !(codes::MIN_DIGITS..=codes::MAX_DIGITS).contains(&self.code_digits) {
            return Err(ManifestError::BadCodeDigits(self.code_digits));
        }
        if self.valid_from >= self.valid_until {
            return Err(ManifestError::BadValidity);
        }
        if self.stops.len() > MAX_STOPS {
            return Err(ManifestError::TooLarge);
        }
        let mut stops = HashSet::new();
        let mut parcels = HashSet::new();
        for s in &self.stops {
            check_text(&s.stop_id, "stop_id")?;
            check_text(&s.address, "address")?;
            check_text(&s.recipient, "recipient")?;
            if !stops.insert(s.stop_id.as_str()) {
                return Err(ManifestError::DuplicateStop(s.stop_id.clone()));
            }
            for p in &s.parcels {
                check_text(&p.parcel_id, "parcel_id")?;
                if !parcels.insert(p.parcel_id.as_str()) {
                    return Err(ManifestError::DuplicateParcel(p.parcel_id.clone()));
                }
                if parcels.len() > MAX_PARCELS {
                    return Err(ManifestError::TooLarge);
                }
                if p.attempt == 0 {
                    return Err(ManifestError::BadAttempt(p.parcel_id.clone()));
                }
                let salt_ok = match &p.salt {
                    Some(_) => p.requires_code && p.salt_bytes().is_some(),
                    None => !p.requires_code,
                };
                if !salt_ok {
                    return Err(ManifestError::BadSalt(p.parcel_id.clone()));
                }
                let tag_ok = match p.tag {
                    Some(t) => {
                        p.requires_code && (self.tag_bits == 32 || t < (1u32 << self.tag_bits))
                    }
                    None => !p.requires_code,
                };
                if !tag_ok {
                    return Err(ManifestError::BadTag(p.parcel_id.clone()));
                }
            }
        }
        Ok(())
    }

    /// Serializes and signs the manifest (server side).
    pub fn seal(&self, key: &SigningKey) -> Result<Envelope, ManifestError> {
        self.validate()?;
        let body = serde_json::to_vec(self).map_err(|e| ManifestError::Malformed(e.to_string()))?;
        Ok(key.seal(Context::Manifest, &body))
    }

    /// All parcels with their stop.
    pub fn parcels(&self) -> impl Iterator<Item = (&Stop, &ManifestParcel)> {
        self.stops
            .iter()
            .flat_map(|s| s.parcels.iter().map(move |p| (s, p)))
    }
}

/// Why a signed manifest was refused: the envelope or the body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignedManifestError {
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    #[error(transparent)]
    Body(#[from] ManifestError),
}

/// Verifies the envelope against trusted server keys, then parses the body.
pub fn open_manifest(
    env: &Envelope,
    keys: &[VerifyingKey],
) -> Result<Manifest, SignedManifestError> {
    let body = envelope::open(Context::Manifest, env, keys)?;
    Ok(Manifest::from_verified_bytes(&body)?)
}
