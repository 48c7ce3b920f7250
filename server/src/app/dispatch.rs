//! The dispatcher's actions: routes, enrollment codes, reissues, closing a
//! day and reading its signals. The API and the board both call these.

use super::{App, ServiceError};
use crate::domain::disputes::{self, Cursor};
use crate::domain::{At, RouteStatus};
use crate::keys::{random_bytes, token_hash};
use crate::storage::{
    Closed, Moved, NewEnrollment, ReissueInput, RouteInput, RouteSaved, Signal, StorageError,
};
use chrono::{DateTime, NaiveDate, Utc};

const ENROLLMENT_MINUTES: i64 = 15;

/// A one-time enrollment code, shown once.
#[derive(Debug)]
pub struct Enrollment {
    pub code: String,
    pub courier_id: String,
    pub expires_at: DateTime<Utc>,
}

/// A closed day: where its undelivered parcels went.
#[derive(Debug)]
pub struct DayClosed {
    pub date: NaiveDate,
    pub next_date: NaiveDate,
    pub moved: Moved,
}

/// Enrollment codes as typed: case, dashes and spaces do not matter, and the
/// Crockford look-alikes O, I and L read as 0, 1 and 1.
pub(crate) fn normalize_enrollment(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| match c.to_ascii_uppercase() {
            'O' => '0',
            'I' | 'L' => '1',
            c => c,
        })
        .take(64)
        .collect()
}

impl App {
    /// Save a checked route (codes, notices) and build its manifests;
    /// the number of manifests built.
    pub async fn save_route(&self, input: RouteInput) -> Result<(RouteSaved, u32), ServiceError> {
        let policy = self.policy();
        let at = At {
            now: self.cfg.now(),
            policy: &policy,
        };
        let saved = self.storage.save_route(input, at).await?;
        if saved.status == RouteStatus::Unchanged {
            // Its manifests were built for this revision already.
            return Ok((saved, 0));
        }
        self.notice_wake.notify_one();
        let built = self
            .rebuild_routes(&[(saved.route_id.clone(), saved.delivery_date)])
            .await?;
        tracing::info!(route_id = %saved.route_id, date = %saved.delivery_date, status = %saved.status, revision = saved.revision, notices = saved.notices_queued, "route saved");
        Ok((saved, built))
    }

    /// A one-time code a courier's new handset enrolls with (stored hashed).
    pub async fn enroll(&self, courier_id: &str) -> Result<Enrollment, ServiceError> {
        crate::validate::id(courier_id, "courier_id").map_err(|message| ServiceError::Invalid {
            kind: "invalid_enrollment",
            message,
        })?;
        // 60 bits in Crockford base32, grouped for typing on a phone.
        const ALPHA: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
        let bytes = random_bytes::<12>().map_err(ServiceError::internal)?;
        let mut code = String::new();
        for (i, b) in bytes.iter().enumerate() {
            if i == 4 || i == 8 {
                code.push('-');
            }
            code.push(char::from(ALPHA[usize::from(b & 31)]));
        }
        let now = self.cfg.now();
        let expires_at = now + chrono::Duration::minutes(ENROLLMENT_MINUTES);
        self.storage
            .create_enrollment(NewEnrollment {
                code_hash: token_hash(&normalize_enrollment(&code)),
                courier_id: courier_id.to_string(),
                expires_at,
                created_at: now,
            })
            .await?;
        Ok(Enrollment {
            code,
            courier_id: courier_id.to_string(),
            expires_at,
        })
    }

    /// End a day: undelivered parcels move to the next working day with a
    /// new code and notice; their routes' manifests are rebuilt.
    pub async fn close_day(&self, date: NaiveDate) -> Result<DayClosed, ServiceError> {
        let policy = self.policy();
        let at = At {
            now: self.cfg.now(),
            policy: &policy,
        };
        let Closed { next_date, moved } =
            self.storage
                .close_day(date, at)
                .await
                .map_err(|e| match e {
                    StorageError::Invalid(m) => ServiceError::NoWorkingDay(m),
                    e => e.into(),
                })?;
        self.notice_wake.notify_one();
        self.rebuild_routes(&moved.routes).await?;
        tracing::info!(%date, %next_date, moved = moved.parcel_ids.len(), "day closed");
        Ok(DayClosed {
            date,
            next_date,
            moved,
        })
    }

    /// One page of a day's signals (disputes among them), oldest first, and
    /// the cursor of the next page if there is one.
    pub async fn signals_page(
        &self,
        day: NaiveDate,
        after: Cursor,
        limit: u32,
    ) -> Result<(Vec<Signal>, Option<Cursor>), ServiceError> {
        let mut page = self
            .storage
            .signals_on(day, after.0, limit.saturating_add(1))
            .await?;
        let next = disputes::next_cursor(&mut page, limit);
        Ok((page, next))
    }

    /// Void a parcel's code: the next attempt, a new tracking link, a notice,
    /// and its route's manifests rebuilt.
    pub async fn reissue(
        &self,
        parcel_id: &str,
        requires_code: Option<bool>,
    ) -> Result<Moved, ServiceError> {
        let input = ReissueInput {
            parcel_id: parcel_id.to_string(),
            track: self
                .track_key
                .fresh(parcel_id)
                .map_err(ServiceError::internal)?
                .1,
            requires_code,
        };
        let moved = self.storage.reissue(input, self.cfg.now()).await?;
        self.notice_wake.notify_one();
        self.rebuild_routes(&moved.routes).await?;
        Ok(moved)
    }

    /// "I did not order this" from the tracking page: the code is void, the
    /// parcel held, dispatch signalled, and its route's manifests rebuilt so
    /// that handsets pull `"hold": true` on their next sync.
    pub async fn hold(&self, parcel_id: &str) -> Result<Moved, ServiceError> {
        let policy = self.policy();
        let at = crate::domain::At {
            now: self.cfg.now(),
            policy: &policy,
        };
        let moved = self.storage.hold_parcel(parcel_id, at).await?;
        self.rebuild_routes(&moved.routes).await?;
        Ok(moved)
    }
}
