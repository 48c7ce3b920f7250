//! Checks every entry of a protocol vectors file: the one named by
//! `DOORCODE_VECTORS`, else the shared `protocol-v1.json`. Nothing here knows
//! the file's contents; any file of the same schema must pass.

use chrono::NaiveDate;
use doorcode_core::codes::{self, Code, CodeKey};
use doorcode_core::envelope::{self, Context, Envelope, SigningKey, VerifyingKey};
use doorcode_core::input::parse_code_input;
use doorcode_core::manifest::{Manifest, open_manifest, open_received};
use doorcode_core::{b64, hex};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Deserialize)]
struct Vectors {
    code_key_hex: String,
    codes: Vec<CodeVector>,
    tags: Vec<TagVector>,
    manifest: ManifestVector,
    spoken: Vec<SpokenVector>,
}

#[derive(Deserialize)]
struct CodeVector {
    parcel_id: String,
    delivery_date: NaiveDate,
    attempt: u32,
    digits: u8,
    code: String,
}

#[derive(Deserialize)]
struct TagVector {
    parcel_id: String,
    delivery_date: NaiveDate,
    code: String,
    salt: String,
    bits: u8,
    tag: u32,
}

#[derive(Deserialize)]
struct ManifestVector {
    signing_seed_hex: String,
    public_key: String,
    envelope: Envelope,
    tampered_envelope_must_fail: Envelope,
    /// `code_for_<parcel_id>` entries: the code of that parcel in the manifest.
    #[serde(flatten)]
    codes_for: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct SpokenVector {
    input: String,
    code: String,
}

/// `DOORCODE_VECTORS` as given (absolute, or relative to the current directory
/// or to the workspace root), else the shared file beside the workspace.
fn vectors_path() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    match std::env::var_os("DOORCODE_VECTORS") {
        Some(p) => {
            let p = PathBuf::from(p);
            if p.is_absolute() || p.exists() {
                p
            } else {
                root.join(p)
            }
        }
        None => root.join("../shared/vectors/protocol-v1.json"),
    }
}

fn load() -> Vectors {
    let path = vectors_path();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read the vectors file {}: {e}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not a vectors file: {e}", path.display()))
}

fn code_key(v: &Vectors) -> CodeKey {
    CodeKey::from_file_text(&v.code_key_hex).expect("code_key_hex")
}

#[test]
fn codes_match() {
    let v = load();
    let key = code_key(&v);
    assert!(!v.codes.is_empty(), "the vectors file has no codes");
    for c in &v.codes {
        let got =
            codes::derive_code(&key, &c.parcel_id, c.delivery_date, c.attempt, c.digits).unwrap();
        assert_eq!(
            got.expose(),
            c.code,
            "code for {} {} #{}",
            c.parcel_id,
            c.delivery_date,
            c.attempt
        );
    }
}

#[test]
fn tags_match() {
    let v = load();
    assert!(!v.tags.is_empty(), "the vectors file has no tags");
    for t in &v.tags {
        let salt = b64::decode_array::<16>(&t.salt).expect("salt is 16 bytes base64url");
        let code = Code::new(t.code.clone()).unwrap();
        let got = codes::offline_tag(&salt, &t.parcel_id, t.delivery_date, &code, t.bits).unwrap();
        assert_eq!(got, t.tag, "tag for {} at {} bits", t.parcel_id, t.bits);
    }
}

#[test]
fn manifest_envelope_verifies_and_tampered_does_not() {
    let v = load();
    let m = &v.manifest;
    let seed: [u8; 32] = hex::decode(&m.signing_seed_hex)
        .unwrap()
        .try_into()
        .unwrap();
    let signer = SigningKey::from_seed(m.envelope.kid.clone(), seed).unwrap();
    assert_eq!(
        signer.public_key().public_b64(),
        m.public_key,
        "seed gives the published public key"
    );
    let pk = VerifyingKey::from_b64(m.envelope.kid.clone(), &m.public_key).unwrap();

    let manifest: Manifest =
        open_manifest(&m.envelope, std::slice::from_ref(&pk)).expect("the manifest must verify");
    // Verifying the raw bytes and re-parsing must agree with open_manifest.
    let body = envelope::open(Context::Manifest, &m.envelope, std::slice::from_ref(&pk)).unwrap();
    assert_eq!(Manifest::from_verified_bytes(&body).unwrap(), manifest);
    // Signing the same body with the seed reproduces the signature (Ed25519 is deterministic).
    assert_eq!(signer.seal(Context::Manifest, &body).sig, m.envelope.sig);
    // A manifest without holds reads with none held (holds are optional).
    let received = open_received(&m.envelope, std::slice::from_ref(&pk)).unwrap();
    assert!(received.held.is_empty());
    assert_eq!(received.manifest, manifest);

    assert!(
        envelope::open(
            Context::Manifest,
            &m.tampered_envelope_must_fail,
            std::slice::from_ref(&pk)
        )
        .is_err(),
        "the tampered envelope must not verify"
    );
    assert!(open_manifest(&m.tampered_envelope_must_fail, &[pk]).is_err());

    // Each `code_for_<parcel>` is that parcel's code, and matches its tag.
    let key = code_key(&v);
    let mut checked = 0;
    for (k, code) in &m.codes_for {
        let Some(pid) = k.strip_prefix("code_for_") else {
            continue; // a field this test does not know: nothing to check
        };
        let (_, p) = manifest
            .parcels()
            .find(|(_, p)| p.parcel_id == pid)
            .expect("parcel in manifest");
        let derived = codes::derive_code(
            &key,
            pid,
            manifest.delivery_date,
            p.attempt,
            manifest.code_digits,
        )
        .unwrap();
        assert_eq!(derived.expose(), code, "code for {pid}");
        let tag = codes::offline_tag(
            &p.salt_bytes().unwrap(),
            pid,
            manifest.delivery_date,
            &derived,
            manifest.tag_bits,
        )
        .unwrap();
        assert_eq!(Some(tag), p.tag, "manifest tag for {pid}");
        checked += 1;
    }
    eprintln!("checked {checked} code_for_ entries against the manifest's tags");
}

#[test]
fn spoken_inputs_parse() {
    let v = load();
    assert!(
        !v.spoken.is_empty(),
        "the vectors file has no spoken inputs"
    );
    for s in &v.spoken {
        let digits = u8::try_from(s.code.len()).unwrap();
        let got =
            parse_code_input(&s.input, digits).unwrap_or_else(|e| panic!("{:?}: {e}", s.input));
        assert_eq!(got.expose(), s.code, "{:?}", s.input);
    }
}
