//! The `doorcode` binary: `serve` prints the admin token only on the first
//! start, logs JSON with `--json-logs`, and refuses a malformed code-key
//! without replacing it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

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
    let out = Command::new(env!("CARGO_BIN_EXE_doorcode"))
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("code-key") && err.contains("never replaced"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("code-key")).unwrap(),
        "not hex\n"
    );
}
