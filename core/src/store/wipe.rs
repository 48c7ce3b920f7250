//! Forgetting: past days once their confirmations are acknowledged, and
//! everything at sign-out.

use super::{Store, ts};
use crate::error::Error;
use chrono::{DateTime, Utc};
use rusqlite::{TransactionBehavior, params};

impl Store {
    /// Wipes every manifest whose validity ended before `now` once none of its
    /// day's confirmations waits for upload. Returns the days wiped.
    pub fn wipe_past(&mut self, now: DateTime<Utc>) -> Result<Vec<(String, String)>, Error> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let past: Vec<(String, String)> = {
            let mut stmt = tx.prepare(
                "SELECT m.route_id, m.delivery_date FROM manifests m
                 WHERE m.valid_until <= ?1
                   AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.delivery_date = m.delivery_date
                                   AND o.status = 'pending')",
            )?;
            let rows = stmt.query_map([ts(now)], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        for (route, date) in &past {
            tx.execute(
                "DELETE FROM stops WHERE route_id = ?1 AND delivery_date = ?2",
                params![route, date],
            )?;
            tx.execute(
                "DELETE FROM parcel_state WHERE delivery_date = ?2 AND parcel_id IN
                     (SELECT parcel_id FROM parcels WHERE route_id = ?1 AND delivery_date = ?2)",
                params![route, date],
            )?;
            tx.execute(
                "DELETE FROM parcels WHERE route_id = ?1 AND delivery_date = ?2",
                params![route, date],
            )?;
            tx.execute(
                "DELETE FROM manifests WHERE route_id = ?1 AND delivery_date = ?2",
                params![route, date],
            )?;
            tx.execute(
                "DELETE FROM outbox WHERE delivery_date = ?1 AND status = 'acknowledged'",
                params![date],
            )?;
        }
        tx.commit()?;
        Ok(past)
    }

    /// Deletes every row of every table (sign-out): the next user of this
    /// phone finds no stop, address or outcome. `secure_delete` zeroes the
    /// freed pages and the WAL is truncated, so nothing stays readable.
    pub fn wipe_all(&mut self) -> Result<(), Error> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.pragma_update(None, "defer_foreign_keys", "ON")?;
        let tables: Vec<String> = {
            let mut stmt = tx.prepare(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
            )?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        for t in &tables {
            tx.execute(&format!("DELETE FROM \"{}\"", t.replace('"', "\"\"")), [])?;
        }
        tx.commit()?;
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }
}
