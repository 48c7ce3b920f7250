//! Which devices get manifest builds, and when a device counts as seen.

use super::Device;
use chrono::{DateTime, Duration, Utc};

/// A device unseen this long gets no more manifest builds.
pub const UNSEEN_DAYS: i64 = 30;

/// How stale `last_seen_at` may get before a request writes it again: one
/// write per device per this long, not one per request.
pub const SEEN_EVERY_MINUTES: i64 = 60;

/// Revoked devices, and devices unseen for [`UNSEEN_DAYS`], get no builds.
pub fn gets_builds(d: &Device, now: DateTime<Utc>) -> bool {
    d.revoked_at.is_none() && now - d.last_seen_at < Duration::days(UNSEEN_DAYS)
}

/// Whether a request from `d` at `now` should record it as seen.
pub fn needs_seen(d: &Device, now: DateTime<Utc>) -> bool {
    now - d.last_seen_at >= Duration::minutes(SEEN_EVERY_MINUTES)
}

#[cfg(test)]
mod tests {
    use super::super::testing::at;
    use super::*;

    fn device(last_seen: DateTime<Utc>) -> Device {
        Device {
            device_id: "D-1".into(),
            courier_id: "C-1".into(),
            name: "phone".into(),
            public_key: "pk".into(),
            revoked_at: None,
            last_seen_at: last_seen,
            enrolled_at: last_seen,
        }
    }

    #[test]
    fn a_device_seen_in_the_last_30_days_gets_builds() {
        let now = at(23, 12, 0);
        assert!(gets_builds(&device(now - Duration::days(29)), now));
        assert!(!gets_builds(&device(now - Duration::days(30)), now));
    }

    #[test]
    fn a_revoked_device_gets_no_builds() {
        let now = at(23, 12, 0);
        let mut d = device(now);
        d.revoked_at = Some(now);
        assert!(!gets_builds(&d, now));
    }

    #[test]
    fn seen_is_written_at_most_once_an_hour() {
        let now = at(23, 12, 0);
        assert!(!needs_seen(&device(now - Duration::minutes(59)), now));
        assert!(needs_seen(&device(now - Duration::minutes(60)), now));
    }
}
