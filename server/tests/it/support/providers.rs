//! Stand-ins for real notice providers, on loopback sockets: an SMTP server
//! with STARTTLS or implicit TLS and AUTH (rustls, the test CA in
//! `tests/it/tls`), and a webhook receiver that checks Standard Webhooks
//! signatures the way a gateway would, written here from the
//! specification, not with the server's code.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// The test CA (`ca.pem`) and the certificate it signed for `localhost` and
/// 127.0.0.1, valid until 2126. Test material only.
pub fn tls_dir() -> PathBuf {
    // The same from both packages that include this module.
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../server/tests/it/tls")
}

pub fn ca_path() -> String {
    tls_dir().join("ca.pem").display().to_string()
}

fn server_tls() -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(include_bytes!("../tls/server.pem"))
            .collect::<Result<_, _>>()
            .unwrap();
    let key = PrivateKeyDer::from_pem_slice(include_bytes!("../tls/server.key")).unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpMode {
    /// Port 587 style: plain greeting, STARTTLS offered, AUTH only after it.
    StartTls,
    /// A server that offers neither STARTTLS nor AUTH.
    NoStartTls,
    /// Port 465 style: TLS from the first byte.
    Implicit,
}

/// One accepted mail.
#[derive(Debug, Clone)]
pub struct SinkMail {
    /// Whether the session was encrypted when the mail was accepted.
    pub tls: bool,
    /// The user that authenticated, if any.
    pub user: Option<String>,
    pub rcpt: Vec<String>,
    pub data: String,
}

#[derive(Clone, Default)]
pub struct TlsSink {
    /// Every command verb seen, prefixed `tls:` when encrypted.
    pub log: Arc<Mutex<Vec<String>>>,
    pub mails: Arc<Mutex<Vec<SinkMail>>>,
}

impl TlsSink {
    pub fn seen(&self, verb: &str) -> bool {
        self.log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.trim_start_matches("tls:") == verb)
    }
}

/// An SMTP server on loopback that takes mail only from `user`/`pass`
/// (after TLS; mail without AUTH gets 530).
pub async fn tls_smtp_sink(
    mode: SmtpMode,
    user: &'static str,
    pass: &'static str,
) -> (u16, TlsSink) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let sink = TlsSink::default();
    let s2 = sink.clone();
    let acceptor = server_tls();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = l.accept().await else {
                return;
            };
            let (sink, acceptor) = (s2.clone(), acceptor.clone());
            tokio::spawn(async move {
                sink.log.lock().unwrap().push("connect".into());
                let creds = (user, pass);
                if mode == SmtpMode::Implicit {
                    let Ok(tls) = acceptor.accept(sock).await else {
                        sink.log.lock().unwrap().push("handshake-failed".into());
                        return;
                    };
                    converse(tls, true, mode, creds, &sink).await;
                    return;
                }
                if let Some(plain) = converse(sock, false, mode, creds, &sink).await {
                    match acceptor.accept(plain).await {
                        Ok(tls) => {
                            converse(tls, true, mode, creds, &sink).await;
                        }
                        Err(_) => sink.log.lock().unwrap().push("handshake-failed".into()),
                    }
                }
            });
        }
    });
    (port, sink)
}

/// One SMTP session phase; returns the stream when the client asked for
/// STARTTLS (and got 220), None when it is over.
async fn converse<S: AsyncRead + AsyncWrite + Unpin>(
    io: S,
    tls: bool,
    mode: SmtpMode,
    (user, pass): (&str, &str),
    sink: &TlsSink,
) -> Option<S> {
    let mut io = BufReader::new(io);
    if !tls || mode == SmtpMode::Implicit {
        io.write_all(b"220 sink ESMTP\r\n").await.ok()?;
    }
    let (mut authed, mut rcpt) = (None::<String>, Vec::new());
    let mut line = String::new();
    loop {
        line.clear();
        if io.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let cmd = line.trim_end().to_string();
        let up = cmd.to_ascii_uppercase();
        let verb = up.split(' ').next().unwrap_or("").to_string();
        sink.log
            .lock()
            .unwrap()
            .push(format!("{}{verb}", if tls { "tls:" } else { "" }));
        let reply: String = match verb.as_str() {
            "EHLO" | "HELO" => {
                let mut r = String::from("250-sink\r\n");
                if mode == SmtpMode::StartTls && !tls {
                    r.push_str("250-STARTTLS\r\n");
                }
                if tls {
                    r.push_str("250-AUTH PLAIN LOGIN\r\n");
                }
                r.push_str("250 8BITMIME\r\n");
                r
            }
            "STARTTLS" if mode == SmtpMode::StartTls && !tls => {
                io.write_all(b"220 go ahead\r\n").await.ok()?;
                io.flush().await.ok()?;
                return Some(io.into_inner());
            }
            "AUTH" if tls => {
                let mut parts = cmd.split(' ').skip(1);
                let mech = parts.next().unwrap_or("").to_ascii_uppercase();
                let (u, p) = match mech.as_str() {
                    "PLAIN" => {
                        let resp = match parts.next() {
                            Some(r) => r.to_string(),
                            None => {
                                io.write_all(b"334 \r\n").await.ok()?;
                                line.clear();
                                io.read_line(&mut line).await.ok()?;
                                line.trim_end().to_string()
                            }
                        };
                        let raw = STANDARD.decode(resp).unwrap_or_default();
                        let f: Vec<String> = raw
                            .split(|b| *b == 0)
                            .map(|x| String::from_utf8_lossy(x).into_owned())
                            .collect();
                        (
                            f.get(1).cloned().unwrap_or_default(),
                            f.get(2).cloned().unwrap_or_default(),
                        )
                    }
                    "LOGIN" => {
                        let u = ask(&mut io, b"334 VXNlcm5hbWU6\r\n").await?;
                        let p = ask(&mut io, b"334 UGFzc3dvcmQ6\r\n").await?;
                        (u, p)
                    }
                    _ => (String::new(), String::new()),
                };
                if u == user && p == pass {
                    sink.log.lock().unwrap().push("auth-ok".into());
                    authed = Some(u);
                    "235 2.7.0 authenticated\r\n".into()
                } else {
                    sink.log.lock().unwrap().push("auth-bad".into());
                    "535 5.7.8 authentication credentials invalid\r\n".into()
                }
            }
            "MAIL" if authed.is_none() => "530 5.7.0 authentication required\r\n".into(),
            "MAIL" => "250 OK\r\n".into(),
            "RCPT" => {
                rcpt.push(cmd[8..].trim().to_string());
                "250 OK\r\n".into()
            }
            "DATA" if authed.is_some() && !rcpt.is_empty() => {
                io.write_all(b"354 go ahead\r\n").await.ok()?;
                let mut data = String::new();
                loop {
                    let mut l = String::new();
                    if io.read_line(&mut l).await.ok()? == 0 {
                        return None;
                    }
                    if l.trim_end() == "." {
                        break;
                    }
                    data.push_str(&l);
                }
                sink.mails.lock().unwrap().push(SinkMail {
                    tls,
                    user: authed.clone(),
                    rcpt: std::mem::take(&mut rcpt),
                    data,
                });
                "250 queued\r\n".into()
            }
            "QUIT" => {
                let _ = io.write_all(b"221 bye\r\n").await;
                return None;
            }
            "RSET" | "NOOP" => "250 OK\r\n".into(),
            _ => "503 5.5.1 not now\r\n".into(),
        };
        io.write_all(reply.as_bytes()).await.ok()?;
        io.flush().await.ok()?;
    }
}

/// An AUTH LOGIN prompt and its base64 answer.
async fn ask<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut BufReader<S>,
    prompt: &[u8],
) -> Option<String> {
    io.write_all(prompt).await.ok()?;
    io.flush().await.ok()?;
    let mut l = String::new();
    io.read_line(&mut l).await.ok()?;
    let raw = STANDARD.decode(l.trim_end()).unwrap_or_default();
    Some(String::from_utf8_lossy(&raw).into_owned())
}

/// One webhook POST as the receiver judged it.
#[derive(Debug, Clone)]
pub struct Hook {
    pub valid: bool,
    pub id: String,
    pub body: serde_json::Value,
}

#[derive(Clone, Default)]
pub struct Hooks(pub Arc<Mutex<Vec<Hook>>>);

impl Hooks {
    pub fn valid(&self) -> Vec<Hook> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|h| h.valid)
            .cloned()
            .collect()
    }
    pub fn all(&self) -> Vec<Hook> {
        self.0.lock().unwrap().clone()
    }
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Standard Webhooks verification, as a receiver implements it: the secret
/// is the base64 after `whsec_`; the signed content is `id.timestamp.body`;
/// the header holds space-separated `v1,<base64>` signatures, any of which
/// may match (compared in constant time); the timestamp must be within five
/// minutes of the receiver's clock.
pub fn verify(
    secret: &str,
    headers: &axum::http::HeaderMap,
    body: &[u8],
) -> Result<String, String> {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or(format!("missing {n}"))
    };
    let (id, ts, sigs) = (
        h("webhook-id")?,
        h("webhook-timestamp")?,
        h("webhook-signature")?,
    );
    let ts: i64 = ts.parse().map_err(|_| "bad timestamp")?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    if (now - ts).abs() > 300 {
        return Err("timestamp outside the tolerance".into());
    }
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").ok_or("secret")?)
        .map_err(|_| "secret")?;
    let mut content = format!("{id}.{ts}.").into_bytes();
    content.extend_from_slice(body);
    let expected = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key),
        &content,
    );
    for sig in sigs.split(' ') {
        let Some(b64) = sig.strip_prefix("v1,") else {
            continue;
        };
        if let Ok(got) = STANDARD.decode(b64)
            && ct_eq(&got, expected.as_ref())
        {
            return Ok(id);
        }
    }
    Err("no matching signature".into())
}

/// A gateway on loopback that accepts only posts signed with `secret`
/// (401 otherwise); the first `fail_first` valid posts get a 500.
pub async fn webhook_receiver(secret: &'static str, fail_first: usize) -> (String, Hooks) {
    let hooks = Hooks::default();
    let h2 = hooks.clone();
    let fails = Arc::new(Mutex::new(fail_first));
    let app = axum::Router::new().route(
        "/sms",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let (hooks, fails) = (h2.clone(), fails.clone());
                async move {
                    let v = verify(secret, &headers, &body);
                    let json = serde_json::from_slice(&body).unwrap_or_default();
                    let id = headers
                        .get("webhook-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    hooks.0.lock().unwrap().push(Hook {
                        valid: v.is_ok(),
                        id,
                        body: json,
                    });
                    if v.is_err() {
                        return axum::http::StatusCode::UNAUTHORIZED;
                    }
                    let mut f = fails.lock().unwrap();
                    if *f > 0 {
                        *f -= 1;
                        return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    axum::http::StatusCode::OK
                }
            },
        ),
    );
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/sms", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (url, hooks)
}

/// Poll `f` every 25 ms for up to 20 s until it is true.
pub async fn eventually(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..800 {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    f()
}
