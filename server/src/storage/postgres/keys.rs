//! Key fingerprints and the conversion of clear track tokens (migration 0005).

use super::*;

pub(super) async fn clear_track_tokens(
    s: &PostgresStorage,
    limit: u32,
) -> Result<Vec<(String, String)>> {
    fin(async {
        let rows = s
            .read(
                "SELECT parcel_id, track_token FROM parcels WHERE track_nonce IS NULL
                 ORDER BY parcel_id LIMIT $1",
                &[&i64::from(limit)],
            )
            .await?;
        rows.iter().map(|r| Ok((get(r, 0)?, get(r, 1)?))).collect()
    }
    .await)
}

pub(super) async fn convert_track_tokens(
    s: &PostgresStorage,
    rows: Vec<TrackConversion>,
) -> Result<u64> {
    transact!(s, RC, |tx| async {
        let mut n = 0;
        for c in &rows {
            n += exec(
                &tx,
                "UPDATE parcels SET track_token=$3, track_nonce=$4, track_legacy=$5
                 WHERE parcel_id=$1 AND track_nonce IS NULL AND track_token=$2",
                &[
                    &c.parcel_id,
                    &c.clear,
                    &c.track.hash,
                    &c.track.nonce,
                    &c.legacy_hash,
                ],
            )
            .await?;
        }
        Ok(n)
    }
    .await)
}

pub(super) async fn key_fingerprints(s: &PostgresStorage) -> Result<Vec<(String, String)>> {
    fin(async {
        let rows = s
            .read(
                "SELECT name, fingerprint FROM key_fingerprints ORDER BY name",
                &[],
            )
            .await?;
        rows.iter().map(|r| Ok((get(r, 0)?, get(r, 1)?))).collect()
    }
    .await)
}

pub(super) async fn record_key_fingerprints(
    s: &PostgresStorage,
    fps: Vec<(String, String)>,
    now: DateTime<Utc>,
) -> Result<Vec<(String, String)>> {
    transact!(s, RC, |tx| async {
        for (name, fp) in &fps {
            exec(
                &tx,
                "INSERT INTO key_fingerprints(name, fingerprint, recorded_at) VALUES($1,$2,$3)
                 ON CONFLICT(name) DO NOTHING",
                &[name, fp, &now],
            )
            .await?;
        }
        let rows = query(
            &tx,
            "SELECT name, fingerprint FROM key_fingerprints ORDER BY name",
            &[],
        )
        .await?;
        rows.iter().map(|r| Ok((get(r, 0)?, get(r, 1)?))).collect()
    }
    .await)
}

pub(super) async fn replace_key_fingerprint(
    s: &PostgresStorage,
    swap: FingerprintSwap,
) -> Result<bool> {
    let FingerprintSwap {
        name,
        expected,
        new,
        at: now,
    } = &swap;
    transact!(s, RC, |tx| async {
        let n =
            match expected {
                Some(old) => {
                    exec(
                        &tx,
                        "UPDATE key_fingerprints SET fingerprint=$3, recorded_at=$4
                     WHERE name=$1 AND fingerprint=$2",
                        &[&name, &old, &new, &now],
                    )
                    .await?
                }
                None => exec(
                    &tx,
                    "INSERT INTO key_fingerprints(name, fingerprint, recorded_at) VALUES($1,$2,$3)
                     ON CONFLICT(name) DO NOTHING",
                    &[&name, &new, &now],
                )
                .await?,
            };
        Ok(n == 1)
    }
    .await)
}
