//! SQL text both dialects run as written (no placeholders): each backend
//! appends its own `WHERE`.

/// [`crate::domain::ParcelFacts`]'s columns, in its field order: the parcel
/// (`p`) with its route on its delivery date.
pub(crate) const PARCEL_FACTS: &str =
    "SELECT p.parcel_id, p.status, p.requires_code, p.delivery_date,
   p.attempt, p.wrong_tries, p.locked, s.route_id, r.courier_id";

/// What an upsert compares against (`domain::parcels::ParcelDetails`); the
/// dialect adds its `WHERE parcel_id IN …`.
pub(crate) const PARCEL_DETAILS: &str = "SELECT parcel_id, recipient_name, email, phone, address, value, currency, requires_code FROM parcels";

/// A route's stops now with their parcels, in order (`domain::route::StoredStop`);
/// parameters: route id, day.
pub(crate) const ROUTE_STOPS: &str = "SELECT st.stop_id, st.address, st.recipient, sp.parcel_id
 FROM stops st LEFT JOIN stop_parcels sp
   ON sp.route_id = st.route_id AND sp.delivery_date = st.delivery_date AND sp.stop_id = st.stop_id
 WHERE st.route_id = $1 AND st.delivery_date = $2
 ORDER BY st.sequence, sp.position";

/// Folds `ROUTE_STOPS` rows (stop id, address, recipient, parcel id) into stops.
pub(crate) fn push_stop_row(
    stops: &mut Vec<crate::domain::route::StoredStop>,
    (stop_id, address, recipient, parcel): (String, String, String, Option<String>),
) {
    match stops.last_mut() {
        Some(last) if last.stop_id == stop_id => last.parcel_ids.extend(parcel),
        _ => stops.push(crate::domain::route::StoredStop {
            stop_id,
            address,
            recipient,
            parcel_ids: parcel.into_iter().collect(),
        }),
    }
}

/// The device with a token hash (`$4`) and its current manifest on day `$3`
/// in one statement (SQLite numbers `$n` in order of appearance, so the
/// numbers follow the text): the device's columns (as each backend's
/// `DEVICE_COLS`), then the manifest's (route id, manifest id, revision,
/// envelope), NULL when there is no build at the route's current revision.
/// The envelope is NULL too when the build is the one the client holds
/// (manifest id `$1`, revision `$2`): a 304 does not read the 97 KB body.
/// `routes_courier_day` is unique, so there is at most one row.
pub(crate) const DEVICE_WITH_MANIFEST: &str =
    "SELECT d.device_id, d.courier_id, d.name, d.public_key, d.revoked_at,
   COALESCE(d.last_seen_at, d.enrolled_at), d.enrolled_at,
   m.route_id, m.manifest_id, m.revision,
   CASE WHEN m.manifest_id = $1 AND m.revision = $2 THEN NULL ELSE m.envelope END
 FROM devices d
 LEFT JOIN routes r ON r.courier_id = d.courier_id AND r.delivery_date = $3
 LEFT JOIN manifests m ON m.route_id = r.route_id AND m.delivery_date = r.delivery_date
   AND m.device_id = d.device_id AND m.revision >= r.revision
 WHERE d.token_hash = $4";

pub(crate) const PARCEL_FACTS_FROM: &str = "FROM parcels p
 LEFT JOIN stop_parcels s ON s.parcel_id = p.parcel_id AND s.delivery_date = p.delivery_date
 LEFT JOIN routes r ON r.route_id = s.route_id AND r.delivery_date = s.delivery_date";
