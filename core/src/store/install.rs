//! Installing a signed manifest: every refusal DESIGN.md lists, then the
//! day's stops and parcels replaced in one transaction.

use super::{Store, ts};
use crate::codes;
use crate::envelope::Envelope;
use crate::error::Error;
use crate::manifest;
use chrono::{DateTime, NaiveDate, Utc};
use rusqlite::{OptionalExtension, TransactionBehavior, params};
use serde::Serialize;

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

impl Store {
    /// Verifies and installs a signed manifest in one transaction.
    ///
    /// Refuses, each with its own error: a bad signature or unknown key, a
    /// manifest for another device, an older revision than held (rollback),
    /// the held revision with other body bytes (a conflict), an expired
    /// manifest, and an unknown format. Fields this build does not know are
    /// ignored; only the fields it knows are stored.
    pub fn install_manifest(
        &mut self,
        env: &Envelope,
        now: DateTime<Utc>,
    ) -> Result<Installed, Error> {
        let id = self.identity()?.ok_or(Error::NotEnrolled)?;
        let manifest::Received {
            manifest: m,
            held: holds,
            body_sha256,
        } = manifest::open_received(env, &id.server_keys)?;
        if m.device_id != id.device_id {
            return Err(Error::WrongDevice {
                manifest_device: m.device_id,
            });
        }
        let date = codes::date_str(m.delivery_date);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        // The watermark, its body digest, and the manifest still held for it
        // (none once the day was wiped).
        let held: Option<(u64, Option<Vec<u8>>, Option<String>)> = tx
            .query_row(
                "SELECT r.revision, r.body_sha256, m.manifest_id FROM revisions r
                 LEFT JOIN manifests m USING (route_id, delivery_date)
                 WHERE r.route_id = ?1 AND r.delivery_date = ?2",
                params![m.route_id, date],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        if let Some((held_rev, held_digest, held_id)) = held {
            if m.revision < held_rev {
                return Err(Error::Rollback {
                    held: held_rev,
                    offered: m.revision,
                });
            }
            if m.revision == held_rev {
                match (held_digest, held_id.as_deref()) {
                    (Some(d), _) if d != body_sha256 => {
                        return Err(Error::ManifestConflict {
                            revision: m.revision,
                        });
                    }
                    // That day is over and wiped: its outcomes are gone, so
                    // it must never come back.
                    (_, None) => return Err(Error::ManifestExpired),
                    // Held since before digests were kept: the manifest id
                    // is all there is to compare. The digest comes with the
                    // next revision; none is guessed from bytes not installed.
                    (None, Some(held_id)) if held_id != m.manifest_id => {
                        return Err(Error::ManifestConflict {
                            revision: m.revision,
                        });
                    }
                    _ => {}
                }
                return Ok(Installed::Unchanged {
                    manifest_id: m.manifest_id,
                    revision: m.revision,
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
            "INSERT INTO revisions (route_id, delivery_date, revision, body_sha256) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(route_id, delivery_date) DO UPDATE SET
                 revision = excluded.revision, body_sha256 = excluded.body_sha256",
            params![m.route_id, date, m.revision, body_sha256.to_vec()],
        )?;
        let mut parcels = 0usize;
        {
            let mut ins_stop = tx.prepare(
                "INSERT INTO stops (route_id, delivery_date, stop_id, sequence, address, recipient)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            let mut ins_parcel = tx.prepare(
                "INSERT OR REPLACE INTO parcels (delivery_date, parcel_id, route_id, stop_id, requires_code,
                     attempt, salt, tag, hold) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
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
                        p.tag,
                        holds.contains(&p.parcel_id)
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
}
