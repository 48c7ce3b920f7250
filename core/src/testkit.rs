//! Builders for tests, benches and simulations: a depot that can derive codes
//! and sign manifests, and a handset already enrolled against it. Behind the
//! `testkit` feature so production builds never carry it.

use crate::Error;
use crate::codes::{self, Code, CodeKey};
use crate::envelope::{Envelope, SigningKey};
use crate::handset::{Clock, Handset};
use crate::manifest::{MANIFEST_FORMAT, Manifest, ManifestParcel, Stop};
use crate::secrets::{self, SecretStore};
use crate::store::Identity;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use std::path::Path;
use std::sync::Arc;

/// A stand-in for the server's code key and signing key.
pub struct TestDepot {
    pub code_key: CodeKey,
    pub server_key: SigningKey,
}

/// What manifest to build.
#[derive(Debug, Clone)]
pub struct ManifestSpec {
    pub route_id: String,
    pub device_id: String,
    pub date: NaiveDate,
    pub revision: u64,
    pub attempt: u32,
    pub stops: usize,
    pub parcels_per_stop: usize,
    /// Every n-th parcel needs no code (0: all need one).
    pub no_code_every: usize,
    pub valid_from: DateTime<Utc>,
    pub valid_until: DateTime<Utc>,
    pub tag_bits: u8,
    pub max_attempts: u32,
}

impl ManifestSpec {
    /// A day that is valid from an hour ago until tomorrow.
    pub fn today(device_id: &str, stops: usize, parcels_per_stop: usize) -> Self {
        let now = Utc::now();
        Self {
            route_id: "R-1".into(),
            device_id: device_id.into(),
            date: now.date_naive(),
            revision: 1,
            attempt: 1,
            stops,
            parcels_per_stop,
            no_code_every: 0,
            valid_from: now - Duration::hours(1),
            valid_until: now + Duration::hours(24),
            tag_bits: codes::DEFAULT_TAG_BITS,
            max_attempts: 5,
        }
    }
}

/// The parcel id the builder gives to parcel `j` of stop `i`.
pub fn parcel_id(stop: usize, j: usize) -> String {
    format!("P-{stop:04}-{j:02}")
}

impl TestDepot {
    pub fn new() -> Self {
        Self::from_seeds([7; 32], [9; 32])
    }

    pub fn from_seeds(code_key: [u8; 32], signing_seed: [u8; 32]) -> Self {
        Self {
            code_key: CodeKey::from_bytes(code_key),
            server_key: SigningKey::from_seed("k-test", signing_seed)
                .unwrap_or_else(|_| unreachable!()),
        }
    }

    pub fn code(&self, parcel_id: &str, date: NaiveDate, attempt: u32) -> Code {
        codes::derive_code(
            &self.code_key,
            parcel_id,
            date,
            attempt,
            codes::DEFAULT_DIGITS,
        )
        .unwrap_or_else(|_| unreachable!())
    }

    pub fn manifest(&self, spec: &ManifestSpec) -> Manifest {
        let mut stops = Vec::with_capacity(spec.stops);
        let mut n = 0usize;
        for i in 0..spec.stops {
            let mut parcels = Vec::new();
            for j in 0..spec.parcels_per_stop {
                n += 1;
                let pid = parcel_id(i, j);
                if spec.no_code_every > 0 && n % spec.no_code_every == 0 {
                    parcels.push(ManifestParcel {
                        parcel_id: pid,
                        requires_code: false,
                        attempt: spec.attempt,
                        salt: None,
                        tag: None,
                    });
                } else {
                    let code = self.code(&pid, spec.date, spec.attempt);
                    parcels.push(
                        ManifestParcel::with_code(
                            &pid,
                            spec.attempt,
                            spec.date,
                            &code,
                            spec.tag_bits,
                        )
                        .unwrap_or_else(|_| unreachable!()),
                    );
                }
            }
            stops.push(Stop {
                stop_id: format!("S-{i:04}"),
                sequence: u32::try_from(i + 1).unwrap_or(u32::MAX),
                address: format!("{} Example Street", i + 1),
                recipient: format!("Customer {i}"),
                parcels,
            });
        }
        Manifest {
            format: MANIFEST_FORMAT,
            manifest_id: format!("m-{}-{}-{}", spec.route_id, spec.date, spec.revision),
            route_id: spec.route_id.clone(),
            courier_id: "C-1".into(),
            device_id: spec.device_id.clone(),
            delivery_date: spec.date,
            revision: spec.revision,
            issued_at: Utc::now(),
            valid_from: spec.valid_from,
            valid_until: spec.valid_until,
            tag_bits: spec.tag_bits,
            max_attempts: spec.max_attempts,
            code_digits: codes::DEFAULT_DIGITS,
            stops,
        }
    }

    pub fn seal(&self, m: &Manifest) -> Envelope {
        m.seal(&self.server_key)
            .unwrap_or_else(|e| unreachable!("{e}"))
    }

    /// Signs `m` with `"hold": true` on each of `held`.
    pub fn seal_holding(&self, m: &Manifest, held: &[&str]) -> Envelope {
        let held = held.iter().map(|p| p.to_string()).collect();
        m.seal_holding(&self.server_key, &held)
            .unwrap_or_else(|e| unreachable!("{e}"))
    }

    /// Signs any JSON as a manifest body, valid or not (for tests of what a
    /// handset does with fields it does not know, or with malformed ones).
    pub fn seal_json(&self, body: &serde_json::Value) -> Envelope {
        let bytes = serde_json::to_vec(body).unwrap_or_else(|e| unreachable!("{e}"));
        self.server_key
            .seal(crate::envelope::Context::Manifest, &bytes)
    }

    /// Opens a handset at `db` and enrolls it as `device_id` against this depot.
    pub fn enrolled_handset(
        &self,
        db: &Path,
        secrets: Arc<dyn SecretStore>,
        clock: Arc<dyn Clock>,
        device_id: &str,
    ) -> Result<Handset, Error> {
        let h = Handset::open_with_clock(db, secrets, clock)?;
        if h.identity()?.is_none() {
            h.device_public_key()?;
            h.set_identity(&Identity {
                device_id: device_id.into(),
                courier_id: "C-1".into(),
                server_keys: vec![self.server_key.public_key()],
            })?;
        }
        Ok(h)
    }
}

impl Default for TestDepot {
    fn default() -> Self {
        Self::new()
    }
}

/// A clock that stands still unless moved.
pub struct FixedClock(pub std::sync::Mutex<DateTime<Utc>>);

impl FixedClock {
    pub fn at(t: DateTime<Utc>) -> Arc<Self> {
        Arc::new(Self(std::sync::Mutex::new(t)))
    }

    pub fn advance(&self, d: Duration) {
        if let Ok(mut t) = self.0.lock() {
            *t += d;
        }
    }
}

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        self.0.lock().map(|t| *t).unwrap_or_else(|_| Utc::now())
    }
}

/// Whether the device key is present (for tests of sign-out and re-enrollment).
pub fn has_device_key(s: &dyn SecretStore) -> bool {
    matches!(s.get(secrets::DEVICE_KEY), Ok(Some(_)))
}
