//! The data lifecycle at run time: the retention job (started beside the
//! notice sender), erasing one parcel (the API and the board both call
//! [`erase`]), the statistics, and their metrics. The rules are in
//! [`crate::domain::lifecycle`]; storage only persists.
//!
//! The job runs on one node at a time: each step first takes or renews a
//! lease row (`job_leases`), so several nodes on one PostgreSQL database
//! never purge side by side; a finished run hands the lease back, so a node
//! restarted after another runs at once. Each step is one short transaction
//! removing at most [`rules::BATCH`] rows per table, and the job yields
//! between steps, so requests keep being answered while it works through a
//! backlog. A run also deletes expired board sessions and rate-limit rows.

use crate::app::{App, ServiceError};
use crate::domain::lifecycle::{self as rules, AnonRecord, DayStats, Removed};
use crate::storage::StorageError;
use crate::storage::lifecycle::{Erase, Erased, Lease};
use chrono::{DateTime, NaiveDate, Utc};
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// The lease's job name.
const JOB: &str = "retention";
/// How long a node's lease lasts without renewal (each step renews it).
const LEASE: chrono::Duration = chrono::Duration::minutes(10);
/// Steps at most per run; a backlog larger than this continues next run.
const MAX_STEPS: u32 = 10_000;

/// What one run did.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    /// False when another node holds the lease (nothing was done).
    pub ran: bool,
    pub steps: u32,
    pub removed: Removed,
}

async fn remove_files(app: &App, parcels: HashSet<String>, removed: &mut Removed) {
    removed.add(
        "notice_files",
        app.notifier.remove_files_about(parcels).await,
    );
}

/// Erase one parcel's personal data now (`POST /v1/parcels/{id}/erase` and
/// the board): database rows, notice files, and the manifests of its
/// current route, rebuilt without it.
pub async fn erase(app: &App, parcel_id: &str, force: bool) -> Result<Erased, ServiceError> {
    let now = app.cfg.now();
    let today = app.policy().today(now);
    let mut erased = app
        .storage
        .erase_parcel(
            Erase {
                parcel_id: parcel_id.to_string(),
                force,
                today,
            },
            now,
        )
        .await?;
    remove_files(
        app,
        HashSet::from([parcel_id.to_string()]),
        &mut erased.removed,
    )
    .await;
    app.metrics.lifecycle.count("erase", &erased.removed);
    app.rebuild_routes(&erased.routes).await?;
    tracing::info!(
        parcel_id,
        rows = erased.removed.total(),
        "parcel's personal data erased"
    );
    Ok(erased)
}

/// This node's lease on the retention job until `until`.
fn lease(holder: &str, until: DateTime<Utc>) -> Lease {
    Lease {
        job: JOB.into(),
        holder: holder.into(),
        until,
    }
}

/// One retention run at the configured clock: take the lease, then steps
/// until nothing is left (or [`MAX_STEPS`]).
pub async fn run_once(app: &App, holder: &str) -> Result<RunReport, StorageError> {
    let mut report = RunReport::default();
    let mut purged = HashSet::new();
    loop {
        let now = app.cfg.now();
        if !app
            .storage
            .take_lease(lease(holder, now + LEASE), now)
            .await?
        {
            break;
        }
        report.ran = true;
        let cut = rules::cutoffs(&app.policy(), now, app.cfg.retention_days);
        let swept = app.storage.retention_step(cut, rules::BATCH, now).await?;
        report.steps += 1;
        report.removed.merge(&swept.removed);
        purged.extend(swept.purged);
        if swept.removed.total() == 0 || report.steps >= MAX_STEPS {
            break;
        }
        // Let requests in between steps.
        tokio::task::yield_now().await;
    }
    remove_files(app, purged, &mut report.removed).await;
    if report.ran {
        sweep_shared_state(app).await;
        // Hand the lease back (it ends now): the lease keeps two nodes from
        // purging side by side, not the next run off another node. Without
        // this a node restarted after a crash or a deploy waited out the old
        // node's lease before its first run.
        let now = app.cfg.now();
        if let Err(e) = app.storage.take_lease(lease(holder, now), now).await {
            tracing::warn!(error = %e, "handing back the retention lease");
        }
    }
    if report.ran {
        let c = &app.metrics.lifecycle;
        c.count("retention", &report.removed);
        c.runs.fetch_add(1, Ordering::Relaxed);
        c.last_run_rows
            .store(report.removed.total(), Ordering::Relaxed);
        if report.removed.total() > 0 {
            tracing::info!(
                steps = report.steps,
                rows = report.removed.total(),
                "retention run"
            );
        }
    }
    Ok(report)
}

/// Expired board sessions and rate-limit rows (`crate::domain::limits`),
/// in batches of [`rules::BATCH`], at most [`MAX_STEPS`] of them. They are
/// also swept as new ones are written; this catches what stays idle. Wall
/// clock, as their expiry is.
async fn sweep_shared_state(app: &App) {
    for _ in 0..MAX_STEPS {
        match app
            .storage
            .sweep_shared_state(chrono::Utc::now(), rules::BATCH)
            .await
        {
            Ok(n) if n > 0 => tokio::task::yield_now().await,
            Ok(_) => return,
            Err(e) => {
                tracing::error!(error = %e, "sweeping expired sessions and limits");
                return;
            }
        }
    }
}

/// The background job: a run at start, then every `retention_every`.
pub async fn run_job(app: App, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let holder = format!("node-{}", uuid::Uuid::new_v4());
    loop {
        if let Err(e) = run_once(&app, &holder).await {
            tracing::error!(error = %e, "retention run");
        }
        tokio::select! {
            _ = tokio::time::sleep(app.cfg.retention_every.max(Duration::from_millis(10))) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Per-day statistics over `from..=to` ([`rules::stats_range`] bounds it).
pub async fn stats(
    app: &App,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<DayStats>, ServiceError> {
    rules::stats_range(from, to).map_err(|e| ServiceError::BadRequest {
        kind: "bad_range",
        message: e.to_string(),
    })?;
    let records: Vec<AnonRecord> = app.storage.records_between(from, to).await?;
    Ok(rules::stats(&records, from, to))
}
