//! The durable handset store: the manifest, what happened at each door, and
//! the confirmation outbox. One connection, the only writer; every recorded
//! outcome and every wrong try is committed before the caller sees it.
//!
//! One file per concern, each adding its methods to [`Store`]:
//! - `identity`: who the handset is, its pinned server keys and server;
//! - `install`: refusing or installing a signed manifest;
//! - `door`: code checks, wrong tries, locks, handovers and failures;
//! - `outbox`: `record` (where an outcome becomes durable) and uploads;
//! - `view`: the stops and counts the courier sees;
//! - `wipe`: past days and sign-out;
//! - `sync_state`: what the sync client remembers between runs;
//! - `db` opens the file (every PRAGMA), [`schema`] migrates it.

pub mod db;
mod door;
mod identity;
mod install;
mod outbox;
pub mod schema;
mod sync_state;
mod view;
mod wipe;

pub use door::VerifyOutcome;
pub use identity::Identity;
pub use install::Installed;
pub use outbox::{OutboxItem, Recorded, RejectedItem};
pub use view::{ParcelState, ParcelView, Status, StopView};

use crate::error::Error;
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use std::path::Path;

/// The handset's SQLite store.
pub struct Store {
    conn: Connection,
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn parse_ts(s: &str) -> Result<DateTime<Utc>, Error> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| Error::Corrupt(format!("bad timestamp in the store: {s}")))
}

fn parse_date(s: &str) -> Result<NaiveDate, Error> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|_| Error::Corrupt(format!("bad date in the store: {s}")))
}

impl Store {
    /// Opens or creates the store at `path` and applies migrations.
    pub fn open(path: &Path) -> Result<Self, Error> {
        Ok(Self {
            conn: db::open(path)?,
        })
    }

    /// Read access for tests and diagnostics.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Runs `f` in one immediate write transaction and commits it before
    /// returning, so nothing `f` wrote is reported before it is durable. If
    /// `f` fails, the transaction is rolled back and nothing it wrote stays.
    fn in_write_tx<T>(
        &mut self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    fn meta(&self, key: &str) -> Result<Option<String>, Error> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    fn set_meta(conn: &Connection, key: &str, value: &str) -> Result<(), Error> {
        conn.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }
}
