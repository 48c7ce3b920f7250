//! Embedded SQLite storage: one connection (so one writer), WAL, versioned
//! migrations in `user_version`. Each trait method runs in one IMMEDIATE
//! transaction on a blocking thread.

use super::*;
use chrono::{DateTime, NaiveDate, Utc};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Schema migrations, applied in order; `user_version` counts the applied ones.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE parcels(
  parcel_id TEXT PRIMARY KEY,
  recipient_name TEXT NOT NULL,
  email TEXT,
  phone TEXT,
  address TEXT NOT NULL,
  value REAL NOT NULL,
  currency TEXT NOT NULL,
  requires_code INTEGER NOT NULL,
  track_token TEXT NOT NULL UNIQUE,
  status TEXT NOT NULL DEFAULT 'pending',
  delivery_date TEXT,
  attempt INTEGER NOT NULL DEFAULT 0,
  route_id TEXT,
  wrong_tries INTEGER NOT NULL DEFAULT 0,
  locked INTEGER NOT NULL DEFAULT 0,
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL
);
CREATE TABLE parcel_events(
  id INTEGER PRIMARY KEY,
  parcel_id TEXT NOT NULL,
  at TEXT NOT NULL,
  kind TEXT NOT NULL,
  detail TEXT NOT NULL
);
CREATE INDEX parcel_events_parcel ON parcel_events(parcel_id, id);
CREATE TABLE routes(
  route_id TEXT NOT NULL,
  delivery_date TEXT NOT NULL,
  courier_id TEXT NOT NULL,
  revision INTEGER NOT NULL,
  updated_at TEXT NOT NULL,
  PRIMARY KEY(route_id, delivery_date)
);
CREATE UNIQUE INDEX routes_courier_day ON routes(courier_id, delivery_date);
CREATE TABLE stops(
  route_id TEXT NOT NULL,
  delivery_date TEXT NOT NULL,
  stop_id TEXT NOT NULL,
  sequence INTEGER NOT NULL,
  address TEXT NOT NULL,
  recipient TEXT NOT NULL,
  PRIMARY KEY(route_id, delivery_date, stop_id)
);
CREATE TABLE stop_parcels(
  route_id TEXT NOT NULL,
  delivery_date TEXT NOT NULL,
  stop_id TEXT NOT NULL,
  parcel_id TEXT NOT NULL,
  position INTEGER NOT NULL,
  PRIMARY KEY(delivery_date, parcel_id)
);
CREATE INDEX stop_parcels_route ON stop_parcels(route_id, delivery_date);
CREATE TABLE enrollments(
  code_hash TEXT PRIMARY KEY,
  courier_id TEXT NOT NULL,
  expires_at TEXT NOT NULL,
  created_at TEXT NOT NULL,
  used_at TEXT
);
CREATE TABLE devices(
  device_id TEXT PRIMARY KEY,
  courier_id TEXT NOT NULL,
  name TEXT NOT NULL,
  public_key TEXT NOT NULL,
  token_hash TEXT NOT NULL UNIQUE,
  enrolled_at TEXT NOT NULL,
  last_seq INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX devices_courier ON devices(courier_id);
CREATE TABLE manifests(
  route_id TEXT NOT NULL,
  delivery_date TEXT NOT NULL,
  device_id TEXT NOT NULL,
  manifest_id TEXT NOT NULL,
  revision INTEGER NOT NULL,
  envelope TEXT NOT NULL,
  PRIMARY KEY(route_id, delivery_date, device_id)
);
CREATE TABLE manifest_items(
  device_id TEXT NOT NULL,
  manifest_id TEXT NOT NULL,
  revision INTEGER NOT NULL,
  parcel_id TEXT NOT NULL,
  delivery_date TEXT NOT NULL,
  attempt INTEGER NOT NULL,
  PRIMARY KEY(device_id, manifest_id, revision, parcel_id)
);
CREATE INDEX manifest_items_parcel ON manifest_items(device_id, parcel_id);
CREATE TABLE confirmations(
  confirmation_id TEXT PRIMARY KEY,
  device_id TEXT NOT NULL,
  seq INTEGER NOT NULL,
  manifest_id TEXT NOT NULL,
  revision INTEGER NOT NULL,
  parcel_id TEXT NOT NULL,
  delivery_date TEXT NOT NULL,
  attempt INTEGER NOT NULL,
  outcome TEXT NOT NULL,
  reason TEXT,
  verified TEXT NOT NULL,
  failed_attempts INTEGER NOT NULL,
  code_ok INTEGER,
  disputed INTEGER NOT NULL,
  recorded_at TEXT NOT NULL,
  received_at TEXT NOT NULL
);
CREATE INDEX confirmations_seq ON confirmations(device_id, seq);
CREATE TABLE signals(
  id INTEGER PRIMARY KEY,
  kind TEXT NOT NULL,
  parcel_id TEXT,
  device_id TEXT,
  confirmation_id TEXT,
  detail TEXT NOT NULL,
  at TEXT NOT NULL
);
CREATE TABLE notices(
  id INTEGER PRIMARY KEY,
  parcel_id TEXT NOT NULL,
  delivery_date TEXT NOT NULL,
  attempt INTEGER NOT NULL,
  status TEXT NOT NULL DEFAULT 'pending',
  tries INTEGER NOT NULL DEFAULT 0,
  next_attempt_at TEXT NOT NULL,
  claimed_until TEXT,
  last_error TEXT,
  created_at TEXT NOT NULL,
  sent_at TEXT
);
CREATE INDEX notices_due ON notices(status, next_attempt_at);
"#];

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

/// Fixed-width UTC timestamps, so text order is time order.
fn ts(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn parse_ts(s: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(be)
}

fn ds(d: NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

fn parse_date(s: &str) -> Result<NaiveDate> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(be)
}

fn u32_of(v: i64) -> Result<u32> {
    u32::try_from(v).map_err(be)
}

fn u64_of(v: i64) -> Result<u64> {
    u64::try_from(v).map_err(be)
}

fn i64_of(v: u64) -> Result<i64> {
    i64::try_from(v).map_err(be)
}

/// All connection PRAGMAs in one place.
fn apply_pragmas(conn: &Connection) -> Result<()> {
    conn.execute_batch(
        "PRAGMA journal_mode=WAL;
         PRAGMA synchronous=FULL;
         PRAGMA foreign_keys=ON;
         PRAGMA busy_timeout=5000;",
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

fn event(
    tx: &Transaction<'_>,
    parcel_id: &str,
    now: DateTime<Utc>,
    kind: &str,
    detail: &str,
) -> Result<()> {
    tx.execute(
        "INSERT INTO parcel_events(parcel_id, at, kind, detail) VALUES(?1, ?2, ?3, ?4)",
        params![parcel_id, ts(now), kind, detail],
    )?;
    Ok(())
}

fn signal(
    tx: &Transaction<'_>,
    kind: &str,
    parcel_id: Option<&str>,
    device_id: Option<&str>,
    confirmation_id: Option<&str>,
    detail: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    tx.execute(
        "INSERT INTO signals(kind, parcel_id, device_id, confirmation_id, detail, at) VALUES(?1,?2,?3,?4,?5,?6)",
        params![kind, parcel_id, device_id, confirmation_id, detail, ts(now)],
    )?;
    Ok(())
}

fn queue_notice(
    tx: &Transaction<'_>,
    parcel_id: &str,
    date: NaiveDate,
    attempt: u32,
    now: DateTime<Utc>,
) -> Result<()> {
    tx.execute(
        "INSERT INTO notices(parcel_id, delivery_date, attempt, next_attempt_at, created_at) VALUES(?1,?2,?3,?4,?4)",
        params![parcel_id, ds(date), attempt, ts(now)],
    )?;
    Ok(())
}

fn bump_route(
    tx: &Transaction<'_>,
    route_id: &str,
    date: NaiveDate,
    now: DateTime<Utc>,
) -> Result<()> {
    tx.execute(
        "UPDATE routes SET revision = revision + 1, updated_at = ?3 WHERE route_id = ?1 AND delivery_date = ?2",
        params![route_id, ds(date), ts(now)],
    )?;
    Ok(())
}

/// Move a parcel to a (new) day and attempt, unlock it, and queue its notice.
fn schedule(
    tx: &Transaction<'_>,
    parcel_id: &str,
    route_id: &str,
    date: NaiveDate,
    attempt: u32,
    requires_code: bool,
    now: DateTime<Utc>,
) -> Result<u32> {
    tx.execute(
        "UPDATE parcels SET status='scheduled', delivery_date=?2, attempt=?3, route_id=?4,
           wrong_tries=0, locked=0, updated_at=?5 WHERE parcel_id=?1",
        params![parcel_id, ds(date), attempt, route_id, ts(now)],
    )?;
    event(
        tx,
        parcel_id,
        now,
        "scheduled",
        &format!("route {route_id} on {date}, attempt {attempt}"),
    )?;
    if requires_code {
        queue_notice(tx, parcel_id, date, attempt, now)?;
        return Ok(1);
    }
    Ok(0)
}

/// A parcels row as read for [`ParcelContact`], before type conversions.
type ContactRow = (
    String,
    String,
    Option<String>,
    Option<String>,
    bool,
    String,
    Option<String>,
    i64,
    String,
);

fn contact_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ContactRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
    ))
}

const CONTACT_COLS: &str = "parcel_id, recipient_name, email, phone, requires_code, status, delivery_date, attempt, track_token";

fn contact(conn: &Connection, where_: &str, key: &str) -> Result<Option<ParcelContact>> {
    let row = conn
        .query_row(
            &format!("SELECT {CONTACT_COLS} FROM parcels WHERE {where_} = ?1"),
            [key],
            contact_row,
        )
        .optional()?;
    let Some((
        parcel_id,
        recipient_name,
        email,
        phone,
        requires_code,
        status,
        date,
        attempt,
        track_token,
    )) = row
    else {
        return Ok(None);
    };
    Ok(Some(ParcelContact {
        parcel_id,
        recipient_name,
        email,
        phone,
        requires_code,
        status,
        delivery_date: date.as_deref().map(parse_date).transpose()?,
        attempt: u32_of(attempt)?,
        track_token,
    }))
}

fn load_route(conn: &Connection, route_id: &str, date: NaiveDate) -> Result<Option<RouteData>> {
    let head = conn
        .query_row(
            "SELECT courier_id, revision FROM routes WHERE route_id=?1 AND delivery_date=?2",
            params![route_id, ds(date)],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)),
        )
        .optional()?;
    let Some((courier_id, revision)) = head else {
        return Ok(None);
    };
    // All of the route's parcels in one query, grouped by stop here: a query
    // per stop scanned the whole route each time (stops x parcels rows).
    let mut by_stop: std::collections::HashMap<String, Vec<RouteParcelData>> =
        std::collections::HashMap::new();
    let mut pst = conn.prepare_cached(
        "SELECT s.stop_id, p.parcel_id, p.requires_code, p.attempt FROM stop_parcels s
         JOIN parcels p ON p.parcel_id = s.parcel_id
         WHERE s.route_id=?1 AND s.delivery_date=?2 AND p.delivery_date = s.delivery_date
         ORDER BY s.stop_id, s.position",
    )?;
    let rows = pst.query_map(params![route_id, ds(date)], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, bool>(2)?,
            r.get::<_, i64>(3)?,
        ))
    })?;
    for row in rows {
        let (stop_id, parcel_id, requires_code, attempt) = row?;
        by_stop.entry(stop_id).or_default().push(RouteParcelData {
            parcel_id,
            requires_code,
            attempt: u32_of(attempt)?,
        });
    }
    let mut stops = Vec::new();
    let mut st = conn.prepare_cached(
        "SELECT stop_id, sequence, address, recipient FROM stops
         WHERE route_id=?1 AND delivery_date=?2 ORDER BY sequence",
    )?;
    let rows = st.query_map(params![route_id, ds(date)], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
        ))
    })?;
    for row in rows {
        let (stop_id, sequence, address, recipient) = row?;
        let parcels = by_stop.remove(&stop_id).unwrap_or_default();
        stops.push(RouteStopData {
            stop_id,
            sequence: u32_of(sequence)?,
            address,
            recipient,
            parcels,
        });
    }
    Ok(Some(RouteData {
        route_id: route_id.to_string(),
        courier_id,
        delivery_date: date,
        revision: u64_of(revision)?,
        stops,
    }))
}

/// One confirmation inside the caller's transaction.
fn ingest_in(tx: &Transaction<'_>, c: IngestConfirmation) -> Result<IngestOutcome> {
    let now = c.received_at;
    let seen: Option<String> = tx
        .query_row(
            "SELECT device_id FROM confirmations WHERE confirmation_id=?1",
            [&c.confirmation_id],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(dev) = seen {
        return Ok(if dev == c.device_id {
            IngestOutcome::Duplicate
        } else {
            IngestOutcome::Rejected("confirmation_id_reused".into(), true)
        });
    }
    let parcel = tx
        .query_row(
            "SELECT status, requires_code, attempt FROM parcels WHERE parcel_id=?1",
            [&c.parcel_id],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, bool>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            },
        )
        .optional()?;
    let Some((status, requires_code, current_attempt)) = parcel else {
        return Ok(IngestOutcome::Rejected("unknown_parcel".into(), true));
    };
    let rev = i64_of(c.revision)?;
    let on_manifest: bool = tx
        .query_row(
            "SELECT 1 FROM manifest_items WHERE device_id=?1 AND manifest_id=?2 AND revision=?3
               AND parcel_id=?4 AND delivery_date=?5 AND attempt=?6",
            params![
                c.device_id,
                c.manifest_id,
                rev,
                c.parcel_id,
                ds(c.delivery_date),
                c.attempt
            ],
            |_| Ok(true),
        )
        .optional()?
        .unwrap_or(false);
    if !on_manifest {
        return Ok(IngestOutcome::Rejected("not_on_manifest".into(), true));
    }
    let seq = i64_of(c.seq)?;
    let pid = Some(c.parcel_id.as_str());
    let did = Some(c.device_id.as_str());
    let cid = Some(c.confirmation_id.as_str());
    let reused: bool = tx
        .query_row(
            "SELECT 1 FROM confirmations WHERE device_id=?1 AND seq=?2",
            params![c.device_id, seq],
            |_| Ok(true),
        )
        .optional()?
        .unwrap_or(false);
    let last_seq: i64 = tx.query_row(
        "SELECT last_seq FROM devices WHERE device_id=?1",
        [&c.device_id],
        |r| r.get(0),
    )?;
    if reused {
        signal(
            tx,
            "seq_reuse",
            pid,
            did,
            cid,
            &format!("seq {seq} was already used by this device"),
            now,
        )?;
    } else if seq > last_seq + 1 {
        signal(
            tx,
            "seq_gap",
            pid,
            did,
            cid,
            &format!("seq jumped from {last_seq} to {seq}"),
            now,
        )?;
    }
    tx.execute(
        "UPDATE devices SET last_seq=MAX(last_seq, ?2) WHERE device_id=?1",
        params![c.device_id, seq],
    )?;
    if c.late {
        signal(
            tx,
            "late_confirmation",
            pid,
            did,
            cid,
            "recorded at or after the code's valid_until",
            now,
        )?;
    }
    if c.outcome == "delivered" && i64::from(c.attempt) < current_attempt {
        let detail = superseded_detail(c.attempt, current_attempt);
        signal(tx, "superseded_code", pid, did, cid, &detail, now)?;
    }
    if c.failed_attempts >= c.many_tries_threshold {
        signal(
            tx,
            "many_wrong_tries",
            pid,
            did,
            cid,
            &format!("{} wrong tries at the door", c.failed_attempts),
            now,
        )?;
    }
    let mut disputed = false;
    let open = status == "scheduled" || status == "failed";
    if c.outcome == "delivered" {
        let code_fine = match c.code_ok {
            Some(ok) => ok,
            None => !requires_code,
        };
        if code_fine {
            if open {
                tx.execute(
                    "UPDATE parcels SET status='delivered', updated_at=?2 WHERE parcel_id=?1",
                    params![c.parcel_id, ts(now)],
                )?;
            }
            event(
                tx,
                &c.parcel_id,
                now,
                "delivered",
                &format!(
                    "confirmed by device {} (verified {})",
                    c.device_id, c.verified
                ),
            )?;
        } else {
            disputed = true;
            if status != "delivered" {
                tx.execute(
                    "UPDATE parcels SET status='disputed', updated_at=?2 WHERE parcel_id=?1",
                    params![c.parcel_id, ts(now)],
                )?;
            }
            let kind = if c.code_ok.is_some() {
                "code_mismatch"
            } else {
                "delivered_without_code"
            };
            signal(
                tx,
                kind,
                pid,
                did,
                cid,
                "a delivery confirmation failed the server's full code check",
                now,
            )?;
            event(
                tx,
                &c.parcel_id,
                now,
                "disputed",
                &format!("{kind} from device {}", c.device_id),
            )?;
        }
    } else {
        if status == "scheduled" {
            tx.execute(
                "UPDATE parcels SET status='failed', updated_at=?2 WHERE parcel_id=?1",
                params![c.parcel_id, ts(now)],
            )?;
        }
        let reason = c.reason.clone().unwrap_or_default();
        if reason == "locked_out" {
            signal(
                tx,
                "many_wrong_tries",
                pid,
                did,
                cid,
                "parcel locked out at the door",
                now,
            )?;
        }
        event(
            tx,
            &c.parcel_id,
            now,
            "failed",
            &format!("attempt {} failed: {reason}", c.attempt),
        )?;
    }
    tx.execute(
        "INSERT INTO confirmations(confirmation_id, device_id, seq, manifest_id, revision, parcel_id, delivery_date, attempt,
           outcome, reason, verified, failed_attempts, code_ok, disputed, recorded_at, received_at)
         VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16)",
        params![
            c.confirmation_id, c.device_id, seq, c.manifest_id, rev, c.parcel_id, ds(c.delivery_date), c.attempt,
            c.outcome, c.reason, c.verified, c.failed_attempts, c.code_ok, disputed, ts(c.recorded_at), ts(now)
        ],
    )?;
    Ok(IngestOutcome::Accepted { disputed })
}

fn device_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Device> {
    Ok(Device {
        device_id: r.get(0)?,
        courier_id: r.get(1)?,
        name: r.get(2)?,
        public_key: r.get(3)?,
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
            let mut out = Vec::with_capacity(items.len());
            for p in items {
                let exists: bool = tx
                    .query_row("SELECT 1 FROM parcels WHERE parcel_id=?1", [&p.parcel_id], |_| Ok(true))
                    .optional()?
                    .unwrap_or(false);
                if exists {
                    tx.execute(
                        "UPDATE parcels SET recipient_name=?2, email=?3, phone=?4, address=?5, value=?6,
                           currency=?7, requires_code=?8, updated_at=?9 WHERE parcel_id=?1",
                        params![p.parcel_id, p.recipient_name, p.email, p.phone, p.address, p.value, p.currency, p.requires_code, ts(now)],
                    )?;
                    event(tx, &p.parcel_id, now, "updated", "parcel details updated")?;
                    out.push(UpsertStatus::Updated);
                } else {
                    tx.execute(
                        "INSERT INTO parcels(parcel_id, recipient_name, email, phone, address, value, currency,
                           requires_code, track_token, created_at, updated_at)
                         VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?10)",
                        params![p.parcel_id, p.recipient_name, p.email, p.phone, p.address, p.value, p.currency, p.requires_code, p.track_token, ts(now)],
                    )?;
                    event(tx, &p.parcel_id, now, "created", if p.requires_code { "requires a code" } else { "no code needed" })?;
                    out.push(UpsertStatus::Created);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn parcel(&self, parcel_id: &str) -> Result<Option<ParcelView>> {
        let id = parcel_id.to_string();
        self.tx(move |tx| {
            let row = tx
                .query_row(
                    "SELECT parcel_id, recipient_name, address, requires_code, status, delivery_date, attempt,
                       route_id, wrong_tries, locked FROM parcels WHERE parcel_id=?1",
                    [&id],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, bool>(3)?,
                            r.get::<_, String>(4)?,
                            r.get::<_, Option<String>>(5)?,
                            r.get::<_, i64>(6)?,
                            r.get::<_, Option<String>>(7)?,
                            r.get::<_, i64>(8)?,
                            r.get::<_, bool>(9)?,
                        ))
                    },
                )
                .optional()?;
            let Some((parcel_id, recipient_name, address, requires_code, status, date, attempt, route_id, wrong, locked)) = row else {
                return Ok(None);
            };
            let mut st = tx.prepare("SELECT at, kind, detail FROM parcel_events WHERE parcel_id=?1 ORDER BY id")?;
            let events = st
                .query_map([&parcel_id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)))?
                .map(|r| {
                    let (at, kind, detail) = r?;
                    Ok(ParcelEvent { at: parse_ts(&at)?, kind, detail })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(Some(ParcelView {
                parcel_id,
                recipient_name,
                address,
                requires_code,
                status,
                delivery_date: date.as_deref().map(parse_date).transpose()?,
                attempt: u32_of(attempt)?,
                route_id,
                wrong_tries: u32_of(wrong)?,
                locked,
                events,
            }))
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
        let d = date.to_string();
        self.tx(move |tx| {
            let mut st = tx.prepare(
                "SELECT parcel_id FROM parcels WHERE delivery_date=?1 ORDER BY parcel_id",
            )?;
            let ids = st
                .query_map([&d], |r| r.get::<_, String>(0))?
                .collect::<std::result::Result<Vec<_>, _>>()?;
            Ok(ids)
        })
        .await
    }

    async fn save_route(&self, route: RouteInput, now: DateTime<Utc>) -> Result<RouteSaved> {
        self.tx(move |tx| {
            let date = ds(route.delivery_date);
            let other: Option<String> = tx
                .query_row(
                    "SELECT route_id FROM routes WHERE courier_id=?1 AND delivery_date=?2 AND route_id<>?3",
                    params![route.courier_id, date, route.route_id],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(other) = other {
                return Err(StorageError::Conflict(format!(
                    "courier {} already has route {other} on {date}",
                    route.courier_id
                )));
            }
            // Check every parcel before changing anything.
            let mut wanted = Vec::new();
            for s in &route.stops {
                for pid in &s.parcel_ids {
                    let row = tx
                        .query_row(
                            "SELECT status, requires_code, delivery_date, attempt, recipient_name FROM parcels WHERE parcel_id=?1",
                            [pid],
                            |r| Ok((r.get::<_, String>(0)?, r.get::<_, bool>(1)?, r.get::<_, Option<String>>(2)?, r.get::<_, i64>(3)?, r.get::<_, String>(4)?)),
                        )
                        .optional()?;
                    let Some((status, requires_code, pdate, attempt, name)) = row else {
                        return Err(StorageError::NotFound(format!("parcel {pid} is not known; POST it to /v1/parcels first")));
                    };
                    if status == "delivered" {
                        return Err(StorageError::Conflict(format!("parcel {pid} is already delivered")));
                    }
                    let elsewhere: Option<String> = tx
                        .query_row(
                            "SELECT route_id FROM stop_parcels WHERE delivery_date=?1 AND parcel_id=?2 AND route_id<>?3",
                            params![date, pid, route.route_id],
                            |r| r.get(0),
                        )
                        .optional()?;
                    if let Some(r) = elsewhere {
                        return Err(StorageError::Conflict(format!("parcel {pid} is already on route {r} on {date}")));
                    }
                    wanted.push((pid.clone(), requires_code, pdate, u32_of(attempt)?, name));
                }
            }
            let old_rev: Option<i64> = tx
                .query_row(
                    "SELECT revision FROM routes WHERE route_id=?1 AND delivery_date=?2",
                    params![route.route_id, date],
                    |r| r.get(0),
                )
                .optional()?;
            let revision = old_rev.unwrap_or(0) + 1;
            tx.execute(
                "INSERT INTO routes(route_id, delivery_date, courier_id, revision, updated_at) VALUES(?1,?2,?3,?4,?5)
                 ON CONFLICT(route_id, delivery_date) DO UPDATE SET courier_id=?3, revision=?4, updated_at=?5",
                params![route.route_id, date, route.courier_id, revision, ts(now)],
            )?;
            // Parcels dropped from this route go back to pending.
            let mut st = tx.prepare("SELECT parcel_id FROM stop_parcels WHERE route_id=?1 AND delivery_date=?2")?;
            let before: Vec<String> = st
                .query_map(params![route.route_id, date], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            drop(st);
            for pid in before {
                if !wanted.iter().any(|w| w.0 == pid) {
                    tx.execute(
                        "UPDATE parcels SET status='pending', delivery_date=NULL, route_id=NULL, updated_at=?2
                         WHERE parcel_id=?1 AND status IN ('scheduled','failed')",
                        params![pid, ts(now)],
                    )?;
                    event(tx, &pid, now, "unscheduled", &format!("removed from route {}", route.route_id))?;
                }
            }
            tx.execute("DELETE FROM stop_parcels WHERE route_id=?1 AND delivery_date=?2", params![route.route_id, date])?;
            tx.execute("DELETE FROM stops WHERE route_id=?1 AND delivery_date=?2", params![route.route_id, date])?;
            let mut notices = 0u32;
            let mut seq = 0u32;
            for s in &route.stops {
                seq += 1;
                let recipient = match &s.recipient {
                    Some(r) => r.clone(),
                    None => s
                        .parcel_ids
                        .first()
                        .and_then(|p| wanted.iter().find(|w| &w.0 == p))
                        .map(|w| w.4.clone())
                        .unwrap_or_else(|| "Recipient".to_string()),
                };
                tx.execute(
                    "INSERT INTO stops(route_id, delivery_date, stop_id, sequence, address, recipient) VALUES(?1,?2,?3,?4,?5,?6)",
                    params![route.route_id, date, s.stop_id, seq, s.address, recipient],
                )?;
                for (pos, pid) in s.parcel_ids.iter().enumerate() {
                    let pos = i64::try_from(pos).map_err(be)?;
                    tx.execute(
                        "INSERT INTO stop_parcels(route_id, delivery_date, stop_id, parcel_id, position) VALUES(?1,?2,?3,?4,?5)",
                        params![route.route_id, date, s.stop_id, pid, pos],
                    )?;
                }
            }
            for (pid, requires_code, pdate, attempt, _) in &wanted {
                if pdate.as_deref() == Some(date.as_str()) && *attempt > 0 {
                    // Same day, same code: only the route assignment may change.
                    tx.execute(
                        "UPDATE parcels SET route_id=?2, updated_at=?3 WHERE parcel_id=?1",
                        params![pid, route.route_id, ts(now)],
                    )?;
                    continue;
                }
                if let Some(old) = pdate {
                    // Leaving another day's route: that route changes too.
                    let old_route: Option<String> = tx
                        .query_row("SELECT route_id FROM stop_parcels WHERE delivery_date=?1 AND parcel_id=?2", params![old, pid], |r| r.get(0))
                        .optional()?;
                    tx.execute("DELETE FROM stop_parcels WHERE delivery_date=?1 AND parcel_id=?2", params![old, pid])?;
                    if let Some(r) = old_route {
                        bump_route(tx, &r, parse_date(old)?, now)?;
                    }
                }
                notices += schedule(tx, pid, &route.route_id, route.delivery_date, attempt + 1, *requires_code, now)?;
            }
            Ok(RouteSaved {
                route_id: route.route_id.clone(),
                delivery_date: route.delivery_date,
                revision: u64_of(revision)?,
                notices_queued: notices,
            })
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
                    params![c, ds(date)],
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

    async fn create_enrollment(
        &self,
        code_hash: &str,
        courier_id: &str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let (h, c) = (code_hash.to_string(), courier_id.to_string());
        self.tx(move |tx| {
            tx.execute(
                "INSERT INTO enrollments(code_hash, courier_id, expires_at, created_at) VALUES(?1,?2,?3,?4)",
                params![h, c, ts(expires_at), ts(now)],
            )?;
            Ok(())
        })
        .await
    }

    async fn enroll_device(
        &self,
        code_hash: &str,
        device: NewDevice,
        now: DateTime<Utc>,
    ) -> Result<Option<Device>> {
        let h = code_hash.to_string();
        self.tx(move |tx| {
            let courier: Option<String> = tx
                .query_row(
                    "SELECT courier_id FROM enrollments WHERE code_hash=?1 AND used_at IS NULL AND expires_at > ?2",
                    params![h, ts(now)],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(courier_id) = courier else {
                return Ok(None);
            };
            tx.execute("UPDATE enrollments SET used_at=?2 WHERE code_hash=?1", params![h, ts(now)])?;
            tx.execute(
                "INSERT INTO devices(device_id, courier_id, name, public_key, token_hash, enrolled_at) VALUES(?1,?2,?3,?4,?5,?6)",
                params![device.device_id, courier_id, device.name, device.public_key, device.token_hash, ts(now)],
            )?;
            Ok(Some(Device {
                device_id: device.device_id,
                courier_id,
                name: device.name,
                public_key: device.public_key,
            }))
        })
        .await
    }

    async fn device_by_token(&self, token_hash: &str) -> Result<Option<Device>> {
        let h = token_hash.to_string();
        self.tx(move |tx| {
            Ok(tx
                .query_row(
                    "SELECT device_id, courier_id, name, public_key FROM devices WHERE token_hash=?1",
                    [h],
                    device_row,
                )
                .optional()?)
        })
        .await
    }

    async fn device(&self, device_id: &str) -> Result<Option<Device>> {
        let d = device_id.to_string();
        self.tx(move |tx| {
            Ok(tx
                .query_row(
                    "SELECT device_id, courier_id, name, public_key FROM devices WHERE device_id=?1",
                    [d],
                    device_row,
                )
                .optional()?)
        })
        .await
    }

    async fn devices_of_courier(&self, courier_id: &str) -> Result<Vec<Device>> {
        let c = courier_id.to_string();
        self.tx(move |tx| {
            let mut st = tx.prepare(
                "SELECT device_id, courier_id, name, public_key FROM devices WHERE courier_id=?1 ORDER BY enrolled_at",
            )?;
            let v = st.query_map([c], device_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(v)
        })
        .await
    }

    async fn manifest(
        &self,
        route_id: &str,
        date: NaiveDate,
        device_id: &str,
    ) -> Result<Option<StoredManifest>> {
        let (r, d) = (route_id.to_string(), device_id.to_string());
        self.tx(move |tx| {
            let row = tx
                .query_row(
                    "SELECT manifest_id, revision, envelope FROM manifests WHERE route_id=?1 AND delivery_date=?2 AND device_id=?3",
                    params![r, ds(date), d],
                    |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?, row.get::<_, String>(2)?)),
                )
                .optional()?;
            let Some((manifest_id, revision, envelope_json)) = row else {
                return Ok(None);
            };
            Ok(Some(StoredManifest {
                route_id: r,
                delivery_date: date,
                device_id: d,
                manifest_id,
                revision: u64_of(revision)?,
                envelope_json,
                items: Vec::new(),
            }))
        })
        .await
    }

    async fn current_manifest(
        &self,
        courier_id: &str,
        date: NaiveDate,
        device_id: &str,
    ) -> Result<Option<StoredManifest>> {
        let (c, d) = (courier_id.to_string(), device_id.to_string());
        self.tx(move |tx| {
            let row = tx
                .query_row(
                    "SELECT m.route_id, m.manifest_id, m.revision, m.envelope FROM routes r
                     JOIN manifests m ON m.route_id=r.route_id AND m.delivery_date=r.delivery_date AND m.device_id=?3
                     WHERE r.courier_id=?1 AND r.delivery_date=?2 AND m.revision >= r.revision",
                    params![c, ds(date), d],
                    |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?, row.get::<_, i64>(2)?, row.get::<_, String>(3)?)),
                )
                .optional()?;
            let Some((route_id, manifest_id, revision, envelope_json)) = row else {
                return Ok(None);
            };
            Ok(Some(StoredManifest {
                route_id,
                delivery_date: date,
                device_id: d,
                manifest_id,
                revision: u64_of(revision)?,
                envelope_json,
                items: Vec::new(),
            }))
        })
        .await
    }

    async fn store_manifest(&self, m: StoredManifest) -> Result<StoredManifest> {
        self.tx(move |tx| {
            let date = ds(m.delivery_date);
            let existing = tx
                .query_row(
                    "SELECT manifest_id, revision, envelope FROM manifests WHERE route_id=?1 AND delivery_date=?2 AND device_id=?3",
                    params![m.route_id, date, m.device_id],
                    |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?, row.get::<_, String>(2)?)),
                )
                .optional()?;
            if let Some((manifest_id, revision, envelope_json)) = existing {
                let revision = u64_of(revision)?;
                if revision >= m.revision {
                    return Ok(StoredManifest { manifest_id, revision, envelope_json, items: Vec::new(), ..m });
                }
            }
            let rev = i64_of(m.revision)?;
            tx.execute(
                "INSERT INTO manifests(route_id, delivery_date, device_id, manifest_id, revision, envelope) VALUES(?1,?2,?3,?4,?5,?6)
                 ON CONFLICT(route_id, delivery_date, device_id) DO UPDATE SET manifest_id=?4, revision=?5, envelope=?6",
                params![m.route_id, date, m.device_id, m.manifest_id, rev, m.envelope_json],
            )?;
            for (pid, attempt) in &m.items {
                tx.execute(
                    "INSERT OR IGNORE INTO manifest_items(device_id, manifest_id, revision, parcel_id, delivery_date, attempt) VALUES(?1,?2,?3,?4,?5,?6)",
                    params![m.device_id, m.manifest_id, rev, pid, date, attempt],
                )?;
            }
            Ok(m)
        })
        .await
    }

    async fn ingest_confirmation(&self, c: IngestConfirmation) -> Result<IngestOutcome> {
        self.tx(move |tx| ingest_in(tx, c)).await
    }

    async fn ingest_confirmations(
        &self,
        items: Vec<IngestConfirmation>,
    ) -> Vec<Result<IngestOutcome>> {
        let n = items.len();
        let done = self
            .tx(move |tx| {
                let mut out = Vec::with_capacity(items.len());
                for c in items {
                    tx.execute_batch("SAVEPOINT item")?;
                    let r = ingest_in(tx, c);
                    if r.is_err() {
                        tx.execute_batch("ROLLBACK TO item")?;
                    }
                    tx.execute_batch("RELEASE item")?;
                    out.push(r);
                }
                Ok(out)
            })
            .await;
        match done {
            Ok(out) => out,
            // Nothing was committed: every item failed with the transaction.
            Err(e) => {
                let msg = e.to_string();
                (0..n)
                    .map(|_| Err(StorageError::Backend(msg.clone())))
                    .collect()
            }
        }
    }

    async fn verify_target(
        &self,
        device_id: &str,
        parcel_id: &str,
    ) -> Result<Option<VerifyTarget>> {
        let (d, p) = (device_id.to_string(), parcel_id.to_string());
        self.tx(move |tx| {
            let row = tx
                .query_row(
                    "SELECT p.delivery_date, p.attempt, p.requires_code FROM parcels p
                     WHERE p.parcel_id=?2 AND p.delivery_date IS NOT NULL AND EXISTS(
                       SELECT 1 FROM manifest_items m WHERE m.device_id=?1 AND m.parcel_id=p.parcel_id
                         AND m.delivery_date=p.delivery_date AND m.attempt=p.attempt)",
                    params![d, p],
                    |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, bool>(2)?)),
                )
                .optional()?;
            let Some((date, attempt, requires_code)) = row else {
                return Ok(None);
            };
            Ok(Some(VerifyTarget { delivery_date: parse_date(&date)?, attempt: u32_of(attempt)?, requires_code }))
        })
        .await
    }

    async fn record_verify(
        &self,
        device_id: &str,
        parcel_id: &str,
        date: NaiveDate,
        attempt: u32,
        ok: bool,
        max_attempts: u32,
        now: DateTime<Utc>,
    ) -> Result<VerifyOutcome> {
        let (d, p) = (device_id.to_string(), parcel_id.to_string());
        self.tx(move |tx| {
            let row = tx
                .query_row(
                    "SELECT delivery_date, attempt, wrong_tries, locked FROM parcels WHERE parcel_id=?1",
                    [&p],
                    |r| Ok((r.get::<_, Option<String>>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?, r.get::<_, bool>(3)?)),
                )
                .optional()?;
            let Some((pdate, pattempt, wrong, locked)) = row else {
                return Ok(VerifyOutcome::Stale);
            };
            if pdate.as_deref() != Some(ds(date).as_str()) || u32_of(pattempt)? != attempt {
                return Ok(VerifyOutcome::Stale);
            }
            if locked {
                return Ok(VerifyOutcome::Locked);
            }
            if ok {
                event(tx, &p, now, "verified_online", &format!("code accepted for device {d}"))?;
                return Ok(VerifyOutcome::Accepted);
            }
            let wrong = u32_of(wrong)?.saturating_add(1);
            let lock = wrong >= max_attempts;
            tx.execute(
                "UPDATE parcels SET wrong_tries=?2, locked=?3, updated_at=?4 WHERE parcel_id=?1",
                params![p, wrong, lock, ts(now)],
            )?;
            event(tx, &p, now, "wrong_code", &format!("online try {wrong} of {max_attempts} failed (device {d})"))?;
            if lock {
                signal(tx, "verify_lockout", Some(&p), Some(&d), None, &format!("locked after {wrong} wrong online tries"), now)?;
                event(tx, &p, now, "locked", "too many wrong codes; dispatch can reissue")?;
                return Ok(VerifyOutcome::Locked);
            }
            Ok(VerifyOutcome::Rejected { attempts_left: max_attempts - wrong })
        })
        .await
    }

    async fn reissue(&self, parcel_id: &str, now: DateTime<Utc>) -> Result<Moved> {
        let p = parcel_id.to_string();
        self.tx(move |tx| {
            let row = tx
                .query_row(
                    "SELECT status, delivery_date, attempt, route_id, requires_code FROM parcels WHERE parcel_id=?1",
                    [&p],
                    |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?, r.get::<_, i64>(2)?, r.get::<_, Option<String>>(3)?, r.get::<_, bool>(4)?)),
                )
                .optional()?;
            let Some((status, date, attempt, route_id, requires_code)) = row else {
                return Err(StorageError::NotFound(format!("parcel {p} is not known")));
            };
            if status == "delivered" {
                return Err(StorageError::Conflict(format!("parcel {p} is already delivered")));
            }
            let (Some(date), Some(route_id)) = (date, route_id) else {
                return Err(StorageError::Conflict(format!("parcel {p} is not on a route; nothing to reissue")));
            };
            let date = parse_date(&date)?;
            event(tx, &p, now, "code_voided", &format!("attempt {attempt} voided by dispatch"))?;
            schedule(tx, &p, &route_id, date, u32_of(attempt)? + 1, requires_code, now)?;
            bump_route(tx, &route_id, date, now)?;
            Ok(Moved { parcel_ids: vec![p.clone()], routes: vec![(route_id, date)] })
        })
        .await
    }

    async fn close_day(
        &self,
        date: NaiveDate,
        next: NaiveDate,
        now: DateTime<Utc>,
    ) -> Result<Moved> {
        self.tx(move |tx| {
            let d = ds(date);
            let mut st = tx.prepare(
                "SELECT p.parcel_id, p.attempt, p.requires_code, s.route_id, s.stop_id, r.courier_id, st.address, st.recipient
                 FROM parcels p
                 JOIN stop_parcels s ON s.parcel_id=p.parcel_id AND s.delivery_date=p.delivery_date
                 JOIN routes r ON r.route_id=s.route_id AND r.delivery_date=s.delivery_date
                 JOIN stops st ON st.route_id=s.route_id AND st.delivery_date=s.delivery_date AND st.stop_id=s.stop_id
                 WHERE p.delivery_date=?1 AND p.status IN ('scheduled','failed')
                 ORDER BY s.route_id, st.sequence, s.position",
            )?;
            let rows = st
                .query_map([&d], |r| {
                    Ok((
                        r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, bool>(2)?, r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?, r.get::<_, String>(5)?, r.get::<_, String>(6)?, r.get::<_, String>(7)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            drop(st);
            let n = ds(next);
            let mut moved = Moved::default();
            for (pid, attempt, requires_code, route_id, stop_id, courier, address, recipient) in rows {
                // The courier's route on the next day, or the same route id carried over.
                let target: Option<String> = tx
                    .query_row("SELECT route_id FROM routes WHERE courier_id=?1 AND delivery_date=?2", params![courier, n], |r| r.get(0))
                    .optional()?;
                let target = match target {
                    Some(t) => t,
                    None => {
                        tx.execute(
                            "INSERT INTO routes(route_id, delivery_date, courier_id, revision, updated_at) VALUES(?1,?2,?3,0,?4)
                             ON CONFLICT(route_id, delivery_date) DO NOTHING",
                            params![route_id, n, courier, ts(now)],
                        )?;
                        route_id.clone()
                    }
                };
                // The next day's route may already use this stop id for another address.
                let taken: Option<String> = tx
                    .query_row(
                        "SELECT address FROM stops WHERE route_id=?1 AND delivery_date=?2 AND stop_id=?3",
                        params![target, n, stop_id],
                        |r| r.get(0),
                    )
                    .optional()?;
                let stop_id = match taken {
                    Some(a) if a != address => format!("{stop_id}~{date}"),
                    _ => stop_id,
                };
                let max_seq: i64 = tx.query_row(
                    "SELECT COALESCE(MAX(sequence), 0) FROM stops WHERE route_id=?1 AND delivery_date=?2",
                    params![target, n],
                    |r| r.get(0),
                )?;
                tx.execute(
                    "INSERT OR IGNORE INTO stops(route_id, delivery_date, stop_id, sequence, address, recipient) VALUES(?1,?2,?3,?4,?5,?6)",
                    params![target, n, stop_id, max_seq + 1, address, recipient],
                )?;
                let pos: i64 = tx.query_row(
                    "SELECT COUNT(*) FROM stop_parcels WHERE route_id=?1 AND delivery_date=?2 AND stop_id=?3",
                    params![target, n, stop_id],
                    |r| r.get(0),
                )?;
                tx.execute(
                    "INSERT OR REPLACE INTO stop_parcels(route_id, delivery_date, stop_id, parcel_id, position) VALUES(?1,?2,?3,?4,?5)",
                    params![target, n, stop_id, pid, pos],
                )?;
                event(tx, &pid, now, "day_closed", &format!("not delivered on {date}; moved to {next}"))?;
                schedule(tx, &pid, &target, next, u32_of(attempt)? + 1, requires_code, now)?;
                if !moved.routes.iter().any(|(r, _)| r == &target) {
                    moved.routes.push((target.clone(), next));
                }
                moved.parcel_ids.push(pid);
            }
            for (r, _) in &moved.routes {
                bump_route(tx, r, next, now)?;
            }
            Ok(moved)
        })
        .await
    }

    async fn signals(&self) -> Result<Vec<Signal>> {
        self.tx(|tx| {
            let mut st = tx.prepare("SELECT id, kind, parcel_id, device_id, confirmation_id, detail, at FROM signals ORDER BY id")?;
            let rows = st
                .query_map([], |r| {
                    Ok((
                        r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, Option<String>>(2)?, r.get::<_, Option<String>>(3)?,
                        r.get::<_, Option<String>>(4)?, r.get::<_, String>(5)?, r.get::<_, String>(6)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter()
                .map(|(id, kind, parcel_id, device_id, confirmation_id, detail, at)| {
                    Ok(Signal { id, kind, parcel_id, device_id, confirmation_id, detail, at: parse_ts(&at)? })
                })
                .collect()
        })
        .await
    }

    async fn claim_notices(
        &self,
        now: DateTime<Utc>,
        lease_secs: i64,
        limit: u32,
    ) -> Result<Vec<NoticeJob>> {
        self.tx(move |tx| {
            let n = ts(now);
            let mut st = tx.prepare(
                "SELECT id, parcel_id, delivery_date, attempt, tries FROM notices
                 WHERE status='pending' AND next_attempt_at <= ?1 AND (claimed_until IS NULL OR claimed_until <= ?1)
                 ORDER BY id LIMIT ?2",
            )?;
            let rows = st
                .query_map(params![n, limit], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, i64>(3)?, r.get::<_, i64>(4)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            drop(st);
            let until = ts(now + chrono::Duration::seconds(lease_secs));
            let mut jobs = Vec::with_capacity(rows.len());
            for (id, parcel_id, date, attempt, tries) in rows {
                tx.execute("UPDATE notices SET claimed_until=?2 WHERE id=?1", params![id, until])?;
                jobs.push(NoticeJob {
                    notice_id: id,
                    parcel_id,
                    delivery_date: parse_date(&date)?,
                    attempt: u32_of(attempt)?,
                    tries: u32_of(tries)?,
                });
            }
            Ok(jobs)
        })
        .await
    }

    async fn renew_notice_claims(&self, notice_ids: &[i64], until: DateTime<Utc>) -> Result<()> {
        let ids = notice_ids.to_vec();
        self.tx(move |tx| {
            let mut st = tx.prepare_cached(
                "UPDATE notices SET claimed_until=?2 WHERE id=?1 AND status='pending' AND claimed_until IS NOT NULL",
            )?;
            let until = ts(until);
            for id in ids {
                st.execute(params![id, until])?;
            }
            Ok(())
        })
        .await
    }

    async fn notice_sent(&self, notice_id: i64, now: DateTime<Utc>) -> Result<()> {
        self.tx(move |tx| {
            tx.execute(
                "UPDATE notices SET status='sent', sent_at=?2, claimed_until=NULL, tries=tries+1 WHERE id=?1",
                params![notice_id, ts(now)],
            )?;
            Ok(())
        })
        .await
    }

    async fn notice_failed(
        &self,
        notice_id: i64,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
    ) -> Result<()> {
        let e = error.to_string();
        self.tx(move |tx| {
            match retry_at {
                Some(t) => tx.execute(
                    "UPDATE notices SET tries=tries+1, last_error=?2, next_attempt_at=?3, claimed_until=NULL WHERE id=?1",
                    params![notice_id, e, ts(t)],
                )?,
                None => tx.execute(
                    "UPDATE notices SET tries=tries+1, last_error=?2, status='failed', claimed_until=NULL WHERE id=?1",
                    params![notice_id, e],
                )?,
            };
            Ok(())
        })
        .await
    }

    async fn notice_counts(&self) -> Result<(u64, u64, u64)> {
        self.tx(|tx| {
            let count = |s: &str| -> Result<u64> {
                let n: i64 =
                    tx.query_row("SELECT COUNT(*) FROM notices WHERE status=?1", [s], |r| {
                        r.get(0)
                    })?;
                u64_of(n)
            };
            Ok((count("pending")?, count("sent")?, count("failed")?))
        })
        .await
    }
}
