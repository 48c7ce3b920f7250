//! HTTP API by audience: `dispatch` (the dispatch token), `device` (the
//! handset), `customer` (a tracking link) and `ops`, each with its own
//! `router()`, merged here with the web pages and the layers every request
//! passes (logging by route template, body limits, timeouts, the client
//! address). Auth proofs are the extractors in `auth`; handlers check input,
//! call the service steps in `app` and answer with their own response types.

mod auth;
mod customer;
mod device;
mod devices;
mod dispatch;
mod lifecycle;
mod openapi;
mod ops;

pub use auth::{DeviceAuth, Dispatch};
pub use openapi::ApiDoc;
pub use ops::metrics_router;

use crate::app::App;
use crate::error::ApiError;
use axum::Extension;
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::NaiveDate;
use std::time::Instant;

/// A raw query's `key=value` pairs (a pair without `=` has an empty key).
fn query_pairs(q: Option<&str>) -> impl Iterator<Item = (&str, &str)> {
    q.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or(("", p)))
}

fn parse_date(s: &str) -> Result<NaiveDate, ApiError> {
    crate::validate::date(s).map_err(|m| ApiError::bad_request("bad_date", m))
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

pub(crate) async fn not_found() -> ApiError {
    ApiError::not_found("not_found", "no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed here",
    )
}

/// The public router: every audience's endpoints and the web pages.
pub fn router(app: App, web: std::sync::Arc<crate::web::WebState>) -> Router {
    let cfg = app.cfg.clone();
    Router::new()
        .merge(crate::web::routes(web.clone()))
        .merge(dispatch::router())
        .merge(device::router(cfg.confirmations_body_limit))
        .merge(customer::router())
        .merge(ops::router())
        .merge(lifecycle::router())
        .merge(devices::router())
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
