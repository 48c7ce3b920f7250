//! The manifest: what a handset gets each morning for its route and day.
//! Only display name, address and a short salted tag per parcel; never a code.
//!
//! Fields a handset does not know are ignored (and, since only the fields
//! below are kept, never stored), so a depot can add an optional field
//! without a new `format`. The one optional field this build knows is a
//! parcel's `"hold": true` (the customer reported they did not order it). It
//! is read beside [`Manifest`] ([`Received::held`]) and written by
//! [`Manifest::seal_holding`], so that every existing builder of these
//! structs stays as it is; a manifest without holds is byte for byte what it
//! was before holds existed.

use crate::b64;
use crate::codes::{self, Code, CodeError, SALT_LEN};
use crate::envelope::{self, Context, Envelope, EnvelopeError, SigningKey, VerifyingKey};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashSet};

/// The only manifest format this build understands.
pub const MANIFEST_FORMAT: u64 = 1;
/// Upper bounds that keep a hostile manifest from exhausting a phone.
pub const MAX_STOPS: usize = 5_000;
pub const MAX_PARCELS: usize = 20_000;
pub const MAX_TRIES_LIMIT: u32 = 100;
const MAX_TEXT: usize = 1_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    #[error("parcel {0} is held but not on the manifest")]
    HoldNotOnManifest(String),
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
        self.seal_holding(key, &BTreeSet::new())
    }

    /// Serializes and signs the manifest with `"hold": true` on each parcel
    /// in `held` (server side). With none held the bytes are exactly those
    /// of [`Manifest::seal`].
    pub fn seal_holding(
        &self,
        key: &SigningKey,
        held: &BTreeSet<String>,
    ) -> Result<Envelope, ManifestError> {
        self.validate()?;
        let malformed = |e: serde_json::Error| ManifestError::Malformed(e.to_string());
        if held.is_empty() {
            let body = serde_json::to_vec(self).map_err(malformed)?;
            return Ok(key.seal(Context::Manifest, &body));
        }
        let mut missing: BTreeSet<&str> = held.iter().map(String::as_str).collect();
        let mut v = serde_json::to_value(self).map_err(malformed)?;
        let parcels = v
            .get_mut("stops")
            .and_then(serde_json::Value::as_array_mut)
            .into_iter()
            .flatten()
            .filter_map(|s| s.get_mut("parcels")?.as_array_mut())
            .flatten();
        for p in parcels {
            let Some(obj) = p.as_object_mut() else {
                continue;
            };
            let is_held = obj
                .get("parcel_id")
                .and_then(serde_json::Value::as_str)
                .is_some_and(|id| missing.remove(id));
            if is_held {
                obj.insert("hold".into(), serde_json::Value::Bool(true));
            }
        }
        if let Some(id) = missing.first() {
            return Err(ManifestError::HoldNotOnManifest((*id).to_string()));
        }
        let body = serde_json::to_vec(&v).map_err(malformed)?;
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
    Ok(open_received(env, keys)?.manifest)
}

/// A verified manifest as a handset installs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub manifest: Manifest,
    /// Parcels the depot marked `"hold": true`: not to be verified or handed
    /// over, only recorded failed as `refused`.
    pub held: BTreeSet<String>,
    /// SHA-256 of the signed body bytes: the same revision with other bytes
    /// is a conflict, not an unchanged manifest.
    pub body_sha256: [u8; 32],
}

/// Verifies the envelope against trusted server keys, then parses the body,
/// its holds and its digest.
pub fn open_received(
    env: &Envelope,
    keys: &[VerifyingKey],
) -> Result<Received, SignedManifestError> {
    let body = envelope::open(Context::Manifest, env, keys)?;
    let manifest = Manifest::from_verified_bytes(&body)?;
    let held = held_parcels(&body)?;
    Ok(Received {
        manifest,
        held,
        body_sha256: sha256(&body),
    })
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The parcels a verified body holds. Read apart from [`Manifest`] (see the
/// module documentation); `"hold"` must be a boolean when present.
fn held_parcels(body: &[u8]) -> Result<BTreeSet<String>, ManifestError> {
    #[derive(Deserialize)]
    struct Body {
        stops: Vec<HoldStop>,
    }
    #[derive(Deserialize)]
    struct HoldStop {
        parcels: Vec<HoldParcel>,
    }
    #[derive(Deserialize)]
    struct HoldParcel {
        parcel_id: String,
        #[serde(default)]
        hold: bool,
    }
    let b: Body =
        serde_json::from_slice(body).map_err(|e| ManifestError::Malformed(e.to_string()))?;
    Ok(b.stops
        .into_iter()
        .flat_map(|s| s.parcels)
        .filter(|p| p.hold)
        .map(|p| p.parcel_id)
        .collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use chrono::TimeZone;

    fn sample() -> (Manifest, SigningKey) {
        let key = SigningKey::from_seed("k-1", [4; 32]).unwrap();
        let date = NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
        let code = Code::new("427710").unwrap();
        let t = |h| Utc.with_ymd_and_hms(2026, 11, 23, h, 0, 0).unwrap();
        let m = Manifest {
            format: MANIFEST_FORMAT,
            manifest_id: "m-1".into(),
            route_id: "R-7".into(),
            courier_id: "C-42".into(),
            device_id: "d-1".into(),
            delivery_date: date,
            revision: 3,
            issued_at: t(4),
            valid_from: t(0),
            valid_until: t(23),
            tag_bits: 12,
            max_attempts: 5,
            code_digits: 6,
            stops: vec![Stop {
                stop_id: "S-1".into(),
                sequence: 1,
                address: "1 Main St".into(),
                recipient: "J. Doe".into(),
                parcels: vec![
                    ManifestParcel::with_code("P-1", 1, date, &code, 12).unwrap(),
                    ManifestParcel {
                        parcel_id: "P-2".into(),
                        requires_code: false,
                        attempt: 1,
                        salt: None,
                        tag: None,
                    },
                ],
            }],
        };
        (m, key)
    }

    fn held(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn no_hold_means_the_bytes_of_seal_and_a_hold_round_trips() {
        let (m, key) = sample();
        let plain = m.seal(&key).unwrap();
        assert_eq!(m.seal_holding(&key, &BTreeSet::new()).unwrap(), plain);
        let body = b64::decode(&plain.body).unwrap();
        assert_eq!(body, serde_json::to_vec(&m).unwrap());
        assert!(!String::from_utf8(body).unwrap().contains("hold"));

        let env = m.seal_holding(&key, &held(&["P-2"])).unwrap();
        let r = open_received(&env, &[key.public_key()]).unwrap();
        assert_eq!(r.manifest, m, "a hold changes nothing else");
        assert_eq!(r.held, held(&["P-2"]));
        assert_ne!(
            r.body_sha256,
            open_received(&plain, &[key.public_key()])
                .unwrap()
                .body_sha256
        );
        assert_eq!(
            m.seal_holding(&key, &held(&["P-9"])),
            Err(ManifestError::HoldNotOnManifest("P-9".into()))
        );
    }

    #[test]
    fn unknown_fields_are_ignored_and_hold_must_be_a_boolean() {
        let (m, key) = sample();
        let mut v = serde_json::to_value(&m).unwrap();
        v["depot_note"] = "optional, added later".into();
        v["stops"][0]["door_code_hint"] = serde_json::json!({"nested": [1, 2, 3]});
        v["stops"][0]["parcels"][0]["weight_kg"] = 2.5.into();
        v["stops"][0]["parcels"][1]["hold"] = false.into();
        let body = serde_json::to_vec(&v).unwrap();
        let got = Manifest::from_verified_bytes(&body).unwrap();
        assert_eq!(got, m);
        assert!(held_parcels(&body).unwrap().is_empty());

        v["stops"][0]["parcels"][1]["hold"] = "yes".into();
        let body = serde_json::to_vec(&v).unwrap();
        let env = key.seal(Context::Manifest, &body);
        assert!(matches!(
            open_received(&env, &[key.public_key()]),
            Err(SignedManifestError::Body(ManifestError::Malformed(_)))
        ));
        // A known field with the wrong type is still refused.
        v["stops"][0]["parcels"][1]["hold"] = true.into();
        v["revision"] = "3".into();
        assert!(matches!(
            Manifest::from_verified_bytes(&serde_json::to_vec(&v).unwrap()),
            Err(ManifestError::Malformed(_))
        ));
    }
}
