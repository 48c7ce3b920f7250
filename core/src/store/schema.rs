//! The handset database schema as versioned migrations. A database is brought
//! from its `user_version` to the latest in one transaction per step; a test
//! checks that an upgraded database equals a fresh one.

use rusqlite::{Connection, Transaction};

/// Each entry upgrades from version `index` to `index + 1`.
const MIGRATIONS: &[fn(&Transaction<'_>) -> rusqlite::Result<()>] =
    &[v1_initial, v2_revision_watermark, v3_holds_and_body_digest];

/// The version a fresh database ends at.
pub const LATEST: u32 = MIGRATIONS.len() as u32;

fn v1_initial(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "
        CREATE TABLE meta (
            key   TEXT PRIMARY KEY NOT NULL,
            value TEXT NOT NULL
        );
        -- Public keys the handset pinned at enrollment; never secret.
        CREATE TABLE server_keys (
            kid        TEXT PRIMARY KEY NOT NULL,
            public_key BLOB NOT NULL
        );
        CREATE TABLE manifests (
            route_id      TEXT NOT NULL,
            delivery_date TEXT NOT NULL,
            manifest_id   TEXT NOT NULL,
            revision      INTEGER NOT NULL,
            courier_id    TEXT NOT NULL,
            valid_from    TEXT NOT NULL,
            valid_until   TEXT NOT NULL,
            tag_bits      INTEGER NOT NULL,
            max_attempts  INTEGER NOT NULL,
            code_digits   INTEGER NOT NULL,
            installed_at  TEXT NOT NULL,
            PRIMARY KEY (route_id, delivery_date)
        );
        CREATE TABLE stops (
            route_id      TEXT NOT NULL,
            delivery_date TEXT NOT NULL,
            stop_id       TEXT NOT NULL,
            sequence      INTEGER NOT NULL,
            address       TEXT NOT NULL,
            recipient     TEXT NOT NULL,
            PRIMARY KEY (route_id, delivery_date, stop_id)
        );
        -- Manifest content: replaced wholesale by each new revision.
        CREATE TABLE parcels (
            delivery_date TEXT NOT NULL,
            parcel_id     TEXT NOT NULL,
            route_id      TEXT NOT NULL,
            stop_id       TEXT NOT NULL,
            requires_code INTEGER NOT NULL,
            attempt       INTEGER NOT NULL,
            salt          BLOB,
            tag           INTEGER,
            PRIMARY KEY (delivery_date, parcel_id)
        );
        CREATE INDEX parcels_by_id ON parcels (parcel_id);
        CREATE INDEX parcels_by_stop ON parcels (route_id, delivery_date, stop_id);
        -- What happened at the door, per attempt: survives manifest revisions, so a
        -- re-sync can never reset a try count or forget an outcome.
        CREATE TABLE parcel_state (
            parcel_id     TEXT NOT NULL,
            delivery_date TEXT NOT NULL,
            attempt       INTEGER NOT NULL,
            failed_tries  INTEGER NOT NULL DEFAULT 0,
            outcome       TEXT,
            reason        TEXT,
            verified      TEXT,
            recorded_at   TEXT,
            seq           INTEGER,
            PRIMARY KEY (parcel_id, delivery_date, attempt)
        );
        -- The confirmation outbox. `seq` comes from meta.next_seq in the same
        -- transaction that records the outcome, so it is never reused.
        CREATE TABLE outbox (
            seq             INTEGER PRIMARY KEY NOT NULL,
            confirmation_id TEXT NOT NULL UNIQUE,
            parcel_id       TEXT NOT NULL,
            delivery_date   TEXT NOT NULL,
            envelope        TEXT,
            status          TEXT NOT NULL DEFAULT 'pending'
                            CHECK (status IN ('pending', 'acknowledged', 'rejected')),
            reject_reason   TEXT,
            upload_tries    INTEGER NOT NULL DEFAULT 0,
            created_at      TEXT NOT NULL,
            acked_at        TEXT
        );
        ",
    )
}

/// Keeps the highest revision seen per route and day even after a day's
/// manifest is wiped, so a stale manifest can never be re-installed.
fn v2_revision_watermark(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "
        CREATE TABLE revisions (
            route_id      TEXT NOT NULL,
            delivery_date TEXT NOT NULL,
            revision      INTEGER NOT NULL,
            PRIMARY KEY (route_id, delivery_date)
        );
        INSERT INTO revisions (route_id, delivery_date, revision)
            SELECT route_id, delivery_date, revision FROM manifests;
        CREATE INDEX outbox_status_seq ON outbox (status, seq);
        ",
    )
}

/// A parcel the customer reported they did not order is held; and each
/// revision watermark keeps the SHA-256 of its manifest's signed body, so the
/// same revision with other bytes is refused as a conflict. Watermarks from
/// before this step have no digest (NULL) until that revision is offered again.
fn v3_holds_and_body_digest(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "
        ALTER TABLE parcels ADD COLUMN hold INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE revisions ADD COLUMN body_sha256 BLOB;
        ",
    )
}

/// Brings the database up to `target` (normally [`LATEST`]).
pub fn migrate_to(conn: &mut Connection, target: u32) -> rusqlite::Result<()> {
    loop {
        let version: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version >= target {
            return Ok(());
        }
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        // Re-read inside the write lock in case another process migrated meanwhile.
        let version: u32 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version >= target {
            return Ok(());
        }
        if let Some(step) = usize::try_from(version)
            .ok()
            .and_then(|v| MIGRATIONS.get(v))
        {
            step(&tx)?;
        }
        tx.pragma_update(None, "user_version", version + 1)?;
        tx.commit()?;
    }
}
