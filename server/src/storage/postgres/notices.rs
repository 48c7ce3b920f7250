//! The notice outbox: claims with a lease (`FOR UPDATE SKIP LOCKED`, so
//! senders on several nodes never take the same notice), renewals, results
//! and counts.

use super::*;

pub(super) async fn claim_notices(
    s: &PostgresStorage,
    now: DateTime<Utc>,
    secs: i64,
    n: u32,
) -> Result<Vec<NoticeJob>> {
    let until = now + chrono::Duration::seconds(secs);
    let limit = i64::from(n);
    // READ COMMITTED: rows another node holds are skipped, and a row it
    // claimed and committed meanwhile is re-checked against the WHERE
    // (its lease is in the future now) before we take it.
    transact!(s, RC, |tx| {
        async {
        query(
            &tx,
            // MATERIALIZED: the locking, limited pick runs exactly once
            // (as an IN sub-select it may be re-run per row and take more).
            "WITH due AS MATERIALIZED (
               SELECT id FROM notices
               WHERE status=$4 AND next_attempt_at <= $1 AND (claimed_until IS NULL OR claimed_until <= $1)
               ORDER BY id LIMIT $3
               FOR UPDATE SKIP LOCKED)
             UPDATE notices n SET claimed_until=$2 FROM due WHERE n.id = due.id
             RETURNING n.id, n.parcel_id, n.delivery_date, n.attempt, n.tries, n.last_error",
            &[&now, &until, &limit, &NoticeState::Pending],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(NoticeJob {
                notice_id: get(r, 0)?,
                parcel_id: get(r, 1)?,
                delivery_date: get(r, 2)?,
                attempt: u32_of(get(r, 3)?)?,
                tries: u32_of(get(r, 4)?)?,
                last_error: get(r, 5)?,
            })
        })
        .collect::<TxResult<Vec<_>>>()
        .map(|mut v| {
            v.sort_by_key(|j| j.notice_id);
            v
        })
    }
    .await
    })
}

pub(super) async fn renew_notice_claims(
    s: &PostgresStorage,
    notice_ids: &[i64],
    until: DateTime<Utc>,
) -> Result<()> {
    let ids = notice_ids.to_vec();
    transact!(s, RC, |tx| {
        async {
        exec(
            &tx,
            "UPDATE notices SET claimed_until=$2 WHERE id = ANY($1) AND status=$3 AND claimed_until IS NOT NULL",
            &[&ids, &until, &NoticeState::Pending],
        )
        .await?;
        Ok(())
    }
    .await
    })
}

pub(super) async fn notice_sent(
    s: &PostgresStorage,
    notice_id: i64,
    now: DateTime<Utc>,
) -> Result<()> {
    transact!(s, RC, |tx| {
        async {
        exec(
            &tx,
            "UPDATE notices SET status=$3, sent_at=$2, claimed_until=NULL, tries=tries+1 WHERE id=$1",
            &[&notice_id, &now, &NoticeState::Sent],
        )
        .await?;
        Ok(())
    }
    .await
    })
}

pub(super) async fn notice_failed(
    s: &PostgresStorage,
    id: i64,
    e: &str,
    retry: Option<DateTime<Utc>>,
) -> Result<()> {
    let (notice_id, error) = (id, e);
    transact!(s, RC, |tx| {
        async {
        match retry {
            Some(t) => exec(
                &tx,
                "UPDATE notices SET tries=tries+1, last_error=$2, next_attempt_at=$3, claimed_until=NULL WHERE id=$1",
                &[&notice_id, &error, &t],
            )
            .await?,
            None => exec(
                &tx,
                "UPDATE notices SET tries=tries+1, last_error=$2, status=$3, claimed_until=NULL WHERE id=$1",
                &[&notice_id, &error, &NoticeState::Failed],
            )
            .await?,
        };
        Ok(())
    }
    .await
    })
}

pub(super) async fn notice_counts(s: &PostgresStorage) -> Result<(u64, u64, u64)> {
    fin(async {
        let rows = s
            .read(
                "SELECT status, COUNT(*) FROM notices WHERE status = ANY($1) GROUP BY status",
                &[&NoticeState::ALL],
            )
            .await?;
        let mut by = HashMap::new();
        for r in &rows {
            by.insert(get::<NoticeState>(r, 0)?, u64_of(get(r, 1)?)?);
        }
        let n = |s| by.get(&s).copied().unwrap_or(0);
        Ok((
            n(NoticeState::Pending),
            n(NoticeState::Sent),
            n(NoticeState::Failed),
        ))
    }
    .await)
}
