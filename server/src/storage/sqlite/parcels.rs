//! What dispatch and the tracking page read about parcels: a parcel with
//! its events, the parcels of a day, the day's signals. Plain queries, so
//! they live apart from the operations that decide.

use super::*;

/// The parcel as dispatch sees it, with its events in order.
pub(super) fn view(tx: &Connection, id: &str) -> Result<Option<ParcelView>> {
    let Some(mut v) = tx
        .query_row(
            "SELECT parcel_id, recipient_name, address, requires_code, status, delivery_date, attempt,
               route_id, wrong_tries, locked FROM parcels WHERE parcel_id=?1",
            [id],
            |r| {
                Ok(ParcelView {
                    parcel_id: r.get(0)?,
                    recipient_name: r.get(1)?,
                    address: r.get(2)?,
                    requires_code: r.get(3)?,
                    status: r.get(4)?,
                    delivery_date: day_opt(r.get(5)?),
                    attempt: r.get(6)?,
                    route_id: r.get(7)?,
                    wrong_tries: r.get(8)?,
                    locked: r.get(9)?,
                    events: Vec::new(),
                })
            },
        )
        .optional()?
    else {
        return Ok(None);
    };
    let mut st = tx.prepare_cached(
        "SELECT at, kind, detail FROM parcel_events WHERE parcel_id=?1 ORDER BY id",
    )?;
    v.events = st
        .query_map([id], |r| {
            Ok(ParcelEvent {
                at: r.get::<_, Ts>(0)?.0,
                kind: r.get(1)?,
                detail: r.get(2)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(Some(v))
}

pub(super) fn ids_on(tx: &Connection, date: NaiveDate) -> Result<Vec<String>> {
    let mut st = tx.prepare_cached(
        "SELECT parcel_id FROM parcels WHERE delivery_date=?1 ORDER BY parcel_id",
    )?;
    let ids = st
        .query_map([Day(date)], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(ids)
}

/// The signals of `day` after id `after`, oldest first, at most `limit`.
pub(super) fn signals_on(
    tx: &Connection,
    day: NaiveDate,
    after: i64,
    limit: u32,
) -> Result<Vec<Signal>> {
    let mut st = tx.prepare_cached(
        "SELECT id, kind, parcel_id, device_id, confirmation_id, day, detail, code_matched, at FROM signals
         WHERE day=?1 AND id>?2 ORDER BY id LIMIT ?3",
    )?;
    let rows = st
        .query_map(params![Day(day), after, limit], |r| {
            Ok(Signal {
                id: r.get(0)?,
                kind: r.get(1)?,
                parcel_id: r.get(2)?,
                device_id: r.get(3)?,
                confirmation_id: r.get(4)?,
                day: r.get::<_, Day>(5)?.0,
                detail: r.get(6)?,
                code_matched: r.get(7)?,
                at: r.get::<_, Ts>(8)?.0,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}
