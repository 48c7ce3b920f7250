//! Dispatch's view of the handsets (DESIGN "Who may change what"): list a
//! courier's devices, and revoke one (a lost or stolen handset). A revoked
//! token answers 401 on every device route at once, on every node: the
//! device extractor reads the token's row on each request, with no cache.

use super::auth::Dispatch;
use super::query_pairs;
use crate::app::App;
use crate::domain::Device;
use crate::error::{ApiError, ErrorBody, PathArg};
use crate::validate::id as check_id;
use axum::extract::{RawQuery, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

/// One handset, as dispatch sees it (no key, no token).
#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceInfo {
    pub device_id: String,
    pub name: String,
    pub courier_id: String,
    pub enrolled_at: DateTime<Utc>,
    /// The last authenticated request, to the hour.
    pub last_seen_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<Device> for DeviceInfo {
    fn from(d: Device) -> Self {
        Self {
            device_id: d.device_id,
            name: d.name,
            courier_id: d.courier_id,
            enrolled_at: d.enrolled_at,
            last_seen_at: d.last_seen_at,
            revoked_at: d.revoked_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DevicesOut {
    pub devices: Vec<DeviceInfo>,
}

/// A courier's handsets, oldest enrollment first, revoked ones included.
#[utoipa::path(get, path = "/v1/devices", tag = "dispatch", security(("bearer" = [])),
    params(("courier_id" = String, Query, description = "the courier whose handsets to list")),
    responses((status = 200, body = DevicesOut), (status = 400, body = ErrorBody)))]
pub(super) async fn get_devices(
    State(app): State<App>,
    _d: Dispatch,
    RawQuery(q): RawQuery,
) -> Result<Json<DevicesOut>, ApiError> {
    let bad = |m: String| ApiError::bad_request("bad_query", m);
    let mut courier = None;
    for pair in query_pairs(q.as_deref()) {
        match pair {
            ("courier_id", v) => {
                check_id(v, "courier_id").map_err(bad)?;
                courier = Some(v.to_string());
            }
            _ => return Err(bad("only ?courier_id=C is understood".into())),
        }
    }
    let courier = courier.ok_or_else(|| bad("?courier_id= is required".into()))?;
    let devices = app.storage.devices_of_courier(&courier).await?;
    Ok(Json(DevicesOut {
        devices: devices.into_iter().map(DeviceInfo::from).collect(),
    }))
}

/// Revoke a handset: from now on its token answers 401 on every device
/// route and it gets no manifest builds. Revoking again changes nothing
/// (the first revocation's time stands).
#[utoipa::path(post, path = "/v1/devices/{device_id}/revoke", tag = "dispatch", security(("bearer" = [])),
    params(("device_id" = String, Path, description = "the device to revoke")),
    responses((status = 200, body = DeviceInfo), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn post_revoke(
    State(app): State<App>,
    _d: Dispatch,
    PathArg(id): PathArg<String>,
) -> Result<Json<DeviceInfo>, ApiError> {
    check_id(&id, "device id").map_err(|m| ApiError::unprocessable("invalid_path", m))?;
    if !app.storage.revoke_device(&id, app.cfg.now()).await? {
        return Err(ApiError::not_found("unknown_device", "no such device"));
    }
    let d = app
        .storage
        .device(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("unknown_device", "no such device"))?;
    tracing::info!(device_id = %id, courier_id = %d.courier_id, "device revoked");
    Ok(Json(d.into()))
}

pub fn router() -> Router<App> {
    Router::new()
        .route("/v1/devices", get(get_devices))
        .route("/v1/devices/{device_id}/revoke", post(post_revoke))
}
