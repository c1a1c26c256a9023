//! Values carried inside frames.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A client's correlation value: any string or integer it attaches as `ref` to a request. The
/// server echoes it on the direct reply (or `error`) to that request, never on broadcasts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Ref {
    /// A signed 64-bit integer. JavaScript's numbers hold integers exactly only up to 2^53:
    /// clients there should use string refs.
    Num(i64),
    /// At most 64 bytes of UTF-8 (`limits::MAX_REF_BYTES`); a longer one is `bad_frame`. The
    /// schema's `maxLength` counts characters: the byte limit is the server's.
    Str(#[schemars(length(max = 64))] String),
}

/// Who may join a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    /// Anyone may see and join it.
    #[default]
    Public,
    /// Only invited users may see and join it.
    Private,
}

/// What kind of room this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RoomKind {
    /// A named room made with `create_room`.
    Room,
    /// A direct-message room of two, made with `open_dm`.
    Dm,
}

/// A user's presence in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// At least one of the user's connections is in the room, and the user is not away.
    Online,
    /// Connected to the room, but the user said `set_status` away.
    Away,
    /// A member with no connection in the room.
    Offline,
}

/// One entry of a room listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RoomInfo {
    pub room: String,
    pub kind: RoomKind,
    pub visibility: Visibility,
    pub topic: String,
    /// How many users are members.
    pub members: u64,
    /// Whether the requesting user is a member.
    pub joined: bool,
    /// The user's read state in the room, when they are a member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<ReadState>,
    /// Protocol 2: the user's role in the room, when they are a member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<crate::Role>,
}

/// A member of a room and their presence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Member {
    pub user: String,
    pub status: Status,
    /// Protocol 2, in `joined` and `member_list` (never in `presence`): the member's role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<crate::Role>,
}

/// One change in a `presence` diff.
pub type PresenceChange = Member;

/// A stored message as carried in `joined`, `replay` and `history` (the room is the frame's),
/// folded: its current body, and (protocol 2) what was done to it since it was sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HistoryMessage {
    /// The room's sequence number: strictly increasing, gap-free, assigned by the server.
    pub seq: u64,
    /// The id the sender chose.
    pub id: String,
    /// The sender's username.
    pub from: String,
    pub body: String,
    /// When the server stored it, in milliseconds since the Unix epoch (server clock).
    pub ts: i64,
    /// The message this one answers (same room).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<u64>,
    /// When its author last edited it (ms since the Unix epoch); absent if never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited: Option<i64>,
    /// A tombstone: the message was deleted and its body is gone (protocol 2 only; version 1
    /// never sees deleted messages).
    #[serde(default, skip_serializing_if = "is_false")]
    pub deleted: bool,
    /// Reaction counts, most first (protocol 2).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reactions: Vec<crate::events::Reaction>,
}

/// A message found by `search`: where it is, and its current body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SearchResult {
    pub room: String,
    pub seq: u64,
    /// The id the sender chose.
    pub id: String,
    pub from: String,
    pub body: String,
    /// When the server stored it (ms since the Unix epoch).
    pub ts: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<u64>,
    /// When its author last edited it; absent if never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited: Option<i64>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Where the user is in a room they are a member of: synced across their devices by `mark_read`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReadState {
    /// The highest seq the user marked read (0: none).
    pub read_seq: u64,
    /// Messages after `read_seq` by others, not deleted; counting stops at
    /// [`crate::limits::UNREAD_COUNT_MAX`], which then means "at least that many".
    pub unread: u64,
    /// Of those, how many mention the user (`@name`); capped the same way.
    pub mentions: u64,
}

/// How `joined` fills the client in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// No `since_seq` was given: `messages` are the room's most recent ones.
    Recent,
    /// `since_seq` was honoured: `messages` (and any `replay` pages after) are exactly the
    /// messages after it.
    Replay,
    /// `since_seq` could not be honoured (gap too large, other epoch, or ahead of the room): drop
    /// what you hold for this room; `messages` are the most recent ones.
    Reload,
}

/// The limits the server enforces, announced in `welcome`: what a client paces itself by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Limits {
    /// Largest WebSocket message the server accepts, in bytes; a larger one closes with 1009.
    pub max_frame_bytes: u64,
    /// Longest message body, in bytes of UTF-8.
    pub max_body_bytes: u64,
    /// Most messages in one `history` reply or one `joined`/`replay` page.
    pub history_page_max: u32,
    /// Largest gap a `join` with `since_seq` replays; beyond it the answer is `reload`.
    pub max_replay: u64,
    /// Token bucket: sustained frames per second per user (0: no limit).
    pub rate_per_sec: u32,
    /// Token bucket: burst size per user.
    pub rate_burst: u32,
    /// Frames the server queues for one connection that is not reading before it closes the
    /// connection with 4008.
    pub outbound_queue_frames: u64,
    /// Unsent bytes the server holds for one connection before it closes the connection with
    /// 4008 (events) or makes replies wait (those that grow with the data).
    pub outbound_queue_bytes: u64,
    /// Messages a `joined` carries with `catch_up` `recent` or `reload` (the room's latest).
    pub history_on_join: u32,
}

/// One of a user's sessions (a token issued by `register` or `login`), as `session_list` shows
/// it. The token itself is never shown again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SessionInfo {
    /// The session's public id, for `revoke_session`: 16 hex characters derived one way from
    /// the token's stored hash. It does not let anyone find or use the token.
    pub id: String,
    /// When the token was issued, in ms since the Unix epoch.
    pub created_ts: i64,
    /// When the token last authenticated a connection (issue counts), in ms since the Unix
    /// epoch. Recorded at most once a minute per token.
    pub last_used_ts: i64,
    /// Whether this connection authenticated with this session's token.
    pub current: bool,
}
