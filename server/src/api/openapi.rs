//! The OpenAPI document (`/openapi.json`): every endpoint's `#[utoipa::path]`,
//! the bearer scheme and the error answers every JSON operation can give.

use super::{customer, device, devices, dispatch, lifecycle, ops};
use crate::error::ErrorBody;
use axum::Json;
use utoipa::OpenApi;

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
        dispatch::post_parcels,
        dispatch::get_parcel,
        dispatch::post_route,
        dispatch::post_enrollment,
        dispatch::post_reissue,
        dispatch::post_close_day,
        dispatch::get_disputes,
        lifecycle::post_erase,
        lifecycle::get_stats,
        devices::get_devices,
        devices::post_revoke,
        device::post_device,
        device::get_manifest,
        device::post_confirmations,
        device::post_verify,
        device::post_device_resend,
        customer::get_track_json,
        crate::web::track::get_page,
        ops::get_keys,
        ops::healthz,
        ops::metrics,
        openapi_json
    ),
    components(schemas(ErrorBody))
)]
pub struct ApiDoc;

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "ops", responses((status = 200, description = "OpenAPI 3.1 document")))]
pub(super) async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
