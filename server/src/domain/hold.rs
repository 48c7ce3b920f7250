//! "I did not order this": the customer, from the tracking page, puts a
//! parcel on hold. Its code is void at once (the page stops showing it, the
//! server refuses it online, a delivery is disputed), dispatch learns of it by
//! a `not_ordered` signal, and the route's next manifest carries the parcel
//! with `"hold": true` so the handset refuses to hand it over even offline.
//! Dispatch releases a held parcel with a reissue ([`super::reissue`]).

use super::*;

/// Put a parcel on hold. `today` is the day the signal is filed under when
/// the parcel is not on a route yet. Pressing twice changes nothing.
pub fn decide(
    parcel: Option<&ParcelFacts>,
    parcel_id: &str,
    today: NaiveDate,
) -> Result<(Moved, Changes), Refusal> {
    let Some(p) = parcel else {
        return Err(Refusal::NotFound(format!(
            "parcel {parcel_id} is not known"
        )));
    };
    let mut ch = Changes::default();
    let mut moved = Moved::default();
    match p.state {
        ParcelState::Held => return Ok((moved, ch)),
        ParcelState::Delivered | ParcelState::Disputed => {
            return Err(Refusal::Conflict(format!(
                "parcel {parcel_id} has already been handed over; contact the depot"
            )));
        }
        ParcelState::Pending | ParcelState::Scheduled | ParcelState::Failed => {}
    }
    ch.states.push((p.parcel_id.clone(), ParcelState::Held));
    ch.event(
        &p.parcel_id,
        EventKind::Held,
        format!(
            "the customer reported they did not order it; attempt {} voided",
            p.attempt
        ),
    );
    ch.signals.push(NewSignal {
        kind: SignalKind::NotOrdered,
        parcel_id: p.parcel_id.clone(),
        device_id: None,
        confirmation_id: None,
        day: p.delivery_date.unwrap_or(today),
        detail: "the customer reported they did not order this parcel".to_string(),
        code_matched: None,
    });
    if let (Some(date), Some(route_id)) = (p.delivery_date, p.route_id.as_deref()) {
        // A new revision, so every handset on the route pulls the hold.
        ch.routes.push(RouteChange::Bump(RouteDay {
            route_id: route_id.to_string(),
            date,
        }));
        moved.routes.push((route_id.to_string(), date));
        moved.parcel_ids.push(p.parcel_id.clone());
    }
    Ok((moved, ch))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn facts(state: ParcelState, routed: bool) -> ParcelFacts {
        ParcelFacts {
            parcel_id: "P-1".into(),
            state,
            requires_code: true,
            delivery_date: routed.then(|| NaiveDate::from_ymd_opt(2026, 11, 23).unwrap()),
            attempt: u32::from(routed),
            wrong_tries: 0,
            locked: false,
            route_id: routed.then(|| "R-1".to_string()),
            route_courier: routed.then(|| "C-1".to_string()),
        }
    }

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 22).unwrap()
    }

    #[test]
    fn a_routed_parcel_is_held_signalled_and_its_route_rebuilt() {
        let p = facts(ParcelState::Scheduled, true);
        let (moved, ch) = decide(Some(&p), "P-1", today()).unwrap();
        assert_eq!(ch.states, [("P-1".to_string(), ParcelState::Held)]);
        assert_eq!(ch.signals.len(), 1);
        assert_eq!(ch.signals[0].kind, SignalKind::NotOrdered);
        assert_eq!(ch.signals[0].day, p.delivery_date.unwrap());
        assert!(matches!(ch.routes[..], [RouteChange::Bump(_)]));
        assert_eq!(
            moved.routes,
            [("R-1".to_string(), p.delivery_date.unwrap())]
        );
        assert!(ch.notices.is_empty(), "no new code is sent");
    }

    #[test]
    fn a_parcel_not_yet_routed_is_held_and_signalled_today() {
        let (moved, ch) =
            decide(Some(&facts(ParcelState::Pending, false)), "P-1", today()).unwrap();
        assert_eq!(ch.states, [("P-1".to_string(), ParcelState::Held)]);
        assert_eq!(ch.signals[0].day, today());
        assert!(ch.routes.is_empty() && moved.routes.is_empty());
    }

    #[test]
    fn holding_twice_changes_nothing_and_a_handed_over_parcel_is_refused() {
        let (_, ch) = decide(Some(&facts(ParcelState::Held, true)), "P-1", today()).unwrap();
        assert_eq!(ch, Changes::default());
        for s in [ParcelState::Delivered, ParcelState::Disputed] {
            assert!(matches!(
                decide(Some(&facts(s, true)), "P-1", today()),
                Err(Refusal::Conflict(_))
            ));
        }
        assert!(matches!(
            decide(None, "P-9", today()),
            Err(Refusal::NotFound(_))
        ));
    }
}
