//! The rules of the state every node shares (DESIGN "Several nodes on one
//! database"): the rate limits and the board's sessions. Storage keeps one
//! row per (limit, key) and one per session; everything about windows,
//! counts, keys and bounds is decided here, so both backends persist the
//! same thing.
//!
//! A limit is a fixed window that opens at a key's first hit: at most `max`
//! hits count as allowed until `window` after that hit, then the next hit
//! opens a new window. The counter is updated in one statement (an upsert
//! that either adds one or restarts the window), so nodes racing on one key
//! can never both take the last slot.
//!
//! Bound on rows: a key not yet in the table is only inserted while its
//! limit has fewer than [`ROWS_PER_LIMIT`] rows; otherwise it counts under
//! [`OVERFLOW_KEY`], one shared row. Before a new key is inserted, up to
//! [`SWEEP`] expired rows of that limit are deleted, and the retention job
//! deletes expired rows in batches as well. So however many addresses an
//! attacker has, a limit holds at most `ROWS_PER_LIMIT` rows plus the
//! overflow row plus one per concurrent inserter (PostgreSQL READ COMMITTED
//! inserters may each see the count just under the cap): bounded by the cap
//! and the connection pool, not by the attacker. While a flood fills a
//! limit, new clients share the overflow budget (as the in-memory limiter
//! did); clients already tracked keep their own.

use chrono::{DateTime, Utc};
use std::time::Duration;

/// Rows one limit may hold before new keys share [`OVERFLOW_KEY`].
pub const ROWS_PER_LIMIT: u32 = 20_000;
/// Expired rows of a limit deleted before a new key of it is inserted.
pub const SWEEP: u32 = 100;
/// The key new clients share while their limit is full. No real key looks
/// like it: addresses have no `~`, ids start with a letter or digit, and
/// long keys become `sha256:` + hex.
pub const OVERFLOW_KEY: &str = "~overflow";
/// Keys longer than this are stored as their SHA-256.
pub const MAX_KEY_LEN: usize = 64;

/// One limit: its row name, its metric label, and how many hits per window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// The `limit_name` of its rows.
    pub name: &'static str,
    /// The `limit` label of `doorcode_rate_limited_total`.
    pub label: &'static str,
    pub max: u32,
    pub window: Duration,
}

impl Rule {
    /// Name, label, hits allowed, and the window in seconds.
    const fn new(name: &'static str, label: &'static str, max: u32, window_secs: u64) -> Self {
        Self {
            name,
            label,
            max,
            window: Duration::from_secs(window_secs),
        }
    }
}

/// Tracking lookups (page, its forms and the JSON route) per client address.
pub const TRACK: Rule = Rule::new("track", "track", 30, 60);
/// Board sign-ins per client address.
pub const LOGIN: Rule = Rule::new("login", "login", 10, 60);
/// Failed `POST /v1/devices` per client address (a success gives its hit back).
pub const ENROLLMENT: Rule = Rule::new("enrollment", "enrollment", 10, 60);
/// Resends per parcel: the customer's page and the courier's handset together.
pub const RESEND_PARCEL: Rule = Rule::new("resend_parcel", "resend", 1, 600);
/// Resends for the whole depot (one key), after the parcel's own limit.
pub const RESEND_ALL: Rule = Rule::new("resend_all", "resend", 30, 60);
/// The global limit's one key.
pub const GLOBAL_KEY: &str = "all";

/// One hit to count: the storage adds one to the (limit, key) row, or
/// restarts the window when the row's window ended at or before `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateHit {
    pub limit: &'static str,
    pub key: String,
    pub now: DateTime<Utc>,
    /// When a window opened now ends.
    pub expires_at: DateTime<Utc>,
    /// A new key is only inserted while the limit has fewer rows than this;
    /// `None` inserts regardless (the overflow key).
    pub cap: Option<u32>,
    /// Expired rows of the limit to delete before inserting a new key.
    pub sweep: u32,
}

/// The row after a hit: hits in its window so far (this one included) and
/// when the window opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateCount {
    pub hits: u32,
    pub started: DateTime<Utc>,
}

/// The key a limit's row is stored under: `raw` itself, or `sha256:` and
/// its hex digest when longer than [`MAX_KEY_LEN`], so a row stays small
/// whatever the key.
pub fn key(raw: &str) -> String {
    if raw.len() <= MAX_KEY_LEN && raw != OVERFLOW_KEY {
        return raw.to_string();
    }
    let d = ring::digest::digest(&ring::digest::SHA256, raw.as_bytes());
    format!("sha256:{}", doorcode_core::hex::encode(d.as_ref()))
}

fn chrono_of(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// The hit of `rule` for `raw_key` at `now`, capped; see [`overflow_hit`].
pub fn hit(rule: &Rule, raw_key: &str, now: DateTime<Utc>) -> RateHit {
    RateHit {
        limit: rule.name,
        key: key(raw_key),
        now,
        expires_at: now + chrono_of(rule.window),
        cap: Some(ROWS_PER_LIMIT),
        sweep: SWEEP,
    }
}

/// The hit to count instead when the limit is full: the shared overflow row.
pub fn overflow_hit(rule: &Rule, now: DateTime<Utc>) -> RateHit {
    RateHit {
        limit: rule.name,
        key: OVERFLOW_KEY.to_string(),
        now,
        expires_at: now + chrono_of(rule.window),
        cap: None,
        sweep: 0,
    }
}

/// Allowed (`Ok`), or how long until the window ends (at least a second).
pub fn verdict(rule: &Rule, c: RateCount, now: DateTime<Utc>) -> Result<(), Duration> {
    if c.hits <= rule.max {
        return Ok(());
    }
    let end = c.started + chrono_of(rule.window);
    let wait = (end - now).to_std().unwrap_or(Duration::ZERO);
    Err(wait.max(Duration::from_secs(1)))
}

/// Board sessions last this long (or until sign-out).
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Expired sessions deleted when a new one is stored.
pub const SESSION_SWEEP: u32 = 100;

/// A board session as stored: the cookie only as its SHA-256, the session's
/// CSRF token, and its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSession {
    pub id_hash: String,
    pub csrf: String,
    pub expires_at: DateTime<Utc>,
}

/// The session a sign-in at `now` opens.
pub fn session(id_hash: String, csrf: String, now: DateTime<Utc>) -> NewSession {
    NewSession {
        id_hash,
        csrf,
        expires_at: now + chrono_of(SESSION_TTL),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    #[test]
    fn hits_up_to_max_are_allowed_then_the_rest_of_the_window_is_the_wait() {
        let c = |hits| RateCount {
            hits,
            started: t(0),
        };
        assert_eq!(verdict(&LOGIN, c(10), t(5)), Ok(()));
        assert_eq!(verdict(&LOGIN, c(11), t(5)), Err(Duration::from_secs(55)));
        // At the very end the wait is still at least a second.
        assert_eq!(verdict(&LOGIN, c(11), t(60)), Err(Duration::from_secs(1)));
        assert_eq!(verdict(&RESEND_PARCEL, c(1), t(0)), Ok(()));
        assert_eq!(
            verdict(&RESEND_PARCEL, c(2), t(1)),
            Err(Duration::from_secs(599))
        );
    }

    #[test]
    fn a_hit_opens_a_window_of_the_rule_and_is_capped() {
        let h = hit(&TRACK, "203.0.113.5", t(0));
        assert_eq!(h.key, "203.0.113.5");
        assert_eq!(h.expires_at, t(60));
        assert_eq!(h.cap, Some(ROWS_PER_LIMIT));
        let o = overflow_hit(&TRACK, t(0));
        assert_eq!((o.key.as_str(), o.cap), (OVERFLOW_KEY, None));
    }

    #[test]
    fn long_keys_and_the_overflow_word_are_hashed() {
        let long = "x".repeat(65);
        let k = key(&long);
        assert!(k.starts_with("sha256:") && k.len() == 7 + 64, "{k}");
        assert_eq!(key(&"y".repeat(64)), "y".repeat(64));
        assert_ne!(
            key(OVERFLOW_KEY),
            OVERFLOW_KEY,
            "no client can name the overflow row"
        );
    }

    #[test]
    fn a_session_lasts_its_ttl() {
        let s = session("h".into(), "c".into(), t(0));
        assert_eq!(s.expires_at, t(12 * 3600));
    }
}
