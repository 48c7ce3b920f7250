//! Attacks on the depot over real HTTP, each one case: forged, altered,
//! replayed and foreign confirmations; a courier claiming a code that did
//! not match; another device's token and every protected route without the
//! right one; brute force of codes online; guessing tracking links; and a
//! whole day on a real `doorcode serve` process at trace level whose logs
//! must hold no code and no token. The server's edges (memory, slow
//! clients, proxies, file modes, input rules, webhooks, weak keys, leases,
//! enrollment guessing) are in `attacks/edges.rs`. See docs/SECURITY.md.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod edges;

use crate::support::*;
use doorcode_core::b64;
use doorcode_core::codes::{self, Code};
use doorcode_core::confirmation::{Confirmation, FailReason};
use doorcode_core::envelope::{Context, Envelope, SigningKey};
use doorcode_core::manifest::{Manifest, open_manifest};
use serde_json::{Value, json};
use std::path::Path;

const DAY: &str = "2026-11-23";
const NOW: &str = "2026-11-23T08:00:00Z";

/// One depot day: courier C-42 on route R-7 with two handsets (`a`, `a2`),
/// courier C-43 on route R-8 with one (`b`). P-A1..P-A3 need a code, P-A4
/// does not; P-B1 is on C-43's route.
struct Day {
    s: Server,
    a: Handset,
    a2: Handset,
    b: Handset,
    ma: Manifest,
    mb: Manifest,
}

async fn day() -> (tempfile::TempDir, Day) {
    let (dir, s) = serve(NOW).await;
    let parcel = |id: &str, value: f64| {
        json!({"parcel_id": id, "recipient": {"name": format!("Customer {id}"),
        "email": format!("{}@example.com", id.to_lowercase())}, "address": format!("{id} Example Street"),
        "value": value, "currency": "EUR"})
    };
    s.admin_ok(
        "/v1/parcels",
        json!({"parcels": [parcel("P-A1", 120.0), parcel("P-A2", 90.0),
            parcel("P-A3", 75.0), parcel("P-A4", 10.0), parcel("P-B1", 60.0)]}),
    )
    .await;
    s.admin_ok("/v1/routes", json!({"route_id": "R-7", "courier_id": "C-42", "delivery_date": DAY,
        "stops": [{"stop_id": "S-1", "address": "1 Example Street", "parcel_ids": ["P-A1", "P-A2"]},
                  {"stop_id": "S-2", "address": "2 Example Street", "parcel_ids": ["P-A3", "P-A4"]}]})).await;
    s.admin_ok(
        "/v1/routes",
        json!({"route_id": "R-8", "courier_id": "C-43", "delivery_date": DAY,
        "stops": [{"stop_id": "S-9", "address": "9 Other Street", "parcel_ids": ["P-B1"]}]}),
    )
    .await;
    let a = s.enroll("C-42").await;
    let a2 = s.enroll("C-42").await;
    let b = s.enroll("C-43").await;
    let ma = s.manifest(&a, DAY).await;
    let mb = s.manifest(&b, DAY).await;
    // A handset enrolled after the route gets its manifest on first fetch.
    assert_eq!(s.manifest(&a2, DAY).await.route_id, "R-7");
    assert_eq!((ma.route_id.as_str(), mb.route_id.as_str()), ("R-7", "R-8"));
    (
        dir,
        Day {
            s,
            a,
            a2,
            b,
            ma,
            mb,
        },
    )
}

fn door(m: &Manifest) -> Door<'_> {
    Door::of(m, DAY)
}

fn code(pid: &str, attempt: u32) -> String {
    crate::support::code(pid, DAY, attempt)
}

fn outcome(r: &Value) -> (&str, Option<&str>) {
    (r["status"].as_str().unwrap(), r["reason"].as_str())
}

async fn status(s: &Server, pid: &str) -> String {
    s.admin_get(&format!("/v1/parcels/{pid}")).await.1["status"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Rows in the server's SQLite database.
fn rows(dir: &Path, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open(dir.join("doorcode.db")).unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

/// A change an attacker makes to a signed body.
type Edit = Box<dyn FnOnce(&mut Value)>;

/// Re-encodes a signed envelope's body after `edit`, keeping the old signature.
fn tamper(env: &Envelope, edit: impl FnOnce(&mut Value)) -> Envelope {
    let mut body: Value = serde_json::from_slice(&b64::decode(&env.body).unwrap()).unwrap();
    edit(&mut body);
    let mut e = env.clone();
    e.body = b64::encode(&serde_json::to_vec(&body).unwrap());
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmation_with_a_forged_signature_is_rejected_and_records_nothing() {
    let (dir, mut t) = day().await;
    let c =
        t.a.delivered_right(&door(&t.ma), "P-A1", 1, "2026-11-23T09:00:00Z");
    let body = serde_json::to_vec(&c).unwrap();
    // Signed by a key the attacker made, under device A's key id.
    let forger = SigningKey::generate(t.a.device_id.clone()).unwrap();
    let forged = forger.seal(Context::Confirmation, &body);
    // A's real signature, but made in the manifest context (cross-protocol replay).
    let wrong_ctx = t.a.key.seal(Context::Manifest, &body);
    // No signature at all.
    let mut empty = t.a.sign(&c);
    empty.sig = String::new();
    let res =
        t.s.upload(&t.a, vec![json!(forged), json!(wrong_ctx), json!(empty)])
            .await;
    for r in &res {
        assert_eq!(r["status"], "rejected", "{r}");
        assert_eq!(r["permanent"], true);
    }
    assert_eq!(outcome(&res[0]), ("rejected", Some("bad_signature")));
    assert_eq!(outcome(&res[1]), ("rejected", Some("bad_signature")));
    assert_eq!(status(&t.s, "P-A1").await, "scheduled");
    assert_eq!(rows(dir.path(), "SELECT count(*) FROM confirmations"), 0);
    t.s.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmation_signed_by_another_devices_key_is_rejected() {
    let (dir, mut t) = day().await;
    // B signs a body that claims to be A's, under A's key id.
    let c =
        t.a.delivered_right(&door(&t.ma), "P-A1", 1, "2026-11-23T09:00:00Z");
    let mut as_a =
        t.b.key
            .seal(Context::Confirmation, &serde_json::to_vec(&c).unwrap());
    as_a.kid = t.a.device_id.clone();
    // B's genuine envelope for its own parcel, uploaded with A's token.
    let cb =
        t.b.delivered_right(&door(&t.mb), "P-B1", 1, "2026-11-23T09:01:00Z");
    let b_env = t.b.sign(&cb);
    // A's genuine envelope uploaded with B's token.
    let a_env = t.a.sign(&c);
    let res = t.s.upload(&t.a, vec![json!(as_a), json!(b_env)]).await;
    assert_eq!(outcome(&res[0]), ("rejected", Some("bad_signature")));
    assert_eq!(outcome(&res[1]), ("rejected", Some("wrong_device")));
    let res = t.s.upload(&t.b, vec![json!(a_env)]).await;
    assert_eq!(outcome(&res[0]), ("rejected", Some("wrong_device")));
    // Even a second handset of the same courier cannot pass off A's envelope.
    let res = t.s.upload(&t.a2, vec![json!(t.a.sign(&c))]).await;
    assert_eq!(outcome(&res[0]), ("rejected", Some("wrong_device")));
    assert_eq!(status(&t.s, "P-A1").await, "scheduled");
    assert_eq!(status(&t.s, "P-B1").await, "scheduled");
    assert_eq!(rows(dir.path(), "SELECT count(*) FROM confirmations"), 0);
    t.s.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmation_altered_after_signing_is_rejected() {
    let (dir, mut t) = day().await;
    let failed = t.a.failed(
        &door(&t.ma),
        "P-A2",
        1,
        FailReason::CustomerAbsent,
        "2026-11-23T09:00:00Z",
    );
    let env = t.a.sign(&failed);
    let edits: Vec<Edit> = vec![
        // "failed" turned into "delivered" with a code.
        Box::new(|b: &mut Value| {
            b["outcome"] = json!("delivered");
            b["reason"] = Value::Null;
            b["code"] = json!(code("P-A2", 1));
        }),
        // Pointed at another parcel.
        Box::new(|b: &mut Value| b["parcel_id"] = json!("P-A3")),
        // Fewer wrong tries reported.
        Box::new(|b: &mut Value| b["failed_attempts"] = json!(0)),
        // Recorded earlier than it was.
        Box::new(|b: &mut Value| b["recorded_at"] = json!("2026-11-23T07:00:00Z")),
    ];
    let mut envs = Vec::new();
    for edit in edits {
        envs.push(json!(tamper(&env, edit)));
    }
    // The same JSON with whitespace added: the bytes changed, so it is not the signed message.
    let mut spaced = env.clone();
    let text = String::from_utf8(b64::decode(&env.body).unwrap()).unwrap();
    spaced.body = b64::encode(format!(" {text}").as_bytes());
    envs.push(json!(spaced));
    let res = t.s.upload(&t.a, envs).await;
    assert_eq!(res.len(), 5);
    for r in &res {
        assert_eq!(outcome(r), ("rejected", Some("bad_signature")), "{r}");
    }
    assert_eq!(status(&t.s, "P-A2").await, "scheduled");
    assert_eq!(status(&t.s, "P-A3").await, "scheduled");
    assert_eq!(rows(dir.path(), "SELECT count(*) FROM confirmations"), 0);
    // The untouched envelope is accepted: the refusals were about the changes.
    assert_eq!(
        t.s.upload(&t.a, vec![json!(env)]).await[0]["status"],
        "accepted"
    );
    t.s.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_confirmation_is_a_duplicate_and_counts_once() {
    let (dir, mut t) = day().await;
    let c =
        t.a.delivered_right(&door(&t.ma), "P-A1", 1, "2026-11-23T09:00:00Z");
    let env = json!(t.a.sign(&c));
    // Three copies in one batch, then again later.
    let res =
        t.s.upload(&t.a, vec![env.clone(), env.clone(), env.clone()])
            .await;
    let st: Vec<&str> = res.iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(st, vec!["accepted", "duplicate", "duplicate"]);
    let events = t.s.admin_get("/v1/parcels/P-A1").await.1["events"]
        .as_array()
        .unwrap()
        .len();
    for _ in 0..3 {
        assert_eq!(
            t.s.upload(&t.a, vec![env.clone()]).await[0]["status"],
            "duplicate"
        );
    }
    assert_eq!(
        t.s.admin_get("/v1/parcels/P-A1").await.1["events"]
            .as_array()
            .unwrap()
            .len(),
        events,
        "a replay adds no history"
    );
    assert_eq!(rows(dir.path(), "SELECT count(*) FROM confirmations"), 1);
    // Replayed from the courier's other handset: not a second delivery either.
    assert_eq!(
        outcome(&t.s.upload(&t.a2, vec![env]).await[0]),
        ("rejected", Some("wrong_device"))
    );
    // A failure recorded under the same confirmation id cannot overwrite the delivery.
    let mut f = t.a.failed(
        &door(&t.ma),
        "P-A1",
        1,
        FailReason::Refused,
        "2026-11-23T09:30:00Z",
    );
    f.confirmation_id = c.confirmation_id;
    assert_eq!(
        t.s.upload(&t.a, vec![json!(t.a.sign(&f))]).await[0]["status"],
        "duplicate"
    );
    assert_eq!(status(&t.s, "P-A1").await, "delivered");
    assert_eq!(rows(dir.path(), "SELECT count(*) FROM confirmations"), 1);
    t.s.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmation_for_a_parcel_not_on_this_devices_manifest_is_rejected() {
    let (dir, mut t) = day().await;
    let da = door(&t.ma);
    // Another courier's parcel, with its real code.
    let other_route = t.a.delivered_right(&da, "P-B1", 1, "2026-11-23T09:00:00Z");
    // A parcel that does not exist.
    let unknown =
        t.a.delivered(&da, "P-Z9", 1, "123456", "2026-11-23T09:01:00Z");
    // Its own parcel under an attempt the manifest does not carry (a code the
    // courier might know from elsewhere), and under a made-up manifest id,
    // revision or day.
    let other_attempt = t.a.delivered_right(&da, "P-A1", 2, "2026-11-23T09:02:00Z");
    let mut other_manifest = t.a.delivered_right(&da, "P-A1", 1, "2026-11-23T09:03:00Z");
    other_manifest.manifest_id = t.mb.manifest_id.clone();
    let mut other_revision = t.a.delivered_right(&da, "P-A1", 1, "2026-11-23T09:04:00Z");
    other_revision.revision = 7;
    let mut other_day =
        t.a.delivered(&da, "P-A1", 1, "000000", "2026-11-23T09:05:00Z");
    other_day.delivery_date = d("2026-11-24");
    other_day.code = Some(Code::new(crate::support::code("P-A1", "2026-11-24", 1)).unwrap());
    let envs: Vec<Value> = [
        &other_route,
        &unknown,
        &other_attempt,
        &other_manifest,
        &other_revision,
        &other_day,
    ]
    .iter()
    .map(|c: &&Confirmation| json!(t.a.sign(c)))
    .collect();
    let res = t.s.upload(&t.a, envs).await;
    let got: Vec<_> = res.iter().map(outcome).collect();
    assert_eq!(
        got,
        vec![
            ("rejected", Some("not_on_manifest")),
            ("rejected", Some("unknown_parcel")),
            ("rejected", Some("not_on_manifest")),
            ("rejected", Some("not_on_manifest")),
            ("rejected", Some("not_on_manifest")),
            ("rejected", Some("not_on_manifest")),
        ]
    );
    assert!(res.iter().all(|r| r["permanent"] == true));
    assert_eq!(status(&t.s, "P-A1").await, "scheduled");
    assert_eq!(status(&t.s, "P-B1").await, "scheduled");
    assert_eq!(rows(dir.path(), "SELECT count(*) FROM confirmations"), 0);
    t.s.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn courier_claiming_a_code_that_did_not_match_gets_the_parcel_disputed() {
    let (_dir, mut t) = day().await;
    let da = door(&t.ma);
    // "The customer read it out and my handset said yes": a wrong code.
    let lie = t.a.delivered(
        &da,
        "P-A1",
        1,
        &wrong(&code("P-A1", 1)),
        "2026-11-23T09:00:00Z",
    );
    // "Delivered" without any code for a parcel that needs one.
    let no_code = t.a.conf(&da, "P-A2", 1, "2026-11-23T09:01:00Z");
    let res =
        t.s.upload(&t.a, vec![json!(t.a.sign(&lie)), json!(t.a.sign(&no_code))])
            .await;
    for r in &res {
        assert_eq!(
            (r["status"].as_str(), r["disputed"].as_bool()),
            (Some("accepted"), Some(true)),
            "{r}"
        );
    }
    assert_eq!(status(&t.s, "P-A1").await, "disputed");
    assert_eq!(status(&t.s, "P-A2").await, "disputed");
    // The right code sent afterwards does not turn a dispute into a delivery.
    let honest = t.a.delivered_right(&da, "P-A1", 1, "2026-11-23T09:10:00Z");
    assert_eq!(
        t.s.upload(&t.a, vec![json!(t.a.sign(&honest))]).await[0]["status"],
        "accepted"
    );
    assert_eq!(status(&t.s, "P-A1").await, "disputed");
    let (_, dv) = t.s.admin_get("/v1/disputes").await;
    let mut kinds: Vec<(String, String)> = dv["disputes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["kind"].as_str().unwrap().into(),
                s["parcel_id"].as_str().unwrap().into(),
            )
        })
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        vec![
            ("code_mismatch".to_string(), "P-A1".to_string()),
            ("delivered_without_code".to_string(), "P-A2".to_string())
        ]
    );
    t.s.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn courier_brute_forcing_the_offline_tag_is_caught_by_the_full_check() {
    let (_dir, mut t) = day().await;
    // Everything a rooted handset holds for P-A3: salt, tag, day.
    let (_, p) = t.ma.parcels().find(|(_, p)| p.parcel_id == "P-A3").unwrap();
    let salt = p.salt_bytes().unwrap();
    let real = code("P-A3", 1);
    let candidates: Vec<String> = (0..1_000_000u32)
        .map(|n| format!("{n:06}"))
        .filter(|c| {
            let g = Code::new(c.clone()).unwrap();
            codes::offline_tag(&salt, "P-A3", d(DAY), &g, t.ma.tag_bits).unwrap() == p.tag.unwrap()
        })
        .collect();
    assert!(candidates.contains(&real));
    assert!(
        (150..=340).contains(&candidates.len()),
        "{}",
        candidates.len()
    );
    // The courier cannot tell which candidate is real; any wrong one they
    // pick passes the handset but not the server.
    let guess = candidates.iter().find(|c| **c != real).unwrap();
    let c =
        t.a.delivered(&door(&t.ma), "P-A3", 1, guess, "2026-11-23T09:00:00Z");
    let r = &t.s.upload(&t.a, vec![json!(t.a.sign(&c))]).await[0];
    assert_eq!(
        (r["status"].as_str(), r["disputed"].as_bool()),
        (Some("accepted"), Some(true))
    );
    assert_eq!(status(&t.s, "P-A3").await, "disputed");
    t.s.handle.shutdown().await;
}

/// A manifest pull reads the token and the current build in one storage
/// call; who asks is still decided first, and a revocation counts at once,
/// even for a handset that only asks whether its copy is current.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_pull_is_authorized_before_its_query_and_its_etag() {
    let (_dir, t) = day().await;
    let pull = |token: Option<&str>, query: &str, etag: Option<String>| {
        let mut r = t.s.http.get(format!("{}/v1/manifest{query}", t.s.url));
        if let Some(token) = token {
            r = r.bearer_auth(token);
        }
        if let Some(etag) = etag {
            r = r.header("If-None-Match", etag);
        }
        async move { r.send().await.unwrap().status().as_u16() }
    };
    let etag = Some(format!("\"{}:{}\"", t.ma.manifest_id, t.ma.revision));
    let day_q = format!("?date={DAY}");
    assert_eq!(pull(None, "?date=bogus&x=1", None).await, 401);
    assert_eq!(pull(Some("not-a-token"), "?date=bogus", None).await, 401);
    assert_eq!(pull(Some("not-a-token"), &day_q, etag.clone()).await, 401);
    assert_eq!(pull(Some(&t.a.token), "?date=bogus", None).await, 400);
    assert_eq!(pull(Some(&t.a.token), "?when=today", None).await, 400);
    assert_eq!(pull(Some(&t.a.token), &day_q, etag.clone()).await, 304);
    let revoke = format!("/v1/devices/{}/revoke", t.a.device_id);
    assert_eq!(t.s.admin_post(&revoke, json!({})).await.0, 200);
    assert_eq!(pull(Some(&t.a.token), &day_q, etag.clone()).await, 401);
    assert_eq!(pull(Some(&t.a.token), "?date=bogus", None).await, 401);
    // The other handset of the same courier is untouched.
    assert_eq!(pull(Some(&t.a2.token), &day_q, None).await, 200);
    t.s.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_devices_token_reaches_only_its_own_route() {
    let (_dir, t) = day().await;
    // B's token gets B's manifest, never A's, whatever it asks for.
    let r =
        t.s.http
            .get(format!("{}/v1/manifest?date={DAY}", t.s.url))
            .bearer_auth(&t.b.token)
            .header(
                "If-None-Match",
                format!("\"{}:{}\"", t.ma.manifest_id, t.ma.revision),
            )
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 200, "A's ETag is not B's");
    let mb = open_manifest(&r.json().await.unwrap(), &t.s.server_keys().await).unwrap();
    assert_eq!(
        (mb.device_id.as_str(), mb.route_id.as_str()),
        (t.b.device_id.as_str(), "R-8")
    );
    assert!(mb.parcels().all(|(_, p)| p.parcel_id == "P-B1"));
    // B cannot try codes on A's parcels online, with or without the right code.
    for code in [code("P-A1", 1), wrong(&code("P-A1", 1))] {
        let (st, v) =
            t.s.post_as(
                &t.b.token,
                "/v1/verify",
                json!({"parcel_id": "P-A1", "code": code}),
            )
            .await;
        assert_eq!((st, v["error"].as_str()), (404, Some("not_on_manifest")));
    }
    assert_eq!(t.s.admin_get("/v1/parcels/P-A1").await.1["wrong_tries"], 0);
    // A device token is not a dispatch token.
    for path in ["/v1/disputes", "/v1/parcels/P-A1"] {
        let r =
            t.s.http
                .get(format!("{}{path}", t.s.url))
                .bearer_auth(&t.a.token)
                .send()
                .await
                .unwrap();
        assert_eq!(r.status(), 401, "{path}");
    }
    let (st, _) =
        t.s.post_as(&t.a.token, "/v1/parcels/P-A1/reissue", json!({}))
            .await;
    assert_eq!(st, 401);
    let (st, _) =
        t.s.post_as(&t.a.token, "/v1/enrollments", json!({"courier_id": "C-42"}))
            .await;
    assert_eq!(st, 401, "a device cannot enroll more devices");
    t.s.handle.shutdown().await;
}

/// Unauthenticated by design: enrollment (it takes a one-time code), the
/// customer's tracking link (a 256-bit token), public keys and ops.
const OPEN_OPERATIONS: &[&str] = &[
    "GET /.well-known/doorcode-keys",
    "GET /healthz",
    "GET /openapi.json",
    "GET /track/{token}",
    "GET /v1/track/{token}",
    "POST /v1/devices",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_protected_route_in_the_openapi_document_refuses_missing_garbled_and_wrong_tokens() {
    let (_dir, t) = day().await;
    let (st, doc) = t.s.get("/openapi.json").await;
    assert_eq!(st, 200);
    let mut open = Vec::new();
    let mut checked = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if !["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                continue;
            }
            let name = format!("{} {path}", method.to_uppercase());
            let secured = op["security"].as_array().is_some_and(|s| !s.is_empty());
            if !secured {
                open.push(name);
                continue;
            }
            let tag = op["tags"][0].as_str().unwrap_or_default();
            let (right, wrong_kind) = match tag {
                "dispatch" | "ops" => (t.s.admin.as_str(), t.a.token.as_str()),
                "device" => (t.a.token.as_str(), t.s.admin.as_str()),
                other => panic!("{name}: secured under an unknown tag {other:?}"),
            };
            let url = format!(
                "{}{}",
                t.s.url,
                path.replace("{id}", "P-A1")
                    .replace("{date}", DAY)
                    .replace("{token}", "x")
            );
            use reqwest::header::HeaderValue;
            let random = b64::encode(&[7u8; 32]);
            let bad: [(&str, Option<HeaderValue>); 7] = [
                ("no header", None),
                ("an empty bearer", Some(HeaderValue::from_static("Bearer "))),
                (
                    "another scheme",
                    Some(HeaderValue::from_str(&format!("Basic {right}")).unwrap()),
                ),
                (
                    "a token that is not UTF-8",
                    Some(HeaderValue::from_bytes(b"Bearer \xff\xfe\x80").unwrap()),
                ),
                (
                    "an oversized token",
                    Some(HeaderValue::from_str(&format!("Bearer {}", "A".repeat(4000))).unwrap()),
                ),
                (
                    "a random token",
                    Some(HeaderValue::from_str(&format!("Bearer {random}")).unwrap()),
                ),
                (
                    "the other kind of token",
                    Some(HeaderValue::from_str(&format!("Bearer {wrong_kind}")).unwrap()),
                ),
            ];
            for (what, header) in bad {
                let mut req =
                    t.s.http
                        .request(method.to_uppercase().parse().unwrap(), &url)
                        .header("content-type", "application/json")
                        .body("{}");
                if let Some(h) = header {
                    req = req.header("authorization", h);
                }
                let r = req.send().await.unwrap();
                let st = r.status().as_u16();
                let v: Value = r.json().await.unwrap_or(Value::Null);
                assert_eq!(st, 401, "{name} with {what}: {v}");
                assert_eq!(v["error"], "unauthorized", "{name} with {what}");
            }
            // With the right token the route answers something else: the checks above were about auth.
            let r =
                t.s.http
                    .request(method.to_uppercase().parse().unwrap(), &url)
                    .bearer_auth(right)
                    .header("content-type", "application/json")
                    .body("{}")
                    .send()
                    .await
                    .unwrap();
            assert_ne!(r.status().as_u16(), 401, "{name} refuses its own token");
            assert!(r.status().as_u16() < 500, "{name}: {}", r.status());
            checked.push(name);
        }
    }
    open.sort();
    assert_eq!(
        open, OPEN_OPERATIONS,
        "a route without authentication must be listed here on purpose"
    );
    assert!(checked.len() >= 10, "{checked:?}");
    for must in [
        "GET /v1/manifest",
        "POST /v1/confirmations",
        "POST /v1/verify",
        "GET /v1/disputes",
    ] {
        assert!(checked.iter().any(|c| c == must), "{must} not checked");
    }
    // The board takes a session cookie, never a bearer token.
    for path in ["/board/reissue", "/board/enroll", "/board/close-day"] {
        let r =
            t.s.http
                .post(format!("{}{path}", t.s.url))
                .bearer_auth(&t.s.admin)
                .header("content-type", "application/x-www-form-urlencoded")
                .body("parcel_id=P-A1&courier_id=C-42&date=2026-11-23")
                .send()
                .await
                .unwrap();
        assert_eq!(r.status(), 403, "{path}");
    }
    let r =
        t.s.http
            .get(format!("{}/board/live", t.s.url))
            .bearer_auth(&t.s.admin)
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 401);
    t.s.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_brute_force_locks_the_parcel_for_every_device_until_dispatch_reissues() {
    let (_dir, t) = day().await;
    let verify = |h: &Handset, c: String| {
        let (s, token) = (&t.s, h.token.clone());
        async move {
            s.post_as(
                &token,
                "/v1/verify",
                json!({"parcel_id": "P-A2", "code": c}),
            )
            .await
        }
    };
    let right = code("P-A2", 1);
    // Wrong guesses spread over the courier's two handsets share one count.
    let guesses: Vec<String> = (0..5u32)
        .map(|i| format!("{:06}", (i * 7919 + 13) % 1_000_000))
        .filter(|g| *g != right)
        .collect();
    assert_eq!(guesses.len(), 5);
    let mut left = Vec::new();
    for (i, g) in guesses.iter().enumerate() {
        let h = if i % 2 == 0 { &t.a } else { &t.a2 };
        let (st, v) = verify(h, g.clone()).await;
        assert_eq!(st, 200, "{v}");
        left.push((
            v["result"].as_str().unwrap().to_string(),
            v["attempts_left"].as_u64(),
        ));
    }
    assert_eq!(
        left,
        vec![
            ("rejected".into(), Some(4)),
            ("rejected".into(), Some(3)),
            ("rejected".into(), Some(2)),
            ("rejected".into(), Some(1)),
            ("locked".into(), Some(0)),
        ]
    );
    // Locked: the right code is refused from either handset, and more tries change nothing.
    for h in [&t.a, &t.a2] {
        assert_eq!(verify(h, right.clone()).await.1["result"], "locked");
        assert_eq!(verify(h, wrong(&right)).await.1["result"], "locked");
    }
    let pv = t.s.admin_get("/v1/parcels/P-A2").await.1;
    assert_eq!(
        (pv["locked"].as_bool(), pv["wrong_tries"].as_u64()),
        (Some(true), Some(5))
    );
    // Other parcels are untouched.
    assert_eq!(verify_other(&t, "P-A1").await, "accepted");
    let (_, dv) = t.s.admin_get("/v1/disputes").await;
    assert!(
        dv["signals"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["kind"] == "verify_lockout" && s["parcel_id"] == "P-A2"),
        "{dv}"
    );
    // Dispatch reissues: a new attempt and a new code; the old code is dead.
    t.s.wait_outbox_empty().await;
    let before = t.s.notice_files().len();
    let (st, pv) = t.s.admin_post("/v1/parcels/P-A2/reissue", json!({})).await;
    assert_eq!(
        (st, pv["attempt"].as_u64(), pv["locked"].as_bool()),
        (200, Some(2), Some(false))
    );
    let notices = t.s.wait_notices(before + 1).await;
    let new = code("P-A2", 2);
    assert_eq!(notices.last().unwrap()["code"], new.as_str());
    assert_ne!(new, right);
    let (_, v) = verify(&t.a, right.clone()).await;
    assert_eq!(
        (v["result"].as_str(), v["attempts_left"].as_u64()),
        (Some("rejected"), Some(4))
    );
    assert_eq!(verify(&t.a, new).await.1["result"], "accepted");
    t.s.handle.shutdown().await;
}

/// The phone scammer's best case: the customer read the code to a caller,
/// dispatch reissued, but a handset that has not synced since still holds the
/// old attempt and checks the old code offline. That attempt is no longer on
/// the courier's current route: the upload is refused for good
/// (`not_on_current_route`), the parcel stays out for delivery with its new
/// code, and dispatch is told at once, with "the code matched" (a real
/// handover of a parcel whose code was replaced, not noise).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_code_used_after_a_reissue_is_signalled_to_dispatch() {
    let (_dir, mut t) = day().await;
    let da = door(&t.ma);
    let (st, pv) = t.s.admin_post("/v1/parcels/P-A3/reissue", json!({})).await;
    assert_eq!((st, pv["attempt"].as_u64()), (200, Some(2)), "{pv}");
    // The handset still holds revision 1 with attempt 1 of P-A3.
    let stale = t.a.delivered_right(&da, "P-A3", 1, "2026-11-23T10:00:00Z");
    let res = t.s.upload(&t.a, vec![json!(t.a.sign(&stale))]).await;
    assert_eq!(
        outcome(&res[0]),
        ("rejected", Some("not_on_current_route")),
        "{}",
        res[0]
    );
    assert_eq!(res[0]["permanent"], true);
    let pv = t.s.admin_get("/v1/parcels/P-A3").await.1;
    assert_eq!(
        (pv["status"].as_str(), pv["attempt"].as_u64()),
        (Some("scheduled"), Some(2)),
        "the parcel's state does not change"
    );
    let (_, dv) = t.s.admin_get("/v1/disputes").await;
    let signal = dv["signals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == "stale_manifest" && s["parcel_id"] == "P-A3")
        .unwrap_or_else(|| panic!("no stale_manifest signal: {dv}"))
        .clone();
    assert_eq!(signal["code_matched"], true, "{signal}");
    assert_eq!(signal["device_id"], t.a.device_id.as_str());
    assert!(
        signal["detail"].as_str().unwrap().contains("attempt 1"),
        "{signal}"
    );
    // Uploading it again adds no second signal.
    let res = t.s.upload(&t.a, vec![json!(t.a.sign(&stale))]).await;
    assert_eq!(outcome(&res[0]).1, Some("not_on_current_route"));
    // A delivery with the current attempt's code raises nothing of the kind.
    let mb = t.s.manifest(&t.a2, DAY).await;
    let fresh =
        t.a2.delivered_right(&door(&mb), "P-A1", 1, "2026-11-23T10:05:00Z");
    assert_eq!(
        outcome(&t.s.upload(&t.a2, vec![json!(t.a2.sign(&fresh))]).await[0]).0,
        "accepted"
    );
    let (_, dv) = t.s.admin_get("/v1/disputes").await;
    let n = dv["signals"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["kind"] == "stale_manifest")
        .count();
    assert_eq!(n, 1, "{dv}");
    t.s.handle.shutdown().await;
}

async fn verify_other(t: &Day, pid: &str) -> String {
    let (_, v) =
        t.s.post_as(
            &t.a.token,
            "/v1/verify",
            json!({"parcel_id": pid, "code": code(pid, 1)}),
        )
        .await;
    v["result"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn track_token_guessing_is_rate_limited_per_client() {
    let (_dir, t) = day().await;
    let started = std::time::Instant::now();
    let (mut answered, mut limited) = (0u32, 0u32);
    for i in 0..120u32 {
        // Random 256-bit guesses, alternating the JSON and the HTML route
        // (they share one bucket).
        let guess = b64::encode(&uuid::Uuid::new_v4().as_bytes().repeat(2));
        let path = if i % 2 == 0 {
            format!("/v1/track/{guess}")
        } else {
            format!("/track/{guess}")
        };
        let r =
            t.s.http
                .get(format!("{}{path}", t.s.url))
                .send()
                .await
                .unwrap();
        match r.status().as_u16() {
            404 => answered += 1,
            429 => {
                limited += 1;
                assert_eq!(r.headers()["retry-after"], "60");
            }
            other => panic!("guess {i}: {other}"),
        }
    }
    // A burst of 30, then one every 2 s: however slow this machine was, no
    // more guesses got an answer than the bucket allows for the time taken.
    let allowed = 30.0 + 0.5 * started.elapsed().as_secs_f64() + 1.0;
    assert!(
        f64::from(answered) <= allowed,
        "{answered} answered, {allowed:.0} allowed"
    );
    assert!(limited >= 120 - allowed as u32, "{limited} limited");
    assert!(answered >= 30, "the first 30 are answered");
    t.s.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_scammer_is_named_in_the_notice_and_on_the_tracking_page() {
    let (_dir, t) = day().await;
    let notices = t.s.wait_notices(4).await;
    let n = notices.iter().find(|n| n["parcel_id"] == "P-A1").unwrap();
    let body = n["body"].as_str().unwrap();
    // The scammer's script: "I'm from the depot, read me the code". Each notice says no.
    for needle in [
        "P-A1",
        DAY,
        "only",
        "in person",
        "door",
        "never",
        "phone",
        "text",
        "link",
        "did not order",
    ] {
        assert!(
            body.to_lowercase().contains(&needle.to_lowercase()),
            "{needle:?} missing from the notice: {body}"
        );
    }
    let token = n["track_url"].as_str().unwrap().rsplit('/').next().unwrap();
    let (st, tv) = t.s.get(&format!("/v1/track/{token}")).await;
    assert_eq!(st, 200);
    assert_eq!(tv["code"], code("P-A1", 1).as_str());
    let safety = tv["safety"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect::<Vec<_>>()
        .join(" ");
    for needle in [
        "only",
        "in person",
        "door",
        "Never",
        "phone",
        "we will never ask you for it",
        "did not order",
    ] {
        assert!(
            safety.contains(needle),
            "{needle:?} missing from the tracking page: {safety}"
        );
    }
    let html = send_text(t.s.http.get(n["track_url"].as_str().unwrap())).await;
    assert!(html.contains("we will never ask you for it"));
    // The code leaves the depot only to the customer: not in the handset's
    // manifest, not in dispatch's parcel view, not in any answer to a device.
    let r =
        t.s.http
            .get(format!("{}/v1/manifest?date={DAY}", t.s.url))
            .bearer_auth(&t.a.token)
            .send()
            .await
            .unwrap();
    let env: Envelope = r.json().await.unwrap();
    let manifest_text = String::from_utf8(b64::decode(&env.body).unwrap()).unwrap();
    let (_, view) = t.s.admin_get("/v1/parcels/P-A1").await;
    let (_, verify) =
        t.s.post_as(
            &t.a.token,
            "/v1/verify",
            json!({"parcel_id": "P-A1", "code": wrong(&code("P-A1", 1))}),
        )
        .await;
    for (place, text) in [
        ("the manifest", manifest_text),
        ("the parcel view", view.to_string()),
        ("a verify answer", verify.to_string()),
    ] {
        assert!(!text.contains(&code("P-A1", 1)), "the code is in {place}");
    }
    t.s.handle.shutdown().await;
}

// ---------- who may change what (DESIGN, December 2026) ----------

/// The signals about DAY, page by page through `/v1/disputes`, and how many
/// pages it took.
async fn all_signals(s: &Server, limit: u32) -> (Vec<Value>, usize) {
    let (mut all, mut pages, mut cursor) = (Vec::new(), 0, None::<String>);
    loop {
        let mut path = format!("/v1/disputes?date={DAY}&limit={limit}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let (st, v) = s.admin_get(&path).await;
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["date"], DAY);
        pages += 1;
        for k in ["disputes", "signals"] {
            all.extend(v[k].as_array().unwrap().iter().cloned());
        }
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return (all, pages),
        }
    }
}

/// `seq = 2^63-1` used to wrap the gap check, and larger values gave a
/// retryable `server_error`: now both, and a revision above 2^53, are
/// refused for good and leave nothing behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_seq_and_revision_are_refused_for_good_and_leave_nothing() {
    let (_dir, mut t) = day().await;
    let da = door(&t.ma);
    let right = code("P-A1", 1);
    let mut big =
        t.a.delivered(&da, "P-A1", 1, &right, "2026-11-23T09:00:00Z");
    big.seq = u64::try_from(i64::MAX).unwrap();
    let mut max =
        t.a.delivered(&da, "P-A1", 1, &right, "2026-11-23T09:00:00Z");
    max.seq = u64::MAX;
    let mut rev =
        t.a.delivered(&da, "P-A1", 1, &right, "2026-11-23T09:00:00Z");
    rev.revision = (1 << 53) + 1;
    let envs = [&big, &max, &rev].map(|c| json!(t.a.sign(c))).to_vec();
    let res = t.s.upload(&t.a, envs).await;
    for r in &res {
        assert_eq!(outcome(r), ("rejected", Some("out_of_range")), "{r}");
        assert_eq!(r["permanent"], true, "never retried");
    }
    assert_eq!(status(&t.s, "P-A1").await, "scheduled");
    // The device's real first confirmation is no gap.
    t.a.seq = 0;
    let ok =
        t.a.delivered(&da, "P-A1", 1, &right, "2026-11-23T09:01:00Z");
    assert_eq!(
        outcome(&t.s.upload(&t.a, vec![json!(t.a.sign(&ok))]).await[0]).0,
        "accepted"
    );
    let (signals, _) = all_signals(&t.s, 100).await;
    assert!(signals.is_empty(), "{signals:?}");
    t.s.handle.shutdown().await;
}

/// A handset whose parcel moved to another courier used to be able to
/// dispute it forever (and the customer lost the code on the page). Now
/// its uploads are refused for good, the parcel stays out for delivery with
/// the other courier, and dispatch learns whether the code matched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_handset_cannot_dispute_a_parcel_that_moved_to_another_courier() {
    let (_dir, mut t) = day().await;
    t.s.wait_outbox_empty().await;
    // Dispatch moves P-A1 from C-42's route to C-43's, the same day.
    t.s.admin_ok("/v1/routes", json!({"route_id": "R-7", "courier_id": "C-42", "delivery_date": DAY,
        "stops": [{"stop_id": "S-1", "address": "1 Example Street", "parcel_ids": ["P-A2"]},
                  {"stop_id": "S-2", "address": "2 Example Street", "parcel_ids": ["P-A3", "P-A4"]}]})).await;
    let (st, v) =
        t.s.admin_post(
            "/v1/routes",
            json!({"route_id": "R-8", "courier_id": "C-43", "delivery_date": DAY,
        "stops": [{"stop_id": "S-9", "address": "9 Other Street", "parcel_ids": ["P-B1"]},
                  {"stop_id": "S-1", "address": "1 Example Street", "parcel_ids": ["P-A1"]}]}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    // C-42's handset never synced: a wrong code, and then the right old one.
    let da = door(&t.ma);
    let bad = t.a.delivered(
        &da,
        "P-A1",
        1,
        &wrong(&code("P-A1", 1)),
        "2026-11-23T09:00:00Z",
    );
    let old = t.a.delivered_right(&da, "P-A1", 1, "2026-11-23T09:01:00Z");
    let res =
        t.s.upload(&t.a, vec![json!(t.a.sign(&bad)), json!(t.a.sign(&old))])
            .await;
    for r in &res {
        assert_eq!(
            outcome(r),
            ("rejected", Some("not_on_current_route")),
            "{r}"
        );
        assert_eq!(r["permanent"], true);
    }
    assert_eq!(
        status(&t.s, "P-A1").await,
        "scheduled",
        "never disputed by it"
    );
    let (signals, _) = all_signals(&t.s, 100).await;
    let stale: Vec<(Value, Value)> = signals
        .iter()
        .filter(|s| s["kind"] == "stale_manifest")
        .map(|s| (s["device_id"].clone(), s["code_matched"].clone()))
        .collect();
    let dev = json!(t.a.device_id);
    assert_eq!(stale, [(dev.clone(), json!(false)), (dev, json!(true))]);
    assert!(
        signals.iter().all(|s| s["kind"] != "code_mismatch"),
        "{signals:?}"
    );
    // The customer still has a working code on the page: the new attempt's.
    // (Its notice is sent in the background: wait for it, not for any notice.)
    let new_code = code("P-A1", 2);
    let mut last = None;
    for _ in 0..200 {
        last =
            t.s.notice_files()
                .into_iter()
                .rev()
                .find(|n| n["parcel_id"] == "P-A1" && n["code"] == new_code.as_str());
        if last.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let last = last.expect("the reissued attempt's notice");
    let token = last["track_url"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap();
    let (st, tv) = t.s.get(&format!("/v1/track/{token}")).await;
    assert_eq!(
        (st, tv["code"].as_str()),
        (200, Some(code("P-A1", 2).as_str()))
    );
    // C-43's handset delivers it with that code.
    let mb = t.s.manifest(&t.b, DAY).await;
    let ok =
        t.b.delivered_right(&door(&mb), "P-A1", 2, "2026-11-23T10:00:00Z");
    assert_eq!(
        outcome(&t.s.upload(&t.b, vec![json!(t.b.sign(&ok))]).await[0]).0,
        "accepted"
    );
    assert_eq!(status(&t.s, "P-A1").await, "delivered");
    t.s.handle.shutdown().await;
}

/// 30 junk uploads used to push a courier's own fraud signals off the
/// board, which showed only the latest. Now a day's signals page through
/// `/v1/disputes` to the last one, whatever came before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_uploads_never_push_a_days_fraud_signal_out_of_reach() {
    let (_dir, mut t) = day().await;
    let da = door(&t.ma);
    let right = code("P-A1", 1);
    // 150 seq jumps, each a signal.
    let junk: Vec<Value> = (0..150)
        .map(|i| {
            t.a.seq += 1;
            let at = format!("2026-11-23T09:{:02}:00Z", i % 60);
            let c = t.a.delivered(&da, "P-A1", 1, &right, &at);
            json!(t.a.sign(&c))
        })
        .collect();
    let res = t.s.upload(&t.a, junk).await;
    assert!(res.iter().all(|r| r["status"] == "accepted"));
    // Then the one that matters: a wrong code for P-A2.
    let bad = t.a.delivered(
        &da,
        "P-A2",
        1,
        &wrong(&code("P-A2", 1)),
        "2026-11-23T11:00:00Z",
    );
    let res = t.s.upload(&t.a, vec![json!(t.a.sign(&bad))]).await;
    assert_eq!(res[0]["disputed"], true);
    let (_, first) = t.s.admin_get("/v1/disputes").await;
    assert_eq!(
        first["signals"].as_array().unwrap().len(),
        100,
        "100 a page by default"
    );
    assert!(first["disputes"].as_array().unwrap().is_empty());
    let (signals, pages) = all_signals(&t.s, 100).await;
    assert_eq!((signals.len(), pages), (151, 2));
    assert!(
        signals
            .iter()
            .any(|s| s["kind"] == "code_mismatch" && s["parcel_id"] == "P-A2"),
        "the dispute is on the last page"
    );
    let mut ids: Vec<i64> = signals.iter().map(|s| s["id"].as_i64().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 151, "no signal twice across pages");
    let (_, other) = t.s.admin_get("/v1/disputes?date=2026-11-24").await;
    assert!(
        other["signals"].as_array().unwrap().is_empty(),
        "paged by day"
    );
    for bad in [
        "limit=0",
        "limit=1001",
        "limit=x",
        "cursor=-1",
        "cursor=abc",
        "date=2026-13-01",
        "page=2",
    ] {
        let (st, v) = t.s.admin_get(&format!("/v1/disputes?{bad}")).await;
        assert_eq!(
            (st, v["error"].as_str().is_some()),
            (400, true),
            "{bad}: {v}"
        );
    }
    t.s.handle.shutdown().await;
}

/// A reissue gives the parcel a new tracking link: whoever has the old one
/// (a forwarded notice, a scammer) gets the unknown-link answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reissued_parcels_old_tracking_link_answers_like_an_unknown_one() {
    let (_dir, t) = day().await;
    let notices = t.s.wait_notices(4).await;
    let old = track_token(&notices.iter().find(|n| n["parcel_id"] == "P-A1").unwrap()["track_url"]);
    assert_eq!(t.s.get(&format!("/v1/track/{old}")).await.0, 200);
    t.s.wait_outbox_empty().await;
    let before = t.s.notice_files().len();
    let pv = t.s.admin_ok("/v1/parcels/P-A1/reissue", json!({})).await;
    let new = track_token(&pv["track_url"]);
    assert_ne!(new, old);
    let (st, gone) = t.s.get(&format!("/v1/track/{old}")).await;
    let (_, unknown) = t.s.get(&format!("/v1/track/{}", "Z".repeat(43))).await;
    assert_eq!((st, &gone), (404, &unknown), "like an unknown link");
    let (st, tv) = t.s.get(&format!("/v1/track/{new}")).await;
    assert_eq!(
        (st, tv["code"].as_str()),
        (200, Some(code("P-A1", 2).as_str()))
    );
    let notices = t.s.wait_notices(before + 1).await;
    assert!(
        notices[before]["track_url"]
            .as_str()
            .unwrap()
            .ends_with(&new)
    );
    t.s.handle.shutdown().await;
}

/// Whether a parcel needs a code is fixed once it is on a route: a routine
/// re-upload used to be able to make a code parcel code-free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_upload_cannot_make_a_routed_code_parcel_code_free() {
    let (_dir, t) = day().await;
    let item = |id: &str, value: f64, explicit: Option<bool>| {
        let mut p = json!({"parcel_id": id, "recipient": {"name": "New Name"}, "address": "1 Example Street",
            "value": value, "currency": "EUR"});
        if let Some(e) = explicit {
            p["requires_code"] = json!(e);
        }
        p
    };
    let (st, v) =
        t.s.admin_post(
            "/v1/parcels",
            json!({"parcels": [item("P-A1", 5.0, None), item("P-A2", 90.0, Some(false)),
            item("P-A3", 75.0, Some(true)), item("P-NEW", 5.0, None)]}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let r: Vec<(&str, Option<&str>)> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["status"].as_str().unwrap(), r["reason"].as_str()))
        .collect();
    assert_eq!(
        r,
        [
            ("rejected", Some("requires_code_frozen")),
            ("rejected", Some("requires_code_frozen")),
            ("updated", None),
            ("created", None)
        ]
    );
    let pv = t.s.admin_get("/v1/parcels/P-A1").await.1;
    assert_eq!(
        (pv["requires_code"].as_bool(), pv["recipient_name"].as_str()),
        (Some(true), Some("Customer P-A1"))
    );
    // Dispatch changes the policy with a reissue, from the next attempt.
    let (st, pv) =
        t.s.admin_post("/v1/parcels/P-A1/reissue", json!({"requires_code": false}))
            .await;
    assert_eq!(
        (st, pv["attempt"].as_u64(), pv["requires_code"].as_bool()),
        (200, Some(2), Some(false)),
        "{pv}"
    );
    let (st, v) =
        t.s.admin_post("/v1/parcels/P-A1/reissue", json!({"requires_code": "no"}))
            .await;
    assert_eq!(st, 422, "{v}");
    t.s.handle.shutdown().await;
}

/// A route for yesterday would have sent an already expired code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_for_a_past_day_is_refused() {
    let (_dir, t) = day().await;
    let before = t.s.wait_notices(4).await.len();
    let (st, v) =
        t.s.admin_post(
            "/v1/routes",
            json!({"route_id": "R-9", "courier_id": "C-44", "delivery_date": "2026-11-22",
        "stops": [{"stop_id": "S-1", "address": "1 Example Street", "parcel_ids": ["P-A1"]}]}),
        )
        .await;
    assert_eq!(
        (st, v["error"].as_str()),
        (422, Some("invalid_route")),
        "{v}"
    );
    assert!(v["message"].as_str().unwrap().contains("past"));
    assert_eq!(t.s.admin_get("/v1/parcels/P-A1").await.1["attempt"], 1);
    t.s.wait_outbox_empty().await;
    assert_eq!(t.s.notice_files().len(), before, "no notice for a past day");
    t.s.handle.shutdown().await;
}
