//! Customer notices: the text, the channels and the background sender that
//! drains the outbox. Delivery is at-least-once: a notice is claimed with a
//! lease, sent, then marked sent; a crash between send and mark resends it.
//! The code is derived at send time, so the outbox never stores it.
//!
//! A notice goes to every configured channel the recipient has an address
//! for. One that reaches some channels and fails on others is retried on the
//! failed ones only: the channels it reached are recorded at the head of the
//! notice's `last_error` (`done=smtp-1a2b3c4d,…; <errors>`), which the next
//! claim reads back ([`Progress`]).
//!
//! By concern: [`Channel`] (parsing `--notify`), [`Notifier`] (routing a
//! notice to its channels), the outbox loop (`sender.rs`), the wording
//! (`text.rs`), and one file per channel's sending ([`file`], [`smtp`],
//! [`webhook`]).

mod channel;
pub mod file;
mod notifier;
mod progress;
mod sender;
pub mod smtp;
mod text;
pub mod webhook;

pub use channel::Channel;
pub use file::remove_notice_files;
pub use notifier::Notifier;
pub use progress::Progress;
pub use sender::{drain_once, run_sender, send_now};
pub use text::{Message, render, track_url};
