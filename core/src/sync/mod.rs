//! The sync client: enrollment, manifest pull, confirmation push and online
//! verify, over HTTPS with reqwest. Nothing the network sends can panic it or
//! corrupt the store: every answer is parsed into a typed shape first, and
//! the store only ever sees verified envelopes and acknowledgements.

use crate::codes::Code;
use crate::confirmation::FailReason;
use crate::envelope::{Envelope, VerifyingKey};
use crate::error::Error;
use crate::handset::Handset;
use crate::secrets;
use crate::store::{Identity, Installed, VerifyOutcome};
use crate::wire::{
    ConfirmationResults, DeviceOut, ErrorBody, ItemStatus, Keys, PublicKey, VerifyIn, VerifyOut,
    VerifyResult,
};
use crate::{b64, codes};
use chrono::{DateTime, NaiveDate, Utc};
use reqwest::StatusCode;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::Duration;

mod progress;
#[cfg(test)]
mod tests;

pub use progress::{NoProgress, SyncObserver, SyncProgress};

/// Knobs for the network side. The defaults suit a phone on a bad network.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// Whole-request timeout for sync calls.
    pub request_timeout: Duration,
    /// Timeout of an online verify at the door, after which the handset
    /// falls back to the offline check: the courier should not wait long.
    pub verify_timeout: Duration,
    /// Confirmations per upload request.
    pub batch_size: u32,
    /// Tries of one request within a single `sync` call.
    pub tries_per_request: u32,
    /// First backoff delay; doubled per failure, with jitter, up to `backoff_max`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Keep HTTP connections alive between requests (off in fault tests, so
    /// every request crosses the link afresh).
    pub reuse_connections: bool,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(20),
            verify_timeout: Duration::from_secs(3),
            batch_size: 100,
            tries_per_request: 3,
            backoff_base: Duration::from_millis(250),
            backoff_max: Duration::from_secs(300),
            reuse_connections: true,
        }
    }
}

/// What a sync did to the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum ManifestSync {
    Pulled {
        revision: u64,
        stops: usize,
        parcels: usize,
    },
    Unchanged {
        revision: Option<u64>,
    },
    /// The server has no route for this device that day.
    NoManifest,
    Failed {
        error: String,
    },
}

/// What one `sync` call did, for the app to show and to schedule the next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SyncReport {
    pub date: NaiveDate,
    pub manifest: ManifestSync,
    /// Confirmations the server accepted now.
    pub uploaded: u32,
    /// Confirmations it already had (an earlier upload whose answer was lost).
    pub duplicates: u32,
    /// Confirmations it refused for good: kept and shown, not retried.
    pub rejected: u32,
    /// Confirmations still waiting.
    pub pending: u32,
    /// Past days wiped after all their confirmations were acknowledged.
    pub wiped_days: u32,
    /// Whether the server answered at all.
    pub online: bool,
    /// When to try again, if anything is left or something failed.
    pub next_retry_ms: Option<u64>,
    pub clock_offset_ms: i64,
    pub errors: Vec<String>,
}

/// What one upload round did; `error` is why it stopped early, if it did.
#[derive(Debug, Default)]
pub struct PushOutcome {
    pub accepted: u32,
    pub duplicates: u32,
    pub rejected: u32,
    pub error: Option<Error>,
}

/// The Ed25519 keys of a published key list (`/.well-known/doorcode-keys`,
/// an enrollment's `server_keys`), each checked as a strong point.
pub fn keys_from(list: Vec<PublicKey>) -> Result<Vec<VerifyingKey>, Error> {
    list.into_iter()
        .filter(|k| k.alg == "Ed25519")
        .map(|k| {
            VerifyingKey::from_b64(k.kid, &k.public_key).map_err(|_| {
                Error::BadResponse("a server key is not a 32-byte base64url Ed25519 key".into())
            })
        })
        .collect()
}

/// Talks to the depot server for one handset.
pub struct SyncClient {
    http: reqwest::Client,
    handset: Arc<Handset>,
    cfg: SyncConfig,
}

fn transport(e: reqwest::Error) -> Error {
    if e.is_decode() || e.is_body() {
        Error::BadResponse(e.to_string())
    } else {
        Error::Offline(e.to_string())
    }
}

impl SyncClient {
    pub fn new(handset: Arc<Handset>) -> Result<Self, Error> {
        Self::with_config(handset, SyncConfig::default())
    }

    pub fn with_config(handset: Arc<Handset>, cfg: SyncConfig) -> Result<Self, Error> {
        // reqwest is built without a bundled crypto provider; use ring's.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder();
        if !cfg.reuse_connections {
            builder = builder.pool_max_idle_per_host(0);
        }
        let http = builder
            .timeout(cfg.request_timeout)
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("doorcode-handset/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Offline(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self { http, handset, cfg })
    }

    pub fn handset(&self) -> &Arc<Handset> {
        &self.handset
    }

    fn server(&self) -> Result<String, Error> {
        self.handset
            .with_store(|s| s.server_url())?
            .ok_or(Error::NotEnrolled)
    }

    fn token(&self) -> Result<String, Error> {
        let t = self
            .handset
            .secrets()
            .get(secrets::DEVICE_TOKEN)
            .map_err(|e| Error::Secrets(e.0))?
            .ok_or(Error::NotEnrolled)?;
        String::from_utf8(t)
            .map_err(|_| Error::Secrets("the stored device token is not text; re-enroll".into()))
    }

    /// Notes the server's clock from its `Date` header, so expiry is judged
    /// against server time rather than a phone clock that may be wrong.
    fn observe_clock(&self, resp: &reqwest::Response) {
        let Some(date) = resp
            .headers()
            .get(reqwest::header::DATE)
            .and_then(|v| v.to_str().ok())
        else {
            return;
        };
        let Ok(server) = DateTime::parse_from_rfc2822(date) else {
            return;
        };
        // The header has whole seconds: the server's clock was somewhere in the next second.
        let server = server.with_timezone(&Utc) + chrono::Duration::milliseconds(500);
        let offset = (server - self.handset.device_now()).num_milliseconds();
        let _ = self.handset.with_store(|s| {
            let old = s.clock_offset_ms()?;
            if (offset - old).abs() > 1_000 {
                s.set_clock_offset_ms(offset)?;
            }
            Ok(())
        });
    }

    /// Turns a non-success answer into an error that says what the server said.
    async fn refusal(resp: reqwest::Response) -> Error {
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED {
            return Error::Unauthorized;
        }
        let text = resp.text().await.unwrap_or_default();
        match serde_json::from_str::<ErrorBody>(&text) {
            Ok(b) => Error::Server {
                status: status.as_u16(),
                error: b.error,
                message: b.message,
            },
            Err(_) => Error::Server {
                status: status.as_u16(),
                error: "http_error".into(),
                message: status
                    .canonical_reason()
                    .unwrap_or("unexpected answer")
                    .into(),
            },
        }
    }

    /// The answer's JSON body if the server said yes; its refusal otherwise.
    async fn json_answer<T: DeserializeOwned>(resp: reqwest::Response) -> Result<T, Error> {
        if !resp.status().is_success() {
            return Err(Self::refusal(resp).await);
        }
        resp.json()
            .await
            .map_err(|e| Error::BadResponse(e.to_string()))
    }

    /// Like [`Self::json_answer`], read whole first so that a body cut short
    /// is a transport error and an unreadable one names `what` it was.
    async fn parsed_answer<T: DeserializeOwned>(
        resp: reqwest::Response,
        what: &str,
    ) -> Result<T, Error> {
        if !resp.status().is_success() {
            return Err(Self::refusal(resp).await);
        }
        let bytes = resp.bytes().await.map_err(transport)?;
        serde_json::from_slice(&bytes).map_err(|e| Error::BadResponse(format!("{what}: {e}")))
    }

    /// Backoff before try `n` (0-based) within one call: base·2ⁿ, capped, with
    /// "equal jitter" so a fleet coming back online does not retry in step.
    fn backoff(&self, n: u32) -> Duration {
        let exp = self
            .cfg
            .backoff_base
            .saturating_mul(1u32 << n.min(16))
            .min(self.cfg.backoff_max);
        let half = exp / 2;
        half + half.mul_f64(jitter())
    }

    /// Runs `op` up to `tries_per_request` times while it fails transiently.
    async fn retrying<T, F, Fut>(&self, mut op: F) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, Error>>,
    {
        let mut n = 0;
        loop {
            match op().await {
                Err(e) if e.is_transient() && n + 1 < self.cfg.tries_per_request => {
                    tokio::time::sleep(self.backoff(n)).await;
                    n += 1;
                }
                other => return other,
            }
        }
    }

    /// Enrolls this handset with a one-time code from dispatch: creates the
    /// device key, registers its public half, keeps the token in the secret
    /// store and pins the server's manifest keys.
    pub async fn enroll(
        &self,
        server_url: &str,
        enrollment_code: &str,
        device_name: &str,
    ) -> Result<Identity, Error> {
        let pending = self.handset.status()?.outbox_pending;
        if pending > 0 {
            return Err(Error::PendingUploads(pending));
        }
        let base = server_url.trim_end_matches('/').to_string();
        let public = self.handset.device_public_key()?;
        let resp = self
            .http
            .post(format!("{base}/v1/devices"))
            .json(&serde_json::json!({
                "enrollment_code": enrollment_code,
                "device_public_key": b64::encode(&public),
                "device_name": device_name,
            }))
            .send()
            .await
            .map_err(transport)?;
        self.observe_clock(&resp);
        let e: DeviceOut = Self::json_answer(resp).await?;
        let id = Identity {
            device_id: e.device_id,
            courier_id: e.courier_id,
            server_keys: keys_from(e.server_keys)?,
        };
        if id.server_keys.is_empty() {
            return Err(Error::BadResponse(
                "the server sent no Ed25519 signing key".into(),
            ));
        }
        self.handset
            .secrets()
            .put(secrets::DEVICE_TOKEN, e.device_token.as_bytes())
            .map_err(|e| Error::Secrets(e.0))?;
        self.handset.set_identity(&id)?;
        self.handset.with_store(|s| s.set_server_url(&base))?;
        Ok(id)
    }

    /// Pulls the day's manifest (a 304 when the held revision is current),
    /// verifies and installs it. A key the handset does not know is looked up
    /// once at the server's key document (key rotation) before giving up.
    pub async fn pull_manifest(&self, date: NaiveDate) -> Result<ManifestSync, Error> {
        let base = self.server()?;
        let token = self.token()?;
        let etag = self.handset.with_store(|s| s.etag_for(date))?;
        let resp = self
            .retrying(|| {
                let mut req = self
                    .http
                    .get(format!("{base}/v1/manifest?date={}", codes::date_str(date)))
                    .bearer_auth(&token);
                if let Some(t) = &etag {
                    req = req.header(reqwest::header::IF_NONE_MATCH, t);
                }
                async move {
                    let resp = req.send().await.map_err(transport)?;
                    self.observe_clock(&resp);
                    match resp.status() {
                        StatusCode::NOT_MODIFIED => Ok(None),
                        s if s.is_success() => {
                            let bytes = read_capped(resp, MAX_MANIFEST_BYTES).await?;
                            let env: Envelope = serde_json::from_slice(&bytes).map_err(|e| {
                                Error::BadResponse(format!("the manifest envelope: {e}"))
                            })?;
                            Ok(Some(env))
                        }
                        _ => Err(Self::refusal(resp).await),
                    }
                }
            })
            .await;
        let env = match resp {
            Ok(Some(env)) => env,
            Ok(None) => {
                let revision = etag
                    .as_deref()
                    .and_then(|t| t.trim_matches('"').rsplit(':').next()?.parse().ok());
                return Ok(ManifestSync::Unchanged { revision });
            }
            Err(Error::Server { status: 404, .. }) => return Ok(ManifestSync::NoManifest),
            Err(e) => return Err(e),
        };
        let installed = match self.handset.install_manifest(&env) {
            Err(Error::UnknownKey(_)) => {
                self.refresh_keys().await?;
                self.handset.install_manifest(&env)?
            }
            other => other?,
        };
        Ok(match installed {
            Installed::New {
                revision,
                stops,
                parcels,
                ..
            } => ManifestSync::Pulled {
                revision,
                stops,
                parcels,
            },
            Installed::Unchanged { revision, .. } => ManifestSync::Unchanged {
                revision: Some(revision),
            },
        })
    }

    /// Adds the server's currently published keys to the pinned set. Only used
    /// over the authenticated connection to the enrolled server.
    async fn refresh_keys(&self) -> Result<(), Error> {
        let base = self.server()?;
        let resp = self
            .http
            .get(format!("{base}/.well-known/doorcode-keys"))
            .send()
            .await
            .map_err(transport)?;
        let doc: Keys = Self::json_answer(resp).await?;
        let keys = keys_from(doc.keys)?;
        self.handset.with_store(|s| s.add_server_keys(&keys))
    }

    /// Uploads pending confirmations in `seq` order, in batches. Accepted and
    /// duplicate items are acknowledged; a permanent rejection is kept aside
    /// and does not block the rest; a temporary one stops this round. The
    /// counts cover the batches that went through even when a later one failed.
    pub async fn push_confirmations(&self) -> PushOutcome {
        self.push_observed(&NoProgress).await
    }

    /// [`Self::push_confirmations`], reporting n of m to `progress`.
    async fn push_observed(&self, progress: &dyn SyncObserver) -> PushOutcome {
        let mut out = PushOutcome::default();
        if let Err(e) = self.push_batches(&mut out, progress).await {
            out.error = Some(e);
        }
        out
    }

    async fn push_batches(
        &self,
        out: &mut PushOutcome,
        progress: &dyn SyncObserver,
    ) -> Result<(), Error> {
        let base = self.server()?;
        let token = self.token()?;
        let total = self.handset.status()?.outbox_pending;
        if total > 0 {
            progress.on_progress(&SyncProgress::Uploading { done: 0, total });
        }
        loop {
            let batch = self.handset.pending_confirmations(self.cfg.batch_size)?;
            if batch.is_empty() {
                break;
            }
            let envelopes: Vec<&Envelope> = batch.iter().map(|i| &i.envelope).collect();
            let body = serde_json::json!({ "confirmations": envelopes });
            let answer: ConfirmationResults = self
                .retrying(|| {
                    let req = self
                        .http
                        .post(format!("{base}/v1/confirmations"))
                        .bearer_auth(&token)
                        .json(&body);
                    async move {
                        let resp = req.send().await.map_err(transport)?;
                        self.observe_clock(&resp);
                        Self::parsed_answer(resp, "the upload answer").await
                    }
                })
                .await?;
            let mut acks = Vec::new();
            let mut temporary = false;
            let mut rejected_now = false;
            for r in answer.results {
                let Some(item) = batch.get(r.index) else {
                    continue;
                };
                match r.status {
                    ItemStatus::Accepted => {
                        out.accepted += 1;
                        acks.push(item.confirmation_id.clone());
                    }
                    ItemStatus::Duplicate => {
                        out.duplicates += 1;
                        acks.push(item.confirmation_id.clone());
                    }
                    ItemStatus::Rejected => {
                        let reason = r.reason.map_or("rejected", |r| r.as_str());
                        let permanent = r.permanent.unwrap_or(true);
                        self.handset
                            .reject(&item.confirmation_id, reason, permanent)?;
                        if permanent {
                            out.rejected += 1;
                            rejected_now = true;
                        } else {
                            temporary = true;
                        }
                    }
                    // A word this client does not know: try again later.
                    ItemStatus::Unknown => temporary = true,
                }
            }
            let progressed = !acks.is_empty() || rejected_now;
            self.handset.acknowledge(&acks)?;
            let done = out.accepted + out.duplicates + out.rejected;
            // Outcomes recorded during the sync join the queue: m grows.
            progress.on_progress(&SyncProgress::Uploading {
                done,
                total: total.max(done),
            });
            if temporary || !progressed {
                return Ok(());
            }
        }
        Ok(())
    }

    /// A whole sync: pull the day's manifest, push confirmations, wipe past
    /// days. Fails as a whole only for what no retry fixes (not enrolled,
    /// the token refused); anything else is in the report, with when to try
    /// again.
    pub async fn sync(&self, date: Option<NaiveDate>) -> Result<SyncReport, Error> {
        self.sync_observed(date, &NoProgress).await
    }

    /// [`Self::sync`], telling `progress` each step as it happens: started,
    /// manifest pulled, n of m uploaded, then done or failed (always last).
    pub async fn sync_observed(
        &self,
        date: Option<NaiveDate>,
        progress: &dyn SyncObserver,
    ) -> Result<SyncReport, Error> {
        let result = self.sync_steps(date, progress).await;
        progress.on_progress(&match &result {
            Ok(report) => SyncProgress::Done {
                report: report.clone(),
            },
            Err(e) => SyncProgress::Failed {
                error: e.to_string(),
            },
        });
        result
    }

    async fn sync_steps(
        &self,
        date: Option<NaiveDate>,
        progress: &dyn SyncObserver,
    ) -> Result<SyncReport, Error> {
        // Fail fast on what no retry fixes.
        self.server()?;
        self.token()?;
        let date = match date {
            Some(d) => d,
            None => self
                .handset
                .now()?
                .with_timezone(&chrono::Local)
                .date_naive(),
        };
        progress.on_progress(&SyncProgress::Started { date });
        let mut errors = Vec::new();
        let mut online = false;
        let manifest = match self.pull_manifest(date).await {
            Ok(m) => {
                online = true;
                m
            }
            Err(Error::Unauthorized) => return Err(Error::Unauthorized),
            Err(e) => {
                online |= !matches!(e, Error::Offline(_));
                errors.push(format!("manifest: {e}"));
                ManifestSync::Failed {
                    error: e.to_string(),
                }
            }
        };
        progress.on_progress(&SyncProgress::ManifestPulled {
            manifest: manifest.clone(),
        });
        let push = self.push_observed(progress).await;
        online |= push.accepted + push.duplicates + push.rejected > 0;
        match push.error {
            Some(Error::Unauthorized) => return Err(Error::Unauthorized),
            Some(e) => errors.push(format!("upload: {e}")),
            None => online = true,
        }
        let (uploaded, duplicates, rejected) = (push.accepted, push.duplicates, push.rejected);
        let wiped_days = u32::try_from(self.handset.wipe_past()?.len()).unwrap_or(u32::MAX);
        let pending = self.handset.status()?.outbox_pending;
        let now = self.handset.now()?;
        let next_retry_ms = self.handset.with_store(|s| {
            if errors.is_empty() {
                s.mark_synced(now)?;
                s.set_sync_failures(0)?;
            } else {
                let n = s.sync_failures()?.saturating_add(1);
                s.set_sync_failures(n)?;
            }
            Ok(())
        });
        next_retry_ms?;
        let failures = self.handset.with_store(|s| s.sync_failures())?;
        let next_retry_ms = if pending > 0 || !errors.is_empty() {
            Some(u64::try_from(self.backoff(failures).as_millis()).unwrap_or(u64::MAX))
        } else {
            None
        };
        Ok(SyncReport {
            date,
            manifest,
            uploaded,
            duplicates,
            rejected,
            pending,
            wiped_days,
            online,
            next_retry_ms,
            clock_offset_ms: self.handset.with_store(|s| s.clock_offset_ms())?,
            errors,
        })
    }

    /// Checks a code at the door: online first when the server answers, else
    /// the offline tag. Unreadable input fails before anything is sent or
    /// counted. The outcome says which way it was verified.
    pub async fn verify(&self, parcel_id: &str, input: &str) -> Result<VerifyOutcome, Error> {
        let code = self.handset.read_code(parcel_id, input)?;
        match self.verify_online(parcel_id, &code).await {
            Ok(answer) => match answer.result {
                VerifyResult::Accepted => self.handset.record_online_result(parcel_id, &code, true),
                VerifyResult::Rejected => {
                    let out = self.handset.record_online_result(parcel_id, &code, false)?;
                    // The server's count is authoritative; if it has none left, lock here too.
                    if answer.attempts_left == Some(0) {
                        return self.lock(parcel_id);
                    }
                    Ok(out)
                }
                VerifyResult::Locked => self.lock(parcel_id),
                VerifyResult::Unknown => Err(Error::BadResponse(
                    "a verify result this handset does not know".into(),
                )),
            },
            Err(e) if e.is_transient() || matches!(e, Error::NotEnrolled) => {
                self.handset.verify_code_offline(parcel_id, &code)
            }
            Err(e) => Err(e),
        }
    }

    fn lock(&self, parcel_id: &str) -> Result<VerifyOutcome, Error> {
        let now = self.handset.now()?;
        self.handset.with_store(|s| s.lock_parcel(parcel_id, now))?;
        Ok(VerifyOutcome::Locked {
            parcel_id: parcel_id.to_string(),
            verified: crate::confirmation::Verified::Online,
        })
    }

    async fn verify_online(&self, parcel_id: &str, code: &Code) -> Result<VerifyOut, Error> {
        let base = self.server()?;
        let token = self.token()?;
        let resp = self
            .http
            .post(format!("{base}/v1/verify"))
            .timeout(self.cfg.verify_timeout)
            .bearer_auth(token)
            .json(&VerifyIn {
                parcel_id: parcel_id.to_string(),
                code: code.expose().to_string(),
            })
            .send()
            .await
            .map_err(transport)?;
        self.observe_clock(&resp);
        Self::parsed_answer(resp, "the verify answer").await
    }

    /// Asks the depot to send the customer's notice for `parcel_id` again:
    /// the customer says the code never arrived. The code stays the same.
    ///
    /// Checked here first, without the network: the parcel must be on a
    /// manifest valid now, need a code, have no outcome, and be neither held
    /// nor locked (a resend cannot help those). The depot then allows it only
    /// for a parcel on this courier's current route, and at most once per
    /// parcel per 10 minutes, a limit it shares with the customer's own
    /// "send it again" (`ResendTooSoon`). Not retried: a resend whose answer
    /// was lost would only meet that limit.
    pub async fn resend(&self, parcel_id: &str) -> Result<(), Error> {
        self.handset.check_resend(parcel_id)?;
        let base = self.server()?;
        let token = self.token()?;
        let mut url = reqwest::Url::parse(&base).map_err(|_| {
            Error::Corrupt(format!("the stored server address {base:?} is not a URL"))
        })?;
        url.path_segments_mut()
            .map_err(|_| {
                Error::Corrupt(format!(
                    "the stored server address {base:?} cannot take a path"
                ))
            })?
            .pop_if_empty()
            .extend(["v1", "parcels", parcel_id, "resend"]);
        let resp = self
            .http
            .post(url)
            .bearer_auth(token)
            .send()
            .await
            .map_err(transport)?;
        self.observe_clock(&resp);
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after_s = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        match Self::refusal(resp).await {
            Error::Server { status: 429, .. } => Err(Error::ResendTooSoon {
                parcel_id: parcel_id.to_string(),
                retry_after_s,
            }),
            Error::Server {
                status: code @ (403 | 404 | 409),
                message,
                ..
            } => Err(Error::ResendRefused {
                parcel_id: parcel_id.to_string(),
                status: code,
                message,
            }),
            other => Err(other),
        }
    }

    /// Records a failed delivery (no network needed; it uploads on the next sync).
    pub fn fail(
        &self,
        parcel_id: &str,
        reason: FailReason,
    ) -> Result<crate::store::Recorded, Error> {
        self.handset.fail(parcel_id, reason)
    }
}

/// The largest manifest envelope a handset reads. The biggest manifest the
/// rules allow (20,000 parcels) is a few MB; fields the handset ignores may
/// add some, but nothing the network sends may grow memory without bound.
pub const MAX_MANIFEST_BYTES: usize = 16 << 20;

/// The answer's body, refused once it passes `cap` bytes (before it is all
/// read, whatever `Content-Length` claims).
async fn read_capped(mut resp: reqwest::Response, cap: usize) -> Result<Vec<u8>, Error> {
    let too_big = || Error::BadResponse(format!("the answer is larger than {cap} bytes"));
    if resp
        .content_length()
        .is_some_and(|n| n > u64::try_from(cap).unwrap_or(u64::MAX))
    {
        return Err(too_big());
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(transport)? {
        if body.len() + chunk.len() > cap {
            return Err(too_big());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A uniform random number in [0, 1) from the OS CSPRNG.
fn jitter() -> f64 {
    use ring::rand::SecureRandom as _;
    let mut b = [0u8; 4];
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        return 0.5;
    }
    f64::from(u32::from_be_bytes(b)) / (f64::from(u32::MAX) + 1.0)
}
