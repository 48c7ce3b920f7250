//! The durable handset store: the manifest, what happened at each door, and
//! the confirmation outbox. One connection, the only writer; every recorded
//! outcome and every wrong try is committed before the caller sees it.

pub mod db;
pub mod schema;

use crate::codes::{self, Code, SALT_LEN};
use crate::confirmation::{CONFIRMATION_FORMAT, Confirmation, FailReason, Outcome, Verified};
use crate::envelope::{Envelope, SigningKey, VerifyingKey};
use crate::error::Error;
use crate::manifest;
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;
use std::path::Path;

/// Who this handset is, set at enrollment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub device_id: String,
    pub courier_id: String,
    pub server_keys: Vec<VerifyingKey>,
}

/// What installing a manifest did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum Installed {
    /// A new revision replaced the held one (or none was held).
    New {
        manifest_id: String,
        revision: u64,
        stops: usize,
        parcels: usize,
    },
    /// The same revision is already held; nothing changed.
    Unchanged { manifest_id: String, revision: u64 },
}

/// A parcel's state as the courier sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ParcelState {
    Pending,
    Delivered,
    Failed,
    Locked,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParcelView {
    pub parcel_id: String,
    pub requires_code: bool,
    pub attempt: u32,
    pub state: ParcelState,
    pub failed_tries: u32,
    pub attempts_left: u32,
    pub reason: Option<FailReason>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StopView {
    pub route_id: String,
    pub delivery_date: NaiveDate,
    pub stop_id: String,
    pub sequence: u32,
    pub address: String,
    pub recipient: String,
    pub parcels: Vec<ParcelView>,
}

/// The result of a code check at the door. A rejected try is already durable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum VerifyOutcome {
    Accepted {
        parcel_id: String,
        seq: u64,
        verified: Verified,
    },
    Rejected {
        parcel_id: String,
        attempts_left: u32,
        verified: Verified,
    },
    Locked {
        parcel_id: String,
        verified: Verified,
    },
}

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

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Status {
    pub device_id: Option<String>,
    pub courier_id: Option<String>,
    pub manifests: u32,
    pub parcels_pending: u32,
    pub parcels_delivered: u32,
    pub parcels_failed: u32,
    pub parcels_locked: u32,
    pub outbox_pending: u32,
    pub outbox_rejected: u32,
    pub last_sync_at: Option<String>,
    pub next_seq: u64,
}

/// The handset's SQLite store.
pub struct Store {
    conn: Connection,
}

/// Everything the door needs to know about one parcel, read in the write transaction.
struct DoorParcel {
    delivery_date: String,
    manifest_id: String,
    revision: u64,
    requires_code: bool,
    attempt: u32,
    salt: Option<Vec<u8>>,
    tag: Option<u32>,
    tag_bits: u8,
    max_attempts: u32,
    code_digits: u8,
    valid_from: String,
    valid_until: String,
    failed_tries: u32,
    outcome: Option<String>,
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

    /// The enrolled identity, if any.
    pub fn identity(&self) -> Result<Option<Identity>, Error> {
        let (Some(device_id), Some(courier_id)) =
            (self.meta("device_id")?, self.meta("courier_id")?)
        else {
            return Ok(None);
        };
        Ok(Some(Identity {
            device_id,
            courier_id,
            server_keys: self.server_keys()?,
        }))
    }

    pub fn server_keys(&self) -> Result<Vec<VerifyingKey>, Error> {
        let mut stmt = self
            .conn
            .prepare("SELECT kid, public_key FROM server_keys ORDER BY kid")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?;
        let mut keys = Vec::new();
        for row in rows {
            let (kid, pk) = row?;
            let public: [u8; 32] = pk
                .try_into()
                .map_err(|_| Error::Corrupt("a pinned server key is not 32 bytes".into()))?;
            keys.push(VerifyingKey { kid, public });
        }
        Ok(keys)
    }

    /// Records who this handset is. Replaces any earlier identity and its keys.
    pub fn set_identity(&mut self, id: &Identity) -> Result<(), Error> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        Self::set_meta(&tx, "device_id", &id.device_id)?;
        Self::set_meta(&tx, "courier_id", &id.courier_id)?;
        tx.execute("DELETE FROM server_keys", [])?;
        for k in &id.server_keys {
            tx.execute(
                "INSERT INTO server_keys (kid, public_key) VALUES (?1, ?2)",
                params![k.kid, k.public.to_vec()],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Adds server keys learned later (rotation); existing pins stay.
    pub fn add_server_keys(&mut self, keys: &[VerifyingKey]) -> Result<(), Error> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        for k in keys {
            tx.execute(
                "INSERT OR IGNORE INTO server_keys (kid, public_key) VALUES (?1, ?2)",
                params![k.kid, k.public.to_vec()],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Notes a successful contact with the server (for `since_sync_ms`).
    pub fn mark_synced(&mut self, now: DateTime<Utc>) -> Result<(), Error> {
        Self::set_meta(&self.conn, "last_sync_at", &ts(now))
    }

    /// Server time minus device time, in milliseconds, as last measured.
    pub fn clock_offset_ms(&self) -> Result<i64, Error> {
        Ok(self
            .meta("clock_offset_ms")?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    pub fn set_clock_offset_ms(&mut self, offset: i64) -> Result<(), Error> {
        Self::set_meta(&self.conn, "clock_offset_ms", &offset.to_string())
    }

    /// Verifies and installs a signed manifest in one transaction.
    ///
    /// Refuses, each with its own error: a bad signature or unknown key, a
    /// manifest for another device, an older revision than held (rollback), an
    /// expired manifest, and an unknown format.
    pub fn install_manifest(
        &mut self,
        env: &Envelope,
        now: DateTime<Utc>,
    ) -> Result<Installed, Error> {
        let id = self.identity()?.ok_or(Error::NotEnrolled)?;
        let m = manifest::open_manifest(env, &id.server_keys)?;
        if m.device_id != id.device_id {
            return Err(Error::WrongDevice {
                manifest_device: m.device_id,
            });
        }
        let date = codes::date_str(m.delivery_date);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let held: Option<(u64, String)> = tx
            .query_row(
                "SELECT r.revision, COALESCE(m.manifest_id, '') FROM revisions r
                 LEFT JOIN manifests m USING (route_id, delivery_date)
                 WHERE r.route_id = ?1 AND r.delivery_date = ?2",
                params![m.route_id, date],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        if let Some((held_rev, held_id)) = &held {
            if m.revision < *held_rev {
                return Err(Error::Rollback {
                    held: *held_rev,
                    offered: m.revision,
                });
            }
            if m.revision == *held_rev {
                if *held_id == m.manifest_id {
                    return Ok(Installed::Unchanged {
                        manifest_id: m.manifest_id,
                        revision: m.revision,
                    });
                }
                // Same revision, other content: only a newer revision may replace.
                return Err(Error::Rollback {
                    held: *held_rev,
                    offered: m.revision,
                });
            }
        }
        if m.valid_until <= now {
            return Err(Error::ManifestExpired);
        }
        tx.execute(
            "DELETE FROM stops WHERE route_id = ?1 AND delivery_date = ?2",
            params![m.route_id, date],
        )?;
        tx.execute(
            "DELETE FROM parcels WHERE route_id = ?1 AND delivery_date = ?2",
            params![m.route_id, date],
        )?;
        tx.execute(
            "INSERT OR REPLACE INTO manifests (route_id, delivery_date, manifest_id, revision, courier_id,
                 valid_from, valid_until, tag_bits, max_attempts, code_digits, installed_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                m.route_id,
                date,
                m.manifest_id,
                m.revision,
                m.courier_id,
                ts(m.valid_from),
                ts(m.valid_until),
                m.tag_bits,
                m.max_attempts,
                m.code_digits,
                ts(now)
            ],
        )?;
        tx.execute(
            "INSERT INTO revisions (route_id, delivery_date, revision) VALUES (?1, ?2, ?3)
             ON CONFLICT(route_id, delivery_date) DO UPDATE SET revision = excluded.revision",
            params![m.route_id, date, m.revision],
        )?;
        let mut parcels = 0usize;
        {
            let mut ins_stop = tx.prepare(
                "INSERT INTO stops (route_id, delivery_date, stop_id, sequence, address, recipient)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            let mut ins_parcel = tx.prepare(
                "INSERT OR REPLACE INTO parcels (delivery_date, parcel_id, route_id, stop_id, requires_code,
                     attempt, salt, tag) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            for s in &m.stops {
                ins_stop.execute(params![
                    m.route_id,
                    date,
                    s.stop_id,
                    s.sequence,
                    s.address,
                    s.recipient
                ])?;
                for p in &s.parcels {
                    let salt = p.salt_bytes().map(|b| b.to_vec());
                    ins_parcel.execute(params![
                        date,
                        p.parcel_id,
                        m.route_id,
                        s.stop_id,
                        p.requires_code,
                        p.attempt,
                        salt,
                        p.tag
                    ])?;
                    parcels += 1;
                }
            }
        }
        tx.commit()?;
        Ok(Installed::New {
            manifest_id: m.manifest_id,
            revision: m.revision,
            stops: m.stops.len(),
            parcels,
        })
    }

    /// The stops of every manifest valid at `now`, in route order, with each
    /// parcel's state.
    pub fn stops(&self, now: DateTime<Utc>) -> Result<Vec<StopView>, Error> {
        let now_s = ts(now);
        let mut stmt = self.conn.prepare(
            "SELECT s.route_id, s.delivery_date, s.stop_id, s.sequence, s.address, s.recipient,
                    p.parcel_id, p.requires_code, p.attempt, m.max_attempts,
                    COALESCE(st.failed_tries, 0), st.outcome, st.reason
             FROM manifests m
             JOIN stops s ON s.route_id = m.route_id AND s.delivery_date = m.delivery_date
             LEFT JOIN parcels p ON p.route_id = s.route_id AND p.delivery_date = s.delivery_date
                                 AND p.stop_id = s.stop_id
             LEFT JOIN parcel_state st ON st.parcel_id = p.parcel_id AND st.delivery_date = p.delivery_date
                                      AND st.attempt = p.attempt
             WHERE m.valid_from <= ?1 AND m.valid_until > ?1
             ORDER BY s.delivery_date, s.route_id, s.sequence, s.stop_id, p.parcel_id",
        )?;
        let mut rows = stmt.query([now_s])?;
        let mut out: Vec<StopView> = Vec::new();
        while let Some(r) = rows.next()? {
            let route_id: String = r.get(0)?;
            let date: String = r.get(1)?;
            let stop_id: String = r.get(2)?;
            let same = out.last().is_some_and(|s| {
                s.route_id == route_id
                    && s.stop_id == stop_id
                    && codes::date_str(s.delivery_date) == date
            });
            if !same {
                out.push(StopView {
                    route_id,
                    delivery_date: parse_date(&date)?,
                    stop_id,
                    sequence: r.get(3)?,
                    address: r.get(4)?,
                    recipient: r.get(5)?,
                    parcels: Vec::new(),
                });
            }
            let Some(parcel_id) = r.get::<_, Option<String>>(6)? else {
                continue;
            };
            let max: u32 = r.get(9)?;
            let tries: u32 = r.get(10)?;
            let outcome: Option<String> = r.get(11)?;
            let reason: Option<String> = r.get(12)?;
            let state = match outcome.as_deref() {
                Some("delivered") => ParcelState::Delivered,
                Some(_) => ParcelState::Failed,
                None if tries >= max => ParcelState::Locked,
                None => ParcelState::Pending,
            };
            if let Some(stop) = out.last_mut() {
                stop.parcels.push(ParcelView {
                    parcel_id,
                    requires_code: r.get(7)?,
                    attempt: r.get(8)?,
                    state,
                    failed_tries: tries,
                    attempts_left: max.saturating_sub(tries),
                    reason: reason.as_deref().and_then(FailReason::parse),
                });
            }
        }
        Ok(out)
    }

    /// The parcel as held in a manifest valid at `now`, read inside `tx`.
    fn door_parcel(
        tx: &Connection,
        parcel_id: &str,
        now: DateTime<Utc>,
    ) -> Result<DoorParcel, Error> {
        let mut stmt = tx.prepare_cached(
            "SELECT p.delivery_date, m.manifest_id, m.revision, p.requires_code, p.attempt,
                    p.salt, p.tag, m.tag_bits, m.max_attempts, m.code_digits, m.valid_from, m.valid_until,
                    COALESCE(st.failed_tries, 0), st.outcome
             FROM parcels p
             JOIN manifests m ON m.route_id = p.route_id AND m.delivery_date = p.delivery_date
             LEFT JOIN parcel_state st ON st.parcel_id = p.parcel_id AND st.delivery_date = p.delivery_date
                                      AND st.attempt = p.attempt
             WHERE p.parcel_id = ?1
             ORDER BY p.delivery_date DESC",
        )?;
        let rows = stmt.query_map([parcel_id], |r| {
            Ok(DoorParcel {
                delivery_date: r.get(0)?,
                manifest_id: r.get(1)?,
                revision: r.get(2)?,
                requires_code: r.get(3)?,
                attempt: r.get(4)?,
                salt: r.get(5)?,
                tag: r.get(6)?,
                tag_bits: r.get(7)?,
                max_attempts: r.get(8)?,
                code_digits: r.get(9)?,
                valid_from: r.get(10)?,
                valid_until: r.get(11)?,
                failed_tries: r.get(12)?,
                outcome: r.get(13)?,
            })
        })?;
        let mut found_any = false;
        let mut not_yet = false;
        for row in rows {
            let p = row?;
            found_any = true;
            let (from, until) = (parse_ts(&p.valid_from)?, parse_ts(&p.valid_until)?);
            if from <= now && now < until {
                return Ok(p);
            }
            not_yet |= now < from;
        }
        match (found_any, not_yet) {
            (false, _) => Err(Error::UnknownParcel(parcel_id.to_string())),
            (true, true) => Err(Error::ManifestNotYetValid),
            (true, false) => Err(Error::ManifestExpired),
        }
    }

    /// The parcel, if a code can be checked for it now: it needs one, has no
    /// outcome yet and is not locked.
    fn door_for_code(
        tx: &Connection,
        parcel_id: &str,
        now: DateTime<Utc>,
    ) -> Result<DoorParcel, Error> {
        let p = Self::door_parcel(tx, parcel_id, now)?;
        if !p.requires_code {
            return Err(Error::NoCodeRequired(parcel_id.to_string()));
        }
        Self::check_open(&p, parcel_id)?;
        Ok(p)
    }

    /// The code length the parcel's manifest expects, so input can be parsed
    /// before any try is counted. Fails if no code can be checked now.
    pub fn code_digits(&self, parcel_id: &str, now: DateTime<Utc>) -> Result<u8, Error> {
        Ok(Self::door_for_code(&self.conn, parcel_id, now)?.code_digits)
    }

    /// Locks a parcel because the server says it is locked (its count is authoritative).
    pub fn lock_parcel(&mut self, parcel_id: &str, now: DateTime<Utc>) -> Result<(), Error> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let p = Self::door_parcel(&tx, parcel_id, now)?;
        tx.execute(
            "INSERT INTO parcel_state (parcel_id, delivery_date, attempt, failed_tries) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(parcel_id, delivery_date, attempt)
             DO UPDATE SET failed_tries = MAX(failed_tries, excluded.failed_tries)",
            params![parcel_id, p.delivery_date, p.attempt, p.max_attempts],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The server this handset enrolled with.
    pub fn server_url(&self) -> Result<Option<String>, Error> {
        self.meta("server_url")
    }

    pub fn set_server_url(&mut self, url: &str) -> Result<(), Error> {
        Self::set_meta(&self.conn, "server_url", url)
    }

    /// The held manifest for a day as an HTTP entity tag, for `If-None-Match`.
    pub fn etag_for(&self, date: NaiveDate) -> Result<Option<String>, Error> {
        Ok(self
            .conn
            .query_row(
                "SELECT manifest_id, revision FROM manifests WHERE delivery_date = ?1
                 ORDER BY revision DESC LIMIT 1",
                [codes::date_str(date)],
                |r| {
                    Ok(format!(
                        "\"{}:{}\"",
                        r.get::<_, String>(0)?,
                        r.get::<_, u64>(1)?
                    ))
                },
            )
            .optional()?)
    }

    /// Consecutive failed syncs, for backoff.
    pub fn sync_failures(&self) -> Result<u32, Error> {
        Ok(self
            .meta("sync_failures")?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    pub fn set_sync_failures(&mut self, n: u32) -> Result<(), Error> {
        Self::set_meta(&self.conn, "sync_failures", &n.to_string())
    }

    /// Checks `code` against the parcel's offline tag. A wrong try is committed
    /// (with `synchronous=FULL`) before this returns; a match records the
    /// delivery and its signed confirmation in the same transaction.
    pub fn verify_offline(
        &mut self,
        parcel_id: &str,
        code: &Code,
        now: DateTime<Utc>,
        device_key: &SigningKey,
    ) -> Result<VerifyOutcome, Error> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let p = Self::door_for_code(&tx, parcel_id, now)?;
        if code.len() != usize::from(p.code_digits) {
            return Err(Error::Input(crate::input::InputError::WrongLength {
                expected: p.code_digits,
                got: code.len(),
            }));
        }
        let date = parse_date(&p.delivery_date)?;
        let salt: [u8; SALT_LEN] = p
            .salt
            .as_deref()
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| Error::Corrupt(format!("parcel {parcel_id} has no salt")))?;
        let stored = p
            .tag
            .ok_or_else(|| Error::Corrupt(format!("parcel {parcel_id} has no tag")))?;
        let tag = codes::offline_tag(&salt, parcel_id, date, code, p.tag_bits)
            .map_err(|_| Error::Corrupt("bad tag width in the store".into()))?;
        let outcome = if codes::tag_eq(tag, stored) {
            let rec = Self::record(
                &tx,
                &p,
                parcel_id,
                Outcome::Delivered,
                None,
                Some(code),
                Verified::Offline,
                now,
                device_key,
            )?;
            VerifyOutcome::Accepted {
                parcel_id: parcel_id.to_string(),
                seq: rec.seq,
                verified: Verified::Offline,
            }
        } else {
            Self::count_wrong_try(&tx, &p, parcel_id, Verified::Offline)?
        };
        tx.commit()?;
        Ok(outcome)
    }

    /// Records the server's answer to an online verify: a delivery (with the
    /// code, `verified: online`) or a wrong try counted locally as well.
    pub fn record_online_result(
        &mut self,
        parcel_id: &str,
        code: &Code,
        accepted: bool,
        now: DateTime<Utc>,
        device_key: &SigningKey,
    ) -> Result<VerifyOutcome, Error> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let p = Self::door_for_code(&tx, parcel_id, now)?;
        let outcome = if accepted {
            let rec = Self::record(
                &tx,
                &p,
                parcel_id,
                Outcome::Delivered,
                None,
                Some(code),
                Verified::Online,
                now,
                device_key,
            )?;
            VerifyOutcome::Accepted {
                parcel_id: parcel_id.to_string(),
                seq: rec.seq,
                verified: Verified::Online,
            }
        } else {
            Self::count_wrong_try(&tx, &p, parcel_id, Verified::Online)?
        };
        tx.commit()?;
        Ok(outcome)
    }

    /// Hands over a parcel that needs no code.
    pub fn deliver_without_code(
        &mut self,
        parcel_id: &str,
        now: DateTime<Utc>,
        device_key: &SigningKey,
    ) -> Result<Recorded, Error> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let p = Self::door_parcel(&tx, parcel_id, now)?;
        if p.requires_code {
            return Err(Error::CodeRequired(parcel_id.to_string()));
        }
        Self::check_open(&p, parcel_id)?;
        let rec = Self::record(
            &tx,
            &p,
            parcel_id,
            Outcome::Delivered,
            None,
            None,
            Verified::None,
            now,
            device_key,
        )?;
        tx.commit()?;
        Ok(rec)
    }

    /// Records that the parcel was not handed over. A locked parcel can only
    /// fail as `locked_out`, and only a locked parcel can.
    pub fn record_failure(
        &mut self,
        parcel_id: &str,
        reason: FailReason,
        now: DateTime<Utc>,
        device_key: &SigningKey,
    ) -> Result<Recorded, Error> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let p = Self::door_parcel(&tx, parcel_id, now)?;
        if let Some(o) = &p.outcome {
            return Err(Error::AlreadyRecorded {
                parcel_id: parcel_id.to_string(),
                outcome: o.clone(),
            });
        }
        let locked = p.requires_code && p.failed_tries >= p.max_attempts;
        if locked != (reason == FailReason::LockedOut) {
            return Err(Error::ReasonNotAllowed {
                reason: reason.as_str(),
                locked,
            });
        }
        let rec = Self::record(
            &tx,
            &p,
            parcel_id,
            Outcome::Failed,
            Some(reason),
            None,
            Verified::None,
            now,
            device_key,
        )?;
        tx.commit()?;
        Ok(rec)
    }

    fn check_open(p: &DoorParcel, parcel_id: &str) -> Result<(), Error> {
        if let Some(o) = &p.outcome {
            return Err(Error::AlreadyRecorded {
                parcel_id: parcel_id.to_string(),
                outcome: o.clone(),
            });
        }
        if p.requires_code && p.failed_tries >= p.max_attempts {
            return Err(Error::Locked(parcel_id.to_string()));
        }
        Ok(())
    }

    fn count_wrong_try(
        tx: &Connection,
        p: &DoorParcel,
        parcel_id: &str,
        verified: Verified,
    ) -> Result<VerifyOutcome, Error> {
        let tries: u32 = tx.query_row(
            "INSERT INTO parcel_state (parcel_id, delivery_date, attempt, failed_tries) VALUES (?1, ?2, ?3, 1)
             ON CONFLICT(parcel_id, delivery_date, attempt) DO UPDATE SET failed_tries = failed_tries + 1
             RETURNING failed_tries",
            params![parcel_id, p.delivery_date, p.attempt],
            |r| r.get(0),
        )?;
        Ok(if tries >= p.max_attempts {
            VerifyOutcome::Locked {
                parcel_id: parcel_id.to_string(),
                verified,
            }
        } else {
            VerifyOutcome::Rejected {
                parcel_id: parcel_id.to_string(),
                attempts_left: p.max_attempts - tries,
                verified,
            }
        })
    }

    /// Assigns the next `seq`, signs the confirmation, puts it in the outbox
    /// and marks the parcel, all inside the caller's transaction.
    #[allow(clippy::too_many_arguments)]
    fn record(
        tx: &Connection,
        p: &DoorParcel,
        parcel_id: &str,
        outcome: Outcome,
        reason: Option<FailReason>,
        code: Option<&Code>,
        verified: Verified,
        now: DateTime<Utc>,
        device_key: &SigningKey,
    ) -> Result<Recorded, Error> {
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
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut n = 0;
        for id in confirmation_ids {
            n += tx.execute(
                "UPDATE outbox SET status = 'acknowledged', envelope = NULL, acked_at = ?2
                 WHERE confirmation_id = ?1 AND status = 'pending'",
                params![id, ts(now)],
            )?;
        }
        tx.commit()?;
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

    pub fn status(&self, now: DateTime<Utc>) -> Result<Status, Error> {
        let count =
            |sql: &str| -> Result<u32, Error> { Ok(self.conn.query_row(sql, [], |r| r.get(0))?) };
        let mut s = Status {
            device_id: self.meta("device_id")?,
            courier_id: self.meta("courier_id")?,
            manifests: count("SELECT COUNT(*) FROM manifests")?,
            outbox_pending: count("SELECT COUNT(*) FROM outbox WHERE status = 'pending'")?,
            outbox_rejected: count("SELECT COUNT(*) FROM outbox WHERE status = 'rejected'")?,
            last_sync_at: self.meta("last_sync_at")?,
            next_seq: self
                .meta("next_seq")?
                .and_then(|v| v.parse().ok())
                .unwrap_or(1),
            ..Status::default()
        };
        for stop in self.stops(now)? {
            for p in stop.parcels {
                match p.state {
                    ParcelState::Pending => s.parcels_pending += 1,
                    ParcelState::Delivered => s.parcels_delivered += 1,
                    ParcelState::Failed => s.parcels_failed += 1,
                    ParcelState::Locked => s.parcels_locked += 1,
                }
            }
        }
        Ok(s)
    }
}
