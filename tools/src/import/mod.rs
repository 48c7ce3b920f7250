//! `doorcode import --server URL parcels.csv [routes.csv]`: a dispatcher's
//! export from a warehouse or shop system, sent through the dispatch API.
//!
//! First every row of both files is checked and every bad row is reported
//! with its line; nothing is sent unless all rows are good. Then the parcels
//! go in batches, then the routes, one request each, with a progress bar, and
//! a summary says what was created, updated, unchanged and rejected (with reasons).
//! Parcels are keyed by `parcel_id` and routes by `route_id` and day, so
//! running the same files again changes nothing: every item answers
//! `unchanged` (docs/SERVER.md).

pub mod csv_in;

use clap::Args;
use csv_in::{ParcelRow, RouteRows, RowError};
use doorcode_core::dispatch::{DispatchClient, DispatchError};
use doorcode_core::wire::{ParcelIn, ParcelStatus, RouteStatus};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;

/// The most bad rows printed; the rest are counted.
const MAX_SHOWN: usize = 100;

#[derive(Args)]
pub struct ImportArgs {
    /// The server's base URL, e.g. `https://depot.example.com`. The dispatch
    /// token is read from `DOORCODE_TOKEN` (never from the command line,
    /// where other users could read it).
    #[arg(long, env = "DOORCODE_SERVER")]
    server: String,
    /// Parcels, one row each: parcel_id, recipient_name, address, value,
    /// currency and optionally email, phone, requires_code.
    parcels: PathBuf,
    /// Routes, one row per parcel on a stop: route_id, courier_id,
    /// delivery_date, stop_id, address, parcel_id and optionally recipient.
    routes: Option<PathBuf>,
    /// Parcels per request (the server takes at most 10,000).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    batch: u32,
    /// Only check the files; send nothing.
    #[arg(long)]
    check: bool,
}

/// What the server did, for the summary.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub parcels_created: usize,
    pub parcels_updated: usize,
    pub parcels_unchanged: usize,
    pub routes_created: usize,
    pub routes_updated: usize,
    pub routes_unchanged: usize,
    /// `where: why` for every rejected parcel or route.
    pub rejected: Vec<String>,
}

#[allow(clippy::print_stdout)]
fn out(s: &str) {
    println!("{s}");
}

fn fail(s: &str) -> ExitCode {
    eprintln!("doorcode import: {s}");
    ExitCode::FAILURE
}

pub async fn run(a: ImportArgs) -> ExitCode {
    let token = match std::env::var("DOORCODE_TOKEN") {
        Ok(t) if !t.trim().is_empty() => t.trim().to_string(),
        _ => {
            return fail(
                "set DOORCODE_TOKEN to the dispatch token (printed once at the server's first start)",
            );
        }
    };
    if !(a.server.starts_with("http://") || a.server.starts_with("https://")) {
        return fail(&format!(
            "--server {:?} must be the server's URL, e.g. https://depot.example.com",
            a.server
        ));
    }
    let (parcels, routes) = match read_files(&a) {
        Ok(v) => v,
        Err(errors) => {
            for e in errors.iter().take(MAX_SHOWN) {
                eprintln!("{e}");
            }
            if errors.len() > MAX_SHOWN {
                eprintln!("… and {} more", errors.len() - MAX_SHOWN);
            }
            return fail(&format!(
                "{} problem(s) in the files; nothing was sent. Fix the rows above and run it again.",
                errors.len()
            ));
        }
    };
    let route_rows: usize = routes.iter().map(|r| r.lines.len()).sum();
    if a.check {
        out(&format!(
            "checked: {} parcels and {} routes ({route_rows} rows) are good; nothing sent (--check)",
            parcels.len(),
            routes.len()
        ));
        return ExitCode::SUCCESS;
    }
    let client = match DispatchClient::new(&a.server, &token) {
        Ok(c) => c,
        Err(e) => return fail(&e.to_string()),
    };
    let batch = usize::try_from(a.batch).unwrap_or(500);
    let progress = Progress::new((parcels.len() + route_rows) as u64);
    let result = send(&client, &a, &parcels, &routes, batch, &progress).await;
    progress.finish();
    match result {
        Ok(s) => {
            print_summary(&s);
            if s.rejected.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err((s, e)) => {
            print_summary(&s);
            fail(&format!(
                "{e}. Stopped; what was sent is kept. Running the same files again is safe: it creates nothing twice."
            ))
        }
    }
}

fn read_files(a: &ImportArgs) -> Result<(Vec<ParcelRow>, Vec<RouteRows>), Vec<RowError>> {
    let parcels = csv_in::read_parcels(&a.parcels);
    let routes = match &a.routes {
        Some(p) => csv_in::read_routes(p),
        None => Ok(Vec::new()),
    };
    match (parcels, routes) {
        (Ok(p), Ok(r)) => Ok((p, r)),
        (p, r) => Err(p
            .err()
            .unwrap_or_default()
            .into_iter()
            .chain(r.err().unwrap_or_default())
            .collect()),
    }
}

/// A bar on a terminal; one line per step otherwise (logs, CI, tests).
struct Progress {
    bar: Option<ProgressBar>,
    total: u64,
}

impl Progress {
    fn new(total: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::new(total);
            if let Ok(style) =
                ProgressStyle::with_template("{msg:8} [{bar:40}] {pos}/{len} rows ({eta} left)")
            {
                b.set_style(style.progress_chars("=> "));
            }
            b
        });
        Self { bar, total }
    }

    fn step(&self, what: &str, done: u64) {
        match &self.bar {
            Some(b) => {
                b.set_message(what.to_string());
                b.set_position(done);
            }
            None => eprintln!("import: {done}/{} rows sent ({what})", self.total),
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

type Stopped = (Summary, DispatchError);

async fn send(
    client: &DispatchClient,
    a: &ImportArgs,
    parcels: &[ParcelRow],
    routes: &[RouteRows],
    batch: usize,
    progress: &Progress,
) -> Result<Summary, Stopped> {
    let mut s = Summary::default();
    let parcels_file = a.parcels.display().to_string();
    let mut done = 0u64;
    for chunk in parcels.chunks(batch) {
        let items: Vec<ParcelIn> = chunk.iter().map(|r| r.parcel.clone()).collect();
        let answer = match client.parcels(&items).await {
            Ok(a) => a,
            Err(e) => return Err((s, e)),
        };
        for (row, r) in chunk.iter().zip(&answer.results) {
            match r.status {
                ParcelStatus::Created => s.parcels_created += 1,
                ParcelStatus::Updated => s.parcels_updated += 1,
                ParcelStatus::Unchanged => s.parcels_unchanged += 1,
                ParcelStatus::Rejected | ParcelStatus::Unknown => {
                    let why = match (&r.reason, &r.message) {
                        (Some(reason), Some(m)) => format!("{reason}: {m}"),
                        (Some(reason), None) => reason.to_string(),
                        (None, Some(m)) => m.clone(),
                        (None, None) => "rejected without a reason".into(),
                    };
                    s.rejected.push(format!(
                        "{parcels_file} line {} parcel {}: {why}",
                        row.line, row.parcel.parcel_id
                    ));
                }
            }
        }
        done += chunk.len() as u64;
        progress.step("parcels", done);
    }
    let routes_file = a
        .routes
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    for r in routes {
        match client.route(&r.route).await {
            Ok(o) => match o.status {
                RouteStatus::Created => s.routes_created += 1,
                RouteStatus::Unchanged => s.routes_unchanged += 1,
                RouteStatus::Updated | RouteStatus::Unknown => s.routes_updated += 1,
            },
            Err(DispatchError::Refused { status, body, .. }) => s.rejected.push(format!(
                "{routes_file} line {} route {} on {}: HTTP {status} {}: {}",
                r.lines.first().copied().unwrap_or(0),
                r.route.route_id,
                r.route.delivery_date,
                body.error,
                body.message
            )),
            Err(e) => return Err((s, e)),
        }
        done += r.lines.len() as u64;
        progress.step("routes", done);
    }
    Ok(s)
}

fn print_summary(s: &Summary) {
    out(&format!(
        "parcels: {} created, {} updated, {} unchanged",
        s.parcels_created, s.parcels_updated, s.parcels_unchanged
    ));
    out(&format!(
        "routes: {} created, {} updated, {} unchanged",
        s.routes_created, s.routes_updated, s.routes_unchanged
    ));
    out(&format!("rejected: {}", s.rejected.len()));
    for r in &s.rejected {
        out(&format!("  {r}"));
    }
}
