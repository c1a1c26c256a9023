//! Stable error codes carried by the `error` frame. The strings are the contract: a client
//! matches on them, never on the human-readable `message` beside them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Why the server refused a frame. Serialized as the snake_case string shown in `docs/protocol.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The text frame is not valid JSON.
    BadJson,
    /// Valid JSON, but not a valid frame: not an object, a field missing or of the wrong type, a
    /// bad `ref`; or a frame valid in form but not here (a second `hello`).
    BadFrame,
    /// The `type` names no client frame of the connection's protocol version.
    UnknownType,
    /// The first frame was not `hello`; the connection is closed with 4000.
    HelloRequired,
    /// `hello` offered no version the server speaks; the connection is closed with 4002.
    UnsupportedVersion,
    /// The frame needs an authenticated connection: send `register`, `login` or `auth` first.
    AuthRequired,
    /// `register`, `login` or `auth` on a connection that is already authenticated.
    AlreadyAuthenticated,
    /// Wrong username or password.
    InvalidCredentials,
    /// The token is unknown, revoked or malformed. After `hello` the connection is closed with
    /// 4003; after `auth` it stays open.
    InvalidToken,
    /// Self-registration is turned off on this server (`--registration closed`).
    RegistrationClosed,
    /// The username is already registered.
    UsernameTaken,
    /// A user or room name breaks the name rules (see limits).
    InvalidName,
    /// The password is shorter or longer than the limits allow.
    InvalidPassword,
    /// A message body is empty or only whitespace, too long, or holds control characters other
    /// than `\n` and `\t`.
    InvalidBody,
    /// A topic is too long or holds control characters.
    InvalidTopic,
    /// A client message id breaks the id rules (1–64 of `A-Z a-z 0-9 _ - . :`).
    InvalidId,
    /// `create_room` with a name that is taken.
    RoomExists,
    /// No room by that name, or a private room the user is neither a member of nor invited to
    /// (to them it does not exist).
    NoSuchRoom,
    /// No user by that name.
    NoSuchUser,
    /// `decline` of an invite the user does not have (or of a room that does not exist).
    NotInvited,
    /// The user is not a member of the room, or (for `send` and `typing`) this connection has
    /// not joined it: `join` it first.
    NotMember,
    /// The user may not do this here (e.g. invite into a direct-message room).
    Forbidden,
    /// No message with that seq in the room (or it is deleted, for an edit or a reaction).
    NoSuchMessage,
    /// A reaction that is not one of the allowed emoji.
    InvalidEmoji,
    /// A `search` query that cannot be parsed or breaks the bounds (at most 256 bytes and 8
    /// terms; something to look for): the message says which (docs/protocol.md §12.7).
    InvalidQuery,
    /// The frame was not processed: too many frames, too many failed logins, or the server is
    /// short of hashing capacity or outbound memory. Wait `retry_after_ms` before sending again;
    /// continuing to send after a too-many-frames refusal closes the connection with 4009.
    RateLimited,
    /// The user already has as many connections as the server allows one user.
    TooManyConnections,
    /// A per-user quota is used up (rooms created, invites sent): the message names it.
    LimitReached,
    /// The server failed to complete the request (e.g. storage error). Safe to retry; a `send`
    /// retried with the same `id` is stored at most once.
    Internal,
    /// The server is shutting down, or its database is unreachable for the moment. Retryable;
    /// a `send` may have been stored: resend it with the same `id`.
    Unavailable,
    /// Protocol 2. `revoke_session` named no session of this user (never one, or already
    /// revoked). Not worth retrying: list the sessions again.
    NoSuchSession,
    /// The account was disabled by the server's operator: it cannot log in, and its name cannot
    /// be registered again. Not worth retrying until the operator enables it.
    AccountDisabled,
    /// Protocol 2. The user is banned from the room: a `join` by them, or an `invite` of them,
    /// is refused until a moderator unbans them.
    Banned,
    /// Protocol 2. A `kick` or `ban` reason is over 512 bytes or holds control characters.
    InvalidReason,
}

impl ErrorCode {
    /// The wire string, e.g. `"rate_limited"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadJson => "bad_json",
            Self::BadFrame => "bad_frame",
            Self::UnknownType => "unknown_type",
            Self::HelloRequired => "hello_required",
            Self::UnsupportedVersion => "unsupported_version",
            Self::AuthRequired => "auth_required",
            Self::AlreadyAuthenticated => "already_authenticated",
            Self::InvalidCredentials => "invalid_credentials",
            Self::InvalidToken => "invalid_token",
            Self::RegistrationClosed => "registration_closed",
            Self::UsernameTaken => "username_taken",
            Self::InvalidName => "invalid_name",
            Self::InvalidPassword => "invalid_password",
            Self::InvalidBody => "invalid_body",
            Self::InvalidTopic => "invalid_topic",
            Self::InvalidId => "invalid_id",
            Self::RoomExists => "room_exists",
            Self::NoSuchRoom => "no_such_room",
            Self::NoSuchUser => "no_such_user",
            Self::NotInvited => "not_invited",
            Self::NotMember => "not_member",
            Self::Forbidden => "forbidden",
            Self::NoSuchMessage => "no_such_message",
            Self::InvalidEmoji => "invalid_emoji",
            Self::InvalidQuery => "invalid_query",
            Self::RateLimited => "rate_limited",
            Self::TooManyConnections => "too_many_connections",
            Self::LimitReached => "limit_reached",
            Self::Internal => "internal",
            Self::Unavailable => "unavailable",
            Self::NoSuchSession => "no_such_session",
            Self::AccountDisabled => "account_disabled",
            Self::Banned => "banned",
            Self::InvalidReason => "invalid_reason",
        }
    }

    /// Every code, for documentation and tests.
    pub const ALL: &'static [ErrorCode] = &[
        Self::BadJson,
        Self::BadFrame,
        Self::UnknownType,
        Self::HelloRequired,
        Self::UnsupportedVersion,
        Self::AuthRequired,
        Self::AlreadyAuthenticated,
        Self::InvalidCredentials,
        Self::InvalidToken,
        Self::RegistrationClosed,
        Self::UsernameTaken,
        Self::InvalidName,
        Self::InvalidPassword,
        Self::InvalidBody,
        Self::InvalidTopic,
        Self::InvalidId,
        Self::RoomExists,
        Self::NoSuchRoom,
        Self::NoSuchUser,
        Self::NotInvited,
        Self::NotMember,
        Self::Forbidden,
        Self::NoSuchMessage,
        Self::InvalidEmoji,
        Self::InvalidQuery,
        Self::RateLimited,
        Self::TooManyConnections,
        Self::LimitReached,
        Self::Internal,
        Self::Unavailable,
        Self::NoSuchSession,
        Self::AccountDisabled,
        Self::Banned,
        Self::InvalidReason,
    ];
}

/// Whether sending the refused frame again can succeed: the `retryable` of
/// `docs/protocol.codes.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Sent again unchanged it fails the same way, until the client changes the frame or its own
    /// state (authenticates, joins the room, closes another connection...). `false` in the file.
    No,
    /// A transient failure: send the same frame again, with backoff (after reconnecting, if the
    /// connection closed). `true` in the file.
    Yes,
    /// Send it again unchanged once the error's `retry_after_ms` has passed. `"after_ms"` in the
    /// file.
    AfterMs,
}

impl ErrorCode {
    /// What the code means, as `docs/protocol.md` §8 says.
    pub fn meaning(self) -> &'static str {
        match self {
            Self::BadJson => "The text frame is not valid JSON (an empty frame included).",
            Self::BadFrame => {
                "Valid JSON but not a valid frame: not an object, `type` missing or not a string, a \
                 required field missing, a field of the wrong type, a bad `ref`; or a frame valid \
                 in form but not here (a second `hello`, `join` with only one of `since_seq` and \
                 `epoch`, `set_status` `offline`)."
            }
            Self::UnknownType => "`type` names no client frame of this protocol version.",
            Self::HelloRequired => {
                "The first frame was not `hello`; the connection is closed with 4000."
            }
            Self::UnsupportedVersion => {
                "`hello` offered no protocol version the server speaks; the connection is closed \
                 with 4002."
            }
            Self::AuthRequired => "The connection is not authenticated.",
            Self::AlreadyAuthenticated => "The connection is already authenticated.",
            Self::InvalidCredentials => {
                "Unknown user or wrong password (the two are indistinguishable)."
            }
            Self::InvalidToken => {
                "The token is malformed, unknown or revoked. After `hello` the connection is \
                 closed with 4003; after `auth` it stays open."
            }
            Self::RegistrationClosed => "Self-registration is off on this server.",
            Self::UsernameTaken => "The username is already registered.",
            Self::InvalidName => "A user or room name breaks the name rules.",
            Self::InvalidPassword => "The password is not 8-1024 bytes.",
            Self::InvalidBody => {
                "The body is empty or only whitespace, over 16384 bytes, or holds control \
                 characters other than `\\n` and `\\t`."
            }
            Self::InvalidTopic => "The topic is over 512 bytes or holds control characters.",
            Self::InvalidId => "The message id is not 1-64 bytes of `A-Z a-z 0-9 _ - . :`.",
            Self::RoomExists => "A room by that name exists (a private one included).",
            Self::NoSuchRoom => {
                "No room by that name, or a private room the user is neither a member of nor \
                 invited to."
            }
            Self::NoSuchUser => "No user by that name.",
            Self::NotInvited => "The user has no invite to that room (or there is no such room).",
            Self::NotMember => {
                "The user is not a member of the room, or (for `send` and `typing`) this \
                 connection has not joined it."
            }
            Self::Forbidden => {
                "Not allowed here: `invite` into a direct-message room, `open_dm` with oneself, \
                 `delete_room` by anyone but the owner or of a direct-message room, `edit` of \
                 someone else's message, `delete` of someone else's message by a non-moderator; \
                 a moderation frame by someone whose role does not allow it, or aimed at oneself \
                 or at a role as high as one's own, or in a direct-message room; `set_topic` or \
                 `invite` by a member where the room's settings leave it to moderators \
                 (docs/protocol.md §12.8)."
            }
            Self::NoSuchMessage => {
                "No message with that seq in the room (a seq of another kind of event included), \
                 or, for `edit` and `react`, a deleted one."
            }
            Self::InvalidEmoji => "The reaction is not one of the allowed emoji.",
            Self::InvalidQuery => {
                "The `search` query cannot be parsed or breaks the bounds (at most 256 bytes and \
                 8 terms, something to look for)."
            }
            Self::NoSuchSession => "No session of the user has that id.",
            Self::AccountDisabled => {
                "The account is disabled by the server's operator: it cannot log in."
            }
            Self::Banned => {
                "The user is banned from the room: they cannot join it, nor be invited, until a \
                 moderator unbans them."
            }
            Self::InvalidReason => "The reason is over 512 bytes or holds control characters.",
            Self::RateLimited => {
                "The frame was not processed: too many frames, too many failed logins, or the \
                 server is short of hashing capacity or outbound memory. The error carries \
                 `retry_after_ms`."
            }
            Self::TooManyConnections => {
                "The user already has as many connections as one user may; this connection \
                 stays open, unauthenticated."
            }
            Self::LimitReached => {
                "A per-user quota is used up: rooms owned, or invites this hour (the message \
                 says which)."
            }
            Self::Internal => {
                "The server failed to complete the request (storage or hashing error); for a \
                 `send`, the message was not stored."
            }
            Self::Unavailable => {
                "The server is shutting down, or its database is unreachable or not answering \
                 for the moment. For a `send`, the message may have been stored."
            }
        }
    }

    /// Whether the refused frame can succeed if sent again (see [`Retry`]).
    pub fn retryable(self) -> Retry {
        match self {
            Self::RateLimited => Retry::AfterMs,
            Self::Internal | Self::Unavailable => Retry::Yes,
            Self::BadJson
            | Self::BadFrame
            | Self::UnknownType
            | Self::HelloRequired
            | Self::UnsupportedVersion
            | Self::AuthRequired
            | Self::AlreadyAuthenticated
            | Self::InvalidCredentials
            | Self::InvalidToken
            | Self::RegistrationClosed
            | Self::UsernameTaken
            | Self::InvalidName
            | Self::InvalidPassword
            | Self::InvalidBody
            | Self::InvalidTopic
            | Self::InvalidId
            | Self::RoomExists
            | Self::NoSuchRoom
            | Self::NoSuchUser
            | Self::NotInvited
            | Self::NotMember
            | Self::Forbidden
            | Self::NoSuchMessage
            | Self::InvalidEmoji
            | Self::InvalidQuery
            | Self::NoSuchSession
            | Self::AccountDisabled
            | Self::Banned
            | Self::InvalidReason
            | Self::TooManyConnections
            | Self::LimitReached => Retry::No,
        }
    }

    /// What a client does about it.
    pub fn action(self) -> &'static str {
        match self {
            Self::BadJson | Self::BadFrame => {
                "Fix the frame (the `message` says what is wrong). 10 malformed frames in a row \
                 close the connection with 4000."
            }
            Self::UnknownType => {
                "Do not send that frame on this connection: it is misspelt or needs a later \
                 protocol version than `welcome.protocol`."
            }
            Self::HelloRequired => "Reconnect and send `hello` first.",
            Self::UnsupportedVersion => {
                "Do not reconnect with the same versions: the server speaks none of them (the \
                 `message` lists its own)."
            }
            Self::AuthRequired => "Send `register`, `login` or `auth`, then the frame again.",
            Self::AlreadyAuthenticated => {
                "Nothing: the connection is authenticated already. Another user needs another \
                 connection."
            }
            Self::InvalidCredentials => {
                "Ask for the username and password again. Failed logins make later ones wait \
                 (`rate_limited`)."
            }
            Self::InvalidToken => "Forget the token and log in with a password.",
            Self::RegistrationClosed => "Ask the server's operator for an account, then `login`.",
            Self::UsernameTaken => "Choose another username, or `login` if it is yours.",
            Self::InvalidName => "Fix the name (docs/protocol.md §7.2).",
            Self::InvalidPassword => "Choose a password of 8-1024 bytes.",
            Self::InvalidBody | Self::InvalidTopic => {
                "Fix the text: sent again unchanged it fails again."
            }
            Self::InvalidId => "Use a valid id, e.g. a fresh UUID.",
            Self::RoomExists => "Choose another name, or `join` the room.",
            Self::NoSuchRoom => "Check the name; a private room needs an invite first.",
            Self::NoSuchUser => "Check the name.",
            Self::NotInvited => "Nothing: there is no invite to decline.",
            Self::NotMember => "`join` the room on this connection, then send the frame again.",
            Self::Forbidden => "Do not send it again.",
            Self::NoSuchMessage => {
                "Refresh the room (`history`): the message is not there, or is a tombstone."
            }
            Self::InvalidEmoji => "Use one of the emoji listed in docs/protocol.md §12.4.",
            Self::InvalidQuery => "Fix the query (the `message` says what is wrong; §12.7).",
            Self::NoSuchSession => "Ask `sessions` again: it was revoked or never existed.",
            Self::AccountDisabled => "Do not retry; ask the server's operator.",
            Self::Banned => "Do not retry; ask a moderator of the room to unban the user.",
            Self::InvalidReason => "Shorten the reason or take the control characters out.",
            Self::RateLimited => {
                "Wait `retry_after_ms`, then send the frame again. Frames sent sooner after a \
                 too-many-frames refusal are strikes, and too many close the connection with \
                 4009."
            }
            Self::TooManyConnections => {
                "Close another of the user's connections, then authenticate again."
            }
            Self::LimitReached => {
                "Delete a room the user owns, or wait for the hour's invites to come back."
            }
            Self::Internal => {
                "Send it again, with backoff; a `send` again with the same `id` is stored at most \
                 once."
            }
            Self::Unavailable => {
                "Send it again with backoff, after reconnecting if the connection closed; send a \
                 `send` again with the same `id`: if it was stored, the `ack` comes back with \
                 `duplicate: true`."
            }
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_str_matches_serde() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(code).expect("serialize");
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }
}
