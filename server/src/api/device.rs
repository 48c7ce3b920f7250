//! The handset's API: enrollment, the signed manifest, confirmation
//! upload and the online code check.

use super::auth::DeviceAuth;
use super::{parse_date, query_pairs};
use crate::app::{App, ItemResult};
use crate::domain::limits::ENROLLMENT;
use crate::domain::{ItemStatus, Label};
use crate::error::{ApiError, Body, ErrorBody, PathArg};
use crate::keys::{new_token, token_hash};
use crate::storage::{BuildTag, CurrentBuild, NewDevice, VerifyOutcome};
use crate::validate::{id as check_id, text as check_text};
use crate::web::WebState;
use axum::extract::{DefaultBodyLimit, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use bytes::Bytes;
use doorcode_core::codes::Code;
use doorcode_core::envelope::VerifyingKey;
use doorcode_core::wire::{
    self, ConfirmationBatch, ConfirmationResults, DeviceIn, DeviceOut, PublicKey, VerifyIn,
    VerifyOut, VerifyResult,
};
use std::sync::Arc;

const MAX_CONFIRMATIONS: usize = 1_000;

pub(super) fn server_keys(app: &App) -> Vec<PublicKey> {
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

/// Enroll a handset with a one-time enrollment code. After 10 failed codes
/// from one client address within a minute it answers 429 without looking
/// at the code (one more try every 6 s).
#[utoipa::path(post, path = "/v1/devices", tag = "device", request_body = DeviceIn,
    responses((status = 200, body = DeviceOut), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 429, body = ErrorBody, description = "too many failed enrollments from this address")))]
pub(super) async fn post_device(
    State(app): State<App>,
    Extension(web): Extension<Arc<WebState>>,
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
    let client = crate::web::client_ip(&ext).to_string();
    let taken = match web.limits.take(&ENROLLMENT, &client).await {
        Ok(t) => t,
        Err(wait) => {
            let wait = wait.as_secs().max(1);
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
    };
    let code = crate::app::normalize_enrollment(&d.enrollment_code);
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
            web.limits.refund(&taken).await;
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
            web.limits.refund(&taken).await;
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
pub(super) async fn get_manifest(
    State(app): State<App>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let date = match manifest_date(&app, q.as_deref()) {
        Ok(d) => d,
        Err(e) => {
            // Who asks is checked first, as on every device route: a bad
            // token hears 401 whatever its query.
            DeviceAuth::from_headers(&app, &headers).await?;
            return Err(e);
        }
    };
    // The token and the current build in one read (not the DeviceAuth
    // extractor, which would read the device alone first); a held build
    // that is current is answered 304 without its body being read.
    let if_none_match = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok());
    let client_holds = if_none_match.and_then(held_by_client);
    // Without a tag of its own, the read asks after the build this node
    // last served the device (app/envelopes.rs): a current one is served
    // from memory, its body not read again.
    let token_hash = DeviceAuth::token_hash(&headers)?;
    let cached = match client_holds {
        Some(_) => None,
        None => app.envelopes.get(&token_hash, date),
    };
    let held = client_holds.or_else(|| cached.as_ref().map(|(tag, _)| tag.clone()));
    let (auth, current) = DeviceAuth::with_manifest(&app, &token_hash, date, held.as_ref()).await?;
    let cache = (
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    let (tag, body) = match (current, held, cached) {
        (CurrentBuild::Held, Some(tag), Some((_, body))) => {
            app.metrics
                .manifests_from_cache
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            (tag, body)
        }
        (CurrentBuild::Held, Some(tag), None) => {
            let etag_value = HeaderValue::from_str(&etag(&tag)).map_err(ApiError::internal)?;
            return Ok((
                StatusCode::NOT_MODIFIED,
                [(header::ETAG, etag_value), cache],
            )
                .into_response());
        }
        (current, _, _) => {
            let m = app
                .manifest_for(auth.device(), date, current.stored())
                .await?;
            let tag = BuildTag {
                manifest_id: m.manifest_id,
                revision: m.revision,
            };
            let body = Bytes::from(m.envelope_json);
            app.envelopes
                .put(&token_hash, date, tag.clone(), body.clone());
            (tag, body)
        }
    };
    let etag = etag(&tag);
    let etag_value = HeaderValue::from_str(&etag).map_err(ApiError::internal)?;
    let matches =
        if_none_match.is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
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
        body,
    )
        .into_response())
}

/// A build's ETag, quoted: `"{manifest_id}:{revision}"`.
fn etag(tag: &BuildTag) -> String {
    format!("\"{}:{}\"", tag.manifest_id, tag.revision)
}

/// The first build named in an `If-None-Match` value, if any tag reads as one.
fn held_by_client(value: &str) -> Option<BuildTag> {
    value.split(',').find_map(|t| {
        let t = t.trim().strip_prefix('"')?.strip_suffix('"')?;
        let (id, rev) = t.rsplit_once(':')?;
        Some(BuildTag {
            manifest_id: id.to_string(),
            revision: rev.parse().ok()?,
        })
    })
}

/// `?date=YYYY-MM-DD`, else today in the depot's zone.
fn manifest_date(app: &App, q: Option<&str>) -> Result<chrono::NaiveDate, ApiError> {
    let mut date = None;
    for pair in query_pairs(q) {
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
    Ok(date.unwrap_or_else(|| {
        app.cfg
            .now()
            .with_timezone(&app.cfg.calendar.time_zone)
            .date_naive()
    }))
}

/// Upload signed confirmations; per-item results, idempotent by confirmation_id.
#[utoipa::path(post, path = "/v1/confirmations", tag = "device", security(("bearer" = [])), request_body = ConfirmationBatch,
    responses((status = 200, body = ConfirmationResults), (status = 400, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub(super) async fn post_confirmations(
    State(app): State<App>,
    auth: DeviceAuth,
    Body(b): Body<ConfirmationBatch>,
) -> Result<Json<ConfirmationResults>, ApiError> {
    let device = auth.device();
    if b.confirmations.len() > MAX_CONFIRMATIONS {
        return Err(ApiError::unprocessable(
            "batch_too_large",
            format!("at most {MAX_CONFIRMATIONS} confirmations per request"),
        ));
    }
    let results = app.ingest_batch(device, b.confirmations).await;
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
    Ok(Json(ConfirmationResults {
        results: results.into_iter().map(item_out).collect(),
    }))
}

/// One item's answer as the handset reads it.
fn item_out(r: ItemResult) -> wire::ItemResult {
    wire::ItemResult {
        index: r.index,
        confirmation_id: r.confirmation_id,
        status: r.status.into(),
        reason: r.reason.map(Into::into),
        permanent: r.permanent,
        disputed: r.disputed,
    }
}

/// From the door, the courier asks for the customer's notice again (the code
/// never arrived). Only for a parcel on this device's courier's current
/// route, within its day; one per parcel per 10 minutes, shared with the
/// customer's "send the notice again" on the tracking page.
#[utoipa::path(post, path = "/v1/parcels/{id}/resend", tag = "device", security(("bearer" = [])),
    params(("id" = String, Path, description = "parcel id")),
    responses((status = 202, description = "the notice is sent again (same code)"),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "the path is not a parcel id"),
        (status = 429, body = ErrorBody, description = "sent recently; Retry-After says when to ask again"),
        (status = 503, body = ErrorBody)))]
pub(super) async fn post_device_resend(
    State(app): State<App>,
    Extension(web): Extension<Arc<WebState>>,
    auth: DeviceAuth,
    PathArg(id): PathArg<String>,
) -> Result<Response, ApiError> {
    let device = auth.device();
    check_id(&id, "parcel id").map_err(|m| ApiError::unprocessable("invalid_path", m))?;
    let date = app.resend_day(device, &id).await?;
    if let Some(wait) = web.claim_resend(&id).await {
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
pub(super) async fn post_verify(
    State(app): State<App>,
    auth: DeviceAuth,
    Body(v): Body<VerifyIn>,
) -> Result<Json<VerifyOut>, ApiError> {
    let device = auth.device();
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
    let out = app.verify(device, &v.parcel_id, &code).await?;
    let (result, left) = match out {
        VerifyOutcome::Accepted => (VerifyResult::Accepted, None),
        VerifyOutcome::Rejected { attempts_left } => (VerifyResult::Rejected, Some(attempts_left)),
        VerifyOutcome::Locked | VerifyOutcome::Stale => (VerifyResult::Locked, Some(0)),
    };
    app.metrics.verify(result.as_str());
    tracing::info!(device_id = %device.device_id, parcel_id = %v.parcel_id, result = result.as_str(), "online verify");
    Ok(Json(VerifyOut {
        result,
        attempts_left: left,
    }))
}

/// The handset's endpoints: enrollment (an enrollment code), then
/// [`DeviceAuth`] for the rest.
pub fn router(confirmations_body_limit: usize) -> Router<App> {
    Router::new()
        .route("/v1/devices", post(post_device))
        .route("/v1/manifest", get(get_manifest))
        .route(
            "/v1/confirmations",
            post(post_confirmations).layer(DefaultBodyLimit::max(confirmations_body_limit)),
        )
        .route("/v1/verify", post(post_verify))
        .route("/v1/parcels/{id}/resend", post(post_device_resend))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_build_tag_round_trips_through_its_etag_and_odd_headers_read_as_none() {
        let tag = BuildTag {
            manifest_id: "m-0b1c".into(),
            revision: 7,
        };
        assert_eq!(etag(&tag), "\"m-0b1c:7\"");
        assert_eq!(held_by_client(&etag(&tag)), Some(tag.clone()));
        assert_eq!(
            held_by_client("W/\"x\", \"m-0b1c:7\""),
            Some(tag),
            "the first tag that reads as a build"
        );
        for odd in [
            "*",
            "",
            "m-0b1c:7",
            "\"m-0b1c\"",
            "\"m:-1\"",
            "\"m:99999999999999999999999\"",
        ] {
            assert_eq!(held_by_client(odd), None, "{odd}");
        }
    }
}
