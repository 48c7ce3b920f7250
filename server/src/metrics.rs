//! A small Prometheus text-format registry. Labels are route templates and
//! fixed words only: never a code, a token or a parcel id, and nothing a
//! request can choose. (Each distinct HTTP method used to become a label: 600
//! requests with 64 KB methods took the server from 14 to 90 MiB and made
//! `/metrics` 551 MB.)

use crate::domain::lifecycle::{Removed, TABLES};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

const BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

/// The method label: one of a fixed set, anything else is `other`.
pub fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The in-process limits whose refusals are counted, by label.
pub const LIMITS: [&str; 4] = ["enrollment", "login", "resend", "track"];

#[derive(Default)]
pub struct Metrics {
    /// (method label, route template, status): all bounded sets.
    requests: Mutex<BTreeMap<(&'static str, String, u16), u64>>,
    latency: Mutex<BTreeMap<(&'static str, String), Histogram>>,
    enrollment_failures: AtomicU64,
    rate_limited: [AtomicU64; LIMITS.len()],
    pub manifest_builds: AtomicU64,
    /// Full manifest answers served from the node's envelope cache.
    pub manifests_from_cache: AtomicU64,
    notices: Mutex<BTreeMap<(String, &'static str), u64>>,
    confirmations: Mutex<BTreeMap<&'static str, u64>>,
    verifies: Mutex<BTreeMap<&'static str, u64>>,
    pub lifecycle: LifecycleCounters,
}

impl Metrics {
    /// `route` must be a route template (or a fixed word such as `unmatched`).
    pub fn request(&self, method: &'static str, route: &str, status: u16, secs: f64) {
        if let Ok(mut m) = self.requests.lock() {
            *m.entry((method, route.to_string(), status)).or_default() += 1;
        }
        if let Ok(mut m) = self.latency.lock() {
            let h = m.entry((method, route.to_string())).or_default();
            for (i, b) in BUCKETS.iter().enumerate() {
                if secs <= *b {
                    h.counts[i] += 1;
                }
            }
            h.sum += secs;
            h.count += 1;
        }
    }

    /// An enrollment refused because its code was unknown, used or expired.
    pub fn enrollment_failed(&self) {
        self.enrollment_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// A request refused with 429 by the limit named `limit` (one of [`LIMITS`]).
    pub fn rate_limited(&self, limit: &'static str) {
        if let Some(i) = LIMITS.iter().position(|l| *l == limit) {
            if let Some(c) = self.rate_limited.get(i) {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub fn manifest_built(&self) {
        self.manifest_builds.fetch_add(1, Ordering::Relaxed);
    }

    /// `result` is `sent` or `failed`.
    pub fn notice(&self, channel: &str, result: &'static str) {
        if let Ok(mut m) = self.notices.lock() {
            *m.entry((channel.to_string(), result)).or_default() += 1;
        }
    }

    /// `status` is accepted, duplicate, rejected or disputed.
    pub fn confirmation(&self, status: &'static str) {
        if let Ok(mut m) = self.confirmations.lock() {
            *m.entry(status).or_default() += 1;
        }
    }

    pub fn verify(&self, result: &'static str) {
        if let Ok(mut m) = self.verifies.lock() {
            *m.entry(result).or_default() += 1;
        }
    }

    /// Render in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP doorcode_http_requests_total HTTP requests by route template and status."
        );
        let _ = writeln!(out, "# TYPE doorcode_http_requests_total counter");
        if let Ok(m) = self.requests.lock() {
            for ((method, route, status), n) in m.iter() {
                let _ = writeln!(
                    out,
                    "doorcode_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {n}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP doorcode_http_request_duration_seconds HTTP request latency."
        );
        let _ = writeln!(
            out,
            "# TYPE doorcode_http_request_duration_seconds histogram"
        );
        if let Ok(m) = self.latency.lock() {
            for ((method, route), h) in m.iter() {
                let l = format!("method=\"{method}\",route=\"{route}\"");
                for (i, b) in BUCKETS.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "doorcode_http_request_duration_seconds_bucket{{{l},le=\"{b}\"}} {}",
                        h.counts[i]
                    );
                }
                let _ = writeln!(
                    out,
                    "doorcode_http_request_duration_seconds_bucket{{{l},le=\"+Inf\"}} {}",
                    h.count
                );
                let _ = writeln!(
                    out,
                    "doorcode_http_request_duration_seconds_sum{{{l}}} {}",
                    h.sum
                );
                let _ = writeln!(
                    out,
                    "doorcode_http_request_duration_seconds_count{{{l}}} {}",
                    h.count
                );
            }
        }
        single(
            &mut out,
            "counter",
            "doorcode_manifest_builds_total",
            "Manifests built and signed.",
            self.manifest_builds.load(Ordering::Relaxed),
        );
        single(
            &mut out,
            "counter",
            "doorcode_manifests_from_cache_total",
            "Full manifest answers whose body came from the node's envelope cache.",
            self.manifests_from_cache.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP doorcode_notices_total Notices sent or failed, by channel."
        );
        let _ = writeln!(out, "# TYPE doorcode_notices_total counter");
        if let Ok(m) = self.notices.lock() {
            for ((channel, result), n) in m.iter() {
                let _ = writeln!(
                    out,
                    "doorcode_notices_total{{channel=\"{channel}\",result=\"{result}\"}} {n}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP doorcode_confirmations_total Confirmations by ingest status."
        );
        let _ = writeln!(out, "# TYPE doorcode_confirmations_total counter");
        if let Ok(m) = self.confirmations.lock() {
            for (status, n) in m.iter() {
                let _ = writeln!(
                    out,
                    "doorcode_confirmations_total{{status=\"{status}\"}} {n}"
                );
            }
        }
        single(
            &mut out,
            "counter",
            "doorcode_enrollment_failures_total",
            "Enrollments refused for an unknown, used or expired code.",
            self.enrollment_failures.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP doorcode_rate_limited_total Requests refused with 429, by limit."
        );
        let _ = writeln!(out, "# TYPE doorcode_rate_limited_total counter");
        for (limit, n) in LIMITS.iter().zip(&self.rate_limited) {
            let _ = writeln!(
                out,
                "doorcode_rate_limited_total{{limit=\"{limit}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP doorcode_verify_total Online code checks by result."
        );
        let _ = writeln!(out, "# TYPE doorcode_verify_total counter");
        if let Ok(m) = self.verifies.lock() {
            for (result, n) in m.iter() {
                let _ = writeln!(out, "doorcode_verify_total{{result=\"{result}\"}} {n}");
            }
        }
        self.lifecycle.render(&mut out);
        out
    }
}

/// One metric without labels (`kind` is `counter` or `gauge`): its HELP,
/// TYPE and value lines.
fn single(out: &mut String, kind: &str, name: &str, help: &str, value: u64) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    let _ = writeln!(out, "{name} {value}");
}

/// Rows removed, by kind of run (`retention` or `erase`) and table (one of
/// [`TABLES`], the retention job's and `erase`'s counts): a bounded label set. Also the last run's totals.
#[derive(Default)]
pub struct LifecycleCounters {
    rows: Mutex<std::collections::BTreeMap<(&'static str, &'static str), u64>>,
    pub(crate) runs: AtomicU64,
    pub(crate) last_run_rows: AtomicU64,
}

impl LifecycleCounters {
    pub(crate) fn count(&self, kind: &'static str, removed: &Removed) {
        if let Ok(mut m) = self.rows.lock() {
            for (table, n) in &removed.0 {
                if let Some(t) = TABLES.iter().find(|t| **t == table.as_str()) {
                    *m.entry((kind, *t)).or_default() += n;
                }
            }
        }
    }

    /// Append the Prometheus text of these counters.
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP doorcode_lifecycle_rows_total Rows removed by the retention job and by erasures, by table."
        );
        let _ = writeln!(out, "# TYPE doorcode_lifecycle_rows_total counter");
        if let Ok(m) = self.rows.lock() {
            for ((kind, table), n) in m.iter() {
                let _ = writeln!(
                    out,
                    "doorcode_lifecycle_rows_total{{kind=\"{kind}\",table=\"{table}\"}} {n}"
                );
            }
        }
        single(
            out,
            "counter",
            "doorcode_retention_runs_total",
            "Retention runs this node completed.",
            self.runs.load(Ordering::Relaxed),
        );
        single(
            out,
            "gauge",
            "doorcode_retention_last_run_rows",
            "Rows the last retention run removed.",
            self.last_run_rows.load(Ordering::Relaxed),
        );
    }
}
