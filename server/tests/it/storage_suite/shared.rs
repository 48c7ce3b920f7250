//! The state every node shares (board sessions, rate-limit counters), run
//! on every backend by `storage_suite!`. The rules are unit-tested in
//! `domain/limits.rs`; these check what the storage keeps.

use super::*;
use doorcode_server::domain::limits::{self, NewSession, RateHit};

fn hit(
    limit: &'static str,
    key: &str,
    now: DateTime<Utc>,
    cap: Option<u32>,
    sweep: u32,
) -> RateHit {
    RateHit {
        limit,
        key: key.into(),
        now,
        expires_at: now + Duration::seconds(60),
        cap,
        sweep,
    }
}

async fn hits(s: &dyn Storage, h: &RateHit) -> u32 {
    s.rate_hit(h).await.unwrap().expect("counted").hits
}

pub async fn a_rate_counter_counts_in_its_window_then_restarts(s: &dyn Storage) {
    let h = hit("track", "203.0.113.5", t0(), Some(100), 10);
    assert_eq!(hits(s, &h).await, 1);
    let later = hit(
        "track",
        "203.0.113.5",
        t0() + Duration::seconds(30),
        Some(100),
        10,
    );
    let c = s.rate_hit(&later).await.unwrap().unwrap();
    assert_eq!(
        (c.hits, c.started),
        (2, t0()),
        "same window: one more, same start"
    );
    assert_eq!(
        hits(s, &hit("track", "203.0.113.6", t0(), Some(100), 10)).await,
        1,
        "per key"
    );
    assert_eq!(
        hits(s, &hit("login", "203.0.113.5", t0(), Some(100), 10)).await,
        1,
        "per limit"
    );
    // At the window's end the next hit opens a new one.
    let t60 = t0() + Duration::seconds(60);
    let c = s
        .rate_hit(&hit("track", "203.0.113.5", t60, Some(100), 10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((c.hits, c.started), (1, t60));
}

pub async fn concurrent_rate_hits_each_get_their_own_count(s: &dyn Storage) {
    // As nodes racing on one key: every hit is counted once, none twice.
    let h = hit("resend_parcel", "P-1", t0(), Some(100), 10);
    let one = || async { s.rate_hit(&h).await.unwrap().unwrap().hits };
    let (a, b, c, d, e, f, g, i) =
        tokio::join!(one(), one(), one(), one(), one(), one(), one(), one());
    let mut seen = vec![a, b, c, d, e, f, g, i];
    seen.sort_unstable();
    assert_eq!(seen, (1..=8).collect::<Vec<_>>());
}

pub async fn a_full_limit_takes_no_new_key_but_counts_known_ones(s: &dyn Storage) {
    for k in ["a", "b", "c"] {
        assert_eq!(hits(s, &hit("track", k, t0(), Some(3), 10)).await, 1);
    }
    assert!(
        s.rate_hit(&hit("track", "d", t0(), Some(3), 10))
            .await
            .unwrap()
            .is_none(),
        "a fourth key is not stored"
    );
    assert_eq!(
        hits(s, &hit("track", "a", t0(), Some(3), 10)).await,
        2,
        "known keys still count"
    );
    assert_eq!(
        hits(s, &hit("login", "d", t0(), Some(3), 10)).await,
        1,
        "the cap is per limit"
    );
    let o = limits::overflow_hit(&limits::TRACK, t0());
    assert_eq!(hits(s, &o).await, 1, "the overflow row has no cap");
    assert_eq!(hits(s, &o).await, 2);
}

pub async fn expired_rate_rows_make_room_in_bounded_batches(s: &dyn Storage) {
    for k in 0..5 {
        hits(s, &hit("track", &format!("k{k}"), t0(), Some(5), 10)).await;
    }
    let t2 = t0() + Duration::minutes(2);
    // Two expired rows go before a new key; the limit then has room.
    assert_eq!(hits(s, &hit("track", "new-1", t2, Some(5), 2)).await, 1);
    assert_eq!(hits(s, &hit("track", "new-2", t2, Some(5), 0)).await, 1);
    assert!(
        s.rate_hit(&hit("track", "new-3", t2, Some(5), 0))
            .await
            .unwrap()
            .is_none(),
        "no sweep, no room: 3 old rows and 2 new ones"
    );
    assert_eq!(hits(s, &hit("track", "new-3", t2, Some(5), 1)).await, 1);
}

pub async fn a_refund_gives_back_one_hit_of_the_current_window(s: &dyn Storage) {
    let h = hit("enrollment", "203.0.113.5", t0(), Some(100), 10);
    hits(s, &h).await;
    hits(s, &h).await;
    s.rate_refund("enrollment", "203.0.113.5", t0())
        .await
        .unwrap();
    assert_eq!(hits(s, &h).await, 2);
    s.rate_refund("enrollment", "unknown", t0()).await.unwrap();
    // A refund after the window ended changes nothing.
    s.rate_refund("enrollment", "203.0.113.5", t0() + Duration::minutes(5))
        .await
        .unwrap();
    assert_eq!(hits(s, &h).await, 3);
}

pub async fn board_sessions_expire_and_sign_out_deletes_them(s: &dyn Storage) {
    let a = NewSession {
        id_hash: "hash-a".into(),
        csrf: "csrf-a".into(),
        expires_at: t0() + Duration::hours(12),
    };
    s.create_session(a, t0(), 10).await.unwrap();
    assert_eq!(
        s.session_csrf("hash-a", t0()).await.unwrap().as_deref(),
        Some("csrf-a")
    );
    assert_eq!(s.session_csrf("hash-b", t0()).await.unwrap(), None);
    assert_eq!(
        s.session_csrf("hash-a", t0() + Duration::hours(12))
            .await
            .unwrap(),
        None,
        "expired"
    );
    let b = limits::session("hash-b".into(), "csrf-b".into(), t0());
    s.create_session(b, t0(), 10).await.unwrap();
    s.delete_session("hash-b").await.unwrap();
    assert_eq!(
        s.session_csrf("hash-b", t0()).await.unwrap(),
        None,
        "signed out"
    );
    // A new session deletes expired ones first (bounded by the sweep).
    let c = limits::session("hash-c".into(), "csrf-c".into(), t0() + Duration::hours(13));
    s.create_session(c, t0() + Duration::hours(13), 10)
        .await
        .unwrap();
    assert_eq!(
        s.sweep_shared_state(t0() + Duration::hours(13), 100)
            .await
            .unwrap(),
        0,
        "hash-a went"
    );
}

pub async fn expired_shared_state_is_swept_in_batches(s: &dyn Storage) {
    for k in 0..5 {
        hits(s, &hit("track", &format!("k{k}"), t0(), Some(100), 0)).await;
        let sess = limits::session(format!("h{k}"), "c".into(), t0());
        s.create_session(sess, t0(), 0).await.unwrap();
    }
    assert_eq!(
        s.sweep_shared_state(t0(), 100).await.unwrap(),
        0,
        "nothing expired yet"
    );
    let late = t0() + Duration::hours(13);
    assert_eq!(s.sweep_shared_state(late, 3).await.unwrap(), 6, "3 of each");
    assert_eq!(s.sweep_shared_state(late, 3).await.unwrap(), 4);
    assert_eq!(s.sweep_shared_state(late, 3).await.unwrap(), 0);
}
