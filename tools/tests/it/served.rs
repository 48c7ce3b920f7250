//! What an outsider can do to a real `doorcode serve` process: memory,
//! slow and idle connections, the connection cap, the metrics listener, and
//! the data directory's modes under umask 022 (moved from the server's
//! `attacks::edges`: only this package can run the binary).

use crate::fleet::{Serve, ServeOpts};
use crate::support::net::*;
use crate::support::send_text;
use serde_json::{Value, json};
use std::process::Command;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Started under umask 022: files would come out 0644 if the server left
/// their modes to the umask.
fn umask_022() -> ServeOpts<'static> {
    ServeOpts {
        umask_022: true,
        ..ServeOpts::default()
    }
}

// ---------- memory exhaustion through metrics labels ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_unique_64kb_methods_grow_neither_memory_nor_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let p = Serve::spawn(&tmp.path().join("data"), &[]);
    let addr = p.addr;
    let send = move |i: usize| async move {
        // A unique 64 KiB method.
        let method = format!("X{i:06}{}", "M".repeat(64 * 1024 - 7));
        let req = format!("{method} /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        raw(addr, req.as_bytes()).await
    };
    // Warm up allocator and connection buffers, then measure.
    for i in 0..20 {
        let (st, _) = send(i).await;
        assert!((400..500).contains(&st), "{st}");
    }
    let before = p.rss_bytes();
    for i in 20..420 {
        let (st, _) = send(i).await;
        assert!(
            (400..500).contains(&st),
            "a method outside the routes is a 4xx: {st}"
        );
    }
    // Unique paths cannot add a label either (they are `unmatched`).
    for i in 0..100 {
        let req = format!(
            "GET /x{i}/{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            "p".repeat(16 * 1024)
        );
        let (st, _) = raw(p.addr, req.as_bytes()).await;
        assert_eq!(st, 404);
    }
    let grown = p.rss_bytes().saturating_sub(before);
    let http = reqwest::Client::new();
    let m = send_text(
        http.get(format!("{}/metrics", p.url()))
            .bearer_auth(p.admin()),
    )
    .await;
    eprintln!(
        "RSS grew {} KiB over 400 unique 64 KiB methods and 100 unique 16 KiB paths; /metrics is {} bytes",
        grown / 1024,
        m.len()
    );
    assert!(grown < 20 * 1024 * 1024, "RSS grew {grown} bytes");
    assert!(m.len() < 1024 * 1024, "/metrics is {} bytes", m.len());
    assert!(!m.contains("MMMM"), "a method became a label");
    assert!(
        m.contains(
            "doorcode_http_requests_total{method=\"other\",route=\"/healthz\",status=\"405\"} 420"
        ),
        "odd methods are counted as `other`:\n{m}"
    );
    assert!(
        m.contains(
            "doorcode_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"} 100"
        ),
        "unknown paths are `unmatched`:\n{m}"
    );
    assert!(!m.contains("pppp"), "a path became a label");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_the_dispatch_token_except_on_the_metrics_listener() {
    let tmp = tempfile::tempdir().unwrap();
    let p = Serve::spawn(
        &tmp.path().join("data"),
        &["--metrics-listen", "127.0.0.1:0"],
    );
    let http = reqwest::Client::new();
    let get = |url: String, token: Option<&str>| {
        let mut r = http.get(url);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        async move {
            let r = r.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let public = format!("{}/metrics", p.url());
    for token in [None, Some(""), Some("not-a-token")] {
        let (st, body) = get(public.clone(), token).await;
        assert_eq!(st, 401, "{token:?}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"], "unauthorized");
        assert!(
            !body.contains("doorcode_"),
            "no metrics leak in the refusal"
        );
    }
    let (st, body) = get(public, Some(p.admin())).await;
    assert_eq!(st, 200);
    assert!(body.contains("doorcode_http_requests_total"));
    let scrape = p.metrics_addr.expect("--metrics-listen prints its address");
    let (st, body) = get(format!("http://{scrape}/metrics"), None).await;
    assert_eq!(st, 200);
    assert!(
        body.contains("doorcode_notice_outbox{state=\"pending\"}"),
        "{body}"
    );
    // Only metrics there: the API is not reachable through it.
    let (st, _) = get(format!("http://{scrape}/v1/disputes"), Some(p.admin())).await;
    assert_eq!(st, 404);
    let (st, _) = get(format!("http://{scrape}/track/x"), None).await;
    assert_eq!(st, 404);
}

// ---------- slow clients ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_header_is_cut_at_10_s_while_an_idle_keep_alive_stays_open() {
    let tmp = tempfile::tempdir().unwrap();
    let p = Serve::spawn(&tmp.path().join("data"), &[]);
    // An idle keep-alive connection that has done one request.
    let mut idle = TcpStream::connect(p.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut idle).await, Some(200));
    // The slow client: a request line, then one header byte a second, on
    // one connection; the other half of the socket watches for the close.
    let started = Instant::now();
    let slow = TcpStream::connect(p.addr).await.unwrap();
    let (mut rd, mut wr) = slow.into_split();
    wr.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let trickle = tokio::spawn(async move {
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if wr.write_all(b"a").await.is_err() {
                break;
            }
        }
    });
    let mut b = [0u8; 64];
    let cut = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match rd.read(&mut b).await {
                Ok(0) | Err(_) => return started.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("half-sent headers still held the connection after 30 s");
    trickle.abort();
    eprintln!("slow header cut after {cut:?}");
    assert!(
        cut >= Duration::from_millis(9_500),
        "cut too early ({cut:?}): the limit is 10 s from the first byte"
    );
    assert!(
        cut < Duration::from_secs(15),
        "cut after {cut:?}; the limit is 10 s"
    );
    // The idle connection (idle ~11 s by now) is still served: the header
    // timer does not run while a keep-alive connection waits.
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        read_response(&mut idle).await,
        Some(200),
        "an idle keep-alive must last 60 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_closed_after_10_s() {
    let tmp = tempfile::tempdir().unwrap();
    let p = Serve::spawn(&tmp.path().join("data"), &[]);
    let started = Instant::now();
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    let cut = closed_after(&mut s, started, Duration::from_secs(25))
        .await
        .expect("a connection that sends nothing is held open");
    eprintln!("silent connection closed after {cut:?}");
    assert!(cut >= Duration::from_millis(9_500), "{cut:?}");
    assert!(cut < Duration::from_secs(15), "{cut:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_caps_open_connections() {
    let tmp = tempfile::tempdir().unwrap();
    let p = Serve::spawn(&tmp.path().join("data"), &["--max-connections", "3"]);
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = TcpStream::connect(p.addr).await.unwrap();
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(read_response(&mut c).await, Some(200));
        held.push(c);
    }
    // The fourth waits in the backlog: no answer while three are open.
    let mut fourth = TcpStream::connect(p.addr).await.unwrap();
    fourth
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), read_response(&mut fourth))
            .await
            .is_err(),
        "a fourth connection was served beside three open ones"
    );
    drop(held.pop());
    let r = tokio::time::timeout(Duration::from_secs(5), read_response(&mut fourth)).await;
    assert_eq!(r.ok().flatten(), Some(200), "served once a slot frees");
}

// ---------- data directory modes ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_dir_is_private_even_when_it_existed_open_under_umask_022() {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    // A file an operator left world-readable: a stale notice.
    std::fs::create_dir(data.join("notices")).unwrap();
    std::fs::set_permissions(data.join("notices"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(data.join("notices/old.json"), b"{}").unwrap();
    std::fs::set_permissions(
        data.join("notices/old.json"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let check = |when: &str| {
        assert_eq!(mode(&data), 0o700, "{when}: the data dir");
        let entries = tree(&data);
        for p in &entries {
            let want = if p.is_dir() { 0o700 } else { 0o600 };
            assert_eq!(mode(p), want, "{when}: {}", p.display());
        }
        entries
    };
    {
        let p = Serve::start(&data, &umask_022());
        let today = chrono::Utc::now().date_naive().to_string();
        let r = p.admin_post("/v1/parcels", json!({"parcels": [{"parcel_id": "P-1", "recipient": {"name": "J. Doe", "email": "j@example.com"}, "address": "1 Main St", "value": 90, "currency": "EUR"}]}))
            .await;
        assert_eq!(r.status(), 200);
        let r = p
            .admin_post(
                "/v1/routes",
                json!({"route_id": "R-1", "courier_id": "C-1", "delivery_date": today,
            "stops": [{"stop_id": "S-1", "address": "1 Main St", "parcel_ids": ["P-1"]}]}),
            )
            .await;
        assert_eq!(r.status(), 200);
        // The notice file is written by the sender.
        for _ in 0..200 {
            if std::fs::read_dir(data.join("notices")).unwrap().count() >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let entries = check("while serving");
        let names: Vec<String> = entries
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for must in [
            "doorcode.db",
            "doorcode.db-wal",
            "doorcode.db-shm",
            "code-key",
            "admin-token.sha256",
            "signing-key",
        ] {
            assert!(
                names.iter().any(|n| n == must),
                "{must} missing in {names:?}"
            );
        }
        assert!(
            std::fs::read_dir(data.join("notices")).unwrap().count() >= 2,
            "the route's notice was written"
        );
    }
    // A key rotation (keys/ and a .pub) and someone opening the database up:
    // the next start closes everything again.
    let out = Command::new("sh")
        .arg("-c")
        .arg("umask 022; exec \"$@\"")
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_doorcode"))
        .args(["rotate-key", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::set_permissions(
        data.join("doorcode.db"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let _p = Serve::start(&data, &umask_022());
    let entries = check("after a restart");
    assert!(
        entries
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "pub"))
    );
}

// ---------- duplicate notices across nodes ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_and_a_slow_gateway_send_each_notice_once() {
    let Some(pg) = crate::support::pg::fresh_schema("attacks_lease").await else {
        return;
    };
    two_nodes_slow_gateway(Some(&pg.url)).await;
    pg.drop_schema().await;
}

/// The same on one SQLite file shared by two processes (the claim and its
/// renewal are the SQLite backend's own SQL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_sqlite_file_and_a_slow_gateway_send_each_notice_once() {
    two_nodes_slow_gateway(None).await;
}

async fn two_nodes_slow_gateway(database: Option<&str>) {
    // A gateway that takes 1 s per message; the claim lasts 3 s. Without
    // renewal the second node takes over the rest of the batch after 3 s.
    let (gateway, posts) = sink(200, None, Duration::from_secs(1)).await;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let hook = format!("webhook:http://{gateway}/sms");
    let mut args = vec![
        "--notify",
        hook.as_str(),
        "--webhook-secret",
        crate::support::WEBHOOK_SECRET,
        "--notice-lease-secs",
        "3",
    ];
    if let Some(db) = database {
        args.extend(["--database", db]);
    }
    let a = Serve::spawn(&data, &args);
    let b = Serve::spawn(&data, &args);
    let today = chrono::Utc::now().date_naive().to_string();
    const N: usize = 8;
    let parcels: Vec<Value> = (0..N)
        .map(|i| {
            parcel(
                &format!("P-{i}"),
                "J. Doe",
                None,
                Some(&format!("+4917012345{i:02}")),
            )
        })
        .collect();
    assert_eq!(
        a.admin_post("/v1/parcels", json!({"parcels": parcels}))
            .await
            .status(),
        200
    );
    let ids: Vec<String> = (0..N).map(|i| format!("P-{i}")).collect();
    let r = a
        .admin_post(
            "/v1/routes",
            json!({"route_id": "R-1", "courier_id": "C-1", "delivery_date": today,
        "stops": [{"stop_id": "S-1", "address": "1 Example Street", "parcel_ids": ids}]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(60);
    while posts.lock().unwrap().len() < N && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Longer than a lease more, for a late duplicate to show up.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let posts = posts.lock().unwrap().clone();
    let mut per_parcel = std::collections::HashMap::new();
    for (_, _, body) in &posts {
        let v: Value = serde_json::from_str(body).unwrap();
        *per_parcel
            .entry(v["parcel_id"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    assert_eq!(per_parcel.len(), N, "{per_parcel:?}");
    assert!(
        per_parcel.values().all(|n| *n == 1),
        "notices sent twice: {per_parcel:?}"
    );
    assert_eq!(posts.len(), N);
    drop((a, b));
}
