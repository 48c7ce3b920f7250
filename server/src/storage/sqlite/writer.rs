//! The one writer connection, on a thread of its own, with group commit.
//!
//! Write operations queue for the writer. It takes every operation waiting
//! (up to [`MAX_GROUP`]) and runs them one after another in one IMMEDIATE
//! transaction, each inside a savepoint, then commits once: one fsync
//! (`synchronous=FULL`) serves the whole group. An operation that fails (a
//! domain answer such as Conflict, an SQLite error or a panic) is rolled back
//! to its savepoint, so only its own writes are undone. Each caller gets its
//! answer after the commit that made its writes durable, or the commit's
//! error; an answer is never sent for writes that could still be lost.
//!
//! Running the group's operations in order in one transaction is the same as
//! running them one by one: each sees what the earlier ones wrote.

use super::{Result, be};
use rusqlite::Connection;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use tokio::sync::oneshot;

/// At most this many operations share a commit, so one group's transaction
/// stays short even when hundreds of requests wait.
pub(super) const MAX_GROUP: usize = 64;

/// The handle the storage clones; the thread ends when the last one drops.
#[derive(Clone)]
pub(super) struct Writer {
    queue: mpsc::Sender<Job>,
    counts: Arc<Counts>,
}

/// Commits and operations so far: the group size is their ratio.
#[derive(Default)]
pub(super) struct Counts {
    pub(super) commits: AtomicU64,
    pub(super) ops: AtomicU64,
    /// Operations handed to the writer (queued, running or done).
    pub(super) submitted: AtomicU64,
}

enum Job {
    /// One operation for the next group's transaction.
    Op(Box<dyn Op>),
    /// Work that must run outside any transaction (a WAL checkpoint), alone.
    Alone(Box<dyn FnOnce(&mut Connection) + Send>),
}

/// An operation waiting in the queue.
trait Op: Send {
    /// Run it inside the group's transaction (in its savepoint); the result
    /// waits in the returned [`Deliver`] until the commit. False: the
    /// transaction can no longer be trusted.
    fn run(self: Box<Self>, conn: &Connection) -> (Box<dyn Deliver>, bool);
    /// Answer without running it (the group's transaction could not start).
    fn fail(self: Box<Self>, why: &str);
}

/// A result kept until its group's commit.
trait Deliver: Send {
    /// `Err(why)` when the commit failed: nothing of the group was written.
    fn deliver(self: Box<Self>, commit: std::result::Result<(), &str>);
}

struct PendingOp<T, F> {
    f: F,
    reply: oneshot::Sender<Result<T>>,
}

struct Done<T> {
    out: Result<T>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T, F> Op for PendingOp<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T> + Send + 'static,
{
    fn run(self: Box<Self>, conn: &Connection) -> (Box<dyn Deliver>, bool) {
        let PendingOp { f, reply } = *self;
        let (out, intact) = in_savepoint(conn, f);
        (Box::new(Done { out, reply }), intact)
    }

    fn fail(self: Box<Self>, why: &str) {
        // The caller may have gone away (a dropped request); nothing to tell.
        let _ = self.reply.send(Err(be(why)));
    }
}

impl<T: Send> Deliver for Done<T> {
    fn deliver(self: Box<Self>, commit: std::result::Result<(), &str>) {
        let answer = match (self.out, commit) {
            (Err(e), _) => Err(e),
            (Ok(_), Err(why)) => Err(be(why)),
            (Ok(v), Ok(())) => Ok(v),
        };
        let _ = self.reply.send(answer);
    }
}

/// Run `f` inside a savepoint: released on success, rolled back on an
/// error or a panic. The flag is false when the savepoint statements
/// themselves failed: the transaction is then in an unknown state, and the
/// caller rolls the whole group back.
fn in_savepoint<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<T>,
) -> (Result<T>, bool) {
    if let Err(e) = conn.execute_batch("SAVEPOINT op") {
        return (Err(e.into()), false);
    }
    let out = match catch_unwind(AssertUnwindSafe(|| f(conn))) {
        Ok(out) => out,
        Err(_) => Err(be("a storage operation panicked; its writes were undone")),
    };
    let end = match &out {
        Ok(_) => conn.execute_batch("RELEASE op"),
        Err(_) => conn.execute_batch("ROLLBACK TO op; RELEASE op"),
    };
    match end {
        Ok(()) => (out, true),
        Err(e) => (Err(e.into()), false),
    }
}

impl Writer {
    /// Move the connection (migrated, PRAGMAs set) onto the writer thread.
    pub(super) fn start(conn: Connection) -> Result<Self> {
        let (queue, jobs) = mpsc::channel();
        let counts = Arc::new(Counts::default());
        let c = counts.clone();
        std::thread::Builder::new()
            .name("doorcode-sqlite-writer".into())
            .spawn(move || writer_loop(conn, &jobs, &c))
            .map_err(be)?;
        Ok(Self { queue, counts })
    }

    #[cfg(test)]
    pub(super) fn counts(&self) -> &Counts {
        &self.counts
    }

    /// Run one write operation in the next group; its answer comes after
    /// the group's commit.
    pub(super) async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.submit(Job::Op(Box::new(PendingOp { f, reply })))?;
        answer
            .await
            .map_err(|_| be("the SQLite writer stopped before answering"))?
    }

    /// Run `f` alone, outside any transaction, between two groups.
    pub(super) async fn alone<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.submit(Job::Alone(Box::new(move |conn| {
            let out = catch_unwind(AssertUnwindSafe(|| f(conn)))
                .unwrap_or_else(|_| Err(be("a storage operation panicked")));
            let _ = reply.send(out);
        })))?;
        answer
            .await
            .map_err(|_| be("the SQLite writer stopped before answering"))?
    }

    fn submit(&self, job: Job) -> Result<()> {
        self.counts.submitted.fetch_add(1, Ordering::Relaxed);
        self.queue
            .send(job)
            .map_err(|_| be("the SQLite writer has stopped"))
    }
}

fn writer_loop(mut conn: Connection, jobs: &mpsc::Receiver<Job>, counts: &Counts) {
    while let Ok(first) = jobs.recv() {
        let mut group = Vec::new();
        let mut next = Some(first);
        while let Some(job) = next.take() {
            match job {
                Job::Op(op) => group.push(op),
                Job::Alone(f) => {
                    commit_group(&conn, std::mem::take(&mut group), counts);
                    f(&mut conn);
                }
            }
            if group.len() < MAX_GROUP {
                next = jobs.try_recv().ok();
            }
        }
        commit_group(&conn, group, counts);
    }
}

/// One transaction for the group, one commit, then every answer.
fn commit_group(conn: &Connection, group: Vec<Box<dyn Op>>, counts: &Counts) {
    if group.is_empty() {
        return;
    }
    let n = group.len() as u64;
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        let why = format!("starting a write transaction: {e}");
        for op in group {
            op.fail(&why);
        }
        return;
    }
    let mut done = Vec::with_capacity(group.len());
    let mut broken: Option<String> = None;
    for op in group {
        match &broken {
            Some(why) => op.fail(why),
            None => {
                let (d, intact) = op.run(conn);
                done.push(d);
                // A failed savepoint statement, or a transaction SQLite
                // ended itself (an I/O error), leaves nothing to trust:
                // the whole group is rolled back and fails.
                if !intact || conn.is_autocommit() {
                    broken = Some("the write transaction failed under an operation".into());
                }
            }
        }
    }
    let commit = match &broken {
        Some(why) => Err(why.clone()),
        None => conn
            .execute_batch("COMMIT")
            .map_err(|e| format!("committing: {e}")),
    };
    if commit.is_err() && !conn.is_autocommit() {
        // Nothing of the group may stay half-written.
        let _ = conn.execute_batch("ROLLBACK");
    }
    if commit.is_ok() {
        counts.commits.fetch_add(1, Ordering::Relaxed);
        counts.ops.fetch_add(n, Ordering::Relaxed);
    }
    for d in done {
        d.deliver(commit.as_ref().map(|_| ()).map_err(String::as_str));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::storage::StorageError;
    use std::time::Duration;

    type BoxedOp = Box<dyn FnOnce(&Connection) -> Result<()> + Send>;

    fn writer(dir: &tempfile::TempDir) -> Writer {
        let conn = Connection::open(dir.path().join("w.db")).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
             CREATE TABLE t(k TEXT PRIMARY KEY);",
        )
        .unwrap();
        Writer::start(conn).unwrap()
    }

    /// Holds the writer until the returned sender is dropped or sent to,
    /// so the operations submitted meanwhile queue for one group.
    async fn hold(w: &Writer) -> (std::sync::mpsc::Sender<()>, tokio::task::JoinHandle<()>) {
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let (started, running) = oneshot::channel();
        let w2 = w.clone();
        let held = tokio::spawn(async move {
            w2.run(move |_| {
                let _ = started.send(());
                let _ = wait.recv();
                Ok(())
            })
            .await
            .unwrap();
        });
        running.await.unwrap();
        (release, held)
    }

    async fn queued(w: &Writer, n: u64) {
        while w.counts().submitted.load(Ordering::Relaxed) < n {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    fn insert(k: &str) -> impl FnOnce(&Connection) -> Result<()> + Send + 'static {
        let k = k.to_string();
        move |c| {
            c.execute("INSERT INTO t(k) VALUES(?1)", [k])?;
            Ok(())
        }
    }

    fn keys(dir: &tempfile::TempDir) -> Vec<String> {
        let c = Connection::open(dir.path().join("w.db")).unwrap();
        let mut st = c.prepare("SELECT k FROM t ORDER BY k").unwrap();
        st.query_map([], |r| r.get(0))
            .unwrap()
            .map(|k| k.unwrap())
            .collect()
    }

    /// Ten writes that arrive while a commit is under way share the next one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_waiting_for_the_writer_share_one_commit() {
        let dir = tempfile::tempdir().unwrap();
        let w = writer(&dir);
        let (release, held) = hold(&w).await;
        let ops: Vec<_> = (0..10)
            .map(|i| {
                let w = w.clone();
                tokio::spawn(async move { w.run(insert(&format!("k{i}"))).await })
            })
            .collect();
        queued(&w, 11).await;
        release.send(()).unwrap();
        held.await.unwrap();
        for op in ops {
            op.await.unwrap().unwrap();
        }
        let c = w.counts();
        assert_eq!(c.ops.load(Ordering::Relaxed), 11);
        assert_eq!(
            c.commits.load(Ordering::Relaxed),
            2,
            "the held op, then one group of ten"
        );
        assert_eq!(keys(&dir).len(), 10);
    }

    /// In one group, a failing and a panicking operation are undone alone:
    /// the others' writes are committed, and each caller hears its own answer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_operation_undoes_only_its_own_writes() {
        let dir = tempfile::tempdir().unwrap();
        let w = writer(&dir);
        let (release, held) = hold(&w).await;
        let spawn = |f: BoxedOp| {
            let w = w.clone();
            tokio::spawn(async move { w.run(f).await })
        };
        let a = spawn(Box::new(insert("a")));
        queued(&w, 2).await;
        let b = spawn(Box::new(|c| {
            insert("b")(c)?;
            Err(StorageError::Conflict("no".into()))
        }));
        queued(&w, 3).await;
        let p = spawn(Box::new(|c| {
            insert("p")(c)?;
            panic!("an operation's bug");
        }));
        queued(&w, 4).await;
        // A key taken earlier in the same group: an SQLite error.
        let dup = spawn(Box::new(insert("a")));
        queued(&w, 5).await;
        let c = spawn(Box::new(insert("c")));
        queued(&w, 6).await;
        release.send(()).unwrap();
        held.await.unwrap();
        assert!(a.await.unwrap().is_ok());
        assert!(matches!(b.await.unwrap(), Err(StorageError::Conflict(_))));
        assert!(
            p.await
                .unwrap()
                .unwrap_err()
                .to_string()
                .contains("panicked")
        );
        assert!(
            dup.await
                .unwrap()
                .unwrap_err()
                .to_string()
                .contains("UNIQUE")
        );
        assert!(c.await.unwrap().is_ok());
        assert_eq!(keys(&dir), ["a", "c"]);
        assert_eq!(w.counts().commits.load(Ordering::Relaxed), 2);
    }

    /// Work that cannot run in a transaction runs between groups.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn work_alone_runs_outside_a_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let w = writer(&dir);
        w.run(insert("x")).await.unwrap();
        let in_tx = w
            .alone(|c| {
                c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
                Ok(c.is_autocommit())
            })
            .await
            .unwrap();
        assert!(in_tx);
        assert_eq!(keys(&dir), ["x"]);
    }
}
