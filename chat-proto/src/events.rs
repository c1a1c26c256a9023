//! The room log of protocol 2: every change to a room is an event with the room's next seq, and
//! [`Fold`] is the one way to turn events into what a room shows. The server's `history` is the
//! fold of the whole log; a client that holds a fold and applies the events a `since_seq` replay
//! (or the live stream) brings reaches the same state.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::types::HistoryMessage;

/// One entry of a room's log, as `event` frames and `joined`/`replay` `events` carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RoomEvent {
    /// The room's sequence number: every event of the room has one, strictly increasing and
    /// gap-free across all kinds.
    pub seq: u64,
    /// When the server stored it, in ms since the Unix epoch.
    pub ts: i64,
    /// Who did it: the sender, editor, reactor, or the moderator who kicked.
    pub from: String,
    #[serde(flatten)]
    pub what: EventKind,
}

/// What an event did, tagged by `kind`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventKind {
    /// A new message. In a replay `body` is the message's current text (after any edits; empty
    /// once deleted): the edits and the delete that follow in the log fold to the same.
    Message {
        id: String,
        body: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reply_to: Option<u64>,
    },
    /// The author replaced the body of message `target`.
    Edit { target: u64, body: String },
    /// Message `target` was deleted (by its author or a moderator): its body is gone.
    Delete { target: u64 },
    /// `from` reacted to `target` with `emoji`; `replaces` is the reaction of theirs to it that
    /// this one took the place of (one reaction per user per message).
    React {
        target: u64,
        emoji: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        replaces: Option<String>,
    },
    /// `from` took back their reaction `emoji` to `target`.
    Unreact { target: u64, emoji: String },
    /// The topic was set (`""` clears it).
    Topic { topic: String },
    /// `from` became a member.
    Join,
    /// `from` stopped being a member.
    Leave,
    /// `from` (a moderator) removed `user`, who may join again.
    Kick {
        user: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// `from` (a moderator) banned `user`: removed if a member, and unable to join (or be
    /// invited) until unbanned.
    Ban {
        user: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// `from` lifted `user`'s ban.
    Unban { user: String },
    /// `from` gave `user` the role `role`. A transfer of ownership (`role: owner`) makes `from`,
    /// the owner before, a moderator.
    Role { user: String, role: Role },
}

impl EventKind {
    /// The `kind` string as on the wire.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Message { .. } => "message",
            Self::Edit { .. } => "edit",
            Self::Delete { .. } => "delete",
            Self::React { .. } => "react",
            Self::Unreact { .. } => "unreact",
            Self::Topic { .. } => "topic",
            Self::Join => "join",
            Self::Leave => "leave",
            Self::Kick { .. } => "kick",
            Self::Ban { .. } => "ban",
            Self::Unban { .. } => "unban",
            Self::Role { .. } => "role",
        }
    }
}

/// A member's role in a room.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Member,
    Moderator,
    Owner,
}

/// How many users reacted to a message with one emoji.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Reaction {
    pub emoji: String,
    pub count: u64,
    /// Whether the user who asked is one of them.
    #[serde(default)]
    pub me: bool,
}

/// The folded state of a room's messages: what `history` shows to the user `me`. Pure. It counts
/// reactions rather than remembering who reacted, so that it can start from a `history` page
/// (which carries counts): a `react` names the reaction it `replaces`, which keeps counts exact.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fold {
    pub me: String,
    pub messages: BTreeMap<u64, FoldedMessage>,
    pub topic: Option<String>,
}

/// One message as the fold holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoldedMessage {
    pub id: String,
    pub from: String,
    pub body: String,
    pub ts: i64,
    pub reply_to: Option<u64>,
    pub edited: Option<i64>,
    pub deleted: bool,
    /// emoji -> (how many, whether `me` is one of them).
    pub reactions: BTreeMap<String, (u64, bool)>,
}

impl Fold {
    pub fn new(me: &str) -> Self {
        Self {
            me: me.to_owned(),
            ..Self::default()
        }
    }

    /// Starts from a `history` page (or a `joined`'s recent messages).
    pub fn from_history(messages: &[HistoryMessage], me: &str) -> Self {
        let mut f = Self::new(me);
        for h in messages {
            f.messages.insert(
                h.seq,
                FoldedMessage {
                    id: h.id.clone(),
                    from: h.from.clone(),
                    body: h.body.clone(),
                    ts: h.ts,
                    reply_to: h.reply_to,
                    edited: h.edited,
                    deleted: h.deleted,
                    reactions: h
                        .reactions
                        .iter()
                        .map(|r| (r.emoji.clone(), (r.count, r.me)))
                        .collect(),
                },
            );
        }
        f
    }

    /// Applies one event. Events about a message the fold does not hold (older than what it was
    /// built from) are ignored, as a client ignores them for messages it never loaded.
    pub fn apply(&mut self, e: &RoomEvent) {
        let mine = e.from == self.me;
        match &e.what {
            EventKind::Message { id, body, reply_to } => {
                self.messages.entry(e.seq).or_insert_with(|| FoldedMessage {
                    id: id.clone(),
                    from: e.from.clone(),
                    body: body.clone(),
                    ts: e.ts,
                    reply_to: *reply_to,
                    edited: None,
                    deleted: false,
                    reactions: BTreeMap::new(),
                });
            }
            EventKind::Edit { target, body } => {
                if let Some(m) = self.messages.get_mut(target)
                    && !m.deleted
                {
                    m.body = body.clone();
                    m.edited = Some(e.ts);
                }
            }
            EventKind::Delete { target } => {
                if let Some(m) = self.messages.get_mut(target) {
                    m.deleted = true;
                    m.body.clear();
                    m.reactions.clear();
                }
            }
            EventKind::React {
                target,
                emoji,
                replaces,
            } => {
                if let Some(m) = self.messages.get_mut(target)
                    && !m.deleted
                {
                    if let Some(old) = replaces {
                        take_reaction(&mut m.reactions, old, mine);
                    }
                    let r = m.reactions.entry(emoji.clone()).or_default();
                    r.0 += 1;
                    r.1 |= mine;
                }
            }
            EventKind::Unreact { target, emoji } => {
                if let Some(m) = self.messages.get_mut(target) {
                    take_reaction(&mut m.reactions, emoji, mine);
                }
            }
            EventKind::Topic { topic } => self.topic = Some(topic.clone()),
            EventKind::Join
            | EventKind::Leave
            | EventKind::Kick { .. }
            | EventKind::Ban { .. }
            | EventKind::Unban { .. }
            | EventKind::Role { .. } => {}
        }
    }

    /// The messages as `history` carries them, ascending.
    pub fn history(&self) -> Vec<HistoryMessage> {
        self.messages
            .iter()
            .map(|(seq, m)| m.to_history(*seq))
            .collect()
    }
}

fn take_reaction(reactions: &mut BTreeMap<String, (u64, bool)>, emoji: &str, mine: bool) {
    if let Some(r) = reactions.get_mut(emoji) {
        r.0 = r.0.saturating_sub(1);
        if mine {
            r.1 = false;
        }
        if r.0 == 0 {
            reactions.remove(emoji);
        }
    }
}

/// Orders reaction counts as `history` does: most first, then by emoji.
pub fn sort_reactions(reactions: &mut [Reaction]) {
    reactions.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.emoji.cmp(&b.emoji)));
}

impl FoldedMessage {
    pub fn to_history(&self, seq: u64) -> HistoryMessage {
        let mut reactions: Vec<Reaction> = self
            .reactions
            .iter()
            .map(|(emoji, (count, me))| Reaction {
                emoji: emoji.clone(),
                count: *count,
                me: *me,
            })
            .collect();
        sort_reactions(&mut reactions);
        HistoryMessage {
            seq,
            id: self.id.clone(),
            from: self.from.clone(),
            body: self.body.clone(),
            ts: self.ts,
            reply_to: self.reply_to,
            edited: self.edited,
            deleted: self.deleted,
            reactions,
        }
    }
}
