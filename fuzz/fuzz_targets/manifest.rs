//! Manifest bodies (`core/src/manifest.rs`) and the handset that installs them
//! (`core/src/store`). The fuzz bytes are signed with the fixed server key
//! first, so every input gets past the signature into the body parser and
//! the rules; a body that passes must survive a re-seal round trip, and the
//! handset (a real SQLite file) must install it or refuse it with an error.
#![no_main]

use chrono::{DateTime, TimeZone as _, Utc};
use doorcode_core::Handset;
use doorcode_core::envelope::{Context, SigningKey};
use doorcode_core::handset::Clock;
use doorcode_core::manifest::{self, Manifest};
use doorcode_core::secrets::MemorySecretStore;
use doorcode_core::store::Identity;
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, Mutex, OnceLock};

mod scratch;

/// The server key of the protocol vectors' manifest (kid "k-test").
const SEED: [u8; 32] = [
    0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x2b, 0x2c, 0x2d, 0x2e, 0x2f,
    0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x3b, 0x3c, 0x3d, 0x3e, 0x3f,
];

/// Midday of the vectors' delivery day, so the seed manifest is current.
struct Noon;

impl Clock for Noon {
    fn now(&self) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap()
    }
}

struct Fixture {
    key: SigningKey,
    handset: Mutex<Handset>,
    _dir: tempfile::TempDir,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let key = SigningKey::from_seed("k-test", SEED).unwrap();
        // The handset fsyncs every install.
        let dir = scratch::dir("doorcode-fuzz-manifest");
        let h = Handset::open_with_clock(
            &dir.path().join("handset.db"),
            Arc::new(MemorySecretStore::default()),
            Arc::new(Noon),
        )
        .unwrap();
        h.device_public_key().unwrap();
        h.set_identity(&Identity {
            device_id: "d-test".into(),
            courier_id: "C-42".into(),
            server_keys: vec![key.public_key()],
        })
        .unwrap();
        Fixture {
            key,
            handset: Mutex::new(h),
            _dir: dir,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let keys = [f.key.public_key()];
    let env = f.key.seal(Context::Manifest, data);
    let Ok(m) = manifest::open_manifest(&env, &keys) else {
        return;
    };
    m.validate().unwrap();
    // What the server would send for this manifest opens to the same manifest.
    let resealed = m.seal(&f.key).unwrap();
    assert_eq!(manifest::open_manifest(&resealed, &keys).unwrap(), m);
    let body = serde_json::to_vec(&m).unwrap();
    assert_eq!(Manifest::from_verified_bytes(&body).unwrap(), m);

    // The handset installs it or refuses it, and keeps working either way.
    let h = f.handset.lock().unwrap_or_else(|p| p.into_inner());
    if h.install_manifest(&env).is_ok() {
        let stops = h.stops().unwrap();
        if let Some(p) = m.parcels().next() {
            let _ = h.verify(&p.1.parcel_id, "123456");
        }
        drop(stops);
    }
    h.status().unwrap();
});
