-- Devices: revocation and last seen (revoked or 30-day-unseen devices get no
-- manifest builds). Existing devices were last seen at enrollment.
ALTER TABLE devices ADD COLUMN revoked_at {timestamp};
ALTER TABLE devices ADD COLUMN last_seen_at {timestamp};
UPDATE devices SET last_seen_at = enrolled_at;
-- @postgres ALTER TABLE devices ALTER COLUMN last_seen_at SET NOT NULL;
-- Signals: the delivery day they concern (paging by day), and for
-- stale_manifest whether the code matched. Existing rows take their
-- confirmation's day, else their parcel's, else the UTC date they were raised.
-- @sqlite ALTER TABLE signals ADD COLUMN day TEXT NOT NULL DEFAULT '';
-- @postgres ALTER TABLE signals ADD COLUMN day DATE;
ALTER TABLE signals ADD COLUMN code_matched {bool};
UPDATE signals SET day = COALESCE(
  (SELECT c.delivery_date FROM confirmations c WHERE c.confirmation_id = signals.confirmation_id),
  (SELECT p.delivery_date FROM parcels p WHERE p.parcel_id = signals.parcel_id),
-- @sqlite   substr(at, 1, 10));
-- @postgres   (at AT TIME ZONE 'UTC')::date);
-- @postgres ALTER TABLE signals ALTER COLUMN day SET NOT NULL;
CREATE INDEX signals_day ON signals(day, id);
CREATE INDEX signals_confirmation ON signals(confirmation_id);
