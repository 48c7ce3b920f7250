//! `Handset`: the courier's device as one object. It backs the FFI surface and
//! the desktop handset: the store, the device key, and the clock in one place.

use crate::codes::Code;
use crate::confirmation::FailReason;
use crate::envelope::{Envelope, SigningKey, VerifyingKey};
use crate::error::Error;
use crate::input::{DEFAULT_LANGUAGES, Language, parse_code_input_in};
use crate::secrets::{self, SecretStore};
use crate::store::{
    Identity, Installed, OutboxItem, Recorded, RejectedItem, Status, StopView, Store, VerifyOutcome,
};
use chrono::{DateTime, Duration, Utc};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

/// Where time comes from; tests and simulations substitute their own.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The device's wall clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

pub struct Handset {
    store: Mutex<Store>,
    secrets: Arc<dyn SecretStore>,
    clock: Arc<dyn Clock>,
    /// The device key, loaded once: a Keystore round trip per verify would be slow.
    key: Mutex<Option<SigningKey>>,
    /// The languages spoken codes are read in, in order of priority. The app
    /// sets them (from the courier's settings or the customer's locale); they
    /// are not stored.
    languages: RwLock<Vec<Language>>,
}

impl Handset {
    /// Opens (or creates) the handset database at `db_path`.
    pub fn open(db_path: &Path, secrets: Arc<dyn SecretStore>) -> Result<Self, Error> {
        Self::open_with_clock(db_path, secrets, Arc::new(SystemClock))
    }

    pub fn open_with_clock(
        db_path: &Path,
        secrets: Arc<dyn SecretStore>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, Error> {
        Ok(Self {
            store: Mutex::new(Store::open(db_path)?),
            secrets,
            clock,
            key: Mutex::new(None),
            languages: RwLock::new(DEFAULT_LANGUAGES.to_vec()),
        })
    }

    /// Sets the languages spoken codes are read in, first one first when a
    /// word means different things in two of them. Repeats are dropped; an
    /// empty list means English, the default.
    pub fn set_languages(&self, languages: &[Language]) -> Result<(), Error> {
        let mut list: Vec<Language> = Vec::with_capacity(languages.len());
        for l in languages {
            if !list.contains(l) {
                list.push(*l);
            }
        }
        if list.is_empty() {
            list = DEFAULT_LANGUAGES.to_vec();
        }
        *self
            .languages
            .write()
            .map_err(|_| Error::Corrupt("the languages lock was poisoned".into()))? = list;
        Ok(())
    }

    /// The languages spoken codes are read in.
    pub fn languages(&self) -> Result<Vec<Language>, Error> {
        Ok(self
            .languages
            .read()
            .map_err(|_| Error::Corrupt("the languages lock was poisoned".into()))?
            .clone())
    }

    /// Runs `f` with the store; the one writer.
    pub fn with_store<T>(
        &self,
        f: impl FnOnce(&mut Store) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut store = self.lock()?;
        f(&mut store)
    }

    fn lock(&self) -> Result<MutexGuard<'_, Store>, Error> {
        self.store
            .lock()
            .map_err(|_| Error::Corrupt("the store lock was poisoned by a panic".into()))
    }

    /// Server time as best known: the device clock corrected by the offset
    /// measured at the last sync, so a wrong phone clock cannot revive an
    /// expired manifest.
    pub fn now(&self) -> Result<DateTime<Utc>, Error> {
        let offset = self.lock()?.clock_offset_ms()?;
        Ok(self.clock.now() + Duration::milliseconds(offset))
    }

    /// The device clock, uncorrected.
    pub fn device_now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The device's public key, creating the key pair on first call. Sent to
    /// the server at enrollment.
    pub fn device_public_key(&self) -> Result<[u8; 32], Error> {
        let seed = match self
            .secrets
            .get(secrets::DEVICE_KEY)
            .map_err(|e| Error::Secrets(e.0))?
        {
            Some(s) => seed_from(&s)?,
            None => {
                let k =
                    SigningKey::generate("pending").map_err(|e| Error::Secrets(e.to_string()))?;
                self.secrets
                    .put(secrets::DEVICE_KEY, k.seed())
                    .map_err(|e| Error::Secrets(e.0))?;
                *k.seed()
            }
        };
        let k =
            SigningKey::from_seed("pending", seed).map_err(|e| Error::Secrets(e.to_string()))?;
        Ok(k.public_key().public)
    }

    /// Records the identity the server assigned at enrollment.
    pub fn set_identity(&self, id: &Identity) -> Result<(), Error> {
        self.lock()?.set_identity(id)?;
        *self
            .key
            .lock()
            .map_err(|_| Error::Corrupt("key lock poisoned".into()))? = None;
        Ok(())
    }

    pub fn identity(&self) -> Result<Option<Identity>, Error> {
        self.lock()?.identity()
    }

    pub fn secrets(&self) -> &Arc<dyn SecretStore> {
        &self.secrets
    }

    fn with_key<T>(
        &self,
        f: impl FnOnce(&SigningKey, &mut Store) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut store = self.lock()?;
        let mut slot = self
            .key
            .lock()
            .map_err(|_| Error::Corrupt("key lock poisoned".into()))?;
        if slot.is_none() {
            let id = store.identity()?.ok_or(Error::NotEnrolled)?;
            let seed = self
                .secrets
                .get(secrets::DEVICE_KEY)
                .map_err(|e| Error::Secrets(e.0))?
                .ok_or(Error::NotEnrolled)?;
            let k = SigningKey::from_seed(id.device_id, seed_from(&seed)?)
                .map_err(|e| Error::Secrets(e.to_string()))?;
            *slot = Some(k);
        }
        let key = slot.as_ref().ok_or(Error::NotEnrolled)?;
        f(key, &mut store)
    }

    pub fn install_manifest(&self, env: &Envelope) -> Result<Installed, Error> {
        let now = self.now()?;
        self.lock()?.install_manifest(env, now)
    }

    /// Today's stops (every held manifest valid now) with each parcel's state.
    pub fn stops(&self) -> Result<Vec<StopView>, Error> {
        let now = self.now()?;
        self.lock()?.stops(now)
    }

    /// Reads the input for the parcel's code length, in the handset's
    /// languages. Unreadable input is an error that does not count as a try.
    pub fn read_code(&self, parcel_id: &str, input: &str) -> Result<Code, Error> {
        let now = self.now()?;
        let digits = self.lock()?.code_digits(parcel_id, now)?;
        Ok(parse_code_input_in(input, digits, &self.languages()?)?)
    }

    /// Whether asking the depot to resend the parcel's notice can help: the
    /// parcel is on a manifest valid now, needs a code, has no outcome and is
    /// neither held nor locked. The error says why not.
    pub fn check_resend(&self, parcel_id: &str) -> Result<(), Error> {
        let now = self.now()?;
        self.lock()?.code_digits(parcel_id, now).map(|_| ())
    }

    /// Checks a code offline against the parcel's tag; the try or the delivery
    /// is durable before this returns.
    pub fn verify(&self, parcel_id: &str, input: &str) -> Result<VerifyOutcome, Error> {
        let code = self.read_code(parcel_id, input)?;
        self.verify_code_offline(parcel_id, &code)
    }

    pub fn verify_code_offline(
        &self,
        parcel_id: &str,
        code: &Code,
    ) -> Result<VerifyOutcome, Error> {
        let now = self.now()?;
        self.with_key(|k, s| s.verify_offline(parcel_id, code, now, k))
    }

    /// Records what the server answered to an online verify.
    pub fn record_online_result(
        &self,
        parcel_id: &str,
        code: &Code,
        accepted: bool,
    ) -> Result<VerifyOutcome, Error> {
        let now = self.now()?;
        self.with_key(|k, s| s.record_online_result(parcel_id, code, accepted, now, k))
    }

    /// Hands over a parcel that needs no code.
    pub fn deliver(&self, parcel_id: &str) -> Result<Recorded, Error> {
        let now = self.now()?;
        self.with_key(|k, s| s.deliver_without_code(parcel_id, now, k))
    }

    pub fn fail(&self, parcel_id: &str, reason: FailReason) -> Result<Recorded, Error> {
        let now = self.now()?;
        self.with_key(|k, s| s.record_failure(parcel_id, reason, now, k))
    }

    pub fn pending_confirmations(&self, limit: u32) -> Result<Vec<OutboxItem>, Error> {
        self.lock()?.pending_confirmations(limit)
    }

    pub fn acknowledge(&self, confirmation_ids: &[String]) -> Result<u32, Error> {
        let now = self.now()?;
        self.lock()?.acknowledge(confirmation_ids, now)
    }

    pub fn reject(
        &self,
        confirmation_id: &str,
        reason: &str,
        permanent: bool,
    ) -> Result<(), Error> {
        self.lock()?.reject(confirmation_id, reason, permanent)
    }

    pub fn rejected_confirmations(&self) -> Result<Vec<RejectedItem>, Error> {
        self.lock()?.rejected_confirmations()
    }

    /// Wipes past days whose confirmations the server has all acknowledged.
    pub fn wipe_past(&self) -> Result<Vec<(String, String)>, Error> {
        let now = self.now()?;
        self.lock()?.wipe_past(now)
    }

    pub fn status(&self) -> Result<Status, Error> {
        let now = self.now()?;
        self.lock()?.status(now)
    }

    /// Signs the handset out: refuses while confirmations wait for upload
    /// (they would be lost) unless `force`, then deletes the device key and
    /// token from the secret store and every row of the database.
    pub fn sign_out(&self, force: bool) -> Result<(), Error> {
        let now = self.now()?;
        let mut store = self.lock()?;
        let pending = store.status(now)?.outbox_pending;
        if pending > 0 && !force {
            return Err(Error::PendingUploads(pending));
        }
        for name in [secrets::DEVICE_TOKEN, secrets::DEVICE_KEY] {
            self.secrets.delete(name).map_err(|e| Error::Secrets(e.0))?;
        }
        *self
            .key
            .lock()
            .map_err(|_| Error::Corrupt("key lock poisoned".into()))? = None;
        store.wipe_all()
    }

    /// The pinned server keys.
    pub fn server_keys(&self) -> Result<Vec<VerifyingKey>, Error> {
        self.lock()?.server_keys()
    }
}

fn seed_from(bytes: &[u8]) -> Result<[u8; 32], Error> {
    bytes
        .try_into()
        .map_err(|_| Error::Secrets("the stored device key is not 32 bytes; re-enroll".into()))
}
