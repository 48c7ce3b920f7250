//! At the door: checking a code, counting a wrong try, locking, handing
//! over and failing. Each check reads the parcel and writes its result in one
//! write transaction, so a try is counted before its answer is shown.

use super::outbox::{Entry, Recorded};
use super::{Store, parse_date, parse_ts};
use crate::codes::{self, Code, SALT_LEN};
use crate::confirmation::{FailReason, Verified};
use crate::envelope::SigningKey;
use crate::error::Error;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};
use serde::Serialize;

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

/// Everything the door needs to know about one parcel, read in the write transaction.
pub(super) struct DoorParcel {
    pub(super) delivery_date: String,
    pub(super) manifest_id: String,
    pub(super) revision: u64,
    pub(super) requires_code: bool,
    pub(super) attempt: u32,
    pub(super) salt: Option<Vec<u8>>,
    pub(super) tag: Option<u32>,
    pub(super) tag_bits: u8,
    pub(super) max_attempts: u32,
    pub(super) code_digits: u8,
    pub(super) valid_from: String,
    pub(super) valid_until: String,
    pub(super) failed_tries: u32,
    pub(super) outcome: Option<String>,
    /// The customer reported they did not order it: never verified or handed over.
    pub(super) hold: bool,
}

impl DoorParcel {
    /// Out of tries: only a parcel that needs a code can be locked.
    fn locked(&self) -> bool {
        self.requires_code && self.failed_tries >= self.max_attempts
    }
}

impl Store {
    /// The parcel as held in a manifest valid at `now`, read inside `tx`.
    fn door_parcel(
        tx: &Connection,
        parcel_id: &str,
        now: DateTime<Utc>,
    ) -> Result<DoorParcel, Error> {
        let mut stmt = tx.prepare_cached(
            "SELECT p.delivery_date, m.manifest_id, m.revision, p.requires_code, p.attempt,
                    p.salt, p.tag, m.tag_bits, m.max_attempts, m.code_digits, m.valid_from, m.valid_until,
                    COALESCE(st.failed_tries, 0), st.outcome, p.hold
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
                hold: r.get(14)?,
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
    /// outcome yet, is not on hold and is not locked.
    fn door_for_code(
        tx: &Connection,
        parcel_id: &str,
        now: DateTime<Utc>,
    ) -> Result<DoorParcel, Error> {
        let p = Self::door_parcel(tx, parcel_id, now)?;
        Self::refuse_held(&p, parcel_id)?;
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
        self.in_write_tx(|tx| {
            let p = Self::door_parcel(tx, parcel_id, now)?;
            tx.execute(
                "INSERT INTO parcel_state (parcel_id, delivery_date, attempt, failed_tries) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(parcel_id, delivery_date, attempt)
                 DO UPDATE SET failed_tries = MAX(failed_tries, excluded.failed_tries)",
                params![parcel_id, p.delivery_date, p.attempt, p.max_attempts],
            )?;
            Ok(())
        })
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
        self.in_write_tx(|tx| {
            let p = Self::door_for_code(tx, parcel_id, now)?;
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
            let matched = codes::tag_eq(tag, stored);
            Self::settle_try(
                tx,
                &p,
                parcel_id,
                code,
                matched,
                Verified::Offline,
                now,
                device_key,
            )
        })
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
        self.in_write_tx(|tx| {
            let p = Self::door_for_code(tx, parcel_id, now)?;
            Self::settle_try(
                tx,
                &p,
                parcel_id,
                code,
                accepted,
                Verified::Online,
                now,
                device_key,
            )
        })
    }

    /// Hands over a parcel that needs no code.
    pub fn deliver_without_code(
        &mut self,
        parcel_id: &str,
        now: DateTime<Utc>,
        device_key: &SigningKey,
    ) -> Result<Recorded, Error> {
        self.in_write_tx(|tx| {
            let p = Self::door_parcel(tx, parcel_id, now)?;
            Self::refuse_held(&p, parcel_id)?;
            if p.requires_code {
                return Err(Error::CodeRequired(parcel_id.to_string()));
            }
            Self::check_open(&p, parcel_id)?;
            let entry = Entry::delivered(None, Verified::None);
            Self::record(tx, &p, parcel_id, entry, now, device_key)
        })
    }

    /// Records that the parcel was not handed over. A locked parcel can only
    /// fail as `locked_out`, and only a locked parcel can. A held parcel can
    /// only fail as `refused` (or `locked_out`, if it was locked before the
    /// hold came).
    pub fn record_failure(
        &mut self,
        parcel_id: &str,
        reason: FailReason,
        now: DateTime<Utc>,
        device_key: &SigningKey,
    ) -> Result<Recorded, Error> {
        self.in_write_tx(|tx| {
            let p = Self::door_parcel(tx, parcel_id, now)?;
            Self::refuse_recorded(&p, parcel_id)?;
            let locked = p.locked();
            if p.hold {
                let allowed =
                    reason == FailReason::Refused || (locked && reason == FailReason::LockedOut);
                if !allowed {
                    return Err(Error::Held(parcel_id.to_string()));
                }
            } else if locked != (reason == FailReason::LockedOut) {
                return Err(Error::ReasonNotAllowed {
                    reason: reason.as_str(),
                    locked,
                });
            }
            Self::record(tx, &p, parcel_id, Entry::failed(reason), now, device_key)
        })
    }

    /// A held parcel with no outcome yet is refused before anything else is
    /// said about it: the courier must not hand it over.
    fn refuse_held(p: &DoorParcel, parcel_id: &str) -> Result<(), Error> {
        if p.hold && p.outcome.is_none() {
            return Err(Error::Held(parcel_id.to_string()));
        }
        Ok(())
    }

    /// A parcel whose outcome is recorded gets no second one.
    fn refuse_recorded(p: &DoorParcel, parcel_id: &str) -> Result<(), Error> {
        if let Some(o) = &p.outcome {
            return Err(Error::AlreadyRecorded {
                parcel_id: parcel_id.to_string(),
                outcome: o.clone(),
            });
        }
        Ok(())
    }

    fn check_open(p: &DoorParcel, parcel_id: &str) -> Result<(), Error> {
        Self::refuse_recorded(p, parcel_id)?;
        Self::refuse_held(p, parcel_id)?;
        if p.locked() {
            return Err(Error::Locked(parcel_id.to_string()));
        }
        Ok(())
    }

    /// Settles one checked code, online or offline: a match is recorded as a
    /// delivery with the code, a miss is counted as a wrong try.
    #[allow(clippy::too_many_arguments)]
    fn settle_try(
        tx: &Connection,
        p: &DoorParcel,
        parcel_id: &str,
        code: &Code,
        matched: bool,
        verified: Verified,
        now: DateTime<Utc>,
        device_key: &SigningKey,
    ) -> Result<VerifyOutcome, Error> {
        if !matched {
            return Self::count_wrong_try(tx, p, parcel_id, verified);
        }
        let entry = Entry::delivered(Some(code), verified);
        let rec = Self::record(tx, p, parcel_id, entry, now, device_key)?;
        Ok(VerifyOutcome::Accepted {
            parcel_id: parcel_id.to_string(),
            seq: rec.seq,
            verified,
        })
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
}
