//! Latency samples and what the report needs from them.

use std::time::Duration;

/// One timed phase: every request's latency and the wall time of the whole phase.
#[derive(Debug, Clone)]
pub struct Phase {
    /// Requests made.
    pub requests: usize,
    /// Items the phase moved (manifests, confirmations, checks); requests unless batched.
    pub items: usize,
    pub wall: Duration,
    latencies_ms: Vec<f64>,
}

impl Phase {
    pub fn new(items: usize, wall: Duration, mut latencies: Vec<Duration>) -> Self {
        let mut latencies_ms: Vec<f64> = latencies
            .drain(..)
            .map(|d| d.as_secs_f64() * 1000.0)
            .collect();
        latencies_ms.sort_by(f64::total_cmp);
        Self {
            requests: latencies_ms.len(),
            items,
            wall,
            latencies_ms,
        }
    }

    /// Items per second over the phase's wall time.
    pub fn per_second(&self) -> f64 {
        let s = self.wall.as_secs_f64();
        if s > 0.0 { self.items as f64 / s } else { 0.0 }
    }

    /// Nearest-rank percentile in milliseconds (q in 0..=1).
    pub fn percentile_ms(&self, q: f64) -> f64 {
        let n = self.latencies_ms.len();
        if n == 0 {
            return 0.0;
        }
        let rank = (q * n as f64).ceil() as usize;
        self.latencies_ms[rank.clamp(1, n) - 1]
    }

    pub fn p50(&self) -> f64 {
        self.percentile_ms(0.50)
    }

    pub fn p99(&self) -> f64 {
        self.percentile_ms(0.99)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let lat = (1..=100).map(Duration::from_millis).collect();
        let p = Phase::new(200, Duration::from_secs(2), lat);
        assert_eq!(p.requests, 100);
        assert_eq!(p.p50(), 50.0);
        assert_eq!(p.p99(), 99.0);
        assert_eq!(p.percentile_ms(1.0), 100.0);
        assert_eq!(p.per_second(), 100.0);
    }

    #[test]
    fn one_sample_is_every_percentile() {
        let p = Phase::new(1, Duration::from_millis(10), vec![Duration::from_millis(7)]);
        assert_eq!(p.p50(), 7.0);
        assert_eq!(p.p99(), 7.0);
    }
}
