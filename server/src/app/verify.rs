//! The online code check at the door.

use super::{App, ServiceError};
use crate::domain::At;
use crate::domain::verify::VerifyInput;
use crate::storage::{Device, VerifyOutcome};
use doorcode_core::codes::Code;

impl App {
    /// The day whose notice a courier may ask to be sent again: the same
    /// rules as an online try (on the device's current route, needs a code,
    /// within its day, not held). Nothing is counted.
    pub async fn resend_day(
        &self,
        device: &Device,
        parcel_id: &str,
    ) -> Result<chrono::NaiveDate, ServiceError> {
        let facts = self.storage.verify_facts(device, parcel_id).await?;
        let target = crate::domain::verify::target(&facts, self.cfg.now(), &self.policy())
            .map_err(ServiceError::Refused)?;
        Ok(target.delivery_date)
    }

    /// Online check at the door: refused outside the code's day and off the
    /// courier's current route; counted, locked at `max_attempts`.
    pub async fn verify(
        &self,
        device: &Device,
        parcel_id: &str,
        given: &Code,
    ) -> Result<VerifyOutcome, ServiceError> {
        let policy = self.policy();
        for _ in 0..3 {
            let facts = self.storage.verify_facts(device, parcel_id).await?;
            let now = self.cfg.now();
            let target = crate::domain::verify::target(&facts, now, &policy)
                .map_err(ServiceError::Refused)?;
            let expected = self.code(parcel_id, target.delivery_date, target.attempt)?;
            let input = VerifyInput {
                device_id: device.device_id.clone(),
                parcel_id: parcel_id.to_string(),
                target,
                ok: expected.ct_eq(given),
            };
            let at = At {
                now,
                policy: &policy,
            };
            let out = self.storage.record_verify(input, at).await?;
            if out != VerifyOutcome::Stale {
                return Ok(out);
            }
        }
        Err(ServiceError::Changed)
    }
}
