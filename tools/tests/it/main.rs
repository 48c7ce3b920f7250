//! doorcode-tools' integration tests: the `doorcode` binary as users and
//! operators run it, against real `doorcode serve` processes (only this
//! package can name the binary through `CARGO_BIN_EXE_doorcode`).
//!
//! The support module is the server's own (`server/tests/it/support`): one
//! free port, one in-process server, one PostgreSQL schema per test, one set
//! of raw-socket helpers for both packages. `fleet` is what only real
//! processes need: `doorcode serve` spawned, killed and restarted, handsets
//! on the real core, the server-side checks.
//!
//! - `cli`, `demo`: the commands as a user runs them;
//! - `import`: `doorcode import` of CSV files, end to end;
//! - `e2e_sync`, `e2e_scale`, `multinode_pg`: killed and restarted
//!   processes, a faulty link, a fleet, two nodes on one database;
//! - `served`: what an outsider can do to the process (memory, slow
//!   clients, the connection cap, file modes, two nodes and a slow gateway);
//! - `notify`: `--notify` given twice (SMTP with STARTTLS and AUTH, a
//!   signed webhook), and a malformed webhook secret;
//! - `pg_tls`: `--database` with each `sslmode` against a throwaway
//!   PostgreSQL cluster with TLS on (and then off);
//! - `secrets_in_logs`: a whole day on real processes, then no secret in
//!   any log, output or file.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

#[path = "../../../server/tests/it/support/mod.rs"]
mod support;

mod fleet;

mod cli;
mod demo;
mod e2e_scale;
mod e2e_sync;
mod envelopes_pg;
mod import;
mod keys_pg;
mod multinode_pg;
mod notify;
mod pg_tls;
mod roundrobin_pg;
mod secrets_in_logs;
mod served;
