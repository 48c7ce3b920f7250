//! Signed envelopes: `{"v":1,"kid","body","sig"}` with Ed25519 over a
//! domain-separated context. The bytes are verified before anything parses them.
//!
//! Verification is strict: besides ring's check of the equation, a public key
//! must be a canonical encoding of a curve point that is not of small order,
//! and so must a signature's `R`; `S` must be reduced. A small-order key (the
//! identity point, say) would otherwise let `R = identity, S = 0` verify for
//! any body, so anyone could forge that key's confirmations.

use crate::b64;
use ring::signature::{self, Ed25519KeyPair, KeyPair as _};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Envelope format version.
pub const ENVELOPE_VERSION: u32 = 1;

/// What an envelope carries; the signature covers the context, so a manifest
/// signature can never be replayed as a confirmation or the other way round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    Manifest,
    Confirmation,
}

impl Context {
    fn domain(self) -> &'static [u8] {
        match self {
            Context::Manifest => b"doorcode:manifest:v1",
            Context::Confirmation => b"doorcode:confirmation:v1",
        }
    }

    fn message(self, body: &[u8]) -> Vec<u8> {
        let d = self.domain();
        let mut m = Vec::with_capacity(d.len() + 1 + body.len());
        m.extend_from_slice(d);
        m.push(0);
        m.extend_from_slice(body);
        m
    }
}

/// The wire form of a signed message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub v: u32,
    pub kid: String,
    pub body: String,
    pub sig: String,
}

/// Why an envelope was refused. Each case is distinct so callers can tell an
/// unknown key (maybe rotate) from a forgery.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("envelope version {0} is not supported (expected {ENVELOPE_VERSION})")]
    UnsupportedVersion(u32),
    #[error("the signing key \"{0}\" is not known here")]
    UnknownKey(String),
    #[error("the envelope's {0} is not base64url without padding")]
    BadEncoding(&'static str),
    #[error("the signature does not verify")]
    BadSignature,
    #[error("the envelope is not valid JSON: {0}")]
    Malformed(String),
    #[error("the key material is invalid")]
    BadKey,
    #[error("the public key is not a valid Ed25519 point, or is of small order")]
    WeakKey,
}

/// A 32-byte encoding that names a point usable for Ed25519: it decodes, it is
/// the canonical encoding of that point, and the point is not of small order
/// (the eight points whose multiples by the cofactor are the identity).
fn strong_point(bytes: &[u8; 32]) -> bool {
    use curve25519_dalek::edwards::CompressedEdwardsY;
    let c = CompressedEdwardsY(*bytes);
    match c.decompress() {
        Some(p) => p.compress() == c && !p.is_small_order(),
        None => false,
    }
}

/// Refuses a public key that is not a canonical, non-small-order Ed25519
/// point ([`EnvelopeError::WeakKey`]). The server calls it at enrollment.
pub fn check_public_key(public: &[u8; 32]) -> Result<(), EnvelopeError> {
    if strong_point(public) {
        Ok(())
    } else {
        Err(EnvelopeError::WeakKey)
    }
}

/// The checks ring's verification leaves out: a strong key, a strong `R`
/// and a reduced `S` (ring checks `S` too; this keeps the rule in one place).
fn strict_signature_ok(public: &[u8; 32], sig: &[u8]) -> bool {
    let Ok(sig) = <&[u8; 64]>::try_from(sig) else {
        return false;
    };
    let mut r = [0u8; 32];
    r.copy_from_slice(&sig[..32]);
    let mut s = [0u8; 32];
    s.copy_from_slice(&sig[32..]);
    let s_reduced: bool = curve25519_dalek::scalar::Scalar::from_canonical_bytes(s)
        .is_some()
        .into();
    strong_point(public) && strong_point(&r) && s_reduced
}

/// An Ed25519 signing key with its key id. The seed is the storage form.
pub struct SigningKey {
    kid: String,
    pair: Ed25519KeyPair,
    seed: [u8; 32],
}

impl SigningKey {
    /// A fresh key from the OS CSPRNG.
    pub fn generate(kid: impl Into<String>) -> Result<Self, EnvelopeError> {
        use ring::rand::SecureRandom as _;
        let mut seed = [0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut seed)
            .map_err(|_| EnvelopeError::BadKey)?;
        Self::from_seed(kid, seed)
    }

    pub fn from_seed(kid: impl Into<String>, seed: [u8; 32]) -> Result<Self, EnvelopeError> {
        let pair = Ed25519KeyPair::from_seed_unchecked(&seed).map_err(|_| EnvelopeError::BadKey)?;
        Ok(Self {
            kid: kid.into(),
            pair,
            seed,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The 32-byte seed; store it as a secret.
    pub fn seed(&self) -> &[u8; 32] {
        &self.seed
    }

    pub fn public_key(&self) -> VerifyingKey {
        let mut public = [0u8; 32];
        public.copy_from_slice(self.pair.public_key().as_ref());
        VerifyingKey {
            kid: self.kid.clone(),
            public,
        }
    }

    /// Signs `body` for `ctx` and wraps it in an envelope.
    pub fn seal(&self, ctx: Context, body: &[u8]) -> Envelope {
        let sig = self.pair.sign(&ctx.message(body));
        Envelope {
            v: ENVELOPE_VERSION,
            kid: self.kid.clone(),
            body: b64::encode(body),
            sig: b64::encode(sig.as_ref()),
        }
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({}, <redacted>)", self.kid)
    }
}

/// A public key that envelopes may be checked against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyingKey {
    pub kid: String,
    pub public: [u8; 32],
}

impl VerifyingKey {
    /// From the base64url public key published at `/.well-known/doorcode-keys`
    /// (or sent at enrollment). A key that is not a strong point is refused
    /// with [`EnvelopeError::WeakKey`].
    pub fn from_b64(kid: impl Into<String>, public_b64: &str) -> Result<Self, EnvelopeError> {
        let public =
            b64::decode_array::<32>(public_b64).ok_or(EnvelopeError::BadEncoding("public_key"))?;
        check_public_key(&public)?;
        Ok(Self {
            kid: kid.into(),
            public,
        })
    }

    pub fn public_b64(&self) -> String {
        b64::encode(&self.public)
    }

    /// Checks the signature of `env` for `ctx` and returns the verified body bytes.
    pub fn verify(&self, ctx: Context, env: &Envelope) -> Result<Vec<u8>, EnvelopeError> {
        open_with(ctx, env, |kid| (kid == self.kid).then_some(self))
    }
}

/// Opens an envelope: version, key lookup, decoding and signature, in that
/// order. Only the returned bytes may be parsed.
pub fn open_with<'k>(
    ctx: Context,
    env: &Envelope,
    lookup: impl FnOnce(&str) -> Option<&'k VerifyingKey>,
) -> Result<Vec<u8>, EnvelopeError> {
    if env.v != ENVELOPE_VERSION {
        return Err(EnvelopeError::UnsupportedVersion(env.v));
    }
    let key = lookup(&env.kid).ok_or_else(|| EnvelopeError::UnknownKey(env.kid.clone()))?;
    let body = b64::decode(&env.body).ok_or(EnvelopeError::BadEncoding("body"))?;
    let sig = b64::decode(&env.sig).ok_or(EnvelopeError::BadEncoding("sig"))?;
    if !strict_signature_ok(&key.public, &sig) {
        return Err(EnvelopeError::BadSignature);
    }
    signature::UnparsedPublicKey::new(&signature::ED25519, &key.public)
        .verify(&ctx.message(&body), &sig)
        .map_err(|_| EnvelopeError::BadSignature)?;
    Ok(body)
}

/// Opens against a set of trusted keys (e.g. the server keys a handset pinned,
/// which may hold old keys during rotation).
pub fn open(ctx: Context, env: &Envelope, keys: &[VerifyingKey]) -> Result<Vec<u8>, EnvelopeError> {
    open_with(ctx, env, |kid| keys.iter().find(|k| k.kid == kid))
}

/// Parses an envelope from JSON text without trusting anything in it yet.
pub fn parse(json: &[u8]) -> Result<Envelope, EnvelopeError> {
    serde_json::from_slice(json).map_err(|e| EnvelopeError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_context_separation() {
        let k = SigningKey::generate("k1").unwrap();
        let env = k.seal(Context::Manifest, b"{\"a\":1}");
        let pk = k.public_key();
        assert_eq!(pk.verify(Context::Manifest, &env).unwrap(), b"{\"a\":1}");
        assert_eq!(
            pk.verify(Context::Confirmation, &env),
            Err(EnvelopeError::BadSignature)
        );
        let mut bad = env.clone();
        bad.kid = "k2".into();
        assert_eq!(
            open(Context::Manifest, &bad, std::slice::from_ref(&pk)),
            Err(EnvelopeError::UnknownKey("k2".into()))
        );
        let mut bad = env.clone();
        bad.v = 2;
        assert_eq!(
            pk.verify(Context::Manifest, &bad),
            Err(EnvelopeError::UnsupportedVersion(2))
        );
        let mut bad = env.clone();
        bad.body.push('=');
        assert_eq!(
            pk.verify(Context::Manifest, &bad),
            Err(EnvelopeError::BadEncoding("body"))
        );
        let mut bad = env;
        bad.sig = b64::encode(&[0u8; 10]);
        assert_eq!(
            pk.verify(Context::Manifest, &bad),
            Err(EnvelopeError::BadSignature)
        );
    }

    /// The review's forgery: public key = identity, `R` = identity, `S` = 0
    /// satisfies the cofactorless equation for any body.
    #[test]
    fn identity_key_forgery_is_refused() {
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let pk = VerifyingKey {
            kid: "d-1".into(),
            public: identity,
        };
        let mut sig = [0u8; 64];
        sig[0] = 1;
        let env = Envelope {
            v: 1,
            kid: "d-1".into(),
            body: b64::encode(b"{\"any\":\"body\"}"),
            sig: b64::encode(&sig),
        };
        // ring alone accepts it; the strict check must not.
        let msg = Context::Confirmation.message(b"{\"any\":\"body\"}");
        assert!(
            signature::UnparsedPublicKey::new(&signature::ED25519, &identity)
                .verify(&msg, &sig)
                .is_ok(),
            "the attack no longer reproduces against ring; keep the test honest"
        );
        assert_eq!(
            pk.verify(Context::Confirmation, &env),
            Err(EnvelopeError::BadSignature)
        );
        assert_eq!(
            VerifyingKey::from_b64("d-1", &b64::encode(&identity)),
            Err(EnvelopeError::WeakKey)
        );
    }

    #[test]
    fn small_order_invalid_and_non_canonical_keys_are_refused() {
        for p in curve25519_dalek::constants::EIGHT_TORSION {
            let enc = p.compress().to_bytes();
            assert_eq!(
                check_public_key(&enc),
                Err(EnvelopeError::WeakKey),
                "{enc:02x?}"
            );
            // The same point with the sign bit flipped (x = 0 points have
            // no negative, so their flipped form is non-canonical).
            let mut flipped = enc;
            flipped[31] ^= 0x80;
            assert_eq!(check_public_key(&flipped), Err(EnvelopeError::WeakKey));
        }
        // y = p (≡ 0): a non-canonical encoding of a small-order point.
        let mut y_is_p = [0xffu8; 32];
        y_is_p[0] = 0xed;
        y_is_p[31] = 0x7f;
        assert_eq!(check_public_key(&y_is_p), Err(EnvelopeError::WeakKey));
        // y = 2 is not on the curve (x² is not a square).
        let mut not_on_curve = [0u8; 32];
        not_on_curve[0] = 2;
        assert!(
            curve25519_dalek::edwards::CompressedEdwardsY(not_on_curve)
                .decompress()
                .is_none()
        );
        assert_eq!(check_public_key(&not_on_curve), Err(EnvelopeError::WeakKey));
        // A real key passes.
        let k = SigningKey::generate("k").unwrap();
        assert_eq!(check_public_key(&k.public_key().public), Ok(()));
    }

    #[test]
    fn signatures_with_small_order_r_or_unreduced_s_are_refused() {
        let k = SigningKey::generate("k").unwrap();
        let pk = k.public_key();
        let env = k.seal(Context::Confirmation, b"{\"a\":1}");
        assert!(pk.verify(Context::Confirmation, &env).is_ok());
        let sig = b64::decode(&env.sig).unwrap();
        // S + L: the same scalar, unreduced (malleability).
        const L: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let mut s_plus_l = sig.clone();
        let mut carry = 0u16;
        for i in 0..32 {
            let v = u16::from(s_plus_l[32 + i]) + u16::from(L[i]) + carry;
            s_plus_l[32 + i] = (v & 0xff) as u8;
            carry = v >> 8;
        }
        let mut bad = env.clone();
        bad.sig = b64::encode(&s_plus_l);
        assert_eq!(
            pk.verify(Context::Confirmation, &bad),
            Err(EnvelopeError::BadSignature)
        );
        // R replaced by each small-order point.
        for p in curve25519_dalek::constants::EIGHT_TORSION {
            let mut s = sig.clone();
            s[..32].copy_from_slice(&p.compress().to_bytes());
            let mut bad = env.clone();
            bad.sig = b64::encode(&s);
            assert_eq!(
                pk.verify(Context::Confirmation, &bad),
                Err(EnvelopeError::BadSignature)
            );
        }
    }

    #[test]
    fn parse_rejects_unknown_fields() {
        assert!(parse(br#"{"v":1,"kid":"a","body":"","sig":"","x":1}"#).is_err());
        assert!(parse(b"not json").is_err());
    }
}
