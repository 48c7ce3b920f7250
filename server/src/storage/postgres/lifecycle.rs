//! [`LifecycleStore`] on PostgreSQL. The erase and the retention step run
//! READ COMMITTED and lock the parcels they remove first (`FOR UPDATE`, in
//! id order like an upload), so a concurrent upload either lands before the
//! record is taken or finds the parcel gone; the day sweeps delete at most
//! a batch of rows each (`ctid = ANY(ARRAY(… LIMIT n))`).

use super::*;
use crate::domain::lifecycle::{self as rules, AnonRecord, Cutoffs, Removed};
use crate::storage::lifecycle::{
    Erase, Erased, Lease, LifecycleStore, ORPHANS_BY_DAY, Swept, TAKE_LEASE,
};

fn record_of(r: &Row) -> TxResult<AnonRecord> {
    let failure: Option<String> = get(r, 4)?;
    let kinds: String = get(r, 5)?;
    Ok(AnonRecord::of(
        get(r, 0)?,
        get(r, 1)?,
        get(r, 2)?,
        u32_of(get(r, 3)?)?,
        failure.as_deref(),
        &kinds,
    ))
}

/// The record a live parcel would leave, for the parcels `p` matching `cond`.
async fn live_records(tx: &Tx<'_>, cond: &str, p: Params<'_>) -> TxResult<Vec<AnonRecord>> {
    let sql = format!(
        "SELECT p.parcel_id, COALESCE(p.delivery_date, (p.created_at AT TIME ZONE 'UTC')::date),
           p.status, p.attempt,
           (SELECT c.reason FROM confirmations c
             WHERE c.parcel_id = p.parcel_id AND c.outcome = 'failed'
             ORDER BY c.received_at DESC, c.seq DESC LIMIT 1),
           COALESCE((SELECT string_agg(s.kind, ',') FROM signals s WHERE s.parcel_id = p.parcel_id), '')
         FROM parcels p WHERE {cond}"
    );
    query(tx, &sql, p).await?.iter().map(record_of).collect()
}

async fn keep_records(tx: &Tx<'_>, records: &[AnonRecord], now: DateTime<Utc>) -> TxResult<()> {
    if records.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = records.iter().map(|r| r.parcel_id.as_str()).collect();
    let days: Vec<NaiveDate> = records.iter().map(|r| r.day).collect();
    let states: Vec<&str> = records.iter().map(|r| r.final_state.as_str()).collect();
    let attempts: Vec<i64> = records.iter().map(|r| i64::from(r.attempt)).collect();
    let failures: Vec<Option<&str>> = records
        .iter()
        .map(|r| r.failure.map(|f| f.as_str()))
        .collect();
    let kinds: Vec<String> = records.iter().map(AnonRecord::signal_kinds).collect();
    exec(
        tx,
        "INSERT INTO parcel_records(parcel_id, day, final_state, attempt, failure, signal_kinds, recorded_at)
         SELECT i, d, s, a, f, k, $7 FROM UNNEST($1::text[], $2::date[], $3::text[], $4::bigint[],
           $5::text[], $6::text[]) AS t(i, d, s, a, f, k)
         ON CONFLICT(parcel_id, day) DO UPDATE SET final_state = excluded.final_state,
           attempt = excluded.attempt, failure = excluded.failure,
           signal_kinds = excluded.signal_kinds, recorded_at = excluded.recorded_at",
        &[&ids, &days, &states, &attempts, &failures, &kinds, &now],
    )
    .await?;
    Ok(())
}

/// Delete every row about the parcels in `ids`; see the SQLite twin.
async fn purge(tx: &Tx<'_>, ids: &[String], removed: &mut Removed) -> TxResult<()> {
    let steps: [(&'static str, &str); 10] = [
        (
            "manifests",
            "DELETE FROM manifests WHERE (route_id, delivery_date) IN
             (SELECT route_id, delivery_date FROM stop_parcels WHERE parcel_id = ANY($1))",
        ),
        (
            "stops",
            "UPDATE stops SET recipient = '' WHERE (route_id, delivery_date, stop_id, recipient) IN
             (SELECT sp.route_id, sp.delivery_date, sp.stop_id, p.recipient_name
              FROM stop_parcels sp JOIN parcels p ON p.parcel_id = sp.parcel_id
              WHERE sp.parcel_id = ANY($1))",
        ),
        (
            "stops",
            "DELETE FROM stops WHERE (route_id, delivery_date, stop_id) IN
             (SELECT sp.route_id, sp.delivery_date, sp.stop_id FROM stop_parcels sp
              WHERE sp.parcel_id = ANY($1) AND NOT EXISTS (SELECT 1 FROM stop_parcels o
                WHERE o.route_id = sp.route_id AND o.delivery_date = sp.delivery_date
                  AND o.stop_id = sp.stop_id AND o.parcel_id <> ALL($1)))",
        ),
        (
            "stop_parcels",
            "DELETE FROM stop_parcels WHERE parcel_id = ANY($1)",
        ),
        (
            "manifest_items",
            "DELETE FROM manifest_items WHERE parcel_id = ANY($1)",
        ),
        (
            "parcel_events",
            "DELETE FROM parcel_events WHERE parcel_id = ANY($1)",
        ),
        ("notices", "DELETE FROM notices WHERE parcel_id = ANY($1)"),
        (
            "confirmations",
            "DELETE FROM confirmations WHERE parcel_id = ANY($1)",
        ),
        ("signals", "DELETE FROM signals WHERE parcel_id = ANY($1)"),
        ("parcels", "DELETE FROM parcels WHERE parcel_id = ANY($1)"),
    ];
    for (i, (table, sql)) in steps.iter().enumerate() {
        let n = exec(tx, sql, &[&ids]).await?;
        // The recipient blanking (step 1) changes rows, it removes none.
        if i != 1 {
            removed.add(table, n);
        }
    }
    Ok(())
}

/// Delete at most `limit` rows of `table` matching `cond` (parameter $1).
async fn sweep(
    tx: &Tx<'_>,
    table: &'static str,
    cond: &str,
    p: Params<'_>,
    limit: u32,
    removed: &mut Removed,
) -> TxResult<()> {
    let sql = format!(
        "DELETE FROM {table} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {table} WHERE {cond} LIMIT {limit}))"
    );
    let n = exec(tx, &sql, p).await?;
    removed.add(table, n);
    Ok(())
}

#[async_trait::async_trait]
impl LifecycleStore for PostgresStorage {
    async fn erase_parcel(&self, erase: Erase, now: DateTime<Utc>) -> Result<Erased> {
        let Erase {
            parcel_id,
            force,
            today,
        } = erase;
        let parcel_id = parcel_id.as_str();
        transact!(self, RC, |tx| async {
            let Some(facts) = locked_parcel(&tx, parcel_id).await? else {
                return Err(StorageError::NotFound("no such parcel".into()).into());
            };
            rules::may_erase(facts.state, force).map_err(StorageError::from)?;
            let record = live_records(&tx, "p.parcel_id = $1", &[&parcel_id])
                .await?
                .pop()
                .ok_or_else(|| {
                    StorageError::Backend("erase: the parcel's record is missing".into())
                })?;
            keep_records(&tx, std::slice::from_ref(&record), now).await?;
            let mut routes = Vec::new();
            for r in query(
                &tx,
                "SELECT DISTINCT route_id, delivery_date FROM stop_parcels
                 WHERE parcel_id = $1 AND delivery_date >= $2",
                &[&parcel_id, &today],
            )
            .await?
            {
                routes.push((get::<String>(&r, 0)?, get::<NaiveDate>(&r, 1)?));
            }
            let mut removed = Removed::default();
            purge(&tx, &[parcel_id.to_string()], &mut removed).await?;
            for (route_id, date) in &routes {
                exec(
                    &tx,
                    "UPDATE routes SET revision = revision + 1, updated_at = $3
                     WHERE route_id = $1 AND delivery_date = $2",
                    &[route_id, date, &now],
                )
                .await?;
            }
            Ok(Erased {
                record,
                routes,
                removed,
            })
        }
        .await)
    }

    async fn retention_step(&self, cut: Cutoffs, limit: u32, now: DateTime<Utc>) -> Result<Swept> {
        let n = i64::from(limit);
        transact!(self, RC, |tx| {
            async {
            let mut ids: Vec<String> = Vec::new();
            for r in query(
                &tx,
                "(SELECT parcel_id FROM parcels WHERE delivery_date < $1 LIMIT $2)
                 UNION ALL
                 (SELECT parcel_id FROM parcels
                   WHERE delivery_date IS NULL AND created_at < ($1::date)::timestamp AT TIME ZONE 'UTC'
                   LIMIT $2)
                 LIMIT $2",
                &[&cut.purge_before, &n],
            )
            .await?
            {
                ids.push(get(&r, 0)?);
            }
            let mut removed = Removed::default();
            if !ids.is_empty() {
                // Locked in id order, like an upload's parcels.
                let locked = locked_parcels(&tx, &ids).await?;
                let mut ids_locked: Vec<String> = locked.into_keys().collect();
                ids_locked.sort();
                ids = ids_locked;
                let records = live_records(&tx, "p.parcel_id = ANY($1)", &[&ids]).await?;
                keep_records(&tx, &records, now).await?;
                purge(&tx, &ids, &mut removed).await?;
            }
            let r = &mut removed;
            sweep(&tx, "manifests", "delivery_date < $1", &[&cut.manifests_before], limit, r).await?;
            sweep(
                &tx,
                "notices",
                "delivery_date < $1 AND status <> 'pending'",
                &[&cut.notices_before],
                limit,
                r,
            )
            .await?;
            // Rows of old days left without their parcel (an upload for an
            // unknown parcel, a moved parcel's old route): only once every old
            // parcel is purged, as its record is taken from some of them.
            if ids.len() >= limit as usize {
                return Ok(Swept::more(removed, ids));
            }
            for table in ORPHANS_BY_DAY {
                sweep(&tx, table, "delivery_date < $1", &[&cut.purge_before], limit, r).await?;
            }
            sweep(&tx, "signals", "day < $1", &[&cut.purge_before], limit, r).await?;
            sweep(
                &tx,
                "enrollments",
                "expires_at < $1",
                &[&cut.enrollments_before],
                limit,
                r,
            )
            .await?;
            Ok(Swept {
                removed: removed.clone(),
                purged: ids.clone(),
            })
        }
        .await
        })
    }

    async fn take_lease(&self, lease: Lease, now: DateTime<Utc>) -> Result<bool> {
        let Lease { job, holder, until } = &lease;
        transact!(self, RC, |tx| async {
            let n = exec(&tx, TAKE_LEASE, &[job, holder, until, &now]).await?;
            Ok(n == 1)
        }
        .await)
    }

    async fn records_between(&self, from: NaiveDate, to: NaiveDate) -> Result<Vec<AnonRecord>> {
        transact!(self, SNAP, |tx| async {
            let mut out: Vec<AnonRecord> = query(
                &tx,
                "SELECT parcel_id, day, final_state, attempt, failure, signal_kinds
                 FROM parcel_records WHERE day BETWEEN $1 AND $2",
                &[&from, &to],
            )
            .await?
            .iter()
            .map(record_of)
            .collect::<TxResult<_>>()?;
            out.extend(
                live_records(
                    &tx,
                    "p.delivery_date BETWEEN $1 AND $2
                     OR (p.delivery_date IS NULL
                         AND (p.created_at AT TIME ZONE 'UTC')::date BETWEEN $1 AND $2)",
                    &[&from, &to],
                )
                .await?,
            );
            Ok(out)
        }
        .await)
    }
}
