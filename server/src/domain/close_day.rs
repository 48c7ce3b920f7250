//! Closing a day: every parcel still out for delivery moves to the next
//! working day with the next attempt (a new code and notice), onto its
//! courier's route for that day, at the same stop where it can.

use super::Moved;
use super::*;
use std::collections::HashMap;

/// A parcel placed on one of the closed day's routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub parcel_id: String,
    pub state: ParcelState,
    pub attempt: u32,
    pub requires_code: bool,
    pub route_id: String,
    pub courier_id: String,
    pub stop_id: String,
    pub address: String,
    pub recipient: String,
}

/// A stop of a next-day route, with how many parcels it has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextStop {
    pub route_id: String,
    pub stop_id: String,
    pub sequence: u32,
    pub address: String,
    pub parcels: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CloseFacts {
    /// The day's placed parcels, by route, stop sequence and position.
    pub placed: Vec<Placed>,
    /// Next-day routes (route id, courier) of the day's couriers and route ids.
    pub next_routes: Vec<(String, String)>,
    /// The stops of those routes.
    pub next_stops: Vec<NextStop>,
}

/// The stops of one next-day route as the close fills it.
#[derive(Default)]
struct Target {
    stops: Vec<NextStop>,
    max_seq: u32,
}

/// What a close did: the day parcels moved to, and what moved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Closed {
    pub next_date: NaiveDate,
    pub moved: Moved,
}

/// The day a close moves parcels to: the next working day.
pub fn next_day(date: NaiveDate, policy: &Policy) -> Result<NaiveDate, Refusal> {
    policy
        .calendar
        .next_working_day(date)
        .ok_or_else(|| Refusal::Invalid(format!("no working day within a year after {date}")))
}

/// An id made from `base` and `suffix` that still matches DESIGN's id
/// pattern (`#` is allowed, at most 64 characters): `base#suffix`, or, when
/// that is too long, a prefix of it and a hash of the whole, so two long
/// bases never collapse into one id.
pub(crate) fn derived_id(base: &str, suffix: &str) -> String {
    let full = format!("{base}#{suffix}");
    if full.len() <= 64 {
        return full;
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, full.as_bytes());
    let hash: String = digest.as_ref()[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    // Ids are ASCII (validate.rs), so any byte offset is a char boundary.
    let keep = full.get(..64 - 1 - hash.len()).unwrap_or(base);
    format!("{keep}#{hash}")
}

pub fn decide(f: &CloseFacts, date: NaiveDate, next: NaiveDate) -> (Moved, Changes) {
    let mut ch = Changes::default();
    let mut moved = Moved::default();
    let mut route_of: HashMap<&str, String> = HashMap::new();
    let mut owner: HashMap<String, &str> = HashMap::new();
    for (r, c) in &f.next_routes {
        route_of.insert(c.as_str(), r.clone());
        owner.insert(r.clone(), c.as_str());
    }
    let mut targets: HashMap<String, Target> = HashMap::new();
    for s in &f.next_stops {
        let t = targets.entry(s.route_id.clone()).or_default();
        t.max_seq = t.max_seq.max(s.sequence);
        t.stops.push(s.clone());
    }
    for p in f.placed.iter().filter(|p| p.state.is_open()) {
        // The courier's route on the next day, or the same route id carried
        // over (renamed if another courier already uses it that day).
        let target = match route_of.get(p.courier_id.as_str()) {
            Some(t) => t.clone(),
            None => {
                let id = match owner.get(&p.route_id) {
                    Some(_) => derived_id(&p.route_id, &p.courier_id),
                    None => p.route_id.clone(),
                };
                ch.routes.push(RouteChange::Open(RouteHead {
                    route_id: id.clone(),
                    date: next,
                    courier_id: p.courier_id.clone(),
                    revision: 0,
                }));
                route_of.insert(p.courier_id.as_str(), id.clone());
                owner.insert(id.clone(), p.courier_id.as_str());
                id
            }
        };
        let t = targets.entry(target.clone()).or_default();
        // The next day's route may already use this stop id for another address.
        let stop_id = match t.stops.iter().find(|s| s.stop_id == p.stop_id) {
            Some(s) if s.address != p.address => derived_id(&p.stop_id, &date.to_string()),
            _ => p.stop_id.clone(),
        };
        let i = match t.stops.iter().position(|s| s.stop_id == stop_id) {
            Some(i) => i,
            None => {
                t.max_seq += 1;
                ch.routes.push(RouteChange::AddStop(StopRow {
                    route_id: target.clone(),
                    date: next,
                    stop_id: stop_id.clone(),
                    sequence: t.max_seq,
                    address: p.address.clone(),
                    recipient: p.recipient.clone(),
                }));
                t.stops.push(NextStop {
                    route_id: target.clone(),
                    stop_id: stop_id.clone(),
                    sequence: t.max_seq,
                    address: p.address.clone(),
                    parcels: 0,
                });
                t.stops.len() - 1
            }
        };
        let position = t.stops[i].parcels;
        t.stops[i].parcels += 1;
        ch.routes.push(RouteChange::Place(Placement {
            route_id: target.clone(),
            date: next,
            stop_id,
            parcel_id: p.parcel_id.clone(),
            position,
        }));
        ch.event(
            &p.parcel_id,
            EventKind::DayClosed,
            format!("not delivered on {date}; moved to {next}"),
        );
        ch.schedule(Scheduled {
            parcel_id: p.parcel_id.clone(),
            route_id: target.clone(),
            date: next,
            attempt: p.attempt + 1,
            requires_code: p.requires_code,
            track: None,
        });
        if !moved.routes.iter().any(|(r, _)| r == &target) {
            moved.routes.push((target.clone(), next));
        }
        moved.parcel_ids.push(p.parcel_id.clone());
    }
    for (r, _) in &moved.routes {
        ch.routes.push(RouteChange::Bump(RouteDay {
            route_id: r.clone(),
            date: next,
        }));
    }
    (moved, ch)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::super::testing::*;
    use super::*;

    #[test]
    fn derived_ids_match_the_id_pattern_however_long_their_parts() {
        let ok = |id: &str| crate::validate::id(id, "id").is_ok();
        assert_eq!(derived_id("R-7", "C-42"), "R-7#C-42");
        let a = derived_id(&"R".repeat(64), &"C".repeat(64));
        let b = derived_id(&"R".repeat(64), &format!("{}D", "C".repeat(63)));
        assert!(ok(&a) && ok(&b) && ok("R-7#C-42"), "{a} {b}");
        assert_eq!(a.len(), 64);
        assert_ne!(a, b, "two long bases must not collapse into one id");
    }

    fn placed(id: &str, state: ParcelState, courier: &str, stop: &str) -> Placed {
        Placed {
            parcel_id: id.into(),
            state,
            attempt: 1,
            requires_code: true,
            route_id: format!("R-{courier}"),
            courier_id: courier.into(),
            stop_id: stop.into(),
            address: "1 Street".into(),
            recipient: "n".into(),
        }
    }

    fn stops(ch: &Changes) -> Vec<(&str, &str, u32)> {
        ch.routes
            .iter()
            .filter_map(|r| match r {
                RouteChange::AddStop(StopRow {
                    route_id,
                    stop_id,
                    sequence,
                    ..
                }) => Some((route_id.as_str(), stop_id.as_str(), *sequence)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn undelivered_parcels_move_to_the_next_day_with_the_next_attempt() {
        let f = CloseFacts {
            placed: vec![
                placed("P-1", ParcelState::Delivered, "C-1", "S-1"),
                placed("P-2", ParcelState::Failed, "C-1", "S-1"),
                placed("P-3", ParcelState::Scheduled, "C-1", "S-1"),
                placed("P-4", ParcelState::Disputed, "C-1", "S-2"),
            ],
            ..CloseFacts::default()
        };
        let (moved, ch) = decide(&f, day(23), day(24));
        assert_eq!(moved.parcel_ids, ["P-2", "P-3"]);
        assert_eq!(moved.routes, [("R-C-1".to_string(), day(24))]);
        assert_eq!(
            ch.routes[0],
            RouteChange::Open(RouteHead {
                route_id: "R-C-1".into(),
                date: day(24),
                courier_id: "C-1".into(),
                revision: 0
            })
        );
        assert_eq!(stops(&ch), [("R-C-1", "S-1", 1)], "one stop, made once");
        let positions: Vec<u32> = ch
            .routes
            .iter()
            .filter_map(|r| match r {
                RouteChange::Place(Placement { position, .. }) => Some(*position),
                _ => None,
            })
            .collect();
        assert_eq!(positions, [0, 1]);
        assert_eq!(ch.notices.len(), 2);
        assert!(
            ch.notices
                .iter()
                .all(|n| n.attempt == 2 && n.delivery_date == day(24))
        );
        assert_eq!(
            ch.routes.last(),
            Some(&RouteChange::Bump(RouteDay {
                route_id: "R-C-1".into(),
                date: day(24)
            }))
        );
    }

    #[test]
    fn the_couriers_next_day_route_takes_them_and_a_taken_stop_id_is_renamed() {
        let f = CloseFacts {
            placed: vec![placed("P-1", ParcelState::Scheduled, "C-1", "S-1")],
            next_routes: vec![("R-next".into(), "C-1".into())],
            next_stops: vec![NextStop {
                route_id: "R-next".into(),
                stop_id: "S-1".into(),
                sequence: 4,
                address: "99 Other Road".into(),
                parcels: 2,
            }],
        };
        let (moved, ch) = decide(&f, day(23), day(24));
        assert_eq!(moved.routes, [("R-next".to_string(), day(24))]);
        assert_eq!(stops(&ch), [("R-next", "S-1#2026-11-23", 5)]);
        assert!(
            !ch.routes
                .iter()
                .any(|r| matches!(r, RouteChange::Open(RouteHead { .. })))
        );
    }

    #[test]
    fn a_stop_at_the_same_address_is_reused() {
        let f = CloseFacts {
            placed: vec![placed("P-1", ParcelState::Scheduled, "C-1", "S-1")],
            next_routes: vec![("R-C-1".into(), "C-1".into())],
            next_stops: vec![NextStop {
                route_id: "R-C-1".into(),
                stop_id: "S-1".into(),
                sequence: 1,
                address: "1 Street".into(),
                parcels: 3,
            }],
        };
        let (_, ch) = decide(&f, day(23), day(24));
        assert!(stops(&ch).is_empty());
        assert!(
            ch.routes
                .iter()
                .any(|r| matches!(r, RouteChange::Place(Placement { position: 3, .. })))
        );
    }

    #[test]
    fn a_route_id_another_courier_uses_the_next_day_is_not_shared() {
        let f = CloseFacts {
            placed: vec![placed("P-1", ParcelState::Scheduled, "C-1", "S-1")],
            next_routes: vec![("R-C-1".into(), "C-9".into())],
            next_stops: vec![],
        };
        let (moved, _) = decide(&f, day(23), day(24));
        assert_eq!(moved.routes, [("R-C-1#C-1".to_string(), day(24))]);
    }

    #[test]
    fn parcels_move_to_the_next_working_day() {
        let p = policy();
        assert_eq!(next_day(day(21), &p), Ok(day(23)), "Saturday to Monday");
        let no_days = Policy {
            calendar: crate::config::Calendar {
                holidays: (1..=400)
                    .filter_map(|n| day(23).checked_add_days(chrono::Days::new(n)))
                    .collect(),
                ..p.calendar.clone()
            },
            ..p
        };
        assert!(matches!(
            next_day(day(23), &no_days),
            Err(Refusal::Invalid(_))
        ));
    }

    #[test]
    fn nothing_open_moves_nothing() {
        let f = CloseFacts {
            placed: vec![placed("P-1", ParcelState::Delivered, "C-1", "S-1")],
            ..CloseFacts::default()
        };
        let (moved, ch) = decide(&f, day(23), day(24));
        assert!(moved.parcel_ids.is_empty() && ch == Changes::default());
    }
}
