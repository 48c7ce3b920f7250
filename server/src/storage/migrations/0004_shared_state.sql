-- The state every node shares (DESIGN "Several nodes on one database"):
-- board sessions, keyed by the SHA-256 of the cookie (never the cookie),
-- with their CSRF token; and one rate-limit counter per (limit, key), a
-- window that opens at the key's first hit. Both expire and are deleted in
-- bounded batches (server/src/domain/limits.rs).
CREATE TABLE board_sessions(
  id_hash TEXT PRIMARY KEY,
  csrf TEXT NOT NULL,
  expires_at {timestamp} NOT NULL
);
CREATE INDEX board_sessions_expiry ON board_sessions(expires_at);
CREATE TABLE rate_counters(
  limit_name TEXT NOT NULL,
  rate_key TEXT NOT NULL,
  started {timestamp} NOT NULL,
  expires_at {timestamp} NOT NULL,
  hits {int} NOT NULL,
  PRIMARY KEY(limit_name, rate_key)
);
CREATE INDEX rate_counters_expiry ON rate_counters(limit_name, expires_at);
