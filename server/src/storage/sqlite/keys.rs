//! Key fingerprints and the conversion of clear track tokens (migration 0005).

use super::*;

pub(super) fn pairs(tx: &Connection, sql: &str) -> Result<Vec<(String, String)>> {
    let mut st = tx.prepare_cached(sql)?;
    let v = st
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(v)
}

pub(super) const FINGERPRINTS: &str =
    "SELECT name, fingerprint FROM key_fingerprints ORDER BY name";

pub(super) fn clear_track_tokens(tx: &Connection, limit: u32) -> Result<Vec<(String, String)>> {
    let mut st = tx.prepare_cached(
        "SELECT parcel_id, track_token FROM parcels WHERE track_nonce IS NULL
         ORDER BY parcel_id LIMIT ?1",
    )?;
    let v = st
        .query_map([limit], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(v)
}

pub(super) fn convert_track_tokens(tx: &Connection, rows: &[TrackConversion]) -> Result<u64> {
    let mut n = 0u64;
    for c in rows {
        n += tx.execute(
            "UPDATE parcels SET track_token=?3, track_nonce=?4, track_legacy=?5
             WHERE parcel_id=?1 AND track_nonce IS NULL AND track_token=?2",
            params![
                c.parcel_id,
                c.clear,
                c.track.hash,
                c.track.nonce,
                c.legacy_hash
            ],
        )? as u64;
    }
    Ok(n)
}

pub(super) fn record(tx: &Connection, fps: &[(String, String)], now: DateTime<Utc>) -> Result<()> {
    for (name, fp) in fps {
        tx.execute(
            "INSERT INTO key_fingerprints(name, fingerprint, recorded_at) VALUES(?1,?2,?3)
             ON CONFLICT(name) DO NOTHING",
            params![name, fp, Ts(now)],
        )?;
    }
    Ok(())
}

pub(super) fn replace(tx: &Connection, swap: &FingerprintSwap) -> Result<bool> {
    let FingerprintSwap {
        name,
        expected,
        new,
        at,
    } = swap;
    let n = match expected {
        Some(old) => tx.execute(
            "UPDATE key_fingerprints SET fingerprint=?3, recorded_at=?4 WHERE name=?1 AND fingerprint=?2",
            params![name, old, new, Ts(*at)],
        )?,
        None => tx.execute(
            "INSERT INTO key_fingerprints(name, fingerprint, recorded_at) VALUES(?1,?2,?3)
             ON CONFLICT(name) DO NOTHING",
            params![name, new, Ts(*at)],
        )?,
    };
    Ok(n == 1)
}
