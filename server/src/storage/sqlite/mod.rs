//! Embedded SQLite storage: one writer connection, WAL, versioned migrations
//! in `user_version` (`migrations/sqlite/`). Each writing trait method is one
//! operation on the writer thread ([`writer`]: load the facts, call the
//! decision in [`crate::domain`], apply its plan), in a savepoint of a
//! transaction that concurrent operations share, so one commit (one fsync)
//! answers many verifies or uploads. Pure reads (device
//! tokens, manifests, routes) run on a small pool of read-only connections
//! beside the writer, so a morning of manifest pulls does not queue behind
//! uploads: WAL lets each reader see the last commit while the writer writes.

use super::facts::*;
use super::sql::{
    DEVICE_WITH_MANIFEST, PARCEL_DETAILS, PARCEL_FACTS, PARCEL_FACTS_FROM, ROUTE_STOPS,
    push_stop_row,
};
use super::*;
use crate::domain::ingest::{ConfirmationRow, IngestPlan, Keys};
use crate::domain::parcels::ParcelDetails;
use crate::domain::{self, At, Changes, Label, NoticeState, ParcelChange, RouteChange};
use chrono::{DateTime, NaiveDate, Utc};
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, OptionalExtension, ToSql, TransactionBehavior, params};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

mod apply;
mod columns;
mod keys;
mod lifecycle;
mod load;
mod rows;
mod shared;
mod writer;

use apply::*;
use columns::*;
use load::*;
use rows::*;

/// Schema migrations, applied in order; `user_version` counts the applied ones.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/sqlite/0001_init.sql"),
    include_str!("../migrations/sqlite/0002_seen_revoked_signal_days.sql"),
    include_str!("../migrations/sqlite/0003_lifecycle.sql"),
    include_str!("../migrations/sqlite/0004_shared_state.sql"),
    include_str!("../migrations/sqlite/0005_keys_track_hmac.sql"),
];

/// Read-only connections beside the writer (two cores serve requests; a
/// few more readers cover requests waiting on disk).
const READERS: usize = 4;

/// The SQLite backend. Cheap to clone.
#[derive(Clone)]
pub struct SqliteStorage {
    writer: writer::Writer,
    readers: Arc<Readers>,
}

/// The read-only connections; a read takes a free one, else waits its turn on one.
struct Readers {
    conns: Vec<Mutex<Connection>>,
    next: AtomicUsize,
}

impl Readers {
    fn open(path: &Path) -> Result<Self> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conns = (0..READERS)
            .map(|_| {
                let conn = Connection::open_with_flags(path, flags)?;
                apply_pragmas(&conn, Role::Reader)?;
                Ok(Mutex::new(conn))
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            conns,
            next: AtomicUsize::new(0),
        })
    }

    fn lock_one(&self) -> MutexGuard<'_, Connection> {
        let n = self.conns.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        for i in 0..n {
            if let Ok(g) = self.conns[(start + i) % n].try_lock() {
                return g;
            }
        }
        // A panic inside a read rolled its transaction back; the connection is good.
        self.conns[start]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn be(e: impl std::fmt::Display) -> StorageError {
    StorageError::Backend(e.to_string())
}

impl From<rusqlite::Error> for StorageError {
    fn from(e: rusqlite::Error) -> Self {
        be(e)
    }
}

/// Which connection the PRAGMAs are for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Writer,
    Reader,
}

/// All connection PRAGMAs in one place. The writer sets the file's journal
/// mode; a reader only waits for locks and reads it.
fn apply_pragmas(conn: &Connection, role: Role) -> Result<()> {
    if role == Role::Writer {
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA synchronous=FULL;
             PRAGMA secure_delete=ON;",
        )?;
    }
    conn.execute_batch(
        "PRAGMA foreign_keys=ON;
         PRAGMA busy_timeout=5000;",
    )?;
    Ok(())
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let version = usize::try_from(version).map_err(be)?;
    if version > MIGRATIONS.len() {
        return Err(StorageError::Backend(format!(
            "database schema version {version} is newer than this server ({})",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))?;
        tx.commit()?;
    }
    Ok(())
}

impl SqliteStorage {
    /// Open (or create) the database file and bring its schema up to date.
    pub fn open(path: &Path) -> Result<Self> {
        let mut conn = Connection::open(path)?;
        apply_pragmas(&conn, Role::Writer)?;
        migrate(&mut conn)?;
        // After the writer: the file exists, in WAL mode, at the current schema.
        let readers = Readers::open(path)?;
        Ok(Self {
            writer: writer::Writer::start(conn)?,
            readers: Arc::new(readers),
        })
    }

    /// The number of migrations this server knows (the schema version it writes).
    pub fn schema_version() -> usize {
        MIGRATIONS.len()
    }

    /// Run one domain operation on the writer: atomic (its own savepoint),
    /// answered after the commit that made it durable.
    async fn tx<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        self.writer.run(f).await
    }

    /// Run a pure read as one transaction on a read-only connection: one
    /// consistent snapshot of the last commit, never waiting for the writer.
    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let readers = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = readers.lock_one();
            let tx = guard.transaction_with_behavior(TransactionBehavior::Deferred)?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        })
        .await
        .map_err(be)?
    }
}

#[async_trait::async_trait]
impl Storage for SqliteStorage {
    async fn upsert_parcels(
        &self,
        items: Vec<NewParcel>,
        now: DateTime<Utc>,
    ) -> Result<Vec<UpsertStatus>> {
        self.tx(move |tx| {
            let ids: Vec<String> = items.iter().map(|p| p.parcel_id.clone()).collect();
            let details = parcel_details_in(tx, &ids)?;
            let (out, ch) = domain::parcels::decide(&parcels_in(tx, &ids)?, &details, &items);
            apply(tx, &ch, now)?;
            Ok(out)
        })
        .await
    }

    async fn parcel(&self, parcel_id: &str) -> Result<Option<ParcelView>> {
        let id = parcel_id.to_string();
        self.read(move |tx| {
            let Some(mut v) = tx
                .query_row(
                    "SELECT parcel_id, recipient_name, address, requires_code, status, delivery_date, attempt,
                       route_id, wrong_tries, locked FROM parcels WHERE parcel_id=?1",
                    [&id],
                    |r| {
                        Ok(ParcelView {
                            parcel_id: r.get(0)?,
                            recipient_name: r.get(1)?,
                            address: r.get(2)?,
                            requires_code: r.get(3)?,
                            status: r.get(4)?,
                            delivery_date: day_opt(r.get(5)?),
                            attempt: r.get(6)?,
                            route_id: r.get(7)?,
                            wrong_tries: r.get(8)?,
                            locked: r.get(9)?,
                            events: Vec::new(),
                        })
                    },
                )
                .optional()?
            else {
                return Ok(None);
            };
            let mut st = tx.prepare_cached(
                "SELECT at, kind, detail FROM parcel_events WHERE parcel_id=?1 ORDER BY id",
            )?;
            v.events = st
                .query_map([&id], |r| {
                    Ok(ParcelEvent {
                        at: r.get::<_, Ts>(0)?.0,
                        kind: r.get(1)?,
                        detail: r.get(2)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(Some(v))
        })
        .await
    }

    async fn parcel_contact(&self, parcel_id: &str) -> Result<Option<ParcelContact>> {
        let id = parcel_id.to_string();
        self.tx(move |tx| contact(tx, "parcel_id", &id)).await
    }

    async fn parcel_by_track_hash(&self, hash: &str) -> Result<Option<ParcelContact>> {
        let h = hash.to_string();
        // A current link (track_nonce set: track_token is its HMAC) or one
        // issued before migration 0005 (track_legacy).
        self.tx(move |tx| {
            contact(
                tx,
                "(track_token = ?1 AND track_nonce IS NOT NULL) OR track_legacy",
                &h,
            )
        })
        .await
    }

    async fn clear_track_tokens(&self, limit: u32) -> Result<Vec<(String, String)>> {
        self.tx(move |tx| keys::clear_track_tokens(tx, limit)).await
    }

    async fn convert_track_tokens(&self, rows: Vec<TrackConversion>) -> Result<u64> {
        self.tx(move |tx| keys::convert_track_tokens(tx, &rows))
            .await
    }

    async fn key_fingerprints(&self) -> Result<Vec<(String, String)>> {
        self.tx(|tx| keys::pairs(tx, keys::FINGERPRINTS)).await
    }

    async fn record_key_fingerprints(
        &self,
        fps: Vec<(String, String)>,
        now: DateTime<Utc>,
    ) -> Result<Vec<(String, String)>> {
        self.tx(move |tx| {
            keys::record(tx, &fps, now)?;
            keys::pairs(tx, keys::FINGERPRINTS)
        })
        .await
    }

    async fn replace_key_fingerprint(
        &self,
        name: &str,
        expected: Option<&str>,
        new: &str,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let (name, expected, new) = (
            name.to_string(),
            expected.map(str::to_string),
            new.to_string(),
        );
        self.tx(move |tx| keys::replace(tx, &name, expected.as_deref(), &new, now))
            .await
    }

    async fn parcel_ids_on(&self, date: NaiveDate) -> Result<Vec<String>> {
        self.tx(move |tx| {
            let mut st = tx.prepare_cached(
                "SELECT parcel_id FROM parcels WHERE delivery_date=?1 ORDER BY parcel_id",
            )?;
            let ids = st
                .query_map([Day(date)], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(ids)
        })
        .await
    }

    async fn save_route(&self, route: RouteInput, at: At<'_>) -> Result<RouteSaved> {
        let (now, today) = (at.now, at.policy.today(at.now));
        self.tx(move |tx| {
            let (saved, ch) = domain::route::decide(&route_facts(tx, &route)?, &route, today)?;
            apply(tx, &ch, now)?;
            Ok(saved)
        })
        .await
    }

    async fn route(&self, route_id: &str, date: NaiveDate) -> Result<Option<RouteData>> {
        let r = route_id.to_string();
        self.read(move |tx| load_route(tx, &r, date)).await
    }

    async fn route_for_courier(
        &self,
        courier_id: &str,
        date: NaiveDate,
    ) -> Result<Option<RouteData>> {
        let c = courier_id.to_string();
        self.read(move |tx| {
            let rid: Option<String> = tx
                .query_row(
                    "SELECT route_id FROM routes WHERE courier_id=?1 AND delivery_date=?2",
                    params![c, Day(date)],
                    |r| r.get(0),
                )
                .optional()?;
            match rid {
                Some(rid) => load_route(tx, &rid, date),
                None => Ok(None),
            }
        })
        .await
    }

    async fn create_enrollment(&self, e: NewEnrollment) -> Result<()> {
        self.tx(move |tx| {
            tx.execute(
                "INSERT INTO enrollments(code_hash, courier_id, expires_at, created_at) VALUES(?1,?2,?3,?4)",
                params![e.code_hash, e.courier_id, Ts(e.expires_at), Ts(e.created_at)],
            )?;
            Ok(())
        })
        .await
    }

    async fn enroll_device(&self, device: NewDevice, now: DateTime<Utc>) -> Result<Option<Device>> {
        let h = device.enrollment.clone();
        self.tx(move |tx| {
            let courier: Option<String> = tx
                .query_row(
                    "SELECT courier_id FROM enrollments WHERE code_hash=?1 AND used_at IS NULL AND expires_at > ?2",
                    params![h, Ts(now)],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(courier_id) = courier else {
                return Ok(None);
            };
            tx.execute("UPDATE enrollments SET used_at=?2 WHERE code_hash=?1", params![h, Ts(now)])?;
            tx.execute(
                "INSERT INTO devices(device_id, courier_id, name, public_key, token_hash, enrolled_at, last_seen_at)
                 VALUES(?1,?2,?3,?4,?5,?6,?6)",
                params![device.device_id, courier_id, device.name, device.public_key, device.token_hash, Ts(now)],
            )?;
            Ok(Some(Device {
                device_id: device.device_id,
                courier_id,
                name: device.name,
                public_key: device.public_key,
                revoked_at: None,
                last_seen_at: now,
                enrolled_at: now,
            }))
        })
        .await
    }

    async fn device_by_token(&self, token_hash: &str) -> Result<Option<Device>> {
        let h = token_hash.to_string();
        self.read(move |tx| {
            let sql = format!("SELECT {DEVICE_COLS} FROM devices WHERE token_hash=?1");
            Ok(tx
                .prepare_cached(&sql)?
                .query_row([h], device_row)
                .optional()?)
        })
        .await
    }

    async fn device(&self, device_id: &str) -> Result<Option<Device>> {
        let d = device_id.to_string();
        self.read(move |tx| {
            let sql = format!("SELECT {DEVICE_COLS} FROM devices WHERE device_id=?1");
            Ok(tx.query_row(&sql, [d], device_row).optional()?)
        })
        .await
    }

    async fn devices_of_courier(&self, courier_id: &str) -> Result<Vec<Device>> {
        let c = courier_id.to_string();
        self.read(move |tx| {
            let sql = format!(
                "SELECT {DEVICE_COLS} FROM devices WHERE courier_id=?1 ORDER BY enrolled_at, device_id"
            );
            let mut st = tx.prepare(&sql)?;
            let v = st.query_map([c], device_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(v)
        })
        .await
    }

    async fn device_seen(&self, device_id: &str, now: DateTime<Utc>) -> Result<()> {
        let d = device_id.to_string();
        self.tx(move |tx| {
            tx.execute(
                "UPDATE devices SET last_seen_at=?2 WHERE device_id=?1",
                params![d, Ts(now)],
            )?;
            Ok(())
        })
        .await
    }

    async fn revoke_device(&self, device_id: &str, now: DateTime<Utc>) -> Result<bool> {
        let d = device_id.to_string();
        self.tx(move |tx| {
            let n = tx.execute(
                "UPDATE devices SET revoked_at=COALESCE(revoked_at, ?2) WHERE device_id=?1",
                params![d, Ts(now)],
            )?;
            Ok(n > 0)
        })
        .await
    }

    async fn manifest(&self, key: BuildKey<'_>) -> Result<Option<StoredManifest>> {
        let (r, d, date) = (
            key.route_id.to_string(),
            key.device_id.to_string(),
            key.date,
        );
        self.read(move |tx| {
            Ok(tx
                .query_row(
                    "SELECT route_id, manifest_id, revision, envelope FROM manifests
                     WHERE route_id=?1 AND delivery_date=?2 AND device_id=?3",
                    params![r, Day(date), d],
                    |row| stored_manifest(row, date, &d),
                )
                .optional()?)
        })
        .await
    }

    async fn device_with_manifest(
        &self,
        token_hash: &str,
        date: NaiveDate,
    ) -> Result<Option<(Device, Option<StoredManifest>)>> {
        let h = token_hash.to_string();
        self.read(move |tx| {
            Ok(tx
                .prepare_cached(DEVICE_WITH_MANIFEST)?
                .query_row(params![Day(date), h], |r| device_with_manifest_row(r, date))
                .optional()?)
        })
        .await
    }

    async fn store_manifest(&self, m: StoredManifest) -> Result<StoredManifest> {
        self.tx(move |tx| {
            let date = Day(m.delivery_date);
            let existing = tx
                .query_row(
                    "SELECT route_id, manifest_id, revision, envelope FROM manifests
                     WHERE route_id=?1 AND delivery_date=?2 AND device_id=?3",
                    params![m.route_id, date, m.device_id],
                    |row| stored_manifest(row, m.delivery_date, &m.device_id),
                )
                .optional()?;
            if let Some(newer) = existing.filter(|e| e.revision >= m.revision) {
                return Ok(newer);
            }
            tx.execute(
                "INSERT INTO manifests(route_id, delivery_date, device_id, manifest_id, revision, envelope) VALUES(?1,?2,?3,?4,?5,?6)
                 ON CONFLICT(route_id, delivery_date, device_id) DO UPDATE SET manifest_id=?4, revision=?5, envelope=?6",
                params![m.route_id, date, m.device_id, m.manifest_id, m.revision, m.envelope_json],
            )?;
            let mut st = tx.prepare_cached(
                "INSERT OR IGNORE INTO manifest_items(device_id, manifest_id, revision, parcel_id, delivery_date, attempt)
                 VALUES(?1,?2,?3,?4,?5,?6)",
            )?;
            for (pid, attempt) in &m.items {
                st.execute(params![m.device_id, m.manifest_id, m.revision, pid, date, attempt])?;
            }
            drop(st);
            Ok(m)
        })
        .await
    }

    async fn ingest_confirmations(&self, up: Upload, at: At<'_>) -> Result<Vec<IngestOutcome>> {
        if up.items.is_empty() {
            return Ok(Vec::new());
        }
        let (now, policy) = (at.now, at.policy.clone());
        // One transaction, so one fsync, for the whole upload.
        self.tx(move |tx| {
            let facts = ingest_facts(tx, &up.device_id, &IngestFacts::keys(&up.items))?;
            let plan = domain::ingest::decide(&facts, &up.items, &policy);
            apply_ingest(tx, &up.device_id, &plan, now)?;
            Ok(plan.outcomes)
        })
        .await
    }

    async fn verify_facts(&self, device: &Device, parcel_id: &str) -> Result<VerifyFacts> {
        let (d, p) = (device.clone(), parcel_id.to_string());
        self.tx(move |tx| verify_facts_in(tx, &d, &p)).await
    }

    async fn record_verify(&self, input: VerifyInput, at: At<'_>) -> Result<VerifyOutcome> {
        let (now, policy) = (at.now, at.policy.clone());
        self.tx(move |tx| {
            let parcel = one_parcel(tx, &input.parcel_id)?;
            let (out, ch) = domain::verify::decide(parcel.as_ref(), &input, &policy);
            apply(tx, &ch, now)?;
            Ok(out)
        })
        .await
    }

    async fn reissue(&self, input: ReissueInput, now: DateTime<Utc>) -> Result<Moved> {
        self.tx(move |tx| {
            let parcel = one_parcel(tx, &input.parcel_id)?;
            let (moved, ch) = domain::reissue::decide(parcel.as_ref(), &input)?;
            apply(tx, &ch, now)?;
            Ok(moved)
        })
        .await
    }

    async fn hold_parcel(&self, parcel_id: &str, at: At<'_>) -> Result<Moved> {
        let (pid, now, today) = (
            parcel_id.to_string(),
            at.now,
            at.policy.calendar.today(at.now),
        );
        self.tx(move |tx| {
            let parcel = one_parcel(tx, &pid)?;
            let (moved, ch) = domain::hold::decide(parcel.as_ref(), &pid, today)?;
            apply(tx, &ch, now)?;
            Ok(moved)
        })
        .await
    }

    async fn close_day(&self, date: NaiveDate, at: At<'_>) -> Result<Closed> {
        let (now, next) = (at.now, domain::close_day::next_day(date, at.policy)?);
        self.tx(move |tx| {
            let (moved, ch) = domain::close_day::decide(&close_facts(tx, date, next)?, date, next);
            apply(tx, &ch, now)?;
            Ok(Closed {
                next_date: next,
                moved,
            })
        })
        .await
    }

    async fn signals_on(&self, day: NaiveDate, after: i64, limit: u32) -> Result<Vec<Signal>> {
        self.tx(move |tx| {
            let mut st = tx.prepare_cached(
                "SELECT id, kind, parcel_id, device_id, confirmation_id, day, detail, code_matched, at FROM signals
                 WHERE day=?1 AND id>?2 ORDER BY id LIMIT ?3",
            )?;
            let rows = st
                .query_map(params![Day(day), after, limit], |r| {
                    Ok(Signal {
                        id: r.get(0)?,
                        kind: r.get(1)?,
                        parcel_id: r.get(2)?,
                        device_id: r.get(3)?,
                        confirmation_id: r.get(4)?,
                        day: r.get::<_, Day>(5)?.0,
                        detail: r.get(6)?,
                        code_matched: r.get(7)?,
                        at: r.get::<_, Ts>(8)?.0,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn claim_notices(&self, now: DateTime<Utc>, secs: i64, n: u32) -> Result<Vec<NoticeJob>> {
        self.tx(move |tx| {
            let mut st = tx.prepare_cached(
                "SELECT id, parcel_id, delivery_date, attempt, tries, last_error FROM notices
                 WHERE status=?3 AND next_attempt_at <= ?1 AND (claimed_until IS NULL OR claimed_until <= ?1)
                 ORDER BY id LIMIT ?2",
            )?;
            let jobs = st
                .query_map(params![Ts(now), n, NoticeState::Pending], |r| {
                    Ok(NoticeJob {
                        notice_id: r.get(0)?,
                        parcel_id: r.get(1)?,
                        delivery_date: r.get::<_, Day>(2)?.0,
                        attempt: r.get(3)?,
                        tries: r.get(4)?,
                        last_error: r.get(5)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let until = Ts(now + chrono::Duration::seconds(secs));
            let mut st = tx.prepare_cached("UPDATE notices SET claimed_until=?2 WHERE id=?1")?;
            for j in &jobs {
                st.execute(params![j.notice_id, until])?;
            }
            Ok(jobs)
        })
        .await
    }

    async fn renew_notice_claims(&self, notice_ids: &[i64], until: DateTime<Utc>) -> Result<()> {
        let ids = notice_ids.to_vec();
        self.tx(move |tx| {
            let mut st = tx.prepare_cached(
                "UPDATE notices SET claimed_until=?2 WHERE id=?1 AND status=?3 AND claimed_until IS NOT NULL",
            )?;
            let until = Ts(until);
            for id in ids {
                st.execute(params![id, until, NoticeState::Pending])?;
            }
            Ok(())
        })
        .await
    }

    async fn notice_sent(&self, notice_id: i64, now: DateTime<Utc>) -> Result<()> {
        self.tx(move |tx| {
            tx.execute(
                "UPDATE notices SET status=?3, sent_at=?2, claimed_until=NULL, tries=tries+1 WHERE id=?1",
                params![notice_id, Ts(now), NoticeState::Sent],
            )?;
            Ok(())
        })
        .await
    }

    async fn notice_failed(&self, id: i64, e: &str, retry: Option<DateTime<Utc>>) -> Result<()> {
        let e = e.to_string();
        self.tx(move |tx| {
            match retry {
                Some(t) => tx.execute(
                    "UPDATE notices SET tries=tries+1, last_error=?2, next_attempt_at=?3, claimed_until=NULL WHERE id=?1",
                    params![id, e, Ts(t)],
                )?,
                None => tx.execute(
                    "UPDATE notices SET tries=tries+1, last_error=?2, status=?3, claimed_until=NULL WHERE id=?1",
                    params![id, e, NoticeState::Failed],
                )?,
            };
            Ok(())
        })
        .await
    }

    async fn notice_counts(&self) -> Result<(u64, u64, u64)> {
        self.tx(|tx| {
            let mut st = tx.prepare_cached("SELECT COUNT(*) FROM notices WHERE status=?1")?;
            let mut count =
                |s: NoticeState| -> Result<u64> { Ok(st.query_row([s], |r| r.get(0))?) };
            Ok((
                count(NoticeState::Pending)?,
                count(NoticeState::Sent)?,
                count(NoticeState::Failed)?,
            ))
        })
        .await
    }

    async fn create_session(&self, s: NewSession, now: DateTime<Utc>, sweep: u32) -> Result<()> {
        self.tx(move |tx| shared::create_session(tx, &s, sweep, Ts(now)))
            .await
    }

    async fn session_csrf(&self, id_hash: &str, now: DateTime<Utc>) -> Result<Option<String>> {
        let id = id_hash.to_string();
        self.tx(move |tx| shared::session_csrf(tx, &id, Ts(now)))
            .await
    }

    async fn delete_session(&self, id_hash: &str) -> Result<()> {
        let id = id_hash.to_string();
        self.tx(move |tx| {
            tx.prepare_cached("DELETE FROM board_sessions WHERE id_hash = ?1")?
                .execute([id])?;
            Ok(())
        })
        .await
    }

    async fn rate_hit(&self, hit: &RateHit) -> Result<Option<RateCount>> {
        let h = hit.clone();
        self.tx(move |tx| shared::rate_hit(tx, &h)).await
    }

    async fn rate_refund(&self, limit: &str, key: &str, now: DateTime<Utc>) -> Result<()> {
        let (l, k) = (limit.to_string(), key.to_string());
        self.tx(move |tx| shared::rate_refund(tx, &l, &k, Ts(now)))
            .await
    }

    async fn sweep_shared_state(&self, now: DateTime<Utc>, limit: u32) -> Result<u64> {
        self.tx(move |tx| shared::sweep(tx, Ts(now), limit)).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// A read answers from the last commit while the writer is busy (here:
    /// held by an operation, as a long upload would), instead of queueing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_do_not_wait_for_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStorage::open(&dir.path().join("doorcode.db")).unwrap();
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let (started, running) = tokio::sync::oneshot::channel();
        let s2 = s.clone();
        let held = tokio::spawn(async move {
            s2.tx(move |_| {
                let _ = started.send(());
                let _ = wait.recv();
                Ok(())
            })
            .await
        });
        running.await.unwrap();
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            s.device_by_token("no such token"),
        )
        .await
        .expect("the read waited for the writer");
        assert!(read.unwrap().is_none());
        release.send(()).unwrap();
        held.await.unwrap().unwrap();
    }

    /// The readers cannot write, whatever a future read method tries.
    #[tokio::test]
    async fn readers_are_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStorage::open(&dir.path().join("doorcode.db")).unwrap();
        let err = s
            .read(|tx| Ok(tx.execute("DELETE FROM devices", [])?))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("readonly"), "{err}");
    }
}
