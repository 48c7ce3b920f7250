//! Real processes for the end-to-end tests: a `doorcode serve` process that
//! can be killed with SIGKILL and restarted on the same data, an admin client,
//! a day planned through the admin API, handsets on the real core, and the
//! server-side check that every confirmation counted exactly once.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::{NaiveDate, Utc};
use doorcode_core::codes::{self, CodeKey};
use doorcode_core::confirmation::FailReason;
use doorcode_core::dispatch::DispatchClient;
use doorcode_core::handset::Handset;
use doorcode_core::secrets::FileSecretStore;
use doorcode_core::store::VerifyOutcome;
use doorcode_core::sync::{ManifestSync, SyncClient, SyncConfig};
use doorcode_core::wire::{ParcelIn, Recipient, RouteIn, SignalKind, StopIn};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const CODE_KEY: [u8; 32] = [0x42; 32];

pub use crate::support::free_port;

/// How to start a `doorcode serve` (every day a working day).
pub struct ServeOpts<'a> {
    /// `--listen`; port 0 takes a free one (read back from its output).
    pub listen: String,
    pub extra: &'a [&'a str],
    pub rust_log: &'a str,
    /// Where stderr (the logs) goes; default `<data>.log`.
    pub log: Option<&'a Path>,
    /// Through `sh -c 'umask 022; exec …'`, so files would come out 0644 if
    /// the server left their modes to the umask.
    pub umask_022: bool,
}

impl Default for ServeOpts<'_> {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:0".into(),
            extra: &[],
            rust_log: "info",
            log: None,
            umask_022: false,
        }
    }
}

/// The one way the tests start `doorcode serve`; killed with SIGKILL on drop.
pub struct Serve {
    child: Child,
    pub addr: std::net::SocketAddr,
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Printed on the first start of a data dir only.
    pub admin: Option<String>,
    /// What it printed on stdout before listening, but the token line.
    pub stdout: Vec<String>,
    _lines: std::sync::mpsc::Receiver<String>,
}

impl Serve {
    /// `doorcode serve --data-dir DATA EXTRA…` on a free port.
    pub fn spawn(data: &Path, extra: &[&str]) -> Self {
        Self::start(
            data,
            &ServeOpts {
                extra,
                ..ServeOpts::default()
            },
        )
    }

    pub fn start(data: &Path, o: &ServeOpts<'_>) -> Self {
        // The tests' reqwest clients need a crypto provider even when no
        // in-process server (which installs one) ran first.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let log_path = o
            .log
            .map_or_else(|| data.with_extension("log"), Path::to_path_buf);
        let log = std::fs::File::create(&log_path).unwrap();
        let bin = env!("CARGO_BIN_EXE_doorcode");
        let mut cmd = if o.umask_022 {
            let mut c = Command::new("sh");
            c.args(["-c", "umask 022; exec \"$@\"", "sh", bin]);
            c
        } else {
            Command::new(bin)
        };
        let mut child = cmd
            .args(["serve", "--working-days", "mon-sun", "--listen", &o.listen])
            .arg("--data-dir")
            .arg(data)
            .args(o.extra)
            .env("RUST_LOG", o.rust_log)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let (mut admin, mut metrics_addr, mut stdout) = (None, None, Vec::new());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                panic!("doorcode serve did not start:\n{log}");
            };
            if let Some(t) = line.strip_prefix("dispatch admin token (shown once, stored hashed): ")
            {
                admin = Some(t.trim().to_string());
                continue;
            }
            if let Some(m) = line.strip_prefix("doorcode metrics on http://") {
                metrics_addr = Some(m.trim_end_matches("/metrics").parse().unwrap());
            }
            let listening = line
                .strip_prefix("doorcode listening on http://")
                .map(|u| u.trim().parse().unwrap());
            stdout.push(line);
            if let Some(addr) = listening {
                return Self {
                    child,
                    addr,
                    metrics_addr,
                    admin,
                    stdout,
                    _lines: rx,
                };
            }
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn admin(&self) -> &str {
        self.admin
            .as_deref()
            .expect("first start prints the admin token")
    }

    /// A dispatch API POST with the admin token, sent.
    pub async fn admin_post(&self, path: &str, body: serde_json::Value) -> reqwest::Response {
        reqwest::Client::new()
            .post(format!("{}{path}", self.url()))
            .bearer_auth(self.admin())
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// Resident memory of the process, from /proc.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        kb * 1024
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// `doorcode serve --database DB EXTRA…` on `data`, one node of several on
/// one database, its log in `log_dir/NAME.log`.
pub fn db_node(data: &Path, db: &str, log_dir: &Path, name: &str, extra: &[&str]) -> Serve {
    let log = log_dir.join(format!("{name}.log"));
    let mut args = vec!["--database", db];
    args.extend_from_slice(extra);
    Serve::start(
        data,
        &ServeOpts {
            extra: &args,
            log: Some(&log),
            ..ServeOpts::default()
        },
    )
}

/// A new handset of `courier`: an enrollment code from dispatch at
/// `enroll_at`, then the device's enrollment at `device_at` (node base
/// URLs, the same or not); the device as answered.
pub async fn enroll_on(
    http: &reqwest::Client,
    (enroll_at, device_at): (&str, &str),
    admin: &str,
    courier: &str,
    name: &str,
) -> serde_json::Value {
    let e: serde_json::Value = http
        .post(format!("{enroll_at}/v1/enrollments"))
        .bearer_auth(admin)
        .json(&serde_json::json!({"courier_id": courier}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = doorcode_core::envelope::SigningKey::generate(name).unwrap();
    http.post(format!("{device_at}/v1/devices"))
        .json(&serde_json::json!({"enrollment_code": e["enrollment_code"], "device_public_key": key.public_key().public_b64(), "device_name": name}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Two nodes on one fresh PostgreSQL schema and one data dir (the same
/// keys and admin token), started A then B with `extra`.
pub struct TwoDbNodes {
    pub pg: crate::support::pg::PgSchema,
    pub a: Serve,
    pub b: Serve,
    /// The fleet's admin token (A printed it; B, on the same data dir, did not).
    pub admin: String,
    pub tmp: tempfile::TempDir,
}

impl TwoDbNodes {
    /// None without a reachable PostgreSQL, as [`crate::support::pg::fresh_schema`].
    pub async fn start(test: &str, extra: &[&str]) -> Option<Self> {
        let pg = crate::support::pg::fresh_schema(test).await?;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let db = pg.url_with("pool_size=4");
        let a = db_node(dir, &db, dir, "node-a", extra);
        let admin = a.admin.clone().expect("first start prints the admin token");
        let b = db_node(dir, &db, dir, "node-b", extra);
        assert!(
            b.admin.is_none(),
            "the second node shares the first one's token"
        );
        Some(Self {
            pg,
            a,
            b,
            admin,
            tmp,
        })
    }

    /// Stops both nodes and drops the schema.
    pub async fn finish(self) {
        let Self { pg, a, b, .. } = self;
        drop((a, b));
        pg.drop_schema().await;
    }
}

/// `doorcode serve` that must exit with an error; returns its stderr.
pub fn refused(dir: &Path, db: &str) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_doorcode"))
        .args(["serve", "--listen", "127.0.0.1:0", "--database", db])
        .arg("--data-dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            assert!(!status.success(), "the node started: {err}");
            return err;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the node neither started nor refused within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A server on a fixed port with the fixed code key, so it can be killed
/// and restarted on the same data and URL.
pub struct ServerProc {
    serve: Serve,
    pub port: u16,
}

impl ServerProc {
    /// Starts (or restarts) a server on `dir`, returning the admin token on first start.
    pub fn spawn(dir: &Path, port: u16) -> (Self, Option<String>) {
        if !dir.join("code-key").exists() {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(
                dir.join("code-key"),
                CodeKey::from_bytes(CODE_KEY).to_file_text(),
            )
            .unwrap();
        }
        let serve = Serve::start(
            dir,
            &ServeOpts {
                listen: format!("127.0.0.1:{port}"),
                ..ServeOpts::default()
            },
        );
        let token = serve.admin.clone();
        (Self { serve, port }, token)
    }

    /// A first start on `dir` with its dispatcher.
    pub fn with_admin(dir: &Path, port: u16) -> (Self, Admin) {
        let (srv, token) = Self::spawn(dir, port);
        let admin = Admin::new(port, token.expect("first start prints the admin token"));
        (srv, admin)
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.serve.addr
    }

    pub fn kill9(&mut self) {
        self.serve.kill9();
    }
}

/// The dispatcher, on the one typed dispatch client.
pub struct Admin {
    pub dispatch: DispatchClient,
}

impl Admin {
    pub fn new(port: u16, token: String) -> Self {
        Self {
            dispatch: DispatchClient::new(&format!("http://127.0.0.1:{port}"), &token).unwrap(),
        }
    }

    /// One value of `/metrics` (0 when absent).
    pub async fn metric(&self, name: &str) -> u64 {
        crate::support::net::metric(&self.dispatch.metrics().await.unwrap(), name)
    }
}

/// A server on a fresh dir (its data in `server/`) with its dispatcher and
/// a day of `couriers` routes of `per` parcels planned.
pub async fn planned_day(
    couriers: usize,
    per: usize,
) -> (
    tempfile::TempDir,
    ServerProc,
    Admin,
    Vec<(String, Vec<String>)>,
) {
    let dir = tempfile::tempdir().unwrap();
    let (srv, admin) = ServerProc::with_admin(&dir.path().join("server"), free_port());
    let plan = plan_day(&admin, couriers, per).await;
    (dir, srv, admin, plan)
}

pub fn today() -> NaiveDate {
    Utc::now().date_naive()
}

/// Parcels for `couriers` routes of `per` one-parcel stops; every third needs no code.
pub async fn plan_day(admin: &Admin, couriers: usize, per: usize) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for c in 0..couriers {
        let ids: Vec<String> = (0..per).map(|i| format!("E{c}-{i:04}")).collect();
        let parcels: Vec<ParcelIn> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| ParcelIn {
                parcel_id: id.clone(),
                recipient: Recipient {
                    name: format!("R {id}"),
                    email: Some("r@example.invalid".into()),
                    phone: None,
                },
                address: format!("{i} Test Road"),
                value: 100.0,
                currency: "EUR".into(),
                requires_code: Some(i % 3 != 0),
            })
            .collect();
        for chunk in parcels.chunks(500) {
            admin.dispatch.parcels(chunk).await.unwrap();
        }
        let stops: Vec<StopIn> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| StopIn {
                stop_id: format!("S{i:04}"),
                address: format!("{i} Test Road"),
                recipient: None,
                parcel_ids: vec![id.clone()],
            })
            .collect();
        let courier = format!("C{c}");
        let route = RouteIn {
            route_id: format!("R{c}"),
            courier_id: courier.clone(),
            delivery_date: today(),
            stops,
        };
        admin.dispatch.route(&route).await.unwrap();
        out.push((courier, ids));
    }
    out
}

/// An in-process handset enrolled through `server_url` (usually a proxy).
pub async fn enrolled(
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
    let code = admin.dispatch.enroll(courier).await.unwrap();
    client
        .enroll(server_url, &code.enrollment_code, courier)
        .await
        .unwrap();
    client
}

/// Syncs until the manifest is held, through whatever the link does.
pub async fn pull_until_held(c: &SyncClient) {
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
pub fn work_the_day(h: &Handset) -> HashMap<String, &'static str> {
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
pub async fn upload_all(c: &SyncClient, deadline: Duration) -> (u32, u32) {
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

/// Every handset uploads at the same time, each on its own task.
pub fn spawn_uploads(
    clients: &[Arc<SyncClient>],
    deadline: Duration,
) -> Vec<tokio::task::JoinHandle<(u32, u32)>> {
    clients
        .iter()
        .map(|c| {
            let c = c.clone();
            tokio::spawn(async move { upload_all(&c, deadline).await })
        })
        .collect()
}

/// The (accepted, duplicates) each upload task saw, once all are done.
pub async fn joined(tasks: Vec<tokio::task::JoinHandle<(u32, u32)>>) -> Vec<(u32, u32)> {
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    results
}

/// `doorcode ARGS…`, the binary of this build.
pub fn doorcode(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_doorcode"));
    c.args(args);
    c
}

/// `doorcode serve` on `data` with `env` that must refuse to start; its stderr.
pub fn serve_refused(data: &Path, env: &[(&str, &str)]) -> String {
    let out = doorcode(&["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `doorcode handset --db DB ARGS…`; returns (success, stdout, stderr).
pub fn handset(db: &Path, args: &[&str]) -> (bool, String, String) {
    let out = doorcode(&["handset", "--db"])
        .arg(db)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// The server's view: every parcel in its expected state with exactly one
/// outcome event (each accepted confirmation adds one, so a double count
/// shows), nothing disputed or reused. Survives server restarts, unlike metrics.
pub async fn assert_exactly_once(admin: &Admin, expect: &HashMap<String, &'static str>) {
    for (pid, want) in expect {
        let v = admin.dispatch.parcel(pid).await.unwrap();
        let status = serde_json::to_value(v.status).unwrap();
        assert_eq!(status.as_str(), Some(*want), "{pid}: {v:?}");
        let outcomes = v
            .events
            .iter()
            .filter(|e| matches!(e.kind.as_str(), "delivered" | "failed" | "disputed"))
            .count();
        assert_eq!(outcomes, 1, "{pid} was counted {outcomes} times: {v:?}");
    }
    let d = admin.dispatch.disputes(today(), None, None).await.unwrap();
    assert_eq!(d.disputes.len(), 0, "{d:?}");
    let kinds: Vec<SignalKind> = d.signals.iter().map(|s| s.kind).collect();
    assert!(
        !kinds.contains(&SignalKind::SeqReuse) && !kinds.contains(&SignalKind::SeqGap),
        "{kinds:?}"
    );
}

pub fn fast_cfg() -> SyncConfig {
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

/// Confirmations still waiting in a handset database's outbox (read from
/// another connection, as a second app process would).
pub fn outbox_pending(db: &Path) -> u64 {
    let c = rusqlite::Connection::open(db).unwrap();
    crate::support::dump::one(&c, "SELECT COUNT(*) FROM outbox WHERE status = 'pending'")
}
