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
//! ```

mod day;
mod floor;
mod pg;
mod procs;
mod stats;

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
    let mut base = tempfile::Builder::new();
    base.prefix("doorcode-load-");
    let base = match &a.dir {
        Some(d) => base.tempdir_in(d),
        None => base.tempdir(),
    }
    .context("creating the run's temp dir")?;
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
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(p.couriers + 8)
        .build()
        .context("HTTP client")?;
    let floor = procs::start_floor(&base.path().join("floor.log"), 16 * 1024 * 1024)?;

    let mut lines = Vec::new();
    if matches!(a.backend, Backend::Sqlite | Backend::Both) {
        let data = base.path().join("sqlite");
        std::fs::create_dir_all(&data).context("sqlite data dir")?;
        let server = procs::start_server(&bin, &data, None, &a.server_log)?;
        let t = day::Target {
            backend: "SQLite",
            server: &server,
            floor: &floor,
            data_dir: &data,
            pg_floor: None,
            pg_connections: 0,
        };
        lines.extend(day::run(&http, &t, &p).await?);
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
        let data = base.path().join("postgres");
        std::fs::create_dir_all(&data).context("postgres data dir")?;
        let schema = format!("load_{}", uuid::Uuid::new_v4().simple());
        let result = async {
            let server = procs::start_server(
                &bin,
                &data,
                Some(&pg::with_schema(&a.pg, &schema)),
                &a.server_log,
            )?;
            let t = day::Target {
                backend: "PostgreSQL",
                server: &server,
                floor: &floor,
                data_dir: &data,
                pg_floor: Some(&a.pg),
                pg_connections: 16,
            };
            let lines = day::run(&http, &t, &p).await?;
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
