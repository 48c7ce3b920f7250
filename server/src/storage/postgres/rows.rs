//! Reads: rows turned into the storage types, and statuses as TEXT columns.

use super::*;

/// Statuses are stored as their [`Label`] words in TEXT columns.
macro_rules! label_columns {
    ($($t:ty),*) => {$(
        impl ToSql for $t {
            fn to_sql(
                &self,
                ty: &Type,
                out: &mut BytesMut,
            ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
                self.as_str().to_sql(ty, out)
            }
            fn accepts(ty: &Type) -> bool {
                <&str as ToSql>::accepts(ty)
            }
            to_sql_checked!();
        }
        impl<'a> FromSql<'a> for $t {
            fn from_sql(
                ty: &Type,
                raw: &'a [u8],
            ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
                let s = <&str as FromSql>::from_sql(ty, raw)?;
                <$t as Label>::parse(s)
                    .ok_or_else(|| format!("unknown {} {s:?}", stringify!($t)).into())
            }
            fn accepts(ty: &Type) -> bool {
                <&str as FromSql>::accepts(ty)
            }
        }
    )*};
}

label_columns!(ParcelState, SignalKind, EventKind, NoticeState);

pub(super) const CONTACT_COLS: &str = "parcel_id, recipient_name, email, phone, requires_code, status, delivery_date, attempt, track_nonce";

pub(super) fn contact_of(r: &Row) -> TxResult<ParcelContact> {
    Ok(ParcelContact {
        parcel_id: get(r, 0)?,
        recipient_name: get(r, 1)?,
        email: get(r, 2)?,
        phone: get(r, 3)?,
        requires_code: get(r, 4)?,
        status: get(r, 5)?,
        delivery_date: get(r, 6)?,
        attempt: u32_of(get(r, 7)?)?,
        track_nonce: get(r, 8)?,
    })
}

pub(super) const DEVICE_COLS: &str =
    "device_id, courier_id, name, public_key, revoked_at, last_seen_at, enrolled_at";

pub(super) fn device_of(r: &Row) -> TxResult<Device> {
    Ok(Device {
        device_id: get(r, 0)?,
        courier_id: get(r, 1)?,
        name: get(r, 2)?,
        public_key: get(r, 3)?,
        revoked_at: get(r, 4)?,
        last_seen_at: get(r, 5)?,
        enrolled_at: get(r, 6)?,
    })
}

/// A [`crate::storage::sql::DEVICE_WITH_MANIFEST`] row.
pub(super) fn device_with_manifest_of(
    r: &Row,
    date: NaiveDate,
) -> TxResult<(Device, CurrentBuild)> {
    let device = device_of(r)?;
    let current = CurrentBuild::of_row(get(r, 7)?, get(r, 10)?, |route_id, envelope_json| {
        Ok::<_, TxError>(StoredManifest {
            route_id,
            delivery_date: date,
            device_id: device.device_id.clone(),
            manifest_id: get(r, 8)?,
            revision: u64_of(get(r, 9)?)?,
            envelope_json,
            items: Vec::new(),
        })
    })?;
    Ok((device, current))
}

pub(super) fn manifest_of(r: &Row, date: NaiveDate, device_id: &str) -> TxResult<StoredManifest> {
    Ok(StoredManifest {
        route_id: get(r, 0)?,
        delivery_date: date,
        device_id: device_id.to_string(),
        manifest_id: get(r, 1)?,
        revision: u64_of(get(r, 2)?)?,
        envelope_json: get(r, 3)?,
        items: Vec::new(),
    })
}

pub(super) async fn load_route(
    tx: &Tx<'_>,
    route_id: &str,
    date: NaiveDate,
) -> TxResult<Option<RouteData>> {
    let Some(head) = query_opt(
        tx,
        "SELECT courier_id, revision FROM routes WHERE route_id=$1 AND delivery_date=$2",
        &[&route_id, &date],
    )
    .await?
    else {
        return Ok(None);
    };
    // All of the route's parcels in one query, grouped by stop here.
    let mut by_stop: HashMap<String, Vec<RouteParcelData>> = HashMap::new();
    let parcel_rows = query(
        tx,
        "SELECT s.stop_id, p.parcel_id, p.requires_code, p.attempt, p.status FROM stop_parcels s
         JOIN parcels p ON p.parcel_id = s.parcel_id
         WHERE s.route_id=$1 AND s.delivery_date=$2 AND p.delivery_date = s.delivery_date
         ORDER BY s.stop_id, s.position",
        &[&route_id, &date],
    )
    .await?;
    for p in &parcel_rows {
        by_stop
            .entry(get(p, 0)?)
            .or_default()
            .push(RouteParcelData {
                parcel_id: get(p, 1)?,
                requires_code: get(p, 2)?,
                attempt: u32_of(get(p, 3)?)?,
                held: get::<ParcelState>(p, 4)? == ParcelState::Held,
            });
    }
    let mut stops = Vec::new();
    let stop_rows = query(
        tx,
        "SELECT stop_id, sequence, address, recipient FROM stops
         WHERE route_id=$1 AND delivery_date=$2 ORDER BY sequence",
        &[&route_id, &date],
    )
    .await?;
    for r in &stop_rows {
        let stop_id: String = get(r, 0)?;
        stops.push(RouteStopData {
            parcels: by_stop.remove(&stop_id).unwrap_or_default(),
            stop_id,
            sequence: u32_of(get(r, 1)?)?,
            address: get(r, 2)?,
            recipient: get(r, 3)?,
        });
    }
    Ok(Some(RouteData {
        route_id: route_id.to_string(),
        courier_id: get(&head, 0)?,
        delivery_date: date,
        revision: u64_of(get(&head, 1)?)?,
        stops,
    }))
}
