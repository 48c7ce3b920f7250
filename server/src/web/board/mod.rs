//! The dispatcher's board: admin login (the dispatch token exchanged for an
//! HttpOnly, SameSite=Strict session cookie), the day's routes with
//! per-courier progress, parcels by state with filters, disputes and fraud
//! signals, locked parcels with a reissue action, enrollment codes and
//! close-day. Every form carries the session's synchronizer CSRF token; a
//! POST without the right one gets 403. `/board/live` serves the refreshing
//! part as an HTML fragment, fetched every few seconds by `board.js`.

use super::{WebState, esc, html, page, plain, same_origin};
use crate::app::App;
use crate::domain::disputes::Cursor;
use crate::domain::limits;
use crate::domain::{Label, ParcelState};
use crate::error::ApiError;
use crate::keys::{new_token, token_hash};
use crate::storage::{ParcelView, Signal};
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Extension, Form, Query, State};
use axum::http::{Extensions, HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{NaiveDate, Utc};
use doorcode_core::codes::ct_eq;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;

pub(super) mod devices;
pub(super) mod lifecycle;
mod render;

use render::*;

const COOKIE: &str = "doorcode_board";
/// Signals per board page.
const SIGNALS_PER_PAGE: u32 = 50;

fn cookie_id(h: &HeaderMap) -> Option<String> {
    for v in h.get_all(header::COOKIE) {
        let Ok(s) = v.to_str() else { continue };
        for part in s.split(';') {
            if let Some((k, val)) = part.trim().split_once('=') {
                if k == COOKIE && !val.is_empty() && val.len() <= 100 {
                    return Some(val.to_string());
                }
            }
        }
    }
    None
}

/// The session's key (the SHA-256 of the cookie) and CSRF token, if the
/// cookie names a live session. Sessions are rows in the database, so any
/// node knows every session; a failed read shows the sign-in page.
async fn session(app: &App, h: &HeaderMap) -> Option<(String, String)> {
    let key = token_hash(&cookie_id(h)?);
    match app.storage.session_csrf(&key, Utc::now()).await {
        Ok(csrf) => csrf.map(|c| (key, c)),
        Err(e) => {
            tracing::error!(error = %e, "board session lookup");
            None
        }
    }
}

fn secure(app: &App) -> &'static str {
    if app.notifier.public_url().starts_with("https://") {
        "; Secure"
    } else {
        ""
    }
}

fn see_other(loc: &str) -> Response {
    match HeaderValue::from_str(loc) {
        Ok(v) => (StatusCode::SEE_OTHER, [(header::LOCATION, v)]).into_response(),
        Err(_) => (StatusCode::SEE_OTHER, [(header::LOCATION, "/board")]).into_response(),
    }
}

fn forbidden() -> Response {
    plain(
        StatusCode::FORBIDDEN,
        "Request refused",
        "This form was not sent from the board of your session. Reload the board and try again.",
    )
}

/// Check a POST: a live session, a same-origin request and the session's
/// CSRF token (constant-time). Returns the session key; None means 403.
async fn check_post(app: &App, h: &HeaderMap, csrf: Option<&str>) -> Option<String> {
    let (key, expected) = session(app, h).await?;
    match csrf {
        Some(c) if same_origin(h) && ct_eq(c.as_bytes(), expected.as_bytes()) => Some(key),
        _ => None,
    }
}

fn login_page(status: StatusCode, error: Option<&str>) -> Response {
    let err = error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", esc(e)))
        .unwrap_or_default();
    html(
        status,
        page(
            "Dispatch board: sign in",
            &format!(
                "<header><p class=\"brand\">doorcode <span>dispatch</span></p></header>\
<main id=\"main\" class=\"narrow\"><h1>Sign in to the board</h1>{err}\
<form method=\"post\" action=\"/board/login\" class=\"stack\">\
<label for=\"token\">Dispatch token</label>\
<input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" required>\
<button type=\"submit\">Sign in</button></form>\
<p class=\"hint\">The token was printed once when the server first started.</p></main>\
<footer><p>doorcode dispatch</p></footer>"
            ),
            false,
        ),
    )
}

#[derive(Deserialize, Default)]
pub struct BoardQuery {
    date: Option<String>,
    status: Option<String>,
    q: Option<String>,
    done: Option<String>,
    /// Where the page of signals starts (the previous page's last id).
    signals: Option<String>,
}

fn today(app: &App) -> NaiveDate {
    app.cfg
        .now()
        .with_timezone(&app.cfg.calendar.time_zone)
        .date_naive()
}

fn day_of(app: &App, q: &BoardQuery) -> NaiveDate {
    q.date
        .as_deref()
        .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
        .unwrap_or_else(|| today(app))
}

struct Day {
    parcels: Vec<ParcelView>,
    /// route id -> courier id
    couriers: BTreeMap<String, String>,
    /// This page of the day's signals, and where the next one starts.
    signals: Vec<Signal>,
    next: Option<Cursor>,
}

async fn load(app: &App, date: NaiveDate, q: &BoardQuery) -> Result<Day, ApiError> {
    let mut parcels = Vec::new();
    for id in app.storage.parcel_ids_on(date).await? {
        if let Some(p) = app.storage.parcel(&id).await? {
            parcels.push(p);
        }
    }
    let mut couriers = BTreeMap::new();
    for p in &parcels {
        if let Some(r) = &p.route_id {
            if !couriers.contains_key(r) {
                let c = app
                    .storage
                    .route(r, date)
                    .await?
                    .map(|r| r.courier_id)
                    .unwrap_or_else(|| "?".into());
                couriers.insert(r.clone(), c);
            }
        }
    }
    let after = q
        .signals
        .as_deref()
        .and_then(|c| Cursor::parse(c).ok())
        .unwrap_or_default();
    let (signals, next) = app.signals_page(date, after, SIGNALS_PER_PAGE).await?;
    Ok(Day {
        parcels,
        couriers,
        signals,
        next,
    })
}

fn oops(e: ApiError) -> Response {
    tracing::error!(error = %e.message, "board");
    plain(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Something went wrong",
        "Reload the board.",
    )
}

async fn render_board(
    app: &App,
    q: &BoardQuery,
    csrf: &str,
    notice: Option<String>,
    status: StatusCode,
) -> Response {
    let date = day_of(app, q);
    match load(app, date, q).await {
        Ok(d) => html(status, board_page(date, q, &d, csrf, notice)),
        Err(e) => oops(e),
    }
}

pub async fn get_board(
    State(app): State<App>,
    headers: HeaderMap,
    q: Result<Query<BoardQuery>, QueryRejection>,
) -> Response {
    let Some((_, csrf)) = session(&app, &headers).await else {
        return login_page(StatusCode::OK, None);
    };
    let q = q.map(|Query(q)| q).unwrap_or_default();
    let notice = match q.done.as_deref() {
        Some("reissued") => Some("Code reissued; the customer gets a new notice.".to_string()),
        Some("closed") => Some("Day closed.".to_string()),
        Some("erased") => Some("Personal data erased; the anonymous record stays.".to_string()),
        _ => None,
    };
    render_board(&app, &q, &csrf, notice, StatusCode::OK).await
}

pub async fn get_live(
    State(app): State<App>,
    headers: HeaderMap,
    q: Result<Query<BoardQuery>, QueryRejection>,
) -> Response {
    let Some((_, csrf)) = session(&app, &headers).await else {
        return plain(StatusCode::UNAUTHORIZED, "Signed out", "Sign in again.");
    };
    let q = q.map(|Query(q)| q).unwrap_or_default();
    let date = day_of(&app, &q);
    match load(&app, date, &q).await {
        Ok(d) => html(StatusCode::OK, live(date, &q, &d, &csrf)),
        Err(e) => oops(e),
    }
}

#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
}

pub async fn post_login(
    State(app): State<App>,
    Extension(web): Extension<Arc<WebState>>,
    ext: Extensions,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    if !same_origin(&headers) {
        return forbidden();
    }
    let client = super::client_ip(&ext).to_string();
    if web.limits.take(&limits::LOGIN, &client).await.is_err() {
        return login_page(
            StatusCode::TOO_MANY_REQUESTS,
            Some("Too many sign-in attempts. Wait a minute."),
        );
    }
    let ok = match &form {
        Ok(Form(f)) => {
            let t = f.token.trim();
            !t.is_empty()
                && t.len() <= 200
                && ct_eq(token_hash(t).as_bytes(), app.admin_hash.as_bytes())
        }
        Err(_) => false,
    };
    if !ok {
        tracing::warn!("board sign-in refused");
        return login_page(
            StatusCode::UNAUTHORIZED,
            Some("That is not the dispatch token."),
        );
    }
    let (Ok(id), Ok(csrf)) = (new_token(), new_token()) else {
        return oops(ApiError::internal("no randomness"));
    };
    let now = Utc::now();
    let stored = app
        .storage
        .create_session(
            limits::session(token_hash(&id), csrf, now),
            now,
            limits::SESSION_SWEEP,
        )
        .await;
    if let Err(e) = stored {
        return oops(e.into());
    }
    tracing::info!("board session started");
    let cookie = format!(
        "{COOKIE}={id}; Path=/board; HttpOnly; SameSite=Strict; Max-Age={}{}",
        limits::SESSION_TTL.as_secs(),
        secure(&app)
    );
    let mut r = see_other("/board");
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

#[derive(Deserialize)]
pub struct CsrfOnly {
    csrf: Option<String>,
}

pub async fn post_logout(
    State(app): State<App>,
    headers: HeaderMap,
    form: Result<Form<CsrfOnly>, FormRejection>,
) -> Response {
    let csrf = form.ok().and_then(|Form(f)| f.csrf);
    let Some(key) = check_post(&app, &headers, csrf.as_deref()).await else {
        return forbidden();
    };
    if let Err(e) = app.storage.delete_session(&key).await {
        return oops(e.into());
    }
    let cookie = format!(
        "{COOKIE}=; Path=/board; HttpOnly; SameSite=Strict; Max-Age=0{}",
        secure(&app)
    );
    let mut r = see_other("/board");
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// A board form: it carries the session's CSRF token.
trait BoardForm {
    fn csrf(&self) -> Option<&str>;
}

macro_rules! board_forms {
    ($($t:ty),*) => {$(
        impl BoardForm for $t {
            fn csrf(&self) -> Option<&str> {
                self.csrf.as_deref()
            }
        }
    )*};
}

board_forms!(
    ReissueForm,
    EnrollForm,
    CloseForm,
    devices::RevokeForm,
    lifecycle::EraseForm
);

/// A board action's form, once its CSRF token matched the session's.
/// None: answer 403.
async fn checked_form<F: BoardForm>(
    app: &App,
    headers: &HeaderMap,
    form: Result<Form<F>, FormRejection>,
) -> Option<F> {
    let Ok(Form(f)) = form else {
        return None;
    };
    check_post(app, headers, f.csrf()).await?;
    Some(f)
}

/// [`checked_form`], with the session's token for the page the action
/// renders.
async fn checked<F: BoardForm>(
    app: &App,
    headers: &HeaderMap,
    form: Result<Form<F>, FormRejection>,
) -> Option<(F, String)> {
    let f = checked_form(app, headers, form).await?;
    let csrf = session(app, headers).await.map(|s| s.1).unwrap_or_default();
    Some((f, csrf))
}

/// A refused board action: the board again, saying why (`what: message`,
/// `what` already HTML), for a client error; the error page for a fault.
async fn refused(
    app: &App,
    q: &BoardQuery,
    csrf: &str,
    what: &str,
    e: ApiError,
    status: Option<StatusCode>,
) -> Response {
    if !e.status.is_client_error() {
        return oops(e);
    }
    let msg = format!("{what}: {}", esc(&e.message));
    render_board(app, q, csrf, Some(msg), status.unwrap_or(e.status)).await
}

#[derive(Deserialize)]
pub struct ReissueForm {
    csrf: Option<String>,
    parcel_id: Option<String>,
    date: Option<String>,
}

fn back_to(date: Option<&str>, done: &str) -> String {
    match date.and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok()) {
        Some(d) => format!("/board?date={d}&done={done}"),
        None => format!("/board?done={done}"),
    }
}

pub async fn post_reissue(
    State(app): State<App>,
    headers: HeaderMap,
    form: Result<Form<ReissueForm>, FormRejection>,
) -> Response {
    let Some((f, csrf)) = checked(&app, &headers, form).await else {
        return forbidden();
    };
    let Some(pid) = f.parcel_id.filter(|p| !p.is_empty()) else {
        return plain(StatusCode::BAD_REQUEST, "No parcel", "Choose a parcel.");
    };
    match app.reissue(&pid, None).await.map_err(ApiError::from) {
        Ok(_) => {
            tracing::info!(parcel_id = %pid, "reissued from the board");
            see_other(&back_to(f.date.as_deref(), "reissued"))
        }
        Err(e) => {
            let q = BoardQuery {
                date: f.date,
                ..BoardQuery::default()
            };
            let what = format!("Could not reissue {}", esc(&pid));
            refused(&app, &q, &csrf, &what, e, None).await
        }
    }
}

#[derive(Deserialize)]
pub struct EnrollForm {
    csrf: Option<String>,
    courier_id: Option<String>,
}

pub async fn post_enroll(
    State(app): State<App>,
    headers: HeaderMap,
    form: Result<Form<EnrollForm>, FormRejection>,
) -> Response {
    let Some((f, csrf)) = checked(&app, &headers, form).await else {
        return forbidden();
    };
    let courier_id = f.courier_id.unwrap_or_default().trim().to_string();
    let q = BoardQuery::default();
    match app.enroll(&courier_id).await.map_err(ApiError::from) {
        Ok(e) => {
            let tz = app.cfg.calendar.time_zone;
            let msg = format!(
                "Enrollment code for <strong>{c}</strong>: <code id=\"enrollment-code\" class=\"big\">{code}</code> \
valid until {until}. It works once; type it into the courier's handset.",
                c = esc(&e.courier_id),
                code = esc(&e.code),
                until = esc(&e.expires_at.with_timezone(&tz).format("%H:%M").to_string()),
            );
            render_board(&app, &q, &csrf, Some(msg), StatusCode::OK).await
        }
        Err(e) => {
            let what = "Could not create an enrollment code";
            refused(
                &app,
                &q,
                &csrf,
                what,
                e,
                Some(StatusCode::UNPROCESSABLE_ENTITY),
            )
            .await
        }
    }
}

#[derive(Deserialize)]
pub struct CloseForm {
    csrf: Option<String>,
    date: Option<String>,
}

pub async fn post_close_day(
    State(app): State<App>,
    headers: HeaderMap,
    form: Result<Form<CloseForm>, FormRejection>,
) -> Response {
    let Some((f, csrf)) = checked(&app, &headers, form).await else {
        return forbidden();
    };
    let date = f.date.unwrap_or_default();
    let closed = match crate::validate::date(&date) {
        Ok(d) => app.close_day(d).await.map_err(ApiError::from),
        Err(m) => Err(ApiError::bad_request("bad_date", m)),
    };
    match closed {
        Ok(c) => {
            tracing::info!(date = %c.date, "day closed from the board");
            let q = BoardQuery {
                date: Some(c.date.to_string()),
                ..BoardQuery::default()
            };
            let msg = format!(
                "Closed {}: {} parcel(s) moved to {}.",
                c.date,
                c.moved.parcel_ids.len(),
                c.next_date
            );
            render_board(&app, &q, &csrf, Some(msg), StatusCode::OK).await
        }
        Err(e) => {
            let q = BoardQuery::default();
            refused(&app, &q, &csrf, "Could not close the day", e, None).await
        }
    }
}
