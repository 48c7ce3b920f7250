//! The envelope cache across two real `doorcode serve` processes on one
//! PostgreSQL schema: node A keeps the envelope it served a handset; a new
//! route revision and a revocation made through node B take effect on A's
//! next pull at once, because A serves from memory only what the shared
//! database says is current.
//! Without a reachable PostgreSQL: FAILS under CI, loudly SKIPPED elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::fleet::{Serve, TwoDbNodes, enroll_on};
use crate::support::send_text;
use serde_json::{Value, json};

/// A dispatch call with the fleet's admin token to one node; must answer 200.
async fn dispatch(
    http: &reqwest::Client,
    node: &Serve,
    admin: &str,
    path: &str,
    body: Value,
) -> Value {
    let r = http
        .post(format!("{}{path}", node.url()))
        .bearer_auth(admin)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{path}");
    r.json().await.unwrap_or(Value::Null)
}

/// A full pull (no `If-None-Match`) from one node: status and ETag.
async fn pull(http: &reqwest::Client, node: &Serve, token: &str, date: &str) -> (u16, String) {
    let r = http
        .get(format!("{}/v1/manifest?date={date}", node.url()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let etag = r
        .headers()
        .get("etag")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (r.status().as_u16(), etag)
}

async fn from_cache(http: &reqwest::Client, node: &Serve, admin: &str) -> u64 {
    send_text(
        http.get(format!("{}/metrics", node.url()))
            .bearer_auth(admin),
    )
    .await
    .lines()
    .find_map(|l| l.strip_prefix("doorcode_manifests_from_cache_total "))
    .unwrap()
    .trim()
    .parse()
    .unwrap()
}

fn route(date: &str, parcels: &[&str]) -> Value {
    json!({"route_id": "R-1", "courier_id": "C-1", "delivery_date": date,
        "stops": [{"stop_id": "S-1", "address": "1 Main St", "parcel_ids": parcels}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_a_node_serves_its_cached_envelope_only_while_the_database_says_it_is_current() {
    let Some(fleet) = TwoDbNodes::start("pg_envelope_cache_two_nodes", &[]).await else {
        return;
    };
    let (a, b, admin) = (&fleet.a, &fleet.b, fleet.admin.clone());
    let http = reqwest::Client::new();
    let date = chrono::Utc::now().date_naive().to_string();
    let parcel = |id: &str| json!({"parcel_id": id, "recipient": {"name": "Ann"}, "address": "1 Main St", "value": 120, "currency": "EUR"});
    dispatch(
        &http,
        a,
        &admin,
        "/v1/parcels",
        json!({"parcels": [parcel("P-1"), parcel("P-2")]}),
    )
    .await;
    dispatch(&http, a, &admin, "/v1/routes", route(&date, &["P-1"])).await;
    let a_url = a.url();
    let dev = enroll_on(&http, (&a_url, &a_url), &admin, "C-1", "h").await;
    let token = dev["device_token"].as_str().unwrap().to_string();

    // A serves revision 1, then the same build from memory.
    let (st, etag1) = pull(&http, a, &token, &date).await;
    assert!(st == 200 && etag1.ends_with(":1\""), "{st} {etag1}");
    assert_eq!(pull(&http, a, &token, &date).await, (200, etag1.clone()));
    assert_eq!(from_cache(&http, a, &admin).await, 1);

    // The route changes through B; A's next pull is revision 2, not its memory.
    dispatch(
        &http,
        b,
        &admin,
        "/v1/routes",
        route(&date, &["P-1", "P-2"]),
    )
    .await;
    let (st, etag2) = pull(&http, a, &token, &date).await;
    assert!(st == 200 && etag2.ends_with(":2\""), "{st} {etag2}");
    assert_eq!(
        from_cache(&http, a, &admin).await,
        1,
        "the stale build was not served"
    );

    // Revoked through B: A refuses at once, with the envelope still in memory.
    let revoke = format!("/v1/devices/{}/revoke", dev["device_id"].as_str().unwrap());
    dispatch(&http, b, &admin, &revoke, json!({})).await;
    assert_eq!(pull(&http, a, &token, &date).await.0, 401);
    assert_eq!(from_cache(&http, a, &admin).await, 1);
    fleet.finish().await;
}
