//! The handset store's rules, on real SQLite files.

use super::support::{Courier, contains};
use chrono::{Duration, Utc};
use doorcode_core::confirmation::{FailReason, Outcome, Verified, open_confirmation};
use doorcode_core::envelope::{Envelope, SigningKey};
use doorcode_core::handset::Handset;
use doorcode_core::input::{InputError, Language};
use doorcode_core::secrets::MemorySecretStore;
use doorcode_core::store::{Installed, ParcelState, VerifyOutcome, db, schema};
use doorcode_core::testkit::{ManifestSpec, TestDepot, parcel_id};
use doorcode_core::{Error, b64};
use std::sync::Arc;

/// Four stops of two parcels; every fourth parcel needs no code.
fn fixture() -> Courier {
    let mut c = Courier::new(4, 2);
    c.spec.no_code_every = 4;
    c
}

#[test]
fn install_then_unchanged_then_newer() {
    let mut f = fixture();
    let env = f.envelope();
    assert!(matches!(
        f.h.install_manifest(&env).unwrap(),
        Installed::New {
            stops: 4,
            parcels: 8,
            ..
        }
    ));
    // The same signed bytes again (a sync without a 304): nothing changes.
    assert!(matches!(
        f.h.install_manifest(&env).unwrap(),
        Installed::Unchanged { revision: 1, .. }
    ));
    f.spec.revision = 2;
    assert!(matches!(
        f.install().unwrap(),
        Installed::New { revision: 2, .. }
    ));
    let stops = f.h.stops().unwrap();
    assert_eq!(stops.len(), 4);
    assert_eq!(stops[0].sequence, 1);
    assert_eq!(stops.iter().map(|s| s.parcels.len()).sum::<usize>(), 8);
    assert_eq!(
        stops
            .iter()
            .flat_map(|s| &s.parcels)
            .filter(|p| !p.requires_code)
            .count(),
        2
    );
}

/// A depot that re-signs changed content without a new revision (here the
/// same revision rebuilt: fresh salts, same manifest id) is refused with its
/// own error, and the day the handset holds stays as it was.
#[test]
fn the_same_revision_with_other_bytes_is_a_conflict_and_the_held_day_stays() {
    let f = fixture();
    let env = f.envelope();
    f.h.install_manifest(&env).unwrap();
    let pid = parcel_id(0, 0);
    f.h.verify(&pid, &f.wrong_code(&pid)).unwrap();
    let before = f.h.stops().unwrap();
    let rebuilt = f.envelope();
    assert_ne!(rebuilt.body, env.body);
    let e = f.h.install_manifest(&rebuilt).unwrap_err();
    assert!(
        matches!(e, Error::ManifestConflict { revision: 1 }),
        "{e:?}"
    );
    assert!(e.to_string().contains("new revision"), "{e}");
    // A different manifest id at the same revision is the same conflict.
    assert!(matches!(
        f.install_forked(),
        Err(Error::ManifestConflict { revision: 1 })
    ));
    assert_eq!(f.h.stops().unwrap(), before);
    // The held bytes are still unchanged, and the held tags still check codes.
    assert!(matches!(
        f.h.install_manifest(&env).unwrap(),
        Installed::Unchanged { .. }
    ));
    f.assert_accepts(&pid, &f.code(&pid));
}

/// A watermark kept before body digests existed (migration 3) has none: the
/// manifest id decides, as it did, until the next revision brings a digest.
#[test]
fn a_watermark_from_before_body_digests_compares_manifest_ids() {
    let mut f = fixture();
    let env = f.envelope();
    f.h.install_manifest(&env).unwrap();
    f.h.with_store(|s| {
        s.connection()
            .execute("UPDATE revisions SET body_sha256 = NULL", [])?;
        Ok(())
    })
    .unwrap();
    assert!(matches!(
        f.h.install_manifest(&env).unwrap(),
        Installed::Unchanged { .. }
    ));
    assert!(matches!(
        f.install_forked(),
        Err(Error::ManifestConflict { revision: 1 })
    ));
    f.spec.revision = 2;
    f.install().unwrap();
    let digest: Option<Vec<u8>> =
        f.h.with_store(|s| {
            Ok(s.connection()
                .query_row("SELECT body_sha256 FROM revisions", [], |r| r.get(0))?)
        })
        .unwrap();
    assert_eq!(digest.map(|d| d.len()), Some(32));
}

/// Fields this handset does not know are ignored, so a depot can add an
/// optional one; none of them reaches the database.
#[test]
fn unknown_manifest_fields_are_ignored_and_never_stored() {
    let f = fixture();
    let m = f.depot.manifest(&f.spec);
    let mut v = serde_json::to_value(&m).unwrap();
    v["courier_phone"] = "+4930999111".into();
    v["route_colour"] = serde_json::json!({"name": "UNKNOWN-ROUTE-COLOUR", "rgb": [1, 2, 3]});
    for stop in v["stops"].as_array_mut().unwrap() {
        stop["door_note"] = "UNKNOWN-DOOR-NOTE behind the bins".into();
        for p in stop["parcels"].as_array_mut().unwrap() {
            p["declared_value"] = "UNKNOWN-VALUE-129.99".into();
            p["hold"] = false.into();
        }
    }
    assert!(matches!(
        f.h.install_manifest(&f.depot.seal_json(&v)).unwrap(),
        Installed::New {
            stops: 4,
            parcels: 8,
            ..
        }
    ));
    let pid = parcel_id(0, 0);
    assert_eq!(f.parcel(&pid), (ParcelState::Pending, 0));
    f.assert_accepts(&pid, &f.code(&pid));
    let bytes = f.file_bytes();
    for secret in [
        "+4930999111",
        "UNKNOWN-ROUTE-COLOUR",
        "UNKNOWN-DOOR-NOTE",
        "UNKNOWN-VALUE",
        "courier_phone",
        "door_note",
    ] {
        assert!(
            !contains(&bytes, secret),
            "{secret} reached the handset's files"
        );
    }
    // A field this build knows, with the wrong type, is still refused.
    v["revision"] = 2.into();
    v["stops"][0]["parcels"][0]["hold"] = "yes".into();
    assert!(matches!(
        f.h.install_manifest(&f.depot.seal_json(&v)),
        Err(Error::BadManifest(_))
    ));
}

/// `"hold": true` (the customer said they did not order it): no verify, no
/// handover, no try counted, and only `refused` may be recorded.
#[test]
fn a_held_parcel_is_not_verified_or_handed_over_and_fails_only_as_refused() {
    let mut f = fixture();
    f.install().unwrap();
    let (a, free, locked) = (parcel_id(0, 0), parcel_id(1, 1), parcel_id(2, 0));
    f.h.verify(&a, &f.wrong_code(&a)).unwrap();
    for w in f.wrong_codes(&locked, 5) {
        f.h.verify(&locked, &w).unwrap();
    }
    assert_eq!(f.parcel(&locked).0, ParcelState::Locked);

    // The customer of A, of the no-code parcel and of the locked one press
    // "I did not order this"; the next revision holds them.
    f.spec.revision = 2;
    let m = f.depot.manifest(&f.spec);
    f.h.install_manifest(&f.depot.seal_holding(&m, &[&a, &free, &locked]))
        .unwrap();
    let v = f.view(&a);
    assert_eq!(
        (v.state, v.held, v.failed_tries),
        (ParcelState::Held, true, 1)
    );
    assert_eq!(f.parcel(&free).0, ParcelState::Held);
    assert_eq!(f.parcel(&locked).0, ParcelState::Held);
    assert_eq!(f.h.status().unwrap().parcels_held, 3);

    for input in [f.code(&a), f.wrong_code(&a), "four two".to_string()] {
        let e = f.h.verify(&a, &input).unwrap_err();
        assert!(matches!(e, Error::Held(ref p) if *p == a), "{e:?}");
        assert!(
            e.to_string().contains("did not order") && e.to_string().contains("refused"),
            "{e}"
        );
        assert!(!e.to_string().contains(&f.code(&a)));
    }
    assert_eq!(f.view(&a).failed_tries, 1, "no try was counted");
    assert!(matches!(f.h.deliver(&free), Err(Error::Held(_))));
    assert!(matches!(
        f.h.fail(&a, FailReason::CustomerAbsent),
        Err(Error::Held(_))
    ));
    assert!(matches!(
        f.h.fail(&a, FailReason::LockedOut),
        Err(Error::Held(_))
    ));
    assert!(f.h.pending_confirmations(10).unwrap().is_empty());

    let r = f.h.fail(&a, FailReason::Refused).unwrap();
    assert_eq!(r.outcome, Outcome::Failed);
    let v = f.view(&a);
    assert_eq!(
        (v.state, v.held, v.reason),
        (ParcelState::Failed, true, Some(FailReason::Refused))
    );
    assert!(matches!(
        f.h.verify(&a, &f.code(&a)),
        Err(Error::AlreadyRecorded { .. })
    ));
    f.h.fail(&free, FailReason::Refused).unwrap();
    // Locked before the hold came: locked_out is still allowed.
    f.h.fail(&locked, FailReason::LockedOut).unwrap();
    assert_eq!(f.h.status().unwrap().parcels_held, 0);
    assert_eq!(f.h.pending_confirmations(10).unwrap().len(), 3);

    // Dispatch releases a parcel with a reissue: a new attempt, no hold.
    let b = parcel_id(0, 1);
    f.spec.revision = 3;
    let m = f.depot.manifest(&f.spec);
    f.h.install_manifest(&f.depot.seal_holding(&m, &[&b]))
        .unwrap();
    assert_eq!(f.parcel(&b).0, ParcelState::Held);
    f.spec.revision = 4;
    f.spec.attempt = 2;
    f.install().unwrap();
    assert_eq!(f.parcel(&b).0, ParcelState::Pending);
    f.assert_accepts(&b, &f.code(&b));
    f.reopen();
    assert!(!f.view(&b).held);
}

#[test]
fn install_refusals_are_distinct_and_leave_the_store_alone() {
    let mut f = fixture();
    f.spec.revision = 5;
    f.install().unwrap();
    let before = f.h.stops().unwrap();

    // Bad signature: a body changed after signing.
    let m = f.depot.manifest(&f.spec);
    let mut env = f.depot.seal(&m);
    let mut body = b64::decode(&env.body).unwrap();
    let n = body.len();
    body[n - 3] ^= 1;
    env.body = b64::encode(&body);
    assert!(matches!(
        f.h.install_manifest(&env),
        Err(Error::BadSignature)
    ));

    // Unknown key.
    let other = SigningKey::from_seed("k-other", [3; 32]).unwrap();
    let mut m6 = f.depot.manifest(&f.spec);
    m6.revision = 6;
    let env = m6.seal(&other).unwrap();
    assert!(matches!(f.h.install_manifest(&env), Err(Error::UnknownKey(k)) if k == "k-other"));
    // A trusted kid but the wrong key's signature is a bad signature.
    let impostor = SigningKey::from_seed("k-test", [3; 32]).unwrap();
    assert!(matches!(
        f.h.install_manifest(&m6.seal(&impostor).unwrap()),
        Err(Error::BadSignature)
    ));

    // Wrong device.
    let mut spec = f.spec.clone();
    spec.device_id = "d-2".into();
    spec.revision = 7;
    let env = f.depot.seal(&f.depot.manifest(&spec));
    assert!(matches!(
        f.h.install_manifest(&env),
        Err(Error::WrongDevice { .. })
    ));

    // Rollback.
    let mut spec = f.spec.clone();
    spec.revision = 4;
    let env = f.depot.seal(&f.depot.manifest(&spec));
    assert!(matches!(
        f.h.install_manifest(&env),
        Err(Error::Rollback {
            held: 5,
            offered: 4
        })
    ));

    // Expired.
    let mut spec = f.spec.clone();
    spec.revision = 8;
    spec.valid_from = Utc::now() - Duration::hours(30);
    spec.valid_until = Utc::now() - Duration::hours(1);
    let env = f.depot.seal(&f.depot.manifest(&spec));
    assert!(matches!(
        f.h.install_manifest(&env),
        Err(Error::ManifestExpired)
    ));

    // Unknown format: signed correctly, but format 2.
    let mut m = f.depot.manifest(&f.spec);
    m.revision = 9;
    let mut v = serde_json::to_value(&m).unwrap();
    v["format"] = 2.into();
    let env = f.depot.server_key.seal(
        doorcode_core::envelope::Context::Manifest,
        &serde_json::to_vec(&v).unwrap(),
    );
    assert!(matches!(
        f.h.install_manifest(&env),
        Err(Error::UnknownFormat(2))
    ));

    // A confirmation-context signature over a manifest body is refused too.
    let body = serde_json::to_vec(&f.depot.manifest(&f.spec)).unwrap();
    let env = f
        .depot
        .server_key
        .seal(doorcode_core::envelope::Context::Confirmation, &body);
    assert!(matches!(
        f.h.install_manifest(&env),
        Err(Error::BadSignature)
    ));

    assert_eq!(f.h.stops().unwrap(), before, "refusals changed the store");
}

#[test]
fn verify_accepts_the_code_and_records_a_signed_confirmation() {
    let f = fixture();
    f.install().unwrap();
    let pid = parcel_id(0, 0);
    let spoken = f
        .code(&pid)
        .chars()
        .map(|c| format!("{c} "))
        .collect::<String>();
    let out = f.h.verify(&pid, &spoken).unwrap();
    assert!(
        matches!(
            out,
            VerifyOutcome::Accepted {
                seq: 1,
                verified: Verified::Offline,
                ..
            }
        ),
        "{out:?}"
    );
    assert_eq!(f.parcel(&pid), (ParcelState::Delivered, 0));

    let pending = f.h.pending_confirmations(10).unwrap();
    assert_eq!(pending.len(), 1);
    let device_key = SigningKey::from_seed(
        "d-1",
        f.h.secrets()
            .get("device-key")
            .unwrap()
            .unwrap()
            .try_into()
            .unwrap(),
    )
    .unwrap()
    .public_key();
    let c = open_confirmation(&pending[0].envelope, &device_key).unwrap();
    assert_eq!(c.parcel_id, pid);
    assert_eq!(c.seq, 1);
    assert_eq!(c.outcome, Outcome::Delivered);
    assert_eq!(c.code.as_ref().unwrap().expose(), f.code(&pid));
    assert_eq!(c.verified, Verified::Offline);
    assert_eq!(c.revision, 1);

    // A second verify of a recorded parcel is an error, not a try.
    assert!(matches!(
        f.h.verify(&pid, &f.code(&pid)),
        Err(Error::AlreadyRecorded { .. })
    ));
}

#[test]
fn unreadable_input_is_not_a_try() {
    let f = fixture();
    f.install().unwrap();
    let pid = parcel_id(0, 0);
    assert!(matches!(
        f.h.verify(&pid, "12345"),
        Err(Error::Input(InputError::WrongLength { .. }))
    ));
    assert!(matches!(
        f.h.verify(&pid, "four two banana"),
        Err(Error::Input(InputError::UnknownWord { position: 3, .. }))
    ));
    assert!(matches!(
        f.h.verify(&pid, ""),
        Err(Error::Input(InputError::Empty))
    ));
    assert_eq!(f.parcel(&pid), (ParcelState::Pending, 0));
    assert!(matches!(
        f.h.verify("P-nope", "123456"),
        Err(Error::UnknownParcel(_))
    ));
}

#[test]
fn spoken_codes_are_read_in_the_chosen_languages_and_others_are_not_a_try() {
    let f = fixture();
    f.install().unwrap();
    let say = |code: &str, words: [&str; 10]| -> String {
        code.bytes()
            .map(|b| words[usize::from(b - b'0')])
            .collect::<Vec<_>>()
            .join(" ")
    };
    const ES: [&str; 10] = [
        "cero", "uno", "dos", "tres", "cuatro", "cinco", "seis", "siete", "ocho", "nueve",
    ];
    const EN: [&str; 10] = [
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    ];
    let (a, b) = (parcel_id(0, 0), parcel_id(0, 1));
    assert_eq!(f.h.languages().unwrap(), vec![Language::English]);

    // English only (the default): Spanish words are unreadable, not a try.
    let e = f.h.verify(&a, &say(&f.code(&a), ES)).unwrap_err();
    assert!(
        matches!(&e, Error::Input(InputError::OtherLanguage { languages, .. }) if languages.contains(&Language::Spanish)),
        "{e:?}"
    );
    assert!(!e.to_string().contains(&f.code(&a)), "{e}");
    assert_eq!(f.parcel(&a), (ParcelState::Pending, 0));

    // The app chooses Spanish, then English: both read.
    f.h.set_languages(&[Language::Spanish, Language::English, Language::Spanish])
        .unwrap();
    assert_eq!(
        f.h.languages().unwrap(),
        vec![Language::Spanish, Language::English]
    );
    f.assert_accepts(&a, &say(&f.code(&a), ES));
    // Spanish only: English words are now the unreadable ones.
    f.h.set_languages(&[Language::Spanish]).unwrap();
    let e = f.h.verify(&b, &say(&f.code(&b), EN)).unwrap_err();
    assert!(
        matches!(e, Error::Input(InputError::OtherLanguage { .. })),
        "{e:?}"
    );
    assert_eq!(f.parcel(&b), (ParcelState::Pending, 0));
    // Digits read in every language.
    f.h.set_languages(&[]).unwrap();
    assert_eq!(f.h.languages().unwrap(), vec![Language::English]);
    f.assert_accepts(&b, &f.code(&b));
}

#[test]
fn wrong_tries_count_lock_and_survive_a_new_revision() {
    let mut f = fixture();
    f.install().unwrap();
    let pid = parcel_id(1, 0);
    let bad = f.wrong_code(&pid);
    for left in (1..5).rev() {
        let out = f.h.verify(&pid, &bad).unwrap();
        assert_eq!(
            out,
            VerifyOutcome::Rejected {
                parcel_id: pid.clone(),
                attempts_left: left,
                verified: Verified::Offline
            }
        );
    }
    // A re-sync of the same attempt keeps the count.
    f.spec.revision = 2;
    f.install().unwrap();
    assert_eq!(f.parcel(&pid), (ParcelState::Pending, 4));
    assert_eq!(
        f.h.verify(&pid, &bad).unwrap(),
        VerifyOutcome::Locked {
            parcel_id: pid.clone(),
            verified: Verified::Offline
        }
    );
    assert_eq!(f.parcel(&pid), (ParcelState::Locked, 5));
    // Locked: even the right code is refused, and only locked_out may be recorded.
    assert!(matches!(
        f.h.verify(&pid, &f.code(&pid)),
        Err(Error::Locked(_))
    ));
    assert!(matches!(
        f.h.fail(&pid, FailReason::CustomerAbsent),
        Err(Error::ReasonNotAllowed { locked: true, .. })
    ));

    // A newer manifest with a new attempt unlocks it with a new code.
    f.spec.revision = 3;
    f.spec.attempt = 2;
    f.install().unwrap();
    assert_eq!(f.parcel(&pid), (ParcelState::Pending, 0));
    f.assert_accepts(&pid, &f.code(&pid));
}

#[test]
fn failures_and_no_code_deliveries() {
    let f = fixture();
    f.install().unwrap();
    let pid = parcel_id(2, 0);
    assert!(matches!(
        f.h.fail(&pid, FailReason::LockedOut),
        Err(Error::ReasonNotAllowed { locked: false, .. })
    ));
    let r = f.h.fail(&pid, FailReason::CustomerAbsent).unwrap();
    assert_eq!(r.outcome, Outcome::Failed);
    assert_eq!(f.parcel(&pid), (ParcelState::Failed, 0));
    assert!(matches!(
        f.h.fail(&pid, FailReason::Refused),
        Err(Error::AlreadyRecorded { .. })
    ));

    // Parcel number 4 (stop 1, parcel 1) needs no code.
    let free = parcel_id(1, 1);
    assert!(matches!(
        f.h.deliver(&parcel_id(0, 0)),
        Err(Error::CodeRequired(_))
    ));
    let r = f.h.deliver(&free).unwrap();
    assert_eq!(r.seq, 2);
    assert_eq!(f.parcel(&free), (ParcelState::Delivered, 0));
}

#[test]
fn outbox_seq_ack_reject_and_wipe() {
    let f = fixture();
    f.install().unwrap();
    let mut ids = Vec::new();
    for (i, pid) in [parcel_id(0, 0), parcel_id(0, 1), parcel_id(2, 0)]
        .iter()
        .enumerate()
    {
        let r = f.h.fail(pid, FailReason::CustomerAbsent).unwrap();
        assert_eq!(r.seq, i as u64 + 1);
        ids.push(r.confirmation_id);
    }
    let p = f.h.pending_confirmations(10).unwrap();
    assert_eq!(p.iter().map(|i| i.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(f.h.pending_confirmations(2).unwrap().len(), 2);

    f.h.acknowledge(&ids[..1]).unwrap();
    f.h.reject(&ids[1], "parcel_not_on_manifest", true).unwrap();
    f.h.reject(&ids[2], "server busy", false).unwrap();
    let p = f.h.pending_confirmations(10).unwrap();
    assert_eq!(
        p.len(),
        1,
        "ack'd and permanently rejected items leave the queue; a temporary one stays"
    );
    assert_eq!(p[0].upload_tries, 1);
    let rejected = f.h.rejected_confirmations().unwrap();
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].reason, "parcel_not_on_manifest");

    // An acknowledged confirmation no longer holds its envelope.
    let held: Option<String> =
        f.h.with_store(|s| {
            Ok(s.connection()
                .query_row("SELECT envelope FROM outbox WHERE seq = 1", [], |r| {
                    r.get(0)
                })?)
        })
        .unwrap();
    assert!(held.is_none());

    // After the day: not wiped while one confirmation waits, wiped after.
    f.clock.advance(Duration::hours(30));
    assert!(f.h.wipe_past().unwrap().is_empty());
    assert_eq!(f.h.status().unwrap().manifests, 1);
    f.h.acknowledge(&ids[2..]).unwrap();
    assert_eq!(f.h.wipe_past().unwrap().len(), 1);
    let st = f.h.status().unwrap();
    assert_eq!(st.manifests, 0);
    assert_eq!(st.outbox_pending, 0);
    assert_eq!(
        st.outbox_rejected, 1,
        "a permanent rejection is kept and shown"
    );
    assert_eq!(st.next_seq, 4);
    // seq is never reused after a wipe.
    f.clock.advance(Duration::hours(-30));
    let mut spec = f.spec.clone();
    spec.date = spec.date.succ_opt().unwrap();
    spec.valid_until += Duration::hours(48);
    f.h.install_manifest(&f.depot.seal(&f.depot.manifest(&spec)))
        .unwrap();
    assert_eq!(
        f.h.fail(&parcel_id(3, 0), FailReason::Damaged).unwrap().seq,
        4
    );
}

#[test]
fn a_wiped_day_cannot_be_rolled_back_in() {
    let f = fixture();
    let env: Envelope = f.depot.seal(&f.depot.manifest(&f.spec));
    f.h.install_manifest(&env).unwrap();
    let mut newer = f.spec.clone();
    newer.revision = 2;
    f.h.install_manifest(&f.depot.seal(&f.depot.manifest(&newer)))
        .unwrap();
    f.clock.advance(Duration::hours(30));
    assert_eq!(f.h.wipe_past().unwrap().len(), 1);
    f.clock.advance(Duration::hours(-30));
    assert!(matches!(
        f.h.install_manifest(&env),
        Err(Error::Rollback {
            held: 2,
            offered: 1
        })
    ));
}

#[test]
fn expired_manifest_refuses_verify() {
    let f = fixture();
    f.install().unwrap();
    f.clock.advance(Duration::hours(30));
    let pid = parcel_id(0, 0);
    assert!(matches!(
        f.h.verify(&pid, &f.code(&pid)),
        Err(Error::ManifestExpired)
    ));
    assert!(f.h.stops().unwrap().is_empty());
}

#[test]
fn not_enrolled_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let h = Handset::open(
        &dir.path().join("h.db"),
        Arc::new(MemorySecretStore::default()),
    )
    .unwrap();
    let depot = TestDepot::new();
    let env = depot.seal(&depot.manifest(&ManifestSpec::today("d-1", 1, 1)));
    assert!(matches!(h.install_manifest(&env), Err(Error::NotEnrolled)));
    assert!(matches!(
        h.fail("P", FailReason::Other),
        Err(Error::NotEnrolled)
    ));
}

#[test]
fn state_survives_reopen() {
    let mut f = Courier::new(2, 1);
    f.install().unwrap();
    let pid = parcel_id(0, 0);
    f.h.verify(&pid, &f.wrong_code(&pid)).unwrap();
    // The app is killed and started again on the same file.
    f.reopen();
    let p = f.view(&pid);
    assert_eq!(p.failed_tries, 1);
    assert_eq!(p.attempts_left, 4);
}

/// The schema as SQLite describes it: tables with their columns, and indexes.
fn schema_of(conn: &rusqlite::Connection) -> Vec<String> {
    let mut out = Vec::new();
    let mut stmt = conn
        .prepare("SELECT type, name, tbl_name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name")
        .unwrap();
    let objects: Vec<(String, String, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for (ty, name, table) in objects {
        out.push(format!("{ty} {name} on {table}"));
        let pragma = if ty == "table" {
            "table_info"
        } else {
            "index_info"
        };
        let mut cols = conn.prepare(&format!("PRAGMA {pragma}('{name}')")).unwrap();
        let n = cols.column_count();
        let rows = cols
            .query_map([], |r| {
                let mut v = Vec::new();
                for i in 0..n {
                    v.push(format!("{:?}", r.get_ref(i)?));
                }
                Ok(v.join("|"))
            })
            .unwrap();
        out.extend(rows.map(Result::unwrap));
    }
    out.push(format!(
        "user_version {}",
        conn.query_row("PRAGMA user_version", [], |r| r.get::<_, u32>(0))
            .unwrap()
    ));
    out
}

#[test]
fn upgraded_database_equals_a_fresh_one() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old.db");
    {
        let conn = db::open_at_version(&old, 1).unwrap();
        conn.execute_batch(
            "INSERT INTO manifests VALUES ('R-1','2026-11-23','m-1',3,'C-1','2026-11-23T00:00:00.000Z',
                 '2026-11-24T00:00:00.000Z',12,5,6,'2026-11-23T05:00:00.000Z');",
        )
        .unwrap();
    }
    let upgraded = db::open(&old).unwrap();
    let fresh = db::open(&dir.path().join("fresh.db")).unwrap();
    assert_eq!(schema_of(&upgraded), schema_of(&fresh));
    assert_eq!(schema::LATEST, 3);
    // The migration carried the held revision into the rollback watermark.
    let rev: u64 = upgraded
        .query_row("SELECT revision FROM revisions", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rev, 3);
    let mode: String = fresh
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    let sync: i64 = fresh
        .query_row("PRAGMA synchronous", [], |r| r.get(0))
        .unwrap();
    assert_eq!((mode.as_str(), sync), ("wal", 2));
}

#[test]
fn the_database_never_holds_a_code_the_courier_did_not_type() {
    let f = fixture();
    f.install().unwrap();
    let pid = parcel_id(0, 0);
    let wrong_code = f.wrong_code(&pid);
    f.h.verify(&pid, &wrong_code).unwrap();
    let bytes = f.file_bytes();
    for i in 0..4 {
        for j in 0..2 {
            let p = parcel_id(i, j);
            assert!(
                !contains(&bytes, &f.code(&p)),
                "code of {p} found in the handset files"
            );
        }
    }
    assert!(!contains(&bytes, &wrong_code), "a wrong try was stored");
}

#[test]
fn sign_out_refuses_pending_uploads_then_wipes_secrets_and_rows() {
    use doorcode_core::secrets::{DEVICE_KEY, DEVICE_TOKEN};
    let f = fixture();
    f.install().unwrap();
    f.h.secrets().put(DEVICE_TOKEN, b"t").unwrap();
    f.h.fail(&parcel_id(0, 0), FailReason::CustomerAbsent)
        .unwrap();
    assert!(matches!(f.h.sign_out(false), Err(Error::PendingUploads(1))));
    assert!(!f.h.stops().unwrap().is_empty());

    f.h.sign_out(true).unwrap();
    assert!(f.h.secrets().get(DEVICE_KEY).unwrap().is_none());
    assert!(f.h.secrets().get(DEVICE_TOKEN).unwrap().is_none());
    assert!(f.h.stops().unwrap().is_empty());
    assert!(f.h.identity().unwrap().is_none());
    let s = f.h.status().unwrap();
    assert_eq!(
        (s.manifests, s.outbox_pending, s.next_seq > 1),
        (0, 0, false)
    );
    let rows: u32 =
        f.h.with_store(|s| {
            Ok(s.connection().query_row(
                "SELECT (SELECT count(*) FROM outbox) + (SELECT count(*) FROM parcels)
                      + (SELECT count(*) FROM meta) + (SELECT count(*) FROM server_keys)",
                [],
                |r| r.get(0),
            )?)
        })
        .unwrap();
    assert_eq!(rows, 0);
    assert!(matches!(
        f.h.fail(&parcel_id(0, 1), FailReason::CustomerAbsent),
        Err(Error::NotEnrolled | Error::UnknownParcel(_))
    ));
}
