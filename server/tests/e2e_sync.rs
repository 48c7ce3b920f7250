//! End to end: real `doorcode serve` processes on loopback, handsets on the
//! real core over real HTTP, through a proxy that drops, delays, resets and
//! truncates, with servers and handsets killed mid-flight. In every case each
//! confirmation reaches the server exactly once in effect and none is lost.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::{NaiveDate, Utc};
use doorcode_core::codes::{self, CodeKey};
use doorcode_core::confirmation::FailReason;
use doorcode_core::handset::Handset;
use doorcode_core::secrets::FileSecretStore;
use doorcode_core::store::{ParcelState, VerifyOutcome};
use doorcode_core::sync::{ManifestSync, SyncClient, SyncConfig};
use doorcode_server::netsim::{Faults, Mode, Proxy};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CODE_KEY: [u8; 32] = [0x42; 32];

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `doorcode serve` process; killed with SIGKILL on drop.
struct ServerProc {
    child: Child,
    port: u16,
}

impl ServerProc {
    /// Starts (or restarts) a server on `dir`, returning the admin token on first start.
    fn spawn(dir: &Path, port: u16) -> (Self, Option<String>) {
        if !dir.join("code-key").exists() {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(
                dir.join("code-key"),
                CodeKey::from_bytes(CODE_KEY).to_file_text(),
            )
            .unwrap();
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_doorcode"))
            .args([
                "serve",
                "--working-days",
                "mon-sun",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut token = None;
        for line in BufReader::new(child.stdout.take().unwrap()).lines() {
            let line = line.unwrap();
            if let Some(t) = line
                .split(": ")
                .nth(1)
                .filter(|_| line.starts_with("dispatch admin token"))
            {
                token = Some(t.trim().to_string());
            }
            if line.starts_with("doorcode listening on") {
                break;
            }
        }
        (Self { child, port }, token)
    }

    fn addr(&self) -> std::net::SocketAddr {
        format!("127.0.0.1:{}", self.port).parse().unwrap()
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

struct Admin {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Admin {
    fn new(port: u16, token: String) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Self {
            http: reqwest::Client::new(),
            base: format!("http://127.0.0.1:{port}"),
            token,
        }
    }
    async fn call(&self, req: reqwest::RequestBuilder, path: &str) -> Value {
        let r = req.bearer_auth(&self.token).send().await.unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().await.unwrap()
    }
    async fn post(&self, path: &str, body: Value) -> Value {
        self.call(
            self.http.post(format!("{}{path}", self.base)).json(&body),
            path,
        )
        .await
    }
    async fn get(&self, path: &str) -> Value {
        self.call(self.http.get(format!("{}{path}", self.base)), path)
            .await
    }
    async fn metric(&self, name: &str) -> u64 {
        let text = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    }
}

fn today() -> NaiveDate {
    Utc::now().date_naive()
}

/// Parcels for `couriers` routes of `per` one-parcel stops; every third needs no code.
async fn plan_day(admin: &Admin, couriers: usize, per: usize) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for c in 0..couriers {
        let ids: Vec<String> = (0..per).map(|i| format!("E{c}-{i:04}")).collect();
        let parcels: Vec<Value> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                json!({"parcel_id": id, "recipient": {"name": format!("R {id}"), "email": "r@example.invalid"},
                       "address": format!("{i} Test Road"), "value": 100, "currency": "EUR", "requires_code": i % 3 != 0})
            })
            .collect();
        for chunk in parcels.chunks(500) {
            admin.post("/v1/parcels", json!({ "parcels": chunk })).await;
        }
        let stops: Vec<Value> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| json!({"stop_id": format!("S{i:04}"), "address": format!("{i} Test Road"), "parcel_ids": [id]}))
            .collect();
        let courier = format!("C{c}");
        admin.post("/v1/routes", json!({"route_id": format!("R{c}"), "courier_id": courier, "delivery_date": today(), "stops": stops})).await;
        out.push((courier, ids));
    }
    out
}

/// An in-process handset enrolled through `server_url` (usually a proxy).
async fn enrolled(
    admin: &Admin,
    dir: &Path,
    courier: &str,
    server_url: &str,
    cfg: SyncConfig,
) -> SyncClient {
    let db = dir.join(format!("{courier}.db"));
    let secrets = FileSecretStore::new(dir.join(format!("{courier}.db.secrets"))).unwrap();
    let h = Arc::new(Handset::open(&db, Arc::new(secrets)).unwrap());
    let client = SyncClient::with_config(h, cfg).unwrap();
    let code = admin
        .post("/v1/enrollments", json!({"courier_id": courier}))
        .await;
    client
        .enroll(
            server_url,
            code["enrollment_code"].as_str().unwrap(),
            courier,
        )
        .await
        .unwrap();
    client
}

/// Syncs until the manifest is held, through whatever the link does.
async fn pull_until_held(c: &SyncClient) {
    for _ in 0..200 {
        if let Ok(r) = c.sync(Some(today())).await {
            if matches!(
                r.manifest,
                ManifestSync::Pulled { .. } | ManifestSync::Unchanged { revision: Some(_) }
            ) {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the manifest never arrived");
}

/// Records an outcome for every parcel offline: most delivered with the
/// customer's code, every seventh absent. Returns parcel -> expected status.
fn work_the_day(h: &Handset) -> HashMap<String, &'static str> {
    let key = CodeKey::from_bytes(CODE_KEY);
    let mut expect = HashMap::new();
    for (i, p) in h
        .stops()
        .unwrap()
        .into_iter()
        .flat_map(|s| s.parcels)
        .enumerate()
    {
        if i % 7 == 3 {
            h.fail(&p.parcel_id, FailReason::CustomerAbsent).unwrap();
            expect.insert(p.parcel_id, "failed");
        } else if p.requires_code {
            let code = codes::derive_code(&key, &p.parcel_id, today(), p.attempt, 6).unwrap();
            let out = h.verify(&p.parcel_id, code.expose()).unwrap();
            assert!(matches!(out, VerifyOutcome::Accepted { .. }), "{out:?}");
            expect.insert(p.parcel_id, "delivered");
        } else {
            h.deliver(&p.parcel_id).unwrap();
            expect.insert(p.parcel_id, "delivered");
        }
    }
    expect
}

/// Syncs until nothing is pending; returns (accepted, duplicates) as the handset saw them.
async fn upload_all(c: &SyncClient, deadline: Duration) -> (u32, u32) {
    let start = Instant::now();
    let (mut acc, mut dup) = (0, 0);
    loop {
        match c.sync(Some(today())).await {
            Ok(r) => {
                acc += r.uploaded;
                dup += r.duplicates;
                assert_eq!(r.rejected, 0, "a confirmation was rejected: {r:?}");
                if r.pending == 0 {
                    return (acc, dup);
                }
            }
            Err(e) => assert!(e.is_transient(), "sync failed for good: {e}"),
        }
        assert!(
            start.elapsed() < deadline,
            "uploads did not finish in {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The server's view: every parcel in its expected state with exactly one
/// outcome event (each accepted confirmation adds one, so a double count
/// shows), nothing disputed or reused. Survives server restarts, unlike metrics.
async fn assert_exactly_once(admin: &Admin, expect: &HashMap<String, &'static str>) {
    for (pid, want) in expect {
        let v = admin.get(&format!("/v1/parcels/{pid}")).await;
        assert_eq!(v["status"].as_str(), Some(*want), "{pid}: {v}");
        let outcomes = v["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| {
                matches!(
                    e["kind"].as_str(),
                    Some("delivered" | "failed" | "disputed")
                )
            })
            .count();
        assert_eq!(outcomes, 1, "{pid} was counted {outcomes} times: {v}");
    }
    let d = admin.get("/v1/disputes").await;
    assert_eq!(d["disputes"].as_array().unwrap().len(), 0, "{d}");
    let kinds: Vec<&str> = d["signals"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["kind"].as_str())
        .collect();
    assert!(
        !kinds.contains(&"seq_reuse") && !kinds.contains(&"seq_gap"),
        "{kinds:?}"
    );
}

fn fast_cfg() -> SyncConfig {
    SyncConfig {
        request_timeout: Duration::from_secs(5),
        verify_timeout: Duration::from_millis(500),
        batch_size: 50,
        tries_per_request: 2,
        backoff_base: Duration::from_millis(5),
        backoff_max: Duration::from_millis(100),
        reuse_connections: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_day_then_reconnect() {
    let dir = tempfile::tempdir().unwrap();
    let (srv, token) = ServerProc::spawn(&dir.path().join("server"), free_port());
    let admin = Admin::new(srv.port, token.unwrap());
    let plan = plan_day(&admin, 2, 60).await;
    let mut expect = HashMap::new();
    let mut clients = Vec::new();
    for (courier, _) in &plan {
        let proxy = Proxy::start(srv.addr(), 1).await.unwrap();
        let c = enrolled(
            &admin,
            dir.path(),
            courier,
            &proxy.url(),
            SyncConfig {
                reuse_connections: true,
                ..fast_cfg()
            },
        )
        .await;
        pull_until_held(&c).await;
        proxy.set_mode(Mode::Offline);
        // At the door: the sync client tries online, the link is dead, it checks offline.
        let key = CodeKey::from_bytes(CODE_KEY);
        for p in c
            .handset()
            .stops()
            .unwrap()
            .into_iter()
            .flat_map(|s| s.parcels)
        {
            if p.requires_code {
                let code = codes::derive_code(&key, &p.parcel_id, today(), 1, 6).unwrap();
                let out = c.verify(&p.parcel_id, code.expose()).await.unwrap();
                assert!(
                    matches!(
                        out,
                        VerifyOutcome::Accepted {
                            verified: doorcode_core::confirmation::Verified::Offline,
                            ..
                        }
                    ),
                    "{out:?}"
                );
                expect.insert(p.parcel_id, "delivered");
            } else {
                c.handset().fail(&p.parcel_id, FailReason::Refused).unwrap();
                expect.insert(p.parcel_id, "failed");
            }
        }
        let offline = c.sync(Some(today())).await.unwrap();
        assert!(
            !offline.online && offline.pending == 60 && offline.next_retry_ms.is_some(),
            "{offline:?}"
        );
        clients.push((proxy, c));
    }
    for (proxy, c) in &clients {
        proxy.set_mode(Mode::Pass);
        let (acc, dup) = upload_all(c, Duration::from_secs(30)).await;
        assert_eq!((acc, dup), (60, 0));
        assert_eq!(c.handset().status().unwrap().parcels_pending, 0);
        assert!(
            c.handset()
                .stops()
                .unwrap()
                .iter()
                .flat_map(|s| &s.parcels)
                .all(|p| p.state != ParcelState::Pending)
        );
    }
    assert_exactly_once(&admin, &expect).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flaky_link_loses_nothing_over_1000_confirmations() {
    let dir = tempfile::tempdir().unwrap();
    let (srv, token) = ServerProc::spawn(&dir.path().join("server"), free_port());
    let admin = Admin::new(srv.port, token.unwrap());
    let plan = plan_day(&admin, 4, 250).await;
    let proxy = Proxy::start(srv.addr(), 0xfa17).await.unwrap();
    let mut expect = HashMap::new();
    let mut clients = Vec::new();
    for (courier, _) in &plan {
        let c = enrolled(
            &admin,
            dir.path(),
            courier,
            &proxy.url(),
            SyncConfig {
                batch_size: 20,
                ..fast_cfg()
            },
        )
        .await;
        clients.push(c);
    }
    proxy.set_mode(Mode::Faulty(Faults {
        drop_pct: 10,
        unavailable_pct: 10,
        reset_after_request_pct: 15,
        truncate_pct: 10,
        max_delay_ms: 20,
    }));
    for c in &clients {
        pull_until_held(c).await;
        expect.extend(work_the_day(c.handset()));
    }
    assert_eq!(expect.len(), 1000);
    let uploads = clients
        .iter()
        .map(|c| upload_all(c, Duration::from_secs(240)));
    let results = futures_join_all(uploads).await;
    let (acc, dup) = results.iter().fold((0, 0), |(a, d), (x, y)| (a + x, d + y));
    let [conns, dropped, unavailable, resets, truncated, _] = proxy.stats().snapshot();
    eprintln!(
        "flaky link: {conns} connections, {dropped} dropped, {unavailable} 503s, {resets} resets after the server answered, \
         {truncated} truncated; handsets saw {acc} accepted + {dup} duplicates for 1000 confirmations"
    );
    assert!(
        dropped > 0 && unavailable > 0 && resets > 0 && truncated > 0,
        "every fault happened"
    );
    assert!(acc + dup >= 1000);
    proxy.set_mode(Mode::Pass);
    assert_exactly_once(&admin, &expect).await;
    // No restart here, so the server's counter must say exactly 1000 too.
    assert_eq!(
        admin
            .metric("doorcode_confirmations_total{status=\"accepted\"}")
            .await,
        1000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_and_restarted_mid_upload() {
    let dir = tempfile::tempdir().unwrap();
    let sdir = dir.path().join("server");
    let port = free_port();
    let (mut srv, token) = ServerProc::spawn(&sdir, port);
    let admin = Admin::new(port, token.unwrap());
    let plan = plan_day(&admin, 2, 500).await;
    let mut expect = HashMap::new();
    let mut clients = Vec::new();
    let cfg = SyncConfig {
        batch_size: 10,
        ..fast_cfg()
    };
    for (courier, _) in &plan {
        let c = Arc::new(
            enrolled(
                &admin,
                dir.path(),
                courier,
                &format!("http://127.0.0.1:{port}"),
                cfg.clone(),
            )
            .await,
        );
        pull_until_held(&c).await;
        expect.extend(work_the_day(c.handset()));
        clients.push(c);
    }
    assert_eq!(expect.len(), 1000);
    let tasks: Vec<_> = clients
        .iter()
        .map(|c| {
            let c = c.clone();
            tokio::spawn(async move { upload_all(&c, Duration::from_secs(240)).await })
        })
        .collect();
    // Kill the server while batches are in flight, twice, and bring it back.
    for round in 0..2 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let pending: u32 = clients
            .iter()
            .map(|c| c.handset().status().unwrap().outbox_pending)
            .sum();
        srv.kill9();
        eprintln!("restart {round}: killed the server with {pending} confirmations pending");
        tokio::time::sleep(Duration::from_millis(300)).await;
        srv = ServerProc::spawn(&sdir, port).0;
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_exactly_once(&admin, &expect).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handset_process_killed_mid_sync() {
    let dir = tempfile::tempdir().unwrap();
    let (srv, token) = ServerProc::spawn(&dir.path().join("server"), free_port());
    let admin = Admin::new(srv.port, token.unwrap());
    let plan = plan_day(&admin, 1, 1000).await;
    // A slow link, so a sync takes long enough to be killed in the middle.
    let proxy = Proxy::start(srv.addr(), 7).await.unwrap();
    let courier = &plan[0].0;
    let db: PathBuf = dir.path().join(format!("{courier}.db"));
    let expect = {
        let c = enrolled(&admin, dir.path(), courier, &proxy.url(), fast_cfg()).await;
        pull_until_held(&c).await;
        work_the_day(c.handset())
    };
    assert_eq!(expect.len(), 1000);
    proxy.set_mode(Mode::Faulty(Faults {
        max_delay_ms: 20,
        ..Faults::default()
    }));
    // Kill each sync process once it has visibly uploaded something (the
    // outbox shrank), a random few milliseconds later: always mid-upload,
    // whatever the machine's speed.
    let pending = |db: &Path| -> u64 {
        let c = rusqlite::Connection::open(db).unwrap();
        c.query_row(
            "SELECT COUNT(*) FROM outbox WHERE status = 'pending'",
            [],
            |r| r.get(0),
        )
        .unwrap()
    };
    let mut kills = 0;
    let mut finished_alone = 0;
    for i in 0..25u64 {
        let before = pending(&db);
        if before == 0 {
            break;
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_doorcode"))
            .args(["handset", "--db"])
            .arg(&db)
            .args(["sync", "--batch-size", "20", "--date", &today().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        loop {
            if child.try_wait().unwrap().is_some() {
                finished_alone += 1;
                break;
            }
            if pending(&db) < before {
                tokio::time::sleep(Duration::from_millis((i * 7) % 25)).await;
                if child.try_wait().unwrap().is_none() {
                    child.kill().unwrap();
                    kills += 1;
                }
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "a sync made no progress in 30 s"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        child.wait().unwrap();
    }
    // The last sync runs to the end in a process of its own.
    let out = Command::new(env!("CARGO_BIN_EXE_doorcode"))
        .args(["handset", "--db"])
        .arg(&db)
        .args(["status"])
        .output()
        .unwrap();
    let pending_before: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut rounds = 0;
    loop {
        let out = Command::new(env!("CARGO_BIN_EXE_doorcode"))
            .args(["handset", "--db"])
            .arg(&db)
            .args(["sync", "--date", &today().to_string()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r: Value = serde_json::from_slice(&out.stdout).unwrap();
        rounds += 1;
        if r["pending"] == 0 {
            break;
        }
        assert!(rounds < 50, "sync never finished: {r}");
    }
    eprintln!(
        "handset killed {kills} times mid-upload ({finished_alone} syncs finished first); {} still pending after the kills; {rounds} final syncs",
        pending_before["status"]["outbox_pending"]
    );
    assert!(
        kills >= 10,
        "only {kills} syncs were still running when killed"
    );
    let left = pending_before["status"]["outbox_pending"].as_u64().unwrap();
    assert!(
        left < 1000,
        "no killed sync got any upload through; the kills were not mid-upload"
    );
    assert_exactly_once(&admin, &expect).await;
}

/// Runs futures concurrently on this task (no extra dependency).
async fn futures_join_all<F: std::future::Future>(fs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let handles: Vec<_> = fs.map(Box::pin).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await);
    }
    out
}
