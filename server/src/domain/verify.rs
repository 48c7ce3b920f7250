//! Online verify at the door: which parcel and attempt a try is for, and what
//! a try does (counted, locked at `max_attempts`, signalled at the
//! `many_wrong_tries` threshold).

use super::*;

/// Where a parcel stands for an online check by one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyFacts {
    pub parcel: Option<ParcelFacts>,
    /// A manifest built for the device carries the parcel at its current day and attempt.
    pub on_manifest: bool,
    pub device_courier: String,
}

/// Why a try is refused before it is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    NotOnManifest,
    NotOnCurrentRoute,
    /// The customer reported they did not order it: its code is void.
    Held,
    NoCodeRequired,
    /// The code's day has not begun: `valid_from`.
    NotYetValid(DateTime<Utc>),
    /// The code's day is over: `valid_until`.
    Expired(DateTime<Utc>),
}

/// The code a try is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub delivery_date: NaiveDate,
    pub attempt: u32,
}

/// The attempt a try at `now` is for, or why there is none.
pub fn target(f: &VerifyFacts, now: DateTime<Utc>, policy: &Policy) -> Result<Target, Refused> {
    let Some(p) = f.parcel.as_ref().filter(|_| f.on_manifest) else {
        return Err(Refused::NotOnManifest);
    };
    let Some(date) = p.delivery_date else {
        return Err(Refused::NotOnManifest);
    };
    if !p.on_route_of(&f.device_courier, date, p.attempt) {
        return Err(Refused::NotOnCurrentRoute);
    }
    if p.state == ParcelState::Held {
        return Err(Refused::Held);
    }
    if !p.requires_code {
        return Err(Refused::NoCodeRequired);
    }
    let (from, until) = policy.calendar.window(date);
    match policy.phase(date, now) {
        DayPhase::Before => Err(Refused::NotYetValid(from)),
        DayPhase::After => Err(Refused::Expired(until)),
        DayPhase::Within => Ok(Target {
            delivery_date: date,
            attempt: p.attempt,
        }),
    }
}

/// One counted try: the code was compared (in constant time) against `target`'s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyInput {
    pub device_id: String,
    pub parcel_id: String,
    pub target: Target,
    pub ok: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyOutcome {
    Accepted,
    Rejected {
        attempts_left: u32,
    },
    Locked,
    /// The parcel moved to another day or attempt while we checked; ask again.
    Stale,
}

/// What a counted try does to the parcel as it is now (re-read under lock).
pub fn decide(
    parcel: Option<&ParcelFacts>,
    input: &VerifyInput,
    policy: &Policy,
) -> (VerifyOutcome, Changes) {
    let mut ch = Changes::default();
    let t = input.target;
    let Some(p) =
        parcel.filter(|p| p.delivery_date == Some(t.delivery_date) && p.attempt == t.attempt)
    else {
        return (VerifyOutcome::Stale, ch);
    };
    if p.locked {
        return (VerifyOutcome::Locked, ch);
    }
    let (pid, did) = (&input.parcel_id, &input.device_id);
    if input.ok {
        ch.event(
            pid,
            EventKind::VerifiedOnline,
            format!("code accepted for device {did}"),
        );
        return (VerifyOutcome::Accepted, ch);
    }
    let max = policy.max_attempts;
    let wrong = p.wrong_tries.saturating_add(1);
    let lock = wrong >= max;
    ch.parcels.push(ParcelChange::Tries(TryCount {
        parcel_id: pid.clone(),
        wrong_tries: wrong,
        locked: lock,
    }));
    ch.event(
        pid,
        EventKind::WrongCode,
        format!("online try {wrong} of {max} failed (device {did})"),
    );
    let signal = |kind, detail: String| NewSignal {
        kind,
        parcel_id: pid.clone(),
        device_id: Some(did.clone()),
        confirmation_id: None,
        day: t.delivery_date,
        detail,
        code_matched: None,
    };
    if wrong == policy.many_tries_threshold {
        ch.signals.push(signal(
            SignalKind::ManyWrongTries,
            format!("{wrong} wrong online tries for attempt {}", t.attempt),
        ));
    }
    if lock {
        ch.signals.push(signal(
            SignalKind::VerifyLockout,
            format!("locked after {wrong} wrong online tries"),
        ));
        ch.event(
            pid,
            EventKind::Locked,
            "too many wrong codes; dispatch can reissue",
        );
        return (VerifyOutcome::Locked, ch);
    }
    (
        VerifyOutcome::Rejected {
            attempts_left: max - wrong,
        },
        ch,
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::super::testing::*;
    use super::*;

    fn facts() -> VerifyFacts {
        VerifyFacts {
            parcel: Some(parcel("P-1")),
            on_manifest: true,
            device_courier: "C-1".into(),
        }
    }

    fn input(ok: bool) -> VerifyInput {
        VerifyInput {
            device_id: "D-1".into(),
            parcel_id: "P-1".into(),
            target: Target {
                delivery_date: day(23),
                attempt: 1,
            },
            ok,
        }
    }

    fn with_tries(n: u32) -> ParcelFacts {
        ParcelFacts {
            wrong_tries: n,
            ..parcel("P-1")
        }
    }

    #[test]
    fn a_try_is_for_the_current_attempt_on_the_day() {
        let t = target(&facts(), at(23, 9, 0), &policy()).unwrap();
        assert_eq!((t.delivery_date, t.attempt), (day(23), 1));
    }

    #[test]
    fn before_its_day_a_code_is_refused_and_after_it_too() {
        let p = policy();
        assert_eq!(
            target(&facts(), at(22, 23, 0), &p),
            Err(Refused::NotYetValid(at(23, 0, 0)))
        );
        assert_eq!(
            target(&facts(), at(24, 0, 0), &p),
            Err(Refused::Expired(at(24, 0, 0)))
        );
    }

    #[test]
    fn only_a_device_of_the_current_courier_may_try() {
        let mut f = facts();
        f.device_courier = "C-2".into();
        assert_eq!(
            target(&f, at(23, 9, 0), &policy()),
            Err(Refused::NotOnCurrentRoute)
        );
        let mut f = facts();
        f.on_manifest = false;
        assert_eq!(
            target(&f, at(23, 9, 0), &policy()),
            Err(Refused::NotOnManifest)
        );
        let mut f = facts();
        f.parcel.as_mut().unwrap().requires_code = false;
        assert_eq!(
            target(&f, at(23, 9, 0), &policy()),
            Err(Refused::NoCodeRequired)
        );
    }

    #[test]
    fn a_right_code_is_accepted_and_not_counted() {
        let (out, ch) = decide(Some(&parcel("P-1")), &input(true), &policy());
        assert_eq!(out, VerifyOutcome::Accepted);
        assert!(ch.parcels.is_empty());
        assert_eq!(ch.events[0].kind, EventKind::VerifiedOnline);
    }

    #[test]
    fn a_wrong_code_is_counted() {
        let (out, ch) = decide(Some(&with_tries(1)), &input(false), &policy());
        assert_eq!(out, VerifyOutcome::Rejected { attempts_left: 3 });
        assert_eq!(
            ch.parcels,
            [ParcelChange::Tries(TryCount {
                parcel_id: "P-1".into(),
                wrong_tries: 2,
                locked: false
            })]
        );
        assert!(ch.signals.is_empty());
    }

    #[test]
    fn the_third_wrong_online_try_is_many_wrong_tries_without_a_lockout() {
        let (out, ch) = decide(Some(&with_tries(2)), &input(false), &policy());
        assert_eq!(out, VerifyOutcome::Rejected { attempts_left: 2 });
        assert_eq!(ch.signals.len(), 1);
        assert_eq!(ch.signals[0].kind, SignalKind::ManyWrongTries);
        let (_, ch) = decide(Some(&with_tries(3)), &input(false), &policy());
        assert!(ch.signals.is_empty(), "raised once, at the threshold");
    }

    #[test]
    fn max_attempts_wrong_tries_lock_and_raise_verify_lockout() {
        let (out, ch) = decide(Some(&with_tries(4)), &input(false), &policy());
        assert_eq!(out, VerifyOutcome::Locked);
        assert_eq!(ch.signals[0].kind, SignalKind::VerifyLockout);
        assert!(matches!(
            ch.parcels[0],
            ParcelChange::Tries(TryCount { locked: true, .. })
        ));
        let locked = ParcelFacts {
            locked: true,
            ..parcel("P-1")
        };
        let (out, ch) = decide(Some(&locked), &input(true), &policy());
        assert_eq!(out, VerifyOutcome::Locked, "even with the right code");
        assert_eq!(ch, Changes::default());
    }

    #[test]
    fn a_try_for_an_attempt_that_moved_is_stale() {
        let moved = ParcelFacts {
            attempt: 2,
            ..parcel("P-1")
        };
        assert_eq!(
            decide(Some(&moved), &input(false), &policy()).0,
            VerifyOutcome::Stale
        );
        assert_eq!(
            decide(None, &input(false), &policy()).0,
            VerifyOutcome::Stale
        );
    }
}
