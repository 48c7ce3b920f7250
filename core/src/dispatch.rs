//! A typed client of the dispatch API (parcels, routes, enrollments, the
//! day's close, disputes, reissue), on the [`crate::wire`] bodies. The
//! `doorcode` tools, the load generator and the tests share it; handsets
//! never need it, so it is behind the `dispatch` feature.

use crate::wire::{
    CloseOut, DisputesOut, EnrollmentIn, EnrollmentOut, ErrorBody, ParcelBatch, ParcelDetail,
    ParcelIn, ParcelResults, ReissueIn, RouteIn, RouteOut,
};
use chrono::NaiveDate;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;

/// Why a dispatch call did not give its answer.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// No answer: the server is down, unreachable or too slow.
    #[error("cannot reach the server at {url}: {message}")]
    Unreachable { url: String, message: String },
    /// The server said no, with its reason.
    #[error("{path}: HTTP {status} {}: {}", .body.error, .body.message)]
    Refused {
        path: String,
        status: u16,
        body: ErrorBody,
    },
    /// An answer that is not the documented body.
    #[error("{path}: unexpected answer (HTTP {status}): {message}")]
    BadAnswer {
        path: String,
        status: u16,
        message: String,
    },
}

impl DispatchError {
    /// The HTTP status of a refusal or an odd answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Unreachable { .. } => None,
            Self::Refused { status, .. } | Self::BadAnswer { status, .. } => Some(*status),
        }
    }
}

/// Dispatch calls with the dispatch (admin) token.
#[derive(Clone)]
pub struct DispatchClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl std::fmt::Debug for DispatchClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DispatchClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl DispatchClient {
    /// A client of the server at `base` (`http://host:port`, no trailing path).
    pub fn new(base: &str, token: &str) -> Result<Self, DispatchError> {
        // reqwest is built without a bundled crypto provider; use ring's.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| DispatchError::Unreachable {
                url: base.to_string(),
                message: e.to_string(),
            })?;
        Ok(Self::with_http(http, base, token))
    }

    /// The same on a client the caller configured (timeouts, pools).
    pub fn with_http(http: reqwest::Client, base: &str, token: &str) -> Self {
        Self {
            http,
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Create or update parcels (at most 10,000 per call); one result per item, in order.
    pub async fn parcels(&self, parcels: &[ParcelIn]) -> Result<ParcelResults, DispatchError> {
        #[derive(Serialize)]
        struct Batch<'a> {
            parcels: &'a [ParcelIn],
        }
        self.post("/v1/parcels", &Batch { parcels }).await
    }

    /// The same with an owned batch.
    pub async fn parcel_batch(&self, batch: &ParcelBatch) -> Result<ParcelResults, DispatchError> {
        self.post("/v1/parcels", batch).await
    }

    /// A parcel's state, day, attempt and history (never its code).
    pub async fn parcel(&self, parcel_id: &str) -> Result<ParcelDetail, DispatchError> {
        self.get(&format!("/v1/parcels/{parcel_id}")).await
    }

    /// Create or replace a courier's route for a day.
    pub async fn route(&self, route: &RouteIn) -> Result<RouteOut, DispatchError> {
        self.post("/v1/routes", route).await
    }

    /// A one-time enrollment code for a courier's handset.
    pub async fn enroll(&self, courier_id: &str) -> Result<EnrollmentOut, DispatchError> {
        let body = EnrollmentIn {
            courier_id: courier_id.to_string(),
        };
        self.post("/v1/enrollments", &body).await
    }

    /// End a day: undelivered parcels move to the next working day.
    pub async fn close_day(&self, date: NaiveDate) -> Result<CloseOut, DispatchError> {
        self.post(&format!("/v1/days/{date}/close"), &serde_json::json!({}))
            .await
    }

    /// One page of the day's disputes and signals.
    pub async fn disputes(
        &self,
        date: NaiveDate,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<DisputesOut, DispatchError> {
        let mut path = format!("/v1/disputes?date={date}");
        if let Some(l) = limit {
            path.push_str(&format!("&limit={l}"));
        }
        if let Some(c) = cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        self.get(&path).await
    }

    /// Void the current code and issue the next attempt.
    pub async fn reissue(
        &self,
        parcel_id: &str,
        requires_code: Option<bool>,
    ) -> Result<ParcelDetail, DispatchError> {
        let body = ReissueIn { requires_code };
        self.post(&format!("/v1/parcels/{parcel_id}/reissue"), &body)
            .await
    }

    /// The Prometheus text of `/metrics` (it needs the dispatch token).
    pub async fn metrics(&self) -> Result<String, DispatchError> {
        let path = "/metrics";
        let resp = self.send(self.http.get(self.url(path)), path).await?;
        let status = resp.status().as_u16();
        resp.text().await.map_err(|e| DispatchError::BadAnswer {
            path: path.into(),
            status,
            message: e.to_string(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, DispatchError> {
        let req = self.http.post(self.url(path)).json(body);
        self.answer(self.send(req, path).await?, path).await
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, DispatchError> {
        let req = self.http.get(self.url(path));
        self.answer(self.send(req, path).await?, path).await
    }

    /// Sends with the token; a non-2xx answer becomes [`DispatchError::Refused`].
    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        path: &str,
    ) -> Result<reqwest::Response, DispatchError> {
        let resp =
            req.bearer_auth(&self.token)
                .send()
                .await
                .map_err(|e| DispatchError::Unreachable {
                    url: self.base.clone(),
                    message: e.to_string(),
                })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let text = resp.text().await.unwrap_or_default();
        Err(match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => DispatchError::Refused {
                path: path.to_string(),
                status: status.as_u16(),
                body,
            },
            Err(_) => DispatchError::BadAnswer {
                path: path.to_string(),
                status: status.as_u16(),
                message: text.chars().take(200).collect(),
            },
        })
    }

    async fn answer<T: DeserializeOwned>(
        &self,
        resp: reqwest::Response,
        path: &str,
    ) -> Result<T, DispatchError> {
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| DispatchError::Unreachable {
            url: self.base.clone(),
            message: e.to_string(),
        })?;
        serde_json::from_slice(&bytes).map_err(|e| DispatchError::BadAnswer {
            path: path.to_string(),
            status,
            message: e.to_string(),
        })
    }
}
