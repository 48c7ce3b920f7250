//! A client that stalls mid-body gets a 408 with the JSON error shape.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_request_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), "2026-11-23T06:00:00Z");
    cfg.request_timeout = Duration::from_millis(300);
    let s = start(cfg).await;
    let mut sock = tokio::net::TcpStream::connect(s.handle.addr).await.unwrap();
    let head = format!(
        "POST /v1/parcels HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"parcels\":",
        s.admin
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), sock.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"error\":\"timeout\""), "{text}");
    s.handle.shutdown().await;
}
