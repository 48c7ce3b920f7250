//! doorcode-tools: the clients around the depot server, and the one
//! `doorcode` binary that runs them (`src/main.rs`).
//!
//! - [`demo`]: a whole delivery day against a real server on loopback;
//! - [`handset_cli`]: the desktop handset on the same core as the phones;
//! - [`import`]: parcels and routes from CSV files through the dispatch API;
//! - [`netsim`]: a loopback proxy that plays a bad mobile network (the demo
//!   and the end-to-end tests put it between handsets and the server).
//!
//! The server library (`doorcode-server`) only serves; `doorcode serve` is
//! here because the binary is.

pub mod demo;
pub mod handset_cli;
pub mod import;
pub mod netsim;
