//! The notice channels and their configuration (`--notify`): parsing,
//! the names logs may show and the keys a notice's progress records. The
//! sending itself is in each channel's own file.

use super::{smtp, webhook};
use crate::config::Config;
use std::path::PathBuf;
use std::sync::Arc;

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
}
