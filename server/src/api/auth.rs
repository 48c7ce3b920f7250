//! The auth proofs: axum extractors a handler takes to say who may call it.
//! Their fields are private, so outside this module the only way to get one
//! is to extract it from a request that carries the right token.

use crate::app::App;
use crate::error::ApiError;
use crate::keys::token_hash;
use crate::storage::{BuildTag, CurrentBuild, Device};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use chrono::NaiveDate;
use doorcode_core::codes::ct_eq;

fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    let v = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer token"))?;
    v.strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= 200)
        .ok_or_else(|| ApiError::unauthorized("expected Authorization: Bearer <token>"))
}

/// A request made with the dispatch (admin) token.
pub struct Dispatch(());

impl FromRequestParts<App> for Dispatch {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, ApiError> {
        let h = token_hash(bearer(&parts.headers)?);
        if ct_eq(h.as_bytes(), app.admin_hash.as_bytes()) {
            Ok(Dispatch(()))
        } else {
            Err(ApiError::unauthorized("not a dispatch token"))
        }
    }
}

/// A request made with an enrolled, unrevoked device's token: the device.
pub struct DeviceAuth(Device);

impl DeviceAuth {
    /// The device that made the request.
    pub fn device(&self) -> &Device {
        &self.0
    }

    /// The hash of the request's bearer token (401 without one), which
    /// storage and the envelope cache know a device by.
    pub(super) fn token_hash(headers: &HeaderMap) -> Result<String, ApiError> {
        Ok(token_hash(bearer(headers)?))
    }

    /// The device of a request with these headers.
    pub(super) async fn from_headers(app: &App, headers: &HeaderMap) -> Result<Self, ApiError> {
        let h = token_hash(bearer(headers)?);
        Self::admit(app, app.storage.device_by_token(&h).await?).await
    }

    /// The device of a manifest pull and its current manifest for `date`,
    /// from one storage read: a 304 needs nothing more. The same checks as
    /// every device request, on the row read now (a revocation counts at once).
    /// `token_hash` is [`DeviceAuth::token_hash`] of the request.
    pub(super) async fn with_manifest(
        app: &App,
        token_hash: &str,
        date: NaiveDate,
        held: Option<&BuildTag>,
    ) -> Result<(Self, CurrentBuild), ApiError> {
        let pull = crate::storage::Pull {
            token_hash,
            date,
            held,
        };
        let (device, manifest) = match app.storage.device_with_manifest(pull).await? {
            Some((d, m)) => (Some(d), m),
            None => (None, CurrentBuild::Missing),
        };
        Ok((Self::admit(app, device).await?, manifest))
    }

    async fn admit(app: &App, device: Option<Device>) -> Result<Self, ApiError> {
        let Some(d) = device else {
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

impl FromRequestParts<App> for DeviceAuth {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, ApiError> {
        Self::from_headers(app, &parts.headers).await
    }
}
