//! Loading the facts a decision needs, inside the operation's transaction.

use super::*;

pub(super) fn parcel_facts(r: &rusqlite::Row<'_>) -> rusqlite::Result<ParcelFacts> {
    Ok(ParcelFacts {
        parcel_id: r.get(0)?,
        state: r.get(1)?,
        requires_code: r.get(2)?,
        delivery_date: day_opt(r.get(3)?),
        attempt: r.get(4)?,
        wrong_tries: r.get(5)?,
        locked: r.get(6)?,
        route_id: r.get(7)?,
        route_courier: r.get(8)?,
    })
}

pub(super) fn one_parcel(tx: &Connection, parcel_id: &str) -> Result<Option<ParcelFacts>> {
    let sql = format!("{PARCEL_FACTS} {PARCEL_FACTS_FROM} WHERE p.parcel_id = ?1");
    Ok(tx
        .prepare_cached(&sql)?
        .query_row([parcel_id], parcel_facts)
        .optional()?)
}

pub(super) fn parcels_in(tx: &Connection, ids: &[String]) -> Result<HashMap<String, ParcelFacts>> {
    let sql = format!(
        "{PARCEL_FACTS} {PARCEL_FACTS_FROM} WHERE p.parcel_id IN (SELECT value FROM json_each(?1))"
    );
    let mut st = tx.prepare_cached(&sql)?;
    let rows = st.query_map([json_list(ids)?], parcel_facts)?;
    let mut out = HashMap::new();
    for p in rows {
        let p = p?;
        out.insert(p.parcel_id.clone(), p);
    }
    Ok(out)
}

pub(super) fn parcel_details_in(
    tx: &Connection,
    ids: &[String],
) -> Result<HashMap<String, ParcelDetails>> {
    let sql = format!("{PARCEL_DETAILS} WHERE parcel_id IN (SELECT value FROM json_each(?1))");
    let mut st = tx.prepare_cached(&sql)?;
    let rows = st.query_map([json_list(ids)?], |r| {
        Ok((
            r.get::<_, String>(0)?,
            ParcelDetails {
                recipient_name: r.get(1)?,
                email: r.get(2)?,
                phone: r.get(3)?,
                address: r.get(4)?,
                value: r.get(5)?,
                currency: r.get(6)?,
                requires_code: r.get(7)?,
            },
        ))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub(super) fn ingest_facts(tx: &Connection, device_id: &str, k: &Keys) -> Result<IngestFacts> {
    let mut f = IngestFacts {
        device: tx
            .prepare_cached(
                "SELECT courier_id, last_seq, revoked_at IS NOT NULL FROM devices WHERE device_id=?1",
            )?
            .query_row([device_id], |r| {
                Ok(DeviceFacts {
                    device_id: device_id.to_string(),
                    courier_id: r.get(0)?,
                    last_seq: r.get(1)?,
                    revoked: r.get(2)?,
                })
            })
            .optional()?,
        parcels: parcels_in(tx, &k.parcel_ids)?,
        ..IngestFacts::default()
    };
    let ids = json_list(&k.confirmation_ids)?;
    let mut st = tx.prepare_cached(
        "SELECT confirmation_id, device_id FROM confirmations
         WHERE confirmation_id IN (SELECT value FROM json_each(?1))",
    )?;
    for row in st.query_map([&ids], |r| Ok((r.get(0)?, r.get(1)?)))? {
        let (id, dev) = row?;
        f.seen.insert(id, dev);
    }
    let mut st = tx.prepare_cached(
        "SELECT manifest_id, revision, parcel_id, delivery_date, attempt FROM manifest_items
         WHERE device_id=?1 AND parcel_id IN (SELECT value FROM json_each(?2))",
    )?;
    let rows = st.query_map(params![device_id, json_list(&k.parcel_ids)?], |r| {
        Ok(ManifestItem {
            manifest_id: r.get(0)?,
            revision: r.get(1)?,
            parcel_id: r.get(2)?,
            delivery_date: r.get::<_, Day>(3)?.0,
            attempt: r.get(4)?,
        })
    })?;
    for item in rows {
        f.manifest_items.insert(item?);
    }
    let mut st = tx.prepare_cached(
        "SELECT seq FROM confirmations WHERE device_id=?1 AND seq IN (SELECT value FROM json_each(?2))",
    )?;
    for seq in st.query_map(params![device_id, json_list(&k.seqs)?], |r| r.get(0))? {
        f.used_seqs.insert(seq?);
    }
    let mut st = tx.prepare_cached(
        "SELECT confirmation_id FROM signals
         WHERE kind=?1 AND confirmation_id IN (SELECT value FROM json_each(?2))",
    )?;
    for id in st.query_map(params![SignalKind::StaleManifest, ids], |r| r.get(0))? {
        f.stale_signalled.insert(id?);
    }
    Ok(f)
}

pub(super) fn route_facts(tx: &Connection, route: &RouteInput) -> Result<RouteFacts> {
    let date = Day(route.delivery_date);
    let other = tx
        .query_row(
            "SELECT route_id FROM routes WHERE courier_id=?1 AND delivery_date=?2 AND route_id<>?3",
            params![route.courier_id, date, route.route_id],
            |r| r.get(0),
        )
        .optional()?;
    let (revision, courier) = tx
        .query_row(
            "SELECT revision, courier_id FROM routes WHERE route_id=?1 AND delivery_date=?2",
            params![route.route_id, date],
            |r| Ok((Some(r.get(0)?), Some(r.get(1)?))),
        )
        .optional()?
        .unwrap_or((None, None));
    let mut stops = Vec::new();
    // SQLite numbers `$1`, `$2` by first appearance: they bind positionally.
    let mut st = tx.prepare_cached(ROUTE_STOPS)?;
    let rows = st.query_map(params![route.route_id, date], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
    })?;
    for row in rows {
        push_stop_row(&mut stops, row?);
    }
    let ids: Vec<String> = route
        .stops
        .iter()
        .flat_map(|s| s.parcel_ids.clone())
        .collect();
    let mut parcels = HashMap::new();
    // Each parcel, and the other route it may be on for this date.
    let sql = format!(
        "{PARCEL_FACTS}, p.recipient_name, e.route_id {PARCEL_FACTS_FROM}
         LEFT JOIN stop_parcels e ON e.parcel_id = p.parcel_id AND e.delivery_date = ?2 AND e.route_id <> ?3
         WHERE p.parcel_id IN (SELECT value FROM json_each(?1))"
    );
    let mut st = tx.prepare(&sql)?;
    let rows = st.query_map(params![json_list(&ids)?, date, route.route_id], |r| {
        Ok(RouteParcel {
            facts: parcel_facts(r)?,
            recipient_name: r.get(9)?,
            elsewhere: r.get(10)?,
        })
    })?;
    for p in rows {
        let p = p?;
        parcels.insert(p.facts.parcel_id.clone(), p);
    }
    let mut st = tx.prepare(
        "SELECT s.parcel_id, p.status FROM stop_parcels s JOIN parcels p ON p.parcel_id = s.parcel_id
         WHERE s.route_id=?1 AND s.delivery_date=?2",
    )?;
    let before = st
        .query_map(params![route.route_id, date], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(RouteFacts {
        other_route: other,
        revision,
        courier,
        stops,
        parcels,
        before,
    })
}

pub(super) fn close_facts(tx: &Connection, date: NaiveDate, next: NaiveDate) -> Result<CloseFacts> {
    let (d, n) = (Day(date), Day(next));
    let mut st = tx.prepare(
        "SELECT p.parcel_id, p.status, p.attempt, p.requires_code, s.route_id, r.courier_id, s.stop_id,
           st.address, st.recipient
         FROM parcels p
         JOIN stop_parcels s ON s.parcel_id=p.parcel_id AND s.delivery_date=p.delivery_date
         JOIN routes r ON r.route_id=s.route_id AND r.delivery_date=s.delivery_date
         JOIN stops st ON st.route_id=s.route_id AND st.delivery_date=s.delivery_date AND st.stop_id=s.stop_id
         WHERE p.delivery_date=?1
         ORDER BY s.route_id, st.sequence, s.position",
    )?;
    let placed = st
        .query_map([&d], |r| {
            Ok(Placed {
                parcel_id: r.get(0)?,
                state: r.get(1)?,
                attempt: r.get(2)?,
                requires_code: r.get(3)?,
                route_id: r.get(4)?,
                courier_id: r.get(5)?,
                stop_id: r.get(6)?,
                address: r.get(7)?,
                recipient: r.get(8)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    // The next day's routes of the closed day's couriers and route ids.
    let next_routes_sql = "SELECT route_id, courier_id FROM routes WHERE delivery_date=?2 AND (
           courier_id IN (SELECT courier_id FROM routes WHERE delivery_date=?1)
           OR route_id IN (SELECT route_id FROM routes WHERE delivery_date=?1))";
    let mut st = tx.prepare(next_routes_sql)?;
    let next_routes = st
        .query_map(params![d, n], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut st = tx.prepare(&format!(
        "SELECT st.route_id, st.stop_id, st.sequence, st.address,
           (SELECT COUNT(*) FROM stop_parcels sp
            WHERE sp.route_id=st.route_id AND sp.delivery_date=st.delivery_date AND sp.stop_id=st.stop_id)
         FROM stops st WHERE st.delivery_date=?2 AND st.route_id IN (SELECT route_id FROM ({next_routes_sql}))"
    ))?;
    let next_stops = st
        .query_map(params![d, n], |r| {
            Ok(NextStop {
                route_id: r.get(0)?,
                stop_id: r.get(1)?,
                sequence: r.get(2)?,
                address: r.get(3)?,
                parcels: r.get(4)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(CloseFacts {
        placed,
        next_routes,
        next_stops,
    })
}

/// The parcel and whether a build for the device carries its current
/// attempt, in one statement.
pub(super) fn verify_facts_in(
    tx: &Connection,
    device: &Device,
    parcel_id: &str,
) -> Result<VerifyFacts> {
    let sql = format!(
        "{PARCEL_FACTS}, EXISTS(SELECT 1 FROM manifest_items m WHERE m.device_id=?1 AND m.parcel_id=p.parcel_id
           AND m.delivery_date=p.delivery_date AND m.attempt=p.attempt)
         {PARCEL_FACTS_FROM} WHERE p.parcel_id=?2"
    );
    let row = tx
        .prepare_cached(&sql)?
        .query_row(params![device.device_id, parcel_id], |r| {
            Ok((parcel_facts(r)?, r.get::<_, bool>(9)?))
        })
        .optional()?;
    Ok(VerifyFacts {
        on_manifest: row.as_ref().is_some_and(|(_, on)| *on),
        parcel: row.map(|(p, _)| p),
        device_courier: device.courier_id.clone(),
    })
}
