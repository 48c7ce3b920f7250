-- Keys and track tokens (issue 15; DESIGN "Several nodes on one database").
--
-- Track tokens leave the database. From this schema on, parcels.track_token
-- holds the lookup HMAC of the token under the data dir's track-key (hex),
-- never the token; track_nonce is what the token is derived from under that
-- key; track_legacy is the lookup HMAC of a token issued before this schema
-- (it keeps working until the parcel's next reissue). The column keeps its
-- name so that this migration only adds (docs/OPERATIONS.md "Migrations").
-- A row whose track_nonce is NULL still holds a clear token: the server
-- converts those at start, after this migration, because only it has the
-- key (server/src/fleet.rs).
ALTER TABLE parcels ADD COLUMN track_nonce TEXT;
ALTER TABLE parcels ADD COLUMN track_legacy TEXT;
CREATE UNIQUE INDEX parcels_track_legacy ON parcels(track_legacy);
CREATE INDEX parcels_track_clear ON parcels(parcel_id) WHERE track_nonce IS NULL;
-- The fingerprints of the secrets every node must share (code-key,
-- track-key, admin token, signing key set); the first node to start records
-- them, a node whose keys differ refuses to start.
CREATE TABLE key_fingerprints(
  name TEXT PRIMARY KEY,
  fingerprint TEXT NOT NULL,
  recorded_at {timestamp} NOT NULL
);
