//! `doorcode demo`: a whole delivery day, end to end, against a real server on
//! loopback with embedded SQLite in a fresh directory. Handsets are the real
//! core over real HTTP; a loopback proxy per handset plays the mobile network
//! so "going offline" is a real connection failure the handset falls back from.

use chrono::{NaiveDate, Utc};
use clap::Args;
use doorcode_core::confirmation::FailReason;
use doorcode_core::handset::Handset;
use doorcode_core::secrets::FileSecretStore;
use doorcode_core::store::{ParcelState, VerifyOutcome};
use doorcode_core::sync::{ManifestSync, SyncClient, SyncConfig};
use doorcode_server::config::Config;
use doorcode_server::netsim::{Mode, Proxy};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct DemoArgs {
    /// Where to keep the day's data (default: a new temporary directory, kept afterwards).
    #[arg(long)]
    dir: Option<PathBuf>,
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    couriers: u32,
    #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u32).range(5..=300))]
    stops: u32,
    /// Seed for the made-up parcels and routes (the same seed gives the same parcels).
    #[arg(long, default_value_t = 2026)]
    seed: u64,
    /// Keep serving after the summary (so the track URL works) until Ctrl-C.
    #[arg(long)]
    serve: bool,
}

type DemoResult<T> = Result<T, String>;

pub async fn run(a: DemoArgs) -> ExitCode {
    match day(a).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\ndoorcode demo FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints timestamped progress lines.
struct Progress(Instant);

impl Progress {
    #[allow(clippy::print_stdout)]
    fn step(&self, msg: &str) {
        println!("[{:>6.2}s] {msg}", self.0.elapsed().as_secs_f64());
    }
}

#[allow(clippy::print_stdout)]
fn out(s: &str) {
    println!("{s}");
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

const FIRST: &[&str] = &[
    "Ada", "Ben", "Chloé", "Dev", "Ema", "Finn", "Grace", "Hugo", "Ines", "Jon", "Kemi", "Liam",
    "Mia", "Noor", "Otto", "Priya",
];
const LAST: &[&str] = &[
    "Okafor", "Schmidt", "Nguyen", "Silva", "Kowalski", "Haddad", "Larsen", "Moreau", "Tanaka",
    "Evans",
];
const STREETS: &[&str] = &[
    "Elm Street",
    "Harbour Road",
    "Mill Lane",
    "Station Avenue",
    "Kings Row",
    "Orchard Way",
    "Canal Walk",
];
const WORDS: [&str; 10] = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
];

/// How a customer reads a code aloud: "four two double seven one oh".
fn spoken(code: &str, rng: &mut Rng) -> String {
    let d: Vec<usize> = code
        .bytes()
        .map(|b| usize::from(b.wrapping_sub(b'0')) % 10)
        .collect();
    let mut words = Vec::new();
    let mut i = 0;
    while i < d.len() {
        let run = d[i..].iter().take_while(|&&x| x == d[i]).count();
        let w = if d[i] == 0 && rng.below(2) == 0 {
            "oh"
        } else {
            WORDS[d[i]]
        };
        match run {
            r if r >= 3 => {
                words.push(format!("triple {w}"));
                i += 3;
            }
            2 => {
                words.push(format!("double {w}"));
                i += 2;
            }
            _ => {
                words.push(w.to_string());
                i += 1;
            }
        }
    }
    words.join(" ")
}

/// A code that is surely wrong: every digit shifted.
fn wrong_code(code: &str, shift: u8) -> String {
    code.bytes()
        .map(|b| char::from(b'0' + (b.wrapping_sub(b'0') + shift) % 10))
        .collect()
}

/// The dispatcher's HTTP client.
struct Dispatch {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Dispatch {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> DemoResult<Value> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| format!("{path}: {e}"))?;
        let status = resp.status();
        let v: Value = resp
            .json()
            .await
            .map_err(|e| format!("{path}: unreadable answer: {e}"))?;
        if !status.is_success() {
            return Err(format!("{path}: HTTP {status}: {v}"));
        }
        Ok(v)
    }
    async fn post(&self, path: &str, body: Value) -> DemoResult<Value> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }
    async fn get(&self, path: &str) -> DemoResult<Value> {
        self.call(reqwest::Method::GET, path, None).await
    }
}

/// A notice as the customer received it (the `file:` channel's JSON).
#[derive(Clone, serde::Deserialize)]
struct Notice {
    parcel_id: String,
    code: Option<String>,
    track_url: Option<String>,
}

/// Reads every notice; for each parcel the newest one (notice files are numbered).
fn read_notices(dir: &Path) -> DemoResult<(usize, HashMap<String, Notice>)> {
    let mut names: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect(),
        Err(_) => return Ok((0, HashMap::new())),
    };
    names.sort();
    let mut latest = HashMap::new();
    for p in &names {
        let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
        let n: Notice = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))?;
        latest.insert(n.parcel_id.clone(), n);
    }
    Ok((names.len(), latest))
}

/// Waits until at least `want` notices have been written.
async fn wait_notices(
    dir: &Path,
    want: usize,
    p: &Progress,
) -> DemoResult<HashMap<String, Notice>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (n, latest) = read_notices(dir)?;
        if n >= want {
            p.step(&format!(
                "{n} customer notices written to {}",
                dir.display()
            ));
            return Ok(latest);
        }
        if Instant::now() > deadline {
            return Err(format!("only {n} of {want} notices were sent within 30 s"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Courier {
    id: String,
    proxy: Proxy,
    client: SyncClient,
    handset: Arc<Handset>,
}

#[derive(Default)]
struct Tally {
    delivered_code: u32,
    delivered_no_code: u32,
    spoken: u32,
    failed: BTreeMap<&'static str, u32>,
    wrong_tries: u32,
    impostor_passes: u32,
    verify_ms: Vec<f64>,
    verified_offline: u32,
}

async fn day(a: DemoArgs) -> DemoResult<()> {
    let started = Instant::now();
    let p = Progress(started);
    let dir = match a.dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!("doorcode-demo-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let server_dir = dir.join("server");
    if server_dir.exists() {
        return Err(format!(
            "{} already holds a demo; pass another --dir",
            server_dir.display()
        ));
    }
    let date: NaiveDate = Utc::now().date_naive();
    let mut rng = Rng(a.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);

    // --- 1. the depot
    let listen = "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?;
    let mut cfg = Config::new(&server_dir, listen);
    cfg.calendar.working_days = doorcode_server::config::Calendar::parse_working_days("mon-sun")?;
    cfg.notice_poll = Duration::from_millis(50);
    let server = doorcode_server::start(cfg)
        .await
        .map_err(|e| format!("server: {e}"))?;
    let token = server
        .admin_token
        .clone()
        .ok_or("the new data dir gave no admin token")?;
    p.step(&format!(
        "server up at {} (embedded SQLite in {})",
        server.url(),
        server_dir.display()
    ));
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    let dispatch = Dispatch {
        http,
        base: server.url(),
        token,
    };

    // --- 2. import the day
    let mut parcels = Vec::new();
    let mut routes = Vec::new();
    for c in 1..=a.couriers {
        let mut stops = Vec::new();
        for s in 1..=a.stops {
            let name = format!(
                "{} {}",
                FIRST[rng.below(FIRST.len() as u64) as usize],
                LAST[rng.below(LAST.len() as u64) as usize]
            );
            let address = format!(
                "{} {}",
                1 + rng.below(180),
                STREETS[rng.below(STREETS.len() as u64) as usize]
            );
            let n = if rng.below(4) == 0 { 2 } else { 1 };
            let mut ids = Vec::new();
            for k in 0..n {
                let id = format!("DC-{c}{s:03}{}", char::from(b'a' + k));
                let value = 5 + rng.below(400);
                // A few shippers insist on a code whatever the value; a few waive it.
                let explicit = match rng.below(20) {
                    0 => Some(true),
                    1 => Some(false),
                    _ => None,
                };
                let mut recipient = json!({ "name": name, "email": format!("{}@example.invalid", name.to_lowercase().replace('é', "e").replace(' ', ".")) });
                if rng.below(2) == 0 {
                    recipient["phone"] = json!(format!("+4477009{:05}", rng.below(100_000)));
                }
                let mut parcel = json!({ "parcel_id": id, "recipient": recipient, "address": address, "value": value, "currency": "GBP" });
                if let Some(r) = explicit {
                    parcel["requires_code"] = json!(r);
                }
                parcels.push(parcel);
                ids.push(id);
            }
            stops.push(json!({ "stop_id": format!("S-{c}-{s:03}"), "address": address, "recipient": name, "parcel_ids": ids }));
        }
        routes.push((format!("C-{c}"), format!("R-{c}"), stops));
    }
    let mut needs_code = 0usize;
    for chunk in parcels.chunks(200) {
        let r = dispatch
            .post("/v1/parcels", json!({ "parcels": chunk }))
            .await?;
        for item in r["results"].as_array().into_iter().flatten() {
            if item["status"] == "rejected" {
                return Err(format!("parcel refused: {item}"));
            }
            if item["requires_code"] == true {
                needs_code += 1;
            }
        }
    }
    for (courier, route, stops) in &routes {
        dispatch
            .post("/v1/routes", json!({ "route_id": route, "courier_id": courier, "delivery_date": date, "stops": stops }))
            .await?;
    }
    p.step(&format!(
        "imported {} parcels ({needs_code} need a code) on {} routes of {} stops for {date}",
        parcels.len(),
        routes.len(),
        a.stops
    ));
    let notices_dir = server_dir.join("notices");
    wait_notices(&notices_dir, needs_code, &p).await?;

    // --- 3. enroll and sync the handsets
    let sync_cfg = SyncConfig {
        verify_timeout: Duration::from_millis(800),
        tries_per_request: 2,
        backoff_base: Duration::from_millis(50),
        ..SyncConfig::default()
    };
    let mut couriers = Vec::new();
    let hdir = dir.join("handsets");
    std::fs::create_dir_all(&hdir).map_err(|e| e.to_string())?;
    let mut sync_ms = Vec::new();
    for (i, (courier, _, _)) in routes.iter().enumerate() {
        let proxy = Proxy::start(server.addr, a.seed + i as u64)
            .await
            .map_err(|e| e.to_string())?;
        let secrets = FileSecretStore::new(hdir.join(format!("{courier}.secrets")))
            .map_err(|e| e.to_string())?;
        let handset = Arc::new(
            Handset::open(&hdir.join(format!("{courier}.db")), Arc::new(secrets))
                .map_err(|e| e.to_string())?,
        );
        let client = SyncClient::with_config(handset.clone(), sync_cfg.clone())
            .map_err(|e| e.to_string())?;
        let code = dispatch
            .post("/v1/enrollments", json!({ "courier_id": courier }))
            .await?;
        let code = code["enrollment_code"]
            .as_str()
            .ok_or("no enrollment code")?
            .to_string();
        client
            .enroll(&proxy.url(), &code, &format!("{courier}'s phone"))
            .await
            .map_err(|e| format!("enroll {courier}: {e}"))?;
        let t = Instant::now();
        let r = client
            .sync(Some(date))
            .await
            .map_err(|e| format!("sync {courier}: {e}"))?;
        sync_ms.push(t.elapsed().as_secs_f64() * 1e3);
        match r.manifest {
            ManifestSync::Pulled { stops, parcels, revision } => {
                p.step(&format!("{courier} enrolled and synced: manifest r{revision}, {stops} stops, {parcels} parcels"))
            }
            other => return Err(format!("{courier}: expected a manifest, got {other:?}")),
        }
        couriers.push(Courier {
            id: courier.clone(),
            proxy,
            client,
            handset,
        });
    }

    // A customer says their notice went to an old address: dispatch reissues it.
    let reissued = first_code_parcel(&couriers[0].handset, 4)?;
    dispatch
        .post(&format!("/v1/parcels/{reissued}/reissue"), json!({}))
        .await?;
    let notices = wait_notices(&notices_dir, needs_code + 1, &p).await?;
    let r = couriers[0]
        .client
        .sync(Some(date))
        .await
        .map_err(|e| e.to_string())?;
    p.step(&format!(
        "dispatch reissued {reissued} (new code, new notice); {} re-synced: {:?}",
        couriers[0].id, r.manifest
    ));

    // --- 4. out on the road, offline
    for c in &couriers {
        c.proxy.set_mode(Mode::Offline);
    }
    p.step("handsets are out of coverage now: every request to the server fails");
    let mut tally = Tally::default();
    let typo_courier = 1 % couriers.len();
    let impostor_courier = 2 % couriers.len();
    let mut impostor_parcel = None;
    let mut typo_parcel = None;
    for (ci, c) in couriers.iter().enumerate() {
        let stops = c.handset.stops().map_err(|e| e.to_string())?;
        for stop in &stops {
            let absent = rng.below(100) < 12;
            for parcel in &stop.parcels {
                if parcel.state != ParcelState::Pending {
                    continue;
                }
                let pid = parcel.parcel_id.as_str();
                if absent {
                    c.handset
                        .fail(pid, FailReason::CustomerAbsent)
                        .map_err(|e| e.to_string())?;
                    *tally.failed.entry("customer_absent").or_default() += 1;
                    continue;
                }
                if !parcel.requires_code {
                    c.handset.deliver(pid).map_err(|e| e.to_string())?;
                    tally.delivered_no_code += 1;
                    continue;
                }
                let code = notices
                    .get(pid)
                    .and_then(|n| n.code.clone())
                    .ok_or_else(|| format!("no notice with a code for {pid}"))?;
                // A notice file is outside input: check its code before indexing into it.
                if doorcode_core::codes::Code::new(code.as_str()).is_err() {
                    return Err(format!("the notice for {pid} holds no 6..=8 digit code"));
                }
                if ci == impostor_courier && impostor_parcel.is_none() && pid != reissued {
                    // Someone at the door who is not the customer guesses.
                    impostor_parcel = Some(pid.to_string());
                    for shift in 1..=5u8 {
                        match verify(c, pid, &wrong_code(&code, shift), &mut tally).await? {
                            VerifyOutcome::Accepted { .. } => {
                                tally.impostor_passes += 1;
                                break;
                            }
                            VerifyOutcome::Rejected { .. } => tally.wrong_tries += 1,
                            VerifyOutcome::Locked { .. } => {
                                tally.wrong_tries += 1;
                                c.handset
                                    .fail(pid, FailReason::LockedOut)
                                    .map_err(|e| e.to_string())?;
                                *tally.failed.entry("locked_out").or_default() += 1;
                            }
                        }
                    }
                    continue;
                }
                if ci == typo_courier && typo_parcel.is_none() {
                    // The courier mistypes one digit, sees the rejection, corrects it.
                    typo_parcel = Some(pid.to_string());
                    let mut typo: Vec<u8> = code.clone().into_bytes();
                    typo[2] = b'0' + (typo[2].wrapping_sub(b'0') + 1) % 10;
                    let typo = String::from_utf8(typo).map_err(|e| e.to_string())?;
                    match verify(c, pid, &typo, &mut tally).await? {
                        VerifyOutcome::Rejected { attempts_left, .. } => {
                            tally.wrong_tries += 1;
                            p.step(&format!("{}: typo on {pid} rejected offline ({attempts_left} tries left); retyped", c.id));
                        }
                        VerifyOutcome::Accepted { .. } => tally.impostor_passes += 1,
                        other => return Err(format!("typo gave {other:?}")),
                    }
                    if c.handset
                        .stops()
                        .map_err(|e| e.to_string())?
                        .iter()
                        .flat_map(|s| &s.parcels)
                        .any(|q| q.parcel_id == pid && q.state == ParcelState::Delivered)
                    {
                        continue;
                    }
                }
                let said = if rng.below(2) == 0 {
                    tally.spoken += 1;
                    spoken(&code, &mut rng)
                } else {
                    format!("{} {}", &code[..3], &code[3..])
                };
                match verify(c, pid, &said, &mut tally).await? {
                    VerifyOutcome::Accepted { .. } => tally.delivered_code += 1,
                    other => {
                        return Err(format!(
                            "{pid}: the customer's own code was refused: {other:?}"
                        ));
                    }
                }
            }
        }
        let st = c.handset.status().map_err(|e| e.to_string())?;
        p.step(&format!(
            "{} visited {} stops offline: {} delivered, {} failed, {} locked; {} confirmations waiting",
            c.id,
            stops.len(),
            st.parcels_delivered,
            st.parcels_failed,
            st.parcels_locked,
            st.outbox_pending
        ));
    }
    if tally.verified_offline == 0 {
        return Err("no verify fell back to the offline check".into());
    }

    // --- 5. back in coverage
    let mut uploaded = 0;
    let mut duplicates = 0;
    for c in &couriers {
        c.proxy.set_mode(Mode::Pass);
        let t = Instant::now();
        let r = c.client.sync(Some(date)).await.map_err(|e| e.to_string())?;
        sync_ms.push(t.elapsed().as_secs_f64() * 1e3);
        if r.pending != 0 || r.rejected != 0 || !r.errors.is_empty() {
            return Err(format!(
                "{}: sync left {} pending, {} rejected: {:?}",
                c.id, r.pending, r.rejected, r.errors
            ));
        }
        uploaded += r.uploaded;
        duplicates += r.duplicates;
    }
    p.step(&format!(
        "back in coverage: {uploaded} confirmations uploaded and accepted ({duplicates} duplicates)"
    ));

    // --- 6. the server agrees, parcel by parcel
    let mut server_status: BTreeMap<String, u32> = BTreeMap::new();
    for c in &couriers {
        for stop in c.handset.stops().map_err(|e| e.to_string())? {
            for parcel in stop.parcels {
                let v = dispatch
                    .get(&format!("/v1/parcels/{}", parcel.parcel_id))
                    .await?;
                let s = v["status"].as_str().unwrap_or("?").to_string();
                let want = match parcel.state {
                    ParcelState::Delivered => "delivered",
                    ParcelState::Failed => "failed",
                    other => {
                        return Err(format!(
                            "{} left {other:?} on the handset",
                            parcel.parcel_id
                        ));
                    }
                };
                if s != want && !(s == "disputed" && tally.impostor_passes > 0) {
                    return Err(format!(
                        "{}: handset says {want}, server says {s}",
                        parcel.parcel_id
                    ));
                }
                *server_status.entry(s).or_default() += 1;
            }
        }
    }
    let disputes = dispatch.get("/v1/disputes").await?;
    let n_disputes = disputes["disputes"].as_array().map_or(0, Vec::len);
    let signals: Vec<String> = disputes["signals"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["kind"].as_str().map(String::from))
        .collect();
    if n_disputes as u32 != tally.impostor_passes {
        return Err(format!(
            "{n_disputes} disputes, expected {}",
            tally.impostor_passes
        ));
    }
    p.step(&format!("server agrees on every parcel: {server_status:?}; {n_disputes} disputes; signals: {signals:?}"));

    // --- 7. close the day
    let before = read_notices(&notices_dir)?.0;
    let closed = dispatch
        .post(&format!("/v1/days/{date}/close"), json!({}))
        .await?;
    let moved: Vec<String> = closed["parcel_ids"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    let next_date = closed["next_date"].as_str().unwrap_or("?").to_string();
    let mut moved_with_code = 0;
    for pid in &moved {
        let v = dispatch.get(&format!("/v1/parcels/{pid}")).await?;
        if v["requires_code"] == true {
            moved_with_code += 1;
        }
        if v["delivery_date"].as_str() != Some(next_date.as_str()) {
            return Err(format!("{pid} was not moved to {next_date}: {v}"));
        }
    }
    let after = wait_notices(&notices_dir, before + moved_with_code, &p).await?;
    let mut changed = 0;
    for pid in &moved {
        if let (Some(old), Some(new)) = (notices.get(pid), after.get(pid)) {
            if old.code.is_some() && old.code != new.code {
                changed += 1;
            }
        }
    }
    if changed != moved_with_code {
        return Err(format!(
            "{changed} of {moved_with_code} redelivered parcels got a new code"
        ));
    }
    p.step(&format!(
        "day closed: {} undelivered parcels moved to {next_date} with a new attempt; {moved_with_code} new codes and notices",
        moved.len()
    ));

    // --- summary
    let (notices_total, _) = read_notices(&notices_dir)?;
    let mut vm = tally.verify_ms.clone();
    vm.sort_by(f64::total_cmp);
    let median = |v: &[f64]| v.get(v.len() / 2).copied().unwrap_or(0.0);
    sync_ms.sort_by(f64::total_cmp);
    let failed_total: u32 = tally.failed.values().sum();
    out("");
    out("  doorcode demo: one delivery day");
    out("  ------------------------------------------------------------");
    out(&format!(
        "  couriers / stops / parcels        {} / {} / {}",
        couriers.len(),
        couriers.len() as u32 * a.stops,
        parcels.len()
    ));
    out(&format!(
        "  delivered with a code             {} ({} read aloud, parsed from speech)",
        tally.delivered_code, tally.spoken
    ));
    out(&format!(
        "  delivered without a code          {}",
        tally.delivered_no_code
    ));
    out(&format!(
        "  failed                            {failed_total}"
    ));
    for (reason, n) in &tally.failed {
        out(&format!("    {reason:<31} {n}"));
    }
    out(&format!(
        "  wrong tries at the door           {} (typo on {}, impostor on {})",
        tally.wrong_tries,
        typo_parcel.as_deref().unwrap_or("-"),
        impostor_parcel.as_deref().unwrap_or("-")
    ));
    out(&format!("  disputes (server's full check)    {n_disputes}"));
    out(&format!("  code entered after a reissue      {reissued}"));
    out(&format!(
        "  notices sent                      {notices_total} (incl. {moved_with_code} for {next_date})"
    ));
    out(&format!(
        "  confirmations uploaded            {uploaded} accepted, {duplicates} duplicates, 0 lost"
    ));
    out(&format!(
        "  offline verify (incl. fallback)   median {:.2} ms over {} checks",
        median(&vm),
        vm.len()
    ));
    out(&format!(
        "  handset sync                      median {:.1} ms over {} syncs",
        median(&sync_ms),
        sync_ms.len()
    ));
    out(&format!(
        "  whole demo                        {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    out("  ------------------------------------------------------------");
    out(&format!("  data dir      {}", dir.display()));
    out(&format!("  notices       {}", notices_dir.display()));
    out(&format!("  handset dbs   {}", hdir.display()));
    if let Some(url) = moved
        .first()
        .and_then(|pid| after.get(pid))
        .and_then(|n| n.track_url.clone())
    {
        out(&format!(
            "  track page    {url}{}",
            if a.serve {
                ""
            } else {
                "  (run with --serve to keep it up)"
            }
        ));
    }
    out(&format!(
        "  try it        cargo run --release -- handset --db {} status",
        hdir.join(format!("{}.db", couriers[0].id)).display()
    ));
    if a.serve {
        out(&format!("\nserving at {} until Ctrl-C", server.url()));
        let _ = tokio::signal::ctrl_c().await;
    }
    server.shutdown().await;
    Ok(())
}

/// The `n`-th parcel (0-based) on a handset that needs a code.
fn first_code_parcel(h: &Handset, n: usize) -> DemoResult<String> {
    h.stops()
        .map_err(|e| e.to_string())?
        .into_iter()
        .flat_map(|s| s.parcels)
        .filter(|p| p.requires_code)
        .nth(n)
        .map(|p| p.parcel_id)
        .ok_or_else(|| "no parcel needing a code".into())
}

/// A verify through the sync client (online first, offline fallback), timed.
async fn verify(c: &Courier, pid: &str, said: &str, t: &mut Tally) -> DemoResult<VerifyOutcome> {
    let start = Instant::now();
    let out = c
        .client
        .verify(pid, said)
        .await
        .map_err(|e| format!("{pid}: {e}"))?;
    t.verify_ms.push(start.elapsed().as_secs_f64() * 1e3);
    let verified = match &out {
        VerifyOutcome::Accepted { verified, .. }
        | VerifyOutcome::Rejected { verified, .. }
        | VerifyOutcome::Locked { verified, .. } => *verified,
    };
    if verified == doorcode_core::confirmation::Verified::Offline {
        t.verified_offline += 1;
    }
    Ok(out)
}
