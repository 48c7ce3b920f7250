//! The FFI surface driven from Rust as an app would drive it: each failure
//! reaches the app as the `DoorcodeError` variant it branches on, with core's
//! message. (The same checks run in Kotlin on the JVM, in
//! `android/src/test`; these need no JVM and run with `cargo test`.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use doorcode_core::store::Identity;
use doorcode_core::testkit::{ManifestSpec, TestDepot, parcel_id};
use std::collections::HashMap;
use std::sync::Mutex;

/// A `SecretStore` written against the FFI trait, as an app writes one.
#[derive(Default)]
struct MapStore(Mutex<HashMap<String, Vec<u8>>>);

impl SecretStore for MapStore {
    fn get(&self, name: String) -> Result<Option<Vec<u8>>, SecretStoreError> {
        Ok(self.0.lock().unwrap().get(&name).cloned())
    }
    fn put(&self, name: String, value: Vec<u8>) -> Result<(), SecretStoreError> {
        self.0.lock().unwrap().insert(name, value);
        Ok(())
    }
    fn delete(&self, name: String) -> Result<(), SecretStoreError> {
        self.0.lock().unwrap().remove(&name);
        Ok(())
    }
}

/// A store whose platform keystore is locked.
struct LockedStore;

impl LockedStore {
    fn locked() -> SecretStoreError {
        SecretStoreError::Failed {
            reason: "keystore locked".into(),
        }
    }
}

impl SecretStore for LockedStore {
    fn get(&self, _: String) -> Result<Option<Vec<u8>>, SecretStoreError> {
        Err(Self::locked())
    }
    fn put(&self, _: String, _: Vec<u8>) -> Result<(), SecretStoreError> {
        Err(Self::locked())
    }
    fn delete(&self, _: String) -> Result<(), SecretStoreError> {
        Err(Self::locked())
    }
}

/// Asserts that `e` is the `DoorcodeError` variant the pattern names (a
/// guard may check its message), and shows `e` when it is not.
macro_rules! assert_err {
    ($e:expr, $($pattern:tt)+) => {{
        let e = $e;
        assert!(matches!(e, DoorcodeError::$($pattern)+), "{e:?}");
    }};
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn db(dir: &tempfile::TempDir) -> String {
    dir.path().join("h.db").to_string_lossy().into_owned()
}

/// A handset opened through the FFI in a new directory, enrolled as `d-1`
/// against a new depot and holding today's manifest (32-bit tags, so a
/// wrong code is always a try).
fn enrolled() -> (tempfile::TempDir, TestDepot, Arc<Handset>, ManifestSpec) {
    let dir = tempfile::tempdir().unwrap();
    let depot = TestDepot::new();
    let h = Handset::open(db(&dir), Arc::new(MapStore::default())).unwrap();
    core(&h).device_public_key().unwrap();
    core(&h)
        .set_identity(&Identity {
            device_id: "d-1".into(),
            courier_id: "C-1".into(),
            server_keys: vec![depot.server_key.public_key()],
        })
        .unwrap();
    let mut spec = ManifestSpec::today("d-1", 2, 2);
    spec.tag_bits = 32;
    spec.no_code_every = 4;
    core(&h)
        .install_manifest(&depot.seal(&depot.manifest(&spec)))
        .unwrap();
    (dir, depot, h, spec)
}

fn next_digits(code: &str) -> String {
    code.chars()
        .map(|c| {
            if c == '9' {
                '0'
            } else {
                char::from(c as u8 + 1)
            }
        })
        .collect()
}

#[test]
fn a_handset_not_enrolled_says_so_and_bad_arguments_are_invalid_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let h = Handset::open(db(&dir), Arc::new(MapStore::default())).unwrap();
    let e = block_on(h.sync(None)).unwrap_err();
    assert_err!(e, NotEnrolled(ref m) if m.contains("enroll"));
    let e = h
        .verify_offline("NOPE".into(), "123456".into())
        .unwrap_err();
    assert_err!(e, UnknownParcel(ref m) if m.contains("NOPE"));
    let e = block_on(h.sync(Some("22/11/2026".into()))).unwrap_err();
    assert_err!(e, InvalidArgument(ref m) if m.contains("YYYY-MM-DD"));
    let e = offline_tag(
        "short".into(),
        "P".into(),
        "2026-11-23".into(),
        "123456".into(),
        12,
    )
    .unwrap_err();
    assert_err!(e, InvalidArgument(_));
}

#[test]
fn door_refusals_map_to_locked_not_allowed_already_recorded_and_pending_uploads() {
    let (_dir, depot, h, spec) = enrolled();
    let pid = parcel_id(0, 0);
    let code = depot.code(&pid, spec.date, spec.attempt);
    let wrong = next_digits(code.expose());

    // Unreadable input: InvalidCode, not counted, no digits in the message.
    let e = h.verify_offline(pid.clone(), "12345".into()).unwrap_err();
    assert_err!(e, InvalidCode(ref m) if !m.contains("12345"));
    for left in (1..5).rev() {
        let r = h.verify_offline(pid.clone(), wrong.clone()).unwrap();
        assert_eq!(
            r,
            VerifyResult::Rejected {
                parcel_id: pid.clone(),
                attempts_left: left,
                checked_by: CheckedBy::Offline
            }
        );
    }
    assert!(matches!(
        h.verify_offline(pid.clone(), wrong.clone()).unwrap(),
        VerifyResult::Locked { .. }
    ));
    let e = h
        .verify_offline(pid.clone(), code.expose().into())
        .unwrap_err();
    assert_err!(e, Locked(ref m) if m.contains("locked_out"));
    let e = h.fail(pid.clone(), FailReason::CustomerAbsent).unwrap_err();
    assert_err!(e, NotAllowed(ref m) if m.contains("locked_out"));
    assert!(
        !h.fail(pid.clone(), FailReason::LockedOut)
            .unwrap()
            .delivered
    );
    let e = h.fail(pid.clone(), FailReason::Refused).unwrap_err();
    assert_err!(e, AlreadyRecorded(ref m) if m.contains(&pid));

    // A parcel that needs a code cannot be handed over without one, and one
    // that needs none cannot be checked.
    let e = h.deliver(parcel_id(0, 1)).unwrap_err();
    assert_err!(e, NotAllowed(ref m) if m.contains("verify"));
    let free = parcel_id(1, 1);
    let e = h.verify_offline(free.clone(), "123456".into()).unwrap_err();
    assert_err!(e, NotAllowed(ref m) if m.contains("needs no code"));
    assert!(h.deliver(free).unwrap().delivered);

    // Two outcomes wait for upload: signing out would lose them.
    let e = h.sign_out(false).unwrap_err();
    assert_err!(e, PendingUploads(ref m) if m.contains('2') && m.contains("sync"));
    assert_eq!(h.status().unwrap().outbox_pending, 2);
}

#[test]
fn manifest_refusals_map_to_manifest_with_the_reason() {
    let (_dir, depot, h, spec) = enrolled();
    let mut other = spec.clone();
    other.device_id = "d-2".into();
    other.revision = 2;
    let e = DoorcodeError::from(
        core(&h)
            .install_manifest(&depot.seal(&depot.manifest(&other)))
            .unwrap_err(),
    );
    assert_err!(e, Manifest(ref m) if m.contains("d-2"));
    let rogue = doorcode_core::envelope::SigningKey::from_seed("k-rogue", [5; 32]).unwrap();
    let mut newer = spec.clone();
    newer.revision = 3;
    let e = DoorcodeError::from(
        core(&h)
            .install_manifest(&depot.manifest(&newer).seal(&rogue).unwrap())
            .unwrap_err(),
    );
    assert_err!(e, Manifest(ref m) if m.contains("k-rogue"));
}

#[test]
fn a_failing_secret_store_and_an_unreachable_server_reach_the_app_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let h = Handset::open(db(&dir), Arc::new(LockedStore)).unwrap();
    let e = block_on(h.enroll("http://127.0.0.1:9".into(), "X".into(), "x".into())).unwrap_err();
    assert_err!(e, SecretStore(ref m) if m.contains("keystore locked"));

    let dir = tempfile::tempdir().unwrap();
    let h = Handset::open(db(&dir), Arc::new(MapStore::default())).unwrap();
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let e =
        block_on(h.enroll(format!("http://127.0.0.1:{dead}"), "X".into(), "x".into())).unwrap_err();
    assert_err!(e, Offline(ref m) if m.contains("offline"));
}

#[test]
fn the_app_chooses_the_languages_and_other_languages_are_invalid_codes_not_tries() {
    let (_dir, depot, h, spec) = enrolled();
    let pid = parcel_id(0, 0);
    let code = depot.code(&pid, spec.date, spec.attempt);
    const PT: [&str; 10] = [
        "zero", "um", "dois", "três", "quatro", "cinco", "seis", "sete", "oito", "nove",
    ];
    let spoken: Vec<&str> = code
        .expose()
        .bytes()
        .map(|b| PT[usize::from(b - b'0')])
        .collect();
    let spoken = spoken.join(" ");
    assert_eq!(h.languages().unwrap(), vec![Language::English]);
    let e = h.verify_offline(pid.clone(), spoken.clone()).unwrap_err();
    assert_err!(e, InvalidCode(ref m) if m.contains("Portuguese") && !m.contains(code.expose()));
    assert_eq!(h.stops().unwrap()[0].parcels[0].failed_tries, 0);
    h.set_languages(vec![Language::Portuguese, Language::English])
        .unwrap();
    assert_eq!(
        h.languages().unwrap(),
        vec![Language::Portuguese, Language::English]
    );
    assert!(matches!(
        h.verify_offline(pid, spoken).unwrap(),
        VerifyResult::Accepted { .. }
    ));

    assert_eq!(
        read_code_input(
            "cuatro dos siete siete uno cero".into(),
            6,
            vec![Language::Spanish]
        )
        .unwrap(),
        "427710"
    );
    assert_eq!(
        read_code_input("four two seven seven one oh".into(), 6, vec![]).unwrap(),
        "427710"
    );
    assert_eq!(
        language_from_tag("pt-BR".into()),
        Some(Language::Portuguese)
    );
    assert_eq!(language_from_tag("nl".into()), None);
}

/// Keeps every step; fails on purpose when asked, as a buggy UI might.
#[derive(Default)]
struct Steps {
    seen: Mutex<Vec<SyncProgress>>,
    throw: bool,
}

impl SyncListener for Steps {
    fn on_progress(&self, progress: SyncProgress) -> Result<(), SyncListenerError> {
        self.seen.lock().unwrap().push(progress);
        if self.throw {
            return Err(SyncListenerError::Failed {
                reason: "a UI bug".into(),
            });
        }
        Ok(())
    }
}

#[test]
fn sync_progress_ends_with_failed_when_the_sync_cannot_run() {
    let dir = tempfile::tempdir().unwrap();
    let h = Handset::open(db(&dir), Arc::new(MapStore::default())).unwrap();
    for (date, want) in [
        (None, "enroll"),
        (Some("23/11/2026".to_string()), "YYYY-MM-DD"),
    ] {
        let steps = Arc::new(Steps {
            throw: true,
            ..Steps::default()
        });
        let e = block_on(h.sync_with_progress(date, steps.clone())).unwrap_err();
        let seen = steps.seen.lock().unwrap().clone();
        assert!(
            matches!(seen.as_slice(), [SyncProgress::Failed { error }] if error.contains(want) && *error == e.to_string()),
            "{seen:?}"
        );
    }
}
