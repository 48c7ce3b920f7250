//! In-memory token buckets for the per-client abuse limits (track lookups,
//! board sign-ins, enrollments, resends). They live in one process for now
//! (issue 15 moves them to the database).
//!
//! The table is bounded: at most `capacity` keys. A full bucket is the same
//! as no bucket, so when the table is full those are swept (at most once a
//! second). If it is still full, keys not yet in it share one overflow
//! bucket: an attacker with many addresses cannot grow memory, and cannot
//! empty a bucket that is already tracked either; while the flood lasts,
//! new clients share one budget. Refusals are counted in
//! `doorcode_rate_limited_total{limit}`.

use crate::metrics::Metrics;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Keys a limiter keeps at most, unless built with another capacity.
pub const DEFAULT_CAPACITY: usize = 65_536;

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

struct Table<K> {
    buckets: HashMap<K, Bucket>,
    overflow: Bucket,
    next_sweep: Instant,
}

/// A token bucket per key: `burst` tokens, refilled at `per_sec`.
pub struct Limiter<K> {
    /// The `limit` label of its refusals.
    name: &'static str,
    burst: f64,
    per_sec: f64,
    capacity: usize,
    metrics: Arc<Metrics>,
    table: Mutex<Table<K>>,
}

impl<K: std::hash::Hash + Eq + Clone> Limiter<K> {
    pub fn new(name: &'static str, burst: f64, per_sec: f64, metrics: Arc<Metrics>) -> Self {
        Self::with_capacity(name, burst, per_sec, DEFAULT_CAPACITY, metrics)
    }

    pub fn with_capacity(
        name: &'static str,
        burst: f64,
        per_sec: f64,
        capacity: usize,
        metrics: Arc<Metrics>,
    ) -> Self {
        let now = Instant::now();
        Self {
            name,
            burst,
            per_sec,
            capacity: capacity.max(1),
            metrics,
            table: Mutex::new(Table {
                buckets: HashMap::new(),
                overflow: Bucket {
                    tokens: burst,
                    at: now,
                },
                next_sweep: now,
            }),
        }
    }

    /// Takes one token for `key`; false (and counted) when there is none.
    pub fn allow(&self, key: &K) -> bool {
        let ok = self.with_bucket(key, |b| {
            if b.tokens >= 1.0 {
                b.tokens -= 1.0;
                true
            } else {
                false
            }
        });
        if !ok {
            self.metrics.rate_limited(self.name);
        }
        ok
    }

    /// Gives back a token taken by [`Limiter::allow`] (the attempt turned
    /// out not to count, e.g. an enrollment that succeeded).
    pub fn refund(&self, key: &K) {
        let burst = self.burst;
        self.with_bucket(key, |b| b.tokens = (b.tokens + 1.0).min(burst));
    }

    /// How long until `key` has a token again (zero if it has one).
    pub fn retry_after(&self, key: &K) -> Duration {
        let rate = self.per_sec;
        self.with_bucket(key, |b| {
            if b.tokens >= 1.0 || rate <= 0.0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64((1.0 - b.tokens) / rate)
            }
        })
    }

    /// Keys tracked now (for tests and metrics).
    pub fn len(&self) -> usize {
        self.lock().buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table<K>> {
        match self.table.lock() {
            Ok(t) => t,
            Err(p) => p.into_inner(),
        }
    }

    fn refill(&self, b: &mut Bucket, now: Instant) {
        let add = now.duration_since(b.at).as_secs_f64() * self.per_sec;
        b.tokens = (b.tokens + add).min(self.burst);
        b.at = now;
    }

    fn with_bucket<R>(&self, key: &K, f: impl FnOnce(&mut Bucket) -> R) -> R {
        let now = Instant::now();
        let mut t = self.lock();
        let t = &mut *t;
        if !t.buckets.contains_key(key) && t.buckets.len() >= self.capacity && now >= t.next_sweep {
            let (burst, rate) = (self.burst, self.per_sec);
            t.buckets
                .retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < burst);
            t.next_sweep = now + Duration::from_secs(1);
        }
        let fresh = Bucket {
            tokens: self.burst,
            at: now,
        };
        let b = if t.buckets.contains_key(key) || t.buckets.len() < self.capacity {
            t.buckets.entry(key.clone()).or_insert(fresh)
        } else {
            &mut t.overflow
        };
        self.refill(b, now);
        f(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(burst: f64, per_sec: f64, cap: usize) -> Limiter<u32> {
        Limiter::with_capacity("track", burst, per_sec, cap, Arc::new(Metrics::default()))
    }

    #[test]
    fn a_bucket_empties_and_refunds() {
        let l = limiter(2.0, 0.0, 10);
        assert!(l.allow(&1) && l.allow(&1));
        assert!(!l.allow(&1));
        assert!(l.allow(&2), "other keys are independent");
        l.refund(&1);
        assert!(l.allow(&1));
        assert!(!l.allow(&1));
    }

    #[test]
    fn many_keys_never_grow_the_table_past_its_capacity() {
        let l = limiter(1.0, 0.0, 100);
        for k in 0..10_000 {
            l.allow(&k);
        }
        assert_eq!(l.len(), 100);
        // Tracked keys keep their state: key 0 is still empty.
        assert!(!l.allow(&0));
        // New keys share the overflow bucket, which the flood has emptied.
        assert!(!l.allow(&20_000));
        let m = l.metrics.render();
        assert!(
            m.contains("doorcode_rate_limited_total{limit=\"track\"}"),
            "{m}"
        );
    }

    #[test]
    fn full_buckets_are_swept_to_make_room() {
        // Refill is instant at this rate: every bucket is full again at once.
        let l = limiter(1.0, 1e9, 10);
        for k in 0..10 {
            assert!(l.allow(&k));
        }
        std::thread::sleep(Duration::from_millis(2));
        assert!(l.allow(&99), "a sweep made room");
        assert!(l.len() <= 10);
    }
}
