//! The commands a client can send, one file per area, each an `impl Session` block:
//! `account` (hello, register, login, auth, logout), `sessions` (change_password, sessions,
//! revoke_session), `rooms` (list, create, join, leave, topic,
//! invite, direct messages), `room_admin` (members, delete_room, decline), `messages` (send,
//! history, typing, status), `changes` (edits, deletes, reactions, read state), `search`.

mod account;
mod changes;
mod messages;
mod moderation;
mod room_admin;
mod rooms;
mod search;
mod sessions;

/// The page size a request asked for (`limit`: any u64 the client sent, or none), clamped to
/// 1..=`max`: docs/protocol.md says limits are clamped, not refused, whatever their size.
fn page_limit(asked: Option<u64>, default: u32, max: u32) -> u32 {
    let clamped = asked.unwrap_or(u64::from(default)).clamp(1, u64::from(max));
    u32::try_from(clamped).unwrap_or(max)
}

pub(crate) use search::SearchFrame;

/// Cuts a page read with `limit + 1` rows to `limit`, and returns the `next` cursor (the last
/// row's name) when there was a row beyond it.
fn cut_page<T>(rows: &mut Vec<T>, limit: u32, name: impl Fn(&T) -> String) -> Option<String> {
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    if more { rows.last().map(name) } else { None }
}

#[cfg(test)]
mod tests {
    #[test]
    fn page_limits_clamp_whatever_was_asked() {
        use super::page_limit;
        assert_eq!(page_limit(None, 50, 200), 50);
        assert_eq!(page_limit(Some(0), 50, 200), 1);
        assert_eq!(page_limit(Some(7), 50, 200), 7);
        assert_eq!(page_limit(Some(1 << 32), 50, 200), 200);
        assert_eq!(page_limit(Some(u64::MAX), 50, 200), 200);
    }
}
