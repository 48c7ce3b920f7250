//! Secrets in the data dir: the code key, the admin token's hash, the manifest
//! signing key and the retired public keys that stay published after rotation.
//!
//! Layout:
//! - `code-key`: 64 hex + optional newline (DESIGN.md). Generated if missing,
//!   never replaced if malformed.
//! - `admin-token.sha256`: hex SHA-256 of the dispatch bearer token.
//! - `signing-key`: `<kid>\n<seed hex>\n`, mode 0600.
//! - `keys/<kid>.pub`: base64url public keys of retired signing keys.
//! - `track-key`: 32-byte track key, 64 hex + optional newline, mode 0600.
//!   Tracking links are derived from it and stored only as its HMAC.
//!
//! Which of these the database expects (their fingerprints) is checked at
//! start by [`crate::fleet`]; a missing file is created only when the
//! database records none.

use doorcode_core::codes::CodeKey;
use doorcode_core::envelope::{SigningKey, VerifyingKey};
use doorcode_core::secrets::write_private_file;
use ring::rand::SecureRandom as _;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {msg}")]
    File { path: PathBuf, msg: String },
    #[error("the system random generator failed")]
    Random,
    /// The database records this secret but the data dir has none: creating
    /// a new one would split the fleet (codes, links or tokens nobody else knows).
    #[error(
        "{path} is missing, but the database already records a {what} from another node; \
         refusing to create a new one. Copy the data-dir secrets (code-key, track-key, \
         admin-token.sha256, signing-key, keys/) from an existing node (docs/OPERATIONS.md)"
    )]
    MissingShared { path: PathBuf, what: &'static str },
}

fn file_err(path: &Path, e: impl std::fmt::Display) -> KeyError {
    KeyError::File {
        path: path.to_path_buf(),
        msg: e.to_string(),
    }
}

/// `n` bytes from the OS CSPRNG.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], KeyError> {
    let mut b = [0u8; N];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| KeyError::Random)?;
    Ok(b)
}

/// A 256-bit random token, base64url: admin, device and track tokens.
pub fn new_token() -> Result<String, KeyError> {
    Ok(doorcode_core::b64::encode(&random_bytes::<32>()?))
}

/// Hex SHA-256, how bearer tokens and enrollment codes are stored.
pub fn token_hash(token: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    doorcode_core::hex::encode(d.as_ref())
}

fn read_opt(path: &Path) -> Result<Option<String>, KeyError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(file_err(path, e)),
    }
}

/// Load `<data-dir>/code-key`, creating it if missing. A malformed file is an error.
pub fn load_or_create_code_key(data_dir: &Path) -> Result<CodeKey, KeyError> {
    load_code_key(data_dir, true)
}

/// Load `<data-dir>/code-key`; create it if missing and `create`, else
/// [`KeyError::MissingShared`].
pub fn load_code_key(data_dir: &Path, create: bool) -> Result<CodeKey, KeyError> {
    let path = data_dir.join("code-key");
    match read_opt(&path)? {
        Some(text) => CodeKey::from_file_text(&text).map_err(|e| {
            file_err(
                &path,
                format!("{e}; refusing to start (the key is never replaced automatically)"),
            )
        }),
        None if !create => Err(KeyError::MissingShared {
            path,
            what: "code key",
        }),
        None => {
            let key = CodeKey::generate().map_err(|_| KeyError::Random)?;
            write_private_file(&path, key.to_file_text().as_bytes())
                .map_err(|e| file_err(&path, e))?;
            Ok(key)
        }
    }
}

/// The admin token's hash; on first start a token is created and returned once.
pub fn load_or_create_admin(data_dir: &Path) -> Result<(String, Option<String>), KeyError> {
    load_admin(data_dir, true)
}

/// The admin token's hash; a missing file is created (and the token
/// returned once) only if `create`, else [`KeyError::MissingShared`].
pub fn load_admin(data_dir: &Path, create: bool) -> Result<(String, Option<String>), KeyError> {
    let path = data_dir.join("admin-token.sha256");
    if let Some(text) = read_opt(&path)? {
        let h = text.trim().to_string();
        if h.len() != 64 || doorcode_core::hex::decode(&h).is_none() {
            return Err(file_err(
                &path,
                "not a hex SHA-256; delete it to create a new admin token",
            ));
        }
        return Ok((h, None));
    }
    if !create {
        return Err(KeyError::MissingShared {
            path,
            what: "admin token",
        });
    }
    let token = new_token()?;
    let h = token_hash(&token);
    write_private_file(&path, format!("{h}\n").as_bytes()).map_err(|e| file_err(&path, e))?;
    Ok((h, Some(token)))
}

/// The track key: tracking links are derived from it, and stored only as
/// its HMAC, so the database alone yields no working link.
///
/// Why derived rather than random and stored: a notice is rendered when it
/// is sent (and again on every resend, from the tracking page or the
/// handset), and dispatch's parcel view shows the link. Each needs the link
/// back from what is stored. So a parcel stores a random `nonce` and the
/// link is `HMAC(track-key, "doorcode track token v1" ‖ parcel_id ‖ nonce)`:
/// the database holds the nonce and `HMAC(track-key, "doorcode track lookup
/// v1" ‖ token)` (to find the parcel), never a token, and neither gives one
/// without this key. The outbox row never holds the link either.
pub struct TrackKey(ring::hmac::Key);

/// What a parcel stores about its tracking link: the nonce it is derived
/// from and the lookup HMAC of the link's token.
pub use crate::domain::records::TrackRef;

impl TrackKey {
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        Self(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, bytes))
    }

    /// The token of a parcel's link (base64url, 43 characters).
    pub fn token(&self, parcel_id: &str, nonce: &str) -> String {
        let mut msg = Vec::with_capacity(parcel_id.len() + nonce.len() + 32);
        msg.extend_from_slice(b"doorcode track token v1\0");
        msg.extend_from_slice(parcel_id.as_bytes());
        msg.push(0);
        msg.extend_from_slice(nonce.as_bytes());
        doorcode_core::b64::encode(ring::hmac::sign(&self.0, &msg).as_ref())
    }

    /// The stored lookup value of a token (hex). Lookups compare these by
    /// index equality, so no secret is compared byte by byte in the clear.
    pub fn lookup(&self, token: &str) -> String {
        let mut msg = b"doorcode track lookup v1\0".to_vec();
        msg.extend_from_slice(token.as_bytes());
        doorcode_core::hex::encode(ring::hmac::sign(&self.0, &msg).as_ref())
    }

    /// A fresh link for `parcel_id`: (its token, what to store).
    pub fn fresh(&self, parcel_id: &str) -> Result<(String, TrackRef), KeyError> {
        let nonce = doorcode_core::b64::encode(&random_bytes::<16>()?);
        let token = self.token(parcel_id, &nonce);
        let hash = self.lookup(&token);
        Ok((token, TrackRef { nonce, hash }))
    }

    /// Domain-separated fingerprint for the database's key check.
    pub fn fingerprint(&self) -> String {
        doorcode_core::hex::encode(
            ring::hmac::sign(&self.0, b"doorcode key fingerprint v1\0track-key").as_ref(),
        )
    }
}

impl std::fmt::Debug for TrackKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TrackKey(<redacted>)")
    }
}

/// Load `<data-dir>/track-key` (64 hex + optional newline), creating it if
/// missing and `create`. A malformed file is an error, never replaced.
pub fn load_track_key(data_dir: &Path, create: bool) -> Result<TrackKey, KeyError> {
    let path = data_dir.join("track-key");
    match read_opt(&path)? {
        Some(text) => {
            let t = text.trim_end_matches(['\n', '\r']);
            let bytes: [u8; 32] = doorcode_core::hex::decode(t)
                .and_then(|v| v.try_into().ok())
                .ok_or_else(|| {
                    file_err(
                        &path,
                        "not 64 hex characters; refusing to start (the key is never replaced automatically)",
                    )
                })?;
            Ok(TrackKey::from_bytes(&bytes))
        }
        None if !create => Err(KeyError::MissingShared {
            path,
            what: "track key",
        }),
        None => {
            let bytes = random_bytes::<32>()?;
            let mut text = doorcode_core::hex::encode(&bytes);
            text.push('\n');
            write_private_file(&path, text.as_bytes()).map_err(|e| file_err(&path, e))?;
            Ok(TrackKey::from_bytes(&bytes))
        }
    }
}

/// Domain-separated fingerprint of the code key: HMAC under the key of a
/// label, so the database learns nothing that gives a code.
pub fn code_key_fingerprint(key: &CodeKey) -> String {
    let text = key.to_file_text();
    let bytes = doorcode_core::hex::decode(text.trim()).unwrap_or_default();
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &bytes);
    doorcode_core::hex::encode(
        ring::hmac::sign(&k, b"doorcode key fingerprint v1\0code-key").as_ref(),
    )
}

/// Fingerprint of the admin token's hash (already a SHA-256 of a 256-bit
/// random token; hashed again under a label so the row is not the file).
pub fn admin_fingerprint(admin_hash: &str) -> String {
    let mut msg = b"doorcode key fingerprint v1\0admin-token\0".to_vec();
    msg.extend_from_slice(admin_hash.as_bytes());
    let d = ring::digest::digest(&ring::digest::SHA256, &msg);
    doorcode_core::hex::encode(d.as_ref())
}

/// The manifest signer: the current key plus every public key still published.
pub struct Signer {
    pub current: SigningKey,
    pub published: Vec<VerifyingKey>,
}

impl Signer {
    /// The signing key set as the database records it (public keys only):
    /// `current=<kid>:<public>` then each retired `<kid>:<public>`, sorted.
    /// Every node must sign with the same key and publish the same retired
    /// keys, or a handset enrolled on one node rejects manifests from another.
    pub fn key_set(&self) -> String {
        let cur = self.current.public_key();
        let mut retired: Vec<String> = self
            .published
            .iter()
            .filter(|k| k.kid != cur.kid)
            .map(|k| format!("{}:{}", k.kid, k.public_b64()))
            .collect();
        retired.sort();
        let mut s = format!("current={}:{}", cur.kid, cur.public_b64());
        for r in retired {
            s.push_str(" retired=");
            s.push_str(&r);
        }
        s
    }
}

fn new_kid() -> Result<String, KeyError> {
    Ok(format!(
        "k-{}",
        doorcode_core::hex::encode(&random_bytes::<6>()?)
    ))
}

fn write_signing_key(path: &Path, key: &SigningKey) -> Result<(), KeyError> {
    let text = format!(
        "{}\n{}\n",
        key.kid(),
        doorcode_core::hex::encode(key.seed())
    );
    write_private_file(path, text.as_bytes()).map_err(|e| file_err(path, e))
}

fn read_signing_key(path: &Path) -> Result<Option<SigningKey>, KeyError> {
    let Some(text) = read_opt(path)? else {
        return Ok(None);
    };
    let mut lines = text.lines();
    let (Some(kid), Some(seed)) = (lines.next(), lines.next()) else {
        return Err(file_err(path, "expected a key id line and a seed hex line"));
    };
    let seed: [u8; 32] = doorcode_core::hex::decode(seed.trim())
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| file_err(path, "the seed is not 64 hex characters"))?;
    SigningKey::from_seed(kid.trim(), seed)
        .map(Some)
        .map_err(|e| file_err(path, e))
}

/// Load the signing key (creating one if missing) and the retired public keys.
pub fn load_signer(data_dir: &Path) -> Result<Signer, KeyError> {
    load_signer_with(data_dir, true)
}

/// [`load_signer`]; a missing `signing-key` is created only if `create`.
pub fn load_signer_with(data_dir: &Path, create: bool) -> Result<Signer, KeyError> {
    let path = data_dir.join("signing-key");
    let current = match read_signing_key(&path)? {
        Some(k) => k,
        None if !create => {
            return Err(KeyError::MissingShared {
                path,
                what: "signing key",
            });
        }
        None => {
            let k = SigningKey::generate(new_kid()?).map_err(|e| file_err(&path, e))?;
            write_signing_key(&path, &k)?;
            k
        }
    };
    let mut published = vec![current.public_key()];
    let dir = data_dir.join("keys");
    if let Ok(entries) = std::fs::read_dir(&dir) {
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for p in paths {
            let Some(kid) = p
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".pub"))
            else {
                continue;
            };
            if kid == current.kid() {
                continue;
            }
            let text = std::fs::read_to_string(&p).map_err(|e| file_err(&p, e))?;
            let vk = VerifyingKey::from_b64(kid, text.trim()).map_err(|e| file_err(&p, e))?;
            published.push(vk);
        }
    }
    Ok(Signer { current, published })
}

/// Retire the current signing key (its public key stays published under
/// `keys/`) and make a new one. Returns (old kid, new kid).
pub fn rotate_signing_key(data_dir: &Path) -> Result<(String, String), KeyError> {
    let signer = load_signer(data_dir)?;
    let old = signer.current;
    let dir = data_dir.join("keys");
    crate::data_dir::create_private_dir(&dir).map_err(|e| file_err(&dir, e))?;
    let pub_path = dir.join(format!("{}.pub", old.kid()));
    write_private_file(
        &pub_path,
        format!("{}\n", old.public_key().public_b64()).as_bytes(),
    )
    .map_err(|e| file_err(&pub_path, e))?;
    let new = SigningKey::generate(new_kid()?).map_err(|e| file_err(&pub_path, e))?;
    write_signing_key(&data_dir.join("signing-key"), &new)?;
    Ok((old.kid().to_string(), new.kid().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_key_created_then_kept_and_malformed_refused() {
        let dir = tempfile::tempdir().unwrap();
        let k1 = load_or_create_code_key(dir.path()).unwrap();
        let k2 = load_or_create_code_key(dir.path()).unwrap();
        assert_eq!(k1.to_file_text(), k2.to_file_text());
        std::fs::write(dir.path().join("code-key"), "nope\n").unwrap();
        let err = load_or_create_code_key(dir.path()).unwrap_err().to_string();
        assert!(err.contains("code-key"), "{err}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("code-key")).unwrap(),
            "nope\n"
        );
    }

    #[test]
    fn admin_token_printed_once_stored_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let (h, tok) = load_or_create_admin(dir.path()).unwrap();
        let tok = tok.unwrap();
        assert_eq!(token_hash(&tok), h);
        let stored = std::fs::read_to_string(dir.path().join("admin-token.sha256")).unwrap();
        assert!(!stored.contains(&tok));
        let (h2, again) = load_or_create_admin(dir.path()).unwrap();
        assert_eq!(h2, h);
        assert!(again.is_none());
    }

    #[test]
    fn rotation_keeps_old_key_published() {
        let dir = tempfile::tempdir().unwrap();
        let s1 = load_signer(dir.path()).unwrap();
        let (old, new) = rotate_signing_key(dir.path()).unwrap();
        assert_eq!(old, s1.current.kid());
        let s2 = load_signer(dir.path()).unwrap();
        assert_eq!(s2.current.kid(), new);
        assert!(
            s2.published
                .iter()
                .any(|k| k.kid == old && k.public == s1.current.public_key().public)
        );
        assert_eq!(s2.published.len(), 2);
    }

    #[test]
    fn track_links_derive_from_key_parcel_and_nonce_only() {
        let dir = tempfile::tempdir().unwrap();
        let k = load_track_key(dir.path(), true).unwrap();
        let again = load_track_key(dir.path(), true).unwrap();
        let (tok, r) = k.fresh("P-1").unwrap();
        assert_eq!(tok.len(), 43);
        assert_eq!(again.token("P-1", &r.nonce), tok, "the file keeps the key");
        assert_eq!(again.lookup(&tok), r.hash);
        assert_ne!(k.token("P-2", &r.nonce), tok, "bound to the parcel");
        assert_ne!(r.hash, tok);
        assert!(!r.hash.contains(&tok) && !r.nonce.contains(&tok));
        let other = TrackKey::from_bytes(&[7; 32]);
        assert_ne!(other.token("P-1", &r.nonce), tok, "bound to the key");
        assert_ne!(other.fingerprint(), k.fingerprint());
        let text = std::fs::read_to_string(dir.path().join("track-key")).unwrap();
        assert!(!k.fingerprint().contains(text.trim()));
    }

    #[test]
    fn a_recorded_secret_is_never_created() {
        let dir = tempfile::tempdir().unwrap();
        for e in [
            load_code_key(dir.path(), false).err(),
            load_track_key(dir.path(), false).err(),
            load_admin(dir.path(), false).err(),
            load_signer_with(dir.path(), false).err(),
        ] {
            assert!(matches!(e, Some(KeyError::MissingShared { .. })), "{e:?}");
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        std::fs::write(dir.path().join("track-key"), "short\n").unwrap();
        let e = load_track_key(dir.path(), true).unwrap_err().to_string();
        assert!(e.contains("never replaced"), "{e}");
    }

    #[test]
    fn the_key_set_names_current_and_retired_keys() {
        let dir = tempfile::tempdir().unwrap();
        let s1 = load_signer(dir.path()).unwrap();
        let set1 = s1.key_set();
        assert!(set1.starts_with(&format!("current={}:", s1.current.kid())));
        rotate_signing_key(dir.path()).unwrap();
        let s2 = load_signer(dir.path()).unwrap();
        let set2 = s2.key_set();
        assert!(
            set2.contains(&format!(" retired={}:", s1.current.kid())),
            "{set2}"
        );
        assert_ne!(set1, set2);
        assert!(!set2.contains(&doorcode_core::hex::encode(s2.current.seed())));
    }
}
