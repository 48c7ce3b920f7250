//! The data lifecycle's endpoints (DESIGN "Data lifecycle"): erase a
//! parcel's personal data, and per-day statistics from the anonymous
//! records. The work is in [`crate::retention`], the rules in
//! [`crate::domain::lifecycle`].

use super::{Dispatch, parse_date, query_pairs};
use crate::app::App;
use crate::domain::lifecycle::{AnonRecord, DayStats, Removed};
use crate::error::{ApiError, PathArg};
use axum::extract::{RawQuery, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::NaiveDate;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Serialize, ToSchema)]
pub struct ErasedOut {
    /// What stays of the parcel.
    pub record: AnonRecord,
    /// Rows (and notice files) removed, by table.
    pub removed: Removed,
}

/// Remove a parcel's personal data now (name, email, phone, address, its
/// notices, events, confirmations, signals, route entries and stored
/// manifests); its anonymous record stays for statistics. A parcel still
/// scheduled is refused (409) unless `force=true`, which also voids its code
/// and rebuilds its route's manifests without it.
#[utoipa::path(post, path = "/v1/parcels/{id}/erase", tag = "dispatch", security(("bearer" = [])),
    params(("id" = String, Path, description = "parcel id"),
        ("force" = Option<bool>, Query, description = "also erase a parcel still scheduled, voiding its code")),
    responses((status = 200, body = ErasedOut), (status = 400, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)))]
pub(crate) async fn post_erase(
    State(app): State<App>,
    _d: Dispatch,
    PathArg(id): PathArg<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<ErasedOut>, ApiError> {
    let mut force = false;
    for (k, v) in query_pairs(q.as_deref()) {
        match (k, v) {
            ("force", "true") => force = true,
            ("force", "false") => force = false,
            ("force", _) => {
                return Err(ApiError::bad_request("bad_force", "force is true or false"));
            }
            _ => {
                return Err(ApiError::bad_request(
                    "bad_query",
                    "unknown query parameter",
                ));
            }
        }
    }
    let erased = crate::retention::erase(&app, &id, force).await?;
    Ok(Json(ErasedOut {
        record: erased.record,
        removed: erased.removed,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StatsOut {
    pub from: NaiveDate,
    pub to: NaiveDate,
    /// One entry per day of the range, empty days included.
    pub days: Vec<DayStats>,
}

/// The range's query: both dates required, `from <= to`, at most 366 days.
pub(crate) fn stats_query(q: Option<&str>) -> Result<(NaiveDate, NaiveDate), ApiError> {
    let (mut from, mut to) = (None, None);
    for (k, v) in query_pairs(q) {
        match k {
            "from" => from = Some(parse_date(v)?),
            "to" => to = Some(parse_date(v)?),
            _ => {
                return Err(ApiError::bad_request(
                    "bad_query",
                    "unknown query parameter",
                ));
            }
        }
    }
    match (from, to) {
        (Some(f), Some(t)) => Ok((f, t)),
        _ => Err(ApiError::bad_request(
            "bad_range",
            "from and to (YYYY-MM-DD) are both required",
        )),
    }
}

/// Per-day counts over `from..=to` (both included, at most 366 days) from
/// the anonymous records: parcels, delivered, disputed, failed by reason,
/// never confirmed, signals by kind. Days whose personal data is gone still count.
#[utoipa::path(get, path = "/v1/stats", tag = "dispatch", security(("bearer" = [])),
    params(("from" = String, Query, description = "YYYY-MM-DD"), ("to" = String, Query, description = "YYYY-MM-DD")),
    responses((status = 200, body = StatsOut), (status = 400, body = crate::error::ErrorBody)))]
pub(crate) async fn get_stats(
    State(app): State<App>,
    _d: Dispatch,
    RawQuery(q): RawQuery,
) -> Result<Json<StatsOut>, ApiError> {
    let (from, to) = stats_query(q.as_deref())?;
    let days = crate::retention::stats(&app, from, to).await?;
    Ok(Json(StatsOut { from, to, days }))
}

pub(crate) fn router() -> Router<App> {
    Router::new()
        .route("/v1/parcels/{id}/erase", post(post_erase))
        .route("/v1/stats", get(get_stats))
}
