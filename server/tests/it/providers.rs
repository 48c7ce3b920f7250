//! Notices through real providers' protocols, on loopback: SMTP with
//! STARTTLS or implicit TLS, AUTH and a private CA; Standard Webhooks
//! signatures checked by a receiver of the tests' own; several channels at
//! once, where a channel that failed is retried alone.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::net::metric;
use crate::support::providers::*;
use crate::support::*;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

const USER: &str = "depot@example.com";
const PASS: &str = "s3cret p@ss:/";
/// `PASS` percent-encoded for the URL.
const PASS_URL: &str = "s3cret%20p%40ss%3A%2F";

/// A config whose clock starts on the delivery day and moves, so a retry's
/// backoff elapses.
fn moving_config(dir: &std::path::Path) -> doorcode_server::Config {
    let mut cfg = config(dir, "2026-11-23T06:00:00Z");
    let (from, began) = (t("2026-11-23T06:00:00Z"), std::time::Instant::now());
    cfg.clock =
        Arc::new(move || from + chrono::Duration::from_std(began.elapsed()).unwrap_or_default());
    cfg
}

/// Parcels with the given (email, phone), all on one route that day.
async fn day(s: &Server, parcels: &[(&str, Option<&str>, Option<&str>)]) {
    let ps: Vec<Value> = parcels
        .iter()
        .map(|(id, email, phone)| {
            json!({"parcel_id": id, "recipient": {"name": "J. Doe", "email": email, "phone": phone},
                   "address": "1 Example Street", "value": 120, "currency": "EUR"})
        })
        .collect();
    s.admin_ok("/v1/parcels", json!({ "parcels": ps })).await;
    let ids: Vec<&str> = parcels.iter().map(|p| p.0).collect();
    s.admin_ok(
        "/v1/routes",
        json!({"route_id": "R-7", "courier_id": "C-42", "delivery_date": "2026-11-23",
            "stops": [{"stop_id": "S-1", "address": "1 Example Street", "parcel_ids": ids}]}),
    )
    .await;
}

async fn until_metric(s: &Server, prefix: &str, at_least: u64) -> String {
    let mut m = String::new();
    for _ in 0..800 {
        m = s.metrics().await;
        if metric(&m, prefix) >= at_least {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{prefix} never reached {at_least}:\n{m}");
}

const SMTP_FAILED: &str = "doorcode_notices_total{channel=\"smtp\",result=\"failed\"} ";
const OUTBOX_SENT: &str = "doorcode_notice_outbox{state=\"sent\"} ";
const OUTBOX_PENDING: &str = "doorcode_notice_outbox{state=\"pending\"} ";

/// A server pinned at 06:00 sending its notices to `notify`, and P-1001's
/// day (one email to jdoe@example.com).
async fn mailing_day(notify: String) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), "2026-11-23T06:00:00Z");
    cfg.notify = vec![notify];
    let s = start(cfg).await;
    day(&s, &[("P-1001", Some("jdoe@example.com"), None)]).await;
    (dir, s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_and_auth_come_before_the_mail() {
    let (port, sink) = tls_smtp_sink(SmtpMode::StartTls, USER, PASS).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = moving_config(dir.path());
    cfg.notify = vec![format!(
        "smtp://depot%40example.com:{PASS_URL}@127.0.0.1:{port}?tls=starttls&ca={}&from=Depot%20%3Cdepot%40example.com%3E",
        ca_path()
    )];
    let s = start(cfg).await;
    day(&s, &[("P-1001", Some("jdoe@example.com"), None)]).await;
    assert!(eventually(|| !sink.mails.lock().unwrap().is_empty()).await);
    let mails = sink.mails.lock().unwrap().clone();
    assert_eq!(mails.len(), 1);
    let m = &mails[0];
    assert!(m.tls, "accepted only inside TLS");
    assert_eq!(m.user.as_deref(), Some(USER), "after AUTH as the depot");
    assert_eq!(m.rcpt, vec!["<jdoe@example.com>".to_string()]);
    assert!(m.data.contains("857759"), "the vectors' code for P-1001");
    assert!(
        m.data.contains("From: Depot <depot@example.com>"),
        "{}",
        m.data
    );
    assert!(m.data.contains("Message-ID: <msg_"), "{}", m.data);
    let log = sink.log.lock().unwrap().clone();
    let starttls = log.iter().position(|l| l == "STARTTLS").expect("STARTTLS");
    for verb in ["AUTH", "MAIL", "RCPT", "DATA"] {
        assert!(
            !log.iter().any(|l| l == verb),
            "{verb} in the clear: {log:?}"
        );
        let at = log.iter().position(|l| *l == format!("tls:{verb}"));
        assert!(at.is_some_and(|a| a > starttls), "{verb}: {log:?}");
    }
    s.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_delivers_nothing_and_the_notice_waits_for_a_retry() {
    let (port, sink) = tls_smtp_sink(SmtpMode::StartTls, USER, PASS).await;
    let (_dir, s) = mailing_day(format!(
        "smtp://depot%40example.com:wrong@127.0.0.1:{port}?tls=starttls&ca={}",
        ca_path()
    ))
    .await;
    let m = until_metric(&s, SMTP_FAILED, 1).await;
    assert!(sink.log.lock().unwrap().iter().any(|l| l == "auth-bad"));
    assert!(!sink.seen("MAIL") && !sink.seen("DATA"), "{:?}", sink.log);
    assert!(sink.mails.lock().unwrap().is_empty());
    assert_eq!(metric(&m, OUTBOX_SENT), 0);
    assert_eq!(metric(&m, OUTBOX_PENDING), 1, "kept for a retry\n{m}");
    s.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_required_and_not_offered_sends_nothing() {
    let (port, sink) = tls_smtp_sink(SmtpMode::NoStartTls, USER, PASS).await;
    let (_dir, s) = mailing_day(format!(
        "smtp://depot%40example.com:{PASS_URL}@127.0.0.1:{port}?tls=starttls&ca={}",
        ca_path()
    ))
    .await;
    let m = until_metric(&s, SMTP_FAILED, 1).await;
    assert!(sink.seen("EHLO"), "the client did talk to it");
    for verb in ["AUTH", "MAIL", "RCPT", "DATA"] {
        assert!(!sink.seen(verb), "{verb}: {:?}", sink.log);
    }
    assert!(sink.mails.lock().unwrap().is_empty());
    assert_eq!(metric(&m, OUTBOX_SENT), 0);
    s.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtps_trusts_the_private_ca_and_only_with_ca() {
    let (port, sink) = tls_smtp_sink(SmtpMode::Implicit, USER, PASS).await;
    // Without ca= the test CA is nobody's root: the handshake fails.
    let (_dir, s) = mailing_day(format!(
        "smtps://depot%40example.com:{PASS_URL}@127.0.0.1:{port}"
    ))
    .await;
    until_metric(&s, SMTP_FAILED, 1).await;
    // The sink logs the failed handshake when it sees the client's alert,
    // which may be just after the client counted its failure.
    assert!(
        eventually(|| sink.seen("handshake-failed")).await,
        "{:?}",
        sink.log
    );
    assert!(!sink.seen("EHLO") && sink.mails.lock().unwrap().is_empty());
    s.handle.shutdown().await;

    let (_dir, s) = mailing_day(format!(
        "smtps://depot%40example.com:{PASS_URL}@127.0.0.1:{port}?ca={}",
        ca_path()
    ))
    .await;
    assert!(eventually(|| !sink.mails.lock().unwrap().is_empty()).await);
    let m = sink.mails.lock().unwrap()[0].clone();
    assert!(m.tls && m.user.as_deref() == Some(USER));
    assert!(m.data.contains("857759"));
    let log = sink.log.lock().unwrap().clone();
    assert!(
        log.iter()
            .filter(|l| !matches!(l.as_str(), "connect" | "handshake-failed" | "auth-ok"))
            .all(|l| l.starts_with("tls:")),
        "every command inside TLS: {log:?}"
    );
    s.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_signed_retried_under_one_id_and_a_wrong_secret_is_refused() {
    // The gateway fails the first good post; the retry has the same id.
    let (url, hooks) = webhook_receiver(WEBHOOK_SECRET, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = moving_config(dir.path());
    cfg.notify = vec![format!("webhook:{url}")];
    cfg.webhook_secret = Some(WEBHOOK_SECRET.into());
    let s = start(cfg).await;
    day(
        &s,
        &[("P-1001", Some("jdoe@example.com"), Some("+491701234567"))],
    )
    .await;
    until_metric(&s, OUTBOX_SENT, 1).await;
    let all = hooks.all();
    assert_eq!(all.len(), 2, "{all:?}");
    assert!(all.iter().all(|h| h.valid), "{all:?}");
    assert_eq!(all[0].id, all[1].id, "one webhook-id for every try");
    assert!(all[0].id.starts_with("msg_"));
    assert_eq!(all[1].body["to"], "+491701234567");
    assert_eq!(all[1].body["code"], "857759");
    s.handle.shutdown().await;

    // A gateway holding another secret refuses every post.
    let other = "whsec_dGhpcyBpcyBub3QgdGhlIGRlcG90J3Mgc2VjcmV0";
    let (url, hooks) = webhook_receiver(other, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), "2026-11-23T06:00:00Z");
    cfg.notify = vec![format!("webhook:{url}")];
    cfg.webhook_secret = Some(WEBHOOK_SECRET.into());
    let s = start(cfg).await;
    day(&s, &[("P-1001", None, Some("+491701234567"))]).await;
    let m = until_metric(
        &s,
        "doorcode_notices_total{channel=\"webhook\",result=\"failed\"} ",
        1,
    )
    .await;
    assert!(!hooks.all().is_empty());
    assert!(hooks.valid().is_empty(), "{:?}", hooks.all());
    assert_eq!(metric(&m, OUTBOX_SENT), 0);
    s.handle.shutdown().await;
}

#[test]
fn the_receivers_check_refuses_what_it_should() {
    use base64::Engine;
    let body = br#"{"a":1}"#;
    let now = chrono::Utc::now().timestamp();
    let sign = |secret: &str, id: &str, ts: i64, body: &[u8]| {
        let key = base64::engine::general_purpose::STANDARD
            .decode(secret.strip_prefix("whsec_").unwrap())
            .unwrap();
        let mut c = format!("{id}.{ts}.").into_bytes();
        c.extend_from_slice(body);
        let tag = ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key), &c);
        format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
        )
    };
    let headers = |id: &str, ts: i64, sig: &str| {
        let mut h = axum::http::HeaderMap::new();
        h.insert("webhook-id", id.parse().unwrap());
        h.insert("webhook-timestamp", ts.to_string().parse().unwrap());
        h.insert("webhook-signature", sig.parse().unwrap());
        h
    };
    let good = sign(WEBHOOK_SECRET, "msg_1", now, body);
    assert!(verify(WEBHOOK_SECRET, &headers("msg_1", now, &good), body).is_ok());
    let several = format!("v1,AAAA {good}");
    assert!(verify(WEBHOOK_SECRET, &headers("msg_1", now, &several), body).is_ok());
    assert!(verify(WEBHOOK_SECRET, &headers("msg_2", now, &good), body).is_err());
    assert!(verify(WEBHOOK_SECRET, &headers("msg_1", now, &good), b"{}").is_err());
    let old = sign(WEBHOOK_SECRET, "msg_1", now - 600, body);
    assert!(verify(WEBHOOK_SECRET, &headers("msg_1", now - 600, &old), body).is_err());
    let other = "whsec_dGhpcyBpcyBub3QgdGhlIGRlcG90J3Mgc2VjcmV0";
    let forged = sign(other, "msg_1", now, body);
    assert!(verify(WEBHOOK_SECRET, &headers("msg_1", now, &forged), body).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_channel_the_recipient_has_an_address_for_and_a_failed_one_alone_is_retried() {
    let (port, sink) = tls_smtp_sink(SmtpMode::StartTls, USER, PASS).await;
    // The gateway fails its first post: that notice's mail and file went
    // out already and must not go out again.
    let (url, hooks) = webhook_receiver(WEBHOOK_SECRET, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("out");
    let mut cfg = moving_config(dir.path());
    cfg.notify = vec![
        format!(
            "smtp://depot%40example.com:{PASS_URL}@127.0.0.1:{port}?tls=starttls&ca={}",
            ca_path()
        ),
        format!("webhook:{url}"),
        format!("file:{}", files.display()),
    ];
    cfg.webhook_secret = Some(WEBHOOK_SECRET.into());
    let s = start(cfg).await;
    day(
        &s,
        &[
            ("P-1", Some("both@example.com"), Some("+491700000001")),
            ("P-2", Some("mail@example.com"), None),
            ("P-3", None, Some("+491700000003")),
        ],
    )
    .await;
    let m = until_metric(&s, OUTBOX_SENT, 3).await;
    assert_eq!(metric(&m, OUTBOX_PENDING), 0);

    let mut mailed: Vec<String> = sink
        .mails
        .lock()
        .unwrap()
        .iter()
        .map(|m| m.rcpt.join(","))
        .collect();
    mailed.sort();
    assert_eq!(
        mailed,
        vec!["<both@example.com>", "<mail@example.com>"],
        "each email once, though one notice was retried"
    );
    let valid = hooks.valid();
    assert_eq!(
        valid.len(),
        3,
        "one refused with 500, then retried: {valid:?}"
    );
    let mut texted: Vec<String> = valid
        .iter()
        .skip(1)
        .map(|h| h.body["to"].as_str().unwrap().to_string())
        .collect();
    texted.sort();
    assert_eq!(texted, vec!["+491700000001", "+491700000003"]);
    let mut on_file: Vec<String> = std::fs::read_dir(&files)
        .unwrap()
        .map(|e| {
            let v: Value =
                serde_json::from_str(&std::fs::read_to_string(e.unwrap().path()).unwrap()).unwrap();
            v["to"].as_str().unwrap().to_string()
        })
        .collect();
    on_file.sort();
    assert_eq!(
        on_file,
        vec!["both@example.com", "mail@example.com"],
        "file: is an email channel beside others"
    );
    assert_eq!(
        metric(
            &m,
            "doorcode_notices_total{channel=\"smtp\",result=\"sent\"} "
        ),
        2
    );
    assert_eq!(
        metric(
            &m,
            "doorcode_notices_total{channel=\"webhook\",result=\"failed\"} "
        ),
        1
    );
    s.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_refuses_bad_channels_without_printing_secrets() {
    for (notify, secret, needle) in [
        ("webhook:http://127.0.0.1:9/sms", None, "--webhook-secret"),
        ("webhook:http://127.0.0.1:9/sms", Some("hunter2"), "whsec_"),
        (
            "webhook:http://127.0.0.1:9/sms",
            Some("whsec_hunter2!"),
            "base64",
        ),
        (
            "webhook:http://127.0.0.1:9/sms",
            Some("whsec_aHVudGVyMg=="),
            "bytes",
        ),
        ("smtp://u:hunter2@mail.example", None, "in the clear"),
        (
            "smtps://u:hunter2@mail.example?ca=/nonexistent",
            None,
            "ca=",
        ),
        ("smtps://u:hunter2@mail.example?tsl=1", None, "unknown"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path(), "2026-11-23T06:00:00Z");
        cfg.notify = vec![notify.to_string()];
        cfg.webhook_secret = secret.map(str::to_string);
        let Err(e) = doorcode_server::start(cfg).await else {
            panic!("{notify} started");
        };
        let e = e.to_string();
        assert!(e.contains(needle), "{notify}: {e}");
        assert!(!e.contains("hunter2") && !e.contains("aHVudGVyMg"), "{e}");
    }
}
