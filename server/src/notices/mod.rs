//! Customer notices: the text, the channels and the background sender that
//! drains the outbox. Delivery is at-least-once: a notice is claimed with a
//! lease, sent, then marked sent; a crash between send and mark resends it.
//! The code is derived at send time, so the outbox never stores it.
//!
//! A notice goes to every configured channel the recipient has an address
//! for. One that reaches some channels and fails on others is retried on the
//! failed ones only: the channels it reached are recorded at the head of the
//! notice's `last_error` (`done=smtp-1a2b3c4d,…; <errors>`), which the next
//! claim reads back ([`Progress`]).

pub mod file;
pub mod smtp;
pub mod webhook;

use crate::config::Config;
use crate::keys::TrackKey;
use crate::metrics::Metrics;
use crate::storage::{NoticeJob, ParcelContact, Storage, StorageError};
use chrono::{DateTime, NaiveDate, Utc};
use doorcode_core::codes::{Code, CodeKey};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

const MAX_TRIES: u32 = 8;
const BATCH: u32 = 50;
/// Characters of one channel's error kept in the outbox (a server's reply
/// can be long).
const MAX_ERROR: usize = 300;

/// Where notices go.
#[derive(Debug, Clone)]
pub enum Channel {
    /// One JSON file per message in a directory.
    File(PathBuf),
    /// An SMTP server (email).
    Smtp(Box<smtp::Smtp>),
    /// A signed JSON POST, e.g. to an SMS gateway (the phone number).
    Webhook(webhook::Webhook),
}

impl Channel {
    /// Parse `file:DIR`, `smtp[s]://…` or `webhook:URL`; webhooks are signed
    /// with `secret`, which they need.
    pub fn parse(s: &str, secret: Option<&Arc<webhook::Secret>>) -> Result<Self, String> {
        if let Some(dir) = s.strip_prefix("file:") {
            if dir.is_empty() {
                return Err("file: needs a directory".into());
            }
            return Ok(Channel::File(PathBuf::from(dir)));
        }
        if s.starts_with("smtp://") || s.starts_with("smtps://") {
            return Ok(Channel::Smtp(Box::new(smtp::Smtp::parse(s)?)));
        }
        if let Some(url) = s.strip_prefix("webhook:") {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err("webhook: needs an http:// or https:// URL".into());
            }
            let secret = secret.ok_or(
                "webhook: channels are signed: give --webhook-secret whsec_<base64> (or DOORCODE_WEBHOOK_SECRET)",
            )?;
            return Ok(Channel::Webhook(webhook::Webhook {
                url: url.to_string(),
                secret: secret.clone(),
            }));
        }
        Err(format!(
            "unknown notice channel {:?}; use file:DIR, smtp://HOST:PORT, smtps://USER:PASS@HOST or webhook:URL",
            smtp::redact(s)
        ))
    }

    /// The channels of a configuration: every `--notify`, or `file:` in the
    /// data dir when there is none.
    pub fn from_config(cfg: &Config) -> Result<Vec<Self>, String> {
        let secret = cfg
            .webhook_secret
            .as_deref()
            .map(webhook::Secret::parse)
            .transpose()?
            .map(Arc::new);
        if cfg.notify.is_empty() {
            return Ok(vec![Channel::File(cfg.data_dir.join("notices"))]);
        }
        let channels = cfg
            .notify
            .iter()
            .map(|s| Channel::parse(s, secret.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        for c in &channels {
            if let Channel::Smtp(s) = c
                && s.security == smtp::Security::None
                && !smtp::is_loopback(&s.host)
            {
                tracing::warn!(channel = %s.display(), "notices (with their codes) go to this SMTP relay unencrypted; use smtps:// or ?tls=starttls unless the network to it is trusted");
            }
        }
        Ok(channels)
    }

    pub fn name(&self) -> &'static str {
        match self {
            Channel::File(_) => "file",
            Channel::Smtp(_) => "smtp",
            Channel::Webhook(_) => "webhook",
        }
    }

    /// The channel as it may be logged: no password, no URL query.
    pub fn display(&self) -> String {
        match self {
            Channel::File(d) => format!("file:{}", d.display()),
            Channel::Smtp(s) => s.display(),
            Channel::Webhook(w) => w.display(),
        }
    }

    /// A short name that stays the same across restarts while the channel
    /// points at the same place (credentials may change): `smtp-1a2b3c4d`.
    pub fn key(&self) -> String {
        let place = match self {
            Channel::File(d) => d.display().to_string(),
            Channel::Smtp(s) => s.identity(),
            Channel::Webhook(w) => w.url.clone(),
        };
        let h = ring::digest::digest(&ring::digest::SHA256, place.as_bytes());
        let hex: String = h.as_ref()[..4].iter().map(|b| format!("{b:02x}")).collect();
        format!("{}-{hex}", self.name())
    }
}

/// What an attempt at a notice left: the channels it reached, and the error
/// of each it did not, as stored in the notice's `last_error`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub done: Vec<String>,
    pub errors: Vec<(String, String)>,
}

impl Progress {
    /// The channels a stored `last_error` says were reached; anything else
    /// (an older error text, none) reached none.
    pub fn read(last_error: Option<&str>) -> Self {
        let done = last_error
            .and_then(|e| e.strip_prefix("done="))
            .map(|rest| rest.split(';').next().unwrap_or(""))
            .map(|list| {
                list.split(',')
                    .map(str::trim)
                    .filter(|k| {
                        !k.is_empty()
                            && k.chars()
                                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    })
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        Self {
            done,
            errors: Vec::new(),
        }
    }

    /// The text for `last_error`: `done=KEY,…; KEY: error; …`.
    pub fn text(&self) -> String {
        let errors = self
            .errors
            .iter()
            .map(|(k, e)| format!("{k}: {}", e.chars().take(MAX_ERROR).collect::<String>()))
            .collect::<Vec<_>>()
            .join("; ");
        if self.done.is_empty() {
            errors
        } else {
            format!("done={}; {errors}", self.done.join(","))
        }
    }
}

/// One rendered message, as the file and webhook channels write it.
#[derive(Debug, Serialize)]
pub struct Message {
    pub channel: String,
    pub to: String,
    pub subject: String,
    pub body: String,
    pub parcel_id: String,
    pub code: String,
    pub track_url: String,
}

pub fn track_url(base: &str, token: &str) -> String {
    format!("{}/track/{token}", base.trim_end_matches('/'))
}

/// What sending a notice needs: the channels and the HTTP client, the code
/// key (codes are derived at send time), the track links' base URL, the
/// clock and the counters. Cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    channels: Arc<Vec<Channel>>,
    http: reqwest::Client,
    public_url: Arc<String>,
    code_key: Arc<CodeKey>,
    /// Links are derived at send time too (`TrackKey`): the outbox row holds
    /// neither code nor link.
    track_key: Arc<TrackKey>,
    cfg: Arc<Config>,
    metrics: Arc<Metrics>,
}

impl Notifier {
    pub fn new(
        channels: Vec<Channel>,
        http: reqwest::Client,
        public_url: String,
        code_key: Arc<CodeKey>,
        track_key: Arc<TrackKey>,
        cfg: Arc<Config>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            channels: Arc::new(channels),
            http,
            public_url: Arc::new(public_url),
            code_key,
            track_key,
            cfg,
            metrics,
        }
    }

    pub fn channels(&self) -> &[Channel] {
        &self.channels
    }

    /// The directories of the file channels (the retention job cleans them).
    pub fn file_dirs(&self) -> impl Iterator<Item = &PathBuf> {
        self.channels.iter().filter_map(|c| match c {
            Channel::File(d) => Some(d),
            _ => None,
        })
    }

    /// The base URL of track links (`--public-url`).
    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    /// The recipient's address on `ch`, if it has one: email channels take
    /// the email, SMS channels the phone; a lone `file:` takes every notice.
    fn address<'a>(&self, ch: &Channel, p: &'a ParcelContact) -> Option<&'a str> {
        match ch {
            Channel::File(_) if self.channels.len() == 1 => Some(
                p.email
                    .as_deref()
                    .or(p.phone.as_deref())
                    .unwrap_or_default(),
            ),
            Channel::File(_) | Channel::Smtp(_) => p.email.as_deref(),
            Channel::Webhook(_) => p.phone.as_deref(),
        }
    }

    /// The notice for a parcel's day and code, addressed to `to` on `ch`.
    fn message(
        &self,
        ch: &Channel,
        to: &str,
        p: &ParcelContact,
        date: NaiveDate,
        code: &Code,
    ) -> Message {
        let track = self.parcel_track_url(p);
        let (subject, body) = render(p, date, code, &track);
        Message {
            channel: ch.name().to_string(),
            to: to.to_string(),
            subject,
            body,
            parcel_id: p.parcel_id.clone(),
            code: code.expose().to_string(),
            track_url: track,
        }
    }

    /// The customer's tracking link for a track token.
    pub fn track_url(&self, token: &str) -> String {
        track_url(&self.public_url, token)
    }

    /// The parcel's tracking link, derived from its stored nonce. A row
    /// without one (written by an older server after the conversion) has no
    /// working link: the base URL with an empty token, which answers 404.
    pub fn parcel_track_url(&self, p: &ParcelContact) -> String {
        let token = p
            .track_nonce
            .as_deref()
            .map(|n| self.track_key.token(&p.parcel_id, n))
            .unwrap_or_default();
        self.track_url(&token)
    }

    /// Send the notice on every channel the recipient has an address for,
    /// except those `progress` says it reached already, and record each
    /// result there. `file_id` names the files; `msg_id` is the webhook-id
    /// and Message-ID (the same on every try of one notice) and what the
    /// log lines name. Returns how many channels the recipient has an
    /// address on (0: the notice can go nowhere).
    async fn send_all(
        &self,
        p: &ParcelContact,
        date: NaiveDate,
        code: &Code,
        file_id: i64,
        msg_id: &str,
        progress: &mut Progress,
    ) -> usize {
        let mut tried = 0;
        for ch in self.channels.iter() {
            let key = ch.key();
            let Some(to) = self.address(ch, p) else {
                continue;
            };
            tried += 1;
            if progress.done.contains(&key) {
                continue;
            }
            let msg = self.message(ch, to, p, date, code);
            let r = match ch {
                Channel::File(dir) => file::write(dir, file_id, &msg).await,
                Channel::Smtp(s) => s.send(to, msg.subject, msg.body, msg_id).await,
                Channel::Webhook(w) => w.send(&self.http, msg_id, &msg).await,
            };
            match r {
                Ok(()) => {
                    self.metrics.notice(ch.name(), "sent");
                    tracing::info!(channel = ch.name(), %key, message_id = msg_id, "notice sent");
                    progress.done.push(key);
                }
                Err(e) => {
                    self.metrics.notice(ch.name(), "failed");
                    tracing::warn!(channel = ch.name(), %key, message_id = msg_id, error = %e, "notice send failed");
                    progress.errors.push((key, e));
                }
            }
        }
        tried
    }
}

/// The webhook-id and Message-ID of an outbox notice: its row id and a
/// digest of what it is about, so retries share it and another database's
/// notice with the same row id does not.
fn notice_msg_id(job: &NoticeJob) -> String {
    let about = format!("{}\n{}\n{}", job.parcel_id, job.delivery_date, job.attempt);
    let h = ring::digest::digest(&ring::digest::SHA256, about.as_bytes());
    let hex: String = h.as_ref()[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("msg_{}_{hex}", job.notice_id)
}

/// The notice text: the parcel and its day, the code for this parcel only,
/// share only in person at the door, valid for that day, and what to do if
/// nothing was ordered.
pub fn render(p: &ParcelContact, date: NaiveDate, code: &Code, track: &str) -> (String, String) {
    let day = date.format("%A %-d %B %Y");
    let subject = format!("Your delivery code for parcel {} on {date}", p.parcel_id);
    // A later attempt follows a reissue or a day's close: the old code is void.
    let replaces = if p.attempt > 1 {
        "This is a new code: any code you received before for this parcel no longer works.\n\n"
    } else {
        ""
    };
    let body = format!(
        "Hello {name},\n\n\
         Your parcel {pid} is due to be delivered on {day} ({date}).\n\n\
         Your delivery code: {code}\n\n\
         {replaces}\
         - This code is for handing over parcel {pid} only.\n\
         - Share it only in person, with the courier at your door. Never give it out by phone, \
         by text message or through a link, whoever asks. We will never ask you for it.\n\
         - It is valid on {date} only. If the delivery moves to another day, you get a new code.\n\
         - If you did not order anything, do not share this code with anyone. Press \
         \"I did not order this\" on the tracking page: {track}#not-mine\n\n\
         Track your parcel: {track}\n",
        name = p.recipient_name,
        pid = p.parcel_id,
        code = code.expose(),
    );
    (subject, body)
}

fn backoff(tries: u32) -> chrono::Duration {
    let secs = 2i64.saturating_pow(tries.min(10)).min(600);
    chrono::Duration::seconds(secs)
}

async fn handle(
    n: &Notifier,
    s: &dyn Storage,
    job: NoticeJob,
    now: DateTime<Utc>,
) -> Result<(), StorageError> {
    let Some(p) = s.parcel_contact(&job.parcel_id).await? else {
        return s
            .notice_failed(job.notice_id, "parcel no longer exists", None)
            .await;
    };
    if p.delivery_date != Some(job.delivery_date)
        || p.attempt != job.attempt
        || p.status == crate::domain::ParcelState::Delivered
    {
        // Superseded by a newer attempt (which has its own notice) or done.
        return s.notice_failed(job.notice_id, "superseded", None).await;
    }
    let code = match doorcode_core::codes::derive_code(
        &n.code_key,
        &p.parcel_id,
        job.delivery_date,
        job.attempt,
        n.cfg.code_digits,
    ) {
        Ok(c) => c,
        Err(e) => return s.notice_failed(job.notice_id, &e.to_string(), None).await,
    };
    let mut progress = Progress::read(job.last_error.as_deref());
    let msg_id = notice_msg_id(&job);
    let tried = n
        .send_all(
            &p,
            job.delivery_date,
            &code,
            job.notice_id,
            &msg_id,
            &mut progress,
        )
        .await;
    if tried == 0 {
        // Retrying cannot help; dispatch sees it in the parcel and the outbox metrics.
        n.metrics.notice("none", "failed");
        tracing::warn!(
            notice_id = job.notice_id,
            "recipient has no address for any channel"
        );
        return s
            .notice_failed(job.notice_id, "no address for any channel", None)
            .await;
    }
    if progress.errors.is_empty() {
        return s.notice_sent(job.notice_id, now).await;
    }
    let tries = job.tries + 1;
    let retry = (tries < MAX_TRIES).then(|| now + backoff(tries));
    tracing::warn!(
        notice_id = job.notice_id,
        tries,
        reached = progress.done.len(),
        failed = progress.errors.len(),
        "notice to be retried on the channels that failed"
    );
    s.notice_failed(job.notice_id, &progress.text(), retry)
        .await
}

/// Send the current notice again right now, outside the outbox (the
/// customer's "resend" on the tracking page, which reports failure to them
/// instead of retrying): on every channel the recipient has an address
/// for; fine if one of them took it. Errors are short and never contain
/// the code.
pub async fn send_now(
    n: &Notifier,
    p: &ParcelContact,
    date: NaiveDate,
    code: &Code,
) -> Result<(), String> {
    let mut progress = Progress::default();
    // Resends have no outbox row: files numbered after the clock, and a
    // webhook-id of their own (this is a new message, not a retry).
    let id = n.cfg.now().timestamp_millis();
    let msg_id = format!("resend_{}", uuid::Uuid::new_v4().simple());
    let tried = n.send_all(p, date, code, id, &msg_id, &mut progress).await;
    if tried == 0 {
        return Err("no address for any channel".into());
    }
    if progress.done.is_empty() {
        return Err(progress.text());
    }
    Ok(())
}

/// Drain due notices once; returns how many were attempted.
///
/// The batch is claimed for `notice_lease` and, while this sender works
/// through it, the claims of the notices not yet done are renewed every
/// third of the lease, so another node never takes over a notice from a
/// sender that is alive, however slow the channel (two nodes and a gateway
/// answering in 6 s used to send 15 notices as 20 POSTs). A sender that
/// dies stops renewing, and its notices come back after one lease.
pub async fn drain_once(n: &Notifier, store: &dyn Storage) -> Result<usize, StorageError> {
    let lease = n.cfg.notice_lease;
    let lease_secs = i64::try_from(lease.as_secs()).unwrap_or(i64::MAX).max(1);
    let now = n.cfg.now();
    let jobs = store.claim_notices(now, lease_secs, BATCH).await?;
    let count = jobs.len();
    let open: std::sync::Mutex<Vec<i64>> =
        std::sync::Mutex::new(jobs.iter().map(|j| j.notice_id).collect());
    let work = async {
        for job in jobs {
            let id = job.notice_id;
            handle(n, store, job, n.cfg.now()).await?;
            if let Ok(mut o) = open.lock() {
                o.retain(|x| *x != id);
            }
        }
        Ok::<_, StorageError>(())
    };
    let renew = async {
        let every = (lease / 3).max(Duration::from_millis(100));
        loop {
            tokio::time::sleep(every).await;
            let ids = open.lock().map(|o| o.clone()).unwrap_or_default();
            if ids.is_empty() {
                continue;
            }
            let until = n.cfg.now() + chrono::Duration::seconds(lease_secs);
            if let Err(e) = store.renew_notice_claims(&ids, until).await {
                tracing::warn!(error = %e, "could not renew the notice claims");
            }
        }
    };
    tokio::select! {
        r = work => r?,
        () = renew => {}
    }
    Ok(count)
}

/// The background sender: wakes on new notices (`wake`) or every poll
/// interval, and drains the outbox of `store` through `n`.
pub async fn run_sender(
    n: Notifier,
    store: Arc<dyn Storage>,
    wake: Arc<Notify>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        match drain_once(&n, store.as_ref()).await {
            Ok(n) if n > 0 => continue,
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "notice outbox"),
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(n.cfg.notice_poll) => {}
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> Arc<webhook::Secret> {
        Arc::new(webhook::Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap())
    }

    #[test]
    fn channel_parsing() {
        let w = Some(secret());
        let parse = |s: &str| Channel::parse(s, w.as_ref());
        assert!(matches!(parse("file:/tmp/x"), Ok(Channel::File(_))));
        assert!(matches!(parse("smtp://127.0.0.1:2525"), Ok(Channel::Smtp(s)) if s.port == 2525));
        assert!(matches!(parse("smtp://mail"), Ok(Channel::Smtp(s)) if s.port == 25));
        assert!(matches!(parse("smtps://u:p@mail"), Ok(Channel::Smtp(s)) if s.port == 465));
        assert!(matches!(
            parse("webhook:https://sms.example/send"),
            Ok(Channel::Webhook(_))
        ));
        assert!(parse("smtp://h:x").is_err());
        assert!(parse("webhook:ftp://x").is_err());
        assert!(parse("carrier-pigeon").is_err());
        let e = Channel::parse("webhook:https://sms.example/send", None).unwrap_err();
        assert!(e.contains("--webhook-secret"), "{e}");
        let e = parse("smtpx://u:hunter2@h").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn channel_keys_ignore_credentials() {
        let a = Channel::parse("smtps://u:one@mail.example", None).unwrap();
        let b = Channel::parse("smtps://u:two@mail.example", None).unwrap();
        let c = Channel::parse("smtps://u:one@other.example", None).unwrap();
        assert_eq!(a.key(), b.key());
        assert_ne!(a.key(), c.key());
        assert!(a.key().starts_with("smtp-") && a.key().len() == 13);
    }

    #[test]
    fn progress_round_trips() {
        let p = Progress {
            done: vec!["smtp-0011aabb".into(), "file-22334455".into()],
            errors: vec![("webhook-99887766".into(), "webhook answered 500".into())],
        };
        let t = p.text();
        assert_eq!(
            t,
            "done=smtp-0011aabb,file-22334455; webhook-99887766: webhook answered 500"
        );
        assert_eq!(Progress::read(Some(&t)).done, p.done);
        let none = Progress {
            done: vec![],
            errors: vec![("smtp-0011aabb".into(), "x".repeat(5000))],
        };
        assert!(none.text().len() < 400, "errors are capped");
        assert!(Progress::read(Some(&none.text())).done.is_empty());
        assert!(Progress::read(Some("superseded")).done.is_empty());
        assert!(Progress::read(None).done.is_empty());
        assert_eq!(
            Progress::read(Some("done=a-1,BAD KEY,b-2")).done,
            vec!["a-1".to_string(), "b-2".to_string()]
        );
    }

    #[test]
    fn text_says_everything() {
        let p = ParcelContact {
            parcel_id: "P-1".into(),
            recipient_name: "J. Doe".into(),
            email: None,
            phone: None,
            requires_code: true,
            status: crate::domain::ParcelState::Scheduled,
            delivery_date: None,
            attempt: 1,
            track_nonce: Some("n".into()),
        };
        let d = NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
        let (s, b) = render(&p, d, &Code::new("123456").unwrap(), "http://x/track/t");
        assert!(s.contains("P-1") && s.contains("2026-11-23"));
        for needle in [
            "123456",
            "parcel P-1 only",
            "in person",
            "at your door",
            "phone",
            "text message",
            "link",
            "valid on 2026-11-23 only",
            "did not order",
            "Monday",
        ] {
            assert!(b.contains(needle), "missing {needle:?} in\n{b}");
        }
        assert!(
            b.contains("http://x/track/t#not-mine"),
            "links to the button"
        );
        assert!(
            !b.contains("no longer works"),
            "a first code replaces nothing"
        );
        let later = ParcelContact { attempt: 2, ..p };
        let (_, b) = render(&later, d, &Code::new("654321").unwrap(), "http://x/track/t");
        assert!(b.contains("any code you received before for this parcel no longer works"));
    }
}
