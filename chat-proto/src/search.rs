//! The query language of `search` (protocol 2), parsed the same way for every store engine
//! (docs/protocol.md §12.7). Pure: a client may parse a query before sending it, and the server
//! parses it into the terms each engine's full-text index is asked for.
//!
//! Text is cut into tokens as SQLite's `unicode61` tokenizer and the server's PostgreSQL
//! column cut it: a token is a run of letters and digits, anything else separates, and case is
//! folded. So a word with punctuation inside (`well-known`, `a.b`) is a phrase of its tokens,
//! as both engines read it.

use crate::limits::{check_room_name, check_username};

/// Bytes a query may have.
pub const QUERY_MAX_BYTES: usize = 256;
/// Terms a query may have: words, phrases and filters together.
pub const QUERY_MAX_TERMS: usize = 8;
/// Results per `search_results` when the client gives no `limit`.
pub const SEARCH_PAGE_DEFAULT: u32 = 20;
/// Results per `search_results` at most.
pub const SEARCH_PAGE_MAX: u32 = 50;

/// A parsed query: every phrase must appear in a message, and the filters narrow where.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// Each entry is a phrase: its tokens adjacent and in order (a word is a phrase of one).
    /// Lowercase, letters and digits only.
    pub phrases: Vec<Vec<String>>,
    /// `from:user`: only messages by this user.
    pub from: Option<String>,
    /// `in:room`: only this room.
    pub room: Option<String>,
}

/// Why a query was refused; the text is what `invalid_query` tells the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("a query is at most 256 bytes")]
    TooLong,
    #[error("a query has at most 8 terms (words, phrases and filters)")]
    TooManyTerms,
    #[error("a query needs a word, a \"phrase\", from:user or in:room")]
    Empty,
    #[error("a quoted phrase is not closed")]
    UnclosedQuote,
    #[error("from: names a user: 1-32 of a-z 0-9 _ -")]
    BadUser,
    #[error("in: names a room: 1-64 of a-z 0-9 _ - .")]
    BadRoom,
    #[error("from: and in: may each appear once")]
    RepeatedFilter,
}

/// The tokens of `text`, as the full-text indexes cut them: runs of letters and digits,
/// lowercased.
pub fn tokens(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Parses a query (see the module docs and docs/protocol.md §12.7).
pub fn parse_query(text: &str) -> Result<Query, QueryError> {
    if text.len() > QUERY_MAX_BYTES {
        return Err(QueryError::TooLong);
    }
    let mut q = Query::default();
    let mut terms = 0;
    let mut rest = text;
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        let phrase = if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted.find('"').ok_or(QueryError::UnclosedQuote)?;
            rest = &quoted[end + 1..];
            tokens(&quoted[..end])
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            let word = &rest[..end];
            rest = &rest[end..];
            if let Some(user) = word.strip_prefix("from:") {
                check_username(user).map_err(|_| QueryError::BadUser)?;
                if q.from.replace(user.to_owned()).is_some() {
                    return Err(QueryError::RepeatedFilter);
                }
                terms += 1;
                Vec::new()
            } else if let Some(room) = word.strip_prefix("in:") {
                check_room_name(room).map_err(|_| QueryError::BadRoom)?;
                if q.room.replace(room.to_owned()).is_some() {
                    return Err(QueryError::RepeatedFilter);
                }
                terms += 1;
                Vec::new()
            } else {
                tokens(word)
            }
        };
        // A term without letters or digits (`--`, `""`) matches everything: it is dropped.
        if !phrase.is_empty() {
            terms += 1;
            q.phrases.push(phrase);
        }
        if terms > QUERY_MAX_TERMS {
            return Err(QueryError::TooManyTerms);
        }
    }
    if terms == 0 {
        return Err(QueryError::Empty);
    }
    Ok(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(words: &[&[&str]]) -> Vec<Vec<String>> {
        words
            .iter()
            .map(|w| w.iter().map(|s| (*s).to_owned()).collect())
            .collect()
    }

    #[test]
    fn words_are_tokens_folded_to_lowercase() {
        let q = parse_query("  Hello  WORLD\tÉté ").expect("parses");
        assert_eq!(q.phrases, p(&[&["hello"], &["world"], &["été"]]));
        assert_eq!((q.from, q.room), (None, None));
    }

    #[test]
    fn quotes_make_phrases_and_punctuation_splits_words_into_phrases() {
        let q = parse_query(r#""the Big  cat" well-known a.b.c"#).expect("parses");
        assert_eq!(
            q.phrases,
            p(&[&["the", "big", "cat"], &["well", "known"], &["a", "b", "c"]])
        );
        // A quote may start right after a word and be empty; empty terms drop out.
        let q = parse_query(r#"x"y z" "" -- "#).expect("parses");
        assert_eq!(q.phrases, p(&[&["x", "y"], &["z"]]));
    }

    #[test]
    fn filters_name_a_user_and_a_room() {
        let q = parse_query("from:alice in:dev.team deploy").expect("parses");
        assert_eq!(q.from.as_deref(), Some("alice"));
        assert_eq!(q.room.as_deref(), Some("dev.team"));
        assert_eq!(q.phrases, p(&[&["deploy"]]));
        // Filters alone are a query; a filter inside quotes is text.
        assert!(parse_query("from:bob").expect("parses").phrases.is_empty());
        let q = parse_query(r#""from:bob""#).expect("parses");
        assert_eq!((q.phrases, q.from), (p(&[&["from", "bob"]]), None));
    }

    #[test]
    fn bad_queries_are_refused() {
        for (text, e) in [
            ("", QueryError::Empty),
            ("  \t ", QueryError::Empty),
            ("-- !!", QueryError::Empty),
            (r#""""#, QueryError::Empty),
            (r#"a "b c"#, QueryError::UnclosedQuote),
            ("from:", QueryError::BadUser),
            ("from:Alice", QueryError::BadUser),
            ("in:", QueryError::BadRoom),
            ("in:Bad!", QueryError::BadRoom),
            ("from:a from:b", QueryError::RepeatedFilter),
            ("in:a in:b", QueryError::RepeatedFilter),
            ("a b c d e f g h i", QueryError::TooManyTerms),
            ("a b c d e f g from:x in:y", QueryError::TooManyTerms),
        ] {
            assert_eq!(parse_query(text), Err(e), "{text:?}");
        }
        assert!(parse_query("a b c d e f g h").is_ok(), "8 terms are fine");
        let long = "a ".repeat(QUERY_MAX_BYTES / 2 + 1);
        assert_eq!(parse_query(&long), Err(QueryError::TooLong));
    }

    #[test]
    fn a_phrase_counts_as_one_term() {
        let q = parse_query(r#""a b c d e f g h i j" k"#).expect("parses");
        assert_eq!(q.phrases.len(), 2);
    }

    #[test]
    fn tokens_cut_like_unicode61() {
        assert_eq!(
            tokens("bob@example.com: 3.14, foo_bar—Été! 日本語"),
            [
                "bob",
                "example",
                "com",
                "3",
                "14",
                "foo",
                "bar",
                "été",
                "日本語"
            ]
        );
    }
}
