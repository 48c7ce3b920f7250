//! Concurrent wrong tries cannot beat the lockout: each try is counted in
//! one transaction, so exactly `max_attempts` are counted and the rest see
//! `locked`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_wrong_tries_lock_exactly_once() {
    let (_dir, s) = serve("2026-11-23T06:00:00Z").await;
    let parcel = json!({"parcel_id": "P-1001", "recipient": {"name": "J. Doe"},
        "address": "1 Example Street", "value": 120, "currency": "EUR"});
    s.one_parcel_route(parcel, "R-7", "C-42", "2026-11-23")
        .await;
    let a = s.enroll("C-42").await;
    // A device enrolled after the route gets its manifest built on first fetch.
    assert_eq!(s.manifest_response(&a, "2026-11-23").await.status(), 200);
    let wrong = wrong(&code("P-1001", "2026-11-23", 1));
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (http, url, token, wrong) = (
            s.http.clone(),
            s.url.clone(),
            a.token.clone(),
            wrong.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(format!("{url}/v1/verify"))
                .bearer_auth(token)
                .json(&json!({"parcel_id": "P-1001", "code": wrong}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.json::<serde_json::Value>().await.unwrap()["result"]
                .as_str()
                .unwrap()
                .to_string()
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    assert_eq!(results.iter().filter(|r| *r == "rejected").count(), 4);
    assert_eq!(results.iter().filter(|r| *r == "locked").count(), 16);
    let pv = s.admin_get("/v1/parcels/P-1001").await.1;
    assert_eq!(
        (pv["wrong_tries"].as_u64(), pv["locked"].as_bool()),
        (Some(5), Some(true))
    );
    // Reissue unlocks with a new attempt.
    let (st, v) = s.admin_post("/v1/parcels/P-1001/reissue", json!({})).await;
    assert_eq!(
        (st, v["locked"].as_bool(), v["attempt"].as_u64()),
        (200, Some(false), Some(2))
    );
    let new =
        doorcode_core::codes::derive_code(&vector_key(), "P-1001", d("2026-11-23"), 2, 6).unwrap();
    let (st, v) = s
        .post_as(
            &a.token,
            "/v1/verify",
            json!({"parcel_id": "P-1001", "code": new.expose()}),
        )
        .await;
    assert_eq!((st, v["result"].as_str()), (200, Some("accepted")));
    s.handle.shutdown().await;
}
