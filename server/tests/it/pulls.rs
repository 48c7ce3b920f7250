//! Manifest pulls over real HTTP around the node's envelope cache
//! (`app/envelopes.rs`): a repeated pull without a tag is served from
//! memory only while the storage read says its build is current, so a new
//! route revision, a revocation, another device and `If-None-Match` all
//! answer as they would without it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::*;
use doorcode_core::envelope::Envelope;
use serde_json::json;

const DAY: &str = "2026-11-23";

/// `doorcode_manifests_from_cache_total`.
async fn from_cache(s: &Server) -> u64 {
    let m = s.metrics().await;
    m.lines()
        .find_map(|l| l.strip_prefix("doorcode_manifests_from_cache_total "))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Status, ETag (empty if none) and envelope of a pull.
async fn pull(
    s: &Server,
    h: &Handset,
    if_none_match: Option<&str>,
) -> (u16, String, Option<Envelope>) {
    let (st, etag, env) = crate::day::manifest(s, h, DAY, if_none_match).await;
    (st, etag.unwrap_or_default(), env)
}

fn parcel(id: &str) -> serde_json::Value {
    json!({"parcel_id": id, "recipient": {"name": "J. Doe"}, "address": "1 Example Street",
        "value": 99.5, "currency": "EUR"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_envelope_is_served_only_while_its_build_is_current() {
    let (_dir, s) = serve("2026-11-23T06:00:00Z").await;
    s.one_parcel_route(parcel("P-1"), "R-1", "C-1", DAY).await;
    let a = s.enroll("C-1").await;
    let b = s.enroll("C-1").await;

    // Built, then the same bytes again from the cache.
    let (st, etag1, body1) = pull(&s, &a, None).await;
    assert_eq!(st, 200);
    assert!(etag1.ends_with(":1\""), "{etag1}");
    assert_eq!(
        pull(&s, &a, None).await,
        (200, etag1.clone(), body1.clone())
    );
    // Another handset of the courier gets its own build, never A's.
    let (st, etag_b, body_b) = pull(&s, &b, None).await;
    assert_eq!(st, 200);
    assert_ne!((&etag_b, &body_b), (&etag1, &body1));

    // A new revision of the route: the cached build is stale and not served.
    s.admin_ok("/v1/parcels", json!({"parcels": [parcel("P-2")]}))
        .await;
    s.admin_ok(
        "/v1/routes",
        json!({"route_id": "R-1", "courier_id": "C-1", "delivery_date": DAY,
            "stops": [{"stop_id": "S-1", "address": "1 Example Street", "parcel_ids": ["P-1", "P-2"]}]}),
    )
    .await;
    let (st, etag2, body2) = pull(&s, &a, None).await;
    assert_eq!(st, 200);
    assert!(etag2.ends_with(":2\""), "{etag2}");
    assert_ne!(body2, body1, "the envelope of revision 2");
    assert_eq!(
        pull(&s, &a, None).await,
        (200, etag2.clone(), body2.clone())
    );

    // The handset's own tag: current is 304, stale is the new body, `*` is 304.
    assert_eq!(pull(&s, &a, Some(&etag2)).await.0, 304);
    assert_eq!(
        pull(&s, &a, Some(&etag1)).await,
        (200, etag2.clone(), body2)
    );
    assert_eq!(pull(&s, &a, Some("*")).await.0, 304);
    assert_eq!(
        from_cache(&s).await,
        3,
        "`*` names no build: the cache is asked"
    );
    assert_eq!(
        pull(&s, &a, Some(&etag_b)).await.0,
        200,
        "B's tag is not A's"
    );

    // Revoked: refused at once, cache or not.
    let revoke = format!("/v1/devices/{}/revoke", a.device_id);
    assert_eq!(s.admin_post(&revoke, json!({})).await.0, 200);
    assert_eq!(pull(&s, &a, None).await.0, 401);
    assert_eq!(pull(&s, &a, Some(&etag2)).await.0, 401);
    assert_eq!(
        from_cache(&s).await,
        3,
        "nothing served to a revoked device"
    );
    s.handle.shutdown().await;
}
