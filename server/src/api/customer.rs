//! The customer's API: what a tracking link shows, as JSON. The HTML page
//! for the same link is `web::track`.

use crate::app::{App, TrackView};
use crate::domain::limits::TRACK;
use crate::error::{ApiError, ErrorBody, PathArg};
use crate::web::WebState;
use axum::extract::State;
use axum::http::{Extensions, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use std::sync::Arc;

fn no_store() -> [(header::HeaderName, HeaderValue); 2] {
    [
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
    ]
}

/// Tracking as JSON, behind the same per-address limit as the page: both
/// answer "is this a token?".
#[utoipa::path(get, path = "/v1/track/{token}", tag = "customer",
    params(("token" = String, Path, description = "track token from the notice")),
    responses((status = 200, body = TrackView), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(super) async fn get_track_json(
    State(app): State<App>,
    Extension(web): Extension<Arc<WebState>>,
    ext: Extensions,
    PathArg(token): PathArg<String>,
) -> Result<Response, ApiError> {
    let client = crate::web::client_ip(&ext).to_string();
    if web.limits.take(&TRACK, &client).await.is_err() {
        let mut r = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many tracking lookups from this address; wait a minute",
        )
        .into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
        return Ok(r);
    }
    let view = app.track(&token).await?;
    Ok((no_store(), Json(view)).into_response())
}

/// The customer's endpoints (no token: the link is the secret). They carry
/// the web pages' security headers.
pub fn router() -> Router<App> {
    Router::new()
        .route("/v1/track/{token}", get(get_track_json))
        .layer(axum::middleware::from_fn(crate::web::security_headers))
}
