//! `doorcode serve --notify … --notify …` as an operator runs it: an SMTP
//! server with STARTTLS and AUTH and a signed-webhook gateway, both on
//! loopback (`support::providers`); a recipient with email and phone gets
//! both, one with email only gets the mail only. A malformed webhook secret
//! from the environment stops the start with a clear error.

use crate::fleet::{Serve, serve_refused};
use crate::support::WEBHOOK_SECRET;
use crate::support::providers::*;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_notify_reaches_each_address_the_recipient_has() {
    const PASS: &str = "pr0cess p@ss";
    let (port, sink) = tls_smtp_sink(SmtpMode::StartTls, "depot", PASS).await;
    let (url, hooks) = webhook_receiver(WEBHOOK_SECRET, 0).await;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let smtp = format!(
        "smtp://depot:pr0cess%20p%40ss@127.0.0.1:{port}?tls=starttls&ca={}",
        ca_path()
    );
    let hook = format!("webhook:{url}");
    let p = Serve::spawn(
        &data,
        &[
            "--notify",
            &smtp,
            "--notify",
            &hook,
            "--webhook-secret",
            WEBHOOK_SECRET,
        ],
    );
    let parcels = json!({"parcels": [
        {"parcel_id": "P-1", "recipient": {"name": "A", "email": "a@example.com", "phone": "+491700000001"},
         "address": "1 Example Street", "value": 120, "currency": "EUR"},
        {"parcel_id": "P-2", "recipient": {"name": "B", "email": "b@example.com"},
         "address": "2 Example Street", "value": 120, "currency": "EUR"}]});
    assert_eq!(p.admin_post("/v1/parcels", parcels).await.status(), 200);
    let today = chrono::Utc::now().date_naive().to_string();
    let r = p.admin_post(
        "/v1/routes",
        json!({"route_id": "R-1", "courier_id": "C-1", "delivery_date": today,
        "stops": [{"stop_id": "S-1", "address": "1 Example Street", "parcel_ids": ["P-1", "P-2"]}]}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(
        eventually(|| sink.mails.lock().unwrap().len() >= 2 && !hooks.all().is_empty()).await,
        "mails {:?}, hooks {:?}",
        sink.mails.lock().unwrap(),
        hooks.all()
    );
    let mut mailed: Vec<String> = sink
        .mails
        .lock()
        .unwrap()
        .iter()
        .inspect(|m| assert!(m.tls && m.user.as_deref() == Some("depot")))
        .map(|m| m.rcpt.join(","))
        .collect();
    mailed.sort();
    assert_eq!(mailed, vec!["<a@example.com>", "<b@example.com>"]);
    let texted: Vec<Value> = hooks.valid().iter().map(|h| h.body["to"].clone()).collect();
    assert_eq!(texted, vec![json!("+491700000001")], "{:?}", hooks.all());
    drop(p);
    // Neither the SMTP password nor the webhook secret is in the logs.
    let log = std::fs::read_to_string(data.with_extension("log")).unwrap();
    assert!(log.contains("smtp://depot:***@127.0.0.1"), "{log}");
    for secret in [PASS, "pr0cess%20p%40ss", &WEBHOOK_SECRET[6..]] {
        assert!(!log.contains(secret), "{secret} in\n{log}");
    }
}

#[test]
fn a_malformed_webhook_secret_from_the_environment_stops_the_start() {
    let tmp = tempfile::tempdir().unwrap();
    let err = serve_refused(
        &tmp.path().join("data"),
        &[
            ("DOORCODE_NOTIFY", "webhook:http://127.0.0.1:9/sms"),
            ("DOORCODE_WEBHOOK_SECRET", "whsec_not*base64"),
        ],
    );
    assert!(
        err.contains("--webhook-secret") && err.contains("base64"),
        "{err}"
    );
    assert!(!err.contains("not*base64"), "{err}");
}
