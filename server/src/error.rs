//! The one error shape every endpoint answers with: `{error, message}`.
//! Messages never carry a code or a token; extractor rejections are
//! rewritten into this shape and any run of 6+ digits is masked.

use crate::app::ServiceError;
use crate::domain::verify::Refused;
use crate::storage::StorageError;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub error: &'static str,
    pub message: String,
}

/// The JSON error body, as clients read it.
pub use doorcode_core::wire::ErrorBody;

/// Masks digit runs of 6 or more, so a code echoed by a parser never leaves.
pub fn redact_digits(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.len() >= 6 {
            out.push_str("<digits>");
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for ch in s.chars() {
        if ch.is_ascii_digit() {
            run.push(ch);
        } else {
            flush(&mut run, &mut out);
            out.push(ch);
        }
    }
    flush(&mut run, &mut out);
    out
}

impl ApiError {
    pub fn new(status: StatusCode, error: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            error,
            message: redact_digits(&message.into()),
        }
    }
    pub fn bad_request(error: &'static str, m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, error, m)
    }
    pub fn unprocessable(error: &'static str, m: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, error, m)
    }
    pub fn not_found(error: &'static str, m: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, error, m)
    }
    pub fn conflict(error: &'static str, m: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, error, m)
    }
    pub fn unauthorized(m: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", m)
    }
    pub fn forbidden(error: &'static str, m: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, error, m)
    }
    /// A server fault: the detail goes to the log, not to the client.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %redact_digits(&detail.to_string()), "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal server error",
        )
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::NotFound(m) => Self::not_found("not_found", m),
            StorageError::Conflict(m) => Self::conflict("conflict", m),
            StorageError::Invalid(m) => Self::unprocessable("invalid", m),
            StorageError::Backend(m) => Self::internal(m),
        }
    }
}

/// The one place a service step's failure becomes an HTTP answer.
impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Storage(e) => e.into(),
            ServiceError::Refused(r) => refused(r),
            ServiceError::Changed => Self::conflict(
                "changed",
                "the parcel changed while checking; sync and try again",
            ),
            ServiceError::UnknownParcel => Self::not_found("unknown_parcel", "no such parcel"),
            ServiceError::UnknownTrackToken => {
                Self::not_found("unknown_token", "no parcel has this tracking link")
            }
            ServiceError::NoRoute(date) => Self::not_found(
                "no_manifest",
                format!("no route for this courier on {date}"),
            ),
            ServiceError::NoWorkingDay(m) => Self::unprocessable("no_working_day", m),
            ServiceError::Invalid { kind, message } => Self::unprocessable(kind, message),
            ServiceError::BadRequest { kind, message } => Self::bad_request(kind, message),
            ServiceError::Internal(detail) => Self::internal(detail),
        }
    }
}

/// A try refused before it counts.
fn refused(r: Refused) -> ApiError {
    match r {
        Refused::NotOnManifest => ApiError::not_found(
            "not_on_manifest",
            "this parcel is not on a manifest of this device",
        ),
        Refused::NotOnCurrentRoute => ApiError::conflict(
            "not_on_current_route",
            "this parcel is no longer on this courier's current route; sync the handset",
        ),
        Refused::Held => ApiError::conflict(
            "held",
            "the customer reported they did not order this parcel: do not hand it over \
             (record it failed with reason refused); this did not count as a try",
        ),
        Refused::NoCodeRequired => ApiError::conflict(
            "no_code_required",
            "this parcel is handed over without a code",
        ),
        Refused::NotYetValid(from) => ApiError::conflict(
            "code_not_yet_valid",
            format!(
                "this parcel's code is valid from {}; this did not count as a try",
                from.to_rfc3339()
            ),
        ),
        Refused::Expired(until) => ApiError::conflict(
            "code_expired",
            format!(
                "this parcel's code was valid until {}; this did not count as a try",
                until.to_rfc3339()
            ),
        ),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.error.to_string(),
            message: self.message,
        };
        (self.status, axum::Json(body)).into_response()
    }
}

/// A rejection's status, never a 5xx: a body the server could not read is the client's.
fn client_side(status: StatusCode) -> StatusCode {
    if status.is_server_error() {
        StatusCode::BAD_REQUEST
    } else {
        status
    }
}

/// `axum::Json` with rejections in our error shape (never a 5xx).
pub struct Body<T>(pub T);

impl<S, T> FromRequest<S> for Body<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<ObjectOnly<T>>::from_request(req, state).await {
            Ok(axum::Json(ObjectOnly(v))) => Ok(Body(v)),
            Err(rej) => {
                let status = rej.status();
                let error = match &rej {
                    JsonRejection::JsonDataError(_) => "invalid_body",
                    JsonRejection::JsonSyntaxError(_) => "malformed_json",
                    JsonRejection::MissingJsonContentType(_) => "unsupported_media_type",
                    _ if status == StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
                    _ => "bad_body",
                };
                Err(ApiError::new(client_side(status), error, rej.body_text()))
            }
        }
    }
}

/// A body's type, read only from a JSON object: serde would also take a
/// struct written as an array of its fields (`[[…]]` for `{"confirmations":
/// […]}`), which no client means and the OpenAPI document does not allow.
struct ObjectOnly<T>(T);

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for ObjectOnly<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Object<T>(std::marker::PhantomData<T>);
        impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for Object<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(self, map: M) -> Result<T, M::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(Object(std::marker::PhantomData))
            .map(ObjectOnly)
    }
}

/// A JSON body that may be left out: an empty body is `T::default()`; any
/// other body must be JSON (`application/json`) of `T`, with [`Body`]'s errors.
pub struct OptionalBody<T>(pub T);

impl<S, T> FromRequest<S> for OptionalBody<T>
where
    T: DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        let bytes =
            axum::body::Bytes::from_request(Request::from_parts(parts.clone(), body), state)
                .await
                .map_err(|rej| {
                    ApiError::new(client_side(rej.status()), "bad_body", rej.body_text())
                })?;
        if bytes.is_empty() {
            return Ok(OptionalBody(T::default()));
        }
        let req = Request::from_parts(parts, axum::body::Body::from(bytes));
        Body::<T>::from_request(req, state)
            .await
            .map(|Body(v)| OptionalBody(v))
    }
}

/// `axum::extract::Path` with rejections in our error shape.
pub struct PathArg<T>(pub T);

impl<S, T> FromRequestParts<S> for PathArg<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(PathArg(v)),
            Err(rej) => {
                let status = match &rej {
                    PathRejection::FailedToDeserializePathParams(_) => StatusCode::BAD_REQUEST,
                    _ => StatusCode::BAD_REQUEST,
                };
                Err(ApiError::new(status, "bad_path", rej.body_text()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::{Body, StatusCode};
    use axum::extract::{FromRequest, Request};

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Batch {
        confirmations: Vec<serde_json::Value>,
    }

    fn json(body: &'static str) -> Request {
        Request::builder()
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body))
            .unwrap()
    }

    #[tokio::test]
    async fn a_body_is_an_object_never_a_struct_written_as_an_array() {
        let e = Body::<Batch>::from_request(json("[[null, true, -1.9e-19]]"), &())
            .await
            .err()
            .unwrap();
        assert_eq!(
            (e.status, e.error),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_body")
        );
        let ok = Body::<Batch>::from_request(json(r#"{"confirmations": [1, 2]}"#), &())
            .await
            .unwrap();
        assert_eq!(ok.0.confirmations.len(), 2);
        let e = Body::<Batch>::from_request(json(r#"{"confirmations": [], "x": 1}"#), &())
            .await
            .err()
            .unwrap();
        assert_eq!(e.error, "invalid_body", "unknown fields are still refused");
        let e = Body::<Batch>::from_request(json("{\"confirmations\": ["), &())
            .await
            .err()
            .unwrap();
        assert_eq!(e.error, "malformed_json");
    }

    #[test]
    fn digits_are_masked() {
        assert_eq!(
            super::redact_digits("got 857759 here 12345"),
            "got <digits> here 12345"
        );
        assert_eq!(super::redact_digits("12345678"), "<digits>");
    }
}
