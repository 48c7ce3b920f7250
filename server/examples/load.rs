//! Load generator for `docs/BENCHMARKS.md`: confirmation ingest and manifest
//! serving against real servers on loopback HTTP, on SQLite (one node) and on
//! PostgreSQL (one node, then two nodes sharing one schema). Bounded by
//! counts; prints one markdown table.
//!
//! ```sh
//! cargo run --release -p doorcode-server --example load
//! # options: --couriers 8 --parcels 60 --batch 10 --manifest-gets 200
//! # PostgreSQL from DOORCODE_TEST_PG (default postgres://postgres@127.0.0.1:5432/postgres)
//! ```
#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use chrono::{NaiveDate, Utc};
use doorcode_core::codes::{CodeKey, derive_code};
use doorcode_core::confirmation::{Confirmation, Outcome, Verified};
use doorcode_core::envelope::{SigningKey, VerifyingKey};
use doorcode_core::manifest::open_manifest;
use doorcode_server::{Config, ServerHandle};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

struct Opts {
    couriers: usize,
    parcels: usize,
    batch: usize,
    manifest_gets: usize,
    pg: String,
}

fn opts() -> Opts {
    let mut o = Opts {
        couriers: 8,
        parcels: 60,
        batch: 10,
        manifest_gets: 200,
        pg: std::env::var("DOORCODE_TEST_PG")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into()),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i + 1 < args.len() {
        let v = &args[i + 1];
        match args[i].as_str() {
            "--couriers" => o.couriers = v.parse().expect("--couriers N"),
            "--parcels" => o.parcels = v.parse().expect("--parcels N"),
            "--batch" => o.batch = v.parse().expect("--batch N"),
            "--manifest-gets" => o.manifest_gets = v.parse().expect("--manifest-gets N"),
            "--pg" => o.pg = v.clone(),
            _ => {}
        }
        i += 2;
    }
    o
}

struct Handset {
    token: String,
    key: SigningKey,
    device_id: String,
    node: usize,
}

struct Figures {
    ingest_per_s: f64,
    batch_median_ms: f64,
    manifest_per_s: f64,
    manifest_median_ms: f64,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

async fn post(http: &reqwest::Client, url: &str, token: &str, body: Value) -> Value {
    let r = http
        .post(url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{url}: {}", r.status());
    r.json().await.unwrap()
}

async fn run(name: &str, db: Option<String>, nodes: usize, o: &Opts) -> Figures {
    let dir = tempfile::tempdir().unwrap();
    let mut servers: Vec<ServerHandle> = Vec::new();
    let mut admin = String::new();
    for _ in 0..nodes {
        let mut cfg = Config::new(dir.path(), "127.0.0.1:0".parse().unwrap());
        cfg.database = db.clone();
        let h = doorcode_server::start(cfg).await.unwrap();
        if let Some(t) = &h.admin_token {
            admin = t.clone();
        }
        servers.push(h);
    }
    let urls: Vec<String> = servers.iter().map(|s| s.url()).collect();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    let key = CodeKey::from_file_text(
        std::fs::read_to_string(dir.path().join("code-key"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    let today: NaiveDate = Utc::now().date_naive();
    let date = today.format("%Y-%m-%d").to_string();

    // Dispatch: one route per courier.
    let mut all = Vec::new();
    for c in 0..o.couriers {
        for i in 0..o.parcels {
            all.push(json!({"parcel_id": format!("P-{c}-{i}"), "recipient": {"name": "C", "email": "c@example.com"},
                "address": format!("{i} Road"), "value": 100.0, "currency": "EUR"}));
        }
    }
    for chunk in all.chunks(500) {
        post(
            &http,
            &format!("{}/v1/parcels", urls[0]),
            &admin,
            json!({"parcels": chunk}),
        )
        .await;
    }
    for c in 0..o.couriers {
        let stops: Vec<Value> = (0..o.parcels)
            .collect::<Vec<_>>()
            .chunks(3)
            .enumerate()
            .map(|(s, ps)| {
                json!({"stop_id": format!("S-{s}"), "address": format!("{s} Road"),
                "parcel_ids": ps.iter().map(|i| format!("P-{c}-{i}")).collect::<Vec<_>>()})
            })
            .collect();
        post(&http, &format!("{}/v1/routes", urls[0]), &admin,
            json!({"route_id": format!("R-{c}"), "courier_id": format!("C-{c}"), "delivery_date": date, "stops": stops})).await;
    }
    let mut hs = Vec::new();
    for c in 0..o.couriers {
        let node = c % nodes;
        let e = post(
            &http,
            &format!("{}/v1/enrollments", urls[node]),
            &admin,
            json!({"courier_id": format!("C-{c}")}),
        )
        .await;
        let probe = SigningKey::generate("probe").unwrap();
        let d = post(&http, &format!("{}/v1/devices", urls[node]), "",
            json!({"enrollment_code": e["enrollment_code"], "device_public_key": probe.public_key().public_b64(), "device_name": "bench"})).await;
        let device_id = d["device_id"].as_str().unwrap().to_string();
        hs.push(Handset {
            token: d["device_token"].as_str().unwrap().to_string(),
            key: SigningKey::from_seed(device_id.clone(), *probe.seed()).unwrap(),
            device_id,
            node,
        });
    }
    let kv: Value = http
        .get(format!("{}/.well-known/doorcode-keys", urls[0]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let keys: Vec<VerifyingKey> = kv["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            VerifyingKey::from_b64(
                k["kid"].as_str().unwrap(),
                k["public_key"].as_str().unwrap(),
            )
            .unwrap()
        })
        .collect();

    // Signed confirmations, prepared before timing (handset work, not server work).
    let mut uploads: Vec<Vec<Value>> = Vec::new();
    for h in &hs {
        let r = http
            .get(format!("{}/v1/manifest?date={date}", urls[h.node]))
            .bearer_auth(&h.token)
            .send()
            .await
            .unwrap();
        let m = open_manifest(&r.json().await.unwrap(), &keys).unwrap();
        let mut envs = Vec::new();
        let mut seq = 0;
        for s in &m.stops {
            for p in &s.parcels {
                seq += 1;
                let code = derive_code(&key, &p.parcel_id, today, p.attempt, 6).unwrap();
                let c = Confirmation {
                    format: 1,
                    confirmation_id: uuid::Uuid::new_v4(),
                    device_id: h.device_id.clone(),
                    seq,
                    manifest_id: m.manifest_id.clone(),
                    revision: m.revision,
                    parcel_id: p.parcel_id.clone(),
                    delivery_date: today,
                    attempt: p.attempt,
                    outcome: Outcome::Delivered,
                    reason: None,
                    code: Some(code),
                    verified: Verified::Offline,
                    failed_attempts: 0,
                    recorded_at: Utc::now(),
                    since_sync_ms: 1000,
                };
                envs.push(serde_json::to_value(c.seal(&h.key).unwrap()).unwrap());
            }
        }
        uploads.push(envs);
    }

    // Ingest: every handset uploads its day in batches, all at once.
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (h, envs) in hs.iter().zip(uploads) {
        let (http, url, token, batch) =
            (http.clone(), urls[h.node].clone(), h.token.clone(), o.batch);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            for b in envs.chunks(batch) {
                let t = Instant::now();
                let v = post(
                    &http,
                    &format!("{url}/v1/confirmations"),
                    &token,
                    json!({"confirmations": b}),
                )
                .await;
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
                for r in v["results"].as_array().unwrap() {
                    assert_eq!(r["status"], "accepted", "{r}");
                }
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let ingest_s = started.elapsed().as_secs_f64();
    let total = (o.couriers * o.parcels) as f64;

    // Manifest serving: every handset fetches its stored manifest repeatedly.
    let started = Instant::now();
    let mut tasks = Vec::new();
    for h in &hs {
        let (http, url, token, n) = (
            http.clone(),
            urls[h.node].clone(),
            h.token.clone(),
            o.manifest_gets,
        );
        let date = date.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            for _ in 0..n {
                let t = Instant::now();
                let r = http
                    .get(format!("{url}/v1/manifest?date={date}"))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status().as_u16(), 200);
                let _ = r.bytes().await.unwrap();
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            lat
        }));
    }
    let mut mlat = Vec::new();
    for t in tasks {
        mlat.extend(t.await.unwrap());
    }
    let manifest_s = started.elapsed().as_secs_f64();
    let gets = (o.couriers * o.manifest_gets) as f64;
    for s in servers {
        s.shutdown().await;
    }
    let f = Figures {
        ingest_per_s: total / ingest_s,
        batch_median_ms: median(&mut lat),
        manifest_per_s: gets / manifest_s,
        manifest_median_ms: median(&mut mlat),
    };
    eprintln!("{name}: done");
    tokio::time::sleep(Duration::from_millis(200)).await;
    f
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let o = opts();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (pg, conn) = tokio_postgres::connect(&o.pg, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {} is needed for the comparison: {e}", o.pg));
    tokio::spawn(conn);
    let schemas: Vec<String> = (0..2)
        .map(|_| format!("bench_{}", uuid::Uuid::new_v4().simple()))
        .collect();
    let with = |s: &str| {
        let sep = if o.pg.contains('?') { '&' } else { '?' };
        format!("{}{sep}schema={s}", o.pg)
    };
    let rows = vec![
        ("SQLite, 1 node", run("sqlite", None, 1, &o).await),
        (
            "PostgreSQL, 1 node",
            run("pg-1", Some(with(&schemas[0])), 1, &o).await,
        ),
        (
            "PostgreSQL, 2 nodes",
            run("pg-2", Some(with(&schemas[1])), 2, &o).await,
        ),
    ];
    for s in &schemas {
        let _ = pg
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {s} CASCADE"))
            .await;
    }
    println!(
        "{} handsets x {} confirmations in batches of {}; {} manifest GETs per handset",
        o.couriers, o.parcels, o.batch, o.manifest_gets
    );
    println!(
        "| setup | ingest (confirmations/s) | upload batch median | manifest GETs/s | manifest GET median |"
    );
    println!("|---|---|---|---|---|");
    for (name, f) in rows {
        println!(
            "| {name} | {:.0} | {:.1} ms | {:.0} | {:.2} ms |",
            f.ingest_per_s, f.batch_median_ms, f.manifest_per_s, f.manifest_median_ms
        );
    }
}
