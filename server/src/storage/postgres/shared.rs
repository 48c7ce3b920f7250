//! The state every node shares, on PostgreSQL: board sessions and
//! rate-limit counters ([`crate::domain::limits`] has the rules). Each
//! counter update is one statement (`UPDATE … RETURNING`, or an upsert with
//! `RETURNING` for a new key) run READ COMMITTED: the row lock orders nodes
//! racing on one key, so two can never both take its last hit.

use super::*;

/// What a hit does to a row that exists: restart the window when it ended
/// at or before $3 (`now`), else add one (the count stops growing at a
/// billion). Right-hand sides read the row as it was.
const HIT_SET: &str = "hits = CASE WHEN rate_counters.expires_at <= $3 THEN 1
                 ELSE LEAST(rate_counters.hits + 1, 1000000000) END,
           started = CASE WHEN rate_counters.expires_at <= $3 THEN $3 ELSE rate_counters.started END,
           expires_at = CASE WHEN rate_counters.expires_at <= $3 THEN $4 ELSE rate_counters.expires_at END";

fn rate_count(r: &Row) -> TxResult<RateCount> {
    Ok(RateCount {
        hits: u32_of(get(r, 0)?)?,
        started: get(r, 1)?,
    })
}

impl PostgresStorage {
    pub(super) async fn rate_hit_tx(&self, h: &RateHit) -> Result<Option<RateCount>> {
        let update = format!(
            "UPDATE rate_counters SET {HIT_SET} WHERE limit_name = $1 AND rate_key = $2
             RETURNING hits, started"
        );
        let insert = format!(
            "INSERT INTO rate_counters(limit_name, rate_key, started, expires_at, hits)
             SELECT $1, $2, $3, $4, 1
             WHERE (SELECT COUNT(*) FROM rate_counters WHERE limit_name = $1) < $5
             ON CONFLICT(limit_name, rate_key) DO UPDATE SET {HIT_SET}
             RETURNING hits, started"
        );
        let cap = h.cap.map(i64::from).unwrap_or(i64::MAX);
        let sweep = i64::from(h.sweep);
        transact!(self, RC, |tx| async {
            let p: Params<'_> = &[&h.limit, &h.key, &h.now, &h.expires_at];
            if let Some(r) = query_opt(&tx, &update, p).await? {
                return rate_count(&r).map(Some);
            }
            if sweep > 0 {
                exec(
                    &tx,
                    "DELETE FROM rate_counters WHERE ctid = ANY(ARRAY(SELECT ctid FROM rate_counters
                     WHERE limit_name = $1 AND expires_at <= $2 LIMIT $3))",
                    &[&h.limit, &h.now, &sweep],
                )
                .await?;
            }
            let p: Params<'_> = &[&h.limit, &h.key, &h.now, &h.expires_at, &cap];
            query_opt(&tx, &insert, p)
                .await?
                .as_ref()
                .map(rate_count)
                .transpose()
        }
        .await)
    }

    pub(super) async fn sweep_tx(&self, now: DateTime<Utc>, limit: u32) -> Result<u64> {
        let n = i64::from(limit);
        transact!(self, RC, |tx| async {
            let a = exec(
                &tx,
                "DELETE FROM board_sessions WHERE ctid = ANY(ARRAY(SELECT ctid FROM board_sessions
                 WHERE expires_at <= $1 LIMIT $2))",
                &[&now, &n],
            )
            .await?;
            let b = exec(
                &tx,
                "DELETE FROM rate_counters WHERE ctid = ANY(ARRAY(SELECT ctid FROM rate_counters
                 WHERE expires_at <= $1 LIMIT $2))",
                &[&now, &n],
            )
            .await?;
            Ok(a + b)
        }
        .await)
    }

    pub(super) async fn create_session_tx(
        &self,
        s: &NewSession,
        now: DateTime<Utc>,
        sweep: u32,
    ) -> Result<()> {
        let n = i64::from(sweep);
        transact!(self, RC, |tx| async {
            exec(
                &tx,
                "DELETE FROM board_sessions WHERE ctid = ANY(ARRAY(SELECT ctid FROM board_sessions
                 WHERE expires_at <= $1 LIMIT $2))",
                &[&now, &n],
            )
            .await?;
            exec(
                &tx,
                "INSERT INTO board_sessions(id_hash, csrf, expires_at) VALUES($1, $2, $3)",
                &[&s.id_hash, &s.csrf, &s.expires_at],
            )
            .await?;
            Ok(())
        }
        .await)
    }

    pub(super) async fn session_csrf_tx(
        &self,
        id_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<String>> {
        fin(async {
            let r = self
                .read_opt(
                    "SELECT csrf FROM board_sessions WHERE id_hash = $1 AND expires_at > $2",
                    &[&id_hash, &now],
                )
                .await?;
            r.as_ref().map(|r| get(r, 0)).transpose()
        }
        .await)
    }

    pub(super) async fn delete_session_tx(&self, id_hash: &str) -> Result<()> {
        transact!(self, RC, |tx| async {
            exec(
                &tx,
                "DELETE FROM board_sessions WHERE id_hash = $1",
                &[&id_hash],
            )
            .await?;
            Ok(())
        }
        .await)
    }

    /// Give back a hit taken for a request that turned out not to count.
    pub(super) async fn rate_refund_tx(
        &self,
        limit: &str,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        transact!(self, RC, |tx| async {
            exec(
                &tx,
                "UPDATE rate_counters SET hits = hits - 1
                 WHERE limit_name = $1 AND rate_key = $2 AND hits > 0 AND expires_at > $3",
                &[&limit, &key, &now],
            )
            .await?;
            Ok(())
        }
        .await)
    }
}
