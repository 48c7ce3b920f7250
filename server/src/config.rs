//! Server configuration: what `doorcode serve` flags set, usable in-process too.

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc, Weekday};
use chrono_tz::Tz;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// Where time comes from; tests and the demo pin it to a delivery day.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

#[derive(Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// None or `sqlite:` → `<data-dir>/doorcode.db`; `sqlite:PATH` → that file;
    /// `postgres://…` → PostgreSQL (see `storage::postgres`).
    pub database: Option<String>,
    /// Notice channels, each `file:DIR`, `smtp[s]://…` or `webhook:URL`
    /// (`--notify`, repeatable); none → `file:<data-dir>/notices`.
    pub notify: Vec<String>,
    /// `whsec_<base64>`: signs webhook notices (`--webhook-secret`).
    pub webhook_secret: Option<String>,
    /// Base URL for customer track links, e.g. `https://depot.example`.
    pub public_url: Option<String>,
    pub policy: CodePolicy,
    pub calendar: Calendar,
    pub max_attempts: u32,
    pub tag_bits: u8,
    pub code_digits: u8,
    /// Wrong tries reported at the door from which dispatch gets a signal.
    pub many_tries_threshold: u32,
    pub notice_poll: std::time::Duration,
    pub request_timeout: std::time::Duration,
    pub body_limit: usize,
    pub confirmations_body_limit: usize,
    /// Proxies whose `X-Forwarded-For` is believed (`--trusted-proxies`).
    pub trusted_proxies: Vec<crate::client_addr::Cidr>,
    /// Also serve `/metrics`, without a token, here (`--metrics-listen`).
    pub metrics_listen: Option<SocketAddr>,
    /// A request's headers must arrive within this of its first byte.
    pub header_timeout: std::time::Duration,
    /// A keep-alive connection idle this long is closed.
    pub idle_timeout: std::time::Duration,
    /// A response the client stops reading for this long is dropped.
    pub write_timeout: std::time::Duration,
    /// Open connections at most (`--max-connections`).
    pub max_connections: usize,
    /// How long a sender's claim on a notice lasts; it renews it every third
    /// of this while it sends, so a live sender never loses it.
    pub notice_lease: std::time::Duration,
    /// Days personal data is kept after a parcel's last day (`--retention-days`).
    pub retention_days: u32,
    /// How often the retention job runs.
    pub retention_every: std::time::Duration,
    pub clock: Clock,
}

/// `--retention-days` when not given.
pub const DEFAULT_RETENTION_DAYS: u32 = 90;

impl Config {
    /// Defaults for a data dir, listening on `listen`.
    pub fn new(data_dir: impl Into<PathBuf>, listen: SocketAddr) -> Self {
        Self {
            data_dir: data_dir.into(),
            listen,
            database: None,
            notify: Vec::new(),
            webhook_secret: None,
            public_url: None,
            policy: CodePolicy {
                value_threshold: 50.0,
            },
            calendar: Calendar::default(),
            max_attempts: 5,
            tag_bits: doorcode_core::codes::DEFAULT_TAG_BITS,
            code_digits: doorcode_core::codes::DEFAULT_DIGITS,
            many_tries_threshold: 3,
            notice_poll: std::time::Duration::from_millis(500),
            request_timeout: std::time::Duration::from_secs(30),
            body_limit: 1024 * 1024,
            confirmations_body_limit: 8 * 1024 * 1024,
            trusted_proxies: Vec::new(),
            metrics_listen: None,
            header_timeout: std::time::Duration::from_secs(10),
            idle_timeout: std::time::Duration::from_secs(60),
            write_timeout: std::time::Duration::from_secs(30),
            max_connections: 10_000,
            notice_lease: std::time::Duration::from_secs(60),
            retention_days: DEFAULT_RETENTION_DAYS,
            retention_every: std::time::Duration::from_secs(3600),
            clock: Arc::new(Utc::now),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }

    pub fn conn_limits(&self) -> crate::serve::ConnLimits {
        crate::serve::ConnLimits {
            header_timeout: self.header_timeout,
            idle_timeout: self.idle_timeout,
            write_timeout: self.write_timeout,
            max_connections: self.max_connections,
        }
    }
}

/// Whether a parcel needs a code: an explicit flag wins, else its value.
#[derive(Debug, Clone, Copy)]
pub struct CodePolicy {
    /// Parcels worth at least this much (in any currency's major unit) need a code.
    pub value_threshold: f64,
}

impl CodePolicy {
    pub fn requires_code(&self, explicit: Option<bool>, value: f64) -> bool {
        explicit.unwrap_or(value >= self.value_threshold)
    }
}

/// The depot's calendar: its time zone, working days and holidays.
#[derive(Debug, Clone)]
pub struct Calendar {
    pub time_zone: Tz,
    pub working_days: Vec<Weekday>,
    pub holidays: Vec<NaiveDate>,
}

impl Default for Calendar {
    fn default() -> Self {
        Self {
            time_zone: chrono_tz::UTC,
            working_days: vec![
                Weekday::Mon,
                Weekday::Tue,
                Weekday::Wed,
                Weekday::Thu,
                Weekday::Fri,
                Weekday::Sat,
            ],
            holidays: Vec::new(),
        }
    }
}

impl Calendar {
    /// The UTC instant a local date starts (first valid instant on DST gaps).
    fn start_of(&self, date: NaiveDate) -> DateTime<Utc> {
        let mut t = date.and_time(chrono::NaiveTime::MIN);
        // A DST gap can swallow local midnight; step forward until it exists.
        for _ in 0..48 {
            if let Some(dt) = self.time_zone.from_local_datetime(&t).earliest() {
                return dt.with_timezone(&Utc);
            }
            t += Duration::minutes(30);
        }
        Utc.from_utc_datetime(&date.and_time(chrono::NaiveTime::MIN))
    }

    /// The day's code validity `[valid_from, valid_until)` in UTC.
    pub fn window(&self, date: NaiveDate) -> (DateTime<Utc>, DateTime<Utc>) {
        let next = date.succ_opt().unwrap_or(date);
        (self.start_of(date), self.start_of(next))
    }

    /// The depot's local date at `now`.
    pub fn today(&self, now: DateTime<Utc>) -> NaiveDate {
        now.with_timezone(&self.time_zone).date_naive()
    }

    pub fn is_working_day(&self, date: NaiveDate) -> bool {
        self.working_days.contains(&date.weekday()) && !self.holidays.contains(&date)
    }

    /// The first working day after `date`; None if none within a year.
    pub fn next_working_day(&self, date: NaiveDate) -> Option<NaiveDate> {
        let mut d = date;
        for _ in 0..366 {
            d = d.succ_opt()?;
            if self.is_working_day(d) {
                return Some(d);
            }
        }
        None
    }

    /// Parse `mon,tue,...` or ranges like `mon-fri`.
    pub fn parse_working_days(s: &str) -> Result<Vec<Weekday>, String> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let wd = |x: &str| {
                x.parse::<Weekday>()
                    .map_err(|_| format!("unknown weekday {x:?}"))
            };
            if let Some((a, b)) = part.split_once('-') {
                let (mut d, end) = (wd(a)?, wd(b)?);
                for _ in 0..7 {
                    if !out.contains(&d) {
                        out.push(d);
                    }
                    if d == end {
                        break;
                    }
                    d = d.succ();
                }
            } else {
                let d = wd(part)?;
                if !out.contains(&d) {
                    out.push(d);
                }
            }
        }
        if out.is_empty() {
            return Err("at least one working day is needed".into());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn policy_explicit_wins() {
        let p = CodePolicy {
            value_threshold: 50.0,
        };
        assert!(p.requires_code(None, 50.0));
        assert!(!p.requires_code(None, 49.99));
        assert!(!p.requires_code(Some(false), 500.0));
        assert!(p.requires_code(Some(true), 1.0));
    }

    #[test]
    fn window_in_zone() {
        let c = Calendar {
            time_zone: chrono_tz::Europe::Berlin,
            ..Calendar::default()
        };
        let (a, b) = c.window(d("2026-11-23"));
        assert_eq!(a.to_rfc3339(), "2026-11-22T23:00:00+00:00");
        assert_eq!(b.to_rfc3339(), "2026-11-23T23:00:00+00:00");
        // DST change day is 23 hours long.
        let (a, b) = c.window(d("2026-03-29"));
        assert_eq!((b - a).num_hours(), 23);
    }

    #[test]
    fn next_working_day_skips_sundays_and_holidays() {
        let c = Calendar {
            holidays: vec![d("2026-11-30")],
            ..Calendar::default()
        };
        assert_eq!(c.next_working_day(d("2026-11-28")), Some(d("2026-12-01")));
        assert_eq!(c.next_working_day(d("2026-11-23")), Some(d("2026-11-24")));
        assert_eq!(Calendar::parse_working_days("mon-fri").unwrap().len(), 5);
        assert!(Calendar::parse_working_days("funday").is_err());
    }
}
