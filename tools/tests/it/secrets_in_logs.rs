//! A whole delivery day on real processes (`doorcode serve` and `doorcode
//! handset`): no code, token or key in any log, output or file DESIGN.md
//! does not allow to hold it.

use crate::fleet::{Serve, ServeOpts, handset};
use crate::support::{assert_absent, track_token};
use doorcode_core::b64;
use doorcode_core::envelope::Envelope;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

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

/// A day's server, handset database and the HTTP client that attacks them.
struct Day {
    tmp: tempfile::TempDir,
    data: PathBuf,
    log: PathBuf,
    db: PathBuf,
    server: Serve,
    http: reqwest::Client,
    url: String,
    admin: String,
    today: String,
    /// Everything the handset CLI printed, searched at the end.
    cli_output: String,
}

/// The day's three codes as notices carried them (P-1, P-2, P-3).
struct Codes {
    c1: String,
    c2: String,
    c3: String,
}

/// What the server and the handset held at the end of the day.
struct Outputs {
    notices: Vec<Value>,
    metrics: String,
    server_stdout: String,
    logs: String,
}

impl Day {
    /// `doorcode serve` at trace level, logging to a file, text or JSON.
    fn start(json_logs: bool) -> Self {
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
        let (url, admin) = (server.url(), server.admin().to_string());
        Self {
            tmp,
            data,
            log,
            db,
            server,
            http,
            url,
            admin,
            today: chrono::Utc::now().date_naive().to_string(),
            cli_output: String::new(),
        }
    }

    /// One request, any method, with an optional bearer token and JSON body.
    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<String>,
    ) -> (u16, String) {
        let mut req = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.url));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let r = req.send().await.unwrap();
        let st = r.status().as_u16();
        (st, r.text().await.unwrap())
    }

    /// A dispatch call that must succeed; its body.
    async fn dispatch(&self, method: &str, path: &str, body: Value) -> String {
        let (st, v) = self
            .call(method, path, Some(&self.admin), Some(body.to_string()))
            .await;
        assert_eq!(st, 200, "{method} {path}: {v}");
        v
    }

    /// `doorcode handset --db …`, its output kept for the final search.
    fn run(&mut self, args: &[&str]) -> (bool, String, String) {
        let (ok, out, err) = handset(&self.db, args);
        self.cli_output.push_str(&out);
        self.cli_output.push_str(&err);
        (ok, out, err)
    }

    fn run_ok(&mut self, args: &[&str]) -> String {
        let (ok, out, err) = self.run(args);
        assert!(ok, "handset {args:?}: {out}{err}");
        out
    }

    fn notices_dir(&self) -> PathBuf {
        self.data.join("notices")
    }

    /// The file channel's notices, in file-name order.
    fn read_notices(&self) -> Vec<Value> {
        let mut paths: Vec<_> = std::fs::read_dir(self.notices_dir())
            .map(|r| r.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        paths.sort();
        paths
            .iter()
            .filter_map(|p| serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok())
            .collect()
    }

    async fn wait_notices(&self, n: usize) -> Vec<Value> {
        for _ in 0..400 {
            let v = self.read_notices();
            if v.len() >= n {
                return v;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("expected {n} notices");
    }

    /// Dispatch: four parcels (three need a code), one route, one
    /// enrollment code; the handset enrolls with it and syncs.
    async fn plan_and_enroll(&mut self) -> String {
        self.dispatch("POST", "/v1/parcels", json!({"parcels": [
            {"parcel_id": "P-1", "recipient": {"name": "Ann", "email": "ann@example.com"}, "address": "1 Main St", "value": 120, "currency": "EUR"},
            {"parcel_id": "P-2", "recipient": {"name": "Bob", "phone": "+49301234"}, "address": "2 Main St", "value": 90, "currency": "EUR"},
            {"parcel_id": "P-3", "recipient": {"name": "Cy", "email": "cy@example.com"}, "address": "3 Main St", "value": 80, "currency": "EUR"},
            {"parcel_id": "P-4", "recipient": {"name": "Di"}, "address": "4 Main St", "value": 10, "currency": "EUR"}]}))
            .await;
        let route = json!({"route_id": "R-1", "courier_id": "C-1", "delivery_date": self.today, "stops": [
            {"stop_id": "S-1", "address": "1 Main St", "parcel_ids": ["P-1", "P-2"]},
            {"stop_id": "S-2", "address": "3 Main St", "parcel_ids": ["P-3", "P-4"]}]});
        self.dispatch("POST", "/v1/routes", route).await;
        let v = self
            .dispatch("POST", "/v1/enrollments", json!({"courier_id": "C-1"}))
            .await;
        let enrollment: String = serde_json::from_str::<Value>(&v).unwrap()["enrollment_code"]
            .as_str()
            .unwrap()
            .into();
        let url = self.url.clone();
        self.run_ok(&["enroll", "--server", &url, "--code", &enrollment]);
        let today = self.today.clone();
        self.run_ok(&["sync", "--date", &today]);
        enrollment
    }

    /// At the doors: P-1 spoken and checked online; P-2 locked by an
    /// impostor's five wrong codes (returned), then failed; P-3 unreadable
    /// input holding the code, then offline with it; P-4 without a code.
    /// The upload then empties the outbox.
    fn at_the_doors(&mut self, c: &Codes) -> Vec<String> {
        let mut args = vec!["verify".to_string(), "P-1".to_string()];
        args.extend(spoken(&c.c1));
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.run_ok(&argv);
        assert!(out.contains("accepted") && out.contains("online"), "{out}");
        let mut tried = Vec::new();
        for i in 0..5u32 {
            let w = format!(
                "{:06}",
                (c.c2.parse::<u32>().unwrap() + 1 + i * 111_111) % 1_000_000
            );
            let out = self.run_ok(&["verify", "P-2", &w]);
            assert!(
                out.contains(if i < 4 { "rejected" } else { "locked" }),
                "{out}"
            );
            tried.push(w);
        }
        let (ok, _, err) = self.run(&["verify", "P-2", &c.c2]);
        assert!(!ok && err.contains("locked"), "{err}");
        let (ok, _, err) = self.run(&["verify", "P-3", &format!("{}1", c.c3)]);
        assert!(!ok, "{err}");
        let (ok, _, err) = self.run(&["verify", "P-3", &c.c3[..3], "banana", &c.c3[3..]]);
        assert!(!ok, "{err}");
        let out = self.run_ok(&["verify", "--offline", "P-3", &c.c3]);
        assert!(out.contains("accepted") && out.contains("offline"), "{out}");
        self.assert_outbox_holds(&c.c3);
        self.run_ok(&["fail", "P-2", "--reason", "locked_out"]);
        self.run_ok(&["deliver", "P-4"]);
        let today = self.today.clone();
        let out = self.run_ok(&["sync", "--date", &today]);
        assert!(out.contains("\"pending\": 0"), "{out}");
        self.run_ok(&["status"]);
        self.run_ok(&["stops"]);
        tried
    }

    /// DESIGN allows the code in the outbox until the server acknowledges it.
    fn assert_outbox_holds(&self, code: &str) {
        let conn = rusqlite::Connection::open(&self.db).unwrap();
        let env: String = crate::support::dump::one(
            &conn,
            "SELECT envelope FROM outbox WHERE envelope IS NOT NULL ORDER BY seq DESC LIMIT 1",
        );
        let env: Envelope = serde_json::from_str(&env).unwrap();
        let body: Value = serde_json::from_slice(&b64::decode(&env.body).unwrap()).unwrap();
        assert_eq!(body["code"], code);
    }

    /// The handset's secret store: its device token and key seed.
    fn handset_secrets(&self) -> (String, Vec<u8>) {
        let dir = self.tmp.path().join("courier.db.secrets");
        let token = String::from_utf8(std::fs::read(dir.join("device-token")).unwrap()).unwrap();
        let seed = std::fs::read(dir.join("device-key")).unwrap();
        assert!(token.len() >= 32 && seed.len() == 32);
        (token, seed)
    }

    /// Attacks that carry codes and tokens to the server in every place a
    /// log might echo: each is refused (4xx, or per item) without the code.
    async fn probe_with_secrets(&self, c: &Codes, device_token: &str, enrollment: &str) {
        let (c1, c2, c3) = (&c.c1, &c.c2, &c.c3);
        let (dev, admin) = (Some(device_token), Some(self.admin.as_str()));
        let probes: Vec<(&str, String, Option<&str>, Option<String>)> = vec![
            ("POST", "/v1/verify".into(), dev, Some(format!("{{\"parcel_id\":\"P-3\",\"code\":{c3}}}"))),
            ("POST", "/v1/verify".into(), dev, Some(format!("{{\"parcel_id\":\"P-3\",\"code\":\"{c3}\",\"why\":\"{c1}\"}}"))),
            ("POST", "/v1/verify".into(), dev, Some(format!("{{\"parcel_id\":\"P-3\",\"code\":\"{c3}9\"}}"))),
            ("POST", "/v1/verify".into(), dev, Some(format!("{{\"parcel_id\":\"{c3}\",\"code\":\"{c3}\"}}"))),
            ("POST", "/v1/verify".into(), dev, Some(format!("{{\"parcel_id\":\"P-3\",\"code\":\"{c3}"))),
            ("POST", "/v1/verify".into(), Some(c1.as_str()), Some("{}".into())),
            ("POST", "/v1/parcels".into(), admin, Some(format!("{{\"parcels\":[{{\"parcel_id\":\"{c2}\",\"value\":{c1}"))),
            ("POST", "/v1/confirmations".into(), dev, Some(format!("{{\"confirmations\":[{{\"v\":1,\"kid\":\"{c1}\",\"body\":\"{c2}\",\"sig\":\"{c3}\"}}]}}"))),
            ("GET", format!("/v1/parcels/{c1}"), admin, None),
            ("GET", format!("/v1/manifest?date={c1}"), dev, None),
            ("GET", format!("/v1/manifest?code={c1}"), dev, None),
            ("GET", format!("/track/{c1}"), None, None),
            ("GET", format!("/v1/track/{c2}"), None, None),
            ("POST", format!("/v1/days/{c3}/close"), admin, Some("{}".into())),
            ("POST", "/v1/devices".into(), None, Some(json!({"enrollment_code": enrollment, "device_public_key": b64::encode(&[1u8; 32]), "device_name": c1}).to_string())),
            ("GET", "/v1/disputes".into(), dev, None),
            ("GET", "/v1/manifest".into(), admin, None),
        ];
        for (method, path, token, body) in probes {
            let (st, text) = self.call(method, &path, token, body).await;
            let per_item = path == "/v1/confirmations" && st == 200 && text.contains("rejected");
            assert!(
                (400..500).contains(&st) || per_item,
                "{method} {path}: {st} {text}"
            );
            for code in [c1, c2, c3] {
                assert!(
                    !text.contains(code.as_str()),
                    "{method} {path} echoed a code: {text}"
                );
            }
        }
    }

    /// The customer's links, as JSON and HTML; their track tokens.
    async fn open_customer_links(&self, notices: &[Value]) -> Vec<String> {
        let tokens: Vec<String> = notices
            .iter()
            .map(|n| track_token(&n["track_url"]))
            .collect();
        for t in &tokens {
            let json = self
                .call("GET", &format!("/v1/track/{t}"), None, None)
                .await;
            assert_eq!(json.0, 200);
            assert_eq!(
                self.call("GET", &format!("/track/{t}"), None, None).await.0,
                200
            );
        }
        tokens
    }

    /// The dispatcher signs in to the board (and a code as a token does
    /// not): the board page and the session.
    async fn open_board(&self, not_a_token: &str) -> (String, String) {
        let login = |token: String| {
            self.http
                .post(format!("{}/board/login", self.url))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("token={token}"))
                .send()
        };
        let r = login(self.admin.clone()).await.unwrap();
        assert_eq!(r.status(), 303);
        let cookie = crate::support::board::session_cookie(r.headers());
        let session = cookie.split_once('=').unwrap().1.to_string();
        let board = self
            .http
            .get(format!("{}/board", self.url))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(board.status(), 200);
        let board = board.text().await.unwrap();
        let r = login(not_a_token.to_string()).await.unwrap();
        assert_eq!(r.status(), 401);
        (board, session)
    }

    /// Reissue P-2 (a new code), close the day (P-2 moves on with another),
    /// and wait until the outbox is empty.
    async fn reissue_and_close(&self) {
        self.dispatch("POST", "/v1/parcels/P-2/reissue", json!({}))
            .await;
        self.dispatch("POST", &format!("/v1/days/{}/close", self.today), json!({}))
            .await;
        // The reissued notice may be dropped as superseded by the close's; the close's is not.
        self.wait_notices(4).await;
        for _ in 0..400 {
            let (_, metrics) = self.call("GET", "/metrics", Some(&self.admin), None).await;
            if metrics.contains("doorcode_notice_outbox{state=\"pending\"} 0") {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("the notice outbox did not drain");
    }

    /// Stops the server: what it sent, exposed, printed and logged.
    async fn finish(self) -> (Outputs, Leftovers) {
        let notices = self.read_notices();
        let (st, metrics) = self.call("GET", "/metrics", Some(&self.admin), None).await;
        assert_eq!(st, 200);
        let server_stdout = self.server.stdout.join("\n");
        drop(self.server);
        let logs = std::fs::read_to_string(&self.log).unwrap();
        let out = Outputs {
            notices,
            metrics,
            server_stdout,
            logs,
        };
        let left = Leftovers {
            data: self.data,
            db: self.db,
            cli_output: self.cli_output,
            _tmp: self.tmp,
        };
        (out, left)
    }
}

/// The files and output left after the server stopped.
struct Leftovers {
    data: PathBuf,
    db: PathBuf,
    cli_output: String,
    _tmp: tempfile::TempDir,
}

impl Codes {
    fn of(notices: &[Value]) -> Self {
        let code_of = |pid: &str| -> String {
            notices.iter().find(|n| n["parcel_id"] == pid).unwrap()["code"]
                .as_str()
                .unwrap()
                .to_string()
        };
        Self {
            c1: code_of("P-1"),
            c2: code_of("P-2"),
            c3: code_of("P-3"),
        }
    }
}

/// The logs are real: trace level on, every kind of request seen, the right format.
fn assert_logs_are_real(logs: &str, json_logs: bool) {
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
}

/// No secret in the server log, its stdout, the handset CLI's output, the
/// metrics' names and labels, or the board page (but its own session).
fn assert_absent_from_outputs(secrets: &[(String, String)], out: &Outputs, cli: &str, board: &str) {
    // Timestamps (6-digit microseconds) and metric values (long floats) are
    // numbers that could match a code by chance; they are left out of the search.
    let logs = without_timestamps(&out.logs);
    let metric_labels: String = out
        .metrics
        .lines()
        .map(|l| l.rsplit_once(' ').map_or(l, |(name, _)| name))
        .collect::<Vec<_>>()
        .join("\n");
    for (what, secret) in secrets {
        for (place, text) in [
            ("the server log", logs.as_str()),
            (
                "the server's stdout after the token line",
                out.server_stdout.as_str(),
            ),
            ("the handset CLI output", cli),
            ("the metrics", metric_labels.as_str()),
        ] {
            assert_absent(text, secret, &format!("{what} appeared in {place}"));
        }
        if what != "a board session" {
            assert!(!board.contains(secret.as_str()), "{what} on the board page");
        }
    }
}

/// Files: the server stores no code, bearer token or enrollment code
/// (hashes only); the notices directory is the file channel's outbox and
/// holds them by design, and track tokens are stored as they are
/// (SERVER.md). After the upload the handset's database holds salts and
/// tags, never a code; only its secret store holds the token and the key.
fn assert_absent_from_files(secrets: &[(String, String)], left: &Leftovers) {
    let server_files = all_bytes(&left.data, Some(&left.data.join("notices")));
    for (what, secret) in secrets {
        if what == "a track token" {
            continue;
        }
        assert!(
            !contains(&server_files, secret),
            "{what} stored in the server's data directory"
        );
    }
    let wal = left.db.with_file_name("courier.db-wal");
    let handset_db: Vec<u8> = [left.db.clone(), wal]
        .iter()
        .filter_map(|p| std::fs::read(p).ok())
        .flatten()
        .collect();
    assert!(handset_db.len() > 4096);
    for (what, secret) in secrets {
        assert!(
            !contains(&handset_db, secret),
            "{what} in the handset database"
        );
    }
    let conn = rusqlite::Connection::open(&left.db).unwrap();
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

/// Everything that must stay secret, with what it is.
struct Secrets<'a> {
    notices: &'a [Value],
    tried: &'a [String],
    admin: &'a str,
    device_token: &'a str,
    device_seed: &'a [u8],
    enrollment: &'a str,
    session: &'a str,
    track_tokens: &'a [String],
}

impl Secrets<'_> {
    fn list(&self) -> Vec<(String, String)> {
        let mut codes: Vec<String> = self
            .notices
            .iter()
            .map(|n| n["code"].as_str().unwrap().to_string())
            .collect();
        codes.sort();
        codes.dedup();
        assert!(
            codes.len() >= 4,
            "the day's codes and the next day's: {codes:?}"
        );
        let named = |what: &str, v: &str| (what.to_string(), v.to_string());
        let mut secrets: Vec<(String, String)> =
            codes.iter().map(|c| named("a delivery code", c)).collect();
        secrets.extend(
            self.tried
                .iter()
                .map(|c| named("a code tried at the door", c)),
        );
        secrets.push(named("the dispatch token", self.admin));
        secrets.push(named("the device token", self.device_token));
        secrets.push(named("the device key", &b64::encode(self.device_seed)));
        let hex: String = self
            .device_seed
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        secrets.push(named("the device key (hex)", &hex));
        secrets.push(named("the enrollment code", self.enrollment));
        secrets.push(named(
            "the enrollment code",
            &self.enrollment.replace('-', ""),
        ));
        secrets.push(named("a board session", self.session));
        secrets.extend(self.track_tokens.iter().map(|t| named("a track token", t)));
        secrets
    }
}

/// One delivery day driven through `doorcode serve` and `doorcode handset`,
/// with attacks that carry codes and tokens in bodies, paths and headers.
/// Then no code, token or key may appear in the server's logs (text or
/// JSON, at trace level), its stdout, its metrics, the handset CLI's
/// output, or any file that DESIGN.md does not allow to hold it.
async fn day_on_real_processes(json_logs: bool) {
    let mut day = Day::start(json_logs);
    let enrollment = day.plan_and_enroll().await;
    let notices = day.wait_notices(3).await;
    let codes = Codes::of(&notices);
    let tried = day.at_the_doors(&codes);
    let (device_token, device_seed) = day.handset_secrets();
    day.probe_with_secrets(&codes, &device_token, &enrollment)
        .await;
    let track_tokens = day.open_customer_links(&notices).await;
    let (board, session) = day.open_board(&codes.c1).await;
    day.reissue_and_close().await;
    let admin = day.admin.clone();
    let (out, left) = day.finish().await;
    let secrets = Secrets {
        notices: &out.notices,
        tried: &tried,
        admin: &admin,
        device_token: &device_token,
        device_seed: &device_seed,
        enrollment: &enrollment,
        session: &session,
        track_tokens: &track_tokens,
    }
    .list();
    assert_logs_are_real(&out.logs, json_logs);
    assert_absent_from_outputs(&secrets, &out, &left.cli_output, &board);
    assert_absent_from_files(&secrets, &left);
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
