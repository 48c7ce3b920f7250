//! The customer's tracking page: parcel, day, status, the code while it is
//! valid (large spaced digits, read digit by digit by screen readers), the
//! safety text, a rate-limited "send the notice again" (shared with the
//! courier's `POST /v1/parcels/{id}/resend`), and "I did not order this".

use super::{WebState, esc, html, minutes_text, not_found_page, page, plain, same_origin};
use crate::app::{App, ServiceError, TrackView};
use crate::domain::limits::TRACK;
use crate::domain::{EventKind, ParcelState};
use crate::error::ApiError;
use axum::extract::rejection::{FormRejection, PathRejection};
use axum::extract::{Extension, Form, Path, RawQuery, State};
use axum::http::{Extensions, HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

/// One resend per parcel per this long.
pub const RESEND_EVERY: Duration = Duration::from_secs(600);

fn too_many() -> Response {
    let mut r = plain(
        StatusCode::TOO_MANY_REQUESTS,
        "Too many requests",
        "Please wait a minute and try again.",
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
    r
}

/// One tracking lookup by this client ([`crate::domain::limits::TRACK`],
/// shared with the JSON route); false when over the limit.
async fn track_allowed(web: &WebState, ext: &Extensions) -> bool {
    let client = super::client_ip(ext).to_string();
    web.limits.take(&TRACK, &client).await.is_ok()
}

/// The page's form token: HMAC of the track token under the form key every
/// node derives from the code key ([`WebState::form_key`]), so a form
/// served by one node posts to any other. An attacker cannot make it
/// without the page, so cross-site posts fail.
fn form_token(web: &WebState, token: &str) -> String {
    let tag = ring::hmac::sign(&web.form_key, format!("resend\0{token}").as_bytes());
    doorcode_core::b64::encode(tag.as_ref())
}

fn status_text(status: ParcelState) -> &'static str {
    match status {
        ParcelState::Pending => "Being prepared: not on a delivery round yet",
        ParcelState::Scheduled => "Out for delivery",
        ParcelState::Failed => "Delivery attempt failed: the courier may try again today",
        ParcelState::Delivered => "Delivered",
        ParcelState::Disputed => "Delivery under review",
        ParcelState::Held => "On hold: you told us you did not order this parcel",
    }
}

/// When the parcel was delivered (the server's record of the confirmation).
async fn delivered_at(
    app: &App,
    parcel_id: &str,
) -> Result<Option<DateTime<Utc>>, crate::storage::StorageError> {
    Ok(app.storage.parcel(parcel_id).await?.and_then(|p| {
        p.events
            .iter()
            .rev()
            .find(|e| e.kind == EventKind::Delivered)
            .map(|e| e.at)
    }))
}

fn render(
    app: &App,
    web: &WebState,
    token: &str,
    t: &TrackView,
    delivered: Option<DateTime<Utc>>,
    message: Option<&str>,
) -> String {
    let tz = app.cfg.calendar.time_zone;
    let day = t
        .delivery_date
        .map(|d| d.format("%A %-d %B %Y").to_string())
        .unwrap_or_else(|| "not scheduled yet".into());
    let msg = message
        .map(|m| format!("<p class=\"note\" role=\"status\">{}</p>", esc(m)))
        .unwrap_or_default();
    let main_block = if t.status == ParcelState::Delivered {
        let when = delivered
            .map(|at| at.with_timezone(&tz).format("%H:%M").to_string())
            .unwrap_or_else(|| "--:--".into());
        format!(
            "<section class=\"done\" aria-labelledby=\"done-h\"><h2 id=\"done-h\">Delivered at {when}, code verified</h2>\
<p>Your parcel was handed over. The code is no longer valid and nobody needs it any more.</p></section>"
        )
    } else if let Some(code) = &t.code {
        let spoken: Vec<String> = code.chars().map(|c| c.to_string()).collect();
        format!(
            "<section class=\"codebox\" aria-labelledby=\"code-h\"><h2 id=\"code-h\">Your delivery code</h2>\
<p class=\"code\"><span class=\"sr-only\">{spoken}</span><span id=\"code\" class=\"digits\" aria-hidden=\"true\">{digits}</span></p>\
<p class=\"valid\">Valid on {day} only. Say it to the courier when they hand you the parcel at your door.</p>\
<form method=\"post\" action=\"/track/{tok}/resend\"><input type=\"hidden\" name=\"t\" value=\"{ft}\">\
<button type=\"submit\">Send the notice again</button></form></section>",
            spoken = esc(&spoken.join(" ")),
            digits = esc(code),
            tok = esc(token),
            ft = esc(&form_token(web, token)),
        )
    } else if t.status == ParcelState::Held {
        "<section class=\"info\" aria-labelledby=\"held-h\"><h2 id=\"held-h\">On hold</h2><p>You told us you did not order \
this parcel. Its code no longer works and the courier will not hand it over. The depot will contact you. \
Do not give anyone a code for this parcel.</p></section>"
            .to_string()
    } else if t.status == ParcelState::Disputed {
        "<section class=\"info\"><h2>We are checking this delivery</h2><p>A delivery was reported that we could not confirm. \
Do not give anyone a code for this parcel. We will contact you.</p></section>"
            .to_string()
    } else {
        "<section class=\"info\"><h2>No code right now</h2><p>Your code appears here on the delivery day, \
and you also get it in a message. It is only shown while it is valid.</p></section>"
            .to_string()
    };
    // Offered until the parcel is handed over or already held.
    let not_mine = if matches!(
        t.status,
        ParcelState::Pending | ParcelState::Scheduled | ParcelState::Failed
    ) {
        format!(
            "<section class=\"notmine\" id=\"not-mine\" aria-labelledby=\"nm-h\"><h2 id=\"nm-h\">Not your parcel?</h2>\
<p>If you did not order this, press the button. The code stops working at once, the courier will not hand the parcel \
over, and the depot is told.</p>\
<form method=\"post\" action=\"/track/{tok}/not-mine\"><input type=\"hidden\" name=\"t\" value=\"{ft}\">\
<button type=\"submit\" class=\"secondary\" data-not-mine>I did not order this</button></form></section>",
            tok = esc(token),
            ft = esc(&form_token(web, token)),
        )
    } else {
        String::new()
    };
    let safety: String = t
        .safety
        .iter()
        .map(|s| format!("<li>{}</li>", esc(s)))
        .collect();
    let body = format!(
        "<header><p class=\"brand\">doorcode <span>parcel tracking</span></p></header>\
<main id=\"main\"><h1>Parcel {pid}</h1>{msg}\
<dl class=\"facts\"><dt>Status</dt><dd id=\"status\">{status}</dd><dt>Delivery day</dt><dd>{day_e}</dd></dl>\
{main_block}{not_mine}\
<section class=\"safety\" aria-labelledby=\"safe-h\"><h2 id=\"safe-h\">Keep your code safe</h2><ul>{safety}</ul></section>\
</main><footer><p>We will never ask you for your code by phone, by text message or through a link.</p></footer>",
        pid = esc(&t.parcel_id),
        status = esc(status_text(t.status)),
        day_e = esc(&day),
    );
    page(&format!("Parcel {}", t.parcel_id), &body, false)
}

async fn lookup(app: &App, token: &str) -> Result<Option<TrackView>, Response> {
    match app.track(token).await {
        Ok(v) => Ok(Some(v)),
        Err(ServiceError::UnknownTrackToken) => Ok(None),
        Err(e) => {
            tracing::error!(error = %crate::error::redact_digits(&e.to_string()), "track page");
            Err(plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "Please try again in a minute.",
            ))
        }
    }
}

/// TrackView page (HTML): a plain 404 page for unknown or expired tokens.
#[utoipa::path(get, path = "/track/{token}", tag = "customer",
    params(("token" = String, Path, description = "track token from the notice")),
    responses((status = 200, description = "HTML page", content_type = "text/html"),
        (status = 404, description = "HTML page that reveals nothing", content_type = "text/html"),
        (status = 429, description = "too many lookups from this address", content_type = "text/html")))]
pub async fn get_page(
    State(app): State<App>,
    Extension(web): Extension<Arc<WebState>>,
    ext: Extensions,
    path: Result<Path<String>, PathRejection>,
    RawQuery(q): RawQuery,
) -> Response {
    if !track_allowed(&web, &ext).await {
        return too_many();
    }
    let Ok(Path(token)) = path else {
        return not_found_page();
    };
    let t = match lookup(&app, &token).await {
        Ok(Some(t)) => t,
        Ok(None) => return not_found_page(),
        Err(r) => return r,
    };
    let delivered = if t.status == ParcelState::Delivered {
        delivered_at(&app, &t.parcel_id).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "track page: delivery time");
            None
        })
    } else {
        None
    };
    let message = match q.as_deref() {
        Some("resent=1") => Some("We sent the notice again."),
        Some("held=1") => Some("Thank you. The parcel is on hold and its code no longer works."),
        _ => None,
    };
    html(
        StatusCode::OK,
        render(&app, &web, &token, &t, delivered, message),
    )
}

#[derive(Deserialize)]
pub struct ResendForm {
    t: String,
}

/// What both buttons of the page check first: the per-client lookup limit,
/// a known link, the page's own form token and a same-origin post. The
/// token and the parcel's view, or the answer to give instead.
async fn page_form(
    app: &App,
    web: &WebState,
    ext: &Extensions,
    headers: &HeaderMap,
    path: Result<Path<String>, PathRejection>,
    form: &Result<Form<ResendForm>, FormRejection>,
) -> Result<(String, TrackView), Response> {
    if !track_allowed(web, ext).await {
        return Err(too_many());
    }
    let Ok(Path(token)) = path else {
        return Err(not_found_page());
    };
    let t = match lookup(app, &token).await? {
        Some(t) => t,
        None => return Err(not_found_page()),
    };
    let ok_form = match form {
        Ok(Form(f)) => {
            doorcode_core::codes::ct_eq(f.t.as_bytes(), form_token(web, &token).as_bytes())
        }
        Err(_) => false,
    };
    if !ok_form || !same_origin(headers) {
        return Err(plain(
            StatusCode::FORBIDDEN,
            "Request refused",
            "Open the tracking page again and use its button.",
        ));
    }
    Ok((token, t))
}

/// The page a form was posted from, as [`render`] takes it: the app, the
/// web state, the track token and the parcel's view.
type Page<'a> = (&'a App, &'a WebState, &'a str, &'a TrackView);

/// The tracking page again with `note` above it, answered with `status`.
fn page_note((app, web, token, t): Page<'_>, status: StatusCode, note: &str) -> Response {
    html(status, render(app, web, token, t, None, Some(note)))
}

/// After a form's action: see other to the tracking page with `flag` set
/// (`?resent=1`), so a reload does not post the form again.
fn back_to_page(token: &str, flag: &str) -> Response {
    let loc = format!("/track/{token}?{flag}=1");
    match HeaderValue::from_str(&loc) {
        Ok(v) => (StatusCode::SEE_OTHER, [(header::LOCATION, v)]).into_response(),
        Err(_) => not_found_page(),
    }
}

pub async fn post_resend(
    State(app): State<App>,
    Extension(web): Extension<Arc<WebState>>,
    ext: Extensions,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    form: Result<Form<ResendForm>, FormRejection>,
) -> Response {
    let (token, t) = match page_form(&app, &web, &ext, &headers, path, &form).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(date) = t.delivery_date.filter(|_| t.code.is_some()) else {
        return page_note(
            (&app, &web, &token, &t),
            StatusCode::CONFLICT,
            "There is no valid code to send right now.",
        );
    };
    let wait = web.claim_resend(&t.parcel_id).await;
    if let Some(w) = wait {
        let msg = format!(
            "The notice was sent recently. You can ask again in {}.",
            minutes_text(w)
        );
        let mut r = page_note(
            (&app, &web, &token, &t),
            StatusCode::TOO_MANY_REQUESTS,
            &msg,
        );
        if let Ok(v) = HeaderValue::from_str(&w.as_secs().max(1).to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return r;
    }
    let sent = resend_notice(&app, &t.parcel_id, date).await;
    match sent {
        Ok(()) => {
            tracing::info!(parcel_id = %t.parcel_id, "notice resent from the tracking page");
            back_to_page(&token, "resent")
        }
        Err(e) => {
            tracing::warn!(parcel_id = %t.parcel_id, error = %e, "resend failed");
            page_note(
                (&app, &web, &token, &t),
                StatusCode::SERVICE_UNAVAILABLE,
                "We could not send the notice just now. Please try again later.",
            )
        }
    }
}

/// Sends the parcel's notice for `date` again, now (same code).
pub async fn resend_notice(
    app: &App,
    parcel_id: &str,
    date: chrono::NaiveDate,
) -> Result<(), String> {
    let p = app
        .storage
        .parcel_contact(parcel_id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "parcel gone".to_string())?;
    let code = app
        .code(&p.parcel_id, date, p.attempt)
        .map_err(|e| e.to_string())?;
    crate::notices::send_now(&app.notifier, app.storage.as_ref(), &p, date, &code).await
}

/// "I did not order this": the page's form token, then the parcel is held
/// ([`App::hold`]) and the page shows it.
pub async fn post_not_mine(
    State(app): State<App>,
    Extension(web): Extension<Arc<WebState>>,
    ext: Extensions,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    form: Result<Form<ResendForm>, FormRejection>,
) -> Response {
    let (token, t) = match page_form(&app, &web, &ext, &headers, path, &form).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    match app.hold(&t.parcel_id).await.map_err(ApiError::from) {
        Ok(_) => {
            tracing::info!(parcel_id = %t.parcel_id, "parcel held: the customer did not order it");
            back_to_page(&token, "held")
        }
        Err(e) if e.status == StatusCode::CONFLICT => page_note(
            (&app, &web, &token, &t),
            StatusCode::CONFLICT,
            "This parcel has already been handed over. Please contact the depot.",
        ),
        Err(e) => {
            tracing::warn!(parcel_id = %t.parcel_id, error = %e.message, "hold failed");
            page_note(
                (&app, &web, &token, &t),
                StatusCode::SERVICE_UNAVAILABLE,
                "We could not record that just now. Please try again in a minute.",
            )
        }
    }
}
