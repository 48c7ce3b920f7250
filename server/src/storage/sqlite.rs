//! Embedded SQLite storage: one connection (so one writer), WAL, versioned
//! migrations in `user_version` (`migrations/sqlite/`). Each trait method runs
//! in one IMMEDIATE transaction on a blocking thread: load the facts, call
//! the decision in [`crate::domain`], apply its plan.

use super::facts::*;
use super::sql::{PARCEL_FACTS, PARCEL_FACTS_FROM};
use super::*;
use crate::domain::ingest::{ConfirmationRow, IngestPlan, Keys};
use crate::domain::{self, At, Changes, Label, NoticeState, ParcelChange, RouteChange};
use chrono::{DateTime, NaiveDate, Utc};
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, ValueRef};
use rusqlite::{Connection, OptionalExtension, ToSql, Transaction, TransactionBehavior, params};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Schema migrations, applied in order; `user_version` counts the applied ones.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/sqlite/0001_init.sql"),
    include_str!("migrations/sqlite/0002_seen_revoked_signal_days.sql"),
    include_str!("migrations/sqlite/0003_lifecycle.sql"),
];

/// The SQLite backend. Cheap to clone.
#[derive(Clone)]
pub struct SqliteStorage {
    conn: Arc<Mutex<Connection>>,
}

fn be(e: impl std::fmt::Display) -> StorageError {
    StorageError::Backend(e.to_string())
}

impl From<rusqlite::Error> for StorageError {
    fn from(e: rusqlite::Error) -> Self {
        be(e)
    }
}

fn bad_text(what: &str, e: impl std::fmt::Display) -> FromSqlError {
    FromSqlError::Other(format!("{what}: {e}").into())
}

/// Statuses are stored as their [`Label`] words.
macro_rules! label_columns {
    ($($t:ty),*) => {$(
        impl ToSql for $t {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::Borrowed(ValueRef::Text(self.as_str().as_bytes())))
            }
        }
        impl FromSql for $t {
            fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
                let s = v.as_str()?;
                <$t as Label>::parse(s).ok_or_else(|| bad_text(stringify!($t), s))
            }
        }
    )*};
}

label_columns!(ParcelState, SignalKind, EventKind, NoticeState);

/// A date column: `YYYY-MM-DD`.
struct Day(NaiveDate);

impl ToSql for Day {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.0.format("%Y-%m-%d").to_string()))
    }
}

impl FromSql for Day {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
        let s = v.as_str()?;
        NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .map(Day)
            .map_err(|e| bad_text("date", e))
    }
}

/// A timestamp column: fixed-width UTC, so text order is time order.
struct Ts(DateTime<Utc>);

impl ToSql for Ts {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(
            self.0.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        ))
    }
}

impl FromSql for Ts {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
        let s = v.as_str()?;
        DateTime::parse_from_rfc3339(s)
            .map(|t| Ts(t.with_timezone(&Utc)))
            .map_err(|e| bad_text("timestamp", e))
    }
}

fn day_opt(v: Option<Day>) -> Option<NaiveDate> {
    v.map(|d| d.0)
}

/// A JSON array for `IN (SELECT value FROM json_each(?))`: one statement for
/// all of an upload's ids.
fn json_list<T: serde::Serialize>(v: &[T]) -> Result<String> {
    serde_json::to_string(v).map_err(be)
}

/// All connection PRAGMAs in one place.
fn apply_pragmas(conn: &Connection) -> Result<()> {
    conn.execute_batch(
        "PRAGMA journal_mode=WAL;
         PRAGMA synchronous=FULL;
         PRAGMA foreign_keys=ON;
         PRAGMA busy_timeout=5000;
         PRAGMA secure_delete=ON;",
    )?;
    Ok(())
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let version = usize::try_from(version).map_err(be)?;
    if version > MIGRATIONS.len() {
        return Err(StorageError::Backend(format!(
            "database schema version {version} is newer than this server ({})",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))?;
        tx.commit()?;
    }
    Ok(())
}

// ---------- facts ----------

fn parcel_facts(r: &rusqlite::Row<'_>) -> rusqlite::Result<ParcelFacts> {
    Ok(ParcelFacts {
        parcel_id: r.get(0)?,
        state: r.get(1)?,
        requires_code: r.get(2)?,
        delivery_date: day_opt(r.get(3)?),
        attempt: r.get(4)?,
        wrong_tries: r.get(5)?,
        locked: r.get(6)?,
        route_id: r.get(7)?,
        route_courier: r.get(8)?,
    })
}

fn one_parcel(tx: &Transaction<'_>, parcel_id: &str) -> Result<Option<ParcelFacts>> {
    let sql = format!("{PARCEL_FACTS} {PARCEL_FACTS_FROM} WHERE p.parcel_id = ?1");
    Ok(tx
        .prepare_cached(&sql)?
        .query_row([parcel_id], parcel_facts)
        .optional()?)
}

fn parcels_in(tx: &Transaction<'_>, ids: &[String]) -> Result<HashMap<String, ParcelFacts>> {
    let sql = format!(
        "{PARCEL_FACTS} {PARCEL_FACTS_FROM} WHERE p.parcel_id IN (SELECT value FROM json_each(?1))"
    );
    let mut st = tx.prepare_cached(&sql)?;
    let rows = st.query_map([json_list(ids)?], parcel_facts)?;
    let mut out = HashMap::new();
    for p in rows {
        let p = p?;
        out.insert(p.parcel_id.clone(), p);
    }
    Ok(out)
}

fn ingest_facts(tx: &Transaction<'_>, device_id: &str, k: &Keys) -> Result<IngestFacts> {
    let mut f = IngestFacts {
        device: tx
            .prepare_cached(
                "SELECT courier_id, last_seq, revoked_at IS NOT NULL FROM devices WHERE device_id=?1",
            )?
            .query_row([device_id], |r| {
                Ok(DeviceFacts {
                    device_id: device_id.to_string(),
                    courier_id: r.get(0)?,
                    last_seq: r.get(1)?,
                    revoked: r.get(2)?,
                })
            })
            .optional()?,
        parcels: parcels_in(tx, &k.parcel_ids)?,
        ..IngestFacts::default()
    };
    let ids = json_list(&k.confirmation_ids)?;
    let mut st = tx.prepare_cached(
        "SELECT confirmation_id, device_id FROM confirmations
         WHERE confirmation_id IN (SELECT value FROM json_each(?1))",
    )?;
    for row in st.query_map([&ids], |r| Ok((r.get(0)?, r.get(1)?)))? {
        let (id, dev) = row?;
        f.seen.insert(id, dev);
    }
    let mut st = tx.prepare_cached(
        "SELECT manifest_id, revision, parcel_id, delivery_date, attempt FROM manifest_items
         WHERE device_id=?1 AND parcel_id IN (SELECT value FROM json_each(?2))",
    )?;
    let rows = st.query_map(params![device_id, json_list(&k.parcel_ids)?], |r| {
        Ok(ManifestItem {
            manifest_id: r.get(0)?,
            revision: r.get(1)?,
            parcel_id: r.get(2)?,
            delivery_date: r.get::<_, Day>(3)?.0,
            attempt: r.get(4)?,
        })
    })?;
    for item in rows {
        f.manifest_items.insert(item?);
    }
    let mut st = tx.prepare_cached(
        "SELECT seq FROM confirmations WHERE device_id=?1 AND seq IN (SELECT value FROM json_each(?2))",
    )?;
    for seq in st.query_map(params![device_id, json_list(&k.seqs)?], |r| r.get(0))? {
        f.used_seqs.insert(seq?);
    }
    let mut st = tx.prepare_cached(
        "SELECT confirmation_id FROM signals
         WHERE kind=?1 AND confirmation_id IN (SELECT value FROM json_each(?2))",
    )?;
    for id in st.query_map(params![SignalKind::StaleManifest, ids], |r| r.get(0))? {
        f.stale_signalled.insert(id?);
    }
    Ok(f)
}

fn route_facts(tx: &Transaction<'_>, route: &RouteInput) -> Result<RouteFacts> {
    let date = Day(route.delivery_date);
    let other = tx
        .query_row(
            "SELECT route_id FROM routes WHERE courier_id=?1 AND delivery_date=?2 AND route_id<>?3",
            params![route.courier_id, date, route.route_id],
            |r| r.get(0),
        )
        .optional()?;
    let revision = tx
        .query_row(
            "SELECT revision FROM routes WHERE route_id=?1 AND delivery_date=?2",
            params![route.route_id, date],
            |r| r.get(0),
        )
        .optional()?;
    let ids: Vec<String> = route
        .stops
        .iter()
        .flat_map(|s| s.parcel_ids.clone())
        .collect();
    let mut parcels = HashMap::new();
    // Each parcel, and the other route it may be on for this date.
    let sql = format!(
        "{PARCEL_FACTS}, p.recipient_name, e.route_id {PARCEL_FACTS_FROM}
         LEFT JOIN stop_parcels e ON e.parcel_id = p.parcel_id AND e.delivery_date = ?2 AND e.route_id <> ?3
         WHERE p.parcel_id IN (SELECT value FROM json_each(?1))"
    );
    let mut st = tx.prepare(&sql)?;
    let rows = st.query_map(params![json_list(&ids)?, date, route.route_id], |r| {
        Ok(RouteParcel {
            facts: parcel_facts(r)?,
            recipient_name: r.get(9)?,
            elsewhere: r.get(10)?,
        })
    })?;
    for p in rows {
        let p = p?;
        parcels.insert(p.facts.parcel_id.clone(), p);
    }
    let mut st = tx.prepare(
        "SELECT s.parcel_id, p.status FROM stop_parcels s JOIN parcels p ON p.parcel_id = s.parcel_id
         WHERE s.route_id=?1 AND s.delivery_date=?2",
    )?;
    let before = st
        .query_map(params![route.route_id, date], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(RouteFacts {
        other_route: other,
        revision,
        parcels,
        before,
    })
}

fn close_facts(tx: &Transaction<'_>, date: NaiveDate, next: NaiveDate) -> Result<CloseFacts> {
    let (d, n) = (Day(date), Day(next));
    let mut st = tx.prepare(
        "SELECT p.parcel_id, p.status, p.attempt, p.requires_code, s.route_id, r.courier_id, s.stop_id,
           st.address, st.recipient
         FROM parcels p
         JOIN stop_parcels s ON s.parcel_id=p.parcel_id AND s.delivery_date=p.delivery_date
         JOIN routes r ON r.route_id=s.route_id AND r.delivery_date=s.delivery_date
         JOIN stops st ON st.route_id=s.route_id AND st.delivery_date=s.delivery_date AND st.stop_id=s.stop_id
         WHERE p.delivery_date=?1
         ORDER BY s.route_id, st.sequence, s.position",
    )?;
    let placed = st
        .query_map([&d], |r| {
            Ok(Placed {
                parcel_id: r.get(0)?,
                state: r.get(1)?,
                attempt: r.get(2)?,
                requires_code: r.get(3)?,
                route_id: r.get(4)?,
                courier_id: r.get(5)?,
                stop_id: r.get(6)?,
                address: r.get(7)?,
                recipient: r.get(8)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    // The next day's routes of the closed day's couriers and route ids.
    let next_routes_sql = "SELECT route_id, courier_id FROM routes WHERE delivery_date=?2 AND (
           courier_id IN (SELECT courier_id FROM routes WHERE delivery_date=?1)
           OR route_id IN (SELECT route_id FROM routes WHERE delivery_date=?1))";
    let mut st = tx.prepare(next_routes_sql)?;
    let next_routes = st
        .query_map(params![d, n], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut st = tx.prepare(&format!(
        "SELECT st.route_id, st.stop_id, st.sequence, st.address,
           (SELECT COUNT(*) FROM stop_parcels sp
            WHERE sp.route_id=st.route_id AND sp.delivery_date=st.delivery_date AND sp.stop_id=st.stop_id)
         FROM stops st WHERE st.delivery_date=?2 AND st.route_id IN (SELECT route_id FROM ({next_routes_sql}))"
    ))?;
    let next_stops = st
        .query_map(params![d, n], |r| {
            Ok(NextStop {
                route_id: r.get(0)?,
                stop_id: r.get(1)?,
                sequence: r.get(2)?,
                address: r.get(3)?,
                parcels: r.get(4)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(CloseFacts {
        placed,
        next_routes,
        next_stops,
    })
}

/// The parcel and whether a build for the device carries its current
/// attempt, in one statement.
fn verify_facts_in(tx: &Transaction<'_>, device: &Device, parcel_id: &str) -> Result<VerifyFacts> {
    let sql = format!(
        "{PARCEL_FACTS}, EXISTS(SELECT 1 FROM manifest_items m WHERE m.device_id=?1 AND m.parcel_id=p.parcel_id
           AND m.delivery_date=p.delivery_date AND m.attempt=p.attempt)
         {PARCEL_FACTS_FROM} WHERE p.parcel_id=?2"
    );
    let row = tx
        .prepare_cached(&sql)?
        .query_row(params![device.device_id, parcel_id], |r| {
            Ok((parcel_facts(r)?, r.get::<_, bool>(9)?))
        })
        .optional()?;
    Ok(VerifyFacts {
        on_manifest: row.as_ref().is_some_and(|(_, on)| *on),
        parcel: row.map(|(p, _)| p),
        device_courier: device.courier_id.clone(),
    })
}

// ---------- applying a plan ----------

fn route_change(tx: &Transaction<'_>, c: &RouteChange, now: DateTime<Utc>) -> Result<()> {
    let now = Ts(now);
    match c {
        RouteChange::Put(h) => tx.execute(
            "INSERT INTO routes(route_id, delivery_date, courier_id, revision, updated_at) VALUES(?1,?2,?3,?4,?5)
             ON CONFLICT(route_id, delivery_date) DO UPDATE SET courier_id=?3, revision=?4, updated_at=?5",
            params![h.route_id, Day(h.date), h.courier_id, h.revision, now],
        )?,
        RouteChange::Open(h) => tx.execute(
            "INSERT INTO routes(route_id, delivery_date, courier_id, revision, updated_at) VALUES(?1,?2,?3,?4,?5)",
            params![h.route_id, Day(h.date), h.courier_id, h.revision, now],
        )?,
        RouteChange::Bump(r) => tx.execute(
            "UPDATE routes SET revision = revision + 1, updated_at = ?3 WHERE route_id = ?1 AND delivery_date = ?2",
            params![r.route_id, Day(r.date), now],
        )?,
        RouteChange::Clear(r) => {
            let p = params![r.route_id, Day(r.date)];
            tx.execute("DELETE FROM stop_parcels WHERE route_id=?1 AND delivery_date=?2", p)?;
            tx.execute("DELETE FROM stops WHERE route_id=?1 AND delivery_date=?2", p)?
        }
        RouteChange::AddStop(st) => tx.execute(
            "INSERT INTO stops(route_id, delivery_date, stop_id, sequence, address, recipient) VALUES(?1,?2,?3,?4,?5,?6)",
            params![st.route_id, Day(st.date), st.stop_id, st.sequence, st.address, st.recipient],
        )?,
        RouteChange::Place(pl) => tx.execute(
            "INSERT OR REPLACE INTO stop_parcels(route_id, delivery_date, stop_id, parcel_id, position) VALUES(?1,?2,?3,?4,?5)",
            params![pl.route_id, Day(pl.date), pl.stop_id, pl.parcel_id, pl.position],
        )?,
        RouteChange::Unplace(date, parcel_id) => tx.execute(
            "DELETE FROM stop_parcels WHERE delivery_date=?1 AND parcel_id=?2",
            params![Day(*date), parcel_id],
        )?,
    };
    Ok(())
}

fn parcel_change(tx: &Transaction<'_>, c: &ParcelChange, now: DateTime<Utc>) -> Result<()> {
    let now = Ts(now);
    match c {
        ParcelChange::Put(p) => tx.execute(
            "INSERT INTO parcels(parcel_id, recipient_name, email, phone, address, value, currency,
               requires_code, track_token, created_at, updated_at)
             VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?10)
             ON CONFLICT(parcel_id) DO UPDATE SET recipient_name=?2, email=?3, phone=?4, address=?5,
               value=?6, currency=?7, requires_code=?8, updated_at=?10",
            params![p.parcel_id, p.recipient_name, p.email, p.phone, p.address, p.value, p.currency, p.requires_code, p.track_token, now],
        )?,
        ParcelChange::Schedule(s) => tx.execute(
            "UPDATE parcels SET status=?2, delivery_date=?3, attempt=?4, route_id=?5, requires_code=?6,
               track_token=COALESCE(?7, track_token), wrong_tries=0, locked=0, updated_at=?8 WHERE parcel_id=?1",
            params![s.parcel_id, ParcelState::Scheduled, Day(s.date), s.attempt, s.route_id, s.requires_code, s.track_token, now],
        )?,
        ParcelChange::Unschedule(parcel_id) => tx.execute(
            "UPDATE parcels SET status=?2, delivery_date=NULL, route_id=NULL, updated_at=?3 WHERE parcel_id=?1",
            params![parcel_id, ParcelState::Pending, now],
        )?,
        ParcelChange::Reassign(parcel_id, route_id) => tx.execute(
            "UPDATE parcels SET route_id=?2, updated_at=?3 WHERE parcel_id=?1",
            params![parcel_id, route_id, now],
        )?,
        ParcelChange::Tries(t) => tx.execute(
            "UPDATE parcels SET wrong_tries=?2, locked=?3, updated_at=?4 WHERE parcel_id=?1",
            params![t.parcel_id, t.wrong_tries, t.locked, now],
        )?,
    };
    Ok(())
}

/// Persist a decision's [`Changes`] in the caller's transaction.
fn apply(tx: &Transaction<'_>, ch: &Changes, now: DateTime<Utc>) -> Result<()> {
    for c in &ch.routes {
        route_change(tx, c, now)?;
    }
    for c in &ch.parcels {
        parcel_change(tx, c, now)?;
    }
    let mut st =
        tx.prepare_cached("UPDATE parcels SET status=?2, updated_at=?3 WHERE parcel_id=?1")?;
    for (pid, state) in &ch.states {
        st.execute(params![pid, state, Ts(now)])?;
    }
    let mut st = tx.prepare_cached(
        "INSERT INTO parcel_events(parcel_id, at, kind, detail) VALUES(?1, ?2, ?3, ?4)",
    )?;
    for e in &ch.events {
        st.execute(params![e.parcel_id, Ts(now), e.kind, e.detail])?;
    }
    let mut st = tx.prepare_cached(
        "INSERT INTO signals(kind, parcel_id, device_id, confirmation_id, day, detail, code_matched, at)
         VALUES(?1,?2,?3,?4,?5,?6,?7,?8)",
    )?;
    for s in &ch.signals {
        let p = params![
            s.kind,
            s.parcel_id,
            s.device_id,
            s.confirmation_id,
            Day(s.day),
            s.detail,
            s.code_matched,
            Ts(now)
        ];
        st.execute(p)?;
    }
    let mut st = tx.prepare_cached(
        "INSERT INTO notices(parcel_id, delivery_date, attempt, status, next_attempt_at, created_at)
         VALUES(?1,?2,?3,?4,?5,?5)",
    )?;
    for n in &ch.notices {
        let p = params![
            n.parcel_id,
            Day(n.delivery_date),
            n.attempt,
            NoticeState::Pending,
            Ts(now)
        ];
        st.execute(p)?;
    }
    Ok(())
}

/// An upload's plan: its confirmations, the device's seq, then the changes.
fn apply_ingest(
    tx: &Transaction<'_>,
    device_id: &str,
    plan: &IngestPlan,
    now: DateTime<Utc>,
) -> Result<()> {
    let mut st = tx.prepare_cached(
        "INSERT INTO confirmations(confirmation_id, device_id, seq, manifest_id, revision, parcel_id, delivery_date, attempt,
           outcome, reason, verified, failed_attempts, code_ok, disputed, recorded_at, received_at)
         VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16)",
    )?;
    for ConfirmationRow { c, disputed } in &plan.confirmations {
        st.execute(params![
            c.confirmation_id,
            c.device_id,
            c.seq,
            c.manifest_id,
            c.revision,
            c.parcel_id,
            Day(c.delivery_date),
            c.attempt,
            c.outcome.as_str(),
            c.reason.map(Label::as_str),
            c.verified.as_str(),
            c.failed_attempts,
            c.code_ok,
            disputed,
            Ts(c.recorded_at),
            Ts(now)
        ])?;
    }
    if let Some(seq) = plan.last_seq {
        tx.prepare_cached("UPDATE devices SET last_seq=MAX(last_seq, ?2) WHERE device_id=?1")?
            .execute(params![device_id, seq])?;
    }
    apply(tx, &plan.changes, now)
}

// ---------- reads ----------

const CONTACT_COLS: &str = "parcel_id, recipient_name, email, phone, requires_code, status, delivery_date, attempt, track_token";

fn contact(conn: &Connection, where_: &str, key: &str) -> Result<Option<ParcelContact>> {
    let sql = format!("SELECT {CONTACT_COLS} FROM parcels WHERE {where_} = ?1");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([key], |r| {
            Ok(ParcelContact {
                parcel_id: r.get(0)?,
                recipient_name: r.get(1)?,
                email: r.get(2)?,
                phone: r.get(3)?,
                requires_code: r.get(4)?,
                status: r.get(5)?,
                delivery_date: day_opt(r.get(6)?),
                attempt: r.get(7)?,
                track_token: r.get(8)?,
            })
        })
        .optional()?)
}

fn load_route(conn: &Connection, route_id: &str, date: NaiveDate) -> Result<Option<RouteData>> {
    let head = conn
        .query_row(
            "SELECT courier_id, revision FROM routes WHERE route_id=?1 AND delivery_date=?2",
            params![route_id, Day(date)],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, u64>(1)?)),
        )
        .optional()?;
    let Some((courier_id, revision)) = head else {
        return Ok(None);
    };
    // All of the route's parcels in one query, grouped by stop here: a query
    // per stop scanned the whole route each time (stops x parcels rows).
    let mut by_stop: HashMap<String, Vec<RouteParcelData>> = HashMap::new();
    let mut pst = conn.prepare_cached(
        "SELECT s.stop_id, p.parcel_id, p.requires_code, p.attempt, p.status FROM stop_parcels s
         JOIN parcels p ON p.parcel_id = s.parcel_id
         WHERE s.route_id=?1 AND s.delivery_date=?2 AND p.delivery_date = s.delivery_date
         ORDER BY s.stop_id, s.position",
    )?;
    let rows = pst.query_map(params![route_id, Day(date)], |r| {
        let p = RouteParcelData {
            parcel_id: r.get(1)?,
            requires_code: r.get(2)?,
            attempt: r.get(3)?,
            held: r.get::<_, ParcelState>(4)? == ParcelState::Held,
        };
        Ok((r.get::<_, String>(0)?, p))
    })?;
    for row in rows {
        let (stop_id, p) = row?;
        by_stop.entry(stop_id).or_default().push(p);
    }
    let mut st = conn.prepare_cached(
        "SELECT stop_id, sequence, address, recipient FROM stops
         WHERE route_id=?1 AND delivery_date=?2 ORDER BY sequence",
    )?;
    let stops = st
        .query_map(params![route_id, Day(date)], |r| {
            let stop_id: String = r.get(0)?;
            Ok(RouteStopData {
                parcels: by_stop.remove(&stop_id).unwrap_or_default(),
                stop_id,
                sequence: r.get(1)?,
                address: r.get(2)?,
                recipient: r.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(Some(RouteData {
        route_id: route_id.to_string(),
        courier_id,
        delivery_date: date,
        revision,
        stops,
    }))
}

const DEVICE_COLS: &str =
    "device_id, courier_id, name, public_key, revoked_at, COALESCE(last_seen_at, enrolled_at)";

fn device_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Device> {
    Ok(Device {
        device_id: r.get(0)?,
        courier_id: r.get(1)?,
        name: r.get(2)?,
        public_key: r.get(3)?,
        revoked_at: r.get::<_, Option<Ts>>(4)?.map(|t| t.0),
        last_seen_at: r.get::<_, Ts>(5)?.0,
    })
}

fn stored_manifest(
    r: &rusqlite::Row<'_>,
    date: NaiveDate,
    device_id: &str,
) -> rusqlite::Result<StoredManifest> {
    Ok(StoredManifest {
        route_id: r.get(0)?,
        delivery_date: date,
        device_id: device_id.to_string(),
        manifest_id: r.get(1)?,
        revision: r.get(2)?,
        envelope_json: r.get(3)?,
        items: Vec::new(),
    })
}

impl SqliteStorage {
    /// Open (or create) the database file and bring its schema up to date.
    pub fn open(path: &Path) -> Result<Self> {
        let mut conn = Connection::open(path)?;
        apply_pragmas(&conn)?;
        migrate(&mut conn)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// The number of migrations this server knows (the schema version it writes).
    pub fn schema_version() -> usize {
        MIGRATIONS.len()
    }

    /// Run one domain operation as one IMMEDIATE transaction off the async threads.
    async fn tx<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            // A panic inside an earlier operation rolled its transaction back
            // on unwind, so the connection itself is still good.
            let mut guard = conn
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let tx = guard.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        })
        .await
        .map_err(be)?
    }
}

#[async_trait::async_trait]
impl Storage for SqliteStorage {
    async fn upsert_parcels(
        &self,
        items: Vec<NewParcel>,
        now: DateTime<Utc>,
    ) -> Result<Vec<UpsertStatus>> {
        self.tx(move |tx| {
            let ids: Vec<String> = items.iter().map(|p| p.parcel_id.clone()).collect();
            let (out, ch) = domain::parcels::decide(&parcels_in(tx, &ids)?, &items);
            apply(tx, &ch, now)?;
            Ok(out)
        })
        .await
    }

    async fn parcel(&self, parcel_id: &str) -> Result<Option<ParcelView>> {
        let id = parcel_id.to_string();
        self.tx(move |tx| {
            let Some(mut v) = tx
                .query_row(
                    "SELECT parcel_id, recipient_name, address, requires_code, status, delivery_date, attempt,
                       route_id, wrong_tries, locked FROM parcels WHERE parcel_id=?1",
                    [&id],
                    |r| {
                        Ok(ParcelView {
                            parcel_id: r.get(0)?,
                            recipient_name: r.get(1)?,
                            address: r.get(2)?,
                            requires_code: r.get(3)?,
                            status: r.get(4)?,
                            delivery_date: day_opt(r.get(5)?),
                            attempt: r.get(6)?,
                            route_id: r.get(7)?,
                            wrong_tries: r.get(8)?,
                            locked: r.get(9)?,
                            events: Vec::new(),
                        })
                    },
                )
                .optional()?
            else {
                return Ok(None);
            };
            let mut st = tx.prepare_cached(
                "SELECT at, kind, detail FROM parcel_events WHERE parcel_id=?1 ORDER BY id",
            )?;
            v.events = st
                .query_map([&id], |r| {
                    Ok(ParcelEvent {
                        at: r.get::<_, Ts>(0)?.0,
                        kind: r.get(1)?,
                        detail: r.get(2)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(Some(v))
        })
        .await
    }

    async fn parcel_contact(&self, parcel_id: &str) -> Result<Option<ParcelContact>> {
        let id = parcel_id.to_string();
        self.tx(move |tx| contact(tx, "parcel_id", &id)).await
    }

    async fn parcel_by_track_token(&self, token: &str) -> Result<Option<ParcelContact>> {
        let t = token.to_string();
        self.tx(move |tx| contact(tx, "track_token", &t)).await
    }

    async fn parcel_ids_on(&self, date: NaiveDate) -> Result<Vec<String>> {
        self.tx(move |tx| {
            let mut st = tx.prepare_cached(
                "SELECT parcel_id FROM parcels WHERE delivery_date=?1 ORDER BY parcel_id",
            )?;
            let ids = st
                .query_map([Day(date)], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(ids)
        })
        .await
    }

    async fn save_route(&self, route: RouteInput, at: At<'_>) -> Result<RouteSaved> {
        let (now, today) = (at.now, at.policy.today(at.now));
        self.tx(move |tx| {
            let (saved, ch) = domain::route::decide(&route_facts(tx, &route)?, &route, today)?;
            apply(tx, &ch, now)?;
            Ok(saved)
        })
        .await
    }

    async fn route(&self, route_id: &str, date: NaiveDate) -> Result<Option<RouteData>> {
        let r = route_id.to_string();
        self.tx(move |tx| load_route(tx, &r, date)).await
    }

    async fn route_for_courier(
        &self,
        courier_id: &str,
        date: NaiveDate,
    ) -> Result<Option<RouteData>> {
        let c = courier_id.to_string();
        self.tx(move |tx| {
            let rid: Option<String> = tx
                .query_row(
                    "SELECT route_id FROM routes WHERE courier_id=?1 AND delivery_date=?2",
                    params![c, Day(date)],
                    |r| r.get(0),
                )
                .optional()?;
            match rid {
                Some(rid) => load_route(tx, &rid, date),
                None => Ok(None),
            }
        })
        .await
    }

    async fn create_enrollment(&self, e: NewEnrollment) -> Result<()> {
        self.tx(move |tx| {
            tx.execute(
                "INSERT INTO enrollments(code_hash, courier_id, expires_at, created_at) VALUES(?1,?2,?3,?4)",
                params![e.code_hash, e.courier_id, Ts(e.expires_at), Ts(e.created_at)],
            )?;
            Ok(())
        })
        .await
    }

    async fn enroll_device(&self, device: NewDevice, now: DateTime<Utc>) -> Result<Option<Device>> {
        let h = device.enrollment.clone();
        self.tx(move |tx| {
            let courier: Option<String> = tx
                .query_row(
                    "SELECT courier_id FROM enrollments WHERE code_hash=?1 AND used_at IS NULL AND expires_at > ?2",
                    params![h, Ts(now)],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(courier_id) = courier else {
                return Ok(None);
            };
            tx.execute("UPDATE enrollments SET used_at=?2 WHERE code_hash=?1", params![h, Ts(now)])?;
            tx.execute(
                "INSERT INTO devices(device_id, courier_id, name, public_key, token_hash, enrolled_at, last_seen_at)
                 VALUES(?1,?2,?3,?4,?5,?6,?6)",
                params![device.device_id, courier_id, device.name, device.public_key, device.token_hash, Ts(now)],
            )?;
            Ok(Some(Device {
                device_id: device.device_id,
                courier_id,
                name: device.name,
                public_key: device.public_key,
                revoked_at: None,
                last_seen_at: now,
            }))
        })
        .await
    }

    async fn device_by_token(&self, token_hash: &str) -> Result<Option<Device>> {
        let h = token_hash.to_string();
        self.tx(move |tx| {
            let sql = format!("SELECT {DEVICE_COLS} FROM devices WHERE token_hash=?1");
            Ok(tx
                .prepare_cached(&sql)?
                .query_row([h], device_row)
                .optional()?)
        })
        .await
    }

    async fn device(&self, device_id: &str) -> Result<Option<Device>> {
        let d = device_id.to_string();
        self.tx(move |tx| {
            let sql = format!("SELECT {DEVICE_COLS} FROM devices WHERE device_id=?1");
            Ok(tx.query_row(&sql, [d], device_row).optional()?)
        })
        .await
    }

    async fn devices_of_courier(&self, courier_id: &str) -> Result<Vec<Device>> {
        let c = courier_id.to_string();
        self.tx(move |tx| {
            let sql = format!(
                "SELECT {DEVICE_COLS} FROM devices WHERE courier_id=?1 ORDER BY enrolled_at, device_id"
            );
            let mut st = tx.prepare(&sql)?;
            let v = st.query_map([c], device_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(v)
        })
        .await
    }

    async fn device_seen(&self, device_id: &str, now: DateTime<Utc>) -> Result<()> {
        let d = device_id.to_string();
        self.tx(move |tx| {
            tx.execute(
                "UPDATE devices SET last_seen_at=?2 WHERE device_id=?1",
                params![d, Ts(now)],
            )?;
            Ok(())
        })
        .await
    }

    async fn revoke_device(&self, device_id: &str, now: DateTime<Utc>) -> Result<bool> {
        let d = device_id.to_string();
        self.tx(move |tx| {
            let n = tx.execute(
                "UPDATE devices SET revoked_at=COALESCE(revoked_at, ?2) WHERE device_id=?1",
                params![d, Ts(now)],
            )?;
            Ok(n > 0)
        })
        .await
    }

    async fn manifest(&self, key: BuildKey<'_>) -> Result<Option<StoredManifest>> {
        let (r, d, date) = (
            key.route_id.to_string(),
            key.device_id.to_string(),
            key.date,
        );
        self.tx(move |tx| {
            Ok(tx
                .query_row(
                    "SELECT route_id, manifest_id, revision, envelope FROM manifests
                     WHERE route_id=?1 AND delivery_date=?2 AND device_id=?3",
                    params![r, Day(date), d],
                    |row| stored_manifest(row, date, &d),
                )
                .optional()?)
        })
        .await
    }

    async fn current_manifest(
        &self,
        dev: &Device,
        date: NaiveDate,
    ) -> Result<Option<StoredManifest>> {
        let (c, d) = (dev.courier_id.clone(), dev.device_id.clone());
        self.tx(move |tx| {
            Ok(tx
                .prepare_cached(
                    "SELECT m.route_id, m.manifest_id, m.revision, m.envelope FROM routes r
                     JOIN manifests m ON m.route_id=r.route_id AND m.delivery_date=r.delivery_date AND m.device_id=?3
                     WHERE r.courier_id=?1 AND r.delivery_date=?2 AND m.revision >= r.revision",
                )?
                .query_row(params![c, Day(date), d], |row| stored_manifest(row, date, &d))
                .optional()?)
        })
        .await
    }

    async fn store_manifest(&self, m: StoredManifest) -> Result<StoredManifest> {
        self.tx(move |tx| {
            let date = Day(m.delivery_date);
            let existing = tx
                .query_row(
                    "SELECT route_id, manifest_id, revision, envelope FROM manifests
                     WHERE route_id=?1 AND delivery_date=?2 AND device_id=?3",
                    params![m.route_id, date, m.device_id],
                    |row| stored_manifest(row, m.delivery_date, &m.device_id),
                )
                .optional()?;
            if let Some(newer) = existing.filter(|e| e.revision >= m.revision) {
                return Ok(newer);
            }
            tx.execute(
                "INSERT INTO manifests(route_id, delivery_date, device_id, manifest_id, revision, envelope) VALUES(?1,?2,?3,?4,?5,?6)
                 ON CONFLICT(route_id, delivery_date, device_id) DO UPDATE SET manifest_id=?4, revision=?5, envelope=?6",
                params![m.route_id, date, m.device_id, m.manifest_id, m.revision, m.envelope_json],
            )?;
            let mut st = tx.prepare_cached(
                "INSERT OR IGNORE INTO manifest_items(device_id, manifest_id, revision, parcel_id, delivery_date, attempt)
                 VALUES(?1,?2,?3,?4,?5,?6)",
            )?;
            for (pid, attempt) in &m.items {
                st.execute(params![m.device_id, m.manifest_id, m.revision, pid, date, attempt])?;
            }
            drop(st);
            Ok(m)
        })
        .await
    }

    async fn ingest_confirmations(&self, up: Upload, at: At<'_>) -> Result<Vec<IngestOutcome>> {
        if up.items.is_empty() {
            return Ok(Vec::new());
        }
        let (now, policy) = (at.now, at.policy.clone());
        // One transaction, so one fsync, for the whole upload.
        self.tx(move |tx| {
            let facts = ingest_facts(tx, &up.device_id, &IngestFacts::keys(&up.items))?;
            let plan = domain::ingest::decide(&facts, &up.items, &policy);
            apply_ingest(tx, &up.device_id, &plan, now)?;
            Ok(plan.outcomes)
        })
        .await
    }

    async fn verify_facts(&self, device: &Device, parcel_id: &str) -> Result<VerifyFacts> {
        let (d, p) = (device.clone(), parcel_id.to_string());
        self.tx(move |tx| verify_facts_in(tx, &d, &p)).await
    }

    async fn record_verify(&self, input: VerifyInput, at: At<'_>) -> Result<VerifyOutcome> {
        let (now, policy) = (at.now, at.policy.clone());
        self.tx(move |tx| {
            let parcel = one_parcel(tx, &input.parcel_id)?;
            let (out, ch) = domain::verify::decide(parcel.as_ref(), &input, &policy);
            apply(tx, &ch, now)?;
            Ok(out)
        })
        .await
    }

    async fn reissue(&self, input: ReissueInput, now: DateTime<Utc>) -> Result<Moved> {
        self.tx(move |tx| {
            let parcel = one_parcel(tx, &input.parcel_id)?;
            let (moved, ch) = domain::reissue::decide(parcel.as_ref(), &input)?;
            apply(tx, &ch, now)?;
            Ok(moved)
        })
        .await
    }

    async fn hold_parcel(&self, parcel_id: &str, at: At<'_>) -> Result<Moved> {
        let (pid, now, today) = (
            parcel_id.to_string(),
            at.now,
            at.policy.calendar.today(at.now),
        );
        self.tx(move |tx| {
            let parcel = one_parcel(tx, &pid)?;
            let (moved, ch) = domain::hold::decide(parcel.as_ref(), &pid, today)?;
            apply(tx, &ch, now)?;
            Ok(moved)
        })
        .await
    }

    async fn close_day(&self, date: NaiveDate, at: At<'_>) -> Result<Closed> {
        let (now, next) = (at.now, domain::close_day::next_day(date, at.policy)?);
        self.tx(move |tx| {
            let (moved, ch) = domain::close_day::decide(&close_facts(tx, date, next)?, date, next);
            apply(tx, &ch, now)?;
            Ok(Closed {
                next_date: next,
                moved,
            })
        })
        .await
    }

    async fn signals_on(&self, day: NaiveDate, after: i64, limit: u32) -> Result<Vec<Signal>> {
        self.tx(move |tx| {
            let mut st = tx.prepare_cached(
                "SELECT id, kind, parcel_id, device_id, confirmation_id, day, detail, code_matched, at FROM signals
                 WHERE day=?1 AND id>?2 ORDER BY id LIMIT ?3",
            )?;
            let rows = st
                .query_map(params![Day(day), after, limit], |r| {
                    Ok(Signal {
                        id: r.get(0)?,
                        kind: r.get(1)?,
                        parcel_id: r.get(2)?,
                        device_id: r.get(3)?,
                        confirmation_id: r.get(4)?,
                        day: r.get::<_, Day>(5)?.0,
                        detail: r.get(6)?,
                        code_matched: r.get(7)?,
                        at: r.get::<_, Ts>(8)?.0,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn claim_notices(&self, now: DateTime<Utc>, secs: i64, n: u32) -> Result<Vec<NoticeJob>> {
        self.tx(move |tx| {
            let mut st = tx.prepare_cached(
                "SELECT id, parcel_id, delivery_date, attempt, tries FROM notices
                 WHERE status=?3 AND next_attempt_at <= ?1 AND (claimed_until IS NULL OR claimed_until <= ?1)
                 ORDER BY id LIMIT ?2",
            )?;
            let jobs = st
                .query_map(params![Ts(now), n, NoticeState::Pending], |r| {
                    Ok(NoticeJob {
                        notice_id: r.get(0)?,
                        parcel_id: r.get(1)?,
                        delivery_date: r.get::<_, Day>(2)?.0,
                        attempt: r.get(3)?,
                        tries: r.get(4)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let until = Ts(now + chrono::Duration::seconds(secs));
            let mut st = tx.prepare_cached("UPDATE notices SET claimed_until=?2 WHERE id=?1")?;
            for j in &jobs {
                st.execute(params![j.notice_id, until])?;
            }
            Ok(jobs)
        })
        .await
    }

    async fn renew_notice_claims(&self, notice_ids: &[i64], until: DateTime<Utc>) -> Result<()> {
        let ids = notice_ids.to_vec();
        self.tx(move |tx| {
            let mut st = tx.prepare_cached(
                "UPDATE notices SET claimed_until=?2 WHERE id=?1 AND status=?3 AND claimed_until IS NOT NULL",
            )?;
            let until = Ts(until);
            for id in ids {
                st.execute(params![id, until, NoticeState::Pending])?;
            }
            Ok(())
        })
        .await
    }

    async fn notice_sent(&self, notice_id: i64, now: DateTime<Utc>) -> Result<()> {
        self.tx(move |tx| {
            tx.execute(
                "UPDATE notices SET status=?3, sent_at=?2, claimed_until=NULL, tries=tries+1 WHERE id=?1",
                params![notice_id, Ts(now), NoticeState::Sent],
            )?;
            Ok(())
        })
        .await
    }

    async fn notice_failed(&self, id: i64, e: &str, retry: Option<DateTime<Utc>>) -> Result<()> {
        let e = e.to_string();
        self.tx(move |tx| {
            match retry {
                Some(t) => tx.execute(
                    "UPDATE notices SET tries=tries+1, last_error=?2, next_attempt_at=?3, claimed_until=NULL WHERE id=?1",
                    params![id, e, Ts(t)],
                )?,
                None => tx.execute(
                    "UPDATE notices SET tries=tries+1, last_error=?2, status=?3, claimed_until=NULL WHERE id=?1",
                    params![id, e, NoticeState::Failed],
                )?,
            };
            Ok(())
        })
        .await
    }

    async fn notice_counts(&self) -> Result<(u64, u64, u64)> {
        self.tx(|tx| {
            let mut st = tx.prepare_cached("SELECT COUNT(*) FROM notices WHERE status=?1")?;
            let mut count =
                |s: NoticeState| -> Result<u64> { Ok(st.query_row([s], |r| r.get(0))?) };
            Ok((
                count(NoticeState::Pending)?,
                count(NoticeState::Sent)?,
                count(NoticeState::Failed)?,
            ))
        })
        .await
    }
}

#[path = "sqlite_lifecycle.rs"]
mod lifecycle;
