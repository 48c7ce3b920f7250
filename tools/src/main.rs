//! The `doorcode` binary: `serve`, `demo`, `handset`, `rotate-key` and `import`.

use chrono::NaiveDate;
use clap::{Parser, Subcommand};
use doorcode_server::config::{Calendar, CodePolicy, Config};
use doorcode_tools::{demo, handset_cli, import};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "doorcode",
    version,
    about = "doorcode: parcels handed over only against a one-time delivery code"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the depot server.
    Serve(Box<ServeArgs>),
    /// Run a whole delivery day end to end against a real server, and summarize it.
    Demo(demo::DemoArgs),
    /// A desktop handset on the same core as the phones; every command prints JSON.
    Handset(handset_cli::HandsetArgs),
    /// Send parcels and routes from CSV files (token in `DOORCODE_TOKEN`); checks every row first.
    Import(import::ImportArgs),
    /// Retire the manifest signing key (its public key stays published) and make a new one;
    /// the database records the new key set (docs/OPERATIONS.md for several nodes).
    RotateKey(RotateArgs),
}

#[derive(clap::Args)]
struct RotateArgs {
    #[arg(long, env = "DOORCODE_DATA_DIR", default_value = "doorcode-data")]
    data_dir: PathBuf,
    /// The database the nodes serve, as `serve --database` (default: the
    /// data dir's SQLite file).
    #[arg(long, env = "DOORCODE_DATABASE")]
    database: Option<String>,
    /// Do not rotate: record this data dir's key set as the fleet's (after
    /// deleting a retired `keys/<kid>.pub` on every node).
    #[arg(long)]
    record_only: bool,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Data directory: code key, tokens, signing keys, SQLite database, notices.
    #[arg(long, default_value = "doorcode-data", env = "DOORCODE_DATA_DIR")]
    data_dir: PathBuf,
    #[arg(long, default_value = "127.0.0.1:8080", env = "DOORCODE_LISTEN")]
    listen: SocketAddr,
    /// `sqlite:PATH` (default `<data-dir>/doorcode.db`) or
    /// `postgres://USER@HOST:PORT/DB[?schema=NAME&pool_size=N]`.
    #[arg(long, env = "DOORCODE_DATABASE")]
    database: Option<String>,
    /// A notice channel; repeat it for several. `file:DIR` (default
    /// `file:<data-dir>/notices`), `smtps://USER:PASS@HOST[:465]`,
    /// `smtp://USER:PASS@HOST:587?tls=starttls`, `smtp://HOST:PORT` (plain
    /// relay), each with `&ca=PATH` and `&from=ADDR`, or `webhook:URL` (SMS,
    /// signed). The environment variable takes a space-separated list.
    #[arg(long, env = "DOORCODE_NOTIFY", value_delimiter = ' ')]
    notify: Vec<String>,
    /// `whsec_<base64>`: the Standard Webhooks secret that signs webhook notices.
    #[arg(long, env = "DOORCODE_WEBHOOK_SECRET", hide_env_values = true)]
    webhook_secret: Option<String>,
    /// Public base URL for tracking links (default `http://<listen>`).
    #[arg(long, env = "DOORCODE_PUBLIC_URL")]
    public_url: Option<String>,
    /// The depot's IANA time zone; delivery dates are local days there.
    #[arg(long, default_value = "UTC", env = "DOORCODE_TIME_ZONE")]
    time_zone: chrono_tz::Tz,
    /// Parcels worth at least this much need a code, unless `requires_code` says otherwise.
    #[arg(long, default_value_t = 50.0)]
    value_threshold: f64,
    /// Working days, e.g. `mon-sat` or `mon,tue,thu`.
    #[arg(long, default_value = "mon-sat")]
    working_days: String,
    /// Holidays, comma-separated `YYYY-MM-DD`.
    #[arg(long, value_delimiter = ',')]
    holidays: Vec<NaiveDate>,
    /// Wrong tries before a parcel locks.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    max_attempts: u32,
    /// Bits of the offline tag in manifests.
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u8).range(1..=32))]
    tag_bits: u8,
    /// Digits per code.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u8).range(6..=8))]
    code_digits: u8,
    /// Log JSON lines instead of text.
    #[arg(long)]
    json_logs: bool,
    /// Also serve `/metrics` here without a token (on the public listener it
    /// needs the dispatch token). Bind it where only the scraper can reach it.
    #[arg(long, env = "DOORCODE_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Reverse proxies whose `X-Forwarded-For` is believed, `CIDR[,CIDR…]`:
    /// from them, the client address of every rate limit is the right-most
    /// entry that is not itself a trusted proxy. Without it the header is ignored.
    #[arg(long, env = "DOORCODE_TRUSTED_PROXIES", value_delimiter = ',')]
    trusted_proxies: Vec<doorcode_server::client_addr::Cidr>,
    /// Open connections at most; more wait in the listen backlog.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_connections: u32,
    /// Seconds a notice sender's claim lasts (renewed every third while it
    /// sends). For tests of the fleet; the default suits every channel.
    #[arg(long, default_value_t = 60, hide = true, value_parser = clap::value_parser!(u64).range(1..=3600))]
    notice_lease_secs: u64,
    /// Days a parcel's personal data is kept after its last delivery day
    /// (docs/OPERATIONS.md "Data lifecycle").
    #[arg(long, env = "DOORCODE_RETENTION_DAYS", default_value_t = doorcode_server::domain::lifecycle::DEFAULT_RETENTION_DAYS,
        value_parser = clap::value_parser!(u32).range(0..=i64::from(doorcode_server::domain::lifecycle::MAX_RETENTION_DAYS)))]
    retention_days: u32,
    /// Seconds between runs of the retention job. For load tests of the
    /// data lifecycle; the hourly default suits every depot.
    #[arg(long, default_value_t = 3600, hide = true, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    retention_every_secs: u64,
    /// Run the server's clock this many days in the past. Only for load
    /// tests that need a history (`doorcode-load --history`); never on a
    /// live depot, whose codes and days it would move.
    #[arg(long, default_value_t = 0, hide = true, allow_negative_numbers = true,
        value_parser = clap::value_parser!(i64).range(-3650..=0))]
    clock_offset_days: i64,
}

#[tokio::main]
async fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve(a) => serve(*a).await,
        Command::Demo(a) => demo::run(a).await,
        Command::Handset(a) => handset_cli::run(a).await,
        Command::Import(a) => import::run(a).await,
        Command::RotateKey(a) => rotate(a).await,
    }
}

async fn rotate(a: RotateArgs) -> ExitCode {
    use doorcode_server::fleet;
    let mut cfg = Config::new(a.data_dir.clone(), SocketAddr::from(([127, 0, 0, 1], 0)));
    cfg.database = a.database;
    let storage = match doorcode_server::open_storage(&cfg).await {
        Ok(s) => s,
        Err(e) => return fail(&e.to_string()),
    };
    let now = chrono::Utc::now();
    if a.record_only {
        return match fleet::record_signing_keys(&a.data_dir, storage.as_ref(), now).await {
            Ok(set) => {
                say(&format!("signing key set recorded: {set}"));
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e.to_string()),
        };
    }
    match fleet::rotate_signing_key(&a.data_dir, storage.as_ref(), now).await {
        Ok((old, new)) => {
            say(&format!(
                "signing key rotated: {old} retired (still published), {new} current; \
                 copy signing-key and keys/ to every other node, then restart them all"
            ));
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e.to_string()),
    }
}

#[allow(clippy::print_stdout)]
fn say(s: &str) {
    println!("{s}");
}

fn fail(s: &str) -> ExitCode {
    eprintln!("doorcode: {s}");
    ExitCode::FAILURE
}

async fn serve(a: ServeArgs) -> ExitCode {
    doorcode_server::init_tracing(a.json_logs);
    let working_days = match Calendar::parse_working_days(&a.working_days) {
        Ok(w) => w,
        Err(e) => return fail(&e),
    };
    if !a.value_threshold.is_finite() {
        return fail("--value-threshold must be a number");
    }
    let mut cfg = Config::new(a.data_dir, a.listen);
    cfg.database = a.database;
    cfg.notify = a.notify;
    cfg.webhook_secret = a.webhook_secret;
    cfg.public_url = a.public_url;
    cfg.policy = CodePolicy {
        value_threshold: a.value_threshold,
    };
    cfg.calendar = Calendar {
        time_zone: a.time_zone,
        working_days,
        holidays: a.holidays,
    };
    cfg.max_attempts = a.max_attempts;
    cfg.tag_bits = a.tag_bits;
    cfg.code_digits = a.code_digits;
    cfg.metrics_listen = a.metrics_listen;
    cfg.trusted_proxies = a.trusted_proxies;
    cfg.max_connections = usize::try_from(a.max_connections).unwrap_or(usize::MAX);
    cfg.notice_lease = std::time::Duration::from_secs(a.notice_lease_secs);
    cfg.retention_days = a.retention_days;
    cfg.retention_every = std::time::Duration::from_secs(a.retention_every_secs);
    if a.clock_offset_days != 0 {
        let offset = chrono::Duration::days(a.clock_offset_days);
        cfg.clock = std::sync::Arc::new(move || chrono::Utc::now() + offset);
    }
    let mut handle = match doorcode_server::start(cfg).await {
        Ok(h) => h,
        Err(e) => return fail(&e.to_string()),
    };
    if let Some(t) = &handle.admin_token {
        say(&format!(
            "dispatch admin token (shown once, stored hashed): {t}"
        ));
    }
    if let Some(m) = handle.metrics_addr {
        say(&format!("doorcode metrics on http://{m}/metrics"));
    }
    say(&format!("doorcode listening on {}", handle.url()));
    tokio::select! {
        _ = stop_signal() => {
            tracing::info!("stopping");
            handle.shutdown().await;
        }
        _ = handle.wait() => {}
    }
    ExitCode::SUCCESS
}

/// Ctrl-C, or SIGTERM from a service manager.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
