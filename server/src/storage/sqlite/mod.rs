//! Embedded SQLite storage: one writer connection, WAL, versioned migrations
//! in `user_version` (`../migrations/`). Each writing trait method is one
//! operation on the writer thread ([`writer`]: load the facts, call the
//! decision in [`crate::domain`], apply its plan), in a savepoint of a
//! transaction that concurrent operations share, so one commit (one fsync)
//! answers many verifies or uploads. Pure reads (device
//! tokens, manifests, routes) run on a small pool of read-only connections
//! beside the writer, so a morning of manifest pulls does not queue behind
//! uploads: WAL lets each reader see the last commit while the writer writes.
//!
//! This file holds the backend and its trait impl, which picks writer or
//! reader per method; the statements live by concern beside it:
//! [`conn`] (PRAGMAs, migrations, the read pool), [`parcels`], [`devices`],
//! [`manifests`], [`outbox`], [`keys`], [`shared`], and the facts ([`load`])
//! and plans ([`apply`]) of the operations that decide.

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
mod conn;
mod devices;
mod keys;
mod lifecycle;
mod load;
mod manifests;
mod outbox;
mod parcels;
mod rows;
mod shared;
mod writer;

use apply::*;
use columns::*;
use conn::*;
use load::*;
use rows::*;

/// The SQLite backend. Cheap to clone.
#[derive(Clone)]
pub struct SqliteStorage {
    writer: writer::Writer,
    readers: Arc<Readers>,
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
        crate::storage::migrations::COUNT
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
        self.read(move |tx| parcels::view(tx, &id)).await
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

    async fn replace_key_fingerprint(&self, swap: FingerprintSwap) -> Result<bool> {
        self.tx(move |tx| keys::replace(tx, &swap)).await
    }

    async fn parcel_ids_on(&self, date: NaiveDate) -> Result<Vec<String>> {
        self.tx(move |tx| parcels::ids_on(tx, date)).await
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
        self.read(move |tx| route_of_courier(tx, &c, date)).await
    }

    async fn create_enrollment(&self, e: NewEnrollment) -> Result<()> {
        self.tx(move |tx| devices::create_enrollment(tx, &e)).await
    }

    async fn enroll_device(&self, device: NewDevice, now: DateTime<Utc>) -> Result<Option<Device>> {
        self.tx(move |tx| devices::enroll(tx, device, now)).await
    }

    async fn device_by_token(&self, token_hash: &str) -> Result<Option<Device>> {
        let h = token_hash.to_string();
        self.read(move |tx| devices::by_token(tx, &h)).await
    }

    async fn device(&self, device_id: &str) -> Result<Option<Device>> {
        let d = device_id.to_string();
        self.read(move |tx| devices::by_id(tx, &d)).await
    }

    async fn devices_of_courier(&self, courier_id: &str) -> Result<Vec<Device>> {
        let c = courier_id.to_string();
        self.read(move |tx| devices::of_courier(tx, &c)).await
    }

    async fn device_seen(&self, device_id: &str, now: DateTime<Utc>) -> Result<()> {
        let d = device_id.to_string();
        self.tx(move |tx| devices::seen(tx, &d, now)).await
    }

    async fn revoke_device(&self, device_id: &str, now: DateTime<Utc>) -> Result<bool> {
        let d = device_id.to_string();
        self.tx(move |tx| devices::revoke(tx, &d, now)).await
    }

    async fn manifest(&self, key: BuildKey<'_>) -> Result<Option<StoredManifest>> {
        let (r, d, date) = (
            key.route_id.to_string(),
            key.device_id.to_string(),
            key.date,
        );
        self.read(move |tx| manifests::stored(tx, &r, date, &d))
            .await
    }

    async fn device_with_manifest(&self, pull: Pull<'_>) -> Result<Option<(Device, CurrentBuild)>> {
        let (h, held) = (pull.token_hash.to_string(), pull.held.cloned());
        let date = pull.date;
        self.read(move |tx| {
            let pull = Pull {
                token_hash: &h,
                date,
                held: held.as_ref(),
            };
            manifests::device_with(tx, pull)
        })
        .await
    }

    async fn store_manifest(&self, m: StoredManifest) -> Result<StoredManifest> {
        self.tx(move |tx| manifests::store(tx, m)).await
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
        self.tx(move |tx| parcels::signals_on(tx, day, after, limit))
            .await
    }

    async fn claim_notices(&self, now: DateTime<Utc>, secs: i64, n: u32) -> Result<Vec<NoticeJob>> {
        self.tx(move |tx| outbox::claim(tx, now, secs, n)).await
    }

    async fn renew_notice_claims(&self, notice_ids: &[i64], until: DateTime<Utc>) -> Result<()> {
        let ids = notice_ids.to_vec();
        self.tx(move |tx| outbox::renew(tx, &ids, until)).await
    }

    async fn notice_sent(&self, notice_id: i64, now: DateTime<Utc>) -> Result<()> {
        self.tx(move |tx| outbox::sent(tx, notice_id, now)).await
    }

    async fn notice_failed(&self, id: i64, e: &str, retry: Option<DateTime<Utc>>) -> Result<()> {
        let e = e.to_string();
        self.tx(move |tx| outbox::failed(tx, id, &e, retry)).await
    }

    async fn notice_counts(&self) -> Result<(u64, u64, u64)> {
        self.tx(outbox::counts).await
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
        self.tx(move |tx| shared::delete_session(tx, &id)).await
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
