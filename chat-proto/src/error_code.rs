//! Stable error codes carried by the `error` frame. The strings are the contract: a client
//! matches on them, never on the human-readable `message` beside them.

use serde::{Deserialize, Serialize};

/// Why the server refused a frame. Serialized as the snake_case string shown in `docs/protocol.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The text frame is not valid JSON.
    BadJson,
    /// Valid JSON, but not a valid frame: not an object, a field missing or of the wrong type.
    BadFrame,
    /// The `type` names no frame this protocol version knows.
    UnknownType,
    /// The first frame was not `hello`.
    HelloRequired,
    /// `hello` offered no version the server speaks; the connection is closed with 4002.
    UnsupportedVersion,
    /// The frame needs an authenticated connection: send `register`, `login` or `auth` first.
    AuthRequired,
    /// `register`, `login` or `auth` on a connection that is already authenticated.
    AlreadyAuthenticated,
    /// Wrong username or password.
    InvalidCredentials,
    /// The token is unknown, revoked or malformed.
    InvalidToken,
    /// Self-registration is turned off on this server (`--registration closed`).
    RegistrationClosed,
    /// The username is already registered.
    UsernameTaken,
    /// A user or room name breaks the name rules (see limits).
    InvalidName,
    /// The password is shorter or longer than the limits allow.
    InvalidPassword,
    /// A message body is empty, too long, or holds control characters other than `\n` and `\t`.
    InvalidBody,
    /// A topic is too long or holds control characters.
    InvalidTopic,
    /// A client message id breaks the id rules (1–64 of `A-Z a-z 0-9 _ - . :`).
    InvalidId,
    /// `create_room` with a name that is taken.
    RoomExists,
    /// No room by that name. (Private rooms exist for everyone: joining one without an invite is
    /// `not_invited`.)
    NoSuchRoom,
    /// No user by that name.
    NoSuchUser,
    /// The room is private and the user has not been invited.
    NotInvited,
    /// The frame needs the user to be a member of the room (`join` it first).
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
    /// Too many frames: wait `retry_after_ms` before sending again. Continuing to send closes
    /// the connection with 4009.
    RateLimited,
    /// The user already has as many connections as the server allows one user.
    TooManyConnections,
    /// A per-user quota is used up (rooms created, invites sent): the message names it.
    LimitReached,
    /// The server failed to complete the request (e.g. storage error). Safe to retry; a `send`
    /// retried with the same `id` is stored at most once.
    Internal,
    /// The server is shutting down and accepts no more work.
    Unavailable,
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
    ];
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
