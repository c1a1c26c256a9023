//! The accounts part of the store suite: sessions and their bound, last use, password changes,
//! disabled accounts, the revocation log and the user list. Token hashes here are any bytes.

use std::collections::BTreeSet;

use crate::store::accounts::{Issued, Revoke};
use crate::store::{Store, StoreError};

/// Issues `hash` for `user` within `max` sessions and returns what it evicted.
async fn issue(s: &dyn Store, user: &str, hash: &[u8], max: u32) -> Vec<Vec<u8>> {
    match s.issue_token(user, hash, max).await.expect("issue") {
        Issued::Stored { evicted } => evicted,
        Issued::Disabled => panic!("{user} is not disabled"),
    }
}

/// Issues with a clock tick between: "oldest" is then the order of issue, not of the hashes.
async fn issue_later(s: &dyn Store, user: &str, hash: &[u8], max: u32) -> Vec<Vec<u8>> {
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    issue(s, user, hash, max).await
}

fn hashes(v: &[&[u8]]) -> Vec<Vec<u8>> {
    v.iter().map(|h| h.to_vec()).collect()
}

fn set(v: Vec<Vec<u8>>) -> BTreeSet<Vec<u8>> {
    v.into_iter().collect()
}

async fn listed(s: &dyn Store, user: &str) -> Vec<Vec<u8>> {
    let rows = s.sessions(user, 100).await.expect("sessions");
    rows.into_iter().map(|r| r.hash).collect()
}

/// A user's tokens newest first; past the bound the oldest goes (and only it); a token's last
/// use starts at its issue and moves when touched.
pub(super) async fn sessions_bound_and_last_use(s: &dyn Store) {
    s.create_user("sess", "h").await.expect("user");
    for t in [b"sess-1", b"sess-2", b"sess-3"] {
        assert_eq!(issue_later(s, "sess", t, 3).await, Vec::<Vec<u8>>::new());
    }
    assert_eq!(
        listed(s, "sess").await,
        hashes(&[b"sess-3", b"sess-2", b"sess-1"])
    );
    assert_eq!(
        issue_later(s, "sess", b"sess-4", 3).await,
        hashes(&[b"sess-1"]),
        "the oldest makes room"
    );
    assert_eq!(s.token_use(b"sess-1").await.expect("use"), None);
    assert_eq!(
        listed(s, "sess").await,
        hashes(&[b"sess-4", b"sess-3", b"sess-2"])
    );
    // A bound lowered since: one login brings the user down to it.
    assert_eq!(
        set(issue_later(s, "sess", b"sess-5", 2).await),
        set(hashes(&[b"sess-2", b"sess-3"]))
    );
    assert_eq!(listed(s, "sess").await, hashes(&[b"sess-5", b"sess-4"]));
    assert_eq!(s.sessions("sess", 1).await.expect("page").len(), 1);
    assert!(s.sessions("nobody", 10).await.expect("none").is_empty());

    let rows = s.sessions("sess", 10).await.expect("sessions");
    for r in &rows {
        assert_eq!(r.last_used_ms, r.created_ms, "issuing counts as a use");
    }
    let used = s.token_use(b"sess-4").await.expect("use").expect("valid");
    assert_eq!(
        (used.user.as_str(), used.last_used_ms),
        ("sess", rows[1].created_ms)
    );
    let later = rows[1].created_ms + 90_000;
    s.touch_token(b"sess-4", later).await.expect("touch");
    let used = s.token_use(b"sess-4").await.expect("use").expect("valid");
    assert_eq!(used.last_used_ms, later);
    let rows = s.sessions("sess", 10).await.expect("sessions");
    assert_eq!(
        (rows[1].hash.as_slice(), rows[1].last_used_ms),
        (&b"sess-4"[..], later)
    );
    s.touch_token(b"gone", later)
        .await
        .expect("nothing to touch");
}

/// A password change revokes what it was told to; a disabled account has no tokens, gets no
/// new one, and keeps the time it was first disabled; enabling lets it log in again.
pub(super) async fn password_changes_and_disabled_accounts(s: &dyn Store) {
    s.create_user("pw", "old").await.expect("user");
    for t in [b"pw-1", b"pw-2", b"pw-3"] {
        issue(s, "pw", t, 100).await;
    }
    let account = s.account("pw").await.expect("read").expect("exists");
    assert_eq!(
        (account.password_hash.as_str(), account.disabled),
        ("old", false)
    );
    assert_eq!(s.account("nobody").await.expect("read"), None);

    assert_eq!(
        s.set_password("pw", "new", Revoke::None)
            .await
            .expect("set"),
        Vec::<Vec<u8>>::new()
    );
    assert_eq!(
        s.account("pw")
            .await
            .expect("read")
            .map(|a| a.password_hash),
        Some("new".into())
    );
    assert_eq!(set(listed(s, "pw").await).len(), 3, "every session stays");
    assert_eq!(
        set(s
            .set_password("pw", "newer", Revoke::AllBut(b"pw-2"))
            .await
            .expect("set")),
        set(hashes(&[b"pw-1", b"pw-3"]))
    );
    assert_eq!(listed(s, "pw").await, hashes(&[b"pw-2"]));
    assert_eq!(
        s.set_password("pw", "newest", Revoke::All)
            .await
            .expect("set"),
        hashes(&[b"pw-2"])
    );
    assert!(listed(s, "pw").await.is_empty());
    assert!(matches!(
        s.set_password("nobody", "x", Revoke::All).await,
        Err(StoreError::NotFound)
    ));

    issue(s, "pw", b"pw-4", 100).await;
    assert_eq!(
        s.set_disabled("pw", true).await.expect("disable"),
        hashes(&[b"pw-4"])
    );
    assert!(
        s.account("pw")
            .await
            .expect("read")
            .expect("exists")
            .disabled
    );
    assert_eq!(s.token_use(b"pw-4").await.expect("use"), None);
    assert_eq!(
        s.issue_token("pw", b"pw-5", 100).await.expect("refused"),
        Issued::Disabled
    );
    assert_eq!(s.token_use(b"pw-5").await.expect("use"), None, "not stored");
    let first = disabled_at(s, "pw").await.expect("disabled");
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    assert!(s.set_disabled("pw", true).await.expect("again").is_empty());
    assert_eq!(
        disabled_at(s, "pw").await,
        Some(first),
        "the first time is kept"
    );

    assert!(
        s.set_disabled("pw", false)
            .await
            .expect("enable")
            .is_empty()
    );
    assert!(
        !s.account("pw")
            .await
            .expect("read")
            .expect("exists")
            .disabled
    );
    assert_eq!(disabled_at(s, "pw").await, None);
    issue(s, "pw", b"pw-6", 100).await;
    assert_eq!(
        s.token_use(b"pw-6").await.expect("use").map(|u| u.user),
        Some("pw".into())
    );
    for disabled in [true, false] {
        assert!(matches!(
            s.set_disabled("nobody", disabled).await,
            Err(StoreError::NotFound)
        ));
    }
}

async fn disabled_at(s: &dyn Store, user: &str) -> Option<i64> {
    s.users(None, 10_000)
        .await
        .expect("users")
        .into_iter()
        .find(|u| u.name == user)
        .expect("listed")
        .disabled_ms
}

/// Every revocation is in the log once, in commit order, paged by id; the user list is sorted
/// by name, paged, and counts sessions.
pub(super) async fn the_revocation_log_and_the_user_list(s: &dyn Store) {
    let start = s.revocation_cursor().await.expect("cursor");
    s.create_user("rlog", "h").await.expect("user");
    for t in [b"rlog-1", b"rlog-2", b"rlog-3"] {
        issue_later(s, "rlog", t, 100).await;
    }
    assert!(s.revoke_token(b"rlog-2").await.expect("revoke"));
    assert!(
        !s.revoke_token(b"rlog-2").await.expect("gone"),
        "logged once"
    );
    let gone = s.set_disabled("rlog", true).await.expect("disable");
    assert_eq!(set(gone), set(hashes(&[b"rlog-1", b"rlog-3"])));
    let log = s.revocations_after(start, 100).await.expect("log");
    assert_eq!(log.len(), 3, "{log:?}");
    assert_eq!(log[0].hash, b"rlog-2");
    assert_eq!(
        set(log[1..].iter().map(|r| r.hash.clone()).collect()),
        set(hashes(&[b"rlog-1", b"rlog-3"]))
    );
    assert!(log.windows(2).all(|w| w[0].id < w[1].id), "{log:?}");
    assert!(log[0].id > start);
    assert_eq!(s.revocation_cursor().await.expect("cursor"), log[2].id);
    let page = s.revocations_after(start, 2).await.expect("page");
    assert_eq!(page, log[..2]);
    let rest = s.revocations_after(page[1].id, 100).await.expect("rest");
    assert_eq!(rest, log[2..]);

    s.create_user("rlog0", "h").await.expect("user");
    issue(s, "rlog0", b"rlog0-1", 100).await;
    issue(s, "rlog0", b"rlog0-2", 100).await;
    let all = s.users(None, 10_000).await.expect("users");
    let names: Vec<&str> = all.iter().map(|u| u.name.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted, "by name");
    let row = |n: &str| all.iter().find(|u| u.name == n).expect("listed").clone();
    assert_eq!((row("rlog0").sessions, row("rlog0").disabled_ms), (2, None));
    assert_eq!(row("rlog").sessions, 0);
    assert!(row("rlog").disabled_ms.is_some());
    assert!(row("rlog").created_ms > 0);
    let page = s.users(Some("rlog"), 1).await.expect("page");
    assert_eq!(
        page.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(),
        ["rlog0"]
    );
}
