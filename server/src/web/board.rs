//! The dispatcher's board: admin login (the dispatch token exchanged for an
//! HttpOnly, SameSite=Strict session cookie), the day's routes with
//! per-courier progress, parcels by state with filters, disputes and fraud
//! signals, locked parcels with a reissue action, enrollment codes and
//! close-day. Every form carries the session's synchronizer CSRF token; a
//! POST without the right one gets 403. `/board/live` serves the refreshing
//! part as an HTML fragment, fetched every few seconds by `board.js`.

use super::{WebState, esc, html, page, plain, same_origin};
use crate::api::{Dispatch, EnrollmentIn};
use crate::app::App;
use crate::domain::disputes::Cursor;
use crate::domain::{Label, ParcelState};
use crate::error::{ApiError, Body, PathArg};
use crate::keys::{new_token, token_hash};
use crate::storage::{ParcelView, Signal};
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Extension, Form, Query, State};
use axum::http::{Extensions, HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::NaiveDate;
use doorcode_core::codes::ct_eq;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "lifecycle.rs"]
pub(super) mod lifecycle;

const COOKIE: &str = "doorcode_board";
/// Sessions end after this long, or at logout or restart.
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Signals per board page.
const SIGNALS_PER_PAGE: u32 = 50;

pub(crate) struct Session {
    csrf: String,
    expires: Instant,
}

/// Server-side sessions, keyed by the SHA-256 of the cookie's 256-bit id.
#[derive(Default)]
pub(crate) struct Sessions(Mutex<HashMap<String, Session>>);

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        match self.0.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        }
    }
}

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

/// The session's key and CSRF token, if the cookie names a live session.
fn session(web: &WebState, h: &HeaderMap) -> Option<(String, String)> {
    let key = token_hash(&cookie_id(h)?);
    let mut m = web.sessions.lock();
    let now = Instant::now();
    m.retain(|_, s| s.expires > now);
    m.get(&key).map(|s| (key.clone(), s.csrf.clone()))
}

fn secure(app: &App) -> &'static str {
    if app.public_url.starts_with("https://") {
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
fn check_post(web: &WebState, h: &HeaderMap, csrf: Option<&str>) -> Option<String> {
    let (key, expected) = session(web, h)?;
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

fn csrf_field(csrf: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(csrf)
    )
}

fn signal_rows(list: &[&Signal]) -> String {
    if list.is_empty() {
        return "<p class=\"empty\">None.</p>".into();
    }
    let rows: String = list
        .iter()
        .map(|s| {
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&s.at.format("%Y-%m-%d %H:%M").to_string()),
                esc(s.kind.as_str()),
                esc(s.parcel_id.as_deref().unwrap_or("")),
                esc(s.device_id.as_deref().unwrap_or("")),
                esc(&s.detail)
            )
        })
        .collect();
    format!(
        "<div class=\"scroll\"><table><thead><tr><th scope=\"col\">At (UTC)</th><th scope=\"col\">Kind</th>\
<th scope=\"col\">Parcel</th><th scope=\"col\">Device</th><th scope=\"col\">Detail</th></tr></thead><tbody>{rows}</tbody></table></div>"
    )
}

/// The refreshing part of the board.
fn live(date: NaiveDate, q: &BoardQuery, d: &Day, csrf: &str) -> String {
    let ds = date.to_string();
    // Counts by state.
    let mut counts: BTreeMap<&str, usize> =
        ParcelState::ALL.iter().map(|s| (s.as_str(), 0)).collect();
    for p in &d.parcels {
        if let Some(c) = counts.get_mut(p.status.as_str()) {
            *c += 1;
        }
    }
    let summary: String = ParcelState::ALL
        .iter()
        .map(|s| s.as_str())
        .map(|s| {
            format!(
                "<li class=\"st-{s}\"><span class=\"n\">{}</span> {s}</li>",
                counts.get(s).copied().unwrap_or(0)
            )
        })
        .collect();
    // Per-courier progress.
    let mut routes = String::new();
    for (rid, courier) in &d.couriers {
        let on: Vec<&ParcelView> = d
            .parcels
            .iter()
            .filter(|p| p.route_id.as_deref() == Some(rid))
            .collect();
        let total = on.len();
        let count = |s: ParcelState| on.iter().filter(|p| p.status == s).count();
        let delivered = count(ParcelState::Delivered);
        let failed = count(ParcelState::Failed);
        let disputed = count(ParcelState::Disputed);
        routes.push_str(&format!(
            "<li class=\"route\"><div class=\"rhead\"><strong>{c}</strong> <span class=\"muted\">route {r}</span>\
<span class=\"rcount\">{delivered} of {total} delivered</span></div>\
<progress max=\"{total}\" value=\"{delivered}\" aria-label=\"{c}: {delivered} of {total} delivered\"></progress>\
<p class=\"muted\">{failed} failed, {disputed} disputed</p></li>",
            c = esc(courier),
            r = esc(rid),
        ));
    }
    if routes.is_empty() {
        routes = "<li class=\"empty\">No routes on this day.</li>".into();
    }
    // Parcels, filtered.
    let want_status = q.status.as_deref().and_then(ParcelState::parse);
    let needle =
        q.q.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_lowercase);
    let shown: Vec<&ParcelView> = d
        .parcels
        .iter()
        .filter(|p| want_status.is_none_or(|s| p.status == s))
        .filter(|p| {
            needle.as_deref().is_none_or(|n| {
                p.parcel_id.to_lowercase().contains(n)
                    || p.recipient_name.to_lowercase().contains(n)
                    || p.address.to_lowercase().contains(n)
            })
        })
        .collect();
    let rows: String = shown
        .iter()
        .map(|p| {
            let courier = p
                .route_id
                .as_ref()
                .and_then(|r| d.couriers.get(r))
                .map(String::as_str)
                .unwrap_or("");
            format!(
                "<tr><td>{id}</td><td><span class=\"badge st-{st}\">{st}</span>{lock}</td><td>{who}</td><td>{addr}</td>\
<td>{courier}</td><td>{att}</td><td>{wrong}</td></tr>",
                id = esc(&p.parcel_id),
                st = esc(p.status.as_str()),
                lock = if p.locked { " <span class=\"badge locked\">locked</span>" } else { "" },
                who = esc(&p.recipient_name),
                addr = esc(&p.address),
                courier = esc(courier),
                att = p.attempt,
                wrong = p.wrong_tries,
            )
        })
        .collect();
    let table = if shown.is_empty() {
        "<p class=\"empty\">No parcels match.</p>".to_string()
    } else {
        format!(
            "<div class=\"scroll\"><table id=\"parcels\"><thead><tr><th scope=\"col\">Parcel</th><th scope=\"col\">State</th>\
<th scope=\"col\">Recipient</th><th scope=\"col\">Address</th><th scope=\"col\">Courier</th><th scope=\"col\">Attempt</th>\
<th scope=\"col\">Wrong tries</th></tr></thead><tbody>{rows}</tbody></table></div>"
        )
    };
    // Locked, disputed or held parcels: dispatch decides, reissue is one
    // click (for a held parcel it is the release, with a new code).
    let attention: String = d
        .parcels
        .iter()
        .filter(|p| {
            p.locked || matches!(p.status, ParcelState::Disputed | ParcelState::Held)
        })
        .map(|p| {
            let why = if p.status == ParcelState::Held {
                "held: the customer says they did not order it".to_string()
            } else if p.locked {
                format!("locked after {} wrong tries", p.wrong_tries)
            } else {
                "disputed delivery".to_string()
            };
            format!(
                "<li><strong>{id}</strong> <span class=\"muted\">{why}</span>\
<form method=\"post\" action=\"/board/reissue\" class=\"inline\">{csrf}\
<input type=\"hidden\" name=\"parcel_id\" value=\"{id}\"><input type=\"hidden\" name=\"date\" value=\"{ds}\">\
<button type=\"submit\" data-reissue=\"{id}\">Reissue code</button></form></li>",
                id = esc(&p.parcel_id),
                why = esc(&why),
                csrf = csrf_field(csrf),
                ds = esc(&ds),
            )
        })
        .collect();
    let attention = if attention.is_empty() {
        "<p class=\"empty\">No locked, disputed or held parcels.</p>".to_string()
    } else {
        format!("<ul class=\"attention\">{attention}</ul>")
    };
    let (disputes, signals): (Vec<&Signal>, Vec<&Signal>) =
        d.signals.iter().partition(|s| s.kind.is_dispute());
    // The day's signals page by page, oldest first.
    let mut pages = String::new();
    if q.signals.is_some() {
        pages.push_str(&format!(
            "<a href=\"/board?date={ds}\" data-signals-page=\"first\">First signals of the day</a> "
        ));
    }
    if let Some(next) = d.next {
        pages.push_str(&format!(
            "<a href=\"/board?date={ds}&amp;signals={c}\" data-signals-page=\"next\">Later signals</a>",
            c = next.encode()
        ));
    }
    let pages = if pages.is_empty() {
        String::new()
    } else {
        format!("<p class=\"pages\">{pages}</p>")
    };
    format!(
        "<section aria-labelledby=\"sum-h\"><h2 id=\"sum-h\">Parcels on {ds_e}</h2><ul class=\"summary\">{summary}</ul></section>\
<section aria-labelledby=\"routes-h\"><h2 id=\"routes-h\">Routes</h2><ul class=\"routes\">{routes}</ul></section>\
<section aria-labelledby=\"att-h\"><h2 id=\"att-h\">Locked and disputed parcels</h2>{attention}</section>\
<section aria-labelledby=\"list-h\"><h2 id=\"list-h\">Parcels ({n} shown)</h2>{table}</section>\
<section aria-labelledby=\"disp-h\"><h2 id=\"disp-h\">Disputes</h2>{dt}</section>\
<section aria-labelledby=\"sig-h\"><h2 id=\"sig-h\">Fraud signals</h2>{st}{pages}</section>",
        ds_e = esc(&ds),
        n = shown.len(),
        dt = signal_rows(&disputes),
        st = signal_rows(&signals),
    )
}

fn board_page(
    date: NaiveDate,
    q: &BoardQuery,
    d: &Day,
    csrf: &str,
    notice: Option<String>,
) -> String {
    let ds = date.to_string();
    let opts: String = std::iter::once(("", "all states"))
        .chain(ParcelState::ALL.iter().map(|s| (s.as_str(), s.as_str())))
        .map(|(v, label)| {
            let sel = if q.status.as_deref().unwrap_or("") == v {
                " selected"
            } else {
                ""
            };
            format!("<option value=\"{v}\"{sel}>{label}</option>")
        })
        .collect();
    let notice = notice
        .map(|n| format!("<div class=\"note\" role=\"status\">{n}</div>"))
        .unwrap_or_default();
    let body = format!(
        "<header class=\"bar\"><p class=\"brand\">doorcode <span>dispatch</span></p>\
<form method=\"post\" action=\"/board/logout\">{csrf}<button type=\"submit\" class=\"link\">Sign out</button></form></header>\
<main id=\"main\" class=\"wide\"><h1>Board for {ds_e}</h1>{notice}\
<form method=\"get\" action=\"/board\" class=\"filters\" role=\"search\">\
<label>Day <input type=\"date\" name=\"date\" value=\"{ds_e}\"></label>\
<label>State <select name=\"status\">{opts}</select></label>\
<label>Search <input type=\"search\" name=\"q\" value=\"{qv}\" placeholder=\"parcel, name, address\"></label>\
<button type=\"submit\">Show</button></form>\
<div id=\"live\" aria-live=\"polite\">{live}</div>\
<p class=\"muted\" id=\"updated\">Updates every few seconds.</p>\
<div class=\"tools\">\
<section aria-labelledby=\"enr-h\"><h2 id=\"enr-h\">Enroll a courier's handset</h2>\
<form method=\"post\" action=\"/board/enroll\" class=\"stack\">{csrf}<label for=\"courier\">Courier id</label>\
<input id=\"courier\" name=\"courier_id\" required maxlength=\"100\"><button type=\"submit\">Create enrollment code</button></form></section>\
<section aria-labelledby=\"close-h\"><h2 id=\"close-h\">Close the day</h2>\
<p>Undelivered parcels of {ds_e} move to the next working day with a new code; customers get a new notice.</p>\
<form method=\"post\" action=\"/board/close-day\">{csrf}<input type=\"hidden\" name=\"date\" value=\"{ds_e}\">\
<button type=\"submit\" class=\"danger\">Close {ds_e}</button></form></section>{data}</div>\
</main><footer><p>doorcode dispatch board</p></footer>",
        csrf = csrf_field(csrf),
        ds_e = esc(&ds),
        qv = esc(q.q.as_deref().unwrap_or("")),
        live = live(date, q, d, csrf),
        data = lifecycle::tools(),
    );
    page(&format!("Board {ds}"), &body, true)
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
    Extension(web): Extension<Arc<WebState>>,
    headers: HeaderMap,
    q: Result<Query<BoardQuery>, QueryRejection>,
) -> Response {
    let Some((_, csrf)) = session(&web, &headers) else {
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
    Extension(web): Extension<Arc<WebState>>,
    headers: HeaderMap,
    q: Result<Query<BoardQuery>, QueryRejection>,
) -> Response {
    let Some((_, csrf)) = session(&web, &headers) else {
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
    if !web.login_limit.allow(&super::client_ip(&ext)) {
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
    web.sessions.lock().insert(
        token_hash(&id),
        Session {
            csrf,
            expires: Instant::now() + SESSION_TTL,
        },
    );
    tracing::info!("board session started");
    let cookie = format!(
        "{COOKIE}={id}; Path=/board; HttpOnly; SameSite=Strict; Max-Age={}{}",
        SESSION_TTL.as_secs(),
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
    Extension(web): Extension<Arc<WebState>>,
    headers: HeaderMap,
    form: Result<Form<CsrfOnly>, FormRejection>,
) -> Response {
    let csrf = form.ok().and_then(|Form(f)| f.csrf);
    let Some(key) = check_post(&web, &headers, csrf.as_deref()) else {
        return forbidden();
    };
    web.sessions.lock().remove(&key);
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
    Extension(web): Extension<Arc<WebState>>,
    headers: HeaderMap,
    form: Result<Form<ReissueForm>, FormRejection>,
) -> Response {
    let Ok(Form(f)) = form else {
        return forbidden();
    };
    if check_post(&web, &headers, f.csrf.as_deref()).is_none() {
        return forbidden();
    }
    let csrf = session(&web, &headers).map(|s| s.1).unwrap_or_default();
    let Some(pid) = f.parcel_id.filter(|p| !p.is_empty()) else {
        return plain(StatusCode::BAD_REQUEST, "No parcel", "Choose a parcel.");
    };
    match app.reissue(&pid, None).await {
        Ok(_) => {
            tracing::info!(parcel_id = %pid, "reissued from the board");
            see_other(&back_to(f.date.as_deref(), "reissued"))
        }
        Err(e) if e.status.is_client_error() => {
            let q = BoardQuery {
                date: f.date,
                ..BoardQuery::default()
            };
            let msg = format!("Could not reissue {}: {}", esc(&pid), esc(&e.message));
            render_board(&app, &q, &csrf, Some(msg), e.status).await
        }
        Err(e) => oops(e),
    }
}

#[derive(Deserialize)]
pub struct EnrollForm {
    csrf: Option<String>,
    courier_id: Option<String>,
}

pub async fn post_enroll(
    State(app): State<App>,
    Extension(web): Extension<Arc<WebState>>,
    headers: HeaderMap,
    form: Result<Form<EnrollForm>, FormRejection>,
) -> Response {
    let Ok(Form(f)) = form else {
        return forbidden();
    };
    if check_post(&web, &headers, f.csrf.as_deref()).is_none() {
        return forbidden();
    }
    let csrf = session(&web, &headers).map(|s| s.1).unwrap_or_default();
    let courier_id = f.courier_id.unwrap_or_default().trim().to_string();
    let q = BoardQuery::default();
    match crate::api::post_enrollment(
        State(app.clone()),
        Dispatch,
        Body(EnrollmentIn { courier_id }),
    )
    .await
    {
        Ok(axum::Json(e)) => {
            let tz = app.cfg.calendar.time_zone;
            let msg = format!(
                "Enrollment code for <strong>{c}</strong>: <code id=\"enrollment-code\" class=\"big\">{code}</code> \
valid until {until}. It works once; type it into the courier's handset.",
                c = esc(&e.courier_id),
                code = esc(&e.enrollment_code),
                until = esc(&e.expires_at.with_timezone(&tz).format("%H:%M").to_string()),
            );
            render_board(&app, &q, &csrf, Some(msg), StatusCode::OK).await
        }
        Err(e) if e.status.is_client_error() => {
            let msg = format!("Could not create an enrollment code: {}", esc(&e.message));
            render_board(&app, &q, &csrf, Some(msg), StatusCode::UNPROCESSABLE_ENTITY).await
        }
        Err(e) => oops(e),
    }
}

#[derive(Deserialize)]
pub struct CloseForm {
    csrf: Option<String>,
    date: Option<String>,
}

pub async fn post_close_day(
    State(app): State<App>,
    Extension(web): Extension<Arc<WebState>>,
    headers: HeaderMap,
    form: Result<Form<CloseForm>, FormRejection>,
) -> Response {
    let Ok(Form(f)) = form else {
        return forbidden();
    };
    if check_post(&web, &headers, f.csrf.as_deref()).is_none() {
        return forbidden();
    }
    let csrf = session(&web, &headers).map(|s| s.1).unwrap_or_default();
    let date = f.date.unwrap_or_default();
    match crate::api::post_close_day(State(app.clone()), Dispatch, PathArg(date.clone())).await {
        Ok(axum::Json(c)) => {
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
        Err(e) if e.status.is_client_error() => {
            let q = BoardQuery::default();
            let msg = format!("Could not close the day: {}", esc(&e.message));
            render_board(&app, &q, &csrf, Some(msg), e.status).await
        }
        Err(e) => oops(e),
    }
}
