//! The state every node shares, on SQLite: board sessions and rate-limit
//! counters ([`crate::domain::limits`] has the rules). Each counter update
//! is one upsert statement with `RETURNING`.

use super::*;

/// What a hit does to a row that exists: restart the window when it ended
/// at or before ?3 (`now`), else add one (the count stops growing at a
/// billion). Right-hand sides read the row as it was.
const HIT_SET: &str = "hits = CASE WHEN rate_counters.expires_at <= ?3 THEN 1
                 ELSE MIN(rate_counters.hits + 1, 1000000000) END,
           started = CASE WHEN rate_counters.expires_at <= ?3 THEN ?3 ELSE rate_counters.started END,
           expires_at = CASE WHEN rate_counters.expires_at <= ?3 THEN ?4 ELSE rate_counters.expires_at END";

fn count_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, Ts)> {
    Ok((r.get(0)?, r.get(1)?))
}

fn rate_count((hits, started): (i64, Ts)) -> Result<RateCount> {
    Ok(RateCount {
        hits: u32::try_from(hits).map_err(be)?,
        started: started.0,
    })
}

pub(super) fn rate_hit(tx: &Connection, h: &RateHit) -> Result<Option<RateCount>> {
    let (now, until) = (Ts(h.now), Ts(h.expires_at));
    let sql = format!(
        "UPDATE rate_counters SET {HIT_SET} WHERE limit_name = ?1 AND rate_key = ?2
         RETURNING hits, started"
    );
    let row = tx
        .prepare_cached(&sql)?
        .query_row(params![h.limit, h.key, now, until], count_of)
        .optional()?;
    if let Some(r) = row {
        return rate_count(r).map(Some);
    }
    if h.sweep > 0 {
        tx.prepare_cached(
            "DELETE FROM rate_counters WHERE rowid IN (SELECT rowid FROM rate_counters
             WHERE limit_name = ?1 AND expires_at <= ?2 LIMIT ?3)",
        )?
        .execute(params![h.limit, now, h.sweep])?;
    }
    let cap = h.cap.map(i64::from).unwrap_or(i64::MAX);
    let sql = format!(
        "INSERT INTO rate_counters(limit_name, rate_key, started, expires_at, hits)
         SELECT ?1, ?2, ?3, ?4, 1
         WHERE (SELECT COUNT(*) FROM rate_counters WHERE limit_name = ?1) < ?5
         ON CONFLICT(limit_name, rate_key) DO UPDATE SET {HIT_SET}
         RETURNING hits, started"
    );
    let row = tx
        .prepare_cached(&sql)?
        .query_row(params![h.limit, h.key, now, until, cap], count_of)
        .optional()?;
    row.map(rate_count).transpose()
}

pub(super) fn rate_refund(tx: &Connection, limit: &str, key: &str, now: Ts) -> Result<()> {
    tx.prepare_cached(
        "UPDATE rate_counters SET hits = hits - 1
         WHERE limit_name = ?1 AND rate_key = ?2 AND hits > 0 AND expires_at > ?3",
    )?
    .execute(params![limit, key, now])?;
    Ok(())
}

/// Delete up to ?2 sessions that expired at or before ?1: a new session
/// sweeps a few, the retention sweep the rest.
const EXPIRED_SESSIONS: &str = "DELETE FROM board_sessions WHERE id_hash IN
         (SELECT id_hash FROM board_sessions WHERE expires_at <= ?1 LIMIT ?2)";

pub(super) fn create_session(tx: &Connection, s: &NewSession, sweep: u32, now: Ts) -> Result<()> {
    tx.prepare_cached(EXPIRED_SESSIONS)?
        .execute(params![now, sweep])?;
    tx.prepare_cached("INSERT INTO board_sessions(id_hash, csrf, expires_at) VALUES(?1, ?2, ?3)")?
        .execute(params![s.id_hash, s.csrf, Ts(s.expires_at)])?;
    Ok(())
}

pub(super) fn delete_session(tx: &Connection, id_hash: &str) -> Result<()> {
    tx.prepare_cached("DELETE FROM board_sessions WHERE id_hash = ?1")?
        .execute([id_hash])?;
    Ok(())
}

pub(super) fn session_csrf(tx: &Connection, id_hash: &str, now: Ts) -> Result<Option<String>> {
    Ok(tx
        .prepare_cached("SELECT csrf FROM board_sessions WHERE id_hash = ?1 AND expires_at > ?2")?
        .query_row(params![id_hash, now], |r| r.get(0))
        .optional()?)
}

pub(super) fn sweep(tx: &Connection, now: Ts, limit: u32) -> Result<u64> {
    let a = tx
        .prepare_cached(EXPIRED_SESSIONS)?
        .execute(params![now, limit])?;
    let b = tx
        .prepare_cached(
            "DELETE FROM rate_counters WHERE rowid IN
             (SELECT rowid FROM rate_counters WHERE expires_at <= ?1 LIMIT ?2)",
        )?
        .execute(params![now, limit])?;
    u64::try_from(a + b).map_err(be)
}
