//! Parcel upsert: create or update each item; whether a parcel needs a code
//! is fixed once it is on a route for a day (`requires_code_frozen`). An item
//! identical to what is stored is `Unchanged` and writes nothing, so a re-run
//! of the same import is a no-op (no event, no `updated_at`).

use super::*;
use std::collections::HashMap;

/// The answer for one parcel of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpsertStatus {
    Created,
    Updated,
    Unchanged,
    Rejected(RejectReason),
}

pub use super::records::ParcelDetails;

/// Decide a batch, in order. `existing` holds the items' parcels storage has,
/// `details` what is stored of them.
pub fn decide(
    existing: &HashMap<String, ParcelFacts>,
    details: &HashMap<String, ParcelDetails>,
    items: &[NewParcel],
) -> (Vec<UpsertStatus>, Changes) {
    let mut ch = Changes::default();
    let mut created: HashMap<&str, bool> = HashMap::new();
    let mut out = Vec::with_capacity(items.len());
    for p in items {
        let id = p.parcel_id.as_str();
        let routed = match existing.get(id) {
            Some(e) => Some((e.requires_code, e.delivery_date.is_some())),
            None => created.get(id).map(|rc| (*rc, false)),
        };
        let status = match routed {
            None => {
                ch.parcels.push(ParcelChange::Put(p.clone()));
                let detail = if p.details.requires_code {
                    "requires a code"
                } else {
                    "no code needed"
                };
                ch.event(id, EventKind::Created, detail);
                created.insert(id, p.details.requires_code);
                UpsertStatus::Created
            }
            Some((rc, true)) if rc != p.details.requires_code => {
                UpsertStatus::Rejected(RejectReason::RequiresCodeFrozen)
            }
            Some(_) if details.get(id) == Some(&p.details) => UpsertStatus::Unchanged,
            Some(_) => {
                ch.parcels.push(ParcelChange::Put(p.clone()));
                ch.event(id, EventKind::Updated, "parcel details updated");
                UpsertStatus::Updated
            }
        };
        out.push(status);
    }
    (out, ch)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::super::testing::*;
    use super::*;

    fn new(id: &str, requires_code: bool) -> NewParcel {
        NewParcel {
            parcel_id: id.into(),
            details: ParcelDetails {
                recipient_name: "J. Doe".into(),
                email: None,
                phone: None,
                address: "1 Street".into(),
                value: 10.0,
                currency: "EUR".into(),
                requires_code,
            },
            track: crate::domain::records::TrackRef {
                nonce: "n".into(),
                hash: "h".into(),
            },
        }
    }

    #[test]
    fn new_parcels_are_created_and_known_ones_updated() {
        let mut existing = HashMap::new();
        let pending = ParcelFacts {
            state: ParcelState::Pending,
            delivery_date: None,
            route_id: None,
            route_courier: None,
            ..parcel("P-1")
        };
        existing.insert("P-1".to_string(), pending);
        let (st, ch) = decide(
            &existing,
            &HashMap::new(),
            &[new("P-1", false), new("P-2", true)],
        );
        assert_eq!(st, [UpsertStatus::Updated, UpsertStatus::Created]);
        assert!(matches!(
            &ch.parcels[..],
            [ParcelChange::Put(_), ParcelChange::Put(_)]
        ));
        let kinds: Vec<EventKind> = ch.events.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [EventKind::Updated, EventKind::Created]);
    }

    #[test]
    fn requires_code_is_frozen_once_routed() {
        let mut existing = HashMap::new();
        existing.insert("P-1".to_string(), parcel("P-1"));
        let (st, ch) = decide(&existing, &HashMap::new(), &[new("P-1", false)]);
        assert_eq!(
            st,
            [UpsertStatus::Rejected(RejectReason::RequiresCodeFrozen)]
        );
        assert_eq!(ch, Changes::default(), "nothing of the item is applied");
        let (st, _) = decide(&existing, &HashMap::new(), &[new("P-1", true)]);
        assert_eq!(st, [UpsertStatus::Updated], "other details may change");
    }

    #[test]
    fn an_id_twice_in_one_batch_is_created_then_updated() {
        let (st, _) = decide(
            &HashMap::new(),
            &HashMap::new(),
            &[new("P-1", true), new("P-1", false)],
        );
        assert_eq!(st, [UpsertStatus::Created, UpsertStatus::Updated]);
    }

    #[test]
    fn an_item_identical_to_the_stored_parcel_is_unchanged_and_writes_nothing() {
        let mut existing = HashMap::new();
        existing.insert("P-1".to_string(), parcel("P-1"));
        let item = new("P-1", true);
        let mut details = HashMap::new();
        details.insert("P-1".to_string(), item.details.clone());
        let (st, ch) = decide(&existing, &details, std::slice::from_ref(&item));
        assert_eq!(st, [UpsertStatus::Unchanged]);
        assert_eq!(ch, Changes::default());
        let moved = NewParcel {
            details: ParcelDetails {
                address: "2 Street".into(),
                ..item.details.clone()
            },
            ..item
        };
        let (st, ch) = decide(&existing, &details, &[moved]);
        assert_eq!(st, [UpsertStatus::Updated], "one field differs");
        assert_eq!(ch.parcels.len(), 1);
    }
}
