//! Opening the handset database: every PRAGMA is set here and nowhere else.

use super::schema;
use rusqlite::Connection;
use std::path::Path;

/// Opens (creating if needed) and migrates the database at `path`.
///
/// WAL with `synchronous=FULL` makes each commit durable on return, which is
/// what lets a wrong try count before the courier sees the result.
pub fn open(path: &Path) -> rusqlite::Result<Connection> {
    let mut conn = Connection::open(path)?;
    configure(&conn)?;
    schema::migrate_to(&mut conn, schema::LATEST)?;
    Ok(conn)
}

/// Opens without migrating beyond `version` (for migration tests).
pub fn open_at_version(path: &Path, version: u32) -> rusqlite::Result<Connection> {
    let mut conn = Connection::open(path)?;
    configure(&conn)?;
    schema::migrate_to(&mut conn, version)?;
    Ok(conn)
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") && !mode.eq_ignore_ascii_case("memory") {
        return Err(rusqlite::Error::InvalidQuery);
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Wiped rows really go: deleted pages are zeroed, not left readable.
    conn.pragma_update(None, "secure_delete", "ON")?;
    Ok(())
}
