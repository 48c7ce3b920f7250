//! doorcode-server's integration tests: one test binary, one module per
//! concern, one support module for what they share (a server in-process,
//! a free port, an admin client, raw-socket helpers, a PostgreSQL schema
//! per test).
//!
//! - `storage_sqlite`, `storage_postgres`: the one storage suite
//!   (`storage_suite`) on each backend, plus what only that backend has;
//! - `day`: a whole delivery day over real HTTP, on SQLite and PostgreSQL;
//! - `attacks` (and `attacks::edges`): what an outsider can try, each one case;
//! - `bad_input`, `timeout`, `openapi`: malformed requests get clear 4xx;
//! - `notices`: real SMTP and webhook receivers;
//! - `providers`: SMTP with STARTTLS, implicit TLS, AUTH and a private CA,
//!   signed webhooks, several channels at once;
//! - `web`: the tracking page and the board over HTTP (the browser tests are
//!   in `web-tests/`);
//! - the tests that run the `doorcode` binary (`cli`, `demo`, `import`,
//!   `e2e_*`, `multinode_pg`, the attacks on a spawned process) are in
//!   `tools/tests/it`, which shares this support module;
//! - `door`: "I did not order this" (hold) and the courier's resend from the door;
//! - `devices`: dispatch lists and revokes handsets (also across two nodes);
//! - `vectors`, `verify_race`: the shared vectors, the lockout under races;
//! - `lifecycle`: erasure (table and file dumps), a simulated 120-day history.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

#[macro_use]
mod storage_suite;
mod support;

mod attacks;
mod bad_input;
mod day;
mod devices;
mod door;
mod keys;
mod lifecycle;
mod notices;
mod openapi;
mod providers;
mod pulls;
mod storage_postgres;
mod storage_sqlite;
mod timeout;
mod vectors;
mod verify_race;
mod web;
