//! Transactions: the error inside one, retries on serialization failures
//! (`transact!`), isolation levels and the statement helpers.

use super::*;

/// How many times one operation runs before a serialization failure is returned.
pub(super) const MAX_TRIES: u32 = 10;

pub(super) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];
pub(super) type Tx<'a> = deadpool_postgres::Transaction<'a>;

/// An error inside a transaction: a database error (maybe retryable), a
/// domain answer such as NotFound / Conflict, or "run it again" (facts went
/// stale under us).
#[derive(Debug)]
pub(super) enum TxError {
    Pg(tokio_postgres::Error),
    Storage(StorageError),
    Retry,
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

pub(super) type TxResult<T> = std::result::Result<T, TxError>;

pub(super) fn be(e: impl std::fmt::Display) -> StorageError {
    StorageError::Backend(e.to_string())
}

/// The message with the server's detail, never the query parameters.
pub(super) fn pg_be(e: &tokio_postgres::Error) -> StorageError {
    match e.as_db_error() {
        Some(db) => {
            StorageError::Backend(format!("postgres {}: {}", db.code().code(), db.message()))
        }
        None => be(e),
    }
}

pub(super) fn retryable(e: &tokio_postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
    )
}

pub(super) fn u32_of(v: i64) -> TxResult<u32> {
    Ok(u32::try_from(v).map_err(be)?)
}

pub(super) fn u64_of(v: i64) -> TxResult<u64> {
    Ok(u64::try_from(v).map_err(be)?)
}

pub(super) fn i64_of(v: u64) -> TxResult<i64> {
    Ok(i64::try_from(v).map_err(be)?)
}

pub(super) async fn query(tx: &Tx<'_>, sql: &str, p: Params<'_>) -> TxResult<Vec<Row>> {
    let st = tx.prepare_cached(sql).await?;
    Ok(tx.query(&st, p).await?)
}

pub(super) async fn query_opt(tx: &Tx<'_>, sql: &str, p: Params<'_>) -> TxResult<Option<Row>> {
    let st = tx.prepare_cached(sql).await?;
    Ok(tx.query_opt(&st, p).await?)
}

pub(super) async fn query_one(tx: &Tx<'_>, sql: &str, p: Params<'_>) -> TxResult<Row> {
    let st = tx.prepare_cached(sql).await?;
    Ok(tx.query_one(&st, p).await?)
}

pub(super) async fn exec(tx: &Tx<'_>, sql: &str, p: Params<'_>) -> TxResult<u64> {
    let st = tx.prepare_cached(sql).await?;
    Ok(tx.execute(&st, p).await?)
}

/// Row getters that report a type mismatch as an error, not a panic.
pub(super) fn get<'a, T: tokio_postgres::types::FromSql<'a>>(r: &'a Row, i: usize) -> TxResult<T> {
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
                    Err(e) => Some(e),
                },
                Err(TxError::Storage(e)) => break Err(e),
                Err(TxError::Pg(e)) => Some(e),
                Err(TxError::Retry) => None,
            };
            match err {
                Some(e) if !retryable(&e) || tries >= MAX_TRIES => break Err(pg_be(&e)),
                None if tries >= MAX_TRIES => {
                    break Err(StorageError::Backend(
                        "gave up after concurrent writes".into(),
                    ));
                }
                _ => {}
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

pub(super) const SER: IsolationLevel = IsolationLevel::Serializable;
/// Reads of several statements: one snapshot, and (read-only) never a
/// serialization failure.
pub(super) const SNAP: IsolationLevel = IsolationLevel::RepeatableRead;
pub(super) const RC: IsolationLevel = IsolationLevel::ReadCommitted;

pub(super) fn fin<T>(r: TxResult<T>) -> Result<T> {
    match r {
        Ok(v) => Ok(v),
        Err(TxError::Pg(e)) => Err(pg_be(&e)),
        Err(TxError::Storage(e)) => Err(e),
        Err(TxError::Retry) => Err(StorageError::Backend("concurrent write".into())),
    }
}
