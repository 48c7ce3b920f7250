//! Opening connections: the PRAGMAs, the schema migrations and the pool of
//! read-only connections beside the writer. Kept apart from the trait impl
//! so every connection is set up in one place, whatever opens it.

use super::*;
use crate::storage::migrations::{self, Dialect};

/// Read-only connections beside the writer (two cores serve requests; a
/// few more readers cover requests waiting on disk).
const READERS: usize = 4;

/// The read-only connections; a read takes a free one, else waits its turn on one.
pub(super) struct Readers {
    conns: Vec<Mutex<Connection>>,
    next: AtomicUsize,
}

impl Readers {
    pub(super) fn open(path: &Path) -> Result<Self> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conns = (0..READERS)
            .map(|_| {
                let conn = Connection::open_with_flags(path, flags)?;
                apply_pragmas(&conn, Role::Reader)?;
                Ok(Mutex::new(conn))
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            conns,
            next: AtomicUsize::new(0),
        })
    }

    pub(super) fn lock_one(&self) -> MutexGuard<'_, Connection> {
        let n = self.conns.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        for i in 0..n {
            if let Ok(g) = self.conns[(start + i) % n].try_lock() {
                return g;
            }
        }
        // A panic inside a read rolled its transaction back; the connection is good.
        self.conns[start]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

pub(super) fn be(e: impl std::fmt::Display) -> StorageError {
    StorageError::Backend(e.to_string())
}

impl From<rusqlite::Error> for StorageError {
    fn from(e: rusqlite::Error) -> Self {
        be(e)
    }
}

/// Which connection the PRAGMAs are for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    Writer,
    Reader,
}

/// All connection PRAGMAs in one place. The writer sets the file's journal
/// mode; a reader only waits for locks and reads it.
pub(super) fn apply_pragmas(conn: &Connection, role: Role) -> Result<()> {
    if role == Role::Writer {
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA synchronous=FULL;
             PRAGMA secure_delete=ON;",
        )?;
    }
    conn.execute_batch(
        "PRAGMA foreign_keys=ON;
         PRAGMA busy_timeout=5000;",
    )?;
    Ok(())
}

pub(super) fn migrate(conn: &mut Connection) -> Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let version = usize::try_from(version).map_err(be)?;
    if version > migrations::COUNT {
        return Err(StorageError::Backend(format!(
            "database schema version {version} is newer than this server ({})",
            migrations::COUNT
        )));
    }
    for (i, sql) in migrations::all(Dialect::Sqlite)
        .iter()
        .enumerate()
        .skip(version)
    {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// A read answers from the last commit while the writer is busy (here:
    /// held by an operation, as a long upload would), instead of queueing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_do_not_wait_for_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStorage::open(&dir.path().join("doorcode.db")).unwrap();
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let (started, running) = tokio::sync::oneshot::channel();
        let s2 = s.clone();
        let held = tokio::spawn(async move {
            s2.tx(move |_| {
                let _ = started.send(());
                let _ = wait.recv();
                Ok(())
            })
            .await
        });
        running.await.unwrap();
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            s.device_by_token("no such token"),
        )
        .await
        .expect("the read waited for the writer");
        assert!(read.unwrap().is_none());
        release.send(()).unwrap();
        held.await.unwrap().unwrap();
    }

    /// The readers cannot write, whatever a future read method tries.
    #[tokio::test]
    async fn readers_are_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStorage::open(&dir.path().join("doorcode.db")).unwrap();
        let err = s
            .read(|tx| Ok(tx.execute("DELETE FROM devices", [])?))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("readonly"), "{err}");
    }
}
