//! The commands a client can send, one file per area, each an `impl Session` block:
//! `account` (hello, register, login, auth, logout), `rooms` (list, create, join, leave, topic,
//! invite, direct messages), `room_admin` (members, delete_room, decline), `messages` (send,
//! history, typing, status), `changes` (edits, deletes, reactions, read state), `search`.

mod account;
mod changes;
mod messages;
mod room_admin;
mod rooms;
mod search;

pub(crate) use search::SearchFrame;

/// Cuts a page read with `limit + 1` rows to `limit`, and returns the `next` cursor (the last
/// row's name) when there was a row beyond it.
fn cut_page<T>(rows: &mut Vec<T>, limit: u32, name: impl Fn(&T) -> String) -> Option<String> {
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    if more { rows.last().map(name) } else { None }
}
