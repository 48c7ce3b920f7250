//! A server whose `code-key` is preset yields exactly the codes DESIGN.md's
//! formula gives (the shared vectors), as seen in the `file:` notices and in
//! `GET /v1/track/{token}`. Attempts above 1 are reached by reissuing.
//! A vector whose parcel id the API refuses (DESIGN's id pattern, e.g.
//! `PARCEL-Ä-ß`) must be refused at upload; its code is checked by the core's
//! vector test, which takes the id as it is.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codes_match_the_shared_vectors() {
    let v = vectors();
    let cases = v["codes"].as_array().unwrap();
    assert!(cases.len() >= 5);
    for (i, case) in cases.iter().enumerate() {
        let pid = case["parcel_id"].as_str().unwrap();
        let date = case["delivery_date"].as_str().unwrap();
        let attempt = case["attempt"].as_u64().unwrap();
        let digits = u8::try_from(case["digits"].as_u64().unwrap()).unwrap();
        let want = case["code"].as_str().unwrap();

        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path(), &format!("{date}T01:00:00Z"));
        cfg.code_digits = digits;
        let s = start(cfg).await;
        let r = s.admin_ok("/v1/parcels", json!({"parcels": [{"parcel_id": pid, "recipient": {"name": "V", "email": "v@example.com"},
                "address": "1 Vector Way", "value": 1, "currency": "EUR", "requires_code": true}]})).await;
        if doorcode_server::validate::id(pid, "parcel_id").is_err() {
            assert_eq!(r["results"][0]["status"], "rejected", "{pid:?}: {r}");
            s.handle.shutdown().await;
            continue;
        }
        assert_ne!(r["results"][0]["status"], "rejected", "{pid:?}: {r}");
        s.admin_ok("/v1/routes", json!({"route_id": format!("R-{i}"), "courier_id": format!("C-{i}"), "delivery_date": date,
                "stops": [{"stop_id": "S-1", "address": "1 Vector Way", "parcel_ids": [pid]}]})).await;
        let path = format!("/v1/parcels/{}/reissue", pid.replace('%', "%25"));
        for _ in 1..attempt {
            s.admin_ok(&path, json!({})).await;
        }
        s.wait_outbox_empty().await;
        // Notices of voided attempts may be skipped as superseded; the newest is last.
        let notices = s.notice_files();
        let last = notices.last().unwrap();
        assert_eq!(last["parcel_id"], pid);
        assert_eq!(
            last["code"], want,
            "notice for {pid} {date} attempt {attempt}"
        );
        assert!(last["body"].as_str().unwrap().contains(want));
        let token = track_token(&last["track_url"]);
        let (st, tv) = s.get(&format!("/v1/track/{token}")).await;
        assert_eq!(st, 200);
        assert_eq!(tv["code"], want, "track page for {pid}");
        assert_eq!(tv["delivery_date"], date);
        s.handle.shutdown().await;
    }
}
