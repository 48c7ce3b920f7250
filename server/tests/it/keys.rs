//! Track tokens are stored only as HMACs (DESIGN "Several nodes on one
//! database"), on SQLite and PostgreSQL, over real HTTP:
//!
//! - a dump of every column of every table yields no working tracking link:
//!   every run of URL-safe characters in it (and every 43-character window
//!   of one, the length of a token) is tried as `/track/{token}` and answers
//!   404, while the link in the notice answers 200;
//! - a database written before migration 0005, with clear tokens, is converted at
//!   start: the link already sent keeps working, the clear token is gone
//!   from every table, and the parcel gets a derived link of its own.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::pg::PgSchema;
use crate::support::*;
use serde_json::json;
use std::collections::BTreeSet;
use std::path::Path;

const NOW: &str = "2026-11-23T08:00:00Z";
const DAY: &str = "2026-11-23";

/// Every text value of every column of every table (on PostgreSQL each
/// row as JSON text, which holds every column's value).
async fn all_values(dir: &Path, pg: Option<&PgSchema>) -> Vec<String> {
    match pg {
        None => dump::sqlite_rows(dir)
            .into_iter()
            .flat_map(|(_, values)| values)
            .map(|v| match v {
                rusqlite::types::Value::Text(s) => s,
                rusqlite::types::Value::Blob(b) => String::from_utf8_lossy(&b).into_owned(),
                v => format!("{v:?}"),
            })
            .collect(),
        Some(pg) => dump::pg_rows(pg)
            .await
            .into_iter()
            .map(|(_, row)| row)
            .collect(),
    }
}

/// What could be a token in these values: each maximal run of base64url
/// characters, and each 43-character window of a longer run.
fn candidates(values: &[String]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for v in values {
        for run in v.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_')) {
            if run.is_empty() || run.len() > 100 {
                continue;
            }
            out.insert(run.to_string());
            if run.len() > 43 {
                for i in 0..=run.len() - 43 {
                    out.insert(run[i..i + 43].to_string());
                }
            }
        }
    }
    out
}

#[test]
fn candidates_find_a_token_inside_a_value() {
    let tok = "Ab-_0123456789abcdefghijklmnopqrstuvwxyzABC";
    let c = candidates(&[format!("see https://x.example/track/{tok}?a=1 now")]);
    assert!(c.contains(tok));
    let c = candidates(&[format!("xx{tok}yy")]);
    assert!(c.contains(tok), "a token glued to other characters");
}

/// Try every candidate as a tracking link, each from its own client
/// address (the lookup limit is per client); returns the status of each
/// that did not answer 404.
async fn working_links(s: &Server, cands: &BTreeSet<String>) -> Vec<(String, u16)> {
    let mut bad = Vec::new();
    for (i, c) in cands.iter().enumerate() {
        let ip = format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255);
        let r = s
            .http
            .get(format!("{}/track/{c}", s.url))
            .header("x-forwarded-for", ip)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        if status != 404 {
            bad.push((c.clone(), status));
        }
    }
    bad
}

fn cfg(dir: &Path, pg: Option<&PgSchema>) -> doorcode_server::Config {
    let mut c = config(dir, NOW);
    c.database = pg.map(|p| p.url.clone());
    c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    c
}

async fn status_of(s: &Server, url: &str) -> u16 {
    s.http.get(url).send().await.unwrap().status().as_u16()
}

async fn a_dump_gives_no_working_link(pg: Option<&PgSchema>) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let s = start(cfg(dir, pg)).await;
    let parcels: Vec<_> = (1..=3)
        .map(|i| json!({"parcel_id": format!("K-{i}"), "recipient": {"name": "Jo", "email": format!("k{i}@example.com")}, "address": format!("{i} Key Street"), "value": 100.0, "currency": "EUR"}))
        .collect();
    s.admin_ok("/v1/parcels", json!({ "parcels": parcels }))
        .await;
    s.admin_ok("/v1/routes",
            json!({"route_id": "R-K", "courier_id": "C-K", "delivery_date": DAY,
                "stops": [{"stop_id": "S-1", "address": "1 Key Street", "parcel_ids": ["K-1", "K-2", "K-3"]}]})).await;
    // A reissue too: its old link must be dead, its new one stored as a hash.
    s.admin_ok("/v1/parcels/K-3/reissue", json!({})).await;
    s.wait_outbox_empty().await;
    // K-1, K-2 and K-3's new attempt (its first notice may be sent or dropped).
    let notices = s.wait_notices(3).await;
    let links: Vec<String> = notices
        .iter()
        .map(|n| n["track_url"].as_str().unwrap().to_string())
        .collect();
    let (_, detail) = s.admin_get("/v1/parcels/K-3").await;
    let k3 = detail["track_url"].as_str().unwrap().to_string();
    assert_eq!(status_of(&s, &k3).await, 200, "the reissued link works");
    for n in &notices {
        let l = n["track_url"].as_str().unwrap();
        let got = status_of(&s, l).await;
        if n["parcel_id"] == "K-3" && l != k3 {
            assert_eq!(got, 404, "K-3's first link is void after the reissue");
        } else {
            assert_eq!(got, 200, "{}: the notice's link works", n["parcel_id"]);
        }
    }
    let values = all_values(dir, pg).await;
    let cands = candidates(&values);
    let tokens: Vec<&str> = links
        .iter()
        .map(|l| l.rsplit('/').next().unwrap())
        .collect();
    for t in &tokens {
        assert!(
            !values.iter().any(|v| v.contains(t)),
            "a token is in the database"
        );
    }
    assert!(
        cands.len() > 50,
        "the dump has content to try: {}",
        cands.len()
    );
    let bad = working_links(&s, &cands).await;
    assert!(
        bad.is_empty(),
        "values of the dump that open a page: {bad:?}"
    );
    assert_eq!(
        status_of(&s, &k3).await,
        200,
        "the real link still works after {} tries",
        cands.len()
    );
    println!(
        "dump: {} values, {} candidates, all 404",
        values.len(),
        cands.len()
    );
    s.handle.shutdown().await;
}

on_both_backends!(
    a_dump_gives_no_working_link: a_dump_of_every_table_gives_no_working_link_sqlite,
    a_dump_of_every_table_gives_no_working_link_postgres
);

/// A clear token as schema 3 stored it (43 base64url characters).
const OLD: [&str; 2] = [
    "OLDtokenOLDtokenOLDtokenOLDtokenOLDtoken001",
    "OLDtokenOLDtokenOLDtokenOLDtokenOLDtoken002",
];

fn old_rows() -> String {
    let mut sql = String::new();
    for (i, t) in OLD.iter().enumerate() {
        sql.push_str(&format!(
            "INSERT INTO parcels(parcel_id, recipient_name, email, address, value, currency, requires_code,
               track_token, status, delivery_date, attempt, created_at, updated_at)
             VALUES('O-{i}', 'Old Customer', 'old@example.com', 'Old Street 1', 10, 'EUR', TRUE, '{t}',
               'scheduled', '{DAY}', 1, '2026-11-20T08:00:00.000000Z', '2026-11-20T08:00:00.000000Z');\n"
        ));
    }
    sql
}

async fn clear_tokens_are_converted(dir: &Path, pg: Option<PgSchema>) {
    let s = start(cfg(dir, pg.as_ref())).await;
    for (i, t) in OLD.iter().enumerate() {
        assert_eq!(
            status_of(&s, &format!("{}/track/{t}", s.url)).await,
            200,
            "the link sent before the upgrade still works"
        );
        let (_, v) = s.admin_get(&format!("/v1/parcels/O-{i}")).await;
        let new = v["track_url"].as_str().unwrap();
        assert!(!new.ends_with(t), "a derived link of its own: {new}");
        assert_eq!(status_of(&s, new).await, 200, "and it works");
    }
    let values = all_values(dir, pg.as_ref()).await;
    for t in OLD {
        assert!(
            !values.iter().any(|v| v.contains(t)),
            "the clear token is gone from every table"
        );
    }
    s.handle.shutdown().await;
    // A second start finds nothing to convert and the old links still work.
    let mut c = cfg(dir, pg.as_ref());
    c.clock = std::sync::Arc::new(|| t(NOW));
    let h = doorcode_server::start(c).await.unwrap();
    let r = reqwest::get(format!("{}/track/{}", h.url(), OLD[0]))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    h.shutdown().await;
    if let Some(pg) = pg {
        pg.drop_schema().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_track_tokens_are_converted_at_start_sqlite() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    migrations::sqlite_at(
        &dir.join("doorcode.db"),
        3,
        &format!(
            "PRAGMA user_version = 3;\n{}",
            old_rows().replace("TRUE", "1")
        ),
    );
    clear_tokens_are_converted(dir, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_track_tokens_are_converted_at_start_postgres() {
    let Some(pg) = crate::support::pg::fresh_schema("clear_tokens_converted").await else {
        return;
    };
    migrations::postgres_at(&pg, 3, &old_rows()).await;
    let tmp = tempfile::tempdir().unwrap();
    clear_tokens_are_converted(tmp.path(), Some(pg)).await;
}
