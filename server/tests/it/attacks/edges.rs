//! The server's edges as a security review attacked them from outside
//! (issue 12; DESIGN "Input the server refuses" and "The edges of the
//! server"). One test per finding, over real HTTP. The findings about the
//! process (memory, slow clients, file modes, several nodes) need a spawned
//! `doorcode serve`: they are in `tools/tests/it/served.rs`.

use super::{DAY, NOW, day};
use crate::support::net::*;
use crate::support::*;
use doorcode_core::b64;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hijacked_names_lookalike_ids_and_foreign_addresses_are_refused_per_item() {
    let (_dir, s) = serve(NOW).await;
    let (st, v) = s
        .admin_post("/v1/parcels", json!({"parcels": [parcel("P-1", "J. Doe", Some("jdoe@example.com"), Some("+491701234567"))]}))
        .await;
    assert_eq!(
        (st, v["results"][0]["status"].as_str()),
        (200, Some("created")),
        "{v}"
    );
    let hijack = "J. Doe\n\nURGENT: your code has changed. Read it to the agent who calls you.\n";
    let cases: Vec<(Value, &str)> = vec![
        (parcel("P-1", hijack, None, None), "recipient.name"),
        (parcel("P-1", "J. Doe\r", None, None), "recipient.name"),
        (parcel("P-1", "J.\tDoe", None, None), "recipient.name"),
        (
            parcel("P-1", "J. Doe\u{2028}URGENT", None, None),
            "recipient.name",
        ),
        (
            parcel("P-1", "\u{202E}eoD .J", None, None),
            "recipient.name",
        ),
        (
            parcel("P-1", "\u{2066}J. Doe\u{2069}", None, None),
            "recipient.name",
        ),
        (
            parcel("P-1", &"a".repeat(201), None, None),
            "recipient.name",
        ),
        (parcel("P-1\u{202E}", "J. Doe", None, None), "parcel_id"),
        (parcel("P-1\u{200B}", "J. Doe", None, None), "parcel_id"),
        (parcel("Р-1", "J. Doe", None, None), "parcel_id"), // Cyrillic Р
        (parcel("P 1", "J. Doe", None, None), "parcel_id"),
        (
            parcel(&format!("P{}", "1".repeat(64)), "J. Doe", None, None),
            "parcel_id",
        ),
        (
            parcel("P-1", "J. Doe", Some("Depot<attacker@evil.test>"), None),
            "recipient.email",
        ),
        (
            parcel(
                "P-1",
                "J. Doe",
                Some("jdoe@example.com, attacker@evil.test"),
                None,
            ),
            "recipient.email",
        ),
        (
            parcel("P-1", "J. Doe", Some("jdoe@[192.0.2.1]"), None),
            "recipient.email",
        ),
        (
            parcel("P-1", "J. Doe", Some("jdoe@192.0.2.1"), None),
            "recipient.email",
        ),
        (
            parcel(
                "P-1",
                "J. Doe",
                Some("jdoe@example.com\r\nBcc: attacker@evil.test"),
                None,
            ),
            "recipient.email",
        ),
        (
            parcel("P-1", "J. Doe", None, Some("+49 170 1234567")),
            "recipient.phone",
        ),
        (
            parcel("P-1", "J. Doe", None, Some("+491701234567,+15550100")),
            "recipient.phone",
        ),
        (
            parcel("P-1", "J. Doe", None, Some("+1234567890123456")),
            "recipient.phone",
        ),
        (
            parcel("P-1", "J. Doe", None, Some("0049 170 1234567")),
            "recipient.phone",
        ),
    ];
    let batch: Vec<Value> = cases
        .iter()
        .map(|(p, _)| p.clone())
        .chain([parcel("P-2", "Ada Okafor", Some("ada@example.com"), None)])
        .collect();
    let v = s.admin_ok("/v1/parcels", json!({"parcels": batch})).await;
    let results = v["results"].as_array().unwrap();
    for (r, (p, field)) in results.iter().zip(&cases) {
        assert_eq!(r["status"], "rejected", "{p} -> {r}");
        let m = r["message"].as_str().unwrap();
        assert!(m.starts_with(field), "{p}: the reason names {field}: {m}");
    }
    assert_eq!(
        results.last().unwrap()["status"],
        "created",
        "good items still go in"
    );
    // Nothing stored changed.
    let (st, p1) = s.admin_get("/v1/parcels/P-1").await;
    assert_eq!(st, 200);
    assert_eq!(p1["recipient_name"], "J. Doe");
    for id in ["P-1\u{202E}", "Р-1"] {
        let (st, _) = s.admin_get(&format!("/v1/parcels/{}", urlencode(id))).await;
        assert_eq!(st, 404, "{id:?} was not stored");
    }
    // Routes, stops and enrollments: 422 with {error, message}.
    let route = |stop_id: &str, address: &str, recipient: Option<&str>, route_id: &str| {
        let mut stop = json!({"stop_id": stop_id, "address": address, "parcel_ids": ["P-1"]});
        if let Some(r) = recipient {
            stop["recipient"] = json!(r);
        }
        json!({"route_id": route_id, "courier_id": "C-1", "delivery_date": DAY, "stops": [stop]})
    };
    for body in [
        route("S-1", "1 Example Street\nYour code is below", None, "R-1"),
        route("S-1", "1 Example Street", Some("J. Doe\u{202E}"), "R-1"),
        route("S\u{200B}1", "1 Example Street", None, "R-1"),
        route("S-1", "1 Example Street", None, "R-1\u{2066}"),
    ] {
        let (st, v) = s.admin_post("/v1/routes", body.clone()).await;
        assert_eq!(st, 422, "{body}: {v}");
        assert!(v["error"].is_string() && v["message"].is_string(), "{v}");
    }
    let (_, p1) = s.admin_get("/v1/parcels/P-1").await;
    assert_eq!(p1["status"], "pending", "no route was saved");
    let (st, v) = s
        .admin_post("/v1/enrollments", json!({"courier_id": "C-1\u{202E}"}))
        .await;
    assert_eq!(st, 422, "{v}");
    // The notice of the good parcel begins with the name as uploaded, one line.
    s.admin_ok("/v1/routes", route("S-1", "1 Example Street", None, "R-1"))
        .await;
    let n = s.wait_notices(1).await;
    assert!(
        n[0]["body"]
            .as_str()
            .unwrap()
            .starts_with("Hello J. Doe,\n"),
        "{}",
        n[0]["body"]
    );
    s.handle.shutdown().await;
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_redirect_is_a_failed_send_and_is_never_followed() {
    for status in [307u16, 302, 301, 308] {
        let (thief, stolen) = sink(200, None, Duration::ZERO).await;
        let (gateway, posts) = sink(
            status,
            Some(format!("http://{thief}/steal")),
            Duration::ZERO,
        )
        .await;
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path(), NOW);
        cfg.notify = vec![format!("webhook:http://{gateway}/sms")];
        cfg.webhook_secret = Some(WEBHOOK_SECRET.into());
        let s = start(cfg).await;
        let p1 = parcel("P-1", "J. Doe", None, Some("+491701234567"));
        s.one_parcel_route(p1, "R-1", "C-1", DAY).await;
        let mut m = String::new();
        for _ in 0..200 {
            m = s.metrics().await;
            if metric(
                &m,
                "doorcode_notices_total{channel=\"webhook\",result=\"failed\"} ",
            ) >= 1
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(
            metric(
                &m,
                "doorcode_notices_total{channel=\"webhook\",result=\"failed\"} "
            ) >= 1,
            "{status}: the send counts as failed\n{m}"
        );
        assert_eq!(
            metric(
                &m,
                "doorcode_notices_total{channel=\"webhook\",result=\"sent\"} "
            ),
            0,
            "{status}"
        );
        assert_eq!(
            metric(&m, "doorcode_notice_outbox{state=\"sent\"} "),
            0,
            "{status}"
        );
        // Give a follow-up request time to happen, if the client made one.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            stolen.lock().unwrap().is_empty(),
            "{status}: the redirect was followed"
        );
        let posts = posts.lock().unwrap().clone();
        assert!(
            !posts.is_empty()
                && posts
                    .iter()
                    .all(|(m, p, b)| m == "POST" && p == "/sms" && !b.is_empty())
        );
        s.handle.shutdown().await;
    }
}

// ---------- weak device keys ----------

/// Small-order points (and a point not on the curve), base64url.
fn weak_keys() -> Vec<(&'static str, String)> {
    let hex = |h: &str| -> Vec<u8> {
        (0..h.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
            .collect()
    };
    vec![
        (
            "identity",
            "0100000000000000000000000000000000000000000000000000000000000000",
        ),
        (
            "order 2",
            "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        ),
        (
            "order 4",
            "0000000000000000000000000000000000000000000000000000000000000000",
        ),
        (
            "order 4, other sign",
            "0000000000000000000000000000000000000000000000000000000000000080",
        ),
        (
            "order 8",
            "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
        ),
        (
            "order 8, other",
            "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
        ),
        (
            "identity, y + p",
            "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        ),
        (
            "not on the curve",
            "0200000000000000000000000000000000000000000000000000000000000000",
        ),
    ]
    .into_iter()
    .map(|(n, h)| (n, b64::encode(&hex(h))))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_order_and_invalid_device_keys_are_refused_at_enrollment() {
    let (_dir, s) = serve(NOW).await;
    let (_, e) = s
        .admin_post("/v1/enrollments", json!({"courier_id": "C-1"}))
        .await;
    let code = e["enrollment_code"].as_str().unwrap();
    for (what, key) in weak_keys() {
        let (st, v) = s
            .post_as(
                "",
                "/v1/devices",
                json!({"enrollment_code": code, "device_public_key": key, "device_name": "phone"}),
            )
            .await;
        assert_eq!(st, 422, "{what}: {v}");
        assert_eq!(v["error"], "weak_public_key", "{what}");
    }
    // The refusals used nothing up: the code still enrolls a real key.
    let real = doorcode_core::envelope::SigningKey::generate("x").unwrap();
    let (st, v) = s
        .post_as("", "/v1/devices", json!({"enrollment_code": code, "device_public_key": real.public_key().public_b64(), "device_name": "phone"}))
        .await;
    assert_eq!(st, 200, "{v}");
    s.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_identity_key_forgery_is_rejected_even_for_a_device_stored_before_the_fix() {
    let (dir, mut t) = day().await;
    // A device enrolled before the check existed, with the identity point as its key.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let conn = rusqlite::Connection::open(dir.path().join("doorcode.db")).unwrap();
    conn.execute(
        "UPDATE devices SET public_key=?1 WHERE device_id=?2",
        rusqlite::params![b64::encode(&identity), t.a.device_id],
    )
    .unwrap();
    drop(conn);
    let door = super::door(&t.ma);
    let c =
        t.a.delivered_right(&door, "P-A1", 1, "2026-11-23T09:00:00Z");
    let mut sig = [0u8; 64];
    sig[0] = 1; // R = identity, S = 0
    let forged = doorcode_core::envelope::Envelope {
        v: 1,
        kid: t.a.device_id.clone(),
        body: b64::encode(&serde_json::to_vec(&c).unwrap()),
        sig: b64::encode(&sig),
    };
    let res = t.s.upload(&t.a, vec![json!(forged)]).await;
    assert_eq!(res[0]["status"], "rejected", "{}", res[0]);
    assert_eq!(res[0]["permanent"], true);
    assert_eq!(super::status(&t.s, "P-A1").await, "scheduled");
    assert_eq!(
        super::rows(dir.path(), "SELECT count(*) FROM confirmations"),
        0
    );
    t.s.handle.shutdown().await;
}

// ---------- enrollment guessing ----------

async fn enroll_at(
    http: reqwest::Client,
    url: String,
    code: String,
    xff: &'static str,
) -> (u16, Value) {
    let key = doorcode_core::envelope::SigningKey::generate("x").unwrap();
    let r = http
        .post(format!("{url}/v1/devices"))
        .header("x-forwarded-for", xff)
        .json(&json!({"enrollment_code": code, "device_public_key": key.public_key().public_b64(), "device_name": "phone"}))
        .send()
        .await
        .unwrap();
    let st = r.status().as_u16();
    if st == 429 {
        assert!(r.headers().contains_key("retry-after"));
    }
    (st, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollment_guessing_gets_429_after_10_failures_per_client_and_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), NOW);
    cfg.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    let s = start(cfg).await;
    let enroll =
        |code: String, xff: &'static str| enroll_at(s.http.clone(), s.url.clone(), code, xff);
    // Successful enrollments never count.
    for _ in 0..12 {
        let (_, e) = s
            .admin_post("/v1/enrollments", json!({"courier_id": "C-1"}))
            .await;
        let (st, v) = enroll(
            e["enrollment_code"].as_str().unwrap().to_string(),
            "203.0.113.5",
        )
        .await;
        assert_eq!(st, 200, "{v}");
    }
    // 40 guesses at once: at most 10 are looked at.
    let tasks: Vec<_> = (0..40)
        .map(|i| tokio::spawn(enroll(format!("AAAA-BBBB-{i:04}"), "203.0.113.5")))
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap().0);
    }
    let looked_at = answers.iter().filter(|st| **st == 403).count();
    let limited = answers.iter().filter(|st| **st == 429).count();
    assert_eq!(looked_at + limited, 40, "{answers:?}");
    // 10, and one more if 6 s passed (a slow machine).
    assert!(
        (10..=11).contains(&looked_at),
        "{looked_at} guesses were checked: {answers:?}"
    );
    // Even the right code is not looked at now, from this client…
    let (_, e) = s
        .admin_post("/v1/enrollments", json!({"courier_id": "C-1"}))
        .await;
    let good = e["enrollment_code"].as_str().unwrap().to_string();
    let (st, v) = enroll(good.clone(), "203.0.113.5").await;
    assert_eq!(st, 429, "{v}");
    assert_eq!(v["error"], "rate_limited");
    // …while another courier behind the same proxy enrolls.
    let (st, v) = enroll(good, "203.0.113.6").await;
    assert_eq!(st, 200, "{v}");
    let m = s.metrics().await;
    assert_eq!(
        metric(&m, "doorcode_enrollment_failures_total "),
        looked_at as u64,
        "{m}"
    );
    assert!(
        metric(&m, "doorcode_rate_limited_total{limit=\"enrollment\"} ") > limited as u64,
        "{m}"
    );
    s.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_is_closed_after_the_idle_limit() {
    // The limit is 60 s (Config default, checked below); shortened here so
    // the test does not wait a minute. The mechanism is the same.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), NOW);
    assert_eq!(cfg.idle_timeout, Duration::from_secs(60));
    assert_eq!(cfg.header_timeout, Duration::from_secs(10));
    assert_eq!(cfg.max_connections, 10_000);
    cfg.idle_timeout = Duration::from_secs(2);
    let s = start(cfg).await;
    let mut c = TcpStream::connect(s.handle.addr).await.unwrap();
    // Kept alive while in use: six requests 0.5 s apart (3 s > the limit).
    let mut idle_since = Instant::now();
    for i in 0..6 {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(read_response(&mut c).await, Some(200));
        idle_since = Instant::now();
    }
    let cut = closed_after(&mut c, idle_since, Duration::from_secs(10))
        .await
        .expect("an idle keep-alive connection was held open");
    assert!(
        cut >= Duration::from_millis(1_800),
        "closed after {cut:?} idle, limit 2 s"
    );
    s.handle.shutdown().await;
}

// ---------- rate limits behind a proxy ----------

async fn track_status(s: &Server, xff: &str) -> u16 {
    s.http
        .get(format!("{}/v1/track/{}", s.url, "g".repeat(43)))
        .header("x-forwarded-for", xff)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_one_client_cannot_lock_out_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), NOW);
    cfg.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    let s = start(cfg).await;
    // The abuser exhausts its bucket, rotating a forged left-most entry;
    // the proxy appends the address it saw (the right-most entry).
    let mut limited = false;
    for i in 0..40 {
        if track_status(&s, &format!("198.51.100.{i}, 203.0.113.66")).await == 429 {
            limited = true;
        }
    }
    assert!(limited, "the abuser is limited");
    assert_eq!(
        track_status(&s, "10.9.9.9, 203.0.113.66").await,
        429,
        "forging entries left of the proxy's does not escape the limit"
    );
    // Every other customer behind the same proxy still gets answers.
    assert_eq!(track_status(&s, "203.0.113.77").await, 404);
    assert_eq!(track_status(&s, "2001:db8:7::1").await, 404);
    // The board sign-in limit keys on the same address.
    let login = |xff: &'static str| {
        s.http
            .post(format!("{}/board/login", s.url))
            .header("x-forwarded-for", xff)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("token=wrong")
            .send()
    };
    let mut login_limited = false;
    for _ in 0..15 {
        if login("203.0.113.66").await.unwrap().status() == 429 {
            login_limited = true;
        }
    }
    assert!(login_limited, "wrong sign-ins are limited");
    assert_ne!(login("203.0.113.77").await.unwrap().status(), 429);
    s.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_trusted_proxies_forwarded_for_is_ignored() {
    let (_dir, s) = serve(NOW).await;
    for i in 0..40 {
        track_status(&s, &format!("203.0.113.{i}")).await;
    }
    // A fresh spoofed address does not buy a fresh bucket.
    assert_eq!(track_status(&s, "192.0.2.200").await, 429);
    s.handle.shutdown().await;
}
