//! Wrapping sanitized text into rows of a display width. Widths are per grapheme cluster
//! (unicode-width), so CJK and emoji take two columns and a ZWJ sequence is never split.

use unicode_segmentation::UnicodeSegmentation;
use unicode_width::UnicodeWidthStr;

/// Display width of `s` in terminal columns.
pub fn width(s: &str) -> usize {
    s.graphemes(true).map(UnicodeWidthStr::width).sum()
}

/// Splits `line` into rows at most `width` columns wide, breaking after the last space that
/// fits when there is one, else inside the word. Never returns an empty list.
pub fn wrap(line: &str, width: usize) -> Vec<String> {
    // Width 0 holds nothing: laid out as 1, one grapheme a row, rather than no rows. (It was 2,
    // so that a wide char fits, but then every row at width 1 was two columns wide.)
    let width = width.max(1);
    let mut rows = Vec::new();
    let mut row = String::new();
    let mut row_w = 0;
    // Byte offset in `row` just after its last space, and the width up to there.
    let mut last_space: Option<(usize, usize)> = None;
    for g in line.graphemes(true) {
        let w = UnicodeWidthStr::width(g);
        if row_w + w > width && !row.is_empty() {
            match last_space {
                // Only a space after something visible is a break: a row of leading spaces
                // would come out empty.
                Some((at, at_w)) if at < row.len() && !row[..at].trim_end().is_empty() => {
                    let rest = row.split_off(at);
                    rows.push(row.trim_end().to_owned());
                    row = rest;
                    row_w -= at_w;
                }
                _ => {
                    let full = std::mem::take(&mut row);
                    rows.push(full.trim_end().to_owned());
                    row_w = 0;
                }
            }
            last_space = None;
            // The word carried over from the last space can still leave no room for a wide
            // grapheme ("a bcd" + "日" at 5): then the word ends its own row.
            if row_w + w > width && !row.is_empty() {
                rows.push(std::mem::take(&mut row));
                row_w = 0;
            }
            // A space that does not fit is the break itself, not the start of the next row.
            if g == " " {
                continue;
            }
        }
        row.push_str(g);
        row_w += w;
        if g == " " {
            last_space = Some((row.len(), row_w));
        }
    }
    rows.push(row);
    rows
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Text built from the pieces layout and sanitizing get wrong: wide (CJK, emoji) and joined
    /// graphemes (ZWJ sequences, skin tones, flags, combining marks, Hangul jamo), odd spaces,
    /// controls and escapes, and any char at all.
    pub(crate) fn hostile_text() -> impl Strategy<Value = String> {
        let pieces = proptest::sample::select(vec![
            "a",
            "word",
            " ",
            "  ",
            "\u{a0}",
            "\u{3000}",
            "日",
            "本語",
            "Ａ",
            "한",
            "👍",
            "👍🏽",
            "👩\u{200d}💻",
            "👨\u{200d}👩\u{200d}👧\u{200d}👦",
            "❤\u{fe0f}",
            "🇯🇵",
            "🇯",
            "e\u{301}",
            "\u{301}",
            "\u{200d}",
            "\u{200c}",
            "\u{1100}",
            "\u{1100}\u{1161}\u{11a8}",
            "\u{1100}\u{1100}\u{1100}",
            "\t",
            "\n",
            "\r\n",
            "\r",
            "\x1b[31m",
            "\x1b]0;t\x07",
            "\u{9b}",
            "\u{85}",
            "\u{202e}",
            "\u{2066}",
            "\u{200b}",
            "\u{feff}",
            "\u{e0041}",
            "\u{2028}",
            "\x7f",
            "\0",
        ]);
        let piece = prop_oneof![
            4 => pieces.prop_map(str::to_owned),
            1 => any::<char>().prop_map(String::from),
            1 => "\\PC{1,3}",
        ];
        proptest::collection::vec(piece, 0..40).prop_map(|v| v.concat())
    }

    /// Rows fit the width, except a row that is one grapheme wider than the width by itself
    /// (a wide char at width 1): nothing else could be done with it. Breaks only drop
    /// whitespace.
    fn assert_laid_out(line: &str, cols: usize) -> Result<(), TestCaseError> {
        let rows = wrap(line, cols);
        prop_assert!(!rows.is_empty());
        for row in &rows {
            prop_assert!(
                width(row) <= cols || row.graphemes(true).count() == 1,
                "wrap({:?}, {}) gave {:?}, {} columns",
                line,
                cols,
                row,
                width(row)
            );
        }
        let visible = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
        prop_assert_eq!(visible(&rows.concat()), visible(line), "{:?}", rows);
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn layout_fits_any_width(text in hostile_text(), cols in 1usize..40) {
            assert_laid_out(&text, cols)?;
            for line in crate::sanitize::body(&text, 200, 2000) {
                assert_laid_out(&line, cols)?;
            }
            prop_assert!(!wrap(&text, 0).is_empty());
        }
    }

    #[test]
    fn breaks_at_spaces() {
        assert_eq!(
            wrap("the quick brown fox", 10),
            vec!["the quick", "brown fox"]
        );
        assert_eq!(wrap("", 10), vec![""]);
        assert_eq!(wrap("short", 10), vec!["short"]);
    }

    #[test]
    fn long_words_are_cut() {
        assert_eq!(wrap("abcdefghij", 4), vec!["abcd", "efgh", "ij"]);
    }

    #[test]
    fn wide_characters_count_double_and_are_never_split() {
        let rows = wrap("日本語のテキスト", 5);
        assert_eq!(rows, vec!["日本", "語の", "テキ", "スト"]);
        assert!(rows.iter().all(|r| width(r) <= 5));
        let emoji = wrap("👩‍💻👩‍💻👩‍💻", 4);
        assert_eq!(emoji, vec!["👩‍💻👩‍💻", "👩‍💻"]);
        assert_eq!(width("👍🏽"), 2);
    }

    #[test]
    fn a_row_after_a_break_still_fits() {
        // Found while writing `layout_fits_any_width`: a leading space was taken for a break,
        // leaving an empty row and a row one column too wide; a row could start with the space
        // it broke at; and the word carried over from a break was not checked against a
        // grapheme wider than 2 (three leading jamo: one cluster, 6 columns).
        assert_eq!(wrap(" xyz日", 4), vec![" xyz", "日"]);
        assert_eq!(wrap("abcd xyz日", 4), vec!["abcd", "xyz", "日"]);
        let jamo = "\u{1100}\u{1100}\u{1100}";
        assert_eq!(width(jamo), 6);
        assert_eq!(wrap(&format!("a bcd{jamo}"), 6), vec!["a", "bcd", jamo]);
    }

    #[test]
    fn width_one_is_one_column() {
        // Found by `layout_fits_any_width`: width 1 was laid out as 2.
        assert_eq!(wrap("ab c", 1), vec!["a", "b", "c"]);
        assert_eq!(
            wrap("日本", 1),
            vec!["日", "本"],
            "alone, as nothing narrower exists"
        );
        assert_eq!(wrap("ab", 0), vec!["a", "b"]);
    }

    #[test]
    fn every_row_fits() {
        let text = "mixed 日本 text with emoji 👍 and loooooooooooooong words";
        for w in 2..30 {
            for row in wrap(text, w) {
                assert!(width(&row) <= w, "{row:?} is wider than {w}");
            }
        }
    }
}
