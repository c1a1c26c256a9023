//! Moderation's behaviour, for every [`Store`]: roles, kicks, bans, the owner's settings and
//! hand-over, and every refusal, each decided in the change's transaction. Called from
//! [`super::suite::run_all`].

use chat_proto::{EventKind, Role, RoomKind, RoomSettings, Visibility};

use super::{
    Applied, Change, NewEvent, NewMessage, Store, StoreError, append_and_wait, apply_and_wait,
};
use crate::moderation::Refusal;

const R: &str = "modroom";

async fn try_apply(s: &dyn Store, from: &str, change: Change) -> Result<Applied, StoreError> {
    apply_and_wait(
        s,
        NewEvent {
            room: R.into(),
            from: from.into(),
            change,
        },
    )
    .await
}

/// The event applying `change` recorded (`None`: nothing to change).
async fn apply(s: &dyn Store, from: &str, change: Change) -> Option<EventKind> {
    try_apply(s, from, change)
        .await
        .expect("applied")
        .event
        .map(|e| e.what)
}

async fn refusal(s: &dyn Store, from: &str, change: Change) -> Refusal {
    match try_apply(s, from, change).await {
        Err(StoreError::Refused(r)) => r,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn kick(user: &str, reason: Option<&str>) -> Change {
    Change::Kick {
        user: user.into(),
        reason: reason.map(Into::into),
    }
}

fn ban(user: &str, reason: Option<&str>) -> Change {
    Change::Ban {
        user: user.into(),
        reason: reason.map(Into::into),
    }
}

fn set_role(user: &str, role: Role) -> Change {
    Change::SetRole {
        user: user.into(),
        role,
    }
}

pub async fn run_all(s: &dyn Store) {
    for u in ["mo", "mm", "ma", "mb", "mc", "mz"] {
        s.create_user(u, "h").await.expect("user");
    }
    s.create_room(R, Visibility::Public, "", "mo")
        .await
        .expect("room");
    for u in ["mm", "ma", "mb", "mc"] {
        apply(s, u, Change::Join).await.expect("joined");
    }
    roles(s).await;
    kicks(s).await;
    bans(s).await;
    deletes_and_topics(s).await;
    hand_over(s).await;
    direct_messages_have_no_moderators(s).await;
}

async fn roles(s: &dyn Store) {
    assert_eq!(s.role(R, "mo").await.expect("role"), Some(Role::Owner));
    assert_eq!(s.role(R, "ma").await.expect("role"), Some(Role::Member));
    assert_eq!(s.role(R, "mz").await.expect("role"), None, "not a member");
    assert_eq!(s.role(R, "ghost").await.expect("role"), None);
    assert_eq!(
        refusal(s, "ma", set_role("mm", Role::Moderator)).await,
        Refusal::NotOwner
    );
    assert_eq!(
        refusal(s, "mo", set_role("mz", Role::Moderator)).await,
        Refusal::NotMember("mz".into())
    );
    assert_eq!(
        apply(s, "mo", set_role("mm", Role::Moderator)).await,
        Some(EventKind::Role {
            user: "mm".into(),
            role: Role::Moderator
        })
    );
    assert_eq!(apply(s, "mo", set_role("mm", Role::Moderator)).await, None);
    assert_eq!(s.role(R, "mm").await.expect("role"), Some(Role::Moderator));
    let roles = s
        .roles_of(R, &["mo".into(), "mm".into(), "ma".into(), "mz".into()])
        .await
        .expect("roles");
    assert_eq!(roles.len(), 3, "only members: {roles:?}");
    assert_eq!(
        (roles["mo"], roles["mm"], roles["ma"]),
        (Role::Owner, Role::Moderator, Role::Member)
    );
    let listed = s.rooms_for("mm", None, 100).await.expect("rooms");
    let mine = listed.iter().find(|r| r.room == R).expect("listed");
    assert_eq!(mine.role, Some(Role::Moderator));
    let listed = s.rooms_for("mz", None, 100).await.expect("rooms");
    assert_eq!(
        listed.iter().find(|r| r.room == R).expect("public").role,
        None
    );
}

async fn kicks(s: &dyn Store) {
    assert_eq!(
        refusal(s, "ma", kick("mb", None)).await,
        Refusal::NotModerator
    );
    assert_eq!(
        refusal(s, "mm", kick("mo", None)).await,
        Refusal::Outranked("mo".into())
    );
    assert_eq!(
        refusal(s, "mm", kick("mm", None)).await,
        Refusal::SelfTarget
    );
    assert_eq!(
        refusal(s, "mm", kick("mz", None)).await,
        Refusal::NotMember("mz".into())
    );
    assert_eq!(
        refusal(s, "mz", kick("ma", None)).await,
        Refusal::ActorNotMember
    );
    let before = s.latest_seq(R).await.expect("seq");
    let k = try_apply(s, "mm", kick("ma", Some("be nice")))
        .await
        .expect("kicked")
        .event
        .expect("event");
    assert_eq!(k.seq, before + 1, "refusals took no seq");
    assert_eq!(
        k.what,
        EventKind::Kick {
            user: "ma".into(),
            reason: Some("be nice".into())
        }
    );
    assert!(!s.is_member(R, "ma").await.expect("member"));
    // The event reads back with its reason.
    let replay = s
        .events_between(R, before, k.seq, 10)
        .await
        .expect("replay");
    assert_eq!(replay.last().map(|e| &e.what), Some(&k.what));
    // A kicked user may come back to a public room.
    assert_eq!(apply(s, "ma", Change::Join).await, Some(EventKind::Join));
}

async fn bans(s: &dyn Store) {
    assert_eq!(
        refusal(s, "mm", ban("ghost", None)).await,
        Refusal::NoSuchUser("ghost".into())
    );
    assert_eq!(
        refusal(s, "mb", ban("ma", None)).await,
        Refusal::NotModerator
    );
    assert_eq!(
        apply(s, "mm", ban("mb", Some("spam"))).await,
        Some(EventKind::Ban {
            user: "mb".into(),
            reason: Some("spam".into())
        })
    );
    assert!(!s.is_member(R, "mb").await.expect("member"));
    assert!(s.is_banned(R, "mb").await.expect("banned"));
    assert_eq!(refusal(s, "mb", Change::Join).await, Refusal::Banned);
    assert_eq!(
        apply(s, "mm", ban("mb", None)).await,
        None,
        "banned already"
    );
    // A ban may come first: a known spammer who never joined.
    assert_eq!(
        apply(s, "mo", ban("mz", None)).await,
        Some(EventKind::Ban {
            user: "mz".into(),
            reason: None
        })
    );
    let list = s.bans(R, None, 10).await.expect("bans");
    let shown: Vec<_> = list
        .iter()
        .map(|b| (b.user.as_str(), b.by.as_str(), b.reason.as_deref()))
        .collect();
    assert_eq!(shown, [("mb", "mm", Some("spam")), ("mz", "mo", None)]);
    assert!(list.iter().all(|b| b.ts > 0));
    let page = s.bans(R, Some("mb"), 10).await.expect("bans");
    assert_eq!(page.len(), 1, "paged by name");
    assert_eq!(
        apply(s, "mm", Change::Unban { user: "mb".into() }).await,
        Some(EventKind::Unban { user: "mb".into() })
    );
    assert_eq!(
        apply(s, "mm", Change::Unban { user: "mb".into() }).await,
        None
    );
    assert!(!s.is_banned(R, "mb").await.expect("banned"));
    assert_eq!(apply(s, "mb", Change::Join).await, Some(EventKind::Join));
}

async fn deletes_and_topics(s: &dyn Store) {
    let m = append_and_wait(s, NewMessage::new(R, "mc", "mod-1", "buy now"))
        .await
        .expect("append");
    let delete = Change::Delete { target: m.seq };
    assert!(matches!(
        try_apply(s, "ma", delete.clone()).await,
        Err(StoreError::NotAllowed)
    ));
    assert_eq!(
        apply(s, "mm", delete).await,
        Some(EventKind::Delete { target: m.seq }),
        "a moderator deletes anyone's"
    );
    let topic = |t: &str| Change::Topic { topic: t.into() };
    assert!(apply(s, "ma", topic("members may")).await.is_some());
    assert!(matches!(
        s.configure_room(R, "mm", Some(false), None).await,
        Err(StoreError::Refused(Refusal::NotOwner))
    ));
    let set = s
        .configure_room(R, "mo", Some(false), None)
        .await
        .expect("configured");
    assert_eq!(
        set,
        RoomSettings {
            members_set_topic: false,
            members_invite: true
        }
    );
    let rec = s.room(R).await.expect("room").expect("exists");
    assert_eq!(rec.settings, set);
    assert_eq!(refusal(s, "ma", topic("no")).await, Refusal::TopicLocked);
    assert!(apply(s, "mm", topic("moderators may")).await.is_some());
    let back = s
        .configure_room(R, "mo", Some(true), Some(false))
        .await
        .expect("configured");
    assert_eq!((back.members_set_topic, back.members_invite), (true, false));
}

async fn hand_over(s: &dyn Store) {
    assert_eq!(
        apply(s, "mo", set_role("mc", Role::Owner)).await,
        Some(EventKind::Role {
            user: "mc".into(),
            role: Role::Owner
        })
    );
    assert_eq!(s.role(R, "mc").await.expect("role"), Some(Role::Owner));
    assert_eq!(
        s.role(R, "mo").await.expect("role"),
        Some(Role::Moderator),
        "the owner before stays a moderator"
    );
    let rec = s.room(R).await.expect("room").expect("exists");
    assert_eq!(rec.owner.as_deref(), Some("mc"));
    assert_eq!(s.rooms_owned("mc").await.expect("owned"), 1);
    assert_eq!(
        refusal(s, "mo", set_role("ma", Role::Moderator)).await,
        Refusal::NotOwner
    );
    // The new owner outranks the old one.
    assert_eq!(
        refusal(s, "mo", kick("mc", None)).await,
        Refusal::Outranked("mc".into())
    );
    assert!(apply(s, "mc", kick("mo", None)).await.is_some());
    assert!(apply(s, "mc", set_role("mm", Role::Member)).await.is_some());
    assert_eq!(s.role(R, "mm").await.expect("role"), Some(Role::Member));
}

async fn direct_messages_have_no_moderators(s: &dyn Store) {
    let dm = s.open_dm("ma", "mb").await.expect("dm");
    assert_eq!(dm.kind, RoomKind::Dm);
    let m = append_and_wait(s, NewMessage::new(&dm.name, "mb", "mod-dm", "hi"))
        .await
        .expect("append");
    let on_dm = |from: &str, change| NewEvent {
        room: dm.name.clone(),
        from: from.into(),
        change,
    };
    assert!(matches!(
        apply_and_wait(s, on_dm("ma", kick("mb", None))).await,
        Err(StoreError::Refused(Refusal::DirectMessage))
    ));
    assert!(matches!(
        apply_and_wait(s, on_dm("ma", Change::Delete { target: m.seq })).await,
        Err(StoreError::NotAllowed)
    ));
    assert!(matches!(
        s.configure_room(&dm.name, "ma", Some(false), None).await,
        Err(StoreError::Refused(Refusal::DirectMessage))
    ));
}
