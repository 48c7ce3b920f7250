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
//! - Migrations (`migrations/postgres/`) are versioned in
//!   `doorcode_migrations` and applied under a session advisory lock, so
//!   nodes starting together apply each once.
//!
//! URL: `postgres://user@host:port/db?schema=NAME&pool_size=N` plus any
//! tokio-postgres parameter. `schema` and `pool_size` are doorcode's own: the
//! schema is created if missing and set as `search_path` on every connection.

use super::facts::*;
use super::sql::{PARCEL_FACTS, PARCEL_FACTS_FROM};
use super::*;
use crate::domain::ingest::{ConfirmationRow, IngestPlan, Keys};
use crate::domain::{self, At, Changes, Label, NoticeState, ParcelChange, RouteChange};
use bytes::BytesMut;
use chrono::{DateTime, NaiveDate, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use std::collections::HashMap;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{IsolationLevel, NoTls, Row};

/// Schema migrations, applied in order; `doorcode_migrations` lists the applied ones.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/postgres/0001_init.sql"),
    include_str!("migrations/postgres/0002_seen_revoked_signal_days.sql"),
    include_str!("migrations/postgres/0003_lifecycle.sql"),
];

/// How many times one operation runs before a serialization failure is returned.
const MAX_TRIES: u32 = 10;
/// Default connections per node.
pub const DEFAULT_POOL_SIZE: usize = 16;

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];
type Tx<'a> = deadpool_postgres::Transaction<'a>;

/// An error inside a transaction: a database error (maybe retryable), a
/// domain answer such as NotFound / Conflict, or "run it again" (facts went
/// stale under us).
#[derive(Debug)]
enum TxError {
    Pg(tokio_postgres::Error),
    Storage(StorageError),
    Retry,
}

impl From<tokio_postgres::Error> for TxError {
    fn from(e: tokio_postgres::Error) -> Self {
        TxError::Pg(e)
    }
}

impl From<StorageError> for TxError {
    fn from(e: StorageError) -> Self {
        TxError::Storage(e)
    }
}

type TxResult<T> = std::result::Result<T, TxError>;

fn be(e: impl std::fmt::Display) -> StorageError {
    StorageError::Backend(e.to_string())
}

/// The message with the server's detail, never the query parameters.
fn pg_be(e: &tokio_postgres::Error) -> StorageError {
    match e.as_db_error() {
        Some(db) => {
            StorageError::Backend(format!("postgres {}: {}", db.code().code(), db.message()))
        }
        None => be(e),
    }
}

fn retryable(e: &tokio_postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
    )
}

fn u32_of(v: i64) -> TxResult<u32> {
    Ok(u32::try_from(v).map_err(be)?)
}

fn u64_of(v: i64) -> TxResult<u64> {
    Ok(u64::try_from(v).map_err(be)?)
}

fn i64_of(v: u64) -> TxResult<i64> {
    Ok(i64::try_from(v).map_err(be)?)
}

async fn query(tx: &Tx<'_>, sql: &str, p: Params<'_>) -> TxResult<Vec<Row>> {
    let st = tx.prepare_cached(sql).await?;
    Ok(tx.query(&st, p).await?)
}

async fn query_opt(tx: &Tx<'_>, sql: &str, p: Params<'_>) -> TxResult<Option<Row>> {
    let st = tx.prepare_cached(sql).await?;
    Ok(tx.query_opt(&st, p).await?)
}

async fn query_one(tx: &Tx<'_>, sql: &str, p: Params<'_>) -> TxResult<Row> {
    let st = tx.prepare_cached(sql).await?;
    Ok(tx.query_one(&st, p).await?)
}

async fn exec(tx: &Tx<'_>, sql: &str, p: Params<'_>) -> TxResult<u64> {
    let st = tx.prepare_cached(sql).await?;
    Ok(tx.execute(&st, p).await?)
}

/// Row getters that report a type mismatch as an error, not a panic.
fn get<'a, T: tokio_postgres::types::FromSql<'a>>(r: &'a Row, i: usize) -> TxResult<T> {
    Ok(r.try_get(i)?)
}

/// Run one operation as one transaction, retrying serialization failures.
/// `$body` is an expression using `$tx` and returning `TxResult<T>`.
macro_rules! transact {
    ($self:expr, $iso:expr, |$tx:ident| $body:expr) => {{
        let mut tries = 0u32;
        loop {
            tries += 1;
            let mut client = $self.pool.get().await.map_err(be)?;
            let $tx = match client
                .build_transaction()
                .isolation_level($iso)
                .start()
                .await
            {
                Ok(t) => t,
                Err(e) => break Err(pg_be(&e)),
            };
            let out: TxResult<_> = async { $body }.await;
            let err = match out {
                Ok(v) => match $tx.commit().await {
                    Ok(()) => break Ok(v),
                    Err(e) => Some(e),
                },
                Err(TxError::Storage(e)) => break Err(e),
                Err(TxError::Pg(e)) => Some(e),
                Err(TxError::Retry) => None,
            };
            match err {
                Some(e) if !retryable(&e) || tries >= MAX_TRIES => break Err(pg_be(&e)),
                None if tries >= MAX_TRIES => {
                    break Err(StorageError::Backend(
                        "gave up after concurrent writes".into(),
                    ));
                }
                _ => {}
            }
            // Dropping the transaction rolled it back; wait a little, jittered.
            let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0]) % 8;
            tokio::time::sleep(std::time::Duration::from_millis(
                (1u64 << tries.min(6)) + jitter,
            ))
            .await;
        }
    }};
}

const SER: IsolationLevel = IsolationLevel::Serializable;
/// Reads of several statements: one snapshot, and (read-only) never a
/// serialization failure.
const SNAP: IsolationLevel = IsolationLevel::RepeatableRead;
const RC: IsolationLevel = IsolationLevel::ReadCommitted;

/// The PostgreSQL backend. Cheap to clone (the pool is shared).
#[derive(Clone)]
pub struct PostgresStorage {
    pool: Pool,
}

/// A parsed `postgres://` URL with doorcode's own parameters taken out.
#[derive(Debug, Clone)]
pub struct PgSettings {
    pub pg: tokio_postgres::Config,
    pub schema: Option<String>,
    pub pool_size: usize,
}

fn valid_schema(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && s.len() <= 63
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

impl PgSettings {
    /// Parse `postgres://…[?schema=NAME][&pool_size=N][&other tokio-postgres params]`.
    pub fn parse(url: &str) -> Result<Self> {
        let (base, query) = match url.split_once('?') {
            Some((b, q)) => (b, q),
            None => (url, ""),
        };
        let mut schema = None;
        let mut pool_size = DEFAULT_POOL_SIZE;
        let mut rest = Vec::new();
        for part in query.split('&').filter(|p| !p.is_empty()) {
            match part.split_once('=') {
                Some(("schema", v)) => {
                    if !valid_schema(v) {
                        return Err(StorageError::Invalid(
                            "schema must be lowercase letters, digits and _ (at most 63)".into(),
                        ));
                    }
                    schema = Some(v.to_string());
                }
                Some(("pool_size", v)) => {
                    pool_size = v
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=1000).contains(n))
                        .ok_or_else(|| {
                            StorageError::Invalid("pool_size must be 1..=1000".into())
                        })?;
                }
                _ => rest.push(part),
            }
        }
        let url = if rest.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", rest.join("&"))
        };
        // The parser's message may quote the URL (and a password): keep it out.
        let mut pg: tokio_postgres::Config = url
            .parse()
            .map_err(|_| StorageError::Invalid("not a valid postgres:// URL".into()))?;
        if let Some(s) = &schema {
            let mut opts = pg.get_options().unwrap_or_default().to_string();
            if !opts.is_empty() {
                opts.push(' ');
            }
            opts.push_str(&format!("-c search_path={s}"));
            pg.options(opts);
        }
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(std::time::Duration::from_secs(10));
        }
        if pg.get_application_name().is_none() {
            pg.application_name("doorcode");
        }
        Ok(Self {
            pg,
            schema,
            pool_size,
        })
    }
}

/// Apply pending migrations under a session advisory lock, on a connection
/// of its own (the lock goes with it whatever happens).
async fn migrate(settings: &PgSettings) -> Result<()> {
    let (mut client, conn) = settings.pg.connect(NoTls).await.map_err(|e| pg_be(&e))?;
    let task = tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::warn!(error = %e, "postgres migration connection");
        }
    });
    let out = migrate_on(&mut client, settings.schema.as_deref()).await;
    drop(client);
    let _ = task.await;
    out
}

async fn migrate_on(client: &mut tokio_postgres::Client, schema: Option<&str>) -> Result<()> {
    let key = format!("doorcode-migrate:{}", schema.unwrap_or("(search_path)"));
    client
        .execute("SELECT pg_advisory_lock(hashtext($1))", &[&key])
        .await
        .map_err(|e| pg_be(&e))?;
    let out = async {
        if let Some(s) = schema {
            // Validated identifier; cannot carry SQL.
            client
                .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {s}"))
                .await?;
        }
        client
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS doorcode_migrations(
                   version BIGINT PRIMARY KEY,
                   applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
            )
            .await?;
        let row = client
            .query_one(
                "SELECT COALESCE(MAX(version), 0) FROM doorcode_migrations",
                &[],
            )
            .await?;
        let version: i64 = row.try_get(0)?;
        Ok::<i64, tokio_postgres::Error>(version)
    }
    .await;
    let result = match out {
        Err(e) => Err(pg_be(&e)),
        Ok(version) => apply_from(client, version).await,
    };
    let _ = client
        .execute("SELECT pg_advisory_unlock(hashtext($1))", &[&key])
        .await;
    result
}

async fn apply_from(client: &mut tokio_postgres::Client, version: i64) -> Result<()> {
    let known = i64::try_from(MIGRATIONS.len()).map_err(be)?;
    if version > known {
        return Err(StorageError::Backend(format!(
            "database schema version {version} is newer than this server ({known})"
        )));
    }
    for (i, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(version).map_err(be)?)
    {
        let v = i64::try_from(i + 1).map_err(be)?;
        let tx = client.transaction().await.map_err(|e| pg_be(&e))?;
        tx.batch_execute(sql).await.map_err(|e| pg_be(&e))?;
        tx.execute("INSERT INTO doorcode_migrations(version) VALUES($1)", &[&v])
            .await
            .map_err(|e| pg_be(&e))?;
        tx.commit().await.map_err(|e| pg_be(&e))?;
        tracing::info!(version = v, "postgres migration applied");
    }
    Ok(())
}

fn fin<T>(r: TxResult<T>) -> Result<T> {
    match r {
        Ok(v) => Ok(v),
        Err(TxError::Pg(e)) => Err(pg_be(&e)),
        Err(TxError::Storage(e)) => Err(e),
        Err(TxError::Retry) => Err(StorageError::Backend("concurrent write".into())),
    }
}

impl PostgresStorage {
    /// One read-only statement, outside an explicit transaction (a statement
    /// is atomic and sees one snapshot): two round trips fewer than
    /// BEGIN … COMMIT on the hot read paths (tokens, manifests).
    async fn read(&self, sql: &str, p: Params<'_>) -> TxResult<Vec<Row>> {
        let client = self.pool.get().await.map_err(be)?;
        let st = client.prepare_cached(sql).await?;
        Ok(client.query(&st, p).await?)
    }

    async fn read_opt(&self, sql: &str, p: Params<'_>) -> TxResult<Option<Row>> {
        let client = self.pool.get().await.map_err(be)?;
        let st = client.prepare_cached(sql).await?;
        Ok(client.query_opt(&st, p).await?)
    }

    /// Connect (parsing the URL), apply migrations, and build the pool.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::with_settings(PgSettings::parse(url)?).await
    }

    pub async fn with_settings(settings: PgSettings) -> Result<Self> {
        migrate(&settings).await?;
        let mgr = Manager::from_config(
            settings.pg.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(settings.pool_size)
            .build()
            .map_err(be)?;
        // Fail at startup, not at the first request, if the pool cannot connect.
        drop(pool.get().await.map_err(be)?);
        Ok(Self { pool })
    }

    /// The number of migrations this server knows (the schema version it writes).
    pub fn migrations() -> i64 {
        i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX)
    }

    /// The applied schema version.
    pub async fn schema_version(&self) -> Result<i64> {
        transact!(self, RC, |tx| async {
            let r = query_one(
                &tx,
                "SELECT COALESCE(MAX(version), 0) FROM doorcode_migrations",
                &[],
            )
            .await?;
            get::<i64>(&r, 0)
        }
        .await)
    }
}

/// Statuses are stored as their [`Label`] words in TEXT columns.
macro_rules! label_columns {
    ($($t:ty),*) => {$(
        impl ToSql for $t {
            fn to_sql(
                &self,
                ty: &Type,
                out: &mut BytesMut,
            ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
                self.as_str().to_sql(ty, out)
            }
            fn accepts(ty: &Type) -> bool {
                <&str as ToSql>::accepts(ty)
            }
            to_sql_checked!();
        }
        impl<'a> FromSql<'a> for $t {
            fn from_sql(
                ty: &Type,
                raw: &'a [u8],
            ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
                let s = <&str as FromSql>::from_sql(ty, raw)?;
                <$t as Label>::parse(s)
                    .ok_or_else(|| format!("unknown {} {s:?}", stringify!($t)).into())
            }
            fn accepts(ty: &Type) -> bool {
                <&str as FromSql>::accepts(ty)
            }
        }
    )*};
}

label_columns!(ParcelState, SignalKind, EventKind, NoticeState);

// ---------- facts ----------

fn parcel_of(r: &Row) -> TxResult<ParcelFacts> {
    Ok(ParcelFacts {
        parcel_id: get(r, 0)?,
        state: get(r, 1)?,
        requires_code: get(r, 2)?,
        delivery_date: get(r, 3)?,
        attempt: u32_of(get(r, 4)?)?,
        wrong_tries: u32_of(get(r, 5)?)?,
        locked: get(r, 6)?,
        route_id: get(r, 7)?,
        route_courier: get(r, 8)?,
    })
}

/// One parcel's facts, its row locked until the transaction ends.
async fn locked_parcel(tx: &Tx<'_>, parcel_id: &str) -> TxResult<Option<ParcelFacts>> {
    let sql = format!("{PARCEL_FACTS} {PARCEL_FACTS_FROM} WHERE p.parcel_id = $1 FOR UPDATE OF p");
    query_opt(tx, &sql, &[&parcel_id])
        .await?
        .as_ref()
        .map(parcel_of)
        .transpose()
}

/// Parcels by id, rows locked in id order (so two uploads never deadlock).
async fn locked_parcels(tx: &Tx<'_>, ids: &[String]) -> TxResult<HashMap<String, ParcelFacts>> {
    let sql = format!(
        "{PARCEL_FACTS} {PARCEL_FACTS_FROM} WHERE p.parcel_id = ANY($1) ORDER BY p.parcel_id FOR UPDATE OF p"
    );
    let mut out = HashMap::new();
    for r in query(tx, &sql, &[&ids]).await? {
        let p = parcel_of(&r)?;
        out.insert(p.parcel_id.clone(), p);
    }
    Ok(out)
}

async fn ingest_facts(tx: &Tx<'_>, device_id: &str, k: &Keys) -> TxResult<IngestFacts> {
    // The device first: one device's uploads queue behind each other.
    let device = match query_opt(
        tx,
        "SELECT courier_id, last_seq, revoked_at IS NOT NULL FROM devices WHERE device_id=$1 FOR UPDATE",
        &[&device_id],
    )
    .await?
    {
        Some(r) => Some(DeviceFacts {
            device_id: device_id.to_string(),
            courier_id: get(&r, 0)?,
            last_seq: u64_of(get(&r, 1)?)?,
            revoked: get(&r, 2)?,
        }),
        None => None,
    };
    let mut f = IngestFacts {
        device,
        parcels: locked_parcels(tx, &k.parcel_ids).await?,
        ..IngestFacts::default()
    };
    let ids = &k.confirmation_ids;
    let seen =
        "SELECT confirmation_id, device_id FROM confirmations WHERE confirmation_id = ANY($1)";
    for r in query(tx, seen, &[ids]).await? {
        f.seen.insert(get(&r, 0)?, get(&r, 1)?);
    }
    let items =
        "SELECT manifest_id, revision, parcel_id, delivery_date, attempt FROM manifest_items
                 WHERE device_id=$1 AND parcel_id = ANY($2)";
    for r in query(tx, items, &[&device_id, &k.parcel_ids]).await? {
        f.manifest_items.insert(ManifestItem {
            manifest_id: get(&r, 0)?,
            revision: u64_of(get(&r, 1)?)?,
            parcel_id: get(&r, 2)?,
            delivery_date: get(&r, 3)?,
            attempt: u32_of(get(&r, 4)?)?,
        });
    }
    let seqs = k
        .seqs
        .iter()
        .map(|s| i64_of(*s))
        .collect::<TxResult<Vec<_>>>()?;
    let used = "SELECT seq FROM confirmations WHERE device_id=$1 AND seq = ANY($2)";
    for r in query(tx, used, &[&device_id, &seqs]).await? {
        f.used_seqs.insert(u64_of(get(&r, 0)?)?);
    }
    let stale = "SELECT confirmation_id FROM signals WHERE kind=$1 AND confirmation_id = ANY($2)";
    for r in query(tx, stale, &[&SignalKind::StaleManifest, ids]).await? {
        f.stale_signalled.insert(get(&r, 0)?);
    }
    Ok(f)
}

async fn route_facts(tx: &Tx<'_>, route: &RouteInput) -> TxResult<RouteFacts> {
    let date = route.delivery_date;
    let mut f = RouteFacts::default();
    if let Some(r) = query_opt(
        tx,
        "SELECT route_id FROM routes WHERE courier_id=$1 AND delivery_date=$2 AND route_id<>$3",
        &[&route.courier_id, &date, &route.route_id],
    )
    .await?
    {
        f.other_route = Some(get(&r, 0)?);
    }
    if let Some(r) = query_opt(
        tx,
        "SELECT revision FROM routes WHERE route_id=$1 AND delivery_date=$2",
        &[&route.route_id, &date],
    )
    .await?
    {
        f.revision = Some(u64_of(get(&r, 0)?)?);
    }
    let ids: Vec<&str> = route
        .stops
        .iter()
        .flat_map(|s| s.parcel_ids.iter().map(String::as_str))
        .collect();
    // Each parcel, and the other route it may be on for this date.
    let sql = format!(
        "{PARCEL_FACTS}, p.recipient_name, e.route_id {PARCEL_FACTS_FROM}
         LEFT JOIN stop_parcels e ON e.parcel_id = p.parcel_id AND e.delivery_date = $2 AND e.route_id <> $3
         WHERE p.parcel_id = ANY($1)"
    );
    for r in query(tx, &sql, &[&ids, &date, &route.route_id]).await? {
        let p = RouteParcel {
            facts: parcel_of(&r)?,
            recipient_name: get(&r, 9)?,
            elsewhere: get(&r, 10)?,
        };
        f.parcels.insert(p.facts.parcel_id.clone(), p);
    }
    let before = "SELECT s.parcel_id, p.status FROM stop_parcels s JOIN parcels p ON p.parcel_id = s.parcel_id
                  WHERE s.route_id=$1 AND s.delivery_date=$2";
    for r in query(tx, before, &[&route.route_id, &date]).await? {
        f.before.push((get(&r, 0)?, get(&r, 1)?));
    }
    Ok(f)
}

async fn close_facts(tx: &Tx<'_>, date: NaiveDate, next: NaiveDate) -> TxResult<CloseFacts> {
    let mut f = CloseFacts::default();
    let placed = "SELECT p.parcel_id, p.status, p.attempt, p.requires_code, s.route_id, r.courier_id, s.stop_id,
           st.address, st.recipient
         FROM parcels p
         JOIN stop_parcels s ON s.parcel_id=p.parcel_id AND s.delivery_date=p.delivery_date
         JOIN routes r ON r.route_id=s.route_id AND r.delivery_date=s.delivery_date
         JOIN stops st ON st.route_id=s.route_id AND st.delivery_date=s.delivery_date AND st.stop_id=s.stop_id
         WHERE p.delivery_date=$1
         ORDER BY s.route_id, st.sequence, s.position";
    for r in query(tx, placed, &[&date]).await? {
        f.placed.push(Placed {
            parcel_id: get(&r, 0)?,
            state: get(&r, 1)?,
            attempt: u32_of(get(&r, 2)?)?,
            requires_code: get(&r, 3)?,
            route_id: get(&r, 4)?,
            courier_id: get(&r, 5)?,
            stop_id: get(&r, 6)?,
            address: get(&r, 7)?,
            recipient: get(&r, 8)?,
        });
    }
    // The next day's routes of the closed day's couriers and route ids.
    let next_routes = "SELECT route_id, courier_id FROM routes WHERE delivery_date=$2 AND (
           courier_id IN (SELECT courier_id FROM routes WHERE delivery_date=$1)
           OR route_id IN (SELECT route_id FROM routes WHERE delivery_date=$1))";
    for r in query(tx, next_routes, &[&date, &next]).await? {
        f.next_routes.push((get(&r, 0)?, get(&r, 1)?));
    }
    let stops = format!(
        "SELECT st.route_id, st.stop_id, st.sequence, st.address,
           (SELECT COUNT(*) FROM stop_parcels sp
            WHERE sp.route_id=st.route_id AND sp.delivery_date=st.delivery_date AND sp.stop_id=st.stop_id)
         FROM stops st WHERE st.delivery_date=$2 AND st.route_id IN (SELECT route_id FROM ({next_routes}) n)"
    );
    for r in query(tx, &stops, &[&date, &next]).await? {
        f.next_stops.push(NextStop {
            route_id: get(&r, 0)?,
            stop_id: get(&r, 1)?,
            sequence: u32_of(get(&r, 2)?)?,
            address: get(&r, 3)?,
            parcels: u32_of(get(&r, 4)?)?,
        });
    }
    Ok(f)
}

// ---------- applying a plan ----------

async fn route_change(tx: &Tx<'_>, c: &RouteChange, now: &DateTime<Utc>) -> TxResult<()> {
    match c {
        RouteChange::Put(h) | RouteChange::Open(h) => {
            let sql = if matches!(c, RouteChange::Put(_)) {
                "INSERT INTO routes(route_id, delivery_date, courier_id, revision, updated_at) VALUES($1,$2,$3,$4,$5)
                 ON CONFLICT(route_id, delivery_date) DO UPDATE SET courier_id=$3, revision=$4, updated_at=$5"
            } else {
                "INSERT INTO routes(route_id, delivery_date, courier_id, revision, updated_at) VALUES($1,$2,$3,$4,$5)"
            };
            let rev = i64_of(h.revision)?;
            exec(tx, sql, &[&h.route_id, &h.date, &h.courier_id, &rev, now]).await?
        }
        RouteChange::Bump(r) => {
            let sql = "UPDATE routes SET revision = revision + 1, updated_at = $3 WHERE route_id = $1 AND delivery_date = $2";
            exec(tx, sql, &[&r.route_id, &r.date, now]).await?
        }
        RouteChange::Clear(r) => {
            let p: Params<'_> = &[&r.route_id, &r.date];
            exec(
                tx,
                "DELETE FROM stop_parcels WHERE route_id=$1 AND delivery_date=$2",
                p,
            )
            .await?;
            exec(
                tx,
                "DELETE FROM stops WHERE route_id=$1 AND delivery_date=$2",
                p,
            )
            .await?
        }
        RouteChange::AddStop(st) => {
            let sql = "INSERT INTO stops(route_id, delivery_date, stop_id, sequence, address, recipient) VALUES($1,$2,$3,$4,$5,$6)";
            let seq = i64::from(st.sequence);
            exec(
                tx,
                sql,
                &[
                    &st.route_id,
                    &st.date,
                    &st.stop_id,
                    &seq,
                    &st.address,
                    &st.recipient,
                ],
            )
            .await?
        }
        RouteChange::Place(pl) => {
            let sql = "INSERT INTO stop_parcels(route_id, delivery_date, stop_id, parcel_id, position) VALUES($1,$2,$3,$4,$5)
                 ON CONFLICT(delivery_date, parcel_id) DO UPDATE SET route_id=$1, stop_id=$3, position=$5";
            let pos = i64::from(pl.position);
            exec(
                tx,
                sql,
                &[&pl.route_id, &pl.date, &pl.stop_id, &pl.parcel_id, &pos],
            )
            .await?
        }
        RouteChange::Unplace(date, parcel_id) => {
            let sql = "DELETE FROM stop_parcels WHERE delivery_date=$1 AND parcel_id=$2";
            exec(tx, sql, &[date, parcel_id]).await?
        }
    };
    Ok(())
}

async fn parcel_change(tx: &Tx<'_>, c: &ParcelChange, now: &DateTime<Utc>) -> TxResult<()> {
    match c {
        ParcelChange::Put(p) => {
            let sql = "INSERT INTO parcels(parcel_id, recipient_name, email, phone, address, value, currency,
                   requires_code, track_token, created_at, updated_at) VALUES($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$10)
                 ON CONFLICT(parcel_id) DO UPDATE SET recipient_name=$2, email=$3, phone=$4, address=$5,
                   value=$6, currency=$7, requires_code=$8, updated_at=$10";
            let v: Params<'_> = &[
                &p.parcel_id,
                &p.recipient_name,
                &p.email,
                &p.phone,
                &p.address,
                &p.value,
                &p.currency,
                &p.requires_code,
                &p.track_token,
                now,
            ];
            exec(tx, sql, v).await?
        }
        ParcelChange::Schedule(s) => {
            let sql = "UPDATE parcels SET status=$2, delivery_date=$3, attempt=$4, route_id=$5, requires_code=$6,
                   track_token=COALESCE($7, track_token), wrong_tries=0, locked=FALSE, updated_at=$8 WHERE parcel_id=$1";
            let a = i64::from(s.attempt);
            let v: Params<'_> = &[
                &s.parcel_id,
                &ParcelState::Scheduled,
                &s.date,
                &a,
                &s.route_id,
                &s.requires_code,
                &s.track_token,
                now,
            ];
            exec(tx, sql, v).await?
        }
        ParcelChange::Unschedule(parcel_id) => {
            let sql = "UPDATE parcels SET status=$2, delivery_date=NULL, route_id=NULL, updated_at=$3 WHERE parcel_id=$1";
            exec(tx, sql, &[parcel_id, &ParcelState::Pending, now]).await?
        }
        ParcelChange::Reassign(parcel_id, route_id) => {
            let sql = "UPDATE parcels SET route_id=$2, updated_at=$3 WHERE parcel_id=$1";
            exec(tx, sql, &[parcel_id, route_id, now]).await?
        }
        ParcelChange::Tries(t) => {
            let sql =
                "UPDATE parcels SET wrong_tries=$2, locked=$3, updated_at=$4 WHERE parcel_id=$1";
            exec(
                tx,
                sql,
                &[&t.parcel_id, &i64::from(t.wrong_tries), &t.locked, now],
            )
            .await?
        }
    };
    Ok(())
}

/// Persist a decision's [`Changes`]: row changes one statement each, then
/// states, events, signals and notices one `UNNEST` statement per table.
async fn apply(tx: &Tx<'_>, ch: &Changes, now: &DateTime<Utc>) -> TxResult<()> {
    for c in &ch.routes {
        route_change(tx, c, now).await?;
    }
    for c in &ch.parcels {
        parcel_change(tx, c, now).await?;
    }
    if !ch.states.is_empty() {
        let (ids, states): (Vec<&str>, Vec<ParcelState>) =
            ch.states.iter().map(|(p, s)| (p.as_str(), *s)).unzip();
        exec(
            tx,
            "UPDATE parcels p SET status=u.status, updated_at=$3
             FROM UNNEST($1::text[], $2::text[]) AS u(id, status) WHERE p.parcel_id=u.id",
            &[&ids, &states, now],
        )
        .await?;
    }
    if !ch.events.is_empty() {
        let ids: Vec<&str> = ch.events.iter().map(|e| e.parcel_id.as_str()).collect();
        let kinds: Vec<EventKind> = ch.events.iter().map(|e| e.kind).collect();
        let details: Vec<&str> = ch.events.iter().map(|e| e.detail.as_str()).collect();
        exec(
            tx,
            "INSERT INTO parcel_events(parcel_id, at, kind, detail)
             SELECT u.p, $1, u.k, u.d FROM UNNEST($2::text[], $3::text[], $4::text[]) WITH ORDINALITY AS u(p, k, d, n)
             ORDER BY u.n",
            &[now, &ids, &kinds, &details],
        )
        .await?;
    }
    if !ch.signals.is_empty() {
        let s = &ch.signals;
        let kinds: Vec<SignalKind> = s.iter().map(|x| x.kind).collect();
        let parcels: Vec<&str> = s.iter().map(|x| x.parcel_id.as_str()).collect();
        let devices: Vec<Option<&str>> = s.iter().map(|x| x.device_id.as_deref()).collect();
        let confs: Vec<Option<&str>> = s.iter().map(|x| x.confirmation_id.as_deref()).collect();
        let days: Vec<NaiveDate> = s.iter().map(|x| x.day).collect();
        let details: Vec<&str> = s.iter().map(|x| x.detail.as_str()).collect();
        let matched: Vec<Option<bool>> = s.iter().map(|x| x.code_matched).collect();
        exec(
            tx,
            "INSERT INTO signals(kind, parcel_id, device_id, confirmation_id, day, detail, code_matched, at)
             SELECT u.k, u.p, u.d, u.c, u.day, u.detail, u.m, $1
             FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[], $6::date[], $7::text[], $8::bool[])
               WITH ORDINALITY AS u(k, p, d, c, day, detail, m, n)
             ORDER BY u.n",
            &[now, &kinds, &parcels, &devices, &confs, &days, &details, &matched],
        )
        .await?;
    }
    if !ch.notices.is_empty() {
        let ids: Vec<&str> = ch.notices.iter().map(|n| n.parcel_id.as_str()).collect();
        let days: Vec<NaiveDate> = ch.notices.iter().map(|n| n.delivery_date).collect();
        let attempts: Vec<i64> = ch.notices.iter().map(|n| i64::from(n.attempt)).collect();
        exec(
            tx,
            "INSERT INTO notices(parcel_id, delivery_date, attempt, status, next_attempt_at, created_at)
             SELECT u.p, u.d, u.a, $1, $2, $2 FROM UNNEST($3::text[], $4::date[], $5::bigint[]) WITH ORDINALITY AS u(p, d, a, n)
             ORDER BY u.n",
            &[&NoticeState::Pending, now, &ids, &days, &attempts],
        )
        .await?;
    }
    Ok(())
}

/// An upload's plan: its confirmations first (see the module doc), the
/// device's seq, then the changes.
async fn apply_ingest(
    tx: &Tx<'_>,
    device_id: &str,
    plan: &IngestPlan,
    now: &DateTime<Utc>,
) -> TxResult<()> {
    if !plan.confirmations.is_empty() {
        let rows = &plan.confirmations;
        let col = |f: fn(&ConfirmationRow) -> String| rows.iter().map(f).collect::<Vec<_>>();
        let num = |f: fn(&ConfirmationRow) -> u64| {
            rows.iter()
                .map(|r| i64_of(f(r)))
                .collect::<TxResult<Vec<_>>>()
        };
        let inserted = query(
            tx,
            "INSERT INTO confirmations(confirmation_id, device_id, seq, manifest_id, revision, parcel_id, delivery_date,
               attempt, outcome, reason, verified, failed_attempts, code_ok, disputed, recorded_at, received_at)
             SELECT u.*, $16 FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::bigint[], $6::text[],
               $7::date[], $8::bigint[], $9::text[], $10::text[], $11::text[], $12::bigint[], $13::bool[], $14::bool[],
               $15::timestamptz[]) AS u
             ON CONFLICT (confirmation_id) DO NOTHING RETURNING confirmation_id",
            &[
                &col(|r| r.c.confirmation_id.clone()),
                &col(|r| r.c.device_id.clone()),
                &num(|r| r.c.seq)?,
                &col(|r| r.c.manifest_id.clone()),
                &num(|r| r.c.revision)?,
                &col(|r| r.c.parcel_id.clone()),
                &rows.iter().map(|r| r.c.delivery_date).collect::<Vec<_>>(),
                &num(|r| u64::from(r.c.attempt))?,
                &col(|r| r.c.outcome.as_str().to_string()),
                &rows.iter().map(|r| r.c.reason.map(Label::as_str)).collect::<Vec<_>>(),
                &col(|r| r.c.verified.as_str().to_string()),
                &num(|r| u64::from(r.c.failed_attempts))?,
                &rows.iter().map(|r| r.c.code_ok).collect::<Vec<_>>(),
                &rows.iter().map(|r| r.disputed).collect::<Vec<_>>(),
                &rows.iter().map(|r| r.c.recorded_at).collect::<Vec<_>>(),
                now,
            ],
        )
        .await?;
        if inserted.len() != rows.len() {
            // Another transaction stored one of these ids since the facts were read.
            return Err(TxError::Retry);
        }
    }
    if let Some(seq) = plan.last_seq {
        exec(
            tx,
            "UPDATE devices SET last_seq=GREATEST(last_seq, $2) WHERE device_id=$1",
            &[&device_id, &i64_of(seq)?],
        )
        .await?;
    }
    apply(tx, &plan.changes, now).await
}

// ---------- reads ----------

const CONTACT_COLS: &str = "parcel_id, recipient_name, email, phone, requires_code, status, delivery_date, attempt, track_token";

fn contact_of(r: &Row) -> TxResult<ParcelContact> {
    Ok(ParcelContact {
        parcel_id: get(r, 0)?,
        recipient_name: get(r, 1)?,
        email: get(r, 2)?,
        phone: get(r, 3)?,
        requires_code: get(r, 4)?,
        status: get(r, 5)?,
        delivery_date: get(r, 6)?,
        attempt: u32_of(get(r, 7)?)?,
        track_token: get(r, 8)?,
    })
}

const DEVICE_COLS: &str = "device_id, courier_id, name, public_key, revoked_at, last_seen_at";

fn device_of(r: &Row) -> TxResult<Device> {
    Ok(Device {
        device_id: get(r, 0)?,
        courier_id: get(r, 1)?,
        name: get(r, 2)?,
        public_key: get(r, 3)?,
        revoked_at: get(r, 4)?,
        last_seen_at: get(r, 5)?,
    })
}

fn manifest_of(r: &Row, date: NaiveDate, device_id: &str) -> TxResult<StoredManifest> {
    Ok(StoredManifest {
        route_id: get(r, 0)?,
        delivery_date: date,
        device_id: device_id.to_string(),
        manifest_id: get(r, 1)?,
        revision: u64_of(get(r, 2)?)?,
        envelope_json: get(r, 3)?,
        items: Vec::new(),
    })
}

async fn load_route(tx: &Tx<'_>, route_id: &str, date: NaiveDate) -> TxResult<Option<RouteData>> {
    let Some(head) = query_opt(
        tx,
        "SELECT courier_id, revision FROM routes WHERE route_id=$1 AND delivery_date=$2",
        &[&route_id, &date],
    )
    .await?
    else {
        return Ok(None);
    };
    // All of the route's parcels in one query, grouped by stop here.
    let mut by_stop: HashMap<String, Vec<RouteParcelData>> = HashMap::new();
    let parcel_rows = query(
        tx,
        "SELECT s.stop_id, p.parcel_id, p.requires_code, p.attempt, p.status FROM stop_parcels s
         JOIN parcels p ON p.parcel_id = s.parcel_id
         WHERE s.route_id=$1 AND s.delivery_date=$2 AND p.delivery_date = s.delivery_date
         ORDER BY s.stop_id, s.position",
        &[&route_id, &date],
    )
    .await?;
    for p in &parcel_rows {
        by_stop
            .entry(get(p, 0)?)
            .or_default()
            .push(RouteParcelData {
                parcel_id: get(p, 1)?,
                requires_code: get(p, 2)?,
                attempt: u32_of(get(p, 3)?)?,
                held: get::<ParcelState>(p, 4)? == ParcelState::Held,
            });
    }
    let mut stops = Vec::new();
    let stop_rows = query(
        tx,
        "SELECT stop_id, sequence, address, recipient FROM stops
         WHERE route_id=$1 AND delivery_date=$2 ORDER BY sequence",
        &[&route_id, &date],
    )
    .await?;
    for r in &stop_rows {
        let stop_id: String = get(r, 0)?;
        stops.push(RouteStopData {
            parcels: by_stop.remove(&stop_id).unwrap_or_default(),
            stop_id,
            sequence: u32_of(get(r, 1)?)?,
            address: get(r, 2)?,
            recipient: get(r, 3)?,
        });
    }
    Ok(Some(RouteData {
        route_id: route_id.to_string(),
        courier_id: get(&head, 0)?,
        delivery_date: date,
        revision: u64_of(get(&head, 1)?)?,
        stops,
    }))
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
            let (out, ch) = domain::parcels::decide(&existing, &items);
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

    async fn parcel_by_track_token(&self, token: &str) -> Result<Option<ParcelContact>> {
        fin(async {
            let sql = format!("SELECT {CONTACT_COLS} FROM parcels WHERE track_token=$1");
            self.read_opt(&sql, &[&token])
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

    async fn current_manifest(
        &self,
        dev: &Device,
        date: NaiveDate,
    ) -> Result<Option<StoredManifest>> {
        let (courier_id, device_id) = (&dev.courier_id, dev.device_id.as_str());
        fin(async {
            self.read_opt(
                "SELECT m.route_id, m.manifest_id, m.revision, m.envelope FROM routes r
                 JOIN manifests m ON m.route_id=r.route_id AND m.delivery_date=r.delivery_date AND m.device_id=$3
                 WHERE r.courier_id=$1 AND r.delivery_date=$2 AND m.revision >= r.revision",
                &[&courier_id, &date, &device_id],
            )
            .await?
            .map(|r| manifest_of(&r, date, device_id))
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
        let until = now + chrono::Duration::seconds(secs);
        let limit = i64::from(n);
        // READ COMMITTED: rows another node holds are skipped, and a row it
        // claimed and committed meanwhile is re-checked against the WHERE
        // (its lease is in the future now) before we take it.
        transact!(self, RC, |tx| {
            async {
            query(
                &tx,
                // MATERIALIZED: the locking, limited pick runs exactly once
                // (as an IN sub-select it may be re-run per row and take more).
                "WITH due AS MATERIALIZED (
                   SELECT id FROM notices
                   WHERE status=$4 AND next_attempt_at <= $1 AND (claimed_until IS NULL OR claimed_until <= $1)
                   ORDER BY id LIMIT $3
                   FOR UPDATE SKIP LOCKED)
                 UPDATE notices n SET claimed_until=$2 FROM due WHERE n.id = due.id
                 RETURNING n.id, n.parcel_id, n.delivery_date, n.attempt, n.tries",
                &[&now, &until, &limit, &NoticeState::Pending],
            )
            .await?
            .iter()
            .map(|r| {
                Ok(NoticeJob {
                    notice_id: get(r, 0)?,
                    parcel_id: get(r, 1)?,
                    delivery_date: get(r, 2)?,
                    attempt: u32_of(get(r, 3)?)?,
                    tries: u32_of(get(r, 4)?)?,
                })
            })
            .collect::<TxResult<Vec<_>>>()
            .map(|mut v| {
                v.sort_by_key(|j| j.notice_id);
                v
            })
        }
        .await
        })
    }

    async fn renew_notice_claims(&self, notice_ids: &[i64], until: DateTime<Utc>) -> Result<()> {
        let ids = notice_ids.to_vec();
        transact!(self, RC, |tx| {
            async {
            exec(
                &tx,
                "UPDATE notices SET claimed_until=$2 WHERE id = ANY($1) AND status=$3 AND claimed_until IS NOT NULL",
                &[&ids, &until, &NoticeState::Pending],
            )
            .await?;
            Ok(())
        }
        .await
        })
    }

    async fn notice_sent(&self, notice_id: i64, now: DateTime<Utc>) -> Result<()> {
        transact!(self, RC, |tx| {
            async {
            exec(
                &tx,
                "UPDATE notices SET status=$3, sent_at=$2, claimed_until=NULL, tries=tries+1 WHERE id=$1",
                &[&notice_id, &now, &NoticeState::Sent],
            )
            .await?;
            Ok(())
        }
        .await
        })
    }

    async fn notice_failed(&self, id: i64, e: &str, retry: Option<DateTime<Utc>>) -> Result<()> {
        let (notice_id, error) = (id, e);
        transact!(self, RC, |tx| {
            async {
            match retry {
                Some(t) => exec(
                    &tx,
                    "UPDATE notices SET tries=tries+1, last_error=$2, next_attempt_at=$3, claimed_until=NULL WHERE id=$1",
                    &[&notice_id, &error, &t],
                )
                .await?,
                None => exec(
                    &tx,
                    "UPDATE notices SET tries=tries+1, last_error=$2, status=$3, claimed_until=NULL WHERE id=$1",
                    &[&notice_id, &error, &NoticeState::Failed],
                )
                .await?,
            };
            Ok(())
        }
        .await
        })
    }

    async fn notice_counts(&self) -> Result<(u64, u64, u64)> {
        fin(async {
            let rows = self
                .read(
                    "SELECT status, COUNT(*) FROM notices WHERE status = ANY($1) GROUP BY status",
                    &[&NoticeState::ALL],
                )
                .await?;
            let mut by = HashMap::new();
            for r in &rows {
                by.insert(get::<NoticeState>(r, 0)?, u64_of(get(r, 1)?)?);
            }
            let n = |s| by.get(&s).copied().unwrap_or(0);
            Ok((
                n(NoticeState::Pending),
                n(NoticeState::Sent),
                n(NoticeState::Failed),
            ))
        }
        .await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parameters() {
        let s = PgSettings::parse(
            "postgres://u@127.0.0.1:5432/db?schema=depot_1&pool_size=4&sslmode=disable",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.schema.as_deref(), Some("depot_1"));
        assert_eq!(s.pool_size, 4);
        assert_eq!(s.pg.get_options(), Some("-c search_path=depot_1"));
        assert_eq!(s.pg.get_dbname(), Some("db"));
        assert!(PgSettings::parse("postgres://u@h/db?schema=Bad;DROP").is_err());
        assert!(PgSettings::parse("postgres://u@h/db?pool_size=0").is_err());
        let e = PgSettings::parse("postgres://u:secret@h:notaport/db").err();
        assert!(matches!(e, Some(StorageError::Invalid(m)) if !m.contains("secret")));
    }
}

#[path = "postgres_lifecycle.rs"]
mod lifecycle;
