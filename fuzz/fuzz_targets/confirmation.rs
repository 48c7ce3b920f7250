//! Confirmation bodies (`core/src/confirmation.rs`). The fuzz bytes are signed
//! with a fixed device key first, so every input reaches the body parser and
//! its rules; an accepted body names the signing device and survives a
//! re-seal round trip.
#![no_main]

use doorcode_core::confirmation::{Confirmation, Outcome, Verified, open_confirmation};
use doorcode_core::envelope::{Context, SigningKey};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn device_key() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| SigningKey::from_seed("d-fuzz", [0x42; 32]).unwrap())
}

fuzz_target!(|data: &[u8]| {
    let k = device_key();
    let public = k.public_key();
    let env = k.seal(Context::Confirmation, data);
    let Ok(c) = open_confirmation(&env, &public) else {
        return;
    };
    c.validate().unwrap();
    assert_eq!(c.device_id, "d-fuzz");
    // The rules DESIGN.md gives for a valid confirmation.
    assert!(c.seq >= 1 && c.attempt >= 1);
    assert_eq!(c.outcome == Outcome::Failed, c.reason.is_some());
    assert_eq!(c.verified != Verified::None, c.code.is_some());
    // Re-sealed by the device, it opens to the same confirmation.
    let resealed = c.seal(k).unwrap();
    assert_eq!(open_confirmation(&resealed, &public).unwrap(), c);
    let body = serde_json::to_vec(&c).unwrap();
    assert_eq!(Confirmation::from_verified_bytes(&body).unwrap(), c);
});
