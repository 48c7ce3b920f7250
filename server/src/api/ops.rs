//! Operations: the published signing keys, liveness and metrics.

use super::auth::Dispatch;
use crate::app::App;
use crate::error::ErrorBody;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use doorcode_core::wire::Keys;

/// The server's manifest signing keys, current and retired.
#[utoipa::path(get, path = "/.well-known/doorcode-keys", tag = "ops", responses((status = 200, body = Keys)))]
pub(super) async fn get_keys(State(app): State<App>) -> Json<Keys> {
    Json(Keys {
        keys: super::device::server_keys(&app),
    })
}

/// Liveness.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, description = "ok")))]
pub(super) async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// Prometheus metrics. On the public listener it needs the dispatch token;
/// `--metrics-listen` serves the same text without one.
#[utoipa::path(get, path = "/metrics", tag = "ops", security(("bearer" = [])),
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain"),
        (status = 401, body = ErrorBody, description = "missing or wrong dispatch token")))]
pub(super) async fn metrics(State(app): State<App>, _d: Dispatch) -> Response {
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
        .fallback(super::not_found)
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            app.cfg.request_timeout,
        ))
        .with_state(app)
}

/// Keys, liveness, metrics (with the dispatch token) and this API's document.
pub fn router() -> Router<App> {
    Router::new()
        .route("/.well-known/doorcode-keys", get(get_keys))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(super::openapi::openapi_json))
}
