//! Sync progress for apps: a foreign `SyncListener` the app implements (a
//! Kotlin `Flow`, a Swift `AsyncStream` in the platform layers), told each
//! step of a sync as it happens.

use crate::records::{ManifestUpdate, SyncReport};
use doorcode_core::codes;
use doorcode_core::sync::{self, SyncObserver};
use std::sync::Arc;

/// One step of a sync. `Done` or `Failed` always comes last, once.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum SyncProgress {
    /// The sync of `date` (`YYYY-MM-DD`) began.
    Started { date: String },
    /// The manifest step is over (pulled, unchanged, none, or failed: the
    /// sync goes on to upload).
    ManifestPulled { manifest: ManifestUpdate },
    /// `done` of `total` waiting confirmations have been answered by the
    /// server. Sent before the first batch and after each; not sent when
    /// nothing waits.
    Uploading { done: u32, total: u32 },
    /// Finished; the same report `sync` returns.
    Done { report: SyncReport },
    /// The sync could not run; `syncWithProgress` throws the same error.
    Failed { error: String },
}

impl From<&sync::SyncProgress> for SyncProgress {
    fn from(p: &sync::SyncProgress) -> Self {
        match p {
            sync::SyncProgress::Started { date } => Self::Started {
                date: codes::date_str(*date),
            },
            sync::SyncProgress::ManifestPulled { manifest } => Self::ManifestPulled {
                manifest: manifest.clone().into(),
            },
            sync::SyncProgress::Uploading { done, total } => Self::Uploading {
                done: *done,
                total: *total,
            },
            sync::SyncProgress::Done { report } => Self::Done {
                report: report.clone().into(),
            },
            sync::SyncProgress::Failed { error } => Self::Failed {
                error: error.clone(),
            },
        }
    }
}

/// What a `SyncListener` may throw; the sync goes on regardless.
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum SyncListenerError {
    #[error("{reason}")]
    Failed { reason: String },
}

impl From<uniffi::UnexpectedUniFFICallbackError> for SyncListenerError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        Self::Failed { reason: e.reason }
    }
}

/// Told each step of a sync, in order, on the sync's own thread: hand the
/// value on (to a channel, the UI) and return. Whatever it throws is
/// ignored; it cannot stop or break the sync.
#[uniffi::export(with_foreign)]
pub trait SyncListener: Send + Sync {
    fn on_progress(&self, progress: SyncProgress) -> Result<(), SyncListenerError>;
}

/// Adapts the foreign listener to core's observer.
pub(crate) struct ForeignListener(pub(crate) Arc<dyn SyncListener>);

impl ForeignListener {
    pub(crate) fn tell(&self, p: SyncProgress) {
        // A listener that throws (a UI bug) must not break the sync.
        let _ = self.0.on_progress(p);
    }
}

impl SyncObserver for ForeignListener {
    fn on_progress(&self, progress: &sync::SyncProgress) {
        self.tell(progress.into());
    }
}
