//! The per-client abuse limits at run time (track lookups, board sign-ins,
//! enrollments, resends), shared by every node: each hit is one counter
//! row update in the database ([`Storage::rate_hit`]), so with several
//! nodes behind a load balancer a client gets one allowance, not one per
//! node. The rules (windows, keys, the bound on rows, the overflow key)
//! are in [`crate::domain::limits`]; there is no process cache.
//!
//! Windows are measured on the wall clock (as the in-memory limiters'
//! `Instant` was), not on the configured clock tests move by days. A
//! refusal is counted in `doorcode_rate_limited_total{limit}`. A storage
//! failure refuses too (logged, not counted): every limited action needs the
//! database anyway.

use crate::domain::limits::{self, GLOBAL_KEY, RESEND_ALL, RESEND_PARCEL, Rule};
use crate::metrics::Metrics;
use crate::storage::Storage;
use std::sync::Arc;
use std::time::Duration;

/// The limits of one node, over the shared storage.
pub struct Limits {
    storage: Arc<dyn Storage>,
    metrics: Arc<Metrics>,
}

/// An allowed hit, for [`Limits::refund`]: the row it was counted in.
#[derive(Debug)]
pub struct Taken {
    limit: &'static str,
    key: String,
}

/// How long a refusal after a storage failure asks the client to wait.
const WAIT_ON_FAILURE: Duration = Duration::from_secs(60);

impl Limits {
    pub fn new(storage: Arc<dyn Storage>, metrics: Arc<Metrics>) -> Self {
        Self { storage, metrics }
    }

    /// Counts one hit of `rule` for `key` (an address, a parcel id): the
    /// hit if allowed, else how long until the window ends.
    pub async fn take(&self, rule: &Rule, key: &str) -> Result<Taken, Duration> {
        let now = chrono::Utc::now();
        let hit = limits::hit(rule, key, now);
        let counted = match self.storage.rate_hit(&hit).await {
            Ok(Some(c)) => Ok((hit.key, c)),
            Ok(None) => {
                // The limit is full: new keys share the overflow row.
                let o = limits::overflow_hit(rule, now);
                match self.storage.rate_hit(&o).await {
                    Ok(Some(c)) => Ok((o.key, c)),
                    Ok(None) => Err("the overflow row was not counted".to_string()),
                    Err(e) => Err(e.to_string()),
                }
            }
            Err(e) => Err(e.to_string()),
        };
        let (key, count) = counted.map_err(|e| {
            tracing::error!(limit = rule.name, error = %e, "rate limit not counted; refused");
            WAIT_ON_FAILURE
        })?;
        match limits::verdict(rule, count, now) {
            Ok(()) => Ok(Taken {
                limit: rule.name,
                key,
            }),
            Err(wait) => {
                self.metrics.rate_limited(rule.label);
                Err(wait)
            }
        }
    }

    /// Gives back a hit taken by [`Limits::take`] (the attempt turned out
    /// not to count, e.g. an enrollment that succeeded).
    pub async fn refund(&self, t: &Taken) {
        let now = chrono::Utc::now();
        if let Err(e) = self.storage.rate_refund(t.limit, &t.key, now).await {
            tracing::warn!(limit = t.limit, error = %e, "rate limit refund lost");
        }
    }

    /// Claims the parcel's resend: None when a resend may go now (the slot is
    /// then taken), else how long to wait. One per parcel per
    /// [`RESEND_PARCEL`] window for the customer's page and the courier's
    /// handset together, then the depot-wide [`RESEND_ALL`]; a parcel
    /// refused by the second keeps its own slot.
    pub async fn claim_resend(&self, parcel_id: &str) -> Option<Duration> {
        let slot = match self.take(&RESEND_PARCEL, parcel_id).await {
            Ok(t) => t,
            Err(wait) => return Some(wait),
        };
        match self.take(&RESEND_ALL, GLOBAL_KEY).await {
            Ok(_) => None,
            Err(wait) => {
                self.refund(&slot).await;
                Some(wait)
            }
        }
    }
}
