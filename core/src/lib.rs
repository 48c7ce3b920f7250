//! doorcode-core: the protocol both sides speak and the handset that speaks it.
//!
//! - [`codes`]: code derivation, the offline tag, constant-time comparison.
//! - [`input`]: reading typed or spoken codes.
//! - [`envelope`]: Ed25519 signed envelopes.
//! - [`manifest`], [`confirmation`]: the two signed bodies and their rules.
//! - [`store`]: the durable handset database; [`handset`]: the facade over it.
//! - [`wire`]: the HTTP bodies server and clients share; `dispatch` (feature
//!   `dispatch`): a typed client of the dispatch API on them.
//!
//! Nothing here knows about FFI; `bindings/` wraps [`handset::Handset`].

pub mod b64;
pub mod codes;
pub mod confirmation;
pub mod envelope;
pub mod error;
pub mod handset;
pub mod hex;
pub mod input;
pub mod manifest;
pub mod secrets;
pub mod store;
pub mod sync;
pub mod wire;

#[cfg(feature = "dispatch")]
pub mod dispatch;

pub use error::Error;
pub use handset::Handset;

#[cfg(feature = "testkit")]
pub mod testkit;
