//! The doorstep rules of DESIGN's "Customers and couriers", over real HTTP:
//! the tracking page's "I did not order this" (the code is void at once, the
//! parcel held, dispatch signalled, the next manifest says `"hold": true`, a
//! delivery is disputed, a reissue releases it with a notice that says the old
//! code no longer works), and the courier's resend from the door, which shares
//! the customer's limit. The last test drives the real core (`SyncClient`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::board::*;
use crate::support::*;
use crate::web::{DAY, seed};
use doorcode_core::codes::derive_code;
use doorcode_core::envelope::Envelope;
use doorcode_core::manifest::open_received;
use serde_json::{Value, json};

const NOW: &str = "2026-11-23T09:00:00Z";

fn code(parcel: &str, attempt: u32) -> String {
    crate::support::code(parcel, DAY, attempt)
}

/// The device's manifest for DAY: (revision, manifest id, held parcel ids).
async fn manifest(s: &Server, h: &Handset) -> (u64, String, Vec<String>) {
    let r = s.manifest_response(h, DAY).await;
    assert_eq!(r.status().as_u16(), 200);
    let env: Envelope = r.json().await.unwrap();
    let got = open_received(&env, &s.server_keys().await).unwrap();
    (
        got.manifest.revision,
        got.manifest.manifest_id.clone(),
        got.held.into_iter().collect(),
    )
}

async fn not_mine(c: &reqwest::Client, url: &str, form_token: &str) -> reqwest::Response {
    post_form(c, &format!("{url}/not-mine"), None, &[("t", form_token)]).await
}

async fn signals(s: &Server) -> Vec<Value> {
    let (st, v) = s.admin_get(&format!("/v1/disputes?date={DAY}")).await;
    assert_eq!(st, 200, "{v}");
    v["signals"].as_array().unwrap().clone()
}

#[tokio::test]
async fn not_ordered_holds_the_parcel_voids_its_code_and_the_next_manifest_carries_hold() {
    let (_dir, s) = serve(NOW).await;
    let tokens = seed(&s).await;
    let mut h = s.enroll("C-42").await;
    let (rev1, _, held) = manifest(&s, &h).await;
    assert!(held.is_empty());

    // The page offers the button while the code shows, and every notice links to it.
    let c = client();
    let url = format!("{}/track/{}", s.url, tokens[0]);
    let (_, _, html) = page(&c, &url).await;
    assert!(html.contains(&code("P-1001", 1)) && html.contains("I did not order this"));
    let notices = s.wait_notices(3).await;
    for n in &notices {
        let body = n["body"].as_str().unwrap();
        assert!(
            body.contains("/track/") && body.contains("#not-mine"),
            "{body}"
        );
    }
    // Without the page's form token, or cross-site: refused, nothing changes.
    assert_eq!(not_mine(&c, &url, "AAAA").await.status().as_u16(), 403);
    let forged = c
        .post(format!("{url}/not-mine"))
        .header("origin", "https://evil.example")
        .form_body(&[("t", field(&html, "t").as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status().as_u16(), 403);
    assert!(signals(&s).await.is_empty());

    // The real button.
    let form_token = field(&html, "t");
    let r = not_mine(&c, &url, &form_token).await;
    assert_eq!(r.status().as_u16(), 303);
    assert!(header(r.headers(), "location").ends_with("?held=1"));
    let (_, _, html) = page(&c, &url).await;
    assert!(html.contains("On hold"), "{html}");
    assert!(
        !html.contains(&code("P-1001", 1)),
        "the code is void at once"
    );
    assert!(
        !html.contains("I did not order this"),
        "no second press offered"
    );
    // Pressing again (an old tab) changes nothing.
    assert_eq!(not_mine(&c, &url, &form_token).await.status().as_u16(), 303);
    let sig = signals(&s).await;
    assert_eq!(sig.len(), 1, "{sig:?}");
    assert_eq!(sig[0]["kind"], "not_ordered");
    assert_eq!(sig[0]["parcel_id"], "P-1001");

    // The next manifest carries the hold, at a new revision.
    let (rev2, mid, held) = manifest(&s, &h).await;
    assert!(rev2 > rev1);
    assert_eq!(held, ["P-1001"]);
    // Online, the code is refused without counting a try.
    let (st, v) = s
        .post_as(
            &h.token,
            "/v1/verify",
            json!({"parcel_id": "P-1001", "code": code("P-1001", 1)}),
        )
        .await;
    assert_eq!((st, v["error"].as_str()), (409, Some("held")), "{v}");
    // A stale handset that hands it over anyway: disputed.
    let door = Door {
        manifest_id: &mid,
        revision: rev2,
        date: DAY,
    };
    let conf = h.delivered(
        &door,
        "P-1001",
        1,
        &code("P-1001", 1),
        "2026-11-23T09:05:00Z",
    );
    let (st, v) = s
        .post_as(
            &h.token,
            "/v1/confirmations",
            json!({"confirmations": [h.sign(&conf)]}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["results"][0]["status"], "accepted", "{v}");
    assert_eq!(v["results"][0]["disputed"], true, "{v}");
    let (_, p) = s.admin_get("/v1/parcels/P-1001").await;
    assert_eq!(p["status"], "disputed", "{p}");
    assert_eq!(
        signals(&s)
            .await
            .iter()
            .filter(|x| x["kind"] == "not_ordered")
            .count(),
        2
    );
}

#[tokio::test]
async fn dispatch_releases_a_held_parcel_with_a_reissue_whose_notice_voids_the_old_code() {
    let (_dir, s) = serve(NOW).await;
    let tokens = seed(&s).await;
    let c = client();
    let url = format!("{}/track/{}", s.url, tokens[1]);
    let (_, _, html) = page(&c, &url).await;
    assert_eq!(
        not_mine(&c, &url, &field(&html, "t"))
            .await
            .status()
            .as_u16(),
        303
    );
    // A held parcel cannot be routed again by an import.
    let (st, v) = s
        .admin_post(
            "/v1/routes",
            json!({"route_id": "R-8", "courier_id": "C-43", "delivery_date": DAY,
                   "stops": [{"stop_id": "S-9", "address": "2 Main St", "parcel_ids": ["P-1002"]}]}),
        )
        .await;
    assert_eq!(st, 409, "{v}");
    assert!(v["message"].as_str().unwrap().contains("on hold"), "{v}");
    s.wait_outbox_empty().await;
    let before = s.notice_files().len();

    s.admin_ok("/v1/parcels/P-1002/reissue", json!({})).await;
    let (_, p) = s.admin_get("/v1/parcels/P-1002").await;
    assert_eq!(
        (p["status"].as_str(), p["attempt"].as_u64()),
        (Some("scheduled"), Some(2))
    );
    let notices = s.wait_notices(before + 1).await;
    let n = notices.last().unwrap();
    assert_eq!(n["parcel_id"], "P-1002");
    let body = n["body"].as_str().unwrap();
    assert!(body.contains(&code("P-1002", 2)), "the new code");
    assert!(
        body.contains("any code you received before for this parcel no longer works"),
        "{body}"
    );
}

#[tokio::test]
async fn a_courier_asks_for_the_notice_again_once_per_ten_minutes_shared_with_the_customer() {
    let (_dir, s) = serve(NOW).await;
    let tokens = seed(&s).await;
    let h = s.enroll("C-42").await;
    let other = s.enroll("C-43").await;
    // The handset holds its manifest (resends are for parcels on it).
    manifest(&s, &h).await;
    s.wait_outbox_empty().await;
    let before = s.notice_files().len();
    let resend = |token: String, pid: &'static str| {
        let (http, url) = (s.http.clone(), s.url.clone());
        async move {
            let mut r = http.post(format!("{url}/v1/parcels/{pid}/resend"));
            if !token.is_empty() {
                r = r.bearer_auth(token);
            }
            r.send().await.unwrap()
        }
    };
    // No token, another courier's device, an unknown parcel: refused, nothing sent.
    assert_eq!(resend(String::new(), "P-1001").await.status().as_u16(), 401);
    assert_eq!(
        resend(s.admin.clone(), "P-1001").await.status().as_u16(),
        401
    );
    assert_eq!(
        resend(other.token.clone(), "P-1001")
            .await
            .status()
            .as_u16(),
        404
    );
    assert_eq!(
        resend(h.token.clone(), "P-9999").await.status().as_u16(),
        404
    );
    assert_eq!(s.notice_files().len(), before);

    let r = resend(h.token.clone(), "P-1001").await;
    assert_eq!(r.status().as_u16(), 202);
    let n = s.notice_files();
    assert_eq!(n.len(), before + 1);
    assert_eq!(n.last().unwrap()["parcel_id"], "P-1001");
    assert!(
        n.last().unwrap()["body"]
            .as_str()
            .unwrap()
            .contains(&code("P-1001", 1))
    );
    // Again from the door: 429 with Retry-After; and the customer's button shares it.
    let r = resend(h.token.clone(), "P-1001").await;
    assert_eq!(r.status().as_u16(), 429);
    let wait: u64 = header(r.headers(), "retry-after").parse().unwrap();
    assert!((1..=600).contains(&wait), "{wait}");
    let c = client();
    let url = format!("{}/track/{}", s.url, tokens[0]);
    let (_, _, html) = page(&c, &url).await;
    let r = post_form(
        &c,
        &format!("{url}/resend"),
        None,
        &[("t", field(&html, "t").as_str())],
    )
    .await;
    assert_eq!(r.status().as_u16(), 429, "one limit for page and handset");
    // Another parcel has its own slot.
    assert_eq!(
        resend(h.token.clone(), "P-1002").await.status().as_u16(),
        202
    );
    assert_eq!(s.notice_files().len(), before + 2);
}

#[tokio::test]
async fn the_real_core_refuses_a_held_parcel_after_a_sync_and_resends_from_the_door() {
    use doorcode_core::handset::Handset;
    use doorcode_core::secrets::FileSecretStore;
    use doorcode_core::sync::SyncClient;
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let now = chrono::Utc::now();
    let today = now.date_naive();
    let s = start(config(dir.path(), &now.to_rfc3339())).await;
    let parcels: Vec<Value> = ["P-1", "P-2"]
        .iter()
        .map(|id| {
            json!({"parcel_id": id, "recipient": {"name": "A Customer", "email": "a@example.com"},
                         "address": "1 Main St", "value": 100, "currency": "EUR"})
        })
        .collect();
    let r = s.admin_ok("/v1/parcels", json!({"parcels": parcels})).await;
    let track = r["results"][0]["track_url"].as_str().unwrap().to_string();
    s.admin_ok("/v1/routes",
            json!({"route_id": "R-1", "courier_id": "C-1", "delivery_date": today,
                   "stops": [{"stop_id": "S-1", "address": "1 Main St", "parcel_ids": ["P-1", "P-2"]}]})).await;
    let (_, e) = s
        .admin_post("/v1/enrollments", json!({"courier_id": "C-1"}))
        .await;
    let db = dir.path().join("courier.db");
    let secrets = FileSecretStore::new(dir.path().join("courier.db.secrets")).unwrap();
    let handset = Arc::new(Handset::open(&db, Arc::new(secrets)).unwrap());
    let client = SyncClient::new(handset).unwrap();
    client
        .enroll(&s.url, e["enrollment_code"].as_str().unwrap(), "phone")
        .await
        .unwrap();
    client.sync(Some(today)).await.unwrap();

    // The customer presses the button; after a sync the handset will not hand it over.
    let c = crate::support::board::client();
    let (_, _, html) = page(&c, &track).await;
    assert_eq!(
        not_mine(&c, &track, &field(&html, "t"))
            .await
            .status()
            .as_u16(),
        303
    );
    client.sync(Some(today)).await.unwrap();
    let p1 = derive_code(&vector_key(), "P-1", today, 1, 6).unwrap();
    let refused = client.verify("P-1", p1.expose()).await;
    assert!(refused.is_err(), "{refused:?}");

    // P-2's code never arrived: the courier asks once, then meets the limit.
    s.wait_outbox_empty().await;
    let before = s.notice_files().len();
    client.resend("P-2").await.unwrap();
    assert_eq!(s.notice_files().len(), before + 1);
    let again = client.resend("P-2").await;
    assert!(
        matches!(
            again,
            Err(doorcode_core::error::Error::ResendTooSoon { .. })
        ),
        "{again:?}"
    );
    let held_resend = client.resend("P-1").await;
    assert!(
        held_resend.is_err(),
        "no resend for a held parcel: {held_resend:?}"
    );
}

#[tokio::test]
async fn the_new_doorstep_routes_refuse_odd_methods_garbage_paths_and_huge_ids() {
    let (_dir, s) = serve(NOW).await;
    let tokens = seed(&s).await;
    let h = s.enroll("C-42").await;
    let c = client();
    // Odd methods on the button and on the courier's resend: 405, nothing held.
    for m in ["GET", "PUT", "DELETE", "PATCH"] {
        let m = reqwest::Method::from_bytes(m.as_bytes()).unwrap();
        let r = c
            .request(m.clone(), format!("{}/track/{}/not-mine", s.url, tokens[0]))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 405, "{m} not-mine");
        let r = c
            .request(m.clone(), format!("{}/v1/parcels/P-1001/resend", s.url))
            .bearer_auth(&h.token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 405, "{m} resend");
    }
    // Garbage, control characters, bidi and a huge token: the plain 404 page.
    for bad in [
        "%00%0a",
        "%E2%80%AEabc",
        "x".repeat(5000).as_str(),
        "..%2F..%2Fetc",
    ] {
        let r = not_mine(&c, &format!("{}/track/{bad}", s.url), "AAAA").await;
        assert_eq!(r.status().as_u16(), 404, "{bad:.20}");
    }
    // A courier's resend for ids that are no parcel id: 4xx, never 5xx.
    for bad in [
        "%00",
        "%E2%80%AEP-1001",
        "P%0A1001",
        &"P".repeat(65),
        "18446744073709551616",
    ] {
        let r = s
            .http
            .post(format!("{}/v1/parcels/{bad}/resend", s.url))
            .bearer_auth(&h.token)
            .send()
            .await
            .unwrap();
        let st = r.status().as_u16();
        assert!((400..500).contains(&st), "{bad:.20}: {st}");
    }
    assert!(signals(&s).await.is_empty(), "nothing was held");
    assert_eq!(
        s.admin_get("/v1/parcels/P-1001").await.1["status"],
        "scheduled"
    );
}
