//! Attacks on the handset itself, each one case: manifests that were
//! tampered with, replayed, rolled back, signed by a key the handset does not
//! pin, or made for another device or day; brute force at the door; and a
//! thief reading the handset's SQLite file. Every refusal leaves what the
//! handset already holds exactly as it was. See docs/SECURITY.md.

use super::support::{Courier, contains, flip};
use chrono::{Duration, Utc};
use doorcode_core::codes::{self, Code};
use doorcode_core::confirmation::FailReason;
use doorcode_core::envelope::{Envelope, SigningKey};
use doorcode_core::manifest::Manifest;
use doorcode_core::store::{ParcelState, StopView, VerifyOutcome};
use doorcode_core::testkit::{TestDepot, parcel_id};
use doorcode_core::{Error, b64};

/// An enrolled handset holding revision 2 of today's manifest.
fn courier() -> Courier {
    let mut c = Courier::new(3, 2);
    c.spec.revision = 2;
    c.install().unwrap();
    c
}

fn seal_with(m: &Manifest, key: &SigningKey) -> Envelope {
    m.seal(key).unwrap()
}

#[test]
fn manifest_with_any_flipped_byte_is_refused_and_the_held_day_stays() {
    let c = courier();
    let before: Vec<StopView> = c.h.stops().unwrap();
    let mut newer = c.spec.clone();
    newer.revision = 3;
    newer.attempt = 2;
    let env = c.depot.seal(&c.depot.manifest(&newer));
    let body_len = b64::decode(&env.body).unwrap().len();
    let mut tried = 0;
    for at in [0, 1, body_len / 3, body_len / 2, body_len - 2, body_len - 1] {
        let r = c.h.install_manifest(&flip(&env, false, at));
        assert!(
            matches!(r, Err(Error::BadSignature)),
            "body byte {at}: {r:?}"
        );
        tried += 1;
    }
    for at in [0, 31, 32, 63] {
        let r = c.h.install_manifest(&flip(&env, true, at));
        assert!(
            matches!(r, Err(Error::BadSignature)),
            "sig byte {at}: {r:?}"
        );
        tried += 1;
    }
    assert_eq!(tried, 10);
    assert_eq!(
        c.h.stops().unwrap(),
        before,
        "a refusal changed the held day"
    );
    // The held day still works: the real code is accepted against the old tags.
    let pid = parcel_id(0, 0);
    c.assert_accepts(&pid, &c.code(&pid));
    // And the untampered envelope installs: the refusals were about the flips.
    assert!(c.h.install_manifest(&env).is_ok());
}

#[test]
fn older_manifest_replayed_after_a_newer_one_is_refused_as_rollback() {
    let c = courier();
    let pid = parcel_id(1, 0);
    // Revision 1, signed by the real server key, replayed after revision 2.
    let mut old = c.spec.clone();
    old.revision = 1;
    let old_env = c.depot.seal(&c.depot.manifest(&old));
    // Revision 3 carries attempt 2; a lockout under attempt 1 is then moot.
    for w in c.wrong_codes(&pid, 2) {
        c.h.verify(&pid, &w).unwrap();
    }
    let before = c.h.stops().unwrap();
    assert!(matches!(
        c.h.install_manifest(&old_env),
        Err(Error::Rollback {
            held: 2,
            offered: 1
        })
    ));
    // Same revision, other content (another manifest id): only a newer one may replace.
    assert!(matches!(
        c.install_forked(),
        Err(Error::ManifestConflict { revision: 2 })
    ));
    assert_eq!(c.h.stops().unwrap(), before);
    assert_eq!(c.parcel(&pid), (ParcelState::Pending, 2), "tries kept");
}

#[test]
fn manifest_signed_by_a_key_the_handset_does_not_pin_is_refused() {
    let c = courier();
    let pid = parcel_id(2, 0);
    for w in c.wrong_codes(&pid, 5) {
        c.h.verify(&pid, &w).unwrap();
    }
    assert_eq!(c.parcel(&pid).0, ParcelState::Locked);
    let before = c.h.stops().unwrap();
    // The attacker wants the locked parcel unlocked: a newer revision with a
    // new attempt, whose tags they made from a code they chose.
    let mut spec = c.spec.clone();
    spec.revision = 9;
    spec.attempt = 7;
    let rogue = TestDepot::from_seeds([1; 32], [2; 32]);
    let m = rogue.manifest(&spec);
    let unknown_kid = SigningKey::from_seed("k-rogue", [2; 32]).unwrap();
    assert!(
        matches!(c.h.install_manifest(&seal_with(&m, &unknown_kid)), Err(Error::UnknownKey(k)) if k == "k-rogue")
    );
    // The pinned key id with another key's signature.
    let same_kid = SigningKey::from_seed("k-test", [2; 32]).unwrap();
    assert!(matches!(
        c.h.install_manifest(&seal_with(&m, &same_kid)),
        Err(Error::BadSignature)
    ));
    assert_eq!(c.h.stops().unwrap(), before);
    assert_eq!(c.parcel(&pid).0, ParcelState::Locked, "still locked");
    let rogue_code = rogue.code(&pid, spec.date, 7);
    assert!(matches!(
        c.h.verify(&pid, rogue_code.expose()),
        Err(Error::Locked(_))
    ));
}

#[test]
fn manifest_for_another_device_is_refused() {
    let c = courier();
    let before = c.h.stops().unwrap();
    // A genuine manifest of the same route and day, built for the courier's
    // other phone (or a colleague's), with a newer revision.
    let mut spec = c.spec.clone();
    spec.device_id = "d-2".into();
    spec.revision = 5;
    let env = c.depot.seal(&c.depot.manifest(&spec));
    assert!(
        matches!(c.h.install_manifest(&env), Err(Error::WrongDevice { manifest_device }) if manifest_device == "d-2")
    );
    assert_eq!(c.h.stops().unwrap(), before);
}

#[test]
fn yesterdays_manifest_replayed_today_is_refused_as_expired() {
    let c = courier();
    let before = c.h.stops().unwrap();
    let now = Utc::now();
    let mut spec = c.spec.clone();
    spec.date = c.spec.date.pred_opt().unwrap();
    spec.revision = 1;
    spec.valid_from = now - Duration::hours(25);
    spec.valid_until = now - Duration::hours(1);
    let env = c.depot.seal(&c.depot.manifest(&spec));
    assert!(matches!(
        c.h.install_manifest(&env),
        Err(Error::ManifestExpired)
    ));
    assert_eq!(c.h.stops().unwrap(), before);
    // A genuine manifest for tomorrow installs, but none of its codes can be
    // tried before its day starts, and trying does not count.
    let mut spec = c.spec.clone();
    spec.route_id = "R-2".into();
    spec.date = c.spec.date.succ_opt().unwrap();
    spec.valid_from = now + Duration::hours(23);
    spec.valid_until = now + Duration::hours(47);
    let tomorrow = c.depot.manifest(&spec);
    let pid = "P-tomorrow";
    let mut m = tomorrow.clone();
    m.stops[0].parcels[0].parcel_id = pid.into();
    let code = c.depot.code(pid, spec.date, 1);
    m.stops[0].parcels[0] =
        doorcode_core::manifest::ManifestParcel::with_code(pid, 1, spec.date, &code, m.tag_bits)
            .unwrap();
    c.h.install_manifest(&c.depot.seal(&m)).unwrap();
    assert!(matches!(
        c.h.verify(pid, code.expose()),
        Err(Error::ManifestNotYetValid)
    ));
}

#[test]
fn wrong_codes_at_the_door_lock_the_parcel_and_then_even_the_right_code_is_refused() {
    let mut c = courier();
    let pid = parcel_id(1, 1);
    let other = parcel_id(0, 1);
    let others_before: Vec<_> = c
        .parcels()
        .into_iter()
        .filter(|p| p.parcel_id != pid)
        .collect();
    let wrong = c.wrong_codes(&pid, 6);
    for (i, w) in wrong[..4].iter().enumerate() {
        let out = c.h.verify(&pid, w).unwrap();
        assert!(
            matches!(out, VerifyOutcome::Rejected { attempts_left, .. } if attempts_left == 4 - i as u32),
            "{out:?}"
        );
        // Killing the app between tries does not reset the count.
        c.reopen();
    }
    // Re-installing the same attempt (a re-sync) does not reset it either.
    let mut resync = c.spec.clone();
    resync.revision = 3;
    c.h.install_manifest(&c.depot.seal(&c.depot.manifest(&resync)))
        .unwrap();
    c.spec = resync;
    assert_eq!(c.parcel(&pid), (ParcelState::Pending, 4));
    assert!(matches!(
        c.h.verify(&pid, &wrong[4]).unwrap(),
        VerifyOutcome::Locked { .. }
    ));
    c.reopen();
    // Locked: the right code, another wrong one and a plain delivery are all refused,
    // and none of them counts or records anything.
    let code = c.code(&pid);
    assert!(matches!(c.h.verify(&pid, &code), Err(Error::Locked(_))));
    assert!(matches!(c.h.verify(&pid, &wrong[5]), Err(Error::Locked(_))));
    assert!(matches!(
        c.h.fail(&pid, FailReason::CustomerAbsent),
        Err(Error::ReasonNotAllowed { locked: true, .. })
    ));
    assert_eq!(c.parcel(&pid), (ParcelState::Locked, 5));
    assert!(
        c.h.pending_confirmations(100).unwrap().is_empty(),
        "wrong tries record no confirmation"
    );
    // Nothing else changed: every other parcel is as it was and still works.
    let others_after: Vec<_> = c
        .parcels()
        .into_iter()
        .filter(|p| p.parcel_id != pid)
        .collect();
    assert_eq!(others_after, others_before);
    c.assert_accepts(&other, &c.code(&other));
    // The one way out at the door: record it as locked out.
    c.h.fail(&pid, FailReason::LockedOut).unwrap();
}

#[test]
fn thief_reading_the_handset_database_finds_tags_not_codes() {
    let c = courier();
    let pid = parcel_id(0, 0);
    let real = c.code(&pid);
    // The thief copies the SQLite file and reads what it holds for the parcel.
    drop(c.h.status());
    let conn = rusqlite::Connection::open(c.db()).unwrap();
    let (salt, tag, date, tag_bits): (Vec<u8>, u32, String, u8) = conn
        .query_row(
            "SELECT p.salt, p.tag, p.delivery_date, m.tag_bits FROM parcels p
             JOIN manifests m USING (route_id, delivery_date) WHERE p.parcel_id = ?1",
            [&pid],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!(tag_bits, 12);
    let salt: [u8; 16] = salt.try_into().unwrap();
    let date = chrono::NaiveDate::parse_from_str(&date, "%Y-%m-%d").unwrap();
    // No code in any file of the handset, in any table.
    let bytes = c.file_bytes();
    for i in 0..3 {
        for j in 0..2 {
            let code = c.code(&parcel_id(i, j));
            assert!(!contains(&bytes, &code), "a code is stored on the handset");
        }
    }
    // Trying all 10^6 codes offline leaves hundreds of equally good guesses
    // (DESIGN: 10^6 / 2^12 ≈ 244), one of them real.
    let mut candidates = 0u32;
    let mut real_among = false;
    for n in 0..1_000_000u32 {
        let guess = Code::new(format!("{n:06}")).unwrap();
        if codes::offline_tag(&salt, &pid, date, &guess, tag_bits).unwrap() == tag {
            candidates += 1;
            real_among |= guess.expose() == real;
        }
    }
    assert!(real_among);
    // Binomial(10^6, 1/4096): mean 244, sd ≈ 15.6; ±6 sd never fails by chance.
    assert!((150..=340).contains(&candidates), "{candidates} candidates");
}
