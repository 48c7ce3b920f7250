//! Two real `doorcode serve` processes on one PostgreSQL schema (one data
//! dir), and a client that sends every request to the other node, as a
//! round-robin load balancer does: board sign-in, the board, its live view
//! and a form POST (revoke) work; the track-lookup, sign-in, enrollment and
//! resend limits hold across nodes: both nodes together allow what one
//! limit allows, not twice that. The nodes trust loopback as their proxy,
//! so each check counts under its own `X-Forwarded-For` client.
//! Without a reachable PostgreSQL: FAILS under CI, loudly SKIPPED elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::fleet::{Serve, TwoDbNodes, enroll_on};
use crate::support::board::{FormBody, field, session_cookie};
use crate::support::send_text;
use reqwest::header::{COOKIE, LOCATION};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Sends each request to the next node in turn.
struct RoundRobin {
    urls: [String; 2],
    next: AtomicUsize,
    http: reqwest::Client,
}

impl RoundRobin {
    fn url(&self, path: &str) -> String {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % 2;
        format!("{}{path}", self.urls[i])
    }

    fn get(&self, path: &str, client: &str) -> reqwest::RequestBuilder {
        self.http
            .get(self.url(path))
            .header("x-forwarded-for", client)
    }

    fn post_form(
        &self,
        path: &str,
        client: &str,
        body: &[(&str, &str)],
    ) -> reqwest::RequestBuilder {
        self.http
            .post(self.url(path))
            .header("x-forwarded-for", client)
            .form_body(body)
    }

    /// A board page with the session cookie, as text.
    async fn board_page(&self, path: &str, client: &str, cookie: &str) -> String {
        send_text(self.get(path, client).header(COOKIE, cookie)).await
    }

    /// A board form posted with the session cookie.
    async fn board_post(
        &self,
        path: &str,
        client: &str,
        cookie: &str,
        body: &[(&str, &str)],
    ) -> reqwest::Response {
        self.post_form(path, client, body)
            .header(COOKIE, cookie)
            .send()
            .await
            .unwrap()
    }

    /// The status of a request sent.
    async fn status(req: reqwest::RequestBuilder) -> u16 {
        req.send().await.unwrap().status().as_u16()
    }
}

impl RoundRobin {
    /// A new handset of `courier`: an enrollment code from dispatch, then the
    /// device's enrollment, each through the balancer; the device as answered.
    async fn enroll(&self, admin: &str, courier: &str, name: &str) -> Value {
        let (enroll_at, device_at) = (self.url(""), self.url(""));
        enroll_on(&self.http, (&enroll_at, &device_at), admin, courier, name).await
    }
}

fn is_sign_in(html: &str) -> bool {
    html.contains("action=\"/board/login\"")
}

fn notice_tokens(dir: &Path) -> Vec<(String, String)> {
    let Ok(r) = std::fs::read_dir(dir.join("notices")) else {
        return Vec::new();
    };
    r.map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let v: Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
            let url = v["track_url"].as_str().unwrap();
            let token = url.rsplit('/').next().unwrap().to_string();
            (v["parcel_id"].as_str().unwrap().to_string(), token)
        })
        .collect()
}

async fn metric_sum(nodes: &[&Serve], admin: &str, line: &str) -> u64 {
    let mut sum = 0;
    for n in nodes {
        let text = send_text(
            reqwest::Client::new()
                .get(format!("{}/metrics", n.url()))
                .bearer_auth(admin),
        )
        .await;
        sum += text
            .lines()
            .find_map(|l| l.strip_prefix(line))
            .map_or(0, |v| v.trim().parse::<f64>().unwrap() as u64);
    }
    sum
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_round_robin_board_and_limits_across_two_nodes() {
    let Some(fleet) = TwoDbNodes::start(
        "pg_round_robin_board_and_limits",
        &["--trusted-proxies", "127.0.0.0/8"],
    )
    .await
    else {
        return;
    };
    let (a, b, admin, dir) = (&fleet.a, &fleet.b, fleet.admin.clone(), fleet.tmp.path());
    let lb = RoundRobin {
        urls: [a.url(), b.url()],
        next: AtomicUsize::new(0),
        http: crate::support::board::client(),
    };
    let date = chrono::Utc::now()
        .date_naive()
        .format("%Y-%m-%d")
        .to_string();
    let (device_id, device_token) = a_day(&lb, &admin, &date).await;
    the_board_through_the_balancer(&lb, &admin, &date, &device_id).await;
    the_resend_limit_spans_both_nodes(&lb, &admin, dir, &date, &device_token).await;
    the_track_lookup_limit_spans_both_nodes(&lb, &[a, b], &admin).await;
    the_sign_in_and_enrollment_limits_span_both_nodes(&lb).await;
    fleet.finish().await;
}

/// A day: two parcels on courier C-1's route, one enrolled handset; its
/// device id and token.
async fn a_day(lb: &RoundRobin, admin: &str, date: &str) -> (String, String) {
    let api = |path: &str, body: Value| {
        lb.http
            .post(lb.url(path))
            .bearer_auth(admin)
            .json(&body)
            .send()
    };
    let parcels: Vec<Value> = ["P-1", "P-2"]
        .iter()
        .map(|p| json!({"parcel_id": p, "recipient": {"name": "C", "email": format!("{p}@example.com")}, "address": "1 Road", "value": 100.0, "currency": "EUR"}))
        .collect();
    let r = api("/v1/parcels", json!({"parcels": parcels}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let stops = json!([{"stop_id": "S-1", "address": "1 Road", "parcel_ids": ["P-1", "P-2"]}]);
    let r = api(
        "/v1/routes",
        json!({"route_id": "R-1", "courier_id": "C-1", "delivery_date": date, "stops": stops}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let dev = lb.enroll(admin, "C-1", "C-1").await;
    (
        dev["device_id"].as_str().unwrap().to_string(),
        dev["device_token"].as_str().unwrap().to_string(),
    )
}

/// Sign-in, the board, its live view and a revoke, each request on the
/// other node; a wrong CSRF token refused on either; a sign-out known to both.
async fn the_board_through_the_balancer(lb: &RoundRobin, admin: &str, date: &str, device_id: &str) {
    let board = "198.51.100.1";
    let r = lb
        .post_form("/board/login", board, &[("token", admin)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let cookie = session_cookie(r.headers());
    let mut csrf = String::new();
    for i in 0..4 {
        let html = lb.board_page("/board", board, &cookie).await;
        assert!(
            !is_sign_in(&html),
            "request {i}: the other node signed us out"
        );
        let c = field(&html, "csrf");
        assert!(csrf.is_empty() || c == csrf, "one session, one CSRF token");
        csrf = c;
        let r = lb
            .get("/board/live", board)
            .header(COOKIE, &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "live view, request {i}");
        assert!(r.text().await.unwrap().contains("P-1"));
    }
    let html = lb
        .board_page("/board/devices?courier_id=C-1", board, &cookie)
        .await;
    assert!(html.contains(device_id), "{html}");
    // The form comes from one node and is posted to the other.
    let form = [
        ("csrf", csrf.as_str()),
        ("device_id", device_id),
        ("courier_id", "C-1"),
    ];
    let r = lb.board_post("/board/revoke", board, &cookie, &form).await;
    assert_eq!(r.status(), 303, "revoke posted across nodes");
    assert!(
        r.headers()[LOCATION]
            .to_str()
            .unwrap()
            .contains("done=revoked")
    );
    // A wrong token is still refused, on either node.
    for _ in 0..2 {
        let form = [("csrf", "wrong"), ("date", date)];
        let r = lb
            .board_post("/board/close-day", board, &cookie, &form)
            .await;
        assert_eq!(r.status(), 403);
    }
    // Signed out through one node: the other knows it at once.
    let r = lb
        .board_post("/board/logout", board, &cookie, &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status(), 303);
    for _ in 0..2 {
        let html = lb.board_page("/board", board, &cookie).await;
        assert!(
            is_sign_in(&html),
            "a signed-out session is gone on every node"
        );
    }
}

/// One resend per parcel, page and handset together, across both nodes;
/// the handset revoked on the board is refused by both.
async fn the_resend_limit_spans_both_nodes(
    lb: &RoundRobin,
    admin: &str,
    dir: &Path,
    date: &str,
    revoked_token: &str,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let token = loop {
        if let Some((_, t)) = notice_tokens(dir).into_iter().find(|(p, _)| p == "P-1") {
            break t;
        }
        assert!(Instant::now() < deadline, "no notice for P-1");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let customer = "198.51.100.2";
    let page = send_text(lb.get(&format!("/track/{token}"), customer)).await;
    let t = field(&page, "t");
    let mut resends = Vec::new();
    for _ in 0..4 {
        let path = format!("/track/{token}/resend");
        resends.push(RoundRobin::status(lb.post_form(&path, customer, &[("t", &t)])).await);
    }
    assert_eq!(
        resends,
        [303, 429, 429, 429],
        "one resend across both nodes"
    );
    // The handset's resends of P-2 count under one limit on both nodes too
    // (the device was revoked on the board, so enroll another).
    let dev = lb.enroll(admin, "C-1", "C-1b").await;
    let handset = dev["device_token"].as_str().unwrap().to_string();
    // Its morning sync: the parcel is on its manifest.
    let manifest = lb
        .http
        .get(lb.url(&format!("/v1/manifest?date={date}")))
        .bearer_auth(&handset);
    assert_eq!(RoundRobin::status(manifest).await, 200);
    let resend = |token: &str| {
        lb.http
            .post(lb.url("/v1/parcels/P-2/resend"))
            .bearer_auth(token)
    };
    let mut handset_resends = Vec::new();
    for _ in 0..4 {
        handset_resends.push(RoundRobin::status(resend(&handset)).await);
    }
    assert_eq!(handset_resends, [202, 429, 429, 429]);
    // The revoked handset is refused by both nodes.
    for _ in 0..2 {
        assert_eq!(RoundRobin::status(resend(revoked_token)).await, 401);
    }
}

/// The track-lookup limit: 30 per client, not 30 per node, and every
/// refusal counted on the node that made it.
async fn the_track_lookup_limit_spans_both_nodes(lb: &RoundRobin, nodes: &[&Serve], admin: &str) {
    let guesser = "198.51.100.3";
    let started = Instant::now();
    let (mut answered, mut limited) = (0u32, 0u32);
    for i in 0..80 {
        let path = if i % 3 == 0 {
            format!("/v1/track/{}", "G".repeat(43))
        } else {
            format!("/track/{}", "G".repeat(43))
        };
        match RoundRobin::status(lb.get(&path, guesser)).await {
            404 => answered += 1,
            429 => limited += 1,
            other => panic!("lookup {i}: {other}"),
        }
    }
    if started.elapsed() < Duration::from_secs(55) {
        assert_eq!(
            (answered, limited),
            (30, 50),
            "one window of 30 for both nodes"
        );
    } else {
        // A machine slow enough for a second window: still not two per node.
        assert!(answered <= 60, "{answered}");
    }
    let track_refusals = metric_sum(
        nodes,
        admin,
        "doorcode_rate_limited_total{limit=\"track\"} ",
    )
    .await;
    assert_eq!(
        track_refusals,
        u64::from(limited),
        "refusals counted on both nodes"
    );
}

/// The sign-in and enrollment limits: 10 per client across both nodes.
async fn the_sign_in_and_enrollment_limits_span_both_nodes(lb: &RoundRobin) {
    let (mut refused, mut limited) = (0, 0);
    for _ in 0..16 {
        let login = lb.post_form("/board/login", "198.51.100.4", &[("token", "wrong")]);
        match RoundRobin::status(login).await {
            401 => refused += 1,
            429 => limited += 1,
            other => panic!("sign-in: {other}"),
        }
    }
    assert_eq!((refused, limited), (10, 6));
    let (mut refused, mut limited) = (0, 0);
    let key = doorcode_core::envelope::SigningKey::generate("guesser").unwrap();
    for i in 0..16 {
        let enroll = lb
            .http
            .post(lb.url("/v1/devices"))
            .header("x-forwarded-for", "198.51.100.5")
            .json(&json!({"enrollment_code": format!("AAAA-BBBB-{i:04}"), "device_public_key": key.public_key().public_b64(), "device_name": "x"}));
        match RoundRobin::status(enroll).await {
            403 => refused += 1,
            429 => limited += 1,
            other => panic!("enrollment: {other}"),
        }
    }
    assert_eq!((refused, limited), (10, 6));
}
