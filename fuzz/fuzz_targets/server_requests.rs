//! The server's request bodies, paths and queries: the real axum router on a
//! real SQLite file, seeded with a courier, a route for the day with parcels,
//! an enrolled device and a board session, so fuzz input gets past
//! authentication into every handler. Whatever arrives, the answer is never a
//! 5xx or a panic, an API error keeps the `{error, message}` shape, and no
//! answer carries the dispatch or the device token.
//!
//! Placeholders in the fuzz body are replaced before sending, so the seeds
//! (and the fuzzer) can use state it cannot guess: `{{CSRF}}` (the board
//! session's form token), `{{DEVICE}}` (the enrolled device id), `{{TRACK}}`
//! (a parcel's track token) and `{{T}}` (that tracking page's resend token).
#![no_main]

use arbitrary::Arbitrary;
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode, header};
use chrono::{DateTime, TimeZone as _, Utc};
use doorcode_core::envelope::SigningKey;
use doorcode_server::{Config, ServerHandle};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use tower::ServiceExt as _;

mod scratch;

/// The protocol vectors' code key, so seeds can carry a right code.
const CODE_KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const DEVICE_SEED: [u8; 32] = [0x42; 32];

#[derive(Debug, Arbitrary)]
struct Input {
    /// Which endpoint (see `OPS`).
    op: u8,
    /// Bit 0-1: content type (right, text/plain, none, the other one);
    /// bit 2: a cross-site Origin; bit 3: a fresh client address (past the
    /// per-address limits) instead of the shared one.
    flags: u8,
    body: Vec<u8>,
}

#[derive(Clone, Copy)]
enum Auth {
    None,
    Admin,
    Device,
    Board,
}

#[derive(Clone, Copy)]
enum Kind {
    /// The body is sent as it is.
    Json,
    Form,
    /// The body is a confirmation body the enrolled device signs.
    SignedConfirmation,
    /// The body is a path segment in `{}` (percent-encoded), no body sent.
    Path,
    /// The body is the query string, no body sent.
    Query,
}

struct Op {
    method: Method,
    path: &'static str,
    auth: Auth,
    kind: Kind,
}

const fn op(method: Method, path: &'static str, auth: Auth, kind: Kind) -> Op {
    Op {
        method,
        path,
        auth,
        kind,
    }
}

const fn post(path: &'static str, auth: Auth, kind: Kind) -> Op {
    op(Method::POST, path, auth, kind)
}

const fn get(path: &'static str, auth: Auth, kind: Kind) -> Op {
    op(Method::GET, path, auth, kind)
}

const OPS: &[Op] = &[
    post("/v1/parcels", Auth::Admin, Kind::Json),
    post("/v1/routes", Auth::Admin, Kind::Json),
    post("/v1/enrollments", Auth::Admin, Kind::Json),
    post("/v1/devices", Auth::None, Kind::Json),
    post("/v1/confirmations", Auth::Device, Kind::Json),
    post("/v1/confirmations", Auth::Device, Kind::SignedConfirmation),
    post("/v1/verify", Auth::Device, Kind::Json),
    post("/v1/parcels/{}/reissue", Auth::Admin, Kind::Path),
    post("/v1/days/{}/close", Auth::Admin, Kind::Path),
    get("/v1/manifest", Auth::Device, Kind::Query),
    get("/v1/parcels/{}", Auth::Admin, Kind::Path),
    get("/v1/track/{}", Auth::None, Kind::Path),
    get("/track/{}", Auth::None, Kind::Path),
    post("/board/login", Auth::None, Kind::Form),
    post("/board/reissue", Auth::Board, Kind::Form),
    post("/board/enroll", Auth::Board, Kind::Form),
    post("/board/close-day", Auth::Board, Kind::Form),
    post("/board/logout", Auth::Board, Kind::Form),
    post("/track/{{TRACK}}/resend", Auth::None, Kind::Form),
    get("/board", Auth::Board, Kind::Query),
    get("/board/live", Auth::Board, Kind::Query),
];

struct Fixture {
    rt: tokio::runtime::Runtime,
    seeded: Seeded,
    clients: AtomicU32,
    _dir: tempfile::TempDir,
}

/// The vectors' delivery day, mid-morning in the depot (UTC).
fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap()
}

async fn send(router: &Router, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = axum::body::to_bytes(resp.into_body(), 16 * 1024 * 1024)
        .await
        .unwrap();
    (status, headers, body.to_vec())
}

async fn json_call(router: &Router, path: &str, token: Option<&str>, body: Value) -> Value {
    let mut b = Request::post(path).header(header::CONTENT_TYPE, "application/json");
    if let Some(t) = token {
        b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let (status, _, body) = send(router, b.body(Body::from(body.to_string())).unwrap()).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{path}: {}",
        String::from_utf8_lossy(&body)
    );
    serde_json::from_slice(&body).unwrap()
}

/// The value of the first `name="NAME" value="..."` in a page.
fn field(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).unwrap() + marker.len();
    let len = html[start..].find('"').unwrap();
    html[start..start + len].to_string()
}

async fn setup(dir: &std::path::Path) -> Seeded {
    std::fs::write(dir.join("code-key"), format!("{CODE_KEY_HEX}\n")).unwrap();
    let mut cfg = Config::new(dir, "127.0.0.1:0".parse().unwrap());
    cfg.clock = Arc::new(now);
    let server = doorcode_server::start(cfg).await.unwrap();
    let admin = server.admin_token.clone().unwrap();
    let web = Arc::new(doorcode_server::web::WebState::new(
        server.app.storage.clone(),
        server.app.metrics.clone(),
        &server.app.code_key,
    ));
    let router = doorcode_server::api::router(server.app.clone(), web);

    let parcels = json_call(
        &router,
        "/v1/parcels",
        Some(&admin),
        json!({"parcels": [
            {"parcel_id": "P-1001", "recipient": {"name": "J. Doe", "email": "j@example.com"},
             "address": "1 Example Street", "value": 120.0, "currency": "EUR"},
            {"parcel_id": "P-1002", "recipient": {"name": "A. Roe", "phone": "+442079460000"},
             "address": "2 Example Street", "value": 10.0, "currency": "EUR"}
        ]}),
    )
    .await;
    let track_url = parcels["results"][0]["track_url"].as_str().unwrap();
    let track = track_url.rsplit('/').next().unwrap().to_string();
    let enrollment = json_call(
        &router,
        "/v1/enrollments",
        Some(&admin),
        json!({"courier_id": "C-42"}),
    )
    .await;
    let probe = SigningKey::from_seed("probe", DEVICE_SEED).unwrap();
    let device = json_call(
        &router,
        "/v1/devices",
        None,
        json!({"enrollment_code": enrollment["enrollment_code"], "device_public_key": probe.public_key().public_b64(), "device_name": "fuzz phone"}),
    )
    .await;
    let device_id = device["device_id"].as_str().unwrap().to_string();
    let device_token = device["device_token"].as_str().unwrap().to_string();
    json_call(
        &router,
        "/v1/routes",
        Some(&admin),
        json!({"route_id": "R-7", "courier_id": "C-42", "delivery_date": "2026-11-23",
               "stops": [{"stop_id": "S-1", "address": "1 Example Street", "parcel_ids": ["P-1001"]},
                         {"stop_id": "S-2", "address": "2 Example Street", "parcel_ids": ["P-1002"]}]}),
    )
    .await;

    // A board session and its CSRF token.
    let login = Request::post("/board/login")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(format!("token={admin}")))
        .unwrap();
    let (status, headers, _) = send(&router, login).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let set_cookie = headers.get(header::SET_COOKIE).unwrap().to_str().unwrap();
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    let board = Request::get("/board")
        .header(header::COOKIE, &cookie)
        .body(Body::empty())
        .unwrap();
    let (status, _, page) = send(&router, board).await;
    assert_eq!(status, StatusCode::OK);
    let csrf = field(&String::from_utf8(page).unwrap(), "csrf");

    // The tracking page's resend token.
    let page = Request::get(format!("/track/{track}"))
        .body(Body::empty())
        .unwrap();
    let (status, _, page) = send(&router, page).await;
    assert_eq!(status, StatusCode::OK);
    let resend_t = field(&String::from_utf8(page).unwrap(), "t");

    Seeded {
        router,
        admin,
        device_key: SigningKey::from_seed(device_id.clone(), DEVICE_SEED).unwrap(),
        device_id,
        device_token,
        cookie,
        csrf,
        track,
        resend_t,
        _server: server,
    }
}

/// The server `setup` starts and what it seeded, as the fuzz input uses it.
struct Seeded {
    router: Router,
    admin: String,
    device_id: String,
    device_token: String,
    device_key: SigningKey,
    cookie: String,
    csrf: String,
    track: String,
    resend_t: String,
    _server: ServerHandle,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // SQLite syncs every write.
        let dir = scratch::dir("doorcode-fuzz-server");
        let seeded = rt.block_on(setup(dir.path()));
        Fixture {
            rt,
            seeded,
            clients: AtomicU32::new(0),
            _dir: dir,
        }
    })
}

fn replace(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

impl Seeded {
    fn fill(&self, b: &[u8]) -> Vec<u8> {
        let b = replace(b, b"{{CSRF}}", self.csrf.as_bytes());
        let b = replace(&b, b"{{DEVICE}}", self.device_id.as_bytes());
        let b = replace(&b, b"{{TRACK}}", self.track.as_bytes());
        replace(&b, b"{{T}}", self.resend_t.as_bytes())
    }
}

/// Percent-encodes everything but unreserved characters (and, in a query,
/// the `&` and `=` that give it structure), so any bytes make a valid URI.
fn encode(bytes: &[u8], query: bool) -> String {
    let mut s = String::with_capacity(bytes.len() * 3);
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (query && b"&=".contains(&b)) {
            s.push(char::from(b));
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

fuzz_target!(|input: Input| {
    let fixture = fixture();
    let f = &fixture.seeded;
    let op = &OPS[usize::from(input.op) % OPS.len()];
    let body = f.fill(&input.body);

    let mut path = op.path.replace("{{TRACK}}", &f.track);
    let mut payload = Vec::new();
    match op.kind {
        Kind::Json | Kind::Form => payload = body,
        Kind::SignedConfirmation => {
            let env = f
                .device_key
                .seal(doorcode_core::envelope::Context::Confirmation, &body);
            payload = serde_json::to_vec(&json!({"confirmations": [env]})).unwrap();
        }
        Kind::Path => path = path.replace("{}", &encode(&body, false)),
        Kind::Query => {
            if !body.is_empty() {
                path = format!("{path}?{}", encode(&body, true));
            }
        }
    }

    let mut req = Request::builder().method(op.method.clone()).uri(&path);
    let (right, other) = match op.kind {
        Kind::Form => ("application/x-www-form-urlencoded", "application/json"),
        _ => ("application/json", "application/x-www-form-urlencoded"),
    };
    if op.method == Method::POST {
        req = match input.flags & 3 {
            0 => req.header(header::CONTENT_TYPE, right),
            1 => req.header(header::CONTENT_TYPE, "text/plain"),
            2 => req,
            _ => req.header(header::CONTENT_TYPE, other),
        };
    }
    if input.flags & 4 != 0 {
        req = req
            .header(header::ORIGIN, "https://attacker.example")
            .header(header::HOST, "127.0.0.1");
    }
    let ip = if input.flags & 8 != 0 {
        let n = fixture.clients.fetch_add(1, Ordering::Relaxed);
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (n & 0x00ff_ffff)))
    } else {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    };
    req = req.extension(ConnectInfo(SocketAddr::new(ip, 40_000)));
    req = match op.auth {
        Auth::None => req,
        Auth::Admin => req.header(header::AUTHORIZATION, format!("Bearer {}", f.admin)),
        Auth::Device => req.header(header::AUTHORIZATION, format!("Bearer {}", f.device_token)),
        Auth::Board => req.header(header::COOKIE, &f.cookie),
    };
    let req = req.body(Body::from(payload)).unwrap();

    let (status, headers, answer) = fixture.rt.block_on(send(&f.router, req));
    let text = String::from_utf8_lossy(&answer);
    assert!(
        !status.is_server_error(),
        "{} {path} answered {status}: {text}",
        op.method
    );
    assert!(
        !text.contains(&f.admin),
        "{path} answered with the dispatch token"
    );
    assert!(
        !text.contains(&f.device_token),
        "{path} answered with the device token"
    );
    if path.starts_with("/v1/") && status.is_client_error() {
        let ct = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        assert_eq!(ct, Some("application/json"), "{path} {status}");
        let v: Value = serde_json::from_slice(&answer)
            .unwrap_or_else(|e| panic!("{path} {status}: {e}: {text}"));
        assert!(
            v["error"].is_string() && v["message"].is_string(),
            "{path} {status}: {text}"
        );
    }
});
