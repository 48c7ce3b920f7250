//! What the sync client remembers between runs: the last contact with the
//! server, the measured clock offset and the count of failed syncs.

use super::{Store, ts};
use crate::error::Error;
use chrono::{DateTime, Utc};
use std::str::FromStr;

impl Store {
    /// A number kept in `meta`; 0 when it was never set (or is unreadable).
    fn meta_number<T: FromStr + Default>(&self, key: &str) -> Result<T, Error> {
        Ok(self
            .meta(key)?
            .and_then(|v| v.parse().ok())
            .unwrap_or_default())
    }

    /// Notes a successful contact with the server (for `since_sync_ms`).
    pub fn mark_synced(&mut self, now: DateTime<Utc>) -> Result<(), Error> {
        Self::set_meta(&self.conn, "last_sync_at", &ts(now))
    }

    /// Server time minus device time, in milliseconds, as last measured.
    pub fn clock_offset_ms(&self) -> Result<i64, Error> {
        self.meta_number("clock_offset_ms")
    }

    pub fn set_clock_offset_ms(&mut self, offset: i64) -> Result<(), Error> {
        Self::set_meta(&self.conn, "clock_offset_ms", &offset.to_string())
    }

    /// Consecutive failed syncs, for backoff.
    pub fn sync_failures(&self) -> Result<u32, Error> {
        self.meta_number("sync_failures")
    }

    pub fn set_sync_failures(&mut self, n: u32) -> Result<(), Error> {
        Self::set_meta(&self.conn, "sync_failures", &n.to_string())
    }
}
