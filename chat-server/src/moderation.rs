//! Who may moderate a room, as pure rules (docs/protocol.md §12.8). The stores apply them inside
//! the transaction that makes the change, against the roles committed before it, so two
//! moderators acting at once (on two nodes, say) cannot both succeed where one would refuse the
//! other.
//!
//! A role is `None` for someone who is not a member. The owner is a member whose user is the
//! room's owner; a moderator who leaves, or is kicked, is a plain member if they come back.

use chat_proto::{ErrorCode, Role, RoomKind, RoomSettings};

/// Why a moderation change (or a change that depends on a role) is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("only the room's moderators and owner may do that")]
    NotModerator,
    #[error("only the room's owner may do that")]
    NotOwner,
    #[error("`{0}` has a role as high as yours in this room")]
    Outranked(String),
    #[error("you cannot do that to yourself (`leave` the room instead)")]
    SelfTarget,
    #[error("direct-message rooms have no moderators")]
    DirectMessage,
    #[error("`{0}` is not a member of this room")]
    NotMember(String),
    #[error("there is no user `{0}`")]
    NoSuchUser(String),
    #[error("you are banned from this room")]
    Banned,
    #[error("`{0}` is banned from this room")]
    TargetBanned(String),
    #[error("only moderators may set this room's topic")]
    TopicLocked,
    #[error("only moderators may invite into this room")]
    InviteLocked,
    #[error("you are not a member of this room")]
    ActorNotMember,
}

impl Refusal {
    /// The error code the refusal is told with.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::NotMember(_) | Self::ActorNotMember => ErrorCode::NotMember,
            Self::NoSuchUser(_) => ErrorCode::NoSuchUser,
            Self::Banned | Self::TargetBanned(_) => ErrorCode::Banned,
            Self::NotModerator
            | Self::NotOwner
            | Self::Outranked(_)
            | Self::SelfTarget
            | Self::DirectMessage
            | Self::TopicLocked
            | Self::InviteLocked => ErrorCode::Forbidden,
        }
    }
}

/// Whether `role` moderates: moderators and the owner.
pub fn moderates(role: Option<Role>) -> bool {
    matches!(role, Some(Role::Moderator | Role::Owner))
}

/// What a moderation frame asks for, and of whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    Kick,
    Ban,
    Unban,
    SetRole(Role),
}

/// Whether `actor` (with role `actor_role`) may do `act` to `target` (with `target_role`) in a
/// room of `kind`. Whether the target user exists at all is the caller's to check after.
pub fn may(
    kind: RoomKind,
    act: Act,
    actor: &str,
    actor_role: Option<Role>,
    target: &str,
    target_role: Option<Role>,
) -> Result<(), Refusal> {
    if kind == RoomKind::Dm {
        return Err(Refusal::DirectMessage);
    }
    let Some(actor_role) = actor_role else {
        return Err(Refusal::ActorNotMember);
    };
    if let Act::SetRole(_) = act {
        if actor_role != Role::Owner {
            return Err(Refusal::NotOwner);
        }
    } else if !moderates(Some(actor_role)) {
        return Err(Refusal::NotModerator);
    }
    if actor == target {
        return Err(Refusal::SelfTarget);
    }
    match act {
        // Unbanning needs no rank over a user who is, being banned, not a member.
        Act::Unban => Ok(()),
        // A ban may come before the user ever joins (a known spammer).
        Act::Ban => match target_role {
            Some(r) if r >= actor_role => Err(Refusal::Outranked(target.to_owned())),
            _ => Ok(()),
        },
        Act::Kick | Act::SetRole(_) => match target_role {
            None => Err(Refusal::NotMember(target.to_owned())),
            Some(r) if r >= actor_role => Err(Refusal::Outranked(target.to_owned())),
            Some(_) => Ok(()),
        },
    }
}

/// Whether someone with `role` may delete a message by someone else in a room of `kind`.
pub fn may_delete_others(kind: RoomKind, role: Option<Role>) -> bool {
    kind != RoomKind::Dm && moderates(role)
}

/// Whether someone with `role` may set the topic.
pub fn may_set_topic(
    kind: RoomKind,
    settings: RoomSettings,
    role: Option<Role>,
) -> Result<(), Refusal> {
    match role {
        None => Err(Refusal::ActorNotMember),
        Some(_) if kind == RoomKind::Dm || settings.members_set_topic => Ok(()),
        r if moderates(r) => Ok(()),
        Some(_) => Err(Refusal::TopicLocked),
    }
}

/// Whether someone with `role` may invite into the room.
pub fn may_invite(settings: RoomSettings, role: Option<Role>) -> Result<(), Refusal> {
    match role {
        None => Err(Refusal::ActorNotMember),
        Some(_) if settings.members_invite => Ok(()),
        r if moderates(r) => Ok(()),
        Some(_) => Err(Refusal::InviteLocked),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Role::{Member, Moderator, Owner};

    fn room(act: Act, actor: Option<Role>, target: Option<Role>) -> Result<(), Refusal> {
        may(RoomKind::Room, act, "a", actor, "t", target)
    }

    #[test]
    fn moderators_act_on_members_only_and_owners_on_everyone_below() {
        for act in [Act::Kick, Act::Ban] {
            assert_eq!(room(act, Some(Moderator), Some(Member)), Ok(()));
            assert_eq!(room(act, Some(Owner), Some(Moderator)), Ok(()));
            assert_eq!(
                room(act, Some(Moderator), Some(Moderator)),
                Err(Refusal::Outranked("t".into()))
            );
            assert_eq!(
                room(act, Some(Moderator), Some(Owner)),
                Err(Refusal::Outranked("t".into()))
            );
            assert_eq!(
                room(act, Some(Member), Some(Member)),
                Err(Refusal::NotModerator)
            );
            assert_eq!(room(act, None, Some(Member)), Err(Refusal::ActorNotMember));
        }
        assert_eq!(room(Act::Unban, Some(Moderator), None), Ok(()));
        assert_eq!(
            room(Act::Unban, Some(Member), None),
            Err(Refusal::NotModerator)
        );
    }

    #[test]
    fn a_ban_may_come_first_a_kick_needs_a_member() {
        assert_eq!(room(Act::Ban, Some(Moderator), None), Ok(()));
        assert_eq!(
            room(Act::Kick, Some(Moderator), None),
            Err(Refusal::NotMember("t".into()))
        );
    }

    #[test]
    fn only_the_owner_gives_roles() {
        for role in [Member, Moderator, Owner] {
            assert_eq!(room(Act::SetRole(role), Some(Owner), Some(Member)), Ok(()));
            assert_eq!(
                room(Act::SetRole(role), Some(Moderator), Some(Member)),
                Err(Refusal::NotOwner)
            );
        }
        assert_eq!(
            room(Act::SetRole(Moderator), Some(Owner), None),
            Err(Refusal::NotMember("t".into()))
        );
    }

    #[test]
    fn nobody_acts_on_themselves_and_dms_have_no_moderators() {
        assert_eq!(
            may(
                RoomKind::Room,
                Act::Kick,
                "a",
                Some(Owner),
                "a",
                Some(Owner)
            ),
            Err(Refusal::SelfTarget)
        );
        assert_eq!(
            may(RoomKind::Dm, Act::Ban, "a", Some(Member), "t", Some(Member)),
            Err(Refusal::DirectMessage)
        );
        assert!(!may_delete_others(RoomKind::Dm, Some(Owner)));
        assert!(may_delete_others(RoomKind::Room, Some(Moderator)));
        assert!(!may_delete_others(RoomKind::Room, Some(Member)));
    }

    #[test]
    fn settings_decide_what_members_may() {
        let open = RoomSettings::default();
        let locked = RoomSettings {
            members_set_topic: false,
            members_invite: false,
        };
        assert_eq!(may_set_topic(RoomKind::Room, open, Some(Member)), Ok(()));
        assert_eq!(
            may_set_topic(RoomKind::Room, locked, Some(Member)),
            Err(Refusal::TopicLocked)
        );
        assert_eq!(
            may_set_topic(RoomKind::Room, locked, Some(Moderator)),
            Ok(())
        );
        assert_eq!(may_set_topic(RoomKind::Dm, locked, Some(Member)), Ok(()));
        assert_eq!(
            may_set_topic(RoomKind::Room, open, None),
            Err(Refusal::ActorNotMember)
        );
        assert_eq!(may_invite(open, Some(Member)), Ok(()));
        assert_eq!(may_invite(locked, Some(Member)), Err(Refusal::InviteLocked));
        assert_eq!(may_invite(locked, Some(Owner)), Ok(()));
    }
}
