//! The morning storm at fleet scale (`--storm N`): N handsets, enrolled
//! before the clock starts, each pull their day's manifest (the first pull
//! builds, signs and stores it) and re-pull it with `If-None-Match` (304),
//! all against one `doorcode serve`. Reports one line,
//! `storm: N handsets, T s, E errors`, where T runs from the first request
//! to the last answer.

use crate::day::{self, Params, bounded, send};
use crate::procs::Proc;
use crate::stats::Phase;
use anyhow::{Context, Result, anyhow, bail, ensure};
use chrono::Utc;
use doorcode_core::envelope::{Envelope, SigningKey};
use doorcode_core::manifest::open_manifest;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// File descriptors each side needs beyond one per connection (logs,
/// database, listener, stdio).
const FD_MARGIN: u64 = 64;

/// What a storm run found.
pub struct Report {
    pub handsets: usize,
    pub wall: Duration,
    pub errors: usize,
    pub first_pull: Phase,
    pub re_pull: Phase,
    pub manifest_bytes: usize,
    /// The first error seen, for the message.
    pub first_error: Option<String>,
}

impl Report {
    /// The one line the issue asks for.
    pub fn line(&self) -> String {
        format!(
            "storm: {} handsets, {:.2} s, {} errors",
            self.handsets,
            self.wall.as_secs_f64(),
            self.errors
        )
    }
}

/// The soft limit on open files, from /proc (Linux); None where it cannot be read.
fn open_files_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line.split_whitespace().nth(3)?;
    if soft == "unlimited" {
        return Some(u64::MAX);
    }
    soft.parse().ok()
}

/// The client and the server (a child, which inherits the limit) each hold
/// one descriptor per connection: refuse early, and say how to raise it.
pub fn check_open_files(concurrency: usize) -> Result<()> {
    let need = concurrency as u64 + FD_MARGIN;
    match open_files_limit() {
        Some(have) if have < need => bail!(
            "--concurrency {concurrency} needs about {need} open files per process, the limit is {have}: \
             raise it first (`ulimit -n {need}` in this shell, or LimitNOFILE= in a systemd unit), \
             or lower --concurrency"
        ),
        _ => Ok(()),
    }
}

/// The server's `--max-connections` for a storm of `concurrency` clients.
pub fn max_connections(concurrency: usize) -> usize {
    concurrency + FD_MARGIN as usize
}

/// Plan the day, enroll every handset, then time the pulls and re-pulls.
pub async fn run(
    http: &reqwest::Client,
    server: &Proc,
    p: &Params,
    concurrency: usize,
) -> Result<Report> {
    let url = server.url.clone();
    let admin = server
        .admin_token
        .clone()
        .ok_or_else(|| anyhow!("no admin token"))?;
    let date = Utc::now().date_naive();
    eprintln!(
        "[storm] planning {} couriers x {} parcels on {} stops",
        p.couriers, p.parcels, p.stops
    );
    let codes = day::plan_day(http, &url, &admin, p, date, "").await?;

    // Enroll at once: an enrollment code lives 15 minutes, and at fleet
    // scale the notices take longer than that to go out (10,000 routes:
    // 360,000 notices, 15.5 min measured). The drain comes after.
    eprintln!("[storm] enrolling {} handsets", codes.len());
    let enrolled = Arc::new(AtomicUsize::new(0));
    let total = codes.len();
    let (h, u, e) = (http.clone(), url.clone(), enrolled.clone());
    // At most 8 in flight: the server counts an enrollment against its
    // per-address limit until it succeeds.
    let tokens = bounded(codes, day::SETUP_CONCURRENCY, move |code| {
        let (h, u, e) = (h.clone(), u.clone(), e.clone());
        async move {
            let key = SigningKey::generate("storm").map_err(|e| anyhow!("device key: {e}"))?;
            let token = day::enroll(&h, &u, code, &key, "storm handset")
                .await?
                .device_token;
            let n = e.fetch_add(1, Ordering::Relaxed) + 1;
            if n % 1000 == 0 || n == total {
                eprintln!("  enrolled: {n} of {total}");
            }
            Ok(token)
        }
    })
    .await?;

    day::drain_notices(http, &url, &admin).await?;

    let keys = day::server_keys(http, &url).await?;

    eprintln!(
        "[storm] {} handsets pull and re-pull, {concurrency} at a time",
        tokens.len()
    );
    let h = http.clone();
    let manifest_url = format!("{url}/v1/manifest?date={date}");
    let started = Instant::now();
    // Errors are counted, not fatal: the line reports them all.
    let outcomes = bounded(tokens, concurrency, move |token| {
        let (h, mu) = (h.clone(), manifest_url.clone());
        async move { Ok(pull_twice(&h, &mu, &token).await) }
    })
    .await?;
    let wall = started.elapsed();

    let (mut first, mut again) = (Vec::new(), Vec::new());
    let mut errors = 0;
    let mut first_error = None;
    let mut sample = None;
    for o in outcomes {
        match o {
            Ok(pulls) => {
                first.push(pulls.first);
                again.push(pulls.again);
                sample.get_or_insert(pulls.body);
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    let manifest_bytes = sample.as_ref().map_or(0, |b| b.len());
    // One manifest opened in full: the storm served real, signed days.
    if let Some(body) = sample {
        let env: Envelope = serde_json::from_slice(&body).context("manifest envelope JSON")?;
        let m = open_manifest(&env, &keys).map_err(|e| anyhow!("manifest does not verify: {e}"))?;
        let count: usize = m.stops.iter().map(|s| s.parcels.len()).sum();
        ensure!(
            count == p.parcels,
            "a manifest has {count} parcels, the route {}",
            p.parcels
        );
    }
    let handsets = first.len() + errors;
    Ok(Report {
        handsets,
        wall,
        errors,
        first_pull: Phase::new(first.len(), wall, first),
        re_pull: Phase::new(again.len(), wall, again),
        manifest_bytes,
        first_error,
    })
}

/// One handset's two requests and their latencies.
struct Pulls {
    first: Duration,
    again: Duration,
    body: axum::body::Bytes,
}

async fn pull_twice(http: &reqwest::Client, url: &str, token: &str) -> Result<Pulls> {
    let (first, body, etag) = day::first_pull(http, url, token).await?;
    let t1 = Instant::now();
    let (status, _) = send(
        http.get(url)
            .bearer_auth(token)
            .header("if-none-match", &etag),
        "GET /v1/manifest (If-None-Match)",
    )
    .await?;
    let again = t1.elapsed();
    ensure!(status == 304, "re-pull with If-None-Match: HTTP {status}");
    Ok(Pulls { first, again, body })
}
