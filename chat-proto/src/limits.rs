//! Limits and name rules both sides enforce. The server rejects what breaks them with the error
//! code named on each; a client can check first and save a round trip.

/// Largest WebSocket message (and frame) the server accepts, in bytes. Larger: close 1009.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;
/// Longest message body, in bytes of UTF-8. Longer: `invalid_body`.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// Longest room topic, in bytes of UTF-8. Longer: `invalid_topic`.
pub const MAX_TOPIC_BYTES: usize = 512;
/// Username length in characters (`invalid_name` outside it).
pub const USERNAME_LEN: std::ops::RangeInclusive<usize> = 1..=32;
/// Room name length in characters (`invalid_name` outside it).
pub const ROOM_NAME_LEN: std::ops::RangeInclusive<usize> = 1..=64;
/// Password length in bytes (`invalid_password` outside it).
pub const PASSWORD_LEN: std::ops::RangeInclusive<usize> = 8..=1024;
/// Client message id length in bytes (`invalid_id` outside it).
pub const MESSAGE_ID_LEN: std::ops::RangeInclusive<usize> = 1..=64;
/// Longest `ref` a client may attach to a frame, in bytes; longer is `bad_frame`.
pub const MAX_REF_BYTES: usize = 64;
/// Most messages one `history` reply or one replay page carries.
pub const HISTORY_PAGE_MAX: u32 = 200;
/// Most rooms in one `room_list` page (also the default page).
pub const ROOM_PAGE_MAX: u32 = 200;
/// Most members in one `member_list` page, and in a `joined` (also the default page).
pub const MEMBER_PAGE_MAX: u32 = 500;
/// After this many malformed frames in a row the server closes with 4000 (protocol error).
pub const MAX_CONSECUTIVE_BAD_FRAMES: u32 = 10;
/// Unread and mention counts stop here: a count of this much means "at least this many".
pub const UNREAD_COUNT_MAX: u64 = 1000;
/// Most distinct users one message can mention (later `@name`s are plain text).
pub const MAX_MENTIONS: usize = 20;
/// The emoji a reaction may be: a short fixed set, so a reaction is never a payload.
pub const REACTIONS: &[&str] = &[
    "👍", "👎", "❤️", "😂", "😮", "😢", "🎉", "🙏", "👀", "🔥", "✅", "❌", "🚀", "💯", "🤔", "👋",
];
/// Prefix of direct-message room names (`dm:alice:bob`); user-created names cannot contain `:`.
pub const DM_PREFIX: &str = "dm:";

/// Why a name, body, topic or id was refused: a sentence for the `error` frame's `message`.
pub type Refusal = &'static str;

/// Usernames: 1–32 of `a-z 0-9 _ -`, starting with a letter or digit. Lowercase only, so that
/// `Alice` and `alice` can never be two people.
pub fn check_username(name: &str) -> Result<(), Refusal> {
    check_name(name, USERNAME_LEN, "-_")
        .map_err(|()| "usernames are 1-32 of a-z 0-9 _ - and start with a letter or digit")
}

/// Room names: 1–64 of `a-z 0-9 _ - .`, starting with a letter or digit.
pub fn check_room_name(name: &str) -> Result<(), Refusal> {
    check_name(name, ROOM_NAME_LEN, "-_.")
        .map_err(|()| "room names are 1-64 of a-z 0-9 _ - . and start with a letter or digit")
}

fn check_name(name: &str, len: std::ops::RangeInclusive<usize>, punct: &str) -> Result<(), ()> {
    let ok_len = len.contains(&name.chars().count());
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || punct.contains(c));
    if ok_len && first_ok && rest_ok {
        Ok(())
    } else {
        Err(())
    }
}

/// Reactions: one of [`REACTIONS`].
pub fn check_emoji(emoji: &str) -> Result<(), Refusal> {
    if REACTIONS.contains(&emoji) {
        Ok(())
    } else {
        Err("reactions are one of the emoji listed in limits (see docs/protocol.md)")
    }
}

/// The users a body mentions: `@name` where `name` follows the username rules, at the start or
/// after a character that cannot be part of a name, distinct, in order, at most [`MAX_MENTIONS`].
/// A name ends at the first character that cannot be in a username, so `@bob:` and `@bob,`
/// mention `bob`; `mail@bob` (a name character before `@`) does not.
pub fn mentions(body: &str) -> Vec<&str> {
    let is_name = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-';
    let mut out: Vec<&str> = Vec::new();
    let mut prev: Option<char> = None;
    for (i, c) in body.char_indices() {
        if c == '@' && !prev.is_some_and(|p| is_name(p) || p == '@') {
            let rest = &body[i + 1..];
            let end = rest.find(|c: char| !is_name(c)).unwrap_or(rest.len());
            let name = &rest[..end];
            if check_username(name).is_ok() && !out.contains(&name) {
                out.push(name);
                if out.len() == MAX_MENTIONS {
                    break;
                }
            }
        }
        prev = Some(c);
    }
    out
}

/// Passwords: 8–1024 bytes, anything else goes.
pub fn check_password(password: &str) -> Result<(), Refusal> {
    if PASSWORD_LEN.contains(&password.len()) {
        Ok(())
    } else {
        Err("passwords are 8-1024 bytes")
    }
}

/// Whether `c` is a control character a body or topic may not carry: C0 (but `\n` and `\t` in
/// bodies), DEL and C1, i.e. Unicode's general category Cc, U+0000-U+001F and U+007F-U+009F
/// (docs/protocol.md §7.2). Format characters (Cf, e.g. U+200B, U+202E) are not control
/// characters here.
fn is_forbidden_control(c: char, allow_newline_tab: bool) -> bool {
    if allow_newline_tab && (c == '\n' || c == '\t') {
        return false;
    }
    c.is_control()
}

/// Message bodies: 1–16 KiB of UTF-8, not only whitespace, no control characters but `\n`, `\t`.
/// Whitespace is Unicode's White_Space property (what `str::trim` removes).
pub fn check_body(body: &str) -> Result<(), Refusal> {
    if body.trim().is_empty() {
        return Err("the body is empty");
    }
    if body.len() > MAX_BODY_BYTES {
        return Err("the body is longer than 16384 bytes");
    }
    if body.chars().any(|c| is_forbidden_control(c, true)) {
        return Err("the body holds control characters (only \\n and \\t are allowed)");
    }
    Ok(())
}

/// Topics: at most 512 bytes, no control characters at all (empty clears the topic).
pub fn check_topic(topic: &str) -> Result<(), Refusal> {
    if topic.len() > MAX_TOPIC_BYTES {
        return Err("the topic is longer than 512 bytes");
    }
    if topic.chars().any(|c| is_forbidden_control(c, false)) {
        return Err("the topic holds control characters");
    }
    Ok(())
}

/// The most bytes of a `kick` or `ban` reason.
pub const MAX_REASON_BYTES: usize = 512;

/// A `kick` or `ban` reason: at most 512 bytes, no control characters (as a topic).
pub fn check_reason(reason: &str) -> Result<(), Refusal> {
    if reason.len() > MAX_REASON_BYTES {
        return Err("the reason is longer than 512 bytes");
    }
    if reason.chars().any(|c| is_forbidden_control(c, false)) {
        return Err("the reason holds control characters");
    }
    Ok(())
}

/// Client message ids: 1–64 of `A-Z a-z 0-9 _ - . :` (a UUID fits).
pub fn check_message_id(id: &str) -> Result<(), Refusal> {
    let ok = MESSAGE_ID_LEN.contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b));
    if ok {
        Ok(())
    } else {
        Err("message ids are 1-64 of A-Z a-z 0-9 _ - . :")
    }
}

/// The direct-message room of two users: the same name whichever of them asks.
pub fn dm_room_name(a: &str, b: &str) -> String {
    let (x, y) = if a <= b { (a, b) } else { (b, a) };
    format!("{DM_PREFIX}{x}:{y}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        assert!(check_username("alice").is_ok());
        assert!(check_username("bob_2-x").is_ok());
        assert!(check_username(&"a".repeat(32)).is_ok());
        assert!(check_username(&"a".repeat(33)).is_err());
        assert!(check_username("").is_err());
        assert!(check_username("Alice").is_err());
        assert!(check_username("-bob").is_err());
        assert!(check_username("bo b").is_err());
        assert!(check_username("bob\u{7}").is_err());
        assert!(check_username("bob\u{202e}").is_err());
        assert!(check_username("böb").is_err());
    }

    #[test]
    fn room_names() {
        assert!(check_room_name("general").is_ok());
        assert!(check_room_name("rust.lang-2").is_ok());
        assert!(check_room_name("dm:alice:bob").is_err());
        assert!(check_room_name("\u{1b}[31mred").is_err());
        assert!(check_room_name(&"r".repeat(65)).is_err());
    }

    #[test]
    fn bodies_and_topics() {
        assert!(check_body("hello").is_ok());
        assert!(check_body("two\nlines\tand tab").is_ok());
        assert!(check_body("日本語 👍").is_ok());
        assert!(check_body("   \n").is_err());
        assert!(check_body("bell\u{7}").is_err());
        assert!(check_body("esc\u{1b}[2J").is_err());
        assert!(check_body("c1\u{9b}31m").is_err());
        assert!(check_body(&"x".repeat(MAX_BODY_BYTES)).is_ok());
        assert!(check_body(&"x".repeat(MAX_BODY_BYTES + 1)).is_err());
        assert!(check_topic("").is_ok());
        assert!(check_topic("Rust talk").is_ok());
        assert!(check_topic("a\nb").is_err());
        assert!(check_topic(&"t".repeat(MAX_TOPIC_BYTES + 1)).is_err());
    }

    /// The definitions docs/protocol.md §7.2 gives, checked against every char.
    #[test]
    fn control_characters_and_whitespace_are_exactly_as_documented() {
        let control = |c: char| c <= '\u{1f}' || ('\u{7f}'..='\u{9f}').contains(&c);
        const WHITESPACE: &[char] = &[
            '\u{9}', '\u{a}', '\u{b}', '\u{c}', '\u{d}', ' ', '\u{85}', '\u{a0}', '\u{1680}',
            '\u{2000}', '\u{2001}', '\u{2002}', '\u{2003}', '\u{2004}', '\u{2005}', '\u{2006}',
            '\u{2007}', '\u{2008}', '\u{2009}', '\u{200a}', '\u{2028}', '\u{2029}', '\u{202f}',
            '\u{205f}', '\u{3000}',
        ];
        for c in (0..=0x10ffff).filter_map(char::from_u32) {
            let lone = c.to_string();
            let among = format!("a{c}b");
            assert_eq!(check_topic(&among).is_err(), control(c), "topic {c:?}");
            let refused_as_control = control(c) && c != '\n' && c != '\t';
            assert_eq!(
                check_body(&among).is_err(),
                refused_as_control,
                "body {c:?}"
            );
            let refused_alone = refused_as_control || WHITESPACE.contains(&c);
            assert_eq!(
                check_body(&lone).is_err(),
                refused_alone,
                "body of {c:?} alone"
            );
        }
        assert_eq!(
            check_body("\u{200b}"),
            Ok(()),
            "zero-width space is not whitespace"
        );
    }

    #[test]
    fn ids_and_passwords() {
        assert!(check_message_id("550e8400-e29b-41d4-a716-446655440000").is_ok());
        assert!(check_message_id("").is_err());
        assert!(check_message_id("has space").is_err());
        assert!(check_message_id(&"i".repeat(65)).is_err());
        assert!(check_password("hunter22").is_ok());
        assert!(check_password("short").is_err());
    }

    #[test]
    fn dm_names_are_symmetric() {
        assert_eq!(dm_room_name("bob", "alice"), "dm:alice:bob");
        assert_eq!(dm_room_name("alice", "bob"), "dm:alice:bob");
    }

    #[test]
    fn mentions_are_names_after_an_at_sign_not_inside_words() {
        assert_eq!(
            mentions("hi @bob, and @carol: see @bob"),
            vec!["bob", "carol"]
        );
        assert_eq!(mentions("@alice"), vec!["alice"]);
        assert_eq!(mentions("mail@bob.org @@x (@dave)"), vec!["dave"]);
        assert_eq!(mentions("@Bob @ @-x @_y"), Vec::<&str>::new());
        let many: String = (0..30).map(|i| format!("@u{i} ")).collect();
        assert_eq!(mentions(&many).len(), MAX_MENTIONS);
    }

    #[test]
    fn reactions_are_a_fixed_set() {
        assert!(check_emoji("👍").is_ok());
        assert!(check_emoji("❤️").is_ok());
        assert!(check_emoji("x").is_err());
        assert!(check_emoji("👍👍").is_err());
    }
}
