//! Notice channels against real receivers: an SMTP sink speaking SMTP on a
//! loopback TcpListener (with a temporary failure to force a retry), a
//! webhook receiver, and a sender killed mid-send whose notice is resent
//! after its lease by the next server on the same data dir.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::*;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// (recipients, DATA) of each accepted mail.
type Mail = (Vec<String>, String);

#[derive(Clone, Default)]
struct Sink {
    mails: Arc<Mutex<Vec<Mail>>>,
    connections: Arc<AtomicUsize>,
}

/// A minimal SMTP server: enough of RFC 5321 for lettre. The first
/// `fail_first` RCPT commands get a 451 (temporary failure); `hang` makes it
/// accept connections and never answer.
async fn smtp_sink(fail_first: usize, hang: bool) -> (u16, Sink) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let sink = Sink::default();
    let s2 = sink.clone();
    let fails = Arc::new(AtomicUsize::new(fail_first));
    tokio::spawn(async move {
        loop {
            let (sock, _) = l.accept().await.unwrap();
            s2.connections.fetch_add(1, Ordering::SeqCst);
            let sink = s2.clone();
            let fails = fails.clone();
            tokio::spawn(async move {
                if hang {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    drop(sock);
                    return;
                }
                let (r, mut w) = sock.into_split();
                let mut lines = BufReader::new(r).lines();
                w.write_all(b"220 sink ESMTP\r\n").await.unwrap();
                let mut rcpt = Vec::new();
                while let Ok(Some(line)) = lines.next_line().await {
                    let up = line.to_ascii_uppercase();
                    let reply: &[u8] = if up.starts_with("EHLO") || up.starts_with("HELO") {
                        b"250 sink\r\n"
                    } else if up.starts_with("RCPT TO") {
                        if fails.load(Ordering::SeqCst) > 0 {
                            fails.fetch_sub(1, Ordering::SeqCst);
                            b"451 4.3.0 try again later\r\n"
                        } else {
                            rcpt.push(line[8..].trim().to_string());
                            b"250 OK\r\n"
                        }
                    } else if up == "DATA" {
                        w.write_all(b"354 go ahead\r\n").await.unwrap();
                        let mut data = String::new();
                        while let Ok(Some(l)) = lines.next_line().await {
                            if l == "." {
                                break;
                            }
                            data.push_str(&l);
                            data.push('\n');
                        }
                        sink.mails
                            .lock()
                            .unwrap()
                            .push((std::mem::take(&mut rcpt), data));
                        b"250 queued\r\n"
                    } else if up == "QUIT" {
                        let _ = w.write_all(b"221 bye\r\n").await;
                        return;
                    } else {
                        b"250 OK\r\n"
                    };
                    if w.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, sink)
}

async fn day_with_one_parcel(s: &Server, date: &str) {
    s.admin_ok("/v1/parcels", json!({"parcels": [{"parcel_id": "P-1001", "recipient": {"name": "J. Doe", "email": "jdoe@example.com", "phone": "+491701234567"},
            "address": "1 Example Street", "value": 120, "currency": "EUR"}]})).await;
    s.admin_ok("/v1/routes", json!({"route_id": "R-7", "courier_id": "C-42", "delivery_date": date,
            "stops": [{"stop_id": "S-1", "address": "1 Example Street", "parcel_ids": ["P-1001"]}]})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_delivers_after_a_temporary_failure() {
    let (port, sink) = smtp_sink(1, false).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), "2026-11-23T06:00:00Z");
    // A clock that moves from the pinned start, so the retry's backoff can
    // elapse and the day (a route may not be for a past day) stays the same.
    let (from, began) = (t("2026-11-23T06:00:00Z"), std::time::Instant::now());
    cfg.clock =
        Arc::new(move || from + chrono::Duration::from_std(began.elapsed()).unwrap_or_default());
    cfg.notify = vec![format!("smtp://127.0.0.1:{port}")];
    let s = start(cfg).await;
    day_with_one_parcel(&s, "2026-11-23").await;
    let mut mails = Vec::new();
    for _ in 0..400 {
        mails = sink.mails.lock().unwrap().clone();
        if !mails.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(mails.len(), 1, "one mail after one retry");
    assert!(
        sink.connections.load(Ordering::SeqCst) >= 2,
        "the first try failed"
    );
    let (rcpt, data) = &mails[0];
    assert_eq!(rcpt, &vec!["<jdoe@example.com>".to_string()]);
    assert!(
        data.contains("Subject: Your delivery code for parcel P-1001 on 2026-11-23"),
        "{data}"
    );
    assert!(data.contains("857759"), "the vectors' code for P-1001");
    assert!(data.contains("in person") && data.contains("did not order"));
    let metrics = s.metrics().await;
    assert!(
        metrics.contains("doorcode_notices_total{channel=\"smtp\",result=\"failed\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("doorcode_notices_total{channel=\"smtp\",result=\"sent\"} 1"),
        "{metrics}"
    );
    s.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_posts_json() {
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let g2 = got.clone();
    let app = axum::Router::new().route(
        "/sms",
        axum::routing::post(move |axum::Json(v): axum::Json<Value>| {
            let g = g2.clone();
            async move {
                g.lock().unwrap().push(v);
                "ok"
            }
        }),
    );
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/sms", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), "2026-11-23T06:00:00Z");
    cfg.notify = vec![format!("webhook:{url}")];
    cfg.webhook_secret = Some(WEBHOOK_SECRET.into());
    let s = start(cfg).await;
    day_with_one_parcel(&s, "2026-11-23").await;
    s.wait_outbox_empty().await;
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["channel"], "webhook");
    assert_eq!(
        got[0]["to"], "+491701234567",
        "SMS gateways get the phone number"
    );
    assert_eq!(got[0]["code"], "857759");
    assert_eq!(got[0]["parcel_id"], "P-1001");
    assert!(got[0]["track_url"].as_str().unwrap().contains("/track/"));
    s.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_claimed_by_a_dying_server_is_sent_by_the_next() {
    let (port, sink) = smtp_sink(0, true).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), "2026-11-23T06:00:00Z");
    cfg.notify = vec![format!("smtp://127.0.0.1:{port}")];
    let s = start(cfg).await;
    day_with_one_parcel(&s, "2026-11-23").await;
    for _ in 0..200 {
        if sink.connections.load(Ordering::SeqCst) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        sink.connections.load(Ordering::SeqCst),
        1,
        "the send is under way"
    );
    s.handle.shutdown().await; // dies mid-send

    // Same data dir, file channel; within the lease nothing is resent...
    let mut cfg = config(dir.path(), "2026-11-23T06:00:30Z");
    cfg.notify = vec![format!("file:{}", dir.path().join("notices").display())];
    let h = doorcode_server::start(cfg).await.unwrap();
    assert!(
        h.admin_token.is_none(),
        "the admin token is printed only at first start"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!dir.path().join("notices").exists());
    h.shutdown().await;
    // ...after it, the notice goes out.
    let mut cfg = config(dir.path(), "2026-11-23T06:01:30Z");
    cfg.notify = vec![format!("file:{}", dir.path().join("notices").display())];
    let h = doorcode_server::start(cfg).await.unwrap();
    let mut files = Vec::new();
    for _ in 0..200 {
        files = std::fs::read_dir(dir.path().join("notices"))
            .map(|r| r.collect::<Vec<_>>())
            .unwrap_or_default();
        if !files.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(files.len(), 1);
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(files[0].as_ref().unwrap().path()).unwrap())
            .unwrap();
    assert_eq!(v["code"], "857759");
    h.shutdown().await;
}
