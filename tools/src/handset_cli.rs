//! `doorcode handset`: a desktop handset on the same core the phones run.
//! Every command prints JSON on stdout; errors go to stderr with a non-zero
//! exit code. Secrets (device key, token) live in `<db>.secrets/`, mode 0600.

use chrono::NaiveDate;
use clap::{Args, Subcommand};
use doorcode_core::confirmation::FailReason;
use doorcode_core::handset::Handset;
use doorcode_core::input::{self, Language};
use doorcode_core::secrets::FileSecretStore;
use doorcode_core::sync::{ManifestSync, SyncClient, SyncConfig, SyncObserver, SyncProgress};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Args)]
pub struct HandsetArgs {
    /// The handset database (created if missing).
    #[arg(long)]
    db: PathBuf,
    #[command(subcommand)]
    cmd: HandsetCmd,
}

#[derive(Subcommand)]
enum HandsetCmd {
    /// Enroll with a one-time code from dispatch.
    Enroll {
        #[arg(long)]
        server: String,
        #[arg(long)]
        code: String,
        #[arg(long, default_value = "desktop handset")]
        name: String,
    },
    /// Pull the day's manifest and upload confirmations (progress on stderr).
    Sync {
        /// Delivery date (default: today on this machine).
        #[arg(long)]
        date: Option<NaiveDate>,
        /// Confirmations per upload request; smaller suits a poor link.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
        batch_size: u32,
    },
    /// Today's stops with each parcel's state.
    Stops,
    /// Check a code: online first, offline when the server cannot be reached.
    Verify {
        parcel: String,
        /// What the customer said or the courier typed ("four two double seven one oh").
        #[arg(required = true, num_args = 1..)]
        text: Vec<String>,
        /// Check against the offline tag only, without asking the server.
        #[arg(long)]
        offline: bool,
        /// The languages the code may be spoken in, first one first: en, es,
        /// pt, fr, de, it, hi (Hindi in Latin letters). Default: en.
        /// Before or after the text: `verify P cuatro dos … --lang es,en`.
        #[arg(long, value_delimiter = ',', value_parser = parse_language)]
        lang: Vec<Language>,
    },
    /// Hand over a parcel that needs no code.
    Deliver { parcel: String },
    /// Record that a parcel was not handed over.
    Fail {
        parcel: String,
        /// customer_absent, refused, locked_out, address_not_found, damaged or other.
        #[arg(long)]
        reason: String,
    },
    /// Ask the depot to send the customer's notice again (the code never arrived).
    Resend { parcel: String },
    /// Enrollment, counts, the outbox and refused confirmations.
    Status,
}

fn parse_language(tag: &str) -> Result<Language, String> {
    input::parse_languages(tag)
        .map_err(|e| e.to_string())?
        .first()
        .copied()
        .ok_or_else(|| "name a language: en, es, pt, fr, de, it or hi".to_string())
}

/// Where a handset database keeps its secrets.
pub fn secrets_dir(db: &Path) -> PathBuf {
    let mut name = db.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".secrets");
    db.with_file_name(name)
}

fn open(db: &Path) -> Result<Arc<Handset>, String> {
    let secrets = FileSecretStore::new(secrets_dir(db)).map_err(|e| e.to_string())?;
    let h = Handset::open(db, Arc::new(secrets))
        .map_err(|e| format!("cannot open the handset database {}: {e}", db.display()))?;
    Ok(Arc::new(h))
}

#[allow(clippy::print_stdout)]
fn print(v: &impl Serialize) -> ExitCode {
    match serde_json::to_string_pretty(v) {
        Ok(s) => {
            println!("{s}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e.to_string()),
    }
}

/// A sync's steps on stderr as it runs (stdout stays one JSON document).
struct StderrProgress;

impl SyncObserver for StderrProgress {
    fn on_progress(&self, p: &SyncProgress) {
        match p {
            SyncProgress::Started { date } => eprintln!("doorcode handset: syncing {date}"),
            SyncProgress::ManifestPulled { manifest } => match manifest {
                ManifestSync::Pulled {
                    revision,
                    stops,
                    parcels,
                } => eprintln!(
                    "doorcode handset: manifest revision {revision} pulled (stops: {stops}, parcels: {parcels})"
                ),
                ManifestSync::Unchanged { revision } => match revision {
                    Some(r) => eprintln!("doorcode handset: manifest revision {r} is current"),
                    None => eprintln!("doorcode handset: manifest is current"),
                },
                ManifestSync::NoManifest => {
                    eprintln!("doorcode handset: no route for this handset that day")
                }
                ManifestSync::Failed { error } => {
                    eprintln!("doorcode handset: manifest not updated: {error}")
                }
            },
            SyncProgress::Uploading { done, total } => {
                eprintln!("doorcode handset: uploaded {done} of {total}")
            }
            // The report goes to stdout, an error through `fail`.
            SyncProgress::Done { .. } | SyncProgress::Failed { .. } => {}
        }
    }
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("doorcode handset: {msg}");
    ExitCode::FAILURE
}

pub async fn run(a: HandsetArgs) -> ExitCode {
    match run_inner(a).await {
        Ok(code) => code,
        Err(msg) => fail(&msg),
    }
}

async fn run_inner(a: HandsetArgs) -> Result<ExitCode, String> {
    let h = open(&a.db)?;
    let err = |e: doorcode_core::Error| e.to_string();
    Ok(match a.cmd {
        HandsetCmd::Enroll { server, code, name } => {
            let c = SyncClient::new(h).map_err(err)?;
            let id = c.enroll(&server, &code, &name).await.map_err(err)?;
            print(&serde_json::json!({
                "device_id": id.device_id,
                "courier_id": id.courier_id,
                "server": server,
                "server_keys": id.server_keys.iter().map(|k| &k.kid).collect::<Vec<_>>(),
            }))
        }
        HandsetCmd::Sync { date, batch_size } => {
            let cfg = SyncConfig {
                batch_size,
                ..SyncConfig::default()
            };
            let c = SyncClient::with_config(h, cfg).map_err(err)?;
            print(&c.sync_observed(date, &StderrProgress).await.map_err(err)?)
        }
        HandsetCmd::Stops => print(&h.stops().map_err(err)?),
        HandsetCmd::Verify {
            parcel,
            text,
            offline,
            lang,
        } => {
            h.set_languages(&lang).map_err(err)?;
            let text = text.join(" ");
            let out = if offline {
                h.verify(&parcel, &text).map_err(err)?
            } else {
                SyncClient::new(h)
                    .map_err(err)?
                    .verify(&parcel, &text)
                    .await
                    .map_err(err)?
            };
            print(&out)
        }
        HandsetCmd::Deliver { parcel } => print(&h.deliver(&parcel).map_err(err)?),
        HandsetCmd::Fail { parcel, reason } => {
            let r = FailReason::parse(&reason).ok_or_else(|| {
                let all: Vec<_> = FailReason::ALL.iter().map(|r| r.as_str()).collect();
                format!("unknown reason {reason:?}; use one of {}", all.join(", "))
            })?;
            print(&h.fail(&parcel, r).map_err(err)?)
        }
        HandsetCmd::Resend { parcel } => {
            SyncClient::new(h)
                .map_err(err)?
                .resend(&parcel)
                .await
                .map_err(err)?;
            print(&serde_json::json!({ "parcel_id": parcel, "resend": "requested" }))
        }
        HandsetCmd::Status => {
            let status = h.status().map_err(err)?;
            let rejected = h.rejected_confirmations().map_err(err)?;
            let server = h.with_store(|s| s.server_url()).map_err(err)?;
            print(&serde_json::json!({ "status": status, "server": server, "rejected": rejected }))
        }
    })
}
