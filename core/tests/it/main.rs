//! doorcode-core's integration tests: one test binary, one module per concern,
//! one support module for the fixtures they share.
//!
//! - `store`: the handset store's rules on real SQLite files;
//! - `attacks`: what an attacker can do to a handset, and what stops them;
//! - `props`: property tests (input round trips, tag width, brute force);
//! - `spoken`: property tests of spoken codes in every language;
//! - `vectors`: the shared protocol vectors (or the file `DOORCODE_VECTORS`
//!   names: `DOORCODE_VECTORS=F cargo test -p doorcode-core --test it vectors::`);
//! - `disk`: a real full or read-only disk (re-runs this binary inside
//!   `unshare`);
//! - `crash`: SIGKILLs of a child copy of this binary while it records.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

mod attacks;
mod crash;
mod disk;
mod props;
mod spoken;
mod store;
mod support;
mod vectors;
