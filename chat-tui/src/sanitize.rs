//! Sanitizing of every string that arrives from the network.
//!
//! The terminal is an attack surface: escape sequences can clear the screen, move the
//! cursor to forge other people's messages, retitle the window, write the clipboard
//! (OSC 52) or plant hyperlinks; bidi controls and invisible characters make text read
//! differently from what it is. So no byte from the network reaches the terminal
//! unsanitized. ratatui (>= 0.30) filters some control characters while rendering, but
//! we do not rely on it: that is a rendering detail that may change, and it knows
//! nothing about bidi controls, invisibles or grapheme bombs.
//!
//! Sanitizing happens once, where data enters the client's model, so that everything
//! downstream (width, wrapping, rendering, search) works on text that is already safe
//! and [`is_terminal_safe`] can be debug-asserted anywhere.
//!
//! Escape sequences and controls become one *visible* placeholder rather than vanishing,
//! so a sender cannot hide that they tried, and `adm\x1b[0min` cannot pass for `admin`.

use std::borrow::Cow;

use unicode_segmentation::UnicodeSegmentation;
use unicode_width::UnicodeWidthChar;

pub const MAX_NAME_GRAPHEMES: usize = 32;
pub const MAX_BODY_LINES: usize = 200;
pub const MAX_LINE_GRAPHEMES: usize = 2000;

const ESC_PLACEHOLDER: char = '\u{241B}';
const C1_PLACEHOLDER: char = '\u{FFFD}';
const CR_PLACEHOLDER: char = '\u{240D}';
const DEL_PLACEHOLDER: char = '\u{2421}';
const ELLIPSIS: char = '…';
const NEWLINE_MARK: &str = " ⏎ ";
/// Real clusters (emoji ZWJ families with skin tones, flags) stay well below this;
/// anything longer is a Zalgo-style bomb that smears over neighbouring rows.
const MAX_CLUSTER_CHARS: usize = 32;
const KEPT_MARKS: usize = 8;

/// For names (users, rooms): one line, no control chars, no bidi controls, no
/// zero-width or invisible formatting chars, at most `max_graphemes` grapheme clusters
/// (then '…'). Never empty: if nothing visible remains, returns "?".
pub fn name(s: &str, max_graphemes: usize) -> String {
    let out = capped(&clean(s, Mode::Name), max_graphemes);
    // A name nobody can see cannot be told apart from another one.
    let blank = |c: char| c.is_whitespace() || c.width().unwrap_or(0) == 0;
    if out.chars().all(blank) {
        "?".to_owned()
    } else {
        out
    }
}

/// For message bodies and topics: the sanitized text as lines. At most `max_lines`
/// lines of at most `max_line_graphemes` clusters each; when lines were dropped a final
/// line "… (N more lines)" follows, so the result can hold `max_lines + 1` entries.
pub fn body(s: &str, max_lines: usize, max_line_graphemes: usize) -> Vec<String> {
    let cleaned = clean(s, Mode::Body);
    let split = || cleaned.split('\n');
    let mut lines: Vec<String> = split()
        .take(max_lines)
        .map(|l| capped(l, max_line_graphemes))
        .collect();
    let more = split().count().saturating_sub(max_lines);
    if more > 0 {
        lines.push(format!("{ELLIPSIS} ({more} more lines)"));
    }
    lines
}

/// Like [`body`], but on one line: newlines become " ⏎ " (trailing ones are dropped)
/// and the whole result is capped at `max_graphemes` clusters (then '…').
pub fn one_line(s: &str, max_graphemes: usize) -> String {
    let cleaned = clean(s, Mode::Body);
    let (mut out, mut left) = (String::new(), max_graphemes);
    for (i, line) in cleaned.trim_end_matches('\n').split('\n').enumerate() {
        let sep = if i > 0 { NEWLINE_MARK } else { "" };
        if !push_capped(&mut out, &mut left, sep) || !push_capped(&mut out, &mut left, line) {
            break;
        }
    }
    out
}

/// True if `s` contains nothing a terminal would interpret: no C0 (not even '\n' or
/// '\t'), no DEL, no C1, no bidi controls, no line/paragraph separators.
pub fn is_terminal_safe(s: &str) -> bool {
    !s.chars()
        .any(|c| c.is_control() || is_bidi(c) || matches!(c, '\u{2028}' | '\u{2029}'))
}

fn is_bidi(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
        | '\u{200E}' | '\u{200F}' | '\u{061C}')
}

/// Characters that render as nothing; in names they let two different names look the
/// same, in bodies they hide text from the reader. Tag characters would also complete
/// subdivision flags, which we give up for simplicity (the black flag remains).
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{00AD}' | '\u{180E}' | '\u{200B}' | '\u{2060}'..='\u{2064}'
        | '\u{206A}'..='\u{206F}' | '\u{3164}' | '\u{FEFF}' | '\u{FFA0}'
        | '\u{FFF9}'..='\u{FFFB}' | '\u{E0000}'..='\u{E007F}')
}

fn is_joiner(c: char) -> bool {
    matches!(c, '\u{200C}' | '\u{200D}')
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// '\n' separates lines, "\r\n" is one newline, tabs expand.
    Body,
    /// Everything ends up on one line, so line breaks get placeholders too.
    Name,
}

/// Parser state, modelled on a terminal's parser so that we swallow exactly what the
/// terminal would have treated as one sequence.
#[derive(Clone, Copy)]
enum State {
    Ground,
    CrPending,
    Esc,
    EscIntermediate,
    Csi,
    /// OSC (`true`: BEL also ends it) or DCS/SOS/PM/APC (`false`): payload up to ST.
    Str(bool),
    /// ESC seen inside a `Str`: either ST or the start of a new sequence.
    StrEsc,
}

/// Character-level pass: escape sequences, controls, bidi and invisibles. The result
/// contains no controls except '\n' (and only in `Mode::Body`).
fn clean(s: &str, mode: Mode) -> String {
    let mut out = String::with_capacity(s.len());
    let mut state = State::Ground;
    for c in s.chars() {
        // A char that ends a sequence without belonging to it is fed again from the new
        // state, as a terminal would; every such path reaches Ground, which consumes.
        loop {
            let (next, consumed) = step(state, c, mode, &mut out);
            state = next;
            if consumed {
                break;
            }
        }
    }
    if let State::CrPending = state {
        out.push(CR_PLACEHOLDER);
    }
    out
}

/// The placeholder is emitted when a sequence starts, so a sequence cut off by the end
/// of input still shows, and every later state only decides what to swallow.
fn step(state: State, c: char, mode: Mode, out: &mut String) -> (State, bool) {
    use State::*;
    match state {
        Ground => (ground(c, mode, out), true),
        CrPending if c == '\n' => {
            out.push('\n');
            (Ground, true)
        }
        CrPending => {
            // A lone CR would let the rest of the line overwrite its start.
            out.push(CR_PLACEHOLDER);
            (Ground, false)
        }
        Esc if c == '[' => (Csi, true),
        Esc if c == ']' => (Str(true), true),
        Esc if matches!(c, 'P' | 'X' | '^' | '_') => (Str(false), true),
        Esc | EscIntermediate => match c {
            ' '..='/' => (EscIntermediate, true),
            '0'..='~' => (Ground, true),
            _ => (Ground, false),
        },
        Csi => match c {
            ' '..='?' => (Csi, true),
            '@'..='~' => (Ground, true),
            _ => (Ground, false),
        },
        Str(_) if c == '\u{1B}' => (StrEsc, true),
        Str(bel_ends) => match c {
            // ST ends the string; CAN and SUB abort it in a terminal too.
            '\u{9C}' | '\u{18}' | '\u{1A}' => (Ground, true),
            '\u{07}' if bel_ends => (Ground, true),
            _ => (state, true),
        },
        StrEsc if c == '\\' => (Ground, true),
        StrEsc => {
            out.push(ESC_PLACEHOLDER);
            (Esc, false)
        }
    }
}

fn ground(c: char, mode: Mode, out: &mut String) -> State {
    let body = mode == Mode::Body;
    let start = |out: &mut String, placeholder, next| {
        out.push(placeholder);
        next
    };
    match c {
        '\u{1B}' => return start(out, ESC_PLACEHOLDER, State::Esc),
        '\u{9B}' => return start(out, C1_PLACEHOLDER, State::Csi),
        '\u{9D}' => return start(out, C1_PLACEHOLDER, State::Str(true)),
        '\u{90}' | '\u{98}' | '\u{9E}' | '\u{9F}' => {
            return start(out, C1_PLACEHOLDER, State::Str(false));
        }
        '\r' if body => return State::CrPending,
        '\n' if body => out.push('\n'),
        '\t' if body => out.push_str("    "),
        '\t' | '\u{2028}' | '\u{2029}' => out.push(' '),
        '\u{7F}' => out.push(DEL_PLACEHOLDER),
        '\0'..='\u{1F}' => out.push(char::from_u32(0x2400 + u32::from(c)).unwrap_or('?')),
        '\u{80}'..='\u{9F}' => out.push(C1_PLACEHOLDER),
        c if is_bidi(c) || is_invisible(c) => {}
        c => out.push(c),
    }
    State::Ground
}

fn capped(text: &str, mut max: usize) -> String {
    let mut out = String::new();
    push_capped(&mut out, &mut max, text);
    out
}

/// Appends `text` while `left` clusters remain; returns false once the cap is hit, with
/// the ellipsis appended. Clusters are tidied before they are counted, so clusters that
/// vanish do not use up the budget.
fn push_capped(out: &mut String, left: &mut usize, text: &str) -> bool {
    for g in text.graphemes(true) {
        let g = tidy_cluster(g);
        if g.is_empty() {
            continue;
        }
        if *left == 0 {
            out.push(ELLIPSIS);
            return false;
        }
        out.push_str(&g);
        *left -= 1;
    }
    true
}

fn tidy_cluster(g: &str) -> Cow<'_, str> {
    let mut g = Cow::Borrowed(g);
    // A joiner only belongs to a cluster with a base (as inside 👩‍💻); one that leads a
    // cluster joins nothing and only upsets width calculations.
    if g.starts_with(is_joiner) {
        g = Cow::Owned(g.chars().filter(|&c| !is_joiner(c)).collect());
    }
    if g.chars().nth(MAX_CLUSTER_CHARS).is_some() {
        g = Cow::Owned(g.chars().take(1 + KEPT_MARKS).collect());
    }
    g
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(s: &str) -> Vec<String> {
        body(s, MAX_BODY_LINES, MAX_LINE_GRAPHEMES)
    }

    /// Each input must come out of `body` as exactly one line, equal to the expectation.
    fn check(cases: &[(&str, &str)]) {
        for &(input, want) in cases {
            assert_eq!(lines(input), [want], "input {input:?}");
        }
    }

    #[test]
    fn csi_sequences_become_one_placeholder() {
        check(&[
            ("a\x1b[2Jb", "a␛b"),
            ("\x1b[31mred\x1b[0m text", "␛red␛ text"),
            ("x\x1b[10;10Hy", "x␛y"),
            ("x\x1b[?1049hy", "x␛y"),
            // An aborted CSI leaves the aborting char to be shown.
            ("x\x1b[12\x07y", "x␛␇y"),
        ]);
    }

    #[test]
    fn osc_hyperlink_clipboard_and_title() {
        check(&[
            (
                "\x1b]8;;https://e.vil/\x1b\\click\x1b]8;;\x1b\\!",
                "␛click␛!",
            ),
            ("a\x1b]52;c;ZXZpbA==\x07b", "a␛b"),
            ("a\x1b]52;c;ZXZpbA==\x1b\\b", "a␛b"),
            ("\x1b]0;pwned\x07hi", "␛hi"),
            ("\x1b]2;pwned\u{9c}hi", "␛hi"),
            // ESC that is not ST aborts the string and starts a new sequence.
            ("\x1b]0;t\x1b[31mY", "␛␛Y"),
            ("hi\x1b]", "hi␛"),
        ]);
        // Unterminated: swallows to the end of input, newlines included.
        assert_eq!(lines("hi\x1b]0;title and the rest\nmore"), ["hi␛"]);
    }

    #[test]
    fn dcs_c1_and_short_escapes() {
        check(&[
            ("a\x1bP1$qm\x1b\\b", "a␛b"),
            ("a\x1bPq#0;2;0;0;0#0~~\x1b\\b", "a␛b"),
            ("a\x1b_apc\x07still\x1b\\b", "a␛b"),
            ("a\x1bXsos\x1b\\b\x1b^pm\x1b\\c", "a␛b␛c"),
            ("a\u{9b}31mb", "a\u{fffd}b"),
            ("a\u{9d}0;title\u{7}b", "a\u{fffd}b"),
            ("a\u{90}1$qm\u{9c}b", "a\u{fffd}b"),
            ("a\u{85}b\u{9c}c", "a\u{fffd}b\u{fffd}c"),
            ("a\x1bcb", "a␛b"),
            ("a\x1b(Bb", "a␛b"),
            ("a\x1b#8b", "a␛b"),
            ("end\x1b", "end␛"),
        ]);
        assert_eq!(lines("a\x1b\nb"), ["a␛", "b"]);
    }

    #[test]
    fn controls_get_visible_placeholders() {
        check(&[
            ("a\x07b\0c\x08d\x7fe", "a␇b␀c␈d␡e"),
            ("a\tb", "a    b"),
            ("\x0b\x0c\x1f", "␋␌␟"),
            ("safe\rEVIL", "safe␍EVIL"),
            ("a\r", "a␍"),
        ]);
        assert_eq!(lines("a\r\nb"), ["a", "b"]);
        assert_eq!(lines("a\r\r\nb"), ["a␍", "b"]);
    }

    #[test]
    fn bidi_and_invisibles_are_removed() {
        check(&[
            ("abc\u{202e}fed", "abcfed"),
            ("\u{2067}x\u{2069}y\u{2066}\u{2068}z", "xyz"),
            ("a\u{200e}b\u{200f}c\u{61c}d\u{202a}e\u{202d}", "abcde"),
            ("a\u{2060}b\u{feff}c\u{180e}d\u{ad}e\u{e0041}f", "abcdef"),
        ]);
        assert_eq!(name("\u{202e}nimda", MAX_NAME_GRAPHEMES), "nimda");
        assert_eq!(name("ad\u{200b}min", MAX_NAME_GRAPHEMES), "admin");
    }

    #[test]
    fn emoji_sequences_and_cjk_survive() {
        let texts = ["👩‍💻", "👨‍👩‍👧‍👦", "👩🏽‍👩🏽‍👧🏽‍👦🏽", "🇯🇵", "❤️", "日本語のテキスト 中文 한국어"];
        for s in texts {
            check(&[(s, s)]);
            assert_eq!(name(s, MAX_NAME_GRAPHEMES), s);
            assert_eq!(one_line(s, 80), s);
        }
        assert_eq!(name("👩‍💻👩‍💻", 1), "👩‍💻…");
        // Joiners with no base to join are dropped.
        check(&[("\u{200d}x", "x"), ("\u{200c}\u{200d}", "")]);
        assert_eq!(lines("a\n\u{200d}b"), ["a", "b"]);
        assert_eq!(name("\u{200d}", MAX_NAME_GRAPHEMES), "?");
    }

    #[test]
    fn clusters_lines_and_line_counts_are_capped() {
        let zalgo = format!("a{}b", "\u{301}".repeat(500));
        check(&[(&zalgo, &format!("a{}b", "\u{301}".repeat(KEPT_MARKS)))]);
        let n = name(&zalgo, MAX_NAME_GRAPHEMES);
        assert_eq!(n.chars().count(), 2 + KEPT_MARKS);
        let x = "x".repeat(MAX_LINE_GRAPHEMES);
        check(&[(&"x".repeat(10_000), &format!("{x}…")), (&x, &x)]);
        let v = lines(&format!("{}line", "line\n".repeat(999)));
        assert_eq!(v.len(), MAX_BODY_LINES + 1);
        assert_eq!(v[MAX_BODY_LINES - 1], "line");
        assert_eq!(v[MAX_BODY_LINES], "… (800 more lines)");
        assert_eq!(body("a\nb", 1, 10), ["a", "… (1 more lines)"]);
        assert_eq!(body("abc", 5, 2), ["ab…"]);
    }

    #[test]
    fn names() {
        let n = |s: &str| name(s, MAX_NAME_GRAPHEMES);
        for nothing in ["", "\u{200b}\u{202e}\u{feff}", "   ", "\u{301}", "\u{3164}"] {
            assert_eq!(n(nothing), "?", "{nothing:?}");
        }
        assert_eq!(n("a\nb"), "a␊b");
        assert_eq!(n("a\r\nb\tc"), "a␍␊b c");
        assert_eq!(n("adm\x1b[0min"), "adm␛in");
        let long = "n".repeat(100);
        assert_eq!(n(&long), format!("{}…", &long[..MAX_NAME_GRAPHEMES]));
        assert_eq!(name("exactly", 7), "exactly");
    }

    #[test]
    fn one_line_joins_and_caps() {
        assert_eq!(one_line("a\nb\r\nc\n\n", 80), "a ⏎ b ⏎ c");
        assert_eq!(one_line("abc\ndef", 3), "abc…");
        assert_eq!(one_line("ab\ncd", 4), "ab ⏎…");
        assert_eq!(one_line("\x1b]0;t\x07topic\x1b[2J", 80), "␛topic␛");
        assert_eq!(one_line("", 80), "");
    }

    #[test]
    fn is_terminal_safe_rejects_each_dangerous_class() {
        let classes = "\n\t\r\0\x07\x08\x1b\x7f\u{80}\u{85}\u{9b}\u{9d}\u{9f}\u{202a}\u{202e}\
                       \u{2066}\u{2069}\u{200e}\u{200f}\u{61c}\u{2028}\u{2029}";
        for bad in classes.chars() {
            assert!(!is_terminal_safe(&format!("ok{bad}ok")), "accepted {bad:?}");
        }
        assert!(is_terminal_safe("hello 日本 👩‍💻 ␛ \u{fffd} ␍ …"));
        assert!(is_terminal_safe(""));
    }

    #[test]
    fn every_single_char_is_made_safe() {
        for c in (0..=0x10_FFFFu32).filter_map(char::from_u32) {
            let s = c.to_string();
            assert!(lines(&s).iter().all(|l| is_terminal_safe(l)), "{c:?}");
            assert!(is_terminal_safe(&name(&s, 4)), "{c:?}");
        }
    }

    /// What must never come out, written out again here rather than trusting
    /// `is_terminal_safe` alone: C0 (ESC included), DEL, C1 (CSI, OSC, ST...), bidi controls,
    /// line and paragraph separators, and the invisibles removed on purpose.
    fn forbidden(c: char) -> bool {
        matches!(c, '\0'..='\u{1F}' | '\u{7F}'..='\u{9F}'
            | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}'
            | '\u{061C}' | '\u{2028}' | '\u{2029}' | '\u{200B}' | '\u{FEFF}'
            | '\u{E0000}'..='\u{E007F}')
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        #[test]
        fn no_control_character_comes_out(
            s in crate::wrap::tests::hostile_text(),
            max_lines in 1usize..6,
            max_graphemes in 1usize..20,
        ) {
            let safe = |t: &str| is_terminal_safe(t) && !t.contains(forbidden);
            let n = name(&s, max_graphemes);
            proptest::prop_assert!(safe(&n) && !n.is_empty(), "name({:?}) = {:?}", s, n);
            let o = one_line(&s, max_graphemes);
            proptest::prop_assert!(safe(&o), "one_line({:?}) = {:?}", s, o);
            for (lines, graphemes) in [(max_lines, max_graphemes), (MAX_BODY_LINES, MAX_LINE_GRAPHEMES)] {
                let v = body(&s, lines, graphemes);
                proptest::prop_assert!(!v.is_empty() && v.len() <= lines + 1);
                for l in &v {
                    proptest::prop_assert!(safe(l), "body({:?}) has {:?}", s, l);
                }
            }
        }
    }

    #[test]
    fn hostile_random_strings_come_out_safe() {
        let alphabet: Vec<char> = "\x1b[]P\\\x07\u{9b}\u{9d}\u{9c}\u{202e}\u{200b}\r\n\taé日👩\
                                   \u{200d}\u{301}039;m "
            .chars()
            .collect();
        // xorshift64: deterministic, no extra crates.
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let mut below = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            usize::try_from(state % n as u64).expect("below n fits usize")
        };
        for _ in 0..5000 {
            let len = below(48);
            let s: String = (0..len).map(|_| alphabet[below(alphabet.len())]).collect();
            let n = name(&s, 8);
            assert!(is_terminal_safe(&n) && !n.is_empty(), "name({s:?}) = {n:?}");
            let o = one_line(&s, 12);
            assert!(is_terminal_safe(&o), "one_line({s:?}) = {o:?}");
            for (max_lines, max_g) in [(MAX_BODY_LINES, MAX_LINE_GRAPHEMES), (2, 3)] {
                let v = body(&s, max_lines, max_g);
                assert!(v.len() <= max_lines + 1, "body({s:?}) = {v:?}");
                for (i, l) in v.iter().enumerate() {
                    let ok = is_terminal_safe(l)
                        && !l.contains(['\u{200b}', '\u{202e}'])
                        && !l.starts_with(is_joiner)
                        && (i == max_lines || l.graphemes(true).count() <= max_g + 1);
                    assert!(ok, "body({s:?}) line {l:?}");
                }
            }
        }
    }
}
