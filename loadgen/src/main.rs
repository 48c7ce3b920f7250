//! `doorcode-load`: times a real `doorcode serve` process on loopback (morning
//! sync storm, 304 re-pulls, online verify, confirmation ingest) on SQLite and
//! on PostgreSQL, next to its floors measured in the same run: a minimal axum
//! server answering same-size static bytes (HTTP floor) and raw batched
//! inserts of the same confirmation rows (storage floor). Progress goes to
//! stderr; one markdown table goes to stdout.
//!
//! ```sh
//! cargo build --release -p doorcode-tools -p doorcode-loadgen
//! target/release/doorcode-load --couriers 50 --backend both
//! target/release/doorcode-load --storm 10000 --parcels 40 --backend sqlite
//! ```

mod day;
mod floor;
mod pg;
mod procs;
mod stats;
mod storm;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "doorcode-load",
    version,
    args_conflicts_with_subcommands = true
)]
/// Load generator: a real `doorcode serve` against its HTTP and storage floors.
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// The HTTP floor: static bytes over axum, until killed (started by the run itself).
    #[command(hide = true)]
    FloorServer {
        #[arg(long, default_value_t = 16 * 1024 * 1024)]
        max_bytes: usize,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backend {
    Sqlite,
    Postgres,
    Both,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Couriers, each with one handset (default 50; 3 with --quick).
    #[arg(long)]
    couriers: Option<usize>,
    /// Stops per route (default 250; 20 with --quick).
    #[arg(long)]
    stops: Option<usize>,
    /// Parcels per route, nine in ten needing a code (default 400; 30 with --quick).
    #[arg(long)]
    parcels: Option<usize>,
    /// Stored and 304 manifest GETs per handset (default 5; 2 with --quick).
    #[arg(long)]
    rounds: Option<usize>,
    /// Online checks per handset (default 20; 8 with --quick).
    #[arg(long)]
    verifies: Option<usize>,
    /// Confirmations per upload.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    #[arg(long, value_enum, default_value = "both")]
    backend: Backend,
    /// PostgreSQL server; each run gets a fresh schema, dropped afterwards.
    #[arg(
        long,
        env = "DOORCODE_TEST_PG",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pg: String,
    /// A tiny day, for a smoke test.
    #[arg(long)]
    quick: bool,
    /// The `doorcode` binary (default: the one next to this executable).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Where the data dirs go (default: the system temp dir); same file system as the storage floor.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The morning storm at fleet scale instead of the full day: this many
    /// enrolled handsets each pull their manifest and re-pull it (304);
    /// routes of --parcels parcels (default 40 here).
    #[arg(long)]
    storm: Option<usize>,
    /// Handsets in flight at once during --storm (the server gets
    /// `--max-connections` of this plus a margin).
    #[arg(long, default_value_t = 1000)]
    concurrency: usize,
    /// Retention under load: first plan a history day 20 days back for this
    /// many couriers (a server run on a clock moved back), then run the day
    /// and restart the server with `--retention-days 7` right before the
    /// ingest, so its retention job purges the history while the uploads run.
    #[arg(long, default_value_t = 0)]
    history: usize,
    /// Keep the run's data dirs and server logs (the path is printed).
    #[arg(long)]
    keep: bool,
    /// RUST_LOG for the server (its logs go to <data dir>/server.log).
    #[arg(long, default_value = "info")]
    server_log: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("doorcode-load: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Some(Command::FloorServer { max_bytes }) => rt.block_on(floor::serve(max_bytes)),
        None => rt.block_on(run(cli.run)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("doorcode-load: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

async fn run(a: RunArgs) -> Result<()> {
    if a.storm.is_some() {
        return run_storm(a).await;
    }
    let q = a.quick;
    let p = day::Params {
        couriers: a.couriers.unwrap_or(if q { 3 } else { 50 }),
        stops: a.stops.unwrap_or(if q { 20 } else { 250 }),
        parcels: a.parcels.unwrap_or(if q { 30 } else { 400 }),
        rounds: a.rounds.unwrap_or(if q { 2 } else { 5 }),
        verifies: a.verifies.unwrap_or(if q { 8 } else { 20 }),
        batch: a.batch,
    };
    if p.couriers == 0 || p.parcels == 0 || p.stops == 0 || p.rounds == 0 || p.batch == 0 {
        bail!("--couriers, --stops, --parcels, --rounds and --batch must be at least 1");
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let bin = procs::server_bin(a.server_bin.as_deref())?;
    let run_dir = RunDir::new(&a, "doorcode-load-")?;
    let base = run_dir.path();
    eprintln!(
        "doorcode-load: {} couriers x {} parcels ({} stops), {} GET rounds, {} verifies, batches of {}; server {}; load average {}",
        p.couriers,
        p.parcels,
        p.stops,
        p.rounds,
        p.verifies,
        p.batch,
        bin.display(),
        load_average()
    );
    let http = http_client(p.couriers)?;
    let floor = procs::start_floor(&base.join("floor.log"), 16 * 1024 * 1024)?;

    let mut lines = Vec::new();
    if matches!(a.backend, Backend::Sqlite | Backend::Both) {
        let (data, spec) = server_spec(&a, &bin, base, None)?;
        let (server, ingest_restart) = start_for_day(&http, &spec, &p, a.history).await?;
        let t = day::Target {
            backend: "SQLite",
            server,
            spec: &spec,
            floor: &floor,
            data_dir: &data,
            pg_floor: None,
            pg_connections: 0,
            ingest_restart,
        };
        lines.extend(day::run(&http, t, &p).await?);
        let bytes = sqlite_bytes(&data)?;
        eprintln!(
            "[SQLite] database after the day: {bytes} bytes, {} per courier",
            bytes / p.couriers as u64
        );
    }
    if matches!(a.backend, Backend::Postgres | Backend::Both) {
        pg::connect(&a.pg).await.context(
            "PostgreSQL is needed for --backend postgres|both (or use --backend sqlite)",
        )?;
        let schema = format!("load_{}", uuid::Uuid::new_v4().simple());
        let (data, spec) = server_spec(&a, &bin, base, Some(&schema))?;
        let result = async {
            let (server, ingest_restart) = start_for_day(&http, &spec, &p, a.history).await?;
            let t = day::Target {
                backend: "PostgreSQL",
                server,
                spec: &spec,
                floor: &floor,
                data_dir: &data,
                pg_floor: Some(&a.pg),
                pg_connections: 16,
                ingest_restart,
            };
            let lines = day::run(&http, t, &p).await?;
            let bytes = pg::schema_bytes(&a.pg, &schema).await?;
            eprintln!(
                "[PostgreSQL] schema after the day: {bytes} bytes, {} per courier",
                bytes / p.couriers as u64
            );
            anyhow::Ok(lines)
        }
        .await;
        let dropped = pg::drop_schema(&a.pg, &schema).await;
        lines.extend(result?);
        dropped?;
    }
    eprintln!("doorcode-load: done; load average {}", load_average());
    print_table(&lines);
    Ok(())
}

/// Days back of the `--history` day; the restart before the ingest keeps 7.
const HISTORY_DAYS_BACK: i64 = 20;

/// The server for the day. With `--history H`: a first run on a clock 20
/// days back plans that day for H couriers (their notices go out), then the
/// day's server starts on the same data; the returned arguments restart it
/// before the ingest with a window the history is outside of.
async fn start_for_day(
    http: &reqwest::Client,
    spec: &procs::ServerSpec,
    p: &day::Params,
    history: usize,
) -> Result<(procs::Proc, Option<Vec<String>>)> {
    if history == 0 {
        return Ok((spec.start(&[])?, None));
    }
    let back = HISTORY_DAYS_BACK.to_string();
    let seed = spec.start(&[format!("--clock-offset-days=-{back}")])?;
    let admin = seed
        .admin_token
        .clone()
        .ok_or_else(|| anyhow::anyhow!("no admin token"))?;
    let date = chrono::Utc::now().date_naive() - chrono::Duration::days(HISTORY_DAYS_BACK);
    eprintln!(
        "[history] planning {history} couriers x {} parcels on {date}",
        p.parcels
    );
    let hp = day::Params {
        couriers: history,
        ..p.clone()
    };
    day::plan_day(http, &seed.url, &admin, &hp, date, "H").await?;
    day::drain_notices(http, &seed.url, &admin).await?;
    drop(seed);
    let mut server = spec.restart(&[], "server-day.log")?;
    server.admin_token = Some(admin);
    Ok((server, Some(vec!["--retention-days=7".to_string()])))
}

/// `--storm N`: one storm per chosen backend, one `storm:` line each on
/// stdout; fails if any handset saw an error.
async fn run_storm(a: RunArgs) -> Result<()> {
    let n = a.storm.unwrap_or(0);
    let parcels = a.parcels.unwrap_or(40);
    let p = day::Params {
        couriers: n,
        stops: a.stops.unwrap_or(parcels.div_ceil(2)),
        parcels,
        rounds: 1,
        verifies: 0,
        batch: a.batch,
    };
    if n == 0 || p.parcels == 0 || p.stops == 0 || a.concurrency == 0 {
        bail!("--storm, --parcels, --stops and --concurrency must be at least 1");
    }
    storm::check_open_files(a.concurrency)?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let bin = procs::server_bin(a.server_bin.as_deref())?;
    let run_dir = RunDir::new(&a, "doorcode-storm-")?;
    let base = run_dir.path();
    eprintln!(
        "doorcode-load: storm of {n} handsets, {} parcels on {} stops each, {} at a time; server {}; load average {}",
        p.parcels,
        p.stops,
        a.concurrency,
        bin.display(),
        load_average()
    );
    let http = http_client(a.concurrency)?;
    let max_conn = [format!(
        "--max-connections={}",
        storm::max_connections(a.concurrency)
    )];
    let mut reports = Vec::new();
    if matches!(a.backend, Backend::Sqlite | Backend::Both) {
        let (_, spec) = server_spec(&a, &bin, base, None)?;
        let server = spec.start(&max_conn)?;
        reports.push((
            "SQLite",
            storm::run(&http, &server, &p, a.concurrency).await?,
        ));
    }
    if matches!(a.backend, Backend::Postgres | Backend::Both) {
        pg::connect(&a.pg).await.context(
            "PostgreSQL is needed for --backend postgres|both (or use --backend sqlite)",
        )?;
        let schema = format!("storm_{}", uuid::Uuid::new_v4().simple());
        let result = async {
            let (_, spec) = server_spec(&a, &bin, base, Some(&schema))?;
            let server = spec.start(&max_conn)?;
            storm::run(&http, &server, &p, a.concurrency).await
        }
        .await;
        let dropped = pg::drop_schema(&a.pg, &schema).await;
        reports.push(("PostgreSQL", result?));
        dropped?;
    }
    eprintln!("doorcode-load: done; load average {}", load_average());
    let mut failed = false;
    for (backend, r) in &reports {
        eprintln!(
            "[{backend}] manifest {} bytes; first pull p50 {:.1} ms p99 {:.1} ms; 304 p50 {:.1} ms p99 {:.1} ms",
            r.manifest_bytes,
            r.first_pull.p50(),
            r.first_pull.p99(),
            r.re_pull.p50(),
            r.re_pull.p99()
        );
        if let Some(e) = &r.first_error {
            eprintln!("[{backend}] first error: {e}");
            failed = true;
        }
        print_storm_line(backend, r);
    }
    if failed {
        bail!("the storm saw errors (above)");
    }
    Ok(())
}

#[allow(clippy::print_stdout)]
fn print_storm_line(backend: &str, r: &storm::Report) {
    println!("{} ({backend})", r.line());
}

/// The run's temp dir, removed at the end unless `--keep`.
enum RunDir {
    Temp(tempfile::TempDir),
    Kept(PathBuf),
}

impl RunDir {
    fn path(&self) -> &std::path::Path {
        match self {
            RunDir::Temp(t) => t.path(),
            RunDir::Kept(p) => p,
        }
    }
}

impl RunDir {
    /// A fresh temp dir (under `--dir` if given), kept with `--keep`.
    fn new(a: &RunArgs, prefix: &str) -> Result<Self> {
        let mut b = tempfile::Builder::new();
        b.prefix(prefix);
        let dir = match &a.dir {
            Some(d) => b.tempdir_in(d),
            None => b.tempdir(),
        }
        .context("creating the run's temp dir")?;
        if a.keep {
            let p = dir.keep();
            eprintln!("doorcode-load: keeping {}", p.display());
            Ok(RunDir::Kept(p))
        } else {
            Ok(RunDir::Temp(dir))
        }
    }
}

/// One client for the run, with a connection per handset in flight.
fn http_client(in_flight: usize) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(in_flight + 8)
        .build()
        .context("HTTP client")
}

/// The data dir and server for one backend: SQLite in `<base>/sqlite`, or
/// PostgreSQL in `schema` (data dir `<base>/postgres`).
fn server_spec(
    a: &RunArgs,
    bin: &std::path::Path,
    base: &std::path::Path,
    schema: Option<&str>,
) -> Result<(PathBuf, procs::ServerSpec)> {
    let data = base.join(if schema.is_some() {
        "postgres"
    } else {
        "sqlite"
    });
    std::fs::create_dir_all(&data).with_context(|| format!("data dir {}", data.display()))?;
    let spec = procs::ServerSpec {
        bin: bin.to_path_buf(),
        data_dir: data.clone(),
        database: schema.map(|s| pg::with_schema(&a.pg, s)),
        log_level: a.server_log.clone(),
    };
    Ok((data, spec))
}

/// The SQLite database with its WAL: what a day left on disk.
fn sqlite_bytes(dir: &std::path::Path) -> Result<u64> {
    let mut total = 0;
    for name in ["doorcode.db", "doorcode.db-wal"] {
        if let Ok(m) = std::fs::metadata(dir.join(name)) {
            total += m.len();
        }
    }
    Ok(total)
}

#[allow(clippy::print_stdout)]
fn print_table(lines: &[day::Line]) {
    println!(
        "| backend | phase | requests | throughput | p50 | p99 | floor | floor throughput | floor p50 | floor p99 | ratio to floor |"
    );
    println!("|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|");
    for l in lines {
        let m = &l.measured;
        let (floor, ft, fp50, fp99, ratio) = match &l.floor {
            Some((name, f)) => (
                name.clone(),
                format!("{:.0} {}", f.per_second(), l.unit),
                format!("{:.2} ms", f.p50()),
                format!("{:.2} ms", f.p99()),
                if f.per_second() > 0.0 {
                    format!("{:.0}%", 100.0 * m.per_second() / f.per_second())
                } else {
                    "-".into()
                },
            ),
            None => ("-".into(), "-".into(), "-".into(), "-".into(), "-".into()),
        };
        println!(
            "| {} | {} | {} | {:.0} {} | {:.2} ms | {:.2} ms | {floor} | {ft} | {fp50} | {fp99} | {ratio} |",
            l.backend,
            l.phase,
            m.requests,
            m.per_second(),
            l.unit,
            m.p50(),
            m.p99(),
        );
    }
}
