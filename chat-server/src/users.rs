//! `chat-server user …`: accounts from the command line. The commands write the database
//! (`--db`, SQLite or PostgreSQL) and nothing else, so they work beside running servers: what a
//! running node must act on (revoked tokens: their connections close with 4003) reaches it
//! through the revocation log it polls (`crate::revocations`), within about 2 s.

use std::io::{BufRead, Write};

use chat_proto::limits::{check_password, check_username};

use crate::store::accounts::{Revoke, UserRow};
use crate::store::{Store, StoreError};

/// Why a `user` command failed; the binary prints it after `error:` and exits with 1.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    #[error("no user named {0}")]
    NoSuchUser(String),
    #[error("user {0} already exists")]
    Exists(String),
    #[error("{0}")]
    InvalidName(&'static str),
    #[error("{0} (the password is read from standard input, one line)")]
    InvalidPassword(&'static str),
    #[error("reading the password from standard input: {0}")]
    Input(std::io::Error),
    #[error("writing the list: {0}")]
    Output(std::io::Error),
    #[error("hashing the password: {0}")]
    Hashing(String),
    #[error("the database: {0}")]
    Store(#[from] StoreError),
}

/// Users read per query by `user list`: a large server's list never sits in memory whole.
const LIST_PAGE: u32 = 1000;

/// One line of `input` as a password: the line ending is not part of it.
pub fn read_password(input: &mut impl BufRead) -> Result<String, UsersError> {
    let mut line = String::new();
    input.read_line(&mut line).map_err(UsersError::Input)?;
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    check_password(&password).map_err(UsersError::InvalidPassword)?;
    Ok(password)
}

fn hash(password: &str) -> Result<String, UsersError> {
    crate::auth::hash_password(password).map_err(UsersError::Hashing)
}

/// Whether `name` is an account, and if it is disabled.
async fn disabled(store: &dyn Store, name: &str) -> Result<bool, UsersError> {
    match store.account(name).await? {
        Some(a) => Ok(a.disabled),
        None => Err(UsersError::NoSuchUser(name.to_owned())),
    }
}

/// `user add NAME`: creates the account with the password `read` gives (asked only once the
/// name is known to be valid).
pub async fn add(
    store: &dyn Store,
    name: &str,
    read: impl FnOnce() -> Result<String, UsersError>,
) -> Result<String, UsersError> {
    check_username(name).map_err(UsersError::InvalidName)?;
    let password = read()?;
    match store.create_user(name, &hash(&password)?).await {
        Ok(()) => Ok(format!("created user {name}")),
        Err(StoreError::Conflict) => Err(UsersError::Exists(name.to_owned())),
        Err(e) => Err(e.into()),
    }
}

/// `user list`: every account by name, as a table.
pub async fn list(store: &dyn Store, out: &mut impl Write) -> Result<(), UsersError> {
    let mut after: Option<String> = None;
    let mut header = true;
    loop {
        let page = store.users(after.as_deref(), LIST_PAGE).await?;
        // Each page is aligned on its own names (at most 32 characters wide).
        let width = page.iter().map(|u| u.name.len()).max().unwrap_or(0).max(4);
        if header {
            writeln!(
                out,
                "{:<width$}  {:<20}  {:<20}  SESSIONS",
                "NAME", "CREATED", "DISABLED"
            )
            .map_err(UsersError::Output)?;
            header = false;
        }
        for u in &page {
            writeln!(out, "{}", row(u, width)).map_err(UsersError::Output)?;
        }
        match page.last() {
            Some(last) if page.len() == LIST_PAGE as usize => after = Some(last.name.clone()),
            _ => return out.flush().map_err(UsersError::Output),
        }
    }
}

fn row(u: &UserRow, width: usize) -> String {
    let disabled = u.disabled_ms.map_or_else(|| "-".to_owned(), utc);
    format!(
        "{:<width$}  {:<20}  {:<20}  {}",
        u.name,
        utc(u.created_ms),
        disabled,
        u.sessions
    )
}

/// Milliseconds since the Unix epoch as `2024-11-23T22:13:20Z`.
fn utc(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    )
}

/// `user disable NAME`.
pub async fn disable(store: &dyn Store, name: &str) -> Result<String, UsersError> {
    let was = disabled(store, name).await?;
    // Even when it was: a token issued meanwhile is revoked, and it costs nothing.
    let gone = store.set_disabled(name, true).await?;
    Ok(match was {
        true => format!("user {name} was already disabled"),
        false => format!(
            "disabled user {name}: {} revoked; its connections to running servers close within {} s",
            sessions(gone.len()),
            crate::revocations::POLL.as_secs()
        ),
    })
}

/// `user enable NAME`.
pub async fn enable(store: &dyn Store, name: &str) -> Result<String, UsersError> {
    let was = disabled(store, name).await?;
    store.set_disabled(name, false).await?;
    Ok(match was {
        true => format!("enabled user {name}"),
        false => format!("user {name} was not disabled"),
    })
}

/// `user reset-password NAME`: the password `read` gives (asked only once the account is
/// known), and every token revoked.
pub async fn reset_password(
    store: &dyn Store,
    name: &str,
    read: impl FnOnce() -> Result<String, UsersError>,
) -> Result<String, UsersError> {
    disabled(store, name).await?;
    let password = read()?;
    let gone = store
        .set_password(name, &hash(&password)?, Revoke::All)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => UsersError::NoSuchUser(name.to_owned()),
            e => e.into(),
        })?;
    Ok(format!(
        "password of {name} reset: {} revoked; its connections to running servers close within {} s",
        sessions(gone.len()),
        crate::revocations::POLL.as_secs()
    ))
}

fn sessions(n: usize) -> String {
    match n {
        1 => "1 session".into(),
        n => format!("{n} sessions"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_is_one_line_without_its_ending() {
        let read = |s: &str| read_password(&mut s.as_bytes());
        assert_eq!(read("a long password\r\n").expect("ok"), "a long password");
        assert_eq!(read("a long password").expect("ok"), "a long password");
        assert!(matches!(
            read("short\n"),
            Err(UsersError::InvalidPassword(_))
        ));
        assert!(matches!(read(""), Err(UsersError::InvalidPassword(_))));
    }

    #[test]
    fn rows_show_times_in_utc_and_dashes_for_never() {
        let u = UserRow {
            name: "alice".into(),
            created_ms: 1_732_400_000_000,
            disabled_ms: None,
            sessions: 2,
        };
        assert_eq!(
            row(&u, 6),
            "alice   2024-11-23T22:13:20Z  -                     2"
        );
    }
}
