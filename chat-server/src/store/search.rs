//! What both engines share for `search`: the request a store answers, and the page cursor.
//!
//! Results are ordered newest first by `(ts, room name, seq)`, all descending; room names
//! compare bytewise on both engines (PostgreSQL's are `COLLATE "C"`), so the order and the pages
//! are the same on either. A cursor is the position of the last result of a page.

/// A search a store runs: every phrase must match, in the rooms `user` is a member of.
#[derive(Debug, Clone)]
pub struct SearchRequest {
    /// The user whose rooms are searched.
    pub user: String,
    /// From [`chat_proto::search::Query::phrases`]: lowercase tokens of letters and digits.
    pub phrases: Vec<Vec<String>>,
    /// Only messages by this user.
    pub from: Option<String>,
    /// Only this room.
    pub room: Option<String>,
    /// Only results after this one in the order.
    pub before: Option<Cursor>,
    /// Only messages with a seq below this one (with `room`: `before_seq`).
    pub before_seq: Option<u64>,
    /// At most this many results.
    pub limit: u32,
}

/// A position in the results' order: results after it are older (or at the same ts, in a room
/// named lower, or in the same room with a lower seq).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub ts: i64,
    pub room: String,
    pub seq: u64,
}

impl Cursor {
    /// The wire form, `ts.seq.room` (the room last: names may hold dots). Clients treat it as
    /// opaque.
    pub fn encode(&self) -> String {
        format!("{}.{}.{}", self.ts, self.seq, self.room)
    }

    /// Reads [`Cursor::encode`]'s form; `None` for anything else.
    pub fn decode(s: &str) -> Option<Self> {
        let mut parts = s.splitn(3, '.');
        let ts = parts.next()?.parse().ok()?;
        let seq: u64 = parts.next()?.parse().ok()?;
        let room = parts.next()?;
        // Seqs are stored as signed 64-bit numbers; room names are bounded.
        if seq > i64::MAX as u64 || room.is_empty() || room.len() > 128 {
            return None;
        }
        Some(Self {
            ts,
            room: room.to_owned(),
            seq,
        })
    }

    /// The seq as both engines store it.
    pub fn seq_i64(&self) -> i64 {
        self.seq.min(i64::MAX as u64) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_survive_their_wire_form_and_junk_is_refused() {
        for c in [
            Cursor {
                ts: 1_732_390_040_000,
                room: "dev.team".into(),
                seq: 41,
            },
            Cursor {
                ts: -5,
                room: "dm:a:b".into(),
                seq: 0,
            },
        ] {
            assert_eq!(Cursor::decode(&c.encode()), Some(c));
        }
        for junk in [
            "",
            "1",
            "1.2",
            "1.2.",
            "x.2.r",
            "1.-2.r",
            "1.18446744073709551615.r",
            &format!("1.2.{}", "r".repeat(129)),
        ] {
            assert_eq!(Cursor::decode(junk), None, "{junk:?}");
        }
    }
}
