//! One backend's run: set the day up through the admin API, then time the
//! morning storm, manifest serving, online verify and ingest against a real
//! `doorcode serve`, each next to its floor with the same client code and
//! the same concurrency (one task per handset, all at once).

use crate::floor::{self, Row};
use crate::procs::{Proc, ServerSpec};
use crate::stats::Phase;
use anyhow::{Context, Result, anyhow, bail, ensure};
use axum::body::Bytes;
use chrono::{NaiveDate, Utc};
use doorcode_core::codes::{Code, CodeKey, derive_code};
use doorcode_core::confirmation::{Confirmation, Outcome, Verified};
use doorcode_core::envelope::{Envelope, SigningKey, VerifyingKey};
use doorcode_core::manifest::{Manifest, open_manifest};
use doorcode_core::wire::{DeviceIn, DeviceOut, Keys};
use serde_json::{Value, json};
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The size of the day and of each phase.
#[derive(Debug, Clone)]
pub struct Params {
    pub couriers: usize,
    pub stops: usize,
    pub parcels: usize,
    /// Full and 304 manifest GETs per handset after the storm.
    pub rounds: usize,
    /// Online checks per handset.
    pub verifies: usize,
    /// Confirmations per upload.
    pub batch: usize,
}

/// One line of the report.
pub struct Line {
    pub backend: String,
    pub phase: String,
    pub unit: &'static str,
    pub measured: Phase,
    pub floor: Option<(String, Phase)>,
}

/// Where a run talks to.
pub struct Target<'a> {
    pub backend: &'a str,
    /// The running server; the run owns it, so it can restart it.
    pub server: Proc,
    pub spec: &'a ServerSpec,
    pub floor: &'a Proc,
    pub data_dir: &'a Path,
    /// The PostgreSQL server for the raw-insert floor (PostgreSQL backend only).
    pub pg_floor: Option<&'a str>,
    /// Clients of the PostgreSQL raw-insert floor: the server's pool size.
    pub pg_connections: usize,
    /// Restart the server with these arguments right before the ingest, so
    /// its retention job purges the history while the uploads run.
    pub ingest_restart: Option<Vec<String>>,
}

/// An enrolled handset after its first manifest fetch.
struct Handset {
    device_id: String,
    token: String,
    key: SigningKey,
    body: Bytes,
    etag: String,
}

/// Spawn one task per work item, all at once; the wall time runs until the last ends.
async fn all_at_once<T, O, F, Fut>(work: Vec<T>, f: F) -> Result<(Duration, Vec<O>)>
where
    T: Send + 'static,
    O: Send + 'static,
    F: Fn(T) -> Fut,
    Fut: Future<Output = Result<O>> + Send + 'static,
{
    let started = Instant::now();
    let tasks: Vec<_> = work.into_iter().map(|w| tokio::spawn(f(w))).collect();
    let mut out = Vec::with_capacity(tasks.len());
    let mut first_err = None;
    for t in tasks {
        match t.await {
            Ok(Ok(o)) => out.push(o),
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(e) => {
                first_err.get_or_insert(anyhow!("a handset task failed: {e}"));
            }
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    Ok((started.elapsed(), out))
}

/// Run `f` on every work item with at most `limit` at a time; results in input order.
pub(crate) async fn bounded<T, O, F, Fut>(work: Vec<T>, limit: usize, f: F) -> Result<Vec<O>>
where
    T: Send + 'static,
    O: Send + 'static,
    F: Fn(T) -> Fut,
    Fut: Future<Output = Result<O>> + Send + 'static,
{
    let permits = Arc::new(tokio::sync::Semaphore::new(limit.max(1)));
    let tasks: Vec<_> = work
        .into_iter()
        .map(|w| {
            let permits = permits.clone();
            let fut = f(w);
            tokio::spawn(async move {
                let _permit = permits.acquire_owned().await?;
                fut.await
            })
        })
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.map_err(|e| anyhow!("a task failed: {e}"))??);
    }
    Ok(out)
}

/// Status and body of a request, with the error body in the message on failure.
pub(crate) async fn send(req: reqwest::RequestBuilder, what: &str) -> Result<(u16, Bytes)> {
    let r = req
        .send()
        .await
        .with_context(|| format!("{what}: request"))?;
    let status = r.status().as_u16();
    let body = r.bytes().await.with_context(|| format!("{what}: body"))?;
    Ok((status, body))
}

pub(crate) async fn admin_post(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    body: &Value,
    what: &str,
) -> Result<Value> {
    let (status, b) = send(http.post(url).bearer_auth(token).json(body), what).await?;
    ensure!(
        status == 200,
        "{what}: HTTP {status}: {}",
        String::from_utf8_lossy(&b)
    );
    serde_json::from_slice(&b).with_context(|| format!("{what}: JSON answer"))
}

/// `POST /v1/devices`: enrolls `key`'s public half with `code`.
pub(crate) async fn enroll(
    http: &reqwest::Client,
    url: &str,
    code: String,
    key: &SigningKey,
    device_name: &str,
) -> Result<DeviceOut> {
    let what = "POST /v1/devices";
    let body = DeviceIn {
        enrollment_code: code,
        device_public_key: key.public_key().public_b64(),
        device_name: device_name.into(),
    };
    let (status, b) = send(http.post(format!("{url}/v1/devices")).json(&body), what).await?;
    ensure!(
        status == 200,
        "{what}: HTTP {status}: {}",
        String::from_utf8_lossy(&b)
    );
    serde_json::from_slice(&b).with_context(|| format!("{what}: JSON answer"))
}

/// Setup requests (routes, enrollments) in flight at once: the admin API's
/// own pace, without one request waiting for the last.
pub(crate) const SETUP_CONCURRENCY: usize = 8;

fn parcel_id(prefix: &str, c: usize, i: usize) -> String {
    format!("{prefix}P{c:04}-{i:04}")
}

/// A handset's first `GET /v1/manifest`: how long it took, the body and
/// its ETag (a 200 with an ETag, or an error).
pub(crate) async fn first_pull(
    http: &reqwest::Client,
    url: &str,
    token: &str,
) -> Result<(Duration, Bytes, String)> {
    let t0 = Instant::now();
    let r = http
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .context("GET /v1/manifest")?;
    let status = r.status().as_u16();
    let etag = r
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = r.bytes().await.context("manifest body")?;
    let took = t0.elapsed();
    ensure!(status == 200, "first GET /v1/manifest: HTTP {status}");
    let etag = etag.ok_or_else(|| anyhow!("manifest without ETag"))?;
    Ok((took, body, etag))
}

/// Parcels, routes and enrollment codes for `p.couriers` couriers; returns
/// the codes. Every id starts with `prefix`, so a history day and today's
/// day never share a parcel, route or courier.
pub(crate) async fn plan_day(
    http: &reqwest::Client,
    url: &str,
    admin: &str,
    p: &Params,
    date: NaiveDate,
    prefix: &str,
) -> Result<Vec<String>> {
    let stops = p.stops.clamp(1, p.parcels.max(1));
    let mut parcels = Vec::new();
    for c in 0..p.couriers {
        for i in 0..p.parcels {
            // Nine in ten are worth more than the threshold (50) and need a code.
            let value = if i % 10 == 9 { 20.0 } else { 120.0 };
            parcels.push(json!({
                "parcel_id": parcel_id(prefix, c, i),
                "recipient": {"name": format!("Customer {c}-{i}"), "email": format!("c{c}-{i}@example.com")},
                "address": format!("{} Long Example Street, Flat {i}, 10{c:03} Exampletown", 1 + i * stops / p.parcels.max(1)),
                "value": value,
                "currency": "EUR",
            }));
        }
    }
    let total = parcels.len();
    for (n, chunk) in parcels.chunks(2000).enumerate() {
        admin_post(
            http,
            &format!("{url}/v1/parcels"),
            admin,
            &json!({"parcels": chunk}),
            "POST /v1/parcels",
        )
        .await?;
        eprintln!("  parcels: {} of {total}", (n * 2000 + chunk.len()));
    }
    let mut routes = Vec::with_capacity(p.couriers);
    for c in 0..p.couriers {
        let stop_list: Vec<Value> = (0..stops)
            .map(|s| {
                let ids: Vec<String> = (s * p.parcels / stops..(s + 1) * p.parcels / stops)
                    .map(|i| parcel_id(prefix, c, i))
                    .collect();
                json!({
                    "stop_id": format!("S{s:03}"),
                    "address": format!("{} Long Example Street, 10{c:03} Exampletown", s + 1),
                    "recipient": format!("Household {c}-{s}"),
                    "parcel_ids": ids,
                })
            })
            .collect();
        routes.push(
            json!({"route_id": format!("{prefix}R{c:04}"), "courier_id": format!("{prefix}C{c:04}"),
                "delivery_date": date.to_string(), "stops": stop_list}),
        );
    }
    let (h, u, a) = (http.clone(), url.to_string(), admin.to_string());
    bounded(routes, SETUP_CONCURRENCY, move |route| {
        let (h, u, a) = (h.clone(), u.clone(), a.clone());
        async move {
            admin_post(&h, &format!("{u}/v1/routes"), &a, &route, "POST /v1/routes").await?;
            Ok(())
        }
    })
    .await?;
    eprintln!("  routes: {}", p.couriers);
    let (h, u, a) = (http.clone(), url.to_string(), admin.to_string());
    let prefix = prefix.to_string();
    let codes = bounded((0..p.couriers).collect(), SETUP_CONCURRENCY, move |c| {
        let (h, u, a) = (h.clone(), u.clone(), a.clone());
        let courier = format!("{prefix}C{c:04}");
        async move {
            let e = admin_post(
                &h,
                &format!("{u}/v1/enrollments"),
                &a,
                &json!({"courier_id": courier}),
                "POST /v1/enrollments",
            )
            .await?;
            let code = e["enrollment_code"]
                .as_str()
                .ok_or_else(|| anyhow!("enrollment answer without enrollment_code"))?;
            Ok(code.to_string())
        }
    })
    .await?;
    eprintln!("  enrollment codes: {}", codes.len());
    Ok(codes)
}

/// Wait for the server's first retention run to end; returns how long it
/// took from the server's start and how many rows it removed.
async fn watch_retention(
    http: reqwest::Client,
    url: String,
    admin: String,
) -> Result<(Duration, u64)> {
    let started = Instant::now();
    let metric = |text: &str, name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    loop {
        let (status, b) = send(
            http.get(format!("{url}/metrics")).bearer_auth(&admin),
            "GET /metrics",
        )
        .await?;
        ensure!(status == 200, "GET /metrics: HTTP {status}");
        let text = String::from_utf8_lossy(&b);
        if metric(&text, "doorcode_retention_runs_total ").unwrap_or(0) >= 1 {
            let rows = metric(&text, "doorcode_retention_last_run_rows ").unwrap_or(0);
            return Ok((started.elapsed(), rows));
        }
        if started.elapsed() > Duration::from_secs(1800) {
            bail!("the retention job did not finish a run within 30 min");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Wait until the notice outbox is empty, so the notice sender does not run during the timed phases.
pub(crate) async fn drain_notices(http: &reqwest::Client, url: &str, admin: &str) -> Result<()> {
    let started = Instant::now();
    let mut last_report = Instant::now();
    loop {
        let (status, b) = send(
            http.get(format!("{url}/metrics")).bearer_auth(admin),
            "GET /metrics",
        )
        .await?;
        ensure!(status == 200, "GET /metrics: HTTP {status}");
        let text = String::from_utf8_lossy(&b);
        let pending = text
            .lines()
            .find_map(|l| l.strip_prefix("doorcode_notice_outbox{state=\"pending\"} "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| anyhow!("/metrics has no doorcode_notice_outbox pending gauge"))?;
        if pending == 0 {
            eprintln!("  notices sent in {:.1} s", started.elapsed().as_secs_f64());
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(1800) {
            bail!("the notice outbox still has {pending} pending after 30 min");
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            eprintln!("  notices pending: {pending}");
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The server's published signing keys (`/.well-known/doorcode-keys`).
pub(crate) async fn server_keys(http: &reqwest::Client, url: &str) -> Result<Vec<VerifyingKey>> {
    let what = "GET /.well-known/doorcode-keys";
    let (status, kb) = send(http.get(format!("{url}/.well-known/doorcode-keys")), what).await?;
    ensure!(status == 200, "{what}: HTTP {status}");
    let doc: Keys = serde_json::from_slice(&kb).with_context(|| format!("{what}: JSON answer"))?;
    doorcode_core::sync::keys_from(doc.keys).map_err(|e| anyhow!("{what}: {e}"))
}

fn open(h: &Handset, keys: &[VerifyingKey]) -> Result<Manifest> {
    let env: Envelope = serde_json::from_slice(&h.body).context("manifest envelope JSON")?;
    open_manifest(&env, keys)
        .map_err(|e| anyhow!("manifest of {} does not verify: {e}", h.device_id))
}

/// The same requests, timed one after another within a task.
#[derive(Clone)]
struct Request {
    url: String,
    token: String,
    body: Option<Bytes>,
    etag: Option<String>,
}

/// Run each task's requests in order; returns (latency, status, response size) per request.
async fn run_requests(
    http: &reqwest::Client,
    tasks: Vec<Vec<Request>>,
) -> Result<(Duration, Vec<Vec<(Duration, u16, usize)>>)> {
    let http = http.clone();
    all_at_once(tasks, move |reqs| {
        let http = http.clone();
        async move {
            let mut out = Vec::with_capacity(reqs.len());
            for r in reqs {
                let mut b = match &r.body {
                    Some(body) => http
                        .post(&r.url)
                        .header("content-type", "application/json")
                        .body(body.clone()),
                    None => http.get(&r.url),
                };
                b = b.bearer_auth(&r.token);
                if let Some(e) = &r.etag {
                    b = b.header("if-none-match", e);
                }
                let t = Instant::now();
                let (status, body) = send(b, &r.url).await?;
                out.push((t.elapsed(), status, body.len()));
            }
            Ok(out)
        }
    })
    .await
}

fn phase_of(items: usize, wall: Duration, results: &[Vec<(Duration, u16, usize)>]) -> Phase {
    Phase::new(items, wall, results.iter().flatten().map(|r| r.0).collect())
}

/// Every status in `results` must be `want`.
fn all_status(results: &[Vec<(Duration, u16, usize)>], want: u16, what: &str) -> Result<()> {
    for r in results.iter().flatten() {
        ensure!(
            r.1 == want,
            "{what}: HTTP {} where {want} was expected",
            r.1
        );
    }
    Ok(())
}

/// The whole run against one backend.
pub async fn run(http: &reqwest::Client, t: Target<'_>, p: &Params) -> Result<Vec<Line>> {
    let mut server = t.server;
    let mut url = server.url.clone();
    let admin = server
        .admin_token
        .clone()
        .ok_or_else(|| anyhow!("no admin token"))?;
    let date = Utc::now().date_naive();
    let mut lines = Vec::new();
    let line =
        |phase: &str, unit: &'static str, measured: Phase, floor: Option<(String, Phase)>| Line {
            backend: t.backend.to_string(),
            phase: phase.to_string(),
            unit,
            measured,
            floor,
        };

    eprintln!(
        "[{}] planning {} couriers x {} parcels on {} stops",
        t.backend, p.couriers, p.parcels, p.stops
    );
    let codes = plan_day(http, &url, &admin, p, date, "").await?;
    drain_notices(http, &url, &admin).await?;
    let key_text = std::fs::read_to_string(t.data_dir.join("code-key"))
        .context("reading the server's code-key")?;
    let code_key =
        Arc::new(CodeKey::from_file_text(key_text.trim()).map_err(|e| anyhow!("code-key: {e}"))?);
    let keys = server_keys(http, &url).await?;

    // 1. Morning storm: every handset enrolls with a fresh device key and fetches its day.
    eprintln!(
        "[{}] morning storm: {} handsets enroll and fetch",
        t.backend, p.couriers
    );
    let (storm_wall, storm) = {
        let http = http.clone();
        let url = url.clone();
        // Enrollments 8 at a time from our one address: the server counts
        // an enrollment in flight against the 10 an address may fail per
        // minute (so concurrent guesses cannot overrun it), and with group
        // commit 50 arriving at once are all in flight together. The
        // fetches that follow run all at once.
        let gate = Arc::new(tokio::sync::Semaphore::new(SETUP_CONCURRENCY));
        all_at_once(codes, move |code| {
            let (http, url, gate) = (http.clone(), url.clone(), gate.clone());
            async move {
                let probe =
                    SigningKey::generate("probe").map_err(|e| anyhow!("device key: {e}"))?;
                let permit = gate.acquire_owned().await.context("enrollment gate")?;
                let t0 = Instant::now();
                let device = enroll(&http, &url, code, &probe, "load handset").await;
                let enrolled = t0.elapsed();
                drop(permit);
                let DeviceOut {
                    device_id,
                    device_token: token,
                    ..
                } = device?;
                let key = SigningKey::from_seed(device_id.clone(), *probe.seed())
                    .map_err(|e| anyhow!("device key: {e}"))?;
                let (fetch, body, etag) =
                    first_pull(&http, &format!("{url}/v1/manifest?date={date}"), &token).await?;
                Ok((
                    enrolled,
                    fetch,
                    Handset {
                        device_id,
                        token,
                        key,
                        body,
                        etag,
                    },
                ))
            }
        })
        .await?
    };
    let n = storm.len();
    let mut handsets = Vec::with_capacity(n);
    let (mut enroll_lat, mut fetch_lat) = (Vec::new(), Vec::new());
    for (e, f, h) in storm {
        enroll_lat.push(e);
        fetch_lat.push(f);
        handsets.push(h);
    }
    let manifests: Vec<Manifest> = handsets
        .iter()
        .map(|h| open(h, &keys))
        .collect::<Result<_>>()?;
    for m in &manifests {
        let count: usize = m.stops.iter().map(|s| s.parcels.len()).sum();
        ensure!(
            count == p.parcels,
            "a manifest has {count} parcels, the route {}",
            p.parcels
        );
    }
    let manifest_bytes = handsets.iter().map(|h| h.body.len()).max().unwrap_or(0);
    eprintln!("  manifest body: {manifest_bytes} bytes");
    lines.push(line(
        "storm: enroll (POST /v1/devices)",
        "devices/s",
        Phase::new(n, storm_wall, enroll_lat),
        None,
    ));
    lines.push(line(
        "storm: first manifest GET (built, signed, stored)",
        "manifests/s",
        Phase::new(n, storm_wall, fetch_lat),
        None,
    ));

    // 2. Stored manifests, full body, then the 304 re-pull; each against its floor.
    eprintln!(
        "[{}] manifest GETs: {} rounds per handset",
        t.backend, p.rounds
    );
    let gets = |etag: bool, floor: bool| -> Vec<Vec<Request>> {
        handsets
            .iter()
            .map(|h| {
                let r = Request {
                    url: if floor {
                        format!("{}/bytes/{}", t.floor.url, h.body.len())
                    } else {
                        format!("{url}/v1/manifest?date={date}")
                    },
                    token: h.token.clone(),
                    body: None,
                    etag: etag.then(|| {
                        if floor {
                            "\"floor\"".to_string()
                        } else {
                            h.etag.clone()
                        }
                    }),
                };
                vec![r; p.rounds]
            })
            .collect()
    };
    let (wall, full) = run_requests(http, gets(false, false)).await?;
    all_status(&full, 200, "stored manifest GET")?;
    for (h, rs) in handsets.iter().zip(&full) {
        ensure!(
            rs.iter().all(|r| r.2 == h.body.len()),
            "a stored manifest changed size between GETs"
        );
    }
    let served = phase_of(n * p.rounds, wall, &full);
    let (wall, ff) = run_requests(http, gets(false, true)).await?;
    all_status(&ff, 200, "floor GET")?;
    let floor_full = phase_of(n * p.rounds, wall, &ff);
    lines.push(line(
        "manifest GET, stored (200, full body)",
        "manifests/s",
        served,
        Some((format!("static {manifest_bytes} B (axum)"), floor_full)),
    ));
    let (wall, nm) = run_requests(http, gets(true, false)).await?;
    all_status(&nm, 304, "manifest re-pull with If-None-Match")?;
    let not_modified = phase_of(n * p.rounds, wall, &nm);
    let (wall, fnm) = run_requests(http, gets(true, true)).await?;
    all_status(&fnm, 304, "floor 304")?;
    lines.push(line(
        "manifest re-pull, If-None-Match (304)",
        "manifests/s",
        not_modified,
        Some((
            "static 304 (axum)".into(),
            phase_of(n * p.rounds, wall, &fnm),
        )),
    ));

    // 3. Online verify: right and wrong codes on different parcels (at most one wrong try each).
    eprintln!(
        "[{}] online verify: {} checks per handset",
        t.backend, p.verifies
    );
    let mut checks: Vec<Vec<Request>> = Vec::new();
    let mut expected: Vec<Vec<&'static str>> = Vec::new();
    for (h, m) in handsets.iter().zip(&manifests) {
        let mut reqs = Vec::new();
        let mut want = Vec::new();
        let coded = m
            .stops
            .iter()
            .flat_map(|s| &s.parcels)
            .filter(|pp| pp.requires_code);
        for (i, pp) in coded.take(p.verifies).enumerate() {
            let right = derive_code(
                &code_key,
                &pp.parcel_id,
                m.delivery_date,
                pp.attempt,
                m.code_digits,
            )
            .map_err(|e| anyhow!("code: {e}"))?;
            let wrong = i % 4 == 3;
            let code = if wrong {
                wrong_code(&right)
            } else {
                right.expose().to_string()
            };
            let body = serde_json::to_vec(&json!({"parcel_id": pp.parcel_id, "code": code}))
                .context("verify body")?;
            reqs.push(Request {
                url: format!("{url}/v1/verify"),
                token: h.token.clone(),
                body: Some(Bytes::from(body)),
                etag: None,
            });
            want.push(if wrong { "rejected" } else { "accepted" });
        }
        checks.push(reqs);
        expected.push(want);
    }
    let verify_count: usize = checks.iter().map(Vec::len).sum();
    let (wall, vr) = run_verify(http, checks.clone(), expected).await?;
    let verify = phase_of(verify_count, wall, &vr);
    let floor_checks = to_floor(&checks, &vr, &t.floor.url);
    let (wall, fv) = run_requests(http, floor_checks).await?;
    all_status(&fv, 200, "floor POST")?;
    lines.push(line(
        "online verify (POST /v1/verify), 1 in 4 wrong",
        "checks/s",
        verify,
        Some((
            "POST same size (axum)".into(),
            phase_of(verify_count, wall, &fv),
        )),
    ));

    // 4. Ingest: every parcel confirmed, signed before the clock starts, uploaded in batches.
    eprintln!("[{}] ingest: batches of {}", t.backend, p.batch);
    let mut uploads: Vec<Vec<Request>> = Vec::new();
    let mut sizes: Vec<Vec<usize>> = Vec::new();
    let mut rows: Vec<Vec<Row>> = Vec::new();
    for (h, m) in handsets.iter().zip(&manifests) {
        let mut envs = Vec::new();
        let mut my_rows = Vec::new();
        for (seq, pp) in m.stops.iter().flat_map(|s| &s.parcels).enumerate() {
            let code: Option<Code> = if pp.requires_code {
                Some(
                    derive_code(
                        &code_key,
                        &pp.parcel_id,
                        m.delivery_date,
                        pp.attempt,
                        m.code_digits,
                    )
                    .map_err(|e| anyhow!("code: {e}"))?,
                )
            } else {
                None
            };
            let c = Confirmation {
                format: 1,
                confirmation_id: uuid::Uuid::new_v4(),
                device_id: h.device_id.clone(),
                seq: seq as u64 + 1,
                manifest_id: m.manifest_id.clone(),
                revision: m.revision,
                parcel_id: pp.parcel_id.clone(),
                delivery_date: m.delivery_date,
                attempt: pp.attempt,
                outcome: Outcome::Delivered,
                reason: None,
                verified: if code.is_some() {
                    Verified::Offline
                } else {
                    Verified::None
                },
                code,
                failed_attempts: 0,
                recorded_at: Utc::now(),
                since_sync_ms: 60_000,
            };
            my_rows.push(Row {
                confirmation_id: c.confirmation_id.to_string(),
                device_id: c.device_id.clone(),
                seq: seq as i64 + 1,
                manifest_id: c.manifest_id.clone(),
                revision: i64::try_from(c.revision).context("revision")?,
                parcel_id: c.parcel_id.clone(),
                delivery_date: c.delivery_date,
                attempt: i64::from(c.attempt),
                outcome: c.outcome.as_str(),
                verified: c.verified.as_str(),
                code_ok: c.code.as_ref().map(|_| true),
                recorded_at: c.recorded_at,
            });
            envs.push(
                serde_json::to_value(c.seal(&h.key).map_err(|e| anyhow!("sealing: {e}"))?)
                    .context("envelope JSON")?,
            );
        }
        let mut reqs = Vec::new();
        let mut sz = Vec::new();
        for chunk in envs.chunks(p.batch.max(1)) {
            let body =
                serde_json::to_vec(&json!({"confirmations": chunk})).context("batch body")?;
            sz.push(chunk.len());
            reqs.push(Request {
                url: format!("{url}/v1/confirmations"),
                token: h.token.clone(),
                body: Some(Bytes::from(body)),
                etag: None,
            });
        }
        uploads.push(reqs);
        sizes.push(sz);
        rows.push(my_rows);
    }
    let total: usize = sizes.iter().flatten().sum();
    let mut purge = None;
    if let Some(args) = &t.ingest_restart {
        // The node that served the day stops; the next one starts its
        // retention job at once, purging the history under the uploads.
        drop(server);
        server = t.spec.restart(args, "server-retention.log")?;
        url = server.url.clone();
        for r in uploads.iter_mut().flatten() {
            r.url = format!("{url}/v1/confirmations");
        }
        eprintln!(
            "[{}] restarted with {} for the ingest",
            t.backend,
            args.join(" ")
        );
        purge = Some(tokio::spawn(watch_retention(
            http.clone(),
            url.clone(),
            admin.clone(),
        )));
    }
    let (wall, ir) = run_ingest(http, uploads.clone(), sizes).await?;
    if let Some(w) = purge {
        let (took, rows) = w.await.context("retention watch")??;
        eprintln!(
            "[{}] retention removed {rows} rows in {:.2} s; the ingest ran {:.2} s beside it",
            t.backend,
            took.as_secs_f64(),
            wall.as_secs_f64()
        );
    }
    drop(server);
    let ingest = phase_of(total, wall, &ir);
    let floor_uploads = to_floor(&uploads, &ir, &t.floor.url);
    let (wall, fi) = run_requests(http, floor_uploads).await?;
    all_status(&fi, 200, "floor POST")?;
    let batch_bytes = uploads
        .iter()
        .flatten()
        .filter_map(|r| r.body.as_ref().map(Bytes::len))
        .max()
        .unwrap_or(0);
    let ingest_phase = format!(
        "ingest, signed confirmations in batches of {}{}",
        p.batch,
        if t.ingest_restart.is_some() {
            ", retention purging beside it"
        } else {
            ""
        }
    );
    lines.push(line(
        &ingest_phase,
        "confirmations/s",
        ingest.clone(),
        Some((
            format!("POST {batch_bytes} B, same-size reply (axum)"),
            phase_of(total, wall, &fi),
        )),
    ));
    let batches: Vec<Vec<Row>> = rows
        .iter()
        .flat_map(|r| r.chunks(p.batch.max(1)).map(<[Row]>::to_vec))
        .collect();
    eprintln!(
        "[{}] storage floor: {} raw SQLite inserts",
        t.backend, total
    );
    let dir = t.data_dir.to_path_buf();
    let sqlite_batches = batches.clone();
    let sqlite_floor =
        tokio::task::spawn_blocking(move || floor::sqlite_inserts(&dir, &sqlite_batches))
            .await
            .context("storage floor task")??;
    lines.push(line(
        &ingest_phase,
        "confirmations/s",
        ingest.clone(),
        Some((
            format!(
                "raw SQLite INSERTs, {} per tx (WAL, synchronous=FULL)",
                p.batch
            ),
            sqlite_floor,
        )),
    ));
    if let Some(pg) = t.pg_floor {
        eprintln!(
            "[{}] storage floor: {} raw PostgreSQL inserts",
            t.backend, total
        );
        let pg_floor = floor::postgres_inserts(pg, t.pg_connections, batches).await?;
        lines.push(line(
            &ingest_phase,
            "confirmations/s",
            ingest,
            Some((
                format!(
                    "raw PostgreSQL INSERTs, {} per tx, {} clients",
                    p.batch, t.pg_connections
                ),
                pg_floor,
            )),
        ));
    }
    Ok(lines)
}

/// A code that is certainly wrong: the right one with its last digit changed.
fn wrong_code(right: &Code) -> String {
    let mut s: Vec<u8> = right.expose().bytes().collect();
    if let Some(last) = s.last_mut() {
        *last = b'0' + (*last - b'0' + 1) % 10;
    }
    String::from_utf8_lossy(&s).into_owned()
}

/// The same uploads sent to the floor, each answered with the size the server answered it with.
fn to_floor(
    reqs: &[Vec<Request>],
    answers: &[Vec<(Duration, u16, usize)>],
    floor_url: &str,
) -> Vec<Vec<Request>> {
    reqs.iter()
        .zip(answers)
        .map(|(rs, ans)| {
            rs.iter()
                .zip(ans)
                .map(|(r, a)| Request {
                    url: format!("{floor_url}/reply/{}", a.2),
                    ..r.clone()
                })
                .collect()
        })
        .collect()
}

/// Online checks; each answer must be what the code deserves.
async fn run_verify(
    http: &reqwest::Client,
    tasks: Vec<Vec<Request>>,
    expected: Vec<Vec<&'static str>>,
) -> Result<(Duration, Vec<Vec<(Duration, u16, usize)>>)> {
    checked_requests(
        http,
        tasks.into_iter().zip(expected).collect(),
        |want: &&'static str, body: &[u8]| {
            let v: Value = serde_json::from_slice(body).context("verify answer")?;
            ensure!(
                v["result"] == *want,
                "online verify answered {v}, expected {want}"
            );
            Ok(())
        },
    )
    .await
}

/// Uploads; every item must come back accepted and not disputed.
async fn run_ingest(
    http: &reqwest::Client,
    tasks: Vec<Vec<Request>>,
    sizes: Vec<Vec<usize>>,
) -> Result<(Duration, Vec<Vec<(Duration, u16, usize)>>)> {
    checked_requests(
        http,
        tasks.into_iter().zip(sizes).collect(),
        |n: &usize, body: &[u8]| {
            let v: Value = serde_json::from_slice(body).context("ingest answer")?;
            let results = v["results"]
                .as_array()
                .ok_or_else(|| anyhow!("ingest answer without results: {v}"))?;
            ensure!(
                results.len() == *n,
                "{} results for {n} confirmations",
                results.len()
            );
            for r in results {
                ensure!(
                    r["status"] == "accepted" && r.get("disputed").is_none(),
                    "confirmation not accepted: {r}"
                );
            }
            Ok(())
        },
    )
    .await
}

/// POSTs whose answers are checked after the latency is taken.
async fn checked_requests<E, C>(
    http: &reqwest::Client,
    tasks: Vec<(Vec<Request>, Vec<E>)>,
    check: C,
) -> Result<(Duration, Vec<Vec<(Duration, u16, usize)>>)>
where
    E: Send + Sync + 'static,
    C: Fn(&E, &[u8]) -> Result<()> + Send + Sync + Copy + 'static,
{
    let http = http.clone();
    all_at_once(tasks, move |(reqs, want)| {
        let http = http.clone();
        async move {
            let mut out = Vec::with_capacity(reqs.len());
            for (r, w) in reqs.into_iter().zip(want) {
                let body = r.body.clone().unwrap_or_default();
                let b = http
                    .post(&r.url)
                    .bearer_auth(&r.token)
                    .header("content-type", "application/json")
                    .body(body);
                let t = Instant::now();
                let (status, answer) = send(b, &r.url).await?;
                let lat = t.elapsed();
                ensure!(
                    status == 200,
                    "{}: HTTP {status}: {}",
                    r.url,
                    String::from_utf8_lossy(&answer)
                );
                check(&w, &answer)?;
                out.push((lat, status, answer.len()));
            }
            Ok(out)
        }
    })
    .await
}
