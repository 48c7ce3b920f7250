//! The floors the server is measured against, in the same run:
//! - the HTTP floor: a minimal axum server (its own process, same tokio
//!   runtime shape as `doorcode serve`) answering static bytes of a given size,
//!   a 304, and a POST answered with a same-size body;
//! - the storage floor: the same confirmation rows inserted raw, 100 per
//!   transaction, with the server's table definitions and PRAGMAs.

use crate::stats::Phase;
use anyhow::{Context, Result};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use doorcode_server::storage::migrations::Dialect;
use std::path::Path;
use std::time::{Duration, Instant};

/// What the floor server prints once it listens.
pub const READY: &str = "floor listening on ";
const FLOOR_ETAG: &str = "\"floor\"";

/// `GET /bytes/{n}`: n static bytes, or 304 for `If-None-Match: "floor"`.
async fn static_bytes(
    State(body): State<Bytes>,
    UrlPath(n): UrlPath<usize>,
    headers: HeaderMap,
) -> Response {
    let etag = (header::ETAG, HeaderValue::from_static(FLOOR_ETAG));
    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == FLOOR_ETAG.as_bytes())
    {
        return (StatusCode::NOT_MODIFIED, [etag]).into_response();
    }
    let n = n.min(body.len());
    (
        [
            etag,
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
        ],
        body.slice(..n),
    )
        .into_response()
}

/// `POST /reply/{n}`: reads the whole upload, answers n static bytes.
async fn reply(State(body): State<Bytes>, UrlPath(n): UrlPath<usize>, upload: Bytes) -> Response {
    let n = n.min(body.len());
    let _ = upload.len();
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.slice(..n),
    )
        .into_response()
}

/// Run the floor server until killed (the hidden `floor-server` subcommand).
#[allow(clippy::print_stdout)]
pub async fn serve(max_bytes: usize) -> Result<()> {
    let body = Bytes::from(vec![b'x'; max_bytes]);
    let app = Router::new()
        .route("/bytes/{n}", get(static_bytes))
        .route("/reply/{n}", post(reply))
        .layer(DefaultBodyLimit::max(64 * 1024 * 1024))
        .with_state(body);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the floor server")?;
    let addr = listener.local_addr().context("floor server address")?;
    println!("{READY}http://{addr}");
    axum::serve(listener, app).await.context("floor server")?;
    Ok(())
}

/// One confirmation row as the server stores it.
#[derive(Debug, Clone)]
pub struct Row {
    pub confirmation_id: String,
    pub device_id: String,
    pub seq: i64,
    pub manifest_id: String,
    pub revision: i64,
    pub parcel_id: String,
    pub delivery_date: chrono::NaiveDate,
    pub attempt: i64,
    pub outcome: &'static str,
    pub verified: &'static str,
    pub code_ok: Option<bool>,
    pub recorded_at: chrono::DateTime<chrono::Utc>,
}

/// The server's `confirmations` table and its `confirmations_seq` index, as
/// its first migration writes them in `dialect`, so the floor inserts into
/// the very table the server has and can never drift from it.
fn confirmations_table(dialect: Dialect) -> Result<String> {
    let migrations = doorcode_server::storage::migrations::all(dialect);
    let init = migrations.first().context("the server has no migrations")?;
    const FROM: &str = "CREATE TABLE confirmations(";
    const THROUGH: &str = "CREATE INDEX confirmations_seq ON confirmations(device_id, seq);";
    let start = init
        .find(FROM)
        .context("the server's migration defines no confirmations table")?;
    let len = init[start..]
        .find(THROUGH)
        .context("the server's migration defines no confirmations_seq index")?;
    Ok(init[start..start + len + THROUGH.len()].to_string())
}

/// The server's SQLite connection PRAGMAs (`apply_pragmas`).
const SQLITE_PRAGMAS: &str = "PRAGMA journal_mode=WAL;
PRAGMA synchronous=FULL;
PRAGMA foreign_keys=ON;
PRAGMA busy_timeout=5000;";

fn ts(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// Raw SQLite inserts of `batches`, one IMMEDIATE transaction each, on one
/// connection: the single writer the server also has.
pub fn sqlite_inserts(dir: &Path, batches: &[Vec<Row>]) -> Result<Phase> {
    let path = dir.join("storage-floor.db");
    let mut conn =
        rusqlite::Connection::open(&path).with_context(|| format!("opening {}", path.display()))?;
    conn.execute_batch(SQLITE_PRAGMAS)
        .context("storage floor PRAGMAs")?;
    conn.execute_batch(&confirmations_table(Dialect::Sqlite)?)
        .context("storage floor table")?;
    let mut lat = Vec::with_capacity(batches.len());
    let mut items = 0;
    let started = Instant::now();
    for batch in batches {
        let t = Instant::now();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .context("storage floor BEGIN")?;
        {
            let mut st = tx
                .prepare_cached(
                    "INSERT INTO confirmations(confirmation_id, device_id, seq, manifest_id, revision, parcel_id, delivery_date, attempt,
                       outcome, reason, verified, failed_attempts, code_ok, disputed, recorded_at, received_at)
                     VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16)",
                )
                .context("storage floor INSERT")?;
            for r in batch {
                st.execute(rusqlite::params![
                    r.confirmation_id,
                    r.device_id,
                    r.seq,
                    r.manifest_id,
                    r.revision,
                    r.parcel_id,
                    r.delivery_date.format("%Y-%m-%d").to_string(),
                    r.attempt,
                    r.outcome,
                    Option::<String>::None,
                    r.verified,
                    0i64,
                    r.code_ok,
                    false,
                    ts(r.recorded_at),
                    ts(chrono::Utc::now()),
                ])
                .context("storage floor row")?;
            }
        }
        tx.commit().context("storage floor COMMIT")?;
        items += batch.len();
        lat.push(t.elapsed());
    }
    Ok(Phase::new(items, started.elapsed(), lat))
}

/// Raw PostgreSQL inserts of `batches` into a fresh schema: one transaction
/// of 100 prepared single-row INSERTs per batch, `connections` clients
/// working at once (the server's default pool size). The schema is dropped after.
pub async fn postgres_inserts(
    base_url: &str,
    connections: usize,
    batches: Vec<Vec<Row>>,
) -> Result<Phase> {
    let schema = format!("load_floor_{}", uuid::Uuid::new_v4().simple());
    let table = confirmations_table(Dialect::Postgres)?;
    let admin = crate::pg::connect(base_url).await?;
    admin
        .batch_execute(&format!(
            "CREATE SCHEMA {schema}; SET search_path TO {schema}; {table}"
        ))
        .await
        .context("storage floor schema")?;
    let result = postgres_inserts_in(base_url, &schema, connections, batches).await;
    let dropped = admin
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .context("dropping the storage floor schema");
    let phase = result?;
    dropped?;
    Ok(phase)
}

async fn postgres_inserts_in(
    base_url: &str,
    schema: &str,
    connections: usize,
    batches: Vec<Vec<Row>>,
) -> Result<Phase> {
    let connections = connections.max(1);
    let mut queues: Vec<Vec<Vec<Row>>> = (0..connections).map(|_| Vec::new()).collect();
    for (i, b) in batches.into_iter().enumerate() {
        queues[i % connections].push(b);
    }
    let mut clients = Vec::new();
    for _ in 0..connections {
        let c = crate::pg::connect(base_url).await?;
        c.batch_execute(&format!("SET search_path TO {schema}"))
            .await
            .context("storage floor search_path")?;
        clients.push(c);
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (mut client, queue) in clients.into_iter().zip(queues) {
        tasks.push(tokio::spawn(async move {
            let st = client
                .prepare(
                    "INSERT INTO confirmations(confirmation_id, device_id, seq, manifest_id, revision, parcel_id, delivery_date, attempt,
                       outcome, reason, verified, failed_attempts, code_ok, disputed, recorded_at, received_at)
                     VALUES($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16)",
                )
                .await
                .context("storage floor prepare")?;
            let mut lat: Vec<Duration> = Vec::new();
            let mut items = 0usize;
            for batch in queue {
                let t = Instant::now();
                let tx = client.transaction().await.context("storage floor BEGIN")?;
                for r in &batch {
                    let now = chrono::Utc::now();
                    tx.execute(
                        &st,
                        &[
                            &r.confirmation_id,
                            &r.device_id,
                            &r.seq,
                            &r.manifest_id,
                            &r.revision,
                            &r.parcel_id,
                            &r.delivery_date,
                            &r.attempt,
                            &r.outcome,
                            &Option::<String>::None,
                            &r.verified,
                            &0i64,
                            &r.code_ok,
                            &false,
                            &r.recorded_at,
                            &now,
                        ],
                    )
                    .await
                    .context("storage floor row")?;
                }
                tx.commit().await.context("storage floor COMMIT")?;
                items += batch.len();
                lat.push(t.elapsed());
            }
            anyhow::Ok((items, lat))
        }));
    }
    let mut items = 0;
    let mut lat = Vec::new();
    for t in tasks {
        let (n, l) = t.await.context("storage floor task")??;
        items += n;
        lat.extend(l);
    }
    Ok(Phase::new(items, started.elapsed(), lat))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_floor_uses_the_servers_confirmations_table_from_both_migrations() {
        for (dialect, seq_type) in [
            (Dialect::Sqlite, "seq INTEGER"),
            (Dialect::Postgres, "seq BIGINT"),
        ] {
            let table = confirmations_table(dialect).unwrap();
            assert!(table.starts_with("CREATE TABLE confirmations("), "{table}");
            assert!(
                table.ends_with("ON confirmations(device_id, seq);"),
                "{table}"
            );
            assert!(table.contains(seq_type), "{table}");
            // One table and its one index: nothing else of the migration.
            assert_eq!(table.matches("CREATE ").count(), 2, "{table}");
        }
        let sqlite = rusqlite::Connection::open_in_memory().unwrap();
        sqlite
            .execute_batch(&confirmations_table(Dialect::Sqlite).unwrap())
            .unwrap();
    }
}
