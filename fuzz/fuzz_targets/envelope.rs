//! Signed envelopes (`core/src/envelope.rs`): any bytes as the envelope JSON
//! are parsed and opened (version, key lookup, base64url, Ed25519) against a
//! fixed key without a panic, and nothing but a real signature opens. The
//! same bytes sealed as a body by that key open back to themselves, in their
//! own context only.
#![no_main]

use doorcode_core::envelope::{self, Context, EnvelopeError, SigningKey};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

/// The server key of the protocol vectors' manifest (kid "k-test").
const SEED: [u8; 32] = [
    0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x2b, 0x2c, 0x2d, 0x2e, 0x2f,
    0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x3b, 0x3c, 0x3d, 0x3e, 0x3f,
];

fn key() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| SigningKey::from_seed("k-test", SEED).unwrap())
}

fuzz_target!(|data: &[u8]| {
    let k = key();
    let public = [k.public_key()];

    // 1. The bytes as an untrusted envelope.
    if let Ok(env) = envelope::parse(data) {
        for ctx in [Context::Manifest, Context::Confirmation] {
            match envelope::open(ctx, &env, &public) {
                Ok(body) => {
                    // Only possible for an envelope this key really signed:
                    // re-sealing the body must give the same signature
                    // (Ed25519 is deterministic).
                    let again = k.seal(ctx, &body);
                    assert_eq!(
                        again.sig, env.sig,
                        "an envelope opened without its signature"
                    );
                    assert_eq!(again.body, env.body);
                }
                Err(EnvelopeError::UnsupportedVersion(v)) => assert_ne!(v, 1),
                Err(EnvelopeError::UnknownKey(kid)) => assert_ne!(kid, "k-test"),
                Err(_) => {}
            }
        }
        // The wire form round-trips.
        let json = serde_json::to_vec(&env).unwrap();
        assert_eq!(envelope::parse(&json).unwrap(), env);
    }

    // 2. The bytes as a body this key signs.
    let env = k.seal(Context::Confirmation, data);
    assert_eq!(
        envelope::open(Context::Confirmation, &env, &public).unwrap(),
        data
    );
    assert_eq!(
        envelope::open(Context::Manifest, &env, &public),
        Err(EnvelopeError::BadSignature)
    );
});
