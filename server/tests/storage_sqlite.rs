//! The generic storage suite against embedded SQLite (a real file).
#![allow(clippy::unwrap_used)]

use doorcode_server::storage::{conformance, sqlite::SqliteStorage};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_passes_the_storage_suite() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStorage::open(&dir.path().join("t.db")).unwrap();
    conformance::run_all(&s).await;
    // Reopening runs no migration twice and keeps the data.
    drop(s);
    let s = SqliteStorage::open(&dir.path().join("t.db")).unwrap();
    assert!(
        doorcode_server::storage::Storage::parcel(&s, "a-1")
            .await
            .unwrap()
            .is_some()
    );
}

#[test]
fn wal_mode_and_schema_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    drop(SqliteStorage::open(&path).unwrap());
    let c = rusqlite::Connection::open(&path).unwrap();
    let mode: String = c
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let v: i64 = c
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, 1);
    c.execute_batch("PRAGMA user_version = 99").unwrap();
    drop(c);
    assert!(
        SqliteStorage::open(&path).is_err(),
        "a newer schema is refused"
    );
}
