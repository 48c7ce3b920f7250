//! Bad input over real HTTP: oversized bodies, wrong types, unknown fields,
//! bad base64, forged signatures, replayed envelopes, unknown parcels, bad
//! auth. Each gets a 4xx (or, inside a confirmation batch, a per-item
//! permanent rejection) with a JSON `{error, message}`, and the database is
//! byte-for-byte the same afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::*;
use serde_json::{Value, json};

/// Every row of every table, as text: the stored state. Rate-limit
/// counters are left out: bad requests are meant to count against their
/// client's limits (as they did when the limits were in memory, out of this
/// snapshot's sight); the rest must not change.
fn snapshot(dir: &std::path::Path) -> String {
    let mut out = String::new();
    for (t, values) in dump::sqlite_rows(dir) {
        if t == "rate_counters" {
            continue;
        }
        let row: Vec<String> = values
            .into_iter()
            .map(|v| match v {
                rusqlite::types::Value::Text(t) => t,
                v => format!("{v:?}"),
            })
            .collect();
        out.push_str(&format!("{t}: {}\n", row.join("|")));
    }
    out
}

async fn raw(
    s: &Server,
    method: &str,
    path: &str,
    token: Option<&str>,
    ctype: Option<&str>,
    body: Vec<u8>,
) -> (u16, Value) {
    let mut req = s
        .http
        .request(method.parse().unwrap(), format!("{}{path}", s.url))
        .body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(c) = ctype {
        req = req.header("content-type", c);
    }
    let r = req.send().await.unwrap();
    let st = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        st,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn assert_4xx(what: &str, (st, v): &(u16, Value), want: u16) {
    assert_eq!(*st, want, "{what}: {v}");
    assert!(
        v["error"].is_string() && v["message"].is_string(),
        "{what}: error shape {v}"
    );
}

/// The server after one good day's work, and what the bad requests use.
struct Bad {
    dir: tempfile::TempDir,
    s: Server,
    a: Handset,
    manifest: doorcode_core::manifest::Manifest,
    /// A confirmation already accepted (replayed below).
    good: doorcode_core::envelope::Envelope,
    /// An unused enrollment code.
    enrollment: Value,
}

impl Bad {
    /// A parcel on a route, a handset that delivered it, its notice sent and
    /// an enrollment code issued: every table has rows to lose.
    async fn set_up() -> Self {
        let (dir, s) = serve("2026-11-23T06:00:00Z").await;
        let parcel = json!({"parcel_id": "P-1001", "recipient": {"name": "J. Doe", "email": "j@example.com"},
            "address": "1 Example Street", "value": 99.5, "currency": "EUR"});
        s.one_parcel_route(parcel, "R-7", "C-42", "2026-11-23")
            .await;
        let mut a = s.enroll("C-42").await;
        let m = s.manifest(&a, "2026-11-23").await;
        let door = Door::of(&m, "2026-11-23");
        let good = {
            let c = a.delivered_right(&door, "P-1001", 1, "2026-11-23T09:00:00Z");
            a.sign(&c)
        };
        let res = s.upload(&a, vec![json!(good)]).await;
        assert_eq!(res[0]["status"], "accepted");
        s.wait_notices(1).await;
        let e = s
            .admin_ok("/v1/enrollments", json!({"courier_id": "C-42"}))
            .await;
        Self {
            dir,
            s,
            a,
            manifest: m,
            good,
            enrollment: e["enrollment_code"].clone(),
        }
    }

    /// The dispatch token, the device token, the JSON content type.
    fn tokens(&self) -> (Option<&str>, Option<&str>, Option<&'static str>) {
        (
            Some(self.s.admin.as_str()),
            Some(self.a.token.as_str()),
            Some("application/json"),
        )
    }
}

/// Bodies over their route's limit: 413; a confirmation batch takes up to 8 MiB.
async fn oversized_bodies(b: &Bad) {
    let (admin, dev, jsn) = b.tokens();
    let big = format!(
        "{{\"parcels\":[],\"pad\":\"{}\"}}",
        "x".repeat(2 * 1024 * 1024)
    );
    assert_4xx(
        "oversized parcels",
        &raw(&b.s, "POST", "/v1/parcels", admin, jsn, big.into_bytes()).await,
        413,
    );
    let big = format!(
        "{{\"confirmations\":[\"{}\"]}}",
        "x".repeat(9 * 1024 * 1024)
    );
    assert_4xx(
        "oversized confirmations",
        &raw(
            &b.s,
            "POST",
            "/v1/confirmations",
            dev,
            jsn,
            big.into_bytes(),
        )
        .await,
        413,
    );
    let mid = format!(
        "{{\"confirmations\":[\"{}\"]}}",
        "x".repeat(2 * 1024 * 1024)
    );
    let (st, v) = raw(
        &b.s,
        "POST",
        "/v1/confirmations",
        dev,
        jsn,
        mid.into_bytes(),
    )
    .await;
    assert_eq!(
        (st, v["results"][0]["reason"].as_str()),
        (200, Some("malformed_envelope")),
        "confirmations take up to 8 MiB"
    );
}

/// Malformed JSON, a missing content type, wrong types, impossible dates, a numeric code (never echoed).
async fn malformed_json_and_wrong_types(b: &Bad) {
    let (admin, _, jsn) = b.tokens();
    assert_4xx(
        "syntax",
        &raw(
            &b.s,
            "POST",
            "/v1/parcels",
            admin,
            jsn,
            b"{\"parcels\": [".to_vec(),
        )
        .await,
        400,
    );
    assert_4xx(
        "no content-type",
        &raw(
            &b.s,
            "POST",
            "/v1/parcels",
            admin,
            None,
            b"{\"parcels\": []}".to_vec(),
        )
        .await,
        415,
    );
    // Wrong types.
    assert_4xx("wrong type", &b.s.admin_post("/v1/parcels", json!({"parcels": [{"parcel_id": 5, "recipient": {"name": "x"}, "address": "a", "value": 1, "currency": "EUR"}]})).await, 422);
    assert_4xx(
        "wrong type",
        &b.s.admin_post("/v1/parcels", json!({"parcels": {"a": 1}}))
            .await,
        422,
    );
    assert_4xx("bad date", &b.s.admin_post("/v1/routes", json!({"route_id": "R-7", "courier_id": "C-42", "delivery_date": "23.11.2026", "stops": []})).await, 422);
    assert_4xx("far date", &b.s.admin_post("/v1/routes", json!({"route_id": "R-7", "courier_id": "C-42", "delivery_date": "+262142-12-31", "stops": []})).await, 422);
    assert_4xx("far date", &b.s.admin_post("/v1/routes", json!({"route_id": "R-7", "courier_id": "C-42", "delivery_date": "2031-01-01", "stops": []})).await, 422);
    let v =
        b.s.post_as(
            &b.a.token,
            "/v1/verify",
            json!({"parcel_id": "P-1001", "code": 857759}),
        )
        .await;
    assert_4xx("numeric code", &v, 422);
    assert!(
        !v.1.to_string().contains("857759"),
        "the code is not echoed: {}",
        v.1
    );
}

/// Unknown fields in every kind of body.
async fn unknown_fields(b: &Bad) {
    assert_4xx(
        "unknown field",
        &b.s.admin_post("/v1/parcels", json!({"parcels": [], "extra": 1}))
            .await,
        422,
    );
    assert_4xx("unknown field", &b.s.admin_post("/v1/routes", json!({"route_id": "R-7", "courier_id": "C-42", "delivery_date": "2026-11-23", "stops": [], "x": 1})).await, 422);
    assert_4xx(
        "unknown field",
        &b.s.post_as(
            &b.a.token,
            "/v1/verify",
            json!({"parcel_id": "P-1001", "code": "123456", "force": true}),
        )
        .await,
        422,
    );
    assert_4xx(
        "unknown field",
        &b.s.post_as(
            &b.a.token,
            "/v1/confirmations",
            json!({"confirmations": [], "all": true}),
        )
        .await,
        422,
    );
}

/// A device key that is not base64; an unknown enrollment code.
async fn bad_base64_and_enrollment(b: &Bad) {
    assert_4xx("bad base64 key", &b.s.post_as("", "/v1/devices", json!({"enrollment_code": b.enrollment, "device_public_key": "!!not base64!!", "device_name": "x"})).await, 422);
    assert_4xx("bad enrollment", &b.s.post_as("", "/v1/devices", json!({"enrollment_code": "NOPE", "device_public_key": b.a.key.public_key().public_b64(), "device_name": "x"})).await, 403);
}

/// Unknown parcels and routes, refused state changes, unreadable paths and queries.
async fn unknown_parcels_routes_and_bad_paths(b: &Bad) {
    let (_, dev, _) = b.tokens();
    assert_4xx(
        "unknown parcel",
        &b.s.admin_get("/v1/parcels/NOPE").await,
        404,
    );
    assert_4xx(
        "unknown reissue",
        &b.s.admin_post("/v1/parcels/NOPE/reissue", json!({})).await,
        404,
    );
    assert_4xx(
        "route with unknown parcel",
        &b.s.admin_post(
            "/v1/routes",
            json!({"route_id": "R-1", "courier_id": "C-1", "delivery_date": "2026-11-23",
        "stops": [{"stop_id": "S", "address": "a", "parcel_ids": ["P-1001X"]}]}),
        )
        .await,
        404,
    );
    assert_4xx(
        "delivered parcel rerouted",
        &b.s.admin_post(
            "/v1/routes",
            json!({"route_id": "R-1", "courier_id": "C-1", "delivery_date": "2026-11-24",
        "stops": [{"stop_id": "S", "address": "a", "parcel_ids": ["P-1001"]}]}),
        )
        .await,
        409,
    );
    assert_4xx(
        "reissue delivered",
        &b.s.admin_post("/v1/parcels/P-1001/reissue", json!({}))
            .await,
        409,
    );
    assert_4xx(
        "verify unknown",
        &b.s.post_as(
            &b.a.token,
            "/v1/verify",
            json!({"parcel_id": "NOPE", "code": "123456"}),
        )
        .await,
        404,
    );
    assert_4xx(
        "bad date path",
        &b.s.admin_post("/v1/days/2026-13-45/close", json!({})).await,
        400,
    );
    assert_4xx(
        "bad query",
        &raw(&b.s, "GET", "/v1/manifest?date=tomorrow", dev, None, vec![]).await,
        400,
    );
    assert_4xx(
        "bad query",
        &raw(&b.s, "GET", "/v1/manifest?all=1", dev, None, vec![]).await,
        400,
    );
}

/// No token, the other audience's token, a garbage token.
async fn wrong_or_missing_tokens(b: &Bad) {
    let (admin, dev, _) = b.tokens();
    assert_4xx(
        "no token",
        &raw(&b.s, "GET", "/v1/disputes", None, None, vec![]).await,
        401,
    );
    assert_4xx(
        "device token for dispatch",
        &raw(&b.s, "GET", "/v1/disputes", dev, None, vec![]).await,
        401,
    );
    assert_4xx(
        "dispatch token for device",
        &raw(&b.s, "GET", "/v1/manifest", admin, None, vec![]).await,
        401,
    );
    assert_4xx(
        "garbage token",
        &raw(&b.s, "GET", "/v1/manifest", Some("x"), None, vec![]).await,
        401,
    );
}

/// An unknown path and a wrong method.
async fn unknown_paths_and_methods(b: &Bad) {
    let (admin, _, _) = b.tokens();
    assert_4xx(
        "unknown path",
        &raw(&b.s, "GET", "/v2/nothing", None, None, vec![]).await,
        404,
    );
    assert_4xx(
        "wrong method",
        &raw(&b.s, "DELETE", "/v1/parcels", admin, None, vec![]).await,
        405,
    );
}

/// Inside a batch: bad base64, a forged signature, a replay, an unknown
/// parcel, wrong types. Each is rejected on its own (or a duplicate) and
/// stores nothing.
async fn bad_items_in_a_batch(b: &mut Bad) {
    let good = b.good.clone();
    let manifest = b.manifest.clone();
    let door = Door::of(&manifest, "2026-11-23");
    let (a, s) = (&mut b.a, &b.s);
    let mut bad_b64 = {
        let c = a.conf(&door, "P-1001", 1, "2026-11-23T09:30:00Z");
        a.sign(&c)
    };
    bad_b64.body = "***".into();
    let mut forged = {
        let c = a.conf(&door, "P-1001", 1, "2026-11-23T09:31:00Z");
        a.sign(&c)
    };
    let other = doorcode_core::envelope::SigningKey::generate(a.device_id.clone()).unwrap();
    forged.sig = other
        .seal(doorcode_core::envelope::Context::Confirmation, b"{}")
        .sig;
    let unknown = {
        let c = a.conf(&door, "P-404", 1, "2026-11-23T09:32:00Z");
        a.sign(&c)
    };
    let res = s
        .post_as(
            &b.a.token,
            "/v1/confirmations",
            json!({"confirmations": [bad_b64, forged, good, unknown, 42, {"v": "one"}]}),
        )
        .await;
    assert_eq!(res.0, 200);
    let items = res.1["results"].as_array().unwrap();
    let got: Vec<(&str, Option<&str>)> = items
        .iter()
        .map(|r| (r["status"].as_str().unwrap(), r["reason"].as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("rejected", Some("bad_encoding")),
            ("rejected", Some("bad_signature")),
            ("duplicate", None),
            ("rejected", Some("unknown_parcel")),
            ("rejected", Some("malformed_envelope")),
            ("rejected", Some("malformed_envelope"))
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_4xx_and_changes_nothing() {
    let mut b = Bad::set_up().await;
    let before = snapshot(b.dir.path());
    oversized_bodies(&b).await;
    malformed_json_and_wrong_types(&b).await;
    unknown_fields(&b).await;
    bad_base64_and_enrollment(&b).await;
    unknown_parcels_routes_and_bad_paths(&b).await;
    wrong_or_missing_tokens(&b).await;
    unknown_paths_and_methods(&b).await;
    bad_items_in_a_batch(&mut b).await;
    assert!(before.contains("confirmations: ") && before.contains("enrollments: "));
    assert_eq!(before, snapshot(b.dir.path()), "stored state unchanged");
    b.s.handle.shutdown().await;
}
