//! Shared helpers for the integration tests: a real server on loopback, a
//! real HTTP client, the protocol vectors and handset-side signing.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::{DateTime, NaiveDate, Utc};
use doorcode_core::codes::CodeKey;
use doorcode_core::confirmation::{Confirmation, FailReason, Outcome, Verified};
use doorcode_core::envelope::{Envelope, SigningKey, VerifyingKey};
use doorcode_core::manifest::{Manifest, open_manifest};
use doorcode_server::{Config, ServerHandle};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub mod board;
pub mod dump;
pub mod migrations;
pub mod net;
pub mod pg;
pub mod providers;

/// The Standard Webhooks secret the tests' webhook channels sign with.
pub const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Two tests of one async body taking `Option<&PgSchema>`: `$sqlite` on
/// SQLite (`None`), `$postgres` on a fresh PostgreSQL schema, dropped after
/// (SKIPPED outside CI when PostgreSQL is not reachable, see `pg`).
#[allow(unused_macros)]
macro_rules! on_both_backends {
    ($body:ident: $sqlite:ident, $postgres:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $sqlite() {
            $body(None).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $postgres() {
            let Some(pg) = $crate::support::pg::fresh_schema(stringify!($body)).await else {
                return;
            };
            $body(Some(&pg)).await;
            pg.drop_schema().await;
        }
    };
}
#[allow(unused_imports)]
pub(crate) use on_both_backends;

/// A port nothing listens on now (for a `doorcode serve` process to bind).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn vectors() -> Value {
    let path = std::env::var("DOORCODE_VECTORS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors/protocol-v1.json")
        });
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("vectors at {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

pub fn vector_key() -> CodeKey {
    CodeKey::from_file_text(vectors()["code_key_hex"].as_str().unwrap()).unwrap()
}

/// The vectors' code of `parcel` for `date`'s `attempt`, as digits.
pub fn code(parcel: &str, date: &str, attempt: u32) -> String {
    doorcode_core::codes::derive_code(&vector_key(), parcel, d(date), attempt, 6)
        .unwrap()
        .expose()
        .to_string()
}

/// The code with every digit shifted: always wrong.
pub fn wrong(code: &str) -> String {
    code.chars()
        .map(|c| char::from(b'0' + (c as u8 - b'0' + 5) % 10))
        .collect()
}

/// `text` must not hold `secret`; a failure says `what` and shows the
/// first lines that hold it.
pub fn assert_absent(text: &str, secret: &str, what: &str) {
    assert!(
        !text.contains(secret),
        "{what}: {}",
        text.lines()
            .filter(|l| l.contains(secret))
            .take(3)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The token of a tracking link: its last path segment.
pub fn track_token(url: &Value) -> String {
    url.as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string()
}

/// The response's body as text.
pub async fn send_text(req: reqwest::RequestBuilder) -> String {
    req.send().await.unwrap().text().await.unwrap()
}

pub fn d(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

pub fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// A config on a fresh data dir with the vectors' code key preset and the clock pinned.
pub fn config(dir: &Path, now: &str) -> Config {
    std::fs::write(
        dir.join("code-key"),
        format!("{}\n", vectors()["code_key_hex"].as_str().unwrap()),
    )
    .unwrap();
    let mut cfg = Config::new(dir, "127.0.0.1:0".parse().unwrap());
    let now = t(now);
    cfg.clock = Arc::new(move || now);
    cfg.notice_poll = Duration::from_millis(50);
    cfg
}

/// A server in-process on a fresh data dir, its clock pinned at `now`
/// (see `config`); the dir lives as long as the returned guard.
pub async fn serve(now: &str) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let s = start(config(dir.path(), now)).await;
    (dir, s)
}

pub struct Server {
    pub handle: ServerHandle,
    pub url: String,
    pub admin: String,
    pub http: reqwest::Client,
    pub dir: PathBuf,
}

pub async fn start(cfg: Config) -> Server {
    let dir = cfg.data_dir.clone();
    let handle = doorcode_server::start(cfg).await.unwrap();
    let admin = handle
        .admin_token
        .clone()
        .expect("first start prints the admin token");
    Server {
        url: handle.url(),
        admin,
        http: reqwest::Client::new(),
        handle,
        dir,
    }
}

impl Server {
    /// A request with this server's URL in front of `path`.
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.url))
    }

    async fn status_json(r: reqwest::RequestBuilder) -> (u16, Value) {
        let r = r.send().await.unwrap();
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn admin_post(&self, path: &str, body: Value) -> (u16, Value) {
        self.post_as(&self.admin, path, body).await
    }

    /// `admin_post` that must answer 200; the answer.
    pub async fn admin_ok(&self, path: &str, body: Value) -> Value {
        let (st, v) = self.admin_post(path, body).await;
        assert_eq!(st, 200, "{path}: {v}");
        v
    }

    pub async fn admin_get(&self, path: &str) -> (u16, Value) {
        self.get_as(&self.admin, path).await
    }

    pub async fn post_as(&self, token: &str, path: &str, body: Value) -> (u16, Value) {
        Self::status_json(
            self.request(reqwest::Method::POST, path)
                .bearer_auth(token)
                .json(&body),
        )
        .await
    }

    pub async fn get_as(&self, token: &str, path: &str) -> (u16, Value) {
        Self::status_json(self.request(reqwest::Method::GET, path).bearer_auth(token)).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        Self::status_json(self.request(reqwest::Method::GET, path)).await
    }

    /// One parcel (as the dispatch API takes it) alone on courier's route
    /// `route` for `date`, at the parcel's address; both must answer 200.
    pub async fn one_parcel_route(&self, parcel: Value, route: &str, courier: &str, date: &str) {
        let (id, address) = (parcel["parcel_id"].clone(), parcel["address"].clone());
        self.admin_ok("/v1/parcels", json!({ "parcels": [parcel] }))
            .await;
        self.admin_ok(
            "/v1/routes",
            json!({"route_id": route, "courier_id": courier, "delivery_date": date,
                "stops": [{"stop_id": "S-1", "address": address, "parcel_ids": [id]}]}),
        )
        .await;
    }

    /// The handset's manifest request for `date`, sent.
    pub async fn manifest_response(&self, h: &Handset, date: &str) -> reqwest::Response {
        self.request(reqwest::Method::GET, &format!("/v1/manifest?date={date}"))
            .bearer_auth(&h.token)
            .send()
            .await
            .unwrap()
    }

    /// The handset's manifest for `date`: must answer 200, opened with the server's keys.
    pub async fn manifest(&self, h: &Handset, date: &str) -> Manifest {
        let r = self.manifest_response(h, date).await;
        assert_eq!(r.status(), 200);
        open_manifest(&r.json().await.unwrap(), &self.server_keys().await).unwrap()
    }

    /// Uploads envelopes as the handset: must answer 200; the per-item results.
    pub async fn upload(&self, h: &Handset, envs: Vec<Value>) -> Vec<Value> {
        let (st, v) = self
            .post_as(
                &h.token,
                "/v1/confirmations",
                json!({"confirmations": envs}),
            )
            .await;
        assert_eq!(st, 200, "{v}");
        v["results"].as_array().unwrap().clone()
    }

    /// The `/metrics` text, as dispatch.
    pub async fn metrics(&self) -> String {
        send_text(
            self.request(reqwest::Method::GET, "/metrics")
                .bearer_auth(&self.admin),
        )
        .await
    }

    pub async fn server_keys(&self) -> Vec<VerifyingKey> {
        let (s, v) = self.get("/.well-known/doorcode-keys").await;
        assert_eq!(s, 200);
        v["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| {
                assert_eq!(k["alg"], "Ed25519");
                VerifyingKey::from_b64(
                    k["kid"].as_str().unwrap(),
                    k["public_key"].as_str().unwrap(),
                )
                .unwrap()
            })
            .collect()
    }

    /// Enroll a handset for a courier; returns (device key, device token).
    pub async fn enroll(&self, courier: &str) -> Handset {
        let (s, e) = self
            .admin_post("/v1/enrollments", json!({"courier_id": courier}))
            .await;
        assert_eq!(s, 200, "{e}");
        let probe = SigningKey::generate("probe").unwrap();
        let public = probe.public_key().public_b64();
        let (s, dev) = self
            .post_as("", "/v1/devices", json!({"enrollment_code": e["enrollment_code"].as_str().unwrap().to_lowercase().replace('-', " "), "device_public_key": public, "device_name": "test phone"}))
            .await;
        assert_eq!(s, 200, "{dev}");
        let device_id = dev["device_id"].as_str().unwrap().to_string();
        let key = SigningKey::from_seed(device_id.clone(), *probe.seed()).unwrap();
        Handset {
            device_id,
            token: dev["device_token"].as_str().unwrap().to_string(),
            key,
            seq: 0,
        }
    }

    /// Notice files written so far, in order.
    pub fn notice_files(&self) -> Vec<Value> {
        let dir = self.dir.join("notices");
        let mut paths: Vec<_> = match std::fs::read_dir(&dir) {
            Ok(r) => r
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect(),
            Err(_) => Vec::new(),
        };
        paths.sort();
        paths
            .iter()
            .map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap())
            .collect()
    }

    /// Wait until the notice outbox has nothing pending.
    pub async fn wait_outbox_empty(&self) {
        for _ in 0..200 {
            let m = self.metrics().await;
            if m.contains("doorcode_notice_outbox{state=\"pending\"} 0") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the notice outbox did not drain");
    }

    /// Wait until at least `n` notice files exist.
    pub async fn wait_notices(&self, n: usize) -> Vec<Value> {
        for _ in 0..200 {
            let v = self.notice_files();
            if v.len() >= n {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("expected {n} notices, have {}", self.notice_files().len());
    }
}

pub struct Handset {
    pub device_id: String,
    pub token: String,
    pub key: SigningKey,
    pub seq: u64,
}

pub struct Door<'a> {
    pub manifest_id: &'a str,
    pub revision: u64,
    pub date: &'a str,
}

impl<'a> Door<'a> {
    /// The door of a manifest for `date`.
    pub fn of(m: &'a Manifest, date: &'a str) -> Self {
        Door {
            manifest_id: &m.manifest_id,
            revision: m.revision,
            date,
        }
    }
}

impl Handset {
    /// A fresh delivered confirmation without a code; tests adjust fields, then `sign`.
    pub fn conf(
        &mut self,
        door: &Door<'_>,
        parcel: &str,
        attempt: u32,
        recorded_at: &str,
    ) -> Confirmation {
        self.seq += 1;
        Confirmation {
            format: 1,
            confirmation_id: uuid::Uuid::new_v4(),
            device_id: self.device_id.clone(),
            seq: self.seq,
            manifest_id: door.manifest_id.to_string(),
            revision: door.revision,
            parcel_id: parcel.to_string(),
            delivery_date: d(door.date),
            attempt,
            outcome: Outcome::Delivered,
            reason: None,
            code: None,
            verified: Verified::None,
            failed_attempts: 0,
            recorded_at: t(recorded_at),
            since_sync_ms: 1000,
        }
    }

    /// A delivered confirmation with a code checked offline.
    pub fn delivered(
        &mut self,
        door: &Door<'_>,
        parcel: &str,
        attempt: u32,
        code: &str,
        at: &str,
    ) -> Confirmation {
        let mut c = self.conf(door, parcel, attempt, at);
        c.code = Some(doorcode_core::codes::Code::new(code).unwrap());
        c.verified = Verified::Offline;
        c
    }

    /// A delivered confirmation with the parcel's right code for the door's day.
    pub fn delivered_right(
        &mut self,
        door: &Door<'_>,
        parcel: &str,
        attempt: u32,
        at: &str,
    ) -> Confirmation {
        let right = code(parcel, door.date, attempt);
        self.delivered(door, parcel, attempt, &right, at)
    }

    /// A failed confirmation.
    pub fn failed(
        &mut self,
        door: &Door<'_>,
        parcel: &str,
        attempt: u32,
        reason: FailReason,
        at: &str,
    ) -> Confirmation {
        let mut c = self.conf(door, parcel, attempt, at);
        c.outcome = Outcome::Failed;
        c.reason = Some(reason);
        c
    }

    pub fn sign(&self, c: &Confirmation) -> Envelope {
        c.seal(&self.key).unwrap()
    }
}
