//! How a room's log is stored, the same on both engines: every event is a row of `messages`
//! with the room's next seq, and `kind` says what it is. A message row holds the message's
//! current body (edits rewrite it; a delete empties it and sets `deleted`); an event row holds
//! what the event carries (`target` seq, a `body` for an edit, topic or emoji, a `subject` user
//! or the emoji a reaction replaced). Event rows need a `client_id` for the table's unique
//! `(user, client id)` index: [`event_client_id`] makes one no client can send.

use chat_proto::{EventKind, Role, RoomEvent};

pub const MESSAGE: i16 = 0;
pub const EDIT: i16 = 1;
pub const DELETE: i16 = 2;
pub const REACT: i16 = 3;
pub const UNREACT: i16 = 4;
pub const TOPIC: i16 = 5;
pub const JOIN: i16 = 6;
pub const LEAVE: i16 = 7;
pub const KICK: i16 = 8;
pub const BAN: i16 = 9;
pub const UNBAN: i16 = 10;
pub const ROLE: i16 = 11;

/// The client id of an event row: `~` is outside the client id alphabet, so it never meets a
/// client's, and room and seq make it unique.
pub fn event_client_id(room_id: i64, seq: i64) -> String {
    format!("~{room_id}.{seq}")
}

/// A row of the log as both engines read it.
#[derive(Debug, Clone)]
pub struct Row {
    pub seq: i64,
    pub ts: i64,
    pub from: String,
    pub kind: i16,
    pub client_id: String,
    pub body: String,
    pub target: Option<i64>,
    pub reply_to: Option<i64>,
    pub subject: Option<String>,
}

/// What is stored for an event other than a message: (kind, target, body, subject).
pub fn columns(what: &EventKind) -> (i16, Option<i64>, &str, Option<&str>) {
    let t = |s: &u64| Some(*s as i64);
    match what {
        EventKind::Message { body, .. } => (MESSAGE, None, body, None),
        EventKind::Edit { target, body } => (EDIT, t(target), body, None),
        EventKind::Delete { target } => (DELETE, t(target), "", None),
        EventKind::React {
            target,
            emoji,
            replaces,
        } => (REACT, t(target), emoji, replaces.as_deref()),
        EventKind::Unreact { target, emoji } => (UNREACT, t(target), emoji, None),
        EventKind::Topic { topic } => (TOPIC, None, topic, None),
        EventKind::Join => (JOIN, None, "", None),
        EventKind::Leave => (LEAVE, None, "", None),
        // A reason is the body; none is stored as "" (a reason is never empty: see
        // `cmd::moderation`).
        EventKind::Kick { user, reason } => {
            (KICK, None, reason.as_deref().unwrap_or(""), Some(user))
        }
        EventKind::Ban { user, reason } => (BAN, None, reason.as_deref().unwrap_or(""), Some(user)),
        EventKind::Unban { user } => (UNBAN, None, "", Some(user)),
        EventKind::Role { user, role } => (ROLE, None, role_str(*role), Some(user)),
    }
}

pub fn role_str(r: Role) -> &'static str {
    match r {
        Role::Member => "member",
        Role::Moderator => "moderator",
        Role::Owner => "owner",
    }
}

pub fn parse_role(s: &str) -> Option<Role> {
    Some(match s {
        "member" => Role::Member,
        "moderator" => Role::Moderator,
        "owner" => Role::Owner,
        _ => return None,
    })
}

impl Row {
    /// The event this row records; `None` for a kind this build does not know (a newer
    /// server's row), which is skipped rather than misread.
    pub fn into_event(self) -> Option<RoomEvent> {
        let target = self.target.map(|t| t as u64);
        let subject = self.subject;
        let what = match self.kind {
            MESSAGE => EventKind::Message {
                id: self.client_id,
                body: self.body,
                reply_to: self.reply_to.map(|r| r as u64),
            },
            EDIT => EventKind::Edit {
                target: target?,
                body: self.body,
            },
            DELETE => EventKind::Delete { target: target? },
            REACT => EventKind::React {
                target: target?,
                emoji: self.body,
                replaces: subject,
            },
            UNREACT => EventKind::Unreact {
                target: target?,
                emoji: self.body,
            },
            TOPIC => EventKind::Topic { topic: self.body },
            JOIN => EventKind::Join,
            LEAVE => EventKind::Leave,
            KICK => EventKind::Kick {
                user: subject?,
                reason: Some(self.body).filter(|b| !b.is_empty()),
            },
            BAN => EventKind::Ban {
                user: subject?,
                reason: Some(self.body).filter(|b| !b.is_empty()),
            },
            UNBAN => EventKind::Unban { user: subject? },
            ROLE => EventKind::Role {
                user: subject?,
                role: parse_role(&self.body)?,
            },
            _ => return None,
        };
        Some(RoomEvent {
            seq: self.seq as u64,
            ts: self.ts,
            from: self.from,
            what,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_survives_its_columns() {
        let kinds = [
            EventKind::Message {
                id: "c1".into(),
                body: "hi".into(),
                reply_to: Some(3),
            },
            EventKind::Edit {
                target: 4,
                body: "b".into(),
            },
            EventKind::Delete { target: 4 },
            EventKind::React {
                target: 4,
                emoji: "👍".into(),
                replaces: Some("🎉".into()),
            },
            EventKind::Unreact {
                target: 4,
                emoji: "👍".into(),
            },
            EventKind::Topic { topic: "t".into() },
            EventKind::Join,
            EventKind::Leave,
            EventKind::Kick {
                user: "u".into(),
                reason: None,
            },
            EventKind::Ban {
                user: "u".into(),
                reason: Some("spam".into()),
            },
            EventKind::Unban { user: "u".into() },
            EventKind::Role {
                user: "u".into(),
                role: Role::Moderator,
            },
        ];
        for what in kinds {
            let (kind, target, body, subject) = columns(&what);
            let (client_id, reply_to) = match &what {
                EventKind::Message { id, reply_to, .. } => (id.clone(), reply_to.map(|r| r as i64)),
                _ => (event_client_id(1, 9), None),
            };
            let row = Row {
                seq: 9,
                ts: 5,
                from: "a".into(),
                kind,
                client_id,
                body: body.to_owned(),
                target,
                reply_to,
                subject: subject.map(str::to_owned),
            };
            let back = row.into_event().expect("known kind");
            assert_eq!(back.what, what);
            assert_eq!((back.seq, back.ts, back.from.as_str()), (9, 5, "a"));
        }
    }

    #[test]
    fn an_unknown_kind_is_skipped() {
        let row = Row {
            seq: 1,
            ts: 1,
            from: "a".into(),
            kind: 99,
            client_id: "~1.1".into(),
            body: String::new(),
            target: None,
            reply_to: None,
            subject: None,
        };
        assert!(row.into_event().is_none());
    }
}
