CREATE TABLE parcels(
  parcel_id TEXT PRIMARY KEY,
  recipient_name TEXT NOT NULL,
  email TEXT,
  phone TEXT,
  address TEXT NOT NULL,
  value REAL NOT NULL,
  currency TEXT NOT NULL,
  requires_code INTEGER NOT NULL,
  track_token TEXT NOT NULL UNIQUE,
  status TEXT NOT NULL DEFAULT 'pending',
  delivery_date TEXT,
  attempt INTEGER NOT NULL DEFAULT 0,
  route_id TEXT,
  wrong_tries INTEGER NOT NULL DEFAULT 0,
  locked INTEGER NOT NULL DEFAULT 0,
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL
);
CREATE TABLE parcel_events(
  id INTEGER PRIMARY KEY,
  parcel_id TEXT NOT NULL,
  at TEXT NOT NULL,
  kind TEXT NOT NULL,
  detail TEXT NOT NULL
);
CREATE INDEX parcel_events_parcel ON parcel_events(parcel_id, id);
CREATE TABLE routes(
  route_id TEXT NOT NULL,
  delivery_date TEXT NOT NULL,
  courier_id TEXT NOT NULL,
  revision INTEGER NOT NULL,
  updated_at TEXT NOT NULL,
  PRIMARY KEY(route_id, delivery_date)
);
CREATE UNIQUE INDEX routes_courier_day ON routes(courier_id, delivery_date);
CREATE TABLE stops(
  route_id TEXT NOT NULL,
  delivery_date TEXT NOT NULL,
  stop_id TEXT NOT NULL,
  sequence INTEGER NOT NULL,
  address TEXT NOT NULL,
  recipient TEXT NOT NULL,
  PRIMARY KEY(route_id, delivery_date, stop_id)
);
CREATE TABLE stop_parcels(
  route_id TEXT NOT NULL,
  delivery_date TEXT NOT NULL,
  stop_id TEXT NOT NULL,
  parcel_id TEXT NOT NULL,
  position INTEGER NOT NULL,
  PRIMARY KEY(delivery_date, parcel_id)
);
CREATE INDEX stop_parcels_route ON stop_parcels(route_id, delivery_date);
CREATE TABLE enrollments(
  code_hash TEXT PRIMARY KEY,
  courier_id TEXT NOT NULL,
  expires_at TEXT NOT NULL,
  created_at TEXT NOT NULL,
  used_at TEXT
);
CREATE TABLE devices(
  device_id TEXT PRIMARY KEY,
  courier_id TEXT NOT NULL,
  name TEXT NOT NULL,
  public_key TEXT NOT NULL,
  token_hash TEXT NOT NULL UNIQUE,
  enrolled_at TEXT NOT NULL,
  last_seq INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX devices_courier ON devices(courier_id);
CREATE TABLE manifests(
  route_id TEXT NOT NULL,
  delivery_date TEXT NOT NULL,
  device_id TEXT NOT NULL,
  manifest_id TEXT NOT NULL,
  revision INTEGER NOT NULL,
  envelope TEXT NOT NULL,
  PRIMARY KEY(route_id, delivery_date, device_id)
);
CREATE TABLE manifest_items(
  device_id TEXT NOT NULL,
  manifest_id TEXT NOT NULL,
  revision INTEGER NOT NULL,
  parcel_id TEXT NOT NULL,
  delivery_date TEXT NOT NULL,
  attempt INTEGER NOT NULL,
  PRIMARY KEY(device_id, manifest_id, revision, parcel_id)
);
CREATE INDEX manifest_items_parcel ON manifest_items(device_id, parcel_id);
CREATE TABLE confirmations(
  confirmation_id TEXT PRIMARY KEY,
  device_id TEXT NOT NULL,
  seq INTEGER NOT NULL,
  manifest_id TEXT NOT NULL,
  revision INTEGER NOT NULL,
  parcel_id TEXT NOT NULL,
  delivery_date TEXT NOT NULL,
  attempt INTEGER NOT NULL,
  outcome TEXT NOT NULL,
  reason TEXT,
  verified TEXT NOT NULL,
  failed_attempts INTEGER NOT NULL,
  code_ok INTEGER,
  disputed INTEGER NOT NULL,
  recorded_at TEXT NOT NULL,
  received_at TEXT NOT NULL
);
CREATE INDEX confirmations_seq ON confirmations(device_id, seq);
CREATE TABLE signals(
  id INTEGER PRIMARY KEY,
  kind TEXT NOT NULL,
  parcel_id TEXT,
  device_id TEXT,
  confirmation_id TEXT,
  detail TEXT NOT NULL,
  at TEXT NOT NULL
);
CREATE TABLE notices(
  id INTEGER PRIMARY KEY,
  parcel_id TEXT NOT NULL,
  delivery_date TEXT NOT NULL,
  attempt INTEGER NOT NULL,
  status TEXT NOT NULL DEFAULT 'pending',
  tries INTEGER NOT NULL DEFAULT 0,
  next_attempt_at TEXT NOT NULL,
  claimed_until TEXT,
  last_error TEXT,
  created_at TEXT NOT NULL,
  sent_at TEXT
);
CREATE INDEX notices_due ON notices(status, next_attempt_at);
