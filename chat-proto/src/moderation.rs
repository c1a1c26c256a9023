//! Values of protocol 2's moderation (docs/protocol.md §12.8): why a user was removed from a
//! room, who may do what there, and a room's bans.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Why the user's connections left a room they did not leave themselves: in `left` when a
/// moderator kicked or banned them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Removal {
    /// The moderator (or owner) who did it.
    pub by: String,
    /// `true` for a ban (the user cannot join again until unbanned), `false` for a kick.
    pub banned: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What a room leaves to its members beyond talking; moderators and the owner may always. Both
/// are `true` for a new room; the owner changes them with `configure_room`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RoomSettings {
    /// Whether members may `set_topic`.
    pub members_set_topic: bool,
    /// Whether members may `invite` (into a private room).
    pub members_invite: bool,
}

impl Default for RoomSettings {
    fn default() -> Self {
        Self {
            members_set_topic: true,
            members_invite: true,
        }
    }
}

/// One ban of a room, as `ban_list` carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BanInfo {
    pub user: String,
    /// Who banned them.
    pub by: String,
    /// When, in ms since the Unix epoch.
    pub ts: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}
