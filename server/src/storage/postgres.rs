//! PostgreSQL storage: a pool of connections (deadpool-postgres), shared by
//! any number of stateless server nodes.
//!
//! - Every domain operation is one transaction, retried a few times on
//!   serialization failures (40001) and deadlocks (40P01). Most run
//!   SERIALIZABLE, so outcomes are those of some serial order, as with
//!   SQLite's single writer. The two hot paths, confirmation ingest and online
//!   verify, run READ COMMITTED and lock the rows they change first
//!   (`SELECT … FOR UPDATE`: the device, then the parcel), so concurrent
//!   requests queue instead of aborting; serializable writers of the same
//!   rows then see a concurrent update and retry. Reads of one statement
//!   run outside an explicit transaction; reads of several use one
//!   REPEATABLE READ snapshot.
//! - The notice outbox is claimed in READ COMMITTED with
//!   `FOR UPDATE SKIP LOCKED` and a lease, so concurrent senders on several
//!   nodes never claim the same notice.
//! - Confirmation ingest inserts with `ON CONFLICT (confirmation_id) DO
//!   NOTHING` before any other write and decides accepted or duplicate from
//!   that insert's result.
//! - Migrations are versioned in `doorcode_migrations` and applied under a
//!   session advisory lock, so nodes starting together apply each once.
//!
//! URL: `postgres://user@host:port/db?schema=NAME&pool_size=N` plus any
//! tokio-postgres parameter. `schema` and `pool_size` are doorcode's own: the
//! schema is created if missing and set as `search_path` on every connection.

use super::*;
use chrono::{DateTime, NaiveDate, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{IsolationLevel, NoTls, Row};

/// Schema migrations, applied in order; `doorcode_migrations` lists the applied ones.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE parcels(
  parcel_id TEXT PRIMARY KEY,
  recipient_name TEXT NOT NULL,
  email TEXT,
  phone TEXT,
  address TEXT NOT NULL,
  value DOUBLE PRECISION NOT NULL,
  currency TEXT NOT NULL,
  requires_code BOOLEAN NOT NULL,
  track_token TEXT NOT NULL UNIQUE,
  status TEXT NOT NULL DEFAULT 'pending',
  delivery_date DATE,
  attempt BIGINT NOT NULL DEFAULT 0,
  route_id TEXT,
  wrong_tries BIGINT NOT NULL DEFAULT 0,
  locked BOOLEAN NOT NULL DEFAULT FALSE,
  created_at TIMESTAMPTZ NOT NULL,
  updated_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE parcel_events(
  id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  parcel_id TEXT NOT NULL,
  at TIMESTAMPTZ NOT NULL,
  kind TEXT NOT NULL,
  detail TEXT NOT NULL
);
CREATE INDEX parcel_events_parcel ON parcel_events(parcel_id, id);
CREATE TABLE routes(
  route_id TEXT NOT NULL,
  delivery_date DATE NOT NULL,
  courier_id TEXT NOT NULL,
  revision BIGINT NOT NULL,
  updated_at TIMESTAMPTZ NOT NULL,
  PRIMARY KEY(route_id, delivery_date)
);
CREATE UNIQUE INDEX routes_courier_day ON routes(courier_id, delivery_date);
CREATE TABLE stops(
  route_id TEXT NOT NULL,
  delivery_date DATE NOT NULL,
  stop_id TEXT NOT NULL,
  sequence BIGINT NOT NULL,
  address TEXT NOT NULL,
  recipient TEXT NOT NULL,
  PRIMARY KEY(route_id, delivery_date, stop_id)
);
CREATE TABLE stop_parcels(
  route_id TEXT NOT NULL,
  delivery_date DATE NOT NULL,
  stop_id TEXT NOT NULL,
  parcel_id TEXT NOT NULL,
  position BIGINT NOT NULL,
  PRIMARY KEY(delivery_date, parcel_id)
);
CREATE INDEX stop_parcels_route ON stop_parcels(route_id, delivery_date);
CREATE TABLE enrollments(
  code_hash TEXT PRIMARY KEY,
  courier_id TEXT NOT NULL,
  expires_at TIMESTAMPTZ NOT NULL,
  created_at TIMESTAMPTZ NOT NULL,
  used_at TIMESTAMPTZ
);
CREATE TABLE devices(
  device_id TEXT PRIMARY KEY,
  courier_id TEXT NOT NULL,
  name TEXT NOT NULL,
  public_key TEXT NOT NULL,
  token_hash TEXT NOT NULL UNIQUE,
  enrolled_at TIMESTAMPTZ NOT NULL,
  last_seq BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX devices_courier ON devices(courier_id);
CREATE TABLE manifests(
  route_id TEXT NOT NULL,
  delivery_date DATE NOT NULL,
  device_id TEXT NOT NULL,
  manifest_id TEXT NOT NULL,
  revision BIGINT NOT NULL,
  envelope TEXT NOT NULL,
  PRIMARY KEY(route_id, delivery_date, device_id)
);
CREATE TABLE manifest_items(
  device_id TEXT NOT NULL,
  manifest_id TEXT NOT NULL,
  revision BIGINT NOT NULL,
  parcel_id TEXT NOT NULL,
  delivery_date DATE NOT NULL,
  attempt BIGINT NOT NULL,
  PRIMARY KEY(device_id, manifest_id, revision, parcel_id)
);
CREATE INDEX manifest_items_parcel ON manifest_items(device_id, parcel_id);
CREATE TABLE confirmations(
  confirmation_id TEXT PRIMARY KEY,
  device_id TEXT NOT NULL,
  seq BIGINT NOT NULL,
  manifest_id TEXT NOT NULL,
  revision BIGINT NOT NULL,
  parcel_id TEXT NOT NULL,
  delivery_date DATE NOT NULL,
  attempt BIGINT NOT NULL,
  outcome TEXT NOT NULL,
  reason TEXT,
  verified TEXT NOT NULL,
  failed_attempts BIGINT NOT NULL,
  code_ok BOOLEAN,
  disputed BOOLEAN NOT NULL,
  recorded_at TIMESTAMPTZ NOT NULL,
  received_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX confirmations_seq ON confirmations(device_id, seq);
CREATE TABLE signals(
  id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  kind TEXT NOT NULL,
  parcel_id TEXT,
  device_id TEXT,
  confirmation_id TEXT,
  detail TEXT NOT NULL,
  at TIMESTAMPTZ NOT NULL
);
CREATE TABLE notices(
  id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  parcel_id TEXT NOT NULL,
  delivery_date DATE NOT NULL,
  attempt BIGINT NOT NULL,
  status TEXT NOT NULL DEFAULT 'pending',
  tries BIGINT NOT NULL DEFAULT 0,
  next_attempt_at TIMESTAMPTZ NOT NULL,
  claimed_until TIMESTAMPTZ,
  last_error TEXT,
  created_at TIMESTAMPTZ NOT NULL,
  sent_at TIMESTAMPTZ
);
CREATE INDEX notices_due ON notices(status, next_attempt_at);
"#];

/// How many times one operation runs before a serialization failure is returned.
const MAX_TRIES: u32 = 10;
/// Default connections per node.
pub const DEFAULT_POOL_SIZE: usize = 16;

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];
type Tx<'a> = deadpool_postgres::Transaction<'a>;

/// An error inside a transaction: a database error (maybe retryable) or a
/// domain answer such as NotFound / Conflict.
#[derive(Debug)]
enum TxError {
    Pg(tokio_postgres::Error),
    Storage(StorageError),
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
                    Err(e) => e,
                },
                Err(TxError::Storage(e)) => break Err(e),
                Err(TxError::Pg(e)) => e,
            };
            if !retryable(&err) || tries >= MAX_TRIES {
                break Err(pg_be(&err));
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

async fn event(
    tx: &Tx<'_>,
    parcel_id: &str,
    now: DateTime<Utc>,
    kind: &str,
    detail: &str,
) -> TxResult<()> {
    exec(
        tx,
        "INSERT INTO parcel_events(parcel_id, at, kind, detail) VALUES($1, $2, $3, $4)",
        &[&parcel_id, &now, &kind, &detail],
    )
    .await?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn signal(
    tx: &Tx<'_>,
    kind: &str,
    parcel_id: Option<&str>,
    device_id: Option<&str>,
    confirmation_id: Option<&str>,
    detail: &str,
    now: DateTime<Utc>,
) -> TxResult<()> {
    exec(
        tx,
        "INSERT INTO signals(kind, parcel_id, device_id, confirmation_id, detail, at) VALUES($1,$2,$3,$4,$5,$6)",
        &[&kind, &parcel_id, &device_id, &confirmation_id, &detail, &now],
    )
    .await?;
    Ok(())
}

async fn bump_route(
    tx: &Tx<'_>,
    route_id: &str,
    date: NaiveDate,
    now: DateTime<Utc>,
) -> TxResult<()> {
    exec(
        tx,
        "UPDATE routes SET revision = revision + 1, updated_at = $3 WHERE route_id = $1 AND delivery_date = $2",
        &[&route_id, &date, &now],
    )
    .await?;
    Ok(())
}

/// Move a parcel to a (new) day and attempt, unlock it, and queue its notice.
async fn schedule(
    tx: &Tx<'_>,
    parcel_id: &str,
    route_id: &str,
    date: NaiveDate,
    attempt: u32,
    requires_code: bool,
    now: DateTime<Utc>,
) -> TxResult<u32> {
    let a = i64::from(attempt);
    exec(
        tx,
        "UPDATE parcels SET status='scheduled', delivery_date=$2, attempt=$3, route_id=$4,
           wrong_tries=0, locked=FALSE, updated_at=$5 WHERE parcel_id=$1",
        &[&parcel_id, &date, &a, &route_id, &now],
    )
    .await?;
    event(
        tx,
        parcel_id,
        now,
        "scheduled",
        &format!("route {route_id} on {date}, attempt {attempt}"),
    )
    .await?;
    if requires_code {
        exec(
            tx,
            "INSERT INTO notices(parcel_id, delivery_date, attempt, next_attempt_at, created_at) VALUES($1,$2,$3,$4,$4)",
            &[&parcel_id, &date, &a, &now],
        )
        .await?;
        return Ok(1);
    }
    Ok(0)
}

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

fn device_of(r: &Row) -> TxResult<Device> {
    Ok(Device {
        device_id: get(r, 0)?,
        courier_id: get(r, 1)?,
        name: get(r, 2)?,
        public_key: get(r, 3)?,
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
    let stops_rows = query(
        tx,
        "SELECT stop_id, sequence, address, recipient FROM stops
         WHERE route_id=$1 AND delivery_date=$2 ORDER BY sequence",
        &[&route_id, &date],
    )
    .await?;
    let parcel_rows = query(
        tx,
        "SELECT s.stop_id, p.parcel_id, p.requires_code, p.attempt FROM stop_parcels s
         JOIN parcels p ON p.parcel_id = s.parcel_id
         WHERE s.route_id=$1 AND s.delivery_date=$2 AND p.delivery_date = s.delivery_date
         ORDER BY s.stop_id, s.position",
        &[&route_id, &date],
    )
    .await?;
    let mut stops = Vec::with_capacity(stops_rows.len());
    for r in &stops_rows {
        let stop_id: String = get(r, 0)?;
        let mut parcels = Vec::new();
        for p in &parcel_rows {
            if get::<&str>(p, 0)? == stop_id {
                parcels.push(RouteParcelData {
                    parcel_id: get(p, 1)?,
                    requires_code: get(p, 2)?,
                    attempt: u32_of(get(p, 3)?)?,
                });
            }
        }
        stops.push(RouteStopData {
            stop_id,
            sequence: u32_of(get(r, 1)?)?,
            address: get(r, 2)?,
            recipient: get(r, 3)?,
            parcels,
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
        transact!(self, SER, |tx| {
            async {
            let mut out = Vec::with_capacity(items.len());
            for p in &items {
                let n = exec(
                    &tx,
                    "UPDATE parcels SET recipient_name=$2, email=$3, phone=$4, address=$5, value=$6,
                       currency=$7, requires_code=$8, updated_at=$9 WHERE parcel_id=$1",
                    &[&p.parcel_id, &p.recipient_name, &p.email, &p.phone, &p.address, &p.value, &p.currency, &p.requires_code, &now],
                )
                .await?;
                if n > 0 {
                    event(&tx, &p.parcel_id, now, "updated", "parcel details updated").await?;
                    out.push(UpsertStatus::Updated);
                } else {
                    exec(
                        &tx,
                        "INSERT INTO parcels(parcel_id, recipient_name, email, phone, address, value, currency,
                           requires_code, track_token, created_at, updated_at)
                         VALUES($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$10)",
                        &[&p.parcel_id, &p.recipient_name, &p.email, &p.phone, &p.address, &p.value, &p.currency, &p.requires_code, &p.track_token, &now],
                    )
                    .await?;
                    let detail = if p.requires_code { "requires a code" } else { "no code needed" };
                    event(&tx, &p.parcel_id, now, "created", detail).await?;
                    out.push(UpsertStatus::Created);
                }
            }
            Ok(out)
        }
        .await
        })
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

    async fn save_route(&self, route: RouteInput, now: DateTime<Utc>) -> Result<RouteSaved> {
        transact!(self, SER, |tx| {
            async {
            let date = route.delivery_date;
            if let Some(other) = query_opt(
                &tx,
                "SELECT route_id FROM routes WHERE courier_id=$1 AND delivery_date=$2 AND route_id<>$3",
                &[&route.courier_id, &date, &route.route_id],
            )
            .await?
            {
                let other: String = get(&other, 0)?;
                return Err(StorageError::Conflict(format!(
                    "courier {} already has route {other} on {date}",
                    route.courier_id
                ))
                .into());
            }
            // Check every parcel before changing anything.
            let mut wanted: Vec<(String, bool, Option<NaiveDate>, u32, String)> = Vec::new();
            for s in &route.stops {
                for pid in &s.parcel_ids {
                    let Some(r) = query_opt(
                        &tx,
                        "SELECT status, requires_code, delivery_date, attempt, recipient_name FROM parcels WHERE parcel_id=$1",
                        &[pid],
                    )
                    .await?
                    else {
                        return Err(StorageError::NotFound(format!("parcel {pid} is not known; POST it to /v1/parcels first")).into());
                    };
                    if get::<&str>(&r, 0)? == "delivered" {
                        return Err(StorageError::Conflict(format!("parcel {pid} is already delivered")).into());
                    }
                    if let Some(e) = query_opt(
                        &tx,
                        "SELECT route_id FROM stop_parcels WHERE delivery_date=$1 AND parcel_id=$2 AND route_id<>$3",
                        &[&date, pid, &route.route_id],
                    )
                    .await?
                    {
                        let r: String = get(&e, 0)?;
                        return Err(StorageError::Conflict(format!("parcel {pid} is already on route {r} on {date}")).into());
                    }
                    wanted.push((pid.clone(), get(&r, 1)?, get(&r, 2)?, u32_of(get(&r, 3)?)?, get(&r, 4)?));
                }
            }
            let old_rev = match query_opt(
                &tx,
                "SELECT revision FROM routes WHERE route_id=$1 AND delivery_date=$2",
                &[&route.route_id, &date],
            )
            .await?
            {
                Some(r) => get::<i64>(&r, 0)?,
                None => 0,
            };
            let revision = old_rev + 1;
            exec(
                &tx,
                "INSERT INTO routes(route_id, delivery_date, courier_id, revision, updated_at) VALUES($1,$2,$3,$4,$5)
                 ON CONFLICT(route_id, delivery_date) DO UPDATE SET courier_id=$3, revision=$4, updated_at=$5",
                &[&route.route_id, &date, &route.courier_id, &revision, &now],
            )
            .await?;
            // Parcels dropped from this route go back to pending.
            let before = query(
                &tx,
                "SELECT parcel_id FROM stop_parcels WHERE route_id=$1 AND delivery_date=$2",
                &[&route.route_id, &date],
            )
            .await?;
            for r in &before {
                let pid: &str = get(r, 0)?;
                if !wanted.iter().any(|w| w.0 == pid) {
                    exec(
                        &tx,
                        "UPDATE parcels SET status='pending', delivery_date=NULL, route_id=NULL, updated_at=$2
                         WHERE parcel_id=$1 AND status IN ('scheduled','failed')",
                        &[&pid, &now],
                    )
                    .await?;
                    event(&tx, pid, now, "unscheduled", &format!("removed from route {}", route.route_id)).await?;
                }
            }
            exec(&tx, "DELETE FROM stop_parcels WHERE route_id=$1 AND delivery_date=$2", &[&route.route_id, &date]).await?;
            exec(&tx, "DELETE FROM stops WHERE route_id=$1 AND delivery_date=$2", &[&route.route_id, &date]).await?;
            let mut notices = 0u32;
            let mut seq = 0i64;
            for s in &route.stops {
                seq += 1;
                let recipient = match &s.recipient {
                    Some(r) => r.clone(),
                    None => s
                        .parcel_ids
                        .first()
                        .and_then(|p| wanted.iter().find(|w| &w.0 == p))
                        .map(|w| w.4.clone())
                        .unwrap_or_else(|| "Recipient".to_string()),
                };
                exec(
                    &tx,
                    "INSERT INTO stops(route_id, delivery_date, stop_id, sequence, address, recipient) VALUES($1,$2,$3,$4,$5,$6)",
                    &[&route.route_id, &date, &s.stop_id, &seq, &s.address, &recipient],
                )
                .await?;
                for (pos, pid) in s.parcel_ids.iter().enumerate() {
                    let pos = i64::try_from(pos).map_err(be)?;
                    exec(
                        &tx,
                        "INSERT INTO stop_parcels(route_id, delivery_date, stop_id, parcel_id, position) VALUES($1,$2,$3,$4,$5)",
                        &[&route.route_id, &date, &s.stop_id, pid, &pos],
                    )
                    .await?;
                }
            }
            for (pid, requires_code, pdate, attempt, _) in &wanted {
                if *pdate == Some(date) && *attempt > 0 {
                    // Same day, same code: only the route assignment may change.
                    exec(&tx, "UPDATE parcels SET route_id=$2, updated_at=$3 WHERE parcel_id=$1", &[pid, &route.route_id, &now]).await?;
                    continue;
                }
                if let Some(old) = pdate {
                    // Leaving another day's route: that route changes too.
                    let old_route = query_opt(
                        &tx,
                        "DELETE FROM stop_parcels WHERE delivery_date=$1 AND parcel_id=$2 RETURNING route_id",
                        &[old, pid],
                    )
                    .await?;
                    if let Some(r) = old_route {
                        let r: String = get(&r, 0)?;
                        bump_route(&tx, &r, *old, now).await?;
                    }
                }
                notices += schedule(&tx, pid, &route.route_id, date, attempt + 1, *requires_code, now).await?;
            }
            Ok(RouteSaved {
                route_id: route.route_id.clone(),
                delivery_date: date,
                revision: u64_of(revision)?,
                notices_queued: notices,
            })
        }
        .await
        })
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

    async fn create_enrollment(
        &self,
        code_hash: &str,
        courier_id: &str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        transact!(self, SER, |tx| {
            async {
            exec(
                &tx,
                "INSERT INTO enrollments(code_hash, courier_id, expires_at, created_at) VALUES($1,$2,$3,$4)",
                &[&code_hash, &courier_id, &expires_at, &now],
            )
            .await?;
            Ok(())
        }
        .await
        })
    }

    async fn enroll_device(
        &self,
        code_hash: &str,
        device: NewDevice,
        now: DateTime<Utc>,
    ) -> Result<Option<Device>> {
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
                "INSERT INTO devices(device_id, courier_id, name, public_key, token_hash, enrolled_at) VALUES($1,$2,$3,$4,$5,$6)",
                &[&device.device_id, &courier_id, &device.name, &device.public_key, &device.token_hash, &now],
            )
            .await?;
            Ok(Some(Device {
                device_id: device.device_id.clone(),
                courier_id,
                name: device.name.clone(),
                public_key: device.public_key.clone(),
            }))
        }
        .await
        })
    }

    async fn device_by_token(&self, token_hash: &str) -> Result<Option<Device>> {
        fin(async {
            self.read_opt(
                "SELECT device_id, courier_id, name, public_key FROM devices WHERE token_hash=$1",
                &[&token_hash],
            )
            .await?
            .as_ref()
            .map(device_of)
            .transpose()
        }
        .await)
    }

    async fn device(&self, device_id: &str) -> Result<Option<Device>> {
        fin(async {
            self.read_opt(
                "SELECT device_id, courier_id, name, public_key FROM devices WHERE device_id=$1",
                &[&device_id],
            )
            .await?
            .as_ref()
            .map(device_of)
            .transpose()
        }
        .await)
    }

    async fn devices_of_courier(&self, courier_id: &str) -> Result<Vec<Device>> {
        fin(async {
            self.read(
                "SELECT device_id, courier_id, name, public_key FROM devices WHERE courier_id=$1 ORDER BY enrolled_at, device_id",
                &[&courier_id],
            )
            .await?
            .iter()
            .map(device_of)
            .collect()
        }
        .await)
    }

    async fn manifest(
        &self,
        route_id: &str,
        date: NaiveDate,
        device_id: &str,
    ) -> Result<Option<StoredManifest>> {
        fin(async {
            let Some(r) = self
                .read_opt(
                    "SELECT manifest_id, revision, envelope FROM manifests WHERE route_id=$1 AND delivery_date=$2 AND device_id=$3",
                    &[&route_id, &date, &device_id],
                )
                .await?
            else {
                return Ok(None);
            };
            Ok(Some(StoredManifest {
                route_id: route_id.to_string(),
                delivery_date: date,
                device_id: device_id.to_string(),
                manifest_id: get(&r, 0)?,
                revision: u64_of(get(&r, 1)?)?,
                envelope_json: get(&r, 2)?,
                items: Vec::new(),
            }))
        }
        .await)
    }

    async fn current_manifest(
        &self,
        courier_id: &str,
        date: NaiveDate,
        device_id: &str,
    ) -> Result<Option<StoredManifest>> {
        fin(async {
            let Some(r) = self
                .read_opt(
                    "SELECT m.route_id, m.manifest_id, m.revision, m.envelope FROM routes r
                     JOIN manifests m ON m.route_id=r.route_id AND m.delivery_date=r.delivery_date AND m.device_id=$3
                     WHERE r.courier_id=$1 AND r.delivery_date=$2 AND m.revision >= r.revision",
                    &[&courier_id, &date, &device_id],
                )
                .await?
            else {
                return Ok(None);
            };
            Ok(Some(StoredManifest {
                route_id: get(&r, 0)?,
                delivery_date: date,
                device_id: device_id.to_string(),
                manifest_id: get(&r, 1)?,
                revision: u64_of(get(&r, 2)?)?,
                envelope_json: get(&r, 3)?,
                items: Vec::new(),
            }))
        }
        .await)
    }

    async fn store_manifest(&self, m: StoredManifest) -> Result<StoredManifest> {
        transact!(self, SER, |tx| {
            async {
            let date = m.delivery_date;
            if let Some(r) = query_opt(
                &tx,
                "SELECT manifest_id, revision, envelope FROM manifests WHERE route_id=$1 AND delivery_date=$2 AND device_id=$3",
                &[&m.route_id, &date, &m.device_id],
            )
            .await?
            {
                let revision = u64_of(get(&r, 1)?)?;
                if revision >= m.revision {
                    return Ok(StoredManifest {
                        manifest_id: get(&r, 0)?,
                        revision,
                        envelope_json: get(&r, 2)?,
                        items: Vec::new(),
                        ..m.clone()
                    });
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
            for (pid, attempt) in &m.items {
                exec(
                    &tx,
                    "INSERT INTO manifest_items(device_id, manifest_id, revision, parcel_id, delivery_date, attempt) VALUES($1,$2,$3,$4,$5,$6)
                     ON CONFLICT DO NOTHING",
                    &[&m.device_id, &m.manifest_id, &rev, pid, &date, &i64::from(*attempt)],
                )
                .await?;
            }
            Ok(m.clone())
        }
        .await
        })
    }

    async fn ingest_confirmation(&self, c: IngestConfirmation) -> Result<IngestOutcome> {
        // READ COMMITTED with explicit row locks, device first, then parcel:
        // one device's confirmations queue behind each other instead of
        // failing serialization, and every read after the locks sees the
        // latest committed state.
        transact!(self, RC, |tx| {
            async {
            let now = c.received_at;
            let device = query_opt(&tx, "SELECT last_seq FROM devices WHERE device_id=$1 FOR UPDATE", &[&c.device_id]).await?;
            let seen = "SELECT device_id FROM confirmations WHERE confirmation_id=$1";
            let answer_seen = |dev: String| {
                if dev == c.device_id {
                    IngestOutcome::Duplicate
                } else {
                    IngestOutcome::Rejected("confirmation_id_reused".into(), true)
                }
            };
            if let Some(r) = query_opt(&tx, seen, &[&c.confirmation_id]).await? {
                return Ok(answer_seen(get(&r, 0)?));
            }
            let Some(p) = query_opt(
                &tx,
                "SELECT status, requires_code, attempt FROM parcels WHERE parcel_id=$1 FOR UPDATE",
                &[&c.parcel_id],
            )
            .await?
            else {
                return Ok(IngestOutcome::Rejected("unknown_parcel".into(), true));
            };
            let status: String = get(&p, 0)?;
            let requires_code: bool = get(&p, 1)?;
            let current_attempt: i64 = get(&p, 2)?;
            let rev = i64_of(c.revision)?;
            let attempt = i64::from(c.attempt);
            let on_manifest = query_opt(
                &tx,
                "SELECT 1 FROM manifest_items WHERE device_id=$1 AND manifest_id=$2 AND revision=$3
                   AND parcel_id=$4 AND delivery_date=$5 AND attempt=$6",
                &[&c.device_id, &c.manifest_id, &rev, &c.parcel_id, &c.delivery_date, &attempt],
            )
            .await?
            .is_some();
            if !on_manifest {
                return Ok(IngestOutcome::Rejected("not_on_manifest".into(), true));
            }
            let seq = i64_of(c.seq)?;
            let reused = query_opt(
                &tx,
                "SELECT 1 FROM confirmations WHERE device_id=$1 AND seq=$2",
                &[&c.device_id, &seq],
            )
            .await?
            .is_some();
            let Some(device) = device else {
                return Err(StorageError::Backend(format!("device {} is not enrolled", c.device_id)).into());
            };
            let last_seq: i64 = get(&device, 0)?;
            let delivered = c.outcome == "delivered";
            let code_fine = match c.code_ok {
                Some(ok) => ok,
                None => !requires_code,
            };
            let disputed = delivered && !code_fine;
            // The first write: of concurrent ingests of this id (another
            // device's, or any not queued behind the device lock) exactly one
            // inserts; the others wait for it, insert nothing, and answer from
            // the row it committed.
            let inserted = exec(
                &tx,
                "INSERT INTO confirmations(confirmation_id, device_id, seq, manifest_id, revision, parcel_id, delivery_date, attempt,
                   outcome, reason, verified, failed_attempts, code_ok, disputed, recorded_at, received_at)
                 VALUES($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16)
                 ON CONFLICT (confirmation_id) DO NOTHING",
                &[
                    &c.confirmation_id, &c.device_id, &seq, &c.manifest_id, &rev, &c.parcel_id, &c.delivery_date, &attempt,
                    &c.outcome, &c.reason, &c.verified, &i64::from(c.failed_attempts), &c.code_ok, &disputed, &c.recorded_at, &now,
                ],
            )
            .await?;
            if inserted == 0 {
                let r = query_one(&tx, seen, &[&c.confirmation_id]).await?;
                return Ok(answer_seen(get(&r, 0)?));
            }
            let pid = Some(c.parcel_id.as_str());
            let did = Some(c.device_id.as_str());
            let cid = Some(c.confirmation_id.as_str());
            if reused {
                signal(&tx, "seq_reuse", pid, did, cid, &format!("seq {seq} was already used by this device"), now).await?;
            } else if seq > last_seq + 1 {
                signal(&tx, "seq_gap", pid, did, cid, &format!("seq jumped from {last_seq} to {seq}"), now).await?;
            }
            exec(&tx, "UPDATE devices SET last_seq=GREATEST(last_seq, $2) WHERE device_id=$1", &[&c.device_id, &seq]).await?;
            if c.late {
                signal(&tx, "late_confirmation", pid, did, cid, "recorded at or after the code's valid_until", now).await?;
            }
            if delivered && attempt < current_attempt {
                signal(&tx, "superseded_code", pid, did, cid, &super::superseded_detail(c.attempt, current_attempt), now).await?;
            }
            if c.failed_attempts >= c.many_tries_threshold {
                signal(&tx, "many_wrong_tries", pid, did, cid, &format!("{} wrong tries at the door", c.failed_attempts), now).await?;
            }
            let open = status == "scheduled" || status == "failed";
            if delivered {
                if !disputed {
                    if open {
                        exec(&tx, "UPDATE parcels SET status='delivered', updated_at=$2 WHERE parcel_id=$1", &[&c.parcel_id, &now]).await?;
                    }
                    event(&tx, &c.parcel_id, now, "delivered", &format!("confirmed by device {} (verified {})", c.device_id, c.verified)).await?;
                } else {
                    if status != "delivered" {
                        exec(&tx, "UPDATE parcels SET status='disputed', updated_at=$2 WHERE parcel_id=$1", &[&c.parcel_id, &now]).await?;
                    }
                    let kind = if c.code_ok.is_some() { "code_mismatch" } else { "delivered_without_code" };
                    signal(&tx, kind, pid, did, cid, "a delivery confirmation failed the server's full code check", now).await?;
                    event(&tx, &c.parcel_id, now, "disputed", &format!("{kind} from device {}", c.device_id)).await?;
                }
            } else {
                if status == "scheduled" {
                    exec(&tx, "UPDATE parcels SET status='failed', updated_at=$2 WHERE parcel_id=$1", &[&c.parcel_id, &now]).await?;
                }
                let reason = c.reason.clone().unwrap_or_default();
                if reason == "locked_out" {
                    signal(&tx, "many_wrong_tries", pid, did, cid, "parcel locked out at the door", now).await?;
                }
                event(&tx, &c.parcel_id, now, "failed", &format!("attempt {} failed: {reason}", c.attempt)).await?;
            }
            Ok(IngestOutcome::Accepted { disputed })
        }
        .await
        })
    }

    async fn verify_target(
        &self,
        device_id: &str,
        parcel_id: &str,
    ) -> Result<Option<VerifyTarget>> {
        fin(async {
            let Some(r) = self
                .read_opt(
                    "SELECT p.delivery_date, p.attempt, p.requires_code FROM parcels p
                     WHERE p.parcel_id=$2 AND p.delivery_date IS NOT NULL AND EXISTS(
                       SELECT 1 FROM manifest_items m WHERE m.device_id=$1 AND m.parcel_id=p.parcel_id
                         AND m.delivery_date=p.delivery_date AND m.attempt=p.attempt)",
                    &[&device_id, &parcel_id],
                )
                .await?
            else {
                return Ok(None);
            };
            Ok(Some(VerifyTarget {
                delivery_date: get(&r, 0)?,
                attempt: u32_of(get(&r, 1)?)?,
                requires_code: get(&r, 2)?,
            }))
        }
        .await)
    }

    async fn record_verify(
        &self,
        device_id: &str,
        parcel_id: &str,
        date: NaiveDate,
        attempt: u32,
        ok: bool,
        max_attempts: u32,
        now: DateTime<Utc>,
    ) -> Result<VerifyOutcome> {
        let (d, p) = (device_id, parcel_id);
        // READ COMMITTED with the parcel row locked: concurrent tries for one
        // parcel (from any node) queue and each counts on the latest count.
        transact!(self, RC, |tx| {
            async {
            let Some(r) = query_opt(
                &tx,
                "SELECT delivery_date, attempt, wrong_tries, locked FROM parcels WHERE parcel_id=$1 FOR UPDATE",
                &[&p],
            )
            .await?
            else {
                return Ok(VerifyOutcome::Stale);
            };
            let pdate: Option<NaiveDate> = get(&r, 0)?;
            if pdate != Some(date) || u32_of(get(&r, 1)?)? != attempt {
                return Ok(VerifyOutcome::Stale);
            }
            if get::<bool>(&r, 3)? {
                return Ok(VerifyOutcome::Locked);
            }
            if ok {
                event(&tx, p, now, "verified_online", &format!("code accepted for device {d}")).await?;
                return Ok(VerifyOutcome::Accepted);
            }
            let wrong = u32_of(get(&r, 2)?)?.saturating_add(1);
            let lock = wrong >= max_attempts;
            exec(
                &tx,
                "UPDATE parcels SET wrong_tries=$2, locked=$3, updated_at=$4 WHERE parcel_id=$1",
                &[&p, &i64::from(wrong), &lock, &now],
            )
            .await?;
            event(&tx, p, now, "wrong_code", &format!("online try {wrong} of {max_attempts} failed (device {d})")).await?;
            if lock {
                signal(&tx, "verify_lockout", Some(p), Some(d), None, &format!("locked after {wrong} wrong online tries"), now).await?;
                event(&tx, p, now, "locked", "too many wrong codes; dispatch can reissue").await?;
                return Ok(VerifyOutcome::Locked);
            }
            Ok(VerifyOutcome::Rejected { attempts_left: max_attempts - wrong })
        }
        .await
        })
    }

    async fn reissue(&self, parcel_id: &str, now: DateTime<Utc>) -> Result<Moved> {
        let p = parcel_id;
        transact!(self, SER, |tx| {
            async {
            let Some(r) = query_opt(
                &tx,
                "SELECT status, delivery_date, attempt, route_id, requires_code FROM parcels WHERE parcel_id=$1 FOR UPDATE",
                &[&p],
            )
            .await?
            else {
                return Err(StorageError::NotFound(format!("parcel {p} is not known")).into());
            };
            if get::<&str>(&r, 0)? == "delivered" {
                return Err(StorageError::Conflict(format!("parcel {p} is already delivered")).into());
            }
            let (Some(date), Some(route_id)) = (get::<Option<NaiveDate>>(&r, 1)?, get::<Option<String>>(&r, 3)?) else {
                return Err(StorageError::Conflict(format!("parcel {p} is not on a route; nothing to reissue")).into());
            };
            let attempt = u32_of(get(&r, 2)?)?;
            event(&tx, p, now, "code_voided", &format!("attempt {attempt} voided by dispatch")).await?;
            schedule(&tx, p, &route_id, date, attempt + 1, get(&r, 4)?, now).await?;
            bump_route(&tx, &route_id, date, now).await?;
            Ok(Moved { parcel_ids: vec![p.to_string()], routes: vec![(route_id, date)] })
        }
        .await
        })
    }

    async fn close_day(
        &self,
        date: NaiveDate,
        next: NaiveDate,
        now: DateTime<Utc>,
    ) -> Result<Moved> {
        transact!(self, SER, |tx| {
            async {
            let rows = query(
                &tx,
                "SELECT p.parcel_id, p.attempt, p.requires_code, s.route_id, s.stop_id, r.courier_id, st.address, st.recipient
                 FROM parcels p
                 JOIN stop_parcels s ON s.parcel_id=p.parcel_id AND s.delivery_date=p.delivery_date
                 JOIN routes r ON r.route_id=s.route_id AND r.delivery_date=s.delivery_date
                 JOIN stops st ON st.route_id=s.route_id AND st.delivery_date=s.delivery_date AND st.stop_id=s.stop_id
                 WHERE p.delivery_date=$1 AND p.status IN ('scheduled','failed')
                 ORDER BY s.route_id, st.sequence, s.position",
                &[&date],
            )
            .await?;
            let mut moved = Moved::default();
            for row in &rows {
                let pid: String = get(row, 0)?;
                let attempt = u32_of(get(row, 1)?)?;
                let requires_code: bool = get(row, 2)?;
                let route_id: String = get(row, 3)?;
                let stop_id: String = get(row, 4)?;
                let courier: String = get(row, 5)?;
                let address: String = get(row, 6)?;
                let recipient: String = get(row, 7)?;
                // The courier's route on the next day, or the same route id carried over.
                let target = match query_opt(
                    &tx,
                    "SELECT route_id FROM routes WHERE courier_id=$1 AND delivery_date=$2",
                    &[&courier, &next],
                )
                .await?
                {
                    Some(t) => get::<String>(&t, 0)?,
                    None => {
                        exec(
                            &tx,
                            "INSERT INTO routes(route_id, delivery_date, courier_id, revision, updated_at) VALUES($1,$2,$3,0,$4)
                             ON CONFLICT(route_id, delivery_date) DO NOTHING",
                            &[&route_id, &next, &courier, &now],
                        )
                        .await?;
                        route_id.clone()
                    }
                };
                // The next day's route may already use this stop id for another address.
                let taken = query_opt(
                    &tx,
                    "SELECT address FROM stops WHERE route_id=$1 AND delivery_date=$2 AND stop_id=$3",
                    &[&target, &next, &stop_id],
                )
                .await?;
                let stop_id = match taken {
                    Some(a) if get::<&str>(&a, 0)? != address => format!("{stop_id}~{date}"),
                    _ => stop_id,
                };
                let max_seq: i64 = get(
                    &query_one(
                        &tx,
                        "SELECT COALESCE(MAX(sequence), 0) FROM stops WHERE route_id=$1 AND delivery_date=$2",
                        &[&target, &next],
                    )
                    .await?,
                    0,
                )?;
                exec(
                    &tx,
                    "INSERT INTO stops(route_id, delivery_date, stop_id, sequence, address, recipient) VALUES($1,$2,$3,$4,$5,$6)
                     ON CONFLICT DO NOTHING",
                    &[&target, &next, &stop_id, &(max_seq + 1), &address, &recipient],
                )
                .await?;
                let pos: i64 = get(
                    &query_one(
                        &tx,
                        "SELECT COUNT(*) FROM stop_parcels WHERE route_id=$1 AND delivery_date=$2 AND stop_id=$3",
                        &[&target, &next, &stop_id],
                    )
                    .await?,
                    0,
                )?;
                exec(
                    &tx,
                    "INSERT INTO stop_parcels(route_id, delivery_date, stop_id, parcel_id, position) VALUES($1,$2,$3,$4,$5)
                     ON CONFLICT(delivery_date, parcel_id) DO UPDATE SET route_id=$1, stop_id=$3, position=$5",
                    &[&target, &next, &stop_id, &pid, &pos],
                )
                .await?;
                event(&tx, &pid, now, "day_closed", &format!("not delivered on {date}; moved to {next}")).await?;
                schedule(&tx, &pid, &target, next, attempt + 1, requires_code, now).await?;
                if !moved.routes.iter().any(|(r, _)| r == &target) {
                    moved.routes.push((target.clone(), next));
                }
                moved.parcel_ids.push(pid);
            }
            for (r, _) in &moved.routes {
                bump_route(&tx, r, next, now).await?;
            }
            Ok(moved)
        }
        .await
        })
    }

    async fn signals(&self) -> Result<Vec<Signal>> {
        transact!(self, SNAP, |tx| {
            async {
            query(&tx, "SELECT id, kind, parcel_id, device_id, confirmation_id, detail, at FROM signals ORDER BY id", &[])
                .await?
                .iter()
                .map(|r| {
                    Ok(Signal {
                        id: get(r, 0)?,
                        kind: get(r, 1)?,
                        parcel_id: get(r, 2)?,
                        device_id: get(r, 3)?,
                        confirmation_id: get(r, 4)?,
                        detail: get(r, 5)?,
                        at: get(r, 6)?,
                    })
                })
                .collect()
        }
        .await
        })
    }

    async fn claim_notices(
        &self,
        now: DateTime<Utc>,
        lease_secs: i64,
        limit: u32,
    ) -> Result<Vec<NoticeJob>> {
        let until = now + chrono::Duration::seconds(lease_secs);
        let limit = i64::from(limit);
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
                   WHERE status='pending' AND next_attempt_at <= $1 AND (claimed_until IS NULL OR claimed_until <= $1)
                   ORDER BY id LIMIT $3
                   FOR UPDATE SKIP LOCKED)
                 UPDATE notices n SET claimed_until=$2 FROM due WHERE n.id = due.id
                 RETURNING n.id, n.parcel_id, n.delivery_date, n.attempt, n.tries",
                &[&now, &until, &limit],
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
                "UPDATE notices SET claimed_until=$2 WHERE id = ANY($1) AND status='pending' AND claimed_until IS NOT NULL",
                &[&ids, &until],
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
                "UPDATE notices SET status='sent', sent_at=$2, claimed_until=NULL, tries=tries+1 WHERE id=$1",
                &[&notice_id, &now],
            )
            .await?;
            Ok(())
        }
        .await
        })
    }

    async fn notice_failed(
        &self,
        notice_id: i64,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
    ) -> Result<()> {
        transact!(self, RC, |tx| {
            async {
            match retry_at {
                Some(t) => exec(
                    &tx,
                    "UPDATE notices SET tries=tries+1, last_error=$2, next_attempt_at=$3, claimed_until=NULL WHERE id=$1",
                    &[&notice_id, &error, &t],
                )
                .await?,
                None => exec(
                    &tx,
                    "UPDATE notices SET tries=tries+1, last_error=$2, status='failed', claimed_until=NULL WHERE id=$1",
                    &[&notice_id, &error],
                )
                .await?,
            };
            Ok(())
        }
        .await
        })
    }

    async fn notice_counts(&self) -> Result<(u64, u64, u64)> {
        transact!(self, SNAP, |tx| {
            async {
            let r = query_one(
                &tx,
                "SELECT COUNT(*) FILTER (WHERE status='pending'), COUNT(*) FILTER (WHERE status='sent'),
                   COUNT(*) FILTER (WHERE status='failed') FROM notices",
                &[],
            )
            .await?;
            Ok((u64_of(get(&r, 0)?)?, u64_of(get(&r, 1)?)?, u64_of(get(&r, 2)?)?))
        }
        .await
        })
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
