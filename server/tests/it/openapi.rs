//! The OpenAPI document against the real server: each `/v1/` operation's
//! answers to a missing token, a body that is not JSON, no content type and
//! wrong types are statuses the document declares for it, with the
//! `{error, message}` body. schemathesis (scripts/schemathesis.sh) found
//! these undeclared before the document added them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::*;
use serde_json::Value;

/// The statuses the document declares for `method path`.
fn declared(doc: &Value, method: &str, path: &str) -> Vec<String> {
    doc["paths"][path][method]["responses"]
        .as_object()
        .unwrap_or_else(|| panic!("{method} {path} is not in the document"))
        .keys()
        .cloned()
        .collect()
}

#[tokio::test]
async fn error_answers_are_declared() {
    let tmp = tempfile::tempdir().unwrap();
    let s = start(config(tmp.path(), "2026-11-23T10:00:00Z")).await;
    let (status, doc) = s.get("/openapi.json").await;
    assert_eq!(status, 200);
    // Every ErrorBody reference resolves.
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());

    let posts = [
        ("/v1/parcels", true),
        ("/v1/routes", true),
        ("/v1/enrollments", true),
        ("/v1/devices", false),
        ("/v1/confirmations", true),
        ("/v1/verify", true),
    ];
    for (path, secured) in posts {
        let statuses = declared(&doc, "post", path);
        let token = if secured { s.admin.as_str() } else { "" };
        let mut tried = Vec::new();
        if secured {
            let r = s
                .http
                .post(format!("{}{path}", s.url))
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .unwrap();
            tried.push(("no token", r.status().as_u16(), r.text().await.unwrap()));
        }
        for (what, ct, body) in [
            ("no content type", None, "{}"),
            ("not JSON", Some("application/json"), "{"),
            ("wrong types", Some("application/json"), "[1]"),
        ] {
            let mut b = s.http.post(format!("{}{path}", s.url)).body(body);
            if let Some(ct) = ct {
                b = b.header("content-type", ct);
            }
            // The dispatch token is not a device token: the device routes
            // answer 401 first, which must be declared too.
            if !token.is_empty() {
                b = b.bearer_auth(token);
            }
            let r = b.send().await.unwrap();
            tried.push((what, r.status().as_u16(), r.text().await.unwrap()));
        }
        for (what, status, body) in tried {
            assert!(
                (400..500).contains(&status),
                "{path} {what}: {status} {body}"
            );
            assert!(
                statuses.contains(&status.to_string()),
                "{path} {what}: {status} is not declared ({statuses:?})"
            );
            let v: Value = serde_json::from_str(&body).unwrap();
            assert!(v["error"].is_string() && v["message"].is_string(), "{body}");
        }
    }

    // Path and query parameters that cannot be read.
    let (status, _) = s.admin_get("/v1/parcels/%FF").await;
    assert!(declared(&doc, "get", "/v1/parcels/{id}").contains(&status.to_string()));
    assert_eq!(status, 400);
    let r = s
        .http
        .get(format!("{}/v1/manifest?date=tomorrow", s.url))
        .bearer_auth("not-a-device")
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    assert!(
        declared(&doc, "get", "/v1/manifest").contains(&status.to_string()),
        "{status}"
    );
}
