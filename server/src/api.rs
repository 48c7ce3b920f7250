//! HTTP API: routes, auth extractors, handlers and the OpenAPI document.

mod lifecycle;

use crate::app::{App, ItemResult};
use crate::domain::disputes::{self, Cursor};
use crate::domain::{At, ItemStatus, Label, ParcelState, RejectReason};
use crate::error::{ApiError, Body, ErrorBody, OptionalBody, PathArg};
use crate::keys::{new_token, random_bytes, token_hash};
use crate::storage::{
    Closed, Device, Moved, NewDevice, NewEnrollment, NewParcel, ParcelView, RouteInput, RouteSaved,
    RouteStopInput, Signal, StorageError, UpsertStatus, VerifyOutcome,
};
use axum::extract::{DefaultBodyLimit, FromRequestParts, MatchedPath, RawQuery, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use chrono::{DateTime, NaiveDate, Utc};
use doorcode_core::codes::{Code, ct_eq};
use doorcode_core::envelope::VerifyingKey;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::time::Instant;
use utoipa::{OpenApi, ToSchema};

const MAX_BATCH: usize = 10_000;
const MAX_CONFIRMATIONS: usize = 1_000;
const ENROLLMENT_MINUTES: i64 = 15;
/// Days after the end of its delivery day that a track link keeps working.
pub const TRACK_LINK_DAYS: i64 = 30;

// ---------- auth ----------

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let v = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer token"))?;
    v.strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= 200)
        .ok_or_else(|| ApiError::unauthorized("expected Authorization: Bearer <token>"))
}

/// A request made with the dispatch (admin) token.
pub struct Dispatch;

impl FromRequestParts<App> for Dispatch {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, ApiError> {
        let h = token_hash(bearer(parts)?);
        if ct_eq(h.as_bytes(), app.admin_hash.as_bytes()) {
            Ok(Dispatch)
        } else {
            Err(ApiError::unauthorized("not a dispatch token"))
        }
    }
}

/// A request made with an enrolled, unrevoked device's token.
pub struct DeviceAuth(pub Device);

impl FromRequestParts<App> for DeviceAuth {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, ApiError> {
        let h = token_hash(bearer(parts)?);
        let Some(d) = app.storage.device_by_token(&h).await? else {
            return Err(ApiError::unauthorized("not a device token"));
        };
        if d.revoked_at.is_some() {
            return Err(ApiError::unauthorized("this device was revoked"));
        }
        let now = app.cfg.now();
        if crate::domain::devices::needs_seen(&d, now) {
            app.storage.device_seen(&d.device_id, now).await?;
        }
        Ok(DeviceAuth(d))
    }
}

// ---------- validation helpers ----------

// The input rules themselves live in `validate` (DESIGN "Input the server refuses").
use crate::validate::{id as check_id, text as check_text};

/// A raw query's `key=value` pairs (a pair without `=` has an empty key).
fn query_pairs(q: Option<&str>) -> impl Iterator<Item = (&str, &str)> {
    q.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or(("", p)))
}

fn parse_date(s: &str) -> Result<NaiveDate, ApiError> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .filter(|_| s.len() == 10)
        .ok_or_else(|| ApiError::bad_request("bad_date", "dates are YYYY-MM-DD"))
}

// ---------- dispatch ----------

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Recipient {
    pub name: String,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub phone: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ParcelIn {
    pub parcel_id: String,
    pub recipient: Recipient,
    pub address: String,
    pub value: f64,
    pub currency: String,
    /// Overrides the value threshold when present.
    #[serde(default)]
    pub requires_code: Option<bool>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ParcelBatch {
    pub parcels: Vec<ParcelIn>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ParcelResult {
    pub parcel_id: String,
    /// created | updated | rejected
    pub status: String,
    /// For a rejected item refused by a rule, e.g. `requires_code_frozen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<RejectReason>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requires_code: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub track_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ParcelResults {
    pub results: Vec<ParcelResult>,
}

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
async fn post_parcels(
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
    let mut results: Vec<ParcelResult> = Vec::with_capacity(batch.parcels.len());
    let mut good = Vec::new();
    let mut seen = HashSet::new();
    for p in batch.parcels {
        let mut check = validate_parcel(&p);
        if check.is_ok() && !seen.insert(p.parcel_id.clone()) {
            check = Err("parcel_id appears twice in this batch".into());
        }
        match check {
            Err(m) => results.push(ParcelResult {
                parcel_id: p.parcel_id,
                status: "rejected".into(),
                reason: None,
                requires_code: None,
                track_url: None,
                message: Some(m),
            }),
            Ok(()) => {
                let requires_code = app.cfg.policy.requires_code(p.requires_code, p.value);
                results.push(ParcelResult {
                    parcel_id: p.parcel_id.clone(),
                    status: String::new(),
                    reason: None,
                    requires_code: Some(requires_code),
                    track_url: None,
                    message: None,
                });
                good.push(NewParcel {
                    parcel_id: p.parcel_id,
                    recipient_name: p.recipient.name,
                    email: p.recipient.email,
                    phone: p.recipient.phone,
                    address: p.address,
                    value: p.value,
                    currency: p.currency,
                    requires_code,
                    track_token: new_token().map_err(ApiError::internal)?,
                });
            }
        }
    }
    let statuses = app.storage.upsert_parcels(good, app.cfg.now()).await?;
    let mut it = statuses.into_iter();
    for r in results.iter_mut().filter(|r| r.status.is_empty()) {
        r.status = match it.next() {
            Some(UpsertStatus::Created) => "created".into(),
            Some(UpsertStatus::Updated) => "updated".into(),
            Some(UpsertStatus::Rejected(reason)) => {
                r.reason = Some(reason);
                r.requires_code = None;
                r.message = Some(
                    "requires_code is fixed while the parcel is on a route for a day; \
                     reissue it with {\"requires_code\": …} to change it from its next attempt"
                        .into(),
                );
                "rejected".into()
            }
            None => return Err(ApiError::internal("upsert result count mismatch")),
        };
        if r.reason.is_some() {
            continue;
        }
        if let Some(c) = app.storage.parcel_contact(&r.parcel_id).await? {
            r.track_url = Some(crate::notices::track_url(&app.public_url, &c.track_token));
        }
    }
    Ok(Json(ParcelResults { results }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ParcelDetail {
    #[serde(flatten)]
    pub parcel: ParcelView,
    pub track_url: String,
}

/// A parcel's status, day, attempt and history (never its code).
#[utoipa::path(get, path = "/v1/parcels/{id}", tag = "dispatch", security(("bearer" = [])),
    params(("id" = String, Path, description = "parcel id")),
    responses((status = 200, body = ParcelDetail), (status = 404, body = ErrorBody)))]
async fn get_parcel(
    State(app): State<App>,
    _d: Dispatch,
    PathArg(id): PathArg<String>,
) -> Result<Json<ParcelDetail>, ApiError> {
    let parcel = app
        .storage
        .parcel(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("unknown_parcel", "no such parcel"))?;
    let token = app
        .storage
        .parcel_contact(&id)
        .await?
        .map(|c| c.track_token)
        .unwrap_or_default();
    Ok(Json(ParcelDetail {
        parcel,
        track_url: crate::notices::track_url(&app.public_url, &token),
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StopIn {
    pub stop_id: String,
    pub address: String,
    /// Display name on the handset; defaults to the first parcel's recipient.
    #[serde(default)]
    pub recipient: Option<String>,
    pub parcel_ids: Vec<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteIn {
    pub route_id: String,
    pub courier_id: String,
    pub delivery_date: NaiveDate,
    pub stops: Vec<StopIn>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RouteOut {
    #[serde(flatten)]
    pub route: RouteSaved,
    pub manifests_built: u32,
}

/// Create or replace a courier's route for a day: codes, notices, manifests.
#[utoipa::path(post, path = "/v1/routes", tag = "dispatch", security(("bearer" = [])), request_body = RouteIn,
    responses((status = 200, body = RouteOut), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn post_route(
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
    let policy = app.policy();
    let at = At {
        now: app.cfg.now(),
        policy: &policy,
    };
    let saved = app.storage.save_route(input, at).await?;
    app.notice_wake.notify_one();
    let built = app
        .rebuild_routes(&[(saved.route_id.clone(), saved.delivery_date)])
        .await?;
    tracing::info!(route_id = %saved.route_id, date = %saved.delivery_date, revision = saved.revision, notices = saved.notices_queued, "route saved");
    Ok(Json(RouteOut {
        route: saved,
        manifests_built: built,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentIn {
    pub courier_id: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EnrollmentOut {
    /// One-time, valid 15 minutes. Give it to the courier for `POST /v1/devices`.
    pub enrollment_code: String,
    pub courier_id: String,
    pub expires_at: DateTime<Utc>,
}

/// Enrollment codes as typed: case, dashes and spaces do not matter, and the
/// Crockford look-alikes O, I and L read as 0, 1 and 1.
fn normalize_enrollment(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| match c.to_ascii_uppercase() {
            'O' => '0',
            'I' | 'L' => '1',
            c => c,
        })
        .take(64)
        .collect()
}

/// A one-time enrollment code for a courier's new handset.
#[utoipa::path(post, path = "/v1/enrollments", tag = "dispatch", security(("bearer" = [])), request_body = EnrollmentIn,
    responses((status = 200, body = EnrollmentOut), (status = 422, body = ErrorBody)))]
pub(crate) async fn post_enrollment(
    State(app): State<App>,
    _d: Dispatch,
    Body(e): Body<EnrollmentIn>,
) -> Result<Json<EnrollmentOut>, ApiError> {
    check_id(&e.courier_id, "courier_id")
        .map_err(|m| ApiError::unprocessable("invalid_enrollment", m))?;
    // 60 bits in Crockford base32, grouped for typing on a phone.
    const ALPHA: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let bytes = random_bytes::<12>().map_err(ApiError::internal)?;
    let mut code = String::new();
    for (i, b) in bytes.iter().enumerate() {
        if i == 4 || i == 8 {
            code.push('-');
        }
        code.push(char::from(ALPHA[usize::from(b & 31)]));
    }
    let now = app.cfg.now();
    let expires_at = now + chrono::Duration::minutes(ENROLLMENT_MINUTES);
    app.storage
        .create_enrollment(NewEnrollment {
            code_hash: token_hash(&normalize_enrollment(&code)),
            courier_id: e.courier_id.clone(),
            expires_at,
            created_at: now,
        })
        .await?;
    Ok(Json(EnrollmentOut {
        enrollment_code: code,
        courier_id: e.courier_id,
        expires_at,
    }))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReissueIn {
    /// A new code policy from the next attempt; absent keeps the parcel's.
    #[serde(default)]
    pub requires_code: Option<bool>,
}

/// Void the current code, issue the next attempt (a new code and tracking
/// link; the old link stops working) and notify the customer. The body may be
/// left out.
#[utoipa::path(post, path = "/v1/parcels/{id}/reissue", tag = "dispatch", security(("bearer" = [])),
    params(("id" = String, Path, description = "parcel id")), request_body = Option<ReissueIn>,
    responses((status = 200, body = ParcelDetail), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn post_reissue(
    State(app): State<App>,
    d: Dispatch,
    PathArg(id): PathArg<String>,
    OptionalBody(body): OptionalBody<ReissueIn>,
) -> Result<Json<ParcelDetail>, ApiError> {
    app.reissue(&id, body.requires_code).await?;
    tracing::info!(parcel_id = %id, "code reissued");
    get_parcel(State(app), d, PathArg(id)).await
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CloseOut {
    pub date: NaiveDate,
    pub next_date: NaiveDate,
    #[serde(flatten)]
    pub moved: Moved,
}

/// End a day: undelivered parcels move to the next working day with a new code.
#[utoipa::path(post, path = "/v1/days/{date}/close", tag = "dispatch", security(("bearer" = [])),
    params(("date" = String, Path, description = "YYYY-MM-DD")),
    responses((status = 200, body = CloseOut), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn post_close_day(
    State(app): State<App>,
    _d: Dispatch,
    PathArg(date): PathArg<String>,
) -> Result<Json<CloseOut>, ApiError> {
    let date = parse_date(&date)?;
    let policy = app.policy();
    let at = At {
        now: app.cfg.now(),
        policy: &policy,
    };
    let Closed { next_date, moved } =
        app.storage.close_day(date, at).await.map_err(|e| match e {
            StorageError::Invalid(m) => ApiError::unprocessable("no_working_day", m),
            e => e.into(),
        })?;
    app.notice_wake.notify_one();
    app.rebuild_routes(&moved.routes).await?;
    tracing::info!(%date, %next_date, moved = moved.parcel_ids.len(), "day closed");
    Ok(Json(CloseOut {
        date,
        next_date,
        moved,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DisputesOut {
    /// The delivery day these are about.
    pub date: NaiveDate,
    /// Deliveries whose code failed the full check (or had none).
    pub disputes: Vec<Signal>,
    /// Other fraud signals: many wrong tries, tries mismatches, late and stale
    /// confirmations, seq gaps or reuse, lockouts.
    pub signals: Vec<Signal>,
    /// `cursor` for the next page; absent on the day's last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A day's disputes and other fraud signals, oldest first, page by page.
#[utoipa::path(get, path = "/v1/disputes", tag = "dispatch", security(("bearer" = [])),
    params(("date" = Option<String>, Query, description = "YYYY-MM-DD, default today"),
        ("limit" = Option<u32>, Query, description = "signals per page, 1..=1000, default 100"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")),
    responses((status = 200, body = DisputesOut), (status = 400, body = ErrorBody)))]
async fn get_disputes(
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
    let (disputes, signals) = page.into_iter().partition(|s| s.kind.is_dispute());
    Ok(Json(DisputesOut {
        date,
        disputes,
        signals,
        next_cursor: next.map(Cursor::encode),
    }))
}

// ---------- device ----------

#[derive(Debug, Serialize, ToSchema)]
pub struct PublicKey {
    pub kid: String,
    pub alg: String,
    pub public_key: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Keys {
    pub keys: Vec<PublicKey>,
}

fn server_keys(app: &App) -> Vec<PublicKey> {
    app.signer
        .published
        .iter()
        .map(|k| PublicKey {
            kid: k.kid.clone(),
            alg: "Ed25519".into(),
            public_key: k.public_b64(),
        })
        .collect()
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceIn {
    pub enrollment_code: String,
    /// base64url Ed25519 public key (32 bytes) the device signs confirmations with.
    pub device_public_key: String,
    pub device_name: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceOut {
    pub device_id: String,
    /// Bearer token for device calls; shown once, stored hashed.
    pub device_token: String,
    pub courier_id: String,
    pub server_keys: Vec<PublicKey>,
}

/// Enroll a handset with a one-time enrollment code. After 10 failed codes
/// from one client address within a minute it answers 429 without looking
/// at the code (one more try every 6 s).
#[utoipa::path(post, path = "/v1/devices", tag = "device", request_body = DeviceIn,
    responses((status = 200, body = DeviceOut), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 429, body = ErrorBody, description = "too many failed enrollments from this address")))]
async fn post_device(
    State(app): State<App>,
    Extension(web): Extension<std::sync::Arc<crate::web::WebState>>,
    ext: axum::http::Extensions,
    Body(d): Body<DeviceIn>,
) -> Result<Response, ApiError> {
    check_text(&d.device_name, "device_name")
        .map_err(|m| ApiError::unprocessable("invalid_device", m))?;
    VerifyingKey::from_b64("probe", &d.device_public_key).map_err(|e| match e {
        doorcode_core::envelope::EnvelopeError::WeakKey => ApiError::unprocessable(
            "weak_public_key",
            "device_public_key is not a valid Ed25519 public key (an invalid or small-order point); \
             generate a new key pair",
        ),
        _ => ApiError::unprocessable(
            "bad_public_key",
            "device_public_key must be 32 bytes of base64url without padding",
        ),
    })?;
    // A token is taken before the code is looked at, so concurrent guesses
    // cannot overrun the limit; a successful enrollment gives it back.
    let client = crate::web::client_ip(&ext);
    if !web.enroll_limit.allow(&client) {
        let wait = web.enroll_limit.retry_after(&client).as_secs().max(1);
        let mut r = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many failed enrollments from this address; wait a minute and check the code",
        )
        .into_response();
        if let Ok(v) = HeaderValue::from_str(&wait.to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return Ok(r);
    }
    let code = normalize_enrollment(&d.enrollment_code);
    let device_id = format!("d-{}", uuid::Uuid::new_v4());
    let token = new_token().map_err(ApiError::internal)?;
    let new = NewDevice {
        enrollment: token_hash(&code),
        device_id,
        name: d.device_name,
        public_key: d.device_public_key,
        token_hash: token_hash(&token),
    };
    let enrolled = app.storage.enroll_device(new, app.cfg.now()).await;
    let dev = match enrolled {
        Ok(Some(dev)) => {
            web.enroll_limit.refund(&client);
            dev
        }
        Ok(None) => {
            app.metrics.enrollment_failed();
            return Err(ApiError::forbidden(
                "invalid_enrollment_code",
                "the enrollment code is unknown, used or expired",
            ));
        }
        Err(e) => {
            web.enroll_limit.refund(&client);
            return Err(e.into());
        }
    };
    tracing::info!(device_id = %dev.device_id, courier_id = %dev.courier_id, "device enrolled");
    Ok(Json(DeviceOut {
        device_id: dev.device_id,
        device_token: token,
        courier_id: dev.courier_id,
        server_keys: server_keys(&app),
    })
    .into_response())
}

/// The device's signed manifest for a day (default: today in the depot's zone).
#[utoipa::path(get, path = "/v1/manifest", tag = "device", security(("bearer" = [])),
    params(("date" = Option<String>, Query, description = "YYYY-MM-DD")),
    responses((status = 200, description = "the signed envelope {v, kid, body, sig}"), (status = 304, description = "not modified"), (status = 404, body = ErrorBody)))]
async fn get_manifest(
    State(app): State<App>,
    DeviceAuth(device): DeviceAuth,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let mut date = None;
    for pair in query_pairs(q.as_deref()) {
        match pair {
            ("date", v) => date = Some(parse_date(v)?),
            _ => {
                return Err(ApiError::bad_request(
                    "bad_query",
                    "only ?date=YYYY-MM-DD is understood",
                ));
            }
        }
    }
    let date = date.unwrap_or_else(|| {
        app.cfg
            .now()
            .with_timezone(&app.cfg.calendar.time_zone)
            .date_naive()
    });
    // Most fetches (and every 304) find a current build: one read, no route load.
    let current = app.storage.current_manifest(&device, date).await?;
    let m = match current {
        Some(m) => m,
        None => {
            let route = app
                .storage
                .route_for_courier(&device.courier_id, date)
                .await?
                .ok_or_else(|| {
                    ApiError::not_found(
                        "no_manifest",
                        format!("no route for this courier on {date}"),
                    )
                })?;
            app.ensure_manifest(&route, &device).await?
        }
    };
    let etag = format!("\"{}:{}\"", m.manifest_id, m.revision);
    let etag_value = HeaderValue::from_str(&etag).map_err(ApiError::internal)?;
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let cache = (
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    if matches {
        return Ok((
            StatusCode::NOT_MODIFIED,
            [(header::ETAG, etag_value), cache],
        )
            .into_response());
    }
    Ok((
        StatusCode::OK,
        [
            (header::ETAG, etag_value),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            cache,
        ],
        m.envelope_json,
    )
        .into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmationBatch {
    /// Signed confirmation envelopes `{v, kid, body, sig}`. Any JSON value is
    /// taken: an item that is not an envelope is rejected on its own
    /// (`malformed_envelope`), so one bad item never blocks the others.
    #[schema(value_type = Vec<Value>)]
    pub confirmations: Vec<serde_json::Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConfirmationResults {
    pub results: Vec<ItemResult>,
}

/// Upload signed confirmations; per-item results, idempotent by confirmation_id.
#[utoipa::path(post, path = "/v1/confirmations", tag = "device", security(("bearer" = [])), request_body = ConfirmationBatch,
    responses((status = 200, body = ConfirmationResults), (status = 400, body = ErrorBody), (status = 413, body = ErrorBody)))]
async fn post_confirmations(
    State(app): State<App>,
    DeviceAuth(device): DeviceAuth,
    Body(b): Body<ConfirmationBatch>,
) -> Result<Json<ConfirmationResults>, ApiError> {
    if b.confirmations.len() > MAX_CONFIRMATIONS {
        return Err(ApiError::unprocessable(
            "batch_too_large",
            format!("at most {MAX_CONFIRMATIONS} confirmations per request"),
        ));
    }
    let results = app.ingest_batch(&device, b.confirmations).await;
    for r in &results {
        app.metrics.confirmation(r.status.as_str());
        if r.disputed {
            app.metrics.confirmation("disputed");
        }
    }
    let accepted = results
        .iter()
        .filter(|r| r.status == ItemStatus::Accepted)
        .count();
    tracing::info!(device_id = %device.device_id, items = results.len(), accepted, "confirmations ingested");
    Ok(Json(ConfirmationResults { results }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyIn {
    pub parcel_id: String,
    /// The digits the customer gave, as a string.
    pub code: String,
}

impl std::fmt::Debug for VerifyIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VerifyIn({}, <code>)", self.parcel_id)
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VerifyOut {
    /// accepted | rejected | locked
    pub result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts_left: Option<u32>,
}

/// From the door, the courier asks for the customer's notice again (the code
/// never arrived). Only for a parcel on this device's courier's current
/// route, within its day; one per parcel per 10 minutes, shared with the
/// customer's "send the notice again" on the tracking page.
#[utoipa::path(post, path = "/v1/parcels/{id}/resend", tag = "device", security(("bearer" = [])),
    params(("id" = String, Path, description = "parcel id")),
    responses((status = 202, description = "the notice is sent again (same code)"),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 429, body = ErrorBody, description = "sent recently; Retry-After says when to ask again"),
        (status = 503, body = ErrorBody)))]
async fn post_device_resend(
    State(app): State<App>,
    Extension(web): Extension<std::sync::Arc<crate::web::WebState>>,
    DeviceAuth(device): DeviceAuth,
    PathArg(id): PathArg<String>,
) -> Result<Response, ApiError> {
    check_id(&id, "parcel id").map_err(|m| ApiError::unprocessable("invalid_path", m))?;
    let date = app.resend_day(&device, &id).await?;
    if let Some(wait) = crate::web::track::resend_wait(&web, &id) {
        let secs = wait.as_secs().max(1);
        let mut r = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "resend_too_soon",
            format!("the notice for {id} was sent recently; ask again in {secs} s"),
        )
        .into_response();
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return Ok(r);
    }
    match crate::web::track::resend_notice(&app, &id, date).await {
        Ok(()) => {
            tracing::info!(device_id = %device.device_id, parcel_id = %id, "notice resent at the courier's request");
            Ok(StatusCode::ACCEPTED.into_response())
        }
        Err(e) => {
            tracing::warn!(parcel_id = %id, error = %e, "courier's resend failed");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "notice_failed",
                "the notice could not be sent just now; try again in a minute",
            ))
        }
    }
}

/// Online code check at the door; counts tries and locks at max_attempts.
#[utoipa::path(post, path = "/v1/verify", tag = "device", security(("bearer" = [])), request_body = VerifyIn,
    responses((status = 200, body = VerifyOut), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn post_verify(
    State(app): State<App>,
    DeviceAuth(device): DeviceAuth,
    Body(v): Body<VerifyIn>,
) -> Result<Json<VerifyOut>, ApiError> {
    check_id(&v.parcel_id, "parcel_id").map_err(|m| ApiError::unprocessable("invalid_body", m))?;
    let code = Code::new(v.code)
        .ok()
        .filter(|c| c.len() == usize::from(app.cfg.code_digits))
        .ok_or_else(|| {
            ApiError::unprocessable(
                "bad_code_format",
                format!(
                    "a code is {} digits; this did not count as a try",
                    app.cfg.code_digits
                ),
            )
        })?;
    let out = app.verify(&device, &v.parcel_id, &code).await?;
    let (result, left) = match out {
        VerifyOutcome::Accepted => ("accepted", None),
        VerifyOutcome::Rejected { attempts_left } => ("rejected", Some(attempts_left)),
        VerifyOutcome::Locked | VerifyOutcome::Stale => ("locked", Some(0)),
    };
    app.metrics.verify(result);
    tracing::info!(device_id = %device.device_id, parcel_id = %v.parcel_id, result, "online verify");
    Ok(Json(VerifyOut {
        result,
        attempts_left: left,
    }))
}

// ---------- customer ----------

#[derive(Debug, Serialize, ToSchema)]
pub struct TrackView {
    pub parcel_id: String,
    pub status: ParcelState,
    pub delivery_date: Option<NaiveDate>,
    /// The code, only while it is valid and the parcel is still out for delivery.
    pub code: Option<String>,
    pub valid_from: Option<DateTime<Utc>>,
    pub valid_until: Option<DateTime<Utc>>,
    pub safety: Vec<String>,
}

pub(crate) async fn track_view(app: &App, token: &str) -> Result<TrackView, ApiError> {
    let unknown = || ApiError::not_found("unknown_token", "no parcel has this tracking link");
    if token.is_empty() || token.len() > 100 {
        return Err(unknown());
    }
    let p = app
        .storage
        .parcel_by_track_token(token)
        .await?
        .ok_or_else(unknown)?;
    let window = p.delivery_date.map(|d| app.cfg.calendar.window(d));
    let now = app.cfg.now();
    // A link expires TRACK_LINK_DAYS after its delivery day and then looks
    // exactly like an unknown one.
    if window.is_some_and(|(_, until)| now >= until + chrono::Duration::days(TRACK_LINK_DAYS)) {
        return Err(unknown());
    }
    let visible = crate::domain::code_visible(
        p.requires_code,
        p.status,
        p.attempt,
        p.delivery_date,
        &app.policy(),
        now,
    );
    let code = match p.delivery_date {
        Some(d) if visible => Some(app.code(&p.parcel_id, d, p.attempt)?.expose().to_string()),
        _ => None,
    };
    let day = p
        .delivery_date
        .map(|d| d.to_string())
        .unwrap_or_else(|| "the delivery day".into());
    let safety = vec![
        format!("This code is for handing over parcel {} only.", p.parcel_id),
        "Share it only in person with the courier at your door. Never give it out by phone, text message or a link; we will never ask you for it.".into(),
        format!("It is valid on {day} only. If the delivery moves, you get a new code."),
        "If you did not order anything, do not share the code; ignore the delivery and tell the sender.".into(),
    ];
    Ok(TrackView {
        parcel_id: p.parcel_id,
        status: p.status,
        delivery_date: p.delivery_date,
        code,
        valid_from: window.map(|w| w.0),
        valid_until: window.map(|w| w.1),
        safety,
    })
}

fn no_store() -> [(header::HeaderName, HeaderValue); 2] {
    [
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
    ]
}

/// Tracking as JSON.
#[utoipa::path(get, path = "/v1/track/{token}", tag = "customer",
    params(("token" = String, Path, description = "track token from the notice")),
    responses((status = 200, body = TrackView), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn get_track_json(
    State(app): State<App>,
    PathArg(token): PathArg<String>,
) -> Result<Response, ApiError> {
    Ok((no_store(), Json(track_view(&app, &token).await?)).into_response())
}

// ---------- anyone / ops ----------

/// The server's manifest signing keys, current and retired.
#[utoipa::path(get, path = "/.well-known/doorcode-keys", tag = "ops", responses((status = 200, body = Keys)))]
async fn get_keys(State(app): State<App>) -> Json<Keys> {
    Json(Keys {
        keys: server_keys(&app),
    })
}

/// Liveness.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, description = "ok")))]
async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// Prometheus metrics. On the public listener it needs the dispatch token;
/// `--metrics-listen` serves the same text without one.
#[utoipa::path(get, path = "/metrics", tag = "ops", security(("bearer" = [])),
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain"),
        (status = 401, body = ErrorBody, description = "missing or wrong dispatch token")))]
async fn metrics(State(app): State<App>, _d: Dispatch) -> Response {
    metrics_text(&app).await
}

/// The metrics exposition, with the outbox gauges read from storage.
async fn metrics_text(app: &App) -> Response {
    let mut text = app.metrics.render();
    if let Ok((pending, sent, failed)) = app.storage.notice_counts().await {
        text.push_str(&format!(
            "# HELP doorcode_notice_outbox Notices in the outbox by state.\n# TYPE doorcode_notice_outbox gauge\n\
             doorcode_notice_outbox{{state=\"pending\"}} {pending}\ndoorcode_notice_outbox{{state=\"sent\"}} {sent}\n\
             doorcode_notice_outbox{{state=\"failed\"}} {failed}\n"
        ));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// The router of `--metrics-listen`: `/metrics` without a token, nothing else.
/// Bind it only where the scraper (not the public) can reach it.
pub fn metrics_router(app: App) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(app): State<App>| async move { metrics_text(&app).await }),
        )
        .fallback(not_found)
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            app.cfg.request_timeout,
        ))
        .with_state(app)
}

/// Declares the bearer scheme the dispatch and device endpoints use.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Adds the error answers every JSON operation can give but would otherwise
/// have to repeat in each `responses(...)`: 401 where a bearer token is
/// required; 400 (malformed JSON), 413 (too large), 415 (not JSON) and 422
/// (wrong types, unknown fields) where there is a JSON body; 400 where a path
/// or query parameter can be unreadable. An answer an operation declares
/// itself is kept as it is.
struct StandardErrors;

impl utoipa::Modify for StandardErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::ParameterIn;
        use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
        let error = |what: &str| {
            RefOr::T(
                ResponseBuilder::new()
                    .description(what)
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("ErrorBody")))
                            .build(),
                    )
                    .build(),
            )
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
            // The HTML pages answer with pages, not the JSON error shape.
            if !path.starts_with("/v1/") {
                continue;
            }
            for op in [&mut item.get, &mut item.post].into_iter().flatten() {
                let mut add = |status: &str, what: &str| {
                    op.responses
                        .responses
                        .entry(status.to_string())
                        .or_insert_with(|| error(what));
                };
                let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
                let has_body = op.request_body.is_some();
                let has_params = op.parameters.as_ref().is_some_and(|ps| {
                    ps.iter()
                        .any(|p| matches!(p.parameter_in, ParameterIn::Path | ParameterIn::Query))
                });
                if secured {
                    add("401", "missing or wrong bearer token");
                }
                if has_body {
                    add("400", "the body is not valid JSON");
                    add("413", "the body is too large");
                    add("415", "the body is not application/json");
                    add(
                        "422",
                        "the JSON has wrong types, missing or unknown fields, or breaks a rule",
                    );
                }
                if has_params {
                    add("400", "a path or query parameter cannot be read");
                }
            }
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    modifiers(&BearerAuth, &StandardErrors),
    info(
        title = "doorcode server",
        description = "Delivery codes, signed manifests and confirmation ingest."
    ),
    paths(
        post_parcels,
        get_parcel,
        post_route,
        post_enrollment,
        post_reissue,
        post_device_resend,
        post_close_day,
        get_disputes,
        lifecycle::post_erase,
        lifecycle::get_stats,
        post_device,
        get_manifest,
        post_confirmations,
        post_verify,
        get_track_json,
        crate::web::track::get_page,
        get_keys,
        healthz,
        metrics,
        openapi_json
    ),
    components(schemas(ErrorBody))
)]
pub struct ApiDoc;

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "ops", responses((status = 200, description = "OpenAPI 3.1 document")))]
async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// Counts and times every request by route template; logs method, template,
/// status and latency only (never the URI: track tokens live there).
async fn observe(State(app): State<App>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    // A fixed word: a request must not be able to add a label or a long log field.
    let method = crate::metrics::method_label(req.method());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let mut resp = next.run(req).await;
    if resp.status() == StatusCode::REQUEST_TIMEOUT {
        // The timeout layer answers with an empty body; keep the error shape.
        resp = ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            "the request took too long",
        )
        .into_response();
    }
    let secs = start.elapsed().as_secs_f64();
    let status = resp.status().as_u16();
    app.metrics.request(method, &route, status, secs);
    tracing::info!(%method, %route, status, ms = %format_args!("{:.1}", secs * 1000.0), "request");
    resp
}

async fn not_found() -> ApiError {
    ApiError::not_found("not_found", "no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed here",
    )
}

pub fn router(app: App, web: std::sync::Arc<crate::web::WebState>) -> Router {
    let cfg = app.cfg.clone();
    Router::new()
        .merge(crate::web::routes(web.clone()))
        .merge(lifecycle::router())
        .route("/v1/parcels", post(post_parcels))
        .route("/v1/parcels/{id}", get(get_parcel))
        .route("/v1/parcels/{id}/reissue", post(post_reissue))
        .route("/v1/parcels/{id}/resend", post(post_device_resend))
        .route("/v1/routes", post(post_route))
        .route("/v1/enrollments", post(post_enrollment))
        .route("/v1/days/{date}/close", post(post_close_day))
        .route("/v1/disputes", get(get_disputes))
        .route("/v1/devices", post(post_device))
        .route("/v1/manifest", get(get_manifest))
        .route(
            "/v1/confirmations",
            post(post_confirmations).layer(DefaultBodyLimit::max(cfg.confirmations_body_limit)),
        )
        .route("/v1/verify", post(post_verify))
        .route("/.well-known/doorcode-keys", get(get_keys))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi_json))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(cfg.body_limit))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            cfg.request_timeout,
        ))
        .layer(axum::middleware::from_fn_with_state(app.clone(), observe))
        .layer(Extension(web))
        // The client address every rate limit keys on (`--trusted-proxies`).
        .layer(axum::middleware::from_fn_with_state(
            std::sync::Arc::new(cfg.trusted_proxies.clone()),
            crate::client_addr::layer,
        ))
        .with_state(app)
}
