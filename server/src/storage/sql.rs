//! SQL text both dialects run as written (no placeholders): each backend
//! appends its own `WHERE`.

/// [`crate::domain::ParcelFacts`]'s columns, in its field order: the parcel
/// (`p`) with its route on its delivery date.
pub(crate) const PARCEL_FACTS: &str =
    "SELECT p.parcel_id, p.status, p.requires_code, p.delivery_date,
   p.attempt, p.wrong_tries, p.locked, s.route_id, r.courier_id";

pub(crate) const PARCEL_FACTS_FROM: &str = "FROM parcels p
 LEFT JOIN stop_parcels s ON s.parcel_id = p.parcel_id AND s.delivery_date = p.delivery_date
 LEFT JOIN routes r ON r.route_id = s.route_id AND r.delivery_date = s.delivery_date";
