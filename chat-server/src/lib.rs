//! chat-server as a library: the binary in `main.rs` is flags around [`server::run`], and the
//! integration tests start the same server on an ephemeral port.

pub mod store;
