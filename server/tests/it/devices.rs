//! Dispatch lists a courier's handsets and revokes a lost one
//! (`GET /v1/devices?courier_id=`, `POST /v1/devices/{id}/revoke`): a revoked
//! token answers 401 on every device route at once, also on a second node
//! on the same PostgreSQL, while the courier's other handset keeps working.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::*;
use serde_json::{Value, json};

const NOW: &str = "2026-11-23T08:00:00Z";

async fn seed(s: &Server) {
    let parcel = json!({"parcel_id": "P-1", "recipient": {"name": "A Customer", "email": "a@example.com"},
        "address": "1 Main St", "value": 100, "currency": "EUR"});
    s.one_parcel_route(parcel, "R-1", "C-42", "2026-11-23")
        .await;
}

async fn manifest_status(s: &Server, token: &str) -> u16 {
    s.get_as(token, "/v1/manifest?date=2026-11-23").await.0
}

#[tokio::test]
async fn dispatch_lists_and_revokes_a_handset_which_is_locked_out_at_once() {
    let (_dir, s) = serve(NOW).await;
    seed(&s).await;
    let lost = s.enroll("C-42").await;
    let kept = s.enroll("C-42").await;
    assert_eq!(manifest_status(&s, &lost.token).await, 200);

    let (st, v) = s.admin_get("/v1/devices?courier_id=C-42").await;
    assert_eq!(st, 200, "{v}");
    let devices = v["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 2);
    // Both enrolled at the same (test) instant: find them by id.
    let listed = |v: &Value, id: &str| {
        v["devices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["device_id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} not listed: {v}"))
    };
    let d = listed(&v, &lost.device_id);
    assert_eq!(d["name"], "test phone");
    assert_eq!(d["courier_id"], "C-42");
    assert!(d["revoked_at"].is_null());
    listed(&v, &kept.device_id);
    assert!(d["enrolled_at"].is_string() && d["last_seen_at"].is_string());
    let text = v.to_string();
    assert!(
        !text.contains(&lost.token) && !text.contains("token") && !text.contains("public_key"),
        "no secrets in the list: {text}"
    );
    // Only dispatch may list or revoke; the query is checked.
    assert_eq!(
        s.get_as(&lost.token, "/v1/devices?courier_id=C-42").await.0,
        401
    );
    assert_eq!(s.get("/v1/devices?courier_id=C-42").await.0, 401);
    assert_eq!(s.admin_get("/v1/devices").await.0, 400);
    assert_eq!(s.admin_get("/v1/devices?courier=C-42").await.0, 400);
    assert_eq!(
        s.admin_get("/v1/devices?courier_id=%E2%80%AEx").await.0,
        400
    );
    let path = format!("/v1/devices/{}/revoke", lost.device_id);
    assert_eq!(s.post_as(&kept.token, &path, json!({})).await.0, 401);
    assert_eq!(
        s.admin_post("/v1/devices/D-404/revoke", json!({})).await.0,
        404
    );

    let v = s.admin_ok(&path, json!({})).await;
    let revoked_at = v["revoked_at"].as_str().unwrap().to_string();
    // Every device route refuses the lost handset now; the other one works.
    assert_eq!(manifest_status(&s, &lost.token).await, 401);
    let (st, _) = s
        .post_as(
            &lost.token,
            "/v1/verify",
            json!({"parcel_id": "P-1", "code": "123456"}),
        )
        .await;
    assert_eq!(st, 401);
    let (st, _) = s
        .post_as(
            &lost.token,
            "/v1/confirmations",
            json!({"confirmations": []}),
        )
        .await;
    assert_eq!(st, 401);
    assert_eq!(
        s.post_as(&lost.token, "/v1/parcels/P-1/resend", json!({}))
            .await
            .0,
        401
    );
    assert_eq!(manifest_status(&s, &kept.token).await, 200);
    // Revoking again changes nothing; the list shows it.
    let (st, v) = s.admin_post(&path, json!({})).await;
    assert_eq!(
        (st, v["revoked_at"].as_str()),
        (200, Some(revoked_at.as_str()))
    );
    let (_, v) = s.admin_get("/v1/devices?courier_id=C-42").await;
    assert_eq!(
        listed(&v, &lost.device_id)["revoked_at"].as_str(),
        Some(revoked_at.as_str())
    );
    assert!(listed(&v, &kept.device_id)["revoked_at"].is_null());
}

#[tokio::test]
async fn a_revocation_on_one_node_locks_the_handset_out_on_the_other_at_once() {
    let Some(pg) = crate::support::pg::fresh_schema("devices_two_nodes").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), NOW);
    cfg.database = Some(pg.url.clone());
    let a = start(cfg).await;
    seed(&a).await;
    let h = a.enroll("C-42").await;
    // Node B: the same data dir (keys) and database.
    let mut cfg = config(dir.path(), NOW);
    cfg.database = Some(pg.url.clone());
    let handle = doorcode_server::start(cfg).await.unwrap();
    let b = Server {
        url: handle.url(),
        admin: a.admin.clone(),
        http: reqwest::Client::new(),
        handle,
        dir: dir.path().to_path_buf(),
    };
    assert_eq!(manifest_status(&b, &h.token).await, 200);
    a.admin_ok(&format!("/v1/devices/{}/revoke", h.device_id), json!({}))
        .await;
    assert_eq!(manifest_status(&b, &h.token).await, 401, "node B, at once");
    assert_eq!(manifest_status(&a, &h.token).await, 401);
    b.handle.shutdown().await;
    a.handle.shutdown().await;
    pg.drop_schema().await;
}

#[tokio::test]
async fn the_board_lists_a_couriers_handsets_and_revokes_one_behind_its_csrf_rules() {
    use crate::support::board::*;
    use crate::web::login;
    let (_dir, s) = serve(NOW).await;
    seed(&s).await;
    let lost = s.enroll("C-42").await;
    let c = client();
    let (cookie, board) = login(&s, &c).await;
    assert!(
        board.contains("action=\"/board/devices\""),
        "the board links to it"
    );
    let page = get_with_cookie(
        &c,
        &format!("{}/board/devices?courier_id=C-42", s.url),
        &cookie,
    )
    .await;
    assert_eq!(page.status().as_u16(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains(&format!("data-revoke=\"{}\"", lost.device_id)),
        "{html}"
    );
    assert!(!html.contains(&lost.token), "no token on the page");
    // Without the session, or without the CSRF token: refused, nothing changes.
    let form = [
        ("device_id", lost.device_id.as_str()),
        ("courier_id", "C-42"),
    ];
    let r = post_form(
        &c,
        &format!("{}/board/revoke", s.url),
        Some(cookie.as_str()),
        &form,
    )
    .await;
    assert_eq!(r.status().as_u16(), 403);
    assert_eq!(manifest_status(&s, &lost.token).await, 200);
    let csrf = field(&html, "csrf");
    let mut with_csrf: Vec<(&str, &str)> = form.to_vec();
    with_csrf.push(("csrf", csrf.as_str()));
    let r = post_form(&c, &format!("{}/board/revoke", s.url), None, &with_csrf).await;
    assert_eq!(r.status().as_u16(), 403, "no session cookie");
    let r = post_form(
        &c,
        &format!("{}/board/revoke", s.url),
        Some(cookie.as_str()),
        &with_csrf,
    )
    .await;
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(manifest_status(&s, &lost.token).await, 401);
    let html = get_with_cookie(
        &c,
        &format!("{}/board/devices?courier_id=C-42&done=revoked", s.url),
        &cookie,
    )
    .await
    .text()
    .await
    .unwrap();
    assert!(
        html.contains("Handset revoked") && html.contains("revoked 2026-11-23"),
        "{html}"
    );
}
