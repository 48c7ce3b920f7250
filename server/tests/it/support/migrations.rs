//! Databases as an older release left them: the first migrations of each
//! backend, for the upgrade tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::pg::PgSchema;
use doorcode_server::storage::migrations::{Dialect, all};
use std::path::Path;

/// A SQLite file at `path` after the first `n` migrations, then `extra`
/// (which sets `user_version`, as the release did).
pub fn sqlite_at(path: &Path, n: usize, extra: &str) {
    let c = rusqlite::Connection::open(path).unwrap();
    for sql in &all(Dialect::Sqlite)[..n] {
        c.execute_batch(sql).unwrap();
    }
    c.execute_batch(extra).unwrap();
}

/// The schema after the first `n` migrations, recorded as applied, then `extra`.
pub async fn postgres_at(pg: &PgSchema, n: usize, extra: &str) {
    let versions: Vec<String> = (1..=n).map(|v| format!("({v})")).collect();
    pg.client
        .batch_execute(&format!(
            "SET search_path = {name};
             {migrations}
             CREATE TABLE doorcode_migrations(version BIGINT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now());
             INSERT INTO doorcode_migrations(version) VALUES {versions};
             {extra}
             SET search_path = public;",
            name = pg.name,
            migrations = all(Dialect::Postgres)[..n].join("\n"),
            versions = versions.join(", "),
        ))
        .await
        .unwrap();
}
