//! Signed manifests, one per route, day and device: the read a handset's
//! morning pull makes and the write that keeps only the newest revision.

use super::*;

/// The stored manifest of one route, day and device.
pub(super) fn stored(
    tx: &Connection,
    route_id: &str,
    date: NaiveDate,
    device_id: &str,
) -> Result<Option<StoredManifest>> {
    Ok(tx
        .query_row(
            "SELECT route_id, manifest_id, revision, envelope FROM manifests
             WHERE route_id=?1 AND delivery_date=?2 AND device_id=?3",
            params![route_id, Day(date), device_id],
            |row| stored_manifest(row, date, device_id),
        )
        .optional()?)
}

/// The device of a token with its manifest for `date`, in one statement.
pub(super) fn device_with(
    tx: &Connection,
    pull: Pull<'_>,
) -> Result<Option<(Device, CurrentBuild)>> {
    let ((held_id, held_rev), date) = (pull.held_params(), pull.date);
    Ok(tx
        .prepare_cached(DEVICE_WITH_MANIFEST)?
        .query_row(
            params![held_id, held_rev, Day(date), pull.token_hash],
            |r| device_with_manifest_row(r, date),
        )
        .optional()?)
}

/// Store `m` unless a revision as new or newer is stored; returns the one
/// that stays.
pub(super) fn store(tx: &Connection, m: StoredManifest) -> Result<StoredManifest> {
    let existing = stored(tx, &m.route_id, m.delivery_date, &m.device_id)?;
    if let Some(newer) = existing.filter(|e| e.revision >= m.revision) {
        return Ok(newer);
    }
    let date = Day(m.delivery_date);
    tx.execute(
        "INSERT INTO manifests(route_id, delivery_date, device_id, manifest_id, revision, envelope) VALUES(?1,?2,?3,?4,?5,?6)
         ON CONFLICT(route_id, delivery_date, device_id) DO UPDATE SET manifest_id=?4, revision=?5, envelope=?6",
        params![m.route_id, date, m.device_id, m.manifest_id, m.revision, m.envelope_json],
    )?;
    let mut st = tx.prepare_cached(
        "INSERT OR IGNORE INTO manifest_items(device_id, manifest_id, revision, parcel_id, delivery_date, attempt)
         VALUES(?1,?2,?3,?4,?5,?6)",
    )?;
    for (pid, attempt) in &m.items {
        st.execute(params![
            m.device_id,
            m.manifest_id,
            m.revision,
            pid,
            date,
            attempt
        ])?;
    }
    drop(st);
    Ok(m)
}
