//! The frames: one enum per direction, tagged by `type`. Any frame may also carry a `ref` (see
//! [`crate::Envelope`]); unknown fields are ignored so that later versions can add fields.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ErrorCode;
use crate::events::{Role, RoomEvent};
use crate::moderation::{BanInfo, Removal, RoomSettings};
use crate::types::{
    CatchUp, HistoryMessage, Limits, Member, PresenceChange, ReadState, RoomInfo, SearchResult,
    SessionInfo, Status, Visibility,
};

/// A frame the client sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// Must be the first frame. Lists the protocol versions the client speaks; may carry a token
    /// instead of the `Authorization` header.
    Hello {
        versions: Vec<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
    },
    /// Create an account and log in with it. Answered by `auth_ok` carrying a new token.
    Register { username: String, password: String },
    /// Log in with a password. Answered by `auth_ok` carrying a new token.
    Login { username: String, password: String },
    /// Authenticate with a token from an earlier `auth_ok`. Answered by `auth_ok` without token.
    Auth { token: String },
    /// Revoke the token this connection authenticated with; the server answers `ok` and closes
    /// every connection that used it (this one with 1000, the others with 4003).
    Logout,
    /// List the public rooms and the private rooms the user belongs to or is invited to.
    ListRooms {
        /// Only rooms named after this one (the `next` of the previous page).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<String>,
        /// At most this many rooms; default and most 200.
        /// Any integer from 0 to 2^64-1 is accepted and clamped to 1-200.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u64>,
    },
    /// Create a room and become its first member. Answered by `room_created`.
    CreateRoom {
        room: String,
        /// `public` (the default) or `private`; `null` is the default too.
        #[serde(default, deserialize_with = "null_as_default")]
        #[schemars(with = "Option<Visibility>", default = "Visibility::default")]
        visibility: Visibility,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        topic: Option<String>,
    },
    /// Become a member (if not yet) and subscribe this connection to the room. With `since_seq`
    /// and `epoch`, replays exactly the messages after `since_seq`.
    Join {
        room: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since_seq: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        epoch: Option<String>,
    },
    /// Stop being a member; every connection of the user stops receiving the room.
    Leave { room: String },
    /// Delete a room for good, its history included (the room's owner only). Answered by `ok`.
    DeleteRoom { room: String },
    /// Turn down an invite to a private room. Answered by `ok`.
    Decline { room: String },
    /// A page of a room's members with their presence. Answered by `member_list`.
    Members {
        room: String,
        /// Only members named after this one (the `next` of the previous page).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<String>,
        /// At most this many; default and most 500. Any
        /// integer from 0 to 2^64-1 is accepted and clamped to 1-500.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u64>,
    },
    /// Set (or clear, with `""`) the room's topic.
    SetTopic { room: String, topic: String },
    /// Let a user join a private room. Only members may invite.
    Invite { room: String, user: String },
    /// Find or create the direct-message room with `user`; answered by `dm_opened`.
    OpenDm { user: String },
    /// Post a message. `id` is the client's: resending the same id returns the original `ack`.
    Send {
        room: String,
        id: String,
        body: String,
        /// The seq of the message of the same room this one answers.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reply_to: Option<u64>,
    },
    /// Replace the body of one's own message `seq` (protocol 2). Answered by `applied`.
    Edit {
        room: String,
        seq: u64,
        body: String,
    },
    /// Delete message `seq`: one's own, or anyone's as a moderator (protocol 2). Its body is
    /// removed from storage. Answered by `applied`.
    Delete { room: String, seq: u64 },
    /// React to message `seq` with one of the allowed emoji, replacing one's earlier reaction to
    /// it (protocol 2). Answered by `applied`.
    React {
        room: String,
        seq: u64,
        emoji: String,
    },
    /// Take back one's reaction `emoji` to message `seq` (protocol 2). Answered by `applied`.
    Unreact {
        room: String,
        seq: u64,
        emoji: String,
    },
    /// Move the user's read position in the room up to `seq` (never back). Answered by `read`,
    /// which every connection of the user receives (protocol 2).
    MarkRead { room: String, seq: u64 },
    /// Page backwards through a room's history: messages with seq below `before_seq` (or the
    /// latest, without it), at most `limit` (default and cap 200).
    History {
        room: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        before_seq: Option<u64>,
        /// At most this many messages; default 50. Any integer from 0 to 2^64-1 is accepted and
        /// clamped to 1-200.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u64>,
    },
    /// Full-text search of the messages in the user's rooms, newest first (protocol 2; the
    /// query syntax is in docs/protocol.md §12.7). Answered by `search_results`.
    Search {
        query: String,
        /// Only this room (needs membership); the same as `in:room` in the query.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room: Option<String>,
        /// The `next` of the previous page: only results after it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        before: Option<String>,
        /// With `room`: only messages with seq below this one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        before_seq: Option<u64>,
        /// At most this many results: default 20, clamped to 1..=50 (any non-negative integer).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u64>,
    },
    /// Start (`true`, refresh every few seconds) or stop (`false`) the typing indicator.
    Typing { room: String, active: bool },
    /// Set the user's status: `online` or `away`.
    SetStatus { status: Status },
    /// Application-level ping, answered by `pong` (for round-trip time).
    Ping,
    /// Protocol 2. Replace the user's password (`old_password` must be the current one); with
    /// `revoke_others`, every other token of the user is revoked and its connections closed
    /// (this connection's token stays). Answered by `ok`.
    ChangePassword {
        old_password: String,
        new_password: String,
        #[serde(default)]
        revoke_others: bool,
    },
    /// Protocol 2. List the user's sessions (tokens), newest first. Answered by `session_list`.
    Sessions,
    /// Protocol 2. Remove `user` from the room (a moderator or the owner, of a lower role);
    /// they may join again. Answered by `applied`.
    Kick {
        room: String,
        user: String,
        /// Shown to the user and the room: at most 512 bytes, no control characters.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Protocol 2. Ban `user` (a member or not) from the room: every connection of theirs
    /// leaves it at once, and they cannot join or be invited until unbanned. Answered by
    /// `applied`.
    Ban {
        room: String,
        user: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Protocol 2. Lift `user`'s ban. Answered by `applied`.
    Unban { room: String, user: String },
    /// Protocol 2. The owner makes a member a `moderator` or a `member` again, or hands the room
    /// over (`owner`: the owner before becomes a moderator). Answered by `applied`.
    SetRole {
        room: String,
        user: String,
        role: Role,
    },
    /// Protocol 2. The owner changes what the room leaves to its members; a field left out
    /// stays as it is. Answered by `ok`.
    ConfigureRoom {
        room: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        members_set_topic: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        members_invite: Option<bool>,
    },
    /// Protocol 2. A page of the room's bans, by user name (moderators and the owner). Answered
    /// by `ban_list`.
    Bans {
        room: String,
        /// Only bans of users named after this one (the `next` of the previous page).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<String>,
        /// At most this many; default and most 500. Any integer from 0 to 2^64-1 is accepted
        /// and clamped to 1-500.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u64>,
    },
    /// Protocol 2. Revoke one of the user's sessions by the `id` `session_list` gave; its
    /// connections close with 4003 (this one with 1000, like `logout`, if it is this one's).
    /// Answered by `ok`.
    RevokeSession { id: String },
}

impl ClientFrame {
    /// The frame's `type` tag, as on the wire (one of [`CLIENT_FRAME_TYPES`]): for counting
    /// frames by type without encoding them again.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Hello { .. } => "hello",
            Self::Register { .. } => "register",
            Self::Login { .. } => "login",
            Self::Auth { .. } => "auth",
            Self::Logout => "logout",
            Self::ListRooms { .. } => "list_rooms",
            Self::CreateRoom { .. } => "create_room",
            Self::Join { .. } => "join",
            Self::Leave { .. } => "leave",
            Self::DeleteRoom { .. } => "delete_room",
            Self::Decline { .. } => "decline",
            Self::Members { .. } => "members",
            Self::SetTopic { .. } => "set_topic",
            Self::Invite { .. } => "invite",
            Self::OpenDm { .. } => "open_dm",
            Self::Send { .. } => "send",
            Self::Edit { .. } => "edit",
            Self::Delete { .. } => "delete",
            Self::React { .. } => "react",
            Self::Unreact { .. } => "unreact",
            Self::MarkRead { .. } => "mark_read",
            Self::History { .. } => "history",
            Self::Search { .. } => "search",
            Self::Typing { .. } => "typing",
            Self::SetStatus { .. } => "set_status",
            Self::Ping => "ping",
            Self::ChangePassword { .. } => "change_password",
            Self::Sessions => "sessions",
            Self::RevokeSession { .. } => "revoke_session",
            Self::Kick { .. } => "kick",
            Self::Ban { .. } => "ban",
            Self::Unban { .. } => "unban",
            Self::SetRole { .. } => "set_role",
            Self::ConfigureRoom { .. } => "configure_room",
            Self::Bans { .. } => "bans",
        }
    }
}

impl ClientFrame {
    /// The first protocol version that has this frame. A connection that negotiated an older
    /// version gets `unknown_type` for it, as that version's server would answer.
    pub fn since_version(&self) -> u32 {
        match self {
            Self::Hello { .. }
            | Self::Register { .. }
            | Self::Login { .. }
            | Self::Auth { .. }
            | Self::Logout
            | Self::ListRooms { .. }
            | Self::CreateRoom { .. }
            | Self::Join { .. }
            | Self::Leave { .. }
            | Self::DeleteRoom { .. }
            | Self::Decline { .. }
            | Self::Members { .. }
            | Self::SetTopic { .. }
            | Self::Invite { .. }
            | Self::OpenDm { .. }
            | Self::Send { .. }
            | Self::History { .. }
            | Self::Typing { .. }
            | Self::SetStatus { .. }
            | Self::Ping => 1,
            Self::Edit { .. }
            | Self::Delete { .. }
            | Self::React { .. }
            | Self::Unreact { .. }
            | Self::MarkRead { .. }
            | Self::Search { .. } => 2,
            Self::ChangePassword { .. } | Self::Sessions | Self::RevokeSession { .. } => 2,
            Self::Kick { .. }
            | Self::Ban { .. }
            | Self::Unban { .. }
            | Self::SetRole { .. }
            | Self::ConfigureRoom { .. }
            | Self::Bans { .. } => 2,
        }
    }
}

/// Every `type` a client frame may have.
pub const CLIENT_FRAME_TYPES: &[&str] = &[
    "hello",
    "register",
    "login",
    "auth",
    "logout",
    "list_rooms",
    "create_room",
    "join",
    "leave",
    "set_topic",
    "invite",
    "open_dm",
    "send",
    "history",
    "typing",
    "set_status",
    "delete_room",
    "decline",
    "members",
    "ping",
    "edit",
    "delete",
    "react",
    "unreact",
    "mark_read",
    "change_password",
    "sessions",
    "revoke_session",
    "search",
    "kick",
    "ban",
    "unban",
    "set_role",
    "configure_room",
    "bans",
];

/// A frame the server sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// Answer to `hello`: the chosen version, and the user if the handshake carried a valid token.
    Welcome {
        /// The protocol version this connection speaks: the highest both sides listed.
        protocol: u32,
        /// Server name and version, e.g. `chat-server/0.1.0`.
        server: String,
        /// The authenticated user (by header or `hello` token), else `null`.
        user: Option<String>,
        /// How often the server sends a WebSocket ping, in ms.
        heartbeat_ms: u64,
        /// How long past a ping interval a silent connection is kept, in ms: silent for more than
        /// `heartbeat_ms` + this at a ping, it is closed with 4010.
        heartbeat_timeout_ms: u64,
        /// How long a typing indicator lasts without a refresh, in ms.
        typing_timeout_ms: u64,
        limits: Limits,
        /// What this connection may use beyond protocol 1, by name (see
        /// [`crate::capabilities`]); empty on protocol 1.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        capabilities: Vec<String>,
    },
    /// Authentication succeeded. `token` is present after `register` and `login`: keep it secret.
    AuthOk {
        user: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
    },
    /// A request without a more specific answer succeeded.
    Ok,
    /// Answer to `list_rooms`.
    RoomList {
        rooms: Vec<RoomInfo>,
        /// Present when more rooms follow: send `list_rooms` with `after` set to it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next: Option<String>,
    },
    /// Answer to `create_room`.
    RoomCreated { room: RoomInfo },
    /// Answer to `open_dm`: the room to `join`.
    DmOpened { room: String, user: String },
    /// Answer to `join`. Live events for the room follow it, never precede it.
    Joined {
        room: String,
        epoch: String,
        /// The room's highest seq when the join read its history.
        latest_seq: u64,
        topic: String,
        visibility: Visibility,
        /// Every member when `members_complete`; otherwise the first page (those present
        /// first, then by name), and `members` pages through the rest.
        members: Vec<Member>,
        /// How many members the room has.
        #[serde(default)]
        member_count: u64,
        /// Whether `members` lists every member.
        #[serde(default = "yes")]
        members_complete: bool,
        catch_up: CatchUp,
        messages: Vec<HistoryMessage>,
        /// `false` when `replay` pages follow with the rest of the missed messages.
        complete: bool,
        /// Protocol 2, `catch_up: replay`: every event after `since_seq` (messages, edits,
        /// deletes, reactions, topic and membership changes), in seq order; `messages` is then
        /// empty.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        events: Vec<RoomEvent>,
        /// The user's read state in the room.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        read: Option<ReadState>,
        /// Protocol 2: the user's role in the room.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        role: Option<Role>,
        /// Protocol 2: what the room leaves to its members (a direct-message room has none).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        settings: Option<RoomSettings>,
    },
    /// A further page of a `join` replay, in seq order; the last one has `complete: true`.
    Replay {
        room: String,
        messages: Vec<HistoryMessage>,
        complete: bool,
        /// Protocol 2: the page's events (then `messages` is empty).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        events: Vec<RoomEvent>,
    },
    /// Answer to `leave`; also sent unasked to the user's other connections when they leave,
    /// and to all of them when a moderator kicks or bans them (`removed` says so).
    Left {
        room: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        removed: Option<Removal>,
    },
    /// Answer to `history`: messages in ascending seq order.
    History {
        room: String,
        messages: Vec<HistoryMessage>,
        /// Whether older messages remain.
        has_more: bool,
        /// Protocol 2: the messages the page's messages reply to that are older than the page,
        /// ascending, so a client can quote them without another request.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        context: Vec<HistoryMessage>,
    },
    /// Protocol 2: answer to `search`, newest first (by `ts`, then room, then seq).
    SearchResults {
        results: Vec<SearchResult>,
        /// Present when more results follow: send `search` again with `before` set to it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next: Option<String>,
    },
    /// Answer to `send`: the message is durably stored with this seq. `duplicate` is true when
    /// the id had been sent before and this is the original ack again.
    Ack {
        id: String,
        room: String,
        seq: u64,
        ts: i64,
        duplicate: bool,
    },
    /// A new message in a room this connection joined (the sender's own included).
    Message {
        room: String,
        seq: u64,
        id: String,
        from: String,
        body: String,
        ts: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reply_to: Option<u64>,
    },
    /// Protocol 2: any other change to a room this connection joined (edit, delete, reaction,
    /// topic, membership), with its seq in the room's log.
    Event {
        room: String,
        #[serde(flatten)]
        event: RoomEvent,
    },
    /// Protocol 2: answer to `edit`, `delete`, `react`, `unreact` (and the moderation frames):
    /// the change is stored as the room's event `seq`; absent when there was nothing to change
    /// (a reaction the user already had, a message already deleted).
    Applied {
        room: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
    },
    /// Protocol 2: the user's read position in `room` moved (answer to `mark_read`, and sent to
    /// every other connection of the user).
    Read {
        room: String,
        #[serde(flatten)]
        read: ReadState,
    },
    /// Presence changes in a room, as a diff: one entry per user whose status changed.
    Presence {
        room: String,
        changes: Vec<PresenceChange>,
    },
    /// A user stopped being a member of the room.
    MemberLeft { room: String, user: String },
    /// Someone started or stopped typing.
    Typing {
        room: String,
        user: String,
        active: bool,
    },
    /// The room's topic changed.
    Topic {
        room: String,
        topic: String,
        by: String,
    },
    /// The user was invited into a private room.
    Invited { room: String, by: String },
    /// The room was deleted by its owner: it is gone, with its history.
    RoomDeleted { room: String },
    /// Answer to `members`.
    MemberList {
        room: String,
        members: Vec<Member>,
        /// Present when more members follow: send `members` with `after` set to it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next: Option<String>,
    },
    /// Answer to `ping`; `ts` is the server clock in ms since the Unix epoch.
    Pong { ts: i64 },
    /// Protocol 2. Answer to `sessions`: the user's sessions, newest first.
    SessionList { sessions: Vec<SessionInfo> },
    /// Protocol 2. Answer to `bans`: bans by user name.
    BanList {
        room: String,
        bans: Vec<BanInfo>,
        /// Present when more bans follow: send `bans` with `after` set to it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next: Option<String>,
    },
    /// A request failed, or the connection is about to be closed.
    Error {
        code: ErrorCode,
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
}

/// Every `type` a server frame may have.
pub const SERVER_FRAME_TYPES: &[&str] = &[
    "welcome",
    "auth_ok",
    "ok",
    "room_list",
    "room_created",
    "dm_opened",
    "joined",
    "replay",
    "left",
    "history",
    "ack",
    "message",
    "presence",
    "member_left",
    "typing",
    "topic",
    "invited",
    "room_deleted",
    "member_list",
    "pong",
    "session_list",
    "error",
    "event",
    "applied",
    "read",
    "search_results",
    "ban_list",
];

fn yes() -> bool {
    true
}

/// `null` in a client frame's optional field means the same as leaving the field out
/// (docs/protocol.md §3): for a field with a default, the default. `Option` fields do this by
/// themselves; this makes the others agree.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

impl ServerFrame {
    /// An `error` frame with no room and no retry hint.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Error {
            code,
            message: message.into(),
            room: None,
            retry_after_ms: None,
        }
    }

    /// An `error` frame about one room.
    pub fn room_error(code: ErrorCode, room: &str, message: impl Into<String>) -> Self {
        Self::Error {
            code,
            message: message.into(),
            room: Some(room.to_owned()),
            retry_after_ms: None,
        }
    }
}
