//! The client's sanitizer: whatever bytes a server or another user sends, what comes out holds
//! nothing a terminal would act on (C0, DEL, C1 and so ESC and CSI, bidi controls, line
//! separators) nor invisibles, stays within its line and cluster caps, and a name is never blank.
#![no_main]

use chat_tui::sanitize::{body, is_terminal_safe, name, one_line};
use libfuzzer_sys::fuzz_target;

/// An independent statement of what must not come out, rather than the sanitizer's own
/// `is_terminal_safe` alone.
fn forbidden(c: char) -> bool {
    matches!(c, '\0'..='\u{1F}' | '\u{7F}'..='\u{9F}'
        | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}'
        | '\u{061C}' | '\u{2028}' | '\u{2029}' | '\u{200B}' | '\u{FEFF}'
        | '\u{E0000}'..='\u{E007F}')
}

fn check(s: &str, what: &str, input: &str) {
    assert!(
        is_terminal_safe(s) && !s.contains(forbidden),
        "{what}({input:?}) = {s:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the caps, so small ones (where the ellipsis logic lives) get hit.
    let Some((&caps, rest)) = data.split_first() else {
        return;
    };
    // Network text is UTF-8 (it came out of JSON); lossy keeps the fuzzer's byte flips useful.
    let input = String::from_utf8_lossy(rest);
    let (max_lines, max_graphemes) = (usize::from(caps & 0x0F) + 1, usize::from(caps >> 4) + 1);

    let n = name(&input, max_graphemes);
    check(&n, "name", &input);
    assert!(!n.is_empty(), "empty name for {input:?}");

    let o = one_line(&input, max_graphemes);
    check(&o, "one_line", &input);

    for (lines, graphemes) in [(max_lines, max_graphemes), (200, 2000)] {
        let v = body(&input, lines, graphemes);
        assert!(
            !v.is_empty() && v.len() <= lines + 1,
            "body({input:?}) = {v:?}"
        );
        for l in &v {
            check(l, "body", &input);
        }
    }
});
