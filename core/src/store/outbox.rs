//! The confirmation outbox: where an outcome becomes durable (`record`),
//! then waits for upload until the server acknowledges or refuses it.

use super::door::DoorParcel;
use super::{Store, parse_date, parse_ts, ts};
use crate::codes::Code;
use crate::confirmation::{CONFIRMATION_FORMAT, Confirmation, FailReason, Outcome, Verified};
use crate::envelope::{Envelope, SigningKey};
use crate::error::Error;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

/// A recorded outcome waiting in (or passed through) the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recorded {
    pub parcel_id: String,
    pub seq: u64,
    pub confirmation_id: String,
    pub outcome: Outcome,
}

/// One confirmation waiting to upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxItem {
    pub seq: u64,
    pub confirmation_id: String,
    pub envelope: Envelope,
    pub upload_tries: u32,
}

/// A confirmation the server refused for good: kept and shown, never retried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RejectedItem {
    pub seq: u64,
    pub confirmation_id: String,
    pub parcel_id: String,
    pub delivery_date: String,
    pub reason: String,
}

/// What `record` makes durable for one parcel: its outcome and what goes
/// with it. A delivery carries no reason; a failure carries no code and is
/// never verified.
#[derive(Debug, Clone, Copy)]
pub(super) struct Entry<'a> {
    outcome: Outcome,
    reason: Option<FailReason>,
    code: Option<&'a Code>,
    verified: Verified,
}

impl<'a> Entry<'a> {
    /// A handover, with the code that was checked (and how), if one was.
    pub(super) fn delivered(code: Option<&'a Code>, verified: Verified) -> Self {
        Self {
            outcome: Outcome::Delivered,
            reason: None,
            code,
            verified,
        }
    }

    /// A parcel not handed over, for `reason`.
    pub(super) fn failed(reason: FailReason) -> Self {
        Self {
            outcome: Outcome::Failed,
            reason: Some(reason),
            code: None,
            verified: Verified::None,
        }
    }
}

impl Store {
    /// Where an outcome becomes durable. Assigns the next `seq`, signs the
    /// confirmation, puts it in the outbox and marks the parcel, all inside
    /// the caller's write transaction: once that transaction commits (with
    /// `synchronous=FULL`, see `db`), the outcome survives a killed app or a
    /// power cut, and only then may the courier be told. Every delivery and
    /// failure goes through here; nothing else writes `outbox` rows.
    pub(super) fn record(
        tx: &Connection,
        p: &DoorParcel,
        parcel_id: &str,
        entry: Entry<'_>,
        now: DateTime<Utc>,
        device_key: &SigningKey,
    ) -> Result<Recorded, Error> {
        let Entry {
            outcome,
            reason,
            code,
            verified,
        } = entry;
        let device_id: String = tx
            .query_row("SELECT value FROM meta WHERE key = 'device_id'", [], |r| {
                r.get(0)
            })
            .optional()?
            .ok_or(Error::NotEnrolled)?;
        let seq: u64 = tx.query_row(
            "INSERT INTO meta (key, value) VALUES ('next_seq', '2')
             ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1
             RETURNING CAST(value AS INTEGER) - 1",
            [],
            |r| r.get(0),
        )?;
        let last_sync: Option<String> = tx
            .query_row(
                "SELECT value FROM meta WHERE key = 'last_sync_at'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        let since_sync_ms = match last_sync.as_deref().map(parse_ts).transpose()? {
            Some(t) => u64::try_from((now - t).num_milliseconds()).unwrap_or(0),
            None => 0,
        };
        let c = Confirmation {
            format: CONFIRMATION_FORMAT,
            confirmation_id: uuid::Uuid::new_v4(),
            device_id,
            seq,
            manifest_id: p.manifest_id.clone(),
            revision: p.revision,
            parcel_id: parcel_id.to_string(),
            delivery_date: parse_date(&p.delivery_date)?,
            attempt: p.attempt,
            outcome,
            reason,
            code: code.cloned(),
            verified,
            failed_attempts: p.failed_tries,
            recorded_at: now,
            since_sync_ms,
        };
        let env = c.seal(device_key)?;
        let env_json = serde_json::to_string(&env).map_err(|e| Error::Corrupt(e.to_string()))?;
        let cid = c.confirmation_id.to_string();
        tx.execute(
            "INSERT INTO outbox (seq, confirmation_id, parcel_id, delivery_date, envelope, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![seq, cid, parcel_id, p.delivery_date, env_json, ts(now)],
        )?;
        tx.execute(
            "INSERT INTO parcel_state (parcel_id, delivery_date, attempt, outcome, reason, verified, recorded_at, seq)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT(parcel_id, delivery_date, attempt) DO UPDATE SET
                 outcome = excluded.outcome, reason = excluded.reason, verified = excluded.verified,
                 recorded_at = excluded.recorded_at, seq = excluded.seq",
            params![
                parcel_id,
                p.delivery_date,
                p.attempt,
                outcome.as_str(),
                reason.map(FailReason::as_str),
                verified.as_str(),
                ts(now),
                seq
            ],
        )?;
        Ok(Recorded {
            parcel_id: parcel_id.to_string(),
            seq,
            confirmation_id: cid,
            outcome,
        })
    }

    /// Confirmations waiting to upload, oldest `seq` first.
    pub fn pending_confirmations(&self, limit: u32) -> Result<Vec<OutboxItem>, Error> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, confirmation_id, envelope, upload_tries FROM outbox
             WHERE status = 'pending' ORDER BY seq LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit], |r| {
            Ok((
                r.get::<_, u64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, u32>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, confirmation_id, env, upload_tries) = row?;
            let env =
                env.ok_or_else(|| Error::Corrupt(format!("outbox item {seq} lost its envelope")))?;
            let envelope: Envelope = serde_json::from_str(&env)
                .map_err(|_| Error::Corrupt(format!("outbox item {seq} is unreadable")))?;
            out.push(OutboxItem {
                seq,
                confirmation_id,
                envelope,
                upload_tries,
            });
        }
        Ok(out)
    }

    /// Marks confirmations as acknowledged by the server and drops their
    /// envelopes (which may hold a code): the server has them now.
    pub fn acknowledge(
        &mut self,
        confirmation_ids: &[String],
        now: DateTime<Utc>,
    ) -> Result<u32, Error> {
        let n = self.in_write_tx(|tx| {
            let mut n = 0;
            for id in confirmation_ids {
                n += tx.execute(
                    "UPDATE outbox SET status = 'acknowledged', envelope = NULL, acked_at = ?2
                     WHERE confirmation_id = ?1 AND status = 'pending'",
                    params![id, ts(now)],
                )?;
            }
            Ok(n)
        })?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// Records a server rejection. A permanent one is kept and shown and no
    /// longer uploaded; a temporary one stays pending with its try counted.
    pub fn reject(
        &mut self,
        confirmation_id: &str,
        reason: &str,
        permanent: bool,
    ) -> Result<(), Error> {
        if permanent {
            self.conn.execute(
                "UPDATE outbox SET status = 'rejected', reject_reason = ?2, upload_tries = upload_tries + 1
                 WHERE confirmation_id = ?1 AND status = 'pending'",
                params![confirmation_id, reason],
            )?;
        } else {
            self.conn.execute(
                "UPDATE outbox SET reject_reason = ?2, upload_tries = upload_tries + 1
                 WHERE confirmation_id = ?1 AND status = 'pending'",
                params![confirmation_id, reason],
            )?;
        }
        Ok(())
    }

    /// Confirmations the server refused for good.
    pub fn rejected_confirmations(&self) -> Result<Vec<RejectedItem>, Error> {
        let mut stmt = self.conn.prepare(
            "SELECT seq, confirmation_id, parcel_id, delivery_date, COALESCE(reject_reason, '')
             FROM outbox WHERE status = 'rejected' ORDER BY seq",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(RejectedItem {
                seq: r.get(0)?,
                confirmation_id: r.get(1)?,
                parcel_id: r.get(2)?,
                delivery_date: r.get(3)?,
                reason: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
