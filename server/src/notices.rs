//! Customer notices: the text, the channels and the background sender that
//! drains the outbox. Delivery is at-least-once: a notice is claimed with a
//! lease, sent, then marked sent; a crash between send and mark resends it.
//! The code is derived at send time, so the outbox never stores it.

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

/// Where notices go.
#[derive(Debug, Clone)]
pub enum Channel {
    /// One JSON file per message in a directory.
    File(PathBuf),
    /// Plain SMTP relay (no TLS: run it on loopback or a trusted network).
    Smtp {
        host: String,
        port: u16,
        from: String,
    },
    /// JSON POST, e.g. to an SMS gateway.
    Webhook(String),
}

impl Channel {
    /// Parse `file:DIR`, `smtp://host[:port]` or `webhook:URL`.
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(dir) = s.strip_prefix("file:") {
            if dir.is_empty() {
                return Err("file: needs a directory".into());
            }
            return Ok(Channel::File(PathBuf::from(dir)));
        }
        if let Some(rest) = s.strip_prefix("smtp://") {
            let rest = rest.trim_end_matches('/');
            let (host, port) = match rest.rsplit_once(':') {
                Some((h, p)) => (
                    h,
                    p.parse::<u16>()
                        .map_err(|_| format!("bad SMTP port in {s:?}"))?,
                ),
                None => (rest, 25),
            };
            if host.is_empty() {
                return Err("smtp:// needs a host".into());
            }
            return Ok(Channel::Smtp {
                host: host.to_string(),
                port,
                from: "doorcode <no-reply@doorcode.invalid>".into(),
            });
        }
        if let Some(url) = s.strip_prefix("webhook:") {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err("webhook: needs an http:// or https:// URL".into());
            }
            return Ok(Channel::Webhook(url.to_string()));
        }
        Err(format!(
            "unknown notice channel {s:?}; use file:DIR, smtp://HOST:PORT or webhook:URL"
        ))
    }

    /// Whether the recipient has an address this channel can use.
    fn reaches(&self, p: &ParcelContact) -> bool {
        match self {
            Channel::File(_) => true,
            Channel::Smtp { .. } => p.email.is_some(),
            Channel::Webhook(_) => p.email.is_some() || p.phone.is_some(),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Channel::File(_) => "file",
            Channel::Smtp { .. } => "smtp",
            Channel::Webhook(_) => "webhook",
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

/// What sending a notice needs: the channel and its HTTP client, the code
/// key (codes are derived at send time), the track links' base URL, the
/// clock and the counters. Cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    channel: Arc<Channel>,
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
        channel: Channel,
        http: reqwest::Client,
        public_url: String,
        code_key: Arc<CodeKey>,
        track_key: Arc<TrackKey>,
        cfg: Arc<Config>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            channel: Arc::new(channel),
            http,
            public_url: Arc::new(public_url),
            code_key,
            track_key,
            cfg,
            metrics,
        }
    }

    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// The base URL of track links (`--public-url`).
    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    /// The notice for a parcel's day and code, addressed for this channel.
    fn message(&self, p: &ParcelContact, date: NaiveDate, code: &Code) -> Message {
        let track = self.parcel_track_url(p);
        let (subject, body) = render(p, date, code, &track);
        let to = p
            .email
            .clone()
            .or_else(|| p.phone.clone())
            .unwrap_or_default();
        Message {
            channel: self.channel.name().to_string(),
            to,
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

fn safe_file_part(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect()
}

/// Send one message; errors are short and never contain the code.
async fn send(
    n: &Notifier,
    ch: &Channel,
    notice_id: i64,
    to_email: Option<&str>,
    to_phone: Option<&str>,
    msg: Message,
) -> Result<(), String> {
    match ch {
        Channel::File(dir) => {
            let dir = dir.clone();
            let name = format!("{notice_id:08}-{}.json", safe_file_part(&msg.parcel_id));
            let json = serde_json::to_vec_pretty(&msg).map_err(|e| e.to_string())?;
            tokio::task::spawn_blocking(move || -> Result<(), String> {
                crate::data_dir::create_private_dir(&dir)
                    .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
                doorcode_core::secrets::write_private_file(&dir.join(name), &json)
                    .map_err(|e| format!("cannot write notice file: {e}"))
            })
            .await
            .map_err(|e| e.to_string())?
        }
        Channel::Smtp { host, port, from } => {
            use lettre::{AsyncSmtpTransport, AsyncTransport, Message as Mail, Tokio1Executor};
            let to = to_email.ok_or("the recipient has no email address")?;
            let mail = Mail::builder()
                .from(from.parse().map_err(|_| "bad sender address".to_string())?)
                .to(to
                    .parse()
                    .map_err(|_| "the recipient's email address is invalid".to_string())?)
                .subject(msg.subject)
                .header(lettre::message::header::ContentType::TEXT_PLAIN)
                .body(msg.body)
                .map_err(|e| format!("cannot build the email: {e}"))?;
            let mailer = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.as_str())
                .port(*port)
                .timeout(Some(Duration::from_secs(20)))
                .build();
            mailer
                .send(mail)
                .await
                .map(|_| ())
                .map_err(|e| format!("SMTP: {e}"))
        }
        Channel::Webhook(url) => {
            let to = to_phone
                .or(to_email)
                .ok_or("the recipient has no phone or email")?;
            let msg = Message {
                to: to.to_string(),
                ..msg
            };
            let resp = n
                .http
                .post(url)
                .json(&msg)
                .send()
                .await
                .map_err(|e| format!("webhook: {}", e.without_url()))?;
            let status = resp.status();
            if status.is_success() {
                Ok(())
            } else if status.is_redirection() {
                // Never followed (see `start`): the notice holds the code.
                Err(format!(
                    "webhook answered {status}; redirects are not followed, point --notify at the final URL"
                ))
            } else {
                Err(format!("webhook answered {status}"))
            }
        }
    }
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
    let ch = n.channel.as_ref();
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
    if !ch.reaches(&p) {
        // Retrying cannot help; dispatch sees it in the parcel and the outbox metrics.
        n.metrics.notice(ch.name(), "failed");
        tracing::warn!(
            notice_id = job.notice_id,
            channel = ch.name(),
            "recipient has no address for this channel"
        );
        return s
            .notice_failed(job.notice_id, "no address for this channel", None)
            .await;
    }
    let msg = n.message(&p, job.delivery_date, &code);
    match send(
        n,
        ch,
        job.notice_id,
        p.email.as_deref(),
        p.phone.as_deref(),
        msg,
    )
    .await
    {
        Ok(()) => {
            n.metrics.notice(ch.name(), "sent");
            tracing::info!(
                notice_id = job.notice_id,
                channel = ch.name(),
                "notice sent"
            );
            s.notice_sent(job.notice_id, now).await
        }
        Err(e) => {
            n.metrics.notice(ch.name(), "failed");
            let tries = job.tries + 1;
            let retry = (tries < MAX_TRIES).then(|| now + backoff(tries));
            tracing::warn!(notice_id = job.notice_id, channel = ch.name(), tries, error = %e, "notice send failed");
            s.notice_failed(job.notice_id, &e, retry).await
        }
    }
}

/// Send the current notice again right now, outside the outbox (the
/// customer's "resend" on the tracking page, which reports failure to them
/// instead of retrying). Errors are short and never contain the code.
pub async fn send_now(
    n: &Notifier,
    p: &ParcelContact,
    date: NaiveDate,
    code: &Code,
) -> Result<(), String> {
    let ch = n.channel.as_ref();
    if !ch.reaches(p) {
        return Err("no address for this channel".into());
    }
    let msg = n.message(p, date, code);
    // Resends have no outbox row; number their files after the clock.
    let id = n.cfg.now().timestamp_millis();
    let r = send(n, ch, id, p.email.as_deref(), p.phone.as_deref(), msg).await;
    n.metrics
        .notice(ch.name(), if r.is_ok() { "sent" } else { "failed" });
    r
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

    #[test]
    fn channel_parsing() {
        assert!(matches!(
            Channel::parse("file:/tmp/x"),
            Ok(Channel::File(_))
        ));
        assert!(matches!(
            Channel::parse("smtp://127.0.0.1:2525"),
            Ok(Channel::Smtp { port: 2525, .. })
        ));
        assert!(matches!(
            Channel::parse("smtp://mail"),
            Ok(Channel::Smtp { port: 25, .. })
        ));
        assert!(matches!(
            Channel::parse("webhook:https://sms.example/send"),
            Ok(Channel::Webhook(_))
        ));
        assert!(Channel::parse("smtp://h:x").is_err());
        assert!(Channel::parse("webhook:ftp://x").is_err());
        assert!(Channel::parse("carrier-pigeon").is_err());
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
