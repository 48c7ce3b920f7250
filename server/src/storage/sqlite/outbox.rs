//! The notice outbox on SQLite: claims with a lease, their renewal, and the
//! marks a send leaves. The sender's rules (tries, backoff, channels) live
//! in [`crate::notices`]; these are its statements.

use super::*;

/// Claim up to `n` due notices for `secs` seconds.
pub(super) fn claim(
    tx: &Connection,
    now: DateTime<Utc>,
    secs: i64,
    n: u32,
) -> Result<Vec<NoticeJob>> {
    let mut st = tx.prepare_cached(
        "SELECT id, parcel_id, delivery_date, attempt, tries, last_error FROM notices
         WHERE status=?3 AND next_attempt_at <= ?1 AND (claimed_until IS NULL OR claimed_until <= ?1)
         ORDER BY id LIMIT ?2",
    )?;
    let jobs = st
        .query_map(params![Ts(now), n, NoticeState::Pending], |r| {
            Ok(NoticeJob {
                notice_id: r.get(0)?,
                parcel_id: r.get(1)?,
                delivery_date: r.get::<_, Day>(2)?.0,
                attempt: r.get(3)?,
                tries: r.get(4)?,
                last_error: r.get(5)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let until = Ts(now + chrono::Duration::seconds(secs));
    let mut st = tx.prepare_cached("UPDATE notices SET claimed_until=?2 WHERE id=?1")?;
    for j in &jobs {
        st.execute(params![j.notice_id, until])?;
    }
    Ok(jobs)
}

/// Extend the claims still held (pending and claimed) to `until`.
pub(super) fn renew(tx: &Connection, ids: &[i64], until: DateTime<Utc>) -> Result<()> {
    let mut st = tx.prepare_cached(
        "UPDATE notices SET claimed_until=?2 WHERE id=?1 AND status=?3 AND claimed_until IS NOT NULL",
    )?;
    let until = Ts(until);
    for id in ids {
        st.execute(params![id, until, NoticeState::Pending])?;
    }
    Ok(())
}

pub(super) fn sent(tx: &Connection, notice_id: i64, now: DateTime<Utc>) -> Result<()> {
    tx.execute(
        "UPDATE notices SET status=?3, sent_at=?2, claimed_until=NULL, tries=tries+1 WHERE id=?1",
        params![notice_id, Ts(now), NoticeState::Sent],
    )?;
    Ok(())
}

/// Record a failed try: due again at `retry`, or failed for good without one.
pub(super) fn failed(
    tx: &Connection,
    id: i64,
    e: &str,
    retry: Option<DateTime<Utc>>,
) -> Result<()> {
    match retry {
        Some(t) => tx.execute(
            "UPDATE notices SET tries=tries+1, last_error=?2, next_attempt_at=?3, claimed_until=NULL WHERE id=?1",
            params![id, e, Ts(t)],
        )?,
        None => tx.execute(
            "UPDATE notices SET tries=tries+1, last_error=?2, status=?3, claimed_until=NULL WHERE id=?1",
            params![id, e, NoticeState::Failed],
        )?,
    };
    Ok(())
}

/// Pending, sent and failed notices.
pub(super) fn counts(tx: &Connection) -> Result<(u64, u64, u64)> {
    let mut st = tx.prepare_cached("SELECT COUNT(*) FROM notices WHERE status=?1")?;
    let mut count = |s: NoticeState| -> Result<u64> { Ok(st.query_row([s], |r| r.get(0))?) };
    Ok((
        count(NoticeState::Pending)?,
        count(NoticeState::Sent)?,
        count(NoticeState::Failed)?,
    ))
}
