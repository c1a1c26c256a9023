//! Slash commands: what the user types after `/`, parsed into an intent. The list here is the one
//! the help overlay, completion and README.md show.

/// Every command, its arguments and what it does.
pub const COMMANDS: &[(&str, &str, &str)] = &[
    ("/join", "ROOM", "join a room (and switch to it)"),
    ("/part", "[ROOM]", "leave the current room (or ROOM)"),
    ("/create", "ROOM [--private]", "create a room and join it"),
    (
        "/invite",
        "USER",
        "invite a user into the current (private) room",
    ),
    (
        "/msg",
        "USER [TEXT]",
        "open a direct-message room with USER",
    ),
    ("/me", "ACTION", "send an action (\"* alice waves\")"),
    ("/topic", "TEXT", "set the current room's topic"),
    ("/away", "", "show as away"),
    ("/back", "", "show as online again"),
    ("/who", "", "list the current room's members"),
    (
        "/reconnect",
        "",
        "drop the connection and connect again now",
    ),
    ("/quit", "", "leave chat-tui"),
    ("/help", "", "show keys and commands"),
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slash {
    Join(String),
    Part(Option<String>),
    Create { room: String, private: bool },
    Invite(String),
    Msg { user: String, text: Option<String> },
    Me(String),
    Topic(String),
    Away,
    Back,
    Who,
    Reconnect,
    Quit,
    Help,
}

/// Parses a line starting with `/`. The error says what to type instead.
pub fn parse(line: &str) -> Result<Slash, String> {
    let line = line.trim();
    let (cmd, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let rest = rest.trim();
    let one = |what: &str| -> Result<String, String> {
        let mut words = rest.split_whitespace();
        match (words.next(), words.next()) {
            (Some(w), None) => Ok(w.to_owned()),
            _ => Err(format!("usage: {cmd} {what}")),
        }
    };
    let none = |s: Slash| {
        if rest.is_empty() {
            Ok(s)
        } else {
            Err(format!("{cmd} takes no arguments"))
        }
    };
    match cmd {
        "/join" | "/j" => one("ROOM").map(Slash::Join),
        "/part" | "/leave" => match rest {
            "" => Ok(Slash::Part(None)),
            _ => one("[ROOM]").map(|r| Slash::Part(Some(r))),
        },
        "/create" => {
            let mut private = false;
            let mut room = None;
            for w in rest.split_whitespace() {
                match w {
                    "--private" | "-p" => private = true,
                    w if room.is_none() && !w.starts_with('-') => room = Some(w.to_owned()),
                    _ => return Err("usage: /create ROOM [--private]".into()),
                }
            }
            room.map(|room| Slash::Create { room, private })
                .ok_or_else(|| "usage: /create ROOM [--private]".into())
        }
        "/invite" => one("USER").map(Slash::Invite),
        "/msg" | "/query" => {
            let (user, text) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            if user.is_empty() {
                return Err("usage: /msg USER [TEXT]".into());
            }
            let text = text.trim();
            Ok(Slash::Msg {
                user: user.to_owned(),
                text: (!text.is_empty()).then(|| text.to_owned()),
            })
        }
        "/me" if !rest.is_empty() => Ok(Slash::Me(rest.to_owned())),
        "/me" => Err("usage: /me ACTION".into()),
        "/topic" => Ok(Slash::Topic(rest.to_owned())),
        "/away" => none(Slash::Away),
        "/back" => none(Slash::Back),
        "/who" | "/names" => none(Slash::Who),
        "/reconnect" => none(Slash::Reconnect),
        "/quit" | "/exit" => Ok(Slash::Quit),
        "/help" | "/?" => Ok(Slash::Help),
        other => Err(format!("unknown command {other}: /help lists them")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_command() {
        assert_eq!(parse("/join rust"), Ok(Slash::Join("rust".into())));
        assert_eq!(parse("/part"), Ok(Slash::Part(None)));
        assert_eq!(parse("/part rust"), Ok(Slash::Part(Some("rust".into()))));
        assert_eq!(
            parse("/create ops --private"),
            Ok(Slash::Create {
                room: "ops".into(),
                private: true
            })
        );
        assert_eq!(
            parse("/create ops"),
            Ok(Slash::Create {
                room: "ops".into(),
                private: false
            })
        );
        assert_eq!(parse("/invite bob"), Ok(Slash::Invite("bob".into())));
        assert_eq!(
            parse("/msg bob hi there"),
            Ok(Slash::Msg {
                user: "bob".into(),
                text: Some("hi there".into())
            })
        );
        assert_eq!(
            parse("/msg bob"),
            Ok(Slash::Msg {
                user: "bob".into(),
                text: None
            })
        );
        assert_eq!(parse("/me waves"), Ok(Slash::Me("waves".into())));
        assert_eq!(
            parse("/topic Rust and tea"),
            Ok(Slash::Topic("Rust and tea".into()))
        );
        assert_eq!(parse("/topic"), Ok(Slash::Topic(String::new())));
        assert_eq!(parse("/away"), Ok(Slash::Away));
        assert_eq!(parse("/back"), Ok(Slash::Back));
        assert_eq!(parse("/who"), Ok(Slash::Who));
        assert_eq!(parse("/reconnect"), Ok(Slash::Reconnect));
        assert_eq!(parse("/quit"), Ok(Slash::Quit));
        assert_eq!(parse("/help"), Ok(Slash::Help));
        assert_eq!(COMMANDS.len(), 13);
    }

    #[test]
    fn wrong_usage_says_what_to_type() {
        assert_eq!(parse("/join"), Err("usage: /join ROOM".into()));
        assert_eq!(parse("/join a b"), Err("usage: /join ROOM".into()));
        assert_eq!(
            parse("/create"),
            Err("usage: /create ROOM [--private]".into())
        );
        assert_eq!(
            parse("/create a --public"),
            Err("usage: /create ROOM [--private]".into())
        );
        assert_eq!(parse("/me"), Err("usage: /me ACTION".into()));
        assert_eq!(parse("/away now"), Err("/away takes no arguments".into()));
        assert!(parse("/frobnicate").unwrap_err().contains("/help"));
    }
}
