//! The wire protocol of `chat`: typed frames carried as JSON in WebSocket text frames.
//!
//! This crate is the contract between `chat-server`, `chat-tui` and any other client. It does no
//! I/O and knows nothing of tokio: it holds the frame types ([`ClientFrame`], [`ServerFrame`]),
//! the pure [`decode_client`]/[`decode_server`]/[`encode`] functions, the stable error codes
//! ([`ErrorCode`]), the WebSocket close codes the server uses ([`close`]), and the limits and name
//! rules both sides enforce ([`limits`]). `docs/protocol.md` is its human-readable twin; a test
//! parses every example in that document with these types.

pub mod close;
mod codec;
pub mod contract;
mod error_code;
pub mod events;
mod frames;
pub mod limits;
pub mod moderation;
pub mod search;
mod types;

pub use codec::{DecodeError, Envelope, decode_client, decode_server, encode, encoded_type};
pub use error_code::{ErrorCode, Retry};
pub use events::{EventKind, Fold, Reaction, Role, RoomEvent};
pub use frames::{CLIENT_FRAME_TYPES, ClientFrame, SERVER_FRAME_TYPES, ServerFrame};
pub use moderation::{BanInfo, Removal, RoomSettings};
pub use types::{
    CatchUp, HistoryMessage, Limits, Member, PresenceChange, ReadState, Ref, RoomInfo, RoomKind,
    SearchResult, SessionInfo, Status, Visibility,
};

/// The newest protocol version this crate speaks. A client lists the versions it speaks in
/// `hello`; the server answers in `welcome` with the highest one both sides know.
pub const PROTOCOL_VERSION: u32 = 2;

/// Every version this build can speak, oldest first.
pub const SUPPORTED_VERSIONS: &[u32] = &[1, 2];

/// What a connection speaking `version` may use beyond protocol 1, as `welcome.capabilities`
/// names it: a client checks a name rather than a version number.
pub fn capabilities(version: u32) -> &'static [&'static str] {
    if version >= 2 {
        &[
            "edit",
            "delete",
            "reply",
            "react",
            "read_state",
            "room_log",
            "search",
            "sessions",
            "moderation",
        ]
    } else {
        &[]
    }
}

/// Picks the version to speak: the highest one both sides list, if any.
pub fn negotiate_version(offered: &[u32]) -> Option<u32> {
    SUPPORTED_VERSIONS
        .iter()
        .rev()
        .find(|v| offered.contains(v))
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_picks_highest_common_version() {
        assert_eq!(negotiate_version(&[1]), Some(1));
        assert_eq!(negotiate_version(&[7, 1, 3]), Some(1));
        assert_eq!(negotiate_version(&[1, 2]), Some(2));
        assert_eq!(negotiate_version(&[2, 3]), Some(2));
        assert_eq!(negotiate_version(&[3, 4]), None);
        assert_eq!(negotiate_version(&[]), None);
    }
}
