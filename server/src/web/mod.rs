//! Server-rendered web pages: the customer's tracking page (`/track/{token}`)
//! and the dispatcher's board (`/board`). No framework: HTML strings, one small
//! stylesheet and one small script, both served from this binary.
//!
//! Every page answers with a strict CSP (`default-src 'self'`, no inline
//! script or style), `frame-ancestors 'none'` + `X-Frame-Options: DENY`,
//! `Referrer-Policy: no-referrer`, `X-Content-Type-Options: nosniff` and
//! `Cache-Control: no-store`.
//!
//! Abuse limits and board sessions live in the database, shared by every
//! node (`crate::limit`, rules in `crate::domain::limits`): track lookups
//! per client (30 per minute), resends (one per parcel per 10 minutes, 30
//! per minute for the whole depot), board sign-ins per client (10 per
//! minute) and failed enrollments per client (10 per minute). "Client" is
//! the address `crate::client_addr` resolves (behind `--trusted-proxies`,
//! the address the proxy saw), an IPv6 client counted per /64.

pub mod board;
pub mod track;

use crate::app::App;
use crate::limit::Limits;
use axum::Router;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

const CSS: &str = include_str!("assets/web.css");
const BOARD_JS: &str = include_str!("assets/board.js");

pub(crate) const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'";

/// What the web pages hold besides [`App`]: the shared limits and the key
/// of the tracking page's form tokens. Nothing in it is per process state a
/// request depends on, so any node can answer any request.
pub struct WebState {
    pub(crate) limits: Limits,
    /// HMAC key for the tracking page's form tokens, derived from the code
    /// key. Stateless tokens under a key every node already shares are
    /// simpler than a row per page view (no write on a GET, nothing an
    /// outsider's page views add to a table) and than a secret kept in the
    /// database (a copy of the database alone cannot forge them).
    pub(crate) form_key: ring::hmac::Key,
}

impl WebState {
    /// Limit refusals are counted in `metrics`.
    pub fn new(
        storage: Arc<dyn crate::storage::Storage>,
        metrics: Arc<crate::metrics::Metrics>,
        code_key: &doorcode_core::codes::CodeKey,
    ) -> Self {
        let form = code_key.derive_subkey("doorcode:form-token:v1");
        Self {
            limits: Limits::new(storage, metrics),
            form_key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &form),
        }
    }

    /// See [`Limits::claim_resend`].
    pub async fn claim_resend(&self, parcel_id: &str) -> Option<Duration> {
        self.limits.claim_resend(parcel_id).await
    }
}

/// The client's rate-limit key: the address `client_addr::layer` resolved
/// (else the TCP peer, else loopback for in-process calls without one), an
/// IPv6 address reduced to its /64.
pub(crate) fn client_ip(req_ext: &axum::http::Extensions) -> IpAddr {
    let ip = req_ext
        .get::<crate::client_addr::ClientAddr>()
        .map(|c| c.0)
        .or_else(|| req_ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()))
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    crate::client_addr::limit_key(ip)
}

/// HTML escaping for text and attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// A POST is same-origin when its `Origin` (or, without one or when it is
/// `null` as browsers send it under `Referrer-Policy: no-referrer`,
/// `Sec-Fetch-Site`) says so. Requests with neither (old clients, curl) rely
/// on the form token alone.
pub(crate) fn same_origin(h: &HeaderMap) -> bool {
    if let Some(o) = h.get(header::ORIGIN).filter(|o| o.as_bytes() != b"null") {
        let Some(host) = h.get(header::HOST).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let Ok(o) = o.to_str() else { return false };
        let rest = o
            .strip_prefix("http://")
            .or_else(|| o.strip_prefix("https://"));
        return rest == Some(host);
    }
    match h.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        Some(s) => s == "same-origin" || s == "none",
        None => true,
    }
}

/// A whole page: `lang`, viewport, one stylesheet, optional script.
pub(crate) fn page(title: &str, body: &str, script: bool) -> String {
    let js = if script {
        "<script src=\"/static/board.js\" defer></script>"
    } else {
        ""
    };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<meta name=\"referrer\" content=\"no-referrer\"><meta name=\"robots\" content=\"noindex\">\
<title>{t}</title><link rel=\"stylesheet\" href=\"/static/web.css\">{js}</head>\
<body>{body}</body></html>\n",
        t = esc(title)
    )
}

pub(crate) fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

/// The plain page for an unknown or expired link: it says nothing about why.
pub(crate) fn not_found_page() -> Response {
    html(
        StatusCode::NOT_FOUND,
        page(
            "Not found",
            "<header><p class=\"brand\">doorcode</p></header><main><h1>Page not found</h1>\
<p>This link does not lead to a page.</p></main><footer><p>doorcode</p></footer>",
            false,
        ),
    )
}

pub(crate) fn plain(status: StatusCode, title: &str, msg: &str) -> Response {
    html(
        status,
        page(
            title,
            &format!(
                "<header><p class=\"brand\">doorcode</p></header><main><h1>{}</h1><p>{}</p></main>\
<footer><p>doorcode</p></footer>",
                esc(title),
                esc(msg)
            ),
            false,
        ),
    )
}

/// Security headers on every web response (pages, fragments, assets).
pub(crate) async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

fn asset(ct: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(ct)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            ),
        ],
        body,
    )
        .into_response()
}

/// The web routes, to merge into the API router (which adds logging by
/// route template, timeouts and body limits).
pub fn routes(web: Arc<WebState>) -> Router<App> {
    Router::new()
        .route("/track/{token}", get(track::get_page))
        .route("/track/{token}/resend", post(track::post_resend))
        .route("/track/{token}/not-mine", post(track::post_not_mine))
        .route("/board", get(board::get_board))
        .route("/board/live", get(board::get_live))
        .route("/board/login", post(board::post_login))
        .route("/board/logout", post(board::post_logout))
        .route("/board/reissue", post(board::post_reissue))
        .route("/board/enroll", post(board::post_enroll))
        .route("/board/close-day", post(board::post_close_day))
        .route(
            "/board/erase",
            get(board::lifecycle::get_erase).post(board::lifecycle::post_erase),
        )
        .route("/board/stats", get(board::lifecycle::get_stats))
        .route("/board/devices", get(board::devices::get_devices))
        .route("/board/revoke", post(board::devices::post_revoke))
        .route(
            "/static/web.css",
            get(|| async { asset("text/css; charset=utf-8", CSS) }),
        )
        .route(
            "/static/board.js",
            get(|| async { asset("text/javascript; charset=utf-8", BOARD_JS) }),
        )
        .layer(axum::middleware::from_fn(security_headers))
        .layer(axum::Extension(web))
}

/// Seconds as a short human duration ("9 minutes").
pub(crate) fn minutes_text(d: Duration) -> String {
    let m = d.as_secs().div_ceil(60).max(1);
    if m == 1 {
        "1 minute".into()
    } else {
        format!("{m} minutes")
    }
}
