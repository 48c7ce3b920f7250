//! The sync client against an in-process HTTP fake: what it sends and how it
//! reads each answer. (The end-to-end tests against a real `doorcode serve`
//! live in `server/tests`.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use crate::confirmation::FailReason;
use crate::manifest::ManifestParcel;
use crate::secrets::{DEVICE_TOKEN, MemorySecretStore};
use crate::testkit::{FixedClock, ManifestSpec, TestDepot, parcel_id};
use std::sync::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One request the fake received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    authorization: Option<String>,
    body: Vec<u8>,
}

/// What the fake answers.
struct Answer {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    /// Leave out `Content-Length` and close the connection after the body.
    no_length: bool,
}

impl Answer {
    fn json(status: u16, body: serde_json::Value) -> Self {
        Self {
            status,
            headers: vec![("content-type", "application/json".into())],
            body: body.to_string().into_bytes(),
            no_length: false,
        }
    }

    fn empty(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            no_length: false,
        }
    }
}

type Handler = Arc<dyn Fn(&Seen) -> Answer + Send + Sync>;

/// A one-connection-per-request HTTP/1.1 server on loopback.
struct Fake {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Fake {
    async fn start(handler: impl Fn(&Seen) -> Answer + Send + Sync + 'static) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handler: Handler = Arc::new(handler);
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(serve_one(sock, handler.clone(), log.clone()));
            }
        });
        Self { url, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn serve_one(mut sock: tokio::net::TcpStream, handler: Handler, log: Arc<Mutex<Vec<Seen>>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        let Ok(n) = sock.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.lines();
    let mut first = lines.next().unwrap_or_default().split(' ');
    let (method, path) = (
        first.next().unwrap_or_default().to_string(),
        first.next().unwrap_or_default().to_string(),
    );
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    };
    let length: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let seen = Seen {
        method,
        path,
        authorization: header("authorization"),
        body: buf[head_end..head_end + length].to_vec(),
    };
    log.lock().unwrap().push(seen.clone());
    let a = handler(&seen);
    let mut out = format!("HTTP/1.1 {} Fake\r\nconnection: close\r\n", a.status);
    for (k, v) in &a.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if !a.no_length {
        out.push_str(&format!("content-length: {}\r\n", a.body.len()));
    }
    out.push_str("\r\n");
    let _ = sock.write_all(out.as_bytes()).await;
    let _ = sock.write_all(&a.body).await;
    let _ = sock.shutdown().await;
}

/// An enrolled handset holding today's manifest, pointed at `server`.
struct Courier {
    _dir: tempfile::TempDir,
    depot: TestDepot,
    spec: ManifestSpec,
    client: SyncClient,
}

fn courier(server: &str) -> Courier {
    let dir = tempfile::tempdir().unwrap();
    let depot = TestDepot::new();
    let h = depot
        .enrolled_handset(
            &dir.path().join("h.db"),
            Arc::new(MemorySecretStore::default()),
            FixedClock::at(Utc::now()),
            "d-1",
        )
        .unwrap();
    h.secrets().put(DEVICE_TOKEN, b"tok-1").unwrap();
    h.with_store(|s| s.set_server_url(server)).unwrap();
    let mut spec = ManifestSpec::today("d-1", 3, 2);
    spec.no_code_every = 6;
    // 32-bit tags: a wrong code never passes the offline check by chance.
    spec.tag_bits = 32;
    let mut m = depot.manifest(&spec);
    // An id that must be escaped in a URL path.
    let code = depot.code("P#7", spec.date, spec.attempt);
    m.stops[2].parcels[0] =
        ManifestParcel::with_code("P#7", 1, spec.date, &code, m.tag_bits).unwrap();
    h.install_manifest(&depot.seal_holding(&m, &[&parcel_id(1, 0)]))
        .unwrap();
    let cfg = SyncConfig {
        backoff_base: Duration::from_millis(1),
        reuse_connections: false,
        ..SyncConfig::default()
    };
    Courier {
        _dir: dir,
        depot,
        spec,
        client: SyncClient::with_config(Arc::new(h), cfg).unwrap(),
    }
}

#[tokio::test]
async fn resend_posts_to_the_parcels_resend_route_with_the_device_token() {
    let fake = Fake::start(|_| Answer::json(202, serde_json::json!({"status": "queued"}))).await;
    let c = courier(&fake.url);
    c.client.resend(&parcel_id(0, 0)).await.unwrap();
    c.client.resend("P#7").await.unwrap();
    let seen = fake.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].path, "/v1/parcels/P-0000-00/resend");
    assert_eq!(seen[0].authorization.as_deref(), Some("Bearer tok-1"));
    assert_eq!(seen[1].path, "/v1/parcels/P%237/resend");
}

#[tokio::test]
async fn resend_limit_and_refusals_are_clear_errors() {
    let fake = Fake::start(|s| {
        let refuse = |status, error, message| {
            Answer::json(
                status,
                serde_json::json!({"error": error, "message": message}),
            )
        };
        match s.path.as_str() {
            "/v1/parcels/P-0000-00/resend" => Answer {
                headers: vec![("retry-after", "420".into())],
                ..refuse(429, "rate_limited", "one resend per parcel per 10 minutes")
            },
            "/v1/parcels/P-0000-01/resend" => refuse(
                403,
                "not_on_route",
                "the parcel is not on your current route",
            ),
            "/v1/parcels/P-0001-01/resend" => {
                refuse(409, "delivered", "the parcel was already delivered")
            }
            "/v1/parcels/P%237/resend" => Answer::empty(404),
            _ => Answer::empty(503),
        }
    })
    .await;
    let c = courier(&fake.url);

    let e = c.client.resend(&parcel_id(0, 0)).await.unwrap_err();
    assert!(
        matches!(e, Error::ResendTooSoon { ref parcel_id, retry_after_s: Some(420) } if parcel_id == "P-0000-00"),
        "{e:?}"
    );
    let m = e.to_string();
    assert!(m.contains("10 minutes") && m.contains("420 s"), "{m}");
    assert!(!e.is_transient());

    let e = c.client.resend(&parcel_id(0, 1)).await.unwrap_err();
    assert!(
        matches!(e, Error::ResendRefused { status: 403, .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("current route") && e.to_string().contains("sync"));

    let e = c.client.resend(&parcel_id(1, 1)).await.unwrap_err();
    assert!(
        matches!(e, Error::ResendRefused { status: 409, .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("already delivered"), "{e}");

    // A 404 without a JSON body (a server without the route) is still clear.
    let e = c.client.resend("P#7").await.unwrap_err();
    assert!(
        matches!(e, Error::ResendRefused { status: 404, .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("does not offer"), "{e}");

    assert_eq!(fake.seen().len(), 4);
}

#[tokio::test]
async fn a_busy_server_is_not_asked_twice() {
    // A resend whose answer was lost would only meet the limit when retried.
    let fake = Fake::start(|_| Answer::empty(503)).await;
    let c = courier(&fake.url);
    let e = c.client.resend(&parcel_id(0, 0)).await.unwrap_err();
    assert!(matches!(e, Error::Server { status: 503, .. }), "{e:?}");
    assert!(e.is_transient());
    assert_eq!(fake.seen().len(), 1);
}

#[tokio::test]
async fn a_refused_token_and_no_network_are_their_own_errors() {
    let fake = Fake::start(|_| Answer::empty(401)).await;
    let c = courier(&fake.url);
    assert!(matches!(
        c.client.resend(&parcel_id(0, 0)).await,
        Err(Error::Unauthorized)
    ));
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let c = courier(&format!("http://{dead}"));
    let e = c.client.resend(&parcel_id(0, 0)).await.unwrap_err();
    assert!(matches!(e, Error::Offline(_)), "{e:?}");
}

#[tokio::test]
async fn resend_is_refused_here_first_where_it_cannot_help() {
    let fake = Fake::start(|_| Answer::empty(202)).await;
    let c = courier(&fake.url);
    let h = c.client.handset().clone();
    // Delivered, failed, held, locked, no code, unknown: nothing is sent.
    let done = parcel_id(0, 0);
    let code = c.depot.code(&done, c.spec.date, c.spec.attempt);
    h.verify(&done, code.expose()).unwrap();
    h.fail(&parcel_id(0, 1), FailReason::CustomerAbsent)
        .unwrap();
    let locked = parcel_id(1, 1);
    while !matches!(
        h.verify(&locked, "000000").unwrap(),
        VerifyOutcome::Locked { .. }
    ) {}
    type Want = fn(&Error) -> bool;
    let cases: Vec<(String, Want)> = vec![
        (done, |e| matches!(e, Error::AlreadyRecorded { .. })),
        (parcel_id(0, 1), |e| {
            matches!(e, Error::AlreadyRecorded { .. })
        }),
        (parcel_id(1, 0), |e| matches!(e, Error::Held(_))),
        (locked, |e| matches!(e, Error::Locked(_))),
        (parcel_id(2, 1), |e| matches!(e, Error::NoCodeRequired(_))),
        ("P-nope".into(), |e| matches!(e, Error::UnknownParcel(_))),
    ];
    for (pid, want) in cases {
        let e = c.client.resend(&pid).await.unwrap_err();
        assert!(want(&e), "{pid}: {e:?}");
    }
    assert!(fake.seen().is_empty(), "{:?}", fake.seen());
}

#[tokio::test]
async fn a_held_parcel_is_never_verified_online() {
    let fake = Fake::start(|_| Answer::json(200, serde_json::json!({"result": "accepted"}))).await;
    let c = courier(&fake.url);
    let held = parcel_id(1, 0);
    let code = c.depot.code(&held, c.spec.date, c.spec.attempt);
    assert!(matches!(
        c.client.verify(&held, code.expose()).await,
        Err(Error::Held(_))
    ));
    assert!(fake.seen().is_empty());
}

/// The manifest of `c`'s day, as `GET /v1/manifest` would serve it.
fn manifest_answer(env: &Envelope, etag: &str) -> Answer {
    Answer {
        status: 200,
        headers: vec![
            ("content-type", "application/json".into()),
            ("etag", etag.into()),
        ],
        body: serde_json::to_vec(env).unwrap(),
        no_length: false,
    }
}

#[tokio::test]
async fn a_conflicting_manifest_fails_the_sync_with_its_own_error() {
    let depot = TestDepot::new();
    let mut spec = ManifestSpec::today("d-1", 3, 2);
    spec.no_code_every = 6;
    spec.revision = 2;
    // Revision 2, built twice: the depot re-signed new salts without a new revision.
    let first = depot.seal(&depot.manifest(&spec));
    let second = depot.seal(&depot.manifest(&spec));
    let served = Arc::new(Mutex::new(first.clone()));
    let s2 = served.clone();
    let fake = Fake::start(move |s| {
        if s.path.starts_with("/v1/manifest") {
            manifest_answer(&s2.lock().unwrap(), "\"m:2\"")
        } else {
            Answer::json(200, serde_json::json!({"results": []}))
        }
    })
    .await;
    let c = courier(&fake.url);
    let date = Some(spec.date);
    let r = c.client.sync(date).await.unwrap();
    assert!(
        matches!(r.manifest, ManifestSync::Pulled { revision: 2, .. }),
        "{r:?}"
    );
    let r = c.client.sync(date).await.unwrap();
    assert!(
        matches!(r.manifest, ManifestSync::Unchanged { revision: Some(2) }),
        "{r:?}"
    );
    *served.lock().unwrap() = second;
    let r = c.client.sync(date).await.unwrap();
    match &r.manifest {
        ManifestSync::Failed { error } => {
            assert!(error.contains("different content"), "{error}")
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(!r.errors.is_empty());
    assert_eq!(
        c.client.handset().stops().unwrap().len(),
        3,
        "the held day stays"
    );
}

#[tokio::test]
async fn an_oversized_manifest_answer_is_refused_unread() {
    let huge = vec![b' '; MAX_MANIFEST_BYTES + 1];
    for no_length in [false, true] {
        let body = huge.clone();
        let fake = Fake::start(move |_| Answer {
            status: 200,
            headers: vec![("content-type", "application/json".into())],
            body: body.clone(),
            no_length,
        })
        .await;
        let c = courier(&fake.url);
        let e = c
            .client
            .pull_manifest(Utc::now().date_naive())
            .await
            .unwrap_err();
        assert!(
            matches!(e, Error::BadResponse(ref m) if m.contains("larger than")),
            "no_length {no_length}: {e:?}"
        );
    }
}

/// Keeps every progress report, in order.
#[derive(Default)]
struct Recorder(Mutex<Vec<SyncProgress>>);

impl SyncObserver for Recorder {
    fn on_progress(&self, p: &SyncProgress) {
        self.0.lock().unwrap().push(p.clone());
    }
}

/// A depot that accepts every confirmation and serves `env` as the manifest.
async fn accepting_depot(env: Envelope) -> Fake {
    Fake::start(move |s| {
        if s.path.starts_with("/v1/manifest") {
            return manifest_answer(&env, "\"m:1\"");
        }
        let batch: serde_json::Value = serde_json::from_slice(&s.body).unwrap();
        let n = batch["confirmations"].as_array().unwrap().len();
        let results: Vec<_> = (0..n)
            .map(|i| serde_json::json!({"index": i, "status": "accepted"}))
            .collect();
        Answer::json(200, serde_json::json!({ "results": results }))
    })
    .await
}

#[tokio::test]
async fn a_sync_reports_its_phases_and_n_of_m_uploaded_then_done() {
    let depot = TestDepot::new();
    let mut spec = ManifestSpec::today("d-1", 3, 2);
    spec.revision = 2;
    let fake = accepting_depot(depot.seal(&depot.manifest(&spec))).await;
    let c = courier(&fake.url);
    let c = Courier {
        client: SyncClient::with_config(
            c.client.handset().clone(),
            SyncConfig {
                batch_size: 2,
                ..SyncConfig::default()
            },
        )
        .unwrap(),
        ..c
    };
    let h = c.client.handset().clone();
    for pid in [
        parcel_id(0, 0),
        parcel_id(0, 1),
        parcel_id(1, 1),
        "P#7".into(),
    ] {
        h.fail(&pid, FailReason::CustomerAbsent).unwrap();
    }
    h.fail(&parcel_id(1, 0), FailReason::Refused).unwrap();
    let rec = Recorder::default();
    let report = c.client.sync_observed(Some(spec.date), &rec).await.unwrap();
    assert_eq!(report.uploaded, 5);
    let got = rec.0.into_inner().unwrap();
    let mut want = vec![
        SyncProgress::Started { date: spec.date },
        SyncProgress::ManifestPulled {
            manifest: ManifestSync::Pulled {
                revision: 2,
                stops: 3,
                parcels: 6,
            },
        },
    ];
    for done in [0, 2, 4, 5] {
        want.push(SyncProgress::Uploading { done, total: 5 });
    }
    want.push(SyncProgress::Done { report });
    assert_eq!(got, want);

    // Nothing waiting: no upload phase; still started, manifest, done.
    let rec = Recorder::default();
    c.client.sync_observed(Some(spec.date), &rec).await.unwrap();
    let got = rec.0.into_inner().unwrap();
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(matches!(
        got[1],
        SyncProgress::ManifestPulled {
            manifest: ManifestSync::Unchanged { .. }
        }
    ));
    assert!(matches!(got[2], SyncProgress::Done { .. }));
}

#[tokio::test]
async fn a_sync_that_cannot_run_reports_failed_last() {
    let fake = Fake::start(|_| Answer::empty(401)).await;
    let c = courier(&fake.url);
    let rec = Recorder::default();
    let e = c.client.sync_observed(None, &rec).await.unwrap_err();
    assert!(matches!(e, Error::Unauthorized));
    let got = rec.0.into_inner().unwrap();
    assert!(
        matches!(got.first(), Some(SyncProgress::Started { .. })),
        "{got:?}"
    );
    assert!(
        matches!(got.last(), Some(SyncProgress::Failed { error }) if error.contains("enroll the handset again")),
        "{got:?}"
    );
    // Not enrolled at all: the one report is the failure.
    let dir = tempfile::tempdir().unwrap();
    let h = Handset::open(
        &dir.path().join("h.db"),
        Arc::new(MemorySecretStore::default()),
    )
    .unwrap();
    let client = SyncClient::new(Arc::new(h)).unwrap();
    let rec = Recorder::default();
    assert!(matches!(
        client.sync_observed(None, &rec).await,
        Err(Error::NotEnrolled)
    ));
    let got = rec.0.into_inner().unwrap();
    assert!(
        matches!(got.as_slice(), [SyncProgress::Failed { .. }]),
        "{got:?}"
    );
}
