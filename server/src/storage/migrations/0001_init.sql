CREATE TABLE parcels(
  parcel_id TEXT PRIMARY KEY,
  recipient_name TEXT NOT NULL,
  email TEXT,
  phone TEXT,
  address TEXT NOT NULL,
  value {real} NOT NULL,
  currency TEXT NOT NULL,
  requires_code {bool} NOT NULL,
  track_token TEXT NOT NULL UNIQUE,
  status TEXT NOT NULL DEFAULT 'pending',
  delivery_date {date},
  attempt {int} NOT NULL DEFAULT 0,
  route_id TEXT,
  wrong_tries {int} NOT NULL DEFAULT 0,
  locked {bool} NOT NULL DEFAULT {false},
  created_at {timestamp} NOT NULL,
  updated_at {timestamp} NOT NULL
);
CREATE TABLE parcel_events(
  id {serial},
  parcel_id TEXT NOT NULL,
  at {timestamp} NOT NULL,
  kind TEXT NOT NULL,
  detail TEXT NOT NULL
);
CREATE INDEX parcel_events_parcel ON parcel_events(parcel_id, id);
CREATE TABLE routes(
  route_id TEXT NOT NULL,
  delivery_date {date} NOT NULL,
  courier_id TEXT NOT NULL,
  revision {int} NOT NULL,
  updated_at {timestamp} NOT NULL,
  PRIMARY KEY(route_id, delivery_date)
);
CREATE UNIQUE INDEX routes_courier_day ON routes(courier_id, delivery_date);
CREATE TABLE stops(
  route_id TEXT NOT NULL,
  delivery_date {date} NOT NULL,
  stop_id TEXT NOT NULL,
  sequence {int} NOT NULL,
  address TEXT NOT NULL,
  recipient TEXT NOT NULL,
  PRIMARY KEY(route_id, delivery_date, stop_id)
);
CREATE TABLE stop_parcels(
  route_id TEXT NOT NULL,
  delivery_date {date} NOT NULL,
  stop_id TEXT NOT NULL,
  parcel_id TEXT NOT NULL,
  position {int} NOT NULL,
  PRIMARY KEY(delivery_date, parcel_id)
);
CREATE INDEX stop_parcels_route ON stop_parcels(route_id, delivery_date);
CREATE TABLE enrollments(
  code_hash TEXT PRIMARY KEY,
  courier_id TEXT NOT NULL,
  expires_at {timestamp} NOT NULL,
  created_at {timestamp} NOT NULL,
  used_at {timestamp}
);
CREATE TABLE devices(
  device_id TEXT PRIMARY KEY,
  courier_id TEXT NOT NULL,
  name TEXT NOT NULL,
  public_key TEXT NOT NULL,
  token_hash TEXT NOT NULL UNIQUE,
  enrolled_at {timestamp} NOT NULL,
  last_seq {int} NOT NULL DEFAULT 0
);
CREATE INDEX devices_courier ON devices(courier_id);
CREATE TABLE manifests(
  route_id TEXT NOT NULL,
  delivery_date {date} NOT NULL,
  device_id TEXT NOT NULL,
  manifest_id TEXT NOT NULL,
  revision {int} NOT NULL,
  envelope TEXT NOT NULL,
  PRIMARY KEY(route_id, delivery_date, device_id)
);
CREATE TABLE manifest_items(
  device_id TEXT NOT NULL,
  manifest_id TEXT NOT NULL,
  revision {int} NOT NULL,
  parcel_id TEXT NOT NULL,
  delivery_date {date} NOT NULL,
  attempt {int} NOT NULL,
  PRIMARY KEY(device_id, manifest_id, revision, parcel_id)
);
CREATE INDEX manifest_items_parcel ON manifest_items(device_id, parcel_id);
CREATE TABLE confirmations(
  confirmation_id TEXT PRIMARY KEY,
  device_id TEXT NOT NULL,
  seq {int} NOT NULL,
  manifest_id TEXT NOT NULL,
  revision {int} NOT NULL,
  parcel_id TEXT NOT NULL,
  delivery_date {date} NOT NULL,
  attempt {int} NOT NULL,
  outcome TEXT NOT NULL,
  reason TEXT,
  verified TEXT NOT NULL,
  failed_attempts {int} NOT NULL,
  code_ok {bool},
  disputed {bool} NOT NULL,
  recorded_at {timestamp} NOT NULL,
  received_at {timestamp} NOT NULL
);
CREATE INDEX confirmations_seq ON confirmations(device_id, seq);
CREATE TABLE signals(
  id {serial},
  kind TEXT NOT NULL,
  parcel_id TEXT,
  device_id TEXT,
  confirmation_id TEXT,
  detail TEXT NOT NULL,
  at {timestamp} NOT NULL
);
CREATE TABLE notices(
  id {serial},
  parcel_id TEXT NOT NULL,
  delivery_date {date} NOT NULL,
  attempt {int} NOT NULL,
  status TEXT NOT NULL DEFAULT 'pending',
  tries {int} NOT NULL DEFAULT 0,
  next_attempt_at {timestamp} NOT NULL,
  claimed_until {timestamp},
  last_error TEXT,
  created_at {timestamp} NOT NULL,
  sent_at {timestamp}
);
CREATE INDEX notices_due ON notices(status, next_attempt_at);
