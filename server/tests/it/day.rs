//! A whole delivery day against a real server over loopback HTTP: parcels,
//! routes, enrollment, signed manifests, confirmations (accepted, duplicate,
//! dispute, wrong device, wrong parcel), online verify with lockout, closing
//! the day and redelivery with a new code and notice. The server's logs for
//! the day are captured and must not contain any issued code.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::*;
use chrono::{DateTime, Utc};
use doorcode_core::codes::Code;
use doorcode_core::codes::derive_code;
use doorcode_core::confirmation::FailReason;
use doorcode_core::manifest::{Manifest, open_manifest};
use serde_json::{Value, json};
use std::io::Write;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuf {
    type Writer = LogBuf;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// A pull for `date` with an optional `If-None-Match`: status, ETag and,
/// on a 200, the envelope.
pub(crate) async fn manifest(
    s: &Server,
    h: &Handset,
    date: &str,
    etag: Option<&str>,
) -> (
    u16,
    Option<String>,
    Option<doorcode_core::envelope::Envelope>,
) {
    let mut req = s
        .http
        .get(format!("{}/v1/manifest?date={date}", s.url))
        .bearer_auth(&h.token);
    if let Some(e) = etag {
        req = req.header("If-None-Match", e);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let tag = r
        .headers()
        .get("etag")
        .map(|v| v.to_str().unwrap().to_string());
    let env = if status == 200 {
        Some(r.json().await.unwrap())
    } else {
        None
    };
    (status, tag, env)
}

async fn verify(s: &Server, h: &Handset, parcel: &str, code: &str) -> (u16, Value) {
    s.post_as(
        &h.token,
        "/v1/verify",
        json!({"parcel_id": parcel, "code": code}),
    )
    .await
}

fn notice_for<'a>(notices: &'a [Value], parcel: &str) -> Vec<&'a Value> {
    notices
        .iter()
        .filter(|n| n["parcel_id"] == parcel)
        .collect()
}

/// The day on embedded SQLite.
#[test]
fn whole_delivery_day_on_sqlite() {
    run_captured(|logs| whole_delivery_day(None, logs));
}

/// The same day on PostgreSQL: a fresh schema (SKIPPED outside CI when
/// PostgreSQL is not reachable, a failure under CI; see `support::pg`).
#[test]
fn whole_delivery_day_on_postgres() {
    run_captured(|logs| async move {
        let Some(pg) = crate::support::pg::fresh_schema("whole_delivery_day").await else {
            return;
        };
        whole_delivery_day(Some(pg.url.clone()), logs).await;
        pg.drop_schema().await;
    });
}

/// Runs `day` on a runtime of its own whose every thread (workers and the
/// blocking pool) logs at DEBUG into one buffer. The subscriber is that
/// runtime's threads' default, not the process's: this binary runs other
/// tests at the same time, and their logs must not mix into this day's.
fn run_captured<F, Fut>(day: F)
where
    F: FnOnce(LogBuf) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let logs = LogBuf::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(logs.clone())
        .with_ansi(false)
        // Timestamps carry 6-digit fractions that could match a code by chance.
        .without_time()
        .finish();
    let dispatch = tracing::Dispatch::new(subscriber);
    let on_start = dispatch.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(move || {
            // Held for the thread's whole life.
            std::mem::forget(tracing::dispatcher::set_default(&on_start));
        })
        .build()
        .unwrap();
    let _main = tracing::dispatcher::set_default(&dispatch);
    rt.block_on(day(logs));
}

async fn whole_delivery_day(database: Option<String>, logs: LogBuf) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), "2026-11-23T06:00:00Z");
    // The clock moves to Tuesday for the redelivery: a code is valid only
    // within its day.
    let now = Arc::new(Mutex::new(t("2026-11-23T06:00:00Z")));
    let clock = now.clone();
    cfg.clock = Arc::new(move || *clock.lock().unwrap());
    cfg.database = database;
    let s = start(cfg).await;
    let mut issued: Vec<String> = Vec::new();

    parcels_by_value_and_routes_one_per_parcel(&s).await;
    let token = notices_carry_the_code_and_tracking_shows_it(&s, &mut issued).await;
    let (mut a, mut b) = enrollment_codes_work_once(&s).await;
    let (m, mb) = manifests_are_signed_per_device_with_etags(&s, &a, &b).await;
    let wrong = confirmations_get_one_answer_each(&s, &mut a, &mut b, &m, &mb, &token).await;
    let (p4, wrong4) = online_verify_locks_after_five_wrong_tries(&s, &mut a, &b, &m).await;
    dispatch_sees_the_dispute_and_the_signals(&s).await;
    let new4 = closing_the_day_moves_parcels_to_tuesday(&s, &p4, &mut issued).await;
    let (m2, etag2) = tuesdays_manifest_carries_attempt_2(&s, &now, &a, &new4).await;
    a_reissue_voids_the_older_revision(&s, &mut a, &m2, etag2, &mut issued).await;
    let metrics = metrics_and_openapi_cover_the_day(&s).await;

    s.handle.shutdown().await;
    let never_logged = [wrong, wrong4, p4.expose().to_string()];
    no_code_or_token_in_the_logs(
        &logs,
        &metrics,
        &issued,
        &never_logged,
        &token,
        &[&a.token, &s.admin],
    );
}

/// Parcels need a code by value threshold (50) or explicitly; routes for
/// C-42 and C-43; a parcel cannot be on two routes the same day.
async fn parcels_by_value_and_routes_one_per_parcel(s: &Server) {
    // Parcels: code by value threshold (50), or explicitly.
    let parcel = |id: &str, value: f64, explicit: Option<bool>| {
        let mut p = json!({"parcel_id": id, "recipient": {"name": format!("Customer {id}"), "email": format!("{}@example.com", id.to_lowercase())},
            "address": format!("{id} Example Street"), "value": value, "currency": "EUR"});
        if let Some(e) = explicit {
            p["requires_code"] = json!(e);
        }
        p
    };
    let v = s.admin_ok("/v1/parcels", json!({"parcels": [
            parcel("P-1001", 120.0, None), parcel("P-1002", 80.0, None), parcel("P-1003", 10.0, None),
            parcel("P-1004", 5.0, Some(true)), parcel("P-1005", 200.0, Some(false)), parcel("P-2001", 60.0, None)]})).await;
    let rc: Vec<(String, bool)> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["status"], "created");
            (
                r["parcel_id"].as_str().unwrap().into(),
                r["requires_code"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rc.iter().map(|x| x.1).collect::<Vec<_>>(),
        vec![true, true, false, true, false, true]
    );

    // Routes: C-42 gets R-7, C-43 gets R-8.
    let r7 = s.admin_ok("/v1/routes", json!({"route_id": "R-7", "courier_id": "C-42", "delivery_date": "2026-11-23", "stops": [
        {"stop_id": "S-1", "address": "1 Example Street", "parcel_ids": ["P-1001", "P-1002"]},
        {"stop_id": "S-2", "address": "2 Example Street", "recipient": "J. Doe", "parcel_ids": ["P-1003"]},
        {"stop_id": "S-3", "address": "3 Example Street", "parcel_ids": ["P-1004", "P-1005"]}]})).await;
    assert_eq!(r7["revision"], 1);
    assert_eq!(r7["notices_queued"], 3);
    s.admin_ok(
        "/v1/routes",
        json!({"route_id": "R-8", "courier_id": "C-43", "delivery_date": "2026-11-23", "stops": [
        {"stop_id": "S-9", "address": "9 Other Street", "parcel_ids": ["P-2001"]}]}),
    )
    .await;
    // A parcel cannot be on two routes the same day.
    let (st, v) = s.admin_post("/v1/routes", json!({"route_id": "R-9", "courier_id": "C-44", "delivery_date": "2026-11-23", "stops": [
        {"stop_id": "S-1", "address": "x", "parcel_ids": ["P-1001"]}]})).await;
    assert_eq!(st, 409, "{v}");
}

/// One notice per parcel that needs a code, with the vectors' code; the
/// tracking link shows it, dispatch's view never does. Returns the track token.
async fn notices_carry_the_code_and_tracking_shows_it(
    s: &Server,
    issued: &mut Vec<String>,
) -> String {
    let key = vector_key();
    let day1 = d("2026-11-23");
    // Notices: one per parcel that needs a code, with the vectors' code.
    let notices = s.wait_notices(4).await;
    assert_eq!(notices.len(), 4);
    let n1 = notice_for(&notices, "P-1001")[0];
    assert_eq!(
        n1["code"], "857759",
        "DESIGN.md formula with the preset code-key"
    );
    assert_eq!(n1["to"], "p-1001@example.com");
    assert_eq!(n1["channel"], "file");
    let body = n1["body"].as_str().unwrap();
    for needle in [
        "P-1001",
        "2026-11-23",
        "857759",
        "only",
        "in person",
        "door",
        "phone",
        "link",
        "did not order",
    ] {
        assert!(body.contains(needle), "{needle} missing: {body}");
    }
    for n in &notices {
        let pid = n["parcel_id"].as_str().unwrap();
        assert_eq!(
            n["code"].as_str().unwrap(),
            derive_code(&key, pid, day1, 1, 6).unwrap().expose()
        );
        issued.push(n["code"].as_str().unwrap().to_string());
    }
    assert!(notice_for(&notices, "P-1003").is_empty() && notice_for(&notices, "P-1005").is_empty());
    // Tracking shows the same code, as JSON and HTML.
    let track = n1["track_url"].as_str().unwrap().to_string();
    let token = track.rsplit('/').next().unwrap().to_string();
    assert!(doorcode_core::b64::decode(&token).unwrap().len() >= 16);
    let (st, tv) = s.get(&format!("/v1/track/{token}")).await;
    assert_eq!(st, 200);
    assert_eq!(tv["code"], "857759");
    assert_eq!(tv["status"], "scheduled");
    assert_eq!(tv["delivery_date"], "2026-11-23");
    let html = send_text(s.http.get(&track)).await;
    assert!(html.contains("857759") && html.contains("in person"));
    assert_eq!(s.get("/v1/track/not-a-token").await.0, 404);
    // Dispatch's parcel view never shows the code.
    let (st, pv) = s.admin_get("/v1/parcels/P-1001").await;
    assert_eq!(st, 200);
    assert_eq!(pv["status"], "scheduled");
    assert_eq!(pv["attempt"], 1);
    assert!(!pv.to_string().contains("857759"));
    token
}

/// An enrollment code works once; the day's two handsets (C-42, C-43).
async fn enrollment_codes_work_once(s: &Server) -> (Handset, Handset) {
    // Enrollment: one-time codes.
    let e = s
        .admin_ok("/v1/enrollments", json!({"courier_id": "C-42"}))
        .await;
    let pk = doorcode_core::envelope::SigningKey::generate("x")
        .unwrap()
        .public_key()
        .public_b64();
    let (st, _) = s.post_as("", "/v1/devices", json!({"enrollment_code": e["enrollment_code"], "device_public_key": pk, "device_name": "a"})).await;
    assert_eq!(st, 200);
    let (st, err) = s.post_as("", "/v1/devices", json!({"enrollment_code": e["enrollment_code"], "device_public_key": pk, "device_name": "b"})).await;
    assert_eq!(st, 403, "{err}");
    (s.enroll("C-42").await, s.enroll("C-43").await)
}

/// Signed, for this device, tags that match the code; ETag and 304; the
/// manifests of A and B.
async fn manifests_are_signed_per_device_with_etags(
    s: &Server,
    a: &Handset,
    b: &Handset,
) -> (Manifest, Manifest) {
    let key = vector_key();
    let day1 = d("2026-11-23");
    // Manifest: signed, for this device, tags match the code; ETag + 304.
    let keys = s.server_keys().await;
    let (st, etag, env) = manifest(s, a, "2026-11-23", None).await;
    assert_eq!(st, 200);
    let m = open_manifest(&env.unwrap(), &keys).unwrap();
    assert_eq!(m.device_id, a.device_id);
    assert_eq!(m.route_id, "R-7");
    assert_eq!(m.courier_id, "C-42");
    assert_eq!(m.revision, 1);
    assert_eq!(etag.as_deref().unwrap(), format!("\"{}:1\"", m.manifest_id));
    assert_eq!(m.stops.len(), 3);
    assert_eq!(m.stops[1].recipient, "J. Doe");
    assert_eq!(m.valid_from, t("2026-11-23T00:00:00Z"));
    assert_eq!(m.valid_until, t("2026-11-24T00:00:00Z"));
    for (_, p) in m.parcels() {
        if p.requires_code {
            let code = derive_code(&key, &p.parcel_id, day1, 1, 6).unwrap();
            let tag = doorcode_core::codes::offline_tag(
                &p.salt_bytes().unwrap(),
                &p.parcel_id,
                day1,
                &code,
                m.tag_bits,
            )
            .unwrap();
            assert_eq!(Some(tag), p.tag);
        } else {
            assert!(p.tag.is_none() && p.salt.is_none());
        }
    }
    assert!(
        m.parcels().all(|(_, p)| p.parcel_id != "P-2001"),
        "only its own route"
    );
    let (st, _, _) = manifest(s, a, "2026-11-23", etag.as_deref()).await;
    assert_eq!(st, 304);
    let (st, _, envb) = manifest(s, b, "2026-11-23", etag.as_deref()).await;
    assert_eq!(st, 200, "another device's ETag does not match");
    let mb = open_manifest(&envb.unwrap(), &keys).unwrap();
    assert_eq!(mb.route_id, "R-8");
    assert_eq!(manifest(s, a, "2026-11-25", None).await.0, 404);
    (m, mb)
}

/// One upload of good, disputed, foreign, forged and malformed envelopes:
/// each gets its own answer; replays are duplicates. Returns the wrong code used.
async fn confirmations_get_one_answer_each(
    s: &Server,
    a: &mut Handset,
    b: &mut Handset,
    m: &Manifest,
    mb: &Manifest,
    token: &str,
) -> String {
    // Confirmations.
    let door = Door {
        manifest_id: &m.manifest_id,
        revision: 1,
        date: "2026-11-23",
    };
    let c_ok = a.delivered(&door, "P-1001", 1, "857759", "2026-11-23T09:00:00Z");
    // A wrong code for P-1002: its real code with every digit shifted.
    let wrong2 = wrong(&code("P-1002", "2026-11-23", 1));
    let wrong = wrong2.as_str();
    let c_bad = a.delivered(&door, "P-1002", 1, wrong, "2026-11-23T09:05:00Z");
    let c_nocode = a.conf(&door, "P-1003", 1, "2026-11-23T09:10:00Z");
    let c_other_route = a.delivered(&door, "P-2001", 1, "123456", "2026-11-23T09:11:00Z");
    let c_unknown = a.conf(&door, "P-9999", 1, "2026-11-23T09:12:00Z");
    let e_ok = a.sign(&c_ok);
    let mut forged = {
        let c = a.conf(&door, "P-1005", 1, "2026-11-23T09:13:00Z");
        a.sign(&c)
    };
    forged.sig = {
        let c = b.conf(&door, "P-1005", 1, "2026-11-23T09:13:00Z");
        b.sign(&c)
    }
    .sig;
    // B's genuine envelope, uploaded with A's token.
    let mdoor_b = Door {
        manifest_id: &mb.manifest_id,
        revision: 1,
        date: "2026-11-23",
    };
    let b_env = {
        let c = b.delivered(&mdoor_b, "P-2001", 1, "123456", "2026-11-23T09:14:00Z");
        b.sign(&c)
    };
    let res = s
        .upload(
            a,
            vec![
                json!(e_ok),
                json!(a.sign(&c_bad)),
                json!(a.sign(&c_nocode)),
                json!(a.sign(&c_other_route)),
                json!(a.sign(&c_unknown)),
                json!(forged),
                json!(b_env),
                json!({"v": 1, "kid": a.device_id}),
                json!(e_ok),
            ],
        )
        .await;
    let st: Vec<&str> = res.iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(
        st,
        vec![
            "accepted",
            "accepted",
            "accepted",
            "rejected",
            "rejected",
            "rejected",
            "rejected",
            "rejected",
            "duplicate"
        ],
        "{res:?}"
    );
    assert_eq!(res[0]["confirmation_id"], c_ok.confirmation_id.to_string());
    assert_eq!(res[1]["disputed"], true);
    assert_eq!(res[3]["reason"], "not_on_manifest");
    assert_eq!(res[4]["reason"], "unknown_parcel");
    assert_eq!(res[5]["reason"], "bad_signature");
    assert_eq!(res[6]["reason"], "wrong_device");
    assert_eq!(res[7]["reason"], "malformed_envelope");
    for r in &res[3..8] {
        assert_eq!(r["permanent"], true);
    }
    // Replaying the accepted one later is still a duplicate.
    let res = s.upload(a, vec![json!(e_ok)]).await;
    assert_eq!(res[0]["status"], "duplicate");
    // B cannot confirm A's parcel.
    let c = b.delivered(&mdoor_b, "P-1001", 1, "857759", "2026-11-23T09:20:00Z");
    let res = s.upload(b, vec![json!(b.sign(&c))]).await;
    assert_eq!(res[0]["reason"], "not_on_manifest");

    for (pid, status) in [
        ("P-1001", "delivered"),
        ("P-1002", "disputed"),
        ("P-1003", "delivered"),
        ("P-2001", "scheduled"),
    ] {
        let pv = s.admin_get(&format!("/v1/parcels/{pid}")).await.1;
        assert_eq!(pv["status"], status, "{pid}");
    }
    assert_eq!(
        s.get(&format!("/v1/track/{token}")).await.1["code"],
        Value::Null,
        "no code once delivered"
    );
    wrong2
}

/// Online verify locks after five wrong tries (format errors do not count),
/// even for the right code; the locked-out and absent outcomes upload.
/// Returns P-1004's first code and the wrong code tried.
async fn online_verify_locks_after_five_wrong_tries(
    s: &Server,
    a: &mut Handset,
    b: &Handset,
    m: &Manifest,
) -> (Code, String) {
    let key = vector_key();
    let day1 = d("2026-11-23");
    let door = Door::of(m, "2026-11-23");
    // Online verify with lockout at 5 (format errors do not count).
    let p4 = derive_code(&key, "P-1004", day1, 1, 6).unwrap();
    let wrong4 = crate::support::wrong(p4.expose());
    assert_eq!(verify(s, a, "P-1004", "12a").await.0, 422);
    assert_eq!(verify(s, a, "P-1004", "1234567").await.0, 422);
    let (st, v) = verify(s, a, "P-1004", p4.expose()).await;
    assert_eq!((st, v["result"].as_str()), (200, Some("accepted")));
    for left in [4, 3, 2, 1] {
        let (st, v) = verify(s, a, "P-1004", &wrong4).await;
        assert_eq!(st, 200);
        assert_eq!(v["result"], "rejected");
        assert_eq!(v["attempts_left"], left);
    }
    assert_eq!(verify(s, a, "P-1004", &wrong4).await.1["result"], "locked");
    assert_eq!(
        verify(s, a, "P-1004", p4.expose()).await.1["result"],
        "locked",
        "locked even with the right code"
    );
    assert_eq!(
        verify(s, b, "P-1004", p4.expose()).await.0,
        404,
        "not on B's manifest"
    );
    assert_eq!(
        verify(s, a, "P-1005", "123456").await.0,
        409,
        "no code needed"
    );
    let pv = s.admin_get("/v1/parcels/P-1004").await.1;
    assert_eq!(pv["locked"], true);
    assert_eq!(pv["wrong_tries"], 5);
    let mut c = a.failed(
        &door,
        "P-1004",
        1,
        FailReason::LockedOut,
        "2026-11-23T10:00:00Z",
    );
    c.failed_attempts = 5;
    assert_eq!(
        s.upload(a, vec![json!(a.sign(&c))]).await[0]["status"],
        "accepted"
    );
    // P-1005 failed (absent) with a seq gap; a late confirmation for nothing else.
    a.seq += 3;
    let c = a.failed(
        &door,
        "P-1005",
        1,
        FailReason::CustomerAbsent,
        "2026-11-24T00:30:00Z",
    );
    assert_eq!(
        s.upload(a, vec![json!(a.sign(&c))]).await[0]["status"],
        "accepted"
    );
    (p4, wrong4)
}

/// Dispatch sees the code mismatch as a dispute, and the lockout, the many
/// wrong tries, the seq gap and the late confirmation as signals.
async fn dispatch_sees_the_dispute_and_the_signals(s: &Server) {
    let (st, dv) = s.admin_get("/v1/disputes").await;
    assert_eq!(st, 200);
    let kinds = |k: &str| {
        dv[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["kind"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(kinds("disputes"), vec!["code_mismatch"]);
    assert_eq!(dv["disputes"][0]["parcel_id"], "P-1002");
    let signals = kinds("signals");
    for k in [
        "verify_lockout",
        "many_wrong_tries",
        "seq_gap",
        "late_confirmation",
    ] {
        assert!(signals.iter().any(|s| s == k), "{k} missing in {signals:?}");
    }
}

/// Closing the day moves the failed and unconfirmed parcels to Tuesday with
/// attempt 2 and a new notice; the disputed one stays. Returns P-1004's new code.
async fn closing_the_day_moves_parcels_to_tuesday(
    s: &Server,
    p4: &Code,
    issued: &mut Vec<String>,
) -> Code {
    let key = vector_key();
    // Close the day: P-1004 (failed, locked) and P-1005 (failed) and P-2001
    // (never confirmed) move to Tuesday with attempt 2; P-1002 stays disputed.
    let before = s.notice_files().len();
    let cv = s.admin_ok("/v1/days/2026-11-23/close", json!(null)).await;
    assert_eq!(cv["next_date"], "2026-11-24");
    let mut moved: Vec<&str> = cv["parcel_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    moved.sort();
    assert_eq!(moved, vec!["P-1004", "P-1005", "P-2001"]);
    let day2 = d("2026-11-24");
    let pv = s.admin_get("/v1/parcels/P-1004").await.1;
    assert_eq!(
        (
            pv["status"].as_str(),
            pv["attempt"].as_u64(),
            pv["locked"].as_bool()
        ),
        (Some("scheduled"), Some(2), Some(false))
    );
    assert_eq!(pv["delivery_date"], "2026-11-24");
    assert_eq!(
        s.admin_get("/v1/parcels/P-1002").await.1["status"],
        "disputed"
    );
    // New notices with new codes (P-1005 needs none).
    let notices = s.wait_notices(before + 2).await;
    let n4 = notice_for(&notices, "P-1004");
    assert_eq!(n4.len(), 2);
    let new4 = derive_code(&key, "P-1004", day2, 2, 6).unwrap();
    assert_eq!(n4[1]["code"].as_str().unwrap(), new4.expose());
    assert_ne!(new4.expose(), p4.expose());
    assert!(n4[1]["body"].as_str().unwrap().contains("2026-11-24"));
    issued.extend(
        notices
            .iter()
            .map(|n| n["code"].as_str().unwrap().to_string()),
    );
    new4
}

/// Tuesday's manifest carries attempt 2; its code is refused before the day
/// starts (not counted) and accepted on it. Returns the manifest and its ETag.
async fn tuesdays_manifest_carries_attempt_2(
    s: &Server,
    now: &Mutex<DateTime<Utc>>,
    a: &Handset,
    new4: &Code,
) -> (Manifest, Option<String>) {
    let day2 = d("2026-11-24");
    let keys = s.server_keys().await;
    // The courier's Tuesday manifest carries attempt 2.
    let (st, etag2, env) = manifest(s, a, "2026-11-24", None).await;
    assert_eq!(st, 200);
    let m2 = open_manifest(&env.unwrap(), &keys).unwrap();
    let p = m2
        .parcels()
        .find(|(_, p)| p.parcel_id == "P-1004")
        .unwrap()
        .1
        .clone();
    assert_eq!(p.attempt, 2);
    let tag = doorcode_core::codes::offline_tag(
        &p.salt_bytes().unwrap(),
        "P-1004",
        day2,
        new4,
        m2.tag_bits,
    )
    .unwrap();
    assert_eq!(Some(tag), p.tag);
    assert!(m2.parcels().all(|(_, p)| p.parcel_id != "P-2001"));
    // Tuesday morning, before the day starts, the new code is refused (not
    // counted); on the day, redelivery with it succeeds.
    let (st, v) = verify(s, a, "P-1004", new4.expose()).await;
    assert_eq!(
        (st, v["error"].as_str()),
        (409, Some("code_not_yet_valid")),
        "{v}"
    );
    *now.lock().unwrap() = t("2026-11-24T08:00:00Z");
    assert_eq!(
        verify(s, a, "P-1004", new4.expose()).await.1["result"],
        "accepted"
    );
    (m2, etag2)
}

/// A reissue: attempt 3, a new notice and manifest revision; a confirmation
/// on the older revision is not on its manifest, one on the new is accepted.
async fn a_reissue_voids_the_older_revision(
    s: &Server,
    a: &mut Handset,
    m2: &Manifest,
    etag2: Option<String>,
    issued: &mut Vec<String>,
) {
    let key = vector_key();
    let day2 = d("2026-11-24");
    let sent = s.notice_files().len();
    let door2 = Door::of(m2, "2026-11-24");
    let keys = s.server_keys().await;
    // Reissue: attempt 3, a new notice, a new manifest revision.
    let rv = s.admin_ok("/v1/parcels/P-1004/reissue", json!({})).await;
    assert_eq!(rv["attempt"], 3);
    let notices = s.wait_notices(sent + 1).await;
    let code3 = derive_code(&key, "P-1004", day2, 3, 6).unwrap();
    assert_eq!(
        notice_for(&notices, "P-1004").last().unwrap()["code"]
            .as_str()
            .unwrap(),
        code3.expose()
    );
    issued.push(code3.expose().to_string());
    let (st, etag3, env) = manifest(s, a, "2026-11-24", etag2.as_deref()).await;
    assert_eq!(st, 200, "the old ETag no longer matches");
    assert_ne!(etag2, etag3);
    let m3 = open_manifest(&env.unwrap(), &keys).unwrap();
    assert_eq!(m3.revision, m2.revision + 1);
    // A confirmation made on the older revision with the voided attempt is on that manifest.
    let old = a.delivered(&door2, "P-1004", 3, code3.expose(), "2026-11-24T09:00:00Z");
    assert_eq!(
        s.upload(a, vec![json!(a.sign(&old))]).await[0]["reason"],
        "not_on_manifest"
    );
    let door3 = Door {
        manifest_id: &m3.manifest_id,
        revision: m3.revision,
        date: "2026-11-24",
    };
    let ok = a.delivered(&door3, "P-1004", 3, code3.expose(), "2026-11-24T09:00:00Z");
    let r = s.upload(a, vec![json!(a.sign(&ok))]).await;
    assert_eq!(
        (r[0]["status"].as_str(), r[0].get("disputed")),
        (Some("accepted"), None)
    );
    assert_eq!(
        s.admin_get("/v1/parcels/P-1004").await.1["status"],
        "delivered"
    );
    let events = s.admin_get("/v1/parcels/P-1004").await.1["events"]
        .as_array()
        .unwrap()
        .len();
    assert!(events >= 8, "history kept");
}

/// Metrics cover requests, manifests, notices and confirmations; the
/// OpenAPI document every path. Returns the metrics text.
async fn metrics_and_openapi_cover_the_day(s: &Server) -> String {
    // Metrics cover requests, manifests, notices and confirmations, never a code.
    let metrics = s.metrics().await;
    for needle in [
        "doorcode_http_requests_total{method=\"POST\",route=\"/v1/confirmations\",status=\"200\"}",
        "doorcode_manifest_builds_total",
        "doorcode_notices_total{channel=\"file\",result=\"sent\"}",
        "doorcode_confirmations_total{status=\"disputed\"} 1",
        "doorcode_http_request_duration_seconds_bucket",
    ] {
        assert!(metrics.contains(needle), "{needle} missing:\n{metrics}");
    }
    let openapi = s.get("/openapi.json").await.1;
    for path in [
        "/v1/parcels",
        "/v1/routes",
        "/v1/confirmations",
        "/v1/verify",
        "/v1/manifest",
        "/v1/days/{date}/close",
        "/track/{token}",
    ] {
        assert!(
            openapi["paths"].get(path).is_some(),
            "{path} missing in openapi"
        );
    }
    metrics
}

/// The logs were captured and hold no code issued or tried, no track token
/// and no bearer token; the metrics hold no code.
fn no_code_or_token_in_the_logs(
    logs: &LogBuf,
    metrics: &str,
    issued: &[String],
    never_logged: &[String],
    token: &str,
    bearer: &[&str],
) {
    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("manifest built") && logs.contains("confirmations ingested"),
        "logs were captured"
    );
    assert!(issued.len() >= 6);
    for code in issued.iter().chain(never_logged) {
        assert_absent(&logs, code, "a code appeared in the logs");
        assert!(
            !metrics.contains(code.as_str()),
            "a code appeared in the metrics"
        );
    }
    assert!(!logs.contains(token), "a track token appeared in the logs");
    assert!(
        bearer.iter().all(|b| !logs.contains(b)),
        "a bearer token appeared in the logs"
    );
}
