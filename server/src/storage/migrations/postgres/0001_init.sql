CREATE TABLE parcels(
  parcel_id TEXT PRIMARY KEY,
  recipient_name TEXT NOT NULL,
  email TEXT,
  phone TEXT,
  address TEXT NOT NULL,
  value DOUBLE PRECISION NOT NULL,
  currency TEXT NOT NULL,
  requires_code BOOLEAN NOT NULL,
  track_token TEXT NOT NULL UNIQUE,
  status TEXT NOT NULL DEFAULT 'pending',
  delivery_date DATE,
  attempt BIGINT NOT NULL DEFAULT 0,
  route_id TEXT,
  wrong_tries BIGINT NOT NULL DEFAULT 0,
  locked BOOLEAN NOT NULL DEFAULT FALSE,
  created_at TIMESTAMPTZ NOT NULL,
  updated_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE parcel_events(
  id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  parcel_id TEXT NOT NULL,
  at TIMESTAMPTZ NOT NULL,
  kind TEXT NOT NULL,
  detail TEXT NOT NULL
);
CREATE INDEX parcel_events_parcel ON parcel_events(parcel_id, id);
CREATE TABLE routes(
  route_id TEXT NOT NULL,
  delivery_date DATE NOT NULL,
  courier_id TEXT NOT NULL,
  revision BIGINT NOT NULL,
  updated_at TIMESTAMPTZ NOT NULL,
  PRIMARY KEY(route_id, delivery_date)
);
CREATE UNIQUE INDEX routes_courier_day ON routes(courier_id, delivery_date);
CREATE TABLE stops(
  route_id TEXT NOT NULL,
  delivery_date DATE NOT NULL,
  stop_id TEXT NOT NULL,
  sequence BIGINT NOT NULL,
  address TEXT NOT NULL,
  recipient TEXT NOT NULL,
  PRIMARY KEY(route_id, delivery_date, stop_id)
);
CREATE TABLE stop_parcels(
  route_id TEXT NOT NULL,
  delivery_date DATE NOT NULL,
  stop_id TEXT NOT NULL,
  parcel_id TEXT NOT NULL,
  position BIGINT NOT NULL,
  PRIMARY KEY(delivery_date, parcel_id)
);
CREATE INDEX stop_parcels_route ON stop_parcels(route_id, delivery_date);
CREATE TABLE enrollments(
  code_hash TEXT PRIMARY KEY,
  courier_id TEXT NOT NULL,
  expires_at TIMESTAMPTZ NOT NULL,
  created_at TIMESTAMPTZ NOT NULL,
  used_at TIMESTAMPTZ
);
CREATE TABLE devices(
  device_id TEXT PRIMARY KEY,
  courier_id TEXT NOT NULL,
  name TEXT NOT NULL,
  public_key TEXT NOT NULL,
  token_hash TEXT NOT NULL UNIQUE,
  enrolled_at TIMESTAMPTZ NOT NULL,
  last_seq BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX devices_courier ON devices(courier_id);
CREATE TABLE manifests(
  route_id TEXT NOT NULL,
  delivery_date DATE NOT NULL,
  device_id TEXT NOT NULL,
  manifest_id TEXT NOT NULL,
  revision BIGINT NOT NULL,
  envelope TEXT NOT NULL,
  PRIMARY KEY(route_id, delivery_date, device_id)
);
CREATE TABLE manifest_items(
  device_id TEXT NOT NULL,
  manifest_id TEXT NOT NULL,
  revision BIGINT NOT NULL,
  parcel_id TEXT NOT NULL,
  delivery_date DATE NOT NULL,
  attempt BIGINT NOT NULL,
  PRIMARY KEY(device_id, manifest_id, revision, parcel_id)
);
CREATE INDEX manifest_items_parcel ON manifest_items(device_id, parcel_id);
CREATE TABLE confirmations(
  confirmation_id TEXT PRIMARY KEY,
  device_id TEXT NOT NULL,
  seq BIGINT NOT NULL,
  manifest_id TEXT NOT NULL,
  revision BIGINT NOT NULL,
  parcel_id TEXT NOT NULL,
  delivery_date DATE NOT NULL,
  attempt BIGINT NOT NULL,
  outcome TEXT NOT NULL,
  reason TEXT,
  verified TEXT NOT NULL,
  failed_attempts BIGINT NOT NULL,
  code_ok BOOLEAN,
  disputed BOOLEAN NOT NULL,
  recorded_at TIMESTAMPTZ NOT NULL,
  received_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX confirmations_seq ON confirmations(device_id, seq);
CREATE TABLE signals(
  id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  kind TEXT NOT NULL,
  parcel_id TEXT,
  device_id TEXT,
  confirmation_id TEXT,
  detail TEXT NOT NULL,
  at TIMESTAMPTZ NOT NULL
);
CREATE TABLE notices(
  id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  parcel_id TEXT NOT NULL,
  delivery_date DATE NOT NULL,
  attempt BIGINT NOT NULL,
  status TEXT NOT NULL DEFAULT 'pending',
  tries BIGINT NOT NULL DEFAULT 0,
  next_attempt_at TIMESTAMPTZ NOT NULL,
  claimed_until TIMESTAMPTZ,
  last_error TEXT,
  created_at TIMESTAMPTZ NOT NULL,
  sent_at TIMESTAMPTZ
);
CREATE INDEX notices_due ON notices(status, next_attempt_at);
