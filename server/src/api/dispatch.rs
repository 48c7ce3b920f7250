//! The dispatcher's API: parcels, routes, enrollment codes, reissues,
//! closing a day and reading its disputes. Every call needs [`Dispatch`].

use super::auth::Dispatch;
use super::{parse_date, query_pairs};
use crate::app::{App, ServiceError};
use crate::domain::disputes::{self, Cursor};
use crate::domain::parcels::ParcelDetails;
use crate::error::{ApiError, Body, ErrorBody, OptionalBody, PathArg};
use crate::storage::{NewParcel, ParcelView, RouteInput, RouteStopInput, Signal, UpsertStatus};
use crate::validate::{id as check_id, text as check_text};
use axum::extract::{RawQuery, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use doorcode_core::wire::{
    self, CloseOut, DisputesOut, EnrollmentIn, EnrollmentOut, ParcelBatch, ParcelDetail,
    ParcelEvent, ParcelIn, ParcelResult, ParcelResults, ParcelStatus, ReissueIn, RouteIn, RouteOut,
};
use std::collections::HashSet;

const MAX_BATCH: usize = 10_000;

fn validate_parcel(p: &ParcelIn) -> Result<(), String> {
    check_id(&p.parcel_id, "parcel_id")?;
    check_text(&p.recipient.name, "recipient.name")?;
    check_text(&p.address, "address")?;
    if !p.value.is_finite() || p.value < 0.0 {
        return Err("value must be a finite number >= 0".into());
    }
    if p.currency.len() != 3 || !p.currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err("currency must be a 3-letter ISO 4217 code".into());
    }
    if let Some(e) = &p.recipient.email {
        crate::validate::email(e, "recipient.email")?;
    }
    if let Some(ph) = &p.recipient.phone {
        crate::validate::phone(ph, "recipient.phone")?;
    }
    Ok(())
}

/// Upsert a batch of parcels; one result per item.
#[utoipa::path(post, path = "/v1/parcels", tag = "dispatch", security(("bearer" = [])), request_body = ParcelBatch,
    responses((status = 200, body = ParcelResults), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(super) async fn post_parcels(
    State(app): State<App>,
    _d: Dispatch,
    Body(batch): Body<ParcelBatch>,
) -> Result<Json<ParcelResults>, ApiError> {
    if batch.parcels.len() > MAX_BATCH {
        return Err(ApiError::unprocessable(
            "batch_too_large",
            format!("at most {MAX_BATCH} parcels per request"),
        ));
    }
    // Each item is refused here (its answer final) or sent to storage, whose
    // statuses come back in the order the items were sent.
    enum Item {
        Refused(ParcelResult),
        Sent {
            parcel_id: String,
            requires_code: bool,
        },
    }
    let mut items = Vec::with_capacity(batch.parcels.len());
    let mut good = Vec::new();
    let mut seen = HashSet::new();
    for p in batch.parcels {
        let mut check = validate_parcel(&p);
        if check.is_ok() && !seen.insert(p.parcel_id.clone()) {
            check = Err("parcel_id appears twice in this batch".into());
        }
        if let Err(m) = check {
            items.push(Item::Refused(ParcelResult {
                parcel_id: p.parcel_id,
                status: ParcelStatus::Rejected,
                reason: None,
                requires_code: None,
                track_url: None,
                message: Some(m),
            }));
            continue;
        }
        let requires_code = app.cfg.policy.requires_code(p.requires_code, p.value);
        items.push(Item::Sent {
            parcel_id: p.parcel_id.clone(),
            requires_code,
        });
        let (_, track) = app
            .track_key
            .fresh(&p.parcel_id)
            .map_err(ApiError::internal)?;
        good.push(NewParcel {
            parcel_id: p.parcel_id,
            details: ParcelDetails {
                recipient_name: p.recipient.name,
                email: p.recipient.email,
                phone: p.recipient.phone,
                address: p.address,
                value: p.value,
                currency: p.currency,
                requires_code,
            },
            track,
        });
    }
    let mut statuses = app
        .storage
        .upsert_parcels(good, app.cfg.now())
        .await?
        .into_iter();
    let mut results = Vec::with_capacity(items.len());
    for item in items {
        let (parcel_id, requires_code) = match item {
            Item::Refused(r) => {
                results.push(r);
                continue;
            }
            Item::Sent {
                parcel_id,
                requires_code,
            } => (parcel_id, requires_code),
        };
        let status = statuses
            .next()
            .ok_or_else(|| ApiError::internal("upsert result count mismatch"))?;
        let status = match status {
            UpsertStatus::Created => ParcelStatus::Created,
            UpsertStatus::Updated => ParcelStatus::Updated,
            UpsertStatus::Unchanged => ParcelStatus::Unchanged,
            UpsertStatus::Rejected(reason) => {
                results.push(ParcelResult {
                    parcel_id,
                    status: ParcelStatus::Rejected,
                    reason: Some(reason.into()),
                    requires_code: None,
                    track_url: None,
                    message: Some(
                        "requires_code is fixed while the parcel is on a route for a day; \
                         reissue it with {\"requires_code\": …} to change it from its next attempt"
                            .into(),
                    ),
                });
                continue;
            }
        };
        let track_url = match app.storage.parcel_contact(&parcel_id).await? {
            Some(c) => Some(app.notifier.parcel_track_url(&c)),
            None => None,
        };
        results.push(ParcelResult {
            parcel_id,
            status,
            reason: None,
            requires_code: Some(requires_code),
            track_url,
            message: None,
        });
    }
    Ok(Json(ParcelResults { results }))
}

/// A parcel as dispatch sees it: never its code.
fn parcel_detail_of(p: ParcelView, track_url: String) -> ParcelDetail {
    ParcelDetail {
        parcel_id: p.parcel_id,
        recipient_name: p.recipient_name,
        address: p.address,
        requires_code: p.requires_code,
        status: p.status.into(),
        delivery_date: p.delivery_date,
        attempt: p.attempt,
        route_id: p.route_id,
        wrong_tries: p.wrong_tries,
        locked: p.locked,
        events: p
            .events
            .into_iter()
            .map(|e| ParcelEvent {
                at: e.at,
                kind: e.kind.to_string(),
                detail: e.detail,
            })
            .collect(),
        track_url,
    }
}

/// A parcel's status, day, attempt and history (never its code).
#[utoipa::path(get, path = "/v1/parcels/{id}", tag = "dispatch", security(("bearer" = [])),
    params(("id" = String, Path, description = "parcel id")),
    responses((status = 200, body = ParcelDetail), (status = 404, body = ErrorBody)))]
pub(super) async fn get_parcel(
    State(app): State<App>,
    _d: Dispatch,
    PathArg(id): PathArg<String>,
) -> Result<Json<ParcelDetail>, ApiError> {
    Ok(Json(parcel_detail(&app, &id).await?))
}

async fn parcel_detail(app: &App, id: &str) -> Result<ParcelDetail, ApiError> {
    let parcel = app
        .storage
        .parcel(id)
        .await?
        .ok_or(ServiceError::UnknownParcel)?;
    let url = match app.storage.parcel_contact(id).await? {
        Some(c) => app.notifier.parcel_track_url(&c),
        None => app.notifier.track_url(""),
    };
    Ok(parcel_detail_of(parcel, url))
}

/// Create or replace a courier's route for a day: codes, notices, manifests.
#[utoipa::path(post, path = "/v1/routes", tag = "dispatch", security(("bearer" = [])), request_body = RouteIn,
    responses((status = 200, body = RouteOut), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn post_route(
    State(app): State<App>,
    _d: Dispatch,
    Body(r): Body<RouteIn>,
) -> Result<Json<RouteOut>, ApiError> {
    let bad = |m: String| ApiError::unprocessable("invalid_route", m);
    check_id(&r.route_id, "route_id").map_err(bad)?;
    check_id(&r.courier_id, "courier_id").map_err(bad)?;
    let today = app.policy().today(app.cfg.now());
    crate::domain::route::check_date(r.delivery_date, today).map_err(bad)?;
    if r.stops.len() > doorcode_core::manifest::MAX_STOPS {
        return Err(bad("too many stops".into()));
    }
    let mut stops = HashSet::new();
    let mut parcels = HashSet::new();
    for s in &r.stops {
        check_id(&s.stop_id, "stop_id").map_err(bad)?;
        check_text(&s.address, "address").map_err(bad)?;
        if let Some(n) = &s.recipient {
            check_text(n, "recipient").map_err(bad)?;
        }
        if !stops.insert(s.stop_id.as_str()) {
            return Err(bad(format!("stop {} appears twice", s.stop_id)));
        }
        if s.parcel_ids.is_empty() {
            return Err(bad(format!("stop {} has no parcels", s.stop_id)));
        }
        for p in &s.parcel_ids {
            check_id(p, "parcel_id").map_err(bad)?;
            if !parcels.insert(p.as_str()) {
                return Err(bad(format!("parcel {p} appears twice")));
            }
        }
    }
    if parcels.len() > doorcode_core::manifest::MAX_PARCELS {
        return Err(bad("too many parcels".into()));
    }
    let input = RouteInput {
        route_id: r.route_id,
        courier_id: r.courier_id,
        delivery_date: r.delivery_date,
        stops: r
            .stops
            .into_iter()
            .map(|s| RouteStopInput {
                stop_id: s.stop_id,
                address: s.address,
                recipient: s.recipient,
                parcel_ids: s.parcel_ids,
            })
            .collect(),
    };
    let (saved, built) = app.save_route(input).await?;
    Ok(Json(RouteOut {
        route_id: saved.route_id,
        delivery_date: saved.delivery_date,
        status: saved.status.into(),
        revision: saved.revision,
        notices_queued: saved.notices_queued,
        manifests_built: built,
    }))
}

/// A one-time enrollment code for a courier's new handset.
#[utoipa::path(post, path = "/v1/enrollments", tag = "dispatch", security(("bearer" = [])), request_body = EnrollmentIn,
    responses((status = 200, body = EnrollmentOut), (status = 422, body = ErrorBody)))]
pub(super) async fn post_enrollment(
    State(app): State<App>,
    _d: Dispatch,
    Body(e): Body<EnrollmentIn>,
) -> Result<Json<EnrollmentOut>, ApiError> {
    let e = app.enroll(&e.courier_id).await?;
    Ok(Json(EnrollmentOut {
        enrollment_code: e.code,
        courier_id: e.courier_id,
        expires_at: e.expires_at,
    }))
}

/// Void the current code, issue the next attempt (a new code and tracking
/// link; the old link stops working) and notify the customer. The body may be
/// left out.
#[utoipa::path(post, path = "/v1/parcels/{id}/reissue", tag = "dispatch", security(("bearer" = [])),
    params(("id" = String, Path, description = "parcel id")), request_body = Option<ReissueIn>,
    responses((status = 200, body = ParcelDetail), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn post_reissue(
    State(app): State<App>,
    _d: Dispatch,
    PathArg(id): PathArg<String>,
    OptionalBody(body): OptionalBody<ReissueIn>,
) -> Result<Json<ParcelDetail>, ApiError> {
    app.reissue(&id, body.requires_code).await?;
    tracing::info!(parcel_id = %id, "code reissued");
    Ok(Json(parcel_detail(&app, &id).await?))
}

/// End a day: undelivered parcels move to the next working day with a new code.
#[utoipa::path(post, path = "/v1/days/{date}/close", tag = "dispatch", security(("bearer" = [])),
    params(("date" = String, Path, description = "YYYY-MM-DD")),
    responses((status = 200, body = CloseOut), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn post_close_day(
    State(app): State<App>,
    _d: Dispatch,
    PathArg(date): PathArg<String>,
) -> Result<Json<CloseOut>, ApiError> {
    let date = parse_date(&date)?;
    let c = app.close_day(date).await?;
    Ok(Json(CloseOut {
        date: c.date,
        next_date: c.next_date,
        parcel_ids: c.moved.parcel_ids,
        routes: c.moved.routes,
    }))
}

/// A day's disputes and other fraud signals, oldest first, page by page.
#[utoipa::path(get, path = "/v1/disputes", tag = "dispatch", security(("bearer" = [])),
    params(("date" = Option<String>, Query, description = "YYYY-MM-DD, default today"),
        ("limit" = Option<u32>, Query, description = "signals per page, 1..=1000, default 100"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")),
    responses((status = 200, body = DisputesOut), (status = 400, body = ErrorBody)))]
pub(super) async fn get_disputes(
    State(app): State<App>,
    _d: Dispatch,
    RawQuery(q): RawQuery,
) -> Result<Json<DisputesOut>, ApiError> {
    let bad = |m: String| ApiError::bad_request("bad_query", m);
    let (mut date, mut limit, mut after) = (None, disputes::DEFAULT_LIMIT, Cursor::default());
    for pair in query_pairs(q.as_deref()) {
        match pair {
            ("date", v) => date = Some(parse_date(v)?),
            ("limit", v) => {
                let n = v
                    .parse::<u32>()
                    .map_err(|_| bad(format!("limit must be 1..={}", disputes::MAX_LIMIT)))?;
                limit = disputes::check_limit(n).map_err(bad)?;
            }
            ("cursor", v) => after = Cursor::parse(v).map_err(bad)?,
            _ => {
                return Err(bad(
                    "only ?date=YYYY-MM-DD&limit=N&cursor=C are understood".into()
                ));
            }
        }
    }
    let date = date.unwrap_or_else(|| app.policy().today(app.cfg.now()));
    let (page, next) = app.signals_page(date, after, limit).await?;
    let (disputes, signals): (Vec<_>, Vec<_>) = page.into_iter().partition(|s| s.kind.is_dispute());
    Ok(Json(DisputesOut {
        date,
        disputes: disputes.into_iter().map(signal_out).collect(),
        signals: signals.into_iter().map(signal_out).collect(),
        next_cursor: next.map(Cursor::encode),
    }))
}

/// A dispute or fraud signal, as dispatch reads it.
fn signal_out(s: Signal) -> wire::Signal {
    wire::Signal {
        id: s.id,
        kind: s.kind.into(),
        parcel_id: s.parcel_id,
        device_id: s.device_id,
        confirmation_id: s.confirmation_id,
        day: s.day,
        detail: s.detail,
        code_matched: s.code_matched,
        at: s.at,
    }
}

/// The dispatcher's endpoints (the dispatch token).
pub fn router() -> Router<App> {
    Router::new()
        .route("/v1/parcels", post(post_parcels))
        .route("/v1/parcels/{id}", get(get_parcel))
        .route("/v1/parcels/{id}/reissue", post(post_reissue))
        .route("/v1/routes", post(post_route))
        .route("/v1/enrollments", post(post_enrollment))
        .route("/v1/days/{date}/close", post(post_close_day))
        .route("/v1/disputes", get(get_disputes))
}
