//! Applying a decision's plan (its `Changes`) inside the same transaction.

use super::*;

pub(super) fn route_change(tx: &Connection, c: &RouteChange, now: DateTime<Utc>) -> Result<()> {
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

pub(super) fn parcel_change(tx: &Connection, c: &ParcelChange, now: DateTime<Utc>) -> Result<()> {
    let now = Ts(now);
    match c {
        ParcelChange::Put(p) => tx.execute(
            "INSERT INTO parcels(parcel_id, recipient_name, email, phone, address, value, currency,
               requires_code, track_token, track_nonce, created_at, updated_at)
             VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?11,?10,?10)
             ON CONFLICT(parcel_id) DO UPDATE SET recipient_name=?2, email=?3, phone=?4, address=?5,
               value=?6, currency=?7, requires_code=?8, updated_at=?10",
            params![
                p.parcel_id,
                p.details.recipient_name,
                p.details.email,
                p.details.phone,
                p.details.address,
                p.details.value,
                p.details.currency,
                p.details.requires_code,
                p.track.hash,
                now,
                p.track.nonce
            ],
        )?,
        ParcelChange::Schedule(s) => tx.execute(
            "UPDATE parcels SET status=?2, delivery_date=?3, attempt=?4, route_id=?5, requires_code=?6,
               track_token=COALESCE(?7, track_token), track_nonce=COALESCE(?9, track_nonce),
               track_legacy=CASE WHEN ?7 IS NULL THEN track_legacy END,
               wrong_tries=0, locked=0, updated_at=?8 WHERE parcel_id=?1",
            params![s.parcel_id, ParcelState::Scheduled, Day(s.date), s.attempt, s.route_id, s.requires_code,
                s.track.as_ref().map(|t| &t.hash), now, s.track.as_ref().map(|t| &t.nonce)],
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
pub(super) fn apply(tx: &Connection, ch: &Changes, now: DateTime<Utc>) -> Result<()> {
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
pub(super) fn apply_ingest(
    tx: &Connection,
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
