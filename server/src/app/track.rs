//! What the customer's tracking link shows (the JSON answer and the page).

use super::{App, ServiceError};
use crate::domain::ParcelState;
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use utoipa::ToSchema;

/// Days after the end of its delivery day that a track link keeps working.
pub const TRACK_LINK_DAYS: i64 = 30;

/// A parcel as its tracking link shows it: the answer of
/// `GET /v1/track/{token}` and what the page renders.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TrackView {
    pub parcel_id: String,
    pub status: ParcelState,
    pub delivery_date: Option<NaiveDate>,
    /// The code, only while it is valid and the parcel is still out for delivery.
    pub code: Option<String>,
    pub valid_from: Option<DateTime<Utc>>,
    pub valid_until: Option<DateTime<Utc>>,
    pub safety: Vec<String>,
}

impl App {
    /// The parcel behind a tracking link. An expired link is
    /// [`ServiceError::UnknownTrackToken`], exactly like an unknown one.
    pub async fn track(&self, token: &str) -> Result<TrackView, ServiceError> {
        let unknown = || ServiceError::UnknownTrackToken;
        if token.is_empty() || token.len() > 100 {
            return Err(unknown());
        }
        let p = self
            .storage
            .parcel_by_track_hash(&self.track_key.lookup(token))
            .await?
            .ok_or_else(unknown)?;
        let window = p.delivery_date.map(|d| self.cfg.calendar.window(d));
        let now = self.cfg.now();
        // A link expires TRACK_LINK_DAYS after its delivery day and then looks
        // exactly like an unknown one.
        if window.is_some_and(|(_, until)| now >= until + chrono::Duration::days(TRACK_LINK_DAYS)) {
            return Err(unknown());
        }
        let visible = crate::domain::code_visible(
            p.requires_code,
            p.status,
            p.attempt,
            p.delivery_date,
            &self.policy(),
            now,
        );
        let code = match p.delivery_date {
            Some(d) if visible => Some(self.code(&p.parcel_id, d, p.attempt)?.expose().to_string()),
            _ => None,
        };
        let day = p
            .delivery_date
            .map(|d| d.to_string())
            .unwrap_or_else(|| "the delivery day".into());
        let safety = vec![
            format!("This code is for handing over parcel {} only.", p.parcel_id),
            "Share it only in person with the courier at your door. Never give it out by phone, text message or a link; we will never ask you for it.".into(),
            format!("It is valid on {day} only. If the delivery moves, you get a new code."),
            "If you did not order anything, do not share the code; ignore the delivery and tell the sender.".into(),
        ];
        Ok(TrackView {
            parcel_id: p.parcel_id,
            status: p.status,
            delivery_date: p.delivery_date,
            code,
            valid_from: window.map(|w| w.0),
            valid_until: window.map(|w| w.1),
            safety,
        })
    }
}
