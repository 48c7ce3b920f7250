//! The web pages over real HTTP: the customer's tracking page and the
//! dispatcher's board. Status codes, security headers, CSRF refusal, the 404
//! page, the code only while valid, the delivered view, rate limits.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::board::*;
use crate::support::*;
use chrono::{DateTime, Utc};
use doorcode_core::codes::derive_code;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

pub(crate) const DAY: &str = "2026-11-23";

/// A clock the test can move.
fn movable(cfg: &mut doorcode_server::Config, now: &str) -> Arc<Mutex<DateTime<Utc>>> {
    let at = Arc::new(Mutex::new(t(now)));
    let a = at.clone();
    cfg.clock = Arc::new(move || *a.lock().unwrap());
    at
}

/// Three parcels needing a code on one route on DAY; returns their track tokens.
pub(crate) async fn seed(s: &Server) -> Vec<String> {
    let parcels: Vec<Value> = (1..=3)
        .map(|i| {
            json!({"parcel_id": format!("P-100{i}"), "recipient": {"name": format!("Customer {i}"), "email": format!("c{i}@example.com")},
                   "address": format!("{i} Main St"), "value": 100, "currency": "EUR"})
        })
        .collect();
    let r = s.admin_ok("/v1/parcels", json!({"parcels": parcels})).await;
    let tokens = r["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| track_token(&p["track_url"]))
        .collect();
    s.admin_ok(
        "/v1/routes",
        json!({"route_id": "R-7", "courier_id": "C-42", "delivery_date": DAY, "stops": [
                {"stop_id": "S-1", "address": "1 Main St", "parcel_ids": ["P-1001"]},
                {"stop_id": "S-2", "address": "2 Main St", "parcel_ids": ["P-1002"]},
                {"stop_id": "S-3", "address": "3 Main St", "parcel_ids": ["P-1003"]}]}),
    )
    .await;
    tokens
}

fn assert_page_headers(h: &reqwest::header::HeaderMap) {
    let csp = header(h, "content-security-policy");
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(header(h, "x-frame-options"), "DENY");
    assert_eq!(header(h, "referrer-policy"), "no-referrer");
    assert_eq!(header(h, "x-content-type-options"), "nosniff");
    assert_eq!(header(h, "cache-control"), "no-store");
    assert!(header(h, "content-type").starts_with("text/html"));
}

#[tokio::test]
async fn tracking_page_shows_the_code_only_while_valid_then_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), "2026-11-23T09:00:00Z");
    cfg.calendar.time_zone = chrono_tz::Europe::Berlin;
    let clock = movable(&mut cfg, "2026-11-23T09:00:00Z");
    let s = start(cfg).await;
    let tokens = seed(&s).await;
    let c = client();
    let key = vector_key();
    let code1 = derive_code(&key, "P-1001", d(DAY), 1, 6).unwrap();

    // Out for delivery: the code, spoken digit by digit, the safety text, landmarks.
    let (st, h, html) = page(&c, &format!("{}/track/{}", s.url, tokens[0])).await;
    assert_eq!(st, 200);
    assert_page_headers(&h);
    assert!(html.contains(code1.expose()), "the code is on the page");
    let spoken: Vec<String> = code1.expose().chars().map(|c| c.to_string()).collect();
    assert!(html.contains(&format!(
        "<span class=\"sr-only\">{}</span>",
        spoken.join(" ")
    )));
    assert!(html.contains("<html lang=\"en\">"));
    for tag in ["<header", "<main", "<footer"] {
        assert!(html.contains(tag), "{tag} missing");
    }
    for needle in [
        "only in person with the courier at your door",
        "phone",
        "text message",
        "link",
        "valid on 2026-11-23 only",
        "did not order",
    ] {
        assert!(html.contains(needle), "safety text {needle:?} missing");
    }
    assert!(
        !html.contains("<script"),
        "the tracking page needs no script"
    );
    // Its stylesheet is same-origin and cacheable.
    let (st, h, css) = page(&c, &format!("{}/static/web.css", s.url)).await;
    assert_eq!(st, 200);
    assert!(header(&h, "content-type").starts_with("text/css") && css.contains(".digits"));

    // The courier delivers P-1001 with the right code at 09:00 UTC = 10:00 Berlin.
    let mut hs = s.enroll("C-42").await;
    let m = s.manifest(&hs, DAY).await;
    let door = Door::of(&m, DAY);
    let conf = hs.delivered(&door, "P-1001", 1, code1.expose(), "2026-11-23T08:59:00Z");
    let r = s.upload(&hs, vec![json!(hs.sign(&conf))]).await;
    assert_eq!(r[0]["status"], "accepted", "{r:?}");
    let (st, _, html) = page(&c, &format!("{}/track/{}", s.url, tokens[0])).await;
    assert_eq!(st, 200);
    assert!(html.contains("Delivered at 10:00, code verified"), "{html}");
    assert!(!html.contains(code1.expose()), "no code once delivered");
    assert!(!html.contains("resend"), "no resend once delivered");

    // P-1002 still shows its code until the Berlin day ends, then never again.
    let code2 = derive_code(&key, "P-1002", d(DAY), 1, 6).unwrap();
    *clock.lock().unwrap() = t("2026-11-23T22:59:59Z");
    let (_, _, html) = page(&c, &format!("{}/track/{}", s.url, tokens[1])).await;
    assert!(html.contains(code2.expose()));
    *clock.lock().unwrap() = t("2026-11-23T23:00:00Z");
    let (st, _, html) = page(&c, &format!("{}/track/{}", s.url, tokens[1])).await;
    assert_eq!(st, 200);
    assert!(
        !html.contains(code2.expose()),
        "an expired code is never shown"
    );
    assert!(html.contains("No code right now"));
    // 30 days after the day the links expire: the same 404 as an unknown token.
    *clock.lock().unwrap() = t("2026-12-23T22:59:59Z");
    assert_eq!(
        page(&c, &format!("{}/track/{}", s.url, tokens[0])).await.0,
        200
    );
    *clock.lock().unwrap() = t("2026-12-23T23:00:00Z");
    let (st, _, expired) = page(&c, &format!("{}/track/{}", s.url, tokens[0])).await;
    let (_, _, unknown) = page(&c, &format!("{}/track/{}", s.url, "Z".repeat(43))).await;
    assert_eq!(st, 404);
    assert_eq!(
        expired, unknown,
        "an expired link looks like an unknown one"
    );
    assert_eq!(s.get(&format!("/v1/track/{}", tokens[0])).await.0, 404);
    s.handle.shutdown().await;
}

#[tokio::test]
async fn unknown_tokens_get_a_plain_404_and_guessing_is_rate_limited() {
    let (_dir, s) = serve("2026-11-23T09:00:00Z").await;
    seed(&s).await;
    let c = client();
    let mut bodies = Vec::new();
    for bad in ["x", &"A".repeat(43), &"%FF".repeat(3), &"y".repeat(300)] {
        let (st, h, html) = page(&c, &format!("{}/track/{bad}", s.url)).await;
        assert_eq!(st, 404, "{bad}");
        assert_page_headers(&h);
        for secret in [
            "P-100",
            "Customer",
            "Main St",
            "expired",
            "delivered",
            "Delivery code",
        ] {
            assert!(!html.contains(secret), "404 page reveals {secret:?}");
        }
        bodies.push(html);
    }
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "every unknown token gets the same page"
    );
    // The per-IP bucket (30) runs out; the answer says only "too many".
    let mut limited = 0;
    for _ in 0..40 {
        let (st, h, _) = page(&c, &format!("{}/track/{}", s.url, "B".repeat(43))).await;
        if st == 429 {
            limited += 1;
            assert_eq!(header(&h, "retry-after"), "60");
        }
    }
    assert!(
        limited >= 10,
        "guessing is not rate-limited ({limited} refusals)"
    );
    s.handle.shutdown().await;
}

#[tokio::test]
async fn resend_needs_the_form_token_and_is_rate_limited() {
    let (_dir, s) = serve("2026-11-23T09:00:00Z").await;
    let tokens = seed(&s).await;
    s.wait_outbox_empty().await;
    let before = s.notice_files().len();
    let c = client();
    let url = format!("{}/track/{}", s.url, tokens[0]);
    let (_, _, html) = page(&c, &url).await;
    let t = field(&html, "t");
    let resend = format!("{url}/resend");
    // No token, a wrong token, or a cross-site Origin: refused, nothing sent.
    let r = post_form(&c, &resend, None, &[("x", "1")]).await;
    assert_eq!(r.status().as_u16(), 403);
    let r = post_form(&c, &resend, None, &[("t", "AAAA")]).await;
    assert_eq!(r.status().as_u16(), 403);
    let r = c
        .post(&resend)
        .header("origin", "https://evil.example")
        .form_body(&[("t", t.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let r = c
        .post(&resend)
        .header("origin", "null")
        .header("sec-fetch-site", "cross-site")
        .form_body(&[("t", t.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        403,
        "Origin: null falls back to Sec-Fetch-Site"
    );
    assert_eq!(s.notice_files().len(), before);
    // The real form: sent once, then 429 for ten minutes.
    let r = post_form(&c, &resend, None, &[("t", t.as_str())]).await;
    assert_eq!(r.status().as_u16(), 303);
    assert!(header(r.headers(), "location").ends_with("?resent=1"));
    assert_eq!(s.notice_files().len(), before + 1);
    let n = s.notice_files().pop().unwrap();
    assert_eq!(n["parcel_id"], "P-1001");
    let r = post_form(&c, &resend, None, &[("t", t.as_str())]).await;
    assert_eq!(r.status().as_u16(), 429);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("You can ask again in 10 minutes")
    );
    assert_eq!(s.notice_files().len(), before + 1);
    s.handle.shutdown().await;
}

/// Sign in: returns the session cookie pair and the board page.
pub(crate) async fn login(s: &Server, c: &reqwest::Client) -> (String, String) {
    let r = post_form(
        c,
        &format!("{}/board/login", s.url),
        None,
        &[("token", s.admin.as_str())],
    )
    .await;
    assert_eq!(r.status().as_u16(), 303);
    let set = header(r.headers(), "set-cookie").to_string();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Path=/board"),
        "{set}"
    );
    assert!(!set.contains("Secure"), "plain http: no Secure flag");
    let cookie = set.split(';').next().unwrap().to_string();
    let id = cookie.split_once('=').unwrap().1;
    assert!(
        doorcode_core::b64::decode(id).unwrap().len() >= 16,
        "≥128-bit session id"
    );
    let r = get_with_cookie(c, &format!("{}/board?date={DAY}", s.url), &cookie).await;
    assert_eq!(r.status().as_u16(), 200);
    assert_page_headers(r.headers());
    (cookie, r.text().await.unwrap())
}

#[tokio::test]
async fn board_login_csrf_reissue_enroll_close_and_logout() {
    let (_dir, s) = serve("2026-11-23T09:00:00Z").await;
    seed(&s).await;
    let c = client();
    // Signed out: a login page, no data; the live part and every POST refuse.
    let (st, h, html) = page(&c, &format!("{}/board", s.url)).await;
    assert_eq!(st, 200);
    assert_page_headers(&h);
    assert!(html.contains("Sign in") && !html.contains("P-1001"));
    assert_eq!(page(&c, &format!("{}/board/live", s.url)).await.0, 401);
    let r = post_form(
        &c,
        &format!("{}/board/close-day", s.url),
        None,
        &[("date", DAY)],
    )
    .await;
    assert_eq!(r.status().as_u16(), 403);
    let r = post_form(
        &c,
        &format!("{}/board/login", s.url),
        None,
        &[("token", "nope")],
    )
    .await;
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.headers().get("set-cookie").is_none());

    let (cookie, html) = login(&s, &c).await;
    let csrf = field(&html, "csrf");
    assert!(html.contains("C-42") && html.contains("0 of 3 delivered"));
    assert!(html.contains("<script src=\"/static/board.js\""));
    let post = |path: &str, form: Vec<(&str, String)>, origin: Option<&str>| {
        let mut b = c
            .post(format!("{}{path}", s.url))
            .header("cookie", &cookie)
            .form_body(&form);
        if let Some(o) = origin {
            b = b.header("origin", o);
        }
        async move { b.send().await.unwrap() }
    };
    // CSRF: missing, wrong, or right token from another origin: 403, nothing changes.
    for (form, origin) in [
        (vec![("date", DAY.to_string())], None),
        (
            vec![("date", DAY.to_string()), ("csrf", "A".repeat(43))],
            None,
        ),
        (
            vec![("date", DAY.to_string()), ("csrf", csrf.clone())],
            Some("http://evil.example"),
        ),
    ] {
        let r = post("/board/close-day", form, origin).await;
        assert_eq!(r.status().as_u16(), 403);
    }
    assert_eq!(
        s.admin_get("/v1/parcels/P-1003").await.1["delivery_date"],
        DAY
    );

    // Lock P-1002 with five wrong online checks; the live part shows it.
    let hs = s.enroll("C-42").await;
    assert_eq!(s.manifest_response(&hs, DAY).await.status(), 200);
    let real = derive_code(&vector_key(), "P-1002", d(DAY), 1, 6).unwrap();
    let wrong = if real.expose() == "000000" {
        "111111"
    } else {
        "000000"
    };
    let mut last = Value::Null;
    for _ in 0..5 {
        last = s
            .post_as(
                &hs.token,
                "/v1/verify",
                json!({"parcel_id": "P-1002", "code": wrong}),
            )
            .await
            .1;
    }
    assert_eq!(last["result"], "locked");
    let r = get_with_cookie(&c, &format!("{}/board/live?date={DAY}", s.url), &cookie).await;
    assert_eq!(r.status().as_u16(), 200);
    let live = r.text().await.unwrap();
    assert!(
        live.contains("data-reissue=\"P-1002\"") && live.contains("locked after 5 wrong tries")
    );
    assert!(live.contains("verify_lockout"));
    assert!(!live.contains("<html"), "the live part is a fragment");
    // Filters.
    let r = get_with_cookie(
        &c,
        &format!("{}/board/live?date={DAY}&status=delivered", s.url),
        &cookie,
    )
    .await;
    assert!(r.text().await.unwrap().contains("No parcels match"));

    // Reissue with the token.
    let r = post(
        "/board/reissue",
        vec![
            ("csrf", csrf.clone()),
            ("parcel_id", "P-1002".into()),
            ("date", DAY.into()),
        ],
        Some(&s.url),
    )
    .await;
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(
        header(r.headers(), "location"),
        format!("/board?date={DAY}&done=reissued")
    );
    let p = s.admin_get("/v1/parcels/P-1002").await.1;
    assert_eq!(
        (p["attempt"].as_u64(), p["locked"].as_bool()),
        (Some(2), Some(false))
    );

    // Enrollment code for a courier, shown once on the page.
    let r = post(
        "/board/enroll",
        vec![("csrf", csrf.clone()), ("courier_id", "C-43".into())],
        None,
    )
    .await;
    assert_eq!(r.status().as_u16(), 200);
    let html = r.text().await.unwrap();
    let needle = "id=\"enrollment-code\" class=\"big\">";
    let at = html.find(needle).unwrap() + needle.len();
    let code = &html[at..at + 14];
    assert_eq!(code.len(), 14, "{code}");
    let probe = doorcode_core::envelope::SigningKey::generate("probe").unwrap();
    let (st, dev) = s
        .post_as("", "/v1/devices", json!({"enrollment_code": code, "device_public_key": probe.public_key().public_b64(), "device_name": "t"}))
        .await;
    assert_eq!(st, 200, "{dev}");
    assert_eq!(dev["courier_id"], "C-43");

    // Close the day: undelivered parcels move on.
    let r = post(
        "/board/close-day",
        vec![("csrf", csrf.clone()), ("date", DAY.into())],
        None,
    )
    .await;
    assert_eq!(r.status().as_u16(), 200);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("Closed 2026-11-23: 3 parcel(s) moved to 2026-11-24")
    );
    assert_eq!(
        s.admin_get("/v1/parcels/P-1003").await.1["delivery_date"],
        "2026-11-24"
    );

    // Logout ends the session server-side: the old cookie no longer works.
    let r = post("/board/logout", vec![("csrf", csrf.clone())], None).await;
    assert_eq!(r.status().as_u16(), 303);
    assert!(header(r.headers(), "set-cookie").contains("Max-Age=0"));
    let r = get_with_cookie(&c, &format!("{}/board", s.url), &cookie).await;
    assert!(r.text().await.unwrap().contains("Sign in"));
    let r = post(
        "/board/close-day",
        vec![("csrf", csrf.clone()), ("date", "2026-11-24".into())],
        None,
    )
    .await;
    assert_eq!(r.status().as_u16(), 403);
    s.handle.shutdown().await;
}

#[tokio::test]
async fn session_cookie_is_secure_behind_https() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), "2026-11-23T09:00:00Z");
    cfg.public_url = Some("https://depot.example".into());
    let s = start(cfg).await;
    let r = client()
        .post(format!("{}/board/login", s.url))
        .form_body(&[("token", s.admin.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    assert!(header(r.headers(), "set-cookie").contains("; Secure"));
    s.handle.shutdown().await;
}

/// A code is valid only within its day: a parcel routed for tomorrow shows
/// no code today, and its code appears when its day begins.
#[tokio::test]
async fn tomorrows_code_is_not_on_the_tracking_page_before_its_day() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), "2026-11-23T09:00:00Z");
    let clock = movable(&mut cfg, "2026-11-23T09:00:00Z");
    let s = start(cfg).await;
    let r = s
        .admin_ok(
            "/v1/parcels",
            json!({"parcels": [{"parcel_id": "P-2001", "recipient": {"name": "J. Doe"},
            "address": "1 Main St", "value": 100, "currency": "EUR"}]}),
        )
        .await;
    let token = track_token(&r["results"][0]["track_url"]);
    s.admin_ok(
        "/v1/routes",
        json!({"route_id": "R-8", "courier_id": "C-42", "delivery_date": "2026-11-24",
            "stops": [{"stop_id": "S-1", "address": "1 Main St", "parcel_ids": ["P-2001"]}]}),
    )
    .await;
    let code = derive_code(&vector_key(), "P-2001", d("2026-11-24"), 1, 6).unwrap();
    let c = client();
    let url = format!("{}/track/{token}", s.url);
    let (st, _, html) = page(&c, &url).await;
    assert_eq!(st, 200);
    assert!(!html.contains(code.expose()), "not before its day");
    assert!(html.contains("No code right now"));
    assert_eq!(
        s.get(&format!("/v1/track/{token}")).await.1["code"],
        Value::Null
    );
    *clock.lock().unwrap() = t("2026-11-24T00:00:00Z");
    let (_, _, html) = page(&c, &url).await;
    assert!(html.contains(code.expose()), "from the start of its day");
    s.handle.shutdown().await;
}

/// The board shows all of the day's signals, page by page: 60 junk
/// signals do not hide the dispute raised after them.
#[tokio::test]
async fn the_board_pages_through_all_of_the_days_signals() {
    let (_dir, s) = serve("2026-11-23T09:00:00Z").await;
    seed(&s).await;
    let mut hs = s.enroll("C-42").await;
    let m = s.manifest(&hs, DAY).await;
    let door = Door::of(&m, DAY);
    let right = derive_code(&vector_key(), "P-1001", d(DAY), 1, 6).unwrap();
    let mut envs = Vec::new();
    for _ in 0..60 {
        hs.seq += 1; // a gap every time
        let conf = hs.delivered(&door, "P-1001", 1, right.expose(), "2026-11-23T08:00:00Z");
        envs.push(json!(hs.sign(&conf)));
    }
    let conf = hs.delivered(&door, "P-1002", 1, "000000", "2026-11-23T08:30:00Z");
    envs.push(json!(hs.sign(&conf)));
    s.upload(&hs, envs).await;
    let c = client();
    let (cookie, html) = login(&s, &c).await;
    let seq_gaps = |html: &str| html.matches("<td>seq_gap</td>").count();
    assert_eq!(seq_gaps(&html), 50, "the first page of signals");
    assert!(!html.contains("<td>code_mismatch</td>"));
    let next = html
        .split("data-signals-page=\"next\"")
        .next()
        .and_then(|h| h.rsplit("href=\"").next())
        .map(|h| h.split('"').next().unwrap().replace("&amp;", "&"))
        .unwrap();
    assert!(
        next.starts_with("/board?date=2026-11-23&signals="),
        "{next}"
    );
    let r = get_with_cookie(&c, &format!("{}{next}", s.url), &cookie).await;
    assert_eq!(r.status().as_u16(), 200);
    let html = r.text().await.unwrap();
    assert_eq!(seq_gaps(&html), 10, "the rest");
    assert!(
        html.contains("<td>code_mismatch</td>"),
        "the dispute raised after them"
    );
    assert!(
        !html.contains("data-signals-page=\"next\""),
        "the last page"
    );
    assert!(html.contains("data-signals-page=\"first\""));
    s.handle.shutdown().await;
}
