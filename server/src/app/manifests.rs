//! Manifests: built once per route revision and device, signed, stored.

use super::{App, ServiceError};
use crate::domain::devices;
use crate::storage::{BuildKey, Device, RouteData, StoredManifest};
use chrono::NaiveDate;
use doorcode_core::manifest::{MANIFEST_FORMAT, Manifest, ManifestParcel, Stop};

impl App {
    /// The device's current manifest for `date`, given the current build
    /// the caller read with the device ([`crate::storage::Storage::device_with_manifest`]):
    /// most fetches (and every 304) have one, so no route load.
    pub async fn manifest_for(
        &self,
        device: &Device,
        date: NaiveDate,
        current: Option<StoredManifest>,
    ) -> Result<StoredManifest, ServiceError> {
        if let Some(m) = current {
            return Ok(m);
        }
        let route = self
            .storage
            .route_for_courier(&device.courier_id, date)
            .await?
            .ok_or(ServiceError::NoRoute(date))?;
        self.ensure_manifest(&route, device).await
    }

    /// The device's manifest for a route at the route's current revision:
    /// served from storage when already built, else built once (fresh salts),
    /// signed and stored.
    pub async fn ensure_manifest(
        &self,
        route: &RouteData,
        device: &Device,
    ) -> Result<StoredManifest, ServiceError> {
        let key = BuildKey {
            route_id: &route.route_id,
            date: route.delivery_date,
            device_id: &device.device_id,
        };
        let cached = self.storage.manifest(key).await?;
        if let Some(m) = &cached {
            if m.revision >= route.revision {
                return Ok(m.clone());
            }
        }
        let manifest_id = match cached {
            Some(m) => m.manifest_id,
            None => format!("m-{}", uuid::Uuid::new_v4()),
        };
        let date = route.delivery_date;
        let mut stops = Vec::with_capacity(route.stops.len());
        let mut items = Vec::new();
        let mut held = std::collections::BTreeSet::new();
        for s in &route.stops {
            let mut parcels = Vec::with_capacity(s.parcels.len());
            for p in &s.parcels {
                items.push((p.parcel_id.clone(), p.attempt));
                if p.held {
                    held.insert(p.parcel_id.clone());
                }
                if p.requires_code {
                    let code = self.code(&p.parcel_id, date, p.attempt)?;
                    let mp = ManifestParcel::with_code(
                        &p.parcel_id,
                        p.attempt,
                        date,
                        &code,
                        self.cfg.tag_bits,
                    )
                    .map_err(|e| ServiceError::internal(format!("manifest tag: {e}")))?;
                    parcels.push(mp);
                } else {
                    parcels.push(ManifestParcel {
                        parcel_id: p.parcel_id.clone(),
                        requires_code: false,
                        attempt: p.attempt,
                        salt: None,
                        tag: None,
                    });
                }
            }
            stops.push(Stop {
                stop_id: s.stop_id.clone(),
                sequence: s.sequence,
                address: s.address.clone(),
                recipient: s.recipient.clone(),
                parcels,
            });
        }
        let (valid_from, valid_until) = self.cfg.calendar.window(date);
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            manifest_id: manifest_id.clone(),
            route_id: route.route_id.clone(),
            courier_id: route.courier_id.clone(),
            device_id: device.device_id.clone(),
            delivery_date: date,
            revision: route.revision,
            issued_at: self.cfg.now(),
            valid_from,
            valid_until,
            tag_bits: self.cfg.tag_bits,
            max_attempts: self.cfg.max_attempts,
            code_digits: self.cfg.code_digits,
            stops,
        };
        let env = manifest
            .seal_holding(&self.signer.current, &held)
            .map_err(|e| ServiceError::internal(format!("manifest build: {e}")))?;
        let envelope_json =
            serde_json::to_string(&env).map_err(|e| ServiceError::internal(e.to_string()))?;
        self.metrics.manifest_built();
        tracing::info!(route_id = %route.route_id, %date, device_id = %device.device_id, revision = route.revision, "manifest built");
        let stored = self
            .storage
            .store_manifest(StoredManifest {
                route_id: route.route_id.clone(),
                delivery_date: date,
                device_id: device.device_id.clone(),
                manifest_id,
                revision: route.revision,
                envelope_json,
                items,
            })
            .await?;
        Ok(stored)
    }

    /// Rebuild the manifests of changed routes for their courier's devices,
    /// except revoked and long-unseen ones ([`devices::gets_builds`]).
    pub async fn rebuild_routes(
        &self,
        routes: &[(String, NaiveDate)],
    ) -> Result<u32, ServiceError> {
        let mut built = 0;
        let now = self.cfg.now();
        for (route_id, date) in routes {
            let Some(route) = self.storage.route(route_id, *date).await? else {
                continue;
            };
            for d in self.storage.devices_of_courier(&route.courier_id).await? {
                if devices::gets_builds(&d, now) {
                    self.ensure_manifest(&route, &d).await?;
                    built += 1;
                }
            }
        }
        Ok(built)
    }
}
