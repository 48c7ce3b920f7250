//! [`LifecycleStore`] on SQLite: the erase, retention step, lease and
//! records of `storage/lifecycle.rs`, each one IMMEDIATE transaction.
//! `secure_delete` (set with the other PRAGMAs) zeroes what is deleted, so
//! erased text does not linger in free pages of the file.

use super::*;
use crate::domain::lifecycle::{self as rules, AnonRecord, Cutoffs, Removed};
use crate::storage::lifecycle::{
    Erase, Erased, Lease, LifecycleStore, ORPHANS_BY_DAY, Swept, TAKE_LEASE,
};

/// A record from its columns (id, day, final state, attempt, failure,
/// signal kinds), as both the kept records and the live parcels select them.
fn anon_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<AnonRecord> {
    let failure: Option<String> = r.get(4)?;
    let kinds: String = r.get(5)?;
    Ok(AnonRecord::of(
        r.get(0)?,
        r.get::<_, Day>(1)?.0,
        r.get(2)?,
        r.get(3)?,
        failure.as_deref(),
        &kinds,
    ))
}

/// The record a live parcel would leave, for the parcels `p` matching `cond`.
fn live_records(tx: &Connection, cond: &str, p: &[&dyn ToSql]) -> Result<Vec<AnonRecord>> {
    let sql = format!(
        "SELECT p.parcel_id, COALESCE(p.delivery_date, substr(p.created_at, 1, 10)), p.status, p.attempt,
           (SELECT c.reason FROM confirmations c
             WHERE c.parcel_id = p.parcel_id AND c.outcome = 'failed'
             ORDER BY c.received_at DESC, c.seq DESC LIMIT 1),
           COALESCE((SELECT group_concat(s.kind, ',') FROM signals s WHERE s.parcel_id = p.parcel_id), '')
         FROM parcels p WHERE {cond}"
    );
    let mut st = tx.prepare_cached(&sql)?;
    let rows = st.query_map(p, anon_record)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

fn keep_records(tx: &Connection, records: &[AnonRecord], now: DateTime<Utc>) -> Result<()> {
    let mut st = tx.prepare_cached(
        "INSERT INTO parcel_records(parcel_id, day, final_state, attempt, failure, signal_kinds, recorded_at)
         VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT(parcel_id, day) DO UPDATE SET final_state = excluded.final_state,
           attempt = excluded.attempt, failure = excluded.failure,
           signal_kinds = excluded.signal_kinds, recorded_at = excluded.recorded_at",
    )?;
    for r in records {
        st.execute(params![
            r.parcel_id,
            Day(r.day),
            r.final_state,
            r.attempt,
            r.failure.map(|f| f.as_str()),
            r.signal_kinds(),
            Ts(now)
        ])?;
    }
    Ok(())
}

/// Delete every row about the parcels in `ids` (a JSON list): stored
/// manifests that listed them, stops only they used (a shared stop loses
/// their name), their route entries, events, notices, confirmations,
/// signals, and the parcels themselves.
fn purge(tx: &Connection, ids: &str, removed: &mut Removed) -> Result<()> {
    const IDS: &str = "(SELECT value FROM json_each(?1))";
    let steps: [(&'static str, String); 10] = [
        (
            "manifests",
            format!(
                "DELETE FROM manifests WHERE (route_id, delivery_date) IN
                 (SELECT route_id, delivery_date FROM stop_parcels WHERE parcel_id IN {IDS})"
            ),
        ),
        (
            "stops",
            format!(
                "UPDATE stops SET recipient = '' WHERE (route_id, delivery_date, stop_id, recipient) IN
                 (SELECT sp.route_id, sp.delivery_date, sp.stop_id, p.recipient_name
                  FROM stop_parcels sp JOIN parcels p ON p.parcel_id = sp.parcel_id
                  WHERE sp.parcel_id IN {IDS})"
            ),
        ),
        (
            "stops",
            format!(
                "DELETE FROM stops WHERE (route_id, delivery_date, stop_id) IN
                 (SELECT sp.route_id, sp.delivery_date, sp.stop_id FROM stop_parcels sp
                  WHERE sp.parcel_id IN {IDS} AND NOT EXISTS (SELECT 1 FROM stop_parcels o
                    WHERE o.route_id = sp.route_id AND o.delivery_date = sp.delivery_date
                      AND o.stop_id = sp.stop_id AND o.parcel_id NOT IN {IDS}))"
            ),
        ),
        (
            "stop_parcels",
            format!("DELETE FROM stop_parcels WHERE parcel_id IN {IDS}"),
        ),
        (
            "manifest_items",
            format!("DELETE FROM manifest_items WHERE parcel_id IN {IDS}"),
        ),
        (
            "parcel_events",
            format!("DELETE FROM parcel_events WHERE parcel_id IN {IDS}"),
        ),
        (
            "notices",
            format!("DELETE FROM notices WHERE parcel_id IN {IDS}"),
        ),
        (
            "confirmations",
            format!("DELETE FROM confirmations WHERE parcel_id IN {IDS}"),
        ),
        (
            "signals",
            format!("DELETE FROM signals WHERE parcel_id IN {IDS}"),
        ),
        (
            "parcels",
            format!("DELETE FROM parcels WHERE parcel_id IN {IDS}"),
        ),
    ];
    for (i, (table, sql)) in steps.iter().enumerate() {
        let n = tx.prepare_cached(sql)?.execute([ids])?;
        // The recipient blanking (step 1) changes rows, it removes none.
        if i != 1 {
            removed.add(table, n as u64);
        }
    }
    Ok(())
}

/// Delete at most `limit` rows of `table` matching `cond` (parameters ?1, ?2).
fn sweep(
    tx: &Connection,
    table: &'static str,
    cond: &str,
    p: &[&dyn ToSql],
    limit: u32,
    removed: &mut Removed,
) -> Result<()> {
    let sql = format!(
        "DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} WHERE {cond} LIMIT {limit})"
    );
    let n = tx.prepare_cached(&sql)?.execute(p)?;
    removed.add(table, n as u64);
    Ok(())
}

#[async_trait::async_trait]
impl LifecycleStore for SqliteStorage {
    async fn erase_parcel(&self, erase: Erase, now: DateTime<Utc>) -> Result<Erased> {
        let Erase {
            parcel_id: id,
            force,
            today,
        } = erase;
        let erased = self
            .tx(move |tx| {
                let Some(facts) = one_parcel(tx, &id)? else {
                    return Err(StorageError::NotFound("no such parcel".into()));
                };
                rules::may_erase(facts.state, force)?;
                let mut records = live_records(tx, "p.parcel_id = ?1", &[&id])?;
                let record = records.pop().ok_or_else(|| {
                    StorageError::Backend("erase: the parcel's record is missing".into())
                })?;
                keep_records(tx, std::slice::from_ref(&record), now)?;
                let mut routes = Vec::new();
                {
                    let mut st = tx.prepare_cached(
                        "SELECT DISTINCT route_id, delivery_date FROM stop_parcels
                     WHERE parcel_id = ?1 AND delivery_date >= ?2",
                    )?;
                    let rows = st.query_map(params![id, Day(today)], |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, Day>(1)?.0))
                    })?;
                    for r in rows {
                        routes.push(r?);
                    }
                }
                let mut removed = Removed::default();
                purge(tx, &json_list(&[id.as_str()])?, &mut removed)?;
                for (route_id, date) in &routes {
                    tx.prepare_cached(
                        "UPDATE routes SET revision = revision + 1, updated_at = ?3
                     WHERE route_id = ?1 AND delivery_date = ?2",
                    )?
                    .execute(params![route_id, Day(*date), Ts(now)])?;
                }
                Ok(Erased {
                    record,
                    routes,
                    removed,
                })
            })
            .await?;
        self.checkpoint().await?;
        Ok(erased)
    }

    async fn retention_step(&self, cut: Cutoffs, limit: u32, now: DateTime<Utc>) -> Result<Swept> {
        let swept = self.tx(move |tx| {
            let purge_before = Day(cut.purge_before);
            let ids: Vec<String> = {
                let mut st = tx.prepare_cached(
                    "SELECT parcel_id FROM (SELECT parcel_id FROM parcels WHERE delivery_date < ?1 LIMIT ?2)
                     UNION ALL
                     SELECT parcel_id FROM (SELECT parcel_id FROM parcels
                       WHERE delivery_date IS NULL AND created_at < ?1 LIMIT ?2)
                     LIMIT ?2",
                )?;
                let rows = st.query_map(params![purge_before, limit], |r| r.get(0))?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            let mut removed = Removed::default();
            if !ids.is_empty() {
                let list = json_list(&ids)?;
                let records = live_records(
                    tx,
                    "p.parcel_id IN (SELECT value FROM json_each(?1))",
                    &[&list],
                )?;
                keep_records(tx, &records, now)?;
                purge(tx, &list, &mut removed)?;
            }
            let manifests_before = Day(cut.manifests_before);
            let notices_before = Day(cut.notices_before);
            let r = &mut removed;
            sweep(tx, "manifests", "delivery_date < ?1", &[&manifests_before], limit, r)?;
            sweep(
                tx,
                "notices",
                "delivery_date < ?1 AND status <> 'pending'",
                &[&notices_before],
                limit,
                r,
            )?;
            // Rows of old days left without their parcel (an upload for an
            // unknown parcel, a moved parcel's old route): only once every old
            // parcel is purged, as its record is taken from some of them.
            if ids.len() >= limit as usize {
                return Ok(Swept::more(removed, ids));
            }
            for table in ORPHANS_BY_DAY {
                sweep(tx, table, "delivery_date < ?1", &[&purge_before], limit, r)?;
            }
            sweep(tx, "signals", "day < ?1", &[&purge_before], limit, r)?;
            sweep(
                tx,
                "enrollments",
                "expires_at < ?1",
                &[&Ts(cut.enrollments_before)],
                limit,
                r,
            )?;
            Ok(Swept {
                removed,
                purged: ids,
            })
        })
        .await?;
        if !swept.purged.is_empty() {
            self.checkpoint().await?;
        }
        Ok(swept)
    }

    async fn take_lease(&self, lease: Lease, now: DateTime<Utc>) -> Result<bool> {
        let Lease { job, holder, until } = lease;
        self.tx(move |tx| {
            let n =
                tx.prepare_cached(TAKE_LEASE)?
                    .execute(params![job, holder, Ts(until), Ts(now)])?;
            Ok(n == 1)
        })
        .await
    }

    async fn records_between(&self, from: NaiveDate, to: NaiveDate) -> Result<Vec<AnonRecord>> {
        self.tx(move |tx| {
            let (f, t) = (Day(from), Day(to));
            let mut out = Vec::new();
            {
                let mut st = tx.prepare_cached(
                    "SELECT parcel_id, day, final_state, attempt, failure, signal_kinds
                     FROM parcel_records WHERE day BETWEEN ?1 AND ?2",
                )?;
                let rows = st.query_map(params![f, t], anon_record)?;
                for r in rows {
                    out.push(r?);
                }
            }
            out.extend(live_records(
                tx,
                "p.delivery_date BETWEEN ?1 AND ?2
                 OR (p.delivery_date IS NULL AND substr(p.created_at, 1, 10) BETWEEN ?1 AND ?2)",
                &[&f, &t],
            )?);
            Ok(out)
        })
        .await
    }
}

impl SqliteStorage {
    /// Copy the WAL into the database file and truncate it, so no old WAL
    /// frame keeps a page from before a purge (`secure_delete` zeroes the
    /// pages themselves).
    async fn checkpoint(&self) -> Result<()> {
        self.writer
            .alone(|conn| {
                conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
                Ok(())
            })
            .await
    }
}
