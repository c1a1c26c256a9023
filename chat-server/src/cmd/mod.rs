//! The commands a client can send, one file per area, each an `impl Session` block:
//! `account` (hello, register, login, auth, logout), `rooms` (list, create, join, leave, topic,
//! invite, direct messages), `messages` (send, history, typing, status).

mod account;
mod messages;
mod room_admin;
mod rooms;
