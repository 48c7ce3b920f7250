//! Reads: rows turned into the storage types.

use super::*;

pub(super) const CONTACT_COLS: &str = "parcel_id, recipient_name, email, phone, requires_code, status, delivery_date, attempt, track_nonce";

pub(super) fn contact(conn: &Connection, where_: &str, key: &str) -> Result<Option<ParcelContact>> {
    let sql = format!("SELECT {CONTACT_COLS} FROM parcels WHERE {where_} = ?1");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([key], |r| {
            Ok(ParcelContact {
                parcel_id: r.get(0)?,
                recipient_name: r.get(1)?,
                email: r.get(2)?,
                phone: r.get(3)?,
                requires_code: r.get(4)?,
                status: r.get(5)?,
                delivery_date: day_opt(r.get(6)?),
                attempt: r.get(7)?,
                track_nonce: r.get(8)?,
            })
        })
        .optional()?)
}

pub(super) fn load_route(
    conn: &Connection,
    route_id: &str,
    date: NaiveDate,
) -> Result<Option<RouteData>> {
    let head = conn
        .query_row(
            "SELECT courier_id, revision FROM routes WHERE route_id=?1 AND delivery_date=?2",
            params![route_id, Day(date)],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, u64>(1)?)),
        )
        .optional()?;
    let Some((courier_id, revision)) = head else {
        return Ok(None);
    };
    // All of the route's parcels in one query, grouped by stop here: a query
    // per stop scanned the whole route each time (stops x parcels rows).
    let mut by_stop: HashMap<String, Vec<RouteParcelData>> = HashMap::new();
    let mut pst = conn.prepare_cached(
        "SELECT s.stop_id, p.parcel_id, p.requires_code, p.attempt, p.status FROM stop_parcels s
         JOIN parcels p ON p.parcel_id = s.parcel_id
         WHERE s.route_id=?1 AND s.delivery_date=?2 AND p.delivery_date = s.delivery_date
         ORDER BY s.stop_id, s.position",
    )?;
    let rows = pst.query_map(params![route_id, Day(date)], |r| {
        let p = RouteParcelData {
            parcel_id: r.get(1)?,
            requires_code: r.get(2)?,
            attempt: r.get(3)?,
            held: r.get::<_, ParcelState>(4)? == ParcelState::Held,
        };
        Ok((r.get::<_, String>(0)?, p))
    })?;
    for row in rows {
        let (stop_id, p) = row?;
        by_stop.entry(stop_id).or_default().push(p);
    }
    let mut st = conn.prepare_cached(
        "SELECT stop_id, sequence, address, recipient FROM stops
         WHERE route_id=?1 AND delivery_date=?2 ORDER BY sequence",
    )?;
    let stops = st
        .query_map(params![route_id, Day(date)], |r| {
            let stop_id: String = r.get(0)?;
            Ok(RouteStopData {
                parcels: by_stop.remove(&stop_id).unwrap_or_default(),
                stop_id,
                sequence: r.get(1)?,
                address: r.get(2)?,
                recipient: r.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(Some(RouteData {
        route_id: route_id.to_string(),
        courier_id,
        delivery_date: date,
        revision,
        stops,
    }))
}

/// The route a courier drives on `date`, if dispatch planned one.
pub(super) fn route_of_courier(
    conn: &Connection,
    courier_id: &str,
    date: NaiveDate,
) -> Result<Option<RouteData>> {
    let rid: Option<String> = conn
        .query_row(
            "SELECT route_id FROM routes WHERE courier_id=?1 AND delivery_date=?2",
            params![courier_id, Day(date)],
            |r| r.get(0),
        )
        .optional()?;
    match rid {
        Some(rid) => load_route(conn, &rid, date),
        None => Ok(None),
    }
}

pub(super) const DEVICE_COLS: &str = "device_id, courier_id, name, public_key, revoked_at, COALESCE(last_seen_at, enrolled_at), enrolled_at";

pub(super) fn device_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Device> {
    Ok(Device {
        device_id: r.get(0)?,
        courier_id: r.get(1)?,
        name: r.get(2)?,
        public_key: r.get(3)?,
        revoked_at: r.get::<_, Option<Ts>>(4)?.map(|t| t.0),
        last_seen_at: r.get::<_, Ts>(5)?.0,
        enrolled_at: r.get::<_, Ts>(6)?.0,
    })
}

/// A [`crate::storage::sql::DEVICE_WITH_MANIFEST`] row.
pub(super) fn device_with_manifest_row(
    r: &rusqlite::Row<'_>,
    date: NaiveDate,
) -> rusqlite::Result<(Device, CurrentBuild)> {
    let device = device_row(r)?;
    let current = CurrentBuild::of_row(r.get(7)?, r.get(10)?, |route_id, envelope_json| {
        Ok::<_, rusqlite::Error>(StoredManifest {
            route_id,
            delivery_date: date,
            device_id: device.device_id.clone(),
            manifest_id: r.get(8)?,
            revision: r.get(9)?,
            envelope_json,
            items: Vec::new(),
        })
    })?;
    Ok((device, current))
}

pub(super) fn stored_manifest(
    r: &rusqlite::Row<'_>,
    date: NaiveDate,
    device_id: &str,
) -> rusqlite::Result<StoredManifest> {
    Ok(StoredManifest {
        route_id: r.get(0)?,
        delivery_date: date,
        device_id: device_id.to_string(),
        manifest_id: r.get(1)?,
        revision: r.get(2)?,
        envelope_json: r.get(3)?,
        items: Vec::new(),
    })
}
