//! Unique names per transcript, so that a run can share a long-lived server with other runs
//! (and its transcripts with each other): every username and room name the transcript sends
//! gets one suffix, applied the same way to what it sends and to what it expects back.
//!
//! A name is any valid username or room name at a `username`, `user` or `room` key of a frame
//! the transcript sends; after that, every JSON string equal to a name is renamed wherever it
//! appears (bodies and ids included, on both sides alike, so they still match), and so is a
//! direct-message room `dm:a:b` made of names, and so are `@name` mentions and `search`
//! filters `from:name` and `in:name` inside text. Invalid names are left as they are: they cannot
//! collide with anything, and a suffix must not make a name that is too long look valid or
//! one that is just short enough look too long.
//!
//! The suffix starts with `-`, the smallest character a name may hold, so names keep their
//! order (lists sorted by name, `dm:` pairs) unless a transcript's names themselves contain `-`.

use std::collections::BTreeSet;

use chat_proto::limits::{DM_PREFIX, check_room_name, check_username};
use serde_json::Value;

use crate::transcript::{Line, Outgoing, Step};

/// The names of one transcript and the suffix they get.
#[derive(Debug, Clone)]
pub struct Names {
    suffix: String,
    /// The names as written in the transcript.
    names: BTreeSet<String>,
}

const NAME_KEYS: &[&str] = &["username", "user", "room"];

impl Names {
    /// Collects the names of `lines` (see the module docs). An empty suffix renames nothing.
    pub fn new(suffix: &str, lines: &[Line]) -> Self {
        let mut names = BTreeSet::new();
        for line in lines {
            if let Step::Send {
                what: Outgoing::Json(v),
                ..
            } = &line.step
            {
                collect(v, &mut names);
            }
        }
        // A suffixed name must still be valid, or the transcript would test something else.
        names.retain(|n: &String| {
            let long = format!("{n}{suffix}");
            check_username(&long).is_ok() || check_room_name(&long).is_ok()
        });
        Self {
            suffix: suffix.to_owned(),
            names,
        }
    }

    /// `name` as this run uses it.
    pub fn rename(&self, name: &str) -> Option<String> {
        if self.names.contains(name) {
            return Some(format!("{name}{}", self.suffix));
        }
        let pair = name.strip_prefix(DM_PREFIX)?;
        let (a, b) = pair.split_once(':')?;
        Some(format!(
            "{DM_PREFIX}{}:{}",
            self.rename(a)?,
            self.rename(b)?
        ))
    }

    /// `text` with each `@name` mention of a name renamed (as `limits::mentions` reads them),
    /// so a mention still names the same user.
    pub fn rename_mentions(&self, text: &str) -> String {
        let is_name =
            |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-';
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(at) = rest.find('@') {
            out.push_str(&rest[..=at]);
            rest = &rest[at + 1..];
            let end = rest.find(|c: char| !is_name(c)).unwrap_or(rest.len());
            match self.names.contains(&rest[..end]) {
                true => {
                    out.push_str(&rest[..end]);
                    out.push_str(&self.suffix);
                }
                false => out.push_str(&rest[..end]),
            }
            rest = &rest[end..];
        }
        out.push_str(rest);
        out
    }

    /// `text` with each whitespace-separated `from:name` or `in:name` search filter of a name
    /// renamed, so a `search` query still names the same user or room.
    pub fn rename_filters(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while !rest.is_empty() {
            let start = rest
                .find(|c: char| !c.is_whitespace())
                .unwrap_or(rest.len());
            out.push_str(&rest[..start]);
            rest = &rest[start..];
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            let word = &rest[..end];
            let renamed = ["from:", "in:"].iter().find_map(|prefix| {
                let name = word.strip_prefix(prefix)?;
                Some(format!("{prefix}{}", self.rename(name)?))
            });
            out.push_str(renamed.as_deref().unwrap_or(word));
            rest = &rest[end..];
        }
        out
    }

    /// Renames every string of `v` that is a name.
    pub fn apply(&self, v: &mut Value) {
        match v {
            Value::String(s) => {
                if let Some(renamed) = self.rename(s) {
                    *s = renamed;
                } else {
                    if s.contains('@') {
                        *s = self.rename_mentions(s);
                    }
                    if s.contains("from:") || s.contains("in:") {
                        *s = self.rename_filters(s);
                    }
                }
            }
            Value::Array(a) => a.iter_mut().for_each(|x| self.apply(x)),
            Value::Object(o) => o.values_mut().for_each(|x| self.apply(x)),
            _ => {}
        }
    }

    /// Whether a room name (as the server sends it) is one of this transcript's rooms.
    pub fn owns(&self, room: &str) -> bool {
        self.suffix.is_empty()
            || self
                .names
                .iter()
                .any(|n| self.rename(n).as_deref() == Some(room))
            || room.strip_prefix(DM_PREFIX).is_some_and(|pair| {
                pair.split(':').all(|u| {
                    self.names
                        .iter()
                        .any(|n| format!("{n}{}", self.suffix) == u)
                })
            })
    }
}

fn collect(v: &Value, names: &mut BTreeSet<String>) {
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                match x {
                    Value::String(s) if NAME_KEYS.contains(&k.as_str()) => {
                        if check_username(s).is_ok() || check_room_name(s).is_ok() {
                            names.insert(s.clone());
                        }
                    }
                    other => collect(other, names),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect(x, names)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn names(text: &str) -> Names {
        Names::new("-ab12", &crate::transcript::parse(text).expect("parses"))
    }

    #[test]
    fn sent_and_expected_frames_are_renamed_alike() {
        let n = names(
            "a> {\"type\":\"register\",\"username\":\"alice\",\"password\":\"correct horse\"}\n\
             a> {\"type\":\"open_dm\",\"user\":\"bob\"}\n\
             a> {\"type\":\"join\",\"room\":\"r\"}\n\
             a> {\"type\":\"join\",\"room\":\"Bad Name\"}\n",
        );
        let mut expected = json!({"type":"joined","room":"r","members":[{"user":"alice"},{"user":"bob"}],
            "dm":"dm:alice:bob","body":"r","password":"correct horse","other":"carol","bad":"Bad Name"});
        n.apply(&mut expected);
        assert_eq!(
            expected,
            json!({"type":"joined","room":"r-ab12","members":[{"user":"alice-ab12"},{"user":"bob-ab12"}],
                "dm":"dm:alice-ab12:bob-ab12","body":"r-ab12","password":"correct horse",
                "other":"carol","bad":"Bad Name"})
        );
        assert!(n.owns("r-ab12") && n.owns("dm:alice-ab12:bob-ab12"));
        assert!(!n.owns("r-zz99") && !n.owns("general"));
    }

    #[test]
    fn names_near_the_length_limit_are_left_alone_and_order_is_kept() {
        let long = "a".repeat(64);
        let n = names(&format!(
            "a> {{\"type\":\"join\",\"room\":\"{long}\"}}\na> {{\"type\":\"join\",\"room\":\"r\"}}\n\
             a> {{\"type\":\"join\",\"room\":\"r1\"}}\n"
        ));
        assert_eq!(n.rename(&long), None);
        let (r, r1) = (n.rename("r").expect("r"), n.rename("r1").expect("r1"));
        assert!(r < r1, "{r} {r1}");
    }

    #[test]
    fn mentions_of_names_inside_text_are_renamed() {
        let n = names(
            "a> {\"type\":\"register\",\"username\":\"bob\",\"password\":\"correct horse\"}\n",
        );
        let mut body = json!({"body":"hi @bob, not @bobby nor mail@carol; @bob"});
        n.apply(&mut body);
        assert_eq!(
            body,
            json!({"body":"hi @bob-ab12, not @bobby nor mail@carol; @bob-ab12"})
        );
    }

    #[test]
    fn search_filters_of_names_are_renamed() {
        let n = names(
            "a> {\"type\":\"register\",\"username\":\"bob\",\"password\":\"correct horse\"}\n\
             a> {\"type\":\"join\",\"room\":\"r\"}\n",
        );
        let mut q = json!({"query":"deploy from:bob  in:r \"from:bob\" from:carol in:bobby xin:r"});
        n.apply(&mut q);
        assert_eq!(
            q,
            json!({"query":"deploy from:bob-ab12  in:r-ab12 \"from:bob\" from:carol in:bobby xin:r"})
        );
    }
}
