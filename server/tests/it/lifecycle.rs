//! The data lifecycle over real HTTP, on SQLite and PostgreSQL:
//!
//! - an erase: every table and every file of the data directory (the SQLite
//!   file and its WAL byte for byte, the notice files) dumped before and
//!   after; the customer's name, email, phone and address are in the first
//!   dump and in none of the second, and the anonymous record stays;
//! - a simulated history: 120 days of parcels for three couriers with the
//!   clock moved forward, the retention job run each morning: the tables
//!   stop growing once the window is full, `/v1/stats` still counts every
//!   day, and nothing personal older than the window is left.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::board::*;
use crate::support::pg::PgSchema;
use crate::support::*;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use doorcode_core::codes::derive_code;
use doorcode_core::confirmation::FailReason;
use doorcode_server::storage::lifecycle::Erase;
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// A clock the test moves.
#[derive(Clone)]
struct Clock(Arc<AtomicI64>);

impl Clock {
    fn at(s: &str) -> Self {
        Self(Arc::new(AtomicI64::new(t(s).timestamp())))
    }
    fn set(&self, at: DateTime<Utc>) {
        self.0.store(at.timestamp(), Ordering::SeqCst);
    }
    fn install(&self, cfg: &mut doorcode_server::Config) {
        let c = self.0.clone();
        cfg.clock =
            Arc::new(move || DateTime::from_timestamp(c.load(Ordering::SeqCst), 0).unwrap());
    }
}

/// Every file under `dir`, byte for byte, with its name.
fn dump_files(dir: &Path, out: &mut Vec<u8>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            dump_files(&p, out);
        } else {
            out.extend_from_slice(p.display().to_string().as_bytes());
            out.push(b'\n');
            out.extend_from_slice(&std::fs::read(&p).unwrap());
            out.push(b'\n');
        }
    }
}

/// Every row of every table, as text.
async fn dump_tables(dir: &Path, pg: Option<&PgSchema>) -> String {
    let mut out = String::new();
    match pg {
        None => {
            for (t, values) in dump::sqlite_rows(dir) {
                out.push_str(&t);
                for v in values {
                    out.push_str(&format!(" | {v:?}"));
                }
                out.push('\n');
            }
        }
        Some(pg) => {
            for (t, row) in dump::pg_rows(pg).await {
                out.push_str(&format!("{t} | {row}\n"));
            }
        }
    }
    out
}

/// The database rows and the data directory's files, as one text to grep.
async fn dump(dir: &Path, pg: Option<&PgSchema>) -> String {
    let mut files = Vec::new();
    dump_files(dir, &mut files);
    let mut s = dump_tables(dir, pg).await;
    s.push_str(&String::from_utf8_lossy(&files));
    s
}

async fn server(dir: &Path, clock: &Clock, pg: Option<&PgSchema>) -> Server {
    let mut cfg = config(dir, "2026-11-23T06:00:00Z");
    clock.install(&mut cfg);
    cfg.database = pg.map(|p| p.url.clone());
    start(cfg).await
}

async fn confirm(s: &Server, h: &Handset, envs: Vec<Value>) {
    let results = s.upload(h, envs).await;
    for r in &results {
        assert_eq!(r["status"], "accepted", "{results:?}");
    }
}

async fn admin_post_raw(s: &Server, path: &str, token: &str) -> (u16, Value) {
    let r = s
        .http
        .post(format!("{}{path}", s.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let st = r.status().as_u16();
    (st, r.json().await.unwrap_or(Value::Null))
}

struct Person {
    name: &'static str,
    email: &'static str,
    phone: &'static str,
    address: &'static str,
}

impl Person {
    fn needles(&self) -> [&'static str; 4] {
        [self.name, self.email, self.phone, self.address]
    }
}

const ERASED: Person = Person {
    name: "Zelda Quixotefield",
    email: "zelda.quixote@example.org",
    phone: "+4915550001234",
    address: "77 Unusualname Allee",
};

const KEPT: Person = Person {
    name: "Kaspar Keepsworth",
    email: "kaspar.keep@example.org",
    phone: "+4915550009876",
    address: "12 Keepalive Road",
};

fn parcel_json(id: &str, p: &Person) -> Value {
    json!({"parcel_id": id, "recipient": {"name": p.name, "email": p.email, "phone": p.phone},
        "address": p.address, "value": 100.0, "currency": "EUR"})
}

async fn erase_leaves_no_personal_data(pg: Option<&PgSchema>) {
    let tmp = tempfile::tempdir().unwrap();
    let clock = Clock::at("2026-11-23T06:00:00Z");
    let s = server(tmp.path(), &clock, pg).await;
    s.admin_ok(
        "/v1/parcels",
        json!({"parcels": [parcel_json("P-E", &ERASED), parcel_json("P-K", &KEPT)]}),
    )
    .await;
    s.admin_ok("/v1/routes", json!({"route_id": "R-1", "courier_id": "C-1", "delivery_date": "2026-11-23", "stops": [
        {"stop_id": "S-1", "address": ERASED.address, "recipient": ERASED.name, "parcel_ids": ["P-E"]},
        {"stop_id": "S-2", "address": KEPT.address, "recipient": KEPT.name, "parcel_ids": ["P-K"]}]})).await;
    let mut h = s.enroll("C-1").await;
    let m = s.manifest(&h, "2026-11-23").await;
    s.wait_notices(2).await;
    clock.set(t("2026-11-23T09:05:00Z"));
    let door = Door::of(&m, "2026-11-23");
    let c = h.delivered_right(&door, "P-E", 1, "2026-11-23T09:00:00Z");
    confirm(&s, &h, vec![serde_json::to_value(h.sign(&c)).unwrap()]).await;

    let before = dump(tmp.path(), pg).await;
    for n in ERASED.needles().into_iter().chain(KEPT.needles()) {
        assert!(before.contains(n), "{n:?} is stored before the erase");
    }

    // Refusals change nothing.
    assert_eq!(
        admin_post_raw(&s, "/v1/parcels/P-E/erase", "nope").await.0,
        401
    );
    assert_eq!(
        admin_post_raw(&s, "/v1/parcels/P-X/erase", &s.admin)
            .await
            .0,
        404
    );
    let (st, v) = admin_post_raw(&s, "/v1/parcels/P-E/erase?force=maybe", &s.admin).await;
    assert_eq!(st, 400, "{v}");
    let (st, v) = admin_post_raw(&s, "/v1/parcels/P-K/erase", &s.admin).await;
    assert_eq!(st, 409, "still scheduled: {v}");
    assert_eq!(v["error"], "conflict");

    let (st, v) = admin_post_raw(&s, "/v1/parcels/P-E/erase", &s.admin).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["record"]["final_state"], "delivered");
    assert_eq!(v["removed"]["parcels"], 1);
    assert!(v["removed"]["notice_files"].as_u64().unwrap() >= 1, "{v}");
    let after = dump(tmp.path(), pg).await;
    for n in ERASED.needles() {
        assert!(!after.contains(n), "{n:?} is still stored after the erase");
    }
    for n in KEPT.needles() {
        assert!(after.contains(n), "{n:?} of another parcel was kept");
    }
    assert!(
        after
            .lines()
            .any(|l| l.starts_with("parcel_records") && l.contains("P-E")),
        "the anonymous record stays"
    );
    assert_eq!(s.admin_get("/v1/parcels/P-E").await.0, 404);
    let (st, v) = s.admin_get("/v1/stats?from=2026-11-23&to=2026-11-23").await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["days"][0]["parcels"], 2);
    assert_eq!(v["days"][0]["delivered"], 1);

    // Forced: the code is void and the route's next manifest is without it.
    let (st, v) = admin_post_raw(&s, "/v1/parcels/P-K/erase?force=true", &s.admin).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["record"]["final_state"], "scheduled");
    let m2 = s.manifest(&h, "2026-11-23").await;
    assert!(m2.revision > m.revision);
    assert!(m2.parcels().next().is_none(), "no parcel left on the route");
    let (st, _) = s
        .post_as(
            &h.token,
            "/v1/verify",
            json!({"parcel_id": "P-K", "code": code("P-K", "2026-11-23", 1)}),
        )
        .await;
    assert!((400..500).contains(&st), "a voided code is refused: {st}");
    let last = dump(tmp.path(), pg).await;
    for n in ERASED.needles().into_iter().chain(KEPT.needles()) {
        assert!(!last.contains(n), "{n:?} is still stored after both erases");
    }
    let (st, v) = s.admin_get("/v1/stats?from=2026-11-23&to=2026-11-23").await;
    assert_eq!(
        (st, v["days"][0]["parcels"].as_u64()),
        (200, Some(2)),
        "{v}"
    );
    s.handle.shutdown().await;
}

on_both_backends!(erase_leaves_no_personal_data: erase_leaves_no_personal_data_on_sqlite, erase_leaves_no_personal_data_on_postgres);

#[tokio::test]
async fn stats_refuse_bad_ranges() {
    let tmp = tempfile::tempdir().unwrap();
    let s = start(config(tmp.path(), "2026-11-23T10:00:00Z")).await;
    for q in [
        "",
        "?from=2026-11-23",
        "?from=2026-11-23&to=nope",
        "?from=2026-11-24&to=2026-11-23",
        "?from=2025-01-01&to=2026-11-23",
        "?from=2026-11-23&to=2026-11-23&x=1",
    ] {
        let (st, v) = s.admin_get(&format!("/v1/stats{q}")).await;
        assert_eq!(st, 400, "{q}: {v}");
        assert!(v["error"].is_string() && v["message"].is_string(), "{v}");
    }
    let r = s
        .http
        .get(format!("{}/v1/stats?from=2026-11-23&to=2026-11-23", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let (st, v) = s.admin_get("/v1/stats?from=2025-11-23&to=2026-11-23").await;
    assert_eq!(st, 200, "366 days are allowed: {v}");
    assert_eq!(v["days"].as_array().unwrap().len(), 366);
}

// ---------- a simulated history ----------

const DAYS: i64 = 120;
const COURIERS: usize = 3;

/// Rows in the tables that hold personal data or repeat it (every table but
/// the anonymous records and the bookkeeping ones), and the database's
/// bytes: SQLite's pages in use and its file, PostgreSQL's relations.
async fn measure(dir: &Path, pg: Option<&PgSchema>) -> (i64, i64, i64) {
    const TABLES: [&str; 12] = [
        "parcels",
        "parcel_events",
        "routes",
        "stops",
        "stop_parcels",
        "manifests",
        "manifest_items",
        "confirmations",
        "signals",
        "notices",
        "enrollments",
        "parcel_records",
    ];
    let mut rows = 0;
    match pg {
        None => {
            let c = rusqlite::Connection::open(dir.join("doorcode.db")).unwrap();
            for t in TABLES {
                let n: i64 = c
                    .query_row(&format!("SELECT COUNT(*) FROM {t}"), [], |r| r.get(0))
                    .unwrap();
                if t != "parcel_records" {
                    rows += n;
                }
            }
            let pages: i64 = crate::support::dump::one(&c, "PRAGMA page_count");
            let free: i64 = crate::support::dump::one(&c, "PRAGMA freelist_count");
            let size: i64 = crate::support::dump::one(&c, "PRAGMA page_size");
            (rows, (pages - free) * size, pages * size)
        }
        Some(pg) => {
            for t in TABLES {
                if t != "parcel_records" {
                    rows += pg.count(t).await;
                }
            }
            let bytes: i64 = pg
                .client
                .query_one(
                    "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c
                     JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname = $1 AND c.relkind = 'r'",
                    &[&pg.name],
                )
                .await
                .unwrap()
                .get(0);
            (rows, bytes, bytes)
        }
    }
}

fn name_of(day: i64, courier: usize, n: usize) -> String {
    format!("Cust-D{day:03}-C{courier}-N{n}")
}

async fn a_simulated_history(pg: Option<&PgSchema>) {
    let tmp = tempfile::tempdir().unwrap();
    // Monday 5 January 2026, 06:00 UTC.
    let day0 = d("2026-01-05");
    let morning = |n: i64| {
        (day0 + Duration::days(n))
            .and_hms_opt(6, 0, 0)
            .unwrap()
            .and_utc()
    };
    let clock = Clock::at("2026-01-05T06:00:00Z");
    let mut cfg = config(tmp.path(), "2026-01-05T06:00:00Z");
    clock.install(&mut cfg);
    cfg.database = pg.map(|p| p.url.clone());
    let s = start(cfg).await;
    let app = s.handle.app.clone();
    let mut handsets = Vec::new();
    for c in 0..COURIERS {
        handsets.push(s.enroll(&format!("C-{c}")).await);
    }
    let key = vector_key();
    let mut series = Vec::new();
    let mut working = Vec::new();
    for n in 0..DAYS {
        let date: NaiveDate = day0 + Duration::days(n);
        let ds = date.to_string();
        clock.set(morning(n));
        let work = app.policy().calendar.is_working_day(date);
        working.push(work);
        if work {
            let mut parcels = Vec::new();
            for c in 0..COURIERS {
                for k in 0..3 {
                    let name = name_of(n, c, k);
                    parcels.push(json!({"parcel_id": format!("P-{n}-{c}-{k}"),
                        "recipient": {"name": name, "email": format!("{}@example.com", name.to_lowercase()), "phone": "+4915550000000"},
                        "address": format!("{name} Street 1"), "value": 100.0, "currency": "EUR"}));
                }
            }
            s.admin_ok("/v1/parcels", json!({"parcels": parcels})).await;
            for c in 0..COURIERS {
                let stops: Vec<Value> = (0..3)
                    .map(|k| json!({"stop_id": format!("S-{k}"), "address": format!("{} Street 1", name_of(n, c, k)),
                        "parcel_ids": [format!("P-{n}-{c}-{k}")]}))
                    .collect();
                s.admin_ok(
                    "/v1/routes",
                    json!({"route_id": format!("R-{c}"), "courier_id": format!("C-{c}"),
                        "delivery_date": ds, "stops": stops}),
                )
                .await;
            }
            clock.set(morning(n) + Duration::hours(3));
            for (c, h) in handsets.iter_mut().enumerate() {
                let m = s.manifest(h, &ds).await;
                let door = Door::of(&m, &ds);
                let p0 = format!("P-{n}-{c}-0");
                let code = derive_code(&key, &p0, date, 1, 6).unwrap();
                let at = (morning(n) + Duration::hours(2)).to_rfc3339();
                let ok = h.delivered(&door, &p0, 1, code.expose(), &at);
                let no = h.failed(
                    &door,
                    &format!("P-{n}-{c}-1"),
                    1,
                    FailReason::CustomerAbsent,
                    &at,
                );
                let envs = vec![
                    serde_json::to_value(h.sign(&ok)).unwrap(),
                    serde_json::to_value(h.sign(&no)).unwrap(),
                ];
                confirm(&s, h, envs).await;
            }
            while doorcode_server::notices::drain_once(&app.notifier, app.storage.as_ref())
                .await
                .unwrap()
                > 0
            {}
        }
        // The next morning the job runs.
        clock.set(morning(n + 1));
        // Alternate nodes: a finished run hands the lease back, so a node
        // started after another stopped (a restart, a rolling deploy) runs
        // at once instead of waiting out the old node's lease.
        let node = if n % 2 == 0 { "node-a" } else { "node-b" };
        let r = doorcode_server::retention::run_once(&app, node)
            .await
            .unwrap();
        assert!(r.ran, "day {n}: {node} did not get the lease");
        if let Some(pg) = pg {
            if n % 7 == 6 {
                // What autovacuum does on a live database over a week.
                for t in [
                    "parcels",
                    "parcel_events",
                    "stops",
                    "stop_parcels",
                    "routes",
                    "manifests",
                    "manifest_items",
                    "confirmations",
                    "signals",
                    "notices",
                ] {
                    pg.client
                        .batch_execute(&format!("VACUUM {}.{t}", pg.name))
                        .await
                        .unwrap();
                }
            }
        }
        series.push(measure(tmp.path(), pg).await);
    }
    let backend = if pg.is_some() { "postgres" } else { "sqlite" };
    for (n, (rows, used, file)) in series.iter().enumerate() {
        if n % 10 == 9 || n == 89 || n == 96 {
            println!(
                "{backend} day {:>3}: {rows} rows, {used} bytes used, {file} bytes",
                n + 1
            );
        }
    }
    // The window (90 days) is full from day 91 on: the tables stop growing.
    let (rows97, used97, file97) = series[96];
    let (rows_end, used_end, file_end) = series[(DAYS - 1) as usize];
    let max_late = series[96..].iter().map(|x| x.0).max().unwrap();
    assert!(
        max_late as f64 <= rows97 as f64 * 1.03,
        "{backend}: rows grew from {rows97} to {max_late} with the window full"
    );
    assert!(
        rows_end as f64 >= rows97 as f64 * 0.97,
        "{backend}: {rows_end} < {rows97}"
    );
    assert!(
        used_end as f64 <= used97 as f64 * 1.10 && file_end as f64 <= file97 as f64 * 1.10,
        "{backend}: bytes grew from {used97}/{file97} to {used_end}/{file_end}"
    );
    assert!(
        series[40].0 < rows97,
        "the tables grew while the window filled"
    );

    // Statistics still count every day.
    let last = day0 + Duration::days(DAYS - 1);
    let (st, v) = s
        .admin_get(&format!("/v1/stats?from={day0}&to={last}"))
        .await;
    assert_eq!(st, 200, "{v}");
    let days = v["days"].as_array().unwrap();
    assert_eq!(days.len(), DAYS as usize);
    for (n, dstat) in days.iter().enumerate() {
        let per = if working[n] { 3 } else { 0 };
        assert_eq!(dstat["parcels"], 3 * per, "day {n}: {dstat}");
        assert_eq!(dstat["delivered"], per, "day {n}: {dstat}");
        if per > 0 {
            assert_eq!(dstat["failed"]["customer_absent"], per, "day {n}: {dstat}");
            assert_eq!(dstat["open"], per, "day {n}: {dstat}");
        }
    }

    // Nothing personal older than the window, in the tables or the files.
    let all = dump(tmp.path(), pg).await;
    let cutoff = DAYS - 90;
    for n in 0..DAYS {
        if !working[n as usize] {
            continue;
        }
        let tag = format!("Cust-D{n:03}-");
        assert_eq!(
            all.contains(&tag),
            n >= cutoff,
            "day {n}: personal data {} (window starts at day {cutoff})",
            if n >= cutoff { "missing" } else { "left over" }
        );
    }
    let metrics = s.metrics().await;
    assert!(
        metrics.contains("doorcode_lifecycle_rows_total{kind=\"retention\",table=\"parcels\"}"),
        "{metrics}"
    );
    s.handle.shutdown().await;
}

on_both_backends!(a_simulated_history: a_simulated_history_on_sqlite, a_simulated_history_on_postgres);

// ---------- the board ----------

async fn board_post(
    c: &reqwest::Client,
    s: &Server,
    path: &str,
    cookie: &str,
    body: &str,
) -> (u16, String, String) {
    let r = c
        .post(format!("{}{path}", s.url))
        .header("cookie", cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let st = r.status().as_u16();
    let loc = r
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (st, loc, r.text().await.unwrap())
}

async fn board_get(c: &reqwest::Client, s: &Server, path: &str, cookie: &str) -> (u16, String) {
    let r = get_with_cookie(c, &format!("{}{path}", s.url), cookie).await;
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn the_board_erases_after_a_confirmation_and_shows_stats() {
    let tmp = tempfile::tempdir().unwrap();
    let s = start(config(tmp.path(), "2026-11-23T06:00:00Z")).await;
    s.admin_ok(
        "/v1/parcels",
        json!({"parcels": [parcel_json("P-B", &ERASED), parcel_json("P-S", &KEPT)]}),
    )
    .await;
    s.admin_ok(
        "/v1/routes",
        json!({"route_id": "R-1", "courier_id": "C-1", "delivery_date": "2026-11-23", "stops": [
        {"stop_id": "S-1", "address": KEPT.address, "parcel_ids": ["P-S"]}]}),
    )
    .await;
    let c = client();
    // Signed out: no confirmation page, no table, and the POST is refused.
    let (st, html) = board_get(&c, &s, "/board/erase?parcel_id=P-B", "").await;
    assert!(st == 200 && html.contains("Sign in") && !html.contains(ERASED.name));
    let (_, html) = board_get(&c, &s, "/board/stats", "").await;
    assert!(!html.contains("id=\"stats\""));
    assert_eq!(
        board_post(&c, &s, "/board/erase", "", "parcel_id=P-B&confirm=erase")
            .await
            .0,
        403
    );

    let (st, loc, _) = board_post(&c, &s, "/board/login", "", &format!("token={}", s.admin)).await;
    assert_eq!((st, loc.as_str()), (303, "/board"));
    let r = c
        .post(format!("{}/board/login", s.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={}", s.admin))
        .send()
        .await
        .unwrap();
    let cookie = session_cookie(r.headers());
    let (st, board) = board_get(&c, &s, "/board", &cookie).await;
    assert_eq!(st, 200);
    assert!(board.contains("action=\"/board/erase\"") && board.contains("/board/stats"));

    let (st, confirm) = board_get(&c, &s, "/board/erase?parcel_id=P-B", &cookie).await;
    assert_eq!(st, 200, "{confirm}");
    assert!(confirm.contains("cannot be undone") && confirm.contains(ERASED.name));
    let csrf = field(&confirm, "csrf");
    // A wrong token, or no confirmation field: nothing erased.
    let (st, _, _) = board_post(
        &c,
        &s,
        "/board/erase",
        &cookie,
        "csrf=nope&parcel_id=P-B&confirm=erase",
    )
    .await;
    assert_eq!(st, 403);
    let (st, loc, _) = board_post(
        &c,
        &s,
        "/board/erase",
        &cookie,
        &format!("csrf={csrf}&parcel_id=P-B"),
    )
    .await;
    assert_eq!((st, loc.as_str()), (303, "/board/erase?parcel_id=P-B"));
    assert_eq!(s.admin_get("/v1/parcels/P-B").await.0, 200);
    let (st, loc, _) = board_post(
        &c,
        &s,
        "/board/erase",
        &cookie,
        &format!("csrf={csrf}&parcel_id=P-B&confirm=erase"),
    )
    .await;
    assert_eq!((st, loc.as_str()), (303, "/board?done=erased"));
    assert_eq!(s.admin_get("/v1/parcels/P-B").await.0, 404);
    let (_, board) = board_get(&c, &s, "/board?done=erased", &cookie).await;
    assert!(board.contains("Personal data erased"));

    // Still scheduled: the page says so, and only the forced form erases.
    let (_, confirm) = board_get(&c, &s, "/board/erase?parcel_id=P-S", &cookie).await;
    assert!(confirm.contains("still out for delivery") && confirm.contains("name=\"force\""));
    let (st, _, page) = board_post(
        &c,
        &s,
        "/board/erase",
        &cookie,
        &format!("csrf={csrf}&parcel_id=P-S&confirm=erase"),
    )
    .await;
    assert_eq!(st, 409, "{page}");
    assert_eq!(s.admin_get("/v1/parcels/P-S").await.0, 200);
    let (st, _, _) = board_post(
        &c,
        &s,
        "/board/erase",
        &cookie,
        &format!("csrf={csrf}&parcel_id=P-S&confirm=erase&force=true"),
    )
    .await;
    assert_eq!(st, 303);
    assert_eq!(s.admin_get("/v1/parcels/P-S").await.0, 404);
    assert_eq!(
        board_get(&c, &s, "/board/erase?parcel_id=P-S", &cookie)
            .await
            .0,
        404
    );

    // The table has the same numbers as /v1/stats.
    let (st, table) = board_get(
        &c,
        &s,
        "/board/stats?from=2026-11-22&to=2026-11-23",
        &cookie,
    )
    .await;
    assert_eq!(st, 200);
    assert!(table.contains("id=\"stats\""), "{table}");
    let (_, v) = s.admin_get("/v1/stats?from=2026-11-23&to=2026-11-23").await;
    let parcels = v["days"][0]["parcels"].as_u64().unwrap();
    assert_eq!(parcels, 2);
    assert!(
        table.contains(&format!("<tr><td>2026-11-23</td><td>{parcels}</td>")),
        "{table}"
    );
    assert!(
        table.contains("<tr><td>2026-11-22</td><td>0</td>"),
        "{table}"
    );
    let (st, _) = board_get(
        &c,
        &s,
        "/board/stats?from=2026-11-24&to=2026-11-23",
        &cookie,
    )
    .await;
    assert_eq!(st, 400);
    s.handle.shutdown().await;
}

// ---------- schema 3: upgrade equals fresh ----------

/// A schema-2 SQLite file with a parcel, upgraded to schema 3: the same
/// tables, columns and indexes as a fresh database, the parcel kept and
/// erasable.
#[tokio::test]
async fn schema_2_upgrades_to_the_fresh_schema_on_sqlite() {
    use doorcode_server::storage::Storage;
    use doorcode_server::storage::lifecycle::LifecycleStore as _;
    use doorcode_server::storage::sqlite::SqliteStorage;
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old.db");
    migrations::sqlite_at(
        &old,
        2,
        "PRAGMA user_version = 2;
         INSERT INTO parcels(parcel_id, recipient_name, address, value, currency, requires_code,
           track_token, status, created_at, updated_at)
           VALUES('P-1', 'Old Customer', 'Old Street 1', 10, 'EUR', 0, 'tok', 'delivered',
             '2026-11-20T08:00:00.000000Z', '2026-11-20T08:00:00.000000Z');",
    );
    let s = SqliteStorage::open(&old).unwrap();
    drop(SqliteStorage::open(&dir.path().join("fresh.db")).unwrap());
    let schema = |p: &Path| -> Vec<(String, String, String)> {
        let c = rusqlite::Connection::open(p).unwrap();
        let mut out: Vec<(String, String, String)> = c
            .prepare(
                "SELECT m.type, m.name, COALESCE(group_concat(i.name || ':' || i.type || ':' || i.\"notnull\", ','), '')
                 FROM sqlite_master m LEFT JOIN pragma_table_info(m.name) i
                 WHERE m.name NOT LIKE 'sqlite_%' GROUP BY m.type, m.name",
            )
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        out.sort();
        out
    };
    let (up, fresh) = (schema(&old), schema(&dir.path().join("fresh.db")));
    assert!(up.iter().any(|(_, n, _)| n == "parcel_records"));
    assert_eq!(up, fresh, "upgraded and fresh schemas differ");
    let e = s
        .erase_parcel(
            Erase {
                parcel_id: "P-1".into(),
                force: false,
                today: d("2026-11-23"),
            },
            t("2026-11-23T06:00:00Z"),
        )
        .await
        .unwrap();
    assert_eq!(
        e.record.day,
        d("2026-11-20"),
        "never routed: its creation day"
    );
    assert!(s.parcel("P-1").await.unwrap().is_none());
}

/// The same on PostgreSQL: a schema upgraded from 2 has the columns and
/// indexes of a fresh one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_2_upgrades_to_the_fresh_schema_on_postgres() {
    use doorcode_server::storage::postgres::PostgresStorage;
    let Some(old) = crate::support::pg::fresh_schema("schema_2_upgrades_old").await else {
        return;
    };
    let Some(fresh) = crate::support::pg::fresh_schema("schema_2_upgrades_fresh").await else {
        return;
    };
    migrations::postgres_at(&old, 2, "").await;
    let up = PostgresStorage::connect(&old.url).await.unwrap();
    let new = PostgresStorage::connect(&fresh.url).await.unwrap();
    assert_eq!(
        up.schema_version().await.unwrap(),
        PostgresStorage::migrations()
    );
    async fn shape(pg: &PgSchema) -> Vec<String> {
        let mut out: Vec<String> = pg
            .client
            .query(
                "SELECT table_name || '.' || column_name || ':' || data_type || ':' || is_nullable
                 FROM information_schema.columns WHERE table_schema = $1
                 UNION ALL
                 SELECT tablename || ' ' || indexname FROM pg_indexes WHERE schemaname = $1",
                &[&pg.name],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect();
        out.sort();
        out
    }
    let (a, b) = (shape(&old).await, shape(&fresh).await);
    assert!(a.iter().any(|l| l.starts_with("parcel_records.")));
    assert_eq!(a, b, "upgraded and fresh schemas differ");
    drop((up, new));
    old.drop_schema().await;
    fresh.drop_schema().await;
}

// ---------- retention while confirmations are ingested ----------

/// A backlog of 2,000 parcels past the window is purged while a handset
/// keeps uploading: every upload is answered 200 with every item accepted,
/// and the uploads' latency while the job ran is printed.
async fn retention_under_ingest(pg: Option<&PgSchema>) {
    let tmp = tempfile::tempdir().unwrap();
    let old_day = "2026-06-01";
    let clock = Clock::at("2026-06-01T06:00:00Z");
    let mut cfg = config(tmp.path(), "2026-06-01T06:00:00Z");
    clock.install(&mut cfg);
    cfg.database = pg.map(|p| p.url.clone());
    let s = start(cfg).await;
    let parcels = |prefix: &str, n: usize| -> Vec<Value> {
        (0..n)
            .map(|i| json!({"parcel_id": format!("{prefix}-{i}"), "recipient": {"name": format!("Old {prefix} {i}")},
                "address": format!("{i} Backlog Road"), "value": 10.0, "currency": "EUR"}))
            .collect()
    };
    s.admin_ok("/v1/parcels", json!({"parcels": parcels("B", 2000)}))
        .await;
    let stops: Vec<Value> = (0..2000)
        .map(|i| json!({"stop_id": format!("S-{i}"), "address": format!("{i} Backlog Road"), "parcel_ids": [format!("B-{i}")]}))
        .collect();
    s.admin_ok("/v1/routes", json!({"route_id": "R-OLD", "courier_id": "C-OLD", "delivery_date": old_day, "stops": stops})).await;

    // 91 days later: today's route, and the backlog past the window.
    let today = d(old_day) + Duration::days(91);
    let ds = today.to_string();
    clock.set(today.and_hms_opt(6, 0, 0).unwrap().and_utc());
    s.admin_ok("/v1/parcels", json!({"parcels": parcels("T", 400)}))
        .await;
    let stops: Vec<Value> = (0..400)
        .map(|i| json!({"stop_id": format!("S-{i}"), "address": format!("{i} Today Road"), "parcel_ids": [format!("T-{i}")]}))
        .collect();
    s.admin_ok(
        "/v1/routes",
        json!({"route_id": "R-1", "courier_id": "C-1", "delivery_date": ds, "stops": stops}),
    )
    .await;
    let mut h = s.enroll("C-1").await;
    let m = s.manifest(&h, &ds).await;
    clock.set(today.and_hms_opt(10, 0, 0).unwrap().and_utc());

    let app = s.handle.app.clone();
    let job = tokio::spawn(async move {
        doorcode_server::retention::run_once(&app, "load-node")
            .await
            .unwrap()
    });
    let door = Door::of(&m, &ds);
    let (mut during, mut next) = (Vec::new(), 0);
    while next < 400 {
        let envs: Vec<Value> = (next..next + 10)
            .map(|i| {
                let c = h.conf(&door, &format!("T-{i}"), 1, &format!("{ds}T09:00:00Z"));
                serde_json::to_value(h.sign(&c)).unwrap()
            })
            .collect();
        next += 10;
        let running = !job.is_finished();
        let t0 = std::time::Instant::now();
        confirm(&s, &h, envs).await;
        if running {
            during.push(t0.elapsed());
        }
    }
    let report = job.await.unwrap();
    assert!(report.ran);
    assert_eq!(
        report.removed.0.get("parcels"),
        Some(&2000),
        "{:?}",
        report.removed
    );
    assert!(report.steps >= 4, "bounded steps: {}", report.steps);
    let (st, v) = s
        .admin_get(&format!("/v1/stats?from={old_day}&to={ds}"))
        .await;
    assert_eq!(st, 200);
    assert_eq!(
        v["days"][0]["parcels"], 2000,
        "the backlog's day still counts"
    );
    let backend = if pg.is_some() { "postgres" } else { "sqlite" };
    during.sort();
    if let Some(max) = during.last() {
        let p = |q: f64| during[((during.len() - 1) as f64 * q).round() as usize];
        println!(
            "{backend}: {} uploads of 10 while retention purged 2000 parcels in {} steps: p50 {:?}, p99 {:?}, max {max:?}",
            during.len(),
            report.steps,
            p(0.5),
            p(0.99)
        );
    } else {
        println!("{backend}: the retention run ended before the first upload");
    }
    s.handle.shutdown().await;
}

on_both_backends!(retention_under_ingest: retention_under_ingest_on_sqlite, retention_under_ingest_on_postgres);
