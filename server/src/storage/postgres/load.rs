//! Loading the facts a decision needs, inside the operation's transaction
//! (rows locked where the operation writes them).

use super::*;

pub(super) fn parcel_of(r: &Row) -> TxResult<ParcelFacts> {
    Ok(ParcelFacts {
        parcel_id: get(r, 0)?,
        state: get(r, 1)?,
        requires_code: get(r, 2)?,
        delivery_date: get(r, 3)?,
        attempt: u32_of(get(r, 4)?)?,
        wrong_tries: u32_of(get(r, 5)?)?,
        locked: get(r, 6)?,
        route_id: get(r, 7)?,
        route_courier: get(r, 8)?,
    })
}

/// One parcel's facts, its row locked until the transaction ends.
pub(super) async fn locked_parcel(tx: &Tx<'_>, parcel_id: &str) -> TxResult<Option<ParcelFacts>> {
    let sql = format!("{PARCEL_FACTS} {PARCEL_FACTS_FROM} WHERE p.parcel_id = $1 FOR UPDATE OF p");
    query_opt(tx, &sql, &[&parcel_id])
        .await?
        .as_ref()
        .map(parcel_of)
        .transpose()
}

/// Parcels by id, rows locked in id order (so two uploads never deadlock).
pub(super) async fn locked_parcels(
    tx: &Tx<'_>,
    ids: &[String],
) -> TxResult<HashMap<String, ParcelFacts>> {
    let sql = format!(
        "{PARCEL_FACTS} {PARCEL_FACTS_FROM} WHERE p.parcel_id = ANY($1) ORDER BY p.parcel_id FOR UPDATE OF p"
    );
    let mut out = HashMap::new();
    for r in query(tx, &sql, &[&ids]).await? {
        let p = parcel_of(&r)?;
        out.insert(p.parcel_id.clone(), p);
    }
    Ok(out)
}

pub(super) async fn parcel_details_in(
    tx: &Tx<'_>,
    ids: &[String],
) -> TxResult<HashMap<String, ParcelDetails>> {
    let sql = format!("{PARCEL_DETAILS} WHERE parcel_id = ANY($1)");
    let mut out = HashMap::new();
    for r in query(tx, &sql, &[&ids]).await? {
        let d = ParcelDetails {
            recipient_name: get(&r, 1)?,
            email: get(&r, 2)?,
            phone: get(&r, 3)?,
            address: get(&r, 4)?,
            value: get(&r, 5)?,
            currency: get(&r, 6)?,
            requires_code: get(&r, 7)?,
        };
        out.insert(get(&r, 0)?, d);
    }
    Ok(out)
}

pub(super) async fn ingest_facts(tx: &Tx<'_>, device_id: &str, k: &Keys) -> TxResult<IngestFacts> {
    // The device first: one device's uploads queue behind each other.
    let device = match query_opt(
        tx,
        "SELECT courier_id, last_seq, revoked_at IS NOT NULL FROM devices WHERE device_id=$1 FOR UPDATE",
        &[&device_id],
    )
    .await?
    {
        Some(r) => Some(DeviceFacts {
            device_id: device_id.to_string(),
            courier_id: get(&r, 0)?,
            last_seq: u64_of(get(&r, 1)?)?,
            revoked: get(&r, 2)?,
        }),
        None => None,
    };
    let mut f = IngestFacts {
        device,
        parcels: locked_parcels(tx, &k.parcel_ids).await?,
        ..IngestFacts::default()
    };
    let ids = &k.confirmation_ids;
    let seen =
        "SELECT confirmation_id, device_id FROM confirmations WHERE confirmation_id = ANY($1)";
    for r in query(tx, seen, &[ids]).await? {
        f.seen.insert(get(&r, 0)?, get(&r, 1)?);
    }
    let items =
        "SELECT manifest_id, revision, parcel_id, delivery_date, attempt FROM manifest_items
                 WHERE device_id=$1 AND parcel_id = ANY($2)";
    for r in query(tx, items, &[&device_id, &k.parcel_ids]).await? {
        f.manifest_items.insert(ManifestItem {
            manifest_id: get(&r, 0)?,
            revision: u64_of(get(&r, 1)?)?,
            parcel_id: get(&r, 2)?,
            delivery_date: get(&r, 3)?,
            attempt: u32_of(get(&r, 4)?)?,
        });
    }
    let seqs = k
        .seqs
        .iter()
        .map(|s| i64_of(*s))
        .collect::<TxResult<Vec<_>>>()?;
    let used = "SELECT seq FROM confirmations WHERE device_id=$1 AND seq = ANY($2)";
    for r in query(tx, used, &[&device_id, &seqs]).await? {
        f.used_seqs.insert(u64_of(get(&r, 0)?)?);
    }
    let stale = "SELECT confirmation_id FROM signals WHERE kind=$1 AND confirmation_id = ANY($2)";
    for r in query(tx, stale, &[&SignalKind::StaleManifest, ids]).await? {
        f.stale_signalled.insert(get(&r, 0)?);
    }
    Ok(f)
}

pub(super) async fn route_facts(tx: &Tx<'_>, route: &RouteInput) -> TxResult<RouteFacts> {
    let date = route.delivery_date;
    let mut f = RouteFacts::default();
    if let Some(r) = query_opt(
        tx,
        "SELECT route_id FROM routes WHERE courier_id=$1 AND delivery_date=$2 AND route_id<>$3",
        &[&route.courier_id, &date, &route.route_id],
    )
    .await?
    {
        f.other_route = Some(get(&r, 0)?);
    }
    if let Some(r) = query_opt(
        tx,
        "SELECT revision, courier_id FROM routes WHERE route_id=$1 AND delivery_date=$2",
        &[&route.route_id, &date],
    )
    .await?
    {
        f.revision = Some(u64_of(get(&r, 0)?)?);
        f.courier = Some(get(&r, 1)?);
    }
    for r in query(tx, ROUTE_STOPS, &[&route.route_id, &date]).await? {
        push_stop_row(
            &mut f.stops,
            (get(&r, 0)?, get(&r, 1)?, get(&r, 2)?, get(&r, 3)?),
        );
    }
    let ids: Vec<&str> = route
        .stops
        .iter()
        .flat_map(|s| s.parcel_ids.iter().map(String::as_str))
        .collect();
    // Each parcel, and the other route it may be on for this date.
    let sql = format!(
        "{PARCEL_FACTS}, p.recipient_name, e.route_id {PARCEL_FACTS_FROM}
         LEFT JOIN stop_parcels e ON e.parcel_id = p.parcel_id AND e.delivery_date = $2 AND e.route_id <> $3
         WHERE p.parcel_id = ANY($1)"
    );
    for r in query(tx, &sql, &[&ids, &date, &route.route_id]).await? {
        let p = RouteParcel {
            facts: parcel_of(&r)?,
            recipient_name: get(&r, 9)?,
            elsewhere: get(&r, 10)?,
        };
        f.parcels.insert(p.facts.parcel_id.clone(), p);
    }
    let before = "SELECT s.parcel_id, p.status FROM stop_parcels s JOIN parcels p ON p.parcel_id = s.parcel_id
                  WHERE s.route_id=$1 AND s.delivery_date=$2";
    for r in query(tx, before, &[&route.route_id, &date]).await? {
        f.before.push((get(&r, 0)?, get(&r, 1)?));
    }
    Ok(f)
}

pub(super) async fn close_facts(
    tx: &Tx<'_>,
    date: NaiveDate,
    next: NaiveDate,
) -> TxResult<CloseFacts> {
    let mut f = CloseFacts::default();
    let placed = "SELECT p.parcel_id, p.status, p.attempt, p.requires_code, s.route_id, r.courier_id, s.stop_id,
           st.address, st.recipient
         FROM parcels p
         JOIN stop_parcels s ON s.parcel_id=p.parcel_id AND s.delivery_date=p.delivery_date
         JOIN routes r ON r.route_id=s.route_id AND r.delivery_date=s.delivery_date
         JOIN stops st ON st.route_id=s.route_id AND st.delivery_date=s.delivery_date AND st.stop_id=s.stop_id
         WHERE p.delivery_date=$1
         ORDER BY s.route_id, st.sequence, s.position";
    for r in query(tx, placed, &[&date]).await? {
        f.placed.push(Placed {
            parcel_id: get(&r, 0)?,
            state: get(&r, 1)?,
            attempt: u32_of(get(&r, 2)?)?,
            requires_code: get(&r, 3)?,
            route_id: get(&r, 4)?,
            courier_id: get(&r, 5)?,
            stop_id: get(&r, 6)?,
            address: get(&r, 7)?,
            recipient: get(&r, 8)?,
        });
    }
    // The next day's routes of the closed day's couriers and route ids.
    let next_routes = "SELECT route_id, courier_id FROM routes WHERE delivery_date=$2 AND (
           courier_id IN (SELECT courier_id FROM routes WHERE delivery_date=$1)
           OR route_id IN (SELECT route_id FROM routes WHERE delivery_date=$1))";
    for r in query(tx, next_routes, &[&date, &next]).await? {
        f.next_routes.push((get(&r, 0)?, get(&r, 1)?));
    }
    let stops = format!(
        "SELECT st.route_id, st.stop_id, st.sequence, st.address,
           (SELECT COUNT(*) FROM stop_parcels sp
            WHERE sp.route_id=st.route_id AND sp.delivery_date=st.delivery_date AND sp.stop_id=st.stop_id)
         FROM stops st WHERE st.delivery_date=$2 AND st.route_id IN (SELECT route_id FROM ({next_routes}) n)"
    );
    for r in query(tx, &stops, &[&date, &next]).await? {
        f.next_stops.push(NextStop {
            route_id: get(&r, 0)?,
            stop_id: get(&r, 1)?,
            sequence: u32_of(get(&r, 2)?)?,
            address: get(&r, 3)?,
            parcels: u32_of(get(&r, 4)?)?,
        });
    }
    Ok(f)
}
