//! The server's edges as a security review attacked them from outside
//! (issue 12; DESIGN "Input the server refuses" and "The edges of the
//! server"). One test per finding, over real HTTP; where the finding is about
//! the process (memory, slow clients, file modes, several nodes) against
//! spawned `doorcode serve` processes.

use super::{DAY, NOW, day, upload};
use crate::support::*;
use doorcode_core::b64;
use serde_json::{Value, json};
use std::io::BufRead as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

// ---------- a spawned `doorcode serve` ----------

/// A `doorcode serve` process on its own data dir; killed on drop.
struct Proc {
    child: Child,
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    admin: Option<String>,
    _lines: std::sync::mpsc::Receiver<String>,
}

impl Proc {
    /// Starts `doorcode serve --listen 127.0.0.1:0 --data-dir DATA EXTRA…`,
    /// through `sh -c 'umask 022; exec …'` so files would come out 0644 if
    /// the server left their modes to the umask.
    fn spawn(data: &Path, extra: &[&str]) -> Self {
        // The tests' reqwest clients need a crypto provider even when no
        // in-process server (which installs one) ran first.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let log = std::fs::File::create(data.with_extension("log")).unwrap();
        let mut child = Command::new("sh")
            .arg("-c")
            .arg("umask 022; exec \"$@\"")
            .arg("sh")
            .arg(env!("CARGO_BIN_EXE_doorcode"))
            .args([
                "serve",
                "--working-days",
                "mon-sun",
                "--listen",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(data)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let (mut admin, mut metrics_addr) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(data.with_extension("log")).unwrap_or_default();
                panic!("doorcode serve did not start:\n{log}");
            };
            if let Some(t) = line.strip_prefix("dispatch admin token (shown once, stored hashed): ")
            {
                admin = Some(t.trim().to_string());
            }
            if let Some(m) = line.strip_prefix("doorcode metrics on http://") {
                metrics_addr = Some(m.trim_end_matches("/metrics").parse().unwrap());
            }
            if let Some(u) = line.strip_prefix("doorcode listening on http://") {
                return Self {
                    child,
                    addr: u.trim().parse().unwrap(),
                    metrics_addr,
                    admin,
                    _lines: rx,
                };
            }
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn admin(&self) -> &str {
        self.admin
            .as_deref()
            .expect("first start prints the admin token")
    }

    /// Resident memory of the process, from /proc.
    fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        kb * 1024
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request on a fresh connection (`Connection: close`); (status, body).
async fn raw(addr: SocketAddr, request: &[u8]) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut out))
        .await
        .expect("the server answers")
        .unwrap();
    let status = std::str::from_utf8(out.get(9..12).unwrap_or_default())
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| out[i + 4..].to_vec())
        .unwrap_or_default();
    (status, body)
}

/// Reads one response (headers and a Content-Length body) from a
/// keep-alive connection; None if the server closed it.
async fn read_response(s: &mut TcpStream) -> Option<u16> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.ok()?;
    head.get(9..12)?.parse().ok()
}

/// Waits until the server closes `s` (EOF or reset); the time it took.
async fn closed_after(s: &mut TcpStream, started: Instant, limit: Duration) -> Option<Duration> {
    let mut b = [0u8; 64];
    let r = tokio::time::timeout(limit, async {
        loop {
            match s.read(&mut b).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    r.ok().map(|_| started.elapsed())
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

/// Every directory and file under `dir` (not `dir` itself).
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(tree(&p));
        }
        out.push(p);
    }
    out
}

fn metric(text: &str, prefix: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or(0)
}

async fn metrics_text(s: &Server) -> String {
    s.http
        .get(format!("{}/metrics", s.url))
        .bearer_auth(&s.admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

// ---------- memory exhaustion through metrics labels ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_unique_64kb_methods_grow_neither_memory_nor_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let p = Proc::spawn(&tmp.path().join("data"), &[]);
    let addr = p.addr;
    let send = move |i: usize| async move {
        // A unique 64 KiB method.
        let method = format!("X{i:06}{}", "M".repeat(64 * 1024 - 7));
        let req = format!("{method} /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        raw(addr, req.as_bytes()).await
    };
    // Warm up allocator and connection buffers, then measure.
    for i in 0..20 {
        let (st, _) = send(i).await;
        assert!((400..500).contains(&st), "{st}");
    }
    let before = p.rss_bytes();
    for i in 20..420 {
        let (st, _) = send(i).await;
        assert!(
            (400..500).contains(&st),
            "a method outside the routes is a 4xx: {st}"
        );
    }
    // Unique paths cannot add a label either (they are `unmatched`).
    for i in 0..100 {
        let req = format!(
            "GET /x{i}/{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            "p".repeat(16 * 1024)
        );
        let (st, _) = raw(p.addr, req.as_bytes()).await;
        assert_eq!(st, 404);
    }
    let grown = p.rss_bytes().saturating_sub(before);
    let http = reqwest::Client::new();
    let m = http
        .get(format!("{}/metrics", p.url()))
        .bearer_auth(p.admin())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    eprintln!(
        "RSS grew {} KiB over 400 unique 64 KiB methods and 100 unique 16 KiB paths; /metrics is {} bytes",
        grown / 1024,
        m.len()
    );
    assert!(grown < 20 * 1024 * 1024, "RSS grew {grown} bytes");
    assert!(m.len() < 1024 * 1024, "/metrics is {} bytes", m.len());
    assert!(!m.contains("MMMM"), "a method became a label");
    assert!(
        m.contains(
            "doorcode_http_requests_total{method=\"other\",route=\"/healthz\",status=\"405\"} 420"
        ),
        "odd methods are counted as `other`:\n{m}"
    );
    assert!(
        m.contains(
            "doorcode_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"} 100"
        ),
        "unknown paths are `unmatched`:\n{m}"
    );
    assert!(!m.contains("pppp"), "a path became a label");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_the_dispatch_token_except_on_the_metrics_listener() {
    let tmp = tempfile::tempdir().unwrap();
    let p = Proc::spawn(
        &tmp.path().join("data"),
        &["--metrics-listen", "127.0.0.1:0"],
    );
    let http = reqwest::Client::new();
    let get = |url: String, token: Option<&str>| {
        let mut r = http.get(url);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        async move {
            let r = r.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let public = format!("{}/metrics", p.url());
    for token in [None, Some(""), Some("not-a-token")] {
        let (st, body) = get(public.clone(), token).await;
        assert_eq!(st, 401, "{token:?}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"], "unauthorized");
        assert!(
            !body.contains("doorcode_"),
            "no metrics leak in the refusal"
        );
    }
    let (st, body) = get(public, Some(p.admin())).await;
    assert_eq!(st, 200);
    assert!(body.contains("doorcode_http_requests_total"));
    let scrape = p.metrics_addr.expect("--metrics-listen prints its address");
    let (st, body) = get(format!("http://{scrape}/metrics"), None).await;
    assert_eq!(st, 200);
    assert!(
        body.contains("doorcode_notice_outbox{state=\"pending\"}"),
        "{body}"
    );
    // Only metrics there: the API is not reachable through it.
    let (st, _) = get(format!("http://{scrape}/v1/disputes"), Some(p.admin())).await;
    assert_eq!(st, 404);
    let (st, _) = get(format!("http://{scrape}/track/x"), None).await;
    assert_eq!(st, 404);
}

// ---------- slow clients ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_header_is_cut_at_10_s_while_an_idle_keep_alive_stays_open() {
    let tmp = tempfile::tempdir().unwrap();
    let p = Proc::spawn(&tmp.path().join("data"), &[]);
    // An idle keep-alive connection that has done one request.
    let mut idle = TcpStream::connect(p.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut idle).await, Some(200));
    // The slow client: a request line, then one header byte a second, on
    // one connection; the other half of the socket watches for the close.
    let started = Instant::now();
    let slow = TcpStream::connect(p.addr).await.unwrap();
    let (mut rd, mut wr) = slow.into_split();
    wr.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let trickle = tokio::spawn(async move {
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if wr.write_all(b"a").await.is_err() {
                break;
            }
        }
    });
    let mut b = [0u8; 64];
    let cut = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match rd.read(&mut b).await {
                Ok(0) | Err(_) => return started.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("half-sent headers still held the connection after 30 s");
    trickle.abort();
    eprintln!("slow header cut after {cut:?}");
    assert!(
        cut >= Duration::from_millis(9_500),
        "cut too early ({cut:?}): the limit is 10 s from the first byte"
    );
    assert!(
        cut < Duration::from_secs(15),
        "cut after {cut:?}; the limit is 10 s"
    );
    // The idle connection (idle ~11 s by now) is still served: the header
    // timer does not run while a keep-alive connection waits.
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        read_response(&mut idle).await,
        Some(200),
        "an idle keep-alive must last 60 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_closed_after_10_s() {
    let tmp = tempfile::tempdir().unwrap();
    let p = Proc::spawn(&tmp.path().join("data"), &[]);
    let started = Instant::now();
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    let cut = closed_after(&mut s, started, Duration::from_secs(25))
        .await
        .expect("a connection that sends nothing is held open");
    eprintln!("silent connection closed after {cut:?}");
    assert!(cut >= Duration::from_millis(9_500), "{cut:?}");
    assert!(cut < Duration::from_secs(15), "{cut:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_is_closed_after_the_idle_limit() {
    // The limit is 60 s (Config default, checked below); shortened here so
    // the test does not wait a minute. The mechanism is the same.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), NOW);
    assert_eq!(cfg.idle_timeout, Duration::from_secs(60));
    assert_eq!(cfg.header_timeout, Duration::from_secs(10));
    assert_eq!(cfg.max_connections, 10_000);
    cfg.idle_timeout = Duration::from_secs(2);
    let s = start(cfg).await;
    let mut c = TcpStream::connect(s.handle.addr).await.unwrap();
    // Kept alive while in use: six requests 0.5 s apart (3 s > the limit).
    let mut idle_since = Instant::now();
    for i in 0..6 {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(read_response(&mut c).await, Some(200));
        idle_since = Instant::now();
    }
    let cut = closed_after(&mut c, idle_since, Duration::from_secs(10))
        .await
        .expect("an idle keep-alive connection was held open");
    assert!(
        cut >= Duration::from_millis(1_800),
        "closed after {cut:?} idle, limit 2 s"
    );
    s.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_caps_open_connections() {
    let tmp = tempfile::tempdir().unwrap();
    let p = Proc::spawn(&tmp.path().join("data"), &["--max-connections", "3"]);
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = TcpStream::connect(p.addr).await.unwrap();
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(read_response(&mut c).await, Some(200));
        held.push(c);
    }
    // The fourth waits in the backlog: no answer while three are open.
    let mut fourth = TcpStream::connect(p.addr).await.unwrap();
    fourth
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), read_response(&mut fourth))
            .await
            .is_err(),
        "a fourth connection was served beside three open ones"
    );
    drop(held.pop());
    let r = tokio::time::timeout(Duration::from_secs(5), read_response(&mut fourth)).await;
    assert_eq!(r.ok().flatten(), Some(200), "served once a slot frees");
}

// ---------- rate limits behind a proxy ----------

async fn track_status(s: &Server, xff: &str) -> u16 {
    s.http
        .get(format!("{}/v1/track/{}", s.url, "g".repeat(43)))
        .header("x-forwarded-for", xff)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_one_client_cannot_lock_out_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), NOW);
    cfg.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    let s = start(cfg).await;
    // The abuser exhausts its bucket, rotating a forged left-most entry;
    // the proxy appends the address it saw (the right-most entry).
    let mut limited = false;
    for i in 0..40 {
        if track_status(&s, &format!("198.51.100.{i}, 203.0.113.66")).await == 429 {
            limited = true;
        }
    }
    assert!(limited, "the abuser is limited");
    assert_eq!(
        track_status(&s, "10.9.9.9, 203.0.113.66").await,
        429,
        "forging entries left of the proxy's does not escape the limit"
    );
    // Every other customer behind the same proxy still gets answers.
    assert_eq!(track_status(&s, "203.0.113.77").await, 404);
    assert_eq!(track_status(&s, "2001:db8:7::1").await, 404);
    // The board sign-in limit keys on the same address.
    let login = |xff: &'static str| {
        s.http
            .post(format!("{}/board/login", s.url))
            .header("x-forwarded-for", xff)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("token=wrong")
            .send()
    };
    let mut login_limited = false;
    for _ in 0..15 {
        if login("203.0.113.66").await.unwrap().status() == 429 {
            login_limited = true;
        }
    }
    assert!(login_limited, "wrong sign-ins are limited");
    assert_ne!(login("203.0.113.77").await.unwrap().status(), 429);
    s.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_trusted_proxies_forwarded_for_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(config(dir.path(), NOW)).await;
    for i in 0..40 {
        track_status(&s, &format!("203.0.113.{i}")).await;
    }
    // A fresh spoofed address does not buy a fresh bucket.
    assert_eq!(track_status(&s, "192.0.2.200").await, 429);
    s.handle.shutdown().await;
}

// ---------- data directory modes ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_dir_is_private_even_when_it_existed_open_under_umask_022() {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    // A file an operator left world-readable: a stale notice.
    std::fs::create_dir(data.join("notices")).unwrap();
    std::fs::set_permissions(data.join("notices"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(data.join("notices/old.json"), b"{}").unwrap();
    std::fs::set_permissions(
        data.join("notices/old.json"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let check = |when: &str| {
        assert_eq!(mode(&data), 0o700, "{when}: the data dir");
        let entries = tree(&data);
        for p in &entries {
            let want = if p.is_dir() { 0o700 } else { 0o600 };
            assert_eq!(mode(p), want, "{when}: {}", p.display());
        }
        entries
    };
    {
        let p = Proc::spawn(&data, &[]);
        let http = reqwest::Client::new();
        let post = |path: &str, body: Value| {
            http.post(format!("{}{path}", p.url()))
                .bearer_auth(p.admin())
                .json(&body)
                .send()
        };
        let today = chrono::Utc::now().date_naive().to_string();
        let r = post("/v1/parcels", json!({"parcels": [{"parcel_id": "P-1", "recipient": {"name": "J. Doe", "email": "j@example.com"}, "address": "1 Main St", "value": 90, "currency": "EUR"}]}))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let r = post(
            "/v1/routes",
            json!({"route_id": "R-1", "courier_id": "C-1", "delivery_date": today,
            "stops": [{"stop_id": "S-1", "address": "1 Main St", "parcel_ids": ["P-1"]}]}),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 200);
        // The notice file is written by the sender.
        for _ in 0..200 {
            if std::fs::read_dir(data.join("notices")).unwrap().count() >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let entries = check("while serving");
        let names: Vec<String> = entries
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for must in [
            "doorcode.db",
            "doorcode.db-wal",
            "doorcode.db-shm",
            "code-key",
            "admin-token.sha256",
            "signing-key",
        ] {
            assert!(
                names.iter().any(|n| n == must),
                "{must} missing in {names:?}"
            );
        }
        assert!(
            std::fs::read_dir(data.join("notices")).unwrap().count() >= 2,
            "the route's notice was written"
        );
    }
    // A key rotation (keys/ and a .pub) and someone opening the database up:
    // the next start closes everything again.
    let out = Command::new("sh")
        .arg("-c")
        .arg("umask 022; exec \"$@\"")
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_doorcode"))
        .args(["rotate-key", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::set_permissions(
        data.join("doorcode.db"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let _p = Proc::spawn(&data, &[]);
    let entries = check("after a restart");
    assert!(
        entries
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "pub"))
    );
}

// ---------- input the server refuses ----------

fn parcel(id: &str, name: &str, email: Option<&str>, phone: Option<&str>) -> Value {
    let mut r = json!({"name": name});
    if let Some(e) = email {
        r["email"] = json!(e);
    }
    if let Some(p) = phone {
        r["phone"] = json!(p);
    }
    json!({"parcel_id": id, "recipient": r, "address": "1 Example Street", "value": 80, "currency": "EUR"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hijacked_names_lookalike_ids_and_foreign_addresses_are_refused_per_item() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(config(dir.path(), NOW)).await;
    let (st, v) = s
        .admin_post("/v1/parcels", json!({"parcels": [parcel("P-1", "J. Doe", Some("jdoe@example.com"), Some("+491701234567"))]}))
        .await;
    assert_eq!(
        (st, v["results"][0]["status"].as_str()),
        (200, Some("created")),
        "{v}"
    );
    let hijack = "J. Doe\n\nURGENT: your code has changed. Read it to the agent who calls you.\n";
    let cases: Vec<(Value, &str)> = vec![
        (parcel("P-1", hijack, None, None), "recipient.name"),
        (parcel("P-1", "J. Doe\r", None, None), "recipient.name"),
        (parcel("P-1", "J.\tDoe", None, None), "recipient.name"),
        (
            parcel("P-1", "J. Doe\u{2028}URGENT", None, None),
            "recipient.name",
        ),
        (
            parcel("P-1", "\u{202E}eoD .J", None, None),
            "recipient.name",
        ),
        (
            parcel("P-1", "\u{2066}J. Doe\u{2069}", None, None),
            "recipient.name",
        ),
        (
            parcel("P-1", &"a".repeat(201), None, None),
            "recipient.name",
        ),
        (parcel("P-1\u{202E}", "J. Doe", None, None), "parcel_id"),
        (parcel("P-1\u{200B}", "J. Doe", None, None), "parcel_id"),
        (parcel("Р-1", "J. Doe", None, None), "parcel_id"), // Cyrillic Р
        (parcel("P 1", "J. Doe", None, None), "parcel_id"),
        (
            parcel(&format!("P{}", "1".repeat(64)), "J. Doe", None, None),
            "parcel_id",
        ),
        (
            parcel("P-1", "J. Doe", Some("Depot<attacker@evil.test>"), None),
            "recipient.email",
        ),
        (
            parcel(
                "P-1",
                "J. Doe",
                Some("jdoe@example.com, attacker@evil.test"),
                None,
            ),
            "recipient.email",
        ),
        (
            parcel("P-1", "J. Doe", Some("jdoe@[192.0.2.1]"), None),
            "recipient.email",
        ),
        (
            parcel("P-1", "J. Doe", Some("jdoe@192.0.2.1"), None),
            "recipient.email",
        ),
        (
            parcel(
                "P-1",
                "J. Doe",
                Some("jdoe@example.com\r\nBcc: attacker@evil.test"),
                None,
            ),
            "recipient.email",
        ),
        (
            parcel("P-1", "J. Doe", None, Some("+49 170 1234567")),
            "recipient.phone",
        ),
        (
            parcel("P-1", "J. Doe", None, Some("+491701234567,+15550100")),
            "recipient.phone",
        ),
        (
            parcel("P-1", "J. Doe", None, Some("+1234567890123456")),
            "recipient.phone",
        ),
        (
            parcel("P-1", "J. Doe", None, Some("0049 170 1234567")),
            "recipient.phone",
        ),
    ];
    let batch: Vec<Value> = cases
        .iter()
        .map(|(p, _)| p.clone())
        .chain([parcel("P-2", "Ada Okafor", Some("ada@example.com"), None)])
        .collect();
    let (st, v) = s.admin_post("/v1/parcels", json!({"parcels": batch})).await;
    assert_eq!(st, 200, "{v}");
    let results = v["results"].as_array().unwrap();
    for (r, (p, field)) in results.iter().zip(&cases) {
        assert_eq!(r["status"], "rejected", "{p} -> {r}");
        let m = r["message"].as_str().unwrap();
        assert!(m.starts_with(field), "{p}: the reason names {field}: {m}");
    }
    assert_eq!(
        results.last().unwrap()["status"],
        "created",
        "good items still go in"
    );
    // Nothing stored changed.
    let (st, p1) = s.admin_get("/v1/parcels/P-1").await;
    assert_eq!(st, 200);
    assert_eq!(p1["recipient_name"], "J. Doe");
    for id in ["P-1\u{202E}", "Р-1"] {
        let (st, _) = s.admin_get(&format!("/v1/parcels/{}", urlencode(id))).await;
        assert_eq!(st, 404, "{id:?} was not stored");
    }
    // Routes, stops and enrollments: 422 with {error, message}.
    let route = |stop_id: &str, address: &str, recipient: Option<&str>, route_id: &str| {
        let mut stop = json!({"stop_id": stop_id, "address": address, "parcel_ids": ["P-1"]});
        if let Some(r) = recipient {
            stop["recipient"] = json!(r);
        }
        json!({"route_id": route_id, "courier_id": "C-1", "delivery_date": DAY, "stops": [stop]})
    };
    for body in [
        route("S-1", "1 Example Street\nYour code is below", None, "R-1"),
        route("S-1", "1 Example Street", Some("J. Doe\u{202E}"), "R-1"),
        route("S\u{200B}1", "1 Example Street", None, "R-1"),
        route("S-1", "1 Example Street", None, "R-1\u{2066}"),
    ] {
        let (st, v) = s.admin_post("/v1/routes", body.clone()).await;
        assert_eq!(st, 422, "{body}: {v}");
        assert!(v["error"].is_string() && v["message"].is_string(), "{v}");
    }
    let (_, p1) = s.admin_get("/v1/parcels/P-1").await;
    assert_eq!(p1["status"], "pending", "no route was saved");
    let (st, v) = s
        .admin_post("/v1/enrollments", json!({"courier_id": "C-1\u{202E}"}))
        .await;
    assert_eq!(st, 422, "{v}");
    // The notice of the good parcel begins with the name as uploaded, one line.
    let (st, _) = s
        .admin_post("/v1/routes", route("S-1", "1 Example Street", None, "R-1"))
        .await;
    assert_eq!(st, 200);
    let n = s.wait_notices(1).await;
    assert!(
        n[0]["body"]
            .as_str()
            .unwrap()
            .starts_with("Hello J. Doe,\n"),
        "{}",
        n[0]["body"]
    );
    s.handle.shutdown().await;
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

// ---------- webhooks and redirects ----------

/// A local HTTP sink: answers every request with `status` (and `Location`
/// when given) and records (method, path, body).
async fn sink(
    status: u16,
    location: Option<String>,
    delay: Duration,
) -> (
    SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<(String, String, String)>>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut c, _)) = listener.accept().await else {
                return;
            };
            let record = record.clone();
            let location = location.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let head_end = loop {
                    let Ok(n) = c.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let len: usize = head
                    .to_lowercase()
                    .lines()
                    .find_map(|l| {
                        l.strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap_or(0))
                    })
                    .unwrap_or(0);
                while buf.len() < head_end + len {
                    let Ok(n) = c.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let mut parts = head.split_whitespace();
                let method = parts.next().unwrap_or_default().to_string();
                let path = parts.next().unwrap_or_default().to_string();
                let body = String::from_utf8_lossy(&buf[head_end..]).to_string();
                record.lock().unwrap().push((method, path, body));
                tokio::time::sleep(delay).await;
                let loc = location
                    .map(|l| format!("Location: {l}\r\n"))
                    .unwrap_or_default();
                let resp = format!(
                    "HTTP/1.1 {status} X\r\n{loc}Content-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = c.write_all(resp.as_bytes()).await;
            });
        }
    });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_redirect_is_a_failed_send_and_is_never_followed() {
    for status in [307u16, 302, 301, 308] {
        let (thief, stolen) = sink(200, None, Duration::ZERO).await;
        let (gateway, posts) = sink(
            status,
            Some(format!("http://{thief}/steal")),
            Duration::ZERO,
        )
        .await;
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path(), NOW);
        cfg.notify = Some(format!("webhook:http://{gateway}/sms"));
        let s = start(cfg).await;
        let (st, _) = s
            .admin_post(
                "/v1/parcels",
                json!({"parcels": [parcel("P-1", "J. Doe", None, Some("+491701234567"))]}),
            )
            .await;
        assert_eq!(st, 200);
        let (st, v) = s
            .admin_post(
                "/v1/routes",
                json!({"route_id": "R-1", "courier_id": "C-1", "delivery_date": DAY,
            "stops": [{"stop_id": "S-1", "address": "1 Example Street", "parcel_ids": ["P-1"]}]}),
            )
            .await;
        assert_eq!(st, 200, "{v}");
        let mut m = String::new();
        for _ in 0..200 {
            m = metrics_text(&s).await;
            if metric(
                &m,
                "doorcode_notices_total{channel=\"webhook\",result=\"failed\"} ",
            ) >= 1
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(
            metric(
                &m,
                "doorcode_notices_total{channel=\"webhook\",result=\"failed\"} "
            ) >= 1,
            "{status}: the send counts as failed\n{m}"
        );
        assert_eq!(
            metric(
                &m,
                "doorcode_notices_total{channel=\"webhook\",result=\"sent\"} "
            ),
            0,
            "{status}"
        );
        assert_eq!(
            metric(&m, "doorcode_notice_outbox{state=\"sent\"} "),
            0,
            "{status}"
        );
        // Give a follow-up request time to happen, if the client made one.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            stolen.lock().unwrap().is_empty(),
            "{status}: the redirect was followed"
        );
        let posts = posts.lock().unwrap().clone();
        assert!(
            !posts.is_empty()
                && posts
                    .iter()
                    .all(|(m, p, b)| m == "POST" && p == "/sms" && !b.is_empty())
        );
        s.handle.shutdown().await;
    }
}

// ---------- weak device keys ----------

/// Small-order points (and a point not on the curve), base64url.
fn weak_keys() -> Vec<(&'static str, String)> {
    let hex = |h: &str| -> Vec<u8> {
        (0..h.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
            .collect()
    };
    vec![
        (
            "identity",
            "0100000000000000000000000000000000000000000000000000000000000000",
        ),
        (
            "order 2",
            "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        ),
        (
            "order 4",
            "0000000000000000000000000000000000000000000000000000000000000000",
        ),
        (
            "order 4, other sign",
            "0000000000000000000000000000000000000000000000000000000000000080",
        ),
        (
            "order 8",
            "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
        ),
        (
            "order 8, other",
            "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
        ),
        (
            "identity, y + p",
            "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        ),
        (
            "not on the curve",
            "0200000000000000000000000000000000000000000000000000000000000000",
        ),
    ]
    .into_iter()
    .map(|(n, h)| (n, b64::encode(&hex(h))))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_order_and_invalid_device_keys_are_refused_at_enrollment() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(config(dir.path(), NOW)).await;
    let (_, e) = s
        .admin_post("/v1/enrollments", json!({"courier_id": "C-1"}))
        .await;
    let code = e["enrollment_code"].as_str().unwrap();
    for (what, key) in weak_keys() {
        let (st, v) = s
            .post_as(
                "",
                "/v1/devices",
                json!({"enrollment_code": code, "device_public_key": key, "device_name": "phone"}),
            )
            .await;
        assert_eq!(st, 422, "{what}: {v}");
        assert_eq!(v["error"], "weak_public_key", "{what}");
    }
    // The refusals used nothing up: the code still enrolls a real key.
    let real = doorcode_core::envelope::SigningKey::generate("x").unwrap();
    let (st, v) = s
        .post_as("", "/v1/devices", json!({"enrollment_code": code, "device_public_key": real.public_key().public_b64(), "device_name": "phone"}))
        .await;
    assert_eq!(st, 200, "{v}");
    s.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_identity_key_forgery_is_rejected_even_for_a_device_stored_before_the_fix() {
    let (dir, mut t) = day().await;
    // A device enrolled before the check existed, with the identity point as its key.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let conn = rusqlite::Connection::open(dir.path().join("doorcode.db")).unwrap();
    conn.execute(
        "UPDATE devices SET public_key=?1 WHERE device_id=?2",
        rusqlite::params![b64::encode(&identity), t.a.device_id],
    )
    .unwrap();
    drop(conn);
    let door = super::door(&t.ma);
    let c = t.a.delivered(
        &door,
        "P-A1",
        1,
        &super::code("P-A1", 1),
        "2026-11-23T09:00:00Z",
    );
    let mut sig = [0u8; 64];
    sig[0] = 1; // R = identity, S = 0
    let forged = doorcode_core::envelope::Envelope {
        v: 1,
        kid: t.a.device_id.clone(),
        body: b64::encode(&serde_json::to_vec(&c).unwrap()),
        sig: b64::encode(&sig),
    };
    let res = upload(&t.s, &t.a, vec![json!(forged)]).await;
    assert_eq!(res[0]["status"], "rejected", "{}", res[0]);
    assert_eq!(res[0]["permanent"], true);
    assert_eq!(super::status(&t.s, "P-A1").await, "scheduled");
    assert_eq!(
        super::rows(dir.path(), "SELECT count(*) FROM confirmations"),
        0
    );
    t.s.handle.shutdown().await;
}

// ---------- enrollment guessing ----------

async fn enroll_at(
    http: reqwest::Client,
    url: String,
    code: String,
    xff: &'static str,
) -> (u16, Value) {
    let key = doorcode_core::envelope::SigningKey::generate("x").unwrap();
    let r = http
        .post(format!("{url}/v1/devices"))
        .header("x-forwarded-for", xff)
        .json(&json!({"enrollment_code": code, "device_public_key": key.public_key().public_b64(), "device_name": "phone"}))
        .send()
        .await
        .unwrap();
    let st = r.status().as_u16();
    if st == 429 {
        assert!(r.headers().contains_key("retry-after"));
    }
    (st, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollment_guessing_gets_429_after_10_failures_per_client_and_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), NOW);
    cfg.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    let s = start(cfg).await;
    let enroll =
        |code: String, xff: &'static str| enroll_at(s.http.clone(), s.url.clone(), code, xff);
    // Successful enrollments never count.
    for _ in 0..12 {
        let (_, e) = s
            .admin_post("/v1/enrollments", json!({"courier_id": "C-1"}))
            .await;
        let (st, v) = enroll(
            e["enrollment_code"].as_str().unwrap().to_string(),
            "203.0.113.5",
        )
        .await;
        assert_eq!(st, 200, "{v}");
    }
    // 40 guesses at once: at most 10 are looked at.
    let tasks: Vec<_> = (0..40)
        .map(|i| tokio::spawn(enroll(format!("AAAA-BBBB-{i:04}"), "203.0.113.5")))
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap().0);
    }
    let looked_at = answers.iter().filter(|st| **st == 403).count();
    let limited = answers.iter().filter(|st| **st == 429).count();
    assert_eq!(looked_at + limited, 40, "{answers:?}");
    // 10, and one more if 6 s passed (a slow machine).
    assert!(
        (10..=11).contains(&looked_at),
        "{looked_at} guesses were checked: {answers:?}"
    );
    // Even the right code is not looked at now, from this client…
    let (_, e) = s
        .admin_post("/v1/enrollments", json!({"courier_id": "C-1"}))
        .await;
    let good = e["enrollment_code"].as_str().unwrap().to_string();
    let (st, v) = enroll(good.clone(), "203.0.113.5").await;
    assert_eq!(st, 429, "{v}");
    assert_eq!(v["error"], "rate_limited");
    // …while another courier behind the same proxy enrolls.
    let (st, v) = enroll(good, "203.0.113.6").await;
    assert_eq!(st, 200, "{v}");
    let m = metrics_text(&s).await;
    assert_eq!(
        metric(&m, "doorcode_enrollment_failures_total "),
        looked_at as u64,
        "{m}"
    );
    assert!(
        metric(&m, "doorcode_rate_limited_total{limit=\"enrollment\"} ") > limited as u64,
        "{m}"
    );
    s.handle.shutdown().await;
}

// ---------- duplicate notices across nodes ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_and_a_slow_gateway_send_each_notice_once() {
    let Some(pg) = crate::support::pg::fresh_schema("attacks_lease").await else {
        return;
    };
    two_nodes_slow_gateway(Some(&pg.url)).await;
    pg.drop_schema().await;
}

/// The same on one SQLite file shared by two processes (the claim and its
/// renewal are the SQLite backend's own SQL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_sqlite_file_and_a_slow_gateway_send_each_notice_once() {
    two_nodes_slow_gateway(None).await;
}

async fn two_nodes_slow_gateway(database: Option<&str>) {
    // A gateway that takes 1 s per message; the claim lasts 3 s. Without
    // renewal the second node takes over the rest of the batch after 3 s.
    let (gateway, posts) = sink(200, None, Duration::from_secs(1)).await;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let hook = format!("webhook:http://{gateway}/sms");
    let mut args = vec!["--notify", hook.as_str(), "--notice-lease-secs", "3"];
    if let Some(db) = database {
        args.extend(["--database", db]);
    }
    let a = Proc::spawn(&data, &args);
    let b = Proc::spawn(&data, &args);
    let http = reqwest::Client::new();
    let today = chrono::Utc::now().date_naive().to_string();
    const N: usize = 8;
    let parcels: Vec<Value> = (0..N)
        .map(|i| {
            parcel(
                &format!("P-{i}"),
                "J. Doe",
                None,
                Some(&format!("+4917012345{i:02}")),
            )
        })
        .collect();
    let post = |path: &str, body: Value| {
        http.post(format!("{}{path}", a.url()))
            .bearer_auth(a.admin())
            .json(&body)
            .send()
    };
    assert_eq!(
        post("/v1/parcels", json!({"parcels": parcels}))
            .await
            .unwrap()
            .status(),
        200
    );
    let ids: Vec<String> = (0..N).map(|i| format!("P-{i}")).collect();
    let r = post(
        "/v1/routes",
        json!({"route_id": "R-1", "courier_id": "C-1", "delivery_date": today,
        "stops": [{"stop_id": "S-1", "address": "1 Example Street", "parcel_ids": ids}]}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(60);
    while posts.lock().unwrap().len() < N && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Longer than a lease more, for a late duplicate to show up.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let posts = posts.lock().unwrap().clone();
    let mut per_parcel = std::collections::HashMap::new();
    for (_, _, body) in &posts {
        let v: Value = serde_json::from_str(body).unwrap();
        *per_parcel
            .entry(v["parcel_id"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    assert_eq!(per_parcel.len(), N, "{per_parcel:?}");
    assert!(
        per_parcel.values().all(|n| *n == 1),
        "notices sent twice: {per_parcel:?}"
    );
    assert_eq!(posts.len(), N);
    drop((a, b));
}
