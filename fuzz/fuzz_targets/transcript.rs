//! The `.chat` transcript parser (`chat-server/tests/transcripts/`): any text parses into steps
//! or names the line it cannot read, never a panic; an error's line is one that exists.
#![no_main]

use chat_server::transcript::parse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines = text.lines().count();
    match parse(text) {
        Ok(steps) => {
            assert!(steps.len() <= lines);
            assert!(steps.windows(2).all(|w| w[0].number < w[1].number));
        }
        Err(e) => assert!(e.number >= 1 && e.number <= lines, "line {}", e.number),
    }
});
