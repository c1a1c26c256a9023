//! chat-server as a library: the binary in `main.rs` is flags around [`server::start`], and the
//! integration tests start the same server on an ephemeral port.

mod admin;
pub mod admission;
pub mod audience;
pub mod auth;
pub mod broker;
pub mod clock;
pub mod cluster;
mod cmd;
pub mod config;
// Public for the cluster broker, which frames the events it reads back from the database.
pub mod event_frames;
// The transcript suite as a runner: `tests/transcripts.rs` and the `chat-conformance` binary.
pub mod conformance;
mod connection;
// Public (hidden) for the fuzz target of `parse_request` in `fuzz/`.
pub mod fdlimit;
#[doc(hidden)]
pub mod handshake;
pub mod hasher;
pub mod hub;
pub mod metrics;
pub mod moderation;
pub mod outbox;
pub mod presence;
pub mod rate;
mod reply;
pub mod revocations;
pub mod server;
mod session;
pub mod store;
pub mod throttle;
pub mod tls;
pub mod typing;
pub mod users;
// The `.chat` transcript parser shared by `conformance` and `fuzz/`; not used by the server.
#[doc(hidden)]
pub mod transcript;
