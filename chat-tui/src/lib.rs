//! chat-tui's model, view and network pieces, as a library so benchmarks (`benches/`) can drive
//! them; the binary is `main.rs`.

pub mod app;
pub mod backoff;
pub mod commands;
pub mod config;
pub mod conn;
pub mod editor;
pub mod room;
pub mod sanitize;
pub mod script;
pub mod servers;
pub mod tls;
pub mod view;
pub mod wrap;
