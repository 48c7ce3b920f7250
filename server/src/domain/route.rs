//! Saving a courier's route for a day: revision + 1, every parcel placed;
//! a parcel new to the day gets the next attempt (a new code and notice),
//! one staying on the day keeps its code; parcels dropped go back to pending.

use super::*;
use super::{RouteInput, RouteSaved, RouteStopInput};
use std::collections::{HashMap, HashSet};

/// A route may be planned from today up to a year ahead, never for a past day.
pub fn check_date(date: NaiveDate, today: NaiveDate) -> Result<(), String> {
    if date < today {
        return Err(format!(
            "delivery_date {date} is in the past (today is {today}); a code is valid only within its day"
        ));
    }
    if (date - today).num_days() > 366 {
        return Err("delivery_date must be within a year of today".into());
    }
    Ok(())
}

/// A parcel the route names, as storage has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteParcel {
    /// `route_id` here is its route on its current delivery date.
    pub facts: ParcelFacts,
    pub recipient_name: String,
    /// Another route it is already on for the new route's date.
    pub elsewhere: Option<String>,
}

/// A stop of the route as stored, its parcels in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredStop {
    pub stop_id: String,
    pub address: String,
    pub recipient: String,
    pub parcel_ids: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteFacts {
    /// The courier's route with another id on that day.
    pub other_route: Option<String>,
    /// This route's revision on that day, if it exists.
    pub revision: Option<u64>,
    /// Its courier now, if it exists.
    pub courier: Option<String>,
    /// Its stops now, in order.
    pub stops: Vec<StoredStop>,
    /// The parcels the new route names (absent: unknown).
    pub parcels: HashMap<String, RouteParcel>,
    /// The parcels on this route now.
    pub before: Vec<(String, ParcelState)>,
}

pub fn decide(
    f: &RouteFacts,
    route: &RouteInput,
    today: NaiveDate,
) -> Result<(RouteSaved, Changes), Refusal> {
    let date = route.delivery_date;
    let rid = route.route_id.as_str();
    check_date(date, today).map_err(Refusal::Invalid)?;
    if let Some(other) = &f.other_route {
        return Err(Refusal::Conflict(format!(
            "courier {} already has route {other} on {date}",
            route.courier_id
        )));
    }
    // Check every parcel before changing anything.
    let mut wanted: Vec<&RouteParcel> = Vec::new();
    for pid in route.stops.iter().flat_map(|s| &s.parcel_ids) {
        let Some(p) = f.parcels.get(pid) else {
            return Err(Refusal::NotFound(format!(
                "parcel {pid} is not known; POST it to /v1/parcels first"
            )));
        };
        if p.facts.state == ParcelState::Delivered {
            return Err(Refusal::Conflict(format!(
                "parcel {pid} is already delivered"
            )));
        }
        if p.facts.state == ParcelState::Held {
            return Err(Refusal::Conflict(format!(
                "parcel {pid} is on hold: the customer reported they did not order it; \
                 leave it off the route, or release it with POST /v1/parcels/{pid}/reissue"
            )));
        }
        if let Some(r) = &p.elsewhere {
            return Err(Refusal::Conflict(format!(
                "parcel {pid} is already on route {r} on {date}"
            )));
        }
        wanted.push(p);
    }
    if let Some(revision) = f.revision
        && f.courier.as_deref() == Some(route.courier_id.as_str())
        && same_stops(f, route)
    {
        let saved = RouteSaved {
            route_id: rid.to_string(),
            delivery_date: date,
            status: RouteStatus::Unchanged,
            revision,
            notices_queued: 0,
        };
        return Ok((saved, Changes::default()));
    }
    let status = if f.revision.is_some() {
        RouteStatus::Updated
    } else {
        RouteStatus::Created
    };
    let revision = f.revision.unwrap_or(0) + 1;
    let mut ch = Changes::default();
    ch.routes.push(RouteChange::Put(RouteHead {
        route_id: rid.to_string(),
        date,
        courier_id: route.courier_id.clone(),
        revision,
    }));
    let keep: HashSet<&str> = wanted.iter().map(|p| p.facts.parcel_id.as_str()).collect();
    for (pid, state) in &f.before {
        if !keep.contains(pid.as_str()) && state.is_open() {
            ch.parcels.push(ParcelChange::Unschedule(pid.clone()));
            ch.event(
                pid,
                EventKind::Unscheduled,
                format!("removed from route {rid}"),
            );
        }
    }
    ch.routes.push(RouteChange::Clear(RouteDay {
        route_id: rid.to_string(),
        date,
    }));
    for (i, s) in route.stops.iter().enumerate() {
        let recipient = recipient_of(f, s);
        ch.routes.push(RouteChange::AddStop(StopRow {
            route_id: rid.to_string(),
            date,
            stop_id: s.stop_id.clone(),
            sequence: u32::try_from(i + 1).unwrap_or(u32::MAX),
            address: s.address.clone(),
            recipient,
        }));
        for (pos, pid) in s.parcel_ids.iter().enumerate() {
            ch.routes.push(RouteChange::Place(Placement {
                route_id: rid.to_string(),
                date,
                stop_id: s.stop_id.clone(),
                parcel_id: pid.clone(),
                position: u32::try_from(pos).unwrap_or(u32::MAX),
            }));
        }
    }
    let mut notices = 0;
    for p in wanted {
        let pf = &p.facts;
        if pf.delivery_date == Some(date) && pf.attempt > 0 {
            // Same day, same code: only the route assignment may change.
            ch.parcels.push(ParcelChange::Reassign(
                pf.parcel_id.clone(),
                rid.to_string(),
            ));
            continue;
        }
        if let Some(old) = pf.delivery_date {
            // Leaving another day's route: that route changes too.
            ch.routes
                .push(RouteChange::Unplace(old, pf.parcel_id.clone()));
            if let Some(r) = &pf.route_id {
                ch.routes.push(RouteChange::Bump(RouteDay {
                    route_id: r.clone(),
                    date: old,
                }));
            }
        }
        notices += ch.schedule(Scheduled {
            parcel_id: pf.parcel_id.clone(),
            route_id: rid.to_string(),
            date,
            attempt: pf.attempt + 1,
            requires_code: pf.requires_code,
            track: None,
        });
    }
    let saved = RouteSaved {
        route_id: rid.to_string(),
        delivery_date: date,
        status,
        revision,
        notices_queued: notices,
    };
    Ok((saved, ch))
}

/// The name a stop shows: the one sent, else its first parcel's recipient.
fn recipient_of(f: &RouteFacts, s: &RouteStopInput) -> String {
    s.recipient.clone().unwrap_or_else(|| {
        s.parcel_ids
            .first()
            .and_then(|p| f.parcels.get(p))
            .map_or_else(|| "Recipient".to_string(), |p| p.recipient_name.clone())
    })
}

/// Whether the route sent is the route stored, stop by stop and parcel by parcel.
fn same_stops(f: &RouteFacts, route: &RouteInput) -> bool {
    f.stops.len() == route.stops.len()
        && f.stops.iter().zip(&route.stops).all(|(old, new)| {
            old.stop_id == new.stop_id
                && old.address == new.address
                && old.recipient == recipient_of(f, new)
                && old.parcel_ids == new.parcel_ids
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::super::testing::*;
    use super::*;
    use crate::domain::RouteStopInput;

    fn input(date: NaiveDate, parcels: &[&str]) -> RouteInput {
        RouteInput {
            route_id: "R-1".into(),
            courier_id: "C-1".into(),
            delivery_date: date,
            stops: vec![RouteStopInput {
                stop_id: "S-1".into(),
                address: "1 Street".into(),
                recipient: None,
                parcel_ids: parcels.iter().map(|p| p.to_string()).collect(),
            }],
        }
    }

    fn pending(id: &str) -> RouteParcel {
        RouteParcel {
            facts: ParcelFacts {
                state: ParcelState::Pending,
                delivery_date: None,
                attempt: 0,
                route_id: None,
                route_courier: None,
                ..parcel(id)
            },
            recipient_name: format!("Name {id}"),
            elsewhere: None,
        }
    }

    fn facts(parcels: Vec<RouteParcel>) -> RouteFacts {
        RouteFacts {
            parcels: parcels
                .into_iter()
                .map(|p| (p.facts.parcel_id.clone(), p))
                .collect(),
            ..RouteFacts::default()
        }
    }

    #[test]
    fn a_new_route_gives_each_parcel_its_first_attempt_and_a_notice() {
        let mut free = pending("P-2");
        free.facts.requires_code = false;
        let (saved, ch) = decide(
            &facts(vec![pending("P-1"), free]),
            &input(day(23), &["P-1", "P-2"]),
            day(23),
        )
        .unwrap();
        assert_eq!((saved.revision, saved.notices_queued), (1, 1));
        assert_eq!(ch.notices[0].attempt, 1);
        assert!(matches!(
            &ch.routes[2],
            RouteChange::AddStop(StopRow { recipient, sequence: 1, .. }) if recipient == "Name P-1"
        ));
        assert_eq!(
            ch.routes
                .iter()
                .filter(|r| matches!(r, RouteChange::Place(Placement { .. })))
                .count(),
            2
        );
    }

    #[test]
    fn the_same_day_keeps_the_code() {
        let mut f = facts(vec![RouteParcel {
            facts: parcel("P-1"),
            recipient_name: "n".into(),
            elsewhere: None,
        }]);
        f.revision = Some(1);
        f.before = vec![("P-1".into(), ParcelState::Scheduled)];
        let (saved, ch) = decide(&f, &input(day(23), &["P-1"]), day(23)).unwrap();
        assert_eq!((saved.revision, saved.notices_queued), (2, 0));
        assert_eq!(
            ch.parcels,
            [ParcelChange::Reassign("P-1".into(), "R-1".into())]
        );
    }

    #[test]
    fn another_day_is_the_next_attempt_and_the_old_route_changes() {
        let f = facts(vec![RouteParcel {
            facts: ParcelFacts {
                route_id: Some("R-old".into()),
                ..parcel("P-1")
            },
            recipient_name: "n".into(),
            elsewhere: None,
        }]);
        let (saved, ch) = decide(&f, &input(day(24), &["P-1"]), day(23)).unwrap();
        assert_eq!(saved.notices_queued, 1);
        assert!(
            ch.routes
                .contains(&RouteChange::Unplace(day(23), "P-1".into()))
        );
        assert!(ch.routes.contains(&RouteChange::Bump(RouteDay {
            route_id: "R-old".into(),
            date: day(23)
        })));
        assert!(matches!(
            ch.parcels[0],
            ParcelChange::Schedule(Scheduled { attempt: 2, .. })
        ));
    }

    #[test]
    fn parcels_dropped_from_the_route_go_back_to_pending() {
        let mut f = facts(vec![]);
        f.revision = Some(1);
        f.before = vec![
            ("P-1".into(), ParcelState::Failed),
            ("P-2".into(), ParcelState::Delivered),
        ];
        let (_, ch) = decide(&f, &input(day(23), &[]), day(23)).unwrap();
        assert_eq!(
            ch.parcels,
            [ParcelChange::Unschedule("P-1".into())],
            "a delivered parcel stays delivered"
        );
    }

    #[test]
    fn conflicts_and_unknown_parcels_refuse_the_whole_route() {
        let mut f = facts(vec![pending("P-1")]);
        f.other_route = Some("R-9".into());
        assert!(matches!(
            decide(&f, &input(day(23), &["P-1"]), day(23)),
            Err(Refusal::Conflict(_))
        ));
        let mut taken = pending("P-1");
        taken.elsewhere = Some("R-9".into());
        assert!(matches!(
            decide(&facts(vec![taken]), &input(day(23), &["P-1"]), day(23)),
            Err(Refusal::Conflict(m)) if m.contains("R-9")
        ));
        let mut done = pending("P-1");
        done.facts.state = ParcelState::Delivered;
        assert!(matches!(
            decide(&facts(vec![done]), &input(day(23), &["P-1"]), day(23)),
            Err(Refusal::Conflict(_))
        ));
        assert!(matches!(
            decide(&facts(vec![]), &input(day(23), &["P-404"]), day(23)),
            Err(Refusal::NotFound(_))
        ));
    }

    #[test]
    fn a_route_for_a_past_day_is_refused() {
        let f = facts(vec![pending("P-1")]);
        assert!(matches!(
            decide(&f, &input(day(22), &["P-1"]), day(23)),
            Err(Refusal::Invalid(m)) if m.contains("past")
        ));
        assert!(check_date(day(23), day(23)).is_ok());
        assert!(check_date(day(23) + chrono::Duration::days(367), day(23)).is_err());
    }

    #[test]
    fn a_route_sent_again_as_stored_is_unchanged_and_writes_nothing() {
        let mut f = facts(vec![pending("P-1"), pending("P-2")]);
        f.revision = Some(3);
        f.courier = Some("C-1".into());
        f.stops = vec![StoredStop {
            stop_id: "S-1".into(),
            address: "1 Street".into(),
            recipient: "Name P-1".into(),
            parcel_ids: vec!["P-1".into(), "P-2".into()],
        }];
        let same = input(day(23), &["P-1", "P-2"]);
        let (saved, ch) = decide(&f, &same, day(23)).unwrap();
        assert_eq!(
            (saved.status, saved.revision, saved.notices_queued),
            (RouteStatus::Unchanged, 3, 0)
        );
        assert_eq!(ch, Changes::default());

        let (saved, _) = decide(&f, &input(day(23), &["P-2", "P-1"]), day(23)).unwrap();
        assert_eq!(
            (saved.status, saved.revision),
            (RouteStatus::Updated, 4),
            "order"
        );
        f.courier = Some("C-2".into());
        let (saved, _) = decide(&f, &same, day(23)).unwrap();
        assert_eq!(
            (saved.status, saved.revision),
            (RouteStatus::Updated, 4),
            "courier"
        );
    }
}
