//! The running server's shared state and the domain steps that span storage
//! and crypto: building manifests, checking codes, ingesting confirmations.

use crate::config::Config;
use crate::error::ApiError;
use crate::keys::Signer;
use crate::metrics::Metrics;
use crate::notices::Channel;
use crate::storage::{
    Device, IngestConfirmation, IngestOutcome, RouteData, Storage, StoredManifest, VerifyOutcome,
};
use chrono::NaiveDate;
use doorcode_core::codes::{Code, CodeKey, derive_code};
use doorcode_core::confirmation::{SignedConfirmationError, open_confirmation};
use doorcode_core::envelope::{EnvelopeError, VerifyingKey};
use doorcode_core::manifest::{MANIFEST_FORMAT, Manifest, ManifestParcel, Stop};
use serde::Serialize;
use std::sync::Arc;
use tokio::sync::Notify;
use utoipa::ToSchema;

/// Everything a handler needs. Cheap to clone.
#[derive(Clone)]
pub struct App {
    pub cfg: Arc<Config>,
    pub storage: Arc<dyn Storage>,
    pub code_key: Arc<CodeKey>,
    pub signer: Arc<Signer>,
    pub metrics: Arc<Metrics>,
    pub notice_wake: Arc<Notify>,
    pub channel: Arc<Channel>,
    pub http: reqwest::Client,
    pub admin_hash: Arc<String>,
    /// Base URL for customer track links.
    pub public_url: Arc<String>,
}

/// One per-item answer of `POST /v1/confirmations`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ItemResult {
    pub index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confirmation_id: Option<String>,
    /// accepted | duplicate | rejected
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For rejections: true means retrying the same envelope can never succeed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permanent: Option<bool>,
    /// For accepted deliveries whose code failed the full check.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub disputed: bool,
}

impl ItemResult {
    fn rejected(index: usize, id: Option<String>, reason: &str, permanent: bool) -> Self {
        Self {
            index,
            confirmation_id: id,
            status: "rejected",
            reason: Some(reason.to_string()),
            permanent: Some(permanent),
            disputed: false,
        }
    }
}

impl App {
    pub fn code(&self, parcel_id: &str, date: NaiveDate, attempt: u32) -> Result<Code, ApiError> {
        derive_code(
            &self.code_key,
            parcel_id,
            date,
            attempt,
            self.cfg.code_digits,
        )
        .map_err(|e| ApiError::internal(format!("code derivation: {e}")))
    }

    /// The device's manifest for a route at the route's current revision:
    /// served from storage when already built, else built once (fresh salts),
    /// signed and stored.
    pub async fn ensure_manifest(
        &self,
        route: &RouteData,
        device: &Device,
    ) -> Result<StoredManifest, ApiError> {
        let cached = self
            .storage
            .manifest(&route.route_id, route.delivery_date, &device.device_id)
            .await?;
        if let Some(m) = &cached {
            if m.revision >= route.revision {
                return Ok(m.clone());
            }
        }
        let manifest_id = match cached {
            Some(m) => m.manifest_id,
            None => format!("m-{}", uuid::Uuid::new_v4()),
        };
        let date = route.delivery_date;
        let mut stops = Vec::with_capacity(route.stops.len());
        let mut items = Vec::new();
        for s in &route.stops {
            let mut parcels = Vec::with_capacity(s.parcels.len());
            for p in &s.parcels {
                items.push((p.parcel_id.clone(), p.attempt));
                if p.requires_code {
                    let code = self.code(&p.parcel_id, date, p.attempt)?;
                    let mp = ManifestParcel::with_code(
                        &p.parcel_id,
                        p.attempt,
                        date,
                        &code,
                        self.cfg.tag_bits,
                    )
                    .map_err(|e| ApiError::internal(format!("manifest tag: {e}")))?;
                    parcels.push(mp);
                } else {
                    parcels.push(ManifestParcel {
                        parcel_id: p.parcel_id.clone(),
                        requires_code: false,
                        attempt: p.attempt,
                        salt: None,
                        tag: None,
                    });
                }
            }
            stops.push(Stop {
                stop_id: s.stop_id.clone(),
                sequence: s.sequence,
                address: s.address.clone(),
                recipient: s.recipient.clone(),
                parcels,
            });
        }
        let (valid_from, valid_until) = self.cfg.calendar.window(date);
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            manifest_id: manifest_id.clone(),
            route_id: route.route_id.clone(),
            courier_id: route.courier_id.clone(),
            device_id: device.device_id.clone(),
            delivery_date: date,
            revision: route.revision,
            issued_at: self.cfg.now(),
            valid_from,
            valid_until,
            tag_bits: self.cfg.tag_bits,
            max_attempts: self.cfg.max_attempts,
            code_digits: self.cfg.code_digits,
            stops,
        };
        let env = manifest
            .seal(&self.signer.current)
            .map_err(|e| ApiError::internal(format!("manifest build: {e}")))?;
        let envelope_json =
            serde_json::to_string(&env).map_err(|e| ApiError::internal(e.to_string()))?;
        self.metrics.manifest_built();
        tracing::info!(route_id = %route.route_id, %date, device_id = %device.device_id, revision = route.revision, "manifest built");
        let stored = self
            .storage
            .store_manifest(StoredManifest {
                route_id: route.route_id.clone(),
                delivery_date: date,
                device_id: device.device_id.clone(),
                manifest_id,
                revision: route.revision,
                envelope_json,
                items,
            })
            .await?;
        Ok(stored)
    }

    /// Rebuild the manifests of changed routes for every device of their courier.
    pub async fn rebuild_routes(&self, routes: &[(String, NaiveDate)]) -> Result<u32, ApiError> {
        let mut built = 0;
        for (route_id, date) in routes {
            let Some(route) = self.storage.route(route_id, *date).await? else {
                continue;
            };
            for d in self.storage.devices_of_courier(&route.courier_id).await? {
                self.ensure_manifest(&route, &d).await?;
                built += 1;
            }
        }
        Ok(built)
    }

    /// Check one upload's envelopes from `device` (signature, device, code)
    /// and ingest those that pass in one storage call; one result per item, in order.
    pub async fn ingest_batch(
        &self,
        device: &Device,
        items: Vec<serde_json::Value>,
    ) -> Vec<ItemResult> {
        let mut results: Vec<Option<ItemResult>> = Vec::with_capacity(items.len());
        let mut ready = Vec::new();
        let mut pending = Vec::new();
        for (index, item) in items.into_iter().enumerate() {
            match self.check_one(device, index, item) {
                Ok(c) => {
                    pending.push((index, c.confirmation_id.clone(), c.parcel_id.clone()));
                    ready.push(c);
                    results.push(None);
                }
                Err(r) => results.push(Some(r)),
            }
        }
        let outcomes = self.storage.ingest_confirmations(ready).await;
        for ((index, id, parcel_id), outcome) in pending.into_iter().zip(outcomes) {
            if let Some(slot) = results.get_mut(index) {
                *slot = Some(Self::finish_one(device, index, id, &parcel_id, outcome));
            }
        }
        results
            .into_iter()
            .enumerate()
            .map(|(index, r)| {
                r.unwrap_or_else(|| ItemResult::rejected(index, None, "server_error", false))
            })
            .collect()
    }

    /// The checks that need no storage; Err is the item's final answer.
    fn check_one(
        &self,
        device: &Device,
        index: usize,
        item: serde_json::Value,
    ) -> Result<IngestConfirmation, ItemResult> {
        let env: doorcode_core::envelope::Envelope = match serde_json::from_value(item) {
            Ok(e) => e,
            Err(_) => {
                return Err(ItemResult::rejected(
                    index,
                    None,
                    "malformed_envelope",
                    true,
                ));
            }
        };
        if env.kid != device.device_id {
            return Err(ItemResult::rejected(index, None, "wrong_device", true));
        }
        let vk = match VerifyingKey::from_b64(device.device_id.clone(), &device.public_key) {
            Ok(k) => k,
            Err(_) => {
                return Err(ItemResult::rejected(
                    index,
                    None,
                    "device_key_invalid",
                    true,
                ));
            }
        };
        let c = match open_confirmation(&env, &vk) {
            Ok(c) => c,
            Err(SignedConfirmationError::Envelope(e)) => {
                let reason = match e {
                    EnvelopeError::BadSignature => "bad_signature",
                    EnvelopeError::BadEncoding(_) => "bad_encoding",
                    EnvelopeError::UnsupportedVersion(_) => "unsupported_version",
                    EnvelopeError::UnknownKey(_) => "wrong_device",
                    _ => "malformed_envelope",
                };
                return Err(ItemResult::rejected(index, None, reason, true));
            }
            Err(SignedConfirmationError::Body(e)) => {
                let reason = match e {
                    doorcode_core::confirmation::ConfirmationError::DeviceMismatch => {
                        "wrong_device"
                    }
                    doorcode_core::confirmation::ConfirmationError::UnknownFormat(_) => {
                        "unknown_format"
                    }
                    _ => "malformed_body",
                };
                return Err(ItemResult::rejected(index, None, reason, true));
            }
        };
        let id = c.confirmation_id.to_string();
        let code_ok = match &c.code {
            Some(given) => match self.code(&c.parcel_id, c.delivery_date, c.attempt) {
                Ok(expected) => Some(expected.ct_eq(given)),
                Err(_) => return Err(ItemResult::rejected(index, Some(id), "server_error", false)),
            },
            None => None,
        };
        let (_, valid_until) = self.cfg.calendar.window(c.delivery_date);
        let ingest = IngestConfirmation {
            confirmation_id: id.clone(),
            device_id: c.device_id.clone(),
            seq: c.seq,
            manifest_id: c.manifest_id.clone(),
            revision: c.revision,
            parcel_id: c.parcel_id.clone(),
            delivery_date: c.delivery_date,
            attempt: c.attempt,
            outcome: c.outcome.as_str().to_string(),
            reason: c.reason.map(|r| r.as_str().to_string()),
            verified: c.verified.as_str().to_string(),
            failed_attempts: c.failed_attempts,
            recorded_at: c.recorded_at,
            code_ok,
            late: c.recorded_at >= valid_until,
            many_tries_threshold: self.cfg.many_tries_threshold,
            received_at: self.cfg.now(),
        };
        Ok(ingest)
    }

    /// The answer for an item the storage has seen.
    fn finish_one(
        device: &Device,
        index: usize,
        id: String,
        parcel_id: &str,
        outcome: crate::storage::Result<IngestOutcome>,
    ) -> ItemResult {
        match outcome {
            Ok(IngestOutcome::Accepted { disputed }) => {
                if disputed {
                    tracing::warn!(confirmation_id = %id, parcel_id = %parcel_id, device_id = %device.device_id, "confirmation disputed: code failed the full check");
                }
                ItemResult {
                    index,
                    confirmation_id: Some(id),
                    status: "accepted",
                    reason: None,
                    permanent: None,
                    disputed,
                }
            }
            Ok(IngestOutcome::Duplicate) => ItemResult {
                index,
                confirmation_id: Some(id),
                status: "duplicate",
                reason: None,
                permanent: None,
                disputed: false,
            },
            Ok(IngestOutcome::Rejected(reason, permanent)) => {
                ItemResult::rejected(index, Some(id), &reason, permanent)
            }
            Err(e) => {
                tracing::error!(error = %e, "confirmation ingest");
                ItemResult::rejected(index, Some(id), "server_error", false)
            }
        }
    }

    /// Online check at the door: counted, locked at `max_attempts`.
    pub async fn verify(
        &self,
        device: &Device,
        parcel_id: &str,
        given: &Code,
    ) -> Result<VerifyOutcome, ApiError> {
        for _ in 0..3 {
            let Some(t) = self
                .storage
                .verify_target(&device.device_id, parcel_id)
                .await?
            else {
                return Err(ApiError::not_found(
                    "not_on_manifest",
                    "this parcel is not on a manifest of this device",
                ));
            };
            if !t.requires_code {
                return Err(ApiError::conflict(
                    "no_code_required",
                    "this parcel is handed over without a code",
                ));
            }
            let expected = self.code(parcel_id, t.delivery_date, t.attempt)?;
            let ok = expected.ct_eq(given);
            let out = self
                .storage
                .record_verify(
                    &device.device_id,
                    parcel_id,
                    t.delivery_date,
                    t.attempt,
                    ok,
                    self.cfg.max_attempts,
                    self.cfg.now(),
                )
                .await?;
            if out != VerifyOutcome::Stale {
                return Ok(out);
            }
        }
        Err(ApiError::conflict(
            "changed",
            "the parcel changed while checking; sync and try again",
        ))
    }
}
