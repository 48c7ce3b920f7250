//! Ingest: an upload's envelopes checked (signature, device, code) and the
//! ones that pass handed to storage in one call.

use super::App;
use crate::domain::{At, ItemStatus, RejectReason};
use crate::storage::{Device, IngestConfirmation, IngestOutcome, Upload};
use doorcode_core::confirmation::{SignedConfirmationError, open_confirmation};
use doorcode_core::envelope::{EnvelopeError, VerifyingKey};

/// What ingest decided for one uploaded item (the API answers it as
/// `doorcode_core::wire::ItemResult`).
#[derive(Debug, Clone)]
pub struct ItemResult {
    pub index: usize,
    pub confirmation_id: Option<String>,
    pub status: ItemStatus,
    pub reason: Option<RejectReason>,
    /// For rejections: true means retrying the same envelope can never succeed.
    pub permanent: Option<bool>,
    /// For accepted deliveries whose code failed the full check.
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
        // The device's key is decoded and checked (a strong Ed25519 point)
        // once per upload, not once per item: the check is a point
        // decompression, a large share of an item's cost.
        let key = VerifyingKey::from_b64(device.device_id.clone(), &device.public_key).ok();
        for (index, item) in items.into_iter().enumerate() {
            match self.check_one(device, key.as_ref(), index, item) {
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
    /// `key` is the device's key, None when it does not decode as a strong point.
    fn check_one(
        &self,
        device: &Device,
        key: Option<&VerifyingKey>,
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
        let Some(vk) = key else {
            return Err(ItemResult::rejected(
                index,
                None,
                RejectReason::DeviceKeyInvalid,
            ));
        };
        let c = match open_confirmation(&env, vk) {
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
}
