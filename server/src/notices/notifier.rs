//! The routing of one notice: which channels it goes to (by the address
//! the recipient has), the message for each, and the result each gives.
//! The outbox loop around it is in [`super::sender`].

use super::{Channel, Message, Progress, file, render, track_url};
use crate::config::Config;
use crate::keys::TrackKey;
use crate::metrics::Metrics;
use crate::storage::ParcelContact;
use chrono::NaiveDate;
use doorcode_core::codes::{Code, CodeKey};
use std::path::PathBuf;
use std::sync::Arc;

/// What sending a notice needs: the channels and the HTTP client, the code
/// key (codes are derived at send time), the track links' base URL, the
/// clock and the counters. Cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    channels: Arc<Vec<Channel>>,
    http: reqwest::Client,
    public_url: Arc<String>,
    pub(super) code_key: Arc<CodeKey>,
    /// Links are derived at send time too (`TrackKey`): the outbox row holds
    /// neither code nor link.
    track_key: Arc<TrackKey>,
    pub(super) cfg: Arc<Config>,
    pub(super) metrics: Arc<Metrics>,
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

    /// Remove the notice files about `parcels` from every file channel's
    /// directory (erase, retention, and a notice written for a parcel erased
    /// meanwhile); returns how many went. A failure is logged, not returned:
    /// the rows are already gone and the next retention run tries again.
    pub async fn remove_files_about(&self, parcels: std::collections::HashSet<String>) -> u64 {
        let parcels = Arc::new(parcels);
        let mut removed = 0;
        for dir in self.file_dirs() {
            let (dir, parcels) = (dir.clone(), parcels.clone());
            match tokio::task::spawn_blocking(move || super::remove_notice_files(&dir, &parcels))
                .await
            {
                Ok(Ok(n)) => removed += n,
                Ok(Err(e)) => tracing::error!(error = %e, "could not remove notice files"),
                Err(e) => tracing::error!(error = %e, "notice file removal stopped"),
            }
        }
        removed
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
    pub(super) async fn send_all(
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
