//! The webhook channel (an SMS gateway, say): a JSON POST signed as the
//! Standard Webhooks specification says, so the receiver can tell our
//! notices from anyone else's and drop replays. Redirects are never
//! followed (see `crate::start`): the body holds the code.

use super::Message;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use std::sync::Arc;

/// The shared signing secret (`whsec_<base64>`); only the decoded bytes key
/// the HMAC. Never printed.
pub struct Secret(ring::hmac::Key);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("whsec_***")
    }
}

/// Shorter secrets are refused; the specification's are 24 to 64 bytes.
const MIN_SECRET: usize = 16;
const MAX_SECRET: usize = 1024;

impl Secret {
    /// Parse `whsec_<base64>`. The error never repeats the input.
    pub fn parse(s: &str) -> Result<Self, String> {
        let b64 = s.trim().strip_prefix("whsec_").ok_or(
            "--webhook-secret must look like whsec_<base64> (as Standard Webhooks secrets do)",
        )?;
        let bytes = STANDARD
            .decode(b64)
            .map_err(|_| "--webhook-secret: the part after whsec_ is not valid base64")?;
        if bytes.len() < MIN_SECRET || bytes.len() > MAX_SECRET {
            return Err(format!(
                "--webhook-secret: the secret is {} bytes; use {MIN_SECRET} to {MAX_SECRET} (e.g. whsec_ and the base64 of 32 random bytes)",
                bytes.len()
            ));
        }
        Ok(Self(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &bytes)))
    }

    /// `v1,<base64 of HMAC-SHA256(secret, id.timestamp.body)>`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut ctx = ring::hmac::Context::with_key(&self.0);
        ctx.update(id.as_bytes());
        ctx.update(b".");
        ctx.update(timestamp.to_string().as_bytes());
        ctx.update(b".");
        ctx.update(body);
        format!("v1,{}", STANDARD.encode(ctx.sign().as_ref()))
    }
}

/// One configured webhook.
#[derive(Clone)]
pub struct Webhook {
    pub url: String,
    pub secret: Arc<Secret>,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display())
    }
}

impl Webhook {
    /// `webhook:` and the URL's scheme, host and path: a gateway's API key
    /// in the query or userinfo is not printed.
    pub fn display(&self) -> String {
        match url::Url::parse(&self.url) {
            Ok(u) => {
                format!(
                    "webhook:{}://{}{}",
                    u.scheme(),
                    u.host_str().unwrap_or(""),
                    u.port().map(|p| format!(":{p}")).unwrap_or_default()
                ) + u.path()
            }
            Err(_) => "webhook:?".into(),
        }
    }

    /// POST `msg`, signed with a fresh timestamp (receivers refuse old
    /// ones) and the notice's stable `id` (receivers dedupe retries by it).
    pub async fn send(
        &self,
        http: &reqwest::Client,
        id: &str,
        msg: &Message,
    ) -> Result<(), String> {
        let body = serde_json::to_vec(msg).map_err(|e| e.to_string())?;
        // The receiver checks this against its own clock, so it is the real
        // time even where the server's clock is pinned (tests, the demo).
        let ts = chrono::Utc::now().timestamp();
        let sig = self.secret.sign(id, ts, &body);
        let resp = http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", sig)
            .body(body)
            .send()
            .await
            .map_err(|e| format!("webhook: {}", e.without_url()))?;
        let status = resp.status();
        if status.is_success() {
            Ok(())
        } else if status.is_redirection() {
            Err(format!(
                "webhook answered {status}; redirects are not followed, point --notify at the final URL"
            ))
        } else {
            Err(format!("webhook answered {status}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets() {
        let key = format!("whsec_{}", STANDARD.encode([7u8; 32]));
        assert!(Secret::parse(&key).is_ok());
        assert!(format!("{:?}", Secret::parse(&key).unwrap()) == "whsec_***");
        for bad in ["", "whsec_", "abc", "whsec_!!!!", "whsec_c2hvcnQ="] {
            let e = Secret::parse(bad).unwrap_err();
            assert!(!e.contains("c2hvcnQ"), "{e}");
        }
    }

    /// The example of the Standard Webhooks specification's libraries.
    #[test]
    fn signature_matches_the_specification_example() {
        let s = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = s.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn display_hides_query_and_userinfo() {
        let w = Webhook {
            url: "https://u:p@sms.example:8443/send?api_key=SECRET".into(),
            secret: Arc::new(
                Secret::parse(&format!("whsec_{}", STANDARD.encode([1u8; 24]))).unwrap(),
            ),
        };
        assert_eq!(w.display(), "webhook:https://sms.example:8443/send");
    }
}
