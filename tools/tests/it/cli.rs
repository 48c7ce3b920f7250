//! The `doorcode` binary: `serve` prints the admin token only on the first
//! start, logs JSON with `--json-logs`, and refuses a malformed code-key
//! without replacing it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::fleet::{handset, serve_refused};
use crate::support::free_port;

fn serve(dir: &std::path::Path, port: u16, json: bool) -> Child {
    let mut c = Command::new(env!("CARGO_BIN_EXE_doorcode"));
    c.args(["serve", "--data-dir"]).arg(dir).args([
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--time-zone",
        "Europe/Berlin",
    ]);
    if json {
        c.arg("--json-logs");
    }
    c.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Read stdout lines until the "listening" line.
fn stdout_until_listening(child: &mut Child) -> Vec<String> {
    let out = child.stdout.take().unwrap();
    let mut lines = Vec::new();
    for line in BufReader::new(out).lines() {
        let line = line.unwrap();
        let done = line.starts_with("doorcode listening on");
        lines.push(line);
        if done {
            break;
        }
    }
    lines
}

fn stop(mut child: Child) -> String {
    child.kill().unwrap();
    child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    err
}

#[test]
fn serve_prints_the_token_once_and_logs_json() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let mut c = serve(&data, port, false);
    let lines = stdout_until_listening(&mut c);
    assert_eq!(lines.len(), 2, "{lines:?}");
    let token = lines[0].rsplit(' ').next().unwrap().to_string();
    assert!(lines[0].starts_with("dispatch admin token (shown once"));
    assert!(token.len() >= 43);
    stop(c);
    let stored = std::fs::read_to_string(data.join("admin-token.sha256")).unwrap();
    assert!(!stored.contains(&token));

    let mut c = serve(&data, port, true);
    let lines = stdout_until_listening(&mut c);
    assert_eq!(lines.len(), 1, "no token on the second start: {lines:?}");
    // The dispatch token from the first start still works.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let status = rt.block_on(async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::new()
            .get(format!("http://127.0.0.1:{port}/v1/disputes"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    assert_eq!(status, 200);
    std::thread::sleep(Duration::from_millis(100));
    let err = stop(c);
    let json_lines: Vec<serde_json::Value> = err
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(!json_lines.is_empty(), "JSON log lines on stderr: {err}");
    assert!(
        json_lines
            .iter()
            .any(|l| l["fields"]["route"] == "/v1/disputes")
    );
    assert!(!err.contains(&token));
}

#[test]
fn malformed_code_key_is_refused_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("code-key"), "not hex\n").unwrap();
    let err = serve_refused(dir.path(), &[]);
    assert!(
        err.contains("code-key") && err.contains("never replaced"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("code-key")).unwrap(),
        "not hex\n"
    );
}

/// The code each parcel's notice carries (the `file:` channel), waiting for
/// the sender.
fn notice_codes(dir: &std::path::Path, n: usize) -> std::collections::BTreeMap<String, String> {
    for _ in 0..400 {
        let codes: std::collections::BTreeMap<String, String> = std::fs::read_dir(dir)
            .map(|r| r.filter_map(Result::ok).collect::<Vec<_>>())
            .unwrap_or_default()
            .iter()
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .filter_map(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .filter_map(|v| Some((v["parcel_id"].as_str()?.into(), v["code"].as_str()?.into())))
            .collect();
        if codes.len() >= n {
            return codes;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("expected {n} notices in {}", dir.display());
}

/// The code as a Spanish or English speaker reads it, digit by digit.
fn say(code: &str, words: [&str; 10]) -> Vec<String> {
    code.bytes()
        .map(|b| words[usize::from(b - b'0')].to_string())
        .collect()
}

const ES: [&str; 10] = [
    "cero", "uno", "dos", "tres", "cuatro", "cinco", "seis", "siete", "ocho", "nueve",
];
const EN: [&str; 10] = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
];

/// `doorcode handset` on a real SQLite file against a real server: a code
/// read aloud in Spanish with `--lang es` after the words and before them,
/// the same words without Spanish refused with a clear error and no try
/// counted, an unknown language refused by the argument parser, and
/// `resend` refused on the handset for a parcel it cannot help. (A resend
/// the depot accepts waits for the server's `POST /v1/parcels/{id}/resend`;
/// the client's side of it is tested against a fake in `core::sync`.)
#[test]
fn handset_cli_reads_codes_in_the_chosen_languages() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let db = dir.path().join("courier.db");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut server = Command::new(env!("CARGO_BIN_EXE_doorcode"))
        .args(["serve", "--data-dir"])
        .arg(&data)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--working-days", "mon,tue,wed,thu,fri,sat,sun"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = stdout_until_listening(&mut server);
    let admin = lines[0].rsplit(' ').next().unwrap().to_string();
    let today = chrono::Utc::now().date_naive().to_string();

    // Dispatch: three parcels that need a code, one route, one enrollment.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let enrollment = rt.block_on(async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::new();
        let post = |path: &str, body: serde_json::Value| {
            http.post(format!("{url}{path}"))
                .bearer_auth(&admin)
                .json(&body)
                .send()
        };
        let parcels: Vec<_> = ["P-ES", "P-EN", "P-MIX"]
            .iter()
            .map(|id| serde_json::json!({"parcel_id": id, "recipient": {"name": "R", "email": "r@example.com"},
                "address": "1 Calle Mayor", "value": 100, "currency": "EUR", "requires_code": true}))
            .collect();
        let r = post("/v1/parcels", serde_json::json!({ "parcels": parcels })).await.unwrap();
        assert_eq!(r.status(), 200);
        let r = post("/v1/routes", serde_json::json!({"route_id": "R-1", "courier_id": "C-1", "delivery_date": today,
            "stops": [{"stop_id": "S-1", "address": "1 Calle Mayor", "parcel_ids": ["P-ES", "P-EN", "P-MIX"]}]}))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let r = post("/v1/enrollments", serde_json::json!({"courier_id": "C-1"}))
            .await
            .unwrap();
        let v: serde_json::Value = r.json().await.unwrap();
        v["enrollment_code"].as_str().unwrap().to_string()
    });
    let (ok, _, err) = handset(&db, &["enroll", "--server", &url, "--code", &enrollment]);
    assert!(ok, "{err}");
    let (ok, out, err) = handset(&db, &["sync", "--date", &today]);
    assert!(ok, "{err}");
    // Progress on stderr, the report alone on stdout.
    assert!(
        err.contains(&format!("syncing {today}"))
            && err.contains("manifest revision 1 pulled (stops: 1, parcels: 3)"),
        "{err}"
    );
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["manifest"]["result"], "pulled");
    let codes = notice_codes(&data.join("notices"), 3);

    let verify =
        |pid: &str, words: Vec<String>, lang_before: Option<&str>, lang_after: Option<&str>| {
            let mut args: Vec<String> = vec!["verify".into(), pid.into()];
            if let Some(l) = lang_before {
                args.extend(["--lang".into(), l.into()]);
            }
            args.extend(words);
            if let Some(l) = lang_after {
                args.extend(["--lang".into(), l.into()]);
            }
            let argv: Vec<&str> = args.iter().map(String::as_str).collect();
            handset(&db, &argv)
        };
    let failed_tries = |pid: &str| -> u64 {
        let (ok, out, err) = handset(&db, &["stops"]);
        assert!(ok, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["parcels"].as_array().unwrap().iter())
            .find(|p| p["parcel_id"] == pid)
            .unwrap()["failed_tries"]
            .as_u64()
            .unwrap()
    };

    // Spanish words without Spanish chosen: refused, named, not a try, no digits shown.
    let (ok, out, err) = verify("P-ES", say(&codes["P-ES"], ES), None, None);
    assert!(!ok, "{out}");
    assert!(
        err.contains("Spanish") && err.contains("not among the languages"),
        "{err}"
    );
    assert!(!err.contains(&codes["P-ES"]) && !out.contains(&codes["P-ES"]));
    assert_eq!(failed_tries("P-ES"), 0);

    // `--lang es` after the words: read, checked online.
    let (ok, out, err) = verify("P-ES", say(&codes["P-ES"], ES), None, Some("es"));
    assert!(ok, "{err}");
    assert!(
        out.contains("\"accepted\"") && out.contains("\"online\""),
        "{out}"
    );

    // `--lang es,en` before the words, a customer mixing the two.
    let mut mixed = say(&codes["P-MIX"], ES);
    mixed[1] = EN[usize::from(codes["P-MIX"].as_bytes()[1] - b'0')].into();
    let (ok, out, err) = verify("P-MIX", mixed, Some("es,en"), None);
    assert!(ok, "{err}");
    assert!(out.contains("\"accepted\""), "{out}");

    // English only under `--lang es`: refused, no try; an unknown language is an argument error.
    let (ok, _, err) = verify("P-EN", say(&codes["P-EN"], EN), None, Some("es"));
    assert!(!ok && err.contains("English"), "{err}");
    assert_eq!(failed_tries("P-EN"), 0);
    let (ok, _, err) = verify("P-EN", say(&codes["P-EN"], EN), None, Some("nl"));
    assert!(!ok && err.contains("unknown language"), "{err}");
    let (ok, out, err) = verify("P-EN", say(&codes["P-EN"], EN), Some("en"), None);
    assert!(ok && out.contains("\"accepted\""), "{err}");

    // The next sync uploads the three deliveries and says so.
    let (ok, _, err) = handset(&db, &["sync", "--date", &today]);
    assert!(
        ok && err.contains("uploaded 0 of 3") && err.contains("uploaded 3 of 3"),
        "{err}"
    );

    // `resend`: refused on the handset where it cannot help, without asking.
    let (ok, _, err) = handset(&db, &["resend", "P-EN"]);
    assert!(!ok && err.contains("already has an outcome"), "{err}");
    let (ok, _, err) = handset(&db, &["resend", "P-NOPE"]);
    assert!(!ok && err.contains("not on any manifest"), "{err}");

    stop(server);
}
