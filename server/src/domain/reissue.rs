//! Reissue: dispatch voids the current code. The parcel gets the next
//! attempt (so a new code and a new notice), unlocked, with a new tracking
//! link; the old link then answers like an unknown one. A reissue is also
//! how dispatch releases a parcel the customer put on hold.

use super::Moved;
use super::*;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReissueInput {
    pub parcel_id: String,
    /// The new tracking link (fresh, from the app's track key).
    pub track: TrackRef,
    /// A new code policy from the next attempt; None keeps the parcel's.
    pub requires_code: Option<bool>,
}

pub fn decide(
    parcel: Option<&ParcelFacts>,
    input: &ReissueInput,
) -> Result<(Moved, Changes), Refusal> {
    let pid = &input.parcel_id;
    let Some(p) = parcel else {
        return Err(Refusal::NotFound(format!("parcel {pid} is not known")));
    };
    if p.state == ParcelState::Delivered {
        return Err(Refusal::Conflict(format!(
            "parcel {pid} is already delivered"
        )));
    }
    let (Some(date), Some(route_id)) = (p.delivery_date, p.route_id.as_deref()) else {
        if p.state == ParcelState::Held {
            // Released before it was ever routed: back to waiting for a route.
            let mut ch = Changes::default();
            ch.states.push((pid.clone(), ParcelState::Pending));
            ch.event(pid, EventKind::Updated, "released from hold by dispatch");
            return Ok((Moved::default(), ch));
        }
        return Err(Refusal::Conflict(format!(
            "parcel {pid} is not on a route; nothing to reissue"
        )));
    };
    let mut ch = Changes::default();
    let next = p.attempt + 1;
    ch.event(
        pid,
        EventKind::CodeVoided,
        format!("attempt {} voided by dispatch", p.attempt),
    );
    let requires_code = input.requires_code.unwrap_or(p.requires_code);
    if requires_code != p.requires_code {
        let what = if requires_code {
            "requires a code"
        } else {
            "no code needed"
        };
        ch.event(
            pid,
            EventKind::Updated,
            format!("{what} from attempt {next}"),
        );
    }
    ch.schedule(Scheduled {
        parcel_id: pid.clone(),
        route_id: route_id.to_string(),
        date,
        attempt: next,
        requires_code,
        track: Some(input.track.clone()),
    });
    ch.routes.push(RouteChange::Bump(RouteDay {
        route_id: route_id.to_string(),
        date,
    }));
    let moved = Moved {
        parcel_ids: vec![pid.clone()],
        routes: vec![(route_id.to_string(), date)],
    };
    Ok((moved, ch))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::super::testing::*;
    use super::*;

    fn input(requires_code: Option<bool>) -> ReissueInput {
        ReissueInput {
            parcel_id: "P-1".into(),
            track: TrackRef {
                nonce: "n".into(),
                hash: "new-hash".into(),
            },
            requires_code,
        }
    }

    #[test]
    fn a_reissue_is_the_next_attempt_with_a_new_link_and_notice() {
        let locked = ParcelFacts {
            locked: true,
            wrong_tries: 5,
            ..parcel("P-1")
        };
        let (moved, ch) = decide(Some(&locked), &input(None)).unwrap();
        assert_eq!(moved.routes, [("R-1".to_string(), day(23))]);
        assert_eq!(
            ch.parcels,
            [ParcelChange::Schedule(Scheduled {
                parcel_id: "P-1".into(),
                route_id: "R-1".into(),
                date: day(23),
                attempt: 2,
                requires_code: true,
                track: Some(TrackRef {
                    nonce: "n".into(),
                    hash: "new-hash".into()
                }),
            })]
        );
        assert_eq!(ch.notices.len(), 1);
        assert_eq!(ch.notices[0].attempt, 2);
        assert_eq!(
            ch.routes,
            [RouteChange::Bump(RouteDay {
                route_id: "R-1".into(),
                date: day(23)
            })]
        );
        assert_eq!(ch.events[0].kind, EventKind::CodeVoided);
    }

    #[test]
    fn a_reissue_applies_a_new_code_policy_from_the_next_attempt() {
        let (_, ch) = decide(Some(&parcel("P-1")), &input(Some(false))).unwrap();
        assert!(matches!(
            ch.parcels[0],
            ParcelChange::Schedule(Scheduled {
                requires_code: false,
                attempt: 2,
                ..
            })
        ));
        assert!(ch.notices.is_empty(), "no code, no notice");
        assert!(
            ch.events
                .iter()
                .any(|e| e.detail == "no code needed from attempt 2")
        );
    }

    #[test]
    fn nothing_to_reissue_off_a_route_delivered_or_unknown() {
        assert!(matches!(
            decide(None, &input(None)),
            Err(Refusal::NotFound(_))
        ));
        let delivered = ParcelFacts {
            state: ParcelState::Delivered,
            ..parcel("P-1")
        };
        assert!(matches!(
            decide(Some(&delivered), &input(None)),
            Err(Refusal::Conflict(_))
        ));
        let pending = ParcelFacts {
            state: ParcelState::Pending,
            delivery_date: None,
            route_id: None,
            ..parcel("P-1")
        };
        assert!(matches!(
            decide(Some(&pending), &input(None)),
            Err(Refusal::Conflict(_))
        ));
    }
}
