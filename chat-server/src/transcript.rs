//! The `.chat` transcript format of `tests/transcripts/` (documented in [`crate::conformance`]),
//! parsed into steps without running anything. The conformance runner and the fuzz target
//! (`fuzz/`) share this one parser; the server never uses it.

use std::time::Duration;

use serde_json::Value;

/// One command of a transcript.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// `option NAME VALUE`: a server setting; the runner knows the names.
    Option { name: String, value: String },
    /// `require WHAT`: something of the target besides its settings (`own_server`: nothing
    /// else on it, not even the run's other transcripts).
    Require(String),
    /// `connect NAME [bearer=TOKEN] [expect=STATUS]`. The token may be a `$var`, replaced when
    /// the step runs.
    Connect {
        client: String,
        bearer: Option<String>,
        expect: Option<u16>,
    },
    /// `close NAME`.
    Close { client: String },
    /// `sleep DURATION`.
    Sleep(Duration),
    /// `NAME> …`: the client sends something.
    Send { client: String, what: Outgoing },
    /// `NAME< …`: the client must receive something next.
    Expect { client: String, what: Expected },
}

/// What a `NAME>` line sends.
#[derive(Debug, Clone, PartialEq)]
pub enum Outgoing {
    /// A JSON frame; its `"$var"` strings are replaced when the step runs.
    Json(Value),
    /// `raw TEXT`: a text frame exactly as written.
    Raw(String),
    /// `binary`: a binary frame.
    Binary,
    /// `oversize`: a text frame one byte over the frame limit.
    Oversize,
}

/// What a `NAME<` line expects.
#[derive(Debug, Clone, PartialEq)]
pub enum Expected {
    /// A frame matching this pattern.
    Frame(Value),
    /// `closed CODE`: the server closes with this code.
    Closed(u16),
    /// `nothing`: no frame for a quiet period.
    Nothing,
}

/// A step and the line it was read from.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// 1-based, for error messages.
    pub number: usize,
    /// The line as written, trimmed.
    pub text: String,
    pub step: Step,
}

/// A line that cannot be read, and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{number}: {text}\n    {why}")]
pub struct ParseError {
    pub number: usize,
    pub text: String,
    pub why: String,
}

/// Parses a whole transcript; blank lines and `#` comments are skipped.
pub fn parse(text: &str) -> Result<Vec<Line>, ParseError> {
    let mut steps = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let step = parse_line(line).map_err(|why| ParseError {
            number: i + 1,
            text: line.to_owned(),
            why,
        })?;
        steps.push(Line {
            number: i + 1,
            text: line.to_owned(),
            step,
        });
    }
    Ok(steps)
}

/// Parses one (trimmed, non-comment) line.
pub fn parse_line(line: &str) -> Result<Step, String> {
    let mut words = line.split_whitespace();
    let word = |w: Option<&str>, usage: &str| w.map(str::to_owned).ok_or_else(|| usage.to_owned());
    match words.next().unwrap_or_default() {
        "option" => Ok(Step::Option {
            name: word(words.next(), "option NAME VALUE")?,
            value: word(words.next(), "option NAME VALUE")?,
        }),
        "require" => Ok(Step::Require(word(words.next(), "require WHAT")?)),
        "connect" => {
            let client = word(words.next(), "connect NAME")?;
            let (mut bearer, mut expect) = (None, None);
            for w in words {
                if let Some(b) = w.strip_prefix("bearer=") {
                    bearer = Some(b.to_owned());
                } else if let Some(s) = w.strip_prefix("expect=") {
                    expect = Some(s.parse::<u16>().map_err(|e| e.to_string())?);
                } else {
                    return Err(format!("unknown connect argument `{w}`"));
                }
            }
            Ok(Step::Connect {
                client,
                bearer,
                expect,
            })
        }
        "close" => Ok(Step::Close {
            client: word(words.next(), "close NAME")?,
        }),
        "sleep" => Ok(Step::Sleep(parse_duration(&word(
            words.next(),
            "sleep DURATION",
        )?)?)),
        _ => client_line(line),
    }
}

/// `NAME> …` or `NAME< …`.
fn client_line(line: &str) -> Result<Step, String> {
    let split = line
        .find(['>', '<'])
        .ok_or_else(|| format!("cannot read `{line}`"))?;
    let (name, rest) = line.split_at(split);
    // '>' and '<' are one byte each, so this slicing is on char boundaries.
    let (dir, arg) = (&rest[..1], rest[1..].trim());
    let client = name.to_owned();
    let json = |s: &str| {
        serde_json::from_str::<Value>(s).map_err(|e| format!("bad JSON in transcript: {e}"))
    };
    if dir == ">" {
        let what = match arg {
            "binary" => Outgoing::Binary,
            "oversize" => Outgoing::Oversize,
            _ => match arg.strip_prefix("raw ") {
                Some(raw) => Outgoing::Raw(raw.to_owned()),
                None => Outgoing::Json(json(arg)?),
            },
        };
        return Ok(Step::Send { client, what });
    }
    let what = if arg == "nothing" {
        Expected::Nothing
    } else if let Some(code) = arg.strip_prefix("closed") {
        Expected::Closed(code.trim().parse().map_err(|_| "closed CODE".to_string())?)
    } else {
        Expected::Frame(json(arg)?)
    };
    Ok(Step::Expect { client, what })
}

/// `300ms` or `2s`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Some(ms) = s.strip_suffix("ms") {
        return ms
            .parse()
            .map(Duration::from_millis)
            .map_err(|e| e.to_string());
    }
    if let Some(secs) = s.strip_suffix('s') {
        return secs
            .parse()
            .map(Duration::from_secs)
            .map_err(|e| e.to_string());
    }
    Err(format!("`{s}` is not a duration like 300ms or 2s"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_line() {
        let text = "# comment\n\noption rate_per_sec 2\nrequire own_server\nconnect a bearer=$tok expect=401\n\
                    a> {\"type\":\"ping\"}\na> raw {not json\na> binary\na> oversize\n\
                    a< {\"type\":\"pong\"}\na< closed 4000\na< nothing\nclose a\nsleep 500ms\n";
        let steps: Vec<Step> = parse(text)
            .expect("parses")
            .into_iter()
            .map(|l| l.step)
            .collect();
        let a = || "a".to_owned();
        assert_eq!(
            steps,
            [
                Step::Option {
                    name: "rate_per_sec".into(),
                    value: "2".into()
                },
                Step::Require("own_server".into()),
                Step::Connect {
                    client: a(),
                    bearer: Some("$tok".into()),
                    expect: Some(401)
                },
                Step::Send {
                    client: a(),
                    what: Outgoing::Json(serde_json::json!({"type":"ping"}))
                },
                Step::Send {
                    client: a(),
                    what: Outgoing::Raw("{not json".into())
                },
                Step::Send {
                    client: a(),
                    what: Outgoing::Binary
                },
                Step::Send {
                    client: a(),
                    what: Outgoing::Oversize
                },
                Step::Expect {
                    client: a(),
                    what: Expected::Frame(serde_json::json!({"type":"pong"}))
                },
                Step::Expect {
                    client: a(),
                    what: Expected::Closed(4000)
                },
                Step::Expect {
                    client: a(),
                    what: Expected::Nothing
                },
                Step::Close { client: a() },
                Step::Sleep(Duration::from_millis(500)),
            ]
        );
    }

    #[test]
    fn bad_lines_name_their_number() {
        let err = parse("connect a\n\na> {oops\n").expect_err("bad JSON");
        assert_eq!((err.number, err.text.as_str()), (3, "a> {oops"));
        for bad in [
            "option x",
            "require",
            "connect",
            "connect a expect=x",
            "connect a when=now",
            "sleep 5m",
            "a< closed",
            "what is this",
        ] {
            assert!(parse_line(bad).is_err(), "{bad}");
        }
    }
}
