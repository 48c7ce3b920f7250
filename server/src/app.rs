//! The running server's shared state and the domain steps that span storage
//! and crypto: building manifests, checking codes, ingesting confirmations.

use crate::config::Config;
use crate::domain::disputes::{self, Cursor};
use crate::domain::verify::{Refused, VerifyInput};
use crate::domain::{At, ItemStatus, Policy, RejectReason, devices};
use crate::error::ApiError;
use crate::keys::Signer;
use crate::metrics::Metrics;
use crate::notices::Channel;
use crate::storage::{
    BuildKey, Device, IngestConfirmation, IngestOutcome, Moved, ReissueInput, RouteData, Signal,
    Storage, StoredManifest, Upload, VerifyOutcome,
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
    pub status: ItemStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<RejectReason>,
    /// For rejections: true means retrying the same envelope can never succeed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permanent: Option<bool>,
    /// For accepted deliveries whose code failed the full check.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub disputed: bool,
}

impl ItemResult {
    fn rejected(index: usize, id: Option<String>, reason: RejectReason) -> Self {
        Self {
            index,
            confirmation_id: id,
            status: ItemStatus::Rejected,
            reason: Some(reason),
            permanent: Some(reason.permanent()),
            disputed: false,
        }
    }
}

impl App {
    /// The rules' numbers, from the configuration.
    pub fn policy(&self) -> Policy {
        Policy::of(&self.cfg)
    }

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
        let key = BuildKey {
            route_id: &route.route_id,
            date: route.delivery_date,
            device_id: &device.device_id,
        };
        let cached = self.storage.manifest(key).await?;
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
        let mut held = std::collections::BTreeSet::new();
        for s in &route.stops {
            let mut parcels = Vec::with_capacity(s.parcels.len());
            for p in &s.parcels {
                items.push((p.parcel_id.clone(), p.attempt));
                if p.held {
                    held.insert(p.parcel_id.clone());
                }
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
            .seal_holding(&self.signer.current, &held)
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

    /// Rebuild the manifests of changed routes for their courier's devices,
    /// except revoked and long-unseen ones ([`devices::gets_builds`]).
    pub async fn rebuild_routes(&self, routes: &[(String, NaiveDate)]) -> Result<u32, ApiError> {
        let mut built = 0;
        let now = self.cfg.now();
        for (route_id, date) in routes {
            let Some(route) = self.storage.route(route_id, *date).await? else {
                continue;
            };
            for d in self.storage.devices_of_courier(&route.courier_id).await? {
                if devices::gets_builds(&d, now) {
                    self.ensure_manifest(&route, &d).await?;
                    built += 1;
                }
            }
        }
        Ok(built)
    }

    /// One page of a day's signals (disputes among them), oldest first, and
    /// the cursor of the next page if there is one.
    pub async fn signals_page(
        &self,
        day: NaiveDate,
        after: Cursor,
        limit: u32,
    ) -> Result<(Vec<Signal>, Option<Cursor>), ApiError> {
        let mut page = self
            .storage
            .signals_on(day, after.0, limit.saturating_add(1))
            .await?;
        let next = disputes::next_cursor(&mut page, limit);
        Ok((page, next))
    }

    /// Void a parcel's code: the next attempt, a new tracking link, a notice,
    /// and its route's manifests rebuilt.
    pub async fn reissue(
        &self,
        parcel_id: &str,
        requires_code: Option<bool>,
    ) -> Result<Moved, ApiError> {
        let input = ReissueInput {
            parcel_id: parcel_id.to_string(),
            track_token: crate::keys::new_token().map_err(ApiError::internal)?,
            requires_code,
        };
        let moved = self.storage.reissue(input, self.cfg.now()).await?;
        self.notice_wake.notify_one();
        self.rebuild_routes(&moved.routes).await?;
        Ok(moved)
    }

    /// "I did not order this" from the tracking page: the code is void, the
    /// parcel held, dispatch signalled, and its route's manifests rebuilt so
    /// that handsets pull `"hold": true` on their next sync.
    pub async fn hold(&self, parcel_id: &str) -> Result<Moved, ApiError> {
        let policy = self.policy();
        let at = At {
            now: self.cfg.now(),
            policy: &policy,
        };
        let moved = self.storage.hold_parcel(parcel_id, at).await?;
        self.rebuild_routes(&moved.routes).await?;
        Ok(moved)
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
        let policy = self.policy();
        let upload = Upload {
            device_id: device.device_id.clone(),
            items: ready,
        };
        let at = At {
            now: self.cfg.now(),
            policy: &policy,
        };
        let outcomes = match self.storage.ingest_confirmations(upload, at).await {
            Ok(o) => o,
            Err(e) => {
                // Nothing of the upload was stored; every item may be retried.
                tracing::error!(error = %e, "confirmation ingest");
                Vec::new()
            }
        };
        for ((index, id, parcel_id), outcome) in pending.into_iter().zip(outcomes) {
            if let Some(slot) = results.get_mut(index) {
                *slot = Some(Self::finish_one(device, index, id, &parcel_id, outcome));
            }
        }
        results
            .into_iter()
            .enumerate()
            .map(|(index, r)| {
                r.unwrap_or_else(|| ItemResult::rejected(index, None, RejectReason::ServerError))
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
                    RejectReason::MalformedEnvelope,
                ));
            }
        };
        if env.kid != device.device_id {
            return Err(ItemResult::rejected(index, None, RejectReason::WrongDevice));
        }
        let vk = match VerifyingKey::from_b64(device.device_id.clone(), &device.public_key) {
            Ok(k) => k,
            Err(_) => {
                return Err(ItemResult::rejected(
                    index,
                    None,
                    RejectReason::DeviceKeyInvalid,
                ));
            }
        };
        let c = match open_confirmation(&env, &vk) {
            Ok(c) => c,
            Err(SignedConfirmationError::Envelope(e)) => {
                let reason = match e {
                    EnvelopeError::BadSignature => RejectReason::BadSignature,
                    EnvelopeError::BadEncoding(_) => RejectReason::BadEncoding,
                    EnvelopeError::UnsupportedVersion(_) => RejectReason::UnsupportedVersion,
                    EnvelopeError::UnknownKey(_) => RejectReason::WrongDevice,
                    _ => RejectReason::MalformedEnvelope,
                };
                return Err(ItemResult::rejected(index, None, reason));
            }
            Err(SignedConfirmationError::Body(e)) => {
                let reason = match e {
                    doorcode_core::confirmation::ConfirmationError::DeviceMismatch => {
                        RejectReason::WrongDevice
                    }
                    doorcode_core::confirmation::ConfirmationError::UnknownFormat(_) => {
                        RejectReason::UnknownFormat
                    }
                    _ => RejectReason::MalformedBody,
                };
                return Err(ItemResult::rejected(index, None, reason));
            }
        };
        let id = c.confirmation_id.to_string();
        let code_ok = match &c.code {
            Some(given) => match self.code(&c.parcel_id, c.delivery_date, c.attempt) {
                Ok(expected) => Some(expected.ct_eq(given)),
                Err(_) => {
                    return Err(ItemResult::rejected(
                        index,
                        Some(id),
                        RejectReason::ServerError,
                    ));
                }
            },
            None => None,
        };
        let ingest = IngestConfirmation {
            confirmation_id: id.clone(),
            device_id: c.device_id.clone(),
            seq: c.seq,
            manifest_id: c.manifest_id.clone(),
            revision: c.revision,
            parcel_id: c.parcel_id.clone(),
            delivery_date: c.delivery_date,
            attempt: c.attempt,
            outcome: c.outcome,
            reason: c.reason,
            verified: c.verified,
            failed_attempts: c.failed_attempts,
            recorded_at: c.recorded_at,
            code_ok,
        };
        Ok(ingest)
    }

    /// The answer for an item the storage has seen.
    fn finish_one(
        device: &Device,
        index: usize,
        id: String,
        parcel_id: &str,
        outcome: IngestOutcome,
    ) -> ItemResult {
        match outcome {
            IngestOutcome::Accepted { disputed } => {
                if disputed {
                    tracing::warn!(confirmation_id = %id, parcel_id = %parcel_id, device_id = %device.device_id, "confirmation disputed: code failed the full check");
                }
                ItemResult {
                    index,
                    confirmation_id: Some(id),
                    status: ItemStatus::Accepted,
                    reason: None,
                    permanent: None,
                    disputed,
                }
            }
            IngestOutcome::Duplicate => ItemResult {
                index,
                confirmation_id: Some(id),
                status: ItemStatus::Duplicate,
                reason: None,
                permanent: None,
                disputed: false,
            },
            IngestOutcome::Rejected(reason) => ItemResult::rejected(index, Some(id), reason),
        }
    }

    /// The day whose notice a courier may ask to be sent again: the same
    /// rules as an online try (on the device's current route, needs a code,
    /// within its day, not held). Nothing is counted.
    pub async fn resend_day(
        &self,
        device: &Device,
        parcel_id: &str,
    ) -> Result<NaiveDate, ApiError> {
        let facts = self.storage.verify_facts(device, parcel_id).await?;
        let target = crate::domain::verify::target(&facts, self.cfg.now(), &self.policy())
            .map_err(refused)?;
        Ok(target.delivery_date)
    }

    /// Online check at the door: refused outside the code's day and off the
    /// courier's current route; counted, locked at `max_attempts`.
    pub async fn verify(
        &self,
        device: &Device,
        parcel_id: &str,
        given: &Code,
    ) -> Result<VerifyOutcome, ApiError> {
        let policy = self.policy();
        for _ in 0..3 {
            let facts = self.storage.verify_facts(device, parcel_id).await?;
            let now = self.cfg.now();
            let target = crate::domain::verify::target(&facts, now, &policy).map_err(refused)?;
            let expected = self.code(parcel_id, target.delivery_date, target.attempt)?;
            let input = VerifyInput {
                device_id: device.device_id.clone(),
                parcel_id: parcel_id.to_string(),
                target,
                ok: expected.ct_eq(given),
            };
            let at = At {
                now,
                policy: &policy,
            };
            let out = self.storage.record_verify(input, at).await?;
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

/// A try refused before it counts.
fn refused(r: Refused) -> ApiError {
    match r {
        Refused::NotOnManifest => ApiError::not_found(
            "not_on_manifest",
            "this parcel is not on a manifest of this device",
        ),
        Refused::NotOnCurrentRoute => ApiError::conflict(
            "not_on_current_route",
            "this parcel is no longer on this courier's current route; sync the handset",
        ),
        Refused::Held => ApiError::conflict(
            "held",
            "the customer reported they did not order this parcel: do not hand it over \
             (record it failed with reason refused); this did not count as a try",
        ),
        Refused::NoCodeRequired => ApiError::conflict(
            "no_code_required",
            "this parcel is handed over without a code",
        ),
        Refused::NotYetValid(from) => ApiError::conflict(
            "code_not_yet_valid",
            format!(
                "this parcel's code is valid from {}; this did not count as a try",
                from.to_rfc3339()
            ),
        ),
        Refused::Expired(until) => ApiError::conflict(
            "code_expired",
            format!(
                "this parcel's code was valid until {}; this did not count as a try",
                until.to_rfc3339()
            ),
        ),
    }
}
