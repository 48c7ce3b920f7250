//! `doorcode demo`: a whole delivery day, end to end, against a real server on
//! loopback with embedded SQLite in a fresh directory. Handsets are the real
//! core over real HTTP; a loopback proxy per handset plays the mobile network
//! so "going offline" is a real connection failure the handset falls back from.

use crate::netsim::{Mode, Proxy};
use chrono::{NaiveDate, Utc};
use clap::Args;
use doorcode_core::confirmation::FailReason;
use doorcode_core::dispatch::DispatchClient;
use doorcode_core::handset::Handset;
use doorcode_core::input::Language;
use doorcode_core::secrets::FileSecretStore;
use doorcode_core::store::{ParcelState, VerifyOutcome};
use doorcode_core::sync::{ManifestSync, SyncClient, SyncConfig};
use doorcode_core::wire::{
    ParcelIn, ParcelState as ServerState, ParcelStatus, Recipient, RouteIn, StopIn,
};
use doorcode_server::ServerHandle;
use doorcode_server::config::Config;
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

/// What the day's steps saw, for the summary.
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
    sync_ms: Vec<f64>,
    typo_parcel: Option<String>,
    impostor_parcel: Option<String>,
    uploaded: u32,
    duplicates: u32,
    disputes: usize,
    /// The courier whose customers speak Spanish, and the parcel read in it.
    spanish_courier: Option<String>,
    spanish_parcel: Option<String>,
    /// The notice a courier asked for again from the door.
    resent_parcel: Option<String>,
    /// The parcel its customer did not order, and whether the handset refused it.
    not_ordered_parcel: Option<String>,
    held_refused: u32,
}

/// The depot for the day: a real server on loopback and its dispatcher.
struct Depot {
    server: ServerHandle,
    dispatch: DispatchClient,
    dir: PathBuf,
    notices_dir: PathBuf,
    handsets_dir: PathBuf,
}

/// The day as the shop's systems export it.
struct Plan {
    parcels: Vec<ParcelIn>,
    routes: Vec<RouteIn>,
}

/// The parcels moved by the day's close.
struct Closed {
    moved: Vec<String>,
    moved_with_code: usize,
    next_date: NaiveDate,
    notices: HashMap<String, Notice>,
}

async fn day(a: DemoArgs) -> DemoResult<()> {
    let started = Instant::now();
    let p = Progress(started);
    let date: NaiveDate = Utc::now().date_naive();
    let mut rng = Rng(a.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut tally = Tally::default();

    let depot = open_the_depot(&a, &p).await?;
    let plan = plan_the_day(&a, date, &mut rng);
    let needs_code = import_the_day(&depot, &plan, &a, &p).await?;
    wait_notices(&depot.notices_dir, needs_code, &p).await?;
    let couriers = enroll_and_sync_the_handsets(&depot, &plan, &a, date, &mut tally, &p).await?;
    let reissued = reissue_a_parcel(&depot, &couriers[0], date, &p).await?;
    wait_notices(&depot.notices_dir, needs_code + 1, &p).await?;
    at_the_doorstep(&depot, &couriers, &reissued, date, &mut tally, &p).await?;
    let (_, notices) = read_notices(&depot.notices_dir)?;
    go_out_of_coverage(&couriers, &p);
    for (ci, c) in couriers.iter().enumerate() {
        let roles = Roles {
            impostor: ci == 2 % couriers.len(),
            typo: ci == 1 % couriers.len(),
            reissued: &reissued,
        };
        deliver_offline(c, &roles, &notices, &mut rng, &mut tally, &p).await?;
    }
    if tally.verified_offline == 0 {
        return Err("no verify fell back to the offline check".into());
    }
    come_back_into_coverage(&couriers, date, &mut tally, &p).await?;
    check_the_server_agrees(&depot, &couriers, date, &mut tally, &p).await?;
    let closed = close_the_day(&depot, date, &notices, &p).await?;
    print_summary(
        &a, &depot, &couriers, &plan, &tally, &reissued, &closed, started,
    )?;
    if a.serve {
        out(&format!("\nserving at {} until Ctrl-C", depot.server.url()));
        let _ = tokio::signal::ctrl_c().await;
    }
    depot.server.shutdown().await;
    Ok(())
}

/// A fresh data dir, a server on it (embedded SQLite, every day a working
/// day), and the dispatcher's client with the printed token.
async fn open_the_depot(a: &DemoArgs, p: &Progress) -> DemoResult<Depot> {
    let dir = match &a.dir {
        Some(d) => d.clone(),
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
    let dispatch = DispatchClient::new(&server.url(), &token).map_err(|e| e.to_string())?;
    let handsets_dir = dir.join("handsets");
    std::fs::create_dir_all(&handsets_dir).map_err(|e| e.to_string())?;
    Ok(Depot {
        server,
        dispatch,
        notices_dir: server_dir.join("notices"),
        handsets_dir,
        dir,
    })
}

/// Made-up customers on `couriers` routes of `stops` stops; a quarter of the
/// stops get two parcels, a few shippers insist on a code or waive it.
fn plan_the_day(a: &DemoArgs, date: NaiveDate, rng: &mut Rng) -> Plan {
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
                let requires_code = match rng.below(20) {
                    0 => Some(true),
                    1 => Some(false),
                    _ => None,
                };
                let email = format!(
                    "{}@example.invalid",
                    name.to_lowercase().replace('é', "e").replace(' ', ".")
                );
                let phone =
                    (rng.below(2) == 0).then(|| format!("+4477009{:05}", rng.below(100_000)));
                parcels.push(ParcelIn {
                    parcel_id: id.clone(),
                    recipient: Recipient {
                        name: name.clone(),
                        email: Some(email),
                        phone,
                    },
                    address: address.clone(),
                    value: value as f64,
                    currency: "GBP".into(),
                    requires_code,
                });
                ids.push(id);
            }
            stops.push(StopIn {
                stop_id: format!("S-{c}-{s:03}"),
                address,
                recipient: Some(name),
                parcel_ids: ids,
            });
        }
        routes.push(RouteIn {
            route_id: format!("R-{c}"),
            courier_id: format!("C-{c}"),
            delivery_date: date,
            stops,
        });
    }
    Plan { parcels, routes }
}

/// Parcels, then routes, through the dispatch API; how many need a code.
async fn import_the_day(
    depot: &Depot,
    plan: &Plan,
    a: &DemoArgs,
    p: &Progress,
) -> DemoResult<usize> {
    let mut needs_code = 0usize;
    for chunk in plan.parcels.chunks(200) {
        let r = depot
            .dispatch
            .parcels(chunk)
            .await
            .map_err(|e| e.to_string())?;
        for item in &r.results {
            if item.status == ParcelStatus::Rejected {
                return Err(format!("parcel refused: {item:?}"));
            }
            if item.requires_code == Some(true) {
                needs_code += 1;
            }
        }
    }
    for route in &plan.routes {
        depot
            .dispatch
            .route(route)
            .await
            .map_err(|e| e.to_string())?;
    }
    p.step(&format!(
        "imported {} parcels ({needs_code} need a code) on {} routes of {} stops for {}",
        plan.parcels.len(),
        plan.routes.len(),
        a.stops,
        plan.routes
            .first()
            .map(|r| r.delivery_date.to_string())
            .unwrap_or_default()
    ));
    Ok(needs_code)
}

/// Each courier's handset: its own network (a proxy), enrolled with a
/// one-time code from dispatch, then its first sync pulls the manifest.
async fn enroll_and_sync_the_handsets(
    depot: &Depot,
    plan: &Plan,
    a: &DemoArgs,
    date: NaiveDate,
    tally: &mut Tally,
    p: &Progress,
) -> DemoResult<Vec<Courier>> {
    let sync_cfg = SyncConfig {
        verify_timeout: Duration::from_millis(800),
        tries_per_request: 2,
        backoff_base: Duration::from_millis(50),
        ..SyncConfig::default()
    };
    let hdir = &depot.handsets_dir;
    let mut couriers = Vec::new();
    for (i, route) in plan.routes.iter().enumerate() {
        let courier = &route.courier_id;
        let proxy = Proxy::start(depot.server.addr, a.seed + i as u64)
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
        let code = depot
            .dispatch
            .enroll(courier)
            .await
            .map_err(|e| e.to_string())?;
        client
            .enroll(
                &proxy.url(),
                &code.enrollment_code,
                &format!("{courier}'s phone"),
            )
            .await
            .map_err(|e| format!("enroll {courier}: {e}"))?;
        let t = Instant::now();
        let r = client
            .sync(Some(date))
            .await
            .map_err(|e| format!("sync {courier}: {e}"))?;
        tally.sync_ms.push(t.elapsed().as_secs_f64() * 1e3);
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
    Ok(couriers)
}

/// A customer says their notice went to an old address: dispatch reissues
/// it (new code, new notice) and the courier's handset re-syncs.
async fn reissue_a_parcel(
    depot: &Depot,
    c: &Courier,
    date: NaiveDate,
    p: &Progress,
) -> DemoResult<String> {
    let reissued = first_code_parcel(&c.handset, 4)?;
    depot
        .dispatch
        .reissue(&reissued, None)
        .await
        .map_err(|e| e.to_string())?;
    let r = c.client.sync(Some(date)).await.map_err(|e| e.to_string())?;
    p.step(&format!(
        "dispatch reissued {reissued} (new code, new notice); {} re-synced: {:?}",
        c.id, r.manifest
    ));
    Ok(reissued)
}

/// Three doors the other platforms get wrong, while the handsets still have
/// signal: a customer whose notice never came (the courier asks the depot to
/// send it again, from the door: `SyncClient::resend`), a customer who did
/// not order their parcel (they press "I did not order this" on the tracking
/// page; the handset's next sync carries the hold), and a courier whose
/// customers read their codes in Spanish (the handset reads es, then en).
async fn at_the_doorstep(
    depot: &Depot,
    couriers: &[Courier],
    reissued: &str,
    date: NaiveDate,
    tally: &mut Tally,
    p: &Progress,
) -> DemoResult<()> {
    let c = &couriers[0];
    let resent = code_parcel_except(&c.handset, &[reissued])?;
    let before = read_notices(&depot.notices_dir)?.0;
    c.client
        .resend(&resent)
        .await
        .map_err(|e| format!("{resent}: {e}"))?;
    wait_notices(&depot.notices_dir, before + 1, p).await?;
    p.step(&format!(
        "{}: the customer of {resent} says the code never came; the courier asked the depot to send it again",
        c.id
    ));
    tally.resent_parcel = Some(resent.clone());

    let c = &couriers[1 % couriers.len()];
    let not_ordered = code_parcel_except(&c.handset, &[reissued, &resent])?;
    let (_, notices) = read_notices(&depot.notices_dir)?;
    let url = notices
        .get(&not_ordered)
        .and_then(|n| n.track_url.clone())
        .ok_or_else(|| format!("no tracking link in the notice for {not_ordered}"))?;
    press_not_mine(&url).await?;
    c.client.sync(Some(date)).await.map_err(|e| e.to_string())?;
    let held = c.handset.status().map_err(|e| e.to_string())?.parcels_held;
    if held == 0 {
        return Err(format!(
            "{}: the hold on {not_ordered} did not arrive",
            c.id
        ));
    }
    p.step(&format!(
        "the customer of {not_ordered} pressed \"I did not order this\"; {} synced: {held} parcel on hold",
        c.id
    ));
    tally.not_ordered_parcel = Some(not_ordered);

    let c = &couriers[2 % couriers.len()];
    c.handset
        .set_languages(&[Language::Spanish, Language::English])
        .map_err(|e| e.to_string())?;
    tally.spanish_courier = Some(c.id.clone());
    Ok(())
}

/// The customer's side of "I did not order this": the tracking page, then
/// its button (the page's form token, from the page's own origin).
async fn press_not_mine(url: &str) -> DemoResult<()> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())?;
    let page = http
        .get(url)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?
        .text()
        .await
        .map_err(|e| e.to_string())?;
    let marker = "name=\"t\" value=\"";
    let token = page
        .find(marker)
        .map(|i| &page[i + marker.len()..])
        .and_then(|rest| rest.split('"').next())
        .ok_or("the tracking page has no form")?;
    let origin = url.split("/track/").next().unwrap_or(url);
    let form: String = token
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => (b as char).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect();
    let r = http
        .post(format!("{url}/not-mine"))
        .header("origin", origin)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("t={form}"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if r.status().as_u16() != 303 {
        return Err(format!("\"I did not order this\" answered {}", r.status()));
    }
    Ok(())
}

fn go_out_of_coverage(couriers: &[Courier], p: &Progress) {
    for c in couriers {
        c.proxy.set_mode(Mode::Offline);
    }
    p.step("handsets are out of coverage now: every request to the server fails");
}

/// Who plays which part on a courier's round.
struct Roles<'a> {
    /// An impostor at one door guesses codes until the parcel locks.
    impostor: bool,
    /// The courier mistypes one code and corrects it.
    typo: bool,
    /// The reissued parcel (its customer has the new code).
    reissued: &'a str,
}

/// One courier's round, offline: absent customers, parcels without a code,
/// codes said aloud or typed, an impostor and a typo.
async fn deliver_offline(
    c: &Courier,
    roles: &Roles<'_>,
    notices: &HashMap<String, Notice>,
    rng: &mut Rng,
    tally: &mut Tally,
    p: &Progress,
) -> DemoResult<()> {
    let stops = c.handset.stops().map_err(|e| e.to_string())?;
    for stop in &stops {
        let absent = rng.below(100) < 12;
        for parcel in &stop.parcels {
            let pid = parcel.parcel_id.as_str();
            if parcel.state == ParcelState::Held {
                // The customer did not order it: even the right code is refused.
                let code = notices
                    .get(pid)
                    .and_then(|n| n.code.clone())
                    .unwrap_or_default();
                if c.client.verify(pid, &code).await.is_ok() {
                    return Err(format!("{pid} is on hold but was verified"));
                }
                c.handset
                    .fail(pid, FailReason::Refused)
                    .map_err(|e| e.to_string())?;
                *tally.failed.entry("refused").or_default() += 1;
                tally.held_refused += 1;
                continue;
            }
            if parcel.state != ParcelState::Pending {
                continue;
            }
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
            if roles.impostor && tally.impostor_parcel.is_none() && pid != roles.reissued {
                tally.impostor_parcel = Some(pid.to_string());
                an_impostor_guesses(c, pid, &code, tally).await?;
                continue;
            }
            if roles.typo
                && tally.typo_parcel.is_none()
                && the_courier_mistypes(c, pid, &code, tally, p).await?
            {
                continue;
            }
            if tally.spanish_courier.as_deref() == Some(c.id.as_str())
                && tally.spanish_parcel.is_none()
            {
                tally.spanish_parcel = Some(pid.to_string());
                tally.spoken += 1;
                match verify(c, pid, &spoken_es(&code), tally).await? {
                    VerifyOutcome::Accepted { .. } => tally.delivered_code += 1,
                    other => return Err(format!("{pid}: the code read in Spanish gave {other:?}")),
                }
                continue;
            }
            the_customer_gives_the_code(c, pid, &code, rng, tally).await?;
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
    Ok(())
}

/// Someone at the door who is not the customer guesses five codes.
async fn an_impostor_guesses(
    c: &Courier,
    pid: &str,
    code: &str,
    tally: &mut Tally,
) -> DemoResult<()> {
    for shift in 1..=5u8 {
        match verify(c, pid, &wrong_code(code, shift), tally).await? {
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
    Ok(())
}

/// The courier mistypes one digit and sees the rejection; true when the
/// parcel is already delivered after it (the typo passed).
async fn the_courier_mistypes(
    c: &Courier,
    pid: &str,
    code: &str,
    tally: &mut Tally,
    p: &Progress,
) -> DemoResult<bool> {
    tally.typo_parcel = Some(pid.to_string());
    let mut typo: Vec<u8> = code.as_bytes().to_vec();
    typo[2] = b'0' + (typo[2].wrapping_sub(b'0') + 1) % 10;
    let typo = String::from_utf8(typo).map_err(|e| e.to_string())?;
    match verify(c, pid, &typo, tally).await? {
        VerifyOutcome::Rejected { attempts_left, .. } => {
            tally.wrong_tries += 1;
            p.step(&format!(
                "{}: typo on {pid} rejected offline ({attempts_left} tries left); retyped",
                c.id
            ));
        }
        VerifyOutcome::Accepted { .. } => tally.impostor_passes += 1,
        other => return Err(format!("typo gave {other:?}")),
    }
    Ok(c.handset
        .stops()
        .map_err(|e| e.to_string())?
        .iter()
        .flat_map(|s| &s.parcels)
        .any(|q| q.parcel_id == pid && q.state == ParcelState::Delivered))
}

/// The customer reads the code aloud ("four two double seven…") or shows it.
async fn the_customer_gives_the_code(
    c: &Courier,
    pid: &str,
    code: &str,
    rng: &mut Rng,
    tally: &mut Tally,
) -> DemoResult<()> {
    let said = if rng.below(2) == 0 {
        tally.spoken += 1;
        spoken(code, rng)
    } else {
        format!("{} {}", &code[..3], &code[3..])
    };
    match verify(c, pid, &said, tally).await? {
        VerifyOutcome::Accepted { .. } => {
            tally.delivered_code += 1;
            Ok(())
        }
        other => Err(format!(
            "{pid}: the customer's own code was refused: {other:?}"
        )),
    }
}

/// Every handset syncs again; every confirmation must be accepted.
async fn come_back_into_coverage(
    couriers: &[Courier],
    date: NaiveDate,
    tally: &mut Tally,
    p: &Progress,
) -> DemoResult<()> {
    for c in couriers {
        c.proxy.set_mode(Mode::Pass);
        let t = Instant::now();
        let r = c.client.sync(Some(date)).await.map_err(|e| e.to_string())?;
        tally.sync_ms.push(t.elapsed().as_secs_f64() * 1e3);
        if r.pending != 0 || r.rejected != 0 || !r.errors.is_empty() {
            return Err(format!(
                "{}: sync left {} pending, {} rejected: {:?}",
                c.id, r.pending, r.rejected, r.errors
            ));
        }
        tally.uploaded += r.uploaded;
        tally.duplicates += r.duplicates;
    }
    p.step(&format!(
        "back in coverage: {} confirmations uploaded and accepted ({} duplicates)",
        tally.uploaded, tally.duplicates
    ));
    Ok(())
}

/// The word a wire enum is sent as.
fn word<T: serde::Serialize>(t: &T) -> String {
    serde_json::to_value(t)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

/// Parcel by parcel, the server's state is the handset's; the disputes are
/// exactly the impostor's passes.
async fn check_the_server_agrees(
    depot: &Depot,
    couriers: &[Courier],
    date: NaiveDate,
    tally: &mut Tally,
    p: &Progress,
) -> DemoResult<()> {
    let mut server_status: BTreeMap<String, u32> = BTreeMap::new();
    for c in couriers {
        for stop in c.handset.stops().map_err(|e| e.to_string())? {
            for parcel in stop.parcels {
                let v = depot
                    .dispatch
                    .parcel(&parcel.parcel_id)
                    .await
                    .map_err(|e| e.to_string())?;
                let want = match parcel.state {
                    ParcelState::Delivered => ServerState::Delivered,
                    // Refused at the door, it stays held until dispatch decides.
                    ParcelState::Failed if parcel.held => ServerState::Held,
                    ParcelState::Failed => ServerState::Failed,
                    other => {
                        return Err(format!(
                            "{} left {other:?} on the handset",
                            parcel.parcel_id
                        ));
                    }
                };
                if v.status != want
                    && !(v.status == ServerState::Disputed && tally.impostor_passes > 0)
                {
                    return Err(format!(
                        "{}: handset says {}, server says {}",
                        parcel.parcel_id,
                        word(&want),
                        word(&v.status)
                    ));
                }
                *server_status.entry(word(&v.status)).or_default() += 1;
            }
        }
    }
    let disputes = depot
        .dispatch
        .disputes(date, None, None)
        .await
        .map_err(|e| e.to_string())?;
    let signals: Vec<String> = disputes.signals.iter().map(|s| word(&s.kind)).collect();
    tally.disputes = disputes.disputes.len();
    if tally.disputes as u32 != tally.impostor_passes {
        return Err(format!(
            "{} disputes, expected {}",
            tally.disputes, tally.impostor_passes
        ));
    }
    p.step(&format!(
        "server agrees on every parcel: {server_status:?}; {} disputes; signals: {signals:?}",
        tally.disputes
    ));
    Ok(())
}

/// Undelivered parcels move to the next working day with a new attempt:
/// a new code and a new notice for each that needs one.
async fn close_the_day(
    depot: &Depot,
    date: NaiveDate,
    notices: &HashMap<String, Notice>,
    p: &Progress,
) -> DemoResult<Closed> {
    let before = read_notices(&depot.notices_dir)?.0;
    let closed = depot
        .dispatch
        .close_day(date)
        .await
        .map_err(|e| e.to_string())?;
    let mut moved_with_code = 0;
    for pid in &closed.parcel_ids {
        let v = depot
            .dispatch
            .parcel(pid)
            .await
            .map_err(|e| e.to_string())?;
        if v.requires_code {
            moved_with_code += 1;
        }
        if v.delivery_date != Some(closed.next_date) {
            return Err(format!(
                "{pid} was not moved to {}: {v:?}",
                closed.next_date
            ));
        }
    }
    let after = wait_notices(&depot.notices_dir, before + moved_with_code, p).await?;
    let changed = closed
        .parcel_ids
        .iter()
        .filter(|pid| match (notices.get(*pid), after.get(*pid)) {
            (Some(old), Some(new)) => old.code.is_some() && old.code != new.code,
            _ => false,
        })
        .count();
    if changed != moved_with_code {
        return Err(format!(
            "{changed} of {moved_with_code} redelivered parcels got a new code"
        ));
    }
    p.step(&format!(
        "day closed: {} undelivered parcels moved to {} with a new attempt; {moved_with_code} new codes and notices",
        closed.parcel_ids.len(),
        closed.next_date
    ));
    Ok(Closed {
        moved: closed.parcel_ids,
        moved_with_code,
        next_date: closed.next_date,
        notices: after,
    })
}

#[allow(clippy::too_many_arguments)]
fn print_summary(
    a: &DemoArgs,
    depot: &Depot,
    couriers: &[Courier],
    plan: &Plan,
    tally: &Tally,
    reissued: &str,
    closed: &Closed,
    started: Instant,
) -> DemoResult<()> {
    let (notices_total, _) = read_notices(&depot.notices_dir)?;
    let mut vm = tally.verify_ms.clone();
    vm.sort_by(f64::total_cmp);
    let median = |v: &[f64]| v.get(v.len() / 2).copied().unwrap_or(0.0);
    let mut sync_ms = tally.sync_ms.clone();
    sync_ms.sort_by(f64::total_cmp);
    let failed_total: u32 = tally.failed.values().sum();
    out("");
    out("  doorcode demo: one delivery day");
    out("  ------------------------------------------------------------");
    out(&format!(
        "  couriers / stops / parcels        {} / {} / {}",
        couriers.len(),
        couriers.len() as u32 * a.stops,
        plan.parcels.len()
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
        tally.typo_parcel.as_deref().unwrap_or("-"),
        tally.impostor_parcel.as_deref().unwrap_or("-")
    ));
    out(&format!(
        "  disputes (server's full check)    {}",
        tally.disputes
    ));
    out(&format!("  code entered after a reissue      {reissued}"));
    out(&format!(
        "  code read in Spanish              {} ({}'s handset reads es, then en)",
        tally.spanish_parcel.as_deref().unwrap_or("-"),
        tally.spanish_courier.as_deref().unwrap_or("-")
    ));
    out(&format!(
        "  notice asked for again at door    {}",
        tally.resent_parcel.as_deref().unwrap_or("-")
    ));
    out(&format!(
        "  \"I did not order this\"            {} (held; the handset refused it {} time, recorded refused)",
        tally.not_ordered_parcel.as_deref().unwrap_or("-"),
        tally.held_refused
    ));
    out(&format!(
        "  notices sent                      {notices_total} (incl. {} for {})",
        closed.moved_with_code, closed.next_date
    ));
    out(&format!(
        "  confirmations uploaded            {} accepted, {} duplicates, 0 lost",
        tally.uploaded, tally.duplicates
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
    out(&format!("  data dir      {}", depot.dir.display()));
    out(&format!("  notices       {}", depot.notices_dir.display()));
    out(&format!("  handset dbs   {}", depot.handsets_dir.display()));
    if let Some(url) = closed
        .moved
        .first()
        .and_then(|pid| closed.notices.get(pid))
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
    if let Some(c) = couriers.first() {
        out(&format!(
            "  try it        cargo run --release -- handset --db {} status",
            depot.handsets_dir.join(format!("{}.db", c.id)).display()
        ));
    }
    Ok(())
}

/// The first parcel on a handset that needs a code and is none of `except`.
fn code_parcel_except(h: &Handset, except: &[&str]) -> DemoResult<String> {
    h.stops()
        .map_err(|e| e.to_string())?
        .into_iter()
        .flat_map(|s| s.parcels)
        .filter(|p| p.requires_code && !except.contains(&p.parcel_id.as_str()))
        .map(|p| p.parcel_id)
        .next()
        .ok_or_else(|| "no parcel needing a code".into())
}

/// A code as a customer says it in Spanish: "cuatro dos doble siete …".
fn spoken_es(code: &str) -> String {
    const W: [&str; 10] = [
        "cero", "uno", "dos", "tres", "cuatro", "cinco", "seis", "siete", "ocho", "nueve",
    ];
    let d: Vec<usize> = code
        .bytes()
        .map(|b| usize::from(b.wrapping_sub(b'0')) % 10)
        .collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < d.len() {
        if i + 1 < d.len() && d[i] == d[i + 1] {
            out.push(format!("doble {}", W[d[i]]));
            i += 2;
        } else {
            out.push(W[d[i]].to_string());
            i += 1;
        }
    }
    out.join(" ")
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
