//! What the data lifecycle needs from storage (DESIGN "Data lifecycle"):
//! erase a parcel, one bounded retention step, the one-node-at-a-time lease,
//! and the anonymous records statistics are counted from. The rules (the
//! cut-offs, who may be erased, what a record holds, how days are counted)
//! are in [`crate::domain::lifecycle`]; the backends
//! (`sqlite_lifecycle.rs`, `postgres_lifecycle.rs`) only persist.

use super::Result;
use crate::domain::lifecycle::{AnonRecord, Cutoffs, Removed};
use chrono::{DateTime, NaiveDate, Utc};

/// An erase asked for: `force` erases a parcel still scheduled; routes of
/// `today` or later get a new revision.
#[derive(Debug, Clone)]
pub struct Erase {
    pub parcel_id: String,
    pub force: bool,
    pub today: NaiveDate,
}

/// A lease on a job (`job_leases`): `holder` runs `job` until `until`.
#[derive(Debug, Clone)]
pub struct Lease {
    pub job: String,
    pub holder: String,
    pub until: DateTime<Utc>,
}

/// Takes a lease: a free or expired one (`$4` the time now), or the holder's
/// own, renewed. Both dialects run it as written.
pub(crate) const TAKE_LEASE: &str = "INSERT INTO job_leases(job, holder, until) VALUES($1, $2, $3)
 ON CONFLICT(job) DO UPDATE SET holder = excluded.holder, until = excluded.until
 WHERE job_leases.until < $4 OR job_leases.holder = excluded.holder";

/// What an erase did.
#[derive(Debug, Clone)]
pub struct Erased {
    /// What stays of the parcel.
    pub record: AnonRecord,
    /// Routes of today or later the parcel was on: their revision went up
    /// and their manifests were deleted, so the caller rebuilds them.
    pub routes: Vec<(String, NaiveDate)>,
    pub removed: Removed,
}

/// What one retention step did; nothing removed means the run is done.
#[derive(Debug, Clone, Default)]
pub struct Swept {
    pub removed: Removed,
    /// Parcels whose personal data went (their notice files go next).
    pub purged: Vec<String>,
}

impl Swept {
    /// A step that purged a full batch of parcels: more may follow.
    pub fn more(removed: Removed, purged: Vec<String>) -> Self {
        Self { removed, purged }
    }
}

/// Tables whose rows of past days may outlive their parcel (an upload for an
/// unknown parcel, a moved parcel's old route), swept by `delivery_date`
/// once every old parcel is purged.
pub const ORPHANS_BY_DAY: [&str; 6] = [
    "confirmations",
    "manifest_items",
    "stop_parcels",
    "stops",
    "routes",
    "notices",
];

#[async_trait::async_trait]
pub trait LifecycleStore: Send + Sync {
    /// Remove one parcel's personal data now, in one transaction: its
    /// anonymous record is written, then the parcel, its events, notices,
    /// confirmations, signals, route entries (stops only it used) and every
    /// stored manifest that listed it are deleted. `NotFound` if unknown,
    /// `Conflict` if still scheduled and not `force`
    /// ([`crate::domain::lifecycle::may_erase`]).
    async fn erase_parcel(&self, erase: Erase, now: DateTime<Utc>) -> Result<Erased>;

    /// One retention step: at most `limit` parcels past `cut.purge_before`
    /// purged (records kept), and at most `limit` rows per table of what
    /// their day makes useless. One short transaction.
    async fn retention_step(&self, cut: Cutoffs, limit: u32, now: DateTime<Utc>) -> Result<Swept>;

    /// Take or renew `lease`; false while another holder's lease runs at
    /// `now`. With several nodes on one database, one runs the job.
    async fn take_lease(&self, lease: Lease, now: DateTime<Utc>) -> Result<bool>;

    /// The anonymous records of days `from..=to`: those kept for purged and
    /// erased parcels, and those the live parcels would leave.
    async fn records_between(&self, from: NaiveDate, to: NaiveDate) -> Result<Vec<AnonRecord>>;
}
