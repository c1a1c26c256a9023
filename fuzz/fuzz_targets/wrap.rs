//! The client's line layout: wrapping any text (raw, or as the sanitizer hands it to the view)
//! at any width never panics, loses no visible text, and yields rows that fit the width; the
//! one exception is a row holding a single grapheme that is wider than the width by itself.
#![no_main]

use chat_tui::sanitize::body;
use chat_tui::wrap::{width, wrap};
use libfuzzer_sys::fuzz_target;
use unicode_segmentation::UnicodeSegmentation;

fn check(line: &str, cols: usize) {
    let rows = wrap(line, cols);
    assert!(!rows.is_empty());
    for row in &rows {
        assert!(
            width(row) <= cols || row.graphemes(true).count() == 1,
            "wrap({line:?}, {cols}) gave {row:?} ({} columns)",
            width(row)
        );
    }
    // Breaks only ever drop whitespace.
    let kept: String = rows
        .concat()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let want: String = line.chars().filter(|c| !c.is_whitespace()).collect();
    assert_eq!(kept, want, "wrap({line:?}, {cols}) lost text: {rows:?}");
}

fuzz_target!(|data: &[u8]| {
    let Some((&cols, rest)) = data.split_first() else {
        return;
    };
    // Widths 0..=63: narrow ones are where the edge cases are.
    let cols = usize::from(cols & 0x3F);
    let text = String::from_utf8_lossy(rest);
    // Width 0 cannot be fitted; it must still not panic.
    assert!(!wrap(&text, 0).is_empty());
    check(&text, cols.max(1));
    for line in body(&text, 200, 2000) {
        check(&line, cols.max(1));
    }
});
