//! Applying a decision's plan (its `Changes`) inside the same transaction.

use super::*;

pub(super) async fn route_change(
    tx: &Tx<'_>,
    c: &RouteChange,
    now: &DateTime<Utc>,
) -> TxResult<()> {
    match c {
        RouteChange::Put(h) | RouteChange::Open(h) => {
            let sql = if matches!(c, RouteChange::Put(_)) {
                "INSERT INTO routes(route_id, delivery_date, courier_id, revision, updated_at) VALUES($1,$2,$3,$4,$5)
                 ON CONFLICT(route_id, delivery_date) DO UPDATE SET courier_id=$3, revision=$4, updated_at=$5"
            } else {
                "INSERT INTO routes(route_id, delivery_date, courier_id, revision, updated_at) VALUES($1,$2,$3,$4,$5)"
            };
            let rev = i64_of(h.revision)?;
            exec(tx, sql, &[&h.route_id, &h.date, &h.courier_id, &rev, now]).await?
        }
        RouteChange::Bump(r) => {
            let sql = "UPDATE routes SET revision = revision + 1, updated_at = $3 WHERE route_id = $1 AND delivery_date = $2";
            exec(tx, sql, &[&r.route_id, &r.date, now]).await?
        }
        RouteChange::Clear(r) => {
            let p: Params<'_> = &[&r.route_id, &r.date];
            exec(
                tx,
                "DELETE FROM stop_parcels WHERE route_id=$1 AND delivery_date=$2",
                p,
            )
            .await?;
            exec(
                tx,
                "DELETE FROM stops WHERE route_id=$1 AND delivery_date=$2",
                p,
            )
            .await?
        }
        RouteChange::AddStop(st) => {
            let sql = "INSERT INTO stops(route_id, delivery_date, stop_id, sequence, address, recipient) VALUES($1,$2,$3,$4,$5,$6)";
            let seq = i64::from(st.sequence);
            exec(
                tx,
                sql,
                &[
                    &st.route_id,
                    &st.date,
                    &st.stop_id,
                    &seq,
                    &st.address,
                    &st.recipient,
                ],
            )
            .await?
        }
        RouteChange::Place(pl) => {
            let sql = "INSERT INTO stop_parcels(route_id, delivery_date, stop_id, parcel_id, position) VALUES($1,$2,$3,$4,$5)
                 ON CONFLICT(delivery_date, parcel_id) DO UPDATE SET route_id=$1, stop_id=$3, position=$5";
            let pos = i64::from(pl.position);
            exec(
                tx,
                sql,
                &[&pl.route_id, &pl.date, &pl.stop_id, &pl.parcel_id, &pos],
            )
            .await?
        }
        RouteChange::Unplace(date, parcel_id) => {
            let sql = "DELETE FROM stop_parcels WHERE delivery_date=$1 AND parcel_id=$2";
            exec(tx, sql, &[date, parcel_id]).await?
        }
    };
    Ok(())
}

pub(super) async fn parcel_change(
    tx: &Tx<'_>,
    c: &ParcelChange,
    now: &DateTime<Utc>,
) -> TxResult<()> {
    match c {
        ParcelChange::Put(p) => {
            let sql = "INSERT INTO parcels(parcel_id, recipient_name, email, phone, address, value, currency,
                   requires_code, track_token, track_nonce, created_at, updated_at)
                 VALUES($1,$2,$3,$4,$5,$6,$7,$8,$9,$11,$10,$10)
                 ON CONFLICT(parcel_id) DO UPDATE SET recipient_name=$2, email=$3, phone=$4, address=$5,
                   value=$6, currency=$7, requires_code=$8, updated_at=$10";
            let v: Params<'_> = &[
                &p.parcel_id,
                &p.details.recipient_name,
                &p.details.email,
                &p.details.phone,
                &p.details.address,
                &p.details.value,
                &p.details.currency,
                &p.details.requires_code,
                &p.track.hash,
                now,
                &p.track.nonce,
            ];
            exec(tx, sql, v).await?
        }
        ParcelChange::Schedule(s) => {
            let sql = "UPDATE parcels SET status=$2, delivery_date=$3, attempt=$4, route_id=$5, requires_code=$6,
                   track_token=COALESCE($7, track_token), track_nonce=COALESCE($9, track_nonce),
                   track_legacy=CASE WHEN $7::TEXT IS NULL THEN track_legacy END,
                   wrong_tries=0, locked=FALSE, updated_at=$8 WHERE parcel_id=$1";
            let a = i64::from(s.attempt);
            let v: Params<'_> = &[
                &s.parcel_id,
                &ParcelState::Scheduled,
                &s.date,
                &a,
                &s.route_id,
                &s.requires_code,
                &s.track.as_ref().map(|t| t.hash.as_str()),
                now,
                &s.track.as_ref().map(|t| t.nonce.as_str()),
            ];
            exec(tx, sql, v).await?
        }
        ParcelChange::Unschedule(parcel_id) => {
            let sql = "UPDATE parcels SET status=$2, delivery_date=NULL, route_id=NULL, updated_at=$3 WHERE parcel_id=$1";
            exec(tx, sql, &[parcel_id, &ParcelState::Pending, now]).await?
        }
        ParcelChange::Reassign(parcel_id, route_id) => {
            let sql = "UPDATE parcels SET route_id=$2, updated_at=$3 WHERE parcel_id=$1";
            exec(tx, sql, &[parcel_id, route_id, now]).await?
        }
        ParcelChange::Tries(t) => {
            let sql =
                "UPDATE parcels SET wrong_tries=$2, locked=$3, updated_at=$4 WHERE parcel_id=$1";
            exec(
                tx,
                sql,
                &[&t.parcel_id, &i64::from(t.wrong_tries), &t.locked, now],
            )
            .await?
        }
    };
    Ok(())
}

/// Persist a decision's [`Changes`]: row changes one statement each, then
/// states, events, signals and notices one `UNNEST` statement per table.
pub(super) async fn apply(tx: &Tx<'_>, ch: &Changes, now: &DateTime<Utc>) -> TxResult<()> {
    for c in &ch.routes {
        route_change(tx, c, now).await?;
    }
    for c in &ch.parcels {
        parcel_change(tx, c, now).await?;
    }
    if !ch.states.is_empty() {
        let (ids, states): (Vec<&str>, Vec<ParcelState>) =
            ch.states.iter().map(|(p, s)| (p.as_str(), *s)).unzip();
        exec(
            tx,
            "UPDATE parcels p SET status=u.status, updated_at=$3
             FROM UNNEST($1::text[], $2::text[]) AS u(id, status) WHERE p.parcel_id=u.id",
            &[&ids, &states, now],
        )
        .await?;
    }
    if !ch.events.is_empty() {
        let ids: Vec<&str> = ch.events.iter().map(|e| e.parcel_id.as_str()).collect();
        let kinds: Vec<EventKind> = ch.events.iter().map(|e| e.kind).collect();
        let details: Vec<&str> = ch.events.iter().map(|e| e.detail.as_str()).collect();
        exec(
            tx,
            "INSERT INTO parcel_events(parcel_id, at, kind, detail)
             SELECT u.p, $1, u.k, u.d FROM UNNEST($2::text[], $3::text[], $4::text[]) WITH ORDINALITY AS u(p, k, d, n)
             ORDER BY u.n",
            &[now, &ids, &kinds, &details],
        )
        .await?;
    }
    if !ch.signals.is_empty() {
        let s = &ch.signals;
        let kinds: Vec<SignalKind> = s.iter().map(|x| x.kind).collect();
        let parcels: Vec<&str> = s.iter().map(|x| x.parcel_id.as_str()).collect();
        let devices: Vec<Option<&str>> = s.iter().map(|x| x.device_id.as_deref()).collect();
        let confs: Vec<Option<&str>> = s.iter().map(|x| x.confirmation_id.as_deref()).collect();
        let days: Vec<NaiveDate> = s.iter().map(|x| x.day).collect();
        let details: Vec<&str> = s.iter().map(|x| x.detail.as_str()).collect();
        let matched: Vec<Option<bool>> = s.iter().map(|x| x.code_matched).collect();
        exec(
            tx,
            "INSERT INTO signals(kind, parcel_id, device_id, confirmation_id, day, detail, code_matched, at)
             SELECT u.k, u.p, u.d, u.c, u.day, u.detail, u.m, $1
             FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[], $6::date[], $7::text[], $8::bool[])
               WITH ORDINALITY AS u(k, p, d, c, day, detail, m, n)
             ORDER BY u.n",
            &[now, &kinds, &parcels, &devices, &confs, &days, &details, &matched],
        )
        .await?;
    }
    if !ch.notices.is_empty() {
        let ids: Vec<&str> = ch.notices.iter().map(|n| n.parcel_id.as_str()).collect();
        let days: Vec<NaiveDate> = ch.notices.iter().map(|n| n.delivery_date).collect();
        let attempts: Vec<i64> = ch.notices.iter().map(|n| i64::from(n.attempt)).collect();
        exec(
            tx,
            "INSERT INTO notices(parcel_id, delivery_date, attempt, status, next_attempt_at, created_at)
             SELECT u.p, u.d, u.a, $1, $2, $2 FROM UNNEST($3::text[], $4::date[], $5::bigint[]) WITH ORDINALITY AS u(p, d, a, n)
             ORDER BY u.n",
            &[&NoticeState::Pending, now, &ids, &days, &attempts],
        )
        .await?;
    }
    Ok(())
}

/// An upload's plan: its confirmations first (see the module doc), the
/// device's seq, then the changes.
pub(super) async fn apply_ingest(
    tx: &Tx<'_>,
    device_id: &str,
    plan: &IngestPlan,
    now: &DateTime<Utc>,
) -> TxResult<()> {
    if !plan.confirmations.is_empty() {
        let rows = &plan.confirmations;
        let col = |f: fn(&ConfirmationRow) -> String| rows.iter().map(f).collect::<Vec<_>>();
        let num = |f: fn(&ConfirmationRow) -> u64| {
            rows.iter()
                .map(|r| i64_of(f(r)))
                .collect::<TxResult<Vec<_>>>()
        };
        let inserted = query(
            tx,
            "INSERT INTO confirmations(confirmation_id, device_id, seq, manifest_id, revision, parcel_id, delivery_date,
               attempt, outcome, reason, verified, failed_attempts, code_ok, disputed, recorded_at, received_at)
             SELECT u.*, $16 FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::bigint[], $6::text[],
               $7::date[], $8::bigint[], $9::text[], $10::text[], $11::text[], $12::bigint[], $13::bool[], $14::bool[],
               $15::timestamptz[]) AS u
             ON CONFLICT (confirmation_id) DO NOTHING RETURNING confirmation_id",
            &[
                &col(|r| r.c.confirmation_id.clone()),
                &col(|r| r.c.device_id.clone()),
                &num(|r| r.c.seq)?,
                &col(|r| r.c.manifest_id.clone()),
                &num(|r| r.c.revision)?,
                &col(|r| r.c.parcel_id.clone()),
                &rows.iter().map(|r| r.c.delivery_date).collect::<Vec<_>>(),
                &num(|r| u64::from(r.c.attempt))?,
                &col(|r| r.c.outcome.as_str().to_string()),
                &rows.iter().map(|r| r.c.reason.map(Label::as_str)).collect::<Vec<_>>(),
                &col(|r| r.c.verified.as_str().to_string()),
                &num(|r| u64::from(r.c.failed_attempts))?,
                &rows.iter().map(|r| r.c.code_ok).collect::<Vec<_>>(),
                &rows.iter().map(|r| r.disputed).collect::<Vec<_>>(),
                &rows.iter().map(|r| r.c.recorded_at).collect::<Vec<_>>(),
                now,
            ],
        )
        .await?;
        if inserted.len() != rows.len() {
            // Another transaction stored one of these ids since the facts were read.
            return Err(TxError::Retry);
        }
    }
    if let Some(seq) = plan.last_seq {
        exec(
            tx,
            "UPDATE devices SET last_seq=GREATEST(last_seq, $2) WHERE device_id=$1",
            &[&device_id, &i64_of(seq)?],
        )
        .await?;
    }
    apply(tx, &plan.changes, now).await
}
