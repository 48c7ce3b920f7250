//! A whole delivery day on real processes (`doorcode serve` and `doorcode
//! handset`): no code, token or key in any log, output or file DESIGN.md
//! does not allow to hold it.

use crate::fleet::{Serve, ServeOpts, handset};
use crate::support::{assert_absent, track_token};
use doorcode_core::b64;
use doorcode_core::envelope::Envelope;
use serde_json::{Value, json};
use std::path::Path;

/// The code as a courier would say it: "eight five seven ...".
fn spoken(code: &str) -> Vec<String> {
    const WORDS: [&str; 10] = [
        "oh", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    ];
    code.bytes()
        .map(|b| WORDS[usize::from(b - b'0')].to_string())
        .collect()
}

/// Every byte of every file under `dir` (recursively), except under `skip`.
fn all_bytes(dir: &Path, skip: Option<&Path>) -> Vec<u8> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if Some(p.as_path()) == skip {
            continue;
        }
        if p.is_dir() {
            out.extend(all_bytes(&p, skip));
        } else if let Ok(b) = std::fs::read(&p) {
            out.extend(b);
        }
    }
    out
}

fn contains(hay: &[u8], needle: &str) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// One delivery day driven through `doorcode serve` and `doorcode handset`,
/// with attacks that carry codes and tokens in bodies, paths and headers.
/// Then no code, token or key may appear in the server's logs (text or
/// JSON, at trace level), its stdout, its metrics, the handset CLI's
/// output, or any file that DESIGN.md does not allow to hold it.
async fn day_on_real_processes(json_logs: bool) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let log = tmp.path().join("server.log");
    let db = tmp.path().join("courier.db");
    let json: &[&str] = if json_logs { &["--json-logs"] } else { &[] };
    let server = Serve::start(
        &data,
        &ServeOpts {
            extra: json,
            rust_log: "trace",
            log: Some(&log),
            ..ServeOpts::default()
        },
    );
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let url = server.url();
    let admin = server.admin().to_string();
    let call = |method: &str, path: &str, token: Option<&str>, body: Option<String>| {
        let mut req = http.request(method.parse().unwrap(), format!("{url}{path}"));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        async move {
            let r = req.send().await.unwrap();
            let st = r.status().as_u16();
            (st, r.text().await.unwrap())
        }
    };
    let today = chrono::Utc::now().date_naive().to_string();
    let mut cli_output = String::new();
    let mut run = |args: &[&str]| {
        let (ok, out, err) = handset(&db, args);
        cli_output.push_str(&out);
        cli_output.push_str(&err);
        (ok, out, err)
    };

    // Dispatch: four parcels (three need a code), one route, one enrollment.
    let parcels = json!({"parcels": [
        {"parcel_id": "P-1", "recipient": {"name": "Ann", "email": "ann@example.com"}, "address": "1 Main St", "value": 120, "currency": "EUR"},
        {"parcel_id": "P-2", "recipient": {"name": "Bob", "phone": "+49301234"}, "address": "2 Main St", "value": 90, "currency": "EUR"},
        {"parcel_id": "P-3", "recipient": {"name": "Cy", "email": "cy@example.com"}, "address": "3 Main St", "value": 80, "currency": "EUR"},
        {"parcel_id": "P-4", "recipient": {"name": "Di"}, "address": "4 Main St", "value": 10, "currency": "EUR"}]});
    let (st, v) = call(
        "POST",
        "/v1/parcels",
        Some(&admin),
        Some(parcels.to_string()),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let route = json!({"route_id": "R-1", "courier_id": "C-1", "delivery_date": today, "stops": [
        {"stop_id": "S-1", "address": "1 Main St", "parcel_ids": ["P-1", "P-2"]},
        {"stop_id": "S-2", "address": "3 Main St", "parcel_ids": ["P-3", "P-4"]}]});
    let (st, v) = call("POST", "/v1/routes", Some(&admin), Some(route.to_string())).await;
    assert_eq!(st, 200, "{v}");
    let (st, v) = call(
        "POST",
        "/v1/enrollments",
        Some(&admin),
        Some(json!({"courier_id": "C-1"}).to_string()),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let enrollment: String = serde_json::from_str::<Value>(&v).unwrap()["enrollment_code"]
        .as_str()
        .unwrap()
        .into();

    // The courier's handset.
    let (ok, _, err) = run(&["enroll", "--server", &url, "--code", &enrollment]);
    assert!(ok, "{err}");
    let (ok, _, err) = run(&["sync", "--date", &today]);
    assert!(ok, "{err}");

    let notices_dir = data.join("notices");
    let read_notices = || -> Vec<Value> {
        let mut paths: Vec<_> = std::fs::read_dir(&notices_dir)
            .map(|r| r.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        paths.sort();
        paths
            .iter()
            .filter_map(|p| serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok())
            .collect()
    };
    let wait_notices = |n: usize| {
        let read = &read_notices;
        async move {
            for _ in 0..400 {
                let v = read();
                if v.len() >= n {
                    return v;
                }
                tokio::time::sleep(std::time::Duration::from_millis(25)).await;
            }
            panic!("expected {n} notices");
        }
    };
    let notices = wait_notices(3).await;
    let code_of = |pid: &str| -> String {
        notices.iter().find(|n| n["parcel_id"] == pid).unwrap()["code"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (c1, c2, c3) = (code_of("P-1"), code_of("P-2"), code_of("P-3"));

    // At the doors: P-1 spoken and checked online.
    let mut args = vec!["verify".to_string(), "P-1".to_string()];
    args.extend(spoken(&c1));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out, err) = run(&argv);
    assert!(
        ok && out.contains("accepted") && out.contains("online"),
        "{out}{err}"
    );
    // P-2: an impostor tries five wrong codes; locked; then even the right one fails.
    let mut tried = Vec::new();
    for i in 0..5u32 {
        let w = format!(
            "{:06}",
            (c2.parse::<u32>().unwrap() + 1 + i * 111_111) % 1_000_000
        );
        let (ok, out, err) = run(&["verify", "P-2", &w]);
        assert!(ok, "{err}");
        assert!(
            out.contains(if i < 4 { "rejected" } else { "locked" }),
            "{out}"
        );
        tried.push(w);
    }
    let (ok, _, err) = run(&["verify", "P-2", &c2]);
    assert!(!ok && err.contains("locked"), "{err}");
    // P-3: unreadable input that contains the code, then offline with the right code.
    let (ok, _, err) = run(&["verify", "P-3", &format!("{c3}1")]);
    assert!(!ok, "{err}");
    let (ok, _, err) = run(&["verify", "P-3", &c3[..3], "banana", &c3[3..]]);
    assert!(!ok, "{err}");
    let (ok, out, err) = run(&["verify", "--offline", "P-3", &c3]);
    assert!(
        ok && out.contains("accepted") && out.contains("offline"),
        "{out}{err}"
    );
    // DESIGN allows the code in the outbox until the server acknowledges it.
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let env: String = crate::support::dump::one(
            &conn,
            "SELECT envelope FROM outbox WHERE envelope IS NOT NULL ORDER BY seq DESC LIMIT 1",
        );
        let env: Envelope = serde_json::from_str(&env).unwrap();
        let body: Value = serde_json::from_slice(&b64::decode(&env.body).unwrap()).unwrap();
        assert_eq!(body["code"], c3.as_str());
    }
    let (ok, _, err) = run(&["fail", "P-2", "--reason", "locked_out"]);
    assert!(ok, "{err}");
    let (ok, _, err) = run(&["deliver", "P-4"]);
    assert!(ok, "{err}");
    let (ok, out, err) = run(&["sync", "--date", &today]);
    assert!(ok && out.contains("\"pending\": 0"), "{out}{err}");
    let (ok, _, err) = run(&["status"]);
    assert!(ok, "{err}");
    let (ok, _, err) = run(&["stops"]);
    assert!(ok, "{err}");

    let secrets_dir = tmp.path().join("courier.db.secrets");
    let device_token =
        String::from_utf8(std::fs::read(secrets_dir.join("device-token")).unwrap()).unwrap();
    let device_seed = std::fs::read(secrets_dir.join("device-key")).unwrap();
    assert!(device_token.len() >= 32 && device_seed.len() == 32);

    // Attacks that carry codes and tokens to the server in every place a log might echo.
    let dev = Some(device_token.as_str());
    let probes: Vec<(&str, String, Option<&str>, Option<String>)> = vec![
        ("POST", "/v1/verify".into(), dev, Some(format!("{{\"parcel_id\":\"P-3\",\"code\":{c3}}}"))),
        ("POST", "/v1/verify".into(), dev, Some(format!("{{\"parcel_id\":\"P-3\",\"code\":\"{c3}\",\"why\":\"{c1}\"}}"))),
        ("POST", "/v1/verify".into(), dev, Some(format!("{{\"parcel_id\":\"P-3\",\"code\":\"{c3}9\"}}"))),
        ("POST", "/v1/verify".into(), dev, Some(format!("{{\"parcel_id\":\"{c3}\",\"code\":\"{c3}\"}}"))),
        ("POST", "/v1/verify".into(), dev, Some(format!("{{\"parcel_id\":\"P-3\",\"code\":\"{c3}"))),
        ("POST", "/v1/verify".into(), Some(c1.as_str()), Some("{}".into())),
        ("POST", "/v1/parcels".into(), Some(&admin), Some(format!("{{\"parcels\":[{{\"parcel_id\":\"{c2}\",\"value\":{c1}"))),
        ("POST", "/v1/confirmations".into(), dev, Some(format!("{{\"confirmations\":[{{\"v\":1,\"kid\":\"{c1}\",\"body\":\"{c2}\",\"sig\":\"{c3}\"}}]}}"))),
        ("GET", format!("/v1/parcels/{c1}"), Some(&admin), None),
        ("GET", format!("/v1/manifest?date={c1}"), dev, None),
        ("GET", format!("/v1/manifest?code={c1}"), dev, None),
        ("GET", format!("/track/{c1}"), None, None),
        ("GET", format!("/v1/track/{c2}"), None, None),
        ("POST", format!("/v1/days/{c3}/close"), Some(&admin), Some("{}".into())),
        ("POST", "/v1/devices".into(), None, Some(json!({"enrollment_code": enrollment, "device_public_key": b64::encode(&[1u8; 32]), "device_name": c1}).to_string())),
        ("GET", "/v1/disputes".into(), dev, None),
        ("GET", "/v1/manifest".into(), Some(&admin), None),
    ];
    for (method, path, token, body) in probes {
        let (st, text) = call(method, &path, token, body).await;
        let per_item = path == "/v1/confirmations" && st == 200 && text.contains("rejected");
        assert!(
            (400..500).contains(&st) || per_item,
            "{method} {path}: {st} {text}"
        );
        for c in [&c1, &c2, &c3] {
            assert!(
                !text.contains(c.as_str()),
                "{method} {path} echoed a code: {text}"
            );
        }
    }
    // The customer's links, as JSON and HTML, and the dispatcher's board.
    let track_tokens: Vec<String> = notices
        .iter()
        .map(|n| track_token(&n["track_url"]))
        .collect();
    for t in &track_tokens {
        assert_eq!(
            call("GET", &format!("/v1/track/{t}"), None, None).await.0,
            200
        );
        assert_eq!(call("GET", &format!("/track/{t}"), None, None).await.0, 200);
    }
    let r = http
        .post(format!("{url}/board/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={admin}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let cookie = crate::support::board::session_cookie(r.headers());
    let session = cookie.split_once('=').unwrap().1.to_string();
    let board = http
        .get(format!("{url}/board"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(board.status(), 200);
    let board = board.text().await.unwrap();
    let r = http
        .post(format!("{url}/board/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={c1}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Reissue P-2 (a new code), close the day (P-2 moves on with another).
    let (st, v) = call(
        "POST",
        "/v1/parcels/P-2/reissue",
        Some(&admin),
        Some("{}".into()),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let (st, v) = call(
        "POST",
        &format!("/v1/days/{today}/close"),
        Some(&admin),
        Some("{}".into()),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    // The reissued notice may be dropped as superseded by the close's; the close's is not.
    wait_notices(4).await;
    let mut drained = false;
    for _ in 0..400 {
        if call("GET", "/metrics", Some(&admin), None)
            .await
            .1
            .contains("doorcode_notice_outbox{state=\"pending\"} 0")
        {
            drained = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(drained, "the notice outbox did not drain");
    let notices = read_notices();
    let (st, metrics) = call("GET", "/metrics", Some(&admin), None).await;
    assert_eq!(st, 200);
    let server_stdout = server.stdout.join("\n");
    drop(server);
    let logs = std::fs::read_to_string(&log).unwrap();

    // What must stay secret.
    let mut codes: Vec<String> = notices
        .iter()
        .map(|n| n["code"].as_str().unwrap().to_string())
        .collect();
    codes.sort();
    codes.dedup();
    assert!(
        codes.len() >= 4,
        "the day's codes and the next day's: {codes:?}"
    );
    let mut secrets: Vec<(String, String)> = codes
        .iter()
        .map(|c| ("a delivery code".into(), c.clone()))
        .collect();
    secrets.extend(
        tried
            .iter()
            .map(|c| ("a code tried at the door".to_string(), c.clone())),
    );
    secrets.push(("the dispatch token".into(), admin.clone()));
    secrets.push(("the device token".into(), device_token.clone()));
    secrets.push(("the device key".into(), b64::encode(&device_seed)));
    secrets.push((
        "the device key (hex)".into(),
        device_seed.iter().map(|b| format!("{b:02x}")).collect(),
    ));
    secrets.push(("the enrollment code".into(), enrollment.clone()));
    secrets.push(("the enrollment code".into(), enrollment.replace('-', "")));
    secrets.push(("a board session".into(), session.clone()));
    secrets.extend(
        track_tokens
            .iter()
            .map(|t| ("a track token".to_string(), t.clone())),
    );

    // The logs are real: trace level on, every kind of request seen, the right format.
    assert!(logs.lines().count() > 40, "{logs}");
    for needle in [
        "manifest built",
        "confirmations ingested",
        "online verify",
        "/v1/verify",
        "/track/{token}",
        "/board/login",
    ] {
        assert!(logs.contains(needle), "{needle} missing from the logs");
    }
    if json_logs {
        for l in logs.lines().filter(|l| !l.trim().is_empty()) {
            assert!(
                serde_json::from_str::<Value>(l).is_ok(),
                "not a JSON line: {l}"
            );
        }
    } else {
        assert!(logs.contains(" INFO "), "text format");
    }
    // Timestamps (6-digit microseconds) and metric values (long floats) are
    // numbers that could match a code by chance; they are left out of the search.
    let logs = without_timestamps(&logs);
    let metric_labels: String = metrics
        .lines()
        .map(|l| l.rsplit_once(' ').map_or(l, |(name, _)| name))
        .collect::<Vec<_>>()
        .join("\n");
    for (what, secret) in &secrets {
        for (place, text) in [
            ("the server log", logs.as_str()),
            (
                "the server's stdout after the token line",
                server_stdout.as_str(),
            ),
            ("the handset CLI output", cli_output.as_str()),
            ("the metrics", metric_labels.as_str()),
        ] {
            assert_absent(text, secret, &format!("{what} appeared in {place}"));
        }
        if what != "a board session" {
            assert!(!board.contains(secret.as_str()), "{what} on the board page");
        }
    }

    // Files: the server stores no code, bearer token or enrollment code
    // (hashes only); the notices directory is the file channel's outbox and
    // holds them by design, and track tokens are stored as they are (SERVER.md).
    let server_files = all_bytes(&data, Some(&notices_dir));
    for (what, secret) in &secrets {
        if what == "a track token" {
            continue;
        }
        assert!(
            !contains(&server_files, secret),
            "{what} stored in the server's data directory"
        );
    }
    // The handset: after the upload its database holds salts and tags, never
    // a code; only its secret store holds the token and the key.
    let handset_db: Vec<u8> = [db.clone(), tmp.path().join("courier.db-wal")]
        .iter()
        .filter_map(|p| std::fs::read(p).ok())
        .flatten()
        .collect();
    assert!(handset_db.len() > 4096);
    for (what, secret) in &secrets {
        assert!(
            !contains(&handset_db, secret),
            "{what} in the handset database"
        );
    }
    let conn = rusqlite::Connection::open(&db).unwrap();
    let held: i64 = crate::support::dump::one(
        &conn,
        "SELECT count(*) FROM outbox WHERE envelope IS NOT NULL",
    );
    assert_eq!(
        held, 0,
        "acknowledged confirmations drop their envelopes, and the code with them"
    );
    let tagged: i64 = crate::support::dump::one(
        &conn,
        "SELECT count(*) FROM parcels WHERE tag IS NOT NULL AND length(salt) = 16",
    );
    assert_eq!(tagged, 3, "the three code parcels are held as salt and tag");
}

/// Log lines without their timestamp: the leading RFC 3339 token of a text
/// line, the `timestamp` field of a JSON line.
fn without_timestamps(logs: &str) -> String {
    logs.lines()
        .map(|l| match serde_json::from_str::<Value>(l) {
            Ok(Value::Object(mut m)) => {
                m.remove("timestamp");
                Value::Object(m).to_string()
            }
            _ => match l.split_once(' ') {
                Some((first, rest)) if chrono::DateTime::parse_from_rfc3339(first).is_ok() => {
                    rest.to_string()
                }
                _ => l.to_string(),
            },
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codes_and_tokens_appear_in_no_text_log_at_trace_level() {
    day_on_real_processes(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codes_and_tokens_appear_in_no_json_log_at_trace_level() {
    day_on_real_processes(true).await;
}
