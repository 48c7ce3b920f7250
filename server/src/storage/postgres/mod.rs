//! PostgreSQL storage: a pool of connections (deadpool-postgres), shared by
//! any number of stateless server nodes. Each trait method is one
//! transaction: load the facts, call the decision in [`crate::domain`],
//! apply its plan.
//!
//! - Every operation is retried a few times on serialization failures
//!   (40001) and deadlocks (40P01). Most run SERIALIZABLE, so outcomes are
//!   those of some serial order, as with SQLite's single writer. The two hot
//!   paths, confirmation ingest and online verify, run READ COMMITTED and
//!   lock the rows they change first (`SELECT … FOR UPDATE`: the device, then
//!   the upload's parcels in id order), so concurrent requests queue instead
//!   of aborting; serializable writers of the same rows then see a concurrent
//!   update and retry. Reads of one statement run outside an explicit
//!   transaction; reads of several use one REPEATABLE READ snapshot.
//! - An upload is one transaction: its facts in a few `= ANY($1)` queries,
//!   its rows in one `UNNEST` insert per table. Confirmations go in first,
//!   `ON CONFLICT (confirmation_id) DO NOTHING`: if another transaction
//!   stored one of the ids meanwhile (another device's upload of the same
//!   id), the whole upload runs again on fresh facts.
//! - The notice outbox is claimed in READ COMMITTED with
//!   `FOR UPDATE SKIP LOCKED` and a lease, so concurrent senders on several
//!   nodes never claim the same notice.
//! - Migrations (`../migrations/`) are versioned in
//!   `doorcode_migrations` and applied under a session advisory lock, so
//!   nodes starting together apply each once.
//!
//! URL: `postgres://user@host:port/db?schema=NAME&pool_size=N` plus any
//! tokio-postgres parameter. `schema` and `pool_size` are doorcode's own: the
//! schema is created if missing and set as `search_path` on every connection.
//! `sslmode` and `sslrootcert` are read as libpq reads them ([`tls`]).

use super::facts::*;
use super::sql::{
    DEVICE_WITH_MANIFEST, PARCEL_DETAILS, PARCEL_FACTS, PARCEL_FACTS_FROM, ROUTE_STOPS,
    push_stop_row,
};
use super::*;
use crate::domain::ingest::{ConfirmationRow, IngestPlan, Keys};
use crate::domain::parcels::ParcelDetails;
use crate::domain::{self, At, Changes, Label, NoticeState, ParcelChange, RouteChange};
use bytes::BytesMut;
use chrono::{DateTime, NaiveDate, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use std::collections::HashMap;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{IsolationLevel, Row};

#[macro_use]
mod tx;
mod apply;
mod conn;
mod keys;
mod lifecycle;
mod load;
mod notices;
mod rows;
mod shared;
pub mod tls;

use apply::*;
use load::*;
use rows::*;
use tx::*;

pub use conn::{DEFAULT_POOL_SIZE, PgSettings};
pub use tls::{MakeRustlsConnect, RootCert, SslMode, TlsOptions};

/// The PostgreSQL backend. Cheap to clone (the pool is shared).
#[derive(Clone)]
pub struct PostgresStorage {
    pool: Pool,
    /// Route saves from this node one at a time. They run SERIALIZABLE over
    /// small tables, where PostgreSQL's predicate locks cover whole
    /// relations: eight at once from one importer failed each other past
    /// every retry. Correctness does not depend on it (another node's saves
    /// still meet SERIALIZABLE and the retries); it only keeps one node's
    /// saves from conflicting.
    route_saves: std::sync::Arc<tokio::sync::Mutex<()>>,
}

#[async_trait::async_trait]
impl Storage for PostgresStorage {
    async fn upsert_parcels(
        &self,
        items: Vec<NewParcel>,
        now: DateTime<Utc>,
    ) -> Result<Vec<UpsertStatus>> {
        let ids: Vec<String> = items.iter().map(|p| p.parcel_id.clone()).collect();
        transact!(self, SER, |tx| async {
            let existing = locked_parcels(&tx, &ids).await?;
            let details = parcel_details_in(&tx, &ids).await?;
            let (out, ch) = domain::parcels::decide(&existing, &details, &items);
            apply(&tx, &ch, &now).await?;
            Ok(out)
        }
        .await)
    }

    async fn parcel(&self, parcel_id: &str) -> Result<Option<ParcelView>> {
        transact!(self, SNAP, |tx| {
            async {
            let Some(r) = query_opt(
                &tx,
                "SELECT parcel_id, recipient_name, address, requires_code, status, delivery_date, attempt,
                   route_id, wrong_tries, locked FROM parcels WHERE parcel_id=$1",
                &[&parcel_id],
            )
            .await?
            else {
                return Ok(None);
            };
            let events = query(&tx, "SELECT at, kind, detail FROM parcel_events WHERE parcel_id=$1 ORDER BY id", &[&parcel_id])
                .await?
                .iter()
                .map(|e| Ok(ParcelEvent { at: get(e, 0)?, kind: get(e, 1)?, detail: get(e, 2)? }))
                .collect::<TxResult<Vec<_>>>()?;
            Ok(Some(ParcelView {
                parcel_id: get(&r, 0)?,
                recipient_name: get(&r, 1)?,
                address: get(&r, 2)?,
                requires_code: get(&r, 3)?,
                status: get(&r, 4)?,
                delivery_date: get(&r, 5)?,
                attempt: u32_of(get(&r, 6)?)?,
                route_id: get(&r, 7)?,
                wrong_tries: u32_of(get(&r, 8)?)?,
                locked: get(&r, 9)?,
                events,
            }))
        }
        .await
        })
    }

    async fn parcel_contact(&self, parcel_id: &str) -> Result<Option<ParcelContact>> {
        fin(async {
            let sql = format!("SELECT {CONTACT_COLS} FROM parcels WHERE parcel_id=$1");
            self.read_opt(&sql, &[&parcel_id])
                .await?
                .as_ref()
                .map(contact_of)
                .transpose()
        }
        .await)
    }

    async fn clear_track_tokens(&self, limit: u32) -> Result<Vec<(String, String)>> {
        keys::clear_track_tokens(self, limit).await
    }

    async fn convert_track_tokens(&self, rows: Vec<TrackConversion>) -> Result<u64> {
        keys::convert_track_tokens(self, rows).await
    }

    async fn key_fingerprints(&self) -> Result<Vec<(String, String)>> {
        keys::key_fingerprints(self).await
    }

    async fn record_key_fingerprints(
        &self,
        fps: Vec<(String, String)>,
        now: DateTime<Utc>,
    ) -> Result<Vec<(String, String)>> {
        keys::record_key_fingerprints(self, fps, now).await
    }

    async fn replace_key_fingerprint(&self, swap: FingerprintSwap) -> Result<bool> {
        keys::replace_key_fingerprint(self, swap).await
    }

    async fn parcel_by_track_hash(&self, hash: &str) -> Result<Option<ParcelContact>> {
        fin(async {
            // A current link (track_nonce set: track_token is its HMAC) or one
            // issued before migration 0005 (track_legacy).
            let sql = format!(
                "SELECT {CONTACT_COLS} FROM parcels
                 WHERE (track_token=$1 AND track_nonce IS NOT NULL) OR track_legacy=$1"
            );
            self.read_opt(&sql, &[&hash])
                .await?
                .as_ref()
                .map(contact_of)
                .transpose()
        }
        .await)
    }

    async fn parcel_ids_on(&self, date: NaiveDate) -> Result<Vec<String>> {
        fin(async {
            self.read(
                "SELECT parcel_id FROM parcels WHERE delivery_date=$1 ORDER BY parcel_id",
                &[&date],
            )
            .await?
            .iter()
            .map(|r| get(r, 0))
            .collect()
        }
        .await)
    }

    async fn save_route(&self, route: RouteInput, at: At<'_>) -> Result<RouteSaved> {
        let (now, today) = (at.now, at.policy.today(at.now));
        let _one_at_a_time = self.route_saves.lock().await;
        transact!(self, SER, |tx| async {
            let facts = route_facts(&tx, &route).await?;
            let (saved, ch) =
                domain::route::decide(&facts, &route, today).map_err(StorageError::from)?;
            apply(&tx, &ch, &now).await?;
            Ok(saved)
        }
        .await)
    }

    async fn route(&self, route_id: &str, date: NaiveDate) -> Result<Option<RouteData>> {
        transact!(self, SNAP, |tx| load_route(&tx, route_id, date).await)
    }

    async fn route_for_courier(
        &self,
        courier_id: &str,
        date: NaiveDate,
    ) -> Result<Option<RouteData>> {
        transact!(self, SNAP, |tx| async {
            match query_opt(
                &tx,
                "SELECT route_id FROM routes WHERE courier_id=$1 AND delivery_date=$2",
                &[&courier_id, &date],
            )
            .await?
            {
                Some(r) => load_route(&tx, get::<&str>(&r, 0)?, date).await,
                None => Ok(None),
            }
        }
        .await)
    }

    async fn create_enrollment(&self, e: NewEnrollment) -> Result<()> {
        transact!(self, SER, |tx| {
            async {
            exec(
                &tx,
                "INSERT INTO enrollments(code_hash, courier_id, expires_at, created_at) VALUES($1,$2,$3,$4)",
                &[&e.code_hash, &e.courier_id, &e.expires_at, &e.created_at],
            )
            .await?;
            Ok(())
        }
        .await
        })
    }

    async fn enroll_device(&self, device: NewDevice, now: DateTime<Utc>) -> Result<Option<Device>> {
        let code_hash = &device.enrollment;
        transact!(self, SER, |tx| {
            async {
            // Consuming the code is the first write: of two concurrent uses, one wins.
            let Some(r) = query_opt(
                &tx,
                "UPDATE enrollments SET used_at=$2 WHERE code_hash=$1 AND used_at IS NULL AND expires_at > $2
                 RETURNING courier_id",
                &[&code_hash, &now],
            )
            .await?
            else {
                return Ok(None);
            };
            let courier_id: String = get(&r, 0)?;
            exec(
                &tx,
                "INSERT INTO devices(device_id, courier_id, name, public_key, token_hash, enrolled_at, last_seen_at)
                 VALUES($1,$2,$3,$4,$5,$6,$6)",
                &[&device.device_id, &courier_id, &device.name, &device.public_key, &device.token_hash, &now],
            )
            .await?;
            Ok(Some(Device {
                device_id: device.device_id.clone(),
                courier_id,
                name: device.name.clone(),
                public_key: device.public_key.clone(),
                revoked_at: None,
                last_seen_at: now,
                enrolled_at: now,
            }))
        }
        .await
        })
    }

    async fn device_by_token(&self, token_hash: &str) -> Result<Option<Device>> {
        fin(async {
            let sql = format!("SELECT {DEVICE_COLS} FROM devices WHERE token_hash=$1");
            self.read_opt(&sql, &[&token_hash])
                .await?
                .as_ref()
                .map(device_of)
                .transpose()
        }
        .await)
    }

    async fn device(&self, device_id: &str) -> Result<Option<Device>> {
        fin(async {
            let sql = format!("SELECT {DEVICE_COLS} FROM devices WHERE device_id=$1");
            self.read_opt(&sql, &[&device_id])
                .await?
                .as_ref()
                .map(device_of)
                .transpose()
        }
        .await)
    }

    async fn devices_of_courier(&self, courier_id: &str) -> Result<Vec<Device>> {
        fin(async {
            let sql = format!(
                "SELECT {DEVICE_COLS} FROM devices WHERE courier_id=$1 ORDER BY enrolled_at, device_id"
            );
            self.read(&sql, &[&courier_id])
                .await?
                .iter()
                .map(device_of)
                .collect()
        }
        .await)
    }

    async fn device_seen(&self, device_id: &str, now: DateTime<Utc>) -> Result<()> {
        fin(async {
            self.read(
                "UPDATE devices SET last_seen_at=GREATEST(last_seen_at, $2) WHERE device_id=$1",
                &[&device_id, &now],
            )
            .await
            .map(drop)
        }
        .await)
    }

    async fn revoke_device(&self, device_id: &str, now: DateTime<Utc>) -> Result<bool> {
        fin(async {
            let n = self
                .read(
                    "UPDATE devices SET revoked_at=COALESCE(revoked_at, $2) WHERE device_id=$1 RETURNING 1",
                    &[&device_id, &now],
                )
                .await?;
            Ok(!n.is_empty())
        }
        .await)
    }

    async fn manifest(&self, key: BuildKey<'_>) -> Result<Option<StoredManifest>> {
        let (route_id, date, device_id) = (key.route_id, key.date, key.device_id);
        fin(async {
            self.read_opt(
                "SELECT route_id, manifest_id, revision, envelope FROM manifests
                 WHERE route_id=$1 AND delivery_date=$2 AND device_id=$3",
                &[&route_id, &date, &device_id],
            )
            .await?
            .map(|r| manifest_of(&r, date, device_id))
            .transpose()
        }
        .await)
    }

    async fn device_with_manifest(&self, pull: Pull<'_>) -> Result<Option<(Device, CurrentBuild)>> {
        let ((held_id, held_rev), date, token_hash) =
            (pull.held_params(), pull.date, pull.token_hash);
        fin(async {
            self.read_opt(
                DEVICE_WITH_MANIFEST,
                &[&held_id, &held_rev, &date, &token_hash],
            )
            .await?
            .map(|r| device_with_manifest_of(&r, date))
            .transpose()
        }
        .await)
    }

    async fn store_manifest(&self, m: StoredManifest) -> Result<StoredManifest> {
        transact!(self, SER, |tx| {
            async {
            let date = m.delivery_date;
            if let Some(r) = query_opt(
                &tx,
                "SELECT route_id, manifest_id, revision, envelope FROM manifests
                 WHERE route_id=$1 AND delivery_date=$2 AND device_id=$3",
                &[&m.route_id, &date, &m.device_id],
            )
            .await?
            {
                let newer = manifest_of(&r, date, &m.device_id)?;
                if newer.revision >= m.revision {
                    return Ok(newer);
                }
            }
            let rev = i64_of(m.revision)?;
            exec(
                &tx,
                "INSERT INTO manifests(route_id, delivery_date, device_id, manifest_id, revision, envelope) VALUES($1,$2,$3,$4,$5,$6)
                 ON CONFLICT(route_id, delivery_date, device_id) DO UPDATE SET manifest_id=$4, revision=$5, envelope=$6",
                &[&m.route_id, &date, &m.device_id, &m.manifest_id, &rev, &m.envelope_json],
            )
            .await?;
            let pids: Vec<&str> = m.items.iter().map(|(p, _)| p.as_str()).collect();
            let attempts: Vec<i64> = m.items.iter().map(|(_, a)| i64::from(*a)).collect();
            // All of a build's items in one statement.
            exec(
                &tx,
                "INSERT INTO manifest_items(device_id, manifest_id, revision, parcel_id, delivery_date, attempt)
                 SELECT $1, $2, $3, u.p, $4, u.a FROM UNNEST($5::text[], $6::bigint[]) AS u(p, a)
                 ON CONFLICT DO NOTHING",
                &[&m.device_id, &m.manifest_id, &rev, &date, &pids, &attempts],
            )
            .await?;
            Ok(m.clone())
        }
        .await
        })
    }

    async fn ingest_confirmations(&self, up: Upload, at: At<'_>) -> Result<Vec<IngestOutcome>> {
        if up.items.is_empty() {
            return Ok(Vec::new());
        }
        let (now, policy, keys) = (at.now, at.policy, IngestFacts::keys(&up.items));
        let (device_id, items) = (up.device_id.as_str(), &up.items);
        // READ COMMITTED with explicit row locks, device first, then parcels:
        // one device's uploads queue behind each other instead of failing
        // serialization, and every read after the locks sees the latest
        // committed state.
        transact!(self, RC, |tx| async {
            let facts = ingest_facts(&tx, device_id, &keys).await?;
            let plan = domain::ingest::decide(&facts, items, policy);
            apply_ingest(&tx, device_id, &plan, &now).await?;
            Ok(plan.outcomes)
        }
        .await)
    }

    async fn verify_facts(&self, device: &Device, parcel_id: &str) -> Result<VerifyFacts> {
        // One statement outside a transaction: the parcel and whether a build
        // for the device carries its current attempt.
        let sql = format!(
            "{PARCEL_FACTS}, EXISTS(SELECT 1 FROM manifest_items m WHERE m.device_id=$1 AND m.parcel_id=p.parcel_id
               AND m.delivery_date=p.delivery_date AND m.attempt=p.attempt)
             {PARCEL_FACTS_FROM} WHERE p.parcel_id=$2"
        );
        fin(async {
            let row = self
                .read_opt(&sql, &[&device.device_id, &parcel_id])
                .await?;
            let (parcel, on_manifest) = match row {
                Some(r) => (Some(parcel_of(&r)?), get::<bool>(&r, 9)?),
                None => (None, false),
            };
            Ok(VerifyFacts {
                parcel,
                on_manifest,
                device_courier: device.courier_id.clone(),
            })
        }
        .await)
    }

    async fn record_verify(&self, input: VerifyInput, at: At<'_>) -> Result<VerifyOutcome> {
        let (now, policy) = (at.now, at.policy);
        // READ COMMITTED with the parcel row locked: concurrent tries for one
        // parcel (from any node) queue and each counts on the latest count.
        transact!(self, RC, |tx| async {
            let parcel = locked_parcel(&tx, &input.parcel_id).await?;
            let (out, ch) = domain::verify::decide(parcel.as_ref(), &input, policy);
            apply(&tx, &ch, &now).await?;
            Ok(out)
        }
        .await)
    }

    async fn reissue(&self, input: ReissueInput, now: DateTime<Utc>) -> Result<Moved> {
        transact!(self, SER, |tx| async {
            let parcel = locked_parcel(&tx, &input.parcel_id).await?;
            let (moved, ch) =
                domain::reissue::decide(parcel.as_ref(), &input).map_err(StorageError::from)?;
            apply(&tx, &ch, &now).await?;
            Ok(moved)
        }
        .await)
    }

    async fn hold_parcel(&self, parcel_id: &str, at: At<'_>) -> Result<Moved> {
        let (now, today) = (at.now, at.policy.calendar.today(at.now));
        transact!(self, SER, |tx| async {
            let parcel = locked_parcel(&tx, parcel_id).await?;
            let (moved, ch) = domain::hold::decide(parcel.as_ref(), parcel_id, today)
                .map_err(StorageError::from)?;
            apply(&tx, &ch, &now).await?;
            Ok(moved)
        }
        .await)
    }

    async fn close_day(&self, date: NaiveDate, at: At<'_>) -> Result<Closed> {
        let (now, next) = (at.now, domain::close_day::next_day(date, at.policy)?);
        transact!(self, SER, |tx| async {
            let facts = close_facts(&tx, date, next).await?;
            let (moved, ch) = domain::close_day::decide(&facts, date, next);
            apply(&tx, &ch, &now).await?;
            Ok(Closed {
                next_date: next,
                moved,
            })
        }
        .await)
    }

    async fn signals_on(&self, day: NaiveDate, after: i64, limit: u32) -> Result<Vec<Signal>> {
        fin(async {
            self.read(
                "SELECT id, kind, parcel_id, device_id, confirmation_id, day, detail, code_matched, at FROM signals
                 WHERE day=$1 AND id>$2 ORDER BY id LIMIT $3",
                &[&day, &after, &i64::from(limit)],
            )
            .await?
            .iter()
            .map(|r| {
                Ok(Signal {
                    id: get(r, 0)?,
                    kind: get(r, 1)?,
                    parcel_id: get(r, 2)?,
                    device_id: get(r, 3)?,
                    confirmation_id: get(r, 4)?,
                    day: get(r, 5)?,
                    detail: get(r, 6)?,
                    code_matched: get(r, 7)?,
                    at: get(r, 8)?,
                })
            })
            .collect()
        }
        .await)
    }

    async fn claim_notices(&self, now: DateTime<Utc>, secs: i64, n: u32) -> Result<Vec<NoticeJob>> {
        notices::claim_notices(self, now, secs, n).await
    }

    async fn renew_notice_claims(&self, notice_ids: &[i64], until: DateTime<Utc>) -> Result<()> {
        notices::renew_notice_claims(self, notice_ids, until).await
    }

    async fn notice_sent(&self, notice_id: i64, now: DateTime<Utc>) -> Result<()> {
        notices::notice_sent(self, notice_id, now).await
    }

    async fn notice_failed(&self, id: i64, e: &str, retry: Option<DateTime<Utc>>) -> Result<()> {
        notices::notice_failed(self, id, e, retry).await
    }

    async fn notice_counts(&self) -> Result<(u64, u64, u64)> {
        notices::notice_counts(self).await
    }

    async fn create_session(&self, s: NewSession, now: DateTime<Utc>, sweep: u32) -> Result<()> {
        self.create_session_tx(&s, now, sweep).await
    }

    async fn session_csrf(&self, id_hash: &str, now: DateTime<Utc>) -> Result<Option<String>> {
        self.session_csrf_tx(id_hash, now).await
    }

    async fn delete_session(&self, id_hash: &str) -> Result<()> {
        self.delete_session_tx(id_hash).await
    }

    async fn rate_hit(&self, hit: &RateHit) -> Result<Option<RateCount>> {
        self.rate_hit_tx(hit).await
    }

    async fn rate_refund(&self, limit: &str, key: &str, now: DateTime<Utc>) -> Result<()> {
        self.rate_refund_tx(limit, key, now).await
    }

    async fn sweep_shared_state(&self, now: DateTime<Utc>, limit: u32) -> Result<u64> {
        self.sweep_tx(now, limit).await
    }
}
