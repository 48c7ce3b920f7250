//! Enrollment codes and the handsets they enroll: plain statements, no
//! decision of [`crate::domain`] behind them, so they sit apart from the
//! operations the trait impl runs through `decide`.

use super::*;

pub(super) fn create_enrollment(tx: &Connection, e: &NewEnrollment) -> Result<()> {
    tx.execute(
        "INSERT INTO enrollments(code_hash, courier_id, expires_at, created_at) VALUES(?1,?2,?3,?4)",
        params![e.code_hash, e.courier_id, Ts(e.expires_at), Ts(e.created_at)],
    )?;
    Ok(())
}

/// Use the enrollment code once and store the device; `None` when the code
/// is unknown, used or expired.
pub(super) fn enroll(
    tx: &Connection,
    device: NewDevice,
    now: DateTime<Utc>,
) -> Result<Option<Device>> {
    let h = &device.enrollment;
    let courier: Option<String> = tx
        .query_row(
            "SELECT courier_id FROM enrollments WHERE code_hash=?1 AND used_at IS NULL AND expires_at > ?2",
            params![h, Ts(now)],
            |r| r.get(0),
        )
        .optional()?;
    let Some(courier_id) = courier else {
        return Ok(None);
    };
    tx.execute(
        "UPDATE enrollments SET used_at=?2 WHERE code_hash=?1",
        params![h, Ts(now)],
    )?;
    tx.execute(
        "INSERT INTO devices(device_id, courier_id, name, public_key, token_hash, enrolled_at, last_seen_at)
         VALUES(?1,?2,?3,?4,?5,?6,?6)",
        params![device.device_id, courier_id, device.name, device.public_key, device.token_hash, Ts(now)],
    )?;
    Ok(Some(Device {
        device_id: device.device_id,
        courier_id,
        name: device.name,
        public_key: device.public_key,
        revoked_at: None,
        last_seen_at: now,
        enrolled_at: now,
    }))
}

pub(super) fn by_token(tx: &Connection, token_hash: &str) -> Result<Option<Device>> {
    let sql = format!("SELECT {DEVICE_COLS} FROM devices WHERE token_hash=?1");
    Ok(tx
        .prepare_cached(&sql)?
        .query_row([token_hash], device_row)
        .optional()?)
}

pub(super) fn by_id(tx: &Connection, device_id: &str) -> Result<Option<Device>> {
    let sql = format!("SELECT {DEVICE_COLS} FROM devices WHERE device_id=?1");
    Ok(tx.query_row(&sql, [device_id], device_row).optional()?)
}

pub(super) fn of_courier(tx: &Connection, courier_id: &str) -> Result<Vec<Device>> {
    let sql = format!(
        "SELECT {DEVICE_COLS} FROM devices WHERE courier_id=?1 ORDER BY enrolled_at, device_id"
    );
    let mut st = tx.prepare(&sql)?;
    let v = st
        .query_map([courier_id], device_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(v)
}

pub(super) fn seen(tx: &Connection, device_id: &str, now: DateTime<Utc>) -> Result<()> {
    tx.execute(
        "UPDATE devices SET last_seen_at=?2 WHERE device_id=?1",
        params![device_id, Ts(now)],
    )?;
    Ok(())
}

/// Revoke once: a second revoke keeps the first time. `false`: no such device.
pub(super) fn revoke(tx: &Connection, device_id: &str, now: DateTime<Utc>) -> Result<bool> {
    let n = tx.execute(
        "UPDATE devices SET revoked_at=COALESCE(revoked_at, ?2) WHERE device_id=?1",
        params![device_id, Ts(now)],
    )?;
    Ok(n > 0)
}
