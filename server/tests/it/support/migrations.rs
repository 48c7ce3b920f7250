//! Databases as an older release left them: the first migrations of each
//! backend, for the upgrade tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::pg::PgSchema;
use std::path::Path;

/// The SQLite migrations, in order.
pub const SQLITE: [&str; 5] = [
    include_str!("../../../src/storage/migrations/sqlite/0001_init.sql"),
    include_str!("../../../src/storage/migrations/sqlite/0002_seen_revoked_signal_days.sql"),
    include_str!("../../../src/storage/migrations/sqlite/0003_lifecycle.sql"),
    include_str!("../../../src/storage/migrations/sqlite/0004_shared_state.sql"),
    include_str!("../../../src/storage/migrations/sqlite/0005_keys_track_hmac.sql"),
];

/// The PostgreSQL migrations, in order.
pub const POSTGRES: [&str; 5] = [
    include_str!("../../../src/storage/migrations/postgres/0001_init.sql"),
    include_str!("../../../src/storage/migrations/postgres/0002_seen_revoked_signal_days.sql"),
    include_str!("../../../src/storage/migrations/postgres/0003_lifecycle.sql"),
    include_str!("../../../src/storage/migrations/postgres/0004_shared_state.sql"),
    include_str!("../../../src/storage/migrations/postgres/0005_keys_track_hmac.sql"),
];

/// A SQLite file at `path` after the first `n` migrations, then `extra`
/// (which sets `user_version`, as the release did).
pub fn sqlite_at(path: &Path, n: usize, extra: &str) {
    let c = rusqlite::Connection::open(path).unwrap();
    for sql in &SQLITE[..n] {
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
            migrations = POSTGRES[..n].join("\n"),
            versions = versions.join(", "),
        ))
        .await
        .unwrap();
}
