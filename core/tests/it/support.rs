//! What the test modules share: an enrolled handset on a real SQLite file in
//! a temporary directory, against a test depot that signs its manifests.

use chrono::Utc;
use doorcode_core::Error;
use doorcode_core::b64;
use doorcode_core::codes::{self, Code};
use doorcode_core::envelope::Envelope;
use doorcode_core::handset::Handset;
use doorcode_core::secrets::MemorySecretStore;
use doorcode_core::store::{Installed, ParcelState, ParcelView, VerifyOutcome};
use doorcode_core::testkit::{FixedClock, ManifestSpec, TestDepot};
use std::path::PathBuf;
use std::sync::Arc;
use tempfile::TempDir;

/// One courier's handset, enrolled as `d-1`, and the depot that serves it.
pub struct Courier {
    pub dir: TempDir,
    pub depot: TestDepot,
    pub secrets: Arc<MemorySecretStore>,
    pub clock: Arc<FixedClock>,
    pub h: Handset,
    /// The manifest [`Courier::install`] builds.
    pub spec: ManifestSpec,
}

impl Courier {
    /// An enrolled handset holding nothing yet; `spec` is today's route of
    /// `stops` stops with `per_stop` parcels each.
    pub fn new(stops: usize, per_stop: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let depot = TestDepot::new();
        let secrets = Arc::new(MemorySecretStore::default());
        let clock = FixedClock::at(Utc::now());
        let h = depot
            .enrolled_handset(
                &dir.path().join("h.db"),
                secrets.clone(),
                clock.clone(),
                "d-1",
            )
            .unwrap();
        let spec = ManifestSpec::today("d-1", stops, per_stop);
        Self {
            dir,
            depot,
            secrets,
            clock,
            h,
            spec,
        }
    }

    /// Builds, signs and installs the manifest `spec` describes.
    pub fn install(&self) -> Result<Installed, Error> {
        self.h.install_manifest(&self.envelope())
    }

    /// Installs a manifest for `spec` under another manifest id (`m-forked`)
    /// at the same revision: other content the depot did not version.
    pub fn install_forked(&self) -> Result<Installed, Error> {
        let mut forked = self.depot.manifest(&self.spec);
        forked.manifest_id = "m-forked".into();
        self.h.install_manifest(&self.depot.seal(&forked))
    }

    /// A freshly built and signed manifest for `spec` (new salts each time).
    pub fn envelope(&self) -> Envelope {
        self.depot.seal(&self.depot.manifest(&self.spec))
    }

    /// The parcel's code at the spec's date and attempt.
    pub fn code(&self, pid: &str) -> String {
        self.depot
            .code(pid, self.spec.date, self.spec.attempt)
            .expose()
            .to_string()
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("h.db")
    }

    /// The same handset after the app was killed and started again.
    pub fn reopen(&mut self) {
        self.h = self
            .depot
            .enrolled_handset(&self.db(), self.secrets.clone(), self.clock.clone(), "d-1")
            .unwrap();
    }

    /// Every parcel of every stop, in route order, as the courier sees them.
    pub fn parcels(&self) -> Vec<ParcelView> {
        self.h
            .stops()
            .unwrap()
            .into_iter()
            .flat_map(|s| s.parcels)
            .collect()
    }

    pub fn view(&self, pid: &str) -> ParcelView {
        self.parcels()
            .into_iter()
            .find(|p| p.parcel_id == pid)
            .unwrap()
    }

    /// Enters `input` at the door for `pid` and asserts the parcel may be handed over.
    #[track_caller]
    pub fn assert_accepts(&self, pid: &str, input: &str) {
        let out = self.h.verify(pid, input).unwrap();
        assert!(
            matches!(out, VerifyOutcome::Accepted { .. }),
            "{pid}: {out:?}"
        );
    }

    /// The parcel's state and failed tries as the courier sees them.
    pub fn parcel(&self, pid: &str) -> (ParcelState, u32) {
        let p = self.view(pid);
        (p.state, p.failed_tries)
    }

    /// `n` codes that are wrong for `pid` and also miss the offline tag the
    /// handset holds for it, so each one is a counted wrong try.
    pub fn wrong_codes(&self, pid: &str, n: usize) -> Vec<String> {
        let (salt, tag, date, bits): (Vec<u8>, u32, String, u8) = self
            .h
            .with_store(|s| {
                Ok(s.connection().query_row(
                    "SELECT p.salt, p.tag, p.delivery_date, m.tag_bits FROM parcels p
                     JOIN manifests m USING (route_id, delivery_date) WHERE p.parcel_id = ?1",
                    [pid],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )?)
            })
            .unwrap();
        let salt: [u8; 16] = salt.try_into().unwrap();
        let date = chrono::NaiveDate::parse_from_str(&date, "%Y-%m-%d").unwrap();
        let real = self.code(pid);
        (0..1_000_000u32)
            .map(|i| format!("{i:06}"))
            .filter(|c| *c != real)
            .filter(|c| {
                let code = Code::new(c.clone()).unwrap();
                codes::offline_tag(&salt, pid, date, &code, bits).unwrap() != tag
            })
            .take(n)
            .collect()
    }

    /// One counted wrong try's worth of code for `pid`.
    pub fn wrong_code(&self, pid: &str) -> String {
        self.wrong_codes(pid, 1).remove(0)
    }

    /// Every byte of every file the handset keeps (database, WAL, ...).
    pub fn file_bytes(&self) -> Vec<u8> {
        drop(self.h.status());
        let mut bytes = Vec::new();
        for e in std::fs::read_dir(self.dir.path()).unwrap() {
            let p = e.unwrap().path();
            if p.is_file() {
                bytes.extend(std::fs::read(p).unwrap());
            }
        }
        bytes
    }
}

pub fn contains(hay: &[u8], needle: &str) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// The envelope with one byte of its decoded `body` or `sig` flipped.
pub fn flip(env: &Envelope, in_sig: bool, at: usize) -> Envelope {
    let mut e = env.clone();
    let field = if in_sig { &mut e.sig } else { &mut e.body };
    let mut bytes = b64::decode(field).unwrap();
    let i = at % bytes.len();
    bytes[i] ^= 0x01;
    *field = b64::encode(&bytes);
    e
}
