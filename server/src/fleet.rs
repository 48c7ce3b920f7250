//! The secrets every node on one database must share, checked against the
//! database at start (DESIGN "Several nodes on one database").
//!
//! The database records a fingerprint of each: `code-key` (every code
//! depends on it), `track-key` (every tracking link does), the admin token
//! (dispatch and the board sign in with it) and the signing key set (the
//! current key and the retired public keys: a handset enrolled on one node
//! must verify the manifests of every other). The first node records them
//! (`INSERT … ON CONFLICT DO NOTHING`, then read back, so of two nodes
//! starting together on an empty database one wins and the other refuses).
//! A node whose keys differ refuses to start and says which key; a data dir
//! that lacks a secret the database already records gets no new one (that
//! was how a node with an empty data dir joined silently with its own code
//! key and rejected every customer's real code as a wrong try).
//!
//! Fingerprints are HMACs of a label under the secret (or, for the admin
//! token, SHA-256 of a label and its stored hash), so the rows give nothing
//! away. The signing key set is public, so its row is the set itself.

use crate::keys::{self, KeyError, Signer, TrackKey};
use crate::storage::{FingerprintSwap, Storage, StorageError, TrackConversion};
use chrono::{DateTime, Utc};
use doorcode_core::codes::CodeKey;
use std::collections::HashMap;
use std::path::Path;

pub const CODE_KEY: &str = "code-key";
pub const TRACK_KEY: &str = "track-key";
pub const ADMIN_TOKEN: &str = "admin-token";
pub const SIGNING_KEYS: &str = "signing-keys";

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error("database: {0}")]
    Storage(#[from] StorageError),
    /// This node's secret is not the one the database records.
    #[error(
        "the {what} in this data dir differs from the one this database records \
         ({detail}); refusing to start. Every node on one database needs the same \
         data-dir secrets: {fix} (docs/OPERATIONS.md \"Keys on several nodes\")"
    )]
    Mismatch {
        what: &'static str,
        detail: String,
        fix: &'static str,
    },
    /// The recorded signing key set changed while this rotation ran.
    #[error("{0}")]
    Rotation(String),
}

/// The data dir's secrets, checked against the database.
pub struct Secrets {
    pub code_key: CodeKey,
    pub track_key: TrackKey,
    pub admin_hash: String,
    /// Only when this start created the admin token (shown once).
    pub admin_token: Option<String>,
    pub signer: Signer,
}

/// (what, how to fix) for each recorded name.
fn about(name: &str) -> (&'static str, &'static str) {
    match name {
        CODE_KEY => (
            "code key (code-key)",
            "copy code-key from a node that serves this database; never make a new one, \
             every issued code depends on it",
        ),
        TRACK_KEY => (
            "track key (track-key)",
            "copy track-key from a node that serves this database; every tracking link depends on it",
        ),
        ADMIN_TOKEN => (
            "admin token (admin-token.sha256)",
            "copy admin-token.sha256 from a node that serves this database",
        ),
        _ => (
            "signing key set (signing-key, keys/*.pub)",
            "copy signing-key and keys/ from a node that serves this database; after \
             `doorcode rotate-key`, copy them to every node before restarting it",
        ),
    }
}

fn fingerprints(
    code: &CodeKey,
    track: &TrackKey,
    admin_hash: &str,
    signer: &Signer,
) -> Vec<(String, String)> {
    vec![
        (CODE_KEY.into(), keys::code_key_fingerprint(code)),
        (TRACK_KEY.into(), track.fingerprint()),
        (ADMIN_TOKEN.into(), keys::admin_fingerprint(admin_hash)),
        (SIGNING_KEYS.into(), signer.key_set()),
    ]
}

fn short(fp: &str) -> &str {
    fp.get(..12).unwrap_or(fp)
}

/// Each of `mine` equal to its recorded value, or the first that is not.
fn check(mine: &[(String, String)], recorded: &[(String, String)]) -> Result<(), FleetError> {
    let rec: HashMap<&str, &str> = recorded
        .iter()
        .map(|(n, f)| (n.as_str(), f.as_str()))
        .collect();
    for (name, fp) in mine {
        let Some(r) = rec.get(name.as_str()) else {
            return Err(
                StorageError::Backend(format!("key fingerprint {name} was not recorded")).into(),
            );
        };
        // Fingerprints are not secrets; the comparison needs no constant time.
        if *r != fp {
            let (what, fix) = about(name);
            let detail = if name == SIGNING_KEYS {
                format!("database: {r}; this node: {fp}")
            } else {
                format!("fingerprint {}… recorded, {}… here", short(r), short(fp))
            };
            return Err(FleetError::Mismatch { what, detail, fix });
        }
    }
    Ok(())
}

/// Load the data dir's secrets, creating only those the database does not
/// record yet, and check them against the database (recording them first
/// if this is the first node).
pub async fn load_secrets(
    dir: &Path,
    storage: &dyn Storage,
    now: DateTime<Utc>,
) -> Result<Secrets, FleetError> {
    let recorded: HashMap<String, String> = storage.key_fingerprints().await?.into_iter().collect();
    let create = |n: &str| !recorded.contains_key(n);
    let code_key = keys::load_code_key(dir, create(CODE_KEY))?;
    let track_key = keys::load_track_key(dir, create(TRACK_KEY))?;
    let (admin_hash, admin_token) = keys::load_admin(dir, create(ADMIN_TOKEN))?;
    let signer = keys::load_signer_with(dir, create(SIGNING_KEYS))?;
    let mine = fingerprints(&code_key, &track_key, &admin_hash, &signer);
    let recorded = storage.record_key_fingerprints(mine.clone(), now).await?;
    check(&mine, &recorded)?;
    Ok(Secrets {
        code_key,
        track_key,
        admin_hash,
        admin_token,
        signer,
    })
}

/// Rows converted per transaction.
const CONVERT_BATCH: u32 = 500;

/// Replace every track token still stored in the clear (before migration 0005) with its
/// HMAC, keeping the link already sent working (`track_legacy`) and giving
/// the parcel a derived link for notices from now on. Idempotent; several
/// nodes may run it at once. Returns the rows this node converted.
pub async fn convert_clear_track_tokens(
    storage: &dyn Storage,
    key: &TrackKey,
) -> Result<u64, FleetError> {
    let mut total = 0;
    let mut idle = 0;
    loop {
        let batch = storage.clear_track_tokens(CONVERT_BATCH).await?;
        if batch.is_empty() {
            break;
        }
        let mut rows = Vec::with_capacity(batch.len());
        for (parcel_id, clear) in batch {
            let track = key.fresh(&parcel_id)?.1;
            rows.push(TrackConversion {
                legacy_hash: key.lookup(&clear),
                parcel_id,
                clear,
                track,
            });
        }
        let n = storage.convert_track_tokens(rows).await?;
        total += n;
        // Another node converted this batch meanwhile; twice in a row means
        // something keeps rewriting the rows: stop rather than spin.
        idle = if n == 0 { idle + 1 } else { 0 };
        if idle >= 2 {
            break;
        }
    }
    if total > 0 {
        tracing::info!(rows = total, "track tokens converted to HMACs");
    }
    Ok(total)
}

/// `doorcode rotate-key`: retire the current signing key, make a new one and
/// record the new set in the database, so that this node (and every node
/// given the same files) starts again. Returns (old kid, new kid).
pub async fn rotate_signing_key(
    dir: &Path,
    storage: &dyn Storage,
    now: DateTime<Utc>,
) -> Result<(String, String), FleetError> {
    let recorded = recorded_set(storage).await?;
    let before = keys::load_signer_with(dir, recorded.is_none())?;
    if let Some(r) = &recorded
        && *r != before.key_set()
    {
        let (what, fix) = about(SIGNING_KEYS);
        return Err(FleetError::Mismatch {
            what,
            detail: format!("database: {r}; this node: {}", before.key_set()),
            fix,
        });
    }
    let (old, new) = keys::rotate_signing_key(dir)?;
    let after = keys::load_signer_with(dir, false)?;
    if !storage
        .replace_key_fingerprint(FingerprintSwap {
            name: SIGNING_KEYS.into(),
            expected: recorded,
            new: after.key_set(),
            at: now,
        })
        .await?
    {
        return Err(FleetError::Rotation(format!(
            "the files are rotated ({old} retired, {new} current) but the database's signing \
             key set changed meanwhile (another rotation?); copy signing-key and keys/ from the \
             node that rotated last, or run `doorcode rotate-key --record-only` here"
        )));
    }
    Ok((old, new))
}

/// `doorcode rotate-key --record-only`: record this data dir's signing key
/// set as the fleet's, after retired `keys/*.pub` were deleted on every node.
/// The current key must be the recorded one (a new current key comes only
/// from a rotation). Returns the set recorded.
pub async fn record_signing_keys(
    dir: &Path,
    storage: &dyn Storage,
    now: DateTime<Utc>,
) -> Result<String, FleetError> {
    let recorded = recorded_set(storage).await?;
    let signer = keys::load_signer_with(dir, recorded.is_none())?;
    let set = signer.key_set();
    if let Some(r) = &recorded {
        let current = |s: &str| s.split(' ').next().map(str::to_string);
        if current(r) != current(&set) {
            let (what, fix) = about(SIGNING_KEYS);
            return Err(FleetError::Mismatch {
                what,
                detail: format!("database: {r}; this node: {set}"),
                fix,
            });
        }
    }
    if !storage
        .replace_key_fingerprint(FingerprintSwap {
            name: SIGNING_KEYS.into(),
            expected: recorded,
            new: set.clone(),
            at: now,
        })
        .await?
    {
        return Err(FleetError::Rotation(
            "the database's signing key set changed meanwhile; run it again".into(),
        ));
    }
    Ok(set)
}

async fn recorded_set(storage: &dyn Storage) -> Result<Option<String>, FleetError> {
    Ok(storage
        .key_fingerprints()
        .await?
        .into_iter()
        .find(|(n, _)| n == SIGNING_KEYS)
        .map(|(_, f)| f))
}
