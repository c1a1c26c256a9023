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
}

/// A member of a room and their presence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Member {
    pub user: String,
    pub status: Status,
}

/// One change in a `presence` diff.
pub type PresenceChange = Member;

/// A stored message as carried in `joined`, `replay` and `history` (the room is the frame's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
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
