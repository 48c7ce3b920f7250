//! What a sync is doing while it runs, for an app to show: the manifest
//! step, then n of m confirmations uploaded, then done (with the report) or
//! failed. Reported to a [`SyncObserver`] the app passes to
//! [`SyncClient::sync_observed`](super::SyncClient::sync_observed).

use super::{ManifestSync, SyncReport};
use chrono::NaiveDate;
use serde::Serialize;

/// One step of a sync. `Done` or `Failed` always comes last, once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "phase")]
pub enum SyncProgress {
    /// The sync of `date` began: the manifest is being asked for.
    Started { date: NaiveDate },
    /// The manifest step is over: pulled, unchanged, none for the day, or
    /// failed (the sync goes on to upload).
    ManifestPulled { manifest: ManifestSync },
    /// `done` of `total` confirmations have been answered by the server
    /// (accepted, already held, or refused for good). Sent before the first
    /// batch and after each one; not sent when nothing waits.
    Uploading { done: u32, total: u32 },
    /// The sync finished; the report says what it did and when to retry.
    Done { report: SyncReport },
    /// The sync could not run: not enrolled, the token refused, ...
    Failed { error: String },
}

/// Receives a sync's progress. Called on the sync's own task, in order;
/// must return quickly (hand the value to the UI and go).
pub trait SyncObserver: Send + Sync {
    fn on_progress(&self, progress: &SyncProgress);
}

/// For a sync nobody watches.
pub struct NoProgress;

impl SyncObserver for NoProgress {
    fn on_progress(&self, _: &SyncProgress) {}
}
