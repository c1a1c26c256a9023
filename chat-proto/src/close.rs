//! WebSocket close codes the server sends, and why. Codes 1000–1015 are RFC 6455's; 4000–4999 are
//! this protocol's own. A client decides from the code whether to reconnect: see
//! [`should_reconnect`].

/// Normal closure: the client logged out, or closed first.
pub const NORMAL: u16 = 1000;
/// The server is shutting down (SIGINT/SIGTERM). Reconnect with backoff.
pub const GOING_AWAY: u16 = 1001;
/// The client broke the WebSocket protocol itself (e.g. an unmasked frame).
pub const WS_PROTOCOL_ERROR: u16 = 1002;
/// The client sent a binary frame; the protocol is JSON in text frames only.
pub const UNSUPPORTED_DATA: u16 = 1003;
/// A text frame was not valid UTF-8.
pub const INVALID_PAYLOAD: u16 = 1007;
/// A frame was larger than [`crate::limits::MAX_FRAME_BYTES`].
pub const MESSAGE_TOO_BIG: u16 = 1009;
/// The client broke the protocol: no `hello` as the first frame, or too many malformed frames
/// in a row ([`crate::limits::MAX_CONSECUTIVE_BAD_FRAMES`]).
pub const PROTOCOL_ERROR: u16 = 4000;
/// The connection did not authenticate within the server's auth timeout.
pub const AUTH_TIMEOUT: u16 = 4001;
/// `hello` offered no protocol version the server speaks.
pub const UNSUPPORTED_VERSION: u16 = 4002;
/// The token is not (or no longer) valid: it was revoked by a logout, or the token in `hello` was
/// unknown. Log in again with a password.
pub const AUTH_FAILED: u16 = 4003;
/// The client stopped reading: its outbound queue filled up. Reconnect and catch up with
/// `since_seq`.
pub const SLOW_CONSUMER: u16 = 4008;
/// The client kept sending after being told `rate_limited`.
pub const RATE_LIMIT_ABUSE: u16 = 4009;
/// The client stopped answering pings.
pub const HEARTBEAT_TIMEOUT: u16 = 4010;

/// Whether a client should reconnect after the server closed with `code`: yes after an outage or
/// a transient fault, no after the server ended the session on purpose or the client is broken.
pub fn should_reconnect(code: u16) -> bool {
    !matches!(
        code,
        NORMAL
            | WS_PROTOCOL_ERROR
            | UNSUPPORTED_DATA
            | INVALID_PAYLOAD
            | PROTOCOL_ERROR
            | UNSUPPORTED_VERSION
            | AUTH_FAILED
    )
}

/// What a close code means, as `docs/protocol.md` §9 says; `None` for a code this server never
/// sends.
pub fn meaning(code: u16) -> Option<&'static str> {
    Some(match code {
        NORMAL => "The client logged out (`logout`), or the client closed first.",
        GOING_AWAY => {
            "The server is shutting down. Frames it had not read yet got no reply: send them \
             again after reconnecting (a `send` with the same `id`)."
        }
        WS_PROTOCOL_ERROR => "The client broke the WebSocket protocol itself.",
        UNSUPPORTED_DATA => "The client sent a binary frame.",
        INVALID_PAYLOAD => "A text frame was not valid UTF-8.",
        MESSAGE_TOO_BIG => {
            "The client sent a message over 65536 bytes; reconnect without sending it again."
        }
        PROTOCOL_ERROR => "The first frame was not `hello`, or 10 malformed frames in a row.",
        AUTH_TIMEOUT => "Not authenticated within the auth timeout.",
        UNSUPPORTED_VERSION => "`hello` offered no protocol version the server speaks.",
        AUTH_FAILED => {
            "The token in `hello` is invalid, or the connection's token was revoked by a \
             `logout` elsewhere: log in again with a password."
        }
        SLOW_CONSUMER => {
            "The client stopped reading and its outbound queue reached its bound: reconnect and \
             catch up with `since_seq`."
        }
        RATE_LIMIT_ABUSE => "The client kept sending after `rate_limited`.",
        HEARTBEAT_TIMEOUT => "The client stopped answering pings.",
        _ => return None,
    })
}

/// Every close code above, with its name, for documentation and tests.
pub const ALL: &[(u16, &str)] = &[
    (NORMAL, "normal"),
    (GOING_AWAY, "going_away"),
    (WS_PROTOCOL_ERROR, "ws_protocol_error"),
    (UNSUPPORTED_DATA, "unsupported_data"),
    (INVALID_PAYLOAD, "invalid_payload"),
    (MESSAGE_TOO_BIG, "message_too_big"),
    (PROTOCOL_ERROR, "protocol_error"),
    (AUTH_TIMEOUT, "auth_timeout"),
    (UNSUPPORTED_VERSION, "unsupported_version"),
    (AUTH_FAILED, "auth_failed"),
    (SLOW_CONSUMER, "slow_consumer"),
    (RATE_LIMIT_ABUSE, "rate_limit_abuse"),
    (HEARTBEAT_TIMEOUT, "heartbeat_timeout"),
];
