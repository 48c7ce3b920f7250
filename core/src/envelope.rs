//! Signed envelopes: `{"v":1,"kid","body","sig"}` with Ed25519 over a
//! domain-separated context. The bytes are verified before anything parses them.

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
    /// From the base64url public key published at `/.well-known/doorcode-keys`.
    pub fn from_b64(kid: impl Into<String>, public_b64: &str) -> Result<Self, EnvelopeError> {
        let public =
            b64::decode_array::<32>(public_b64).ok_or(EnvelopeError::BadEncoding("public_key"))?;
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

    #[test]
    fn parse_rejects_unknown_fields() {
        assert!(parse(br#"{"v":1,"kid":"a","body":"","sig":"","x":1}"#).is_err());
        assert!(parse(b"not json").is_err());
    }
}
