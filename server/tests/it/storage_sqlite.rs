//! The storage suite against embedded SQLite (a real file per test), and
//! what only SQLite has: its file's mode, schema version and upgrades.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::storage_suite::day;
use crate::support::migrations;
use doorcode_server::domain::SignalKind;
use doorcode_server::storage::Storage;
use doorcode_server::storage::sqlite::SqliteStorage;

struct Sqlite {
    s: SqliteStorage,
    _dir: tempfile::TempDir,
}

impl Sqlite {
    fn storage(&self) -> &dyn Storage {
        &self.s
    }

    async fn finish(self) {
        // Reopening runs no migration twice.
        let path = self._dir.path().join("t.db");
        drop(self.s);
        SqliteStorage::open(&path).unwrap();
    }
}

async fn store(_check: &str) -> Option<Sqlite> {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStorage::open(&dir.path().join("t.db")).unwrap();
    Some(Sqlite { s, _dir: dir })
}

crate::storage_suite!();

#[test]
fn wal_mode_and_schema_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    drop(SqliteStorage::open(&path).unwrap());
    let c = rusqlite::Connection::open(&path).unwrap();
    let mode: String = crate::support::dump::one(&c, "PRAGMA journal_mode");
    assert_eq!(mode, "wal");
    let v: i64 = crate::support::dump::one(&c, "PRAGMA user_version");
    assert_eq!(v, i64::try_from(SqliteStorage::schema_version()).unwrap());
    c.execute_batch("PRAGMA user_version = 99").unwrap();
    drop(c);
    assert!(
        SqliteStorage::open(&path).is_err(),
        "a newer schema is refused"
    );
}

/// A schema-1 database with a device and signals, upgraded in place.
#[tokio::test]
async fn schema_1_upgrades_with_its_devices_and_signals() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    migrations::sqlite_at(
        &path,
        1,
        "PRAGMA user_version = 1;
         INSERT INTO devices(device_id, courier_id, name, public_key, token_hash, enrolled_at)
           VALUES('D-1', 'C-1', 'phone', 'pk', 'th', '2026-11-20T08:00:00.000000Z');
         INSERT INTO confirmations(confirmation_id, device_id, seq, manifest_id, revision, parcel_id,
           delivery_date, attempt, outcome, verified, failed_attempts, disputed, recorded_at, received_at)
           VALUES('c-1', 'D-1', 1, 'm', 1, 'P-1', '2026-11-23', 1, 'delivered', 'offline', 0, 0,
             '2026-11-23T09:00:00.000000Z', '2026-11-24T09:00:00.000000Z');
         INSERT INTO signals(kind, parcel_id, device_id, confirmation_id, detail, at)
           VALUES('superseded_code', 'P-1', 'D-1', 'c-1', 'old', '2026-11-24T09:00:00.000000Z'),
                 ('verify_lockout', 'P-2', 'D-1', NULL, 'locked', '2026-11-25T10:00:00.000000Z');",
    );
    let s = SqliteStorage::open(&path).unwrap();
    let d = s.device("D-1").await.unwrap().unwrap();
    let enrolled = chrono::DateTime::parse_from_rfc3339("2026-11-20T08:00:00Z").unwrap();
    assert_eq!(
        (d.last_seen_at, d.revoked_at),
        (enrolled.with_timezone(&chrono::Utc), None),
        "last seen at enrollment"
    );
    let on23 = s.signals_on(day(23), 0, 10).await.unwrap();
    assert_eq!(
        on23.iter().map(|x| x.kind).collect::<Vec<_>>(),
        [SignalKind::SupersededCode],
        "the confirmation's day, and the old kind kept"
    );
    let on25 = s.signals_on(day(25), 0, 10).await.unwrap();
    assert_eq!(
        on25[0].kind,
        SignalKind::VerifyLockout,
        "else the day it was raised"
    );
}
