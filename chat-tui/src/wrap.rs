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
    let width = width.max(2);
    let mut rows = Vec::new();
    let mut row = String::new();
    let mut row_w = 0;
    // Byte offset in `row` just after its last space, and the width up to there.
    let mut last_space: Option<(usize, usize)> = None;
    for g in line.graphemes(true) {
        let w = UnicodeWidthStr::width(g);
        if row_w + w > width && !row.is_empty() {
            match last_space {
                Some((at, at_w)) if at < row.len() => {
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
mod tests {
    use super::*;

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
    fn every_row_fits() {
        let text = "mixed 日本 text with emoji 👍 and loooooooooooooong words";
        for w in 2..30 {
            for row in wrap(text, w) {
                assert!(width(&row) <= w, "{row:?} is wider than {w}");
            }
        }
    }
}
