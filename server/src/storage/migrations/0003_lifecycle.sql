-- Data lifecycle: what stays of a parcel once its personal data is gone
-- (retention or erase), one row per parcel and last day; the lease that
-- lets one node at a time run a background job; indexes the retention
-- job's day and parcel deletes use.
CREATE TABLE parcel_records(
  parcel_id TEXT NOT NULL,
  day {date} NOT NULL,
  final_state TEXT NOT NULL,
  attempt {int} NOT NULL,
  failure TEXT,
  signal_kinds TEXT NOT NULL DEFAULT '',
  recorded_at {timestamp} NOT NULL,
  PRIMARY KEY(parcel_id, day)
);
CREATE INDEX parcel_records_day ON parcel_records(day);
CREATE TABLE job_leases(
  job TEXT PRIMARY KEY,
  holder TEXT NOT NULL,
  until {timestamp} NOT NULL
);
CREATE INDEX parcels_day ON parcels(delivery_date);
CREATE INDEX signals_parcel ON signals(parcel_id);
CREATE INDEX confirmations_parcel ON confirmations(parcel_id);
CREATE INDEX confirmations_day ON confirmations(delivery_date);
CREATE INDEX notices_parcel ON notices(parcel_id);
CREATE INDEX notices_day ON notices(delivery_date);
CREATE INDEX manifests_day ON manifests(delivery_date);
CREATE INDEX manifest_items_day ON manifest_items(delivery_date);
CREATE INDEX manifest_items_parcel_only ON manifest_items(parcel_id);
CREATE INDEX stops_day ON stops(delivery_date);
CREATE INDEX stop_parcels_parcel ON stop_parcels(parcel_id);
CREATE INDEX routes_day ON routes(delivery_date);
CREATE INDEX enrollments_expiry ON enrollments(expires_at);
